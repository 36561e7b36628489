//! Clocks (SPEC section 10): only this exporter's clock dates evidence.
//!
//! Two rules live here, once:
//!
//! 1. **This exporter's own clock may step** (an NTP step, a VM resumed, a
//!    person running `date -s`). A [`Stamp`] reads the wall clock together
//!    with the *steady* timeline: the wall clock as it read when this
//!    process first asked, plus the monotonic time elapsed since, which no
//!    step moves. Anything kept between polls (a sampled source position,
//!    a heartbeat write, a clock-offset sample, the store's recovery point)
//!    is kept on the steady timeline and re-expressed in the wall clock of
//!    the moment it is used ([`Stamp::wall_of`]), so a step of the wall
//!    clock never shortens or lengthens an exposure.
//! 2. **A server's clock is foreign.** A timestamp a server wrote
//!    (`pg_last_xact_replay_timestamp()` is the primary's commit time, a
//!    Redis stream entry id is the server's milliseconds) may move a
//!    recovery point only after conversion by that server's measured clock
//!    offset ([`ClockOffset`], [`convert`]), and never past the instant the
//!    evidence was taken. With no offset measured, [`convert`] gives
//!    nothing: the server timestamp proves nothing.
//!
//! The offset of a server is measured by asking for its clock (Postgres
//! `clock_timestamp()`, Redis `TIME`) between two readings of ours: offset =
//! server − midpoint, uncertain by half the round trip (the server read its
//! clock somewhere between our two readings). Two figures come out of the
//! samples:
//!
//! - The *published* offset (`rpo_clock_offset_seconds`): the sample with
//!   the smallest round trip among the last [`OFFSET_SAMPLES`] — the least
//!   delayed answer is the most accurate one; a slow answer says something
//!   about the network, not the clock.
//! - The *conversion bound*: the largest offset the server may have had
//!   over the last [`OFFSET_MEMORY`]. Consecutive samples whose intervals
//!   (offset ± half round trip) overlap are one steady clock, and their
//!   intersection is its tight interval; a sample outside it starts a new
//!   one (the server's clock was stepped, or drifted). A server timestamp
//!   is converted with the highest upper end among them: the earliest
//!   exporter time it can stand for. So the error only ever makes an
//!   exposure read longer, and a timestamp written before the server's
//!   clock was stepped back is not converted into the future.
//!
//! A converted time later than the evidence instant (beyond a millisecond
//! of rounding) can only mean the server's clock moved in a way we did not
//! measure: it is not proof.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::metric_def::MetricDef;
use crate::probe::{unix_seconds, Detail, Side};

/// `rpo_clock_offset_seconds{side}`: declared once, listed in the
/// `DETAIL_FAMILIES` of every kind that reads a server's clock.
pub static CLOCK_OFFSET_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_clock_offset_seconds",
    "The server's clock minus this exporter's clock (side source or replica), measured on the last poll; server timestamps are converted by it.",
)
.with_labels(&["side"]);

/// How many offset samples (one per poll) the published offset is chosen
/// from.
pub const OFFSET_SAMPLES: usize = 8;

/// How long a server's past offsets bound the conversion of its timestamps
/// (the same horizon as the sampled source positions).
pub const OFFSET_MEMORY: Duration = crate::evidence::positions::MAX_AGE;

/// At most this many distinct offsets are remembered per server.
const MAX_EPOCHS: usize = 64;

/// Added to every sample's interval: the servers' clocks are read to the
/// microsecond, ours to the nanosecond, and f64 seconds round.
const READING_SLACK: f64 = 0.001;

/// A wall-clock step smaller than this between two readings is ignored
/// (NTP slews at most 0.5 ms/s; a real step is far larger).
pub const STEP_TOLERANCE: Duration = Duration::from_millis(100);

/// One reading of this exporter's clocks, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The wall clock: what is published and written into heartbeats.
    pub wall: SystemTime,
    /// The steady timeline: the wall clock as it read when this process
    /// first asked, plus the monotonic time since. Never stepped; only
    /// differences between two steady readings mean anything across a step.
    pub steady: SystemTime,
}

impl Stamp {
    /// The clocks now.
    pub fn now() -> Stamp {
        static ORIGIN: OnceLock<(SystemTime, Instant)> = OnceLock::new();
        let (wall0, mono0) = *ORIGIN.get_or_init(|| (SystemTime::now(), Instant::now()));
        let steady = wall0 + mono0.elapsed();
        Stamp {
            wall: SystemTime::now(),
            steady,
        }
    }

    /// A reading for a caller that only has a wall time (a test, the
    /// benchmark, a poll that never ran): its steady time is its wall time,
    /// i.e. it assumes no step. Never mix it with [`Stamp::now`] readings
    /// in one computation.
    pub fn unstepped(wall: SystemTime) -> Stamp {
        Stamp { wall, steady: wall }
    }

    /// A steady instant expressed in this reading's wall clock: this
    /// reading's wall time minus the steady time elapsed since (or plus the
    /// time until).
    pub fn wall_of(&self, steady: SystemTime) -> SystemTime {
        shift(self.wall, steady, self.steady)
    }

    /// A wall time read in this reading's wall clock (the same frame: no
    /// step in between), on the steady timeline.
    pub fn steady_of(&self, wall: SystemTime) -> SystemTime {
        shift(self.steady, wall, self.wall)
    }

    /// This reading with its wall time replaced by `wall`, a wall time read
    /// in the same frame (microseconds apart): its steady time moves with it.
    pub fn with_wall(self, wall: SystemTime) -> Stamp {
        Stamp {
            wall,
            steady: self.steady_of(wall),
        }
    }

    /// How far the wall clock stepped between `earlier` and this reading:
    /// wall time elapsed minus steady time elapsed, in seconds (positive:
    /// stepped forward).
    pub fn wall_step_since(&self, earlier: &Stamp) -> f64 {
        seconds_between(earlier.wall, self.wall) - seconds_between(earlier.steady, self.steady)
    }

    /// Whether the wall clock stepped (by more than [`STEP_TOLERANCE`])
    /// between `earlier` and this reading: wall times read in between
    /// belong to two different clocks.
    pub fn stepped_since(&self, earlier: &Stamp) -> bool {
        self.wall_step_since(earlier).abs() > STEP_TOLERANCE.as_secs_f64()
    }
}

/// A plain wall time as a reading: [`Stamp::unstepped`].
impl From<SystemTime> for Stamp {
    fn from(wall: SystemTime) -> Stamp {
        Stamp::unstepped(wall)
    }
}

/// `t + (to − from)`, whichever sign the difference has.
fn shift(t: SystemTime, to: SystemTime, from: SystemTime) -> SystemTime {
    match to.duration_since(from) {
        Ok(ahead) => t + ahead,
        Err(behind) => t - behind.duration(),
    }
}

/// `to − from` in seconds, signed.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// One measurement of a server's clock against ours.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OffsetSample {
    /// Server time minus the steady midpoint of the question, seconds.
    server_minus_steady: f64,
    /// Half the round trip: the server read its clock within this of the
    /// midpoint.
    uncertainty: f64,
}

/// A run of samples consistent with one unchanged server clock: the
/// intersection of their intervals (server − steady, seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Epoch {
    lowest: f64,
    highest: f64,
    /// The steady time of its last sample.
    last_seen: SystemTime,
}

/// A server's clock offset, estimated from its samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offset {
    /// Server time minus steady time, seconds (frame-free: a step of our
    /// wall clock does not change it).
    server_minus_steady: f64,
    /// How far the server's reading may be from the midpoint, seconds.
    pub uncertainty: f64,
    /// The largest server − steady offset the server may have had over the
    /// last [`OFFSET_MEMORY`]: what conversion subtracts.
    highest: f64,
}

impl Offset {
    /// The offset as people read it: server − this exporter's wall clock at
    /// `now`, in seconds (positive: the server is ahead).
    pub fn seconds(&self, now: Stamp) -> f64 {
        self.server_minus_steady + seconds_between(now.wall, now.steady)
    }

    /// The `rpo_clock_offset_seconds{side}` sample of this offset at `now`.
    pub fn detail(&self, side: Side, now: Stamp) -> Detail {
        Detail::new(&CLOCK_OFFSET_SECONDS, self.seconds(now)).with_label("side", side.as_str())
    }
}

/// The offset samples of one server (one side of a pair).
#[derive(Debug, Clone, Default)]
pub struct ClockOffset {
    samples: VecDeque<OffsetSample>,
    epochs: VecDeque<Epoch>,
}

impl ClockOffset {
    /// Records that the server's clock read `server` while ours went from
    /// `before` (just before the question was sent) to `after` (just after
    /// the answer arrived). A reading bracketed by a step of our wall clock
    /// is fine: only the steady times are used.
    pub fn record(&mut self, before: Stamp, server: SystemTime, after: Stamp) {
        let round_trip = seconds_between(before.steady, after.steady).max(0.0);
        let midpoint = unix_seconds(before.steady) + round_trip / 2.0;
        let sample = OffsetSample {
            server_minus_steady: unix_seconds(server) - midpoint,
            uncertainty: round_trip / 2.0,
        };
        self.samples.push_back(sample);
        while self.samples.len() > OFFSET_SAMPLES {
            self.samples.pop_front();
        }

        let lowest = sample.server_minus_steady - sample.uncertainty - READING_SLACK;
        let highest = sample.server_minus_steady + sample.uncertainty + READING_SLACK;
        match self.epochs.back_mut() {
            Some(epoch) if lowest <= epoch.highest && highest >= epoch.lowest => {
                epoch.lowest = epoch.lowest.max(lowest);
                epoch.highest = epoch.highest.min(highest);
                epoch.last_seen = after.steady;
            }
            _ => self.epochs.push_back(Epoch {
                lowest,
                highest,
                last_seen: after.steady,
            }),
        }
        while self.epochs.len() > MAX_EPOCHS
            || (self.epochs.len() > 1
                && self.epochs.front().is_some_and(|e| {
                    after.steady.duration_since(e.last_seen).unwrap_or_default() > OFFSET_MEMORY
                }))
        {
            self.epochs.pop_front();
        }
    }

    /// The estimate; `None` until the server's clock was read. Kept while
    /// the server cannot be reached: its timestamps already written (commit
    /// times replayed on a replica) were written with the offset it had
    /// then.
    pub fn estimate(&self) -> Option<Offset> {
        let best = self
            .samples
            .iter()
            .min_by(|a, b| a.uncertainty.total_cmp(&b.uncertainty))?;
        let highest = self
            .epochs
            .iter()
            .map(|e| e.highest)
            .fold(f64::NEG_INFINITY, f64::max);
        Some(Offset {
            server_minus_steady: best.server_minus_steady,
            uncertainty: best.uncertainty,
            highest,
        })
    }
}

/// A server timestamp converted to this exporter's wall clock in the frame
/// of `evidence` (the instant the evidence was taken): `server − offset`,
/// with the largest offset the server may have had (the earliest exporter
/// time it can stand for), never later than `evidence.wall`. `None` without
/// an offset (a server timestamp that cannot be converted must not move a
/// recovery point), and `None` when it converts to later than the evidence
/// (the server's clock moved unmeasured).
pub fn convert(
    server_time: SystemTime,
    offset: Option<Offset>,
    evidence: Stamp,
) -> Option<SystemTime> {
    let offset = offset?;
    let steady = unix_seconds(server_time) - offset.highest;
    if steady > unix_seconds(evidence.steady) + READING_SLACK {
        return None;
    }
    let steady = crate::probe::from_unix_seconds(steady)?;
    Some(evidence.wall_of(steady).min(evidence.wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        crate::probe::from_unix_seconds(1_700_000_000.0 + secs).unwrap()
    }

    /// A reading whose wall clock is `step` seconds off its steady time.
    fn stamp(steady: f64, step: f64) -> Stamp {
        Stamp {
            wall: at(steady + step),
            steady: at(steady),
        }
    }

    fn close(a: SystemTime, b: SystemTime) -> bool {
        (unix_seconds(a) - unix_seconds(b)).abs() < 1e-6
    }

    #[test]
    fn steady_instants_are_re_expressed_in_the_current_wall_clock() {
        let sample = stamp(100.0, 0.0);
        // The wall clock stepped 10 s forward since: the sample, taken 5 s
        // ago, is 5 s before the current wall time, not 15.
        let now = stamp(105.0, 10.0);
        assert!(close(now.wall_of(sample.steady), at(110.0)));
        assert!((now.wall_step_since(&sample) - 10.0).abs() < 1e-6);
        assert!(now.stepped_since(&sample));
        // And back by an hour.
        let later = stamp(106.0, -3600.0);
        assert!(close(later.wall_of(sample.steady), at(100.0 - 3600.0)));
        assert!(close(later.steady_of(later.wall), later.steady));
        assert!(!stamp(107.0, 0.05).stepped_since(&stamp(100.0, 0.0)));
    }

    #[test]
    fn the_process_clock_moves_steadily() {
        let a = Stamp::now();
        let b = Stamp::now();
        assert!(b.steady >= a.steady);
        assert!(!b.stepped_since(&a));
    }

    #[test]
    fn offset_is_server_minus_midpoint_with_half_the_round_trip() {
        let mut clock = ClockOffset::default();
        assert_eq!(clock.estimate(), None);
        // Asked at 10.0, answered at 10.2; the server read 70.1: 60 s ahead.
        clock.record(stamp(10.0, 0.0), at(70.1), stamp(10.2, 0.0));
        let offset = clock.estimate().unwrap();
        assert!((offset.seconds(stamp(11.0, 0.0)) - 60.0).abs() < 1e-6);
        assert!((offset.uncertainty - 0.1).abs() < 1e-6);
        // As people read it, against a wall clock stepped 10 s forward.
        assert!((offset.seconds(stamp(11.0, 10.0)) - 50.0).abs() < 1e-6);
        let detail = offset.detail(Side::Source, stamp(11.0, 0.0));
        assert_eq!(detail.family.name, "rpo_clock_offset_seconds");
        assert_eq!(detail.labels, [("side", "source".to_string())]);
    }

    #[test]
    fn the_fastest_recent_answer_wins() {
        let mut clock = ClockOffset::default();
        // A slow answer (2 s round trip) suggests 59 s; a fast one 60 s.
        clock.record(stamp(0.0, 0.0), at(60.0), stamp(2.0, 0.0));
        clock.record(stamp(10.0, 0.0), at(70.0), stamp(10.01, 0.0));
        clock.record(stamp(20.0, 0.0), at(81.5), stamp(23.0, 0.0));
        let offset = clock.estimate().unwrap();
        assert!((offset.seconds(stamp(30.0, 0.0)) - 59.995).abs() < 1e-6);
        // Old samples leave the window: a clock reset on the server shows
        // within OFFSET_SAMPLES polls.
        for i in 0..OFFSET_SAMPLES {
            let t = 100.0 + i as f64;
            clock.record(stamp(t, 0.0), at(t - 5.0), stamp(t + 0.5, 0.0));
        }
        let offset = clock.estimate().unwrap();
        assert!((offset.seconds(stamp(200.0, 0.0)) + 5.25).abs() < 1e-6);
    }

    #[test]
    fn an_offset_measured_across_our_own_step_is_unchanged() {
        let mut clock = ClockOffset::default();
        // Our wall clock stepped +10 s between the two readings; the server
        // is truly 60 s ahead of our steady time.
        clock.record(stamp(10.0, 0.0), at(70.05), stamp(10.1, 10.0));
        let offset = clock.estimate().unwrap();
        assert!((offset.seconds(stamp(11.0, 0.0)) - 60.0).abs() < 1e-6);
    }

    #[test]
    fn server_times_convert_by_the_offset_conservatively_and_never_past_the_evidence() {
        let mut primary = ClockOffset::default();
        primary.record(stamp(10.0, 0.0), at(70.1), stamp(10.2, 0.0));
        let offset = primary.estimate();
        let evidence = stamp(20.0, 0.0);
        // A commit at 75.0 on a clock 60 s ahead happened at 15.0 on ours,
        // less the 0.1 s uncertainty (and the 1 ms reading slack).
        let converted = convert(at(75.0), offset, evidence).unwrap();
        assert!(close(converted, at(14.899)), "{converted:?}");
        // Expressed in the evidence's wall clock when ours stepped since.
        let converted = convert(at(75.0), offset, stamp(20.0, -30.0)).unwrap();
        assert!(close(converted, at(14.899 - 30.0)));
        // Up to the evidence instant (within the slack, held at it) ...
        assert!(close(
            convert(at(80.1), offset, evidence).unwrap(),
            at(19.999)
        ));
        assert_eq!(convert(at(80.1015), offset, evidence), Some(evidence.wall));
        // ... but a time that converts past it is not proof.
        assert_eq!(convert(at(81.0), offset, evidence), None);
        // No offset measured: a server time proves nothing.
        assert_eq!(convert(at(75.0), None, evidence), None);
    }

    #[test]
    fn after_a_server_clock_step_its_older_timestamps_convert_with_the_larger_offset() {
        let mut primary = ClockOffset::default();
        for t in 0..5 {
            let t = t as f64;
            primary.record(stamp(t, 0.0), at(t + 60.005), stamp(t + 0.01, 0.0));
        }
        // NTP steps the primary's clock back a minute: now in step with ours.
        for t in 5..20 {
            let t = t as f64;
            primary.record(stamp(t, 0.0), at(t + 0.005), stamp(t + 0.01, 0.0));
        }
        let offset = primary.estimate().unwrap();
        // What people read is the current offset ...
        assert!(offset.seconds(stamp(20.0, 0.0)).abs() < 1e-6);
        // ... but a commit stamped 63.0 before the step (3.0 on ours) must
        // not convert to 63.0, in our future: it converts a minute earlier.
        let converted = convert(at(63.0), Some(offset), stamp(20.0, 0.0)).unwrap();
        assert!(close(converted, at(2.994)), "{converted:?}");
        // An hour of steady clock later the old offset is forgotten.
        primary.record(stamp(3700.0, 0.0), at(3700.005), stamp(3700.01, 0.0));
        let offset = primary.estimate().unwrap();
        let converted = convert(at(3650.0), Some(offset), stamp(3700.0, 0.0)).unwrap();
        assert!(close(converted, at(3649.994)), "{converted:?}");
    }

    #[test]
    fn a_slow_answer_does_not_widen_the_conversion_bound() {
        let mut clock = ClockOffset::default();
        clock.record(stamp(0.0, 0.0), at(60.005), stamp(0.01, 0.0));
        // Two seconds for an answer: its interval contains the first one.
        clock.record(stamp(10.0, 0.0), at(71.0), stamp(12.0, 0.0));
        let converted = convert(at(80.0), clock.estimate(), stamp(30.0, 0.0)).unwrap();
        assert!(close(converted, at(19.994)), "{converted:?}");
    }
}
