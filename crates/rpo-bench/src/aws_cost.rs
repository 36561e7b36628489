//! What watching the AWS reference architecture costs in AWS API calls, from
//! the exporter's own counters, and CloudWatch batching at 10,000 series.
//!
//! ```text
//! cargo build --release -p rpo-exporter -p rpo-bench
//! target/release/rpo-bench --aws-cost --seconds 240
//! ```
//!
//! Starts the lab's AWS emulator (moto), seeds it as the demo does (an RDS
//! source with a cross-region replica, an Aurora global database, S3 buckets
//! with a replication rule and a task playing the replicator, an SQS queue
//! with its dead-letter queue, CloudWatch datapoints every 20 s), and runs
//! the real `rpo-exporter` on the `[[rds]]`, `[[aurora_global]]`, `[[s3]]`
//! and `[[sqs]]` targets of `deploy/examples/erp-aws.toml` at their default
//! intervals (polls every 60 s, the S3 canary every 30 s as in that file).
//! `rpo_aws_api_requests_total` and `rpo_cloudwatch_metrics_requested_total`
//! are read 15 s after the exporter is ready and `--seconds` later (a
//! multiple of 60 keeps the window's poll count exact), and the rates are
//! scaled to a 30-day month.
//!
//! Then the batching check: 10,000 distinct `AWS/RDS ReplicaLag` series
//! asked at once of one region through the exporter's own
//! `AwsClients::newest_datapoints` must cost exactly `ceil(10,000 / 500)` =
//! 20 `GetMetricData` calls and 10,000 metrics requested.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpo_exporter::kinds::aws::{AwsClients, MetricQuery, Stat, MAX_QUERIES_PER_CALL};
use rpo_exporter::self_metrics::AwsCallCounters;
use rpo_lab::moto::{self, MotoServer};

use crate::{command_line, machine, Options};

/// Seconds in a 30-day month.
const MONTH: f64 = 30.0 * 86_400.0;

/// The series asked at once in the batching check.
const SERIES: usize = 10_000;

/// AWS list price in US dollars per request (or per metric requested, for
/// `GetMetricData`) of `(service, operation)`, us-east-1 / eu-central-1
/// Standard tier, and where the price comes from. `None`: no charge.
pub(crate) fn unit_price(service: &str, operation: &str) -> (Option<f64>, &'static str) {
    match service {
        "cloudwatch" => match operation {
            // Billed per metric requested, not per call: see the caller.
            "GetMetricData" => (Some(0.01 / 1000.0), "$0.01 per 1,000 metrics requested"),
            "PutMetricData" => (Some(0.01 / 1000.0), "$0.01 per 1,000 requests"),
            _ => (Some(0.01 / 1000.0), "$0.01 per 1,000 requests"),
        },
        "s3" => {
            let tier1 = ["Put", "Copy", "Post", "List", "Create"]
                .iter()
                .any(|p| operation.starts_with(p));
            if tier1 {
                (
                    Some(0.005 / 1000.0),
                    "$0.005 per 1,000 (PUT, COPY, POST, LIST)",
                )
            } else {
                (
                    Some(0.0004 / 1000.0),
                    "$0.0004 per 1,000 (GET and all other)",
                )
            }
        }
        "sqs" => (
            Some(0.40 / 1_000_000.0),
            "$0.40 per million (first million a month free)",
        ),
        // Control-plane describe calls of RDS, ElastiCache and EFS, and STS.
        _ => (None, "no charge"),
    }
}

/// `rpo_aws_api_requests_total{service,operation}` and
/// `rpo_cloudwatch_metrics_requested_total` from an exposition.
pub(crate) fn aws_counters(text: &str) -> (BTreeMap<(String, String), f64>, f64) {
    let mut requests = BTreeMap::new();
    let mut metrics = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("rpo_aws_api_requests_total{") {
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            if let (Some(s), Some(o), Ok(v)) =
                (label("service"), label("operation"), value.parse::<f64>())
            {
                requests.insert((s, o), v);
            }
        } else if let Some(v) = line.strip_prefix("rpo_cloudwatch_metrics_requested_total ") {
            metrics = v.trim().parse().unwrap_or(0.0);
        }
    }
    (requests, metrics)
}

pub(crate) fn aws_cost_bench(options: &Options) -> Result<(), String> {
    let exporter = crate::sibling_exporter()?;
    // Before any thread starts: dummy credentials, the user's files kept out.
    moto::use_emulator_credentials();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run(options, exporter))
}

async fn run(options: &Options, exporter: std::path::PathBuf) -> Result<(), String> {
    eprintln!("rpo-bench: starting the AWS emulator (moto) and seeding it...");
    let moto = tokio::task::spawn_blocking(MotoServer::start)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let demo = moto.seed_demo("erp", "bench").await?;
    // The demo polls every 5 s with a 2 s canary; the reference architecture
    // runs at the defaults (60 s polls, stale_after 15 m / 5 m for sqs) and
    // a 30 s canary.
    let blocks = demo
        .config_blocks
        .replace("poll_interval = \"5s\"\n", "")
        .replace("stale_after = \"10m\"\n", "")
        .replace(
            "canary = { interval = \"2s\"",
            "canary = { interval = \"30s\"",
        );
    let port = rpo_lab::free_port();
    let dir = std::env::temp_dir().join(format!("rpo-bench-aws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config_path = dir.join("erp-aws.toml");
    std::fs::write(
        &config_path,
        format!(
            "[exporter]\ninstance = \"bench\"\n\n[web]\nlisten_address = \"127.0.0.1:{port}\"\n\n\
             [[group]]\nname = \"erp\"\nrpo_budget = \"15m\"\n{blocks}"
        ),
    )
    .map_err(|e| e.to_string())?;
    let log_path = dir.join("rpo-exporter.log");
    let mut child = crate::support::spawn_exporter(&exporter, &config_path, &log_path)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{port}");
    let scrape = || async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    };
    let outcome = async {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/-/ready")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err("the exporter was not ready within 120 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
        eprintln!(
            "rpo-bench: counting AWS calls over {} s...",
            options.seconds
        );
        let first = aws_counters(&scrape().await?);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(options.seconds)).await;
        let text = scrape().await?;
        let window = t0.elapsed();
        let verdict = client
            .get(format!("{base}/failover-readiness?group=erp"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status()
            .as_u16();
        let successes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("rpo_probe_success{"))
            .collect();
        Ok((
            first,
            aws_counters(&text),
            window,
            verdict,
            successes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ))
    }
    .await;
    crate::support::stop_with_sigterm(&mut child, Duration::from_secs(10));
    let (first, last, window, verdict, successes) = match outcome {
        Ok(o) => o,
        Err(e) => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("{e}\nexporter log:\n{log}"));
        }
    };
    drop(demo);

    // The batching check at 10,000 series, against the same emulator.
    eprintln!("rpo-bench: asking {SERIES} CloudWatch series at once...");
    let counters = Arc::new(AwsCallCounters::default());
    let clients = Arc::new(AwsClients::new(moto.access("us-west-2"), counters.clone()));
    let queries: Vec<MetricQuery> = (0..SERIES)
        .map(|i| {
            MetricQuery::new("AWS/RDS", "ReplicaLag", Stat::Maximum)
                .dimension("DBInstanceIdentifier", format!("erp-db-{i:05}"))
        })
        .collect();
    let batch_started = Instant::now();
    let answer = clients
        .newest_datapoints(queries, Duration::from_secs(3600), Duration::from_secs(300))
        .await
        .map_err(|e| format!("GetMetricData of {SERIES} series: {e}"))?;
    let batch_took = batch_started.elapsed();
    let calls = clients.get_metric_data_calls();
    let requested = counters.snapshot().cloudwatch_metrics_requested;
    let expected_calls = SERIES.div_ceil(MAX_QUERIES_PER_CALL) as u64;
    std::fs::remove_dir_all(&dir).ok();

    // The report.
    let scale = MONTH / window.as_secs_f64();
    println!("### AWS cost of the reference architecture\n");
    println!(
        "The `[[rds]]`, `[[aurora_global]]`, `[[s3]]` (canary every 30 s) and `[[sqs]]` targets \
         of `deploy/examples/erp-aws.toml` at the default intervals (polls every 60 s), run \
         against the lab's AWS emulator; counted by the exporter itself \
         (`rpo_aws_api_requests_total`, `rpo_cloudwatch_metrics_requested_total`) over {:.0} s \
         and scaled to a 30-day month. `/failover-readiness?group=erp` at the end: HTTP {verdict}.\n",
        window.as_secs_f64()
    );
    println!(
        "| service | operation | requests in window | per month | list price | per month (USD) |"
    );
    println!("|---|---|---:|---:|---|---:|");
    let mut total = 0.0;
    for ((service, operation), value) in &last.0 {
        let before = first
            .0
            .get(&(service.clone(), operation.clone()))
            .copied()
            .unwrap_or(0.0);
        let delta = value - before;
        let monthly = delta * scale;
        let (price, words) = unit_price(service, operation);
        let billed = if service == "cloudwatch" && operation == "GetMetricData" {
            // Billed per metric requested.
            (last.1 - first.1) * scale
        } else {
            monthly
        };
        let cost = price.map(|p| p * billed);
        total += cost.unwrap_or(0.0);
        println!(
            "| {service} | {operation} | {delta:.0} | {monthly:.0} | {words} | {} |",
            cost.map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "0".to_string())
        );
    }
    println!(
        "| cloudwatch | (metrics requested in `GetMetricData`) | {:.0} | {:.0} | (priced in the GetMetricData row) | |",
        last.1 - first.1,
        (last.1 - first.1) * scale
    );
    println!("| **total** | | | | | **{total:.2}** |\n");
    println!(
        "Every target polled successfully at the end: {}/{} `rpo_probe_success` series are 1.\n",
        successes.iter().filter(|l| l.ends_with(" 1")).count(),
        successes.len()
    );
    println!("### CloudWatch batching at {SERIES} series\n");
    println!(
        "{SERIES} distinct series asked at once of one region: {calls} `GetMetricData` calls \
         (expected ceil({SERIES} / {MAX_QUERIES_PER_CALL}) = {expected_calls}), {requested} \
         metrics requested, answered in {:.1} s by the emulator. At a 60 s poll that is \
         {:.0} calls and {:.0} metrics requested a month per region: {:.2} USD a month at \
         $0.01 per 1,000 metrics requested.\n",
        batch_took.as_secs_f64(),
        expected_calls as f64 * MONTH / 60.0,
        SERIES as f64 * MONTH / 60.0,
        SERIES as f64 * MONTH / 60.0 * 0.01 / 1000.0
    );
    println!("Machine: {}  ", machine());
    println!("Command: `{}`", command_line());
    if answer.len() != SERIES || calls != expected_calls || requested != SERIES as u64 {
        return Err(format!(
            "batching: {} answers, {calls} calls (expected {expected_calls}), {requested} metrics requested",
            answer.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_exposition() {
        let text = "# HELP rpo_aws_api_requests_total x\n\
                    rpo_aws_api_requests_total{service=\"sqs\",operation=\"GetQueueAttributes\"} 12\n\
                    rpo_aws_api_requests_total{service=\"cloudwatch\",operation=\"GetMetricData\"} 4\n\
                    rpo_cloudwatch_metrics_requested_total 40\n";
        let (requests, metrics) = aws_counters(text);
        assert_eq!(
            requests.get(&("sqs".to_string(), "GetQueueAttributes".to_string())),
            Some(&12.0)
        );
        assert_eq!(requests.len(), 2);
        assert_eq!(metrics, 40.0);
    }

    #[test]
    fn prices_follow_the_billing_tiers() {
        assert_eq!(unit_price("s3", "PutObject").0, Some(0.005 / 1000.0));
        assert_eq!(unit_price("s3", "GetObject").0, Some(0.0004 / 1000.0));
        assert_eq!(
            unit_price("s3", "GetBucketReplication").0,
            Some(0.0004 / 1000.0)
        );
        assert_eq!(unit_price("rds", "DescribeDBInstances").0, None);
        assert_eq!(unit_price("sqs", "GetQueueAttributes").0, Some(0.4 / 1e6));
        assert_eq!(
            unit_price("cloudwatch", "GetMetricData").0,
            Some(0.01 / 1000.0)
        );
    }
}
