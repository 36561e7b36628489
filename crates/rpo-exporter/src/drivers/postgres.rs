//! The PostgreSQL wire protocol, shared by `postgres` and `sql_queue`: kept
//! connections (reconnected on the next poll), TLS with the target's CA file,
//! URL checks for the config, and driver errors sorted into the bounded
//! reasons with messages that never contain the connection URL.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::{Client, Config as PgConfig};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::shared::{Purpose, Registry, ShareKey, Slot, Turn};
use super::{error_chain, root_store};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::probe::{FailureReason, ProbeError, Side};

/// Checks a PostgreSQL URL for the config, without ever echoing it.
pub fn check_url(keys: &TargetKeys<'_>, name: &str, url: &Secret) -> Result<(), ConfigError> {
    if url.is_unresolved() {
        // `validate --no-secrets`: the URL's form is not known.
        return Ok(());
    }
    match PgConfig::from_str(url.expose()) {
        Ok(_) => Ok(()),
        // The driver's message never contains the URL, so it is safe to show.
        Err(err) => Err(keys.invalid(
            name,
            format!("not a PostgreSQL connection URL ({err}); write it like \"postgres://monitor@host:5432/db\""),
        )),
    }
}

/// The driver's settings for one side of a target: its URL, the target's
/// timeout to connect, and `application_name` (unless the URL sets one).
pub fn connect_config(target: &Target, url: &Secret, side: Side) -> Result<PgConfig, ProbeError> {
    let mut config = PgConfig::from_str(url.expose()).map_err(|e| {
        ProbeError::new(
            FailureReason::Config,
            format!("target {}: bad {} URL: {e}", target.name, side.as_str()),
        )
    })?;
    config.connect_timeout(target.timeout);
    if config.get_application_name().is_none() {
        config.application_name("rpo-exporter");
    }
    Ok(config)
}

/// Kept PostgreSQL connections, by key: targets naming the same server
/// with the same settings share one client, which pipelines their queries.
static CONNECTIONS: LazyLock<Registry<Arc<Client>>> = LazyLock::new(Registry::new);

/// Distinct PostgreSQL connection keys held by targets now (for tests).
pub fn shared_keys() -> usize {
    CONNECTIONS.len()
}

/// A target's handle on a kept connection to one side, shared with every
/// target that names the server with the same settings (see
/// [`super::shared`]); connected again on the first call after it was lost
/// (see the [`super`] doc: no backoff).
///
/// PostgreSQL runs one statement at a time per connection: a statement
/// that waits (a lock on a heartbeat row) holds every sharer's queries
/// behind it. So a shared connection sets `statement_timeout` and
/// `lock_timeout` to the target's timeout as it connects (targets with
/// another timeout have another key): no statement outlives the timeout
/// on the server, and sharers are delayed by at most that much, as a
/// target of their own would be by its own slow server.
pub struct Connection {
    side: Side,
    config: PgConfig,
    tls: Tls,
    /// Set for a connection no one shares (see [`Connection::exclusive`]).
    exclusive: Option<u64>,
    slot: Arc<Slot<Arc<Client>>>,
    held: Option<(Arc<Client>, u64)>,
    /// Set while [`Connection::client`] waits for a turn: still set when
    /// the caller gave up waiting (see [`Connection::explain`]).
    in_line: bool,
}

/// Numbers exclusive connections apart.
static EXCLUSIVE: AtomicU64 = AtomicU64::new(0);

impl Connection {
    /// A connection for polls, shared.
    pub fn new(side: Side, config: PgConfig, tls: Tls) -> Connection {
        Connection::build(side, config, tls, Purpose::Poll, None)
    }

    /// A connection of its own, still counted against the descriptor
    /// budget: for a probe that opens transactions, which would take in
    /// other sharers' pipelined queries (`sql_queue`).
    pub fn exclusive(side: Side, config: PgConfig, tls: Tls) -> Connection {
        let n = EXCLUSIVE.fetch_add(1, Ordering::Relaxed);
        Connection::build(side, config, tls, Purpose::Poll, Some(n))
    }

    fn build(
        side: Side,
        config: PgConfig,
        tls: Tls,
        purpose: Purpose,
        exclusive: Option<u64>,
    ) -> Connection {
        // The driver's Debug shows every setting but the password (`_`):
        // with the password and the CA file, everything that reaches the
        // server or decides whom it trusts.
        let settings = format!("{config:?}");
        let ca = tls.ca_file.as_ref().map_or(b"\0none".to_vec(), |p| {
            p.as_os_str().as_encoded_bytes().to_vec()
        });
        let key = ShareKey::new(&[
            b"postgres",
            purpose.as_bytes(),
            settings.as_bytes(),
            config.get_password().unwrap_or(b"\0none"),
            &ca,
            &exclusive.map_or([0xff; 8], u64::to_le_bytes),
        ]);
        Connection {
            side,
            slot: CONNECTIONS.slot(key),
            config,
            tls,
            exclusive,
            held: None,
            in_line: false,
        }
    }

    /// Another handle on the same server with the same settings, for a
    /// heartbeat writer: apart from the polls' connection, so a slow poll
    /// never delays it (writers of targets on the same server share theirs).
    pub fn twin(&self) -> Connection {
        Connection::build(
            self.side,
            self.config.clone(),
            self.tls.clone(),
            Purpose::Heartbeat,
            self.exclusive,
        )
    }

    /// The user the URL logs in as, for messages about grants.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("<monitoring user>")
    }

    /// A live client and a turn on it (see [`super::shared`]: at most
    /// [`super::shared::TURNS`] sharers use a connection at a time),
    /// connecting when needed: every call while disconnected makes an
    /// attempt, so a server that came back is seen at once. Hold the
    /// session for the requests of one side of one poll or write.
    pub async fn client(&mut self) -> Result<Session<'_>, ProbeError> {
        self.in_line = true;
        let turn = self.slot.turn().await;
        self.in_line = false;
        // The slot's connection, not only this handle's: a handle that let
        // go of it after a failure must still see that it closed.
        if let Some((client, generation)) = self.slot.current() {
            if client.is_closed() {
                self.slot.drop_if(generation);
            }
        }
        let (config, tls) = (&self.config, &self.tls);
        let connected = self
            .slot
            .get_or_connect(|| async move {
                let (client, connection) = config
                    .connect(tls.connector.clone())
                    .await
                    .map_err(|err| classify(&err, true))?;
                tokio::spawn(async move {
                    // Ends when the client is dropped or the server goes away.
                    let _ = connection.await;
                });
                // No statement outlives the target's timeout on the server
                // (a lock wait would hold every sharer's queries).
                let timeout = config
                    .get_connect_timeout()
                    .map_or(0, |t| t.as_millis().max(1));
                client
                    .batch_execute(&format!(
                        "SET statement_timeout = {timeout}; SET lock_timeout = {timeout}"
                    ))
                    .await
                    .map_err(|err| classify(&err, true))?;
                Ok(Arc::new(client))
            })
            .await;
        match connected {
            Ok(held) => {
                // The old handle (if another) is let go: its socket closes
                // when the last sharer lets go of it.
                self.held = Some(held);
                let (client, generation) = self.held.as_ref().expect("set above");
                Ok(Session {
                    client,
                    generation: *generation,
                    _turn: turn,
                })
            }
            Err(error) => {
                self.held = None;
                Err(error.on(self.side))
            }
        }
    }

    /// Marks the connection alive: a request on it was answered (see
    /// [`Connection::reset`]).
    pub fn answered(&self) {
        if let Some((_, generation)) = &self.held {
            self.slot.answered(*generation);
        }
    }

    /// After a request on it timed out or was cancelled: forgets the
    /// connection, for every sharer (unless one of them made a new one
    /// since), but only when nobody got an answer on it within the
    /// target's timeout: a connection that answers other sharers is busy,
    /// not lost (see [`super::shared`]). One that broke is closed, and the
    /// next [`Connection::client`] replaces it.
    pub fn reset(&mut self) {
        if let Some((_, generation)) = self.held.take() {
            self.slot.drop_if_silent(generation, self.timeout());
        }
    }

    /// The target's timeout (part of the key, so every sharer's).
    fn timeout(&self) -> Duration {
        self.config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(5))
    }

    /// `error` as the target's reason: a timeout that came while this
    /// handle still waited in line for a turn (no request of it was sent)
    /// says so, with how many targets share the connection, so the
    /// operator sees a saturated shared connection, not a slow server.
    /// Call it on a failure of a call bounded by a deadline.
    pub fn explain(&mut self, error: ProbeError) -> ProbeError {
        if !std::mem::take(&mut self.in_line) || error.reason != FailureReason::Timeout {
            return error;
        }
        let sharers = Arc::strong_count(&self.slot);
        ProbeError {
            message: format!(
                "{}, waiting for a turn on a connection shared by {sharers} targets (at most {} \
                 at a time): the server answers them too slowly; give them a longer `timeout` \
                 (or another user, for a connection of their own)",
                error.message,
                super::shared::TURNS,
            ),
            ..error
        }
    }

    /// After a failed poll or write: forgets the connection only when the
    /// failure may have lost it (see [`ProbeError::connection_intact`]): a
    /// query error the server answered keeps it (and shows it alive), so
    /// one target's permanent error (a heartbeat table it may not read)
    /// does not reconnect every target sharing the connection on every
    /// poll; a timeout is [`Connection::reset`].
    pub fn reset_after(&mut self, error: &ProbeError) {
        let Some((_, generation)) = &self.held else {
            return;
        };
        self.slot.after_failure(*generation, error, self.timeout());
        if !error.connection_intact {
            self.held = None;
        }
    }
}

/// A client to use and the turn on its connection, for as long as it is
/// held.
pub struct Session<'a> {
    client: &'a Client,
    generation: u64,
    _turn: Turn<'a>,
}

impl Session<'_> {
    /// Which connection this is: a new one (after a loss) may reach
    /// another server behind the same DNS name; one session never moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl std::ops::Deref for Session<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

/// Whether the session an error came on is still usable, for every kind
/// on PostgreSQL: an error the server reported (a `DbError` with its
/// SQLSTATE) leaves the session ready for the next statement, except
///
/// - a `FATAL` or `PANIC` one: the server ends the session with it;
/// - class `08` (connection exception) and `57P` (operator intervention:
///   `admin_shutdown` from `pg_terminate_backend` or a shutdown,
///   `crash_shutdown`, `cannot_connect_now`, `database_dropped`,
///   `idle_session_timeout`): the session is being ended;
/// - class `25` (invalid transaction state): the session is stuck in a
///   transaction, or (`25006`, `read_only_sql_transaction`) a write
///   reached a standby, which behind a DNS endpoint that moved at a
///   failover (RDS, Aurora) only a new connection corrects.
///
/// `57014` (`query_canceled`, our own `statement_timeout`) is an answer:
/// the session is idle again. Any other driver error (closed, I/O, TLS, a
/// protocol error, a value that does not convert) may have lost it.
fn leaves_session_intact(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| !ends_session(db.code().code(), db.parsed_severity()))
}

/// Whether a server-reported error (its SQLSTATE and severity) ends the
/// session or leaves it unusable; see [`leaves_session_intact`].
fn ends_session(sqlstate: &str, severity: Option<Severity>) -> bool {
    matches!(severity, Some(Severity::Fatal | Severity::Panic))
        || sqlstate.starts_with("08")
        || sqlstate.starts_with("57P")
        || sqlstate.starts_with("25")
}

/// Maps a driver error to a bounded reason and a message that never
/// contains the connection URL, and says whether the connection it came on
/// is still usable ([`ProbeError::connection_intact`]; never while
/// connecting: there is no connection to keep yet).
pub fn classify(err: &tokio_postgres::Error, connecting: bool) -> ProbeError {
    let error = classify_reason(err, connecting);
    if !connecting && leaves_session_intact(err) {
        error.on_intact_connection()
    } else {
        error
    }
}

fn classify_reason(err: &tokio_postgres::Error, connecting: bool) -> ProbeError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        let reason = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *code == SqlState::INSUFFICIENT_PRIVILEGE
        {
            FailureReason::Auth
        } else if connecting {
            FailureReason::Connect
        } else {
            FailureReason::Query
        };
        return ProbeError::new(reason, format!("{} ({})", db.message(), code.code()));
    }
    let reason = if connecting || err.is_closed() {
        FailureReason::Connect
    } else {
        FailureReason::Query
    };
    ProbeError::new(reason, error_chain(err))
}

/// A TLS connector and the CA file it trusts (part of a connection's key).
#[derive(Clone)]
pub struct Tls {
    connector: MakeRustlsConnect,
    ca_file: Option<PathBuf>,
}

/// The TLS connector: webpki roots plus the target's own CA file (RDS).
/// Targets without a CA file share one (see [`WEBPKI_ONLY`]).
pub fn tls_connector(target: &str, ca_file: Option<&Path>) -> Result<Tls, ProbeError> {
    match ca_file {
        None => WEBPKI_ONLY.clone(),
        Some(_) => build_tls_connector(target, ca_file),
    }
}

/// The connector of every target without a `tls_ca_file`, built once. A
/// rustls `ClientConfig` (its ~150 webpki roots, its TLS session cache)
/// took about 27 KiB, and each Postgres target built its own, more than
/// everything else the target keeps. Sharing it shares its session cache
/// too: a session resumed is with the same server name and trust, as a
/// shared connection is; PostgreSQL authenticates each target after TLS.
/// A target with a CA file still builds its own (the file is read when
/// its probe is built, so a reload sees a changed file).
static WEBPKI_ONLY: LazyLock<Result<Tls, ProbeError>> =
    LazyLock::new(|| build_tls_connector("", None));

fn build_tls_connector(target: &str, ca_file: Option<&Path>) -> Result<Tls, ProbeError> {
    let roots = root_store(target, ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::new(FailureReason::Config, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls {
        connector: MakeRustlsConnect::new(config),
        ca_file: ca_file.map(Path::to_path_buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_end_the_session_drop_a_kept_connection() {
        let error = Some(Severity::Error);
        // Answered on a session that stays usable: a table the user may
        // not read, one that does not exist, a missing column, our own
        // statement_timeout.
        for kept in ["42501", "42P01", "42703", "57014", "53100", "XX000"] {
            assert!(!ends_session(kept, error), "{kept}");
        }
        // pg_terminate_backend, a shutdown, a connection exception, a
        // session stuck in a failed transaction, a write on a standby.
        for ended in [
            "57P01", "57P02", "57P03", "08006", "08P01", "25P02", "25006",
        ] {
            assert!(ends_session(ended, error), "{ended}");
        }
        // Whatever its code, a FATAL ends the session.
        assert!(ends_session("42501", Some(Severity::Fatal)));
        assert!(ends_session("XX000", Some(Severity::Panic)));
    }

    /// A target that gave up while waiting in line behind its sharers says
    /// so (how many share, how many go at a time), and nothing of it
    /// reached the server; a timeout out of line reads as before.
    #[tokio::test]
    async fn a_timeout_while_waiting_in_line_says_the_connection_is_shared() {
        use crate::drivers::shared::TURNS;
        // Nothing listens there: a request that left the line would fail
        // with a connect error, not time out.
        let config = PgConfig::from_str("postgres://m@127.0.0.1:9/in_line").unwrap();
        let tls = tls_connector("erp-db", None).unwrap();
        let mut waiting = Connection::new(Side::Source, config.clone(), tls.clone());
        let busy = Connection::new(Side::Source, config, tls);
        let held = futures::future::join_all((0..TURNS).map(|_| busy.slot.turn())).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let Err(timeout) =
            crate::drivers::within(deadline, async { waiting.client().await.map(|_| ()) }).await
        else {
            panic!("every turn is held");
        };
        let explained = waiting.explain(timeout);
        assert_eq!(explained.reason, FailureReason::Timeout);
        assert!(
            explained.message.starts_with("no answer within ")
                && explained.message.contains(&format!(
                    ", waiting for a turn on a connection shared by 2 targets (at most {TURNS} at a time): the server answers them too slowly"
                )),
            "{explained}"
        );
        drop(held);
        // Out of line (and once said, not again): the plain reason.
        let plain = ProbeError::timeout(std::time::Duration::from_secs(2));
        assert_eq!(waiting.explain(plain).message, "no answer within 2s");
        let Err(refused) = waiting.client().await else {
            panic!("nothing listens");
        };
        assert_eq!(waiting.explain(refused).reason, FailureReason::Connect);
    }

    /// A server that was down is tried again by the very next call: no
    /// cached "Connection refused" outlives the server's return.
    #[tokio::test]
    async fn a_lost_server_is_tried_again_on_the_next_call() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let config = PgConfig::from_str(&format!("postgres://m@127.0.0.1:{port}/x")).unwrap();
        let mut connection = Connection::new(
            Side::Replica,
            config,
            tls_connector("erp-db", None).unwrap(),
        );
        let Err(refused) = connection.client().await else {
            panic!("nothing listens");
        };
        assert_eq!(refused.reason, FailureReason::Connect, "{refused}");
        assert!(!refused.connection_intact);

        // The server is back: the next call reaches it at once.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), connection.client()).await;
        let reached = tokio::time::timeout(std::time::Duration::from_secs(2), accepted)
            .await
            .map(|joined| joined.unwrap_or(false))
            .unwrap_or(false);
        assert!(reached, "the second call made no connection attempt");
    }
}
