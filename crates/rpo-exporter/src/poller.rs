//! Runs every target's probe on its own interval, inside its own timeout,
//! and its heartbeat writer on the heartbeat interval; writes every result to
//! the [`Store`].
//!
//! Each target is its own task, so a target that hangs or fails never delays
//! another. Missed ticks are delayed, not bursted. Dropping or aborting the
//! [`Poller`] cancels in-flight polls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::config::{Config, Target};
use futures::FutureExt;

use crate::evidence::clock::Stamp;
use crate::kinds;
use crate::probe::{FailureReason, HeartbeatWriter, Probe, ProbeContext, ProbeError};
use crate::store::{Store, TargetId};

/// The running poll tasks.
pub struct Poller {
    tasks: JoinSet<()>,
}

impl Poller {
    /// Starts one poll task (and one heartbeat task where configured) per target.
    pub fn start(config: Arc<Config>, store: Arc<Store>, context: ProbeContext) -> Poller {
        let mut tasks = JoinSet::new();
        for target in &config.targets {
            let id = TargetId::of(target);
            let target = target.clone();
            let store = store.clone();
            match kinds::build(&target, &context) {
                Ok(mut probe) => {
                    if let Some(writer) = probe.heartbeat_writer() {
                        tasks.spawn(heartbeat_loop(
                            id.clone(),
                            target.clone(),
                            writer,
                            store.clone(),
                        ));
                    }
                    tasks.spawn(poll_loop(id, target, context.clone(), probe, store));
                }
                Err(error) => {
                    tracing::error!(target = %target.name, %error, "cannot build probe; the target reports a config failure");
                    tasks.spawn(failing_loop(id, target, error, store));
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

/// Polls a probe once within its deadline and records the result as the
/// report of `id`.
pub async fn poll_and_record(
    id: &TargetId,
    target: &Target,
    probe: &mut dyn Probe,
    store: &Store,
) -> PollOutcome {
    let started = Stamp::now();
    let deadline = poll_deadline(target);
    // A panicking probe is a bug, but it must not end the target's polling
    // silently: it is recorded as a failure (and the caller rebuilds it).
    let poll = std::panic::AssertUnwindSafe(probe.poll()).catch_unwind();
    let (result, panicked) = match tokio::time::timeout(deadline, poll).await {
        Ok(Ok(result)) => (result, false),
        Ok(Err(panic)) => (
            Err(ProbeError::new(
                FailureReason::Query,
                format!(
                    "internal error in the {} probe: {}; please report it",
                    target.kind(),
                    panic_message(&panic)
                ),
            )),
            true,
        ),
        Err(_) => {
            probe.reset();
            (Err(ProbeError::timeout(deadline)), false)
        }
    };
    // Both clocks again: the store re-expresses what it keeps in this
    // reading's wall clock and notices a step during the poll.
    let finished = Stamp::now();
    let took = finished
        .steady
        .duration_since(started.steady)
        .unwrap_or_default();
    match &result {
        Ok(m) if m.failures.is_empty() => {
            tracing::debug!(target = %target.name, duration_ms = took.as_millis() as u64, "poll succeeded")
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
    store.record_poll(id, started, finished, result);
    if panicked {
        PollOutcome::ProbePanicked
    } else {
        PollOutcome::Done
    }
}

/// Whether the probe may be used again.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Done,
    /// The probe panicked: its state is suspect, build a new one.
    ProbePanicked,
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Writes one heartbeat within the target's timeout and records the result.
pub async fn heartbeat_and_record(
    id: &TargetId,
    target: &Target,
    writer: &mut dyn HeartbeatWriter,
    store: &Store,
) {
    let at = SystemTime::now();
    let result = match tokio::time::timeout(target.timeout, writer.write(at)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::timeout(target.timeout)),
    };
    if result
        .as_ref()
        .is_err_and(|e| e.reason != FailureReason::Auth && e.reason != FailureReason::Config)
    {
        writer.reset();
    }
    if let Err(error) = &result {
        tracing::warn!(target = %target.name, reason = %error.reason, %error, "heartbeat write failed");
    }
    store.record_heartbeat_on(id, at, writer.destination(), result);
}

async fn poll_loop(
    id: TargetId,
    target: Target,
    context: ProbeContext,
    mut probe: Box<dyn Probe>,
    store: Arc<Store>,
) {
    let mut ticker = tokio::time::interval(target.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if poll_and_record(&id, &target, probe.as_mut(), &store).await == PollOutcome::ProbePanicked
        {
            tracing::error!(target = %target.name, "the probe panicked; building a new one");
            if let Ok(fresh) = kinds::build(&target, &context) {
                probe = fresh;
            }
        }
    }
}

async fn heartbeat_loop(
    id: TargetId,
    target: Target,
    mut writer: Box<dyn HeartbeatWriter>,
    store: Arc<Store>,
) {
    let mut ticker = tokio::time::interval(writer.interval());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        heartbeat_and_record(&id, &target, writer.as_mut(), &store).await;
    }
}

async fn failing_loop(id: TargetId, target: Target, error: ProbeError, store: Arc<Store>) {
    let mut ticker = tokio::time::interval(target.poll_interval);
    loop {
        ticker.tick().await;
        let now = Stamp::now();
        store.record_poll(&id, now, now, Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;

    struct Panicking;
    impl Probe for Panicking {
        fn poll(&mut self) -> BoxFuture<'_, Result<crate::probe::Measurement, ProbeError>> {
            Box::pin(async { panic!("index out of bounds") })
        }
    }

    #[tokio::test]
    async fn a_panicking_probe_is_recorded_as_a_failure() {
        let config = Config::from_toml(
            "[[group]]\nname = \"g\"\nrpo_budget = \"5s\"\n[[postgres]]\nname = \"t\"\ngroup = \"g\"\nprimary_url = \"postgres://a@127.0.0.1:1/x\"\nreplica_url = \"postgres://a@127.0.0.1:1/x\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let id = TargetId::of(&config.targets[0]);
        let store = Store::new([id.clone()]);
        let outcome = poll_and_record(&id, &config.targets[0], &mut Panicking, &store).await;
        assert_eq!(outcome, PollOutcome::ProbePanicked);
        let report = store.snapshot().report(&id).unwrap().clone();
        assert_eq!(report.failures(FailureReason::Query), 1);
        assert!(report
            .last_error
            .as_ref()
            .unwrap()
            .message
            .contains("index out of bounds"));
    }
}
