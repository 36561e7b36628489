//! One module per kind of target. [`build`] is the one place that maps a
//! configured kind to its probe.

pub mod aws;
pub(crate) mod http_client;
pub mod opensearch;
pub mod postgres;
pub mod queue;
pub mod rabbitmq;
pub mod redis;
pub mod redis_stream;
pub mod sql_queue;

use crate::config::{Kind, Target, TargetSpec};
use crate::metric_def::MetricDef;
use crate::probe::{Probe, ProbeContext, ProbeError};

/// Builds the probe for a target. `context.instance` names this exporter's
/// heartbeat rows/keys; the AWS kinds count their calls in
/// `context.aws_calls`. Fails only on local problems (a CA file that cannot
/// be read); nothing is contacted here.
pub fn build(target: &Target, context: &ProbeContext) -> Result<Box<dyn Probe>, ProbeError> {
    let instance = context.instance.as_str();
    let aws_calls = &context.aws_calls;
    match &target.spec {
        TargetSpec::Postgres(spec) => Ok(Box::new(postgres::PostgresProbe::new(
            target, spec, instance,
        )?)),
        TargetSpec::Redis(spec) => Ok(Box::new(redis::RedisProbe::new(target, spec, instance)?)),
        TargetSpec::RedisStream(spec) => {
            Ok(Box::new(redis_stream::RedisStreamProbe::new(target, spec)?))
        }
        TargetSpec::Rabbitmq(spec) => Ok(Box::new(rabbitmq::RabbitmqProbe::new(target, spec)?)),
        TargetSpec::SqlQueue(spec) => Ok(Box::new(sql_queue::SqlQueueProbe::new(target, spec)?)),
        TargetSpec::Opensearch(spec) => Ok(Box::new(opensearch::OpensearchProbe::new(
            target, spec, instance,
        )?)),
        TargetSpec::Rds(spec) => Ok(Box::new(aws::rds::RdsProbe::new(target, spec, aws_calls)?)),
        TargetSpec::AuroraGlobal(spec) => Ok(Box::new(aws::aurora_global::AuroraGlobalProbe::new(
            target, spec, aws_calls,
        )?)),
        TargetSpec::ElasticacheGlobal(spec) => Ok(Box::new(
            aws::elasticache_global::ElasticacheGlobalProbe::new(target, spec, aws_calls)?,
        )),
        TargetSpec::S3(spec) => Ok(Box::new(aws::s3::S3Probe::new(
            target, spec, instance, aws_calls,
        )?)),
        TargetSpec::Efs(spec) => Ok(Box::new(aws::efs::EfsProbe::new(target, spec, aws_calls)?)),
        TargetSpec::Sqs(spec) => Ok(Box::new(aws::sqs::SqsProbe::new(target, spec, aws_calls)?)),
    }
}

/// Each kind's detail families (its `DETAIL_FAMILIES`), for `metrics::catalogue`.
/// A family several kinds publish (`rpo_heartbeat_timestamp_seconds`, the
/// `rpo_queue_*` series) is declared once and listed by each of them.
pub fn detail_families() -> Vec<(Kind, &'static [&'static MetricDef])> {
    vec![
        (Kind::Postgres, postgres::DETAIL_FAMILIES),
        (Kind::Redis, redis::DETAIL_FAMILIES),
        (Kind::RedisStream, redis_stream::DETAIL_FAMILIES),
        (Kind::Rabbitmq, rabbitmq::DETAIL_FAMILIES),
        (Kind::SqlQueue, sql_queue::DETAIL_FAMILIES),
        (Kind::Opensearch, opensearch::DETAIL_FAMILIES),
        (Kind::Rds, aws::rds::DETAIL_FAMILIES),
        (Kind::AuroraGlobal, aws::aurora_global::DETAIL_FAMILIES),
        (
            Kind::ElasticacheGlobal,
            aws::elasticache_global::DETAIL_FAMILIES,
        ),
        (Kind::S3, aws::s3::DETAIL_FAMILIES),
        (Kind::Efs, aws::efs::DETAIL_FAMILIES),
        (Kind::Sqs, aws::sqs::DETAIL_FAMILIES),
    ]
}
