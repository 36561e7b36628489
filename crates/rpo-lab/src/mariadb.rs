//! MariaDB for the lab: a primary with a binlog replica ([`MariadbPair`]),
//! for the `mysql` kind's integration tests and the demo.
//!
//! Two `mariadbd` child processes on 127.0.0.1, on ports from
//! [`free_port`](super::free_port), in their own temporary directory
//! (`rpo-lab-mariadb-*`, under the system temp dir) holding both data
//! directories (`primary/`, `replica/`), their sockets, pid files and logs
//! (`primary.log`, `replica.log`). The system's own MariaDB (port 3306) is
//! never touched: nothing here reads a defaults file (`--no-defaults`).
//!
//! The data directory is made once per pair with `mariadb-install-db` and
//! copied for the replica. When this process is root, `mariadbd` is started
//! with `--user=mysql`: it switches to the `mysql` OS user itself, so the
//! child's pid is the server's and signals reach it directly. The root
//! user logs in over TCP without a password; user `repl` (password `repl`)
//! replicates; database `rpo` exists on both.
//!
//! The replica replicates with `MASTER_USE_GTID=slave_pos` and
//! `MASTER_CONNECT_RETRY=1` from an empty `gtid_slave_pos`, so it replays
//! the primary's binary log from its start. Dropping the pair kills both
//! servers (SIGKILL by their own pids, which also ends a SIGSTOPped one) and
//! removes the directory, unless `RPO_LAB_KEEP=1` is set. Everything is
//! synchronous, like the other labs; the binaries are found on `PATH` or in
//! `/usr/sbin` (`mariadbd`, `mariadb-install-db`, `mariadb`); if they are
//! missing, run `scripts/install-deps.sh`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    free_port, lab_parent_dir, log_tail, retry_port_conflicts, run, running_as_root, LabError,
    LabResult,
};

/// The replication user's name and password on the lab's primary.
pub const REPLICATION_USER: &str = "repl";
/// The database the lab creates on the primary (replicated to the replica).
pub const DATABASE: &str = "rpo";

/// How a lab pair is set up.
#[derive(Debug, Clone, Default)]
pub struct MariadbOptions {
    /// Serve TLS too, with a CA of the lab's own ([`MariadbPair::ca_file`];
    /// the certificate names 127.0.0.1 and localhost); the URLs then ask for
    /// it (`?require_ssl=true`).
    pub tls: bool,
}

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A MariaDB binary, on `PATH` or in the sbin directories (`mariadbd` lives
/// in `/usr/sbin`, which a non-root `PATH` may lack).
fn binary(name: &str) -> LabResult<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| LabError::Io {
            context: format!("MariaDB is not installed (no {name}): run scripts/install-deps.sh"),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
}

/// Which of the two servers.
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

    fn server_id(self) -> u32 {
        match self {
            Role::Primary => 1,
            Role::Replica => 2,
        }
    }
}

/// One `mariadbd` child process.
#[derive(Debug)]
struct Server {
    port: u16,
    child: Option<Child>,
}

/// A real MariaDB primary and a binlog replica on 127.0.0.1 (see the
/// module documentation).
#[derive(Debug)]
pub struct MariadbPair {
    server_binary: PathBuf,
    client_binary: PathBuf,
    as_mysql: bool,
    options: MariadbOptions,
    /// `None` only during drop.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    primary: Server,
    replica: Server,
}

impl MariadbPair {
    /// Creates both servers, sets up replication and waits (up to 60 s)
    /// until the replica has caught up with the primary. Takes about 5 s.
    /// If a server could not bind its port (taken since [`free_port`]
    /// picked it), the whole start is retried once with new ports.
    pub fn start() -> LabResult<MariadbPair> {
        Self::start_with(MariadbOptions::default())
    }

    /// Like [`start`](Self::start), set up as `options` say.
    pub fn start_with(options: MariadbOptions) -> LabResult<MariadbPair> {
        retry_port_conflicts(2, || Self::start_once(options.clone()))
    }

    fn start_once(options: MariadbOptions) -> LabResult<MariadbPair> {
        let server_binary = binary("mariadbd")?;
        let install_binary = binary("mariadb-install-db")?;
        let client_binary = binary("mariadb")?;
        let as_mysql = running_as_root();
        let parent = lab_parent_dir(as_mysql);
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-mariadb-")
            .tempdir_in(&parent)
            .map_err(|e| LabError::io(format!("create temp dir in {}", parent.display()), e))?;
        let root = dir.path().to_path_buf();
        // From here on, Drop cleans up whatever was started.
        let mut pair = MariadbPair {
            server_binary,
            client_binary,
            as_mysql,
            options,
            dir: Some(dir),
            root,
            primary: Server {
                port: free_port(),
                child: None,
            },
            replica: Server {
                port: free_port(),
                child: None,
            },
        };
        pair.install(&install_binary)?;
        if pair.options.tls {
            pair.make_certificates()?;
        }
        pair.spawn(Role::Primary)?;
        pair.spawn(Role::Replica)?;
        pair.wait_until_answering(Role::Primary)?;
        pair.primary_sql(&format!(
            "CREATE USER '{REPLICATION_USER}'@'%' IDENTIFIED BY '{REPLICATION_USER}';
             GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'%';
             CREATE DATABASE {DATABASE}"
        ))?;
        pair.wait_until_answering(Role::Replica)?;
        pair.replica_sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port},
                 MASTER_USER='{REPLICATION_USER}', MASTER_PASSWORD='{REPLICATION_USER}',
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
             START SLAVE",
            port = pair.primary.port
        ))?;
        pair.wait_for_replication(Duration::from_secs(60))?;
        Ok(pair)
    }

    /// One data directory made by `mariadb-install-db`, copied for the
    /// replica (MariaDB keeps no server identity in it).
    fn install(&self, install_binary: &Path) -> LabResult<()> {
        if self.as_mysql {
            let mut chown = Command::new("chown");
            chown
                .arg("mysql:mysql")
                .arg(&self.root)
                .stdin(Stdio::null());
            run("chown", chown)?;
        }
        let primary = self.data_dir(Role::Primary);
        let tmp = self.tmp_dir();
        std::fs::create_dir(&tmp)
            .map_err(|e| LabError::io(format!("create {}", tmp.display()), e))?;
        if self.as_mysql {
            let mut chown = Command::new("chown");
            chown.arg("mysql:mysql").arg(&tmp).stdin(Stdio::null());
            run("chown", chown)?;
        }
        let mut cmd = Command::new(install_binary);
        cmd.arg("--no-defaults");
        if self.as_mysql {
            cmd.arg("--user=mysql");
        }
        cmd.arg(format!("--datadir={}", primary.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--innodb-log-file-size=8M",
            ])
            .current_dir(&self.root)
            .stdin(Stdio::null());
        run("mariadb-install-db", cmd)?;
        let mut copy = Command::new("cp");
        copy.arg("-a")
            .arg(&primary)
            .arg(self.data_dir(Role::Replica))
            .stdin(Stdio::null());
        run("cp (replica data directory)", copy).map(|_| ())
    }

    /// The lab CA and a server certificate, readable by the servers.
    fn make_certificates(&self) -> LabResult<()> {
        super::make_certificates(&self.root)?;
        if self.as_mysql {
            let mut chown = Command::new("chown");
            chown
                .arg("mysql:mysql")
                .args(["ca.crt", "server.crt", "server.key"])
                .current_dir(&self.root)
                .stdin(Stdio::null());
            run("chown (certificates)", chown)?;
        }
        Ok(())
    }

    /// The lab CA (PEM) the servers' certificate is signed by, with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.root.join("ca.crt"))
    }

    fn server(&self, role: Role) -> &Server {
        match role {
            Role::Primary => &self.primary,
            Role::Replica => &self.replica,
        }
    }

    fn server_mut(&mut self, role: Role) -> &mut Server {
        match role {
            Role::Primary => &mut self.primary,
            Role::Replica => &mut self.replica,
        }
    }

    /// The servers' own temporary directory: a server deletes leftover
    /// `#sql*` files in its tmpdir when it starts, so sharing /tmp would
    /// break other servers' temporary tables (the system's instance too).
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn data_dir(&self, role: Role) -> PathBuf {
        self.root.join(role.name())
    }

    fn log_of(&self, role: Role) -> PathBuf {
        self.root.join(format!("{}.log", role.name()))
    }

    fn spawn(&mut self, role: Role) -> LabResult<()> {
        let server = self.server(role);
        let mut cmd = Command::new(&self.server_binary);
        // --no-defaults must come first: no my.cnf, so nothing of the
        // system's own instance applies.
        cmd.arg("--no-defaults");
        if self.as_mysql {
            cmd.arg("--user=mysql");
        }
        cmd.arg(format!("--datadir={}", self.data_dir(role).display()))
            .arg(format!("--port={}", server.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                self.root.join(format!("{}.sock", role.name())).display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.root.join(format!("{}.pid", role.name())).display()
            ))
            .arg(format!("--log-error={}", self.log_of(role).display()))
            .arg(format!("--tmpdir={}", self.tmp_dir().display()))
            .arg(format!("--server-id={}", role.server_id()))
            .args([
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--skip-name-resolve",
                "--innodb-log-file-size=8M",
                "--innodb-buffer-pool-size=32M",
                "--performance-schema=OFF",
                // Test-only speed: no fsync per commit.
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
            ]);
        if role == Role::Replica {
            cmd.args(["--read-only=ON", "--relay-log=relay-bin"]);
        }
        if self.options.tls {
            for (option, file) in [
                ("--ssl-ca", "ca.crt"),
                ("--ssl-cert", "server.crt"),
                ("--ssl-key", "server.key"),
            ] {
                cmd.arg(format!("{option}={}", self.root.join(file).display()));
            }
        }
        cmd.current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: format!("mariadbd ({})", role.name()),
            source,
        })?;
        self.server_mut(role).child = Some(child);
        Ok(())
    }

    /// Waits until the server answers `SELECT 1`, failing early (with its
    /// log) when it exits.
    fn wait_until_answering(&mut self, role: Role) -> LabResult<()> {
        let started = Instant::now();
        loop {
            let exited = match self.server_mut(role).child.as_mut() {
                None => true,
                Some(child) => !matches!(child.try_wait(), Ok(None)),
            };
            if exited {
                let log = self.log_of(role);
                return Err(LabError::ServerStart {
                    server: role.name(),
                    stderr: "mariadbd exited".to_string(),
                    log_tail: log_tail(&log, 20),
                    log,
                });
            }
            if self.sql(role, "SELECT 1").is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let log = self.log_of(role);
                return Err(LabError::Timeout {
                    what: format!("the {} MariaDB to answer", role.name()),
                    waited: started.elapsed(),
                    log_tail: log_tail(&log, 20),
                    log,
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn sql(&self, role: Role, sql: &str) -> LabResult<String> {
        let mut cmd = Command::new(&self.client_binary);
        // --no-defaults first: never a ~/.my.cnf or the system's settings.
        cmd.args([
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-P",
            &self.server(role).port.to_string(),
            "-u",
            "root",
            "--connect-timeout=5",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ])
        .current_dir(&self.root)
        .stdin(Stdio::null());
        let out = run(&format!("mariadb ({})", role.name()), cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs SQL on the primary as root with the `mariadb` client (`--batch
    /// --skip-column-names`) and returns its trimmed stdout (rows on lines,
    /// columns joined by tabs).
    pub fn primary_sql(&self, sql: &str) -> LabResult<String> {
        self.sql(Role::Primary, sql)
    }

    /// Runs SQL on the replica, like [`primary_sql`](Self::primary_sql).
    pub fn replica_sql(&self, sql: &str) -> LabResult<String> {
        self.sql(Role::Replica, sql)
    }

    /// Waits until both replica threads run and the replica has executed
    /// everything the primary has binlogged (`gtid_slave_pos` equals the
    /// primary's `gtid_binlog_pos`).
    pub fn wait_for_replication(&self, timeout: Duration) -> LabResult<()> {
        let started = Instant::now();
        loop {
            let seen = self.replication_state();
            if matches!(&seen, Ok((true, source, replica)) if source == replica) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let log = self.log_of(Role::Replica);
                return Err(LabError::Timeout {
                    what: format!("the replica to catch up (last seen: {seen:?})"),
                    waited: started.elapsed(),
                    log_tail: log_tail(&log, 20),
                    log,
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// (both threads running, primary `gtid_binlog_pos`, replica `gtid_slave_pos`).
    fn replication_state(&self) -> LabResult<(bool, String, String)> {
        let source = self.primary_sql("SELECT @@gtid_binlog_pos")?;
        let status = self.replica_sql("SHOW SLAVE STATUS")?;
        let running = status.split('\t').filter(|f| *f == "Yes").count() >= 2;
        let replica = self.replica_sql("SELECT @@gtid_slave_pos")?;
        Ok((running, source, replica))
    }

    /// `mysql://root@127.0.0.1:PORT/rpo` for the primary (with
    /// `?require_ssl=true` when the pair serves TLS).
    pub fn primary_url(&self) -> String {
        self.url(self.primary.port)
    }

    /// The replica's URL, like [`primary_url`](Self::primary_url).
    pub fn replica_url(&self) -> String {
        self.url(self.replica.port)
    }

    fn url(&self, port: u16) -> String {
        let tls = if self.options.tls {
            "?require_ssl=true"
        } else {
            ""
        };
        format!("mysql://root@127.0.0.1:{port}/{DATABASE}{tls}")
    }

    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }

    /// `STOP SLAVE SQL_THREAD`: the replica keeps receiving (the I/O thread
    /// runs) but stops executing, so writes on the primary become lag.
    pub fn stop_sql_thread(&self) -> LabResult<()> {
        self.replica_sql("STOP SLAVE SQL_THREAD").map(|_| ())
    }

    pub fn start_sql_thread(&self) -> LabResult<()> {
        self.replica_sql("START SLAVE SQL_THREAD").map(|_| ())
    }

    /// `STOP SLAVE IO_THREAD`: the link is cut; nothing new is received.
    pub fn stop_io_thread(&self) -> LabResult<()> {
        self.replica_sql("STOP SLAVE IO_THREAD").map(|_| ())
    }

    pub fn start_io_thread(&self) -> LabResult<()> {
        self.replica_sql("START SLAVE IO_THREAD").map(|_| ())
    }

    /// Shuts the primary down (SIGTERM to its pid, waits up to 30 s, then
    /// SIGKILL).
    pub fn stop_primary(&mut self) -> LabResult<()> {
        self.stop(Role::Primary)
    }

    /// Kills the primary (SIGKILL by its own pid): the region is lost, and
    /// nothing more leaves it. Not restarted by this lab.
    pub fn kill_primary(&mut self) -> LabResult<()> {
        if let Some(mut child) = self.primary.child.take() {
            child
                .kill()
                .map_err(|e| LabError::io("kill the primary", e))?;
            child
                .wait()
                .map_err(|e| LabError::io("wait for the killed primary", e))?;
        }
        Ok(())
    }

    /// Promotes the replica the way an operator does by hand: stops
    /// replicating and forgets its source (`STOP SLAVE; RESET SLAVE ALL`,
    /// which also discards relay logs not yet executed), then opens it to
    /// writes (`SET GLOBAL read_only=OFF`).
    pub fn promote_replica(&self) -> LabResult<()> {
        self.replica_sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF")
            .map(|_| ())
    }

    /// A planned switchover: the primary shuts down once every replica has
    /// received its binary log (`SHUTDOWN WAIT FOR ALL SLAVES`, MariaDB ≥
    /// 10.4), the replica executes what it received (its `gtid_slave_pos`
    /// stops moving), then it is promoted ([`promote_replica`](Self::promote_replica)).
    /// Takes `&self` (the pair may be shared): the primary's process is
    /// reaped when the pair is dropped.
    pub fn switch_over(&self) -> LabResult<()> {
        // The connection may drop while the server goes down: that is the
        // point, so only whether the server stopped answering counts.
        let _ = self.primary_sql("SHUTDOWN WAIT FOR ALL SLAVES");
        let started = Instant::now();
        while self.primary_sql("SELECT 1").is_ok() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(LabError::Command {
                    command: "SHUTDOWN WAIT FOR ALL SLAVES (primary)".to_string(),
                    stderr: "the primary still answers after 30 s".to_string(),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut last = self.replica_sql("SELECT @@gtid_slave_pos")?;
        loop {
            thread::sleep(Duration::from_millis(500));
            let now = self.replica_sql("SELECT @@gtid_slave_pos")?;
            if now == last || started.elapsed() > Duration::from_secs(30) {
                break;
            }
            last = now;
        }
        self.promote_replica()
    }

    /// Failback: makes the (restarted) old primary a read-only replica of
    /// the promoted replica, replaying the promoted side's binary log from
    /// its start (`MASTER_USE_GTID=slave_pos`, its `gtid_slave_pos` empty).
    pub fn replicate_primary_from_replica(&self) -> LabResult<()> {
        self.primary_sql(&format!(
            "SET GLOBAL read_only=ON;
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port},
                 MASTER_USER='{REPLICATION_USER}', MASTER_PASSWORD='{REPLICATION_USER}',
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
             START SLAVE",
            port = self.replica.port
        ))
        .map(|_| ())
    }

    /// Starts the primary again on its port and waits until it answers; the
    /// replica reconnects within about a second (`MASTER_CONNECT_RETRY=1`).
    pub fn start_primary(&mut self) -> LabResult<()> {
        self.spawn(Role::Primary)?;
        self.wait_until_answering(Role::Primary)
    }

    /// Freezes the replica (SIGSTOP): it accepts connections but answers
    /// nothing.
    pub fn sigstop_replica(&self) -> LabResult<()> {
        self.signal(Role::Replica, "STOP")
    }

    /// Thaws a frozen replica (SIGCONT).
    pub fn sigcont_replica(&self) -> LabResult<()> {
        self.signal(Role::Replica, "CONT")
    }

    /// The pid of a running server.
    fn pid(&self, role: Role) -> LabResult<u32> {
        self.server(role)
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| LabError::Command {
                command: format!("mariadbd ({})", role.name()),
                stderr: "not running".to_string(),
            })
    }

    /// Sends a signal to one server, by its own (positive) pid.
    fn signal(&self, role: Role, signal: &str) -> LabResult<()> {
        let pid = self.pid(role)?;
        let mut cmd = Command::new("kill");
        cmd.arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdin(Stdio::null());
        run(&format!("kill -{signal} ({})", role.name()), cmd).map(|_| ())
    }

    fn stop(&mut self, role: Role) -> LabResult<()> {
        if self.server(role).child.is_none() {
            return Ok(());
        }
        self.signal(role, "TERM")?;
        let started = Instant::now();
        let server = self.server_mut(role);
        if let Some(child) = server.child.as_mut() {
            while matches!(child.try_wait(), Ok(None)) {
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        server.child = None;
        Ok(())
    }

    /// The pair's temp directory.
    pub fn data_root(&self) -> &Path {
        &self.root
    }
}

impl Drop for MariadbPair {
    fn drop(&mut self) {
        for server in [&mut self.replica, &mut self.primary] {
            if let Some(mut child) = server.child.take() {
                // SIGKILL by the child's own pid; also ends a stopped one.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
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
