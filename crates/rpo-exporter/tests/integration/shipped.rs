//! What ships is the product only: the `rpo-exporter` binary carries no lab
//! code, and its crate depends on nothing test-only (the crate boundary of
//! ARCHITECTURE.md, checked on the built artifact).

/// Strings only the lab (real servers for tests) contains.
const LAB_MARKERS: [&str; 7] = [
    "moto_server",
    "moto-venv",
    "pip install",
    "runuser",
    "pg_basebackup",
    "rabbitmq-server",
    "mariadb-install-db",
];

#[test]
fn the_shipped_binary_contains_no_lab_code() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_rpo-exporter")).unwrap();
    for marker in LAB_MARKERS {
        assert!(
            !binary.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "the rpo-exporter binary contains {marker:?}: lab code leaked into the product"
        );
    }
    // The check can fail: the lab binary, built from the same workspace,
    // does contain them.
    let lab = std::path::Path::new(env!("CARGO_BIN_EXE_rpo-exporter")).with_file_name("rpo-lab");
    if let Ok(lab) = std::fs::read(lab) {
        assert!(lab.windows(7).any(|w| w == b"runuser"));
    }
}

#[test]
fn the_product_crate_has_no_test_only_dependency() {
    let manifest: toml::Table =
        std::fs::read_to_string(rpo_lab::repo_root().join("crates/rpo-exporter/Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let deps = manifest["dependencies"].as_table().unwrap();
    for test_only in ["tempfile", "rpo-lab", "anyhow"] {
        assert!(
            !deps.contains_key(test_only),
            "{test_only} is a dependency of the shipped crate"
        );
    }
}
