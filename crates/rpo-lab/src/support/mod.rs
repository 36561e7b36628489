//! The shared test helpers: what every test crate against the real servers
//! needs besides the servers themselves.
//!
//! - [`Exporter`]: the exporter run in-process on 127.0.0.1:0 (or on a
//!   listener of the caller's), stopped on drop; [`ExporterClient`] is its
//!   HTTP side, also usable against an exporter running as a child process:
//!   `/metrics`, `/failover-readiness`, and waits for a verdict, a target's
//!   verdict, a scrape or counted failures. [`ExporterProcess`] runs the
//!   binary as a child; [`exporter_command`] is the command that spawns the
//!   daemon (under `prlimit` for an open-file limit).
//! - Reading an exposition: [`metric_value`], [`assert_metric`],
//!   [`failures_counted`], [`heartbeat_written_and_seen`].
//! - Config text: [`config_with`] around one block per kind
//!   ([`postgres_target`], [`mysql_target`], [`redis_target`], ...),
//!   [`parse_config`], [`write_file`], and the stand-in secrets for `*_env`
//!   keys.
//! - The lab's servers started off the async threads ([`start_pair`],
//!   [`start_mariadb_pair`], [`start_redis_pair`], ...) and writers that
//!   keep a source busy ([`Writer`], [`MysqlWriter`], [`RedisWriter`]).
//! - [`aws`]: moto with dummy credentials, admin clients, CloudWatch
//!   datapoints, AWS config text. Not glob-exported: its names are short.
//! - [`wait_until`]: the one polling wait the others are built on.
//!
//! Test modules `use rpo_lab::support::*;`. Metric names are spelled out
//! here as the tests read them.
// TODO(catalogue): take the rpo_* names used here from the metric catalogue.

pub mod aws;
mod config;
mod exporter;
mod exposition;
mod files;
mod servers;

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

pub use config::*;
pub use exporter::*;
pub use exposition::*;
pub use files::*;
pub use servers::*;

/// Polls `condition` every 200 ms until it holds and returns what it saw
/// then; panics with `what` and the last observation after `timeout`.
pub async fn wait_until<F, Fut, T>(timeout: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, T)>,
    T: Display,
{
    let started = Instant::now();
    loop {
        let (done, observation) = condition().await;
        if done {
            return observation;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {observation}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seconds since the Unix epoch, now, by this machine's clock.
pub fn now_unix() -> f64 {
    rpo_exporter::probe::unix_seconds(std::time::SystemTime::now())
}
