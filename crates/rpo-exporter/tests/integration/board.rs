//! The HTML board at `/`, in a real headless Chromium: it shows the verdict
//! and the target rows, and turns NO-GO when a replica breaks. Screenshots of
//! both states are kept under the test's temp dir (target/tmp/board-*.png).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpo_lab::support::*;

fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The DOM after the page loaded, as Chromium rendered it.
pub(crate) async fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args(chromium_args(profile.path()))
            .arg("--dump-dom")
            .arg(url)
            .output(),
    )
    .await
    .expect("chromium answers within 60 s")
    .expect("chromium runs (scripts/install-deps.sh installs it)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) async fn screenshot(url: &str, name: &str) -> PathBuf {
    let profile = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&path);
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args(chromium_args(profile.path()))
            .arg(format!("--screenshot={}", path.display()))
            .arg("--window-size=1280,600")
            .arg(url)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        path.is_file(),
        "no screenshot written: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_shows_the_verdict_and_turns_no_go_when_a_replica_breaks() {
    let pair = start_pair().await;
    let exporter =
        Exporter::start(&config_with(&postgres_target("erp-db", &pair, "5s", true))).await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;
    let url = exporter.url("/");

    let dom = rendered_dom(&url).await;
    assert!(
        dom.contains(r#"<span id="verdict" class="go">GO</span>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"data-target="erp-db""#), "{dom}");
    assert!(
        dom.contains(r#"<tr class="ok" data-target="erp-db">"#),
        "{dom}"
    );
    screenshot(&url, "board-go.png").await;

    pair.stop_replica().unwrap();
    exporter
        .wait_for_verdict("", 503, Duration::from_secs(10), "NO-GO")
        .await;
    let dom = rendered_dom(&url).await;
    assert!(
        dom.contains(r#"<span id="verdict" class="nogo">NO-GO</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr class="bad" data-target="erp-db">"#),
        "{dom}"
    );
    assert!(dom.contains("replica unreachable"), "{dom}");
    let shot = screenshot(&url, "board-nogo.png").await;
    eprintln!("board screenshot: {}", shot.display());
    exporter.stop().await;
}
