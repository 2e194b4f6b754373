//! `countTokens` request and response, and the model list (`GET models`) shapes.

use serde::{Deserialize, Serialize};

use super::{Content, Extra, GenerateContentRequest};

/// Body of `POST models/{model}:countTokens`: either bare `contents`, or a whole
/// `generateContentRequest` (system instruction and tools included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_content_request: Option<GenerateContentRequest>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl CountTokensRequest {
    /// The request whose tokens are counted: the embedded `generateContentRequest`, or
    /// one made of the bare `contents`.
    pub fn into_generate_request(self) -> GenerateContentRequest {
        match self.generate_content_request {
            Some(mut r) => {
                r.contents.extend(self.contents);
                r
            }
            None => GenerateContentRequest {
                contents: self.contents,
                ..GenerateContentRequest::default()
            },
        }
    }
}

/// `{"totalTokens": N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensResponse {
    pub total_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of the model list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `models/{id}`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_token_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_token_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_generation_methods: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `GET models`: `{"models": [...], "nextPageToken"?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListModelsResponse {
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_count_tokens_request_both_forms() {
        let bare: CountTokensRequest = serde_json::from_value(json!({
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}]
        }))
        .unwrap();
        assert_eq!(bare.into_generate_request().contents.len(), 1);
        let full: CountTokensRequest = serde_json::from_value(json!({
            "generateContentRequest": {
                "model": "models/gemini-2.0-flash",
                "systemInstruction": {"parts": [{"text": "sys"}]},
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}]
            }
        }))
        .unwrap();
        let req = full.into_generate_request();
        assert!(req.system_instruction.is_some());
        assert_eq!(req.contents.len(), 1);
    }
}
