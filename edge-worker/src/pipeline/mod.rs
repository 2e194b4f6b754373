//! The model API pipeline's steps (the order is documented in [`crate::routes`]):
//! [`ingress`] (the body parsed once), [`metering`] (estimate, admission, the settlement
//! guard), [`attempts`] (the one retry/fallback loop), [`stream`] (peek, aggregate, pump
//! over the core hub decoder and encoder) and [`capture`] (the hook offered each finished
//! exchange).

pub mod attempts;
pub mod capture;
pub mod ingress;
pub mod metering;
pub mod speculate;
pub mod stream;
