//! The demo: starts a real instance of every kind that can run here (see
//! `rpo_lab::full`), with a little live activity, runs the exporter
//! watching them all as one group, prints the verdict table and the URLs,
//! and stops everything on Ctrl-C.
//!
//! `rpo-lab --once` prints the verdict and exits with check's exit code
//! (0 GO, 1 NO-GO), which is how the test suite smoke-tests the demo.
//!
//! `rpo-lab --drill` runs a failover drill on the lab instead: it starts
//! `rpo-exporter drill` (in-process) on group `erp`, then switches the
//! Postgres, MariaDB and Redis pairs over as a planned drill would (the
//! Postgres primary shut down cleanly and its replica promoted; the MariaDB
//! primary shut down once its replica has the binary log, the replica
//! promoted; Redis `FAILOVER`),
//! prints the drill report's summary, writes the report into `--report DIR`
//! and exits with the drill's exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rpo_exporter::check::{self, CheckOptions};
use rpo_exporter::config::Config;
use rpo_exporter::readiness::Mode;
use rpo_lab::full::FullLab;
use rpo_lab::support::Exporter;

/// The demo: a real instance of every kind that can run here, watched by
/// the exporter as one group `erp`.
#[derive(Parser)]
#[command(name = "rpo-lab", version)]
struct Args {
    /// Print the verdict table and exit with check's exit code (0 GO,
    /// 1 NO-GO) instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Where the exporter listens; if that address is taken, a free port
    /// of 127.0.0.1.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:9798")]
    listen: SocketAddr,
    /// Run a failover drill: promote the lab's Postgres, MariaDB and Redis replicas
    /// (planned switchovers), print the drill report's summary and exit
    /// with the drill's exit code (0 every loss within budget).
    #[arg(long, conflicts_with = "once")]
    drill: bool,
    /// With --drill: where to write drill-report.md, .json and .html.
    #[arg(long, value_name = "DIR", default_value = "rpo-lab-drill")]
    report: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The AWS kinds talk to a local emulator only: dummy credentials, set
    // before any thread starts.
    rpo_lab::moto::use_emulator_credentials();
    let _ = rpo_exporter::logging::init("warn", rpo_exporter::logging::LogFormat::Logfmt);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(demo(args))
}

async fn demo(args: Args) -> ExitCode {
    let (listen, once) = (args.listen, args.once);
    eprintln!("starting the lab: Postgres and Redis pairs, a Redis stream, RabbitMQ, the OpenSearch contract server, the AWS emulator (about 20 s)...");
    let lab = match FullLab::start("demo").await {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("rpo-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config_text = format!(
        r#"
[exporter]
instance = "demo"

[defaults]
poll_interval = "1s"
timeout = "2s"
stale_after = "10s"

[[group]]
name = "erp"
rpo_budget = "60s"
{}"#,
        lab.config_blocks()
    );
    let config_path = lab.postgres.data_dir().join("rpo-exporter.toml");
    std::fs::write(&config_path, &config_text).expect("write the demo config");
    let config = match Config::load(&config_path) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("rpo-lab: {e}");
            return ExitCode::FAILURE;
        }
    };

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port"),
    };
    let exporter = Exporter::serve(config.clone(), listener);
    let addr = exporter.addr;
    if args.drill {
        let code = drill(&lab, &config, args.report).await;
        exporter.stop().await;
        drop(lab);
        return ExitCode::from(code);
    }

    // Let a few polls and heartbeats happen, then ask it like an SRE would.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let base = format!("http://{addr}");
    let options = CheckOptions {
        group: None,
        mode: Mode::Planned,
        wait: Some(Duration::from_secs(60)),
        access: check::RemoteAccess::default(),
    };
    println!("\n$ rpo-exporter check --from {base}\n");
    let ready = match check::check_remote(&base, &options, Duration::from_secs(5)).await {
        Ok(verdict) => {
            print!("{}", check::render_table(&verdict));
            verdict.ready
        }
        Err(problem) => {
            println!("rpo-exporter check: {problem}");
            false
        }
    };
    println!("\nMetrics:            {base}/metrics");
    println!("Failover readiness: {base}/failover-readiness?group=erp");
    println!("Board:              {base}/");
    println!("Config:             {}", config_path.display());

    if !once {
        println!(
            "\nTry it: pause replay on the Postgres replica and watch the verdict turn NO-GO:"
        );
        println!(
            "  psql -h 127.0.0.1 -p {} -U postgres -c 'SELECT pg_wal_replay_pause()'",
            lab.postgres.replica_port()
        );
        println!("  target/debug/rpo-exporter check --from {base}     # or: curl -s '{base}/failover-readiness?group=erp'");
        println!(
            "  psql -h 127.0.0.1 -p {} -U postgres -c 'SELECT pg_wal_replay_resume()'",
            lab.postgres.replica_port()
        );
        println!("Or stop the SQL (applier) thread of the MariaDB replica, and start it again:");
        println!(
            "  mariadb --no-defaults -h 127.0.0.1 -P {} -u root -e 'STOP SLAVE SQL_THREAD'     # START SLAVE SQL_THREAD",
            lab.mariadb.replica_port()
        );
        println!("\nPress Ctrl-C to stop the exporter and the lab.");
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping...");
    }
    exporter.stop().await;
    drop(lab);
    if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A planned failover drill on the lab: the drill runs while both pairs
/// are switched over; returns its exit code.
async fn drill(lab: &FullLab, config: &Config, report_dir: PathBuf) -> u8 {
    use rpo_exporter::drill::{self, DrillOptions};
    println!(
        "\n$ rpo-exporter drill --group erp --report {}\n",
        report_dir.display()
    );
    let options = DrillOptions {
        group: Some("erp".to_string()),
        report_dir: report_dir.clone(),
        timeout: Duration::from_secs(120),
    };
    let run = tokio::spawn({
        // The drill follows every target whose kind reports roles; the lab
        // can switch over only its own pairs (the AWS emulator cannot fail a
        // global cluster over), so the drill is given those.
        let mut config = config.clone();
        config
            .targets
            .retain(|t| matches!(t.kind().as_str(), "postgres" | "mysql" | "redis"));
        let options = options.clone();
        async move { drill::drill(config, &options, |line| println!("{line}")).await }
    });
    // The drill sees the pairs healthy first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("\n(lab) planned switchover of erp-db: the primary shuts down cleanly, the replica is promoted");
    let postgres = lab.postgres.clone();
    let switched = tokio::task::spawn_blocking(move || {
        postgres.stop_primary()?;
        postgres.promote_replica()
    })
    .await;
    match switched {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("rpo-lab: the Postgres switchover failed: {e}"),
        Err(e) => eprintln!("rpo-lab: the Postgres switchover stopped: {e}"),
    }
    println!("(lab) planned switchover of erp-ledger: the MariaDB primary shuts down once the replica has its binary log, the replica is promoted");
    let mariadb = lab.mariadb.clone();
    match tokio::task::spawn_blocking(move || mariadb.switch_over()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("rpo-lab: the MariaDB switchover failed: {e}"),
        Err(e) => eprintln!("rpo-lab: the MariaDB switchover stopped: {e}"),
    }
    println!("(lab) planned switchover of erp-sessions: FAILOVER on the Redis primary");
    let redis = lab.redis.clone();
    match tokio::task::spawn_blocking(move || redis.switch_over()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("rpo-lab: the Redis switchover failed: {e}"),
        Err(e) => eprintln!("rpo-lab: the Redis switchover stopped: {e}"),
    }
    let report = match run.await {
        Ok(Ok(report)) => report,
        Ok(Err(problem)) => {
            eprintln!("rpo-lab: {problem}");
            return drill::EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("rpo-lab: the drill stopped: {e}");
            return drill::EXIT_FAIL;
        }
    };
    println!("\nDrill report summary:\n");
    print!("{}", report.summary_text());
    match report.write(&report_dir) {
        Ok(paths) => {
            println!("\nReport:");
            for path in paths {
                println!("  {}", path.display());
            }
            report.exit_code
        }
        Err(problem) => {
            eprintln!("rpo-lab: {problem}");
            drill::EXIT_FAIL
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Args;

    #[test]
    fn once_and_listen_keep_their_defaults() {
        Args::command().debug_assert();
        let defaults = Args::try_parse_from(["rpo-lab"]).unwrap();
        assert!(!defaults.once);
        assert!(!defaults.drill);
        assert!(Args::try_parse_from(["rpo-lab", "--once", "--drill"]).is_err());
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:9798");
        let args = Args::try_parse_from(["rpo-lab", "--once", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(args.once);
        assert_eq!(args.listen.port(), 0);
    }
}
