//! The `efs` kind: EFS replication of one source file system.
//!
//! Each poll asks `DescribeReplicationConfigurations` (in `region`, the
//! source's) for the destinations, and reads CloudWatch `TimeSinceLastSync`
//! (`AWS/EFS`, dimensions FileSystemId = the source, DestinationFileSystemId)
//! through the shared batch.
//!
//! Evidence: `LastReplicatedTimestamp` of a destination *is* its recovery
//! point (AWS: every change made on the source before it is on the
//! destination); the API answered now, so the evidence time is the poll
//! instant. A destination without one (replication still starting) falls
//! back to `TimeSinceLastSync`: datapoint time − value, evidence time the
//! datapoint's time. The target's recovery point is the oldest
//! destination's. The link is healthy when every measured destination's
//! `Status` is `ENABLED`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_sdk_efs::operation::describe_replication_configurations::DescribeReplicationConfigurationsOutput;
use futures::future::BoxFuture;

use super::{clients_for, lookback, AwsClients, Datapoint, MetricQuery, Stat};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
};

use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;
use serde::Deserialize;

use super::config::{self, is_efs_id, AwsAccess};
use crate::evidence::provider_lag::{combine_replicas, recovery_point as lag_recovery_point};
use crate::kinds::{KindDef, KindSpec};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::aws("efs", parse, config::CLOUDWATCH_DEFAULTS, DETAIL_FAMILIES);

/// EFS replication of one source file system.
#[derive(Debug, Clone)]
pub struct EfsTarget {
    pub access: AwsAccess,
    pub file_system_id: String,
    /// Only this destination; `None` means every destination.
    pub destination_file_system_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEfs {
    file_system_id: String,
    destination_file_system_id: Option<String>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let access = config::access(keys)?;
    let raw: RawEfs = keys.take()?;
    for (name, id) in [
        ("file_system_id", Some(&raw.file_system_id)),
        (
            "destination_file_system_id",
            raw.destination_file_system_id.as_ref(),
        ),
    ] {
        if let Some(id) = id {
            if !is_efs_id(id) {
                return Err(keys.invalid(
                    name,
                    format!("`{id}` is not a file system ID like \"fs-0123456789abcdef0\""),
                ));
            }
        }
    }
    Ok(Arc::new(EfsTarget {
        access,
        file_system_id: raw.file_system_id.clone(),
        destination_file_system_id: raw.destination_file_system_id.clone(),
    }))
}

impl KindSpec for EfsTarget {
    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(EfsProbe::new(target, self, &context.aws_calls)?))
    }
}

// ---------------------------------------------------------------------------
// Measuring.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static REPLICATION_ENABLED: MetricDef = MetricDef::gauge(
    "rpo_efs_replication_enabled",
    "1 when the EFS replication destination's Status is ENABLED.",
)
.with_labels(&["destination"]);
pub static LAST_SYNC_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_efs_last_sync_timestamp_seconds",
    "LastReplicatedTimestamp of the destination: every change on the source before it is on the destination.",
).with_labels(&["destination"]);
pub static TIME_SINCE_LAST_SYNC_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_efs_time_since_last_sync_seconds",
    "The newest CloudWatch TimeSinceLastSync of the destination (the minute's maximum).",
)
.with_labels(&["destination"]);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &REPLICATION_ENABLED,
    &LAST_SYNC_TIMESTAMP_SECONDS,
    &TIME_SINCE_LAST_SYNC_SECONDS,
];

/// One destination of the source file system.
#[derive(Debug, Clone, PartialEq)]
pub struct EfsDestination {
    pub file_system_id: String,
    pub region: String,
    pub status: String,
    pub status_message: Option<String>,
    pub last_replicated: Option<SystemTime>,
}

/// The destinations of a `DescribeReplicationConfigurations` answer for
/// `source`, optionally only `only`.
pub fn destinations_of(
    output: &DescribeReplicationConfigurationsOutput,
    source: &str,
    only: Option<&str>,
) -> Vec<EfsDestination> {
    output
        .replications()
        .iter()
        .filter(|r| r.source_file_system_id() == source)
        .flat_map(|r| r.destinations())
        .filter(|d| only.is_none_or(|id| d.file_system_id() == id))
        .map(|d| EfsDestination {
            file_system_id: d.file_system_id().to_string(),
            region: d.region().to_string(),
            status: d.status().as_str().to_string(),
            status_message: d.status_message().map(str::to_string),
            last_replicated: d
                .last_replicated_timestamp()
                .and_then(|t| SystemTime::try_from(*t).ok()),
        })
        .collect()
}

/// Recovery point, evidence time, link and details from the destinations
/// and their newest `TimeSinceLastSync`. Pure, so it is unit-tested.
pub fn evaluate(
    destinations: &[(EfsDestination, Option<Datapoint>)],
    polled_at: SystemTime,
) -> Result<(Option<SystemTime>, SystemTime, LinkState, Vec<Detail>), ProbeError> {
    let mut proofs = Vec::new();
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    let mut details = Vec::new();
    for (dest, since_sync) in destinations {
        let id = &dest.file_system_id;
        let label = |d: Detail| d.with_label("destination", id.clone());
        details.push(label(Detail::new(
            &REPLICATION_ENABLED,
            if dest.status == "ENABLED" { 1.0 } else { 0.0 },
        )));
        if dest.status != "ENABLED" {
            problems.push(format!(
                "destination {id} is {}{}",
                dest.status,
                dest.status_message
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(t) = dest.last_replicated {
            details.push(label(Detail::new(
                &LAST_SYNC_TIMESTAMP_SECONDS,
                unix_seconds(t),
            )));
        }
        if let Some(dp) = since_sync {
            details.push(label(Detail::new(&TIME_SINCE_LAST_SYNC_SECONDS, dp.value)));
        }
        match (dest.last_replicated, since_sync) {
            (Some(t), _) => proofs.push((Some(t), polled_at)),
            (None, Some(dp)) => proofs.push((lag_recovery_point(dp.time, dp.value), dp.time)),
            (None, None) => missing.push(id.clone()),
        }
    }
    if destinations.is_empty() {
        return Err(ProbeError::new(
            FailureReason::Query,
            "the source file system has no replication configuration (or not to the configured destination)",
        ));
    }
    if !missing.is_empty() {
        return Err(ProbeError::new(
            FailureReason::Query,
            format!(
                "no LastReplicatedTimestamp and no TimeSinceLastSync datapoint for {}: the first sync has not finished yet{}",
                missing.join(", "),
                if problems.is_empty() { String::new() } else { format!("; {}", problems.join("; ")) }
            ),
        ));
    }
    let (recovery_point, evidence) = combine_replicas(proofs);
    let link = if problems.is_empty() {
        LinkState::Healthy
    } else {
        LinkState::Unhealthy(problems.join("; "))
    };
    Ok((recovery_point, evidence.unwrap_or(polled_at), link, details))
}

pub struct EfsProbe {
    target: Target,
    spec: EfsTarget,
    clients: Arc<AwsClients>,
}

impl EfsProbe {
    pub fn new(
        target: &Target,
        spec: &EfsTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<EfsProbe, ProbeError> {
        Ok(EfsProbe {
            target: target.clone(),
            spec: spec.clone(),
            clients: clients_for(&spec.access, aws_calls),
        })
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = Instant::now() + self.target.timeout;
        let polled_at = SystemTime::now();
        let efs = self.clients.efs().await;
        let output = self
            .clients
            .call(
                "efs",
                "DescribeReplicationConfigurations",
                self.target.timeout / 2,
                efs.describe_replication_configurations()
                    .file_system_id(&self.spec.file_system_id)
                    .send(),
            )
            .await?;
        let destinations = destinations_of(
            &output,
            &self.spec.file_system_id,
            self.spec.destination_file_system_id.as_deref(),
        );
        let queries = destinations
            .iter()
            .map(|d| {
                MetricQuery::new("AWS/EFS", "TimeSinceLastSync", Stat::Maximum)
                    .dimension("FileSystemId", self.spec.file_system_id.clone())
                    .dimension("DestinationFileSystemId", d.file_system_id.clone())
            })
            .collect();
        let since_sync = self
            .clients
            .newest_datapoints(
                queries,
                lookback(self.target.stale_after),
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
        let mut failures = Vec::new();
        let since_sync = match since_sync {
            Ok(datapoints) => datapoints,
            Err(err) => {
                // The status API is the primary evidence; the metric only adds detail.
                failures.push(err);
                vec![None; destinations.len()]
            }
        };
        let pairs: Vec<(EfsDestination, Option<Datapoint>)> =
            destinations.into_iter().zip(since_sync).collect();
        let (recovery_point, evidence, link, details) = evaluate(&pairs, polled_at)?;
        let mut measurement = Measurement::new(evidence);
        measurement.recovery_point = recovery_point;
        measurement.link = link;
        measurement.replica_reachable = Some(true);
        measurement.details = details;
        measurement.failures = failures;
        Ok(measurement)
    }
}

impl Probe for EfsProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.measure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn dest(status: &str, last: Option<u64>) -> EfsDestination {
        EfsDestination {
            file_system_id: "fs-0456def0".into(),
            region: "us-west-2".into(),
            status: status.into(),
            status_message: None,
            last_replicated: last.map(at),
        }
    }

    #[test]
    fn last_replicated_is_the_recovery_point() {
        let (rp, evidence, link, _) =
            evaluate(&[(dest("ENABLED", Some(40)), None)], at(100)).unwrap();
        assert_eq!(
            (rp, evidence, link),
            (Some(at(40)), at(100), LinkState::Healthy)
        );
    }

    #[test]
    fn time_since_last_sync_is_the_fallback() {
        let dp = Datapoint {
            time: at(60),
            value: 30.0,
        };
        let (rp, evidence, _, _) =
            evaluate(&[(dest("ENABLING", None), Some(dp))], at(100)).unwrap();
        assert_eq!((rp, evidence), (Some(at(30)), at(60)));
    }

    #[test]
    fn paused_is_unhealthy_and_nothing_is_an_error() {
        let (_, _, link, _) = evaluate(&[(dest("PAUSED", Some(40)), None)], at(100)).unwrap();
        assert!(matches!(link, LinkState::Unhealthy(why) if why.contains("PAUSED")));
        assert_eq!(
            evaluate(&[(dest("ENABLING", None), None)], at(100))
                .unwrap_err()
                .reason,
            FailureReason::Query
        );
    }
}
