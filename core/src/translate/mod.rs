//! Pure translation between protocols. The hub format is OpenAI chat completions:
//! every ingress (OpenAI chat, Anthropic Messages, OpenAI Responses, Gemini) is converted
//! to it, and hub requests are converted to the upstream's protocol (OpenAI chat,
//! Anthropic, Gemini, Responses); responses and streams come back the other way.
//!
//! Stream translators are state machines: feed them one parsed upstream event at a
//! time with `on_event`, call `finish` at the end of the stream; they never do I/O.
//! They share the [`hub::StreamTranslator`] trait, and [`hub`] composes them with the
//! SSE decoder into the pipeline's decoder and encoder.

pub mod anthropic;
pub mod count_tokens;
pub mod gemini;
pub mod gemini_ingress;
pub mod hub;
pub mod responses_ingress;
pub mod responses_upstream;
pub mod stream_convert;

pub use anthropic::TranslateError;
