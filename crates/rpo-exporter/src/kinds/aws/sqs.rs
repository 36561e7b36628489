//! The `sqs` kind: an integration queue whose unprocessed messages must be
//! replayed after a failover.
//!
//! Each poll reads the queue's live counts (`GetQueueAttributes`: visible,
//! in flight, delayed) and, through the shared CloudWatch batch, the newest
//! `ApproximateAgeOfOldestMessage` (the minute's maximum). The recovery point
//! is the enqueue time of the oldest waiting message, as `queue::QueueHistory`
//! defines it for every queue kind: the poll instant when nothing waits;
//! otherwise the datapoint's time minus its age (CloudWatch's age is a minute
//! to several minutes old, so this is conservative), never later than the
//! last instant this exporter saw the queue completely empty. With messages
//! waiting and neither known, the recovery point is unknown, never "now".
//!
//! Every message the queue still holds is unprocessed: visible and delayed
//! messages wait, and in-flight ones (received, not yet deleted) are not
//! processed either: a consumer that dies or is cut off by the failover
//! never deletes them, and they must be replayed. So a queue holding only
//! in-flight messages is never "now": its recovery point is the oldest
//! message's enqueue time or the last instant it was seen empty (issue 10).
//! `ApproximateAgeOfOldestMessage` leaves out a message received three or
//! more times (SQS developer guide, "Available CloudWatch metrics for Amazon
//! SQS": it then points at the next message; poison-pill messages are
//! excluded until consumed): such a message cannot be seen by any API
//! short of receiving it, which this exporter never does. So the age dates
//! the oldest message only when the queue's redrive policy moves a message
//! to the dead-letter queue before a third receive (`maxReceiveCount` <= 2);
//! otherwise it is a lower bound of the truth and dates nothing: the
//! recovery point is the last instant the queue was seen empty, or unknown
//! (NO-GO, with the reason), unless the target sets
//! `trust_oldest_message_age = true` to accept the blind spot. The
//! dead-letter queue's count shows the messages that moved on.
//! The counts are live, so the evidence time is
//! the poll instant. The queue lives in one region: it is the target's source
//! side. When that region does not answer, the poll reports the source
//! unreachable and keeps the last answer's time as its evidence time, so the
//! recovery point stays where it was and the evidence ages honestly. A dead-letter queue's depth is reported beside
//! (`rpo_queue_dead_letter_messages`): those messages need a person, not a
//! replay.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::QueueAttributeName;
use futures::future::BoxFuture;

use super::{
    clients_for, lookback, poll_deadline, remaining, AwsClients, Datapoint, MetricQuery, Stat,
};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::evidence::queue::{self, queue_details, QueueHistory, QueueObservation};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
    Side,
};

use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;
use serde::Deserialize;

use super::config::{self, AwsAccess};
use crate::kinds::{KindDef, KindSpec};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::aws("sqs", parse, config::SQS_DEFAULTS, DETAIL_FAMILIES);

/// An SQS integration queue.
#[derive(Debug, Clone)]
pub struct SqsTarget {
    pub access: AwsAccess,
    pub queue: SqsQueue,
    pub dead_letter_queue: Option<SqsQueue>,
    /// Take `ApproximateAgeOfOldestMessage` as proof even when a message can
    /// be received three or more times (the age then leaves it out).
    pub trust_oldest_message_age: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqsQueue {
    Url(String),
    Name(String),
}

impl SqsQueue {
    /// The queue's name, for messages and the CloudWatch dimension.
    pub fn name(&self) -> &str {
        match self {
            SqsQueue::Name(name) => name,
            SqsQueue::Url(url) => url.trim_end_matches('/').rsplit('/').next().unwrap_or(url),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqs {
    queue_url: Option<String>,
    queue_name: Option<String>,
    dead_letter_queue_url: Option<String>,
    dead_letter_queue_name: Option<String>,
    trust_oldest_message_age: Option<bool>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let access = config::access(keys)?;
    let raw: RawSqs = keys.take()?;
    let queue = sqs_queue(keys, "queue", raw.queue_url.as_deref(), raw.queue_name.as_deref())?
        .ok_or_else(|| {
            keys.invalid(
            "queue_url",
                "set `queue_url` (like \"https://sqs.eu-central-1.amazonaws.com/123456789012/erp-outbox\") or `queue_name`",
            )
        })?;
    let dead_letter_queue = sqs_queue(
        keys,
        "dead_letter_queue",
        raw.dead_letter_queue_url.as_deref(),
        raw.dead_letter_queue_name.as_deref(),
    )?;
    Ok(Arc::new(SqsTarget {
        access,
        queue,
        dead_letter_queue,
        trust_oldest_message_age: raw.trust_oldest_message_age.unwrap_or(false),
    }))
}

fn sqs_queue(
    keys: &TargetKeys<'_>,
    name: &str,
    url: Option<&str>,
    queue_name: Option<&str>,
) -> Result<Option<SqsQueue>, ConfigError> {
    match (url, queue_name) {
        (Some(_), Some(_)) => Err(keys.invalid(
            &format!("{name}_url"),
            format!("set one of `{name}_url` or `{name}_name`, not both"),
        )),
        (Some(url), None) => {
            let ok = reqwest::Url::parse(url).ok().is_some_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path_segments()
                        .is_some_and(|s| s.filter(|p| !p.is_empty()).count() >= 2)
            });
            if !ok {
                return Err(keys.invalid(
            &format!("{name}_url"),
                    "is not a queue URL like \"https://sqs.eu-central-1.amazonaws.com/123456789012/erp-outbox\"",
                ));
            }
            Ok(Some(SqsQueue::Url(url.to_string())))
        }
        (None, Some(queue_name)) => {
            let base = queue_name.strip_suffix(".fifo").unwrap_or(queue_name);
            if base.is_empty()
                || queue_name.len() > 80
                || !base
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(keys.invalid(
            &format!("{name}_name"),
                    "is not a queue name (1-80 letters, digits, '-', '_', optionally ending in .fifo)",
                ));
            }
            Ok(Some(SqsQueue::Name(queue_name.to_string())))
        }
        (None, None) => Ok(None),
    }
}

impl KindSpec for SqsTarget {
    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(SqsProbe::new(target, self, &context.aws_calls)?))
    }
}

// ---------------------------------------------------------------------------
// Measuring.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static MESSAGES: MetricDef = MetricDef::gauge(
    "rpo_sqs_messages",
    "Messages in the SQS queue by state (GetQueueAttributes, approximate).",
)
.with_labels(&["state"]);
pub static AGE_OF_OLDEST_MESSAGE_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_sqs_age_of_oldest_message_seconds",
    "The newest CloudWatch ApproximateAgeOfOldestMessage of the queue (the minute's maximum).",
);
pub static AGE_OF_OLDEST_MESSAGE_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_sqs_age_of_oldest_message_timestamp_seconds",
    "The time of the newest ApproximateAgeOfOldestMessage datapoint (the start of its minute).",
);
pub static EARLY_REDRIVE_ENABLED: MetricDef = MetricDef::gauge(
    "rpo_sqs_early_redrive_enabled",
    "1 when the queue's redrive policy moves a message to the dead-letter queue before its third receive (maxReceiveCount <= 2), so ApproximateAgeOfOldestMessage cannot leave out a poison message; 0 when it can (no redrive policy, or more receives allowed).",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &MESSAGES,
    &EARLY_REDRIVE_ENABLED,
    &AGE_OF_OLDEST_MESSAGE_SECONDS,
    &AGE_OF_OLDEST_MESSAGE_TIMESTAMP_SECONDS,
    &queue::MESSAGES,
    &queue::OLDEST_MESSAGE_AGE_SECONDS,
    &queue::LAST_EMPTY_TIMESTAMP_SECONDS,
    &queue::DEAD_LETTER_MESSAGES,
];

/// A queue's live counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqsCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// The redrive policy's `maxReceiveCount`; `None` without a policy.
    pub max_receive_count: Option<u64>,
}

impl SqsCounts {
    /// Messages not yet processed: every message the queue holds, in-flight
    /// ones included (received is not processed; only a delete is).
    pub fn waiting(&self) -> u64 {
        self.total()
    }
    pub fn total(&self) -> u64 {
        self.visible + self.delayed + self.in_flight
    }

    /// Whether `ApproximateAgeOfOldestMessage` can see every message: it
    /// leaves out a message received three or more times (SQS developer
    /// guide, "Available CloudWatch metrics for Amazon SQS"), which only a
    /// redrive policy with `maxReceiveCount` <= 2 rules out (the message
    /// moves to the dead-letter queue instead of a third receive).
    pub fn age_sees_every_message(&self) -> bool {
        self.max_receive_count.is_some_and(|n| n <= 2)
    }
}

/// Why `ApproximateAgeOfOldestMessage` dates nothing for a queue whose
/// messages can be received three or more times, which holds messages and
/// was not seen empty: the words of the NO-GO.
pub fn blind_age_reason(max_receive_count: Option<u64>) -> String {
    let policy = match max_receive_count {
        None => "the queue has no redrive policy".to_string(),
        Some(n) => format!("the redrive policy allows {n} receives (maxReceiveCount {n})"),
    };
    format!(
        "the oldest message's age is unknown: ApproximateAgeOfOldestMessage leaves out a message received three or more times and {policy}, and the queue holds messages and has not been seen empty since the exporter started (set maxReceiveCount to 2 or less, or trust_oldest_message_age = true to accept the blind spot)"
    )
}

/// The counts from `GetQueueAttributes`' answer.
pub fn parse_counts(
    attributes: Option<&std::collections::HashMap<QueueAttributeName, String>>,
) -> Result<SqsCounts, ProbeError> {
    let get = |name: QueueAttributeName| -> Result<u64, ProbeError> {
        let text = attributes.and_then(|a| a.get(&name)).ok_or_else(|| {
            ProbeError::new(
                FailureReason::Parse,
                format!("GetQueueAttributes did not return {}", name.as_str()),
            )
        })?;
        text.trim().parse().map_err(|_| {
            ProbeError::new(
                FailureReason::Parse,
                format!("{} is `{text}`, not a count", name.as_str()),
            )
        })
    };
    Ok(SqsCounts {
        visible: get(QueueAttributeName::ApproximateNumberOfMessages)?,
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
        max_receive_count: attributes
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .and_then(|policy| max_receive_count(policy)),
    })
}

/// `maxReceiveCount` of a `RedrivePolicy` attribute (a JSON document; AWS
/// shows the count as a string or a number).
pub fn max_receive_count(policy: &str) -> Option<u64> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The oldest waiting message's enqueue time from an age datapoint.
pub fn oldest_enqueued(age: &Datapoint) -> Option<SystemTime> {
    (age.value >= 0.0 && age.value.is_finite())
        .then(|| age.time.checked_sub(Duration::from_secs_f64(age.value)))
        .flatten()
}

pub struct SqsProbe {
    target: Target,
    spec: SqsTarget,
    clients: Arc<AwsClients>,
    queue_url: Option<String>,
    dead_letter_queue_url: Option<String>,
    history: QueueHistory,
    /// When the queue last answered: the evidence a poll keeps while the
    /// queue's region does not answer.
    last_answer: Option<SystemTime>,
}

impl SqsProbe {
    pub fn new(
        target: &Target,
        spec: &SqsTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<SqsProbe, ProbeError> {
        let url = |q: &SqsQueue| match q {
            SqsQueue::Url(url) => Some(url.clone()),
            SqsQueue::Name(_) => None,
        };
        Ok(SqsProbe {
            target: target.clone(),
            spec: spec.clone(),
            clients: clients_for(&spec.access, aws_calls),
            queue_url: url(&spec.queue),
            dead_letter_queue_url: spec.dead_letter_queue.as_ref().and_then(url),
            history: QueueHistory::default(),
            last_answer: None,
        })
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = poll_deadline(self.target.timeout);
        let as_of = SystemTime::now();
        let queue_name = self.spec.queue.name().to_string();
        let age_query =
            vec![
                MetricQuery::new("AWS/SQS", "ApproximateAgeOfOldestMessage", Stat::Maximum)
                    .dimension("QueueName", queue_name.clone()),
            ];
        let clients = self.clients.clone();
        let age = clients.newest_datapoints(
            age_query,
            lookback(self.target.stale_after),
            remaining(deadline),
        );
        let counts = async {
            let url = resolve(
                &self.clients,
                &mut self.queue_url,
                &self.spec.queue,
                deadline,
            )
            .await?;
            counts_of(&self.clients, &url, deadline).await
        };
        let (counts, age) = futures::join!(counts, age);
        let counts = match (counts, self.last_answer) {
            (Ok(counts), _) => counts,
            (Err(err), None) => return Err(err.on(Side::Source)),
            // The queue's region did not answer: nothing new is known, and
            // what was proven stays (the store keeps the recovery point; the
            // evidence is as old as the last answer and goes stale).
            (Err(err), Some(last_answer)) => {
                let mut measurement = Measurement::new(last_answer);
                measurement.link =
                    LinkState::Unknown("the queue's region did not answer".to_string());
                measurement.source_reachable = Some(false);
                measurement.failures = vec![err.on(Side::Source)];
                return Ok(measurement);
            }
        };
        self.last_answer = Some(as_of);
        let mut failures = Vec::new();
        let age = match age {
            Ok(mut newest) => newest.pop().flatten(),
            Err(err) => {
                failures.push(err.on(Side::Source));
                None
            }
        };
        let dead_letters = match self.spec.dead_letter_queue.clone() {
            None => None,
            Some(dlq) => {
                let result = async {
                    let url = resolve(
                        &self.clients,
                        &mut self.dead_letter_queue_url,
                        &dlq,
                        deadline,
                    )
                    .await?;
                    counts_of(&self.clients, &url, deadline).await
                }
                .await;
                match result {
                    Ok(counts) => Some(counts),
                    Err(err) => {
                        failures.push(err);
                        None
                    }
                }
            }
        };

        // The age can leave out a message received three or more times
        // (a poison message): unless the queue redrives before a third
        // receive (or the user accepts the blind spot), it is only a lower
        // bound of the oldest message's age and dates nothing.
        let age_proves = counts.age_sees_every_message() || self.spec.trust_oldest_message_age;
        let observation = QueueObservation {
            as_of,
            waiting: counts.waiting(),
            total: counts.total(),
            oldest_enqueued: if counts.waiting() > 0 && age_proves {
                age.as_ref().and_then(oldest_enqueued)
            } else {
                None
            },
        };
        let recovery_point = self.history.recovery_point(&observation);
        let oldest_message_age = if counts.waiting() == 0 {
            Some(Duration::ZERO)
        } else {
            observation
                .oldest_enqueued
                .map(|t| as_of.duration_since(t).unwrap_or_default())
        };
        let mut measurement = Measurement::new(as_of);
        measurement.recovery_point = recovery_point;
        measurement.link = if recovery_point.is_none() && !age_proves {
            LinkState::Unknown(blind_age_reason(counts.max_receive_count))
        } else {
            LinkState::Healthy
        };
        // The queue lives in one region, the source side of this target:
        // there is no replica to reach.
        measurement.source_reachable = Some(true);
        measurement.backlog_operations = Some(counts.total() as f64);
        measurement.details = queue_details(
            counts.total(),
            oldest_message_age,
            None,
            self.history.last_seen_empty(),
        );
        measurement.details.push(Detail::new(
            &EARLY_REDRIVE_ENABLED,
            if counts.age_sees_every_message() {
                1.0
            } else {
                0.0
            },
        ));
        for (state, value) in [
            ("visible", counts.visible),
            ("in_flight", counts.in_flight),
            ("delayed", counts.delayed),
        ] {
            measurement
                .details
                .push(Detail::new(&MESSAGES, value as f64).with_label("state", state));
        }
        if let Some(age) = age {
            measurement
                .details
                .push(Detail::new(&AGE_OF_OLDEST_MESSAGE_SECONDS, age.value));
            measurement.details.push(Detail::new(
                &AGE_OF_OLDEST_MESSAGE_TIMESTAMP_SECONDS,
                unix_seconds(age.time),
            ));
        }
        if let Some(dead) = dead_letters {
            measurement.details.push(Detail::new(
                &queue::DEAD_LETTER_MESSAGES,
                dead.total() as f64,
            ));
        }
        measurement.failures = failures;
        Ok(measurement)
    }
}

impl Probe for SqsProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.measure())
    }
}

/// The queue's URL: configured, remembered, or asked for once (`GetQueueUrl`).
async fn resolve(
    clients: &AwsClients,
    known: &mut Option<String>,
    queue: &SqsQueue,
    deadline: Instant,
) -> Result<String, ProbeError> {
    if let Some(url) = known {
        return Ok(url.clone());
    }
    let sqs = clients.sqs().await;
    let output = clients
        .call(
            "sqs",
            "GetQueueUrl",
            deadline.saturating_duration_since(Instant::now()),
            sqs.get_queue_url().queue_name(queue.name()).send(),
        )
        .await?;
    let url = output.queue_url().map(str::to_string).ok_or_else(|| {
        ProbeError::new(
            FailureReason::Parse,
            format!("GetQueueUrl returned no URL for {}", queue.name()),
        )
    })?;
    *known = Some(url.clone());
    Ok(url)
}

async fn counts_of(
    clients: &AwsClients,
    url: &str,
    deadline: Instant,
) -> Result<SqsCounts, ProbeError> {
    let sqs = clients.sqs().await;
    let request = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send();
    let output = clients
        .call(
            "sqs",
            "GetQueueAttributes",
            deadline.saturating_duration_since(Instant::now()),
            request,
        )
        .await?;
    parse_counts(output.attributes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn counts_parse_and_missing_is_an_error() {
        let mut a = HashMap::new();
        a.insert(
            QueueAttributeName::ApproximateNumberOfMessages,
            "3".to_string(),
        );
        a.insert(
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            "1".to_string(),
        );
        a.insert(
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            "2".to_string(),
        );
        let c = parse_counts(Some(&a)).unwrap();
        // In-flight messages (received, not deleted) are unprocessed too.
        assert_eq!((c.waiting(), c.total()), (6, 6));
        a.remove(&QueueAttributeName::ApproximateNumberOfMessagesDelayed);
        assert_eq!(
            parse_counts(Some(&a)).unwrap_err().reason,
            FailureReason::Parse
        );
    }

    #[test]
    fn only_a_redrive_policy_of_two_receives_lets_the_age_see_every_message() {
        assert_eq!(
            max_receive_count(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":"2"}"#
            ),
            Some(2)
        );
        assert_eq!(max_receive_count(r#"{"maxReceiveCount":5}"#), Some(5));
        assert_eq!(max_receive_count("not json"), None);
        let counts = |max_receive_count| SqsCounts {
            max_receive_count,
            ..SqsCounts::default()
        };
        assert!(counts(Some(1)).age_sees_every_message());
        assert!(counts(Some(2)).age_sees_every_message());
        assert!(!counts(Some(3)).age_sees_every_message());
        assert!(!counts(None).age_sees_every_message());
    }

    #[test]
    fn the_blind_age_reason_names_the_policy_and_the_ways_out() {
        let none = blind_age_reason(None);
        assert!(none.contains("no redrive policy"), "{none}");
        let five = blind_age_reason(Some(5));
        assert!(five.contains("maxReceiveCount 5"), "{five}");
        for words in [&none, &five] {
            assert!(words.contains("three or more times"), "{words}");
            assert!(words.contains("trust_oldest_message_age"), "{words}");
        }
    }

    #[test]
    fn age_dates_the_oldest_message() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            oldest_enqueued(&Datapoint {
                time: t,
                value: 30.0
            }),
            Some(t - Duration::from_secs(30))
        );
        assert_eq!(
            oldest_enqueued(&Datapoint {
                time: t,
                value: -1.0
            }),
            None
        );
    }
}
