//! The HTML board at `/`: each group's verdict and each target's recovery
//! point, exposure against budget, evidence age and reasons. Self-contained
//! (no external assets), so it works when Grafana is down; it reloads itself.
//! Each reason shows its words; its code is in `data-code` (and the tooltip).

use std::fmt::Write as _;

use crate::readiness::{human_duration, Reason, Verdict};

pub fn render(verdict: &Verdict, telemetry_path: &str) -> String {
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>rpo-exporter {instance}{region_title}: {overall}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}}
h1{{font-size:1.3em}} h2{{font-size:1.1em;margin-top:1.5em}}
.go{{color:#fff;background:#1a7f37;padding:.1em .5em;border-radius:4px;white-space:nowrap}}
.nogo{{color:#fff;background:#cf222e;padding:.1em .5em;border-radius:4px;white-space:nowrap}}
td.rp{{white-space:nowrap}}
table{{border-collapse:collapse;margin-top:.5em}} td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
th{{background:#f3f3f3}} tr.bad td{{background:#fff0f0}} .num{{text-align:right;font-variant-numeric:tabular-nums}}
small{{color:#666}} .note{{color:#444;font-size:.92em;margin-top:.2em}}
</style></head><body>
<h1>Failover readiness: <span id="verdict" class="{overall_class}">{overall}</span> <small>({mode} mode, evaluated {at}, <span id="exporter" data-instance="{instance}" data-region="{region}">exporter {exporter}</span>)</small></h1>
"#,
        instance = escape(&verdict.exporter.instance),
        region = escape(verdict.exporter.region.as_deref().unwrap_or("")),
        region_title = verdict
            .exporter
            .region
            .as_deref()
            .map(|r| format!(" ({})", escape(r)))
            .unwrap_or_default(),
        exporter = escape(&verdict.exporter.to_string()),
        overall = word(verdict.ready),
        overall_class = class(verdict.ready),
        mode = verdict.mode,
        at = humantime::format_rfc3339_seconds(verdict.evaluated_at),
    );
    for group in &verdict.groups {
        let _ = writeln!(
            html,
            r#"<h2 data-group="{name}">Group {name}: <span class="{cls} group-verdict">{word}</span> <small>budget {budget}{skew}</small></h2>"#,
            name = escape(&group.group),
            cls = class(group.ready),
            word = word(group.ready),
            budget = human_duration(group.rpo_budget),
            skew = group
                .recovery_point_skew
                .map(|s| format!(", recovery-point skew {}", human_duration(s)))
                .unwrap_or_default(),
        );
        html.push_str("<table><tr><th>target</th><th>kind</th><th>verdict</th><th>recovery point (UTC)</th><th>exposure</th><th>budget</th><th>evidence age</th><th>reasons</th></tr>\n");
        for t in &group.targets {
            let _ = writeln!(
                html,
                r#"<tr class="{row}" data-target="{name}"><td>{name}</td><td>{kind}</td><td><span class="{cls}">{word}</span></td><td class="rp">{rp}</td><td class="num">{exposure}</td><td class="num">{budget}</td><td class="num">{age}</td><td>{reasons}{notes}</td></tr>"#,
                row = if t.ready { "ok" } else { "bad" },
                name = escape(t.target.as_str()),
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
                age = t
                    .evidence_age
                    .map(human_duration)
                    .unwrap_or_else(|| "none".to_string()),
                reasons = reasons_html(&t.reasons),
                notes = notes_html(&t.notes),
            );
        }
        html.push_str("</table>\n");
    }
    let _ = writeln!(
        html,
        r#"<p><small>JSON: <a href="/failover-readiness">/failover-readiness</a> · metrics: <a href="{path}">{path}</a></small></p></body></html>"#,
        path = escape(telemetry_path)
    );
    html
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
            render(&verdict, "/metrics")
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
