//! The `postgres` kind: a primary and a streaming replica (self-managed, RDS
//! or Aurora PostgreSQL endpoints).
//!
//! Evidence, best first:
//! 1. The heartbeat canary: a row this exporter instance writes on the
//!    primary every `heartbeat.interval` with its own clock, read back on the
//!    replica. One clock writes and reads, so no clock skew enters.
//! 2. Engine positions: the primary's WAL position is sampled (with this
//!    exporter's clock) on every poll; once the replica has replayed past a
//!    sampled position, every write made before that sample is on the
//!    replica. When the replica has replayed everything the primary had
//!    written just before we asked, the recovery point is that instant — so
//!    an idle primary never reads as lag. Only while the WAL receiver is
//!    streaming: a broken link freezes the recovery point instead of reading
//!    as zero lag. `pg_last_xact_replay_timestamp()` is a lower bound used
//!    as a fallback — it is the primary's clock, so it counts only after
//!    conversion by the primary's measured clock offset (see
//!    [`crate::evidence::clock`]) and never past the replica observation.
//!
//! An Aurora PostgreSQL reader has no WAL receiver: its lag is read from
//! Aurora's own functions instead (the section "Aurora PostgreSQL readers"
//! below).
//!
//! Every poll reads `clock_timestamp()` on each side between two readings of
//! this exporter's clock: the servers' offsets (`rpo_clock_offset_seconds`).
//!
//! Connections are kept between polls (shared with every target that names
//! the same server with the same settings: `drivers::shared`) and
//! re-established after a failure on the next poll (no backoff: a side
//! that is back is seen at once). Each
//! side gets half of the poll's timeout, so a hung primary never hides what
//! the replica shows, and vice versa.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::{KindDef, KindSpec};
use crate::config::{is_sql_table_name, ConfigError, Secret, Target, TargetKeys};
use crate::drivers::postgres::{check_url, classify, connect_config, tls_connector, Connection};
use crate::drivers::within;
use crate::evidence::aurora_global::{
    AuroraGlobalCluster, AuroraGlobalInstance, AuroraGlobalSecondary,
};
use crate::evidence::clock::{convert, ClockOffset, Offset, Stamp, CLOCK_OFFSET_SECONDS};
use crate::evidence::heartbeat::HeartbeatLog;
use crate::evidence::positions::{ApplyRate, SourceSamples};
use crate::evidence::promotion::{ConfiguredSide, Direction, PairRoles, SideSeen, WriterSide};
use crate::probe::{
    from_unix_seconds, Detail, FailureReason, HeartbeatWriter, LinkState, Measurement, Probe,
    ProbeContext, ProbeError, Side,
};

use crate::metric_def::MetricDef;
use crate::probe::HEARTBEAT_TIMESTAMP_SECONDS;
// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("postgres", parse, DETAIL_FAMILIES);

/// The heartbeat table's default name.
pub const DEFAULT_HEARTBEAT_TABLE: &str = "rpo_heartbeat";

#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub primary_url: Secret,
    pub replica_url: Secret,
    pub heartbeat: Option<PostgresHeartbeat>,
    /// Extra CA certificates (PEM) trusted for TLS, e.g. the RDS bundle.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PostgresHeartbeat {
    pub interval: Duration,
    /// A table name, optionally schema-qualified; validated as identifiers.
    pub table: String,
    /// Create the table on the primary when it is missing.
    pub create_table: bool,
}

/// The keys of a `[[postgres]]` table besides the common ones and the URLs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
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
    let raw: RawPostgres = keys.take()?;
    check_url(keys, "primary_url", &primary_url)?;
    check_url(keys, "replica_url", &replica_url)?;
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
                    format!("`{table}` is not a plain table name; use lower-case letters, digits and '_' (optionally \"schema.table\")"),
                ));
            }
            Some(PostgresHeartbeat {
                interval,
                table,
                create_table: hb.create_table.unwrap_or(true),
            })
        }
    };
    keys.readable_file("tls_ca_file", raw.tls_ca_file.as_deref())?;
    Ok(Arc::new(PostgresTarget {
        primary_url,
        replica_url,
        heartbeat,
        tls_ca_file: raw.tls_ca_file,
    }))
}

impl KindSpec for PostgresTarget {
    fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat.as_ref().map(|hb| hb.interval)
    }

    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        let instance = context.instance.as_str();
        let log = context.heartbeat_log(&target.name);
        Ok(Box::new(PostgresProbe::new(target, self, instance, log)?))
    }

    fn reports_roles(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// Evidence.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static STREAMING_STANDBYS: MetricDef = MetricDef::gauge(
    "rpo_postgres_streaming_standbys",
    "Standbys streaming from the primary (pg_stat_replication, state streaming).",
);
pub static PRIMARY_WAL_POSITION_BYTES: MetricDef = MetricDef::gauge(
    "rpo_postgres_primary_wal_position_bytes",
    "The primary's current WAL write position (pg_current_wal_lsn) in bytes; its rate is the write rate.",
);
pub static REPLICATION_SLOT_ACTIVE: MetricDef = MetricDef::gauge(
    "rpo_postgres_replication_slot_active",
    "1 when a client is streaming from the replication slot.",
)
.with_labels(&["slot"]);
pub static REPLICATION_SLOT_RETAINED_BYTES: MetricDef = MetricDef::gauge(
    "rpo_postgres_replication_slot_retained_bytes",
    "WAL the primary keeps for the replication slot (current position minus restart_lsn).",
)
.with_labels(&["slot"]);
pub static REPLICA_IN_RECOVERY: MetricDef = MetricDef::gauge(
    "rpo_postgres_replica_in_recovery",
    "1 when the replica is in recovery (a standby); 0 means it was promoted.",
);
pub static WAL_RECEIVER_UP: MetricDef = MetricDef::gauge(
    "rpo_postgres_wal_receiver_up",
    "1 when the replica's WAL receiver is streaming.",
);
pub static REPLAY_PAUSED: MetricDef = MetricDef::gauge(
    "rpo_postgres_replay_paused",
    "1 when WAL replay is paused on the replica (pg_wal_replay_pause).",
);
pub static RECEIVE_LAG_BYTES: MetricDef = MetricDef::gauge(
    "rpo_postgres_receive_lag_bytes",
    "WAL written on the primary but not yet received (flushed) by the replica.",
);
pub static REPLAY_LAG_BYTES: MetricDef = MetricDef::gauge(
    "rpo_postgres_replay_lag_bytes",
    "WAL written on the primary but not yet replayed (visible) on the replica.",
);
pub static WAL_RECEIVER_LAST_MESSAGE_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_postgres_wal_receiver_last_message_timestamp_seconds",
    "When the replica's WAL receiver last heard from the primary (replica's clock).",
);
pub static LAST_REPLAYED_TRANSACTION_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_postgres_last_replayed_transaction_timestamp_seconds",
    "Commit time of the last transaction replayed on the replica (primary's clock); old on an idle primary, which is not lag.",
);
pub static AURORA_RPO_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_postgres_aurora_rpo_lag_seconds",
    "Aurora global database secondary: rpo_lag_in_msec of this secondary's region (aurora_global_db_status), in seconds; shown, never proof.",
);
pub static AURORA_DURABILITY_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_postgres_aurora_durability_lag_seconds",
    "Aurora global database secondary: durability_lag_in_msec of this secondary's region (aurora_global_db_status), in seconds; shown, never proof.",
);
pub static AURORA_VISIBILITY_LAG_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_postgres_aurora_visibility_lag_seconds",
    "Aurora global database secondary: visibility_lag_in_msec of this instance (aurora_global_db_instance_status), in seconds; shown, never proof.",
);
pub static AURORA_LAG_CALCULATION_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_postgres_aurora_lag_calculation_timestamp_seconds",
    "Aurora global database secondary: last_lag_calculation_time of this secondary's region (a server's clock); when Aurora last computed the lag figures.",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &AURORA_RPO_LAG_SECONDS,
    &AURORA_DURABILITY_LAG_SECONDS,
    &AURORA_VISIBILITY_LAG_SECONDS,
    &AURORA_LAG_CALCULATION_TIMESTAMP_SECONDS,
    &STREAMING_STANDBYS,
    &PRIMARY_WAL_POSITION_BYTES,
    &REPLICATION_SLOT_ACTIVE,
    &REPLICATION_SLOT_RETAINED_BYTES,
    &REPLICA_IN_RECOVERY,
    &WAL_RECEIVER_UP,
    &REPLAY_PAUSED,
    &RECEIVE_LAG_BYTES,
    &REPLAY_LAG_BYTES,
    &WAL_RECEIVER_LAST_MESSAGE_TIMESTAMP_SECONDS,
    &LAST_REPLAYED_TRANSACTION_TIMESTAMP_SECONDS,
    &HEARTBEAT_TIMESTAMP_SECONDS,
    &CLOCK_OFFSET_SECONDS,
];

/// A WAL position in bytes, parsed from Postgres' `X/Y` text form.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

/// What the primary said at one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryObservation {
    /// This exporter's clock just before the question was sent.
    pub observed_at: Stamp,
    pub in_recovery: bool,
    pub current_lsn: Option<u64>,
    pub streaming_standbys: i64,
    /// An Aurora writer in a global database: its own `durable_lsn`
    /// (`aurora_global_db_instance_status()`, the `MASTER_SESSION_ID` row),
    /// in the LSN space of the secondaries' rows.
    pub aurora_durable_lsn: Option<u64>,
}

/// What the replica said at one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaObservation {
    pub observed_at: Stamp,
    pub in_recovery: bool,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    /// Commit time (primary's clock) of the last replayed transaction.
    pub last_xact_replay: Option<SystemTime>,
    pub replay_paused: bool,
    /// `pg_stat_wal_receiver.status`; `None` when no WAL receiver runs.
    pub receiver_status: Option<String>,
    pub receiver_last_message: Option<SystemTime>,
    /// Set when the replica is an Aurora PostgreSQL reader: what Aurora's
    /// own functions said (then the WAL receiver fields above are empty).
    pub aurora: Option<AuroraReader>,
    /// Set when the replica is an Aurora global database secondary (an
    /// instance in another region than the writer): what
    /// `aurora_global_db_instance_status()` and `aurora_global_db_status()`
    /// said.
    pub aurora_global: Option<AuroraGlobalSecondary>,
}

impl ReplicaObservation {
    fn streaming(&self) -> bool {
        self.receiver_status.as_deref() == Some("streaming")
    }
}

/// What the engine positions prove, from one pair of observations and the
/// history of primary positions.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvidence {
    pub recovery_point: Option<SystemTime>,
    pub link: LinkState,
    pub receive_lag_bytes: Option<f64>,
    pub replay_lag_bytes: Option<f64>,
    /// Bytes not yet replayed: the replay lag, or (primary unknown) what was
    /// received but not replayed.
    pub backlog_bytes: Option<f64>,
    pub catchup_seconds: Option<f64>,
}

/// Positions remembered between polls: primary WAL samples (to date the
/// replica's replay position on our clock) and replica replay samples (for
/// the replay rate). The rule itself is [`crate::evidence::positions`].
#[derive(Debug, Default)]
pub struct PositionHistory {
    primary: SourceSamples<u64>,
    replay: ApplyRate,
    /// An Aurora writer's `durable_lsn` samples (another LSN space than
    /// `pg_current_wal_lsn()`, so kept apart).
    aurora_writer: SourceSamples<u64>,
}

impl PositionHistory {
    pub fn record_aurora_writer(&mut self, at: Stamp, lsn: u64) {
        self.aurora_writer.record(at, lsn);
    }

    pub fn record_primary(&mut self, at: Stamp, lsn: u64) {
        self.primary.record(at, lsn);
    }

    pub fn record_replay(&mut self, at: Stamp, lsn: u64) {
        self.replay.record(at, lsn);
    }

    /// The latest sampled instant at which the primary's position was at or
    /// below `replay_lsn`: every write before it is on the replica. In the
    /// wall clock of `evidence`.
    pub fn dated(&self, evidence: Stamp, replay_lsn: u64) -> Option<SystemTime> {
        self.primary.dated(evidence, |lsn| *lsn <= replay_lsn)
    }

    /// Combines one poll's observations into evidence. Record this poll's
    /// samples first. `primary_clock` is the primary's measured clock
    /// offset, which converts the replayed commit time; without it that
    /// time proves nothing.
    pub fn evidence(
        &self,
        primary: Option<&PrimaryObservation>,
        replica: &ReplicaObservation,
        primary_clock: Option<Offset>,
    ) -> EngineEvidence {
        if let Some(global) = &replica.aurora_global {
            return global.evidence(&self.aurora_writer, primary, replica);
        }
        if let Some(aurora) = &replica.aurora {
            return aurora.evidence(primary, replica);
        }
        let link = if !replica.in_recovery {
            LinkState::Unhealthy(
                "the replica is not in recovery (promoted, or not a standby)".to_string(),
            )
        } else if primary.is_some_and(|p| p.in_recovery) {
            LinkState::Unhealthy(
                "the configured primary is itself in recovery (a standby); check primary_url"
                    .to_string(),
            )
        } else if !replica.streaming() {
            LinkState::Unhealthy(match &replica.receiver_status {
                Some(status) => format!("WAL receiver is {status}, not streaming"),
                None => "no WAL receiver is running on the replica".to_string(),
            })
        } else {
            LinkState::Healthy
        };

        let current = primary
            .filter(|p| !p.in_recovery)
            .and_then(|p| p.current_lsn);
        let lag = |pos: Option<u64>| match (current, pos) {
            (Some(c), Some(p)) => Some(c.saturating_sub(p) as f64),
            _ => None,
        };
        let receive_lag_bytes = lag(replica.receive_lsn);
        let replay_lag_bytes = lag(replica.replay_lsn);

        let recovery_point = if replica.in_recovery {
            let dated = if link.is_healthy() {
                replica
                    .replay_lsn
                    .and_then(|lsn| self.dated(replica.observed_at, lsn))
            } else {
                None
            };
            let committed = replica
                .last_xact_replay
                .and_then(|t| convert(t, primary_clock, replica.observed_at));
            match (dated, committed) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        } else {
            None
        };

        let backlog =
            replay_lag_bytes.or_else(|| match (replica.receive_lsn, replica.replay_lsn) {
                (Some(r), Some(p)) => Some(r.saturating_sub(p) as f64),
                _ => None,
            });
        let catchup_seconds = backlog.map(|bytes| self.replay.catchup_seconds(bytes));

        EngineEvidence {
            recovery_point,
            link,
            receive_lag_bytes,
            replay_lag_bytes,
            backlog_bytes: backlog,
            catchup_seconds,
        }
    }
}

// ---------------------------------------------------------------------------
// The probe.
//
// Every query of a poll and every heartbeat write is sent as one unnamed
// statement with its parameter types given (`query_typed`, `execute_typed`):
// Parse, Bind, Describe, Execute and Sync in one message, one round trip,
// nothing left prepared on the server. A plain `query(&str)` first prepares
// a named statement (a round trip of its own), then runs it, then closes
// it: twice the round trips and three times the messages, on a connection
// that thousands of targets may share (see `drivers::shared`), where each
// statement waits for the ones before it.

/// Column 4 says whether this is an Aurora writer of a global database
/// (whose durable LSN is then read too): asked in the same statement, so a
/// poll sends two statements to the primary, not three.
const PRIMARY_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
     (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')::int8, \
     extract(epoch from clock_timestamp())::float8, \
     to_regproc('aurora_global_db_instance_status') IS NOT NULL";

const SLOTS_SQL: &str = "SELECT slot_name::text, active, \
     CASE WHEN restart_lsn IS NULL OR pg_is_in_recovery() THEN NULL \
          ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 END \
     FROM pg_replication_slots ORDER BY slot_name LIMIT 50";

const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(), \
     pg_last_wal_receive_lsn()::text, \
     pg_last_wal_replay_lsn()::text, \
     extract(epoch from pg_last_xact_replay_timestamp())::float8, \
     CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END, \
     (SELECT status::text FROM pg_stat_wal_receiver LIMIT 1), \
     (SELECT extract(epoch from last_msg_receipt_time)::float8 FROM pg_stat_wal_receiver LIMIT 1), \
     extract(epoch from clock_timestamp())::float8";

pub struct PostgresProbe {
    timeout: Duration,
    primary: Connection,
    replica: Connection,
    heartbeat: Option<HeartbeatSettings>,
    history: PositionHistory,
    /// Which way replication is measured: roles are detected on every
    /// poll, not assumed from the config keys (see `evidence::promotion`).
    direction: Direction,
    /// Where the heartbeat writer writes: the side accepting writes.
    writer: WriterSide,
    /// The servers' clock offsets (`clock_timestamp()` on each side).
    primary_clock: ClockOffset,
    replica_clock: ClockOffset,
    /// This target's heartbeat writes, which date the heartbeat seen.
    heartbeat_log: HeartbeatLog,
    /// What each configured server is (Aurora reader, Aurora global
    /// secondary), asked on the connection of that generation.
    primary_engine: Option<(u64, Engine)>,
    replica_engine: Option<(u64, Engine)>,
}

/// Which replica query a server needs (`AURORA_DETECT_SQL`).
#[derive(Clone, Copy)]
struct Engine {
    aurora: bool,
    aurora_global: bool,
}

#[derive(Clone)]
struct HeartbeatSettings {
    interval: Duration,
    table: String,
    create_table: bool,
    instance: String,
}

impl PostgresProbe {
    pub fn new(
        target: &Target,
        spec: &PostgresTarget,
        instance: &str,
        heartbeat_log: HeartbeatLog,
    ) -> Result<PostgresProbe, ProbeError> {
        let tls = tls_connector(&target.name, spec.tls_ca_file.as_deref())?;
        Ok(PostgresProbe {
            timeout: target.timeout,
            primary: Connection::new(
                Side::Source,
                connect_config(target, &spec.primary_url, Side::Source)?,
                tls.clone(),
            ),
            replica: Connection::new(
                Side::Replica,
                connect_config(target, &spec.replica_url, Side::Replica)?,
                tls,
            ),
            heartbeat: spec.heartbeat.as_ref().map(|hb| HeartbeatSettings {
                interval: hb.interval,
                table: hb.table.clone(),
                create_table: hb.create_table,
                instance: instance.to_string(),
            }),
            history: PositionHistory::default(),
            direction: Direction::Forward,
            writer: WriterSide::default(),
            primary_engine: None,
            replica_engine: None,
            primary_clock: ClockOffset::default(),
            replica_clock: ClockOffset::default(),
            heartbeat_log,
        })
    }

    /// What the side measured as the source says; `clock` is that
    /// server's clock offset, sampled on the way.
    async fn observe_primary(
        connection: &mut Connection,
        clock: &mut ClockOffset,
    ) -> Result<(PrimaryObservation, Vec<Detail>), ProbeError> {
        let client = connection.client().await?;
        let observed_at = Stamp::now();
        let row = client
            .query_typed_one(PRIMARY_SQL, &[])
            .await
            .map_err(|e| classify(&e, false).on(Side::Source))?;
        if let Some(server) = row.get::<_, Option<f64>>(3).and_then(from_unix_seconds) {
            clock.record(observed_at, server, Stamp::now());
        }
        let current_text: Option<String> = row.get(1);
        let current_lsn = match &current_text {
            Some(text) => Some(parse_lsn(text).ok_or_else(|| {
                ProbeError::new(
                    FailureReason::Parse,
                    format!("pg_current_wal_lsn() returned `{text}`"),
                )
                .on(Side::Source)
                .on_intact_connection()
            })?),
            None => None,
        };
        let in_recovery: bool = row.get(0);
        // An Aurora writer of a global database: its durable LSN, read after
        // `observed_at` (so never smaller than at that instant).
        let aurora_writer: bool = row.get(4);
        let aurora_durable_lsn = if in_recovery || !aurora_writer {
            None
        } else {
            aurora_writer_durable_lsn(&client).await?
        };
        let observation = PrimaryObservation {
            observed_at,
            in_recovery,
            current_lsn,
            streaming_standbys: row.get(2),
            aurora_durable_lsn,
        };
        let mut details = vec![Detail::new(
            &STREAMING_STANDBYS,
            observation.streaming_standbys as f64,
        )];
        if let Some(lsn) = current_lsn {
            details.push(Detail::new(&PRIMARY_WAL_POSITION_BYTES, lsn as f64));
        }
        // Slots need pg_monitor or a superuser; without them, skip the
        // detail rather than fail the poll.
        if let Ok(rows) = client.query_typed(SLOTS_SQL, &[]).await {
            for row in rows {
                let slot: String = row.get(0);
                let active: bool = row.get(1);
                details.push(
                    Detail::new(&REPLICATION_SLOT_ACTIVE, if active { 1.0 } else { 0.0 })
                        .with_label("slot", slot.clone()),
                );
                if let Some(retained) = row.get::<_, Option<f64>>(2) {
                    details.push(
                        Detail::new(&REPLICATION_SLOT_RETAINED_BYTES, retained)
                            .with_label("slot", slot),
                    );
                }
            }
        }
        Ok((observation, details))
    }

    /// What the side measured as the replica says, and the newest
    /// heartbeat of this exporter it holds (read whatever its role, so a
    /// promotion's loss can be measured).
    async fn observe_replica(
        connection: &mut Connection,
        clock: &mut ClockOffset,
        engine: &mut Option<(u64, Engine)>,
        heartbeat: Option<HeartbeatSettings>,
    ) -> Result<(ReplicaObservation, Option<SystemTime>), ProbeError> {
        let client = connection.client().await?;
        // Asked once per connection: an endpoint's DNS name may move to
        // another server, but only a new connection can reach it.
        let Engine {
            aurora: is_aurora,
            aurora_global: has_global,
        } = match *engine {
            Some((generation, known)) if generation == client.generation() => known,
            _ => {
                let detected = client
                    .query_typed_one(AURORA_DETECT_SQL, &[])
                    .await
                    .map_err(|e| classify(&e, false).on(Side::Replica))?;
                let known = Engine {
                    aurora: detected.get(0),
                    aurora_global: detected.get(1),
                };
                *engine = Some((client.generation(), known));
                known
            }
        };
        let global = if has_global {
            AuroraGlobalSecondary::observe(&client, clock).await?
        } else {
            None
        };
        let observation = if let Some(observation) = global {
            observation
        } else if is_aurora {
            AuroraReader::observe(&client, clock).await?
        } else {
            Self::observe_streaming_replica(&client, clock).await?
        };
        let heartbeat_seen = match heartbeat {
            None => None,
            Some(hb) => {
                let sql = format!("SELECT ts FROM {} WHERE instance = $1", hb.table);
                match client
                    .query_typed_opt(&sql, &[(&hb.instance, Type::TEXT)])
                    .await
                {
                    Ok(row) => row.and_then(|r| from_unix_seconds(r.get::<_, f64>(0))),
                    // Not created yet, or not replicated yet: no heartbeat evidence.
                    Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => None,
                    Err(e) => return Err(classify(&e, false).on(Side::Replica)),
                }
            }
        };
        Ok((observation, heartbeat_seen))
    }

    /// The standard replica query (`pg_stat_wal_receiver` and the
    /// `pg_last_wal_*` functions, which Aurora does not support).
    async fn observe_streaming_replica(
        client: &tokio_postgres::Client,
        clock: &mut ClockOffset,
    ) -> Result<ReplicaObservation, ProbeError> {
        let observed_at = Stamp::now();
        let row = client
            .query_typed_one(REPLICA_SQL, &[])
            .await
            .map_err(|e| classify(&e, false).on(Side::Replica))?;
        if let Some(server) = row.get::<_, Option<f64>>(7).and_then(from_unix_seconds) {
            clock.record(observed_at, server, Stamp::now());
        }
        let lsn = |i: usize| -> Result<Option<u64>, ProbeError> {
            match row.get::<_, Option<String>>(i) {
                None => Ok(None),
                Some(text) => parse_lsn(&text).map(Some).ok_or_else(|| {
                    ProbeError::new(
                        FailureReason::Parse,
                        format!("replica returned WAL position `{text}`"),
                    )
                    .on(Side::Replica)
                    .on_intact_connection()
                }),
            }
        };
        Ok(ReplicaObservation {
            observed_at,
            in_recovery: row.get(0),
            receive_lsn: lsn(1)?,
            replay_lsn: lsn(2)?,
            last_xact_replay: row.get::<_, Option<f64>>(3).and_then(from_unix_seconds),
            replay_paused: row.get(4),
            receiver_status: row.get(5),
            receiver_last_message: row.get::<_, Option<f64>>(6).and_then(from_unix_seconds),
            aurora: None,
            aurora_global: None,
        })
    }

    /// Whether the replica hides its WAL receiver from the monitoring user:
    /// without `pg_read_all_stats` (which `pg_monitor` includes) every column
    /// of `pg_stat_wal_receiver` but `pid` reads NULL, exactly like "no
    /// receiver". Then an `auth` failure naming the grant.
    async fn receiver_hidden(&mut self) -> Result<Option<ProbeError>, ProbeError> {
        let user = self.replica.user().to_string();
        let client = self.replica.client().await?;
        let row = client
            .query_one(
                "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), \
                 EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL)",
                &[],
            )
            .await
            .map_err(|e| classify(&e, false).on(Side::Replica))?;
        let (may_read, receiver_running): (bool, bool) = (row.get(0), row.get(1));
        if may_read {
            return Ok(None);
        }
        Ok(Some(
            ProbeError::new(
                FailureReason::Auth,
                format!(
                    "the monitoring user {user} lacks pg_monitor (pg_read_all_stats) on the replica, so pg_stat_wal_receiver hides the WAL receiver's state{}; as an administrator run: GRANT pg_monitor TO {user};",
                    if receiver_running {
                        " (a receiver is running)"
                    } else {
                        ""
                    }
                ),
            )
            .on(Side::Replica),
        ))
    }

    async fn poll_once(&mut self) -> Measurement {
        let started = Instant::now();
        let half = self.timeout / 2;
        let mut measurement = Measurement::new(Stamp::now().wall);
        let mut details = Vec::new();
        let direction = self.direction;
        let heartbeat = self.heartbeat.clone();
        let mut roles = PairRoles {
            direction,
            heartbeat_configured: heartbeat.is_some(),
            ..PairRoles::default()
        };

        // The primary first: the caught-up test needs its position read
        // before the replica's.
        // Each server's clock offset goes with the server, whichever way
        // replication runs.
        let (source, replica_side, source_clock, replica_clock, replica_engine) = match direction {
            Direction::Forward => (
                &mut self.primary,
                &mut self.replica,
                &mut self.primary_clock,
                &mut self.replica_clock,
                &mut self.replica_engine,
            ),
            Direction::Reverse => (
                &mut self.replica,
                &mut self.primary,
                &mut self.replica_clock,
                &mut self.primary_clock,
                &mut self.primary_engine,
            ),
        };
        let primary = match within(
            started + half,
            Self::observe_primary(source, &mut *source_clock),
        )
        .await
        {
            Ok((observation, primary_details)) => {
                source.answered();
                measurement.source_reachable = Some(true);
                details.extend(primary_details);
                if let Some(offset) = source_clock.estimate() {
                    details.push(offset.detail(Side::Source, observation.observed_at));
                }
                if let (false, Some(lsn)) = (observation.in_recovery, observation.current_lsn) {
                    self.history.record_primary(observation.observed_at, lsn);
                }
                if let (false, Some(lsn)) =
                    (observation.in_recovery, observation.aurora_durable_lsn)
                {
                    self.history
                        .record_aurora_writer(observation.observed_at, lsn);
                }
                *roles.side_mut(direction.source()) = SideSeen {
                    writable: Some(!observation.in_recovery),
                    write_position: observation.current_lsn,
                    ..SideSeen::default()
                };
                Some(observation)
            }
            Err(err) => {
                let err = source.explain(err);
                source.reset_after(&err);
                measurement.source_reachable = Some(false);
                measurement.failures.push(err.on(Side::Source));
                None
            }
        };

        match within(
            started + self.timeout,
            Self::observe_replica(
                &mut *replica_side,
                &mut *replica_clock,
                replica_engine,
                heartbeat,
            ),
        )
        .await
        {
            Ok((replica, heartbeat_seen)) => {
                replica_side.answered();
                measurement.replica_reachable = Some(true);
                measurement.evidence_time = replica.observed_at.wall;
                if let Some(lsn) = replica.replay_lsn {
                    self.history.record_replay(replica.observed_at, lsn);
                }
                if let Some(offset) = replica_clock.estimate() {
                    details.push(offset.detail(Side::Replica, replica.observed_at));
                }
                let evidence =
                    self.history
                        .evidence(primary.as_ref(), &replica, source_clock.estimate());
                // Only heartbeats this process wrote (or an earlier run, not
                // later than the evidence) are dated; see evidence::heartbeat.
                let heartbeat_dated = heartbeat_seen
                    .and_then(|seen| self.heartbeat_log.date(seen, replica.observed_at).proven());
                *roles.side_mut(direction.replica()) = SideSeen {
                    writable: Some(!replica.in_recovery),
                    heartbeat: heartbeat_dated,
                    write_position: None,
                    replayed_position: replica.replay_lsn,
                };
                // A heartbeat read on a server that accepts writes proves
                // nothing about replication (after a promotion this exporter
                // writes it there itself).
                let heartbeat = heartbeat_dated.filter(|_| replica.in_recovery);
                measurement.recovery_point = match (evidence.recovery_point, heartbeat) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                measurement.link = evidence.link.clone();
                measurement.backlog_bytes = evidence.backlog_bytes;
                measurement.catchup_seconds = evidence.catchup_seconds;
                details.extend(replica_details(&replica, &evidence, heartbeat_seen));
                if replica.in_recovery
                    && replica.receiver_status.is_none()
                    && replica.aurora.is_none()
                    && replica.aurora_global.is_none()
                {
                    // "No WAL receiver" may only mean "not allowed to see it".
                    match within(started + self.timeout, self.receiver_hidden()).await {
                        Ok(None) => {}
                        Ok(Some(missing_grant)) => {
                            measurement.link = LinkState::Unknown(missing_grant.message.clone());
                            details.retain(|d| !std::ptr::eq(d.family, &WAL_RECEIVER_UP));
                            measurement.failures.push(missing_grant);
                        }
                        Err(err) => measurement.failures.push(err.on(Side::Replica)),
                    }
                }
            }
            Err(err) => {
                let err = replica_side.explain(err);
                replica_side.reset_after(&err);
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

    /// After a poll: see [`Direction::follow`].
    fn follow_roles(&mut self, roles: &PairRoles) {
        if self.direction.follow(&self.writer, roles) {
            self.history = PositionHistory::default();
        }
    }
}

fn replica_details(
    replica: &ReplicaObservation,
    evidence: &EngineEvidence,
    heartbeat_seen: Option<SystemTime>,
) -> Vec<Detail> {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut details = vec![Detail::new(&REPLICA_IN_RECOVERY, flag(replica.in_recovery))];
    // An Aurora reader has no WAL receiver and no replay to pause (it reads
    // the shared storage): no series rather than a 0 that reads as broken.
    if replica.aurora.is_none() && replica.aurora_global.is_none() {
        details.push(Detail::new(&WAL_RECEIVER_UP, flag(replica.streaming())));
        details.push(Detail::new(&REPLAY_PAUSED, flag(replica.replay_paused)));
    }
    let mut optional = |family: &'static MetricDef, value: Option<f64>| {
        if let Some(v) = value {
            details.push(Detail::new(family, v));
        }
    };
    optional(&RECEIVE_LAG_BYTES, evidence.receive_lag_bytes);
    optional(&REPLAY_LAG_BYTES, evidence.replay_lag_bytes);
    optional(
        &WAL_RECEIVER_LAST_MESSAGE_TIMESTAMP_SECONDS,
        replica
            .receiver_last_message
            .map(crate::probe::unix_seconds),
    );
    optional(
        &LAST_REPLAYED_TRANSACTION_TIMESTAMP_SECONDS,
        replica.last_xact_replay.map(crate::probe::unix_seconds),
    );
    optional(
        &HEARTBEAT_TIMESTAMP_SECONDS,
        heartbeat_seen.map(crate::probe::unix_seconds),
    );
    if let Some(global) = &replica.aurora_global {
        let seconds = |ms: Option<f64>| {
            ms.filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v / 1000.0)
        };
        optional(&AURORA_RPO_LAG_SECONDS, seconds(global.rpo_lag_ms));
        optional(
            &AURORA_DURABILITY_LAG_SECONDS,
            seconds(global.durability_lag_ms),
        );
        optional(
            &AURORA_VISIBILITY_LAG_SECONDS,
            seconds(global.visibility_lag_ms),
        );
        optional(
            &AURORA_LAG_CALCULATION_TIMESTAMP_SECONDS,
            global.last_lag_calculation.map(crate::probe::unix_seconds),
        );
    }
    details
}

impl Probe for PostgresProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(async move { Ok(self.poll_once().await) })
    }

    fn reset(&mut self) {
        self.primary.reset();
        self.replica.reset();
    }

    fn heartbeat_writer(&mut self) -> Option<Box<dyn HeartbeatWriter>> {
        let settings = self.heartbeat.clone()?;
        Some(Box::new(PostgresHeartbeatWriter {
            connection: self.primary.twin(),
            user: self.primary.user().to_string(),
            settings,
            table_ready: false,
            other: self.replica.twin(),
            side: ConfiguredSide::Primary,
            writer: self.writer.clone(),
            log: self.heartbeat_log.clone(),
        }))
    }
}

/// Writes this exporter's heartbeat row over a connection apart from the
/// polls' (shared with other targets' heartbeat writers to the server), so a slow
/// poll never delays a heartbeat: on the primary, or, after a promotion,
/// on the side the probe saw accepting writes.
struct PostgresHeartbeatWriter {
    /// The connection to `side`.
    connection: Connection,
    user: String,
    settings: HeartbeatSettings,
    table_ready: bool,
    /// The connection to the other configured side, kept for a switch.
    other: Connection,
    side: ConfiguredSide,
    writer: WriterSide,
    /// Where each value is logged before it is sent, to date it when seen.
    log: HeartbeatLog,
}

impl PostgresHeartbeatWriter {
    fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (instance text PRIMARY KEY, ts double precision NOT NULL, written_at timestamptz NOT NULL DEFAULT now())",
            self.settings.table
        )
    }

    fn grants_help(&self) -> String {
        format!(
            "as an administrator on the primary run: {}; GRANT SELECT, INSERT, UPDATE ON {} TO {}; (or remove `heartbeat` from the target to rely on engine positions)",
            self.create_sql(),
            self.settings.table,
            self.user
        )
    }

    async fn write_once(&mut self, at: SystemTime) -> Result<(), ProbeError> {
        let wanted = self.writer.get();
        if wanted != self.side {
            std::mem::swap(&mut self.connection, &mut self.other);
            self.side = wanted;
            self.table_ready = false;
        }
        self.log.record(at);
        let create_sql = self.create_sql();
        let grants = self.grants_help();
        let table = self.settings.table.clone();
        let create = self.settings.create_table;
        let client = self
            .connection
            .client()
            .await
            .map_err(|e| e.on(Side::Source))?;
        if !self.table_ready {
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .await
                .map_err(|e| classify(&e, false).on(Side::Source))?
                .get(0);
            if !exists {
                if !create {
                    return Err(ProbeError::new(
                        FailureReason::Config,
                        format!("heartbeat table {table} does not exist and create_table = false; {grants}"),
                    )
                    .on(Side::Source));
                }
                client.batch_execute(&create_sql).await.map_err(|e| {
                    let mut err = classify(&e, false).on(Side::Source);
                    err.message = format!(
                        "cannot create heartbeat table {table} ({}); {grants}",
                        err.message
                    );
                    err
                })?;
            }
            self.table_ready = true;
        }
        let sql = format!(
            "INSERT INTO {table} (instance, ts) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET ts = EXCLUDED.ts, written_at = now()"
        );
        let ts = crate::probe::unix_seconds(at);
        match client
            .execute_typed(
                &sql,
                &[(&self.settings.instance, Type::TEXT), (&ts, Type::FLOAT8)],
            )
            .await
        {
            Ok(_) => {
                drop(client);
                self.connection.answered();
                Ok(())
            }
            Err(e) => {
                let mut err = classify(&e, false).on(Side::Source);
                if err.reason == FailureReason::Auth {
                    err.message = format!(
                        "cannot write heartbeat to {table} ({}); {grants}",
                        err.message
                    );
                }
                if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
                    self.table_ready = false;
                }
                Err(err)
            }
        }
    }
}

impl HeartbeatWriter for PostgresHeartbeatWriter {
    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn write(&mut self, at: SystemTime) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.write_once(at))
    }

    fn reset(&mut self, after: &ProbeError) {
        self.connection.reset_after(after);
    }

    fn destination(&self) -> ConfiguredSide {
        self.side
    }
}

// ---------------------------------------------------------------------------
// Aurora PostgreSQL readers (SQL level).
//
// Aurora PostgreSQL does not support `pg_stat_wal_receiver` nor
// `pg_last_wal_receive_lsn()`, so the standard replica query fails on every
// Aurora reader. An Aurora reader is recognised by its own functions and its
// lag is read from `aurora_replica_status()`, joined on
// `aurora_db_instance_identifier()` (the row of the instance this connection
// reached; Aurora user guide, "aurora_replica_status" and
// "aurora_db_instance_identifier"). Its `replica_lag_in_msec` is how far
// this reader is behind the writer, in milliseconds. No Aurora runs here:
// the tests define these functions in a real Postgres with the documented
// output shape.
//
// The rule: the lag is dated on this exporter's clock, from the instant
// before the question was sent, so the recovery point it gives is never
// later than the truth (Aurora measured it at or after that instant). A
// missing or negative lag proves nothing (the link is unknown), and neither
// does a lag read while the writer did not answer this poll: a reader that
// lost its writer may keep reporting its last lag. The heartbeat works
// unchanged and is taken when it proves more.

const AURORA_DETECT_SQL: &str = "SELECT to_regproc('aurora_replica_status') IS NOT NULL \
     AND to_regproc('aurora_db_instance_identifier') IS NOT NULL, \
     to_regproc('aurora_global_db_instance_status') IS NOT NULL \
     AND to_regproc('aurora_global_db_status') IS NOT NULL \
     AND to_regproc('aurora_db_instance_identifier') IS NOT NULL";

const AURORA_REPLICA_SQL: &str = "SELECT pg_is_in_recovery(), \
     (SELECT s.replica_lag_in_msec::float8 FROM aurora_replica_status() s \
      WHERE s.server_id = aurora_db_instance_identifier() LIMIT 1), \
     aurora_db_instance_identifier()::text, \
     extract(epoch from clock_timestamp())::float8";

/// What an Aurora reader said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AuroraReader {
    /// `aurora_db_instance_identifier()`.
    pub instance: Option<String>,
    /// `replica_lag_in_msec` of this instance's row; `None` when the row or
    /// the value is missing.
    pub lag_ms: Option<f64>,
}

impl AuroraReader {
    async fn observe(
        client: &tokio_postgres::Client,
        clock: &mut ClockOffset,
    ) -> Result<ReplicaObservation, ProbeError> {
        let observed_at = Stamp::now();
        let row = client
            .query_typed_one(AURORA_REPLICA_SQL, &[])
            .await
            .map_err(|e| classify(&e, false).on(Side::Replica))?;
        if let Some(server) = row.get::<_, Option<f64>>(3).and_then(from_unix_seconds) {
            clock.record(observed_at, server, Stamp::now());
        }
        Ok(ReplicaObservation {
            observed_at,
            in_recovery: row.get(0),
            receive_lsn: None,
            replay_lsn: None,
            last_xact_replay: None,
            replay_paused: false,
            receiver_status: None,
            receiver_last_message: None,
            aurora: Some(AuroraReader {
                instance: row.get(2),
                lag_ms: row.get(1),
            }),
            aurora_global: None,
        })
    }

    /// The evidence of one Aurora observation (see the rule above).
    fn evidence(
        &self,
        primary: Option<&PrimaryObservation>,
        replica: &ReplicaObservation,
    ) -> EngineEvidence {
        let lag = self
            .lag_ms
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0));
        let instance = self.instance.as_deref().unwrap_or("this instance");
        let link = if !replica.in_recovery {
            LinkState::Unhealthy(
                "the Aurora instance is not a reader (the writer, or promoted)".to_string(),
            )
        } else if primary.is_some_and(|p| p.in_recovery) {
            LinkState::Unhealthy(
                "the configured primary is itself in recovery (a reader); check primary_url"
                    .to_string(),
            )
        } else if lag.is_none() {
            LinkState::Unknown(format!(
                "aurora_replica_status() gives no replica_lag_in_msec for {instance}"
            ))
        } else {
            LinkState::Healthy
        };
        let recovery_point = match (primary, lag) {
            (Some(_), Some(lag)) if link.is_healthy() => replica.observed_at.wall.checked_sub(lag),
            _ => None,
        };
        EngineEvidence {
            recovery_point,
            link,
            receive_lag_bytes: None,
            replay_lag_bytes: None,
            backlog_bytes: None,
            catchup_seconds: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Aurora PostgreSQL global database secondaries (SQL level).
//
// An instance of a secondary cluster (another region than the writer) is
// described by `aurora_global_db_instance_status()` (one row per instance
// of the global database: `server_id`, `session_id` — `MASTER_SESSION_ID`
// for the writer —, `aws_region`, `durable_lsn`, `highest_lsn_rcvd`,
// `visibility_lag_in_msec`, ...) and `aurora_global_db_status()` (one row
// per cluster: `aws_region`, `highest_lsn_written`, `durability_lag_in_msec`,
// `rpo_lag_in_msec`, `last_lag_calculation_time`; -1 and the epoch for the
// primary cluster). Both can be run on any instance of the global database
// (Aurora user guide, "aurora_global_db_instance_status",
// "aurora_global_db_status", "Monitoring Aurora PostgreSQL-based global
// databases"). Instance names repeat across regions (the guide's example
// has `db-119-001-global-instance-1` in two regions), so every row of this
// instance's name counts and the worst one is taken.
//
// The rule: the lag figures are shown, never proof. `rpo_lag_in_msec` is the
// difference between the newest commit stored on the secondary and the
// newest on the primary as of `last_lag_calculation_time`, a server's clock
// the guide does not name: on a primary that wrote nothing lately, "now −
// lag" would be later than the truth, and a stalled calculation keeps its
// last figure. What proves a recovery point are LSNs in one space: the
// writer's `durable_lsn` is sampled on this exporter's clock through
// `primary_url` (the `MASTER_SESSION_ID` row, asked on the writer), and the
// secondary holds every write made before the latest sample at or below its
// own durable position — the lesser of this instance's `durable_lsn` and its
// cluster's `highest_lsn_written` (what a promoted secondary would recover).
// When the writer does not answer (its region lost), earlier samples date
// the secondary's position, so the exposure grows from the last contact.
// The heartbeat works unchanged and wins when it proves more. No Aurora runs
// here: the tests define these functions in a real Postgres pair.

const AURORA_GLOBAL_INSTANCES_SQL: &str = "SELECT pg_is_in_recovery(), \
     aurora_db_instance_identifier()::text, \
     extract(epoch from clock_timestamp())::float8, \
     s.server_id::text, s.session_id::text, s.aws_region::text, \
     s.durable_lsn::text, s.highest_lsn_rcvd::text, s.visibility_lag_in_msec::float8 \
     FROM aurora_global_db_instance_status() s";

const AURORA_GLOBAL_CLUSTERS_SQL: &str = "SELECT aws_region::text, highest_lsn_written::text, \
     durability_lag_in_msec::float8, rpo_lag_in_msec::float8, \
     extract(epoch from last_lag_calculation_time)::float8 \
     FROM aurora_global_db_status()";

const AURORA_WRITER_LSN_SQL: &str =
    "SELECT durable_lsn::text FROM aurora_global_db_instance_status() \
     WHERE session_id = 'MASTER_SESSION_ID' LIMIT 1";

/// An Aurora LSN as the functions show it: a plain number (the guide's
/// examples), or Postgres' `X/Y` form.
pub fn parse_aurora_lsn(text: &str) -> Option<u64> {
    let text = text.trim();
    text.parse::<u64>().ok().or_else(|| parse_lsn(text))
}

/// The writer's own durable LSN, on an Aurora writer of a global database
/// (`PRIMARY_SQL` found `aurora_global_db_instance_status()`); `None` when
/// the function has no row for the writer's session.
async fn aurora_writer_durable_lsn(
    client: &tokio_postgres::Client,
) -> Result<Option<u64>, ProbeError> {
    let row = client
        .query_typed_opt(AURORA_WRITER_LSN_SQL, &[])
        .await
        .map_err(|e| classify(&e, false).on(Side::Source))?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|text| parse_aurora_lsn(&text)))
}

impl AuroraGlobalSecondary {
    /// Reads both functions on the replica; `None` when this instance is
    /// not a global database secondary.
    async fn observe(
        client: &tokio_postgres::Client,
        clock: &mut ClockOffset,
    ) -> Result<Option<ReplicaObservation>, ProbeError> {
        let err = |e: tokio_postgres::Error| classify(&e, false).on(Side::Replica);
        let observed_at = Stamp::now();
        let rows = client
            .query_typed(AURORA_GLOBAL_INSTANCES_SQL, &[])
            .await
            .map_err(err)?;
        let cluster_rows = client
            .query_typed(AURORA_GLOBAL_CLUSTERS_SQL, &[])
            .await
            .map_err(err)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        if let Some(server) = first.get::<_, Option<f64>>(2).and_then(from_unix_seconds) {
            clock.record(observed_at, server, Stamp::now());
        }
        let in_recovery: bool = first.get(0);
        let instance: Option<String> = first.get(1);
        let Some(instance) = instance else {
            return Ok(None);
        };
        let lsn = |text: Option<String>| -> Result<Option<u64>, ProbeError> {
            match text {
                None => Ok(None),
                Some(text) => parse_aurora_lsn(&text).map(Some).ok_or_else(|| {
                    ProbeError::new(
                        FailureReason::Parse,
                        format!("an Aurora global database function returned LSN `{text}`"),
                    )
                    .on(Side::Replica)
                    .on_intact_connection()
                }),
            }
        };
        let mut instances = Vec::new();
        for row in &rows {
            instances.push(AuroraGlobalInstance {
                server_id: row.get::<_, Option<String>>(3).unwrap_or_default(),
                session_id: row.get::<_, Option<String>>(4).unwrap_or_default(),
                region: row.get::<_, Option<String>>(5).unwrap_or_default(),
                durable_lsn: lsn(row.get(6))?,
                highest_lsn_rcvd: lsn(row.get(7))?,
                visibility_lag_ms: row.get(8),
            });
        }
        let mut clusters = Vec::new();
        for row in &cluster_rows {
            clusters.push(AuroraGlobalCluster {
                region: row.get::<_, Option<String>>(0).unwrap_or_default(),
                highest_lsn_written: lsn(row.get(1))?,
                durability_lag_ms: row.get(2),
                rpo_lag_ms: row.get(3),
                last_lag_calculation: row.get::<_, Option<f64>>(4).and_then(from_unix_seconds),
            });
        }
        let Some(global) = AuroraGlobalSecondary::from_rows(&instance, &instances, &clusters)
        else {
            return Ok(None);
        };
        Ok(Some(ReplicaObservation {
            observed_at,
            in_recovery,
            receive_lsn: None,
            replay_lsn: None,
            last_xact_replay: None,
            replay_paused: false,
            receiver_status: None,
            receiver_last_message: None,
            aurora: None,
            aurora_global: Some(global),
        }))
    }

    /// The evidence of one observation (see the rule above): the
    /// secondary's durable position dated by the writer's samples.
    fn evidence(
        &self,
        writer: &SourceSamples<u64>,
        primary: Option<&PrimaryObservation>,
        replica: &ReplicaObservation,
    ) -> EngineEvidence {
        let instance = &self.instance;
        let link = if !replica.in_recovery {
            LinkState::Unhealthy(format!(
                "the Aurora instance {instance} is not a reader (promoted, or detached from the global database)"
            ))
        } else if primary.is_some_and(|p| p.in_recovery) {
            LinkState::Unhealthy(
                "the configured primary is itself in recovery (a reader); check primary_url"
                    .to_string(),
            )
        } else if self.regions.is_empty() {
            LinkState::Unknown(format!(
                "aurora_global_db_instance_status() shows no secondary-region row for {instance}"
            ))
        } else if self.durable_lsn.is_none() {
            LinkState::Unknown(format!(
                "the Aurora global database functions give no durable LSN for {instance} ({})",
                self.regions.join(", ")
            ))
        } else if primary.is_some_and(|p| p.aurora_durable_lsn.is_none()) {
            LinkState::Unknown(
                "the writer (primary_url) shows no durable_lsn in aurora_global_db_instance_status(); point primary_url at the global database's writer (cluster) endpoint"
                    .to_string(),
            )
        } else {
            LinkState::Healthy
        };
        // Dated by the writer's samples, taken now or before: a lost writer
        // region leaves the earlier samples, so the exposure grows from the
        // last contact. Not while the instance is promoted or misnamed.
        let recovery_point = match (&link, self.durable_lsn) {
            (LinkState::Unhealthy(_), _) => None,
            (_, Some(held)) if replica.in_recovery => {
                writer.dated(replica.observed_at, |lsn| *lsn <= held)
            }
            _ => None,
        };
        EngineEvidence {
            recovery_point,
            link,
            receive_lag_bytes: None,
            replay_lag_bytes: None,
            backlog_bytes: None,
            catchup_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        crate::probe::from_unix_seconds(1_700_000_000.0 + secs).unwrap()
    }

    /// A reading of our clocks at `secs`, no step.
    fn st(secs: f64) -> Stamp {
        Stamp::unstepped(at(secs))
    }

    /// A converted commit time: `secs` less the 1 ms reading slack.
    fn assert_converted(actual: Option<SystemTime>, secs: f64) {
        let actual = crate::probe::unix_seconds(actual.expect("a recovery point"));
        let expected = crate::probe::unix_seconds(at(secs)) - 0.001;
        assert!((actual - expected).abs() < 1e-5, "{actual} != {expected}");
    }

    /// The primary's clock offset measured as `ahead` seconds (exactly).
    fn primary_clock(ahead: f64) -> Option<Offset> {
        let mut clock = ClockOffset::default();
        clock.record(st(0.0), at(ahead), st(0.0));
        clock.estimate()
    }

    fn primary(t: f64, lsn: u64) -> PrimaryObservation {
        PrimaryObservation {
            observed_at: st(t),
            in_recovery: false,
            current_lsn: Some(lsn),
            streaming_standbys: 1,
            aurora_durable_lsn: None,
        }
    }

    fn replica(
        t: f64,
        replay: u64,
        last_xact: Option<f64>,
        status: Option<&str>,
    ) -> ReplicaObservation {
        ReplicaObservation {
            observed_at: st(t),
            in_recovery: true,
            receive_lsn: Some(replay),
            replay_lsn: Some(replay),
            last_xact_replay: last_xact.map(at),
            replay_paused: false,
            receiver_status: status.map(str::to_string),
            receiver_last_message: Some(at(t)),
            aurora: None,
            aurora_global: None,
        }
    }

    fn aurora_reader(t: f64, lag_ms: Option<f64>) -> ReplicaObservation {
        ReplicaObservation {
            receive_lsn: None,
            replay_lsn: None,
            last_xact_replay: None,
            receiver_status: None,
            receiver_last_message: None,
            aurora: Some(AuroraReader {
                instance: Some("erp-reader-1".to_string()),
                lag_ms,
            }),
            ..replica(t, 0, None, None)
        }
    }

    #[test]
    fn aurora_lag_dates_the_recovery_point_on_our_clock_never_later() {
        let h = PositionHistory::default();
        let p = primary(99.0, 5000);
        // Asked at 100 s, 1.5 s behind: everything up to 98.5 s is there.
        let e = h.evidence(Some(&p), &aurora_reader(100.0, Some(1500.0)), None);
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.recovery_point, Some(at(98.5)));
        // Caught up: the instant we asked, not later.
        let e = h.evidence(Some(&p), &aurora_reader(100.0, Some(0.0)), None);
        assert_eq!(e.recovery_point, Some(at(100.0)));
        // No lag for this instance, or a nonsense one: unknown, no proof.
        for lag in [None, Some(-1.0), Some(f64::NAN)] {
            let e = h.evidence(Some(&p), &aurora_reader(100.0, lag), None);
            assert_eq!(e.recovery_point, None, "{lag:?}");
            assert!(
                matches!(e.link, LinkState::Unknown(ref why) if why.contains("erp-reader-1")),
                "{lag:?}: {:?}",
                e.link
            );
        }
        // The writer did not answer: a reader may keep its last lag.
        let e = h.evidence(None, &aurora_reader(100.0, Some(0.0)), None);
        assert_eq!(e.recovery_point, None);
        // Not a reader any more: proves nothing about replication.
        let mut promoted = aurora_reader(100.0, Some(0.0));
        promoted.in_recovery = false;
        let e = h.evidence(Some(&p), &promoted, None);
        assert_eq!(e.recovery_point, None);
        assert!(matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("not a reader")));
    }

    fn instance_row(
        server: &str,
        session: &str,
        region: &str,
        durable: Option<u64>,
    ) -> AuroraGlobalInstance {
        AuroraGlobalInstance {
            server_id: server.to_string(),
            session_id: session.to_string(),
            region: region.to_string(),
            durable_lsn: durable,
            highest_lsn_rcvd: durable.map(|d| d + 12),
            visibility_lag_ms: Some(996.0),
        }
    }

    fn cluster_row(region: &str, written: Option<u64>, lag: f64) -> AuroraGlobalCluster {
        AuroraGlobalCluster {
            region: region.to_string(),
            highest_lsn_written: written,
            durability_lag_ms: Some(lag),
            rpo_lag_ms: Some(lag),
            last_lag_calculation: Some(at(0.0)),
        }
    }

    /// The user guide's example: the same instance name in two secondary
    /// regions; the writer in eu-west-1.
    fn guide_rows() -> (Vec<AuroraGlobalInstance>, Vec<AuroraGlobalCluster>) {
        (
            vec![
                instance_row(
                    "db-119-001-instance-01",
                    "MASTER_SESSION_ID",
                    "eu-west-1",
                    Some(2534560273),
                ),
                instance_row(
                    "db-119-001-instance-02",
                    "4ecff34d",
                    "eu-west-1",
                    Some(2534560266),
                ),
                instance_row(
                    "db-119-001-global-instance-1",
                    "a331ffbb",
                    "eu-central-1",
                    Some(2534560254),
                ),
                instance_row(
                    "db-119-001-global-instance-1",
                    "e0955367",
                    "eu-west-2",
                    Some(2534560250),
                ),
            ],
            vec![
                AuroraGlobalCluster {
                    last_lag_calculation: from_unix_seconds(0.0),
                    ..cluster_row("eu-west-1", Some(2534560273), -1.0)
                },
                cluster_row("eu-central-1", Some(2534560260), 410.0),
                cluster_row("eu-west-2", Some(2534560260), 0.0),
            ],
        )
    }

    #[test]
    fn aurora_global_secondary_takes_the_worst_row_of_its_name() {
        let (instances, clusters) = guide_rows();
        let g =
            AuroraGlobalSecondary::from_rows("db-119-001-global-instance-1", &instances, &clusters)
                .expect("a secondary");
        assert_eq!(g.writer_region.as_deref(), Some("eu-west-1"));
        assert_eq!(g.regions, vec!["eu-central-1", "eu-west-2"]);
        assert_eq!(g.durable_lsn, Some(2534560250));
        assert_eq!(g.rpo_lag_ms, Some(410.0));
        // A reader in the writer's region is not a global secondary, nor
        // is any instance of a database in one region.
        assert_eq!(
            AuroraGlobalSecondary::from_rows("db-119-001-instance-02", &instances, &clusters),
            None
        );
        assert_eq!(
            AuroraGlobalSecondary::from_rows(
                "db-119-001-instance-02",
                &instances[..2],
                &clusters[..1]
            ),
            None
        );
        // A row without a durable LSN makes it unknown.
        let mut missing = instances.clone();
        missing[3].durable_lsn = None;
        let g =
            AuroraGlobalSecondary::from_rows("db-119-001-global-instance-1", &missing, &clusters)
                .unwrap();
        assert_eq!(g.durable_lsn, None);
        // The writer's row gone from view (its region lost): the -1 cluster
        // row still names the writer's region.
        let g = AuroraGlobalSecondary::from_rows(
            "db-119-001-global-instance-1",
            &instances[2..],
            &clusters,
        )
        .unwrap();
        assert_eq!(g.writer_region.as_deref(), Some("eu-west-1"));
        assert_eq!(g.durable_lsn, Some(2534560250));
        assert_eq!(parse_aurora_lsn(" 93763985102 "), Some(93763985102));
        assert_eq!(parse_aurora_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_aurora_lsn("x"), None);
    }

    #[test]
    fn aurora_global_lag_figures_prove_nothing_the_writer_samples_do() {
        let (instances, clusters) = guide_rows();
        let g =
            AuroraGlobalSecondary::from_rows("db-119-001-global-instance-1", &instances, &clusters)
                .unwrap();
        let secondary = |t: f64, g: &AuroraGlobalSecondary| ReplicaObservation {
            aurora_global: Some(g.clone()),
            ..aurora_reader(t, None)
        };
        let writer = |t: f64, lsn: u64| PrimaryObservation {
            aurora_durable_lsn: Some(lsn),
            ..primary(t, 0)
        };
        let mut h = PositionHistory::default();
        h.record_aurora_writer(st(10.0), 2534560200);
        h.record_aurora_writer(st(11.0), 2534560250);
        h.record_aurora_writer(st(12.0), 2534560300);
        // Holds the sample of 11 s, not that of 12 s: dated 11 s, whatever
        // the lag figures say (rpo_lag 410 ms as of the epoch).
        let e = h.evidence(Some(&writer(12.0, 2534560300)), &secondary(12.5, &g), None);
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.recovery_point, Some(at(11.0)));
        // The writer's region lost: the earlier samples still date it.
        let e = h.evidence(None, &secondary(30.0, &g), None);
        assert_eq!(e.recovery_point, Some(at(11.0)));
        // A lag of 0 with no writer sample held: nothing.
        let mut behind = g.clone();
        behind.durable_lsn = Some(2534560100);
        behind.rpo_lag_ms = Some(0.0);
        let e = h.evidence(
            Some(&writer(12.0, 2534560300)),
            &secondary(12.5, &behind),
            None,
        );
        assert_eq!(e.recovery_point, None);
        // No durable LSN: unknown, named.
        let mut unknown = g.clone();
        unknown.durable_lsn = None;
        let e = h.evidence(
            Some(&writer(12.0, 2534560300)),
            &secondary(12.5, &unknown),
            None,
        );
        assert_eq!(e.recovery_point, None);
        assert!(
            matches!(e.link, LinkState::Unknown(ref why) if why.contains("db-119-001-global-instance-1"))
        );
        // A writer that shows no durable LSN (not the global writer).
        let e = h.evidence(Some(&primary(12.0, 0)), &secondary(12.5, &g), None);
        assert!(
            matches!(e.link, LinkState::Unknown(ref why) if why.contains("primary_url")),
            "{:?}",
            e.link
        );
        // Promoted (detached): no proof.
        let mut promoted = secondary(12.5, &g);
        promoted.in_recovery = false;
        let e = h.evidence(Some(&writer(12.0, 2534560300)), &promoted, None);
        assert_eq!(e.recovery_point, None);
        assert!(matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("not a reader")));
    }

    #[test]
    fn parses_lsns() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("garbage"), None);
        assert_eq!(parse_lsn("1/"), None);
    }

    #[test]
    fn idle_primary_is_not_lag() {
        // Nothing written for 462 s: the last replayed commit is old, but the
        // replica has everything the primary has, so the recovery point is now.
        let mut h = PositionHistory::default();
        let p = primary(1000.0, 5000);
        h.record_primary(p.observed_at, 5000);
        let e = h.evidence(
            Some(&p),
            &replica(1000.01, 5000, Some(538.0), Some("streaming")),
            primary_clock(0.0),
        );
        assert_eq!(e.recovery_point, Some(at(1000.0)));
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.replay_lag_bytes, Some(0.0));
        assert_eq!(e.catchup_seconds, Some(0.0));
    }

    #[test]
    fn behind_replica_is_dated_by_the_primary_samples() {
        let mut h = PositionHistory::default();
        h.record_primary(st(10.0), 1000);
        h.record_primary(st(11.0), 2000);
        h.record_primary(st(12.0), 3000);
        h.record_replay(st(10.0), 1000);
        h.record_replay(st(12.0), 1500);
        let p = primary(12.0, 3000);
        // Replayed up to 2500: everything before the sample at 11 s is there.
        let e = h.evidence(
            Some(&p),
            &replica(12.0, 2500, Some(9.0), Some("streaming")),
            primary_clock(0.0),
        );
        assert_eq!(e.recovery_point, Some(at(11.0)));
        assert_eq!(e.replay_lag_bytes, Some(500.0));
        let rate = h.replay.per_second().unwrap();
        assert!((rate - 250.0).abs() < 1e-6, "{rate}");
        assert!((e.catchup_seconds.unwrap() - 2.0).abs() < 1e-6);
    }

    #[test]
    fn paused_replay_has_infinite_catchup_and_falls_back_to_last_commit() {
        let mut h = PositionHistory::default();
        h.record_primary(st(20.0), 9000);
        h.record_replay(st(10.0), 1000);
        h.record_replay(st(20.0), 1000);
        let p = primary(20.0, 9000);
        let e = h.evidence(
            Some(&p),
            &replica(20.0, 1000, Some(9.5), Some("streaming")),
            primary_clock(0.0),
        );
        assert_converted(e.recovery_point, 9.5);
        assert_eq!(e.catchup_seconds, Some(f64::INFINITY));
    }

    #[test]
    fn broken_link_never_reads_as_zero() {
        // Idle primary, same position on both sides, but no WAL receiver:
        // the positions must not prove "now".
        let mut h = PositionHistory::default();
        let p = primary(100.0, 5000);
        h.record_primary(p.observed_at, 5000);
        let e = h.evidence(
            Some(&p),
            &replica(100.0, 5000, Some(40.0), None),
            primary_clock(0.0),
        );
        assert_converted(e.recovery_point, 40.0);
        assert!(matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("no WAL receiver")));
        let e = h.evidence(
            Some(&p),
            &replica(100.0, 5000, None, Some("waiting")),
            primary_clock(0.0),
        );
        assert_eq!(e.recovery_point, None);
        assert!(matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("waiting")));
    }

    #[test]
    fn primary_unreachable_dates_by_the_last_samples_only() {
        let mut h = PositionHistory::default();
        h.record_primary(st(10.0), 5000);
        let e = h.evidence(
            None,
            &replica(60.0, 5000, None, Some("streaming")),
            primary_clock(0.0),
        );
        assert_eq!(e.recovery_point, Some(at(10.0)));
        assert_eq!(e.replay_lag_bytes, None);
    }

    #[test]
    fn promoted_replica_proves_nothing() {
        let mut h = PositionHistory::default();
        h.record_primary(st(10.0), 5000);
        let mut r = replica(10.0, 5000, Some(9.0), None);
        r.in_recovery = false;
        let e = h.evidence(Some(&primary(10.0, 5000)), &r, primary_clock(0.0));
        assert_eq!(e.recovery_point, None);
        assert!(!e.link.is_healthy());
    }

    #[test]
    fn a_primary_clock_ahead_never_hides_paused_replay() {
        // Replay paused since 10 s under writes; the primary's clock runs
        // 60 s ahead, so the last replayed commit (9.5 s on ours) reads 69.5.
        let mut h = PositionHistory::default();
        h.record_primary(st(10.0), 1000);
        h.record_primary(st(20.0), 9000);
        let r = replica(20.0, 1000, Some(69.5), Some("streaming"));
        let e = h.evidence(Some(&primary(20.0, 9000)), &r, primary_clock(60.0));
        assert_eq!(e.recovery_point, Some(at(10.0)));
        // And 60 s behind: the commit converts to 9.5, the samples still win.
        let r = replica(20.0, 1000, Some(-50.5), Some("streaming"));
        let e = h.evidence(Some(&primary(20.0, 9000)), &r, primary_clock(-60.0));
        assert_eq!(e.recovery_point, Some(at(10.0)));
        // With the link broken, the converted commit time is the only proof.
        let e = h.evidence(
            Some(&primary(20.0, 9000)),
            &replica(20.0, 1000, Some(69.5), None),
            primary_clock(60.0),
        );
        assert_converted(e.recovery_point, 9.5);
    }

    #[test]
    fn an_unconverted_commit_time_proves_nothing_and_never_passes_the_evidence() {
        let h = PositionHistory::default();
        let r = replica(20.0, 1000, Some(69.5), None);
        // The primary's clock was never read: its commit time is not used.
        let e = h.evidence(None, &r, None);
        assert_eq!(e.recovery_point, None);
        // A commit time that converts past the replica observation (the
        // primary's clock moved unmeasured) is not proof either.
        let e = h.evidence(None, &r, primary_clock(0.0));
        assert_eq!(e.recovery_point, None);
    }

    #[test]
    fn samples_date_the_replica_in_the_wall_clock_of_the_observation() {
        // Sampled at 10 s; our wall clock then stepped back an hour; the
        // replica, still at that position, is observed 5 s later.
        let mut h = PositionHistory::default();
        h.record_primary(st(10.0), 1000);
        let observed = Stamp {
            wall: at(15.0 - 3600.0),
            steady: at(15.0),
        };
        let mut r = replica(15.0, 1000, None, Some("streaming"));
        r.observed_at = observed;
        let e = h.evidence(None, &r, None);
        assert_eq!(e.recovery_point, Some(at(10.0 - 3600.0)));
    }

    #[test]
    fn new_timeline_clears_history() {
        let mut h = PositionHistory::default();
        h.record_primary(st(10.0), 5000);
        h.record_primary(st(11.0), 100);
        assert_eq!(h.primary.len(), 1);
        assert_eq!(h.dated(st(11.0), 99), None);
        assert_eq!(h.dated(st(11.0), 100), Some(at(11.0)));
    }
}
