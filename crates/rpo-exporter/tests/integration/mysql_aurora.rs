//! The `mysql` kind on an Aurora MySQL global database secondary, read at
//! the SQL level. **No Aurora runs here**: a real MariaDB pair plays it.
//! The replica replicates over a *named* connection (`CHANGE MASTER
//! 'aurora' TO`), so `SHOW SLAVE STATUS` shows nothing, as on an Aurora
//! instance; views of the documented shape of
//! `information_schema.aurora_global_db_instance_status` and
//! `aurora_global_db_status` (Amazon Aurora User Guide, "Aurora
//! MySQL–specific information_schema tables") and a function standing in
//! for `@@aurora_server_id` are defined in the URLs' database `rpo` (where
//! the product looks only because `information_schema` has no such table).
//! Their LSNs are the pair's real GTID sequence numbers: the writer's
//! `@@gtid_binlog_pos` and the secondary's `@@gtid_slave_pos`, evaluated on
//! each server, so a stalled secondary's durable LSN really stops.

use std::time::Duration;

use rpo_lab::mariadb::MariadbPair;
use rpo_lab::support::*;

const T: &str = "erp-ledger-aurora";

/// The stand-ins, created on the primary (they replicate); the functions
/// are evaluated on the server that is asked (server_id 1 = the writer).
const AURORA_FAKE_SQL: &str = r#"
CREATE FUNCTION rpo.aurora_server_id() RETURNS VARCHAR(100) NOT DETERMINISTIC NO SQL
  RETURN IF(@@server_id = 1, 'erp-writer-1', 'erp-dr-1');
CREATE FUNCTION rpo.lab_writer_lsn() RETURNS BIGINT UNSIGNED NOT DETERMINISTIC NO SQL
  RETURN CAST(SUBSTRING_INDEX(IF(@@server_id = 1, @@gtid_binlog_pos, @@gtid_slave_pos), '-', -1) AS UNSIGNED);
CREATE FUNCTION rpo.lab_secondary_lsn() RETURNS BIGINT UNSIGNED NOT DETERMINISTIC NO SQL
  RETURN CAST(SUBSTRING_INDEX(@@gtid_slave_pos, '-', -1) AS UNSIGNED);
CREATE TABLE rpo.aurora_fake (rpo_ms DOUBLE, durability_ms DOUBLE, visibility_ms DOUBLE);
INSERT INTO rpo.aurora_fake VALUES (0, 0, 0);
CREATE VIEW rpo.aurora_global_db_instance_status AS
  SELECT 'erp-writer-1' AS SERVER_ID, 'MASTER_SESSION_ID' AS SESSION_ID, 'us-east-1' AS AWS_REGION,
         rpo.lab_writer_lsn() AS DURABLE_LSN, 0 AS HIGHEST_LSN_RECEIVED, 0 AS OLDEST_READ_VIEW_TRX_ID,
         0 AS OLDEST_READ_VIEW_LSN, 0 AS VISIBILITY_LAG_IN_MSEC
  UNION ALL
  SELECT 'erp-dr-1', 'cc43165b-bdc6-4651-abbf-4f74f08bf931', 'us-west-2',
         rpo.lab_secondary_lsn(), rpo.lab_secondary_lsn(), 20806928, rpo.lab_secondary_lsn(),
         (SELECT visibility_ms FROM rpo.aurora_fake);
CREATE VIEW rpo.aurora_global_db_status AS
  SELECT 'us-east-1' AS AWS_REGION, rpo.lab_writer_lsn() AS HIGHEST_LSN_WRITTEN,
         0 AS DURABILITY_LAG_IN_MILLISECONDS, 0 AS RPO_LAG_IN_MILLISECONDS,
         TIMESTAMP'1970-01-01 00:00:00' AS LAST_LAG_CALCULATION_TIMESTAMP, 0 AS OLDEST_READ_VIEW_TRX_ID
  UNION ALL
  SELECT 'us-west-2', rpo.lab_secondary_lsn(), (SELECT durability_ms FROM rpo.aurora_fake),
         (SELECT rpo_ms FROM rpo.aurora_fake), NOW(6), 20806982;
"#;

/// Makes the lab pair look like an Aurora global database to the kind.
fn play_aurora(pair: &MariadbPair) {
    pair.primary_sql(AURORA_FAKE_SQL).unwrap();
    pair.wait_for_replication(Duration::from_secs(30)).unwrap();
    pair.replica_sql(&format!(
        "STOP SLAVE; RESET SLAVE ALL;
         CHANGE MASTER 'aurora' TO MASTER_HOST='127.0.0.1', MASTER_PORT={},
             MASTER_USER='repl', MASTER_PASSWORD='repl',
             MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
         START SLAVE 'aurora'",
        pair.primary_port()
    ))
    .unwrap();
    assert_eq!(pair.replica_sql("SHOW SLAVE STATUS").unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aurora_mysql_global_secondary_is_dated_by_the_writers_durable_lsn() {
    let pair = start_mariadb_pair().await;
    let pair = tokio::task::spawn_blocking(move || {
        play_aurora(&pair);
        pair
    })
    .await
    .unwrap();
    let writer = MysqlWriter::start(&pair.primary_url(), Duration::from_millis(100)).await;
    // No heartbeat: the LSNs alone prove the recovery point.
    let exporter = Exporter::start(&config_with(&mysql_target(T, &pair, "3s", false))).await;

    // Steady: GO, small exposure, Aurora's figures shown.
    exporter
        .wait_for_go("", Duration::from_secs(20), "GO on an Aurora secondary")
        .await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 2.0, "exposure {exposure}");
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
    assert_metric(
        &metrics,
        "rpo_mysql_aurora_rpo_lag_seconds",
        &labels(T),
        Some(0.0),
    );
    assert_metric(
        &metrics,
        "rpo_mysql_aurora_durability_lag_seconds",
        &labels(T),
        Some(0.0),
    );
    // No binlog replica threads on Aurora: their series are not published.
    assert_metric(&metrics, "rpo_mysql_io_thread_running", &labels(T), None);

    // Stalled secondary: its durable LSN stops while the writer's moves;
    // Aurora's own RPO lag still reads 0.
    pair.replica_sql("STOP SLAVE 'aurora' SQL_THREAD").unwrap();
    exporter
        .wait_for_target(T, Duration::from_secs(15), "NO-GO on the stall", |t| {
            t["ready"] == false
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure > 3.0, "exposure {exposure} must grow on a stall");
    assert_metric(
        &metrics,
        "rpo_mysql_aurora_rpo_lag_seconds",
        &labels(T),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
    assert_metric(&metrics, "rpo_target_ready", &labels(T), Some(0.0));
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    assert_eq!(verdict["verdict"], "NO-GO");
    assert!(reasons(&verdict).contains(T), "{verdict}");

    // Resumed: GO again.
    pair.replica_sql("START SLAVE 'aurora' SQL_THREAD").unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(20), "GO after the stall")
        .await;

    // The writer's region lost: planned NO-GO, the recovery point kept.
    drop(writer);
    let _pair = tokio::task::spawn_blocking(move || {
        let mut pair = pair;
        pair.stop_primary().unwrap();
        pair
    })
    .await
    .unwrap();
    exporter
        .wait_for_target(T, Duration::from_secs(15), "source unreachable", |t| {
            reasons(t).contains("source unreachable")
        })
        .await;
    let rp1 = exporter
        .metric("rpo_recovery_point_timestamp_seconds", &labels(T))
        .await
        .expect("the recovery point is kept when the writer is gone");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rp2 = exporter
        .metric("rpo_recovery_point_timestamp_seconds", &labels(T))
        .await
        .unwrap();
    assert!(
        (rp2 - rp1).abs() < 0.01,
        "recovery point moved: {rp1} -> {rp2}"
    );
    let (status, planned) = exporter.verdict("?group=erp&mode=planned").await;
    assert_eq!(status, 503, "{planned}");
    assert!(
        reasons(&planned).contains(&format!("{T}: source unreachable")),
        "{planned}"
    );
    exporter.stop().await;
}
