//! `rpo-exporter check`: one poll round (or rounds until GO, with `--wait`),
//! or the verdict of a running exporter (`--from URL`), printed as a table
//! for a person on a bridge call or as JSON for automation.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::drivers::http::redacted_url;
use crate::kinds;
use crate::poller::{heartbeat_and_record, poll_and_record};
use crate::probe::ProbeContext;
use crate::readiness::{
    evaluate, human_duration, Mode, Reason, ReasonCode, ReasonJson, VerdictJson, SCHEMA_VERSION,
};
use crate::store::{Store, TargetId};

/// The pause between the two samples of `check`'s first round.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Output, String> {
        match s {
            "table" => Ok(Output::Table),
            "json" => Ok(Output::Json),
            other => Err(format!("unknown output `{other}`: use table or json")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub group: Option<String>,
    pub mode: Mode,
    pub wait: Option<Duration>,
}

/// Why `check` could not produce a verdict at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown group `{group}`; configured groups: {known}")]
    UnknownGroup { group: String, known: String },
}

/// Polls the configured targets (once, or until GO within `wait`) and
/// returns the verdict.
pub async fn check_config(
    mut config: Config,
    options: &CheckOptions,
) -> Result<VerdictJson, CheckError> {
    if let Some(group) = &options.group {
        if config.group(group).is_none() {
            return Err(CheckError::UnknownGroup {
                group: group.clone(),
                known: config
                    .groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    // A check run writes and reads its own heartbeat, never the daemon's.
    config.instance = format!("{}-check", config.instance);
    let config = Arc::new(config);
    let store = Store::new(config.targets.iter().map(TargetId::of));
    let selected: Vec<&crate::config::Target> = config
        .targets
        .iter()
        .filter(|t| options.group.as_ref().is_none_or(|g| &t.group == g))
        .collect();

    // The run's own AWS call counters: `check` prints no metrics, but the
    // AWS probes count in something explicit, never a static.
    let context = ProbeContext::new(config.instance.clone());
    let mut probes = Vec::new();
    for &target in &selected {
        let id = TargetId::of(target);
        match kinds::build(target, &context) {
            Ok(mut probe) => {
                let writer = probe.heartbeat_writer();
                probes.push((id, target, Some(probe), writer));
            }
            Err(error) => {
                let now = SystemTime::now();
                store.record_poll(&id, now, now, Err(error));
                probes.push((id, target, None, None));
            }
        }
    }

    let deadline = options.wait.map(|w| Instant::now() + w);
    let pause = selected
        .iter()
        .map(|t| t.poll_interval)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut first_round = true;
    loop {
        let round = probes.iter_mut().map(|(id, target, probe, writer)| {
            let store = &store;
            async move {
                if let Some(writer) = writer {
                    heartbeat_and_record(id, target, writer.as_mut(), store).await;
                }
                if let Some(probe) = probe {
                    poll_and_record(id, target, probe.as_mut(), store).await;
                }
            }
        });
        futures::future::join_all(round).await;
        if first_round {
            // One sample can only prove "caught up at this instant"; a replica
            // a few milliseconds behind (the heartbeat just written) needs an
            // earlier sample of the source to be dated by. Take a second one.
            first_round = false;
            tokio::time::sleep(SETTLE).await;
            let again = probes.iter_mut().filter_map(|(id, target, probe, _)| {
                let store = &store;
                probe.as_mut().map(|probe| async move {
                    poll_and_record(id, target, probe.as_mut(), store).await
                })
            });
            futures::future::join_all(again).await;
        }
        let verdict = evaluate(
            &config,
            &store.snapshot(),
            options.mode,
            SystemTime::now(),
            options.group.as_deref(),
        );
        match deadline {
            Some(deadline) if !verdict.ready && Instant::now() + pause < deadline => {
                tracing::info!(reasons = ?verdict.groups.iter().flat_map(|g| g.reasons.iter().map(|r| r.message.as_str())).collect::<Vec<_>>(), "NO-GO; polling again");
                tokio::time::sleep(pause).await;
            }
            _ => return Ok(verdict.to_json()),
        }
    }
}

/// Asks a running exporter for its verdict. An exporter that cannot be
/// reached, or answers nonsense, is a NO-GO with that reason.
pub async fn check_remote(
    base_url: &str,
    options: &CheckOptions,
    timeout: Duration,
) -> VerdictJson {
    let deadline = options.wait.map(|w| Instant::now() + w);
    let shown = redacted_url(base_url);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client builds");
    let mut url = format!(
        "{}/failover-readiness?mode={}",
        base_url.trim_end_matches('/'),
        options.mode
    );
    if let Some(group) = &options.group {
        let _ = write!(url, "&group={group}");
    }
    loop {
        let verdict = match client.get(&url).send().await {
            Err(error) => unreachable_verdict(
                options.mode,
                format!(
                    "exporter at {shown} cannot be reached: {}",
                    without_url(&error)
                ),
            ),
            Ok(response) => {
                let status = response.status();
                match response.json::<serde_json::Value>().await {
                    Ok(value) => match serde_json::from_value::<VerdictJson>(value.clone()) {
                        Ok(verdict) => verdict,
                        Err(_) => unreachable_verdict(
                            options.mode,
                            format!(
                                "exporter at {shown} answered HTTP {status}: {}",
                                value
                                    .get("error")
                                    .and_then(|e| e.as_str())
                                    .unwrap_or("not a verdict")
                            ),
                        ),
                    },
                    Err(_) => unreachable_verdict(
                        options.mode,
                        format!("exporter at {shown} answered HTTP {status} without a verdict"),
                    ),
                }
            }
        };
        match deadline {
            Some(deadline)
                if !verdict.ready && Instant::now() + Duration::from_secs(1) < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return verdict,
        }
    }
}

/// The gate as the alerting view sees it: NO-GO while any alert labelled
/// `failover_gate="block"` for the group (or for no group: the exporter
/// itself down or absent) is firing in Prometheus, when Prometheus has no
/// `rpo_failover_ready` series for the group (nobody measures it), or when
/// Prometheus cannot be reached.
pub async fn check_prometheus(
    base_url: &str,
    options: &CheckOptions,
    timeout: Duration,
) -> VerdictJson {
    let deadline = options.wait.map(|w| Instant::now() + w);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client builds");
    let base = base_url.trim_end_matches('/');
    let shown = redacted_url(base_url);
    loop {
        let verdict = match prometheus_reasons(&client, base, options.group.as_deref()).await {
            Ok(reasons) if reasons.is_empty() => verdict_from_reasons(options.mode, Vec::new()),
            Ok(reasons) => verdict_from_reasons(options.mode, reasons),
            Err(reason) => verdict_from_reasons(
                options.mode,
                vec![Reason::new(
                    ReasonCode::PrometheusUnavailable,
                    format!("Prometheus at {shown} {reason}"),
                )],
            ),
        };
        match deadline {
            Some(deadline)
                if !verdict.ready && Instant::now() + Duration::from_secs(1) < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return verdict,
        }
    }
}

/// Why the alerting view blocks the gate; `Err` says why Prometheus could
/// not be asked.
async fn prometheus_reasons(
    client: &reqwest::Client,
    base: &str,
    group: Option<&str>,
) -> Result<Vec<Reason>, String> {
    let get = |path: String| async move {
        let response = client
            .get(path)
            .send()
            .await
            .map_err(|e| format!("cannot be reached: {}", without_url(&e)))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| format!("answered HTTP {status} without JSON"))?;
        if body["status"] != "success" {
            return Err(format!(
                "answered HTTP {status}: {}",
                body["error"].as_str().unwrap_or("not a success")
            ));
        }
        Ok(body)
    };
    let mut reasons = Vec::new();
    let selector = match group {
        Some(g) => format!("rpo_failover_ready{{group=\"{g}\"}}"),
        None => "rpo_failover_ready".to_string(),
    };
    let present = get(format!(
        "{base}/api/v1/query?query=count({})",
        percent_encode(&selector)
    ))
    .await?;
    if present["data"]["result"]
        .as_array()
        .is_none_or(|r| r.is_empty())
    {
        reasons.push(Reason::new(
            ReasonCode::VerdictSeriesMissing,
            format!(
                "Prometheus has no {selector} series: no exporter measures {}",
                group
                    .map(|g| format!("group {g}"))
                    .unwrap_or_else(|| "any group".to_string())
            ),
        ));
    }
    let alerts = get(format!("{base}/api/v1/alerts")).await?;
    for alert in alerts["data"]["alerts"].as_array().into_iter().flatten() {
        let labels = &alert["labels"];
        let blocks = alert["state"] == "firing" && labels["failover_gate"] == "block";
        let ours = match (group, labels["group"].as_str()) {
            (Some(g), Some(alert_group)) => g == alert_group,
            _ => true,
        };
        if blocks && ours {
            let name = labels["alertname"].as_str().unwrap_or("alert");
            let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
            reasons.push(Reason::new(
                ReasonCode::GateAlertFiring,
                format!("{name} is firing: {summary}"),
            ));
        }
    }
    reasons.sort_by(|a, b| a.message.cmp(&b.message));
    Ok(reasons)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A transport error without the URL (it may carry credentials): its kind
/// and the chain of causes.
fn without_url(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    message
}

/// The exporter gave no verdict: NO-GO, saying why.
fn unreachable_verdict(mode: Mode, message: String) -> VerdictJson {
    verdict_from_reasons(
        mode,
        vec![Reason::new(ReasonCode::ExporterUnavailable, message)],
    )
}

/// A verdict without per-target detail: GO exactly when there is no reason.
fn verdict_from_reasons(mode: Mode, reasons: Vec<Reason>) -> VerdictJson {
    let now = SystemTime::now();
    let ready = reasons.is_empty();
    VerdictJson {
        schema_version: SCHEMA_VERSION,
        verdict: if ready { "GO" } else { "NO-GO" }.to_string(),
        ready,
        mode: mode.to_string(),
        evaluated_at: humantime::format_rfc3339_millis(now).to_string(),
        evaluated_at_unix: crate::probe::unix_seconds(now),
        reasons: reasons.iter().map(|r| r.message.clone()).collect(),
        reason_details: reasons.iter().map(ReasonJson::new).collect(),
        groups: Vec::new(),
    }
}

/// The table a person reads: one block per group, one row per target.
pub fn render_table(verdict: &VerdictJson) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "VERDICT: {}  ({} mode, evaluated {})",
        verdict.verdict,
        verdict.mode,
        verdict.evaluated_at.replace('T', " ")
    );
    if verdict.groups.is_empty() {
        for reason in &verdict.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    let secs = |s: Option<f64>| {
        s.map(|v| human_duration(Duration::from_secs_f64(v.max(0.0))))
            .unwrap_or_else(|| "-".to_string())
    };
    for group in &verdict.groups {
        let _ = writeln!(
            out,
            "\nGROUP {}: {}  (budget {}, exposure {}, recovery-point skew {})",
            group.group,
            group.verdict,
            human_duration(Duration::from_secs_f64(group.rpo_budget_seconds)),
            secs(group.exposure_seconds),
            secs(group.recovery_point_skew_seconds),
        );
        let mut rows = vec![[
            "TARGET".to_string(),
            "KIND".to_string(),
            "STATUS".to_string(),
            "RECOVERY POINT (UTC)".to_string(),
            "EXPOSURE".to_string(),
            "BUDGET".to_string(),
            "EVIDENCE AGE".to_string(),
            "REASON".to_string(),
        ]];
        for t in &group.targets {
            rows.push([
                t.target.clone(),
                t.kind.clone(),
                if t.ready { "GO" } else { "NO-GO" }.to_string(),
                t.recovery_point
                    .as_deref()
                    .map(|s| s.replace('T', " "))
                    .unwrap_or_else(|| "unknown".to_string()),
                match (t.loss_window_seconds, verdict.mode.as_str()) {
                    (Some(window), "unplanned") => format!(
                        "{} (loss window {})",
                        secs(t.exposure_seconds),
                        secs(Some(window))
                    ),
                    _ => secs(t.exposure_seconds),
                },
                secs(Some(t.budget_seconds)),
                secs(t.evidence_age_seconds),
                t.reasons.join("; "),
            ]);
        }
        let widths: Vec<usize> = (0..8)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in rows {
            let mut line = String::from("  ");
            for (c, cell) in row.iter().enumerate() {
                if c == 7 {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if !group.reasons.is_empty() {
            let _ = writeln!(out, "  Reasons:");
            for reason in &group.reasons {
                let _ = writeln!(out, "    - {reason}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_own_reasons_carry_codes_beside_the_same_words() {
        let verdict = unreachable_verdict(
            Mode::Planned,
            "exporter at http://x cannot be reached: timed out".to_string(),
        );
        assert!(!verdict.ready);
        assert_eq!(verdict.schema_version, SCHEMA_VERSION);
        assert_eq!(
            verdict.reasons,
            ["exporter at http://x cannot be reached: timed out"]
        );
        assert_eq!(
            verdict.reason_details,
            [ReasonJson {
                code: "exporter_unavailable".to_string(),
                group: None,
                target: None,
                message: "exporter at http://x cannot be reached: timed out".to_string(),
            }]
        );
        assert!(render_table(&verdict)
            .contains("\n  - exporter at http://x cannot be reached: timed out\n"));

        let go = verdict_from_reasons(Mode::Unplanned, Vec::new());
        assert!(go.ready);
        assert!(go.reason_details.is_empty());
    }
}
