//! The `opensearch` kind: cross-cluster replication (self-managed OpenSearch
//! or Amazon OpenSearch Service), read on the follower cluster with
//! `GET _plugins/_replication/<index>/_status?verbose=true` for each
//! configured follower index, or for every followed index found with
//! `GET _plugins/_replication/follower_stats` when none is configured.
//!
//! Evidence, best first:
//! 1. The heartbeat canary (optional): a document this exporter instance
//!    writes into a replicated index on the leader every
//!    `heartbeat.interval` with its own clock, read back by id on the
//!    follower index. It dates the heartbeat's own index.
//! 2. Checkpoints. The status API has no time in it, so time comes from this
//!    exporter's clock: every poll samples each shard's
//!    `leader_checkpoint` (the leader's global checkpoint, read by the
//!    follower while answering). Once the follower's checkpoint of every
//!    shard has reached a sample, every write acknowledged before that
//!    sample is on the follower. An index in step at the poll instant is
//!    caught up at that instant, so an idle leader never reads as lag; a
//!    status other than `SYNCING` proves nothing (the recovery point freezes
//!    and the exposure grows).
//!
//! The target's recovery point is the oldest of its indices' recovery
//! points: if one index proves nothing this poll, the poll proves nothing.
//! The crate's typed API has no cross-cluster-replication calls, so requests
//! go through its generic `send()`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, Url};
use opensearch::OpenSearch;
use serde::Deserialize;
use serde_json::Value;

use super::{KindDef, KindSpec};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::drivers::http as http_client;
use crate::evidence::clock::Stamp;
use crate::evidence::heartbeat::HeartbeatLog;
use crate::evidence::positions::SourceSamples;
use crate::probe::{
    from_unix_seconds, unix_seconds, Detail, FailureReason, HeartbeatWriter, LinkState,
    Measurement, Probe, ProbeContext, ProbeError, Side,
};

use crate::metric_def::MetricDef;
use crate::probe::HEARTBEAT_TIMESTAMP_SECONDS;
// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("opensearch", parse, DETAIL_FAMILIES);

/// OpenSearch cross-cluster replication, read on the follower cluster.
#[derive(Debug, Clone)]
pub struct OpensearchTarget {
    /// The follower cluster's URL; it may carry `user:password@`.
    pub url: Secret,
    /// The leader cluster's URL, for the heartbeat writer only.
    pub leader_url: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Follower indices to check; empty means every index the follower follows.
    pub indices: Vec<String>,
    pub heartbeat: Option<OpensearchHeartbeat>,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct OpensearchHeartbeat {
    pub interval: Duration,
    /// The replicated index on the leader the heartbeat document is written to,
    pub leader_index: String,
    /// and its follower index, where it is read back.
    pub follower_index: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpensearch {
    username: Option<String>,
    #[serde(default)]
    indices: Vec<String>,
    heartbeat: Option<RawHeartbeat>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interval: Option<String>,
    leader_index: String,
    follower_index: String,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let url = keys.secret("url")?;
    let leader_url = keys.optional_secret("leader_url")?;
    let password = keys.optional_secret("password")?;
    let raw: RawOpensearch = keys.take()?;
    let example = "https://monitor@search.internal:9200";
    http_client::check_url(
        keys,
        "url",
        &url,
        raw.username.as_deref(),
        password.is_some(),
        example,
    )?;
    if let Some(leader) = &leader_url {
        http_client::check_url(
            keys,
            "leader_url",
            leader,
            raw.username.as_deref(),
            password.is_some(),
            example,
        )?;
    }
    let mut indices = Vec::new();
    for (i, index) in raw.indices.iter().enumerate() {
        if !is_index_name(index) {
            return Err(keys.invalid(
                &format!("indices[{i}]"),
                format!("`{index}` is not an index name (lower case, no wildcards, no spaces or any of \\/*?\"<>|,#, not starting with _ - +)"),
            ));
        }
        if indices.contains(index) {
            return Err(keys.invalid(
                &format!("indices[{i}]"),
                format!("`{index}` is listed twice"),
            ));
        }
        indices.push(index.clone());
    }
    let heartbeat = match raw.heartbeat {
        None => None,
        Some(hb) => {
            let interval = keys.duration(
                "heartbeat.interval",
                hb.interval.as_deref(),
                Duration::from_secs(5),
            )?;
            for (name, index) in [
                ("leader_index", &hb.leader_index),
                ("follower_index", &hb.follower_index),
            ] {
                if !is_index_name(index) {
                    return Err(keys.invalid(
                        &format!("heartbeat.{name}"),
                        format!("`{index}` is not an index name"),
                    ));
                }
            }
            Some(OpensearchHeartbeat {
                interval,
                leader_index: hb.leader_index,
                follower_index: hb.follower_index,
            })
        }
    };
    match (&heartbeat, &leader_url) {
        (Some(_), None) => {
            return Err(keys.invalid(
                "leader_url",
                "the heartbeat writes to the leader cluster: set `leader_url` (or `leader_url_env`/`leader_url_file`)",
            ))
        }
        (None, Some(_)) => {
            return Err(keys.invalid(
                "leader_url",
                "is only used by the heartbeat; add `heartbeat = { interval, leader_index, follower_index }` or remove it",
            ))
        }
        _ => {}
    }
    keys.readable_file("tls_ca_file", raw.tls_ca_file.as_deref())?;
    Ok(Arc::new(OpensearchTarget {
        url,
        leader_url,
        username: raw.username,
        password,
        indices,
        heartbeat,
        tls_ca_file: raw.tls_ca_file,
    }))
}

impl KindSpec for OpensearchTarget {
    fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat.as_ref().map(|hb| hb.interval)
    }

    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        let instance = context.instance.as_str();
        let log = context.heartbeat_log(&target.name);
        Ok(Box::new(OpensearchProbe::new(target, self, instance, log)?))
    }
}

/// An OpenSearch index name as the cluster accepts it (no wildcards or
/// patterns: each followed index is asked for by name).
fn is_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['_', '-', '+'])
        && name.chars().all(|c| {
            !c.is_ascii_uppercase()
                && !c.is_control()
                && !matches!(
                    c,
                    ' ' | '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':'
                )
        })
}

// ---------------------------------------------------------------------------
// Status answers.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static INDEX_SYNCING: MetricDef = MetricDef::gauge(
    "rpo_opensearch_index_syncing",
    "1 when the follower index's replication status is SYNCING.",
)
.with_labels(&["index"]);
pub static INDEX_STATUS: MetricDef = MetricDef::gauge(
    "rpo_opensearch_index_status",
    "The follower index's replication status (syncing, bootstrapping, paused, failed, not_in_progress, other); always 1.",
).with_labels(&["index", "status"]);
pub static LEADER_CHECKPOINT: MetricDef = MetricDef::gauge(
    "rpo_opensearch_leader_checkpoint",
    "The leader index's global checkpoint (sequence number, summed over shards) as the follower last read it.",
).with_labels(&["index"]);
pub static FOLLOWER_CHECKPOINT: MetricDef = MetricDef::gauge(
    "rpo_opensearch_follower_checkpoint",
    "The follower index's checkpoint (sequence number, summed over shards).",
)
.with_labels(&["index"]);
pub static INDEX_BACKLOG_OPERATIONS: MetricDef = MetricDef::gauge(
    "rpo_opensearch_index_backlog_operations",
    "Operations on the leader index not yet on the follower (leader minus follower checkpoint).",
)
.with_labels(&["index"]);
pub static BOOTSTRAP_PROGRESS_RATIO: MetricDef = MetricDef::gauge(
    "rpo_opensearch_bootstrap_progress_ratio",
    "Share of the initial copy (bytes) done while a follower index bootstraps.",
)
.with_labels(&["index"]);
pub static FOLLOWER_INDICES: MetricDef = MetricDef::gauge(
    "rpo_opensearch_follower_indices",
    "Follower indices on the follower cluster by replication state (follower_stats).",
)
.with_labels(&["status"]);
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &INDEX_SYNCING,
    &INDEX_STATUS,
    &LEADER_CHECKPOINT,
    &FOLLOWER_CHECKPOINT,
    &INDEX_BACKLOG_OPERATIONS,
    &BOOTSTRAP_PROGRESS_RATIO,
    &FOLLOWER_INDICES,
    &HEARTBEAT_TIMESTAMP_SECONDS,
];

/// The `status` field of a replication status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationStatus {
    Syncing,
    Bootstrapping,
    Paused,
    Failed,
    NotInProgress,
    Other(String),
}

impl ReplicationStatus {
    pub fn parse(text: &str) -> ReplicationStatus {
        match text {
            "SYNCING" => ReplicationStatus::Syncing,
            // The documentation spells it with one P; the plugin with two.
            "BOOTSTRAPPING" | "BOOTSTRAPING" => ReplicationStatus::Bootstrapping,
            "PAUSED" => ReplicationStatus::Paused,
            "FAILED" => ReplicationStatus::Failed,
            "REPLICATION NOT IN PROGRESS" => ReplicationStatus::NotInProgress,
            other => ReplicationStatus::Other(other.to_string()),
        }
    }

    /// A bounded label value.
    pub fn label(&self) -> &'static str {
        match self {
            ReplicationStatus::Syncing => "syncing",
            ReplicationStatus::Bootstrapping => "bootstrapping",
            ReplicationStatus::Paused => "paused",
            ReplicationStatus::Failed => "failed",
            ReplicationStatus::NotInProgress => "not_in_progress",
            ReplicationStatus::Other(_) => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    pub leader: i64,
    pub follower: i64,
}

/// One index's replication status, as the follower reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStatus {
    pub status: ReplicationStatus,
    /// The status as written, for messages.
    pub status_text: String,
    pub reason: Option<String>,
    pub leader_index: Option<String>,
    /// `syncing_details`: checkpoints summed over the index's shards.
    pub checkpoints: Option<Checkpoints>,
    /// `shard_replication_details` (verbose): checkpoints per shard.
    pub shards: BTreeMap<String, Checkpoints>,
    /// `bootstrap_details.bytes_percent`, while bootstrapping.
    pub bootstrap_percent: Option<f64>,
}

fn checkpoints(details: &Value) -> Option<Checkpoints> {
    Some(Checkpoints {
        leader: details.get("leader_checkpoint")?.as_i64()?,
        follower: details.get("follower_checkpoint")?.as_i64()?,
    })
}

/// Parses a `_plugins/_replication/<index>/_status` body.
pub fn parse_status(body: &str) -> Result<IndexStatus, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let status_text = value
        .get("status")
        .and_then(Value::as_str)
        .ok_or("no `status` field")?
        .to_string();
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let checkpoints_total = match value.get("syncing_details") {
        None | Some(Value::Null) => None,
        Some(details) => {
            Some(checkpoints(details).ok_or("`syncing_details` lacks integer checkpoints")?)
        }
    };
    let mut shards = BTreeMap::new();
    if let Some(list) = value
        .get("shard_replication_details")
        .and_then(Value::as_array)
    {
        for shard in list {
            let Some(details) = shard.get("syncing_task_details") else {
                continue;
            };
            let id = match shard.get("shard_id") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => return Err("a shard entry has no `shard_id`".to_string()),
            };
            let c =
                checkpoints(details).ok_or("`syncing_task_details` lacks integer checkpoints")?;
            shards.insert(id, c);
        }
    }
    Ok(IndexStatus {
        status: ReplicationStatus::parse(&status_text),
        status_text,
        reason: text("reason"),
        leader_index: text("leader_index"),
        checkpoints: checkpoints_total,
        shards,
        bootstrap_percent: value
            .get("bootstrap_details")
            .and_then(|d| d.get("bytes_percent"))
            .and_then(Value::as_f64),
    })
}

/// What `_plugins/_replication/follower_stats` says about followed indices.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FollowerStats {
    /// Indices with running shard tasks (syncing ones).
    pub indices: Vec<String>,
    pub syncing: u64,
    pub bootstrapping: u64,
    pub paused: u64,
    pub failed: u64,
}

pub fn parse_follower_stats(body: &str) -> Result<FollowerStats, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let count = |key: &str| -> Result<u64, String> {
        value
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no integer `{key}`"))
    };
    let indices = match value.get("index_stats") {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("`index_stats` is not an object".to_string()),
    };
    Ok(FollowerStats {
        indices,
        syncing: count("num_syncing_indices")?,
        bootstrapping: count("num_bootstrapping_indices")?,
        paused: count("num_paused_indices")?,
        failed: count("num_failed_indices")?,
    })
}

/// Parses `GET <index>/_doc/<id>`: the heartbeat time, or `None` when the
/// document has not arrived yet (`found: false`).
pub fn parse_heartbeat_doc(body: &str) -> Result<Option<SystemTime>, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("found").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    let ts = value
        .get("_source")
        .and_then(|s| s.get("ts"))
        .and_then(Value::as_f64)
        .ok_or("the heartbeat document has no numeric `ts`")?;
    Ok(from_unix_seconds(ts))
}

/// Leader checkpoints per shard sampled with this exporter's clock, to date
/// a follower that is behind.
#[derive(Debug, Default)]
pub struct CheckpointHistory {
    leader: SourceSamples<BTreeMap<String, i64>>,
}

impl CheckpointHistory {
    /// What one status answer, asked at `asked_at`, proves for its index.
    /// Records the sample it needs.
    pub fn recovery_point(&mut self, asked_at: Stamp, status: &IndexStatus) -> Option<SystemTime> {
        if status.status != ReplicationStatus::Syncing {
            return None;
        }
        if !status.shards.is_empty() {
            let leader: BTreeMap<String, i64> = status
                .shards
                .iter()
                .map(|(shard, c)| (shard.clone(), c.leader))
                .collect();
            // A leader checkpoint going back (a new leader index) forgets
            // older samples: they date nothing any more.
            self.leader.record(asked_at, leader);
            return self.leader.dated(asked_at, |sample| {
                sample.iter().all(|(shard, leader)| {
                    status
                        .shards
                        .get(shard)
                        .is_some_and(|c| c.follower >= *leader)
                })
            });
        }
        // Only the sums: equal sums mean every shard is in step (a follower
        // never passes its leader); unequal sums cannot be dated.
        match status.checkpoints {
            Some(c) if c.follower >= c.leader => Some(asked_at.wall),
            _ => None,
        }
    }
}

/// What one poll of the follower proves for the whole target.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowerEvidence {
    pub recovery_point: Option<SystemTime>,
    pub link: LinkState,
    pub backlog_operations: Option<f64>,
}

/// Pure: combines the indices' recovery points and statuses.
pub fn combine(
    indices: &[(String, IndexStatus, Option<SystemTime>)],
    stats: Option<&FollowerStats>,
) -> FollowerEvidence {
    let mut problems = Vec::new();
    for (index, status, _) in indices {
        let why = match &status.status {
            ReplicationStatus::Syncing => continue,
            ReplicationStatus::Bootstrapping => format!(
                "{index} is bootstrapping (initial copy{})",
                status
                    .bootstrap_percent
                    .map(|p| format!(" {p:.0}% done"))
                    .unwrap_or_default()
            ),
            ReplicationStatus::NotInProgress => format!(
                "{index} is not being replicated (REPLICATION NOT IN PROGRESS: stopped, never started, or not a follower index)"
            ),
            _ => format!(
                "{index} is {}{}",
                status.status_text,
                status
                    .reason
                    .as_deref()
                    .map(|r| format!(": {}", http_client::excerpt(r, 160)))
                    .unwrap_or_default()
            ),
        };
        problems.push(why);
    }
    if let Some(stats) = stats {
        let named = problems.len() as u64;
        let counted = stats.paused + stats.failed + stats.bootstrapping;
        if counted > named {
            problems.push(format!(
                "follower_stats counts {} paused, {} failed and {} bootstrapping indices not all named here; list the follower indices in `indices` to see which",
                stats.paused, stats.failed, stats.bootstrapping
            ));
        }
    }
    if indices.is_empty() {
        problems.push(
            "the follower follows no index (follower_stats lists none); list the follower indices in `indices`"
                .to_string(),
        );
    }
    let link = if problems.is_empty() {
        LinkState::Healthy
    } else {
        LinkState::Unhealthy(problems.join("; "))
    };
    let recovery_point = if indices.is_empty() {
        None
    } else {
        indices
            .iter()
            .map(|(_, _, rp)| *rp)
            .collect::<Option<Vec<_>>>()
            .and_then(|points| points.into_iter().min())
    };
    let backlogs: Vec<f64> = indices
        .iter()
        .filter(|(_, s, _)| s.status == ReplicationStatus::Syncing)
        .filter_map(|(_, s, _)| s.checkpoints)
        .map(|c| (c.leader - c.follower).max(0) as f64)
        .collect();
    FollowerEvidence {
        recovery_point,
        link,
        backlog_operations: (!backlogs.is_empty()).then(|| backlogs.iter().sum()),
    }
}

// ---------------------------------------------------------------------------
// Talking to a cluster.

/// A client for one cluster. Credentials come from the URL (reqwest takes
/// them out of it before anything can print it) or from `username` + password.
fn cluster_client(
    target: &Target,
    url: &Secret,
    credentials: Option<(String, Secret)>,
    ca_file: Option<&std::path::Path>,
) -> Result<OpenSearch, ProbeError> {
    let config_error = |what: String| {
        ProbeError::new(
            FailureReason::Config,
            format!("target {}: {what}", target.name),
        )
    };
    let parsed = Url::parse(url.expose()).map_err(|e| config_error(format!("bad URL: {e}")))?;
    let mut builder =
        TransportBuilder::new(SingleNodeConnectionPool::new(parsed)).timeout(target.timeout);
    if let Some((user, password)) = credentials {
        builder = builder.auth(Credentials::Basic(user, password.expose().to_string()));
    }
    if let Some(path) = ca_file {
        let pem = crate::drivers::read_ca_file(&target.name, path)?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| config_error(format!("tls_ca_file {} is not PEM: {e}", path.display())))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    let transport = builder
        .build()
        .map_err(|e| config_error(format!("HTTP client setup failed: {e}")))?;
    Ok(OpenSearch::new(transport))
}

/// One request; the body of a 2xx answer, or a failure with a bounded reason.
async fn request(
    client: &OpenSearch,
    method: Method,
    path: &str,
    query: Option<&[(&str, &str)]>,
    body: Option<JsonBody<Value>>,
    what: &str,
) -> Result<(u16, String), ProbeError> {
    let response = client
        .send(method, path, HeaderMap::new(), query, body, None)
        .await
        .map_err(|e| transport_error(&e, what))?;
    let status = response.status_code().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| transport_error(&e, what))?;
    Ok((status, text))
}

fn transport_error(err: &opensearch::Error, what: &str) -> ProbeError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if let Some(http) = s.downcast_ref::<reqwest::Error>() {
            return http_client::classify(http, what);
        }
        source = s.source();
    }
    if err.is_timeout() {
        return ProbeError::new(FailureReason::Timeout, format!("{what}: no answer in time"));
    }
    ProbeError::new(FailureReason::Query, format!("{what}: {err}"))
}

/// Turns a non-2xx answer into a failure a person can act on.
fn http_failure(status: u16, body: &str, what: &str, privilege: &str) -> ProbeError {
    // OpenSearch errors look like {"error":{"type":..,"reason":..},"status":404}.
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            match error {
                Value::String(s) => Some(s.clone()),
                _ => Some(format!(
                    "{}: {}",
                    error.get("type")?.as_str()?,
                    error.get("reason").and_then(Value::as_str).unwrap_or("")
                )),
            }
        })
        .unwrap_or_else(|| http_client::excerpt(body, 160));
    match status {
        401 => ProbeError::new(
            FailureReason::Auth,
            format!("{what}: the cluster refused the credentials (HTTP 401); check username and password"),
        ),
        403 => ProbeError::new(
            FailureReason::Auth,
            format!("{what}: permission denied (HTTP 403: {detail}); the user needs {privilege}"),
        ),
        _ => ProbeError::new(
            FailureReason::Query,
            format!("{what}: HTTP {status} ({detail})"),
        ),
    }
}

const STATUS_PRIVILEGE: &str =
    "`cluster:admin/plugins/replication/index/status_check` on the follower indices";

pub struct OpensearchProbe {
    follower: OpenSearch,
    follower_shown: String,
    /// Configured indices; empty means discover them.
    indices: Vec<String>,
    /// Indices discovered so far: one that stops syncing drops out of
    /// follower_stats but must still be reported.
    discovered: BTreeSet<String>,
    history: BTreeMap<String, CheckpointHistory>,
    heartbeat: Option<HeartbeatSettings>,
    leader: Option<OpenSearch>,
    leader_shown: String,
    instance: String,
    /// This target's heartbeat writes, which date the heartbeat seen.
    heartbeat_log: HeartbeatLog,
}

#[derive(Clone)]
struct HeartbeatSettings {
    interval: Duration,
    leader_index: String,
    follower_index: String,
}

impl OpensearchProbe {
    pub fn new(
        target: &Target,
        spec: &OpensearchTarget,
        instance: &str,
        heartbeat_log: HeartbeatLog,
    ) -> Result<OpensearchProbe, ProbeError> {
        let credentials = spec.username.clone().zip(spec.password.clone());
        let follower = cluster_client(
            target,
            &spec.url,
            credentials.clone(),
            spec.tls_ca_file.as_deref(),
        )?;
        let leader = match &spec.leader_url {
            Some(url) => Some(cluster_client(
                target,
                url,
                credentials,
                spec.tls_ca_file.as_deref(),
            )?),
            None => None,
        };
        Ok(OpensearchProbe {
            follower,
            follower_shown: http_client::origin(spec.url.expose()),
            indices: spec.indices.clone(),
            discovered: BTreeSet::new(),
            history: BTreeMap::new(),
            heartbeat: spec.heartbeat.as_ref().map(|hb| HeartbeatSettings {
                interval: hb.interval,
                leader_index: hb.leader_index.clone(),
                follower_index: hb.follower_index.clone(),
            }),
            leader,
            leader_shown: spec
                .leader_url
                .as_ref()
                .map(|u| http_client::origin(u.expose()))
                .unwrap_or_default(),
            instance: instance.to_string(),
            heartbeat_log,
        })
    }

    async fn follower_stats(&self) -> Result<FollowerStats, ProbeError> {
        let what = format!("follower cluster {}", self.follower_shown);
        let (status, body) = request(
            &self.follower,
            Method::Get,
            "_plugins/_replication/follower_stats",
            None,
            None,
            &what,
        )
        .await?;
        if status != 200 {
            return Err(http_failure(
                status,
                &body,
                &format!("{what}, follower_stats"),
                "`cluster:admin/plugins/replication/index/stats`",
            ));
        }
        parse_follower_stats(&body).map_err(|e| {
            ProbeError::new(
                FailureReason::Parse,
                format!("{what}: follower_stats answered with {e}"),
            )
        })
    }

    async fn index_status(&self, index: &str) -> Result<IndexStatus, ProbeError> {
        let what = format!("follower cluster {}, index {index}", self.follower_shown);
        let (status, body) = request(
            &self.follower,
            Method::Get,
            &format!("_plugins/_replication/{index}/_status"),
            Some(&[("verbose", "true")]),
            None,
            &what,
        )
        .await?;
        if status != 200 {
            return Err(http_failure(status, &body, &what, STATUS_PRIVILEGE));
        }
        parse_status(&body).map_err(|e| {
            ProbeError::new(
                FailureReason::Parse,
                format!(
                    "{what}: the replication status answer is {e}: {}",
                    http_client::excerpt(&body, 120)
                ),
            )
        })
    }

    async fn heartbeat_seen(
        &self,
        hb: &HeartbeatSettings,
    ) -> Result<Option<SystemTime>, ProbeError> {
        let what = format!(
            "follower cluster {}, heartbeat index {}",
            self.follower_shown, hb.follower_index
        );
        let (status, body) = request(
            &self.follower,
            Method::Get,
            &format!("{}/_doc/{}", hb.follower_index, self.instance),
            None,
            None,
            &what,
        )
        .await?;
        match status {
            // Not replicated yet: no heartbeat evidence, not a failure.
            200 | 404 if body.contains("\"found\"") => parse_heartbeat_doc(&body)
                .map_err(|e| ProbeError::new(FailureReason::Parse, format!("{what}: {e}"))),
            _ => Err(http_failure(
                status,
                &body,
                &what,
                "`indices:data/read/get` on the heartbeat follower index",
            )),
        }
    }

    async fn poll_once(&mut self) -> Result<Measurement, ProbeError> {
        let asked_at = Stamp::now();
        let mut names: BTreeSet<String> = self.indices.iter().cloned().collect();
        let mut stats = None;
        if self.indices.is_empty() {
            let found = self
                .follower_stats()
                .await
                .map_err(|e| e.on(Side::Replica))?;
            self.discovered.extend(found.indices.iter().cloned());
            names.extend(self.discovered.iter().cloned());
            stats = Some(found);
        }
        if let Some(hb) = &self.heartbeat {
            names.insert(hb.follower_index.clone());
        }
        let asks = names.iter().map(|index| self.index_status(index));
        let answers = futures::future::join_all(asks).await;
        let mut statuses = Vec::new();
        for (index, answer) in names.iter().zip(answers) {
            statuses.push((index.clone(), answer.map_err(|e| e.on(Side::Replica))?));
        }

        let mut measurement = Measurement::new(asked_at.wall);
        measurement.replica_reachable = Some(true);
        let mut heartbeat_seen = None;
        if let Some(hb) = self.heartbeat.clone() {
            match self.heartbeat_seen(&hb).await {
                Ok(seen) => heartbeat_seen = seen,
                Err(e) => measurement.failures.push(e.on(Side::Replica)),
            }
        }

        let mut dated = Vec::new();
        for (index, status) in statuses {
            let mut rp = self
                .history
                .entry(index.clone())
                .or_default()
                .recovery_point(asked_at, &status);
            if self
                .heartbeat
                .as_ref()
                .is_some_and(|hb| hb.follower_index == index)
            {
                let heartbeat = heartbeat_seen
                    .and_then(|seen| self.heartbeat_log.date(seen, asked_at).proven());
                rp = rp.max(heartbeat);
            }
            dated.push((index, status, rp));
        }
        let evidence = combine(&dated, stats.as_ref());
        measurement.recovery_point = evidence.recovery_point;
        measurement.link = evidence.link;
        measurement.backlog_operations = evidence.backlog_operations;
        measurement.details = details(&dated, stats.as_ref(), heartbeat_seen);
        Ok(measurement)
    }
}

fn details(
    indices: &[(String, IndexStatus, Option<SystemTime>)],
    stats: Option<&FollowerStats>,
    heartbeat_seen: Option<SystemTime>,
) -> Vec<Detail> {
    let mut details = Vec::new();
    for (index, status, _) in indices {
        details.push(
            Detail::new(
                &INDEX_SYNCING,
                if status.status == ReplicationStatus::Syncing {
                    1.0
                } else {
                    0.0
                },
            )
            .with_label("index", index.clone()),
        );
        details.push(
            Detail::new(&INDEX_STATUS, 1.0)
                .with_label("index", index.clone())
                .with_label("status", status.status.label()),
        );
        if let (ReplicationStatus::Syncing, Some(c)) = (&status.status, status.checkpoints) {
            details.push(
                Detail::new(&LEADER_CHECKPOINT, c.leader as f64).with_label("index", index.clone()),
            );
            details.push(
                Detail::new(&FOLLOWER_CHECKPOINT, c.follower as f64)
                    .with_label("index", index.clone()),
            );
            details.push(
                Detail::new(
                    &INDEX_BACKLOG_OPERATIONS,
                    (c.leader - c.follower).max(0) as f64,
                )
                .with_label("index", index.clone()),
            );
        }
        if let (ReplicationStatus::Bootstrapping, Some(p)) =
            (&status.status, status.bootstrap_percent)
        {
            details.push(
                Detail::new(&BOOTSTRAP_PROGRESS_RATIO, p / 100.0)
                    .with_label("index", index.clone()),
            );
        }
    }
    if let Some(stats) = stats {
        for (status, count) in [
            ("syncing", stats.syncing),
            ("bootstrapping", stats.bootstrapping),
            ("paused", stats.paused),
            ("failed", stats.failed),
        ] {
            details.push(Detail::new(&FOLLOWER_INDICES, count as f64).with_label("status", status));
        }
    }
    if let Some(t) = heartbeat_seen {
        details.push(Detail::new(&HEARTBEAT_TIMESTAMP_SECONDS, unix_seconds(t)));
    }
    details
}

impl Probe for OpensearchProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(self.poll_once())
    }

    fn heartbeat_writer(&mut self) -> Option<Box<dyn HeartbeatWriter>> {
        let hb = self.heartbeat.clone()?;
        let leader = self.leader.clone()?;
        Some(Box::new(OpensearchHeartbeatWriter {
            leader,
            leader_shown: self.leader_shown.clone(),
            index: hb.leader_index,
            interval: hb.interval,
            instance: self.instance.clone(),
            log: self.heartbeat_log.clone(),
        }))
    }
}

/// Writes this exporter's heartbeat document into the leader index.
struct OpensearchHeartbeatWriter {
    leader: OpenSearch,
    leader_shown: String,
    index: String,
    interval: Duration,
    instance: String,
    /// Where each value is logged before it is sent, to date it when seen.
    log: HeartbeatLog,
}

impl HeartbeatWriter for OpensearchHeartbeatWriter {
    fn interval(&self) -> Duration {
        self.interval
    }

    fn write(&mut self, at: SystemTime) -> BoxFuture<'_, Result<(), ProbeError>> {
        self.log.record(at);
        Box::pin(async move {
            let what = format!(
                "leader cluster {}, heartbeat index {}",
                self.leader_shown, self.index
            );
            let doc = serde_json::json!({ "instance": self.instance, "ts": unix_seconds(at) });
            let (status, body) = request(
                &self.leader,
                Method::Put,
                &format!("{}/_doc/{}", self.index, self.instance),
                None,
                Some(JsonBody::new(doc)),
                &what,
            )
            .await
            .map_err(|e| e.on(Side::Source))?;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(http_failure(
                    status,
                    &body,
                    &what,
                    &format!("`indices:data/write/index` on {}", self.index),
                )
                .on(Side::Source))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    // The documented answers, from the OpenSearch documentation
    // (documentation-website: _tuning-your-cluster/replication-plugin/api.md,
    // "Get replication status", and getting-started.md, "Pause and resume
    // replication" / "Stop replication").
    const SYNCING: &str = r#"{
  "status" : "SYNCING",
  "reason" : "User initiated",
  "leader_alias" : "my-connection-name",
  "leader_index" : "leader-01",
  "follower_index" : "follower-01",
  "syncing_details" : {
    "leader_checkpoint" : 19,
    "follower_checkpoint" : 19,
    "seq_no" : 0
  }
}"#;
    const PAUSED: &str = r#"{
  "status" : "PAUSED",
  "reason" : "User initiated",
  "leader_alias" : "my-connection-alias",
  "leader_index" : "leader-01",
  "follower_index" : "follower-01"
}"#;
    const NOT_IN_PROGRESS: &str = r#"{
  "status" : "REPLICATION NOT IN PROGRESS"
}"#;
    // FAILED has the shape of PAUSED (cross-cluster-replication,
    // TransportReplicationStatusAction.kt: any state but RUNNING answers
    // status, reason, leader_alias, leader_index, follower_index); the
    // reason text is the plugin's own for a missing leader permission.
    const FAILED: &str = r#"{"status":"FAILED","reason":"no permissions for [indices:data/read/plugins/replication/file_chunk] and associated roles","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01"}"#;
    // The verbose form (`?verbose=true`) adds shard_replication_details,
    // rendered per ShardInfoResponse.kt; two shards, one behind.
    const SYNCING_VERBOSE_BEHIND: &str = r#"{"status":"SYNCING","reason":"User initiated","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01","syncing_details":{"leader_checkpoint":30,"follower_checkpoint":25,"seq_no":27},"shard_replication_details":[{"shard_id":"[follower-01][0]","syncing_task_details":{"leader_checkpoint":15,"follower_checkpoint":15,"seq_no":16}},{"shard_id":"[follower-01][1]","syncing_task_details":{"leader_checkpoint":15,"follower_checkpoint":10,"seq_no":11}}]}"#;
    const BOOTSTRAPPING: &str = r#"{"status":"BOOTSTRAPPING","reason":"User initiated","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01","bootstrap_details":{"bytes_total":1000,"bytes_recovered":420,"bytes_percent":42.0,"files_total":10,"files_recovered":4,"files_percent":40.0,"start_time":1700000000000,"running_time":1200}}"#;
    // From the documentation's "Get follower cluster stats" example.
    const FOLLOWER_STATS: &str = r#"{"num_syncing_indices":2,"num_bootstrapping_indices":0,"num_paused_indices":0,"num_failed_indices":0,"num_shard_tasks":2,"num_index_tasks":2,"operations_written":3,"operations_read":3,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":1,"leader_checkpoint":1,"total_write_time_millis":2290,"index_stats":{"follower-index-1":{"operations_written":2,"operations_read":2,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":1,"leader_checkpoint":1,"total_write_time_millis":1355},"follower-index-2":{"operations_written":1,"operations_read":1,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":0,"leader_checkpoint":0,"total_write_time_millis":935}}}"#;

    #[test]
    fn parses_the_documented_bodies() {
        let s = parse_status(SYNCING).unwrap();
        assert_eq!(s.status, ReplicationStatus::Syncing);
        assert_eq!(
            s.checkpoints,
            Some(Checkpoints {
                leader: 19,
                follower: 19
            })
        );
        assert_eq!(s.leader_index.as_deref(), Some("leader-01"));
        let p = parse_status(PAUSED).unwrap();
        assert_eq!(p.status, ReplicationStatus::Paused);
        assert_eq!(p.checkpoints, None);
        assert_eq!(
            parse_status(NOT_IN_PROGRESS).unwrap().status,
            ReplicationStatus::NotInProgress
        );
        assert_eq!(
            parse_status(FAILED).unwrap().status,
            ReplicationStatus::Failed
        );
        let b = parse_status(BOOTSTRAPPING).unwrap();
        assert_eq!(b.status, ReplicationStatus::Bootstrapping);
        assert_eq!(b.bootstrap_percent, Some(42.0));
        assert_eq!(
            ReplicationStatus::parse("BOOTSTRAPING"),
            ReplicationStatus::Bootstrapping
        );
        let v = parse_status(SYNCING_VERBOSE_BEHIND).unwrap();
        assert_eq!(v.shards.len(), 2);
        assert_eq!(
            v.shards["[follower-01][1]"],
            Checkpoints {
                leader: 15,
                follower: 10
            }
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse_status("<html>502 Bad Gateway</html>").is_err());
        assert!(parse_status(r#"{"acknowledged":true}"#).is_err());
        assert!(parse_status(
            r#"{"status":"SYNCING","syncing_details":{"leader_checkpoint":"x"}}"#
        )
        .is_err());
        assert!(parse_follower_stats("{}").is_err());
    }

    #[test]
    fn follower_stats_names_the_syncing_indices() {
        let s = parse_follower_stats(FOLLOWER_STATS).unwrap();
        assert_eq!(s.indices, ["follower-index-1", "follower-index-2"]);
        assert_eq!((s.syncing, s.paused, s.failed), (2, 0, 0));
    }

    #[test]
    fn in_step_is_caught_up_now_even_when_idle() {
        let mut h = CheckpointHistory::default();
        let s = parse_status(SYNCING).unwrap();
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(10.0)), &s),
            Some(at(10.0))
        );
        // Nothing written for an hour: still in step, still now.
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(3610.0)), &s),
            Some(at(3610.0))
        );
    }

    #[test]
    fn a_follower_behind_is_dated_by_earlier_samples_per_shard() {
        let mut h = CheckpointHistory::default();
        let shard = |l0: i64, f0: i64, l1: i64, f1: i64| {
            let mut s = parse_status(SYNCING_VERBOSE_BEHIND).unwrap();
            s.shards.insert(
                "[follower-01][0]".into(),
                Checkpoints {
                    leader: l0,
                    follower: f0,
                },
            );
            s.shards.insert(
                "[follower-01][1]".into(),
                Checkpoints {
                    leader: l1,
                    follower: f1,
                },
            );
            s.checkpoints = Some(Checkpoints {
                leader: l0 + l1,
                follower: f0 + f1,
            });
            s
        };
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(10.0)), &shard(10, 10, 10, 10)),
            Some(at(10.0))
        );
        // Writes go on; shard 1 falls behind.
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(11.0)), &shard(20, 20, 20, 12)),
            Some(at(10.0))
        );
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(12.0)), &shard(30, 30, 30, 20)),
            Some(at(11.0))
        );
        // The sums would say 65 >= 60 (the sample at 12 s) while shard 1
        // still lacks writes from before it: per shard, it is not reached.
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(13.0)), &shard(40, 40, 40, 25)),
            Some(at(11.0))
        );
    }

    #[test]
    fn sums_alone_prove_only_being_in_step() {
        let mut h = CheckpointHistory::default();
        let mut s = parse_status(SYNCING).unwrap();
        s.checkpoints = Some(Checkpoints {
            leader: 30,
            follower: 25,
        });
        assert_eq!(h.recovery_point(Stamp::unstepped(at(10.0)), &s), None);
    }

    #[test]
    fn not_syncing_proves_nothing() {
        let mut h = CheckpointHistory::default();
        for body in [PAUSED, FAILED, NOT_IN_PROGRESS, BOOTSTRAPPING] {
            assert_eq!(
                h.recovery_point(Stamp::unstepped(at(10.0)), &parse_status(body).unwrap()),
                None,
                "{body}"
            );
        }
    }

    #[test]
    fn combine_takes_the_oldest_index_and_names_every_problem() {
        let syncing = parse_status(SYNCING).unwrap();
        let paused = parse_status(PAUSED).unwrap();
        let e = combine(
            &[
                ("a".into(), syncing.clone(), Some(at(10.0))),
                ("b".into(), syncing.clone(), Some(at(7.0))),
            ],
            None,
        );
        assert_eq!(e.recovery_point, Some(at(7.0)));
        assert_eq!(e.link, LinkState::Healthy);
        assert_eq!(e.backlog_operations, Some(0.0));
        let e = combine(
            &[
                ("a".into(), syncing, Some(at(10.0))),
                ("b".into(), paused, None),
            ],
            None,
        );
        assert_eq!(e.recovery_point, None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy("b is PAUSED: User initiated".into())
        );
    }

    #[test]
    fn discovery_counts_unnamed_problems_and_an_empty_follower() {
        let stats = FollowerStats {
            indices: vec![],
            syncing: 1,
            bootstrapping: 0,
            paused: 1,
            failed: 0,
        };
        let e = combine(
            &[("a".into(), parse_status(SYNCING).unwrap(), Some(at(1.0)))],
            Some(&stats),
        );
        assert!(
            matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("1 paused")),
            "{:?}",
            e.link
        );
        let e = combine(&[], Some(&FollowerStats::default()));
        assert!(
            matches!(e.link, LinkState::Unhealthy(ref why) if why.contains("follows no index"))
        );
        assert_eq!(e.recovery_point, None);
    }

    #[test]
    fn heartbeat_documents() {
        assert_eq!(
            parse_heartbeat_doc(r#"{"_index":"hb","_id":"x","found":true,"_source":{"instance":"x","ts":1700000010.5}}"#).unwrap(),
            Some(at(10.5))
        );
        assert_eq!(
            parse_heartbeat_doc(r#"{"_index":"hb","_id":"x","found":false}"#).unwrap(),
            None
        );
        assert!(parse_heartbeat_doc(r#"{"found":true,"_source":{}}"#).is_err());
    }
}
