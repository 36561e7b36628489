//! The evidence rules, each written once and shared by the kinds that use
//! it (see SPEC sections 2, 10 and 11): dating a replica's position by the
//! source positions sampled on earlier polls ([`positions`]), the queue rule
//! ([`queue`]), provider-reported lag ([`provider_lag`]), this exporter's
//! clocks and the conversion of a server's timestamps ([`clock`]), the
//! dating of this exporter's own heartbeat ([`heartbeat`]), and following a
//! pair across a promotion: split brain and the loss actually taken
//! ([`promotion`]), and what proves an Aurora global database secondary's
//! recovery point ([`aurora_global`]).

pub mod aurora_global;
pub mod clock;
pub mod heartbeat;
pub mod positions;
pub mod promotion;
pub mod provider_lag;
pub mod queue;
