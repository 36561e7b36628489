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
