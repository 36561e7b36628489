//! The `efs` kind: EFS replication of one source file system.
//!
//! Each poll asks `DescribeReplicationConfigurations` by the source's ID in
//! the source's region (`region`) and, at once, by each destination's own ID
//! in the destination's region (`destination_region`, or as the source's
//! region last listed it): AWS describes a configuration only in the
//! region of the file system asked about, and both describe the same one.
//! The destination region's status is the replica's word; the older of the
//! two `LastReplicatedTimestamp`s is kept. CloudWatch `TimeSinceLastSync`
//! (`AWS/EFS`, dimensions FileSystemId = the source,
//! DestinationFileSystemId) is read through the shared batch in the source's
//! region.
//!
//! Evidence: `LastReplicatedTimestamp` of a destination *is* its recovery
//! point (AWS: every change made on the source before it is on the
//! destination); the API answered now, so the evidence time is the poll
//! instant. A destination without one (replication still starting) falls
//! back to `TimeSinceLastSync`: datapoint time − value, evidence time the
//! datapoint's time. The target's recovery point is the oldest
//! destination's. The link is healthy when every measured destination's
//! `Status` is `ENABLED`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_efs::operation::describe_replication_configurations::DescribeReplicationConfigurationsOutput;
use futures::future::BoxFuture;

use super::{
    clients_for, lookback, poll_deadline, remaining, AwsClients, Datapoint, MetricQuery, Stat,
};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
    Side,
};

use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;
use serde::Deserialize;

use super::config::{self, is_aws_region, is_efs_id, AwsAccess};
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
    /// The destination's region, so the destination is asked there even
    /// when the source's region has never answered (a restart during a
    /// region loss). `None`: learned from the source's answer.
    pub destination_region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEfs {
    file_system_id: String,
    destination_file_system_id: Option<String>,
    destination_region: Option<String>,
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
    if let Some(region) = &raw.destination_region {
        if !is_aws_region(region) {
            return Err(keys.invalid(
                "destination_region",
                format!("`{region}` is not an AWS region name like \"eu-west-1\""),
            ));
        }
        if raw.destination_file_system_id.is_none() {
            return Err(keys.invalid(
                "destination_region",
                "needs `destination_file_system_id`: the destination is asked in its region by its own file system ID",
            ));
        }
        if *region == access.region {
            return Err(keys.invalid(
                "destination_region",
                "is the source's `region`; name the region the destination file system is in, or remove the key for a same-region destination",
            ));
        }
    }
    if raw.destination_file_system_id.as_ref() == Some(&raw.file_system_id) {
        return Err(keys.invalid(
            "destination_file_system_id",
            "is the source file system; name the file system replication copies to",
        ));
    }
    Ok(Arc::new(EfsTarget {
        access,
        file_system_id: raw.file_system_id.clone(),
        destination_file_system_id: raw.destination_file_system_id.clone(),
        destination_region: raw.destination_region.clone(),
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
/// `source` (any source when `None`: the destination region's answer is
/// asked by the destination's own ID), optionally only `only`.
pub fn destinations_of(
    output: &DescribeReplicationConfigurationsOutput,
    source: Option<&str>,
    only: Option<&str>,
) -> Vec<EfsDestination> {
    output
        .replications()
        .iter()
        .filter(|r| source.is_none_or(|s| r.source_file_system_id() == s))
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
    /// The destinations to ask in their own regions, (file system ID,
    /// region): configured, then as the source's region last listed them.
    destinations: Vec<(String, String)>,
}

/// One destination as each region answered for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationAnswers {
    /// From `DescribeReplicationConfigurations` in the source's region.
    pub from_source: Option<EfsDestination>,
    /// From the same call in the destination's region, by its own ID.
    pub from_destination: Option<EfsDestination>,
}

impl DestinationAnswers {
    /// One destination from both answers: the destination region's status
    /// (the replica's own word), and the older `LastReplicatedTimestamp`
    /// (both describe one configuration; the older is the safe one).
    pub fn merged(&self) -> Option<EfsDestination> {
        let mut merged = self
            .from_destination
            .clone()
            .or_else(|| self.from_source.clone())?;
        merged.last_replicated = [&self.from_source, &self.from_destination]
            .into_iter()
            .flatten()
            .filter_map(|d| d.last_replicated)
            .min();
        Some(merged)
    }
}

impl EfsProbe {
    pub fn new(
        target: &Target,
        spec: &EfsTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<EfsProbe, ProbeError> {
        let destinations = match (&spec.destination_file_system_id, &spec.destination_region) {
            (Some(id), Some(region)) => vec![(id.clone(), region.clone())],
            _ => Vec::new(),
        };
        Ok(EfsProbe {
            target: target.clone(),
            spec: spec.clone(),
            clients: clients_for(&spec.access, aws_calls),
            destinations,
        })
    }

    /// `DescribeReplicationConfigurations` of `file_system_id` in `region`.
    async fn describe(
        &self,
        region: &str,
        file_system_id: &str,
        timeout: Duration,
    ) -> Result<DescribeReplicationConfigurationsOutput, ProbeError> {
        let clients = self.clients.in_region(region);
        let efs = clients.efs().await;
        clients
            .call(
                "efs",
                "DescribeReplicationConfigurations",
                timeout,
                efs.describe_replication_configurations()
                    .file_system_id(file_system_id)
                    .send(),
            )
            .await
    }

    /// Each destination asked in its own region, at once.
    async fn ask_destinations(
        &self,
        destinations: &[(String, String)],
        timeout: Duration,
    ) -> Vec<Result<Option<EfsDestination>, ProbeError>> {
        futures::future::join_all(destinations.iter().map(|(id, region)| async move {
            let output = self.describe(region, id, timeout).await?;
            Ok(destinations_of(&output, None, Some(id)).into_iter().next())
        }))
        .await
    }

    /// `TimeSinceLastSync` of each destination (the source's metric, read in
    /// the source's region).
    async fn time_since_last_sync(
        &self,
        destinations: &[String],
        deadline: Instant,
    ) -> Result<Vec<Option<Datapoint>>, ProbeError> {
        let queries = destinations
            .iter()
            .map(|id| {
                MetricQuery::new("AWS/EFS", "TimeSinceLastSync", Stat::Maximum)
                    .dimension("FileSystemId", self.spec.file_system_id.clone())
                    .dimension("DestinationFileSystemId", id.clone())
            })
            .collect();
        self.clients
            .newest_datapoints(
                queries,
                lookback(self.target.stale_after),
                remaining(deadline),
            )
            .await
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = poll_deadline(self.target.timeout);
        let polled_at = SystemTime::now();
        let only = self.spec.destination_file_system_id.clone();
        let known = self.destinations.clone();
        let half = remaining(deadline) / 2;
        // The source's region and each known destination's region at once,
        // each within half the time, so a lost region leaves the other its
        // share.
        let known_ids: Vec<String> = known.iter().map(|(id, _)| id.clone()).collect();
        let (source, at_destinations, early_since_sync) = futures::join!(
            self.describe(&self.spec.access.region, &self.spec.file_system_id, half),
            self.ask_destinations(&known, half),
            async {
                if known.is_empty() {
                    None
                } else {
                    Some(self.time_since_last_sync(&known_ids, deadline).await)
                }
            }
        );
        let mut failures = Vec::new();
        let mut answers: BTreeMap<String, DestinationAnswers> = BTreeMap::new();
        let source_reachable = match source {
            Ok(output) => {
                for dest in
                    destinations_of(&output, Some(&self.spec.file_system_id), only.as_deref())
                {
                    let id = dest.file_system_id.clone();
                    answers.entry(id).or_default().from_source = Some(dest);
                }
                true
            }
            Err(err) => {
                failures.push(err.on(Side::Source));
                false
            }
        };
        // Destinations the source listed that were not asked in their own
        // region yet (the first poll): asked now, and from now on first.
        let learned: Vec<(String, String)> = answers
            .values()
            .filter_map(|a| a.from_source.as_ref())
            .map(|d| (d.file_system_id.clone(), d.region.clone()))
            .filter(|d| !known.contains(d))
            .collect();
        let late = self
            .ask_destinations(&learned, remaining(deadline) / 2)
            .await;
        let mut replica_reachable = true;
        for ((id, _), answer) in known
            .iter()
            .chain(&learned)
            .zip(at_destinations.into_iter().chain(late))
        {
            match answer {
                Ok(Some(dest)) => {
                    answers.entry(id.clone()).or_default().from_destination = Some(dest)
                }
                // The destination's region no longer lists it: the
                // configuration was deleted there; the source's word stands.
                Ok(None) => {}
                Err(err) => {
                    replica_reachable = false;
                    failures.push(err.on(Side::Replica));
                }
            }
        }
        if !learned.is_empty() {
            let mut all = known.clone();
            all.extend(learned);
            self.destinations = all;
        }
        if !source_reachable && answers.is_empty() {
            // Neither region told anything.
            return Err(failures.remove(0));
        }

        let destinations: Vec<EfsDestination> = answers
            .values()
            .filter_map(DestinationAnswers::merged)
            .collect();
        let ids: Vec<String> = destinations
            .iter()
            .map(|d| d.file_system_id.clone())
            .collect();
        let since_sync = match early_since_sync {
            Some(answer) if ids == known_ids => answer,
            _ => self.time_since_last_sync(&ids, deadline).await,
        };
        let since_sync = match since_sync {
            Ok(datapoints) => datapoints,
            Err(err) => {
                // The status API is the primary evidence; the metric only
                // adds detail (and a fallback before the first sync).
                failures.push(err.on(Side::Source));
                vec![None; destinations.len()]
            }
        };
        let pairs: Vec<(EfsDestination, Option<Datapoint>)> =
            destinations.into_iter().zip(since_sync).collect();
        let (recovery_point, evidence, link, details) = evaluate(&pairs, polled_at)?;
        let mut measurement = Measurement::new(evidence);
        measurement.recovery_point = recovery_point;
        measurement.link = if replica_reachable {
            link
        } else {
            LinkState::Unknown("the destination's region did not answer".to_string())
        };
        measurement.source_reachable = Some(source_reachable);
        measurement.replica_reachable = Some(replica_reachable);
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
    fn the_destination_region_speaks_for_the_status_and_the_older_sync_counts() {
        let answers = DestinationAnswers {
            from_source: Some(dest("ENABLED", Some(50))),
            from_destination: Some(dest("ERROR", Some(40))),
        };
        let merged = answers.merged().unwrap();
        assert_eq!(merged.status, "ERROR");
        assert_eq!(merged.last_replicated, Some(at(40)));
        // One side only: that side's word.
        let only_destination = DestinationAnswers {
            from_source: None,
            from_destination: Some(dest("ENABLED", Some(45))),
        };
        assert_eq!(
            only_destination.merged().unwrap().last_replicated,
            Some(at(45))
        );
        assert_eq!(DestinationAnswers::default().merged(), None);
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
