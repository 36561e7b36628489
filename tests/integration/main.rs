//! Integration tests against real services: Postgres primaries with
//! streaming replicas started by `rpo_exporter::lab`, the exporter run
//! in-process on 127.0.0.1:0 and as the real binary.

mod alerts;
mod board;
mod cli;
mod dashboards;
mod deploy;
mod e2e;
mod postgres;
mod support;
