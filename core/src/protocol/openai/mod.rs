//! OpenAI wire types: chat completions (request, response, stream chunk), embeddings,
//! rerank (Jina/Cohere shape), model list and the error body.
//!
//! Unknown fields are kept in `extra` maps (flattened) so they round-trip; unknown content
//! parts are kept as raw JSON. `None` fields are not serialized, except where OpenAI itself
//! always sends `null` and clients key off it (noted on the field).

pub mod chat;
pub mod embeddings;
pub mod error;
pub mod models;
pub mod rerank;

pub use chat::*;
pub use embeddings::*;
pub use error::*;
pub use models::*;
pub use rerank::*;
