//! The Redis kind against a real primary with a replica: steady state, the
//! idle-primary trap, a frozen (SIGSTOP) replica, killed replicas and
//! primaries, TLS, ACLs, and targets that refuse, hang or reject the
//! password next to a healthy one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpo_lab::redis::{RedisOptions, RedisPair};

use crate::support::*;

const T: &str = "erp-sessions";

fn labels(target: &str) -> [(&'static str, &str); 1] {
    [("target", target)]
}

/// Starts a lab pair off the async threads.
async fn start_redis_pair(options: RedisOptions) -> Arc<RedisPair> {
    Arc::new(
        tokio::task::spawn_blocking(move || RedisPair::start_with(options))
            .await
            .unwrap()
            .expect(
                "redis lab pair starts (run scripts/install-deps.sh if redis-server is missing)",
            ),
    )
}

/// One `[[redis]]` block for a lab pair; `extra` is appended verbatim.
fn redis_target(
    name: &str,
    pair: &RedisPair,
    budget: &str,
    heartbeat: bool,
    extra: &str,
) -> String {
    format!(
        r#"
[[redis]]
name = "{name}"
group = "erp"
rpo_budget = "{budget}"
primary_url = "{}"
replica_url = "{}"
{}
{extra}
"#,
        pair.primary_url(),
        pair.replica_url(),
        if heartbeat {
            "heartbeat = { interval = \"500ms\", key = \"rpo:heartbeat\" }"
        } else {
            ""
        }
    )
}

/// Writes a key on the primary every `every` until dropped.
struct RedisWriter {
    task: tokio::task::JoinHandle<()>,
}

impl RedisWriter {
    async fn start(pair: &RedisPair, every: Duration) -> RedisWriter {
        let client = pair.primary_client().unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let task = tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                n += 1;
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(format!("test:write:{}", n % 100))
                    .arg("x".repeat(200))
                    .query_async(&mut connection)
                    .await;
                tokio::time::sleep(every).await;
            }
        });
        RedisWriter { task }
    }
}

impl Drop for RedisWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn go(exporter: &Exporter, what: &str, within: Duration) {
    wait_until(within, what, || async {
        let (status, v) = exporter.verdict("").await;
        (status == 200, v.to_string())
    })
    .await;
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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
        assert_eq!(
            metric_value(&metrics, name, &labels(T)),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(
        metric_value(&metrics, "rpo_budget_seconds", &labels(T)),
        Some(5.0)
    );
    assert!(metrics.contains("kind=\"redis\""));
    // Acks come once a second: the lag is at most about a second of writes
    // (20 writes of ~250 bytes), never the whole stream.
    let lag = metric_value(&metrics, "rpo_redis_offset_lag_bytes", &labels(T)).unwrap();
    assert!(lag < 16.0 * 1024.0, "offset lag {lag}");
    assert_eq!(
        metric_value(&metrics, "rpo_backlog_bytes", &labels(T)),
        Some(lag)
    );
    assert!(metric_value(&metrics, "rpo_catchup_seconds", &labels(T)).unwrap() < 5.0);
    let evidence = metric_value(&metrics, "rpo_evidence_timestamp_seconds", &labels(T)).unwrap();
    assert!(now_unix() - evidence < 2.0, "evidence {evidence}");
    // The heartbeat canary is written and read back on the replica.
    let written = metric_value(
        &metrics,
        "rpo_heartbeat_last_write_timestamp_seconds",
        &labels(T),
    )
    .unwrap();
    let seen = metric_value(&metrics, "rpo_heartbeat_timestamp_seconds", &labels(T)).unwrap();
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
    go(&exporter, "GO before the freeze", Duration::from_secs(10)).await;

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
        assert_eq!(
            metric_value(&metrics, "rpo_backlog_bytes", &labels(target)),
            Some(lag)
        );
        assert!(metric_value(&metrics, "rpo_catchup_seconds", &labels(target)).unwrap() > 0.0);
        assert_eq!(
            metric_value(&metrics, "rpo_replica_reachable", &labels(target)),
            Some(0.0)
        );
        // The primary still lists it: it has not noticed (repl-timeout 60 s).
        assert_eq!(
            metric_value(&metrics, "rpo_redis_replica_listed_online", &labels(target)),
            Some(1.0)
        );
        let ack = metric_value(
            &metrics,
            "rpo_redis_replica_last_ack_timestamp_seconds",
            &labels(target),
        )
        .unwrap();
        assert!(now_unix() - ack > 4.0, "{target}: last ack {ack}");
    }
    assert!(
        metric_value(
            &metrics,
            "rpo_probe_failures_total",
            &[("target", T), ("reason", "timeout")]
        )
        .unwrap()
            > 0.0
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert_eq!(verdict["verdict"], "NO-GO");
    // Frozen longer than stale_after (5 s): stale first, then why.
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-sessions: evidence stale (last success"),
        "{verdict}"
    );
    let target = exporter.target_verdict(T).await;
    let target_reasons = target["reasons"].to_string();
    assert!(
        target_reasons.contains("replica unreachable (timeout: no answer within"),
        "{target}"
    );
    assert!(target_reasons.contains("exceeds budget 2s"), "{target}");

    pair.sigcont_replica().unwrap();
    go(&exporter, "GO after SIGCONT", Duration::from_secs(10)).await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure < 2.0, "exposure after SIGCONT {exposure}");
    // The next once-a-second ack closes the offset lag too.
    wait_until(
        Duration::from_secs(5),
        "the offset lag to drain",
        || async {
            let lag = exporter
                .metric("rpo_redis_offset_lag_bytes", &labels(T))
                .await
                .unwrap();
            (lag < 16.0 * 1024.0, format!("lag {lag}"))
        },
    )
    .await;
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_is_link_down_no_go_and_exposure_keeps_growing() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let exporter = Exporter::start(&config_with(&redis_target(T, &pair, "3s", false, ""))).await;
    go(&exporter, "GO", Duration::from_secs(10)).await;

    // No writes at all: a broken link must still not read as zero.
    let mut pair = Arc::try_unwrap(pair).expect("one owner");
    pair.kill_replica();
    let seen = wait_until(
        Duration::from_secs(10),
        "NO-GO naming the refused replica",
        || async {
            let t = exporter.target_verdict(T).await;
            let reasons = t["reasons"].to_string();
            (
                reasons.contains("replica unreachable (connect"),
                t.to_string(),
            )
        },
    )
    .await;
    let e1 = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = exporter.metrics().await;
    let e2 = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        e2 > e1 + 3.0 && e2 > 3.0,
        "exposure must keep growing: {e1} -> {e2} ({seen})"
    );
    // The primary's side of the story: the replica is gone from its list.
    assert_eq!(
        metric_value(&metrics, "rpo_redis_replica_listed_online", &labels(T)),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_redis_connected_replicas", &labels(T)),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_replication_healthy", &labels(T)),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_replica_reachable", &labels(T)),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_source_reachable", &labels(T)),
        Some(1.0)
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-sessions: replica unreachable (connect"),
        "{verdict}"
    );
    let t = exporter.target_verdict(T).await;
    assert!(
        t["reasons"]
            .to_string()
            .contains("lists no online replica at 127.0.0.1:"),
        "{t}"
    );

    // Back again: it resyncs, the exporter reconnects (bounded backoff).
    let _pair = tokio::task::spawn_blocking(move || {
        pair.start_replica().unwrap();
        pair.wait_for_link_up(Duration::from_secs(10)).unwrap();
        pair
    })
    .await
    .unwrap();
    go(
        &exporter,
        "GO after the replica returns",
        Duration::from_secs(20),
    )
    .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_breaks_the_link_and_never_reads_zero() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let exporter = Exporter::start(&config_with(&redis_target(T, &pair, "3s", false, ""))).await;
    go(&exporter, "GO", Duration::from_secs(10)).await;

    let mut pair = Arc::try_unwrap(pair).expect("one owner");
    pair.kill_primary();
    wait_until(
        Duration::from_secs(10),
        "the replica to report its link down",
        || async {
            let t = exporter.target_verdict(T).await;
            let reasons = t["reasons"].to_string();
            (
                reasons.contains("source unreachable")
                    && reasons.contains("replication unhealthy: master link down"),
                t.to_string(),
            )
        },
    )
    .await;
    let e1 = exporter
        .metric("rpo_exposure_seconds", &labels(T))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = exporter.metrics().await;
    let e2 = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        e2 > e1 + 2.0 && e2 > 3.0,
        "exposure must grow: {e1} -> {e2}"
    );
    assert_eq!(
        metric_value(&metrics, "rpo_redis_master_link_up", &labels(T)),
        Some(0.0)
    );
    let down_since = metric_value(
        &metrics,
        "rpo_redis_master_link_down_since_timestamp_seconds",
        &labels(T),
    )
    .unwrap();
    assert!(now_unix() - down_since >= 2.0, "down since {down_since}");
    assert_eq!(
        metric_value(&metrics, "rpo_source_reachable", &labels(T)),
        Some(0.0)
    );
    // The replica still answers, so its evidence stays fresh.
    assert_eq!(
        metric_value(&metrics, "rpo_replica_reachable", &labels(T)),
        Some(1.0)
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-sessions: source unreachable (connect"),
        "{verdict}"
    );

    // A new, empty primary: new replication id, full resync, GO again.
    let _pair = tokio::task::spawn_blocking(move || {
        pair.start_primary().unwrap();
        pair.wait_for_link_up(Duration::from_secs(15)).unwrap();
        pair
    })
    .await
    .unwrap();
    go(
        &exporter,
        "GO after the primary returns",
        Duration::from_secs(25),
    )
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
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "hunter2\n").unwrap();
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
    let runs_before = exporter
        .metric("rpo_probe_runs_total", &labels(T))
        .await
        .unwrap();
    let window = Instant::now();
    let mut slowest = Duration::ZERO;
    while window.elapsed() < Duration::from_secs(5) {
        let started = Instant::now();
        let (status, _) = exporter.get("/metrics").await;
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(100),
        "slowest /metrics {slowest:?}"
    );
    let metrics = exporter.metrics().await;
    let runs = metric_value(&metrics, "rpo_probe_runs_total", &labels(T)).unwrap() - runs_before;
    assert!(
        runs >= 8.0,
        "healthy target polled only {runs} times in 5 s"
    );
    assert_eq!(
        metric_value(&metrics, "rpo_target_ready", &labels(T)),
        Some(1.0)
    );
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
        let failures = metric_value(
            &metrics,
            "rpo_probe_failures_total",
            &[("target", target), ("reason", reason)],
        )
        .unwrap();
        assert!(failures > 0.0, "{target}: no {reason} failures");
        assert_eq!(
            metric_value(&metrics, "rpo_target_ready", &labels(target)),
            Some(0.0)
        );
        let verdict = exporter.target_verdict(target).await;
        let reasons = verdict["reasons"].to_string();
        assert!(
            reasons.contains(&format!("replica unreachable ({reason}")),
            "{verdict}"
        );
        assert!(!reasons.contains("hunter"), "{verdict}");
    }
    let reasons = exporter.target_verdict("wrong-password").await["reasons"].to_string();
    assert!(reasons.contains("WRONGPASS"), "{reasons}");
    let reasons = exporter.target_verdict("no-password").await["reasons"].to_string();
    assert!(reasons.contains("NOAUTH"), "{reasons}");
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
    go_target(&exporter, T).await;
    let metrics = exporter.metrics().await;
    // "localhost" resolved and matched against the primary's replica list.
    assert_eq!(
        metric_value(&metrics, "rpo_redis_replica_listed_online", &labels(T)),
        Some(1.0)
    );
    // The heartbeat, written over TLS, is read back over TLS (the first one
    // may land after GO was already proven by offsets).
    wait_until(
        Duration::from_secs(10),
        "the heartbeat read back over TLS",
        || async {
            let m = exporter
                .metric("rpo_heartbeat_timestamp_seconds", &labels(T))
                .await;
            (m.is_some(), format!("{m:?}"))
        },
    )
    .await;
    // The lab CA is not a public root: certificate verification stays on.
    let t = exporter.target_verdict("public-roots-only").await;
    assert_eq!(t["ready"], false, "{t}");
    assert!(t["reasons"].to_string().contains("(connect"), "{t}");
    exporter.stop().await;
}

async fn go_target(exporter: &Exporter, target: &str) {
    wait_until(Duration::from_secs(10), "the target to pass", || async {
        let t = exporter.target_verdict(target).await;
        (t["ready"] == true, t.to_string())
    })
    .await;
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
        "ACL SETUSER rpo-monitor on >monitor-secret +info +ping +get +set ~rpo:heartbeat:*",
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
    go_target(&exporter, T).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = exporter.metrics().await;
    assert!(metric_value(&metrics, "rpo_heartbeat_timestamp_seconds", &labels(T)).is_some());
    assert_eq!(
        metric_value(&metrics, "rpo_heartbeat_write_failures_total", &labels(T)),
        Some(0.0)
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
    assert_eq!(
        metric_value(&metrics, "rpo_target_ready", &labels("nowrite")),
        Some(1.0)
    );
    // Without +info nothing can be measured: a named auth failure.
    let t = exporter.target_verdict("noinfo").await;
    assert!(t["reasons"].to_string().contains("(auth: NOPERM"), "{t}");
    assert!(
        t["reasons"].to_string().contains("docs/kinds/redis.md"),
        "{t}"
    );
    exporter.stop().await;

    // The message a person gets says exactly what to grant.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
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
    go(&exporter, "GO", Duration::from_secs(10)).await;

    // Both servers answer and hold the same offset (no writes), but the
    // replica now follows a primary that does not exist: its link is down.
    let dead = rpo_lab::free_port().to_string();
    pair.replica_command(&["REPLICAOF", "127.0.0.1", &dead])
        .unwrap();
    wait_until(Duration::from_secs(10), "the link-down reason", || async {
        let t = exporter.target_verdict(T).await;
        let reasons = t["reasons"].to_string();
        (
            reasons.contains("replication unhealthy: master link down"),
            t.to_string(),
        )
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(exposure > 3.0, "a broken link read as exposure {exposure}");
    assert_eq!(
        metric_value(&metrics, "rpo_source_reachable", &labels(T)),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_replica_reachable", &labels(T)),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_redis_master_link_up", &labels(T)),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&metrics, "rpo_redis_replica_listed_online", &labels(T)),
        Some(0.0)
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("erp-sessions: replication unhealthy: master link down"),
        "{verdict}"
    );

    // Pointed back: resync, GO again.
    let port = pair.primary_port().to_string();
    pair.replica_command(&["REPLICAOF", "127.0.0.1", &port])
        .unwrap();
    go(
        &exporter,
        "GO after the link is restored",
        Duration::from_secs(15),
    )
    .await;
    exporter.stop().await;
}
