//! `check --prometheus URL`: the gate as one Prometheus sees every exporter
//! it scrapes (one per region, SPEC section 9), never more optimistic than
//! any of them.
//!
//! For the group, NO-GO when, for ANY exporter (in the `--region`s asked
//! for, or all of them):
//! - its scrape is down (`up == 0`): its verdict is unknown;
//! - its verdict series (`rpo_failover_ready`, or
//!   `rpo_failover_ready_unplanned` with `--mode unplanned`) is 0;
//! - that series' newest sample is older than `--max-sample-age`
//!   (Prometheus stopped scraping it, or restarted without staleness
//!   markers and still serves an old sample);
//! - it published that series for the group within the last day and
//!   Prometheus has none now (the exporter left the scrape targets, or the
//!   group left its configuration);
//! - no exporter publishes the series for the group at all;
//!
//! and while ANY `failover_gate="block"` alert for the group (or for no
//! group: an exporter down or absent) is pending or firing. In unplanned
//! mode the alerts labelled `failover_mode="planned"` (the planned
//! verdict, exposure over budget, a broken link: expected once the source
//! region is gone) do not block; the unplanned verdict series covers what
//! matters then.
//!
//! Exporters are told apart by `rpo_exporter_info{exporter_instance,
//! region}`, joined on Prometheus' own `instance` (the scrape target); an
//! exporter keeps its identity across scrape addresses (a rescheduled pod).
//! Everything is read from the job `rpo-exporter`, as the shipped rules do.
//!
//! Reading Prometheus ([`observe`]) and deciding ([`decide`]) are apart, so
//! the decision is unit-tested on observations without a Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use serde_json::Value;

use super::{without_url, CheckError, CheckOptions};
use crate::metrics::catalogue::{
    FAILOVER_READY, FAILOVER_READY_UNPLANNED, TARGET_READY, TARGET_READY_UNPLANNED,
};
use crate::readiness::{
    human_duration, ExporterJson, Mode, ReasonCode, ReasonJson, VerdictJson, SCHEMA_VERSION,
};

/// The scrape job the exporters are expected under (the shipped rules
/// select on it too).
pub const JOB: &str = "rpo-exporter";

/// The default staleness bound of a verdict sample: twice Prometheus'
/// default `scrape_interval` (1m). A scrape that fails is seen at once
/// (`up == 0`); this bound is for a Prometheus that stopped scraping.
pub const DEFAULT_MAX_SAMPLE_AGE: Duration = Duration::from_secs(120);

/// How far back Prometheus is asked which exporters exist and which groups
/// they measure, so that one that vanished is missed, not forgotten.
const HISTORY: &str = "1d";
const HISTORY_WORDS: &str = "the last day";

/// How `check --prometheus` reads the gate.
#[derive(Debug, Clone)]
pub struct PrometheusGate {
    /// Only the exporters in these regions (`--region`); empty: all of them.
    /// An exporter whose region is unknown is always asked.
    pub regions: Vec<String>,
    /// A verdict sample older than this is stale (`--max-sample-age`).
    pub max_sample_age: Duration,
}

impl Default for PrometheusGate {
    fn default() -> PrometheusGate {
        PrometheusGate {
            regions: Vec::new(),
            max_sample_age: DEFAULT_MAX_SAMPLE_AGE,
        }
    }
}

/// Reads the gate from Prometheus at `base` (once, or until GO within
/// `options.wait`). Prometheus unreachable or answering an error is a
/// NO-GO saying so; an unknown group or region is a usage error.
pub async fn check_prometheus(
    base: &Url,
    options: &CheckOptions,
    gate: &PrometheusGate,
    timeout: Duration,
) -> Result<VerdictJson, CheckError> {
    let deadline = options.wait.map(|w| Instant::now() + w);
    let client = options.access.client(timeout)?;
    let shown = super::shown_url(base);
    loop {
        let verdict = match observe(&client, base, options.group.as_deref(), options.mode).await {
            Ok(observed) => {
                let answer = decide(&observed, options.group.as_deref(), options.mode, gate)?;
                verdict_json(options.mode, answer.reasons, answer.exporters)
            }
            Err(problem) => verdict_json(
                options.mode,
                vec![reason(
                    ReasonCode::PrometheusUnavailable,
                    format!("Prometheus at {shown} {problem}"),
                )],
                Vec::new(),
            ),
        };
        match deadline {
            Some(deadline)
                if !verdict.ready && Instant::now() + Duration::from_secs(1) < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return Ok(verdict),
        }
    }
}

fn verdict_json(mode: Mode, reasons: Vec<ReasonJson>, exporters: Vec<ExporterJson>) -> VerdictJson {
    let now = SystemTime::now();
    let ready = reasons.is_empty();
    VerdictJson {
        schema_version: SCHEMA_VERSION,
        verdict: if ready { "GO" } else { "NO-GO" }.to_string(),
        ready,
        mode: mode.to_string(),
        evaluated_at: humantime::format_rfc3339_millis(now).to_string(),
        evaluated_at_unix: crate::probe::unix_seconds(now),
        exporter: None,
        exporters,
        reasons: reasons.iter().map(|r| r.message.clone()).collect(),
        reason_details: reasons,
        groups: Vec::new(),
    }
}

fn reason(code: ReasonCode, message: String) -> ReasonJson {
    ReasonJson {
        code: code.as_str().to_string(),
        group: None,
        target: None,
        exporter: None,
        message,
    }
}

// ---------------------------------------------------------------------------
// What Prometheus shows.

/// Who an exporter says it is (`rpo_exporter_info`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    pub exporter_instance: String,
    /// `None` when the exporter has no `[exporter] region`.
    pub region: Option<String>,
}

/// One exporter's verdict sample for one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerdictSample {
    pub value: f64,
    /// Prometheus' time minus the sample's timestamp; `None` if not known.
    pub age: Option<Duration>,
}

/// An alert Prometheus holds as pending or firing.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    pub summary: String,
}

/// Everything one round reads from Prometheus. Keys are Prometheus'
/// `instance` label (the scrape target) and, where per group, the group.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// `up{job="rpo-exporter"}`.
    pub up: BTreeMap<String, f64>,
    /// `rpo_exporter_info` now.
    pub identity_now: BTreeMap<String, Identity>,
    /// `rpo_exporter_info` within the last day.
    pub identity_history: BTreeMap<String, BTreeSet<Identity>>,
    /// The mode's verdict series now (absent once stale-marked).
    pub verdicts: BTreeMap<(String, String), VerdictSample>,
    /// (instance, group) of `rpo_failover_ready` within the last day, every
    /// group (the unknown-group check needs them all): which exporters
    /// measure which groups. The planned series, whatever the mode, so that
    /// an exporter without `rpo_failover_ready_unplanned` (an older one) is
    /// missing in unplanned mode, not unnoticed.
    pub history: BTreeSet<(String, String)>,
    /// The targets whose per-target verdict of the mode
    /// (`rpo_target_ready`, or `rpo_target_ready_unplanned`) is 0.
    pub not_ready: BTreeMap<(String, String), Vec<String>>,
    pub alerts: Vec<ActiveAlert>,
}

/// The family `--mode` reads.
fn verdict_family(mode: Mode) -> &'static str {
    match mode {
        Mode::Planned => FAILOVER_READY.name,
        Mode::Unplanned => FAILOVER_READY_UNPLANNED.name,
    }
}

/// The per-target family of `--mode`: names the targets that block.
fn target_family(mode: Mode) -> &'static str {
    match mode {
        Mode::Planned => TARGET_READY.name,
        Mode::Unplanned => TARGET_READY_UNPLANNED.name,
    }
}

/// A PromQL string literal.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `{job="rpo-exporter"}` or `{job="rpo-exporter",group="…"}`.
fn selector(group: Option<&str>) -> String {
    match group {
        Some(g) => format!("{{job={},group={}}}", quoted(JOB), quoted(g)),
        None => format!("{{job={}}}", quoted(JOB)),
    }
}

/// Asks Prometheus everything [`decide`] needs; `Err` says why it could
/// not be asked ("cannot be reached: …", "answered HTTP 503: …").
async fn observe(
    client: &reqwest::Client,
    base: &Url,
    group: Option<&str>,
    mode: Mode,
) -> Result<Observed, String> {
    let family = verdict_family(mode);
    let of_group = selector(group);
    let of_job = selector(None);
    // Value and age in one query, so both are read at one evaluation time:
    // each series twice, told apart by an added `rpo_check` label.
    let verdicts = format!(
        "label_replace({family}{of_group}, \"rpo_check\", \"value\", \"\", \"\") \
         or label_replace(time() - timestamp({family}{of_group}), \"rpo_check\", \"age\", \"\", \"\")"
    );
    let planned = verdict_family(Mode::Planned);
    let history =
        format!("count by (instance, group) (last_over_time({planned}{of_job}[{HISTORY}]))");
    let identity_now = format!("rpo_exporter_info{of_job}");
    let identity_history = format!(
        "count by (instance, exporter_instance, region) (last_over_time(rpo_exporter_info{of_job}[{HISTORY}]))"
    );
    let not_ready = format!("{}{of_group} == 0", target_family(mode));
    let up = format!("up{of_job}");
    let (up, verdicts, history, identity_now, identity_history, not_ready, alerts) = tokio::try_join!(
        query(client, base, &up),
        query(client, base, &verdicts),
        query(client, base, &history),
        query(client, base, &identity_now),
        query(client, base, &identity_history),
        query(client, base, &not_ready),
        api(client, base, "api/v1/alerts", &[]),
    )?;

    let mut observed = Observed::default();
    for (labels, value) in samples(&up) {
        observed.up.insert(label(&labels, "instance"), value);
    }
    for (labels, value) in samples(&verdicts) {
        let key = (label(&labels, "instance"), label(&labels, "group"));
        let entry = observed.verdicts.entry(key).or_insert(VerdictSample {
            value: f64::NAN,
            age: None,
        });
        match labels.get("rpo_check").map(String::as_str) {
            Some("age") => entry.age = Some(Duration::from_secs_f64(value.max(0.0))),
            _ => entry.value = value,
        }
    }
    // An age without a value: the series went stale between the two halves.
    observed.verdicts.retain(|_, s| !s.value.is_nan());
    for (labels, _) in samples(&history) {
        observed
            .history
            .insert((label(&labels, "instance"), label(&labels, "group")));
    }
    for (labels, _) in samples(&identity_now) {
        observed
            .identity_now
            .insert(label(&labels, "instance"), identity_of(&labels));
    }
    for (labels, _) in samples(&identity_history) {
        observed
            .identity_history
            .entry(label(&labels, "instance"))
            .or_default()
            .insert(identity_of(&labels));
    }
    for (labels, _) in samples(&not_ready) {
        observed
            .not_ready
            .entry((label(&labels, "instance"), label(&labels, "group")))
            .or_default()
            .push(label(&labels, "target"));
    }
    for list in observed.not_ready.values_mut() {
        list.sort();
    }
    observed.alerts = parse_alerts(&alerts);
    Ok(observed)
}

fn label(labels: &BTreeMap<String, String>, name: &str) -> String {
    labels.get(name).cloned().unwrap_or_default()
}

fn identity_of(labels: &BTreeMap<String, String>) -> Identity {
    Identity {
        exporter_instance: label(labels, "exporter_instance"),
        region: labels.get("region").filter(|r| !r.is_empty()).cloned(),
    }
}

/// An instant query's vector: each sample's labels and value.
async fn query(client: &reqwest::Client, base: &Url, promql: &str) -> Result<Value, String> {
    api(client, base, "api/v1/query", &[("query", promql)]).await
}

/// GET `path` of the Prometheus HTTP API; its `data` when `status` is
/// `success`.
async fn api(
    client: &reqwest::Client,
    base: &Url,
    path: &str,
    params: &[(&str, &str)],
) -> Result<Value, String> {
    let mut url = base.clone();
    // The base may be a path prefix (`https://host/prometheus`).
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let mut url = url
        .join(path)
        .map_err(|e| format!("gives no URL for {path}: {e}"))?;
    url.query_pairs_mut().extend_pairs(params);
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot be reached: {}", without_url(&e)))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|_| format!("answered HTTP {status} without JSON"))?;
    if body["status"] != "success" {
        return Err(format!(
            "answered HTTP {status}: {}",
            body["error"].as_str().unwrap_or("not a success")
        ));
    }
    Ok(body["data"].clone())
}

/// The samples of an instant query's `data` (a vector).
fn samples(data: &Value) -> Vec<(BTreeMap<String, String>, f64)> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let labels = item["metric"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            let value = item["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((labels, value))
        })
        .collect()
}

/// The pending and firing alerts of `/api/v1/alerts`' `data`.
fn parse_alerts(data: &Value) -> Vec<ActiveAlert> {
    data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|alert| {
            let state = alert["state"].as_str()?;
            if state != "pending" && state != "firing" {
                return None;
            }
            Some(ActiveAlert {
                labels: alert["labels"]
                    .as_object()?
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect(),
                state: state.to_string(),
                summary: alert["annotations"]["summary"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The decision.

/// The reasons (none: GO) and every exporter Prometheus knows, with what
/// it shows of that exporter's verdict.
#[derive(Debug)]
pub struct Answer {
    pub reasons: Vec<ReasonJson>,
    pub exporters: Vec<ExporterJson>,
}

/// One exporter: every scrape address it has had, and who it is.
#[derive(Debug)]
struct Exporter {
    /// Prometheus' `instance` values (one, unless it moved).
    scrape_instances: BTreeSet<String>,
    identity: Option<Identity>,
    /// Known regions disagree (it was moved): unknown, so always asked.
    region_known: bool,
}

impl Exporter {
    fn json(&self, verdict: &str) -> ExporterJson {
        ExporterJson {
            instance: self.identity.as_ref().map(|i| i.exporter_instance.clone()),
            region: self
                .identity
                .as_ref()
                .and_then(|i| i.region.clone())
                .filter(|_| self.region_known),
            scrape_instance: Some(
                self.scrape_instances
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            verdict: Some(verdict.to_string()),
        }
    }

    fn in_scope(&self, gate: &PrometheusGate) -> bool {
        match self.identity.as_ref().and_then(|i| i.region.as_ref()) {
            _ if gate.regions.is_empty() => true,
            Some(region) if self.region_known => gate.regions.contains(region),
            // Unknown is never GO: an exporter of unknown region is asked.
            _ => true,
        }
    }
}

/// Groups the scrape targets into exporters by `exporter_instance` (an
/// exporter keeps its name when its address changes), or by address when
/// Prometheus never saw who it is.
fn exporters(observed: &Observed) -> Vec<Exporter> {
    let mut addresses: BTreeSet<&String> = observed.up.keys().collect();
    addresses.extend(observed.identity_now.keys());
    addresses.extend(observed.identity_history.keys());
    addresses.extend(observed.verdicts.keys().map(|(i, _)| i));
    addresses.extend(observed.history.iter().map(|(i, _)| i));
    // Who is at each address: what it says now, else what it said within
    // the last day (one name; its region only if that never changed).
    struct Seen {
        identity: Option<Identity>,
        current: bool,
        region_known: bool,
    }
    let seen = |address: &String| -> Seen {
        if let Some(now) = observed.identity_now.get(address) {
            return Seen {
                identity: Some(now.clone()),
                current: true,
                region_known: true,
            };
        }
        let history = observed.identity_history.get(address);
        let names: BTreeSet<&String> = history
            .into_iter()
            .flatten()
            .map(|i| &i.exporter_instance)
            .collect();
        let regions: BTreeSet<&Option<String>> =
            history.into_iter().flatten().map(|i| &i.region).collect();
        Seen {
            identity: (names.len() == 1)
                .then(|| history.and_then(|h| h.iter().next_back().cloned()))
                .flatten(),
            current: false,
            region_known: regions.len() == 1,
        }
    };
    let mut by_name: BTreeMap<String, Vec<(&String, Seen)>> = BTreeMap::new();
    for address in addresses {
        let seen = seen(address);
        let key = match &seen.identity {
            Some(identity) => format!("name:{}", identity.exporter_instance),
            None => format!("address:{address}"),
        };
        by_name.entry(key).or_default().push((address, seen));
    }
    by_name
        .into_values()
        .map(|addresses| {
            // What an address says now wins over what any said before; the
            // region is known only if every account of it agrees.
            let current: Vec<&Seen> = addresses
                .iter()
                .map(|(_, s)| s)
                .filter(|s| s.current)
                .collect();
            let accounts: Vec<&Seen> = if current.is_empty() {
                addresses.iter().map(|(_, s)| s).collect()
            } else {
                current
            };
            let regions: BTreeSet<&Option<String>> = accounts
                .iter()
                .filter_map(|s| s.identity.as_ref().map(|i| &i.region))
                .collect();
            Exporter {
                scrape_instances: addresses.iter().map(|(a, _)| (*a).clone()).collect(),
                identity: accounts.iter().find_map(|s| s.identity.clone()),
                region_known: regions.len() == 1 && accounts.iter().all(|s| s.region_known),
            }
        })
        .collect()
}

/// What one exporter shows for one group.
enum Shown {
    Go,
    NoGo,
    /// Down, stale or missing: the reason says which.
    Unknown(ReasonJson),
}

/// The gate, from one round's observations (pure: the unit tests drive it).
pub fn decide(
    observed: &Observed,
    group: Option<&str>,
    mode: Mode,
    gate: &PrometheusGate,
) -> Result<Answer, CheckError> {
    let family = verdict_family(mode);
    let per_target = target_family(mode);
    let known_groups: BTreeSet<&str> = observed
        .history
        .iter()
        .map(|(_, g)| g.as_str())
        .chain(observed.verdicts.keys().map(|(_, g)| g.as_str()))
        .collect();
    if let Some(g) = group {
        // Prometheus knows groups, but never this one: a typo, not an outage.
        if !known_groups.is_empty() && !known_groups.contains(g) {
            return Err(CheckError::UnknownGroup {
                group: g.to_string(),
                known: format!(
                    "{} (the groups of rpo_failover_ready in Prometheus over {HISTORY_WORDS})",
                    known_groups.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let all = exporters(observed);
    // A typo check: every region any exporter reported within the last day.
    let known_regions: BTreeSet<&String> = observed
        .identity_now
        .values()
        .chain(observed.identity_history.values().flatten())
        .filter_map(|i| i.region.as_ref())
        .collect();
    if !known_regions.is_empty() {
        if let Some(unknown) = gate.regions.iter().find(|r| !known_regions.contains(r)) {
            return Err(CheckError::UnknownRegion {
                region: unknown.clone(),
                known: known_regions
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let groups: Vec<&str> = match group {
        Some(g) => vec![g],
        None => known_groups.iter().copied().collect(),
    };

    let mut reasons = Vec::new();
    let mut listed = Vec::new();
    // Per group: did any exporter in scope publish a verdict for it?
    let mut measured_by_someone: BTreeSet<&str> = BTreeSet::new();
    for exporter in &all {
        if !exporter.in_scope(gate) {
            listed.push(exporter.json("excluded (--region)"));
            continue;
        }
        // Who it is, as reasons name it.
        let name = ExporterJson {
            verdict: None,
            ..exporter.json("")
        };
        let about = |code: ReasonCode, group: Option<&str>, message: String| ReasonJson {
            code: code.as_str().to_string(),
            group: group.map(str::to_string),
            target: None,
            exporter: Some(name.clone()),
            message,
        };
        let up: Vec<f64> = exporter
            .scrape_instances
            .iter()
            .filter_map(|a| observed.up.get(a).copied())
            .collect();
        let live: Vec<&String> = exporter
            .scrape_instances
            .iter()
            .filter(|a| observed.up.get(*a) == Some(&1.0))
            .collect();
        // Down: one reason for the exporter, whatever it measures.
        if live.is_empty() && up.contains(&0.0) {
            reasons.push(about(
                ReasonCode::ExporterDown,
                group,
                format!(
                    "{name} is down: Prometheus cannot scrape it (up == 0), so its verdict is unknown{}",
                    match (mode, gate.regions.is_empty()) {
                        // The bridge call's next step when a region is lost.
                        (Mode::Unplanned, true) => {
                            "; if its region is lost, ask the surviving region's exporters with --region"
                        }
                        _ => "",
                    }
                ),
            ));
            listed.push(exporter.json("unknown"));
            for g in &groups {
                if exporter_measured(observed, exporter, g) {
                    measured_by_someone.insert(g);
                }
            }
            continue;
        }
        let mut worst = "GO";
        for &g in &groups {
            if !exporter_measured(observed, exporter, g) {
                continue;
            }
            measured_by_someone.insert(g);
            let shown = shown_for(observed, &live, g, gate, family, &name, &about);
            match shown {
                Shown::Go => {}
                Shown::NoGo => {
                    worst = "NO-GO";
                    let targets: BTreeSet<&String> = live
                        .iter()
                        .filter_map(|a| observed.not_ready.get(&((*a).clone(), g.to_string())))
                        .flatten()
                        .collect();
                    if targets.is_empty() {
                        let ask = live
                            .first()
                            .map(|a| {
                                format!(
                                    "; its reasons: rpo-exporter check --from http://{a} --group {g}{}",
                                    if mode == Mode::Unplanned { " --mode unplanned" } else { "" }
                                )
                            })
                            .unwrap_or_default();
                        reasons.push(about(
                            ReasonCode::ExporterNoGo,
                            Some(g),
                            format!("{name} says group {g} is NO-GO ({family} is 0){ask}"),
                        ));
                    }
                    for target in targets {
                        let mut r = about(
                            ReasonCode::ExporterNoGo,
                            Some(g),
                            format!(
                                "{name} says group {g} is NO-GO: target {target} fails the gate ({per_target} is 0)"
                            ),
                        );
                        r.target = Some(target.clone());
                        reasons.push(r);
                    }
                }
                Shown::Unknown(reason) => {
                    if worst == "GO" {
                        worst = "unknown";
                    }
                    reasons.push(reason);
                }
            }
        }
        // An exporter in scope that measures none of the groups asked for
        // is listed, but says nothing about them.
        let shown = if groups
            .iter()
            .any(|g| exporter_measured(observed, exporter, g))
        {
            worst
        } else {
            "not measuring this group"
        };
        listed.push(exporter.json(shown));
    }
    for g in &groups {
        if !measured_by_someone.contains(g) {
            let scope = if gate.regions.is_empty() {
                String::new()
            } else {
                format!(" from an exporter in {}", gate.regions.join(" or "))
            };
            reasons.push(ReasonJson {
                group: Some(g.to_string()),
                ..reason(
                    ReasonCode::VerdictSeriesMissing,
                    format!(
                        "Prometheus has no {family}{} series{scope}: no exporter measures group {g}",
                        selector(Some(g))
                    ),
                )
            });
        }
    }
    if groups.is_empty() {
        reasons.push(reason(
            ReasonCode::VerdictSeriesMissing,
            format!(
                "Prometheus has no {family}{} series: no exporter measures any group",
                selector(None)
            ),
        ));
    }
    reasons.extend(alert_reasons(observed, &all, group, mode, gate));
    Ok(Answer {
        reasons,
        exporters: listed,
    })
}

/// Whether `exporter` publishes, or published within the last day, the
/// verdict series of `group`.
fn exporter_measured(observed: &Observed, exporter: &Exporter, group: &str) -> bool {
    exporter.scrape_instances.iter().any(|a| {
        let key = (a.clone(), group.to_string());
        observed.verdicts.contains_key(&key) || observed.history.contains(&key)
    })
}

/// What a live (or vanished) exporter, whose live scrape addresses are
/// `live`, shows for a group it measures.
fn shown_for(
    observed: &Observed,
    live: &[&String],
    group: &str,
    gate: &PrometheusGate,
    family: &str,
    name: &ExporterJson,
    about: &dyn Fn(ReasonCode, Option<&str>, String) -> ReasonJson,
) -> Shown {
    let bound = gate.max_sample_age;
    let samples: Vec<VerdictSample> = live
        .iter()
        .filter_map(|a| {
            observed
                .verdicts
                .get(&((*a).clone(), group.to_string()))
                .copied()
        })
        .collect();
    let fresh: Vec<f64> = samples
        .iter()
        .filter(|s| s.age.is_some_and(|age| age <= bound))
        .map(|s| s.value)
        .collect();
    if !fresh.is_empty() {
        // Several addresses of one exporter: the strictest wins.
        return if fresh.iter().all(|&v| v == 1.0) {
            Shown::Go
        } else {
            Shown::NoGo
        };
    }
    if let Some(oldest) = samples.iter().filter_map(|s| s.age).min() {
        return Shown::Unknown(about(
            ReasonCode::VerdictStale,
            Some(group),
            format!(
                "{name}: the newest {family} sample for group {group} is {} old, older than {} (--max-sample-age): Prometheus is not scraping it",
                human_duration(oldest),
                human_duration(bound)
            ),
        ));
    }
    let message = if live.is_empty() {
        format!(
            "{name} measured group {group} within {HISTORY_WORDS}, but Prometheus no longer scrapes it (it left the scrape targets)"
        )
    } else {
        format!(
            "{name} measured group {group} within {HISTORY_WORDS}, but publishes no {family} for it now (did the group leave its configuration{}?)",
            if family == FAILOVER_READY_UNPLANNED.name {
                ", or is it an exporter older than that series"
            } else {
                ""
            }
        )
    };
    Shown::Unknown(about(
        ReasonCode::VerdictSeriesMissing,
        Some(group),
        message,
    ))
}

/// The pending and firing `failover_gate="block"` alerts that concern the
/// group (or no group) and an exporter in scope (or none).
fn alert_reasons(
    observed: &Observed,
    all: &[Exporter],
    group: Option<&str>,
    mode: Mode,
    gate: &PrometheusGate,
) -> Vec<ReasonJson> {
    let mut reasons = Vec::new();
    for alert in &observed.alerts {
        let labels = &alert.labels;
        if labels.get("failover_gate").map(String::as_str) != Some("block") {
            continue;
        }
        if let (Some(g), Some(alert_group)) = (group, labels.get("group")) {
            if g != alert_group {
                continue;
            }
        }
        // Expected once the source region is gone (see the module doc).
        if mode == Mode::Unplanned
            && labels.get("failover_mode").map(String::as_str) == Some("planned")
        {
            continue;
        }
        let exporter = labels.get("instance").and_then(|address| {
            all.iter()
                .find(|e| e.scrape_instances.contains(address))
                .filter(|_| labels.get("job").is_none_or(|j| j == JOB))
        });
        if exporter.is_some_and(|e| !e.in_scope(gate)) {
            continue;
        }
        let name = labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("alert");
        let who = exporter.map(|e| ExporterJson {
            verdict: None,
            ..e.json("")
        });
        // The shipped rules name the exporter in their summaries; any other
        // alert gets it named here.
        let named = match (&who, &who.as_ref().and_then(|w| w.instance.clone())) {
            (Some(_), Some(instance)) if alert.summary.contains(instance.as_str()) => String::new(),
            (Some(who), _) => format!(" ({who})"),
            (None, _) => String::new(),
        };
        let (code, state) = if alert.state == "firing" {
            (ReasonCode::GateAlertFiring, "is firing")
        } else {
            (
                ReasonCode::GateAlertPending,
                "is pending (inside its for:, about to fire)",
            )
        };
        reasons.push(ReasonJson {
            code: code.as_str().to_string(),
            group: labels.get("group").cloned(),
            target: labels.get("target").cloned(),
            exporter: who,
            message: format!("{name} {state}{named}: {}", alert.summary),
        });
    }
    reasons.sort_by(|a, b| a.message.cmp(&b.message));
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, region: &str) -> Identity {
        Identity {
            exporter_instance: name.to_string(),
            region: Some(region.to_string()),
        }
    }

    fn fresh(value: f64) -> VerdictSample {
        VerdictSample {
            value,
            age: Some(Duration::from_secs(1)),
        }
    }

    fn key(instance: &str, group: &str) -> (String, String) {
        (instance.to_string(), group.to_string())
    }

    /// Two exporters (primary in eu-west-1 at p:9798, dr in eu-central-1
    /// at d:9798), both up and GO for group erp.
    fn two_go() -> Observed {
        let mut o = Observed::default();
        for (address, name, region) in [
            ("p:9798", "primary", "eu-west-1"),
            ("d:9798", "dr", "eu-central-1"),
        ] {
            o.up.insert(address.to_string(), 1.0);
            o.identity_now
                .insert(address.to_string(), identity(name, region));
            o.identity_history
                .entry(address.to_string())
                .or_default()
                .insert(identity(name, region));
            o.verdicts.insert(key(address, "erp"), fresh(1.0));
            o.history.insert(key(address, "erp"));
        }
        o
    }

    fn decided(o: &Observed, mode: Mode, gate: &PrometheusGate) -> Answer {
        decide(o, Some("erp"), mode, gate).unwrap()
    }

    fn codes(answer: &Answer) -> Vec<&str> {
        answer.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    fn messages(answer: &Answer) -> String {
        answer
            .reasons
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn verdicts(answer: &Answer) -> Vec<(Option<&str>, &str)> {
        answer
            .exporters
            .iter()
            .map(|e| (e.instance.as_deref(), e.verdict.as_deref().unwrap()))
            .collect()
    }

    #[test]
    fn both_exporters_go_is_go_and_lists_them() {
        let answer = decided(&two_go(), Mode::Planned, &PrometheusGate::default());
        assert!(answer.reasons.is_empty(), "{}", messages(&answer));
        assert_eq!(
            verdicts(&answer),
            [(Some("dr"), "GO"), (Some("primary"), "GO")]
        );
        assert_eq!(answer.exporters[0].region.as_deref(), Some("eu-central-1"));
        assert_eq!(
            answer.exporters[0].scrape_instance.as_deref(),
            Some("d:9798")
        );
    }

    #[test]
    fn one_exporter_at_zero_is_no_go_naming_it_and_its_targets() {
        let mut o = two_go();
        o.verdicts.insert(key("d:9798", "erp"), fresh(0.0));
        o.not_ready
            .insert(key("d:9798", "erp"), vec!["erp-db".to_string()]);
        let answer = decided(&o, Mode::Planned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["exporter_no_go"]);
        let r = &answer.reasons[0];
        assert_eq!(
            r.message,
            "exporter dr in eu-central-1 at d:9798 says group erp is NO-GO: target erp-db fails the gate (rpo_target_ready is 0)"
        );
        assert_eq!(r.target.as_deref(), Some("erp-db"));
        assert_eq!(r.group.as_deref(), Some("erp"));
        let who = r.exporter.as_ref().unwrap();
        assert_eq!(who.region.as_deref(), Some("eu-central-1"));
        assert_eq!(
            verdicts(&answer),
            [(Some("dr"), "NO-GO"), (Some("primary"), "GO")]
        );

        // Unplanned: the targets whose rpo_target_ready_unplanned is 0.
        let answer = decided(&o, Mode::Unplanned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["exporter_no_go"]);
        assert_eq!(
            answer.reasons[0].message,
            "exporter dr in eu-central-1 at d:9798 says group erp is NO-GO: target erp-db fails the gate (rpo_target_ready_unplanned is 0)"
        );
        assert_eq!(answer.reasons[0].target.as_deref(), Some("erp-db"));

        // Without target detail (an exporter older than the per-target
        // unplanned series), it says where to look.
        o.not_ready.clear();
        let answer = decided(&o, Mode::Unplanned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["exporter_no_go"]);
        assert_eq!(
            answer.reasons[0].message,
            "exporter dr in eu-central-1 at d:9798 says group erp is NO-GO (rpo_failover_ready_unplanned is 0); its reasons: rpo-exporter check --from http://d:9798 --group erp --mode unplanned"
        );
    }

    #[test]
    fn a_down_exporter_is_no_go_naming_it_and_region_scope_leaves_it_out() {
        let mut o = two_go();
        // The scrape fails: up 0, the verdict series stale-marked.
        o.up.insert("p:9798".to_string(), 0.0);
        o.verdicts.remove(&key("p:9798", "erp"));
        o.identity_now.remove("p:9798");
        let answer = decided(&o, Mode::Planned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["exporter_down"]);
        assert_eq!(
            answer.reasons[0].message,
            "exporter primary in eu-west-1 at p:9798 is down: Prometheus cannot scrape it (up == 0), so its verdict is unknown"
        );
        assert_eq!(
            verdicts(&answer),
            [(Some("dr"), "GO"), (Some("primary"), "unknown")]
        );

        // The primary region is lost: ask only the recovery region.
        let recovery = PrometheusGate {
            regions: vec!["eu-central-1".to_string()],
            ..PrometheusGate::default()
        };
        o.alerts.push(ActiveAlert {
            labels: [
                ("alertname", "RPOExporterDown"),
                ("failover_gate", "block"),
                ("job", "rpo-exporter"),
                ("instance", "p:9798"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            state: "firing".to_string(),
            summary: "rpo-exporter p:9798 is down".to_string(),
        });
        let answer = decided(&o, Mode::Unplanned, &recovery);
        assert!(answer.reasons.is_empty(), "{}", messages(&answer));
        assert_eq!(
            verdicts(&answer),
            [(Some("dr"), "GO"), (Some("primary"), "excluded (--region)")]
        );
        // Not scoped, the same alert blocks, naming the exporter.
        let answer = decided(&o, Mode::Unplanned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["exporter_down", "gate_alert_firing"]);
        assert!(
            answer.reasons[0].message.ends_with(
                "; if its region is lost, ask the surviving region's exporters with --region"
            ),
            "{}",
            messages(&answer)
        );
        assert_eq!(
            answer.reasons[1].message,
            "RPOExporterDown is firing (exporter primary in eu-west-1 at p:9798): rpo-exporter p:9798 is down"
        );
        // A region nobody runs in is a usage error, listing the known ones.
        let nowhere = PrometheusGate {
            regions: vec!["us-east-1".to_string()],
            ..PrometheusGate::default()
        };
        let err = decide(&o, Some("erp"), Mode::Planned, &nowhere).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown region `us-east-1`; the exporters Prometheus knows run in: eu-central-1, eu-west-1"
        );
    }

    #[test]
    fn stale_missing_and_vanished_verdicts_are_no_go() {
        let bound = PrometheusGate::default();
        // Prometheus still serves a 3-minute-old sample (no staleness marker).
        let mut o = two_go();
        o.verdicts.insert(
            key("d:9798", "erp"),
            VerdictSample {
                value: 1.0,
                age: Some(Duration::from_secs(180)),
            },
        );
        let answer = decided(&o, Mode::Planned, &bound);
        assert_eq!(codes(&answer), ["verdict_stale"]);
        assert_eq!(
            answer.reasons[0].message,
            "exporter dr in eu-central-1 at d:9798: the newest rpo_failover_ready sample for group erp is 3m old, older than 2m (--max-sample-age): Prometheus is not scraping it"
        );
        // A looser bound accepts it.
        let loose = PrometheusGate {
            max_sample_age: Duration::from_secs(300),
            ..PrometheusGate::default()
        };
        assert!(decided(&o, Mode::Planned, &loose).reasons.is_empty());

        // Up, but the group is gone from its verdicts.
        let mut o = two_go();
        o.verdicts.remove(&key("d:9798", "erp"));
        let answer = decided(&o, Mode::Planned, &bound);
        assert_eq!(codes(&answer), ["verdict_series_missing"]);
        assert!(
            answer.reasons[0].message.starts_with(
                "exporter dr in eu-central-1 at d:9798 measured group erp within the last day, but publishes no rpo_failover_ready for it now (did the group leave its configuration?)"
            ),
            "{}",
            messages(&answer)
        );

        // Gone from the scrape targets altogether (a pod not rescheduled).
        let mut o = two_go();
        o.verdicts.remove(&key("d:9798", "erp"));
        o.up.remove("d:9798");
        o.identity_now.remove("d:9798");
        let answer = decided(&o, Mode::Planned, &bound);
        assert_eq!(codes(&answer), ["verdict_series_missing"]);
        assert!(
            answer.reasons[0]
                .message
                .ends_with("erp within the last day, but Prometheus no longer scrapes it (it left the scrape targets)"),
            "{}",
            messages(&answer)
        );

        // An exporter older than rpo_failover_ready_unplanned is missing in
        // unplanned mode, not left out.
        let mut o = two_go();
        let answer = decided(&o, Mode::Unplanned, &bound);
        assert!(answer.reasons.is_empty(), "{}", messages(&answer));
        o.verdicts.remove(&key("d:9798", "erp"));
        let answer = decided(&o, Mode::Unplanned, &bound);
        assert_eq!(codes(&answer), ["verdict_series_missing"]);
        assert!(
            answer.reasons[0].message.ends_with(
                "but publishes no rpo_failover_ready_unplanned for it now (did the group leave its configuration, or is it an exporter older than that series?)"
            ),
            "{}",
            messages(&answer)
        );

        // ...but an exporter that moved (new address, same name) is fine.
        let mut o = two_go();
        o.verdicts.remove(&key("d:9798", "erp"));
        o.up.remove("d:9798");
        o.identity_now.remove("d:9798");
        o.up.insert("d2:9798".to_string(), 1.0);
        o.identity_now
            .insert("d2:9798".to_string(), identity("dr", "eu-central-1"));
        o.verdicts.insert(key("d2:9798", "erp"), fresh(1.0));
        let answer = decided(&o, Mode::Planned, &bound);
        assert!(answer.reasons.is_empty(), "{}", messages(&answer));
        assert_eq!(
            answer.exporters[0].scrape_instance.as_deref(),
            Some("d2:9798, d:9798")
        );
    }

    #[test]
    fn no_exporter_at_all_is_no_go_and_an_unknown_group_is_a_usage_error() {
        let answer = decide(
            &Observed::default(),
            Some("erp"),
            Mode::Planned,
            &PrometheusGate::default(),
        )
        .unwrap();
        assert_eq!(codes(&answer), ["verdict_series_missing"]);
        assert_eq!(
            answer.reasons[0].message,
            "Prometheus has no rpo_failover_ready{job=\"rpo-exporter\",group=\"erp\"} series: no exporter measures group erp"
        );
        let err = decide(
            &two_go(),
            Some("epr"),
            Mode::Planned,
            &PrometheusGate::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("unknown group `epr`; configured groups: erp (the groups of rpo_failover_ready in Prometheus"),
            "{err}"
        );
    }

    fn alert(name: &str, state: &str, extra: &[(&str, &str)]) -> ActiveAlert {
        let mut labels: BTreeMap<String, String> = [
            ("alertname", name),
            ("failover_gate", "block"),
            ("job", "rpo-exporter"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if name == "warn" {
            labels.insert("failover_gate".into(), "warn".into());
        }
        ActiveAlert {
            labels,
            state: state.to_string(),
            summary: format!("{name} summary (exporter dr in eu-central-1)"),
        }
    }

    #[test]
    fn pending_and_firing_block_alerts_of_the_group_are_no_go() {
        let mut o = two_go();
        o.alerts = vec![
            alert(
                "RPOBudgetExceeded",
                "pending",
                &[
                    ("group", "erp"),
                    ("target", "erp-db"),
                    ("instance", "d:9798"),
                    ("failover_mode", "planned"),
                ],
            ),
            alert(
                "RPOEvidenceStale",
                "firing",
                &[
                    ("group", "erp"),
                    ("target", "erp-files"),
                    ("instance", "d:9798"),
                ],
            ),
            // Another group's, and a warning: neither blocks erp.
            alert(
                "RPOEvidenceStale",
                "firing",
                &[("group", "crm"), ("instance", "d:9798")],
            ),
            alert("warn", "firing", &[("group", "erp")]),
        ];
        let answer = decided(&o, Mode::Planned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["gate_alert_pending", "gate_alert_firing"]);
        assert_eq!(
            answer.reasons[0].message,
            "RPOBudgetExceeded is pending (inside its for:, about to fire): RPOBudgetExceeded summary (exporter dr in eu-central-1)"
        );
        assert_eq!(answer.reasons[0].target.as_deref(), Some("erp-db"));
        assert_eq!(
            answer.reasons[0]
                .exporter
                .as_ref()
                .unwrap()
                .region
                .as_deref(),
            Some("eu-central-1")
        );
        // Unplanned: the planned-only alert does not block; the other does.
        let answer = decided(&o, Mode::Unplanned, &PrometheusGate::default());
        assert_eq!(codes(&answer), ["gate_alert_firing"]);
        assert!(answer.reasons[0]
            .message
            .starts_with("RPOEvidenceStale is firing: "));
    }

    #[test]
    fn an_exporter_of_unknown_region_is_always_asked() {
        let mut o = two_go();
        o.identity_now.remove("d:9798");
        o.identity_history.remove("d:9798");
        o.verdicts.insert(key("d:9798", "erp"), fresh(0.0));
        let west = PrometheusGate {
            regions: vec!["eu-west-1".to_string()],
            ..PrometheusGate::default()
        };
        let answer = decided(&o, Mode::Planned, &west);
        assert_eq!(codes(&answer), ["exporter_no_go"]);
        assert!(
            answer.reasons[0]
                .message
                .starts_with("exporter (unidentified) at d:9798 says group erp is NO-GO"),
            "{}",
            messages(&answer)
        );
    }

    #[test]
    fn a_dead_exporter_whose_region_changed_is_asked_whatever_the_region() {
        // dr moved from eu-west-1 to eu-central-1 today, then died: which
        // region it was in when it died is unknown, so --region cannot
        // leave it out.
        let mut o = two_go();
        o.up.insert("d:9798".to_string(), 0.0);
        o.verdicts.remove(&key("d:9798", "erp"));
        o.identity_now.remove("d:9798");
        o.identity_history
            .get_mut("d:9798")
            .unwrap()
            .insert(identity("dr", "eu-west-1"));
        let central = PrometheusGate {
            regions: vec!["eu-central-1".to_string()],
            ..PrometheusGate::default()
        };
        let answer = decided(&o, Mode::Planned, &central);
        assert_eq!(codes(&answer), ["exporter_down"]);
        assert!(
            answer.reasons[0]
                .message
                .starts_with("exporter dr (no region) at d:9798 is down"),
            "{}",
            messages(&answer)
        );
        assert_eq!(answer.reasons[0].exporter.as_ref().unwrap().region, None);
    }

    #[test]
    fn prometheus_answers_are_parsed() {
        let data: Value = serde_json::from_str(
            r#"{"resultType":"vector","result":[
                {"metric":{"instance":"d:9798","group":"erp","rpo_check":"value"},"value":[1700000000.1,"0"]},
                {"metric":{"instance":"d:9798","group":"erp","rpo_check":"age"},"value":[1700000000.1,"0.734"]}]}"#,
        )
        .unwrap();
        let s = samples(&data);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].0["rpo_check"], "age");
        assert_eq!(s[1].1, 0.734);
        let alerts: Value = serde_json::from_str(
            r#"{"alerts":[
                {"labels":{"alertname":"FailoverNotReady","group":"erp"},"annotations":{"summary":"Group erp is NO-GO"},"state":"pending","activeAt":"2024-01-01T00:00:00Z","value":"0e+00"},
                {"labels":{"alertname":"X"},"annotations":{},"state":"inactive"}]}"#,
        )
        .unwrap();
        let parsed = parse_alerts(&alerts);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].state, "pending");
        assert_eq!(parsed[0].summary, "Group erp is NO-GO");
        assert_eq!(quoted("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
