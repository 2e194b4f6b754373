//! Test harness.
pub mod admin_client;
pub mod gateway;
pub mod harness;
pub mod ledger_check;
pub mod mock;
pub mod mock_stripe;
pub mod sync_client;
