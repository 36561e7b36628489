//! The `rpo-exporter` binary: parses the command line, sets up logging,
//! loads the configuration and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use rpo_exporter::check::{self, CheckOptions, Output};
use rpo_exporter::config::Config;
use rpo_exporter::logging::{self, LogFormat};
use rpo_exporter::readiness::{Mode, VerdictJson};

/// jemalloc, built to return freed memory to the system within about a
/// second (`.cargo/config.toml`): after a burst of connections the daemon
/// goes back near its resting size (glibc's malloc kept it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Measures the recovery-point exposure of replicated stores and answers
/// GO/NO-GO for a failover.
#[derive(Parser, Debug)]
#[command(name = "rpo-exporter", version, about)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve HTTP on (overrides web.listen_address): host:port,
    /// or :port for every interface.
    #[arg(long = "web.listen-address", global = true, value_name = "ADDR")]
    listen_address: Option<String>,
    /// Path of the metrics endpoint (overrides web.telemetry_path).
    #[arg(long = "web.telemetry-path", global = true, value_name = "PATH")]
    telemetry_path: Option<String>,
    /// Open HTTP connections at most; at the cap the longest-idle one is
    /// closed to make room. Lowered to half the open-file soft limit.
    #[arg(long = "web.max-connections", global = true, value_name = "N",
          default_value_t = rpo_exporter::http::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Time a client has to send a request's headers, and how long a
    /// kept-alive connection may idle between requests (1s to 5m).
    #[arg(long = "web.header-read-timeout", global = true, value_name = "DURATION",
          default_value = "15s", value_parser = parse_header_timeout)]
    header_read_timeout: Duration,
    /// TLS and basic authentication, in the Prometheus exporter toolkit's
    /// web configuration format (YAML; see the README).
    #[arg(long = "web.config.file", global = true, value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Serve every endpoint under this path (e.g. /rpo behind a proxy).
    #[arg(long = "web.route-prefix", global = true, value_name = "PATH",
          default_value = "/", value_parser = rpo_exporter::http::RoutePrefix::parse)]
    route_prefix: rpo_exporter::http::RoutePrefix,
    /// Log level: error, warn, info, debug, trace, off, or filter directives
    /// each ending in a level (info,rpo_exporter=debug).
    #[arg(long = "log.level", global = true, default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long = "log.format", global = true, default_value = "logfmt", value_parser = ["logfmt", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Poll every target and serve HTTP (the default).
    Serve,
    /// Print the failover verdict: exit 0 GO, 1 NO-GO, 2 bad config or usage.
    Check(CheckArgs),
    /// Check the configuration without touching any target: exit 0 or 2.
    Validate(ValidateArgs),
    /// Run a failover drill: poll and write heartbeats, show the verdict,
    /// wait for the group's promotions, write the report: exit 0 when every
    /// measured loss is within its budget, 1 otherwise or on timeout, 2 on
    /// bad config or usage.
    Drill(DrillArgs),
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// Check everything but the secrets given as `*_env` or `*_file`:
    /// neither the environment nor those files are read (for CI and pull
    /// requests, where the secrets are absent). Inline secrets are still
    /// checked. A config that passes may still fail where the secrets are.
    #[arg(long = "no-secrets")]
    no_secrets: bool,
}

#[derive(Args, Debug)]
struct DrillArgs {
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// Where to write drill-report.md, .json and .html.
    #[arg(long, value_name = "DIR", default_value = ".")]
    report: PathBuf,
    /// How long to wait for the promotions (e.g. 30m).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// planned (a switchover or drill) or unplanned (the source region is gone).
    #[arg(long, default_value = "planned", value_parser = ["planned", "unplanned"])]
    mode: String,
    /// table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Keep polling until GO or this long has passed (e.g. 2m).
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Ask a running exporter (its base URL) instead of polling.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    from: Option<String>,
    /// Read the gate from Prometheus (its base URL): NO-GO when any
    /// exporter's verdict for the group is 0, missing or stale, or while any
    /// failover_gate="block" alert for the group is pending or firing.
    #[arg(long, value_name = "URL", conflicts_with_all = ["config", "from"])]
    prometheus: Option<String>,
    /// With --prometheus: only the exporters in this region (repeat, or
    /// comma-separate). In an unplanned failover, the surviving region.
    #[arg(
        long,
        value_name = "REGION",
        requires = "prometheus",
        value_delimiter = ','
    )]
    region: Vec<String>,
    /// With --prometheus: a verdict sample older than this is stale (NO-GO).
    /// Set it to 2-3 times your scrape_interval.
    #[arg(long = "max-sample-age", value_name = "DURATION", requires = "prometheus", value_parser = parse_duration)]
    max_sample_age: Option<Duration>,
    /// With --from or --prometheus: PEM CA certificates to trust besides the
    /// public roots (an exporter served with --web.config.file TLS).
    #[arg(long = "http.ca-file", value_name = "FILE")]
    http_ca_file: Option<PathBuf>,
    /// With --from or --prometheus: the basic-authentication user.
    #[arg(long = "http.username", value_name = "USER")]
    http_username: Option<String>,
    /// With --http.username: a file holding its password (never a flag:
    /// `ps` would show it).
    #[arg(long = "http.password-file", value_name = "FILE")]
    http_password_file: Option<PathBuf>,
}

/// `--wait`: a duration of at most a day (a deadline that cannot overflow).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let wait = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s or 2m: {e}"))?;
    if wait > Duration::from_secs(86_400) {
        return Err(format!("`{s}` is longer than a day; wait at most 1d"));
    }
    Ok(wait)
}

fn parse_header_timeout(s: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 15s: {e}"))?;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout) {
        return Err(format!("`{s}`: use 1s to 5m"));
    }
    Ok(timeout)
}

/// How long the process waits, once stopped, for work it cannot cancel
/// (a host-name lookup runs on a blocking thread until the resolver gives
/// up, seconds later): it exits without it.
const EXIT_GRACE: Duration = Duration::from_millis(200);

const EXIT_NO_GO: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format: LogFormat = cli.log_format.parse().expect("clap checked the value");
    if let Err(problem) = logging::init(&cli.log_level, format) {
        eprintln!("rpo-exporter: {problem}");
        return ExitCode::from(EXIT_USAGE);
    }
    // Every flag is checked whatever the command: a misspelt global flag
    // is a usage error, never silently ignored.
    let overrides = match WebOverrides::of(&cli) {
        Ok(overrides) => overrides,
        Err(problem) => {
            eprintln!("rpo-exporter: {problem}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rpo-exporter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async_main(cli, overrides));
    // Dropping the runtime would wait for every blocking thread; a hung
    // DNS lookup would hold SIGTERM for the resolver's whole timeout.
    runtime.shutdown_timeout(EXIT_GRACE);
    code
}

async fn async_main(cli: Cli, overrides: WebOverrides) -> ExitCode {
    match cli.command {
        None | Some(Command::Serve) => serve(&cli, overrides).await,
        Some(Command::Validate(ref args)) => {
            // The web configuration names key files and password hashes:
            // read with the secrets, not without them.
            let loaded = if args.no_secrets {
                load_with(&cli, Config::load_without_secrets)
            } else {
                load(&cli).and_then(|config| load_web(&cli).map(|_| config))
            };
            match loaded {
                Ok(config) => {
                    println!(
                        "{}: valid ({} groups, {} targets{})",
                        config.source.display(),
                        config.groups.len(),
                        config.targets.len(),
                        if args.no_secrets {
                            "; secrets given as *_env or *_file not read"
                        } else {
                            ""
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Some(Command::Drill(ref args)) => match load(&cli) {
            Ok(config) => ExitCode::from(
                rpo_exporter::drill::run(
                    config,
                    rpo_exporter::drill::DrillOptions {
                        group: args.group.clone(),
                        report_dir: args.report.clone(),
                        timeout: args.timeout,
                    },
                )
                .await,
            ),
            Err(code) => code,
        },
        Some(Command::Check(ref args)) => {
            let remote = args.from.is_some() || args.prometheus.is_some();
            let given = args.http_ca_file.is_some()
                || args.http_username.is_some()
                || args.http_password_file.is_some();
            if given && !remote {
                eprintln!("rpo-exporter check: --http.ca-file, --http.username and --http.password-file apply to --from or --prometheus only");
                return ExitCode::from(EXIT_USAGE);
            }
            let access = match check::RemoteAccess::from_flags(
                args.http_ca_file.clone(),
                args.http_username.clone(),
                args.http_password_file.clone(),
            ) {
                Ok(access) => access,
                Err(problem) => return check_usage_error(problem),
            };
            let options = CheckOptions {
                group: args.group.clone(),
                mode: args.mode.parse::<Mode>().expect("clap checked the value"),
                wait: args.wait,
                access,
            };
            let output: Output = args.output.parse().expect("clap checked the value");
            let verdict = match check_verdict(&cli, args, &options).await {
                Ok(verdict) => verdict,
                Err(code) => return code,
            };
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&verdict).unwrap_or_default()
                ),
                Output::Table => print!("{}", check::render_table(&verdict)),
            }
            if verdict.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NO_GO)
            }
        }
    }
}

/// The verdict `check` asks for: from a running exporter (`--from`), from
/// Prometheus (`--prometheus`) or by polling the configured targets once.
/// A problem is printed and becomes exit code 2.
async fn check_verdict(
    cli: &Cli,
    args: &CheckArgs,
    options: &CheckOptions,
) -> Result<VerdictJson, ExitCode> {
    let answer = if let Some(url) = &args.from {
        match check::parse_base_url("--from", url) {
            Ok(_) => check::check_remote(url, options, Duration::from_secs(10)).await,
            Err(problem) => Err(problem),
        }
    } else if let Some(url) = &args.prometheus {
        let gate = check::PrometheusGate {
            regions: args.region.clone(),
            max_sample_age: args.max_sample_age.unwrap_or(check::DEFAULT_MAX_SAMPLE_AGE),
        };
        match check::parse_base_url("--prometheus", url) {
            Ok(base) => {
                check::check_prometheus(&base, options, &gate, Duration::from_secs(10)).await
            }
            Err(problem) => Err(problem),
        }
    } else {
        check::check_config(load(cli)?, options).await
    };
    answer.map_err(check_usage_error)
}

/// A problem with what `check` was asked: printed, exit code 2.
fn check_usage_error(problem: impl std::fmt::Display) -> ExitCode {
    eprintln!("rpo-exporter check: {problem}");
    ExitCode::from(EXIT_USAGE)
}

/// Loads the configuration named by `--config`; prints the problem and
/// returns exit code 2 when it is missing or invalid.
fn load(cli: &Cli) -> Result<Config, ExitCode> {
    load_with(cli, Config::load)
}

fn load_with(
    cli: &Cli,
    load: fn(&std::path::Path) -> Result<Config, rpo_exporter::config::ConfigError>,
) -> Result<Config, ExitCode> {
    let Some(path) = &cli.config else {
        eprintln!("rpo-exporter: --config FILE is required");
        return Err(ExitCode::from(EXIT_USAGE));
    };
    load(path).map_err(|problem| {
        eprintln!("rpo-exporter: {problem}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// `--web.config.file`, read and checked (TLS files, bcrypt hashes);
/// prints the problem and returns exit code 2 when it does not load.
fn load_web(cli: &Cli) -> Result<Option<Arc<rpo_exporter::web_config::WebSecurity>>, ExitCode> {
    let Some(path) = &cli.web_config_file else {
        return Ok(None);
    };
    match rpo_exporter::web_config::WebSecurity::load(path) {
        Ok(security) => Ok(Some(Arc::new(security))),
        Err(problem) => {
            eprintln!("rpo-exporter: {problem}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// The web settings the command line overrides in the file's.
#[derive(Clone)]
struct WebOverrides {
    listen_address: Option<std::net::SocketAddr>,
    telemetry_path: Option<String>,
}

impl WebOverrides {
    fn of(cli: &Cli) -> Result<WebOverrides, String> {
        let listen_address = match &cli.listen_address {
            None => None,
            Some(addr) => Some(
                rpo_exporter::config::parse_listen_address(addr).ok_or_else(|| {
                    format!(
                        "--web.listen-address `{addr}` is not an address like 0.0.0.0:9798, [::]:9798 or :9798 (every interface)"
                    )
                })?,
            ),
        };
        if let Some(path) = &cli.telemetry_path {
            if !path.starts_with('/') {
                return Err("--web.telemetry-path must start with '/'".to_string());
            }
        }
        Ok(WebOverrides {
            listen_address,
            telemetry_path: cli.telemetry_path.clone(),
        })
    }

    fn apply(&self, config: &mut Config) {
        if let Some(addr) = self.listen_address {
            config.web.listen_address = addr;
        }
        if let Some(path) = &self.telemetry_path {
            config.web.telemetry_path = path.clone();
        }
    }
}

/// `--web.max-connections`, lowered to half the open-file soft limit so
/// HTTP clients can never take the descriptors the targets' connections
/// and the listener need.
fn connection_cap(asked: usize) -> usize {
    match open_files_soft_limit() {
        Some(limit) if asked as u64 > limit / 2 => {
            let cap = (limit / 2).max(1) as usize;
            tracing::warn!(
                asked,
                open_files_limit = limit,
                using = cap,
                "--web.max-connections lowered to half the open-file limit; raise the limit (LimitNOFILE=) to allow more"
            );
            cap
        }
        _ => asked,
    }
}

/// How many connections the kernel may hold for `accept` (the listen
/// backlog; the kernel caps it at `net.core.somaxconn`, 4,096 by default).
/// Tokio's default is 1,024: in a burst of more new connections than that
/// (2,000 sockets at once in `web_limits`), the kernel drops the SYNs that
/// find the queue full (`ListenOverflows`), and a scraper among them is
/// answered only after its retry a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// The HTTP listener: bound like `TcpListener::bind` (address reuse on
/// restart), with [`LISTEN_BACKLOG`].
fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the open-file soft limit to the hard limit, when it is lower
/// (a shell's default 1,024 against a hard 524,288, say): targets keep
/// connections to their servers (shared where they name the same server
/// and settings). Nothing is called when the two are equal (systemd's
/// `LimitNOFILE=N` sets both), so a seccomp filter that denies `setrlimit`
/// (the unit's `~@resources`) is never reached.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(soft), hard) = (limit.current, limit.maximum) {
        if hard.is_none_or(|hard| hard > soft) {
            let raised = Rlimit {
                current: hard,
                maximum: hard,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::info!(
                    from = soft,
                    to = hard.map_or_else(|| "unlimited".to_string(), |h| h.to_string()),
                    "raised the open-file soft limit to the hard limit"
                ),
                Err(error) => {
                    tracing::debug!(%error, "could not raise the open-file soft limit")
                }
            }
        }
    }
}

/// Sets the descriptor budget of the connections to monitored servers: the
/// open-file limit minus HTTP's connections, its reserve and a margin, so
/// the targets can never take the listener's descriptors. Warns when it is
/// lower than the number of targets (targets on distinct servers need at
/// least one connection each).
fn set_connection_budget(targets: usize, max_connections: usize) {
    let Some(limit) = open_files_soft_limit() else {
        return;
    };
    let http = max_connections as u64 + rpo_exporter::http::RESERVED_FDS as u64;
    let budget = limit.saturating_sub(http + OPEN_FILES_MARGIN);
    rpo_exporter::drivers::shared::set_descriptor_limit(budget.min(usize::MAX as u64) as usize);
    if budget < targets as u64 {
        tracing::warn!(
            targets,
            open_files_limit = limit,
            connections_allowed = budget,
            "the open-file limit leaves fewer connections to monitored servers than there are targets; targets that name distinct servers or users need their own, and those beyond the limit will fail their polls: raise it (LimitNOFILE=)"
        );
    } else {
        tracing::info!(
            open_files_limit = limit,
            connections_allowed = budget,
            "connections to monitored servers limited by the open-file limit"
        );
    }
}

/// Open files beyond targets' connections and HTTP: the listener, the
/// configuration and TLS files, DNS lookups, the runtime's own.
const OPEN_FILES_MARGIN: u64 = 64;

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

async fn serve(cli: &Cli, overrides: WebOverrides) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    // Before anything else: until a handler is installed, SIGHUP kills.
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            eprintln!("rpo-exporter: cannot handle SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = match load(cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    overrides.apply(&mut config);
    let security = match load_web(cli) {
        Ok(security) => security,
        Err(code) => return code,
    };
    let path = cli.config.clone().expect("load checked --config");
    let (reloader, reloads) = rpo_exporter::reload::channel(Box::new(move || {
        let mut config = Config::load(&path).map_err(|e| e.to_string())?;
        overrides.apply(&mut config);
        Ok(config)
    }));
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received; reloading the configuration");
            // The outcome is logged by the reloader.
            let _ = reloader.reload().await;
        }
    });
    raise_open_files_limit();
    let limits = rpo_exporter::http::WebLimits {
        max_connections: connection_cap(cli.max_connections as usize),
        header_read_timeout: cli.header_read_timeout,
    };
    set_connection_budget(config.targets.len(), limits.max_connections);
    let listener = match listen(config.web.listen_address) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "rpo-exporter: cannot listen on {}: {e}",
                config.web.listen_address
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        route_prefix = %cli.route_prefix.as_str(),
        tls = security.as_ref().is_some_and(|s| s.tls_enabled()),
        basic_auth_users = security.as_ref().map(|s| s.user_count()).unwrap_or(0),
        targets = config.targets.len(),
        instance = %config.instance,
        version = rpo_exporter::metrics::VERSION,
        "serving"
    );
    let options = rpo_exporter::RunOptions {
        limits,
        reloads: Some(reloads),
        web: rpo_exporter::http::WebOptions {
            route_prefix: cli.route_prefix.clone(),
            security,
        },
    };
    rpo_exporter::run_with(Arc::new(config), listener, options, shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
}
