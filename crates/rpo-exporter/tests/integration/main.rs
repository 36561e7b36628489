//! Integration tests against real services: Postgres primaries with
//! streaming replicas started by `rpo_lab`, the exporter run
//! in-process on 127.0.0.1:0 and as the real binary. The helpers they
//! share (and any other test crate can) are `rpo_lab::support`.

mod alerts;
mod aws;
mod aws_recorded;
mod aws_region_loss;
mod aws_s3;
mod board;
mod cli;
mod clocks;
mod cloudwatch_publish;
mod dashboards;
mod deploy;
mod docs;
mod e2e;
mod mysql;
mod mysql_aurora;
mod opensearch;
mod postgres;
mod promotion;
mod rabbitmq;
mod redis;
mod redis_stream;
mod region_drill;
mod region_loss;
mod region_loss_aws;
mod region_loss_queues;
mod release;
mod reload;
mod secrets;
mod shared_connections;
mod shipped;
mod signals;
mod sql_queue;
mod two_exporters;
mod web;
mod web_limits;
