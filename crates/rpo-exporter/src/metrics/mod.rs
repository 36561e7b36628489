//! Turns a snapshot into the Prometheus text exposition at scrape time.
//!
//! Nothing here waits on a probe: `/metrics` is rendered from the latest
//! [`Snapshot`], the verdict computed from it, and the exporter's own
//! counters handed in explicitly ([`AwsCallCounters`]). Every family's name,
//! help, type and labels come from its declaration ([`catalogue`] for the
//! core families, each kind's file for its detail families). Each target's
//! lines are kept between scrapes ([`RenderCache`]): rewritten when its
//! report changes (only the heartbeat lines when a heartbeat changed it),
//! and written ahead of the next scrape every second by the HTTP server, so
//! a scrape mostly copies; the three families that depend on the verdict's
//! clock are written at the scrape. Sample lines are written piece by piece
//! ([`exposition`]); the `process_*` series are read from `/proc`.

pub mod catalogue;
mod exposition;
mod process;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, Target};
use crate::evidence::promotion::{Promotion, PromotionWatch};
use crate::metric_def::MetricDef;
use crate::probe::{unix_seconds, FailureReason};
use crate::readiness::{evaluate, Mode, Verdict};
use crate::self_metrics::AwsCallCounters;
use crate::store::{Snapshot, TargetId, TargetReport};
pub use exposition::{escape, format_value};
use exposition::{header, push_escaped, push_label, push_label_set, push_value, sample};

/// The build's version and git revision, for `rpo_exporter_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = match option_env!("RPO_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Renders the whole exposition for a scrape at `now`. `aws_calls` are the
/// counters the daemon's AWS probes count in.
pub fn render(
    config: &Config,
    snapshot: &Snapshot,
    aws_calls: &AwsCallCounters,
    now: SystemTime,
) -> String {
    text(render_inner(
        config,
        snapshot,
        aws_calls,
        now,
        None,
        Vec::new(),
    ))
}

/// [`render`], reusing the per-target fragments of earlier scrapes whose
/// report has not changed since (see [`RenderCache`]). The output is the
/// same, byte for byte.
pub fn render_cached(
    config: &Arc<Config>,
    snapshot: &Snapshot,
    aws_calls: &AwsCallCounters,
    now: SystemTime,
    cache: &RenderCache,
) -> String {
    text(render_cached_into(
        config,
        snapshot,
        aws_calls,
        now,
        cache,
        Vec::new(),
    ))
}

/// [`render_cached`] into `body`'s room, as bytes: a buffer kept from the
/// last scrape spares mapping the body's pages anew (see [`BodyPool`]);
/// what it held is written over, not cleared first. The bytes are sent as
/// they are, never checked again as a string (only whole UTF-8 strings are
/// copied in).
pub fn render_cached_into(
    config: &Arc<Config>,
    snapshot: &Snapshot,
    aws_calls: &AwsCallCounters,
    now: SystemTime,
    cache: &RenderCache,
    body: Vec<u8>,
) -> Vec<u8> {
    render_inner(
        config,
        snapshot,
        aws_calls,
        now,
        Some((config, cache)),
        body,
    )
}

/// A rendered exposition as text. Only whole UTF-8 strings were copied in,
/// so this never fails (and would cost a replacement character, not a
/// panic, if it did).
fn text(body: Vec<u8>) -> String {
    match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn render_inner(
    config: &Config,
    snapshot: &Snapshot,
    aws_calls: &AwsCallCounters,
    now: SystemTime,
    cache: Option<(&Arc<Config>, &RenderCache)>,
    mut out: Vec<u8>,
) -> Vec<u8> {
    // Both gates are published, so the alerting view (and `check
    // --prometheus --mode unplanned`) reads the same verdict as
    // `/failover-readiness?mode=unplanned`. Each verdict comes with the
    // facts it gives each target's live lines, in configuration order,
    // looked up on its own thread when it has one.
    let evaluate_mode = |mode: Mode| -> (Verdict, Vec<[bool; 2]>) {
        let verdict = evaluate(config, snapshot, mode, now, None);
        let facts = config
            .targets
            .iter()
            .map(|target| {
                verdict
                    .target(TargetId::key(target))
                    .map_or([false; 2], |v| [v.replication_healthy, v.ready])
            })
            .collect();
        (verdict, facts)
    };
    let live_facts = |planned: &[[bool; 2]], unplanned: &[[bool; 2]]| -> Vec<LiveFacts> {
        planned
            .iter()
            .zip(unplanned)
            .map(
                |(&[replication_healthy, ready], &[_, ready_unplanned])| LiveFacts {
                    replication_healthy,
                    ready,
                    ready_unplanned,
                },
            )
            .collect()
    };
    // The per-group and exporter families, which follow the targets'
    // (a few KiB, more with many groups): written before the targets' so
    // the body's room is reserved once for everything.
    type Evaluated = (Verdict, Vec<[bool; 2]>);
    let finish =
        |out: &mut Vec<u8>, written: &[Written], planned: &Evaluated, unplanned: &Evaluated| {
            let mut rest = String::with_capacity(16384);
            render_groups(&mut rest, &planned.0, &unplanned.0);
            render_meta(&mut rest, config);
            render_aws_calls(&mut rest, config, aws_calls);
            process::render(&mut rest);
            render_targets(out, written, &live_facts(&planned.1, &unplanned.1), &rest);
        };
    match cache {
        // With many targets, each verdict on a thread of its own while the
        // cache is brought up to the snapshot.
        Some((config, cache)) if verdicts_beside(config.targets.len()) => {
            std::thread::scope(|scope| {
                // A verdict whose thread could not be started is computed
                // here.
                let evaluating = |mode: Mode| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || evaluate_mode(mode))
                        .map_err(|_| mode)
                };
                let planned = evaluating(Mode::Planned);
                let unplanned = evaluating(Mode::Unplanned);
                let state = cache.for_scrape(config, snapshot);
                let join = |evaluating: Result<std::thread::ScopedJoinHandle<'_, _>, Mode>| {
                    match evaluating {
                        Ok(thread) => thread
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                        Err(mode) => evaluate_mode(mode),
                    }
                };
                let (planned, unplanned) = (join(planned), join(unplanned));
                finish(&mut out, &state.written, &planned, &unplanned);
            })
        }
        Some((config, cache)) => {
            let (planned, unplanned) =
                (evaluate_mode(Mode::Planned), evaluate_mode(Mode::Unplanned));
            let state = cache.for_scrape(config, snapshot);
            finish(&mut out, &state.written, &planned, &unplanned);
        }
        None => {
            let (planned, unplanned) =
                (evaluate_mode(Mode::Planned), evaluate_mode(Mode::Unplanned));
            let mut written = Vec::new();
            refresh(&mut written, config, snapshot, 0..config.targets.len(), 0);
            finish(&mut out, &written, &planned, &unplanned);
        }
    }
    out
}

/// Keeps the last `/metrics` body's buffer for the next scrape. A body is
/// about 3.3 KiB per target (33 MiB at 10,000), and the allocator gives a
/// freed one's pages back within seconds, so without this every scrape
/// maps and faults in the whole body anew (41–59 ms at 10,000 targets on
/// the project's 2-core machine). One buffer is kept: the one
/// last given back (while a scrape holds it, a concurrent scrape renders
/// into a new one). [`BodyPool::release`] drops it when nobody scrapes.
#[derive(Default)]
pub struct BodyPool {
    kept: Mutex<Vec<u8>>,
}

impl BodyPool {
    /// The kept buffer, or a new one. It still holds the body it last
    /// held: rendering writes over it (see [`render_cached_into`]).
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps `body`'s room for the next scrape.
    pub fn give(&self, body: Vec<u8>) {
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = body;
    }

    /// Drops the kept buffer (nobody scrapes lately).
    pub fn release(&self) {
        drop(self.take());
    }

    /// The bytes the kept buffer holds room for.
    pub fn kept_bytes(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .capacity()
    }
}

/// A rendered body that gives its buffer back to its [`BodyPool`] when
/// the answer is sent (or dropped).
pub struct PooledBody {
    body: Vec<u8>,
    pool: Arc<BodyPool>,
}

impl PooledBody {
    pub fn new(body: Vec<u8>, pool: Arc<BodyPool>) -> PooledBody {
        PooledBody { body, pool }
    }
}

impl AsRef<[u8]> for PooledBody {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.body));
    }
}

/// The per-target facts that depend on the scrape's time (the verdict),
/// so they are never cached.
struct LiveFacts {
    replication_healthy: bool,
    ready: bool,
    ready_unplanned: bool,
}

/// What a target contributes to the per-target families that depend only on
/// its configuration and its report, in two sets of lines: those from the
/// fields a poll sets ([`Column::Polled`], the failure counters, the detail
/// families) and those a heartbeat changes too ([`Column::Beat`]). Each set
/// is the sample lines of each family, one after the other in the order the
/// exposition writes families, with where each family's lines end. The
/// exposition is family by family, so a scrape interleaves the targets'
/// fragments: one copy per family and target.
///
/// A line is kept without what every line of its family and target
/// begins with (`name{group="…",target="…",kind="…"`): only its suffix,
/// the labels of its own (`,reason="…"`, a detail's) and `} value\n`. The
/// scrape writes the name and the target's labels in front of each suffix
/// as it copies it. Kept whole, the lines made the cache 5.7 KB per
/// target, most of it names and labels the body holds again; as suffixes,
/// 1.7 KB (`rpo-bench --memory`, stage 4a).
///
/// Its buffers are kept from scrape to scrape and rewritten in place when
/// the target's report changes: in production (scrapes every 15–60 s,
/// polls every 5 s, heartbeats every second) that is every target at every
/// scrape, so rewriting must cost no allocation, and a report changed only
/// by heartbeats since rewrites only its few heartbeat lines.
#[derive(Default)]
struct Fragment {
    /// `{group="…",target="…",kind="…"`, escaped, with the brace that
    /// opens them (what a line writes after its name): from the
    /// configuration, written once per configuration.
    labels: String,
    polled: Lines,
    beat: Lines,
    /// Detail families missing from the catalogue (a bug the debug build
    /// asserts on): written after the catalogued ones, by name.
    uncatalogued: Vec<(&'static MetricDef, String)>,
    /// The detail families of the report last written, in the probe's
    /// order, and the order they are written in: (slot, index in the
    /// report's details), by slot (the probe's order within a family). A
    /// probe reports the same families poll after poll, so the order is
    /// worked out again only when they differ.
    detail_families: Vec<&'static MetricDef>,
    detail_order: Vec<(u16, u32)>,
}

/// Sample lines of several families, each as its suffix (see
/// [`Fragment`]: `[,k="v"…]} value\n`), and where each family's end.
#[derive(Default)]
struct Lines {
    text: String,
    /// Each family's lines, slots ascending; a slot with no line has no
    /// span. Slots are [`COLUMNS`] then the detail families'
    /// [`detail_rank`] after them.
    spans: Vec<Span>,
}

/// A family's lines in [`Lines::text`]: its slot, how many lines, and
/// where they end.
#[derive(Clone, Copy)]
struct Span {
    slot: u16,
    lines: u32,
    end: u32,
}

impl Lines {
    fn with_capacity(bytes: usize, spans: usize) -> Lines {
        Lines {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(spans),
        }
    }

    fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    /// Ends the span of `slot` begun at `before`, if it wrote a line.
    fn close(&mut self, slot: usize, before: usize) {
        if self.text.len() > before {
            let lines = self.text.as_bytes()[before..]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.spans.push(Span {
                slot: slot as u16,
                lines: lines as u32,
                end: self.text.len() as u32,
            });
        }
    }
}

/// A configured target's [`Fragment`] and the report it was written from
/// (`None`: the target was not in the store, and is rewritten every time).
struct Written {
    report: Option<Arc<TargetReport>>,
    fragment: Fragment,
    /// The scrape count ([`RenderCache`]'s) when its poll lines were last
    /// written, and when anything of it was, for the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    polled_at: u64,
    #[cfg_attr(not(test), allow(dead_code))]
    written_at: u64,
}

/// A per-target family: a sample (or, for the failure counters, several)
/// from the target's configuration and report, or from the verdict.
enum Column {
    /// From the configuration and the fields a poll sets.
    Polled(
        &'static MetricDef,
        fn(&Target, &TargetReport) -> Option<f64>,
    ),
    Failures,
    /// From the fields a heartbeat changes too (`heartbeat`, `promotion`):
    /// rewritten whenever the report changed, the others only when a poll
    /// changed it (see [`TargetReport::poll_epoch`]).
    Beat(
        &'static MetricDef,
        fn(&Target, &TargetReport) -> Option<f64>,
    ),
    Live(&'static MetricDef, fn(&LiveFacts) -> bool),
}

/// The per-target families in exposition order.
static COLUMNS: &[Column] = {
    use catalogue::*;
    use Column::{Beat, Failures, Live, Polled};
    fn measured(
        r: &TargetReport,
        field: fn(&crate::probe::Measurement) -> Option<f64>,
    ) -> Option<f64> {
        r.measurement.as_ref().and_then(field)
    }
    fn watch(r: &TargetReport) -> Option<&PromotionWatch> {
        Some(&r.promotion).filter(|w| w.followed)
    }
    fn latest(r: &TargetReport) -> Option<&Promotion> {
        watch(r).and_then(|w| w.latest.as_ref())
    }
    &[
        Polled(&RECOVERY_POINT_TIMESTAMP_SECONDS, |_, r| {
            r.recovery_point.map(unix_seconds)
        }),
        Polled(&EXPOSURE_SECONDS, |_, r| {
            r.exposure.map(|d| d.as_secs_f64())
        }),
        Polled(&BUDGET_SECONDS, |t, _| Some(t.rpo_budget.as_secs_f64())),
        Polled(&STALE_AFTER_SECONDS, |t, _| {
            Some(t.stale_after.as_secs_f64())
        }),
        Live(&REPLICATION_HEALTHY, |l| l.replication_healthy),
        Polled(&EVIDENCE_TIMESTAMP_SECONDS, |_, r| {
            r.evidence_time.map(unix_seconds)
        }),
        Live(&TARGET_READY, |l| l.ready),
        Live(&TARGET_READY_UNPLANNED, |l| l.ready_unplanned),
        Polled(&BACKLOG_BYTES, |_, r| measured(r, |m| m.backlog_bytes)),
        Polled(&BACKLOG_OPERATIONS, |_, r| {
            measured(r, |m| m.backlog_operations)
        }),
        Polled(&CATCHUP_SECONDS, |_, r| measured(r, |m| m.catchup_seconds)),
        Polled(&SOURCE_REACHABLE, |_, r| {
            measured(r, |m| m.source_reachable.map(bool_value))
        }),
        Polled(&REPLICA_REACHABLE, |_, r| {
            measured(r, |m| m.replica_reachable.map(bool_value))
        }),
        Polled(&PROBE_SUCCESS, |_, r| {
            (r.runs_total > 0).then_some(bool_value(r.last_poll_succeeded))
        }),
        Polled(&PROBE_DURATION_SECONDS, |_, r| {
            r.last_duration.map(|d| d.as_secs_f64())
        }),
        Polled(&PROBE_LAST_SUCCESS_TIMESTAMP_SECONDS, |_, r| {
            r.last_success.map(unix_seconds)
        }),
        Beat(&HEARTBEAT_LAST_WRITE_TIMESTAMP_SECONDS, |_, r| {
            r.heartbeat.last_write.map(unix_seconds)
        }),
        Polled(&PROBE_RUNS_TOTAL, |_, r| Some(r.runs_total as f64)),
        Failures,
        Beat(&HEARTBEAT_WRITE_FAILURES_TOTAL, |t, r| {
            t.heartbeat_interval()
                .map(|_| r.heartbeat.failures_total as f64)
        }),
        // From 0 for every target, like the failures above, so `increase()`
        // sees the first drop.
        Polled(&REPLICATION_LINK_DOWN_TOTAL, |_, r| {
            Some(r.link_down_total as f64)
        }),
        // Pair kinds: the roles followed across promotions (see
        // `evidence::promotion`); no sample for a kind that reports no roles.
        Beat(&PROMOTED, |_, r| {
            watch(r).and_then(|w| w.replica_writable).map(bool_value)
        }),
        Beat(&SPLIT_BRAIN, |_, r| {
            watch(r).map(|w| bool_value(w.split_brain.is_some()))
        }),
        Beat(&MEASURED_LOSS_SECONDS, |_, r| {
            latest(r)
                .and_then(|p| p.measured_loss())
                .map(|d| d.as_secs_f64())
        }),
        Beat(&PREDICTED_EXPOSURE_AT_PROMOTION_SECONDS, |_, r| {
            latest(r).and_then(|p| p.predicted).map(|d| d.as_secs_f64())
        }),
        Beat(&PROMOTION_TIMESTAMP_SECONDS, |_, r| {
            latest(r).map(|p| unix_seconds(p.seen_at))
        }),
        Beat(&MEASURED_LOSS_BYTES, |_, r| {
            latest(r).and_then(|p| p.lost_bytes).map(|b| b as f64)
        }),
    ]
};

/// Every catalogued family's rank in name order: the detail families are
/// written in name order, after [`COLUMNS`].
fn detail_rank(family: &MetricDef) -> Option<u16> {
    detail_ranks().0.get(family.name).copied()
}

/// The catalogued families in name order (one per name): the family of
/// each rank, slot `COLUMNS.len() + rank`.
fn detail_families_by_rank() -> &'static [&'static MetricDef] {
    &detail_ranks().1
}

#[allow(clippy::type_complexity)]
fn detail_ranks() -> &'static (HashMap<&'static str, u16>, Vec<&'static MetricDef>) {
    static RANKS: OnceLock<(HashMap<&'static str, u16>, Vec<&'static MetricDef>)> = OnceLock::new();
    RANKS.get_or_init(|| {
        let mut names: Vec<&'static str> = catalogue::all().iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        let ranks: HashMap<&'static str, u16> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, (COLUMNS.len() + i) as u16))
            .collect();
        // Of two declarations with one name, the later in the catalogue.
        let mut families = vec![catalogue::all()[0]; names.len()];
        for &family in catalogue::all() {
            families[ranks[family.name] as usize - COLUMNS.len()] = family;
        }
        (ranks, families)
    })
}

impl Fragment {
    fn new(target: &Target) -> Fragment {
        Fragment {
            labels: format!("{{{}", target_labels(target)),
            polled: Lines::with_capacity(512, COLUMNS.len() + 8),
            beat: Lines::with_capacity(64, 8),
            ..Fragment::default()
        }
    }

    /// Rewrites the lines from `report`, in the buffers already there: the
    /// heartbeat lines always, the others when `polled` (the report is not
    /// from the poll they were written from).
    fn write(&mut self, target: &Target, report: &TargetReport, polled: bool) {
        let beat = &mut self.beat;
        beat.clear();
        for (slot, column) in COLUMNS.iter().enumerate() {
            if let Column::Beat(_, value) = column {
                let before = beat.text.len();
                if let Some(v) = value(target, report) {
                    suffix(&mut beat.text, None, v);
                }
                beat.close(slot, before);
            }
        }
        if !polled {
            return;
        }
        let lines = &mut self.polled;
        lines.clear();
        self.uncatalogued.clear();
        for (slot, column) in COLUMNS.iter().enumerate() {
            let before = lines.text.len();
            match column {
                Column::Polled(_, value) => {
                    if let Some(v) = value(target, report) {
                        suffix(&mut lines.text, None, v);
                    }
                }
                Column::Failures => {
                    for reason in FailureReason::ALL {
                        suffix(
                            &mut lines.text,
                            Some(("reason", reason.as_str())),
                            report.failures(reason) as f64,
                        );
                    }
                }
                Column::Beat(..) | Column::Live(..) => {}
            }
            lines.close(slot, before);
        }
        let Some(m) = &report.measurement else {
            return;
        };
        self.order_details(&m.details);
        let Fragment {
            labels,
            polled: lines,
            uncatalogued,
            detail_order,
            ..
        } = self;
        // Detail series by family name; a family's samples keep the probe's
        // order.
        let mut open: Option<(u16, usize)> = None;
        for &(rank, index) in detail_order.iter() {
            let detail = &m.details[index as usize];
            if rank == UNCATALOGUED {
                let mut line = String::new();
                detail_line(&mut line, &labels[1..], detail);
                uncatalogued.push((detail.family, line));
                continue;
            }
            match open {
                Some((slot, _)) if slot == rank => {}
                Some((slot, before)) => {
                    lines.close(slot as usize, before);
                    open = Some((rank, lines.text.len()));
                }
                None => open = Some((rank, lines.text.len())),
            }
            detail_suffix(&mut lines.text, detail);
        }
        if let Some((slot, before)) = open {
            lines.close(slot as usize, before);
        }
    }

    /// Sets `detail_order` for `details`, unless their families are the
    /// ones it was set for.
    fn order_details(&mut self, details: &[crate::probe::Detail]) {
        let same = details.len() == self.detail_families.len()
            && details
                .iter()
                .zip(&self.detail_families)
                .all(|(d, f)| std::ptr::eq(d.family, *f));
        if same {
            return;
        }
        self.detail_families.clear();
        self.detail_order.clear();
        for (index, d) in details.iter().enumerate() {
            debug_assert!(
                catalogue::is_catalogued(d.family),
                "{} is not in its kind's DETAIL_FAMILIES",
                d.family.name
            );
            self.detail_families.push(d.family);
            let rank = detail_rank(d.family).unwrap_or(UNCATALOGUED);
            self.detail_order.push((rank, index as u32));
        }
        // Stable: a family's samples keep the probe's order.
        self.detail_order.sort_by_key(|(rank, _)| *rank);
    }
}

/// The rank of a detail family missing from the catalogue.
const UNCATALOGUED: u16 = u16::MAX;

fn detail_line(out: &mut String, labels: &str, detail: &crate::probe::Detail) {
    out.push_str(detail.family.name);
    out.push('{');
    out.push_str(labels);
    detail_suffix(out, detail);
}

/// A detail's line after its target's labels: `[,k="v"…]} value\n`.
fn detail_suffix(out: &mut String, detail: &crate::probe::Detail) {
    for (k, v) in &detail.labels {
        push_label(out, k, v);
    }
    out.push_str("} ");
    push_value(out, detail.value);
    out.push('\n');
}

/// A sample's line after its target's labels: `[,k="v"]} value\n` (see
/// [`sample`]).
fn suffix(out: &mut String, extra: Option<(&str, &str)>, value: f64) {
    if let Some((k, v)) = extra {
        push_label(out, k, v);
    }
    out.push_str("} ");
    push_value(out, value);
    out.push('\n');
}

/// The fragments of the configured targets, one per target in configuration
/// order, each with the report it was written from, so a scrape rewrites
/// only the targets whose report changed since they were written, in the
/// buffers of the last. Kept for one configuration: a reload (a new
/// `Arc<Config>`: targets, labels, budgets may differ) starts afresh.
///
/// Between scrapes, [`RenderCache::write_ahead`] (the HTTP server calls it
/// every [`WRITE_AHEAD_EVERY`]) writes the lines of the targets polled since,
/// so a scrape writes only what changed in the last moment: a poll's lines
/// are written once, a little after the poll, and the scrape mostly copies.
/// The output is the same, byte for byte, as writing everything at the
/// scrape: the scrape brings every fragment to its own snapshot first.
#[derive(Default)]
pub struct RenderCache {
    state: Mutex<CacheState>,
    /// Scrapes waiting for the lock: writing ahead steps aside for them.
    waiting: AtomicUsize,
    /// When the last scrape began: nothing is written ahead for an
    /// exporter nobody scrapes.
    last_scrape: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct CacheState {
    config: Option<Arc<Config>>,
    written: Vec<Written>,
    /// Scrapes rendered with this cache.
    scrapes: u64,
}

impl fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenderCache")
    }
}

/// How often the HTTP server has [`RenderCache::write_ahead`] write the
/// lines of the targets polled since.
pub const WRITE_AHEAD_EVERY: Duration = Duration::from_secs(1);

/// Writing ahead stops this long after the last scrape.
const WRITE_AHEAD_IDLE: Duration = Duration::from_secs(600);

/// Targets written ahead per hold of the lock, so a scrape that arrives
/// meanwhile waits for at most this many.
const WRITE_AHEAD_SLICE: usize = 256;

impl RenderCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache for a scrape of `config`: brought to `snapshot` (a
    /// fragment per configured target, each written from its report in it).
    fn for_scrape(
        &self,
        config: &Arc<Config>,
        snapshot: &Snapshot,
    ) -> std::sync::MutexGuard<'_, CacheState> {
        *self.last_scrape.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        state.scrapes += 1;
        let same_config = state
            .config
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, config));
        if !same_config {
            state.config = Some(config.clone());
            state.written.clear();
        }
        let scrape = state.scrapes;
        refresh(
            &mut state.written,
            config,
            snapshot,
            0..config.targets.len(),
            scrape,
        );
        state
    }

    /// Writes the lines of the targets whose report changed since they were
    /// last written, from the latest `snapshot()`, a slice at a time; does
    /// nothing when no scrape came in the last ten minutes, or the last
    /// scrape was of another configuration. Returns how many targets it
    /// looked at. Runs for a while: call it off the async runtime.
    pub fn write_ahead(&self, config: &Arc<Config>, snapshot: impl Fn() -> Arc<Snapshot>) -> usize {
        let last = *self.last_scrape.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() > WRITE_AHEAD_IDLE) {
            return 0;
        }
        let n = config.targets.len();
        let mut start = 0;
        while start < n {
            if self.waiting.load(Ordering::SeqCst) > 0 {
                break;
            }
            let mut state = self.lock();
            let same_config = state
                .config
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, config));
            if !same_config || state.written.len() != n {
                break;
            }
            let end = (start + WRITE_AHEAD_SLICE).min(n);
            let scrape = state.scrapes;
            refresh(&mut state.written, config, &snapshot(), start..end, scrape);
            drop(state);
            start = end;
        }
        start
    }
}

/// Brings the fragments of `targets` (indices into the configured targets)
/// up to `snapshot`: `written` empty (or of another length) is filled
/// afresh; each fragment is rewritten unless its report is the one it was
/// written from (the same `Arc`: a poll or heartbeat replaces it), and
/// only its heartbeat lines when the report changed by heartbeats alone.
fn refresh(
    written: &mut Vec<Written>,
    config: &Config,
    snapshot: &Snapshot,
    targets: std::ops::Range<usize>,
    scrape: u64,
) {
    let never_polled = TargetReport::default();
    if written.len() != config.targets.len() {
        written.clear();
        written.extend(config.targets.iter().map(|target| Written {
            report: None,
            fragment: Fragment::new(target),
            polled_at: scrape,
            written_at: scrape,
        }));
    }
    let configured = &config.targets[targets.clone()];
    let written = &mut written[targets];
    let threads = threads_for(written.len());
    if threads == 1 {
        for (target, w) in configured.iter().zip(written) {
            refresh_one(target, w, snapshot, scrape, &never_polled);
        }
        return;
    }
    // Targets are independent: a share of them on each thread. A share
    // whose thread could not be started is done here afterwards.
    let share = written.len().div_ceil(threads);
    let refresh_share = |targets: &[Target], written: &mut [Written]| {
        for (target, w) in targets.iter().zip(written) {
            refresh_one(target, w, snapshot, scrape, &never_polled);
        }
    };
    let not_started: Vec<usize> = std::thread::scope(|scope| {
        configured
            .chunks(share)
            .zip(written.chunks_mut(share))
            .enumerate()
            .filter_map(|(i, (targets, written))| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || refresh_share(targets, written))
                    .err()
                    .map(|_| i)
            })
            .collect()
    });
    for i in not_started {
        let end = (i * share + share).min(written.len());
        refresh_share(&configured[i * share..end], &mut written[i * share..end]);
    }
}

/// Targets from which a scrape's work is shared out among threads (one
/// thread per this many, up to the processors, at most 4): below, starting
/// threads costs more than it saves.
const TARGETS_PER_THREAD: usize = 512;

/// Targets from which a scrape computes its two verdicts each on a thread
/// of its own, beside the cache's refresh (when there is more than one
/// processor).
const VERDICTS_BESIDE_FROM: usize = 256;

/// Whether a scrape of `targets` targets computes its verdicts on threads.
fn verdicts_beside(targets: usize) -> bool {
    targets >= VERDICTS_BESIDE_FROM
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// The threads to share `targets` targets' work among.
fn threads_for(targets: usize) -> usize {
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    (targets / TARGETS_PER_THREAD).clamp(1, processors.min(4))
}

fn refresh_one(
    target: &Target,
    w: &mut Written,
    snapshot: &Snapshot,
    scrape: u64,
    never_polled: &TargetReport,
) {
    match snapshot.report(TargetId::key(target)) {
        Some(report) => {
            let polled = match &w.report {
                Some(was) if Arc::ptr_eq(was, report) => return,
                Some(was) => was.poll_epoch() == 0 || was.poll_epoch() != report.poll_epoch(),
                None => true,
            };
            w.fragment.write(target, report, polled);
            w.report = Some(report.clone());
            if polled {
                w.polled_at = scrape;
            }
        }
        None => {
            w.fragment.write(target, never_polled, true);
            w.report = None;
            w.polled_at = scrape;
        }
    }
    w.written_at = scrape;
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn target_labels(target: &Target) -> String {
    let mut labels = String::with_capacity(64);
    labels.push_str("group=\"");
    push_escaped(&mut labels, &target.group);
    labels.push_str("\",target=\"");
    push_escaped(&mut labels, &target.name);
    labels.push_str("\",kind=\"");
    labels.push_str(target.kind().as_str());
    labels.push('"');
    labels
}

/// The per-target families: each family's header, then each target's lines
/// of it (its fragment's span, or the live value), in configuration order;
/// then the detail families present, in name order.
///
/// Written target by target, not family by family: the sizes of every
/// family's lines are added up first, so each family's place in the body
/// is known, then each target's fragment is read once, front to back, and
/// its spans copied to their families' places. Family by family, a scrape
/// of 10,000 targets visited every fragment once per family, and those
/// visits (not the copying) were most of its time once the fragments no
/// longer fitted in the processor's cache.
fn render_targets(body: &mut Vec<u8>, written: &[Written], live: &[LiveFacts], rest: &str) {
    let by_rank = detail_families_by_rank();
    let slots = COLUMNS.len() + by_rank.len();
    // Each slot's family; its name begins each of its lines.
    let families: Vec<&'static MetricDef> = (0..slots)
        .map(|slot| match COLUMNS.get(slot) {
            Some(Column::Polled(family, _) | Column::Beat(family, _) | Column::Live(family, _)) => {
                *family
            }
            Some(Column::Failures) => &catalogue::PROBE_FAILURES_TOTAL,
            None => by_rank[slot - COLUMNS.len()],
        })
        .collect();
    // Each slot's bytes of lines: the fragments' spans, each line with its
    // `name{labels` in front, and the live lines.
    let mut bytes = vec![0usize; slots];
    for w in written {
        let f = &w.fragment;
        for lines in [&f.polled, &f.beat] {
            let mut start = 0;
            for span in &lines.spans {
                let slot = span.slot as usize;
                bytes[slot] += (span.end - start) as usize
                    + span.lines as usize * (families[slot].name.len() + f.labels.len());
                start = span.end;
            }
        }
        for (slot, column) in COLUMNS.iter().enumerate() {
            if let Column::Live(family, _) = column {
                // `name{labels} 0\n`
                bytes[slot] += family.name.len() + f.labels.len() + 4;
            }
        }
    }
    // The body: each slot's header, then room for its lines. Every column
    // has its header; a detail family only when some target has it.
    let family_of = |slot: usize| -> Option<&'static MetricDef> {
        (slot < COLUMNS.len() || bytes[slot] > 0).then(|| families[slot])
    };
    // The layout: each family's header, then room for its lines, one
    // family after the other from the start of `body`. The buffer may hold
    // an older body: every byte up to the end of the layout is written
    // below (the check after the copying proves it), so it is not cleared
    // first, which at 10,000 targets would write 33 MiB of zeros.
    let mut headers: Vec<(usize, String)> = Vec::with_capacity(slots);
    let mut place = vec![0usize; slots];
    let mut at = 0;
    for (slot, place) in place.iter_mut().enumerate() {
        let Some(family) = family_of(slot) else {
            continue;
        };
        let mut text = String::with_capacity(256);
        header(&mut text, family);
        headers.push((at, text));
        at += headers.last().map_or(0, |(_, text)| text.len());
        *place = at;
        at += bytes[slot];
    }
    let size = at;
    // Room for what follows the lines too (`rest`, and what the HTTP
    // server appends), so the body is not moved to grow: growing doubles
    // it, and a kept body would hold twice its size.
    body.truncate(size);
    body.reserve(size - body.len() + rest.len() + TAIL_ROOM);
    body.resize(size, 0);
    for (at, text) in &headers {
        body[*at..*at + text.len()].copy_from_slice(text.as_bytes());
    }
    let ends: Vec<usize> = place.iter().zip(&bytes).map(|(p, b)| p + b).collect();
    // Each target's lines to their places, in configuration order.
    for (w, l) in written.iter().zip(live) {
        let f = &w.fragment;
        let labels = f.labels.as_bytes();
        for lines in [&f.polled, &f.beat] {
            let mut start = 0;
            for span in &lines.spans {
                let name = families[span.slot as usize].name.as_bytes();
                let text = &lines.text.as_bytes()[start as usize..span.end as usize];
                let at = place[span.slot as usize];
                // The span's room: its lines as counted above (a wrong
                // count panics here or fails the check below).
                let room = &mut body
                    [at..at + text.len() + span.lines as usize * (name.len() + labels.len())];
                let mut i = 0;
                for suffix in text.split_inclusive(|&b| b == b'\n') {
                    for piece in [name, labels, suffix] {
                        room[i..i + piece.len()].copy_from_slice(piece);
                        i += piece.len();
                    }
                }
                place[span.slot as usize] = at + i;
                start = span.end;
            }
        }
        for (slot, column) in COLUMNS.iter().enumerate() {
            if let Column::Live(family, value) = column {
                // `name{labels} 0\n` or `… 1\n`, as `sample` writes them.
                let value: &[u8] = if value(l) { b"} 1\n" } else { b"} 0\n" };
                let at = place[slot];
                let mut i = at;
                for piece in [family.name.as_bytes(), labels, value] {
                    body[i..i + piece.len()].copy_from_slice(piece);
                    i += piece.len();
                }
                place[slot] = i;
            }
        }
    }
    // Every family's lines filled exactly the room counted for them, so no
    // byte of an older body is left (checked in release builds too: a
    // wrong exposition must never be sent; the panic answers 500).
    assert!(
        (0..slots).all(|slot| family_of(slot).is_none() || place[slot] == ends[slot]),
        "every family's lines fill the room counted for them"
    );
    let mut uncatalogued: BTreeMap<&str, (&MetricDef, Vec<&str>)> = BTreeMap::new();
    for w in written {
        for (family, line) in &w.fragment.uncatalogued {
            uncatalogued
                .entry(family.name)
                .or_insert_with(|| (family, Vec::new()))
                .1
                .push(line.as_str());
        }
    }
    let mut out = String::new();
    for (family, lines) in uncatalogued.into_values() {
        header(&mut out, family);
        for line in lines {
            out.push_str(line);
        }
    }
    body.extend_from_slice(out.as_bytes());
    body.extend_from_slice(rest.as_bytes());
}

/// Room a body keeps beyond its families for what the HTTP server appends
/// (the reload and connection families, under 1 KiB).
const TAIL_ROOM: usize = 4096;

/// The per-group families; `unplanned` is the same snapshot's verdict in
/// unplanned mode (same groups, same order).
fn render_groups(out: &mut String, verdict: &Verdict, unplanned: &Verdict) {
    use catalogue::*;
    let labels: Vec<String> = verdict
        .groups
        .iter()
        .map(|g| format!("group=\"{}\"", escape(&g.group)))
        .collect();
    let per_group = |out: &mut String, family: &MetricDef, value: &dyn Fn(usize) -> Option<f64>| {
        header(out, family);
        for (i, label) in labels.iter().enumerate() {
            if let Some(v) = value(i) {
                sample(out, family.name, label, None, v);
            }
        }
    };
    let groups = &verdict.groups;
    per_group(out, &FAILOVER_READY, &|i| Some(bool_value(groups[i].ready)));
    debug_assert!(unplanned
        .groups
        .iter()
        .map(|g| &g.group)
        .eq(groups.iter().map(|g| &g.group)));
    per_group(out, &FAILOVER_READY_UNPLANNED, &|i| {
        unplanned.groups.get(i).map(|g| bool_value(g.ready))
    });
    per_group(out, &GROUP_EXPOSURE_SECONDS, &|i| {
        groups[i].exposure.map(|e| e.as_secs_f64())
    });
    per_group(out, &GROUP_RECOVERY_POINT_SKEW_SECONDS, &|i| {
        groups[i].recovery_point_skew.map(|s| s.as_secs_f64())
    });
    per_group(out, &GROUP_BUDGET_SECONDS, &|i| {
        Some(groups[i].rpo_budget.as_secs_f64())
    });
}

/// What monitoring costs: the AWS call counters the daemon handed to its
/// probes. Rendered only when an AWS kind is configured.
fn render_aws_calls(out: &mut String, config: &Config, aws_calls: &AwsCallCounters) {
    use catalogue::*;
    if !config.targets.iter().any(|t| t.kind().is_aws()) {
        return;
    }
    let counts = aws_calls.snapshot();
    header(out, &AWS_API_REQUESTS_TOTAL);
    for (service, operation, n) in &counts.requests {
        exporter_sample(
            out,
            &AWS_API_REQUESTS_TOTAL,
            &[service, operation],
            *n as f64,
        );
    }
    header(out, &AWS_API_ERRORS_TOTAL);
    for (service, operation, reason, n) in &counts.errors {
        exporter_sample(
            out,
            &AWS_API_ERRORS_TOTAL,
            &[service, operation, reason.as_str()],
            *n as f64,
        );
    }
    header(out, &CLOUDWATCH_METRICS_REQUESTED_TOTAL);
    exporter_sample(
        out,
        &CLOUDWATCH_METRICS_REQUESTED_TOTAL,
        &[],
        counts.cloudwatch_metrics_requested as f64,
    );
}

fn render_meta(out: &mut String, config: &Config) {
    use catalogue::{EXPORTER_BUILD_INFO, EXPORTER_INFO};
    header(out, &EXPORTER_BUILD_INFO);
    exporter_sample(out, &EXPORTER_BUILD_INFO, &[VERSION, REVISION], 1.0);
    header(out, &EXPORTER_INFO);
    exporter_sample(
        out,
        &EXPORTER_INFO,
        &[&config.instance, config.region.as_deref().unwrap_or("")],
        1.0,
    );
}

/// The configuration reload series (`rpo_config_last_reload_*`), which
/// only the daemon has: `/metrics` appends them to [`render`]'s exposition.
pub fn render_config_reload(out: &mut String, status: &crate::self_metrics::ConfigReloadStatus) {
    use catalogue::{CONFIG_LAST_RELOAD_SUCCESSFUL, CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS};
    header(out, &CONFIG_LAST_RELOAD_SUCCESSFUL);
    exporter_sample(
        out,
        &CONFIG_LAST_RELOAD_SUCCESSFUL,
        &[],
        bool_value(status.successful()),
    );
    header(out, &CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS);
    exporter_sample(
        out,
        &CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
        &[],
        unix_seconds(status.last_success()),
    );
}

/// The connections kept to monitored servers and their descriptor budget
/// (process-wide, see [`crate::drivers::shared`]), which only the daemon
/// sets: `/metrics` appends them to [`render`]'s exposition.
pub fn render_server_connections(out: &mut String) {
    use crate::drivers::shared::{descriptor_limit, open_connections};
    use catalogue::{SERVER_CONNECTIONS, SERVER_MAX_CONNECTIONS};
    header(out, &SERVER_CONNECTIONS);
    exporter_sample(out, &SERVER_CONNECTIONS, &[], open_connections() as f64);
    header(out, &SERVER_MAX_CONNECTIONS);
    let limit = descriptor_limit().map_or(f64::INFINITY, |l| l as f64);
    exporter_sample(out, &SERVER_MAX_CONNECTIONS, &[], limit);
}

/// One sample of an exporter-wide family: `values` in the family's label order.
fn exporter_sample(out: &mut String, family: &MetricDef, values: &[&str], value: f64) {
    debug_assert_eq!(family.labels.len(), values.len(), "{}", family.name);
    out.push_str(family.name);
    if !values.is_empty() {
        out.push('{');
        push_label_set(out, family.labels, values);
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::evidence::queue;
    use crate::kinds::{aws, postgres};
    use crate::probe::{
        Detail, LinkState, Measurement, ProbeError, Side, HEARTBEAT_TIMESTAMP_SECONDS,
    };
    use crate::store::Store;

    const GOLDEN_CONFIG: &str = r#"
[exporter]
instance = "golden"
region = "eu-west-1"

[[group]]
name = "erp"
rpo_budget = "60s"

[[group]]
name = "crm"
rpo_budget = "5m"

[[postgres]]
name = "erp-db"
group = "erp"
rpo_budget = "5s"
primary_url = "postgres://monitor@127.0.0.1:5432/erp"
replica_url = "postgres://monitor@127.0.0.1:5433/erp"
heartbeat = { interval = "1s", table = "rpo_heartbeat" }

[[redis]]
name = "crm-sessions"
group = "crm"
primary_url = "redis://127.0.0.1:6379"
replica_url = "redis://127.0.0.1:6380"

[[sqs]]
name = "erp-outbox"
group = "erp"
queue_name = "erp-outbox"
region = "eu-west-1"
"#;

    /// Every kind of series: target, detail (with and without labels, one
    /// needing escapes), group, meta and the AWS call counters.
    fn golden_render() -> String {
        let config = Config::from_toml(GOLDEN_CONFIG, std::path::Path::new("golden.toml")).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Duration::from_secs_f64;
        let ids: Vec<TargetId> = config.targets.iter().map(TargetId::of).collect();
        let store = Store::new(ids.iter().cloned());
        let mut pg = Measurement::new(t0 + s(10.0));
        pg.recovery_point = Some(t0 + s(7.5));
        pg.link = LinkState::Healthy;
        pg.source_reachable = Some(true);
        pg.replica_reachable = Some(true);
        pg.backlog_bytes = Some(4096.0);
        pg.catchup_seconds = Some(f64::INFINITY);
        pg.details = vec![
            Detail::new(&postgres::REPLAY_LAG_BYTES, 4096.0),
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, 1.0)
                .with_label("slot", "standby_\"1\""),
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, 0.0).with_label("slot", "standby_2"),
            Detail::new(&HEARTBEAT_TIMESTAMP_SECONDS, 1_700_000_007.25),
        ];
        store.record_poll(&ids[0], t0 + s(9.9), t0 + s(10.0), Ok(pg));
        store.record_heartbeat(&ids[0], t0 + s(9.0), Ok(()));
        let slow = ProbeError::new(FailureReason::Timeout, "slow");
        store.record_heartbeat(&ids[0], t0 + s(9.5), Err(slow));
        let refused = ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica);
        store.record_poll(&ids[1], t0 + s(8.0), t0 + s(8.5), Err(refused));
        let mut q = Measurement::new(t0 + s(9.0));
        q.recovery_point = Some(t0 + s(3.0));
        q.link = LinkState::Healthy;
        q.replica_reachable = Some(true);
        q.backlog_operations = Some(3.0);
        q.details = vec![
            Detail::new(&queue::MESSAGES, 3.0),
            Detail::new(&aws::sqs::MESSAGES, 2.0).with_label("state", "visible"),
            Detail::new(&aws::sqs::MESSAGES, 1.0).with_label("state", "in_flight"),
        ];
        store.record_poll(&ids[2], t0 + s(8.9), t0 + s(9.0), Ok(q));
        let calls = AwsCallCounters::default();
        calls.count_request("sqs", "GetQueueAttributes");
        calls.count_request("sqs", "GetQueueAttributes");
        calls.count_request("cloudwatch", "GetMetricData");
        calls.count_error("sqs", "GetQueueUrl", FailureReason::AwsApi);
        calls.count_metrics_requested(7);
        render(&config, &store.snapshot(), &calls, t0 + s(11.0))
    }

    /// The exposition is byte-identical to the one rendered before the
    /// catalogue existed (`testdata/render-golden.txt`, captured from the
    /// string-literal renderer), apart from the `process_*` series and the
    /// families added since (`rpo_failover_ready_unplanned`,
    /// `rpo_exporter_info`, `rpo_replication_link_down_total`,
    /// `rpo_target_ready_unplanned`, whose lines were written by hand).
    #[test]
    fn rendering_from_the_catalogue_matches_the_golden_exposition() {
        let text: String = golden_render()
            .lines()
            .filter(|l| !l.contains(" process_") && !l.starts_with("process_"))
            .map(|l| format!("{l}\n"))
            .collect();
        let golden = include_str!("testdata/render-golden.txt").replace(
            "version=\"VERSION\",revision=\"REVISION\"",
            &format!("version=\"{VERSION}\",revision=\"{REVISION}\""),
        );
        if text != golden {
            for (i, (got, want)) in text.lines().zip(golden.lines()).enumerate() {
                assert_eq!(got, want, "line {}", i + 1);
            }
            assert_eq!(text.lines().count(), golden.lines().count());
        }
    }

    /// Every `rpo_*` family in the exposition is catalogued, with its type,
    /// and its samples carry exactly the catalogued labels.
    #[test]
    fn every_rendered_family_is_catalogued_with_its_labels() {
        let text = golden_render();
        let mut family = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE rpo_") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let def = catalogue::find(&format!("rpo_{name}")).expect(line);
                assert_eq!(def.metric_type.as_str(), kind, "{line}");
                family = Some(def);
            } else if line.starts_with("rpo_") {
                let def = family.unwrap();
                let labels: Vec<&str> = line
                    .split_once('{')
                    .map(|(_, rest)| rest.rsplit_once('}').unwrap().0)
                    .into_iter()
                    .flat_map(|l| l.split("\",").map(|kv| kv.split_once('=').unwrap().0))
                    .collect();
                assert_eq!(labels, def.all_labels().collect::<Vec<_>>(), "{line}");
            }
        }
    }

    fn without_process(text: &str) -> String {
        text.lines()
            .filter(|l| !l.contains(" process_") && !l.starts_with("process_"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The golden configuration's targets in a store, never polled, and an
    /// empty render cache.
    struct Cached {
        config: Arc<Config>,
        t0: SystemTime,
        ids: Vec<TargetId>,
        store: Store,
        calls: AwsCallCounters,
        cache: RenderCache,
    }

    fn cached_golden() -> Cached {
        let config = Arc::new(
            Config::from_toml(GOLDEN_CONFIG, std::path::Path::new("golden.toml")).unwrap(),
        );
        let ids: Vec<TargetId> = config.targets.iter().map(TargetId::of).collect();
        Cached {
            t0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            store: Store::new(ids.iter().cloned()),
            ids,
            config,
            calls: AwsCallCounters::default(),
            cache: RenderCache::default(),
        }
    }

    /// A body rendered into a kept buffer is the same, byte for byte, as
    /// one rendered into a new buffer, whatever the buffer held (longer or
    /// shorter than the body, or the last scrape's body before a poll
    /// changed it), and it reuses the buffer's room.
    #[test]
    fn rendering_into_a_kept_buffer_matches_a_fresh_rendering() {
        let Cached {
            config,
            t0,
            ids,
            store,
            calls,
            cache,
        } = cached_golden();
        let s = Duration::from_secs_f64;
        let into = |kept: Vec<u8>, at: f64| {
            let fresh = render(&config, &store.snapshot(), &calls, t0 + s(at));
            let room = kept.as_ptr();
            let big_enough = kept.capacity() > 2 * fresh.len() + (64 << 10);
            let body =
                render_cached_into(&config, &store.snapshot(), &calls, t0 + s(at), &cache, kept);
            if big_enough {
                assert_eq!(body.as_ptr(), room, "the kept buffer's room was reused");
            }
            let text = String::from_utf8(body.clone()).expect("UTF-8");
            assert_eq!(without_process(&text), without_process(&fresh), "at {at}");
            body
        };
        let longer = vec![b'x'; 1 << 20];
        into(longer, 5.0);
        let mut shorter = Vec::with_capacity(1 << 20);
        shorter.extend_from_slice(&[b'x'; 100]);
        let last = into(shorter, 6.0);
        let mut pg = Measurement::new(t0 + s(10.0));
        pg.recovery_point = Some(t0 + s(7.5));
        pg.link = LinkState::Healthy;
        pg.replica_reachable = Some(true);
        store.record_poll(&ids[0], t0 + s(9.9), t0 + s(10.0), Ok(pg));
        let refused = ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica);
        store.record_poll(&ids[1], t0 + s(10.0), t0 + s(10.5), Err(refused));
        into(last, 11.0);
    }

    /// A body gives its buffer back to the pool once the answer (and every
    /// clone of it) is dropped, the next scrape takes it with its room, and
    /// a release drops it.
    #[test]
    fn a_sent_body_gives_its_buffer_to_the_next_scrape() {
        let pool = Arc::new(BodyPool::default());
        let mut body = pool.take();
        assert_eq!(body.capacity(), 0, "nothing kept yet");
        body.extend_from_slice(&[b'x'; 100_000]);
        let room = body.as_ptr();
        let answer = bytes::Bytes::from_owner(PooledBody::new(body, pool.clone()));
        let clone = answer.clone();
        assert_eq!(&answer[..3], b"xxx");
        drop(answer);
        assert_eq!(pool.kept_bytes(), 0, "kept only once no clone is left");
        drop(clone);
        assert!(pool.kept_bytes() >= 100_000);
        let next = pool.take();
        assert_eq!(next.as_ptr(), room);
        assert!(next.capacity() >= 100_000);
        assert_eq!(pool.kept_bytes(), 0, "taken, so not kept twice");
        pool.give(next);
        pool.release();
        assert_eq!(pool.kept_bytes(), 0);
    }

    /// The cache changes nothing: each scrape with fragments reused (a
    /// target not polled since) is byte-identical to one written afresh; a
    /// target's changed report is rewritten, an unchanged one's fragment is
    /// not, and a reloaded configuration is not served the old one's lines.
    #[test]
    fn cached_rendering_is_byte_identical_and_reuses_unchanged_targets() {
        let Cached {
            config,
            t0,
            ids,
            store,
            calls,
            cache,
        } = cached_golden();
        let s = Duration::from_secs_f64;
        let scrape = |at: f64| {
            let snapshot = store.snapshot();
            let cached = render_cached(&config, &snapshot, &calls, t0 + s(at), &cache);
            let fresh = render(&config, &snapshot, &calls, t0 + s(at));
            assert_eq!(without_process(&cached), without_process(&fresh), "at {at}");
            cached
        };
        // The scrape that last wrote the fragment of configured target `i`
        // (anything of it, or its poll lines).
        let written_at = |i: usize| cache.state.lock().unwrap().written[i].written_at;
        let polled_at = |i: usize| cache.state.lock().unwrap().written[i].polled_at;
        scrape(1.0);
        let mut pg = Measurement::new(t0 + s(10.0));
        pg.recovery_point = Some(t0 + s(7.5));
        pg.link = LinkState::Healthy;
        pg.replica_reachable = Some(true);
        pg.details = vec![
            Detail::new(&postgres::REPLAY_LAG_BYTES, 4096.0),
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, 1.0).with_label("slot", "a"),
            Detail::new(&HEARTBEAT_TIMESTAMP_SECONDS, 1_700_000_007.25),
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, 0.0).with_label("slot", "b"),
        ];
        store.record_poll(&ids[0], t0 + s(9.9), t0 + s(10.0), Ok(pg));
        let text = scrape(11.0);
        assert!(text.contains("slot=\"a\"} 1\n"), "{text}");
        let erp_db = written_at(0);
        // Another target polled: erp-db's fragment is reused as it was.
        let refused = ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica);
        store.record_poll(&ids[1], t0 + s(11.0), t0 + s(11.5), Err(refused));
        scrape(12.0);
        assert_eq!(written_at(0), erp_db);
        assert!(written_at(1) > erp_db);
        // erp-db's heartbeat: its report changed, so its heartbeat lines are
        // rewritten, and only those (the poll lines are the same poll's).
        store.record_heartbeat(&ids[0], t0 + s(12.0), Ok(()));
        let text = scrape(13.0);
        assert!(written_at(0) > erp_db);
        assert_eq!(polled_at(0), erp_db);
        let heartbeat_line = format!(
            "{}{{group=\"erp\",target=\"erp-db\",kind=\"postgres\"}} 1700000012\n",
            catalogue::HEARTBEAT_LAST_WRITE_TIMESTAMP_SECONDS.name
        );
        assert!(text.contains(&heartbeat_line), "{text}");
        // A failed heartbeat: the failure counter is a heartbeat line too.
        let failed = ProbeError::new(FailureReason::Query, "permission denied");
        store.record_heartbeat(&ids[0], t0 + s(13.0), Err(failed));
        let text = scrape(13.5);
        assert_eq!(polled_at(0), erp_db);
        let failures_line = format!(
            "{}{{group=\"erp\",target=\"erp-db\",kind=\"postgres\"}} 1\n",
            catalogue::HEARTBEAT_WRITE_FAILURES_TOTAL.name
        );
        assert!(text.contains(&failures_line), "{text}");
        // The same number of detail series, other families in another
        // order: sorted again, not in the order worked out for the last.
        let mut pg = Measurement::new(t0 + s(14.0));
        pg.details = vec![
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, 1.0).with_label("slot", "c"),
            Detail::new(&HEARTBEAT_TIMESTAMP_SECONDS, 1_700_000_013.5),
            Detail::new(&postgres::REPLICATION_SLOT_ACTIVE, 0.0).with_label("slot", "d"),
            Detail::new(&postgres::RECEIVE_LAG_BYTES, 12.0),
        ];
        store.record_poll(&ids[0], t0 + s(13.9), t0 + s(14.0), Ok(pg));
        let text = scrape(14.5);
        assert!(polled_at(0) > erp_db);
        assert!(text.contains("slot=\"d\"} 0\n"), "{text}");
        assert!(!text.contains("slot=\"a\""), "{text}");
        // A reload with another budget: the same reports, new lines.
        let reloaded = Arc::new(
            Config::from_toml(
                &GOLDEN_CONFIG.replace("rpo_budget = \"5s\"", "rpo_budget = \"7s\""),
                std::path::Path::new("golden.toml"),
            )
            .unwrap(),
        );
        let text = render_cached(&reloaded, &store.snapshot(), &calls, t0 + s(14.0), &cache);
        let line = format!(
            "{}{{group=\"erp\",target=\"erp-db\",kind=\"postgres\"}} 7\n",
            catalogue::BUDGET_SECONDS.name
        );
        assert!(text.contains(&line), "{text}");
    }

    /// Writing ahead writes the lines of the targets polled since the last
    /// scrape, before the next one (which then finds them written and is
    /// still byte-identical to a fresh rendering); it does nothing for an
    /// exporter never scraped, or after a reload until the next scrape.
    #[test]
    fn writing_ahead_writes_polled_targets_before_the_scrape() {
        let Cached {
            config,
            t0,
            ids,
            store,
            calls,
            cache,
        } = cached_golden();
        let s = Duration::from_secs_f64;
        assert_eq!(
            cache.write_ahead(&config, || store.snapshot()),
            0,
            "never scraped"
        );
        render_cached(&config, &store.snapshot(), &calls, t0 + s(1.0), &cache);
        let written_at = |i: usize| cache.state.lock().unwrap().written[i].written_at;
        let scrapes = || cache.state.lock().unwrap().scrapes;
        assert_eq!(written_at(1), 1);
        let refused = ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica);
        store.record_poll(&ids[1], t0 + s(2.0), t0 + s(2.5), Err(refused));
        let polled = store.snapshot();
        assert_eq!(
            cache.write_ahead(&config, || store.snapshot()),
            config.targets.len()
        );
        // Written ahead: from the poll's report, with no scrape since.
        assert_eq!(scrapes(), 1);
        assert!(Arc::ptr_eq(
            cache.state.lock().unwrap().written[1]
                .report
                .as_ref()
                .unwrap(),
            polled.report(&ids[1]).unwrap()
        ));
        let cached = render_cached(&config, &polled, &calls, t0 + s(3.0), &cache);
        let fresh = render(&config, &polled, &calls, t0 + s(3.0));
        assert_eq!(without_process(&cached), without_process(&fresh));
        assert!(cached.contains("reason=\"connect\"} 1\n"), "{cached}");
        // Another configuration: nothing until a scrape of it.
        let reloaded = Arc::new(
            Config::from_toml(GOLDEN_CONFIG, std::path::Path::new("golden.toml")).unwrap(),
        );
        assert_eq!(cache.write_ahead(&reloaded, || store.snapshot()), 0);
    }

    /// With enough targets the scrape shares its work among threads (the
    /// cache's refresh in shares, the verdicts beside it): still byte for
    /// byte the single-threaded rendering, across polls and heartbeats.
    #[test]
    fn a_scrape_shared_among_threads_matches_the_plain_rendering() {
        let n = 4 * TARGETS_PER_THREAD + 7;
        let mut toml = String::from("[exporter]\ninstance = \"many\"\n");
        for g in 0..n.div_ceil(10) {
            toml.push_str(&format!(
                "[[group]]\nname = \"g{g}\"\nrpo_budget = \"5s\"\n"
            ));
        }
        for i in 0..n {
            toml.push_str(&format!(
                "[[postgres]]\nname = \"t{i}\"\ngroup = \"g{}\"\n\
                 primary_url = \"postgres://m@127.0.0.1:1/db\"\n\
                 replica_url = \"postgres://m@127.0.0.1:2/db\"\n{}",
                i / 10,
                if i % 2 == 0 {
                    "heartbeat = { interval = \"1s\" }\n"
                } else {
                    ""
                }
            ));
        }
        let config = Arc::new(Config::from_toml(&toml, std::path::Path::new("many.toml")).unwrap());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Duration::from_secs_f64;
        let ids: Vec<TargetId> = config.targets.iter().map(TargetId::of).collect();
        let store = Store::new(ids.iter().cloned());
        let calls = AwsCallCounters::default();
        let cache = RenderCache::default();
        for round in 0..3 {
            let at = 10.0 + 10.0 * f64::from(round);
            for (i, id) in ids.iter().enumerate() {
                if (i + round as usize) % 3 == 0 {
                    continue;
                }
                let mut m = Measurement::new(t0 + s(at + 1.0));
                m.recovery_point = Some(t0 + s(at + 1.0) - s(0.5 + (i % 7) as f64));
                m.link = LinkState::Healthy;
                m.replica_reachable = Some(true);
                m.source_reachable = Some(i % 11 != 0);
                m.details = vec![Detail::new(&postgres::REPLAY_LAG_BYTES, i as f64)];
                store.record_poll(id, t0 + s(at), t0 + s(at + 1.0), Ok(m));
                if i % 2 == 0 {
                    store.record_heartbeat(id, t0 + s(at + 1.5), Ok(()));
                }
            }
            let snapshot = store.snapshot();
            let cached = render_cached(&config, &snapshot, &calls, t0 + s(at + 2.0), &cache);
            let fresh = render(&config, &snapshot, &calls, t0 + s(at + 2.0));
            assert_eq!(
                without_process(&cached),
                without_process(&fresh),
                "round {round}"
            );
            assert!(cached.contains("target=\"t2050\""), "all targets rendered");
        }
    }
}
