//! Clocks (SPEC section 10) against real servers and the real binary, with
//! libfaketime: a Postgres primary whose clock runs a minute ahead or
//! behind (and a replica skewed too), this exporter's own wall clock
//! stepped forward and back while replay is paused, and a second exporter
//! under the same instance name with a clock an hour ahead. In every case
//! the exposure stays the injected lag within [`BOUND`], and the gate says
//! NO-GO naming the target; never 0 and GO.
//!
//! Redis clocks cannot be faked (libfaketime breaks `redis-server`): the
//! Redis offsets are checked at zero.

use std::time::{Duration, Instant};

use rpo_lab::faketime::{self, SteppableClock};
use rpo_lab::support::*;
use rpo_lab::{PostgresOptions, PostgresPair};

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// With a 500 ms heartbeat.
const HB: &str = "erp-db";
/// Engine positions only.
const POS: &str = "erp-db-positions";

/// How far the exposure may be from the injected lag: one 500 ms poll (or
/// heartbeat) interval, plus a second for the polls' own time and a loaded
/// machine.
const BOUND: f64 = 1.5;

fn two_targets(pair: &PostgresPair) -> String {
    config_with(&format!(
        "{}{}",
        postgres_target(HB, pair, "2s", true),
        postgres_target(POS, pair, "2s", false)
    ))
}

/// The exposure of both targets is the time replay has been paused (within
/// [`BOUND`]), the recovery point is not later than the evidence, and the
/// gate is NO-GO naming each target's exposure against its budget.
async fn assert_exposure_is_the_pause(exporter: &ExporterClient, paused_at: Instant, when: &str) {
    let metrics = exporter.metrics().await;
    let elapsed = paused_at.elapsed().as_secs_f64();
    for target in [HB, POS] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        assert!(
            (exposure - elapsed).abs() <= BOUND,
            "{when}: {target}: exposure {exposure} after {elapsed:.1}s of paused replay"
        );
        let rp = metric_value(
            &metrics,
            "rpo_recovery_point_timestamp_seconds",
            &labels(target),
        )
        .unwrap();
        let evidence =
            metric_value(&metrics, "rpo_evidence_timestamp_seconds", &labels(target)).unwrap();
        assert!(
            rp <= evidence,
            "{when}: {target}: recovery point {rp} later than its evidence {evidence}"
        );
        assert_metric(&metrics, "rpo_target_ready", &labels(target), Some(0.0));
    }
    assert_metric(
        &metrics,
        "rpo_failover_ready",
        &[("group", "erp")],
        Some(0.0),
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{when}: {verdict}");
    assert_eq!(verdict["verdict"], "NO-GO");
    let reasons: Vec<&str> = verdict["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for target in [HB, POS] {
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with(&format!("{target}: exposure "))
                    && r.ends_with("exceeds budget 2s")),
            "{when}: {target} not named: {reasons:?}"
        );
    }
}

/// The primary's (and replica's) clock `primary`/`replica` away from ours:
/// the offsets read as such, and paused replay reads as its own length.
async fn skewed_servers_never_hide_paused_replay(primary: &str, replica: &str, ahead: (f64, f64)) {
    let pair = start_pair_with(PostgresOptions {
        primary_clock: Some(primary.to_string()),
        replica_clock: Some(replica.to_string()),
    })
    .await;
    // The trap is set: the servers' clocks really are off.
    for (sql, expected, side) in [
        (
            pair.primary_sql("SELECT extract(epoch from now())"),
            ahead.0,
            "primary",
        ),
        (
            pair.replica_sql("SELECT extract(epoch from now())"),
            ahead.1,
            "replica",
        ),
    ] {
        let skew = sql.unwrap().parse::<f64>().unwrap() - now_unix();
        assert!(
            (skew - expected).abs() < 2.0,
            "the {side}'s clock is {skew}s off"
        );
    }
    let exporter = Exporter::start(&two_targets(&pair)).await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the pause")
        .await;
    let metrics = exporter.metrics().await;
    for target in [HB, POS] {
        for (side, expected) in [("source", ahead.0), ("replica", ahead.1)] {
            let offset = metric_value(
                &metrics,
                "rpo_clock_offset_seconds",
                &[("target", target), ("side", side)],
            )
            .unwrap_or_else(|| panic!("{target}: no {side} clock offset"));
            assert!(
                (offset - expected).abs() < 1.0,
                "{target}: {side} offset {offset}, expected about {expected}"
            );
        }
    }

    pair.pause_replay().unwrap();
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_exposure_is_the_pause(&exporter, paused_at, "replay paused").await;

    pair.resume_replay().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO after resume")
        .await;
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_clock_a_minute_ahead_never_hides_paused_replay() {
    skewed_servers_never_hide_paused_replay("+60s", "-30s", (60.0, -30.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_clock_a_minute_behind_never_hides_paused_replay() {
    skewed_servers_never_hide_paused_replay("-60s", "+30s", (-60.0, 30.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stepping_the_exporters_own_clock_never_pins_the_exposure() {
    let pair = start_pair().await;
    let clock = SteppableClock::new().unwrap();
    let exporter = ExporterProcess::start(BIN, &two_targets(&pair), clock.env().unwrap()).await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the step")
        .await;

    // An NTP step forward while replication is healthy: proofs are now
    // taken on a wall clock 10 s ahead. The exposure does not jump by 10 s.
    clock.set_offset(10).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = exporter.metrics().await;
    for target in [HB, POS] {
        let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(target)).unwrap();
        assert!(
            exposure < BOUND,
            "{target}: exposure {exposure} after a forward step"
        );
    }
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 200, "GO across a forward step: {verdict}");

    // Replay paused, then the clock steps back: the proofs dated on the
    // clock that was ahead must not pin the exposure at 0 for 10 s.
    pair.pause_replay().unwrap();
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.set_offset(0).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_exposure_is_the_pause(&exporter, paused_at, "after a backward step").await;

    // And forward again while still paused: the step is not added.
    clock.set_offset(10).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exposure_is_the_pause(&exporter, paused_at, "after a second forward step").await;

    pair.resume_replay().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO after resume")
        .await;
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_exporter_an_hour_ahead_under_the_same_instance_never_pins_the_exposure() {
    let pair = start_pair().await;
    let config = two_targets(&pair);
    let exporter = Exporter::start(&config).await;
    let writer = Writer::start(&pair.primary_url(), Duration::from_millis(100)).await;
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO before the intruder")
        .await;

    // The same config (instance "test"), a clock an hour ahead: its
    // heartbeats overwrite ours on the primary and replicate for 10 s.
    let intruder =
        ExporterProcess::start(BIN, &config, faketime::exporter_env("+3600s").unwrap()).await;
    let started = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the intruder's heartbeat (an hour ahead) on the replica",
        || async {
            let ts = pair
                .replica_sql(
                    "SELECT coalesce(max(ts), 0) FROM rpo_heartbeat WHERE instance = 'test'",
                )
                .unwrap();
            let ahead = ts.parse::<f64>().unwrap() - now_unix();
            (ahead > 3000.0, format!("{ahead:.0}s ahead"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    intruder.stop().await;

    pair.pause_replay().unwrap();
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_exposure_is_the_pause(&exporter, paused_at, "after the intruder").await;

    pair.resume_replay().unwrap();
    exporter
        .wait_for_go("", Duration::from_secs(15), "GO after resume")
        .await;
    drop(writer);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clock_offsets_are_measured_on_both_sides() {
    let pair = start_redis_pair(rpo_lab::redis::RedisOptions::default()).await;
    let exporter = Exporter::start(&config_with(&redis_target(
        "sessions", &pair, "5s", true, "",
    )))
    .await;
    let metrics = exporter.wait_for_probe_success("sessions").await;
    for side in ["source", "replica"] {
        let offset = metric_value(
            &metrics,
            "rpo_clock_offset_seconds",
            &[("target", "sessions"), ("side", side)],
        )
        .unwrap_or_else(|| panic!("no {side} clock offset"));
        // The lab's servers run on this machine's clock.
        assert!(offset.abs() < 0.5, "{side} offset {offset}");
    }
    exporter.stop().await;
}
