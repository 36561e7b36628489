//! The `sql_queue` kind against a real PostgreSQL (the primary of a lab
//! pair): an outbox with processed and unprocessed rows of known age, a
//! query with the wrong columns, an unknown role, a server that hangs, a
//! query that tries to write and one that runs too long.

use std::time::Duration;

use rpo_lab::support::*;

const OUTBOX: &str = "CREATE TABLE outbox (id bigserial PRIMARY KEY, payload text, \
     created_at timestamptz NOT NULL DEFAULT now(), processed_at timestamptz)";
const UNPROCESSED: &str =
    "SELECT count(*), min(created_at) FROM outbox WHERE processed_at IS NULL;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_rows_read_as_the_oldest_age_and_processing_them_is_go() {
    let pair = start_pair().await;
    pair.primary_sql(OUTBOX).unwrap();
    // Two rows processed long ago, three waiting: 40 s, 20 s and 10 s old.
    pair.primary_sql(
        "INSERT INTO outbox (payload, created_at, processed_at) VALUES \
         ('done', now() - interval '300 s', now() - interval '200 s'), \
         ('done', now() - interval '250 s', now() - interval '200 s'), \
         ('a', now() - interval '40 s', NULL), \
         ('b', now() - interval '20 s', NULL), \
         ('c', now() - interval '10 s', NULL)",
    )
    .unwrap();
    const T: &str = "erp-outbox";
    let exporter = Exporter::start(&config_with(&sql_queue_target(
        T,
        &pair.primary_url(),
        "15s",
        UNPROCESSED,
    )))
    .await;
    exporter
        .wait_for_metrics(Duration::from_secs(10), "depth 3", |m| {
            metric_value(m, "rpo_queue_messages", &labels(T)) == Some(3.0)
        })
        .await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        (40.0..43.0).contains(&exposure),
        "exposure {exposure}, the oldest row is 40 s old"
    );
    let oldest =
        metric_value(&metrics, "rpo_queue_oldest_message_age_seconds", &labels(T)).unwrap();
    assert!((40.0..43.0).contains(&oldest), "oldest age {oldest}");
    assert_metric(&metrics, "rpo_backlog_operations", &labels(T), Some(3.0));
    assert_metric(&metrics, "rpo_queue_consumers", &labels(T), None);
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    let why = reasons(&verdict);
    assert!(
        why.contains("erp-outbox: exposure 4") && why.contains("exceeds budget 15s"),
        "{why}"
    );

    // The integration catches up.
    pair.primary_sql("UPDATE outbox SET processed_at = now() WHERE processed_at IS NULL")
        .unwrap();
    exporter
        .wait_for_go("?group=erp", Duration::from_secs(10), "GO once processed")
        .await;
    let metrics = exporter.metrics().await;
    assert_metric(&metrics, "rpo_queue_messages", &labels(T), Some(0.0));
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 1.5, "exposure of a drained outbox {exposure}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_the_wrong_columns_fails_validation_naming_the_target() {
    let pair = start_pair().await;
    pair.primary_sql(OUTBOX).unwrap();
    let url = pair.primary_url();
    let config = config_with(&format!(
        "{}{}{}",
        sql_queue_target(
            "wrong-columns",
            &url,
            "60s",
            "SELECT id, payload FROM outbox"
        ),
        sql_queue_target("not-sql", &url, "60s", "SELEKT count(*) FROM outbox"),
        sql_queue_target("healthy", &url, "60s", UNPROCESSED),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "config failures counted",
            &[("wrong-columns", "config"), ("not-sql", "config")],
        )
        .await;
    let wrong = exporter.target_verdict("wrong-columns").await.to_string();
    assert!(
        wrong.contains("config: target wrong-columns: the first column (id int8) must be an integer or numeric count")
            || wrong.contains("config: target wrong-columns: the second column (payload text) must be a timestamptz"),
        "{wrong}"
    );
    assert!(
        wrong.contains("columns found: id int8, payload text"),
        "{wrong}"
    );
    let not_sql = exporter.target_verdict("not-sql").await.to_string();
    assert!(
        not_sql.contains("target not-sql: the configured query cannot be prepared"),
        "{not_sql}"
    );
    assert!(not_sql.contains("syntax error"), "{not_sql}");
    let metrics = exporter.metrics().await;
    assert_metric(
        &metrics,
        "rpo_target_ready",
        &labels("wrong-columns"),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_target_ready", &labels("healthy"), Some(1.0));
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_role_hanging_server_writes_and_slow_queries_are_named_failures() {
    let pair = start_pair().await;
    pair.primary_sql(OUTBOX).unwrap();
    pair.primary_sql("CREATE SEQUENCE side_effect").unwrap();
    // One row, so that the writing query's nextval() is evaluated at all.
    pair.primary_sql("INSERT INTO outbox (payload) VALUES ('x')")
        .unwrap();
    let silent = rpo_lab::SilentServer::start().unwrap();
    let url = pair.primary_url();
    let port = pair.primary_port();
    let config = config_with(&format!(
        "{}{}{}{}{}",
        sql_queue_target(
            "unknown-role",
            &format!("postgres://nobody:hunter2@127.0.0.1:{port}/postgres"),
            "60s",
            UNPROCESSED
        ),
        sql_queue_target(
            "hanging",
            &format!("postgres://monitor@127.0.0.1:{}/x", silent.port()),
            "60s",
            UNPROCESSED
        ),
        sql_queue_target(
            "writes",
            &url,
            "60s",
            "SELECT count(*), min(created_at) FROM outbox WHERE nextval('side_effect') > 0"
        ),
        sql_queue_target(
            "slow",
            &url,
            "60s",
            "SELECT count(*), min(created_at) FROM outbox, pg_sleep(5)"
        ),
        sql_queue_target("healthy", &url, "60s", UNPROCESSED),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_failures(
            Duration::from_secs(15),
            "each failure on its own target",
            &[
                ("unknown-role", "auth"),
                ("hanging", "timeout"),
                ("writes", "query"),
                ("slow", "query"),
            ],
        )
        .await;
    let unknown = exporter.target_verdict("unknown-role").await.to_string();
    assert!(
        unknown.contains("role \\\"nobody\\\" does not exist"),
        "{unknown}"
    );
    assert!(!unknown.contains("hunter2"), "{unknown}");
    // READ ONLY: the query could not advance the sequence.
    let writes = exporter.target_verdict("writes").await.to_string();
    assert!(writes.contains("read-only transaction"), "{writes}");
    assert_eq!(
        pair.primary_sql("SELECT last_value FROM side_effect")
            .unwrap(),
        "1"
    );
    assert_eq!(
        pair.primary_sql("SELECT is_called FROM side_effect")
            .unwrap(),
        "f",
        "the sequence was never advanced"
    );
    // statement_timeout: the server cancels the query before we give up.
    let slow = exporter.target_verdict("slow").await.to_string();
    assert!(slow.contains("statement timeout"), "{slow}");
    let metrics = exporter.metrics().await;
    assert!(!metrics.contains("hunter2"));
    assert_metric(&metrics, "rpo_target_ready", &labels("healthy"), Some(1.0));
    for target in ["unknown-role", "hanging", "writes", "slow"] {
        assert_metric(&metrics, "rpo_target_ready", &labels(target), Some(0.0));
    }
    exporter.stop().await;
}
