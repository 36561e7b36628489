//! The AWS kinds' tests on moto: credentials, the test's own clients,
//! resources and CloudWatch datapoints (each only in the region AWS
//! publishes it in), moto behind the region-losing proxy, and config text.
//!
//! The SDK reads credentials from the environment: [`use_test_credentials`]
//! sets dummy ones, turns retries off (`AWS_MAX_ATTEMPTS=1`: moto's errors
//! surface at once) and keeps the user's AWS files out, once per process.
//! These variables mean nothing to the other tests.

use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use rpo_exporter::kinds::aws::AwsClients;
use rpo_exporter::probe::unix_seconds;
use serde_json::Value;

use super::{metric_value, start_blocking, wait_until, ExporterClient};
use crate::aws_proxy::RegionProxy;
pub use crate::moto::Regions;
use crate::moto::{metric_datum, use_emulator_credentials, MotoServer};

/// Dummy credentials, no retries, no user AWS files: once per process.
pub fn use_test_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use_emulator_credentials();
        std::env::set_var("AWS_MAX_ATTEMPTS", "1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

/// A moto server of the caller's own (about a second), with
/// [`use_test_credentials`].
pub async fn start_moto() -> MotoServer {
    use_test_credentials();
    start_blocking(
        "moto starts (run scripts/install-deps.sh if it is missing)",
        MotoServer::start,
    )
    .await
}

/// Clients of the test itself (setting up moto), counting apart from the exporter.
pub fn admin(moto: &MotoServer, region: &str) -> Arc<AwsClients> {
    moto.admin(region)
}

/// The start of the minute `ago` before now.
pub fn minute_start_ago(ago: Duration) -> SystemTime {
    let secs = unix_seconds(SystemTime::now() - ago) as u64;
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs - secs % 60)
}

/// moto, and the region-losing proxy in front of it: targets use the
/// proxy's `endpoint_url` (`aws_keys_at(&proxy.endpoint_url(), ..)`), the
/// test's own clients ([`admin`]) go to moto directly, so the test keeps
/// playing AWS in a region the targets have lost.
pub async fn start_moto_behind_proxy() -> (MotoServer, RegionProxy) {
    let moto = start_moto().await;
    let proxy = RegionProxy::start(&moto.endpoint_url()).await;
    (moto, proxy)
}

/// Puts one CloudWatch datapoint of a pair in the one region AWS publishes
/// `metric` in (`regions.publishing`), as AWS does: a probe reading it
/// anywhere else finds nothing.
pub async fn put_datapoint(
    moto: &MotoServer,
    regions: &Regions,
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
    at: SystemTime,
    value: f64,
) {
    let region = regions.publishing(namespace, metric);
    put_datapoint_in_region(moto, region, namespace, metric, dimensions, at, value).await;
}

/// Puts one CloudWatch datapoint in `region`, wherever AWS would publish it.
/// Only for tests that prove a probe does NOT read a metric in a region AWS
/// does not publish it in; everything else uses [`put_datapoint`].
pub async fn put_datapoint_in_region(
    moto: &MotoServer,
    region: &str,
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
    at: SystemTime,
    value: f64,
) {
    admin(moto, region)
        .cloudwatch()
        .await
        .put_metric_data()
        .namespace(namespace)
        .metric_data(metric_datum(metric, dimensions, at, value))
        .send()
        .await
        .expect("PutMetricData on moto");
}

/// Creates a Postgres RDS instance `id`; its ARN.
pub async fn create_db_instance(clients: &AwsClients, id: &str) -> String {
    create_db_instance_with_engine(clients, id, "postgres").await
}

/// Creates an RDS instance `id` running `engine` (`postgres`, `mysql`,
/// `mariadb`); its ARN.
pub async fn create_db_instance_with_engine(
    clients: &AwsClients,
    id: &str,
    engine: &str,
) -> String {
    let created = clients
        .rds()
        .await
        .create_db_instance()
        .db_instance_identifier(id)
        .db_instance_class("db.t3.micro")
        .engine(engine)
        // moto has no default version for `mariadb` (KeyError, HTTP 500).
        .set_engine_version((engine == "mariadb").then(|| "10.11.9".to_string()))
        .master_username("admin")
        .master_user_password("password-password")
        .allocated_storage(20)
        .send()
        .await
        .expect("CreateDBInstance on moto");
    created
        .db_instance()
        .and_then(|i| i.db_instance_arn())
        .expect("the instance has an ARN")
        .to_string()
}

/// Creates a read replica `id` of `source` (an identifier, or an ARN for a
/// replica in another region).
pub async fn create_read_replica(clients: &AwsClients, id: &str, source: &str) {
    clients
        .rds()
        .await
        .create_db_instance_read_replica()
        .db_instance_identifier(id)
        .source_db_instance_identifier(source)
        .send()
        .await
        .expect("CreateDBInstanceReadReplica on moto");
}

/// Creates the SQS queue `name`; its URL.
pub async fn create_queue(clients: &AwsClients, name: &str) -> String {
    clients
        .sqs()
        .await
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("CreateQueue on moto")
        .queue_url
        .expect("a queue URL")
}

/// Sends one message to the queue at `queue_url`.
pub async fn send_message(clients: &AwsClients, queue_url: &str, body: &str) {
    clients
        .sqs()
        .await
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .send()
        .await
        .expect("SendMessage on moto");
}

/// A config with group `erp` (budget 10 min) around AWS target blocks.
pub fn aws_config(targets: &str) -> String {
    format!(
        r#"
[exporter]
instance = "test"

[[group]]
name = "erp"
rpo_budget = "10m"
{targets}"#
    )
}

/// The keys every AWS target of the tests shares, against `moto`.
pub fn aws_keys(moto: &MotoServer, region: &str) -> String {
    aws_keys_at(&moto.endpoint_url(), region)
}

/// The keys every AWS target of the tests shares, against `endpoint_url`
/// (moto, or a stub in front of it): poll every second, time out after 5 s,
/// stale after 10 min.
pub fn aws_keys_at(endpoint_url: &str, region: &str) -> String {
    format!(
        "region = \"{region}\"\nendpoint_url = \"{endpoint_url}\"\npoll_interval = \"1s\"\ntimeout = \"5s\"\nstale_after = \"10m\"\n"
    )
}

/// Creates an Aurora global database across `regions` (see
/// [`MotoServer::create_aurora_global`]); the secondary's ARN.
pub async fn create_aurora_global(
    moto: &MotoServer,
    regions: &Regions,
    global: &str,
    primary: &str,
    secondary: &str,
) -> String {
    moto.create_aurora_global(regions, global, primary, secondary)
        .await
        .expect("an Aurora global database on moto")
}

/// Creates replicated buckets across `regions` (see
/// [`MotoServer::create_replicated_buckets`]).
pub async fn create_replicated_buckets(
    moto: &MotoServer,
    regions: &Regions,
    source: &str,
    destination: &str,
    rule_id: &str,
) {
    moto.create_replicated_buckets(regions, source, destination, rule_id)
        .await
        .expect("replicated buckets on moto");
}

/// The verdict of `target` in `mode` (`planned` or `unplanned`).
pub async fn target_verdict_in(exporter: &ExporterClient, target: &str, mode: &str) -> Value {
    let (_, verdict) = exporter.verdict(&format!("?mode={mode}")).await;
    verdict["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["targets"].as_array().unwrap().iter())
        .find(|t| t["target"] == target)
        .cloned()
        .unwrap_or_else(|| panic!("no target {target} in {verdict}"))
}

/// The reason codes of a target's verdict, in order.
pub fn reason_codes(verdict: &Value) -> Vec<String> {
    verdict["reason_details"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What every AWS kind must show once its source's region is lost (calls to
/// it unanswered since `lost_at`, Unix seconds), with `recovery_point` the
/// last one proven before: the recovery point kept (never reset, never
/// "now"), `rpo_source_reachable` 0, the planned verdict NO-GO naming the
/// unreachable source, and the unplanned verdict reporting that recovery
/// point and the loss window up to the last contact with the source.
/// `replica_reachable`: what `rpo_replica_reachable` must read (`None` for
/// a kind without a replica side). Returns the unplanned verdict.
pub async fn assert_source_region_lost(
    exporter: &ExporterClient,
    target: &str,
    recovery_point: f64,
    lost_at: f64,
    replica_reachable: Option<f64>,
) -> Value {
    let labels = [("target", target)];
    let text = exporter
        .wait_for_metrics(
            Duration::from_secs(30),
            &format!("{target} to find its source's region unreachable"),
            |text| metric_value(text, "rpo_source_reachable", &labels) == Some(0.0),
        )
        .await;
    assert_eq!(
        metric_value(&text, "rpo_recovery_point_timestamp_seconds", &labels),
        Some(recovery_point),
        "the recovery point is kept, never reset, never \"now\"\n{text}"
    );
    assert_eq!(
        metric_value(&text, "rpo_replica_reachable", &labels),
        replica_reachable,
        "{text}"
    );
    assert_eq!(metric_value(&text, "rpo_probe_success", &labels), Some(0.0));
    let planned = target_verdict_in(exporter, target, "planned").await;
    assert_eq!(planned["ready"], false, "{planned}");
    assert!(
        reason_codes(&planned).contains(&"source_unreachable".to_string())
            && planned["reasons"]
                .to_string()
                .contains("source unreachable"),
        "{planned}"
    );
    let unplanned = target_verdict_in(exporter, target, "unplanned").await;
    assert_eq!(
        unplanned["recovery_point_unix"], recovery_point,
        "{unplanned}"
    );
    let window = unplanned["loss_window_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no loss window in {unplanned}"));
    // The last contact with the source was the last poll before the loss
    // (one poll interval and one call timeout around `lost_at`).
    let expected = lost_at - recovery_point;
    assert!(
        (expected - 10.0..=expected + 6.0).contains(&window),
        "loss window {window}, expected about {expected}: {unplanned}"
    );
    assert!(
        !reason_codes(&unplanned).contains(&"source_unreachable".to_string()),
        "{unplanned}"
    );
    unplanned
}

/// What every AWS kind with a replica side must show once the replica's
/// region is lost: the recovery point kept, `rpo_replica_reachable` 0, and
/// NO-GO in both modes naming the unreachable replica.
pub async fn assert_replica_region_lost(
    exporter: &ExporterClient,
    target: &str,
    recovery_point: f64,
) {
    let labels = [("target", target)];
    let text = exporter
        .wait_for_metrics(
            Duration::from_secs(30),
            &format!("{target} to find its replica's region unreachable"),
            |text| metric_value(text, "rpo_replica_reachable", &labels) == Some(0.0),
        )
        .await;
    assert_eq!(
        metric_value(&text, "rpo_recovery_point_timestamp_seconds", &labels),
        Some(recovery_point),
        "{text}"
    );
    for mode in ["planned", "unplanned"] {
        let verdict = target_verdict_in(exporter, target, mode).await;
        assert_eq!(verdict["ready"], false, "{mode}: {verdict}");
        assert!(
            reason_codes(&verdict).contains(&"replica_unreachable".to_string())
                && verdict["reasons"]
                    .to_string()
                    .contains("replica unreachable"),
            "{mode}: {verdict}"
        );
    }
}

/// Waits until `target`'s recovery point reads `expected` (evidence from the
/// surviving region arriving while the other is lost).
pub async fn wait_for_recovery_point(exporter: &ExporterClient, target: &str, expected: f64) {
    wait_until(
        Duration::from_secs(30),
        &format!("{target}'s recovery point to reach {expected}"),
        || async {
            let rp = exporter
                .metric(
                    "rpo_recovery_point_timestamp_seconds",
                    &[("target", target)],
                )
                .await;
            (rp == Some(expected), format!("{rp:?}"))
        },
    )
    .await;
}
