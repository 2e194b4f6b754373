//! Test harness.
pub mod harness;
pub mod mock;
