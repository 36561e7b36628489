//! The MySQL wire protocol (MySQL 8, MariaDB 10.x, and their RDS/Aurora
//! endpoints), for `mysql`: kept connections (reconnected on the next poll), TLS
//! on rustls with the target's CA file, URL checks for the config, and
//! driver errors sorted into the bounded reasons with messages that never
//! contain the connection URL or its password.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, UrlError, Value};

use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::probe::{FailureReason, ProbeError, Side};

/// Server error codes this crate acts on (MySQL's `mysqld_error.h`; MariaDB
/// uses the same numbers).
pub mod codes {
    /// `ER_DBACCESS_DENIED_ERROR`: no privilege on the database.
    pub const DBACCESS_DENIED: u16 = 1044;
    /// `ER_ACCESS_DENIED_ERROR`: wrong user or password.
    pub const ACCESS_DENIED: u16 = 1045;
    /// `ER_BAD_DB_ERROR`: the URL's database does not exist.
    pub const BAD_DB: u16 = 1049;
    /// `ER_PARSE_ERROR`: the statement is not known to this server version.
    pub const PARSE_ERROR: u16 = 1064;
    /// `ER_TABLEACCESS_DENIED_ERROR`: a table privilege is missing.
    pub const TABLEACCESS_DENIED: u16 = 1142;
    /// `ER_COLUMNACCESS_DENIED_ERROR`.
    pub const COLUMNACCESS_DENIED: u16 = 1143;
    /// `ER_NO_SUCH_TABLE`.
    pub const NO_SUCH_TABLE: u16 = 1146;
    /// `ER_UNKNOWN_SYSTEM_VARIABLE`.
    pub const UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    /// `ER_SPECIFIC_ACCESS_DENIED_ERROR`: a global privilege is missing
    /// ("you need (at least one of) the ... privilege(s)").
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    /// `ER_NOT_SUPPORTED_AUTH_MODE`.
    pub const NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
    /// `ER_ACCESS_DENIED_NO_PASSWORD_ERROR`.
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
}

/// Which server answers: the two differ in statements, variables and
/// privilege names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql,
    MariaDb,
}

impl Flavor {
    /// From `SELECT @@version` (`10.11.6-MariaDB-log`, `8.0.36`).
    pub fn of_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

/// What the config needs to know about a checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlFacts {
    /// `require_ssl=true`: the connection uses TLS.
    pub tls: bool,
    /// The default database the URL names, if any.
    pub database: Option<String>,
}

/// Checks a MySQL URL for the config without ever echoing it or any value
/// in it.
pub fn check_url(keys: &TargetKeys<'_>, key: &str, url: &Secret) -> Result<UrlFacts, ConfigError> {
    if url.is_unresolved() {
        // `validate --no-secrets`: nothing is known of the URL, so nothing
        // that depends on it is refused (TLS or a default database).
        return Ok(UrlFacts {
            tls: true,
            database: Some(String::new()),
        });
    }
    let example = "write it like \"mysql://monitor@host:3306/rpo\" (add ?require_ssl=true for TLS)";
    let opts = Opts::from_url(url.expose()).map_err(|err| {
        keys.invalid(
            key,
            format!("not a MySQL URL ({}); {example}", url_problem(&err)),
        )
    })?;
    if opts.user().is_none_or(str::is_empty) {
        return Err(keys.invalid(key, format!("the URL names no user; {example}")));
    }
    if opts.socket().is_some() {
        return Err(keys.invalid(
            key,
            "unix sockets are not supported; give the server's host and port",
        ));
    }
    let tls = match opts.ssl_opts() {
        None => false,
        Some(ssl) if ssl.accept_invalid_certs() || ssl.skip_domain_validation() => {
            return Err(keys.invalid(
                key,
                "`verify_ca=false`/`verify_identity=false` would turn off certificate verification; trust the server's CA with tls_ca_file instead",
            ))
        }
        Some(_) => true,
    };
    Ok(UrlFacts {
        tls,
        database: opts.db_name().map(str::to_string),
    })
}

/// A URL error in words that never contain a value from the URL.
fn url_problem(err: &UrlError) -> String {
    match err {
        UrlError::InvalidParamValue { param, .. } => {
            format!("bad value for URL parameter `{param}`")
        }
        UrlError::UnknownParameter { param } => format!(
            "unknown URL parameter `{param}`; the exporter understands require_ssl, verify_ca, verify_identity, built_in_roots and the driver's connection settings"
        ),
        UrlError::UnsupportedScheme { scheme } => {
            format!("the scheme is `{scheme}`, not `mysql`")
        }
        // These name no part of the URL.
        other => other.to_string(),
    }
}

/// The driver's settings for one side of a target: its URL, over TCP only
/// (the driver would otherwise switch to a local unix socket and skip TLS),
/// trusting `tls_ca` (PEM) besides the public roots when TLS is on.
pub fn connect_opts(
    target: &Target,
    url: &Secret,
    side: Side,
    tls_ca: Option<&[u8]>,
) -> Result<Opts, ProbeError> {
    let opts = Opts::from_url(url.expose()).map_err(|e| {
        ProbeError::new(
            FailureReason::Config,
            format!(
                "target {}: bad {} URL: {}",
                target.name,
                side.as_str(),
                url_problem(&e)
            ),
        )
    })?;
    let ssl = opts.ssl_opts().cloned();
    let mut builder = OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .connect_attribute("program_name", "rpo-exporter");
    if let Some(ssl) = ssl {
        // The driver asks rustls for the process default provider; make it
        // ring, the one this crate builds, whatever else is linked in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ssl = match tls_ca {
            Some(pem) => ssl.with_root_certs(vec![pem.to_vec().into()]),
            None => ssl,
        };
        builder = builder.ssl_opts(ssl);
    }
    Ok(builder.into())
}

/// One kept connection to one server, connected again on the first call
/// after it was lost (see the [`super`] doc: no backoff); knows the
/// server's [`Flavor`] once connected.
pub struct Connection {
    side: Side,
    opts: Opts,
    conn: Option<Conn>,
    flavor: Option<Flavor>,
}

impl Connection {
    pub fn new(side: Side, opts: Opts) -> Connection {
        Connection {
            side,
            opts,
            conn: None,
            flavor: None,
        }
    }

    /// Another, not yet connected, connection to the same server with the
    /// same settings (a heartbeat writer's own, so a slow poll never delays it).
    pub fn twin(&self) -> Connection {
        Connection::new(self.side, self.opts.clone())
    }

    /// The user the URL logs in as, for messages about grants.
    pub fn user(&self) -> &str {
        self.opts.user().unwrap_or("<monitoring user>")
    }

    /// A live connection and its server's flavor, connecting when needed
    /// (every call while disconnected makes an attempt). Connecting asks the server's version, to know its flavor.
    pub async fn conn(&mut self) -> Result<(&mut Conn, Flavor), ProbeError> {
        if self.conn.is_none() {
            match self.connect().await {
                Ok((conn, flavor)) => {
                    self.conn = Some(conn);
                    self.flavor = Some(flavor);
                }
                Err(error) => return Err(error.on(self.side)),
            }
        }
        let flavor = self.flavor.expect("known once connected");
        Ok((self.conn.as_mut().expect("connected above"), flavor))
    }

    async fn connect(&self) -> Result<(Conn, Flavor), ProbeError> {
        let mut conn = Conn::new(self.opts.clone())
            .await
            .map_err(|e| classify(&e, true))?;
        let version: Option<String> = conn
            .query_first("SELECT @@version")
            .await
            .map_err(|e| classify(&e, true))?;
        Ok((conn, Flavor::of_version(version.as_deref().unwrap_or(""))))
    }

    /// Forgets the connection after a failure that may have left it unusable.
    pub fn reset(&mut self) {
        // Dropping a `Conn` closes it on the runtime in the background.
        self.conn = None;
        self.flavor = None;
    }
}

/// The server's error code, when the server said no.
pub fn server_code(err: &mysql_async::Error) -> Option<u16> {
    match err {
        mysql_async::Error::Server(e) => Some(e.code),
        _ => None,
    }
}

/// Maps a driver error to a bounded reason and a message that never
/// contains the connection URL. A missing privilege is `auth`, and the
/// server's own words name the privilege.
pub fn classify(err: &mysql_async::Error, connecting: bool) -> ProbeError {
    use mysql_async::{DriverError, Error, IoError};
    match err {
        Error::Server(e) => {
            let reason = match e.code {
                codes::ACCESS_DENIED
                | codes::DBACCESS_DENIED
                | codes::TABLEACCESS_DENIED
                | codes::COLUMNACCESS_DENIED
                | codes::SPECIFIC_ACCESS_DENIED
                | codes::NOT_SUPPORTED_AUTH_MODE
                | codes::ACCESS_DENIED_NO_PASSWORD => FailureReason::Auth,
                codes::BAD_DB => FailureReason::Config,
                _ if connecting => FailureReason::Connect,
                _ => FailureReason::Query,
            };
            let hint = match e.code {
                codes::BAD_DB => "; create it or name another database in the URL",
                _ => "",
            };
            ProbeError::new(
                reason,
                format!("{} (MySQL error {}){hint}", e.message.trim(), e.code),
            )
        }
        // The TLS handshake fails inside the stream, as an I/O error
        // carrying the rustls error: say it is TLS.
        Error::Io(IoError::Io(e))
            if e.get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            ProbeError::new(FailureReason::Connect, format!("TLS: {e}"))
        }
        // The connection is gone: the next poll reconnects.
        Error::Io(IoError::Io(e)) => ProbeError::new(FailureReason::Connect, e.to_string()),
        Error::Io(IoError::Tls(e)) => ProbeError::new(
            FailureReason::Connect,
            format!("TLS: {}", super::error_chain(e)),
        ),
        Error::Driver(DriverError::ConnectionClosed) => {
            ProbeError::new(FailureReason::Connect, "the server closed the connection")
        }
        Error::Driver(e @ (DriverError::FromValue { .. } | DriverError::FromRow { .. })) => {
            ProbeError::new(FailureReason::Parse, e.to_string())
        }
        Error::Driver(e) => ProbeError::new(
            if connecting {
                FailureReason::Connect
            } else {
                FailureReason::Query
            },
            e.to_string(),
        ),
        // A URL error cannot happen past `connect_opts`; say so without the URL.
        Error::Url(e) => ProbeError::new(FailureReason::Config, url_problem(e)),
        Error::Other(e) => ProbeError::new(
            if connecting {
                FailureReason::Connect
            } else {
                FailureReason::Query
            },
            super::error_chain(e.as_ref()),
        ),
    }
}

/// A value as the text the server sent (`SHOW` statements answer text);
/// `None` for SQL NULL.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// Rows as maps from column name to text, so a `SHOW` statement is read by
/// column name (column order differs between versions and flavors).
pub fn rows_by_name(rows: &[Row]) -> Vec<BTreeMap<String, Option<String>>> {
    rows.iter()
        .map(|row| {
            row.columns_ref()
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    (
                        column.name_str().into_owned(),
                        row.as_ref(i).and_then(value_text),
                    )
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.to_string(),
            state: "28000".to_string(),
        })
    }

    #[test]
    fn flavor_from_version() {
        assert_eq!(
            Flavor::of_version("10.11.19-MariaDB-0+deb12u1-log"),
            Flavor::MariaDb
        );
        assert_eq!(Flavor::of_version("8.0.36"), Flavor::MySql);
        assert_eq!(Flavor::of_version("8.0.mysql_aurora.3.05.2"), Flavor::MySql);
    }

    #[test]
    fn access_denied_and_missing_grants_are_auth() {
        let err = classify(
            &server(
                1045,
                "Access denied for user 'mon'@'127.0.0.1' (using password: YES)",
            ),
            true,
        );
        assert_eq!(err.reason, FailureReason::Auth);
        assert_eq!(
            err.message,
            "Access denied for user 'mon'@'127.0.0.1' (using password: YES) (MySQL error 1045)"
        );
        let err = classify(
            &server(
                1227,
                "Access denied; you need (at least one of) the SUPER, SLAVE MONITOR privilege(s) for this operation",
            ),
            false,
        );
        assert_eq!(err.reason, FailureReason::Auth);
        assert!(err.message.contains("SLAVE MONITOR"), "{}", err.message);
        assert_eq!(
            classify(&server(1049, "Unknown database 'rpo'"), true).reason,
            FailureReason::Config
        );
        assert_eq!(
            classify(&server(1064, "syntax"), false).reason,
            FailureReason::Query
        );
    }

    #[test]
    fn io_errors_are_connect_without_the_url() {
        let err = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )));
        let err = classify(&err, false);
        assert_eq!(err.reason, FailureReason::Connect);
        assert_eq!(err.message, "Connection refused (os error 111)");
    }

    #[test]
    fn tls_failures_say_tls() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let err = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_error,
        )));
        let err = classify(&err, true);
        assert_eq!(err.reason, FailureReason::Connect);
        assert_eq!(err.message, "TLS: invalid peer certificate: UnknownIssuer");
    }

    #[test]
    fn url_problems_never_echo_values() {
        let err = UrlError::InvalidParamValue {
            param: "require_ssl".into(),
            value: "hunter2".into(),
        };
        assert!(!url_problem(&err).contains("hunter2"));
    }

    #[test]
    fn values_as_text() {
        assert_eq!(value_text(&Value::NULL), None);
        assert_eq!(
            value_text(&Value::Bytes(b"Yes".to_vec())).as_deref(),
            Some("Yes")
        );
        assert_eq!(value_text(&Value::UInt(641)).as_deref(), Some("641"));
    }
}
