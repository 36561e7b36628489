//! Exporter config text for tests: a short-interval frame around one
//! `[[kind]]` block per target, all in group `erp`.

use std::path::Path;

use rpo_exporter::config::Config;

use crate::mariadb::MariadbPair;
use crate::redis::RedisPair;
use crate::PostgresPair;

/// Parses and validates `text` as the exporter would (named `test.toml` in
/// its messages); panics with the problem if it is not valid.
pub fn parse_config(text: &str) -> Config {
    Config::from_toml(text, Path::new("test.toml")).expect("test config is valid")
}

/// A config with short intervals (poll 500 ms, timeout 1 s, stale after
/// 5 s) and group `erp` (budget 60 s) around the given target blocks.
pub fn config_with(targets: &str) -> String {
    format!(
        r#"
[exporter]
instance = "test"

[defaults]
poll_interval = "500ms"
timeout = "1s"
stale_after = "5s"

[[group]]
name = "erp"
rpo_budget = "60s"
{targets}"#
    )
}

/// One `[[kind]]` block in group `erp`; `keys` are appended verbatim.
pub fn target_block(kind: &str, name: &str, budget: &str, keys: &str) -> String {
    format!(
        r#"
[[{kind}]]
name = "{name}"
group = "erp"
rpo_budget = "{budget}"
{keys}
"#
    )
}

/// One `[[postgres]]` block for a lab pair, with a 500 ms heartbeat if asked.
pub fn postgres_target(name: &str, pair: &PostgresPair, budget: &str, heartbeat: bool) -> String {
    let heartbeat = if heartbeat {
        "heartbeat = { interval = \"500ms\", table = \"rpo_heartbeat\" }"
    } else {
        ""
    };
    target_block(
        "postgres",
        name,
        budget,
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\n{heartbeat}",
            pair.primary_url(),
            pair.replica_url()
        ),
    )
}

/// One `[[mysql]]` block for a lab MariaDB pair, with a 500 ms heartbeat
/// (table `rpo_heartbeat` in the URLs' database `rpo`) if asked.
pub fn mysql_target(name: &str, pair: &MariadbPair, budget: &str, heartbeat: bool) -> String {
    let heartbeat = if heartbeat {
        "heartbeat = { interval = \"500ms\", table = \"rpo_heartbeat\" }"
    } else {
        ""
    };
    target_block(
        "mysql",
        name,
        budget,
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\n{heartbeat}",
            pair.primary_url(),
            pair.replica_url()
        ),
    )
}

/// One `[[redis]]` block for a lab pair, with a 500 ms heartbeat if asked;
/// `extra` is appended verbatim.
pub fn redis_target(
    name: &str,
    pair: &RedisPair,
    budget: &str,
    heartbeat: bool,
    extra: &str,
) -> String {
    let heartbeat = if heartbeat {
        "heartbeat = { interval = \"500ms\", key = \"rpo:heartbeat\" }"
    } else {
        ""
    };
    target_block(
        "redis",
        name,
        budget,
        &format!(
            "primary_url = \"{}\"\nreplica_url = \"{}\"\n{heartbeat}\n{extra}",
            pair.primary_url(),
            pair.replica_url()
        ),
    )
}

/// One `[[redis_stream]]` block; `extra` is appended verbatim.
pub fn redis_stream_target(
    name: &str,
    url: &str,
    stream: &str,
    consumer_group: &str,
    budget: &str,
    extra: &str,
) -> String {
    target_block(
        "redis_stream",
        name,
        budget,
        &format!("url = \"{url}\"\nstream = \"{stream}\"\nconsumer_group = \"{consumer_group}\"\n{extra}"),
    )
}

/// One `[[rabbitmq]]` block for a queue on a lab node, as the guest user,
/// with a 2 s statistics delay; `extra` is appended verbatim.
pub fn rabbitmq_target(
    name: &str,
    management_port: u16,
    queue: &str,
    budget: &str,
    extra: &str,
) -> String {
    target_block(
        "rabbitmq",
        name,
        budget,
        &format!(
            "management_url = \"http://guest:guest@127.0.0.1:{management_port}\"\nqueue = \"{queue}\"\nstatistics_delay = \"2s\"\n{extra}"
        ),
    )
}

/// One `[[sql_queue]]` block.
pub fn sql_queue_target(name: &str, url: &str, budget: &str, query: &str) -> String {
    target_block(
        "sql_queue",
        name,
        budget,
        &format!("url = \"{url}\"\nquery = \"{query}\""),
    )
}

/// One `[[opensearch]]` block; `extra` is appended verbatim.
pub fn opensearch_target(name: &str, url: &str, budget: &str, extra: &str) -> String {
    target_block(
        "opensearch",
        name,
        budget,
        &format!("url = \"{url}\"\n{extra}"),
    )
}

/// The environment variables a config's `*_env` keys name, in order.
pub fn env_vars_named(config_text: &str) -> Vec<String> {
    config_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| key.trim().ends_with("_env"))
        .map(|(_, value)| {
            value
                .split('#')
                .next()
                .unwrap()
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .collect()
}

/// A well-formed stand-in for the secret an example config names: the
/// variable's name says what kind of value it holds.
pub fn fake_secret_for(var: &str) -> &'static str {
    if var.contains("PASSWORD") || var.contains("TOKEN") {
        "not-a-real-secret"
    } else if var.contains("REDIS") {
        "redis://127.0.0.1:1"
    } else if var.contains("MYSQL") {
        "mysql://m@127.0.0.1:1/rpo"
    } else if var.contains("RABBIT") || var.contains("OPENSEARCH") || var.contains("HTTP") {
        "http://127.0.0.1:1"
    } else {
        "postgres://m@127.0.0.1:1/x"
    }
}
