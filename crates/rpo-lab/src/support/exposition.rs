//! Reading the Prometheus text exposition the exporter serves.

/// The labels that pick one target's series.
pub fn labels(target: &str) -> [(&'static str, &str); 1] {
    [("target", target)]
}

/// Reads one sample from a text exposition: the first series of `name`
/// whose labels include every pair in `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            if !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                return None;
            }
            match value {
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                v => v.parse().ok(),
            }
        })
}

/// Asserts that the sample of `name` with `labels` is `expected` (`None`:
/// no such series).
#[track_caller]
pub fn assert_metric(text: &str, name: &str, labels: &[(&str, &str)], expected: Option<f64>) {
    let found = metric_value(text, name, labels);
    assert_eq!(found, expected, "{name} {labels:?}");
}

/// True when every (target, reason) has a nonzero
/// `rpo_probe_failures_total` (no such series counts as none).
pub fn failures_counted(text: &str, failures: &[(&str, &str)]) -> bool {
    failures.iter().all(|&(target, reason)| {
        metric_value(
            text,
            "rpo_probe_failures_total",
            &[("target", target), ("reason", reason)],
        )
        .unwrap_or(0.0)
            > 0.0
    })
}

/// When `target` last wrote its heartbeat, and the newest one seen on the
/// replica (Unix seconds, this exporter's clock); panics if either is missing.
pub fn heartbeat_written_and_seen(text: &str, target: &str) -> (f64, f64) {
    let written = metric_value(
        text,
        "rpo_heartbeat_last_write_timestamp_seconds",
        &labels(target),
    )
    .unwrap_or_else(|| panic!("{target} has written no heartbeat"));
    let seen = metric_value(text, "rpo_heartbeat_timestamp_seconds", &labels(target))
        .unwrap_or_else(|| panic!("{target} has seen no heartbeat on the replica"));
    (written, seen)
}
