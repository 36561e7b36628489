//! The `s3` kind on moto. moto keeps replication configurations but does
//! not replicate, so the test plays the replicator: it copies the canary
//! object from the source bucket to the destination after a delay it
//! controls, then stops, to show the recovery point freeze and the exposure
//! grow. The replication metrics are put into CloudWatch by the test.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
    DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination, Metrics, MetricsStatus,
    ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter, ReplicationRuleStatus,
    VersioningConfiguration,
};
use rpo_exporter::probe::unix_seconds;
use rpo_lab::support::aws::{
    admin, aws_config, aws_keys, minute_start_ago, put_datapoint, start_moto,
};
use rpo_lab::support::{assert_metric, metric_value, reasons, Exporter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_canary_and_replication_metrics_with_the_test_as_replicator() {
    let moto = start_moto().await;
    let east = admin(&moto, "us-east-1");
    let west = admin(&moto, "us-west-2");
    let (s3_east, s3_west) = (east.s3().await, west.s3().await);
    s3_east
        .create_bucket()
        .bucket("erp-files")
        .send()
        .await
        .unwrap();
    s3_east
        .create_bucket()
        .bucket("erp-notes")
        .send()
        .await
        .unwrap();
    s3_west
        .create_bucket()
        .bucket("erp-files-dr")
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::UsWest2)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for (s3, bucket) in [(&s3_east, "erp-files"), (&s3_west, "erp-files-dr")] {
        s3.put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let rule = ReplicationRule::builder()
        .id("to-dr")
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
                .bucket("arn:aws:s3:::erp-files-dr")
                .metrics(
                    Metrics::builder()
                        .status(MetricsStatus::Enabled)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s3_east
        .put_bucket_replication()
        .bucket("erp-files")
        .replication_configuration(
            ReplicationConfiguration::builder()
                .role("arn:aws:iam::123456789012:role/s3-replication")
                .rules(rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // The replication metrics, as S3 publishes them in the destination's region.
    let t = minute_start_ago(Duration::from_secs(120));
    let dims = [
        ("SourceBucket", "erp-files"),
        ("DestinationBucket", "erp-files-dr"),
        ("RuleId", "to-dr"),
    ];
    for (metric, value) in [
        ("ReplicationLatency", 30.0),
        ("BytesPendingReplication", 1024.0),
        ("OperationsPendingReplication", 3.0),
        ("OperationsFailedReplication", 0.0),
    ] {
        put_datapoint(&west, "AWS/S3", metric, &dims, t, value).await;
    }

    // The replicator: copies the canary one second after it changes.
    let replicator = {
        let (s3_east, s3_west) = (s3_east.clone(), s3_west.clone());
        tokio::spawn(async move {
            let mut last: Option<bytes::Bytes> = None;
            loop {
                if let Ok(object) = s3_east
                    .get_object()
                    .bucket("erp-files")
                    .key("rpo-canary/test")
                    .send()
                    .await
                {
                    let body = object.body.collect().await.unwrap().into_bytes();
                    if last.as_ref() != Some(&body) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        s3_west
                            .put_object()
                            .bucket("erp-files-dr")
                            .key("rpo-canary/test")
                            .body(ByteStream::from(body.clone()))
                            .send()
                            .await
                            .unwrap();
                        last = Some(body);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let keys = aws_keys(&moto, "us-east-1");
    let exporter = Exporter::start(&aws_config(&format!(
        r#"
[[s3]]
name = "erp-files"
group = "erp"
rpo_budget = "6s"
source_bucket = "erp-files"
destination_bucket = "erp-files-dr"
destination_region = "us-west-2"
canary = {{ interval = "500ms", prefix = "rpo-canary/" }}
{keys}
[[s3]]
name = "erp-notes"
group = "erp"
source_bucket = "erp-notes"
destination_bucket = "erp-files-dr"
destination_region = "us-west-2"
{keys}"#
    )))
    .await;
    let target = [("target", "erp-files")];
    let text = exporter
        .wait_for_metrics(
            Duration::from_secs(30),
            "the canary to prove a recent recovery point",
            |text| metric_value(text, "rpo_exposure_seconds", &target).is_some_and(|e| e < 6.0),
        )
        .await;
    exporter.wait_for_probe_success("erp-files").await;
    assert_eq!(
        metric_value(
            &text,
            "rpo_s3_pending_operations",
            &[("target", "erp-files"), ("rule", "to-dr")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_metric(
        &text,
        "rpo_s3_replication_latency_seconds",
        &[("rule", "to-dr")],
        Some(30.0),
    );
    assert_metric(
        &text,
        "rpo_s3_replication_metrics_timestamp_seconds",
        &[("rule", "to-dr")],
        Some(unix_seconds(t)),
    );
    assert_metric(&text, "rpo_backlog_bytes", &target, Some(1024.0));
    assert_metric(
        &text,
        "rpo_s3_rule_enabled",
        &[("rule", "to-dr")],
        Some(1.0),
    );
    assert_metric(&text, "rpo_replication_healthy", &target, Some(1.0));
    assert!(metric_value(&text, "rpo_heartbeat_last_write_timestamp_seconds", &target).is_some());
    // The canary, not the 2-minute-old metric, sets the recovery point.
    let rp = metric_value(&text, "rpo_recovery_point_timestamp_seconds", &target).unwrap();
    assert!(rp > unix_seconds(t), "{rp}");
    assert_metric(&text, "rpo_s3_canary_timestamp_seconds", &target, Some(rp));
    assert_eq!(exporter.target_verdict("erp-files").await["ready"], true);

    // The replicator stops: the recovery point freezes, the exposure grows
    // past the budget, while the canary is still written on the source.
    replicator.abort();
    let _ = replicator.await;
    let frozen = exporter
        .wait_for_target(
            "erp-files",
            Duration::from_secs(20),
            "the exposure to exceed the budget",
            |v| v["ready"] == false && reasons(v).contains("exceeds budget 6s"),
        )
        .await;
    let text = exporter.metrics().await;
    let rp_after = metric_value(&text, "rpo_recovery_point_timestamp_seconds", &target).unwrap();
    let writes =
        metric_value(&text, "rpo_heartbeat_last_write_timestamp_seconds", &target).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = exporter.metrics().await;
    assert_eq!(
        metric_value(&text, "rpo_recovery_point_timestamp_seconds", &target),
        Some(rp_after),
        "{frozen}"
    );
    assert!(
        metric_value(&text, "rpo_heartbeat_last_write_timestamp_seconds", &target).unwrap()
            > writes
    );
    assert!(metric_value(&text, "rpo_exposure_seconds", &target).unwrap() > 6.0);
    // Replication fixed later? Nothing else changed: the canary object is one
    // key, overwritten, never accumulated.
    let listed = s3_east
        .list_objects_v2()
        .bucket("erp-files")
        .prefix("rpo-canary/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 1);

    // A source bucket without replication: NO-GO, said in words.
    let notes = exporter.target_verdict("erp-notes").await;
    assert_eq!(notes["ready"], false);
    assert!(reasons(&notes).contains("no replication rule"), "{notes}");
    exporter.stop().await;
}
