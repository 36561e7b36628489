//! The shipped alert rules and dashboards: promtool accepts and passes them,
//! every alert carries its labels and a runbook that exists, and every
//! `rpo_*` metric they use (with the labels they select on) is a family of
//! the metric catalogue.

use std::collections::BTreeSet;

use rpo_exporter::metrics::catalogue;
use rpo_lab::repo_root as repo;
use rpo_lab::support::{files_in, shipped_runbook_url};

fn promtool(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool runs (scripts/install-deps.sh installs the prometheus package)");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let rules = files_in(&repo().join("alerts"), "yml");
    assert!(!rules.is_empty());
    for file in &rules {
        let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
    let tests = files_in(&repo().join("alerts/tests"), "yml");
    assert!(!tests.is_empty());
    for file in &tests {
        let (ok, out) = promtool(&["test", "rules", file.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
}

/// `scripts/gen-prometheusrule.sh --runbook-base URL --out DIR` points every
/// alert and its promtool tests at the user's copy of the runbooks, and
/// what it writes still passes promtool; the repository is left as it was.
#[test]
fn the_generator_points_every_runbook_url_at_a_base_of_the_users() {
    let before = std::fs::read_to_string(repo().join("alerts/rpo-exporter.rules.yml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (base, expected) in [
        (
            "https://git.corp.test/sre/rpo/blob/v1/docs/runbooks",
            "https://git.corp.test/sre/rpo/blob/v1/docs/runbooks/RPOBudgetExceeded.md",
        ),
        (
            "https://wiki.corp.test/rpo/{alert}",
            "https://wiki.corp.test/rpo/RPOBudgetExceeded",
        ),
    ] {
        let output = std::process::Command::new("bash")
            .arg(repo().join("scripts/gen-prometheusrule.sh"))
            .args(["--runbook-base", base, "--out"])
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut urls = 0;
        for file in files_in(&out.path().join("alerts"), "yml")
            .into_iter()
            .chain(files_in(&out.path().join("alerts/tests"), "yml"))
            .chain([out.path().join("prometheusrule.yaml")])
        {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("runbook_url:"))
            {
                let url = line.trim_start().trim_start_matches("runbook_url: ");
                let prefix = expected
                    .trim_end_matches("RPOBudgetExceeded.md")
                    .trim_end_matches("RPOBudgetExceeded");
                assert!(url.starts_with(prefix), "{}: {line}", file.display());
                urls += 1;
            }
        }
        assert!(urls >= 20, "{urls} runbook_url lines rewritten");
        let rules =
            std::fs::read_to_string(out.path().join("alerts/rpo-exporter.rules.yml")).unwrap();
        assert!(
            rules.contains(&format!("runbook_url: {expected}\n")),
            "{rules}"
        );
        for file in files_in(&out.path().join("alerts/tests"), "yml") {
            let (ok, text) = promtool(&["test", "rules", file.to_str().unwrap()]);
            assert!(ok, "{}: {text}", file.display());
        }
    }
    // A relative base is refused: the links must work from Alertmanager.
    let refused = std::process::Command::new("bash")
        .arg(repo().join("scripts/gen-prometheusrule.sh"))
        .args(["--runbook-base", "docs/runbooks", "--stdout"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("absolute"));
    let after = std::fs::read_to_string(repo().join("alerts/rpo-exporter.rules.yml")).unwrap();
    assert!(before == after, "--out must not touch alerts/");
}

/// Each `- alert:` block of every rule file, as (name, block text).
fn alert_blocks() -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    for file in files_in(&repo().join("alerts"), "yml") {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if let Some(name) = trimmed.strip_prefix("- alert: ") {
                blocks.extend(current.take());
                current = Some((name.trim().to_string(), String::new()));
            } else if trimmed.starts_with("- name: ") || trimmed.starts_with("- record: ") {
                blocks.extend(current.take());
            }
            if let Some((_, body)) = &mut current {
                body.push_str(line);
                body.push('\n');
            }
        }
        blocks.extend(current);
    }
    blocks
}

#[test]
fn every_alert_has_gate_severity_and_an_existing_runbook() {
    let blocks = alert_blocks();
    assert!(blocks.len() >= 10, "{} alerts", blocks.len());
    let tests: String = files_in(&repo().join("alerts/tests"), "yml")
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for (name, body) in &blocks {
        assert!(
            body.contains("failover_gate: block") || body.contains("failover_gate: warn"),
            "{name} lacks failover_gate"
        );
        assert!(body.contains("severity: "), "{name} lacks severity");
        assert!(body.contains("summary: "), "{name} lacks summary");
        assert!(body.contains("description: "), "{name} lacks description");
        // An absolute URL (Alertmanager and Grafana link it as is) of the
        // runbook that exists in this repository.
        let url = shipped_runbook_url(name);
        assert!(
            url.starts_with("https://") || url.starts_with("http://"),
            "{url}"
        );
        assert!(
            body.contains(&format!("runbook_url: {url}\n")),
            "{name}: runbook_url must be {url}"
        );
        let runbook = format!("docs/runbooks/{name}.md");
        assert!(repo().join(&runbook).is_file(), "{runbook} does not exist");
        // Every alert is exercised by at least one promtool case.
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
    }
}

/// One use of an `rpo_*` metric in a rule, test or dashboard file.
#[derive(Debug)]
pub struct MetricUse {
    pub file: String,
    pub metric: String,
    /// The labels of the selector right after the name (`{group=~"…"}`),
    /// in order; empty without a selector.
    pub labels: Vec<String>,
    /// The line it is on.
    pub line: String,
}

/// Every use of an `rpo_*` metric in the `ext` files of `dir` (a JSON
/// file's `\"` read as `"`).
pub fn metric_uses(dir: &str, ext: &str) -> Vec<MetricUse> {
    let mut uses = Vec::new();
    for file in files_in(&repo().join(dir), ext) {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("\\\"", "\"");
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(pos) = text[i..].find("rpo_") {
            let start = i + pos;
            let preceded_by_word =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = start
                + text[start..]
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(text.len() - start);
            if !preceded_by_word {
                uses.push(MetricUse {
                    file: file
                        .strip_prefix(repo())
                        .unwrap_or(&file)
                        .display()
                        .to_string(),
                    metric: text[start..end].to_string(),
                    labels: selector_labels(&text[end..]),
                    line: text[..start]
                        .rsplit('\n')
                        .next()
                        .map(|before| format!("{before}{}", text[start..].lines().next().unwrap()))
                        .unwrap(),
                });
            }
            i = end;
        }
    }
    uses
}

/// The label names of a selector at the start of `rest` (`{a="x",b=~"y"}`);
/// quoted values may hold anything, braces of a template included.
fn selector_labels(rest: &str) -> Vec<String> {
    let Some(body) = rest.strip_prefix('{') else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    let mut name = String::new();
    let mut quoted = false;
    for c in body.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '}' => break,
            '=' | '!' | '~' => {
                if !name.trim().is_empty() {
                    labels.push(name.trim().to_string());
                }
                name.clear();
            }
            ',' => name.clear(),
            c => name.push(c),
        }
    }
    labels
}

/// Every `rpo_*` metric name used in alerts/ and dashboards/.
pub fn metrics_used() -> BTreeSet<String> {
    [("alerts", "yml"), ("dashboards", "json")]
        .into_iter()
        .flat_map(|(dir, ext)| metric_uses(dir, ext))
        .map(|u| u.metric)
        .collect()
}

/// Labels Prometheus adds to every scraped series.
const SCRAPE_LABELS: [&str; 2] = ["job", "instance"];

/// Every use names a catalogued family, and selects only on its labels.
pub fn assert_uses_are_catalogued(uses: &[MetricUse]) {
    assert!(!uses.is_empty());
    let mut problems = Vec::new();
    for u in uses {
        let Some(family) = catalogue::find(&u.metric) else {
            problems.push(format!(
                "{}: {} is not an exported family",
                u.file, u.metric
            ));
            continue;
        };
        for label in &u.labels {
            if !family.all_labels().any(|l| l == label) && !SCRAPE_LABELS.contains(&label.as_str())
            {
                problems.push(format!(
                    "{}: {} has no label `{label}` (it has {:?})",
                    u.file,
                    u.metric,
                    family.all_labels().collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn alert_rules_use_catalogued_metrics_and_labels() {
    assert_uses_are_catalogued(&metric_uses("alerts", "yml"));
}

/// The promtool tests feed series shaped as the exporter exports them:
/// every label of the family, and no other (besides Prometheus's own).
#[test]
fn promtool_test_series_have_the_exported_labels() {
    let uses = metric_uses("alerts/tests", "yml");
    assert_uses_are_catalogued(&uses);
    let series: Vec<&MetricUse> = uses
        .iter()
        .filter(|u| u.line.trim_start().starts_with("- series:"))
        .collect();
    assert!(series.len() > 10, "{series:?}");
    for u in series {
        let family = catalogue::find(&u.metric).unwrap();
        let own: Vec<&str> = u
            .labels
            .iter()
            .map(String::as_str)
            .filter(|l| !SCRAPE_LABELS.contains(l))
            .collect();
        assert_eq!(own, family.all_labels().collect::<Vec<_>>(), "{u:?}");
    }
}

// The catalogue says what the exporter can export; the e2e test also checks,
// on the full lab where every kind runs, that every metric in metrics_used()
// is really exported and that the live exposition matches the catalogue.
