//! The failover verdict: one pure function, [`evaluate`], of the snapshot,
//! the configuration and the clock. The metrics, the HTTP endpoint, the HTML
//! board and the CLI all show what it returns.
//!
//! Unknown is never GO: a target with no evidence, stale evidence, a failed
//! last poll, an unknown recovery point or an unknown link is not ready.
//!
//! Every NO-GO reason is a [`Reason`]: a stable [`ReasonCode`] that programs
//! branch on, and the words a person reads. Both travel to every output.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Target};
use crate::evidence::promotion::{ConfiguredSide, Promotion, PromotionWatch, SplitBrain};
pub use crate::human::{human_bytes, human_duration};
use crate::kinds::Kind;
use crate::probe::{unix_seconds, LinkState};
use crate::store::{Snapshot, TargetId, TargetReport};

/// The version of the verdict's JSON form. Bumped only when a field changes
/// meaning or goes away; new fields are added without a bump.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a target, a group or a `check` run is NO-GO, as a stable machine
/// code. Serialised in snake_case (the same text as [`ReasonCode::as_str`]);
/// the README's "NO-GO reason codes" table documents each one. A code is
/// never renamed or reused for another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The target has not been polled yet.
    FirstPollPending,
    /// Polled, but no poll has produced evidence about the replica yet.
    NoEvidenceYet,
    /// The newest evidence is older than the target's `stale_after`.
    EvidenceStale,
    /// The latest poll failed entirely.
    LastPollFailed,
    /// The replica side did not answer the latest poll.
    ReplicaUnreachable,
    /// The source side did not answer the latest poll (planned mode only).
    SourceUnreachable,
    /// The replication link or status is known to be broken (planned mode).
    LinkUnhealthy,
    /// The replication link or status could not be determined (planned mode).
    LinkUnknown,
    /// No recovery point has been proven since the exporter started.
    RecoveryPointUnknown,
    /// Exposure (now minus the recovery point) exceeds the budget.
    ExposureOverBudget,
    /// Unplanned mode: the known loss window exceeds the budget.
    LossWindowOverBudget,
    /// The group has no targets: nothing is measured, so nothing is proven.
    GroupHasNoTargets,
    /// `check --from`: the exporter could not be reached or gave no verdict.
    ExporterUnavailable,
    /// `check --prometheus`: Prometheus could not be reached or answered an error.
    PrometheusUnavailable,
    /// `check --prometheus`: no exporter publishes `rpo_failover_ready` for the group.
    VerdictSeriesMissing,
    /// `check --prometheus`: a `failover_gate="block"` alert is firing.
    GateAlertFiring,
    /// Both sides of a pair accept writes (every mode).
    SplitBrain,
    /// The replica was promoted and nothing replicates from it yet
    /// (planned mode: the pair has no standby).
    ReplicaPromoted,
    /// `check --prometheus`: a `failover_gate="block"` alert is pending (inside its `for:`).
    GateAlertPending,
    /// `check --prometheus`: Prometheus' last scrape of an exporter failed (`up` is 0).
    ExporterDown,
    /// `check --prometheus`: an exporter's newest verdict sample is older than the bound.
    VerdictStale,
    /// `check --prometheus`: an exporter's own verdict for the group is NO-GO.
    ExporterNoGo,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 22] = [
        ReasonCode::FirstPollPending,
        ReasonCode::NoEvidenceYet,
        ReasonCode::EvidenceStale,
        ReasonCode::LastPollFailed,
        ReasonCode::ReplicaUnreachable,
        ReasonCode::SourceUnreachable,
        ReasonCode::LinkUnhealthy,
        ReasonCode::LinkUnknown,
        ReasonCode::RecoveryPointUnknown,
        ReasonCode::ExposureOverBudget,
        ReasonCode::LossWindowOverBudget,
        ReasonCode::GroupHasNoTargets,
        ReasonCode::ExporterUnavailable,
        ReasonCode::PrometheusUnavailable,
        ReasonCode::VerdictSeriesMissing,
        ReasonCode::GateAlertFiring,
        ReasonCode::SplitBrain,
        ReasonCode::ReplicaPromoted,
        ReasonCode::GateAlertPending,
        ReasonCode::ExporterDown,
        ReasonCode::VerdictStale,
        ReasonCode::ExporterNoGo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::FirstPollPending => "first_poll_pending",
            ReasonCode::NoEvidenceYet => "no_evidence_yet",
            ReasonCode::EvidenceStale => "evidence_stale",
            ReasonCode::LastPollFailed => "last_poll_failed",
            ReasonCode::ReplicaUnreachable => "replica_unreachable",
            ReasonCode::SourceUnreachable => "source_unreachable",
            ReasonCode::LinkUnhealthy => "link_unhealthy",
            ReasonCode::LinkUnknown => "link_unknown",
            ReasonCode::RecoveryPointUnknown => "recovery_point_unknown",
            ReasonCode::ExposureOverBudget => "exposure_over_budget",
            ReasonCode::LossWindowOverBudget => "loss_window_over_budget",
            ReasonCode::GroupHasNoTargets => "group_has_no_targets",
            ReasonCode::ExporterUnavailable => "exporter_unavailable",
            ReasonCode::PrometheusUnavailable => "prometheus_unavailable",
            ReasonCode::VerdictSeriesMissing => "verdict_series_missing",
            ReasonCode::GateAlertFiring => "gate_alert_firing",
            ReasonCode::SplitBrain => "split_brain",
            ReasonCode::ReplicaPromoted => "replica_promoted",
            ReasonCode::GateAlertPending => "gate_alert_pending",
            ReasonCode::ExporterDown => "exporter_down",
            ReasonCode::VerdictStale => "verdict_stale",
            ReasonCode::ExporterNoGo => "exporter_no_go",
        }
    }
}

impl ReasonCode {
    /// Where a target's reason stands among its others (lower first): the
    /// cause before what follows from it. A side that does not answer (or
    /// both taking writes) is why nothing is proven, so it comes before
    /// "no evidence"/"stale" (which carry the last failure's words), and
    /// those before a bare "last poll failed"; lag over budget is last: it
    /// is the figure, not why the figure is unknown. `check`'s table shows
    /// a target's first reason, and a group lists each failing target's.
    pub fn precedence(self) -> u8 {
        match self {
            ReasonCode::SplitBrain => 0,
            ReasonCode::FirstPollPending => 1,
            ReasonCode::ReplicaUnreachable => 2,
            ReasonCode::SourceUnreachable => 3,
            ReasonCode::ReplicaPromoted => 4,
            ReasonCode::LinkUnhealthy => 5,
            ReasonCode::NoEvidenceYet => 6,
            ReasonCode::EvidenceStale => 7,
            ReasonCode::LastPollFailed => 8,
            ReasonCode::LinkUnknown => 9,
            ReasonCode::RecoveryPointUnknown => 10,
            ReasonCode::LossWindowOverBudget | ReasonCode::ExposureOverBudget => 11,
            // Not a target's: `check`'s own and the group's.
            ReasonCode::GroupHasNoTargets
            | ReasonCode::ExporterUnavailable
            | ReasonCode::PrometheusUnavailable
            | ReasonCode::VerdictSeriesMissing
            | ReasonCode::GateAlertFiring
            | ReasonCode::GateAlertPending
            | ReasonCode::ExporterDown
            | ReasonCode::VerdictStale
            | ReasonCode::ExporterNoGo => 12,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a target is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    /// The words a person reads, e.g. "exposure 42s exceeds budget 5s".
    pub message: String,
}

impl Reason {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Reason {
        Reason {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One reason a group is not ready: a failing target's first reason, or
/// why the group itself fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReason {
    pub code: ReasonCode,
    /// The failing target, when the reason is about one.
    pub target: Option<TargetId>,
    /// The line a person reads: "erp-db: exposure 42s exceeds budget 5s".
    pub message: String,
}

impl fmt::Display for GroupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Planned: a switchover or a drill, both regions up. Unplanned: the source
/// region is gone; source-side failures do not block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Planned,
    Unplanned,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Planned => "planned",
            Mode::Unplanned => "unplanned",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "planned" => Ok(Mode::Planned),
            "unplanned" => Ok(Mode::Unplanned),
            other => Err(format!(
                "unknown mode `{other}`: use `planned` or `unplanned`"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which exporter computed a verdict: `[exporter] instance` and `region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterIdentity {
    pub instance: String,
    pub region: Option<String>,
}

impl ExporterIdentity {
    pub fn of(config: &Config) -> ExporterIdentity {
        ExporterIdentity {
            instance: config.instance.clone(),
            region: config.region.clone(),
        }
    }
}

impl fmt::Display for ExporterIdentity {
    /// "dr-1 in eu-central-1", or "dr-1 (no region)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.region {
            Some(region) => write!(f, "{} in {region}", self.instance),
            None => write!(f, "{} (no region)", self.instance),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Verdict {
    /// The exporter (or `check` run) that computed it.
    pub exporter: ExporterIdentity,
    pub mode: Mode,
    pub evaluated_at: SystemTime,
    pub ready: bool,
    pub groups: Vec<GroupVerdict>,
    /// Where each evaluated target's verdict is in `groups`: (group, target).
    by_target: HashMap<TargetId, (usize, usize)>,
}

impl Verdict {
    /// The verdict of the target with this id (a `&TargetId` or the
    /// [`TargetId::key`] of a configured target); `None` for a target this
    /// verdict did not evaluate (another group was asked for).
    pub fn target<Q>(&self, id: &Q) -> Option<&TargetVerdict>
    where
        TargetId: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let &(g, t) = self.by_target.get(id)?;
        Some(&self.groups[g].targets[t])
    }

    /// Every evaluated target's verdict, group by group.
    pub fn targets(&self) -> impl Iterator<Item = &TargetVerdict> {
        self.groups.iter().flat_map(|g| g.targets.iter())
    }
}

#[derive(Debug, Clone)]
pub struct GroupVerdict {
    pub group: String,
    pub ready: bool,
    pub rpo_budget: Duration,
    /// The largest exposure among members whose exposure is known.
    pub exposure: Option<Duration>,
    /// Newest minus oldest recovery point among members that have one.
    pub recovery_point_skew: Option<Duration>,
    /// One per failing target (its first reason), or why the group fails.
    pub reasons: Vec<GroupReason>,
    pub targets: Vec<TargetVerdict>,
}

#[derive(Debug, Clone)]
pub struct TargetVerdict {
    pub target: TargetId,
    pub kind: Kind,
    pub ready: bool,
    pub recovery_point: Option<SystemTime>,
    pub exposure: Option<Duration>,
    pub budget: Duration,
    pub evidence_age: Option<Duration>,
    pub replication_healthy: bool,
    /// Unplanned mode: last contact with the source minus the recovery point.
    pub loss_window: Option<Duration>,
    /// Every reason this target is not ready, most fundamental first.
    pub reasons: Vec<Reason>,
    /// A pair's roles as followed across promotions (`None` for kinds that
    /// report no roles): whether the configured replica accepts writes,
    /// split brain, the latest promotion and the loss it took.
    pub roles: Option<RolesView>,
    /// What a person should know besides the reasons ("replica promoted at
    /// 14:02:11Z: measured loss 6.1s ..."), in words.
    pub notes: Vec<String>,
}

/// A pair's roles in a verdict: a copy of what the store followed.
#[derive(Debug, Clone)]
pub struct RolesView {
    /// The configured replica accepts writes (`rpo_promoted`).
    pub promoted: Option<bool>,
    pub split_brain: Option<SplitBrain>,
    /// The latest promotion seen.
    pub promotion: Option<Promotion>,
    /// Replication is measured from `replica_url` to `primary_url`.
    pub reversed: bool,
    /// A promotion was seen and nothing replicates from the promoted side.
    pub without_standby: bool,
}

/// Evaluates the gate for one group, or for all groups when `group` is None.
/// The caller checks that a named group exists.
pub fn evaluate(
    config: &Config,
    snapshot: &Snapshot,
    mode: Mode,
    now: SystemTime,
    group: Option<&str>,
) -> Verdict {
    // A target the store does not track yet (one a reload just added) has
    // never been polled.
    let never_polled = TargetReport::default();
    // Each group's members' verdicts in configuration order, found in one
    // pass (not one pass per group: with 100 groups of 10 that was 100,000
    // string comparisons per verdict). Reports are found by id.
    let mut members: HashMap<&str, Vec<TargetVerdict>> = HashMap::new();
    for t in &config.targets {
        if group.is_some_and(|name| t.group != name) {
            continue;
        }
        let (id, report) = match snapshot.entry(TargetId::key(t)) {
            Some((id, report)) => (id.clone(), report.as_ref()),
            None => (TargetId::of(t), &never_polled),
        };
        members
            .entry(t.group.as_str())
            .or_default()
            .push(evaluate_target(id, t, report, mode, now));
    }
    let mut by_target = HashMap::with_capacity(members.values().map(Vec::len).sum());
    let groups: Vec<GroupVerdict> = config
        .groups
        .iter()
        .filter(|g| group.is_none_or(|name| g.name == name))
        .enumerate()
        .map(|(g_index, g)| {
            let targets = members.remove(g.name.as_str()).unwrap_or_default();
            for (t_index, t) in targets.iter().enumerate() {
                by_target.insert(t.target.clone(), (g_index, t_index));
            }
            let mut reasons: Vec<GroupReason> = targets
                .iter()
                .filter_map(|t| {
                    // A target that is not ready has at least one reason
                    // (and the group's readiness checks the targets too).
                    let first = t.reasons.first()?;
                    Some(GroupReason {
                        code: first.code,
                        target: Some(t.target.clone()),
                        message: format!("{}: {}", t.target, first.message),
                    })
                })
                .collect();
            if targets.is_empty() {
                reasons.push(GroupReason {
                    code: ReasonCode::GroupHasNoTargets,
                    target: None,
                    message: format!("{}: the group has no targets", g.name),
                });
            }
            let exposure = targets.iter().filter_map(|t| t.exposure).max();
            let points: Vec<SystemTime> = targets.iter().filter_map(|t| t.recovery_point).collect();
            let recovery_point_skew = match (points.iter().max(), points.iter().min()) {
                (Some(newest), Some(oldest)) => {
                    Some(newest.duration_since(*oldest).unwrap_or_default())
                }
                _ => None,
            };
            GroupVerdict {
                group: g.name.clone(),
                ready: reasons.is_empty() && targets.iter().all(|t| t.ready),
                rpo_budget: g.rpo_budget,
                exposure,
                recovery_point_skew,
                reasons,
                targets,
            }
        })
        .collect();
    Verdict {
        exporter: ExporterIdentity::of(config),
        mode,
        evaluated_at: now,
        ready: !groups.is_empty() && groups.iter().all(|g| g.ready),
        groups,
        by_target,
    }
}

/// The gate for one target, whose id is `id`.
pub fn evaluate_target(
    id: TargetId,
    target: &Target,
    report: &TargetReport,
    mode: Mode,
    now: SystemTime,
) -> TargetVerdict {
    let mut reasons = Vec::new();
    let evidence_age = report
        .evidence_time
        .map(|t| now.duration_since(t).unwrap_or_default());
    let measurement = report.measurement.as_ref();
    let watch = &report.promotion;
    let without_standby = watch.promoted_without_standby();

    // Both sides taking writes: whatever else is true, failing over (or
    // back) now loses one side's writes. Every mode.
    if let Some(split) = &watch.split_brain {
        reasons.push(Reason::new(
            ReasonCode::SplitBrain,
            split_brain_words(split),
        ));
    }

    if report.runs_total == 0 {
        reasons.push(Reason::new(
            ReasonCode::FirstPollPending,
            "no measurement yet (first poll pending)",
        ));
    } else {
        match evidence_age {
            None => reasons.push(Reason::new(
                ReasonCode::NoEvidenceYet,
                match &report.last_error {
                    Some(err) => format!("no evidence yet ({err})"),
                    None => "no evidence yet".to_string(),
                },
            )),
            Some(age) if age > target.stale_after => {
                let since = report
                    .last_success
                    .map(|t| {
                        format!(
                            "last success {} ago",
                            human_duration(now.duration_since(t).unwrap_or_default())
                        )
                    })
                    .unwrap_or_else(|| "no successful poll since start".to_string());
                let why = report
                    .last_error
                    .as_ref()
                    .map(|e| format!(": {}", e.reason))
                    .unwrap_or_default();
                reasons.push(Reason::new(
                    ReasonCode::EvidenceStale,
                    format!("evidence stale ({since}{why})"),
                ));
            }
            Some(_) => {}
        }
        if let Some(err) = &report.last_poll_error {
            reasons.push(Reason::new(
                ReasonCode::LastPollFailed,
                format!("last poll failed ({err})"),
            ));
        }
    }

    let mut replication_healthy = false;
    if let Some(m) = measurement {
        if m.replica_reachable == Some(false) {
            let why = m
                .failures
                .iter()
                .find(|f| f.side == Some(crate::probe::Side::Replica))
                .map(|f| format!(" ({}: {})", f.reason, f.message))
                .unwrap_or_default();
            reasons.push(Reason::new(
                ReasonCode::ReplicaUnreachable,
                format!("replica unreachable{why}"),
            ));
        }
        if mode == Mode::Planned {
            if m.source_reachable == Some(false) {
                let why = m
                    .failures
                    .iter()
                    .find(|f| f.side == Some(crate::probe::Side::Source))
                    .map(|f| format!(" ({}: {})", f.reason, f.message))
                    .unwrap_or_default();
                reasons.push(Reason::new(
                    ReasonCode::SourceUnreachable,
                    format!("source unreachable{why}"),
                ));
            }
            match &m.link {
                // The promotion says why nothing replicates, better than
                // the link does ("the replica is not in recovery").
                _ if without_standby => reasons.push(Reason::new(
                    ReasonCode::ReplicaPromoted,
                    format!(
                        "{}: {}; nothing replicates from it yet",
                        watch
                            .latest
                            .as_ref()
                            .map(promotion_headline)
                            .unwrap_or_default(),
                        watch
                            .latest
                            .as_ref()
                            .map(promotion_loss_words)
                            .unwrap_or_default()
                    ),
                )),
                LinkState::Healthy => replication_healthy = true,
                LinkState::Unhealthy(why) => reasons.push(Reason::new(
                    ReasonCode::LinkUnhealthy,
                    format!("replication unhealthy: {why}"),
                )),
                // An unreachable replica already says why the link is unknown.
                LinkState::Unknown(_) if m.replica_reachable == Some(false) => {}
                LinkState::Unknown(why) => reasons.push(Reason::new(
                    ReasonCode::LinkUnknown,
                    format!("replication status unknown: {why}"),
                )),
            }
        } else {
            replication_healthy = m.link.is_healthy();
        }
    }

    let loss_window = match (mode, report.recovery_point) {
        (Mode::Unplanned, Some(rp)) => Some(match report.last_source_contact {
            Some(contact) => contact.duration_since(rp).unwrap_or_default(),
            // Never heard from the source: all we know is the exposure.
            None => report.exposure.unwrap_or_default(),
        }),
        _ => None,
    };

    if report.runs_total > 0 {
        match (report.recovery_point, report.exposure) {
            (None, _) | (_, None) => reasons.push(Reason::new(
                ReasonCode::RecoveryPointUnknown,
                "recovery point unknown (nothing proven since the exporter started)",
            )),
            (Some(_), Some(exposure)) => {
                // Promoted with nothing replicating from it: the loss the
                // promotion took is known, not just the window.
                let measured = without_standby
                    .then(|| watch.latest.as_ref().and_then(Promotion::measured_loss))
                    .flatten();
                let (figure, what, code) = match (mode, loss_window, measured) {
                    (Mode::Unplanned, _, Some(loss)) => {
                        (loss, "measured loss", ReasonCode::LossWindowOverBudget)
                    }
                    (Mode::Unplanned, Some(window), None) => (
                        window,
                        "known loss window",
                        ReasonCode::LossWindowOverBudget,
                    ),
                    _ => (exposure, "exposure", ReasonCode::ExposureOverBudget),
                };
                if figure > target.rpo_budget {
                    reasons.push(Reason::new(
                        code,
                        format!(
                            "{what} {} exceeds budget {}",
                            human_duration(figure),
                            human_duration(target.rpo_budget)
                        ),
                    ));
                }
            }
        }
    }

    // Most fundamental first, whatever order they were found in.
    reasons.sort_by_key(|r| r.code.precedence());
    let (roles, notes) = roles_view(watch);
    TargetVerdict {
        target: id,
        kind: target.kind(),
        ready: reasons.is_empty(),
        recovery_point: report.recovery_point,
        exposure: report.exposure,
        budget: target.rpo_budget,
        evidence_age,
        replication_healthy,
        loss_window,
        reasons,
        roles,
        notes,
    }
}

/// The verdict's copy of a pair's followed roles, and the notes a person
/// reads about them.
fn roles_view(watch: &PromotionWatch) -> (Option<RolesView>, Vec<String>) {
    if !watch.followed {
        return (None, Vec::new());
    }
    let mut notes = Vec::new();
    if let Some(p) = &watch.latest {
        let mut note = format!("{}: {}", promotion_headline(p), promotion_loss_words(p));
        if let Some(rp) = p.recovery_point_before {
            note.push_str(&format!(
                "; last recovery point proven before it {}",
                clock(rp)
            ));
        }
        if let Some(first) = p.first_heartbeat_accepted {
            note.push_str(&format!(
                "; the promoted side accepted its first heartbeat at {}",
                clock(first)
            ));
        }
        notes.push(note);
    }
    if watch.reversed() {
        notes.push(
            "replication is measured from replica_url to primary_url (the other way round: roles are detected on every poll)"
                .to_string(),
        );
    }
    let view = RolesView {
        promoted: watch.replica_writable,
        split_brain: watch.split_brain.clone(),
        promotion: watch.latest.clone(),
        reversed: watch.reversed(),
        without_standby: watch.promoted_without_standby(),
    };
    (Some(view), notes)
}

/// "14:02:11Z": a time of day as said on a call (UTC).
pub fn clock(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.split_once('T')
        .map(|(_, time)| time.to_string())
        .unwrap_or(text)
}

/// "replica promoted at 14:02:11Z".
pub fn promotion_headline(p: &Promotion) -> String {
    match p.side {
        ConfiguredSide::Replica => format!("replica promoted at {}", clock(p.seen_at)),
        ConfiguredSide::Primary => format!(
            "primary_url promoted again (a switch back) at {}",
            clock(p.seen_at)
        ),
    }
}

/// "measured loss 6.1s (predicted 5.9s; 1.2 MiB of the replication stream
/// never reached it)", or why the loss is not measured.
pub fn promotion_loss_words(p: &Promotion) -> String {
    let mut extra = Vec::new();
    if let Some(predicted) = p.predicted {
        extra.push(format!("predicted {}", human_duration(predicted)));
    }
    if let Some(bytes) = p.lost_bytes.filter(|b| *b > 0) {
        extra.push(format!(
            "at least {} of the replication stream never reached it",
            human_bytes(bytes)
        ));
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join("; "))
    };
    match &p.loss {
        Ok(loss) => format!("measured loss {}{extra}", human_duration(*loss)),
        Err(why) => format!("loss not measured: {}{extra}", why.describe()),
    }
}

fn split_brain_words(split: &SplitBrain) -> String {
    format!(
        "split brain: primary_url and replica_url both accept writes (since {}, last seen {}); writes to either may be lost: fence the old primary",
        clock(split.since),
        clock(split.last_seen)
    )
}

// ---------------------------------------------------------------------------
// The JSON form, shared by /failover-readiness and `check --output json`.
//
// Every level (the verdict, each group, each target) has `reasons`, the
// lines a person reads, and `reason_details`, the same reasons in the same
// order with their codes: `reason_details[i].message == reasons[i]`. A
// group lists one reason per failing target (its first); the verdict lists
// every reason of every failing target (and each group's own), so nothing a
// target says is lost at the top.

#[derive(Debug, Serialize, Deserialize)]
pub struct VerdictJson {
    /// [`SCHEMA_VERSION`]; 0 when read from an exporter older than it.
    #[serde(default)]
    pub schema_version: u32,
    pub verdict: String,
    pub ready: bool,
    pub mode: String,
    pub evaluated_at: String,
    pub evaluated_at_unix: f64,
    /// The exporter (or `check --config` run) that computed this verdict;
    /// absent from `check --prometheus`, which reads several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterJson>,
    /// `check --prometheus`: every exporter Prometheus knows for the
    /// group(s), with what Prometheus has of its verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exporters: Vec<ExporterJson>,
    pub reasons: Vec<String>,
    #[serde(default)]
    pub reason_details: Vec<ReasonJson>,
    pub groups: Vec<GroupJson>,
}

/// One exporter, as `/failover-readiness` names itself or as
/// `check --prometheus` found it in Prometheus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExporterJson {
    /// `[exporter] instance`; `None` only from `check --prometheus`, for an
    /// exporter whose `rpo_exporter_info` Prometheus has never scraped.
    pub instance: Option<String>,
    /// `[exporter] region`; `None` when not set (or, from `check
    /// --prometheus`, not known for sure: it changed within the last day).
    pub region: Option<String>,
    /// `check --prometheus`: the scrape target, Prometheus' `instance` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_instance: Option<String>,
    /// `check --prometheus`: `GO`, `NO-GO` or `unknown` (down, stale or
    /// missing), as far as Prometheus shows this exporter's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

impl ExporterJson {
    pub fn new(identity: &ExporterIdentity) -> ExporterJson {
        ExporterJson {
            instance: Some(identity.instance.clone()),
            region: identity.region.clone(),
            scrape_instance: None,
            verdict: None,
        }
    }
}

impl fmt::Display for ExporterJson {
    /// "exporter dr-1 in eu-central-1 at 10.0.3.4:9798": what a person
    /// needs to find it, whatever is known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.instance, &self.region) {
            (Some(instance), Some(region)) => write!(f, "exporter {instance} in {region}")?,
            // Not set, or (from Prometheus) not known for sure.
            (Some(instance), None) => write!(f, "exporter {instance} (no region)")?,
            (None, _) => f.write_str("exporter (unidentified)")?,
        }
        if let Some(scraped) = &self.scrape_instance {
            write!(f, " at {scraped}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupJson {
    pub group: String,
    pub verdict: String,
    pub ready: bool,
    pub rpo_budget_seconds: f64,
    pub exposure_seconds: Option<f64>,
    pub recovery_point_skew_seconds: Option<f64>,
    pub reasons: Vec<String>,
    #[serde(default)]
    pub reason_details: Vec<ReasonJson>,
    pub targets: Vec<TargetJson>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetJson {
    pub target: String,
    pub kind: String,
    pub ready: bool,
    pub recovery_point: Option<String>,
    pub recovery_point_unix: Option<f64>,
    pub exposure_seconds: Option<f64>,
    pub budget_seconds: f64,
    pub evidence_age_seconds: Option<f64>,
    pub replication_healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_window_seconds: Option<f64>,
    pub reasons: Vec<String>,
    #[serde(default)]
    pub reason_details: Vec<ReasonJson>,
    /// Pair kinds: the configured replica accepts writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<bool>,
    /// Pair kinds: both sides accept writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_brain: Option<bool>,
    /// Pair kinds: `primary_url -> replica_url`, or the other way round
    /// after a failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The latest promotion seen, with the loss it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionJson>,
    /// What a person should know besides the reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A promotion in the verdict's JSON form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromotionJson {
    /// The configured side promoted: `replica_url` (or `primary_url` for a
    /// switch back).
    pub side: String,
    /// The first poll that saw it accepting writes (it happened at or before).
    pub promoted_at: String,
    pub promoted_at_unix: f64,
    /// The last poll that saw it a replica (it happened after).
    pub promoted_not_before: Option<String>,
    pub measured_loss_seconds: Option<f64>,
    /// Why the loss is not measured, when it is not.
    pub loss_not_measured: Option<String>,
    /// The exposure predicted just before the promotion.
    pub predicted_exposure_seconds: Option<f64>,
    /// Replication-stream bytes the promoted side never got (a lower bound).
    pub measured_loss_bytes: Option<f64>,
    /// The last recovery point proven before the promotion.
    pub recovery_point_before: Option<String>,
    /// When the promoted side first accepted a heartbeat write.
    pub first_heartbeat_accepted_at: Option<String>,
}

impl PromotionJson {
    pub fn new(p: &Promotion) -> PromotionJson {
        let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        PromotionJson {
            side: p.side.url_key().to_string(),
            promoted_at: time(p.seen_at),
            promoted_at_unix: unix_seconds(p.seen_at),
            promoted_not_before: p.replica_until.map(time),
            measured_loss_seconds: p.measured_loss().map(|d| d.as_secs_f64()),
            loss_not_measured: p.loss.err().map(|why| why.describe().to_string()),
            predicted_exposure_seconds: p.predicted.map(|d| d.as_secs_f64()),
            measured_loss_bytes: p.lost_bytes.map(|b| b as f64),
            recovery_point_before: p.recovery_point_before.map(time),
            first_heartbeat_accepted_at: p.first_heartbeat_accepted.map(time),
        }
    }
}

/// One reason with its code. `group` and `target` name what the reason is
/// about where the enclosing object does not (group and verdict level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonJson {
    /// A [`ReasonCode`] in snake_case. A string, not the enum, so that
    /// `check --from` passes on a code from a newer exporter unchanged.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `check --prometheus`: the exporter the reason is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterJson>,
    pub message: String,
}

impl ReasonJson {
    /// A reason about neither one group nor one target (`check`'s own).
    pub fn new(reason: &Reason) -> ReasonJson {
        ReasonJson {
            code: reason.code.as_str().to_string(),
            group: None,
            target: None,
            exporter: None,
            message: reason.message.clone(),
        }
    }
}

fn verdict_word(ready: bool) -> &'static str {
    if ready {
        "GO"
    } else {
        "NO-GO"
    }
}

impl Verdict {
    pub fn to_json(&self) -> VerdictJson {
        let groups: Vec<GroupJson> = self.groups.iter().map(GroupVerdict::to_json).collect();
        // Every reason, group by group: the group's own (no target), then
        // each failing target's, all of them, prefixed with its name.
        let all_reasons: Vec<ReasonJson> = self
            .groups
            .iter()
            .flat_map(|g| {
                let own = g
                    .reasons
                    .iter()
                    .filter(|r| r.target.is_none())
                    .map(|r| ReasonJson {
                        code: r.code.as_str().to_string(),
                        group: Some(g.group.clone()),
                        target: None,
                        exporter: None,
                        message: r.message.clone(),
                    });
                let targets = g.targets.iter().flat_map(move |t| {
                    t.reasons.iter().map(move |r| ReasonJson {
                        code: r.code.as_str().to_string(),
                        group: Some(g.group.clone()),
                        target: Some(t.target.to_string()),
                        exporter: None,
                        message: format!("{}: {}", t.target, r.message),
                    })
                });
                own.chain(targets)
            })
            .collect();
        VerdictJson {
            schema_version: SCHEMA_VERSION,
            verdict: verdict_word(self.ready).to_string(),
            ready: self.ready,
            mode: self.mode.to_string(),
            evaluated_at: humantime::format_rfc3339_millis(self.evaluated_at).to_string(),
            evaluated_at_unix: unix_seconds(self.evaluated_at),
            exporter: Some(ExporterJson::new(&self.exporter)),
            exporters: Vec::new(),
            reasons: all_reasons.iter().map(|r| r.message.clone()).collect(),
            reason_details: all_reasons,
            groups,
        }
    }
}

impl GroupVerdict {
    fn to_json(&self) -> GroupJson {
        GroupJson {
            group: self.group.clone(),
            verdict: verdict_word(self.ready).to_string(),
            ready: self.ready,
            rpo_budget_seconds: self.rpo_budget.as_secs_f64(),
            exposure_seconds: self.exposure.map(|d| d.as_secs_f64()),
            recovery_point_skew_seconds: self.recovery_point_skew.map(|d| d.as_secs_f64()),
            reasons: self.reasons.iter().map(|r| r.message.clone()).collect(),
            reason_details: self
                .reasons
                .iter()
                .map(|r| ReasonJson {
                    code: r.code.as_str().to_string(),
                    group: Some(self.group.clone()),
                    target: r.target.as_ref().map(TargetId::to_string),
                    exporter: None,
                    message: r.message.clone(),
                })
                .collect(),
            targets: self.targets.iter().map(TargetVerdict::to_json).collect(),
        }
    }
}

impl TargetVerdict {
    fn to_json(&self) -> TargetJson {
        TargetJson {
            target: self.target.to_string(),
            kind: self.kind.to_string(),
            ready: self.ready,
            recovery_point: self
                .recovery_point
                .map(|rp| humantime::format_rfc3339_millis(rp).to_string()),
            recovery_point_unix: self.recovery_point.map(unix_seconds),
            exposure_seconds: self.exposure.map(|d| d.as_secs_f64()),
            budget_seconds: self.budget.as_secs_f64(),
            evidence_age_seconds: self.evidence_age.map(|d| d.as_secs_f64()),
            replication_healthy: self.replication_healthy,
            loss_window_seconds: self.loss_window.map(|d| d.as_secs_f64()),
            reasons: self.reasons.iter().map(|r| r.message.clone()).collect(),
            reason_details: self.reasons.iter().map(ReasonJson::new).collect(),
            promoted: self.roles.as_ref().and_then(|r| r.promoted),
            split_brain: self.roles.as_ref().map(|r| r.split_brain.is_some()),
            direction: self.roles.as_ref().map(|r| {
                if r.reversed {
                    "replica_url -> primary_url".to_string()
                } else {
                    "primary_url -> replica_url".to_string()
                }
            }),
            promotion: self
                .roles
                .as_ref()
                .and_then(|r| r.promotion.as_ref())
                .map(PromotionJson::new),
            notes: self.notes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{FailureReason, Measurement, ProbeError, Side};
    use std::path::Path;

    const CONFIG: &str = r#"
[[group]]
name = "erp"
rpo_budget = "60s"

[[postgres]]
name = "erp-db"
group = "erp"
rpo_budget = "5s"
primary_url = "postgres://a@127.0.0.1:1/x"
replica_url = "postgres://a@127.0.0.1:2/x"

[[postgres]]
name = "erp-files"
group = "erp"
primary_url = "postgres://a@127.0.0.1:1/x"
replica_url = "postgres://a@127.0.0.1:2/x"
"#;

    fn config() -> Config {
        Config::from_toml(CONFIG, Path::new("t.toml")).unwrap()
    }

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs_f64(secs)
    }

    fn healthy(now: f64, rp: f64) -> Measurement {
        let mut m = Measurement::new(at(now));
        m.recovery_point = Some(at(rp));
        m.link = LinkState::Healthy;
        m.source_reachable = Some(true);
        m.replica_reachable = Some(true);
        m
    }

    /// The reports of erp-db and erp-files, by id.
    fn snapshot([db, files]: [TargetReport; 2]) -> Snapshot {
        Snapshot::from_reports([
            (TargetId::new("erp-db"), db),
            (TargetId::new("erp-files"), files),
        ])
    }

    /// The lines a person reads.
    fn lines(reasons: &[GroupReason]) -> Vec<&str> {
        reasons.iter().map(|r| r.message.as_str()).collect()
    }

    fn codes(reasons: &[Reason]) -> Vec<ReasonCode> {
        reasons.iter().map(|r| r.code).collect()
    }

    fn polled(m: Measurement) -> TargetReport {
        let t = m.evidence_time;
        TargetReport::default().after_poll(t, t, Ok(m))
    }

    #[test]
    fn all_fresh_and_within_budget_is_go() {
        let s = snapshot([polled(healthy(100.0, 99.5)), polled(healthy(100.0, 70.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(101.0), None);
        assert!(v.ready, "{:?}", v.groups[0].reasons);
        assert!(v.groups[0].reasons.is_empty());
        assert_eq!(v.groups[0].exposure, Some(Duration::from_secs(30)));
        assert_eq!(
            v.groups[0].recovery_point_skew,
            Some(Duration::from_secs_f64(29.5))
        );
    }

    #[test]
    fn exposure_over_budget_names_target_figure_and_budget() {
        let s = snapshot([polled(healthy(100.0, 58.0)), polled(healthy(100.0, 99.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), Some("erp"));
        assert!(!v.ready);
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: exposure 42s exceeds budget 5s"]
        );
        let reason = &v.groups[0].reasons[0];
        assert_eq!(reason.code, ReasonCode::ExposureOverBudget);
        assert_eq!(reason.target.as_ref().map(TargetId::as_str), Some("erp-db"));
        assert_eq!(
            v.target("erp-db").unwrap().reasons,
            [Reason::new(
                ReasonCode::ExposureOverBudget,
                "exposure 42s exceeds budget 5s"
            )]
        );
    }

    #[test]
    fn never_polled_is_no_go() {
        let s = snapshot([TargetReport::default(), polled(healthy(100.0, 99.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert!(!v.ready);
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: no measurement yet (first poll pending)"]
        );
        assert_eq!(v.groups[0].reasons[0].code, ReasonCode::FirstPollPending);
    }

    #[test]
    fn stale_evidence_is_no_go_with_age_and_cause() {
        let fresh = polled(healthy(100.0, 100.0));
        let failed = fresh.after_poll(
            at(400.0),
            at(403.0),
            Err(ProbeError::new(FailureReason::Timeout, "no answer within 3s").on(Side::Replica)),
        );
        let s = snapshot([failed, polled(healthy(460.0, 460.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(460.0), None);
        assert!(!v.ready);
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: evidence stale (last success 6m ago: timeout)"]
        );
        assert_eq!(v.groups[0].reasons[0].code, ReasonCode::EvidenceStale);
    }

    #[test]
    fn one_failed_poll_with_fresh_evidence_is_still_no_go() {
        let fresh = polled(healthy(100.0, 100.0));
        let failed = fresh.after_poll(
            at(101.0),
            at(101.0),
            Err(ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Replica)),
        );
        let s = snapshot([failed, polled(healthy(101.0, 101.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(101.0), None);
        assert!(!v.ready);
        let db = v.target("erp-db").unwrap();
        assert_eq!(codes(&db.reasons), [ReasonCode::LastPollFailed]);
        assert_eq!(
            db.reasons[0].message,
            "last poll failed (replica connect: connection refused)"
        );
        assert_eq!(v.groups[0].reasons[0].code, ReasonCode::LastPollFailed);
    }

    #[test]
    fn unknown_recovery_point_is_no_go() {
        let mut m = healthy(100.0, 0.0);
        m.recovery_point = None;
        let s = snapshot([polled(m), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert!(!v.ready);
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: recovery point unknown (nothing proven since the exporter started)"]
        );
        assert_eq!(
            v.groups[0].reasons[0].code,
            ReasonCode::RecoveryPointUnknown
        );
    }

    #[test]
    fn unhealthy_link_is_no_go_even_at_zero_exposure() {
        let mut m = healthy(100.0, 100.0);
        m.link = LinkState::Unhealthy("WAL receiver is not streaming".to_string());
        let s = snapshot([polled(m), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert!(!v.ready);
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: replication unhealthy: WAL receiver is not streaming"]
        );
        assert_eq!(v.groups[0].reasons[0].code, ReasonCode::LinkUnhealthy);
    }

    #[test]
    fn unplanned_ignores_the_lost_source_but_checks_the_loss_window() {
        // Source last seen at 100 with the recovery point at 98: loss window 2s.
        let first = polled(healthy(100.0, 98.0));
        let mut source_gone = healthy(200.0, 0.0);
        source_gone.recovery_point = None;
        source_gone.source_reachable = Some(false);
        source_gone.link = LinkState::Unhealthy("WAL receiver is not streaming".to_string());
        source_gone
            .failures
            .push(ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Source));
        let report = first.after_poll(at(200.0), at(200.0), Ok(source_gone));
        let s = snapshot([report.clone(), polled(healthy(200.0, 199.0))]);
        let planned = evaluate(&config(), &s, Mode::Planned, at(200.0), None);
        assert!(!planned.ready);
        assert_eq!(
            codes(&planned.target("erp-db").unwrap().reasons),
            [
                ReasonCode::SourceUnreachable,
                ReasonCode::LinkUnhealthy,
                ReasonCode::ExposureOverBudget
            ]
        );
        assert_eq!(
            planned.groups[0].reasons[0].message,
            "erp-db: source unreachable (connect: connection refused)"
        );
        let unplanned = evaluate(&config(), &s, Mode::Unplanned, at(200.0), None);
        assert!(unplanned.ready, "{:?}", unplanned.groups[0].reasons);
        assert_eq!(
            unplanned.groups[0].targets[0].loss_window,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn polled_without_evidence_is_no_go() {
        let failed = TargetReport::default().after_poll(
            at(100.0),
            at(100.0),
            Err(ProbeError::new(FailureReason::Auth, "password rejected").on(Side::Replica)),
        );
        let s = snapshot([failed, polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        let db = v.target("erp-db").unwrap();
        assert!(!db.ready);
        assert_eq!(
            codes(&db.reasons),
            [
                ReasonCode::NoEvidenceYet,
                ReasonCode::LastPollFailed,
                ReasonCode::RecoveryPointUnknown
            ]
        );
        assert_eq!(
            db.reasons[0].message,
            "no evidence yet (replica auth: password rejected)"
        );
    }

    #[test]
    fn the_cause_comes_first_and_the_verdict_lists_every_reason() {
        // A fresh run whose replica refuses: nothing is proven because the
        // replica does not answer; that is the target's first reason.
        let mut m = healthy(100.0, 0.0);
        m.recovery_point = None;
        m.replica_reachable = Some(false);
        m.link = LinkState::Unknown("the replica did not answer".to_string());
        m.failures
            .push(ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Replica));
        let report = TargetReport::default().after_poll(at(100.0), at(100.0), Ok(m));
        let s = snapshot([report, polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        let db = v.target("erp-db").unwrap();
        assert_eq!(
            codes(&db.reasons),
            [
                ReasonCode::ReplicaUnreachable,
                ReasonCode::NoEvidenceYet,
                ReasonCode::RecoveryPointUnknown
            ]
        );
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: replica unreachable (connect: connection refused)"]
        );
        // The top-level list has every reason of every failing target.
        let json = v.to_json();
        assert_eq!(json.reasons.len(), 3, "{:?}", json.reasons);
        assert_eq!(
            json.reasons[0],
            "erp-db: replica unreachable (connect: connection refused)"
        );
        assert!(json.reasons[2].starts_with("erp-db: recovery point unknown"));
        for (detail, line) in json.reason_details.iter().zip(&json.reasons) {
            assert_eq!(&detail.message, line);
            assert_eq!(detail.target.as_deref(), Some("erp-db"));
            assert_eq!(detail.group.as_deref(), Some("erp"));
        }
        assert_eq!(json.reason_details[1].code, "no_evidence_yet");
    }

    #[test]
    fn unreachable_replica_is_no_go_in_both_modes() {
        let mut m = healthy(101.0, 0.0);
        m.recovery_point = None;
        m.replica_reachable = Some(false);
        m.link = LinkState::Unknown("the replica did not answer".to_string());
        m.failures
            .push(ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Replica));
        let report = polled(healthy(100.0, 100.0)).after_poll(at(101.0), at(101.0), Ok(m));
        let s = snapshot([report, polled(healthy(101.0, 101.0))]);
        for mode in [Mode::Planned, Mode::Unplanned] {
            let v = evaluate(&config(), &s, mode, at(101.0), None);
            assert!(!v.ready, "{mode}");
            // The unknown link is not a second reason: the replica says why.
            assert_eq!(
                v.target("erp-db").unwrap().reasons,
                [Reason::new(
                    ReasonCode::ReplicaUnreachable,
                    "replica unreachable (connect: connection refused)"
                )],
                "{mode}"
            );
            assert_eq!(
                v.groups[0].reasons[0].code,
                ReasonCode::ReplicaUnreachable,
                "{mode}"
            );
        }
    }

    #[test]
    fn unknown_link_is_no_go_in_planned_mode() {
        let mut m = healthy(100.0, 100.0);
        m.link = LinkState::Unknown("no WAL receiver row".to_string());
        let s = snapshot([polled(m), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert_eq!(
            v.target("erp-db").unwrap().reasons,
            [Reason::new(
                ReasonCode::LinkUnknown,
                "replication status unknown: no WAL receiver row"
            )]
        );
        // Unplanned: the link is the lost source's business.
        assert!(evaluate(&config(), &s, Mode::Unplanned, at(100.0), None).ready);
    }

    #[test]
    fn loss_window_over_budget_is_no_go_in_unplanned_mode() {
        // Last contact with the source at 100, recovery point 90: 10s lost.
        let mut source_gone = healthy(101.0, 0.0);
        source_gone.recovery_point = None;
        source_gone.source_reachable = Some(false);
        let report = polled(healthy(100.0, 90.0)).after_poll(at(101.0), at(101.0), Ok(source_gone));
        let s = snapshot([report, polled(healthy(101.0, 101.0))]);
        let v = evaluate(&config(), &s, Mode::Unplanned, at(101.0), None);
        assert_eq!(
            v.target("erp-db").unwrap().reasons,
            [Reason::new(
                ReasonCode::LossWindowOverBudget,
                "known loss window 10s exceeds budget 5s"
            )]
        );
        assert_eq!(
            lines(&v.groups[0].reasons),
            ["erp-db: known loss window 10s exceeds budget 5s"]
        );
    }

    #[test]
    fn a_group_without_targets_is_no_go() {
        let config = Config::from_toml(
            &format!("{CONFIG}\n[[group]]\nname = \"crm\"\nrpo_budget = \"60s\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let s = snapshot([polled(healthy(100.0, 100.0)), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config, &s, Mode::Planned, at(100.0), Some("crm"));
        assert!(!v.ready);
        assert_eq!(
            v.groups[0].reasons,
            [GroupReason {
                code: ReasonCode::GroupHasNoTargets,
                target: None,
                message: "crm: the group has no targets".to_string(),
            }]
        );
        assert!(evaluate(&config, &s, Mode::Planned, at(100.0), Some("erp")).ready);
    }

    #[test]
    fn reports_are_joined_to_targets_by_id_not_position() {
        // The store holds a report for a target the configuration no longer
        // has, and none yet for erp-files (just added, say, by a reload).
        let s = Snapshot::from_reports([
            (TargetId::new("gone"), polled(healthy(100.0, 0.0))),
            (TargetId::new("erp-db"), polled(healthy(100.0, 58.0))),
        ]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        let names: Vec<&str> = v.targets().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["erp-db", "erp-files"], "configuration order");
        assert!(v.target("gone").is_none());
        let db = v.target("erp-db").unwrap();
        assert_eq!(db.exposure, Some(Duration::from_secs(42)));
        assert_eq!(codes(&db.reasons), [ReasonCode::ExposureOverBudget]);
        let files = v.target(&TargetId::new("erp-files")).unwrap();
        assert_eq!(codes(&files.reasons), [ReasonCode::FirstPollPending]);
        // A verdict for one group only knows that group's targets.
        let one = evaluate(&config(), &s, Mode::Planned, at(100.0), Some("erp"));
        assert_eq!(
            one.target("erp-files").unwrap().target.as_str(),
            "erp-files"
        );
    }

    #[test]
    fn reason_codes_are_listed_once_and_serialise_as_their_names() {
        let mut seen = std::collections::HashSet::new();
        for code in ReasonCode::ALL {
            // No wildcard arm: a new code does not compile until it is
            // listed here, and so remembered in ALL.
            match code {
                ReasonCode::FirstPollPending
                | ReasonCode::NoEvidenceYet
                | ReasonCode::EvidenceStale
                | ReasonCode::LastPollFailed
                | ReasonCode::ReplicaUnreachable
                | ReasonCode::SourceUnreachable
                | ReasonCode::LinkUnhealthy
                | ReasonCode::LinkUnknown
                | ReasonCode::RecoveryPointUnknown
                | ReasonCode::ExposureOverBudget
                | ReasonCode::LossWindowOverBudget
                | ReasonCode::GroupHasNoTargets
                | ReasonCode::ExporterUnavailable
                | ReasonCode::PrometheusUnavailable
                | ReasonCode::VerdictSeriesMissing
                | ReasonCode::GateAlertFiring
                | ReasonCode::SplitBrain
                | ReasonCode::ReplicaPromoted
                | ReasonCode::GateAlertPending
                | ReasonCode::ExporterDown
                | ReasonCode::VerdictStale
                | ReasonCode::ExporterNoGo => {}
            }
            assert!(seen.insert(code.as_str()), "{code} listed twice");
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
            assert_eq!(
                serde_json::from_value::<ReasonCode>(serde_json::json!(code.as_str())).unwrap(),
                code
            );
            assert!(code
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert_eq!(seen.len(), 22);
    }

    #[test]
    fn json_carries_codes_beside_the_words_at_every_level() {
        let s = snapshot([polled(healthy(100.0, 58.0)), TargetReport::default()]);
        let json =
            serde_json::to_value(evaluate(&config(), &s, Mode::Planned, at(100.0), None).to_json())
                .unwrap();
        assert_eq!(json["schema_version"], 1);
        let db = &json["groups"][0]["targets"][0];
        assert_eq!(
            db["reasons"],
            serde_json::json!(["exposure 42s exceeds budget 5s"])
        );
        assert_eq!(
            db["reason_details"],
            serde_json::json!([{"code": "exposure_over_budget", "message": "exposure 42s exceeds budget 5s"}])
        );
        let group_details = serde_json::json!([
            {"code": "exposure_over_budget", "group": "erp", "target": "erp-db",
             "message": "erp-db: exposure 42s exceeds budget 5s"},
            {"code": "first_poll_pending", "group": "erp", "target": "erp-files",
             "message": "erp-files: no measurement yet (first poll pending)"},
        ]);
        assert_eq!(json["groups"][0]["reason_details"], group_details);
        assert_eq!(json["reason_details"], group_details);
        // The words are the same in both lists, in the same order.
        for level in [&json, &json["groups"][0], db] {
            let messages: Vec<&serde_json::Value> = level["reason_details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| &d["message"])
                .collect();
            let reasons: Vec<&serde_json::Value> =
                level["reasons"].as_array().unwrap().iter().collect();
            assert_eq!(messages, reasons);
        }
        // What `check --from` reads back is what was sent.
        let back: VerdictJson = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn json_from_an_exporter_without_codes_still_reads() {
        let old = serde_json::json!({
            "verdict": "GO", "ready": true, "mode": "planned",
            "evaluated_at": "2026-11-23T20:41:07.512Z", "evaluated_at_unix": 1795466467.512,
            "reasons": [], "groups": [{
                "group": "erp", "verdict": "GO", "ready": true, "rpo_budget_seconds": 60.0,
                "exposure_seconds": 1.0, "recovery_point_skew_seconds": 0.0, "reasons": [],
                "targets": [{"target": "erp-db", "kind": "postgres", "ready": true,
                    "recovery_point": null, "recovery_point_unix": null, "exposure_seconds": 1.0,
                    "budget_seconds": 5.0, "evidence_age_seconds": 0.1,
                    "replication_healthy": true, "reasons": []}]
            }]
        });
        let v: VerdictJson = serde_json::from_value(old).unwrap();
        assert_eq!(v.schema_version, 0);
        assert!(v.ready);
    }

    #[test]
    fn json_shape() {
        let s = snapshot([polled(healthy(100.0, 58.0)), polled(healthy(100.0, 99.0))]);
        let json =
            serde_json::to_value(evaluate(&config(), &s, Mode::Planned, at(100.0), None).to_json())
                .unwrap();
        assert_eq!(json["verdict"], "NO-GO");
        assert_eq!(json["groups"][0]["targets"][0]["exposure_seconds"], 42.0);
        assert_eq!(json["groups"][0]["targets"][0]["budget_seconds"], 5.0);
        assert_eq!(json["groups"][0]["targets"][1]["budget_seconds"], 60.0);
    }

    /// A poll of a pair that saw these roles (heartbeat configured).
    fn paired(
        now: f64,
        rp: Option<f64>,
        primary: Option<bool>,
        replica: Option<bool>,
        replica_heartbeat: Option<f64>,
    ) -> Measurement {
        use crate::evidence::promotion::{Direction, PairRoles, SideSeen};
        let mut m = healthy(now, 0.0);
        m.recovery_point = rp.map(at);
        if replica == Some(true) {
            m.link = LinkState::Unhealthy(
                "the replica is not in recovery (promoted, or not a standby)".to_string(),
            );
        }
        if primary.is_none() {
            m.source_reachable = Some(false);
            m.failures.push(
                ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Source),
            );
        }
        m.roles = Some(PairRoles {
            primary: SideSeen {
                writable: primary,
                ..SideSeen::default()
            },
            replica: SideSeen {
                writable: replica,
                heartbeat: replica_heartbeat.map(at),
                ..SideSeen::default()
            },
            direction: Direction::Forward,
            heartbeat_configured: true,
        });
        m
    }

    fn heartbeats_on_primary(mut report: TargetReport, from: u64, to: u64) -> TargetReport {
        use crate::evidence::promotion::ConfiguredSide;
        for t in from..=to {
            report = report.after_heartbeat_on(at(t as f64), ConfiguredSide::Primary, Ok(()));
        }
        report
    }

    #[test]
    fn split_brain_is_no_go_in_every_mode_and_says_so() {
        let steady = heartbeats_on_primary(
            polled(paired(
                100.0,
                Some(100.0),
                Some(true),
                Some(false),
                Some(100.0),
            )),
            100,
            100,
        );
        let both = steady.after_poll(
            at(101.0),
            at(101.0),
            Ok(paired(101.0, None, Some(true), Some(true), Some(100.0))),
        );
        let s = snapshot([both, polled(healthy(101.0, 101.0))]);
        for mode in [Mode::Planned, Mode::Unplanned] {
            let v = evaluate(&config(), &s, mode, at(101.5), None);
            assert!(!v.ready, "{mode}");
            let db = v.target("erp-db").unwrap();
            assert_eq!(db.reasons[0].code, ReasonCode::SplitBrain, "{mode}");
            assert!(
                db.reasons[0]
                    .message
                    .starts_with("split brain: primary_url and replica_url both accept writes"),
                "{mode}: {}",
                db.reasons[0].message
            );
            assert_eq!(v.groups[0].reasons[0].code, ReasonCode::SplitBrain);
            let json = db.to_json();
            assert_eq!(json.split_brain, Some(true));
            assert_eq!(json.promoted, Some(true));
        }
    }

    #[test]
    fn a_promotion_is_shown_in_words_and_its_measured_loss_gates_unplanned_mode() {
        // Replica proven at 100, then lost; the primary acknowledges
        // heartbeats until 106 and is lost too; the replica is promoted.
        let steady = heartbeats_on_primary(
            polled(paired(
                100.0,
                Some(100.0),
                Some(true),
                Some(false),
                Some(100.0),
            )),
            100,
            106,
        );
        let promoted = steady.after_poll(
            at(108.0),
            at(108.0),
            Ok(paired(108.0, None, None, Some(true), Some(100.0))),
        );
        let s = snapshot([promoted, polled(healthy(108.0, 108.0))]);

        let unplanned = evaluate(&config(), &s, Mode::Unplanned, at(108.5), None);
        let db = unplanned.target("erp-db").unwrap();
        assert_eq!(
            db.reasons,
            [Reason::new(
                ReasonCode::LossWindowOverBudget,
                "measured loss 6s exceeds budget 5s"
            )]
        );
        assert!(
            db.notes[0].starts_with("replica promoted at ")
                && db.notes[0].contains(": measured loss 6s (predicted 0ms)"),
            "{:?}",
            db.notes
        );
        let json = db.to_json();
        let promotion = json.promotion.unwrap();
        assert_eq!(promotion.measured_loss_seconds, Some(6.0));
        assert_eq!(promotion.predicted_exposure_seconds, Some(0.0));
        assert_eq!(promotion.side, "replica_url");
        assert_eq!(
            json.direction.as_deref(),
            Some("primary_url -> replica_url")
        );

        let planned = evaluate(&config(), &s, Mode::Planned, at(108.5), None);
        let db = planned.target("erp-db").unwrap();
        assert_eq!(
            codes(&db.reasons),
            [
                ReasonCode::SourceUnreachable,
                ReasonCode::ReplicaPromoted,
                ReasonCode::ExposureOverBudget
            ]
        );
        assert!(
            db.reasons[1]
                .message
                .ends_with(": measured loss 6s (predicted 0ms); nothing replicates from it yet"),
            "{}",
            db.reasons[1].message
        );
    }

    #[test]
    fn a_kind_without_roles_shows_no_promotion() {
        let s = snapshot([polled(healthy(100.0, 100.0)), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        let db = v.target("erp-db").unwrap();
        assert!(db.roles.is_none() && db.notes.is_empty());
        let json = serde_json::to_value(db.to_json()).unwrap();
        for absent in ["promoted", "split_brain", "promotion", "notes", "direction"] {
            assert!(json.get(absent).is_none(), "{absent} in {json}");
        }
    }

    #[test]
    fn promotion_words() {
        assert_eq!(clock(at(0.0)), "22:13:20Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
