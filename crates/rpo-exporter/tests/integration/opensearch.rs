//! The `opensearch` kind, contract-tested: no OpenSearch can run here, so
//! the follower (and leader) is `rpo_lab::opensearch`, a local
//! HTTP server serving the cross-cluster-replication answers as the
//! documentation and the plugin's source give them.
//! In step and behind, PAUSED, FAILED, REPLICATION NOT IN PROGRESS, an
//! index partly bootstrapped (shard by shard), discovery of followed
//! indices, the heartbeat, and the failures: 404, 401, the Security
//! plugin's 403, a malformed body, a server that hangs; and SigV4 for
//! Amazon OpenSearch Service, verified by the server.

use std::time::Duration;

use rpo_lab::opensearch::{
    IndexState, OpenSearchContract, Shard, SigV4Key, FOLLOWER_STATS_ACTION, STATUS_ACTION,
};

use rpo_lab::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_step_is_go_and_a_follower_left_behind_grows_exposure_until_it_catches_up() {
    let cluster = OpenSearchContract::start().unwrap();
    cluster.set_index("orders", IndexState::InStep { checkpoint: 19 });
    const T: &str = "erp-search";
    let exporter = Exporter::start(&config_with(&opensearch_target(
        T,
        &cluster.url(),
        "3s",
        r#"indices = ["orders"]"#,
    )))
    .await;
    exporter
        .wait_for_go("?group=erp", Duration::from_secs(10), "GO in step")
        .await;
    let metrics = exporter.metrics().await;
    assert!(metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap() < 1.5);
    assert_metric(&metrics, "rpo_backlog_operations", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(1.0));
    let index = [("target", T), ("index", "orders")];
    assert_metric(&metrics, "rpo_opensearch_index_syncing", &index, Some(1.0));
    assert_metric(
        &metrics,
        "rpo_opensearch_leader_checkpoint",
        &index,
        Some(19.0),
    );
    assert_metric(
        &metrics,
        "rpo_opensearch_index_status",
        &[("target", T), ("status", "syncing")],
        Some(1.0),
    );

    // The leader runs ahead and the follower stays behind what it had: the
    // recovery point freezes at the last in-step poll, never reads zero.
    cluster.set_index(
        "orders",
        IndexState::Behind {
            leader: 30,
            follower: 19,
        },
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = exporter.metrics().await;
    let exposure = metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap();
    assert!(
        exposure > 3.0,
        "exposure {exposure} must grow while the follower is behind"
    );
    assert_metric(&metrics, "rpo_backlog_operations", &labels(T), Some(11.0));
    assert_metric(
        &metrics,
        "rpo_opensearch_index_backlog_operations",
        &[("target", T), ("index", "orders")],
        Some(11.0),
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(reasons(&verdict).contains("exceeds budget 3s"), "{verdict}");

    // It reaches what the leader had at an earlier sample: dated by it.
    cluster.set_index(
        "orders",
        IndexState::Behind {
            leader: 40,
            follower: 30,
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = exporter.exposure(T).await;
    assert!(
        e < 2.5,
        "follower at 30 reached the samples of leader 30 taken ~1s ago: {e}"
    );
    cluster.set_index("orders", IndexState::InStep { checkpoint: 40 });
    exporter
        .wait_for_go("?group=erp", Duration::from_secs(10), "GO in step again")
        .await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_failed_and_not_replicated_indices_are_no_go_with_their_status() {
    let cluster = OpenSearchContract::start().unwrap();
    cluster.set_index("paused-ix", IndexState::Paused);
    cluster.set_index("failed-ix", IndexState::Failed);
    cluster.set_index("boot-ix", IndexState::Bootstrapping { percent: 42.0 });
    let url = cluster.url();
    let config = config_with(&format!(
        "{}{}{}{}",
        opensearch_target("paused", &url, "60s", r#"indices = ["paused-ix"]"#),
        opensearch_target("failed", &url, "60s", r#"indices = ["failed-ix"]"#),
        opensearch_target("stopped", &url, "60s", r#"indices = ["never-followed"]"#),
        opensearch_target("bootstrapping", &url, "60s", r#"indices = ["boot-ix"]"#),
    ));
    let exporter = Exporter::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (target, expected) in [
        ("paused", "replication unhealthy: paused-ix is PAUSED: User initiated"),
        (
            "failed",
            "replication unhealthy: failed-ix is FAILED: no permissions for [indices:data/read/plugins/replication/file_chunk]",
        ),
        ("stopped", "replication unhealthy: never-followed is not being replicated (REPLICATION NOT IN PROGRESS"),
        ("bootstrapping", "replication unhealthy: boot-ix is bootstrapping (initial copy 42% done)"),
    ] {
        let t = exporter.target_verdict(target).await;
        assert!(reasons(&t).contains(expected), "{target}: {t}");
        // Nothing proven: no recovery point, never a zero exposure.
        assert!(t["recovery_point"].is_null(), "{target}: {t}");
    }
    let metrics = exporter.metrics().await;
    assert_metric(
        &metrics,
        "rpo_opensearch_index_status",
        &[("target", "paused"), ("status", "paused")],
        Some(1.0),
    );
    assert_metric(
        &metrics,
        "rpo_opensearch_bootstrap_progress_ratio",
        &labels("bootstrapping"),
        Some(0.42),
    );
    assert_metric(&metrics, "rpo_exposure_seconds", &labels("paused"), None);
    // These are answers, not failures: the polls succeeded.
    assert_metric(&metrics, "rpo_probe_success", &labels("paused"), Some(1.0));
    let (status, _) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_unauthorized_malformed_and_hanging_fail_only_their_own_target() {
    let cluster = OpenSearchContract::start().unwrap();
    cluster.set_index("orders", IndexState::InStep { checkpoint: 7 });
    cluster.set_index("gone", IndexState::NotFound);
    cluster.set_index("garbled", IndexState::Malformed);
    let secured = OpenSearchContract::start().unwrap();
    secured.require_basic_auth("monitor", "right-pw");
    secured.set_index("orders", IndexState::InStep { checkpoint: 7 });
    let hung = OpenSearchContract::start().unwrap();
    hung.set_hang(true);
    let dir = tempfile::tempdir().unwrap();
    let right = write_file(dir.path(), "right", "right-pw");
    let wrong = write_file(dir.path(), "wrong", "hunter2");
    let creds = |file: &std::path::Path| {
        format!(
            "indices = [\"orders\"]\nusername = \"monitor\"\npassword_file = \"{}\"",
            file.display()
        )
    };
    let config = config_with(&format!(
        "{}{}{}{}{}{}",
        opensearch_target("healthy", &cluster.url(), "60s", r#"indices = ["orders"]"#),
        opensearch_target("authorized", &secured.url(), "60s", &creds(&right)),
        opensearch_target("not-found", &cluster.url(), "60s", r#"indices = ["gone"]"#),
        opensearch_target("unauthorized", &secured.url(), "60s", &creds(&wrong)),
        opensearch_target(
            "malformed",
            &cluster.url(),
            "60s",
            r#"indices = ["garbled"]"#
        ),
        opensearch_target("hanging", &hung.url(), "60s", r#"indices = ["orders"]"#),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "each failure on its own target",
            &[
                ("not-found", "query"),
                ("unauthorized", "auth"),
                ("malformed", "parse"),
                ("hanging", "timeout"),
            ],
        )
        .await;
    let verdict = |t: &'static str| {
        let exporter = &exporter;
        async move { exporter.target_verdict(t).await.to_string() }
    };
    let not_found = verdict("not-found").await;
    assert!(
        not_found
            .contains("index gone: HTTP 404 (index_not_found_exception: no such index [gone])"),
        "{not_found}"
    );
    let unauthorized = verdict("unauthorized").await;
    assert!(
        unauthorized.contains("refused the credentials (HTTP 401)"),
        "{unauthorized}"
    );
    assert!(!unauthorized.contains("hunter2"));
    assert!(verdict("malformed")
        .await
        .contains("parse: follower cluster"));
    assert!(verdict("hanging").await.contains("timeout"));
    let metrics = exporter.metrics().await;
    assert!(!metrics.contains("hunter2") && !metrics.contains("right-pw"));
    for ok in ["healthy", "authorized"] {
        assert_metric(&metrics, "rpo_target_ready", &labels(ok), Some(1.0));
    }
    for bad in ["not-found", "unauthorized", "malformed", "hanging"] {
        assert_metric(&metrics, "rpo_target_ready", &labels(bad), Some(0.0));
        assert_metric(&metrics, "rpo_probe_success", &labels(bad), Some(0.0));
    }
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_indices_every_followed_index_is_found_and_one_that_stops_is_not_forgotten() {
    let cluster = OpenSearchContract::start().unwrap();
    cluster.set_index("orders", IndexState::InStep { checkpoint: 3 });
    cluster.set_index("invoices", IndexState::InStep { checkpoint: 9 });
    const T: &str = "all-followed";
    let exporter = Exporter::start(&config_with(&opensearch_target(
        T,
        &cluster.url(),
        "60s",
        "",
    )))
    .await;
    exporter
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(10),
            "GO with both indices in step",
        )
        .await;
    let metrics = exporter.metrics().await;
    for index in ["orders", "invoices"] {
        assert_metric(
            &metrics,
            "rpo_opensearch_index_syncing",
            &[("target", T), ("index", index)],
            Some(1.0),
        );
    }
    assert_metric(
        &metrics,
        "rpo_opensearch_follower_indices",
        &[("target", T), ("status", "syncing")],
        Some(2.0),
    );

    // Paused, it drops out of follower_stats' index list; still reported.
    cluster.set_index("invoices", IndexState::Paused);
    let t = exporter
        .wait_for_target(T, Duration::from_secs(10), "the paused index named", |t| {
            reasons(t).contains("invoices is PAUSED")
        })
        .await
        .to_string();
    assert!(!t.contains("orders is"), "{t}");
    assert_eq!(
        exporter
            .metric(
                "rpo_opensearch_follower_indices",
                &[("target", T), ("status", "paused")]
            )
            .await,
        Some(1.0)
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_dates_a_follower_that_is_never_in_step() {
    let cluster = OpenSearchContract::start().unwrap();
    // Written all the time: the checkpoints never meet at a poll instant.
    cluster.set_index(
        "rpo-heartbeat",
        IndexState::Behind {
            leader: 100,
            follower: 99,
        },
    );
    cluster.route_heartbeats("rpo-heartbeat-leader", "rpo-heartbeat");
    const T: &str = "erp-search";
    let exporter = Exporter::start(&config_with(&opensearch_target(
        T,
        &cluster.url(),
        "3s",
        &format!(
            "leader_url = \"{}\"\nheartbeat = {{ interval = \"500ms\", leader_index = \"rpo-heartbeat-leader\", follower_index = \"rpo-heartbeat\" }}",
            cluster.url()
        ),
    )))
    .await;
    exporter
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(10),
            "GO on heartbeat evidence",
        )
        .await;
    let metrics = exporter.metrics().await;
    let (written, seen) = heartbeat_written_and_seen(&metrics, T);
    assert!(
        written - seen < 1.5,
        "heartbeat written {written}, seen on the follower {seen}"
    );
    assert!(metric_value(&metrics, "rpo_exposure_seconds", &labels(T)).unwrap() < 1.5);
    let doc = cluster
        .document("rpo-heartbeat-leader", "test")
        .expect("heartbeat document on the leader");
    assert!(doc.contains("\"instance\":\"test\""), "{doc}");

    // Replication of the heartbeat stops: the exposure grows past the budget.
    cluster.set_replicating_heartbeats(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let exposure = exporter.exposure(T).await;
    assert!(
        exposure > 4.0,
        "exposure {exposure} must grow once heartbeats stop arriving"
    );
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503);
    assert!(reasons(&verdict).contains("exceeds budget 3s"), "{verdict}");
    exporter.stop().await;
}

/// The plugin reports a running replication's status from its first shard
/// only: shard 0 in step while shard 1 still copies reads SYNCING. Judged
/// shard by shard (verbose status), the index is bootstrapping: NO-GO,
/// nothing proven, and GO only once every shard syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_bootstrapped_index_is_no_go_and_not_caught_up() {
    let cluster = OpenSearchContract::start().unwrap();
    cluster.set_index(
        "orders",
        IndexState::Shards(vec![
            Shard::Syncing {
                leader: 19,
                follower: 19,
            },
            Shard::Bootstrapping { percent: 40.0 },
        ]),
    );
    const T: &str = "erp-search";
    let exporter = Exporter::start(&config_with(&opensearch_target(
        T,
        &cluster.url(),
        "60s",
        r#"indices = ["orders"]"#,
    )))
    .await;
    let t = exporter
        .wait_for_target(T, Duration::from_secs(10), "the copying shard named", |t| {
            reasons(t).contains("orders is bootstrapping")
        })
        .await;
    assert!(
        reasons(&t).contains(
            "orders is bootstrapping (initial copy 40% done, 1 of 2 shards still copying); not caught up although the plugin reports SYNCING"
        ),
        "{t}"
    );
    assert!(t["recovery_point"].is_null(), "nothing proven: {t}");
    assert_eq!(t["ready"], false, "{t}");
    let metrics = exporter.metrics().await;
    let index = [("target", T), ("index", "orders")];
    assert_metric(&metrics, "rpo_opensearch_index_syncing", &index, Some(0.0));
    assert_metric(
        &metrics,
        "rpo_opensearch_index_shards",
        &[
            ("target", T),
            ("index", "orders"),
            ("state", "bootstrapping"),
        ],
        Some(1.0),
    );
    assert_metric(
        &metrics,
        "rpo_opensearch_index_shards",
        &[("target", T), ("index", "orders"), ("state", "syncing")],
        Some(1.0),
    );
    assert_metric(
        &metrics,
        "rpo_opensearch_bootstrap_progress_ratio",
        &index,
        Some(0.4),
    );
    assert_metric(&metrics, "rpo_replication_healthy", &labels(T), Some(0.0));
    assert_metric(&metrics, "rpo_exposure_seconds", &labels(T), None);
    let (status, verdict) = exporter.verdict("?group=erp").await;
    assert_eq!(status, 503, "{verdict}");

    // Shard 1 finishes its copy and catches up: GO.
    cluster.set_index(
        "orders",
        IndexState::Shards(vec![
            Shard::Syncing {
                leader: 19,
                follower: 19,
            },
            Shard::Syncing {
                leader: 23,
                follower: 23,
            },
        ]),
    );
    exporter
        .wait_for_go(
            "?group=erp",
            Duration::from_secs(10),
            "GO with every shard syncing",
        )
        .await;
    assert_metric(
        &exporter.metrics().await,
        "rpo_opensearch_leader_checkpoint",
        &index,
        Some(42.0),
    );
    exporter.stop().await;
}

/// With the Security plugin, a user without the replication plugin's
/// actions gets a 403 naming the action; the reason names it and says where
/// to grant it (an index permission), never a permission that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_names_the_missing_action_and_where_to_grant_it() {
    let status_denied = OpenSearchContract::start().unwrap();
    status_denied.set_index("orders", IndexState::InStep { checkpoint: 3 });
    status_denied.deny_action(STATUS_ACTION);
    let stats_denied = OpenSearchContract::start().unwrap();
    stats_denied.set_index("orders", IndexState::InStep { checkpoint: 3 });
    stats_denied.deny_action(FOLLOWER_STATS_ACTION);
    let config = config_with(&format!(
        "{}{}",
        opensearch_target(
            "no-status",
            &status_denied.url(),
            "60s",
            r#"indices = ["orders"]"#
        ),
        opensearch_target("no-stats", &stats_denied.url(), "60s", ""),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "both refused",
            &[("no-status", "auth"), ("no-stats", "auth")],
        )
        .await;
    let no_status = exporter.target_verdict("no-status").await.to_string();
    assert!(
        no_status.contains(
            "no permissions for [indices:admin/plugins/replication/index/status_check]); grant `indices:admin/plugins/replication/index/status_check` as an index permission on the follower indices"
        ),
        "{no_status}"
    );
    assert!(
        !no_status.contains("cluster:admin/plugins/replication"),
        "{no_status}"
    );
    let no_stats = exporter.target_verdict("no-stats").await.to_string();
    assert!(
        no_stats.contains(
            "grant `indices:admin/plugins/replication/follower/stats` as an index permission on the index pattern `*`"
        ),
        "{no_stats}"
    );
    for t in ["no-status", "no-stats"] {
        assert_metric(
            &exporter.metrics().await,
            "rpo_target_ready",
            &labels(t),
            Some(0.0),
        );
    }
    exporter.stop().await;
}

/// An Amazon OpenSearch Service domain with IAM access: the contract
/// server recomputes every request's SigV4 signature (its own
/// implementation, checked against AWS's test suite) with the test
/// credentials. Signed status reads and the signed heartbeat write (a body)
/// are accepted; a wrong secret, a wrong region and no signature at all are
/// refused with AWS's 403, each named in its target's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_signed_requests_are_accepted_and_bad_or_missing_signatures_refused() {
    rpo_lab::support::aws::use_test_credentials();
    let key = |secret: &str| SigV4Key {
        access_key_id: "testing".into(),
        secret_access_key: secret.into(),
        region: "eu-west-1".into(),
        service: "es".into(),
    };
    let domain = OpenSearchContract::start().unwrap();
    domain.require_sigv4(key("testing"));
    domain.set_index("orders", IndexState::InStep { checkpoint: 5 });
    domain.set_index(
        "rpo-heartbeat",
        IndexState::Behind {
            leader: 100,
            follower: 99,
        },
    );
    domain.route_heartbeats("rpo-heartbeat-leader", "rpo-heartbeat");
    let other_secret = OpenSearchContract::start().unwrap();
    other_secret.require_sigv4(key("not-the-secret-we-have"));
    other_secret.set_index("orders", IndexState::InStep { checkpoint: 5 });
    let url = domain.url();
    let signed =
        |region: &str| format!("aws_sigv4 = {{ region = \"{region}\", service = \"es\" }}");
    let config = config_with(&format!(
        "{}{}{}{}",
        opensearch_target(
            "signed",
            &url,
            "3s",
            &format!(
                "indices = [\"orders\"]\nleader_url = \"{url}\"\nheartbeat = {{ interval = \"500ms\", leader_index = \"rpo-heartbeat-leader\", follower_index = \"rpo-heartbeat\" }}\n{}",
                signed("eu-west-1")
            ),
        ),
        opensearch_target(
            "wrong-secret",
            &other_secret.url(),
            "60s",
            &format!("indices = [\"orders\"]\n{}", signed("eu-west-1")),
        ),
        opensearch_target(
            "wrong-region",
            &url,
            "60s",
            &format!("indices = [\"orders\"]\n{}", signed("eu-central-1")),
        ),
        opensearch_target("unsigned", &url, "60s", r#"indices = ["orders"]"#),
    ));
    let exporter = Exporter::start(&config).await;
    exporter
        .wait_for_failures(
            Duration::from_secs(10),
            "each bad signature refused",
            &[
                ("wrong-secret", "auth"),
                ("wrong-region", "auth"),
                ("unsigned", "auth"),
            ],
        )
        .await;
    exporter
        .wait_for_target_ready("signed", Duration::from_secs(10), "the signed target GO")
        .await;
    let metrics = exporter.metrics().await;
    assert_metric(&metrics, "rpo_probe_success", &labels("signed"), Some(1.0));
    let (written, seen) = heartbeat_written_and_seen(&metrics, "signed");
    assert!(
        written - seen < 1.5,
        "signed heartbeat written {written}, seen {seen}"
    );
    let doc = domain
        .document("rpo-heartbeat-leader", "test")
        .expect("the signed heartbeat write was accepted");
    assert!(doc.contains("\"instance\":\"test\""), "{doc}");
    for (target, expected) in [
        (
            "wrong-secret",
            "HTTP 403: The request signature we calculated does not match the signature you provided",
        ),
        (
            "wrong-region",
            "HTTP 403: Credential should be scoped to a valid region",
        ),
        (
            "unsigned",
            "HTTP 403: User: anonymous is not authorized to perform: es:ESHttpGet",
        ),
    ] {
        let t = exporter.target_verdict(target).await.to_string();
        assert!(t.contains(expected), "{target}: {t}");
        assert_metric(&metrics, "rpo_target_ready", &labels(target), Some(0.0));
    }
    assert!(!metrics.contains("testing"), "no credential in the metrics");
    exporter.stop().await;
}
