//! What a probe is and what it reports: the [`Probe`] trait, the
//! [`Measurement`] of one poll, and [`ProbeError`] with its bounded
//! [`FailureReason`].
//!
//! A probe owns its connections and whatever history it needs between polls;
//! it knows nothing of the store, the verdict or HTTP.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::evidence::heartbeat::{HeartbeatLog, HeartbeatLogs};
use crate::evidence::promotion::{ConfiguredSide, PairRoles};
use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;

/// One kind-specific probe of one target. The poller calls [`Probe::poll`]
/// on the target's interval, inside the target's timeout.
pub trait Probe: Send {
    /// Measures the target once. `Err` means nothing at all was learned;
    /// a partial answer (one side down) is an `Ok` with `failures` filled.
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>>;

    /// Forgets kept connections. The poller calls it after cancelling a poll
    /// at its deadline: a connection dropped mid-request may be unusable.
    fn reset(&mut self) {}

    /// The heartbeat canary writer, when the target has one configured. The
    /// poller runs it on its own interval, independent of polls.
    fn heartbeat_writer(&mut self) -> Option<Box<dyn HeartbeatWriter>> {
        None
    }
}

/// Writes the exporter's own timestamp on the source of a target.
pub trait HeartbeatWriter: Send {
    fn interval(&self) -> Duration;
    /// Writes `at` (this exporter's clock) as the newest heartbeat.
    fn write(&mut self, at: SystemTime) -> BoxFuture<'_, Result<(), ProbeError>>;

    /// Forgets the kept connection. The poller calls it after a write that
    /// was cancelled at its deadline or failed for a reason other than
    /// `auth`/`config` (which a new connection would not mend), with that
    /// failure (a timeout: the deadline): a shared connection goes only
    /// when the failure says it may be lost (see `drivers::shared`).
    fn reset(&mut self, _after: &ProbeError) {}

    /// Which configured server the last write went to. A pair kind writes
    /// where its `WriterSide` says (the promoted side after a promotion);
    /// the store keeps each side's acknowledgements apart to measure the
    /// loss a promotion took.
    fn destination(&self) -> ConfiguredSide {
        ConfiguredSide::Primary
    }
}

/// Which end of a replication pair a statement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Source,
    Replica,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Replica => "replica",
        }
    }
}

/// The result of one successful (possibly partial) poll.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// When the evidence was taken: the poll instant, or a datapoint's own
    /// time for provider-reported lag.
    pub evidence_time: SystemTime,
    /// The newest source time proven present on the replica by this poll,
    /// or `None` when this poll proved nothing (the store keeps the last
    /// proven one; it never falls back to "now").
    pub recovery_point: Option<SystemTime>,
    /// The state of the replication link or status.
    pub link: LinkState,
    /// Whether each side answered; `None` for a kind without that side.
    pub source_reachable: Option<bool>,
    pub replica_reachable: Option<bool>,
    pub backlog_bytes: Option<f64>,
    pub backlog_operations: Option<f64>,
    pub catchup_seconds: Option<f64>,
    /// Kind-specific detail series for `/metrics`.
    pub details: Vec<Detail>,
    /// Failures of one side that did not stop the poll from learning the rest.
    pub failures: Vec<ProbeError>,
    /// A pair kind's view of both configured servers (which accepts writes,
    /// the heartbeat each holds), to follow promotions; `None` for other kinds.
    pub roles: Option<PairRoles>,
}

impl Measurement {
    /// An empty measurement taken at `evidence_time`, to be filled in.
    pub fn new(evidence_time: SystemTime) -> Measurement {
        Measurement {
            evidence_time,
            recovery_point: None,
            link: LinkState::Unknown("not measured".to_string()),
            source_reachable: None,
            replica_reachable: None,
            backlog_bytes: None,
            backlog_operations: None,
            catchup_seconds: None,
            details: Vec::new(),
            failures: Vec::new(),
            roles: None,
        }
    }
}

/// The replication link or status as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    Healthy,
    /// Broken or degraded, with a short phrase for people
    /// ("WAL receiver is not streaming").
    Unhealthy(String),
    /// Could not be determined (the side that knows is unreachable).
    Unknown(String),
}

impl LinkState {
    pub fn is_healthy(&self) -> bool {
        matches!(self, LinkState::Healthy)
    }
}

/// One kind-specific sample, e.g. `rpo_postgres_replay_lag_bytes`. Its
/// family (name, help, type, labels) is declared once as a `static`
/// [`MetricDef`] in the kind's file, and listed in the kind's `DETAIL_FAMILIES`.
#[derive(Debug, Clone)]
pub struct Detail {
    pub family: &'static MetricDef,
    /// Values of the family's labels beyond `group`, `target`, `kind`
    /// (e.g. `slot`), in the family's order; keep them bounded.
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Detail {
    pub fn new(family: &'static MetricDef, value: f64) -> Detail {
        Detail {
            family,
            labels: Vec::new(),
            value,
        }
    }

    pub fn with_label(mut self, name: &'static str, value: impl Into<String>) -> Detail {
        debug_assert_eq!(
            self.family.labels.get(self.labels.len()),
            Some(&name),
            "{}: labels are {:?}, in that order",
            self.family.name,
            self.family.labels
        );
        self.labels.push((name, value.into()));
        self
    }
}

/// The newest heartbeat visible on the replica: shared by every kind with a
/// heartbeat canary (`postgres`, `mysql`, `redis`, `opensearch`).
pub static HEARTBEAT_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_heartbeat_timestamp_seconds",
    "The newest heartbeat of this exporter visible on the replica (this exporter's clock).",
);

/// What building a probe may use besides its target: handed to
/// `kinds::build` by whoever runs the probes (the daemon, a `check` run).
#[derive(Debug, Clone)]
pub struct ProbeContext {
    /// Names this exporter's heartbeat rows/keys/objects.
    pub instance: String,
    /// Where the AWS kinds count their calls (`rpo_aws_api_*`).
    pub aws_calls: Arc<AwsCallCounters>,
    /// The heartbeat writes of each target, shared by its writer and its
    /// probe (see [`crate::evidence::heartbeat`]).
    pub heartbeat_logs: Arc<HeartbeatLogs>,
}

impl ProbeContext {
    /// A context with counters and heartbeat logs of its own.
    pub fn new(instance: impl Into<String>) -> ProbeContext {
        ProbeContext {
            instance: instance.into(),
            aws_calls: Arc::default(),
            heartbeat_logs: Arc::default(),
        }
    }

    /// The heartbeat log of `target`: the same one for every probe built
    /// for it with this context.
    pub fn heartbeat_log(&self, target: &str) -> HeartbeatLog {
        self.heartbeat_logs.for_target(target)
    }
}

/// Why a poll failed, from a small fixed set (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    Connect,
    Auth,
    Timeout,
    Query,
    AwsApi,
    Parse,
    Config,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Connect,
        FailureReason::Auth,
        FailureReason::Timeout,
        FailureReason::Query,
        FailureReason::AwsApi,
        FailureReason::Parse,
        FailureReason::Config,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Connect => "connect",
            FailureReason::Auth => "auth",
            FailureReason::Timeout => "timeout",
            FailureReason::Query => "query",
            FailureReason::AwsApi => "aws_api",
            FailureReason::Parse => "parse",
            FailureReason::Config => "config",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure a person can act on. The message never contains a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{reason}: {message}", side.map(|s| format!("{} ", s.as_str())).unwrap_or_default())]
pub struct ProbeError {
    pub reason: FailureReason,
    pub side: Option<Side>,
    pub message: String,
    /// The connection the failure came on is known to be still usable: the
    /// server answered (with an error, or a reply this exporter cannot use)
    /// and keeps the session. `false`, the default, means it may be lost (an
    /// I/O error, a closed connection, a request abandoned at a deadline):
    /// a kept connection is then dropped and made again, for every target
    /// sharing it, so a permanent query error of one target does not
    /// reconnect its sharers on every poll. Set by the drivers'
    /// classification of their errors (see `drivers::postgres::classify`,
    /// `drivers::redis::classify`), or by a kind for a complete reply it
    /// cannot use ([`ProbeError::on_intact_connection`]).
    pub connection_intact: bool,
}

impl ProbeError {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> ProbeError {
        ProbeError {
            reason,
            side: None,
            message: message.into(),
            connection_intact: false,
        }
    }

    pub fn on(mut self, side: Side) -> ProbeError {
        self.side = Some(side);
        self
    }

    /// Says the connection the failure came on is still usable (see
    /// [`ProbeError::connection_intact`]).
    pub fn on_intact_connection(mut self) -> ProbeError {
        self.connection_intact = true;
        self
    }

    pub fn timeout(after: Duration) -> ProbeError {
        ProbeError::new(
            FailureReason::Timeout,
            format!("no answer within {}", crate::human::human_duration(after)),
        )
    }
}

/// Seconds since the Unix epoch, as Prometheus wants timestamps.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The inverse of [`unix_seconds`]; `None` for values that are not times.
pub fn from_unix_seconds(secs: f64) -> Option<SystemTime> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_names_side_and_reason() {
        let err = ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Replica);
        assert_eq!(err.to_string(), "replica connect: connection refused");
    }

    #[test]
    fn a_timeout_says_its_duration_as_people_do() {
        // A deadline's remainder: never "1s 995ms 104us 438ns".
        let err = ProbeError::timeout(Duration::new(1, 995_104_438));
        assert_eq!(err.message, "no answer within 2s");
        let err = ProbeError::timeout(Duration::from_millis(2_480)).on(Side::Replica);
        assert_eq!(err.to_string(), "replica timeout: no answer within 2.5s");
    }

    #[test]
    fn unix_round_trip() {
        let t = from_unix_seconds(1_700_000_000.25).unwrap();
        assert!((unix_seconds(t) - 1_700_000_000.25).abs() < 1e-6);
        assert!(from_unix_seconds(f64::NAN).is_none());
    }
}
