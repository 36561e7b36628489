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
        }
    }
}

/// The kinds of target. The one list of kinds lives here and in
/// `probes::build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Postgres,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
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
}

impl TargetSpec {
    pub fn kind(&self) -> Kind {
        match self {
            TargetSpec::Postgres(_) => Kind::Postgres,
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
        for (i, pg) in raw.postgres.into_iter().enumerate() {
            let key = format!("postgres[{i}]");
            let common = RawCommon {
                name: pg.name.clone(),
                group: pg.group.clone(),
                rpo_budget: pg.rpo_budget.clone(),
                poll_interval: pg.poll_interval.clone(),
                timeout: pg.timeout.clone(),
                stale_after: pg.stale_after.clone(),
            };
            let spec = TargetSpec::Postgres(self.postgres(&key, pg)?);
            self.push_target(
                &mut targets,
                &key,
                self.target(&key, common, &groups, &defaults, spec)?,
            )?;
        }

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

/// Names that become label values and heartbeat keys: short and plain.
fn is_label_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
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
        let TargetSpec::Postgres(pg) = &target.spec;
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
