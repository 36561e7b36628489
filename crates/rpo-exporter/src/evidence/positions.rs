//! Dating a replica's position by the source positions sampled on earlier
//! polls, on this exporter's clock (SPEC section 2, "engine positions").
//!
//! Every poll samples the source's position (a WAL LSN, a replication
//! offset, per-shard checkpoints) together with the instant it was taken.
//! Once the replica holds a sampled position, every write made on the
//! source before that sample is on the replica: the latest such sample's
//! instant is a recovery point. When the replica holds what the source had
//! just before we asked, that is "now" — so an idle source never reads as
//! growing lag. Callers use it only while the link is healthy, so a broken
//! link freezes the recovery point instead of reading as zero lag.
//!
//! Only this exporter's clock dates anything here; no server timestamp
//! enters. Samples are kept as [`Stamp`]s and a dated sample is expressed in
//! the wall clock of the evidence that dates it, so a step of this
//! exporter's wall clock between the sample and the evidence changes
//! nothing (see [`super::clock`]).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::clock::Stamp;

/// How far back source samples are kept: a replica further behind than this
/// is dated no better than the oldest sample (its exposure reads at least
/// this long, which is already far over any budget).
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// At most this many samples (one poll each) are kept.
pub const MAX_LEN: usize = 4096;
/// The window over which a replica's apply rate is taken.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);

/// A position a source reports and a replica catches up to.
pub trait Position: Clone {
    /// Whether `self`, sampled after `earlier`, went back: a new timeline,
    /// a restarted server, a new leader. Older samples then date nothing.
    fn went_back_from(&self, earlier: &Self) -> bool;
}

impl Position for u64 {
    fn went_back_from(&self, earlier: &u64) -> bool {
        self < earlier
    }
}

/// Per-shard checkpoints (OpenSearch): back when any shard went back.
impl Position for std::collections::BTreeMap<String, i64> {
    fn went_back_from(&self, earlier: &Self) -> bool {
        earlier
            .iter()
            .any(|(shard, before)| self.get(shard).is_some_and(|now| now < before))
    }
}

/// The source's positions sampled on this exporter's clock.
#[derive(Debug, Clone)]
pub struct SourceSamples<P> {
    samples: VecDeque<(Stamp, P)>,
}

impl<P> Default for SourceSamples<P> {
    fn default() -> Self {
        SourceSamples {
            samples: VecDeque::new(),
        }
    }
}

impl<P: Position> SourceSamples<P> {
    /// Records the source's position as sampled at `at`.
    pub fn record(&mut self, at: Stamp, position: P) {
        if self
            .samples
            .back()
            .is_some_and(|(_, last)| position.went_back_from(last))
        {
            self.samples.clear();
        }
        self.samples.push_back((at, position));
        while self.samples.len() > MAX_LEN
            || (self.samples.len() > 1
                && self.samples.front().is_some_and(|(t, _)| {
                    at.steady.duration_since(t.steady).unwrap_or_default() > MAX_AGE
                }))
        {
            self.samples.pop_front();
        }
    }

    /// The latest sampled instant whose position the replica holds
    /// (`holds(sample)`): every write before it is on the replica. Expressed
    /// in the wall clock of `evidence`, the observation that dates it.
    pub fn dated(&self, evidence: Stamp, holds: impl Fn(&P) -> bool) -> Option<SystemTime> {
        self.samples
            .iter()
            .rev()
            .find(|(_, position)| holds(position))
            .map(|(t, _)| evidence.wall_of(t.steady))
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample (the source changed identity).
    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

/// A replica's applied positions over the recent window, for its apply rate
/// and so the catch-up estimate. Timed on the steady timeline.
#[derive(Debug, Clone, Default)]
pub struct ApplyRate {
    samples: VecDeque<(SystemTime, u64)>,
}

impl ApplyRate {
    pub fn record(&mut self, at: Stamp, applied: u64) {
        let at = at.steady;
        if self.samples.back().is_some_and(|(_, last)| applied < *last) {
            self.samples.clear();
        }
        self.samples.push_back((at, applied));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| at.duration_since(*t).unwrap_or_default() > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Units applied per second over the window (`None` until it spans 0.5 s).
    pub fn per_second(&self) -> Option<f64> {
        let (t0, p0) = self.samples.front()?;
        let (t1, p1) = self.samples.back()?;
        let dt = t1.duration_since(*t0).ok()?.as_secs_f64();
        (dt >= 0.5).then(|| p1.saturating_sub(*p0) as f64 / dt)
    }

    /// The time to drain `backlog` at this rate: 0 with nothing to drain,
    /// +Inf while nothing is being applied.
    pub fn catchup_seconds(&self, backlog: f64) -> f64 {
        if backlog <= 0.0 {
            return 0.0;
        }
        match self.per_second() {
            Some(rate) if rate > 0.0 => backlog / rate,
            _ => f64::INFINITY,
        }
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn wall(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn at(secs: u64) -> Stamp {
        Stamp::unstepped(wall(secs))
    }

    #[test]
    fn a_replica_is_dated_by_the_latest_sample_it_holds() {
        let mut source = SourceSamples::default();
        source.record(at(0), 100u64);
        source.record(at(5), 200);
        source.record(at(10), 300);
        let now = at(10);
        assert_eq!(source.dated(now, |p| *p <= 250), Some(wall(5)));
        assert_eq!(source.dated(now, |p| *p <= 300), Some(wall(10)));
        assert_eq!(source.dated(now, |p| *p <= 50), None);
    }

    #[test]
    fn a_dated_sample_is_expressed_in_the_wall_clock_of_its_evidence() {
        let mut source = SourceSamples::default();
        source.record(at(0), 100u64);
        // Our wall clock stepped an hour forward since the sample, 7 s ago
        // on the steady clock: the sample is 7 s before the evidence.
        let evidence = Stamp {
            wall: wall(3607),
            steady: wall(7),
        };
        assert_eq!(source.dated(evidence, |p| *p <= 100), Some(wall(3600)));
    }

    #[test]
    fn a_position_going_back_forgets_older_samples() {
        let mut source = SourceSamples::default();
        source.record(at(0), 500u64);
        source.record(at(5), 10);
        assert_eq!(source.dated(at(5), |p| *p <= 600), Some(wall(5)));
        let mut shards = SourceSamples::default();
        shards.record(at(0), BTreeMap::from([("0".to_string(), 9i64)]));
        shards.record(at(5), BTreeMap::from([("0".to_string(), 3i64)]));
        assert_eq!(shards.dated(at(5), |_| true), Some(wall(5)));
        assert_eq!(shards.samples.len(), 1);
    }

    #[test]
    fn samples_older_than_the_bound_are_dropped_but_one_is_kept() {
        let mut source = SourceSamples::default();
        source.record(at(0), 1u64);
        source.record(at(4000), 2);
        assert_eq!(source.samples.len(), 1);
    }

    #[test]
    fn apply_rate_and_catchup() {
        let mut rate = ApplyRate::default();
        assert_eq!(rate.catchup_seconds(0.0), 0.0);
        rate.record(at(0), 0);
        assert!(rate.catchup_seconds(10.0).is_infinite());
        rate.record(at(2), 1000);
        assert_eq!(rate.per_second(), Some(500.0));
        assert_eq!(rate.catchup_seconds(1000.0), 2.0);
    }
}
