//! The binary itself: exit codes 0/1/2, the bad-config corpus (and that it
//! contacts nothing), `check --output json`, `check --from`, `--wait`, and
//! SIGTERM.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the binary runs")
}

/// A listener that counts every connection made to it.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, count)
}

#[tokio::test]
async fn bad_configs_exit_2_name_the_key_and_contact_nothing() {
    let (port, contacts) = counting_listener();
    let dir = tempfile::tempdir().unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad");
    let mut checked = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("PORT", &port.to_string());
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its '# expect:' line", path.display()))
            .to_string();
        let config = write_file(dir.path(), "bad.toml", &text);
        let config = config.to_str().unwrap();
        for args in [
            vec!["validate", "--config", config],
            vec!["check", "--config", config],
            vec!["--config", config, "--web.listen-address", "127.0.0.1:0"],
        ] {
            let output = run(&args).await;
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{args:?} on {}: {stderr}",
                path.display()
            );
            assert!(
                stderr.contains(&expect),
                "{}: expected `{expect}` in: {stderr}",
                path.display()
            );
            assert!(
                stderr.contains("bad.toml"),
                "the message names the file: {stderr}"
            );
            assert!(!stderr.contains("hunter2"), "a password leaked: {stderr}");
        }
        checked += 1;
    }
    assert!(checked >= 15, "the corpus has {checked} files");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        contacts.load(Ordering::SeqCst),
        0,
        "a bad config must not contact any target"
    );

    // A good config validates, still without contacting anything.
    let good = write_file(
        dir.path(),
        "good.toml",
        &config_with(&format!(
            "[[postgres]]\nname = \"erp-db\"\ngroup = \"erp\"\nprimary_url = \"postgres://m@127.0.0.1:{port}/x\"\nreplica_url = \"postgres://m@127.0.0.1:{port}/x\"\n"
        )),
    );
    let output = run(&["validate", "--config", good.to_str().unwrap()]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid (1 groups, 1 targets)"));
    assert_eq!(contacts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        vec!["check"],
        vec!["check", "--config", "/nonexistent/rpo.toml"],
        vec!["check", "--config", "x.toml", "--mode", "sideways"],
        vec!["check", "--config", "x.toml", "--wait", "soon"],
        vec!["--no-such-flag"],
    ] {
        let output = run(&args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exit_codes_json_shape_and_wait() {
    let pair = start_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "c.toml",
        &config_with(&postgres_target("erp-db", &pair, "2s", true)),
    );
    let config = config.to_str().unwrap();

    // GO: exit 0; the JSON has the documented shape.
    let output = run(&["check", "--config", config, "--output", "json"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["verdict"], "GO");
    assert_eq!(json["ready"], true);
    assert_eq!(json["mode"], "planned");
    let target = &json["groups"][0]["targets"][0];
    assert_eq!(json["groups"][0]["group"], "erp");
    assert_eq!(target["target"], "erp-db");
    assert_eq!(target["kind"], "postgres");
    assert_eq!(target["budget_seconds"], 2.0);
    assert!(target["exposure_seconds"].as_f64().unwrap() < 2.0);
    assert!(target["recovery_point"].as_str().unwrap().ends_with('Z'));
    assert!(target["recovery_point_unix"].as_f64().unwrap() > 1.6e9);
    assert!(target["evidence_age_seconds"].is_number());
    assert_eq!(target["reasons"], serde_json::json!([]));

    // Unknown group: exit 2.
    let output = run(&["check", "--config", config, "--group", "crm"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown group `crm`"));

    // NO-GO: replay paused while writing; exit 1, the table says why.
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    pair.pause_replay().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let output = run(&["check", "--config", config]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("VERDICT: NO-GO"), "{stdout}");
    assert!(stdout.contains("erp-db: exposure"), "{stdout}");
    assert!(stdout.contains("exceeds budget 2s"), "{stdout}");

    // --wait: resumes after 2 s in the background; check waits for GO.
    let resumer = {
        let pair = pair.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_secs(2));
            pair.resume_replay().unwrap();
        })
    };
    let output = run(&["check", "--config", config, "--wait", "30s"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    resumer.await.unwrap();
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_check_from_and_stops_on_sigterm() {
    let pair = start_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "c.toml",
        &config_with(&postgres_target("erp-db", &pair, "5s", false)),
    );
    let port = rpo_lab::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut daemon = tokio::process::Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--web.listen-address",
            &address,
            "--log.format",
            "json",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://{address}");
    let served = ExporterClient::new(&base);
    served.wait_until_ready(Duration::from_secs(10)).await;
    assert_eq!(served.get("/-/healthy").await.0, 200);
    let (_, board) = served.get("/").await;
    assert!(board.contains("data-target=\"erp-db\""), "{board}");

    let output = run(&["check", "--from", &base, "--group", "erp"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("GROUP erp: GO"));
    // An unknown group is the caller's mistake whichever source is asked.
    let output = run(&["check", "--from", &base, "--group", "nope"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown group `nope`"));
    let (readiness, _) = served.verdict("?group=erp&mode=unplanned").await;
    assert_eq!(readiness, 200);
    let (bad_mode, _) = served.get("/failover-readiness?mode=sideways").await;
    assert_eq!(bad_mode, 400);

    // SIGTERM: exits 0, promptly.
    let pid = daemon.id().unwrap() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), daemon.wait())
        .await
        .expect("exits within 5 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("\"SIGTERM received; shutting down\""),
        "{stderr}"
    );

    // Nothing listens any more: --from says NO-GO (exit 1) and why.
    let output = run(&["check", "--from", &base]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("cannot be reached"));
}

/// The codes of a JSON `reason_details` list.
fn reason_codes(details: &serde_json::Value) -> Vec<String> {
    details
        .as_array()
        .unwrap_or_else(|| panic!("reason_details is a list: {details}"))
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect()
}

/// Each level's `reason_details` says the same words as its `reasons`.
fn assert_details_match_reasons(level: &serde_json::Value) {
    let messages: Vec<&serde_json::Value> = level["reason_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["message"])
        .collect();
    let reasons: Vec<&serde_json::Value> = level["reasons"].as_array().unwrap().iter().collect();
    assert_eq!(messages, reasons, "{level}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_coded_replica_unreachable_in_every_output() {
    let pair = start_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_with(&postgres_target("erp-db", &pair, "5s", false));
    let config = write_file(dir.path(), "c.toml", &text);
    let config = config.to_str().unwrap();
    let exporter = Exporter::start(&text).await;
    wait_until(Duration::from_secs(10), "GO", || async {
        let (status, v) = exporter.verdict("").await;
        (status == 200, v.to_string())
    })
    .await;
    let (_, go) = exporter.verdict("").await;
    assert_eq!(go["schema_version"], 1, "{go}");
    assert_eq!(go["reason_details"], serde_json::json!([]), "{go}");
    assert_eq!(
        go["groups"][0]["targets"][0]["reason_details"],
        serde_json::json!([])
    );

    pair.stop_replica().unwrap();

    // The daemon: /failover-readiness carries the code at every level.
    let seen = wait_until(Duration::from_secs(10), "replica_unreachable", || async {
        let (status, v) = exporter.verdict("?group=erp").await;
        let target = &v["groups"][0]["targets"][0];
        let coded = status == 503
            && target["reason_details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|r| r["code"] == "replica_unreachable"));
        (coded, v.to_string())
    })
    .await;
    let verdict: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(verdict["schema_version"], 1);
    let group = &verdict["groups"][0];
    let target = &group["targets"][0];
    // Fresh evidence from before the stop: the unreachable replica is the
    // first reason, so it is also the group's.
    assert_eq!(
        reason_codes(&target["reason_details"])[0],
        "replica_unreachable",
        "{target}"
    );
    assert!(
        target["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("replica unreachable (connect: "),
        "the words are unchanged: {target}"
    );
    let first = &group["reason_details"][0];
    assert_eq!(first["code"], "replica_unreachable", "{group}");
    assert_eq!(first["group"], "erp");
    assert_eq!(first["target"], "erp-db");
    assert_eq!(verdict["reason_details"], group["reason_details"]);
    for level in [&verdict, group, target] {
        assert_details_match_reasons(level);
    }
    // The board shows the same words and carries the code.
    let (_, board) = exporter.get("/").await;
    assert!(
        board.contains(r#"<span class="reason" data-code="replica_unreachable" title="replica_unreachable">replica unreachable (connect: "#),
        "{board}"
    );

    // `check --config`: its own poll round, the code in its JSON.
    let output = run(&["check", "--config", config, "--output", "json"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["schema_version"], 1, "{json}");
    let group = &json["groups"][0];
    let target = &group["targets"][0];
    // No evidence yet in a fresh run comes first; the replica is named too.
    assert!(
        reason_codes(&target["reason_details"]).contains(&"replica_unreachable".to_string()),
        "{target}"
    );
    let first = &group["reason_details"][0];
    assert_eq!(first["target"], "erp-db", "{group}");
    assert_eq!(
        first["code"], target["reason_details"][0]["code"],
        "the group's reason is its target's first: {group}"
    );
    for level in [&json, group, target] {
        assert_details_match_reasons(level);
    }

    // `check --from`: the daemon's codes, passed through.
    let base = exporter.url("");
    let output = run(&["check", "--from", &base, "--output", "json"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["reason_details"][0]["code"], "replica_unreachable",
        "{json}"
    );
    assert_eq!(
        reason_codes(&json["groups"][0]["targets"][0]["reason_details"])[0],
        "replica_unreachable"
    );
    exporter.stop().await;

    // And with nothing listening, `check --from` says why, coded.
    let output = run(&["check", "--from", &base, "--output", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{json}");
    assert_eq!(
        json["reason_details"],
        serde_json::json!([{
            "code": "exporter_unavailable",
            "message": json["reasons"][0],
        }])
    );
}

#[tokio::test]
async fn shipped_example_configs_validate() {
    let mut checked = 0;
    for path in crate::deploy::shipped_configs() {
        // Every *_env the examples name is set to a well-formed value; the
        // variable's name says what kind of value it holds.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut command = tokio::process::Command::new(BIN);
        command.args(["validate", "--config", path.to_str().unwrap()]);
        for var in env_vars_named(&text) {
            command.env(&var, fake_secret_for(&var));
        }
        let output = command.output().await.unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1);
}

/// A config whose one target is down for real: nothing listens on its ports.
fn down_target_config(dir: &Path, poll_interval: &str) -> std::path::PathBuf {
    let port = rpo_lab::free_port();
    let text = config_with(&format!(
        "[[postgres]]\nname = \"erp-db\"\ngroup = \"erp\"\npoll_interval = \"{poll_interval}\"\nprimary_url = \"postgres://m@127.0.0.1:{port}/x\"\nreplica_url = \"postgres://m@127.0.0.1:{port}/x\"\n"
    ));
    write_file(dir, "down.toml", &text)
}

/// The README's exit-code table, row by row: 0 GO, 1 NO-GO, 2 for every
/// usage, config or input mistake, whichever source `check` asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_readme_table_for_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let down = down_target_config(dir.path(), "500ms");
    let down = down.to_str().unwrap();
    let text = std::fs::read_to_string(down).unwrap();
    let exporter = Exporter::start(&text).await;
    let base = exporter.url("");

    let readme = std::fs::read_to_string(rpo_lab::repo_root().join("README.md")).unwrap();
    for row in [
        "| 0 | GO",
        "| 1 | NO-GO",
        "| 2 | a usage, configuration or input mistake",
    ] {
        assert!(
            readme.contains(row),
            "the README's exit-code table lacks `{row}`"
        );
    }

    let two: Vec<Vec<&str>> = vec![
        vec!["check", "--config", down, "--group", "crm"],
        vec!["check", "--from", &base, "--group", "crm"],
        vec!["check", "--from", "127.0.0.1:9798"],
        vec!["check", "--prometheus", "prometheus:9090"],
        vec!["drill", "--config", down, "--group", "crm"],
        vec!["validate", "--config", "/nonexistent/rpo.toml"],
        vec!["validate", "--config", down, "--log.level", "warnn"],
        vec![
            "check",
            "--config",
            down,
            "--web.listen-address",
            "localhost",
        ],
        vec!["--config", down, "--web.listen-address", "9798"],
    ];
    for args in &two {
        let output = run(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.is_empty(), "{args:?} says why");
    }
    // A bad flag is named, with what it takes.
    let output = run(&["validate", "--config", down, "--log.level", "warnn"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--log.level `warnn`") && stderr.contains("error, warn, info, debug"),
        "{stderr}"
    );
    let output = run(&["--config", down, "--web.listen-address", "9798"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--web.listen-address `9798`"), "{stderr}");

    // NO-GO: exit 1 from every source that has a verdict to give.
    for args in [
        vec!["check", "--config", down],
        vec!["check", "--from", &base],
    ] {
        let output = run(&args).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Valid: exit 0.
    let output = run(&[
        "validate",
        "--config",
        down,
        "--log.level",
        "info,rpo_exporter=debug",
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exporter.stop().await;
}

/// `:PORT` listens on every interface, as the Prometheus exporters do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colon_port_listen_address_serves_on_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    let config = down_target_config(dir.path(), "1s");
    let port = rpo_lab::free_port();
    let mut daemon = tokio::process::Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--web.listen-address",
            &format!(":{port}"),
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let served = ExporterClient::new(format!("http://127.0.0.1:{port}"));
    served.wait_until_ready(Duration::from_secs(10)).await;
    assert_eq!(served.get("/-/healthy").await.0, 200);
    let pid = daemon.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), daemon.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `validate --no-secrets` checks a config whose secrets are absent (CI, a
/// pull request), and still refuses every other mistake.
#[tokio::test]
async fn validate_no_secrets_checks_all_but_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let good = config_with(
        "[[postgres]]\nname = \"erp-db\"\ngroup = \"erp\"\nprimary_url_env = \"RPO_TEST_SURELY_UNSET_PRIMARY\"\nreplica_url_file = \"/nonexistent/replica-url\"\n\n[[redis]]\nname = \"erp-cache\"\ngroup = \"erp\"\nprimary_url_env = \"RPO_TEST_SURELY_UNSET_REDIS\"\nreplica_url = \"redis://127.0.0.1:1\"\n",
    );
    let config = write_file(dir.path(), "ci.toml", &good);
    let config = config.to_str().unwrap();
    // Without the flag the absent secrets are named: exit 2.
    let output = run(&["validate", "--config", config]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("RPO_TEST_SURELY_UNSET_PRIMARY"));
    // With it: valid, and it says what it did not read.
    let output = run(&["validate", "--no-secrets", "--config", config]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("valid (1 groups, 2 targets; secrets given as *_env or *_file not read)"),
        "{stdout}"
    );
    // Everything else is still checked: an unknown key, a bad inline URL.
    for (bad, named) in [
        (
            good.replace(
                "group = \"erp\"\nprimary_url_env",
                "group = \"erp\"\nrpo_budgt = \"5s\"\nprimary_url_env",
            ),
            "rpo_budgt",
        ),
        (
            good.replace("redis://127.0.0.1:1", "http://127.0.0.1:1"),
            "replica_url",
        ),
        (
            good.replace(
                "replica_url_file = \"/nonexistent/replica-url\"",
                "replica_url_file = \"\"",
            ),
            "replica_url_file",
        ),
    ] {
        let config = write_file(dir.path(), "bad.toml", &bad);
        let output = run(&[
            "validate",
            "--no-secrets",
            "--config",
            config.to_str().unwrap(),
        ])
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{named}: {stderr}");
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
}

/// A target that stays down is logged when it starts failing, not on every
/// poll; the log is on stderr, never mixed into the table on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_target_is_logged_once_per_change_not_per_poll() {
    let dir = tempfile::tempdir().unwrap();
    let config = down_target_config(dir.path(), "100ms");
    let port = rpo_lab::free_port();
    let mut daemon = tokio::process::Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let served = ExporterClient::new(format!("http://127.0.0.1:{port}"));
    served.wait_until_ready(Duration::from_secs(10)).await;
    // About 30 polls of a target refusing both sides.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = served
        .metric("rpo_probe_runs_total", &[("target", "erp-db")])
        .await
        .unwrap_or(0.0);
    let pid = daemon.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let _ = daemon.wait().await;
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("level=warn") && l.contains("target=erp-db"))
        .collect();
    assert!(polls >= 10.0, "{polls} polls in 3 s: {stderr}");
    // One line per failing side when it starts failing; none per poll.
    assert!(
        !warnings.is_empty() && warnings.len() <= 2,
        "{} warnings over {polls} polls:\n{stderr}",
        warnings.len()
    );
    assert!(
        warnings[0].contains("Connection refused") || warnings[0].contains("connect"),
        "{stderr}"
    );

    // `check`: the table alone on stdout, the log on stderr.
    let output = run(&["check", "--config", config.to_str().unwrap()]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("VERDICT: NO-GO"), "{stdout}");
    assert!(!stdout.contains("level="), "a log line on stdout: {stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("level=warn"));
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 120,
            "{} chars: {line}",
            line.chars().count()
        );
        assert!(
            !line.contains("ns") || !line.contains("us "),
            "nanoseconds: {line}"
        );
    }
    assert!(
        stdout.contains("  Reasons:\n    - erp-db: replica unreachable ("),
        "{stdout}"
    );
}
