//! The region-loss drill for the AWS kinds (issue 9), the companion of
//! `region_loss.rs` (which drills the pairs and `rds`) in the same
//! topology: two exporters (`primary` in eu-west-1, `recovery` in
//! eu-central-1, group `erp`), one real Prometheus scraping both every
//! second with the shipped `alerts/` (`for:` shortened), Alertmanager and a
//! webhook; every AWS call goes through the lab's region proxy in front of
//! moto, with the sources in us-east-1 and the replicas in us-west-2.
//!
//! The AWS kinds `aurora_global`, `elasticache_global`, `s3`, `efs` and
//! `sqs`, each with replication lag injected as AWS reports it, and each
//! metric only in the region AWS publishes it in (`rpo_lab::moto::
//! publisher_of`): the Aurora lags, the ElastiCache lag and the S3
//! replication latency in the replica's region, the SQS age in the queue's;
//! EFS's `LastReplicatedTimestamp` and ElastiCache's members, which moto
//! lacks, as recorded answers of each region (`aws_recorded.rs`). Then the
//! primary region is cut: its exporter stopped, its AWS region blackholed.
//!
//! On the recovery exporter, for every kind: the recovery point proven
//! before the cut is kept (never reset, never "now") while the exposure
//! grows with wall time; `rpo_source_reachable 0`; planned NO-GO with
//! `source_unreachable`; the unplanned loss window is the last contact with
//! the source minus that recovery point (the injected lag plus the age of
//! its datapoint, within a poll and a call timeout: `assert_source_region_
//! lost`); `check --from`, `check --prometheus --region` and the board
//! agree in both modes; the lost exporter's and the recovery exporter's
//! alerts reach the webhook, and no rule errs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rpo_exporter::probe::unix_seconds;
use rpo_lab::aws_proxy::{Recorded, RegionFault, RegionProxy};
use rpo_lab::support::aws::*;
use rpo_lab::support::*;

use crate::aws_recorded::{record_efs, DESTINATION_FS, GLOBAL_GROUPS, SECONDARY_GROUP, SOURCE_FS};
use crate::region_drill::{target_in, Drill, AWS_PRIMARY, AWS_RECOVERY, REGION_RECOVERY};

/// The targets, in the order of `injected` below.
const TARGETS: [&str; 5] = [
    "erp-aurora",
    "erp-sessions",
    "erp-files",
    "erp-attachments",
    "erp-outbox",
];

/// The lags AWS reports, each different so that a kind reading another's
/// series would show: Aurora's `AuroraGlobalDBRPOLag` (ms),
/// ElastiCache's `GlobalDatastoreReplicationLag`, S3's
/// `ReplicationLatency`, the SQS queue's `ApproximateAgeOfOldestMessage`
/// (seconds), and how long before the datapoints' minute EFS last
/// replicated (`LastReplicatedTimestamp`).
const AURORA_RPO_LAG_MS: f64 = 12_000.0;
const ELASTICACHE_LAG: f64 = 8.0;
const S3_LATENCY: f64 = 25.0;
const SQS_AGE: f64 = 20.0;
const EFS_BEHIND: f64 = 40.0;

/// The recorded ElastiCache answers with the secondary in `AWS_RECOVERY`:
/// the global datastore's members in every region, the secondary's own
/// replication group only in its region.
fn record_elasticache(proxy: &RegionProxy) {
    proxy.record(Recorded::xml(
        None,
        "Action=DescribeGlobalReplicationGroups",
        GLOBAL_GROUPS.replace("eu-west-1", AWS_RECOVERY),
    ));
    proxy.record(Recorded::xml(
        Some(AWS_RECOVERY),
        "Action=DescribeReplicationGroups",
        SECONDARY_GROUP.replace("eu-west-1", AWS_RECOVERY),
    ));
}

/// One region's exporter: the five AWS targets, through the proxy, each
/// configured as `docs/kinds/aws.md` says to survive a restart during the
/// loss (the replica side named with its region).
fn exporter_config(name: &str, region: &str, endpoint: &str, secondary_arn: &str) -> String {
    let keys = aws_keys_at(endpoint, AWS_PRIMARY);
    let block = |kind: &str, target: &str, own: String| {
        target_block(kind, target, "10m", &format!("{own}{keys}"))
    };
    config_with(&format!(
        "{}{}{}{}{}",
        block(
            "aurora_global",
            "erp-aurora",
            format!("global_cluster = \"erp-global\"\nsecondary_clusters = [\"{secondary_arn}\"]\n"),
        ),
        block(
            "elasticache_global",
            "erp-sessions",
            format!(
                "global_replication_group = \"ldgnf-erp-sessions\"\nsecondary_region = \"{AWS_RECOVERY}\"\n"
            ),
        ),
        block(
            "s3",
            "erp-files",
            format!(
                "source_bucket = \"erp-files\"\ndestination_bucket = \"erp-files-dr\"\ndestination_region = \"{AWS_RECOVERY}\"\nrule_ids = [\"to-dr\"]\n"
            ),
        ),
        block(
            "efs",
            "erp-attachments",
            format!(
                "file_system_id = \"{SOURCE_FS}\"\ndestination_file_system_id = \"{DESTINATION_FS}\"\ndestination_region = \"{AWS_RECOVERY}\"\n"
            ),
        ),
        block("sqs", "erp-outbox", "queue_name = \"erp-outbox\"\n".to_string()),
    ))
    .replace(
        "instance = \"test\"",
        &format!("instance = \"{name}\"\nregion = \"{region}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_region_keeps_every_aws_kinds_truth_when_the_primary_region_is_lost() {
    let started = Instant::now();
    let (moto, proxy) = start_moto_behind_proxy().await;
    let regions = Regions::new(AWS_PRIMARY, AWS_RECOVERY);

    // The resources, each side in its region.
    let secondary_arn = create_aurora_global(
        &moto,
        &regions,
        "erp-global",
        "erp-aurora-primary",
        "erp-aurora-dr",
    )
    .await;
    create_replicated_buckets(&moto, &regions, "erp-files", "erp-files-dr", "to-dr").await;
    let east = admin(&moto, AWS_PRIMARY);
    let queue = create_queue(&east, "erp-outbox").await;
    // Dead-lettered before a third receive: the oldest message's age is
    // then proof (docs/kinds/aws.md, `sqs`).
    create_queue(&east, "erp-outbox-dlq").await;
    crate::aws::set_redrive_policy(&east, &queue, AWS_PRIMARY, "erp-outbox-dlq", 2).await;
    send_message(&east, &queue, "order 1").await;
    record_elasticache(&proxy);

    // The injected lags, as AWS reports them. One minute for every
    // datapoint, taken once: a minute boundary may pass while the
    // exporters poll.
    let minute = minute_start_ago(Duration::from_secs(60));
    let at = minute + Duration::from_secs(10);
    let aurora_dims = [
        ("DBClusterIdentifier", "erp-aurora-dr"),
        ("SourceRegion", AWS_PRIMARY),
    ];
    for (metric, value) in [
        ("AuroraGlobalDBRPOLag", AURORA_RPO_LAG_MS),
        ("AuroraGlobalDBReplicationLag", AURORA_RPO_LAG_MS / 2.0),
    ] {
        put_datapoint(&moto, &regions, "AWS/RDS", metric, &aurora_dims, at, value).await;
    }
    put_datapoint(
        &moto,
        &regions,
        "AWS/ElastiCache",
        "GlobalDatastoreReplicationLag",
        &[("CacheClusterId", "erp-sessions-dr-001")],
        at,
        ELASTICACHE_LAG,
    )
    .await;
    put_datapoint(
        &moto,
        &regions,
        "AWS/S3",
        "ReplicationLatency",
        &[
            ("SourceBucket", "erp-files"),
            ("DestinationBucket", "erp-files-dr"),
            ("RuleId", "to-dr"),
        ],
        at,
        S3_LATENCY,
    )
    .await;
    put_datapoint(
        &moto,
        &regions,
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        &[("QueueName", "erp-outbox")],
        at,
        SQS_AGE,
    )
    .await;
    let minute = unix_seconds(minute);
    // EFS's last sync dated by the same minute: the recovery points stay
    // within the group budget of each other (no skew warning by chance).
    let efs_synced = minute - EFS_BEHIND;
    record_efs(&proxy, efs_synced, efs_synced);
    // What each target must prove: a CloudWatch datapoint dates the start
    // of its minute, minus the lag; EFS's timestamp is the recovery point.
    let injected = [
        minute - AURORA_RPO_LAG_MS / 1000.0,
        minute - ELASTICACHE_LAG,
        minute - S3_LATENCY,
        efs_synced,
        minute - SQS_AGE,
    ];

    let endpoint = proxy.endpoint_url();
    let mut drill =
        Drill::start(|name, region| exporter_config(name, region, &endpoint, &secondary_arn)).await;

    // 1. All GO, on both exporters and through Prometheus, each target on
    // the recovery point its injected lag says.
    drill.wait_for_go(Duration::from_secs(60)).await;
    for exporter in [drill.primary(), &drill.recovery] {
        for (target, rp) in TARGETS.iter().zip(injected) {
            wait_for_recovery_point(exporter, target, rp).await;
        }
    }
    drill
        .assert_paths_agree("planned", true, &BTreeSet::new())
        .await;
    // Every region asked only for what it answers: the replica-side lags in
    // the replica's region, the queue's and the source bucket's in the
    // source's.
    assert!(
        proxy.requests(AWS_RECOVERY, "monitoring") > 0
            && proxy.requests(AWS_PRIMARY, "monitoring") > 0
            && proxy.requests(AWS_RECOVERY, "elasticache") > 0
            && proxy.requests(AWS_RECOVERY, "elasticfilesystem") > 0
            && proxy.requests(AWS_RECOVERY, "rds") > 0,
        "{:?}",
        proxy.all_requests()
    );

    // 2. The cut: the primary region's exporter and AWS region gone.
    let lost_at = now_unix();
    proxy.lose(AWS_PRIMARY, RegionFault::Blackhole);
    drill.stop_primary().await;
    eprintln!("cut at {:?}", started.elapsed());

    // 3. The recovery exporter, every kind: the recovery point kept, the
    // source unreachable, planned NO-GO, the loss window up to the last
    // contact (the shared assertion of every AWS kind).
    for (target, rp) in TARGETS.iter().zip(injected) {
        let replica_reachable = (*target != "erp-outbox").then_some(1.0);
        let unplanned =
            assert_source_region_lost(&drill.recovery, target, rp, lost_at, replica_reachable)
                .await;
        let window = unplanned["loss_window_seconds"].as_f64().unwrap();
        eprintln!(
            "{target}: loss window {window:.3}s, lost {:.3}s after the recovery point",
            lost_at - rp
        );
    }
    // Kept while the exposure grows with wall time. The exposure is taken
    // at each poll (poll time − recovery point), and a poll waits out its
    // blackholed calls (up to the 5 s timeout): it must grow by more than
    // a poll, and read no later than now.
    let exposure = |text: &str, target: &str| {
        metric_value(text, "rpo_exposure_seconds", &labels(target))
            .unwrap_or_else(|| panic!("{target}: no exposure\n{text}"))
    };
    let text = drill.recovery.metrics().await;
    let exposures: Vec<f64> = TARGETS.iter().map(|t| exposure(&text, t)).collect();
    let text = drill
        .recovery
        .wait_for_metrics(
            Duration::from_secs(30),
            "every exposure to grow by 6 s",
            |text| {
                TARGETS
                    .iter()
                    .zip(&exposures)
                    .all(|(t, e)| exposure(text, t) >= e + 6.0)
            },
        )
        .await;
    let read_at = now_unix();
    for (target, rp) in TARGETS.iter().zip(injected) {
        assert_eq!(
            metric_value(
                &text,
                "rpo_recovery_point_timestamp_seconds",
                &labels(target)
            ),
            Some(rp),
            "{target}: the recovery point is kept, never reset, never \"now\"\n{text}"
        );
        assert_eq!(
            metric_value(&text, "rpo_source_reachable", &labels(target)),
            Some(0.0),
            "{target}\n{text}"
        );
        let polled_at = rp + exposure(&text, target);
        assert!(
            (lost_at..=read_at + 0.01).contains(&polled_at),
            "{target}: exposure taken at {polled_at}, after the cut at {lost_at} and by {read_at}\n{text}"
        );
    }

    // The paths agree, in both modes: planned NO-GO naming every target
    // (its source is gone); unplanned GO, each loss window within budget.
    let all: BTreeSet<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    let from = drill.assert_paths_agree("planned", false, &all).await;
    assert_eq!(from["exporter"]["region"], REGION_RECOVERY, "{from}");
    for target in TARGETS {
        let verdict = target_in(&from, target);
        assert!(
            verdict["reasons"]
                .to_string()
                .contains("source unreachable"),
            "{target}: {verdict}"
        );
    }
    let from = drill
        .assert_paths_agree("unplanned", true, &BTreeSet::new())
        .await;
    for (target, rp) in TARGETS.iter().zip(injected) {
        let verdict = target_in(&from, target);
        let window = verdict["loss_window_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("{target}: no loss window in {verdict}"));
        let expected = lost_at - rp;
        assert!(
            (expected - 10.0..=expected + 6.0).contains(&window),
            "{target}: check --from says loss window {window}, expected about {expected}: {verdict}"
        );
    }

    // The link: known from the surviving region where AWS answers there
    // (the global members, EFS's destination); unknown, so not healthy,
    // where only the lost region knows it (S3's rules, the queue itself).
    let text = drill.recovery.metrics().await;
    for (target, healthy) in [
        ("erp-aurora", 1.0),
        ("erp-sessions", 1.0),
        ("erp-attachments", 1.0),
        ("erp-files", 0.0),
        ("erp-outbox", 0.0),
    ] {
        assert_eq!(
            metric_value(&text, "rpo_replication_healthy", &labels(target)),
            Some(healthy),
            "{target}\n{text}"
        );
    }

    // The alerts: the lost exporter down, the recovery exporter's planned
    // NO-GO, every AWS target's failing probe (its source region's calls),
    // the links only the lost region knew; none errs.
    drill
        .assert_alerts_after_the_cut(
            &[
                ("RPOProbeFailing", &TARGETS),
                ("ReplicationLinkDown", &["erp-files", "erp-outbox"]),
            ],
            // The evidence is kept, not lost or over budget.
            &[
                "RPOEvidenceStale",
                "RPOBudgetExceeded",
                "RPOSplitBrain",
                "RPOGroupRecoveryPointSkewHigh",
            ],
        )
        .await;

    drill.stop().await;
    eprintln!("drill done in {:?}", started.elapsed());
}
