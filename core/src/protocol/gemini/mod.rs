//! Google Gemini (Generative Language API) wire types: `generateContent` and
//! `streamGenerateContent` requests, responses, stream events and error bodies, plus
//! `countTokens` and the model list.
//!
//! Field names are camelCase as on the wire. Every object keeps the fields it does not
//! model in a `#[serde(flatten)] extra` map, and enumerations keep unknown values as
//! `Unknown(String)`, so a payload from a newer API version survives a round trip.
//!
//! The API key is never part of these types or of a URL built from them: it travels in the
//! `x-goog-api-key` header (see `translate::gemini::upstream_path`).

mod error;
mod models;
mod request;
mod response;

pub use error::{status_name, ErrorBody, ErrorResponse, StreamPayload};
pub use models::{CountTokensRequest, CountTokensResponse, ListModelsResponse, ModelInfo};
pub use request::{
    Blob, Content, FileData, FunctionCall, FunctionCallingConfig, FunctionCallingMode,
    FunctionDeclaration, FunctionResponse, GenerateContentRequest, GenerationConfig, Part,
    PartKind, Role, SafetySetting, ThinkingConfig, Tool, ToolConfig,
};
pub use response::{
    BlockReason, Candidate, FinishReason, GenerateContentResponse, PromptFeedback, SafetyRating,
    UsageMetadata,
};

/// Fields of an object that the owned types do not model, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// A string enumeration whose unknown values are kept as `Unknown(String)` instead of
/// failing deserialisation (Gemini adds finish reasons and modes over time).
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version does not know, kept as sent.
            Unknown(String),
        }

        impl $name {
            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Unknown(s) => s.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $wire => Self::$variant, )+
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}
pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_unknown_enum_values_round_trip() {
        let r: FinishReason = serde_json::from_value(json!("SOMETHING_NEW")).unwrap();
        assert_eq!(r, FinishReason::Unknown("SOMETHING_NEW".into()));
        assert_eq!(serde_json::to_value(&r).unwrap(), json!("SOMETHING_NEW"));
        let r: FinishReason = serde_json::from_value(json!("MAX_TOKENS")).unwrap();
        assert_eq!(r, FinishReason::MaxTokens);
    }

    #[test]
    fn test_unknown_part_and_fields_are_preserved() {
        let v = json!({
            "contents": [{"role": "user", "parts": [
                {"text": "hi", "futureFlag": true},
                {"executableCode": {"language": "PYTHON", "code": "print(1)"}}
            ]}],
            "tools": [{"googleSearch": {}}],
            "cachedContent": "cachedContents/abc"
        });
        let req: GenerateContentRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(req.contents[0].parts[1].kind(), PartKind::Unknown);
        assert_eq!(serde_json::to_value(&req).unwrap(), v);
    }

    #[test]
    fn test_usage_metadata_to_usage() {
        let u: UsageMetadata = serde_json::from_value(json!({
            "promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 150,
            "cachedContentTokenCount": 40, "thoughtsTokenCount": 30
        }))
        .unwrap();
        let usage = u.to_usage();
        assert_eq!(usage.input_tokens, 100);
        assert_eq!(usage.cached_input_tokens, 40);
        assert_eq!(usage.output_tokens, 50);
        assert_eq!(usage.reasoning_tokens, 30);
    }

    #[test]
    fn test_stream_payload_detects_error() {
        let p = StreamPayload::parse(
            r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
        )
        .unwrap();
        match p {
            StreamPayload::Error(e) => {
                assert_eq!(e.error.code, Some(429));
                assert_eq!(e.error.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
            }
            StreamPayload::Response(_) => panic!("expected an error"),
        }
        let p = StreamPayload::parse(r#"{"candidates":[]}"#).unwrap();
        assert!(matches!(p, StreamPayload::Response(_)));
        // The array form Gemini uses for non-SSE stream errors.
        let p = StreamPayload::parse(r#"[{"error":{"code":400,"message":"bad"}}]"#).unwrap();
        assert!(matches!(p, StreamPayload::Error(_)));
    }
}
