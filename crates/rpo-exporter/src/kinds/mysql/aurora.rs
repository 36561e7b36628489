//! Aurora MySQL at the SQL level: readers of one cluster and instances of a
//! global database's secondary clusters, which have no binlog replica
//! status (docs/kinds/aurora.md, "Aurora MySQL").
//!
//! Aurora MySQL describes itself in `information_schema` tables (Amazon
//! Aurora User Guide, "Aurora MySQL–specific information_schema tables",
//! AuroraMySQL.Reference.ISTables.html):
//! - `replica_host_status`: one row per instance of the cluster; the columns
//!   AWS documents are `SERVER_ID`, `SESSION_ID` (`MASTER_SESSION_ID` for
//!   the writer), `LAST_UPDATE_TIMESTAMP`, `REPLICA_LAG_IN_MILLISECONDS`,
//!   `IS_CURRENT`, `CPU`; "the remaining columns are for Aurora internal
//!   use only" — so no LSN of this table is read.
//! - `aurora_global_db_instance_status` (3.04.0+, global databases): one row
//!   per instance of every region, `SERVER_ID`, `SESSION_ID`, `AWS_REGION`,
//!   `DURABLE_LSN`, `HIGHEST_LSN_RCVD` (`HIGHEST_LSN_RECEIVED` in the
//!   guide's example output), `VISIBILITY_LAG_IN_MSEC`.
//! - `aurora_global_db_status` (3.04.0+): one row per region,
//!   `AWS_REGION`, `HIGHEST_LSN_WRITTEN`, `DURABILITY_LAG_IN_MILLISECONDS`,
//!   `RPO_LAG_IN_MILLISECONDS`, `LAST_LAG_CALCULATION_TIMESTAMP`
//!   (`1970-01-01 00:00:00` on the primary cluster, whose lags are 0).
//!
//! The rule is the `postgres` kind's for Aurora PostgreSQL (SPEC section
//! 10): lag figures are shown, never proof. A global secondary's durable
//! LSN is dated by the writer's `DURABLE_LSN` sampled on this exporter's
//! clock; a reader of one cluster has no documented position, so only the
//! heartbeat proves its recovery point.
//!
//! Where the tables are looked up: `information_schema` first (the real
//! ones); only when the server answers that `information_schema` has no
//! such table (not Aurora) the same table name is tried in the URL's
//! database. That is the seam the lab tests use (a real MariaDB pair with
//! views of the documented shape), and it is never configurable: an Aurora
//! server always answers from `information_schema`.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::drivers::mysql::{codes, rows_by_name, server_code};
use crate::evidence::aurora_global::{
    AuroraGlobalCluster, AuroraGlobalInstance, AuroraGlobalSecondary,
};

/// `ER_UNKNOWN_TABLE`: "Unknown table 'x' in information_schema".
const UNKNOWN_TABLE: u16 = 1109;
/// `ER_NO_DB_ERROR`: no database selected (the URL names none).
const NO_DB_SELECTED: u16 = 1046;
/// `ER_SP_DOES_NOT_EXIST`.
const SP_DOES_NOT_EXIST: u16 = 1305;

pub const WRITER_SESSION: &str = "MASTER_SESSION_ID";

/// A row with upper-case column names.
type Upper = BTreeMap<String, Option<String>>;

fn upper(rows: &[Row]) -> Vec<Upper> {
    rows_by_name(rows)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), v))
                .collect()
        })
        .collect()
}

fn text<'a>(row: &'a Upper, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| row.get(*n))
        .and_then(|v| v.as_deref())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn float(row: &Upper, names: &[&str]) -> Option<f64> {
    text(row, names)
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// An LSN as the tables show it (`bigint unsigned`); 0 means none (the
/// writer's `HIGHEST_LSN_RECEIVED` in the guide's example).
fn lsn(row: &Upper, names: &[&str]) -> Option<u64> {
    text(row, names)
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|v| *v > 0)
}

fn absent(code: Option<u16>) -> bool {
    matches!(
        code,
        Some(UNKNOWN_TABLE) | Some(codes::NO_SUCH_TABLE) | Some(NO_DB_SELECTED)
    )
}

/// `SELECT * FROM <table><tail>`: from `information_schema`, else (only
/// when that has no such table) from the URL's database; `None` when
/// neither has it.
async fn select(
    conn: &mut Conn,
    table: &str,
    tail: &str,
) -> Result<Option<Vec<Upper>>, mysql_async::Error> {
    match conn
        .query::<Row, _>(format!("SELECT * FROM information_schema.{table}{tail}"))
        .await
    {
        Ok(rows) => return Ok(Some(upper(&rows))),
        Err(e) if absent(server_code(&e)) => {}
        Err(e) => return Err(e),
    }
    match conn
        .query::<Row, _>(format!("SELECT * FROM {table}{tail}"))
        .await
    {
        Ok(rows) => Ok(Some(upper(&rows))),
        Err(e) if absent(server_code(&e)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// This instance's identifier: `@@aurora_server_id` (what AWS's own
/// drivers read, aws-advanced-jdbc-wrapper / aws-advanced-go-wrapper,
/// `AuroraMySQLDialect`); elsewhere a function `aurora_server_id()` of the
/// URL's database (the lab's stand-in); `None` when neither exists.
async fn instance_id(conn: &mut Conn) -> Result<Option<String>, mysql_async::Error> {
    match conn
        .query_first::<Option<String>, _>("SELECT @@aurora_server_id")
        .await
    {
        Ok(id) => return Ok(id.flatten()),
        Err(e) if server_code(&e) == Some(codes::UNKNOWN_SYSTEM_VARIABLE) => {}
        Err(e) => return Err(e),
    }
    match conn
        .query_first::<Option<String>, _>("SELECT aurora_server_id()")
        .await
    {
        Ok(id) => Ok(id.flatten()),
        Err(e)
            if matches!(
                server_code(&e),
                Some(SP_DOES_NOT_EXIST) | Some(NO_DB_SELECTED)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What an Aurora MySQL instance without binlog replica status said.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraReplica {
    /// `@@aurora_server_id`.
    pub instance: String,
    /// `innodb_read_only` (or `read_only`) is on: a reader.
    pub read_only: bool,
    /// This instance's row in `replica_host_status`, if any.
    pub host_row: Option<HostRow>,
    /// Set when this instance is in a secondary region of a global
    /// database.
    pub global: Option<AuroraGlobalSecondary>,
}

/// One row of `replica_host_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub writer: bool,
    pub lag_ms: Option<f64>,
}

impl AuroraReplica {
    /// Reads Aurora's tables on a server that showed no replica status;
    /// `None` when it is not Aurora (no identifier, or none of the tables).
    pub async fn observe(
        conn: &mut Conn,
        read_only: bool,
    ) -> Result<Option<AuroraReplica>, mysql_async::Error> {
        let Some(instance) = instance_id(conn).await? else {
            return Ok(None);
        };
        let hosts = select(conn, "replica_host_status", "").await?;
        let instances = select(conn, "aurora_global_db_instance_status", "").await?;
        let clusters = select(conn, "aurora_global_db_status", "").await?;
        if hosts.is_none() && instances.is_none() {
            return Ok(None);
        }
        let host_row = hosts.as_deref().unwrap_or(&[]).iter().find_map(|row| {
            (text(row, &["SERVER_ID"]) == Some(instance.as_str())).then(|| HostRow {
                writer: text(row, &["SESSION_ID"]) == Some(WRITER_SESSION),
                lag_ms: float(row, &["REPLICA_LAG_IN_MILLISECONDS"]),
            })
        });
        let global = match (instances, clusters) {
            (Some(instances), Some(clusters)) => {
                let instances: Vec<AuroraGlobalInstance> = instances
                    .iter()
                    .filter_map(|row| {
                        Some(AuroraGlobalInstance {
                            server_id: text(row, &["SERVER_ID"])?.to_string(),
                            session_id: text(row, &["SESSION_ID"]).unwrap_or("").to_string(),
                            region: text(row, &["AWS_REGION"])?.to_string(),
                            durable_lsn: lsn(row, &["DURABLE_LSN"]),
                            highest_lsn_rcvd: lsn(
                                row,
                                &["HIGHEST_LSN_RCVD", "HIGHEST_LSN_RECEIVED"],
                            ),
                            visibility_lag_ms: float(row, &["VISIBILITY_LAG_IN_MSEC"]),
                        })
                    })
                    .collect();
                let clusters: Vec<AuroraGlobalCluster> = clusters
                    .iter()
                    .filter_map(|row| {
                        // The primary cluster: its calculation time is the
                        // epoch and its lags read 0 (MySQL), where Aurora
                        // PostgreSQL says -1; the shared rule reads -1.
                        let primary = text(row, &["LAST_LAG_CALCULATION_TIMESTAMP"])
                            .is_some_and(|t| t.starts_with("1970-01-01"));
                        let lag = |names: &[&str]| {
                            if primary {
                                Some(-1.0)
                            } else {
                                float(row, names)
                            }
                        };
                        Some(AuroraGlobalCluster {
                            region: text(row, &["AWS_REGION"])?.to_string(),
                            highest_lsn_written: lsn(row, &["HIGHEST_LSN_WRITTEN"]),
                            durability_lag_ms: lag(&["DURABILITY_LAG_IN_MILLISECONDS"]),
                            rpo_lag_ms: lag(&["RPO_LAG_IN_MILLISECONDS"]),
                            last_lag_calculation: None,
                        })
                    })
                    .collect();
                AuroraGlobalSecondary::from_rows(&instance, &instances, &clusters)
            }
            _ => None,
        };
        Ok(Some(AuroraReplica {
            instance,
            read_only,
            host_row,
            global,
        }))
    }

    /// Why this instance proves nothing by itself, if it does not: the
    /// link state of an Aurora replica (see docs/kinds/aurora.md).
    pub fn link_problem(&self, heartbeat: bool) -> Option<(bool, String)> {
        let name = &self.instance;
        if !self.read_only {
            return Some((
                true,
                format!("the Aurora instance {name} is not a reader (innodb_read_only is off: the writer, promoted, or detached from the global database)"),
            ));
        }
        if let Some(global) = &self.global {
            if global.durable_lsn.is_none() {
                return Some((
                    false,
                    format!(
                        "the Aurora global database tables give no DURABLE_LSN for {name} ({})",
                        global.regions.join(", ")
                    ),
                ));
            }
            return None;
        }
        match &self.host_row {
            None => Some((
                false,
                format!("information_schema.replica_host_status has no row for the Aurora instance {name}"),
            )),
            Some(row) if row.writer => Some((
                true,
                format!("the Aurora instance {name} is its cluster's writer (MASTER_SESSION_ID), not a reader"),
            )),
            Some(_) if !heartbeat => Some((
                false,
                format!("the Aurora reader {name} publishes no position, and REPLICA_LAG_IN_MILLISECONDS is not proof; configure `heartbeat` for this target"),
            )),
            Some(_) => None,
        }
    }
}

/// The writer's own `DURABLE_LSN` (its `MASTER_SESSION_ID` row of
/// `aurora_global_db_instance_status`); `None` where there is none (not a
/// global database, not Aurora).
pub async fn writer_durable_lsn(conn: &mut Conn) -> Result<Option<u64>, mysql_async::Error> {
    let rows = select(
        conn,
        "aurora_global_db_instance_status",
        " WHERE SESSION_ID = 'MASTER_SESSION_ID'",
    )
    .await?;
    Ok(rows
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find_map(|row| lsn(row, &["DURABLE_LSN"])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Upper {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn lsns_of_zero_are_none_and_both_spellings_of_highest_lsn_are_read() {
        // The guide's example: the writer's HIGHEST_LSN_RECEIVED is 0.
        let writer = row(&[("DURABLE_LSN", "183537698"), ("HIGHEST_LSN_RECEIVED", "0")]);
        assert_eq!(lsn(&writer, &["DURABLE_LSN"]), Some(183537698));
        assert_eq!(
            lsn(&writer, &["HIGHEST_LSN_RCVD", "HIGHEST_LSN_RECEIVED"]),
            None
        );
        let reader = row(&[("HIGHEST_LSN_RCVD", "183537692")]);
        assert_eq!(
            lsn(&reader, &["HIGHEST_LSN_RCVD", "HIGHEST_LSN_RECEIVED"]),
            Some(183537692)
        );
    }

    #[test]
    fn a_reader_without_heartbeat_proves_nothing_and_a_writer_is_unhealthy() {
        let mut replica = AuroraReplica {
            instance: "erp-r1".into(),
            read_only: true,
            host_row: Some(HostRow {
                writer: false,
                lag_ms: Some(0.0),
            }),
            global: None,
        };
        assert_eq!(replica.link_problem(true), None);
        let (unhealthy, why) = replica.link_problem(false).unwrap();
        assert!(!unhealthy && why.contains("configure `heartbeat`"), "{why}");
        replica.read_only = false;
        assert!(replica.link_problem(true).unwrap().0);
    }
}
