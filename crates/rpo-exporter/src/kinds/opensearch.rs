//! The `opensearch` kind: cross-cluster replication (self-managed OpenSearch
//! or Amazon OpenSearch Service), read on the follower cluster with
//! `GET _plugins/_replication/<index>/_status?verbose=true` for each
//! configured follower index, or for every followed index found with
//! `GET _plugins/_replication/follower_stats` when none is configured.
//!
//! What the replication plugin answers, read from its source
//! (opensearch-project/cross-cluster-replication, `action/status/`): for a
//! running replication the index's `status` is its *first* shard's state
//! (`TransportReplicationStatusAction.kt`), `syncing_details` sums the
//! checkpoints of the shards that replay and `bootstrap_details` the copy
//! of the shards that still restore (`populateAggregatedResponse`), and
//! only `verbose=true` lists every primary shard
//! (`shard_replication_details`, rendered by `ShardInfoResponse.kt`). So an
//! index whose shard 0 syncs while another shard still copies reads
//! `SYNCING`: this kind judges every shard, and an index is synced only
//! when every shard is.
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
//!    caught up at that instant, so an idle leader never reads as lag; an
//!    index not syncing on every shard proves nothing (the recovery point
//!    freezes and the exposure grows).
//!
//! The target's recovery point is the oldest of its indices' recovery
//! points: if one index proves nothing this poll, the poll proves nothing.
//!
//! Requests go out through `reqwest` (the client of `drivers::http`), with
//! basic auth or, for Amazon OpenSearch Service domains with IAM access,
//! signed with AWS Signature Version 4 (`aws_sigv4`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::aws::config::{is_aws_region, parse_arn};
use super::aws::{clients_for, AwsAccess, AwsClients};
use super::{KindDef, KindSpec};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::drivers::http::{self as http_client, AwsSigner};
use crate::evidence::clock::Stamp;
use crate::evidence::heartbeat::HeartbeatLog;
use crate::evidence::positions::SourceSamples;
use crate::metric_def::MetricDef;
use crate::probe::{
    from_unix_seconds, unix_seconds, Detail, FailureReason, HeartbeatWriter, LinkState,
    Measurement, Probe, ProbeContext, ProbeError, Side, HEARTBEAT_TIMESTAMP_SECONDS,
};

// ---------------------------------------------------------------------------
// The permissions the requests need, as the plugins name them.

/// The action behind `GET _plugins/_replication/<index>/_status`
/// (cross-cluster-replication, `action/status/ReplicationStatusAction.kt`).
/// Its request (`ShardInfoRequest`) names the follower index, so the
/// Security plugin checks it as an index permission on that index. The
/// status action asks the shards itself as the plugin's own user, so no
/// other permission is needed.
pub const STATUS_ACTION: &str = "indices:admin/plugins/replication/index/status_check";
/// The action behind `GET _plugins/_replication/follower_stats`
/// (`action/stats/FollowerStatsAction.kt`). Named `indices:` although it is
/// cluster-wide: its request (`FollowerStatsRequest`, a nodes request)
/// names no index, so the Security plugin resolves it to every index and
/// the permission must be granted on the index pattern `*`.
pub const FOLLOWER_STATS_ACTION: &str = "indices:admin/plugins/replication/follower/stats";
/// `GET <index>/_doc/<id>`: the heartbeat read on the follower.
pub const GET_ACTION: &str = "indices:data/read/get";
/// `PUT <index>/_doc/<id>`: the heartbeat write on the leader.
pub const INDEX_ACTION: &str = "indices:data/write/index";

/// What one request needs, for a 403's message.
#[derive(Debug, Clone, Copy)]
struct Grant {
    /// The Security plugin's action.
    action: &'static str,
    /// Where it must be granted.
    scope: &'static str,
    /// The IAM action of Amazon OpenSearch Service for the HTTP verb.
    iam_action: &'static str,
}

const STATUS_GRANT: Grant = Grant {
    action: STATUS_ACTION,
    scope: "as an index permission on the follower indices",
    iam_action: "es:ESHttpGet",
};
const FOLLOWER_STATS_GRANT: Grant = Grant {
    action: FOLLOWER_STATS_ACTION,
    scope: "as an index permission on the index pattern `*` (its request names no index)",
    iam_action: "es:ESHttpGet",
};
const HEARTBEAT_READ_GRANT: Grant = Grant {
    action: GET_ACTION,
    scope: "on the heartbeat follower index",
    iam_action: "es:ESHttpGet",
};
const HEARTBEAT_WRITE_GRANT: Grant = Grant {
    action: INDEX_ACTION,
    scope: "on the heartbeat leader index",
    iam_action: "es:ESHttpPut",
};

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
    /// Sign every request with AWS SigV4 (Amazon OpenSearch Service, IAM access).
    pub aws_sigv4: Option<OpensearchSigV4>,
}

#[derive(Debug, Clone)]
pub struct OpensearchHeartbeat {
    pub interval: Duration,
    /// The replicated index on the leader the heartbeat document is written to,
    pub leader_index: String,
    /// and its follower index, where it is read back.
    pub follower_index: String,
}

/// SigV4 signing of an Amazon OpenSearch Service domain's requests, with
/// credentials from the standard AWS credential chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpensearchSigV4 {
    /// The follower domain's region.
    pub region: String,
    /// The leader domain's region (heartbeat writes); defaults to `region`.
    pub leader_region: String,
    /// The signing name: `es` (managed domains).
    pub service: String,
    /// A named profile of the shared AWS config/credentials files.
    pub profile: Option<String>,
    /// A role assumed (with STS) on top of the credential chain.
    pub role_arn: Option<String>,
}

/// The only signing name this kind accepts: managed domains answer as `es`
/// (the `aoss` of OpenSearch Serverless has no replication API).
pub const SIGV4_SERVICE: &str = "es";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpensearch {
    username: Option<String>,
    #[serde(default)]
    indices: Vec<String>,
    heartbeat: Option<RawHeartbeat>,
    tls_ca_file: Option<PathBuf>,
    aws_sigv4: Option<RawSigV4>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interval: Option<String>,
    leader_index: String,
    follower_index: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigV4 {
    region: Option<String>,
    service: Option<String>,
    leader_region: Option<String>,
    profile: Option<String>,
    role_arn: Option<String>,
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
    let aws_sigv4 = match raw.aws_sigv4 {
        None => None,
        Some(raw_sigv4) => Some(parse_sigv4(
            keys,
            raw_sigv4,
            &url,
            leader_url.as_ref(),
            raw.username.is_some() || password.is_some(),
        )?),
    };
    keys.readable_file("tls_ca_file", raw.tls_ca_file.as_deref())?;
    Ok(Arc::new(OpensearchTarget {
        url,
        leader_url,
        username: raw.username,
        password,
        indices,
        heartbeat,
        tls_ca_file: raw.tls_ca_file,
        aws_sigv4,
    }))
}

fn parse_sigv4(
    keys: &TargetKeys<'_>,
    raw: RawSigV4,
    url: &Secret,
    leader_url: Option<&Secret>,
    basic_auth: bool,
) -> Result<OpensearchSigV4, ConfigError> {
    let region_key = |name: &str, value: Option<String>| -> Result<Option<String>, ConfigError> {
        match value {
            Some(region) if !is_aws_region(&region) => Err(keys.invalid(
                &format!("aws_sigv4.{name}"),
                format!("`{region}` is not an AWS region name like \"eu-central-1\""),
            )),
            other => Ok(other),
        }
    };
    let Some(region) = region_key("region", raw.region)? else {
        return Err(keys.invalid(
            "aws_sigv4.region",
            "is required: the follower domain's region, like \"eu-west-1\"",
        ));
    };
    let leader_region = region_key("leader_region", raw.leader_region)?;
    if leader_region.is_some() && leader_url.is_none() {
        return Err(keys.invalid(
            "aws_sigv4.leader_region",
            "is only used for the heartbeat's leader domain; remove it or add `leader_url` and `heartbeat`",
        ));
    }
    let leader_region = leader_region.unwrap_or_else(|| region.clone());
    let service = raw.service.unwrap_or_else(|| SIGV4_SERVICE.to_string());
    match service.as_str() {
        SIGV4_SERVICE => {}
        "aoss" => return Err(keys.invalid(
            "aws_sigv4.service",
            "OpenSearch Serverless (`aoss`) has no cross-cluster replication API (`_plugins/_replication`); watch a managed domain with `service = \"es\"`",
        )),
        other => return Err(keys.invalid(
            "aws_sigv4.service",
            format!("`{other}` is not a signing name for OpenSearch Service domains; use \"es\""),
        )),
    }
    if let Some(profile) = raw.profile.as_deref() {
        if profile.is_empty()
            || profile.len() > 128
            || !profile.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(keys.invalid(
                "aws_sigv4.profile",
                "must be a profile name of the shared AWS config file (printable, no spaces)",
            ));
        }
    }
    if let Some(role) = raw.role_arn.as_deref() {
        if parse_arn(role)
            .is_none_or(|arn| arn.service != "iam" || !arn.resource.starts_with("role/"))
        {
            return Err(keys.invalid(
                "aws_sigv4.role_arn",
                format!("`{role}` is not an IAM role ARN like \"arn:aws:iam::123456789012:role/rpo-exporter\""),
            ));
        }
    }
    // A request carries one Authorization header: the signature's.
    let url_credentials = |url: &Secret| {
        reqwest::Url::parse(url.expose())
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    };
    if basic_auth || url_credentials(url) || leader_url.is_some_and(url_credentials) {
        return Err(keys.invalid(
            "aws_sigv4",
            "signs every request with IAM credentials; remove `username`/`password` and any credentials in the URLs (a request carries one Authorization header)",
        ));
    }
    for (name, url, expected) in [
        ("url", Some(url), &region),
        ("leader_url", leader_url, &leader_region),
    ] {
        let Some(url) = url else { continue };
        if let Some((endpoint_region, endpoint_service)) = aws_endpoint(url.expose()) {
            if endpoint_service == "aoss" {
                return Err(keys.invalid(
                    name,
                    "is an OpenSearch Serverless endpoint (`aoss`), which has no cross-cluster replication API; use the follower domain's endpoint",
                ));
            }
            if endpoint_region != *expected {
                let key = if name == "url" {
                    "aws_sigv4.region"
                } else {
                    "aws_sigv4.leader_region"
                };
                return Err(keys.invalid(
                    key,
                    format!("is `{expected}` but `{name}` is a domain endpoint in `{endpoint_region}`; sign for the region the domain is in"),
                ));
            }
        }
    }
    Ok(OpensearchSigV4 {
        region,
        leader_region,
        service,
        profile: raw.profile,
        role_arn: raw.role_arn,
    })
}

/// The region and service of an AWS-hosted endpoint
/// (`search-<domain>-<id>.<region>.es.amazonaws.com`,
/// `<id>.<region>.aoss.amazonaws.com`), or `None` for any other host.
fn aws_endpoint(url: &str) -> Option<(String, String)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [.., region, service @ ("es" | "aoss"), "amazonaws", "com"] if is_aws_region(region) => {
            Some((region.to_string(), service.to_string()))
        }
        _ => None,
    }
}

impl KindSpec for OpensearchTarget {
    fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat.as_ref().map(|hb| hb.interval)
    }

    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(OpensearchProbe::new(target, self, context)?))
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
    "1 when every primary shard of the follower index is SYNCING.",
)
.with_labels(&["index"]);
pub static INDEX_STATUS: MetricDef = MetricDef::gauge(
    "rpo_opensearch_index_status",
    "The follower index's replication state over all its shards (syncing, bootstrapping, paused, failed, stopped, not_in_progress, other); always 1.",
).with_labels(&["index", "status"]);
pub static INDEX_SHARDS: MetricDef = MetricDef::gauge(
    "rpo_opensearch_index_shards",
    "Primary shards of the follower index by replication state (syncing, bootstrapping), from the verbose status.",
)
.with_labels(&["index", "state"]);
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
    "Share of the bytes copied of the follower index's shards still bootstrapping.",
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
    &INDEX_SHARDS,
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
    /// `STOPPED`: the replication's state is stopped (or unset).
    Stopped,
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
            "STOPPED" => ReplicationStatus::Stopped,
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
            ReplicationStatus::Stopped => "stopped",
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

/// How far the initial copy of one shard (or, summed, of the shards still
/// copying) has come: `RestoreDetails` in `ShardInfoResponse.kt`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CopyProgress {
    pub bytes_total: Option<f64>,
    pub bytes_recovered: Option<f64>,
    /// `bytes_percent` (0–100).
    pub bytes_percent: Option<f64>,
}

impl CopyProgress {
    fn parse(details: &Value) -> CopyProgress {
        let number = |key: &str| details.get(key).and_then(Value::as_f64);
        CopyProgress {
            bytes_total: number("bytes_total"),
            bytes_recovered: number("bytes_recovered"),
            bytes_percent: number("bytes_percent"),
        }
    }

    /// The share done, 0 to 1: bytes recovered over bytes total, or the
    /// percentage where the byte counts are missing.
    pub fn ratio(&self) -> Option<f64> {
        match (self.bytes_total, self.bytes_recovered) {
            (Some(total), Some(recovered)) if total > 0.0 => Some((recovered / total).min(1.0)),
            _ => self.bytes_percent.map(|p| (p / 100.0).clamp(0.0, 1.0)),
        }
    }

    /// The progress of several shards together: their bytes summed (the
    /// percentages averaged where a shard lacks byte counts).
    fn sum<'a>(shards: impl Iterator<Item = &'a CopyProgress>) -> Option<CopyProgress> {
        let shards: Vec<&CopyProgress> = shards.collect();
        if shards.is_empty() {
            return None;
        }
        let bytes = |pick: fn(&CopyProgress) -> Option<f64>| {
            shards.iter().map(|s| pick(s)).sum::<Option<f64>>()
        };
        let percents: Vec<f64> = shards.iter().filter_map(|s| s.bytes_percent).collect();
        Some(CopyProgress {
            bytes_total: bytes(|s| s.bytes_total),
            bytes_recovered: bytes(|s| s.bytes_recovered),
            bytes_percent: (percents.len() == shards.len())
                .then(|| percents.iter().sum::<f64>() / percents.len() as f64),
        })
    }
}

/// One primary shard of a follower index in the verbose status. The plugin
/// renders a shard's state only through the details it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardState {
    /// `syncing_task_details`: replaying the leader's changes.
    Syncing(Checkpoints),
    /// `bootstrap_task_details`: still copying the leader's files.
    Bootstrapping(CopyProgress),
}

/// One index's replication status, as the follower reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStatus {
    /// The status as reported: for a running replication, the first
    /// shard's state only. [`IndexStatus::state`] judges every shard.
    pub status: ReplicationStatus,
    /// The status as written, for messages.
    pub status_text: String,
    pub reason: Option<String>,
    pub leader_index: Option<String>,
    /// `syncing_details`: checkpoints summed over the shards that replay.
    pub checkpoints: Option<Checkpoints>,
    /// `bootstrap_details`: the copy summed over the shards still copying;
    /// present whenever any shard is.
    pub bootstrap: Option<CopyProgress>,
    /// `shard_replication_details` (verbose): every primary shard, by id
    /// (`[index][0]`).
    pub shards: BTreeMap<String, ShardState>,
    /// Shards seen in earlier answers since the index last started syncing
    /// but missing from this one (a shard that did not answer). Filled by
    /// [`CheckpointHistory`], not by parsing.
    pub missing_shards: Vec<String>,
}

impl IndexStatus {
    /// The index's state over all its shards: `Syncing` only when the
    /// status says so, no shard is still copying and no shard seen before
    /// is missing; `Bootstrapping` while any shard copies.
    pub fn state(&self) -> ReplicationStatus {
        match &self.status {
            ReplicationStatus::Syncing if self.shards_copying() > 0 || self.bootstrap.is_some() => {
                ReplicationStatus::Bootstrapping
            }
            ReplicationStatus::Syncing if !self.missing_shards.is_empty() => {
                ReplicationStatus::Other("SYNCING without every shard".to_string())
            }
            other => other.clone(),
        }
    }

    /// Shards still copying, per the verbose details.
    pub fn shards_copying(&self) -> usize {
        self.shards
            .values()
            .filter(|s| matches!(s, ShardState::Bootstrapping(_)))
            .count()
    }

    /// Share of the bytes copied of the shards still copying: from their
    /// own details, else from `bootstrap_details`.
    pub fn copy_ratio(&self) -> Option<f64> {
        let from_shards = CopyProgress::sum(self.shards.values().filter_map(|s| match s {
            ShardState::Bootstrapping(p) => Some(p),
            ShardState::Syncing(_) => None,
        }));
        from_shards.or(self.bootstrap).and_then(|p| p.ratio())
    }

    /// Why this index is not known to be synced, for the verdict; `None`
    /// when every shard syncs.
    pub fn problem(&self, index: &str) -> Option<String> {
        match self.state() {
            ReplicationStatus::Syncing => None,
            ReplicationStatus::Bootstrapping => {
                let mut why = format!("{index} is bootstrapping (initial copy");
                if let Some(ratio) = self.copy_ratio() {
                    why.push_str(&format!(" {:.0}% done", ratio * 100.0));
                }
                let copying = self.shards_copying();
                if copying > 0 && copying < self.shards.len() {
                    why.push_str(&format!(
                        ", {copying} of {} shards still copying",
                        self.shards.len()
                    ));
                }
                why.push(')');
                if self.status == ReplicationStatus::Syncing {
                    why.push_str(
                        "; not caught up although the plugin reports SYNCING (it reports the first shard's state)",
                    );
                }
                Some(why)
            }
            ReplicationStatus::NotInProgress => Some(format!(
                "{index} is not being replicated (REPLICATION NOT IN PROGRESS: stopped, never started, or not a follower index)"
            )),
            ReplicationStatus::Other(_) if !self.missing_shards.is_empty() => Some(format!(
                "{index}: the status answer lacks shard(s) {} reported before (a shard that does not answer proves nothing)",
                self.missing_shards.join(", ")
            )),
            _ => Some(format!(
                "{index} is {}{}",
                self.status_text,
                self.reason
                    .as_deref()
                    .map(|r| format!(": {}", http_client::excerpt(r, 160)))
                    .unwrap_or_default()
            )),
        }
    }
}

fn checkpoints(details: &Value) -> Option<Checkpoints> {
    Some(Checkpoints {
        leader: details.get("leader_checkpoint")?.as_i64()?,
        follower: details.get("follower_checkpoint")?.as_i64()?,
    })
}

/// Parses a `_plugins/_replication/<index>/_status` body (with or without
/// `verbose=true`), in the shape `ReplicationStatusResponse.toXContent`
/// writes it.
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
    let bootstrap = match value.get("bootstrap_details") {
        None | Some(Value::Null) => None,
        Some(details) => Some(CopyProgress::parse(details)),
    };
    let mut shards = BTreeMap::new();
    match value.get("shard_replication_details") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for shard in list {
                let id = match shard.get("shard_id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => return Err("a shard entry has no `shard_id`".to_string()),
                };
                let state = if let Some(details) = shard.get("syncing_task_details") {
                    ShardState::Syncing(
                        checkpoints(details)
                            .ok_or("`syncing_task_details` lacks integer checkpoints")?,
                    )
                } else if let Some(details) = shard.get("bootstrap_task_details") {
                    ShardState::Bootstrapping(CopyProgress::parse(details))
                } else {
                    // Every shard answer carries one of the two; one that
                    // carries neither cannot be judged, so the body is not
                    // what the plugin writes.
                    return Err(format!("shard {id} has neither `syncing_task_details` nor `bootstrap_task_details`"));
                };
                shards.insert(id, state);
            }
        }
        Some(_) => return Err("`shard_replication_details` is not a list".to_string()),
    }
    Ok(IndexStatus {
        status: ReplicationStatus::parse(&status_text),
        status_text,
        reason: text("reason"),
        leader_index: text("leader_index"),
        checkpoints: checkpoints_total,
        bootstrap,
        shards,
        missing_shards: Vec::new(),
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
/// a follower that is behind; and the shards seen, so a shard missing from
/// a later answer is noticed (the plugin drops a shard that fails to answer
/// without saying so).
#[derive(Debug, Default)]
pub struct CheckpointHistory {
    leader: SourceSamples<BTreeMap<String, i64>>,
    shards_seen: BTreeSet<String>,
}

impl CheckpointHistory {
    /// What one status answer, asked at `asked_at`, proves for its index.
    /// Records the sample it needs, and fills `status.missing_shards`.
    pub fn recovery_point(
        &mut self,
        asked_at: Stamp,
        status: &mut IndexStatus,
    ) -> Option<SystemTime> {
        if status.status != ReplicationStatus::Syncing {
            // Restarted replication copies again (maybe with other
            // shards): shards seen before mean nothing any more.
            self.shards_seen.clear();
            return None;
        }
        status.missing_shards = self
            .shards_seen
            .iter()
            .filter(|shard| !status.shards.contains_key(*shard))
            .cloned()
            .collect();
        self.shards_seen.extend(status.shards.keys().cloned());
        if status.state() != ReplicationStatus::Syncing {
            return None;
        }
        if !status.shards.is_empty() {
            let leader: BTreeMap<String, i64> = status
                .shards
                .iter()
                .filter_map(|(shard, state)| match state {
                    ShardState::Syncing(c) => Some((shard.clone(), c.leader)),
                    ShardState::Bootstrapping(_) => None,
                })
                .collect();
            // A leader checkpoint going back (a new leader index) forgets
            // older samples: they date nothing any more.
            self.leader.record(asked_at, leader);
            return self.leader.dated(asked_at, |sample| {
                sample.iter().all(|(shard, leader)| {
                    matches!(status.shards.get(shard), Some(ShardState::Syncing(c)) if c.follower >= *leader)
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

/// Pure: combines the indices' recovery points and states.
pub fn combine(
    indices: &[(String, IndexStatus, Option<SystemTime>)],
    stats: Option<&FollowerStats>,
) -> FollowerEvidence {
    let mut problems: Vec<String> = indices
        .iter()
        .filter_map(|(index, status, _)| status.problem(index))
        .collect();
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
        .filter(|(_, s, _)| s.state() == ReplicationStatus::Syncing)
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

/// One cluster: where it is and how requests to it are authenticated.
/// Credentials come from the URL (reqwest takes them out of it before
/// anything can print it), from `username` + password, or from the AWS
/// credential chain through a SigV4 signature.
#[derive(Clone)]
struct Cluster {
    client: reqwest::Client,
    /// The base URL, ending in `/` so request paths join below it.
    base: reqwest::Url,
    basic_auth: Option<(String, Secret)>,
    signing: Option<Signing>,
    /// Scheme, host and port, for messages.
    shown: String,
}

/// SigV4 for one cluster: the signer shared by the target's clusters,
/// made on first use (the SDK config loads asynchronously), and this
/// cluster's region.
#[derive(Clone)]
struct Signing {
    aws: Arc<AwsClients>,
    service: String,
    region: String,
    signer: Arc<tokio::sync::OnceCell<AwsSigner>>,
}

impl Signing {
    async fn signer(&self, what: &str) -> Result<AwsSigner, ProbeError> {
        let signer = self
            .signer
            .get_or_try_init(|| async {
                match self.aws.sdk_config().await.credentials_provider() {
                    Some(provider) => Ok(AwsSigner::new(provider, &self.region, &self.service)),
                    None => Err(ProbeError::new(
                        FailureReason::Auth,
                        format!("{what}: no AWS credential chain to sign the request with"),
                    )),
                }
            })
            .await?;
        Ok(if signer.region() == self.region {
            signer.clone()
        } else {
            signer.in_region(&self.region)
        })
    }
}

impl Cluster {
    fn new(
        target: &Target,
        url: &Secret,
        basic_auth: Option<(String, Secret)>,
        signing: Option<Signing>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Cluster, ProbeError> {
        let mut base = reqwest::Url::parse(url.expose()).map_err(|e| {
            ProbeError::new(
                FailureReason::Config,
                format!("target {}: bad URL: {e}", target.name),
            )
        })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Cluster {
            client: http_client::build_client(&target.name, target.timeout, ca_file)?,
            base,
            basic_auth,
            signing,
            shown: http_client::origin(url.expose()),
        })
    }

    /// One request; the status and body of any answer, or a failure with a
    /// bounded reason when none came.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<(u16, String), ProbeError> {
        let url = self.base.join(path).map_err(|e| {
            ProbeError::new(
                FailureReason::Config,
                format!("{what}: cannot build the request URL: {e}"),
            )
        })?;
        let mut builder = self.client.request(method, url);
        if !query.is_empty() {
            builder = builder.query(query);
        }
        if let Some((user, password)) = &self.basic_auth {
            builder = builder.basic_auth(user, Some(password.expose()));
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let mut request = builder
            .build()
            .map_err(|e| http_client::classify(&e, what))?;
        if let Some(signing) = &self.signing {
            signing.signer(what).await?.sign(&mut request, what).await?;
        }
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| http_client::classify(&e, what))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| http_client::classify(&e, what))?;
        Ok((status, text))
    }
}

/// Whether a status answer says the follower could not ask the leader.
/// For a running replication the plugin's status action asks the leader
/// cluster's shards through the remote-cluster client, and turns any
/// exception into HTTP 500 `replication_exception: failed to fetch
/// replication status` (`TransportReplicationStatusAction.kt`); the
/// follower's own shards are asked with a broadcast that collects shard
/// failures instead of throwing. So this answer, from a follower that
/// answers, is read as the leader not answering it.
pub fn leader_unreachable(status: u16, body: &str) -> bool {
    status >= 500 && body.contains("failed to fetch replication status")
}

/// Turns a non-2xx answer into a failure a person can act on. A 403 names
/// the permission the request needs (the one the Security plugin reports
/// missing, if it says) and where to grant it.
fn http_failure(status: u16, body: &str, what: &str, grant: Grant, signed: bool) -> ProbeError {
    let json = serde_json::from_str::<Value>(body).ok();
    // OpenSearch errors look like {"error":{"type":..,"reason":..},"status":404};
    // AWS's own refusals like {"message":".."} or {"Message":".."}.
    let detail = json
        .as_ref()
        .and_then(|v| {
            if let Some(error) = v.get("error") {
                return match error {
                    Value::String(s) => Some(s.clone()),
                    _ => Some(format!(
                        "{}: {}",
                        error.get("type")?.as_str()?,
                        error.get("reason").and_then(Value::as_str).unwrap_or("")
                    )),
                };
            }
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string());
    // The Security plugin's reason goes on with the user and its roles:
    // noise on a bridge call. A refusal that quotes the Authorization header
    // back is cut before it, so no credential reaches a message.
    let detail = detail.split(" and User [").next().unwrap_or(&detail);
    let detail = match detail.to_ascii_lowercase().find("authorization") {
        Some(at) => format!("{}…", &detail[..at]),
        None => detail.to_string(),
    };
    let detail = http_client::excerpt(&detail, 240);
    match status {
        401 => ProbeError::new(
            FailureReason::Auth,
            format!("{what}: the cluster refused the credentials (HTTP 401); check username and password"),
        ),
        403 => {
            // The Security plugin names the action it refused; trust it over
            // what this request is expected to need.
            let action = detail
                .split_once("no permissions for [")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(action, _)| action.to_string())
                .unwrap_or_else(|| grant.action.to_string());
            let mut message = format!(
                "{what}: permission denied (HTTP 403: {detail}); grant `{action}` {}",
                grant.scope
            );
            if signed {
                message.push_str(&format!(
                    " (mapped to the IAM role as a backend role under fine-grained access control), and allow `{}` to the IAM identity on the domain; a refused signature means the wrong region, service or credentials in `aws_sigv4`",
                    grant.iam_action
                ));
            }
            ProbeError::new(FailureReason::Auth, message)
        }
        _ => ProbeError::new(
            FailureReason::Query,
            format!("{what}: HTTP {status} ({detail})"),
        ),
    }
}

pub struct OpensearchProbe {
    follower: Cluster,
    /// Configured indices; empty means discover them.
    indices: Vec<String>,
    /// Indices discovered so far: one that stops syncing drops out of
    /// follower_stats but must still be reported.
    discovered: BTreeSet<String>,
    history: BTreeMap<String, CheckpointHistory>,
    heartbeat: Option<OpensearchHeartbeat>,
    leader: Option<Cluster>,
    instance: String,
    /// This target's heartbeat writes, which date the heartbeat seen.
    heartbeat_log: HeartbeatLog,
}

impl OpensearchProbe {
    pub fn new(
        target: &Target,
        spec: &OpensearchTarget,
        context: &ProbeContext,
    ) -> Result<OpensearchProbe, ProbeError> {
        let basic_auth = spec.username.clone().zip(spec.password.clone());
        let signing = |region: &str| {
            spec.aws_sigv4.as_ref().map(|sigv4| Signing {
                aws: clients_for(
                    &AwsAccess {
                        region: sigv4.region.clone(),
                        profile: sigv4.profile.clone(),
                        role_arn: sigv4.role_arn.clone(),
                        endpoint_url: None,
                    },
                    &context.aws_calls,
                ),
                service: sigv4.service.clone(),
                region: region.to_string(),
                signer: Arc::default(),
            })
        };
        let follower_signing = spec
            .aws_sigv4
            .as_ref()
            .and_then(|sigv4| signing(&sigv4.region));
        let follower = Cluster::new(
            target,
            &spec.url,
            basic_auth.clone(),
            follower_signing.clone(),
            spec.tls_ca_file.as_deref(),
        )?;
        let leader = match &spec.leader_url {
            Some(url) => {
                // The leader signs with the follower's credentials (one
                // cache), for the leader domain's region.
                let leader_signing = match (&follower_signing, &spec.aws_sigv4) {
                    (Some(follower), Some(sigv4)) => Some(Signing {
                        region: sigv4.leader_region.clone(),
                        ..follower.clone()
                    }),
                    _ => None,
                };
                Some(Cluster::new(
                    target,
                    url,
                    basic_auth,
                    leader_signing,
                    spec.tls_ca_file.as_deref(),
                )?)
            }
            None => None,
        };
        Ok(OpensearchProbe {
            follower,
            indices: spec.indices.clone(),
            discovered: BTreeSet::new(),
            history: BTreeMap::new(),
            heartbeat: spec.heartbeat.clone(),
            leader,
            instance: context.instance.clone(),
            heartbeat_log: context.heartbeat_log(&target.name),
        })
    }

    async fn follower_stats(&self) -> Result<FollowerStats, ProbeError> {
        let what = format!("follower cluster {}, follower_stats", self.follower.shown);
        let (status, body) = self
            .follower
            .send(
                Method::GET,
                "_plugins/_replication/follower_stats",
                &[],
                None,
                &what,
            )
            .await?;
        if status != 200 {
            return Err(http_failure(
                status,
                &body,
                &what,
                FOLLOWER_STATS_GRANT,
                self.follower.signing.is_some(),
            ));
        }
        parse_follower_stats(&body).map_err(|e| {
            ProbeError::new(FailureReason::Parse, format!("{what}: answered with {e}"))
        })
    }

    async fn index_status(&self, index: &str) -> Result<IndexStatus, ProbeError> {
        let what = format!("follower cluster {}, index {index}", self.follower.shown);
        let (status, body) = self
            .follower
            .send(
                Method::GET,
                &format!("_plugins/_replication/{index}/_status"),
                // Every shard's state and checkpoints (RestReplicationStatusHandler:
                // `verbose`, default false).
                &[("verbose", "true")],
                None,
                &what,
            )
            .await?;
        if status != 200 {
            let failure = http_failure(
                status,
                &body,
                &what,
                STATUS_GRANT,
                self.follower.signing.is_some(),
            );
            return Err(if leader_unreachable(status, &body) {
                // The follower answered; the leader did not answer it.
                ProbeError {
                    message: format!(
                        "{}; the follower cannot read the leader cluster's checkpoints (the leader unreachable from the follower)",
                        failure.message
                    ),
                    ..failure
                }
                .on(Side::Source)
            } else {
                failure
            });
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
        hb: &OpensearchHeartbeat,
    ) -> Result<Option<SystemTime>, ProbeError> {
        let what = format!(
            "follower cluster {}, heartbeat index {}",
            self.follower.shown, hb.follower_index
        );
        let (status, body) = self
            .follower
            .send(
                Method::GET,
                &format!("{}/_doc/{}", hb.follower_index, self.instance),
                &[],
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
                HEARTBEAT_READ_GRANT,
                self.follower.signing.is_some(),
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
        // An index whose status the follower could not fetch from the
        // leader: the follower answered, the source did not.
        let mut leader_lost = None;
        for (index, answer) in names.iter().zip(answers) {
            match answer {
                Ok(status) => statuses.push((index.clone(), status)),
                Err(e) if e.side == Some(Side::Source) => {
                    leader_lost.get_or_insert(e);
                }
                Err(e) => return Err(e.on(Side::Replica)),
            }
        }

        let mut measurement = Measurement::new(asked_at.wall);
        measurement.replica_reachable = Some(true);
        // A running replication's status carries the leader's checkpoints,
        // read from the leader while answering: the source answered (through
        // the follower). A stopped or paused one's does not ask the leader.
        measurement.source_reachable = if leader_lost.is_some() {
            Some(false)
        } else if statuses.iter().any(|(_, status)| {
            matches!(
                status.state(),
                ReplicationStatus::Syncing | ReplicationStatus::Bootstrapping
            )
        }) {
            Some(true)
        } else {
            None
        };
        let mut heartbeat_seen = None;
        if let Some(hb) = self.heartbeat.clone() {
            match self.heartbeat_seen(&hb).await {
                Ok(seen) => heartbeat_seen = seen,
                Err(e) => measurement.failures.push(e.on(Side::Replica)),
            }
        }

        let mut dated = Vec::new();
        for (index, mut status) in statuses {
            let mut rp = self
                .history
                .entry(index.clone())
                .or_default()
                .recovery_point(asked_at, &mut status);
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
        measurement.details = details(&dated, stats.as_ref(), heartbeat_seen);
        if let Some(lost) = leader_lost {
            // Nothing new is proven: the follower keeps what it had, and
            // the store keeps the recovery point proven before; the
            // unplanned verdict's loss window is the last contact with the
            // leader minus it.
            measurement.link = LinkState::Unknown(format!(
                "the follower cannot reach the leader cluster ({})",
                lost.message
            ));
            measurement.failures.push(lost);
            return Ok(measurement);
        }
        let evidence = combine(&dated, stats.as_ref());
        measurement.recovery_point = evidence.recovery_point;
        measurement.link = evidence.link;
        measurement.backlog_operations = evidence.backlog_operations;
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
        let state = status.state();
        let per_index = |family: &'static MetricDef, value: f64| {
            Detail::new(family, value).with_label("index", index.clone())
        };
        let syncing = state == ReplicationStatus::Syncing;
        details.push(per_index(&INDEX_SYNCING, if syncing { 1.0 } else { 0.0 }));
        details.push(per_index(&INDEX_STATUS, 1.0).with_label("status", state.label()));
        if !status.shards.is_empty() {
            let copying = status.shards_copying();
            for (label, count) in [
                ("syncing", status.shards.len() - copying),
                ("bootstrapping", copying),
            ] {
                details.push(per_index(&INDEX_SHARDS, count as f64).with_label("state", label));
            }
        }
        // The sums cover the replaying shards only: shown once every shard replays.
        if let (true, Some(c)) = (syncing, status.checkpoints) {
            details.push(per_index(&LEADER_CHECKPOINT, c.leader as f64));
            details.push(per_index(&FOLLOWER_CHECKPOINT, c.follower as f64));
            details.push(per_index(
                &INDEX_BACKLOG_OPERATIONS,
                (c.leader - c.follower).max(0) as f64,
            ));
        }
        if state == ReplicationStatus::Bootstrapping {
            if let Some(ratio) = status.copy_ratio() {
                details.push(per_index(&BOOTSTRAP_PROGRESS_RATIO, ratio));
            }
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
            index: hb.leader_index,
            interval: hb.interval,
            instance: self.instance.clone(),
            log: self.heartbeat_log.clone(),
        }))
    }
}

/// Writes this exporter's heartbeat document into the leader index.
struct OpensearchHeartbeatWriter {
    leader: Cluster,
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
                self.leader.shown, self.index
            );
            let doc = serde_json::json!({ "instance": self.instance, "ts": unix_seconds(at) });
            let (status, body) = self
                .leader
                .send(
                    Method::PUT,
                    &format!("{}/_doc/{}", self.index, self.instance),
                    &[],
                    Some(&doc),
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
                    HEARTBEAT_WRITE_GRANT,
                    self.leader.signing.is_some(),
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
    // The bodies below are written from the replication plugin's source
    // (opensearch-project/cross-cluster-replication, action/status/), not
    // captured from a cluster: none runs here.
    //
    // FAILED has the shape of PAUSED (TransportReplicationStatusAction.kt:
    // any state but RUNNING answers status, reason, leader_alias,
    // leader_index, follower_index, and no shard details even when
    // verbose); the reason text is the plugin's own for a missing leader
    // permission.
    const FAILED: &str = r#"{"status":"FAILED","reason":"no permissions for [indices:data/read/plugins/replication/file_chunk] and associated roles","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01"}"#;
    // `?verbose=true` adds shard_replication_details: one entry per primary
    // shard, `shard_id` (ShardId rendered as "[index][n]") and either
    // syncing_task_details (ReplayDetails) or bootstrap_task_details
    // (RestoreDetails) (ShardInfoResponse.kt). syncing_details sums the
    // replaying shards (populateAggregatedResponse). Two shards, one behind.
    const SYNCING_VERBOSE_BEHIND: &str = r#"{"status":"SYNCING","reason":"User initiated","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01","syncing_details":{"leader_checkpoint":30,"follower_checkpoint":25,"seq_no":27},"shard_replication_details":[{"shard_id":"[follower-01][0]","syncing_task_details":{"leader_checkpoint":15,"follower_checkpoint":15,"seq_no":16}},{"shard_id":"[follower-01][1]","syncing_task_details":{"leader_checkpoint":15,"follower_checkpoint":10,"seq_no":11}}]}"#;
    // A running replication whose shard 0 has finished its copy and syncs
    // while shard 1 still copies: the status is the first shard's
    // (`status = followerResponse.shardInfoResponse.get(0).status`), the
    // syncing details sum shard 0 only, and bootstrap_details the copying
    // shard (bytes summed, percentages averaged).
    const SYNCING_SHARD_0_BOOTSTRAPPING_SHARD_1: &str = r#"{"status":"SYNCING","reason":"User initiated","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01","syncing_details":{"leader_checkpoint":15,"follower_checkpoint":15,"seq_no":16},"bootstrap_details":{"bytes_total":2000,"bytes_recovered":800,"bytes_percent":40.0,"files_total":10,"files_recovered":4,"files_percent":40.0,"start_time":1700000000000,"running_time":5200},"shard_replication_details":[{"shard_id":"[follower-01][0]","syncing_task_details":{"leader_checkpoint":15,"follower_checkpoint":15,"seq_no":16}},{"shard_id":"[follower-01][1]","bootstrap_task_details":{"bytes_total":2000,"bytes_recovered":800,"bytes_percent":40.0,"files_total":10,"files_recovered":4,"files_percent":40.0,"start_time":1700000000000,"running_time":5200}}]}"#;
    // The same index asked without verbose: only the aggregates tell.
    const SYNCING_SHARD_0_BOOTSTRAPPING_SHARD_1_TERSE: &str = r#"{"status":"SYNCING","reason":"User initiated","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01","syncing_details":{"leader_checkpoint":15,"follower_checkpoint":15,"seq_no":16},"bootstrap_details":{"bytes_total":2000,"bytes_recovered":800,"bytes_percent":40.0,"files_total":10,"files_recovered":4,"files_percent":40.0,"start_time":1700000000000,"running_time":5200}}"#;
    const BOOTSTRAPPING: &str = r#"{"status":"BOOTSTRAPPING","reason":"User initiated","leader_alias":"leader-cluster","leader_index":"leader-01","follower_index":"follower-01","bootstrap_details":{"bytes_total":1000,"bytes_recovered":420,"bytes_percent":42.0,"files_total":10,"files_recovered":4,"files_percent":40.0,"start_time":1700000000000,"running_time":1200},"shard_replication_details":[{"shard_id":"[follower-01][0]","bootstrap_task_details":{"bytes_total":1000,"bytes_recovered":420,"bytes_percent":42.0,"files_total":10,"files_recovered":4,"files_percent":40.0,"start_time":1700000000000,"running_time":1200}}]}"#;
    // From the documentation's "Get follower cluster stats" example.
    const FOLLOWER_STATS: &str = r#"{"num_syncing_indices":2,"num_bootstrapping_indices":0,"num_paused_indices":0,"num_failed_indices":0,"num_shard_tasks":2,"num_index_tasks":2,"operations_written":3,"operations_read":3,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":1,"leader_checkpoint":1,"total_write_time_millis":2290,"index_stats":{"follower-index-1":{"operations_written":2,"operations_read":2,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":1,"leader_checkpoint":1,"total_write_time_millis":1355},"follower-index-2":{"operations_written":1,"operations_read":1,"failed_read_requests":0,"throttled_read_requests":0,"failed_write_requests":0,"throttled_write_requests":0,"follower_checkpoint":0,"leader_checkpoint":0,"total_write_time_millis":935}}}"#;

    fn parsed(body: &str) -> IndexStatus {
        parse_status(body).unwrap()
    }

    #[test]
    fn parses_the_documented_bodies() {
        let s = parsed(SYNCING);
        assert_eq!(s.status, ReplicationStatus::Syncing);
        assert_eq!(s.state(), ReplicationStatus::Syncing);
        assert_eq!(
            s.checkpoints,
            Some(Checkpoints {
                leader: 19,
                follower: 19
            })
        );
        assert_eq!(s.leader_index.as_deref(), Some("leader-01"));
        let p = parsed(PAUSED);
        assert_eq!(p.status, ReplicationStatus::Paused);
        assert_eq!(p.checkpoints, None);
        assert_eq!(
            parsed(NOT_IN_PROGRESS).status,
            ReplicationStatus::NotInProgress
        );
        assert_eq!(parsed(FAILED).status, ReplicationStatus::Failed);
        assert_eq!(
            ReplicationStatus::parse("STOPPED"),
            ReplicationStatus::Stopped
        );
        let b = parsed(BOOTSTRAPPING);
        assert_eq!(b.state(), ReplicationStatus::Bootstrapping);
        assert_eq!(b.copy_ratio(), Some(0.42));
        assert_eq!(
            ReplicationStatus::parse("BOOTSTRAPING"),
            ReplicationStatus::Bootstrapping
        );
        let v = parsed(SYNCING_VERBOSE_BEHIND);
        assert_eq!(v.shards.len(), 2);
        assert_eq!(
            v.shards["[follower-01][1]"],
            ShardState::Syncing(Checkpoints {
                leader: 15,
                follower: 10
            })
        );
    }

    #[test]
    fn the_status_failing_to_reach_the_leader_is_the_source_side() {
        // As OpenSearch renders the plugin's ReplicationException.
        let body = r#"{"error":{"root_cause":[{"type":"replication_exception","reason":"failed to fetch replication status"}],"type":"replication_exception","reason":"failed to fetch replication status"},"status":500}"#;
        assert!(leader_unreachable(500, body));
        assert!(!leader_unreachable(200, body));
        assert!(!leader_unreachable(
            500,
            r#"{"error":{"type":"null_pointer_exception","reason":"x"},"status":500}"#
        ));
        let failure = http_failure(
            500,
            body,
            "follower cluster f, index orders",
            STATUS_GRANT,
            false,
        );
        assert_eq!(failure.reason, FailureReason::Query);
        assert_eq!(
            failure.message,
            "follower cluster f, index orders: HTTP 500 (replication_exception: failed to fetch replication status)"
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
        // A shard that carries neither details cannot be judged.
        assert!(parse_status(
            r#"{"status":"SYNCING","shard_replication_details":[{"shard_id":"[a][0]"}]}"#
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
        let mut s = parsed(SYNCING);
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(10.0)), &mut s),
            Some(at(10.0))
        );
        // Nothing written for an hour: still in step, still now.
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(3610.0)), &mut s),
            Some(at(3610.0))
        );
    }

    /// The false GO of the first-shard status: shard 0 in step, shard 1
    /// still copying. Not synced, not caught up, and named as such.
    #[test]
    fn a_shard_still_bootstrapping_is_not_caught_up_though_the_status_reads_syncing() {
        let mut partial = parsed(SYNCING_SHARD_0_BOOTSTRAPPING_SHARD_1);
        assert_eq!(partial.status, ReplicationStatus::Syncing, "as reported");
        assert_eq!(partial.state(), ReplicationStatus::Bootstrapping);
        assert_eq!(partial.shards_copying(), 1);
        assert_eq!(partial.copy_ratio(), Some(0.4));
        let mut h = CheckpointHistory::default();
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(10.0)), &mut partial),
            None
        );
        let e = combine(&[("follower-01".into(), partial.clone(), None)], None);
        assert_eq!(e.recovery_point, None);
        assert_eq!(e.backlog_operations, None, "the sums cover shard 0 only");
        assert_eq!(
            e.link,
            LinkState::Unhealthy(
                "follower-01 is bootstrapping (initial copy 40% done, 1 of 2 shards still copying); not caught up although the plugin reports SYNCING (it reports the first shard's state)".into()
            )
        );
        let d = details(&[("follower-01".into(), partial, None)], None, None);
        let value = |name: &str, label: Option<(&str, &str)>| {
            d.iter()
                .find(|d| {
                    d.family.name == name
                        && label.is_none_or(|(k, v)| d.labels.contains(&(k, v.to_string())))
                })
                .map(|d| d.value)
        };
        assert_eq!(value("rpo_opensearch_index_syncing", None), Some(0.0));
        assert_eq!(
            value(
                "rpo_opensearch_index_status",
                Some(("status", "bootstrapping"))
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                "rpo_opensearch_index_shards",
                Some(("state", "bootstrapping"))
            ),
            Some(1.0)
        );
        assert_eq!(
            value("rpo_opensearch_index_shards", Some(("state", "syncing"))),
            Some(1.0)
        );
        assert_eq!(
            value("rpo_opensearch_bootstrap_progress_ratio", None),
            Some(0.4)
        );
        assert_eq!(value("rpo_opensearch_leader_checkpoint", None), None);

        // Without verbose, bootstrap_details beside SYNCING tells the same.
        let mut terse = parsed(SYNCING_SHARD_0_BOOTSTRAPPING_SHARD_1_TERSE);
        assert_eq!(terse.state(), ReplicationStatus::Bootstrapping);
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(11.0)), &mut terse),
            None
        );

        // Shard 1 finishes its copy and is in step: caught up now.
        let mut done = parsed(SYNCING_VERBOSE_BEHIND);
        done.shards.insert(
            "[follower-01][1]".into(),
            ShardState::Syncing(Checkpoints {
                leader: 15,
                follower: 15,
            }),
        );
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(12.0)), &mut done),
            Some(at(12.0))
        );
    }

    #[test]
    fn a_shard_missing_from_a_later_answer_proves_nothing() {
        let mut h = CheckpointHistory::default();
        let mut both = parsed(SYNCING_VERBOSE_BEHIND);
        for shard in both.shards.values_mut() {
            *shard = ShardState::Syncing(Checkpoints {
                leader: 15,
                follower: 15,
            });
        }
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(10.0)), &mut both),
            Some(at(10.0))
        );
        // Shard 1 does not answer (its node is gone): the plugin drops it
        // silently, and shard 0 alone is in step.
        let mut one = both.clone();
        one.shards.remove("[follower-01][1]");
        assert_eq!(h.recovery_point(Stamp::unstepped(at(11.0)), &mut one), None);
        assert_eq!(one.missing_shards, ["[follower-01][1]"]);
        let e = combine(&[("follower-01".into(), one, None)], None);
        assert!(
            matches!(&e.link, LinkState::Unhealthy(why) if why.contains("follower-01: the status answer lacks shard(s) [follower-01][1] reported before")),
            "{:?}",
            e.link
        );
        // It answers again: back in step.
        let mut both_again = both.clone();
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(12.0)), &mut both_again),
            Some(at(12.0))
        );
        // A replication restarted (bootstrapping again) forgets old shards.
        let mut boot = parsed(BOOTSTRAPPING);
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(13.0)), &mut boot),
            None
        );
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(14.0)), &mut one_shard_in_step()),
            Some(at(14.0))
        );
    }

    fn one_shard_in_step() -> IndexStatus {
        let mut s = parsed(SYNCING_VERBOSE_BEHIND);
        s.shards.remove("[follower-01][1]");
        s.shards.insert(
            "[follower-01][0]".into(),
            ShardState::Syncing(Checkpoints {
                leader: 15,
                follower: 15,
            }),
        );
        s
    }

    #[test]
    fn a_follower_behind_is_dated_by_earlier_samples_per_shard() {
        let mut h = CheckpointHistory::default();
        let shard = |l0: i64, f0: i64, l1: i64, f1: i64| {
            let mut s = parsed(SYNCING_VERBOSE_BEHIND);
            s.shards.insert(
                "[follower-01][0]".into(),
                ShardState::Syncing(Checkpoints {
                    leader: l0,
                    follower: f0,
                }),
            );
            s.shards.insert(
                "[follower-01][1]".into(),
                ShardState::Syncing(Checkpoints {
                    leader: l1,
                    follower: f1,
                }),
            );
            s.checkpoints = Some(Checkpoints {
                leader: l0 + l1,
                follower: f0 + f1,
            });
            s
        };
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(10.0)), &mut shard(10, 10, 10, 10)),
            Some(at(10.0))
        );
        // Writes go on; shard 1 falls behind.
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(11.0)), &mut shard(20, 20, 20, 12)),
            Some(at(10.0))
        );
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(12.0)), &mut shard(30, 30, 30, 20)),
            Some(at(11.0))
        );
        // The sums would say 65 >= 60 (the sample at 12 s) while shard 1
        // still lacks writes from before it: per shard, it is not reached.
        assert_eq!(
            h.recovery_point(Stamp::unstepped(at(13.0)), &mut shard(40, 40, 40, 25)),
            Some(at(11.0))
        );
    }

    #[test]
    fn sums_alone_prove_only_being_in_step() {
        let mut h = CheckpointHistory::default();
        let mut s = parsed(SYNCING);
        s.checkpoints = Some(Checkpoints {
            leader: 30,
            follower: 25,
        });
        assert_eq!(h.recovery_point(Stamp::unstepped(at(10.0)), &mut s), None);
    }

    #[test]
    fn not_syncing_proves_nothing() {
        let mut h = CheckpointHistory::default();
        for body in [PAUSED, FAILED, NOT_IN_PROGRESS, BOOTSTRAPPING] {
            assert_eq!(
                h.recovery_point(Stamp::unstepped(at(10.0)), &mut parsed(body)),
                None,
                "{body}"
            );
        }
    }

    #[test]
    fn combine_takes_the_oldest_index_and_names_every_problem() {
        let syncing = parsed(SYNCING);
        let paused = parsed(PAUSED);
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
        let e = combine(&[("c".into(), parsed(BOOTSTRAPPING), None)], None);
        assert_eq!(
            e.link,
            LinkState::Unhealthy("c is bootstrapping (initial copy 42% done)".into())
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
            &[("a".into(), parsed(SYNCING), Some(at(1.0)))],
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

    /// The Security plugin's refusal (PrivilegesEvaluator: "no permissions
    /// for [<action>] and User [...]") becomes a reason that names the
    /// action and where to grant it, never a permission that does not exist.
    #[test]
    fn a_403_names_the_missing_action_and_where_to_grant_it() {
        let body = r#"{"error":{"root_cause":[{"type":"security_exception","reason":"no permissions for [indices:admin/plugins/replication/index/status_check] and User [name=rpo-monitor, backend_roles=[], requestedTenant=null]"}],"type":"security_exception","reason":"no permissions for [indices:admin/plugins/replication/index/status_check] and User [name=rpo-monitor, backend_roles=[], requestedTenant=null]"},"status":403}"#;
        let err = http_failure(
            403,
            body,
            "follower cluster x, index orders",
            STATUS_GRANT,
            false,
        );
        assert_eq!(err.reason, FailureReason::Auth);
        assert_eq!(
            err.message,
            "follower cluster x, index orders: permission denied (HTTP 403: security_exception: no permissions for [indices:admin/plugins/replication/index/status_check]); grant `indices:admin/plugins/replication/index/status_check` as an index permission on the follower indices"
        );
        let body = r#"{"error":{"type":"security_exception","reason":"no permissions for [indices:admin/plugins/replication/follower/stats] and User [name=rpo-monitor, backend_roles=[], requestedTenant=null]"},"status":403}"#;
        let err = http_failure(403, body, "w", FOLLOWER_STATS_GRANT, false);
        assert!(
            err.message.contains("grant `indices:admin/plugins/replication/follower/stats` as an index permission on the index pattern `*`"),
            "{}",
            err.message
        );
        // Amazon OpenSearch Service refusing the IAM identity or the signature.
        let body = r#"{"message":"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}"#;
        let err = http_failure(403, body, "w", STATUS_GRANT, true);
        assert!(
            err.message
                .contains("HTTP 403: The request signature we calculated does not match")
                && err
                    .message
                    .contains("allow `es:ESHttpGet` to the IAM identity"),
            "{}",
            err.message
        );
        let body = r#"{"message":"Authorization header requires 'Credential' parameter. Authorization=Basic bW9uaXRvcjpodW50ZXIy"}"#;
        let err = http_failure(403, body, "w", STATUS_GRANT, false);
        assert!(
            !err.message.contains("bW9uaXRvcjpodW50ZXIy"),
            "{}",
            err.message
        );
        let body = r#"{"Message":"User: anonymous is not authorized to perform: es:ESHttpGet because no resource-based policy allows the es:ESHttpGet action"}"#;
        let err = http_failure(403, body, "w", HEARTBEAT_READ_GRANT, false);
        assert!(
            err.message
                .contains("HTTP 403: User: anonymous is not authorized to perform: es:ESHttpGet"),
            "{}",
            err.message
        );
    }

    /// The role documented for the Security plugin grants exactly the
    /// actions the requests need, each where the plugin checks it: the
    /// replication plugin's action names (ReplicationStatusAction.kt,
    /// FollowerStatsAction.kt) as index permissions.
    #[test]
    fn the_documented_role_grants_the_actions_the_requests_need() {
        let doc = include_str!("../../../../docs/kinds/opensearch.md");
        let section = doc
            .split("## Minimal permissions")
            .nth(1)
            .expect("docs/kinds/opensearch.md has a Minimal permissions section");
        let json = section
            .split("```json")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a JSON role in Minimal permissions");
        let role: Value = serde_json::from_str(json).expect("the documented role is JSON");
        let cluster: Vec<&str> = role["cluster_permissions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(
            cluster.iter().all(|p| !p.contains("replication")),
            "replication actions are index permissions: {cluster:?}"
        );
        let granted = |action: &str| -> Vec<String> {
            role["index_permissions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| {
                    p["allowed_actions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a == action)
                })
                .flat_map(|p| p["index_patterns"].as_array().unwrap().clone())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        assert!(!granted(STATUS_ACTION).is_empty(), "{json}");
        assert_eq!(granted(FOLLOWER_STATS_ACTION), ["*"], "{json}");
        assert!(!granted(GET_ACTION).is_empty(), "{json}");
        for permission in role["index_permissions"].as_array().unwrap() {
            for action in permission["allowed_actions"].as_array().unwrap() {
                let action = action.as_str().unwrap();
                assert!(
                    [STATUS_ACTION, FOLLOWER_STATS_ACTION, GET_ACTION].contains(&action),
                    "{action} is granted but no request needs it"
                );
            }
        }
    }

    const CONFIG: &str = r#"
[[group]]
name = "erp"
rpo_budget = "60s"

[[opensearch]]
name = "erp-search"
group = "erp"
url = "https://search-erp-dr-abc123.eu-west-1.es.amazonaws.com"
indices = ["orders"]
"#;

    fn load(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::from_toml(text, std::path::Path::new("test.toml"))
    }

    fn with(extra: &str) -> String {
        CONFIG.replace(
            "indices = [\"orders\"]",
            &format!("indices = [\"orders\"]\n{extra}"),
        )
    }

    #[test]
    fn aws_sigv4_config() {
        let config = load(&with(r#"aws_sigv4 = { region = "eu-west-1" }"#)).unwrap();
        let spec = config.targets[0].spec::<OpensearchTarget>().unwrap();
        assert_eq!(
            spec.aws_sigv4,
            Some(OpensearchSigV4 {
                region: "eu-west-1".into(),
                leader_region: "eu-west-1".into(),
                service: "es".into(),
                profile: None,
                role_arn: None,
            })
        );
        for (extra, expected) in [
            (r#"aws_sigv4 = { service = "es" }"#, "aws_sigv4.region"),
            (
                r#"aws_sigv4 = { region = "eu-central-1" }"#,
                "is `eu-central-1` but `url` is a domain endpoint in `eu-west-1`",
            ),
            (
                r#"aws_sigv4 = { region = "eu-west-1", service = "aoss" }"#,
                "OpenSearch Serverless (`aoss`) has no cross-cluster replication API",
            ),
            (
                r#"aws_sigv4 = { region = "eu-west-1", service = "ec2" }"#,
                "`ec2` is not a signing name",
            ),
            (
                "username = \"monitor\"\npassword_env = \"HOME\"\naws_sigv4 = { region = \"eu-west-1\" }",
                "remove `username`/`password`",
            ),
            (
                r#"aws_sigv4 = { region = "eu-west-1", leader_region = "eu-central-1" }"#,
                "only used for the heartbeat's leader domain",
            ),
            (
                r#"aws_sigv4 = { region = "eu-west-1", role_arn = "arn:aws:s3:::bucket" }"#,
                "not an IAM role ARN",
            ),
            (
                r#"aws_sigv4 = { region = "eu-west-1", endpoint = "x" }"#,
                "endpoint",
            ),
        ] {
            let err = load(&with(extra)).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra}: {err}");
            assert!(err.contains("erp-search"), "{err}");
        }
        // The documented IAM example is valid as written.
        let doc = include_str!("../../../../docs/kinds/opensearch.md");
        let example = doc
            .split("```toml")
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("aws_sigv4 = {"))
            .expect("docs/kinds/opensearch.md shows an aws_sigv4 example");
        let config = load(&format!(
            "[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n{example}"
        ))
        .unwrap_or_else(|e| panic!("the documented example does not validate: {e}"));
        let spec = config.targets[0].spec::<OpensearchTarget>().unwrap();
        assert_eq!(
            spec.aws_sigv4.as_ref().unwrap().leader_region,
            "eu-central-1"
        );
        // A leader in another region signs for its own.
        let text = with(
            "leader_url = \"https://search-erp-xyz.eu-central-1.es.amazonaws.com\"\nheartbeat = { leader_index = \"hb\", follower_index = \"hb\" }\naws_sigv4 = { region = \"eu-west-1\", leader_region = \"eu-central-1\" }",
        );
        let config = load(&text).unwrap();
        let spec = config.targets[0].spec::<OpensearchTarget>().unwrap();
        assert_eq!(
            spec.aws_sigv4.as_ref().unwrap().leader_region,
            "eu-central-1"
        );
        let err = load(&text.replace(", leader_region = \"eu-central-1\"", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("aws_sigv4.leader_region")
                && err.contains("domain endpoint in `eu-central-1`"),
            "{err}"
        );
    }
}
