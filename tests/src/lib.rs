//! Test harness.
pub mod harness;
pub mod mock;
pub mod sync_client;
