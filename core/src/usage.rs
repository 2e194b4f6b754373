//! Token usage normalised across protocols: what billing charges for.

use serde::{Deserialize, Serialize};

/// Usage of one request as reported by the upstream (or estimated when it reported none).
///
/// `input_tokens` includes `cached_input_tokens`; `output_tokens` includes
/// `reasoning_tokens`. Translators convert each protocol's usage fields into this shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's cache (billed at the cached price).
    pub cached_input_tokens: u64,
    /// Anthropic-style cache writes (billed at the input price unless priced separately).
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}
