//! Runs every target's probe on its own interval, inside its own timeout,
//! and its heartbeat writer on the heartbeat interval; writes every result to
//! the [`Store`].
//!
//! Each target is its own task, so a target that hangs or fails never delays
//! another. Missed ticks are delayed, not bursted. Stopping a target (a
//! reload that removed or changed it, or [`Poller::shutdown`]) cancels its
//! in-flight poll.
//!
//! A reload ([`Poller::reconcile`]) compares each target with the one
//! running under the same [`TargetId`]: an unchanged target keeps its task,
//! and so its probe (kept connections, position history) and its report in
//! the store; a removed one is stopped and its report dropped; a new one is
//! started. A target whose kind-specific settings changed (URLs, secrets,
//! heartbeat, files) is started afresh and its report forgotten: what was
//! proven was about another pair. One whose cadence changed (poll interval,
//! timeout, or the exporter's instance name) is restarted with its report
//! kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::{Config, Target};
use futures::FutureExt;

use crate::evidence::clock::Stamp;
use crate::human::human_duration;
use crate::kinds;
use crate::probe::{FailureReason, HeartbeatWriter, Probe, ProbeContext, ProbeError, Side};
use crate::store::{Store, TargetId};

/// The running poll tasks, by target.
pub struct Poller {
    store: Arc<Store>,
    context: ProbeContext,
    running: HashMap<TargetId, Running>,
}

/// One target's tasks, and the settings they run with.
struct Running {
    target: Target,
    tasks: Vec<JoinHandle<()>>,
}

/// What a reload changed, target by target (names, sorted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Running on, with their connections, history and recovery point.
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Restarted with new settings; `forgotten` lists those whose report
    /// was dropped because what it proved was about other settings.
    pub restarted: Vec<String>,
    pub forgotten: Vec<String>,
}

/// How a target differs from the one running under the same id.
#[derive(Debug, PartialEq, Eq)]
enum Difference {
    None,
    /// Same pair, other cadence: restart, keep the report.
    Cadence,
    /// Other kind-specific settings: restart, forget the report.
    Settings,
}

fn difference(running: &Target, new: &Target, instance_changed: bool) -> Difference {
    if running.kind != new.kind || running.settings_digest != new.settings_digest {
        Difference::Settings
    } else if running.poll_interval != new.poll_interval
        || running.timeout != new.timeout
        || instance_changed
    {
        Difference::Cadence
    } else {
        Difference::None
    }
}

impl Poller {
    /// Starts one poll task (and one heartbeat task where configured) per target.
    pub fn start(config: Arc<Config>, store: Arc<Store>, context: ProbeContext) -> Poller {
        let mut poller = Poller {
            store,
            context,
            running: HashMap::new(),
        };
        let step = first_poll_step(config.targets.len(), &config.targets);
        for (k, target) in config.targets.iter().enumerate() {
            poller.start_target(target, step * k as u32);
        }
        poller
    }

    /// Starts a target's tasks; its first poll (and heartbeat) `after` from
    /// now (see [`first_poll_step`]).
    fn start_target(&mut self, target: &Target, after: Duration) {
        let id = TargetId::of(target);
        let mut tasks = Vec::new();
        let store = self.store.clone();
        let context = self.context.clone();
        let owned = target.clone();
        match kinds::build(target, &context) {
            Ok(mut probe) => {
                if let Some(writer) = probe.heartbeat_writer() {
                    tasks.push(tokio::spawn(heartbeat_loop(
                        id.clone(),
                        owned.clone(),
                        writer,
                        store.clone(),
                        after,
                    )));
                }
                tasks.push(tokio::spawn(poll_loop(
                    id.clone(),
                    owned.clone(),
                    context,
                    probe,
                    store,
                    after,
                )));
            }
            Err(error) => {
                tracing::error!(target = %target.name, %error, "cannot build probe; the target reports a config failure");
                tasks.push(tokio::spawn(failing_loop(
                    id.clone(),
                    owned.clone(),
                    error,
                    store,
                )));
            }
        }
        self.running.insert(
            id,
            Running {
                target: owned,
                tasks,
            },
        );
    }

    /// Stops a target's tasks and waits until they have ended, so no late
    /// result of the old settings reaches the store.
    async fn stop_target(&mut self, id: &TargetId) {
        if let Some(running) = self.running.remove(id) {
            for task in &running.tasks {
                task.abort();
            }
            for task in running.tasks {
                let _ = task.await;
            }
        }
    }

    /// Moves the running targets to `config` (see the module doc) and makes
    /// the store track exactly its targets. `context` carries the instance
    /// name of the new configuration.
    pub async fn reconcile(&mut self, config: &Config, context: ProbeContext) -> Changes {
        let instance_changed = context.instance != self.context.instance;
        self.context = context;
        let mut changes = Changes::default();
        let wanted: HashMap<TargetId, &Target> = config
            .targets
            .iter()
            .map(|t| (TargetId::of(t), t))
            .collect();
        let mut to_start: Vec<&Target> = Vec::new();
        let mut forget: Vec<TargetId> = Vec::new();
        let running_ids: Vec<TargetId> = self.running.keys().cloned().collect();
        for id in running_ids {
            match wanted.get(&id) {
                None => {
                    self.stop_target(&id).await;
                    changes.removed.push(id.to_string());
                }
                Some(new) => {
                    let running = &self.running[&id].target;
                    match difference(running, new, instance_changed) {
                        Difference::None => {
                            // Budget, staleness or group may differ: they are
                            // read from the configuration, not the task.
                            self.running.get_mut(&id).expect("running").target = (*new).clone();
                            changes.kept.push(id.to_string());
                        }
                        Difference::Cadence => {
                            self.stop_target(&id).await;
                            to_start.push(new);
                            changes.restarted.push(id.to_string());
                        }
                        Difference::Settings => {
                            self.stop_target(&id).await;
                            to_start.push(new);
                            changes.restarted.push(id.to_string());
                            changes.forgotten.push(id.to_string());
                            forget.push(id.clone());
                        }
                    }
                }
            }
        }
        for (id, target) in &wanted {
            if !self.running.contains_key(id) && !to_start.iter().any(|t| TargetId::of(t) == *id) {
                to_start.push(target);
                changes.added.push(id.to_string());
            }
        }
        // The store first: a task started before its target is tracked
        // would have its first results dropped.
        self.store
            .track_exactly(config.targets.iter().map(TargetId::of), &forget);
        let step = first_poll_step(to_start.len(), to_start.iter().copied());
        for (k, target) in to_start.into_iter().enumerate() {
            self.start_target(target, step * k as u32);
        }
        for list in [
            &mut changes.kept,
            &mut changes.added,
            &mut changes.removed,
            &mut changes.restarted,
            &mut changes.forgotten,
        ] {
            list.sort();
        }
        changes
    }

    /// Cancels every poll and heartbeat, in flight or not.
    pub async fn shutdown(mut self) {
        let ids: Vec<TargetId> = self.running.keys().cloned().collect();
        for id in &ids {
            if let Some(running) = self.running.get(id) {
                for task in &running.tasks {
                    task.abort();
                }
            }
        }
        for id in ids {
            self.stop_target(&id).await;
        }
    }
}

/// How far apart the first polls of `n` targets starting together are
/// spread: the shortest poll interval among them divided by `n`, and at
/// most 10 ms. So 10,000 targets at a 5 s interval start one every 0.5 ms,
/// over one interval (no connection storm, and their polls stay spread
/// after), while a handful start within a few tens of milliseconds.
pub fn first_poll_step<'a>(n: usize, targets: impl IntoIterator<Item = &'a Target>) -> Duration {
    let shortest = targets
        .into_iter()
        .map(|t| t.poll_interval)
        .min()
        .unwrap_or_default();
    match u32::try_from(n) {
        Ok(n) if n > 0 => (shortest / n).min(FIRST_POLL_STEP_MAX),
        _ => Duration::ZERO,
    }
}

/// The most [`first_poll_step`] waits between two targets' first polls.
pub const FIRST_POLL_STEP_MAX: Duration = Duration::from_millis(10);

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
    log: &mut StateLog,
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
            // The target's timeout, as configured: the margin is ours.
            (Err(ProbeError::timeout(target.timeout)), false)
        }
    };
    // Both clocks again: the store re-expresses what it keeps in this
    // reading's wall clock and notices a step during the poll.
    let finished = Stamp::now();
    let took = finished
        .steady
        .duration_since(started.steady)
        .unwrap_or_default();
    let failures: &[ProbeError] = match &result {
        Ok(m) => &m.failures,
        Err(error) => std::slice::from_ref(error),
    };
    if failures.is_empty() {
        tracing::debug!(target = %target.name, duration_ms = took.as_millis() as u64, "poll succeeded");
    }
    log.observe(Instant::now(), failures)
        .emit(&target.name, "poll", result.is_err());
    store.record_poll(id, started, finished, result);
    if panicked {
        PollOutcome::ProbePanicked
    } else {
        PollOutcome::Done
    }
}

/// How often a target that stays in the same failing state is logged again.
pub const LOG_REMINDER: Duration = Duration::from_secs(300);

/// What the log says about one target's polls (or heartbeat writes): one
/// line when the state changes (it starts failing, fails for another
/// reason, recovers) and a reminder every [`LOG_REMINDER`] while it stays
/// failing, never a line per poll (8 targets down at 1 s polls were 8
/// warnings a second). The state is the set of failing sides and their
/// bounded reasons; the words of the line are the latest failure's.
#[derive(Debug, Default)]
pub struct StateLog {
    /// The failing (side, reason) pairs of the last attempt; empty when it
    /// succeeded.
    state: Vec<(Option<Side>, FailureReason)>,
    /// When the current failing state began, and when it was last logged.
    since: Option<Instant>,
    last_logged: Option<Instant>,
    /// Attempts in the current failing state.
    attempts: u64,
}

/// What one attempt's outcome adds to the log.
#[derive(Debug, PartialEq)]
pub enum StateChange {
    /// Nothing to say: same state as before, reminder not due.
    None,
    /// It started failing, or fails for other reasons than before.
    Failing(Vec<ProbeError>),
    /// Still failing in the same way after `for_` (`attempts` attempts).
    StillFailing {
        failures: Vec<ProbeError>,
        for_: Duration,
        attempts: u64,
    },
    /// It succeeded again after failing for `after`.
    Recovered { after: Duration, attempts: u64 },
}

impl StateLog {
    /// Records one attempt's failures (none: it succeeded) at `now`.
    pub fn observe(&mut self, now: Instant, failures: &[ProbeError]) -> StateChange {
        let mut state: Vec<(Option<Side>, FailureReason)> =
            failures.iter().map(|f| (f.side, f.reason)).collect();
        state.sort();
        state.dedup();
        if state.is_empty() {
            let was_failing = !self.state.is_empty();
            let change = match (was_failing, self.since) {
                (true, Some(since)) => StateChange::Recovered {
                    after: now.duration_since(since),
                    attempts: self.attempts,
                },
                _ => StateChange::None,
            };
            *self = StateLog::default();
            return change;
        }
        if state != self.state {
            if self.state.is_empty() {
                self.since = Some(now);
                self.attempts = 0;
            }
            self.state = state;
            self.attempts += 1;
            self.last_logged = Some(now);
            return StateChange::Failing(failures.to_vec());
        }
        self.attempts += 1;
        let due = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_REMINDER);
        if !due {
            return StateChange::None;
        }
        self.last_logged = Some(now);
        StateChange::StillFailing {
            failures: failures.to_vec(),
            for_: self
                .since
                .map(|s| now.duration_since(s))
                .unwrap_or_default(),
            attempts: self.attempts,
        }
    }
}

impl StateChange {
    /// Logs the change for `target`; `what` is "poll" or "heartbeat write".
    /// `whole` says a failure failed the whole attempt (else: partly).
    pub fn emit(self, target: &str, what: &str, whole: bool) {
        let failed = if whole { "failed" } else { "partly failed" };
        match self {
            StateChange::None => {}
            StateChange::Failing(failures) => {
                for failure in &failures {
                    tracing::warn!(target = %target, reason = %failure.reason, error = %failure, "{what} {failed}; logged again when this changes, or every 5m while it lasts");
                }
            }
            StateChange::StillFailing {
                failures,
                for_,
                attempts,
            } => {
                for failure in &failures {
                    tracing::warn!(target = %target, reason = %failure.reason, error = %failure, failing_for = %human_duration(for_), attempts, "{what} still {failed}");
                }
            }
            StateChange::Recovered { after, attempts } => {
                tracing::info!(target = %target, failed_for = %human_duration(after), attempts, "{what} succeeded again");
            }
        }
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
    log: &mut StateLog,
) {
    let at = SystemTime::now();
    let result = match tokio::time::timeout(target.timeout, writer.write(at)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::timeout(target.timeout)),
    };
    // A kept connection goes only when the failure may have lost it (a
    // shared one goes for every writer sharing it): never for an error the
    // server answered on a usable session (`connection_intact`), nor for a
    // refusal (auth) or a setting (config), which a new connection would
    // meet again.
    if let Err(e) = &result {
        if !e.connection_intact
            && e.reason != FailureReason::Auth
            && e.reason != FailureReason::Config
        {
            writer.reset(e);
        }
    }
    let failures = result
        .as_ref()
        .err()
        .map(std::slice::from_ref)
        .unwrap_or_default();
    log.observe(Instant::now(), failures)
        .emit(&target.name, "heartbeat write", true);
    store.record_heartbeat_on(id, at, writer.destination(), result);
}

async fn poll_loop(
    id: TargetId,
    target: Target,
    context: ProbeContext,
    mut probe: Box<dyn Probe>,
    store: Arc<Store>,
    after: Duration,
) {
    let first = tokio::time::Instant::now() + after;
    let mut ticker = tokio::time::interval_at(first, target.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut log = StateLog::default();
    loop {
        ticker.tick().await;
        if poll_and_record(&id, &target, probe.as_mut(), &store, &mut log).await
            == PollOutcome::ProbePanicked
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
    after: Duration,
) {
    let first = tokio::time::Instant::now() + after;
    let mut ticker = tokio::time::interval_at(first, writer.interval());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut log = StateLog::default();
    loop {
        ticker.tick().await;
        heartbeat_and_record(&id, &target, writer.as_mut(), &store, &mut log).await;
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

    fn target_of(text: &str) -> Target {
        Config::from_toml(text, std::path::Path::new("t.toml"))
            .unwrap()
            .targets
            .remove(0)
    }

    #[test]
    fn a_reload_restarts_only_what_changed_and_forgets_only_other_pairs() {
        let base = "[[group]]\nname = \"g\"\nrpo_budget = \"5s\"\n[[postgres]]\nname = \"t\"\ngroup = \"g\"\nprimary_url = \"postgres://a@127.0.0.1:1/x\"\nreplica_url_file = \"FILE\"\n";
        let dir = std::env::temp_dir().join(format!("rpo-poller-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("replica-url");
        std::fs::write(&file, "postgres://a@127.0.0.1:2/x").unwrap();
        let base = base.replace("FILE", file.to_str().unwrap());
        let running = target_of(&base);
        // The same file: nothing to do.
        assert_eq!(
            difference(&running, &target_of(&base), false),
            Difference::None
        );
        // A budget or staleness change is read from the configuration.
        let budget = base.replace("name = \"t\"", "name = \"t\"\nrpo_budget = \"9s\"");
        assert_eq!(
            difference(&running, &target_of(&budget), false),
            Difference::None
        );
        // Cadence: restart, keep the report.
        let cadence = base.replace("name = \"t\"", "name = \"t\"\npoll_interval = \"2s\"");
        assert_eq!(
            difference(&running, &target_of(&cadence), false),
            Difference::Cadence
        );
        assert_eq!(
            difference(&running, &target_of(&base), true),
            Difference::Cadence
        );
        // Another URL, or the same file holding another secret: another pair.
        let url = base.replace("127.0.0.1:1", "127.0.0.1:3");
        assert_eq!(
            difference(&running, &target_of(&url), false),
            Difference::Settings
        );
        std::fs::write(&file, "postgres://a@127.0.0.1:4/x").unwrap();
        assert_eq!(
            difference(&running, &target_of(&base), false),
            Difference::Settings
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
        let outcome = poll_and_record(
            &id,
            &config.targets[0],
            &mut Panicking,
            &store,
            &mut StateLog::default(),
        )
        .await;
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

    #[test]
    fn the_log_speaks_on_a_change_and_reminds_every_five_minutes() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let refused =
            ProbeError::new(FailureReason::Connect, "Connection refused").on(Side::Replica);
        let slow = ProbeError::timeout(Duration::from_secs(2)).on(Side::Replica);
        let mut log = StateLog::default();
        assert_eq!(log.observe(at(0), &[]), StateChange::None);
        // The first failure is logged; the same failure a poll later is not.
        assert_eq!(
            log.observe(at(1), std::slice::from_ref(&refused)),
            StateChange::Failing(vec![refused.clone()])
        );
        for second in 2..300 {
            assert_eq!(
                log.observe(at(second), std::slice::from_ref(&refused)),
                StateChange::None,
                "at {second}s"
            );
        }
        // Five minutes on: a reminder, then quiet again.
        assert_eq!(
            log.observe(at(301), std::slice::from_ref(&refused)),
            StateChange::StillFailing {
                failures: vec![refused.clone()],
                for_: Duration::from_secs(300),
                attempts: 300,
            }
        );
        assert_eq!(
            log.observe(at(302), std::slice::from_ref(&refused)),
            StateChange::None
        );
        // Another reason is a change, logged at once.
        assert_eq!(
            log.observe(at(303), std::slice::from_ref(&slow)),
            StateChange::Failing(vec![slow.clone()])
        );
        // Back: one line, with how long it failed.
        assert_eq!(
            log.observe(at(310), &[]),
            StateChange::Recovered {
                after: Duration::from_secs(309),
                attempts: 302,
            }
        );
        assert_eq!(log.observe(at(311), &[]), StateChange::None);
    }

    fn redis_targets(intervals: &[&str]) -> Config {
        let mut toml = String::from("[[group]]\nname = \"g\"\nrpo_budget = \"60s\"\n");
        for (i, interval) in intervals.iter().enumerate() {
            toml.push_str(&format!(
                "[[redis]]\nname = \"t{i}\"\ngroup = \"g\"\npoll_interval = \"{interval}\"\n\
                 primary_url = \"redis://127.0.0.1:1\"\nreplica_url = \"redis://127.0.0.1:2\"\n"
            ));
        }
        Config::from_toml(&toml, std::path::Path::new("spread.toml")).unwrap()
    }

    /// Many targets start over one (the shortest) interval; a few start at
    /// most 10 ms apart.
    #[test]
    fn first_polls_are_spread_over_one_interval_and_at_most_10ms_apart() {
        let many = redis_targets(&["1s"; 1000]);
        assert_eq!(
            first_poll_step(1000, &many.targets),
            Duration::from_millis(1)
        );
        let mixed = redis_targets(&["5s", "500ms", "5s", "5s", "5s"]);
        let spread = first_poll_step(100, &mixed.targets);
        assert_eq!(spread, Duration::from_millis(5));
        let few = redis_targets(&["5s", "5s", "5s"]);
        assert_eq!(first_poll_step(3, &few.targets), FIRST_POLL_STEP_MAX);
        assert_eq!(first_poll_step(0, &few.targets[..0]), Duration::ZERO);
    }
}
