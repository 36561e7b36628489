//! The latest report of every target, keyed by [`TargetId`], as an
//! immutable [`Snapshot`] that readers clone cheaply (an `Arc`). Writers
//! replace one target's report and publish a new snapshot; no lock is ever
//! held across an `.await`.
//!
//! Reports are found by the target's identity, never by its position in the
//! configuration, so a reloaded configuration (targets added, removed or
//! reordered) can keep the history of the targets it did not change.
//!
//! This is where the "no reset" rule lives: the recovery point only moves
//! forward, and a poll that proves nothing keeps the last proven one, so the
//! exposure keeps growing while a side cannot be reached.
//!
//! "Forward" is measured on this exporter's steady timeline (see
//! [`crate::evidence::clock`]), never on its wall clock: every kept instant
//! (recovery point, evidence, last contact, last success) is held as a
//! steady time and re-expressed in the wall clock of each poll, so a step
//! of the wall clock neither pins the exposure at 0 (a recovery point dated
//! before a backward step would otherwise stay "in the future") nor adds
//! the step to it. A recovery point later than the instant its evidence was
//! taken is not proof, and neither is anything a poll measured while the
//! wall clock stepped under it (its wall times mix two clocks).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Target;
use crate::evidence::clock::Stamp;
use crate::evidence::promotion::{ConfiguredSide, PollFacts, PromotionWatch};
use crate::probe::{FailureReason, LinkState, Measurement, ProbeError};

/// A target's identity: its name, which configuration validation keeps
/// unique.
///
/// Backed by an `Arc<str>` because the id is copied into every snapshot (one
/// map key per target, every time any report changes), every poll task and
/// every verdict: a reference count, not a string allocation, each time.
/// It borrows as `str` (and hashes like one), so a map keyed by `TargetId`
/// is searched with [`TargetId::key`] without allocating.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(Arc<str>);

impl TargetId {
    pub fn new(name: &str) -> TargetId {
        TargetId(Arc::from(name))
    }

    /// The id of a configured target.
    pub fn of(target: &Target) -> TargetId {
        TargetId::new(TargetId::key(target))
    }

    /// The borrowed form of [`TargetId::of`], to look a target up in a map
    /// keyed by `TargetId` (a [`Snapshot`], a verdict) without allocating.
    /// The one place that says what a target's identity is.
    pub fn key(target: &Target) -> &str {
        &target.name
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TargetId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Everything known about one target. Its instants are in the wall clock
/// of the last poll attempt.
#[derive(Debug, Clone, Default)]
pub struct TargetReport {
    /// The newest recovery point ever proven (never moves back on the
    /// steady timeline).
    pub recovery_point: Option<SystemTime>,
    /// End of the last poll attempt minus the recovery point, on the
    /// steady timeline.
    pub exposure: Option<Duration>,
    /// When the last poll attempt started, and how long it took.
    pub last_attempt: Option<SystemTime>,
    pub last_duration: Option<Duration>,
    /// Whether the last poll learned everything it tried to.
    pub last_poll_succeeded: bool,
    /// The last poll that failed entirely (nothing learned), if it was the
    /// latest one.
    pub last_poll_error: Option<ProbeError>,
    /// When a poll last succeeded with no failure at all.
    pub last_success: Option<SystemTime>,
    /// The most recent failure of any kind (whole or one side), kept after
    /// recovery so a stale reason can say what went wrong.
    pub last_error: Option<ProbeError>,
    /// Time of the newest evidence about the replica.
    pub evidence_time: Option<SystemTime>,
    /// The last measurement, when the latest poll produced one.
    pub measurement: Option<Measurement>,
    /// When the source side last answered.
    pub last_source_contact: Option<SystemTime>,
    pub runs_total: u64,
    pub failures_total: [u64; FailureReason::ALL.len()],
    pub heartbeat: HeartbeatStatus,
    /// Transitions of the replication link from healthy to unhealthy, so a
    /// link that flaps shows even when each drop is shorter than a poll
    /// apart from the next.
    pub link_down_total: u64,
    /// The last link state a poll actually determined (`true` = healthy);
    /// polls that could not tell (a failed poll, an unknown link) leave it,
    /// so healthy → unknown → healthy is not a drop and healthy → unknown →
    /// unhealthy is one.
    pub(crate) last_known_link_healthy: Option<bool>,
    /// A pair's roles followed across promotions (split brain, the loss a
    /// promotion took); untouched for kinds that report no roles.
    pub promotion: PromotionWatch,
    /// The kept instants on the steady timeline, which the wall-clock
    /// fields above are re-expressed from at every poll (only
    /// [`TargetReport::after_poll`] sets them).
    pub(crate) steady: SteadyInstants,
    /// Which poll this report's fields other than `heartbeat` and
    /// `promotion` come from: set afresh (unique in the process) by every
    /// [`TargetReport::after_poll`] and kept by a heartbeat, so two reports
    /// with the same non-zero epoch differ at most in those two. 0: not
    /// known (a report built some other way), so nothing may be assumed.
    /// `/metrics` rewrites only a target's heartbeat lines when its report
    /// changed by a heartbeat (see `metrics::RenderCache`).
    poll_epoch: u64,
}

/// A [`TargetReport`] poll epoch never handed out before (from 1).
fn next_poll_epoch() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a report keeps between polls, on the steady timeline.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SteadyInstants {
    /// The reading whose wall clock the report is published in: kept until
    /// the wall clock steps, so an unchanged instant is published unchanged
    /// (re-reading the two clocks at every poll would move it by a few
    /// microseconds each time).
    frame: Option<Stamp>,
    recovery_point: Option<SystemTime>,
    evidence: Option<SystemTime>,
    last_source_contact: Option<SystemTime>,
    last_success: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct HeartbeatStatus {
    pub last_write: Option<SystemTime>,
    pub writes_total: u64,
    pub failures_total: u64,
    pub last_error: Option<ProbeError>,
}

impl TargetReport {
    /// The report after one poll attempt that ran from `started` to
    /// `finished` (readings of this exporter's clocks; a plain wall time
    /// reads as [`Stamp::unstepped`]). Pure, so the retention rules are
    /// unit-tested without sleeping.
    pub fn after_poll(
        &self,
        started: impl Into<Stamp>,
        finished: impl Into<Stamp>,
        result: Result<Measurement, ProbeError>,
    ) -> TargetReport {
        let (started, finished): (Stamp, Stamp) = (started.into(), finished.into());
        let mut next = self.clone();
        next.runs_total += 1;
        next.poll_epoch = next_poll_epoch();
        next.last_attempt = Some(started.wall);
        next.last_duration = Some(
            finished
                .steady
                .duration_since(started.steady)
                .unwrap_or_default(),
        );
        // The poll's wall times (evidence, recovery point) are in the clock
        // of `finished` unless the wall clock stepped during the poll.
        let stepped = finished.stepped_since(&started);
        // The wall clock the report is kept in: the previous poll's unless
        // it stepped since, so an unchanged instant is published unchanged
        // (re-reading both clocks at every poll would move it by
        // microseconds each time).
        let frame = match self.steady.frame {
            Some(frame) if !finished.stepped_since(&frame) => frame,
            _ => finished,
        };
        next.steady.frame = Some(frame);
        let steady = |wall: SystemTime| frame.steady_of(wall);
        match result {
            Ok(measurement) => {
                next.last_poll_error = None;
                if stepped {
                    tracing::warn!(
                        step_seconds = finished.wall_step_since(&started),
                        "the wall clock stepped during the poll; what it measured is not used"
                    );
                } else {
                    if let Some(rp) = measurement.recovery_point {
                        if rp <= measurement.evidence_time {
                            next.steady.recovery_point =
                                max_time(self.steady.recovery_point, Some(steady(rp)));
                        } else {
                            tracing::warn!(
                                recovery_point = crate::probe::unix_seconds(rp),
                                evidence = crate::probe::unix_seconds(measurement.evidence_time),
                                "a recovery point later than its evidence is not proof"
                            );
                        }
                    }
                    if measurement.replica_reachable != Some(false) {
                        next.steady.evidence = max_time(
                            self.steady.evidence,
                            Some(steady(measurement.evidence_time)),
                        );
                    }
                }
                if measurement.source_reachable == Some(true) {
                    next.steady.last_source_contact = Some(steady(finished.wall));
                }
                let mut counted = [false; FailureReason::ALL.len()];
                for failure in &measurement.failures {
                    let i = reason_index(failure.reason);
                    if !counted[i] {
                        next.failures_total[i] += 1;
                        counted[i] = true;
                    }
                }
                next.follow_link(&measurement.link);
                next.last_poll_succeeded = measurement.failures.is_empty();
                if next.last_poll_succeeded {
                    next.steady.last_success = Some(steady(finished.wall));
                } else {
                    next.last_error = measurement.failures.first().cloned();
                }
                next.measurement = Some(measurement);
            }
            Err(error) => {
                next.failures_total[reason_index(error.reason)] += 1;
                next.last_poll_succeeded = false;
                next.last_error = Some(error.clone());
                next.last_poll_error = Some(error);
                // A failed poll's detail series are dropped, not left frozen.
                next.measurement = None;
            }
        }
        // Every kept instant in the report's wall clock.
        let wall = |steady: Option<SystemTime>| steady.map(|t| frame.wall_of(t));
        next.recovery_point = wall(next.steady.recovery_point);
        next.evidence_time = wall(next.steady.evidence);
        next.last_source_contact = wall(next.steady.last_source_contact);
        next.last_success = wall(next.steady.last_success);
        next.exposure = next
            .steady
            .recovery_point
            .map(|rp| steady(finished.wall).duration_since(rp).unwrap_or_default());
        next.follow_roles(finished.wall);
        next
    }

    /// Counts a healthy → unhealthy transition of the link (see
    /// [`TargetReport::link_down_total`]).
    fn follow_link(&mut self, link: &LinkState) {
        let healthy = match link {
            LinkState::Healthy => true,
            LinkState::Unhealthy(_) => false,
            LinkState::Unknown(_) => return,
        };
        if !healthy && self.last_known_link_healthy == Some(true) {
            self.link_down_total += 1;
        }
        self.last_known_link_healthy = Some(healthy);
    }

    /// Updates the promotion watch from the poll just recorded (its roles,
    /// and what it proved, for the prediction the next promotion keeps).
    fn follow_roles(&mut self, finished: SystemTime) {
        let Some(m) = &self.measurement else {
            return;
        };
        let loss_window_if_source_lost = match (m.source_reachable, self.last_source_contact) {
            (Some(false), Some(contact)) => self
                .recovery_point
                .map(|rp| contact.duration_since(rp).unwrap_or_default()),
            _ => None,
        };
        let facts = PollFacts {
            at: m.evidence_time.min(finished),
            recovery_point: self.recovery_point,
            exposure: self.exposure,
            loss_window_if_source_lost,
        };
        self.promotion.after_poll(m.roles.as_ref(), facts);
    }

    /// The report after one heartbeat write attempt on `side` (a pair
    /// writes on the side that accepts writes: the promoted one after a
    /// promotion).
    pub fn after_heartbeat_on(
        &self,
        at: SystemTime,
        side: ConfiguredSide,
        result: Result<(), ProbeError>,
    ) -> TargetReport {
        let accepted = result.is_ok();
        let mut next = self.after_heartbeat(at, result);
        next.promotion.after_heartbeat(side, at, accepted);
        next
    }

    /// See the field: a heartbeat keeps it, any other change sets another.
    pub(crate) fn poll_epoch(&self) -> u64 {
        self.poll_epoch
    }

    /// The report after one heartbeat write attempt.
    pub fn after_heartbeat(&self, at: SystemTime, result: Result<(), ProbeError>) -> TargetReport {
        let mut next = self.clone();
        match result {
            Ok(()) => {
                next.heartbeat.last_write = Some(at);
                next.heartbeat.writes_total += 1;
                next.heartbeat.last_error = None;
            }
            Err(error) => {
                next.heartbeat.failures_total += 1;
                next.heartbeat.last_error = Some(error);
            }
        }
        next
    }

    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures_total[reason_index(reason)]
    }
}

fn reason_index(reason: FailureReason) -> usize {
    FailureReason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is in ALL")
}

fn max_time(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The latest report of every target the store tracks, by id. Immutable:
/// a change publishes a new snapshot, so a reader's copy never moves under it.
///
/// Copy-on-write in two levels, so that recording one poll copies
/// `O(√N)`-ish, not the whole map: the ids map to slots once per
/// configuration (`index`, shared by every snapshot until a reload), and
/// the reports sit in chunks of [`CHUNK`] behind `Arc`s; a change copies the
/// list of chunk pointers and the one chunk it touches. With 10,000 targets
/// polled every 5 s, copying the whole map on every poll cost 20,000
/// reference-count updates per poll, 2,000 polls a second, under the lock.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    index: Arc<HashMap<TargetId, usize>>,
    chunks: Vec<Arc<Vec<Arc<TargetReport>>>>,
}

/// Reports per chunk of a [`Snapshot`].
const CHUNK: usize = 64;

impl Snapshot {
    /// A snapshot holding exactly these reports (tests, benchmarks).
    pub fn from_reports(reports: impl IntoIterator<Item = (TargetId, TargetReport)>) -> Snapshot {
        Snapshot::build(
            reports
                .into_iter()
                .map(|(id, report)| (id, Arc::new(report))),
        )
    }

    fn build(reports: impl IntoIterator<Item = (TargetId, Arc<TargetReport>)>) -> Snapshot {
        let mut index: HashMap<TargetId, usize> = HashMap::new();
        let mut chunks: Vec<Vec<Arc<TargetReport>>> = Vec::new();
        for (id, report) in reports {
            if let Some(&slot) = index.get(&id) {
                // A repeated id: the last report wins, as in a map.
                chunks[slot / CHUNK][slot % CHUNK] = report;
                continue;
            }
            let slot = index.len();
            if slot % CHUNK == 0 {
                chunks.push(Vec::with_capacity(CHUNK));
            }
            chunks.last_mut().expect("a chunk").push(report);
            index.insert(id, slot);
        }
        Snapshot {
            index: Arc::new(index),
            chunks: chunks.into_iter().map(Arc::new).collect(),
        }
    }

    fn at(&self, slot: usize) -> &Arc<TargetReport> {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// The report of the target with this id (a `&TargetId`, or the
    /// [`TargetId::key`] of a configured target).
    pub fn report<Q>(&self, id: &Q) -> Option<&Arc<TargetReport>>
    where
        TargetId: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.get(id).map(|&slot| self.at(slot))
    }

    /// The stored id and the report: the id is the snapshot's own (cloning
    /// it does not allocate).
    pub fn entry<Q>(&self, id: &Q) -> Option<(&TargetId, &Arc<TargetReport>)>
    where
        TargetId: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index
            .get_key_value(id)
            .map(|(id, &slot)| (id, self.at(slot)))
    }

    /// Every tracked target's report, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TargetId, &Arc<TargetReport>)> {
        self.index.iter().map(|(id, &slot)| (id, self.at(slot)))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True once every tracked target has been polled at least once.
    pub fn first_round_done(&self) -> bool {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .all(|r| r.runs_total > 0)
    }

    /// This snapshot with the report in `slot` replaced: copies the chunk
    /// pointers and one chunk.
    fn with(&self, slot: usize, report: Arc<TargetReport>) -> Snapshot {
        let mut chunks = self.chunks.clone();
        let chunk = &mut chunks[slot / CHUNK];
        let mut copy = Vec::clone(chunk);
        copy[slot % CHUNK] = report;
        *chunk = Arc::new(copy);
        Snapshot {
            index: self.index.clone(),
            chunks,
        }
    }
}

/// The shared latest-report store.
#[derive(Debug)]
pub struct Store {
    current: Mutex<Arc<Snapshot>>,
}

impl Store {
    /// A store tracking these targets, none polled yet.
    pub fn new(targets: impl IntoIterator<Item = TargetId>) -> Store {
        Store {
            current: Mutex::new(Arc::new(Snapshot::build(
                targets
                    .into_iter()
                    .map(|id| (id, Arc::new(TargetReport::default()))),
            ))),
        }
    }

    /// The latest snapshot; never blocks on a probe.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records one poll attempt (see [`TargetReport::after_poll`]).
    pub fn record_poll(
        &self,
        target: &TargetId,
        started: impl Into<Stamp>,
        finished: impl Into<Stamp>,
        result: Result<Measurement, ProbeError>,
    ) {
        let (started, finished) = (started.into(), finished.into());
        self.update(target, |report| {
            report.after_poll(started, finished, result)
        });
    }

    pub fn record_heartbeat(
        &self,
        target: &TargetId,
        at: SystemTime,
        result: Result<(), ProbeError>,
    ) {
        self.record_heartbeat_on(target, at, ConfiguredSide::Primary, result);
    }

    /// A heartbeat write attempt on one configured side of a pair.
    pub fn record_heartbeat_on(
        &self,
        target: &TargetId,
        at: SystemTime,
        side: ConfiguredSide,
        result: Result<(), ProbeError>,
    ) {
        self.update(target, |report| report.after_heartbeat_on(at, side, result));
    }

    /// Tracks exactly `targets` from now on (a reloaded configuration): a
    /// target tracked before keeps its report (history, the last proven
    /// recovery point), a new one starts never polled, a target no longer
    /// listed is dropped (its series disappear), and one in `forget` starts
    /// again from nothing (its settings changed, so what was proven was
    /// about another pair).
    pub fn track_exactly(&self, targets: impl IntoIterator<Item = TargetId>, forget: &[TargetId]) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let next = Snapshot::build(targets.into_iter().map(|id| {
            let report = match current.report(&id) {
                Some(report) if !forget.contains(&id) => report.clone(),
                _ => Arc::new(TargetReport::default()),
            };
            (id, report)
        }));
        *current = Arc::new(next);
    }

    /// Replaces one target's report. A target the store does not track (a
    /// late result for one a reload removed) is dropped: the set of targets
    /// is the store's to decide, not a writer's.
    fn update(&self, target: &TargetId, change: impl FnOnce(&TargetReport) -> TargetReport) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&slot) = current.index.get(target) else {
            tracing::debug!(target = %target, "result for a target the store does not track; dropped");
            return;
        };
        let next_report = Arc::new(change(current.at(slot)));
        *current = Arc::new(current.with(slot, next_report));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{LinkState, Side};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn measured(evidence: u64, rp: Option<u64>) -> Measurement {
        let mut m = Measurement::new(at(evidence));
        m.recovery_point = rp.map(at);
        m.link = LinkState::Healthy;
        m.replica_reachable = Some(true);
        m.source_reachable = Some(true);
        m
    }

    /// Recording a poll copies one chunk, not the map: every other report
    /// and chunk is shared with the previous snapshot, which stays as it
    /// was; a reload (fewer targets, another order) keeps the reports.
    #[test]
    fn a_change_copies_one_chunk_and_keeps_every_other_report() {
        let ids: Vec<TargetId> = (0..200).map(|i| TargetId::new(&format!("t{i}"))).collect();
        let store = Store::new(ids.iter().cloned());
        let before = store.snapshot();
        store.record_poll(&ids[130], at(1), at(1), Ok(measured(1, Some(1))));
        let after = store.snapshot();
        assert_eq!(after.len(), 200);
        for (i, id) in ids.iter().enumerate() {
            let same = Arc::ptr_eq(before.report(id).unwrap(), after.report(id).unwrap());
            assert_eq!(same, i != 130, "{id}");
        }
        assert_eq!(after.report(&ids[130]).unwrap().runs_total, 1);
        assert_eq!(before.report(&ids[130]).unwrap().runs_total, 0);
        assert!(Arc::ptr_eq(&before.index, &after.index));
        assert!(Arc::ptr_eq(&before.chunks[0], &after.chunks[0]));
        assert!(!Arc::ptr_eq(
            &before.chunks[130 / CHUNK],
            &after.chunks[130 / CHUNK]
        ));
        assert!(!after.first_round_done());
        store.track_exactly(ids[100..].iter().rev().cloned(), &[]);
        let reloaded = store.snapshot();
        assert_eq!(reloaded.len(), 100);
        assert_eq!(reloaded.iter().count(), 100);
        assert!(reloaded.report(&ids[0]).is_none());
        assert_eq!(reloaded.report(&ids[130]).unwrap().runs_total, 1);
        let (id, _) = reloaded.entry("t130").unwrap();
        assert_eq!(id, &ids[130]);
    }

    #[test]
    fn recovery_point_never_moves_back_and_exposure_grows_on_failure() {
        let r = TargetReport::default().after_poll(at(10), at(10), Ok(measured(10, Some(10))));
        assert_eq!(r.exposure, Some(Duration::ZERO));
        // A poll that proves only an older point keeps the newer one.
        let r = r.after_poll(at(15), at(15), Ok(measured(15, Some(3))));
        assert_eq!(r.recovery_point, Some(at(10)));
        assert_eq!(r.exposure, Some(Duration::from_secs(5)));
        // A failed poll keeps the recovery point: exposure grows, never resets.
        let err = ProbeError::new(FailureReason::Timeout, "no answer").on(Side::Replica);
        let r = r.after_poll(at(20), at(23), Err(err));
        assert_eq!(r.recovery_point, Some(at(10)));
        assert_eq!(r.exposure, Some(Duration::from_secs(13)));
        assert_eq!(r.evidence_time, Some(at(15)));
        assert!(r.measurement.is_none());
        assert_eq!(r.failures(FailureReason::Timeout), 1);
        assert_eq!(r.runs_total, 3);
    }

    #[test]
    fn link_drops_are_counted_on_real_transitions_only() {
        let with_link = |secs: u64, link: LinkState| {
            let mut m = measured(secs, Some(secs));
            m.link = link;
            Ok(m)
        };
        let down = || LinkState::Unhealthy("WAL receiver is not streaming".to_string());
        let unknown = || LinkState::Unknown("the replica cannot be reached".to_string());
        let failed = || Err(ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica));
        let mut r = TargetReport::default();
        let mut expect = |secs: u64, result: Result<Measurement, ProbeError>, total: u64| {
            r = r.after_poll(at(secs), at(secs), result);
            assert_eq!(r.link_down_total, total, "after the poll at {secs}");
        };
        // A first poll that sees the link down is not a transition: nothing
        // says it was ever up under this exporter.
        expect(1, with_link(1, down()), 0);
        expect(2, with_link(2, LinkState::Healthy), 0);
        expect(3, with_link(3, down()), 1);
        // Still down: the same drop.
        expect(4, with_link(4, down()), 1);
        expect(5, with_link(5, LinkState::Healthy), 1);
        // Unknown in between says nothing: up → unknown → up is no drop...
        expect(6, with_link(6, unknown()), 1);
        expect(7, failed(), 1);
        expect(8, with_link(8, LinkState::Healthy), 1);
        // ...and up → unknown → down is one.
        expect(9, failed(), 1);
        expect(10, with_link(10, unknown()), 1);
        expect(11, with_link(11, down()), 2);
        expect(12, with_link(12, LinkState::Healthy), 2);
        expect(13, with_link(13, down()), 3);
    }

    /// A reading of our clocks: steady `secs`, wall clock `step` seconds off.
    fn clock(secs: u64, step: i64) -> Stamp {
        let steady = at(secs);
        let wall = if step >= 0 {
            steady + Duration::from_secs(step as u64)
        } else {
            steady - Duration::from_secs(step.unsigned_abs())
        };
        Stamp { wall, steady }
    }

    /// A healthy poll at `poll` whose recovery point is `rp` in the same
    /// wall clock.
    fn measured_at(poll: Stamp, rp: Option<SystemTime>) -> Measurement {
        let mut m = Measurement::new(poll.wall);
        m.recovery_point = rp;
        m.link = LinkState::Healthy;
        m.replica_reachable = Some(true);
        m.source_reachable = Some(true);
        m
    }

    #[test]
    fn a_backward_step_of_our_clock_never_pins_the_exposure_at_zero() {
        // Proven up to "now" while the wall clock ran 10 s ahead.
        let t10 = clock(10, 10);
        let r = TargetReport::default().after_poll(t10, t10, Ok(measured_at(t10, Some(t10.wall))));
        assert_eq!(r.exposure, Some(Duration::ZERO));
        // Replay paused; NTP steps the clock back. Polls prove nothing newer.
        let t14 = clock(14, 0);
        let r = r.after_poll(t14, t14, Ok(measured_at(t14, None)));
        // 4 s of steady time since the proof, not 4 - 10 (pinned at 0).
        assert_eq!(r.exposure, Some(Duration::from_secs(4)));
        assert_eq!(r.recovery_point, Some(at(10)));
        assert_eq!(r.evidence_time, Some(at(14)));
        assert_eq!(r.last_source_contact, Some(at(14)));
        // An older proof in the new clock does not move it back either.
        let r = r.after_poll(t14, t14, Ok(measured_at(t14, Some(at(3)))));
        assert_eq!(r.exposure, Some(Duration::from_secs(4)));
    }

    #[test]
    fn a_forward_step_of_our_clock_does_not_add_to_the_exposure() {
        let t10 = clock(10, 0);
        let r = TargetReport::default().after_poll(t10, t10, Ok(measured_at(t10, Some(t10.wall))));
        let t16 = clock(16, 3600);
        let r = r.after_poll(t16, t16, Ok(measured_at(t16, None)));
        assert_eq!(r.exposure, Some(Duration::from_secs(6)));
        // Published in the current wall clock: 6 s before it.
        assert_eq!(r.recovery_point, Some(at(10 + 3600)));
        assert_eq!(r.last_success, Some(at(16 + 3600)));
        // A failed poll after the step keeps the proof, exposure grows.
        let err = ProbeError::new(FailureReason::Timeout, "no answer").on(Side::Replica);
        let t20 = clock(20, 3600);
        let r = r.after_poll(t20, t20, Err(err));
        assert_eq!(r.exposure, Some(Duration::from_secs(10)));
        assert_eq!(r.last_success, Some(at(16 + 3600)));
    }

    #[test]
    fn a_recovery_point_later_than_its_evidence_is_not_proof() {
        let t10 = clock(10, 0);
        let r = TargetReport::default().after_poll(t10, t10, Ok(measured_at(t10, Some(at(8)))));
        // A heartbeat of another exporter whose clock runs an hour ahead.
        let t12 = clock(12, 0);
        let r = r.after_poll(t12, t12, Ok(measured_at(t12, Some(at(3612)))));
        assert_eq!(r.recovery_point, Some(at(8)));
        assert_eq!(r.exposure, Some(Duration::from_secs(4)));
        // The evidence itself still counts: the replica answered.
        assert_eq!(r.evidence_time, Some(at(12)));
    }

    #[test]
    fn an_unchanged_recovery_point_is_published_unchanged() {
        let t10 = clock(10, 0);
        let r = TargetReport::default().after_poll(t10, t10, Ok(measured_at(t10, Some(at(10)))));
        // The next poll reads the two clocks a few microseconds apart.
        let jitter = Duration::from_micros(3);
        let t12 = Stamp {
            wall: at(12) + jitter,
            steady: at(12),
        };
        let r = r.after_poll(t12, t12, Ok(measured_at(t12, None)));
        assert_eq!(r.recovery_point, Some(at(10)));
        assert_eq!(r.exposure, Some(Duration::from_secs(2) + jitter));
    }

    #[test]
    fn a_poll_the_wall_clock_stepped_under_proves_nothing() {
        let t10 = clock(10, 0);
        let r = TargetReport::default().after_poll(t10, t10, Ok(measured_at(t10, Some(at(10)))));
        // The clock stepped back 30 s during the poll: its wall times (taken
        // in the old clock) would read 30 s newer than they are.
        let (started, finished) = (clock(20, 0), clock(21, -30));
        let r = r.after_poll(started, finished, Ok(measured_at(started, Some(at(20)))));
        assert_eq!(r.exposure, Some(Duration::from_secs(11)));
        assert_eq!(r.runs_total, 2);
        assert_eq!(r.last_duration, Some(Duration::from_secs(1)));
        // The next poll, all in the new clock, proves again.
        let t22 = clock(22, -30);
        let r = r.after_poll(t22, t22, Ok(measured_at(t22, Some(t22.wall))));
        assert_eq!(r.exposure, Some(Duration::ZERO));
        assert_eq!(r.recovery_point, Some(at(22) - Duration::from_secs(30)));
    }

    #[test]
    fn no_proof_after_start_means_unknown_exposure() {
        let r = TargetReport::default().after_poll(at(10), at(10), Ok(measured(10, None)));
        assert_eq!(r.recovery_point, None);
        assert_eq!(r.exposure, None);
    }

    #[test]
    fn unreachable_replica_does_not_refresh_evidence() {
        let r = TargetReport::default().after_poll(at(10), at(10), Ok(measured(10, Some(10))));
        let mut partial = measured(20, None);
        partial.replica_reachable = Some(false);
        partial
            .failures
            .push(ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica));
        let r = r.after_poll(at(20), at(20), Ok(partial));
        assert_eq!(r.evidence_time, Some(at(10)));
        assert!(!r.last_poll_succeeded);
        assert_eq!(r.failures(FailureReason::Connect), 1);
        assert_eq!(r.last_source_contact, Some(at(20)));
    }

    #[test]
    fn store_publishes_new_snapshots_without_touching_old_ones() {
        let (a, b) = (TargetId::new("a"), TargetId::new("b"));
        let store = Store::new([a.clone(), b.clone()]);
        let before = store.snapshot();
        store.record_poll(&b, at(1), at(1), Ok(measured(1, Some(1))));
        assert_eq!(before.report(&b).unwrap().runs_total, 0);
        assert_eq!(store.snapshot().report(&b).unwrap().runs_total, 1);
        assert_eq!(store.snapshot().report(&a).unwrap().runs_total, 0);
        assert!(!store.snapshot().first_round_done());
        store.record_poll(&a, at(1), at(1), Ok(measured(1, Some(1))));
        assert!(store.snapshot().first_round_done());
    }

    #[test]
    fn reports_are_found_by_id_and_untracked_targets_are_dropped() {
        let db = TargetId::new("erp-db");
        let store = Store::new([db.clone()]);
        store.record_poll(&db, at(1), at(1), Ok(measured(1, Some(1))));
        // Looked up by the borrowed name: the same report.
        assert_eq!(store.snapshot().report("erp-db").unwrap().runs_total, 1);
        let (id, _) = store
            .snapshot()
            .entry("erp-db")
            .map(|(id, r)| (id.clone(), r.clone()))
            .unwrap();
        assert_eq!(id, db);
        // A result for a target the store does not track changes nothing.
        let before = store.snapshot();
        store.record_poll(
            &TargetId::new("gone"),
            at(2),
            at(2),
            Ok(measured(2, Some(2))),
        );
        let after = store.snapshot();
        assert!(Arc::ptr_eq(&before, &after));
        assert!(after.report("gone").is_none());
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn tracking_a_new_set_keeps_forgets_adds_and_drops() {
        let (kept, changed, removed, added) = (
            TargetId::new("kept"),
            TargetId::new("changed"),
            TargetId::new("removed"),
            TargetId::new("added"),
        );
        let store = Store::new([kept.clone(), changed.clone(), removed.clone()]);
        for id in [&kept, &changed, &removed] {
            store.record_poll(id, at(1), at(1), Ok(measured(1, Some(1))));
        }
        store.track_exactly(
            [kept.clone(), changed.clone(), added.clone()],
            std::slice::from_ref(&changed),
        );
        let snapshot = store.snapshot();
        assert_eq!(snapshot.len(), 3);
        let report = snapshot.report(&kept).unwrap();
        assert_eq!(report.recovery_point, Some(at(1)));
        assert_eq!(report.runs_total, 1);
        assert_eq!(snapshot.report(&changed).unwrap().runs_total, 0);
        assert_eq!(snapshot.report(&changed).unwrap().recovery_point, None);
        assert_eq!(snapshot.report(&added).unwrap().runs_total, 0);
        assert!(snapshot.report(&removed).is_none());
    }
}
