//! Lab harness: real PostgreSQL streaming-replication pairs for integration
//! tests and the demo, plus a silent TCP server for timeout tests.
//!
//! This module owns everything it starts: each [`PostgresPair`] lives in its
//! own temporary directory (named `rpo-lab-*`, under the system temp dir)
//! holding the primary's and the replica's data directories, their unix
//! sockets and their server logs (`primary.log`, `replica.log`). Dropping the
//! pair stops both servers (`pg_ctl stop -m immediate`) and removes the
//! directory, unless `RPO_LAB_KEEP=1` is set, in which case the directory is
//! kept and its path printed to stderr.
//!
//! The servers listen on 127.0.0.1 only, on ports picked with [`free_port`],
//! with `trust` authentication for the `postgres` role. PostgreSQL refuses to
//! run as root, so when this process is root the server binaries run as the
//! `postgres` OS user through `runuser`; otherwise they run as the current
//! user. Everything is synchronous (`std::process::Command`), so it can be
//! used from plain `#[test]`s and from async code via `spawn_blocking`.
//!
//! The binaries are found in `RPO_LAB_PG_BIN` if set, else the highest
//! `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`, else `initdb` on
//! `PATH`. If none is found, run `scripts/install-deps.sh`.
//!
//! The other servers have a module each ([`mariadb`], [`redis`],
//! [`rabbitmq`], [`moto`] with [`aws_proxy`] to lose an AWS region in front
//! of it, [`opensearch`], [`monitoring`]; [`full`] starts them all), and
//! [`support`] holds the helpers every test crate shares (the exporter run
//! in-process, reading `/metrics`, waits, config text).

pub mod aws_proxy;
pub mod faketime;
pub mod full;
pub mod mariadb;
pub mod monitoring;
pub mod moto;
pub mod opensearch;
pub mod rabbitmq;
pub mod redis;
pub mod support;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Result type of the lab harness.
pub type LabResult<T> = Result<T, LabError>;

/// Everything that can go wrong while running the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// No PostgreSQL server binaries were found on this machine.
    #[error("PostgreSQL is not installed: run scripts/install-deps.sh ({0})")]
    NotInstalled(String),
    /// A command could not be started at all (binary missing, not executable, ...).
    #[error("could not run {command}: {source}")]
    Spawn {
        /// The command, e.g. `initdb`.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A command ran and exited unsuccessfully.
    #[error("{command} failed: {stderr}")]
    Command {
        /// The command, e.g. `initdb` or `psql (replica)`.
        command: String,
        /// Its trimmed stderr (or stdout if stderr was empty).
        stderr: String,
    },
    /// `pg_ctl start` failed; carries the tail of the server log.
    #[error("pg_ctl start ({server}) failed: {stderr}\n--- last lines of {} ---\n{log_tail}", log.display())]
    ServerStart {
        /// `primary` or `replica`.
        server: &'static str,
        /// Trimmed output of `pg_ctl`.
        stderr: String,
        /// The server log file.
        log: PathBuf,
        /// The last ~20 lines of that log.
        log_tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The most relevant server log.
        log: PathBuf,
        /// The last ~20 lines of that log.
        log_tail: String,
    },
    /// A local file-system or OS operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl LabError {
    /// True if a server could not start because its port was taken
    /// (between [`free_port`] and the bind: another process, or an outgoing
    /// connection's ephemeral port). The lab's servers start again on this
    /// (`retry_port_conflicts`).
    pub fn is_port_conflict(&self) -> bool {
        let taken = |s: &String| {
            s.contains("could not bind")
                || s.to_ascii_lowercase().contains("address already in use")
                || s.contains("could not create any TCP/IP sockets")
        };
        match self {
            LabError::ServerStart {
                log_tail, stderr, ..
            } => [log_tail, stderr].into_iter().any(taken),
            LabError::Command { stderr, .. } => taken(stderr),
            _ => false,
        }
    }

    fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Ports handed out by [`free_port`] in this process, so that two pairs
/// started in parallel never pick the same one.
fn handed_out_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// `start`, tried again while it fails because its port was taken between
/// [`free_port`] and the server's bind ([`LabError::is_port_conflict`]),
/// up to `tries` tries in all.
pub(crate) fn retry_port_conflicts<T>(
    tries: u32,
    mut start: impl FnMut() -> LabResult<T>,
) -> LabResult<T> {
    let mut tried = 1;
    loop {
        match start() {
            Err(e) if e.is_port_conflict() && tried < tries => tried += 1,
            other => return other,
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads
/// the port the OS chose and drops the socket. Never returns the same port
/// twice within one process (it asks the OS again instead).
///
/// # Panics
/// If 127.0.0.1 cannot be bound at all.
pub fn free_port() -> u16 {
    let mut last = 0;
    for _ in 0..64 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of bound socket")
            .port();
        drop(listener);
        last = port;
        let mut ports = handed_out_ports().lock().unwrap_or_else(|e| e.into_inner());
        if ports.insert(port) {
            return port;
        }
    }
    last
}

/// Parses "15" or "9.6" into a sortable version.
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

/// The directory holding `initdb`, `pg_ctl`, `pg_basebackup` and `psql`.
///
/// Looks, in order, at `RPO_LAB_PG_BIN`, the highest-versioned
/// `/usr/lib/postgresql/*/bin` that has `initdb`, `pg_config --bindir` and
/// `initdb` on `PATH`.
pub fn postgres_bin_dir() -> LabResult<PathBuf> {
    if let Some(dir) = std::env::var_os("RPO_LAB_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(LabError::NotInstalled(format!(
            "RPO_LAB_PG_BIN={} has no initdb",
            dir.display()
        )));
    }

    let mut best: Option<((u32, u32), PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }

    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").is_file() {
                return Ok(dir);
            }
        }
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() {
                return Ok(dir);
            }
        }
    }

    Err(LabError::NotInstalled(
        "no initdb in /usr/lib/postgresql/*/bin, pg_config --bindir or PATH".into(),
    ))
}

/// Whether this process runs as root (then the servers run as `postgres`).
fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the effective uid of the process.
        if let Ok(meta) = std::fs::metadata("/proc/self") {
            return meta.uid() == 0;
        }
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Environment variables that would change where or how libpq and the
/// server tools connect; removed from every child.
const PG_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGDATA",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGTARGETSESSIONATTRS",
    "PGCLIENTENCODING",
    "PGTZ",
    "PGDATESTYLE",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGSYSCONFDIR",
    "PGLOCALEDIR",
];

/// Where the binaries live and as whom they run.
#[derive(Debug, Clone)]
struct Tools {
    bin: PathBuf,
    as_postgres: bool,
}

impl Tools {
    fn detect() -> LabResult<Tools> {
        let bin = postgres_bin_dir()?;
        for tool in ["initdb", "pg_ctl", "pg_basebackup", "psql"] {
            if !bin.join(tool).is_file() {
                return Err(LabError::NotInstalled(format!(
                    "{} has no {tool}",
                    bin.display()
                )));
            }
        }
        let as_postgres = running_as_root();
        if as_postgres {
            let has_user = std::fs::read_to_string("/etc/passwd")
                .map(|p| p.lines().any(|l| l.starts_with("postgres:")))
                .unwrap_or(false);
            if !has_user {
                return Err(LabError::NotInstalled(
                    "running as root but there is no `postgres` OS user to run the servers as"
                        .into(),
                ));
            }
        }
        Ok(Tools { bin, as_postgres })
    }

    /// A command for a server-side tool, run as `postgres` when we are root.
    fn server_cmd(&self, tool: &str, cwd: &Path) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        };
        self.prepare(&mut cmd, cwd);
        cmd
    }

    /// `psql` runs as the current user: trust auth lets it log in as `postgres`.
    fn psql_cmd(&self, port: u16, sql: &str, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        self.prepare(&mut cmd, cwd);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
        cmd
    }

    fn prepare(&self, cmd: &mut Command, cwd: &Path) {
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        // English messages, so "could not bind" can be recognised in logs.
        cmd.env("LC_ALL", "C")
            .env("LC_MESSAGES", "C")
            .env("LANG", "C");
        // A directory the postgres user can enter (our cwd may be /root).
        cmd.current_dir(cwd);
        cmd.stdin(Stdio::null());
    }
}

/// Runs `cmd`, returning its output if it succeeded.
fn run(name: &str, mut cmd: Command) -> LabResult<Output> {
    let out = cmd.output().map_err(|source| LabError::Spawn {
        command: name.to_string(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Command {
            command: name.to_string(),
            stderr: failure_text(&out),
        })
    }
}

/// Trimmed stderr, or stdout if stderr is empty, or the exit status.
fn failure_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !stderr.is_empty() {
        return stderr;
    }
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !stdout.is_empty() {
        return stdout;
    }
    format!("exited with {}", out.status)
}

/// The last `n` lines of a log file (or a note that it could not be read).
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(could not read log: {e})"),
    }
}

/// Quotes a value for postgresql.conf.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn append_file(path: &Path, text: &str) -> LabResult<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

/// The system temp dir if every ancestor is enterable by other users
/// (needed when the servers run as `postgres`), else `/tmp`.
fn lab_parent_dir(as_postgres: bool) -> PathBuf {
    let tmp = std::env::temp_dir();
    if !as_postgres {
        return tmp;
    }
    use std::os::unix::fs::PermissionsExt;
    let traversable = tmp.ancestors().all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if traversable {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// A test CA (`ca.crt`, `ca.key`) and a server certificate for 127.0.0.1 and
/// localhost signed by it (`server.crt`, `server.key`) in `dir`, made with
/// the `openssl` command (the Redis and MariaDB labs' TLS, the exporter's own
/// HTTPS). The server certificate also serves as a client certificate.
pub fn make_certificates(dir: &Path) -> LabResult<()> {
    let openssl = |name: &str, args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        run(&format!("openssl {name}"), cmd).map(|_| ())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=rpo-lab CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl("req (CA)", &ca)?;
    let mut csr = vec!["req", "-new", "-nodes", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl("req (server)", &csr)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .map_err(|e| LabError::io("write server.ext", e))?;
    openssl(
        "x509 (server)",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )
}

/// Name of the physical replication slot the replica streams from.
const SLOT_NAME: &str = "rpo_lab_replica";

/// How long `pg_ctl` may wait for a server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// One of the two servers of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Replica,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A real PostgreSQL primary and a streaming replica (physical slot
/// `rpo_lab_replica`, `hot_standby_feedback=on`,
/// `wal_receiver_status_interval=1s`), both on 127.0.0.1 with trust auth for
/// user `postgres`.
///
/// Owns a temp dir `rpo-lab-*` with `primary/`, `replica/`, `primary.log`,
/// `replica.log` and the unix sockets. Dropping it stops both servers with
/// `pg_ctl stop -m immediate` (errors ignored) and removes the directory
/// (kept if `RPO_LAB_KEEP=1`).
#[derive(Debug)]
pub struct PostgresPair {
    tools: Tools,
    /// `None` only during drop.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    primary_port: u16,
    replica_port: u16,
    options: PostgresOptions,
}

/// How a lab pair is set up beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// Run the primary with its clock this far from the real one
    /// (libfaketime's `FAKETIME` syntax: `"+60s"`, `"-60s"`); its
    /// `now()`, `clock_timestamp()` and commit times follow it. Kept
    /// across [`PostgresPair::start_primary`].
    pub primary_clock: Option<String>,
    /// The same for the replica.
    pub replica_clock: Option<String>,
}

impl PostgresPair {
    /// Creates and starts a primary and a streaming replica, and waits (up
    /// to 30 s) until the replica's `pg_stat_wal_receiver.status` is
    /// `streaming`. Takes about 2–3 s. If a server could not bind its port
    /// (taken since [`free_port`] picked it), the whole start is retried
    /// once with new ports and a new directory.
    pub fn start() -> LabResult<PostgresPair> {
        PostgresPair::start_with(PostgresOptions::default())
    }

    /// [`PostgresPair::start`] with `options` (servers with a fake clock).
    pub fn start_with(options: PostgresOptions) -> LabResult<PostgresPair> {
        let tools = Tools::detect()?;
        retry_port_conflicts(2, || Self::start_once(&tools, &options))
    }

    fn start_once(tools: &Tools, options: &PostgresOptions) -> LabResult<PostgresPair> {
        let parent = lab_parent_dir(tools.as_postgres);
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-")
            .tempdir_in(&parent)
            .map_err(|e| LabError::io(format!("create temp dir in {}", parent.display()), e))?;
        let root = dir.path().to_path_buf();
        if tools.as_postgres {
            run("chown", {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&root).stdin(Stdio::null());
                c
            })?;
        }
        // From here on, Drop cleans up whatever was started.
        let pair = PostgresPair {
            tools: tools.clone(),
            dir: Some(dir),
            root,
            primary_port: free_port(),
            replica_port: free_port(),
            options: options.clone(),
        };
        pair.init_primary()?;
        pair.pg_ctl_start(Role::Primary)?;
        pair.base_backup()?;
        pair.pg_ctl_start(Role::Replica)?;
        pair.wait_for_streaming(Duration::from_secs(30))?;
        Ok(pair)
    }

    fn init_primary(&self) -> LabResult<()> {
        let pdir = self.dir_of(Role::Primary);
        let mut cmd = self.tools.server_cmd("initdb", &self.root);
        cmd.args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-D",
        ])
        .arg(&pdir);
        run("initdb", cmd)?;

        let sockets = conf_quote(&self.root.to_string_lossy());
        let conf = format!(
            "\n# rpo-exporter lab\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n\
             wal_receiver_status_interval = 1s\n\
             wal_retrieve_retry_interval = 1s\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {sockets}\n\
             fsync = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n",
            port = self.primary_port,
        );
        append_file(&pdir.join("postgresql.conf"), &conf)?;
        append_file(
            &pdir.join("pg_hba.conf"),
            "\n# rpo-exporter lab\n\
             host replication all 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 trust\n",
        )
    }

    fn base_backup(&self) -> LabResult<()> {
        self.base_backup_of(Role::Primary, Role::Replica, SLOT_NAME)
    }

    /// Makes `into` a streaming replica of `from` (`pg_basebackup -R` into
    /// its data directory, a slot named `slot` on `from`).
    fn base_backup_of(&self, from: Role, into: Role, slot: &str) -> LabResult<()> {
        let dir = self.dir_of(into);
        let mut cmd = self.tools.server_cmd("pg_basebackup", &self.root);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port_of(from).to_string(),
            "-U",
            "postgres",
            "-D",
        ])
        .arg(&dir)
        .args([
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-C",
            "-S",
            slot,
            "--no-sync",
        ]);
        run("pg_basebackup", cmd)?;
        // Later lines win over the source's settings copied by the backup.
        append_file(
            &dir.join("postgresql.conf"),
            &format!(
                "\n# rpo-exporter lab {into}\nport = {}\nunix_socket_directories = {}\n",
                self.port_of(into),
                conf_quote(&self.root.to_string_lossy())
            ),
        )
    }

    fn dir_of(&self, role: Role) -> PathBuf {
        self.root.join(role.name())
    }

    fn log_of(&self, role: Role) -> PathBuf {
        self.root.join(format!("{}.log", role.name()))
    }

    fn port_of(&self, role: Role) -> u16 {
        match role {
            Role::Primary => self.primary_port,
            Role::Replica => self.replica_port,
        }
    }

    fn pg_ctl_start(&self, role: Role) -> LabResult<()> {
        let log = self.log_of(role);
        let mut cmd = self.tools.server_cmd("pg_ctl", &self.root);
        let clock = match role {
            Role::Primary => &self.options.primary_clock,
            Role::Replica => &self.options.replica_clock,
        };
        if let Some(offset) = clock {
            // pg_ctl's children (the postmaster and its backends) inherit it.
            cmd.envs(faketime::server_env(offset)?);
        }
        cmd.arg("-D")
            .arg(self.dir_of(role))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "start"]);
        let out = cmd.output().map_err(|source| LabError::Spawn {
            command: format!("pg_ctl start ({role})"),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(LabError::ServerStart {
            server: role.name(),
            stderr: failure_text(&out),
            log_tail: log_tail(&log, 20),
            log,
        })
    }

    fn pg_ctl_stop(&self, role: Role, mode: &str) -> LabResult<()> {
        let mut cmd = self.tools.server_cmd("pg_ctl", &self.root);
        cmd.arg("-D").arg(self.dir_of(role)).args([
            "-m",
            mode,
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "stop",
        ]);
        run(&format!("pg_ctl stop ({role})"), cmd).map(|_| ())
    }

    fn sql(&self, role: Role, sql: &str) -> LabResult<String> {
        let cmd = self.tools.psql_cmd(self.port_of(role), sql, &self.root);
        let out = run(&format!("psql ({role})"), cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Waits until the replica's WAL receiver reports `streaming`, e.g.
    /// after [`start_replica`](Self::start_replica) or
    /// [`start_primary`](Self::start_primary).
    pub fn wait_for_streaming(&self, timeout: Duration) -> LabResult<()> {
        self.wait_for_streaming_on(Role::Replica, timeout)
    }

    /// Waits until the server on the primary's port streams from the one on
    /// the replica's port, after
    /// [`rebuild_primary_as_replica`](Self::rebuild_primary_as_replica).
    pub fn wait_for_primary_streaming(&self, timeout: Duration) -> LabResult<()> {
        self.wait_for_streaming_on(Role::Primary, timeout)
    }

    fn wait_for_streaming_on(&self, role: Role, timeout: Duration) -> LabResult<()> {
        let started = Instant::now();
        loop {
            let status = self.sql(role, "SELECT status FROM pg_stat_wal_receiver");
            if matches!(&status, Ok(s) if s == "streaming") {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                let seen = match status {
                    Ok(s) if s.is_empty() => "no WAL receiver".to_string(),
                    Ok(s) => format!("status {s}"),
                    Err(e) => format!("error: {e}"),
                };
                let log = self.log_of(role);
                return Err(LabError::Timeout {
                    what: format!("the {role} to stream from its source (last seen: {seen})"),
                    waited: started.elapsed(),
                    log_tail: log_tail(&log, 20),
                    log,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` for the primary.
    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.primary_port
        )
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` for the replica.
    pub fn replica_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.replica_port
        )
    }

    /// TCP port of the primary on 127.0.0.1.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// TCP port of the replica on 127.0.0.1.
    pub fn replica_port(&self) -> u16 {
        self.replica_port
    }

    /// Runs SQL on the primary with `psql -X -A -t -q -v ON_ERROR_STOP=1`
    /// and returns its trimmed stdout (rows on lines, columns joined by `|`;
    /// empty for statements without rows).
    pub fn primary_sql(&self, sql: &str) -> LabResult<String> {
        self.sql(Role::Primary, sql)
    }

    /// Runs SQL on the replica, like [`primary_sql`](Self::primary_sql).
    pub fn replica_sql(&self, sql: &str) -> LabResult<String> {
        self.sql(Role::Replica, sql)
    }

    /// Pauses WAL replay on the replica (`pg_wal_replay_pause()`): it keeps
    /// receiving WAL from the primary but stops applying it, so writes on
    /// the primary become replay lag.
    pub fn pause_replay(&self) -> LabResult<()> {
        self.replica_sql("SELECT pg_wal_replay_pause()").map(|_| ())
    }

    /// Resumes WAL replay on the replica (`pg_wal_replay_resume()`).
    pub fn resume_replay(&self) -> LabResult<()> {
        self.replica_sql("SELECT pg_wal_replay_resume()")
            .map(|_| ())
    }

    /// Stops the replica (`pg_ctl stop -m fast`, waits).
    pub fn stop_replica(&self) -> LabResult<()> {
        self.pg_ctl_stop(Role::Replica, "fast")
    }

    /// Starts the replica again (`pg_ctl start -w`). It reconnects to the
    /// primary by itself; use [`wait_for_streaming`](Self::wait_for_streaming)
    /// to wait for that.
    pub fn start_replica(&self) -> LabResult<()> {
        self.pg_ctl_start(Role::Replica)
    }

    /// Stops the primary (`pg_ctl stop -m fast`, waits).
    pub fn stop_primary(&self) -> LabResult<()> {
        self.pg_ctl_stop(Role::Primary, "fast")
    }

    /// Starts the primary again (`pg_ctl start -w`). The replica reconnects
    /// within about a second (`wal_retrieve_retry_interval = 1s`).
    pub fn start_primary(&self) -> LabResult<()> {
        self.pg_ctl_start(Role::Primary)
    }

    /// Stops the primary at once (`pg_ctl stop -m immediate`): what losing
    /// its region looks like. WAL not yet sent to the replica is lost to it.
    pub fn stop_primary_immediately(&self) -> LabResult<()> {
        self.pg_ctl_stop(Role::Primary, "immediate")
    }

    /// Promotes the replica (`SELECT pg_promote()`, which waits until the
    /// promotion is done): it replays what it received, leaves recovery and
    /// accepts writes on a new timeline.
    pub fn promote_replica(&self) -> LabResult<()> {
        let done = self.replica_sql("SELECT pg_promote(true, 60)")?;
        if done == "t" {
            Ok(())
        } else {
            Err(LabError::Command {
                command: "pg_promote (replica)".to_string(),
                stderr: format!("returned {done:?}"),
            })
        }
    }

    /// Failback: rebuilds the server on the primary's port as a streaming
    /// replica of the (promoted) server on the replica's port: stops it if
    /// it runs, replaces its data directory with a `pg_basebackup` of the
    /// promoted side, starts it and waits until it streams.
    pub fn rebuild_primary_as_replica(&self) -> LabResult<()> {
        if self.dir_of(Role::Primary).join("postmaster.pid").exists() {
            self.pg_ctl_stop(Role::Primary, "immediate")?;
        }
        let dir = self.dir_of(Role::Primary);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| LabError::io(format!("remove {}", dir.display()), e))?;
        self.base_backup_of(Role::Replica, Role::Primary, "rpo_lab_failback")?;
        self.pg_ctl_start(Role::Primary)?;
        self.wait_for_primary_streaming(Duration::from_secs(30))
    }

    /// PID of the replica's postmaster (first line of
    /// `replica/postmaster.pid`); fails if the replica is not running.
    pub fn replica_postmaster_pid(&self) -> LabResult<u32> {
        let path = self.dir_of(Role::Replica).join("postmaster.pid");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LabError::io(format!("read {}", path.display()), e))?;
        let first = text.lines().next().unwrap_or("").trim();
        first.parse().map_err(|_| {
            LabError::io(
                format!("read {}", path.display()),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad pid line {first:?}"),
                ),
            )
        })
    }

    /// The pair's temp directory (holds `primary/`, `replica/`,
    /// `primary.log`, `replica.log`).
    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    /// The primary's data directory (`<data_dir>/primary`).
    pub fn primary_data_dir(&self) -> PathBuf {
        self.dir_of(Role::Primary)
    }

    /// The replica's data directory (`<data_dir>/replica`).
    pub fn replica_data_dir(&self) -> PathBuf {
        self.dir_of(Role::Replica)
    }
}

impl Drop for PostgresPair {
    fn drop(&mut self) {
        for role in [Role::Replica, Role::Primary] {
            if self.dir_of(role).join("postmaster.pid").exists() {
                let _ = self.pg_ctl_stop(role, "immediate");
            }
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var("RPO_LAB_KEEP").is_ok_and(|v| v == "1") {
                let kept = dir.keep();
                eprintln!("rpo lab: RPO_LAB_KEEP=1, keeping {}", kept.display());
            } else {
                // Errors removing it are not worth a panic in drop.
                let _ = dir.close();
            }
        }
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never sends a
/// byte, to test client timeouts. Accepted sockets stay open while it lives;
/// dropping it stops its thread and closes them.
#[derive(Debug)]
pub struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// Binds a free port on 127.0.0.1 and starts accepting on a thread.
    pub fn start() -> io::Result<SilentServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name(format!("silent-server-{port}"))
            .spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => held.push(stream),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
                drop(held);
            })?;
        Ok(SilentServer {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The repository's root (where `alerts/`, `dashboards/`, `deploy/`, `docs/`
/// and the README live), for tests that check the shipped files.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
