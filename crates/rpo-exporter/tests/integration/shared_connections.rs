//! Connections shared between targets, as the real binary: many targets
//! naming one lab pair hold a handful of descriptors and are each GO with
//! their own exposure; a frozen replica shows on every sharer; a target
//! with another password has connections (and failures) of its own; under
//! a low open-file limit the targets beyond the descriptor budget fail
//! their polls with a reason that says what to do, and `/metrics` answers;
//! a sharer's permanent query error (Redis `WRONGTYPE`/`NOPERM`, PostgreSQL
//! permission denied or a missing column) fails only that sharer while the
//! shared connections stay up, counted on the servers, and a connection
//! really lost (`CLIENT KILL`, `pg_terminate_backend`) is made again.

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
        let child = exporter_command(BIN, &config, &format!("127.0.0.1:{port}"), nofile)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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
    // Still shared after the freeze: connections made while it lasted (a
    // timeout drops the shared one; connects queue behind the frozen
    // server) are closed once their last user lets go, so the count comes
    // back to one per side and purpose, not one per sharer.
    daemon
        .wait_for_metrics(
            Duration::from_secs(10),
            "at most 3 server connections after the freeze",
            |m| metric_value(m, "rpo_server_connections", &[]).is_some_and(|n| n <= 3.0),
        )
        .await;
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

/// The ids of `user`'s connections on one Redis server (`CLIENT LIST`).
fn redis_client_ids(command: impl Fn(&[&str]) -> redis::Value, user: &str) -> Vec<u64> {
    let list = match command(&["CLIENT", "LIST"]) {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("CLIENT LIST answered {other:?}"),
    };
    let field = |line: &str, name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(name).map(str::to_string))
    };
    let mut ids: Vec<u64> = list
        .lines()
        .filter(|line| field(line, "user=").as_deref() == Some(user))
        .filter_map(|line| field(line, "id=")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// `total_connections_received` of a Redis server's `INFO stats`.
fn redis_connections_received(command: impl Fn(&[&str]) -> redis::Value) -> u64 {
    let text = match command(&["INFO", "stats"]) {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO stats answered {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_connections_received in {text}"))
}

/// A metric of `target` (0 when absent).
fn counted(metrics: &str, family: &str, target: &str, reason: Option<&str>) -> f64 {
    let mut labels = vec![("target", target)];
    labels.extend(reason.map(|r| ("reason", r)));
    metric_value(metrics, family, &labels).unwrap_or(0.0)
}

/// How long the tests below watch the sharers poll (every 500 ms).
const WATCH: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_sharers_error_replies_keep_the_shared_connections_and_a_killed_one_is_made_again()
{
    let pair = start_redis_pair(RedisOptions::default()).await;
    let primary = |args: &[&str]| pair.primary_command(args).unwrap();
    let replica = |args: &[&str]| pair.replica_command(args).unwrap();
    // ACLs are not replicated: each node gets the user. It may write only
    // the healthy target's heartbeat keys and read the wrong-type ones.
    let acl = "ACL SETUSER mon on >mon-pw +info +ping +get +set +time ~rpo:ok:* %R~rpo:wrongtype:*";
    let acl: Vec<&str> = acl.split(' ').collect();
    primary(&acl);
    replica(&acl);
    // An administrator's list where the heartbeat of `wrongtype` would go
    // (instance "test"): read on the replica, GET answers WRONGTYPE.
    primary(&["RPUSH", "rpo:wrongtype:test", "not-a-heartbeat"]);
    wait_until(
        Duration::from_secs(10),
        "the list on the replica",
        || async {
            let kind = replica(&["TYPE", "rpo:wrongtype:test"]);
            (
                matches!(&kind, redis::Value::SimpleString(s) if s == "list"),
                format!("{kind:?}"),
            )
        },
    )
    .await;

    // The same URLs, so one connection per server and purpose for all
    // three; the two failing targets in a group of their own.
    let (p, r) = (pair.primary_port(), pair.replica_port());
    let target = |name: &str, group: &str, prefix: &str| {
        format!(
            r#"
[[redis]]
name = "{name}"
group = "{group}"
primary_url = "redis://mon:mon-pw@127.0.0.1:{p}"
replica_url = "redis://mon:mon-pw@127.0.0.1:{r}"
heartbeat = {{ interval = "500ms", key = "{prefix}" }}
"#
        )
    };
    let config = format!(
        "{}{OTHER_GROUP}",
        config_with(&format!(
            "{}{}{}",
            target("healthy", "erp", "rpo:ok"),
            target("wrongtype", "other", "rpo:wrongtype"),
            target("denied", "other", "rpo:denied")
        ))
    );
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(10),
            "the healthy sharer GO",
        )
        .await;
    exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "both failing sharers failing",
            &[("wrongtype", "query"), ("denied", "auth")],
        )
        .await;
    let wrongtype = reasons(&exporter.target_verdict("wrongtype").await);
    assert!(wrongtype.contains("WRONGTYPE"), "{wrongtype}");
    let denied = reasons(&exporter.target_verdict("denied").await);
    assert!(denied.contains("NOPERM"), "{denied}");

    // Polls to each server and the heartbeat writers' to the primary.
    let before = (
        redis_client_ids(primary, "mon"),
        redis_client_ids(replica, "mon"),
    );
    assert_eq!((before.0.len(), before.1.len()), (2, 1), "{before:?}");
    let metrics_before = exporter.metrics().await;
    let received_before = redis_connections_received(replica);
    tokio::time::sleep(WATCH).await;
    let received_after = redis_connections_received(replica);
    let metrics = exporter.metrics().await;
    let after = (
        redis_client_ids(primary, "mon"),
        redis_client_ids(replica, "mon"),
    );

    // The failing sharers kept failing all along, each poll and write ...
    let grew = |family: &str, target: &str, reason: Option<&str>| {
        counted(&metrics, family, target, reason) - counted(&metrics_before, family, target, reason)
    };
    let polls = grew("rpo_probe_failures_total", "wrongtype", Some("query"));
    assert!(
        polls >= 4.0,
        "{polls} failed polls of wrongtype in {WATCH:?}"
    );
    let polls = grew("rpo_probe_failures_total", "denied", Some("auth"));
    assert!(polls >= 4.0, "{polls} failed polls of denied in {WATCH:?}");
    let writes = grew("rpo_heartbeat_write_failures_total", "wrongtype", None);
    assert!(
        writes >= 4.0,
        "{writes} failed heartbeat writes in {WATCH:?}"
    );
    // ... on the very connections they share with the healthy one.
    assert_eq!(after, before, "connections made again while sharers failed");
    // This reading's own connection, and no other.
    assert_eq!(
        received_after - received_before,
        1,
        "connections received by the replica"
    );
    assert_metric(&metrics, "rpo_target_ready", &labels("healthy"), Some(1.0));
    assert_metric(
        &metrics,
        "rpo_target_ready",
        &labels("wrongtype"),
        Some(0.0),
    );
    assert_metric(&metrics, "rpo_target_ready", &labels("denied"), Some(0.0));
    let (status, verdict) = exporter.verdict("?group=other").await;
    assert_eq!(status, 503, "{verdict}");

    // A connection really lost is made again, for every sharer.
    replica(&["CLIENT", "KILL", "USER", "mon"]);
    made_again_once_then_kept(&exporter, &before.1, || redis_client_ids(replica, "mon")).await;
    exporter.stop().await;
}

/// `pid` and `backend_start` of `user`'s sessions on one server.
fn pg_sessions(sql: impl Fn(&str) -> String, user: &str) -> Vec<String> {
    sql(&format!(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE usename = '{user}' ORDER BY pid"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_sharers_query_errors_keep_the_shared_connections_and_a_terminated_one_is_made_again(
) {
    let pair = start_pair().await;
    let primary = |sql: &str| pair.primary_sql(sql).unwrap();
    let replica = |sql: &str| pair.replica_sql(sql).unwrap();
    let table = |name: &str, columns: &str| {
        format!("CREATE TABLE {name} (instance text PRIMARY KEY, {columns});")
    };
    // One heartbeat table `mon` may use, one it may not touch, one without
    // the `ts` column (a query error the server answers on both sides).
    primary(&format!(
        "CREATE ROLE mon LOGIN; GRANT pg_monitor TO mon; {} {} {} \
         GRANT SELECT, INSERT, UPDATE ON rpo_ok_hb, rpo_nots_hb TO mon;",
        table(
            "rpo_ok_hb",
            "ts double precision NOT NULL, written_at timestamptz NOT NULL DEFAULT now()"
        ),
        table(
            "rpo_denied_hb",
            "ts double precision NOT NULL, written_at timestamptz NOT NULL DEFAULT now()"
        ),
        table(
            "rpo_nots_hb",
            "written_at timestamptz NOT NULL DEFAULT now()"
        ),
    ));
    wait_until(
        Duration::from_secs(10),
        "the tables on the replica",
        || async {
            let seen = replica("SELECT count(*) FROM pg_class WHERE relname LIKE 'rpo_%_hb'");
            (seen == "3", seen)
        },
    )
    .await;

    let url = |port: u16| format!("postgres://mon@127.0.0.1:{port}/postgres");
    let target = |name: &str, group: &str, table: &str| {
        format!(
            r#"
[[postgres]]
name = "{name}"
group = "{group}"
primary_url = "{}"
replica_url = "{}"
heartbeat = {{ interval = "500ms", table = "{table}" }}
"#,
            url(pair.primary_port()),
            url(pair.replica_port())
        )
    };
    let config = format!(
        "{}{OTHER_GROUP}",
        config_with(&format!(
            "{}{}{}",
            target("healthy", "erp", "rpo_ok_hb"),
            target("denied", "other", "rpo_denied_hb"),
            target("nots", "other", "rpo_nots_hb")
        ))
    );
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(15),
            "the healthy sharer GO",
        )
        .await;
    exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "both failing sharers failing",
            &[("denied", "auth"), ("nots", "query")],
        )
        .await;
    let denied = reasons(&exporter.target_verdict("denied").await);
    assert!(
        denied.contains("permission denied for table rpo_denied_hb (42501)"),
        "{denied}"
    );
    let nots = reasons(&exporter.target_verdict("nots").await);
    assert!(nots.contains("42703"), "{nots}");

    // Polls to each server and the heartbeat writers' to the primary.
    let before = (pg_sessions(primary, "mon"), pg_sessions(replica, "mon"));
    assert_eq!((before.0.len(), before.1.len()), (2, 1), "{before:?}");
    let metrics_before = exporter.metrics().await;
    tokio::time::sleep(WATCH).await;
    let metrics = exporter.metrics().await;
    let after = (pg_sessions(primary, "mon"), pg_sessions(replica, "mon"));

    let grew = |family: &str, target: &str, reason: Option<&str>| {
        counted(&metrics, family, target, reason) - counted(&metrics_before, family, target, reason)
    };
    let polls = grew("rpo_probe_failures_total", "denied", Some("auth"));
    assert!(polls >= 4.0, "{polls} failed polls of denied in {WATCH:?}");
    let polls = grew("rpo_probe_failures_total", "nots", Some("query"));
    assert!(polls >= 4.0, "{polls} failed polls of nots in {WATCH:?}");
    // A query error on a heartbeat write (not a refusal): the writers'
    // shared connection is kept too.
    let writes = grew("rpo_heartbeat_write_failures_total", "nots", None);
    assert!(
        writes >= 4.0,
        "{writes} failed heartbeat writes in {WATCH:?}"
    );
    assert_eq!(after, before, "sessions started again while sharers failed");
    assert_metric(&metrics, "rpo_target_ready", &labels("healthy"), Some(1.0));
    assert_metric(&metrics, "rpo_target_ready", &labels("denied"), Some(0.0));
    assert_metric(&metrics, "rpo_target_ready", &labels("nots"), Some(0.0));
    let (status, verdict) = exporter.verdict("?group=other").await;
    assert_eq!(status, 503, "{verdict}");

    // A session really ended is started again, for every sharer.
    replica("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'mon'");
    made_again_once_then_kept(&exporter, &before.1, || pg_sessions(replica, "mon")).await;
    exporter.stop().await;
}

/// After the server ended the shared connection (`ended`: the sessions
/// before), one new one is made for every sharer (the target `healthy` is
/// ready again) and then kept: `sessions()` lists the exporter user's
/// sessions on the server.
async fn made_again_once_then_kept<S: PartialEq + std::fmt::Debug>(
    exporter: &Exporter,
    ended: &[S],
    sessions: impl Fn() -> Vec<S>,
) {
    wait_until(
        Duration::from_secs(10),
        "a new connection on the replica",
        || async {
            let now = sessions();
            (now.len() == 1 && now != ended, format!("{now:?}"))
        },
    )
    .await;
    exporter
        .wait_for_target(
            "healthy",
            Duration::from_secs(10),
            "the healthy sharer ready again",
            |t| t["ready"] == true,
        )
        .await;
    let again = sessions();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sessions(), again, "made once, then kept");
}
