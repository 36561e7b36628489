//! The demo: starts a real Postgres primary with a streaming replica, a
//! light writer on it, and the exporter watching the pair; prints the
//! verdict table and the URLs; stops everything on Ctrl-C.
//!
//! `rpo-lab --once` prints the verdict and exits with check's exit code
//! (0 GO, 1 NO-GO), which is how the test suite smoke-tests the demo.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rpo_exporter::check::{self, CheckOptions};
use rpo_exporter::config::Config;
use rpo_exporter::lab::PostgresPair;
use rpo_exporter::readiness::Mode;

fn main() -> ExitCode {
    let once = std::env::args().any(|a| a == "--once");
    let listen: SocketAddr = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:9798".parse().expect("literal address"));
    let _ = rpo_exporter::logging::init("warn", rpo_exporter::logging::LogFormat::Logfmt);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(demo(listen, once))
}

async fn demo(listen: SocketAddr, once: bool) -> ExitCode {
    eprintln!("starting a Postgres primary and a streaming replica...");
    let pair = match tokio::task::spawn_blocking(PostgresPair::start)
        .await
        .expect("lab task")
    {
        Ok(pair) => Arc::new(pair),
        Err(e) => {
            eprintln!("rpo-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "primary on 127.0.0.1:{}, replica on 127.0.0.1:{} (data in {})",
        pair.primary_port(),
        pair.replica_port(),
        pair.data_dir().display()
    );
    if let Err(e) = pair.primary_sql(
        "CREATE TABLE demo_orders (id bigserial PRIMARY KEY, placed_at timestamptz DEFAULT now())",
    ) {
        eprintln!("rpo-lab: {e}");
        return ExitCode::FAILURE;
    }

    // An ERP that writes an order every 200 ms.
    let writer_url = pair.primary_url();
    let writer = tokio::spawn(async move {
        let Ok((client, connection)) =
            tokio_postgres::connect(&writer_url, tokio_postgres::NoTls).await
        else {
            return;
        };
        tokio::spawn(connection);
        loop {
            let _ = client
                .execute("INSERT INTO demo_orders DEFAULT VALUES", &[])
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

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

[[postgres]]
name = "erp-db"
group = "erp"
rpo_budget = "5s"
primary_url = "{primary}"
replica_url = "{replica}"
heartbeat = {{ interval = "1s", table = "rpo_heartbeat" }}

[[postgres]]
name = "erp-db-positions"
group = "erp"
rpo_budget = "5s"
primary_url = "{primary}"
replica_url = "{replica}"
"#,
        primary = pair.primary_url(),
        replica = pair.replica_url()
    );
    let config_path = pair.data_dir().join("rpo-exporter.toml");
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
    let addr = listener.local_addr().expect("local address");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let exporter = tokio::spawn(rpo_exporter::run(config, listener, async move {
        let _ = stop_rx.await;
    }));

    // Let a few polls and heartbeats happen, then ask it like an SRE would.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let base = format!("http://{addr}");
    let options = CheckOptions {
        group: None,
        mode: Mode::Planned,
        wait: Some(Duration::from_secs(20)),
    };
    let verdict = check::check_remote(&base, &options, Duration::from_secs(5)).await;
    println!("\n$ rpo-exporter check --from {base}\n");
    print!("{}", check::render_table(&verdict));
    println!("\nMetrics:            {base}/metrics");
    println!("Failover readiness: {base}/failover-readiness?group=erp");
    println!("Board:              {base}/");
    println!("Config:             {}", config_path.display());

    if !once {
        println!("\nTry it: pause replay on the replica and watch the verdict turn NO-GO:");
        println!(
            "  psql -h 127.0.0.1 -p {} -U postgres -c 'SELECT pg_wal_replay_pause()'",
            pair.replica_port()
        );
        println!(
            "  target/debug/rpo-exporter check --from {base}     # or: curl -s '{base}/failover-readiness?group=erp'"
        );
        println!(
            "  psql -h 127.0.0.1 -p {} -U postgres -c 'SELECT pg_wal_replay_resume()'",
            pair.replica_port()
        );
        println!("\nPress Ctrl-C to stop the exporter and the lab.");
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping...");
    }
    let _ = stop_tx.send(());
    let _ = exporter.await;
    writer.abort();
    drop(pair);
    if verdict.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
