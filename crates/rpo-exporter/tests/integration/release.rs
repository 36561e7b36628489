//! The release tarball (`scripts/release.sh`): what it holds, checked by
//! packaging a stand-in binary (no release build in the test suite); the
//! real binary too, when a release build is already there.

use std::path::Path;
use std::process::Command;

use rpo_lab::repo_root as repo;

/// The entries of a `.tar.gz`.
fn entries(tarball: &Path) -> Vec<String> {
    let output = Command::new("tar")
        .arg("-tzf")
        .arg(tarball)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn package(binary: &Path, out: &Path) -> std::path::PathBuf {
    let output = Command::new("bash")
        .arg(repo().join("scripts/release.sh"))
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    std::path::PathBuf::from(printed.lines().last().unwrap().trim())
}

#[test]
fn the_release_lists_the_binary_and_the_kit() {
    let output = Command::new("bash")
        .arg(repo().join("scripts/release.sh"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed,
        [
            "target/release/rpo-exporter",
            "alerts",
            "dashboards",
            "deploy",
            "docs",
            "README.md",
            "LICENSE",
            "CHANGELOG.md"
        ]
    );
    for path in &listed[1..] {
        assert!(repo().join(path).exists(), "{path} is listed but missing");
    }
    // The build it runs is the locked release build of the one binary.
    let script = std::fs::read_to_string(repo().join("scripts/release.sh")).unwrap();
    assert!(script.contains("cargo build --release --locked -p rpo-exporter --bin"));
}

#[test]
fn the_tarball_holds_the_binary_alerts_dashboards_deploy_docs_and_the_notices() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("stand-in");
    std::fs::write(&stand_in, "#!/bin/sh\necho rpo-exporter stand-in\n").unwrap();
    let tarball = package(&stand_in, &dir.path().join("dist"));
    let version = env!("CARGO_PKG_VERSION");
    let name = tarball.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(&format!("rpo-exporter-{version}-")) && name.ends_with(".tar.gz"),
        "{name}"
    );
    let root = name.trim_end_matches(".tar.gz");
    let all = entries(&tarball);
    for expected in [
        "rpo-exporter".to_string(),
        "README.md".to_string(),
        "LICENSE".to_string(),
        "CHANGELOG.md".to_string(),
        "alerts/rpo-exporter.rules.yml".to_string(),
        "dashboards/rpo-overview.json".to_string(),
        "deploy/iam/rpo-exporter-policy.json".to_string(),
        "deploy/aws/failover-gate.template.json".to_string(),
        "deploy/aws/promotion-gate/promotion_gate.py".to_string(),
        "deploy/kubernetes/base/deployment.yaml".to_string(),
        "deploy/systemd/rpo-exporter.service".to_string(),
        "docs/kinds/aws.md".to_string(),
        "docs/runbooks/FailoverNotReady.md".to_string(),
    ] {
        let path = format!("{root}/{expected}");
        assert!(all.contains(&path), "{path} is not in {name}: {all:#?}");
    }
    // Everything under one directory; nothing built or cached.
    for entry in &all {
        assert!(
            entry.starts_with(&format!("{root}/")) || entry == &format!("{root}/"),
            "{entry}"
        );
        assert!(
            !entry.contains("/target/")
                && !entry.contains("__pycache__")
                && !entry.contains("/crates/"),
            "{entry}"
        );
    }
    // Every file of the shipped directories is in it.
    for dir_name in ["alerts", "dashboards", "deploy", "docs"] {
        let listed = Command::new("git")
            .args(["ls-files", dir_name])
            .current_dir(repo())
            .output()
            .unwrap();
        for file in String::from_utf8(listed.stdout).unwrap().lines() {
            assert!(all.contains(&format!("{root}/{file}")), "{file} missing");
        }
    }
    // The checksum file names the tarball.
    let sum = std::fs::read_to_string(format!("{}.sha256", tarball.display())).unwrap();
    assert!(sum.trim_end().ends_with(name), "{sum}");

    // The binary in it is executable, and is the one given.
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap()
        .success());
    let binary = unpacked.join(root).join("rpo-exporter");
    let run = Command::new(&binary).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "rpo-exporter stand-in\n"
    );
}

/// When a release build is already there (scripts/release.sh, or
/// `cargo build --release`), its tarball's binary runs and says its
/// version. Not built here: a release build takes minutes.
#[test]
fn a_release_binary_when_built_runs_from_the_tarball() {
    let built = repo().join("target/release/rpo-exporter");
    if !built.is_file() {
        eprintln!("no release build at {}: skipped", built.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tarball = package(&built, dir.path());
    let root = tarball
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".tar.gz")
        .to_string();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap()
        .success());
    let run = Command::new(dir.path().join(root).join("rpo-exporter"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
