//! The `rabbitmq` kind against a real, isolated RabbitMQ node
//! (`rpo_lab::rabbitmq`): waiting messages read as the age of the
//! oldest, a drained queue is GO, a queue nobody consumes is NO-GO when
//! consumers are required, messages without timestamps are never "0", and
//! wrong passwords, unknown queues, hanging servers and a stopped broker
//! each fail their own target only.
//!
//! One node is shared by the tests of this binary (it takes ~13 s to
//! start); each test uses its own queues.

use std::time::{Duration, SystemTime};

use rpo_lab::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_messages_read_as_the_oldest_age_and_a_drained_queue_is_go() {
    let node = shared_rabbit().await;
    let queue = "orders-waiting";
    node.declare_queue(queue).unwrap();
    let published_at = SystemTime::now() - Duration::from_secs(30);
    node.publish(queue, 5, Some(published_at)).unwrap();
    let exporter = Exporter::start(&config_with(&rabbitmq_target(
        "erp-orders",
        node.management_port(),
        queue,
        "10s",
        "",
    )))
    .await;
    const T: &str = "erp-orders";

    exporter
        .wait_for_metrics(Duration::from_secs(15), "depth 5 on /metrics", |m| {
            metric_value(m, "rpo_queue_messages", &labels(T)) == Some(5.0)
        })
        .await;
    let metrics = exporter.metrics().await;
    let age_of_first = SystemTime::now()
        .duration_since(published_at)
        .unwrap()
        .as_secs_f64();
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    // The timestamp property has whole seconds: up to 1 s older, plus a poll.
    assert!(
        (exposure - age_of_first).abs() <= 2.0,
        "exposure {exposure} vs age of the first message {age_of_first}"
    );
    let oldest =
        metric_value(&metrics, "rpo_queue_oldest_message_age_seconds", &labels(T)).unwrap();
    assert!((oldest - age_of_first).abs() <= 2.0, "oldest age {oldest}");
    assert_metric(&metrics, "rpo_backlog_operations", &labels(T), Some(5.0));
    assert_metric(&metrics, "rpo_queue_messages_ready", &labels(T), Some(5.0));
    assert_metric(&metrics, "rpo_queue_consumers", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_budget_seconds", &labels(T), Some(10.0));
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
    assert!(metric_value(&metrics, "rpo_evidence_timestamp_seconds", &labels(T)).is_some());
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    let why = reasons(&verdict);
    assert!(
        why.contains("erp-orders: exposure ") && why.contains("exceeds budget 10s"),
        "{why}"
    );

    // A consumer takes everything: drained, GO, exposure back to the
    // statistics delay (2 s here), never stuck at the old age.
    assert_eq!(node.consume(queue, 10).unwrap(), 5);
    exporter
        .wait_for_go("?group=erp", Duration::from_secs(15), "GO after draining")
        .await;
    let metrics = exporter.metrics().await;
    assert_metric(&metrics, "rpo_queue_messages", &labels(T), Some(0.0));
    assert_metric(
        &metrics,
        "rpo_queue_oldest_message_age_seconds",
        &labels(T),
        Some(0.0),
    );
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure <= 3.0, "exposure of a drained queue {exposure}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_nobody_consumes_is_no_go_only_when_consumers_are_required() {
    let node = shared_rabbit().await;
    let queue = "orders-unconsumed";
    node.declare_queue(queue).unwrap();
    node.publish(queue, 2, Some(SystemTime::now())).unwrap();
    let port = node.management_port();
    let config = config_with(&format!(
        "{}{}",
        rabbitmq_target("required", port, queue, "60s", "require_consumers = true"),
        rabbitmq_target("not-required", port, queue, "60s", "")
    ));
    let exporter = Exporter::start(&config).await;
    let required = exporter
        .wait_for_target(
            "required",
            Duration::from_secs(15),
            "the missing consumer named",
            |t| reasons(t).contains("no consumer"),
        )
        .await
        .to_string();
    assert!(
        required.contains(
            "replication unhealthy: no consumer on queue orders-unconsumed and 2 messages waiting"
        ),
        "{required}"
    );
    let metrics = exporter.metrics().await;
    assert_metric(
        &metrics,
        "rpo_replication_healthy",
        &labels("required"),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_target_ready", &labels("required"), Some(0.0));
    // The same queue, consumers not required: young messages, GO.
    assert_metric(
        &metrics,
        "rpo_target_ready",
        &labels("not-required"),
        Some(1.0),
    );
    assert_metric(
        &metrics,
        "rpo_queue_consumers",
        &labels("required"),
        Some(0.0),
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_timestamps_are_unknown_until_the_queue_is_seen_empty() {
    let node = shared_rabbit().await;
    let queue = "orders-untimed";
    node.declare_queue(queue).unwrap();
    node.publish(queue, 3, None).unwrap();
    // The management API's counts lag the broker (statistics interval): wait
    // until they show the messages, or the exporter's first poll could see
    // the queue "empty" and, with this test's short statistics_delay, date
    // the messages from then.
    wait_until(
        Duration::from_secs(15),
        "the broker's stats to show 3 messages",
        || async {
            let n = node.queue_messages(queue).ok().flatten();
            (n == Some(3), format!("{n:?}"))
        },
    )
    .await;
    const T: &str = "untimed";
    let exporter = Exporter::start(&config_with(&rabbitmq_target(
        T,
        node.management_port(),
        queue,
        "30s",
        "",
    )))
    .await;
    exporter
        .wait_for_metrics(Duration::from_secs(15), "depth 3", |m| {
            metric_value(m, "rpo_queue_messages", &labels(T)) == Some(3.0)
        })
        .await;
    // Depth known, age unknown: no exposure at all, never 0, and NO-GO.
    let metrics = exporter.metrics().await;
    assert_metric(&metrics, "rpo_exposure_seconds", &labels(T), None);
    assert_metric(
        &metrics,
        "rpo_queue_oldest_message_age_seconds",
        &labels(T),
        None,
    );
    let t = exporter.target_verdict(T).await;
    assert!(reasons(&t).contains("recovery point unknown"), "{t}");

    // Seen empty once, then new untimed messages: bounded by that sighting,
    // so the exposure grows from it instead of reading 0.
    node.consume(queue, 10).unwrap();
    exporter
        .wait_for_target_ready(T, Duration::from_secs(15), "GO once empty")
        .await;
    node.publish(queue, 2, None).unwrap();
    exporter
        .wait_for_metrics(Duration::from_secs(15), "depth 2", |m| {
            metric_value(m, "rpo_queue_messages", &labels(T)) == Some(2.0)
        })
        .await;
    let e1 = exporter.exposure(T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e2 = exporter.exposure(T).await;
    assert!(
        e2 >= e1 + 2.5,
        "exposure must grow from the last empty sighting: {e1} -> {e2}"
    );
    assert!(exporter
        .metric("rpo_queue_last_empty_timestamp_seconds", &labels(T))
        .await
        .is_some());
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_password_unknown_queue_and_a_hanging_server_fail_only_their_own_target() {
    let node = shared_rabbit().await;
    let port = node.management_port();
    node.declare_queue("orders-healthy").unwrap();
    // The minimal user: the `monitoring` tag, and access to the vhost with
    // empty configure/write/read permissions (it can change and read nothing).
    node.add_user("rpo-monitor", "m0nitor-pw", "monitoring")
        .unwrap();
    node.set_permissions("rpo-monitor", "", "", "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = write_file(dir.path(), "password", "m0nitor-pw\n");
    let silent = rpo_lab::SilentServer::start().unwrap();
    let config = config_with(&format!(
        r#"
[[rabbitmq]]
name = "healthy"
group = "erp"
management_url = "http://127.0.0.1:{port}"
username = "rpo-monitor"
password_file = "{password_file}"
queue = "orders-healthy"
statistics_delay = "2s"

[[rabbitmq]]
name = "wrong-password"
group = "erp"
management_url = "http://guest:hunter2@127.0.0.1:{port}"
queue = "orders-healthy"

[[rabbitmq]]
name = "unknown-queue"
group = "erp"
management_url = "http://guest:guest@127.0.0.1:{port}"
queue = "no-such-queue"

[[rabbitmq]]
name = "hanging"
group = "erp"
management_url = "http://guest:guest@127.0.0.1:{silent_port}"
queue = "orders-healthy"
"#,
        password_file = password_file.display(),
        silent_port = silent.port()
    ));
    let exporter = Exporter::start(&config).await;
    wait_until(
        Duration::from_secs(15),
        "each failure named on its target",
        || async {
            let metrics = exporter.metrics().await;
            let done = failures_counted(
                &metrics,
                &[
                    ("wrong-password", "auth"),
                    ("unknown-queue", "query"),
                    ("hanging", "timeout"),
                ],
            ) && exporter.target_verdict("healthy").await["ready"] == true;
            (done, metrics)
        },
    )
    .await;
    let metrics = exporter.metrics().await;
    assert!(
        !metrics.contains("hunter2"),
        "a password leaked into /metrics"
    );
    for target in ["wrong-password", "unknown-queue", "hanging"] {
        assert_metric(&metrics, "rpo_target_ready", &labels(target), Some(0.0));
        assert_metric(&metrics, "rpo_probe_success", &labels(target), Some(0.0));
        // A failed poll drops its detail series instead of freezing them.
        assert_metric(&metrics, "rpo_queue_messages", &labels(target), None);
    }
    assert_metric(&metrics, "rpo_target_ready", &labels("healthy"), Some(1.0));
    assert_metric(&metrics, "rpo_probe_success", &labels("healthy"), Some(1.0));
    for failure in ["connect", "parse", "config"] {
        assert_metric(
            &metrics,
            "rpo_probe_failures_total",
            &[("target", "wrong-password"), ("reason", failure)],
            Some(0.0),
        );
    }

    let wrong = exporter.target_verdict("wrong-password").await.to_string();
    assert!(
        wrong.contains("auth: RabbitMQ management API at http://127.0.0.1:"),
        "{wrong}"
    );
    assert!(wrong.contains("HTTP 401"), "{wrong}");
    assert!(!wrong.contains("hunter2"), "{wrong}");
    let unknown = exporter.target_verdict("unknown-queue").await.to_string();
    assert!(
        unknown.contains("queue no-such-queue in vhost / does not exist"),
        "{unknown}"
    );
    let hanging = exporter.target_verdict("hanging").await.to_string();
    assert!(hanging.contains("timeout"), "{hanging}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_is_a_connect_failure_and_no_go_while_others_go_on() {
    let shared = shared_rabbit().await;
    shared.declare_queue("orders-bystander").unwrap();
    let mut own = start_rabbit().await;
    own.declare_queue("orders-doomed").unwrap();
    let config = config_with(&format!(
        "{}{}",
        rabbitmq_target("doomed", own.management_port(), "orders-doomed", "5s", ""),
        rabbitmq_target(
            "bystander",
            shared.management_port(),
            "orders-bystander",
            "5s",
            ""
        )
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(15),
            "GO with both brokers up",
        )
        .await;

    own.stop();
    assert!(!own.is_running());
    let doomed = exporter
        .wait_for_target(
            "doomed",
            Duration::from_secs(10),
            "the stopped broker named",
            |t| reasons(t).contains("connect"),
        )
        .await
        .to_string();
    assert!(doomed.contains("cannot connect"), "{doomed}");
    let e1 = exporter.exposure("doomed").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = exporter.metrics().await;
    let e2 = metric_value(&metrics, "rpo_exposure_seconds", &labels("doomed")).unwrap();
    assert!(
        e2 >= e1 + 5.0,
        "no reset: exposure must keep growing, {e1} -> {e2}"
    );
    assert!(failures_counted(&metrics, &[("doomed", "connect")]));
    assert_metric(&metrics, "rpo_target_ready", &labels("doomed"), Some(0.0));
    assert_metric(
        &metrics,
        "rpo_target_ready",
        &labels("bystander"),
        Some(1.0),
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    let why = reasons(&verdict);
    assert!(why.contains("doomed: "), "{why}");
    assert!(!why.contains("bystander"), "{why}");
    exporter.stop().await;
    drop(own);
}
