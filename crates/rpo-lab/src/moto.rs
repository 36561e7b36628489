//! The AWS emulator for tests and the demo: moto's server mode.
//!
//! [`MotoServer::start`] finds moto in a virtualenv and runs
//! `moto_server -H 127.0.0.1 -p PORT` on a free port, logging to a file in
//! its own temporary directory; it answers in about a second. One server
//! serves every region (the region comes from each request's signature).
//! [`MotoServer::reset`] clears its state; dropping it (or
//! [`MotoServer::stop`]) kills the process it started.
//!
//! The virtualenv is `$RPO_MOTO_VENV` if set, else
//! `$XDG_CACHE_HOME/rpo-exporter/moto-venv` (or `~/.cache/...`). When it has
//! no `moto_server`, it is created with `python3 -m venv` and
//! `pip install 'moto[server]==MOTO_VERSION'` from PyPI (about a minute);
//! a marker written last keeps a half-done install from being used.
//! `scripts/install-deps.sh` does the same ahead of the tests.
//!
//! What moto lacks (EFS replication configurations, ElastiCache global
//! datastores, S3 replication itself) is covered in the tests by recorded
//! responses and by the test playing the replicator.
//!
//! **Metrics where AWS publishes them.** moto accepts any metric in any
//! region and answers any call from any region; AWS does not. The lab puts
//! every CloudWatch datapoint only in the region AWS publishes it in
//! ([`publisher_of`], [`Regions::publishing`]), so a probe that reads a
//! metric in the wrong region finds nothing and fails its test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{free_port, log_tail, LabError, LabResult};

/// The moto release the lab installs (5.x: the server mode and the APIs
/// the tests use are stable there).
pub const MOTO_VERSION: &str = "5.2.5";

/// A running moto server.
pub struct MotoServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl MotoServer {
    /// Installs moto if needed, starts it on a free port, and waits until it
    /// answers.
    pub fn start() -> LabResult<MotoServer> {
        let venv = ensure_venv()?;
        let mut last_error = None;
        for _ in 0..2 {
            match MotoServer::start_in(&venv) {
                Ok(server) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.expect("tried at least once"))
    }

    fn start_in(venv: &Path) -> LabResult<MotoServer> {
        let dir = tempfile::Builder::new()
            .prefix("rpo-lab-moto-")
            .tempdir()
            .map_err(|e| LabError::io("creating the moto lab directory", e))?;
        let log_path = dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| LabError::io(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| LabError::io("duplicating the moto log handle", e))?;
        let port = free_port();
        let child = Command::new(venv.join("bin").join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: "moto_server".to_string(),
                source,
            })?;
        let mut server = MotoServer {
            port,
            child: Some(child),
            dir,
        };
        let started = Instant::now();
        let limit = Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http(port, "GET", "/moto-api/") {
                return Ok(server);
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || started.elapsed() > limit {
                let log_tail = log_tail(&log_path, 20);
                server.stop();
                return Err(LabError::Timeout {
                    what: format!("moto_server on port {port} to answer"),
                    waited: started.elapsed(),
                    log: log_path,
                    log_tail,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, the `endpoint_url` of every AWS kind.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How the exporter's AWS clients reach this emulator in `region`.
    pub fn access(&self, region: &str) -> rpo_exporter::kinds::aws::AwsAccess {
        rpo_exporter::kinds::aws::AwsAccess {
            region: region.to_string(),
            profile: None,
            role_arn: None,
            endpoint_url: Some(self.endpoint_url()),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("moto.log")
    }

    /// Clears every resource in every region (`POST /moto-api/reset`).
    pub fn reset(&self) -> LabResult<()> {
        match http(self.port, "POST", "/moto-api/reset") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(LabError::Command {
                command: "POST /moto-api/reset".to_string(),
                stderr: format!("HTTP {status}: {body}"),
            }),
            Err(e) => Err(LabError::io("POST /moto-api/reset", e)),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server (by the pid this harness started) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The virtualenv holding moto, installed on first use. A marker file
/// written after `pip` succeeds tells a finished install from an
/// interrupted one, which is removed and redone.
pub fn ensure_venv() -> LabResult<PathBuf> {
    // One install per process at a time.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = venv_path();
    let marker = venv.join(format!(".rpo-moto-{MOTO_VERSION}"));
    if marker.is_file() && venv.join("bin").join("moto_server").is_file() {
        return Ok(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| LabError::io(format!("creating {}", parent.display()), e))?;
    }
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("moto[server]=={MOTO_VERSION}")),
        "pip install moto[server]",
    )?;
    std::fs::write(&marker, MOTO_VERSION)
        .map_err(|e| LabError::io(format!("writing {}", marker.display()), e))?;
    Ok(venv)
}

/// Where the moto virtualenv lives.
pub fn venv_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RPO_MOTO_VENV") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("rpo-exporter").join("moto-venv")
}

fn run(command: &mut Command, what: &str) -> LabResult<()> {
    let output = command.output().map_err(|source| LabError::Spawn {
        command: what.to_string(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(if output.stderr.is_empty() {
            &output.stdout
        } else {
            &output.stderr
        });
        Err(LabError::Command {
            command: what.to_string(),
            stderr: text.trim().to_string(),
        })
    }
}

/// A minimal HTTP/1.0 exchange with the local server: (status, body).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Which side of a replicated pair publishes a CloudWatch metric, as AWS
/// documents it (see docs/kinds/aws.md for the sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// The source's region (the primary, the source bucket, the queue).
    Source,
    /// The replica's region (the read replica, the secondary cluster, the
    /// destination bucket).
    Replica,
}

/// Where AWS publishes `metric` of `namespace`. Panics on a metric the
/// exporter does not read: the lab seeds only what AWS documents.
pub fn publisher_of(namespace: &str, metric: &str) -> Publisher {
    match (namespace, metric) {
        // An instance's metrics are published in its own region.
        ("AWS/RDS", "ReplicaLag") => Publisher::Replica,
        // "This metric is available only in secondary AWS Regions."
        ("AWS/RDS", "AuroraGlobalDBRPOLag" | "AuroraGlobalDBReplicationLag") => Publisher::Replica,
        // Reported by the secondary's primary node, in its region.
        ("AWS/ElastiCache", "GlobalDatastoreReplicationLag") => Publisher::Replica,
        // "This metric is published in the Region of the destination bucket."
        (
            "AWS/S3",
            "ReplicationLatency" | "BytesPendingReplication" | "OperationsPendingReplication",
        ) => Publisher::Replica,
        // "This metric is published in the Region of the source bucket."
        ("AWS/S3", "OperationsFailedReplication") => Publisher::Source,
        // Dimensioned by the source file system (FileSystemId); AWS does not
        // name the region: the source's, as the exporter reads it.
        ("AWS/EFS", "TimeSinceLastSync") => Publisher::Source,
        // The queue's own metric, in the queue's region.
        ("AWS/SQS", "ApproximateAgeOfOldestMessage") => Publisher::Source,
        _ => panic!("the lab does not know where AWS publishes {namespace} {metric}"),
    }
}

/// The two regions of a replicated pair in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions {
    pub source: String,
    pub replica: String,
}

impl Regions {
    pub fn new(source: &str, replica: &str) -> Regions {
        Regions {
            source: source.to_string(),
            replica: replica.to_string(),
        }
    }

    /// The one region AWS publishes `metric` in, for this pair.
    pub fn publishing(&self, namespace: &str, metric: &str) -> &str {
        match publisher_of(namespace, metric) {
            Publisher::Source => &self.source,
            Publisher::Replica => &self.replica,
        }
    }
}

impl MotoServer {
    /// Clients of the lab itself in `region` (setting up resources and
    /// datapoints), counting apart from any exporter.
    pub fn admin(&self, region: &str) -> std::sync::Arc<rpo_exporter::kinds::aws::AwsClients> {
        std::sync::Arc::new(rpo_exporter::kinds::aws::AwsClients::new(
            self.access(region),
            std::sync::Arc::default(),
        ))
    }

    /// Creates an Aurora global database `global` with its writer cluster
    /// `primary` in `regions.source` and a secondary cluster `secondary` in
    /// `regions.replica` (moto lists the first member as the writer); the
    /// secondary's ARN.
    pub async fn create_aurora_global(
        &self,
        regions: &Regions,
        global: &str,
        primary: &str,
        secondary: &str,
    ) -> Result<String, String> {
        let source = self.admin(&regions.source).rds().await;
        source
            .create_global_cluster()
            .global_cluster_identifier(global)
            .engine("aurora-postgresql")
            .send()
            .await
            .map_err(|e| format!("CreateGlobalCluster: {e}"))?;
        source
            .create_db_cluster()
            .db_cluster_identifier(primary)
            .engine("aurora-postgresql")
            .master_username("admin")
            .master_user_password("password-password")
            .global_cluster_identifier(global)
            .send()
            .await
            .map_err(|e| format!("CreateDBCluster (writer): {e}"))?;
        let created = self
            .admin(&regions.replica)
            .rds()
            .await
            .create_db_cluster()
            .db_cluster_identifier(secondary)
            .engine("aurora-postgresql")
            .global_cluster_identifier(global)
            .send()
            .await
            .map_err(|e| format!("CreateDBCluster (secondary): {e}"))?;
        created
            .db_cluster()
            .and_then(|c| c.db_cluster_arn())
            .map(str::to_string)
            .ok_or_else(|| "the secondary has no ARN".to_string())
    }

    /// Creates versioned buckets `source` (in `regions.source`) and
    /// `destination` (in `regions.replica`) and a replication rule
    /// `rule_id` from one to the other, with replication metrics on (moto
    /// keeps the rule; it does not replicate).
    pub async fn create_replicated_buckets(
        &self,
        regions: &Regions,
        source: &str,
        destination: &str,
        rule_id: &str,
    ) -> Result<(), String> {
        use aws_sdk_s3::types::{
            BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
            DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination, Metrics,
            MetricsStatus, ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter,
            ReplicationRuleStatus, VersioningConfiguration,
        };
        let e = |what: &'static str| move |err: String| format!("{what}: {err}");
        for (region, bucket) in [(&regions.source, source), (&regions.replica, destination)] {
            let s3 = self.admin(region).s3().await;
            let mut create = s3.create_bucket().bucket(bucket);
            // us-east-1 takes no location constraint; every other region needs one.
            if region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region.as_str()))
                        .build(),
                );
            }
            create
                .send()
                .await
                .map_err(|x| e("CreateBucket")(x.to_string()))?;
            s3.put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(|x| e("PutBucketVersioning")(x.to_string()))?;
        }
        let metrics = Metrics::builder()
            .status(MetricsStatus::Enabled)
            .build()
            .map_err(|x| e("metrics")(x.to_string()))?;
        let rule = ReplicationRule::builder()
            .id(rule_id)
            .priority(1)
            .status(ReplicationRuleStatus::Enabled)
            .filter(ReplicationRuleFilter::builder().prefix("").build())
            .delete_marker_replication(
                DeleteMarkerReplication::builder()
                    .status(DeleteMarkerReplicationStatus::Disabled)
                    .build(),
            )
            .destination(
                Destination::builder()
                    .bucket(format!("arn:aws:s3:::{destination}"))
                    .metrics(metrics)
                    .build()
                    .map_err(|x| e("destination")(x.to_string()))?,
            )
            .build()
            .map_err(|x| e("rule")(x.to_string()))?;
        let configuration = ReplicationConfiguration::builder()
            .role("arn:aws:iam::123456789012:role/s3-replication")
            .rules(rule)
            .build()
            .map_err(|x| e("replication configuration")(x.to_string()))?;
        self.admin(&regions.source)
            .s3()
            .await
            .put_bucket_replication()
            .bucket(source)
            .replication_configuration(configuration)
            .send()
            .await
            .map_err(|x| e("PutBucketReplication")(x.to_string()))?;
        Ok(())
    }
}

/// The AWS part of the demo: resources on a running moto, kept alive.
pub struct AwsDemo {
    /// `[[rds]]`, `[[aurora_global]]`, `[[s3]]` and `[[sqs]]` blocks for the
    /// demo config, pointing at the emulator.
    pub config_blocks: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for AwsDemo {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl MotoServer {
    /// Seeds the emulator for the demo, as AWS would look with healthy
    /// replication: an RDS source with a cross-region replica, an Aurora
    /// global database, S3 buckets with a replication rule (a task plays the
    /// replicator, one second behind), and an SQS queue with its dead-letter
    /// queue; a task keeps CloudWatch datapoints arriving every 20 s.
    pub async fn seed_demo(&self, group: &str, instance: &str) -> Result<AwsDemo, String> {
        use rpo_exporter::kinds::aws::AwsClients;
        use rpo_exporter::self_metrics::AwsCallCounters;
        use std::sync::Arc;

        let counters = Arc::new(AwsCallCounters::default());
        let east = Arc::new(AwsClients::new(self.access("us-east-1"), counters.clone()));
        let west = Arc::new(AwsClients::new(self.access("us-west-2"), counters));
        let e = |what: &str| {
            let what = what.to_string();
            move |err: String| format!("seeding moto ({what}): {err}")
        };
        let rds = east.rds().await;
        let source = rds
            .create_db_instance()
            .db_instance_identifier("erp-db")
            .db_instance_class("db.t3.micro")
            .engine("postgres")
            .master_username("admin")
            .master_user_password("demo-password")
            .allocated_storage(20)
            .send()
            .await
            .map_err(|x| e("RDS source")(x.to_string()))?;
        let source_arn = source
            .db_instance()
            .and_then(|i| i.db_instance_arn())
            .unwrap_or_default()
            .to_string();
        let rds_replica = west
            .rds()
            .await
            .create_db_instance_read_replica()
            .db_instance_identifier("erp-db-dr")
            .source_db_instance_identifier(&source_arn)
            .send()
            .await
            .map_err(|x| e("RDS replica")(x.to_string()))?
            .db_instance()
            .and_then(|i| i.db_instance_arn())
            .unwrap_or_default()
            .to_string();
        let regions = Regions::new("us-east-1", "us-west-2");
        let aurora_secondary = self
            .create_aurora_global(&regions, "erp-global", "erp-aurora", "erp-aurora-dr")
            .await
            .map_err(e("Aurora global database"))?;
        // The rule has replication metrics on, as S3 RTC turns them on.
        self.create_replicated_buckets(&regions, "erp-files", "erp-files-dr", "to-dr")
            .await
            .map_err(e("S3 buckets and replication"))?;
        let (s3_east, s3_west) = (east.s3().await, west.s3().await);
        let sqs = east.sqs().await;
        for queue in ["erp-outbox-dlq", "erp-outbox"] {
            sqs.create_queue()
                .queue_name(queue)
                .send()
                .await
                .map_err(|x| e("SQS")(x.to_string()))?;
        }

        let mut tasks = Vec::new();
        // CloudWatch, as AWS would publish it: a datapoint a minute or so,
        // each metric only in the region AWS publishes it in.
        let feeder = {
            let regions = Regions::new("us-east-1", "us-west-2");
            let aurora = [
                ("DBClusterIdentifier", "erp-aurora-dr"),
                ("SourceRegion", "us-east-1"),
            ];
            let series: Vec<DemoSeries> = [
                (
                    "AWS/RDS",
                    "ReplicaLag",
                    &[("DBInstanceIdentifier", "erp-db-dr")][..],
                    2.0,
                ),
                ("AWS/RDS", "AuroraGlobalDBRPOLag", &aurora[..], 800.0),
                (
                    "AWS/RDS",
                    "AuroraGlobalDBReplicationLag",
                    &aurora[..],
                    600.0,
                ),
                ("AWS/S3", "ReplicationLatency", &S3_DIMENSIONS[..], 4.0),
                ("AWS/S3", "BytesPendingReplication", &S3_DIMENSIONS[..], 0.0),
                (
                    "AWS/S3",
                    "OperationsPendingReplication",
                    &S3_DIMENSIONS[..],
                    0.0,
                ),
                (
                    "AWS/S3",
                    "OperationsFailedReplication",
                    &S3_DIMENSIONS[..],
                    0.0,
                ),
                (
                    "AWS/SQS",
                    "ApproximateAgeOfOldestMessage",
                    &[("QueueName", "erp-outbox")][..],
                    0.0,
                ),
            ]
            .into_iter()
            .map(|(namespace, metric, dimensions, value)| DemoSeries {
                clients: if regions.publishing(namespace, metric) == "us-east-1" {
                    east.clone()
                } else {
                    west.clone()
                },
                namespace,
                metric,
                dimensions: dimensions.to_vec(),
                value,
            })
            .collect();
            async move {
                loop {
                    for s in &series {
                        let _ = s
                            .clients
                            .cloudwatch()
                            .await
                            .put_metric_data()
                            .namespace(s.namespace)
                            .metric_data(metric_datum(
                                s.metric,
                                &s.dimensions,
                                std::time::SystemTime::now(),
                                s.value,
                            ))
                            .send()
                            .await;
                    }
                    tokio::time::sleep(Duration::from_secs(20)).await;
                }
            }
        };
        tasks.push(tokio::spawn(feeder));
        // The replicator moto does not have: the canary, one second behind.
        let key = format!("rpo-canary/{instance}");
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                if let Ok(object) = s3_east
                    .get_object()
                    .bucket("erp-files")
                    .key(&key)
                    .send()
                    .await
                {
                    if let Ok(body) = object.body.collect().await {
                        let body = body.into_bytes();
                        if last.as_ref() != Some(&body) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = s3_west
                                .put_object()
                                .bucket("erp-files-dr")
                                .key(&key)
                                .body(body.clone().into())
                                .send()
                                .await;
                            last = Some(body);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));

        let endpoint = self.endpoint_url();
        let common = format!(
            "group = \"{group}\"\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\npoll_interval = \"5s\"\nstale_after = \"10m\"\n"
        );
        let config_blocks = format!(
            r#"
# AWS kinds against the local AWS emulator (moto): CloudWatch evidence is
# minutes old by nature, so these budgets are minutes, the canary's seconds.
# The replicas, the secondary and the rules are named, so an exporter
# started while us-east-1 is unreachable still knows where to look.
[[rds]]
name = "erp-rds"
rpo_budget = "10m"
source_instance = "erp-db"
replicas = ["{rds_replica}"]
{common}
[[aurora_global]]
name = "erp-aurora"
rpo_budget = "10m"
global_cluster = "erp-global"
secondary_clusters = ["{aurora_secondary}"]
{common}
[[s3]]
name = "erp-files"
rpo_budget = "30s"
source_bucket = "erp-files"
destination_bucket = "erp-files-dr"
destination_region = "us-west-2"
rule_ids = ["to-dr"]
canary = {{ interval = "2s", prefix = "rpo-canary/" }}
{common}
[[sqs]]
name = "erp-outbox"
rpo_budget = "5m"
queue_name = "erp-outbox"
dead_letter_queue_name = "erp-outbox-dlq"
{common}"#
        );
        Ok(AwsDemo {
            config_blocks,
            tasks,
        })
    }
}

/// One series the demo keeps publishing, with the clients of the one region
/// AWS publishes it in.
struct DemoSeries {
    clients: std::sync::Arc<rpo_exporter::kinds::aws::AwsClients>,
    namespace: &'static str,
    metric: &'static str,
    dimensions: Vec<(&'static str, &'static str)>,
    value: f64,
}

/// The demo's S3 rule, as the replication metrics' dimensions name it.
const S3_DIMENSIONS: [(&str, &str); 3] = [
    ("SourceBucket", "erp-files"),
    ("DestinationBucket", "erp-files-dr"),
    ("RuleId", "to-dr"),
];

/// One CloudWatch datapoint of `metric` with `dimensions`, at `at`.
pub fn metric_datum(
    metric: &str,
    dimensions: &[(&str, &str)],
    at: std::time::SystemTime,
    value: f64,
) -> aws_sdk_cloudwatch::types::MetricDatum {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let mut datum = MetricDatum::builder()
        .metric_name(metric)
        .timestamp(at.into())
        .value(value);
    for (name, value) in dimensions {
        datum = datum.dimensions(Dimension::builder().name(*name).value(*value).build());
    }
    datum.build()
}

/// Dummy credentials for a process that talks to moto only (the demo), and
/// the user's AWS files kept out. Call before any thread starts.
pub fn use_emulator_credentials() {
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ] {
        std::env::set_var(name, value);
    }
    std::env::remove_var("AWS_SESSION_TOKEN");
    std::env::remove_var("AWS_PROFILE");
}

/// The demo's emulator and its resources, or `None` (with a note on
/// stderr) when moto cannot run here: the demo goes on without AWS kinds.
pub async fn start_demo(group: &str, instance: &str) -> Option<(MotoServer, AwsDemo)> {
    eprintln!("starting the AWS emulator (moto)...");
    let moto = match tokio::task::spawn_blocking(MotoServer::start).await {
        Ok(Ok(moto)) => moto,
        Ok(Err(e)) => {
            eprintln!("rpo-lab: no AWS kinds in this demo: {e}");
            return None;
        }
        Err(_) => return None,
    };
    match moto.seed_demo(group, instance).await {
        Ok(demo) => {
            eprintln!("AWS emulator on {}", moto.endpoint_url());
            Some((moto, demo))
        }
        Err(e) => {
            eprintln!("rpo-lab: no AWS kinds in this demo: {e}");
            None
        }
    }
}
