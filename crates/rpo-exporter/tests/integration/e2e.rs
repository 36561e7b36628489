//! The whole chain on the full lab (every kind: Postgres, MariaDB and Redis pairs, a
//! Redis stream, RabbitMQ, the OpenSearch contract server, moto — the same
//! lab the demo runs) → the exporter → a real Prometheus scraping it with the
//! shipped rules → a real Alertmanager → a webhook receiver; and
//! `check --prometheus` reading the gate from it. The same run checks that
//! every metric the alerts and dashboards use is exported, and that every
//! dashboard panel has data.
//!
//! The rules are loaded with every `for:` shortened to 2s so the chain is
//! exercised in seconds; the `for:` durations themselves are pinned by the
//! promtool unit tests in alerts/tests/.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpo_lab::full::FullLab;
use rpo_lab::monitoring::{Alertmanager, Prometheus, WebhookReceiver};

use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// The shipped rule files with `for:` shortened, in `dir`.
pub(crate) fn fast_rules(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in files_in(&rpo_lab::repo_root().join("alerts"), "yml") {
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| match line.split_once("for: ") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 2s\n"),
                _ => format!("{line}\n"),
            })
            .collect();
        let out = dir.join(path.file_name().unwrap());
        std::fs::write(&out, text).unwrap();
        files.push(out);
    }
    files
}

/// Every `rpo_*` family of a live exposition is catalogued, with its help
/// and type, and each sample carries exactly the catalogued labels.
fn assert_exposition_matches_the_catalogue(text: &str) {
    use rpo_exporter::metrics::catalogue;
    let mut family = None;
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP rpo_") {
            let (name, help) = rest.split_once(' ').unwrap();
            let def = catalogue::find(&format!("rpo_{name}"))
                .unwrap_or_else(|| panic!("rpo_{name} is exported but not catalogued"));
            assert_eq!(def.help, help, "{line}");
            family = Some(def);
        } else if let Some(rest) = line.strip_prefix("# TYPE rpo_") {
            let def = family.expect("HELP before TYPE");
            assert_eq!(
                rest,
                format!("{} {}", &def.name[4..], def.metric_type.as_str())
            );
        } else if line.starts_with("rpo_") {
            let def = family.expect("a header before samples");
            let (series, _) = line.rsplit_once(' ').unwrap();
            let labels: Vec<&str> = series
                .split_once('{')
                .map(|(_, l)| l.trim_end_matches('}'))
                .into_iter()
                .flat_map(|l| l.split("\",").map(|kv| kv.split_once('=').unwrap().0))
                .collect();
            assert_eq!(series.split('{').next(), Some(def.name), "{line}");
            assert_eq!(labels, def.all_labels().collect::<Vec<_>>(), "{line}");
            if let Some(kind) = series.split("kind=\"").nth(1) {
                kinds.insert(kind.split('"').next().unwrap().to_string());
            }
        } else if !line.starts_with("# ") {
            family = None;
        }
    }
    // Every kind ran: the check above saw every kind's detail series.
    assert!(kinds.len() >= 10, "{kinds:?}");
}

async fn check_prometheus(url: &str) -> (i32, String) {
    let output = tokio::process::Command::new(BIN)
        .args(["check", "--prometheus", url, "--group", "erp"])
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Notifications received for `alertname` with `status` ("firing"/"resolved").
pub(crate) fn notified(
    webhook: &WebhookReceiver,
    alertname: &str,
    status: &str,
) -> Vec<serde_json::Value> {
    webhook
        .received()
        .iter()
        .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["alertname"] == alertname && a["status"] == status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_alerts_reach_alertmanager_and_gate_check_prometheus() {
    rpo_lab::support::aws::use_test_credentials();
    let lab = FullLab::start("test").await.expect("the full lab starts");
    let pair = lab.postgres.clone();
    let rules_dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&config_with(&lab.config_blocks().replace(
        "name = \"erp-db\"\ngroup = \"erp\"\nrpo_budget = \"5s\"",
        "name = \"erp-db\"\ngroup = \"erp\"\nrpo_budget = \"3s\"",
    )))
    .await;
    let webhook = WebhookReceiver::start().unwrap();
    let alertmanager = Alertmanager::start(&webhook.url()).unwrap();
    let prometheus = Prometheus::start(
        "rpo-exporter",
        &[exporter.addr.to_string()],
        &fast_rules(rules_dir.path()),
        Some(alertmanager.port()),
    )
    .unwrap();
    let prom = prometheus.url();

    // Steady state: Prometheus sees GO, and so does check --prometheus.
    wait_until(
        Duration::from_secs(30),
        "Prometheus to see the group GO",
        || async {
            let v = prometheus_query(&prom, "rpo_failover_ready{group=\"erp\"}").await;
            (v["data"]["result"][0]["value"][1] == "1", v.to_string())
        },
    )
    .await;
    let (_, out) = wait_until_check(&prom, 0).await;
    assert!(out.contains("VERDICT: GO"), "{out}");

    // Every rpo_* metric the alerts and dashboards use is really exported,
    // and what every kind exports for real is what the catalogue says. The
    // group can read GO before every piece of evidence has arrived once (an
    // S3 rule's replication metrics date it before the canary's first round
    // trip), so the families are awaited, each for at most 30 s.
    let used = crate::alerts::metrics_used();
    assert!(used.len() >= 30, "{used:?}");
    let text = wait_until(
        Duration::from_secs(30),
        "every metric the alerts and dashboards use to be exported",
        || async {
            let text = exporter.metrics().await;
            let exported: std::collections::BTreeSet<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let missing: Vec<&String> = used
                .iter()
                .filter(|m| !exported.contains(m.as_str()))
                .collect();
            if missing.is_empty() {
                (true, text)
            } else {
                (
                    false,
                    format!("used in alerts/ or dashboards/ but not exported: {missing:?}"),
                )
            }
        },
    )
    .await;
    assert_exposition_matches_the_catalogue(&text);

    // Lag: replay paused while writing.
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    pair.pause_replay().unwrap();
    let firing = wait_until(
        Duration::from_secs(60),
        "RPOBudgetExceeded to reach the receiver",
        || async {
            let alerts = notified(&webhook, "RPOBudgetExceeded", "firing");
            (
                !alerts.is_empty(),
                format!("{alerts:?} / all: {:?}", webhook.received()),
            )
        },
    )
    .await;
    let alert = notified(&webhook, "RPOBudgetExceeded", "firing").remove(0);
    assert_eq!(alert["labels"]["failover_gate"], "block", "{firing}");
    assert_eq!(alert["labels"]["target"], "erp-db");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        rpo_lab::support::shipped_runbook_url("RPOBudgetExceeded").as_str()
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("its budget is 3s"),
        "{alert}"
    );
    assert!(
        webhook
            .received()
            .iter()
            .all(|b| !b.contains("\"target\":\"erp-sessions\"")),
        "only the lagging store alerts"
    );
    let (code, out) = check_prometheus(&prom).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("RPOBudgetExceeded is firing: erp-db: exposure"),
        "{out}"
    );

    // Resume: the alert resolves and the gate opens again.
    pair.resume_replay().unwrap();
    drop(writer);
    wait_until(
        Duration::from_secs(60),
        "RPOBudgetExceeded to resolve",
        || async {
            let alerts = notified(&webhook, "RPOBudgetExceeded", "resolved");
            (
                !alerts.is_empty(),
                format!("{:?}", webhook.received().len()),
            )
        },
    )
    .await;
    wait_until_check(&prom, 0).await;

    // Every dashboard panel's query answers with data on this Prometheus.
    crate::dashboards::assert_every_panel_has_data(&prom).await;

    // The exporter stops: RPOExporterDown fires and the gate closes.
    exporter.stop().await;
    wait_until(
        Duration::from_secs(60),
        "RPOExporterDown to reach the receiver",
        || async {
            let alerts = notified(&webhook, "RPOExporterDown", "firing");
            (
                !alerts.is_empty(),
                format!("{} notifications", webhook.received().len()),
            )
        },
    )
    .await;
    let (code, out) = check_prometheus(&prom).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("RPOExporterDown is firing"), "{out}");
    drop(prometheus);

    // Prometheus gone: NO-GO, and it says why.
    let (code, out) = check_prometheus(&prom).await;
    assert_eq!(code, 1);
    assert!(out.contains("cannot be reached"), "{out}");
}

/// Runs `check --prometheus` until it exits with `code` (alerts take a few
/// evaluation cycles to resolve), returning its last output.
async fn wait_until_check(prom: &str, code: i32) -> (i32, String) {
    let out = wait_until(Duration::from_secs(60), "check --prometheus", || async {
        let (got, out) = check_prometheus(prom).await;
        (got == code, out)
    })
    .await;
    (code, out)
}
