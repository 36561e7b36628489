//! The `sql_queue` kind: an integration outbox or staging table on
//! PostgreSQL (the common ERP pattern), read with a configured query that
//! returns one row: the count of unprocessed rows and the enqueue time of
//! the oldest one (NULL when unknown).
//!
//! On the first successful connection the query is prepared (not run) and
//! its two columns checked: an integer or numeric count, then a
//! `timestamptz` or `timestamp`. Anything else fails with reason `config`
//! and a message naming the target and the columns found.
//!
//! Every poll runs the query wrapped as
//! `SELECT count, now() - oldest FROM (query) AS q(count, oldest)` inside a
//! `READ ONLY` transaction with `SET LOCAL statement_timeout`. The age is
//! computed with the database's clock on both ends (the enqueue time is
//! usually `DEFAULT now()`), so the skew between the database and this
//! exporter does not enter; the recovery point is "our instant just before
//! the transaction − that age", a bound that errs towards more exposure.
//!
//! The database is the target's source side (the outbox lives with the
//! business data, in the primary region). A database that stops answering
//! after it has answered (its region lost) is reported as the source
//! unreachable, dated at its last answer
//! ([`crate::evidence::queue::SourceContact`]); a query the database
//! refuses, or any failure before a first answer, fails the poll.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_postgres::types::Type;

use super::{KindDef, KindSpec};
use crate::config::{ConfigError, Secret, Target, TargetKeys};
use crate::drivers::postgres::{check_url, classify, connect_config, tls_connector, Connection};
use crate::drivers::within;
use crate::evidence::queue::{queue_details, QueueHistory, QueueObservation, SourceContact};
use crate::probe::{FailureReason, LinkState, Measurement, Probe, ProbeContext, ProbeError, Side};

use crate::evidence::queue;
use crate::metric_def::MetricDef;
// ---------------------------------------------------------------------------
// Configuration.

pub static KIND: KindDef = KindDef::new("sql_queue", parse, DETAIL_FAMILIES);

/// An outbox or staging table on PostgreSQL, read by a configured query.
#[derive(Debug, Clone)]
pub struct SqlQueueTarget {
    pub url: Secret,
    /// Returns one row: (count of unprocessed rows, oldest enqueue time or NULL).
    pub query: String,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlQueue {
    query: String,
    tls_ca_file: Option<PathBuf>,
}

fn parse(keys: &mut TargetKeys<'_>) -> Result<Arc<dyn KindSpec>, ConfigError> {
    let url = keys.secret("url")?;
    let raw: RawSqlQueue = keys.take()?;
    check_url(keys, "url", &url)?;
    // A trailing semicolon is habit, not a second statement.
    let query = raw
        .query
        .trim()
        .trim_end_matches(';')
        .trim_end()
        .to_string();
    if query.is_empty() {
        return Err(keys.invalid(
            "query",
            "is empty; write a query returning (count, oldest enqueue time), like \"SELECT count(*), min(created_at) FROM outbox WHERE processed_at IS NULL\"",
        ));
    }
    keys.readable_file("tls_ca_file", raw.tls_ca_file.as_deref())?;
    Ok(Arc::new(SqlQueueTarget {
        url,
        query,
        tls_ca_file: raw.tls_ca_file,
    }))
}

impl KindSpec for SqlQueueTarget {
    fn build(
        &self,
        target: &Target,
        _context: &ProbeContext,
    ) -> Result<Box<dyn Probe>, ProbeError> {
        Ok(Box::new(SqlQueueProbe::new(target, self)?))
    }
}

// ---------------------------------------------------------------------------
// The query.
// The detail series of this kind, declared once (see `metric_def`); its
// `DETAIL_FAMILIES` lists every family it publishes, for `metrics::catalogue`.
pub static DETAIL_FAMILIES: &[&MetricDef] = &[
    &queue::MESSAGES,
    &queue::OLDEST_MESSAGE_AGE_SECONDS,
    &queue::LAST_EMPTY_TIMESTAMP_SECONDS,
];

/// Checks the two columns a queue query must return; the error lists the
/// columns found.
pub fn check_columns(columns: &[(String, Type)]) -> Result<(), String> {
    let found = || {
        columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if columns.len() != 2 {
        return Err(format!(
            "the query must return exactly two columns, the count of unprocessed rows and the oldest enqueue time; it returns {} ({})",
            columns.len(),
            found()
        ));
    }
    let count_ok = matches!(
        columns[0].1,
        Type::INT2 | Type::INT4 | Type::INT8 | Type::NUMERIC
    );
    let oldest_ok = matches!(columns[1].1, Type::TIMESTAMPTZ | Type::TIMESTAMP);
    if !count_ok || !oldest_ok {
        let mut problems = Vec::new();
        if !count_ok {
            problems.push(format!(
                "the first column ({} {}) must be an integer or numeric count",
                columns[0].0, columns[0].1
            ));
        }
        if !oldest_ok {
            problems.push(format!(
                "the second column ({} {}) must be a timestamptz or timestamp (cast a NULL: NULL::timestamptz)",
                columns[1].0, columns[1].1
            ));
        }
        return Err(format!(
            "{}; columns found: {}",
            problems.join("; "),
            found()
        ));
    }
    Ok(())
}

/// The configured query wrapped so that the database returns the count as
/// a float and the oldest row's age in seconds on its own clock.
/// `timestamp without time zone` is read in the session's time zone.
pub fn wrapped_query(query: &str) -> String {
    format!(
        "SELECT rpo_q.n::float8, \
         (extract(epoch from now()) - extract(epoch from rpo_q.t::timestamptz))::float8 \
         FROM ({query}\n) AS rpo_q(n, t)"
    )
}

/// Turns one answer into an observation. `before` is our clock just before
/// the transaction began (the database's `now()` is at or after it).
pub fn observation(before: SystemTime, count: f64, age_seconds: Option<f64>) -> QueueObservation {
    let count = if count.is_finite() && count > 0.0 {
        count.round() as u64
    } else {
        0
    };
    let oldest_enqueued = age_seconds
        .filter(|a| a.is_finite())
        .map(|a| a.max(0.0))
        .map(|a| {
            before
                .checked_sub(Duration::from_secs_f64(a))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
    QueueObservation {
        as_of: before,
        waiting: count,
        total: count,
        oldest_enqueued,
    }
}

pub struct SqlQueueProbe {
    target: String,
    timeout: Duration,
    connection: Connection,
    query: String,
    wrapped: String,
    /// Whether the query was checked on the current connection.
    validated: bool,
    history: QueueHistory,
    /// The database's last answer, for when it stops answering.
    contact: SourceContact,
    poll_in_progress: bool,
}

impl SqlQueueProbe {
    pub fn new(target: &Target, spec: &SqlQueueTarget) -> Result<SqlQueueProbe, ProbeError> {
        let tls = tls_connector(&target.name, spec.tls_ca_file.as_deref())?;
        let config = connect_config(target, &spec.url, Side::Replica)?;
        Ok(SqlQueueProbe {
            target: target.name.clone(),
            timeout: target.timeout,
            // Its own connection: the query runs in a transaction, which
            // would take in other targets' pipelined queries.
            connection: Connection::exclusive(Side::Replica, config, tls),
            query: spec.query.clone(),
            wrapped: wrapped_query(&spec.query),
            validated: false,
            history: QueueHistory::default(),
            contact: SourceContact::default(),
            poll_in_progress: false,
        })
    }

    /// The server stops the query a little before we give up on it, so a
    /// slow query is reported as the database's own cancellation.
    fn statement_timeout(&self) -> Duration {
        self.timeout.mul_f64(0.8).max(Duration::from_millis(100))
    }

    async fn validate(&mut self) -> Result<(), ProbeError> {
        let target = self.target.clone();
        let client = self.connection.client().await?;
        let statement = client.prepare(&self.query).await.map_err(|e| {
            let mut err = classify(&e, false);
            let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
            // Syntax errors, unknown tables and columns (class 42) are the
            // configuration's fault; missing privileges stay `auth`.
            if code.starts_with("42") && code != "42501" {
                err.reason = FailureReason::Config;
            }
            err.message = format!(
                "target {target}: the configured query cannot be prepared: {}",
                err.message
            );
            err
        })?;
        let columns: Vec<(String, Type)> = statement
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        check_columns(&columns).map_err(|problem| {
            ProbeError::new(FailureReason::Config, format!("target {target}: {problem}"))
        })?;
        self.validated = true;
        Ok(())
    }

    async fn observe(&mut self) -> Result<QueueObservation, ProbeError> {
        if !self.validated {
            self.validate().await?;
        }
        let setup = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
            self.statement_timeout().as_millis()
        );
        let client = self.connection.client().await?;
        let before = SystemTime::now();
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| classify(&e, false))?;
        let rows = client.query(&self.wrapped, &[]).await;
        // Nothing was written; end the transaction either way.
        let _ = client.batch_execute("ROLLBACK").await;
        let rows = rows.map_err(|e| {
            let mut err = classify(&e, false);
            err.message = format!("the queue query failed: {}", err.message);
            err
        })?;
        if rows.len() != 1 {
            return Err(ProbeError::new(
                FailureReason::Query,
                format!(
                    "the queue query returned {} rows; it must return exactly one (count, oldest), e.g. with count(*) and min(...)",
                    rows.len()
                ),
            ));
        }
        let count: Option<f64> = rows[0].get(0);
        let age: Option<f64> = rows[0].get(1);
        Ok(observation(before, count.unwrap_or(0.0), age))
    }

    async fn poll_once(&mut self) -> Result<Measurement, ProbeError> {
        let deadline = Instant::now() + self.timeout;
        let observation = match within(deadline, self.observe()).await {
            Ok(o) => o,
            Err(err) => {
                if err.reason != FailureReason::Config {
                    // A timeout may leave the transaction open: start afresh.
                    self.connection.reset();
                    self.validated = false;
                }
                return self.contact.unanswered(err.on(Side::Source));
            }
        };
        let mut measurement = Measurement::new(observation.as_of);
        measurement.link = LinkState::Healthy;
        measurement.recovery_point = self.history.recovery_point(&observation);
        measurement.backlog_operations = Some(observation.total as f64);
        let age = if observation.waiting == 0 {
            Some(Duration::ZERO)
        } else {
            observation
                .oldest_enqueued
                .map(|t| observation.as_of.duration_since(t).unwrap_or_default())
        };
        measurement.details =
            queue_details(observation.total, age, None, self.history.last_seen_empty());
        self.contact.answered(&mut measurement);
        Ok(measurement)
    }
}

impl Probe for SqlQueueProbe {
    fn poll(&mut self) -> BoxFuture<'_, Result<Measurement, ProbeError>> {
        Box::pin(async move {
            if self.poll_in_progress {
                // The poller cancelled the last poll mid-query.
                self.connection.reset();
                self.validated = false;
            }
            self.poll_in_progress = true;
            let result = self.poll_once().await;
            self.poll_in_progress = false;
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(list: &[(&str, Type)]) -> Vec<(String, Type)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }

    #[test]
    fn accepts_count_and_timestamp() {
        assert!(check_columns(&cols(&[("count", Type::INT8), ("min", Type::TIMESTAMPTZ)])).is_ok());
        assert!(check_columns(&cols(&[("n", Type::NUMERIC), ("t", Type::TIMESTAMP)])).is_ok());
        assert!(check_columns(&cols(&[("n", Type::INT4), ("t", Type::TIMESTAMPTZ)])).is_ok());
    }

    #[test]
    fn wrong_columns_are_named() {
        let err = check_columns(&cols(&[("count", Type::INT8)])).unwrap_err();
        assert!(err.contains("exactly two columns"), "{err}");
        assert!(err.contains("count int8"), "{err}");
        let err = check_columns(&cols(&[("id", Type::TEXT), ("created", Type::TEXT)])).unwrap_err();
        assert!(err.contains("first column (id text)"), "{err}");
        assert!(err.contains("second column (created text)"), "{err}");
        assert!(
            err.contains("columns found: id text, created text"),
            "{err}"
        );
    }

    #[test]
    fn the_wrapper_keeps_the_query_intact() {
        let q = wrapped_query("SELECT count(*), min(created_at) FROM outbox -- unprocessed");
        // The comment must not swallow the closing parenthesis.
        assert!(q.contains("-- unprocessed\n) AS rpo_q(n, t)"), "{q}");
    }

    #[test]
    fn observation_dates_by_the_database_age() {
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let o = observation(before, 4.0, Some(30.0));
        assert_eq!(o.waiting, 4);
        assert_eq!(o.oldest_enqueued, Some(before - Duration::from_secs(30)));
        // A row stamped in the future (a writer's clock ahead) is age 0.
        assert_eq!(
            observation(before, 1.0, Some(-5.0)).oldest_enqueued,
            Some(before)
        );
        assert_eq!(observation(before, 0.0, None).waiting, 0);
    }
}
