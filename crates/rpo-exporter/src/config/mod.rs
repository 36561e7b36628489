//! The configuration file: strict serde structs as written by a person, and
//! the validated [`Config`] the rest of the program is built from.
//!
//! Parsing and validation are one step ([`Config::load`]), so no code can get
//! hold of a configuration that skipped validation. Every error names the
//! file, the key and what to do. Secrets are resolved here (from `*_env` or
//! `*_file`) into [`Secret`], which cannot be printed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

mod aws;
pub use aws::{
    is_aws_region, parse_arn as aws_parse_arn, AuroraGlobalTarget, AwsAccess, EfsTarget,
    ElasticacheGlobalTarget, RdsTarget, S3Canary, S3Target, SqsQueue, SqsTarget,
};

/// The default address of the HTTP server (the port is the exporter's own).
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:9798";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);
pub const DEFAULT_HEARTBEAT_TABLE: &str = "rpo_heartbeat";

/// A validated configuration: every target resolved, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub source: PathBuf,
    /// Names this exporter's heartbeat rows/keys (one per instance, so two
    /// exporters never read each other's clock).
    pub instance: String,
    pub web: WebConfig,
    pub groups: Vec<Group>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen_address: SocketAddr,
    pub telemetry_path: String,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub rpo_budget: Duration,
}

/// One replicated store pair (or queue), with every setting resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub group: String,
    pub rpo_budget: Duration,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub stale_after: Duration,
    pub spec: TargetSpec,
}

impl Target {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// The heartbeat canary's interval, when the target has one.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        match &self.spec {
            TargetSpec::Postgres(pg) => pg.heartbeat.as_ref().map(|hb| hb.interval),
            TargetSpec::Redis(redis) => redis.heartbeat.as_ref().map(|hb| hb.interval),
            TargetSpec::RedisStream(_) => None,
            TargetSpec::Rabbitmq(_) | TargetSpec::SqlQueue(_) => None,
            TargetSpec::Opensearch(os) => os.heartbeat.as_ref().map(|hb| hb.interval),
            TargetSpec::S3(s3) => s3.canary.as_ref().map(|canary| canary.interval),
            TargetSpec::Rds(_)
            | TargetSpec::AuroraGlobal(_)
            | TargetSpec::ElasticacheGlobal(_)
            | TargetSpec::Efs(_)
            | TargetSpec::Sqs(_) => None,
        }
    }
}

/// The kinds of target. The one list of kinds lives here and in
/// `kinds::build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Postgres,
    Redis,
    RedisStream,
    Rabbitmq,
    SqlQueue,
    Opensearch,
    Rds,
    AuroraGlobal,
    ElasticacheGlobal,
    S3,
    Efs,
    Sqs,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::RedisStream => "redis_stream",
            Kind::Rabbitmq => "rabbitmq",
            Kind::SqlQueue => "sql_queue",
            Kind::Opensearch => "opensearch",
            Kind::Rds => "rds",
            Kind::AuroraGlobal => "aurora_global",
            Kind::ElasticacheGlobal => "elasticache_global",
            Kind::S3 => "s3",
            Kind::Efs => "efs",
            Kind::Sqs => "sqs",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum TargetSpec {
    Postgres(PostgresTarget),
    Redis(RedisTarget),
    RedisStream(RedisStreamTarget),
    Rabbitmq(RabbitmqTarget),
    SqlQueue(SqlQueueTarget),
    Opensearch(OpensearchTarget),
    Rds(RdsTarget),
    AuroraGlobal(AuroraGlobalTarget),
    ElasticacheGlobal(ElasticacheGlobalTarget),
    S3(S3Target),
    Efs(EfsTarget),
    Sqs(SqsTarget),
}

impl TargetSpec {
    pub fn kind(&self) -> Kind {
        match self {
            TargetSpec::Postgres(_) => Kind::Postgres,
            TargetSpec::Redis(_) => Kind::Redis,
            TargetSpec::RedisStream(_) => Kind::RedisStream,
            TargetSpec::Rabbitmq(_) => Kind::Rabbitmq,
            TargetSpec::SqlQueue(_) => Kind::SqlQueue,
            TargetSpec::Opensearch(_) => Kind::Opensearch,
            TargetSpec::Rds(_) => Kind::Rds,
            TargetSpec::AuroraGlobal(_) => Kind::AuroraGlobal,
            TargetSpec::ElasticacheGlobal(_) => Kind::ElasticacheGlobal,
            TargetSpec::S3(_) => Kind::S3,
            TargetSpec::Efs(_) => Kind::Efs,
            TargetSpec::Sqs(_) => Kind::Sqs,
        }
    }
}

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

/// The default heartbeat key prefix of the `redis` kind; each exporter
/// instance writes `{key}:{instance}`.
pub const DEFAULT_REDIS_HEARTBEAT_KEY: &str = "rpo:heartbeat";

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

/// One RabbitMQ queue, read through the management HTTP API.
#[derive(Debug, Clone)]
pub struct RabbitmqTarget {
    /// The management API's base URL, like `http://host:15672`; it may carry
    /// `user:password@`.
    pub management_url: Secret,
    /// Credentials when the URL carries none.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub vhost: String,
    pub queue: String,
    /// Report the queue unhealthy while messages wait and no consumer is attached.
    pub require_consumers: bool,
    /// How old the management API's queue counts may be: about twice the
    /// broker's `collect_statistics_interval` (5 s by default).
    pub statistics_delay: Duration,
    pub tls_ca_file: Option<PathBuf>,
}

/// An outbox or staging table on PostgreSQL, read by a configured query.
#[derive(Debug, Clone)]
pub struct SqlQueueTarget {
    pub url: Secret,
    /// Returns one row: (count of unprocessed rows, oldest enqueue time or NULL).
    pub query: String,
    pub tls_ca_file: Option<PathBuf>,
}

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

/// A value that must never be printed: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must hand it to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything that can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    exporter: RawExporter,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    group: Vec<RawGroup>,
    #[serde(default)]
    postgres: Vec<RawPostgres>,
    #[serde(default)]
    redis: Vec<RawRedis>,
    #[serde(default)]
    redis_stream: Vec<RawRedisStream>,
    #[serde(default)]
    rabbitmq: Vec<RawRabbitmq>,
    #[serde(default)]
    sql_queue: Vec<RawSqlQueue>,
    #[serde(default)]
    opensearch: Vec<RawOpensearch>,
    #[serde(default)]
    rds: Vec<aws::RawRds>,
    #[serde(default)]
    aurora_global: Vec<aws::RawAuroraGlobal>,
    #[serde(default)]
    elasticache_global: Vec<aws::RawElasticacheGlobal>,
    #[serde(default)]
    s3: Vec<aws::RawS3>,
    #[serde(default)]
    efs: Vec<aws::RawEfs>,
    #[serde(default)]
    sqs: Vec<aws::RawSqs>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExporter {
    instance: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen_address: Option<String>,
    telemetry_path: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    rpo_budget: String,
}

/// The keys every target takes (each kind's struct repeats them, because
/// serde's `flatten` cannot be combined with `deny_unknown_fields`).
struct RawCommon {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
}

/// A kind's raw struct, which repeats the common keys.
trait RawTarget {
    fn common(&self) -> RawCommon;
}

macro_rules! raw_target {
    ($($raw:ty),*) => {$(
        impl RawTarget for $raw {
            fn common(&self) -> RawCommon {
                RawCommon {
                    name: self.name.clone(),
                    group: self.group.clone(),
                    rpo_budget: self.rpo_budget.clone(),
                    poll_interval: self.poll_interval.clone(),
                    timeout: self.timeout.clone(),
                    stale_after: self.stale_after.clone(),
                }
            }
        }
    )*};
}

raw_target!(
    RawPostgres,
    RawRedis,
    RawRedisStream,
    RawRabbitmq,
    RawSqlQueue,
    RawOpensearch
);

/// Validates the targets of each kind into one list, keyed for messages as
/// `kind[index]`.
struct KindValidation<'v, 'a> {
    validator: &'v Validator<'a>,
    targets: &'v mut Vec<Target>,
    groups: &'v [Group],
    defaults: &'v Defaults,
}

impl KindValidation<'_, '_> {
    fn add<R: RawTarget>(
        &mut self,
        kind: &str,
        raws: Vec<R>,
        spec: impl Fn(&Validator<'_>, &str, R) -> Result<TargetSpec, ConfigError>,
    ) -> Result<(), ConfigError> {
        for (i, raw) in raws.into_iter().enumerate() {
            let key = format!("{kind}[{i}]");
            let common = raw.common();
            let spec = spec(self.validator, &key, raw)?;
            let target = self
                .validator
                .target(&key, common, self.groups, self.defaults, spec)?;
            self.validator.push_target(self.targets, &key, target)?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    primary_url: Option<String>,
    primary_url_env: Option<String>,
    primary_url_file: Option<PathBuf>,
    replica_url: Option<String>,
    replica_url_env: Option<String>,
    replica_url_file: Option<PathBuf>,
    heartbeat: Option<RawPostgresHeartbeat>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresHeartbeat {
    interval: Option<String>,
    table: Option<String>,
    create_table: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    primary_url: Option<String>,
    primary_url_env: Option<String>,
    primary_url_file: Option<PathBuf>,
    replica_url: Option<String>,
    replica_url_env: Option<String>,
    replica_url_file: Option<PathBuf>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    heartbeat: Option<RawRedisHeartbeat>,
    tls_ca_file: Option<PathBuf>,
    replica_listed_as: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisHeartbeat {
    interval: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisStream {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    stream: String,
    consumer_group: String,
    require_consumers: Option<bool>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRabbitmq {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    management_url: Option<String>,
    management_url_env: Option<String>,
    management_url_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    vhost: Option<String>,
    queue: String,
    require_consumers: Option<bool>,
    statistics_delay: Option<String>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlQueue {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    query: String,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpensearch {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    leader_url: Option<String>,
    leader_url_env: Option<String>,
    leader_url_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    indices: Vec<String>,
    heartbeat: Option<RawOpensearchHeartbeat>,
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpensearchHeartbeat {
    interval: Option<String>,
    leader_index: String,
    follower_index: String,
}

// ---------------------------------------------------------------------------
// Loading and validation.

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates configuration text; `path` is used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim_end().to_string(),
        })?;
        Validator { path }.validate(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, ConfigError> {
        let parsed = humantime::parse_duration(value).map_err(|err| {
            self.invalid(
                key,
                format!("`{value}` is not a duration ({err}); write it like \"5s\", \"2m\" or \"500ms\""),
            )
        })?;
        if parsed.is_zero() {
            return Err(self.invalid(key, "must be greater than zero"));
        }
        Ok(parsed)
    }

    fn optional_duration(
        &self,
        key: &str,
        value: Option<&String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(v) => self.duration(key, v),
            None => Ok(default),
        }
    }

    fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let instance = match raw.exporter.instance {
            Some(name) => {
                if !is_label_safe_name(&name) {
                    return Err(self.invalid(
                        "exporter.instance",
                        "use letters, digits, '-', '_', '.' or ':' (1 to 100 characters)",
                    ));
                }
                name
            }
            None => default_instance_name(),
        };

        let listen_address = match &raw.web.listen_address {
            Some(addr) => addr.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "web.listen_address",
                    format!("`{addr}` is not an address like \"0.0.0.0:9798\""),
                )
            })?,
            None => DEFAULT_LISTEN_ADDRESS
                .parse()
                .expect("default listen address"),
        };
        let telemetry_path = raw
            .web
            .telemetry_path
            .unwrap_or_else(|| "/metrics".to_string());
        if !telemetry_path.starts_with('/') || telemetry_path.len() < 2 {
            return Err(self.invalid(
                "web.telemetry_path",
                "must start with '/', like \"/metrics\"",
            ));
        }

        let defaults = Defaults {
            poll_interval: self.optional_duration(
                "defaults.poll_interval",
                raw.defaults.poll_interval.as_ref(),
                DEFAULT_POLL_INTERVAL,
            )?,
            timeout: self.optional_duration(
                "defaults.timeout",
                raw.defaults.timeout.as_ref(),
                DEFAULT_TIMEOUT,
            )?,
            stale_after: self.optional_duration(
                "defaults.stale_after",
                raw.defaults.stale_after.as_ref(),
                DEFAULT_STALE_AFTER,
            )?,
        };

        let mut groups = Vec::new();
        let mut group_names = BTreeSet::new();
        for (i, group) in raw.group.iter().enumerate() {
            let key = format!("group[{i}]");
            if !is_label_safe_name(&group.name) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    "use letters, digits, '-', '_', '.' or ':' (1 to 100 characters)",
                ));
            }
            if !group_names.insert(group.name.clone()) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("group \"{}\" is defined twice", group.name),
                ));
            }
            let rpo_budget = self.duration(&format!("{key}.rpo_budget"), &group.rpo_budget)?;
            groups.push(Group {
                name: group.name.clone(),
                rpo_budget,
            });
        }

        let mut targets = Vec::new();
        let mut kinds = KindValidation {
            validator: self,
            targets: &mut targets,
            groups: &groups,
            defaults: &defaults,
        };
        kinds.add("postgres", raw.postgres, |v, key, r| {
            Ok(TargetSpec::Postgres(v.postgres(key, r)?))
        })?;
        kinds.add("redis", raw.redis, |v, key, r| {
            Ok(TargetSpec::Redis(v.redis(key, r)?))
        })?;
        kinds.add("redis_stream", raw.redis_stream, |v, key, r| {
            Ok(TargetSpec::RedisStream(v.redis_stream(key, r)?))
        })?;
        kinds.add("rabbitmq", raw.rabbitmq, |v, key, r| {
            Ok(TargetSpec::Rabbitmq(v.rabbitmq(key, r)?))
        })?;
        kinds.add("sql_queue", raw.sql_queue, |v, key, r| {
            Ok(TargetSpec::SqlQueue(v.sql_queue(key, r)?))
        })?;
        kinds.add("opensearch", raw.opensearch, |v, key, r| {
            Ok(TargetSpec::Opensearch(v.opensearch(key, r)?))
        })?;
        let defaults_set = aws::DefaultsSet {
            poll_interval: raw.defaults.poll_interval.is_some(),
            timeout: raw.defaults.timeout.is_some(),
            stale_after: raw.defaults.stale_after.is_some(),
        };
        let raw_aws = aws::RawAwsKinds {
            rds: raw.rds,
            aurora_global: raw.aurora_global,
            elasticache_global: raw.elasticache_global,
            s3: raw.s3,
            efs: raw.efs,
            sqs: raw.sqs,
        };
        self.aws_targets(raw_aws, &mut targets, &groups, &defaults, &defaults_set)?;

        Ok(Config {
            source: self.path.to_owned(),
            instance,
            web: WebConfig {
                listen_address,
                telemetry_path,
            },
            groups,
            targets,
        })
    }

    /// Adds a target, refusing a name already used by any kind.
    fn push_target(
        &self,
        targets: &mut Vec<Target>,
        key: &str,
        target: Target,
    ) -> Result<(), ConfigError> {
        if targets.iter().any(|t| t.name == target.name) {
            return Err(self.invalid(
                format!("{key}.name"),
                format!(
                    "target name \"{}\" is used twice; target names must be unique",
                    target.name
                ),
            ));
        }
        targets.push(target);
        Ok(())
    }

    fn target(
        &self,
        key: &str,
        common: RawCommon,
        groups: &[Group],
        defaults: &Defaults,
        spec: TargetSpec,
    ) -> Result<Target, ConfigError> {
        if !is_label_safe_name(&common.name) {
            return Err(self.invalid(
                format!("{key}.name"),
                "use letters, digits, '-', '_', '.' or ':' (1 to 100 characters)",
            ));
        }
        let key = format!("{key} (\"{}\")", common.name);
        let Some(group) = groups.iter().find(|g| g.name == common.group) else {
            let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            return Err(self.invalid(
                format!("{key}.group"),
                format!(
                    "group \"{}\" is not defined; add a [[group]] with that name (defined: {})",
                    common.group,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let rpo_budget = self.optional_duration(
            &format!("{key}.rpo_budget"),
            common.rpo_budget.as_ref(),
            group.rpo_budget,
        )?;
        let poll_interval = self.optional_duration(
            &format!("{key}.poll_interval"),
            common.poll_interval.as_ref(),
            defaults.poll_interval,
        )?;
        let timeout = self.optional_duration(
            &format!("{key}.timeout"),
            common.timeout.as_ref(),
            defaults.timeout,
        )?;
        let stale_after = self.optional_duration(
            &format!("{key}.stale_after"),
            common.stale_after.as_ref(),
            defaults.stale_after,
        )?;
        if stale_after <= poll_interval {
            return Err(self.invalid(
                format!("{key}.stale_after"),
                format!(
                    "stale_after ({}) must be longer than poll_interval ({}), or every target reads stale between polls",
                    humantime::format_duration(stale_after),
                    humantime::format_duration(poll_interval)
                ),
            ));
        }
        Ok(Target {
            name: common.name,
            group: common.group,
            rpo_budget,
            poll_interval,
            timeout,
            stale_after,
            spec,
        })
    }

    fn postgres(&self, key: &str, raw: RawPostgres) -> Result<PostgresTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let primary_url = self.secret(
            &key,
            "primary_url",
            raw.primary_url,
            raw.primary_url_env,
            raw.primary_url_file,
        )?;
        let replica_url = self.secret(
            &key,
            "replica_url",
            raw.replica_url,
            raw.replica_url_env,
            raw.replica_url_file,
        )?;
        for (name, url) in [("primary_url", &primary_url), ("replica_url", &replica_url)] {
            if let Err(err) = tokio_postgres::Config::from_str(url.expose()) {
                // The driver's message never contains the URL, so it is safe to show.
                return Err(self.invalid(
                    format!("{key}.{name}"),
                    format!("not a PostgreSQL connection URL ({err}); write it like \"postgres://monitor@host:5432/db\""),
                ));
            }
        }
        let heartbeat = match raw.heartbeat {
            None => None,
            Some(hb) => {
                let interval = self.optional_duration(
                    &format!("{key}.heartbeat.interval"),
                    hb.interval.as_ref(),
                    Duration::from_secs(1),
                )?;
                let table = hb
                    .table
                    .unwrap_or_else(|| DEFAULT_HEARTBEAT_TABLE.to_string());
                if !is_sql_table_name(&table) {
                    return Err(self.invalid(
                        format!("{key}.heartbeat.table"),
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
        if let Some(path) = &raw.tls_ca_file {
            if !path.is_file() {
                return Err(self.invalid(
                    format!("{key}.tls_ca_file"),
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(PostgresTarget {
            primary_url,
            replica_url,
            heartbeat,
            tls_ca_file: raw.tls_ca_file,
        })
    }

    fn redis(&self, key: &str, raw: RawRedis) -> Result<RedisTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let primary_url = self.secret(
            &key,
            "primary_url",
            raw.primary_url,
            raw.primary_url_env,
            raw.primary_url_file,
        )?;
        let replica_url = self.secret(
            &key,
            "replica_url",
            raw.replica_url,
            raw.replica_url_env,
            raw.replica_url_file,
        )?;
        let password = self.optional_secret(
            &key,
            "password",
            raw.password,
            raw.password_env,
            raw.password_file,
        )?;
        let primary_tls = self.redis_url(
            &format!("{key}.primary_url"),
            &primary_url,
            password.is_some(),
        )?;
        let replica_tls = self.redis_url(
            &format!("{key}.replica_url"),
            &replica_url,
            password.is_some(),
        )?;
        let heartbeat = match raw.heartbeat {
            None => None,
            Some(hb) => {
                let interval = self.optional_duration(
                    &format!("{key}.heartbeat.interval"),
                    hb.interval.as_ref(),
                    Duration::from_secs(1),
                )?;
                let prefix = hb
                    .key
                    .unwrap_or_else(|| DEFAULT_REDIS_HEARTBEAT_KEY.to_string());
                if !is_redis_key_prefix(&prefix) {
                    return Err(self.invalid(
                        format!("{key}.heartbeat.key"),
                        "use 1 to 200 printable characters without spaces, like \"rpo:heartbeat\"",
                    ));
                }
                Some(RedisHeartbeat {
                    interval,
                    key: prefix,
                })
            }
        };
        self.redis_tls_ca_file(&key, raw.tls_ca_file.as_deref(), primary_tls || replica_tls)?;
        let replica_listed_as = match raw.replica_listed_as {
            None => None,
            Some(text) => Some(parse_host_port(&text).ok_or_else(|| {
                self.invalid(
                    format!("{key}.replica_listed_as"),
                    format!("`{text}` is not an address; write it as the primary's INFO replication lists the replica, like \"10.0.1.7:6379\""),
                )
            })?),
        };
        Ok(RedisTarget {
            primary_url,
            replica_url,
            password,
            heartbeat,
            tls_ca_file: raw.tls_ca_file,
            replica_listed_as,
        })
    }

    fn redis_stream(
        &self,
        key: &str,
        raw: RawRedisStream,
    ) -> Result<RedisStreamTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let url = self.secret(&key, "url", raw.url, raw.url_env, raw.url_file)?;
        let password = self.optional_secret(
            &key,
            "password",
            raw.password,
            raw.password_env,
            raw.password_file,
        )?;
        let tls = self.redis_url(&format!("{key}.url"), &url, password.is_some())?;
        for (name, value) in [
            ("stream", &raw.stream),
            ("consumer_group", &raw.consumer_group),
        ] {
            if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                return Err(self.invalid(
                    format!("{key}.{name}"),
                    "must be 1 to 256 characters, without control characters",
                ));
            }
        }
        self.redis_tls_ca_file(&key, raw.tls_ca_file.as_deref(), tls)?;
        Ok(RedisStreamTarget {
            url,
            password,
            stream: raw.stream,
            consumer_group: raw.consumer_group,
            require_consumers: raw.require_consumers.unwrap_or(false),
            tls_ca_file: raw.tls_ca_file,
        })
    }

    /// Checks a Redis URL without ever echoing it; returns whether it uses TLS.
    fn redis_url(
        &self,
        key: &str,
        url: &Secret,
        password_set_apart: bool,
    ) -> Result<bool, ConfigError> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        let info = url.expose().into_connection_info().map_err(|err| {
            // The driver's messages name the problem, never the URL.
            self.invalid(
                key,
                format!("not a Redis URL ({err}); write it like \"redis://host:6379\" or \"rediss://user@host:6379/0\""),
            )
        })?;
        let tls = match info.addr() {
            ConnectionAddr::Tcp(..) => false,
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(self.invalid(
                    key,
                    "`#insecure` would turn off certificate verification; trust the server's CA with tls_ca_file instead",
                ))
            }
            ConnectionAddr::TcpTls { .. } => true,
            _ => {
                return Err(self.invalid(
                    key,
                    "use a redis:// or rediss:// URL with a host and port (unix sockets are not supported)",
                ))
            }
        };
        if password_set_apart && info.redis_settings().password().is_some() {
            return Err(self.invalid(
                key,
                "the URL holds a password and `password`/`password_env`/`password_file` is set too; keep the password in one place",
            ));
        }
        Ok(tls)
    }

    fn redis_tls_ca_file(
        &self,
        key: &str,
        path: Option<&Path>,
        any_tls: bool,
    ) -> Result<(), ConfigError> {
        let Some(path) = path else {
            return Ok(());
        };
        if !any_tls {
            return Err(self.invalid(
                format!("{key}.tls_ca_file"),
                "is set but no URL uses TLS; write rediss:// URLs to use it",
            ));
        }
        if !path.is_file() {
            return Err(self.invalid(
                format!("{key}.tls_ca_file"),
                format!("{} is not a readable file", path.display()),
            ));
        }
        Ok(())
    }

    /// Like [`Validator::secret`], but none of the three may be set.
    fn optional_secret(
        &self,
        key: &str,
        name: &str,
        inline: Option<String>,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        if inline.is_none() && env.is_none() && file.is_none() {
            return Ok(None);
        }
        self.secret(key, name, inline, env, file).map(Some)
    }

    fn rabbitmq(&self, key: &str, raw: RawRabbitmq) -> Result<RabbitmqTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let management_url = self.secret(
            &key,
            "management_url",
            raw.management_url,
            raw.management_url_env,
            raw.management_url_file,
        )?;
        let password = self.optional_secret(
            &key,
            "password",
            raw.password,
            raw.password_env,
            raw.password_file,
        )?;
        self.http_credentials(
            &key,
            "management_url",
            &management_url,
            raw.username.as_deref(),
            password.is_some(),
            "http://monitor@rabbit.internal:15672",
        )?;
        let vhost = raw.vhost.unwrap_or_else(|| "/".to_string());
        for (name, value) in [("vhost", &vhost), ("queue", &raw.queue)] {
            if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
                return Err(self.invalid(
                    format!("{key}.{name}"),
                    "must be 1 to 255 characters, without control characters",
                ));
            }
        }
        let statistics_delay = self.optional_duration(
            &format!("{key}.statistics_delay"),
            raw.statistics_delay.as_ref(),
            Duration::from_secs(10),
        )?;
        self.ca_file(&key, raw.tls_ca_file.as_deref())?;
        Ok(RabbitmqTarget {
            management_url,
            username: raw.username,
            password,
            vhost,
            queue: raw.queue,
            require_consumers: raw.require_consumers.unwrap_or(false),
            statistics_delay,
            tls_ca_file: raw.tls_ca_file,
        })
    }

    fn sql_queue(&self, key: &str, raw: RawSqlQueue) -> Result<SqlQueueTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let url = self.secret(&key, "url", raw.url, raw.url_env, raw.url_file)?;
        if let Err(err) = tokio_postgres::Config::from_str(url.expose()) {
            // The driver's message never contains the URL, so it is safe to show.
            return Err(self.invalid(
                format!("{key}.url"),
                format!("not a PostgreSQL connection URL ({err}); write it like \"postgres://monitor@host:5432/erp\""),
            ));
        }
        // A trailing semicolon is habit, not a second statement.
        let query = raw
            .query
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .to_string();
        if query.is_empty() {
            return Err(self.invalid(
                format!("{key}.query"),
                "is empty; write a query returning (count, oldest enqueue time), like \"SELECT count(*), min(created_at) FROM outbox WHERE processed_at IS NULL\"",
            ));
        }
        self.ca_file(&key, raw.tls_ca_file.as_deref())?;
        Ok(SqlQueueTarget {
            url,
            query,
            tls_ca_file: raw.tls_ca_file,
        })
    }

    fn opensearch(&self, key: &str, raw: RawOpensearch) -> Result<OpensearchTarget, ConfigError> {
        let key = format!("{key} (\"{}\")", raw.name);
        let url = self.secret(&key, "url", raw.url, raw.url_env, raw.url_file)?;
        let leader_url = if raw.leader_url.is_none()
            && raw.leader_url_env.is_none()
            && raw.leader_url_file.is_none()
        {
            None
        } else {
            Some(self.secret(
                &key,
                "leader_url",
                raw.leader_url,
                raw.leader_url_env,
                raw.leader_url_file,
            )?)
        };
        let password = self.optional_secret(
            &key,
            "password",
            raw.password,
            raw.password_env,
            raw.password_file,
        )?;
        let example = "https://monitor@search.internal:9200";
        self.http_credentials(
            &key,
            "url",
            &url,
            raw.username.as_deref(),
            password.is_some(),
            example,
        )?;
        if let Some(leader) = &leader_url {
            self.http_credentials(
                &key,
                "leader_url",
                leader,
                raw.username.as_deref(),
                password.is_some(),
                example,
            )?;
        }
        let mut indices = Vec::new();
        for (i, index) in raw.indices.iter().enumerate() {
            if !is_opensearch_index_name(index) {
                return Err(self.invalid(
                    format!("{key}.indices[{i}]"),
                    format!("`{index}` is not an index name (lower case, no wildcards, no spaces or any of \\/*?\"<>|,#, not starting with _ - +)"),
                ));
            }
            if indices.contains(index) {
                return Err(self.invalid(
                    format!("{key}.indices[{i}]"),
                    format!("`{index}` is listed twice"),
                ));
            }
            indices.push(index.clone());
        }
        let heartbeat = match raw.heartbeat {
            None => None,
            Some(hb) => {
                let interval = self.optional_duration(
                    &format!("{key}.heartbeat.interval"),
                    hb.interval.as_ref(),
                    Duration::from_secs(5),
                )?;
                for (name, index) in [
                    ("leader_index", &hb.leader_index),
                    ("follower_index", &hb.follower_index),
                ] {
                    if !is_opensearch_index_name(index) {
                        return Err(self.invalid(
                            format!("{key}.heartbeat.{name}"),
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
                return Err(self.invalid(
                    format!("{key}.leader_url"),
                    "the heartbeat writes to the leader cluster: set `leader_url` (or `leader_url_env`/`leader_url_file`)",
                ))
            }
            (None, Some(_)) => {
                return Err(self.invalid(
                    format!("{key}.leader_url"),
                    "is only used by the heartbeat; add `heartbeat = { interval, leader_index, follower_index }` or remove it",
                ))
            }
            _ => {}
        }
        self.ca_file(&key, raw.tls_ca_file.as_deref())?;
        Ok(OpensearchTarget {
            url,
            leader_url,
            username: raw.username,
            password,
            indices,
            heartbeat,
            tls_ca_file: raw.tls_ca_file,
        })
    }

    /// Checks an HTTP(S) URL without ever echoing it, and that credentials
    /// are given in exactly one place (in the URL, or `username` + password).
    fn http_credentials(
        &self,
        key: &str,
        name: &str,
        url: &Secret,
        username: Option<&str>,
        password_set_apart: bool,
        example: &str,
    ) -> Result<(), ConfigError> {
        let parsed = reqwest::Url::parse(url.expose()).map_err(|err| {
            self.invalid(
                format!("{key}.{name}"),
                format!("not a URL ({err}); write it like \"{example}\""),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(self.invalid(
                format!("{key}.{name}"),
                format!("use an http:// or https:// URL with a host, like \"{example}\""),
            ));
        }
        let in_url = !parsed.username().is_empty() || parsed.password().is_some();
        if in_url && (username.is_some() || password_set_apart) {
            return Err(self.invalid(
                format!("{key}.{name}"),
                "the URL carries credentials and `username`/`password` is set too; keep them in one place",
            ));
        }
        if password_set_apart && username.is_none() {
            return Err(self.invalid(
                format!("{key}.username"),
                "a password is set but no username",
            ));
        }
        if let Some(user) = username {
            if user.is_empty() || user.chars().any(char::is_control) || user.contains(':') {
                return Err(self.invalid(
                    format!("{key}.username"),
                    "must be non-empty, without ':' or control characters",
                ));
            }
            if !password_set_apart {
                return Err(self.invalid(
                    format!("{key}.password"),
                    "`username` is set: give its password with `password_env` (an environment variable's name) or `password_file` (a path)",
                ));
            }
        }
        Ok(())
    }

    fn ca_file(&self, key: &str, path: Option<&Path>) -> Result<(), ConfigError> {
        match path {
            Some(path) if !path.is_file() => Err(self.invalid(
                format!("{key}.tls_ca_file"),
                format!("{} is not a readable file", path.display()),
            )),
            _ => Ok(()),
        }
    }

    /// Resolves a secret given inline, by environment variable or by file:
    /// exactly one of the three must be set.
    fn secret(
        &self,
        key: &str,
        name: &str,
        inline: Option<String>,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Secret, ConfigError> {
        let given = [inline.is_some(), env.is_some(), file.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given != 1 {
            return Err(self.invalid(
                format!("{key}.{name}"),
                format!(
                    "set exactly one of `{name}`, `{name}_env` (an environment variable's name) or `{name}_file` (a path); {}",
                    if given == 0 { "none is set" } else { "more than one is set" }
                ),
            ));
        }
        if let Some(value) = inline {
            return Ok(Secret(value));
        }
        if let Some(var) = env {
            return match std::env::var(&var) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_string())),
                _ => Err(self.invalid(
                    format!("{key}.{name}_env"),
                    format!(
                        "environment variable {var} is not set or empty; export it before starting"
                    ),
                )),
            };
        }
        let path = file.expect("one of three is set");
        match std::fs::read_to_string(&path) {
            Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_string())),
            Ok(_) => Err(self.invalid(
                format!("{key}.{name}_file"),
                format!("{} is empty", path.display()),
            )),
            Err(err) => Err(self.invalid(
                format!("{key}.{name}_file"),
                format!("{} cannot be read: {err}", path.display()),
            )),
        }
    }
}

struct Defaults {
    poll_interval: Duration,
    timeout: Duration,
    stale_after: Duration,
}

/// An OpenSearch index name as the cluster accepts it (no wildcards or
/// patterns: each followed index is asked for by name).
fn is_opensearch_index_name(name: &str) -> bool {
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

/// Names that become label values and heartbeat keys: short and plain.
fn is_label_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// A Redis heartbeat key prefix: printable, no spaces, short.
fn is_redis_key_prefix(key: &str) -> bool {
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

/// A table name we are willing to splice into SQL: `table` or `schema.table`
/// of plain lower-case identifiers.
pub fn is_sql_table_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && part.len() <= 63
        })
}

fn default_instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let cleaned: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(100)
        .collect();
    if cleaned.is_empty() {
        "rpo-exporter".to_string()
    } else {
        cleaned
    }
}

impl Config {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    const GOOD: &str = r#"
[defaults]
poll_interval = "2s"
stale_after = "20s"

[[group]]
name = "erp"
rpo_budget = "60s"

[[postgres]]
name = "erp-db"
group = "erp"
rpo_budget = "5s"
primary_url = "postgres://monitor:hunter2@127.0.0.1:5432/erp"
replica_url = "postgres://monitor@127.0.0.1:5433/erp"
heartbeat = { interval = "1s", table = "rpo_heartbeat" }
"#;

    #[test]
    fn good_config_inherits_defaults_and_overrides_budget() {
        let config = load(GOOD).unwrap();
        let target = &config.targets[0];
        assert_eq!(target.rpo_budget, Duration::from_secs(5));
        assert_eq!(target.poll_interval, Duration::from_secs(2));
        assert_eq!(target.timeout, DEFAULT_TIMEOUT);
        assert_eq!(target.stale_after, Duration::from_secs(20));
        let TargetSpec::Postgres(pg) = &target.spec else {
            panic!("a postgres target")
        };
        assert_eq!(pg.heartbeat.as_ref().unwrap().table, "rpo_heartbeat");
        assert!(
            !format!("{config:?}").contains("hunter2"),
            "Debug must redact secrets"
        );
    }

    fn error_of(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_is_named() {
        let err = error_of(&GOOD.replace("rpo_budget = \"5s\"", "rpo_budgt = \"5s\""));
        assert!(err.contains("rpo_budgt"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let err = error_of(&GOOD.replace("\"5s\"", "\"5 parsecs\""));
        assert!(err.contains("rpo_budget"), "{err}");
        assert!(err.contains("5 parsecs"), "{err}");
    }

    #[test]
    fn undefined_group_is_named() {
        let err = error_of(&GOOD.replace("group = \"erp\"", "group = \"crm\""));
        assert!(err.contains("\"crm\" is not defined"), "{err}");
    }

    #[test]
    fn both_url_forms_rejected_and_secret_not_echoed() {
        let err = error_of(&GOOD.replace(
            "replica_url = \"postgres://monitor@127.0.0.1:5433/erp\"",
            "replica_url = \"postgres://x:s3cret@h/db\"\nreplica_url_env = \"X\"",
        ));
        assert!(err.contains("replica_url"), "{err}");
        assert!(err.contains("more than one"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn missing_env_is_named() {
        let err = error_of(&GOOD.replace(
            "replica_url = \"postgres://monitor@127.0.0.1:5433/erp\"",
            "replica_url_env = \"RPO_TEST_SURELY_UNSET_VAR\"",
        ));
        assert!(err.contains("RPO_TEST_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn duplicate_target_is_named() {
        let second = GOOD.split("[[postgres]]").nth(1).unwrap();
        let err = error_of(&format!("{GOOD}\n[[postgres]]{second}"));
        assert!(err.contains("\"erp-db\" is used twice"), "{err}");
    }

    #[test]
    fn bad_url_does_not_echo_it() {
        let err = error_of(&GOOD.replace(
            "postgres://monitor:hunter2@127.0.0.1:5432/erp",
            "postgres://monitor:hunter2@127.0.0.1:notaport/erp",
        ));
        assert!(err.contains("primary_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn stale_after_must_exceed_poll_interval() {
        let err = error_of(&GOOD.replace("stale_after = \"20s\"", "stale_after = \"1s\""));
        assert!(err.contains("stale_after"), "{err}");
    }

    #[test]
    fn bad_table_name_rejected() {
        let err =
            error_of(&GOOD.replace("table = \"rpo_heartbeat\"", "table = \"x; drop table y\""));
        assert!(err.contains("heartbeat.table"), "{err}");
    }

    #[test]
    fn table_names() {
        assert!(is_sql_table_name("rpo_heartbeat"));
        assert!(is_sql_table_name("monitoring.rpo_heartbeat"));
        assert!(!is_sql_table_name("Rpo"));
        assert!(!is_sql_table_name("a.b.c"));
        assert!(!is_sql_table_name(""));
    }
}
