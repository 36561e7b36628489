//! Turns a snapshot into the Prometheus text exposition at scrape time.
//!
//! Nothing here waits on a probe: `/metrics` is rendered from the latest
//! [`Snapshot`] and the verdict computed from it. The unified series are
//! written directly (a few microseconds per target, see the README's
//! benchmark); the `process_*` series come from the `prometheus` crate's
//! process collector.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use crate::config::Config;
use crate::probe::{unix_seconds, FailureReason, MetricType};
use crate::readiness::{evaluate, Mode, Verdict};
use crate::store::Snapshot;

/// The build's version and git revision, for `rpo_exporter_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = match option_env!("RPO_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Renders the whole exposition for a scrape at `now`.
pub fn render(config: &Config, snapshot: &Snapshot, now: SystemTime) -> String {
    let verdict = evaluate(config, snapshot, Mode::Planned, now, None);
    let mut out = String::with_capacity(512 + config.targets.len() * 3000);
    render_targets(&mut out, config, snapshot, &verdict);
    render_groups(&mut out, &verdict);
    render_meta(&mut out);
    out.push_str(&process_metrics());
    out
}

fn render_targets(out: &mut String, config: &Config, snapshot: &Snapshot, verdict: &Verdict) {
    let rows: Vec<_> = config.targets.iter().zip(snapshot.reports.iter()).collect();
    let labels: Vec<String> = config
        .targets
        .iter()
        .map(|t| {
            format!(
                "group=\"{}\",target=\"{}\",kind=\"{}\"",
                escape(&t.group),
                escape(&t.name),
                t.kind()
            )
        })
        .collect();
    let ready: BTreeMap<&str, bool> = verdict
        .groups
        .iter()
        .flat_map(|g| g.targets.iter().map(|t| (t.target.as_str(), t.ready)))
        .collect();
    let healthy: BTreeMap<&str, bool> = verdict
        .groups
        .iter()
        .flat_map(|g| {
            g.targets
                .iter()
                .map(|t| (t.target.as_str(), t.replication_healthy))
        })
        .collect();

    let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(usize) -> Option<f64>| {
        header(out, name, help, "gauge");
        for i in 0..rows.len() {
            if let Some(v) = value(i) {
                sample(out, name, &labels[i], None, v);
            }
        }
    };

    gauge(
        out,
        "rpo_recovery_point_timestamp_seconds",
        "The recovery point: the latest source time up to which every write is known to be on the replica.",
        &|i| rows[i].1.recovery_point.map(unix_seconds),
    );
    gauge(
        out,
        "rpo_exposure_seconds",
        "Now minus the recovery point, as of the last poll: what would be lost if the source vanished.",
        &|i| rows[i].1.exposure.map(|d| d.as_secs_f64()),
    );
    gauge(
        out,
        "rpo_budget_seconds",
        "The configured recovery-point budget of the target.",
        &|i| Some(rows[i].0.rpo_budget.as_secs_f64()),
    );
    gauge(
        out,
        "rpo_stale_after_seconds",
        "Evidence older than this is treated as unknown.",
        &|i| Some(rows[i].0.stale_after.as_secs_f64()),
    );
    gauge(
        out,
        "rpo_replication_healthy",
        "1 when the last poll saw the replication link or status healthy; 0 when unhealthy or unknown.",
        &|i| Some(bool_value(healthy.get(rows[i].0.name.as_str()).copied().unwrap_or(false))),
    );
    gauge(
        out,
        "rpo_evidence_timestamp_seconds",
        "Time of the newest evidence about the replica (a poll instant or a provider datapoint).",
        &|i| rows[i].1.evidence_time.map(unix_seconds),
    );
    gauge(
        out,
        "rpo_target_ready",
        "1 when this target passes the planned failover gate.",
        &|i| {
            Some(bool_value(
                ready.get(rows[i].0.name.as_str()).copied().unwrap_or(false),
            ))
        },
    );
    gauge(
        out,
        "rpo_backlog_bytes",
        "Bytes not yet applied on the replica.",
        &|i| rows[i].1.measurement.as_ref().and_then(|m| m.backlog_bytes),
    );
    gauge(
        out,
        "rpo_backlog_operations",
        "Operations (messages, index operations) not yet on the replica or not yet processed.",
        &|i| {
            rows[i]
                .1
                .measurement
                .as_ref()
                .and_then(|m| m.backlog_operations)
        },
    );
    gauge(
        out,
        "rpo_catchup_seconds",
        "Estimated time to drain the backlog at the recent apply rate (+Inf when nothing is being applied).",
        &|i| rows[i].1.measurement.as_ref().and_then(|m| m.catchup_seconds),
    );
    gauge(
        out,
        "rpo_source_reachable",
        "1 when the source side answered the last poll.",
        &|i| {
            rows[i]
                .1
                .measurement
                .as_ref()
                .and_then(|m| m.source_reachable)
                .map(bool_value)
        },
    );
    gauge(
        out,
        "rpo_replica_reachable",
        "1 when the replica side answered the last poll.",
        &|i| {
            rows[i]
                .1
                .measurement
                .as_ref()
                .and_then(|m| m.replica_reachable)
                .map(bool_value)
        },
    );
    gauge(
        out,
        "rpo_probe_success",
        "1 when the last poll of the target learned everything it asked for.",
        &|i| (rows[i].1.runs_total > 0).then_some(bool_value(rows[i].1.last_poll_succeeded)),
    );
    gauge(
        out,
        "rpo_probe_duration_seconds",
        "How long the last poll took.",
        &|i| rows[i].1.last_duration.map(|d| d.as_secs_f64()),
    );
    gauge(
        out,
        "rpo_probe_last_success_timestamp_seconds",
        "When a poll of the target last succeeded completely.",
        &|i| rows[i].1.last_success.map(unix_seconds),
    );
    gauge(
        out,
        "rpo_heartbeat_last_write_timestamp_seconds",
        "When this exporter last wrote its heartbeat on the source.",
        &|i| rows[i].1.heartbeat.last_write.map(unix_seconds),
    );

    header(
        out,
        "rpo_probe_runs_total",
        "Polls of the target attempted.",
        "counter",
    );
    for (i, (_, report)) in rows.iter().enumerate() {
        sample(
            out,
            "rpo_probe_runs_total",
            &labels[i],
            None,
            report.runs_total as f64,
        );
    }
    header(
        out,
        "rpo_probe_failures_total",
        "Polls that failed, whole or on one side, by reason.",
        "counter",
    );
    for (i, (_, report)) in rows.iter().enumerate() {
        for reason in FailureReason::ALL {
            sample(
                out,
                "rpo_probe_failures_total",
                &labels[i],
                Some(("reason", reason.as_str())),
                report.failures(reason) as f64,
            );
        }
    }
    header(
        out,
        "rpo_heartbeat_write_failures_total",
        "Heartbeat writes on the source that failed.",
        "counter",
    );
    for (i, (target, report)) in rows.iter().enumerate() {
        if target.heartbeat_interval().is_some() {
            sample(
                out,
                "rpo_heartbeat_write_failures_total",
                &labels[i],
                None,
                report.heartbeat.failures_total as f64,
            );
        }
    }

    // Kind-specific detail series, grouped into families by name.
    let mut families: BTreeMap<&str, (&str, MetricType, Vec<(usize, &crate::probe::Detail)>)> =
        BTreeMap::new();
    for (i, (_, report)) in rows.iter().enumerate() {
        if let Some(m) = &report.measurement {
            for detail in &m.details {
                families
                    .entry(detail.name)
                    .or_insert_with(|| (detail.help, detail.metric_type, Vec::new()))
                    .2
                    .push((i, detail));
            }
        }
    }
    for (name, (help, metric_type, samples)) in families {
        header(
            out,
            name,
            help,
            match metric_type {
                MetricType::Gauge => "gauge",
                MetricType::Counter => "counter",
            },
        );
        for (i, detail) in samples {
            let mut extra = String::new();
            for (k, v) in &detail.labels {
                let _ = write!(extra, ",{k}=\"{}\"", escape(v));
            }
            let _ = writeln!(
                out,
                "{name}{{{}{extra}}} {}",
                labels[i],
                format_value(detail.value)
            );
        }
    }
}

fn render_groups(out: &mut String, verdict: &Verdict) {
    let label = |g: &crate::readiness::GroupVerdict| format!("group=\"{}\"", escape(&g.group));
    header(
        out,
        "rpo_failover_ready",
        "1 when the group passes the planned failover gate (GO).",
        "gauge",
    );
    for g in &verdict.groups {
        sample(
            out,
            "rpo_failover_ready",
            &label(g),
            None,
            bool_value(g.ready),
        );
    }
    header(
        out,
        "rpo_group_exposure_seconds",
        "The largest exposure among the group's targets.",
        "gauge",
    );
    for g in &verdict.groups {
        if let Some(e) = g.exposure {
            sample(
                out,
                "rpo_group_exposure_seconds",
                &label(g),
                None,
                e.as_secs_f64(),
            );
        }
    }
    header(
        out,
        "rpo_group_recovery_point_skew_seconds",
        "Newest minus oldest recovery point across the group's targets.",
        "gauge",
    );
    for g in &verdict.groups {
        if let Some(s) = g.recovery_point_skew {
            sample(
                out,
                "rpo_group_recovery_point_skew_seconds",
                &label(g),
                None,
                s.as_secs_f64(),
            );
        }
    }
    header(
        out,
        "rpo_group_budget_seconds",
        "The configured recovery-point budget of the group.",
        "gauge",
    );
    for g in &verdict.groups {
        sample(
            out,
            "rpo_group_budget_seconds",
            &label(g),
            None,
            g.rpo_budget.as_secs_f64(),
        );
    }
}

fn render_meta(out: &mut String) {
    header(
        out,
        "rpo_exporter_build_info",
        "The exporter's version and git revision.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "rpo_exporter_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        escape(VERSION),
        escape(REVISION)
    );
}

fn process_metrics() -> String {
    use prometheus::core::Collector;
    use prometheus::Encoder;
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    let families = collector.collect();
    let mut buf = Vec::new();
    if prometheus::TextEncoder::new()
        .encode(&families, &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

fn header(out: &mut String, name: &str, help: &str, metric_type: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {metric_type}");
}

fn sample(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, value: f64) {
    match extra {
        Some((k, v)) => {
            let _ = writeln!(
                out,
                "{name}{{{labels},{k}=\"{}\"}} {}",
                escape(v),
                format_value(value)
            );
        }
        None => {
            let _ = writeln!(out, "{name}{{{labels}}} {}", format_value(value));
        }
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// A float in the exposition format (`+Inf`, `-Inf`, `NaN` spelled its way).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    if !value.contains(['\\', '"', '\n']) {
        return value.to_string();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_escapes() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
