//! The `mysql` kind: a MySQL 8 or MariaDB 10.x source and a binlog replica
//! (self-managed, or RDS / Aurora MySQL endpoints with binlog replication).
//!
//! Evidence, best first (the same rules as `postgres`):
//! 1. The heartbeat canary: a row this exporter instance writes on the
//!    primary every `heartbeat.interval` with its own clock, read back on the
//!    replica. One clock writes and reads, so no clock skew enters.
//! 2. Engine positions: the primary's position (GTID set, or binary log
//!    file and offset) is sampled with this exporter's clock on every poll;
//!    once the replica has *executed* past a sampled position, every write
//!    made before that sample is on the replica
//!    ([`crate::evidence::positions`]). When it holds what the primary had
//!    just before we asked, the recovery point is that instant, so an idle
//!    source is not lag. Positions prove anything only while both replica
//!    threads run and the I/O thread is connected: a stopped or stalled
//!    link freezes the recovery point instead of reading as zero lag.
//!
//! `Seconds_Behind_Master` (what RDS publishes as `ReplicaLag`) is exported
//! as the engine's own figure and never used as proof: it reads 0 while the
//! I/O thread is behind or stalled. No server timestamp moves the recovery
//! point (SPEC section 10).
//!
//! Roles are detected on every poll (SPEC section 11,
//! [`crate::evidence::promotion`]): a server accepts writes when
//! `read_only`, `innodb_read_only` (and MySQL's `super_read_only`) are off
//! and no replica thread runs on it. The heartbeat goes to the side seen alone accepting writes,
//! so a promotion's loss is measured and, after a failback, the other
//! direction is measured without a config change.
//!
//! Connections are kept between polls and re-established after a failure
//! on the next poll (no backoff: a side that is back is seen at once). Each
//! side gets half of the poll's timeout, so a hung primary never hides what
//! the replica shows, and vice versa.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde::Deserialize;

pub mod aurora;

use self::aurora::AuroraReplica;
use super::{KindDef, KindSpec};
use crate::config::{is_sql_table_name, ConfigError, Secret, Target, TargetKeys};
use crate::drivers::mysql::{
    check_url, classify, codes, connect_opts, rows_by_name, server_code, Connection, Flavor,
};
use crate::drivers::within;
use crate::evidence::clock::Stamp;
use crate::evidence::heartbeat::HeartbeatLog;
use crate::evidence::positions::{ApplyRate, Position, SourceSamples};
use crate::evidence::promotion::{ConfiguredSide, Direction, PairRoles, SideSeen, WriterSide};
use crate::metric_def::MetricDef;
use crate::probe::{
    from_unix_seconds, unix_seconds, Detail, FailureReason, HeartbeatWriter, LinkState,
    Measurement, Probe, ProbeContext, ProbeError, Side, HEARTBEAT_TIMESTAMP_SECONDS,
};

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("mysql", parse, DETAIL_FAMILIES);

/// The heartbeat table's default name.
pub const DEFAULT_HEARTBEAT_TABLE: &str = "rpo_heartbeat";

#[derive(Debug, Clone)]
pub struct MysqlTarget {
    pub primary_url: Secret,
    pub replica_url: Secret,
    pub heartbeat: Option<MysqlHeartbeat>,
    /// Extra CA certificates (PEM) trusted for TLS, e.g. the RDS bundle.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct MysqlHeartbeat {
    pub interval: Duration,
    /// `table` (in the URL's database) or `database.table`.
    pub table: String,
    /// Create the table on the primary when it is missing.
    pub create_table: bool,
}

/// The keys of a `[[mysql]]` table besides the common ones and the URLs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    heartbeat: Option<RawHeartbeat>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interval: Option<String>,
    table: Option<String>,
    create_table: Option<bool>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let primary_url = keys.secret("primary_url")?;
    let replica_url = keys.secret("replica_url")?;
    let raw: RawMysql = keys.take()?;
    let primary = check_url(keys, "primary_url", &primary_url)?;
    let replica = check_url(keys, "replica_url", &replica_url)?;
    let heartbeat = match raw.heartbeat {
        None => None,
        Some(hb) => {
            let interval = keys.duration(
                "heartbeat.interval",
                hb.interval.as_deref(),
                Duration::from_secs(1),
            )?;
            let table = hb
                .table
                .unwrap_or_else(|| DEFAULT_HEARTBEAT_TABLE.to_string());
            if !is_sql_table_name(&table) {
                return Err(keys.invalid(
                    "heartbeat.table",
                    format!("`{table}` is not a plain table name; use lower-case letters, digits and '_' (optionally \"database.table\")"),
                ));
            }
            if !table.contains('.') {
                for (key, facts) in [("primary_url", &primary), ("replica_url", &replica)] {
                    if facts.database.is_none() {
                        return Err(keys.invalid(
                            "heartbeat.table",
                            format!("`{table}` names no database and {} does not name one either; write heartbeat.table = \"rpo.{table}\" or end the URL with /rpo", keys.key(key)),
                        ));
                    }
                }
            }
            Some(MysqlHeartbeat {
                interval,
                table,
                create_table: hb.create_table.unwrap_or(true),
            })
        }
    };
    if raw.tls_ca_file.is_some() && !primary.tls && !replica.tls {
        return Err(keys.invalid(
            "tls_ca_file",
            "is set but no URL uses TLS; add ?require_ssl=true to the URLs to use it",
        ));
    }
    keys.readable_file("tls_ca_file", raw.tls_ca_file.as_deref())?;
    Ok(Arc::new(MysqlTarget {
        primary_url,
        replica_url,
        heartbeat,
        tls_ca_file: raw.tls_ca_file,
    }))
}

impl KindSpec for MysqlTarget {
    fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat.as_ref().map(|hb| hb.interval)
    }

    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        let instance = context.instance.as_str();
        let log = context.heartbeat_log(&target.name);
        Ok(Box::new(MysqlProbe::new(target, self, instance, log)?))
    }

    fn reports_roles(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// Detail series, declared once (see `metric_def`).

pub static IO_THREAD_RUNNING: MetricDef = MetricDef::gauge(
    "rpo_mysql_io_thread_running",
    "1 when the replica's I/O (receiver) thread runs and is connected to the source (Replica_IO_Running = Yes).",
);
pub static SQL_THREAD_RUNNING: MetricDef = MetricDef::gauge(
    "rpo_mysql_sql_thread_running",
    "1 when the replica's SQL (applier) thread runs (Replica_SQL_Running = Yes).",
);
pub static ENGINE_REPORTED_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_mysql_engine_reported_lag_seconds",
    "The engine's own Seconds_Behind_Source/Master (RDS ReplicaLag): 0 while the I/O thread is behind or stalled, so never proof; absent when NULL.",
);
pub static RECEIVED_LAG_BYTES: MetricDef = MetricDef::gauge(
    "rpo_mysql_received_lag_bytes",
    "Binary log written on the source but not yet received by the replica's I/O thread (where the files' sizes are known).",
);
pub static EXECUTED_LAG_BYTES: MetricDef = MetricDef::gauge(
    "rpo_mysql_executed_lag_bytes",
    "Binary log written on the source but not yet executed by the replica's SQL thread (where the files' sizes are known).",
);
pub static RECEIVED_LAG_TRANSACTIONS: MetricDef = MetricDef::gauge(
    "rpo_mysql_received_lag_transactions",
    "Transactions (GTIDs) executed on the source but not yet received by the replica.",
);
pub static EXECUTED_LAG_TRANSACTIONS: MetricDef = MetricDef::gauge(
    "rpo_mysql_executed_lag_transactions",
    "Transactions (GTIDs) executed on the source but not yet executed on the replica.",
);
pub static RELAY_LOG_SPACE_BYTES: MetricDef = MetricDef::gauge(
    "rpo_mysql_relay_log_space_bytes",
    "Total size of the replica's relay logs (Relay_Log_Space).",
);
pub static AURORA_REPLICA_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_mysql_aurora_replica_lag_seconds",
    "Aurora MySQL reader: REPLICA_LAG_IN_MILLISECONDS of its row in information_schema.replica_host_status, in seconds; shown, never proof.",
);
pub static AURORA_RPO_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_mysql_aurora_rpo_lag_seconds",
    "Aurora MySQL global database secondary: RPO_LAG_IN_MILLISECONDS of its region (information_schema.aurora_global_db_status), in seconds; shown, never proof.",
);
pub static AURORA_DURABILITY_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_mysql_aurora_durability_lag_seconds",
    "Aurora MySQL global database secondary: DURABILITY_LAG_IN_MILLISECONDS of its region, in seconds; shown, never proof.",
);
pub static AURORA_VISIBILITY_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_mysql_aurora_visibility_lag_seconds",
    "Aurora MySQL global database secondary: VISIBILITY_LAG_IN_MSEC of this instance (information_schema.aurora_global_db_instance_status), in seconds; shown, never proof.",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &IO_THREAD_RUNNING,
    &SQL_THREAD_RUNNING,
    &ENGINE_REPORTED_LAG_SECONDS,
    &RECEIVED_LAG_BYTES,
    &EXECUTED_LAG_BYTES,
    &RECEIVED_LAG_TRANSACTIONS,
    &EXECUTED_LAG_TRANSACTIONS,
    &RELAY_LOG_SPACE_BYTES,
    &AURORA_REPLICA_LAG_SECONDS,
    &AURORA_RPO_LAG_SECONDS,
    &AURORA_DURABILITY_LAG_SECONDS,
    &AURORA_VISIBILITY_LAG_SECONDS,
    &HEARTBEAT_TIMESTAMP_SECONDS,
];

// ---------------------------------------------------------------------------
// Positions: binary log coordinates and GTID states.

/// A place in the source's binary log: file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogCoordinates {
    pub file: String,
    pub position: u64,
}

impl BinlogCoordinates {
    /// `mysql-bin.000042` as (`mysql-bin`, 42).
    fn series(&self) -> Option<(&str, u64)> {
        let (base, index) = self.file.rsplit_once('.')?;
        Some((base, index.parse().ok()?))
    }

    /// The order of two coordinates of the same log (same base name);
    /// `None` when they belong to different logs.
    pub fn compare(&self, other: &BinlogCoordinates) -> Option<Ordering> {
        let (base, index) = self.series()?;
        let (other_base, other_index) = other.series()?;
        (base == other_base).then(|| (index, self.position).cmp(&(other_index, other.position)))
    }
}

/// The source's binary log files and their sizes (`SHOW BINARY LOGS`), to
/// measure the bytes between coordinates in different files.
pub type BinlogSizes = BTreeMap<String, u64>;

/// Bytes of binary log from `from` up to `to`: 0 when `from` is at or past
/// `to`; `None` when they are in different logs, or in different files
/// whose sizes are not all known.
pub fn distance_bytes(
    from: &BinlogCoordinates,
    to: &BinlogCoordinates,
    sizes: Option<&BinlogSizes>,
) -> Option<u64> {
    match from.compare(to)? {
        Ordering::Greater | Ordering::Equal => return Some(0),
        Ordering::Less => {}
    }
    let (base, from_index) = from.series()?;
    let (_, to_index) = to.series()?;
    if from_index == to_index {
        return Some(to.position - from.position);
    }
    let sizes = sizes?;
    let mut total = to.position;
    for index in from_index..to_index {
        let size = sizes.iter().find_map(|(file, size)| {
            let c = BinlogCoordinates {
                file: file.clone(),
                position: 0,
            };
            (c.series() == Some((base, index))).then_some(*size)
        })?;
        total += if index == from_index {
            size.saturating_sub(from.position)
        } else {
            size
        };
    }
    Some(total)
}

/// A MySQL GTID set (`uuid:1-5:7,uuid2:tag:1-3`): per source (uuid, with
/// its tag since MySQL 8.3), merged inclusive intervals of transaction
/// numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<String, Vec<(u64, u64)>>);

impl GtidSet {
    pub fn parse(text: &str) -> Result<GtidSet, String> {
        let mut set = GtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut pieces = part.split(':');
            let uuid = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            if uuid.len() != 36 || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(format!("`{part}` does not start with a server UUID"));
            }
            let mut key = uuid.clone();
            for piece in pieces.map(str::trim) {
                if piece.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = piece.split_once('-').unwrap_or((piece, piece));
                    let (a, b) = match (a.parse::<u64>(), b.parse::<u64>()) {
                        (Ok(a), Ok(b)) if a <= b => (a, b),
                        _ => return Err(format!("`{piece}` is not a GTID interval")),
                    };
                    set.0.entry(key.clone()).or_default().push((a, b));
                } else if !piece.is_empty() {
                    key = format!("{uuid}:{}", piece.to_ascii_lowercase());
                }
            }
        }
        for intervals in set.0.values_mut() {
            intervals.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
            for &(a, b) in intervals.iter() {
                match merged.last_mut() {
                    Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            *intervals = merged;
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(Vec::is_empty)
    }

    /// Whether every transaction of `other` is in `self`.
    pub fn contains(&self, other: &GtidSet) -> bool {
        self.missing(other) == 0
    }

    /// How many transactions of `other` are not in `self`.
    pub fn missing(&self, other: &GtidSet) -> u64 {
        let mut missing = 0;
        for (key, intervals) in &other.0 {
            let mine = self.0.get(key).map(Vec::as_slice).unwrap_or(&[]);
            for &(a, b) in intervals {
                let covered: u64 = mine
                    .iter()
                    .map(|&(c, d)| {
                        let (lo, hi) = (a.max(c), b.min(d));
                        if lo <= hi {
                            hi - lo + 1
                        } else {
                            0
                        }
                    })
                    .sum();
                missing += (b - a + 1) - covered;
            }
        }
        missing
    }

    /// The union of two sets.
    pub fn union(&self, other: &GtidSet) -> GtidSet {
        let mut text = String::new();
        for set in [self, other] {
            for (key, intervals) in &set.0 {
                for (a, b) in intervals {
                    text.push_str(&format!("{key}:{a}-{b},"));
                }
            }
        }
        GtidSet::parse(&text).unwrap_or_default()
    }
}

/// A MariaDB GTID position (`0-1-42,1-2-7`: domain-server-sequence): the
/// newest sequence number per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPositions(BTreeMap<u32, u64>);

impl DomainPositions {
    pub fn parse(text: &str) -> Result<DomainPositions, String> {
        let mut positions = DomainPositions::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split('-').collect();
            let parsed = match fields.as_slice() {
                [domain, server, seq] => match (
                    domain.parse::<u32>(),
                    server.parse::<u32>(),
                    seq.parse::<u64>(),
                ) {
                    (Ok(d), Ok(_), Ok(s)) => Some((d, s)),
                    _ => None,
                },
                _ => None,
            };
            let (domain, seq) =
                parsed.ok_or_else(|| format!("`{part}` is not a domain-server-sequence GTID"))?;
            let entry = positions.0.entry(domain).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        Ok(positions)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many transactions of `other` `self` is behind, over all domains
    /// (sequence numbers grow by one per transaction within a domain).
    pub fn missing(&self, other: &DomainPositions) -> u64 {
        other
            .0
            .iter()
            .map(|(domain, seq)| seq.saturating_sub(self.0.get(domain).copied().unwrap_or(0)))
            .sum()
    }
}

/// The GTID state of a server, in its flavor's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidState {
    MySql(GtidSet),
    MariaDb(DomainPositions),
}

impl GtidState {
    pub fn parse(flavor: Flavor, text: &str) -> Result<GtidState, String> {
        Ok(match flavor {
            Flavor::MySql => GtidState::MySql(GtidSet::parse(text)?),
            Flavor::MariaDb => GtidState::MariaDb(DomainPositions::parse(text)?),
        })
    }

    fn is_empty(&self) -> bool {
        match self {
            GtidState::MySql(set) => set.is_empty(),
            GtidState::MariaDb(positions) => positions.is_empty(),
        }
    }

    /// Transactions of `other` not in `self`; `None` across flavors.
    pub fn missing(&self, other: &GtidState) -> Option<u64> {
        match (self, other) {
            (GtidState::MySql(a), GtidState::MySql(b)) => Some(a.missing(b)),
            (GtidState::MariaDb(a), GtidState::MariaDb(b)) => Some(a.missing(b)),
            _ => None,
        }
    }

    /// The union, for what a replica holds received or executed.
    fn union(&self, other: &GtidState) -> GtidState {
        match (self, other) {
            (GtidState::MySql(a), GtidState::MySql(b)) => GtidState::MySql(a.union(b)),
            (GtidState::MariaDb(a), GtidState::MariaDb(b)) => {
                let mut merged = a.clone();
                for (domain, seq) in &b.0 {
                    let entry = merged.0.entry(*domain).or_insert(*seq);
                    *entry = (*entry).max(*seq);
                }
                GtidState::MariaDb(merged)
            }
            _ => self.clone(),
        }
    }
}

/// The source's position at one poll: its identity, binary log
/// coordinates and (where enabled) GTID state.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePosition {
    pub server_id: u32,
    /// `None` on a server without a binary log (an Aurora MySQL writer of
    /// a global database, whose positions are its `DURABLE_LSN`).
    pub binlog: Option<BinlogCoordinates>,
    pub gtid: Option<GtidState>,
}

impl Position for SourcePosition {
    fn went_back_from(&self, earlier: &SourcePosition) -> bool {
        let binlog_back = match (&self.binlog, &earlier.binlog) {
            (Some(now), Some(before)) => now.compare(before).is_none_or(|o| o == Ordering::Less),
            (None, None) => false,
            _ => true,
        };
        let gtid_back = match (&self.gtid, &earlier.gtid) {
            (Some(now), Some(before)) => now.missing(before).is_none_or(|m| m > 0),
            _ => false,
        };
        self.server_id != earlier.server_id || binlog_back || gtid_back
    }
}

/// What a replica has executed, as comparable with source samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutedPosition {
    /// The server id of the source the replica replicates from (0/absent
    /// until its I/O thread first connected).
    pub source_server_id: Option<u32>,
    pub binlog: Option<BinlogCoordinates>,
    pub gtid: Option<GtidState>,
}

impl ExecutedPosition {
    /// Whether the replica has executed everything the source had at
    /// `sample`. GTIDs decide where both sides have them (they survive
    /// log rotation and intermediate servers); otherwise binary log
    /// coordinates, which compare only against the very server the replica
    /// replicates from.
    pub fn holds(&self, sample: &SourcePosition) -> bool {
        match (&sample.gtid, &self.gtid) {
            (Some(source), Some(replica)) if !source.is_empty() && !replica.is_empty() => {
                replica.missing(source) == Some(0)
            }
            _ => {
                self.source_server_id == Some(sample.server_id)
                    && self
                        .binlog
                        .as_ref()
                        .zip(sample.binlog.as_ref())
                        .and_then(|(b, s)| b.compare(s))
                        .is_some_and(|o| o != Ordering::Less)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Replica status (`SHOW REPLICA STATUS` / `SHOW SLAVE STATUS`).

/// One row of `SHOW REPLICA STATUS` (MySQL ≥ 8.0.22, MariaDB ≥ 10.5.1) or
/// `SHOW SLAVE STATUS`, read by column name: MySQL 8.0.22 renamed the
/// columns (`Slave_` → `Replica_`, `Master` → `Source`), MariaDB kept the
/// old names, and the column order differs between versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// `Yes`, `No` or `Connecting`.
    pub io_running: String,
    pub sql_running: String,
    pub io_state: Option<String>,
    pub last_io_error: Option<String>,
    pub last_sql_error: Option<String>,
    pub source_server_id: Option<u32>,
    /// Where the I/O thread has read up to (`Master_Log_File`,
    /// `Read_Master_Log_Pos`): received.
    pub received: Option<BinlogCoordinates>,
    /// Where the SQL thread has executed up to (`Relay_Master_Log_File`,
    /// `Exec_Master_Log_Pos`): executed.
    pub executed: Option<BinlogCoordinates>,
    pub relay_log_space: Option<u64>,
    /// The engine's own lag figure; `None` for NULL.
    pub seconds_behind: Option<u64>,
    /// MySQL `Retrieved_Gtid_Set`, or MariaDB `Gtid_IO_Pos` when the
    /// replica connects with GTIDs.
    pub retrieved_gtid: Option<String>,
    /// MySQL `Executed_Gtid_Set` (MariaDB: `@@gtid_slave_pos`, read apart).
    pub executed_gtid: Option<String>,
    /// MySQL `Channel_Name` / MariaDB `Connection_name`, if shown.
    pub channel: Option<String>,
    /// `retrieved_gtid` parsed in the server's flavor (set by the probe,
    /// which knows the flavor).
    pub received_gtid: Option<GtidState>,
}

/// A row of a `SHOW` statement: column name to text (NULL as `None`).
pub type StatusRow = BTreeMap<String, Option<String>>;

fn column<'a>(row: &'a StatusRow, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| row.get(*name))
        .and_then(|v| v.as_deref())
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn number<T: std::str::FromStr>(row: &StatusRow, names: &[&str]) -> Result<Option<T>, String> {
    match non_empty(column(row, names)) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{} is `{text}`, not a number", names[0])),
    }
}

impl ReplicaStatus {
    pub fn parse(row: &StatusRow) -> Result<ReplicaStatus, String> {
        let running = |names: &[&str]| {
            column(row, names)
                .map(|v| v.trim().to_string())
                .ok_or_else(|| format!("the replica status has no {} column", names.join("/")))
        };
        let coordinates = |file: &[&str], pos: &[&str]| -> Result<_, String> {
            Ok(
                match (non_empty(column(row, file)), number::<u64>(row, pos)?) {
                    (Some(file), Some(position)) => Some(BinlogCoordinates { file, position }),
                    _ => None,
                },
            )
        };
        let using_gtid = column(row, &["Using_Gtid"]).map(str::trim);
        let retrieved_gtid = match using_gtid {
            // MariaDB: Gtid_IO_Pos is only kept while connecting by GTID.
            Some(using) if using.eq_ignore_ascii_case("no") => None,
            Some(_) => non_empty(column(row, &["Gtid_IO_Pos"])),
            None => non_empty(column(row, &["Retrieved_Gtid_Set"])),
        };
        Ok(ReplicaStatus {
            io_running: running(&["Replica_IO_Running", "Slave_IO_Running"])?,
            sql_running: running(&["Replica_SQL_Running", "Slave_SQL_Running"])?,
            io_state: non_empty(column(row, &["Replica_IO_State", "Slave_IO_State"])),
            last_io_error: non_empty(column(row, &["Last_IO_Error"])),
            last_sql_error: non_empty(column(row, &["Last_SQL_Error"])),
            source_server_id: number::<u32>(row, &["Source_Server_Id", "Master_Server_Id"])?
                .filter(|id| *id != 0),
            received: coordinates(
                &["Source_Log_File", "Master_Log_File"],
                &["Read_Source_Log_Pos", "Read_Master_Log_Pos"],
            )?,
            executed: coordinates(
                &["Relay_Source_Log_File", "Relay_Master_Log_File"],
                &["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"],
            )?,
            relay_log_space: number(row, &["Relay_Log_Space"])?,
            seconds_behind: number(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"])?,
            retrieved_gtid,
            executed_gtid: non_empty(column(row, &["Executed_Gtid_Set"])),
            channel: non_empty(column(row, &["Channel_Name", "Connection_name"])),
            received_gtid: None,
        })
    }

    fn io_running(&self) -> bool {
        self.io_running.eq_ignore_ascii_case("yes")
    }

    fn sql_running(&self) -> bool {
        self.sql_running.eq_ignore_ascii_case("yes")
    }

    /// Whether this server is still following a source on this channel:
    /// the I/O thread runs (or keeps reconnecting: `Connecting`, as while
    /// its source is down) or the SQL thread runs. A server with a running
    /// replica thread is a replica, whatever its `read_only`.
    pub fn threads_running(&self) -> bool {
        self.io_running()
            || self.io_running.eq_ignore_ascii_case("connecting")
            || self.sql_running()
    }

    /// Why this replication stream is not working, in words; `None` when
    /// both threads run and the I/O thread is connected.
    pub fn unhealthy(&self) -> Option<String> {
        let mut why = Vec::new();
        if !self.io_running() {
            let state = if self.io_running.eq_ignore_ascii_case("connecting") {
                "I/O thread is not connected to the source (Connecting)"
            } else {
                "I/O thread stopped"
            };
            why.push(match &self.last_io_error {
                Some(error) => format!("{state}: {}", shorten(error)),
                None => state.to_string(),
            });
        }
        if !self.sql_running() {
            why.push(match &self.last_sql_error {
                Some(error) => format!("SQL thread stopped: {}", shorten(error)),
                None => "SQL thread stopped".to_string(),
            });
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// Keeps a server's error text short enough for a reason line.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Observations and the evidence they give.

/// What the primary said at one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryObservation {
    /// This exporter's clock just before the question was sent.
    pub observed_at: Stamp,
    pub position: SourcePosition,
    /// `SHOW BINARY LOGS`, when the grants allow it.
    pub binlog_sizes: Option<BinlogSizes>,
    /// An Aurora MySQL writer of a global database: its own `DURABLE_LSN`
    /// (`aurora_global_db_instance_status`, the `MASTER_SESSION_ID` row).
    pub aurora_durable_lsn: Option<u64>,
}

/// What the replica said at one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaObservation {
    pub observed_at: Stamp,
    /// One row per replication channel (usually one; none when the server
    /// is not a replica).
    pub statuses: Vec<ReplicaStatus>,
    /// What the replica has executed, as GTIDs: MySQL `Executed_Gtid_Set`,
    /// MariaDB `@@gtid_slave_pos` (updated by every replicated transaction,
    /// whether or not the replica connects by GTID).
    pub executed_gtid: Option<GtidState>,
    /// Set when the server shows no replica status and is an Aurora MySQL
    /// instance: what Aurora's own tables say (see `aurora`).
    pub aurora: Option<AuroraReplica>,
}

/// What the engine positions prove, from one pair of observations and the
/// history of primary positions.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvidence {
    pub recovery_point: Option<SystemTime>,
    pub link: LinkState,
    /// The replication stream the evidence is about.
    pub status: Option<ReplicaStatus>,
    pub received_lag_bytes: Option<f64>,
    pub executed_lag_bytes: Option<f64>,
    pub received_lag_transactions: Option<f64>,
    pub executed_lag_transactions: Option<f64>,
    /// Bytes not yet executed: the executed lag, or (primary unknown) what
    /// was received but not executed.
    pub backlog_bytes: Option<f64>,
    pub catchup_seconds: Option<f64>,
}

/// Positions remembered between polls: primary samples (to date the
/// replica's executed position on our clock) and the replica's executed
/// bytes (for the apply rate). The rule itself is
/// [`crate::evidence::positions`].
#[derive(Debug, Default)]
pub struct PositionHistory {
    primary: SourceSamples<SourcePosition>,
    /// The newest `SHOW BINARY LOGS` (sizes of closed files do not change).
    sizes: Option<BinlogSizes>,
    last_executed: Option<BinlogCoordinates>,
    executed_bytes: u64,
    apply: ApplyRate,
    /// An Aurora writer's `DURABLE_LSN` samples, which date a global
    /// secondary's durable LSN.
    aurora_writer: SourceSamples<u64>,
}

impl PositionHistory {
    pub fn record_primary(&mut self, observation: &PrimaryObservation) {
        self.primary
            .record(observation.observed_at, observation.position.clone());
        if observation.binlog_sizes.is_some() {
            self.sizes = observation.binlog_sizes.clone();
        }
        if let Some(lsn) = observation.aurora_durable_lsn {
            self.aurora_writer.record(observation.observed_at, lsn);
        }
    }

    /// The evidence of an Aurora MySQL replica (no binlog replica status):
    /// a global secondary's durable LSN dated by the writer's samples; a
    /// reader of one cluster proves nothing by itself (the heartbeat does).
    pub fn aurora_evidence(
        &self,
        aurora: &AuroraReplica,
        replica: &ReplicaObservation,
        heartbeat: bool,
    ) -> EngineEvidence {
        let link = match aurora.link_problem(heartbeat) {
            Some((true, why)) => LinkState::Unhealthy(why),
            Some((false, why)) => LinkState::Unknown(why),
            None => LinkState::Healthy,
        };
        let recovery_point = match (&aurora.global, link.is_healthy()) {
            (Some(global), true) => global.durable_lsn.and_then(|durable| {
                self.aurora_writer
                    .dated(replica.observed_at, |writer| *writer <= durable)
            }),
            _ => None,
        };
        EngineEvidence {
            recovery_point,
            link,
            status: None,
            received_lag_bytes: None,
            executed_lag_bytes: None,
            received_lag_transactions: None,
            executed_lag_transactions: None,
            backlog_bytes: None,
            catchup_seconds: None,
        }
    }

    /// Counts the bytes the replica executed since the last poll, for the
    /// apply rate; forgets the rate when they cannot be measured.
    pub fn record_executed(&mut self, at: Stamp, executed: &BinlogCoordinates) {
        if let Some(last) = &self.last_executed {
            match distance_bytes(last, executed, self.sizes.as_ref()) {
                Some(bytes) if executed.compare(last) != Some(Ordering::Less) => {
                    self.executed_bytes += bytes
                }
                _ => self.apply.clear(),
            }
        }
        self.last_executed = Some(executed.clone());
        self.apply.record(at, self.executed_bytes);
    }

    /// The replication stream to judge: the one from the configured primary
    /// (by server id), else the only one.
    fn stream<'a>(
        primary: Option<&PrimaryObservation>,
        replica: &'a ReplicaObservation,
    ) -> Result<Option<&'a ReplicaStatus>, String> {
        let from_primary = primary.and_then(|p| {
            replica
                .statuses
                .iter()
                .find(|s| s.source_server_id == Some(p.position.server_id))
        });
        match (from_primary, replica.statuses.as_slice()) {
            (Some(status), _) => Ok(Some(status)),
            (None, []) => Ok(None),
            (None, [only]) => Ok(Some(only)),
            (None, many) => Err(format!(
                "the replica has {} replication channels and none replicates from the configured primary; check primary_url",
                many.len()
            )),
        }
    }

    /// Combines one poll's observations into evidence. Record this poll's
    /// samples first.
    pub fn evidence(
        &self,
        primary: Option<&PrimaryObservation>,
        replica: &ReplicaObservation,
    ) -> EngineEvidence {
        let (status, link) = match Self::stream(primary, replica) {
            Err(why) => (None, LinkState::Unhealthy(why)),
            Ok(None) => (
                None,
                LinkState::Unhealthy("replica is not replicating (no replica status)".to_string()),
            ),
            Ok(Some(status)) => {
                let link = match (status.unhealthy(), primary, status.source_server_id) {
                    (Some(why), _, _) => LinkState::Unhealthy(why),
                    (None, Some(p), Some(id)) if id != p.position.server_id => LinkState::Unhealthy(format!(
                        "the replica replicates from server_id {id}, not from the configured primary (server_id {}); check primary_url",
                        p.position.server_id
                    )),
                    (None, _, _) => LinkState::Healthy,
                };
                (Some(status.clone()), link)
            }
        };
        let executed = status.as_ref().map(|s| ExecutedPosition {
            source_server_id: s.source_server_id,
            binlog: s.executed.clone(),
            gtid: replica.executed_gtid.clone(),
        });

        // Positions prove anything only while both threads run and the
        // I/O thread is connected.
        let recovery_point = match (&executed, link.is_healthy()) {
            (Some(executed), true) => self
                .primary
                .dated(replica.observed_at, |sample| executed.holds(sample)),
            _ => None,
        };

        let sizes = primary
            .and_then(|p| p.binlog_sizes.as_ref())
            .or(self.sizes.as_ref());
        let current = primary.map(|p| &p.position);
        let same_source =
            |s: &ReplicaStatus| current.is_some_and(|c| s.source_server_id == Some(c.server_id));
        let lag_bytes = |coordinates: Option<&BinlogCoordinates>| {
            let (c, s) = (current?, status.as_ref()?);
            if !same_source(s) {
                return None;
            }
            distance_bytes(coordinates?, c.binlog.as_ref()?, sizes).map(|b| b as f64)
        };
        let received_lag_bytes = lag_bytes(status.as_ref().and_then(|s| s.received.as_ref()));
        let executed_lag_bytes = lag_bytes(status.as_ref().and_then(|s| s.executed.as_ref()));
        let source_gtid = current.and_then(|c| c.gtid.as_ref());
        let lag_transactions = |held: Option<&GtidState>| {
            let (source, held) = (source_gtid?, held?);
            held.missing(source).map(|m| m as f64)
        };
        let executed_lag_transactions = lag_transactions(replica.executed_gtid.as_ref());
        let received_gtid = status.as_ref().and_then(|s| s.received_gtid.as_ref());
        let received = match (received_gtid, &replica.executed_gtid) {
            (Some(r), Some(e)) => Some(r.union(e)),
            (r, e) => r.cloned().or_else(|| e.clone()),
        };
        let received_lag_transactions = lag_transactions(received.as_ref());

        let relay_backlog = status.as_ref().and_then(|s| {
            distance_bytes(s.executed.as_ref()?, s.received.as_ref()?, sizes).map(|b| b as f64)
        });
        let backlog_bytes = executed_lag_bytes.or(relay_backlog);
        let catchup_seconds = backlog_bytes.map(|bytes| self.apply.catchup_seconds(bytes));

        EngineEvidence {
            recovery_point,
            link,
            status,
            received_lag_bytes,
            executed_lag_bytes,
            received_lag_transactions,
            executed_lag_transactions,
            backlog_bytes,
            catchup_seconds,
        }
    }
}

// ---------------------------------------------------------------------------
// The probe.

/// Statements that depend on the server's version: the newest spelling
/// first; an older server answers `ER_PARSE_ERROR` and the next is tried.
const BINLOG_STATUS_SQL: &[&str] = &["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"];
const REPLICA_STATUS_SQL: &[&str] = &["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"];

/// Runs the first of `candidates` this server understands, remembering it
/// in `chosen` for the next polls.
async fn show(
    conn: &mut Conn,
    chosen: &mut Option<&'static str>,
    candidates: &[&'static str],
) -> Result<Vec<StatusRow>, mysql_async::Error> {
    let start = chosen
        .and_then(|c| candidates.iter().position(|s| *s == c))
        .unwrap_or(0);
    let mut last = None;
    for sql in &candidates[start..] {
        match conn.query::<Row, _>(*sql).await {
            Ok(rows) => {
                *chosen = Some(sql);
                return Ok(rows_by_name(&rows));
            }
            Err(e) if server_code(&e) == Some(codes::PARSE_ERROR) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one statement was tried"))
}

/// The privilege a `SHOW` statement needs, named for the flavor, for
/// messages about missing grants.
fn grant_help(flavor: Flavor, side: Side, user: &str) -> String {
    let privilege = match (flavor, side) {
        (Flavor::MariaDb, Side::Source) => "BINLOG MONITOR",
        (Flavor::MariaDb, Side::Replica) => "REPLICA MONITOR",
        (Flavor::MySql, _) => "REPLICATION CLIENT",
    };
    format!(
        "as an administrator on the {} run: GRANT {privilege} ON *.* TO '{user}'@'%' (see deploy/sql/mysql-grants.sql)",
        match side {
            Side::Source => "primary",
            Side::Replica => "replica",
        }
    )
}

/// A failed statement as a probe error, naming the missing grant when a
/// privilege is what failed.
fn statement_error(err: &mysql_async::Error, side: Side, flavor: Flavor, user: &str) -> ProbeError {
    let mut error = classify(err, false).on(side);
    if server_code(err) == Some(codes::SPECIFIC_ACCESS_DENIED) {
        error.message = format!("{}; {}", error.message, grant_help(flavor, side, user));
    }
    error
}

fn parse_error(side: Side, message: String) -> ProbeError {
    ProbeError::new(FailureReason::Parse, message).on(side)
}

/// `table` or `database.table`, quoted for SQL (names are validated
/// identifiers; the quotes keep reserved words usable).
fn quoted_table(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("`{part}`"))
        .collect::<Vec<_>>()
        .join(".")
}

/// One configured server of the pair: its kept connection and the
/// statement spellings it understands (remembered per server, so a switch
/// of direction never asks one server in another's dialect).
struct Server {
    connection: Connection,
    binlog_status_sql: Option<&'static str>,
    replica_status_sql: Option<&'static str>,
}

impl Server {
    fn new(connection: Connection) -> Server {
        Server {
            connection,
            binlog_status_sql: None,
            replica_status_sql: None,
        }
    }

    fn reset(&mut self) {
        self.connection.reset();
        self.binlog_status_sql = None;
        self.replica_status_sql = None;
    }
}

pub struct MysqlProbe {
    timeout: Duration,
    /// The server at `primary_url`.
    primary: Server,
    /// The server at `replica_url`.
    replica: Server,
    heartbeat: Option<HeartbeatSettings>,
    history: PositionHistory,
    /// Which way replication is measured: roles are detected on every
    /// poll, not assumed from the config keys (see `evidence::promotion`).
    direction: Direction,
    /// Where the heartbeat writer writes: the side accepting writes.
    writer: WriterSide,
    /// This target's heartbeat writes, which date the heartbeat seen.
    heartbeat_log: HeartbeatLog,
    /// The replica was seen to be an Aurora MySQL instance: the primary is
    /// asked for the writer's durable LSN too.
    aurora_seen: bool,
}

#[derive(Clone)]
struct HeartbeatSettings {
    interval: Duration,
    table: String,
    create_table: bool,
    instance: String,
}

/// `@@read_only` / `@@super_read_only` as the text protocol sends them
/// (`1`/`0`; `ON`/`OFF` on some versions): set unless it says off.
fn flag_set(value: Option<&str>) -> bool {
    value.map(str::trim).is_some_and(|v| {
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("no"))
    })
}

/// Whether any of a server's read-only switches is on: `read_only`,
/// MySQL's `super_read_only`, and `innodb_read_only` (how an Aurora MySQL
/// reader says it is one: Amazon Aurora User Guide, "Best practices with
/// Amazon Aurora MySQL", AuroraMySQL.BestPractices.html).
fn read_only_set(flags: &[Option<String>]) -> bool {
    flags.iter().any(|f| flag_set(f.as_deref()))
}

/// Whether a server accepts writes: not `read_only` (nor, on MySQL,
/// `super_read_only`) and no replica thread running. A replica without
/// `read_only` still counts as a replica while it follows its source;
/// a server whose threads were stopped *and* whose `read_only` is off is
/// taken as writable (promoted by hand, or a replica left open to writes).
fn accepts_writes(read_only: bool, statuses: &[ReplicaStatus]) -> bool {
    !read_only && !statuses.iter().any(ReplicaStatus::threads_running)
}

impl MysqlProbe {
    pub fn new(
        target: &Target,
        spec: &MysqlTarget,
        instance: &str,
        heartbeat_log: HeartbeatLog,
    ) -> Result<MysqlProbe, ProbeError> {
        let ca = spec
            .tls_ca_file
            .as_deref()
            .map(|path| crate::drivers::read_ca_file(&target.name, path))
            .transpose()?;
        Ok(MysqlProbe {
            timeout: target.timeout,
            primary: Server::new(Connection::new(
                Side::Source,
                connect_opts(target, &spec.primary_url, Side::Source, ca.as_deref())?,
            )),
            replica: Server::new(Connection::new(
                Side::Replica,
                connect_opts(target, &spec.replica_url, Side::Replica, ca.as_deref())?,
            )),
            heartbeat: spec.heartbeat.as_ref().map(|hb| HeartbeatSettings {
                interval: hb.interval,
                table: hb.table.clone(),
                create_table: hb.create_table,
                instance: instance.to_string(),
            }),
            history: PositionHistory::default(),
            direction: Direction::Forward,
            writer: WriterSide::default(),
            heartbeat_log,
            aurora_seen: false,
        })
    }

    /// What the side measured as the source says, and whether it accepts
    /// writes.
    async fn observe_primary(
        server: &mut Server,
        aurora_seen: bool,
    ) -> Result<(PrimaryObservation, bool), ProbeError> {
        let side = Side::Source;
        let user = server.connection.user().to_string();
        let (conn, flavor) = server.connection.conn().await?;
        let failed = |e: &mysql_async::Error| statement_error(e, side, flavor, &user);
        let observed_at = Stamp::now();
        // Everything below is read after `observed_at`, so it holds at
        // least every write made before it.
        type Text = Option<String>;
        let (server_id, mariadb_gtid, read_only): (Option<u32>, Text, bool) = match flavor {
            Flavor::MariaDb => {
                let row: Option<(Option<u32>, Text, Text, Text)> = conn
                    .query_first(
                        "SELECT @@server_id, @@gtid_binlog_pos, @@read_only, @@innodb_read_only",
                    )
                    .await
                    .map_err(|e| failed(&e))?;
                row.map_or((None, None, false), |(id, gtid, ro, iro)| {
                    (id, gtid, read_only_set(&[ro, iro]))
                })
            }
            Flavor::MySql => {
                let row: Option<(Option<u32>, Text, Text, Text)> = conn
                    .query_first(
                        "SELECT @@server_id, @@read_only, @@super_read_only, @@innodb_read_only",
                    )
                    .await
                    .map_err(|e| failed(&e))?;
                row.map_or((None, None, false), |(id, ro, sro, iro)| {
                    (id, None, read_only_set(&[ro, sro, iro]))
                })
            }
        };
        let server_id =
            server_id.ok_or_else(|| parse_error(side, "@@server_id is NULL".to_string()))?;
        let rows = show(conn, &mut server.binlog_status_sql, BINLOG_STATUS_SQL)
            .await
            .map_err(|e| failed(&e))?;
        // An Aurora writer of a global database: its own durable LSN, read
        // after `observed_at` like every position here. Asked once the
        // replica was seen to be Aurora, or when there is no binary log
        // (Aurora MySQL's default).
        let aurora_durable_lsn = if aurora_seen || rows.is_empty() {
            aurora::writer_durable_lsn(conn)
                .await
                .map_err(|e| failed(&e))?
        } else {
            None
        };
        let binlog = match rows.first() {
            None if aurora_durable_lsn.is_some() => None,
            None => {
                return Err(ProbeError::new(
                    FailureReason::Config,
                    "the primary writes no binary log (log_bin is OFF), so it cannot be a replication source; check primary_url",
                )
                .on(side));
            }
            Some(row) => match (
                non_empty(column(row, &["File"])),
                number::<u64>(row, &["Position"]).map_err(|e| parse_error(side, e))?,
            ) {
                (Some(file), Some(position)) => Some(BinlogCoordinates { file, position }),
                _ => {
                    return Err(parse_error(
                        side,
                        "the binary log status has no File/Position".to_string(),
                    ))
                }
            },
        };
        let gtid_text = match (flavor, rows.first()) {
            (Flavor::MariaDb, _) => mariadb_gtid,
            (Flavor::MySql, Some(row)) => non_empty(column(row, &["Executed_Gtid_Set"])),
            (Flavor::MySql, None) => None,
        };
        let gtid = match gtid_text {
            Some(text) => Some(
                GtidState::parse(flavor, &text)
                    .map_err(|e| parse_error(side, format!("the primary's GTID state: {e}")))?,
            ),
            None => None,
        };
        // Sizes make byte lags across binary log files measurable; without
        // the grant they are skipped rather than failing the poll.
        let binlog_sizes = match conn.query::<Row, _>("SHOW BINARY LOGS").await {
            Ok(rows) => Some(
                rows_by_name(&rows)
                    .iter()
                    .filter_map(|row| {
                        Some((
                            non_empty(column(row, &["Log_name"]))?,
                            number::<u64>(row, &["File_size"]).ok()??,
                        ))
                    })
                    .collect(),
            ),
            Err(e) if server_code(&e).is_some() => None,
            Err(e) => return Err(failed(&e)),
        };
        // Whether the source itself follows another server (rebuilt as a
        // replica after a failback). Without the grant it is taken as not
        // following: the primary's usual state, and never a reason for GO
        // (at worst a split brain is reported that is not there).
        let statuses = match show(conn, &mut server.replica_status_sql, REPLICA_STATUS_SQL).await {
            Ok(rows) => rows
                .iter()
                .filter_map(|row| ReplicaStatus::parse(row).ok())
                .collect(),
            Err(e) if server_code(&e).is_some() => Vec::new(),
            Err(e) => return Err(failed(&e)),
        };
        Ok((
            PrimaryObservation {
                observed_at,
                position: SourcePosition {
                    server_id,
                    binlog,
                    gtid,
                },
                binlog_sizes,
                aurora_durable_lsn,
            },
            accepts_writes(read_only, &statuses),
        ))
    }

    /// What the side measured as the replica says, whether it accepts
    /// writes, and the newest heartbeat of this exporter it holds (read
    /// whatever its role, so a promotion's loss can be measured).
    async fn observe_replica(
        server: &mut Server,
        heartbeat: Option<HeartbeatSettings>,
    ) -> Result<(ReplicaObservation, bool, Option<SystemTime>), ProbeError> {
        let side = Side::Replica;
        let user = server.connection.user().to_string();
        let (conn, flavor) = server.connection.conn().await?;
        let failed = |e: &mysql_async::Error| statement_error(e, side, flavor, &user);
        let observed_at = Stamp::now();
        let rows = show(conn, &mut server.replica_status_sql, REPLICA_STATUS_SQL)
            .await
            .map_err(|e| failed(&e))?;
        let mut statuses = rows
            .iter()
            .map(ReplicaStatus::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| parse_error(side, e))?;
        let gtid = |text: Option<&str>, what: &str| -> Result<Option<GtidState>, ProbeError> {
            match text {
                None => Ok(None),
                Some(text) => GtidState::parse(flavor, text)
                    .map(Some)
                    .map_err(|e| parse_error(side, format!("the replica's {what}: {e}"))),
            }
        };
        let (executed_text, read_only) = match flavor {
            Flavor::MariaDb => {
                let row: Option<(Option<String>, Option<String>, Option<String>)> = conn
                    .query_first("SELECT @@gtid_slave_pos, @@read_only, @@innodb_read_only")
                    .await
                    .map_err(|e| failed(&e))?;
                let (executed, ro, iro) = row.unwrap_or((None, None, None));
                (executed, read_only_set(&[ro, iro]))
            }
            Flavor::MySql => {
                let row: Option<(Option<String>, Option<String>, Option<String>)> = conn
                    .query_first("SELECT @@read_only, @@super_read_only, @@innodb_read_only")
                    .await
                    .map_err(|e| failed(&e))?;
                let (ro, sro, iro) = row.unwrap_or((None, None, None));
                (
                    statuses.first().and_then(|s| s.executed_gtid.clone()),
                    read_only_set(&[ro, sro, iro]),
                )
            }
        };
        for status in &mut statuses {
            status.received_gtid = gtid(status.retrieved_gtid.as_deref(), "received GTIDs")?;
        }
        let writable = accepts_writes(read_only, &statuses);
        // No binlog replica status: an Aurora reader or global secondary
        // describes itself in its own tables (see `aurora`).
        let aurora = if statuses.is_empty() {
            AuroraReplica::observe(conn, read_only)
                .await
                .map_err(|e| failed(&e))?
        } else {
            None
        };
        let observation = ReplicaObservation {
            observed_at,
            executed_gtid: gtid(executed_text.as_deref(), "executed GTIDs")?,
            statuses,
            aurora,
        };
        let heartbeat_seen = match heartbeat {
            None => None,
            Some(hb) => {
                let sql = format!(
                    "SELECT ts FROM {} WHERE instance = ?",
                    quoted_table(&hb.table)
                );
                match conn
                    .exec_first::<Option<f64>, _, _>(sql, (hb.instance.as_str(),))
                    .await
                {
                    Ok(ts) => ts.flatten().and_then(from_unix_seconds),
                    // Not created yet, or not replicated yet: no heartbeat evidence.
                    Err(e) if server_code(&e) == Some(codes::NO_SUCH_TABLE) => None,
                    Err(e) => return Err(classify(&e, false).on(side)),
                }
            }
        };
        Ok((observation, writable, heartbeat_seen))
    }

    async fn poll_once(&mut self) -> Measurement {
        let started = Instant::now();
        let half = self.timeout / 2;
        let mut measurement = Measurement::new(SystemTime::now());
        let mut details = Vec::new();
        let direction = self.direction;
        let heartbeat = self.heartbeat.clone();
        let mut roles = PairRoles {
            direction,
            heartbeat_configured: heartbeat.is_some(),
            ..PairRoles::default()
        };
        let (source, replica_side) = match direction {
            Direction::Forward => (&mut self.primary, &mut self.replica),
            Direction::Reverse => (&mut self.replica, &mut self.primary),
        };

        // The primary first: the caught-up test needs its position read
        // before the replica's.
        let aurora_seen = self.aurora_seen;
        let primary = match within(started + half, Self::observe_primary(source, aurora_seen)).await
        {
            Ok((observation, writable)) => {
                measurement.source_reachable = Some(true);
                self.history.record_primary(&observation);
                // Positions stay `None`: binary log coordinates and GTID
                // states are not one number (no bytes-lost figure).
                *roles.side_mut(direction.source()) = SideSeen {
                    writable: Some(writable),
                    ..SideSeen::default()
                };
                Some(observation)
            }
            Err(err) => {
                source.reset();
                measurement.source_reachable = Some(false);
                measurement.failures.push(err.on(Side::Source));
                None
            }
        };

        match within(
            started + self.timeout,
            Self::observe_replica(replica_side, heartbeat),
        )
        .await
        {
            Ok((replica, writable, heartbeat_seen)) => {
                measurement.replica_reachable = Some(true);
                measurement.evidence_time = replica.observed_at.wall;
                // This poll's executed position counts for the apply rate
                // before the evidence estimates the catch-up with it.
                if let Ok(Some(status)) = PositionHistory::stream(primary.as_ref(), &replica) {
                    if let Some(executed) = &status.executed {
                        self.history.record_executed(replica.observed_at, executed);
                    }
                }
                let evidence = match &replica.aurora {
                    Some(aurora) => {
                        self.aurora_seen = true;
                        self.history
                            .aurora_evidence(aurora, &replica, roles.heartbeat_configured)
                    }
                    None => self.history.evidence(primary.as_ref(), &replica),
                };
                // Only heartbeats this process wrote (or an earlier run, not
                // later than the evidence) are dated; see evidence::heartbeat.
                let heartbeat_dated = heartbeat_seen
                    .and_then(|seen| self.heartbeat_log.date(seen, replica.observed_at).proven());
                *roles.side_mut(direction.replica()) = SideSeen {
                    writable: Some(writable),
                    heartbeat: heartbeat_dated,
                    ..SideSeen::default()
                };
                // A heartbeat read on a server that accepts writes proves
                // nothing about replication (after a promotion this exporter
                // writes it there itself).
                let heartbeat = heartbeat_dated.filter(|_| !writable);
                measurement.recovery_point = match (evidence.recovery_point, heartbeat) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                measurement.link = evidence.link.clone();
                measurement.backlog_bytes = evidence.backlog_bytes;
                measurement.backlog_operations = evidence.executed_lag_transactions;
                measurement.catchup_seconds = evidence.catchup_seconds;
                details.extend(replica_details(
                    &evidence,
                    replica.aurora.as_ref(),
                    heartbeat_seen,
                ));
            }
            Err(err) => {
                replica_side.reset();
                measurement.replica_reachable = Some(false);
                measurement.link = LinkState::Unknown("the replica cannot be reached".to_string());
                measurement.failures.push(err.on(Side::Replica));
            }
        }
        measurement.details = details;
        self.follow_roles(&roles);
        measurement.roles = Some(roles);
        measurement
    }

    /// After a poll: heartbeats go where writes are accepted, and the next
    /// poll measures the direction replication now runs in. Positions
    /// sampled on the old source date nothing on the new one.
    fn follow_roles(&mut self, roles: &PairRoles) {
        self.writer.follow(roles);
        let next = self.direction.after(roles);
        if next != self.direction {
            tracing::info!(
                source = next.source().url_key(),
                replica = next.replica().url_key(),
                "replication now runs the other way; measuring that direction"
            );
            self.direction = next;
            self.history = PositionHistory::default();
        }
    }
}
fn replica_details(
    evidence: &EngineEvidence,
    aurora: Option<&AuroraReplica>,
    heartbeat_seen: Option<SystemTime>,
) -> Vec<Detail> {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let status = evidence.status.as_ref();
    // An Aurora replica has no replica threads: their series would only
    // say "stopped".
    let mut details = match aurora {
        Some(_) => Vec::new(),
        None => vec![
            Detail::new(
                &IO_THREAD_RUNNING,
                flag(status.is_some_and(|s| s.io_running())),
            ),
            Detail::new(
                &SQL_THREAD_RUNNING,
                flag(status.is_some_and(|s| s.sql_running())),
            ),
        ],
    };
    let mut optional = |family: &'static MetricDef, value: Option<f64>| {
        if let Some(v) = value {
            details.push(Detail::new(family, v));
        }
    };
    let seconds = |ms: Option<f64>| ms.filter(|ms| *ms >= 0.0).map(|ms| ms / 1000.0);
    if let Some(aurora) = aurora {
        optional(
            &AURORA_REPLICA_LAG_SECONDS,
            seconds(aurora.host_row.as_ref().and_then(|r| r.lag_ms)),
        );
        if let Some(global) = &aurora.global {
            optional(&AURORA_RPO_LAG_SECONDS, seconds(global.rpo_lag_ms));
            optional(
                &AURORA_DURABILITY_LAG_SECONDS,
                seconds(global.durability_lag_ms),
            );
            optional(
                &AURORA_VISIBILITY_LAG_SECONDS,
                seconds(global.visibility_lag_ms),
            );
        }
    }
    optional(
        &ENGINE_REPORTED_LAG_SECONDS,
        status.and_then(|s| s.seconds_behind).map(|s| s as f64),
    );
    optional(&RECEIVED_LAG_BYTES, evidence.received_lag_bytes);
    optional(&EXECUTED_LAG_BYTES, evidence.executed_lag_bytes);
    optional(
        &RECEIVED_LAG_TRANSACTIONS,
        evidence.received_lag_transactions,
    );
    optional(
        &EXECUTED_LAG_TRANSACTIONS,
        evidence.executed_lag_transactions,
    );
    optional(
        &RELAY_LOG_SPACE_BYTES,
        status.and_then(|s| s.relay_log_space).map(|b| b as f64),
    );
    optional(
        &HEARTBEAT_TIMESTAMP_SECONDS,
        heartbeat_seen.map(unix_seconds),
    );
    details
}

impl Probe for MysqlProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(async move { Ok(self.poll_once().await) })
    }

    fn reset(&mut self) {
        self.primary.reset();
        self.replica.reset();
    }

    fn heartbeat_writer(&mut self) -> Option<Box<dyn HeartbeatWriter>> {
        let settings = self.heartbeat.clone()?;
        Some(Box::new(MysqlHeartbeatWriter {
            connection: self.primary.connection.twin(),
            user: self.primary.connection.user().to_string(),
            settings,
            other: self.replica.connection.twin(),
            side: ConfiguredSide::Primary,
            writer: self.writer.clone(),
            log: self.heartbeat_log.clone(),
        }))
    }
}

/// Writes this exporter's heartbeat row over its own connection, so a slow
/// poll never delays a heartbeat: on the primary, or, after a promotion,
/// on the side the probe saw accepting writes.
struct MysqlHeartbeatWriter {
    /// The connection to `side`.
    connection: Connection,
    user: String,
    settings: HeartbeatSettings,
    /// The connection to the other configured side, kept for a switch.
    other: Connection,
    side: ConfiguredSide,
    writer: WriterSide,
    /// Where each value is logged before it is sent, to date it when seen.
    log: HeartbeatLog,
}

impl MysqlHeartbeatWriter {
    fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (instance VARCHAR(255) NOT NULL PRIMARY KEY, ts DOUBLE NOT NULL, written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
            quoted_table(&self.settings.table)
        )
    }

    fn grants_help(&self) -> String {
        format!(
            "as an administrator on the primary run: {}; GRANT SELECT, INSERT, UPDATE ON {} TO '{}'@'%'; (or remove `heartbeat` from the target to rely on engine positions)",
            self.create_sql(),
            quoted_table(&self.settings.table),
            self.user
        )
    }

    async fn write_once(&mut self, at: SystemTime) -> Result<(), ProbeError> {
        let wanted = self.writer.get();
        if wanted != self.side {
            std::mem::swap(&mut self.connection, &mut self.other);
            self.side = wanted;
        }
        self.log.record(at);
        let side = Side::Source;
        let create_sql = self.create_sql();
        let grants = self.grants_help();
        let table = self.settings.table.clone();
        let create = self.settings.create_table;
        let instance = self.settings.instance.clone();
        let (conn, _) = self.connection.conn().await?;
        let insert = format!(
            "INSERT INTO {} (instance, ts) VALUES (?, ?) ON DUPLICATE KEY UPDATE ts = ?",
            quoted_table(&table)
        );
        let ts = unix_seconds(at);
        let with_help = |e: &mysql_async::Error, what: &str| {
            let mut err = classify(e, false).on(side);
            if err.reason == FailureReason::Auth {
                err.message = format!("{what} {table} ({}); {grants}", err.message);
            }
            err
        };
        // Try the write first: the table is there on every poll but the first.
        match conn
            .exec_drop(insert.as_str(), (instance.as_str(), ts, ts))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if server_code(&e) == Some(codes::NO_SUCH_TABLE) => {
                if !create {
                    return Err(ProbeError::new(
                        FailureReason::Config,
                        format!("heartbeat table {table} does not exist and create_table = false; {grants}"),
                    )
                    .on(side));
                }
            }
            Err(e) => return Err(with_help(&e, "cannot write heartbeat to")),
        }
        conn.query_drop(create_sql.as_str()).await.map_err(|e| {
            let mut err = classify(&e, false).on(side);
            err.message = format!(
                "cannot create heartbeat table {table} ({}); {grants}",
                err.message
            );
            err
        })?;
        conn.exec_drop(insert.as_str(), (instance.as_str(), ts, ts))
            .await
            .map_err(|e| with_help(&e, "cannot write heartbeat to"))
    }
}

impl HeartbeatWriter for MysqlHeartbeatWriter {
    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn write(&mut self, at: SystemTime) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.write_once(at))
    }

    fn reset(&mut self, _after: &ProbeError) {
        self.connection.reset();
    }

    fn destination(&self) -> ConfiguredSide {
        self.side
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SHOW SLAVE STATUS\G` of the lab's MariaDB 10.11 replica, healthy
    /// (captured with the `mariadb` client; `\G` layout: "Column: value").
    const MARIADB_HEALTHY: &str = "
                Slave_IO_State: Waiting for master to send event
                   Master_Host: 127.0.0.1
                   Master_User: repl
                   Master_Port: 23306
                 Connect_Retry: 1
               Master_Log_File: mysql-bin.000002
           Read_Master_Log_Pos: 342
                Relay_Log_File: relay-bin.000002
                 Relay_Log_Pos: 641
         Relay_Master_Log_File: mysql-bin.000002
              Slave_IO_Running: Yes
             Slave_SQL_Running: Yes
               Replicate_Do_DB: 
           Replicate_Ignore_DB: 
            Replicate_Do_Table: 
        Replicate_Ignore_Table: 
       Replicate_Wild_Do_Table: 
   Replicate_Wild_Ignore_Table: 
                    Last_Errno: 0
                    Last_Error: 
                  Skip_Counter: 1
           Exec_Master_Log_Pos: 342
               Relay_Log_Space: 944
               Until_Condition: None
                Until_Log_File: 
                 Until_Log_Pos: 0
            Master_SSL_Allowed: No
            Master_SSL_CA_File: 
            Master_SSL_CA_Path: 
               Master_SSL_Cert: 
             Master_SSL_Cipher: 
                Master_SSL_Key: 
         Seconds_Behind_Master: 0
 Master_SSL_Verify_Server_Cert: No
                 Last_IO_Errno: 0
                 Last_IO_Error: 
                Last_SQL_Errno: 0
                Last_SQL_Error: 
   Replicate_Ignore_Server_Ids: 
              Master_Server_Id: 1
                Master_SSL_Crl: 
            Master_SSL_Crlpath: 
                    Using_Gtid: Slave_Pos
                   Gtid_IO_Pos: 0-1-9
       Replicate_Do_Domain_Ids: 
   Replicate_Ignore_Domain_Ids: 
                 Parallel_Mode: optimistic
                     SQL_Delay: 0
           SQL_Remaining_Delay: NULL
       Slave_SQL_Running_State: Slave has read all relay log; waiting for more updates
              Slave_DDL_Groups: 5
Slave_Non_Transactional_Groups: 0
    Slave_Transactional_Groups: 3
          Replicate_Rewrite_DB: 
";

    /// The same replica with `STOP SLAVE SQL_THREAD` under writes: received
    /// up to 2233, executed up to 952, and `Seconds_Behind_Master` NULL.
    const MARIADB_SQL_STOPPED: &str = "
                Slave_IO_State: Waiting for master to send event
               Master_Log_File: mysql-bin.000001
           Read_Master_Log_Pos: 2233
                Relay_Log_File: relay-bin.000002
                 Relay_Log_Pos: 1251
         Relay_Master_Log_File: mysql-bin.000001
              Slave_IO_Running: Yes
             Slave_SQL_Running: No
                    Last_Error: 
           Exec_Master_Log_Pos: 952
               Relay_Log_Space: 2628
         Seconds_Behind_Master: NULL
                 Last_IO_Error: 
                Last_SQL_Error: 
              Master_Server_Id: 1
                    Using_Gtid: Slave_Pos
                   Gtid_IO_Pos: 0-1-7
       Slave_SQL_Running_State: 
";

    /// The same replica after its primary was shut down: the I/O thread
    /// retries (`Connecting`) and says why; the SQL thread had stopped on
    /// an error of its own.
    const MARIADB_PRIMARY_GONE: &str = "
                Slave_IO_State: Reconnecting after a failed master event read
               Master_Log_File: mysql-bin.000001
           Read_Master_Log_Pos: 2539
         Relay_Master_Log_File: mysql-bin.000001
              Slave_IO_Running: Connecting
             Slave_SQL_Running: No
           Exec_Master_Log_Pos: 2233
         Seconds_Behind_Master: NULL
                 Last_IO_Error: error reconnecting to master 'repl@127.0.0.1:23306' - retry-time: 1  maximum-retries: 100000  message: Can't connect to server on '127.0.0.1' (111 \"Connection refused\")
                Last_SQL_Error: Error 'Operation CREATE USER failed for 'mon'@'%'' on query. Default database: ''. Query: 'CREATE USER mon@'%' IDENTIFIED BY 'pw''
              Master_Server_Id: 1
                    Using_Gtid: Slave_Pos
                   Gtid_IO_Pos: 0-1-9
";

    /// `SHOW REPLICA STATUS\G` of MySQL 8 with GTIDs, with the column
    /// names of the MySQL 8.4 reference manual's example
    /// (refman/8.4/en/show-replica-status.html); the values are made up (no
    /// MySQL server runs here).
    const MYSQL8_GTID: &str = "
             Replica_IO_State: Waiting for source to send event
                  Source_Host: 127.0.0.1
                  Source_User: root
                  Source_Port: 13000
                Connect_Retry: 1
              Source_Log_File: source-bin.000002
          Read_Source_Log_Pos: 1307
               Relay_Log_File: replica-relay-bin.000003
                Relay_Log_Pos: 1508
        Relay_Source_Log_File: source-bin.000002
           Replica_IO_Running: Yes
          Replica_SQL_Running: Yes
                   Last_Errno: 0
                   Last_Error: 
                 Skip_Counter: 0
          Exec_Source_Log_Pos: 1200
              Relay_Log_Space: 1858
              Until_Condition: None
        Seconds_Behind_Source: 0
Source_SSL_Verify_Server_Cert: No
                Last_IO_Errno: 0
                Last_IO_Error: 
               Last_SQL_Errno: 0
               Last_SQL_Error: 
             Source_Server_Id: 1
                  Source_UUID: 3e11fa47-71ca-11e1-9e33-c80aa9429562
             Source_Info_File: mysql.slave_master_info
                    SQL_Delay: 0
          SQL_Remaining_Delay: NULL
    Replica_SQL_Running_State: Replica has read all relay log; waiting for more updates
           Retrieved_Gtid_Set: 3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5
            Executed_Gtid_Set: 3E11FA47-71CA-11E1-9E33-C80AA9429562:1-4,
4a6e1d6c-71ca-11e1-9e33-c80aa9429562:1-2
                Auto_Position: 1
                 Channel_Name: 
";

    /// Parses the `\G` layout; a line without a colon continues the
    /// previous value (MySQL wraps long GTID sets).
    fn vertical(text: &str) -> StatusRow {
        let mut row = StatusRow::new();
        let mut last: Option<String> = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|l| (l, "")))
            {
                Some((name, value)) if !name.trim().contains(' ') && !name.contains('\'') => {
                    let value = value.trim_end();
                    let name = name.trim().to_string();
                    row.insert(name.clone(), (value != "NULL").then(|| value.to_string()));
                    last = Some(name);
                }
                _ => {
                    let name = last.clone().expect("a continuation follows a column");
                    if let Some(Some(value)) = row.get_mut(&name) {
                        value.push_str(line.trim());
                    }
                }
            }
        }
        row
    }

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    fn coords(file: &str, position: u64) -> BinlogCoordinates {
        BinlogCoordinates {
            file: file.to_string(),
            position,
        }
    }

    fn primary(t: f64, file: &str, position: u64, gtid: Option<&str>) -> PrimaryObservation {
        PrimaryObservation {
            observed_at: Stamp::unstepped(at(t)),
            position: SourcePosition {
                server_id: 1,
                binlog: Some(coords(file, position)),
                gtid: gtid.map(|g| GtidState::parse(Flavor::MariaDb, g).unwrap()),
            },
            binlog_sizes: None,
            aurora_durable_lsn: None,
        }
    }

    fn replica(t: f64, status: &str, slave_pos: Option<&str>) -> ReplicaObservation {
        let mut status = ReplicaStatus::parse(&vertical(status)).unwrap();
        status.received_gtid = status
            .retrieved_gtid
            .as_deref()
            .map(|g| GtidState::parse(Flavor::MariaDb, g).unwrap());
        ReplicaObservation {
            observed_at: Stamp::unstepped(at(t)),
            statuses: vec![status],
            executed_gtid: slave_pos.map(|g| GtidState::parse(Flavor::MariaDb, g).unwrap()),
            aurora: None,
        }
    }

    #[test]
    fn parses_mariadb_slave_status_by_column_name() {
        let s = ReplicaStatus::parse(&vertical(MARIADB_HEALTHY)).unwrap();
        assert_eq!(s.io_running, "Yes");
        assert_eq!(s.sql_running, "Yes");
        assert_eq!(s.received, Some(coords("mysql-bin.000002", 342)));
        assert_eq!(s.executed, Some(coords("mysql-bin.000002", 342)));
        assert_eq!(s.source_server_id, Some(1));
        assert_eq!(s.relay_log_space, Some(944));
        assert_eq!(s.seconds_behind, Some(0));
        assert_eq!(s.retrieved_gtid.as_deref(), Some("0-1-9"));
        assert_eq!(s.last_io_error, None);
        assert_eq!(s.unhealthy(), None);

        let s = ReplicaStatus::parse(&vertical(MARIADB_SQL_STOPPED)).unwrap();
        assert_eq!(
            s.seconds_behind, None,
            "NULL while the SQL thread is stopped"
        );
        assert_eq!(s.unhealthy().as_deref(), Some("SQL thread stopped"));
        assert_eq!(s.received, Some(coords("mysql-bin.000001", 2233)));
        assert_eq!(s.executed, Some(coords("mysql-bin.000001", 952)));

        let s = ReplicaStatus::parse(&vertical(MARIADB_PRIMARY_GONE)).unwrap();
        let why = s.unhealthy().unwrap();
        assert!(
            why.starts_with("I/O thread is not connected to the source (Connecting): error reconnecting to master"),
            "{why}"
        );
        assert!(
            why.contains("; SQL thread stopped: Error 'Operation CREATE USER"),
            "{why}"
        );
    }

    #[test]
    fn parses_mysql8_replica_status_by_column_name() {
        let s = ReplicaStatus::parse(&vertical(MYSQL8_GTID)).unwrap();
        assert_eq!(s.io_running, "Yes");
        assert_eq!(s.received, Some(coords("source-bin.000002", 1307)));
        assert_eq!(s.executed, Some(coords("source-bin.000002", 1200)));
        assert_eq!(s.source_server_id, Some(1));
        assert_eq!(s.channel, None);
        let executed = GtidSet::parse(s.executed_gtid.as_deref().unwrap()).unwrap();
        let retrieved = GtidSet::parse(s.retrieved_gtid.as_deref().unwrap()).unwrap();
        // Received 1-5, executed 1-4 of the source (plus two of another
        // server): one transaction received, not executed.
        assert_eq!(executed.missing(&retrieved), 1);
        let source = GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-4").unwrap();
        assert!(executed.contains(&source));
    }

    #[test]
    fn a_status_without_thread_columns_is_a_parse_error() {
        let mut row = vertical(MARIADB_HEALTHY);
        row.remove("Slave_IO_Running");
        let err = ReplicaStatus::parse(&row).unwrap_err();
        assert!(err.contains("Replica_IO_Running/Slave_IO_Running"), "{err}");
        let mut row = vertical(MARIADB_HEALTHY);
        row.insert("Exec_Master_Log_Pos".into(), Some("lots".into()));
        assert!(ReplicaStatus::parse(&row).is_err());
    }

    #[test]
    fn gtid_sets_parse_merge_and_compare() {
        let set = GtidSet::parse(
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-3:4-5:9,\n 3e11fa47-71ca-11e1-9e33-c80aa9429562:tag_a:1-2",
        )
        .unwrap();
        assert_eq!(
            set.0["3e11fa47-71ca-11e1-9e33-c80aa9429562"],
            vec![(1, 5), (9, 9)]
        );
        assert_eq!(
            set.0["3e11fa47-71ca-11e1-9e33-c80aa9429562:tag_a"],
            vec![(1, 2)]
        );
        let smaller = GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:2-4").unwrap();
        assert!(set.contains(&smaller));
        assert!(!smaller.contains(&set));
        assert_eq!(smaller.missing(&set), 5);
        assert!(GtidSet::parse("").unwrap().is_empty());
        assert!(GtidSet::parse("not-a-uuid:1-2").is_err());
        assert!(GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-2").is_err());
        let union =
            smaller.union(&GtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-7").unwrap());
        assert_eq!(
            union.0["3e11fa47-71ca-11e1-9e33-c80aa9429562"],
            vec![(2, 7)]
        );
    }

    #[test]
    fn mariadb_positions_parse_and_compare() {
        let source = DomainPositions::parse("0-1-42,1-2-7").unwrap();
        let replica = DomainPositions::parse("0-1-40").unwrap();
        assert_eq!(replica.missing(&source), 2 + 7);
        assert_eq!(source.missing(&replica), 0);
        assert!(DomainPositions::parse("").unwrap().is_empty());
        assert!(DomainPositions::parse("0-1").is_err());
    }

    #[test]
    fn binlog_distances_within_and_across_files() {
        let a = coords("mysql-bin.000001", 1000);
        let b = coords("mysql-bin.000001", 1500);
        let c = coords("mysql-bin.000003", 200);
        assert_eq!(distance_bytes(&a, &b, None), Some(500));
        assert_eq!(distance_bytes(&b, &a, None), Some(0));
        assert_eq!(distance_bytes(&a, &c, None), None, "sizes unknown");
        let sizes = BinlogSizes::from([
            ("mysql-bin.000001".to_string(), 4000),
            ("mysql-bin.000002".to_string(), 3000),
            ("mysql-bin.000003".to_string(), 900),
        ]);
        assert_eq!(
            distance_bytes(&a, &c, Some(&sizes)),
            Some(3000 + 3000 + 200)
        );
        assert_eq!(
            distance_bytes(&a, &coords("other-bin.000001", 5), Some(&sizes)),
            None
        );
    }

    #[test]
    fn idle_primary_is_not_lag() {
        // Nothing written for minutes: the replica holds what the primary
        // had just before we asked, so the recovery point is that instant.
        let mut h = PositionHistory::default();
        let p = primary(1000.0, "mysql-bin.000002", 342, Some("0-1-9"));
        h.record_primary(&p);
        let e = h.evidence(Some(&p), &replica(1000.01, MARIADB_HEALTHY, Some("0-1-9")));
        assert_eq!(e.recovery_point, Some(at(1000.0)));
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.executed_lag_bytes, Some(0.0));
        assert_eq!(e.executed_lag_transactions, Some(0.0));
        assert_eq!(e.backlog_bytes, Some(0.0));
        assert_eq!(e.catchup_seconds, Some(0.0));
    }

    #[test]
    fn behind_replica_is_dated_by_the_primary_samples() {
        let mut h = PositionHistory::default();
        h.record_primary(&primary(10.0, "mysql-bin.000002", 100, Some("0-1-7")));
        h.record_primary(&primary(11.0, "mysql-bin.000002", 342, Some("0-1-9")));
        let p = primary(12.0, "mysql-bin.000002", 900, Some("0-1-12"));
        h.record_primary(&p);
        // Executed up to 0-1-9 (file offset 342): every write before the
        // sample at 11 s is on the replica.
        let e = h.evidence(Some(&p), &replica(12.0, MARIADB_HEALTHY, Some("0-1-9")));
        assert_eq!(e.recovery_point, Some(at(11.0)));
        assert_eq!(e.executed_lag_bytes, Some(558.0));
        assert_eq!(e.received_lag_bytes, Some(558.0));
        assert_eq!(e.executed_lag_transactions, Some(3.0));
        assert_eq!(e.backlog_bytes, Some(558.0));
    }

    #[test]
    fn mysql_gtid_sets_date_the_replica_by_containment() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let sample = |t: f64, position: u64, set: &str| PrimaryObservation {
            observed_at: Stamp::unstepped(at(t)),
            position: SourcePosition {
                server_id: 1,
                binlog: Some(coords("source-bin.000002", position)),
                gtid: Some(GtidState::parse(Flavor::MySql, set).unwrap()),
            },
            binlog_sizes: None,
            aurora_durable_lsn: None,
        };
        let mut h = PositionHistory::default();
        h.record_primary(&sample(10.0, 900, &format!("{uuid}:1-3")));
        h.record_primary(&sample(11.0, 1100, &format!("{uuid}:1-4")));
        let p = sample(12.0, 1307, &format!("{uuid}:1-5"));
        h.record_primary(&p);
        let mut status = ReplicaStatus::parse(&vertical(MYSQL8_GTID)).unwrap();
        status.received_gtid = status
            .retrieved_gtid
            .as_deref()
            .map(|g| GtidState::parse(Flavor::MySql, g).unwrap());
        let executed =
            GtidState::parse(Flavor::MySql, status.executed_gtid.as_deref().unwrap()).unwrap();
        let r = ReplicaObservation {
            observed_at: Stamp::unstepped(at(12.0)),
            statuses: vec![status],
            executed_gtid: Some(executed),
            aurora: None,
        };
        // Executed 1-4 of the source: everything before the sample at 11 s.
        let e = h.evidence(Some(&p), &r);
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.recovery_point, Some(at(11.0)));
        assert_eq!(e.executed_lag_transactions, Some(1.0));
        assert_eq!(e.received_lag_transactions, Some(0.0));
        assert_eq!(e.executed_lag_bytes, Some(107.0));
        assert_eq!(e.received_lag_bytes, Some(0.0));
    }

    #[test]
    fn file_positions_decide_without_gtids() {
        let mut h = PositionHistory::default();
        h.record_primary(&primary(10.0, "mysql-bin.000002", 300, None));
        let p = primary(11.0, "mysql-bin.000002", 400, None);
        h.record_primary(&p);
        let e = h.evidence(Some(&p), &replica(11.0, MARIADB_HEALTHY, None));
        assert_eq!(e.recovery_point, Some(at(10.0)));
        // Another server with the same file names proves nothing.
        let mut other = replica(11.0, MARIADB_HEALTHY, None);
        other.statuses[0].source_server_id = Some(7);
        let e = h.evidence(Some(&p), &other);
        assert_eq!(e.recovery_point, None);
        assert!(
            matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("server_id 7, not from the configured primary (server_id 1)")),
            "{:?}",
            e.link
        );
    }

    #[test]
    fn stopped_sql_thread_proves_nothing_and_keeps_received_apart() {
        let mut h = PositionHistory::default();
        let p = primary(20.0, "mysql-bin.000001", 2233, Some("0-1-7"));
        h.record_primary(&p);
        let e = h.evidence(Some(&p), &replica(20.0, MARIADB_SQL_STOPPED, Some("0-1-4")));
        assert_eq!(e.recovery_point, None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy("SQL thread stopped".to_string())
        );
        assert_eq!(e.received_lag_bytes, Some(0.0));
        assert_eq!(e.executed_lag_bytes, Some(2233.0 - 952.0));
        assert_eq!(e.received_lag_transactions, Some(0.0));
        assert_eq!(e.executed_lag_transactions, Some(3.0));
    }

    #[test]
    fn a_broken_link_never_reads_as_zero() {
        // Idle primary and the same position on both sides, but the I/O
        // thread is not connected: the positions must not prove "now".
        let mut h = PositionHistory::default();
        let p = primary(100.0, "mysql-bin.000002", 342, Some("0-1-9"));
        h.record_primary(&p);
        let mut r = replica(100.0, MARIADB_HEALTHY, Some("0-1-9"));
        r.statuses[0].io_running = "No".to_string();
        r.statuses[0].last_io_error = Some("Got fatal error 1236 from master".to_string());
        let e = h.evidence(Some(&p), &r);
        assert_eq!(e.recovery_point, None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy(
                "I/O thread stopped: Got fatal error 1236 from master".to_string()
            )
        );
        // Not a replica at all.
        r.statuses.clear();
        let e = h.evidence(Some(&p), &r);
        assert_eq!(e.recovery_point, None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy("replica is not replicating (no replica status)".to_string())
        );
    }

    #[test]
    fn primary_unreachable_dates_by_the_last_samples_only() {
        let mut h = PositionHistory::default();
        h.record_primary(&primary(10.0, "mysql-bin.000002", 342, Some("0-1-9")));
        let e = h.evidence(None, &replica(60.0, MARIADB_HEALTHY, Some("0-1-9")));
        assert_eq!(e.recovery_point, Some(at(10.0)));
        assert_eq!(e.executed_lag_bytes, None);
        // Received but not executed is still known from the replica alone.
        assert_eq!(e.backlog_bytes, Some(0.0));
    }

    #[test]
    fn channels_are_chosen_by_the_primary_server_id() {
        let mut h = PositionHistory::default();
        let p = primary(10.0, "mysql-bin.000002", 342, Some("0-1-9"));
        h.record_primary(&p);
        let mut r = replica(10.0, MARIADB_HEALTHY, Some("0-1-9"));
        let mut other = r.statuses[0].clone();
        other.source_server_id = Some(5);
        other.sql_running = "No".to_string();
        r.statuses.insert(0, other.clone());
        let e = h.evidence(Some(&p), &r);
        assert_eq!(e.link, LinkState::Healthy);
        r.statuses[1] = other;
        let e = h.evidence(Some(&p), &r);
        assert!(
            matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("2 replication channels")),
            "{:?}",
            e.link
        );
    }

    #[test]
    fn a_new_source_forgets_older_samples() {
        let mut samples = SourceSamples::default();
        let p = |server_id, position| SourcePosition {
            server_id,
            binlog: Some(coords("mysql-bin.000009", position)),
            gtid: None,
        };
        samples.record(Stamp::unstepped(at(0.0)), p(1, 500));
        samples.record(Stamp::unstepped(at(1.0)), p(1, 600));
        assert_eq!(samples.len(), 2);
        samples.record(Stamp::unstepped(at(2.0)), p(2, 700));
        assert_eq!(samples.len(), 1, "another server");
        samples.record(Stamp::unstepped(at(3.0)), p(2, 100));
        assert_eq!(samples.len(), 1, "RESET MASTER");
    }

    #[test]
    fn apply_rate_counts_executed_bytes_across_files() {
        let mut h = PositionHistory {
            sizes: Some(BinlogSizes::from([("mysql-bin.000001".to_string(), 2000)])),
            ..PositionHistory::default()
        };
        h.record_executed(Stamp::unstepped(at(0.0)), &coords("mysql-bin.000001", 1000));
        h.record_executed(Stamp::unstepped(at(2.0)), &coords("mysql-bin.000002", 1000));
        // 1000 bytes to the end of the first file, 1000 into the next.
        assert_eq!(h.apply.per_second(), Some(1000.0));
    }

    #[test]
    fn a_server_accepts_writes_only_when_open_and_not_following() {
        assert!(flag_set(Some("1")) && flag_set(Some("ON")));
        assert!(!flag_set(Some("0")) && !flag_set(Some("OFF")) && !flag_set(None));
        assert!(read_only_set(&[Some("0".into()), None, Some("1".into())]));
        assert!(!read_only_set(&[
            Some("0".into()),
            None,
            Some("OFF".into())
        ]));
        let healthy = ReplicaStatus::parse(&vertical(MARIADB_HEALTHY)).unwrap();
        let sql_stopped = ReplicaStatus::parse(&vertical(MARIADB_SQL_STOPPED)).unwrap();
        // The source gone: the I/O thread keeps reconnecting, still a replica.
        let reconnecting = ReplicaStatus::parse(&vertical(MARIADB_PRIMARY_GONE)).unwrap();
        assert!(healthy.threads_running() && sql_stopped.threads_running());
        assert!(reconnecting.threads_running(), "{reconnecting:?}");
        let mut stopped = healthy.clone();
        stopped.io_running = "No".to_string();
        stopped.sql_running = "No".to_string();
        assert!(!stopped.threads_running());
        // A primary: open, no replica status.
        assert!(accepts_writes(false, &[]));
        // A replica: read_only, or following even without read_only.
        assert!(!accepts_writes(true, &[]));
        assert!(!accepts_writes(false, &[healthy]));
        assert!(!accepts_writes(false, &[reconnecting]));
        // Promoted by hand (STOP SLAVE; RESET SLAVE ALL / threads stopped;
        // read_only off).
        assert!(accepts_writes(false, &[stopped.clone()]));
        assert!(!accepts_writes(true, &[stopped]));
    }

    #[test]
    fn table_names_are_quoted() {
        assert_eq!(quoted_table("rpo_heartbeat"), "`rpo_heartbeat`");
        assert_eq!(quoted_table("rpo.rpo_heartbeat"), "`rpo`.`rpo_heartbeat`");
    }
}
