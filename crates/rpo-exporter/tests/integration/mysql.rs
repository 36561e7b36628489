//! The `mysql` kind against a real MariaDB primary with a binlog replica:
//! steady state, the idle source, a stopped SQL thread under writes, a
//! stopped I/O thread, a stopped primary, a frozen replica next to a
//! healthy pair, and users that cannot log in or lack a grant.

use std::time::{Duration, Instant};

use rpo_lab::mariadb::MariadbPair;
use rpo_lab::support::*;

const T: &str = "erp-ledger";

/// The group's reasons as lines.
fn group_reasons(verdict: &serde_json::Value) -> Vec<String> {
    verdict["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_with_writes_is_go_with_small_exposure_and_no_backlog() {
    let pair = start_mariadb_pair().await;
    let _writer = MysqlWriter::start(&pair.primary_url(), Duration::from_millis(50)).await;
    let exporter = Exporter::start(&config_with(&mysql_target(T, &pair, "5s", true))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO with writes")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["verdict"], "GO");
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 2.0, "exposure {exposure}");
    let backlog = metric_value(&metrics, "rpo_backlog_bytes", &labels(T)).unwrap();
    assert!(backlog < 64.0 * 1024.0, "backlog {backlog}");
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
    assert_metric(&metrics, "rpo_target_ready", &labels(T), Some(1.0));
    assert_metric(
        &metrics,
        "rpo_mysql_io_thread_running",
        &labels(T),
        Some(1.0),
    );
    assert_metric(
        &metrics,
        "rpo_mysql_sql_thread_running",
        &labels(T),
        Some(1.0),
    );
    assert_metric(
        &metrics,
        "rpo_failover_ready",
        &[("group", "erp")],
        Some(1.0),
    );
    // The engine's own figure is there, as a detail.
    assert!(
        metric_value(
            &metrics,
            "rpo_mysql_engine_reported_lag_seconds",
            &labels(T)
        )
        .is_some(),
        "{metrics}"
    );
    // MariaDB GTIDs: transactions not yet executed are counted.
    let behind = metric_value(&metrics, "rpo_mysql_executed_lag_transactions", &labels(T)).unwrap();
    assert!(behind < 50.0, "executed lag {behind} transactions");
    // The heartbeat canary is being written and read back.
    let (written, seen) = heartbeat_written_and_seen(&metrics, T);
    assert!(
        written - seen < 2.0,
        "heartbeat written {written}, seen on replica {seen}"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_source_is_not_lag_with_or_without_heartbeat() {
    // Two pairs so the heartbeat writes of one cannot wake the other.
    let (a, b) = tokio::join!(start_mariadb_pair(), start_mariadb_pair());
    a.primary_sql("CREATE TABLE rpo.one_write (x INT); INSERT INTO rpo.one_write VALUES (1)")
        .unwrap();
    let config = config_with(&format!(
        "{}{}",
        mysql_target("idle-positions", &a, "5s", false),
        mysql_target("idle-heartbeat", &b, "5s", true)
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let metrics = exporter.metrics().await;
    for target in ["idle-positions", "idle-heartbeat"] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        assert!(
            exposure < 2.0,
            "{target}: idle source read as lag: exposure {exposure}"
        );
        let lag = metric_value(&metrics, "rpo_mysql_executed_lag_bytes", &labels(target));
        if target == "idle-positions" {
            // Nothing at all is written: nothing is behind.
            assert_eq!(lag, Some(0.0), "{target}");
        } else {
            // The heartbeat itself writes a row every interval: one may be
            // in flight between the primary's sample and the replica's read.
            assert!(
                lag.is_some_and(|l| (0.0..4096.0).contains(&l)),
                "{target}: executed lag {lag:?} bytes on an idle source"
            );
        }
    }
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "{verdict}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_sql_thread_under_writes_grows_exposure_then_recovers() {
    let pair = start_mariadb_pair().await;
    let positions = "erp-ledger-positions";
    let config = config_with(&format!(
        "{}{}",
        mysql_target(T, &pair, "2s", true),
        mysql_target(positions, &pair, "2s", false)
    ));
    let exporter = Exporter::start(&config).await;
    let writer = MysqlWriter::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go(
            "",
            Duration::from_secs(10),
            "GO before the SQL thread stops",
        )
        .await;

    pair.stop_sql_thread().unwrap();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = exporter.metrics().await;
    let elapsed = stopped_at.elapsed().as_secs_f64();
    for target in [T, positions] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        // Within one heartbeat (or poll) interval plus a second of the stop.
        assert!(
            (exposure - elapsed).abs() <= 1.5,
            "{target}: exposure {exposure} after {elapsed}s with the SQL thread stopped"
        );
        assert_metric(
            &metrics,
            "rpo_mysql_sql_thread_running",
            &labels(target),
            Some(0.0),
        );
        assert_metric(
            &metrics,
            "rpo_mysql_io_thread_running",
            &labels(target),
            Some(1.0),
        );
        assert_metric(
            &metrics,
            "rpo_replication_healthy",
            &labels(target),
            Some(0.0),
        );
        // Received and executed kept apart: the I/O thread keeps up, the
        // SQL thread does not.
        let executed =
            metric_value(&metrics, "rpo_mysql_executed_lag_bytes", &labels(target)).unwrap();
        let received =
            metric_value(&metrics, "rpo_mysql_received_lag_bytes", &labels(target)).unwrap();
        assert!(
            executed > 10_000.0 && received < executed / 4.0,
            "{target}: received lag {received}, executed lag {executed}"
        );
        assert_metric(
            &metrics,
            "rpo_backlog_bytes",
            &labels(target),
            Some(executed),
        );
        let transactions =
            metric_value(&metrics, "rpo_backlog_operations", &labels(target)).unwrap();
        assert!(
            transactions >= 30.0,
            "{target}: backlog {transactions} transactions"
        );
        let catchup = metric_value(&metrics, "rpo_catchup_seconds", &labels(target)).unwrap();
        assert!(catchup > 0.0, "{target}: catch-up {catchup}");
        // Seconds_Behind_Master is NULL while the SQL thread is stopped.
        assert_metric(
            &metrics,
            "rpo_mysql_engine_reported_lag_seconds",
            &labels(target),
            None,
        );
    }
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert_eq!(verdict["verdict"], "NO-GO");
    assert!(
        group_reasons(&verdict)
            .iter()
            .any(|r| r == &format!("{T}: replication unhealthy: SQL thread stopped")),
        "{verdict}"
    );
    let target = exporter.target_verdict(T).await;
    let why = reasons(&target);
    assert!(
        why.contains("exposure ") && why.contains("exceeds budget 2s"),
        "{target}"
    );
    assert_metric(
        &exporter.metrics().await,
        "rpo_failover_ready",
        &[("group", "erp")],
        Some(0.0),
    );

    pair.start_sql_thread().unwrap();
    exporter
        .wait_for_go(
            "",
            Duration::from_secs(10),
            "GO after START SLAVE SQL_THREAD",
        )
        .await;
    let exposure = exporter.exposure(T).await;
    assert!(exposure < 2.0, "exposure after the restart {exposure}");
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_io_thread_is_no_go_and_exposure_keeps_growing() {
    let pair = start_mariadb_pair().await;
    let exporter = Exporter::start(&config_with(&mysql_target(T, &pair, "3s", false))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    // No writes at all: a broken link must still not read as zero.
    pair.stop_io_thread().unwrap();
    let seen = exporter
        .wait_for_target(
            T,
            Duration::from_secs(10),
            "NO-GO naming the stopped I/O thread",
            |t| reasons(t).contains("replication unhealthy: I/O thread stopped"),
        )
        .await;
    let e1 = exporter.exposure(T).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = exporter.metrics().await;
    let e2 = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        e2 > e1 + 3.0 && e2 > 3.0,
        "exposure must keep growing: {e1} -> {e2} ({seen})"
    );
    assert_metric(
        &metrics,
        "rpo_mysql_io_thread_running",
        &labels(T),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_replica_reachable", &labels(T), Some(1.0));
    assert_metric(&metrics, "rpo_source_reachable", &labels(T), Some(1.0));
    let (status, _) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);

    pair.start_io_thread().unwrap();
    exporter
        .wait_for_go(
            "",
            Duration::from_secs(10),
            "GO after START SLAVE IO_THREAD",
        )
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_primary_is_planned_no_go_and_unplanned_reports_the_loss_window() {
    let pair = start_mariadb_pair().await;
    let exporter = Exporter::start(&config_with(&mysql_target(T, &pair, "3s", true))).await;
    let writer = MysqlWriter::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    // The source region is gone.
    drop(writer);
    let pair = tokio::task::spawn_blocking(move || {
        let mut pair = pair;
        pair.stop_primary().unwrap();
        pair
    })
    .await
    .unwrap();
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(15),
            "the replica's I/O thread to notice",
            |t| {
                let why = reasons(t);
                why.contains("source unreachable (connect") && why.contains("I/O thread")
            },
        )
        .await;
    let e1 = exporter.exposure(T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = exporter.metrics().await;
    let e2 = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        e2 > e1 + 2.0 && e2 > 3.0,
        "exposure must grow while the primary is gone: {e1} -> {e2}"
    );
    assert_metric(&metrics, "rpo_source_reachable", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_replica_reachable", &labels(T), Some(1.0));
    assert_metric(
        &metrics,
        "rpo_mysql_io_thread_running",
        &labels(T),
        Some(0.0),
    );

    let (status, planned) = exporter.verdict("?group=erp&mode=planned").await;
    assert_eq!(status, 503, "{planned}");
    assert!(
        group_reasons(&planned)[0].starts_with(&format!("{T}: source unreachable")),
        "{planned}"
    );
    let (status, unplanned) = exporter.verdict("?group=erp&mode=unplanned").await;
    assert_eq!(status, 200, "{unplanned}");
    let target = &unplanned["groups"][0]["targets"][0];
    // The recovery point is frozen since the primary went away, so the
    // exposure has grown past the budget...
    assert!(
        target["exposure_seconds"].as_f64().unwrap() > 3.0,
        "{target}"
    );
    // ...while the known loss window (last contact − recovery point) is
    // small: the replica had everything until the primary went away.
    let window = target["loss_window_seconds"].as_f64().unwrap();
    assert!(window < 2.0, "loss window {window}: {target}");

    let _pair = tokio::task::spawn_blocking(move || {
        let mut pair = pair;
        pair.start_primary().unwrap();
        pair
    })
    .await
    .unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(25), "GO after the primary returns")
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_replica_times_out_on_the_replica_side_and_others_are_unaffected() {
    let (pair, other) = tokio::join!(start_mariadb_pair(), start_mariadb_pair());
    let config = config_with(&format!(
        "{}{}",
        mysql_target(T, &pair, "2s", true),
        mysql_target("erp-ledger-other", &other, "5s", true)
    ));
    let exporter = Exporter::start(&config).await;
    let writer = MysqlWriter::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO before the freeze")
        .await;

    pair.sigstop_replica().unwrap();
    let frozen_at = Instant::now();
    let metrics = exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "a replica timeout",
            &[(T, "timeout")],
        )
        .await;
    assert_metric(&metrics, "rpo_replica_reachable", &labels(T), Some(0.0));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = exporter.metrics().await;
    let elapsed = frozen_at.elapsed().as_secs_f64();
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        (exposure - elapsed).abs() <= 1.5,
        "exposure {exposure} after {elapsed}s frozen"
    );
    // The primary side still answers; the other pair is untouched.
    assert_metric(&metrics, "rpo_source_reachable", &labels(T), Some(1.0));
    assert_metric(
        &metrics,
        "rpo_target_ready",
        &labels("erp-ledger-other"),
        Some(1.0),
    );
    let other_exposure = metric_value(
        &metrics,
        "rpo_exposure_seconds",
        &labels("erp-ledger-other"),
    )
    .unwrap();
    assert!(other_exposure < 2.0, "other exposure {other_exposure}");
    let target = exporter.target_verdict(T).await;
    let why = reasons(&target);
    assert!(
        why.contains("replica unreachable (timeout: no answer within"),
        "{target}"
    );
    assert!(why.contains("exceeds budget 2s"), "{target}");
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        group_reasons(&verdict)
            .iter()
            .all(|r| r.starts_with(&format!("{T}: "))),
        "only the frozen target fails: {verdict}"
    );

    pair.sigcont_replica().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO after SIGCONT")
        .await;
    drop(writer);
    exporter.stop().await;
}

/// Creates `mon` on the primary (replicated to the replica) with `grants`.
fn create_monitor(pair: &MariadbPair, password: &str, grants: &str) {
    pair.primary_sql(&format!(
        "CREATE USER 'mon'@'%' IDENTIFIED BY '{password}'; {grants}"
    ))
    .unwrap();
    pair.wait_for_replication(Duration::from_secs(10)).unwrap();
}

fn monitor_target(name: &str, pair: &MariadbPair, password: &str, heartbeat: bool) -> String {
    let url = |port: u16| format!("mysql://mon:{password}@127.0.0.1:{port}/rpo");
    let heartbeat = if heartbeat {
        "heartbeat = { interval = \"500ms\", table = \"rpo_heartbeat\" }"
    } else {
        ""
    };
    target_block(
        "mysql",
        name,
        "5s",
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\n{heartbeat}",
            url(pair.primary_port()),
            url(pair.replica_port())
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_missing_grants_refused_and_silent_servers_say_why_without_secrets() {
    let pair = start_mariadb_pair().await;
    // Enough to log in and read the heartbeat table, not to read
    // replication status.
    create_monitor(&pair, "right-hunter2", "GRANT SELECT ON rpo.* TO 'mon'@'%'");
    let silent = rpo_lab::SilentServer::start().unwrap();
    let refused = rpo_lab::free_port();
    let config = config_with(&format!(
        r#"{wrong}{grantless}
[[mysql]]
name = "refused"
group = "erp"
primary_url = "mysql://mon:hunter2@127.0.0.1:{refused}/rpo"
replica_url = "mysql://mon:hunter2@127.0.0.1:{refused}/rpo"

[[mysql]]
name = "silent"
group = "erp"
primary_url = "mysql://mon:hunter2@127.0.0.1:{silent_port}/rpo"
replica_url = "mysql://mon:hunter2@127.0.0.1:{silent_port}/rpo"
"#,
        wrong = monitor_target("wrong-password", &pair, "wrong-hunter2", false),
        grantless = monitor_target("no-grants", &pair, "right-hunter2", false),
        silent_port = silent.port(),
    ));
    let exporter = Exporter::start(&config).await;
    let metrics = exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "every broken target to fail",
            &[
                ("wrong-password", "auth"),
                ("no-grants", "auth"),
                ("refused", "connect"),
                ("silent", "timeout"),
            ],
        )
        .await;
    assert!(
        !metrics.contains("hunter2"),
        "a password leaked into /metrics"
    );

    let wrong = reasons(&exporter.target_verdict("wrong-password").await);
    assert!(
        wrong.contains("replica unreachable (auth: Access denied for user 'mon'"),
        "{wrong}"
    );
    let grantless = reasons(&exporter.target_verdict("no-grants").await);
    // Each side names the privilege it lacks and the statement to run.
    assert!(
        grantless.contains("source unreachable (auth: Access denied; you need (at least one of) the SUPER, BINLOG MONITOR privilege(s)"),
        "{grantless}"
    );
    assert!(
        grantless.contains("GRANT BINLOG MONITOR ON *.* TO 'mon'@'%'"),
        "{grantless}"
    );
    assert!(grantless.contains("SLAVE MONITOR"), "{grantless}");
    assert!(
        grantless.contains("GRANT REPLICA MONITOR ON *.* TO 'mon'@'%'"),
        "{grantless}"
    );
    let refused = reasons(&exporter.target_verdict("refused").await);
    assert!(refused.contains("connect: Connection refused"), "{refused}");
    let silent_reasons = reasons(&exporter.target_verdict("silent").await);
    assert!(silent_reasons.contains("timeout"), "{silent_reasons}");
    let (status, verdict) = exporter.verdict("").await;
    assert_eq!(status, 503);
    assert!(!verdict.to_string().contains("hunter2"), "{verdict}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_without_create_privilege_names_the_sql_to_run() {
    let pair = start_mariadb_pair().await;
    // The monitoring grants of deploy/sql/mysql-grants.sql, but no CREATE
    // and no write on the heartbeat table.
    create_monitor(
        &pair,
        "pw",
        "GRANT BINLOG MONITOR, REPLICA MONITOR ON *.* TO 'mon'@'%'; GRANT SELECT ON rpo.* TO 'mon'@'%'",
    );
    let config = config_with(&monitor_target(T, &pair, "pw", true));
    let exporter = Exporter::start(&config).await;
    // The heartbeat writer and the poll start together and the write fails
    // in fewer round trips than a poll takes: a failed write alone can be
    // seen before the first poll is recorded. Wait for both.
    let metrics = exporter
        .wait_for_metrics(
            Duration::from_secs(10),
            "failed heartbeat writes and a successful poll",
            |m| {
                metric_value(m, "rpo_heartbeat_write_failures_total", &labels(T)).unwrap_or(0.0)
                    > 0.0
                    && metric_value(m, "rpo_probe_success", &labels(T)) == Some(1.0)
            },
        )
        .await;
    // Engine positions still work for the monitoring user. Nothing is
    // written (the heartbeat fails), so each poll proves its own sample of
    // the primary: the exposure is at most one poll (timeout 1 s + margin).
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 2.0, "exposure {exposure}");
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
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
        stderr.contains("CREATE TABLE IF NOT EXISTS `rpo_heartbeat`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("GRANT SELECT, INSERT, UPDATE ON `rpo_heartbeat` TO 'mon'@'%'"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_are_enough() {
    let pair = start_mariadb_pair().await;
    // deploy/sql/mysql-grants.sql as a MariaDB administrator runs it: with
    // the MariaDB line uncommented.
    let grants = std::fs::read_to_string(rpo_lab::repo_root().join("deploy/sql/mysql-grants.sql"))
        .unwrap()
        .replace(
            "-- GRANT BINLOG MONITOR, REPLICA MONITOR",
            "GRANT BINLOG MONITOR, REPLICA MONITOR",
        )
        .replace("'change-me'", "'monitor-pw'");
    pair.primary_sql(&grants).unwrap();
    pair.wait_for_replication(Duration::from_secs(10)).unwrap();
    let url = |port: u16| format!("mysql://rpo_monitor:monitor-pw@127.0.0.1:{port}/rpo");
    let config = config_with(&target_block(
        "mysql",
        T,
        "5s",
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\nheartbeat = {{ interval = \"500ms\" }}",
            url(pair.primary_port()),
            url(pair.replica_port())
        ),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO as rpo_monitor")
        .await;
    exporter.wait_for_probe_success(T).await;
    // GO may come from positions before the first heartbeat is replicated
    // (the table is created on the first write): wait for it to be seen.
    let metrics = exporter
        .wait_for_metrics(
            Duration::from_secs(15),
            "a heartbeat seen on the replica",
            |m| metric_value(m, "rpo_heartbeat_timestamp_seconds", &labels(T)).is_some(),
        )
        .await;
    let (written, seen) = heartbeat_written_and_seen(&metrics, T);
    assert!(
        written - seen < 2.0,
        "heartbeat written {written}, seen {seen}"
    );
    assert_metric(
        &metrics,
        "rpo_heartbeat_write_failures_total",
        &labels(T),
        Some(0.0),
    );
    assert!(
        metric_value(&metrics, "rpo_mysql_executed_lag_bytes", &labels(T)).is_some(),
        "SHOW BINARY LOGS works too: {metrics}"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_servers_ca_is_go_and_without_it_names_the_tls_error() {
    let pair = start_mariadb_pair_with(rpo_lab::mariadb::MariadbOptions { tls: true }).await;
    // A user that may only log in over TLS: GO proves the exporter used it.
    create_monitor(
        &pair,
        "tls-pw",
        "ALTER USER 'mon'@'%' REQUIRE SSL; GRANT BINLOG MONITOR, REPLICA MONITOR ON *.* TO 'mon'@'%'; GRANT SELECT ON rpo.* TO 'mon'@'%'",
    );
    let url = |port: u16| format!("mysql://mon:tls-pw@127.0.0.1:{port}/rpo?require_ssl=true");
    let urls = format!(
        "primary_url = \"{}\"\nreplica_url = \"{}\"",
        url(pair.primary_port()),
        url(pair.replica_port())
    );
    let ca = pair.ca_file().unwrap();
    let config = config_with(&format!(
        "{}{}",
        target_block(
            "mysql",
            T,
            "5s",
            &format!("{urls}\ntls_ca_file = \"{}\"", ca.display())
        ),
        // The lab's CA is not among the public roots.
        target_block("mysql", "untrusted", "5s", &urls),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_target_ready(T, Duration::from_secs(10), "GO over TLS")
        .await;
    let metrics = exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "the untrusted certificate",
            &[("untrusted", "connect")],
        )
        .await;
    assert_metric(&metrics, "rpo_target_ready", &labels(T), Some(1.0));
    let untrusted = reasons(&exporter.target_verdict("untrusted").await);
    assert!(
        untrusted.contains("replica unreachable (connect: TLS: ")
            && untrusted.contains("UnknownIssuer"),
        "{untrusted}"
    );
    assert!(!untrusted.contains("tls-pw"), "{untrusted}");
    exporter.stop().await;
}

// ---------------------------------------------------------------------------
// Promotion and split brain (SPEC section 11).

/// The heartbeat interval of `mysql_target`: the error bound of a measured loss.
const HEARTBEAT: f64 = 0.5;

/// Writes `n` = 0, 1, … into `rpo.seq_writes` on the primary every 50 ms
/// for `seconds`; returns when each write was acknowledged (this machine's
/// clock), by `n`. The table must exist (see `sequence_table`).
async fn write_sequence(primary_url: String, seconds: f64) -> Vec<f64> {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(primary_url).await.unwrap();
    let started = now_unix();
    let mut acknowledged = Vec::new();
    while now_unix() - started < seconds {
        conn.exec_drop(
            "INSERT INTO rpo.seq_writes (n) VALUES (?)",
            (acknowledged.len() as u64,),
        )
        .await
        .unwrap();
        acknowledged.push(now_unix());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acknowledged
}

/// Creates `rpo.seq_writes` on the primary and waits until the replica has it.
fn sequence_table(pair: &MariadbPair) {
    pair.primary_sql("CREATE TABLE rpo.seq_writes (n BIGINT PRIMARY KEY)")
        .unwrap();
    pair.wait_for_replication(Duration::from_secs(30)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_loss_then_promotion_measures_what_the_data_says_was_lost_then_failback_returns_to_go(
) {
    let mut pair = start_mariadb_pair().await;
    sequence_table(&pair);
    let exporter = Exporter::start(&config_with(&mysql_target(T, &pair, "3s", true))).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the loss")
        .await;

    // Numbered writes for 6 s; after the first second the replica stops
    // executing (it still receives); then the primary dies.
    let writer = tokio::spawn(write_sequence(pair.primary_url(), 6.0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    pair.stop_sql_thread().unwrap();
    let acknowledged = writer.await.unwrap();
    pair.kill_primary().unwrap();
    // Promoted by hand: RESET SLAVE ALL drops the relay log not executed,
    // so what the SQL thread had not applied is lost.
    pair.promote_replica().unwrap();

    // The truth, from the data: the newest write the promoted side holds.
    let survived: i64 = pair
        .replica_sql("SELECT COALESCE(MAX(n), -1) FROM rpo.seq_writes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(survived >= 0, "the writes before the stop replicated");
    let truth = acknowledged.last().unwrap() - acknowledged[survived as usize];
    assert!(truth > 3.0, "the test lost writes: {truth}s");

    let text = exporter
        .wait_for_metrics(Duration::from_secs(30), "a measured loss", |text| {
            metric_value(text, "rpo_measured_loss_seconds", &labels(T)).is_some()
        })
        .await;
    let loss = metric_value(&text, "rpo_measured_loss_seconds", &labels(T)).unwrap();
    eprintln!("mysql: measured loss {loss}s; the data says {truth}s");
    assert!(
        (loss - truth).abs() <= HEARTBEAT + 1.0,
        "measured loss {loss}s; the data says {truth}s"
    );
    assert_metric(&text, "rpo_promoted", &labels(T), Some(1.0));
    assert_metric(&text, "rpo_split_brain", &labels(T), Some(0.0));
    // GTID states are not one number: no bytes-lost figure.
    assert_metric(&text, "rpo_measured_loss_bytes", &labels(T), None);
    let predicted = metric_value(
        &text,
        "rpo_predicted_exposure_at_promotion_seconds",
        &labels(T),
    )
    .unwrap();
    assert!(
        predicted > 3.0,
        "predicted {predicted}s before the promotion"
    );

    // The verdict says it in words.
    let (status, planned) = exporter.verdict("?mode=planned").await;
    assert_eq!(status, 503, "{planned}");
    let db = exporter.target_verdict(T).await;
    assert!(
        reasons(&db).contains("replica promoted at ")
            && reasons(&db).contains("nothing replicates from it yet"),
        "{db}"
    );
    assert!(db["reason_details"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["code"] == "replica_promoted"));
    assert_eq!(db["promotion"]["side"], "replica_url", "{db}");
    assert_eq!(db["promoted"], true, "{db}");

    // The heartbeat now goes to the promoted side, which accepts it.
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(10),
            "the promoted side to accept a heartbeat",
            |t| t["promotion"]["first_heartbeat_accepted_at"].is_string(),
        )
        .await;

    // Failback: the old primary comes back and follows the promoted side;
    // the same exporter measures that direction and returns to GO.
    let pair = tokio::task::spawn_blocking(move || {
        pair.start_primary()?;
        pair.replicate_primary_from_replica()?;
        Ok::<_, rpo_lab::LabError>(pair)
    })
    .await
    .unwrap()
    .unwrap();
    let go = exporter
        .wait_for_go("", Duration::from_secs(30), "GO in the other direction")
        .await;
    let db = &go["groups"][0]["targets"][0];
    assert_eq!(db["direction"], "replica_url -> primary_url", "{db}");
    let text = exporter.metrics().await;
    assert_metric(&text, "rpo_promoted", &labels(T), Some(1.0));
    assert_metric(&text, "rpo_split_brain", &labels(T), Some(0.0));
    let (written, seen) = heartbeat_written_and_seen(&text, T);
    assert!(
        written - seen < 2.0 && now_unix() - seen < 3.0,
        "the heartbeat goes to the promoted side and is read on the old primary: written {written}, seen {seen}"
    );
    drop(pair);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_is_no_go_in_both_modes_within_two_polls() {
    let pair = start_mariadb_pair().await;
    let exporter = Exporter::start(&config_with(&mysql_target(T, &pair, "5s", true))).await;
    let _writer = MysqlWriter::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the split")
        .await;

    // The replica is promoted while the old primary keeps taking writes.
    let runs = |text: &str| metric_value(text, "rpo_probe_runs_total", &labels(T)).unwrap();
    pair.promote_replica().unwrap();
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
            first.starts_with(
                "erp-ledger: split brain: primary_url and replica_url both accept writes"
            ),
            "{mode}: {first}"
        );
        assert_eq!(
            verdict["reason_details"][0]["code"], "split_brain",
            "{mode}"
        );
    }
    assert_metric(&text, "rpo_target_ready", &labels(T), Some(0.0));
    exporter.stop().await;
}
