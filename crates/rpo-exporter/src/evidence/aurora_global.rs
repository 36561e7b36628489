//! Aurora global databases as their SQL functions describe them, for the
//! kinds that read them (`postgres`: `aurora_global_db_instance_status()`
//! and `aurora_global_db_status()`; `mysql`: the `information_schema`
//! tables of the same names). The rows are engine-neutral; which of them is
//! proof is decided here once: the secondary's durable position (the least
//! of its rows' `durable_lsn` and its cluster's `highest_lsn_written`), to
//! be dated by the writer's durable LSN sampled on this exporter's clock.
//! The lag figures are a server's arithmetic on its own clock and are shown,
//! never proof (SPEC section 10). See docs/kinds/aurora.md.

use std::time::SystemTime;

/// One row of `aurora_global_db_instance_status()`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraGlobalInstance {
    pub server_id: String,
    pub session_id: String,
    pub region: String,
    pub durable_lsn: Option<u64>,
    pub highest_lsn_rcvd: Option<u64>,
    pub visibility_lag_ms: Option<f64>,
}

/// One row of `aurora_global_db_status()`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraGlobalCluster {
    pub region: String,
    pub highest_lsn_written: Option<u64>,
    pub durability_lag_ms: Option<f64>,
    pub rpo_lag_ms: Option<f64>,
    /// `last_lag_calculation_time` (a server's clock); the epoch on the
    /// primary cluster's row.
    pub last_lag_calculation: Option<SystemTime>,
}

/// What an Aurora global database secondary instance said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraGlobalSecondary {
    /// `aurora_db_instance_identifier()`.
    pub instance: String,
    /// The secondary region(s) rows of this instance's name are in.
    pub regions: Vec<String>,
    /// The writer's region (its `MASTER_SESSION_ID` row, or the cluster
    /// row with lag -1); `None` when neither is shown.
    pub writer_region: Option<String>,
    /// What the secondary holds durably: the least of this instance's
    /// `durable_lsn` and its cluster's `highest_lsn_written`.
    pub durable_lsn: Option<u64>,
    pub highest_lsn_rcvd: Option<u64>,
    pub visibility_lag_ms: Option<f64>,
    pub rpo_lag_ms: Option<f64>,
    pub durability_lag_ms: Option<f64>,
    pub last_lag_calculation: Option<SystemTime>,
}

/// The smaller of two optional values, either when one is missing.
fn least<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The larger of two optional values, either when one is missing.
fn most<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl AuroraGlobalSecondary {
    /// This instance as a global database secondary, from the functions'
    /// rows; `None` when it is not one: not a global database (fewer than
    /// two regions), or every row of this instance is in the writer's
    /// region (a reader of the primary cluster: `aurora_replica_status()`
    /// describes it).
    pub fn from_rows(
        instance: &str,
        instances: &[AuroraGlobalInstance],
        clusters: &[AuroraGlobalCluster],
    ) -> Option<AuroraGlobalSecondary> {
        let mut regions: Vec<&str> = clusters.iter().map(|c| c.region.as_str()).collect();
        regions.extend(instances.iter().map(|i| i.region.as_str()));
        regions.sort_unstable();
        regions.dedup();
        if regions.len() < 2 {
            return None;
        }
        let writer_region = instances
            .iter()
            .find(|i| i.session_id == "MASTER_SESSION_ID")
            .map(|i| i.region.clone())
            .or_else(|| {
                clusters
                    .iter()
                    .find(|c| c.durability_lag_ms == Some(-1.0) || c.rpo_lag_ms == Some(-1.0))
                    .map(|c| c.region.clone())
            });
        let mine: Vec<&AuroraGlobalInstance> = instances
            .iter()
            .filter(|i| i.server_id == instance && i.session_id != "MASTER_SESSION_ID")
            .filter(|i| writer_region.as_deref() != Some(i.region.as_str()))
            .collect();
        if mine.is_empty() && instances.iter().any(|i| i.server_id == instance) {
            // Only rows in the writer's region (or the writer itself).
            return None;
        }
        let mut out = AuroraGlobalSecondary {
            instance: instance.to_string(),
            regions: Vec::new(),
            writer_region,
            durable_lsn: None,
            highest_lsn_rcvd: None,
            visibility_lag_ms: None,
            rpo_lag_ms: None,
            durability_lag_ms: None,
            last_lag_calculation: None,
        };
        // A row without a value makes the whole figure unknown: the worst
        // of the rows is taken, and a missing one may be the worst.
        let mut durable_complete = true;
        for row in &mine {
            if !out.regions.contains(&row.region) {
                out.regions.push(row.region.clone());
            }
            durable_complete &= row.durable_lsn.is_some();
            out.durable_lsn = least(out.durable_lsn, row.durable_lsn);
            out.highest_lsn_rcvd = least(out.highest_lsn_rcvd, row.highest_lsn_rcvd);
            out.visibility_lag_ms = most(out.visibility_lag_ms, row.visibility_lag_ms);
        }
        for cluster in clusters.iter().filter(|c| out.regions.contains(&c.region)) {
            durable_complete &= cluster.highest_lsn_written.is_some();
            out.durable_lsn = least(out.durable_lsn, cluster.highest_lsn_written);
            out.rpo_lag_ms = most(out.rpo_lag_ms, cluster.rpo_lag_ms);
            out.durability_lag_ms = most(out.durability_lag_ms, cluster.durability_lag_ms);
            out.last_lag_calculation =
                least(out.last_lag_calculation, cluster.last_lag_calculation);
        }
        if !durable_complete {
            out.durable_lsn = None;
        }
        Some(out)
    }
}
