//! The deploy kit: the PrometheusRule never drifts from alerts/, and every
//! shipped config (examples and the Kubernetes region configs) validates.

use std::path::{Path, PathBuf};

use rpo_lab::repo_root as repo;
use rpo_lab::support::{files_in, files_under};

#[test]
fn prometheusrule_is_generated_from_alerts() {
    let output = std::process::Command::new("bash")
        .arg(repo().join("scripts/gen-prometheusrule.sh"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let committed =
        std::fs::read_to_string(repo().join("deploy/kubernetes/base/prometheusrule.yaml")).unwrap();
    assert!(
        generated == committed,
        "deploy/kubernetes/base/prometheusrule.yaml is out of date: run scripts/gen-prometheusrule.sh"
    );
    // Every alert of alerts/ is in it.
    for path in files_in(&repo().join("alerts"), "yml") {
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(name) = line.trim().strip_prefix("- alert: ") {
                assert!(
                    committed.contains(&format!("- alert: {name}")),
                    "{name} missing"
                );
            }
        }
    }
}

/// Every config file shipped under deploy/.
pub fn shipped_configs() -> Vec<PathBuf> {
    files_under(&repo().join("deploy"), "toml")
}

#[test]
fn kit_has_the_pieces_the_readme_names() {
    for piece in [
        "deploy/kubernetes/base/deployment.yaml",
        "deploy/kubernetes/base/service.yaml",
        "deploy/kubernetes/base/servicemonitor.yaml",
        "deploy/kubernetes/base/prometheusrule.yaml",
        "deploy/kubernetes/regions/primary/config.toml",
        "deploy/kubernetes/regions/recovery/config.toml",
        "deploy/systemd/rpo-exporter.service",
        "deploy/sql/postgres-grants.sql",
        "deploy/sql/mysql-grants.sql",
        "deploy/Dockerfile",
    ] {
        assert!(
            Path::new(&repo().join(piece)).is_file(),
            "{piece} is missing"
        );
    }
    assert!(shipped_configs().len() >= 3);
}

#[test]
fn the_systemd_unit_raises_the_open_file_limit_and_reloads_by_sighup() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/rpo-exporter.service")).unwrap();
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE")
        .parse()
        .unwrap();
    // Twice the default --web.max-connections, with room for the targets.
    assert!(
        limit >= 2 * rpo_exporter::http::DEFAULT_MAX_CONNECTIONS as u64 + 1024,
        "{limit}"
    );
    // 10,000 targets (3 descriptors each at most: a connection per side
    // and the heartbeat writer's) beside HTTP and a margin (README, "Open
    // files").
    assert!(
        limit >= 3 * 10_000 + 2 * rpo_exporter::http::DEFAULT_MAX_CONNECTIONS as u64 + 64,
        "{limit}"
    );
    // The exporter raises a lower soft limit with setrlimit, which the
    // unit's filter (@resources) denies: a denied call must fail, not kill.
    assert!(unit.contains("SystemCallErrorNumber=EPERM"), "{unit}");
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{unit}"
    );
    // The Deployment's flags are the binary's.
    let deployment =
        std::fs::read_to_string(repo().join("deploy/kubernetes/base/deployment.yaml")).unwrap();
    assert!(
        deployment.contains("- --web.max-connections="),
        "{deployment}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rpo-exporter"))
        .args(["--web.max-connections=512", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
}
