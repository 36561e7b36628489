//! `--web.config.file`: TLS and basic authentication for the HTTP server, in
//! the Prometheus exporter toolkit's web configuration format (the subset the
//! README documents), so a platform team's existing files and habits apply.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12                              # or TLS13; max_version likewise
//! basic_auth_users:
//!   prometheus: $2y$10$...                          # bcrypt hashes
//! ```
//!
//! Every key is checked: one this subset does not implement, or one the
//! toolkit does not know, is an error naming it. The file and the files it
//! names are read again when one of them changes (checked at most once a
//! second, on a new connection or request), so a rotated certificate is
//! served without a restart; a change that does not load is logged and the
//! running settings are kept.
//!
//! A verified password is remembered (as a SHA-256 of user, hash and
//! password, never the password), as the toolkit does, so a scrape every few
//! seconds does not cost a bcrypt each time; a wrong one costs a full bcrypt,
//! one at a time. Neither a password, a hash nor a key ever reaches a log
//! line or an error message.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;

/// A web configuration file that cannot be used; the message names the file
/// and the key, never a secret.
#[derive(Debug, thiserror::Error)]
#[error("--web.config.file {path}: {message}")]
pub struct WebConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// The toolkit's top-level keys this exporter implements.
const TOP_KEYS: [&str; 2] = ["tls_server_config", "basic_auth_users"];
/// The toolkit's top-level keys it does not (yet).
const TOP_KEYS_UNSUPPORTED: [&str; 2] = ["http_server_config", "rate_limit"];
/// The keys of `tls_server_config` it implements.
const TLS_KEYS: [&str; 6] = [
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
];
/// The toolkit's keys of `tls_server_config` it does not.
const TLS_KEYS_UNSUPPORTED: [&str; 7] = [
    "cert",
    "key",
    "client_ca",
    "client_allowed_sans",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// What a loaded file says.
struct Loaded {
    /// The server's TLS settings; `None`: plain HTTP.
    tls: Option<Arc<ServerConfig>>,
    /// User name -> bcrypt hash; empty: no authentication.
    users: Arc<BTreeMap<String, String>>,
    /// A hash of the users' cost for a password nobody has: an unknown user
    /// is checked against it, so timing does not tell which users exist.
    unknown_user: Arc<String>,
    /// The files read and what they looked like, to notice a change.
    files: Vec<FileStamp>,
}

#[derive(PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> FileStamp {
        let meta = std::fs::metadata(path).ok();
        FileStamp {
            path: path.to_path_buf(),
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            len: meta.map(|m| m.len()).unwrap_or(0),
        }
    }

    fn changed(&self) -> bool {
        FileStamp::of(&self.path) != *self
    }
}

/// The HTTP server's TLS and basic-auth settings from `--web.config.file`.
pub struct WebSecurity {
    path: PathBuf,
    loaded: Mutex<(Arc<Loaded>, Instant)>,
    /// SHA-256 of (user, hash, password) of credentials verified lately.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt at a time: it is CPU-heavy by design.
    bcrypt: tokio::sync::Mutex<()>,
}

/// How many verified credentials are remembered at most.
const VERIFIED_CACHE: usize = 64;
/// How often the files are looked at for a change at most.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded = self.current();
        f.debug_struct("WebSecurity")
            .field("path", &self.path)
            .field("tls", &loaded.tls.is_some())
            .field("users", &loaded.users.len())
            .finish()
    }
}

impl WebSecurity {
    /// Reads and checks `path` and every file it names.
    pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
        let loaded = load(path)?;
        Ok(WebSecurity {
            path: path.to_path_buf(),
            loaded: Mutex::new((Arc::new(loaded), Instant::now())),
            verified: Mutex::new(HashSet::new()),
            bcrypt: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether connections are TLS.
    pub fn tls_enabled(&self) -> bool {
        self.current().tls.is_some()
    }

    /// How many users basic authentication knows (0: it is off).
    pub fn user_count(&self) -> usize {
        self.current().users.len()
    }

    /// The TLS settings for a new connection (reread if a file changed).
    pub fn tls(&self) -> Option<Arc<ServerConfig>> {
        self.current().tls.clone()
    }

    /// The settings in force, read again first if a file changed.
    fn current(&self) -> Arc<Loaded> {
        let mut guard = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if guard.1.elapsed() >= RECHECK_EVERY {
            guard.1 = Instant::now();
            if guard.0.files.iter().any(FileStamp::changed) {
                match load(&self.path) {
                    Ok(loaded) => {
                        tracing::info!(
                            file = %self.path.display(),
                            tls = loaded.tls.is_some(),
                            basic_auth_users = loaded.users.len(),
                            "web configuration reloaded"
                        );
                        guard.0 = Arc::new(loaded);
                        self.verified
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clear();
                    }
                    Err(problem) => {
                        // Keep serving with what worked; say so once per change.
                        tracing::error!(%problem, "web configuration changed but does not load; keeping the previous one");
                        guard.0 = Arc::new(Loaded {
                            tls: guard.0.tls.clone(),
                            users: guard.0.users.clone(),
                            unknown_user: guard.0.unknown_user.clone(),
                            files: guard
                                .0
                                .files
                                .iter()
                                .map(|f| FileStamp::of(&f.path))
                                .collect(),
                        });
                    }
                }
            }
        }
        guard.0.clone()
    }

    /// Whether a request with this `Authorization` header may be served:
    /// always when no users are configured; otherwise only with the right
    /// user name and password (HTTP basic authentication).
    pub async fn authorize(&self, authorization: Option<&[u8]>) -> bool {
        let loaded = self.current();
        if loaded.users.is_empty() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let known = loaded.users.get(&user);
        // An unknown user costs a bcrypt of the same cost too.
        let hash = known
            .cloned()
            .unwrap_or_else(|| loaded.unknown_user.to_string());
        let key = credential_key(&user, &hash, &password);
        if known.is_some()
            && self
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
        {
            return true;
        }
        let _one_at_a_time = self.bcrypt.lock().await;
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(password.as_bytes(), &hash))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false);
        if verified && known.is_some() {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= VERIFIED_CACHE {
                cache.clear();
            }
            cache.insert(key);
            return true;
        }
        false
    }
}

/// A bcrypt hash, of the cost `users` use, of a password nobody has.
fn unknown_user_hash(users: &BTreeMap<String, String>) -> String {
    let cost = users
        .values()
        .next()
        .and_then(|h| h.get(4..6))
        .and_then(|c| c.parse().ok())
        .unwrap_or(bcrypt::DEFAULT_COST);
    let mut secret = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
    bcrypt::hash(secret, cost).unwrap_or_default()
}

fn credential_key(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// `Basic base64(user:password)` into (user, password).
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn load(path: &Path) -> Result<Loaded, WebConfigError> {
    let error = |message: String| WebConfigError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let mut files = vec![FileStamp::of(path)];
    let raw = parse(&text).map_err(error)?;
    // Relative paths are relative to the web configuration file.
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        if user.is_empty() || user.contains(':') {
            return Err(error(format!(
                "basic_auth_users: the user name `{user}` is empty or holds ':'"
            )));
        }
        // Checked without printing it: a hash is a secret too.
        if !looks_like_bcrypt(&hash) {
            return Err(error(format!(
                "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            )));
        }
        users.insert(user, hash);
    }
    let tls = match raw.tls_server_config {
        None => None,
        Some(tls) => {
            let cert_file = tls.cert_file.as_deref().map(resolve).ok_or_else(|| {
                error("tls_server_config.cert_file is required (with key_file)".to_string())
            })?;
            let key_file = tls.key_file.as_deref().map(resolve).ok_or_else(|| {
                error("tls_server_config.key_file is required (with cert_file)".to_string())
            })?;
            let ca_file = tls.client_ca_file.as_deref().map(resolve);
            files.push(FileStamp::of(&cert_file));
            files.push(FileStamp::of(&key_file));
            if let Some(ca) = &ca_file {
                files.push(FileStamp::of(ca));
            }
            Some(Arc::new(
                server_config(&tls, &cert_file, &key_file, ca_file.as_deref()).map_err(error)?,
            ))
        }
    };
    let unknown_user = if users.is_empty() {
        String::new()
    } else {
        unknown_user_hash(&users)
    };
    Ok(Loaded {
        tls,
        users: Arc::new(users),
        unknown_user: Arc::new(unknown_user),
        files,
    })
}

/// The file's YAML, every key checked; errors name the key.
fn parse(text: &str) -> Result<RawWebConfig, String> {
    let value: serde_yaml::Value = if text.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
    };
    let value = match value {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        v => v,
    };
    let check_keys = |map: &serde_yaml::Mapping,
                      prefix: &str,
                      known: &[&str],
                      unsupported: &[&str]|
     -> Result<(), String> {
        for key in map.keys() {
            let key = key.as_str().unwrap_or("(not a string)");
            let name = format!("{prefix}{key}");
            if unsupported.contains(&key) {
                return Err(format!(
                    "`{name}` (an exporter toolkit setting) is not supported by rpo-exporter; supported here: {}",
                    known.join(", ")
                ));
            }
            if !known.contains(&key) {
                return Err(format!(
                    "unknown key `{name}`; supported here: {}",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    };
    let top = value
        .as_mapping()
        .ok_or("expected a mapping of tls_server_config and basic_auth_users")?;
    check_keys(top, "", &TOP_KEYS, &TOP_KEYS_UNSUPPORTED)?;
    if let Some(tls) = top.get("tls_server_config") {
        if let Some(tls) = tls.as_mapping() {
            check_keys(tls, "tls_server_config.", &TLS_KEYS, &TLS_KEYS_UNSUPPORTED)?;
        }
    }
    serde_yaml::from_value(value).map_err(|e| e.to_string())
}

/// `$2a$`, `$2b$`, `$2x$` or `$2y$`, a two-digit cost, and 53 characters of
/// salt and hash.
fn looks_like_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    hash.len() == 60
        && hash.starts_with("$2")
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
}

fn tls_version(
    key: &str,
    value: Option<&str>,
    default: &'static rustls::SupportedProtocolVersion,
) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match value {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(other @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key}: {other} is not offered (it is insecure); use TLS12 or TLS13"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: `{other}` is not a TLS version; use TLS12 or TLS13"
        )),
    }
}

fn server_config(
    tls: &RawTls,
    cert_file: &Path,
    key_file: &Path,
    ca_file: Option<&Path>,
) -> Result<ServerConfig, String> {
    let min = tls_version(
        "min_version",
        tls.min_version.as_deref(),
        &rustls::version::TLS12,
    )?;
    let max = tls_version(
        "max_version",
        tls.max_version.as_deref(),
        &rustls::version::TLS13,
    )?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |v: &rustls::SupportedProtocolVersion| {
                    if v.version == rustls::ProtocolVersion::TLSv1_3 {
                        13
                    } else {
                        12
                    }
                };
                rank(v) >= rank(min) && rank(v) <= rank(max)
            })
            .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".to_string());
    }
    let certs = read_certificates("tls_server_config.cert_file", cert_file)?;
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let verified = |allow_unauthenticated: bool| -> Result<_, String> {
        let ca_file = ca_file.ok_or_else(|| {
            format!(
                "tls_server_config.client_ca_file is required with client_auth_type {auth_type}"
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certificates("tls_server_config.client_ca_file", ca_file)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "tls_server_config.client_ca_file {}: {e}",
                    ca_file.display()
                )
            })?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let verifier = if allow_unauthenticated {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        verifier
            .build()
            .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))
    };
    let builder = match auth_type {
        "NoClientCert" => {
            if ca_file.is_some() {
                return Err("tls_server_config.client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type: RequireAndVerifyClientCert".to_string());
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(verified(false)?),
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(verified(true)?),
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type: {auth_type} accepts certificates nobody verified; use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
            ))
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: `{other}` is not one of NoClientCert, RequireAndVerifyClientCert, VerifyClientCertIfGiven"
            ))
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_server_config: the certificate {} and the key {} do not make a usable pair: {e}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let key = "tls_server_config.key_file";
    let pem = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    // The parser's error never holds the key's bytes; say only where.
    rustls_pemfile::private_key(&mut std::io::BufReader::new(pem.as_slice()))
        .map_err(|_| format!("{key} {}: not a PEM private key", path.display()))?
        .ok_or_else(|| format!("{key} {}: no PEM private key in it", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_checked_and_named() {
        let err = |text: &str| parse(text).err().unwrap();
        assert!(err("tls_server_config:\n  cert_file: a\n  ciphers: [x]\n")
            .contains("unknown key `tls_server_config.ciphers`"));
        assert!(err("rate_limit:\n  burst: 1\n")
            .contains("`rate_limit` (an exporter toolkit setting) is not supported"));
        assert!(err("tls_server_config:\n  cipher_suites: [x]\n")
            .contains("`tls_server_config.cipher_suites` (an exporter toolkit setting)"));
        assert!(err("basic_auth: {}\n").contains("unknown key `basic_auth`"));
        assert!(parse("").unwrap().tls_server_config.is_none());
        assert!(parse("# only a comment\n")
            .unwrap()
            .basic_auth_users
            .is_none());
    }

    #[test]
    fn bad_hashes_are_refused_without_being_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, "basic_auth_users:\n  alice: plaintext-password\n").unwrap();
        let message = WebSecurity::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("basic_auth_users.alice: not a bcrypt hash"),
            "{message}"
        );
        assert!(!message.contains("plaintext-password"), "{message}");
    }

    #[test]
    fn basic_credentials_are_decoded() {
        // "alice:s3cr:et" — a password may hold ':'.
        assert_eq!(
            basic_credentials(b"Basic YWxpY2U6czNjcjpldA=="),
            Some(("alice".to_string(), "s3cr:et".to_string()))
        );
        assert_eq!(basic_credentials(b"Bearer YWxpY2U6czNjcjpldA=="), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
    }

    #[tokio::test]
    async fn a_verified_password_is_remembered_and_a_wrong_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let hash = bcrypt::hash("right", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let security = WebSecurity::load(&path).unwrap();
        let header = |user: &str, password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        assert!(!security.authorize(None).await);
        assert!(
            !security
                .authorize(Some(header("alice", "wrong").as_bytes()))
                .await
        );
        assert!(
            !security
                .authorize(Some(header("bob", "right").as_bytes()))
                .await
        );
        assert!(security.verified.lock().unwrap().is_empty());
        assert!(
            security
                .authorize(Some(header("alice", "right").as_bytes()))
                .await
        );
        assert_eq!(security.verified.lock().unwrap().len(), 1);
        // Remembered: answered without taking the bcrypt lock.
        let held = security.bcrypt.lock().await;
        assert!(
            security
                .authorize(Some(header("alice", "right").as_bytes()))
                .await
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_changed_file_is_read_again_and_a_broken_change_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let header = |user: &str, password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        let alice = bcrypt::hash("a-pass", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{alice}'\n")).unwrap();
        let security = WebSecurity::load(&path).unwrap();
        assert!(
            security
                .authorize(Some(header("alice", "a-pass").as_bytes()))
                .await
        );
        // Rotated: bob replaces alice.
        let bob = bcrypt::hash("b-pass", 4).unwrap();
        std::fs::write(
            &path,
            format!("basic_auth_users:\n  bob: '{bob}'\n  carol: '{bob}'\n"),
        )
        .unwrap();
        tokio::time::sleep(RECHECK_EVERY + Duration::from_millis(100)).await;
        assert!(
            security
                .authorize(Some(header("bob", "b-pass").as_bytes()))
                .await
        );
        assert!(
            !security
                .authorize(Some(header("alice", "a-pass").as_bytes()))
                .await
        );
        assert_eq!(security.user_count(), 2);
        // A broken change is refused; bob still gets in.
        std::fs::write(&path, "basic_auth_users:\n  bob: not-a-hash-at-all\n").unwrap();
        tokio::time::sleep(RECHECK_EVERY + Duration::from_millis(100)).await;
        assert!(
            security
                .authorize(Some(header("bob", "b-pass").as_bytes()))
                .await
        );
        assert_eq!(security.user_count(), 2);
    }

    #[test]
    fn an_unknown_user_is_checked_at_the_users_cost() {
        let users: BTreeMap<String, String> =
            [("alice".to_string(), bcrypt::hash("x", 5).unwrap())].into();
        assert!(unknown_user_hash(&users).starts_with("$2b$05$"));
    }
}
