//! `/v1/rerank` in the Jina / Cohere shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankRequest {
    pub model: String,
    pub query: String,
    pub documents: Vec<RerankDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_documents: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A document: plain text or an object (e.g. `{"text": ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RerankDocument {
    Text(String),
    Object(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub results: Vec<RerankResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<RerankUsage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    pub index: u32,
    pub relevance_score: f64,
    /// Present when `return_documents` was true (`{"text": ...}` or the string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Jina reports `total_tokens` (and sometimes `prompt_tokens`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerankUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl From<&RerankUsage> for crate::usage::Usage {
    fn from(u: &RerankUsage) -> Self {
        crate::usage::Usage {
            input_tokens: u.total_tokens.or(u.prompt_tokens).unwrap_or(0),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_rerank_round_trip() {
        let req = json!({"model": "jina-reranker-v2", "query": "q",
                         "documents": ["a", {"text": "b", "title": "t"}], "top_n": 1,
                         "return_documents": true});
        let r: RerankRequest = serde_json::from_value(req.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), req);
        let resp = json!({"model": "jina-reranker-v2", "results": [
            {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}}],
            "usage": {"total_tokens": 12}});
        let r: RerankResponse = serde_json::from_value(resp.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), resp);
        assert_eq!(
            crate::usage::Usage::from(r.usage.as_ref().unwrap()).input_tokens,
            12
        );
    }
}
