//! The `aurora_global` kind: an Aurora global database.
//!
//! Each poll asks `DescribeGlobalClusters` (in `region`) for the members:
//! the writer and the secondary clusters (all, or those named in
//! `secondary_clusters`). For each secondary, in its own region, the shared
//! CloudWatch batch reads `AuroraGlobalDBRPOLag` (Aurora PostgreSQL) and
//! `AuroraGlobalDBReplicationLag` (both engines), dimensions
//! DBClusterIdentifier (the secondary) and SourceRegion (the writer's
//! region). Both come in milliseconds and are converted to seconds as they
//! are read.
//!
//! Evidence is provider-reported lag: per secondary, recovery point =
//! datapoint time − the larger of the two lags present (the conservative
//! one), evidence time = the oldest of those datapoints' times. A secondary
//! with neither leaves the target unproven (`query`). The link is healthy
//! when the global cluster is `available`, no failover or switchover is in
//! progress, and every measured secondary's synchronization status (when
//! AWS reports one) is `connected`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_sdk_rds::types::GlobalCluster;
use futures::future::BoxFuture;

use super::{
    clients_for, identifier_of, lookback, millis_to_seconds, region_of, AwsClients, Datapoint,
    MetricQuery, Stat,
};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
};

use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;
use serde::Deserialize;

use super::config::{self, is_rds_identifier, AwsAccess};
use crate::evidence::provider_lag::{combine_replicas, recovery_point as lag_recovery_point};
use crate::kinds::{KindDef, KindSpec};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::aws(
    "aurora_global",
    parse,
    config::CLOUDWATCH_DEFAULTS,
    DETAIL_FAMILIES,
);

/// An Aurora global database.
#[derive(Debug, Clone)]
pub struct AuroraGlobalTarget {
    pub access: AwsAccess,
    pub global_cluster: String,
    /// Secondary clusters to measure (identifiers or ARNs); empty means every
    /// member that is not the writer.
    pub secondary_clusters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuroraGlobal {
    global_cluster: String,
    secondary_clusters: Option<Vec<String>>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let access = config::access(keys)?;
    let raw: RawAuroraGlobal = keys.take()?;
    if !is_rds_identifier(&raw.global_cluster) {
        return Err(keys.invalid(
            "global_cluster",
            "must be a global cluster identifier: letters, digits and hyphens, starting with a letter",
        ));
    }
    let secondary_clusters = raw.secondary_clusters.clone().unwrap_or_default();
    for (i, cluster) in secondary_clusters.iter().enumerate() {
        config::check_rds_resource(
            keys,
            &format!("secondary_clusters[{i}]"),
            cluster,
            "cluster",
        )?;
    }
    Ok(Arc::new(AuroraGlobalTarget {
        access,
        global_cluster: raw.global_cluster.clone(),
        secondary_clusters,
    }))
}

impl KindSpec for AuroraGlobalTarget {
    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(AuroraGlobalProbe::new(
            target,
            self,
            &context.aws_calls,
        )?))
    }
}

// ---------------------------------------------------------------------------
// Measuring.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static RPO_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_aurora_global_rpo_lag_seconds",
    "The newest AuroraGlobalDBRPOLag of the secondary, in seconds (the minute's maximum).",
)
.with_labels(&["secondary"]);
pub static REPLICATION_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_aurora_global_replication_lag_seconds",
    "The newest AuroraGlobalDBReplicationLag of the secondary, in seconds (the minute's maximum).",
)
.with_labels(&["secondary"]);
pub static LAG_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_aurora_global_lag_timestamp_seconds",
    "The time of the oldest lag datapoint used for the secondary (the start of its minute).",
)
.with_labels(&["secondary"]);
pub static SECONDARIES: MetricDef = MetricDef::gauge(
    "rpo_aurora_global_secondaries",
    "Secondary clusters of the global database this target measures.",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &RPO_LAG_SECONDS,
    &REPLICATION_LAG_SECONDS,
    &LAG_TIMESTAMP_SECONDS,
    &SECONDARIES,
];

/// The members of a global cluster as this probe needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalClusterView {
    pub status: String,
    pub failover_in_progress: Option<String>,
    pub writer_region: Option<String>,
    /// (region, cluster identifier, synchronization status).
    pub secondaries: Vec<(String, String, Option<String>)>,
}

impl GlobalClusterView {
    pub fn from_sdk(cluster: &GlobalCluster, wanted: &[String]) -> GlobalClusterView {
        let mut writer_region = None;
        let mut secondaries = Vec::new();
        for member in cluster.global_cluster_members() {
            let arn = member.db_cluster_arn().unwrap_or_default();
            let region = region_of(arn, "").to_string();
            if member.is_writer() == Some(true) {
                writer_region = Some(region);
                continue;
            }
            let id = identifier_of(arn).to_string();
            if !wanted.is_empty() && !wanted.iter().any(|w| w == arn || identifier_of(w) == id) {
                continue;
            }
            secondaries.push((
                region,
                id,
                member
                    .synchronization_status()
                    .map(|s| s.as_str().to_string()),
            ));
        }
        GlobalClusterView {
            status: cluster.status().unwrap_or("unknown").to_string(),
            failover_in_progress: cluster
                .failover_state()
                .and_then(|f| f.status())
                .map(|s| s.as_str().to_string()),
            writer_region,
            secondaries,
        }
    }

    pub fn link(&self) -> LinkState {
        if self.status != "available" {
            return LinkState::Unhealthy(format!(
                "the global cluster is `{}`, not `available`",
                self.status
            ));
        }
        if let Some(state) = &self.failover_in_progress {
            return LinkState::Unhealthy(format!(
                "a failover or switchover is in progress ({state})"
            ));
        }
        if self.secondaries.is_empty() {
            return LinkState::Unhealthy(
                "the global cluster has no secondary cluster to measure".to_string(),
            );
        }
        let unsynced: Vec<String> = self
            .secondaries
            .iter()
            .filter_map(|(_, id, sync)| match sync.as_deref() {
                None | Some("connected") => None,
                Some(other) => Some(format!("{id} is `{other}`")),
            })
            .collect();
        if unsynced.is_empty() {
            LinkState::Healthy
        } else {
            LinkState::Unhealthy(format!(
                "secondary not synchronized: {}",
                unsynced.join(", ")
            ))
        }
    }
}

/// One secondary's two lags, already in seconds.
pub fn secondary_proof(
    rpo_lag: Option<Datapoint>,
    replication_lag: Option<Datapoint>,
) -> Option<(Option<SystemTime>, SystemTime)> {
    let present: Vec<Datapoint> = [rpo_lag, replication_lag].into_iter().flatten().collect();
    let worst = present
        .iter()
        .map(|d| d.value)
        .fold(f64::NEG_INFINITY, f64::max);
    let oldest = present.iter().map(|d| d.time).min()?;
    Some((lag_recovery_point(oldest, worst), oldest))
}

pub struct AuroraGlobalProbe {
    target: Target,
    spec: AuroraGlobalTarget,
    clients: Arc<AwsClients>,
}

impl AuroraGlobalProbe {
    pub fn new(
        target: &Target,
        spec: &AuroraGlobalTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<AuroraGlobalProbe, ProbeError> {
        Ok(AuroraGlobalProbe {
            target: target.clone(),
            spec: spec.clone(),
            clients: clients_for(&spec.access, aws_calls),
        })
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = Instant::now() + self.target.timeout;
        let rds = self.clients.rds().await;
        let output = self
            .clients
            .call(
                "rds",
                "DescribeGlobalClusters",
                self.target.timeout / 2,
                rds.describe_global_clusters()
                    .global_cluster_identifier(&self.spec.global_cluster)
                    .send(),
            )
            .await?;
        let cluster = output.global_clusters().first().ok_or_else(|| {
            ProbeError::new(
                FailureReason::Config,
                format!(
                    "the global cluster {} does not exist",
                    self.spec.global_cluster
                ),
            )
        })?;
        let view = GlobalClusterView::from_sdk(cluster, &self.spec.secondary_clusters);
        let source_region = view
            .writer_region
            .clone()
            .unwrap_or_else(|| self.spec.access.region.clone());

        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (region, id, _) in &view.secondaries {
            by_region
                .entry(region.clone())
                .or_default()
                .push(id.clone());
        }
        let lookback = lookback(self.target.stale_after);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let fetches = by_region.into_iter().map(|(region, ids)| {
            let clients = self.clients.in_region(&region);
            let source_region = source_region.clone();
            async move {
                let queries = ids
                    .iter()
                    .flat_map(|id| {
                        ["AuroraGlobalDBRPOLag", "AuroraGlobalDBReplicationLag"].map(|metric| {
                            MetricQuery::new("AWS/RDS", metric, Stat::Maximum)
                                .dimension("DBClusterIdentifier", id.clone())
                                .dimension("SourceRegion", source_region.clone())
                        })
                    })
                    .collect();
                (
                    ids,
                    clients.newest_datapoints(queries, lookback, timeout).await,
                )
            }
        });
        let mut proofs = Vec::new();
        let mut missing = Vec::new();
        let mut details = Vec::new();
        for (ids, answer) in futures::future::join_all(fetches).await {
            let datapoints = answer?;
            for (id, pair) in ids.iter().zip(datapoints.chunks(2)) {
                // Milliseconds as CloudWatch reports them; seconds from here on.
                let seconds = |dp: Option<Datapoint>| {
                    dp.map(|d| Datapoint {
                        time: d.time,
                        value: millis_to_seconds(d.value),
                    })
                };
                let (rpo, replication) = (seconds(pair[0]), seconds(pair[1]));
                for (family, dp) in [
                    (&RPO_LAG_SECONDS, rpo),
                    (&REPLICATION_LAG_SECONDS, replication),
                ] {
                    if let Some(dp) = dp {
                        details.push(
                            Detail::new(family, dp.value).with_label("secondary", id.clone()),
                        );
                    }
                }
                match secondary_proof(rpo, replication) {
                    Some(proof) => {
                        details.push(
                            Detail::new(&LAG_TIMESTAMP_SECONDS, unix_seconds(proof.1))
                                .with_label("secondary", id.clone()),
                        );
                        proofs.push(proof);
                    }
                    None => missing.push(id.clone()),
                }
            }
        }
        if !missing.is_empty() {
            return Err(ProbeError::new(
                FailureReason::Query,
                format!(
                    "CloudWatch has no AuroraGlobalDBRPOLag or AuroraGlobalDBReplicationLag datapoint in the last {} minutes for {}",
                    lookback.as_secs() / 60,
                    missing.join(", ")
                ),
            ));
        }
        let (recovery_point, evidence) = combine_replicas(proofs);
        let mut measurement = Measurement::new(evidence.unwrap_or_else(SystemTime::now));
        measurement.recovery_point = recovery_point;
        measurement.link = view.link();
        measurement.replica_reachable = Some(true);
        details.push(Detail::new(&SECONDARIES, view.secondaries.len() as f64));
        measurement.details = details;
        Ok(measurement)
    }
}

impl Probe for AuroraGlobalProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.measure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_larger_lag_and_older_datapoint_count() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let rpo = Datapoint {
            time: t,
            value: 2.0,
        };
        let replication = Datapoint {
            time: t - Duration::from_secs(60),
            value: 0.5,
        };
        let (rp, evidence) = secondary_proof(Some(rpo), Some(replication)).unwrap();
        assert_eq!(evidence, t - Duration::from_secs(60));
        assert_eq!(rp, Some(t - Duration::from_secs(62)));
        assert!(secondary_proof(None, None).is_none());
    }
}
