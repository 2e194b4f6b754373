//! Billing.
