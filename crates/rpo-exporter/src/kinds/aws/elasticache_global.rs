//! The `elasticache_global` kind: an ElastiCache (Redis OSS / Valkey) Global
//! Datastore.
//!
//! Each poll asks `DescribeGlobalReplicationGroups` (with member info, in
//! `region`) for the global group's status and its members; the secondary
//! members (all, or the one in `secondary_region`) are measured. For each,
//! `DescribeReplicationGroups` in its region lists its member clusters
//! (nodes), and the shared CloudWatch batch reads
//! `GlobalDatastoreReplicationLag` (`AWS/ElastiCache`, dimension
//! CacheClusterId, seconds) of each: only the secondary's primary node
//! publishes it, so a secondary is proven by the node(s) that do.
//!
//! Evidence is provider-reported lag: recovery point = datapoint time − lag,
//! evidence time = the datapoint's time; the oldest secondary sets the
//! target's. The link is healthy when the global group is `available` and
//! every measured secondary member is `associated`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_sdk_elasticache::types::GlobalReplicationGroup;
use futures::future::BoxFuture;

use super::{clients_for, lookback, AwsClients, Datapoint, MetricQuery, Stat};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
};

use crate::metric_def::MetricDef;
use crate::self_metrics::AwsCallCounters;
use serde::Deserialize;

use super::config::{self, is_aws_region, AwsAccess};
use crate::evidence::provider_lag::{combine_replicas, recovery_point as lag_recovery_point};
use crate::kinds::{KindDef, KindSpec};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::aws(
    "elasticache_global",
    parse,
    config::CLOUDWATCH_DEFAULTS,
    DETAIL_FAMILIES,
);

/// An ElastiCache (Redis OSS / Valkey) Global Datastore.
#[derive(Debug, Clone)]
pub struct ElasticacheGlobalTarget {
    pub access: AwsAccess,
    pub global_replication_group: String,
    /// Only the secondary member in this region; `None` means every secondary.
    pub secondary_region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElasticacheGlobal {
    global_replication_group: String,
    secondary_region: Option<String>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let access = config::access(keys)?;
    let raw: RawElasticacheGlobal = keys.take()?;
    let id = &raw.global_replication_group;
    if id.is_empty() || id.len() > 255 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(keys.invalid(
            "global_replication_group",
            "must be a Global Datastore id like \"ldgnf-erp-sessions\" (letters, digits, hyphens)",
        ));
    }
    if let Some(region) = &raw.secondary_region {
        if !is_aws_region(region) {
            return Err(keys.invalid(
                "secondary_region",
                format!("`{region}` is not an AWS region name like \"eu-west-1\""),
            ));
        }
    }
    Ok(Arc::new(ElasticacheGlobalTarget {
        access,
        global_replication_group: id.clone(),
        secondary_region: raw.secondary_region.clone(),
    }))
}

impl KindSpec for ElasticacheGlobalTarget {
    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(ElasticacheGlobalProbe::new(
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
pub static REPLICATION_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_elasticache_global_replication_lag_seconds",
    "The newest CloudWatch GlobalDatastoreReplicationLag of the secondary's node (the minute's maximum).",
).with_labels(&["node"]);
pub static REPLICATION_LAG_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_elasticache_global_replication_lag_timestamp_seconds",
    "The time of the newest GlobalDatastoreReplicationLag datapoint (the start of its minute).",
)
.with_labels(&["node"]);
pub static MEMBER_ASSOCIATED: MetricDef = MetricDef::gauge(
    "rpo_elasticache_global_member_associated",
    "1 when the secondary member's status in the global datastore is `associated`.",
)
.with_labels(&["secondary"]);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &REPLICATION_LAG_SECONDS,
    &REPLICATION_LAG_TIMESTAMP_SECONDS,
    &MEMBER_ASSOCIATED,
];

/// A secondary member of the global datastore.
#[derive(Debug, Clone, PartialEq)]
pub struct Secondary {
    pub replication_group_id: String,
    pub region: String,
    pub status: String,
}

/// The global group's status and its secondaries (optionally only one region's).
pub fn secondaries_of(
    group: &GlobalReplicationGroup,
    only_region: Option<&str>,
) -> (String, Vec<Secondary>) {
    let secondaries = group
        .members()
        .iter()
        .filter(|m| {
            m.role()
                .is_some_and(|r| r.eq_ignore_ascii_case("secondary"))
        })
        .filter(|m| only_region.is_none_or(|r| m.replication_group_region() == Some(r)))
        .map(|m| Secondary {
            replication_group_id: m.replication_group_id().unwrap_or_default().to_string(),
            region: m.replication_group_region().unwrap_or_default().to_string(),
            status: m.status().unwrap_or("unknown").to_string(),
        })
        .collect();
    (group.status().unwrap_or("unknown").to_string(), secondaries)
}

/// The link from the global status and the secondaries' member status.
pub fn link(global_status: &str, secondaries: &[Secondary]) -> LinkState {
    if global_status != "available" {
        return LinkState::Unhealthy(format!(
            "the global datastore is `{global_status}`, not `available`"
        ));
    }
    if secondaries.is_empty() {
        return LinkState::Unhealthy(
            "the global datastore has no secondary member to measure".to_string(),
        );
    }
    let bad: Vec<String> = secondaries
        .iter()
        .filter(|s| s.status != "associated")
        .map(|s| {
            format!(
                "{} in {} is `{}`",
                s.replication_group_id, s.region, s.status
            )
        })
        .collect();
    if bad.is_empty() {
        LinkState::Healthy
    } else {
        LinkState::Unhealthy(format!("secondary not associated: {}", bad.join(", ")))
    }
}

pub struct ElasticacheGlobalProbe {
    target: Target,
    spec: ElasticacheGlobalTarget,
    clients: Arc<AwsClients>,
}

impl ElasticacheGlobalProbe {
    pub fn new(
        target: &Target,
        spec: &ElasticacheGlobalTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<ElasticacheGlobalProbe, ProbeError> {
        Ok(ElasticacheGlobalProbe {
            target: target.clone(),
            spec: spec.clone(),
            clients: clients_for(&spec.access, aws_calls),
        })
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = Instant::now() + self.target.timeout;
        let elasticache = self.clients.elasticache().await;
        let output = self
            .clients
            .call(
                "elasticache",
                "DescribeGlobalReplicationGroups",
                self.target.timeout / 3,
                elasticache
                    .describe_global_replication_groups()
                    .global_replication_group_id(&self.spec.global_replication_group)
                    .show_member_info(true)
                    .send(),
            )
            .await?;
        let group = output.global_replication_groups().first().ok_or_else(|| {
            ProbeError::new(
                FailureReason::Config,
                format!(
                    "the global datastore {} does not exist",
                    self.spec.global_replication_group
                ),
            )
        })?;
        let (global_status, secondaries) =
            secondaries_of(group, self.spec.secondary_region.as_deref());
        let lookback = lookback(self.target.stale_after);
        let per_secondary = secondaries.iter().map(|secondary| {
            let clients = self.clients.in_region(&secondary.region);
            async move {
                let elasticache = clients.elasticache().await;
                let timeout = deadline.saturating_duration_since(Instant::now()) / 2;
                let groups = clients
                    .call(
                        "elasticache",
                        "DescribeReplicationGroups",
                        timeout,
                        elasticache
                            .describe_replication_groups()
                            .replication_group_id(&secondary.replication_group_id)
                            .send(),
                    )
                    .await?;
                let nodes: Vec<String> = groups
                    .replication_groups()
                    .iter()
                    .flat_map(|g| g.member_clusters().iter().cloned())
                    .collect();
                let queries = nodes
                    .iter()
                    .map(|node| {
                        MetricQuery::new(
                            "AWS/ElastiCache",
                            "GlobalDatastoreReplicationLag",
                            Stat::Maximum,
                        )
                        .dimension("CacheClusterId", node.clone())
                    })
                    .collect();
                let datapoints = clients
                    .newest_datapoints(
                        queries,
                        lookback,
                        deadline.saturating_duration_since(Instant::now()),
                    )
                    .await?;
                Ok::<_, ProbeError>(
                    nodes
                        .into_iter()
                        .zip(datapoints)
                        .collect::<Vec<(String, Option<Datapoint>)>>(),
                )
            }
        });
        let mut proofs = Vec::new();
        let mut missing = Vec::new();
        let mut details = Vec::new();
        for (secondary, nodes) in secondaries
            .iter()
            .zip(futures::future::join_all(per_secondary).await)
        {
            let nodes = nodes?;
            let mut proven = Vec::new();
            for (node, datapoint) in nodes {
                if let Some(dp) = datapoint {
                    details.push(
                        Detail::new(&REPLICATION_LAG_SECONDS, dp.value)
                            .with_label("node", node.clone()),
                    );
                    details.push(
                        Detail::new(&REPLICATION_LAG_TIMESTAMP_SECONDS, unix_seconds(dp.time))
                            .with_label("node", node),
                    );
                    proven.push((lag_recovery_point(dp.time, dp.value), dp.time));
                }
            }
            if proven.is_empty() {
                missing.push(format!(
                    "{} ({})",
                    secondary.replication_group_id, secondary.region
                ));
            } else {
                let (rp, evidence) = combine_replicas(proven);
                proofs.push((rp, evidence.expect("non-empty")));
            }
            details.push(
                Detail::new(
                    &MEMBER_ASSOCIATED,
                    if secondary.status == "associated" {
                        1.0
                    } else {
                        0.0
                    },
                )
                .with_label("secondary", secondary.replication_group_id.clone()),
            );
        }
        if !missing.is_empty() {
            return Err(ProbeError::new(
                FailureReason::Query,
                format!(
                    "CloudWatch has no GlobalDatastoreReplicationLag datapoint in the last {} minutes for the nodes of {}",
                    lookback.as_secs() / 60,
                    missing.join(", ")
                ),
            ));
        }
        let (recovery_point, evidence) = combine_replicas(proofs);
        let mut measurement = Measurement::new(evidence.unwrap_or_else(SystemTime::now));
        measurement.recovery_point = recovery_point;
        measurement.link = link(&global_status, &secondaries);
        measurement.replica_reachable = Some(true);
        measurement.details = details;
        Ok(measurement)
    }
}

impl Probe for ElasticacheGlobalProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.measure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secondary(status: &str) -> Secondary {
        Secondary {
            replication_group_id: "erp-sessions-dr".into(),
            region: "eu-west-1".into(),
            status: status.into(),
        }
    }

    #[test]
    fn link_needs_available_and_associated() {
        assert_eq!(
            link("available", &[secondary("associated")]),
            LinkState::Healthy
        );
        assert!(matches!(
            link("modifying", &[secondary("associated")]),
            LinkState::Unhealthy(_)
        ));
        assert!(
            matches!(link("available", &[secondary("disassociating")]), LinkState::Unhealthy(w) if w.contains("disassociating"))
        );
        assert!(matches!(link("available", &[]), LinkState::Unhealthy(_)));
    }
}
