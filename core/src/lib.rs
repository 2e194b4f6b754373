//! Tollbooth core: the domain logic shared by the edge worker and the admin functions.
//!
//! Invariants: no I/O, no clock, no randomness of its own. Time, random bytes and ids
//! come in as arguments, so every decision here is deterministic and unit-testable.
//! Builds for native targets and for `wasm32-unknown-unknown`. Money and quota are
//! integers (micro-units, tokens, characters, requests), never floats.

pub mod auth;
pub mod billing;
pub mod capture;
pub mod catalogue;
pub mod error;
pub mod keyrecord;
pub mod protocol;
pub mod provider;
pub mod routing;
pub mod sse;
pub mod ssrf;
pub mod translate;
pub mod usage;
