//! The `aurora_global` kind: an Aurora global database.
//!
//! Each poll asks `DescribeGlobalClusters` for the members (the writer and
//! the secondary clusters: all, or those named in `secondary_clusters`) in
//! the writer's region and in every known secondary's region at once: the
//! global cluster is the same seen from any member region, so when the
//! writer's region is lost the secondary's still answers. For each
//! secondary, in its own region (AWS publishes them only there), the shared
//! CloudWatch batch reads `AuroraGlobalDBRPOLag` and
//! `AuroraGlobalDBReplicationLag`, dimensions DBClusterIdentifier (the
//! secondary) and SourceRegion (the writer's region). Both come in
//! milliseconds and are converted to seconds as they are read. Secondaries
//! named by ARN (or seen in an earlier answer) are measured even when no
//! region answers the member call. The writer's region answering is the
//! source side; each secondary's region answering (members and lags) the
//! replica side.
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
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_rds::types::GlobalCluster;
use futures::future::BoxFuture;

use super::{
    clients_for, identifier_of, lookback, millis_to_seconds, poll_deadline, region_of, remaining,
    roles_by_region, roles_only, AwsClients, Datapoint, MetricQuery, Stat,
};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
    Side,
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

    /// The members' `IsWriter` flags show which region writes.
    fn reports_roles(&self) -> bool {
        true
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
    /// The region of every member flagged `IsWriter` (one, unless a
    /// failover left two writers: split brain).
    pub writer_regions: Vec<String>,
    /// (region, cluster identifier, synchronization status).
    pub secondaries: Vec<(String, String, Option<String>)>,
}

impl GlobalClusterView {
    pub fn from_sdk(cluster: &GlobalCluster, wanted: &[String]) -> GlobalClusterView {
        let mut writer_region = None;
        let mut writer_regions = Vec::new();
        let mut secondaries = Vec::new();
        for member in cluster.global_cluster_members() {
            let arn = member.db_cluster_arn().unwrap_or_default();
            let region = region_of(arn, "").to_string();
            if member.is_writer() == Some(true) {
                writer_regions.push(region.clone());
                writer_region.get_or_insert(region);
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
            writer_regions,
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

/// The lags read per secondary, in this order: `AuroraGlobalDBRPOLag` (both
/// engines on current versions), `AuroraGlobalDBReplicationLag` (both).
const LAG_METRICS: [&str; 2] = ["AuroraGlobalDBRPOLag", "AuroraGlobalDBReplicationLag"];

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
    /// The writer's region as last seen (the configured `region` until a
    /// `DescribeGlobalClusters` answer names another writer).
    writer_region: String,
    /// The secondaries to measure, (region, cluster identifier): those of
    /// `secondary_clusters` named by ARN, then as last seen. Known ones are
    /// measured even when no region answers `DescribeGlobalClusters`.
    secondaries: Vec<(String, String)>,
}

/// The lags of some secondaries, read in their regions: per region, the
/// secondaries asked and the answer (two datapoints per secondary).
type RegionLags = Vec<(
    String,
    Vec<String>,
    Result<Vec<Option<Datapoint>>, ProbeError>,
)>;

impl AuroraGlobalProbe {
    pub fn new(
        target: &Target,
        spec: &AuroraGlobalTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<AuroraGlobalProbe, ProbeError> {
        let secondaries = spec
            .secondary_clusters
            .iter()
            .filter_map(|c| {
                config::parse_arn(c)
                    .map(|arn| (arn.region.to_string(), identifier_of(c).to_string()))
            })
            .collect();
        Ok(AuroraGlobalProbe {
            target: target.clone(),
            spec: spec.clone(),
            clients: clients_for(&spec.access, aws_calls),
            writer_region: spec.access.region.clone(),
            secondaries,
        })
    }

    /// `DescribeGlobalClusters` in one region.
    async fn describe(
        &self,
        region: &str,
        timeout: Duration,
    ) -> Result<GlobalClusterView, ProbeError> {
        let clients = self.clients.in_region(region);
        let rds = clients.rds().await;
        let output = clients
            .call(
                "rds",
                "DescribeGlobalClusters",
                timeout,
                rds.describe_global_clusters()
                    .global_cluster_identifier(&self.spec.global_cluster)
                    .send(),
            )
            .await?;
        let cluster = output
            .global_clusters()
            .iter()
            .find(|c| {
                c.global_cluster_identifier()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&self.spec.global_cluster))
            })
            .ok_or_else(|| {
                ProbeError::new(
                    FailureReason::Config,
                    format!(
                        "the global cluster {} does not exist (asked in {region})",
                        self.spec.global_cluster
                    ),
                )
            })?;
        Ok(GlobalClusterView::from_sdk(
            cluster,
            &self.spec.secondary_clusters,
        ))
    }

    /// The two lags of each secondary, in each secondary's region at once.
    async fn lags(
        &self,
        secondaries: &[(String, String)],
        writer_region: &str,
        deadline: Instant,
    ) -> RegionLags {
        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (region, id) in secondaries {
            by_region
                .entry(region.clone())
                .or_default()
                .push(id.clone());
        }
        let lookback = lookback(self.target.stale_after);
        let fetches = by_region.into_iter().map(|(region, ids)| {
            let clients = self.clients.in_region(&region);
            async move {
                let queries = ids
                    .iter()
                    .flat_map(|id| {
                        LAG_METRICS.map(|metric| {
                            MetricQuery::new("AWS/RDS", metric, Stat::Maximum)
                                .dimension("DBClusterIdentifier", id.clone())
                                .dimension("SourceRegion", writer_region.to_string())
                        })
                    })
                    .collect();
                let answer = clients
                    .newest_datapoints(queries, lookback, remaining(deadline))
                    .await;
                (region, ids, answer)
            }
        });
        futures::future::join_all(fetches).await
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = poll_deadline(self.target.timeout);
        let writer_region = self.writer_region.clone();
        let known = self.secondaries.clone();
        // The writer's region and every known secondary's region are asked
        // for the members at once, each bounded by half the time, so a lost
        // region leaves the others (and the lags) theirs.
        let mut regions = vec![writer_region.clone()];
        for (region, _) in &known {
            if !regions.contains(region) {
                regions.push(region.clone());
            }
        }
        let describe_timeout = remaining(deadline) / 2;
        let describes =
            futures::future::join_all(regions.iter().map(|r| self.describe(r, describe_timeout)));
        let early_lags = async {
            if known.is_empty() {
                None
            } else {
                Some(self.lags(&known, &writer_region, deadline).await)
            }
        };
        let (described, early_lags) = futures::join!(describes, early_lags);
        let described: Vec<(String, Result<GlobalClusterView, ProbeError>)> =
            regions.into_iter().zip(described).collect();

        // Every region holds the same global view; the first answer is used.
        let view = described.iter().find_map(|(_, r)| r.as_ref().ok()).cloned();
        let mut secondaries = known.clone();
        if let Some(view) = &view {
            if let Some(writer) = &view.writer_region {
                self.writer_region = writer.clone();
            }
            secondaries = view
                .secondaries
                .iter()
                .map(|(region, id, _)| (region.clone(), id.clone()))
                .collect();
            self.secondaries = secondaries.clone();
        }
        if secondaries.is_empty() {
            if let Some(view) = &view {
                let roles = roles_by_region(&self.spec.access.region, &view.writer_regions);
                return Ok(roles_only(view.link(), roles, described, &writer_region));
            }
            let mut error = described
                .into_iter()
                .find_map(|(_, r)| r.err())
                .map(|e| e.on(Side::Source))
                .unwrap_or_else(|| {
                    ProbeError::new(
                        FailureReason::Config,
                        "the global cluster has no secondary cluster to measure",
                    )
                });
            if view.is_none() {
                error.message.push_str(
                    "; no secondary is known: name them by ARN in `secondary_clusters` so the recovery region is measured while the writer's region is unreachable",
                );
            }
            return Err(error);
        }
        // The lags read at once were for the secondaries and writer known
        // before this poll; read them again if the answer changed either.
        let lags = match early_lags {
            Some(lags) if secondaries == known && self.writer_region == writer_region => lags,
            _ => {
                let writer = self.writer_region.clone();
                self.lags(&secondaries, &writer, deadline).await
            }
        };

        let mut failures = Vec::new();
        let mut source_reachable = None;
        let mut unreachable_regions: Vec<String> = Vec::new();
        for (region, result) in described {
            let side = if region == writer_region {
                Side::Source
            } else {
                Side::Replica
            };
            match result {
                Ok(_) if side == Side::Source => source_reachable = Some(true),
                Ok(_) => {}
                Err(err) => {
                    if side == Side::Source {
                        source_reachable = Some(false);
                    } else {
                        unreachable_regions.push(region);
                    }
                    failures.push(err.on(side));
                }
            }
        }
        let mut proofs = Vec::new();
        let mut missing = Vec::new();
        let mut details = Vec::new();
        for (region, ids, answer) in lags {
            let datapoints = match answer {
                Ok(datapoints) => datapoints,
                Err(err) => {
                    if !unreachable_regions.contains(&region) {
                        unreachable_regions.push(region);
                    }
                    failures.push(err.on(Side::Replica));
                    continue;
                }
            };
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
                    None => missing.push(format!("{id} ({region})")),
                }
            }
        }
        let replica_reachable = unreachable_regions.is_empty();
        if replica_reachable && !missing.is_empty() {
            // The secondary's region answered and has nothing: no proof,
            // never lag 0.
            let mut message = format!(
                "CloudWatch has no AuroraGlobalDBRPOLag or AuroraGlobalDBReplicationLag datapoint in the last {} minutes for {}",
                lookback(self.target.stale_after).as_secs() / 60,
                missing.join(", ")
            );
            for failure in &failures {
                message.push_str(&format!("; {failure}"));
            }
            return Err(ProbeError::new(FailureReason::Query, message));
        }
        if !replica_reachable && view.is_none() && source_reachable != Some(true) {
            // No region answered anything.
            return Err(failures
                .into_iter()
                .next()
                .expect("an unreachable region left a failure"));
        }
        // A secondary whose region did not answer proves nothing, so neither
        // does the target (its recovery point is the oldest secondary's).
        let (recovery_point, evidence) = if replica_reachable {
            combine_replicas(proofs)
        } else {
            (None, None)
        };
        let mut measurement = Measurement::new(evidence.unwrap_or_else(SystemTime::now));
        measurement.recovery_point = recovery_point;
        measurement.link = match &view {
            Some(view) => view.link(),
            None => LinkState::Unknown(format!(
                "DescribeGlobalClusters answered in no region ({})",
                failures
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        };
        measurement.source_reachable = source_reachable;
        measurement.replica_reachable = Some(replica_reachable);
        // The configured `region` is the configured primary side; a poll
        // whose member call answered nowhere tells nothing about roles.
        measurement.roles = view
            .as_ref()
            .map(|v| roles_by_region(&self.spec.access.region, &v.writer_regions));
        details.push(Detail::new(&SECONDARIES, secondaries.len() as f64));
        measurement.details = details;
        measurement.failures = failures;
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
