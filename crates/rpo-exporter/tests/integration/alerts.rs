//! The shipped alert rules and dashboards: promtool accepts and passes them,
//! every alert carries its labels and a runbook that exists, and every
//! `rpo_*` metric they use is one the exporter really exports.

use std::collections::BTreeSet;

use rpo_lab::repo_root as repo;
use rpo_lab::support::files_in;

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
        let runbook = format!("docs/runbooks/{name}.md");
        assert!(
            body.contains(&format!("runbook_url: {runbook}")),
            "{name}: runbook_url must be {runbook}"
        );
        assert!(repo().join(&runbook).is_file(), "{runbook} does not exist");
        // Every alert is exercised by at least one promtool case.
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
    }
}

/// Every `rpo_*` metric name used in alerts/ and dashboards/.
pub fn metrics_used() -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for dir in ["alerts", "dashboards"] {
        for ext in ["yml", "json"] {
            for file in files_in(&repo().join(dir), ext) {
                let text = std::fs::read_to_string(&file).unwrap();
                let bytes = text.as_bytes();
                let mut i = 0;
                while let Some(pos) = text[i..].find("rpo_") {
                    let start = i + pos;
                    let preceded_by_word = start > 0
                        && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
                    let end = start
                        + text[start..]
                            .find(|c: char| {
                                !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                            })
                            .unwrap_or(text.len() - start);
                    if !preceded_by_word {
                        used.insert(text[start..end].to_string());
                    }
                    i = end;
                }
            }
        }
    }
    used
}

// That every metric in metrics_used() is exported is checked by the e2e test,
// on the full lab where every kind runs.
