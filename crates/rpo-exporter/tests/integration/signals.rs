//! SIGTERM ends the exporter within a second whatever is in flight, a
//! host-name lookup included (the resolver runs on a blocking thread the
//! runtime cannot cancel).
//!
//! The slow lookup is made deterministic in namespaces of the test's own:
//! a network namespace (only loopback) and a mount namespace whose
//! `/etc/resolv.conf` names a DNS server on loopback that receives queries
//! and never answers, with a 30 s resolver timeout. Nothing outside the
//! namespaces is touched.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// A DNS server that reads queries and never answers; it ends when the
/// process that started it (the exporter, which the shell exec'd) ends.
const SILENT_DNS: &str = r#"
import os, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
s.settimeout(0.2)
parent = os.getppid()
while os.getppid() == parent:
    try:
        s.recv(512)
    except socket.timeout:
        pass
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hung_dns_lookup_exits_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = write_file(
        dir.path(),
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
    );
    let dns = write_file(dir.path(), "silent_dns.py", SILENT_DNS);
    let config = write_file(
        dir.path(),
        "c.toml",
        &config_with(&target_block(
            "postgres",
            "slow-dns",
            "5s",
            "primary_url = \"postgres://m@slow-dns.rpo-test.example:5432/x\"\nreplica_url = \"postgres://m@slow-dns.rpo-test.example:5433/x\"",
        )),
    );
    let script = format!(
        "set -e; ip link set lo up; mount --bind {resolv} /etc/resolv.conf; \
         python3 {dns} & sleep 0.5; \
         exec {BIN} --config {config} --web.listen-address 127.0.0.1:9798 --log.level debug",
        resolv = resolv.display(),
        dns = dns.display(),
        config = config.display(),
    );
    let mut daemon = tokio::process::Command::new("unshare")
        .args(["--mount", "--net", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("unshare runs (util-linux; the tests run as root)");
    // unshare without --fork execs the shell, which execs the exporter.
    let pid = daemon.id().unwrap();
    let mut lines = BufReader::new(daemon.stderr.take().unwrap()).lines();
    let mut log = String::new();
    // Wait until it serves and its polls are stuck in the lookup (each poll
    // gives up after its 1 s timeout; the lookups go on). Under load the
    // first lookup can fail at once (the silent server not yet bound); the
    // change to a timeout is logged as a change of state.
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("poll partly failed")
                && line.contains("target=slow-dns")
                && line.contains("reason=timeout")
            {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no timed-out poll in 15 s:\n{log}"));
    assert!(log.contains("msg=serving"), "{log}");
    assert!(log.contains("timeout"), "the lookup hangs: {log}");

    let sent = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait())
        .await
        .expect("exits, not after the resolver's 30 s")
        .unwrap();
    let took = sent.elapsed();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    eprintln!("SIGTERM during a hung DNS lookup: exited after {took:?}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(1), "took {took:?}:\n{log}");
    assert!(log.contains("SIGTERM received; shutting down"), "{log}");
    assert!(log.contains("msg=stopped"), "{log}");
}
