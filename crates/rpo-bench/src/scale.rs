//! `--scale`: the real `rpo-exporter` binary watching N real Redis pair
//! targets that all name one lab Redis pair (with the same URLs, so they
//! share one kept connection to each side), measured while it polls:
//!
//! - start-up: spawn to `/-/ready` (every target polled once; the first
//!   polls are spread over one poll interval), and the open descriptors;
//! - `/metrics`, `/failover-readiness` and `/` latency: sequential GETs over
//!   one keep-alive connection, timed until the body is read;
//! - the polling cadence: `/metrics` read every third of the poll interval;
//!   for each target and each pair of consecutive successful polls, the
//!   start of a poll is its last success minus its duration, and the jitter
//!   is how far the distance between two starts is from the interval;
//! - RSS (steady, and per target), threads, open descriptors;
//! - SIGTERM to exit.
//!
//! Prints Markdown. Timings are measured here, never asserted in tests.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rpo_lab::redis::RedisPair;
use rpo_lab::{self as lab};

use crate::support::{spawn_exporter, stop_with_sigterm};
use crate::{load_average, machine, mib, ms, proc_sample, size, stats, Stats};

/// What `--scale` measures at one size.
pub struct ScaleResult {
    targets: usize,
    ready_after: Duration,
    fds_at_ready: usize,
    endpoints: Vec<(String, usize, Stats)>,
    jitter: Option<Stats>,
    jitter_samples: usize,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: usize,
    cpu_percent: f64,
    stop: Result<Duration, String>,
}

/// The open descriptors of `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn run(
    exporter: &Path,
    sizes: &[usize],
    requests: usize,
    seconds: u64,
    interval: Duration,
) -> Result<(), String> {
    let load_before = load_average();
    eprintln!("rpo-bench: starting a Redis primary and replica...");
    let pair = RedisPair::start().map_err(|e| e.to_string())?;
    pair.wait_for_link_up(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    // Targets share their connections now, but another build
    // (`--exporter`) may connect once per target and side: raise Redis's
    // client cap (its default is 10,000) as far as its descriptors allow.
    for set in [
        pair.primary_command(&["CONFIG", "SET", "maxclients", "19500"]),
        pair.replica_command(&["CONFIG", "SET", "maxclients", "19500"]),
    ] {
        if let Err(e) = set {
            eprintln!("rpo-bench: CONFIG SET maxclients: {e} (continuing)");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut results = Vec::new();
    for &n in sizes {
        eprintln!("rpo-bench: {n} Redis pair targets...");
        results.push(runtime.block_on(one(exporter, &pair, n, requests, seconds, interval))?);
    }

    println!(
        "### {} Redis pair targets on one exporter\n",
        sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "The `rpo-exporter` binary watching N `redis` targets that all name one lab Redis pair \
         (the same URLs: one connection to each side, shared), `poll_interval = \"{}\"`, `timeout = \"2s\"`. \
         Latency: {requests} sequential GETs of `/metrics` (50 of `/failover-readiness` and `/`) \
         over one keep-alive connection while it polls. Cadence: `/metrics` read every third of \
         the interval for {seconds} s; a poll's start is its last success minus its duration.\n",
        rpo_exporter::human::human_duration(interval)
    );
    println!("| targets | ready after | endpoint | body | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---|---:|---:|---:|---:|");
    for r in &results {
        for (endpoint, bytes, s) in &r.endpoints {
            println!(
                "| {} | {:.1} s | `{}` | {} | {} | {} | {} |",
                r.targets,
                r.ready_after.as_secs_f64(),
                endpoint,
                size(*bytes),
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            );
        }
    }
    println!();
    println!("| targets | poll start jitter p50 / p99 / max | RSS steady (peak) | RSS per target | CPU | threads | open fds (at ready) | SIGTERM to exit |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let jitter = r.jitter.as_ref().map_or("no samples".to_string(), |j| {
            format!(
                "{} / {} / {} ms ({} polls; {:.1} % of the interval at p99)",
                ms(j.p50),
                ms(j.p99),
                ms(j.max),
                r.jitter_samples,
                j.p99.as_secs_f64() / interval.as_secs_f64() * 100.0
            )
        });
        let stop = match &r.stop {
            Ok(d) => format!("{} ms", d.as_millis()),
            Err(e) => format!("**{e}**"),
        };
        println!(
            "| {} | {} | {} ({}) | {:.1} KiB | {:.1} % | {} | {} ({}) | {} |",
            r.targets,
            jitter,
            mib(r.rss_kib),
            mib(r.hwm_kib),
            r.rss_kib as f64 / r.targets as f64,
            r.cpu_percent,
            r.threads,
            r.fds,
            r.fds_at_ready,
            stop
        );
    }
    if let [.., a, b] = results.as_slice() {
        println!(
            "\nMarginal RSS per target between {} and {} targets: {:.1} KiB (the targets share their connections: this is all per-target memory).",
            a.targets,
            b.targets,
            (b.rss_kib as f64 - a.rss_kib as f64) / (b.targets - a.targets) as f64
        );
    }
    println!("\nMachine: {}  ", machine());
    println!(
        "Load average (1 min) before / after: {load_before} / {}  ",
        load_average()
    );
    println!(
        "Open-file limit of this shell (soft/hard): {}",
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| l
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l
                    .split_whitespace()
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("/")))
            .unwrap_or_default()
    );
    println!("Command: `{}`", crate::command_line());
    drop(pair);
    Ok(())
}

/// The configuration of `n` `redis` targets on `pair` in groups of ten,
/// polled every `interval`, served on `port` (0: any).
pub(crate) fn config_toml(port: u16, interval: Duration, n: usize, pair: &RedisPair) -> String {
    let mut toml = format!(
        "[exporter]\ninstance = \"bench\"\n\n[web]\nlisten_address = \"127.0.0.1:{port}\"\n\n\
         [defaults]\npoll_interval = \"{}ms\"\ntimeout = \"2s\"\nstale_after = \"{}ms\"\n\n",
        interval.as_millis(),
        interval.as_millis() * 3
    );
    for g in 0..n.div_ceil(10) {
        toml.push_str(&format!(
            "[[group]]\nname = \"erp-{g:04}\"\nrpo_budget = \"60s\"\n\n"
        ));
    }
    for i in 0..n {
        toml.push_str(&format!(
            "[[redis]]\nname = \"cache-{i:05}\"\ngroup = \"erp-{:04}\"\nprimary_url = \"{}\"\nreplica_url = \"{}\"\n\n",
            i / 10,
            pair.primary_url(),
            pair.replica_url()
        ));
    }
    toml
}

async fn one(
    exporter: &Path,
    pair: &RedisPair,
    n: usize,
    requests: usize,
    seconds: u64,
    interval: Duration,
) -> Result<ScaleResult, String> {
    let port = lab::free_port();
    let dir = pair.data_dir();
    let config_path = dir.join(format!("rpo-bench-scale-{n}.toml"));
    let toml = config_toml(port, interval, n, pair);
    std::fs::write(&config_path, toml).map_err(|e| format!("write config: {e}"))?;
    let log_path = dir.join(format!("rpo-exporter-scale-{n}.log"));
    let started = Instant::now();
    let mut child = spawn_exporter(exporter, &config_path, &log_path)?;
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;

    let outcome = async {
        let ready_after = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the exporter exited early ({status})"));
            }
            if let Ok(resp) = client.get(format!("{base}/-/ready")).send().await {
                if resp.status().is_success() {
                    break started.elapsed();
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err("the exporter was not ready within 120 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let fds_at_ready = open_fds(pid);
        // One interval to settle (every target polled at least twice).
        tokio::time::sleep(interval + Duration::from_secs(1)).await;
        let before = proc_sample(pid)?;
        let window = Instant::now();

        // Cadence: /metrics every third of the interval.
        let mut last: HashMap<String, (u64, f64)> = HashMap::new();
        let mut jitters = Vec::new();
        let mut tick = tokio::time::interval(interval / 3);
        tick.tick().await;
        while window.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            let body = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            for (target, (runs, start)) in poll_starts(&body) {
                if let Some((old_runs, old_start)) = last.insert(target, (runs, start)) {
                    if runs == old_runs + 1 {
                        let gap = start - old_start;
                        jitters.push(Duration::from_secs_f64(
                            (gap - interval.as_secs_f64()).abs(),
                        ));
                    }
                }
            }
        }

        // Latency while it polls.
        let mut endpoints = Vec::new();
        for (endpoint, count) in [
            ("/metrics", requests),
            ("/failover-readiness", 50),
            ("/", 50),
        ] {
            let url = format!("{base}{endpoint}");
            let mut bytes = 0;
            for _ in 0..5 {
                bytes = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())?
                    .len();
            }
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let body = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())?;
                samples.push(t.elapsed());
                bytes = body.len();
            }
            endpoints.push((endpoint.to_string(), bytes, stats(&mut samples)));
        }
        let after = proc_sample(pid)?;
        let wall = window.elapsed().as_secs_f64();
        let cpu_percent =
            (after.cpu_ticks - before.cpu_ticks) as f64 / crate::clock_ticks() / wall * 100.0;
        let fds = open_fds(pid);
        let jitter_samples = jitters.len();
        let jitter = (!jitters.is_empty()).then(|| stats(&mut jitters));
        Ok((
            ready_after,
            fds_at_ready,
            endpoints,
            jitter,
            jitter_samples,
            after,
            fds,
            cpu_percent,
        ))
    }
    .await;

    let stop = match stop_with_sigterm(&mut child, Duration::from_secs(20)) {
        Some((status, took)) if status.success() => Ok(took),
        Some((status, _)) => Err(format!("{status}")),
        None => Err("did not exit within 20 s; killed".to_string()),
    };
    let (ready_after, fds_at_ready, endpoints, jitter, jitter_samples, after, fds, cpu_percent) =
        match outcome {
            Ok(o) => o,
            Err(problem) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "{problem}\nexporter log (last lines, newest first):\n{tail}"
                ));
            }
        };
    Ok(ScaleResult {
        targets: n,
        ready_after,
        fds_at_ready,
        endpoints,
        jitter,
        jitter_samples,
        rss_kib: after.rss_kib,
        hwm_kib: after.hwm_kib,
        threads: after.threads,
        fds,
        cpu_percent,
        stop,
    })
}

/// Each target's runs and the start of its last poll (its last success
/// minus its duration), for the targets whose last poll succeeded.
fn poll_starts(exposition: &str) -> HashMap<String, (u64, f64)> {
    let mut runs: HashMap<&str, u64> = HashMap::new();
    let mut success: HashMap<&str, bool> = HashMap::new();
    let mut last: HashMap<&str, f64> = HashMap::new();
    let mut took: HashMap<&str, f64> = HashMap::new();
    for line in exposition.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(target) = labels
            .split("\",")
            .find_map(|kv| kv.strip_prefix("target=\""))
            .map(|t| t.trim_end_matches('"'))
        else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "rpo_probe_runs_total" => {
                runs.insert(target, v as u64);
            }
            "rpo_probe_success" => {
                success.insert(target, v == 1.0);
            }
            "rpo_probe_last_success_timestamp_seconds" => {
                last.insert(target, v);
            }
            "rpo_probe_duration_seconds" => {
                took.insert(target, v);
            }
            _ => {}
        }
    }
    runs.into_iter()
        .filter(|(t, _)| success.get(t) == Some(&true))
        .filter_map(|(t, r)| Some((t.to_string(), (r, last.get(t)? - took.get(t)?))))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn poll_starts_are_last_success_minus_duration() {
        let text = "rpo_probe_success{group=\"g\",target=\"a\",kind=\"redis\"} 1\n\
                    rpo_probe_success{group=\"g\",target=\"b\",kind=\"redis\"} 0\n\
                    rpo_probe_duration_seconds{group=\"g\",target=\"a\",kind=\"redis\"} 0.25\n\
                    rpo_probe_last_success_timestamp_seconds{group=\"g\",target=\"a\",kind=\"redis\"} 100.5\n\
                    rpo_probe_runs_total{group=\"g\",target=\"a\",kind=\"redis\"} 7\n\
                    rpo_probe_runs_total{group=\"g\",target=\"b\",kind=\"redis\"} 7\n";
        let starts = super::poll_starts(text);
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert_eq!(starts["a"], (7, 100.25));
    }
}
