//! Configuration reload on SIGHUP and `POST /-/reload`, on the real binary
//! against a real Postgres pair: a reload while the replica lags keeps the
//! lag visible (no reset of the recovery point or the exposure), a removed
//! target's series vanish, an added target appears, and a bad file is
//! refused with the running configuration kept.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn post_reload(base: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn reload_status(metrics: &str) -> (Option<f64>, Option<f64>) {
    (
        metric_value(metrics, "rpo_config_last_reload_successful", &[]),
        metric_value(
            metrics,
            "rpo_config_last_reload_success_timestamp_seconds",
            &[],
        ),
    )
}

fn write_config(dir: &Path, targets: &str) {
    // Written aside and renamed, as config management does: a reader never
    // sees half a file.
    let tmp = write_file(dir, "config.toml.tmp", &config_with(targets));
    std::fs::rename(tmp, dir.join("config.toml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_a_lagging_targets_history_refuses_a_bad_file_and_adds_and_removes() {
    let pair = start_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let kept = postgres_target("erp-db", &pair, "2s", false);
    let old = postgres_target("erp-db-old", &pair, "60s", false);
    let new = postgres_target("erp-db-new", &pair, "60s", false);
    write_config(dir.path(), &format!("{kept}{old}"));
    let port = rpo_lab::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = daemon.id().unwrap();
    let exporter = ExporterClient::new(&base);
    exporter.wait_until_ready(Duration::from_secs(15)).await;
    exporter
        .wait_for_target_ready("erp-db", Duration::from_secs(15), "erp-db GO")
        .await;
    let (ok, loaded_at) = reload_status(&exporter.metrics().await);
    assert_eq!(ok, Some(1.0), "the initial load counts as a successful one");
    let loaded_at = loaded_at.expect("a load timestamp");

    // The replica lags: replay paused under writes.
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(50)).await;
    pair.pause_replay().unwrap();
    let lagging = exporter
        .wait_for_target(
            "erp-db",
            Duration::from_secs(20),
            "erp-db over budget",
            |t| t["ready"] == false && reasons(t).contains("exceeds budget"),
        )
        .await;
    let recovery_point = lagging["recovery_point_unix"].as_f64().unwrap();
    let exposure = lagging["exposure_seconds"].as_f64().unwrap();
    let runs = exporter
        .metric("rpo_probe_runs_total", &labels("erp-db"))
        .await
        .unwrap();

    // SIGHUP with erp-db unchanged, erp-db-old removed, erp-db-new added.
    write_config(dir.path(), &format!("{kept}{new}"));
    signal(pid, "HUP");
    let metrics = exporter
        .wait_for_metrics(Duration::from_secs(10), "the reload", |m| {
            reload_status(m).1.is_some_and(|at| at > loaded_at)
                && metric_value(m, "rpo_probe_runs_total", &labels("erp-db-new"))
                    .is_some_and(|runs| runs > 0.0)
        })
        .await;
    assert_eq!(reload_status(&metrics).0, Some(1.0));
    assert!(
        !metrics.contains("target=\"erp-db-old\""),
        "a removed target's series vanish:\n{metrics}"
    );
    // erp-db kept its probe and its history: the same recovery point, an
    // exposure still growing, its run counter not reset.
    let after = exporter
        .wait_for_target(
            "erp-db",
            Duration::from_secs(10),
            "the exposure to grow on",
            |t| {
                t["exposure_seconds"]
                    .as_f64()
                    .is_some_and(|e| e > exposure + 1.0)
            },
        )
        .await;
    assert_eq!(after["ready"], false, "{after}");
    assert!(reasons(&after).contains("exceeds budget"), "{after}");
    // Kept, not re-proven and not reset. It may still move forward a
    // little while replay is paused, truthfully: the last replayed commit's
    // time is the primary's clock, converted with the upper end of the
    // measured offset interval, and each poll's clock sample can narrow
    // that interval (by at most half the first samples' round trip, which
    // a loaded machine stretches to tens of milliseconds). It never moves
    // back and never by anything like a poll interval.
    let after_point = after["recovery_point_unix"].as_f64().unwrap();
    assert!(
        after_point >= recovery_point - 1e-3 && after_point - recovery_point < 0.5,
        "the recovery point is kept: {recovery_point} before the reload; after: {after}"
    );
    assert!(
        exporter
            .metric("rpo_probe_runs_total", &labels("erp-db"))
            .await
            .unwrap()
            > runs,
        "the run counter continues"
    );
    let (_, verdict) = exporter.verdict("").await;
    let targets: Vec<&str> = verdict["groups"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["erp-db", "erp-db-new"], "{verdict}");
    let reloaded_at = reload_status(&metrics).1.unwrap();

    // A bad file (with a password in the broken line) is refused: 500 with
    // the key and position, the old configuration runs on.
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "{}\nprimary_url = \"postgres://u:Sekr1t-reload@h/db\n",
            config_with(&kept)
        ),
    )
    .unwrap();
    let (status, body) = post_reload(&base).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("failed to reload config: config file"),
        "{body}"
    );
    assert!(body.contains("not valid TOML at line"), "{body}");
    assert!(!body.contains("Sekr1t-reload"), "{body}");
    let metrics = exporter.metrics().await;
    assert_eq!(reload_status(&metrics), (Some(0.0), Some(reloaded_at)));
    assert!(metrics.contains("target=\"erp-db-new\""), "{metrics}");
    let still = exporter.target_verdict("erp-db").await;
    assert!(
        (still["recovery_point_unix"].as_f64().unwrap() - recovery_point).abs() < 1e-3,
        "{still}"
    );
    // The same over SIGHUP: refused, still running.
    signal(pid, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "SIGHUP must not end it"
    );
    assert_eq!(reload_status(&exporter.metrics().await).0, Some(0.0));

    // Fixed: POST /-/reload applies it.
    write_config(dir.path(), &kept);
    let (status, body) = post_reload(&base).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 kept, 0 added, 1 removed"), "{body}");
    let metrics = exporter.metrics().await;
    assert_eq!(reload_status(&metrics).0, Some(1.0));
    assert!(!metrics.contains("target=\"erp-db-new\""), "{metrics}");

    // The replica catches up: GO again, from the kept probe.
    pair.resume_replay().unwrap();
    drop(writer);
    exporter
        .wait_for_target_ready("erp-db", Duration::from_secs(20), "erp-db GO again")
        .await;

    signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(5), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .await
        .unwrap();
    assert!(
        log.contains("SIGHUP received; reloading the configuration"),
        "{log}"
    );
    assert!(log.contains("msg=\"configuration reloaded\""), "{log}");
    assert!(
        log.contains("configuration reload refused; the running configuration is kept"),
        "{log}"
    );
    assert!(!log.contains("Sekr1t-reload"), "{log}");
}
