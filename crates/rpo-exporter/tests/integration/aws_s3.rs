//! The `s3` kind on moto. moto keeps replication configurations but does
//! not replicate, so the test plays the replicator: it copies the canary
//! object from the source bucket to the destination after a delay it
//! controls, then stops, to show the recovery point freeze and the exposure
//! grow. The replication metrics are put into CloudWatch by the test.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use rpo_exporter::probe::unix_seconds;
use rpo_lab::support::aws::{
    admin, aws_config, aws_keys, create_replicated_buckets, minute_start_ago, put_datapoint,
    put_datapoint_in_region, start_moto, Regions,
};
use rpo_lab::support::{assert_metric, metric_value, reasons, Exporter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_canary_and_replication_metrics_with_the_test_as_replicator() {
    let moto = start_moto().await;
    let regions = Regions::new("us-east-1", "us-west-2");
    create_replicated_buckets(&moto, &regions, "erp-files", "erp-files-dr", "to-dr").await;
    let (s3_east, s3_west) = (
        admin(&moto, "us-east-1").s3().await,
        admin(&moto, "us-west-2").s3().await,
    );
    s3_east
        .create_bucket()
        .bucket("erp-notes")
        .send()
        .await
        .unwrap();
    // The replication metrics, each in the region S3 publishes it in.
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
        put_datapoint(&moto, &regions, "AWS/S3", metric, &dims, t, value).await;
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

/// S3 publishes `OperationsFailedReplication` in the source bucket's region
/// and the other replication metrics in the destination's: a failure count
/// put where S3 would never publish it (the destination's region) must not
/// be read, the source's must, summed over the last 15 minutes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failed_operations_are_read_in_the_source_region_over_15_minutes() {
    let moto = start_moto().await;
    let regions = Regions::new("us-east-1", "us-west-2");
    create_replicated_buckets(&moto, &regions, "erp-files", "erp-files-dr", "to-dr").await;
    create_replicated_buckets(&moto, &regions, "erp-docs", "erp-docs-dr", "docs-to-dr").await;
    let files = [
        ("SourceBucket", "erp-files"),
        ("DestinationBucket", "erp-files-dr"),
        ("RuleId", "to-dr"),
    ];
    let docs = [
        ("SourceBucket", "erp-docs"),
        ("DestinationBucket", "erp-docs-dr"),
        ("RuleId", "docs-to-dr"),
    ];
    let recent = minute_start_ago(Duration::from_secs(120));
    for dims in [&files, &docs] {
        put_datapoint(
            &moto,
            &regions,
            "AWS/S3",
            "ReplicationLatency",
            dims,
            recent,
            20.0,
        )
        .await;
    }
    // Failures: 3 two minutes ago where S3 publishes them; 100 eighteen
    // minutes ago (outside the window); 7 where S3 never would.
    put_datapoint(
        &moto,
        &regions,
        "AWS/S3",
        "OperationsFailedReplication",
        &files,
        recent,
        3.0,
    )
    .await;
    put_datapoint(
        &moto,
        &regions,
        "AWS/S3",
        "OperationsFailedReplication",
        &files,
        minute_start_ago(Duration::from_secs(18 * 60)),
        100.0,
    )
    .await;
    put_datapoint_in_region(
        &moto,
        "us-west-2",
        "AWS/S3",
        "OperationsFailedReplication",
        &files,
        recent,
        7.0,
    )
    .await;
    let keys = aws_keys(&moto, "us-east-1");
    let exporter = Exporter::start(&aws_config(&format!(
        r#"
[[s3]]
name = "erp-files"
group = "erp"
source_bucket = "erp-files"
destination_bucket = "erp-files-dr"
destination_region = "us-west-2"
{keys}
[[s3]]
name = "erp-docs"
group = "erp"
source_bucket = "erp-docs"
destination_bucket = "erp-docs-dr"
destination_region = "us-west-2"
metrics_region = "us-west-2"
{keys}"#
    )))
    .await;
    let text = exporter.wait_for_probe_success("erp-files").await;
    assert_eq!(
        metric_value(
            &text,
            "rpo_s3_failed_operations",
            &[("target", "erp-files"), ("rule", "to-dr")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_metric(
        &text,
        "rpo_replication_healthy",
        &[("target", "erp-files")],
        Some(0.0),
    );
    let verdict = exporter.target_verdict("erp-files").await;
    assert_eq!(verdict["ready"], false, "{verdict}");
    assert!(
        reasons(&verdict).contains("3 operations failed to replicate in the last 15 minutes"),
        "{verdict}"
    );
    // Nothing failed (S3 published nothing): 0, present, and GO. The old
    // `metrics_region` key, set to the destination's region, still loads.
    let text = exporter.wait_for_probe_success("erp-docs").await;
    assert_metric(
        &text,
        "rpo_s3_failed_operations",
        &[("target", "erp-docs"), ("rule", "docs-to-dr")],
        Some(0.0),
    );
    assert_eq!(exporter.target_verdict("erp-docs").await["ready"], true);
    exporter.stop().await;
}
