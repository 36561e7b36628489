//! The demo: starts a real instance of every kind that can run here (see
//! `rpo_lab::full`), with a little live activity, runs the exporter
//! watching them all as one group, prints the verdict table and the URLs,
//! and stops everything on Ctrl-C.
//!
//! `rpo-lab --once` prints the verdict and exits with check's exit code
//! (0 GO, 1 NO-GO), which is how the test suite smoke-tests the demo.

use std::net::SocketAddr;
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
    runtime.block_on(demo(args.listen, args.once))
}

async fn demo(listen: SocketAddr, once: bool) -> ExitCode {
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
    let exporter = Exporter::serve(config, listener);
    let addr = exporter.addr;

    // Let a few polls and heartbeats happen, then ask it like an SRE would.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let base = format!("http://{addr}");
    let options = CheckOptions {
        group: None,
        mode: Mode::Planned,
        wait: Some(Duration::from_secs(60)),
    };
    let verdict = check::check_remote(&base, &options, Duration::from_secs(5)).await;
    println!("\n$ rpo-exporter check --from {base}\n");
    print!("{}", check::render_table(&verdict));
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
    if verdict.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:9798");
        let args = Args::try_parse_from(["rpo-lab", "--once", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(args.once);
        assert_eq!(args.listen.port(), 0);
    }
}
