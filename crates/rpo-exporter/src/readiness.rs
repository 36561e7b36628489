//! The failover verdict: one pure function, [`evaluate`], of the snapshot,
//! the configuration and the clock. The metrics, the HTTP endpoint, the HTML
//! board and the CLI all show what it returns.
//!
//! Unknown is never GO: a target with no evidence, stale evidence, a failed
//! last poll, an unknown recovery point or an unknown link is not ready.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, Target};
use crate::kinds::Kind;
use crate::probe::{unix_seconds, LinkState};
use crate::store::{Snapshot, TargetReport};

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

#[derive(Debug, Clone)]
pub struct Verdict {
    pub mode: Mode,
    pub evaluated_at: SystemTime,
    pub ready: bool,
    pub groups: Vec<GroupVerdict>,
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
    /// One line per failing target: "target: reason".
    pub reasons: Vec<String>,
    pub targets: Vec<TargetVerdict>,
}

#[derive(Debug, Clone)]
pub struct TargetVerdict {
    pub target: String,
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
    pub reasons: Vec<String>,
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
    // Each group's members in configuration order, found in one pass (not
    // one pass per group: with 100 groups of 10 that was 100,000 string
    // comparisons per verdict).
    let mut members: HashMap<&str, Vec<(&Target, &TargetReport)>> = HashMap::new();
    for (t, r) in config.targets.iter().zip(snapshot.reports.iter()) {
        if group.is_none_or(|name| t.group == name) {
            members.entry(t.group.as_str()).or_default().push((t, r));
        }
    }
    let groups: Vec<GroupVerdict> = config
        .groups
        .iter()
        .filter(|g| group.is_none_or(|name| g.name == name))
        .map(|g| {
            let targets: Vec<TargetVerdict> = members
                .get(g.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|(t, r)| evaluate_target(t, r, mode, now))
                .collect();
            let mut reasons: Vec<String> = targets
                .iter()
                .filter(|t| !t.ready)
                .map(|t| {
                    format!(
                        "{}: {}",
                        t.target,
                        t.reasons.first().map(String::as_str).unwrap_or("not ready")
                    )
                })
                .collect();
            if targets.is_empty() {
                reasons.push(format!("{}: the group has no targets", g.name));
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
                ready: reasons.is_empty(),
                rpo_budget: g.rpo_budget,
                exposure,
                recovery_point_skew,
                reasons,
                targets,
            }
        })
        .collect();
    Verdict {
        mode,
        evaluated_at: now,
        ready: !groups.is_empty() && groups.iter().all(|g| g.ready),
        groups,
    }
}

/// The gate for one target.
pub fn evaluate_target(
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

    if report.runs_total == 0 {
        reasons.push("no measurement yet (first poll pending)".to_string());
    } else {
        match evidence_age {
            None => reasons.push(match &report.last_error {
                Some(err) => format!("no evidence yet ({err})"),
                None => "no evidence yet".to_string(),
            }),
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
                reasons.push(format!("evidence stale ({since}{why})"));
            }
            Some(_) => {}
        }
        if let Some(err) = &report.last_poll_error {
            reasons.push(format!("last poll failed ({err})"));
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
            reasons.push(format!("replica unreachable{why}"));
        }
        if mode == Mode::Planned {
            if m.source_reachable == Some(false) {
                let why = m
                    .failures
                    .iter()
                    .find(|f| f.side == Some(crate::probe::Side::Source))
                    .map(|f| format!(" ({}: {})", f.reason, f.message))
                    .unwrap_or_default();
                reasons.push(format!("source unreachable{why}"));
            }
            match &m.link {
                LinkState::Healthy => replication_healthy = true,
                LinkState::Unhealthy(why) => reasons.push(format!("replication unhealthy: {why}")),
                // An unreachable replica already says why the link is unknown.
                LinkState::Unknown(_) if m.replica_reachable == Some(false) => {}
                LinkState::Unknown(why) => {
                    reasons.push(format!("replication status unknown: {why}"))
                }
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
            (None, _) | (_, None) => reasons.push(
                "recovery point unknown (nothing proven since the exporter started)".to_string(),
            ),
            (Some(_), Some(exposure)) => {
                let (figure, what) = match (mode, loss_window) {
                    (Mode::Unplanned, Some(window)) => (window, "known loss window"),
                    _ => (exposure, "exposure"),
                };
                if figure > target.rpo_budget {
                    reasons.push(format!(
                        "{what} {} exceeds budget {}",
                        human_duration(figure),
                        human_duration(target.rpo_budget)
                    ));
                }
            }
        }
    }

    TargetVerdict {
        target: target.name.clone(),
        kind: target.kind(),
        ready: reasons.is_empty(),
        recovery_point: report.recovery_point,
        exposure: report.exposure,
        budget: target.rpo_budget,
        evidence_age,
        replication_healthy,
        loss_window,
        reasons,
    }
}

/// A duration as people say it on a call: "120ms", "4.2s", "42s", "6m 5s",
/// "2h 3m". Never "0s" for a small non-zero figure.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let pair = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit} {small}{small_unit}")
        }
    };
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 10.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            format!("{}s", tenths as u64)
        } else {
            format!("{tenths:.1}s")
        }
    } else if secs < 60.0 {
        format!("{}s", secs.round() as u64)
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        pair(s / 60, "m", s % 60, "s")
    } else if secs < 86400.0 {
        let m = (secs / 60.0).round() as u64;
        pair(m / 60, "h", m % 60, "m")
    } else {
        let h = (secs / 3600.0).round() as u64;
        pair(h / 24, "d", h % 24, "h")
    }
}

// ---------------------------------------------------------------------------
// The JSON form, shared by /failover-readiness and `check --output json`.

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct VerdictJson {
    pub verdict: String,
    pub ready: bool,
    pub mode: String,
    pub evaluated_at: String,
    pub evaluated_at_unix: f64,
    pub reasons: Vec<String>,
    pub groups: Vec<GroupJson>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct GroupJson {
    pub group: String,
    pub verdict: String,
    pub ready: bool,
    pub rpo_budget_seconds: f64,
    pub exposure_seconds: Option<f64>,
    pub recovery_point_skew_seconds: Option<f64>,
    pub reasons: Vec<String>,
    pub targets: Vec<TargetJson>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
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
        VerdictJson {
            verdict: verdict_word(self.ready).to_string(),
            ready: self.ready,
            mode: self.mode.to_string(),
            evaluated_at: humantime::format_rfc3339_millis(self.evaluated_at).to_string(),
            evaluated_at_unix: unix_seconds(self.evaluated_at),
            reasons: self
                .groups
                .iter()
                .flat_map(|g| g.reasons.iter().cloned())
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|g| GroupJson {
                    group: g.group.clone(),
                    verdict: verdict_word(g.ready).to_string(),
                    ready: g.ready,
                    rpo_budget_seconds: g.rpo_budget.as_secs_f64(),
                    exposure_seconds: g.exposure.map(|d| d.as_secs_f64()),
                    recovery_point_skew_seconds: g.recovery_point_skew.map(|d| d.as_secs_f64()),
                    reasons: g.reasons.clone(),
                    targets: g
                        .targets
                        .iter()
                        .map(|t| TargetJson {
                            target: t.target.clone(),
                            kind: t.kind.to_string(),
                            ready: t.ready,
                            recovery_point: t
                                .recovery_point
                                .map(|rp| humantime::format_rfc3339_millis(rp).to_string()),
                            recovery_point_unix: t.recovery_point.map(unix_seconds),
                            exposure_seconds: t.exposure.map(|d| d.as_secs_f64()),
                            budget_seconds: t.budget.as_secs_f64(),
                            evidence_age_seconds: t.evidence_age.map(|d| d.as_secs_f64()),
                            replication_healthy: t.replication_healthy,
                            loss_window_seconds: t.loss_window.map(|d| d.as_secs_f64()),
                            reasons: t.reasons.clone(),
                        })
                        .collect(),
                })
                .collect(),
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

    fn snapshot(reports: Vec<TargetReport>) -> Snapshot {
        Snapshot {
            reports: reports.into_iter().map(std::sync::Arc::new).collect(),
        }
    }

    fn polled(m: Measurement) -> TargetReport {
        let t = m.evidence_time;
        TargetReport::default().after_poll(t, t, Ok(m))
    }

    #[test]
    fn all_fresh_and_within_budget_is_go() {
        let s = snapshot(vec![
            polled(healthy(100.0, 99.5)),
            polled(healthy(100.0, 70.0)),
        ]);
        let v = evaluate(&config(), &s, Mode::Planned, at(101.0), None);
        assert!(v.ready, "{:?}", v.groups[0].reasons);
        assert_eq!(v.groups[0].exposure, Some(Duration::from_secs(30)));
        assert_eq!(
            v.groups[0].recovery_point_skew,
            Some(Duration::from_secs_f64(29.5))
        );
    }

    #[test]
    fn exposure_over_budget_names_target_figure_and_budget() {
        let s = snapshot(vec![
            polled(healthy(100.0, 58.0)),
            polled(healthy(100.0, 99.0)),
        ]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), Some("erp"));
        assert!(!v.ready);
        assert_eq!(
            v.groups[0].reasons,
            vec!["erp-db: exposure 42s exceeds budget 5s".to_string()]
        );
    }

    #[test]
    fn never_polled_is_no_go() {
        let s = snapshot(vec![TargetReport::default(), polled(healthy(100.0, 99.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert!(!v.ready);
        assert!(v.groups[0].reasons[0].contains("first poll pending"));
    }

    #[test]
    fn stale_evidence_is_no_go_with_age_and_cause() {
        let fresh = polled(healthy(100.0, 100.0));
        let failed = fresh.after_poll(
            at(400.0),
            at(403.0),
            Err(ProbeError::new(FailureReason::Timeout, "no answer within 3s").on(Side::Replica)),
        );
        let s = snapshot(vec![failed, polled(healthy(460.0, 460.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(460.0), None);
        assert!(!v.ready);
        assert_eq!(
            v.groups[0].reasons,
            vec!["erp-db: evidence stale (last success 6m ago: timeout)".to_string()]
        );
    }

    #[test]
    fn one_failed_poll_with_fresh_evidence_is_still_no_go() {
        let fresh = polled(healthy(100.0, 100.0));
        let failed = fresh.after_poll(
            at(101.0),
            at(101.0),
            Err(ProbeError::new(FailureReason::Connect, "connection refused").on(Side::Replica)),
        );
        let s = snapshot(vec![failed, polled(healthy(101.0, 101.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(101.0), None);
        assert!(!v.ready);
        assert!(
            v.groups[0].reasons[0]
                .contains("last poll failed (replica connect: connection refused)"),
            "{:?}",
            v.groups[0].reasons
        );
    }

    #[test]
    fn unknown_recovery_point_is_no_go() {
        let mut m = healthy(100.0, 0.0);
        m.recovery_point = None;
        let s = snapshot(vec![polled(m), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert!(!v.ready);
        assert!(v.groups[0].reasons[0].contains("recovery point unknown"));
    }

    #[test]
    fn unhealthy_link_is_no_go_even_at_zero_exposure() {
        let mut m = healthy(100.0, 100.0);
        m.link = LinkState::Unhealthy("WAL receiver is not streaming".to_string());
        let s = snapshot(vec![polled(m), polled(healthy(100.0, 100.0))]);
        let v = evaluate(&config(), &s, Mode::Planned, at(100.0), None);
        assert!(!v.ready);
        assert_eq!(
            v.groups[0].reasons[0],
            "erp-db: replication unhealthy: WAL receiver is not streaming"
        );
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
        let s = snapshot(vec![report.clone(), polled(healthy(200.0, 199.0))]);
        let planned = evaluate(&config(), &s, Mode::Planned, at(200.0), None);
        assert!(!planned.ready);
        assert!(planned.groups[0].reasons[0].contains("source unreachable"));
        let unplanned = evaluate(&config(), &s, Mode::Unplanned, at(200.0), None);
        assert!(unplanned.ready, "{:?}", unplanned.groups[0].reasons);
        assert_eq!(
            unplanned.groups[0].targets[0].loss_window,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn json_shape() {
        let s = snapshot(vec![
            polled(healthy(100.0, 58.0)),
            polled(healthy(100.0, 99.0)),
        ]);
        let json =
            serde_json::to_value(evaluate(&config(), &s, Mode::Planned, at(100.0), None).to_json())
                .unwrap();
        assert_eq!(json["verdict"], "NO-GO");
        assert_eq!(json["groups"][0]["targets"][0]["exposure_seconds"], 42.0);
        assert_eq!(json["groups"][0]["targets"][0]["budget_seconds"], 5.0);
        assert_eq!(json["groups"][0]["targets"][1]["budget_seconds"], 60.0);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_millis(840)), "840ms");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_millis(4240)), "4.2s");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(365)), "6m 5s");
        assert_eq!(human_duration(Duration::from_secs(7380)), "2h 3m");
    }
}
