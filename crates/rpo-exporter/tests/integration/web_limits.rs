//! The HTTP server under abuse, as the real binary: 2,000 idle and slow
//! connections under a 1,024 open-file limit must not lock out a scraper or
//! failover automation; slow and idle clients are timed out; at the
//! connection cap the longest-idle connection makes room, and only a flood
//! of active clients is refused with a 503 that says why; memory returns
//! after the burst.
//!
//! Latencies are printed (run with `--nocapture`), never asserted tightly:
//! the bound is a generous 1 s so a loaded machine does not flake.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// A kB figure of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The test itself holds 2,000 sockets: raise its own soft limit to its
/// hard one (with `prlimit`, a plain command: no unsafe code here).
fn allow_many_sockets_here() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard = line.split_whitespace().nth(4).unwrap().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("prlimit runs (util-linux)");
    assert!(status.success());
    let hard: u64 = hard.parse().unwrap_or(u64::MAX);
    assert!(
        hard >= 2_200,
        "the test needs 2,200 open files for its own sockets; the hard limit is {hard}"
    );
}

/// The exporter as a child under a 1,024 open-file limit (the systemd
/// default), with `extra` flags.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    port: u16,
}

impl Daemon {
    async fn start(config_text: &str, dir: &std::path::Path, extra: &[&str]) -> Daemon {
        let config = write_file(dir, "web.toml", config_text);
        let port = rpo_lab::free_port();
        let child = exporter_command(BIN, &config, &format!("127.0.0.1:{port}"), Some(1024))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        ExporterClient::new(&base)
            .wait_until_ready(Duration::from_secs(15))
            .await;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        assert!(
            limits
                .lines()
                .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
            "{limits}"
        );
        Daemon {
            child,
            pid,
            base,
            port,
        }
    }

    async fn stop(mut self) -> String {
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0));
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        stderr
    }
}

/// One request on a connection of its own (the hardest case: the new
/// connection must find room); its status, body and how long it took.
async fn fresh_get(base: &str, path: &str) -> Result<(u16, String, Duration), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{path}: {e}"))?;
    Ok((status, body, started.elapsed()))
}

/// What the normal client saw.
#[derive(Default)]
struct Seen {
    requests: usize,
    slowest: Duration,
    total: Duration,
    problems: Vec<String>,
}

/// A scraper and a failover gate asking every 100 ms until `stop`.
async fn normal_client(base: String, stop: tokio::sync::watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::default();
    while !*stop.borrow() {
        for path in ["/metrics", "/failover-readiness"] {
            match fresh_get(&base, path).await {
                Ok((status, body, took)) => {
                    seen.requests += 1;
                    seen.slowest = seen.slowest.max(took);
                    seen.total += took;
                    let answered = match path {
                        "/metrics" => status == 200 && body.contains("rpo_exporter_build_info"),
                        _ => body.contains("\"verdict\""),
                    };
                    if !answered {
                        seen.problems.push(format!("{path}: HTTP {status}: {body}"));
                    }
                    if took >= Duration::from_secs(1) {
                        seen.problems.push(format!("{path} took {took:?}"));
                    }
                }
                Err(e) => seen.problems.push(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_and_slow_connections_do_not_lock_out_a_scraper() {
    allow_many_sockets_here();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config_with(""), dir.path(), &[]).await;
    // Warm up, then the baseline.
    for _ in 0..20 {
        fresh_get(&daemon.base, "/metrics").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, fds_before) = (status_kb(daemon.pid, "VmRSS"), open_fds(daemon.pid));
    let anon_before = status_kb(daemon.pid, "RssAnon");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = tokio::spawn(normal_client(daemon.base.clone(), stopped));

    // 1,000 idle connections and 1,000 that send a request head slowly.
    let mut idle = Vec::new();
    let mut slow = Vec::new();
    for i in 0..2_000 {
        let mut stream = TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .unwrap();
        if i % 2 == 0 {
            idle.push(stream);
        } else {
            let _ = stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            slow.push(stream);
        }
    }
    // Hold them for a while, dribbling a byte into each slow head.
    let mut max_fds = 0;
    for _ in 0..6 {
        for stream in &mut slow {
            let _ = stream.write_all(b"a").await;
        }
        max_fds = max_fds.max(open_fds(daemon.pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss_peak = status_kb(daemon.pid, "VmRSS");
    // Connections the server closed to make room read EOF (or a reset).
    let mut closed_by_server = 0;
    for stream in idle.iter_mut().chain(slow.iter_mut()) {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed_by_server += 1,
            _ => {}
        }
    }
    drop(idle);
    drop(slow);
    // Let the server see the closes; keep asking meanwhile.
    let settled = wait_until(
        Duration::from_secs(10),
        "the burst's sockets to close",
        || async {
            let fds = open_fds(daemon.pid);
            (fds <= fds_before + 2, fds)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    let seen = client.await.unwrap();
    let rss_after = status_kb(daemon.pid, "VmRSS");
    // The memory the burst used goes back to the system (anonymous memory:
    // `VmRSS` also counts program code first run during the burst).
    let anon_after = wait_until(
        Duration::from_secs(15),
        "the burst's memory to be returned",
        || async {
            let anon = status_kb(daemon.pid, "RssAnon");
            (anon < anon_before + 3 * 1024, anon)
        },
    )
    .await;

    eprintln!(
        "normal client: {} requests during the burst, slowest {:?}, mean {:?}; server fds {} before, {} at most, {} after; {} of 2000 attack sockets closed by the server; RSS {} kB before, {} kB at the peak, {} kB after; anonymous {} kB before, {} kB after",
        seen.requests,
        seen.slowest,
        seen.total / seen.requests.max(1) as u32,
        fds_before,
        max_fds,
        settled,
        closed_by_server,
        rss_before,
        rss_peak,
        rss_after,
        anon_before,
        anon_after,
    );
    assert!(seen.problems.is_empty(), "{:#?}", seen.problems);
    assert!(seen.requests >= 20, "{} requests", seen.requests);
    // The cap held: never near the 1,024 limit, and the idle made room.
    assert!(max_fds < 600, "the server held {max_fds} descriptors");
    assert!(closed_by_server >= 1_400, "{closed_by_server} closed");
    // Memory stays bounded by the cap (2,000 sockets held by the server
    // took 30 MB more before it).
    assert!(
        rss_peak < rss_before + 20 * 1024,
        "RSS {rss_before} kB before, {rss_peak} kB at the peak"
    );
    let log = daemon.stop().await;
    assert!(
        log.contains("HTTP connection limit reached") && log.contains("--web.max-connections"),
        "{log}"
    );
    assert!(!log.contains("accept failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_timed_out_and_active_ones_over_the_cap_get_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &config_with(""),
        dir.path(),
        &[
            "--web.max-connections",
            "2",
            "--web.header-read-timeout",
            "2s",
        ],
    )
    .await;

    // An idle connection and a slow request head are closed by the server
    // once the header-read timeout passes.
    let mut idle = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    for stream in [&mut idle, &mut slow] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection that sends no complete request");
        // An error (reset) or EOF, possibly after a 408: either way, closed.
        let _ = read;
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );

    // Two clients asking all the time hold both connections: a third is
    // refused with a 503 that says why, instead of closing an active one.
    let active = |mut stream: TcpStream| async move {
        for _ in 0..30 {
            stream
                .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let a = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    let b = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    let clients = tokio::spawn(async move { tokio::join!(active(a), active(b)) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{answer}"
    );
    assert!(
        answer.contains("too many connections: all 2 allowed (--web.max-connections) are serving active clients"),
        "{answer}"
    );
    clients.await.unwrap();

    // Idle connections at the cap make room for a new client.
    let _idle_a = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    let _idle_b = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, body, _) = fresh_get(&daemon.base, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    daemon.stop().await;
}
