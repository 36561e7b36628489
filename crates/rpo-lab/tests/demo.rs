//! The demo itself (`rpo-lab --once`): every kind in one group, GO.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_every_kind_and_says_go() {
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rpo-lab"))
            .args(["--once", "--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the demo finishes within 4 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("VERDICT: GO"), "{stdout}");
    for kind in [
        "postgres",
        "mysql",
        "redis",
        "redis_stream",
        "rabbitmq",
        "sql_queue",
        "opensearch",
        "rds",
        "aurora_global",
        "s3",
        "sqs",
    ] {
        assert!(
            stdout.contains(&format!(" {kind} ")),
            "the demo lacks {kind}: {stdout}"
        );
    }
    assert!(stdout.contains("/failover-readiness?group=erp"), "{stdout}");
}

/// `rpo-lab --drill`: both pairs switched over while `rpo-exporter drill`
/// runs; the summary is printed and the report written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_drill_and_prints_the_report_summary() {
    let report = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rpo-lab"))
            .args(["--drill", "--listen", "127.0.0.1:0", "--report"])
            .arg(report.path())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the drill finishes within 5 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Drill report summary:\n\nPASS: "),
        "{stdout}"
    );
    for target in [
        "erp-db (postgres): promoted at ",
        "erp-sessions (redis): promoted at ",
    ] {
        assert!(stdout.contains(target), "{target}: {stdout}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.path().join("drill-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["result"], "pass", "{json}");
    for target in json["targets"].as_array().unwrap() {
        assert!(
            target["measured_loss_seconds"].as_f64().unwrap() < 2.0,
            "{target}"
        );
    }
    assert!(report.path().join("drill-report.html").is_file());
}
