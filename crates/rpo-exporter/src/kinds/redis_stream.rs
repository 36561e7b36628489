//! The `redis_stream` kind: a consumer group on a Redis stream, used as an
//! integration queue whose unprocessed entries must be replayed after a
//! failover.
//!
//! The recovery point is the time of the oldest entry the group has not
//! acknowledged: the older of the oldest pending entry (delivered, not yet
//! `XACK`ed: `XPENDING` summary) and the first entry after the group's
//! `last-delivered-id` (not yet delivered: `XRANGE`). It is the poll instant
//! when there is neither, and the exposure is its age. An entry's time comes
//! from its id, which is milliseconds of the *Redis server's* clock: it is
//! converted to this exporter's clock by the server's offset, measured with
//! `TIME` on every poll (see [`crate::evidence::clock`]), and never allowed
//! past the poll instant. Without a measured offset (the user may not run
//! `TIME`) an entry's time proves nothing: the poll reports that failure and
//! the recovery point stays where it was.
//!
//! One endpoint, the server holding the stream: the target's source side
//! (in the primary region, with the producers); there is no replica. A
//! server that stops answering after it has answered (its region lost) is
//! reported as the source unreachable, dated at its last answer
//! ([`crate::evidence::queue::SourceContact`]): the recovery point and the
//! last backlog stay. Any other failure to learn anything (a refused
//! password, a missing stream), or any failure before a first answer,
//! fails the poll. The connection code is `crate::drivers::redis`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use redis::{RedisError, Value};
use serde::Deserialize;

use super::{KindDef, KindSpec};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::drivers::redis::{
    check_tls_ca_file, check_url, classify, read_ca_file, read_clock, redis_client, server_error,
    Connection,
};
use crate::drivers::within;
use crate::evidence::clock::{convert, ClockOffset, Offset, Stamp, CLOCK_OFFSET_SECONDS};
use crate::evidence::queue::SourceContact;
use crate::probe::{
    unix_seconds, Detail, FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError,
    Side,
};

use crate::metric_def::MetricDef;
// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("redis_stream", parse, DETAIL_FAMILIES);

#[derive(Debug, Clone)]
pub struct RedisStreamTarget {
    pub url: Secret,
    pub password: Option<Secret>,
    pub stream: String,
    pub consumer_group: String,
    /// Report the target unhealthy while the group has no consumers.
    pub require_consumers: bool,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisStream {
    stream: String,
    consumer_group: String,
    require_consumers: Option<bool>,
    tls_ca_file: Option<PathBuf>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let url = keys.secret("url")?;
    let password = keys.optional_secret("password")?;
    let raw: RawRedisStream = keys.take()?;
    let tls = check_url(keys, "url", &url, password.is_some())?;
    for (name, value) in [
        ("stream", &raw.stream),
        ("consumer_group", &raw.consumer_group),
    ] {
        if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
            return Err(keys.invalid(
                name,
                "must be 1 to 256 characters, without control characters",
            ));
        }
    }
    check_tls_ca_file(keys, raw.tls_ca_file.as_deref(), tls)?;
    Ok(Arc::new(RedisStreamTarget {
        url,
        password,
        stream: raw.stream,
        consumer_group: raw.consumer_group,
        require_consumers: raw.require_consumers.unwrap_or(false),
        tls_ca_file: raw.tls_ca_file,
    }))
}

impl KindSpec for RedisStreamTarget {
    fn build(
        &self,
        target: &Target,
        _context: &ProbeContext,
    ) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(RedisStreamProbe::new(target, self)?))
    }
}
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static PENDING_ENTRIES: MetricDef = MetricDef::gauge(
    "rpo_redis_stream_pending_entries",
    "Entries delivered to the consumer group but not yet acknowledged (XPENDING).",
);
pub static CONSUMERS: MetricDef = MetricDef::gauge(
    "rpo_redis_stream_consumers",
    "Consumers in the consumer group.",
);
pub static LENGTH_ENTRIES: MetricDef = MetricDef::gauge(
    "rpo_redis_stream_length_entries",
    "Entries in the stream (XLEN), processed or not.",
);
pub static LAG_ENTRIES: MetricDef = MetricDef::gauge(
    "rpo_redis_stream_lag_entries",
    "Entries not yet delivered to the consumer group (XINFO GROUPS lag, or counted).",
);
pub static OLDEST_PENDING_ENTRY_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_redis_stream_oldest_pending_entry_timestamp_seconds",
    "When the oldest delivered-but-unacknowledged entry was added (its id; the Redis server's clock).",
);
pub static OLDEST_UNDELIVERED_ENTRY_TIMESTAMP_SECONDS: MetricDef = MetricDef::gauge(
    "rpo_redis_stream_oldest_undelivered_entry_timestamp_seconds",
    "When the oldest entry not yet delivered to the group was added (its id; the Redis server's clock).",
);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &PENDING_ENTRIES,
    &CONSUMERS,
    &LENGTH_ENTRIES,
    &LAG_ENTRIES,
    &OLDEST_PENDING_ENTRY_TIMESTAMP_SECONDS,
    &OLDEST_UNDELIVERED_ENTRY_TIMESTAMP_SECONDS,
    &CLOCK_OFFSET_SECONDS,
];

/// When a server does not report a group's lag (before Redis 7, or after
/// deletions made it unknowable), up to this many undelivered entries are
/// counted with `XRANGE`; beyond it the lag is reported unknown.
pub const LAG_COUNT_LIMIT: usize = 10_000;

// ---------------------------------------------------------------------------
// Replies, parsed.

/// A stream entry id, `<milliseconds>-<sequence>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one: an inclusive `XRANGE` start that
    /// works on every Redis version (exclusive `(` ranges need 6.2).
    pub fn next(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }

    /// When the entry was added, by the Redis server's clock.
    pub fn time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.ms)
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One consumer group, from `XINFO GROUPS`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub name: String,
    pub consumers: u64,
    /// Delivered to a consumer, not yet acknowledged.
    pub pending: u64,
    pub last_delivered_id: EntryId,
    /// Entries not yet delivered to the group (Redis 7); `None` when the
    /// server does not know (nil) or does not say (before 7).
    pub lag: Option<u64>,
}

/// The `XPENDING stream group` summary.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSummary {
    pub count: u64,
    pub oldest: Option<EntryId>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_string()),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// Field/value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|kv| Some((text(&kv[0])?, &kv[1])))
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| Some((text(k)?, v))).collect(),
        _ => None,
    }
}

/// Parses the `XINFO GROUPS` reply.
pub fn parse_groups(value: &Value) -> Result<Vec<GroupInfo>, String> {
    let Value::Array(groups) = value else {
        return Err("XINFO GROUPS did not return a list".to_string());
    };
    groups
        .iter()
        .map(|group| {
            let fields = pairs(group).ok_or("XINFO GROUPS: a group is not a field list")?;
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let required = |name: &str| field(name).ok_or(format!("XINFO GROUPS: no `{name}`"));
            let number = |name: &str| {
                integer(required(name)?).ok_or(format!("XINFO GROUPS: `{name}` is not a number"))
            };
            let last = text(required("last-delivered-id")?).unwrap_or_default();
            Ok(GroupInfo {
                name: text(required("name")?).ok_or("XINFO GROUPS: `name` is not text")?,
                consumers: number("consumers")?,
                pending: number("pending")?,
                last_delivered_id: EntryId::parse(&last).ok_or(format!(
                    "XINFO GROUPS: last-delivered-id `{last}` is not an id"
                ))?,
                lag: field("lag").and_then(integer),
            })
        })
        .collect()
}

/// Parses the `XPENDING stream group` summary: `[count, min, max, consumers]`.
pub fn parse_pending_summary(value: &Value) -> Result<PendingSummary, String> {
    let Value::Array(items) = value else {
        return Err("XPENDING did not return a list".to_string());
    };
    let count = items
        .first()
        .and_then(integer)
        .ok_or("XPENDING: no pending count")?;
    let oldest = match items.get(1) {
        None | Some(Value::Nil) => None,
        Some(v) => {
            let t = text(v).unwrap_or_default();
            Some(EntryId::parse(&t).ok_or(format!("XPENDING: `{t}` is not an id"))?)
        }
    };
    Ok(PendingSummary { count, oldest })
}

/// The ids of an `XRANGE` reply, in order.
pub fn parse_range_ids(value: &Value) -> Result<Vec<EntryId>, String> {
    let Value::Array(entries) = value else {
        return Err("XRANGE did not return a list".to_string());
    };
    entries
        .iter()
        .map(|entry| {
            let id = match entry {
                Value::Array(parts) => parts.first().and_then(text),
                _ => None,
            }
            .unwrap_or_default();
            EntryId::parse(&id).ok_or(format!("XRANGE: `{id}` is not an id"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Evidence.

/// What one poll proves about the group.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEvidence {
    /// `None` when entries wait but the server's clock offset is unknown.
    pub recovery_point: Option<SystemTime>,
    pub link: LinkState,
    /// Pending plus lag, when the lag is known.
    pub backlog_operations: Option<f64>,
}

/// Combines one poll's answers. `first_undelivered` is the first entry after
/// the group's last-delivered id; `lag` is the group's (or counted) lag;
/// `server_clock` the server's clock offset, which converts entry times.
#[allow(clippy::too_many_arguments)]
pub fn evidence(
    observed_at: Stamp,
    group: &GroupInfo,
    pending: &PendingSummary,
    first_undelivered: Option<EntryId>,
    lag: Option<u64>,
    require_consumers: bool,
    server_clock: Option<Offset>,
) -> QueueEvidence {
    let oldest = match (pending.oldest, first_undelivered) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // An entry's time is the server's clock: converted, never past the poll
    // instant, and nothing without an offset.
    let recovery_point = match oldest {
        None => Some(observed_at.wall),
        Some(id) => convert(id.time(), server_clock, observed_at),
    };
    let link = if require_consumers && group.consumers == 0 {
        LinkState::Unhealthy(format!("consumer group {} has no consumers", group.name))
    } else {
        LinkState::Healthy
    };
    QueueEvidence {
        recovery_point,
        link,
        backlog_operations: lag.map(|lag| (pending.count + lag) as f64),
    }
}

// ---------------------------------------------------------------------------
// The probe.

pub struct RedisStreamProbe {
    target: String,
    timeout: Duration,
    stream: String,
    consumer_group: String,
    require_consumers: bool,
    connection: Connection,
    /// Set while a poll runs: still set at the next poll means the poller
    /// cancelled it mid-command, so the connection may be stuck.
    poll_in_progress: bool,
    /// The server's clock offset (`TIME`), which converts entry times.
    clock: ClockOffset,
    /// The server's last answer, for when it stops answering.
    contact: SourceContact,
}

impl RedisStreamProbe {
    pub fn new(target: &Target, spec: &RedisStreamTarget) -> Result<RedisStreamProbe, ProbeError> {
        let ca = read_ca_file(&target.name, spec.tls_ca_file.as_deref())?;
        let client = redis_client(
            &target.name,
            "stream server",
            &spec.url,
            spec.password.as_ref(),
            ca.as_deref(),
        )?;
        Ok(RedisStreamProbe {
            target: target.name.clone(),
            timeout: target.timeout,
            stream: spec.stream.clone(),
            consumer_group: spec.consumer_group.clone(),
            require_consumers: spec.require_consumers,
            connection: Connection::new(client, None, target.timeout),
            poll_in_progress: false,
            clock: ClockOffset::default(),
            contact: SourceContact::default(),
        })
    }

    /// A command error in words: a missing stream or group is named.
    fn failed(&self, err: &RedisError) -> ProbeError {
        let mut error = classify(err, false);
        let (code, text) = server_error(err).unwrap_or_default();
        match code.as_str() {
            "ERR" if text.contains("no such key") => {
                error.message = format!("stream `{}` does not exist", self.stream)
            }
            "WRONGTYPE" => error.message = format!("key `{}` is not a stream", self.stream),
            "NOGROUP" => {
                error.message = format!(
                    "consumer group `{}` does not exist on stream `{}`",
                    self.consumer_group, self.stream
                )
            }
            "NOPERM" => error
                .message
                .push_str("; grant the monitoring user the ACL in docs/kinds/redis_stream.md"),
            _ => {}
        }
        error
    }

    async fn measure(&mut self) -> Result<Measurement, ProbeError> {
        let mut connection = self.connection.get().await?;
        let observed_at = Stamp::now();
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(&e))?;
        // A reply read whole that cannot be used leaves the connection in
        // step: errors of this kind's own keep it.
        let parse = |e: String| ProbeError::new(FailureReason::Parse, e).on_intact_connection();
        let groups = parse_groups(&groups).map_err(parse)?;
        let Some(group) = groups.iter().find(|g| g.name == self.consumer_group) else {
            let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            return Err(ProbeError::new(
                FailureReason::Query,
                format!(
                    "consumer group `{}` does not exist on stream `{}` (its groups: {})",
                    self.consumer_group,
                    self.stream,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
            .on_intact_connection());
        };
        let start = group.last_delivered_id.next().to_string();
        let (pending, first, length): (Value, Value, u64) = redis::pipe()
            .cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.consumer_group)
            .cmd("XRANGE")
            .arg(&self.stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(&e))?;
        let pending = parse_pending_summary(&pending).map_err(parse)?;
        let first_undelivered = parse_range_ids(&first).map_err(parse)?.first().copied();
        let lag = match (group.lag, first_undelivered) {
            (Some(lag), _) => Some(lag),
            (None, None) => Some(0),
            (None, Some(_)) => {
                let entries: Value = redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(LAG_COUNT_LIMIT + 1)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| self.failed(&e))?;
                let counted = parse_range_ids(&entries).map_err(parse)?.len();
                (counted <= LAG_COUNT_LIMIT).then_some(counted as u64)
            }
        };

        // The server's clock, for the entries' times.
        let clock_failure = read_clock(&mut connection, &mut self.clock)
            .await
            .err()
            .map(|e| {
                let mut err = classify(&e, false);
                err.message = format!(
                    "cannot read the server's clock (TIME: {}); entry times cannot be converted to this exporter's clock, so waiting entries date nothing; grant the monitoring user +time (docs/kinds/redis_stream.md)",
                    err.message
                );
                err
            });
        let offset = self.clock.estimate();

        let evidence = evidence(
            observed_at,
            group,
            &pending,
            first_undelivered,
            lag,
            self.require_consumers,
            offset,
        );
        let mut measurement = Measurement::new(observed_at.wall);
        measurement.recovery_point = evidence.recovery_point;
        measurement.link = evidence.link;
        measurement.backlog_operations = evidence.backlog_operations;
        measurement.details = details(group, &pending, first_undelivered, lag, length);
        if let Some(offset) = offset {
            measurement
                .details
                .push(offset.detail(Side::Source, observed_at));
        }
        measurement.failures.extend(clock_failure);
        Ok(measurement)
    }
}

fn details(
    group: &GroupInfo,
    pending: &PendingSummary,
    first_undelivered: Option<EntryId>,
    lag: Option<u64>,
    length: u64,
) -> Vec<Detail> {
    let mut details = vec![
        Detail::new(&PENDING_ENTRIES, pending.count as f64),
        Detail::new(&CONSUMERS, group.consumers as f64),
        Detail::new(&LENGTH_ENTRIES, length as f64),
    ];
    if let Some(lag) = lag {
        details.push(Detail::new(&LAG_ENTRIES, lag as f64));
    }
    if let Some(id) = pending.oldest {
        details.push(Detail::new(
            &OLDEST_PENDING_ENTRY_TIMESTAMP_SECONDS,
            unix_seconds(id.time()),
        ));
    }
    if let Some(id) = first_undelivered {
        details.push(Detail::new(
            &OLDEST_UNDELIVERED_ENTRY_TIMESTAMP_SECONDS,
            unix_seconds(id.time()),
        ));
    }
    details
}

impl Probe for RedisStreamProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(async move {
            if self.poll_in_progress {
                tracing::debug!(target = %self.target, "previous poll was cancelled; reconnecting");
                self.connection.reset();
            }
            self.poll_in_progress = true;
            let deadline = Instant::now() + self.timeout;
            let result = within(deadline, self.measure()).await;
            match &result {
                Ok(_) => self.connection.answered(),
                Err(e) => self.connection.reset_after(e),
            }
            self.poll_in_progress = false;
            match result {
                Ok(mut measurement) => {
                    self.contact.answered(&mut measurement);
                    Ok(measurement)
                }
                Err(e) => self.contact.unanswered(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// `XINFO GROUPS orders` from redis-server 7.0.15: `billing` read two of
    /// four entries and acknowledged one; `empty` was created at `$`.
    fn captured_groups() -> Value {
        Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("billing"),
                bulk("consumers"),
                Value::Int(1),
                bulk("pending"),
                Value::Int(1),
                bulk("last-delivered-id"),
                bulk("1700000001000-0"),
                bulk("entries-read"),
                Value::Int(2),
                bulk("lag"),
                Value::Int(2),
            ]),
            Value::Array(vec![
                bulk("name"),
                bulk("empty"),
                bulk("consumers"),
                Value::Int(0),
                bulk("pending"),
                Value::Int(0),
                bulk("last-delivered-id"),
                bulk("1700000003000-0"),
                bulk("entries-read"),
                Value::Nil,
                bulk("lag"),
                Value::Int(0),
            ]),
        ])
    }

    /// `XPENDING orders billing` at the same moment.
    fn captured_pending() -> Value {
        Value::Array(vec![
            Value::Int(1),
            bulk("1700000001000-0"),
            bulk("1700000001000-0"),
            Value::Array(vec![Value::Array(vec![bulk("c1"), bulk("1")])]),
        ])
    }

    fn id(text: &str) -> EntryId {
        EntryId::parse(text).unwrap()
    }

    #[test]
    fn parses_captured_replies() {
        let groups = parse_groups(&captured_groups()).unwrap();
        assert_eq!(
            groups[0],
            GroupInfo {
                name: "billing".into(),
                consumers: 1,
                pending: 1,
                last_delivered_id: id("1700000001000-0"),
                lag: Some(2),
            }
        );
        assert_eq!(groups[1].consumers, 0);
        let pending = parse_pending_summary(&captured_pending()).unwrap();
        assert_eq!(pending.count, 1);
        assert_eq!(pending.oldest, Some(id("1700000001000-0")));
        // An empty group: `0, nil, nil, nil`.
        let empty = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(
            parse_pending_summary(&empty).unwrap(),
            PendingSummary {
                count: 0,
                oldest: None
            }
        );
        let range = Value::Array(vec![Value::Array(vec![
            bulk("1700000002000-0"),
            Value::Array(vec![bulk("item"), bulk("c")]),
        ])]);
        assert_eq!(
            parse_range_ids(&range).unwrap(),
            vec![id("1700000002000-0")]
        );
        // RESP3 maps parse the same way.
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), bulk("billing")),
            (bulk("consumers"), Value::Int(1)),
            (bulk("pending"), Value::Int(1)),
            (bulk("last-delivered-id"), bulk("1700000001000-0")),
            (bulk("lag"), Value::Nil),
        ])]);
        assert_eq!(parse_groups(&resp3).unwrap()[0].lag, None);
    }

    #[test]
    fn bad_replies_are_named() {
        let err = parse_groups(&Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("x"),
        ])]))
        .unwrap_err();
        assert!(err.contains("no `last-delivered-id`"), "{err}");
        assert!(parse_pending_summary(&Value::Int(3)).is_err());
        assert!(parse_range_ids(&Value::Array(vec![bulk("nonsense")])).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(id("5-1").next(), id("5-2"));
        assert_eq!(
            EntryId {
                ms: 5,
                seq: u64::MAX
            }
            .next(),
            id("6-0")
        );
        assert_eq!(id("0-0").next().to_string(), "0-1");
        assert!(EntryId::parse("5").is_none());
        assert_eq!(
            id("1700000000123-0").time(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
    }

    fn at_ms(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// An entry time converted by an exact offset: `ms` less the 1 ms
    /// reading slack.
    fn assert_converted(actual: Option<SystemTime>, ms: u64) {
        let actual = unix_seconds(actual.expect("a recovery point"));
        let expected = (ms - 1) as f64 / 1000.0;
        assert!((actual - expected).abs() < 1e-5, "{actual} != {expected}");
    }

    /// The server's clock offset measured as `ahead_ms` (exactly).
    fn server_clock(ahead_ms: u64, behind_ms: u64) -> Option<Offset> {
        let mut clock = ClockOffset::default();
        let ours = Stamp::unstepped(at_ms(1_700_000_000_000));
        clock.record(ours, at_ms(1_700_000_000_000 + ahead_ms - behind_ms), ours);
        clock.estimate()
    }

    #[test]
    fn recovery_point_is_the_oldest_unacknowledged_entry() {
        let groups = parse_groups(&captured_groups()).unwrap();
        let pending = parse_pending_summary(&captured_pending()).unwrap();
        let now = Stamp::unstepped(at_ms(1_700_000_010_000));
        let same = server_clock(0, 0);
        // Pending 1700000001000-0 is older than the undelivered 1700000002000-0.
        let e = evidence(
            now,
            &groups[0],
            &pending,
            Some(id("1700000002000-0")),
            Some(2),
            false,
            same,
        );
        assert_converted(e.recovery_point, 1_700_000_001_000);
        assert_eq!(e.backlog_operations, Some(3.0));
        assert_eq!(e.link, LinkState::Healthy);
        // Everything acknowledged but one undelivered entry.
        let none = PendingSummary {
            count: 0,
            oldest: None,
        };
        let e = evidence(
            now,
            &groups[0],
            &none,
            Some(id("1700000002000-0")),
            Some(1),
            false,
            same,
        );
        assert_converted(e.recovery_point, 1_700_000_002_000);
        // Nothing outstanding: the poll instant.
        let e = evidence(now, &groups[1], &none, None, Some(0), false, same);
        assert_eq!(e.recovery_point, Some(now.wall));
        assert_eq!(e.backlog_operations, Some(0.0));
        // Unknown lag: backlog unknown, recovery point still proven.
        let e = evidence(now, &groups[0], &pending, None, None, false, same);
        assert_eq!(e.backlog_operations, None);
        assert_converted(e.recovery_point, 1_700_000_001_000);
    }

    #[test]
    fn entry_times_are_converted_by_the_server_clock_and_never_pass_now() {
        let groups = parse_groups(&captured_groups()).unwrap();
        let none = PendingSummary {
            count: 0,
            oldest: None,
        };
        let now = Stamp::unstepped(at_ms(1_700_000_010_000));
        let waiting = Some(id("1700000062000-0"));
        // The server's clock runs 60 s ahead: the entry was added at 2 s.
        let e = evidence(
            now,
            &groups[0],
            &none,
            waiting,
            Some(1),
            false,
            server_clock(60_000, 0),
        );
        assert_converted(e.recovery_point, 1_700_000_002_000);
        // 30 s behind: the entry would date from the future (an id set by
        // hand, or a clock stepped unmeasured): not proof.
        let e = evidence(
            now,
            &groups[0],
            &none,
            waiting,
            Some(1),
            false,
            server_clock(0, 30_000),
        );
        assert_eq!(e.recovery_point, None);
        // The server's clock unknown: a waiting entry dates nothing ...
        let e = evidence(now, &groups[0], &none, waiting, Some(1), false, None);
        assert_eq!(e.recovery_point, None);
        // ... while an empty group is still "now".
        let e = evidence(now, &groups[1], &none, None, Some(0), false, None);
        assert_eq!(e.recovery_point, Some(now.wall));
    }

    #[test]
    fn required_consumers() {
        let groups = parse_groups(&captured_groups()).unwrap();
        let none = PendingSummary {
            count: 0,
            oldest: None,
        };
        let now = Stamp::unstepped(at_ms(1_700_000_010_000));
        let e = evidence(now, &groups[1], &none, None, Some(0), true, None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy("consumer group empty has no consumers".to_string())
        );
        assert!(evidence(now, &groups[0], &none, None, Some(0), true, None)
            .link
            .is_healthy());
    }

    fn config(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::from_toml(
            &format!(
                r#"
[[group]]
name = "erp"
rpo_budget = "60s"

[[redis_stream]]
name = "erp-orders"
group = "erp"
{extra}
"#
            ),
            std::path::Path::new("test.toml"),
        )
    }

    #[test]
    fn config_keys_and_errors() {
        let c = config(
            "url = \"redis://rpo-stream@127.0.0.1:6379\"\npassword = \"hunter2\"\nstream = \"orders\"\nconsumer_group = \"billing\"\nrequire_consumers = true",
        )
        .unwrap();
        assert_eq!(c.targets[0].kind().as_str(), "redis_stream");
        assert_eq!(c.targets[0].heartbeat_interval(), None);
        let spec = c.targets[0]
            .spec::<RedisStreamTarget>()
            .expect("a redis_stream target");
        assert_eq!(
            (spec.stream.as_str(), spec.consumer_group.as_str()),
            ("orders", "billing")
        );
        assert!(spec.require_consumers);
        assert!(!format!("{c:?}").contains("hunter2"));

        let err = config("url = \"redis://h:6379\"\nstream = \"orders\"\ngroup_name = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("group_name"), "{err}");
        let err = config("url = \"redis://h:6379\"\nstream = \"\"\nconsumer_group = \"billing\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stream"), "{err}");
        let err = config("url = \"redis://u:hunter2@h:x\"\nstream = \"s\"\nconsumer_group = \"g\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains(".url") && !err.contains("hunter2"), "{err}");
    }
}
