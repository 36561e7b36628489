//! The Postgres kind against a real primary with a streaming replica:
//! steady state, the idle-primary trap, paused replay, broken links, and
//! targets that refuse or hang next to a healthy one.

use std::time::{Duration, Instant};

use rpo_lab::support::*;

const T: &str = "erp-db";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_with_writes_is_go_with_small_exposure_and_no_backlog() {
    let pair = start_pair().await;
    let _writer = Writer::start(&pair.primary_url(), Duration::from_millis(50)).await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "5s", true))).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["verdict"], "GO");
    let exposure = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    assert!(exposure < 2.0, "exposure {exposure}");
    let backlog = exporter
        .metric("rpo_backlog_bytes", &labels(T))
        .await
        .unwrap();
    assert!(backlog < 64.0 * 1024.0, "backlog {backlog}");
    assert_eq!(
        exporter.metric("rpo_replication_healthy", &labels(T)).await,
        Some(1.0)
    );
    assert_eq!(
        exporter.metric("rpo_target_ready", &labels(T)).await,
        Some(1.0)
    );
    assert_eq!(
        exporter
            .metric("rpo_failover_ready", &[("group", "erp")])
            .await,
        Some(1.0)
    );
    // The heartbeat canary is being written and read back.
    let (written, seen) = heartbeat_written_and_seen(&exporter.metrics().await, T);
    assert!(
        written - seen < 2.0,
        "heartbeat written {written}, seen on replica {seen}"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_primary_is_not_lag_with_or_without_heartbeat() {
    // Two pairs so the heartbeat writes of one cannot wake the other.
    let (a, b) = tokio::join!(start_pair(), start_pair());
    let config = config_with(&format!(
        "{}{}",
        postgres_target("idle-positions", &a, "5s", false),
        postgres_target("idle-heartbeat", &b, "5s", true)
    ));
    // One write, then nothing: pg_last_xact_replay_timestamp() grows old.
    a.primary_sql("CREATE TABLE one_write (x int); INSERT INTO one_write VALUES (1)")
        .unwrap();
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let metrics = exporter.metrics().await;
    let now = now_unix();
    let last_commit = metric_value(
        &metrics,
        "rpo_postgres_last_replayed_transaction_timestamp_seconds",
        &labels("idle-positions"),
    )
    .unwrap();
    assert!(
        now - last_commit > 25.0,
        "the trap is set: last replayed commit {}s ago",
        now - last_commit
    );
    for target in ["idle-positions", "idle-heartbeat"] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        assert!(
            exposure < 2.0,
            "{target}: idle primary read as lag: exposure {exposure}"
        );
    }
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "{verdict}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replay_grows_exposure_then_recovers() {
    let pair = start_pair().await;
    let config = config_with(&format!(
        "{}{}",
        postgres_target(T, &pair, "2s", true),
        postgres_target("erp-db-positions", &pair, "2s", false)
    ));
    let exporter = Exporter::start(&config).await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO before the pause")
        .await;

    pair.pause_replay().unwrap();
    let paused_at = Instant::now();
    let n = 6.0;
    tokio::time::sleep(Duration::from_secs_f64(n)).await;
    let metrics = exporter.metrics().await;
    let elapsed = paused_at.elapsed().as_secs_f64();
    for target in [T, "erp-db-positions"] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        // Within one heartbeat (or poll) interval plus a second of the injected pause.
        assert!(
            (exposure - elapsed).abs() <= 1.5,
            "{target}: exposure {exposure} after {elapsed}s of paused replay"
        );
        let backlog = metric_value(&metrics, "rpo_backlog_bytes", &labels(target)).unwrap();
        assert!(backlog > 0.0, "{target}: backlog {backlog}");
        let catchup = metric_value(&metrics, "rpo_catchup_seconds", &labels(target)).unwrap();
        assert!(catchup > 0.0, "{target}: catch-up {catchup}");
        assert_eq!(
            metric_value(&metrics, "rpo_postgres_replay_paused", &labels(target)),
            Some(1.0)
        );
    }
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert_eq!(verdict["verdict"], "NO-GO");
    let reasons: Vec<String> = verdict["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("erp-db: exposure ") && r.ends_with("exceeds budget 2s")),
        "{reasons:?}"
    );
    assert_eq!(
        exporter
            .metric("rpo_failover_ready", &[("group", "erp")])
            .await,
        Some(0.0)
    );

    pair.resume_replay().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO after resume")
        .await;
    let exposure = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    assert!(exposure < 2.0, "exposure after resume {exposure}");
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_replica_is_no_go_and_exposure_keeps_growing() {
    let pair = start_pair().await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "3s", false))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    // No writes at all: a broken link must still not read as zero.
    pair.stop_replica().unwrap();
    let first = exporter
        .wait_for_target(
            T,
            Duration::from_secs(10),
            "NO-GO naming the replica",
            |t| reasons(t).contains("replica unreachable"),
        )
        .await;
    assert!(
        first["reasons"][0].as_str().unwrap().contains("connect"),
        "{first}"
    );
    let e1 = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let e2 = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    assert!(
        e2 > e1 + 3.0,
        "exposure must keep growing while the replica is gone: {e1} -> {e2}"
    );
    assert!(e2 > 3.0, "exposure {e2} exceeds the 3s budget");
    assert_eq!(
        exporter.metric("rpo_replica_reachable", &labels(T)).await,
        Some(0.0)
    );
    assert_eq!(
        exporter.metric("rpo_replication_healthy", &labels(T)).await,
        Some(0.0)
    );
    assert!(
        exporter
            .metric(
                "rpo_probe_failures_total",
                &[("target", T), ("reason", "connect")]
            )
            .await
            .unwrap()
            > 0.0
    );
    let (status, _) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);

    // Back again: reconnects on its own, GO again.
    pair.start_replica().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(20), "GO after the replica returns")
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_primary_is_no_go_and_never_reads_zero() {
    let pair = start_pair().await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "3s", false))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    pair.stop_primary().unwrap();
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(15),
            "the replica's WAL receiver to notice",
            |t| {
                let reasons = reasons(t);
                reasons.contains("source unreachable") && reasons.contains("not streaming")
                    || reasons.contains("no WAL receiver")
            },
        )
        .await;
    let e1 = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e2 = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    assert!(
        e2 > e1 + 2.0 && e2 > 3.0,
        "exposure must grow while the primary is gone: {e1} -> {e2}"
    );
    assert_eq!(
        exporter.metric("rpo_source_reachable", &labels(T)).await,
        Some(0.0)
    );
    assert_eq!(
        exporter.metric("rpo_replication_healthy", &labels(T)).await,
        Some(0.0)
    );
    assert_eq!(
        exporter
            .metric("rpo_postgres_wal_receiver_up", &labels(T))
            .await,
        Some(0.0)
    );
    // The replica still answers, so its evidence stays fresh.
    assert_eq!(
        exporter.metric("rpo_replica_reachable", &labels(T)).await,
        Some(1.0)
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-db: source unreachable"),
        "{verdict}"
    );

    pair.start_primary().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(25), "GO after the primary returns")
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_hanging_targets_do_not_delay_a_healthy_one() {
    let pair = start_pair().await;
    let silent = rpo_lab::SilentServer::start().unwrap();
    let refused_port = rpo_lab::free_port();
    let config = config_with(&format!(
        r#"{healthy}
[[postgres]]
name = "refused"
group = "erp"
primary_url = "postgres://monitor:hunter2@127.0.0.1:{refused_port}/x"
replica_url = "postgres://monitor:hunter2@127.0.0.1:{refused_port}/x"

[[postgres]]
name = "silent"
group = "erp"
primary_url = "postgres://monitor:hunter2@127.0.0.1:{silent_port}/x"
replica_url = "postgres://monitor:hunter2@127.0.0.1:{silent_port}/x"
"#,
        healthy = postgres_target(T, &pair, "5s", false),
        silent_port = silent.port()
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Scrape throughout: every answer within 100 ms although a target hangs.
    let ScrapeWindow {
        slowest,
        polls: runs,
        metrics,
    } = exporter
        .scrape_while_polling(T, Duration::from_secs(5))
        .await;
    assert!(
        slowest < Duration::from_millis(100),
        "slowest /metrics answer {slowest:?}"
    );
    // 500 ms cadence over 5 s: about 10 polls, unaffected by the hung target.
    assert!(
        runs >= 8.0,
        "healthy target polled only {runs} times in 5 s"
    );
    assert!(
        metric_value(
            &metrics,
            "rpo_probe_failures_total",
            &[("target", "refused"), ("reason", "connect")]
        )
        .unwrap()
            > 0.0
    );
    assert!(
        metric_value(
            &metrics,
            "rpo_probe_failures_total",
            &[("target", "silent"), ("reason", "timeout")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric_value(&metrics, "rpo_target_ready", &labels(T)),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_target_ready", &labels("silent")),
        Some(0.0)
    );
    assert!(
        !metrics.contains("hunter2"),
        "a password leaked into /metrics"
    );

    let silent_verdict = exporter.target_verdict("silent").await;
    let reasons = silent_verdict["reasons"].to_string();
    assert!(reasons.contains("timeout"), "{silent_verdict}");
    let refused_verdict = exporter.target_verdict("refused").await;
    let reasons = refused_verdict["reasons"].to_string();
    assert!(reasons.contains("connect"), "{refused_verdict}");
    assert!(!reasons.contains("hunter2"));
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_without_create_privilege_names_the_sql_to_run() {
    let pair = start_pair().await;
    pair.primary_sql("CREATE ROLE monitor LOGIN; GRANT pg_monitor TO monitor; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .unwrap();
    let url = |port: u16| format!("postgres://monitor@127.0.0.1:{port}/postgres");
    let config = config_with(&format!(
        r#"
[[postgres]]
name = "{T}"
group = "erp"
primary_url = "{}"
replica_url = "{}"
heartbeat = {{ interval = "500ms", table = "rpo_heartbeat" }}
"#,
        url(pair.primary_port()),
        url(pair.replica_port())
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures = exporter
        .metric("rpo_heartbeat_write_failures_total", &labels(T))
        .await
        .unwrap();
    assert!(failures > 0.0);
    // Engine positions still work for the monitoring role.
    assert!(
        exporter
            .metric("rpo_exposure_seconds", &labels(T))
            .await
            .unwrap()
            < 2.0
    );
    exporter.stop().await;

    // The message a person gets says exactly what to run.
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rpo-exporter"))
        .args(["check", "--config"])
        .arg(write_file(dir.path(), "config.toml", &config))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CREATE TABLE IF NOT EXISTS rpo_heartbeat"),
        "{stderr}"
    );
    assert!(
        stderr.contains("GRANT SELECT, INSERT, UPDATE ON rpo_heartbeat TO monitor"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplanned_mode_reports_the_loss_window_when_the_primary_is_gone() {
    let pair = start_pair().await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "3s", true))).await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    // The source region is gone.
    drop(writer);
    pair.stop_primary().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let (status, planned) = exporter.verdict("?group=erp&mode=planned").await;
    assert_eq!(status, 503, "{planned}");
    assert!(
        planned["reasons"][0]
            .as_str()
            .unwrap()
            .contains("source unreachable"),
        "{planned}"
    );

    let (status, unplanned) = exporter.verdict("?group=erp&mode=unplanned").await;
    assert_eq!(status, 200, "{unplanned}");
    assert_eq!(unplanned["mode"], "unplanned");
    let target = &unplanned["groups"][0]["targets"][0];
    // The recovery point is what the replica holds: frozen since the
    // primary went away, so the exposure has grown past the budget...
    assert!(
        target["exposure_seconds"].as_f64().unwrap() > 4.0,
        "{target}"
    );
    assert!(target["recovery_point"].is_string());
    // ...while the known loss window (last contact − recovery point) is small.
    let window = target["loss_window_seconds"].as_f64().unwrap();
    assert!(window < 2.0, "loss window {window}: {target}");

    // The CLI agrees, and prints the loss window.
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("c.toml");
    std::fs::write(&path, config_with(&postgres_target(T, &pair, "3s", false))).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpo-exporter"))
        .args(["check", "--from", &exporter.url(""), "--mode", "unplanned"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("loss window"), "{stdout}");

    // With the replica gone too, unplanned is NO-GO: nothing to fail over to.
    pair.stop_replica().unwrap();
    wait_until(
        Duration::from_secs(10),
        "unplanned NO-GO without a replica",
        || async {
            let (status, v) = exporter.verdict("?mode=unplanned").await;
            (
                status == 503
                    && v["reasons"][0]
                        .as_str()
                        .unwrap_or("")
                        .contains("replica unreachable"),
                v.to_string(),
            )
        },
    )
    .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_user_without_pg_monitor_is_named_not_read_as_a_broken_link() {
    let pair = start_pair().await;
    pair.primary_sql(
        "CREATE ROLE rpo_plain LOGIN; CREATE ROLE rpo_granted LOGIN; GRANT pg_monitor TO rpo_granted",
    )
    .unwrap();
    // The roles reach the replica by replication.
    wait_until(
        Duration::from_secs(10),
        "the roles on the replica",
        || async {
            let count = pair
                .replica_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'rpo\\_%'")
                .unwrap_or_default();
            (count == "2", count)
        },
    )
    .await;
    let target = |name: &str, user: &str| {
        target_block(
            "postgres",
            name,
            "5s",
            &format!(
                "primary_url = \"postgres://{user}@127.0.0.1:{}/postgres\"\nreplica_url = \"postgres://{user}@127.0.0.1:{}/postgres\"",
                pair.primary_port(),
                pair.replica_port()
            ),
        )
    };
    let exporter = Exporter::start(&config_with(&format!(
        "{}{}",
        target("granted", "rpo_granted"),
        target("ungranted", "rpo_plain")
    )))
    .await;
    // With pg_monitor the same pair passes: the replica does stream.
    exporter
        .wait_for_target_ready("granted", Duration::from_secs(15), "granted to pass")
        .await;
    let metrics = exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "an auth failure of ungranted",
            &[("ungranted", "auth")],
        )
        .await;
    assert_metric(
        &metrics,
        "rpo_probe_success",
        &labels("ungranted"),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_probe_success", &labels("granted"), Some(1.0));
    assert_metric(
        &metrics,
        "rpo_target_ready",
        &labels("ungranted"),
        Some(0.0),
    );
    // Not "the receiver is down": its state is unknown, so no 0 either.
    assert_metric(
        &metrics,
        "rpo_postgres_wal_receiver_up",
        &labels("ungranted"),
        None,
    );
    let verdict = exporter.target_verdict("ungranted").await;
    let words = reasons(&verdict);
    assert!(
        words.contains("GRANT pg_monitor TO rpo_plain"),
        "the reason names the grant: {verdict}"
    );
    assert!(!words.contains("no WAL receiver"), "{verdict}");
    assert!(
        verdict["reason_details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "link_unknown"),
        "{verdict}"
    );
    exporter.stop().await;
}

/// A link that drops and returns is counted once per drop in
/// `rpo_replication_link_down_total`, so a flapping link leaves a trace
/// after it has healed. The replica is what sees the link (its WAL
/// receiver), so the primary is the side stopped: a stopped replica makes
/// the link unknown, which is no transition (checked last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_link_drop_is_counted_once() {
    let pair = start_pair().await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "3s", false))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;
    let target_labels = labels(T);
    let drops = || exporter.metric("rpo_replication_link_down_total", &target_labels);
    assert_eq!(drops().await, Some(0.0));

    for drop in 1..=2 {
        pair.stop_primary().unwrap();
        exporter
            .wait_for_target(
                T,
                Duration::from_secs(15),
                "the replica's WAL receiver to stop streaming",
                |t| {
                    let reasons = reasons(t);
                    reasons.contains("not streaming") || reasons.contains("no WAL receiver")
                },
            )
            .await;
        assert_eq!(
            exporter.metric("rpo_replication_healthy", &labels(T)).await,
            Some(0.0)
        );
        assert_eq!(drops().await, Some(drop as f64), "drop {drop}");
        pair.start_primary().unwrap();
        exporter
            .wait_for_go("", Duration::from_secs(25), "GO after the primary returns")
            .await;
        assert_eq!(drops().await, Some(drop as f64), "healed after drop {drop}");
    }

    // An unreachable replica cannot tell: not a drop.
    pair.stop_replica().unwrap();
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(15),
            "the replica to be unreachable",
            |t| reasons(t).contains("replica unreachable"),
        )
        .await;
    assert_eq!(
        exporter.metric("rpo_replica_reachable", &labels(T)).await,
        Some(0.0)
    );
    assert_eq!(drops().await, Some(2.0));
    pair.start_replica().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(25), "GO after the replica returns")
        .await;
    assert_eq!(drops().await, Some(2.0));
    exporter.stop().await;
}

/// The Aurora functions of the documented output shape (Aurora user guide,
/// "aurora_replica_status", "aurora_db_instance_identifier"), defined on
/// the primary so they replicate. No Aurora runs here: this proves the
/// Aurora path is taken and how its figures become evidence, not what a
/// real Aurora says. The reader's lag comes from a table the test updates.
const FAKE_AURORA: &str = "
CREATE TABLE aurora_fake (lag_ms real);
INSERT INTO aurora_fake VALUES (4000);
CREATE FUNCTION aurora_version() RETURNS text LANGUAGE sql AS $$ SELECT '16.4.2'::text $$;
CREATE FUNCTION aurora_db_instance_identifier() RETURNS varchar LANGUAGE sql STABLE AS
  $$ SELECT (CASE WHEN pg_is_in_recovery() THEN 'erp-reader-1' ELSE 'erp-writer' END)::varchar $$;
CREATE FUNCTION aurora_replica_status() RETURNS TABLE(
  server_id text, session_id text, durable_lsn bigint, highest_lsn_rcvd bigint,
  current_read_lsn bigint, cur_replay_latency_in_usec bigint, active_txns bigint,
  is_current boolean, last_transport_error int, last_error_timestamp timestamptz,
  last_update_timestamp timestamptz, feedback_xmin bigint, feedback_epoch int,
  replica_lag_in_msec real, log_stream_speed_in_kib_per_second real,
  log_buffer_sequence_number bigint, oldest_read_view_trx_id bigint,
  oldest_read_view_lsn bigint, pending_read_ios bigint, read_ios bigint,
  iops bigint, cpu real) LANGUAGE sql STABLE AS $$
  SELECT 'erp-writer'::text, 'MASTER_SESSION_ID'::text, 88492069::bigint, NULL::bigint,
    NULL::bigint, NULL::bigint, NULL::bigint, true, 0, NULL::timestamptz, NULL::timestamptz,
    NULL::bigint, NULL::int, NULL::real, NULL::real, NULL::bigint, NULL::bigint,
    NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, 0.6::real
  UNION ALL
  SELECT 'erp-reader-1', '7c4f2a1e-0b7d-4c2e-9a51-3e8d2f6b9c10', 88492069, 88492069,
    88492060, 610, 0, false, 0, NULL, NULL, 5281, 0,
    (SELECT lag_ms FROM aurora_fake), 2.1, 1127, NULL, 88491990, 0, 42, NULL, 0.4
$$;
";

/// Waits until `function` exists on the replica (made on the primary, it
/// arrives by replication). On Aurora the functions are there before the
/// exporter connects, and the exporter asks which functions a server has
/// once per connection.
async fn wait_for_function_on_replica(pair: &rpo_lab::PostgresPair, function: &str) {
    let sql = format!("SELECT to_regproc('{function}') IS NOT NULL");
    wait_until(
        Duration::from_secs(10),
        "the fake Aurora functions on the replica",
        || async {
            let found = pair.replica_sql(&sql).unwrap_or_default();
            (found == "t", found)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aurora_reader_is_read_through_its_own_functions() {
    let pair = start_pair().await;
    pair.primary_sql(FAKE_AURORA).unwrap();
    wait_for_function_on_replica(&pair, "aurora_db_instance_identifier").await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "3s", false))).await;
    let target_labels = labels(T);
    let metric = |name: &'static str| exporter.metric(name, &target_labels);

    // 4 s behind by Aurora's figure, with the real replica caught up: only
    // the Aurora path reads this as over the 3 s budget.
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(15),
            "Aurora's lag over budget",
            |t| reasons(t).contains("exceeds budget 3s"),
        )
        .await;
    let exposure = metric("rpo_exposure_seconds").await.unwrap();
    assert!(
        (4.0..6.0).contains(&exposure),
        "the exposure is Aurora's 4 s lag plus at most a poll: {exposure}"
    );
    assert_eq!(metric("rpo_replication_healthy").await, Some(1.0));
    // The standard path would publish the WAL receiver; Aurora has none.
    assert_eq!(metric("rpo_postgres_wal_receiver_up").await, None);
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-db: exposure "),
        "{verdict}"
    );

    pair.primary_sql("UPDATE aurora_fake SET lag_ms = 20")
        .unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO once Aurora's lag is small")
        .await;
    assert!(metric("rpo_exposure_seconds").await.unwrap() < 3.0);

    // No lag for this reader: unknown, never GO, and the exposure grows.
    pair.primary_sql("UPDATE aurora_fake SET lag_ms = NULL")
        .unwrap();
    exporter
        .wait_for_target(T, Duration::from_secs(15), "an unknown Aurora lag", |t| {
            reasons(t).contains("gives no replica_lag_in_msec for erp-reader-1")
        })
        .await;
    assert_eq!(metric("rpo_replication_healthy").await, Some(0.0));
    let e1 = metric("rpo_exposure_seconds").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e2 = metric("rpo_exposure_seconds").await.unwrap();
    assert!(e2 > e1 + 1.0, "the exposure must grow: {e1} -> {e2}");
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    exporter.stop().await;
}

/// The Aurora global database functions of the documented output shape
/// (Aurora user guide, "aurora_global_db_instance_status",
/// "aurora_global_db_status"), defined on the primary so they replicate.
/// The lab primary plays the writer in us-east-1 and the replica an
/// instance of the secondary cluster in us-west-2; the LSNs the functions
/// report are the pair's real ones (the writer's `pg_current_wal_lsn()`, the
/// secondary's replayed and received positions), so pausing replay stalls
/// the secondary and stopping the primary loses the writer's region. The
/// lag figures come from a table the test updates. No Aurora runs here.
const FAKE_AURORA_GLOBAL: &str = "
CREATE TABLE aurora_global_fake (visibility_ms real, rpo_ms real, durability_ms real);
INSERT INTO aurora_global_fake VALUES (996, 410, 900);
CREATE FUNCTION aurora_db_instance_identifier() RETURNS varchar LANGUAGE sql STABLE AS
  $$ SELECT (CASE WHEN pg_is_in_recovery() THEN 'erp-dr-1' ELSE 'erp-writer' END)::varchar $$;
CREATE FUNCTION aurora_global_db_instance_status() RETURNS TABLE(
  server_id text, session_id text, aws_region text, durable_lsn bigint,
  highest_lsn_rcvd bigint, feedback_epoch int, feedback_xmin bigint,
  oldest_read_view_lsn bigint, visibility_lag_in_msec real) LANGUAGE sql STABLE AS $$
  SELECT 'erp-writer'::text, 'MASTER_SESSION_ID'::text, 'us-east-1'::text,
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::bigint END,
    NULL::bigint, NULL::int, NULL::bigint, NULL::bigint, NULL::real
  UNION ALL
  SELECT 'erp-reader-1', '4ecff34d-d57c-409c-ba28-278b31d6fc40', 'us-east-1', NULL, NULL,
    0, 19669196, NULL, 6
  UNION ALL
  SELECT 'erp-dr-1', 'a331ffbb-d982-49ba-8973-527c96329c60', 'us-west-2',
    (pg_last_wal_replay_lsn() - '0/0')::bigint, (pg_last_wal_receive_lsn() - '0/0')::bigint,
    0, 19669196, (pg_last_wal_replay_lsn() - '0/0')::bigint,
    (SELECT visibility_ms FROM aurora_global_fake)
$$;
CREATE FUNCTION aurora_global_db_status() RETURNS TABLE(
  aws_region text, highest_lsn_written bigint, durability_lag_in_msec real,
  rpo_lag_in_msec real, last_lag_calculation_time timestamptz, feedback_epoch int,
  feedback_xmin bigint) LANGUAGE sql STABLE AS $$
  SELECT 'us-east-1'::text,
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::bigint END,
    -1::real, -1::real, '1970-01-01 00:00:00+00'::timestamptz, 0, 0::bigint
  UNION ALL
  SELECT 'us-west-2', (pg_last_wal_receive_lsn() - '0/0')::bigint,
    (SELECT durability_ms FROM aurora_global_fake), (SELECT rpo_ms FROM aurora_global_fake),
    now(), 0, 12640
$$;
";

/// Issue 10 item 4, global secondaries: an instance of an Aurora global
/// database's secondary cluster is read through
/// `aurora_global_db_instance_status()` and `aurora_global_db_status()`;
/// its durable position is dated by the writer's durable LSN sampled on
/// this exporter's clock. The lag figures are shown and never proof: a
/// stalled secondary reading `rpo_lag_in_msec` 0 is NO-GO; the writer's
/// region lost keeps the last recovery point (planned NO-GO, unplanned GO
/// within budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aurora_global_secondary_is_dated_by_the_writers_durable_lsn() {
    let pair = start_pair().await;
    pair.primary_sql(FAKE_AURORA_GLOBAL).unwrap();
    wait_for_function_on_replica(&pair, "aurora_global_db_status").await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "3s", false))).await;
    let target_labels = labels(T);
    let metric = |name: &'static str| exporter.metric(name, &target_labels);

    exporter
        .wait_for_go(
            "",
            Duration::from_secs(20),
            "GO on the secondary's durable LSN",
        )
        .await;
    let text = exporter.metrics().await;
    let exposure = metric_value(&text, "rpo_exposure_seconds", &target_labels).unwrap();
    assert!(exposure < 2.0, "exposure {exposure}");
    assert_metric(&text, "rpo_replication_healthy", &target_labels, Some(1.0));
    assert_metric(
        &text,
        "rpo_postgres_aurora_rpo_lag_seconds",
        &target_labels,
        Some(0.41),
    );
    assert_metric(
        &text,
        "rpo_postgres_aurora_durability_lag_seconds",
        &target_labels,
        Some(0.9),
    );
    let visibility = metric_value(
        &text,
        "rpo_postgres_aurora_visibility_lag_seconds",
        &target_labels,
    )
    .unwrap();
    assert!((visibility - 0.996).abs() < 1e-6, "{visibility}");
    assert!(
        metric_value(
            &text,
            "rpo_postgres_aurora_lag_calculation_timestamp_seconds",
            &target_labels
        )
        .is_some(),
        "{text}"
    );
    // Neither the WAL receiver path nor the regional reader's.
    assert_metric(&text, "rpo_postgres_wal_receiver_up", &target_labels, None);
    assert_metric(&text, "rpo_postgres_replay_lag_bytes", &target_labels, None);

    // Aurora's figures say "no lag" while the secondary stalls: the
    // writer's samples still date it, the exposure grows, NO-GO.
    pair.primary_sql("UPDATE aurora_global_fake SET rpo_ms = 0, durability_ms = 0")
        .unwrap();
    exporter
        .wait_for_metrics(Duration::from_secs(15), "rpo_lag 0 seen", |text| {
            metric_value(text, "rpo_postgres_aurora_rpo_lag_seconds", &labels(T)) == Some(0.0)
        })
        .await;
    pair.pause_replay().unwrap();
    let verdict = exporter
        .wait_for_target(
            T,
            Duration::from_secs(20),
            "the stalled secondary over budget",
            |t| reasons(t).contains("exceeds budget 3s"),
        )
        .await;
    assert_eq!(verdict["ready"], false, "{verdict}");
    assert_eq!(
        metric("rpo_postgres_aurora_rpo_lag_seconds").await,
        Some(0.0)
    );
    assert_eq!(metric("rpo_replication_healthy").await, Some(1.0));
    let e1 = metric("rpo_exposure_seconds").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e2 = metric("rpo_exposure_seconds").await.unwrap();
    assert!(e2 > e1 + 1.0, "the exposure must grow: {e1} -> {e2}");
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-db: exposure "),
        "{verdict}"
    );
    pair.resume_replay().unwrap();
    exporter
        .wait_for_go(
            "",
            Duration::from_secs(20),
            "GO once the secondary catches up",
        )
        .await;

    // The writer's region lost: the last recovery point stays (no later
    // than the loss), planned NO-GO naming the source, unplanned GO on the
    // known loss window.
    drop(writer);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lost_at = now_unix();
    pair.stop_primary().unwrap();
    let planned = exporter
        .wait_for_target(T, Duration::from_secs(20), "the writer unreachable", |t| {
            reasons(t).contains("source unreachable")
        })
        .await;
    assert_eq!(planned["ready"], false, "{planned}");
    assert_eq!(metric("rpo_source_reachable").await, Some(0.0));
    assert_eq!(metric("rpo_replica_reachable").await, Some(1.0));
    let rp = metric("rpo_recovery_point_timestamp_seconds")
        .await
        .unwrap();
    assert!(rp <= lost_at, "{rp} > {lost_at}");
    assert!(
        rp > lost_at - 5.0,
        "the last proven point is kept: {rp} vs {lost_at}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let unplanned = rpo_lab::support::aws::target_verdict_in(&exporter, T, "unplanned").await;
    assert_eq!(unplanned["ready"], true, "{unplanned}");
    // WAL received before the loss may still be replayed, dated by the
    // samples taken before it: the recovery point may move, never past the
    // loss.
    let later = metric("rpo_recovery_point_timestamp_seconds")
        .await
        .unwrap();
    assert!(
        (rp..=lost_at).contains(&later),
        "{later} outside {rp}..={lost_at}"
    );
    let planned = rpo_lab::support::aws::target_verdict_in(&exporter, T, "planned").await;
    assert_eq!(planned["ready"], false, "{planned}");
    assert!(reasons(&planned).contains("exposure "), "{planned}");
    exporter.stop().await;
}

/// A replica that comes back is seen by the next poll: the "unreachable"
/// reason never outlives the truth by more than a poll. (A reconnect
/// backoff used to repeat the cached "Connection refused" for up to 10 s
/// after the replica accepted connections again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_comes_back_is_reachable_by_the_next_poll() {
    let pair = start_pair().await;
    // Polls every 500 ms, timeout 1 s.
    let exporter = Exporter::start(&config_with(&postgres_target(T, &pair, "60s", false))).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO at the start")
        .await;
    let stopped = pair.clone();
    tokio::task::spawn_blocking(move || stopped.stop_replica())
        .await
        .unwrap()
        .unwrap();
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(10),
            "the replica to be unreachable",
            |t| reasons(t).contains("replica unreachable"),
        )
        .await;
    // Down for a while: long enough for a doubling backoff to reach 8 s.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let started = pair.clone();
    tokio::task::spawn_blocking(move || started.start_replica())
        .await
        .unwrap()
        .unwrap();
    // The replica accepts connections now.
    let back = Instant::now();
    let seen = exporter
        .wait_for_target(
            T,
            Duration::from_secs(20),
            "the replica to be reachable",
            |t| !reasons(t).contains("replica unreachable"),
        )
        .await;
    let stale_for = back.elapsed();
    // One poll interval (500 ms) plus the poll itself (timeout 1 s), with
    // room for a loaded machine; the backoff held it for seconds more.
    assert!(
        stale_for < Duration::from_millis(3000),
        "\"replica unreachable\" outlived the replica's return by {stale_for:?}: {seen}"
    );
    assert_eq!(
        exporter.metric("rpo_replica_reachable", &labels(T)).await,
        Some(1.0)
    );
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO after the replica returns")
        .await;
    exporter.stop().await;
}
