//! The evidence rules, each written once and shared by the kinds that use
//! it (see SPEC section 2): dating a replica's position by the source
//! positions sampled on earlier polls ([`positions`]), the queue rule
//! ([`queue`]), and provider-reported lag ([`provider_lag`]).

pub mod positions;
pub mod provider_lag;
pub mod queue;
