//! The README stays true to the code: its metrics tables name exactly the
//! metrics the code exports, and every TOML example in it validates.

use std::collections::BTreeSet;
use std::path::Path;

use rpo_lab::repo_root as repo;
use rpo_lab::support::{env_vars_named, fake_secret_for};

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

/// Metric names the code exports: the string literals of src/metrics.rs and
/// src/kinds/.
fn exported_by_code() -> BTreeSet<String> {
    let mut files = vec![repo().join("crates/rpo-exporter/src/metrics.rs")];
    let mut dirs = vec![repo().join("crates/rpo-exporter/src/kinds")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                files.push(path);
            }
        }
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for literal in text.split('"').skip(1).step_by(2) {
            if literal.starts_with("rpo_")
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(literal.to_string());
            }
        }
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

#[test]
fn readme_metrics_tables_match_the_code() {
    let code = exported_by_code();
    assert!(code.len() > 60, "{code:?}");
    let documented: BTreeSet<String> = metric_tokens(&readme_section("Metrics"))
        .into_iter()
        // Prose mentions of a prefix, e.g. "`rpo_aws_*` series".
        .filter(|n| !n.ends_with('_'))
        .collect();
    let undocumented: Vec<&String> = code.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in the README's metrics tables: {undocumented:?}"
    );
    let unknown: Vec<&String> = documented.difference(&code).collect();
    assert!(
        unknown.is_empty(),
        "in the README's metrics tables but exported nowhere: {unknown:?}"
    );
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
