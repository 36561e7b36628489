//! The region-loss drill for the queue kinds and OpenSearch (issue 9): the
//! integration queues (`rabbitmq`, `sql_queue`, `redis_stream`) live with
//! the producers in the primary region, and OpenSearch's leader cluster
//! too; the recovery region has an exporter and the OpenSearch follower.
//! One exporter per region (same group `erp`), one real Prometheus
//! scraping both every second with the shipped `alerts/` (their `for:`
//! shortened as in `e2e.rs`), Alertmanager and a webhook receiver.
//!
//! A backlog is injected into every queue (a timestamped message nobody
//! consumes, an unprocessed outbox row, a stream entry the consumer group
//! has not read) and the follower is held behind its leader; then the
//! primary region is cut: the RabbitMQ node killed, the Postgres primary
//! stopped, the Redis server killed, the OpenSearch leader lost (the
//! follower's status answers HTTP 500 `failed to fetch replication
//! status`, as the plugin does), the primary region's exporter stopped.
//!
//! On the recovery region's exporter, for every kind: the last proven
//! recovery point is kept (never reset, never "now") while the exposure
//! grows, the queues' last backlog is kept, the source is unreachable; the
//! unplanned verdict's loss window is the injected backlog's age at the cut
//! (the oldest unprocessed message's age at the last answer; for
//! OpenSearch the last contact with the leader minus the recovery point)
//! within the documented bound; the planned verdict is NO-GO with
//! `source_unreachable`; the one target whose loss window exceeds its
//! budget is the one the unplanned gate names, on every path: `check
//! --from`, `check --prometheus --region` (from
//! `rpo_target_ready_unplanned`), the board; the alerts reach the webhook
//! and no rule errs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use rpo_lab::opensearch::{IndexState, OpenSearchContract};
use rpo_lab::support::aws::{reason_codes, target_verdict_in};
use rpo_lab::support::*;

use crate::region_drill::{between, Between, Drill, REGION_RECOVERY};

/// How long the backlog waits before the cut.
const LAG: Duration = Duration::from_secs(6);
/// The error bound of a loss window here: one poll interval (500 ms) for
/// the last answer before the cut, the whole seconds of RabbitMQ's
/// `timestamp` property (up to 1 s older), the statistics delay's slack
/// and the clock readings around each act.
const BOUND: f64 = 2.0;

const TARGETS: [&str; 4] = ["erp-orders", "erp-outbox", "erp-events", "erp-search"];
const QUEUES: [&str; 3] = ["erp-orders", "erp-outbox", "erp-events"];
/// The stream's budget (3 s) is below the injected backlog: the one target
/// the unplanned gate must name.
const OVER_BUDGET: &str = "erp-events";

const OUTBOX: &str = "CREATE TABLE outbox (id bigserial PRIMARY KEY, payload text, \
     created_at timestamptz NOT NULL DEFAULT now(), processed_at timestamptz)";
const UNPROCESSED: &str = "SELECT count(*), min(created_at) FROM outbox WHERE processed_at IS NULL";

/// One region's exporter: the four targets, evidence kept fresh for 2
/// minutes after the last answer (what a queue's lost region leaves).
fn exporter_config(
    name: &str,
    region: &str,
    rabbit_port: u16,
    outbox_url: &str,
    stream_url: &str,
    search_url: &str,
) -> String {
    let fresh = "stale_after = \"2m\"";
    config_with(&format!(
        "{}{}{}{}",
        rabbitmq_target("erp-orders", rabbit_port, "erp.orders", "30s", fresh),
        sql_queue_target("erp-outbox", outbox_url, "30s", UNPROCESSED) + fresh + "\n",
        redis_stream_target("erp-events", stream_url, "events", "billing", "3s", fresh),
        opensearch_target(
            "erp-search",
            search_url,
            "30s",
            &format!("indices = [\"orders\"]\n{fresh}")
        ),
    ))
    .replace(
        "instance = \"test\"",
        &format!("instance = \"{name}\"\nregion = \"{region}\""),
    )
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_opensearch_keep_the_truth_when_the_primary_region_is_lost() {
    let started = Instant::now();
    let (mut rabbit, postgres, mut redis) = tokio::join!(
        start_rabbit(),
        start_pair(),
        start_redis_server(Default::default()),
    );
    let search = OpenSearchContract::start().unwrap();
    rabbit.declare_queue("erp.orders").unwrap();
    postgres.primary_sql(OUTBOX).unwrap();
    redis
        .command(&["XGROUP", "CREATE", "events", "billing", "$", "MKSTREAM"])
        .unwrap();
    search.set_index("orders", IndexState::InStep { checkpoint: 10 });

    let mut drill = Drill::start(|name, region| {
        exporter_config(
            name,
            region,
            rabbit.management_port(),
            &postgres.primary_url(),
            &redis.url(),
            &search.url(),
        )
    })
    .await;

    // 1. All GO, on both exporters and through Prometheus.
    drill.wait_for_go(Duration::from_secs(40)).await;

    // 2. A backlog nobody processes, and the follower held behind.
    let lag_from: [Between; 4] = [
        between(|| {
            rabbit
                .publish("erp.orders", 1, Some(SystemTime::now()))
                .unwrap()
        }),
        between(|| {
            postgres
                .primary_sql("INSERT INTO outbox (payload) VALUES ('order 1')")
                .unwrap();
        }),
        between(|| {
            redis
                .command(&["XADD", "events", "*", "item", "order 1"])
                .unwrap();
        }),
        between(|| {
            search.set_index(
                "orders",
                IndexState::Behind {
                    leader: 14,
                    follower: 10,
                },
            )
        }),
    ];
    tokio::time::sleep(LAG).await;
    let text = drill
        .recovery
        .wait_for_metrics(
            Duration::from_secs(10),
            "every queue's backlog seen",
            |text| {
                QUEUES
                    .iter()
                    .all(|t| metric_value(text, "rpo_backlog_operations", &labels(t)) == Some(1.0))
            },
        )
        .await;
    let before: Vec<f64> = TARGETS
        .iter()
        .map(|t| {
            metric_value(&text, "rpo_recovery_point_timestamp_seconds", &labels(t))
                .unwrap_or_else(|| panic!("{t} has no recovery point\n{text}"))
        })
        .collect();
    for ((target, rp), lag) in TARGETS.iter().zip(&before).zip(&lag_from) {
        assert!(
            (lag.0 - BOUND..=lag.1 + BOUND).contains(rp),
            "{target}: recovery point {rp} should be where the backlog began ({lag:?})"
        );
    }

    // The cut: the primary region's servers, leader and exporter gone.
    let cut: [Between; 4] = [
        between(|| rabbit.stop()),
        between(|| postgres.stop_primary_immediately().unwrap()),
        between(|| redis.kill()),
        between(|| search.set_leader_lost(true)),
    ];
    drill.stop_primary().await;
    eprintln!("cut at {:?}", started.elapsed());

    // 3. The recovery exporter: every source unreachable, what was proven kept.
    let text = drill
        .assert_kept_while_exposure_grows(&TARGETS, &before)
        .await;
    for target in QUEUES {
        // The last backlog seen is kept (as of the last answer), and no
        // replica is claimed for a queue.
        assert_metric(&text, "rpo_backlog_operations", &labels(target), Some(1.0));
        assert_metric(&text, "rpo_replica_reachable", &labels(target), None);
    }
    // The OpenSearch follower still answers: only its leader is gone.
    assert_metric(
        &text,
        "rpo_replica_reachable",
        &labels("erp-search"),
        Some(1.0),
    );

    for (i, target) in TARGETS.into_iter().enumerate() {
        let planned = target_verdict_in(&drill.recovery, target, "planned").await;
        assert_eq!(planned["ready"], false, "{target}: {planned}");
        assert!(
            reason_codes(&planned).contains(&"source_unreachable".to_string())
                && reasons(&planned).contains("source unreachable ("),
            "{target}: {planned}"
        );
        let unplanned = target_verdict_in(&drill.recovery, target, "unplanned").await;
        let window = unplanned["loss_window_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("{target}: no loss window in {unplanned}"));
        // The backlog's age at the cut: from when it began to the source's
        // end, each between two clock readings.
        let (lag, cut) = (lag_from[i], cut[i]);
        let injected = (cut.0 - lag.1)..=(cut.1 - lag.0);
        eprintln!("{target}: loss window {window:.3}s, injected backlog {injected:.3?}s");
        assert!(
            (injected.start() - BOUND..=injected.end() + BOUND).contains(&window),
            "{target}: loss window {window}s, injected backlog {injected:?}s: {unplanned}"
        );
        assert!(
            unplanned["recovery_point_unix"]
                .as_f64()
                .is_some_and(|rp| (rp - before[i]).abs() < 0.001),
            "{target}: recovery point {} before the cut: {unplanned}",
            before[i]
        );
        let codes = reason_codes(&unplanned);
        assert!(
            !codes.contains(&"source_unreachable".to_string()),
            "{target}: {unplanned}"
        );
        if target == OVER_BUDGET {
            assert_eq!(codes, ["loss_window_over_budget"], "{unplanned}");
            assert!(
                reasons(&unplanned).contains("known loss window ")
                    && reasons(&unplanned).contains("exceeds budget 3s"),
                "{unplanned}"
            );
        } else {
            assert_eq!(unplanned["ready"], true, "{target}: {unplanned}");
        }
        // The per-target unplanned series says the same.
        assert_metric(
            &text,
            "rpo_target_ready_unplanned",
            &labels(target),
            Some(if target == OVER_BUDGET { 0.0 } else { 1.0 }),
        );
    }

    // The paths agree, in both modes.
    drill
        .assert_paths_agree("planned", false, &names(&TARGETS))
        .await;
    let from = drill
        .assert_paths_agree("unplanned", false, &names(&[OVER_BUDGET]))
        .await;
    assert_eq!(from["exporter"]["region"], REGION_RECOVERY, "{from}");

    // The alerts: the lost exporter, the recovery exporter's NO-GO and every
    // source's link unknown; none errs.
    drill
        .assert_alerts_after_the_cut(&[("ReplicationLinkDown", &TARGETS)], &[])
        .await;

    drill.stop().await;
    eprintln!("drill done in {:?}", started.elapsed());
}
