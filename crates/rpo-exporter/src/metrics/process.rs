//! The standard `process_*` series, read from `/proc/self` at scrape time.
//!
//! Written here rather than taken from the `prometheus` crate's process
//! collector, which rounds `process_cpu_seconds_total` down to whole
//! seconds (an idle exporter then reads 0 for hours and the health
//! dashboard's CPU panel stays flat). The names, types and help texts are
//! the ones every Prometheus client library uses. Off Linux (no `/proc`),
//! the series are simply absent.

use std::fmt::Write as _;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`: the
/// kernel's `USER_HZ`, which is 100 on every Linux architecture this
/// exporter is built for (x86-64, arm64); reading it needs `sysconf`, an
/// unsafe FFI call this crate forbids.
const USER_HZ: f64 = 100.0;

/// What `/proc/self/stat` says, the fields the series need.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStat {
    pub cpu_seconds: f64,
    pub threads: u64,
    /// Since boot, in seconds.
    pub start_after_boot_seconds: f64,
    pub virtual_memory_bytes: u64,
    pub resident_pages: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcessStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; field n is at n - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcessStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        threads: field(20)?,
        start_after_boot_seconds: field(22)? as f64 / USER_HZ,
        virtual_memory_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The soft limit of open files from `/proc/self/limits`.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Appends the `process_*` series, as far as `/proc` tells them.
pub fn render(out: &mut String) {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
    let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(name);
            out.push(' ');
            super::exposition::push_value(out, value);
            out.push('\n');
        }
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stat.as_ref().map(|s| s.cpu_seconds),
    );
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count());
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open_fds.map(|n| n as f64),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        read("/proc/self/limits")
            .as_deref()
            .and_then(parse_max_fds)
            .map(|n| n as f64),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.as_ref().map(|s| s.virtual_memory_bytes as f64),
    );
    // The page size is 4 KiB on the architectures this is built for (see
    // USER_HZ for why it is not asked of the kernel).
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stat.as_ref().map(|s| (s.resident_pages * 4096) as f64),
    );
    let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stat.as_ref()
            .zip(boot)
            .map(|(s, boot)| boot as f64 + s.start_after_boot_seconds),
    );
    family(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        stat.as_ref().map(|s| s.threads as f64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a running rpo-exporter (its name given a space and a
    // parenthesis to prove the fields are counted from the last `)`).
    const STAT: &str = "48213 (rpo (exp) orter) S 1 48213 48213 0 -1 4194560 2714 0 0 0 137 42 0 0 20 0 3 0 912345 184799232 5915 18446744073709551615 1 1 0 0 0 0 0 4096 17990 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";

    #[test]
    fn cpu_seconds_keep_their_fraction() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.cpu_seconds, 1.79);
        assert_eq!(stat.threads, 3);
        assert_eq!(stat.start_after_boot_seconds, 9123.45);
        assert_eq!(stat.virtual_memory_bytes, 184_799_232);
        assert_eq!(stat.resident_pages, 5915);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764590400\nprocesses 9\n"),
            Some(1_764_590_400)
        );
    }

    #[test]
    fn this_process_reads_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(
                out.contains(&format!("\n{name} ")),
                "{name} missing:\n{out}"
            );
        }
    }
}
