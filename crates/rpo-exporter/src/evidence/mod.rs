//! The evidence rules, each written once and shared by the kinds that use
//! it (see SPEC section 2): dating a replica's position by the source
//! positions sampled on earlier polls ([`positions`]), the queue rule
//! ([`queue`]), provider-reported lag ([`provider_lag`]), and following a
//! pair across a promotion: split brain and the loss actually taken
//! ([`promotion`]).

pub mod positions;
pub mod promotion;
pub mod provider_lag;
pub mod queue;
