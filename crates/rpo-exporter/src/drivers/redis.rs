//! The Redis protocol, shared by `redis` and `redis_stream`: clients with
//! the password kept apart and TLS with the target's CA file, kept
//! connections (reconnected on the next poll), URL checks for the config, and driver
//! errors sorted into the bounded reasons with messages that never contain
//! the URL or the password.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError,
    TlsCertificates,
};

use super::shared::{Purpose, Registry, ShareKey, Slot};
use crate::config::{ConfigError, Secret, TargetKeys};
use crate::evidence::clock::{ClockOffset, Stamp};
use crate::probe::{FailureReason, ProbeError, Side};

/// Checks a Redis URL without ever echoing it; returns whether it uses TLS.
pub fn check_url(
    keys: &TargetKeys<'_>,
    key: &str,
    url: &Secret,
    password_set_apart: bool,
) -> Result<bool, ConfigError> {
    if url.is_unresolved() {
        // `validate --no-secrets`: not known to be without TLS, so a
        // `tls_ca_file` is not refused.
        return Ok(true);
    }
    let info = url.expose().into_connection_info().map_err(|err| {
        keys.invalid(
            key,
            format!("not a Redis URL ({}); write it like \"redis://host:6379\" or \"rediss://user@host:6379/0\"", url_error(&err)),
        )
    })?;
    let tls = match info.addr() {
        ConnectionAddr::Tcp(..) => false,
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(keys.invalid(
                key,
                "`#insecure` would turn off certificate verification; trust the server's CA with tls_ca_file instead",
            ))
        }
        ConnectionAddr::TcpTls { .. } => true,
        _ => {
            return Err(keys.invalid(
                key,
                "use a redis:// or rediss:// URL with a host and port (unix sockets are not supported)",
            ))
        }
    };
    if password_set_apart && info.redis_settings().password().is_some() {
        return Err(keys.invalid(
            key,
            "the URL holds a password and `password`/`password_env`/`password_file` is set too; keep the password in one place",
        ));
    }
    Ok(tls)
}

/// Checks `tls_ca_file`: only with a `rediss://` URL, and readable.
pub fn check_tls_ca_file(
    keys: &mut TargetKeys<'_>,
    path: Option<&Path>,
    any_tls: bool,
) -> Result<(), ConfigError> {
    let Some(path) = path else {
        return Ok(());
    };
    if !any_tls {
        return Err(keys.invalid(
            "tls_ca_file",
            "is set but no URL uses TLS; write rediss:// URLs to use it",
        ));
    }
    keys.readable_file("tls_ca_file", Some(path))
}

/// Builds a client for one Redis URL: the password kept apart (if any) is
/// added, `CLIENT SETINFO` is skipped (so the monitor's ACL needs no
/// `+client`), and `rediss://` trusts `tls_ca` (PEM) instead of the public
/// roots when given. Nothing is contacted.
pub fn redis_client(
    target: &str,
    what: &str,
    url: &Secret,
    password: Option<&Secret>,
    tls_ca: Option<&[u8]>,
) -> Result<Client, ProbeError> {
    let bad = |problem: String| {
        ProbeError::new(
            FailureReason::Config,
            format!("target {target}: bad {what} URL: {problem}"),
        )
    };
    let info = url
        .expose()
        .into_connection_info()
        .map_err(|e| bad(url_error(&e)))?;
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(password) = password {
        settings = settings.set_password(password.expose());
    }
    let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    let info = info.set_redis_settings(settings);
    if tls {
        // The driver asks rustls for the process default; make it ring, the
        // one provider this crate builds, whatever else is linked in.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = match (tls, tls_ca) {
        (true, Some(pem)) => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
        _ => redis::Client::open(info),
    }
    .map_err(|e| bad(e.to_string()))?;
    // Everything that reaches the server: targets with the same key may
    // share a connection (see `super::shared`).
    let key = ShareKey::new(&[
        url.expose().as_bytes(),
        password.map_or(b"\0none".as_slice(), |p| p.expose().as_bytes()),
        tls_ca.unwrap_or(b"\0none"),
    ]);
    Ok(Client { client, key })
}

/// A Redis client and the key of the connections it makes (its URL,
/// password and CA), which no one can print.
#[derive(Clone)]
pub struct Client {
    client: redis::Client,
    key: ShareKey,
}

impl std::ops::Deref for Client {
    type Target = redis::Client;

    fn deref(&self) -> &redis::Client {
        &self.client
    }
}

/// The driver's complaint about a URL without the part of the URL it
/// quotes: the driver appends an offending query value as the error's
/// detail (`Invalid protocol version - InvalidClientConfig: <value>`), and
/// a query value may be a secret.
fn url_error(err: &RedisError) -> String {
    let text = err.to_string();
    match err.detail() {
        Some(detail) if !detail.is_empty() => text
            .strip_suffix(detail)
            .map(|t| t.trim_end_matches([':', ' ']).to_string())
            .unwrap_or_else(|| err.category().to_string()),
        _ => text,
    }
}

/// Reads a `tls_ca_file` for a probe, naming the target on failure.
pub fn read_ca_file(target: &str, path: Option<&Path>) -> Result<Option<Vec<u8>>, ProbeError> {
    path.map(|path| super::read_ca_file(target, path))
        .transpose()
}

/// Kept Redis connections, by key: targets naming the same server with
/// the same settings share one (a multiplexed connection pipelines their
/// commands).
static CONNECTIONS: LazyLock<Registry<MultiplexedConnection>> = LazyLock::new(Registry::new);

/// Distinct Redis connection keys held by targets now (for tests).
pub fn shared_keys() -> usize {
    CONNECTIONS.len()
}

/// A target's handle on a kept connection to one Redis server, shared with
/// every target that names the server with the same settings (see
/// [`super::shared`]); connected again on the first call after it was lost
/// (see the [`super`] doc: no backoff).
pub struct Connection {
    side: Option<Side>,
    client: redis::Client,
    slot: Arc<Slot<MultiplexedConnection>>,
    /// The generation this handle was last given, to drop only that one.
    generation: Option<u64>,
    /// The target's timeout: after a timeout, the connection is dropped
    /// only if no sharer got an answer on it within this long.
    timeout: Duration,
}

impl Connection {
    /// A connection for polls of a target with this `timeout`.
    pub fn new(client: Client, side: Option<Side>, timeout: Duration) -> Connection {
        Connection::for_purpose(client, side, Purpose::Poll, timeout)
    }

    /// A connection for heartbeat writes, apart from the polls'.
    pub fn heartbeat(client: Client, side: Option<Side>, timeout: Duration) -> Connection {
        Connection::for_purpose(client, side, Purpose::Heartbeat, timeout)
    }

    fn for_purpose(
        client: Client,
        side: Option<Side>,
        purpose: Purpose,
        timeout: Duration,
    ) -> Connection {
        let key = ShareKey::new(&[b"redis", purpose.as_bytes(), client.key.as_bytes()]);
        Connection {
            side,
            slot: CONNECTIONS.slot(key),
            client: client.client,
            generation: None,
            timeout,
        }
    }

    /// The user the URL logs in as, for messages about grants.
    pub fn user(&self) -> String {
        self.client
            .get_connection_info()
            .redis_settings()
            .username()
            .unwrap_or("default")
            .to_string()
    }

    fn on_side(&self, error: ProbeError) -> ProbeError {
        match self.side {
            Some(side) => error.on(side),
            None => error,
        }
    }

    /// A live connection (a cheap handle), connecting when needed: every
    /// call while disconnected makes an attempt.
    pub async fn get(&mut self) -> Result<MultiplexedConnection, ProbeError> {
        let client = &self.client;
        let connected = self
            .slot
            .get_or_connect(|| async move {
                // Our own deadlines bound every call; the driver's defaults
                // (1 s to connect, 500 ms per answer) would fire first with
                // less useful errors.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(None)
                    .set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|err| classify(&err, true))
            })
            .await;
        match connected {
            Ok((connection, generation)) => {
                self.generation = Some(generation);
                Ok(connection)
            }
            Err(error) => Err(self.on_side(error)),
        }
    }

    /// Marks the connection alive: a command on it was answered.
    pub fn answered(&self) {
        if let Some(generation) = self.generation {
            self.slot.answered(generation);
        }
    }

    /// After a command on it timed out or was cancelled: forgets the
    /// connection, for every sharer (unless one of them made a new one
    /// since), but only when nobody got an answer on it within the
    /// target's timeout: one that answers other sharers is busy, not lost
    /// (see [`super::shared`]). One that broke is closed, and the driver's
    /// next command on it fails at once (then [`Connection::reset_after`]).
    pub fn reset(&mut self) {
        if let Some(generation) = self.generation.take() {
            self.slot.drop_if_silent(generation, self.timeout);
        }
    }

    /// After a failed poll or write: forgets the connection only when the
    /// failure may have lost it (see [`ProbeError::connection_intact`]): an
    /// error reply keeps it (and shows it alive), so one target's permanent
    /// error (a key of another type, a command its ACL denies) does not
    /// reconnect every target sharing the connection on every poll; a
    /// timeout is [`Connection::reset`].
    pub fn reset_after(&mut self, error: &ProbeError) {
        let Some(generation) = self.generation else {
            return;
        };
        self.slot.after_failure(generation, error, self.timeout);
        if !error.connection_intact {
            self.generation = None;
        }
    }
}

/// Reads the server's clock (`TIME`) between two readings of ours and
/// records the sample in `clock` (see [`crate::evidence::clock`]).
pub async fn read_clock(
    connection: &mut MultiplexedConnection,
    clock: &mut ClockOffset,
) -> Result<(), RedisError> {
    let before = Stamp::now();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await?;
    let after = Stamp::now();
    clock.record(before, time_reply(seconds, micros), after);
    Ok(())
}

/// The instant of a `TIME` reply: Unix seconds and microseconds.
pub fn time_reply(seconds: u64, micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros)
}

/// The server's own error (code, text) behind a driver error, also when it
/// came back inside a pipeline (where the driver hides the code).
pub fn server_error(err: &RedisError) -> Option<(String, String)> {
    let errors = err.clone().into_server_errors()?;
    let (_, first) = errors.first()?;
    Some((
        first.code().to_string(),
        first.details().unwrap_or("").to_string(),
    ))
}

/// Whether the connection a driver error came on is still usable, for
/// every kind on Redis:
///
/// - an error reply (`ERR`, `WRONGTYPE`, `NOPERM`, `NOGROUP`, `BUSY`,
///   `LOADING`, `MASTERDOWN`, ...) keeps the connection in step: the
///   server answered and keeps the session. `LOADING` and `MASTERDOWN` are
///   the server's state (loading its data set; a replica whose link is down
///   with `replica-serve-stale-data no`), which a new connection to the
///   same server would meet too;
/// - except `READONLY`: a write reached a replica. Behind a name that
///   moved at a failover (an ElastiCache primary endpoint, a DNS record)
///   the kept connection still reaches the demoted node; only a new one
///   resolves the name again;
/// - a reply the driver could not convert (`Parse`, `UnexpectedReturnType`)
///   was read whole. A malformed stream ends the driver's connection, so
///   the next command fails with an I/O error, which does drop it;
/// - anything else (I/O errors, a closed connection, timeouts, TLS) may
///   have lost it.
fn leaves_connection_intact(err: &RedisError) -> bool {
    if let Some(replies) = err.clone().into_server_errors() {
        return !replies.iter().any(|(_, reply)| reply.code() == "READONLY");
    }
    matches!(
        err.kind(),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType
    )
}

/// Maps a driver error to a bounded reason and a message that never
/// contains the URL or the password, and says whether the connection it
/// came on is still usable ([`ProbeError::connection_intact`]; never while
/// connecting: there is no connection to keep yet).
pub fn classify(err: &RedisError, connecting: bool) -> ProbeError {
    let error = classify_reason(err, connecting);
    if !connecting && leaves_connection_intact(err) {
        error.on_intact_connection()
    } else {
        error
    }
}

fn classify_reason(err: &RedisError, connecting: bool) -> ProbeError {
    let server = server_error(err);
    let code = server.as_ref().map_or("", |(code, _)| code.as_str());
    let reason = if err.kind() == ErrorKind::AuthenticationFailed
        || matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
    {
        FailureReason::Auth
    } else if err.is_timeout() {
        FailureReason::Timeout
    } else if err.is_connection_refusal() || err.is_io_error() || connecting {
        FailureReason::Connect
    } else if matches!(
        err.kind(),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType
    ) {
        FailureReason::Parse
    } else if err.kind() == ErrorKind::InvalidClientConfig {
        FailureReason::Config
    } else {
        FailureReason::Query
    };
    let message = if err.kind() == ErrorKind::AuthenticationFailed {
        "authentication failed: wrong user or password (WRONGPASS), or the user is disabled"
            .to_string()
    } else if code == "NOAUTH" {
        "the server requires a password (NOAUTH); set it in the URL or with password_env/password_file".to_string()
    } else if let Some((code, text)) = &server {
        // The server's words, as redis-cli shows them.
        format!("{code} {text}").trim().to_string()
    } else {
        err.to_string()
    };
    ProbeError::new(reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_without_secrets() {
        let auth: RedisError = (
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        )
            .into();
        let e = classify(&auth, true);
        assert_eq!(e.reason, FailureReason::Auth);
        assert!(e.message.contains("WRONGPASS"));
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused").into();
        assert_eq!(classify(&refused, true).reason, FailureReason::Connect);
        let parse: RedisError = (ErrorKind::UnexpectedReturnType, "not a string").into();
        assert_eq!(classify(&parse, false).reason, FailureReason::Parse);
    }

    #[test]
    fn only_failures_that_may_lose_the_connection_drop_it() {
        // Error replies as redis-server 7.0 sends them.
        let reply = |wire: &str| {
            redis::parse_redis_value(wire.as_bytes())
                .and_then(|value| value.extract_error())
                .unwrap_err()
        };
        for kept in [
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-NOPERM User mon has no permissions to access the 'rpo:x' key\r\n",
            "-ERR no such key\r\n",
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
        ] {
            let e = classify(&reply(kept), false);
            assert!(e.connection_intact, "{kept}: {e}");
        }
        let readonly = reply("-READONLY You can't write against a read only replica.\r\n");
        assert!(!classify(&readonly, false).connection_intact);
        // A whole reply of another type than asked.
        let conversion: RedisError = (ErrorKind::UnexpectedReturnType, "not a string").into();
        assert!(classify(&conversion, false).connection_intact);
        let reset: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer").into();
        assert!(!classify(&reset, false).connection_intact);
        // While connecting there is nothing to keep.
        assert!(
            !classify(&reply("-ERR max number of clients reached\r\n"), true).connection_intact
        );
    }

    #[test]
    fn time_replies_are_unix_seconds_and_microseconds() {
        // `TIME` on redis-server 7.0: ["1700000000", "123456"].
        assert_eq!(
            crate::probe::unix_seconds(time_reply(1_700_000_000, 123_456)),
            1_700_000_000.123456
        );
    }

    #[test]
    fn client_errors_never_echo_the_url() {
        let err = redis_client(
            "t",
            "primary",
            &Secret::new("redis://u:hunter2@host:notaport"),
            None,
            None,
        )
        .err()
        .unwrap();
        assert_eq!(err.reason, FailureReason::Config);
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        // The driver quotes a bad query value; it may be a secret.
        let err = redis_client(
            "t",
            "primary",
            &Secret::new("redis://u@host:6379/?protocol=hunter2"),
            None,
            None,
        )
        .err()
        .unwrap();
        assert!(
            err.message.contains("Invalid protocol version"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("hunter2"), "{}", err.message);
    }
}
