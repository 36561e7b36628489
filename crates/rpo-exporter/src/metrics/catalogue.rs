//! Every `rpo_*` family the exporter publishes, as data.
//!
//! The core families (every target, every group, every probe, the
//! exporter's own) are declared here, once; each kind declares its detail
//! families at the top of its own file and lists them in its
//! `DETAIL_FAMILIES`, which [`crate::kinds::detail_families`] collects. The
//! exposition writes `# HELP`/`# TYPE` from these declarations, and the
//! tests hold the README's metrics tables, the alert rules and the
//! dashboards to [`all`].

use std::sync::OnceLock;

use crate::kinds::Kind;
use crate::metric_def::MetricDef;

// Every target.

pub static RECOVERY_POINT_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_recovery_point_timestamp_seconds",
    "The recovery point: the latest source time up to which every write is known to be on the replica.",
);
pub static EXPOSURE_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_exposure_seconds",
    "Now minus the recovery point, as of the last poll: what would be lost if the source vanished.",
);
pub static BUDGET_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_budget_seconds",
    "The configured recovery-point budget of the target.",
);
pub static STALE_AFTER_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_stale_after_seconds",
    "Evidence older than this is treated as unknown.",
);
pub static REPLICATION_HEALTHY: MetricDef = MetricDef::gauge(
    "rpo_replication_healthy",
    "1 when the last poll saw the replication link or status healthy; 0 when unhealthy or unknown.",
);
pub static EVIDENCE_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_evidence_timestamp_seconds",
    "Time of the newest evidence about the replica (a poll instant or a provider datapoint).",
);
pub static TARGET_READY: MetricDef = MetricDef::gauge(
    "rpo_target_ready",
    "1 when this target passes the planned failover gate.",
);
/// The unplanned gate per target (the source region gone), so that `check
/// --prometheus --mode unplanned` and the dashboards can name the targets
/// that block, as `rpo_target_ready` does for the planned gate.
pub static TARGET_READY_UNPLANNED: MetricDef = MetricDef::gauge(
    "rpo_target_ready_unplanned",
    "1 when this target passes the unplanned failover gate (GO with the source region gone).",
);
pub static BACKLOG_BYTES: MetricDef =
    MetricDef::gauge("rpo_backlog_bytes", "Bytes not yet applied on the replica.");
pub static BACKLOG_OPERATIONS: MetricDef = MetricDef::gauge(
    "rpo_backlog_operations",
    "Operations (messages, index operations) not yet on the replica or not yet processed.",
);
pub static CATCHUP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_catchup_seconds",
    "Estimated time to drain the backlog at the recent apply rate (+Inf when nothing is being applied).",
);
pub static SOURCE_REACHABLE: MetricDef = MetricDef::gauge(
    "rpo_source_reachable",
    "1 when the source side answered the last poll.",
);
pub static REPLICA_REACHABLE: MetricDef = MetricDef::gauge(
    "rpo_replica_reachable",
    "1 when the replica side answered the last poll.",
);
pub static HEARTBEAT_LAST_WRITE_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_heartbeat_last_write_timestamp_seconds",
    "When this exporter last wrote its heartbeat on the source.",
);
pub static HEARTBEAT_WRITE_FAILURES_TOTAL: MetricDef = MetricDef::counter(
    "rpo_heartbeat_write_failures_total",
    "Heartbeat writes on the source that failed.",
);
pub static REPLICATION_LINK_DOWN_TOTAL: MetricDef = MetricDef::counter(
    "rpo_replication_link_down_total",
    "Transitions of the replication link from healthy to unhealthy seen by polls (polls that could not tell are skipped), so a flapping link shows.",
);

// Pair kinds (`postgres`, `redis`): promotions followed (SPEC section 11).

pub static PROMOTED: MetricDef = MetricDef::gauge(
    "rpo_promoted",
    "1 once the configured replica accepts writes (it was promoted); 0 while it is a replica.",
);
pub static SPLIT_BRAIN: MetricDef = MetricDef::gauge(
    "rpo_split_brain",
    "1 when both sides of the pair accept writes (kept while a side cannot be reached: it may still take writes).",
);
pub static MEASURED_LOSS_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_measured_loss_seconds",
    "The loss the latest promotion took: the newest heartbeat the old primary acknowledged minus the newest one the promoted side held (this exporter's clock).",
);
pub static PREDICTED_EXPOSURE_AT_PROMOTION_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_predicted_exposure_at_promotion_seconds",
    "The exposure predicted by the last poll before the latest promotion (the known loss window when the source was already lost).",
);
pub static PROMOTION_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_promotion_timestamp_seconds",
    "When the latest promotion was first seen (it happened at or before this instant).",
);
pub static MEASURED_LOSS_BYTES: MetricDef = MetricDef::gauge(
    "rpo_measured_loss_bytes",
    "Replication-stream bytes the old primary had and the promoted side never got (Postgres WAL, Redis offset); a lower bound.",
);

// Every probe (one per target).

pub static PROBE_SUCCESS: MetricDef = MetricDef::gauge(
    "rpo_probe_success",
    "1 when the last poll of the target learned everything it asked for.",
);
pub static PROBE_DURATION_SECONDS: MetricDef =
    MetricDef::gauge("rpo_probe_duration_seconds", "How long the last poll took.");
pub static PROBE_LAST_SUCCESS_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_probe_last_success_timestamp_seconds",
    "When a poll of the target last succeeded completely.",
);
pub static PROBE_RUNS_TOTAL: MetricDef =
    MetricDef::counter("rpo_probe_runs_total", "Polls of the target attempted.");
pub static PROBE_FAILURES_TOTAL: MetricDef = MetricDef::counter(
    "rpo_probe_failures_total",
    "Polls that failed, whole or on one side, by reason.",
)
.with_labels(&["reason"]);

// Every group.

pub static FAILOVER_READY: MetricDef = MetricDef::gauge(
    "rpo_failover_ready",
    "1 when the group passes the planned failover gate (GO).",
)
.per_group();
pub static FAILOVER_READY_UNPLANNED: MetricDef = MetricDef::gauge(
    "rpo_failover_ready_unplanned",
    "1 when the group passes the unplanned failover gate (GO with the source region gone).",
)
.per_group();
pub static GROUP_EXPOSURE_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_group_exposure_seconds",
    "The largest exposure among the group's targets.",
)
.per_group();
pub static GROUP_RECOVERY_POINT_SKEW_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_group_recovery_point_skew_seconds",
    "Newest minus oldest recovery point across the group's targets.",
)
.per_group();
pub static GROUP_BUDGET_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_group_budget_seconds",
    "The configured recovery-point budget of the group.",
)
.per_group();

// The exporter itself.

pub static EXPORTER_BUILD_INFO: MetricDef = MetricDef::gauge(
    "rpo_exporter_build_info",
    "The exporter's version and git revision.",
)
.exporter_wide()
.with_labels(&["version", "revision"]);
/// Who this exporter is: when one Prometheus scrapes an exporter per region,
/// rules, dashboards and `check --prometheus` join on the scrape's
/// `job`/`instance` and read the region from here. `exporter_instance`,
/// not `instance`: Prometheus owns `instance` (the scrape target).
pub static EXPORTER_INFO: MetricDef = MetricDef::gauge(
    "rpo_exporter_info",
    "Always 1: this exporter's configured instance name and region (empty when not set).",
)
.exporter_wide()
.with_labels(&["exporter_instance", "region"]);
pub static AWS_API_REQUESTS_TOTAL: MetricDef = MetricDef::counter(
    "rpo_aws_api_requests_total",
    "HTTP requests sent to AWS APIs (retries included: what AWS bills), by service and operation.",
)
.exporter_wide()
.with_labels(&["service", "operation"]);
pub static AWS_API_ERRORS_TOTAL: MetricDef = MetricDef::counter(
    "rpo_aws_api_errors_total",
    "AWS API operations that failed after the SDK's retries, by service, operation and reason.",
)
.exporter_wide()
.with_labels(&["service", "operation", "reason"]);
pub static CLOUDWATCH_METRICS_REQUESTED_TOTAL: MetricDef = MetricDef::counter(
    "rpo_cloudwatch_metrics_requested_total",
    "CloudWatch metric queries sent in GetMetricData calls (CloudWatch bills per metric requested).",
)
.exporter_wide();

pub static CONFIG_LAST_RELOAD_SUCCESSFUL: MetricDef = MetricDef::gauge(
    "rpo_config_last_reload_successful",
    "1 when the last configuration reload (SIGHUP or POST /-/reload) succeeded; 0 when it was refused and the previous configuration is still running.",
)
.exporter_wide();
pub static CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_config_last_reload_success_timestamp_seconds",
    "When the configuration was last loaded successfully (at start or by a reload).",
)
.exporter_wide();
pub static SERVER_CONNECTIONS: MetricDef = MetricDef::gauge(
    "rpo_server_connections",
    "Connections the exporter keeps open to monitored Redis and PostgreSQL servers (one per server, settings and purpose, shared by the targets that name them).",
)
.exporter_wide();
pub static SERVER_MAX_CONNECTIONS: MetricDef = MetricDef::gauge(
    "rpo_server_max_connections",
    "The most connections to monitored servers the open-file limit allows after HTTP's share; a target that needs one more fails its poll (raise LimitNOFILE).",
)
.exporter_wide();

/// The families `metrics` renders itself (every kind's detail families
/// come from [`crate::kinds::detail_families`]).
pub static CORE: &[&MetricDef] = &[
    &RECOVERY_POINT_TIMESTAMP_SECONDS,
    &EXPOSURE_SECONDS,
    &BUDGET_SECONDS,
    &STALE_AFTER_SECONDS,
    &REPLICATION_HEALTHY,
    &EVIDENCE_TIMESTAMP_SECONDS,
    &TARGET_READY,
    &TARGET_READY_UNPLANNED,
    &BACKLOG_BYTES,
    &BACKLOG_OPERATIONS,
    &CATCHUP_SECONDS,
    &SOURCE_REACHABLE,
    &REPLICA_REACHABLE,
    &PROBE_SUCCESS,
    &PROBE_DURATION_SECONDS,
    &PROBE_LAST_SUCCESS_TIMESTAMP_SECONDS,
    &HEARTBEAT_LAST_WRITE_TIMESTAMP_SECONDS,
    &PROBE_RUNS_TOTAL,
    &PROBE_FAILURES_TOTAL,
    &HEARTBEAT_WRITE_FAILURES_TOTAL,
    &REPLICATION_LINK_DOWN_TOTAL,
    &PROMOTED,
    &SPLIT_BRAIN,
    &MEASURED_LOSS_SECONDS,
    &PREDICTED_EXPOSURE_AT_PROMOTION_SECONDS,
    &PROMOTION_TIMESTAMP_SECONDS,
    &MEASURED_LOSS_BYTES,
    &FAILOVER_READY,
    &FAILOVER_READY_UNPLANNED,
    &GROUP_EXPOSURE_SECONDS,
    &GROUP_RECOVERY_POINT_SKEW_SECONDS,
    &GROUP_BUDGET_SECONDS,
    &EXPORTER_BUILD_INFO,
    &EXPORTER_INFO,
    &AWS_API_REQUESTS_TOTAL,
    &AWS_API_ERRORS_TOTAL,
    &CLOUDWATCH_METRICS_REQUESTED_TOTAL,
    &CONFIG_LAST_RELOAD_SUCCESSFUL,
    &CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
    &SERVER_CONNECTIONS,
    &SERVER_MAX_CONNECTIONS,
];

/// Every family the exporter can publish: [`CORE`], then each kind's detail
/// families in kind order, each family once (a family several kinds
/// publish, such as `rpo_heartbeat_timestamp_seconds`, is one declaration).
pub fn all() -> &'static [&'static MetricDef] {
    static ALL: OnceLock<Vec<&'static MetricDef>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<&'static MetricDef> = CORE.to_vec();
        for (_, families) in crate::kinds::detail_families() {
            for &family in families {
                if !all.iter().any(|known| std::ptr::eq(*known, family)) {
                    all.push(family);
                }
            }
        }
        all
    })
}

/// The family called `name`, if the exporter publishes one.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    all().iter().copied().find(|family| family.name == name)
}

/// Whether `family` is this very declaration from the catalogue (not a
/// look-alike declared elsewhere).
pub fn is_catalogued(family: &MetricDef) -> bool {
    all().iter().any(|known| std::ptr::eq(*known, family))
}

/// The kinds that publish `family` as a detail series (none for a core
/// family).
pub fn kinds_publishing(family: &MetricDef) -> Vec<Kind> {
    crate::kinds::detail_families()
        .into_iter()
        .filter(|(_, families)| families.iter().any(|f| std::ptr::eq(*f, family)))
        .map(|(kind, _)| kind)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::metric_def::{MetricType, Scope};

    #[test]
    fn every_name_is_declared_once() {
        let mut seen = BTreeSet::new();
        for family in all() {
            assert!(seen.insert(family.name), "{} declared twice", family.name);
        }
        assert!(all().len() > 90, "{}", all().len());
    }

    #[test]
    fn names_follow_the_prometheus_conventions() {
        // The last word of a name says what its value counts or measures:
        // a base unit, a count of something, or a 0/1 state.
        const UNITS: &[&str] = &["seconds", "bytes", "ratio", "total", "info"];
        const COUNTS: &[&str] = &[
            "connections",
            "operations",
            "transactions",
            "messages",
            "entries",
            "consumers",
            "replicas",
            "standbys",
            "secondaries",
            "indices",
            "shards",
            "checkpoint",
            "unacknowledged",
            "ready",
        ];
        const STATES: &[&str] = &[
            "healthy",
            "reachable",
            "success",
            "up",
            "active",
            "paused",
            "recovery",
            "progress",
            "primary",
            "replica",
            "online",
            "syncing",
            "status",
            "available",
            "associated",
            "enabled",
            "running",
            // Fixed by SPEC section 11: `rpo_promoted`, `rpo_split_brain`.
            "promoted",
            "brain",
            // rpo_failover_ready_unplanned: the 0/1 verdict of the
            // unplanned gate (the name is fixed by SPEC section 9), and
            // rpo_target_ready_unplanned, its per-target twin.
            "unplanned",
            "successful",
        ];
        for family in all() {
            let name = family.name;
            assert!(name.starts_with("rpo_"), "{name}: prefix rpo_");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: snake case"
            );
            let counter = family.metric_type == MetricType::Counter;
            assert_eq!(
                name.ends_with("_total"),
                counter,
                "{name}: `_total` on counters and only on counters"
            );
            if name.contains("timestamp") {
                assert!(
                    name.ends_with("_timestamp_seconds"),
                    "{name}: a point in time is a `_timestamp_seconds`"
                );
            }
            for non_base in [
                "_ms", "_millis", "_minutes", "_hours", "_kb", "_mb", "_percent",
            ] {
                assert!(!name.contains(non_base), "{name}: base units only");
            }
            let last = name.rsplit('_').next().unwrap();
            assert!(
                UNITS.contains(&last) || COUNTS.contains(&last) || STATES.contains(&last),
                "{name}: end the name with its unit (or what it counts)"
            );
            assert!(
                family.help.ends_with('.') && !family.help.contains('\n'),
                "{name}: help"
            );
            for label in family.all_labels() {
                assert!(
                    label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{name}: label {label}"
                );
            }
        }
    }

    #[test]
    fn detail_families_are_per_target_and_listed_by_a_kind() {
        for (kind, families) in crate::kinds::detail_families() {
            for family in families {
                assert_eq!(family.scope, Scope::Target, "{kind}: {}", family.name);
                assert!(is_catalogued(family), "{kind}: {}", family.name);
                assert!(
                    !CORE.iter().any(|c| std::ptr::eq(*c, *family)),
                    "{kind}: {} is a core family",
                    family.name
                );
            }
        }
        // Shared families are declared once and listed by each publisher.
        let heartbeat = find("rpo_heartbeat_timestamp_seconds").unwrap();
        let names = |kinds: Vec<Kind>| kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>();
        assert_eq!(
            names(kinds_publishing(heartbeat)),
            ["postgres", "mysql", "redis", "opensearch"]
        );
        let queued = find("rpo_queue_messages").unwrap();
        assert_eq!(
            names(kinds_publishing(queued)),
            ["rabbitmq", "sql_queue", "sqs"]
        );
        // Every kind that reads a server's clock publishes its offset.
        let clock = find("rpo_clock_offset_seconds").unwrap();
        assert_eq!(
            names(kinds_publishing(clock)),
            ["postgres", "redis", "redis_stream"]
        );
        assert_eq!(clock.labels, ["side"]);
    }

    #[test]
    fn a_look_alike_is_not_catalogued() {
        static LOOK_ALIKE: MetricDef = MetricDef::gauge(
            "rpo_exposure_seconds",
            "Now minus the recovery point, as of the last poll: what would be lost if the source vanished.",
        );
        assert_eq!(find("rpo_exposure_seconds"), Some(&EXPOSURE_SECONDS));
        assert!(is_catalogued(&EXPOSURE_SECONDS));
        assert!(!is_catalogued(&LOOK_ALIKE));
    }
}
