//! Log setup: `--log.level` and `--log.format=logfmt|json`, to stderr.
//!
//! Whatever the level asked for, the AWS SDK's own events are kept at
//! `info` and above: its debug and trace events describe credentials and
//! signing (the access key id among them), which must never reach a log.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "logfmt" => Ok(LogFormat::Logfmt),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}`: use logfmt or json")),
        }
    }
}

/// The levels `--log.level` takes on its own.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Checks `--log.level`: a level (`info`), or filter directives whose every
/// part ends in a level (`info,rpo_exporter=debug`). The filter library
/// would take `warnn` as the name of a module to trace and, with nothing
/// else enabled, log nothing at all without a word.
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    let is_level = |word: &str| LEVELS.contains(&word.trim().to_ascii_lowercase().as_str());
    let bad = |why: String| {
        format!(
            "--log.level `{level}`: {why}; use one of {} (or directives like info,rpo_exporter=debug)",
            LEVELS.join(", ")
        )
    };
    if level.trim().is_empty() {
        return Err(bad("empty".to_string()));
    }
    for part in level.split(',') {
        let word = match part.rsplit_once('=') {
            Some((_, word)) => word,
            None => part,
        };
        if !is_level(word) {
            return Err(bad(format!("`{}` is not a level", word.trim())));
        }
    }
    EnvFilter::try_new(level).map_err(|e| bad(e.to_string()))
}

/// Installs the global subscriber. `level` is a level (`info`) or filter
/// directives (`info,rpo_exporter=debug`), checked by [`parse_level`].
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = parse_level(level)?;
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(|metadata| !is_capped(metadata)));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
        LogFormat::Logfmt => registry.with(layer.event_format(Logfmt)).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Events no level may show: the AWS SDK's (`aws_config`, `aws_sigv4`,
/// `aws_smithy_runtime`, ...) below `info`, which log credentials being
/// loaded and requests being signed.
fn is_capped(metadata: &Metadata<'_>) -> bool {
    metadata.target().starts_with("aws_") && *metadata.level() > Level::INFO
}

/// `ts=… level=… msg="…" key=value`, as the Prometheus exporters log.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(writer, "ts={ts} level={level}")?;
        if let Some(msg) = fields.message {
            write!(writer, " msg={}", quote(&msg))?;
        }
        writer.write_str(&fields.rest)?;
        writeln!(writer)
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(value));
        }
    }
}

fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=')
    {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_level_is_refused_naming_the_flag() {
        for good in [
            "info",
            "WARN",
            "debug",
            "off",
            "info,rpo_exporter=debug",
            "warn,aws_config=error",
        ] {
            assert!(parse_level(good).is_ok(), "{good}");
        }
        for bad in [
            "warnn",
            "",
            "info,rpo_exporter",
            "rpo_exporter=loud",
            "verbose",
        ] {
            let problem = parse_level(bad).unwrap_err();
            assert!(
                problem.starts_with(&format!("--log.level `{bad}`")),
                "{problem}"
            );
            assert!(problem.contains("error, warn, info, debug"), "{problem}");
        }
    }
}
