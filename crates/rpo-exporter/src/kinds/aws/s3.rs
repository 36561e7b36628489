//! The `s3` kind: replication from a source bucket to a destination bucket.
//!
//! Each poll reads, at once, the source bucket's replication rules
//! (`GetBucketReplication`, in `region`), the CloudWatch replication metrics
//! of the rules replicating to the destination, each in the region S3
//! publishes it in (S3 user guide, "Using S3 Replication metrics"):
//! `ReplicationLatency`, `BytesPendingReplication` and
//! `OperationsPendingReplication` in the destination bucket's region,
//! `OperationsFailedReplication` in the source bucket's (dimensions
//! SourceBucket, DestinationBucket, RuleId), and, with a canary, the canary
//! object on the destination. The rules last listed (or `rule_ids`) keep
//! the destination's metrics read while the source's region is unreachable.
//!
//! Evidence:
//! - **Canary** (`canary = { interval, prefix }`): every `interval` this
//!   exporter writes `{prefix}{instance}` on the source bucket, its body this
//!   exporter's clock; each poll reads that key on the destination bucket.
//!   The time read there is the recovery point (one clock writes and reads),
//!   and the read is the evidence, so it works without replication metrics.
//!   One key per exporter instance is overwritten, never accumulated; with
//!   versioning (which replication requires) expire noncurrent versions under
//!   the prefix with a lifecycle rule (see docs/kinds/aws.md). S3 does not
//!   replicate in order, so the canary dates the replication *pipeline*; a
//!   backlog of older objects shows in the pending metrics.
//! - **Metrics**: per rule, recovery point = datapoint time −
//!   `ReplicationLatency` (the minute's maximum); evidence time = the
//!   datapoint's time. S3 publishes them every minute, up to 15 minutes
//!   late, and only for rules with replication metrics enabled.
//!
//! With both, the recovery point is the newer of the two proofs (each is a
//! lower bound). Without a canary, a rule with no `ReplicationLatency`
//! datapoint leaves the target unproven (`query`), never at 0. The link is
//! healthy when every measured rule is `Enabled` and no operation failed to
//! replicate in the last [`FAILED_OPERATIONS_WINDOW`]: S3 publishes failures
//! only for minutes in which something replicated, so they are summed over
//! that window (none published is 0), never read as "the newest datapoint".

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ReplicationConfiguration, ReplicationRuleStatus};
use futures::future::BoxFuture;

use super::{
    clients_for, lookback, poll_deadline, remaining, sum_since, AwsClients, Datapoint, MetricQuery,
    Series, Stat,
};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    from_unix_seconds, unix_seconds, Detail, FailureReason, HeartbeatWriter, LinkState,
    Measurement, Probe, ProbeContext, ProbeError, Side,
};

use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;
use serde::Deserialize;

use super::config::{self, is_aws_region, is_bucket_name, AwsAccess};
use crate::evidence::provider_lag::{combine_replicas, recovery_point as lag_recovery_point};
use crate::kinds::{KindDef, KindSpec};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::aws("s3", parse, config::CLOUDWATCH_DEFAULTS, DETAIL_FAMILIES);

/// The S3 canary's default interval and key prefix.
pub const DEFAULT_S3_CANARY_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_S3_CANARY_PREFIX: &str = "rpo-canary/";

/// S3 replication from a source bucket to a destination bucket.
#[derive(Debug, Clone)]
pub struct S3Target {
    pub access: AwsAccess,
    pub source_bucket: String,
    pub destination_bucket: String,
    pub destination_region: String,
    /// Rules to measure; empty means every rule replicating to the destination bucket.
    pub rule_ids: Vec<String>,
    /// Read the CloudWatch replication metrics (they must be enabled on the rule).
    pub replication_metrics: bool,
    pub canary: Option<S3Canary>,
}

/// The S3 canary: an object with this exporter's clock, written to the
/// source and read back on the destination.
#[derive(Debug, Clone)]
pub struct S3Canary {
    pub interval: Duration,
    /// The key prefix; the exporter writes (overwrites) `{prefix}{instance}`.
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    source_bucket: String,
    destination_bucket: String,
    destination_region: Option<String>,
    metrics_region: Option<String>,
    rule_ids: Option<Vec<String>>,
    replication_metrics: Option<bool>,
    canary: Option<RawS3Canary>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3Canary {
    interval: Option<String>,
    prefix: Option<String>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let access = config::access(keys)?;
    let raw: RawS3 = keys.take()?;
    for (name, bucket) in [
        ("source_bucket", &raw.source_bucket),
        ("destination_bucket", &raw.destination_bucket),
    ] {
        if !is_bucket_name(bucket) {
            return Err(keys.invalid(
            name,
                format!("`{bucket}` is not a bucket name (3-63 lower-case letters, digits, '.', '-'); give the name, not an ARN"),
            ));
        }
    }
    if raw.source_bucket == raw.destination_bucket {
        return Err(keys.invalid(
            "destination_bucket",
            "is the source bucket; name the bucket replication copies to",
        ));
    }
    let region_of =
        |name: &str, value: &Option<String>, default: &str| -> Result<String, ConfigError> {
            match value {
                Some(region) if is_aws_region(region) => Ok(region.clone()),
                Some(region) => Err(keys.invalid(
                    name,
                    format!("`{region}` is not an AWS region name like \"eu-west-1\""),
                )),
                None => Ok(default.to_string()),
            }
        };
    let destination_region = region_of(
        "destination_region",
        &raw.destination_region,
        &access.region,
    )?;
    // `metrics_region` once named the one region all four replication
    // metrics were read in; S3 publishes them in two (see the module doc).
    // The value everyone wrote (the destination's region, also the default)
    // still loads; any other is an error that says what changed.
    if let Some(metrics_region) = &raw.metrics_region {
        if *metrics_region != destination_region {
            return Err(keys.invalid(
                "metrics_region",
                format!(
                    "is no longer used and `{metrics_region}` is not the destination's region: S3 publishes ReplicationLatency, BytesPendingReplication and OperationsPendingReplication in the destination bucket's region (`destination_region`, here `{destination_region}`) and OperationsFailedReplication in the source bucket's region (`region`), and the exporter now reads each there; remove `metrics_region`"
                ),
            ));
        }
    }
    let rule_ids = raw.rule_ids.clone().unwrap_or_default();
    for (i, rule) in rule_ids.iter().enumerate() {
        if rule.is_empty() || rule.len() > 255 || rule.chars().any(char::is_control) {
            return Err(keys.invalid(
                &format!("rule_ids[{i}]"),
                "must be a rule ID of 1 to 255 characters",
            ));
        }
    }
    let canary = match &raw.canary {
        None => None,
        Some(canary) => {
            let interval = keys.duration(
                "canary.interval",
                canary.interval.as_deref(),
                DEFAULT_S3_CANARY_INTERVAL,
            )?;
            let prefix = canary
                .prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_S3_CANARY_PREFIX.to_string());
            if prefix.is_empty()
                || prefix.len() > 512
                || prefix.starts_with('/')
                || !prefix.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(keys.invalid(
                    "canary.prefix",
                    "must be a key prefix of printable characters without spaces, not starting with '/', like \"rpo-canary/\"",
                ));
            }
            Some(S3Canary { interval, prefix })
        }
    };
    let replication_metrics = raw.replication_metrics.unwrap_or(true);
    if !replication_metrics && canary.is_none() {
        return Err(keys.invalid(
            "replication_metrics",
            "is false and no canary is configured: nothing would measure the recovery point; add `canary = { interval = \"30s\" }` or enable the metrics",
        ));
    }
    Ok(Arc::new(S3Target {
        access,
        source_bucket: raw.source_bucket.clone(),
        destination_bucket: raw.destination_bucket.clone(),
        destination_region,
        rule_ids,
        replication_metrics,
        canary,
    }))
}

impl KindSpec for S3Target {
    fn heartbeat_interval(&self) -> Option<Duration> {
        self.canary.as_ref().map(|canary| canary.interval)
    }

    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        let instance = context.instance.as_str();
        Ok(Box::new(S3Probe::new(
            target,
            self,
            instance,
            &context.aws_calls,
        )?))
    }
}

// ---------------------------------------------------------------------------
// Measuring.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static REPLICATION_LATENCY_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_s3_replication_latency_seconds",
    "The newest CloudWatch ReplicationLatency of the rule (the minute's maximum).",
)
.with_labels(&["rule"]);
pub static REPLICATION_METRICS_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_s3_replication_metrics_timestamp_seconds",
    "The time of the newest ReplicationLatency datapoint (the start of its minute).",
)
.with_labels(&["rule"]);
pub static PENDING_BYTES: MetricDef = MetricDef::gauge(
    "rpo_s3_pending_bytes",
    "The newest BytesPendingReplication of the rule.",
)
.with_labels(&["rule"]);
pub static PENDING_OPERATIONS: MetricDef = MetricDef::gauge(
    "rpo_s3_pending_operations",
    "The newest OperationsPendingReplication of the rule.",
)
.with_labels(&["rule"]);
pub static FAILED_OPERATIONS: MetricDef = MetricDef::gauge(
    "rpo_s3_failed_operations",
    "Operations that failed to replicate within the last 15 minutes (OperationsFailedReplication summed, read in the source bucket's region; 0 when none were published).",
)
.with_labels(&["rule"]);
pub static RULE_ENABLED: MetricDef = MetricDef::gauge(
    "rpo_s3_rule_enabled",
    "1 when the replication rule is Enabled.",
)
.with_labels(&["rule"]);
pub static CANARY_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_s3_canary_timestamp_seconds",
    "The newest canary time read on the destination bucket (this exporter's clock when it wrote it).",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &REPLICATION_LATENCY_SECONDS,
    &REPLICATION_METRICS_TIMESTAMP_SECONDS,
    &PENDING_BYTES,
    &PENDING_OPERATIONS,
    &FAILED_OPERATIONS,
    &RULE_ENABLED,
    &CANARY_TIMESTAMP_SECONDS,
];

/// One rule of the source bucket's replication configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    /// The destination bucket's name (from its ARN).
    pub destination_bucket: String,
    pub metrics_enabled: bool,
}

/// The rules of a `GetBucketReplication` answer.
pub fn rules_of(configuration: &ReplicationConfiguration) -> Vec<Rule> {
    configuration
        .rules()
        .iter()
        .map(|rule| {
            let destination = rule.destination();
            Rule {
                id: rule.id().unwrap_or("").to_string(),
                enabled: *rule.status() == ReplicationRuleStatus::Enabled,
                destination_bucket: destination
                    .map(|d| {
                        d.bucket()
                            .rsplit(':')
                            .next()
                            .unwrap_or(d.bucket())
                            .to_string()
                    })
                    .unwrap_or_default(),
                metrics_enabled: destination
                    .and_then(|d| d.metrics())
                    .is_some_and(|m| m.status().as_str() == "Enabled"),
            }
        })
        .collect()
}

/// The rules this target measures, or why there are none.
pub fn selected_rules(
    rules: &[Rule],
    destination_bucket: &str,
    rule_ids: &[String],
) -> Result<Vec<Rule>, String> {
    if !rule_ids.is_empty() {
        let mut selected = Vec::new();
        for id in rule_ids {
            match rules.iter().find(|r| &r.id == id) {
                Some(rule) if rule.destination_bucket == destination_bucket => {
                    selected.push(rule.clone())
                }
                Some(rule) => {
                    return Err(format!(
                        "rule `{id}` replicates to {}, not {destination_bucket}",
                        rule.destination_bucket
                    ))
                }
                None => return Err(format!("the source bucket has no replication rule `{id}`")),
            }
        }
        return Ok(selected);
    }
    let selected: Vec<Rule> = rules
        .iter()
        .filter(|r| r.destination_bucket == destination_bucket)
        .cloned()
        .collect();
    if selected.is_empty() {
        Err(format!(
            "no replication rule of the source bucket replicates to {destination_bucket}"
        ))
    } else {
        Ok(selected)
    }
}

/// How far back failed operations are summed: S3 publishes
/// `OperationsFailedReplication` only for minutes in which something was
/// replicated, so "the newest datapoint" may be hours old; a failure counts
/// for this long after the minute it happened in (less CloudWatch's
/// delivery delay), which is also S3 Replication Time Control's threshold.
pub const FAILED_OPERATIONS_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The newest replication metrics of one rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleMetrics {
    pub latency: Option<Datapoint>,
    pub pending_bytes: Option<Datapoint>,
    pub pending_operations: Option<Datapoint>,
    /// Failed operations within [`FAILED_OPERATIONS_WINDOW`], when the
    /// source's region answered.
    pub failed_operations: Option<f64>,
}

/// Published in the destination bucket's region (S3 user guide, "Using S3
/// Replication metrics"), read there, in this order.
const DESTINATION_METRICS: [&str; 3] = [
    "ReplicationLatency",
    "BytesPendingReplication",
    "OperationsPendingReplication",
];
/// Published in the source bucket's region.
const SOURCE_METRIC: &str = "OperationsFailedReplication";

fn rule_query(spec: &S3Target, rule_id: &str, metric: &'static str, stat: Stat) -> MetricQuery {
    MetricQuery::new("AWS/S3", metric, stat)
        .dimension("SourceBucket", spec.source_bucket.clone())
        .dimension("DestinationBucket", spec.destination_bucket.clone())
        .dimension("RuleId", rule_id.to_string())
}

/// The rules' destination-region queries: [`DESTINATION_METRICS`] per rule.
/// Maxima: the worst of the minute.
fn destination_queries(spec: &S3Target, rule_ids: &[String]) -> Vec<MetricQuery> {
    rule_ids
        .iter()
        .flat_map(|id| DESTINATION_METRICS.map(|m| rule_query(spec, id, m, Stat::Maximum)))
        .collect()
}

/// The rules' source-region queries: failed operations per minute, summed.
fn source_queries(spec: &S3Target, rule_ids: &[String]) -> Vec<MetricQuery> {
    rule_ids
        .iter()
        .map(|id| rule_query(spec, id, SOURCE_METRIC, Stat::Sum))
        .collect()
}

/// The canary's body: this exporter's clock, in Unix seconds.
pub fn canary_body(at: SystemTime) -> String {
    format!("{:.3}", unix_seconds(at))
}

pub fn parse_canary(body: &[u8]) -> Option<SystemTime> {
    std::str::from_utf8(body)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(from_unix_seconds)
}

pub struct S3Probe {
    target: Target,
    spec: S3Target,
    canary_key: Option<String>,
    /// The source bucket's region: the rules, the canary writes and
    /// `OperationsFailedReplication`.
    source: Arc<AwsClients>,
    /// The destination bucket's region: the canary reads and the other
    /// three replication metrics.
    destination: Arc<AwsClients>,
    /// The rules measured, as the source's region last listed them (or
    /// `rule_ids` before it ever answered), so the destination's metrics
    /// keep being read while the source's region is unreachable.
    rules: Vec<Rule>,
}

/// What the replica side's metrics and the source side's failures say, per
/// rule id asked.
struct MetricsAnswers {
    destination: Result<Vec<Option<Datapoint>>, ProbeError>,
    failed: Result<Vec<Series>, ProbeError>,
}

impl S3Probe {
    pub fn new(
        target: &Target,
        spec: &S3Target,
        instance: &str,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<S3Probe, ProbeError> {
        Ok(S3Probe {
            target: target.clone(),
            spec: spec.clone(),
            canary_key: spec
                .canary
                .as_ref()
                .map(|c| format!("{}{instance}", c.prefix)),
            source: clients_for(&spec.access, aws_calls),
            destination: clients_for(&spec.access.in_region(&spec.destination_region), aws_calls),
            rules: Vec::new(),
        })
    }

    /// The rule ids to read metrics for: as last listed, else configured.
    fn known_rule_ids(&self) -> Vec<String> {
        if self.rules.is_empty() {
            self.spec.rule_ids.clone()
        } else {
            self.rules.iter().map(|r| r.id.clone()).collect()
        }
    }

    /// The replication metrics of `rule_ids`, each in the region that
    /// publishes it, both regions at once.
    async fn metrics(&self, rule_ids: &[String], deadline: Instant) -> MetricsAnswers {
        let lookback = lookback(self.target.stale_after);
        let destination = self.destination.newest_datapoints(
            destination_queries(&self.spec, rule_ids),
            lookback,
            remaining(deadline),
        );
        let failed = self.source.datapoints(
            source_queries(&self.spec, rule_ids),
            lookback.max(FAILED_OPERATIONS_WINDOW + super::PERIOD),
            remaining(deadline),
        );
        let (destination, failed) = futures::join!(destination, failed);
        MetricsAnswers {
            destination,
            failed,
        }
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = poll_deadline(self.target.timeout);
        let now = SystemTime::now();
        let mut failures = Vec::new();
        let half = remaining(deadline) / 2;
        let known_ids = self.known_rule_ids();
        let read_metrics = self.spec.replication_metrics;

        // The rules (source), the canary (destination) and, for the rules
        // known before this poll, the metrics (both), all at once: a lost
        // region costs its own calls' time, never the other side's answers.
        let rules = self.replication_rules(half);
        let canary = self.read_canary(deadline);
        let early = async {
            if read_metrics && !known_ids.is_empty() {
                Some(self.metrics(&known_ids, deadline).await)
            } else {
                None
            }
        };
        let (rules, canary, early) = futures::join!(rules, canary, early);
        let mut link =
            LinkState::Unknown("the replication configuration could not be read".to_string());
        let mut source_reachable = true;
        match rules {
            Ok(rules) => {
                match selected_rules(&rules, &self.spec.destination_bucket, &self.spec.rule_ids) {
                    Ok(rules) => {
                        let disabled: Vec<&str> = rules
                            .iter()
                            .filter(|r| !r.enabled)
                            .map(|r| r.id.as_str())
                            .collect();
                        link = if disabled.is_empty() {
                            LinkState::Healthy
                        } else {
                            LinkState::Unhealthy(format!(
                                "replication rule {} is Disabled",
                                disabled.join(", ")
                            ))
                        };
                        self.rules = rules;
                    }
                    Err(why) => {
                        link = LinkState::Unhealthy(why);
                        self.rules.clear();
                    }
                }
            }
            Err(err) => {
                failures.push(err.on(Side::Source));
                source_reachable = false;
            }
        }
        let mut replica_reachable = true;
        let canary_time = match canary {
            Ok(time) => time,
            Err(err) => {
                failures.push(err.on(Side::Replica));
                replica_reachable = false;
                None
            }
        };

        // The metrics of the rules measured now (read again if the rules
        // listed differ from those known before).
        let rule_ids: Vec<String> = if source_reachable {
            self.rules.iter().map(|r| r.id.clone()).collect()
        } else {
            known_ids.clone()
        };
        let answers = match early {
            Some(answers) if rule_ids == known_ids => Some(answers),
            _ if read_metrics && !rule_ids.is_empty() => {
                Some(self.metrics(&rule_ids, deadline).await)
            }
            _ => None,
        };
        let mut metrics: Vec<(String, RuleMetrics)> = Vec::new();
        let mut destination_metrics_read = false;
        if let Some(answers) = answers {
            let window_start = now.checked_sub(FAILED_OPERATIONS_WINDOW).unwrap_or(now);
            let destination = match answers.destination {
                Ok(datapoints) => {
                    destination_metrics_read = true;
                    Some(datapoints)
                }
                Err(err) => {
                    failures.push(err.on(Side::Replica));
                    replica_reachable = false;
                    None
                }
            };
            let failed = match answers.failed {
                Ok(series) => Some(series),
                Err(err) => {
                    failures.push(err.on(Side::Source));
                    source_reachable = false;
                    None
                }
            };
            for (i, id) in rule_ids.iter().enumerate() {
                let mut m = RuleMetrics::default();
                if let Some(datapoints) = &destination {
                    let chunk =
                        &datapoints[i * DESTINATION_METRICS.len()..][..DESTINATION_METRICS.len()];
                    (m.latency, m.pending_bytes, m.pending_operations) =
                        (chunk[0], chunk[1], chunk[2]);
                }
                // A count published only when something was replicated:
                // none in the window is 0 failures, for rules with metrics
                // on (a rule without them publishes nothing to count).
                let metrics_on = self
                    .rules
                    .iter()
                    .find(|r| &r.id == id)
                    .is_none_or(|r| r.metrics_enabled);
                if let (Some(series), true) = (&failed, metrics_on) {
                    m.failed_operations = Some(sum_since(&series[i], window_start));
                }
                metrics.push((id.clone(), m));
            }
        }

        let mut measurement = Measurement::new(now);
        let mut details = Vec::new();
        // Metrics evidence: every measured rule needs a latency datapoint.
        let mut metrics_proof: Option<(Option<SystemTime>, SystemTime)> = None;
        let mut missing_latency: Vec<&str> = Vec::new();
        if destination_metrics_read {
            missing_latency = metrics
                .iter()
                .filter(|(_, m)| m.latency.is_none())
                .map(|(id, _)| id.as_str())
                .collect();
            if missing_latency.is_empty() && !metrics.is_empty() {
                metrics_proof = Some(combine_replicas(metrics.iter().map(|(_, m)| {
                    let dp = m.latency.expect("checked above");
                    (lag_recovery_point(dp.time, dp.value), dp.time)
                })))
                .and_then(|(rp, evidence)| evidence.map(|e| (rp, e)));
            }
        }
        let failed: f64 = metrics
            .iter()
            .filter_map(|(_, m)| m.failed_operations)
            .sum();
        if failed > 0.0 && !matches!(link, LinkState::Unhealthy(_)) {
            link = LinkState::Unhealthy(format!(
                "{failed} operations failed to replicate in the last {} minutes (OperationsFailedReplication in {})",
                FAILED_OPERATIONS_WINDOW.as_secs() / 60,
                self.spec.access.region
            ));
        }
        for (rule, m) in &metrics {
            let gauge = |family: &'static MetricDef, value: f64| {
                Detail::new(family, value).with_label("rule", rule.clone())
            };
            if let Some(dp) = m.latency {
                details.push(gauge(&REPLICATION_LATENCY_SECONDS, dp.value));
                details.push(gauge(
                    &REPLICATION_METRICS_TIMESTAMP_SECONDS,
                    unix_seconds(dp.time),
                ));
            }
            if let Some(dp) = m.pending_bytes {
                details.push(gauge(&PENDING_BYTES, dp.value));
            }
            if let Some(dp) = m.pending_operations {
                details.push(gauge(&PENDING_OPERATIONS, dp.value));
            }
            if let Some(failed) = m.failed_operations {
                details.push(gauge(&FAILED_OPERATIONS, failed));
            }
        }
        if source_reachable {
            for rule in &self.rules {
                details.push(
                    Detail::new(&RULE_ENABLED, if rule.enabled { 1.0 } else { 0.0 })
                        .with_label("rule", rule.id.clone()),
                );
            }
        }
        if let Some(t) = canary_time {
            details.push(Detail::new(&CANARY_TIMESTAMP_SECONDS, unix_seconds(t)));
        }
        let pending = |f: fn(&RuleMetrics) -> Option<Datapoint>| -> Option<f64> {
            let values: Vec<f64> = metrics
                .iter()
                .filter_map(|(_, m)| f(m).map(|d| d.value))
                .collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        measurement.backlog_bytes = pending(|m| m.pending_bytes);
        measurement.backlog_operations = pending(|m| m.pending_operations);

        // The canary read is evidence at this poll; the metrics at their datapoint.
        measurement.recovery_point = match (canary_time, metrics_proof.and_then(|(rp, _)| rp)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let canary_read = self.canary_key.is_some() && replica_reachable;
        measurement.evidence_time = match (canary_read, metrics_proof) {
            (true, _) => now,
            (false, Some((_, evidence))) => evidence,
            // The replica side did not answer: the source side's word is
            // kept (the store takes no evidence time from such a poll).
            (false, None) if !replica_reachable => now,
            (false, None) => {
                // The replica side answered and proved nothing: the metrics
                // are off, missing, or have no rule to follow.
                if let LinkState::Unhealthy(why) = &link {
                    return Err(ProbeError::new(
                        FailureReason::Query,
                        format!("no evidence: {why}"),
                    ));
                }
                if !missing_latency.is_empty() {
                    return Err(ProbeError::new(
                        FailureReason::Query,
                        format!(
                            "CloudWatch has no ReplicationLatency datapoint in the last {} minutes in {} (the destination's region) for rule {}: enable replication metrics on the rule, or add a canary",
                            lookback(self.target.stale_after).as_secs() / 60,
                            self.spec.destination_region,
                            missing_latency.join(", ")
                        ),
                    ));
                }
                let mut message = "no evidence: the canary cannot be read and no replication metrics are available".to_string();
                if rule_ids.is_empty() && !source_reachable {
                    message = "no evidence: the replication rules are unknown (the source's region has not answered since the exporter started) and no canary is configured; set `rule_ids` so the destination's metrics are read while the source's region is unreachable".to_string();
                }
                for failure in &failures {
                    message.push_str(&format!("; {failure}"));
                }
                return Err(ProbeError::new(FailureReason::Query, message));
            }
        };
        measurement.link = link;
        measurement.source_reachable = Some(source_reachable);
        measurement.replica_reachable = Some(replica_reachable);
        measurement.details = details;
        measurement.failures = failures;
        Ok(measurement)
    }

    async fn replication_rules(&self, timeout: Duration) -> Result<Vec<Rule>, ProbeError> {
        let s3 = self.source.s3().await;
        let answer = self
            .source
            .call_or_absent(
                "s3",
                "GetBucketReplication",
                timeout,
                &["ReplicationConfigurationNotFoundError"],
                s3.get_bucket_replication()
                    .bucket(&self.spec.source_bucket)
                    .send(),
            )
            .await?;
        Ok(answer
            .and_then(|output| output.replication_configuration().map(rules_of))
            .unwrap_or_default())
    }

    /// The canary time on the destination: `None` before the first canary
    /// has arrived there.
    async fn read_canary(&self, deadline: Instant) -> Result<Option<SystemTime>, ProbeError> {
        let Some(key) = &self.canary_key else {
            return Ok(None);
        };
        let s3 = self.destination.s3().await;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let object = self
            .destination
            .call_or_absent(
                "s3",
                "GetObject",
                timeout,
                &["NoSuchKey"],
                s3.get_object()
                    .bucket(&self.spec.destination_bucket)
                    .key(key)
                    .send(),
            )
            .await?;
        let Some(object) = object else {
            return Ok(None);
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let body = match tokio::time::timeout(timeout, object.body.collect()).await {
            Ok(Ok(body)) => body.into_bytes(),
            Ok(Err(_)) => {
                return Err(ProbeError::new(
                    FailureReason::Connect,
                    "s3 GetObject: the canary's body could not be read",
                ))
            }
            Err(_) => return Err(ProbeError::timeout(timeout)),
        };
        parse_canary(&body).map(Some).ok_or_else(|| {
            ProbeError::new(
                FailureReason::Parse,
                format!(
                    "the canary {key} on {} does not hold a timestamp",
                    self.spec.destination_bucket
                ),
            )
        })
    }
}

impl Probe for S3Probe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.measure())
    }

    fn heartbeat_writer(&mut self) -> Option<Box<dyn HeartbeatWriter>> {
        let key = self.canary_key.clone()?;
        let interval = self.spec.canary.as_ref()?.interval;
        Some(Box::new(S3CanaryWriter {
            clients: self.source.clone(),
            bucket: self.spec.source_bucket.clone(),
            key,
            interval,
            timeout: self.target.timeout,
        }))
    }
}

/// Writes the canary object on the source bucket.
pub struct S3CanaryWriter {
    clients: Arc<AwsClients>,
    bucket: String,
    key: String,
    interval: Duration,
    timeout: Duration,
}

impl HeartbeatWriter for S3CanaryWriter {
    fn interval(&self) -> Duration {
        self.interval
    }

    fn write(&mut self, at: SystemTime) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(async move {
            let s3 = self.clients.s3().await;
            let request = s3
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("text/plain")
                .body(ByteStream::from(canary_body(at).into_bytes()))
                .send();
            self.clients
                .call("s3", "PutObject", self.timeout, request)
                .await
                .map(|_| ())
                .map_err(|e| e.on(Side::Source))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, enabled: bool, dest: &str) -> Rule {
        Rule {
            id: id.into(),
            enabled,
            destination_bucket: dest.into(),
            metrics_enabled: true,
        }
    }

    #[test]
    fn rules_are_selected_by_destination_or_id() {
        let rules = [rule("a", true, "dr"), rule("b", false, "other")];
        assert_eq!(
            selected_rules(&rules, "dr", &[]).unwrap(),
            vec![rules[0].clone()]
        );
        assert!(selected_rules(&rules, "nowhere", &[])
            .unwrap_err()
            .contains("no replication rule"));
        assert!(selected_rules(&rules, "dr", &["b".into()])
            .unwrap_err()
            .contains("replicates to other"));
        assert!(selected_rules(&rules, "dr", &["c".into()])
            .unwrap_err()
            .contains("no replication rule `c`"));
    }

    #[test]
    fn each_replication_metric_is_read_in_the_region_that_publishes_it() {
        let config = crate::config::Config::from_toml(
            "[[group]]\nname = \"erp\"\nrpo_budget = \"15m\"\n[[s3]]\nname = \"f\"\ngroup = \"erp\"\nregion = \"eu-central-1\"\nsource_bucket = \"a-src\"\ndestination_bucket = \"a-dst\"\ndestination_region = \"eu-west-1\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let spec = config.targets[0].spec::<S3Target>().unwrap();
        let ids = vec!["r1".to_string(), "r2".to_string()];
        let destination: Vec<&str> = destination_queries(spec, &ids)
            .iter()
            .map(|q| q.metric)
            .collect();
        assert_eq!(destination.len(), 6);
        assert!(!destination.contains(&"OperationsFailedReplication"));
        let source = source_queries(spec, &ids);
        assert!(source
            .iter()
            .all(|q| q.metric == "OperationsFailedReplication" && q.stat == Stat::Sum));
        assert_eq!(source[1].dimensions[2], ("RuleId", "r2".to_string()));
    }

    #[test]
    fn canary_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(parse_canary(canary_body(t).as_bytes()), Some(t));
        assert_eq!(parse_canary(b"not a time"), None);
    }
}
