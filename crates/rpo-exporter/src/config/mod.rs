//! The configuration file: what is common to every target, and the
//! validated [`Config`] the rest of the program is built from.
//!
//! This module owns the file, `[exporter]`, `[web]`, `[defaults]`, the
//! groups, the keys every target takes (`name`, `group`, `rpo_budget`,
//! `poll_interval`, `timeout`, `stale_after`) and secrets given as `x`,
//! `x_env` or `x_file`. Each kind's own keys are declared and validated in
//! the kind's file (`crate::kinds`), which reads them through
//! [`TargetKeys`].
//!
//! Parsing and validation are one step ([`Config::load`]), so no code can get
//! hold of a configuration that skipped validation. Every error names the
//! file, the key and what to do. Secrets are resolved here (from `*_env` or
//! `*_file`) into [`Secret`], which cannot be printed.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::kinds::{self, Kind, KindSpec};

/// The default address of the HTTP server (the port is the exporter's own).
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:9798";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// The keys every target takes, whatever its kind.
pub const COMMON_KEYS: [&str; 6] = [
    "name",
    "group",
    "rpo_budget",
    "poll_interval",
    "timeout",
    "stale_after",
];

/// A validated configuration: every target resolved, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub source: PathBuf,
    /// Names this exporter's heartbeat rows/keys (one per instance, so two
    /// exporters never read each other's clock).
    pub instance: String,
    /// Where this exporter runs (`[exporter] region`, free text such as
    /// `eu-west-1`), so that one Prometheus scraping two exporters, and the
    /// people reading it, can tell them apart. `None` when not set.
    pub region: Option<String>,
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
    pub kind: Kind,
    /// The kind's own validated settings.
    pub spec: Arc<dyn KindSpec>,
}

impl Target {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The heartbeat canary's interval, when the target has one.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.spec.heartbeat_interval()
    }

    /// The kind's settings as their concrete type (`None` for another kind).
    pub fn spec<T: KindSpec>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.spec;
        any.downcast_ref::<T>()
    }
}

/// The defaults a target of some kind starts from: `[defaults]`, or the
/// kind's own (see [`kinds::KindDef::defaults`]).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub stale_after: Duration,
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
struct RawExporter {
    instance: Option<String>,
    region: Option<String>,
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

/// The keys every target takes (see [`COMMON_KEYS`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    name: String,
    group: String,
    rpo_budget: Option<String>,
    poll_interval: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
}

/// The sections of the file that are not kinds of target.
const SECTIONS: [&str; 4] = ["exporter", "web", "defaults", "group"];

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
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: err.to_string().trim_end().to_string(),
                })?;
        ConfigFile { path }.validate(table)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// The file being validated, for messages.
struct ConfigFile<'a> {
    path: &'a Path,
}

impl ConfigFile<'_> {
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        invalid(self.path, key, problem)
    }

    /// Takes a section out of the file and deserializes it (absent: default).
    fn section<T: DeserializeOwned + Default>(
        &self,
        table: &mut toml::Table,
        name: &str,
    ) -> Result<T, ConfigError> {
        match table.remove(name) {
            None => Ok(T::default()),
            Some(value) => value
                .try_into()
                .map_err(|err: toml::de::Error| self.invalid(name, serde_message(&err))),
        }
    }

    fn validate(&self, mut table: toml::Table) -> Result<Config, ConfigError> {
        let exporter: RawExporter = self.section(&mut table, "exporter")?;
        let web: RawWeb = self.section(&mut table, "web")?;
        let raw_defaults: RawDefaults = self.section(&mut table, "defaults")?;
        let raw_groups: Vec<RawGroup> = self.section(&mut table, "group")?;
        // Everything else must be a kind of target.
        if let Some(unknown) = table.keys().find(|k| Kind::named(k).is_none()) {
            return Err(self.invalid(
                unknown.as_str(),
                format!(
                    "unknown section; the sections are {} and the kinds of target {}",
                    SECTIONS.join(", "),
                    kinds::all()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }

        let instance = match exporter.instance {
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
        let region = match exporter.region {
            Some(region) if !is_region_name(&region) => {
                return Err(self.invalid(
                    "exporter.region",
                    format!(
                        "`{}` is not a region name: use 1 to 63 letters, digits, '-', '_' or '.', like \"eu-west-1\"",
                        region.escape_debug()
                    ),
                ));
            }
            region => region,
        };

        let listen_address = match &web.listen_address {
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
        let telemetry_path = web.telemetry_path.unwrap_or_else(|| "/metrics".to_string());
        if !telemetry_path.starts_with('/') || telemetry_path.len() < 2 {
            return Err(self.invalid(
                "web.telemetry_path",
                "must start with '/', like \"/metrics\"",
            ));
        }

        let defaults = FileDefaults {
            values: Defaults {
                poll_interval: self.optional_duration(
                    "defaults.poll_interval",
                    raw_defaults.poll_interval.as_deref(),
                    DEFAULT_POLL_INTERVAL,
                )?,
                timeout: self.optional_duration(
                    "defaults.timeout",
                    raw_defaults.timeout.as_deref(),
                    DEFAULT_TIMEOUT,
                )?,
                stale_after: self.optional_duration(
                    "defaults.stale_after",
                    raw_defaults.stale_after.as_deref(),
                    DEFAULT_STALE_AFTER,
                )?,
            },
            poll_interval_set: raw_defaults.poll_interval.is_some(),
            timeout_set: raw_defaults.timeout.is_some(),
            stale_after_set: raw_defaults.stale_after.is_some(),
        };

        let mut groups = Vec::new();
        let mut group_names = BTreeSet::new();
        for (i, group) in raw_groups.iter().enumerate() {
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

        // Targets in the order of the list of kinds, then of the file.
        let mut targets: Vec<Target> = Vec::new();
        for kind in kinds::all() {
            let Some(value) = table.remove(kind.as_str()) else {
                continue;
            };
            let toml::Value::Array(entries) = value else {
                return Err(self.invalid(
                    kind.as_str(),
                    format!("write each {kind} target as a [[{kind}]] table"),
                ));
            };
            for (i, entry) in entries.into_iter().enumerate() {
                let key = format!("{kind}[{i}]");
                let toml::Value::Table(entry) = entry else {
                    return Err(self.invalid(
                        key,
                        format!("write each {kind} target as a [[{kind}]] table"),
                    ));
                };
                let target = self.target(kind, key.clone(), entry, &groups, &defaults)?;
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
            }
        }

        Ok(Config {
            source: self.path.to_owned(),
            instance,
            region,
            web: WebConfig {
                listen_address,
                telemetry_path,
            },
            groups,
            targets,
        })
    }

    /// Validates one `[[kind]]` table: the common keys here, the kind's own
    /// keys in the kind's file.
    fn target(
        &self,
        kind: Kind,
        key: String,
        mut entry: toml::Table,
        groups: &[Group],
        defaults: &FileDefaults,
    ) -> Result<Target, ConfigError> {
        let mut common = toml::Table::new();
        for name in COMMON_KEYS {
            if let Some(value) = entry.remove(name) {
                common.insert(name.to_string(), value);
            }
        }
        let common: RawCommon = toml::Value::Table(common)
            .try_into()
            .map_err(|err: toml::de::Error| self.invalid(key.as_str(), serde_message(&err)))?;
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

        let mut keys = TargetKeys {
            path: self.path,
            key: key.clone(),
            name: common.name.clone(),
            table: entry,
        };
        let spec = (kind.def().parse)(&mut keys)?;
        if let Some(left) = keys.table.keys().next() {
            // A kind that forgot to read its keys must not accept anything.
            return Err(self.invalid(format!("{key}.{left}"), "unknown key"));
        }

        let defaults = defaults.for_kind(kind);
        let rpo_budget = self.optional_duration(
            &format!("{key}.rpo_budget"),
            common.rpo_budget.as_deref(),
            group.rpo_budget,
        )?;
        let poll_interval = self.optional_duration(
            &format!("{key}.poll_interval"),
            common.poll_interval.as_deref(),
            defaults.poll_interval,
        )?;
        let timeout = self.optional_duration(
            &format!("{key}.timeout"),
            common.timeout.as_deref(),
            defaults.timeout,
        )?;
        let stale_after = self.optional_duration(
            &format!("{key}.stale_after"),
            common.stale_after.as_deref(),
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
        if let Some(min) = kind.def().min_timeout {
            if timeout < min {
                return Err(self.invalid(
                    format!("{key}.timeout"),
                    format!(
                        "{} is too short for {}; use at least {}",
                        humantime::format_duration(timeout),
                        kind.def().min_timeout_reason,
                        humantime::format_duration(min)
                    ),
                ));
            }
        }
        Ok(Target {
            name: common.name,
            group: common.group,
            rpo_budget,
            poll_interval,
            timeout,
            stale_after,
            kind,
            spec,
        })
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, ConfigError> {
        parse_duration(self.path, key, value)
    }

    fn optional_duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(v) => self.duration(key, v),
            None => Ok(default),
        }
    }
}

/// `[defaults]` as written, and which keys it set explicitly.
struct FileDefaults {
    values: Defaults,
    poll_interval_set: bool,
    timeout_set: bool,
    stale_after_set: bool,
}

impl FileDefaults {
    /// The defaults a target of `kind` starts from: `[defaults]`, or the
    /// kind's own, unless `[defaults]` sets a key explicitly and it is at
    /// least as long (a 5 s default poll interval meant for databases never
    /// makes a CloudWatch kind poll every 5 s; an explicit
    /// `[defaults] stale_after = "30m"` still applies).
    fn for_kind(&self, kind: Kind) -> Defaults {
        let Some(own) = kind.def().defaults else {
            return self.values;
        };
        let pick = |explicit: bool, value: Duration, kind: Duration| {
            if explicit && value >= kind {
                value
            } else {
                kind
            }
        };
        Defaults {
            poll_interval: pick(
                self.poll_interval_set,
                self.values.poll_interval,
                own.poll_interval,
            ),
            timeout: pick(self.timeout_set, self.values.timeout, own.timeout),
            stale_after: pick(
                self.stale_after_set,
                self.values.stale_after,
                own.stale_after,
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// One target's own keys, as its kind reads them.

/// The keys of one `[[kind]]` table that are not common to every target,
/// handed to the kind's `parse`. Every error it makes names the file and
/// the full key (`postgres[0] ("erp-db").heartbeat.table`).
pub struct TargetKeys<'a> {
    path: &'a Path,
    /// `kind[i] ("name")`, the prefix of every key in messages.
    key: String,
    name: String,
    table: toml::Table,
}

impl TargetKeys<'_> {
    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full name of one of this target's keys, for messages.
    pub fn key(&self, sub: &str) -> String {
        format!("{}.{sub}", self.key)
    }

    /// An error about one of this target's keys.
    pub fn invalid(&self, sub: &str, problem: impl Into<String>) -> ConfigError {
        invalid(self.path, self.key(sub), problem)
    }

    /// Takes the kind's remaining keys as `T`, which must reject unknown
    /// fields (`#[serde(deny_unknown_fields)]`). Call it once, after
    /// [`TargetKeys::secret`] and the other `take_*` helpers.
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<T, ConfigError> {
        let table = std::mem::take(&mut self.table);
        // Kept to name the full key of an unknown field (serde's error
        // names the field, not where it sits).
        let written = table.clone();
        toml::Value::Table(table)
            .try_into()
            .map_err(|err: toml::de::Error| {
                let problem = serde_message(&err);
                let unknown = problem
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split_once('`'))
                    .map(|(field, _)| field.to_string());
                let expected = problem
                    .split_once(", expected ")
                    .map_or(String::new(), |(_, list)| format!("; expected {list}"));
                match unknown.and_then(|field| path_of(&written, &field)) {
                    Some(path) if path.contains('.') => invalid(
                        self.path,
                        self.key(&path),
                        format!("unknown key{expected}"),
                    ),
                    Some(path) => invalid(
                        self.path,
                        self.key(&path),
                        format!(
                            "unknown key{expected}, or a key every target takes ({}), or a secret as `x`, `x_env` or `x_file`",
                            COMMON_KEYS.join(", ")
                        ),
                    ),
                    None => invalid(self.path, self.key.as_str(), problem),
                }
            })
    }

    /// Takes an optional string key (for keys shared by several kinds, such
    /// as the AWS access keys, read before the kind's own struct).
    pub fn take_string(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.table.remove(name) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(name, "must be a string")),
        }
    }

    /// Resolves a secret given as `name` (inline), `name_env` (an environment
    /// variable's name) or `name_file` (a path): exactly one must be set.
    pub fn secret(&mut self, name: &str) -> Result<Secret, ConfigError> {
        self.optional_secret(name)?.ok_or_else(|| {
            self.invalid(
                name,
                format!("set exactly one of `{name}`, `{name}_env` (an environment variable's name) or `{name}_file` (a path); none is set"),
            )
        })
    }

    /// Like [`TargetKeys::secret`], but none of the three may be set.
    pub fn optional_secret(&mut self, name: &str) -> Result<Option<Secret>, ConfigError> {
        // Read all three before judging, so none is left behind as unknown.
        let inline = self.take_string(name);
        let env = self.take_string(&format!("{name}_env"));
        let file = self.take_string(&format!("{name}_file"));
        let (inline, env, file) = (inline?, env?, file?);
        let given = [inline.is_some(), env.is_some(), file.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if given == 0 {
            return Ok(None);
        }
        if given > 1 {
            return Err(self.invalid(
                name,
                format!("set exactly one of `{name}`, `{name}_env` (an environment variable's name) or `{name}_file` (a path); more than one is set"),
            ));
        }
        if let Some(value) = inline {
            return Ok(Some(Secret(value)));
        }
        if let Some(var) = env {
            return match std::env::var(&var) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(Secret(value.trim().to_string()))),
                _ => Err(self.invalid(
                    &format!("{name}_env"),
                    format!(
                        "environment variable {var} is not set or empty; export it before starting"
                    ),
                )),
            };
        }
        let path = PathBuf::from(file.expect("one of three is set"));
        match std::fs::read_to_string(&path) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(Secret(value.trim().to_string()))),
            Ok(_) => Err(self.invalid(
                &format!("{name}_file"),
                format!("{} is empty", path.display()),
            )),
            Err(err) => Err(self.invalid(
                &format!("{name}_file"),
                format!("{} cannot be read: {err}", path.display()),
            )),
        }
    }

    /// A duration key of the kind (`heartbeat.interval`), or its default.
    pub fn duration(
        &self,
        sub: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(v) => parse_duration(self.path, &self.key(sub), v),
            None => Ok(default),
        }
    }

    /// Checks that a `tls_ca_file` (or another file key) names a readable file.
    pub fn readable_file(&self, sub: &str, path: Option<&Path>) -> Result<(), ConfigError> {
        match path {
            Some(path) if !path.is_file() => {
                Err(self.invalid(sub, format!("{} is not a readable file", path.display())))
            }
            _ => Ok(()),
        }
    }
}

fn invalid(path: &Path, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        key: key.into(),
        problem: problem.into(),
    }
}

fn parse_duration(path: &Path, key: &str, value: &str) -> Result<Duration, ConfigError> {
    let parsed = humantime::parse_duration(value).map_err(|err| {
        invalid(
            path,
            key,
            format!(
                "`{value}` is not a duration ({err}); write it like \"5s\", \"2m\" or \"500ms\""
            ),
        )
    })?;
    if parsed.is_zero() {
        return Err(invalid(path, key, "must be greater than zero"));
    }
    Ok(parsed)
}

/// Where `field` is written in `table` (`heartbeat.intervall`), looking at
/// the top level first, then in nested tables.
fn path_of(table: &toml::Table, field: &str) -> Option<String> {
    if table.contains_key(field) {
        return Some(field.to_string());
    }
    table.iter().find_map(|(name, value)| match value {
        toml::Value::Table(inner) => path_of(inner, field).map(|p| format!("{name}.{p}")),
        _ => None,
    })
}

/// A serde error of a table deserialized on its own: its message, without
/// the "TOML parse error" framing (there is no position to show).
fn serde_message(err: &toml::de::Error) -> String {
    err.message().trim_end().to_string()
}

/// Names that become label values and heartbeat keys: short and plain.
fn is_label_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// A region as people write it (`eu-west-1`, `westeurope`, `dc-2`): short,
/// because it is a label value and a column on a bridge-call screen.
fn is_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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
        let pg = target
            .spec::<crate::kinds::postgres::PostgresTarget>()
            .expect("a postgres target");
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
    fn unknown_keys_are_named_with_their_full_path() {
        let err = error_of(&GOOD.replace("rpo_budget = \"5s\"", "rpo_budgt = \"5s\""));
        assert!(
            err.contains("key `postgres[0] (\"erp-db\").rpo_budgt`: unknown key"),
            "{err}"
        );
        assert!(err.contains("a key every target takes"), "{err}");
        let err = error_of(&GOOD.replace("interval = \"1s\"", "intervall = \"1s\""));
        assert!(
            err.contains("key `postgres[0] (\"erp-db\").heartbeat.intervall`: unknown key; expected one of `interval`"),
            "{err}"
        );
        assert!(!err.contains("every target takes"), "{err}");
        let err = error_of(&format!("{GOOD}\n[[postgress]]\nname = \"x\"\n"));
        assert!(
            err.contains("key `postgress`: unknown section")
                && err.contains(" postgres,")
                && err.contains(" sqs"),
            "{err}"
        );
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
    fn exporter_region_is_optional_short_and_label_safe() {
        assert_eq!(load(GOOD).unwrap().region, None);
        let with = |region: &str| {
            load(&format!(
                "[exporter]\ninstance = \"dr\"\nregion = \"{region}\"\n{GOOD}"
            ))
        };
        let config = with("eu-central-1").unwrap();
        assert_eq!(config.region.as_deref(), Some("eu-central-1"));
        assert_eq!(config.instance, "dr");
        for bad in ["", "eu west 1", "eu-west-1\\\"", &"x".repeat(64)] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("test.toml"), "{err}");
            assert!(err.contains("key `exporter.region`"), "{err}");
            assert!(err.contains("like \"eu-west-1\""), "{err}");
        }
        let err = error_of(&format!("[exporter]\nregoin = \"x\"\n{GOOD}"));
        assert!(err.contains("regoin"), "{err}");
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
