//! The one HTTP client setup of the HTTP-speaking kinds (`rabbitmq`,
//! `opensearch`): URL and credential checks for the config, trusted roots,
//! timeouts, AWS Signature Version 4 for HTTP APIs behind AWS IAM
//! ([`AwsSigner`]), and turning a transport error into a bounded reason with
//! a message that never contains the URL (which may carry a password).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningParams, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::ca_certificates;
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
    if url.is_unresolved() {
        // `validate --no-secrets`: the URL's form is not known.
        return Ok(());
    }
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
///
/// Targets without a `tls_ca_file` and with the same timeout share one
/// client (a clone of it: the same TLS configuration, session cache and
/// connection pool). Each target building its own took about 30 KiB (the
/// TLS roots, the session cache, the pool), more than everything else a
/// target keeps, and each own pool kept its own idle connection to a
/// server many targets name (1,000 queues on one RabbitMQ: 1,000
/// descriptors). Shared, requests to one server reuse its idle
/// connections; the pool is per host, so a hanging server still delays
/// only its own targets, and credentials are sent per request, never kept
/// by the client. A target with a CA file still builds its own (the file
/// is read when its probe is built, so a reload sees a changed file). The
/// shared clients are kept for the life of the process, one per timeout
/// ever configured and tokio runtime: a pooled connection is driven by a
/// task of the runtime that made it, and is gone with that runtime (the
/// daemon has one; tests and `check` may start several).
pub fn build_client(
    target: &str,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, ProbeError> {
    if ca_file.is_some() {
        return build_own_client(target, timeout, ca_file);
    }
    type Key = (Option<tokio::runtime::Id>, Duration);
    static SHARED: LazyLock<Mutex<HashMap<Key, reqwest::Client>>> = LazyLock::new(Mutex::default);
    let key = (
        tokio::runtime::Handle::try_current().ok().map(|h| h.id()),
        timeout,
    );
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = shared.get(&key) {
        return Ok(client.clone());
    }
    let client = build_own_client(target, timeout, None)?;
    shared.insert(key, client.clone());
    Ok(client)
}

fn build_own_client(
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
        for der in ca_certificates(target, path)? {
            let cert = reqwest::Certificate::from_der(&der).map_err(|e| {
                ProbeError::new(
                    FailureReason::Config,
                    format!("target {target}: tls_ca_file {}: {e}", path.display()),
                )
            })?;
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

/// Signs requests with AWS Signature Version 4 (the `Authorization`,
/// `X-Amz-Date`, `X-Amz-Content-Sha256` and, for temporary credentials,
/// `X-Amz-Security-Token` headers), for HTTP APIs that AWS IAM guards, such
/// as an Amazon OpenSearch Service domain's endpoint (service name `es`).
///
/// Credentials come from the standard AWS credential chain (the caller hands
/// in its provider) and are kept until five minutes before they expire
/// (credentials without an expiry, such as environment variables, for
/// [`STATIC_CREDENTIALS_REFRESH`]): the chain's providers do not cache, and an
/// instance-role or AssumeRole lookup per request would be slow and billed.
/// Clones, and [`AwsSigner::in_region`], share that cache.
#[derive(Clone)]
pub struct AwsSigner {
    credentials: Arc<CachedCredentials>,
    region: String,
    service: String,
}

/// How long credentials without an expiry are used before the chain is asked again.
pub const STATIC_CREDENTIALS_REFRESH: Duration = Duration::from_secs(15 * 60);
/// Credentials are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

struct CachedCredentials {
    provider: SharedCredentialsProvider,
    current: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
}

impl std::fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigner")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl AwsSigner {
    /// A signer for `service` (e.g. `es`) in `region`, with credentials from `provider`.
    pub fn new(provider: SharedCredentialsProvider, region: &str, service: &str) -> AwsSigner {
        AwsSigner {
            credentials: Arc::new(CachedCredentials {
                provider,
                current: tokio::sync::Mutex::new(None),
            }),
            region: region.to_string(),
            service: service.to_string(),
        }
    }

    /// The same credentials, signing for another region (a cluster there).
    pub fn in_region(&self, region: &str) -> AwsSigner {
        AwsSigner {
            region: region.to_string(),
            ..self.clone()
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    async fn credentials(&self, what: &str) -> Result<Credentials, ProbeError> {
        let now = SystemTime::now();
        let mut current = self.credentials.current.lock().await;
        if let Some((credentials, renew_at)) = current.as_ref() {
            if now < *renew_at {
                return Ok(credentials.clone());
            }
        }
        let credentials = self
            .credentials
            .provider
            .provide_credentials()
            .await
            .map_err(|e| {
                ProbeError::new(
                    FailureReason::Auth,
                    format!(
                        "{what}: no AWS credentials to sign the request with ({}); provide them through the standard chain (environment, `profile`, web identity, container or instance role)",
                        super::error_chain(&e)
                    ),
                )
            })?;
        let renew_at = match credentials.expiry() {
            Some(expiry) => expiry.checked_sub(EXPIRY_MARGIN).unwrap_or(expiry),
            None => now + STATIC_CREDENTIALS_REFRESH,
        };
        *current = Some((credentials.clone(), renew_at));
        Ok(credentials)
    }

    /// Signs `request` (built, about to be sent) for this region and
    /// service. Everything the signature covers must be final: the URL with
    /// its query, the headers set so far, the body (which must be in memory).
    pub async fn sign(&self, request: &mut reqwest::Request, what: &str) -> Result<(), ProbeError> {
        let credentials = self.credentials(what).await?;
        self.sign_with(request, credentials, SystemTime::now())
            .map_err(|e| ProbeError::new(FailureReason::Config, format!("{what}: {e}")))
    }

    /// Pure signing at `now`, for [`AwsSigner::sign`] and the tests.
    fn sign_with(
        &self,
        request: &mut reqwest::Request,
        credentials: Credentials,
        now: SystemTime,
    ) -> Result<(), String> {
        let identity: Identity = credentials.into();
        let mut settings = SigningSettings::default();
        // The body's hash travels in X-Amz-Content-Sha256 too, as the AWS
        // SDKs' OpenSearch signers send it; the service checks it.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into();
        let mut headers = Vec::with_capacity(request.headers().len());
        for (name, value) in request.headers() {
            let value = value
                .to_str()
                .map_err(|_| format!("header {name} is not signable text"))?;
            headers.push((name.as_str(), value));
        }
        let body = match request.body() {
            None => SignableBody::Bytes(&[]),
            Some(body) => {
                SignableBody::Bytes(body.as_bytes().ok_or("a streamed body cannot be signed")?)
            }
        };
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.into_iter(),
            body,
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into_parts();
        let (new_headers, _query) = instructions.into_parts();
        for header in new_headers {
            let mut value =
                reqwest::header::HeaderValue::from_str(header.value()).map_err(|_| {
                    format!(
                        "the signature header {} is not a header value",
                        header.name()
                    )
                })?;
            // The signature and a session token must never be printed.
            value.set_sensitive(
                header.sensitive()
                    || matches!(header.name(), "authorization" | "x-amz-security-token"),
            );
            request.headers_mut().insert(header.name(), value);
        }
        Ok(())
    }
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

    /// Targets without a CA file and with one timeout share a client, so
    /// their requests to one server reuse one kept connection; another
    /// timeout is another client (and connection). Counted at a real
    /// listener: each accepted connection answers any number of requests.
    #[tokio::test]
    async fn targets_without_a_ca_file_share_one_client_and_its_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if socket.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        // A timeout no other test uses, so the shared client is this test's.
        let timeout = Duration::from_millis(4_321);
        for target in ["q1", "q2", "q3"] {
            let client = build_client(target, timeout, None).unwrap();
            let answer = client.get(&url).send().await.unwrap();
            assert_eq!(answer.text().await.unwrap(), "ok");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "three targets, one client, one kept connection"
        );
        let other = build_client("q4", Duration::from_millis(4_322), None).unwrap();
        other.get(&url).send().await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

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

    /// The signature covers the request as sent: scope, signed headers and
    /// the body's hash (the contract server in `rpo-lab` verifies the whole
    /// signature independently; this pins what the signer adds).
    #[test]
    fn signing_adds_the_sigv4_headers_for_the_region_and_service() {
        let credentials = || Credentials::new("ANOTREAL", "notreal", None, None, "test");
        let signer = AwsSigner::new(
            SharedCredentialsProvider::new(credentials()),
            "eu-west-1",
            "es",
        );
        let client = reqwest::Client::new();
        let mut request = client
            .put("https://search-erp.eu-west-1.es.amazonaws.com/hb/_doc/x")
            .header("content-type", "application/json")
            .body(r#"{"ts":1}"#)
            .build()
            .unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        signer.sign_with(&mut request, credentials(), at).unwrap();
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_string();
        let authorization = header("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=ANOTREAL/20150830/eu-west-1/es/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature="
            ),
            "{authorization}"
        );
        assert_eq!(header("x-amz-date"), "20150830T123600Z");
        // sha256 of the body.
        assert_eq!(
            header("x-amz-content-sha256"),
            "7e5a2cbfd99a79f9ec12491cff22467b7ff22e09df59689240010113a0d91176"
        );
        assert!(request.headers()["authorization"].is_sensitive());
        // The same credentials, another region: the scope follows.
        let mut request = client.get("https://x.example/").build().unwrap();
        signer
            .in_region("eu-central-1")
            .sign_with(&mut request, credentials(), at)
            .unwrap();
        assert!(request.headers()["authorization"]
            .to_str()
            .unwrap()
            .contains("/eu-central-1/es/aws4_request"));
    }

    #[test]
    fn excerpt_is_one_short_line() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
