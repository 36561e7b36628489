//! The AWS kinds when a region is lost: moto behind the lab's region proxy
//! (`rpo_lab::aws_proxy`), which leaves every call signed for the lost
//! region unanswered (blackholed or refused) while the other region answers
//! as before, and counts the calls per region.
//!
//! For each kind: with the source's region lost, the target keeps the last
//! proven recovery point, reads `rpo_source_reachable 0`, is NO-GO in
//! planned mode (source unreachable) and reports, in unplanned mode, the
//! recovery point and the loss window from what the surviving region still
//! answers (for CloudWatch lag, newer datapoints there keep moving the
//! recovery point). With the replica's region lost instead, it is NO-GO in
//! both modes. The test plays AWS in every region directly on moto (never
//! through the proxy), and puts each metric only where AWS publishes it.
//! EFS and ElastiCache global datastores, which moto lacks, are in
//! `aws_recorded.rs`.

use std::time::Duration;

use rpo_exporter::probe::unix_seconds;
use rpo_lab::aws_proxy::RegionFault;
use rpo_lab::support::aws::*;
use rpo_lab::support::*;

const EAST: &str = "us-east-1";
const WEST: &str = "us-west-2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_keeps_the_replica_region_evidence_when_the_source_region_is_lost() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let regions = Regions::new(EAST, WEST);
    let source_arn = create_db_instance(&admin(&moto, EAST), "erp-db").await;
    create_read_replica(&admin(&moto, WEST), "erp-db-dr", &source_arn).await;
    let lag = |at: std::time::SystemTime, value: f64| {
        put_datapoint(
            &moto,
            &regions,
            "AWS/RDS",
            "ReplicaLag",
            &[("DBInstanceIdentifier", "erp-db-dr")],
            at,
            value,
        )
    };
    let t1 = minute_start_ago(Duration::from_secs(120));
    lag(t1 + Duration::from_secs(10), 10.0).await;
    // Replicas discovered from the source, not configured.
    let exporter = Exporter::start(&aws_config(&format!(
        "[[rds]]\nname = \"erp-rds\"\ngroup = \"erp\"\nsource_instance = \"erp-db\"\n{}",
        aws_keys_at(&proxy.endpoint_url(), EAST)
    )))
    .await;
    exporter.wait_for_probe_success("erp-rds").await;
    let rp = unix_seconds(t1) - 10.0;
    wait_for_recovery_point(&exporter, "erp-rds", rp).await;
    exporter
        .wait_for_target_ready(
            "erp-rds",
            Duration::from_secs(20),
            "GO with both regions up",
        )
        .await;

    let lost_at = now_unix();
    proxy.lose(EAST, RegionFault::Blackhole);
    assert_source_region_lost(&exporter, "erp-rds", rp, lost_at, Some(1.0)).await;
    // The replica's region keeps publishing: its evidence keeps being read.
    let t2 = minute_start_ago(Duration::from_secs(60));
    lag(t2 + Duration::from_secs(10), 4.0).await;
    wait_for_recovery_point(&exporter, "erp-rds", unix_seconds(t2) - 4.0).await;
    let unplanned = target_verdict_in(&exporter, "erp-rds", "unplanned").await;
    assert_eq!(unplanned["ready"], true, "{unplanned}");
    assert!(
        proxy.requests(WEST, "rds") > 0 && proxy.requests(WEST, "monitoring") > 0,
        "{:?}",
        proxy.all_requests()
    );

    // The other way round: the replica's region lost, the source's back.
    proxy.restore(EAST);
    let rp = unix_seconds(t2) - 4.0;
    proxy.lose(WEST, RegionFault::Refuse);
    assert_replica_region_lost(&exporter, "erp-rds", rp).await;
    let text = exporter.metrics().await;
    assert_metric(
        &text,
        "rpo_source_reachable",
        &[("target", "erp-rds")],
        Some(1.0),
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_global_is_described_and_measured_from_the_secondary_region() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let regions = Regions::new(EAST, WEST);
    let secondary_arn = create_aurora_global(
        &moto,
        &regions,
        "erp-global",
        "erp-primary",
        "erp-secondary",
    )
    .await;
    let dims = [
        ("DBClusterIdentifier", "erp-secondary"),
        ("SourceRegion", EAST),
    ];
    let lags = |at: std::time::SystemTime, rpo_ms: f64| {
        let moto = &moto;
        let regions = &regions;
        async move {
            for (metric, value) in [
                ("AuroraGlobalDBRPOLag", rpo_ms),
                ("AuroraGlobalDBReplicationLag", rpo_ms / 2.0),
            ] {
                put_datapoint(moto, regions, "AWS/RDS", metric, &dims, at, value).await;
            }
        }
    };
    let t1 = minute_start_ago(Duration::from_secs(120));
    lags(t1 + Duration::from_secs(5), 3000.0).await;
    let keys = aws_keys_at(&proxy.endpoint_url(), EAST);
    let exporter = Exporter::start(&aws_config(&format!(
        "[[aurora_global]]\nname = \"erp-aurora\"\ngroup = \"erp\"\nglobal_cluster = \"erp-global\"\n{keys}"
    )))
    .await;
    exporter.wait_for_probe_success("erp-aurora").await;
    let rp = unix_seconds(t1) - 3.0;
    wait_for_recovery_point(&exporter, "erp-aurora", rp).await;
    exporter
        .wait_for_target_ready(
            "erp-aurora",
            Duration::from_secs(20),
            "GO with both regions up",
        )
        .await;
    // Both regions are asked for the members (the secondary's from the
    // second poll on, once the first answer named it); the lags only where
    // they are published.
    wait_until(
        Duration::from_secs(20),
        "the secondary's region to be asked for the members",
        || async {
            (
                proxy.requests(WEST, "rds") > 0,
                format!("{:?}", proxy.all_requests()),
            )
        },
    )
    .await;
    assert!(proxy.requests(EAST, "rds") > 0);
    assert!(proxy.requests(WEST, "monitoring") > 0);
    assert_eq!(proxy.requests(EAST, "monitoring"), 0);

    let lost_at = now_unix();
    proxy.lose(EAST, RegionFault::Refuse);
    assert_source_region_lost(&exporter, "erp-aurora", rp, lost_at, Some(1.0)).await;
    let t2 = minute_start_ago(Duration::from_secs(60));
    lags(t2 + Duration::from_secs(5), 1000.0).await;
    wait_for_recovery_point(&exporter, "erp-aurora", unix_seconds(t2) - 1.0).await;
    assert_eq!(
        target_verdict_in(&exporter, "erp-aurora", "unplanned").await["ready"],
        true
    );

    // An exporter started while the writer's region is lost finds the
    // secondary by its ARN ...
    let by_arn = Exporter::start(&aws_config(&format!(
        "[[aurora_global]]\nname = \"erp-aurora\"\ngroup = \"erp\"\nglobal_cluster = \"erp-global\"\nsecondary_clusters = [\"{secondary_arn}\"]\n{keys}"
    )))
    .await;
    wait_for_recovery_point(&by_arn, "erp-aurora", unix_seconds(t2) - 1.0).await;
    assert_eq!(
        target_verdict_in(&by_arn, "erp-aurora", "unplanned").await["ready"],
        true
    );
    by_arn.stop().await;
    // ... and, without it, says what to configure.
    let blind = Exporter::start(&aws_config(&format!(
        "[[aurora_global]]\nname = \"erp-aurora\"\ngroup = \"erp\"\nglobal_cluster = \"erp-global\"\n{keys}"
    )))
    .await;
    let verdict = blind
        .wait_for_target(
            "erp-aurora",
            Duration::from_secs(20),
            "the blind exporter to say what to configure",
            |v| reasons(v).contains("secondary_clusters"),
        )
        .await;
    assert_eq!(verdict["ready"], false);
    blind.stop().await;

    let rp = unix_seconds(t2) - 1.0;
    proxy.restore(EAST);
    proxy.lose(WEST, RegionFault::Blackhole);
    assert_replica_region_lost(&exporter, "erp-aurora", rp).await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reads_the_destination_metrics_while_the_source_region_is_lost() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let regions = Regions::new(EAST, WEST);
    create_replicated_buckets(&moto, &regions, "erp-files", "erp-files-dr", "to-dr").await;
    let dims = [
        ("SourceBucket", "erp-files"),
        ("DestinationBucket", "erp-files-dr"),
        ("RuleId", "to-dr"),
    ];
    let latency = |at: std::time::SystemTime, seconds: f64| {
        put_datapoint(
            &moto,
            &regions,
            "AWS/S3",
            "ReplicationLatency",
            &dims,
            at,
            seconds,
        )
    };
    let t1 = minute_start_ago(Duration::from_secs(120));
    latency(t1, 30.0).await;
    // No canary: the replication metrics are the evidence.
    let exporter = Exporter::start(&aws_config(&format!(
        "[[s3]]\nname = \"erp-files\"\ngroup = \"erp\"\nsource_bucket = \"erp-files\"\ndestination_bucket = \"erp-files-dr\"\ndestination_region = \"{WEST}\"\n{}",
        aws_keys_at(&proxy.endpoint_url(), EAST)
    )))
    .await;
    exporter.wait_for_probe_success("erp-files").await;
    let rp = unix_seconds(t1) - 30.0;
    wait_for_recovery_point(&exporter, "erp-files", rp).await;
    exporter
        .wait_for_target_ready(
            "erp-files",
            Duration::from_secs(20),
            "GO with both regions up",
        )
        .await;

    let lost_at = now_unix();
    proxy.lose(EAST, RegionFault::Blackhole);
    assert_source_region_lost(&exporter, "erp-files", rp, lost_at, Some(1.0)).await;
    let t2 = minute_start_ago(Duration::from_secs(60));
    latency(t2, 5.0).await;
    wait_for_recovery_point(&exporter, "erp-files", unix_seconds(t2) - 5.0).await;
    // Failed operations are the source's metric: unknown now, not 0.
    let text = exporter.metrics().await;
    assert_metric(
        &text,
        "rpo_s3_failed_operations",
        &[("target", "erp-files")],
        None,
    );

    let rp = unix_seconds(t2) - 5.0;
    proxy.restore(EAST);
    proxy.lose(WEST, RegionFault::Refuse);
    assert_replica_region_lost(&exporter, "erp-files", rp).await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_keeps_the_last_recovery_point_when_the_queue_region_is_lost() {
    let (moto, proxy) = start_moto_behind_proxy().await;
    let east = admin(&moto, EAST);
    create_queue(&east, "erp-outbox-dlq").await;
    let queue = create_queue(&east, "erp-outbox").await;
    // Redriven before a third receive: the age sees every message.
    super::aws::set_redrive_policy(&east, &queue, EAST, "erp-outbox-dlq", 2).await;
    send_message(&east, &queue, "order 1").await;
    let t = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &moto,
        &Regions::new(EAST, EAST),
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        &[("QueueName", "erp-outbox")],
        t,
        20.0,
    )
    .await;
    let exporter = Exporter::start(&aws_config(&format!(
        "[[sqs]]\nname = \"erp-outbox\"\ngroup = \"erp\"\nqueue_name = \"erp-outbox\"\n{}",
        aws_keys_at(&proxy.endpoint_url(), EAST)
    )))
    .await;
    exporter.wait_for_probe_success("erp-outbox").await;
    let rp = unix_seconds(t) - 20.0;
    wait_for_recovery_point(&exporter, "erp-outbox", rp).await;

    // Another region lost: no call goes there, nothing changes.
    proxy.lose(WEST, RegionFault::Refuse);
    let runs = exporter
        .metric("rpo_probe_runs_total", &[("target", "erp-outbox")])
        .await
        .unwrap();
    exporter
        .wait_for_metrics(Duration::from_secs(20), "two more polls", |text| {
            metric_value(text, "rpo_probe_runs_total", &[("target", "erp-outbox")])
                .is_some_and(|r| r >= runs + 2.0)
        })
        .await;
    assert_eq!(
        proxy.requests(WEST, "sqs") + proxy.requests(WEST, "monitoring"),
        0
    );
    assert_eq!(exporter.target_verdict("erp-outbox").await["ready"], true);

    // The queue's own region lost: the queue is the source side.
    let lost_at = now_unix();
    proxy.lose(EAST, RegionFault::Blackhole);
    let unplanned = assert_source_region_lost(&exporter, "erp-outbox", rp, lost_at, None).await;
    // Within `stale_after` the last answer is fresh enough to decide on.
    assert_eq!(unplanned["ready"], true, "{unplanned}");
    exporter.stop().await;
}
