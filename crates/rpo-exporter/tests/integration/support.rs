//! What the tests share: an exporter running in-process, HTTP helpers, a
//! metric reader and a polling wait.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpo_exporter::config::Config;

/// An exporter serving on a free port, stopped on drop.
pub struct Exporter {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Exporter {
    pub async fn start(config_text: &str) -> Exporter {
        let config =
            Config::from_toml(config_text, Path::new("test.toml")).expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(rpo_exporter::run(Arc::new(config), listener, async move {
            let _ = stopped.await;
        }));
        Exporter {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path))
            .await
            .expect("exporter answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// One sample of `name` whose labels include every pair in `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    pub async fn verdict(&self, query: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(&format!("/failover-readiness{query}")).await;
        (
            status,
            serde_json::from_str(&body).expect("verdict is JSON"),
        )
    }

    /// The verdict JSON of one target.
    pub async fn target_verdict(&self, target: &str) -> serde_json::Value {
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

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Reads one sample from a text exposition.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            if !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                return None;
            }
            match value {
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                v => v.parse().ok(),
            }
        })
}

/// Polls `condition` every 200 ms until it holds; panics with `what` and the
/// last observation after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let started = Instant::now();
    loop {
        let (done, observation) = condition().await;
        if done {
            return observation;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {observation}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A writer that inserts a row on the primary every `every` until dropped.
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub async fn start(primary_url: &str, every: Duration) -> Writer {
        let (client, connection) = tokio_postgres::connect(primary_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS test_writes (id bigserial PRIMARY KEY, payload text, at timestamptz DEFAULT now())")
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let _ = client
                    .execute(
                        "INSERT INTO test_writes (payload) VALUES (repeat('x', 200))",
                        &[],
                    )
                    .await;
                tokio::time::sleep(every).await;
            }
        });
        Writer { task }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A config with short intervals around the given `[[postgres]]` blocks.
pub fn config_with(targets: &str) -> String {
    format!(
        r#"
[exporter]
instance = "test"

[defaults]
poll_interval = "500ms"
timeout = "1s"
stale_after = "5s"

[[group]]
name = "erp"
rpo_budget = "60s"
{targets}"#
    )
}

/// One `[[postgres]]` block for a lab pair.
pub fn postgres_target(
    name: &str,
    pair: &rpo_lab::PostgresPair,
    budget: &str,
    heartbeat: bool,
) -> String {
    format!(
        r#"
[[postgres]]
name = "{name}"
group = "erp"
rpo_budget = "{budget}"
primary_url = "{}"
replica_url = "{}"
{}
"#,
        pair.primary_url(),
        pair.replica_url(),
        if heartbeat {
            "heartbeat = { interval = \"500ms\", table = \"rpo_heartbeat\" }"
        } else {
            ""
        }
    )
}

/// Starts a lab pair off the async threads.
pub async fn start_pair() -> Arc<rpo_lab::PostgresPair> {
    Arc::new(
        tokio::task::spawn_blocking(rpo_lab::PostgresPair::start)
            .await
            .unwrap()
            .expect("lab pair starts (run scripts/install-deps.sh if PostgreSQL is missing)"),
    )
}
