//! The HTTP server as a platform team deploys it: TLS and basic
//! authentication from `--web.config.file` (the exporter toolkit's format),
//! checked with real TLS clients (reqwest with the test CA, mutual TLS, and
//! `curl`); gzip when asked; `--web.route-prefix`; `Allow` on 405; the same
//! file refused by `validate` with errors that name the key and never a
//! secret.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rpo_exporter::http::{RoutePrefix, WebOptions};
use rpo_exporter::web_config::WebSecurity;
use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");
const CONFIG: &str = "[exporter]\ninstance = \"dr\"\nregion = \"eu-central-1\"\n[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n";
const PASSWORD: &str = "correct horse battery staple";

/// The test CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    rpo_lab::make_certificates(dir).expect("openssl makes the test certificates");
}

/// A bcrypt hash of [`PASSWORD`] (cost 4: a test needs no slow hash).
fn password_hash() -> String {
    bcrypt::hash(PASSWORD, 4).unwrap()
}

/// The daemon in-process on a free port with `web`; stops when dropped.
struct Served {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(web: WebOptions) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = rpo_exporter::RunOptions {
            web,
            ..Default::default()
        };
        let task = tokio::spawn(rpo_exporter::run_with(
            Arc::new(parse_config(CONFIG)),
            listener,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            port,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn client(ca: Option<&Path>, identity: Option<&Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_built_in_root_certs(false);
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
        );
    }
    if let Some(dir) = identity {
        let mut pem = std::fs::read(dir.join("server.crt")).unwrap();
        pem.extend(std::fs::read(dir.join("server.key")).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

fn security(dir: &Path, yaml: &str) -> Arc<WebSecurity> {
    let path = write_file(dir, "web.yml", yaml);
    Arc::new(WebSecurity::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_from_a_web_config_file() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let hash = password_hash();
    let web = security(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let served = Served::start(WebOptions {
        security: Some(web),
        ..Default::default()
    })
    .await;
    let https = client(Some(&dir.path().join("ca.crt")), None);
    let metrics = served.url("https", "/metrics");

    // No credentials, a wrong password, an unknown user: 401 with the
    // challenge, and nothing of the exporter's.
    for request in [
        https.get(&metrics),
        https.get(&metrics).basic_auth("prometheus", Some("wrong")),
        https.get(&metrics).basic_auth("grafana", Some(PASSWORD)),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"rpo-exporter\""
        );
        let body = response.text().await.unwrap();
        assert!(!body.contains("rpo_"), "{body}");
    }
    // The right password: every endpoint answers, over and over (the
    // verified password is remembered, so a scrape is not a bcrypt).
    for _ in 0..5 {
        let response = https
            .get(&metrics)
            .basic_auth("prometheus", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.unwrap();
        assert!(body.contains("rpo_exporter_info{"), "{body}");
    }
    let verdict = https
        .get(served.url("https", "/failover-readiness"))
        .basic_auth("prometheus", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    // No target measured: NO-GO, as ever.
    assert_eq!(verdict.status().as_u16(), 503);
    let verdict: serde_json::Value = verdict.json().await.unwrap();
    assert_eq!(verdict["verdict"], "NO-GO");

    // Plain HTTP on the TLS port gets no answer from the exporter.
    let plain = client(None, None)
        .get(served.url("http", "/metrics"))
        .send()
        .await;
    assert!(
        plain
            .as_ref()
            .map(|r| r.status().as_u16() != 200)
            .unwrap_or(true),
        "{plain:?}"
    );
    // A client that does not trust the test CA refuses the server.
    let untrusting = client(None, None).get(&metrics).send().await;
    assert!(untrusting.is_err(), "{untrusting:?}");

    // curl, an independent TLS client, as an operator would.
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let curl = |user: &str| {
            std::process::Command::new("curl")
                .args(["-sS", "--noproxy", "*", "--cacert"])
                .arg(dir.path().join("ca.crt"))
                .args([
                    "-u",
                    user,
                    "-w",
                    "\n%{http_code}",
                    &served.url("https", "/-/healthy"),
                ])
                .output()
                .unwrap()
        };
        let ok = curl(&format!("prometheus:{PASSWORD}"));
        let out = String::from_utf8_lossy(&ok.stdout);
        assert!(
            ok.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(out.ends_with("Healthy\n\n200"), "{out}");
        let refused = curl("prometheus:nope");
        let out = String::from_utf8_lossy(&refused.stdout);
        assert!(out.ends_with("\n401"), "{out}");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let web = security(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n",
    );
    let served = Served::start(WebOptions {
        security: Some(web),
        ..Default::default()
    })
    .await;
    let ca = dir.path().join("ca.crt");
    let with_cert = client(Some(&ca), Some(dir.path()))
        .get(served.url("https", "/-/healthy"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_cert.status().as_u16(), 200);
    assert_eq!(with_cert.text().await.unwrap(), "Healthy\n");
    let without = client(Some(&ca), None)
        .get(served.url("https", "/-/healthy"))
        .send()
        .await;
    assert!(
        without
            .as_ref()
            .map(|r| r.status().as_u16() != 200)
            .unwrap_or(true),
        "a client without a certificate was served: {without:?}"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_route_prefix_and_allow() {
    let served = Served::start(WebOptions {
        route_prefix: RoutePrefix::parse("/rpo/").unwrap(),
        ..Default::default()
    })
    .await;
    // reqwest here has no gzip support: it shows the bytes as sent.
    let http = client(None, None);
    let metrics = served.url("http", "/rpo/metrics");

    let zipped = http
        .get(&metrics)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status().as_u16(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["vary"], "Accept-Encoding");
    let bytes = zipped.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("a gzip body");
    assert!(text.contains("rpo_exporter_info{"), "{text}");
    assert!(
        bytes.len() < text.len() / 2,
        "{} of {}",
        bytes.len(),
        text.len()
    );
    // Not asked, or refused: plain.
    for accept in [None, Some("gzip;q=0"), Some("identity")] {
        let mut request = http.get(&metrics);
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let response = request.send().await.unwrap();
        assert!(response.headers().get("content-encoding").is_none());
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("rpo_exporter_info{"));
    }

    // Everything under the prefix; nothing outside it.
    let status = |path: &'static str| {
        let http = http.clone();
        let url = served.url("http", path);
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(status("/metrics").await.status().as_u16(), 404);
    assert_eq!(status("/failover-readiness").await.status().as_u16(), 404);
    assert_eq!(status("/rpometrics").await.status().as_u16(), 404);
    assert_eq!(status("/rpo/-/healthy").await.status().as_u16(), 200);
    assert_eq!(
        status("/rpo/failover-readiness").await.status().as_u16(),
        503
    );
    let bare = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(served.url("http", "/rpo"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 308);
    assert_eq!(bare.headers()["location"], "/rpo/");
    // The board's links and its script follow the prefix.
    let board = status("/rpo/").await.text().await.unwrap();
    assert!(
        board.contains(r#"<a href="/rpo/failover-readiness">"#),
        "{board}"
    );
    assert!(board.contains(r#"<a href="/rpo/metrics">"#), "{board}");
    assert!(
        board.contains(r#"data-json="/rpo/failover-readiness?mode=planned""#),
        "{board}"
    );

    // 405 says what is allowed.
    let post = http.post(&metrics).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let get_reload = http
        .get(served.url("http", "/rpo/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(get_reload.status().as_u16(), 405);
    assert_eq!(get_reload.headers()["allow"], "POST, PUT");
    let delete_board = http
        .delete(served.url("http", "/rpo/"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete_board.status().as_u16(), 405);
    assert_eq!(delete_board.headers()["allow"], "GET, HEAD");
    served.stop().await;
}

async fn run_binary(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the exporter answers within 30 s")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_serve_check_the_web_config_file_and_never_print_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let config = write_file(dir.path(), "exporter.toml", CONFIG);
    let config = config.to_str().unwrap();
    let hash = password_hash();
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "`tls_server_config.cipher_suites` (an exporter toolkit setting) is not supported",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth: yes\n",
            "unknown key `tls_server_config.client_auth`",
        ),
        (
            "basic_auth_users:\n  prometheus: hunter2-plain\n",
            "basic_auth_users.prometheus: not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: ca.key\n",
            "do not make a usable pair",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n",
            "tls_server_config.min_version: TLS10 is not offered",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.crt\n",
            "use RequireAndVerifyClientCert",
        ),
    ];
    let key_text = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
    let key_line = key_text.lines().nth(1).unwrap().to_string();
    for (yaml, expected) in cases {
        let web = write_file(dir.path(), "bad-web.yml", yaml);
        for verb in ["validate", "serve"] {
            let output = run_binary(&[
                verb,
                "--config",
                config,
                "--web.listen-address",
                &format!("127.0.0.1:{}", rpo_lab::free_port()),
                "--web.config.file",
                web.to_str().unwrap(),
            ])
            .await;
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{verb} {yaml}: {stderr}");
            assert!(stderr.contains("--web.config.file"), "{stderr}");
            assert!(stderr.contains(expected), "{verb} {yaml}: {stderr}");
            assert!(!stderr.contains("hunter2-plain"), "{stderr}");
            assert!(!stderr.contains(&key_line), "{stderr}");
        }
    }
    let good = write_file(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{hash}'\n",
            dir.path().join("server.crt").display()
        ),
    );
    let good = good.to_str().unwrap();
    let output = run_binary(&["validate", "--config", config, "--web.config.file", good]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The daemon serves HTTPS with basic auth under its prefix; its log
    // says so and holds neither the password nor its hash nor the key.
    let port = rpo_lab::free_port();
    let log = std::fs::File::create(dir.path().join("exporter.log")).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config", config, "--web.config.file", good])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(["--web.route-prefix", "/rpo", "--log.level", "debug"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let https = client(Some(&dir.path().join("ca.crt")), None);
    let url = format!("https://127.0.0.1:{port}/rpo/-/healthy");
    wait_until(Duration::from_secs(20), "the exporter serves HTTPS", || {
        let request = https
            .get(&url)
            .basic_auth("prometheus", Some(PASSWORD))
            .send();
        async move {
            match request.await {
                Ok(r) if r.status().as_u16() == 200 => (true, "200".to_string()),
                other => (false, format!("{other:?}")),
            }
        }
    })
    .await;
    let refused = https.get(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // `check --from` reaches it with the CA and the credentials (the
    // password from a file, never a flag); without them it cannot, and says
    // so as a NO-GO; a half-given credential is a usage error.
    let base = format!("https://127.0.0.1:{port}/rpo");
    let password_file = write_file(dir.path(), "password", &format!("{PASSWORD}\n"));
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();
    let with_access = [
        "--http.ca-file",
        ca,
        "--http.username",
        "prometheus",
        "--http.password-file",
        password_file.to_str().unwrap(),
    ];
    let asked = run_binary(
        &[
            &["check", "--from", base.as_str(), "--output", "json"][..],
            &with_access[..],
        ]
        .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&asked.stdout);
    let verdict: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&asked.stderr)));
    assert_eq!(verdict["exporter"]["instance"], "dr", "{verdict}");
    assert_eq!(verdict["exporter"]["region"], "eu-central-1", "{verdict}");
    let without = run_binary(&["check", "--from", base.as_str(), "--http.ca-file", ca]).await;
    let out = String::from_utf8_lossy(&without.stdout);
    assert_eq!(without.status.code(), Some(1), "{out}");
    assert!(out.contains("NO-GO") && out.contains("401"), "{out}");
    for (args, flag) in [
        (
            vec!["--http.username", "prometheus"],
            "--http.password-file",
        ),
        (
            vec!["--http.ca-file", "/nonexistent/ca.crt"],
            "--http.ca-file",
        ),
    ] {
        let bad = run_binary(&[&["check", "--from", base.as_str()][..], &args[..]].concat()).await;
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    for output in [&asked, &without] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!all.contains(PASSWORD), "{all}");
    }
    let _ = child.kill().await;
    let log = std::fs::read_to_string(dir.path().join("exporter.log")).unwrap();
    assert!(log.contains("tls=true"), "{log}");
    assert!(log.contains("basic_auth_users=1"), "{log}");
    assert!(log.contains("route_prefix=/rpo"), "{log}");
    for secret in [PASSWORD, hash.as_str(), key_line.as_str()] {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }
}

/// A real Prometheus scrapes the exporter the way a platform team sets it
/// up: HTTPS with the test CA, basic auth, under a route prefix (and, as
/// Prometheus always does, asking for gzip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth_under_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let hash = password_hash();
    let web = security(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let served = Served::start(WebOptions {
        security: Some(web),
        route_prefix: RoutePrefix::parse("/rpo").unwrap(),
    })
    .await;
    let password_file = write_file(dir.path(), "password", PASSWORD);
    let options = format!(
        "    scheme: https\n    metrics_path: /rpo/metrics\n    tls_config:\n      ca_file: '{}'\n      server_name: localhost\n    basic_auth:\n      username: prometheus\n      password_file: '{}'\n",
        dir.path().join("ca.crt").display(),
        password_file.display()
    );
    let targets = [format!("127.0.0.1:{}", served.port)];
    let prometheus = tokio::task::spawn_blocking(move || {
        rpo_lab::monitoring::Prometheus::start_with("rpo-exporter", &targets, &[], None, &options)
    })
    .await
    .unwrap()
    .expect("prometheus starts (scripts/install-deps.sh installs it)");
    let url = prometheus.url();
    wait_until(
        Duration::from_secs(30),
        "Prometheus to scrape the exporter",
        || {
            let url = url.clone();
            async move {
                let answer = prometheus_query(
                    &url,
                    "rpo_exporter_info{exporter_instance=\"dr\"} * on(instance) up",
                )
                .await;
                let value = answer["data"]["result"][0]["value"][1].clone();
                (value == "1", answer.to_string())
            }
        },
    )
    .await;
    // The same Prometheus with a wrong password is refused (up == 0).
    let wrong = write_file(dir.path(), "wrong", "nope");
    let options = format!(
        "    scheme: https\n    metrics_path: /rpo/metrics\n    tls_config:\n      ca_file: '{}'\n    basic_auth:\n      username: prometheus\n      password_file: '{}'\n",
        dir.path().join("ca.crt").display(),
        wrong.display()
    );
    let targets = [format!("127.0.0.1:{}", served.port)];
    let refused = tokio::task::spawn_blocking(move || {
        rpo_lab::monitoring::Prometheus::start_with("rpo-exporter", &targets, &[], None, &options)
    })
    .await
    .unwrap()
    .unwrap();
    let url = refused.url();
    let seen = wait_until(Duration::from_secs(30), "a failed scrape", || {
        let url = url.clone();
        async move {
            let answer = prometheus_query(&url, "up").await;
            let value = answer["data"]["result"][0]["value"][1].clone();
            (value == "0", answer.to_string())
        }
    })
    .await;
    assert!(seen.contains("\"0\""), "{seen}");
    drop(prometheus);
    drop(refused);
    served.stop().await;
}
