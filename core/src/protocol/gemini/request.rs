//! The `generateContent` / `streamGenerateContent` request body, and the `Content`/`Part`
//! shapes that responses reuse.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{string_enum, Extra};

/// Body of `POST models/{model}:generateContent` (and `:streamGenerateContent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    #[serde(default)]
    pub contents: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety_settings: Vec<SafetySetting>,
    #[serde(flatten)]
    pub extra: Extra,
}

string_enum! {
    /// Author of a `Content`.
    pub enum Role {
        User => "user",
        Model => "model",
    }
}

/// One turn of a conversation (or the system instruction, which has no role).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default)]
    pub parts: Vec<Part>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One part of a `Content`. Gemini's `Part` is a union whose data field is exactly one of
/// the optional fields below; it is modelled as a struct so that parts of kinds this
/// version does not know (`executableCode`, `codeExecutionResult`, ...) and metadata such
/// as `videoMetadata` survive verbatim in `extra`. Use [`Part::kind`] to match on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse>,
    /// True when the part is a thought summary rather than answer text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque signature the model wants back on the next turn to keep its reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a [`Part`] carries, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PartKind<'a> {
    /// Answer text (`thought` is not true).
    Text(&'a str),
    /// Thought-summary text (`thought: true`).
    Thought(&'a str),
    InlineData(&'a Blob),
    FileData(&'a FileData),
    FunctionCall(&'a FunctionCall),
    FunctionResponse(&'a FunctionResponse),
    /// A part kind this version does not model; its JSON is in `Part::extra`.
    Unknown,
}

impl Part {
    /// A plain text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// Which kind of data this part carries.
    pub fn kind(&self) -> PartKind<'_> {
        if let Some(t) = &self.text {
            if self.thought == Some(true) {
                PartKind::Thought(t)
            } else {
                PartKind::Text(t)
            }
        } else if let Some(b) = &self.inline_data {
            PartKind::InlineData(b)
        } else if let Some(f) = &self.file_data {
            PartKind::FileData(f)
        } else if let Some(c) = &self.function_call {
            PartKind::FunctionCall(c)
        } else if let Some(r) = &self.function_response {
            PartKind::FunctionResponse(r)
        } else {
            PartKind::Unknown
        }
    }
}

/// Inline bytes, base64-encoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    pub data: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A reference to a file by URI (Files API, Cloud Storage or an HTTP URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub file_uri: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A call the model asks the client to make. `args` is a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The client's result of a [`FunctionCall`]. `response` must be a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    pub response: Value,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool the model may use. Only function declarations are modelled; other tool kinds
/// (`googleSearch`, `codeExecution`, `urlContext`, ...) are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub function_declarations: Vec<FunctionDeclaration>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A function the model may call; `parameters` is an OpenAPI-subset schema object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// How the model may use the declared tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_calling_config: Option<FunctionCallingConfig>,
    #[serde(flatten)]
    pub extra: Extra,
}

string_enum! {
    /// Function-calling mode.
    pub enum FunctionCallingMode {
        /// The model decides (the default).
        Auto => "AUTO",
        /// The model must call a function (restricted to `allowedFunctionNames` if set).
        Any => "ANY",
        /// The model must not call functions.
        None => "NONE",
        Validated => "VALIDATED",
        Unspecified => "MODE_UNSPECIFIED",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FunctionCallingMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_function_names: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Sampling and output options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl GenerationConfig {
    /// True when no field is set (so the whole object can be omitted).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reasoning options of thinking models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
    /// Token budget for thinking; `0` disables it, `-1` lets the model decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A safety filter threshold for one harm category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetySetting {
    pub category: String,
    pub threshold: String,
    #[serde(flatten)]
    pub extra: Extra,
}
