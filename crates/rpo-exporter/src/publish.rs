//! The `[cloudwatch]` publisher: hands the verdict to AWS automation.
//!
//! The AWS reference architecture for a two-region failover promotes the
//! standby from EventBridge rules, Step Functions and Lambda functions, which
//! read CloudWatch, not Prometheus. When the configuration has a
//! `[cloudwatch]` table, the daemon puts, every `interval`, one
//! `PutMetricData` into that region (the exporter's own region) carrying:
//!
//! | metric | dimensions | value |
//! |---|---|---|
//! | `FailoverReady` | `Group`, `ExporterInstance`, `Region` | 1 GO, 0 NO-GO (planned mode) |
//! | `FailoverReadyUnplanned` | `Group`, `ExporterInstance`, `Region` | 1 GO, 0 NO-GO (unplanned mode) |
//! | `ExposureSeconds` | `Group`, `Target`, `ExporterInstance`, `Region` | now − recovery point, unit `Seconds` |
//!
//! **Unknown is never GO.** The verdicts are [`readiness::evaluate`]'s, the
//! same as `rpo_failover_ready` and `/failover-readiness`: a target never
//! polled, with stale evidence or a failed poll makes its group NO-GO, so an
//! unknown verdict publishes 0. An unknown exposure publishes nothing (never
//! 0): a CloudWatch alarm on it must treat missing data as breaching, and so
//! must the alarm on `FailoverReady` (an exporter that stopped publishing is
//! unknown too); `deploy/aws/` does.
//!
//! **Limits.** `PutMetricData` takes at most 1,000 metric data items and
//! 1 MB per request (CloudWatch API Reference, "PutMetricData"). One call
//! carries every group and target of the round; a configuration large
//! enough to pass either limit is split into as few calls as fit
//! ([`plan_calls`], measured on the request's form encoding).
//!
//! **Never in the way.** The publisher is its own task: it reads the
//! store's snapshot and the running configuration (a reload applies at the
//! next round), never holds a lock across a call, and bounds each call by
//! `timeout`; a call that fails or hangs delays only the next publication.
//! Every request is counted in `rpo_aws_api_requests_total{service=
//! "cloudwatch",operation="PutMetricData"}`, every failed one in
//! `rpo_aws_api_errors_total`, through the same AWS clients the AWS kinds use
//! (credentials, `profile`, `role_arn`, `endpoint_url` as for them). A
//! failure is logged when publishing starts failing, every
//! [`FAILURE_REMINDER_EVERY`] failures after that, and when it recovers; the
//! message is AWS's error code and text, never a credential.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::config::{Config, ConfigError, TargetKeys};
use crate::http::AppState;
use crate::kinds::aws::config::{self as aws_config, AwsAccess, MIN_AWS_TIMEOUT};
use crate::kinds::aws::{clients_for, AwsClients};
use crate::readiness::{self, Mode, Verdict};
use crate::self_metrics::AwsCallCounters;

/// The namespace used unless `[cloudwatch] namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "RPOExporter";
/// How often the verdict is put unless `[cloudwatch] interval` says
/// otherwise: twice a CloudWatch standard-resolution minute, so every
/// one-minute period of an alarm holds a datapoint even when a round runs
/// late (a period without one is missing data, which the shipped alarm
/// treats as breaching). About 86,400 calls a month.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The bound of one `PutMetricData` call unless `[cloudwatch] timeout` says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// `interval`: 1 s (each call costs money) to 1 hour.
pub const INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
/// `timeout`: as the AWS kinds' floor, to 1 minute.
pub const TIMEOUT_BOUNDS: (Duration, Duration) = (MIN_AWS_TIMEOUT, Duration::from_secs(60));

/// At most this many metric data items per `PutMetricData` request
/// (CloudWatch API Reference, "PutMetricData": "no more than 1000
/// different metrics").
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// At most this many bytes per `PutMetricData` HTTP POST (the same page:
/// "limited to 1 MB"); the plan keeps a tenth of it spare.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
const REQUEST_BYTES_BUDGET: usize = MAX_REQUEST_BYTES / 10 * 9;

/// While publishing keeps failing, the failure is logged again every this
/// many rounds (the first failure and the recovery are always logged).
pub const FAILURE_REMINDER_EVERY: u64 = 10;

/// The metric names and dimensions, fixed: alarms and automation name them.
pub const METRIC_FAILOVER_READY: &str = "FailoverReady";
pub const METRIC_FAILOVER_READY_UNPLANNED: &str = "FailoverReadyUnplanned";
pub const METRIC_EXPOSURE_SECONDS: &str = "ExposureSeconds";
pub const DIMENSION_GROUP: &str = "Group";
pub const DIMENSION_TARGET: &str = "Target";
pub const DIMENSION_EXPORTER_INSTANCE: &str = "ExporterInstance";
pub const DIMENSION_REGION: &str = "Region";

/// The keys `[cloudwatch]` takes.
pub const KEYS: [&str; 7] = [
    "region",
    "profile",
    "role_arn",
    "endpoint_url",
    "namespace",
    "interval",
    "timeout",
];

// ---------------------------------------------------------------------------
// Configuration.

/// The validated `[cloudwatch]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchPublish {
    /// Where and as whom to publish: `region` (default: `[exporter]
    /// region` when it is an AWS region name), `profile`, `role_arn`,
    /// `endpoint_url`, as the AWS kinds take them.
    pub access: AwsAccess,
    pub namespace: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Validates the `[cloudwatch]` table of the file at `path`. Every error
/// names the file and the key (`cloudwatch.namespace`).
pub fn parse_section(
    path: &Path,
    mut table: toml::Table,
    exporter_region: Option<&str>,
    resolve_secrets: bool,
) -> Result<CloudWatchPublish, ConfigError> {
    let invalid = |key: &str, problem: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: format!("cloudwatch.{key}"),
        problem,
    };
    if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(
            unknown,
            format!("unknown key; [cloudwatch] takes {}", KEYS.join(", ")),
        ));
    }
    if !table.contains_key("region") {
        match exporter_region.filter(|r| aws_config::is_aws_region(r)) {
            Some(region) => {
                table.insert("region".to_string(), toml::Value::String(region.into()));
            }
            None => {
                return Err(invalid(
                    "region",
                    "is required: the AWS region to publish in (this exporter's own region, like \"eu-central-1\"); it defaults to [exporter] region only when that is an AWS region name".to_string(),
                ))
            }
        }
    }
    let mut keys = TargetKeys::section(path, "cloudwatch", table, resolve_secrets);
    let access = aws_config::access(&mut keys)?;
    let namespace = keys
        .take_string("namespace")?
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    if let Err(problem) = check_namespace(&namespace) {
        return Err(keys.invalid("namespace", problem));
    }
    let interval = bounded(&mut keys, "interval", DEFAULT_INTERVAL, INTERVAL_BOUNDS)?;
    let timeout = bounded(&mut keys, "timeout", DEFAULT_TIMEOUT, TIMEOUT_BOUNDS)?;
    Ok(CloudWatchPublish {
        access,
        namespace,
        interval,
        timeout,
    })
}

fn bounded(
    keys: &mut TargetKeys<'_>,
    key: &str,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let written = keys.take_string(key)?;
    let value = keys.duration(key, written.as_deref(), default)?;
    if value < min || value > max {
        return Err(keys.invalid(
            key,
            format!(
                "{} is out of bounds; use {} to {}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(value)
}

/// A namespace CloudWatch accepts for custom metrics (CloudWatch concepts,
/// "Namespaces": ASCII letters, digits, `.`, `-`, `_`, `/`, `#`, `:` and
/// space, at most 255 characters; API Reference: not starting with `:`;
/// `AWS/` is reserved for AWS services).
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if namespace.trim().is_empty() || namespace.len() > 255 || !namespace.chars().all(allowed) {
        return Err("use 1 to 255 ASCII letters, digits, '.', '-', '_', '/', '#', ':' or spaces, like \"RPOExporter\"".to_string());
    }
    if namespace.starts_with(':') {
        return Err("must not start with ':'".to_string());
    }
    if namespace.starts_with("AWS/") {
        return Err("namespaces starting with \"AWS/\" are reserved for AWS services; use your own, like \"RPOExporter\"".to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// What one round publishes.

/// One datapoint to put.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub metric: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: Unit,
    pub timestamp: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    Seconds,
}

/// The `Region` dimension: `[exporter] region`, else the region published in.
pub fn region_dimension(config: &Config, publish: &CloudWatchPublish) -> String {
    config
        .region
        .clone()
        .unwrap_or_else(|| publish.access.region.clone())
}

/// The datapoints of one round, from the planned and unplanned verdicts of
/// every group (evaluated at the same instant): each group's two verdicts
/// (1 GO, 0 NO-GO, and so 0 when unknown), each target's exposure where it
/// is known (nothing where it is unknown: never 0).
pub fn datums(instance: &str, region: &str, planned: &Verdict, unplanned: &Verdict) -> Vec<Datum> {
    let at = planned.evaluated_at;
    let common = |group: &str| {
        vec![
            (DIMENSION_GROUP, group.to_string()),
            (DIMENSION_EXPORTER_INSTANCE, instance.to_string()),
            (DIMENSION_REGION, region.to_string()),
        ]
    };
    let mut out = Vec::new();
    for (metric, verdict) in [
        (METRIC_FAILOVER_READY, planned),
        (METRIC_FAILOVER_READY_UNPLANNED, unplanned),
    ] {
        for group in &verdict.groups {
            out.push(Datum {
                metric,
                dimensions: common(&group.group),
                value: if group.ready { 1.0 } else { 0.0 },
                unit: Unit::None,
                timestamp: at,
            });
        }
    }
    for group in &planned.groups {
        for target in &group.targets {
            let Some(exposure) = target.exposure else {
                continue;
            };
            let mut dimensions = common(&group.group);
            dimensions.insert(1, (DIMENSION_TARGET, target.target.to_string()));
            out.push(Datum {
                metric: METRIC_EXPOSURE_SECONDS,
                dimensions,
                value: exposure.as_secs_f64(),
                unit: Unit::Seconds,
                timestamp: at,
            });
        }
    }
    out
}

/// The bytes `datum` adds to a form-encoded `PutMetricData` request as its
/// `index`-th member (1-based): every parameter name with the member index,
/// every value percent-encoded (counted at its worst, three bytes a
/// character, except the characters never encoded).
pub fn encoded_bytes(index: usize, datum: &Datum) -> usize {
    let encoded = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.~".contains(c) {
                    1
                } else {
                    3 * c.len_utf8()
                }
            })
            .sum::<usize>()
    };
    let prefix = format!("&MetricData.member.{index}.").len();
    // MetricName, Value, Unit and Timestamp (ISO 8601 with fraction, encoded).
    let mut bytes = prefix + "MetricName=".len() + encoded(datum.metric);
    bytes += prefix + "Value=".len() + 24;
    bytes += prefix + "Unit=".len() + 7;
    bytes += prefix + "Timestamp=".len() + 40;
    for (n, (name, value)) in datum.dimensions.iter().enumerate() {
        let dim = prefix + format!("Dimensions.member.{}.", n + 1).len();
        bytes += dim + "Name=".len() + encoded(name);
        bytes += dim + "Value=".len() + encoded(value);
    }
    bytes
}

/// The index ranges of `datums` sent in one call each: as few as keep every
/// call within [`MAX_DATUMS_PER_CALL`] items and nine tenths of
/// [`MAX_REQUEST_BYTES`].
pub fn plan_calls(namespace: &str, datums: &[Datum]) -> Vec<std::ops::Range<usize>> {
    let head = "Action=PutMetricData&Version=2010-08-01&Namespace=".len() + 3 * namespace.len();
    let mut calls = Vec::new();
    let mut start = 0;
    let mut bytes = head;
    for (i, datum) in datums.iter().enumerate() {
        let size = encoded_bytes(i - start + 1, datum);
        if i > start && (i - start == MAX_DATUMS_PER_CALL || bytes + size > REQUEST_BYTES_BUDGET) {
            calls.push(start..i);
            start = i;
            bytes = head + encoded_bytes(1, datum);
        } else {
            bytes += size;
        }
    }
    if start < datums.len() {
        calls.push(start..datums.len());
    }
    calls
}

fn to_sdk(datum: &Datum) -> MetricDatum {
    let mut builder = MetricDatum::builder()
        .metric_name(datum.metric)
        .value(datum.value)
        .timestamp(datum.timestamp.into())
        .unit(match datum.unit {
            Unit::None => StandardUnit::None,
            Unit::Seconds => StandardUnit::Seconds,
        });
    for (name, value) in &datum.dimensions {
        builder = builder.dimensions(Dimension::builder().name(*name).value(value).build());
    }
    builder.build()
}

// ---------------------------------------------------------------------------
// The task.

/// The outcome of one round, for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// Every call answered: the calls made and the datums put.
    Ok { calls: usize, datums: usize },
    /// A call failed (the message names the region and AWS's error).
    Failed(String),
}

/// Publishes one round: both verdicts of every group of `config`, from
/// `state`'s snapshot, now.
pub async fn publish_once(
    config: &Config,
    publish: &CloudWatchPublish,
    clients: &AwsClients,
    snapshot: &crate::store::Snapshot,
) -> Published {
    let now = SystemTime::now();
    let planned = readiness::evaluate(config, snapshot, Mode::Planned, now, None);
    let unplanned = readiness::evaluate(config, snapshot, Mode::Unplanned, now, None);
    let region = region_dimension(config, publish);
    let datums = datums(&config.instance, &region, &planned, &unplanned);
    if datums.is_empty() {
        return Published::Ok {
            calls: 0,
            datums: 0,
        };
    }
    let client = clients.cloudwatch().await;
    let plan = plan_calls(&publish.namespace, &datums);
    for range in &plan {
        let request = client
            .put_metric_data()
            .namespace(&publish.namespace)
            .set_metric_data(Some(datums[range.clone()].iter().map(to_sdk).collect()))
            .send();
        if let Err(err) = clients
            .call("cloudwatch", "PutMetricData", publish.timeout, request)
            .await
        {
            return Published::Failed(err.message);
        }
    }
    Published::Ok {
        calls: plan.len(),
        datums: datums.len(),
    }
}

/// Runs the publisher until the task is dropped: every `interval` of the
/// running configuration's `[cloudwatch]` (none: it checks again after
/// [`DISABLED_RECHECK`], so a reload can turn it on). The first round waits
/// for the first poll round (at most one interval), so a restart does not
/// publish a NO-GO that only means "not polled yet" when it can help it.
pub async fn run(state: Arc<AppState>, counters: Arc<AwsCallCounters>) {
    let mut clients: Option<Arc<AwsClients>> = None;
    let mut failures: u64 = 0;
    let started = tokio::time::Instant::now();
    let mut first = true;
    loop {
        let config = state.config();
        let Some(publish) = config.cloudwatch.clone() else {
            clients = None;
            tokio::time::sleep(DISABLED_RECHECK).await;
            continue;
        };
        if first {
            first = false;
            while !state.store.snapshot().first_round_done() && started.elapsed() < publish.interval
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let round_start = tokio::time::Instant::now();
        let shared = match &clients {
            Some(c) if c.access() == &publish.access => c.clone(),
            _ => {
                let c = clients_for(&publish.access, &counters);
                clients = Some(c.clone());
                c
            }
        };
        let snapshot = state.store.snapshot();
        match publish_once(&config, &publish, &shared, &snapshot).await {
            Published::Ok { calls, datums } => {
                if failures > 0 {
                    tracing::info!(
                        region = %publish.access.region,
                        namespace = %publish.namespace,
                        failed_rounds = failures,
                        "publishing the verdict to CloudWatch works again"
                    );
                }
                failures = 0;
                tracing::debug!(calls, datums, "verdict published to CloudWatch");
            }
            Published::Failed(error) => {
                failures += 1;
                if failures == 1 || failures % FAILURE_REMINDER_EVERY == 0 {
                    tracing::warn!(
                        %error,
                        region = %publish.access.region,
                        namespace = %publish.namespace,
                        failed_rounds = failures,
                        "publishing the verdict to CloudWatch failed; alarms on it will see missing data (treat it as breaching); polls and HTTP are not affected"
                    );
                }
            }
        }
        tokio::time::sleep_until(round_start + publish.interval).await;
    }
}

/// How often a daemon without `[cloudwatch]` looks again (after a reload).
pub const DISABLED_RECHECK: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{Store, TargetId};

    const BASE: &str = r#"
[exporter]
instance = "dr-1"
region = "eu-west-1"

[[group]]
name = "erp"
rpo_budget = "60s"
"#;

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{extra}"), Path::new("test.toml"))
    }

    fn err(extra: &str) -> String {
        load(extra).unwrap_err().to_string()
    }

    #[test]
    fn the_section_takes_defaults_and_the_exporter_region() {
        let config = load("[cloudwatch]\n").unwrap();
        let publish = config.cloudwatch.unwrap();
        assert_eq!(publish.access.region, "eu-west-1");
        assert_eq!(publish.namespace, DEFAULT_NAMESPACE);
        assert_eq!(publish.interval, DEFAULT_INTERVAL);
        assert_eq!(publish.timeout, DEFAULT_TIMEOUT);
        assert!(load("").unwrap().cloudwatch.is_none());

        let config = load("[cloudwatch]\nregion = \"us-east-1\"\nnamespace = \"Acme/RPO\"\ninterval = \"15s\"\ntimeout = \"3s\"\nendpoint_url = \"http://127.0.0.1:5000/\"\nrole_arn = \"arn:aws:iam::123456789012:role/rpo-publisher\"\n").unwrap();
        let publish = config.cloudwatch.unwrap();
        assert_eq!(publish.access.region, "us-east-1");
        assert_eq!(
            publish.access.endpoint_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(publish.namespace, "Acme/RPO");
        assert_eq!(publish.interval, Duration::from_secs(15));
    }

    #[test]
    fn every_mistake_names_the_file_and_the_key() {
        for (extra, key, words) in [
            (
                "[cloudwatch]\nnamepsace = \"X\"\n",
                "cloudwatch.namepsace",
                "unknown key",
            ),
            (
                "[cloudwatch]\nnamespace = \"AWS/RDS\"\n",
                "cloudwatch.namespace",
                "reserved",
            ),
            (
                "[cloudwatch]\nnamespace = \"\"\n",
                "cloudwatch.namespace",
                "1 to 255",
            ),
            (
                "[cloudwatch]\nnamespace = \"a\\u00e9\"\n",
                "cloudwatch.namespace",
                "ASCII",
            ),
            (
                "[cloudwatch]\nnamespace = 7\n",
                "cloudwatch.namespace",
                "string",
            ),
            (
                "[cloudwatch]\ninterval = \"100ms\"\n",
                "cloudwatch.interval",
                "1s to 1h",
            ),
            (
                "[cloudwatch]\ninterval = \"soon\"\n",
                "cloudwatch.interval",
                "not a duration",
            ),
            (
                "[cloudwatch]\ntimeout = \"1s\"\n",
                "cloudwatch.timeout",
                "2s to 1m",
            ),
            (
                "[cloudwatch]\nregion = \"Ireland\"\n",
                "cloudwatch.region",
                "Ireland",
            ),
            (
                "[cloudwatch]\nendpoint_url = \"http://user:pw@127.0.0.1\"\n",
                "cloudwatch.endpoint_url",
                "without credentials",
            ),
            (
                "[cloudwatch]\nrole_arn = \"rpo\"\n",
                "cloudwatch.role_arn",
                "IAM role ARN",
            ),
            ("[[cloudwatch]]\n", "cloudwatch", "[cloudwatch] table"),
        ] {
            let e = err(extra);
            assert!(
                e.starts_with("config file test.toml: key `")
                    && e.contains(&format!("`{key}`"))
                    && e.contains(words),
                "{extra}: {e}"
            );
            // Never the credentials of a URL.
            assert!(!e.contains("pw@"), "{e}");
        }
        let e = Config::from_toml(&format!("cloudwatch = 1\n{BASE}"), Path::new("test.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`cloudwatch`") && e.contains("[cloudwatch] table"),
            "{e}"
        );
    }

    #[test]
    fn the_region_is_required_unless_the_exporter_region_is_an_aws_region() {
        for exporter in ["", "[exporter]\nregion = \"westeurope\"\n"] {
            let text = format!(
                "{exporter}[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n[cloudwatch]\n"
            );
            let e = Config::from_toml(&text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("`cloudwatch.region`") && e.contains("is required"),
                "{e}"
            );
        }
    }

    fn verdicts(config: &Config, store: &Store, now: SystemTime) -> (Verdict, Verdict) {
        let snapshot = store.snapshot();
        (
            readiness::evaluate(config, &snapshot, Mode::Planned, now, None),
            readiness::evaluate(config, &snapshot, Mode::Unplanned, now, None),
        )
    }

    #[test]
    fn unknown_publishes_no_go_and_no_exposure() {
        let config = load("[[redis]]\nname = \"sessions\"\ngroup = \"erp\"\nprimary_url = \"redis://127.0.0.1:1\"\nreplica_url = \"redis://127.0.0.1:2\"\n[[group]]\nname = \"empty\"\nrpo_budget = \"1m\"\n").unwrap();
        // Never polled: unknown.
        let store = Store::new(config.targets.iter().map(TargetId::of));
        let now = SystemTime::now();
        let (planned, unplanned) = verdicts(&config, &store, now);
        let out = datums("dr-1", "eu-west-1", &planned, &unplanned);
        let names: Vec<(&str, &str, f64)> = out
            .iter()
            .map(|d| (d.metric, d.dimensions[0].1.as_str(), d.value))
            .collect();
        assert_eq!(
            names,
            vec![
                (METRIC_FAILOVER_READY, "erp", 0.0),
                (METRIC_FAILOVER_READY, "empty", 0.0),
                (METRIC_FAILOVER_READY_UNPLANNED, "erp", 0.0),
                (METRIC_FAILOVER_READY_UNPLANNED, "empty", 0.0),
            ],
            "unknown is 0, and an unknown exposure is not published"
        );
        for d in &out {
            assert_eq!(d.timestamp, now);
            assert_eq!(d.unit, Unit::None);
            assert_eq!(
                d.dimensions,
                vec![
                    (DIMENSION_GROUP, d.dimensions[0].1.clone()),
                    (DIMENSION_EXPORTER_INSTANCE, "dr-1".to_string()),
                    (DIMENSION_REGION, "eu-west-1".to_string()),
                ]
            );
        }
    }

    #[test]
    fn a_go_group_publishes_1_and_each_known_exposure() {
        use crate::probe::{LinkState, Measurement};
        let config = load("[[redis]]\nname = \"sessions\"\ngroup = \"erp\"\nprimary_url = \"redis://127.0.0.1:1\"\nreplica_url = \"redis://127.0.0.1:2\"\n").unwrap();
        let id = TargetId::of(&config.targets[0]);
        let store = Store::new([id.clone()]);
        let now = SystemTime::now();
        let mut m = Measurement::new(now);
        m.recovery_point = Some(now - Duration::from_secs(4));
        m.link = LinkState::Healthy;
        m.source_reachable = Some(true);
        m.replica_reachable = Some(true);
        store.record_poll(&id, now, now, Ok(m));
        let (planned, unplanned) = verdicts(&config, &store, now);
        assert!(planned.ready, "{:?}", planned.groups[0].reasons);
        let out = datums("dr-1", "eu-west-1", &planned, &unplanned);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].value, 1.0);
        let exposure = out
            .iter()
            .find(|d| d.metric == METRIC_EXPOSURE_SECONDS)
            .unwrap();
        assert_eq!(exposure.unit, Unit::Seconds);
        assert!((exposure.value - 4.0).abs() < 0.01, "{exposure:?}");
        assert_eq!(
            exposure.dimensions,
            vec![
                (DIMENSION_GROUP, "erp".to_string()),
                (DIMENSION_TARGET, "sessions".to_string()),
                (DIMENSION_EXPORTER_INSTANCE, "dr-1".to_string()),
                (DIMENSION_REGION, "eu-west-1".to_string()),
            ]
        );
    }

    fn datum(group: &str, target: &str) -> Datum {
        Datum {
            metric: METRIC_EXPOSURE_SECONDS,
            dimensions: vec![
                (DIMENSION_GROUP, group.to_string()),
                (DIMENSION_TARGET, target.to_string()),
                (DIMENSION_EXPORTER_INSTANCE, "dr-1".to_string()),
                (DIMENSION_REGION, "eu-west-1".to_string()),
            ],
            value: 12.5,
            unit: Unit::Seconds,
            timestamp: SystemTime::now(),
        }
    }

    #[test]
    fn one_call_per_round_until_a_limit_is_reached() {
        let few: Vec<Datum> = (0..300).map(|i| datum("erp", &format!("t{i}"))).collect();
        assert_eq!(plan_calls(DEFAULT_NAMESPACE, &few), vec![0..300]);
        let many: Vec<Datum> = (0..2500).map(|i| datum("erp", &format!("t{i}"))).collect();
        assert_eq!(
            plan_calls(DEFAULT_NAMESPACE, &many),
            vec![0..1000, 1000..2000, 2000..2500]
        );
        assert!(plan_calls(DEFAULT_NAMESPACE, &[]).is_empty());
    }

    #[test]
    fn long_names_split_by_the_payload_limit() {
        // The longest names a config accepts (100 characters, ':' encoded
        // as three bytes each).
        let long = ":".repeat(100);
        let big: Vec<Datum> = (0..1000).map(|_| datum(&long, &long)).collect();
        let plan = plan_calls(DEFAULT_NAMESPACE, &big);
        assert!(plan.len() >= 2, "{plan:?}");
        assert_eq!(plan.iter().map(|r| r.len()).sum::<usize>(), 1000);
        for range in plan {
            let bytes: usize = range
                .clone()
                .enumerate()
                .map(|(i, d)| encoded_bytes(i + 1, &big[d]))
                .sum();
            assert!(bytes <= MAX_REQUEST_BYTES * 9 / 10, "{bytes}");
            assert!(range.len() <= MAX_DATUMS_PER_CALL);
        }
    }

    #[test]
    fn the_size_estimate_is_not_below_the_real_encoding() {
        // What the query protocol sends for one member, encoded as a form.
        let d = datum("erp:billing", "erp-db.primary");
        let real = [
            ("MetricName", d.metric.to_string()),
            ("Value", "12.5".to_string()),
            ("Unit", "Seconds".to_string()),
            (
                "Timestamp",
                "2026-01-01T00%3A00%3A00.123456789Z".to_string(),
            ),
        ]
        .iter()
        .map(|(k, v)| format!("&MetricData.member.7.{k}={v}").len())
        .sum::<usize>()
            + d.dimensions
                .iter()
                .enumerate()
                .map(|(n, (name, value))| {
                    let value = value.replace(':', "%3A");
                    format!(
                        "&MetricData.member.7.Dimensions.member.{}.Name={name}",
                        n + 1
                    )
                    .len()
                        + format!(
                            "&MetricData.member.7.Dimensions.member.{}.Value={value}",
                            n + 1
                        )
                        .len()
                })
                .sum::<usize>();
        assert!(
            encoded_bytes(7, &d) >= real,
            "{} < {real}",
            encoded_bytes(7, &d)
        );
    }
}
