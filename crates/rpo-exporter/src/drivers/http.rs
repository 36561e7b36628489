//! The one HTTP client setup of the HTTP-speaking kinds (`rabbitmq`, and
//! `opensearch` through the `opensearch` crate, which wraps the same
//! `reqwest`): URL and credential checks for the config, trusted roots,
//! timeouts, and turning a transport error into a bounded reason with a
//! message that never contains the URL (which may carry a password).

use std::path::Path;
use std::time::Duration;

use super::read_ca_file;
use crate::config::{ConfigError, Secret, TargetKeys};
use crate::probe::{FailureReason, ProbeError};

/// Checks an HTTP(S) URL without ever echoing it, and that credentials
/// are given in exactly one place (in the URL, or `username` + password).
pub fn check_url(
    keys: &TargetKeys<'_>,
    name: &str,
    url: &Secret,
    username: Option<&str>,
    password_set_apart: bool,
    example: &str,
) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url.expose()).map_err(|err| {
        keys.invalid(
            name,
            format!("not a URL ({err}); write it like \"{example}\""),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(keys.invalid(
            name,
            format!("use an http:// or https:// URL with a host, like \"{example}\""),
        ));
    }
    let in_url = !parsed.username().is_empty() || parsed.password().is_some();
    if in_url && (username.is_some() || password_set_apart) {
        return Err(keys.invalid(
            name,
            "the URL carries credentials and `username`/`password` is set too; keep them in one place",
        ));
    }
    if password_set_apart && username.is_none() {
        return Err(keys.invalid("username", "a password is set but no username"));
    }
    if let Some(user) = username {
        if user.is_empty() || user.chars().any(char::is_control) || user.contains(':') {
            return Err(keys.invalid(
                "username",
                "must be non-empty, without ':' or control characters",
            ));
        }
        if !password_set_apart {
            return Err(keys.invalid(
                "password",
                "`username` is set: give its password with `password_env` (an environment variable's name) or `password_file` (a path)",
            ));
        }
    }
    Ok(())
}

/// A client for one target: rustls with the public roots plus the target's
/// own CA file, and the target's timeout on every request.
pub fn build_client(
    target: &str,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ProbeError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("rpo-exporter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = read_ca_file(target, path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            ProbeError::new(
                FailureReason::Config,
                format!(
                    "target {target}: tls_ca_file {} is not PEM: {e}",
                    path.display()
                ),
            )
        })?;
        if certs.is_empty() {
            return Err(ProbeError::new(
                FailureReason::Config,
                format!(
                    "target {target}: tls_ca_file {} holds no certificate",
                    path.display()
                ),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| {
        ProbeError::new(
            FailureReason::Config,
            format!(
                "target {target}: HTTP client setup failed: {}",
                e.without_url()
            ),
        )
    })
}

/// Maps a transport error to a bounded reason. The message is built from
/// the error's causes only, never its URL.
pub fn classify(err: &reqwest::Error, what: &str) -> ProbeError {
    let reason = if err.is_timeout() {
        FailureReason::Timeout
    } else if err.is_connect() || err.is_request() {
        FailureReason::Connect
    } else if err.is_decode() || err.is_body() {
        FailureReason::Parse
    } else {
        FailureReason::Query
    };
    let mut message = format!("{what}: {}", kind_phrase(err));
    if let Some(cause) = std::error::Error::source(err) {
        let causes = super::error_chain(cause);
        if !message.ends_with(&causes) {
            message.push_str(": ");
            message.push_str(&causes);
        }
    }
    ProbeError::new(reason, message)
}

fn kind_phrase(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "no answer in time"
    } else if err.is_connect() {
        "cannot connect"
    } else if err.is_body() || err.is_decode() {
        "cannot read the response"
    } else {
        "request failed"
    }
}

/// The first `max` characters of a response body, on one line, for messages.
pub fn excerpt(body: &str, max: usize) -> String {
    let flat: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        flat.to_string()
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// A URL for people: scheme, host and port only, without credentials or path.
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<invalid URL>".to_string(),
    }
}

/// A URL for people, wherever one is printed: scheme, host, port and
/// path, without user name or password, and with the query replaced by
/// `?<redacted>` (a token may be a query value, or a bare query name).
pub fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<invalid URL>".to_string();
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_fragment(None);
    let had_query = parsed.query().is_some_and(|q| !q.is_empty());
    parsed.set_query(None);
    if had_query {
        // Written by hand: the URL type would percent-encode the brackets.
        format!("{parsed}?<redacted>")
    } else {
        parsed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_keeps_where_and_drops_secrets() {
        assert_eq!(
            redacted_url("https://ops:hunter2@gw.internal:8443/rpo-eu/?token=hunter3&x=1#frag"),
            "https://gw.internal:8443/rpo-eu/?<redacted>"
        );
        assert_eq!(
            redacted_url("http://127.0.0.1:9798"),
            "http://127.0.0.1:9798/"
        );
        assert_eq!(redacted_url("not a url hunter2"), "<invalid URL>");
    }

    #[test]
    fn origin_drops_credentials_and_path() {
        assert_eq!(
            origin("http://monitor:hunter2@rabbit.internal:15672/api"),
            "http://rabbit.internal:15672"
        );
    }

    #[test]
    fn excerpt_is_one_short_line() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
