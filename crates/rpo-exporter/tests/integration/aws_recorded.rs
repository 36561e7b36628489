//! The AWS kinds whose status APIs moto lacks (`efs`: EFS replication
//! configurations; `elasticache_global`: ElastiCache Global Datastores).
//!
//! The lab's region proxy (`rpo_lab::aws_proxy`) stands in front of moto:
//! the calls moto lacks get recorded responses in the real shapes AWS
//! documents (timestamps moved to now), per region where each region
//! answers differently, read by the real SDK; every other call (CloudWatch
//! `GetMetricData`) is passed through to moto, where the test has put the
//! datapoints in the region AWS publishes them in. So the whole probe runs
//! as in production, through `endpoint_url`, and the proxy's per-region
//! counts show which region each call went to. Losing a region (the proxy
//! leaves its calls unanswered) shows what each kind keeps. What these
//! recorded answers cannot show is how real AWS answers in a region while
//! another is down: docs/kinds/aws.md says what that rests on.

use std::time::Duration;

use rpo_exporter::probe::unix_seconds;
use rpo_lab::aws_proxy::{Recorded, RegionFault, RegionProxy};
use rpo_lab::support::aws::*;
use rpo_lab::support::{
    assert_metric, failures_counted, metric_value, now_unix, reasons, Exporter,
};

const EFS_PATH: &str = "/2015-02-01/file-systems/replication-configurations";
pub(crate) const SOURCE_FS: &str = "fs-0123456789abcdef0";
pub(crate) const DESTINATION_FS: &str = "fs-0fedcba9876543210";

/// `DescribeReplicationConfigurations` as the EFS API reference shows it:
/// one source, an ENABLED destination and a PAUSED one.
fn efs_replications(last_replicated: f64) -> String {
    format!(
        r#"{{"Replications":[{{"SourceFileSystemId":"fs-0123456789abcdef0","SourceFileSystemRegion":"us-east-1","SourceFileSystemArn":"arn:aws:elasticfilesystem:us-east-1:111122223333:file-system/fs-0123456789abcdef0","OriginalSourceFileSystemArn":"arn:aws:elasticfilesystem:us-east-1:111122223333:file-system/fs-0123456789abcdef0","CreationTime":1641491892.0,"Destinations":[{{"Status":"ENABLED","FileSystemId":"fs-0fedcba9876543210","Region":"us-west-2","LastReplicatedTimestamp":{last_replicated}}},{{"Status":"PAUSED","FileSystemId":"fs-0aaaabbbbccccdddd","Region":"eu-west-1","StatusMessage":"Replication is paused because the destination file system is out of capacity.","LastReplicatedTimestamp":{last_replicated}}}]}}]}}"#
    )
}

/// The same configuration with the one ENABLED destination, as the source's
/// region (asked by the source's ID) or the destination's region (asked by
/// the destination's ID) describes it.
fn efs_one_destination(last_replicated: f64) -> String {
    format!(
        r#"{{"Replications":[{{"SourceFileSystemId":"fs-0123456789abcdef0","SourceFileSystemRegion":"us-east-1","SourceFileSystemArn":"arn:aws:elasticfilesystem:us-east-1:111122223333:file-system/fs-0123456789abcdef0","OriginalSourceFileSystemArn":"arn:aws:elasticfilesystem:us-east-1:111122223333:file-system/fs-0123456789abcdef0","CreationTime":1641491892.0,"Destinations":[{{"Status":"ENABLED","FileSystemId":"fs-0fedcba9876543210","Region":"us-west-2","LastReplicatedTimestamp":{last_replicated}}}]}}]}}"#
    )
}

/// The EFS answers of both regions: the source's by its ID in us-east-1,
/// the destination's by its own ID in us-west-2.
pub(crate) fn record_efs(proxy: &RegionProxy, source_says: f64, destination_says: f64) {
    proxy.record(Recorded::json(
        Some("us-east-1"),
        &format!("{EFS_PATH}?FileSystemId={SOURCE_FS}"),
        efs_one_destination(source_says),
    ));
    proxy.record(Recorded::json(
        Some("us-west-2"),
        &format!("{EFS_PATH}?FileSystemId={DESTINATION_FS}"),
        efs_one_destination(destination_says),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efs_recorded_replication_status_and_time_since_last_sync_on_moto() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let last_replicated = unix_seconds(std::time::SystemTime::now()) - 90.0;
    let t = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &moto,
        &Regions::new("us-east-1", "us-west-2"),
        "AWS/EFS",
        "TimeSinceLastSync",
        &[
            ("FileSystemId", SOURCE_FS),
            ("DestinationFileSystemId", DESTINATION_FS),
        ],
        t,
        75.0,
    )
    .await;
    // Every region answers with the whole configuration.
    proxy.record(Recorded::json(
        None,
        EFS_PATH,
        efs_replications(last_replicated),
    ));
    let k = aws_keys_at(&proxy.endpoint_url(), "us-east-1");
    let exporter = Exporter::start(&aws_config(&format!(
        r#"
[[efs]]
name = "erp-attachments"
group = "erp"
file_system_id = "fs-0123456789abcdef0"
destination_file_system_id = "fs-0fedcba9876543210"
{k}
[[efs]]
name = "erp-archive"
group = "erp"
file_system_id = "fs-0123456789abcdef0"
destination_file_system_id = "fs-0aaaabbbbccccdddd"
{k}"#
    )))
    .await;
    let text = exporter.wait_for_probe_success("erp-attachments").await;
    let target = [("target", "erp-attachments")];
    // LastReplicatedTimestamp is the recovery point itself.
    assert_eq!(
        metric_value(&text, "rpo_recovery_point_timestamp_seconds", &target),
        Some(last_replicated),
        "{text}"
    );
    assert_metric(
        &text,
        "rpo_efs_last_sync_timestamp_seconds",
        &target,
        Some(last_replicated),
    );
    assert_metric(
        &text,
        "rpo_efs_time_since_last_sync_seconds",
        &target,
        Some(75.0),
    );
    assert_metric(&text, "rpo_replication_healthy", &target, Some(1.0));
    assert_metric(&text, "rpo_source_reachable", &target, Some(1.0));
    assert_metric(&text, "rpo_replica_reachable", &target, Some(1.0));
    assert_eq!(
        exporter.target_verdict("erp-attachments").await["ready"],
        true
    );
    // The paused destination: NO-GO with AWS's own words.
    exporter.wait_for_probe_success("erp-archive").await;
    let archive = exporter.target_verdict("erp-archive").await;
    assert_eq!(archive["ready"], false);
    assert!(
        reasons(&archive).contains("PAUSED (Replication is paused"),
        "{archive}"
    );
    let text = exporter.metrics().await;
    assert!(
        metric_value(
            &text,
            "rpo_aws_api_requests_total",
            &[
                ("service", "efs"),
                ("operation", "DescribeReplicationConfigurations")
            ]
        )
        .unwrap()
            >= 2.0
    );
    // Each destination was asked in its own region, the metric in the source's.
    assert!(proxy.requests("us-west-2", "elasticfilesystem") > 0);
    assert!(proxy.requests("eu-west-1", "elasticfilesystem") > 0);
    assert!(proxy.requests("us-east-1", "monitoring") > 0);
    assert_eq!(proxy.requests("us-west-2", "monitoring"), 0);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efs_is_described_in_the_destination_region_when_the_source_region_is_lost() {
    let (_moto, proxy) = start_moto_behind_proxy().await;
    let t1 = (now_unix() - 300.0).floor();
    record_efs(&proxy, t1, t1);
    let keys = aws_keys_at(&proxy.endpoint_url(), "us-east-1");
    let target = |extra: &str| {
        aws_config(&format!(
            "[[efs]]\nname = \"erp-attachments\"\ngroup = \"erp\"\nfile_system_id = \"{SOURCE_FS}\"\ndestination_file_system_id = \"{DESTINATION_FS}\"\n{extra}{keys}"
        ))
    };
    // The destination's region is learned from the source's first answer.
    let exporter = Exporter::start(&target("")).await;
    exporter.wait_for_probe_success("erp-attachments").await;
    wait_for_recovery_point(&exporter, "erp-attachments", t1).await;
    exporter
        .wait_for_target_ready(
            "erp-attachments",
            Duration::from_secs(20),
            "GO with both regions up",
        )
        .await;

    let lost_at = now_unix();
    proxy.lose("us-east-1", RegionFault::Blackhole);
    assert_source_region_lost(&exporter, "erp-attachments", t1, lost_at, Some(1.0)).await;
    // The destination's region goes on answering: a newer sync is read there.
    let t2 = (now_unix() - 60.0).floor();
    record_efs(&proxy, t1, t2);
    wait_for_recovery_point(&exporter, "erp-attachments", t2).await;
    assert_eq!(
        target_verdict_in(&exporter, "erp-attachments", "unplanned").await["ready"],
        true
    );

    // Started while the source's region is lost: `destination_region`
    // says where to ask ...
    let with_region = Exporter::start(&target("destination_region = \"us-west-2\"\n")).await;
    wait_for_recovery_point(&with_region, "erp-attachments", t2).await;
    assert_eq!(
        target_verdict_in(&with_region, "erp-attachments", "unplanned").await["ready"],
        true
    );
    with_region.stop().await;
    // ... without it nothing can be asked.
    let blind = Exporter::start(&target("")).await;
    let verdict = blind
        .wait_for_target(
            "erp-attachments",
            Duration::from_secs(20),
            "the blind exporter to fail",
            |v| reasons(v).contains("us-east-1"),
        )
        .await;
    assert_eq!(verdict["ready"], false, "{verdict}");
    assert!(verdict["recovery_point"].is_null(), "{verdict}");
    blind.stop().await;

    // The destination's region lost instead.
    record_efs(&proxy, t2, t2);
    proxy.restore("us-east-1");
    proxy.lose("us-west-2", RegionFault::Refuse);
    assert_replica_region_lost(&exporter, "erp-attachments", t2).await;
    exporter.stop().await;
}

/// `DescribeGlobalReplicationGroups` (with member info) as the ElastiCache
/// API reference shows it.
pub(crate) const GLOBAL_GROUPS: &str = r#"<DescribeGlobalReplicationGroupsResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">
  <DescribeGlobalReplicationGroupsResult>
    <GlobalReplicationGroups>
      <GlobalReplicationGroup>
        <GlobalReplicationGroupId>ldgnf-erp-sessions</GlobalReplicationGroupId>
        <GlobalReplicationGroupDescription>ERP sessions</GlobalReplicationGroupDescription>
        <Status>available</Status>
        <CacheNodeType>cache.r6g.large</CacheNodeType>
        <Engine>redis</Engine>
        <EngineVersion>7.1</EngineVersion>
        <Members>
          <GlobalReplicationGroupMember>
            <ReplicationGroupId>erp-sessions</ReplicationGroupId>
            <ReplicationGroupRegion>us-east-1</ReplicationGroupRegion>
            <Role>PRIMARY</Role>
            <AutomaticFailover>enabled</AutomaticFailover>
            <Status>associated</Status>
          </GlobalReplicationGroupMember>
          <GlobalReplicationGroupMember>
            <ReplicationGroupId>erp-sessions-dr</ReplicationGroupId>
            <ReplicationGroupRegion>eu-west-1</ReplicationGroupRegion>
            <Role>SECONDARY</Role>
            <AutomaticFailover>enabled</AutomaticFailover>
            <Status>associated</Status>
          </GlobalReplicationGroupMember>
        </Members>
        <ClusterEnabled>false</ClusterEnabled>
        <AuthTokenEnabled>false</AuthTokenEnabled>
        <TransitEncryptionEnabled>true</TransitEncryptionEnabled>
        <AtRestEncryptionEnabled>true</AtRestEncryptionEnabled>
        <ARN>arn:aws:elasticache::123456789012:globalreplicationgroup:ldgnf-erp-sessions</ARN>
      </GlobalReplicationGroup>
    </GlobalReplicationGroups>
  </DescribeGlobalReplicationGroupsResult>
  <ResponseMetadata>
    <RequestId>0d4d4a6e-7d8a-4b8e-9d59-3a5b0f0e1c11</RequestId>
  </ResponseMetadata>
</DescribeGlobalReplicationGroupsResponse>"#;

/// `DescribeReplicationGroups` of the secondary, trimmed to what matters.
pub(crate) const SECONDARY_GROUP: &str = r#"<DescribeReplicationGroupsResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">
  <DescribeReplicationGroupsResult>
    <ReplicationGroups>
      <ReplicationGroup>
        <ReplicationGroupId>erp-sessions-dr</ReplicationGroupId>
        <Description>ERP sessions, DR</Description>
        <GlobalReplicationGroupInfo>
          <GlobalReplicationGroupId>ldgnf-erp-sessions</GlobalReplicationGroupId>
          <GlobalReplicationGroupMemberRole>SECONDARY</GlobalReplicationGroupMemberRole>
        </GlobalReplicationGroupInfo>
        <Status>available</Status>
        <MemberClusters>
          <ClusterId>erp-sessions-dr-001</ClusterId>
          <ClusterId>erp-sessions-dr-002</ClusterId>
        </MemberClusters>
        <AutomaticFailover>enabled</AutomaticFailover>
        <ClusterEnabled>false</ClusterEnabled>
        <ARN>arn:aws:elasticache:eu-west-1:123456789012:replicationgroup:erp-sessions-dr</ARN>
      </ReplicationGroup>
    </ReplicationGroups>
  </DescribeReplicationGroupsResult>
  <ResponseMetadata>
    <RequestId>8c1d7a52-0f5e-4e0b-8a0c-2f2f7f3b9d20</RequestId>
  </ResponseMetadata>
</DescribeReplicationGroupsResponse>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_global_recorded_members_and_lag_on_moto() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let t = minute_start_ago(Duration::from_secs(60));
    // Only the secondary's primary node publishes the lag, in its region.
    put_datapoint(
        &moto,
        &Regions::new("us-east-1", "eu-west-1"),
        "AWS/ElastiCache",
        "GlobalDatastoreReplicationLag",
        &[("CacheClusterId", "erp-sessions-dr-001")],
        t,
        0.6,
    )
    .await;
    record_elasticache(&proxy);
    let exporter = Exporter::start(&aws_config(&format!(
        "[[elasticache_global]]\nname = \"erp-sessions\"\ngroup = \"erp\"\nglobal_replication_group = \"ldgnf-erp-sessions\"\n{}",
        aws_keys_at(&proxy.endpoint_url(), "us-east-1")
    )))
    .await;
    let text = exporter.wait_for_probe_success("erp-sessions").await;
    let target = [("target", "erp-sessions")];
    assert_eq!(
        metric_value(
            &text,
            "rpo_elasticache_global_replication_lag_seconds",
            &[("node", "erp-sessions-dr-001")]
        ),
        Some(0.6),
        "{text}"
    );
    assert_metric(
        &text,
        "rpo_elasticache_global_replication_lag_seconds",
        &[("node", "erp-sessions-dr-002")],
        None,
    );
    assert_metric(
        &text,
        "rpo_recovery_point_timestamp_seconds",
        &target,
        Some(unix_seconds(t) - 0.6),
    );
    assert_metric(
        &text,
        "rpo_evidence_timestamp_seconds",
        &target,
        Some(unix_seconds(t)),
    );
    assert_metric(
        &text,
        "rpo_elasticache_global_member_associated",
        &[("secondary", "erp-sessions-dr")],
        Some(1.0),
    );
    assert_metric(&text, "rpo_replication_healthy", &target, Some(1.0));
    assert_eq!(exporter.target_verdict("erp-sessions").await["ready"], true);
    // The secondary's nodes and lag were asked in its region only.
    assert!(proxy.requests("eu-west-1", "elasticache") > 0);
    assert!(proxy.requests("eu-west-1", "monitoring") > 0);
    assert_eq!(proxy.requests("us-east-1", "monitoring"), 0);
    exporter.stop().await;
}

/// The global datastore's members, the same in every member region; the
/// secondary's own replication group only in its region (asked anywhere
/// else, moto answers that it does not exist).
fn record_elasticache(proxy: &RegionProxy) {
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalReplicationGroups",
        GLOBAL_GROUPS,
    ));
    proxy.record(Recorded::xml(
        Some("eu-west-1"),
        "Action=DescribeReplicationGroups",
        SECONDARY_GROUP,
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_global_is_described_in_the_secondary_region_when_the_primary_region_is_lost() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let regions = Regions::new("us-east-1", "eu-west-1");
    let lag = |at: std::time::SystemTime, seconds: f64| {
        put_datapoint(
            &moto,
            &regions,
            "AWS/ElastiCache",
            "GlobalDatastoreReplicationLag",
            &[("CacheClusterId", "erp-sessions-dr-001")],
            at,
            seconds,
        )
    };
    let t1 = minute_start_ago(Duration::from_secs(120));
    lag(t1, 2.0).await;
    record_elasticache(&proxy);
    let keys = aws_keys_at(&proxy.endpoint_url(), "us-east-1");
    let target = |extra: &str| {
        aws_config(&format!(
            "[[elasticache_global]]\nname = \"erp-sessions\"\ngroup = \"erp\"\nglobal_replication_group = \"ldgnf-erp-sessions\"\n{extra}{keys}"
        ))
    };
    let exporter = Exporter::start(&target("")).await;
    exporter.wait_for_probe_success("erp-sessions").await;
    let rp = unix_seconds(t1) - 2.0;
    wait_for_recovery_point(&exporter, "erp-sessions", rp).await;
    exporter
        .wait_for_target_ready(
            "erp-sessions",
            Duration::from_secs(20),
            "GO with both regions up",
        )
        .await;

    let lost_at = now_unix();
    proxy.lose("us-east-1", RegionFault::Refuse);
    let before = proxy.requests("eu-west-1", "elasticache");
    assert_source_region_lost(&exporter, "erp-sessions", rp, lost_at, Some(1.0)).await;
    let t2 = minute_start_ago(Duration::from_secs(60));
    lag(t2, 1.0).await;
    wait_for_recovery_point(&exporter, "erp-sessions", unix_seconds(t2) - 1.0).await;
    assert_eq!(
        target_verdict_in(&exporter, "erp-sessions", "unplanned").await["ready"],
        true
    );
    // Both the members and the nodes came from the secondary's region.
    assert!(proxy.requests("eu-west-1", "elasticache") >= before + 2);

    // Started while the primary's region is lost: `secondary_region` says
    // where to ask ...
    let with_region = Exporter::start(&target("secondary_region = \"eu-west-1\"\n")).await;
    wait_for_recovery_point(&with_region, "erp-sessions", unix_seconds(t2) - 1.0).await;
    with_region.stop().await;
    // ... without it, the error says so.
    let blind = Exporter::start(&target("")).await;
    let verdict = blind
        .wait_for_target(
            "erp-sessions",
            Duration::from_secs(20),
            "the blind exporter to say what to configure",
            |v| reasons(v).contains("secondary_region"),
        )
        .await;
    assert_eq!(verdict["ready"], false);
    blind.stop().await;

    let rp = unix_seconds(t2) - 1.0;
    proxy.restore("us-east-1");
    proxy.lose("eu-west-1", RegionFault::Blackhole);
    assert_replica_region_lost(&exporter, "erp-sessions", rp).await;
    exporter.stop().await;
}

/// A `GetMetricData` answer (query protocol, as the CloudWatch API
/// reference shows it) whose series `q0`..`q3` all carry `status` and one
/// message, and no datapoints.
fn get_metric_data_with_status(status: &str, message: &str) -> String {
    let members: String = (0..4)
        .map(|i| {
            format!(
                "<member><Id>q{i}</Id><Label>ReplicaLag</Label><StatusCode>{status}</StatusCode><Timestamps/><Values/><Messages><member><Code>{status}</Code><Value>{message}</Value></member></Messages></member>"
            )
        })
        .collect();
    format!(
        r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults>{members}</MetricDataResults><Messages/></GetMetricDataResult><ResponseMetadata><RequestId>recorded</RequestId></ResponseMetadata></GetMetricDataResponse>"#
    )
}

/// Issue 10 item 7: CloudWatch answers `GetMetricData` with HTTP 200 and a
/// per-series `StatusCode`. A `Forbidden` series (a permission missing for
/// that metric) or an `InternalError` one is a failure of the target naming
/// the metric and AWS's message (`auth` / `aws_api`), never "no datapoint".
/// moto never returns these statuses, so the region proxy answers with the
/// recorded shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metric_data_series_status_is_a_failure_naming_the_metric() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let east = admin(&moto, "us-east-1");
    create_db_instance(&east, "erp-db").await;
    create_read_replica(&east, "erp-db-ro", "erp-db").await;
    proxy.record(Recorded::xml(
        Some("us-east-1"),
        "Action=GetMetricData",
        get_metric_data_with_status(
            "Forbidden",
            "User is not authorized to read AWS/RDS ReplicaLag",
        ),
    ));
    let keys = aws_keys_at(&proxy.endpoint_url(), "us-east-1");
    let exporter = Exporter::start(&aws_config(&format!(
        "[[rds]]\nname = \"erp-rds\"\ngroup = \"erp\"\nsource_instance = \"erp-db\"\n{keys}"
    )))
    .await;
    let verdict = exporter
        .wait_for_target(
            "erp-rds",
            Duration::from_secs(30),
            "the forbidden series to fail the target",
            |v| reasons(v).contains("Forbidden"),
        )
        .await;
    let text = reasons(&verdict);
    assert_eq!(verdict["ready"], false, "{verdict}");
    assert!(
        text.contains("AWS/RDS/ReplicaLag")
            && text.contains("User is not authorized to read AWS/RDS ReplicaLag"),
        "{verdict}"
    );
    assert!(!text.contains("no ReplicaLag datapoint"), "{verdict}");
    let metrics = exporter.metrics().await;
    assert!(
        failures_counted(&metrics, &[("erp-rds", "auth")]),
        "{metrics}"
    );
    assert_metric(
        &metrics,
        "rpo_recovery_point_timestamp_seconds",
        &[("target", "erp-rds")],
        None,
    );

    // CloudWatch failing the series: aws_api, still naming the metric.
    proxy.record(Recorded::xml(
        Some("us-east-1"),
        "Action=GetMetricData",
        get_metric_data_with_status("InternalError", "Internal service failure"),
    ));
    let verdict = exporter
        .wait_for_target(
            "erp-rds",
            Duration::from_secs(30),
            "the failed series to fail the target",
            |v| reasons(v).contains("Internal service failure"),
        )
        .await;
    assert_eq!(verdict["ready"], false, "{verdict}");
    assert!(
        reasons(&verdict).contains("AWS/RDS/ReplicaLag"),
        "{verdict}"
    );
    let metrics = exporter.metrics().await;
    assert!(
        failures_counted(&metrics, &[("erp-rds", "aws_api")]),
        "{metrics}"
    );
    exporter.stop().await;
}

// ---------------------------------------------------------------------------
// Following a promotion (SPEC section 11) where the API names the writer.
// moto's writer flags do not follow a switchover, so the member calls are
// answered with recorded responses (before, after, two writers) and only
// the CloudWatch lags come from moto.

/// `DescribeGlobalClusters` as the RDS API reference shows it (query
/// protocol: both lists' items are `GlobalClusterMember`), with the
/// `IsWriter` flag of the us-east-1 member (`erp-aurora`) and of the
/// eu-west-1 member (`erp-aurora-dr`).
fn global_clusters(east_writes: bool, west_writes: bool) -> String {
    let member = |region: &str, id: &str, writer: bool| {
        let sync = if writer {
            String::new()
        } else {
            "<SynchronizationStatus>connected</SynchronizationStatus>".to_string()
        };
        format!(
            "<GlobalClusterMember><DBClusterArn>arn:aws:rds:{region}:123456789012:cluster:{id}</DBClusterArn><IsWriter>{writer}</IsWriter><GlobalWriteForwardingStatus>disabled</GlobalWriteForwardingStatus>{sync}</GlobalClusterMember>"
        )
    };
    format!(
        r#"<DescribeGlobalClustersResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">
  <DescribeGlobalClustersResult>
    <GlobalClusters>
      <GlobalClusterMember>
        <GlobalClusterIdentifier>erp-global</GlobalClusterIdentifier>
        <GlobalClusterResourceId>cluster-0a1b2c3d4e5f6a7b8</GlobalClusterResourceId>
        <GlobalClusterArn>arn:aws:rds::123456789012:global-cluster:erp-global</GlobalClusterArn>
        <Status>available</Status>
        <Engine>aurora-postgresql</Engine>
        <EngineVersion>15.4</EngineVersion>
        <StorageEncrypted>true</StorageEncrypted>
        <DeletionProtection>false</DeletionProtection>
        <GlobalClusterMembers>{}{}</GlobalClusterMembers>
      </GlobalClusterMember>
    </GlobalClusters>
  </DescribeGlobalClustersResult>
  <ResponseMetadata>
    <RequestId>5e4c8f0a-2b7d-4c1e-9a3f-6d8b0e2f4a61</RequestId>
  </ResponseMetadata>
</DescribeGlobalClustersResponse>"#,
        member("us-east-1", "erp-aurora", east_writes),
        member("eu-west-1", "erp-aurora-dr", west_writes)
    )
}

/// Waits until `target` reports `rpo_promoted` 1; the scrape.
async fn wait_for_promoted(exporter: &rpo_lab::support::ExporterClient, target: &str) -> String {
    exporter
        .wait_for_metrics(Duration::from_secs(20), "rpo_promoted 1", |text| {
            metric_value(text, "rpo_promoted", &[("target", target)]) == Some(1.0)
        })
        .await
}

/// After a promotion seen through the API: promoted, no split brain, the
/// loss predicted but not measured (no heartbeat), said in words.
async fn assert_promoted_without_measured_loss(
    exporter: &rpo_lab::support::ExporterClient,
    target: &str,
) {
    let text = wait_for_promoted(exporter, target).await;
    let labels = [("target", target)];
    assert_metric(&text, "rpo_split_brain", &labels, Some(0.0));
    // No heartbeat on these kinds: nothing measured, never a made-up 0.
    assert_metric(&text, "rpo_measured_loss_seconds", &labels, None);
    assert!(metric_value(&text, "rpo_promotion_timestamp_seconds", &labels).is_some());
    let verdict = exporter.target_verdict(target).await;
    let words = format!("{} {}", reasons(&verdict), verdict["notes"]);
    assert!(words.contains("replica promoted at "), "{verdict}");
    assert!(words.contains("has no heartbeat"), "{verdict}");
    assert_eq!(verdict["promotion"]["side"], "replica_url", "{verdict}");
}

/// Waits for split brain on `target`: NO-GO in both modes, said first.
async fn assert_split_brain(exporter: &rpo_lab::support::ExporterClient, target: &str) {
    let text = exporter
        .wait_for_metrics(Duration::from_secs(20), "rpo_split_brain 1", |text| {
            metric_value(text, "rpo_split_brain", &[("target", target)]) == Some(1.0)
        })
        .await;
    assert_metric(&text, "rpo_target_ready", &[("target", target)], Some(0.0));
    for mode in ["planned", "unplanned"] {
        let (status, verdict) = exporter.verdict(&format!("?mode={mode}")).await;
        assert_eq!(status, 503, "{mode}: {verdict}");
        let first = rpo_lab::support::first_reason(&verdict);
        assert!(
            first.starts_with(&format!("{target}: split brain")),
            "{mode}: {first}"
        );
        assert_eq!(
            verdict["reason_details"][0]["code"], "split_brain",
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_global_switchover_is_followed_from_the_writer_flags() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let t = minute_start_ago(Duration::from_secs(60));
    // The lag of each direction, published in the secondary's region.
    for (regions, secondary) in [
        (Regions::new("us-east-1", "eu-west-1"), "erp-aurora-dr"),
        (Regions::new("eu-west-1", "us-east-1"), "erp-aurora"),
    ] {
        for metric in ["AuroraGlobalDBRPOLag", "AuroraGlobalDBReplicationLag"] {
            put_datapoint(
                &moto,
                &regions,
                "AWS/RDS",
                metric,
                &[
                    ("DBClusterIdentifier", secondary),
                    ("SourceRegion", regions.source.as_str()),
                ],
                t,
                800.0,
            )
            .await;
        }
    }
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalClusters",
        global_clusters(true, false),
    ));
    let exporter = Exporter::start(&aws_config(&format!(
        "[[aurora_global]]\nname = \"erp-aurora\"\ngroup = \"erp\"\nglobal_cluster = \"erp-global\"\n{}",
        aws_keys_at(&proxy.endpoint_url(), "us-east-1")
    )))
    .await;
    let text = exporter.wait_for_probe_success("erp-aurora").await;
    let target = [("target", "erp-aurora")];
    assert_metric(&text, "rpo_promoted", &target, Some(0.0));
    exporter
        .wait_for_target_ready(
            "erp-aurora",
            Duration::from_secs(20),
            "GO before the switchover",
        )
        .await;

    // The switchover: the secondary is the writer now.
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalClusters",
        global_clusters(false, true),
    ));
    assert_promoted_without_measured_loss(&exporter, "erp-aurora").await;

    // A failover that left both clusters writing: split brain.
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalClusters",
        global_clusters(true, true),
    ));
    assert_split_brain(&exporter, "erp-aurora").await;
    exporter.stop().await;
}

/// The global datastore's members with the `Role` of the us-east-1 member
/// (`erp-sessions`) and of the eu-west-1 member (`erp-sessions-dr`).
fn global_groups_with_roles(east: &str, west: &str) -> String {
    // Through a placeholder: replacing one role with the other in place
    // would let the second replacement find the first one's result.
    GLOBAL_GROUPS
        .replacen("<Role>PRIMARY</Role>", "<Role>EAST</Role>", 1)
        .replacen("<Role>SECONDARY</Role>", &format!("<Role>{west}</Role>"), 1)
        .replacen("<Role>EAST</Role>", &format!("<Role>{east}</Role>"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_global_failover_is_followed_from_the_member_roles() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let t = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &moto,
        &Regions::new("us-east-1", "eu-west-1"),
        "AWS/ElastiCache",
        "GlobalDatastoreReplicationLag",
        &[("CacheClusterId", "erp-sessions-dr-001")],
        t,
        0.6,
    )
    .await;
    record_elasticache(&proxy);
    let exporter = Exporter::start(&aws_config(&format!(
        "[[elasticache_global]]\nname = \"erp-sessions\"\ngroup = \"erp\"\nglobal_replication_group = \"ldgnf-erp-sessions\"\n{}",
        aws_keys_at(&proxy.endpoint_url(), "us-east-1")
    )))
    .await;
    let text = exporter.wait_for_probe_success("erp-sessions").await;
    assert_metric(
        &text,
        "rpo_promoted",
        &[("target", "erp-sessions")],
        Some(0.0),
    );
    exporter
        .wait_for_target_ready(
            "erp-sessions",
            Duration::from_secs(20),
            "GO before the failover",
        )
        .await;

    // FailoverGlobalReplicationGroup: the eu-west-1 member is the primary.
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalReplicationGroups",
        global_groups_with_roles("SECONDARY", "PRIMARY"),
    ));
    assert_promoted_without_measured_loss(&exporter, "erp-sessions").await;

    // Two primaries: split brain.
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalReplicationGroups",
        global_groups_with_roles("PRIMARY", "PRIMARY"),
    ));
    assert_split_brain(&exporter, "erp-sessions").await;
    exporter.stop().await;
}

/// `DescribeDBInstances` of one instance as the RDS API reference shows it
/// (trimmed): the source `erp-db` in us-east-1 listing its cross-region
/// replica by ARN, or the replica `erp-db-dr` in eu-west-1 naming its
/// source (`None`: promoted to a standalone instance).
fn db_instance(
    id: &str,
    region: &str,
    status: &str,
    source: Option<&str>,
    replicas: &[&str],
) -> String {
    let source = source
        .map(|s| format!("<ReadReplicaSourceDBInstanceIdentifier>{s}</ReadReplicaSourceDBInstanceIdentifier>"))
        .unwrap_or_default();
    let replicas: String = replicas
        .iter()
        .map(|r| format!("<ReadReplicaDBInstanceIdentifier>{r}</ReadReplicaDBInstanceIdentifier>"))
        .collect();
    format!(
        r#"<DescribeDBInstancesResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/">
  <DescribeDBInstancesResult>
    <DBInstances>
      <DBInstance>
        <DBInstanceIdentifier>{id}</DBInstanceIdentifier>
        <DBInstanceClass>db.r6g.large</DBInstanceClass>
        <Engine>postgres</Engine>
        <EngineVersion>16.3</EngineVersion>
        <DBInstanceStatus>{status}</DBInstanceStatus>
        {source}
        <ReadReplicaDBInstanceIdentifiers>{replicas}</ReadReplicaDBInstanceIdentifiers>
        <DBInstanceArn>arn:aws:rds:{region}:123456789012:db:{id}</DBInstanceArn>
      </DBInstance>
    </DBInstances>
  </DescribeDBInstancesResult>
  <ResponseMetadata>
    <RequestId>3f1c2a9e-6b4d-4e8a-9c7f-1d2e3f4a5b6c</RequestId>
  </ResponseMetadata>
</DescribeDBInstancesResponse>"#
    )
}

const RDS_SOURCE_ARN: &str = "arn:aws:rds:us-east-1:123456789012:db:erp-db";
const RDS_REPLICA_ARN: &str = "arn:aws:rds:eu-west-1:123456789012:db:erp-db-dr";

/// Each region's `DescribeDBInstances`: the source's and the replica's.
fn record_rds(proxy: &RegionProxy, source_status: &str, promoted: bool) {
    let listed: &[&str] = if promoted { &[] } else { &[RDS_REPLICA_ARN] };
    proxy.record(Recorded::xml(
        Some("us-east-1"),
        "Action=DescribeDBInstances",
        db_instance("erp-db", "us-east-1", source_status, None, listed),
    ));
    let source = (!promoted).then_some(RDS_SOURCE_ARN);
    proxy.record(Recorded::xml(
        Some("eu-west-1"),
        "Action=DescribeDBInstances",
        db_instance("erp-db-dr", "eu-west-1", "available", source, &[]),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_replica_promoted_to_standalone_is_followed() {
    // moto's PromoteReadReplica keeps the replica's source and the source's
    // replica list, so the instances are recorded answers.
    let (moto, proxy) = start_moto_behind_proxy().await;
    put_datapoint(
        &moto,
        &Regions::new("us-east-1", "eu-west-1"),
        "AWS/RDS",
        "ReplicaLag",
        &[("DBInstanceIdentifier", "erp-db-dr")],
        minute_start_ago(Duration::from_secs(60)),
        2.0,
    )
    .await;
    record_rds(&proxy, "available", false);
    let exporter = Exporter::start(&aws_config(&format!(
        "[[rds]]\nname = \"erp-rds\"\ngroup = \"erp\"\nsource_instance = \"erp-db\"\nreplicas = [\"{RDS_REPLICA_ARN}\"]\n{}",
        aws_keys_at(&proxy.endpoint_url(), "us-east-1")
    )))
    .await;
    let text = exporter.wait_for_probe_success("erp-rds").await;
    assert_metric(&text, "rpo_promoted", &[("target", "erp-rds")], Some(0.0));
    exporter
        .wait_for_target_ready(
            "erp-rds",
            Duration::from_secs(20),
            "GO before the promotion",
        )
        .await;

    // PromoteReadReplica, the old source stopped: a promotion.
    record_rds(&proxy, "stopped", true);
    assert_promoted_without_measured_loss(&exporter, "erp-rds").await;
    // The promoted replica replicates nothing: the link is down too.
    let verdict = exporter.target_verdict("erp-rds").await;
    assert_eq!(verdict["replication_healthy"], false, "{verdict}");
    assert_eq!(
        exporter
            .metric("rpo_replication_healthy", &[("target", "erp-rds")])
            .await,
        Some(0.0)
    );

    // The old source started again: both accept writes.
    record_rds(&proxy, "available", true);
    assert_split_brain(&exporter, "erp-rds").await;
    exporter.stop().await;
}
