//! The HTML board at `/`, in a real headless Chromium: it shows the verdict,
//! the exporter and the target rows with their 30-minute charts, in
//! accessible markup with no external asset; it turns NO-GO when a replica
//! breaks, by fetching the verdict JSON in place (never reloading the page).
//! Screenshots are kept under the test's temp dir (target/tmp/board-*.png).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
    dom_after(url, None).await
}

/// The DOM after the page loaded and, with `virtual_ms`, after its timers
/// ran for that long (Chromium's virtual time: the page's 5-second refresh
/// fires without the test waiting for it).
pub(crate) async fn dom_after(url: &str, virtual_ms: Option<u32>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args(chromium_args(profile.path()))
            .args(virtual_ms.map(|ms| format!("--virtual-time-budget={ms}")))
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

/// A stand-in origin for the board: `/` answers a saved page, every other
/// path is passed to the exporter. It counts the requests for `/`, so a
/// test can tell a page reload from the script's fetches.
struct SavedPage {
    addr: std::net::SocketAddr,
    page_loads: Arc<AtomicUsize>,
    json_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SavedPage {
    async fn serve(page: String, exporter: String) -> SavedPage {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let page_loads = Arc::new(AtomicUsize::new(0));
        let json_fetches = Arc::new(AtomicUsize::new(0));
        let (loads, fetches) = (page_loads.clone(), json_fetches.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, content_type, body) = if path == "/" {
                    loads.fetch_add(1, Ordering::SeqCst);
                    (200, "text/html; charset=utf-8".to_string(), page.clone())
                } else {
                    if path.starts_with("/failover-readiness") {
                        fetches.fetch_add(1, Ordering::SeqCst);
                    }
                    match http.get(format!("{exporter}{path}")).send().await {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("text/plain")
                                .to_string(),
                            r.text().await.unwrap_or_default(),
                        ),
                        Err(e) => (502, "text/plain".to_string(), e.to_string()),
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        SavedPage {
            addr,
            page_loads,
            json_fetches,
            task,
        }
    }
}

impl Drop for SavedPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_shows_the_verdict_and_turns_no_go_when_a_replica_breaks() {
    let pair = start_pair().await;
    let exporter = Exporter::start(
        &config_with(&postgres_target("erp-db", &pair, "5s", true)).replace(
            "instance = \"test\"",
            "instance = \"dr\"\nregion = \"eu-central-1\"",
        ),
    )
    .await;
    exporter
        .wait_for_go("", Duration::from_secs(10), "GO")
        .await;
    // The daemon records a point for the chart every 10 s: wait for two.
    wait_until(
        Duration::from_secs(40),
        "two points in the chart",
        || async {
            let (_, board) = exporter.get("/").await;
            let path = board
                .split("<path d=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .unwrap_or("")
                .to_string();
            (path.contains(" L"), path)
        },
    )
    .await;
    let url = exporter.url("/");

    let dom = rendered_dom(&url).await;
    assert!(
        dom.contains(r#"<span id="verdict" class="go" role="status" aria-live="polite" aria-atomic="true">GO</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<title>rpo-exporter dr (eu-central-1): GO</title>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"exporter dr in eu-central-1</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr class="ok" data-target="erp-db">"#),
        "{dom}"
    );
    // Accessible markup: viewport, landmarks, headed tables; no reload.
    for needle in [
        r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#,
        "<header>",
        r#"<main id="board""#,
        "<footer>",
        r#"<section aria-labelledby="group-erp">"#,
        r#"<th scope="col">last 30 min</th>"#,
        r#"<th scope="row">erp-db</th>"#,
    ] {
        assert!(dom.contains(needle), "{needle} missing: {dom}");
    }
    assert!(
        !dom.contains("http-equiv"),
        "the page must not reload itself: {dom}"
    );
    // Self-contained: nothing loaded from elsewhere.
    for external in [" src=\"http", "<link ", "@import", "url("] {
        assert!(!dom.contains(external), "{external}: {dom}");
    }
    // The chart: an inline SVG with a line, the dashed budget, a label.
    let row = dom
        .split(r#"data-target="erp-db""#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap()
        .to_string();
    assert!(
        row.contains(r#"<svg class="chart""#) && row.contains(r#"role="img""#),
        "{row}"
    );
    assert!(row.contains(r#"stroke-dasharray="3 2""#), "{row}");
    assert!(
        row.contains("aria-label=\"exposure against budget over the last 30 minutes: now "),
        "{row}"
    );
    let path = row
        .split("<path d=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .unwrap();
    assert!(
        path.starts_with('M') && path.contains(" L"),
        "at least two recorded points: {path}"
    );
    assert!(
        row.contains(r##"stroke="#1a7f37""##),
        "within budget: green: {row}"
    );
    screenshot(&url, "board-go.png").await;

    // The page as it was while GO, served from a stand-in origin that passes
    // the JSON through to the exporter.
    let (_, go_page) = exporter.get("/").await;
    pair.stop_replica().unwrap();
    exporter
        .wait_for_verdict("", 503, Duration::from_secs(10), "NO-GO")
        .await;
    let saved = SavedPage::serve(go_page, exporter.url("")).await;
    let dom = dom_after(&format!("http://{}/", saved.addr), Some(7_000)).await;
    // The script fetched the verdict and turned the page NO-GO in place.
    assert!(
        dom.contains(r#"<span id="verdict" class="nogo" role="status" aria-live="polite" aria-atomic="true">NO-GO</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr class="bad" data-target="erp-db">"#),
        "{dom}"
    );
    assert!(dom.contains("replica unreachable"), "{dom}");
    assert!(
        dom.contains(r#"<title>rpo-exporter dr (eu-central-1): NO-GO</title>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"<span id="refreshed">updated "#), "{dom}");
    assert_eq!(
        saved.page_loads.load(Ordering::SeqCst),
        1,
        "the page was loaded once, never reloaded"
    );
    assert!(saved.json_fetches.load(Ordering::SeqCst) >= 1);

    let dom = rendered_dom(&url).await;
    assert!(dom.contains(r#"<span id="verdict" class="nogo""#), "{dom}");
    assert!(
        dom.contains(r#"<tr class="bad" data-target="erp-db">"#),
        "{dom}"
    );
    let shot = screenshot(&url, "board-nogo.png").await;
    eprintln!("board screenshot: {}", shot.display());
    exporter.stop().await;
}
