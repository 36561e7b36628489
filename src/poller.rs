//! Runs every target's probe on its own interval, inside its own timeout,
//! and its heartbeat writer on the heartbeat interval; writes every result to
//! the [`Store`].
//!
//! Each target is its own task, so a target that hangs or fails never delays
//! another. Missed ticks are delayed, not bursted. Dropping or aborting the
//! [`Poller`] cancels in-flight polls.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::config::{Config, Target};
use crate::probe::{HeartbeatWriter, Probe, ProbeError};
use crate::probes;
use crate::store::Store;

/// The running poll tasks.
pub struct Poller {
    tasks: JoinSet<()>,
}

impl Poller {
    /// Starts one poll task (and one heartbeat task where configured) per target.
    pub fn start(config: Arc<Config>, store: Arc<Store>) -> Poller {
        let mut tasks = JoinSet::new();
        for (index, target) in config.targets.iter().enumerate() {
            let target = target.clone();
            let store = store.clone();
            match probes::build(&target, &config.instance) {
                Ok(mut probe) => {
                    if let Some(writer) = probe.heartbeat_writer() {
                        tasks.spawn(heartbeat_loop(index, target.clone(), writer, store.clone()));
                    }
                    tasks.spawn(poll_loop(index, target, probe, store));
                }
                Err(error) => {
                    tracing::error!(target = %target.name, %error, "cannot build probe; the target reports a config failure");
                    tasks.spawn(failing_loop(index, target, error, store));
                }
            }
        }
        Poller { tasks }
    }

    /// Cancels every poll and heartbeat, in flight or not.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The outer bound of one poll: the target's timeout, plus a little for the
/// probe to report its own per-side timeouts first.
pub fn poll_deadline(target: &Target) -> Duration {
    target.timeout + Duration::from_millis(250)
}

/// Polls a probe once within its deadline and records the result.
pub async fn poll_and_record(index: usize, target: &Target, probe: &mut dyn Probe, store: &Store) {
    let started = SystemTime::now();
    let clock = Instant::now();
    let deadline = poll_deadline(target);
    let result = match tokio::time::timeout(deadline, probe.poll()).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::timeout(deadline)),
    };
    let finished = started + clock.elapsed();
    match &result {
        Ok(m) if m.failures.is_empty() => {
            tracing::debug!(target = %target.name, duration_ms = clock.elapsed().as_millis() as u64, "poll succeeded")
        }
        Ok(m) => {
            for failure in &m.failures {
                tracing::warn!(target = %target.name, reason = %failure.reason, error = %failure, "poll partly failed");
            }
        }
        Err(error) => {
            tracing::warn!(target = %target.name, reason = %error.reason, %error, "poll failed")
        }
    }
    store.record_poll(index, started, finished, result);
}

/// Writes one heartbeat within the target's timeout and records the result.
pub async fn heartbeat_and_record(
    index: usize,
    target: &Target,
    writer: &mut dyn HeartbeatWriter,
    store: &Store,
) {
    let at = SystemTime::now();
    let result = match tokio::time::timeout(target.timeout, writer.write(at)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::timeout(target.timeout)),
    };
    if let Err(error) = &result {
        tracing::warn!(target = %target.name, reason = %error.reason, %error, "heartbeat write failed");
    }
    store.record_heartbeat(index, at, result);
}

async fn poll_loop(index: usize, target: Target, mut probe: Box<dyn Probe>, store: Arc<Store>) {
    let mut ticker = tokio::time::interval(target.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        poll_and_record(index, &target, probe.as_mut(), &store).await;
    }
}

async fn heartbeat_loop(
    index: usize,
    target: Target,
    mut writer: Box<dyn HeartbeatWriter>,
    store: Arc<Store>,
) {
    let mut ticker = tokio::time::interval(writer.interval());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        heartbeat_and_record(index, &target, writer.as_mut(), &store).await;
    }
}

async fn failing_loop(index: usize, target: Target, error: ProbeError, store: Arc<Store>) {
    let mut ticker = tokio::time::interval(target.poll_interval);
    loop {
        ticker.tick().await;
        let now = SystemTime::now();
        store.record_poll(index, now, now, Err(error.clone()));
    }
}
