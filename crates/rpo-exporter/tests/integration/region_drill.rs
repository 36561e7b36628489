//! The region-loss drills' harness (issue 9; `region_loss.rs`,
//! `region_loss_aws.rs`, `region_loss_queues.rs`): one exporter in each
//! region (the primary region eu-west-1 with AWS us-east-1, the recovery
//! region eu-central-1 with AWS us-west-2; same group `erp`), one real
//! Prometheus scraping both every second with the shipped `alerts/` (their
//! `for:` shortened as in `e2e.rs`), Alertmanager and a webhook receiver;
//! and what every drill asserts the same way: the paths a person reads
//! agree, the recovery point is kept while the exposure grows, the alerts
//! after the cut.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use rpo_lab::monitoring::{Alertmanager, Prometheus, WebhookReceiver};
use rpo_lab::support::*;

use crate::e2e::{fast_rules, notified};

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// The AWS regions: the source's, lost with the primary region, and the
/// replica's, which survives.
pub(crate) const AWS_PRIMARY: &str = "us-east-1";
pub(crate) const AWS_RECOVERY: &str = "us-west-2";
pub(crate) const REGION_PRIMARY: &str = "eu-west-1";
pub(crate) const REGION_RECOVERY: &str = "eu-central-1";

/// When something happened: between these two readings of the clock
/// (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Between(pub(crate) f64, pub(crate) f64);

/// Runs `act`, dated by the clock readings around it.
pub(crate) fn between(act: impl FnOnce()) -> Between {
    let before = now_unix();
    act();
    Between(before, now_unix())
}

/// The two regions' exporters and the monitoring that watches them.
pub(crate) struct Drill {
    /// The primary region's exporter, until the cut stops it.
    primary: Option<Exporter>,
    pub(crate) recovery: Exporter,
    /// The exporters' addresses: their `instance` label in Prometheus.
    pub(crate) primary_at: String,
    pub(crate) recovery_at: String,
    pub(crate) webhook: WebhookReceiver,
    /// Prometheus's URL.
    pub(crate) prom: String,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    _rules_dir: tempfile::TempDir,
}

impl Drill {
    /// Starts the exporter of each region with `config(instance, region)`,
    /// then the webhook, Alertmanager and Prometheus.
    pub(crate) async fn start(config: impl Fn(&str, &str) -> String) -> Drill {
        let primary = Exporter::start(&config("primary", REGION_PRIMARY)).await;
        let recovery = Exporter::start(&config("recovery", REGION_RECOVERY)).await;
        let (primary_at, recovery_at) = (primary.addr.to_string(), recovery.addr.to_string());
        let rules_dir = tempfile::tempdir().unwrap();
        let webhook = WebhookReceiver::start().unwrap();
        let alertmanager = Alertmanager::start(&webhook.url()).unwrap();
        let prometheus = Prometheus::start(
            "rpo-exporter",
            &[primary_at.clone(), recovery_at.clone()],
            &fast_rules(rules_dir.path()),
            Some(alertmanager.port()),
        )
        .unwrap();
        Drill {
            primary: Some(primary),
            recovery,
            primary_at,
            recovery_at,
            webhook,
            prom: prometheus.url(),
            prometheus,
            alertmanager,
            _rules_dir: rules_dir,
        }
    }

    /// The primary region's exporter (before the cut).
    pub(crate) fn primary(&self) -> &Exporter {
        self.primary
            .as_ref()
            .expect("the primary region's exporter runs until the cut")
    }

    /// Waits until each exporter says GO for `erp` (within `within`) and
    /// the gate read through Prometheus is GO from both.
    pub(crate) async fn wait_for_go(&self, within: Duration) {
        for exporter in [self.primary(), &self.recovery] {
            exporter
                .wait_for_go("?group=erp", within, "each exporter GO")
                .await;
        }
        wait_until(
            Duration::from_secs(30),
            "check --prometheus GO from both exporters",
            || async {
                let (code, v) = check_json(&["--prometheus", &self.prom, "--group", "erp"]).await;
                (
                    code == 0 && v["exporters"].as_array().is_some_and(|e| e.len() == 2),
                    v,
                )
            },
        )
        .await;
    }

    /// The cut's part that is the exporter: the primary region's stopped.
    pub(crate) async fn stop_primary(&mut self) {
        if let Some(primary) = self.primary.take() {
            primary.stop().await;
        }
    }

    /// The three paths a person on the bridge call reads about the
    /// recovery region, in `mode`: `check --from` the recovery exporter,
    /// `check --prometheus --region` and the board give the same verdict
    /// (`expected_go`) and name the same failing targets (through
    /// Prometheus, as the exporter's own per-target NO-GO read from
    /// `rpo_target_ready` or, unplanned, `rpo_target_ready_unplanned`).
    /// Returns the `check --from` verdict.
    pub(crate) async fn assert_paths_agree(
        &self,
        mode: &str,
        expected_go: bool,
        expected_failing: &BTreeSet<String>,
    ) -> Value {
        let word = if expected_go { "GO" } else { "NO-GO" };
        let code = if expected_go { 0 } else { 1 };
        let base = self.recovery.url("");
        let base = base.trim_end_matches('/');
        let (from_code, from) =
            check_json(&["--from", base, "--group", "erp", "--mode", mode]).await;
        assert_eq!(from_code, code, "check --from, {mode}: {from}");
        assert_eq!(from["verdict"], word, "check --from, {mode}: {from}");
        assert_eq!(
            &failing_targets(&from),
            expected_failing,
            "check --from, {mode}: {from}"
        );
        // Prometheus lags the exporter by a scrape and a rule evaluation (a
        // second each here): it must agree within a few of them.
        let via_prometheus = wait_until(
            Duration::from_secs(15),
            &format!(
                "check --prometheus --region {REGION_RECOVERY} in {mode} mode to say {word} naming {expected_failing:?}"
            ),
            || async {
                let (c, v) = check_json(&[
                    "--prometheus",
                    &self.prom,
                    "--group",
                    "erp",
                    "--mode",
                    mode,
                    "--region",
                    REGION_RECOVERY,
                ])
                .await;
                // The exporter's own per-target NO-GO, and no reason about
                // a target the exporter finds ready.
                let no_go: BTreeSet<String> = v["reason_details"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["code"] == "exporter_no_go")
                    .filter_map(|r| r["target"].as_str().map(str::to_string))
                    .collect();
                let agrees = c == code
                    && v["verdict"] == word
                    && targets_named(&v).is_subset(expected_failing)
                    && &no_go == expected_failing;
                (agrees, v)
            },
        )
        .await;
        let family = match mode {
            "planned" => "rpo_target_ready",
            _ => "rpo_target_ready_unplanned",
        };
        for reason in via_prometheus["reason_details"].as_array().unwrap() {
            if reason["code"] == "exporter_no_go" {
                let message = reason["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("({family} is 0)"))
                        && message.contains(&format!("recovery in {REGION_RECOVERY}")),
                    "{mode}: {via_prometheus}"
                );
            }
        }
        let (status, html) = self.recovery.get(&format!("/?mode={mode}")).await;
        assert_eq!(status, 200);
        let (board_word, board_failing) = board_verdict(&html);
        assert_eq!(board_word, word, "board, {mode}");
        assert_eq!(&board_failing, expected_failing, "board, {mode}");
        assert!(
            html.contains(&format!("· {mode} mode ·"))
                && html.contains(&format!("data-mode=\"{mode}\"")),
            "board, {mode}: {html}"
        );
        from
    }

    /// After the cut: once every one of `targets` has its source
    /// unreachable, each keeps the recovery point proven before the cut
    /// (`before`, in the same order; equal up to the float rounding of
    /// re-expressing it in the wall clock, far below any poll's
    /// resolution), never reset, never "now", while its exposure (now −
    /// that point) grows with wall time over 2 s. Returns the exposition
    /// read last.
    pub(crate) async fn assert_kept_while_exposure_grows(
        &self,
        targets: &[&str],
        before: &[f64],
    ) -> String {
        let text = self
            .recovery
            .wait_for_metrics(
                Duration::from_secs(20),
                "every target's source unreachable",
                |text| {
                    targets.iter().all(|t| {
                        metric_value(text, "rpo_source_reachable", &labels(t)) == Some(0.0)
                    })
                },
            )
            .await;
        let exposure_then = Instant::now();
        let exposures: Vec<f64> = targets
            .iter()
            .map(|t| metric_value(&text, "rpo_exposure_seconds", &labels(t)).unwrap())
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let text = self.recovery.metrics().await;
        let waited = exposure_then.elapsed().as_secs_f64();
        for ((target, rp), exposure) in targets.iter().zip(before).zip(&exposures) {
            let kept = metric_value(
                &text,
                "rpo_recovery_point_timestamp_seconds",
                &labels(target),
            );
            assert!(
                kept.is_some_and(|kept| (kept - *rp).abs() < 1e-3),
                "{target}: the recovery point is kept, never reset, never \"now\" ({kept:?} vs {rp})\n{text}"
            );
            let grown =
                metric_value(&text, "rpo_exposure_seconds", &labels(target)).unwrap() - exposure;
            assert!(
                (waited - 1.0..=waited + 1.0).contains(&grown),
                "{target}: exposure grew {grown}s in {waited}s"
            );
        }
        text
    }

    /// After the cut, what reaches the webhook: the lost exporter's
    /// `RPOExporterDown` (blocking the failover gate, naming the exporter
    /// and its region) and no other exporter's; the recovery exporter's
    /// `FailoverNotReady` for `erp`; each alert of `per_target` for each of
    /// its targets on the recovery exporter; never `RPOExporterAbsent` nor
    /// any of `never`. And no rule errs.
    pub(crate) async fn assert_alerts_after_the_cut(
        &self,
        per_target: &[(&str, &[&str])],
        never: &[&str],
    ) {
        let down = wait_for_alert(
            &self.webhook,
            "RPOExporterDown",
            &[("instance", &self.primary_at)],
        )
        .await;
        assert_eq!(down["labels"]["failover_gate"], "block", "{down}");
        assert!(
            down["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("(exporter primary in {REGION_PRIMARY})")),
            "{down}"
        );
        wait_for_alert(
            &self.webhook,
            "FailoverNotReady",
            &[("instance", &self.recovery_at), ("group", "erp")],
        )
        .await;
        for (alertname, targets) in per_target {
            for target in *targets {
                wait_for_alert(
                    &self.webhook,
                    alertname,
                    &[("instance", &self.recovery_at), ("target", target)],
                )
                .await;
            }
        }
        assert!(
            notified(&self.webhook, "RPOExporterDown", "firing")
                .iter()
                .all(|a| a["labels"]["instance"] == self.primary_at.as_str()),
            "only the lost exporter is down"
        );
        for alert in std::iter::once(&"RPOExporterAbsent").chain(never) {
            assert!(
                notified(&self.webhook, alert, "firing").is_empty(),
                "{alert}: {:?}",
                notified(&self.webhook, alert, "firing")
            );
        }
        assert_no_rule_errs(&self.prom).await;
    }

    /// Stops the recovery exporter (and the primary's, if still running),
    /// then Prometheus and Alertmanager.
    pub(crate) async fn stop(mut self) {
        self.stop_primary().await;
        let Drill {
            recovery,
            prometheus,
            alertmanager,
            ..
        } = self;
        recovery.stop().await;
        drop(prometheus);
        drop(alertmanager);
    }
}

/// The real binary: `rpo-exporter check ARGS --output json`; exit code and verdict.
pub(crate) async fn check_json(args: &[&str]) -> (i32, Value) {
    let output = tokio::process::Command::new(BIN)
        .arg("check")
        .args(args)
        .args(["--output", "json"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let verdict = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "check {args:?} printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), verdict)
}

/// The targets a direct verdict (`/failover-readiness`, `check --from`) says fail.
pub(crate) fn failing_targets(verdict: &Value) -> BTreeSet<String> {
    targets_in(verdict)
        .filter(|t| t["ready"] == false)
        .map(|t| t["target"].as_str().unwrap().to_string())
        .collect()
}

/// Every target's entry in a direct verdict, group by group.
fn targets_in(verdict: &Value) -> impl Iterator<Item = &Value> {
    verdict["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().iter())
}

/// The targets `check --prometheus` names in its reasons.
pub(crate) fn targets_named(verdict: &Value) -> BTreeSet<String> {
    verdict["reason_details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["target"].as_str().map(str::to_string))
        .collect()
}

/// The board's overall word and the targets whose rows it marks failing.
pub(crate) fn board_verdict(html: &str) -> (String, BTreeSet<String>) {
    let overall = html
        .split("<span id=\"verdict\" class=\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no overall verdict on the board: {html}"))
        .to_string();
    let failing = html
        .split("<tr class=\"bad\" data-target=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    (overall, failing)
}

/// One target's entry in a direct verdict.
pub(crate) fn target_in<'a>(verdict: &'a Value, target: &str) -> &'a Value {
    targets_in(verdict)
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no target {target} in {verdict}"))
}

/// Every rule in Prometheus has been evaluated and none errs (`health`
/// `err` is what a many-to-many match looks like live); returns the rules.
pub(crate) async fn assert_no_rule_errs(prometheus: &str) -> Vec<Value> {
    let rules = wait_until(Duration::from_secs(30), "every rule evaluated", || async {
        let body: Value = reqwest::Client::new()
            .get(format!("{prometheus}/api/v1/rules"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rules: Vec<Value> = body["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        let evaluated = !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown");
        (evaluated, Value::from(rules))
    })
    .await;
    let Value::Array(rules) = rules else {
        unreachable!("Value::from(Vec) is an array")
    };
    let erring: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(erring.is_empty(), "rules in error: {erring:?}");
    rules
}

/// Waits until `alertname` has reached the webhook firing with `labels`.
pub(crate) async fn wait_for_alert(
    webhook: &WebhookReceiver,
    alertname: &str,
    labels: &[(&str, &str)],
) -> Value {
    wait_until(
        Duration::from_secs(30),
        &format!("{alertname} {labels:?} to reach the webhook"),
        || async {
            let found = notified(webhook, alertname, "firing")
                .into_iter()
                .find(|a| labels.iter().all(|(k, v)| a["labels"][*k] == *v));
            let seen = found.is_some();
            (
                seen,
                found.unwrap_or_else(|| Value::from(webhook.received().len())),
            )
        },
    )
    .await
}
