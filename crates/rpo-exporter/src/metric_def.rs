//! What one `rpo_*` metric family is, as data: name, help, type and labels.
//!
//! Every family is declared once as a `static` [`MetricDef`]: the core ones
//! in `metrics::catalogue`, each kind's detail families at the top of that
//! kind's file (listed in its `DETAIL_FAMILIES` slice). The exposition writes
//! `# HELP`/`# TYPE` from the declaration, and the tests compare the README,
//! the alert rules and the dashboards with the catalogue rather than with
//! string literals. This module is neutral ground: kinds use it without
//! importing `metrics`.

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
    Counter,
}

impl MetricType {
    /// As written on a `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
        }
    }
}

/// What one series of a family is about, which fixes its leading labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One series per target: `group`, `target`, `kind`.
    Target,
    /// One series per group: `group`.
    Group,
    /// One series for the whole exporter (what monitoring costs, the build).
    Exporter,
}

impl Scope {
    /// The labels every series of this scope starts with.
    pub const fn base_labels(self) -> &'static [&'static str] {
        match self {
            Scope::Target => &["group", "target", "kind"],
            Scope::Group => &["group"],
            Scope::Exporter => &[],
        }
    }
}

/// One metric family. Build it in a `static` with the `const` constructors:
///
/// ```
/// use rpo_exporter::metric_def::MetricDef;
///
/// pub static SLOT_ACTIVE: MetricDef = MetricDef::gauge(
///     "rpo_postgres_replication_slot_active",
///     "1 when a client is streaming from the replication slot.",
/// )
/// .with_labels(&["slot"]);
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    /// The `# HELP` text: one sentence, no newline.
    pub help: &'static str,
    pub metric_type: MetricType,
    pub scope: Scope,
    /// The labels after the scope's own (`slot`, `reason`, `service`...);
    /// each one takes a bounded set of values.
    pub labels: &'static [&'static str],
}

impl MetricDef {
    /// A per-target gauge with no label beyond `group`, `target`, `kind`.
    pub const fn gauge(name: &'static str, help: &'static str) -> MetricDef {
        MetricDef {
            name,
            help,
            metric_type: MetricType::Gauge,
            scope: Scope::Target,
            labels: &[],
        }
    }

    /// A per-target counter with no label beyond `group`, `target`, `kind`.
    pub const fn counter(name: &'static str, help: &'static str) -> MetricDef {
        MetricDef {
            metric_type: MetricType::Counter,
            ..MetricDef::gauge(name, help)
        }
    }

    /// The same family with these labels after the scope's own.
    pub const fn with_labels(self, labels: &'static [&'static str]) -> MetricDef {
        MetricDef { labels, ..self }
    }

    /// The same family with one series per group instead of per target.
    pub const fn per_group(self) -> MetricDef {
        MetricDef {
            scope: Scope::Group,
            ..self
        }
    }

    /// The same family with one series for the whole exporter.
    pub const fn exporter_wide(self) -> MetricDef {
        MetricDef {
            scope: Scope::Exporter,
            ..self
        }
    }

    /// Every label a series of this family carries, in order.
    pub fn all_labels(&self) -> impl Iterator<Item = &'static str> {
        self.scope
            .base_labels()
            .iter()
            .chain(self.labels.iter())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SLOT_ACTIVE: MetricDef =
        MetricDef::gauge("rpo_x_active", "1 when x.").with_labels(&["slot"]);
    static RUNS: MetricDef = MetricDef::counter("rpo_x_runs_total", "Runs.").per_group();

    #[test]
    fn const_builders_compose() {
        assert_eq!(SLOT_ACTIVE.metric_type, MetricType::Gauge);
        assert_eq!(
            SLOT_ACTIVE.all_labels().collect::<Vec<_>>(),
            ["group", "target", "kind", "slot"]
        );
        assert_eq!(RUNS.metric_type.as_str(), "counter");
        assert_eq!(RUNS.all_labels().collect::<Vec<_>>(), ["group"]);
    }
}
