//! One module per kind of target. [`build`] is the one place that maps a
//! configured kind to its probe.

pub mod postgres;

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
    }
}
