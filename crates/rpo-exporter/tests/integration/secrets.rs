//! No secret in any output, whatever fails: a fuzz-style corpus of broken
//! configurations (typo'd keys, duplicate keys, unbalanced quotes, wrong
//! types, malformed URLs), each with its secrets given inline, by
//! environment variable and by file, run through every command (`validate`,
//! `check`, `serve`) at `--log.level=debug`, plus `check --from` and
//! `check --prometheus` with credentials in the URL; every output stream is
//! searched for the secrets.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rpo_lab::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_rpo-exporter");

/// The password every URL carries, the token in query strings, and the
/// AWS access key id in the environment.
const SECRET: &str = "Sekr1t-Hunter2-pw";
const TOKEN: &str = "Sekr1t-Tok3n-q";
const AWS_KEY_ID: &str = "AKIASEKR1TKEYID00000";

fn assert_no_secret(what: &str, output: &str) {
    for secret in [SECRET, TOKEN, AWS_KEY_ID] {
        assert!(
            !output.contains(secret),
            "{what}: the secret {secret} leaked:\n{output}"
        );
    }
}

/// How the secrets are given.
#[derive(Debug, Clone, Copy)]
enum Given {
    Inline,
    Env,
    File,
}

/// One key that holds a secret: its kind's block, its name, its value.
struct SecretKey {
    kind: &'static str,
    key: &'static str,
    value: String,
}

/// Every secret-bearing key of the corpus' base configuration, with
/// well-formed values pointing at a closed port.
fn secret_keys(port: u16) -> Vec<SecretKey> {
    let key = |kind, key, value: String| SecretKey { kind, key, value };
    vec![
        key(
            "postgres",
            "primary_url",
            format!("postgres://monitor:{SECRET}@127.0.0.1:{port}/erp"),
        ),
        key(
            "postgres",
            "replica_url",
            format!("postgres://monitor:{SECRET}@127.0.0.1:{port}/erp"),
        ),
        key(
            "redis",
            "primary_url",
            format!("redis://monitor:{SECRET}@127.0.0.1:{port}"),
        ),
        key(
            "redis",
            "replica_url",
            format!("redis://monitor:{SECRET}@127.0.0.1:{port}"),
        ),
        key(
            "rabbitmq",
            "management_url",
            format!("http://monitor:{SECRET}@127.0.0.1:{port}"),
        ),
        key(
            "sql_queue",
            "url",
            format!("postgres://monitor:{SECRET}@127.0.0.1:{port}/erp"),
        ),
        key(
            "opensearch",
            "url",
            format!("http://monitor:{SECRET}@127.0.0.1:{port}"),
        ),
    ]
}

/// The other keys each kind needs.
fn other_keys(kind: &str, port: u16) -> String {
    match kind {
        "rabbitmq" => "queue = \"erp.orders\"\n".to_string(),
        "sql_queue" => "query = \"SELECT count(*), min(created_at) FROM outbox\"\n".to_string(),
        "opensearch" => "indices = [\"erp-orders\"]\n".to_string(),
        "sqs" => format!(
            "region = \"eu-west-1\"\nqueue_name = \"erp-outbox\"\nendpoint_url = \"http://127.0.0.1:{port}\"\ntimeout = \"2s\"\npoll_interval = \"1s\"\nstale_after = \"10s\"\n"
        ),
        _ => String::new(),
    }
}

/// The base configuration with its secrets given as `given` (values from
/// `values`, which may be malformed on purpose), and the environment the
/// `_env` form needs.
fn config(
    given: Given,
    keys: &[SecretKey],
    port: u16,
    dir: &Path,
) -> (String, Vec<(String, String)>) {
    let mut text = String::from(
        "[exporter]\ninstance = \"fuzz\"\n\n[defaults]\npoll_interval = \"500ms\"\ntimeout = \"1s\"\nstale_after = \"5s\"\n\n[[group]]\nname = \"erp\"\nrpo_budget = \"60s\"\n",
    );
    let mut env = Vec::new();
    for kind in [
        "postgres",
        "redis",
        "rabbitmq",
        "sql_queue",
        "opensearch",
        "sqs",
    ] {
        text.push_str(&format!(
            "\n[[{kind}]]\nname = \"fuzz-{}\"\ngroup = \"erp\"\nrpo_budget = \"5s\"\n",
            kind.replace('_', "-")
        ));
        for (i, secret) in keys.iter().enumerate().filter(|(_, k)| k.kind == kind) {
            let line = match given {
                Given::Inline => format!("{} = \"{}\"\n", secret.key, secret.value),
                Given::Env => {
                    let var = format!("RPO_FUZZ_SECRET_{i}");
                    env.push((var.clone(), secret.value.clone()));
                    format!("{}_env = \"{var}\"\n", secret.key)
                }
                Given::File => {
                    let path = write_file(dir, &format!("secret-{i}"), &secret.value);
                    format!("{}_file = \"{}\"\n", secret.key, path.display())
                }
            };
            text.push_str(&line);
        }
        text.push_str(&other_keys(kind, port));
    }
    (text, env)
}

/// A named way to break the file's text.
type Mutation = (&'static str, fn(&str) -> String);
/// Environment variables: (name, value).
type Env = Vec<(String, String)>;

/// Text mutations: each breaks the file in one way, around the first
/// secret-bearing line (`primary_url…` of the postgres target).
fn text_mutations() -> Vec<Mutation> {
    fn secret_line(text: &str) -> (usize, &str) {
        text.lines()
            .enumerate()
            .find(|(_, l)| l.starts_with("primary_url"))
            .expect("a primary_url line")
    }
    fn replace_line(text: &str, f: impl Fn(&str) -> String) -> String {
        let (n, _) = secret_line(text);
        text.lines()
            .enumerate()
            .map(|(i, l)| if i == n { f(l) } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
    fn value_of(line: &str) -> &str {
        line.split_once('=').unwrap().1.trim()
    }
    vec![
        ("typo'd common key", |t| {
            t.replacen("rpo_budget = \"5s\"", "rpo_budgt = \"5s\"", 1)
        }),
        ("typo'd secret key", |t| {
            t.replacen("primary_url", "primary_ur1", 1)
        }),
        ("duplicate secret key", |t| {
            replace_line(t, |l| format!("{l}\n{l}"))
        }),
        ("duplicate section key", |t| {
            t.replacen(
                "rpo_budget = \"60s\"",
                "rpo_budget = \"60s\"\nrpo_budget = \"60s\"",
                1,
            )
        }),
        ("closing quote missing", |t| {
            replace_line(t, |l| l.trim_end_matches('"').to_string())
        }),
        ("opening quote missing", |t| {
            replace_line(t, |l| l.replacen("= \"", "= ", 1))
        }),
        ("single quote opens", |t| {
            replace_line(t, |l| l.replacen("= \"", "= '", 1))
        }),
        ("value as array", |t| {
            replace_line(t, |l| {
                let (k, _) = l.split_once('=').unwrap();
                format!("{k}= [{}]", value_of(l))
            })
        }),
        ("value as inline table", |t| {
            replace_line(t, |l| {
                let (k, _) = l.split_once('=').unwrap();
                format!("{k}= {{ v = {} }}", value_of(l))
            })
        }),
        ("value as a bare word", |t| {
            replace_line(t, |l| l.replace('"', ""))
        }),
        ("secret in a boolean key", |t| {
            t.replacen(
                "rpo_budget = \"5s\"",
                &format!("rpo_budget = \"5s\"\nheartbeat = {{ interval = \"1s\", create_table = \"postgres://u:{SECRET}@h/db\" }}"),
                1,
            )
        }),
        ("secret in a duration key", |t| {
            t.replacen(
                "rpo_budget = \"5s\"",
                &format!("rpo_budget = \"5s\"\ntimeout = \"{SECRET}\""),
                1,
            )
        }),
        ("secret in a numeric-looking duration", |t| {
            t.replacen(
                "rpo_budget = \"5s\"",
                &format!("rpo_budget = \"5{SECRET}\""),
                1,
            )
        }),
        ("secret as an integer", |t| {
            replace_line(t, |l| {
                let (k, _) = l.split_once('=').unwrap();
                format!("{k}= 4711{}", "0".repeat(3))
            })
        }),
        ("unknown section", |t| {
            format!("{t}\n[web]\nlisten_adress = \"{SECRET}\"\n")
        }),
        ("listen address holds a secret", |t| {
            format!("[web]\nlisten_address = \"{SECRET}\"\n{t}")
        }),
    ]
}

/// Value mutations: each malformed in a way a driver complains about.
fn malformed_values(port: u16) -> Vec<(&'static str, Vec<SecretKey>)> {
    let with = |kind: &'static str, key: &'static str, value: String| {
        let mut keys = secret_keys(port);
        let k = keys
            .iter_mut()
            .find(|k| k.kind == kind && k.key == key)
            .unwrap();
        k.value = value;
        keys
    };
    vec![
        (
            "postgres URL with a bad port",
            with(
                "postgres",
                "primary_url",
                format!("postgres://monitor:{SECRET}@127.0.0.1:notaport/erp?password={TOKEN}"),
            ),
        ),
        (
            "postgres URL with a bad option",
            with(
                "postgres",
                "replica_url",
                format!("postgres://monitor:{SECRET}@127.0.0.1:{port}/erp?sslmode={TOKEN}"),
            ),
        ),
        (
            "redis URL with a bad query value",
            with(
                "redis",
                "primary_url",
                format!("redis://monitor:{SECRET}@127.0.0.1:{port}/?protocol={TOKEN}"),
            ),
        ),
        (
            "redis URL with a bad database",
            with(
                "redis",
                "replica_url",
                format!("redis://monitor:{SECRET}@127.0.0.1:{port}/{TOKEN}"),
            ),
        ),
        (
            "http URL with a bad port",
            with(
                "rabbitmq",
                "management_url",
                format!("http://monitor:{SECRET}@127.0.0.1:{TOKEN}"),
            ),
        ),
        (
            "http URL that is not http",
            with(
                "opensearch",
                "url",
                format!("ftp://monitor:{SECRET}@127.0.0.1:{port}/?token={TOKEN}"),
            ),
        ),
        (
            "sql_queue URL that is not a URL",
            with("sql_queue", "url", format!("monitor:{SECRET}@{TOKEN}")),
        ),
    ]
}

struct Run {
    code: Option<i32>,
    output: String,
}

/// Runs the binary at debug level with `env`; a `serve` is stopped with
/// SIGTERM after `serve_for` if it is still running.
async fn run(args: &[&str], env: &[(String, String)], serve_for: Option<Duration>) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .args(["--log.level", "debug"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("the binary runs");
    let pid = child.id().expect("a pid");
    if let Some(window) = serve_for {
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(window).await;
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        });
        let output = child.wait_with_output().await.unwrap();
        stopper.abort();
        return Run {
            code: output.status.code(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        };
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish in 30 s"))
        .unwrap();
    Run {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_whatever_fails() {
    // A closed port: every target that is contacted fails at once.
    let port = rpo_lab::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cases = 0;

    for given in [Given::Inline, Given::Env, Given::File] {
        let sub = dir.path().join(format!("{given:?}"));
        std::fs::create_dir_all(&sub).unwrap();
        let (good, good_env) = config(given, &secret_keys(port), port, &sub);

        // Broken files: exit 2 from every command, naming the file.
        let mut broken: Vec<(String, String, Env)> = Vec::new();
        for (name, mutate) in text_mutations() {
            let text = mutate(&good);
            assert_ne!(text, good, "{name} changed nothing");
            broken.push((name.to_string(), text, good_env.clone()));
        }
        for (i, (name, keys)) in malformed_values(port).into_iter().enumerate() {
            // Secret files of their own: the good ones stay good.
            let files = sub.join(format!("malformed-{i}"));
            std::fs::create_dir_all(&files).unwrap();
            let (text, env) = config(given, &keys, port, &files);
            broken.push((name.to_string(), text, env));
        }
        for (name, text, env) in &broken {
            let path = write_file(&sub, "broken.toml", text);
            let path = path.to_str().unwrap();
            for args in [
                vec!["validate", "--config", path],
                vec!["check", "--config", path],
                vec!["check", "--config", path, "--output", "json"],
                vec!["--config", path, "--web.listen-address", "127.0.0.1:0"],
            ] {
                let run = run(&args, env, None).await;
                let what = format!("{given:?} / {name} / {args:?}");
                assert_eq!(run.code, Some(2), "{what}: {}", run.output);
                assert!(run.output.contains("broken.toml"), "{what}: {}", run.output);
                assert_no_secret(&what, &run.output);
                cases += 1;
            }
        }

        // The good file: it validates, `check` polls (NO-GO: nothing
        // answers), `serve` polls at debug level for a while.
        let path = write_file(&sub, "good.toml", &good);
        let path = path.to_str().unwrap();
        let run1 = run(&["validate", "--config", path], &good_env, None).await;
        assert_eq!(run1.code, Some(0), "{given:?}: {}", run1.output);
        assert_no_secret(&format!("{given:?} validate"), &run1.output);
        for output in ["table", "json"] {
            let checked = run(
                &["check", "--config", path, "--output", output],
                &good_env,
                None,
            )
            .await;
            assert_eq!(checked.code, Some(1), "{given:?}: {}", checked.output);
            assert!(checked.output.contains("NO-GO"), "{}", checked.output);
            assert_no_secret(
                &format!("{given:?} check --output {output}"),
                &checked.output,
            );
        }
        let served = run(
            &[
                "--config",
                path,
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.format",
                "json",
            ],
            &good_env,
            Some(Duration::from_secs(3)),
        )
        .await;
        assert_eq!(served.code, Some(0), "{given:?}: {}", served.output);
        // It did poll and fail at debug level: the failures are in the log.
        assert!(served.output.contains("poll failed"), "{}", served.output);
        assert!(
            served.output.contains("\"level\":\"DEBUG\""),
            "{}",
            served.output
        );
        assert_no_secret(&format!("{given:?} serve"), &served.output);
        cases += 4;
    }

    // `check --from` and `check --prometheus` with credentials and a token
    // in the URL: nothing listening, and a server that is no exporter.
    let exporter = Exporter::start(&config_with("")).await;
    let listening = exporter.addr.port();
    for target_port in [port, listening] {
        let url = format!("http://ops:{SECRET}@127.0.0.1:{target_port}/?token={TOKEN}");
        for source in ["--from", "--prometheus"] {
            for output in ["table", "json"] {
                let run = run(&["check", source, &url, "--output", output], &[], None).await;
                let what = format!("check {source} (port {target_port}) --output {output}");
                assert_eq!(run.code, Some(1), "{what}: {}", run.output);
                // The URL is still named, without what it must not show.
                assert!(
                    run.output
                        .contains(&format!("127.0.0.1:{target_port}/?<redacted>")),
                    "{what}: {}",
                    run.output
                );
                assert_no_secret(&what, &run.output);
                cases += 1;
            }
        }
    }
    exporter.stop().await;
    assert!(cases > 250, "{cases} cases");
}
