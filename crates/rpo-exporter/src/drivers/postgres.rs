//! The PostgreSQL wire protocol, shared by `postgres` and `sql_queue`: kept
//! connections (reconnected on the next poll), TLS with the target's CA file,
//! URL checks for the config, and driver errors sorted into the bounded
//! reasons with messages that never contain the connection URL.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config as PgConfig};
use tokio_postgres_rustls::MakeRustlsConnect;

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

/// One kept connection to one side, connected again on the first call
/// after it was lost (see the [`super`] doc: no backoff).
pub struct Connection {
    side: Side,
    config: PgConfig,
    tls: MakeRustlsConnect,
    client: Option<Client>,
}

impl Connection {
    pub fn new(side: Side, config: PgConfig, tls: MakeRustlsConnect) -> Connection {
        Connection {
            side,
            config,
            tls,
            client: None,
        }
    }

    /// Another, not yet connected, connection to the same server with the
    /// same settings (a heartbeat writer's own, so a slow poll never delays it).
    pub fn twin(&self) -> Connection {
        Connection::new(self.side, self.config.clone(), self.tls.clone())
    }

    /// The user the URL logs in as, for messages about grants.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("<monitoring user>")
    }

    /// A live client, connecting when needed: every call while
    /// disconnected makes an attempt, so a server that came back is seen at
    /// once.
    pub async fn client(&mut self) -> Result<&Client, ProbeError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            match self.config.connect(self.tls.clone()).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        // Ends when the client is dropped or the server goes away.
                        let _ = connection.await;
                    });
                    self.client = Some(client);
                }
                Err(err) => {
                    return Err(classify(&err, true).on(self.side));
                }
            }
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// Forgets the connection after a failure that may have left it unusable.
    pub fn reset(&mut self) {
        self.client = None;
    }
}

/// Maps a driver error to a bounded reason and a message that never
/// contains the connection URL.
pub fn classify(err: &tokio_postgres::Error, connecting: bool) -> ProbeError {
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

/// The TLS connector: webpki roots plus the target's own CA file (RDS).
pub fn tls_connector(
    target: &str,
    ca_file: Option<&Path>,
) -> Result<MakeRustlsConnect, ProbeError> {
    let roots = root_store(target, ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::new(FailureReason::Config, format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

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
