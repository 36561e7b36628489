//! The real topology's monitoring side (SPEC section 9): two exporters, one
//! per region (`primary` in eu-west-1, `dr` in eu-central-1, each with its
//! own `[exporter] instance` and `region`), both measuring group `erp`, and
//! one real Prometheus scraping both every second with the shipped
//! `alerts/` loaded as they are (their `for:` windows unshortened, so alerts
//! stay pending for the length of a phase).
//!
//! Each exporter watches its own Postgres pair as `erp-db`, so that a fault
//! can make exactly one of them NO-GO; both watch the same outbox (a
//! `sql_queue` on the first pair) as `erp-outbox`, so the same target series
//! exist twice in Prometheus, as in production.
//!
//! `check --prometheus` must be NO-GO whenever either exporter is NO-GO,
//! down or gone, already while the alerts are pending, naming the exporter
//! and its region; GO only when both are GO; `--mode unplanned` reads
//! `rpo_failover_ready_unplanned`; `--region` scopes it to one region. And
//! no rule errs while two exporters are scraped (the many-to-many match of
//! `IntegrationQueueBacklogAging` did), and the overview's verdict tile is
//! NO-GO, not a stale GO, once an exporter dies.

use std::time::{Duration, Instant};

use serde_json::Value;

use rpo_lab::monitoring::Prometheus;
use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

const OUTBOX: &str = "CREATE TABLE outbox (id bigserial PRIMARY KEY, payload text, \
     created_at timestamptz NOT NULL DEFAULT now(), processed_at timestamptz)";
const UNPROCESSED: &str = "SELECT count(*), min(created_at) FROM outbox WHERE processed_at IS NULL";

/// The test frame, as exporter `name` in `region`: its own pair as
/// `erp-db` (budget 5 s, with a heartbeat), the shared outbox as
/// `erp-outbox` (budget 1 h).
fn exporter_config(name: &str, region: &str, pair: &rpo_lab::PostgresPair, outbox: &str) -> String {
    config_with(&format!(
        "{}{}",
        postgres_target("erp-db", pair, "5s", true),
        sql_queue_target("erp-outbox", outbox, "1h", UNPROCESSED)
    ))
    .replace(
        "instance = \"test\"",
        &format!("instance = \"{name}\"\nregion = \"{region}\""),
    )
}

/// `rpo-exporter check --prometheus URL ARGS...`: exit code, stdout, stderr.
async fn check(prometheus: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(BIN)
        .args(["check", "--prometheus", prometheus])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The same with `--output json`: exit code and the verdict.
async fn check_json(prometheus: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = check(prometheus, &all).await;
    let verdict = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --output json printed no JSON ({e}): {stdout}{stderr}"));
    (code, verdict)
}

/// The reason details with `code`.
fn with_code<'a>(verdict: &'a Value, code: &str) -> Vec<&'a Value> {
    verdict["reason_details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"] == code)
        .collect()
}

/// What `check --prometheus` lists for the exporter named `name`.
fn listed<'a>(verdict: &'a Value, name: &str) -> &'a Value {
    verdict["exporters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["instance"] == name)
        .unwrap_or_else(|| panic!("exporter {name} not listed in {verdict}"))
}

/// Waits until `check --prometheus ARGS --output json` satisfies `condition`.
async fn wait_for_check(
    prometheus: &str,
    args: &[&str],
    what: &str,
    condition: impl Fn(i32, &Value) -> bool,
) -> Value {
    wait_until(Duration::from_secs(60), what, || async {
        let (code, verdict) = check_json(prometheus, args).await;
        (condition(code, &verdict), verdict)
    })
    .await
}

/// The overview dashboard's verdict tile for group erp, on this Prometheus.
async fn verdict_tile(prometheus: &str) -> Value {
    let body = prometheus_query(prometheus, &crate::dashboards::overview_verdict_query()).await;
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prometheus_is_as_strict_as_the_strictest_of_two_exporters() {
    let (one, two) = tokio::join!(start_pair(), start_pair());
    one.primary_sql(OUTBOX).unwrap();
    one.primary_sql("INSERT INTO outbox (payload) VALUES ('waiting')")
        .unwrap();
    let outbox = one.primary_url();
    let primary = Exporter::start(&exporter_config("primary", "eu-west-1", &one, &outbox)).await;
    let dr = Exporter::start(&exporter_config("dr", "eu-central-1", &two, &outbox)).await;
    let (primary_at, dr_at) = (primary.addr.to_string(), dr.addr.to_string());
    let rules = files_in(&rpo_lab::repo_root().join("alerts"), "yml");
    let prometheus = Prometheus::start(
        "rpo-exporter",
        &[primary_at.clone(), dr_at.clone()],
        &rules,
        None,
    )
    .unwrap();
    let prom = prometheus.url();

    for exporter in [&primary, &dr] {
        exporter
            .wait_for_go("?group=erp", Duration::from_secs(30), "each exporter GO")
            .await;
    }
    // Each exporter says who it is, and publishes both gates.
    let text = dr.metrics().await;
    assert_metric(
        &text,
        "rpo_exporter_info",
        &[("exporter_instance", "dr"), ("region", "eu-central-1")],
        Some(1.0),
    );
    assert_metric(
        &text,
        "rpo_failover_ready_unplanned",
        &[("group", "erp")],
        Some(1.0),
    );
    let (_, own) = dr.verdict("?group=erp").await;
    assert_eq!(own["exporter"]["instance"], "dr", "{own}");
    assert_eq!(own["exporter"]["region"], "eu-central-1", "{own}");

    // (c) Both GO: GO, listing both with their regions.
    let go = wait_for_check(
        &prom,
        &["--group", "erp"],
        "GO from both exporters",
        |code, v| code == 0 && v["exporters"].as_array().is_some_and(|e| e.len() == 2),
    )
    .await;
    assert_eq!(go["verdict"], "GO", "{go}");
    assert_eq!(go["reason_details"], serde_json::json!([]), "{go}");
    for (name, region, at) in [
        ("primary", "eu-west-1", &primary_at),
        ("dr", "eu-central-1", &dr_at),
    ] {
        let e = listed(&go, name);
        assert_eq!(e["region"], region, "{go}");
        assert_eq!(e["scrape_instance"], at.as_str(), "{go}");
        assert_eq!(e["verdict"], "GO", "{go}");
    }
    let (code, table, _) = check(&prom, &["--group", "erp"]).await;
    assert_eq!(code, 0, "{table}");
    assert!(table.starts_with("VERDICT: GO  (planned mode"), "{table}");
    assert!(
        table.contains(&format!("primary   eu-west-1     {primary_at}")),
        "{table}"
    );
    assert!(
        table.contains(&format!("dr        eu-central-1  {dr_at}")),
        "{table}"
    );
    let tile = verdict_tile(&prom).await;
    assert_eq!(tile[0]["value"][1], "1", "{tile}");

    // No rule errs while two exporters export the same target series.
    let queues = prometheus_query(
        &prom,
        "count(rpo_queue_oldest_message_age_seconds{target=\"erp-outbox\"})",
    )
    .await;
    assert_eq!(queues["data"]["result"][0]["value"][1], "2", "{queues}");
    assert_rules_healthy(&prom).await;

    // Usage errors exit 2 and say what to do.
    let (code, _, err) = check("127.0.0.1:9090", &["--group", "erp"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--prometheus `127.0.0.1:9090` is not a base URL"),
        "{err}"
    );
    assert!(err.contains("like http://prometheus:9090"), "{err}");
    let (code, _, err) = check(&prom, &["--group", "epr"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown group `epr`; configured groups: erp"),
        "{err}"
    );
    let (code, _, err) = check(&prom, &["--group", "erp", "--region", "us-east-1"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown region `us-east-1`; the exporters Prometheus knows run in: eu-central-1, eu-west-1"),
        "{err}"
    );

    // (a) dr's replica refuses connections: dr's own verdict is NO-GO, and
    // so is the gate, already while the alerts are pending — the
    // reproduction of issue 9 went NO-GO, NO-GO, then GO.
    two.stop_replica().unwrap();
    let nogo = wait_for_check(
        &prom,
        &["--group", "erp"],
        "NO-GO naming dr, with FailoverNotReady pending",
        |code, v| {
            code == 1
                && !with_code(v, "exporter_no_go").is_empty()
                && with_code(v, "gate_alert_pending").iter().any(|r| {
                    r["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("FailoverNotReady is pending")
                })
        },
    )
    .await;
    let no_go = with_code(&nogo, "exporter_no_go");
    assert_eq!(no_go.len(), 1, "{nogo}");
    assert_eq!(no_go[0]["target"], "erp-db", "{nogo}");
    assert_eq!(no_go[0]["group"], "erp", "{nogo}");
    assert_eq!(no_go[0]["exporter"]["instance"], "dr", "{nogo}");
    assert_eq!(no_go[0]["exporter"]["region"], "eu-central-1", "{nogo}");
    assert_eq!(
        no_go[0]["message"],
        format!(
            "exporter dr in eu-central-1 at {dr_at} says group erp is NO-GO: target erp-db fails the gate (rpo_target_ready is 0)"
        ),
        "{nogo}"
    );
    let pending = with_code(&nogo, "gate_alert_pending");
    let failover = pending
        .iter()
        .find(|r| {
            r["message"]
                .as_str()
                .unwrap()
                .starts_with("FailoverNotReady")
        })
        .unwrap();
    assert_eq!(
        failover["message"],
        "FailoverNotReady is pending (inside its for:, about to fire): Group erp is NO-GO for failover (exporter dr in eu-central-1)",
        "{nogo}"
    );
    assert_eq!(failover["exporter"]["region"], "eu-central-1", "{nogo}");
    assert_eq!(listed(&nogo, "dr")["verdict"], "NO-GO", "{nogo}");
    assert_eq!(listed(&nogo, "primary")["verdict"], "GO", "{nogo}");
    // It stays NO-GO through the alerts' for: window (never the GO the
    // reproduction ended with), and the table says who and where.
    for _ in 0..3 {
        let (code, table, _) = check(&prom, &["--group", "erp"]).await;
        assert_eq!(code, 1, "{table}");
        assert!(table.starts_with("VERDICT: NO-GO"), "{table}");
        assert!(
            table.contains(&format!(
                "  - exporter dr in eu-central-1 at {dr_at} says group erp is NO-GO: target erp-db fails the gate"
            )),
            "{table}"
        );
        assert!(
            table.contains(&format!("dr        eu-central-1  {dr_at}  NO-GO")),
            "{table}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Unplanned: a replica that refuses connections blocks there too, read
    // from rpo_failover_ready_unplanned, the target named from
    // rpo_target_ready_unplanned.
    let (code, unplanned) = check_json(&prom, &["--group", "erp", "--mode", "unplanned"]).await;
    assert_eq!(code, 1, "{unplanned}");
    let no_go = with_code(&unplanned, "exporter_no_go");
    assert_eq!(no_go.len(), 1, "{unplanned}");
    assert_eq!(
        no_go[0]["message"].as_str().unwrap(),
        format!(
            "exporter dr in eu-central-1 at {dr_at} says group erp is NO-GO: target erp-db fails the gate (rpo_target_ready_unplanned is 0)"
        ),
        "{unplanned}"
    );
    assert_eq!(no_go[0]["target"], "erp-db", "{unplanned}");
    // The tile is NO-GO as soon as one exporter is.
    let tile = verdict_tile(&prom).await;
    assert_eq!(tile[0]["value"][1], "0", "{tile}");
    // Scoped to the primary region, dr and its alerts are left out.
    let (code, west) = check_json(&prom, &["--group", "erp", "--region", "eu-west-1"]).await;
    assert_eq!(code, 0, "{west}");
    assert_eq!(
        listed(&west, "dr")["verdict"],
        "excluded (--region)",
        "{west}"
    );

    two.start_replica().unwrap();
    wait_for_check(&prom, &["--group", "erp"], "GO again", |code, _| code == 0).await;

    // (d) dr's primary is gone: planned NO-GO (source unreachable), while
    // the unplanned verdict, read from rpo_failover_ready_unplanned, is GO:
    // the replica is healthy and the loss window small. The planned-only
    // alerts (FailoverNotReady, ReplicationLinkDown, RPOBudgetExceeded) do
    // not block it.
    two.stop_primary().unwrap();
    let planned = wait_for_check(
        &prom,
        &["--group", "erp"],
        "planned NO-GO once dr's primary is gone",
        |code, v| code == 1 && !with_code(v, "exporter_no_go").is_empty(),
    )
    .await;
    assert_eq!(listed(&planned, "dr")["verdict"], "NO-GO", "{planned}");
    let unplanned = wait_for_check(
        &prom,
        &["--group", "erp", "--mode", "unplanned"],
        "unplanned GO with dr's primary gone",
        |code, _| code == 0,
    )
    .await;
    assert_eq!(unplanned["mode"], "unplanned", "{unplanned}");
    assert_eq!(listed(&unplanned, "dr")["verdict"], "GO", "{unplanned}");
    // ...and at the same time planned is still NO-GO: two series, two answers.
    let ready = prometheus_query(&prom, "rpo_failover_ready{group=\"erp\"}").await;
    let dr_planned = ready["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metric"]["instance"] == dr_at.as_str())
        .map(|s| s["value"][1].clone());
    assert_eq!(dr_planned, Some(Value::from("0")), "{ready}");
    two.start_primary().unwrap();
    wait_for_check(
        &prom,
        &["--group", "erp"],
        "GO with dr's primary back",
        |code, _| code == 0,
    )
    .await;

    // (b) The primary region's exporter stops: within the staleness bound
    // (Prometheus' next scrape: up == 0) the gate is NO-GO, naming it.
    let stopped = Instant::now();
    primary.stop().await;
    let down = wait_until(
        Duration::from_secs(20),
        "NO-GO naming the stopped exporter",
        || async {
            let (code, v) = check_json(&prom, &["--group", "erp", "--max-sample-age", "10s"]).await;
            (code == 1 && !with_code(&v, "exporter_down").is_empty(), v)
        },
    )
    .await;
    eprintln!("NO-GO {:?} after the exporter stopped", stopped.elapsed());
    let reason = with_code(&down, "exporter_down")[0];
    assert_eq!(
        reason["message"],
        format!(
            "exporter primary in eu-west-1 at {primary_at} is down: Prometheus cannot scrape it (up == 0), so its verdict is unknown"
        ),
        "{down}"
    );
    assert_eq!(reason["exporter"]["region"], "eu-west-1", "{down}");
    assert_eq!(listed(&down, "primary")["verdict"], "unknown", "{down}");
    assert_eq!(listed(&down, "dr")["verdict"], "GO", "{down}");
    let (code, table, _) = check(&prom, &["--group", "erp"]).await;
    assert_eq!(code, 1, "{table}");
    assert!(
        table.contains(&format!(
            "  - exporter primary in eu-west-1 at {primary_at} is down"
        )),
        "{table}"
    );
    // The dashboard tile does not keep the dead exporter's last GO.
    let tile = verdict_tile(&prom).await;
    assert_eq!(tile[0]["value"][1], "0", "{tile}");
    // The primary region is lost: gate on the recovery region.
    for mode in ["planned", "unplanned"] {
        let (code, recovery) = check_json(
            &prom,
            &["--group", "erp", "--mode", mode, "--region", "eu-central-1"],
        )
        .await;
        assert_eq!(code, 0, "{mode}: {recovery}");
        assert_eq!(
            listed(&recovery, "primary")["verdict"],
            "excluded (--region)"
        );
        assert_eq!(listed(&recovery, "dr")["verdict"], "GO");
    }
    assert_rules_healthy(&prom).await;
    dr.stop().await;
    drop(prometheus);
}

/// Every rule in Prometheus has been evaluated and none errs, the queue
/// and evidence rules among them.
async fn assert_rules_healthy(prometheus: &str) {
    let rules = crate::region_drill::assert_no_rule_errs(prometheus).await;
    let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"IntegrationQueueBacklogAging"), "{names:?}");
    assert!(names.contains(&"RPOEvidenceMissing"), "{names:?}");
}
