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
use std::hash::{Hash as _, Hasher as _};
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

/// The largest configuration file read (a config is a few KB, 10,000
/// targets about 1.5 MB; this bounds what a wrong path such as `/dev/zero`
/// can cost).
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;
/// The largest secret (`*_file`) or CA file read.
pub const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;

/// The range a duration key accepts. Every duration is bounded: a typo such
/// as `"1ms"` for `"1m"` must not poll a database hundreds of times a
/// second, and a huge timeout must not overflow a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationBounds {
    pub min: Duration,
    pub max: Duration,
}

impl DurationBounds {
    const fn new(min: Duration, max: Duration) -> DurationBounds {
        DurationBounds { min, max }
    }

    /// `value` if it lies within the bounds; otherwise what to write instead.
    pub fn check(self, value: Duration) -> Result<Duration, String> {
        if value < self.min {
            Err(format!(
                "{} is too short; use at least {} (the bounds are {} to {})",
                humantime::format_duration(value),
                humantime::format_duration(self.min),
                humantime::format_duration(self.min),
                humantime::format_duration(self.max),
            ))
        } else if value > self.max {
            Err(format!(
                "{} is too long; use at most {} (the bounds are {} to {})",
                humantime::format_duration(value),
                humantime::format_duration(self.max),
                humantime::format_duration(self.min),
                humantime::format_duration(self.max),
            ))
        } else {
            Ok(value)
        }
    }
}

const MILLISECOND: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `poll_interval`: 100 ms to 1 day.
pub const POLL_INTERVAL_BOUNDS: DurationBounds =
    DurationBounds::new(Duration::from_millis(100), DAY);
/// `timeout`: 10 ms to 1 hour.
pub const TIMEOUT_BOUNDS: DurationBounds = DurationBounds::new(Duration::from_millis(10), HOUR);
/// `stale_after`: 100 ms to 1 day (and longer than `poll_interval`).
pub const STALE_AFTER_BOUNDS: DurationBounds = DurationBounds::new(Duration::from_millis(100), DAY);
/// `rpo_budget`: 1 ms to 30 days.
pub const RPO_BUDGET_BOUNDS: DurationBounds =
    DurationBounds::new(MILLISECOND, Duration::from_secs(30 * 86_400));
/// A kind's cadence keys (`heartbeat.interval`, `canary.interval`): 100 ms
/// to 1 hour.
pub const INTERVAL_BOUNDS: DurationBounds = DurationBounds::new(Duration::from_millis(100), HOUR);
/// Any other duration key of a kind: 1 ms to 1 day.
pub const KIND_DURATION_BOUNDS: DurationBounds = DurationBounds::new(MILLISECOND, DAY);

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
    /// `[cloudwatch]`: publish the verdict to CloudWatch (see
    /// [`crate::publish`]); `None` when the table is absent.
    pub cloudwatch: Option<crate::publish::CloudWatchPublish>,
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
    /// Equal for two loads of the file exactly when the kind's own keys,
    /// and the secrets and files they name (as read), are: a reload keeps
    /// the probe (its connections and history) only then.
    pub settings_digest: SettingsDigest,
}

/// A keyed hash of a target's kind-specific settings, secrets included.
/// Never printed (`Debug` hides it) and keyed per process, so it says
/// nothing about a secret even if it were.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SettingsDigest(u64);

impl fmt::Debug for SettingsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SettingsDigest(..)")
    }
}

/// The hasher of [`SettingsDigest`]s: keyed once per process, so two
/// loads of the same file (a reload) hash alike.
fn settings_hasher() -> std::collections::hash_map::DefaultHasher {
    use std::hash::BuildHasher as _;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher()
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
pub struct Secret {
    value: String,
    /// Given as `*_env`/`*_file` and not read (`validate --no-secrets`):
    /// checks that need the value skip it.
    unresolved: bool,
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            unresolved: false,
        }
    }

    /// A secret named but not read (`validate --no-secrets`).
    fn unresolved() -> Secret {
        Secret {
            value: String::new(),
            unresolved: true,
        }
    }

    /// The secret itself, for the one place that must hand it to a driver.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// True for a secret `validate --no-secrets` did not read: a check of
    /// its value (a URL's form) is skipped, never failed.
    pub fn is_unresolved(&self) -> bool {
        self.unresolved
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
    #[error("config file {path}: {problem}")]
    Read { path: PathBuf, problem: FileProblem },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// Why a file named by the configuration (or the configuration itself)
/// was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("cannot be read: {0}")]
    Io(#[from] std::io::Error),
    #[error("is {0}, not a regular file; name a regular file")]
    NotRegular(&'static str),
    #[error("is larger than {limit} bytes; is it the right file?")]
    TooLarge { limit: u64 },
}

/// Reads a regular file of at most `limit` bytes. Checked with the file's
/// metadata before reading (a FIFO or a device is refused, never opened for
/// reading), and the read itself is capped (a file that grows meanwhile).
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, FileProblem> {
    use std::io::Read as _;
    use std::os::unix::fs::FileTypeExt as _;
    let metadata = std::fs::metadata(path)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        return Err(FileProblem::NotRegular(if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO (named pipe)"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "a device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }));
    }
    if metadata.len() > limit {
        return Err(FileProblem::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(FileProblem::TooLarge { limit });
    }
    Ok(bytes)
}

/// A TOML syntax error as position and key, never the line itself: the
/// line may hold an inline secret (`primary_url = "postgres://u:pw@…`).
fn syntax_error_message(text: &str, err: &toml::de::Error) -> String {
    let what = without_values(err.message().trim_end());
    let Some(span) = err.span() else {
        return format!("not valid TOML: {what}");
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let mut at = format!("line {line}, column {column}");
    if let Some(key) = key_of_line(line_text) {
        at.push_str(&format!(", key `{key}`"));
    }
    if let Some(table) = text[..line_start].lines().rev().find_map(table_header) {
        at.push_str(&format!(" in {table}"));
    }
    format!("not valid TOML at {at}: {what} (the line is not shown: it may hold a secret)")
}

/// The key a `key = value` line assigns, when it is a plain key.
fn key_of_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    is_plain_key(key).then_some(key)
}

/// `[web]` or `[[postgres]]`, when the line is such a header.
fn table_header(line: &str) -> Option<String> {
    let line = line.trim();
    let (open, close) = if line.starts_with("[[") {
        ("[[", "]]")
    } else {
        ("[", "]")
    };
    let name = line.strip_prefix(open)?.split(close).next()?.trim();
    (line.starts_with('[') && is_plain_key(name)).then(|| format!("{open}{name}{close}"))
}

/// A bare TOML key (dotted allowed): safe to show, never a secret's value.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A deserializer's message with the values it quotes taken out: what it
/// found (`invalid type: string "postgres://u:pw@h", expected a boolean`)
/// may be a secret in the wrong key, so only its type is kept; an unknown
/// variant is not repeated; any other quoted text is kept only when it is
/// a plain key name.
fn without_values(message: &str) -> String {
    // The words before a quoted value that must go, whatever it looks like.
    const VALUE_BEFORE: [&str; 7] = [
        "string ",
        "integer ",
        "floating point ",
        "boolean ",
        "character ",
        "unknown variant ",
        "value ",
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest.as_bytes()[open] as char;
        let (before, after) = rest.split_at(open);
        // The quoted text ends at the next unescaped quote of the same kind.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices().skip(1) {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                end = Some(i);
                break;
            }
        }
        let Some(end) = end else {
            // Unbalanced: drop everything after the opening quote.
            out.push_str(before);
            out.push_str("<redacted>");
            return out;
        };
        let quoted = &after[1..end];
        if VALUE_BEFORE.iter().any(|w| before.ends_with(w)) {
            out.push_str(before.trim_end());
        } else if is_plain_key(quoted) {
            out.push_str(before);
            out.push(quote);
            out.push_str(quoted);
            out.push(quote);
        } else {
            out.push_str(before);
            out.push_str("<redacted>");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
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
const SECTIONS: [&str; 5] = ["exporter", "web", "defaults", "group", "cloudwatch"];

// ---------------------------------------------------------------------------
// Loading and validation.

impl Config {
    /// Reads, parses and validates a configuration file. The file must be a
    /// regular file of at most [`MAX_CONFIG_FILE_BYTES`] (a FIFO would hang,
    /// `/dev/zero` would be read until memory runs out).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_config_text(path)?, path, true)
    }

    /// Like [`Config::load`], but secrets given as `*_env` or `*_file` are
    /// not read (`validate --no-secrets`, for CI and pull requests): every
    /// other key is checked. Only for validating: the result cannot poll
    /// the targets whose secrets it did not read.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_config_text(path)?, path, false)
    }

    /// Parses and validates configuration text; `path` is used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, path, true)
    }

    fn parse(text: &str, path: &Path, resolve_secrets: bool) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: syntax_error_message(text, &err),
                })?;
        ConfigFile {
            path,
            resolve_secrets,
        }
        .validate(table)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The configured groups' names, for a message about an unknown one.
    pub fn group_names(&self) -> String {
        self.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A listen address: `host:port` (`0.0.0.0:9798`, `[::]:9798`), or
/// `:port` for every interface (IPv4), as the Prometheus exporters take it.
pub fn parse_listen_address(text: &str) -> Option<SocketAddr> {
    match text.strip_prefix(':') {
        Some(port) => Some(SocketAddr::from(([0, 0, 0, 0], port.parse::<u16>().ok()?))),
        None => text.parse().ok(),
    }
}

/// The configuration file's text: a regular file of bounded size, UTF-8.
fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        read_regular_file(path, MAX_CONFIG_FILE_BYTES).map_err(|problem| ConfigError::Read {
            path: path.to_owned(),
            problem,
        })?;
    String::from_utf8(bytes).map_err(|err| ConfigError::Parse {
        path: path.to_owned(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            err.utf8_error().valid_up_to()
        ),
    })
}

/// The file being validated, for messages.
struct ConfigFile<'a> {
    path: &'a Path,
    /// False for `validate --no-secrets`: `*_env`/`*_file` are not read.
    resolve_secrets: bool,
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
            Some(value) => {
                deserialize(value).map_err(|err| self.invalid(err.key_under(name), err.problem))
            }
        }
    }

    /// The `[[group]]` tables, each deserialized on its own so an error
    /// names `group[i]`.
    fn groups(&self, table: &mut toml::Table) -> Result<Vec<RawGroup>, ConfigError> {
        let entries = match table.remove("group") {
            None => return Ok(Vec::new()),
            Some(toml::Value::Array(entries)) => entries,
            Some(_) => return Err(self.invalid("group", "write each group as a [[group]] table")),
        };
        entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                deserialize(entry)
                    .map_err(|err| self.invalid(err.key_under(&format!("group[{i}]")), err.problem))
            })
            .collect()
    }

    fn validate(&self, mut table: toml::Table) -> Result<Config, ConfigError> {
        let exporter: RawExporter = self.section(&mut table, "exporter")?;
        let web: RawWeb = self.section(&mut table, "web")?;
        let raw_defaults: RawDefaults = self.section(&mut table, "defaults")?;
        let raw_groups = self.groups(&mut table)?;
        let raw_cloudwatch = match table.remove("cloudwatch") {
            None => None,
            Some(toml::Value::Table(section)) => Some(section),
            Some(_) => return Err(self.invalid("cloudwatch", "write it as one [cloudwatch] table")),
        };
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
            Some(addr) => parse_listen_address(addr).ok_or_else(|| {
                self.invalid(
                    "web.listen_address",
                    "not an address; write it like \"0.0.0.0:9798\", \"[::]:9798\" or \":9798\" (every interface)",
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
                    POLL_INTERVAL_BOUNDS,
                )?,
                timeout: self.optional_duration(
                    "defaults.timeout",
                    raw_defaults.timeout.as_deref(),
                    DEFAULT_TIMEOUT,
                    TIMEOUT_BOUNDS,
                )?,
                stale_after: self.optional_duration(
                    "defaults.stale_after",
                    raw_defaults.stale_after.as_deref(),
                    DEFAULT_STALE_AFTER,
                    STALE_AFTER_BOUNDS,
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
            let rpo_budget = self.duration(
                &format!("{key}.rpo_budget"),
                &group.rpo_budget,
                RPO_BUDGET_BOUNDS,
            )?;
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

        let cloudwatch = raw_cloudwatch
            .map(|section| {
                crate::publish::parse_section(
                    self.path,
                    section,
                    region.as_deref(),
                    self.resolve_secrets,
                )
            })
            .transpose()?;

        Ok(Config {
            source: self.path.to_owned(),
            cloudwatch,
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
        // Name the target in a type error of a common key when its name is
        // already readable.
        let named_key = match common.get("name") {
            Some(toml::Value::String(name)) if is_label_safe_name(name) => {
                format!("{key} (\"{name}\")")
            }
            _ => key.clone(),
        };
        let common: RawCommon = deserialize(toml::Value::Table(common))
            .map_err(|err| self.invalid(err.key_under(&named_key), err.problem))?;
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

        let mut digest = settings_hasher();
        // The kind's keys as written (a Table serializes in a fixed order).
        toml::to_string(&entry)
            .unwrap_or_default()
            .hash(&mut digest);
        let mut keys = TargetKeys {
            path: self.path,
            key: key.clone(),
            name: common.name.clone(),
            table: entry,
            digest,
            resolve_secrets: self.resolve_secrets,
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
            RPO_BUDGET_BOUNDS,
        )?;
        let poll_interval = self.optional_duration(
            &format!("{key}.poll_interval"),
            common.poll_interval.as_deref(),
            defaults.poll_interval,
            POLL_INTERVAL_BOUNDS,
        )?;
        let timeout = self.optional_duration(
            &format!("{key}.timeout"),
            common.timeout.as_deref(),
            defaults.timeout,
            TIMEOUT_BOUNDS,
        )?;
        let stale_after = self.optional_duration(
            &format!("{key}.stale_after"),
            common.stale_after.as_deref(),
            defaults.stale_after,
            STALE_AFTER_BOUNDS,
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
            settings_digest: SettingsDigest(keys.digest.finish()),
        })
    }

    fn duration(
        &self,
        key: &str,
        value: &str,
        bounds: DurationBounds,
    ) -> Result<Duration, ConfigError> {
        parse_duration(self.path, key, value, bounds)
    }

    fn optional_duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
        bounds: DurationBounds,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(v) => self.duration(key, v, bounds),
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
    /// Hashes what the keys resolve to from outside the file (secrets from
    /// the environment or files, the files named), for [`SettingsDigest`].
    digest: std::collections::hash_map::DefaultHasher,
    /// False for `validate --no-secrets`: `*_env`/`*_file` are not read.
    resolve_secrets: bool,
}

impl<'a> TargetKeys<'a> {
    /// The keys of a section that is not a target but takes keys the way
    /// targets do (`[cloudwatch]` takes the AWS access keys): every error
    /// names `key.sub`.
    pub(crate) fn section(
        path: &'a Path,
        key: &str,
        table: toml::Table,
        resolve_secrets: bool,
    ) -> TargetKeys<'a> {
        TargetKeys {
            path,
            key: key.to_string(),
            name: String::new(),
            table,
            digest: settings_hasher(),
            resolve_secrets,
        }
    }
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
        deserialize(toml::Value::Table(table)).map_err(|err| {
            let problem = err.problem.clone();
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
                None => invalid(self.path, err.key_under(&self.key), problem),
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
            return Ok(Some(Secret::new(value)));
        }
        if !self.resolve_secrets {
            // Named, not read: the name itself must still be usable.
            let (key, named) = match (&env, &file) {
                (Some(var), _) => (format!("{name}_env"), var),
                (_, Some(path)) => (format!("{name}_file"), path),
                _ => unreachable!("one of three is set"),
            };
            if named.trim().is_empty() {
                return Err(self.invalid(&key, "is empty; name an environment variable or a file"));
            }
            return Ok(Some(Secret::unresolved()));
        }
        if let Some(var) = env {
            return match std::env::var(&var) {
                Ok(value) if !value.trim().is_empty() => {
                    value.trim().hash(&mut self.digest);
                    Ok(Some(Secret::new(value.trim())))
                }
                _ => Err(self.invalid(
                    &format!("{name}_env"),
                    format!(
                        "environment variable {var} is not set or empty; export it before starting"
                    ),
                )),
            };
        }
        let path = PathBuf::from(file.expect("one of three is set"));
        let key = format!("{name}_file");
        let bytes = read_regular_file(&path, MAX_SECRET_FILE_BYTES)
            .map_err(|problem| self.invalid(&key, format!("{} {problem}", path.display())))?;
        // Never echo the bytes: the decoding error says where, not what.
        let value = String::from_utf8(bytes)
            .map_err(|_| self.invalid(&key, format!("{} is not UTF-8 text", path.display())))?;
        if value.trim().is_empty() {
            return Err(self.invalid(&key, format!("{} is empty", path.display())));
        }
        // A rotated secret file is a changed setting.
        value.trim().hash(&mut self.digest);
        Ok(Some(Secret::new(value.trim())))
    }

    /// A duration key of the kind (`heartbeat.interval`), or its default.
    /// A key named `…interval` is a write or poll cadence and takes
    /// [`INTERVAL_BOUNDS`]; any other takes [`KIND_DURATION_BOUNDS`].
    pub fn duration(
        &self,
        sub: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let bounds = if sub.ends_with("interval") {
            INTERVAL_BOUNDS
        } else {
            KIND_DURATION_BOUNDS
        };
        match value {
            Some(v) => parse_duration(self.path, &self.key(sub), v, bounds),
            None => Ok(default),
        }
    }

    /// Checks that a `tls_ca_file` (or another file key) names a readable
    /// regular file of bounded size.
    pub fn readable_file(&mut self, sub: &str, path: Option<&Path>) -> Result<(), ConfigError> {
        match path {
            Some(path) => {
                let bytes = read_regular_file(path, MAX_SECRET_FILE_BYTES).map_err(|problem| {
                    self.invalid(sub, format!("{} {problem}", path.display()))
                })?;
                // A replaced CA bundle is a changed setting.
                bytes.hash(&mut self.digest);
                Ok(())
            }
            None => Ok(()),
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

fn parse_duration(
    path: &Path,
    key: &str,
    value: &str,
    bounds: DurationBounds,
) -> Result<Duration, ConfigError> {
    // The value is not echoed: a secret pasted into the wrong key must not
    // come back in an error. humantime's own messages quote parts of it.
    let parsed = humantime::parse_duration(value).map_err(|err| {
        let what = match err {
            humantime::DurationError::Empty => "it is empty".to_string(),
            humantime::DurationError::NumberExpected(at) => {
                format!("a number was expected at character {}", at + 1)
            }
            humantime::DurationError::InvalidCharacter(at) => {
                format!("invalid character at position {}", at + 1)
            }
            humantime::DurationError::UnknownUnit { start, .. } => format!(
                "unknown unit at character {} (units: ms, s, m, h, d)",
                start + 1
            ),
            humantime::DurationError::NumberOverflow => "the number is too large".to_string(),
        };
        invalid(
            path,
            key,
            format!("not a duration ({what}); write it like \"5s\", \"2m\" or \"500ms\""),
        )
    })?;
    bounds
        .check(parsed)
        .map_err(|problem| invalid(path, key, problem))
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

/// Why a part of the file could not be deserialized: the key below the
/// part (when the deserializer could point at one) and the problem, without
/// the values it quotes (see [`without_values`]).
struct DeError {
    key: Option<String>,
    problem: String,
}

impl DeError {
    /// The full key: `prefix.key`, or `prefix` when no key is known.
    fn key_under(&self, prefix: &str) -> String {
        match &self.key {
            Some(key) => format!("{prefix}.{key}"),
            None => prefix.to_string(),
        }
    }
}

/// Deserializes a part of the file. `Value::try_into` cannot say which key
/// held a value of the wrong type, so the part is written back as TOML text
/// (never shown) and read from there: the deserializer's span then points at
/// the offending value, whose line names the key.
fn deserialize<T: DeserializeOwned>(value: toml::Value) -> Result<T, DeError> {
    #[derive(Deserialize)]
    struct Wrapped<T> {
        v: T,
    }
    let mut table = toml::Table::new();
    table.insert("v".to_string(), value);
    let Ok(text) = toml::to_string(&table) else {
        // Not expected for a table parsed from TOML; fall back to no key.
        let value = table.remove("v").expect("inserted above");
        return value.try_into().map_err(|err: toml::de::Error| DeError {
            key: None,
            problem: without_values(err.message().trim_end()),
        });
    };
    toml::from_str::<Wrapped<T>>(&text)
        .map(|wrapped| wrapped.v)
        .map_err(|err| {
            let problem = without_values(err.message().trim_end());
            // Only a wrong value has a span worth naming; a missing or unknown
            // field is named by the message itself.
            let key = if problem.starts_with("invalid ") {
                err.span().and_then(|span| key_path_at(&text, span.start))
            } else {
                None
            };
            DeError { key, problem }
        })
}

/// The dotted key of the `key = value` line holding byte `at` of `text`
/// (TOML written by `toml::to_string` under a table `v`), without the `v`.
fn key_path_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let key = key_of_line(text[line_start..].lines().next().unwrap_or(""))?;
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|line| {
            let line = line.trim();
            line.starts_with('[').then(|| {
                line.trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_string()
            })
        })
        .unwrap_or_default();
    let path = match table.strip_prefix("v") {
        Some("") | None => key.to_string(),
        Some(rest) => format!("{}.{key}", rest.trim_start_matches('.')),
    };
    Some(path)
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
    fn bad_duration_is_named_without_echoing_it() {
        let err = error_of(&GOOD.replace("\"5s\"", "\"5 parsecs\""));
        assert!(err.contains("rpo_budget"), "{err}");
        assert!(err.contains("unknown unit at character 3"), "{err}");
        assert!(!err.contains("parsecs"), "{err}");
    }

    #[test]
    fn every_duration_is_bounded() {
        for (from, to, key, words) in [
            (
                "poll_interval = \"2s\"",
                "poll_interval = \"1ns\"",
                "defaults.poll_interval",
                "at least 100ms",
            ),
            (
                "poll_interval = \"2s\"",
                "poll_interval = \"2days\"",
                "defaults.poll_interval",
                "at most 1day",
            ),
            (
                "stale_after = \"20s\"",
                "stale_after = \"2days\"",
                "defaults.stale_after",
                "at most 1day",
            ),
            (
                "rpo_budget = \"5s\"",
                "timeout = \"2h\"",
                "erp-db\").timeout",
                "at most 1h",
            ),
            (
                "rpo_budget = \"5s\"",
                "timeout = \"1ns\"",
                "erp-db\").timeout",
                "at least 10ms",
            ),
            (
                "rpo_budget = \"5s\"",
                "rpo_budget = \"60days\"",
                "erp-db\").rpo_budget",
                "at most 30days",
            ),
            (
                "rpo_budget = \"60s\"",
                "rpo_budget = \"0s\"",
                "group[0].rpo_budget",
                "at least 1ms",
            ),
            (
                "interval = \"1s\"",
                "interval = \"1ms\"",
                "heartbeat.interval",
                "at least 100ms",
            ),
            (
                "interval = \"1s\"",
                "interval = \"2h\"",
                "heartbeat.interval",
                "at most 1h",
            ),
            // 2^64 s: humantime itself refuses it; no deadline can overflow.
            (
                "rpo_budget = \"5s\"",
                "timeout = \"18446744073709551616s\"",
                "erp-db\").timeout",
                "too large",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let err = error_of(&GOOD.replacen(from, to, 1));
            assert!(err.contains(key) && err.contains(words), "{to}: {err}");
        }
    }

    #[test]
    fn syntax_errors_give_the_position_never_the_line() {
        for (broken, key) in [
            // An unbalanced quote.
            (
                GOOD.replace(
                    "primary_url = \"postgres://monitor:hunter2@127.0.0.1:5432/erp\"",
                    "primary_url = \"postgres://monitor:hunter2@127.0.0.1:5432/erp",
                ),
                "primary_url",
            ),
            // A duplicate key.
            (
                GOOD.replace(
                    "replica_url =",
                    "primary_url = \"postgres://x:hunter2@h/db\"\nreplica_url =",
                ),
                "primary_url",
            ),
            // A bare word where a value belongs.
            (
                GOOD.replace(
                    "primary_url = \"postgres://monitor:hunter2@127.0.0.1:5432/erp\"",
                    "primary_url = postgres://monitor:hunter2@127.0.0.1:5432/erp",
                ),
                "primary_url",
            ),
        ] {
            let err = error_of(&broken);
            assert!(err.contains("test.toml"), "{err}");
            assert!(
                err.contains("at line 1") && err.contains(", column "),
                "{err}"
            );
            assert!(err.contains(&format!("key `{key}`")), "{err}");
            assert!(err.contains("in [[postgres]]"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn type_errors_name_the_type_never_the_value() {
        for (from, to) in [
            ("create_table", "heartbeat = { interval = \"1s\", table = \"rpo_heartbeat\", create_table = \"postgres://u:hunter2@h/db\" }"),
            ("rpo_budget", "rpo_budget = 12345678"),
            ("primary_url", "primary_url = 12345678"),
            ("primary_url", "primary_url = [\"postgres://u:hunter2@h/db\"]"),
            ("tls_ca_file", "tls_ca_file = { path = \"hunter2\" }"),
        ] {
            let text = GOOD
                .replace("heartbeat = { interval = \"1s\", table = \"rpo_heartbeat\" }", "")
                .replace("rpo_budget = \"5s\"", "")
                .replace("primary_url = \"postgres://monitor:hunter2@127.0.0.1:5432/erp\"", "primary_url = \"postgres://monitor@127.0.0.1:5432/erp\"");
            let text = if from == "primary_url" {
                text.replace("primary_url = \"postgres://monitor@127.0.0.1:5432/erp\"", to)
            } else {
                format!("{text}{to}\n")
            };
            let err = error_of(&text);
            assert!(err.contains("erp-db"), "{to}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("12345678"), "{to}: {err}");
        }
    }

    #[test]
    fn quoted_values_are_taken_out_of_deserializer_messages() {
        assert_eq!(
            without_values(r#"invalid type: string "postgres://u:p\"w@h", expected a boolean"#),
            "invalid type: string, expected a boolean"
        );
        assert_eq!(
            without_values("invalid type: integer `1234`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            without_values("unknown variant `s3cret`, expected `planned` or `unplanned`"),
            "unknown variant, expected `planned` or `unplanned`"
        );
        assert_eq!(
            without_values("unknown field `rpo_budgt`, expected one of `heartbeat`, `tls_ca_file`"),
            "unknown field `rpo_budgt`, expected one of `heartbeat`, `tls_ca_file`"
        );
        assert_eq!(
            without_values("duplicate key `postgres://u:pw@h`"),
            "duplicate key <redacted>"
        );
        assert_eq!(without_values("bad `unbalanced"), "bad <redacted>");
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile_dir();
        // A FIFO would block the read forever; it is refused from its metadata.
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = Config::load(&fifo).unwrap_err().to_string();
        assert!(
            err.contains("FIFO") && err.contains("not a regular file"),
            "{err}"
        );
        // A device would be read until memory runs out.
        let err = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a device"), "{err}");
        let err = Config::load(&dir).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_FILE_BYTES as usize + 1]).unwrap();
        let err = Config::load(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        // The same for a secret file.
        let err = error_of(&GOOD.replace(
            "replica_url = \"postgres://monitor@127.0.0.1:5433/erp\"",
            &format!("replica_url_file = \"{}\"", fifo.display()),
        ));
        assert!(
            err.contains("replica_url_file") && err.contains("FIFO"),
            "{err}"
        );
        let err = error_of(&GOOD.replace(
            "replica_url = \"postgres://monitor@127.0.0.1:5433/erp\"",
            "replica_url_file = \"/dev/zero\"",
        ));
        assert!(
            err.contains("replica_url_file") && err.contains("a device"),
            "{err}"
        );
        let err = error_of(&format!("{GOOD}tls_ca_file = \"{}\"\n", fifo.display()));
        assert!(err.contains("tls_ca_file") && err.contains("FIFO"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory of this test's own (the crate has no tempfile dependency).
    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rpo-config-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
