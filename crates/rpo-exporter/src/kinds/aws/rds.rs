//! The `rds` kind: an RDS source instance and its read replicas (same- or
//! cross-region).
//!
//! Each poll asks, at once, the source's region for the source instance
//! (`DescribeDBInstances`: its status and `ReadReplicaDBInstanceIdentifiers`,
//! which lists cross-region replicas by ARN) and, per replica region, the
//! replicas' status and their CloudWatch `ReplicaLag` (through the shared
//! batch): an instance's metrics are published in its own region.
//! Configured `replicas` skip the discovery; when the source cannot be
//! reached, the replicas configured or found last time are still measured,
//! so the recovery region keeps its evidence when the primary region is
//! gone; when a replica's region cannot be reached, the replica side is
//! unreachable and the source's status is kept.
//!
//! Evidence is provider-reported lag: per replica, recovery point = datapoint
//! time − `ReplicaLag` (the minute's maximum), evidence time = the
//! datapoint's time. The target's recovery point is the oldest replica's.
//! A replica with no datapoint in the window leaves the target unproven (the
//! poll fails with `query`), never at lag 0; `ReplicaLag = -1` (replication
//! not running) proves nothing and marks the link unhealthy. The link is
//! healthy when every replica is `available` and its read-replication status
//! (when RDS reports one) is normal.
//!
//! What `ReplicaLag` means depends on the engine (RDS user guide,
//! "Monitoring read replication"), so only an engine whose `ReplicaLag`
//! can only overstate the lag proves a recovery point:
//! - RDS for PostgreSQL computes it as `now() - pg_last_xact_replay_timestamp()`
//!   on the replica ("Monitoring and tuning the replication process"): it
//!   grows while nothing is replayed, so a stalled link reads as growing lag.
//!   An idle source writes only every 5 minutes, so on an idle source the
//!   metric reads up to ~5 minutes without any real lag: conservative (too
//!   old), never optimistic. For tight budgets use the `postgres` kind.
//! - RDS for MySQL and MariaDB report `Seconds_Behind_Master`, which only
//!   measures the SQL (applier) thread against the relay log the I/O thread
//!   has received: it reads 0 while the I/O thread is behind and while the
//!   link is stalled (until the I/O thread times out and it turns -1). A 0
//!   proves nothing, so such a replica never proves a recovery point here:
//!   the poll fails with `config` pointing to the `mysql` kind (issue 10).
//! - Any other engine's `ReplicaLag` is not verified here and proves nothing
//!   either, said the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_sdk_rds::types::DbInstance;
use futures::future::BoxFuture;

use super::{
    clients_for, identifier_of, lookback, poll_deadline, region_of, remaining, AwsClients,
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

use super::config::{self, AwsAccess};
use crate::evidence::promotion::{Direction, PairRoles, SideSeen};
use crate::evidence::provider_lag::{combine_replicas, recovery_point as lag_recovery_point};
use crate::kinds::{KindDef, KindSpec};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::aws("rds", parse, config::CLOUDWATCH_DEFAULTS, DETAIL_FAMILIES);

/// An RDS source instance and its read replicas.
#[derive(Debug, Clone)]
pub struct RdsTarget {
    pub access: AwsAccess,
    /// The source DB instance: an identifier (in `region`) or an ARN.
    pub source_instance: String,
    /// Replicas to measure (identifiers or ARNs); empty means every replica
    /// `DescribeDBInstances` lists for the source.
    pub replicas: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRds {
    source_instance: String,
    replicas: Option<Vec<String>>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let access = config::access(keys)?;
    let raw: RawRds = keys.take()?;
    config::check_rds_resource(keys, "source_instance", &raw.source_instance, "db")?;
    let replicas = raw.replicas.clone().unwrap_or_default();
    for (i, replica) in replicas.iter().enumerate() {
        config::check_rds_resource(keys, &format!("replicas[{i}]"), replica, "db")?;
    }
    if raw.replicas.as_ref().is_some_and(Vec::is_empty) {
        return Err(keys.invalid(
            "replicas",
            "is empty; list the replicas to measure, or remove the key to measure every replica of the source",
        ));
    }
    Ok(Arc::new(RdsTarget {
        access,
        source_instance: raw.source_instance.clone(),
        replicas,
    }))
}

impl KindSpec for RdsTarget {
    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(RdsProbe::new(target, self, &context.aws_calls)?))
    }

    /// A replica promoted to a standalone instance loses its source in
    /// `DescribeDBInstances`.
    fn reports_roles(&self) -> bool {
        true
    }
}

/// Whether `DescribeDBInstances` shows `instance` accepting writes on its
/// own: an RDS read replica names its source in
/// `ReadReplicaSourceDBInstanceIdentifier`; a source, or a replica promoted
/// with `PromoteReadReplica`, has none.
pub fn standalone(instance: &DbInstance) -> bool {
    instance
        .read_replica_source_db_instance_identifier()
        .is_none()
}

/// Whether the source instance accepts writes: standalone and not stopped
/// or going away. After `PromoteReadReplica` RDS leaves the old source
/// writable, so both accepting writes is split brain until it is stopped,
/// deleted or its region is lost.
pub fn source_writable(instance: &DbInstance) -> bool {
    standalone(instance)
        && !matches!(
            instance.db_instance_status(),
            Some("stopped" | "stopping" | "deleting")
        )
}

/// The pair's roles from what `DescribeDBInstances` said this poll: the
/// source instance (`None`: its region did not answer) and each replica
/// found (whether it is standalone now). No heartbeat is written here, so a
/// promotion's loss is predicted, never measured.
pub fn rds_roles(source_standalone: Option<bool>, replicas_standalone: &[bool]) -> PairRoles {
    PairRoles {
        primary: SideSeen {
            writable: source_standalone,
            ..SideSeen::default()
        },
        replica: SideSeen {
            writable: if replicas_standalone.is_empty() {
                None
            } else {
                Some(replicas_standalone.iter().any(|s| *s))
            },
            ..SideSeen::default()
        },
        // A promoted replica's old source is never made its replica by
        // RDS: the other direction is a new pair, configured anew.
        direction: Direction::Forward,
        heartbeat_configured: false,
    }
}

// ---------------------------------------------------------------------------
// Measuring.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static REPLICA_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_rds_replica_lag_seconds",
    "The newest CloudWatch ReplicaLag of the replica (the minute's maximum).",
)
.with_labels(&["replica"]);
pub static REPLICA_LAG_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_rds_replica_lag_timestamp_seconds",
    "The time of the newest ReplicaLag datapoint (the start of its minute).",
)
.with_labels(&["replica"]);
pub static REPLICA_AVAILABLE: MetricDef = MetricDef::gauge(
    "rpo_rds_replica_available",
    "1 when the RDS replica's status is `available` and its read replication is normal.",
)
.with_labels(&["replica"]);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &REPLICA_LAG_SECONDS,
    &REPLICA_LAG_TIMESTAMP_SECONDS,
    &REPLICA_AVAILABLE,
];

/// One replica as the probe knows it: where it is and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRef {
    pub region: String,
    pub identifier: String,
}

/// What the status API says of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    pub status: String,
    /// The instance's engine (`postgres`, `mysql`, `mariadb`...), when known.
    pub engine: Option<String>,
    /// The "read replication" status info, when RDS reports one:
    /// (status, normal, message).
    pub replication: Option<(String, bool, Option<String>)>,
}

impl ReplicaStatus {
    pub fn from_instance(instance: &DbInstance) -> ReplicaStatus {
        let replication = instance
            .status_infos()
            .iter()
            .find(|info| info.status_type() == Some("read replication"))
            .map(|info| {
                (
                    info.status().unwrap_or("unknown").to_string(),
                    info.normal().unwrap_or(false),
                    info.message().map(str::to_string),
                )
            });
        ReplicaStatus {
            status: instance
                .db_instance_status()
                .unwrap_or("unknown")
                .to_string(),
            engine: instance.engine().map(str::to_string),
            replication,
        }
    }

    /// Why this replica is not healthy, or `None` when it is.
    pub fn problem(&self) -> Option<String> {
        if self.status != "available" {
            return Some(format!("status is `{}`, not `available`", self.status));
        }
        match &self.replication {
            Some((status, false, message)) => Some(format!(
                "read replication is `{status}`{}",
                message
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )),
            _ => None,
        }
    }
}

/// Whether `ReplicaLag` of this engine can prove a recovery point, or why
/// not. Only RDS for PostgreSQL's is replay-based (it grows while nothing is
/// replayed); MySQL's and MariaDB's is `Seconds_Behind_Master`, which reads
/// 0 while the received side is behind or the link stalls.
pub fn lag_proof_problem(engine: Option<&str>, instance: &str) -> Option<ProbeError> {
    let message = match engine {
        Some("postgres") => return None,
        Some(engine @ ("mysql" | "mariadb")) => format!(
            "{instance} is RDS for {engine}: its ReplicaLag is Seconds_Behind_Master, which reads 0 while the replica's I/O thread is behind and while the link is stalled, so it cannot prove a recovery point; measure this pair with the `mysql` kind (heartbeat and source positions) against its endpoints"
        ),
        Some(engine) => format!(
            "{instance} runs engine `{engine}`, whose ReplicaLag this exporter has not verified against AWS's documentation, so it cannot prove a recovery point; measure the pair at the SQL level"
        ),
        None => format!(
            "the engine of {instance} is not known yet (DescribeDBInstances has not answered), so its ReplicaLag cannot prove a recovery point"
        ),
    };
    Some(ProbeError::new(FailureReason::Config, message))
}

/// The recovery point, link and details from each replica's status and
/// newest `ReplicaLag` datapoint, for a pair running `engine`. Pure, so it
/// is unit-tested.
pub fn evaluate(
    replicas: &[(ReplicaRef, Option<ReplicaStatus>, Option<Datapoint>)],
    engine: Option<&str>,
    source: &str,
    window_minutes: u64,
) -> Result<(Option<SystemTime>, SystemTime, LinkState, Vec<Detail>), ProbeError> {
    if let Some(err) = lag_proof_problem(engine, source) {
        return Err(err);
    }
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    let mut proofs = Vec::new();
    let mut details = Vec::new();
    for (replica, status, datapoint) in replicas {
        let id = &replica.identifier;
        if let Some(status) = status {
            details.push(
                Detail::new(
                    &REPLICA_AVAILABLE,
                    if status.problem().is_none() { 1.0 } else { 0.0 },
                )
                .with_label("replica", id.clone()),
            );
            if let Some(problem) = status.problem() {
                problems.push(format!("replica {id}: {problem}"));
            }
        }
        match datapoint {
            None => missing.push(format!("{id} ({})", replica.region)),
            Some(dp) => {
                details.push(
                    Detail::new(&REPLICA_LAG_SECONDS, dp.value).with_label("replica", id.clone()),
                );
                details.push(
                    Detail::new(&REPLICA_LAG_TIMESTAMP_SECONDS, unix_seconds(dp.time))
                        .with_label("replica", id.clone()),
                );
                if dp.value < 0.0 {
                    problems.push(format!(
                        "replica {id}: ReplicaLag is {} (replication is not running)",
                        dp.value
                    ));
                }
                proofs.push((lag_recovery_point(dp.time, dp.value), dp.time));
            }
        }
    }
    if !missing.is_empty() {
        let mut message = format!(
            "CloudWatch has no ReplicaLag datapoint in the last {window_minutes} minutes for {}",
            missing.join(", ")
        );
        if !problems.is_empty() {
            message.push_str(&format!("; {}", problems.join("; ")));
        } else {
            message.push_str(": the replica publishes none yet, or is not replicating");
        }
        return Err(ProbeError::new(FailureReason::Query, message));
    }
    let (recovery_point, evidence) = combine_replicas(proofs);
    let link = if replicas.is_empty() {
        LinkState::Unhealthy("the source has no read replicas".to_string())
    } else if problems.is_empty() {
        LinkState::Healthy
    } else {
        LinkState::Unhealthy(problems.join("; "))
    };
    Ok((
        recovery_point,
        evidence.unwrap_or_else(SystemTime::now),
        link,
        details,
    ))
}

pub struct RdsProbe {
    target: Target,
    spec: RdsTarget,
    source: ReplicaRef,
    source_clients: Arc<AwsClients>,
    /// The replicas last discovered (or configured).
    known_replicas: Vec<ReplicaRef>,
    /// The pair's engine, as DescribeDBInstances last said (source or
    /// replica): it decides what `ReplicaLag` means.
    engine: Option<String>,
}

impl RdsProbe {
    pub fn new(
        target: &Target,
        spec: &RdsTarget,
        aws_calls: &Arc<AwsCallCounters>,
    ) -> Result<RdsProbe, ProbeError> {
        let source_region = region_of(&spec.source_instance, &spec.access.region).to_string();
        let source = ReplicaRef {
            identifier: identifier_of(&spec.source_instance).to_string(),
            region: source_region.clone(),
        };
        let known_replicas = spec
            .replicas
            .iter()
            .map(|r| replica_ref(r, &source_region))
            .collect();
        Ok(RdsProbe {
            target: target.clone(),
            spec: spec.clone(),
            source_clients: clients_for(&spec.access.in_region(&source_region), aws_calls),
            source,
            known_replicas,
            engine: None,
        })
    }

    /// Per region of `replicas`, at once: the replicas' status
    /// (`DescribeDBInstances`) and their `ReplicaLag`, both in that region.
    async fn replica_regions(
        &self,
        replicas: &[ReplicaRef],
        deadline: Instant,
    ) -> Vec<RegionAnswer> {
        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for replica in replicas {
            by_region
                .entry(replica.region.clone())
                .or_default()
                .push(replica.identifier.clone());
        }
        let lookback = lookback(self.target.stale_after);
        let regions = by_region.into_iter().map(|(region, ids)| {
            let clients = self.source_clients.in_region(&region);
            async move {
                let queries = ids
                    .iter()
                    .map(|id| {
                        MetricQuery::new("AWS/RDS", "ReplicaLag", Stat::Maximum)
                            .dimension("DBInstanceIdentifier", id.clone())
                    })
                    .collect();
                let describe = describe_instances(&clients, &ids, remaining(deadline));
                let lag = clients.newest_datapoints(queries, lookback, remaining(deadline));
                let (describe, lag) = futures::join!(describe, lag);
                RegionAnswer {
                    region,
                    ids,
                    describe,
                    lag,
                }
            }
        });
        futures::future::join_all(regions).await
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = poll_deadline(self.target.timeout);
        let now = SystemTime::now();
        let mut failures = Vec::new();
        let known = self.known_replicas.clone();
        // The source's region and the replicas' regions at once (the
        // replicas as configured or last discovered), so a lost primary
        // region costs its own call's time, never the replicas' evidence.
        let early = async {
            if known.is_empty() {
                None
            } else {
                Some(self.replica_regions(&known, deadline).await)
            }
        };
        let (source, early) = futures::join!(self.describe_source(deadline), early);
        let source_reachable = source.is_ok();
        let source_standalone = source.as_ref().ok().map(source_writable);
        match source {
            Ok(instance) => {
                if let Some(engine) = instance.engine() {
                    self.engine = Some(engine.to_string());
                }
                if self.spec.replicas.is_empty() {
                    self.known_replicas = instance
                        .read_replica_db_instance_identifiers()
                        .iter()
                        .map(|r| replica_ref(r, &self.source.region))
                        .collect();
                }
            }
            Err(err) => {
                if self.known_replicas.is_empty() {
                    let mut err = err.on(Side::Source);
                    err.message.push_str("; no replica is known yet: list them (by ARN for another region) in `replicas` so they are measured while the source's region is unreachable");
                    return Err(err);
                }
                failures.push(err.on(Side::Source));
            }
        }
        let answers = match early {
            Some(answers) if self.known_replicas == known => answers,
            _ => {
                let replicas = self.known_replicas.clone();
                self.replica_regions(&replicas, deadline).await
            }
        };

        let mut replicas = Vec::new();
        // (replica, standalone) of every replica its region's
        // `DescribeDBInstances` found this poll.
        let mut replicas_seen: Vec<(String, bool)> = Vec::new();
        let mut replica_reachable = true;
        let mut regions_answered = 0;
        for answer in answers {
            let RegionAnswer {
                region,
                ids,
                describe,
                lag,
            } = answer;
            let statuses = match describe {
                Ok(instances) => Some(instances),
                Err(err) => {
                    replica_reachable = false;
                    failures.push(err.on(Side::Replica));
                    None
                }
            };
            for instance in statuses.iter().flatten() {
                if let Some(id) = instance.db_instance_identifier() {
                    if ids.iter().any(|i| i == id) {
                        replicas_seen.push((id.to_string(), standalone(instance)));
                    }
                }
            }
            // A region whose CloudWatch did not answer proves nothing about
            // its replicas: they are unreachable, not "without datapoint".
            let lag = match lag {
                Ok(lag) => lag,
                Err(err) => {
                    replica_reachable = false;
                    failures.push(err.on(Side::Replica));
                    continue;
                }
            };
            regions_answered += 1;
            for (id, datapoint) in ids.into_iter().zip(lag) {
                let status = statuses.as_ref().map(|all| {
                    all.iter()
                        .find(|i| i.db_instance_identifier() == Some(id.as_str()))
                        .map(ReplicaStatus::from_instance)
                        .unwrap_or(ReplicaStatus {
                            status: "not found".to_string(),
                            engine: None,
                            replication: None,
                        })
                });
                if let Some(engine) = status.as_ref().and_then(|s| s.engine.clone()) {
                    self.engine = Some(engine);
                }
                replicas.push((
                    ReplicaRef {
                        region: region.clone(),
                        identifier: id,
                    },
                    status,
                    datapoint,
                ));
            }
        }
        let standalone_flags: Vec<bool> = replicas_seen.iter().map(|(_, s)| *s).collect();
        let roles = rds_roles(source_standalone, &standalone_flags);
        let promoted: Vec<&str> = replicas_seen
            .iter()
            .filter(|(_, s)| *s)
            .map(|(id, _)| id.as_str())
            .collect();
        if !promoted.is_empty() {
            // A promoted replica replicates nothing any more (its ReplicaLag
            // stops): nothing is proven, but the promotion is followed.
            let mut measurement = Measurement::new(now);
            measurement.link = LinkState::Unhealthy(format!(
                "{} no longer replicates from {}: it is a standalone instance (promoted; DescribeDBInstances shows no ReadReplicaSourceDBInstanceIdentifier)",
                promoted.join(", "),
                self.source.identifier
            ));
            measurement.source_reachable = Some(source_reachable);
            measurement.replica_reachable = Some(replica_reachable);
            measurement.failures = failures;
            measurement.roles = Some(roles);
            return Ok(measurement);
        }
        if !source_reachable && regions_answered == 0 {
            // No region answered anything about the pair.
            return Err(failures.remove(0));
        }
        let (recovery_point, evidence_time, link, details) =
            if !self.known_replicas.is_empty() && regions_answered == 0 {
                (
                    None,
                    now,
                    LinkState::Unknown("no replica region answered".to_string()),
                    Vec::new(),
                )
            } else {
                evaluate(
                    &replicas,
                    self.engine.as_deref(),
                    &self.source.identifier,
                    lookback(self.target.stale_after).as_secs() / 60,
                )?
            };
        let mut measurement = Measurement::new(if self.known_replicas.is_empty() {
            now
        } else {
            evidence_time
        });
        // The target's recovery point is the oldest replica's: with one
        // replica's region silent, nothing is proven.
        measurement.recovery_point = if replica_reachable {
            recovery_point
        } else {
            None
        };
        measurement.link = if replica_reachable {
            link
        } else {
            LinkState::Unknown("the replicas' region did not answer".to_string())
        };
        measurement.source_reachable = Some(source_reachable);
        measurement.replica_reachable = Some(replica_reachable);
        measurement.details = details;
        measurement.failures = failures;
        measurement.roles = Some(roles);
        Ok(measurement)
    }

    async fn describe_source(&self, deadline: Instant) -> Result<DbInstance, ProbeError> {
        // Half the time for the source, so a hung primary region leaves the
        // replicas their share (the replicas are asked at the same time).
        let timeout = remaining(deadline) / 2;
        let instances = describe_instances(
            &self.source_clients,
            std::slice::from_ref(&self.source.identifier),
            timeout,
        )
        .await?;
        instances.into_iter().next().ok_or_else(|| {
            ProbeError::new(
                FailureReason::Config,
                format!(
                    "the source instance {} does not exist in {}",
                    self.source.identifier, self.source.region
                ),
            )
        })
    }
}

/// One replica region's answers.
struct RegionAnswer {
    region: String,
    ids: Vec<String>,
    describe: Result<Vec<DbInstance>, ProbeError>,
    lag: Result<Vec<Option<Datapoint>>, ProbeError>,
}

impl Probe for RdsProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.measure())
    }
}

fn replica_ref(id_or_arn: &str, default_region: &str) -> ReplicaRef {
    ReplicaRef {
        region: region_of(id_or_arn, default_region).to_string(),
        identifier: identifier_of(id_or_arn).to_string(),
    }
}

/// `DescribeDBInstances` of some instances of one region, one call per
/// instance, at once. By identifier, not with a filter: IAM authorizes an
/// identified call against that instance's ARN, so the policy can name the
/// instances (a filtered call is authorized against every instance).
async fn describe_instances(
    clients: &AwsClients,
    ids: &[String],
    timeout: std::time::Duration,
) -> Result<Vec<DbInstance>, ProbeError> {
    let rds = clients.rds().await;
    let calls = ids.iter().map(|id| {
        clients.call_or_absent(
            "rds",
            "DescribeDBInstances",
            timeout,
            &["DBInstanceNotFound", "DBInstanceNotFoundFault"],
            rds.describe_db_instances()
                .db_instance_identifier(id)
                .send(),
        )
    });
    let mut instances = Vec::new();
    for answer in futures::future::join_all(calls).await {
        if let Some(output) = answer? {
            instances.extend(output.db_instances().iter().cloned());
        }
    }
    Ok(instances)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_replica_without_a_source_is_the_promoted_side() {
        let replica = DbInstance::builder()
            .db_instance_status("available")
            .read_replica_source_db_instance_identifier("erp-db")
            .build();
        let promoted = DbInstance::builder()
            .db_instance_status("available")
            .build();
        let stopped = DbInstance::builder().db_instance_status("stopped").build();
        assert!(!standalone(&replica));
        assert!(standalone(&promoted));
        assert!(source_writable(&promoted));
        assert!(!source_writable(&stopped));
        // Before: the source writes, the replica follows.
        let before = rds_roles(Some(true), &[standalone(&replica)]);
        assert_eq!(before.replica.writable, Some(false));
        assert!(!before.split_brain());
        // Promoted with the source stopped; then the source started again.
        let after = rds_roles(Some(false), &[true]);
        assert_eq!(after.replica.writable, Some(true));
        assert!(!after.split_brain());
        assert!(rds_roles(Some(true), &[false, true]).split_brain());
        // Nothing known of either side: nothing claimed.
        let unknown = rds_roles(None, &[]);
        assert_eq!(
            (unknown.primary.writable, unknown.replica.writable),
            (None, None)
        );
        assert!(!unknown.heartbeat_configured);
    }

    /// `evaluate` for an RDS for PostgreSQL pair over a 17-minute window.
    fn eval(
        replicas: &[(ReplicaRef, Option<ReplicaStatus>, Option<Datapoint>)],
    ) -> Result<(Option<SystemTime>, SystemTime, LinkState, Vec<Detail>), ProbeError> {
        evaluate(replicas, Some("postgres"), "erp-db", 17)
    }

    #[test]
    fn mysql_and_mariadb_replica_lag_never_proves_a_recovery_point() {
        // Seconds_Behind_Master reads 0 while the I/O thread is behind or
        // the link is stalled: a 0 lag on a fresh datapoint is no proof.
        let zero = [replica("a", "available", Some((120, 0.0)))];
        for engine in ["mysql", "mariadb"] {
            let err = evaluate(&zero, Some(engine), "erp-db", 17).unwrap_err();
            assert_eq!(err.reason, FailureReason::Config);
            assert!(
                err.message.contains(&format!("erp-db is RDS for {engine}"))
                    && err.message.contains("Seconds_Behind_Master")
                    && err.message.contains("`mysql` kind"),
                "{}",
                err.message
            );
        }
        let err = evaluate(&zero, Some("oracle-ee"), "erp-db", 17).unwrap_err();
        assert!(err.message.contains("`oracle-ee`"), "{}", err.message);
        let err = evaluate(&zero, None, "erp-db", 17).unwrap_err();
        assert!(err.message.contains("not known yet"), "{}", err.message);
        assert!(evaluate(&zero, Some("postgres"), "erp-db", 17).is_ok());
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn replica(
        id: &str,
        status: &str,
        dp: Option<(u64, f64)>,
    ) -> (ReplicaRef, Option<ReplicaStatus>, Option<Datapoint>) {
        (
            ReplicaRef {
                region: "eu-west-1".into(),
                identifier: id.into(),
            },
            Some(ReplicaStatus {
                status: status.into(),
                engine: Some("postgres".into()),
                replication: None,
            }),
            dp.map(|(t, v)| Datapoint {
                time: at(t),
                value: v,
            }),
        )
    }

    #[test]
    fn oldest_replica_sets_the_recovery_point() {
        let (rp, evidence, link, _) = eval(&[
            replica("a", "available", Some((120, 3.0))),
            replica("b", "available", Some((60, 10.0))),
        ])
        .unwrap();
        assert_eq!(rp, Some(at(50)));
        assert_eq!(evidence, at(60));
        assert_eq!(link, LinkState::Healthy);
    }

    #[test]
    fn a_missing_datapoint_is_never_zero_lag() {
        let err = eval(&[
            replica("a", "available", Some((120, 3.0))),
            replica("b", "available", None),
        ])
        .unwrap_err();
        assert_eq!(err.reason, FailureReason::Query);
        assert!(err.message.contains("b (eu-west-1)"), "{}", err.message);
    }

    #[test]
    fn replication_not_running_proves_nothing() {
        let (rp, _, link, _) = eval(&[replica("a", "available", Some((120, -1.0)))]).unwrap();
        assert_eq!(rp, None);
        assert!(matches!(link, LinkState::Unhealthy(why) if why.contains("not running")));
    }

    #[test]
    fn a_replica_not_available_is_unhealthy() {
        let (_, _, link, _) = eval(&[replica("a", "storage-full", Some((120, 1.0)))]).unwrap();
        assert!(matches!(link, LinkState::Unhealthy(why) if why.contains("storage-full")));
        let status = ReplicaStatus {
            status: "available".into(),
            engine: Some("mysql".into()),
            replication: Some(("error".into(), false, Some("IO thread stopped".into()))),
        };
        assert!(status.problem().unwrap().contains("IO thread stopped"));
    }
}
