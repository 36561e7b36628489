//! The `elasticache_global` kind: an ElastiCache (Redis OSS / Valkey) Global
//! Datastore.
//!
//! Each poll asks `DescribeGlobalReplicationGroups` (with member info) for
//! the global group's status and its members, in the primary's region and
//! in every known secondary's region (as last seen, and `secondary_region`)
//! at once, so the secondary's region answers when the primary's is lost.
//! The secondary members (all, or the one in `secondary_region`) are
//! measured: for each, in its own region, `DescribeReplicationGroups` lists
//! its member clusters (nodes), and the shared CloudWatch batch reads
//! `GlobalDatastoreReplicationLag` (`AWS/ElastiCache`, dimension
//! CacheClusterId, seconds) of each: only the secondary's primary node
//! publishes it, so a secondary is proven by the node(s) that do. The
//! primary's region answering is the source side; each secondary's region
//! answering the replica side.
//!
//! Evidence is provider-reported lag: recovery point = datapoint time − lag,
//! evidence time = the datapoint's time; the oldest secondary sets the
//! target's. The link is healthy when the global group is `available` and
//! every measured secondary member is `associated`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_elasticache::types::GlobalReplicationGroup;
use futures::future::BoxFuture;

use super::{
    clients_for, lookback, poll_deadline, remaining, roles_by_region, roles_only, AwsClients,
    Datapoint, MetricQuery, Stat,
};
use crate::config::{ConfigError, Target, TargetKeys};
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
    Side,
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

    /// The members' `Role` (`PRIMARY`/`SECONDARY`) shows which region writes.
    fn reports_roles(&self) -> bool {
        true
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

/// The regions of the global group's members whose `Role` is `PRIMARY`
/// (one, unless a failover left two primaries: split brain).
pub fn primary_regions_of(group: &GlobalReplicationGroup) -> Vec<String> {
    group
        .members()
        .iter()
        .filter(|m| m.role().is_some_and(|r| r.eq_ignore_ascii_case("primary")))
        .filter_map(|m| m.replication_group_region())
        .map(str::to_string)
        .collect()
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
    /// The primary member's region as last seen (the configured `region`
    /// until an answer names another primary).
    primary_region: String,
    /// The secondaries as last seen; measured even when no region answers
    /// `DescribeGlobalReplicationGroups`.
    secondaries: Vec<Secondary>,
}

/// The lag of one secondary's nodes, or why its region did not answer.
type SecondaryLags = Result<Vec<(String, Option<Datapoint>)>, ProbeError>;

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
            primary_region: spec.access.region.clone(),
            secondaries: Vec::new(),
        })
    }

    /// `DescribeGlobalReplicationGroups` (with member info) in one region:
    /// the global status, the secondaries and the primaries' regions.
    async fn describe(
        &self,
        region: &str,
        timeout: Duration,
    ) -> Result<(String, Vec<Secondary>, Vec<String>), ProbeError> {
        let clients = self.clients.in_region(region);
        let elasticache = clients.elasticache().await;
        let output = clients
            .call(
                "elasticache",
                "DescribeGlobalReplicationGroups",
                timeout,
                elasticache
                    .describe_global_replication_groups()
                    .global_replication_group_id(&self.spec.global_replication_group)
                    .show_member_info(true)
                    .send(),
            )
            .await?;
        let group = output
            .global_replication_groups()
            .iter()
            .find(|g| g.global_replication_group_id() == Some(&self.spec.global_replication_group))
            .ok_or_else(|| {
                ProbeError::new(
                    FailureReason::Config,
                    format!(
                        "the global datastore {} does not exist (asked in {region})",
                        self.spec.global_replication_group
                    ),
                )
            })?;
        let (status, secondaries) = secondaries_of(group, self.spec.secondary_region.as_deref());
        Ok((status, secondaries, primary_regions_of(group)))
    }

    /// One secondary's nodes (`DescribeReplicationGroups`) and their lag,
    /// both in the secondary's region.
    async fn lags_of(&self, secondary: &Secondary, deadline: Instant) -> SecondaryLags {
        let clients = self.clients.in_region(&secondary.region);
        let elasticache = clients.elasticache().await;
        let groups = clients
            .call(
                "elasticache",
                "DescribeReplicationGroups",
                remaining(deadline) / 2,
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
                lookback(self.target.stale_after),
                remaining(deadline),
            )
            .await?;
        Ok(nodes.into_iter().zip(datapoints).collect())
    }

    async fn all_lags(&self, secondaries: &[Secondary], deadline: Instant) -> Vec<SecondaryLags> {
        futures::future::join_all(secondaries.iter().map(|s| self.lags_of(s, deadline))).await
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = poll_deadline(self.target.timeout);
        let primary_region = self.primary_region.clone();
        let known = self.secondaries.clone();
        // The primary's region and every secondary region known (as last
        // seen, or `secondary_region`) are asked at once, each within half
        // the time, so a lost region leaves the others theirs.
        let mut regions = vec![primary_region.clone()];
        for region in known
            .iter()
            .map(|s| s.region.clone())
            .chain(self.spec.secondary_region.clone())
        {
            if !regions.contains(&region) {
                regions.push(region);
            }
        }
        let describe_timeout = remaining(deadline) / 2;
        let describes =
            futures::future::join_all(regions.iter().map(|r| self.describe(r, describe_timeout)));
        let early = async {
            if known.is_empty() {
                None
            } else {
                Some(self.all_lags(&known, deadline).await)
            }
        };
        let (described, early) = futures::join!(describes, early);
        let described: Vec<(String, Result<_, ProbeError>)> =
            regions.into_iter().zip(described).collect();

        // Every member region answers with the same global view.
        let view = described.iter().find_map(|(_, r)| r.as_ref().ok()).cloned();
        let mut secondaries = known.clone();
        let mut global_status = None;
        if let Some((status, answered, primary)) = &view {
            global_status = Some(status.clone());
            if let Some(primary) = primary.first() {
                self.primary_region = primary.clone();
            }
            secondaries = answered.clone();
            self.secondaries = secondaries.clone();
        }
        if secondaries.is_empty() {
            if let Some((status, answered, primaries)) = &view {
                let roles = roles_by_region(&self.spec.access.region, primaries);
                let link = link(status, answered);
                return Ok(roles_only(link, roles, described, &primary_region));
            }
            let mut error = described
                .into_iter()
                .find_map(|(_, r)| r.err())
                .map(|e| e.on(Side::Source))
                .unwrap_or_else(|| {
                    ProbeError::new(
                        FailureReason::Config,
                        "the global datastore has no secondary member to measure",
                    )
                });
            if view.is_none() {
                error.message.push_str(
                    "; no secondary is known: set `secondary_region` so the recovery region is asked while the primary's region is unreachable",
                );
            }
            return Err(error);
        }
        let same_members = |a: &[Secondary], b: &[Secondary]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.region == y.region && x.replication_group_id == y.replication_group_id
                })
        };
        let lags = match early {
            Some(lags) if same_members(&secondaries, &known) => lags,
            _ => self.all_lags(&secondaries, deadline).await,
        };

        let mut failures = Vec::new();
        let mut source_reachable = None;
        let mut unreachable: Vec<String> = Vec::new();
        for (region, result) in described {
            let side = if region == primary_region {
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
                        unreachable.push(region);
                    }
                    failures.push(err.on(side));
                }
            }
        }
        let mut proofs = Vec::new();
        let mut missing = Vec::new();
        let mut details = Vec::new();
        for (secondary, nodes) in secondaries.iter().zip(lags) {
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
            let nodes = match nodes {
                Ok(nodes) => nodes,
                Err(err) => {
                    if !unreachable.contains(&secondary.region) {
                        unreachable.push(secondary.region.clone());
                    }
                    failures.push(err.on(Side::Replica));
                    continue;
                }
            };
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
        }
        let replica_reachable = unreachable.is_empty();
        if replica_reachable && !missing.is_empty() {
            let mut message = format!(
                "CloudWatch has no GlobalDatastoreReplicationLag datapoint in the last {} minutes for the nodes of {}",
                lookback(self.target.stale_after).as_secs() / 60,
                missing.join(", ")
            );
            for failure in &failures {
                message.push_str(&format!("; {failure}"));
            }
            return Err(ProbeError::new(FailureReason::Query, message));
        }
        if !replica_reachable && view.is_none() && source_reachable != Some(true) {
            return Err(failures
                .into_iter()
                .next()
                .expect("an unreachable region left a failure"));
        }
        // A secondary whose region did not answer proves nothing, so neither
        // does the target.
        let (recovery_point, evidence) = if replica_reachable {
            combine_replicas(proofs)
        } else {
            (None, None)
        };
        let mut measurement = Measurement::new(evidence.unwrap_or_else(SystemTime::now));
        measurement.recovery_point = recovery_point;
        measurement.link = match &global_status {
            Some(status) => link(status, &secondaries),
            None => LinkState::Unknown(format!(
                "DescribeGlobalReplicationGroups answered in no region ({})",
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
            .map(|(_, _, primaries)| roles_by_region(&self.spec.access.region, primaries));
        measurement.details = details;
        measurement.failures = failures;
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
