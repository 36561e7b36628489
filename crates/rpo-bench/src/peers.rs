//! Side by side with the peers: the real `rpo-exporter` watching N targets
//! on one real Postgres pair and one real Redis pair, and, in the same run,
//! `postgres_exporter` and `redis_exporter` (the Debian packages
//! `prometheus-postgres-exporter`, `prometheus-redis-exporter`; install them
//! with `scripts/install-deps.sh --bench`) watching the same four servers.
//!
//! ```text
//! cargo build --release -p rpo-exporter -p rpo-bench
//! target/release/rpo-bench --peers --targets 2,100,1000 [--seconds 60] [--requests 200]
//! ```
//!
//! **What is compared.** An rpo target watches a *pair* (source and
//! replica) and answers for it; the peers watch *one server* per process.
//! Watching one Postgres pair and one Redis pair takes four peer processes
//! (postgres_exporter on the primary and on the replica, redis_exporter on
//! the primary and on the replica), which is what runs here. N rpo targets
//! (half `postgres`, half `redis`, each with its own heartbeat table or key,
//! all on the same two lab pairs, so sharing one connection per server and
//! purpose; the heartbeat tables made beforehand) stand for N pairs;
//! the peers watching N such pairs would be N/2 copies of the four
//! processes. So the table shows:
//!
//! - the four peer processes as measured (they cover two pairs);
//! - "per pair": rpo's total divided by N, beside the peers' total divided
//!   by 2 (for RSS and CPU; a peer process is independent of the others, so
//!   N pairs cost N/2 times the measured four, exactly in RSS and CPU);
//! - `/metrics` latency per scrape as measured (one rpo scrape answers for N
//!   pairs; the peers need 2N scrapes for the same).
//!
//! The work is not the same either way: rpo writes a heartbeat per target
//! every second (a real write on the source) and polls every 5 s on its own;
//! the peers only answer scrapes (they query the server at each scrape). In
//! the footprint window every process is scraped every `poll_interval`
//! (5 s), so the peers' data is as fresh as rpo's.
//!
//! Phases for each size: start rpo with N targets, wait until it is ready
//! (every target polled once), let it settle 5 s, then a footprint window
//! (`--seconds`: CPU seconds from `/proc/<pid>/stat`, RSS median of the
//! samples, one sample a second, every process scraped every 5 s), then a
//! latency phase (`--requests` sequential keep-alive GETs of `/metrics` per
//! process, timed until the body is read), then SIGTERM. The peers run for
//! the whole benchmark.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rpo_lab::redis::RedisPair;
use rpo_lab::{self as lab, PostgresPair};

use crate::support::{stop_with_sigterm, OrderWriter};
use crate::{
    clock_ticks, command_line, load_average, machine, mib, ms, proc_sample, sibling_exporter, size,
    stats, Options, ProcSample, Stats,
};

/// The peers' binaries as Debian installs them.
const POSTGRES_EXPORTER: &str = "prometheus-postgres-exporter";
const REDIS_EXPORTER: &str = "prometheus-redis-exporter";

/// A process under measurement and its `/metrics` URL.
struct Watched {
    name: String,
    pid: u32,
    metrics_url: String,
}

/// What one process cost in one size's window.
struct Cost {
    name: String,
    rss_kib: u64,
    cpu_seconds: f64,
    latency: Stats,
    body: usize,
    failed: usize,
    /// The process's own "I reach my server" gauge at the end (after the
    /// back-to-back GETs of the latency phase).
    up: String,
    /// The fewest of its gauges at 1 in the window's scrapes (every 5 s),
    /// of how many: the steady state, before the latency phase's burst.
    up_window: Option<(usize, usize)>,
}

/// A child killed (SIGTERM, then SIGKILL after 10 s) when dropped.
struct Guard {
    child: Child,
    name: String,
}

impl Guard {
    fn terminate(&mut self) -> Option<(std::process::ExitStatus, Duration)> {
        let stopped = stop_with_sigterm(&mut self.child, Duration::from_secs(10));
        if stopped.is_none() {
            eprintln!("rpo-bench: {} did not stop on SIGTERM; killed", self.name);
        }
        stopped
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn which(binary: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("{binary} not found on PATH; install it with `scripts/install-deps.sh --bench`")
        })
}

fn spawn(
    name: &str,
    program: &std::path::Path,
    args: &[String],
    env: &[(&str, String)],
    log_dir: &std::path::Path,
) -> Result<Guard, String> {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log")))
        .map_err(|e| format!("create log: {e}"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    Ok(Guard {
        child,
        name: name.to_string(),
    })
}

/// N targets: the first half `postgres`, the rest `redis`, ten to a group,
/// each with its own heartbeat table or key.
pub(crate) fn peer_config(
    n: usize,
    port: u16,
    pg: (&str, &str),
    redis: (&str, &str),
    heartbeat: &str,
) -> String {
    let mut toml = format!(
        "[exporter]\ninstance = \"bench\"\n\n[web]\nlisten_address = \"127.0.0.1:{port}\"\n\n"
    );
    for g in 0..n.div_ceil(10) {
        toml.push_str(&format!(
            "[[group]]\nname = \"erp-{g:04}\"\nrpo_budget = \"60s\"\n\n"
        ));
    }
    for i in 0..n {
        let group = i / 10;
        if i < pg_targets(n) {
            toml.push_str(&format!(
                "[[postgres]]\nname = \"pg-{i:05}\"\ngroup = \"erp-{group:04}\"\n\
                 primary_url = \"{}\"\nreplica_url = \"{}\"\n\
                 heartbeat = {{ interval = \"{heartbeat}\", table = \"rpo_hb_{i:05}\" }}\n\n",
                pg.0, pg.1
            ));
        } else {
            toml.push_str(&format!(
                "[[redis]]\nname = \"redis-{i:05}\"\ngroup = \"erp-{group:04}\"\n\
                 primary_url = \"{}\"\nreplica_url = \"{}\"\n\
                 heartbeat = {{ interval = \"{heartbeat}\", key = \"rpo:hb:{i:05}\" }}\n\n",
                redis.0, redis.1
            ));
        }
    }
    toml
}

/// How many of N targets are `postgres` (the first half; one of one).
fn pg_targets(n: usize) -> usize {
    (n / 2).max(usize::from(n == 1))
}

/// The statement the exporter runs for target `i`'s heartbeat table
/// (`kinds::postgres`, `create_table = true`).
fn heartbeat_table_sql(i: usize) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS rpo_hb_{i:05} (instance text PRIMARY KEY, \
         ts double precision NOT NULL, written_at timestamptz NOT NULL DEFAULT now());\n"
    )
}

/// Lines `name{...} value` of an exposition, the values.
fn sample_values<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(move |l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

/// The failing probes of an exposition by kind, with their failure
/// counters by reason: `postgres: 5000 failing (timeout 20000)`.
fn failure_summary(text: &str) -> String {
    use std::collections::BTreeMap;
    let label = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}=\""))? + key.len() + 2;
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_string())
    };
    let mut failing: BTreeMap<String, (usize, BTreeMap<String, f64>)> = BTreeMap::new();
    for line in text.lines() {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let Some(kind) = label(line, "kind") else {
            continue;
        };
        if line.starts_with("rpo_probe_success{") && value == Some(0.0) {
            failing.entry(kind).or_default().0 += 1;
        } else if line.starts_with("rpo_probe_failures_total{") {
            if let (Some(reason), Some(v)) = (label(line, "reason"), value) {
                if v > 0.0 {
                    *failing
                        .entry(kind)
                        .or_default()
                        .1
                        .entry(reason)
                        .or_default() += v;
                }
            }
        }
    }
    let kinds: Vec<String> = failing
        .into_iter()
        .map(|(kind, (n, reasons))| {
            let reasons: Vec<String> = reasons.iter().map(|(r, v)| format!("{r} {v}")).collect();
            format!("{kind}: {n} failing ({})", reasons.join(", "))
        })
        .collect();
    if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.join("; ")
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

async fn wait_for(client: &reqwest::Client, url: &str, within: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if get(client, url).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(format!("{url} did not answer 200 within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn peers_bench(options: &Options) -> Result<(), String> {
    let exporter = sibling_exporter()?;
    let pg_exporter = which(POSTGRES_EXPORTER)?;
    let redis_exporter = which(REDIS_EXPORTER)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run(options, exporter, pg_exporter, redis_exporter))
}

async fn run(
    options: &Options,
    exporter: PathBuf,
    pg_exporter: PathBuf,
    redis_exporter: PathBuf,
) -> Result<(), String> {
    let load_before = load_average();
    eprintln!("rpo-bench: starting a Postgres pair and a Redis pair...");
    let pg = tokio::task::spawn_blocking(PostgresPair::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Targets naming the same server share its connections, so rpo holds
    // a few per server whatever N; the peers hold one each. The lab's
    // default of 100 is enough; 200 leaves room for reconnections. (It
    // was N + 100 while each target held its own: with 10,100 the first
    // heartbeats' CREATE TABLEs took 0.8-5 s each on the lab's primary,
    // against a few ms with 200.)
    let max_connections = 200;
    {
        let conf = format!("\n# rpo-bench\nmax_connections = {max_connections}\n");
        let append = |dir: PathBuf| -> Result<(), String> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("postgresql.conf"))
                .map_err(|e| format!("postgresql.conf: {e}"))?;
            f.write_all(conf.as_bytes()).map_err(|e| e.to_string())
        };
        pg.stop_replica().map_err(|e| e.to_string())?;
        pg.stop_primary().map_err(|e| e.to_string())?;
        append(pg.primary_data_dir())?;
        append(pg.replica_data_dir())?;
        pg.start_primary().map_err(|e| e.to_string())?;
        pg.start_replica().map_err(|e| e.to_string())?;
        pg.wait_for_streaming(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
    }
    // The heartbeat tables, made before rpo starts, as an administrator
    // makes them in production (README: the grants): the first start with
    // thousands of new tables would otherwise measure DDL, one CREATE TABLE
    // at a time on the shared heartbeat connection (10-30 ms each here,
    // minutes for 5,000, while the server's polls time out), not watching.
    let largest = options.sizes.iter().copied().max().unwrap_or(2);
    eprintln!(
        "rpo-bench: creating {} heartbeat tables...",
        pg_targets(largest)
    );
    for chunk in (0..pg_targets(largest)).collect::<Vec<_>>().chunks(250) {
        let sql: String = chunk.iter().map(|i| heartbeat_table_sql(*i)).collect();
        pg.primary_sql(&sql).map_err(|e| e.to_string())?;
    }
    let redis = tokio::task::spawn_blocking(RedisPair::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    redis
        .wait_for_link_up(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    // The application: an INSERT every 200 ms, so WAL flows.
    let writer = OrderWriter::start(&pg)?;

    let dir = pg.data_dir().to_path_buf();
    let pg_dsn = |url: String| format!("{url}?sslmode=disable");
    let mut peers = Vec::new();
    let mut watched_peers = Vec::new();
    for (name, program, args, env) in [
        (
            "postgres_exporter (primary)",
            &pg_exporter,
            vec![],
            vec![("DATA_SOURCE_NAME", pg_dsn(pg.primary_url()))],
        ),
        (
            "postgres_exporter (replica)",
            &pg_exporter,
            vec![],
            vec![("DATA_SOURCE_NAME", pg_dsn(pg.replica_url()))],
        ),
        (
            "redis_exporter (primary)",
            &redis_exporter,
            vec![format!("--redis.addr={}", redis.primary_url())],
            vec![],
        ),
        (
            "redis_exporter (replica)",
            &redis_exporter,
            vec![format!("--redis.addr={}", redis.replica_url())],
            vec![],
        ),
    ] {
        let port = lab::free_port();
        let mut args = args;
        args.push(format!("--web.listen-address=127.0.0.1:{port}"));
        let file = name.replace([' ', '(', ')'], "");
        let guard = spawn(&file, program, &args, &env, &dir)?;
        watched_peers.push(Watched {
            name: name.to_string(),
            pid: guard.child.id(),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        });
        peers.push(guard);
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    for p in &watched_peers {
        wait_for(&client, &p.metrics_url, Duration::from_secs(30)).await?;
    }

    let mut results = Vec::new();
    for &n in &options.sizes {
        eprintln!("rpo-bench: {n} rpo targets beside the four peers...");
        let port = lab::free_port();
        let config_path = dir.join(format!("rpo-bench-{n}.toml"));
        let text = peer_config(
            n,
            port,
            (&pg.primary_url(), &pg.replica_url()),
            (&redis.primary_url(), &redis.replica_url()),
            &options.heartbeat,
        );
        std::fs::write(&config_path, text).map_err(|e| format!("write config: {e}"))?;
        let started = Instant::now();
        let mut rpo = spawn(
            &format!("rpo-exporter-{n}"),
            &exporter,
            &[
                "--config".to_string(),
                config_path.display().to_string(),
                "--log.level".to_string(),
                "warn".to_string(),
            ],
            &[],
            &dir,
        )?;
        let base = format!("http://127.0.0.1:{port}");
        let ready = wait_for(
            &client,
            &format!("{base}/-/ready"),
            Duration::from_secs(300),
        )
        .await;
        let ready_after = started.elapsed();
        if let Err(e) = ready {
            let log = std::fs::read_to_string(dir.join(format!("rpo-exporter-{n}.log")))
                .unwrap_or_default();
            return Err(format!("{e}\nexporter log (tail):\n{}", tail(&log, 30)));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut watched = vec![Watched {
            name: format!("rpo-exporter ({n} targets)"),
            pid: rpo.child.id(),
            metrics_url: format!("{base}/metrics"),
        }];
        watched.extend(watched_peers.iter().map(|p| Watched {
            name: p.name.clone(),
            pid: p.pid,
            metrics_url: p.metrics_url.clone(),
        }));
        let costs = measure(&client, &watched, options).await?;
        // Every rpo target really reached its servers.
        let text = get(&client, &format!("{base}/metrics")).await?;
        let successes: Vec<f64> = sample_values(&text, "rpo_probe_success").collect();
        let ok = successes.iter().filter(|v| **v == 1.0).count();
        let failing = failure_summary(&text);
        let stopped = rpo.terminate();
        results.push(SizeResult {
            n,
            ready_after,
            probes_ok: ok,
            probes: successes.len(),
            failing,
            costs,
            stop: stopped,
        });
    }
    let written = writer.stop().await;
    for p in &mut peers {
        p.terminate();
    }
    print_results(&results, options, &load_before, written);
    drop(pg);
    drop(redis);
    for r in &results {
        if r.probes_ok != r.n || r.probes != r.n {
            return Err(format!(
                "at {} targets only {} of {} probes succeeded; failing: {}",
                r.n, r.probes_ok, r.probes, r.failing
            ));
        }
        match r.stop {
            Some((status, _)) if status.success() => {}
            _ => {
                return Err(format!(
                    "at {} targets rpo-exporter did not exit 0 on SIGTERM",
                    r.n
                ))
            }
        }
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct SizeResult {
    n: usize,
    ready_after: Duration,
    probes_ok: usize,
    probes: usize,
    /// The failing probes by kind and failure reason (see `failure_summary`).
    failing: String,
    costs: Vec<Cost>,
    stop: Option<(std::process::ExitStatus, Duration)>,
}

/// Each process's "I reach my server" gauge.
const UP_GAUGES: [&str; 3] = ["rpo_probe_success", "pg_up", "redis_up"];

/// How many of a process's up gauges are 1, of how many.
fn up_gauge(text: &str) -> Option<(usize, usize)> {
    UP_GAUGES.iter().find_map(|name| {
        let values: Vec<f64> = sample_values(text, name).collect();
        let ones = values.iter().filter(|v| **v == 1.0).count();
        (!values.is_empty()).then_some((ones, values.len()))
    })
}

async fn measure(
    client: &reqwest::Client,
    watched: &[Watched],
    options: &Options,
) -> Result<Vec<Cost>, String> {
    let first: Vec<ProcSample> = watched
        .iter()
        .map(|w| proc_sample(w.pid))
        .collect::<Result<_, _>>()?;
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); watched.len()];
    let mut up_window: Vec<Option<(usize, usize)>> = vec![None; watched.len()];
    let window = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut second = 0u64;
    while window.elapsed() < Duration::from_secs(options.seconds) {
        tick.tick().await;
        if second % 5 == 0 {
            for (i, w) in watched.iter().enumerate() {
                if let Ok(text) = get(client, &w.metrics_url).await {
                    if let Some((ones, all)) = up_gauge(&text) {
                        let fewest = up_window[i].map_or(ones, |(o, _)| o.min(ones));
                        up_window[i] = Some((fewest, all));
                    }
                }
            }
        }
        second += 1;
        for (i, w) in watched.iter().enumerate() {
            rss[i].push(proc_sample(w.pid)?.rss_kib);
        }
    }
    let last: Vec<ProcSample> = watched
        .iter()
        .map(|w| proc_sample(w.pid))
        .collect::<Result<_, _>>()?;
    let hz = clock_ticks();
    let mut costs = Vec::new();
    for (i, w) in watched.iter().enumerate() {
        let mut times = Vec::new();
        let mut failed = 0;
        let mut body = 0;
        let mut text = String::new();
        for _ in 0..options.requests {
            let t = Instant::now();
            match get(client, &w.metrics_url).await {
                Ok(b) => {
                    times.push(t.elapsed());
                    body = b.len();
                    text = b;
                }
                Err(_) => failed += 1,
            }
        }
        if times.is_empty() {
            return Err(format!("{}: every /metrics GET failed", w.name));
        }
        let up = UP_GAUGES
            .iter()
            .find_map(|name| {
                let values: Vec<f64> = sample_values(&text, name).collect();
                (!values.is_empty()).then(|| {
                    let ones = values.iter().filter(|v| **v == 1.0).count();
                    format!("`{name}` 1 in {ones}/{}", values.len())
                })
            })
            .unwrap_or_else(|| "no up gauge".to_string());
        rss[i].sort_unstable();
        costs.push(Cost {
            name: w.name.clone(),
            rss_kib: rss[i][rss[i].len() / 2],
            cpu_seconds: (last[i].cpu_ticks - first[i].cpu_ticks) as f64 / hz,
            latency: stats(&mut times),
            body,
            failed,
            up,
            up_window: up_window[i],
        });
    }
    Ok(costs)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a / b < 0.1 {
        format!("{:.4}×", a / b)
    } else if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".to_string()
    }
}

fn print_results(results: &[SizeResult], options: &Options, load_before: &str, written: u64) {
    println!("### Side by side with postgres_exporter and redis_exporter\n");
    println!(
        "One Postgres pair and one Redis pair on this machine. rpo-exporter watches N targets \
         on them (half `postgres`, half `redis`; each with its own heartbeat table (made \
         beforehand) or key, sharing one connection per server and purpose, heartbeat every \
         {}, polls every 5 s); postgres_exporter and \
         redis_exporter watch the same four servers (one process per server, default flags). \
         Footprint window {} s: every process scraped every 5 s, RSS the median of one sample \
         a second, CPU = user+system seconds in the window. Then {} sequential keep-alive GETs \
         of `/metrics` per process.\n",
        options.heartbeat, options.seconds, options.requests
    );
    println!("Measured, per process:\n");
    println!(
        "| run | process | RSS | CPU s | `/metrics` p50 ms | p99 ms | body | up (fewest in the window) | up at the end |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        for c in &r.costs {
            println!(
                "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {}{} |",
                r.n,
                c.name,
                mib(c.rss_kib),
                c.cpu_seconds,
                ms(c.latency.p50),
                ms(c.latency.p99),
                size(c.body),
                c.up_window
                    .map_or("–".to_string(), |(ones, all)| format!("{ones}/{all}")),
                c.up,
                if c.failed > 0 {
                    format!(", {} GETs failed", c.failed)
                } else {
                    String::new()
                }
            );
        }
    }
    println!();
    println!(
        "Compared like with like: one rpo target answers for one pair; the peers need two \
         processes per pair (one per server), so the four measured peer processes cover two \
         pairs and N pairs cost N/2 times them (RSS and CPU add up exactly: they are separate \
         processes). Latency is per scrape; rpo answers for N pairs in one scrape where the \
         peers need 2N.\n"
    );
    println!("| N targets (= pairs) | RSS per pair: rpo / peers | ratio | CPU s per pair: rpo / peers | ratio | `/metrics` p50 ms: rpo / peer mean | ratio | p99 ms: rpo / peer mean | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (rpo, peers) = r.costs.split_first().expect("rpo first");
        let n = r.n as f64;
        let peer_rss: f64 = peers.iter().map(|c| c.rss_kib as f64).sum::<f64>() / 2.0;
        let peer_cpu: f64 = peers.iter().map(|c| c.cpu_seconds).sum::<f64>() / 2.0;
        let mean = |f: &dyn Fn(&Cost) -> Duration| {
            peers.iter().map(|c| f(c).as_secs_f64()).sum::<f64>() / peers.len() as f64
        };
        let peer_p50 = mean(&|c| c.latency.p50);
        let peer_p99 = mean(&|c| c.latency.p99);
        let rpo_rss = rpo.rss_kib as f64 / n;
        let rpo_cpu = rpo.cpu_seconds / n;
        println!(
            "| {} | {:.0} KiB / {:.0} KiB | {} | {:.4} / {:.3} | {} | {} / {} | {} | {} / {} | {} |",
            r.n,
            rpo_rss,
            peer_rss,
            ratio(rpo_rss, peer_rss),
            rpo_cpu,
            peer_cpu,
            ratio(rpo_cpu, peer_cpu),
            ms(rpo.latency.p50),
            ms(Duration::from_secs_f64(peer_p50)),
            ratio(rpo.latency.p50.as_secs_f64(), peer_p50),
            ms(rpo.latency.p99),
            ms(Duration::from_secs_f64(peer_p99)),
            ratio(rpo.latency.p99.as_secs_f64(), peer_p99),
        );
    }
    println!();
    for r in results {
        println!(
            "- {} targets: ready (every target polled once) {:.1} s after spawn; `rpo_probe_success` 1 for {}/{} targets; SIGTERM: {}",
            r.n,
            r.ready_after.as_secs_f64(),
            r.probes_ok,
            r.probes,
            match r.stop {
                Some((status, took)) if status.success() => format!("exit 0 after {} ms", took.as_millis()),
                Some((status, took)) => format!("**{status}** after {} ms", took.as_millis()),
                None => "**killed after 10 s**".to_string(),
            }
        );
    }
    println!("- rows written by the application meanwhile: {written}");
    println!("\nMachine: {}  ", machine());
    println!(
        "Load average (1 min) before / after: {load_before} / {}  ",
        load_average()
    );
    println!("Command: `{}`", command_line());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_splits_kinds_and_gives_each_target_its_own_heartbeat() {
        let pg = ("postgres://u@127.0.0.1:1/db", "postgres://u@127.0.0.1:2/db");
        let redis = ("redis://127.0.0.1:3", "redis://127.0.0.1:4");
        let text = peer_config(4, 9, pg, redis, "1s");
        let config = rpo_exporter::config::Config::from_toml(&text, std::path::Path::new("b.toml"))
            .expect("valid");
        assert_eq!(config.targets.len(), 4);
        assert_eq!(text.matches("[[postgres]]").count(), 2);
        assert_eq!(text.matches("[[redis]]").count(), 2);
        for t in [
            "rpo_hb_00000",
            "rpo_hb_00001",
            "rpo:hb:00002",
            "rpo:hb:00003",
        ] {
            assert_eq!(text.matches(t).count(), 1, "{t}");
        }
        // One target: a postgres one.
        let one = peer_config(1, 9, pg, redis, "1s");
        assert_eq!(one.matches("[[postgres]]").count(), 1);
        assert_eq!(one.matches("[[redis]]").count(), 0);
    }

    #[test]
    fn failure_summary_counts_failing_probes_and_reasons_by_kind() {
        let text = "rpo_probe_success{group=\"g\",target=\"a\",kind=\"postgres\"} 0\n\
                    rpo_probe_success{group=\"g\",target=\"b\",kind=\"redis\"} 1\n\
                    rpo_probe_failures_total{group=\"g\",target=\"a\",kind=\"postgres\",reason=\"timeout\"} 3\n\
                    rpo_probe_failures_total{group=\"g\",target=\"b\",kind=\"redis\",reason=\"timeout\"} 0\n";
        assert_eq!(failure_summary(text), "postgres: 1 failing (timeout 3)");
        assert_eq!(
            failure_summary("rpo_probe_success{kind=\"redis\"} 1\n"),
            "none"
        );
    }

    #[test]
    fn sample_values_reads_only_the_named_family() {
        let text = "# HELP pg_up x\npg_up 1\npg_up_extra 7\nredis_up{a=\"b\"} 0\n";
        assert_eq!(sample_values(text, "pg_up").collect::<Vec<_>>(), [1.0]);
        assert_eq!(sample_values(text, "redis_up").collect::<Vec<_>>(), [0.0]);
    }
}
