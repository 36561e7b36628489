//! The `redis_stream` kind against a real Redis: entries added at known
//! times, delivered and acknowledged or not; a group whose lag Redis cannot
//! tell; unknown streams and groups, wrong passwords, missing grants and a
//! server that hangs, each failing only its own target.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rpo_lab::redis::{RedisOptions, RedisServer};
use rpo_lab::support::*;

const T: &str = "erp-orders";

/// How old the entry `id` is now, by this clock (the lab server's clock is
/// the same machine's).
fn age_seconds(id: &str) -> f64 {
    let ms: u64 = id.trim_end_matches("-0").parse().unwrap();
    (now_ms() - ms) as f64 / 1000.0
}

/// The exposure is as of the last poll (500 ms cadence), so it trails the
/// entry's age by less than a poll interval plus the poll's own time.
fn assert_exposure_is_age_of(exposure: f64, id: &str) {
    let age = age_seconds(id);
    assert!(
        exposure <= age + 0.05 && exposure >= age - 1.0,
        "exposure {exposure}, entry {id} is {age}s old"
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Adds an entry with an id `age_ms` in the past; returns its id.
fn add_entry(server: &RedisServer, stream: &str, age_ms: u64) -> String {
    let id = format!("{}-0", now_ms() - age_ms);
    server.command(&["XADD", stream, &id, "item", "x"]).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposure_is_the_age_of_the_oldest_unacknowledged_entry() {
    let server = start_redis_server(RedisOptions::default()).await;
    let ids: Vec<String> = [40_000, 30_000, 20_000, 10_000]
        .into_iter()
        .map(|age| add_entry(&server, "orders", age))
        .collect();
    server
        .command(&["XGROUP", "CREATE", "orders", "billing", "0"])
        .unwrap();
    // Two delivered, the first acknowledged: the second (30 s old) is
    // pending, the last two (20 s, 10 s) are undelivered.
    server
        .command(&[
            "XREADGROUP",
            "GROUP",
            "billing",
            "worker-1",
            "COUNT",
            "2",
            "STREAMS",
            "orders",
            ">",
        ])
        .unwrap();
    server
        .command(&["XACK", "orders", "billing", &ids[0]])
        .unwrap();

    let url = server.url();
    let config = config_with(&format!(
        "{}{}",
        redis_stream_target(T, &url, "orders", "billing", "60s", ""),
        redis_stream_target("tight", &url, "orders", "billing", "10s", "")
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert_exposure_is_age_of(exposure, &ids[1]);
    for (name, value) in [
        ("rpo_redis_stream_pending_entries", 1.0),
        ("rpo_redis_stream_lag_entries", 2.0),
        ("rpo_redis_stream_consumers", 1.0),
        ("rpo_redis_stream_length_entries", 4.0),
        ("rpo_backlog_operations", 3.0),
        ("rpo_replication_healthy", 1.0),
        ("rpo_target_ready", 1.0),
    ] {
        assert_metric(&metrics, name, &labels(T), Some(value));
    }
    assert!(metrics.contains("kind=\"redis_stream\""));
    let pending_at = metric_value(
        &metrics,
        "rpo_redis_stream_oldest_pending_entry_timestamp_seconds",
        &labels(T),
    )
    .unwrap();
    let ms: f64 = ids[1].trim_end_matches("-0").parse().unwrap();
    assert!((pending_at - ms / 1000.0).abs() < 1e-3, "{pending_at}");
    assert!(metric_value(
        &metrics,
        "rpo_redis_stream_oldest_undelivered_entry_timestamp_seconds",
        &labels(T)
    )
    .is_some());
    let tight = exporter.target_verdict("tight").await;
    assert_eq!(tight["ready"], false);
    let why = reasons(&tight);
    assert!(
        why.contains("exposure 3") && why.contains("exceeds budget 10s"),
        "{tight}"
    );

    // Acknowledge the pending one: the oldest undelivered (~20 s) remains.
    server
        .command(&["XACK", "orders", "billing", &ids[1]])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exposure = exporter.exposure(T).await;
    assert_exposure_is_age_of(exposure, &ids[2]);

    // Deliver and acknowledge everything: nothing outstanding, exposure ~0.
    server
        .command(&[
            "XREADGROUP",
            "GROUP",
            "billing",
            "worker-1",
            "STREAMS",
            "orders",
            ">",
        ])
        .unwrap();
    let acknowledged_from = now_ms();
    server
        .command(&["XACK", "orders", "billing", &ids[2], &ids[3]])
        .unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(5), "GO with nothing outstanding")
        .await;
    // The whole verdict's GO may come from another target's poll after the
    // acknowledgement while this one's last poll was before it (its budget
    // allows the 20 s age): wait for a poll of this target that found
    // nothing outstanding.
    let metrics = exporter
        .wait_for_metrics(
            Duration::from_secs(5),
            "a poll of the target with nothing outstanding",
            |m| metric_value(m, "rpo_backlog_operations", &labels(T)) == Some(0.0),
        )
        .await;
    // That poll read the group after the acknowledgement: the exposure is
    // at most the time since then (the poll stamps its time just before it
    // reads; 0.5 s allows for that thread being descheduled), not the 10 s
    // age of the newest entry, however slow the machine.
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    let since_ack = (now_ms() - acknowledged_from) as f64 / 1000.0;
    assert!(
        exposure <= since_ack + 0.5,
        "exposure {exposure} with nothing outstanding, acknowledged {since_ack}s ago"
    );
    assert_metric(&metrics, "rpo_backlog_operations", &labels(T), Some(0.0));
    assert_metric(
        &metrics,
        "rpo_redis_stream_oldest_pending_entry_timestamp_seconds",
        &labels(T),
        None,
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_unknown_to_redis_is_counted() {
    let server = start_redis_server(RedisOptions::default()).await;
    let ids: Vec<String> = [50_000, 40_000, 30_000, 20_000, 10_000]
        .into_iter()
        .map(|age| add_entry(&server, "orders", age))
        .collect();
    // A group created at an id inside the stream: Redis 7 reports lag nil.
    server
        .command(&["XGROUP", "CREATE", "orders", "late", &ids[1]])
        .unwrap();
    let config = config_with(&redis_stream_target(
        T,
        &server.url(),
        "orders",
        "late",
        "60s",
        "",
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = exporter.metrics().await;
    assert_metric(
        &metrics,
        "rpo_redis_stream_lag_entries",
        &labels(T),
        Some(3.0),
    );
    assert_metric(&metrics, "rpo_backlog_operations", &labels(T), Some(3.0));
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert_exposure_is_age_of(exposure, &ids[2]);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_group_bad_password_missing_grant_and_hang_are_named() {
    let server = start_redis_server(RedisOptions {
        password: Some("hunter2".to_string()),
        tls: false,
    })
    .await;
    add_entry(&server, "orders", 1_000);
    server
        .command(&["XGROUP", "CREATE", "orders", "billing", "$"])
        .unwrap();
    server
        .command(&["XGROUP", "CREATE", "orders", "idle", "$"])
        .unwrap();
    server.command(&["SET", "not-a-stream", "x"]).unwrap();
    // The documented minimal ACL for the stream monitor, one without
    // XPENDING and one without TIME.
    for command in [
        "ACL SETUSER rpo-stream on >stream-secret +ping +xinfo|groups +xpending +xrange +xlen +time ~orders",
        "ACL SETUSER rpo-nopending on >stream-secret +ping +xinfo|groups +xrange +xlen +time ~orders",
        "ACL SETUSER rpo-notime on >stream-secret +ping +xinfo|groups +xpending +xrange +xlen ~orders",
    ] {
        let args: Vec<&str> = command.split(' ').collect();
        server.command(&args).unwrap();
    }
    // A consumer in `billing` (an XREADGROUP that delivers nothing
    // registers none in Redis 7.0).
    server
        .command(&["XGROUP", "CREATECONSUMER", "orders", "billing", "worker-1"])
        .unwrap();
    let silent = rpo_lab::SilentServer::start().unwrap();
    let port = server.port();
    let acl_url = |user: &str| format!("redis://{user}:stream-secret@127.0.0.1:{port}");
    let url = server.url();
    let config = config_with(&format!(
        "{}{}{}{}{}{}{}{}{}",
        redis_stream_target(
            T,
            &acl_url("rpo-stream"),
            "orders",
            "billing",
            "60s",
            "require_consumers = true"
        ),
        redis_stream_target(
            "no-time",
            &acl_url("rpo-notime"),
            "orders",
            "billing",
            "60s",
            ""
        ),
        redis_stream_target("no-stream", &url, "shipments", "billing", "60s", ""),
        redis_stream_target("no-group", &url, "orders", "invoicing", "60s", ""),
        redis_stream_target("wrong-type", &url, "not-a-stream", "billing", "60s", ""),
        redis_stream_target(
            "no-consumers",
            &url,
            "orders",
            "idle",
            "60s",
            "require_consumers = true"
        ),
        redis_stream_target(
            "wrong-password",
            &format!("redis://:hunter3@127.0.0.1:{port}"),
            "orders",
            "billing",
            "60s",
            ""
        ),
        redis_stream_target(
            "no-xpending",
            &acl_url("rpo-nopending"),
            "orders",
            "billing",
            "60s",
            ""
        ),
        redis_stream_target(
            "silent",
            &format!("redis://127.0.0.1:{}", silent.port()),
            "orders",
            "billing",
            "60s",
            ""
        ),
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = exporter.metrics().await;
    assert_eq!(
        metric_value(&metrics, "rpo_target_ready", &labels(T)),
        Some(1.0),
        "{}",
        exporter.target_verdict(T).await
    );
    assert!(
        !metrics.contains("hunter"),
        "a password leaked into /metrics"
    );
    for (target, reason, words) in [
        ("no-stream", "query", "stream `shipments` does not exist"),
        (
            "no-group",
            "query",
            "consumer group `invoicing` does not exist on stream `orders` (its groups: billing, idle)",
        ),
        ("wrong-type", "query", "key `not-a-stream` is not a stream"),
        ("wrong-password", "auth", "WRONGPASS"),
        ("no-xpending", "auth", "NOPERM"),
        ("silent", "timeout", "no answer within"),
    ] {
        assert!(
            failures_counted(&metrics, &[(target, reason)]),
            "{target}: no {reason} failures"
        );
        let verdict = exporter.target_verdict(target).await;
        assert_eq!(verdict["ready"], false, "{verdict}");
        let why = reasons(&verdict);
        assert!(
            why.contains(&format!("last poll failed ({reason}: ")) && why.contains(words),
            "{target}: {verdict}"
        );
        assert!(!why.contains("hunter") && !why.contains("stream-secret"), "{verdict}");
    }
    // The documented ACL reads the server's clock; without +time the poll
    // says what to grant, and (nothing waits in `billing`) still proves "now".
    assert!(metric_value(
        &metrics,
        "rpo_clock_offset_seconds",
        &[("target", T), ("side", "source")]
    )
    .is_some());
    assert!(
        failures_counted(&metrics, &[("no-time", "auth")]),
        "no-time: no auth failure counted"
    );
    assert_metric(&metrics, "rpo_probe_success", &labels("no-time"), Some(0.0));
    assert_metric(&metrics, "rpo_target_ready", &labels("no-time"), Some(1.0));
    let idle = exporter.target_verdict("no-consumers").await;
    assert!(
        reasons(&idle).contains("replication unhealthy: consumer group idle has no consumers"),
        "{idle}"
    );
    assert_metric(
        &metrics,
        "rpo_redis_stream_consumers",
        &labels("no-consumers"),
        Some(0.0),
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_over_tls_with_the_lab_ca() {
    let server = start_redis_server(RedisOptions {
        password: Some("hunter2".to_string()),
        tls: true,
    })
    .await;
    let id = add_entry(&server, "orders", 5_000);
    server
        .command(&["XGROUP", "CREATE", "orders", "billing", "0"])
        .unwrap();
    let ca = server.ca_file().unwrap();
    let url = format!("rediss://localhost:{}", server.port());
    let config = config_with(&redis_stream_target(
        T,
        &url,
        "orders",
        "billing",
        "60s",
        &format!(
            "password_env = \"RPO_TEST_STREAM_PASSWORD\"\ntls_ca_file = \"{}\"",
            ca.display()
        ),
    ));
    std::env::set_var("RPO_TEST_STREAM_PASSWORD", "hunter2");
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = exporter.metrics().await;
    assert_eq!(
        metric_value(&metrics, "rpo_target_ready", &labels(T)),
        Some(1.0),
        "{}",
        exporter.target_verdict(T).await
    );
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert_exposure_is_age_of(exposure, &id);
    exporter.stop().await;
}
