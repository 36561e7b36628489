//! Dating a heartbeat seen on a replica by when *this process* wrote it.
//!
//! A heartbeat's value is this exporter's wall clock at the write. Read back
//! on the replica it proves that every write made before that instant is
//! there — but only if this process wrote it and only on the clock it was
//! written with. So every write is logged with its [`Stamp`], and a value
//! seen on a replica is dated by the logged write's steady time, expressed
//! in the wall clock of the evidence ([`HeartbeatLog::date`]): a step of
//! this exporter's wall clock between the write and the read changes
//! nothing.
//!
//! A value this process did not write is not proof when it is newer than
//! the process's first heartbeat: another exporter is writing under the
//! same `instance` name (its clock, maybe an hour ahead, would otherwise
//! pin the exposure at 0). A value older than that (the previous run of
//! this exporter, or one too old for the log) is dated on the wall clock
//! as written, and only when it is not later than the evidence instant.
//!
//! The log is shared by a target's probe (which reads) and its heartbeat
//! writer (which records): both get it from [`HeartbeatLogs::for_target`],
//! so a probe rebuilt after a panic keeps the writer's log.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::clock::Stamp;

/// How many writes are remembered per target (10 minutes at one a second).
pub const LOG_LEN: usize = 600;

/// Two values this close are the same write: heartbeats are stored with at
/// least millisecond precision (Redis `{:.3}`, a Postgres `float8`).
pub const MATCH_TOLERANCE: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Log {
    /// The first write this process made: the boundary between "ours or
    /// another writer's" and "written before we started".
    first: Option<Stamp>,
    /// The last writes, oldest first.
    writes: VecDeque<Stamp>,
    /// Whether the last value seen was another writer's (to warn once per
    /// episode, not every poll).
    foreign_seen: bool,
}

/// The heartbeat writes of one target's writer, shared with its probe.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatLog {
    log: Arc<Mutex<Log>>,
}

/// How a heartbeat value read on a replica was dated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatDate {
    /// Written by this process: its write instant in the evidence's wall
    /// clock (never later than the evidence).
    Ours(SystemTime),
    /// Written before this process's first heartbeat (its previous run):
    /// the value as written.
    Earlier(SystemTime),
    /// Not proof: written by someone else since this process started, or
    /// later than the evidence instant.
    NotProof,
}

impl HeartbeatDate {
    /// The recovery point it proves, if any.
    pub fn proven(self) -> Option<SystemTime> {
        match self {
            HeartbeatDate::Ours(t) | HeartbeatDate::Earlier(t) => Some(t),
            HeartbeatDate::NotProof => None,
        }
    }
}

impl HeartbeatLog {
    /// Records a heartbeat about to be written with value `at` (this
    /// exporter's wall clock, read just now). Call it before sending the
    /// write: the value may replicate before the write returns.
    pub fn record(&self, at: SystemTime) {
        self.record_stamp(Stamp::now().with_wall(at));
    }

    /// [`HeartbeatLog::record`] with the reading given (tests).
    pub fn record_stamp(&self, stamp: Stamp) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.first.get_or_insert(stamp);
        log.writes.push_back(stamp);
        while log.writes.len() > LOG_LEN {
            log.writes.pop_front();
        }
    }

    /// Dates `seen`, a heartbeat value read on the replica, for evidence
    /// taken at `evidence` (the replica observation instant).
    pub fn date(&self, seen: SystemTime, evidence: Stamp) -> HeartbeatDate {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let distance = |w: &Stamp| match seen.duration_since(w.wall) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        // The nearest logged write within the tolerance; on a tie the
        // earlier one (after a backward step two writes can share a value).
        let ours = log
            .writes
            .iter()
            .filter(|w| distance(w) <= MATCH_TOLERANCE)
            .min_by_key(|w| (distance(w), w.steady))
            .copied();
        if let Some(write) = ours {
            log.foreign_seen = false;
            return HeartbeatDate::Ours(evidence.wall_of(write.steady).min(evidence.wall));
        }
        let before_us = log.first.is_none_or(|first| seen < first.wall)
            || log
                .writes
                .front()
                .is_some_and(|oldest| log.writes.len() >= LOG_LEN && seen < oldest.wall);
        if before_us && seen <= evidence.wall {
            return HeartbeatDate::Earlier(seen);
        }
        if before_us {
            return HeartbeatDate::NotProof;
        }
        if !log.foreign_seen {
            tracing::warn!(
                "a heartbeat this exporter did not write is on the replica (another exporter uses the same [exporter] instance name?); it is not taken as proof"
            );
        }
        log.foreign_seen = true;
        HeartbeatDate::NotProof
    }
}

/// The heartbeat logs of every target of one run, by target name.
#[derive(Debug, Default)]
pub struct HeartbeatLogs {
    logs: Mutex<HashMap<String, HeartbeatLog>>,
}

impl HeartbeatLogs {
    /// The log of `target`, created on first use.
    pub fn for_target(&self, target: &str) -> HeartbeatLog {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target.to_string())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        crate::probe::from_unix_seconds(1_700_000_000.0 + secs).unwrap()
    }

    fn stamp(steady: f64, step: f64) -> Stamp {
        Stamp {
            wall: at(steady + step),
            steady: at(steady),
        }
    }

    #[test]
    fn our_heartbeat_is_dated_by_its_write_on_the_steady_clock() {
        let log = HeartbeatLog::default();
        // Written while our wall clock ran 10 s ahead ...
        log.record_stamp(stamp(100.0, 10.0));
        log.record_stamp(stamp(101.0, 10.0));
        // ... read after it stepped back: the write was 4 s before the
        // evidence, whatever the wall clocks said.
        let evidence = stamp(105.0, 0.0);
        assert_eq!(
            log.date(at(111.0), evidence),
            HeartbeatDate::Ours(at(101.0))
        );
        // Read through a millisecond-rounded store.
        assert_eq!(
            log.date(at(111.0004), evidence),
            HeartbeatDate::Ours(at(101.0))
        );
        // Seen "before" the evidence by a hair (the read came after it):
        // never later than the evidence.
        let just_before = stamp(101.0, 10.0);
        assert_eq!(
            log.date(
                at(111.0),
                Stamp {
                    steady: at(100.9995),
                    wall: just_before.wall
                }
            ),
            HeartbeatDate::Ours(just_before.wall)
        );
    }

    #[test]
    fn another_writers_heartbeat_is_not_proof() {
        let log = HeartbeatLog::default();
        log.record_stamp(stamp(100.0, 0.0));
        let evidence = stamp(110.0, 0.0);
        // Another exporter with this instance name and a clock an hour ahead.
        assert_eq!(log.date(at(3700.0), evidence), HeartbeatDate::NotProof);
        // Or a few seconds ahead: newer than our first write, not ours.
        assert_eq!(log.date(at(105.5), evidence), HeartbeatDate::NotProof);
        assert_eq!(log.date(at(111.0), evidence).proven(), None);
    }

    #[test]
    fn an_older_heartbeat_is_dated_as_written_but_never_from_the_future() {
        let log = HeartbeatLog::default();
        let evidence = stamp(110.0, 0.0);
        // Before any write of ours (the previous run's row).
        assert_eq!(
            log.date(at(50.0), evidence),
            HeartbeatDate::Earlier(at(50.0))
        );
        assert_eq!(log.date(at(120.0), evidence), HeartbeatDate::NotProof);
        log.record_stamp(stamp(100.0, 0.0));
        assert_eq!(
            log.date(at(99.0), evidence),
            HeartbeatDate::Earlier(at(99.0))
        );
    }

    #[test]
    fn the_log_is_bounded_and_shared_per_target() {
        let logs = HeartbeatLogs::default();
        let writer = logs.for_target("erp-db");
        let probe = logs.for_target("erp-db");
        for i in 0..(LOG_LEN + 10) {
            writer.record_stamp(stamp(i as f64, 0.0));
        }
        let evidence = stamp(LOG_LEN as f64 + 20.0, 0.0);
        assert_eq!(
            probe.date(at(LOG_LEN as f64), evidence),
            HeartbeatDate::Ours(at(LOG_LEN as f64))
        );
        // Fell out of the log: dated as written.
        assert_eq!(
            probe.date(at(3.0), evidence),
            HeartbeatDate::Earlier(at(3.0))
        );
        assert_eq!(
            logs.for_target("other").date(at(3.0), evidence),
            HeartbeatDate::Earlier(at(3.0))
        );
    }
}
