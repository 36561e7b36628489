//! The shipped Grafana dashboards: valid JSON with fixed uids and the
//! datasource/group/target variables, queries on catalogued families and
//! their labels, and (called from the e2e test) every panel's query answers
//! with data on a live Prometheus scraping the lab.

use std::path::PathBuf;

use rpo_lab::support::{files_in, prometheus_query};

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    files_in(&rpo_lab::repo_root().join("dashboards"), "json")
        .into_iter()
        .map(|p| {
            let json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, json)
        })
        .collect()
}

#[test]
fn dashboard_queries_use_catalogued_metrics_and_labels() {
    crate::alerts::assert_uses_are_catalogued(&crate::alerts::metric_uses("dashboards", "json"));
}

#[test]
fn dashboards_have_fixed_uids_and_variables() {
    let all = dashboards();
    assert!(all.len() >= 3);
    let mut uids = std::collections::BTreeSet::new();
    for (path, d) in &all {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no uid", path.display()));
        assert!(uids.insert(uid.to_string()), "uid {uid} used twice");
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            vars.contains(&"datasource") && vars.contains(&"group"),
            "{}: {vars:?}",
            path.display()
        );
        for panel in d["panels"].as_array().unwrap() {
            assert_eq!(
                panel["datasource"]["uid"],
                "${datasource}",
                "{}: {}",
                path.display(),
                panel["title"]
            );
            assert!(!panel["targets"].as_array().unwrap().is_empty());
        }
    }
}

/// The panel queries with Grafana's variables replaced for a live query.
fn panel_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for (path, d) in dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$group", ".*")
                    .replace("$target", ".*");
                queries.push((
                    format!("{name} / {}", panel["title"].as_str().unwrap()),
                    expr,
                ));
            }
        }
    }
    queries
}

pub async fn assert_every_panel_has_data(prometheus: &str) {
    let mut problems = Vec::new();
    for (panel, expr) in panel_queries() {
        let body = prometheus_query(prometheus, &expr).await;
        if body["status"] != "success" {
            problems.push(format!("{panel}: query error {} for {expr}", body["error"]));
        } else if body["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            problems.push(format!("{panel}: no data for {expr}"));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard panels failing on the live Prometheus:\n{}",
        problems.join("\n")
    );
}
