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

use crate::config::{Target, TargetSpec};
use crate::probe::{Probe, ProbeError};

/// Builds the probe for a target. `instance` names this exporter's
/// heartbeat rows/keys. Fails only on local problems (a CA file that cannot
/// be read); nothing is contacted here.
pub fn build(target: &Target, instance: &str) -> Result<Box<dyn Probe>, ProbeError> {
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
        TargetSpec::Rds(spec) => Ok(Box::new(aws::rds::RdsProbe::new(target, spec)?)),
        TargetSpec::AuroraGlobal(spec) => Ok(Box::new(aws::aurora_global::AuroraGlobalProbe::new(
            target, spec,
        )?)),
        TargetSpec::ElasticacheGlobal(spec) => Ok(Box::new(
            aws::elasticache_global::ElasticacheGlobalProbe::new(target, spec)?,
        )),
        TargetSpec::S3(spec) => Ok(Box::new(aws::s3::S3Probe::new(target, spec, instance)?)),
        TargetSpec::Efs(spec) => Ok(Box::new(aws::efs::EfsProbe::new(target, spec)?)),
        TargetSpec::Sqs(spec) => Ok(Box::new(aws::sqs::SqsProbe::new(target, spec)?)),
    }
}
