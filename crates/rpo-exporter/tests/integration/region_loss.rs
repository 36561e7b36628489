//! The region-loss drill (issue 9, SPEC sections 8–9): the lab split into a
//! primary region (eu-west-1; AWS us-east-1) and a recovery region
//! (eu-central-1; AWS us-west-2), one exporter in each (same group `erp`,
//! each writing its own heartbeats), one real Prometheus scraping both
//! every second with the shipped `alerts/` (their `for:` shortened as in
//! `e2e.rs`), Alertmanager and a webhook receiver.
//!
//! Replication lag is injected into every kind (Postgres replay paused,
//! the MariaDB SQL thread stopped, the Redis replica SIGSTOPped, all under
//! writes; a CloudWatch `ReplicaLag` datapoint in the RDS replica's
//! region), then the primary region is cut: the primaries stopped or
//! killed, the primary region's exporter stopped, its AWS region
//! blackholed in the proxy in front of moto.
//!
//! On the recovery region's exporter, for every kind: the last proven
//! recovery point is kept (never reset, never "now") while the exposure
//! grows with wall time; the unplanned verdict's loss window is the
//! injected lag within the kind's error bound; the planned verdict is NO-GO
//! with `source_unreachable`; `check --from`, `check --prometheus --region`
//! and the board agree; the lost exporter's and the sources' alerts reach
//! the webhook, and no rule errs. The Redis replica stays hung through the
//! cut (a hung replica in the recovery region is what blocks an unplanned
//! failover); once it resumes, every path turns GO together.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use rpo_exporter::probe::unix_seconds;
use rpo_lab::aws_proxy::RegionFault;
use rpo_lab::monitoring::{Alertmanager, Prometheus, WebhookReceiver};
use rpo_lab::support::aws::*;
use rpo_lab::support::*;

use crate::e2e::{fast_rules, notified};

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// The AWS regions: the source's, lost with the primary region, and the
/// replica's, which survives.
pub(crate) const AWS_PRIMARY: &str = "us-east-1";
pub(crate) const AWS_RECOVERY: &str = "us-west-2";
pub(crate) const REGION_PRIMARY: &str = "eu-west-1";
pub(crate) const REGION_RECOVERY: &str = "eu-central-1";

/// How long replication is held back under writes before the cut.
const LAG: Duration = Duration::from_secs(6);
/// The pair kinds' documented error bound: one heartbeat interval (500 ms
/// in these configs) plus one second for the polls around the instants.
const PAIR_BOUND: f64 = 1.5;
/// What the RDS replica's CloudWatch datapoint says: 30 s behind.
const AWS_LAG_SECONDS: f64 = 30.0;

const PAIR_TARGETS: [&str; 3] = ["erp-db", "erp-ledger", "erp-cache"];

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

/// One region's exporter: every store of the group, AWS reached through the
/// region proxy with the source in `AWS_PRIMARY`.
fn exporter_config(
    name: &str,
    region: &str,
    postgres: &rpo_lab::PostgresPair,
    mariadb: &rpo_lab::mariadb::MariadbPair,
    redis: &rpo_lab::redis::RedisPair,
    aws_endpoint: &str,
) -> String {
    config_with(&format!(
        "{}{}{}{}",
        postgres_target("erp-db", postgres, "30s", true),
        mysql_target("erp-ledger", mariadb, "30s", true),
        redis_target("erp-cache", redis, "30s", true, ""),
        target_block(
            "rds",
            "erp-rds",
            "10m",
            &format!(
                "source_instance = \"erp-rds\"\n{}",
                aws_keys_at(aws_endpoint, AWS_PRIMARY)
            )
        ),
    ))
    .replace(
        "instance = \"test\"",
        &format!("instance = \"{name}\"\nregion = \"{region}\""),
    )
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
    verdict["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().iter())
        .filter(|t| t["ready"] == false)
        .map(|t| t["target"].as_str().unwrap().to_string())
        .collect()
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
    verdict["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().iter())
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no target {target} in {verdict}"))
}

/// The three paths a person on the bridge call reads about the recovery
/// region, in `mode`: `check --from` the recovery exporter, `check
/// --prometheus --region` and the board. They must give the same verdict
/// and name the same failing targets (`check --prometheus` names targets
/// in planned mode only: Prometheus has no per-target unplanned series).
/// Returns the `check --from` verdict.
pub(crate) async fn assert_paths_agree(
    recovery: &ExporterClient,
    prometheus: &str,
    mode: &str,
    expected_go: bool,
    expected_failing: &BTreeSet<String>,
) -> Value {
    let word = if expected_go { "GO" } else { "NO-GO" };
    let code = if expected_go { 0 } else { 1 };
    let base = recovery.url("");
    let base = base.trim_end_matches('/');
    let (from_code, from) = check_json(&["--from", base, "--group", "erp", "--mode", mode]).await;
    assert_eq!(from_code, code, "check --from, {mode}: {from}");
    assert_eq!(from["verdict"], word, "check --from, {mode}: {from}");
    assert_eq!(
        &failing_targets(&from),
        expected_failing,
        "check --from, {mode}: {from}"
    );
    // Prometheus lags the exporter by a scrape and a rule evaluation (a
    // second each here): it must agree within a few of them.
    wait_until(
        Duration::from_secs(10),
        &format!(
            "check --prometheus --region {REGION_RECOVERY} in {mode} mode to say {word} naming {expected_failing:?}"
        ),
        || async {
            let (c, v) = check_json(&[
                "--prometheus",
                prometheus,
                "--group",
                "erp",
                "--mode",
                mode,
                "--region",
                REGION_RECOVERY,
            ])
            .await;
            // The exporter's own per-target NO-GO (planned mode only), and
            // no reason about a target the exporter finds ready.
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
                && (mode != "planned" || &no_go == expected_failing);
            (agrees, v)
        },
    )
    .await;
    let (status, html) = recovery.get(&format!("/?mode={mode}")).await;
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

/// Every rule in Prometheus has been evaluated and none errs.
pub(crate) async fn assert_no_rule_errs(prometheus: &str) {
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
    let erring: Vec<String> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(erring.is_empty(), "rules in error: {erring:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_region_keeps_the_truth_when_the_primary_region_is_lost() {
    let started = Instant::now();
    let (postgres, mut mariadb, redis, (moto, proxy)) = tokio::join!(
        start_pair(),
        start_mariadb_pair(),
        start_redis_pair(Default::default()),
        start_moto_behind_proxy(),
    );
    // RDS: the source in the primary AWS region, its replica in the
    // recovery one, whose ReplicaLag CloudWatch publishes there.
    let aws_regions = Regions::new(AWS_PRIMARY, AWS_RECOVERY);
    let source_arn = create_db_instance(&admin(&moto, AWS_PRIMARY), "erp-rds").await;
    create_read_replica(&admin(&moto, AWS_RECOVERY), "erp-rds-dr", &source_arn).await;
    let datapoint_at = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &moto,
        &aws_regions,
        "AWS/RDS",
        "ReplicaLag",
        &[("DBInstanceIdentifier", "erp-rds-dr")],
        datapoint_at + Duration::from_secs(10),
        AWS_LAG_SECONDS,
    )
    .await;
    let aws_recovery_point = unix_seconds(datapoint_at) - AWS_LAG_SECONDS;

    let endpoint = proxy.endpoint_url();
    let config =
        |name, region| exporter_config(name, region, &postgres, &mariadb, &redis, &endpoint);
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
    let prom = prometheus.url();

    // 1. All GO: both exporters, and the gate read through Prometheus.
    for exporter in [&primary, &recovery] {
        exporter
            .wait_for_go("?group=erp", Duration::from_secs(40), "each exporter GO")
            .await;
    }
    wait_until(
        Duration::from_secs(30),
        "check --prometheus GO from both exporters",
        || async {
            let (code, v) = check_json(&["--prometheus", &prom, "--group", "erp"]).await;
            (
                code == 0 && v["exporters"].as_array().is_some_and(|e| e.len() == 2),
                v,
            )
        },
    )
    .await;
    assert_eq!(
        recovery
            .metric("rpo_recovery_point_timestamp_seconds", &labels("erp-rds"))
            .await,
        Some(aws_recovery_point)
    );

    // 2. Lag under writes, for LAG, then the cut.
    let pg_writer = Writer::start(&postgres.primary_url(), Duration::from_millis(100)).await;
    let maria_writer = MysqlWriter::start(&mariadb.primary_url(), Duration::from_millis(100)).await;
    let redis_writer = RedisWriter::start(&redis, Duration::from_millis(100)).await;
    // Each fault is dated by the clock readings around it.
    let lag_from = [
        between(|| postgres.pause_replay().unwrap()),
        between(|| mariadb.stop_sql_thread().unwrap()),
        between(|| redis.sigstop_replica().unwrap()),
    ];
    tokio::time::sleep(LAG).await;
    // The recovery points held back since the lag began, read just before
    // the cut.
    let text = recovery.metrics().await;
    let before: Vec<f64> = PAIR_TARGETS
        .iter()
        .map(|t| {
            metric_value(&text, "rpo_recovery_point_timestamp_seconds", &labels(t))
                .unwrap_or_else(|| panic!("{t} has no recovery point\n{text}"))
        })
        .collect();
    for ((target, rp), lag) in PAIR_TARGETS.iter().zip(&before).zip(&lag_from) {
        assert!(
            (lag.0 - PAIR_BOUND..=lag.1).contains(rp),
            "{target}: recovery point {rp} should be where the lag began ({lag:?})"
        );
    }

    // The cut: the primary region's stores, exporter and AWS region gone.
    let mut redis = std::sync::Arc::into_inner(redis).expect("the lab owns the Redis pair");
    drop(redis_writer);
    let redis_cut = between(|| redis.kill_primary());
    let aws_lost_at = now_unix();
    proxy.lose(AWS_PRIMARY, RegionFault::Blackhole);
    let cut = [
        between(|| postgres.stop_primary_immediately().unwrap()),
        between(|| mariadb.stop_primary().unwrap()),
        redis_cut,
    ];
    primary.stop().await;
    drop((pg_writer, maria_writer));
    eprintln!("cut at {:?}", started.elapsed());

    // 3. The recovery exporter, every kind.
    // The pairs: each has noticed its source is gone.
    let text = recovery
        .wait_for_metrics(
            Duration::from_secs(20),
            "every pair's source unreachable",
            |text| {
                PAIR_TARGETS
                    .iter()
                    .all(|t| metric_value(text, "rpo_source_reachable", &labels(t)) == Some(0.0))
            },
        )
        .await;
    let exposure_then = Instant::now();
    let exposures: Vec<f64> = PAIR_TARGETS
        .iter()
        .map(|t| metric_value(&text, "rpo_exposure_seconds", &labels(t)).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = recovery.metrics().await;
    let waited = exposure_then.elapsed().as_secs_f64();
    for ((target, rp), exposure) in PAIR_TARGETS.iter().zip(&before).zip(&exposures) {
        // Kept: the very recovery point proven before the cut.
        // Kept: equal up to the float rounding of re-expressing it in the
        // wall clock (sub-microsecond), far below any poll's resolution.
        let kept = metric_value(
            &text,
            "rpo_recovery_point_timestamp_seconds",
            &labels(target),
        );
        assert!(
            kept.is_some_and(|kept| (kept - *rp).abs() < 1e-3),
            "{target}: the recovery point is kept, never reset, never \"now\" ({kept:?} vs {rp})\n{text}"
        );
        // The exposure grows with wall time (it is now − that point).
        let grown =
            metric_value(&text, "rpo_exposure_seconds", &labels(target)).unwrap() - exposure;
        assert!(
            (waited - 1.0..=waited + 1.0).contains(&grown),
            "{target}: exposure grew {grown}s in {waited}s"
        );
    }
    for (i, target) in PAIR_TARGETS.into_iter().enumerate() {
        let planned = target_verdict_in(&recovery, target, "planned").await;
        assert_eq!(planned["ready"], false, "{target}: {planned}");
        assert!(
            reason_codes(&planned).contains(&"source_unreachable".to_string()),
            "{target}: {planned}"
        );
        let unplanned = target_verdict_in(&recovery, target, "unplanned").await;
        let rp = unplanned["recovery_point_unix"].as_f64();
        let window = unplanned["loss_window_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("{target}: no loss window in {unplanned}"));
        // The injected lag: from where it began to the source's end (the
        // last contact with it), each between two clock readings. The
        // recovery point is the one kept since the lag began.
        let (lag, cut) = (lag_from[i], cut[i]);
        let injected = (cut.0 - lag.1)..=(cut.1 - lag.0);
        eprintln!("{target}: loss window {window:.3}s, injected lag {injected:.3?}s");
        assert!(
            (injected.start() - PAIR_BOUND..=injected.end() + PAIR_BOUND).contains(&window),
            "{target}: loss window {window}s, injected lag {injected:?}s: {unplanned}"
        );
        // (the exposition and the JSON print the same f64 to different
        // precision)
        assert!(
            rp.is_some_and(|rp| (rp - before[i]).abs() < 0.001),
            "{target}: recovery point {} before the cut: {unplanned}",
            before[i]
        );
        assert!(
            !reason_codes(&unplanned).contains(&"source_unreachable".to_string()),
            "{target}: {unplanned}"
        );
    }
    // AWS: the source region's calls unanswered, the replica region's
    // datapoint still the evidence (the shared assertion of every AWS kind).
    assert_source_region_lost(
        &recovery,
        "erp-rds",
        aws_recovery_point,
        aws_lost_at,
        Some(1.0),
    )
    .await;
    // The hung Redis replica is the one thing that blocks an unplanned
    // failover; Postgres and MariaDB replicas are healthy and within budget.
    let cache = target_verdict_in(&recovery, "erp-cache", "unplanned").await;
    let codes = reason_codes(&cache);
    assert!(
        codes.contains(&"replica_unreachable".to_string())
            && codes
                .iter()
                .all(|c| c == "replica_unreachable" || c == "evidence_stale"),
        "{cache}"
    );

    // The paths agree, in both modes.
    let all: BTreeSet<String> = ["erp-db", "erp-ledger", "erp-cache", "erp-rds"]
        .into_iter()
        .map(String::from)
        .collect();
    let hung: BTreeSet<String> = [String::from("erp-cache")].into();
    let from = assert_paths_agree(&recovery, &prom, "planned", false, &all).await;
    assert_eq!(from["exporter"]["region"], REGION_RECOVERY, "{from}");
    let from = assert_paths_agree(&recovery, &prom, "unplanned", false, &hung).await;
    for target in ["erp-db", "erp-ledger"] {
        assert!(
            target_in(&from, target)["loss_window_seconds"]
                .as_f64()
                .is_some(),
            "{from}"
        );
    }

    // The alerts: the lost exporter, the recovery exporter's NO-GO and the
    // sources' broken links; none errs.
    let down = wait_for_alert(&webhook, "RPOExporterDown", &[("instance", &primary_at)]).await;
    assert_eq!(down["labels"]["failover_gate"], "block", "{down}");
    assert!(
        down["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("(exporter primary in {REGION_PRIMARY})")),
        "{down}"
    );
    wait_for_alert(
        &webhook,
        "FailoverNotReady",
        &[("instance", &recovery_at), ("group", "erp")],
    )
    .await;
    for target in PAIR_TARGETS {
        wait_for_alert(
            &webhook,
            "ReplicationLinkDown",
            &[("instance", &recovery_at), ("target", target)],
        )
        .await;
    }
    assert!(
        notified(&webhook, "RPOExporterDown", "firing")
            .iter()
            .all(|a| a["labels"]["instance"] == primary_at.as_str()),
        "only the lost exporter is down"
    );
    assert!(notified(&webhook, "RPOExporterAbsent", "firing").is_empty());
    assert_no_rule_errs(&prom).await;

    // The Redis replica resumes: whatever reached it before the primary
    // died moves its recovery point forward, never past the cut, and every
    // path turns GO for an unplanned failover together.
    redis.sigcont_replica().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the resumed Redis replica to be ready for an unplanned failover",
        || async {
            let v = target_verdict_in(&recovery, "erp-cache", "unplanned").await;
            (v["ready"] == true, v)
        },
    )
    .await;
    let unplanned = assert_paths_agree(&recovery, &prom, "unplanned", true, &BTreeSet::new()).await;
    let cache = target_in(&unplanned, "erp-cache");
    let rp = cache["recovery_point_unix"].as_f64().unwrap();
    assert!(
        (before[2]..=redis_cut.1).contains(&rp),
        "the Redis recovery point after resuming: {cache}"
    );
    assert_paths_agree(&recovery, &prom, "planned", false, &all).await;
    assert_no_rule_errs(&prom).await;

    recovery.stop().await;
    drop(prometheus);
    drop(alertmanager);
    eprintln!("drill done in {:?}", started.elapsed());
}
