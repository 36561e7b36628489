//! The AWS kinds' tests on moto: credentials, the test's own clients,
//! resources and CloudWatch datapoints, and config text.
//!
//! The SDK reads credentials from the environment: [`use_test_credentials`]
//! sets dummy ones, turns retries off (`AWS_MAX_ATTEMPTS=1`: moto's errors
//! surface at once) and keeps the user's AWS files out, once per process.
//! These variables mean nothing to the other tests.

use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use rpo_exporter::kinds::aws::AwsClients;
use rpo_exporter::probe::unix_seconds;
use rpo_exporter::self_metrics::AwsCallCounters;

use super::start_blocking;
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
    Arc::new(AwsClients::new(
        moto.access(region),
        Arc::new(AwsCallCounters::default()),
    ))
}

/// The start of the minute `ago` before now.
pub fn minute_start_ago(ago: Duration) -> SystemTime {
    let secs = unix_seconds(SystemTime::now() - ago) as u64;
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs - secs % 60)
}

/// Puts one CloudWatch datapoint.
pub async fn put_datapoint(
    clients: &AwsClients,
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
    at: SystemTime,
    value: f64,
) {
    clients
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
    let created = clients
        .rds()
        .await
        .create_db_instance()
        .db_instance_identifier(id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
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
