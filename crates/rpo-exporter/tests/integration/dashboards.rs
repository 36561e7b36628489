//! The shipped Grafana dashboards: valid JSON with fixed uids and the
//! datasource/region/exporter/group variables, every query scoped to the
//! chosen exporters, stat panels that show the value now (never a reduction
//! over the range that keeps a dead exporter's GO green), queries on
//! catalogued families and their labels, and (called from the e2e test)
//! every panel's query answers with data on a live Prometheus scraping the
//! lab.

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
            ["datasource", "region", "instance", "group"]
                .iter()
                .all(|v| vars.contains(v)),
            "{}: {vars:?}",
            path.display()
        );
        for panel in d["panels"].as_array().unwrap() {
            let at = format!("{}: {}", path.display(), panel["title"]);
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{at}");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{at}");
            for target in targets {
                // One Prometheus scrapes an exporter per region: every
                // query is scoped to the exporters of the chosen regions.
                let expr = target["expr"].as_str().unwrap();
                assert!(expr.contains("instance=~\"$instance\""), "{at}: {expr}");
            }
            if matches!(panel["type"].as_str(), Some("stat" | "bargauge")) {
                // A value "now": `lastNotNull` over the range would show a
                // dead exporter's last GO for hours.
                assert!(
                    targets.iter().all(|t| t["instant"] == true),
                    "{at}: a stat must be an instant query"
                );
                assert_eq!(
                    panel["options"]["reduceOptions"]["calcs"],
                    serde_json::json!(["last"]),
                    "{at}"
                );
                assert!(
                    panel["fieldConfig"]["defaults"]["noValue"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("unknown")),
                    "{at}: no data must read unknown"
                );
            }
        }
        // The exporter variable lists every exporter of the chosen regions
        // seen in the last day (dead ones too), and All means exactly those.
        let instance = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "instance")
            .unwrap();
        assert!(instance["definition"].as_str().unwrap().contains(
            "last_over_time(rpo_exporter_info{job=\"rpo-exporter\",region=~\"$region\"}[1d])"
        ));
        assert!(instance.get("allValue").is_none(), "{}", path.display());
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
                    .replace("$target", ".*")
                    .replace("$instance", ".*")
                    .replace("$region", ".*");
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

/// The overview's verdict tile, as Grafana asks it (an instant query), on
/// the series of two exporters: the group is NO-GO when either says NO-GO,
/// or when either has stopped (its series stale-marked), never its last GO.
pub fn overview_verdict_query() -> String {
    let (_, overview) = dashboards()
        .into_iter()
        .find(|(p, _)| p.ends_with("rpo-overview.json"))
        .unwrap();
    let panel = overview["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Failover verdict per group")
        .unwrap()
        .clone();
    panel["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$instance", ".*")
        .replace("$group", ".*")
}
