//! Driver plumbing the kinds share, written once: deadlines, TLS CA
//! loading, and error messages that never contain a URL.
//!
//! Reconnecting: a kept connection that is lost (or was never made) is
//! attempted again on the next poll, every poll, with no backoff that would
//! repeat a cached error. A side that comes back is seen by the first poll
//! after it does: the "unreachable" reason never outlives the truth by more
//! than one poll. The cost of an attempt is capped by the side's share of
//! the poll's timeout, and polls are paced by `poll_interval`, so a dead
//! server sees one connection attempt per poll; the log says so once per
//! change of state (see [`crate::poller`]), not once per attempt.
//!
//! One module per wire protocol: [`postgres`] (`postgres`, `sql_queue`),
//! [`mysql`] (`mysql`), [`redis`] (`redis`, `redis_stream`) and [`http`]
//! (`rabbitmq`, `opensearch`). A kind never imports another kind's module;
//! what two kinds share (or could: a MySQL outbox table) lives here.
//!
//! Kept Redis and PostgreSQL connections are shared between targets that
//! name the same server with the same settings, and counted against the
//! process's descriptor budget: see [`shared`].

pub mod http;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod shared;

use std::path::Path;
use std::time::Instant;

use crate::probe::{FailureReason, ProbeError};

/// Runs `future` until `deadline`, turning a late answer into a timeout.
pub async fn within<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    let budget = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(budget, future).await {
        Ok(result) => result,
        // Said to the 100 ms: the remainder of a deadline differs on every
        // poll ("999ms", "998ms"), and a reason that changes on every poll
        // reads as news to a person and to the log.
        Err(_) => Err(ProbeError::timeout(to_the_tenth(budget))),
    }
}

/// `d` rounded to the nearest 100 ms (at least 100 ms).
fn to_the_tenth(d: std::time::Duration) -> std::time::Duration {
    let tenths = (d.as_millis() + 50) / 100;
    std::time::Duration::from_millis((tenths.max(1) * 100) as u64)
}

/// An error and its causes on one line (`a: b: c`), each cause once, in
/// words: the `Display` of each, never a `Debug` struct (the AWS SDK's
/// `DisplayErrorContext` appends one: `DispatchFailure { ... }`). Only for
/// driver errors that never carry the URL they were given.
pub fn error_chain(err: &dyn std::error::Error) -> String {
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

    #[tokio::test]
    async fn a_deadline_says_its_budget_to_the_tenth_of_a_second() {
        let deadline = Instant::now() + std::time::Duration::from_millis(999);
        let err = within(deadline, std::future::pending::<Result<(), ProbeError>>())
            .await
            .unwrap_err();
        assert_eq!(err.message, "no answer within 1s");
        assert_eq!(
            to_the_tenth(std::time::Duration::from_millis(1_449)),
            std::time::Duration::from_millis(1_400)
        );
    }

    #[test]
    fn chain_names_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
    }
}
