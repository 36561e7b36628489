//! `rpo-exporter drill`: a failover drill in the foreground (SPEC section 11).
//!
//! It polls the group's targets and writes heartbeats as the daemon does
//! (under its own instance name, `<instance>-drill`, so it never touches
//! the daemon's rows), prints the verdict as it changes, and waits until
//! every target whose promotion the exporter can follow (the pair kinds:
//! `postgres`, `redis`) has been promoted, or the timeout passes. Then it
//! writes `drill-report.md`, `drill-report.json` and a self-contained
//! `drill-report.html`: per target the exposure predicted just before the
//! promotion, the loss measured, the budget, when the promotion was seen,
//! how long after the drill's start the promoted side accepted its first
//! heartbeat, and the verdict timeline. The report is written for a person
//! who was not on the call.
//!
//! Exit 0 when every followed target's measured loss is within its budget,
//! 1 otherwise (a loss over budget, a loss that could not be measured, a
//! split brain, or the timeout), 2 on a bad config or usage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{Config, Target};
use crate::poller::Poller;
use crate::probe::{unix_seconds, ProbeContext};
use crate::readiness::{
    clock, evaluate, human_bytes, human_duration, promotion_headline, promotion_loss_words,
    GroupVerdict, Mode, ReasonCode,
};
use crate::store::{Snapshot, Store, TargetId};

/// The version of `drill-report.json`. Bumped only when a field changes
/// meaning or goes away.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

pub const EXIT_PASS: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// The report's file names in the report directory.
pub const REPORT_MD: &str = "drill-report.md";
pub const REPORT_JSON: &str = "drill-report.json";
pub const REPORT_HTML: &str = "drill-report.html";

#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Only this group's targets (all groups when `None`).
    pub group: Option<String>,
    /// Where the report files are written.
    pub report_dir: PathBuf,
    /// How long to wait for the promotions.
    pub timeout: Duration,
}

/// Why a drill could not start (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("unknown group `{group}`; configured groups: {known}")]
    UnknownGroup { group: String, known: String },
    #[error("{scope} has no target whose promotion the exporter can follow (kinds that report which side accepts writes: {kinds}); a drill measures the loss a promotion takes, so name a group with such a target")]
    NothingToFollow { scope: String, kinds: String },
    #[error(
        "cannot write the report into {dir}: {source}; pass --report with a writable directory"
    )]
    ReportDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a drill as the command line does: prints as it goes, writes the
/// report, and returns the exit code.
pub async fn run(config: Config, options: DrillOptions) -> u8 {
    let report = match drill(config, &options, |line| println!("{line}")).await {
        Ok(report) => report,
        Err(problem) => {
            eprintln!("rpo-exporter drill: {problem}");
            return EXIT_USAGE;
        }
    };
    match report.write(&options.report_dir) {
        Ok(paths) => {
            println!();
            print!("{}", report.summary_text());
            println!("\nReport:");
            for path in paths {
                println!("  {}", path.display());
            }
        }
        Err(problem) => {
            // The drill is over: say what it found even without the files.
            print!("{}", report.summary_text());
            eprintln!("rpo-exporter drill: {problem}");
            return EXIT_FAIL;
        }
    }
    report.exit_code
}

/// Runs a drill: polls until the followed targets are promoted (or the
/// timeout), calling `say` with each line a person watching should see,
/// and returns the report (not yet written).
pub async fn drill(
    mut config: Config,
    options: &DrillOptions,
    mut say: impl FnMut(&str),
) -> Result<DrillReport, DrillError> {
    if let Some(group) = &options.group {
        if config.group(group).is_none() {
            return Err(DrillError::UnknownGroup {
                group: group.clone(),
                known: config.group_names(),
            });
        }
    }
    config
        .targets
        .retain(|t| options.group.as_ref().is_none_or(|g| &t.group == g));
    let scope = match &options.group {
        Some(g) => format!("group {g}"),
        None => "the configuration".to_string(),
    };
    let followed: Vec<Target> = config
        .targets
        .iter()
        .filter(|t| t.spec.reports_roles())
        .cloned()
        .collect();
    if followed.is_empty() {
        return Err(DrillError::NothingToFollow {
            scope,
            kinds: crate::kinds::all()
                .filter(|k| pair_kind(*k))
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    check_report_dir(&options.report_dir)?;

    // The drill writes and reads its own heartbeat, never the daemon's.
    config.instance = format!("{}-drill", config.instance);
    let config = Arc::new(config);
    let store = Arc::new(Store::new(config.targets.iter().map(TargetId::of)));
    let started = SystemTime::now();
    let clock_started = Instant::now();
    let poller = Poller::start(
        config.clone(),
        store.clone(),
        ProbeContext::new(config.instance.clone()),
    );

    say(&format!(
        "Drill of {scope} started at {} (exporter instance {}).",
        humantime::format_rfc3339_seconds(started),
        config.instance
    ));
    say(&format!(
        "Following: {}. Waiting up to {} for their promotions: promote the replicas now.",
        followed
            .iter()
            .map(|t| format!("{} ({})", t.name, t.kind()))
            .collect::<Vec<_>>()
            .join(", "),
        human_duration(options.timeout)
    ));

    let grace = followed
        .iter()
        .filter_map(|t| t.heartbeat_interval().map(|i| i * 3 + t.timeout))
        .max()
        .unwrap_or_default()
        .max(Duration::from_secs(5));
    let mut timeline = Timeline::default();
    let mut all_promoted_at: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = SystemTime::now();
        let snapshot = store.snapshot();
        timeline.observe(
            &config, &snapshot, options, &followed, started, now, &mut say,
        );

        let promoted = |t: &Target| {
            snapshot
                .report(TargetId::key(t))
                .is_some_and(|r| r.promotion.latest.is_some())
        };
        let heartbeat_settled = |t: &Target| {
            t.heartbeat_interval().is_none()
                || snapshot.report(TargetId::key(t)).is_some_and(|r| {
                    r.promotion
                        .latest
                        .as_ref()
                        .is_some_and(|p| p.first_heartbeat_accepted.is_some() || p.loss.is_err())
                })
        };
        if followed.iter().all(promoted) {
            let since = *all_promoted_at.get_or_insert_with(Instant::now);
            // Wait a little for the promoted sides' first heartbeats.
            if followed.iter().all(heartbeat_settled) || since.elapsed() >= grace {
                break;
            }
        }
        if clock_started.elapsed() >= options.timeout {
            timed_out = true;
            say(&format!(
                "Timed out after {}: not every replica was seen promoted.",
                human_duration(options.timeout)
            ));
            break;
        }
    }
    poller.shutdown().await;
    let finished = SystemTime::now();
    Ok(DrillReport::build(
        &config,
        &store.snapshot(),
        options,
        &followed,
        started,
        finished,
        timed_out,
        timeline,
    ))
}

/// The kinds whose promotion a drill can follow.
fn pair_kind(kind: crate::kinds::Kind) -> bool {
    matches!(
        kind.as_str(),
        "postgres" | "redis" | "mysql" | "aurora_global" | "elasticache_global" | "rds"
    )
}

/// Fails early, before the drill runs for minutes, when the report
/// cannot be written.
fn check_report_dir(dir: &Path) -> Result<(), DrillError> {
    let problem = |source| DrillError::ReportDir {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(problem)?;
    let probe = dir.join(".rpo-drill-write-test");
    std::fs::write(&probe, b"").map_err(problem)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The verdict as it changed, and the events of the drill.
#[derive(Debug, Default)]
struct Timeline {
    entries: Vec<TimelineEntry>,
    /// The verdict's shape last recorded: readiness and reason codes per
    /// target in each mode (numbers in the words change on every poll).
    last_key: Option<String>,
    announced_promotion: std::collections::BTreeSet<String>,
    announced_heartbeat: std::collections::BTreeSet<String>,
    split_brain_seen: std::collections::BTreeSet<String>,
}

impl Timeline {
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        config: &Config,
        snapshot: &Snapshot,
        options: &DrillOptions,
        followed: &[Target],
        started: SystemTime,
        now: SystemTime,
        say: &mut impl FnMut(&str),
    ) {
        let group = options.group.as_deref();
        let planned = evaluate(config, snapshot, Mode::Planned, now, group);
        let unplanned = evaluate(config, snapshot, Mode::Unplanned, now, group);
        let key = format!(
            "{}{}|{}",
            shape(&planned.groups),
            planned.ready,
            shape(&unplanned.groups)
        ) + &unplanned.ready.to_string();
        if self.last_key.as_deref() != Some(key.as_str()) {
            self.last_key = Some(key);
            let mut lines: Vec<String> = planned
                .groups
                .iter()
                .flat_map(|g| g.reasons.iter().map(|r| r.message.clone()))
                .collect();
            for r in unplanned.groups.iter().flat_map(|g| g.reasons.iter()) {
                if !lines.contains(&r.message) {
                    lines.push(format!("(unplanned) {}", r.message));
                }
            }
            self.push(
                started,
                now,
                "verdict",
                Some(word(planned.ready)),
                Some(word(unplanned.ready)),
                lines,
                say,
            );
        }
        for target in followed {
            let Some(report) = snapshot.report(TargetId::key(target)) else {
                continue;
            };
            let watch = &report.promotion;
            if watch.split_brain.is_some() && self.split_brain_seen.insert(target.name.clone()) {
                self.push(
                    started,
                    now,
                    "split_brain",
                    None,
                    None,
                    vec![format!(
                        "{}: split brain: both sides accept writes",
                        target.name
                    )],
                    say,
                );
            }
            let Some(p) = &watch.latest else { continue };
            if self.announced_promotion.insert(target.name.clone()) {
                let line = format!(
                    "{}: {}: {}",
                    target.name,
                    promotion_headline(p),
                    promotion_loss_words(p)
                );
                self.push(started, p.seen_at, "promotion", None, None, vec![line], say);
            }
            if let Some(first) = p.first_heartbeat_accepted {
                if self.announced_heartbeat.insert(target.name.clone()) {
                    let line = format!(
                        "{}: the promoted side accepted its first heartbeat ({} after the drill started)",
                        target.name,
                        human_duration(first.duration_since(started).unwrap_or_default())
                    );
                    self.push(started, first, "heartbeat", None, None, vec![line], say);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        started: SystemTime,
        at: SystemTime,
        event: &str,
        planned: Option<&str>,
        unplanned: Option<&str>,
        lines: Vec<String>,
        say: &mut impl FnMut(&str),
    ) {
        let offset = at.duration_since(started).unwrap_or_default();
        let mut text = format!("[+{:>6}  {}]", human_duration(offset), clock(at));
        if let (Some(p), Some(u)) = (planned, unplanned) {
            let _ = write!(text, " planned {p}, unplanned {u}");
        }
        say(&text);
        for line in &lines {
            say(&format!("    {line}"));
        }
        self.entries.push(TimelineEntry {
            at: humantime::format_rfc3339_millis(at).to_string(),
            at_unix: unix_seconds(at),
            offset_seconds: offset.as_secs_f64(),
            event: event.to_string(),
            planned: planned.map(str::to_string),
            unplanned: unplanned.map(str::to_string),
            lines,
        });
    }
}

/// Readiness and reason codes per target: what makes a new timeline entry.
fn shape(groups: &[GroupVerdict]) -> String {
    let mut key = String::new();
    for g in groups {
        for t in &g.targets {
            let codes: Vec<ReasonCode> = t.reasons.iter().map(|r| r.code).collect();
            let _ = write!(key, "{}:{:?};", t.target, codes);
        }
    }
    key
}

fn word(ready: bool) -> &'static str {
    if ready {
        "GO"
    } else {
        "NO-GO"
    }
}

/// `drill-report.json`; the Markdown and HTML forms say the same.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub schema_version: u32,
    /// The group drilled (`null`: every group in the configuration).
    pub group: Option<String>,
    pub config_file: String,
    pub exporter_instance: String,
    pub started_at: String,
    pub started_at_unix: f64,
    pub finished_at: String,
    pub finished_at_unix: f64,
    pub duration_seconds: f64,
    pub timeout_seconds: f64,
    pub timed_out: bool,
    /// `pass` or `fail`.
    pub result: String,
    pub exit_code: u8,
    /// The outcome in sentences, one per line.
    pub summary: Vec<String>,
    /// The targets whose promotion was followed.
    pub targets: Vec<DrillTarget>,
    /// The group's other targets (kinds whose promotion cannot be seen).
    pub not_followed: Vec<NotFollowed>,
    /// Verdict changes and drill events, in order.
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillTarget {
    pub target: String,
    pub kind: String,
    pub group: String,
    pub budget_seconds: f64,
    pub promoted: bool,
    /// The first poll that saw the replica accepting writes (it was
    /// promoted at or before).
    pub promoted_at: Option<String>,
    pub promoted_at_unix: Option<f64>,
    /// The last poll that saw it a replica (it was promoted after).
    pub promoted_not_before: Option<String>,
    /// The exposure the exporter predicted just before the promotion.
    pub predicted_exposure_seconds: Option<f64>,
    /// The loss the promotion took, measured by the heartbeat canary.
    pub measured_loss_seconds: Option<f64>,
    /// Why the loss is not measured, when it is not.
    pub loss_not_measured: Option<String>,
    /// Replication-stream bytes the promoted side never got (a lower bound).
    pub measured_loss_bytes: Option<f64>,
    pub within_budget: Option<bool>,
    pub recovery_point_before_promotion: Option<String>,
    pub first_heartbeat_accepted_at: Option<String>,
    /// From the drill's start to the first heartbeat the promoted side accepted.
    pub first_heartbeat_after_start_seconds: Option<f64>,
    /// The error bound of the measured loss.
    pub heartbeat_interval_seconds: Option<f64>,
    pub split_brain_seen: bool,
    pub passed: bool,
    /// The outcome in one sentence.
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotFollowed {
    pub target: String,
    pub kind: String,
    pub why: String,
    /// Its exposure when the drill ended.
    pub exposure_seconds_at_end: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: String,
    pub at_unix: f64,
    /// Since the drill started.
    pub offset_seconds: f64,
    /// `verdict`, `promotion`, `heartbeat` or `split_brain`.
    pub event: String,
    /// For `verdict` entries: the planned and unplanned verdicts.
    pub planned: Option<String>,
    pub unplanned: Option<String>,
    /// The reasons, or what happened.
    pub lines: Vec<String>,
}

impl DrillReport {
    #[allow(clippy::too_many_arguments)]
    fn build(
        config: &Config,
        snapshot: &Snapshot,
        options: &DrillOptions,
        followed: &[Target],
        started: SystemTime,
        finished: SystemTime,
        timed_out: bool,
        mut timeline: Timeline,
    ) -> DrillReport {
        let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let targets: Vec<DrillTarget> = followed
            .iter()
            .map(|t| {
                let report = snapshot.report(TargetId::key(t));
                let watch = report.map(|r| &r.promotion);
                let p = watch.and_then(|w| w.latest.as_ref());
                let measured = p.and_then(|p| p.measured_loss());
                let split_brain_seen = timeline.split_brain_seen.contains(&t.name)
                    || watch.is_some_and(|w| w.split_brain.is_some());
                let within_budget = measured.map(|loss| loss <= t.rpo_budget);
                let passed = within_budget == Some(true) && !split_brain_seen;
                let outcome = match (p, measured) {
                    (None, _) => "fail: the replica was not seen promoted".to_string(),
                    (Some(_), _) if split_brain_seen => {
                        "fail: split brain (both sides accepted writes) during the drill"
                            .to_string()
                    }
                    (Some(_), Some(loss)) if loss <= t.rpo_budget => format!(
                        "pass: measured loss {} within budget {}",
                        human_duration(loss),
                        human_duration(t.rpo_budget)
                    ),
                    (Some(_), Some(loss)) => format!(
                        "fail: measured loss {} exceeds budget {}",
                        human_duration(loss),
                        human_duration(t.rpo_budget)
                    ),
                    (Some(p), None) => format!(
                        "fail: loss not measured ({})",
                        p.loss.err().map(|w| w.describe()).unwrap_or_default()
                    ),
                };
                DrillTarget {
                    target: t.name.clone(),
                    kind: t.kind().to_string(),
                    group: t.group.clone(),
                    budget_seconds: t.rpo_budget.as_secs_f64(),
                    promoted: p.is_some(),
                    promoted_at: p.map(|p| time(p.seen_at)),
                    promoted_at_unix: p.map(|p| unix_seconds(p.seen_at)),
                    promoted_not_before: p.and_then(|p| p.replica_until).map(time),
                    predicted_exposure_seconds: p
                        .and_then(|p| p.predicted)
                        .map(|d| d.as_secs_f64()),
                    measured_loss_seconds: measured.map(|d| d.as_secs_f64()),
                    loss_not_measured: p
                        .and_then(|p| p.loss.err())
                        .map(|w| w.describe().to_string()),
                    measured_loss_bytes: p.and_then(|p| p.lost_bytes).map(|b| b as f64),
                    within_budget,
                    recovery_point_before_promotion: p
                        .and_then(|p| p.recovery_point_before)
                        .map(time),
                    first_heartbeat_accepted_at: p
                        .and_then(|p| p.first_heartbeat_accepted)
                        .map(time),
                    first_heartbeat_after_start_seconds: p
                        .and_then(|p| p.first_heartbeat_accepted)
                        .map(|at| at.duration_since(started).unwrap_or_default().as_secs_f64()),
                    heartbeat_interval_seconds: t.heartbeat_interval().map(|d| d.as_secs_f64()),
                    split_brain_seen,
                    passed,
                    outcome,
                }
            })
            .collect();
        let not_followed = config
            .targets
            .iter()
            .filter(|t| !t.spec.reports_roles())
            .map(|t| NotFollowed {
                target: t.name.clone(),
                kind: t.kind().to_string(),
                why: format!(
                    "the exporter cannot see a {} target promoted; judge it by its exposure",
                    t.kind()
                ),
                exposure_seconds_at_end: snapshot
                    .report(TargetId::key(t))
                    .and_then(|r| r.exposure)
                    .map(|d| d.as_secs_f64()),
            })
            .collect();
        let passed = !timed_out && targets.iter().all(|t| t.passed);
        let mut summary = Vec::new();
        summary.push(if passed {
            format!(
                "PASS: every followed target was promoted and lost no more than its budget ({} target{}).",
                targets.len(),
                if targets.len() == 1 { "" } else { "s" }
            )
        } else if timed_out {
            format!(
                "FAIL: timed out after {} before every replica was seen promoted.",
                human_duration(options.timeout)
            )
        } else {
            format!(
                "FAIL: {}.",
                targets
                    .iter()
                    .filter(|t| !t.passed)
                    .map(|t| format!("{}: {}", t.target, t.outcome.trim_start_matches("fail: ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
        for t in &targets {
            summary.push(target_sentence(t));
        }
        timeline
            .entries
            .sort_by(|a, b| a.at_unix.total_cmp(&b.at_unix));
        DrillReport {
            schema_version: REPORT_SCHEMA_VERSION,
            group: options.group.clone(),
            config_file: config.source.display().to_string(),
            exporter_instance: config.instance.clone(),
            started_at: time(started),
            started_at_unix: unix_seconds(started),
            finished_at: time(finished),
            finished_at_unix: unix_seconds(finished),
            duration_seconds: finished
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64(),
            timeout_seconds: options.timeout.as_secs_f64(),
            timed_out,
            result: if passed { "pass" } else { "fail" }.to_string(),
            exit_code: if passed { EXIT_PASS } else { EXIT_FAIL },
            summary,
            targets,
            not_followed,
            timeline: timeline.entries,
        }
    }

    /// The summary as printed at the end of a drill.
    pub fn summary_text(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.summary.iter().enumerate() {
            let _ = writeln!(out, "{}{line}", if i == 0 { "" } else { "  - " });
        }
        out
    }

    /// Writes the three report files into `dir`; their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, DrillError> {
        let problem = |source| DrillError::ReportDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(problem)?;
        let json = serde_json::to_string_pretty(self).expect("a report serialises");
        let files = [
            (REPORT_MD, self.to_markdown()),
            (REPORT_JSON, json),
            (REPORT_HTML, self.to_html()),
        ];
        let mut paths = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(problem)?;
            paths.push(path);
        }
        Ok(paths)
    }

    fn title(&self) -> String {
        format!(
            "Failover drill of {}: {}",
            self.group
                .as_deref()
                .map(|g| format!("group {g}"))
                .unwrap_or_else(|| "every group".to_string()),
            self.result.to_uppercase()
        )
    }

    /// `drill-report.md`.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.title());
        for (i, line) in self.summary.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(md, "**{line}**\n");
            } else {
                let _ = writeln!(md, "- {line}");
            }
        }
        let _ = writeln!(md, "\n| | |\n|---|---|");
        for (what, value) in self.facts() {
            let _ = writeln!(md, "| {what} | {} |", md_cell(&value));
        }
        let _ = writeln!(md, "\n## Per target\n");
        let _ = writeln!(md, "| {} |", TARGET_COLUMNS.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(TARGET_COLUMNS.len()));
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} |",
                target_cells(t)
                    .iter()
                    .map(|c| md_cell(c))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        if !self.not_followed.is_empty() {
            let _ = writeln!(md, "\n## Not part of the drill\n");
            for n in &self.not_followed {
                let _ = writeln!(
                    md,
                    "- {} ({}): {}; exposure at the end {}.",
                    n.target,
                    n.kind,
                    n.why,
                    seconds(n.exposure_seconds_at_end)
                );
            }
        }
        let _ = writeln!(md, "\n## Verdict timeline\n");
        let _ = writeln!(
            md,
            "| since start | time (UTC) | planned | unplanned | what |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for e in &self.timeline {
            let _ = writeln!(
                md,
                "| +{} | {} | {} | {} | {} |",
                human_duration(Duration::from_secs_f64(e.offset_seconds.max(0.0))),
                e.at,
                e.planned.as_deref().unwrap_or(""),
                e.unplanned.as_deref().unwrap_or(""),
                md_cell(&timeline_what(e))
            );
        }
        let _ = writeln!(md, "\n## How to read this report\n");
        for line in GLOSSARY {
            let _ = writeln!(md, "- {line}");
        }
        md
    }

    /// `drill-report.html`: self-contained (no external assets).
    pub fn to_html(&self) -> String {
        let mut html = String::with_capacity(8192);
        let verdict_class = if self.result == "pass" { "go" } else { "nogo" };
        let _ = write!(
            html,
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:70em;color:#222;padding:0 1em}}
h1{{font-size:1.35em}} h2{{font-size:1.1em;margin-top:1.6em}}
.go{{color:#fff;background:#1a7f37;padding:.1em .5em;border-radius:4px}}
.nogo{{color:#fff;background:#cf222e;padding:.1em .5em;border-radius:4px}}
table{{border-collapse:collapse;margin-top:.5em}} td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}} tr.fail td{{background:#fff0f0}} .num{{text-align:right;font-variant-numeric:tabular-nums}}
ul.summary li{{margin:.2em 0}} small{{color:#666}} svg text{{font:12px system-ui,sans-serif}}
</style></head><body>
<h1>{title_text} <span id="result" class="{verdict_class}">{result}</span></h1>
<ul class="summary">
"#,
            title = escape(&self.title()),
            title_text = escape(
                &self
                    .title()
                    .replace(&format!(": {}", self.result.to_uppercase()), "")
            ),
            result = self.result.to_uppercase(),
        );
        for line in &self.summary {
            let _ = writeln!(html, "<li>{}</li>", escape(line));
        }
        html.push_str("</ul>\n<table>\n");
        for (what, value) in self.facts() {
            let _ = writeln!(
                html,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(what),
                escape(&value)
            );
        }
        html.push_str("</table>\n<h2>Per target: predicted exposure and measured loss against the budget</h2>\n");
        html.push_str(&self.chart());
        html.push_str("<table id=\"targets\"><tr>");
        for c in TARGET_COLUMNS {
            let _ = write!(html, "<th>{}</th>", escape(c));
        }
        html.push_str("</tr>\n");
        for t in &self.targets {
            let _ = write!(
                html,
                r#"<tr class="{}" data-target="{}">"#,
                if t.passed { "pass" } else { "fail" },
                escape(&t.target)
            );
            for cell in target_cells(t) {
                let _ = write!(html, "<td>{}</td>", escape(&cell));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
        if !self.not_followed.is_empty() {
            html.push_str("<h2>Not part of the drill</h2>\n<ul>\n");
            for n in &self.not_followed {
                let _ = writeln!(
                    html,
                    "<li>{} ({}): {}; exposure at the end {}.</li>",
                    escape(&n.target),
                    escape(&n.kind),
                    escape(&n.why),
                    seconds(n.exposure_seconds_at_end)
                );
            }
            html.push_str("</ul>\n");
        }
        html.push_str("<h2>Verdict timeline</h2>\n<table id=\"timeline\"><tr><th>since start</th><th>time (UTC)</th><th>planned</th><th>unplanned</th><th>what</th></tr>\n");
        for e in &self.timeline {
            let cell = |v: &Option<String>| match v.as_deref() {
                Some("GO") => r#"<span class="go">GO</span>"#.to_string(),
                Some(other) => format!(r#"<span class="nogo">{}</span>"#, escape(other)),
                None => String::new(),
            };
            let _ = writeln!(
                html,
                r#"<tr data-event="{}"><td class="num">+{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                escape(&e.event),
                human_duration(Duration::from_secs_f64(e.offset_seconds.max(0.0))),
                escape(&e.at),
                cell(&e.planned),
                cell(&e.unplanned),
                e.lines
                    .iter()
                    .map(|l| escape(l))
                    .collect::<Vec<_>>()
                    .join("<br>")
            );
        }
        html.push_str("</table>\n<h2>How to read this report</h2>\n<ul>\n");
        for line in GLOSSARY {
            let _ = writeln!(html, "<li>{}</li>", escape(line));
        }
        html.push_str("</ul>\n</body></html>\n");
        html
    }

    /// One group of bars per target: predicted, measured, budget.
    fn chart(&self) -> String {
        let max = self
            .targets
            .iter()
            .flat_map(|t| {
                [
                    t.predicted_exposure_seconds,
                    t.measured_loss_seconds,
                    Some(t.budget_seconds),
                ]
            })
            .flatten()
            .fold(1.0_f64, f64::max);
        let row = 74.0;
        let (left, width) = (170.0, 480.0);
        let height = row * self.targets.len() as f64 + 10.0;
        let mut svg = format!(
            r#"<svg id="chart" width="{}" height="{height}" role="img" aria-label="predicted exposure and measured loss against budget per target">"#,
            left + width + 120.0
        );
        for (i, t) in self.targets.iter().enumerate() {
            let y = i as f64 * row + 5.0;
            let _ = write!(
                svg,
                r#"<text x="0" y="{}">{}</text>"#,
                y + 36.0,
                escape(&t.target)
            );
            let bars = [
                ("predicted", t.predicted_exposure_seconds, "#8c959f"),
                (
                    "measured",
                    t.measured_loss_seconds,
                    if t.within_budget == Some(true) {
                        "#1a7f37"
                    } else {
                        "#cf222e"
                    },
                ),
                ("budget", Some(t.budget_seconds), "#0969da"),
            ];
            for (j, (what, value, colour)) in bars.iter().enumerate() {
                let by = y + j as f64 * 22.0;
                let label = match value {
                    Some(v) => format!(
                        "{what} {}",
                        human_duration(Duration::from_secs_f64(v.max(0.0)))
                    ),
                    None => format!("{what}: unknown"),
                };
                let w = value.map(|v| (v / max * width).max(1.0)).unwrap_or(0.0);
                let _ = write!(
                    svg,
                    r#"<rect x="{left}" y="{by}" width="{w:.1}" height="16" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
                    left + w + 6.0,
                    by + 12.5,
                    escape(&label)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "Result",
                format!(
                    "{} (exit code {})",
                    self.result.to_uppercase(),
                    self.exit_code
                ),
            ),
            ("Started (UTC)", self.started_at.clone()),
            (
                "Finished (UTC)",
                format!(
                    "{} (took {}{})",
                    self.finished_at,
                    human_duration(Duration::from_secs_f64(self.duration_seconds)),
                    if self.timed_out { "; timed out" } else { "" }
                ),
            ),
            (
                "Group",
                self.group
                    .clone()
                    .unwrap_or_else(|| "every group".to_string()),
            ),
            ("Configuration", self.config_file.clone()),
            (
                "Exporter instance",
                format!(
                    "{} (its own heartbeat rows and keys)",
                    self.exporter_instance
                ),
            ),
        ]
    }
}

const TARGET_COLUMNS: [&str; 10] = [
    "target",
    "kind",
    "budget",
    "predicted exposure at promotion",
    "measured loss",
    "outcome",
    "promoted at (UTC)",
    "last recovery point before it",
    "replication stream lost",
    "first heartbeat on the promoted side (since the drill's start)",
];

fn target_cells(t: &DrillTarget) -> [String; 10] {
    [
        t.target.clone(),
        t.kind.clone(),
        seconds(Some(t.budget_seconds)),
        seconds(t.predicted_exposure_seconds),
        match (t.measured_loss_seconds, &t.loss_not_measured) {
            (Some(s), _) => format!(
                "{}{}",
                seconds(Some(s)),
                t.heartbeat_interval_seconds
                    .map(|i| format!(" (± {})", seconds(Some(i))))
                    .unwrap_or_default()
            ),
            (None, Some(why)) => format!("not measured: {why}"),
            (None, None) => "not promoted".to_string(),
        },
        t.outcome.clone(),
        match (&t.promoted_at, &t.promoted_not_before) {
            (Some(at), Some(after)) => format!("{at} (a replica at {after})"),
            (Some(at), None) => at.clone(),
            _ => "not seen".to_string(),
        },
        t.recovery_point_before_promotion
            .clone()
            .unwrap_or_else(|| "unknown".to_string()),
        t.measured_loss_bytes
            .map(|b| format!("at least {}", human_bytes(b as u64)))
            .unwrap_or_else(|| "unknown".to_string()),
        t.first_heartbeat_after_start_seconds
            .map(|s| seconds(Some(s)))
            .unwrap_or_else(|| "none".to_string()),
    ]
}

/// One sentence per target for the summary.
fn target_sentence(t: &DrillTarget) -> String {
    let mut s = format!("{} ({}): ", t.target, t.kind);
    match &t.promoted_at {
        None => s.push_str("not seen promoted."),
        Some(at) => {
            let _ = write!(s, "promoted at {at}; ");
            match t.measured_loss_seconds {
                Some(loss) => {
                    let _ = write!(
                        s,
                        "measured loss {} against a budget of {}",
                        seconds(Some(loss)),
                        seconds(Some(t.budget_seconds))
                    );
                }
                None => {
                    let _ = write!(
                        s,
                        "loss not measured ({})",
                        t.loss_not_measured.as_deref().unwrap_or("unknown")
                    );
                }
            }
            if let Some(p) = t.predicted_exposure_seconds {
                let _ = write!(s, " (predicted {})", seconds(Some(p)));
            }
            s.push('.');
            if let Some(first) = t.first_heartbeat_after_start_seconds {
                let _ = write!(
                    s,
                    " The promoted side accepted its first heartbeat {} after the drill started.",
                    seconds(Some(first))
                );
            }
            if t.split_brain_seen {
                s.push_str(" Split brain was seen: both sides accepted writes.");
            }
        }
    }
    s
}

fn timeline_what(e: &TimelineEntry) -> String {
    if e.lines.is_empty() && e.event == "verdict" {
        return "every target ready".to_string();
    }
    e.lines.join("; ")
}

fn seconds(s: Option<f64>) -> String {
    s.map(|v| human_duration(Duration::from_secs_f64(v.max(0.0))))
        .unwrap_or_else(|| "unknown".to_string())
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const GLOSSARY: [&str; 6] = [
    "Predicted exposure at promotion: what the exporter said, at its last poll before the promotion, would be lost if the source vanished (the known loss window when the source was already unreachable).",
    "Measured loss: the newest heartbeat the old primary acknowledged minus the newest heartbeat the promoted side held when it was first seen promoted; both are this exporter's own clock readings, so no clock skew enters. It is exact to within one heartbeat interval (shown as ±).",
    "Promoted at: the first poll that saw the replica accept writes; the promotion happened between the last poll that saw it a replica and this instant.",
    "Replication stream lost: the old primary's last position seen by a poll minus where the promoted side's replication ended (Postgres WAL bytes, Redis offset); a lower bound.",
    "First heartbeat on the promoted side: how long after the drill's start the promoted side accepted a write from this exporter, i.e. when writes were possible again.",
    "A target passes when its measured loss is within its budget and no split brain was seen; the drill passes when every followed target does.",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DrillReport {
        let target = DrillTarget {
            target: "erp-db".to_string(),
            kind: "postgres".to_string(),
            group: "erp".to_string(),
            budget_seconds: 5.0,
            promoted: true,
            promoted_at: Some("2026-03-01T14:02:11.250Z".to_string()),
            promoted_at_unix: Some(1.0),
            promoted_not_before: Some("2026-03-01T14:02:10.750Z".to_string()),
            predicted_exposure_seconds: Some(5.9),
            measured_loss_seconds: Some(6.1),
            loss_not_measured: None,
            measured_loss_bytes: Some(1_300_000.0),
            within_budget: Some(false),
            recovery_point_before_promotion: Some("2026-03-01T14:01:58.000Z".to_string()),
            first_heartbeat_accepted_at: None,
            first_heartbeat_after_start_seconds: Some(31.2),
            heartbeat_interval_seconds: Some(1.0),
            split_brain_seen: false,
            passed: false,
            outcome: "fail: measured loss 6.1s exceeds budget 5s".to_string(),
        };
        DrillReport {
            schema_version: REPORT_SCHEMA_VERSION,
            group: Some("erp".to_string()),
            config_file: "/etc/rpo-exporter.toml".to_string(),
            exporter_instance: "dr-drill".to_string(),
            started_at: "2026-03-01T14:01:40.000Z".to_string(),
            started_at_unix: 0.0,
            finished_at: "2026-03-01T14:02:20.000Z".to_string(),
            finished_at_unix: 40.0,
            duration_seconds: 40.0,
            timeout_seconds: 600.0,
            timed_out: false,
            result: "fail".to_string(),
            exit_code: EXIT_FAIL,
            summary: vec!["FAIL: <b>".to_string(), target_sentence(&target)],
            targets: vec![target],
            not_followed: vec![],
            timeline: vec![TimelineEntry {
                at: "2026-03-01T14:02:11.250Z".to_string(),
                at_unix: 31.25,
                offset_seconds: 31.25,
                event: "verdict".to_string(),
                planned: Some("NO-GO".to_string()),
                unplanned: Some("GO".to_string()),
                lines: vec!["erp-db: replica promoted at 14:02:11Z".to_string()],
            }],
        }
    }

    #[test]
    fn the_report_says_the_same_in_every_form() {
        let r = report();
        let md = r.to_markdown();
        assert!(
            md.starts_with("# Failover drill of group erp: FAIL\n"),
            "{md}"
        );
        assert!(md.contains("| erp-db | postgres | 5s | 5.9s | 6.1s (± 1s) | fail: measured loss 6.1s exceeds budget 5s |"), "{md}");
        assert!(md.contains("| +31s | 2026-03-01T14:02:11.250Z | NO-GO | GO | erp-db: replica promoted at 14:02:11Z |"), "{md}");
        assert!(md.contains("erp-db (postgres): promoted at 2026-03-01T14:02:11.250Z; measured loss 6.1s against a budget of 5s (predicted 5.9s). The promoted side accepted its first heartbeat 31s after the drill started."), "{md}");
        let html = r.to_html();
        assert!(
            html.contains(r#"<span id="result" class="nogo">FAIL</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<tr class="fail" data-target="erp-db">"#),
            "{html}"
        );
        assert!(html.contains("FAIL: &lt;b&gt;"), "escaped: {html}");
        assert!(!html.contains("http"), "self-contained: {html}");
        let json = serde_json::to_value(&r).unwrap();
        let t = &json["targets"][0];
        for field in [
            "target",
            "kind",
            "predicted_exposure_seconds",
            "measured_loss_seconds",
            "budget_seconds",
            "promoted_at",
        ] {
            assert!(!t[field].is_null(), "{field}");
        }
        assert_eq!(t["measured_loss_seconds"], 6.1);
    }

    #[test]
    fn an_unwritable_report_dir_is_a_usage_error() {
        let file = std::env::temp_dir().join(format!("rpo-drill-not-a-dir-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = check_report_dir(&file.join("sub")).unwrap_err();
        assert!(
            err.to_string().contains("cannot write the report into"),
            "{err}"
        );
        let _ = std::fs::remove_file(file);
    }
}
