//! Pure translation between protocols. The hub format is OpenAI chat completions:
//! Anthropic ingress is converted to OpenAI, and OpenAI requests are converted to the
//! upstream's protocol; responses and streams come back the other way.
//!
//! Stream translators are state machines: feed them one parsed upstream event at a
//! time with `on_event`, call `finish` at the end of the stream; they never do I/O.
//! They share the [`hub::StreamTranslator`] trait, and [`hub`] composes them with the
//! SSE decoder into the pipeline's decoder and encoder.

pub mod anthropic;
pub mod gemini;
pub mod hub;
pub mod stream_convert;
