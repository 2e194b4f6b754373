//! Anthropic Messages API wire types: request, response, stream events, error body.
//!
//! Unknown fields are kept in `extra` maps; unknown content blocks, deltas and stream
//! events are kept as raw JSON (`Unknown(Value)`), never rejected.

pub mod error;
pub mod messages;
pub mod stream;

pub use error::*;
pub use messages::*;
pub use stream::*;
