//! Lab harness: an isolated RabbitMQ node with the management plugin, for
//! integration tests and the demo.
//!
//! Each [`RabbitNode`] owns a temporary directory (`rpo-rabbit-*`) holding
//! its config file, enabled-plugins file, Mnesia and log directories and its
//! Erlang cookie (HOME points there), and runs on four ports picked with
//! [`free_port`](super::free_port): AMQP, management HTTP, distribution and
//! its **own epmd** (`ERL_EPMD_PORT`). The machine's own RabbitMQ (5672)
//! and its epmd (4369) are never touched: nothing here talks to them, reads
//! their cookie or stops them. `RABBITMQ_CONF_ENV_FILE` points at an empty
//! file so `/etc/rabbitmq/rabbitmq-env.conf` does not apply.
//!
//! When this process is root the node runs as the `rabbitmq` OS user
//! (`setpriv`, which execs, so the child is the Erlang VM itself); epmd runs
//! as a direct child too. Both are ended by pid: dropping the node kills
//! them and removes the directory (kept with `RPO_LAB_KEEP=1`). A watchdog
//! (a shell polling this process's pid) ends them too if this process dies without dropping the
//! node, e.g. for the node shared by a test binary ([`RabbitNode::shared`]).
//!
//! The broker publishes queue statistics every second
//! (`collect_statistics_interval = 1000`; the broker default of 5 s would
//! make every count up to ~10 s old). Starting takes 12–15 s.
//!
//! Everything is synchronous; the small HTTP client here speaks just enough
//! HTTP/1.1 to drive the management API.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::{free_port, lab_parent_dir, log_tail, running_as_root, LabError, LabResult};

/// The server script; Debian's `rabbitmq-server` package installs it here.
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The default user, allowed from 127.0.0.1 (`loopback_users = none`).
pub const USER: &str = "guest";
pub const PASSWORD: &str = "guest";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// An isolated RabbitMQ node. See the module documentation.
#[derive(Debug)]
pub struct RabbitNode {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    node_name: String,
    amqp_port: u16,
    management_port: u16,
    node: Option<Child>,
    epmd: Option<Child>,
    watchdog: Option<Child>,
}

impl RabbitNode {
    /// Starts a node and waits until its management API answers (12–15 s).
    /// Retried once with new ports if a port was taken meanwhile.
    pub fn start() -> LabResult<RabbitNode> {
        if !Path::new(SERVER).is_file() {
            return Err(LabError::NotInstalled(format!(
                "RabbitMQ is not installed ({SERVER} is missing): apt-get install rabbitmq-server, or run scripts/install-deps.sh"
            )));
        }
        match Self::start_once() {
            Err(e) if e.to_string().contains("eaddrinuse") => Self::start_once(),
            other => other,
        }
    }

    /// One node shared by every test of this process, started on first use
    /// and ended by the watchdog when the process exits. Give each test its
    /// own queue names.
    ///
    /// # Panics
    /// If the node cannot start.
    pub fn shared() -> &'static RabbitNode {
        static NODE: OnceLock<Result<RabbitNode, String>> = OnceLock::new();
        match NODE.get_or_init(|| RabbitNode::start().map_err(|e| e.to_string())) {
            Ok(node) => node,
            Err(e) => panic!("the shared RabbitMQ lab node did not start: {e}"),
        }
    }

    fn start_once() -> LabResult<RabbitNode> {
        let as_rabbitmq = running_as_root();
        let parent = lab_parent_dir(as_rabbitmq);
        let dir = tempfile::Builder::new()
            .prefix("rpo-rabbit-")
            .tempdir_in(&parent)
            .map_err(|e| LabError::io(format!("create temp dir in {}", parent.display()), e))?;
        let root = dir.path().to_path_buf();
        let (amqp_port, management_port, dist_port, epmd_port) =
            (free_port(), free_port(), free_port(), free_port());
        let node_name = format!("rpolab{amqp_port}@localhost");
        write(
            &root.join("rabbitmq.conf"),
            &format!(
                "listeners.tcp.default = 127.0.0.1:{amqp_port}\n\
                 management.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {management_port}\n\
                 loopback_users = none\n\
                 collect_statistics_interval = 1000\n"
            ),
        )?;
        write(&root.join("enabled_plugins"), "[rabbitmq_management].\n")?;
        write(&root.join("rabbitmq-env.conf"), "")?;
        if as_rabbitmq {
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(&root)
                .stdin(Stdio::null())
                .status()
                .map_err(|source| LabError::Spawn {
                    command: "chown".into(),
                    source,
                })?;
            if !status.success() {
                return Err(LabError::NotInstalled(
                    "running as root but there is no `rabbitmq` OS user to run the node as".into(),
                ));
            }
        }
        let log = |name: &str| -> LabResult<std::fs::File> {
            std::fs::File::create(root.join(name))
                .map_err(|e| LabError::io(format!("create {name}"), e))
        };

        let mut node = RabbitNode {
            dir: Some(dir),
            root: root.clone(),
            node_name: node_name.clone(),
            amqp_port,
            management_port,
            node: None,
            epmd: None,
            watchdog: None,
        };
        // Our own epmd, started first so the VM finds it instead of starting
        // a detached one we could not end by pid.
        node.epmd = Some(
            Command::new("epmd")
                .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(log("epmd.log")?)
                .stderr(log("epmd.log")?)
                .spawn()
                .map_err(|source| LabError::Spawn {
                    command: "epmd".into(),
                    source,
                })?,
        );
        wait_for_port(epmd_port, Duration::from_secs(5));

        let mut command = if as_rabbitmq {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=rabbitmq",
                "--regid=rabbitmq",
                "--init-groups",
                "--",
            ])
            .arg(SERVER);
            c
        } else {
            Command::new(SERVER)
        };
        let path = |name: &str| root.join(name).to_string_lossy().into_owned();
        command
            .env_clear()
            .env(
                "PATH",
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            )
            .env("HOME", &root)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &node_name)
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            // Run the VM in the foreground as our direct child (exec),
            // without a shell reading stdin.
            .env("RABBITMQ_ALLOW_INPUT", "1")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-noinput")
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(log("server.log")?)
            .stderr(log("server.log")?);
        node.node = Some(command.spawn().map_err(|source| LabError::Spawn {
            command: "rabbitmq-server".into(),
            source,
        })?);
        node.watchdog = Some(node.spawn_watchdog()?);
        node.wait_until_ready()?;
        Ok(node)
    }

    /// A shell that waits for this process to end, then kills the node and
    /// epmd and removes the directory.
    fn spawn_watchdog(&self) -> LabResult<Child> {
        let pids: Vec<String> = [&self.node, &self.epmd]
            .iter()
            .filter_map(|c| c.as_ref().map(|c| c.id().to_string()))
            .collect();
        let keep = std::env::var("RPO_LAB_KEEP").is_ok_and(|v| v == "1");
        // Only positive pids, each checked to still be a beam or epmd
        // process before it is killed: never a group, never `-1`.
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
             for p in {pids}; do \
               if grep -q -e beam -e epmd /proc/$p/cmdline 2>/dev/null; then kill -9 $p; fi; \
             done; {remove}",
            parent = std::process::id(),
            pids = pids.join(" "),
            remove = if keep {
                String::new()
            } else {
                format!("rm -rf '{}'", self.root.display())
            }
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: "sh (watchdog)".into(),
                source,
            })
    }

    fn wait_until_ready(&mut self) -> LabResult<()> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = self.api("GET", "/api/overview", None) {
                return Ok(());
            }
            let exited = self
                .node
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || started.elapsed() > START_TIMEOUT {
                let log = self.root.join("server.log");
                let mut tail = log_tail(&log, 20);
                if tail.trim().is_empty() {
                    tail = log_tail(
                        &self
                            .root
                            .join("log")
                            .join(format!("{}.log", self.node_name)),
                        20,
                    );
                }
                return Err(LabError::Timeout {
                    what: if exited {
                        "the RabbitMQ node (it exited)".to_string()
                    } else {
                        "the RabbitMQ management API to answer".to_string()
                    },
                    waited: started.elapsed(),
                    log,
                    log_tail: tail,
                });
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// `http://127.0.0.1:PORT`, without credentials ([`USER`], [`PASSWORD`]).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }

    pub fn management_port(&self) -> u16 {
        self.management_port
    }

    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The node's directory (config, logs, Mnesia).
    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    /// One management API call as [`USER`]; returns status and body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
        http(self.management_port, method, path, (USER, PASSWORD), body)
    }

    fn api_ok(&self, method: &str, path: &str, body: Option<&str>) -> LabResult<String> {
        let (status, text) = self
            .api(method, path, body)
            .map_err(|e| LabError::io(format!("{method} {path}"), e))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(LabError::Command {
                command: format!("{method} {path}"),
                stderr: format!("HTTP {status}: {text}"),
            })
        }
    }

    /// Declares a non-durable queue in vhost `/`.
    pub fn declare_queue(&self, queue: &str) -> LabResult<()> {
        self.api_ok(
            "PUT",
            &format!("/api/queues/%2F/{}", encode(queue)),
            Some(r#"{"durable":false,"auto_delete":false,"arguments":{}}"#),
        )
        .map(|_| ())
    }

    /// Publishes `n` messages to `queue` through the default exchange, with
    /// the AMQP `timestamp` property set to `timestamp` (whole seconds) when given.
    pub fn publish(&self, queue: &str, n: usize, timestamp: Option<SystemTime>) -> LabResult<()> {
        let properties = match timestamp {
            Some(t) => format!(
                r#"{{"timestamp":{}}}"#,
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
            ),
            None => "{}".to_string(),
        };
        for i in 0..n {
            let body = format!(
                r#"{{"properties":{properties},"routing_key":"{}","payload":"message {i}","payload_encoding":"string"}}"#,
                queue.replace('"', "\\\"")
            );
            let answer = self.api_ok(
                "POST",
                "/api/exchanges/%2F/amq.default/publish",
                Some(&body),
            )?;
            if !answer.contains("\"routed\":true") {
                return Err(LabError::Command {
                    command: format!("publish to {queue}"),
                    stderr: format!("not routed: {answer}"),
                });
            }
        }
        Ok(())
    }

    /// Takes up to `count` messages off `queue` and acknowledges them
    /// (`ackmode = ack_requeue_false`); returns how many were taken.
    pub fn consume(&self, queue: &str, count: usize) -> LabResult<usize> {
        let answer = self.api_ok(
            "POST",
            &format!("/api/queues/%2F/{}/get", encode(queue)),
            Some(&format!(
                r#"{{"count":{count},"ackmode":"ack_requeue_false","encoding":"auto"}}"#
            )),
        )?;
        Ok(answer.matches("\"payload\":").count())
    }

    /// Adds a user with management `tags` (e.g. `monitoring`) and no
    /// permission on any vhost.
    pub fn add_user(&self, user: &str, password: &str, tags: &str) -> LabResult<()> {
        self.api_ok(
            "PUT",
            &format!("/api/users/{}", encode(user)),
            Some(&format!(r#"{{"password":"{password}","tags":"{tags}"}}"#)),
        )
        .map(|_| ())
    }

    /// Sets a user's permissions on vhost `/` (regular expressions for
    /// configure, write and read; `""` grants nothing).
    pub fn set_permissions(
        &self,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> LabResult<()> {
        self.api_ok(
            "PUT",
            &format!("/api/permissions/%2F/{}", encode(user)),
            Some(&format!(
                r#"{{"configure":"{configure}","write":"{write}","read":"{read}"}}"#
            )),
        )
        .map(|_| ())
    }

    /// The queue's counts as the management API shows them now (its
    /// statistics lag by up to ~2 s here).
    pub fn queue_messages(&self, queue: &str) -> LabResult<Option<u64>> {
        let text = self.api_ok("GET", &format!("/api/queues/%2F/{}", encode(queue)), None)?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            LabError::io("queue JSON", io::Error::new(io::ErrorKind::InvalidData, e))
        })?;
        Ok(value.get("messages").and_then(serde_json::Value::as_u64))
    }

    /// Stops the node the hard way (SIGKILL), as a crash would, and its
    /// epmd. Idempotent.
    pub fn stop(&mut self) {
        for child in [self.node.take(), self.epmd.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the node process is still running.
    pub fn is_running(&mut self) -> bool {
        self.node
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut watchdog) = self.watchdog.take() {
            // By its own pid only (its `sleep 1` ends by itself). Never
            // `kill -<pgid>`: procps-ng 4.0's kill(1) took that for "every
            // process" here.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var("RPO_LAB_KEEP").is_ok_and(|v| v == "1") {
                eprintln!("rpo lab: RPO_LAB_KEEP=1, keeping {}", dir.keep().display());
            } else {
                let _ = dir.close();
            }
        }
    }
}

fn write(path: &Path, text: &str) -> LabResult<()> {
    std::fs::write(path, text).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

fn wait_for_port(port: u16, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Percent-encodes a path segment (vhost, queue or user name).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTP/1.1 request to 127.0.0.1 (`Connection: close`).
fn http(
    port: u16,
    method: &str,
    path: &str,
    (user, password): (&str, &str),
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        super::opensearch::base64(format!("{user}:{password}").as_bytes()),
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    ))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("erp.orders q"), "erp.orders%20q");
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "Wikipedia");
    }
}
