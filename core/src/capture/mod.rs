//! Conversation capture for training data (docs/training-data.md): pure pieces the edge
//! composes and the export job reuses.
//!
//! - [`settings`]: what the catalogue says about capture (redaction, size cap, retention,
//!   apps that opt in) and the one opt-in decision ([`settings::capture_enabled`]).
//! - [`redact`]: redaction of every string of a body before it is stored (API keys,
//!   emails, phone numbers, operator literals), without a regex engine.
//! - [`normalize`]: OpenAI (hub) and Anthropic message lists, tools and answers as one
//!   neutral list of [`normalize::Turn`]s.
//! - [`record`]: the stored capture (request, answer, metadata), its size cap and
//!   `truncated` flag.
//! - [`thread`]: grouping captures into conversations by hashes of canonical message
//!   prefixes, and per-conversation stats.
//! - [`passthrough`]: pass-through and BYOK bodies in capture form, the BYOK auth style.
//! - [`sharegpt`]: a conversation → a ShareGPT record, its validation with reasons, and
//!   the OpenAI fine-tuning (`messages`) line.
//!
//! Invariants: no I/O, no clock (timestamps come in), deterministic output; headers and
//! credentials never enter a record (the record is built from bodies only).

pub mod normalize;
pub mod passthrough;
pub mod record;
pub mod redact;
pub mod settings;
pub mod sharegpt;
pub mod thread;

pub use record::{build_record, CaptureMeta, CaptureRecord};
pub use redact::Redactor;
pub use settings::{capture_enabled, CaptureSettings};
