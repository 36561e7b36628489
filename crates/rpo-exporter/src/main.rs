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
use rpo_exporter::readiness::Mode;

/// Measures the recovery-point exposure of replicated stores and answers
/// GO/NO-GO for a failover.
#[derive(Parser, Debug)]
#[command(name = "rpo-exporter", version, about)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve HTTP on (overrides web.listen_address).
    #[arg(long = "web.listen-address", global = true, value_name = "ADDR")]
    listen_address: Option<String>,
    /// Path of the metrics endpoint (overrides web.telemetry_path).
    #[arg(long = "web.telemetry-path", global = true, value_name = "PATH")]
    telemetry_path: Option<String>,
    /// Log level: error, warn, info, debug, or a filter directive.
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
    Validate,
    /// Run a failover drill: poll and write heartbeats, show the verdict,
    /// wait for the group's promotions, write the report: exit 0 when every
    /// measured loss is within its budget, 1 otherwise or on timeout, 2 on
    /// bad config or usage.
    Drill(DrillArgs),
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
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 30s or 2m: {e}"))
}

const EXIT_NO_GO: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format: LogFormat = cli.log_format.parse().expect("clap checked the value");
    if let Err(problem) = logging::init(&cli.log_level, format) {
        eprintln!("rpo-exporter: {problem}");
        return ExitCode::from(EXIT_USAGE);
    }
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
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    match cli.command {
        None | Some(Command::Serve) => serve(&cli).await,
        Some(Command::Validate) => match load(&cli) {
            Ok(config) => {
                println!(
                    "{}: valid ({} groups, {} targets)",
                    config.source.display(),
                    config.groups.len(),
                    config.targets.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
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
            let options = CheckOptions {
                group: args.group.clone(),
                mode: args.mode.parse::<Mode>().expect("clap checked the value"),
                wait: args.wait,
            };
            let output: Output = args.output.parse().expect("clap checked the value");
            let verdict = if let Some(url) = &args.from {
                if let Err(problem) = check::parse_base_url("--from", url) {
                    eprintln!("rpo-exporter check: {problem}");
                    return ExitCode::from(EXIT_USAGE);
                }
                check::check_remote(url, &options, Duration::from_secs(10)).await
            } else if let Some(url) = &args.prometheus {
                let gate = check::PrometheusGate {
                    regions: args.region.clone(),
                    max_sample_age: args.max_sample_age.unwrap_or(check::DEFAULT_MAX_SAMPLE_AGE),
                };
                let answer = match check::parse_base_url("--prometheus", url) {
                    Ok(base) => {
                        check::check_prometheus(&base, &options, &gate, Duration::from_secs(10))
                            .await
                    }
                    Err(problem) => Err(problem),
                };
                match answer {
                    Ok(verdict) => verdict,
                    Err(problem) => {
                        eprintln!("rpo-exporter check: {problem}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
            } else {
                let config = match load(&cli) {
                    Ok(config) => config,
                    Err(code) => return code,
                };
                match check::check_config(config, &options).await {
                    Ok(verdict) => verdict,
                    Err(problem) => {
                        eprintln!("rpo-exporter check: {problem}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
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

/// Loads the configuration named by `--config`; prints the problem and
/// returns exit code 2 when it is missing or invalid.
fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let Some(path) = &cli.config else {
        eprintln!("rpo-exporter: --config FILE is required");
        return Err(ExitCode::from(EXIT_USAGE));
    };
    Config::load(path).map_err(|problem| {
        eprintln!("rpo-exporter: {problem}");
        ExitCode::from(EXIT_USAGE)
    })
}

async fn serve(cli: &Cli) -> ExitCode {
    let mut config = match load(cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(addr) = &cli.listen_address {
        match addr.parse() {
            Ok(addr) => config.web.listen_address = addr,
            Err(_) => {
                eprintln!("rpo-exporter: --web.listen-address `{addr}` is not an address like 0.0.0.0:9798");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    if let Some(path) = &cli.telemetry_path {
        if !path.starts_with('/') {
            eprintln!("rpo-exporter: --web.telemetry-path must start with '/'");
            return ExitCode::from(EXIT_USAGE);
        }
        config.web.telemetry_path = path.clone();
    }
    let listener = match tokio::net::TcpListener::bind(config.web.listen_address).await {
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
        targets = config.targets.len(),
        instance = %config.instance,
        version = rpo_exporter::metrics::VERSION,
        "serving"
    );
    rpo_exporter::run(Arc::new(config), listener, shutdown_signal()).await;
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
