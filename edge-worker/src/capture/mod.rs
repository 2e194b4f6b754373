//! Conversation capture at the edge (docs/training-data.md): the write path
//! ([`store`], run by the pipeline's capture hook after settlement, in `wait_until`) and
//! the review API on the signed internal API plus retention ([`review`]). Bodies are in
//! R2 (`CAPTURES`), the index and conversations in D1 (`migrations/0006_capture.sql`);
//! the pure logic (redaction, size cap, threading, ShareGPT) is in
//! `tollbooth_core::capture`.

pub mod review;
pub mod store;
