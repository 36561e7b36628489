//! Connections shared between targets, as the real binary: many targets
//! naming one lab pair hold a handful of descriptors and are each GO with
//! their own exposure; a frozen replica shows on every sharer; a target
//! with another password has connections (and failures) of its own; under
//! a low open-file limit the targets beyond the descriptor budget fail
//! their polls with a reason that says what to do, and `/metrics` answers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rpo_lab::redis::RedisOptions;
use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The exporter as a child (under `prlimit --nofile=N:N` when `nofile` is
/// given), killed on drop.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    client: ExporterClient,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn start(config_text: &str, nofile: Option<u32>, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = write_file(dir.path(), "shared.toml", config_text);
        let port = rpo_lab::free_port();
        let mut command = match nofile {
            Some(n) => {
                let mut c = tokio::process::Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(BIN);
                c
            }
            None => tokio::process::Command::new(BIN),
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // prlimit execs the exporter: the same pid.
        let pid = child.id().unwrap();
        let client = ExporterClient::new(format!("http://127.0.0.1:{port}"));
        client.wait_until_ready(Duration::from_secs(30)).await;
        Daemon {
            child,
            pid,
            client,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl std::ops::Deref for Daemon {
    type Target = ExporterClient;

    fn deref(&self) -> &ExporterClient {
        &self.client
    }
}

/// A second group, for targets whose failure must not touch `erp`'s verdict.
const OTHER_GROUP: &str = "\n[[group]]\nname = \"other\"\nrpo_budget = \"60s\"\n";

const SHARERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_targets_on_one_pair_share_connections_and_each_sees_a_frozen_replica() {
    let pair = start_redis_pair(RedisOptions {
        password: Some("hunter2".to_string()),
        tls: false,
    })
    .await;
    let (p, r) = (pair.primary_port(), pair.replica_port());
    let mut targets = String::new();
    for i in 0..SHARERS {
        // Every fourth with a heartbeat of its own key: the writers share
        // one connection of their own too.
        let heartbeat = if i % 4 == 0 {
            format!("heartbeat = {{ interval = \"500ms\", key = \"rpo:hb:{i}\" }}")
        } else {
            String::new()
        };
        targets.push_str(&target_block(
            "redis",
            &format!("sharer-{i:02}"),
            "2s",
            &format!(
                "primary_url = \"redis://:hunter2@127.0.0.1:{p}\"\nreplica_url = \"redis://:hunter2@127.0.0.1:{r}\"\n{heartbeat}"
            ),
        ));
    }
    // The same servers with another password: not shared, and failing alone.
    targets.push_str(&format!(
        r#"
[[redis]]
name = "wrong-password"
group = "other"
primary_url = "redis://:hunter3@127.0.0.1:{p}"
replica_url = "redis://:hunter3@127.0.0.1:{r}"
"#
    ));
    let config = format!("{}{OTHER_GROUP}", config_with(&targets));
    let writer = RedisWriter::start(&pair, Duration::from_millis(50)).await;
    let daemon = Daemon::start(&config, None, &[]).await;
    daemon
        .wait_for_go("?group=erp", Duration::from_secs(20), "every sharer GO")
        .await;

    let metrics = daemon
        .wait_for_failures(
            Duration::from_secs(10),
            "the other password refused",
            &[("wrong-password", "auth")],
        )
        .await;
    for i in 0..SHARERS {
        let target = format!("sharer-{i:02}");
        assert_metric(&metrics, "rpo_target_ready", &labels(&target), Some(1.0));
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(&target)).unwrap();
        assert!(exposure < 2.0, "{target}: exposure {exposure}");
    }
    // Polls to each side, and heartbeat writes to the primary: 3
    // connections for 40 targets (80 poll connections and 10 writers'
    // without sharing); the other password's attempts hold none.
    let connections = metric_value(&metrics, "rpo_server_connections", &[]).unwrap();
    assert_eq!(connections, 3.0, "rpo_server_connections");
    let fds = open_fds(daemon.pid);
    assert!(
        fds < 60,
        "{fds} descriptors open for {SHARERS} targets on one pair"
    );
    let why = reasons(&daemon.target_verdict("wrong-password").await);
    assert!(why.contains("WRONGPASS"), "{why}");
    assert!(
        !metrics.contains("hunter"),
        "a password leaked into /metrics"
    );
    let (status, _) = daemon.verdict("?group=erp").await;
    assert_eq!(status, 200, "the other password's failure is its own");

    // Frozen replica: every sharer sees it (each polls, each times out).
    pair.sigstop_replica().unwrap();
    let stopped_at = Instant::now();
    let metrics = daemon
        .wait_for_metrics(
            Duration::from_secs(20),
            "every sharer's exposure past 3 s",
            |m| {
                (0..SHARERS).all(|i| {
                    metric_value(
                        m,
                        "rpo_exposure_seconds",
                        &labels(&format!("sharer-{i:02}")),
                    )
                    .is_some_and(|e| e > 3.0)
                })
            },
        )
        .await;
    let elapsed = stopped_at.elapsed().as_secs_f64();
    for i in 0..SHARERS {
        let target = format!("sharer-{i:02}");
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(&target)).unwrap();
        // Never more than the time frozen plus a poll and a heartbeat.
        assert!(
            exposure <= elapsed + 1.5,
            "{target}: exposure {exposure} after {elapsed}s frozen"
        );
        assert_metric(
            &metrics,
            "rpo_replica_reachable",
            &labels(&target),
            Some(0.0),
        );
    }
    let (status, verdict) = daemon.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    assert_eq!(verdict["verdict"], "NO-GO");

    pair.sigcont_replica().unwrap();
    daemon
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(20),
            "every sharer GO after SIGCONT",
        )
        .await;
    let metrics = daemon.metrics().await;
    assert!(metric_value(&metrics, "rpo_server_connections", &[]).unwrap() <= 3.0);
    drop(writer);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_targets_on_one_pair_share_connections() {
    let pair = start_pair().await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(50)).await;
    let mut targets = String::new();
    for i in 0..20 {
        targets.push_str(&postgres_target(&format!("pg-{i:02}"), &pair, "2s", false));
    }
    // Two with heartbeats (tables of their own): one writers' connection.
    for i in 0..2 {
        targets.push_str(&target_block(
            "postgres",
            &format!("pg-hb-{i}"),
            "2s",
            &format!(
                "primary_url = \"{}\"\nreplica_url = \"{}\"\nheartbeat = {{ interval = \"500ms\", table = \"rpo_shared_hb_{i}\" }}",
                pair.primary_url(),
                pair.replica_url()
            ),
        ));
    }
    let daemon = Daemon::start(&config_with(&targets), None, &[]).await;
    daemon
        .wait_for_go("?group=erp", Duration::from_secs(20), "every target GO")
        .await;
    for i in 0..2 {
        daemon.wait_for_probe_success(&format!("pg-hb-{i}")).await;
    }
    let metrics = daemon
        .wait_for_metrics(Duration::from_secs(10), "both heartbeats written", |m| {
            (0..2).all(|i| {
                metric_value(
                    m,
                    "rpo_heartbeat_last_write_timestamp_seconds",
                    &labels(&format!("pg-hb-{i}")),
                )
                .is_some()
            })
        })
        .await;
    for target in (0..20)
        .map(|i| format!("pg-{i:02}"))
        .chain((0..2).map(|i| format!("pg-hb-{i}")))
    {
        assert_metric(&metrics, "rpo_target_ready", &labels(&target), Some(1.0));
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(&target)).unwrap();
        assert!(exposure < 2.0, "{target}: exposure {exposure}");
    }
    // Polls to each side and the writers' connection to the primary.
    assert_eq!(
        metric_value(&metrics, "rpo_server_connections", &[]),
        Some(3.0)
    );
    let fds = open_fds(daemon.pid);
    assert!(
        fds < 60,
        "{fds} descriptors open for 22 targets on one pair"
    );
    drop(writer);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_beyond_the_descriptor_budget_fail_with_the_reason_and_metrics_answer() {
    let pair = start_redis_pair(RedisOptions::default()).await;
    let (p, r) = (pair.primary_port(), pair.replica_port());
    // Sixteen db indexes: 32 distinct connections (16 per side).
    let mut targets = String::new();
    for db in 0..16 {
        targets.push_str(&target_block(
            "redis",
            &format!("db-{db:02}"),
            "60s",
            &format!(
                "primary_url = \"redis://127.0.0.1:{p}/{db}\"\nreplica_url = \"redis://127.0.0.1:{r}/{db}\""
            ),
        ));
    }
    // 110 open files, 4 HTTP connections: 110 - 4 - 16 (HTTP's reserve)
    // - 64 (margin) = 26 connections allowed.
    let daemon = Daemon::start(
        &config_with(&targets),
        Some(110),
        &["--web.max-connections", "4"],
    )
    .await;
    let metrics = daemon
        .wait_for_metrics(Duration::from_secs(20), "the budget used up", |m| {
            metric_value(m, "rpo_server_connections", &[]) == Some(26.0)
        })
        .await;
    assert_metric(&metrics, "rpo_server_max_connections", &[], Some(26.0));
    let (status, verdict) = daemon.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");
    assert_eq!(verdict["verdict"], "NO-GO");
    let (mut ready, mut gated) = (0, 0);
    for db in 0..16 {
        let target = format!("db-{db:02}");
        let verdict = daemon
            .wait_for_target(&target, Duration::from_secs(10), "polled", |t| {
                t["ready"] == true || reasons(t).contains("file descriptor")
            })
            .await;
        if verdict["ready"] == true {
            ready += 1;
            continue;
        }
        gated += 1;
        let why = reasons(&verdict);
        assert!(
            why.contains("unreachable (connect: no file descriptor left for another connection")
                && why.contains("raise the limit (LimitNOFILE="),
            "{target}: {why}"
        );
        assert_metric(&metrics, "rpo_target_ready", &labels(&target), Some(0.0));
    }
    // 26 connections: at least 10 targets hold both of theirs.
    assert!(ready >= 10 && gated >= 3, "{ready} ready, {gated} gated");
    // The HTTP side still answers, on fresh connections too.
    for _ in 0..8 {
        let (status, _) = ExporterClient::new(daemon.url("")).get("/metrics").await;
        assert_eq!(status, 200);
    }
    assert!(open_fds(daemon.pid) < 110);
    daemon.stop().await;
}
