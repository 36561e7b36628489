//! The monitoring chain for end-to-end tests: a real Prometheus (scraping
//! the exporter, evaluating the shipped rules), a real Alertmanager, and a
//! webhook receiver that records what Alertmanager sends. Each runs on a
//! free port in its own temp dir and is stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{free_port, retry_port_conflicts, LabError, LabResult};

/// A child process that is killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> LabResult<Server> {
        let file = std::fs::File::create(&log)
            .map_err(|e| LabError::io(format!("create {}", log.display()), e))?;
        let err = file
            .try_clone()
            .map_err(|e| LabError::io("clone log handle", e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: name.to_string(),
                source,
            })?;
        Ok(Server { name, child, log })
    }

    /// Waits until `GET path` on `port` answers 200, or fails with the log's tail.
    fn wait_ready(&mut self, port: u16, path: &str, timeout: Duration) -> LabResult<()> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if http_status(port, path) == Some(200) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError::Command {
                    command: self.name.to_string(),
                    stderr: format!("exited with {status}: {}", tail(&self.log)),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::Timeout {
            what: format!("{} to answer {path}", self.name),
            waited: timeout,
            log: self.log.clone(),
            log_tail: tail(&self.log),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The status code of a plain `GET` on 127.0.0.1, or None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut first = String::new();
    BufReader::new(stream).read_line(&mut first).ok()?;
    first.split_whitespace().nth(1)?.parse().ok()
}

fn binary(candidates: &[&str]) -> LabResult<String> {
    for c in candidates {
        if Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Ok(c.to_string());
        }
    }
    Err(LabError::NotInstalled(format!(
        "{} not found; run scripts/install-deps.sh",
        candidates.join(" or ")
    )))
}

/// A real Prometheus scraping `targets` as `job`, every second, with
/// `rule_files` loaded and alerts sent to `alertmanager` when given.
pub struct Prometheus {
    server: Server,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(
        job: &str,
        targets: &[String],
        rule_files: &[PathBuf],
        alertmanager: Option<u16>,
    ) -> LabResult<Prometheus> {
        Prometheus::start_with(job, targets, rule_files, alertmanager, "")
    }

    /// [`Prometheus::start`] with `scrape_options` (YAML lines indented for
    /// a scrape config: `scheme`, `metrics_path`, `tls_config`,
    /// `basic_auth`, ...) added to the job.
    pub fn start_with(
        job: &str,
        targets: &[String],
        rule_files: &[PathBuf],
        alertmanager: Option<u16>,
        scrape_options: &str,
    ) -> LabResult<Prometheus> {
        retry_port_conflicts(3, || {
            Prometheus::start_once(job, targets, rule_files, alertmanager, scrape_options)
        })
    }

    fn start_once(
        job: &str,
        targets: &[String],
        rule_files: &[PathBuf],
        alertmanager: Option<u16>,
        scrape_options: &str,
    ) -> LabResult<Prometheus> {
        let bin = binary(&["prometheus"])?;
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-prometheus-")
            .tempdir()
            .map_err(|e| LabError::io("create temp dir", e))?;
        let port = free_port();
        let quote = |items: Vec<String>| {
            items
                .iter()
                .map(|i| format!("'{i}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files: [{rules}]\n{alerting}\
             scrape_configs:\n  - job_name: '{job}'\n{scrape_options}    static_configs:\n      - targets: [{targets}]\n",
            rules = quote(rule_files.iter().map(|p| p.display().to_string()).collect()),
            alerting = match alertmanager {
                Some(am) => format!(
                    "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am}']\n"
                ),
                None => String::new(),
            },
            targets = quote(targets.to_vec()),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| LabError::io("write prometheus.yml", e))?;
        let mut server = Server::spawn(
            "prometheus",
            Command::new(bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-lifecycle"),
            dir.path().join("prometheus.log"),
        )?;
        server.wait_ready(port, "/-/ready", Duration::from_secs(30))?;
        Ok(Prometheus {
            server,
            port,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        tail(&self.server.log)
    }
}

/// A real Alertmanager that sends every notification (and resolution) to
/// `webhook_url` at once.
pub struct Alertmanager {
    _server: Server,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start(webhook_url: &str) -> LabResult<Alertmanager> {
        retry_port_conflicts(3, || Alertmanager::start_once(webhook_url))
    }

    fn start_once(webhook_url: &str) -> LabResult<Alertmanager> {
        let bin = binary(&["prometheus-alertmanager", "alertmanager"])?;
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-alertmanager-")
            .tempdir()
            .map_err(|e| LabError::io("create temp dir", e))?;
        let port = free_port();
        let config = format!(
            "route:\n  receiver: webhook\n  group_by: ['alertname', 'group', 'target']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: webhook\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| LabError::io("write alertmanager.yml", e))?;
        let mut server = Server::spawn(
            "alertmanager",
            Command::new(bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // Empty: no cluster port (it would bind 9094).
                .arg("--cluster.listen-address="),
            dir.path().join("alertmanager.log"),
        )?;
        server.wait_ready(port, "/-/ready", Duration::from_secs(30))?;
        Ok(Alertmanager {
            _server: server,
            port,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Records the JSON bodies Alertmanager posts to it.
pub struct WebhookReceiver {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebhookReceiver {
    pub fn start() -> std::io::Result<WebhookReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(body) = read_post(stream) {
                            log.lock().unwrap_or_else(|e| e.into_inner()).push(body);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(WebhookReceiver {
            port,
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every body received so far.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_post(stream: TcpStream) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    String::from_utf8(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus's and Alertmanager's own words for a taken port (Go's
    /// `bind: address already in use`, in the exit's stderr) count as a
    /// port conflict, and a start is tried again on it, at most 3 times;
    /// any other failure is not retried.
    #[test]
    fn a_taken_port_is_retried_and_nothing_else() {
        let taken = || {
            LabError::Command {
            command: "prometheus".to_string(),
            stderr: "exited with exit status: 1: level=error msg=\"Unable to start web listener\" err=\"listen tcp 127.0.0.1:33827: bind: address already in use\"".to_string(),
        }
        };
        assert!(taken().is_port_conflict());
        let mut tries = 0;
        let result: LabResult<()> = retry_port_conflicts(3, || {
            tries += 1;
            Err(taken())
        });
        assert!(result.unwrap_err().is_port_conflict());
        assert_eq!(tries, 3);
        let mut tries = 0;
        let result = retry_port_conflicts(3, || {
            tries += 1;
            if tries < 2 {
                Err(taken())
            } else {
                Ok(tries)
            }
        });
        assert_eq!(result.unwrap(), 2);
        let other = LabError::Command {
            command: "prometheus".to_string(),
            stderr: "exited with exit status: 1: bad config".to_string(),
        };
        assert!(!other.is_port_conflict());
        let mut tries = 0;
        let _ = retry_port_conflicts(3, || -> LabResult<()> {
            tries += 1;
            Err(LabError::Command {
                command: "prometheus".to_string(),
                stderr: "bad config".to_string(),
            })
        });
        assert_eq!(tries, 1);
    }
}
