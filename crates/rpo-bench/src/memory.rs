//! `--memory --targets 1000,10000`: where a target's memory goes, counted
//! in bytes the program holds (jemalloc's `stats.allocated`, not RSS),
//! stage by stage, in this one process, for N targets of two shapes:
//!
//! - `redis`: the configuration `--scale` writes (N `redis` targets naming
//!   one lab Redis pair with the same URLs, no heartbeat), and reports the
//!   real redis probe made: one probe polls the lab pair twice before
//!   anything is counted, and its measurement is what every target records;
//! - Postgres-like: the render benchmark's configuration and reports
//!   (`synthetic_config`, `record`: the postgres probe's detail series,
//!   every other target with a 1 s heartbeat).
//!
//! Each stage is what the daemon keeps for it: the bytes allocated after
//! it minus before, with the stage's data still held and its temporaries
//! dropped, divided by N. Probes and tasks are built as the daemon builds
//! them (`kinds::build`, `Poller::start`) on a runtime that never runs the
//! tasks, so no connection is opened: a connection's own buffers are not
//! counted (issue #14 excludes them). Allocator slack, thread caches and
//! the connections' buffers are in RSS but not here; the difference from
//! the README's RSS figure is that remainder, not a measurement of it.
//!
//! Prints Markdown. Nothing here is asserted in tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rpo_exporter::board::{History, HISTORY_EVERY, HISTORY_WINDOW};
use rpo_exporter::config::Config;
use rpo_exporter::kinds;
use rpo_exporter::metrics::{render_cached_into, BodyPool, RenderCache};
use rpo_exporter::poller::Poller;
use rpo_exporter::probe::{Detail, Measurement, ProbeContext};
use rpo_exporter::readiness::{evaluate, Mode};
use rpo_exporter::self_metrics::AwsCallCounters;
use rpo_exporter::store::{Store, TargetId, TargetReport};
use rpo_lab::redis::RedisPair;
use tikv_jemalloc_ctl::{epoch, stats, Access, AsName};

use crate::{command_line, load_average, machine, record, size, synthetic_config, Rng};

/// The README's RSS growth per target between 1,000 and 10,000 `redis`
/// targets (`--scale`, release build; README, "At scale").
const README_RSS_PER_TARGET_KIB: f64 = 19.3;

/// Turns this thread's jemalloc cache off (flushing it): with it on, what
/// was freed stays counted as allocated until the cache returns it, which
/// it does at times of its own (one stage's count then goes negative, by
/// as much as a hundred KiB). Everything measured here allocates on this
/// thread (the runtime is a current-thread one).
fn no_thread_cache() -> Result<(), String> {
    "thread.tcache.enabled\0"
        .name()
        .write(false)
        .map_err(|e| format!("jemalloc thread.tcache.enabled: {e}"))
}

/// Bytes the program holds now, as jemalloc counts them (its statistics
/// are refreshed first).
fn allocated() -> Result<i64, String> {
    epoch::advance().map_err(|e| format!("jemalloc epoch: {e}"))?;
    stats::allocated::read()
        .map(|bytes| bytes as i64)
        .map_err(|e| format!("jemalloc stats.allocated: {e}"))
}

/// The stages, in the order they are measured. Each one's bytes are what
/// it added to what the stages before it hold.
const STAGES: [&str; 10] = [
    "1. configuration (`Config::from_toml`)",
    "2. store, N reports never polled",
    "3a. store after one poll (and one heartbeat, where configured) per target",
    "3b. store after two more polls each (retained state: history, counters)",
    "4a. `/metrics` render cache after one scrape (the fragments it keeps)",
    "4b. `/metrics` body kept for the next scrape (while scraped)",
    "5a. board history after 3 verdicts (the first 30 s)",
    "5b. board history after 181 verdicts (full 30 min window)",
    "6. probes (and heartbeat writers) as `kinds::build` makes them, not connected",
    "7. poll and heartbeat tasks (`Poller::start`: tasks, each target's copy, the map)",
];

/// What one shape of targets costs at one size.
struct Measured {
    targets: usize,
    /// Bytes per stage (in [`STAGES`] order), for all N targets.
    stages: Vec<i64>,
    /// The `/metrics` body of the scrape in stage 4a.
    body_bytes: usize,
    /// Tasks `Poller::start` spawned.
    tasks: usize,
}

impl Measured {
    fn per_target(&self, stage: usize) -> f64 {
        self.stages[stage] as f64 / self.targets as f64
    }

    fn total(&self) -> i64 {
        self.stages.iter().sum()
    }
}

/// The two shapes of targets.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Redis,
    PostgresLike,
}

pub fn run(sizes: &[usize]) -> Result<(), String> {
    let load_before = load_average();
    no_thread_cache()?;
    eprintln!("rpo-bench: starting a Redis primary and replica (for one real poll)...");
    let pair = RedisPair::start().map_err(|e| e.to_string())?;
    pair.wait_for_link_up(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let template = runtime.block_on(redis_template(&pair))?;

    let mut results: Vec<(Measured, Measured)> = Vec::new();
    for &n in sizes {
        eprintln!("rpo-bench: {n} redis targets...");
        let redis = measure(&runtime, n, Shape::Redis, &pair, &template)?;
        eprintln!("rpo-bench: {n} Postgres-like targets...");
        let postgres = measure(&runtime, n, Shape::PostgresLike, &pair, &template)?;
        results.push((redis, postgres));
    }

    println!("### Where a target's memory goes\n");
    println!(
        "Bytes allocated (jemalloc's `stats.allocated`, not RSS) per target, stage by stage, \
         in one process: each stage's data held, its temporaries dropped. `redis`: the \
         configuration `--scale` writes (N targets naming one lab Redis pair, no heartbeat), \
         every target recording the measurement a real redis probe made on that pair; \
         Postgres-like: the render benchmark's targets and synthetic reports (the postgres \
         probe's detail series, every other target with a 1 s heartbeat). Probes and tasks are \
         built as the daemon builds them and never run: no connection is opened, so no \
         connection's buffers are counted.\n"
    );
    for (redis, postgres) in &results {
        print_table(
            &format!("{} targets", redis.targets),
            |stage| (redis.per_target(stage), postgres.per_target(stage)),
            (
                redis.total() as f64 / redis.targets as f64,
                postgres.total() as f64 / postgres.targets as f64,
            ),
        );
        println!(
            "- `/metrics` body of that scrape: {} (`redis`, {:.0} B per target), {} \
             (Postgres-like, {:.0} B per target); its buffer (stage 4b, with the room \
             reserved beyond it) is kept from scrape to scrape while the exporter is \
             scraped, and dropped after 10 minutes without a scrape.",
            size(redis.body_bytes),
            redis.body_bytes as f64 / redis.targets as f64,
            size(postgres.body_bytes),
            postgres.body_bytes as f64 / postgres.targets as f64
        );
        println!(
            "- tasks per target: {:.1} (`redis`), {:.1} (Postgres-like); stage 7 per task: \
             {:.0} B / {:.0} B (the task's future, its header and what `Poller::start` keeps \
             beside it).\n",
            redis.tasks as f64 / redis.targets as f64,
            postgres.tasks as f64 / postgres.targets as f64,
            redis.stages[8] as f64 / redis.tasks.max(1) as f64,
            postgres.stages[8] as f64 / postgres.tasks.max(1) as f64,
        );
    }
    // Between two sizes: what each further target costs, as the README's
    // RSS figure is taken (fixed costs and the allocator's rounding of the
    // maps' and vectors' doubling cancel out partly).
    if let (Some((small_r, small_p)), Some((large_r, large_p))) = (results.first(), results.last())
    {
        if large_r.targets > small_r.targets {
            let span = (large_r.targets - small_r.targets) as f64;
            let marginal = |large: &Measured, small: &Measured, stage: usize| {
                (large.stages[stage] as f64 - small.stages[stage] as f64) / span
            };
            let total = |large: &Measured, small: &Measured| {
                (large.total() as f64 - small.total() as f64) / span
            };
            let redis_total = total(large_r, small_r);
            print_table(
                &format!(
                    "Between {} and {} targets (per further target)",
                    small_r.targets, large_r.targets
                ),
                |stage| {
                    (
                        marginal(large_r, small_r, stage),
                        marginal(large_p, small_p, stage),
                    )
                },
                (redis_total, total(large_p, small_p)),
            );
            let short = redis_total - marginal(large_r, small_r, 6);
            println!(
                "The README's RSS growth for real `redis` targets between 1,000 and 10,000 \
                 (`--scale`, release build, a 20 s run: the board's history then holds 2–3 \
                 points, so stage 5b is not in it) is {README_RSS_PER_TARGET_KIB} KiB per \
                 target. Counted here without stage 5b: {:.1} KiB ({:.0} %). The remainder, \
                 {:.1} KiB, is what this mode does not count: the allocator's slack and \
                 page-level fragmentation, thread caches, the shared connections' buffers, the \
                 HTTP answers in flight, the probes' own state after polls (offset history, \
                 heartbeat log), and the store's old snapshots still held by readers. It is a \
                 remainder, not a measurement.\n",
                short / 1024.0,
                short / 1024.0 / README_RSS_PER_TARGET_KIB * 100.0,
                README_RSS_PER_TARGET_KIB - short / 1024.0
            );
        }
    }
    let kind_targets = sizes.first().copied().unwrap_or(1000).clamp(2, 1000);
    eprintln!("rpo-bench: {kind_targets} probes of each kind...");
    println!(
        "**Probes by kind** (stage 6 for every kind: {kind_targets} targets of one kind, \
         probes as `kinds::build` makes them, none connected, no heartbeat configured; what the \
         kind builds once for all, e.g. a client per region, is counted before):\n"
    );
    println!("| kind | bytes per target |");
    println!("|---|---:|");
    for (kind, measured) in probes_by_kind(&runtime, kind_targets) {
        match measured {
            Ok(bytes) => println!("| `{kind}` | {bytes:.0} |"),
            Err(problem) => println!("| `{kind}` | not measured: {problem} |"),
        }
    }
    println!();
    println!(
        "Sizes behind stages 2 and 3: a `TargetReport` is {} B inline (kept in an `Arc`, one \
         per target, replaced by each poll and heartbeat), of which its last `Measurement` is {} \
         B; a `Detail` is {} B plus its labels.\n",
        std::mem::size_of::<TargetReport>(),
        std::mem::size_of::<Measurement>(),
        std::mem::size_of::<Detail>()
    );
    println!("Not measured here:\n");
    println!(
        "- a probe's state after real polls (the redis probe's offset samples, the heartbeat \
         log its writer fills): it needs each target polled against a server, and a server \
         here means connection buffers in the same count;"
    );
    println!(
        "- the HTTP server's other per-scrape buffers and gzip: freed after each answer, \
         so not per target at rest;"
    );
    println!(
        "- RSS itself: allocator slack and fragmentation depend on the order and timing of \
         allocations in the daemon; `--scale` measures RSS.\n"
    );
    println!("Machine: {}  ", machine());
    println!(
        "Load average (1 min) before / after: {load_before} / {}  ",
        load_average()
    );
    println!("Command: `{}`", command_line());
    drop(pair);
    Ok(())
}

fn print_table(title: &str, row: impl Fn(usize) -> (f64, f64), total: (f64, f64)) {
    println!("**{title}**\n");
    println!("| stage | bytes per target (`redis`) | bytes per target (Postgres-like) |");
    println!("|---|---:|---:|");
    for (stage, name) in STAGES.iter().enumerate() {
        let (redis, postgres) = row(stage);
        println!("| {name} | {redis:.0} | {postgres:.0} |");
    }
    println!(
        "| **total** | **{:.0}** ({:.1} KiB) | **{:.0}** ({:.1} KiB) |\n",
        total.0,
        total.0 / 1024.0,
        total.1,
        total.1 / 1024.0
    );
}

/// The configuration `--scale` writes for `n` targets on `pair`.
fn redis_config(n: usize, pair: &RedisPair) -> Result<Config, String> {
    let toml = crate::scale::config_toml(0, Duration::from_secs(5), n, pair);
    Config::from_toml(&toml, Path::new("rpo-bench-memory.toml")).map_err(|e| e.to_string())
}

/// What the real redis probe reports for a healthy pair: one probe polls
/// the lab pair twice (the second poll has an offset sample to date by).
async fn redis_template(pair: &RedisPair) -> Result<Measurement, String> {
    let config = redis_config(1, pair)?;
    let context = ProbeContext::new("bench");
    let mut probe =
        kinds::build(&config.targets[0], &context).map_err(|e| format!("redis probe: {e}"))?;
    let mut last = None;
    for _ in 0..2 {
        last = Some(probe.poll().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match last {
        Some(Ok(m)) if m.failures.is_empty() => Ok(m),
        Some(Ok(m)) => Err(format!(
            "the redis probe's poll had failures: {:?}",
            m.failures
        )),
        Some(Err(e)) => Err(format!("the redis probe's poll failed: {e}")),
        None => Err("no poll".to_string()),
    }
}

/// Ends a stage: pushes what was allocated since `mark`, and moves it.
fn step(stages: &mut Vec<i64>, mark: &mut i64) -> Result<(), String> {
    let now = allocated()?;
    stages.push(now - *mark);
    *mark = now;
    Ok(())
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    n: usize,
    shape: Shape,
    pair: &RedisPair,
    template: &Measurement,
) -> Result<Measured, String> {
    let mut stages = Vec::with_capacity(STAGES.len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let now = SystemTime::now();

    // 1. The configuration (the TOML text is made and dropped inside: the
    // daemon drops it after parsing too).
    let before = allocated()?;
    let config = Arc::new(match shape {
        Shape::Redis => redis_config(n, pair)?,
        Shape::PostgresLike => synthetic_config(n)?,
    });
    let mut mark = allocated()?;
    stages.push(mark - before);

    // 2. The store, nothing polled.
    let store = Arc::new(Store::new(config.targets.iter().map(TargetId::of)));
    step(&mut stages, &mut mark)?;

    // 3. One round of polls (and heartbeats), then two more.
    let poll_round = |round: u64, rng: &mut Rng| {
        let finished = now - Duration::from_secs(5 * round);
        for i in 0..n {
            match shape {
                Shape::PostgresLike => record(&store, &config, i, finished, rng),
                Shape::Redis => {
                    let id = TargetId::of(&config.targets[i]);
                    let took = Duration::from_micros(2_000 + rng.below(2_000) as u64);
                    store.record_poll(&id, finished - took, finished, Ok(template.clone()));
                }
            }
        }
    };
    poll_round(2, &mut rng);
    step(&mut stages, &mut mark)?;
    poll_round(1, &mut rng);
    poll_round(0, &mut rng);
    step(&mut stages, &mut mark)?;

    // 4. One scrape through the render cache, and its body's buffer kept
    // for the next scrape, as the HTTP server keeps it once the answer is
    // sent.
    let cache = RenderCache::default();
    let aws_calls = AwsCallCounters::default();
    let bodies = BodyPool::default();
    let body = render_cached_into(
        &config,
        &store.snapshot(),
        &aws_calls,
        now,
        &cache,
        bodies.take(),
    );
    let body_bytes = body.len();
    bodies.give(body);
    // What the kept buffer holds as the allocator counts it (its size
    // class, not only its capacity): what dropping it frees. The stages
    // after this one count from their own mark, so it need not be kept.
    let scraped = allocated()?;
    bodies.release();
    let released = allocated()?;
    stages.push(released - mark);
    stages.push(scraped - released);

    // 5. The board's history: one verdict, recorded at the daemon's
    // cadence (its evaluation time moved on each time).
    let mut verdict = evaluate(&config, &store.snapshot(), Mode::Planned, now, None);
    mark = allocated()?;
    let history = History::default();
    let points = (HISTORY_WINDOW.as_secs() / HISTORY_EVERY.as_secs()) as u32 + 1;
    for k in 0..points {
        verdict.evaluated_at = now + HISTORY_EVERY * k;
        history.record(&verdict);
        if k == 2 {
            step(&mut stages, &mut mark)?;
        }
    }
    step(&mut stages, &mut mark)?;
    drop(verdict);

    // 6 and 7. Probes, then the poller, on a runtime that does not run the
    // tasks it spawns until this block yields (it never does before they
    // are aborted): nothing connects.
    let tasks = runtime.block_on(async {
        let context = ProbeContext::new(config.instance.clone());
        let before = allocated()?;
        let mut probes = Vec::with_capacity(n);
        for target in &config.targets {
            let mut probe = kinds::build(target, &context)
                .map_err(|e| format!("{}: cannot build its probe: {e}", target.name))?;
            let writer = probe.heartbeat_writer();
            probes.push((probe, writer));
        }
        let probes_bytes = allocated()? - before;
        stages.push(probes_bytes);
        // What `Poller::start` spawns: a poll task per target, and a
        // heartbeat task for each one with a heartbeat writer.
        let tasks = n + probes.iter().filter(|(_, writer)| writer.is_some()).count();
        drop(probes);
        drop(context);

        let context = ProbeContext::new(config.instance.clone());
        let before = allocated()?;
        let poller = Poller::start(config.clone(), store.clone(), context);
        let all = allocated()? - before;
        stages.push(all - probes_bytes);
        poller.shutdown().await;
        Ok::<_, String>(tasks)
    })?;
    drop(history);
    drop(cache);
    Ok(Measured {
        targets: n,
        stages,
        body_bytes,
        tasks,
    })
}

/// One target of each kind, as `--memory`'s probe table builds it (`{i}` is
/// the target's number): unreachable addresses, nothing is contacted.
const KIND_TARGETS: [(&str, &str); 13] = [
    (
        "postgres",
        "primary_url = \"postgres://monitor@127.0.0.1:1/erp\"\nreplica_url = \"postgres://monitor@127.0.0.1:2/erp\"",
    ),
    (
        "mysql",
        "primary_url = \"mysql://monitor@127.0.0.1:1/\"\nreplica_url = \"mysql://monitor@127.0.0.1:2/\"",
    ),
    (
        "redis",
        "primary_url = \"redis://127.0.0.1:1\"\nreplica_url = \"redis://127.0.0.1:2\"",
    ),
    (
        "redis_stream",
        "url = \"redis://127.0.0.1:1\"\nstream = \"erp-orders\"\nconsumer_group = \"billing\"",
    ),
    (
        "rabbitmq",
        "management_url = \"http://127.0.0.1:1\"\nusername = \"rpo-monitor\"\npassword = \"secret\"\nqueue = \"erp.orders\"",
    ),
    (
        "sql_queue",
        "url = \"postgres://monitor@127.0.0.1:1/erp\"\nquery = \"SELECT count(*), min(created_at) FROM outbox\"",
    ),
    (
        "opensearch",
        "url = \"http://127.0.0.1:1\"\nusername = \"rpo-monitor\"\npassword = \"secret\"\nindices = [\"erp-orders\"]",
    ),
    (
        "rds",
        "region = \"eu-central-1\"\nsource_instance = \"erp-db-{i}\"\nreplicas = [\"arn:aws:rds:eu-west-1:123456789012:db:erp-db-{i}-dr\"]",
    ),
    (
        "aurora_global",
        "region = \"eu-central-1\"\nglobal_cluster = \"erp-global-{i}\"\nsecondary_clusters = [\"arn:aws:rds:eu-west-1:123456789012:cluster:erp-ledger-{i}-dr\"]",
    ),
    (
        "elasticache_global",
        "region = \"eu-central-1\"\nglobal_replication_group = \"ldgnf-erp-{i}\"\nsecondary_region = \"eu-west-1\"",
    ),
    (
        "s3",
        "region = \"eu-central-1\"\nsource_bucket = \"erp-files-{i}\"\ndestination_bucket = \"erp-files-{i}-dr\"\ndestination_region = \"eu-west-1\"\nrule_ids = [\"to-dr\"]",
    ),
    (
        "efs",
        "region = \"eu-central-1\"\nfile_system_id = \"fs-0123456789abcdef0\"\ndestination_file_system_id = \"fs-0fedcba9876543210\"\ndestination_region = \"eu-west-1\"",
    ),
    (
        "sqs",
        "region = \"eu-central-1\"\nqueue_url = \"https://sqs.eu-central-1.amazonaws.com/123456789012/erp-outbox-{i}\"\ndead_letter_queue_name = \"erp-outbox-{i}-dlq\"",
    ),
];

/// Bytes per target of `n` probes (and heartbeat writers) of each kind,
/// built as the daemon builds them, none connected: each kind's line, or
/// why it could not be measured.
fn probes_by_kind(
    runtime: &tokio::runtime::Runtime,
    n: usize,
) -> Vec<(&'static str, Result<f64, String>)> {
    KIND_TARGETS
        .iter()
        .map(|(kind, keys)| {
            let mut toml = String::from(
                "[exporter]\ninstance = \"bench\"\n\n[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n\n",
            );
            for i in 0..n {
                toml.push_str(&format!(
                    "[[{kind}]]\nname = \"{kind}-{i:05}\"\ngroup = \"erp\"\n{}\n\n",
                    keys.replace("{i}", &i.to_string())
                ));
            }
            let measured = Config::from_toml(&toml, Path::new("rpo-bench-kinds.toml"))
                .map_err(|e| format!("config: {e}"))
                .and_then(|config| {
                    drop(toml);
                    runtime.block_on(async {
                        let context = ProbeContext::new(config.instance.clone());
                        // One probe first: what the kind builds once for all
                        // (clients per region, TLS roots) is not per target.
                        let first = kinds::build(&config.targets[0], &context)
                            .map_err(|e| format!("build: {e}"))?;
                        let before = allocated()?;
                        let mut probes = Vec::with_capacity(n);
                        for target in &config.targets[1..] {
                            let mut probe = kinds::build(target, &context)
                                .map_err(|e| format!("build: {e}"))?;
                            let writer = probe.heartbeat_writer();
                            probes.push((probe, writer));
                        }
                        let bytes = allocated()? - before;
                        drop(probes);
                        drop(first);
                        Ok::<_, String>(bytes as f64 / (n - 1).max(1) as f64)
                    })
                });
            (*kind, measured)
        })
        .collect()
}
