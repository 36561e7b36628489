//! rpo-exporter measures the actual recovery-point exposure of replicated
//! stores and answers whether a failover may proceed.
//!
//! Data flows one way; the modules in reading order:
//!
//! - [`config`]: the TOML file, validated into a [`config::Config`].
//! - [`probe`]: the [`probe::Probe`] trait, [`probe::Measurement`] and
//!   [`probe::ProbeError`] with its bounded reason.
//! - [`kinds`]: one module per kind (`postgres`, `redis`, `redis_stream`,
//!   `rabbitmq`, `sql_queue`, `opensearch`, and the AWS kinds in
//!   `kinds::aws`); `kinds::build` is the one place that maps a kind to its
//!   probe.
//! - [`poller`]: runs each probe on its interval within its timeout, and the
//!   heartbeat writers, and records into the store.
//! - [`store`]: the latest report per target, keyed by [`store::TargetId`],
//!   as a cheaply cloned snapshot; owns the "no reset" rule.
//! - [`readiness`]: the pure verdict, `evaluate(config, snapshot, mode, now)`,
//!   with typed reasons ([`readiness::ReasonCode`]).
//! - [`metrics`], [`board`], [`http`]: what readers see, all from a snapshot
//!   (and, for `/metrics`, the explicit [`self_metrics`]); every `rpo_*`
//!   family is declared once as a [`metric_def::MetricDef`] and listed in
//!   `metrics::catalogue`.
//! - [`publish`]: the optional `[cloudwatch]` publisher, which puts each
//!   group's verdicts and each target's exposure into CloudWatch for AWS
//!   automation (alarms gating a promotion).
//! - [`reload`]: configuration reload (SIGHUP, `POST /-/reload`), applied
//!   target by target by the poller.
//! - [`check`]: the `check` command; [`drill`]: the `drill` command (a
//!   failover drill in the foreground, and its report).
//! - [`lab`]: real servers for the tests and the demo (Postgres and Redis
//!   pairs, RabbitMQ, moto, Prometheus, Alertmanager, the OpenSearch contract
//!   server), and `lab::full`, all of them at once.
//!
//! Probes never import `http`, `metrics` or `readiness`; the verdict never
//! reaches into a probe. See ARCHITECTURE.md.

pub mod board;
pub mod check;
pub mod config;
pub mod drill;
pub mod drivers;
pub mod evidence;
pub mod http;
pub mod human;

pub mod kinds;
pub mod logging;
pub mod metric_def;
pub mod metrics;
pub mod poller;
pub mod probe;
pub mod publish;
pub mod readiness;
pub mod reload;
pub mod self_metrics;
pub mod store;
pub mod web_config;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use config::Config;
use store::{Store, TargetId};

/// How the daemon runs besides its configuration.
#[derive(Default)]
pub struct RunOptions {
    /// The HTTP server's limits.
    pub limits: http::WebLimits,
    /// Where reloads come from and how to load the configuration; `None`:
    /// the configuration is fixed (`POST /-/reload` answers 503).
    pub reloads: Option<reload::Reloads>,
    /// The route prefix, TLS and basic authentication.
    pub web: http::WebOptions,
}

/// Runs the daemon: polls every target and serves HTTP on `listener` until
/// `shutdown` completes; then cancels in-flight polls and returns.
pub async fn run(config: Arc<Config>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    run_with(config, listener, RunOptions::default(), shutdown).await
}

/// [`run`], with limits and reloads.
pub async fn run_with(
    config: Arc<Config>,
    listener: TcpListener,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) {
    let store = Arc::new(Store::new(config.targets.iter().map(TargetId::of)));
    let probe_context = probe::ProbeContext::new(config.instance.clone());
    let poller = poller::Poller::start(config.clone(), store.clone(), probe_context.clone());
    let mut state = http::AppState::new(config, store, probe_context.aws_calls.clone())
        .with_web(options.web.clone());
    if let Some(reloads) = &options.reloads {
        state = state.with_reloader(reloads.reloader());
    }
    let state = Arc::new(state);
    // `[cloudwatch]`: its own task, reading what readers read; it never
    // delays a poll or an answer.
    let publisher = tokio::spawn(publish::run(state.clone(), probe_context.aws_calls.clone()));
    let history = tokio::spawn(record_history(state.clone()));
    let (stop_reloads, reloads_stopped) = tokio::sync::oneshot::channel();
    let reloads = tokio::spawn(reload::serve_reloads(
        poller,
        options.reloads,
        state.clone(),
        probe_context,
        reloads_stopped,
    ));
    http::serve(listener, state, options.limits, shutdown).await;
    publisher.abort();
    history.abort();
    let _ = stop_reloads.send(());
    match reloads.await {
        Ok(poller) => poller.shutdown().await,
        Err(error) => tracing::error!(%error, "the reload task ended abnormally"),
    }
}

/// Records each target's exposure against its budget for the board's chart
/// every [`board::HISTORY_EVERY`], whether or not anyone looks.
async fn record_history(state: Arc<http::AppState>) {
    let mut every = tokio::time::interval(board::HISTORY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let verdict = readiness::evaluate(
            &state.config(),
            &state.store.snapshot(),
            readiness::Mode::Planned,
            std::time::SystemTime::now(),
            None,
        );
        state.history.record(&verdict);
    }
}
