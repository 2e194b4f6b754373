//! Test harness.
pub mod mock;
