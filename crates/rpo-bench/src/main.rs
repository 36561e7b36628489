//! The benchmark: how fast `/metrics` and `/failover-readiness` answer with
//! 10, 100 and 1,000 targets in the store, and what the daemon costs while
//! it watches a real Postgres pair.
//!
//! ```text
//! cargo run --release --bin rpo-bench                      # render path
//! cargo run --release --bin rpo-bench -- --daemon --seconds 60
//! ```
//!
//! Render path: a synthetic configuration (N Postgres targets over ~N/10
//! groups, fake URLs, half with a heartbeat) and a store filled with
//! realistic synthetic reports (the postgres probe's detail series, a few
//! failing and a few NO-GO targets) are served in-process by the real
//! `http::serve`; one keep-alive client sends sequential GETs and times each
//! one until the body is read. A background task keeps recording polls of
//! random targets at the daemon's rate (N targets every 5 s), so the store's
//! lock is busy as it would be.
//!
//! Daemon footprint: starts a real primary/replica pair (`lab`), a writer
//! (an INSERT every 200 ms), and the real `rpo-exporter` binary from the same
//! target directory watching two targets on it (one with a 1 s heartbeat,
//! 1 s poll interval); scrapes `/metrics` once a second and samples
//! `/proc/<pid>/{status,stat}` for RSS and CPU; stops it with SIGTERM and
//! checks it exits 0.
//!
//! Scale (`--scale --targets 1000,9000`): the real binary watching N Redis
//! pair targets on one lab pair; see `scale.rs`.
//!
//! Memory (`--memory --targets 1000,10000`): bytes allocated per target,
//! stage by stage (configuration, store, render cache, board history,
//! probes, tasks), counted by jemalloc in one process; see `memory.rs`.
//!
//! Prints Markdown, ready to paste into the README. Timings are measured
//! here and never asserted in tests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

mod scale;

use clap::Parser;
use rpo_exporter::config::Config;
use rpo_exporter::http::AppState;
use rpo_exporter::kinds::postgres;
use rpo_exporter::probe::{
    Detail, FailureReason, LinkState, Measurement, ProbeError, Side, HEARTBEAT_TIMESTAMP_SECONDS,
};
use rpo_exporter::readiness::{evaluate, Mode};
use rpo_exporter::self_metrics::AwsCallCounters;
use rpo_exporter::store::{Store, TargetId};
use rpo_lab::{self as lab, PostgresPair};

mod aws_cost;
mod memory;
mod peers;
mod support;

use support::{spawn_exporter, stop_with_sigterm, OrderWriter};

/// jemalloc, as in the daemon: `--memory` reads its statistics, and the
/// other modes allocate as the daemon does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Benchmarks of rpo-exporter, printed as Markdown.
///
/// By default the render path: `/metrics` and `/failover-readiness` latency
/// with N targets in the store. With `--daemon`, the footprint of the real
/// binary watching a lab Postgres pair. Build with --release for figures
/// worth recording.
#[derive(Parser)]
#[command(name = "rpo-bench")]
struct Options {
    /// Measure the daemon's footprint (CPU, RSS, scrape time, SIGTERM)
    /// instead of the render path.
    #[arg(long, conflicts_with = "peers")]
    daemon: bool,
    /// Side by side with postgres_exporter and redis_exporter: the real
    /// daemon with each of --targets targets on one lab Postgres pair and
    /// one lab Redis pair, the peers watching the same servers (install
    /// them with `scripts/install-deps.sh --bench`). --seconds is the
    /// footprint window per size, --requests the timed scrapes per process.
    #[arg(long, conflicts_with = "aws_cost")]
    peers: bool,
    /// The AWS calls (and their list price per month) of the reference
    /// architecture's AWS targets at the default intervals, counted by the
    /// exporter against the lab's AWS emulator over --seconds (use a
    /// multiple of 60, e.g. 240); then CloudWatch batching at 10,000 series.
    #[arg(long, conflicts_with = "daemon")]
    aws_cost: bool,
    /// With --peers: every target's heartbeat interval.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    heartbeat: String,
    /// The real binary watching N Redis pair targets (--targets) on one lab
    /// Redis pair: start-up, endpoint latency while it polls, poll cadence
    /// jitter, RSS, descriptors, SIGTERM.
    #[arg(long, conflicts_with = "daemon")]
    scale: bool,
    /// Where a target's memory goes: bytes allocated per target (not RSS),
    /// stage by stage (configuration, store, render cache, board history,
    /// probes, tasks), for each of --targets `redis` and Postgres-like
    /// targets, in one process; see `memory.rs`.
    #[arg(long, conflicts_with_all = ["daemon", "peers", "aws_cost", "scale"])]
    memory: bool,
    /// With --scale: the exporter binary to measure (default: the
    /// `rpo-exporter` beside this binary), e.g. an older build to compare.
    #[arg(long, value_name = "PATH")]
    exporter: Option<PathBuf>,
    /// With --scale: the targets' poll interval, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = positive::<u64>)]
    interval_ms: u64,
    /// With --daemon: how long to measure, in seconds.
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = positive::<u64>)]
    seconds: u64,
    /// Render path: timed GETs per endpoint and store size (after 50 warm-up GETs).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = positive::<usize>)]
    requests: usize,
    /// Render path: the store sizes to measure, in targets.
    #[arg(
        long = "targets",
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "10,100,1000",
        value_parser = positive::<usize>
    )]
    sizes: Vec<usize>,
}

/// A whole number above zero (surrounding spaces allowed, as in `10, 100`).
fn positive<N: std::str::FromStr + PartialOrd + Default>(text: &str) -> Result<N, String> {
    match text.trim().parse::<N>() {
        Ok(n) if n > N::default() => Ok(n),
        _ => Err(format!("`{text}` is not a positive whole number")),
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    if cfg!(debug_assertions) {
        eprintln!("rpo-bench: WARNING: this is a debug build; run it with `cargo run --release --bin rpo-bench` for figures worth recording");
    }
    let result = if options.daemon {
        daemon_bench(&options)
    } else if options.aws_cost {
        aws_cost::aws_cost_bench(&options)
    } else if options.peers {
        peers::peers_bench(&options)
    } else if options.memory {
        memory::run(&options.sizes)
    } else if options.scale {
        let exporter = match &options.exporter {
            Some(path) => Ok(path.clone()),
            None => sibling_exporter(),
        };
        exporter.and_then(|exporter| {
            scale::run(
                &exporter,
                &options.sizes,
                options.requests,
                options.seconds,
                Duration::from_millis(options.interval_ms),
            )
        })
    } else {
        render_bench(&options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("rpo-bench: {problem}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Machine and command, printed with every table.

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(", Linux {}", s.trim()))
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug build (not representative)"
    } else {
        "release build"
    };
    format!("{cores} × {model}{mem_gib}{kernel}; {profile}")
}

/// The 1-minute load average, to show whether the machine was quiet.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    if args.is_empty() {
        format!("cargo run{release} --bin rpo-bench")
    } else {
        format!("cargo run{release} --bin rpo-bench -- {}", args.join(" "))
    }
}

// ---------------------------------------------------------------------------
// Statistics.

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Nearest-rank percentiles.
fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort_unstable();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    Stats {
        p50: rank(0.50),
        p99: rank(0.99),
        max: *samples.last().expect("at least one sample"),
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.2} MiB", bytes as f64 / 1024.0 / 1024.0)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// A small xorshift generator: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------
// Render path.

/// N targets over ~N/10 groups of ten; every other target has a heartbeat.
fn synthetic_config(n: usize) -> Result<Config, String> {
    let groups = n.div_ceil(10).max(1);
    let mut toml = String::from(
        "[exporter]\ninstance = \"bench\"\n\n[web]\nlisten_address = \"127.0.0.1:0\"\n\n",
    );
    for g in 0..groups {
        toml.push_str(&format!(
            "[[group]]\nname = \"erp-{g:03}\"\nrpo_budget = \"60s\"\n\n"
        ));
    }
    for i in 0..n {
        toml.push_str(&format!(
            "[[postgres]]\nname = \"erp-db-{i:04}\"\ngroup = \"erp-{:03}\"\n\
             primary_url = \"postgres://monitor@127.0.0.1:1/erp\"\n\
             replica_url = \"postgres://monitor@127.0.0.1:2/erp\"\n",
            i / 10
        ));
        if i % 2 == 0 {
            toml.push_str("heartbeat = { interval = \"1s\" }\n");
        }
        toml.push('\n');
    }
    Config::from_toml(&toml, Path::new("bench.toml")).map_err(|e| e.to_string())
}

/// What target `i` reports for a poll that finished at `now`: mostly a
/// healthy streaming replica with the postgres probe's detail series; a few
/// fail entirely, lose their source, fall behind budget or stop streaming.
fn synthetic_poll(
    i: usize,
    heartbeat: bool,
    now: SystemTime,
    rng: &mut Rng,
) -> Result<Measurement, ProbeError> {
    let secs = |s: f64| Duration::from_secs_f64(s);
    let unix = rpo_exporter::probe::unix_seconds;
    let case = i % 100;
    if case == 3 {
        return Err(ProbeError::timeout(Duration::from_secs(3)));
    }
    let lag = 0.05 + rng.unit() * 0.5;
    let mut m = Measurement::new(now);
    m.link = LinkState::Healthy;
    m.source_reachable = Some(true);
    m.replica_reachable = Some(true);
    m.recovery_point = Some(now - secs(lag));
    let wal = 4_000_000_000.0 + (i as f64) * 1e6 + rng.unit() * 1e6;
    let backlog = (rng.unit() * 64_000.0).round();
    m.backlog_bytes = Some(backlog);
    m.catchup_seconds = Some(backlog / 8_000_000.0);
    let mut receiver_up = 1.0;
    let mut paused = 0.0;
    match case {
        5 => {
            // The source is unreachable: the replica still proves a point.
            m.source_reachable = Some(false);
            m.recovery_point = None;
            m.link = LinkState::Unknown("the primary cannot be reached".to_string());
            m.failures.push(
                ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Source),
            );
        }
        8 => {
            // Replay paused for 90 s: over budget.
            paused = 1.0;
            m.recovery_point = Some(now - secs(90.0));
            m.backlog_bytes = Some(48_000_000.0);
            m.catchup_seconds = Some(f64::INFINITY);
        }
        61 => {
            receiver_up = 0.0;
            m.link = LinkState::Unhealthy("WAL receiver is not streaming".to_string());
        }
        _ => {}
    }
    // TODO(catalogue): these names and help texts are copied from the
    // postgres kind; take them from the metric catalogue once it exists.
    let mut details = Vec::new();
    if m.source_reachable == Some(true) {
        details.push(Detail::new(&postgres::STREAMING_STANDBYS, receiver_up));
        details.push(Detail::new(&postgres::PRIMARY_WAL_POSITION_BYTES, wal));
        details.push(
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, receiver_up)
                .with_label("slot", "standby_1"),
        );
        details.push(
            Detail::new(
                &postgres::REPLICATION_SLOT_RETAINED_BYTES,
                backlog + 16_777_216.0,
            )
            .with_label("slot", "standby_1"),
        );
    }
    details.push(Detail::new(&postgres::REPLICA_IN_RECOVERY, 1.0));
    details.push(Detail::new(&postgres::WAL_RECEIVER_UP, receiver_up));
    details.push(Detail::new(&postgres::REPLAY_PAUSED, paused));
    if m.source_reachable == Some(true) {
        details.push(Detail::new(
            &postgres::RECEIVE_LAG_BYTES,
            (backlog / 3.0).round(),
        ));
        details.push(Detail::new(
            &postgres::REPLAY_LAG_BYTES,
            m.backlog_bytes.unwrap_or(0.0),
        ));
    }
    details.push(Detail::new(
        &postgres::WAL_RECEIVER_LAST_MESSAGE_TIMESTAMP_SECONDS,
        unix(now - secs(rng.unit())),
    ));
    details.push(Detail::new(
        &postgres::LAST_REPLAYED_TRANSACTION_TIMESTAMP_SECONDS,
        unix(now - secs(lag + rng.unit())),
    ));
    if heartbeat {
        details.push(Detail::new(
            &HEARTBEAT_TIMESTAMP_SECONDS,
            unix(now - secs(lag)),
        ));
    }
    m.details = details;
    Ok(m)
}

fn record(store: &Store, config: &Config, i: usize, finished: SystemTime, rng: &mut Rng) {
    let id = TargetId::of(&config.targets[i]);
    let heartbeat = config.targets[i].heartbeat_interval().is_some();
    let took = Duration::from_micros(2_000 + rng.below(6_000) as u64);
    let result = synthetic_poll(i, heartbeat, finished, rng);
    store.record_poll(&id, finished - took, finished, result);
    if heartbeat {
        store.record_heartbeat(&id, finished - took, Ok(()));
    }
}

struct EndpointResult {
    endpoint: String,
    /// How the scrapes were made: see [`Scrape`].
    scrape: Scrape,
    status: u16,
    bytes: usize,
    stats: Stats,
    /// The in-process cost of producing the body (no HTTP), median.
    render_p50: Duration,
}

/// How a series of timed GETs meets the store.
#[derive(Clone, Copy, PartialEq)]
enum Scrape {
    /// Back to back: only the background polls change reports between two
    /// GETs, so `/metrics` reuses nearly every target's cached lines.
    BackToBack,
    /// Every target's report replaced before each GET (untimed): what a
    /// real scrape meets, every 15–60 s while targets poll every 5 s and
    /// heartbeat every second, so nothing cached is reusable.
    AllChanged,
    /// [`Scrape::AllChanged`] with `Accept-Encoding: gzip`, as Prometheus
    /// sends it: timed until the compressed body is read.
    AllChangedGzip,
    /// As a real scrape meets the store, every 15–60 s: every target's
    /// report replaced since the last (untimed), the server's write-ahead
    /// run after that (it runs every second), then the last second's
    /// changes before the GET: a fifth of the targets polled (every 5 s)
    /// and every heartbeat target's heartbeat.
    Production,
    /// [`Scrape::Production`] with `Accept-Encoding: gzip`.
    ProductionGzip,
}

impl Scrape {
    fn gzip(self) -> bool {
        matches!(self, Scrape::AllChangedGzip | Scrape::ProductionGzip)
    }

    fn describe(self) -> &'static str {
        match self {
            Scrape::BackToBack => "back to back",
            Scrape::AllChanged => "every target changed",
            Scrape::AllChangedGzip => "every target changed, gzip",
            Scrape::Production => "production",
            Scrape::ProductionGzip => "production, gzip",
        }
    }
}

struct SizeResult {
    targets: usize,
    groups: usize,
    series: usize,
    /// `/metrics` written afresh in-process (no cache), median.
    fresh_p50: Duration,
    polls_during: u64,
    endpoints: Vec<EndpointResult>,
}

fn render_bench(options: &Options) -> Result<(), String> {
    let load_before = load_average();
    let mut results = Vec::new();
    for &n in &options.sizes {
        eprintln!("rpo-bench: {n} targets...");
        results.push(render_one(n, options.requests)?);
    }

    println!("### `/metrics` and `/failover-readiness` latency\n");
    println!(
        "{} sequential GETs per endpoint over one keep-alive connection (after 50 warm-up GETs), \
         timed until the whole body is read; polls of random targets recorded meanwhile at \
         N targets / 5 s. \"back to back\": nothing but those polls changes between two \
         GETs, so `/metrics` reuses its cached lines; \"every target changed\": every \
         report replaced before each GET (untimed), as a real scrape every 15–60 s finds \
         them; \"gzip\": with `Accept-Encoding: gzip`, as Prometheus sends it, timed until \
         the compressed body (its size shown) is read; \"production\": every report \
         replaced, the server's write-ahead run, then the last second's changes (a fifth \
         of the targets polled, every heartbeat written), as a scrape every 15–60 s meets \
         them. \"render\" is the median in-process cost of producing the body after the \
         same preparation (no HTTP, no gzip).\n",
        options.requests
    );
    println!("| targets (groups) | endpoint | scrapes | status | body | p50 ms | p99 ms | max ms | render p50 ms |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        for e in &r.endpoints {
            println!(
                "| {} ({}) | `{}` | {} | {} | {} | {} | {} | {} | {} |",
                r.targets,
                r.groups,
                e.endpoint,
                e.scrape.describe(),
                e.status,
                size(e.bytes),
                ms(e.stats.p50),
                ms(e.stats.p99),
                ms(e.stats.max),
                ms(e.render_p50)
            );
        }
    }
    println!();
    for r in &results {
        println!(
            "- {} targets: {} samples in `/metrics`, {} polls recorded during the run; \
             `/metrics` written afresh in-process (first scrape after start or a reload) p50 {} ms",
            r.targets,
            r.series,
            r.polls_during,
            ms(r.fresh_p50)
        );
    }
    println!("\nMachine: {}  ", machine());
    println!(
        "Load average (1 min) before / after: {load_before} / {}  ",
        load_average()
    );
    println!("Command: `{}`", command_line());
    Ok(())
}

fn render_one(n: usize, requests: usize) -> Result<SizeResult, String> {
    let config = Arc::new(synthetic_config(n)?);
    let store = Arc::new(Store::new(config.targets.iter().map(TargetId::of)));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let now = SystemTime::now();
    // Three poll rounds, so counters and retained state look lived-in.
    for round in (0..3).rev() {
        for i in 0..n {
            record(
                &store,
                &config,
                i,
                now - Duration::from_secs(5 * round),
                &mut rng,
            );
        }
    }

    // The server: its own multi-thread runtime on its own threads, as in the
    // daemon; the client below runs on the main thread.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("server runtime: {e}"))?;
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Synthetic polls call no AWS API; the counters stay at 0.
    let aws_calls = Arc::new(AwsCallCounters::default());
    let state = Arc::new(AppState::new(
        config.clone(),
        store.clone(),
        aws_calls.clone(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = server_rt.spawn(rpo_exporter::http::serve(
        listener,
        state.clone(),
        Default::default(),
        {
            let mut stop = stop_rx.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        },
    ));
    // Background polls at the daemon's rate: every target once per 5 s.
    let polls = server_rt.spawn({
        let store = store.clone();
        let config = config.clone();
        let mut stop = stop_rx;
        async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ n as u64);
            let period = Duration::from_secs(5) / n as u32;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut count = 0u64;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return count,
                    _ = tick.tick() => {
                        let i = rng.below(n);
                        record(&store, &config, i, SystemTime::now(), &mut rng);
                        count += 1;
                    }
                }
            }
        }
    });

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("client runtime: {e}"))?;
    let base = format!("http://{addr}");
    let endpoints = [
        ("/metrics".to_string(), Scrape::BackToBack),
        ("/metrics".to_string(), Scrape::AllChanged),
        ("/metrics".to_string(), Scrape::AllChangedGzip),
        ("/metrics".to_string(), Scrape::Production),
        ("/metrics".to_string(), Scrape::ProductionGzip),
        ("/failover-readiness".to_string(), Scrape::BackToBack),
        (
            format!("/failover-readiness?group={}", config.groups[0].name),
            Scrape::BackToBack,
        ),
    ];
    // Replaces every target's report (a poll, and a heartbeat where it has
    // one), as a real scrape finds them after 15 s of 5 s polls.
    let mut change_rng = Rng(0x6a09_e667_f3bc_c908 ^ n as u64);
    let mut change_all = || {
        let now = SystemTime::now();
        for i in 0..n {
            record(&store, &config, i, now, &mut change_rng);
        }
    };
    // The last second before a production scrape: a fifth of the targets
    // polled, every heartbeat target's heartbeat written.
    let mut last_rng = Rng(0x3c6e_f372_fe94_f82b ^ n as u64);
    let mut last_second = || {
        let now = SystemTime::now();
        for _ in 0..n.div_ceil(5) {
            let i = last_rng.below(n);
            record(&store, &config, i, now, &mut last_rng);
        }
        for target in config.targets.iter() {
            if target.heartbeat_interval().is_some() {
                store.record_heartbeat(&TargetId::of(target), now, Ok(()));
            }
        }
    };
    let mut before_get = |scrape: Scrape| match scrape {
        Scrape::BackToBack => {}
        Scrape::AllChanged | Scrape::AllChangedGzip => change_all(),
        Scrape::Production | Scrape::ProductionGzip => {
            change_all();
            state.write_metrics_ahead();
            last_second();
        }
    };
    let mut results = Vec::new();
    client_rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| format!("client: {e}"))?;
        for (endpoint, scrape) in &endpoints {
            let url = format!("{base}{endpoint}");
            let mut status = 0;
            let mut bytes = 0;
            // This client does not decompress: with gzip, the bytes timed
            // and counted are the compressed body.
            let get = || {
                let request = client.get(&url);
                if scrape.gzip() {
                    request.header("accept-encoding", "gzip")
                } else {
                    request
                }
            };
            for _ in 0..50 {
                before_get(*scrape);
                let resp = get().send().await.map_err(|e| e.to_string())?;
                status = resp.status().as_u16();
                bytes = resp.bytes().await.map_err(|e| e.to_string())?.len();
            }
            let mut samples = Vec::with_capacity(requests);
            for _ in 0..requests {
                before_get(*scrape);
                let start = Instant::now();
                let resp = get().send().await.map_err(|e| e.to_string())?;
                let gzipped = resp.headers().get("content-encoding").is_some();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                samples.push(start.elapsed());
                bytes = body.len();
                if gzipped != scrape.gzip() {
                    return Err(format!(
                        "{endpoint}: gzip asked {}, answered {gzipped}",
                        !gzipped
                    ));
                }
            }
            results.push(EndpointResult {
                endpoint: endpoint.clone(),
                scrape: *scrape,
                status,
                bytes,
                stats: stats(&mut samples),
                render_p50: Duration::ZERO,
            });
        }
        Ok::<_, String>(())
    })?;

    // The in-process cost of each body, without HTTP or gzip, for the
    // diagnosis: `/metrics` as the server writes it (with its cache) after
    // the same preparation as the row's GETs; the gzip rows share their
    // plain row's.
    let group = config.groups[0].name.clone();
    let rounds = (requests / 2).max(20);
    let in_process = |prepare: &mut dyn FnMut(), cost: &dyn Fn() -> usize| {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            prepare();
            let start = Instant::now();
            std::hint::black_box(cost());
            samples.push(start.elapsed());
        }
        stats(&mut samples).p50
    };
    let metrics_body = || state.metrics_body(&config, SystemTime::now()).len();
    let mut render_p50 = Vec::new();
    for scrape in [Scrape::BackToBack, Scrape::AllChanged, Scrape::Production] {
        render_p50.push(in_process(&mut || before_get(scrape), &metrics_body));
    }
    let readiness = in_process(&mut || {}, &|| readiness_body(&config, &store, None));
    let readiness_group = in_process(&mut || {}, &|| {
        readiness_body(&config, &store, Some(&group))
    });
    for result in &mut results {
        result.render_p50 = match (result.endpoint.as_str(), result.scrape) {
            ("/metrics", Scrape::BackToBack) => render_p50[0],
            ("/metrics", Scrape::AllChanged | Scrape::AllChangedGzip) => render_p50[1],
            ("/metrics", Scrape::Production | Scrape::ProductionGzip) => render_p50[2],
            ("/failover-readiness", _) => readiness,
            _ => readiness_group,
        };
    }
    // The first scrape after start or a reload: every line written afresh.
    let fresh_p50 = in_process(&mut || {}, &|| {
        rpo_exporter::metrics::render(&config, &store.snapshot(), &aws_calls, SystemTime::now())
            .len()
    });

    let series =
        rpo_exporter::metrics::render(&config, &store.snapshot(), &aws_calls, SystemTime::now())
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
    let _ = stop_tx.send(true);
    let polls_during = server_rt
        .block_on(polls)
        .map_err(|e| format!("poll task: {e}"))?;
    let _ = server_rt.block_on(server);
    Ok(SizeResult {
        targets: n,
        groups: config.groups.len(),
        series,
        fresh_p50,
        polls_during,
        endpoints: results,
    })
}

/// What the `/failover-readiness` handler does to build its body.
fn readiness_body(config: &Config, store: &Store, group: Option<&str>) -> usize {
    let verdict = evaluate(
        config,
        &store.snapshot(),
        Mode::Planned,
        SystemTime::now(),
        group,
    );
    serde_json::to_string_pretty(&verdict.to_json())
        .unwrap_or_default()
        .len()
}

// ---------------------------------------------------------------------------
// Daemon footprint.

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn proc_sample(pid: u32) -> Result<ProcSample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces): state is
    // field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    Ok(ProcSample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        cpu_ticks: tick(11) + tick(12),
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The `rpo-exporter` binary built beside this one.
fn sibling_exporter() -> Result<PathBuf, String> {
    let exporter = std::env::current_exe()
        .map_err(|e| format!("current_exe: {e}"))?
        .parent()
        .map(|d| d.join("rpo-exporter"))
        .ok_or("current_exe has no directory")?;
    if !exporter.is_file() {
        return Err(format!(
            "{} not found; build both binaries first (cargo build --release -p rpo-exporter -p rpo-bench)",
            exporter.display()
        ));
    }
    Ok(exporter)
}

fn daemon_bench(options: &Options) -> Result<(), String> {
    let exporter = sibling_exporter()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(daemon_run(exporter, options.seconds))
}

async fn daemon_run(exporter: PathBuf, seconds: u64) -> Result<(), String> {
    let load_before = load_average();
    eprintln!("rpo-bench: starting a Postgres primary and a streaming replica...");
    let pair = tokio::task::spawn_blocking(PostgresPair::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // An application writing an order every 200 ms.
    let writer = OrderWriter::start(&pair)?;

    let port = lab::free_port();
    let config_path = pair.data_dir().join("rpo-bench.toml");
    let config_text = format!(
        r#"[exporter]
instance = "bench"

[web]
listen_address = "127.0.0.1:{port}"

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
heartbeat = {{ interval = "1s" }}

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
    std::fs::write(&config_path, config_text).map_err(|e| format!("write config: {e}"))?;
    let log_path = pair.data_dir().join("rpo-exporter.log");

    let started = Instant::now();
    let mut child = spawn_exporter(&exporter, &config_path, &log_path)?;
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;

    let outcome = async {
        // Ready: the config is loaded and every target has been polled once.
        let ready_after = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the exporter exited early ({status}); see {}",
                    log_path.display()
                ));
            }
            if let Ok(resp) = client.get(format!("{base}/-/ready")).send().await {
                if resp.status().is_success() {
                    break started.elapsed();
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("the exporter was not ready within 30 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let at_ready = proc_sample(pid)?;
        // Let the first connections and heartbeat table settle.
        tokio::time::sleep(Duration::from_secs(3)).await;

        eprintln!("rpo-bench: measuring the exporter (pid {pid}) for {seconds} s...");
        let first = proc_sample(pid)?;
        let window_start = Instant::now();
        let mut samples = vec![first];
        let mut scrape_times = Vec::new();
        let mut scrape_bytes = 0;
        let mut scrape_errors = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..seconds {
            tick.tick().await;
            let t = Instant::now();
            match client.get(format!("{base}/metrics")).send().await {
                Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                    Ok(body) => {
                        scrape_times.push(t.elapsed());
                        scrape_bytes = body.len();
                    }
                    Err(_) => scrape_errors += 1,
                },
                _ => scrape_errors += 1,
            }
            samples.push(proc_sample(pid)?);
        }
        let wall = window_start.elapsed();
        let last = *samples.last().expect("samples");
        let verdict = client
            .get(format!("{base}/failover-readiness?group=erp"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let verdict_status = verdict.status().as_u16();
        let verdict_json: serde_json::Value = verdict.json().await.map_err(|e| e.to_string())?;
        let exposure = verdict_json["groups"][0]["exposure_seconds"].as_f64();
        Ok((
            ready_after,
            at_ready,
            samples,
            wall,
            last,
            scrape_times,
            scrape_bytes,
            scrape_errors,
            verdict_status,
            exposure,
        ))
    }
    .await;

    // Stop it like an init system would, whatever happened above.
    let stopped = stop_with_sigterm(&mut child, Duration::from_secs(10));
    let written = writer.stop().await;

    let (
        ready_after,
        at_ready,
        samples,
        wall,
        last,
        mut scrape_times,
        scrape_bytes,
        scrape_errors,
        verdict_status,
        exposure,
    ) = match outcome {
        Ok(o) => o,
        Err(problem) => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("{problem}\nexporter log:\n{log}"));
        }
    };
    let hz = clock_ticks();
    let cpu_seconds = (last.cpu_ticks - samples[0].cpu_ticks) as f64 / hz;
    let cpu_percent = cpu_seconds / wall.as_secs_f64() * 100.0;
    // Steady RSS: the median over the second half of the window.
    let mut second_half: Vec<u64> = samples[samples.len() / 2..]
        .iter()
        .map(|s| s.rss_kib)
        .collect();
    second_half.sort_unstable();
    let steady = second_half[second_half.len() / 2];
    let min_rss = samples.iter().map(|s| s.rss_kib).min().unwrap_or(0);
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let scrape = (!scrape_times.is_empty()).then(|| stats(&mut scrape_times));
    let exit_text = match stopped {
        Some((status, took)) if status.success() => format!("exit 0 after {} ms", took.as_millis()),
        Some((status, took)) => format!("**{status}** after {} ms", took.as_millis()),
        None => "**did not exit within 10 s; killed**".to_string(),
    };

    println!("### Daemon footprint\n");
    println!(
        "The `rpo-exporter` binary watching the lab pair (a Postgres primary and a streaming \
         replica on this machine, an INSERT every 200 ms): two targets with `poll_interval = \"1s\"`, \
         one with `heartbeat = {{ interval = \"1s\" }}`; `/metrics` scraped once a second; \
         `/proc/<pid>` sampled once a second over {seconds} s after a 3 s settle.\n"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| CPU (user+system, % of one core) | {cpu_percent:.2} % ({cpu_seconds:.2} s = {} ticks over {:.1} s) |",
        last.cpu_ticks - samples[0].cpu_ticks,
        wall.as_secs_f64()
    );
    println!("| RSS steady (median, second half) | {} |", mib(steady));
    println!(
        "| RSS min / max over the window | {} / {} |",
        mib(min_rss),
        mib(max_rss)
    );
    println!("| RSS peak (VmHWM, since start) | {} |", mib(last.hwm_kib));
    println!(
        "| RSS when first ready | {} (ready {} ms after spawn) |",
        mib(at_ready.rss_kib),
        ready_after.as_millis()
    );
    println!("| threads | {} |", last.threads);
    if let Some(s) = scrape {
        println!(
            "| `/metrics` scrape p50 / p99 / max | {} / {} / {} ms ({}, {} failed) |",
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            size(scrape_bytes),
            scrape_errors
        );
    }
    println!(
        "| verdict at the end | HTTP {verdict_status}{} |",
        exposure
            .map(|e| format!(", group exposure {e:.3} s"))
            .unwrap_or_default()
    );
    println!("| rows written by the application | {written} |");
    println!("| SIGTERM | {exit_text} |");
    println!("\nMachine: {}  ", machine());
    println!(
        "Load average (1 min) before / after: {load_before} / {}  ",
        load_average()
    );
    println!("Command: `{}`  ", command_line());
    println!(
        "Clock ticks: {hz} per second (getconf CLK_TCK); exporter: {}",
        exporter.display()
    );
    drop(pair);
    match stopped {
        Some((status, _)) if status.success() => Ok(()),
        _ => Err("the exporter did not exit 0 on SIGTERM".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Options;

    #[test]
    fn the_flags_keep_their_defaults() {
        Options::command().debug_assert();
        let defaults = Options::try_parse_from(["rpo-bench"]).unwrap();
        assert!(!defaults.daemon);
        assert!(!defaults.memory);
        assert_eq!(defaults.seconds, 60);
        assert_eq!(defaults.requests, 500);
        assert_eq!(defaults.sizes, [10, 100, 1000]);
    }

    #[test]
    fn targets_are_a_comma_list_of_positive_numbers() {
        let options = Options::try_parse_from([
            "rpo-bench",
            "--daemon",
            "--seconds",
            "5",
            "--targets",
            "10, 20",
        ])
        .unwrap();
        assert!(options.daemon);
        assert_eq!(options.seconds, 5);
        assert_eq!(options.sizes, [10, 20]);
        let memory =
            Options::try_parse_from(["rpo-bench", "--memory", "--targets", "1000,10000"]).unwrap();
        assert!(memory.memory);
        assert_eq!(memory.sizes, [1000, 10000]);
        for other in ["--daemon", "--peers", "--aws-cost", "--scale"] {
            assert!(
                Options::try_parse_from(["rpo-bench", "--memory", other]).is_err(),
                "--memory with {other}"
            );
        }
        for bad in [
            ["--targets", "10,0"],
            ["--requests", "0"],
            ["--seconds", "soon"],
        ] {
            assert!(
                Options::try_parse_from(["rpo-bench", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }
}
