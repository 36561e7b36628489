//! What the benchmarks of the running daemon share: the application that
//! keeps WAL flowing on the lab's Postgres primary, and stopping a process
//! the way an init system does.

use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpo_lab::PostgresPair;

/// The application: an order INSERTed on the pair's primary every 200 ms
/// (table `bench_orders`, created by [`OrderWriter::start`]), counting the
/// rows that were written. It runs on the current tokio runtime.
pub(crate) struct OrderWriter {
    task: tokio::task::JoinHandle<()>,
    written: Arc<AtomicU64>,
}

impl OrderWriter {
    /// Creates the table and starts writing. A writer that cannot connect
    /// writes nothing, which the count it returns shows.
    pub(crate) fn start(pair: &PostgresPair) -> Result<OrderWriter, String> {
        pair.primary_sql(
            "CREATE TABLE bench_orders (id bigserial PRIMARY KEY, placed_at timestamptz DEFAULT now())",
        )
        .map_err(|e| e.to_string())?;
        let url = pair.primary_url();
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let written = written.clone();
            async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    if client
                        .execute("INSERT INTO bench_orders DEFAULT VALUES", &[])
                        .await
                        .is_ok()
                    {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(OrderWriter { task, written })
    }

    /// Stops writing; the rows written.
    pub(crate) async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.task.await;
        self.written.load(Ordering::Relaxed)
    }
}

/// Sends SIGTERM to `child` (its own pid) and waits up to `within` for it
/// to exit: its exit status and how long it took, or `None` when it was
/// still running then and has been killed.
///
/// It blocks the calling thread, also inside the benchmarks' runtime:
/// nothing there needs to run meanwhile, and a thread's sleep times the
/// exit more finely than the runtime's timer.
pub(crate) fn stop_with_sigterm(
    child: &mut Child,
    within: Duration,
) -> Option<(ExitStatus, Duration)> {
    let sent = Instant::now();
    // std signals only SIGKILL; `kill` sends SIGTERM to the one pid.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some((status, sent.elapsed())),
            Ok(None) if sent.elapsed() < within => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Spawns `exporter` with `--config config` at `--log.level warn`, its
/// stderr (the log) written to `log`.
pub(crate) fn spawn_exporter(exporter: &Path, config: &Path, log: &Path) -> Result<Child, String> {
    let log = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    std::process::Command::new(exporter)
        .arg("--config")
        .arg(config)
        .args(["--log.level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exporter.display()))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::stop_with_sigterm;

    #[test]
    fn a_process_that_exits_on_sigterm_gives_its_status() {
        let mut child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let (status, _) =
            stop_with_sigterm(&mut child, Duration::from_secs(30)).expect("sleep exits on SIGTERM");
        // Killed by the signal: no exit code, not a success.
        assert!(!status.success());
        assert_eq!(status.code(), None);
    }

    #[test]
    fn a_process_that_ignores_sigterm_is_killed_after_the_deadline() {
        // `exec`: the sleep itself ignores SIGTERM (an ignored signal stays
        // ignored across exec), so no grandchild is left behind.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ignoring; exec sleep 60"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Only once the trap is set does SIGTERM meet it.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ignoring\n");
        assert!(stop_with_sigterm(&mut child, Duration::from_millis(300)).is_none());
        assert!(child.try_wait().unwrap().is_some(), "it was reaped");
    }
}
