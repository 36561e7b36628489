//! The whole lab in one: a real instance of every kind that can run here,
//! each with a little live activity, and the exporter config that watches
//! them all as group `erp`. The demo (`rpo-lab`) and the end-to-end test
//! both start this, so what the README shows is what the tests prove.
//!
//! - Postgres primary + streaming replica, an ERP writing orders, and an
//!   integration outbox table processed by a worker (`sql_queue`);
//! - MariaDB primary + binlog replica with ledger entries written (`mysql`);
//! - Redis primary + replica with a writer (`redis`), and a Redis server
//!   with a stream whose consumer group acknowledges entries (`redis_stream`);
//! - an isolated RabbitMQ node with a queue fed and drained (`rabbitmq`);
//! - the OpenSearch contract server with a followed index in step
//!   (`opensearch`: no real OpenSearch can run here);
//! - the moto AWS emulator seeded with RDS, Aurora, S3 and SQS (when moto
//!   can be installed; otherwise the AWS kinds are left out, said on stderr).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::mariadb::MariadbPair;
use super::moto::{AwsDemo, MotoServer};
use super::opensearch::{IndexState, OpenSearchContract};
use super::rabbitmq::RabbitNode;
use super::redis::{RedisPair, RedisServer};
use super::{LabError, LabResult, PostgresPair};

/// Every component, running, with its activity tasks.
pub struct FullLab {
    pub postgres: Arc<PostgresPair>,
    pub mariadb: Arc<MariadbPair>,
    pub redis: Arc<RedisPair>,
    pub stream_server: Arc<RedisServer>,
    pub rabbit: Arc<RabbitNode>,
    pub opensearch: OpenSearchContract,
    pub aws: Option<(MotoServer, AwsDemo)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FullLab {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn blocking_error(e: tokio::task::JoinError) -> LabError {
    LabError::Command {
        command: "lab start".to_string(),
        stderr: e.to_string(),
    }
}

impl FullLab {
    /// Starts everything in parallel (RabbitMQ takes ~15 s, the rest ~3 s).
    pub async fn start(instance: &str) -> LabResult<FullLab> {
        let postgres = tokio::task::spawn_blocking(PostgresPair::start);
        let mariadb = tokio::task::spawn_blocking(MariadbPair::start);
        let redis = tokio::task::spawn_blocking(RedisPair::start);
        let stream_server = tokio::task::spawn_blocking(RedisServer::start);
        let rabbit = tokio::task::spawn_blocking(RabbitNode::start);
        let aws = super::moto::start_demo("erp", instance);
        let opensearch = OpenSearchContract::start().map_err(|e| LabError::Command {
            command: "opensearch contract server".to_string(),
            stderr: e.to_string(),
        })?;
        opensearch.set_index("erp-orders", IndexState::InStep { checkpoint: 4711 });
        let aws = aws.await;
        let postgres = Arc::new(postgres.await.map_err(blocking_error)??);
        let mariadb = Arc::new(mariadb.await.map_err(blocking_error)??);
        let redis = Arc::new(redis.await.map_err(blocking_error)??);
        let stream_server = Arc::new(stream_server.await.map_err(blocking_error)??);
        let rabbit = Arc::new(rabbit.await.map_err(blocking_error)??);

        postgres.primary_sql(
            "CREATE TABLE demo_orders (id bigserial PRIMARY KEY, placed_at timestamptz DEFAULT now());
             CREATE TABLE integration_outbox (id bigserial PRIMARY KEY, payload text,
                 created_at timestamptz NOT NULL DEFAULT now(), processed_at timestamptz)",
        )?;
        stream_server.command(&["XGROUP", "CREATE", "erp-orders", "billing", "$", "MKSTREAM"])?;
        rabbit.declare_queue("erp.orders")?;

        let mut lab = FullLab {
            postgres,
            mariadb,
            redis,
            stream_server,
            rabbit,
            opensearch,
            aws,
            tasks: Vec::new(),
        };
        lab.start_activity().await;
        Ok(lab)
    }

    /// The business system at work: writes, messages, and their processing.
    async fn start_activity(&mut self) {
        // Orders every 200 ms; outbox rows every 500 ms, processed after ~1 s.
        let url = self.postgres.primary_url();
        self.tasks.push(tokio::spawn(async move {
            let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            for tick in 0u64.. {
                let _ = client.execute("INSERT INTO demo_orders DEFAULT VALUES", &[]).await;
                if tick % 5 == 0 {
                    let _ = client
                        .batch_execute(
                            "INSERT INTO integration_outbox (payload) VALUES ('invoice');
                             UPDATE integration_outbox SET processed_at = now()
                              WHERE processed_at IS NULL AND created_at < now() - interval '1 second'",
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        // Ledger entries written to MariaDB every 200 ms.
        let url = self.mariadb.primary_url();
        self.tasks.push(tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let Ok(mut conn) = mysql_async::Conn::from_url(url).await else {
                return;
            };
            let _ = conn
                .query_drop("CREATE TABLE IF NOT EXISTS ledger_entries (id BIGINT AUTO_INCREMENT PRIMARY KEY, amount_cents BIGINT NOT NULL, booked_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
                .await;
            for tick in 0u64.. {
                let _ = conn
                    .exec_drop(
                        "INSERT INTO ledger_entries (amount_cents) VALUES (?)",
                        (tick % 10_000,),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        // Sessions written to Redis every 200 ms.
        if let Ok(client) = self.redis.primary_client() {
            self.tasks.push(tokio::spawn(async move {
                let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                for n in 0u64.. {
                    let _: Result<(), _> = redis::cmd("SET")
                        .arg(format!("session:{}", n % 100))
                        .arg(n)
                        .query_async(&mut connection)
                        .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        // A stream fed every 300 ms and consumed (acknowledged) every second.
        if let Ok(client) = self.stream_server.client() {
            self.tasks.push(tokio::spawn(async move {
                let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                for tick in 0u64.. {
                    let _: Result<String, _> = redis::cmd("XADD")
                        .arg("erp-orders")
                        .arg("*")
                        .arg("order")
                        .arg(tick)
                        .query_async(&mut connection)
                        .await;
                    if tick % 3 == 0 {
                        let read: Result<redis::Value, _> = redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg("billing")
                            .arg("worker-1")
                            .arg("COUNT")
                            .arg(100)
                            .arg("STREAMS")
                            .arg("erp-orders")
                            .arg(">")
                            .query_async(&mut connection)
                            .await;
                        for id in stream_ids(&read.unwrap_or(redis::Value::Nil)) {
                            let _: Result<i64, _> = redis::cmd("XACK")
                                .arg("erp-orders")
                                .arg("billing")
                                .arg(id)
                                .query_async(&mut connection)
                                .await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }));
        }
        // Messages published every second with a timestamp, drained every 3 s.
        let rabbit = self.rabbit.clone();
        self.tasks.push(tokio::spawn(async move {
            for tick in 0u64.. {
                let node = rabbit.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = node.publish("erp.orders", 1, Some(SystemTime::now()));
                    if tick % 3 == 2 {
                        let _ = node.consume("erp.orders", 100);
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    /// The exporter's targets for every component, all in group `erp`.
    pub fn config_blocks(&self) -> String {
        let pg = &self.postgres;
        let mut blocks = format!(
            r#"
[[postgres]]
name = "erp-db"
group = "erp"
rpo_budget = "5s"
primary_url = "{pg_primary}"
replica_url = "{pg_replica}"
heartbeat = {{ interval = "1s", table = "rpo_heartbeat" }}

[[mysql]]
name = "erp-ledger"
group = "erp"
rpo_budget = "5s"
primary_url = "{mysql_primary}"
replica_url = "{mysql_replica}"
heartbeat = {{ interval = "1s", table = "rpo_heartbeat" }}

[[sql_queue]]
name = "erp-integration-outbox"
group = "erp"
rpo_budget = "30s"
url = "{pg_primary}"
query = "SELECT count(*), min(created_at) FROM integration_outbox WHERE processed_at IS NULL"

[[redis]]
name = "erp-sessions"
group = "erp"
rpo_budget = "60s"
primary_url = "{redis_primary}"
replica_url = "{redis_replica}"
heartbeat = {{ interval = "1s", key = "rpo:heartbeat" }}

[[redis_stream]]
name = "erp-order-events"
group = "erp"
rpo_budget = "30s"
url = "{stream_url}"
stream = "erp-orders"
consumer_group = "billing"

[[rabbitmq]]
name = "erp-orders-queue"
group = "erp"
rpo_budget = "60s"
management_url = "{rabbit_url}"
username = "{rabbit_user}"
password = "{rabbit_password}"
queue = "erp.orders"
require_consumers = false

[[opensearch]]
name = "erp-search"
group = "erp"
rpo_budget = "60s"
url = "{opensearch_url}"
indices = ["erp-orders"]
"#,
            pg_primary = pg.primary_url(),
            pg_replica = pg.replica_url(),
            mysql_primary = self.mariadb.primary_url(),
            mysql_replica = self.mariadb.replica_url(),
            redis_primary = self.redis.primary_url(),
            redis_replica = self.redis.replica_url(),
            stream_url = self.stream_server.url(),
            rabbit_url = self.rabbit.management_url(),
            rabbit_user = super::rabbitmq::USER,
            rabbit_password = super::rabbitmq::PASSWORD,
            opensearch_url = self.opensearch.url(),
        );
        if let Some((_, aws)) = &self.aws {
            blocks.push_str(&aws.config_blocks);
        }
        blocks
    }
}

/// Entry ids in an XREADGROUP reply: [[stream, [[id, fields], ...]], ...].
fn stream_ids(reply: &redis::Value) -> Vec<String> {
    let mut ids = Vec::new();
    if let redis::Value::Array(streams) = reply {
        for stream in streams {
            if let redis::Value::Array(parts) = stream {
                if let Some(redis::Value::Array(entries)) = parts.get(1) {
                    for entry in entries {
                        if let redis::Value::Array(fields) = entry {
                            if let Some(redis::Value::BulkString(id)) = fields.first() {
                                ids.push(String::from_utf8_lossy(id).into_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    ids
}
