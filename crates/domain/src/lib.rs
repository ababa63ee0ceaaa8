//! agentreg's domain: the types that carry its invariants (typed ids, the records every layer
//! shares, names, access levels, the agent-token limit, URL-configuration validation and key
//! generation). It performs no IO and never reads the clock or a random number generator itself;
//! callers pass `now` and the RNG.

pub mod access;
pub mod entities;
pub mod ids;
pub mod names;
pub mod tokens;
pub mod url_config;
pub mod validation;
