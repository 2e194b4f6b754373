//! The `generateContent` response body; each `streamGenerateContent` SSE event carries
//! one of these too (a delta of the candidates, with cumulative `usageMetadata`).

use serde::{Deserialize, Serialize};

use super::{string_enum, Content, ErrorBody, Extra};
use crate::usage::Usage;

/// A full response, or one stream event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl GenerateContentResponse {
    /// The error carried by this payload, if it is actually an error body
    /// (`{"error": {...}}`) that was parsed as a response.
    pub fn upstream_error(&self) -> Option<ErrorBody> {
        self.extra
            .get("error")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// One generated answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_ratings: Vec<SafetyRating>,
    #[serde(flatten)]
    pub extra: Extra,
}

string_enum! {
    /// Why a candidate stopped.
    pub enum FinishReason {
        Unspecified => "FINISH_REASON_UNSPECIFIED",
        Stop => "STOP",
        MaxTokens => "MAX_TOKENS",
        Safety => "SAFETY",
        Recitation => "RECITATION",
        Language => "LANGUAGE",
        Other => "OTHER",
        Blocklist => "BLOCKLIST",
        ProhibitedContent => "PROHIBITED_CONTENT",
        Spii => "SPII",
        MalformedFunctionCall => "MALFORMED_FUNCTION_CALL",
        ImageSafety => "IMAGE_SAFETY",
        UnexpectedToolCall => "UNEXPECTED_TOOL_CALL",
    }
}

string_enum! {
    /// Why the prompt itself was blocked.
    pub enum BlockReason {
        Unspecified => "BLOCK_REASON_UNSPECIFIED",
        Safety => "SAFETY",
        Other => "OTHER",
        Blocklist => "BLOCKLIST",
        ProhibitedContent => "PROHIBITED_CONTENT",
        ImageSafety => "IMAGE_SAFETY",
    }
}

/// The safety classification of a candidate or prompt for one harm category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetyRating {
    pub category: String,
    pub probability: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Feedback about the prompt; `block_reason` is set when no candidate was generated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<BlockReason>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_ratings: Vec<SafetyRating>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Token counts. In a stream every event repeats the cumulative counts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_count: Option<u64>,
    /// Visible output tokens; excludes `thoughts_token_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_token_count: Option<u64>,
    /// Part of `prompt_token_count` served from the context cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl UsageMetadata {
    /// Normalised usage. Gemini bills thoughts as output, so `output_tokens` is
    /// `candidatesTokenCount + thoughtsTokenCount`; tool-use prompt tokens (e.g. search
    /// results fed back to the model) are billed as input.
    pub fn to_usage(&self) -> Usage {
        let reasoning = self.thoughts_token_count.unwrap_or(0);
        Usage {
            input_tokens: self
                .prompt_token_count
                .unwrap_or(0)
                .saturating_add(self.tool_use_prompt_token_count.unwrap_or(0)),
            output_tokens: self
                .candidates_token_count
                .unwrap_or(0)
                .saturating_add(reasoning),
            cached_input_tokens: self.cached_content_token_count.unwrap_or(0),
            cache_creation_input_tokens: 0,
            reasoning_tokens: reasoning,
        }
    }
}
