//! The `[cloudwatch]` publisher on moto, behind the lab's region proxy: the
//! verdicts and exposures it puts are read back with `ListMetrics` and
//! `GetMetricData` (a GO group, a NO-GO group with a known and an unknown
//! exposure); with its region blackholed the exporter keeps polling and
//! answering and the failure is counted; the promotion gate
//! (`deploy/aws/promotion-gate/`) run against this exporter and against a
//! CloudWatch alarm. The kit in `deploy/aws/` is checked against the
//! publisher's names.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use rpo_exporter::kinds::aws::AwsClients;
use rpo_exporter::publish;
use rpo_lab::aws_proxy::RegionFault;
use rpo_lab::repo_root as repo;
use rpo_lab::support::aws::*;
use rpo_lab::support::*;

const EAST: &str = "us-east-1";
const WEST: &str = "us-west-2";
const NAMESPACE: &str = "RPOExporter/Test";

/// Every metric of `NAMESPACE` in a region: (name, dimensions).
async fn published(clients: &AwsClients) -> Vec<(String, BTreeMap<String, String>)> {
    let listed = clients
        .cloudwatch()
        .await
        .list_metrics()
        .namespace(NAMESPACE)
        .send()
        .await
        .expect("ListMetrics on moto");
    let mut all: Vec<(String, BTreeMap<String, String>)> = listed
        .metrics()
        .iter()
        .map(|m| {
            (
                m.metric_name().unwrap_or_default().to_string(),
                m.dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_string(),
                            d.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

fn dimensions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The statistic of one published series over the last 10 minutes (every
/// value moto has, whatever its bucketing), `None` when it has none.
async fn statistic(
    clients: &AwsClients,
    metric: &str,
    dims: &[(&str, &str)],
    stat: &str,
) -> Option<f64> {
    let mut m = Metric::builder().namespace(NAMESPACE).metric_name(metric);
    for (name, value) in dims {
        m = m.dimensions(Dimension::builder().name(*name).value(*value).build());
    }
    let now = SystemTime::now();
    let out = clients
        .cloudwatch()
        .await
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("q0")
                .metric_stat(
                    MetricStat::builder()
                        .metric(m.build())
                        .period(600)
                        .stat(stat)
                        .build(),
                )
                .build(),
        )
        .start_time((now - Duration::from_secs(600)).into())
        .end_time((now + Duration::from_secs(60)).into())
        .send()
        .await
        .expect("GetMetricData on moto");
    let values = out.metric_data_results().first()?.values().to_vec();
    match stat {
        "Minimum" => values.into_iter().reduce(f64::min),
        _ => values.into_iter().reduce(f64::max),
    }
}

/// Waits (20 s at most) until the statistic of a series satisfies
/// `condition`; its value.
async fn wait_for_statistic(
    clients: &AwsClients,
    metric: &str,
    dims: &[(&str, &str)],
    stat: &str,
    condition: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = statistic(clients, metric, dims, stat).await;
        if let Some(v) = value.filter(|v| condition(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{stat} of {metric} {dims:?} in CloudWatch: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn config(proxy_url: &str, keys: &str) -> String {
    format!(
        r#"
[exporter]
instance = "dr-1"
region = "{WEST}"

[cloudwatch]
endpoint_url = "{proxy_url}"
namespace = "{NAMESPACE}"
interval = "1s"
timeout = "2s"

[[group]]
name = "erp"
rpo_budget = "10m"

[[group]]
name = "billing"
rpo_budget = "1m"

[[sqs]]
name = "erp-outbox"
group = "erp"
queue_name = "erp-outbox"
{keys}
[[sqs]]
name = "billing-outbox"
group = "billing"
queue_name = "billing-outbox"
{keys}
[[sqs]]
name = "billing-missing"
group = "billing"
queue_name = "billing-missing"
{keys}"#
    )
}

fn put_metric_data_requests(text: &str) -> f64 {
    metric_value(
        text,
        "rpo_aws_api_requests_total",
        &[("service", "cloudwatch"), ("operation", "PutMetricData")],
    )
    .unwrap_or(0.0)
}

fn put_metric_data_errors(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("rpo_aws_api_errors_total{")
                && l.contains("service=\"cloudwatch\"")
                && l.contains("operation=\"PutMetricData\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The promotion gate's command line; (exit code, stdout).
fn gate(python: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let output = std::process::Command::new(python)
        .arg(repo().join("deploy/aws/promotion-gate/promotion_gate.py"))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3 runs the promotion gate");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_is_published_read_back_and_a_lost_region_is_only_counted() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let east = admin(&moto, EAST);
    let west = admin(&moto, WEST);
    create_queue(&east, "erp-outbox").await;
    let stuck = create_queue(&east, "billing-outbox").await;
    // Dead-lettered before a third receive: the oldest message's age is
    // then proof (docs/kinds/aws.md, `sqs`).
    create_queue(&east, "billing-dlq").await;
    crate::aws::set_redrive_policy(&east, &stuck, EAST, "billing-dlq", 2).await;
    send_message(&east, &stuck, "invoice 42").await;
    // The oldest message has waited ten minutes: over billing's 1m budget.
    let t = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &moto,
        &Regions::new(EAST, WEST),
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        &[("QueueName", "billing-outbox")],
        t + Duration::from_secs(30),
        600.0,
    )
    .await;
    // The targets read moto directly; only the publisher goes through the
    // proxy, so losing its region loses nothing else.
    let started = Instant::now();
    let exporter = Exporter::start(&config(&proxy.endpoint_url(), &aws_keys(&moto, EAST))).await;
    exporter
        .wait_for_go("?group=erp", Duration::from_secs(30), "erp to be GO")
        .await;
    let billing = exporter
        .wait_for_verdict(
            "?group=billing",
            503,
            Duration::from_secs(30),
            "billing to be NO-GO",
        )
        .await;
    let (_, unplanned_billing) = exporter.verdict("?group=billing&mode=unplanned").await;
    let (_, unplanned_erp) = exporter.verdict("?group=erp&mode=unplanned").await;

    // Read back in the exporter's own region.
    let common = |group: &'static str| {
        vec![
            ("Group", group),
            ("ExporterInstance", "dr-1"),
            ("Region", WEST),
        ]
    };
    let with_target = |group: &'static str, target: &'static str| {
        vec![
            ("Group", group),
            ("Target", target),
            ("ExporterInstance", "dr-1"),
            ("Region", WEST),
        ]
    };
    let expected = [
        ("FailoverReady", common("erp")),
        ("FailoverReady", common("billing")),
        ("FailoverReadyUnplanned", common("erp")),
        ("FailoverReadyUnplanned", common("billing")),
        ("ExposureSeconds", with_target("erp", "erp-outbox")),
        ("ExposureSeconds", with_target("billing", "billing-outbox")),
    ];
    wait_until(
        Duration::from_secs(30),
        "the verdicts and exposures to be listed in CloudWatch",
        || async {
            let all = published(&west).await;
            let ok = expected
                .iter()
                .all(|(name, dims)| all.contains(&(name.to_string(), dimensions(dims))));
            (ok, format!("{all:#?}"))
        },
    )
    .await;
    let metrics = published(&west).await;
    // The unknown exposure (the queue that does not exist) is not
    // published, as nothing else is; and nothing goes to another region.
    assert_eq!(metrics.len(), expected.len(), "{metrics:#?}");
    assert!(published(&east).await.is_empty());

    // The values: the same verdicts the exporter answers with; unknown and
    // NO-GO never published as GO.
    assert_eq!(billing["groups"][0]["ready"], false, "{billing}");
    assert!(
        reasons(&billing).contains("billing-outbox")
            && reasons(&billing).contains("billing-missing"),
        "{billing}"
    );
    let any = |_: f64| true;
    assert_eq!(
        wait_for_statistic(&west, "FailoverReady", &common("billing"), "Maximum", any).await,
        0.0
    );
    assert_eq!(unplanned_billing["ready"], false, "{unplanned_billing}");
    assert_eq!(
        wait_for_statistic(
            &west,
            "FailoverReadyUnplanned",
            &common("billing"),
            "Maximum",
            any
        )
        .await,
        0.0
    );
    let is_go = |v: f64| v == 1.0;
    wait_for_statistic(&west, "FailoverReady", &common("erp"), "Maximum", is_go).await;
    if unplanned_erp["ready"] == true {
        wait_for_statistic(
            &west,
            "FailoverReadyUnplanned",
            &common("erp"),
            "Maximum",
            is_go,
        )
        .await;
    }
    let stuck_exposure = wait_for_statistic(
        &west,
        "ExposureSeconds",
        &with_target("billing", "billing-outbox"),
        "Maximum",
        any,
    )
    .await;
    assert!(
        (600.0..600.0 + 300.0).contains(&stuck_exposure),
        "{stuck_exposure}"
    );
    let idle_exposure = wait_for_statistic(
        &west,
        "ExposureSeconds",
        &with_target("erp", "erp-outbox"),
        "Minimum",
        any,
    )
    .await;
    assert!(idle_exposure < 10.0, "{idle_exposure}");

    // One PutMetricData per round (interval 1s), counted as the proxy saw it.
    let text = exporter
        .wait_for_metrics(Duration::from_secs(20), "three rounds", |text| {
            put_metric_data_requests(text) >= 3.0
        })
        .await;
    let requests = put_metric_data_requests(&text);
    let seen = proxy.requests(WEST, "monitoring") as f64;
    assert!(
        (requests - seen).abs() <= 1.0,
        "{requests} counted, {seen} seen"
    );
    assert!(
        requests <= started.elapsed().as_secs_f64() + 2.0,
        "{requests} calls in {:?}: more than one per round",
        started.elapsed()
    );
    assert_eq!(proxy.requests(EAST, "monitoring"), 0);
    assert_eq!(put_metric_data_errors(&text), 0.0, "{text}");

    // The promotion gate against this exporter: GO promotes, NO-GO refuses
    // with the exporter's reasons, an unknown group refuses.
    let python = std::path::PathBuf::from("python3");
    let url = exporter.url("/failover-readiness");
    let (code, out) = gate(
        &python,
        &["--url", &url, "--group", "erp", "--mode", "planned"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"promote\": true") && out.contains("says GO for erp"),
        "{out}"
    );
    let (code, out) = gate(
        &python,
        &["--url", &url, "--group", "billing", "--mode", "planned"],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("\"promote\": false")
            && out.contains("NO-GO for billing")
            && out.contains("billing-missing"),
        "{out}"
    );
    let (code, out) = gate(
        &python,
        &["--url", &url, "--group", "nope", "--mode", "planned"],
        &[],
    );
    assert_eq!(code, 1, "{out}");

    // The publisher's region is lost: every call hangs until its timeout.
    proxy.lose(WEST, RegionFault::Blackhole);
    let runs = |text: &str| {
        metric_value(text, "rpo_probe_runs_total", &[("target", "erp-outbox")]).unwrap_or(0.0)
    };
    let runs_before = runs(&exporter.metrics().await);
    let text = exporter
        .wait_for_metrics(
            Duration::from_secs(30),
            "the lost region's PutMetricData to fail and be counted",
            |text| {
                text.lines().any(|l| {
                    l.starts_with("rpo_aws_api_errors_total{")
                        && l.contains("operation=\"PutMetricData\"")
                        && l.contains("reason=\"timeout\"")
                })
            },
        )
        .await;
    assert!(put_metric_data_errors(&text) >= 1.0, "{text}");
    // Polls and answers go on, unaffected.
    for _ in 0..3 {
        let asked = Instant::now();
        let (status, _) = exporter.verdict("?group=erp").await;
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(runs(&exporter.metrics().await) > runs_before);

    // Back: publishing works again, without new failures.
    proxy.restore(WEST);
    let settled = wait_until(
        Duration::from_secs(30),
        "PutMetricData to answer again",
        || async {
            let before = proxy.requests(WEST, "monitoring");
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let text = exporter.metrics().await;
            (proxy.requests(WEST, "monitoring") > before, text)
        },
    )
    .await;
    let errors = put_metric_data_errors(&settled);
    let requests = put_metric_data_requests(&settled);
    exporter
        .wait_for_metrics(
            Duration::from_secs(20),
            "two more PutMetricData calls",
            |text| put_metric_data_requests(text) >= requests + 2.0,
        )
        .await;
    assert_eq!(put_metric_data_errors(&exporter.metrics().await), errors);

    // The gate reading the alarm (boto3, from moto's virtualenv): only OK
    // promotes.
    let cloudwatch = west.cloudwatch().await;
    cloudwatch
        .put_metric_alarm()
        .alarm_name("rpo-erp-not-ready")
        .namespace(NAMESPACE)
        .metric_name("FailoverReady")
        .set_dimensions(Some(
            common("erp")
                .into_iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect(),
        ))
        .statistic(aws_sdk_cloudwatch::types::Statistic::Minimum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::LessThanThreshold)
        .treat_missing_data("breaching")
        .send()
        .await
        .expect("PutMetricAlarm on moto");
    let venv_python = rpo_lab::moto::venv_path().join("bin").join("python");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint_url()),
        ("AWS_DEFAULT_REGION", WEST.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
    ];
    for (state, code, words) in [
        ("ALARM", 1, "is in ALARM"),
        ("INSUFFICIENT_DATA", 1, "unknown is never GO"),
        ("OK", 0, "is OK"),
    ] {
        cloudwatch
            .set_alarm_state()
            .alarm_name("rpo-erp-not-ready")
            .state_value(state.into())
            .state_reason("test")
            .send()
            .await
            .expect("SetAlarmState on moto");
        let (got, out) = gate(
            &venv_python,
            &["--alarm", "rpo-erp-not-ready", "--group", "erp"],
            &env,
        );
        assert_eq!(got, code, "{state}: {out}");
        assert!(out.contains(words), "{state}: {out}");
    }
    let (got, out) = gate(
        &venv_python,
        &["--alarm", "no-such-alarm", "--group", "erp"],
        &env,
    );
    assert_eq!(got, 1, "{out}");
    assert!(out.contains("does not exist"), "{out}");
    exporter.stop().await;
}

/// The promotion gate's own unit tests (its decisions on every kind of
/// answer), run with the system's python3.
#[test]
fn the_promotion_gate_decides_go_only_on_a_fresh_go() {
    let output = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(repo().join("deploy/aws/promotion-gate"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let ran: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(ran >= 10, "{stderr}");
}

/// The CloudFormation template's alarm reads exactly what the publisher
/// puts, and treats missing data (an exporter that stopped publishing) as
/// breaching; the policies grant only what is needed.
#[test]
fn the_aws_kit_matches_the_publisher() {
    let read = |path: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(repo().join(path)).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let template = read("deploy/aws/failover-gate.template.json");
    assert_eq!(template["AWSTemplateFormatVersion"], "2010-09-09");
    let parameters = &template["Parameters"];
    assert_eq!(
        parameters["Namespace"]["Default"],
        publish::DEFAULT_NAMESPACE
    );
    let resources = template["Resources"].as_object().unwrap();
    let alarms: Vec<&serde_json::Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    assert_eq!(alarms.len(), 1);
    let alarm = &alarms[0]["Properties"];
    assert_eq!(alarm["Namespace"]["Ref"], "Namespace");
    let metric = &alarm["MetricName"]["Fn::If"];
    assert_eq!(
        metric[1],
        publish::METRIC_FAILOVER_READY_UNPLANNED,
        "{metric}"
    );
    assert_eq!(metric[2], publish::METRIC_FAILOVER_READY, "{metric}");
    let names: Vec<&str> = alarm["Dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            publish::DIMENSION_GROUP,
            publish::DIMENSION_EXPORTER_INSTANCE,
            publish::DIMENSION_REGION
        ]
    );
    // NO-GO (0), unknown (0) and silence (missing) all alarm.
    assert_eq!(alarm["Statistic"], "Minimum");
    assert_eq!(alarm["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(alarm["Threshold"], 1);
    assert_eq!(alarm["TreatMissingData"], "breaching");
    // The Lambda runs the gate shipped beside it.
    let lambda = resources
        .values()
        .find(|r| r["Type"] == "AWS::Lambda::Function")
        .unwrap();
    assert_eq!(lambda["Properties"]["Handler"], "promotion_gate.handler");
    assert_eq!(lambda["Properties"]["Code"], "promotion-gate/");

    // Every action a policy of the kit grants, by file.
    let actions = |policy: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                let list = match &s["Action"] {
                    serde_json::Value::String(a) => vec![a.clone()],
                    serde_json::Value::Array(a) => {
                        a.iter().map(|v| v.as_str().unwrap().to_string()).collect()
                    }
                    _ => vec![],
                };
                list.into_iter().map(move |a| (a, s.clone()))
            })
            .collect()
    };
    let publisher = read("deploy/aws/iam/rpo-exporter-cloudwatch-publish.json");
    let granted = actions(&publisher);
    assert_eq!(granted.len(), 1, "{publisher}");
    let (action, statement) = &granted[0];
    assert_eq!(action, "cloudwatch:PutMetricData");
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(
        statement["Condition"]["StringEquals"]["cloudwatch:namespace"],
        publish::DEFAULT_NAMESPACE
    );
    // The publisher's source names exactly that call.
    let source =
        std::fs::read_to_string(repo().join("crates/rpo-exporter/src/publish.rs")).unwrap();
    assert!(source.contains("\"cloudwatch\", \"PutMetricData\""));
    // The template's copy of that policy is the same statement.
    let in_template = resources
        .values()
        .find(|r| r["Type"] == "AWS::IAM::ManagedPolicy")
        .unwrap();
    let document = &in_template["Properties"]["PolicyDocument"];
    let (action, statement) = &actions(document)[0];
    assert_eq!(action, "cloudwatch:PutMetricData");
    assert_eq!(
        statement["Condition"]["StringEquals"]["cloudwatch:namespace"]["Ref"],
        "Namespace"
    );

    let gate = read("deploy/aws/iam/promotion-gate-lambda.json");
    let granted: Vec<String> = actions(&gate).into_iter().map(|(a, _)| a).collect();
    assert_eq!(granted, ["cloudwatch:DescribeAlarms"], "{gate}");
    for (_, statement) in actions(&gate) {
        assert_ne!(
            statement["Resource"], "*",
            "scoped to the alarm: {statement}"
        );
    }
}
