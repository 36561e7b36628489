//! Configuration reload, as Prometheus does it: SIGHUP or `POST /-/reload`
//! asks, one reloader task answers, one reload at a time.
//!
//! The new file is loaded and validated first; a file that does not
//! validate is refused (the error logged and answered, the running
//! configuration kept, `rpo_config_last_reload_successful` 0). A valid one is
//! applied target by target ([`Poller::reconcile`]): unchanged targets keep
//! their probes, connections, history and last proven recovery point;
//! removed targets stop and their series disappear; new ones start.
//! `web.listen_address` cannot move without a restart: a change is logged
//! and otherwise ignored.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::http::AppState;
use crate::poller::{Changes, Poller};
use crate::probe::ProbeContext;

/// Loads and validates the configuration anew: the file, then whatever the
/// command line overrides. The error is what a person reads (it names the
/// file and the key, never a secret).
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

type Reply = oneshot::Sender<Result<Changes, String>>;

/// Asks the running daemon to reload its configuration (cheap to clone).
#[derive(Clone, Debug)]
pub struct Reloader {
    requests: mpsc::Sender<Reply>,
}

impl Reloader {
    /// Reloads and waits for the outcome: what changed, or why the new
    /// configuration was refused.
    pub async fn reload(&self) -> Result<Changes, String> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| "the exporter is shutting down".to_string())?;
        outcome
            .await
            .map_err(|_| "the exporter is shutting down".to_string())?
    }
}

/// The receiving end, handed to [`crate::run_with`]: how to load the
/// configuration and the requests to do so.
pub struct Reloads {
    loader: Loader,
    requests: mpsc::Receiver<Reply>,
    reloader: Reloader,
}

impl Reloads {
    /// A handle that asks this daemon to reload.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }
}

/// A reloader (for SIGHUP, say) and the daemon's end of it.
pub fn channel(loader: Loader) -> (Reloader, Reloads) {
    // Requests beyond a few queue in their senders: one reload at a time.
    let (requests, receiver) = mpsc::channel(4);
    let reloader = Reloader { requests };
    (
        reloader.clone(),
        Reloads {
            loader,
            requests: receiver,
            reloader,
        },
    )
}

/// Owns the poller while the daemon runs and applies each reload; returns
/// the poller (to be shut down) once `stop` fires.
pub(crate) async fn serve_reloads(
    mut poller: Poller,
    reloads: Option<Reloads>,
    state: Arc<AppState>,
    context: ProbeContext,
    mut stop: oneshot::Receiver<()>,
) -> Poller {
    let Some(Reloads {
        loader,
        mut requests,
        reloader: _,
    }) = reloads
    else {
        let _ = stop.await;
        return poller;
    };
    let loader: Arc<Loader> = Arc::new(loader);
    loop {
        let reply = tokio::select! {
            _ = &mut stop => return poller,
            reply = requests.recv() => match reply {
                Some(reply) => reply,
                None => {
                    let _ = stop.await;
                    return poller;
                }
            },
        };
        // Reading files and the environment blocks; never on a runtime thread.
        let load = {
            let loader = loader.clone();
            tokio::task::spawn_blocking(move || (loader.as_ref())())
        };
        let loaded = tokio::select! {
            _ = &mut stop => return poller,
            loaded = load => loaded.unwrap_or_else(|e| Err(format!("loading the configuration failed: {e}"))),
        };
        let outcome = match loaded {
            Err(problem) => {
                tracing::error!(error = %problem, "configuration reload refused; the running configuration is kept");
                state.reload_status.failed();
                Err(problem)
            }
            Ok(mut config) => {
                let running = state.config();
                if config.web.listen_address != running.web.listen_address {
                    tracing::warn!(
                        running = %running.web.listen_address,
                        configured = %config.web.listen_address,
                        "web.listen_address changed; restart the exporter to listen there (the rest of the configuration is applied)"
                    );
                    config.web.listen_address = running.web.listen_address;
                }
                // The counters and the heartbeat logs carry over: a kept
                // target's writes still date what its probe sees.
                let context = ProbeContext {
                    instance: config.instance.clone(),
                    aws_calls: context.aws_calls.clone(),
                    heartbeat_logs: context.heartbeat_logs.clone(),
                };
                // The store first, then the configuration readers see: in
                // between, a removed target reads as never polled (NO-GO),
                // never a changed target as its old self.
                let changes = poller.reconcile(&config, context).await;
                state.set_config(Arc::new(config));
                state.reload_status.succeeded(SystemTime::now());
                tracing::info!(
                    kept = changes.kept.len(),
                    added = ?changes.added,
                    removed = ?changes.removed,
                    restarted = ?changes.restarted,
                    history_reset = ?changes.forgotten,
                    "configuration reloaded"
                );
                Ok(changes)
            }
        };
        let _ = reply.send(outcome);
    }
}
