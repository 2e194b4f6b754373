//! Test harness.
pub mod harness;
pub mod mock;
pub mod mock_stripe;
