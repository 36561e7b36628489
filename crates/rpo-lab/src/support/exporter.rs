//! The exporter under test and its HTTP endpoints.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpo_exporter::config::Config;
use serde_json::Value;

use super::exposition::{failures_counted, labels, metric_value};
use super::{parse_config, wait_until};

/// An exporter serving in-process, stopped on drop. Its HTTP side is the
/// [`ExporterClient`] it dereferences to.
pub struct Exporter {
    pub addr: SocketAddr,
    client: ExporterClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Exporter {
    /// Serves `config_text` (which must be valid) on a free port of 127.0.0.1.
    pub async fn start(config_text: &str) -> Exporter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Exporter::serve(Arc::new(parse_config(config_text)), listener)
    }

    /// Serves `config` on `listener`, as the daemon does (`rpo_exporter::run`).
    pub fn serve(config: Arc<Config>, listener: tokio::net::TcpListener) -> Exporter {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(rpo_exporter::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Exporter {
            addr,
            client: ExporterClient::new(format!("http://{addr}")),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts it down the way the daemon does on SIGTERM and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The exporter binary run as a child process (to give it an environment
/// of its own, e.g. a fake clock), serving on a free port of 127.0.0.1;
/// killed on drop. Its HTTP side is the [`ExporterClient`] it dereferences
/// to.
pub struct ExporterProcess {
    child: tokio::process::Child,
    client: ExporterClient,
    _dir: tempfile::TempDir,
}

impl ExporterProcess {
    /// Runs `binary` (the test crate's `CARGO_BIN_EXE_rpo-exporter`) on
    /// `config_text` with `env` added, and waits (20 s at most) until it is
    /// ready.
    pub async fn start(
        binary: &str,
        config_text: &str,
        env: Vec<(String, String)>,
    ) -> ExporterProcess {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = super::write_file(dir.path(), "exporter.toml", config_text);
        let address = format!("127.0.0.1:{}", crate::free_port());
        let child = exporter_command(binary, &config, &address, None)
            .envs(env)
            .spawn()
            .expect("the exporter binary starts");
        let process = ExporterProcess {
            child,
            client: ExporterClient::new(format!("http://{address}")),
            _dir: dir,
        };
        process.wait_until_ready(Duration::from_secs(20)).await;
        process
    }

    /// Ends it (SIGKILL to its own pid) and waits until it is gone.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Deref for ExporterProcess {
    type Target = ExporterClient;

    fn deref(&self) -> &ExporterClient {
        &self.client
    }
}

/// A command that runs the exporter `binary` on `config`, serving on
/// `address`, with stdin closed and killed on drop; the caller adds flags
/// and decides stdout and stderr. With `open_files`, under `prlimit
/// --nofile=N:N` (soft and hard limit), which execs the exporter: the
/// child's pid is the exporter's, for `/proc/PID/fd` and signals.
pub fn exporter_command(
    binary: &str,
    config: &std::path::Path,
    address: &str,
    open_files: Option<u32>,
) -> tokio::process::Command {
    let mut command = match open_files {
        Some(n) => {
            let mut prlimit = tokio::process::Command::new("prlimit");
            prlimit
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(binary);
            prlimit
        }
        None => tokio::process::Command::new(binary),
    };
    command
        .arg("--config")
        .arg(config)
        .args(["--web.listen-address", address])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// The in-process exporter is used through its HTTP endpoints, like the
/// real one; the same methods then serve a daemon run as a child process.
impl Deref for Exporter {
    type Target = ExporterClient;

    fn deref(&self) -> &ExporterClient {
        &self.client
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The HTTP endpoints of one exporter at `base` (`http://host:port`). The
/// plain methods panic when it does not answer; the waits poll every 200 ms
/// and panic with the last observation after their timeout.
#[derive(Clone)]
pub struct ExporterClient {
    base: String,
    http: reqwest::Client,
}

impl ExporterClient {
    pub fn new(base: impl Into<String>) -> ExporterClient {
        ExporterClient {
            base: base.into(),
            // A proxy from the environment must never stand between a test
            // and 127.0.0.1.
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Status and body of `path`, or why there was no answer.
    pub async fn try_get(&self, path: &str) -> reqwest::Result<(u16, String)> {
        let response = self.http.get(self.url(path)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).await.expect("exporter answers")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// One sample of `name` whose labels include every pair in `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// `/failover-readiness{query}`: the status and the verdict JSON.
    pub async fn verdict(&self, query: &str) -> (u16, Value) {
        let (status, body) = self.get(&format!("/failover-readiness{query}")).await;
        (
            status,
            serde_json::from_str(&body).expect("verdict is JSON"),
        )
    }

    /// The exposure of `target` now (`rpo_exposure_seconds`); panics if it
    /// has none.
    pub async fn exposure(&self, target: &str) -> f64 {
        self.metric("rpo_exposure_seconds", &labels(target))
            .await
            .unwrap_or_else(|| panic!("{target} has no exposure"))
    }

    /// The verdict JSON of one target.
    pub async fn target_verdict(&self, target: &str) -> Value {
        let (_, verdict) = self.verdict("").await;
        verdict["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["targets"].as_array().unwrap().iter())
            .find(|t| t["target"] == target)
            .cloned()
            .unwrap_or_else(|| panic!("no target {target} in {verdict}"))
    }

    /// Waits until `/failover-readiness{query}` answers `status`; its verdict.
    pub async fn wait_for_verdict(
        &self,
        query: &str,
        status: u16,
        within: Duration,
        what: &str,
    ) -> Value {
        wait_until(within, what, || async {
            let (got, verdict) = self.verdict(query).await;
            (got == status, verdict)
        })
        .await
    }

    /// Waits until `/failover-readiness{query}` says GO (200).
    pub async fn wait_for_go(&self, query: &str, within: Duration, what: &str) -> Value {
        self.wait_for_verdict(query, 200, within, what).await
    }

    /// Waits until the verdict of `target` satisfies `condition`; returns it.
    pub async fn wait_for_target(
        &self,
        target: &str,
        within: Duration,
        what: &str,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(within, what, || async {
            let verdict = self.target_verdict(target).await;
            (condition(&verdict), verdict)
        })
        .await
    }

    /// Waits until `target` is ready (passes on its own).
    pub async fn wait_for_target_ready(&self, target: &str, within: Duration, what: &str) {
        self.wait_for_target(target, within, what, |t| t["ready"] == true)
            .await;
    }

    /// Waits until a scrape of `/metrics` satisfies `condition`; returns it.
    pub async fn wait_for_metrics(
        &self,
        within: Duration,
        what: &str,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        wait_until(within, what, || async {
            let text = self.metrics().await;
            (condition(&text), text)
        })
        .await
    }

    /// Waits until each (target, reason) has counted a probe failure.
    pub async fn wait_for_failures(
        &self,
        within: Duration,
        what: &str,
        failures: &[(&str, &str)],
    ) -> String {
        self.wait_for_metrics(within, what, |text| failures_counted(text, failures))
            .await
    }

    /// Waits (20 s at most) until `target`'s last poll succeeded, then
    /// returns a fresh scrape of `/metrics`.
    pub async fn wait_for_probe_success(&self, target: &str) -> String {
        wait_until(
            Duration::from_secs(20),
            &format!("{target} to poll successfully"),
            || async {
                let text = self.metrics().await;
                let ok =
                    metric_value(&text, "rpo_probe_success", &[("target", target)]) == Some(1.0);
                (
                    ok,
                    format!(
                        "{}\n{}",
                        text.lines()
                            .filter(|l| l.contains(target))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        self.target_verdict(target).await
                    ),
                )
            },
        )
        .await;
        self.metrics().await
    }

    /// Waits until `/-/ready` answers 200; not answering at all counts as
    /// not yet (a daemon that is still starting).
    pub async fn wait_until_ready(&self, within: Duration) {
        wait_until(within, "/-/ready", || async {
            match self.try_get("/-/ready").await {
                Ok((status, _)) => (status == 200, status.to_string()),
                Err(e) => (false, e.to_string()),
            }
        })
        .await;
    }

    /// Scrapes `/metrics` every 100 ms for `window`, asserting each answer
    /// is 200, while `target` is being polled.
    pub async fn scrape_while_polling(&self, target: &str, window: Duration) -> ScrapeWindow {
        let runs = |text: &str| {
            metric_value(text, "rpo_probe_runs_total", &labels(target))
                .unwrap_or_else(|| panic!("{target} has no rpo_probe_runs_total"))
        };
        let runs_before = runs(&self.metrics().await);
        let started_window = Instant::now();
        let mut slowest = Duration::ZERO;
        while started_window.elapsed() < window {
            let started = Instant::now();
            let (status, _) = self.get("/metrics").await;
            assert_eq!(status, 200);
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let metrics = self.metrics().await;
        ScrapeWindow {
            slowest,
            polls: runs(&metrics) - runs_before,
            metrics,
        }
    }
}

/// What [`ExporterClient::scrape_while_polling`] saw.
pub struct ScrapeWindow {
    /// The slowest answer to `/metrics`.
    pub slowest: Duration,
    /// How many polls of the target finished meanwhile.
    pub polls: f64,
    /// A scrape taken at the end of the window.
    pub metrics: String,
}

/// A verdict's reasons (of the whole verdict or of one target), as text to
/// search.
pub fn reasons(verdict: &Value) -> String {
    verdict["reasons"].to_string()
}

/// The first reason of a verdict (of the whole verdict or of one target).
pub fn first_reason(verdict: &Value) -> &str {
    verdict["reasons"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no first reason in {verdict}"))
}

/// Prometheus's answer to an instant query `expr` (`/api/v1/query`).
pub async fn prometheus_query(prometheus_url: &str, expr: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{prometheus_url}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
