//! The AWS kinds whose status APIs moto lacks (`efs`: EFS replication
//! configurations; `elasticache_global`: ElastiCache Global Datastores).
//!
//! A small local HTTP server stands in front of moto: the calls moto lacks
//! get recorded responses in the real shapes AWS documents (timestamps
//! moved to now), read by the real SDK; every other call (CloudWatch
//! `GetMetricData`) is passed through to moto, where the test has put the
//! datapoints. So the whole probe runs as in production, through
//! `endpoint_url`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rpo_exporter::probe::unix_seconds;
use rpo_lab::support::aws::{
    admin, aws_config, aws_keys_at, minute_start_ago, put_datapoint, start_moto,
};
use rpo_lab::support::{assert_metric, metric_value, reasons, Exporter};

/// A recorded answer: served when the request's path or body contains `marker`.
struct Recorded {
    marker: &'static str,
    content_type: &'static str,
    body: String,
}

/// Serves `recorded` and passes everything else to moto.
async fn start_stub(
    moto_url: String,
    recorded: Vec<Recorded>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(recorded);
    let client = reqwest::Client::new();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (recorded, client, moto_url) = (recorded.clone(), client.clone(), moto_url.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (recorded, client, moto_url) =
                        (recorded.clone(), client.clone(), moto_url.clone());
                    async move {
                        Ok::<_, Infallible>(answer(request, &recorded, &client, &moto_url).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

async fn answer(
    request: Request<Incoming>,
    recorded: &[Recorded],
    client: &reqwest::Client,
    moto_url: &str,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    if let Some(r) = recorded
        .iter()
        .find(|r| path.contains(r.marker) || text.contains(r.marker))
    {
        return Response::builder()
            .header("content-type", r.content_type)
            .header("x-amzn-requestid", "recorded")
            .body(Full::new(Bytes::from(r.body.clone())))
            .unwrap();
    }
    let mut forward = client.request(parts.method.clone(), format!("{moto_url}{path}"));
    for (name, value) in &parts.headers {
        if name != "host" {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.body(body).send().await.unwrap();
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "content-length" {
            response = response.header(name, value);
        }
    }
    response
        .body(Full::new(answer.bytes().await.unwrap()))
        .unwrap()
}

/// The keys of a target whose AWS calls go to the stub at `stub`.
fn keys(stub: SocketAddr, region: &str) -> String {
    aws_keys_at(&format!("http://{stub}"), region)
}

/// `DescribeReplicationConfigurations` as the EFS API reference shows it:
/// one source, an ENABLED destination and a PAUSED one.
fn efs_replications(last_replicated: f64) -> String {
    format!(
        r#"{{"Replications":[{{"SourceFileSystemId":"fs-0123456789abcdef0","SourceFileSystemRegion":"us-east-1","SourceFileSystemArn":"arn:aws:elasticfilesystem:us-east-1:111122223333:file-system/fs-0123456789abcdef0","OriginalSourceFileSystemArn":"arn:aws:elasticfilesystem:us-east-1:111122223333:file-system/fs-0123456789abcdef0","CreationTime":1641491892.0,"Destinations":[{{"Status":"ENABLED","FileSystemId":"fs-0fedcba9876543210","Region":"us-west-2","LastReplicatedTimestamp":{last_replicated}}},{{"Status":"PAUSED","FileSystemId":"fs-0aaaabbbbccccdddd","Region":"eu-west-1","StatusMessage":"Replication is paused because the destination file system is out of capacity.","LastReplicatedTimestamp":{last_replicated}}}]}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efs_recorded_replication_status_and_time_since_last_sync_on_moto() {
    let moto = start_moto().await;
    let east = admin(&moto, "us-east-1");
    let last_replicated = unix_seconds(std::time::SystemTime::now()) - 90.0;
    let t = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &east,
        "AWS/EFS",
        "TimeSinceLastSync",
        &[
            ("FileSystemId", "fs-0123456789abcdef0"),
            ("DestinationFileSystemId", "fs-0fedcba9876543210"),
        ],
        t,
        75.0,
    )
    .await;
    let (stub, task) = start_stub(
        moto.endpoint_url(),
        vec![Recorded {
            marker: "/2015-02-01/file-systems/replication-configurations",
            content_type: "application/json",
            body: efs_replications(last_replicated),
        }],
    )
    .await;
    let k = keys(stub, "us-east-1");
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
    exporter.stop().await;
    task.abort();
}

/// `DescribeGlobalReplicationGroups` (with member info) as the ElastiCache
/// API reference shows it.
const GLOBAL_GROUPS: &str = r#"<DescribeGlobalReplicationGroupsResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">
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
const SECONDARY_GROUP: &str = r#"<DescribeReplicationGroupsResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">
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
    let moto = start_moto().await;
    let west = admin(&moto, "eu-west-1");
    let t = minute_start_ago(Duration::from_secs(60));
    // Only the secondary's primary node publishes the lag.
    put_datapoint(
        &west,
        "AWS/ElastiCache",
        "GlobalDatastoreReplicationLag",
        &[("CacheClusterId", "erp-sessions-dr-001")],
        t,
        0.6,
    )
    .await;
    let (stub, task) = start_stub(
        moto.endpoint_url(),
        vec![
            Recorded {
                marker: "Action=DescribeGlobalReplicationGroups",
                content_type: "text/xml",
                body: GLOBAL_GROUPS.to_string(),
            },
            Recorded {
                marker: "Action=DescribeReplicationGroups",
                content_type: "text/xml",
                body: SECONDARY_GROUP.to_string(),
            },
        ],
    )
    .await;
    let exporter = Exporter::start(&aws_config(&format!(
        "[[elasticache_global]]\nname = \"erp-sessions\"\ngroup = \"erp\"\nglobal_replication_group = \"ldgnf-erp-sessions\"\n{}",
        keys(stub, "us-east-1")
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
    exporter.stop().await;
    task.abort();
}
