//! The Redis kind against a real primary with a replica: steady state, the
//! idle-primary trap, a frozen (SIGSTOP) replica, killed replicas and
//! primaries, TLS, ACLs, and targets that refuse, hang or reject the
//! password next to a healthy one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpo_lab::redis::{RedisOptions, RedisPair};
use rpo_lab::support::*;
use rpo_lab::LabResult;

const T: &str = "erp-sessions";

/// Brings one side of `pair` back (`start`: [`RedisPair::start_replica`] or
/// [`RedisPair::start_primary`]) off the async threads, and waits up to
/// `within` for the replication link; returns the pair, to keep it alive.
async fn restarted(
    mut pair: RedisPair,
    start: fn(&mut RedisPair) -> LabResult<()>,
    within: Duration,
) -> RedisPair {
    start_blocking("the pair comes back with its link up", move || {
        start(&mut pair)?;
        pair.wait_for_link_up(within)?;
        LabResult::Ok(pair)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_with_writes_is_go_with_small_exposure_and_heartbeat() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let _writer = RedisWriter::start(&pair, Duration::from_millis(50)).await;
    let exporter = Exporter::start(&config_with(&redis_target(T, &pair, "5s", true, ""))).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["verdict"], "GO");
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 2.0, "exposure {exposure}");
    for (name, value) in [
        ("rpo_replication_healthy", 1.0),
        ("rpo_target_ready", 1.0),
        ("rpo_redis_master_link_up", 1.0),
        ("rpo_redis_master_sync_in_progress", 0.0),
        ("rpo_redis_replica_listed_online", 1.0),
        ("rpo_redis_replica_is_replica", 1.0),
        ("rpo_redis_connected_replicas", 1.0),
    ] {
        assert_metric(&metrics, name, &labels(T), Some(value));
    }
    assert_metric(&metrics, "rpo_budget_seconds", &labels(T), Some(5.0));
    assert!(metrics.contains("kind=\"redis\""));
    // Acks come once a second: the lag is at most about a second of writes
    // (20 writes of ~250 bytes), never the whole stream.
    let lag = metric_value(&metrics, "rpo_redis_offset_lag_bytes", &labels(T)).unwrap();
    assert!(lag < 16.0 * 1024.0, "offset lag {lag}");
    assert_metric(&metrics, "rpo_backlog_bytes", &labels(T), Some(lag));
    assert!(metric_value(&metrics, "rpo_catchup_seconds", &labels(T)).unwrap() < 5.0);
    let evidence = metric_value(&metrics, "rpo_evidence_timestamp_seconds", &labels(T)).unwrap();
    assert!(now_unix() - evidence < 2.0, "evidence {evidence}");
    // The heartbeat canary is written and read back on the replica.
    let (written, seen) = heartbeat_written_and_seen(&metrics, T);
    assert!(
        written - seen < 2.0,
        "heartbeat written {written}, seen {seen}"
    );
    // One key per exporter instance, overwritten, with an expiry.
    let ttl = pair
        .replica_command(&["TTL", "rpo:heartbeat:test"])
        .unwrap();
    assert!(
        matches!(ttl, redis::Value::Int(t) if t > 6 * 24 * 3600),
        "TTL {ttl:?}"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_primary_stays_go_with_and_without_heartbeat() {
    // Two pairs so the heartbeat writes of one cannot wake the other.
    let (a, b) = tokio::join!(
        start_redis_pair(RedisOptions::default()),
        start_redis_pair(RedisOptions::default())
    );
    a.primary_command(&["SET", "one", "write"]).unwrap();
    let config = config_with(&format!(
        "{}{}",
        redis_target("idle-offsets", &a, "3s", false, ""),
        redis_target("idle-heartbeat", &b, "3s", true, "")
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let offset_before = exporter
        .metric(
            "rpo_redis_primary_repl_offset_bytes",
            &labels("idle-offsets"),
        )
        .await
        .unwrap();
    // Past two of the primary's 10 s replica PINGs, which move the offset
    // with no write at all (the idle trap, Redis flavour).
    let mut worst: f64 = 0.0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(23) {
        let metrics = exporter.metrics().await;
        for target in ["idle-offsets", "idle-heartbeat"] {
            if let Some(e) = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)) {
                worst = worst.max(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let offset_after = exporter
        .metric(
            "rpo_redis_primary_repl_offset_bytes",
            &labels("idle-offsets"),
        )
        .await
        .unwrap();
    assert!(
        offset_after > offset_before,
        "the trap is set: the idle primary's offset moved ({offset_before} -> {offset_after})"
    );
    assert!(
        worst < 2.0,
        "idle primary read as lag: worst exposure {worst}"
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "{verdict}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_replica_grows_lag_and_exposure_then_recovers() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let config = config_with(&format!(
        "{}{}",
        redis_target(T, &pair, "2s", true, ""),
        redis_target("erp-sessions-offsets", &pair, "2s", false, "")
    ));
    let exporter = Exporter::start(&config).await;
    let writer = RedisWriter::start(&pair, Duration::from_millis(50)).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO before the freeze")
        .await;

    pair.sigstop_replica().unwrap();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lag_early = exporter
        .metric("rpo_redis_offset_lag_bytes", &labels(T))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = exporter.metrics().await;
    let elapsed = stopped_at.elapsed().as_secs_f64();
    for target in [T, "erp-sessions-offsets"] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        // Within one heartbeat (or poll) interval plus a second of the pause.
        assert!(
            (exposure - elapsed).abs() <= 1.5,
            "{target}: exposure {exposure} after {elapsed}s frozen"
        );
        let lag = metric_value(&metrics, "rpo_redis_offset_lag_bytes", &labels(target)).unwrap();
        assert!(
            lag > lag_early && lag > 10_000.0,
            "{target}: lag {lag_early} -> {lag}"
        );
        assert_metric(&metrics, "rpo_backlog_bytes", &labels(target), Some(lag));
        assert!(metric_value(&metrics, "rpo_catchup_seconds", &labels(target)).unwrap() > 0.0);
        assert_metric(
            &metrics,
            "rpo_replica_reachable",
            &labels(target),
            Some(0.0),
        );
        // The primary still lists it: it has not noticed (repl-timeout 60 s).
        assert_metric(
            &metrics,
            "rpo_redis_replica_listed_online",
            &labels(target),
            Some(1.0),
        );
        let ack = metric_value(
            &metrics,
            "rpo_redis_replica_last_ack_timestamp_seconds",
            &labels(target),
        )
        .unwrap();
        assert!(now_unix() - ack > 4.0, "{target}: last ack {ack}");
    }
    assert!(failures_counted(&metrics, &[(T, "timeout")]));
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert_eq!(verdict["verdict"], "NO-GO");
    // Frozen longer than stale_after (5 s): the cause first (the replica
    // does not answer), then the stale evidence that follows from it.
    assert!(
        first_reason(&verdict)
            .starts_with("erp-sessions: replica unreachable (timeout: no answer within"),
        "{verdict}"
    );
    let target = exporter.target_verdict(T).await;
    let target_reasons = reasons(&target);
    assert!(
        target_reasons.contains("evidence stale (last success"),
        "{target}"
    );
    assert!(
        target_reasons.contains("replica unreachable (timeout: no answer within"),
        "{target}"
    );
    assert!(target_reasons.contains("exceeds budget 2s"), "{target}");

    pair.sigcont_replica().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO after SIGCONT")
        .await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 2.0, "exposure after SIGCONT {exposure}");
    // The next once-a-second ack closes the offset lag too.
    exporter
        .wait_for_metrics(Duration::from_secs(5), "the offset lag to drain", |m| {
            metric_value(m, "rpo_redis_offset_lag_bytes", &labels(T)).unwrap() < 16.0 * 1024.0
        })
        .await;
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_is_link_down_no_go_and_exposure_keeps_growing() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let exporter = Exporter::start(&config_with(&redis_target(T, &pair, "3s", false, ""))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    // No writes at all: a broken link must still not read as zero.
    let mut pair = Arc::try_unwrap(pair).expect("one owner");
    pair.kill_replica();
    let seen = exporter
        .wait_for_target(
            T,
            Duration::from_secs(10),
            "NO-GO naming the refused replica",
            |t| reasons(t).contains("replica unreachable (connect"),
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
    // The primary's side of the story: the replica is gone from its list.
    assert_metric(
        &metrics,
        "rpo_redis_replica_listed_online",
        &labels(T),
        Some(0.0),
    );
    assert_metric(
        &metrics,
        "rpo_redis_connected_replicas",
        &labels(T),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_replica_reachable", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_source_reachable", &labels(T), Some(1.0));
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        first_reason(&verdict).starts_with("erp-sessions: replica unreachable (connect"),
        "{verdict}"
    );
    let t = exporter.target_verdict(T).await;
    assert!(
        reasons(&t).contains("lists no online replica at 127.0.0.1:"),
        "{t}"
    );

    // Back again: it resyncs, the exporter reconnects (bounded backoff).
    let _pair = restarted(pair, RedisPair::start_replica, Duration::from_secs(10)).await;
    exporter
        .wait_for_go("", Duration::from_secs(20), "GO after the replica returns")
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_breaks_the_link_and_never_reads_zero() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let exporter = Exporter::start(&config_with(&redis_target(T, &pair, "3s", false, ""))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    let mut pair = Arc::try_unwrap(pair).expect("one owner");
    pair.kill_primary();
    exporter
        .wait_for_target(
            T,
            Duration::from_secs(10),
            "the replica to report its link down",
            |t| {
                let reasons = reasons(t);
                reasons.contains("source unreachable")
                    && reasons.contains("replication unhealthy: master link down")
            },
        )
        .await;
    let e1 = exporter.exposure(T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = exporter.metrics().await;
    let e2 = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        e2 > e1 + 2.0 && e2 > 3.0,
        "exposure must grow: {e1} -> {e2}"
    );
    assert_metric(&metrics, "rpo_redis_master_link_up", &labels(T), Some(0.0));
    let down_since = metric_value(
        &metrics,
        "rpo_redis_master_link_down_since_timestamp_seconds",
        &labels(T),
    )
    .unwrap();
    assert!(now_unix() - down_since >= 2.0, "down since {down_since}");
    assert_metric(&metrics, "rpo_source_reachable", &labels(T), Some(0.0));
    // The replica still answers, so its evidence stays fresh.
    assert_metric(&metrics, "rpo_replica_reachable", &labels(T), Some(1.0));
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        first_reason(&verdict).starts_with("erp-sessions: source unreachable (connect"),
        "{verdict}"
    );

    // A new, empty primary: new replication id, full resync, GO again.
    let _pair = restarted(pair, RedisPair::start_primary, Duration::from_secs(15)).await;
    exporter
        .wait_for_go("", Duration::from_secs(25), "GO after the primary returns")
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_refused_and_hanging_targets_fail_only_themselves() {
    let pair = start_redis_pair(RedisOptions {
        password: Some("hunter2".to_string()),
        tls: false,
    })
    .await;
    let silent = rpo_lab::SilentServer::start().unwrap();
    let refused = rpo_lab::free_port();
    let dir = tempfile::tempdir().unwrap();
    let password_file = write_file(dir.path(), "redis-password", "hunter2\n");
    let (p, r) = (pair.primary_port(), pair.replica_port());
    let config = config_with(&format!(
        r#"
[[redis]]
name = "{T}"
group = "erp"
rpo_budget = "5s"
primary_url = "redis://127.0.0.1:{p}"
replica_url = "redis://127.0.0.1:{r}"
password_file = "{password_file}"
heartbeat = {{ interval = "500ms" }}

[[redis]]
name = "wrong-password"
group = "erp"
primary_url = "redis://:hunter3@127.0.0.1:{p}"
replica_url = "redis://:hunter3@127.0.0.1:{r}"

[[redis]]
name = "no-password"
group = "erp"
primary_url = "redis://127.0.0.1:{p}"
replica_url = "redis://127.0.0.1:{r}"

[[redis]]
name = "refused"
group = "erp"
primary_url = "redis://:hunter2@127.0.0.1:{refused}"
replica_url = "redis://:hunter2@127.0.0.1:{refused}"

[[redis]]
name = "silent"
group = "erp"
primary_url = "redis://:hunter2@127.0.0.1:{silent_port}"
replica_url = "redis://:hunter2@127.0.0.1:{silent_port}"
"#,
        password_file = password_file.display(),
        silent_port = silent.port()
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ScrapeWindow {
        slowest,
        polls: runs,
        metrics,
    } = exporter
        .scrape_while_polling(T, Duration::from_secs(5))
        .await;
    assert!(
        slowest < Duration::from_millis(100),
        "slowest /metrics {slowest:?}"
    );
    assert!(
        runs >= 8.0,
        "healthy target polled only {runs} times in 5 s"
    );
    assert_metric(&metrics, "rpo_target_ready", &labels(T), Some(1.0));
    assert!(
        !metrics.contains("hunter"),
        "a password leaked into /metrics"
    );
    for (target, reason) in [
        ("wrong-password", "auth"),
        ("no-password", "auth"),
        ("refused", "connect"),
        ("silent", "timeout"),
    ] {
        assert!(
            failures_counted(&metrics, &[(target, reason)]),
            "{target}: no {reason} failures"
        );
        assert_metric(&metrics, "rpo_target_ready", &labels(target), Some(0.0));
        let verdict = exporter.target_verdict(target).await;
        let why = reasons(&verdict);
        assert!(
            why.contains(&format!("replica unreachable ({reason}")),
            "{verdict}"
        );
        assert!(!why.contains("hunter"), "{verdict}");
    }
    let why = reasons(&exporter.target_verdict("wrong-password").await);
    assert!(why.contains("WRONGPASS"), "{why}");
    let why = reasons(&exporter.target_verdict("no-password").await);
    assert!(why.contains("NOAUTH"), "{why}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pair_is_go_with_its_ca_and_refused_without() {
    let pair = start_redis_pair(RedisOptions {
        password: None,
        tls: true,
    })
    .await;
    assert!(pair.primary_url().starts_with("rediss://localhost:"));
    let ca = pair.ca_file().unwrap();
    let config = config_with(&format!(
        "{}{}",
        redis_target(
            T,
            &pair,
            "5s",
            true,
            &format!("tls_ca_file = \"{}\"", ca.display())
        ),
        redis_target("public-roots-only", &pair, "5s", false, "")
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_target_ready(T, Duration::from_secs(10), "the target to pass")
        .await;
    let metrics = exporter.metrics().await;
    // "localhost" resolved and matched against the primary's replica list.
    assert_metric(
        &metrics,
        "rpo_redis_replica_listed_online",
        &labels(T),
        Some(1.0),
    );
    // The heartbeat, written over TLS, is read back over TLS (the first one
    // may land after GO was already proven by offsets).
    exporter
        .wait_for_metrics(
            Duration::from_secs(10),
            "the heartbeat read back over TLS",
            |m| metric_value(m, "rpo_heartbeat_timestamp_seconds", &labels(T)).is_some(),
        )
        .await;
    // The lab CA is not a public root: certificate verification stays on.
    let t = exporter.target_verdict("public-roots-only").await;
    assert_eq!(t["ready"], false, "{t}");
    assert!(reasons(&t).contains("(connect"), "{t}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_acl_is_enough_and_a_missing_grant_is_named() {
    let pair = start_redis_pair(RedisOptions {
        password: Some("admin-secret".to_string()),
        tls: false,
    })
    .await;
    // ACLs are not replicated: each node gets the users.
    for command in [
        "ACL SETUSER rpo-monitor on >monitor-secret +info +ping +get +set +time ~rpo:heartbeat:*",
        "ACL SETUSER rpo-nowrite on >monitor-secret +info +ping +get ~rpo:heartbeat:*",
        "ACL SETUSER rpo-noinfo on >monitor-secret +ping +get +set ~rpo:heartbeat:*",
    ] {
        let args: Vec<&str> = command.split(' ').collect();
        pair.primary_command(&args).unwrap();
        pair.replica_command(&args).unwrap();
    }
    let (p, r) = (pair.primary_port(), pair.replica_port());
    let target = |name: &str, user: &str| {
        format!(
            r#"
[[redis]]
name = "{name}"
group = "erp"
primary_url = "redis://{user}@127.0.0.1:{p}"
replica_url = "redis://{user}@127.0.0.1:{r}"
password_env = "RPO_TEST_REDIS_MONITOR_PASSWORD"
heartbeat = {{ interval = "500ms", key = "rpo:heartbeat" }}
"#
        )
    };
    std::env::set_var("RPO_TEST_REDIS_MONITOR_PASSWORD", "monitor-secret");
    let config = config_with(&format!(
        "{}{}{}",
        target(T, "rpo-monitor"),
        target("nowrite", "rpo-nowrite"),
        target("noinfo", "rpo-noinfo")
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_target_ready(T, Duration::from_secs(10), "the target to pass")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = exporter.metrics().await;
    assert!(metric_value(&metrics, "rpo_heartbeat_timestamp_seconds", &labels(T)).is_some());
    assert_metric(
        &metrics,
        "rpo_heartbeat_write_failures_total",
        &labels(T),
        Some(0.0),
    );
    // Without +set the heartbeat fails, the offsets still prove the point.
    assert!(
        metric_value(
            &metrics,
            "rpo_heartbeat_write_failures_total",
            &labels("nowrite")
        )
        .unwrap()
            > 0.0
    );
    assert_metric(&metrics, "rpo_target_ready", &labels("nowrite"), Some(1.0));
    // With +time both servers' clocks are read; without it, only the offset
    // series is missing (the evidence never needs a Redis server's clock).
    for side in ["source", "replica"] {
        assert!(
            metric_value(
                &metrics,
                "rpo_clock_offset_seconds",
                &[("target", T), ("side", side)]
            )
            .is_some(),
            "{side}: no clock offset with the documented ACL"
        );
        assert_eq!(
            metric_value(
                &metrics,
                "rpo_clock_offset_seconds",
                &[("target", "nowrite"), ("side", side)]
            ),
            None
        );
    }
    assert_metric(&metrics, "rpo_probe_success", &labels("nowrite"), Some(1.0));
    // Without +info nothing can be measured: an auth failure naming the
    // ACL rule to add.
    let t = exporter.target_verdict("noinfo").await;
    assert!(reasons(&t).contains("(auth: NOPERM"), "{t}");
    assert!(
        reasons(&t).contains(
            "needs the +info ACL rule: as an administrator run ACL SETUSER rpo-noinfo +info"
        ),
        "{t}"
    );
    assert!(reasons(&t).contains("docs/kinds/redis.md"), "{t}");
    assert_metric(&metrics, "rpo_probe_success", &labels("noinfo"), Some(0.0));
    assert!(
        failures_counted(&metrics, &[("noinfo", "auth")]),
        "{metrics}"
    );
    exporter.stop().await;

    // The message a person gets says exactly what to grant.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "config.toml", &config);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rpo-exporter"))
        .args(["check", "--config"])
        .arg(&path)
        .env("RPO_TEST_REDIS_MONITOR_PASSWORD", "monitor-secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ACL SETUSER rpo-nowrite +set ~rpo:heartbeat:*"),
        "{stderr}"
    );
    assert!(!stderr.contains("monitor-secret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_link_with_both_sides_answering_never_reads_zero() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let exporter = Exporter::start(&config_with(&redis_target(T, &pair, "3s", false, ""))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;

    // Both servers answer and hold the same offset (no writes), but the
    // replica now follows a primary that does not exist: its link is down.
    let dead = rpo_lab::free_port().to_string();
    pair.replica_command(&["REPLICAOF", "127.0.0.1", &dead])
        .unwrap();
    exporter
        .wait_for_target(T, Duration::from_secs(10), "the link-down reason", |t| {
            reasons(t).contains("replication unhealthy: master link down")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure > 3.0, "a broken link read as exposure {exposure}");
    assert_metric(&metrics, "rpo_source_reachable", &labels(T), Some(1.0));
    assert_metric(&metrics, "rpo_replica_reachable", &labels(T), Some(1.0));
    assert_metric(&metrics, "rpo_redis_master_link_up", &labels(T), Some(0.0));
    assert_metric(
        &metrics,
        "rpo_redis_replica_listed_online",
        &labels(T),
        Some(0.0),
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        first_reason(&verdict).starts_with("erp-sessions: replication unhealthy: master link down"),
        "{verdict}"
    );

    // Pointed back: resync, GO again.
    let port = pair.primary_port().to_string();
    pair.replica_command(&["REPLICAOF", "127.0.0.1", &port])
        .unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO after the link is restored")
        .await;
    exporter.stop().await;
}
