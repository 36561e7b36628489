//! The region-loss drill (issue 9, SPEC sections 8–9): the lab split into a
//! primary region (eu-west-1; AWS us-east-1) and a recovery region
//! (eu-central-1; AWS us-west-2), one exporter in each (same group `erp`,
//! each writing its own heartbeats), one real Prometheus scraping both
//! every second with the shipped `alerts/` (their `for:` shortened as in
//! `e2e.rs`), Alertmanager and a webhook receiver.
//!
//! Replication lag is injected into every kind (Postgres replay paused,
//! the MariaDB SQL thread stopped, the Redis replica SIGSTOPped, all under
//! writes; a CloudWatch `ReplicaLag` datapoint in the RDS replica's
//! region), then the primary region is cut: the primaries stopped or
//! killed, the primary region's exporter stopped, its AWS region
//! blackholed in the proxy in front of moto.
//!
//! On the recovery region's exporter, for every kind: the last proven
//! recovery point is kept (never reset, never "now") while the exposure
//! grows with wall time; the unplanned verdict's loss window is the
//! injected lag within the kind's error bound; the planned verdict is NO-GO
//! with `source_unreachable`; `check --from`, `check --prometheus --region`
//! and the board agree; the lost exporter's and the sources' alerts reach
//! the webhook, and no rule errs. The Redis replica stays hung through the
//! cut (a hung replica in the recovery region is what blocks an unplanned
//! failover); once it resumes, every path turns GO together.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rpo_exporter::probe::unix_seconds;
use rpo_lab::aws_proxy::RegionFault;
use rpo_lab::support::aws::*;
use rpo_lab::support::*;

use crate::region_drill::{
    assert_no_rule_errs, between, target_in, Drill, AWS_PRIMARY, AWS_RECOVERY, REGION_RECOVERY,
};

/// How long replication is held back under writes before the cut.
const LAG: Duration = Duration::from_secs(6);
/// The pair kinds' documented error bound: one heartbeat interval (500 ms
/// in these configs) plus one second for the polls around the instants.
const PAIR_BOUND: f64 = 1.5;
/// What the RDS replica's CloudWatch datapoint says: 30 s behind.
const AWS_LAG_SECONDS: f64 = 30.0;

const PAIR_TARGETS: [&str; 3] = ["erp-db", "erp-ledger", "erp-cache"];

/// One region's exporter: every store of the group, AWS reached through the
/// region proxy with the source in `AWS_PRIMARY`.
fn exporter_config(
    name: &str,
    region: &str,
    postgres: &rpo_lab::PostgresPair,
    mariadb: &rpo_lab::mariadb::MariadbPair,
    redis: &rpo_lab::redis::RedisPair,
    aws_endpoint: &str,
) -> String {
    config_with(&format!(
        "{}{}{}{}",
        postgres_target("erp-db", postgres, "30s", true),
        mysql_target("erp-ledger", mariadb, "30s", true),
        redis_target("erp-cache", redis, "30s", true, ""),
        target_block(
            "rds",
            "erp-rds",
            "10m",
            &format!(
                "source_instance = \"erp-rds\"\n{}",
                aws_keys_at(aws_endpoint, AWS_PRIMARY)
            )
        ),
    ))
    .replace(
        "instance = \"test\"",
        &format!("instance = \"{name}\"\nregion = \"{region}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_region_keeps_the_truth_when_the_primary_region_is_lost() {
    let started = Instant::now();
    let (postgres, mut mariadb, redis, (moto, proxy)) = tokio::join!(
        start_pair(),
        start_mariadb_pair(),
        start_redis_pair(Default::default()),
        start_moto_behind_proxy(),
    );
    // RDS: the source in the primary AWS region, its replica in the
    // recovery one, whose ReplicaLag CloudWatch publishes there.
    let aws_regions = Regions::new(AWS_PRIMARY, AWS_RECOVERY);
    let source_arn = create_db_instance(&admin(&moto, AWS_PRIMARY), "erp-rds").await;
    create_read_replica(&admin(&moto, AWS_RECOVERY), "erp-rds-dr", &source_arn).await;
    let datapoint_at = minute_start_ago(Duration::from_secs(60));
    put_datapoint(
        &moto,
        &aws_regions,
        "AWS/RDS",
        "ReplicaLag",
        &[("DBInstanceIdentifier", "erp-rds-dr")],
        datapoint_at + Duration::from_secs(10),
        AWS_LAG_SECONDS,
    )
    .await;
    let aws_recovery_point = unix_seconds(datapoint_at) - AWS_LAG_SECONDS;

    let endpoint = proxy.endpoint_url();
    let mut drill = Drill::start(|name, region| {
        exporter_config(name, region, &postgres, &mariadb, &redis, &endpoint)
    })
    .await;

    // 1. All GO: both exporters, and the gate read through Prometheus.
    drill.wait_for_go(Duration::from_secs(40)).await;
    assert_eq!(
        drill
            .recovery
            .metric("rpo_recovery_point_timestamp_seconds", &labels("erp-rds"))
            .await,
        Some(aws_recovery_point)
    );

    // 2. Lag under writes, for LAG, then the cut.
    let pg_writer = Writer::start(&postgres.primary_url(), Duration::from_millis(100)).await;
    let maria_writer = MysqlWriter::start(&mariadb.primary_url(), Duration::from_millis(100)).await;
    let redis_writer = RedisWriter::start(&redis, Duration::from_millis(100)).await;
    // Each fault is dated by the clock readings around it.
    let lag_from = [
        between(|| postgres.pause_replay().unwrap()),
        between(|| mariadb.stop_sql_thread().unwrap()),
        between(|| redis.sigstop_replica().unwrap()),
    ];
    tokio::time::sleep(LAG).await;
    // The recovery points held back since the lag began, read just before
    // the cut.
    let text = drill.recovery.metrics().await;
    let before: Vec<f64> = PAIR_TARGETS
        .iter()
        .map(|t| {
            metric_value(&text, "rpo_recovery_point_timestamp_seconds", &labels(t))
                .unwrap_or_else(|| panic!("{t} has no recovery point\n{text}"))
        })
        .collect();
    for ((target, rp), lag) in PAIR_TARGETS.iter().zip(&before).zip(&lag_from) {
        assert!(
            (lag.0 - PAIR_BOUND..=lag.1).contains(rp),
            "{target}: recovery point {rp} should be where the lag began ({lag:?})"
        );
    }

    // The cut: the primary region's stores, exporter and AWS region gone.
    let mut redis = std::sync::Arc::into_inner(redis).expect("the lab owns the Redis pair");
    drop(redis_writer);
    let redis_cut = between(|| redis.kill_primary());
    let aws_lost_at = now_unix();
    proxy.lose(AWS_PRIMARY, RegionFault::Blackhole);
    let cut = [
        between(|| postgres.stop_primary_immediately().unwrap()),
        between(|| mariadb.stop_primary().unwrap()),
        redis_cut,
    ];
    drill.stop_primary().await;
    drop((pg_writer, maria_writer));
    eprintln!("cut at {:?}", started.elapsed());

    // 3. The recovery exporter, every kind.
    // The pairs: each has noticed its source is gone, and keeps the very
    // recovery point proven before the cut while the exposure grows.
    drill
        .assert_kept_while_exposure_grows(&PAIR_TARGETS, &before)
        .await;
    for (i, target) in PAIR_TARGETS.into_iter().enumerate() {
        let planned = target_verdict_in(&drill.recovery, target, "planned").await;
        assert_eq!(planned["ready"], false, "{target}: {planned}");
        assert!(
            reason_codes(&planned).contains(&"source_unreachable".to_string()),
            "{target}: {planned}"
        );
        let unplanned = target_verdict_in(&drill.recovery, target, "unplanned").await;
        let rp = unplanned["recovery_point_unix"].as_f64();
        let window = unplanned["loss_window_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("{target}: no loss window in {unplanned}"));
        // The injected lag: from where it began to the source's end (the
        // last contact with it), each between two clock readings. The
        // recovery point is the one kept since the lag began.
        let (lag, cut) = (lag_from[i], cut[i]);
        let injected = (cut.0 - lag.1)..=(cut.1 - lag.0);
        eprintln!("{target}: loss window {window:.3}s, injected lag {injected:.3?}s");
        assert!(
            (injected.start() - PAIR_BOUND..=injected.end() + PAIR_BOUND).contains(&window),
            "{target}: loss window {window}s, injected lag {injected:?}s: {unplanned}"
        );
        // (the exposition and the JSON print the same f64 to different
        // precision)
        assert!(
            rp.is_some_and(|rp| (rp - before[i]).abs() < 0.001),
            "{target}: recovery point {} before the cut: {unplanned}",
            before[i]
        );
        assert!(
            !reason_codes(&unplanned).contains(&"source_unreachable".to_string()),
            "{target}: {unplanned}"
        );
    }
    // AWS: the source region's calls unanswered, the replica region's
    // datapoint still the evidence (the shared assertion of every AWS kind).
    assert_source_region_lost(
        &drill.recovery,
        "erp-rds",
        aws_recovery_point,
        aws_lost_at,
        Some(1.0),
    )
    .await;
    // The hung Redis replica is the one thing that blocks an unplanned
    // failover; Postgres and MariaDB replicas are healthy and within budget.
    let cache = target_verdict_in(&drill.recovery, "erp-cache", "unplanned").await;
    let codes = reason_codes(&cache);
    assert!(
        codes.contains(&"replica_unreachable".to_string())
            && codes
                .iter()
                .all(|c| c == "replica_unreachable" || c == "evidence_stale"),
        "{cache}"
    );

    // The paths agree, in both modes.
    let all: BTreeSet<String> = ["erp-db", "erp-ledger", "erp-cache", "erp-rds"]
        .into_iter()
        .map(String::from)
        .collect();
    let hung: BTreeSet<String> = [String::from("erp-cache")].into();
    let from = drill.assert_paths_agree("planned", false, &all).await;
    assert_eq!(from["exporter"]["region"], REGION_RECOVERY, "{from}");
    let from = drill.assert_paths_agree("unplanned", false, &hung).await;
    for target in ["erp-db", "erp-ledger"] {
        assert!(
            target_in(&from, target)["loss_window_seconds"]
                .as_f64()
                .is_some(),
            "{from}"
        );
    }

    // The alerts: the lost exporter, the recovery exporter's NO-GO and the
    // sources' broken links; none errs.
    drill
        .assert_alerts_after_the_cut(&[("ReplicationLinkDown", &PAIR_TARGETS)], &[])
        .await;

    // The Redis replica resumes: whatever reached it before the primary
    // died moves its recovery point forward, never past the cut, and every
    // path turns GO for an unplanned failover together.
    redis.sigcont_replica().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the resumed Redis replica to be ready for an unplanned failover",
        || async {
            let v = target_verdict_in(&drill.recovery, "erp-cache", "unplanned").await;
            (v["ready"] == true, v)
        },
    )
    .await;
    let unplanned = drill
        .assert_paths_agree("unplanned", true, &BTreeSet::new())
        .await;
    let cache = target_in(&unplanned, "erp-cache");
    let rp = cache["recovery_point_unix"].as_f64().unwrap();
    assert!(
        (before[2]..=redis_cut.1).contains(&rp),
        "the Redis recovery point after resuming: {cache}"
    );
    drill.assert_paths_agree("planned", false, &all).await;
    assert_no_rule_errs(&drill.prom).await;

    drill.stop().await;
    eprintln!("drill done in {:?}", started.elapsed());
}
