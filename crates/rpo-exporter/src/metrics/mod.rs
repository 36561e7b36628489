//! Turns a snapshot into the Prometheus text exposition at scrape time.
//!
//! Nothing here waits on a probe: `/metrics` is rendered from the latest
//! [`Snapshot`], the verdict computed from it, and the exporter's own
//! counters handed in explicitly ([`AwsCallCounters`]). Every family's name,
//! help, type and labels come from its declaration ([`catalogue`] for the
//! core families, each kind's file for its detail families). The unified
//! series are written directly ([`exposition`]: a few microseconds per
//! target, see the README's benchmark); the `process_*` series come from the
//! `prometheus` crate's process collector.

pub mod catalogue;
mod exposition;
mod process;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

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
    render_inner(config, snapshot, aws_calls, now, None)
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
    render_inner(config, snapshot, aws_calls, now, Some((config, cache)))
}

fn render_inner(
    config: &Config,
    snapshot: &Snapshot,
    aws_calls: &AwsCallCounters,
    now: SystemTime,
    cache: Option<(&Arc<Config>, &RenderCache)>,
) -> String {
    let verdict = evaluate(config, snapshot, Mode::Planned, now, None);
    // Both gates are published, so the alerting view (and `check
    // --prometheus --mode unplanned`) reads the same verdict as
    // `/failover-readiness?mode=unplanned`. One more pass of the pure
    // verdict: a fraction of rendering the per-target series.
    let unplanned = evaluate(config, snapshot, Mode::Unplanned, now, None);
    let fragments = fragments(config, snapshot, cache);
    let live: Vec<LiveFacts> = config
        .targets
        .iter()
        .map(|target| {
            let id = TargetId::key(target);
            let planned = verdict.target(id);
            LiveFacts {
                replication_healthy: planned.is_some_and(|v| v.replication_healthy),
                ready: planned.is_some_and(|v| v.ready),
                ready_unplanned: unplanned.target(id).is_some_and(|v| v.ready),
            }
        })
        .collect();
    // The cached lines, and the three live ones per target.
    let body: usize = fragments
        .iter()
        .map(|f| f.text.len() + 3 * (f.labels.len() + 64))
        .sum();
    let mut out = String::with_capacity(16384 + body);
    render_targets(&mut out, &fragments, &live);
    render_groups(&mut out, &verdict, &unplanned);
    render_meta(&mut out, config);
    render_aws_calls(&mut out, config, aws_calls);
    process::render(&mut out);
    out
}

/// The per-target facts that depend on the scrape's time (the verdict),
/// so they are never cached.
struct LiveFacts {
    replication_healthy: bool,
    ready: bool,
    ready_unplanned: bool,
}

/// What a target contributes to the per-target families that depend only on
/// its configuration and its report: the sample lines of each family, one
/// after the other in the order the exposition writes families, with where
/// each family's lines end. The exposition is family by family, so a scrape
/// interleaves the targets' fragments: one copy per family and target.
struct Fragment {
    /// `group="…",target="…",kind="…"`, escaped.
    labels: String,
    text: String,
    /// (slot, end of its lines in `text`), slots ascending; a slot with no
    /// line has no span. Slots are [`COLUMNS`] then the detail families'
    /// [`detail_rank`] after them.
    spans: Vec<(u16, u32)>,
    /// Detail families missing from the catalogue (a bug the debug build
    /// asserts on): written after the catalogued ones, by name.
    uncatalogued: Vec<(&'static MetricDef, String)>,
}

/// A per-target family: a sample (or, for the failure counters, several)
/// from the target's configuration and report, or from the verdict.
enum Column {
    Cached(
        &'static MetricDef,
        fn(&Target, &TargetReport) -> Option<f64>,
    ),
    Failures,
    Live(&'static MetricDef, fn(&LiveFacts) -> bool),
}

/// The per-target families in exposition order.
static COLUMNS: &[Column] = {
    use catalogue::*;
    use Column::{Cached, Failures, Live};
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
        Cached(&RECOVERY_POINT_TIMESTAMP_SECONDS, |_, r| {
            r.recovery_point.map(unix_seconds)
        }),
        Cached(&EXPOSURE_SECONDS, |_, r| {
            r.exposure.map(|d| d.as_secs_f64())
        }),
        Cached(&BUDGET_SECONDS, |t, _| Some(t.rpo_budget.as_secs_f64())),
        Cached(&STALE_AFTER_SECONDS, |t, _| {
            Some(t.stale_after.as_secs_f64())
        }),
        Live(&REPLICATION_HEALTHY, |l| l.replication_healthy),
        Cached(&EVIDENCE_TIMESTAMP_SECONDS, |_, r| {
            r.evidence_time.map(unix_seconds)
        }),
        Live(&TARGET_READY, |l| l.ready),
        Live(&TARGET_READY_UNPLANNED, |l| l.ready_unplanned),
        Cached(&BACKLOG_BYTES, |_, r| measured(r, |m| m.backlog_bytes)),
        Cached(&BACKLOG_OPERATIONS, |_, r| {
            measured(r, |m| m.backlog_operations)
        }),
        Cached(&CATCHUP_SECONDS, |_, r| measured(r, |m| m.catchup_seconds)),
        Cached(&SOURCE_REACHABLE, |_, r| {
            measured(r, |m| m.source_reachable.map(bool_value))
        }),
        Cached(&REPLICA_REACHABLE, |_, r| {
            measured(r, |m| m.replica_reachable.map(bool_value))
        }),
        Cached(&PROBE_SUCCESS, |_, r| {
            (r.runs_total > 0).then_some(bool_value(r.last_poll_succeeded))
        }),
        Cached(&PROBE_DURATION_SECONDS, |_, r| {
            r.last_duration.map(|d| d.as_secs_f64())
        }),
        Cached(&PROBE_LAST_SUCCESS_TIMESTAMP_SECONDS, |_, r| {
            r.last_success.map(unix_seconds)
        }),
        Cached(&HEARTBEAT_LAST_WRITE_TIMESTAMP_SECONDS, |_, r| {
            r.heartbeat.last_write.map(unix_seconds)
        }),
        Cached(&PROBE_RUNS_TOTAL, |_, r| Some(r.runs_total as f64)),
        Failures,
        Cached(&HEARTBEAT_WRITE_FAILURES_TOTAL, |t, r| {
            t.heartbeat_interval()
                .map(|_| r.heartbeat.failures_total as f64)
        }),
        // From 0 for every target, like the failures above, so `increase()`
        // sees the first drop.
        Cached(&REPLICATION_LINK_DOWN_TOTAL, |_, r| {
            Some(r.link_down_total as f64)
        }),
        // Pair kinds: the roles followed across promotions (see
        // `evidence::promotion`); no sample for a kind that reports no roles.
        Cached(&PROMOTED, |_, r| {
            watch(r).and_then(|w| w.replica_writable).map(bool_value)
        }),
        Cached(&SPLIT_BRAIN, |_, r| {
            watch(r).map(|w| bool_value(w.split_brain.is_some()))
        }),
        Cached(&MEASURED_LOSS_SECONDS, |_, r| {
            latest(r)
                .and_then(|p| p.measured_loss())
                .map(|d| d.as_secs_f64())
        }),
        Cached(&PREDICTED_EXPOSURE_AT_PROMOTION_SECONDS, |_, r| {
            latest(r).and_then(|p| p.predicted).map(|d| d.as_secs_f64())
        }),
        Cached(&PROMOTION_TIMESTAMP_SECONDS, |_, r| {
            latest(r).map(|p| unix_seconds(p.seen_at))
        }),
        Cached(&MEASURED_LOSS_BYTES, |_, r| {
            latest(r).and_then(|p| p.lost_bytes).map(|b| b as f64)
        }),
    ]
};

/// Every catalogued family's rank in name order: the detail families are
/// written in name order, after [`COLUMNS`].
fn detail_rank(family: &MetricDef) -> Option<u16> {
    static RANKS: OnceLock<HashMap<&'static str, u16>> = OnceLock::new();
    RANKS
        .get_or_init(|| {
            let mut names: Vec<&'static str> = catalogue::all().iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            names
                .into_iter()
                .enumerate()
                .map(|(i, name)| (name, (COLUMNS.len() + i) as u16))
                .collect()
        })
        .get(family.name)
        .copied()
}

impl Fragment {
    fn build(target: &Target, report: &TargetReport) -> Fragment {
        let labels = target_labels(target);
        let mut text = String::with_capacity(2048);
        let mut spans = Vec::with_capacity(COLUMNS.len() + 16);
        /// Ends the span of `slot` begun at `before`, if it wrote a line.
        fn close(text: &str, spans: &mut Vec<(u16, u32)>, slot: usize, before: usize) {
            if text.len() > before {
                spans.push((slot as u16, text.len() as u32));
            }
        }
        for (slot, column) in COLUMNS.iter().enumerate() {
            let before = text.len();
            match column {
                Column::Cached(family, value) => {
                    if let Some(v) = value(target, report) {
                        sample(&mut text, family.name, &labels, None, v);
                    }
                }
                Column::Failures => {
                    for reason in FailureReason::ALL {
                        sample(
                            &mut text,
                            catalogue::PROBE_FAILURES_TOTAL.name,
                            &labels,
                            Some(("reason", reason.as_str())),
                            report.failures(reason) as f64,
                        );
                    }
                }
                Column::Live(..) => {}
            }
            close(&text, &mut spans, slot, before);
        }
        let mut uncatalogued = Vec::new();
        if let Some(m) = &report.measurement {
            // Detail series by family name; a family's samples keep the
            // probe's order (the sort is stable).
            let mut details: Vec<(Option<u16>, &crate::probe::Detail)> = m
                .details
                .iter()
                .map(|d| {
                    debug_assert!(
                        catalogue::is_catalogued(d.family),
                        "{} is not in its kind's DETAIL_FAMILIES",
                        d.family.name
                    );
                    (detail_rank(d.family), d)
                })
                .collect();
            details.sort_by_key(|(rank, _)| *rank);
            let mut open: Option<(u16, usize)> = None;
            for (rank, detail) in details {
                let Some(rank) = rank else {
                    let mut line = String::new();
                    detail_line(&mut line, &labels, detail);
                    uncatalogued.push((detail.family, line));
                    continue;
                };
                match open {
                    Some((slot, _)) if slot == rank => {}
                    Some((slot, before)) => {
                        close(&text, &mut spans, slot as usize, before);
                        open = Some((rank, text.len()));
                    }
                    None => open = Some((rank, text.len())),
                }
                detail_line(&mut text, &labels, detail);
            }
            if let Some((slot, before)) = open {
                close(&text, &mut spans, slot as usize, before);
            }
        }
        Fragment {
            labels,
            text,
            spans,
            uncatalogued,
        }
    }
}

fn detail_line(out: &mut String, labels: &str, detail: &crate::probe::Detail) {
    out.push_str(detail.family.name);
    out.push('{');
    out.push_str(labels);
    for (k, v) in &detail.labels {
        push_label(out, k, v);
    }
    out.push_str("} ");
    push_value(out, detail.value);
    out.push('\n');
}

/// The fragments of the previous scrape, each with the report it was
/// written from, so a scrape rewrites only the targets polled since (at
/// 10,000 targets polled every 5 s, a scrape every 15 s rewrites most; one
/// every second a fifth). Kept for one configuration: a reload (a new
/// `Arc<Config>`: labels, budgets may differ) starts afresh.
#[derive(Default)]
pub struct RenderCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    config: Option<Arc<Config>>,
    entries: HashMap<TargetId, (Arc<TargetReport>, Arc<Fragment>)>,
}

impl fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenderCache")
    }
}

/// Each configured target's fragment, in configuration order: from the
/// cache when its report is the one the cached fragment was written from
/// (the same `Arc`: a poll or heartbeat replaces it), else written now.
fn fragments(
    config: &Config,
    snapshot: &Snapshot,
    cache: Option<(&Arc<Config>, &RenderCache)>,
) -> Vec<Arc<Fragment>> {
    let never_polled = TargetReport::default();
    let Some((config_arc, cache)) = cache else {
        return config
            .targets
            .iter()
            .map(|t| {
                let report = snapshot
                    .report(TargetId::key(t))
                    .map_or(&never_polled, |r| r.as_ref());
                Arc::new(Fragment::build(t, report))
            })
            .collect();
    };
    // Taken out of the lock for the work: a concurrent scrape finds it
    // empty and writes its own (same output, more work), never waits.
    let mut old = {
        let mut state = cache.state.lock().unwrap_or_else(|e| e.into_inner());
        let same_config = state
            .config
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, config_arc));
        let entries = std::mem::take(&mut state.entries);
        if same_config {
            entries
        } else {
            HashMap::new()
        }
    };
    let mut fresh = HashMap::with_capacity(config.targets.len());
    let out = config
        .targets
        .iter()
        .map(|t| {
            let key = TargetId::key(t);
            let Some((id, report)) = snapshot.entry(key) else {
                return Arc::new(Fragment::build(t, &never_polled));
            };
            let fragment = match old.remove(key) {
                Some((was, fragment)) if Arc::ptr_eq(&was, report) => fragment,
                _ => Arc::new(Fragment::build(t, report)),
            };
            fresh.insert(id.clone(), (report.clone(), fragment.clone()));
            fragment
        })
        .collect();
    let mut state = cache.state.lock().unwrap_or_else(|e| e.into_inner());
    state.config = Some(config_arc.clone());
    state.entries = fresh;
    out
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
fn render_targets(out: &mut String, fragments: &[Arc<Fragment>], live: &[LiveFacts]) {
    // Per target: the next span to take, and where it starts.
    let mut next: Vec<(usize, u32)> = vec![(0, 0); fragments.len()];
    let take = |out: &mut String, slot: u16, next: &mut [(usize, u32)]| {
        for (fragment, (span, start)) in fragments.iter().zip(next.iter_mut()) {
            if let Some(&(s, end)) = fragment.spans.get(*span) {
                if s == slot {
                    out.push_str(&fragment.text[*start as usize..end as usize]);
                    *span += 1;
                    *start = end;
                }
            }
        }
    };
    for (slot, column) in COLUMNS.iter().enumerate() {
        match column {
            Column::Cached(family, _) => {
                header(out, family);
                take(out, slot as u16, &mut next);
            }
            Column::Failures => {
                header(out, &catalogue::PROBE_FAILURES_TOTAL);
                take(out, slot as u16, &mut next);
            }
            Column::Live(family, value) => {
                header(out, family);
                for (fragment, l) in fragments.iter().zip(live) {
                    sample(
                        out,
                        family.name,
                        &fragment.labels,
                        None,
                        bool_value(value(l)),
                    );
                }
            }
        }
    }
    // The detail families some target has, in name order.
    let mut present: Vec<u16> = fragments
        .iter()
        .flat_map(|f| f.spans.iter().map(|(slot, _)| *slot))
        .filter(|slot| *slot as usize >= COLUMNS.len())
        .collect();
    present.sort_unstable();
    present.dedup();
    let by_rank: HashMap<u16, &'static MetricDef> = catalogue::all()
        .iter()
        .filter_map(|f| detail_rank(f).map(|r| (r, *f)))
        .collect();
    for slot in present {
        header(out, by_rank[&slot]);
        take(out, slot, &mut next);
    }
    let mut uncatalogued: BTreeMap<&str, (&MetricDef, Vec<&str>)> = BTreeMap::new();
    for fragment in fragments {
        for (family, line) in &fragment.uncatalogued {
            uncatalogued
                .entry(family.name)
                .or_insert_with(|| (family, Vec::new()))
                .1
                .push(line.as_str());
        }
    }
    for (family, lines) in uncatalogued.into_values() {
        header(out, family);
        for line in lines {
            out.push_str(line);
        }
    }
}

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
    use catalogue::{SERVER_CONNECTIONS, SERVER_CONNECTIONS_LIMIT};
    header(out, &SERVER_CONNECTIONS);
    exporter_sample(out, &SERVER_CONNECTIONS, &[], open_connections() as f64);
    header(out, &SERVER_CONNECTIONS_LIMIT);
    let limit = descriptor_limit().map_or(f64::INFINITY, |l| l as f64);
    exporter_sample(out, &SERVER_CONNECTIONS_LIMIT, &[], limit);
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

    /// The cache changes nothing: each scrape with fragments reused (a
    /// target not polled since) is byte-identical to one written afresh; a
    /// target's changed report is rewritten, an unchanged one's fragment is
    /// the very one cached, and a reloaded configuration is not served the
    /// old one's lines.
    #[test]
    fn cached_rendering_is_byte_identical_and_reuses_unchanged_targets() {
        let config = Arc::new(
            Config::from_toml(GOLDEN_CONFIG, std::path::Path::new("golden.toml")).unwrap(),
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Duration::from_secs_f64;
        let ids: Vec<TargetId> = config.targets.iter().map(TargetId::of).collect();
        let store = Store::new(ids.iter().cloned());
        let calls = AwsCallCounters::default();
        let cache = RenderCache::default();
        let scrape = |at: f64| {
            let snapshot = store.snapshot();
            let cached = render_cached(&config, &snapshot, &calls, t0 + s(at), &cache);
            let fresh = render(&config, &snapshot, &calls, t0 + s(at));
            assert_eq!(without_process(&cached), without_process(&fresh), "at {at}");
            cached
        };
        let cached_fragment = |id: &TargetId| cache.state.lock().unwrap().entries[id].1.clone();
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
        let erp_db = cached_fragment(&ids[0]);
        // Another target polled: erp-db's fragment is reused as it was.
        let refused = ProbeError::new(FailureReason::Connect, "refused").on(Side::Replica);
        store.record_poll(&ids[1], t0 + s(11.0), t0 + s(11.5), Err(refused));
        scrape(12.0);
        assert!(Arc::ptr_eq(&erp_db, &cached_fragment(&ids[0])));
        // erp-db's heartbeat: its report changed, so it is rewritten.
        store.record_heartbeat(&ids[0], t0 + s(12.0), Ok(()));
        scrape(13.0);
        assert!(!Arc::ptr_eq(&erp_db, &cached_fragment(&ids[0])));
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
}
