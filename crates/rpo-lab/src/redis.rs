//! Redis for the lab: a primary with a replica ([`RedisPair`]) and a single
//! server ([`RedisServer`]), for integration tests and the demo.
//!
//! Each is a set of `redis-server` child processes on 127.0.0.1, on ports
//! from [`free_port`](super::free_port), in its own temporary directory
//! (`rpo-lab-redis-*`, under the system temp dir) holding the server logs
//! (`primary.log`, `replica.log`, `server.log`) and, with TLS, the
//! certificates. Persistence is off (`--save '' --appendonly no`); the
//! primary syncs replicas without delay (`--repl-diskless-sync-delay 0`).
//! Dropping kills every process (SIGKILL, which also ends a SIGSTOPped one)
//! and removes the directory, unless `RPO_LAB_KEEP=1` is set.
//!
//! `redis-server` is found in `RPO_LAB_REDIS_SERVER` if set, else on
//! `PATH`; if it is missing, run `scripts/install-deps.sh`. With
//! [`RedisOptions::tls`], certificates are made with the `openssl` command.
//! Everything is synchronous, like the Postgres lab.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, log_tail, run, LabError, LabResult};

/// How a lab Redis is set up.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass` for the `default` user (and `masterauth` on a replica).
    pub password: Option<String>,
    /// Serve only TLS (`rediss://localhost:PORT`), with a CA of the lab's own
    /// ([`RedisPair::ca_file`]); replication runs over TLS too.
    pub tls: bool,
}

/// The `redis-server` binary.
pub fn redis_server_binary() -> LabResult<PathBuf> {
    let not_installed = |what: String| LabError::Io {
        context: format!("redis-server is not installed ({what}): run scripts/install-deps.sh"),
        source: io::Error::from(io::ErrorKind::NotFound),
    };
    if let Some(path) = std::env::var_os("RPO_LAB_REDIS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(not_installed(format!(
                "RPO_LAB_REDIS_SERVER={} is not a file",
                path.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| not_installed("not on PATH".to_string()))
}

/// One `redis-server` child process.
#[derive(Debug)]
struct ServerProcess {
    name: &'static str,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    fn spawn(&mut self, binary: &Path, root: &Path) -> LabResult<()> {
        let child = Command::new(binary)
            .args(&self.args)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: format!("redis-server ({})", self.name),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> LabResult<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| LabError::Command {
                command: format!("redis-server ({})", self.name),
                stderr: "not running".to_string(),
            })
    }

    /// Whether the process has exited (and is reaped).
    fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(child) => !matches!(child.try_wait(), Ok(None)),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) -> LabResult<()> {
        let pid = self.pid()?;
        let mut cmd = Command::new("kill");
        cmd.arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdin(Stdio::null());
        run(&format!("kill -{signal} ({})", self.name), cmd).map(|_| ())
    }

    /// SIGTERM, then waits up to 10 s (SIGKILL after that).
    fn stop(&mut self) -> LabResult<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal("TERM")?;
        let started = Instant::now();
        while !self.exited() {
            if started.elapsed() > Duration::from_secs(10) {
                self.kill();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
        Ok(())
    }
}

/// The temp dir, TLS material and connection settings shared by the lab's
/// Redis servers.
#[derive(Debug)]
struct Setup {
    binary: PathBuf,
    /// `None` only during drop.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    options: RedisOptions,
}

impl Setup {
    fn new(options: RedisOptions) -> LabResult<Setup> {
        let binary = redis_server_binary()?;
        let parent = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-redis-")
            .tempdir_in(&parent)
            .map_err(|e| LabError::Io {
                context: format!("create temp dir in {}", parent.display()),
                source: e,
            })?;
        let root = dir.path().to_path_buf();
        let setup = Setup {
            binary,
            dir: Some(dir),
            root,
            options,
        };
        if setup.options.tls {
            super::make_certificates(&setup.root)?;
        }
        Ok(setup)
    }

    /// Arguments for one server on `port`.
    fn args(&self, name: &str, port: u16, replica_of: Option<u16>) -> Vec<String> {
        let root = self.root.to_string_lossy().to_string();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--daemonize".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--dir".into(),
            root,
            "--dbfilename".into(),
            format!("{name}.rdb"),
            "--logfile".into(),
            format!("{name}.log"),
        ];
        if self.options.tls {
            args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    "server.crt",
                    "--tls-key-file",
                    "server.key",
                    "--tls-ca-cert-file",
                    "ca.crt",
                    "--tls-auth-clients",
                    "no",
                    "--tls-replication",
                    "yes",
                ]
                .map(String::from),
            );
        } else {
            args.extend(["--port".to_string(), port.to_string()]);
        }
        if let Some(password) = &self.options.password {
            args.extend(["--requirepass".to_string(), password.clone()]);
            if replica_of.is_some() {
                args.extend(["--masterauth".to_string(), password.clone()]);
            }
        }
        if let Some(primary) = replica_of {
            args.extend([
                "--replicaof".to_string(),
                "127.0.0.1".to_string(),
                primary.to_string(),
            ]);
        }
        args
    }

    fn process(&self, name: &'static str, port: u16, replica_of: Option<u16>) -> ServerProcess {
        ServerProcess {
            name,
            port,
            args: self.args(name, port, replica_of),
            log: self.root.join(format!("{name}.log")),
            child: None,
        }
    }

    /// `redis://[:password@]127.0.0.1:PORT`, or `rediss://...localhost:PORT`.
    fn url(&self, port: u16) -> String {
        let auth = self
            .options
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        if self.options.tls {
            format!("rediss://{auth}localhost:{port}")
        } else {
            format!("redis://{auth}127.0.0.1:{port}")
        }
    }

    fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.root.join("ca.crt"))
    }

    /// A client for one server, trusting the lab CA with TLS.
    fn client(&self, port: u16) -> LabResult<redis::Client> {
        let url = self.url(port);
        let result = match self.ca_file() {
            Some(ca) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let pem = std::fs::read(&ca).map_err(|e| LabError::Io {
                    context: format!("read {}", ca.display()),
                    source: e,
                })?;
                redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(url.as_str()),
        };
        result.map_err(|e| LabError::Command {
            command: "redis client".to_string(),
            stderr: e.to_string(),
        })
    }

    /// Runs one command on the server at `port` and returns its reply.
    fn command(&self, port: u16, args: &[&str]) -> LabResult<redis::Value> {
        let client = self.client(port)?;
        let fail = |e: redis::RedisError| LabError::Command {
            command: format!("redis {}", args.first().copied().unwrap_or("")),
            stderr: e.to_string(),
        };
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .map_err(fail)?;
        let _ = connection.set_read_timeout(Some(Duration::from_secs(10)));
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut connection).map_err(fail)
    }

    fn info_replication(&self, port: u16) -> LabResult<String> {
        match self.command(port, &["INFO", "replication"])? {
            redis::Value::BulkString(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            redis::Value::VerbatimString { text, .. } => Ok(text),
            other => Ok(format!("{other:?}")),
        }
    }

    /// Starts `process` and waits until it answers PING.
    fn start(&self, process: &mut ServerProcess) -> LabResult<()> {
        process.spawn(&self.binary, &self.root)?;
        let started = Instant::now();
        loop {
            if process.exited() {
                return Err(LabError::ServerStart {
                    server: process.name,
                    stderr: "redis-server exited".to_string(),
                    log_tail: log_tail(&process.log, 20),
                    log: process.log.clone(),
                });
            }
            if self.command(process.port, &["PING"]).is_ok() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                process.kill();
                return Err(LabError::Timeout {
                    what: format!("redis-server ({}) to answer PING", process.name),
                    waited: started.elapsed(),
                    log_tail: log_tail(&process.log, 20),
                    log: process.log.clone(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn keep_or_remove(&mut self) {
        if let Some(dir) = self.dir.take() {
            if std::env::var("RPO_LAB_KEEP").is_ok_and(|v| v == "1") {
                let kept = dir.keep();
                eprintln!("rpo lab: RPO_LAB_KEEP=1, keeping {}", kept.display());
            } else {
                let _ = dir.close();
            }
        }
    }
}

fn is_port_conflict(error: &LabError) -> bool {
    matches!(error, LabError::ServerStart { log_tail, .. } if log_tail.contains("Address already in use"))
}

/// A real Redis primary with one replica (`--replicaof`), both on
/// 127.0.0.1. Dropping it kills both and removes its directory.
#[derive(Debug)]
pub struct RedisPair {
    setup: Setup,
    primary: ServerProcess,
    replica: ServerProcess,
}

impl RedisPair {
    /// A plain pair (no password, no TLS), up in about 0.1 s.
    pub fn start() -> LabResult<RedisPair> {
        RedisPair::start_with(RedisOptions::default())
    }

    /// Starts a primary and a replica and waits (up to 10 s) until the
    /// replica reports `master_link_status:up`. A port taken between
    /// choosing and binding it is retried once with new ports.
    pub fn start_with(options: RedisOptions) -> LabResult<RedisPair> {
        match RedisPair::start_once(options.clone()) {
            Err(e) if is_port_conflict(&e) => RedisPair::start_once(options),
            other => other,
        }
    }

    fn start_once(options: RedisOptions) -> LabResult<RedisPair> {
        let setup = Setup::new(options)?;
        let primary_port = free_port();
        let replica_port = free_port();
        let mut pair = RedisPair {
            primary: setup.process("primary", primary_port, None),
            replica: setup.process("replica", replica_port, Some(primary_port)),
            setup,
        };
        // From here on, Drop cleans up whatever was started.
        pair.setup.start(&mut pair.primary)?;
        pair.setup.start(&mut pair.replica)?;
        pair.wait_for_link_up(Duration::from_secs(10))?;
        Ok(pair)
    }

    /// Waits until the replica reports `master_link_status:up`.
    pub fn wait_for_link_up(&self, timeout: Duration) -> LabResult<()> {
        let started = Instant::now();
        loop {
            let info = self.replica_info();
            if matches!(&info, Ok(text) if text.contains("master_link_status:up")) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!(
                        "the replica's master link to come up (last seen: {})",
                        match info {
                            Ok(text) => text
                                .lines()
                                .find(|l| l.starts_with("master_link_status"))
                                .unwrap_or("no link status")
                                .trim()
                                .to_string(),
                            Err(e) => e.to_string(),
                        }
                    ),
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.replica.log, 20),
                    log: self.replica.log.clone(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The primary's URL (with the password, if any).
    pub fn primary_url(&self) -> String {
        self.setup.url(self.primary.port)
    }

    /// The replica's URL (with the password, if any).
    pub fn replica_url(&self) -> String {
        self.setup.url(self.replica.port)
    }

    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }

    /// The lab CA's certificate (PEM), with [`RedisOptions::tls`].
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.setup.ca_file()
    }

    /// A client for the primary (trusting the lab CA with TLS).
    pub fn primary_client(&self) -> LabResult<redis::Client> {
        self.setup.client(self.primary.port)
    }

    /// Runs one command on the primary, e.g. `["SET", "k", "v"]`.
    pub fn primary_command(&self, args: &[&str]) -> LabResult<redis::Value> {
        self.setup.command(self.primary.port, args)
    }

    /// Runs one command on the replica.
    pub fn replica_command(&self, args: &[&str]) -> LabResult<redis::Value> {
        self.setup.command(self.replica.port, args)
    }

    /// The primary's `INFO replication` text.
    pub fn primary_info(&self) -> LabResult<String> {
        self.setup.info_replication(self.primary.port)
    }

    /// The replica's `INFO replication` text.
    pub fn replica_info(&self) -> LabResult<String> {
        self.setup.info_replication(self.replica.port)
    }

    /// The replica's process id; fails if it is not running.
    pub fn replica_pid(&self) -> LabResult<u32> {
        self.replica.pid()
    }

    /// The primary's process id; fails if it is not running.
    pub fn primary_pid(&self) -> LabResult<u32> {
        self.primary.pid()
    }

    /// Freezes the replica (SIGSTOP): it accepts connections but answers
    /// nothing and applies nothing, while the primary keeps its link open.
    pub fn sigstop_replica(&self) -> LabResult<()> {
        self.replica.signal("STOP")
    }

    /// Thaws the replica (SIGCONT); it catches up within about 1.5 s.
    pub fn sigcont_replica(&self) -> LabResult<()> {
        self.replica.signal("CONT")
    }

    /// Kills the replica (SIGKILL): connections are refused and the primary
    /// drops it from its replica list.
    pub fn kill_replica(&mut self) {
        self.replica.kill();
    }

    /// Stops the replica (SIGTERM, waits).
    pub fn stop_replica(&mut self) -> LabResult<()> {
        self.replica.stop()
    }

    /// Starts the replica again on its port; it resynchronises by itself
    /// (wait with [`wait_for_link_up`](Self::wait_for_link_up)).
    pub fn start_replica(&mut self) -> LabResult<()> {
        self.setup.start(&mut self.replica)
    }

    /// Kills the primary (SIGKILL): the replica's link goes down.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Starts the primary again, empty (no persistence), with a new
    /// replication id; the replica resynchronises by itself.
    pub fn start_primary(&mut self) -> LabResult<()> {
        self.setup.start(&mut self.primary)
    }

    /// Promotes the replica (`REPLICAOF NO ONE`): it keeps its data and
    /// accepts writes.
    pub fn promote_replica(&self) -> LabResult<()> {
        self.replica_command(&["REPLICAOF", "NO", "ONE"])
            .map(|_| ())
    }

    /// Failback: makes the server on the primary's port a replica of the
    /// one on the replica's port (`REPLICAOF`); wait with
    /// [`wait_for_primary_link_up`](Self::wait_for_primary_link_up).
    pub fn replicate_primary_from_replica(&self) -> LabResult<()> {
        let port = self.replica.port.to_string();
        self.primary_command(&["REPLICAOF", "127.0.0.1", &port])
            .map(|_| ())
    }

    /// A planned switchover (`FAILOVER` on the primary, Redis 6.2+): the
    /// primary pauses writes, waits for the replica to catch up, then the
    /// two swap roles. Waits (up to 10 s) until the replica reports
    /// `role:master`.
    pub fn switch_over(&self) -> LabResult<()> {
        self.primary_command(&["FAILOVER", "TIMEOUT", "5000"])?;
        let started = Instant::now();
        loop {
            if matches!(self.replica_info(), Ok(text) if text.contains("role:master")) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(LabError::Timeout {
                    what: "the replica to become the primary after FAILOVER".to_string(),
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.primary.log, 20),
                    log: self.primary.log.clone(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the server on the primary's port reports
    /// `master_link_status:up` (it replicates from the replica's port).
    pub fn wait_for_primary_link_up(&self, timeout: Duration) -> LabResult<()> {
        let started = Instant::now();
        loop {
            if matches!(self.primary_info(), Ok(text) if text.contains("master_link_status:up")) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: "the old primary to replicate from the promoted replica".to_string(),
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.primary.log, 20),
                    log: self.primary.log.clone(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pair's directory (logs, TLS material).
    pub fn data_dir(&self) -> &Path {
        &self.setup.root
    }
}

impl Drop for RedisPair {
    fn drop(&mut self) {
        self.replica.kill();
        self.primary.kill();
        self.setup.keep_or_remove();
    }
}

/// A single real Redis server on 127.0.0.1 (for streams). Dropping it kills
/// it and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    setup: Setup,
    server: ServerProcess,
}

impl RedisServer {
    /// A plain server (no password, no TLS).
    pub fn start() -> LabResult<RedisServer> {
        RedisServer::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> LabResult<RedisServer> {
        let once = |options: RedisOptions| -> LabResult<RedisServer> {
            let setup = Setup::new(options)?;
            let mut server = RedisServer {
                server: setup.process("server", free_port(), None),
                setup,
            };
            server.setup.start(&mut server.server)?;
            Ok(server)
        };
        match once(options.clone()) {
            Err(e) if is_port_conflict(&e) => once(options),
            other => other,
        }
    }

    /// The server's URL (with the password, if any).
    pub fn url(&self) -> String {
        self.setup.url(self.server.port)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn pid(&self) -> LabResult<u32> {
        self.server.pid()
    }

    /// The lab CA's certificate (PEM), with [`RedisOptions::tls`].
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.setup.ca_file()
    }

    /// A client for the server (trusting the lab CA with TLS).
    pub fn client(&self) -> LabResult<redis::Client> {
        self.setup.client(self.server.port)
    }

    /// Runs one command, e.g. `["XADD", "orders", "*", "item", "a"]`.
    pub fn command(&self, args: &[&str]) -> LabResult<redis::Value> {
        self.setup.command(self.server.port, args)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.server.kill();
        self.setup.keep_or_remove();
    }
}
