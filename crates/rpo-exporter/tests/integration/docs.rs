//! The README stays true to the code: its metrics tables name exactly the
//! families of the metric catalogue, with their types, labels and kinds,
//! and every TOML example in it validates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rpo_lab::repo_root as repo;
use rpo_lab::support::{env_vars_named, fake_secret_for};

use rpo_exporter::metric_def::{MetricDef, Scope};
use rpo_exporter::metrics::catalogue;

/// Every `rpo_*` token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find("rpo_") {
        let before = &text[..text.len() - rest.len() + pos];
        let tail = &rest[pos..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn readme_section(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no ## {heading}"));
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map(|e| e + 3).unwrap_or(body.len());
    body[..end].to_string()
}

/// One family as a README metrics table documents it.
#[derive(Debug)]
struct Documented {
    metric_type: String,
    /// Labels written in braces after the name, beyond `group`, `target`, `kind`.
    labels: Vec<String>,
    /// The `kinds` column, where the table has one.
    kinds: Option<BTreeSet<String>>,
}

/// The rows of the metrics tables: `| `name{labels}`, `name2` | type | [kinds |] meaning |`.
fn documented_families(section: &str) -> BTreeMap<String, Documented> {
    let mut documented = BTreeMap::new();
    let mut has_kinds_column = false;
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells[0] == "metric" {
            has_kinds_column = cells.get(2) == Some(&"kinds");
            continue;
        }
        if !cells[0].contains("rpo_") {
            continue;
        }
        for spelled in split_names(cells[0]) {
            let (name, labels) = match spelled.split_once('{') {
                Some((name, labels)) => (
                    name,
                    labels
                        .trim_end_matches('}')
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !["group", "target", "kind"].contains(l))
                        .map(str::to_string)
                        .collect(),
                ),
                None => (spelled.as_str(), Vec::new()),
            };
            let kinds = has_kinds_column
                .then(|| cells[2].split(',').map(|k| k.trim().to_string()).collect());
            let row = Documented {
                metric_type: cells[1].to_string(),
                labels,
                kinds,
            };
            assert!(
                documented.insert(name.to_string(), row).is_none(),
                "{name} is documented twice"
            );
        }
    }
    documented
}

/// `` `a{x,y}`, `b` `` into `a{x,y}` and `b`.
fn split_names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The labels a README row must show: the family's own, beyond `group`,
/// `target`, `kind`.
fn own_labels(family: &MetricDef) -> Vec<String> {
    family
        .all_labels()
        .filter(|l| !["group", "target", "kind"].contains(l))
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_metrics_tables_match_the_catalogue() {
    let section = readme_section("Metrics");
    let documented = documented_families(&section);
    let mut problems = Vec::new();
    for family in catalogue::all() {
        let Some(row) = documented.get(family.name) else {
            problems.push(format!(
                "{}: exported but not in the README's metrics tables",
                family.name
            ));
            continue;
        };
        if row.metric_type != family.metric_type.as_str() {
            problems.push(format!(
                "{}: the README says {}, the catalogue {}",
                family.name,
                row.metric_type,
                family.metric_type.as_str()
            ));
        }
        if row.labels != own_labels(family) {
            problems.push(format!(
                "{}: the README shows labels {:?}, the catalogue has {:?}",
                family.name,
                row.labels,
                own_labels(family)
            ));
        }
        let publishing: BTreeSet<String> = catalogue::kinds_publishing(family)
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        if let Some(kinds) = row.kinds.as_ref().filter(|_| !publishing.is_empty()) {
            if *kinds != publishing {
                problems.push(format!(
                    "{}: the README says kinds {kinds:?}, the code publishes it for {publishing:?}",
                    family.name
                ));
            }
        }
        if family.scope == Scope::Exporter && !family.labels.is_empty() && row.labels.is_empty() {
            problems.push(format!("{}: show its labels", family.name));
        }
    }
    for name in documented.keys() {
        if catalogue::find(name).is_none() {
            problems.push(format!(
                "{name}: in the README's metrics tables but not in the catalogue"
            ));
        }
    }
    // Prose and meaning cells name real families too (a prefix such as
    // "`rpo_aws_*` series" ends in `_`).
    for name in metric_tokens(&section) {
        if !name.ends_with('_') && catalogue::find(&name).is_none() {
            problems.push(format!(
                "{name}: mentioned in ## Metrics but not in the catalogue"
            ));
        }
    }
    assert!(documented.len() > 90, "{documented:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_toml_examples_validate() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 2);
    for (i, block) in blocks.iter().enumerate() {
        let mut text = block.to_string();
        if !text.contains("[[group]]") {
            text.insert_str(0, "[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n");
        }
        // The *_env variables the example names, set to well-formed values.
        for var in env_vars_named(block) {
            std::env::set_var(&var, fake_secret_for(&var));
        }
        // Files the example points at must exist for validation: swap in one that does.
        let ca = repo().join("Cargo.toml");
        let text = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("tls_ca_file") {
                    format!("tls_ca_file = \"{}\"", ca.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(e) = rpo_exporter::config::Config::from_toml(&text, Path::new("README.md")) {
            panic!("README toml block {i} does not validate: {e}\n{text}");
        }
    }
}

#[test]
fn readme_reason_code_table_lists_exactly_the_codes() {
    use rpo_exporter::readiness::ReasonCode;
    let section = readme_section("NO-GO reason codes");
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(code, _)| code))
        .collect();
    let code: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        documented, code,
        "the README's NO-GO reason codes table, in ReasonCode::ALL order"
    );
}
