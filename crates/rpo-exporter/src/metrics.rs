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
use crate::readiness::{evaluate, Mode, TargetVerdict, Verdict};
use crate::store::{Snapshot, TargetId, TargetReport};

/// The build's version and git revision, for `rpo_exporter_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = match option_env!("RPO_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Renders the whole exposition for a scrape at `now`.
pub fn render(config: &Config, snapshot: &Snapshot, now: SystemTime) -> String {
    let verdict = evaluate(config, snapshot, Mode::Planned, now, None);
    // About 3.3 KB per Postgres target; one allocation instead of doublings.
    let mut out = String::with_capacity(4096 + config.targets.len() * 4096);
    render_targets(&mut out, config, snapshot, &verdict);
    render_groups(&mut out, &verdict);
    render_meta(&mut out);
    render_aws_calls(&mut out, config);
    out.push_str(&process_metrics());
    out
}

fn render_targets(out: &mut String, config: &Config, snapshot: &Snapshot, verdict: &Verdict) {
    // Each target's report, by id (a target the store does not track yet
    // reads as never polled).
    let never_polled = TargetReport::default();
    let rows: Vec<(_, &TargetReport)> = config
        .targets
        .iter()
        .map(|t| {
            let report = snapshot.report(TargetId::key(t));
            (t, report.map_or(&never_polled, |r| r.as_ref()))
        })
        .collect();
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
    // Each target's verdict, by id.
    let verdicts: Vec<Option<&TargetVerdict>> = config
        .targets
        .iter()
        .map(|t| verdict.target(TargetId::key(t)))
        .collect();
    let ready = |i: usize| verdicts[i].is_some_and(|v| v.ready);
    let healthy = |i: usize| verdicts[i].is_some_and(|v| v.replication_healthy);

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
        &|i| Some(bool_value(healthy(i))),
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
        &|i| Some(bool_value(ready(i))),
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

    // Kind-specific detail series, grouped into families by name. Each
    // sample keeps what its line needs, so writing a family does not go back
    // to the `Detail`s (scattered over the heap: cache misses at 12,000).
    type Family<'a> = (
        &'a str,
        MetricType,
        Vec<(usize, &'a [(&'static str, String)], f64)>,
    );
    let mut families: BTreeMap<&str, Family> = BTreeMap::new();
    for (i, (_, report)) in rows.iter().enumerate() {
        if let Some(m) = &report.measurement {
            for detail in &m.details {
                families
                    .entry(detail.name)
                    .or_insert_with(|| (detail.help, detail.metric_type, Vec::new()))
                    .2
                    .push((i, detail.labels.as_slice(), detail.value));
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
        for (i, extra, value) in samples {
            out.push_str(name);
            out.push('{');
            out.push_str(&labels[i]);
            for (k, v) in extra {
                push_label(out, k, v);
            }
            out.push_str("} ");
            push_value(out, value);
            out.push('\n');
        }
    }
}

fn render_groups(out: &mut String, verdict: &Verdict) {
    let labels: Vec<String> = verdict
        .groups
        .iter()
        .map(|g| format!("group=\"{}\"", escape(&g.group)))
        .collect();
    header(
        out,
        "rpo_failover_ready",
        "1 when the group passes the planned failover gate (GO).",
        "gauge",
    );
    for (g, label) in verdict.groups.iter().zip(&labels) {
        sample(out, "rpo_failover_ready", label, None, bool_value(g.ready));
    }
    header(
        out,
        "rpo_group_exposure_seconds",
        "The largest exposure among the group's targets.",
        "gauge",
    );
    for (g, label) in verdict.groups.iter().zip(&labels) {
        if let Some(e) = g.exposure {
            sample(
                out,
                "rpo_group_exposure_seconds",
                label,
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
    for (g, label) in verdict.groups.iter().zip(&labels) {
        if let Some(s) = g.recovery_point_skew {
            sample(
                out,
                "rpo_group_recovery_point_skew_seconds",
                label,
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
    for (g, label) in verdict.groups.iter().zip(&labels) {
        sample(
            out,
            "rpo_group_budget_seconds",
            label,
            None,
            g.rpo_budget.as_secs_f64(),
        );
    }
}

/// What monitoring costs: the exporter-wide AWS call counters, kept by
/// `kinds::aws` (atomics the plumbing counts in) and read here at scrape
/// time. Rendered only when an AWS kind is configured.
fn render_aws_calls(out: &mut String, config: &Config) {
    if !config.targets.iter().any(|t| t.kind().is_aws()) {
        return;
    }
    let counts = crate::kinds::aws::call_counters().snapshot();
    header(
        out,
        "rpo_aws_api_requests_total",
        "HTTP requests sent to AWS APIs (retries included: what AWS bills), by service and operation.",
        "counter",
    );
    for (service, operation, n) in &counts.requests {
        let _ = writeln!(
            out,
            "rpo_aws_api_requests_total{{service=\"{}\",operation=\"{}\"}} {n}",
            escape(service),
            escape(operation)
        );
    }
    header(
        out,
        "rpo_aws_api_errors_total",
        "AWS API operations that failed after the SDK's retries, by service, operation and reason.",
        "counter",
    );
    for (service, operation, reason, n) in &counts.errors {
        let _ = writeln!(
            out,
            "rpo_aws_api_errors_total{{service=\"{}\",operation=\"{}\",reason=\"{}\"}} {n}",
            escape(service),
            escape(operation),
            reason.as_str()
        );
    }
    header(
        out,
        "rpo_cloudwatch_metrics_requested_total",
        "CloudWatch metric queries sent in GetMetricData calls (CloudWatch bills per metric requested).",
        "counter",
    );
    let _ = writeln!(
        out,
        "rpo_cloudwatch_metrics_requested_total {}",
        counts.cloudwatch_metrics_requested
    );
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
    for part in [
        "# HELP ",
        name,
        " ",
        help,
        "\n# TYPE ",
        name,
        " ",
        metric_type,
        "\n",
    ] {
        out.push_str(part);
    }
}

/// One sample line: `name{labels[,k="v"]} value`. Written piece by piece
/// (no `format!`): at 1,000 targets this runs 35,000 times per scrape.
fn sample(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, value: f64) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if let Some((k, v)) = extra {
        push_label(out, k, v);
    }
    out.push_str("} ");
    push_value(out, value);
    out.push('\n');
}

/// `,k="v"` with `v` escaped.
fn push_label(out: &mut String, k: &str, v: &str) {
    out.push(',');
    out.push_str(k);
    out.push_str("=\"");
    push_escaped(out, v);
    out.push('"');
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
    let mut out = String::new();
    push_value(&mut out, v);
    out
}

/// Appends [`format_value`]`(v)`. Whole numbers (counters, flags, bytes,
/// budgets) are written as integers, which is what `{v}` prints for them
/// too, without going through float formatting.
fn push_value(out: &mut String, v: f64) {
    /// 2^53: every whole f64 below it converts to i64 exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < EXACT {
        if v.is_sign_negative() {
            // Also `-0`, as `{v}` prints negative zero.
            out.push('-');
        }
        push_u64(out, v.abs() as u64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_escaped(&mut out, value);
    out
}

fn push_escaped(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
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

    #[test]
    fn whole_numbers_print_as_the_float_formatter_prints_them() {
        let exact = 9_007_199_254_740_992.0_f64;
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            42.0,
            16_777_216.0,
            4_000_000_000.0,
            1_700_000_000.0,
            1e15,
            -1e15,
            exact - 1.0,
            exact,
            exact + 2.0,
            1e20,
            -1e300,
            f64::MAX,
            f64::MIN,
            1_700_000_000.123_456,
            0.1,
            -2.5,
            f64::MIN_POSITIVE,
            5e-324,
        ];
        for v in values {
            assert_eq!(format_value(v), format!("{v}"), "{v:e}");
        }
        let mut x = 1.0_f64;
        while x < 1e17 {
            for v in [x, x + 1.0, x - 1.0, -x] {
                assert_eq!(format_value(v), format!("{v}"));
            }
            x *= 3.0;
        }
    }

    #[test]
    fn escape_matches_sequential_replacement() {
        for s in ["plain", "", "\\\"\n", "a\\\"b", "ü\n\"x\\", "\"\"\\\\"] {
            let expected = s
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            assert_eq!(escape(s), expected, "{s:?}");
        }
    }
}
