//! The lab's servers, started off the async threads, and writers that keep
//! a source busy.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use crate::mariadb::{MariadbOptions, MariadbPair};
use crate::rabbitmq::RabbitNode;
use crate::redis::{RedisOptions, RedisPair, RedisServer};
use crate::{PostgresOptions, PostgresPair};

/// Runs a blocking `start` on the blocking pool; panics with `what` and
/// the error if it fails.
pub async fn start_blocking<T, E>(
    what: &str,
    start: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> T
where
    T: Send + 'static,
    E: Display + Send + 'static,
{
    tokio::task::spawn_blocking(start)
        .await
        .expect("the start task ran")
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A Postgres primary with a streaming replica.
pub async fn start_pair() -> Arc<PostgresPair> {
    Arc::new(
        start_blocking(
            "lab pair starts (run scripts/install-deps.sh if PostgreSQL is missing)",
            PostgresPair::start,
        )
        .await,
    )
}

/// A MariaDB primary with a binlog replica.
pub async fn start_mariadb_pair() -> MariadbPair {
    start_mariadb_pair_with(MariadbOptions::default()).await
}

/// A MariaDB primary with a binlog replica, set up as `options` say.
pub async fn start_mariadb_pair_with(options: MariadbOptions) -> MariadbPair {
    start_blocking(
        "MariaDB lab pair starts (run scripts/install-deps.sh if mariadbd is missing)",
        move || MariadbPair::start_with(options),
    )
    .await
}

/// A Postgres pair set up with `options` (e.g. servers with a fake clock).
pub async fn start_pair_with(options: PostgresOptions) -> Arc<PostgresPair> {
    Arc::new(
        start_blocking(
            "lab pair starts (run scripts/install-deps.sh if PostgreSQL or libfaketime is missing)",
            move || PostgresPair::start_with(options),
        )
        .await,
    )
}

/// A Redis primary with a replica.
pub async fn start_redis_pair(options: RedisOptions) -> Arc<RedisPair> {
    Arc::new(
        start_blocking(
            "redis lab pair starts (run scripts/install-deps.sh if redis-server is missing)",
            move || RedisPair::start_with(options),
        )
        .await,
    )
}

/// A single Redis server.
pub async fn start_redis_server(options: RedisOptions) -> RedisServer {
    start_blocking(
        "redis lab server starts (run scripts/install-deps.sh if redis-server is missing)",
        move || RedisServer::start_with(options),
    )
    .await
}

/// The RabbitMQ node the tests of this process share (see [`RabbitNode::shared`]).
pub async fn shared_rabbit() -> &'static RabbitNode {
    tokio::task::spawn_blocking(RabbitNode::shared)
        .await
        .expect("the shared RabbitMQ lab node starts")
}

/// A RabbitMQ node of the caller's own, to stop.
pub async fn start_rabbit() -> RabbitNode {
    start_blocking("a RabbitMQ lab node starts", RabbitNode::start).await
}

/// A task that repeats until dropped.
struct Repeating(tokio::task::JoinHandle<()>);

impl Drop for Repeating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A writer that inserts a 200-byte row on a Postgres primary every
/// `every` until dropped.
pub struct Writer {
    _task: Repeating,
}

impl Writer {
    pub async fn start(primary_url: &str, every: Duration) -> Writer {
        let (client, connection) = tokio_postgres::connect(primary_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS test_writes (id bigserial PRIMARY KEY, payload text, at timestamptz DEFAULT now())")
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let _ = client
                    .execute(
                        "INSERT INTO test_writes (payload) VALUES (repeat('x', 200))",
                        &[],
                    )
                    .await;
                tokio::time::sleep(every).await;
            }
        });
        Writer {
            _task: Repeating(task),
        }
    }
}

/// A writer that inserts a 200-byte row on a MySQL/MariaDB primary every
/// `every` until dropped (table `test_writes` in the URL's database).
pub struct MysqlWriter {
    _task: Repeating,
}

impl MysqlWriter {
    pub async fn start(primary_url: &str, every: Duration) -> MysqlWriter {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::from_url(primary_url).await.unwrap();
        conn.query_drop("CREATE TABLE IF NOT EXISTS test_writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload TEXT, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let _ = conn
                    .query_drop("INSERT INTO test_writes (payload) VALUES (REPEAT('x', 200))")
                    .await;
                tokio::time::sleep(every).await;
            }
        });
        MysqlWriter {
            _task: Repeating(task),
        }
    }
}

/// A writer that sets a 200-byte key (one of 100) on a Redis primary every
/// `every` until dropped.
pub struct RedisWriter {
    _task: Repeating,
}

impl RedisWriter {
    pub async fn start(pair: &RedisPair, every: Duration) -> RedisWriter {
        let client = pair.primary_client().unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let task = tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                n += 1;
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(format!("test:write:{}", n % 100))
                    .arg("x".repeat(200))
                    .query_async(&mut connection)
                    .await;
                tokio::time::sleep(every).await;
            }
        });
        RedisWriter {
            _task: Repeating(task),
        }
    }
}
