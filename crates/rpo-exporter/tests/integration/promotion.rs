//! Following a pair across a promotion, on real servers (SPEC section 11):
//! the loss a promotion actually took (Postgres and Redis, checked against
//! what the test itself wrote), a planned switchover, split brain (in both
//! modes, and its alert through Prometheus and Alertmanager), failback
//! measured in the other direction without a restart, and
//! `rpo-exporter drill` end to end with its report (the HTML rendered in
//! headless Chromium; the screenshot is kept under target/tmp).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rpo_lab::monitoring::{Alertmanager, Prometheus, WebhookReceiver};
use rpo_lab::redis::RedisPair;
use rpo_lab::support::*;
use rpo_lab::PostgresPair;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");
const T: &str = "erp-db";
/// The heartbeat interval of these tests: the error bound of a measured loss.
const HEARTBEAT: f64 = 1.0;

/// A `[[postgres]]` block with a 1 s heartbeat.
fn postgres_block(pair: &PostgresPair, budget: &str) -> String {
    target_block(
        "postgres",
        T,
        budget,
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\nheartbeat = {{ interval = \"1s\" }}",
            pair.primary_url(),
            pair.replica_url()
        ),
    )
}

/// Runs a blocking lab step off the async threads.
async fn lab<T: Send + 'static>(
    what: &str,
    step: impl FnOnce() -> rpo_lab::LabResult<T> + Send + 'static,
) -> T {
    start_blocking(what, step).await
}

/// `rpo-exporter drill` as a child process, writing into `dir/report`.
fn start_drill(dir: &Path, config_text: &str) -> tokio::process::Child {
    let config = write_file(dir, "rpo-exporter.toml", config_text);
    tokio::process::Command::new(BIN)
        .args(["drill", "--config"])
        .arg(&config)
        .args(["--group", "erp", "--timeout", "120s", "--report"])
        .arg(dir.join("report"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rpo-exporter drill starts")
}

/// Waits for the drill to end: its exit code and what it printed.
async fn drill_ends(child: tokio::process::Child) -> (i32, String) {
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("the drill ends within 90 s of the promotion")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Waits until `rpo_measured_loss_seconds` of `target` is exported.
async fn measured_loss(exporter: &Exporter, target: &str) -> (f64, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = exporter.metrics().await;
        if let Some(loss) = metric_value(&text, "rpo_measured_loss_seconds", &labels(target)) {
            return (loss, text);
        }
        if std::time::Instant::now() > deadline {
            // The verdict says why the loss is not measured
            // (`promotion.loss_not_measured`).
            let verdict = exporter.target_verdict(target).await;
            panic!("no measured loss within 30 s; the verdict: {verdict:#}\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_region_loss_measures_the_loss_taken_and_the_drill_reports_it_then_failback_returns_to_go(
) {
    let pair = start_pair().await;
    let config_text = config_with(&postgres_block(&pair, "5s"));
    let exporter = Exporter::start(&config_text).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the drill")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let drill = start_drill(dir.path(), &config_text);
    // The drill proves the pair (its own heartbeat rows) before the failure.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The region is lost: the replica falls behind for 6 s, then the
    // primary dies without flushing anything more to it.
    let replica_stopped = now_unix();
    let p = pair.clone();
    lab("stop the replica", move || p.stop_replica()).await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let primary_lost = now_unix();
    let p = pair.clone();
    lab("stop the primary immediately", move || {
        p.stop_primary_immediately()
    })
    .await;
    drop(writer);
    let expected = primary_lost - replica_stopped;
    let p = pair.clone();
    lab("start and promote the replica", move || {
        p.start_replica()?;
        p.promote_replica()
    })
    .await;

    // The exporter measured it: what the old primary acknowledged minus
    // what the promoted side holds, within one heartbeat interval.
    let (loss, text) = measured_loss(&exporter, T).await;
    eprintln!("postgres: measured loss {loss}s, expected about {expected}s");
    assert!(
        (loss - expected).abs() <= HEARTBEAT + 1.0,
        "measured loss {loss}s, expected about {expected}s"
    );
    assert_eq!(metric_value(&text, "rpo_promoted", &labels(T)), Some(1.0));
    assert_eq!(
        metric_value(&text, "rpo_split_brain", &labels(T)),
        Some(0.0)
    );
    let predicted = metric_value(
        &text,
        "rpo_predicted_exposure_at_promotion_seconds",
        &labels(T),
    )
    .unwrap();
    assert!(
        (predicted - expected).abs() <= HEARTBEAT + 1.0,
        "predicted {predicted}s, expected about {expected}s"
    );
    let lost_bytes = metric_value(&text, "rpo_measured_loss_bytes", &labels(T)).unwrap();
    assert!(lost_bytes > 0.0, "6 s of writes lost: {lost_bytes} bytes");
    assert!(metric_value(&text, "rpo_promotion_timestamp_seconds", &labels(T)).is_some());

    // The verdict says it in words, in both modes.
    let (status, planned) = exporter.verdict("?mode=planned").await;
    assert_eq!(status, 503, "{planned}");
    let db = exporter.target_verdict(T).await;
    let words = reasons(&db);
    assert!(
        words.contains("replica promoted at ") && words.contains("nothing replicates from it yet"),
        "{db}"
    );
    assert!(db["reason_details"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["code"] == "replica_promoted"));
    assert_eq!(db["promotion"]["side"], "replica_url");
    let (status, unplanned) = exporter.verdict("?mode=unplanned").await;
    assert_eq!(status, 503, "6 s lost, budget 5 s: {unplanned}");
    assert!(
        reasons(&unplanned).contains("erp-db: measured loss ")
            && reasons(&unplanned).contains("exceeds budget 5s"),
        "{unplanned}"
    );
    // ... on `check` and on the board.
    let check = tokio::process::Command::new(BIN)
        .args(["check", "--from", &exporter.url("")])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{table}");
    assert!(
        table.contains("  Notes:\n    - erp-db: replica promoted at "),
        "{table}"
    );
    let (_, board) = exporter.get("/").await;
    assert!(
        board.contains("<div class=\"note\">replica promoted at "),
        "{board}"
    );

    // The drill ends (6 s lost against a 5 s budget: exit 1) and its
    // report says the same.
    let (code, out) = drill_ends(drill).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL"), "{out}");
    let report = read_json(&dir.path().join("report/drill-report.json"));
    assert_eq!(report["result"], "fail");
    let target = &report["targets"][0];
    assert_eq!(target["target"], T);
    assert_eq!(target["kind"], "postgres");
    assert_eq!(target["budget_seconds"], 5.0);
    assert!(target["promoted_at"].is_string(), "{target}");
    let drilled = target["measured_loss_seconds"].as_f64().unwrap();
    assert!(
        (drilled - expected).abs() <= HEARTBEAT + 1.0,
        "the drill measured {drilled}s, expected about {expected}s"
    );
    assert!(
        target["predicted_exposure_seconds"].as_f64().is_some(),
        "{target}"
    );
    assert_eq!(target["within_budget"], false);
    assert!(
        target["first_heartbeat_after_start_seconds"]
            .as_f64()
            .is_some(),
        "the promoted side accepted the drill's heartbeat: {target}"
    );
    let md = std::fs::read_to_string(dir.path().join("report/drill-report.md")).unwrap();
    assert!(
        md.starts_with("# Failover drill of group erp: FAIL"),
        "{md}"
    );
    assert!(md.contains("fail: measured loss "), "{md}");
    let html = dir.path().join("report/drill-report.html");
    let url = format!("file://{}", html.display());
    let dom = crate::board::rendered_dom(&url).await;
    assert!(
        dom.contains(r#"<span id="result" class="nogo">FAIL</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr class="fail" data-target="erp-db">"#),
        "{dom}"
    );
    assert!(dom.contains("<svg id=\"chart\""), "{dom}");
    eprintln!("drill output:\n{out}\n{md}");
    let shot = crate::board::screenshot(&url, "drill-report.png").await;
    eprintln!("drill report screenshot: {}", shot.display());

    // Failback: the old primary is rebuilt as a replica of the promoted
    // side. The same exporter measures that direction and returns to GO.
    let p = pair.clone();
    lab("rebuild the old primary as a replica", move || {
        p.rebuild_primary_as_replica()
    })
    .await;
    let go = exporter
        .wait_for_go("", Duration::from_secs(30), "GO in the other direction")
        .await;
    let db = &go["groups"][0]["targets"][0];
    assert_eq!(db["direction"], "replica_url -> primary_url", "{db}");
    assert!(
        db["notes"]
            .to_string()
            .contains("replication is measured from replica_url to primary_url"),
        "{db}"
    );
    let text = exporter.metrics().await;
    assert_eq!(metric_value(&text, "rpo_promoted", &labels(T)), Some(1.0));
    let (written, seen) = heartbeat_written_and_seen(&text, T);
    assert!(
        written - seen < 2.0 && now_unix() - seen < 3.0,
        "the heartbeat goes to the promoted side and is read on the rebuilt one: written {written}, seen {seen}"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_planned_switchover_measures_almost_no_loss_and_the_drill_passes() {
    let pair = start_pair().await;
    let config_text = config_with(&postgres_block(&pair, "5s"));
    let exporter = Exporter::start(&config_text).await;
    let dir = tempfile::tempdir().unwrap();
    let drill = start_drill(dir.path(), &config_text);
    exporter
        .wait_for_go(
            "",
            Duration::from_secs(15),
            "GO: writes stopped, replica caught up",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Planned: the primary is shut down cleanly (it sends all its WAL to
    // the replica first), then the replica is promoted.
    let p = pair.clone();
    lab("switch over", move || {
        p.stop_primary()?;
        p.promote_replica()
    })
    .await;
    let (loss, _) = measured_loss(&exporter, T).await;
    eprintln!("planned switchover: measured loss {loss}s");
    assert!(loss < 2.0, "a planned switchover measured {loss}s");

    let (code, out) = drill_ends(drill).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS"), "{out}");
    let report = read_json(&dir.path().join("report/drill-report.json"));
    assert_eq!(report["result"], "pass", "{report}");
    let target = &report["targets"][0];
    assert!(
        target["measured_loss_seconds"].as_f64().unwrap() < 2.0,
        "{target}"
    );
    assert_eq!(target["within_budget"], true);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_is_no_go_in_both_modes_within_two_polls_and_alerts() {
    let pair = start_pair().await;
    let exporter = Exporter::start(&config_with(&postgres_block(&pair, "5s"))).await;
    let rules = tempfile::tempdir().unwrap();
    let webhook = WebhookReceiver::start().unwrap();
    let alertmanager = Alertmanager::start(&webhook.url()).unwrap();
    let prometheus = Prometheus::start(
        "rpo-exporter",
        &[exporter.addr.to_string()],
        &crate::e2e::fast_rules(rules.path()),
        Some(alertmanager.port()),
    )
    .unwrap();
    let _writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the split")
        .await;

    // The replica is promoted while the old primary keeps taking writes.
    let p = pair.clone();
    lab("promote the replica", move || p.promote_replica()).await;
    let runs = |text: &str| metric_value(text, "rpo_probe_runs_total", &labels(T)).unwrap();
    let runs_after_promotion = runs(&exporter.metrics().await);
    let text = exporter
        .wait_for_metrics(Duration::from_secs(15), "rpo_split_brain 1", |text| {
            metric_value(text, "rpo_split_brain", &labels(T)) == Some(1.0)
        })
        .await;
    assert!(
        runs(&text) - runs_after_promotion <= 2.0,
        "seen within two polls: {} polls",
        runs(&text) - runs_after_promotion
    );
    for mode in ["planned", "unplanned"] {
        let (status, verdict) = exporter.verdict(&format!("?mode={mode}")).await;
        assert_eq!(status, 503, "{mode}: {verdict}");
        let first = first_reason(&verdict);
        assert!(
            first
                .starts_with("erp-db: split brain: primary_url and replica_url both accept writes"),
            "{mode}: {first}"
        );
        assert_eq!(
            verdict["reason_details"][0]["code"], "split_brain",
            "{mode}"
        );
    }
    assert_eq!(
        exporter.metric("rpo_target_ready", &labels(T)).await,
        Some(0.0)
    );

    // The alert reaches the receiver, with the block gate and its runbook.
    wait_until(
        Duration::from_secs(60),
        "RPOSplitBrain to reach the receiver",
        || async {
            let alerts = crate::e2e::notified(&webhook, "RPOSplitBrain", "firing");
            (
                !alerts.is_empty(),
                format!("{alerts:?} / {}", prometheus.log()),
            )
        },
    )
    .await;
    let alert = crate::e2e::notified(&webhook, "RPOSplitBrain", "firing").remove(0);
    assert_eq!(alert["labels"]["failover_gate"], "block");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["target"], T);
    assert_eq!(
        alert["annotations"]["runbook_url"],
        rpo_lab::support::shipped_runbook_url("RPOSplitBrain").as_str()
    );
    exporter.stop().await;
}

/// Writes `seq:last = n` on the primary every 50 ms for `seconds`; returns
/// when each write was acknowledged (this machine's clock), by `n`. Each
/// write carries 512 KiB beside it, so the stream outgrows the socket
/// buffers of a frozen replica and the rest stays on the primary.
async fn write_sequence(pair: &RedisPair, seconds: f64) -> Vec<f64> {
    let client = pair.primary_client().unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let padding = "x".repeat(512 * 1024);
    let started = now_unix();
    let mut acknowledged = Vec::new();
    while now_unix() - started < seconds {
        let n = acknowledged.len();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(format!("padding:{}", n % 4))
            .arg(&padding)
            .ignore()
            .cmd("SET")
            .arg("seq:last")
            .arg(n)
            .ignore()
            .query_async(&mut connection)
            .await
            .unwrap();
        acknowledged.push(now_unix());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_region_loss_measures_what_the_data_says_was_lost_then_failback_returns_to_go() {
    let mut pair = start_blocking("a redis pair", RedisPair::start).await;
    let block = target_block(
        "redis",
        "erp-sessions",
        "3s",
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\nheartbeat = {{ interval = \"1s\" }}",
            pair.primary_url(),
            pair.replica_url()
        ),
    );
    let exporter = Exporter::start(&config_with(&block)).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the loss")
        .await;
    // GO can come from replication offsets alone, before a first heartbeat
    // has replicated; a replica frozen then truly holds no heartbeat of this
    // exporter, and the loss is (rightly) not measured. Under load that
    // happened in CI: wait for one on the replica.
    exporter
        .wait_for_metrics(
            Duration::from_secs(15),
            "a heartbeat seen on the replica",
            |text| {
                metric_value(
                    text,
                    "rpo_heartbeat_timestamp_seconds",
                    &labels("erp-sessions"),
                )
                .is_some()
            },
        )
        .await;

    // The replica freezes; the primary takes 5 s of numbered writes and dies.
    pair.sigstop_replica().unwrap();
    let acknowledged = write_sequence(&pair, 5.0).await;
    pair.kill_primary();
    pair.sigcont_replica().unwrap();
    // Whatever the replica's socket held past the freeze is applied now.
    wait_until(
        Duration::from_secs(10),
        "the replica to see its link down",
        || async {
            let info = pair.replica_info().unwrap_or_default();
            (info.contains("master_link_status:down"), info)
        },
    )
    .await;
    pair.promote_replica().unwrap();

    // The truth, from the data: the newest write the promoted side holds.
    let survived = match pair.replica_command(&["GET", "seq:last"]).unwrap() {
        redis::Value::BulkString(bytes) => {
            let n: usize = String::from_utf8_lossy(&bytes).parse().unwrap();
            acknowledged[n]
        }
        // None of the numbered writes reached it: everything since the
        // first one is lost.
        _ => acknowledged[0],
    };
    let truth = acknowledged.last().unwrap() - survived;
    let (loss, text) = measured_loss(&exporter, "erp-sessions").await;
    eprintln!("redis: measured loss {loss}s; the data says {truth}s");
    assert!(
        (loss - truth).abs() <= HEARTBEAT + 1.0,
        "measured loss {loss}s; the data says {truth}s"
    );
    assert!(truth > 1.0, "the test lost writes: {truth}s");
    assert_eq!(
        metric_value(&text, "rpo_promoted", &labels("erp-sessions")),
        Some(1.0)
    );
    assert!(
        metric_value(&text, "rpo_measured_loss_bytes", &labels("erp-sessions"))
            .is_some_and(|b| b > 0.0),
        "{text}"
    );
    let db = exporter.target_verdict("erp-sessions").await;
    assert!(reasons(&db).contains("replica promoted at "), "{db}");

    // Failback: the old primary comes back empty and replicates from the
    // promoted side; measured that way, it is GO again.
    pair.start_primary().unwrap();
    pair.replicate_primary_from_replica().unwrap();
    let pair = Arc::new(pair);
    let p = pair.clone();
    lab("the old primary to follow", move || {
        p.wait_for_primary_link_up(Duration::from_secs(15))
    })
    .await;
    let go = exporter
        .wait_for_go("", Duration::from_secs(30), "GO in the other direction")
        .await;
    assert_eq!(
        go["groups"][0]["targets"][0]["direction"],
        "replica_url -> primary_url"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_refuses_what_it_cannot_drill_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let queue_only = config_with(&sql_queue_target(
        "erp-outbox",
        "postgres://m@127.0.0.1:1/x",
        "30s",
        "SELECT 0, now()",
    ));
    let config = write_file(dir.path(), "queue.toml", &queue_only);
    for (args, says) in [
        (
            vec!["--group", "crm"],
            "unknown group `crm`; configured groups: erp",
        ),
        (
            vec!["--group", "erp"],
            "group erp has no target whose promotion the exporter can follow",
        ),
    ] {
        let output = tokio::process::Command::new(BIN)
            .args(["drill", "--config"])
            .arg(&config)
            .args(&args)
            .arg("--report")
            .arg(dir.path().join("report"))
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
