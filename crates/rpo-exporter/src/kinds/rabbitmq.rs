//! The `rabbitmq` kind: one queue, read through the management HTTP API
//! (`GET /api/queues/{vhost}/{queue}`).
//!
//! Evidence: `messages_ready` (waiting), `messages_unacknowledged` (held by
//! consumers), `consumers`, and `head_message_timestamp`: the `timestamp`
//! property of the oldest waiting message, when publishers set it. The
//! recovery point is that timestamp, or the observation instant when nothing
//! waits; without timestamps it is bounded by the last time the queue was
//! seen empty (see [`crate::evidence::queue`]).
//!
//! The management API's counts are not live: the broker publishes them
//! every `collect_statistics_interval` (5 s by default) and they reach the
//! API up to about twice that late. So an observation describes the queue
//! as of `statistics_delay` before the poll; an empty queue proves a
//! recovery point of "poll instant − statistics_delay", not "now".
//!
//! The broker is the target's source side (it holds the messages, in the
//! primary region): `source_reachable` reads "the broker answered"; there
//! is no replica. A broker that stops answering after it has answered (its
//! region lost) is reported as the source unreachable, dated at its last
//! answer ([`crate::evidence::queue::SourceContact`]): the recovery point
//! and the last backlog stay, the unplanned verdict's loss window is the
//! oldest waiting message's age at that answer. A poll the broker refuses
//! (wrong password, unknown queue), or any failure before a first answer,
//! is an `Err`, so its detail series are dropped and the recovery point
//! stays where it was proven.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{KindDef, KindSpec};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::drivers::http as http_client;
use crate::evidence::queue::{queue_details, QueueHistory, QueueObservation, SourceContact};
use crate::probe::{
    Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError, Side,
};

use crate::evidence::queue;
use crate::metric_def::MetricDef;
// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("rabbitmq", parse, DETAIL_FAMILIES);

/// One RabbitMQ queue, read through the management HTTP API.
#[derive(Debug, Clone)]
pub struct RabbitmqTarget {
    /// The management API's base URL, like `http://host:15672`; it may carry
    /// `user:password@`.
    pub management_url: Secret,
    /// Credentials when the URL carries none.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub vhost: String,
    pub queue: String,
    /// Report the queue unhealthy while messages wait and no consumer is attached.
    pub require_consumers: bool,
    /// How old the management API's queue counts may be: about twice the
    /// broker's `collect_statistics_interval` (5 s by default).
    pub statistics_delay: Duration,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRabbitmq {
    username: Option<String>,
    vhost: Option<String>,
    queue: String,
    require_consumers: Option<bool>,
    statistics_delay: Option<String>,
    tls_ca_file: Option<PathBuf>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let management_url = keys.secret("management_url")?;
    let password = keys.optional_secret("password")?;
    let raw: RawRabbitmq = keys.take()?;
    http_client::check_url(
        keys,
        "management_url",
        &management_url,
        raw.username.as_deref(),
        password.is_some(),
        "http://monitor@rabbit.internal:15672",
    )?;
    let vhost = raw.vhost.unwrap_or_else(|| "/".to_string());
    for (name, value) in [("vhost", &vhost), ("queue", &raw.queue)] {
        if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
            return Err(keys.invalid(
                name,
                "must be 1 to 255 characters, without control characters",
            ));
        }
    }
    let statistics_delay = keys.duration(
        "statistics_delay",
        raw.statistics_delay.as_deref(),
        Duration::from_secs(10),
    )?;
    keys.readable_file("tls_ca_file", raw.tls_ca_file.as_deref())?;
    Ok(Arc::new(RabbitmqTarget {
        management_url,
        username: raw.username,
        password,
        vhost,
        queue: raw.queue,
        require_consumers: raw.require_consumers.unwrap_or(false),
        statistics_delay,
        tls_ca_file: raw.tls_ca_file,
    }))
}

impl KindSpec for RabbitmqTarget {
    fn build(
        &self,
        target: &Target,
        _context: &ProbeContext,
    ) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(RabbitmqProbe::new(target, self)?))
    }
}

// ---------------------------------------------------------------------------
// The management API's answer.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &queue::MESSAGES,
    &queue::OLDEST_MESSAGE_AGE_SECONDS,
    &queue::CONSUMERS,
    &queue::LAST_EMPTY_TIMESTAMP_SECONDS,
    &queue::MESSAGES_READY,
    &queue::MESSAGES_UNACKNOWLEDGED,
];

/// The fields of a queue object this probe reads. Counts are absent until
/// the broker has published the queue's first statistics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueStats {
    pub messages: Option<u64>,
    pub messages_ready: Option<u64>,
    pub messages_unacknowledged: Option<u64>,
    pub consumers: Option<u64>,
    /// Seconds since the epoch (publisher's clock), of the head message.
    pub head_message_timestamp: Option<f64>,
    /// `running` normally; `down`, `crashed`, `minority` when broken.
    pub state: Option<String>,
}

/// Parses a `GET /api/queues/{vhost}/{name}` body.
pub fn parse_queue(body: &str) -> Result<QueueStats, String> {
    serde_json::from_str::<QueueStats>(body).map_err(|e| format!("not a queue object: {e}"))
}

/// What one answer of the management API proves.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEvidence {
    pub observation: Option<QueueObservation>,
    pub link: LinkState,
    pub oldest_message_age: Option<Duration>,
}

/// Pure: one queue object observed at `polled_at` (our clock).
pub fn evidence(
    stats: &QueueStats,
    polled_at: SystemTime,
    statistics_delay: Duration,
    require_consumers: bool,
    queue: &str,
) -> QueueEvidence {
    let Some(messages) = stats.messages else {
        return QueueEvidence {
            observation: None,
            link: LinkState::Unknown(format!(
                "the broker has not published statistics for queue {queue} yet (collect_statistics_interval)"
            )),
            oldest_message_age: None,
        };
    };
    let ready = stats.messages_ready.unwrap_or(messages);
    let head = stats
        .head_message_timestamp
        .and_then(crate::probe::from_unix_seconds);
    let as_of = polled_at
        .checked_sub(statistics_delay)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let observation = QueueObservation {
        as_of,
        waiting: ready,
        total: messages,
        oldest_enqueued: if ready > 0 { head } else { None },
    };
    let oldest_message_age = if ready == 0 {
        Some(Duration::ZERO)
    } else {
        head.map(|t| polled_at.duration_since(t).unwrap_or_default())
    };
    let consumers = stats.consumers.unwrap_or(0);
    let link = match stats.state.as_deref() {
        Some(state) if !matches!(state, "running" | "idle" | "flow") => {
            LinkState::Unhealthy(format!("queue {queue} is {state}"))
        }
        _ if require_consumers && consumers == 0 && messages > 0 => LinkState::Unhealthy(format!(
            "no consumer on queue {queue} and {messages} message{} waiting",
            if messages == 1 { "" } else { "s" }
        )),
        _ => LinkState::Healthy,
    };
    QueueEvidence {
        observation: Some(observation),
        link,
        oldest_message_age,
    }
}

pub struct RabbitmqProbe {
    target: String,
    client: reqwest::Client,
    /// `{management_url}/api/queues/{vhost}/{queue}`, credentials kept in it
    /// for reqwest to send (it strips them before any error sees the URL).
    queue_url: reqwest::Url,
    /// Scheme, host and port only, for messages.
    shown_url: String,
    basic_auth: Option<(String, crate::config::Secret)>,
    vhost: String,
    queue: String,
    require_consumers: bool,
    statistics_delay: Duration,
    history: QueueHistory,
    contact: SourceContact,
}

impl RabbitmqProbe {
    pub fn new(target: &Target, spec: &RabbitmqTarget) -> Result<RabbitmqProbe, ProbeError> {
        let client =
            http_client::build_client(&target.name, target.timeout, spec.tls_ca_file.as_deref())?;
        let mut queue_url = reqwest::Url::parse(spec.management_url.expose()).map_err(|e| {
            ProbeError::new(
                FailureReason::Config,
                format!("target {}: bad management_url: {e}", target.name),
            )
        })?;
        queue_url
            .path_segments_mut()
            .map_err(|_| {
                ProbeError::new(
                    FailureReason::Config,
                    format!("target {}: management_url cannot take a path", target.name),
                )
            })?
            .pop_if_empty()
            .extend(["api", "queues", spec.vhost.as_str(), spec.queue.as_str()]);
        Ok(RabbitmqProbe {
            target: target.name.clone(),
            client,
            queue_url,
            shown_url: http_client::origin(spec.management_url.expose()),
            basic_auth: spec.username.clone().zip(spec.password.clone()),
            vhost: spec.vhost.clone(),
            queue: spec.queue.clone(),
            require_consumers: spec.require_consumers,
            statistics_delay: spec.statistics_delay,
            history: QueueHistory::default(),
            contact: SourceContact::default(),
        })
    }

    async fn fetch(&self) -> Result<QueueStats, ProbeError> {
        let mut request = self.client.get(self.queue_url.clone());
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let what = format!("RabbitMQ management API at {}", self.shown_url);
        let response = request
            .send()
            .await
            .map_err(|e| http_client::classify(&e, &what))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| http_client::classify(&e, &what))?;
        let queue = format!("queue {} in vhost {}", self.queue, self.vhost);
        match status.as_u16() {
            200 => parse_queue(&body).map_err(|e| {
                ProbeError::new(FailureReason::Parse, format!("{what} answered for {queue} with {e}"))
            }),
            401 => Err(ProbeError::new(
                FailureReason::Auth,
                format!("{what} refused the credentials (HTTP 401); check the user and password of target {}", self.target),
            )),
            403 => Err(ProbeError::new(
                FailureReason::Auth,
                format!("{what} denied access to {queue} (HTTP 403); give the user the `monitoring` tag and access to the vhost"),
            )),
            404 => Err(ProbeError::new(
                FailureReason::Query,
                format!("{queue} does not exist on {} (HTTP 404)", self.shown_url),
            )),
            code => Err(ProbeError::new(
                FailureReason::Query,
                format!("{what} answered HTTP {code} for {queue}: {}", http_client::excerpt(&body, 200)),
            )),
        }
    }

    async fn poll_once(&mut self) -> Result<Measurement, ProbeError> {
        let polled_at = SystemTime::now();
        let stats = match self.fetch().await {
            Ok(stats) => stats,
            Err(e) => return self.contact.unanswered(e.on(Side::Source)),
        };
        let evidence = evidence(
            &stats,
            polled_at,
            self.statistics_delay,
            self.require_consumers,
            &self.queue,
        );
        let mut measurement = Measurement::new(polled_at);
        measurement.link = evidence.link.clone();
        if let Some(observation) = &evidence.observation {
            measurement.recovery_point = self.history.recovery_point(observation);
            measurement.backlog_operations = Some(observation.total as f64);
            measurement.details = queue_details(
                observation.total,
                evidence.oldest_message_age,
                stats.consumers,
                self.history.last_seen_empty(),
            );
            measurement.details.extend(rabbit_details(&stats));
        }
        self.contact.answered(&mut measurement);
        Ok(measurement)
    }
}

fn rabbit_details(stats: &QueueStats) -> Vec<Detail> {
    let mut details = Vec::new();
    if let Some(ready) = stats.messages_ready {
        details.push(Detail::new(&queue::MESSAGES_READY, ready as f64));
    }
    if let Some(unacked) = stats.messages_unacknowledged {
        details.push(Detail::new(&queue::MESSAGES_UNACKNOWLEDGED, unacked as f64));
    }
    details
}

impl Probe for RabbitmqProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.poll_once())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    // Captured from RabbitMQ 3.10.8 (`GET /api/queues/%2F/q1`; the head
    // timestamp replaced by a fixed one, the node name left as it was):
    // three messages published with properties.timestamp, no consumer.
    const THREE_WAITING: &str = r#"{"arguments":{},"auto_delete":false,"backing_queue_status":{"avg_ack_egress_rate":0.0,"len":3,"mode":"default","q1":0,"q2":0,"q3":0,"q4":3,"version":1},"consumer_capacity":0,"consumer_utilisation":0,"consumers":0,"durable":false,"effective_policy_definition":{},"exclusive":false,"garbage_collection":{"fullsweep_after":65535,"max_heap_size":0,"min_bin_vheap_size":46422,"min_heap_size":233,"minor_gcs":5},"head_message_timestamp":1700000040,"idle_since":"2026-11-23T20:42:21.601+00:00","memory":14056,"message_bytes":6,"message_bytes_paged_out":0,"message_bytes_persistent":0,"message_bytes_ram":6,"message_bytes_ready":6,"message_bytes_unacknowledged":0,"messages":3,"messages_details":{"rate":0.0},"messages_paged_out":0,"messages_persistent":0,"messages_ram":3,"messages_ready":3,"messages_ready_details":{"rate":0.0},"messages_ready_ram":3,"messages_unacknowledged":0,"messages_unacknowledged_details":{"rate":0.0},"messages_unacknowledged_ram":0,"name":"q1","node":"rpolab54687@localhost","operator_policy":null,"policy":null,"recoverable_slaves":null,"reductions":11620,"reductions_details":{"rate":0.0},"single_active_consumer_tag":null,"state":"running","type":"classic","vhost":"/"}"#;

    // The same queue right after declaration: no statistics yet.
    const NO_STATS_YET: &str = r#"{"arguments":{},"auto_delete":false,"durable":false,"exclusive":false,"name":"q1","node":"rpolab54687@localhost","type":"classic","vhost":"/"}"#;

    #[test]
    fn waiting_messages_are_dated_by_the_head_timestamp() {
        let stats = parse_queue(THREE_WAITING).unwrap();
        let e = evidence(&stats, at(100.0), Duration::from_secs(2), true, "q1");
        let o = e.observation.unwrap();
        assert_eq!((o.waiting, o.total), (3, 3));
        assert_eq!(o.oldest_enqueued, Some(at(40.0)));
        assert_eq!(o.as_of, at(98.0));
        assert_eq!(e.oldest_message_age, Some(Duration::from_secs(60)));
        assert!(
            matches!(e.link, LinkState::Unhealthy(ref why) if why == "no consumer on queue q1 and 3 messages waiting"),
            "{:?}",
            e.link
        );
        // Consumers not required: the same queue is healthy.
        let e = evidence(&stats, at(100.0), Duration::from_secs(2), false, "q1");
        assert_eq!(e.link, LinkState::Healthy);
    }

    #[test]
    fn empty_queue_is_caught_up_as_of_the_statistics() {
        let stats = QueueStats {
            messages: Some(0),
            messages_ready: Some(0),
            messages_unacknowledged: Some(0),
            consumers: Some(0),
            head_message_timestamp: None,
            state: Some("running".into()),
        };
        let e = evidence(&stats, at(100.0), Duration::from_secs(10), true, "q1");
        let mut h = QueueHistory::default();
        assert_eq!(h.recovery_point(&e.observation.unwrap()), Some(at(90.0)));
        assert_eq!(
            e.link,
            LinkState::Healthy,
            "an empty queue needs no consumer"
        );
        assert_eq!(e.oldest_message_age, Some(Duration::ZERO));
    }

    #[test]
    fn messages_without_timestamps_are_not_dated() {
        let mut stats = parse_queue(THREE_WAITING).unwrap();
        stats.head_message_timestamp = None;
        let e = evidence(&stats, at(100.0), Duration::ZERO, false, "q1");
        assert_eq!(e.oldest_message_age, None);
        let mut h = QueueHistory::default();
        assert_eq!(h.recovery_point(&e.observation.unwrap()), None);
    }

    #[test]
    fn no_statistics_yet_proves_nothing() {
        let stats = parse_queue(NO_STATS_YET).unwrap();
        let e = evidence(&stats, at(100.0), Duration::ZERO, false, "q1");
        assert!(e.observation.is_none());
        assert!(matches!(e.link, LinkState::Unknown(_)));
    }

    #[test]
    fn a_broken_queue_is_unhealthy() {
        let mut stats = parse_queue(THREE_WAITING).unwrap();
        stats.state = Some("down".into());
        let e = evidence(&stats, at(100.0), Duration::ZERO, false, "q1");
        assert_eq!(e.link, LinkState::Unhealthy("queue q1 is down".into()));
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        assert!(parse_queue("<html>").is_err());
        assert!(parse_queue(r#"{"messages":"many"}"#).is_err());
    }

    const CONFIG: &str = r#"
[[group]]
name = "erp"
rpo_budget = "60s"

[[rabbitmq]]
name = "erp-orders"
group = "erp"
management_url = "http://monitor:hunter2@127.0.0.1:15672"
queue = "erp.orders"
require_consumers = true
"#;

    fn load(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn config_defaults_and_vhost_encoding() {
        let config = load(CONFIG).unwrap();
        let target = &config.targets[0];
        let spec = target.spec::<RabbitmqTarget>().expect("a rabbitmq target");
        assert_eq!(spec.vhost, "/");
        assert_eq!(spec.statistics_delay, Duration::from_secs(10));
        assert!(!format!("{config:?}").contains("hunter2"));
        let probe = RabbitmqProbe::new(target, spec).unwrap();
        assert_eq!(probe.queue_url.path(), "/api/queues/%2F/erp.orders");
        assert_eq!(probe.shown_url, "http://127.0.0.1:15672");
    }

    #[test]
    fn config_credentials_in_one_place() {
        let err = load(&CONFIG.replace(
            "queue = \"erp.orders\"",
            "queue = \"erp.orders\"\nusername = \"x\"\npassword_env = \"HOME\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("management_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = load(&CONFIG.replace("monitor:hunter2@", "").replace(
            "queue = \"erp.orders\"",
            "queue = \"erp.orders\"\nusername = \"monitor\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("password"), "{err}");
        let err = load(&CONFIG.replace("http://", "amqp://"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http:// or https://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
