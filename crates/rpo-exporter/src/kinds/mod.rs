//! THE list of kinds, and what a kind is.
//!
//! A kind is one file (or, for the AWS kinds, one file in `aws/` beside the
//! shared AWS plumbing): its config keys and their validation, its probe and
//! heartbeat writer, its parsers with their captured-output tests, and its
//! detail series. Each file exports one [`KindDef`] named `KIND`; [`ALL`]
//! lists them. Adding a kind is a new file plus one line in [`ALL`] (and
//! its `mod` line).

pub mod aws;
pub mod mysql;
pub mod opensearch;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod redis_stream;
pub mod sql_queue;

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, Defaults, Target, TargetKeys};
use crate::metric_def::MetricDef;
use crate::probe::{Probe, ProbeContext, ProbeError};

/// Every kind, in the order their targets are listed.
pub static ALL: &[&KindDef] = &[
    &postgres::KIND,
    &mysql::KIND,
    &redis::KIND,
    &redis_stream::KIND,
    &rabbitmq::KIND,
    &sql_queue::KIND,
    &opensearch::KIND,
    &aws::rds::KIND,
    &aws::aurora_global::KIND,
    &aws::elasticache_global::KIND,
    &aws::s3::KIND,
    &aws::efs::KIND,
    &aws::sqs::KIND,
];

/// What the rest of the program knows about a kind.
pub struct KindDef {
    /// The kind's name: its `[[name]]` tables and its `kind` label.
    pub name: &'static str,
    /// Validates the kind's own keys of one target (the common keys are
    /// already taken) into its settings.
    pub parse: fn(&mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError>,
    /// The kind's own defaults, where `[defaults]` (meant for databases)
    /// does not fit; see `config::FileDefaults::for_kind`.
    pub defaults: Option<Defaults>,
    /// The shortest timeout a target of this kind accepts, and why.
    pub min_timeout: Option<Duration>,
    pub min_timeout_reason: &'static str,
    /// Calls AWS APIs (its calls are counted in `rpo_aws_api_*`).
    pub aws: bool,
    /// The kind's detail series, declared in its file (see `metric_def`).
    pub detail_families: &'static [&'static MetricDef],
}

impl KindDef {
    /// A kind that takes `[defaults]` as they are (databases, queues).
    pub const fn new(
        name: &'static str,
        parse: fn(&mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError>,
        detail_families: &'static [&'static MetricDef],
    ) -> KindDef {
        KindDef {
            name,
            parse,
            defaults: None,
            min_timeout: None,
            min_timeout_reason: "",
            aws: false,
            detail_families,
        }
    }

    /// An AWS kind: its own defaults, a timeout floor, its calls counted.
    pub const fn aws(
        name: &'static str,
        parse: fn(&mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError>,
        defaults: Defaults,
        detail_families: &'static [&'static MetricDef],
    ) -> KindDef {
        KindDef {
            name,
            parse,
            defaults: Some(defaults),
            min_timeout: Some(aws::config::MIN_AWS_TIMEOUT),
            min_timeout_reason: aws::config::MIN_TIMEOUT_REASON,
            aws: true,
            detail_families,
        }
    }
}

/// One target's validated, kind-specific settings. `Target::spec` gives
/// them back as their concrete type.
pub trait KindSpec: fmt::Debug + Send + Sync + Any {
    /// The heartbeat canary's interval, when the target has one.
    fn heartbeat_interval(&self) -> Option<Duration> {
        None
    }

    /// Builds the target's probe. `context.instance` names this exporter's
    /// heartbeat rows/keys; the AWS kinds count their calls in
    /// `context.aws_calls`. Fails only on local problems (a CA file that
    /// cannot be read); nothing is contacted here.
    fn build(&self, target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError>;

    /// Whether the probe reports which side of the pair accepts writes
    /// (`Measurement::roles`), so promotions, split brain and the loss a
    /// promotion took are followed (see `evidence::promotion`), and a drill
    /// can wait for the target's promotion.
    fn reports_roles(&self) -> bool {
        false
    }
}

/// A kind, as a cheap handle on its [`KindDef`]; compares by name.
#[derive(Clone, Copy)]
pub struct Kind(&'static KindDef);

impl Kind {
    /// The kind of that name, if there is one.
    pub fn named(name: &str) -> Option<Kind> {
        all().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    pub fn def(self) -> &'static KindDef {
        self.0
    }

    pub fn is_aws(self) -> bool {
        self.0.aws
    }
}

/// Every kind, in the order of [`ALL`].
pub fn all() -> impl Iterator<Item = Kind> {
    ALL.iter().map(|def| Kind(def))
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.0.name == other.0.name
    }
}
impl Eq for Kind {}
impl Hash for Kind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state)
    }
}
impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Kind) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kind {
    fn cmp(&self, other: &Kind) -> std::cmp::Ordering {
        self.0.name.cmp(other.0.name)
    }
}
impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// Builds the probe for a target.
pub fn build(target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
    target.spec.build(target, context)
}

/// Each kind's detail families (its `DETAIL_FAMILIES`), for `metrics::catalogue`.
/// A family several kinds publish (`rpo_heartbeat_timestamp_seconds`, the
/// `rpo_queue_*` series) is declared once and listed by each of them.
pub fn detail_families() -> Vec<(Kind, &'static [&'static MetricDef])> {
    all()
        .map(|kind| (kind, kind.def().detail_families))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_plain() {
        let mut names: Vec<&str> = all().map(|k| k.as_str()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a kind is listed twice");
        for name in names {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(Kind::named(name).is_some());
        }
    }
}
