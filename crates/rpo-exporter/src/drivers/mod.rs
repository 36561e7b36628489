//! Driver plumbing the kinds share, written once: reconnect backoff,
//! deadlines, TLS CA loading, and error messages that never contain a URL.
//!
//! One module per wire protocol: [`postgres`] (`postgres`, `sql_queue`),
//! [`mysql`] (`mysql`), [`redis`] (`redis`, `redis_stream`) and [`http`]
//! (`rabbitmq`, `opensearch`). A kind never imports another kind's module;
//! what two kinds share (or could: a MySQL outbox table) lives here.

pub mod http;
pub mod mysql;
pub mod postgres;
pub mod redis;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::probe::{FailureReason, ProbeError};

/// The longest wait between reconnect attempts.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(10);

/// Reconnect backoff of one kept connection. After the n-th consecutive
/// failure to connect, no new attempt is made for 0.5 s × 2^n (1 s, 2 s,
/// 4 s, 8 s, then [`MAX_RECONNECT_BACKOFF`]); meanwhile the last connect
/// error is repeated, so a dead server is not hammered by every poll.
#[derive(Debug, Default)]
pub struct Backoff {
    consecutive_failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<ProbeError>,
}

impl Backoff {
    /// The error to repeat while the backoff holds; `None` when a new
    /// attempt may be made now.
    pub fn holding(&self) -> Option<ProbeError> {
        match (self.next_attempt, &self.last_error) {
            (Some(next), Some(err)) if Instant::now() < next => Some(err.clone()),
            _ => None,
        }
    }

    /// Records a failed attempt.
    pub fn failed(&mut self, error: ProbeError) {
        self.consecutive_failures += 1;
        let wait = Duration::from_millis(500)
            .saturating_mul(1 << self.consecutive_failures.min(8))
            .min(MAX_RECONNECT_BACKOFF);
        self.next_attempt = Some(Instant::now() + wait);
        self.last_error = Some(error);
    }

    /// Records a successful attempt.
    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// Runs `future` until `deadline`, turning a late answer into a timeout.
pub async fn within<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    let budget = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(budget, future).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::timeout(budget)),
    }
}

/// An error and its causes on one line (`a: b: c`), each cause once. Only
/// for driver errors that never carry the URL they were given.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Reads a target's `tls_ca_file` (PEM), naming the target on failure.
pub fn read_ca_file(target: &str, path: &Path) -> Result<Vec<u8>, ProbeError> {
    crate::config::read_regular_file(path, crate::config::MAX_SECRET_FILE_BYTES).map_err(|e| {
        ProbeError::new(
            FailureReason::Config,
            format!("target {target}: tls_ca_file {} {e}", path.display()),
        )
    })
}

/// The certificates of a target's `tls_ca_file` (PEM, one or more),
/// naming the target and the file on failure.
pub fn ca_certificates(
    target: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ProbeError> {
    let pem = read_ca_file(target, path)?;
    let invalid = |problem: String| {
        ProbeError::new(
            FailureReason::Config,
            format!("target {target}: tls_ca_file {} {problem}", path.display()),
        )
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no certificate".to_string()));
    }
    Ok(certs)
}

/// The roots a rustls client trusts: the public (webpki) roots plus the
/// certificates of the target's `tls_ca_file` (e.g. the RDS bundle).
pub fn root_store(
    target: &str,
    ca_file: Option<&Path>,
) -> Result<rustls::RootCertStore, ProbeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let (added, _) = roots.add_parsable_certificates(ca_certificates(target, path)?);
    if added == 0 {
        return Err(ProbeError::new(
            FailureReason::Config,
            format!(
                "target {target}: tls_ca_file {} holds no usable certificate",
                path.display()
            ),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_holds_the_last_error_then_lets_go() {
        let mut backoff = Backoff::default();
        assert!(backoff.holding().is_none());
        backoff.failed(ProbeError::new(FailureReason::Connect, "refused"));
        assert_eq!(backoff.holding().unwrap().message, "refused");
        backoff.succeeded();
        assert!(backoff.holding().is_none());
    }

    #[test]
    fn ca_files_are_read_or_refused_with_the_target_and_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = ca_certificates("erp-db", &junk).unwrap_err();
        assert_eq!(err.reason, FailureReason::Config);
        assert!(
            err.message.contains("erp-db") && err.message.contains("holds no certificate"),
            "{}",
            err.message
        );
        let missing = ca_certificates("erp-db", &dir.path().join("absent.pem")).unwrap_err();
        assert!(
            missing.message.contains("cannot be read"),
            "{}",
            missing.message
        );
        // The system bundle (Debian's ca-certificates) parses and adds to the roots.
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if bundle.is_file() {
            assert!(ca_certificates("erp-db", bundle).unwrap().len() > 10);
            let roots = root_store("erp-db", Some(bundle)).unwrap();
            assert!(roots.len() > webpki_roots::TLS_SERVER_ROOTS.len());
        }
    }

    #[test]
    fn chain_names_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
    }
}
