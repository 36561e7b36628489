//! The `redis` kind: a Redis primary and one replica (self-managed Redis,
//! ElastiCache node endpoints).
//!
//! Evidence, best first:
//! 1. The heartbeat canary: this exporter instance `SET`s `{key}:{instance}`
//!    to its own clock (Unix seconds) on the primary every
//!    `heartbeat.interval` and reads it back on the replica. One clock writes
//!    and reads, so no clock skew enters. The key is overwritten, never
//!    accumulates, and expires after [`HEARTBEAT_TTL`].
//! 2. Replication offsets: the primary's `master_repl_offset` is sampled with
//!    this exporter's clock on every poll. Once the replica holds a sampled
//!    offset, every write made before that sample is on the replica. The
//!    offset the replica holds is the larger of what it acknowledged to the
//!    primary (the primary's `slaveN:...offset=` line matched to this
//!    replica; acks come once a second) and what the replica itself reports
//!    as processed (`slave_repl_offset`, read a moment after the primary, and
//!    only when both share one replication id). When the replica has
//!    everything the primary had just before we asked, the recovery point is
//!    that instant — so an idle primary never reads as lag. Only while
//!    `master_link_status:up` and no full resync runs: a broken link freezes
//!    the recovery point instead of reading as zero lag.
//!
//! Neither dates anything with a server's clock. Every poll still reads each
//! side's clock with `TIME` between two readings of this exporter's, for
//! `rpo_clock_offset_seconds{side}` (a user without the `TIME` grant just
//! has no offset series).
//!
//! Connections are kept between polls (shared with every target that names
//! the same server with the same settings: `drivers::shared`) and
//! re-established after a failure on the next poll (no backoff: a side
//! that is back is seen at once). Each
//! side gets half of the poll's timeout, so a hung primary never hides what
//! the replica shows, and vice versa. The connection code here is shared
//! with the `redis_stream` kind.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, RedisError};
use serde::Deserialize;

use super::{KindDef, KindSpec};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::drivers::redis::{
    check_tls_ca_file, check_url, classify, read_ca_file, read_clock, redis_client, server_error,
    Client, Connection,
};
use crate::drivers::within;
use crate::evidence::clock::{ClockOffset, Stamp, CLOCK_OFFSET_SECONDS};
use crate::evidence::heartbeat::HeartbeatLog;
use crate::evidence::positions::{ApplyRate, SourceSamples};
use crate::evidence::promotion::{ConfiguredSide, Direction, PairRoles, SideSeen, WriterSide};
use crate::probe::{
    from_unix_seconds, unix_seconds, Detail, FailureReason, HeartbeatWriter, LinkState,
    Measurement, Probe, ProbeContext, ProbeError, Side,
};

use crate::metric_def::MetricDef;
use crate::probe::HEARTBEAT_TIMESTAMP_SECONDS;

// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static PRIMARY_IS_PRIMARY: MetricDef = MetricDef::gauge(
    "rpo_redis_primary_is_primary",
    "1 when the configured primary reports role:master; 0 means it is itself a replica.",
);
pub static CONNECTED_REPLICAS: MetricDef = MetricDef::gauge(
    "rpo_redis_connected_replicas",
    "Replicas connected to the primary (connected_slaves).",
);
pub static PRIMARY_REPL_OFFSET_BYTES: MetricDef = MetricDef::gauge(
    "rpo_redis_primary_repl_offset_bytes",
    "The primary's replication offset (master_repl_offset); its rate is the write rate.",
);
pub static REPLICA_LISTED_ONLINE: MetricDef = MetricDef::gauge(
    "rpo_redis_replica_listed_online",
    "1 when the primary lists this replica (matched by ip and port) as online.",
);
pub static REPLICA_LAST_ACK_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_redis_replica_last_ack_timestamp_seconds",
    "When the primary last received this replica's offset acknowledgement (1 s resolution).",
);
pub static REPLICA_IS_REPLICA: MetricDef = MetricDef::gauge(
    "rpo_redis_replica_is_replica",
    "1 when the replica reports role:slave; 0 means it was promoted or replicates from nothing.",
);
pub static MASTER_LINK_UP: MetricDef = MetricDef::gauge(
    "rpo_redis_master_link_up",
    "1 when the replica reports master_link_status:up.",
);
pub static MASTER_SYNC_IN_PROGRESS: MetricDef = MetricDef::gauge(
    "rpo_redis_master_sync_in_progress",
    "1 while the replica loads a full resync (master_sync_in_progress).",
);
pub static REPLICA_REPL_OFFSET_BYTES: MetricDef = MetricDef::gauge(
    "rpo_redis_replica_repl_offset_bytes",
    "The replication offset the replica has processed (slave_repl_offset).",
);
pub static MASTER_LINK_DOWN_SINCE_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_redis_master_link_down_since_timestamp_seconds",
    "Since when the replica's link to the primary is down (master_link_down_since_seconds, 1 s resolution).",
);
pub static MASTER_LAST_IO_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_redis_master_last_io_timestamp_seconds",
    "When the replica last heard from the primary (master_last_io_seconds_ago, 1 s resolution).",
);
pub static OFFSET_LAG_BYTES: MetricDef = MetricDef::gauge(
    "rpo_redis_offset_lag_bytes",
    "Replication offset the primary has written but the replica has not acknowledged (its own processed offset when the primary does not list it).",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &PRIMARY_IS_PRIMARY,
    &CONNECTED_REPLICAS,
    &PRIMARY_REPL_OFFSET_BYTES,
    &REPLICA_LISTED_ONLINE,
    &REPLICA_LAST_ACK_TIMESTAMP_SECONDS,
    &REPLICA_IS_REPLICA,
    &MASTER_LINK_UP,
    &MASTER_SYNC_IN_PROGRESS,
    &REPLICA_REPL_OFFSET_BYTES,
    &MASTER_LINK_DOWN_SINCE_TIMESTAMP_SECONDS,
    &MASTER_LAST_IO_TIMESTAMP_SECONDS,
    &OFFSET_LAG_BYTES,
    &HEARTBEAT_TIMESTAMP_SECONDS,
    &CLOCK_OFFSET_SECONDS,
];

/// How long a heartbeat key lives without being rewritten: long enough to
/// outlast any outage worth measuring, short enough that a retired
/// exporter instance leaves nothing behind for long.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a replica host name is resolved again to match the primary's
/// `slaveN` lines.
const RESOLVE_EVERY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("redis", parse, DETAIL_FAMILIES);

/// The default heartbeat key prefix; each exporter instance writes
/// `{key}:{instance}`.
pub const DEFAULT_HEARTBEAT_KEY: &str = "rpo:heartbeat";

#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub primary_url: Secret,
    pub replica_url: Secret,
    /// The password for both sides, when it is kept out of the URLs.
    pub password: Option<Secret>,
    pub heartbeat: Option<RedisHeartbeat>,
    /// CA certificates (PEM) trusted for `rediss://` instead of the public roots.
    pub tls_ca_file: Option<PathBuf>,
    /// How the primary lists the replica in `INFO replication` (`ip`, `port`)
    /// when that differs from the replica URL's host and port (NAT,
    /// `replica-announce-ip`).
    pub replica_listed_as: Option<(String, u16)>,
}

#[derive(Debug, Clone)]
pub struct RedisHeartbeat {
    pub interval: Duration,
    /// The key prefix; the exporter writes `{key}:{instance}`.
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    heartbeat: Option<RawHeartbeat>,
    tls_ca_file: Option<PathBuf>,
    replica_listed_as: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interval: Option<String>,
    key: Option<String>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let primary_url = keys.secret("primary_url")?;
    let replica_url = keys.secret("replica_url")?;
    let password = keys.optional_secret("password")?;
    let raw: RawRedis = keys.take()?;
    let primary_tls = check_url(keys, "primary_url", &primary_url, password.is_some())?;
    let replica_tls = check_url(keys, "replica_url", &replica_url, password.is_some())?;
    let heartbeat = match raw.heartbeat {
        None => None,
        Some(hb) => {
            let interval = keys.duration(
                "heartbeat.interval",
                hb.interval.as_deref(),
                Duration::from_secs(1),
            )?;
            let prefix = hb.key.unwrap_or_else(|| DEFAULT_HEARTBEAT_KEY.to_string());
            if !is_key_prefix(&prefix) {
                return Err(keys.invalid(
                    "heartbeat.key",
                    "use 1 to 200 printable characters without spaces, like \"rpo:heartbeat\"",
                ));
            }
            Some(RedisHeartbeat {
                interval,
                key: prefix,
            })
        }
    };
    check_tls_ca_file(keys, raw.tls_ca_file.as_deref(), primary_tls || replica_tls)?;
    let replica_listed_as = match raw.replica_listed_as {
        None => None,
        Some(text) => Some(parse_host_port(&text).ok_or_else(|| {
            keys.invalid(
                "replica_listed_as",
                format!("`{text}` is not an address; write it as the primary's INFO replication lists the replica, like \"10.0.1.7:6379\""),
            )
        })?),
    };
    Ok(Arc::new(RedisTarget {
        primary_url,
        replica_url,
        password,
        heartbeat,
        tls_ca_file: raw.tls_ca_file,
        replica_listed_as,
    }))
}

impl KindSpec for RedisTarget {
    fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat.as_ref().map(|hb| hb.interval)
    }

    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        let instance = context.instance.as_str();
        let log = context.heartbeat_log(&target.name);
        Ok(Box::new(RedisProbe::new(target, self, instance, log)?))
    }

    fn reports_roles(&self) -> bool {
        true
    }
}

/// A heartbeat key prefix: printable, no spaces, short.
fn is_key_prefix(key: &str) -> bool {
    !key.is_empty() && key.len() <= 200 && key.chars().all(|c| c.is_ascii_graphic())
}

/// `host:port` or `[v6]:port`, as the primary lists a replica.
fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port > 0 && !host.contains(char::is_whitespace))
        .then(|| (host.to_string(), port))
}

// ---------------------------------------------------------------------------
// `INFO replication`, parsed.

/// What `INFO replication` says, from either side.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationInfo {
    pub role: Role,
    /// `master_replid`: the replication stream the offsets belong to.
    pub replid: String,
    /// `master_repl_offset`.
    pub repl_offset: u64,
    /// `second_repl_offset`: on a promoted replica, the offset just past the
    /// last one it took from its old primary (`None` when -1 or absent).
    pub second_repl_offset: Option<u64>,
    /// `connected_slaves`.
    pub connected_replicas: u64,
    /// The `slaveN:` lines: replicas connected to this server.
    pub replicas: Vec<ListedReplica>,
    /// The replica's view of its link; `None` on a primary.
    pub link: Option<MasterLink>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// One `slaveN:ip=...,port=...,state=...,offset=...,lag=...` line.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedReplica {
    pub ip: String,
    /// The replica's listening port, as it announced it.
    pub port: u16,
    /// `online`, or `wait_bgsave` / `send_bulk` during a full resync.
    pub state: String,
    /// The offset the replica last acknowledged.
    pub offset: u64,
    /// Seconds since that acknowledgement (`lag=`).
    pub ack_age_seconds: Option<u64>,
}

impl ListedReplica {
    fn online(&self) -> bool {
        self.state == "online"
    }
}

/// The replica's side of the link (`master_*` and `slave_*` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct MasterLink {
    pub master_host: String,
    pub master_port: u16,
    /// `master_link_status:up`.
    pub up: bool,
    /// `master_last_io_seconds_ago`; `None` when -1 (link down).
    pub last_io_seconds_ago: Option<u64>,
    /// `master_sync_in_progress:1`: a full resync is loading.
    pub sync_in_progress: bool,
    /// `master_sync_total_bytes` / `master_sync_read_bytes` while syncing.
    pub sync_total_bytes: Option<u64>,
    pub sync_read_bytes: Option<u64>,
    /// `slave_repl_offset`: what the replica has processed.
    pub processed_offset: u64,
    /// `master_link_down_since_seconds`; `None` when up or -1.
    pub down_seconds: Option<u64>,
}

/// Parses the text of `INFO replication` (either side). Fails with the name
/// of the first field that is missing or malformed.
pub fn parse_info_replication(text: &str) -> Result<ReplicationInfo, String> {
    let mut fields = std::collections::HashMap::new();
    let mut replicas = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let Some(n) = name.strip_prefix("slave") {
            if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
                replicas.push(parse_replica_line(value).map_err(|e| format!("{name}: {e}"))?);
                continue;
            }
        }
        fields.insert(name, value);
    }
    let get = |name: &str| -> Result<&str, String> {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| format!("no `{name}` field"))
    };
    let number = |name: &str| -> Result<u64, String> {
        let value = get(name)?;
        value
            .parse::<u64>()
            .map_err(|_| format!("`{name}` is `{value}`, not a number"))
    };
    // -1 means "not applicable" in several fields.
    let optional = |name: &str| -> Result<Option<u64>, String> {
        match fields.get(name) {
            None => Ok(None),
            Some(v) if v.starts_with('-') => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("`{name}` is `{v}`, not a number")),
        }
    };
    let role = match get("role")? {
        "master" => Role::Primary,
        "slave" | "replica" => Role::Replica,
        other => return Err(format!("unknown role `{other}`")),
    };
    let link = match role {
        Role::Primary => None,
        Role::Replica => Some(MasterLink {
            master_host: get("master_host")?.to_string(),
            master_port: number("master_port")?
                .try_into()
                .map_err(|_| "`master_port` out of range".to_string())?,
            up: get("master_link_status")? == "up",
            last_io_seconds_ago: optional("master_last_io_seconds_ago")?,
            sync_in_progress: get("master_sync_in_progress")? == "1",
            sync_total_bytes: optional("master_sync_total_bytes")?,
            sync_read_bytes: optional("master_sync_read_bytes")?,
            processed_offset: number("slave_repl_offset")?,
            down_seconds: optional("master_link_down_since_seconds")?,
        }),
    };
    Ok(ReplicationInfo {
        role,
        replid: get("master_replid")?.to_string(),
        repl_offset: number("master_repl_offset")?,
        second_repl_offset: optional("second_repl_offset")?,
        connected_replicas: number("connected_slaves").unwrap_or(replicas.len() as u64),
        replicas,
        link,
    })
}

fn parse_replica_line(value: &str) -> Result<ListedReplica, String> {
    let mut ip = None;
    let mut port = None;
    let mut state = None;
    let mut offset = None;
    let mut lag = None;
    for pair in value.split(',') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        match k {
            "ip" => ip = Some(v.to_string()),
            "port" => port = v.parse::<u16>().ok(),
            "state" => state = Some(v.to_string()),
            "offset" => offset = v.parse::<u64>().ok(),
            "lag" => lag = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    Ok(ListedReplica {
        ip: ip.ok_or("no ip")?,
        port: port.ok_or("no valid port")?,
        state: state.ok_or("no state")?,
        offset: offset.ok_or("no valid offset")?,
        ack_age_seconds: lag,
    })
}

// ---------------------------------------------------------------------------
// Evidence.

/// What one side said at one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// This exporter's clock just before the question was sent.
    pub observed_at: Stamp,
    pub info: ReplicationInfo,
}

/// How the primary lists this replica in its `slaveN` lines: the IP
/// addresses of the replica URL's host (or `replica_listed_as`) and the
/// replica's listening port.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaIdentity {
    pub addresses: Vec<String>,
    pub port: u16,
}

impl ReplicaIdentity {
    pub fn matches(&self, line: &ListedReplica) -> bool {
        line.port == self.port
            && self
                .addresses
                .iter()
                .any(|a| canonical_ip(a) == canonical_ip(&line.ip))
    }
}

impl std::fmt::Display for ReplicaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addresses.as_slice() {
            [] => write!(f, "port {}", self.port),
            [one] => write!(f, "{one}:{}", self.port),
            many => write!(f, "{{{}}}:{}", many.join(", "), self.port),
        }
    }
}

fn canonical_ip(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => text.to_ascii_lowercase(),
    }
}

/// What the offsets prove, from one poll's observations and the history of
/// primary offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetEvidence {
    /// `None` when this poll proved nothing (replica unreachable, link
    /// broken, or no sample old enough).
    pub recovery_point: Option<SystemTime>,
    pub link: LinkState,
    /// This replica's `slaveN` line on the primary, when the primary answered.
    pub listed: Option<ListedReplica>,
    /// The primary's offset minus the replica's acknowledged offset (or its
    /// own processed offset when the primary does not list it).
    pub offset_lag_bytes: Option<f64>,
    pub catchup_seconds: Option<f64>,
}

/// Offsets remembered between polls: primary samples (to date the replica's
/// offset on our clock) and the offsets proven on the replica (for the
/// apply rate). Both belong to one replication id.
#[derive(Debug, Default)]
pub struct OffsetHistory {
    replid: Option<String>,
    primary: SourceSamples<u64>,
    applied: ApplyRate,
}

impl OffsetHistory {
    pub fn record_primary(&mut self, at: Stamp, replid: &str, offset: u64) {
        // A new replication id (restart, failover) means older samples no
        // longer date anything (a smaller offset is caught by the samples).
        if self.replid.as_deref() != Some(replid) {
            self.primary.clear();
            self.applied.clear();
            self.replid = Some(replid.to_string());
        }
        self.primary.record(at, offset);
    }

    pub fn record_applied(&mut self, at: Stamp, offset: u64) {
        self.applied.record(at, offset);
    }

    /// The latest sampled instant at which the primary's offset was at or
    /// below `offset`: every write before it is on the replica. In the wall
    /// clock of `evidence`.
    pub fn dated(&self, evidence: Stamp, offset: u64) -> Option<SystemTime> {
        self.primary.dated(evidence, |o| *o <= offset)
    }

    /// Bytes applied per second on the replica over the recent window.
    pub fn apply_rate(&self) -> Option<f64> {
        self.applied.per_second()
    }

    /// The newest offset proven on the replica: its acknowledgement on the
    /// primary, or its own processed offset when it shares the primary's
    /// replication id; the larger of the two.
    pub fn proven_offset(
        &self,
        primary: Option<&Observation>,
        replica: Option<&Observation>,
        identity: &ReplicaIdentity,
    ) -> Option<u64> {
        let acked = listed(primary, identity)
            .filter(|l| l.online())
            .map(|l| l.offset);
        let own = replica.and_then(|r| {
            let link = r.info.link.as_ref()?;
            (self.replid.as_deref() == Some(r.info.replid.as_str()))
                .then_some(link.processed_offset)
        });
        acked.max(own)
    }

    /// Combines one poll's observations into evidence. Record this poll's
    /// samples first. `replica` is `None` when the replica did not answer.
    pub fn evidence(
        &self,
        primary: Option<&Observation>,
        replica: Option<&Observation>,
        identity: &ReplicaIdentity,
    ) -> OffsetEvidence {
        let answered_primary = primary;
        // A "primary" that is itself a replica samples nothing and lists nothing.
        let primary = primary.filter(|p| p.info.role == Role::Primary);
        let listed = listed(primary, identity).cloned();

        let link = match replica {
            None => match (&primary, &listed) {
                (Some(_), Some(l)) if l.online() => {
                    LinkState::Unknown("the replica cannot be reached".to_string())
                }
                (Some(_), _) => LinkState::Unhealthy(format!(
                    "the replica cannot be reached and the primary lists no online replica at {identity}"
                )),
                (None, _) => LinkState::Unknown("the replica cannot be reached".to_string()),
            },
            Some(r) => self.replica_link(r, answered_primary, listed.as_ref()),
        };

        let recovery_point = match replica {
            Some(r) if link.is_healthy() => self
                .proven_offset(primary, replica, identity)
                .and_then(|offset| self.dated(r.observed_at, offset)),
            _ => None,
        };

        let offset_lag_bytes = primary.and_then(|p| {
            let acked = listed.as_ref().filter(|l| l.online()).map(|l| l.offset);
            let own = replica.and_then(|r| {
                let link = r.info.link.as_ref()?;
                (r.info.replid == p.info.replid).then_some(link.processed_offset)
            });
            acked
                .or(own)
                .map(|held| p.info.repl_offset.saturating_sub(held) as f64)
        });
        let catchup_seconds = offset_lag_bytes.map(|bytes| self.applied.catchup_seconds(bytes));

        OffsetEvidence {
            recovery_point,
            link,
            listed,
            offset_lag_bytes,
            catchup_seconds,
        }
    }

    /// The link as a person would describe it, most fundamental problem first.
    fn replica_link(
        &self,
        replica: &Observation,
        primary: Option<&Observation>,
        listed: Option<&ListedReplica>,
    ) -> LinkState {
        let Some(link) = &replica.info.link else {
            return LinkState::Unhealthy(
                "the replica is not a replica (role:master): promoted, or replicaof is not set"
                    .to_string(),
            );
        };
        if primary.is_some_and(|p| p.info.role != Role::Primary) {
            return LinkState::Unhealthy(
                "the configured primary is itself a replica (role:slave); check primary_url"
                    .to_string(),
            );
        }
        if link.sync_in_progress {
            return LinkState::Unhealthy(match (link.sync_read_bytes, link.sync_total_bytes) {
                (Some(read), Some(total)) if total > 0 => {
                    format!("full resync in progress ({read} of {total} bytes loaded)")
                }
                _ => "full resync in progress".to_string(),
            });
        }
        if !link.up {
            return LinkState::Unhealthy(match link.down_seconds {
                Some(s) => format!(
                    "master link down for {}",
                    crate::human::human_duration(Duration::from_secs(s))
                ),
                None => "master link down".to_string(),
            });
        }
        if let Some(p) = primary {
            match listed {
                Some(l) if !l.online() => {
                    return LinkState::Unhealthy(format!(
                        "full resync in progress (the primary lists the replica as {})",
                        l.state
                    ))
                }
                None if p.info.replid != replica.info.replid => {
                    return LinkState::Unhealthy(
                        "the replica follows another replication stream than the configured primary (master_replid differs); check primary_url and replica_url"
                            .to_string(),
                    )
                }
                _ => {}
            }
        }
        LinkState::Healthy
    }
}

fn listed<'a>(
    primary: Option<&'a Observation>,
    identity: &ReplicaIdentity,
) -> Option<&'a ListedReplica> {
    primary
        .filter(|p| p.info.role == Role::Primary)?
        .info
        .replicas
        .iter()
        .find(|l| identity.matches(l))
}

// ---------------------------------------------------------------------------
// The probe.

pub struct RedisProbe {
    timeout: Duration,
    primary: Connection,
    replica: Connection,
    /// The clients, for the heartbeat writer's own connections.
    primary_client: Client,
    replica_client: Client,
    /// How the source lists the configured replica (and, measured the other
    /// way after a failback, the configured primary).
    replica_listed: ListedAs,
    primary_listed: ListedAs,
    heartbeat: Option<HeartbeatSettings>,
    history: OffsetHistory,
    /// Which way replication is measured: roles are detected on every
    /// poll, not assumed from the config keys (see `evidence::promotion`).
    direction: Direction,
    /// Where the heartbeat writer writes: the side accepting writes.
    writer: WriterSide,
    /// The servers' clocks (`TIME` on each side), for the offset series.
    primary_clock: ServerClock,
    replica_clock: ServerClock,
    /// This target's heartbeat writes, which date the heartbeat seen.
    heartbeat_log: HeartbeatLog,
}

/// One server's clock offset, and whether failing to read it was logged.
#[derive(Default)]
struct ServerClock {
    offset: ClockOffset,
    unreadable_logged: bool,
}

impl ServerClock {
    /// Reads the server's clock for its offset; a server that refuses `TIME`
    /// (an ACL without it) only loses the offset series, logged once.
    async fn read(&mut self, side: Side, connection: &mut MultiplexedConnection, user: &str) {
        if let Err(e) = read_clock(connection, &mut self.offset).await {
            if !self.unreadable_logged {
                self.unreadable_logged = true;
                tracing::warn!(side = side.as_str(), error = %with_acl_hint(classify(&e, false), user), "cannot read the server's clock (TIME); rpo_clock_offset_seconds is not published for it");
            }
        }
    }
}

/// How a source lists one configured server in its `slaveN` lines.
struct ListedAs {
    host: String,
    port: u16,
    /// `replica_listed_as`, or an IP-literal host: never resolved.
    fixed: Option<ReplicaIdentity>,
    resolved: Option<(Instant, ReplicaIdentity)>,
}

impl ListedAs {
    fn new(client: &redis::Client, listed_as: Option<&(String, u16)>) -> Option<ListedAs> {
        let (host, port) = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => return None,
        };
        let fixed = match listed_as {
            Some((ip, port)) => Some(ReplicaIdentity {
                addresses: vec![ip.clone()],
                port: *port,
            }),
            None => host.parse::<IpAddr>().ok().map(|ip| ReplicaIdentity {
                addresses: vec![ip.to_string()],
                port,
            }),
        };
        Some(ListedAs {
            host,
            port,
            fixed,
            resolved: None,
        })
    }

    /// A host name is resolved at most every [`RESOLVE_EVERY`], keeping the
    /// last answer on failure.
    async fn identity(&mut self, deadline: Instant) -> ReplicaIdentity {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let fresh = self
            .resolved
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < RESOLVE_EVERY);
        if !fresh {
            let lookup = tokio::net::lookup_host((self.host.clone(), self.port));
            let budget = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(addrs)) = tokio::time::timeout(budget, lookup).await {
                let mut addresses: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                addresses.dedup();
                self.resolved = Some((
                    Instant::now(),
                    ReplicaIdentity {
                        addresses,
                        port: self.port,
                    },
                ));
            }
        }
        self.resolved
            .as_ref()
            .map(|(_, identity)| identity.clone())
            .unwrap_or(ReplicaIdentity {
                addresses: Vec::new(),
                port: self.port,
            })
    }
}

#[derive(Clone)]
struct HeartbeatSettings {
    interval: Duration,
    /// The configured prefix, for grant messages.
    prefix: String,
    /// `{prefix}:{instance}`.
    key: String,
}

impl RedisProbe {
    pub fn new(
        target: &Target,
        spec: &RedisTarget,
        instance: &str,
        heartbeat_log: HeartbeatLog,
    ) -> Result<RedisProbe, ProbeError> {
        let ca = read_ca_file(&target.name, spec.tls_ca_file.as_deref())?;
        let client = |url: &Secret, what: &str| {
            redis_client(
                &target.name,
                what,
                url,
                spec.password.as_ref(),
                ca.as_deref(),
            )
        };
        let primary_client = client(&spec.primary_url, "primary")?;
        let replica_client = client(&spec.replica_url, "replica")?;
        let no_address = |what: &str| {
            ProbeError::new(
                FailureReason::Config,
                format!(
                    "target {}: the {what} URL has no host and port",
                    target.name
                ),
            )
        };
        let replica_listed = ListedAs::new(&replica_client, spec.replica_listed_as.as_ref())
            .ok_or_else(|| no_address("replica"))?;
        let primary_listed =
            ListedAs::new(&primary_client, None).ok_or_else(|| no_address("primary"))?;
        Ok(RedisProbe {
            timeout: target.timeout,
            primary: Connection::new(primary_client.clone(), Some(Side::Source), target.timeout),
            replica: Connection::new(replica_client.clone(), Some(Side::Replica), target.timeout),
            primary_client,
            replica_client,
            replica_listed,
            primary_listed,
            heartbeat: spec.heartbeat.as_ref().map(|hb| HeartbeatSettings {
                interval: hb.interval,
                prefix: hb.key.clone(),
                key: format!("{}:{instance}", hb.key),
            }),
            history: OffsetHistory::default(),
            direction: Direction::Forward,
            writer: WriterSide::default(),
            primary_clock: ServerClock::default(),
            replica_clock: ServerClock::default(),
            heartbeat_log,
        })
    }

    /// `INFO replication` of the side measured as the source.
    async fn observe_primary(
        connection: &mut Connection,
        clock: &mut ServerClock,
    ) -> Result<Observation, ProbeError> {
        let user = connection.user();
        let mut connection = connection.get().await?;
        let observed_at = Stamp::now();
        let text: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await
            .map_err(|e| with_acl_hint(classify(&e, false), &user).on(Side::Source))?;
        clock.read(Side::Source, &mut connection, &user).await;
        let info = parse_info_replication(&text).map_err(|e| {
            ProbeError::new(FailureReason::Parse, format!("INFO replication: {e}"))
                .on(Side::Source)
                .on_intact_connection()
        })?;
        Ok(Observation { observed_at, info })
    }

    /// The replica's `INFO replication` and, with a heartbeat, the heartbeat
    /// it holds (or why that value is unusable), in one round trip.
    async fn observe_replica(
        connection: &mut Connection,
        clock: &mut ServerClock,
        key: Option<String>,
    ) -> Result<(Observation, Result<Option<SystemTime>, ProbeError>), ProbeError> {
        let user = connection.user();
        let mut connection = connection.get().await?;
        let observed_at = Stamp::now();
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("replication");
        if let Some(key) = &key {
            pipe.cmd("GET").arg(key);
        }
        let (text, heartbeat): (String, Option<String>) = if key.is_some() {
            pipe.query_async(&mut connection).await
        } else {
            pipe.query_async::<(String,)>(&mut connection)
                .await
                .map(|(text,)| (text, None))
        }
        .map_err(|e| with_acl_hint(classify(&e, false), &user).on(Side::Replica))?;
        let info = parse_info_replication(&text).map_err(|e| {
            ProbeError::new(FailureReason::Parse, format!("INFO replication: {e}"))
                .on(Side::Replica)
                .on_intact_connection()
        })?;
        clock.read(Side::Replica, &mut connection, &user).await;
        let heartbeat = match (heartbeat, key) {
            (Some(value), Some(key)) => match value.trim().parse::<f64>().ok().and_then(from_unix_seconds) {
                Some(t) => Ok(Some(t)),
                None => Err(ProbeError::new(
                    FailureReason::Parse,
                    format!("heartbeat key {key} holds `{}`, not Unix seconds; is another program writing it?", value.chars().take(40).collect::<String>()),
                )
                .on(Side::Replica)),
            },
            // Not written yet, or not replicated yet: no heartbeat evidence.
            _ => Ok(None),
        };
        Ok((Observation { observed_at, info }, heartbeat))
    }

    async fn poll_once(&mut self) -> Measurement {
        let started = Instant::now();
        let half = self.timeout / 2;
        let mut measurement = Measurement::new(Stamp::now().wall);
        let mut details = Vec::new();
        let direction = self.direction;
        let key = self.heartbeat.as_ref().map(|hb| hb.key.clone());
        let mut roles = PairRoles {
            direction,
            heartbeat_configured: key.is_some(),
            ..PairRoles::default()
        };
        // Each server's clock goes with the server, whichever way
        // replication runs.
        let heartbeat_log = &self.heartbeat_log;
        let (source, replica_side, replica_listed, source_clock, replica_clock) = match direction {
            Direction::Forward => (
                &mut self.primary,
                &mut self.replica,
                &mut self.replica_listed,
                &mut self.primary_clock,
                &mut self.replica_clock,
            ),
            Direction::Reverse => (
                &mut self.replica,
                &mut self.primary,
                &mut self.primary_listed,
                &mut self.replica_clock,
                &mut self.primary_clock,
            ),
        };

        // The primary first: the caught-up test needs its offset read
        // before the replica's.
        let primary = match within(
            started + half,
            Self::observe_primary(source, &mut *source_clock),
        )
        .await
        {
            Ok(observation) => {
                source.answered();
                measurement.source_reachable = Some(true);
                let writable = observation.info.role == Role::Primary;
                *roles.side_mut(direction.source()) = SideSeen {
                    writable: Some(writable),
                    write_position: writable.then_some(observation.info.repl_offset),
                    ..SideSeen::default()
                };
                if observation.info.role == Role::Primary {
                    self.history.record_primary(
                        observation.observed_at,
                        &observation.info.replid,
                        observation.info.repl_offset,
                    );
                }
                Some(observation)
            }
            Err(err) => {
                source.reset_after(&err);
                measurement.source_reachable = Some(false);
                measurement.failures.push(err.on(Side::Source));
                None
            }
        };

        let (replica, heartbeat_seen) = match within(
            started + self.timeout,
            Self::observe_replica(&mut *replica_side, &mut *replica_clock, key),
        )
        .await
        {
            Ok((observation, heartbeat)) => {
                replica_side.answered();
                measurement.replica_reachable = Some(true);
                measurement.evidence_time = observation.observed_at.wall;
                let seen = heartbeat.unwrap_or_else(|err| {
                    measurement.failures.push(err);
                    None
                });
                let info = &observation.info;
                // Only heartbeats this process wrote (or an earlier run, not
                // later than the evidence) are dated; see evidence::heartbeat.
                let dated =
                    seen.and_then(|s| heartbeat_log.date(s, observation.observed_at).proven());
                *roles.side_mut(direction.replica()) = SideSeen {
                    writable: Some(info.role == Role::Primary),
                    heartbeat: dated,
                    write_position: None,
                    replayed_position: match &info.link {
                        Some(link) => Some(link.processed_offset),
                        // Promoted: where the old primary's stream ended.
                        None => info.second_repl_offset.map(|o| o.saturating_sub(1)),
                    },
                };
                // A heartbeat read on a server that accepts writes proves
                // nothing about replication (after a promotion this exporter
                // writes it there itself).
                let seen = seen.filter(|_| info.role == Role::Replica);
                (Some(observation), seen)
            }
            Err(err) => {
                replica_side.reset_after(&err);
                measurement.replica_reachable = Some(false);
                measurement.failures.push(err.on(Side::Replica));
                (None, None)
            }
        };

        let identity = replica_listed.identity(started + self.timeout).await;
        if let Some(offset) =
            self.history
                .proven_offset(primary.as_ref(), replica.as_ref(), &identity)
        {
            let at = replica
                .as_ref()
                .or(primary.as_ref())
                .map(|o| o.observed_at)
                .unwrap_or_else(Stamp::now);
            self.history.record_applied(at, offset);
        }
        let evidence = self
            .history
            .evidence(primary.as_ref(), replica.as_ref(), &identity);
        measurement.link = evidence.link.clone();
        let heartbeat = match (&replica, heartbeat_seen) {
            (Some(r), Some(seen)) => self.heartbeat_log.date(seen, r.observed_at).proven(),
            _ => None,
        };
        measurement.recovery_point = match (&replica, evidence.recovery_point, heartbeat) {
            (None, _, _) => None,
            (Some(_), Some(a), Some(b)) => Some(a.max(b)),
            (Some(_), a, b) => a.or(b),
        };
        measurement.backlog_bytes = evidence.offset_lag_bytes;
        measurement.catchup_seconds = evidence.catchup_seconds;

        if let Some(p) = &primary {
            details.extend(primary_details(p, &evidence));
            if let Some(offset) = source_clock.offset.estimate() {
                details.push(offset.detail(Side::Source, p.observed_at));
            }
        }
        if let Some(r) = &replica {
            details.extend(replica_details(r, heartbeat_seen));
            if let Some(offset) = replica_clock.offset.estimate() {
                details.push(offset.detail(Side::Replica, r.observed_at));
            }
        }
        if let Some(lag) = evidence.offset_lag_bytes {
            details.push(Detail::new(&OFFSET_LAG_BYTES, lag));
        }
        measurement.details = details;
        self.follow_roles(&roles);
        measurement.roles = Some(roles);
        measurement
    }

    /// After a poll: see [`Direction::follow`].
    fn follow_roles(&mut self, roles: &PairRoles) {
        if self.direction.follow(&self.writer, roles) {
            self.history = OffsetHistory::default();
        }
    }
}

/// Adds where to look when the monitoring user lacks a command or key:
/// the ACL rule itself when the refused command is `INFO`.
fn with_acl_hint(mut error: ProbeError, user: &str) -> ProbeError {
    if error.reason == FailureReason::Auth && error.message.contains("NOPERM") {
        if error.message.to_ascii_lowercase().contains("'info'") {
            error.message.push_str(&format!(
                "; the monitoring user {user} needs the +info ACL rule: as an administrator run ACL SETUSER {user} +info (see docs/kinds/redis.md)"
            ));
        } else {
            error
                .message
                .push_str("; grant the monitoring user the ACL in docs/kinds/redis.md");
        }
    }
    error
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn seconds_before(at: SystemTime, seconds: u64) -> f64 {
    unix_seconds(at) - seconds as f64
}

fn primary_details(primary: &Observation, evidence: &OffsetEvidence) -> Vec<Detail> {
    let mut details = vec![
        Detail::new(
            &PRIMARY_IS_PRIMARY,
            flag(primary.info.role == Role::Primary),
        ),
        Detail::new(&CONNECTED_REPLICAS, primary.info.connected_replicas as f64),
    ];
    if primary.info.role == Role::Primary {
        details.push(Detail::new(
            &PRIMARY_REPL_OFFSET_BYTES,
            primary.info.repl_offset as f64,
        ));
        details.push(Detail::new(
            &REPLICA_LISTED_ONLINE,
            flag(evidence.listed.as_ref().is_some_and(|l| l.online())),
        ));
    }
    if let Some(age) = evidence.listed.as_ref().and_then(|l| l.ack_age_seconds) {
        details.push(Detail::new(
            &REPLICA_LAST_ACK_TIMESTAMP_SECONDS,
            seconds_before(primary.observed_at.wall, age),
        ));
    }
    details
}

fn replica_details(replica: &Observation, heartbeat_seen: Option<SystemTime>) -> Vec<Detail> {
    let link = replica.info.link.as_ref();
    let mut details = vec![
        Detail::new(&REPLICA_IS_REPLICA, flag(link.is_some())),
        Detail::new(&MASTER_LINK_UP, flag(link.is_some_and(|l| l.up))),
        Detail::new(
            &MASTER_SYNC_IN_PROGRESS,
            flag(link.is_some_and(|l| l.sync_in_progress)),
        ),
    ];
    if let Some(link) = link {
        details.push(Detail::new(
            &REPLICA_REPL_OFFSET_BYTES,
            link.processed_offset as f64,
        ));
        if let Some(s) = link.down_seconds.filter(|_| !link.up) {
            details.push(Detail::new(
                &MASTER_LINK_DOWN_SINCE_TIMESTAMP_SECONDS,
                seconds_before(replica.observed_at.wall, s),
            ));
        }
        if let Some(s) = link.last_io_seconds_ago {
            details.push(Detail::new(
                &MASTER_LAST_IO_TIMESTAMP_SECONDS,
                seconds_before(replica.observed_at.wall, s),
            ));
        }
    }
    if let Some(t) = heartbeat_seen {
        details.push(Detail::new(&HEARTBEAT_TIMESTAMP_SECONDS, unix_seconds(t)));
    }
    details
}

impl Probe for RedisProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(async move { Ok(self.poll_once().await) })
    }

    fn reset(&mut self) {
        self.primary.reset();
        self.replica.reset();
    }

    fn heartbeat_writer(&mut self) -> Option<Box<dyn HeartbeatWriter>> {
        let settings = self.heartbeat.clone()?;
        Some(Box::new(RedisHeartbeatWriter {
            connection: Connection::heartbeat(
                self.primary_client.clone(),
                Some(Side::Source),
                self.timeout,
            ),
            other: Connection::heartbeat(
                self.replica_client.clone(),
                Some(Side::Source),
                self.timeout,
            ),
            side: ConfiguredSide::Primary,
            writer: self.writer.clone(),
            settings,
            log: self.heartbeat_log.clone(),
        }))
    }
}

/// Writes this exporter's heartbeat key over a connection apart from the
/// polls' (shared with other targets' heartbeat writers to the server), so a slow
/// poll never delays a heartbeat: on the primary, or, after a promotion, on
/// the side the probe saw accepting writes.
struct RedisHeartbeatWriter {
    /// The connection to `side`.
    connection: Connection,
    /// The connection to the other configured side, kept for a switch.
    other: Connection,
    side: ConfiguredSide,
    writer: WriterSide,
    settings: HeartbeatSettings,
    /// Where each value is logged before it is sent, to date it when seen.
    log: HeartbeatLog,
}

impl RedisHeartbeatWriter {
    async fn write_once(&mut self, at: SystemTime) -> Result<(), ProbeError> {
        let wanted = self.writer.get();
        if wanted != self.side {
            std::mem::swap(&mut self.connection, &mut self.other);
            self.side = wanted;
        }
        self.log.record(at);
        let mut connection = self.connection.get().await?;
        let value = format!("{:.3}", unix_seconds(at));
        let result: Result<(), RedisError> = redis::cmd("SET")
            .arg(&self.settings.key)
            .arg(value)
            .arg("EX")
            .arg(HEARTBEAT_TTL.as_secs())
            .query_async(&mut connection)
            .await;
        if result.is_ok() {
            self.connection.answered();
        }
        result.map_err(|e| {
            let mut err = classify(&e, false).on(Side::Source);
            if server_error(&e).is_some_and(|(code, _)| code == "READONLY") {
                err.reason = FailureReason::Query;
                err.message = "cannot write the heartbeat: primary_url points at a read-only replica (READONLY)".to_string();
            } else if err.reason == FailureReason::Auth {
                err.message = format!(
                    "cannot write heartbeat key {} ({}); as an administrator run: ACL SETUSER {} +set ~{}:* (or remove `heartbeat` from the target to rely on offsets)",
                    self.settings.key,
                    err.message,
                    self.connection.user(),
                    self.settings.prefix
                );
            }
            err
        })
    }
}

impl HeartbeatWriter for RedisHeartbeatWriter {
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

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from redis-server 7.0.15 (Debian 12), a primary with one
    // replica on 127.0.0.1, right after one write.
    const PRIMARY: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=38754,state=online,offset=50,lag=0\r\nmaster_failover_state:no-failover\r\nmaster_replid:e5db5300f3c560e7ae4df8f4197a9bfaf919058c\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:50\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\nrepl_backlog_size:1048576\r\nrepl_backlog_first_byte_offset:1\r\nrepl_backlog_histlen:50\r\n";

    const REPLICA: &str = "# Replication
role:slave
master_host:127.0.0.1
master_port:38753
master_link_status:up
master_last_io_seconds_ago:1
master_sync_in_progress:0
slave_read_repl_offset:50
slave_repl_offset:50
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_replid:e5db5300f3c560e7ae4df8f4197a9bfaf919058c
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:50
second_repl_offset:-1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:50
";

    // The primary 2 s after the replica was SIGSTOPped while writing.
    const PRIMARY_REPLICA_STOPPED: &str = "# Replication
role:master
connected_slaves:1
slave0:ip=127.0.0.1,port=38754,state=online,offset=162,lag=3
master_failover_state:no-failover
master_replid:e5db5300f3c560e7ae4df8f4197a9bfaf919058c
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:1444
second_repl_offset:-1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:1444
";

    // The replica 2 s after its primary was killed.
    const REPLICA_PRIMARY_GONE: &str = "# Replication
role:slave
master_host:127.0.0.1
master_port:38753
master_link_status:down
master_last_io_seconds_ago:-1
master_sync_in_progress:0
slave_read_repl_offset:1444
slave_repl_offset:1444
master_link_down_since_seconds:2
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_replid:e5db5300f3c560e7ae4df8f4197a9bfaf919058c
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:1444
second_repl_offset:-1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:1444
";

    // A replica loading a full resync (REPLICAOF to a primary holding 3M keys).
    const REPLICA_SYNCING: &str = "# Replication
role:slave
master_host:127.0.0.1
master_port:38753
master_link_status:down
master_last_io_seconds_ago:-1
master_sync_in_progress:1
slave_read_repl_offset:0
slave_repl_offset:0
master_sync_total_bytes:-1
master_sync_read_bytes:0
master_sync_left_bytes:-1
master_sync_perc:-0.00
master_sync_last_io_seconds_ago:0
master_link_down_since_seconds:-1
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_replid:5962d20968e33d0f752b777e367a01cf97fcb7a3
master_replid2:1f06ff6d9c27e9a851f3e15cecb9ff16e5237fab
master_repl_offset:0
second_repl_offset:1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:0
";

    // Its primary at the same moment.
    const PRIMARY_WAIT_BGSAVE: &str = "# Replication
role:master
connected_slaves:1
slave0:ip=127.0.0.1,port=38754,state=wait_bgsave,offset=0,lag=0
master_failover_state:no-failover
master_replid:1f06ff6d9c27e9a851f3e15cecb9ff16e5237fab
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:0
second_repl_offset:-1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:0
";

    const PRIMARY_TWO_REPLICAS: &str = "# Replication
role:master
connected_slaves:2
slave0:ip=127.0.0.1,port=38754,state=online,offset=50,lag=0
slave1:ip=127.0.0.1,port=38755,state=online,offset=50,lag=0
master_failover_state:no-failover
master_replid:3e753e8755bd6a7e59e6ca8d6e3ca32b389dfc1d
master_replid2:1f06ff6d9c27e9a851f3e15cecb9ff16e5237fab
master_repl_offset:50
second_repl_offset:1
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:50
";

    // A replica after REPLICAOF NO ONE.
    const PROMOTED: &str = "# Replication
role:master
connected_slaves:0
master_failover_state:no-failover
master_replid:59e76262d8ac5b7aa81f3962248b767a63fce650
master_replid2:3e753e8755bd6a7e59e6ca8d6e3ca32b389dfc1d
master_repl_offset:50
second_repl_offset:51
repl_backlog_active:1
repl_backlog_size:1048576
repl_backlog_first_byte_offset:1
repl_backlog_histlen:50
";

    const REPLID: &str = "e5db5300f3c560e7ae4df8f4197a9bfaf919058c";

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    fn observed(t: f64, text: &str) -> Observation {
        Observation {
            observed_at: Stamp::unstepped(at(t)),
            info: parse_info_replication(text).unwrap(),
        }
    }

    /// An observation of `text` with its offsets replaced.
    fn with_offsets(t: f64, text: &str, repl_offset: u64, acked_or_processed: u64) -> Observation {
        let mut o = observed(t, text);
        o.info.repl_offset = repl_offset;
        for line in &mut o.info.replicas {
            line.offset = acked_or_processed;
        }
        if let Some(link) = &mut o.info.link {
            link.processed_offset = acked_or_processed;
        }
        o
    }

    fn this_replica() -> ReplicaIdentity {
        ReplicaIdentity {
            addresses: vec!["127.0.0.1".to_string()],
            port: 38754,
        }
    }

    #[test]
    fn a_promoted_replica_says_where_the_old_stream_ended() {
        let info = parse_info_replication(PROMOTED).unwrap();
        assert_eq!(info.role, Role::Primary);
        assert!(info.link.is_none());
        assert_eq!(info.second_repl_offset, Some(51));
        // A primary that never was a replica has none.
        assert_eq!(
            parse_info_replication(PRIMARY).unwrap().second_repl_offset,
            None
        );
    }

    #[test]
    fn parses_both_sides() {
        let p = parse_info_replication(PRIMARY).unwrap();
        assert_eq!(p.role, Role::Primary);
        assert_eq!(p.repl_offset, 50);
        assert_eq!(p.replid, REPLID);
        assert_eq!(p.connected_replicas, 1);
        assert_eq!(
            p.replicas,
            vec![ListedReplica {
                ip: "127.0.0.1".into(),
                port: 38754,
                state: "online".into(),
                offset: 50,
                ack_age_seconds: Some(0),
            }]
        );
        assert!(p.link.is_none());

        let r = parse_info_replication(REPLICA).unwrap();
        assert_eq!(r.role, Role::Replica);
        let link = r.link.unwrap();
        assert!(link.up && !link.sync_in_progress);
        assert_eq!(link.processed_offset, 50);
        assert_eq!(link.last_io_seconds_ago, Some(1));
        assert_eq!(link.down_seconds, None);
        assert_eq!(
            (link.master_host.as_str(), link.master_port),
            ("127.0.0.1", 38753)
        );

        let down = parse_info_replication(REPLICA_PRIMARY_GONE)
            .unwrap()
            .link
            .unwrap();
        assert!(!down.up);
        assert_eq!(down.down_seconds, Some(2));
        assert_eq!(down.last_io_seconds_ago, None);

        let syncing = parse_info_replication(REPLICA_SYNCING)
            .unwrap()
            .link
            .unwrap();
        assert!(syncing.sync_in_progress);
        assert_eq!(syncing.sync_total_bytes, None);
        assert_eq!(syncing.down_seconds, None);

        assert_eq!(
            parse_info_replication(PRIMARY_TWO_REPLICAS)
                .unwrap()
                .replicas
                .len(),
            2
        );
        assert_eq!(
            parse_info_replication(PROMOTED).unwrap().role,
            Role::Primary
        );
    }

    #[test]
    fn malformed_info_names_the_field() {
        assert!(parse_info_replication("").unwrap_err().contains("role"));
        let err = parse_info_replication(
            &PRIMARY.replace("master_repl_offset:50", "master_repl_offset:x"),
        )
        .unwrap_err();
        assert!(err.contains("master_repl_offset"), "{err}");
        let err =
            parse_info_replication(&REPLICA.replace("slave_repl_offset:50\n", "")).unwrap_err();
        assert!(err.contains("slave_repl_offset"), "{err}");
        let err = parse_info_replication(&PRIMARY.replace("port=38754,", "")).unwrap_err();
        assert!(err.contains("slave0"), "{err}");
    }

    #[test]
    fn matches_this_replica_among_several() {
        let p = observed(0.0, PRIMARY_TWO_REPLICAS);
        let other = ReplicaIdentity {
            addresses: vec!["::ffff:127.0.0.1".to_string()],
            port: 38755,
        };
        assert_eq!(listed(Some(&p), &other).unwrap().port, 38755);
        let absent = ReplicaIdentity {
            addresses: vec!["10.0.0.9".to_string()],
            port: 38754,
        };
        assert!(listed(Some(&p), &absent).is_none());
        assert_eq!(this_replica().to_string(), "127.0.0.1:38754");
    }

    #[test]
    fn idle_primary_is_not_lag() {
        // Nothing written for a long time: both sides at offset 50, so the
        // recovery point is the instant the primary was asked.
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(1000.0)), REPLID, 50);
        let p = observed(1000.0, PRIMARY);
        let r = observed(1000.01, REPLICA);
        let offset = h
            .proven_offset(Some(&p), Some(&r), &this_replica())
            .unwrap();
        h.record_applied(Stamp::unstepped(at(1000.01)), offset);
        let e = h.evidence(Some(&p), Some(&r), &this_replica());
        assert_eq!(e.recovery_point, Some(at(1000.0)));
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.offset_lag_bytes, Some(0.0));
        assert_eq!(e.catchup_seconds, Some(0.0));
    }

    #[test]
    fn ack_delay_is_dated_by_history_and_the_replica_own_offset_is_fresher() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(10.0)), REPLID, 1000);
        h.record_primary(Stamp::unstepped(at(10.5)), REPLID, 2000);
        h.record_primary(Stamp::unstepped(at(11.0)), REPLID, 3000);
        // The primary saw an ack of 1500 (acks come once a second); the
        // replica, asked a moment later, has processed 2500.
        let p = with_offsets(11.0, PRIMARY, 3000, 1500);
        let mut r = with_offsets(11.01, REPLICA, 2500, 2500);
        let e = h.evidence(Some(&p), Some(&r), &this_replica());
        assert_eq!(e.recovery_point, Some(at(10.5)));
        assert_eq!(e.offset_lag_bytes, Some(1500.0), "lag is from the ack");
        // Without the replica's own offset (other stream), only the ack dates it.
        r.info.replid = "another".to_string();
        let e = h.evidence(Some(&p), Some(&r), &this_replica());
        assert_eq!(e.recovery_point, Some(at(10.0)));
    }

    #[test]
    fn stopped_replica_proves_nothing_while_lag_grows() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(0.0)), REPLID, 162);
        h.record_applied(Stamp::unstepped(at(0.0)), 162);
        h.record_primary(Stamp::unstepped(at(2.0)), REPLID, 1444);
        let p = observed(2.0, PRIMARY_REPLICA_STOPPED);
        h.record_applied(
            Stamp::unstepped(at(2.0)),
            h.proven_offset(Some(&p), None, &this_replica()).unwrap(),
        );
        let e = h.evidence(Some(&p), None, &this_replica());
        assert_eq!(e.recovery_point, None);
        assert_eq!(e.offset_lag_bytes, Some((1444 - 162) as f64));
        assert_eq!(e.catchup_seconds, Some(f64::INFINITY), "nothing applied");
        assert!(matches!(e.link, LinkState::Unknown(_)));
        assert_eq!(e.listed.unwrap().ack_age_seconds, Some(3));
    }

    #[test]
    fn killed_replica_is_unhealthy_when_the_primary_no_longer_lists_it() {
        let h = OffsetHistory::default();
        let mut p = observed(5.0, PRIMARY);
        p.info.replicas.clear();
        let e = h.evidence(Some(&p), None, &this_replica());
        assert!(
            matches!(&e.link, LinkState::Unhealthy(why) if why.contains("no online replica at 127.0.0.1:38754")),
            "{:?}",
            e.link
        );
        assert_eq!(e.offset_lag_bytes, None);
    }

    #[test]
    fn broken_link_never_reads_as_zero() {
        // Same offset on both sides, but the link is down: no proof of now.
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(100.0)), REPLID, 1444);
        let r = observed(100.0, REPLICA_PRIMARY_GONE);
        let e = h.evidence(None, Some(&r), &this_replica());
        assert_eq!(e.recovery_point, None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy("master link down for 2s".to_string())
        );
    }

    #[test]
    fn primary_unreachable_dates_by_the_last_samples_only() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(10.0)), REPLID, 50);
        let r = observed(60.0, REPLICA);
        let e = h.evidence(None, Some(&r), &this_replica());
        assert_eq!(e.recovery_point, Some(at(10.0)));
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.offset_lag_bytes, None, "unknown without the primary");
    }

    #[test]
    fn full_resync_is_unhealthy_and_proves_nothing() {
        let mut h = OffsetHistory::default();
        h.record_primary(
            Stamp::unstepped(at(1.0)),
            "1f06ff6d9c27e9a851f3e15cecb9ff16e5237fab",
            0,
        );
        let p = observed(1.0, PRIMARY_WAIT_BGSAVE);
        let r = observed(1.0, REPLICA_SYNCING);
        let e = h.evidence(Some(&p), Some(&r), &this_replica());
        assert_eq!(
            e.link,
            LinkState::Unhealthy("full resync in progress".to_string())
        );
        assert_eq!(e.recovery_point, None);
        // The primary's view alone: the replica is listed, not online.
        let r = with_offsets(1.0, REPLICA, 0, 0);
        let e = h.evidence(Some(&p), Some(&r), &this_replica());
        assert!(
            matches!(&e.link, LinkState::Unhealthy(why) if why.contains("wait_bgsave")),
            "{:?}",
            e.link
        );
    }

    #[test]
    fn promoted_replica_and_replica_as_primary_are_named() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(1.0)), REPLID, 50);
        let e = h.evidence(
            Some(&observed(1.0, PRIMARY)),
            Some(&observed(1.0, PROMOTED)),
            &this_replica(),
        );
        assert!(matches!(&e.link, LinkState::Unhealthy(why) if why.contains("promoted")));
        assert_eq!(e.recovery_point, None);
        // primary_url pointing at a replica: not sampled, so nothing dates.
        let e = OffsetHistory::default().evidence(
            Some(&observed(1.0, REPLICA)),
            Some(&observed(1.0, REPLICA)),
            &this_replica(),
        );
        assert!(
            matches!(&e.link, LinkState::Unhealthy(why) if why.contains("primary is itself a replica")),
            "{:?}",
            e.link
        );
        assert_eq!(e.recovery_point, None);
        assert_eq!(e.offset_lag_bytes, None);
    }

    #[test]
    fn a_replica_of_another_stream_is_unhealthy() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(1.0)), REPLID, 50);
        let mut r = observed(1.0, REPLICA);
        r.info.replid = "0123".to_string();
        let mut p = observed(1.0, PRIMARY);
        p.info.replicas.clear();
        let e = h.evidence(Some(&p), Some(&r), &this_replica());
        assert!(
            matches!(&e.link, LinkState::Unhealthy(why) if why.contains("master_replid differs"))
        );
        assert_eq!(e.recovery_point, None);
    }

    #[test]
    fn new_replication_id_clears_history() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(10.0)), REPLID, 5000);
        h.record_primary(Stamp::unstepped(at(11.0)), "new", 6000);
        assert_eq!(h.primary.len(), 1);
        assert_eq!(h.dated(Stamp::unstepped(at(12.0)), 5500), None);
        h.record_primary(Stamp::unstepped(at(12.0)), "new", 100);
        assert_eq!(h.dated(Stamp::unstepped(at(12.0)), 100), Some(at(12.0)));
    }

    #[test]
    fn apply_rate_gives_catch_up() {
        let mut h = OffsetHistory::default();
        h.record_primary(Stamp::unstepped(at(0.0)), REPLID, 0);
        h.record_primary(Stamp::unstepped(at(2.0)), REPLID, 4000);
        h.record_applied(Stamp::unstepped(at(0.0)), 0);
        h.record_applied(Stamp::unstepped(at(2.0)), 2000);
        let p = with_offsets(2.0, PRIMARY, 4000, 2000);
        let e = h.evidence(Some(&p), None, &this_replica());
        assert_eq!(e.offset_lag_bytes, Some(2000.0));
        assert!((e.catchup_seconds.unwrap() - 2.0).abs() < 1e-9);
    }

    fn config(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::from_toml(
            &format!(
                r#"
[[group]]
name = "erp"
rpo_budget = "60s"

[[redis]]
name = "erp-sessions"
group = "erp"
primary_url = "redis://rpo-monitor@127.0.0.1:6379"
replica_url = "redis://rpo-monitor@127.0.0.1:6380"
{extra}
"#
            ),
            std::path::Path::new("test.toml"),
        )
    }

    #[test]
    fn config_keys() {
        let c = config("heartbeat = { interval = \"2s\", key = \"rpo:hb\" }\npassword = \"hunter2\"\nreplica_listed_as = \"10.0.1.7:6379\"").unwrap();
        let t = &c.targets[0];
        assert_eq!(t.kind().as_str(), "redis");
        assert_eq!(t.heartbeat_interval(), Some(Duration::from_secs(2)));
        let spec = t.spec::<RedisTarget>().expect("a redis target");
        assert_eq!(spec.heartbeat.as_ref().unwrap().key, "rpo:hb");
        assert_eq!(spec.replica_listed_as, Some(("10.0.1.7".to_string(), 6379)));
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = config("heartbeat = { interval = \"1s\" }").unwrap();
        let spec = c.targets[0].spec::<RedisTarget>().unwrap();
        assert_eq!(spec.heartbeat.as_ref().unwrap().key, "rpo:heartbeat");
    }

    #[test]
    fn config_errors_name_the_key_and_never_the_secret() {
        let err = |extra: &str| config(extra).unwrap_err().to_string();
        let e = err("heartbeat = { interval = \"1s\", table = \"x\" }");
        assert!(e.contains("table"), "{e}");
        let e = err("heartbeat = { key = \"has space\" }");
        assert!(e.contains("heartbeat.key"), "{e}");
        let e = err("tls_ca_file = \"/etc/hostname\"");
        assert!(e.contains("tls_ca_file") && e.contains("rediss://"), "{e}");
        let e = err("replica_listed_as = \"nowhere\"");
        assert!(e.contains("replica_listed_as"), "{e}");
        let e = err("password = \"a\"\npassword_env = \"B\"");
        assert!(e.contains("more than one"), "{e}");
        let text = |primary: &str| {
            crate::config::Config::from_toml(
                &format!("[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n[[redis]]\nname = \"r\"\ngroup = \"erp\"\nprimary_url = \"{primary}\"\nreplica_url = \"redis://h:6380\"\n{}", if primary.contains("hunter2@") { "password = \"x\"" } else { "" }),
                std::path::Path::new("test.toml"),
            )
            .unwrap_err()
            .to_string()
        };
        for (url, expect) in [
            ("postgres://u:hunter2@h:5432/db", "not a Redis URL"),
            ("redis://u:hunter2@h:notaport", "not a Redis URL"),
            ("rediss://u:hunter2@h:6379/#insecure", "#insecure"),
            ("redis+unix:///tmp/hunter2.sock", "unix sockets"),
            ("redis://u:hunter2@h:6379", "keep the password in one place"),
        ] {
            let e = text(url);
            assert!(
                e.contains("primary_url") && e.contains(expect),
                "{url}: {e}"
            );
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }
}
