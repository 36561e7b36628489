//! The HTML board at `/`: which exporter answers (instance and region),
//! each group's verdict and each target's recovery point, exposure against
//! budget (now, and as a small chart of the last 30 minutes), evidence age
//! and reasons. Each reason shows its words; its code is in `data-code` (and
//! the tooltip).
//!
//! Self-contained (no external assets, no CDN), so it works offline and when
//! Grafana is down. It never reloads itself: a small script fetches the
//! verdict JSON (`failover-readiness`) every 5 seconds and updates the page
//! in place, so the scroll position stays and screen readers hear only the
//! verdict change (`aria-live`); without the script the page is a complete
//! snapshot. The history is kept in memory by the daemon ([`History`],
//! sampled every [`HISTORY_EVERY`]) and extended by the script as it fetches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::readiness::{human_duration, Reason, Verdict};

/// How far back the board's chart goes.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(30 * 60);
/// How often the daemon records each target's exposure for the chart.
pub const HISTORY_EVERY: Duration = Duration::from_secs(10);

/// One point of a target's chart: when, the exposure then (`None`: unknown),
/// and the budget then, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_unix: f64,
    pub exposure_seconds: Option<f64>,
    pub budget_seconds: f64,
}

/// Each target's exposure against its budget over the last
/// [`HISTORY_WINDOW`], in memory (about 180 points per target).
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<HashMap<String, VecDeque<Point>>>,
}

/// A [`Sample`] as kept: 24 bytes instead of 32, an unknown exposure as NaN
/// (a duration in seconds never is). At 10,000 targets the window is 1.8
/// million points.
#[derive(Debug, Clone, Copy)]
struct Point {
    at_unix: f64,
    exposure_seconds: f64,
    budget_seconds: f64,
}

impl Point {
    fn of(sample: Sample) -> Point {
        Point {
            at_unix: sample.at_unix,
            exposure_seconds: sample.exposure_seconds.unwrap_or(f64::NAN),
            budget_seconds: sample.budget_seconds,
        }
    }

    fn sample(self) -> Sample {
        Sample {
            at_unix: self.at_unix,
            exposure_seconds: (!self.exposure_seconds.is_nan()).then_some(self.exposure_seconds),
            budget_seconds: self.budget_seconds,
        }
    }
}

/// The points a target keeps when recorded every [`HISTORY_EVERY`]: the
/// window's, and the one at its start. A target's points grow by doubling
/// up to this many places, no further (to 256, doubling took 40 % more).
const WINDOW_POINTS: usize = (HISTORY_WINDOW.as_secs() / HISTORY_EVERY.as_secs()) as usize + 1;

impl History {
    /// Records every target of `verdict` at its evaluation time, forgets
    /// points older than the window and targets the verdict no longer has.
    pub fn record(&self, verdict: &Verdict) {
        let now = unix(verdict.evaluated_at);
        let oldest = now - HISTORY_WINDOW.as_secs_f64();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashSet::new();
        for target in verdict.groups.iter().flat_map(|g| &g.targets) {
            let name = target.target.as_str();
            if !samples.contains_key(name) {
                samples.insert(name.to_string(), VecDeque::new());
            }
            let points = samples.get_mut(name).expect("inserted above");
            if points.len() == points.capacity() && points.len() < WINDOW_POINTS {
                let places = (points.len() * 2).clamp(4, WINDOW_POINTS);
                points.reserve_exact(places - points.len());
            }
            points.push_back(Point::of(Sample {
                at_unix: now,
                exposure_seconds: target.exposure.map(|d| d.as_secs_f64()),
                budget_seconds: target.budget.as_secs_f64(),
            }));
            while points.front().is_some_and(|p| p.at_unix < oldest) {
                points.pop_front();
            }
            seen.insert(name);
        }
        samples.retain(|name, _| seen.contains(name.as_str()));
    }

    /// The points of `target`, oldest first.
    pub fn of(&self, target: &str) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .map(|p| p.iter().map(|point| point.sample()).collect())
            .unwrap_or_default()
    }
}

/// Where the board's links and its script point.
pub struct Links<'a> {
    /// `--web.route-prefix` without its trailing slash (empty for none).
    pub prefix: &'a str,
    pub telemetry_path: &'a str,
}

pub fn render(verdict: &Verdict, links: &Links, history: &History) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let region = verdict.exporter.region.as_deref();
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rpo-exporter {instance}{region_title}: {overall}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}}
h1{{font-size:1.3em;margin:0}} h2{{font-size:1.1em;margin-top:1.5em}}
header p{{margin:.3em 0 0}} header strong{{font-size:1.05em}}
.go{{color:#fff;background:#1a7f37;padding:.1em .5em;border-radius:4px;white-space:nowrap}}
.nogo{{color:#fff;background:#cf222e;padding:.1em .5em;border-radius:4px;white-space:nowrap}}
td.rp{{white-space:nowrap}}
table{{border-collapse:collapse;margin-top:.5em}} td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
th[scope=row]{{white-space:nowrap}} th{{background:#f3f3f3}} tr.bad td{{background:#fff0f0}} .num{{text-align:right;font-variant-numeric:tabular-nums}}
small,.muted{{color:#555}} .note{{color:#444;font-size:.92em;margin-top:.2em}}
td.chart{{padding:.1em .3em}} svg.chart{{display:block}}
.sr-only{{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}}
footer{{margin-top:1.5em}}
</style></head><body>
<header>
<h1>Failover readiness: <span id="verdict" class="{overall_class}" role="status" aria-live="polite" aria-atomic="true">{overall}</span></h1>
<p>Answered by <span id="exporter" data-instance="{instance}" data-region="{region}">exporter {exporter}</span> <span class="muted">· {mode} mode · evaluated <time id="evaluated" datetime="{at}">{at}</time> · <span id="refreshed">updates every 5s</span></span></p>
</header>
<main id="board" data-mode="{mode}" data-json="{prefix}/failover-readiness?mode={mode}">
"#,
        instance = escape(&verdict.exporter.instance),
        region = escape(region.unwrap_or("")),
        region_title = region
            .map(|r| format!(" ({})", escape(r)))
            .unwrap_or_default(),
        exporter = escape(&verdict.exporter.to_string()),
        overall = word(verdict.ready),
        overall_class = class(verdict.ready),
        mode = verdict.mode,
        at = humantime::format_rfc3339_seconds(verdict.evaluated_at),
        prefix = escape(links.prefix),
    );
    let mut points = serde_json::Map::new();
    for group in &verdict.groups {
        let _ = writeln!(
            html,
            r#"<section aria-labelledby="group-{name}"><h2 id="group-{name}" data-group="{name}">Group {name}: <span class="{cls} group-verdict">{word}</span> <small>budget {budget}{skew}</small></h2>"#,
            name = escape(&group.group),
            cls = class(group.ready),
            word = word(group.ready),
            budget = human_duration(group.rpo_budget),
            skew = group
                .recovery_point_skew
                .map(|s| format!(", recovery-point skew {}", human_duration(s)))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            html,
            r#"<table><caption class="sr-only">Targets of group {name}</caption><thead><tr><th scope="col">target</th><th scope="col">kind</th><th scope="col">verdict</th><th scope="col">recovery point (UTC)</th><th scope="col">exposure</th><th scope="col">budget</th><th scope="col">last 30 min</th><th scope="col">evidence age</th><th scope="col">reasons</th></tr></thead><tbody>"#,
            name = escape(&group.group),
        );
        for t in &group.targets {
            let name = t.target.to_string();
            let samples = history.of(&name);
            let _ = writeln!(
                html,
                r#"<tr class="{row}" data-target="{name}"><th scope="row">{name}</th><td>{kind}</td><td class="verdict"><span class="{cls}">{word}</span></td><td class="rp">{rp}</td><td class="num exposure">{exposure}</td><td class="num budget">{budget}</td><td class="chart">{chart}</td><td class="num age">{age}</td><td class="reasons">{reasons}{notes}</td></tr>"#,
                row = if t.ready { "ok" } else { "bad" },
                name = escape(&name),
                kind = t.kind,
                cls = class(t.ready),
                word = word(t.ready),
                rp = t
                    .recovery_point
                    .map(|rp| humantime::format_rfc3339_millis(rp).to_string())
                    .unwrap_or_else(|| "unknown".to_string()),
                exposure = t
                    .exposure
                    .map(human_duration)
                    .unwrap_or_else(|| "unknown".to_string()),
                budget = human_duration(t.budget),
                chart = chart_svg(&samples, unix(verdict.evaluated_at)),
                age = t
                    .evidence_age
                    .map(human_duration)
                    .unwrap_or_else(|| "none".to_string()),
                reasons = reasons_html(&t.reasons),
                notes = notes_html(&t.notes),
            );
            points.insert(
                name,
                serde_json::Value::Array(
                    samples
                        .iter()
                        .map(|p| {
                            serde_json::json!([p.at_unix, p.exposure_seconds, p.budget_seconds])
                        })
                        .collect(),
                ),
            );
        }
        html.push_str("</tbody></table></section>\n");
    }
    let _ = writeln!(
        html,
        r#"</main>
<footer><p><small>JSON: <a href="{prefix}/failover-readiness">{prefix}/failover-readiness</a> · metrics: <a href="{prefix}{path}">{prefix}{path}</a> · the chart: exposure (line) against the budget (dashed), red above it, gaps where it was unknown</small></p></footer>
<script type="application/json" id="history">{history}</script>
<script>{script}</script>
</body></html>"#,
        prefix = escape(links.prefix),
        path = escape(links.telemetry_path),
        // `</` never appears in JSON produced here but is escaped anyway, so
        // a target name cannot end the script element.
        history = serde_json::Value::Object(points)
            .to_string()
            .replace("</", "<\\/"),
        script = SCRIPT,
    );
    html
}

/// The chart's size in CSS pixels.
const CHART_WIDTH: f64 = 160.0;
const CHART_HEIGHT: f64 = 32.0;

/// A small inline SVG of exposure (line) against budget (dashed) over the
/// last [`HISTORY_WINDOW`] ending at `now`: the vertical scale runs from 0
/// to the larger of twice the budget and the highest exposure seen (capped
/// at ten budgets), so "above budget" is always visible. The same drawing
/// is done by the page's script (`draw`) on every refresh.
fn chart_svg(samples: &[Sample], now: f64) -> String {
    let window = HISTORY_WINDOW.as_secs_f64();
    let budget = samples.last().map(|s| s.budget_seconds).unwrap_or(0.0);
    let top = samples
        .iter()
        .filter_map(|s| s.exposure_seconds)
        .fold(budget * 2.0, f64::max)
        .min(budget * 10.0)
        .max(1.0);
    let x = |t: f64| ((t - (now - window)) / window * CHART_WIDTH).clamp(0.0, CHART_WIDTH);
    let y = |v: f64| CHART_HEIGHT - (v.min(top) / top * (CHART_HEIGHT - 2.0)) - 1.0;
    let mut paths = String::new();
    let mut over = false;
    let mut pen_down = false;
    for s in samples {
        match s.exposure_seconds {
            Some(e) => {
                over |= e > s.budget_seconds;
                // A new stretch starts with a short stroke, so a lone
                // point is seen too.
                let _ = write!(
                    paths,
                    "{}{:.1},{:.1}{}",
                    if pen_down { " L" } else { " M" },
                    x(s.at_unix),
                    y(e),
                    if pen_down { "" } else { " h1" }
                );
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    let last = samples
        .last()
        .map(|s| {
            s.exposure_seconds
                .map(|e| format!("now {}", human_duration(Duration::from_secs_f64(e))))
                .unwrap_or_else(|| "now unknown".to_string())
        })
        .unwrap_or_else(|| "no history yet".to_string());
    format!(
        r##"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="exposure against budget over the last 30 minutes: {label}{over_label}"><rect width="{w}" height="{h}" fill="#fafafa"/><line x1="0" x2="{w}" y1="{by:.1}" y2="{by:.1}" stroke="#888" stroke-dasharray="3 2"/><path d="{paths}" fill="none" stroke="{stroke}" stroke-width="1.5"/></svg>"##,
        w = CHART_WIDTH,
        h = CHART_HEIGHT,
        by = y(budget),
        paths = paths.trim_start(),
        stroke = if over { "#cf222e" } else { "#1a7f37" },
        label = last,
        over_label = if over { ", above budget at times" } else { "" },
    )
}

/// Refreshes the page from the verdict JSON every 5 s, in place.
const SCRIPT: &str = r##"
(function () {
  "use strict";
  var WINDOW = 1800, W = 160, H = 32;
  var main = document.getElementById("board");
  var history = JSON.parse(document.getElementById("history").textContent || "{}");
  function human(s) {
    if (s === null || s === undefined) return "unknown";
    function pair(a, au, b, bu) { return b === 0 ? a + au : a + au + " " + b + bu; }
    if (s < 1) return Math.floor(s * 1000) + "ms";
    if (s < 10) { var t = Math.round(s * 10) / 10; return (t % 1 === 0 ? t.toFixed(0) : t.toFixed(1)) + "s"; }
    if (s < 60) return Math.round(s) + "s";
    if (s < 3600) { var r = Math.round(s); return pair(Math.floor(r / 60), "m", r % 60, "s"); }
    if (s < 86400) { var m = Math.round(s / 60); return pair(Math.floor(m / 60), "h", m % 60, "m"); }
    var h = Math.round(s / 3600); return pair(Math.floor(h / 24), "d", h % 24, "h");
  }
  function word(ready) { return ready ? "GO" : "NO-GO"; }
  function cls(ready) { return ready ? "go" : "nogo"; }
  function draw(svg, points, now) {
    var budget = points.length ? points[points.length - 1][2] : 0, top = budget * 2;
    points.forEach(function (p) { if (p[1] !== null && p[1] > top) top = p[1]; });
    top = Math.max(Math.min(top, budget * 10), 1);
    function x(t) { return Math.min(Math.max((t - (now - WINDOW)) / WINDOW * W, 0), W); }
    function y(v) { return H - (Math.min(v, top) / top * (H - 2)) - 1; }
    var d = "", down = false, over = false;
    points.forEach(function (p) {
      if (p[1] === null) { down = false; return; }
      over = over || p[1] > p[2];
      d += (down ? " L" : " M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1) + (down ? "" : " h1");
      down = true;
    });
    var line = svg.querySelector("line"), path = svg.querySelector("path");
    line.setAttribute("y1", y(budget).toFixed(1)); line.setAttribute("y2", y(budget).toFixed(1));
    path.setAttribute("d", d.trim());
    path.setAttribute("stroke", over ? "#cf222e" : "#1a7f37");
    var last = points.length ? points[points.length - 1][1] : null;
    svg.setAttribute("aria-label", "exposure against budget over the last 30 minutes: " +
      (points.length ? "now " + human(last) : "no history yet") + (over ? ", above budget at times" : ""));
  }
  function reasons(cell, target) {
    while (cell.firstChild) cell.removeChild(cell.firstChild);
    (target.reason_details || []).forEach(function (r, i) {
      if (i > 0) cell.appendChild(document.createTextNode("; "));
      var span = document.createElement("span");
      span.className = "reason"; span.setAttribute("data-code", r.code); span.title = r.code;
      span.textContent = r.message; cell.appendChild(span);
    });
    (target.notes || []).forEach(function (n) {
      var div = document.createElement("div"); div.className = "note"; div.textContent = n; cell.appendChild(div);
    });
  }
  function same(json) {
    var names = [];
    json.groups.forEach(function (g) { g.targets.forEach(function (t) { names.push(g.group + "/" + t.target); }); });
    var rows = main.querySelectorAll("tr[data-target]"), shown = [];
    rows.forEach(function (tr) { shown.push(tr.closest("section").querySelector("h2").getAttribute("data-group") + "/" + tr.getAttribute("data-target")); });
    return names.join("\n") === shown.join("\n");
  }
  function apply(json) {
    var verdict = document.getElementById("verdict");
    if (verdict.textContent !== json.verdict) verdict.textContent = json.verdict;
    verdict.className = cls(json.ready);
    document.title = document.title.replace(/: (NO-GO|GO)$/, ": " + json.verdict);
    var at = document.getElementById("evaluated");
    at.textContent = json.evaluated_at.replace(/\.\d+Z$/, "Z"); at.setAttribute("datetime", at.textContent);
    var now = json.evaluated_at_unix;
    json.groups.forEach(function (g) {
      var h2 = main.querySelector('h2[data-group="' + CSS.escape(g.group) + '"]');
      var gv = h2.querySelector(".group-verdict");
      gv.textContent = word(g.ready); gv.className = cls(g.ready) + " group-verdict";
      var section = h2.closest("section");
      g.targets.forEach(function (t) {
        var tr = section.querySelector('tr[data-target="' + CSS.escape(t.target) + '"]');
        tr.className = t.ready ? "ok" : "bad";
        var v = tr.querySelector("td.verdict span"); v.textContent = word(t.ready); v.className = cls(t.ready);
        tr.querySelector("td.rp").textContent = t.recovery_point ? t.recovery_point : "unknown";
        tr.querySelector("td.exposure").textContent = human(t.exposure_seconds);
        tr.querySelector("td.budget").textContent = human(t.budget_seconds);
        tr.querySelector("td.age").textContent = t.evidence_age_seconds === null ? "none" : human(t.evidence_age_seconds);
        reasons(tr.querySelector("td.reasons"), t);
        var points = history[t.target] || (history[t.target] = []);
        points.push([now, t.exposure_seconds === undefined ? null : t.exposure_seconds, t.budget_seconds]);
        while (points.length && points[0][0] < now - WINDOW) points.shift();
        draw(tr.querySelector("svg.chart"), points, now);
      });
    });
  }
  function refresh() {
    fetch(main.getAttribute("data-json"), { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (json) {
        if (!json.groups) throw new Error(json.error || "no verdict");
        if (!same(json)) {
          // Targets were added or removed (a reload): take the new page's
          // tables, still without reloading the page.
          return fetch(location.href, { cache: "no-store", credentials: "same-origin" })
            .then(function (r) { return r.text(); })
            .then(function (text) {
              var page = new DOMParser().parseFromString(text, "text/html");
              main.innerHTML = page.getElementById("board").innerHTML;
              history = JSON.parse(page.getElementById("history").textContent || "{}");
              apply(json);
            });
        }
        apply(json);
      })
      .then(function () { document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString(); })
      .catch(function (e) { document.getElementById("refreshed").textContent = "cannot reach the exporter (" + e.message + "); showing the last answer"; });
  }
  setInterval(refresh, 5000);
})();
"##;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The reasons as the other outputs word them ("a; b"), each in a span that
/// carries its code.
fn reasons_html(reasons: &[Reason]) -> String {
    let mut html = String::new();
    for (i, reason) in reasons.iter().enumerate() {
        if i > 0 {
            html.push_str("; ");
        }
        let _ = write!(
            html,
            r#"<span class="reason" data-code="{code}" title="{code}">{message}</span>"#,
            code = reason.code,
            message = escape(&reason.message),
        );
    }
    html
}

/// Promotions and the direction of replication, under the reasons.
fn notes_html(notes: &[String]) -> String {
    notes
        .iter()
        .map(|note| format!(r#"<div class="note">{}</div>"#, escape(note)))
        .collect()
}

fn word(ready: bool) -> &'static str {
    if ready {
        "GO"
    } else {
        "NO-GO"
    }
}

fn class(ready: bool) -> &'static str {
    if ready {
        "go"
    } else {
        "nogo"
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::ReasonCode;

    #[test]
    fn reasons_keep_their_words_and_carry_their_codes() {
        let reasons = [
            Reason::new(
                ReasonCode::ReplicaUnreachable,
                "replica unreachable (connect: <refused>)",
            ),
            Reason::new(ReasonCode::RecoveryPointUnknown, "recovery point unknown"),
        ];
        assert_eq!(
            reasons_html(&reasons),
            "<span class=\"reason\" data-code=\"replica_unreachable\" title=\"replica_unreachable\">replica unreachable (connect: &lt;refused&gt;)</span>; \
             <span class=\"reason\" data-code=\"recovery_point_unknown\" title=\"recovery_point_unknown\">recovery point unknown</span>"
        );
        assert_eq!(reasons_html(&[]), "");
    }

    /// The chart's points come back as recorded (an unknown exposure as
    /// `None`), the window keeps its 181 points, and a target no longer
    /// configured is forgotten.
    #[test]
    fn history_keeps_the_window_and_forgets_removed_targets() {
        use crate::probe::{LinkState, Measurement};
        use crate::readiness::Mode;
        use crate::store::{Store, TargetId};
        use std::time::{Duration, SystemTime};
        let config = |names: &[&str]| {
            let mut toml = String::from("[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n");
            for name in names {
                toml.push_str(&format!(
                    "[[postgres]]\nname = \"{name}\"\ngroup = \"erp\"\n\
                     primary_url = \"postgres://m@127.0.0.1:1/x\"\n\
                     replica_url = \"postgres://m@127.0.0.1:2/x\"\n"
                ));
            }
            crate::config::Config::from_toml(&toml, std::path::Path::new("t.toml")).unwrap()
        };
        let both = config(&["polled", "never"]);
        let store = Store::new(both.targets.iter().map(TargetId::of));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut m = Measurement::new(start);
        m.link = LinkState::Healthy;
        m.source_reachable = Some(true);
        m.replica_reachable = Some(true);
        m.recovery_point = Some(start - Duration::from_secs(2));
        store.record_poll(&TargetId::new("polled"), start, start, Ok(m));
        let history = History::default();
        let mut verdict =
            crate::readiness::evaluate(&both, &store.snapshot(), Mode::Planned, start, None);
        for k in 0..200u32 {
            verdict.evaluated_at = start + HISTORY_EVERY * k;
            history.record(&verdict);
        }
        let last = unix(start + HISTORY_EVERY * 199);
        let polled = history.of("polled");
        assert_eq!(polled.len(), WINDOW_POINTS);
        assert_eq!(polled[0].at_unix, last - HISTORY_WINDOW.as_secs_f64());
        assert_eq!(polled.last().unwrap().at_unix, last);
        assert_eq!(polled[0].exposure_seconds, Some(2.0));
        assert_eq!(polled[0].budget_seconds, 60.0);
        let never = history.of("never");
        assert_eq!(never.len(), WINDOW_POINTS);
        assert!(never.iter().all(|p| p.exposure_seconds.is_none()));

        let one = config(&["polled"]);
        history.record(&crate::readiness::evaluate(
            &one,
            &store.snapshot(),
            Mode::Planned,
            start + HISTORY_EVERY * 200,
            None,
        ));
        assert!(history.of("never").is_empty());
        assert_eq!(history.of("polled").len(), WINDOW_POINTS);
    }

    #[test]
    fn the_header_names_the_exporter_and_its_region() {
        let config = |exporter: &str| {
            crate::config::Config::from_toml(
                &format!(
                    "[exporter]\n{exporter}\n[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n"
                ),
                std::path::Path::new("t.toml"),
            )
            .unwrap()
        };
        let html = |config: &crate::config::Config| {
            let snapshot = crate::store::Store::new([]).snapshot();
            let verdict = crate::readiness::evaluate(
                config,
                &snapshot,
                crate::readiness::Mode::Planned,
                std::time::SystemTime::now(),
                None,
            );
            render(
                &verdict,
                &Links {
                    prefix: "",
                    telemetry_path: "/metrics",
                },
                &History::default(),
            )
        };
        let dr = html(&config("instance = \"dr\"\nregion = \"eu-central-1\""));
        assert!(
            dr.contains("<title>rpo-exporter dr (eu-central-1): NO-GO</title>"),
            "{dr}"
        );
        assert!(
            dr.contains(r#"<span id="exporter" data-instance="dr" data-region="eu-central-1">exporter dr in eu-central-1</span>"#),
            "{dr}"
        );
        let unset = html(&config("instance = \"dr\""));
        assert!(
            unset.contains("<title>rpo-exporter dr: NO-GO</title>"),
            "{unset}"
        );
        assert!(
            unset.contains(r#"data-region="">exporter dr (no region)</span>"#),
            "{unset}"
        );
    }
}
