//! What the queue kinds (`rabbitmq`, `sql_queue`, `redis_stream`, `sqs`)
//! share: the recovery point of a queue, the `rpo_queue_*` detail series,
//! and what a queue whose server stops answering still proves
//! ([`SourceContact`]), defined once.
//!
//! For a queue, the recovery point is the enqueue time of the oldest message
//! still waiting to be processed (exposure = its age), or the instant of the
//! observation when nothing waits. When messages wait but their age is not
//! known (publishers that set no timestamp, a NULL oldest time), the
//! recovery point is never "now": it is bounded by the last instant the
//! queue was seen completely empty (everything in it now arrived later), or
//! unknown when the exporter has not seen it empty since it started.

use std::time::{Duration, SystemTime};

use crate::probe::{unix_seconds, Detail, FailureReason, LinkState, Measurement, ProbeError, Side};

use crate::metric_def::MetricDef;

// The `rpo_queue_*` detail series, declared once for every queue kind;
// each kind lists the ones it publishes in its own `DETAIL_FAMILIES`.
pub static MESSAGES: MetricDef = MetricDef::gauge(
    "rpo_queue_messages",
    "Messages (rows) in the queue not yet processed.",
);
pub static OLDEST_MESSAGE_AGE_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_queue_oldest_message_age_seconds",
    "Age of the oldest waiting message, when its enqueue time is known (0 when empty).",
);
pub static CONSUMERS: MetricDef =
    MetricDef::gauge("rpo_queue_consumers", "Consumers attached to the queue.");
pub static LAST_EMPTY_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_queue_last_empty_timestamp_seconds",
    "When this exporter last saw the queue with no message at all; bounds the age of messages without a timestamp.",
);
pub static MESSAGES_READY: MetricDef = MetricDef::gauge(
    "rpo_queue_messages_ready",
    "Messages waiting to be delivered to a consumer.",
);
pub static MESSAGES_UNACKNOWLEDGED: MetricDef = MetricDef::gauge(
    "rpo_queue_messages_unacknowledged",
    "Messages delivered to a consumer and not yet acknowledged.",
);
pub static DEAD_LETTER_MESSAGES: MetricDef = MetricDef::gauge(
    "rpo_queue_dead_letter_messages",
    "Messages in the queue's dead-letter queue: not replayed automatically, they need a person.",
);

/// One reading of a queue's depth and age.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueObservation {
    /// The instant (this exporter's clock) the counts are known to describe:
    /// the poll instant, less any delay of the source's statistics.
    pub as_of: SystemTime,
    /// Messages (rows) waiting to be processed, which the recovery point dates.
    pub waiting: u64,
    /// Everything the queue holds, waiting or in processing. Only a queue
    /// with nothing at all in it is "seen empty".
    pub total: u64,
    /// When the oldest waiting message was enqueued, when known.
    pub oldest_enqueued: Option<SystemTime>,
}

/// Remembers when the queue was last seen empty, for the honest bound.
#[derive(Debug, Default, Clone)]
pub struct QueueHistory {
    last_seen_empty: Option<SystemTime>,
}

impl QueueHistory {
    /// The recovery point one observation proves; records what it needs.
    pub fn recovery_point(&mut self, observation: &QueueObservation) -> Option<SystemTime> {
        if observation.total == 0 {
            self.last_seen_empty = Some(
                self.last_seen_empty
                    .map_or(observation.as_of, |t| t.max(observation.as_of)),
            );
        }
        if observation.waiting == 0 {
            return Some(observation.as_of);
        }
        // A publisher's clock ahead of ours must not date a message in the future.
        let dated = observation
            .oldest_enqueued
            .map(|t| t.min(observation.as_of));
        match (dated, self.last_seen_empty) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the queue was last seen empty (this exporter's clock).
    pub fn last_seen_empty(&self) -> Option<SystemTime> {
        self.last_seen_empty
    }
}

/// A queue lives where its server (broker, database, Redis) runs: in the
/// primary region, with the producers. So the server is the target's
/// *source* side; there is no replica. When it stops answering (its region
/// lost, or cut off from this exporter), what the last answer proved is all
/// anyone outside that region knows: the recovery point stays (the store
/// keeps it), the evidence is as old as that answer and goes stale after
/// `stale_after`, and the unplanned verdict's known loss window is "last
/// answer − recovery point": the age of the oldest unprocessed message
/// when the queue was last seen, the messages that would have to be
/// replayed up to then (as for a pair, what reached the lost region after
/// the last contact is not known to anyone outside it).
#[derive(Debug, Default, Clone)]
pub struct SourceContact {
    /// When the server last answered (the answer's evidence time), and the
    /// backlog it showed then.
    last_answer: Option<(SystemTime, Option<f64>)>,
}

impl SourceContact {
    /// Records a poll the server answered: marks `measurement` as the
    /// source side reached and remembers its time and backlog.
    pub fn answered(&mut self, measurement: &mut Measurement) {
        measurement.source_reachable = Some(true);
        self.last_answer = Some((measurement.evidence_time, measurement.backlog_operations));
    }

    /// What a poll that failed with `error` reports. A server that did not
    /// answer (`connect`, `timeout`) after answering before is the source
    /// unreachable: a measurement dated at the last answer, proving
    /// nothing new, with the backlog last seen (`rpo_backlog_operations`,
    /// as of `rpo_evidence_timestamp_seconds`). Anything else (the server
    /// answered: a refused password, an unknown queue), or no answer ever,
    /// fails the poll as before.
    pub fn unanswered(&self, error: ProbeError) -> Result<Measurement, ProbeError> {
        let unreachable = matches!(
            error.reason,
            FailureReason::Connect | FailureReason::Timeout
        );
        let Some((at, backlog)) = self.last_answer.filter(|_| unreachable) else {
            return Err(error);
        };
        let mut measurement = Measurement::new(at);
        measurement.link = LinkState::Unknown(
            "the queue's server did not answer: the messages it holds are unknown since the last answer"
                .to_string(),
        );
        measurement.source_reachable = Some(false);
        measurement.backlog_operations = backlog;
        measurement.failures = vec![error.on(Side::Source)];
        Ok(measurement)
    }
}

/// The detail series both queue kinds publish. `consumers` is `None` for a
/// kind that cannot know it (a table).
pub fn queue_details(
    messages: u64,
    oldest_message_age: Option<Duration>,
    consumers: Option<u64>,
    last_seen_empty: Option<SystemTime>,
) -> Vec<Detail> {
    let mut details = vec![Detail::new(&MESSAGES, messages as f64)];
    if let Some(age) = oldest_message_age {
        details.push(Detail::new(&OLDEST_MESSAGE_AGE_SECONDS, age.as_secs_f64()));
    }
    if let Some(consumers) = consumers {
        details.push(Detail::new(&CONSUMERS, consumers as f64));
    }
    if let Some(t) = last_seen_empty {
        details.push(Detail::new(&LAST_EMPTY_TIMESTAMP_SECONDS, unix_seconds(t)));
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn observed(as_of: u64, waiting: u64, total: u64, oldest: Option<u64>) -> QueueObservation {
        QueueObservation {
            as_of: at(as_of),
            waiting,
            total,
            oldest_enqueued: oldest.map(at),
        }
    }

    #[test]
    fn empty_queue_is_caught_up_at_the_observation() {
        let mut h = QueueHistory::default();
        assert_eq!(h.recovery_point(&observed(10, 0, 0, None)), Some(at(10)));
        assert_eq!(h.last_seen_empty(), Some(at(10)));
    }

    #[test]
    fn waiting_messages_are_dated_by_the_oldest() {
        let mut h = QueueHistory::default();
        assert_eq!(
            h.recovery_point(&observed(100, 5, 5, Some(40))),
            Some(at(40))
        );
    }

    #[test]
    fn unknown_age_is_never_now() {
        // Never seen empty: unknown, not zero.
        let mut h = QueueHistory::default();
        assert_eq!(h.recovery_point(&observed(100, 5, 5, None)), None);
        // Seen empty at 120: whatever waits at 130 arrived after 120.
        assert_eq!(h.recovery_point(&observed(120, 0, 0, None)), Some(at(120)));
        assert_eq!(h.recovery_point(&observed(130, 3, 3, None)), Some(at(120)));
        assert_eq!(h.recovery_point(&observed(500, 9, 9, None)), Some(at(120)));
    }

    #[test]
    fn the_empty_bound_tightens_an_older_timestamp() {
        let mut h = QueueHistory::default();
        h.recovery_point(&observed(120, 0, 0, None));
        // A timestamp older than the empty sighting is impossible for a
        // message enqueued later (a publisher's slow clock): the bound wins.
        assert_eq!(
            h.recovery_point(&observed(130, 1, 1, Some(60))),
            Some(at(120))
        );
        assert_eq!(
            h.recovery_point(&observed(130, 1, 1, Some(125))),
            Some(at(125))
        );
    }

    #[test]
    fn in_processing_messages_do_not_count_as_seen_empty() {
        let mut h = QueueHistory::default();
        // Nothing waits, two are being processed: caught up, but not empty.
        assert_eq!(h.recovery_point(&observed(100, 0, 2, None)), Some(at(100)));
        assert_eq!(h.last_seen_empty(), None);
        assert_eq!(h.recovery_point(&observed(110, 2, 4, None)), None);
    }

    #[test]
    fn a_future_timestamp_is_clamped_to_the_observation() {
        let mut h = QueueHistory::default();
        assert_eq!(
            h.recovery_point(&observed(100, 1, 1, Some(130))),
            Some(at(100))
        );
    }

    #[test]
    fn a_server_gone_after_answering_is_the_source_unreachable() {
        let mut contact = SourceContact::default();
        let refused = || ProbeError::new(FailureReason::Connect, "connection refused");
        // Never answered: nothing to keep, the poll fails.
        assert_eq!(contact.unanswered(refused()).unwrap_err(), refused());
        let mut answer = Measurement::new(at(100));
        answer.recovery_point = Some(at(40));
        answer.backlog_operations = Some(3.0);
        contact.answered(&mut answer);
        assert_eq!(answer.source_reachable, Some(true));

        let lost = contact.unanswered(refused()).unwrap();
        assert_eq!(lost.evidence_time, at(100), "dated at the last answer");
        assert_eq!(lost.recovery_point, None, "proves nothing new");
        assert_eq!(lost.source_reachable, Some(false));
        assert_eq!(lost.replica_reachable, None);
        assert_eq!(lost.backlog_operations, Some(3.0), "the backlog last seen");
        assert!(matches!(lost.link, LinkState::Unknown(_)));
        assert_eq!(lost.failures, [refused().on(Side::Source)]);
        let hung = ProbeError::new(FailureReason::Timeout, "no answer within 3s");
        assert!(contact.unanswered(hung).is_ok());

        // The server answered, with a refusal: a failed poll, not a lost region.
        let refusal = ProbeError::new(FailureReason::Auth, "WRONGPASS");
        assert_eq!(contact.unanswered(refusal.clone()).unwrap_err(), refusal);
    }

    #[test]
    fn details_have_one_definition() {
        let d = queue_details(3, Some(Duration::from_secs(7)), Some(0), None);
        let names: Vec<&str> = d.iter().map(|d| d.family.name).collect();
        assert_eq!(
            names,
            [
                "rpo_queue_messages",
                "rpo_queue_oldest_message_age_seconds",
                "rpo_queue_consumers"
            ]
        );
        assert_eq!(d[1].value, 7.0);
    }
}
