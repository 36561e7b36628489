//! Files the tests write and the shipped files they read.

use std::path::{Path, PathBuf};

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The files of `dir` (not below it) ending in `.ext`, sorted; none if
/// `dir` does not exist.
pub fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && has_extension(p, ext))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The files at any depth below `dir` ending in `.ext`, sorted.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if has_extension(&path, ext) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(ext)
}

/// The base the shipped alerts' `runbook_url`s are built from:
/// `DEFAULT_RUNBOOK_BASE` of `scripts/gen-prometheusrule.sh`, its one home.
pub fn shipped_runbook_base() -> String {
    let script = crate::repo_root().join("scripts/gen-prometheusrule.sh");
    let text = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("read {}: {e}", script.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("DEFAULT_RUNBOOK_BASE="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("scripts/gen-prometheusrule.sh sets DEFAULT_RUNBOOK_BASE")
}

/// The `runbook_url` the shipped rules give `alert`.
pub fn shipped_runbook_url(alert: &str) -> String {
    format!("{}{alert}.md", shipped_runbook_base())
}
