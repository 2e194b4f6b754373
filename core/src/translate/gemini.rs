//! OpenAI chat completions ⇄ Google Gemini `generateContent`.
//!
//! * [`to_gemini_request`]: an OpenAI chat request becomes a Gemini request body; the
//!   model goes in the path ([`upstream_path`]), not the body.
//! * [`from_gemini_response`]: a Gemini response becomes an OpenAI chat completion.
//! * [`GeminiStreamTranslator`]: `streamGenerateContent?alt=sse` events become OpenAI
//!   chunks, one event at a time.
//!
//! Ids, timestamps and the client-facing model name come in as arguments: the upstream's
//! `responseId` and `modelVersion` are never shown to the client.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::protocol::gemini as g;
use crate::protocol::openai as oa;
use crate::usage::Usage;

/// Why an OpenAI request cannot be expressed as a Gemini request. Every variant is the
/// client's fault (an invalid request, HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeminiTranslateError {
    #[error("messages[{index}]: arguments of tool call `{id}` are not valid JSON: {reason}")]
    InvalidToolArguments {
        index: usize,
        id: String,
        reason: String,
    },
    #[error("messages[{index}]: arguments of tool call `{id}` must be a JSON object")]
    ToolArgumentsNotObject { index: usize, id: String },
    #[error(
        "messages[{index}]: tool_call_id `{id}` does not match any earlier assistant tool call"
    )]
    UnknownToolCallId { index: usize, id: String },
    #[error("messages[{index}]: a tool result needs a tool_call_id (or a function name)")]
    MissingToolCallId { index: usize },
    #[error("messages[{index}]: malformed data URL (expected data:<media type>;base64,<data>)")]
    InvalidDataUrl { index: usize },
    #[error("messages[{index}]: content part of type `{kind}` is not supported by Gemini")]
    UnsupportedContentPart { index: usize, kind: String },
    #[error("tools: tool type `{kind}` is not supported by Gemini")]
    UnsupportedTool { kind: String },
    #[error("messages: at least one user or assistant message is required")]
    NoContents,
}

/// The request path, relative to the Gemini API base (`https://generativelanguage.googleapis.com/v1beta/`).
///
/// The API key must be sent in the `x-goog-api-key` header by the adapter, never as a
/// `?key=` query parameter: URLs end up in logs, traces and error messages, and a key in
/// one would leak. That is why the streaming path carries only `alt=sse`.
///
/// A leading `models/` in `model` is accepted; any character outside the URL-unreserved
/// set is percent-encoded so a model name cannot change the path or add query parameters.
pub fn upstream_path(model: &str, stream: bool) -> String {
    let name = model.strip_prefix("models/").unwrap_or(model);
    let mut encoded = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if stream {
        format!("models/{encoded}:streamGenerateContent?alt=sse")
    } else {
        format!("models/{encoded}:generateContent")
    }
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI -> Gemini
// ---------------------------------------------------------------------------------------

/// Google's documented stand-in `thoughtSignature` for a history `functionCall` part whose
/// real signature is unknown (the call came from another model or the client dropped
/// it). Gemini 3 answers 400 to a function call in history without any signature.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// Translates an OpenAI chat request into a Gemini request body.
///
/// * `system`/`developer` messages, wherever they appear, become `systemInstruction`
///   (Gemini has no mid-conversation system turn).
/// * `assistant` becomes role `model`; its `tool_calls` (and legacy `function_call`)
///   become `functionCall` parts with parsed arguments (an empty string counts as `{}`).
/// * `tool` (and legacy `function`) results become `functionResponse` parts in a user
///   turn; consecutive results share one turn, as Gemini expects for parallel calls. The
///   function name is resolved from the assistant tool call with the same id. Content that
///   is a JSON object is sent as is, anything else as `{"content": <text>}`.
/// * Image `data:` URLs become `inlineData`; other URLs become `fileData` (Gemini fetches
///   them, not the gateway). `input_audio` and `file` data become `inlineData`.
/// * Tool call ids are not forwarded: Gemini pairs calls and results by name and order,
///   and an id it did not issue would not mean anything to it.
/// * Every `functionCall` part carries a `thoughtSignature`: the one Gemini issued when
///   the call came through a Gemini ingress or upstream, else [`SKIP_THOUGHT_SIGNATURE`].
/// * Dropped: `reasoning_content` of earlier turns, `user`, `parallel_tool_calls`,
///   `reasoning_effort`, `logprobs` and the rest of the OpenAI-only fields.
pub fn to_gemini_request(
    req: &oa::ChatCompletionRequest,
) -> Result<g::GenerateContentRequest, GeminiTranslateError> {
    let mut system_parts: Vec<g::Part> = Vec::new();
    let mut contents: Vec<g::Content> = Vec::new();
    let mut call_names: HashMap<&str, &str> = HashMap::new();

    for (index, msg) in req.messages.iter().enumerate() {
        match msg.role {
            oa::Role::System | oa::Role::Developer => {
                if let Some(content) = &msg.content {
                    let text = content.joined_text();
                    if !text.is_empty() {
                        system_parts.push(g::Part::text(text));
                    }
                }
            }
            oa::Role::User => {
                let parts = match &msg.content {
                    Some(content) => user_parts(index, content)?,
                    None => Vec::new(),
                };
                push_content(&mut contents, g::Role::User, parts);
            }
            oa::Role::Assistant => {
                let mut parts = Vec::new();
                if let Some(content) = &msg.content {
                    let text = content.joined_text();
                    if !text.is_empty() {
                        parts.push(g::Part::text(text));
                    }
                }
                for call in msg.tool_calls.iter().flatten() {
                    call_names.insert(call.id.as_str(), call.function.name.as_str());
                    let mut part = function_call_part(index, &call.id, &call.function)?;
                    part.thought_signature = Some(
                        call.thought_signature
                            .clone()
                            .unwrap_or_else(|| SKIP_THOUGHT_SIGNATURE.to_owned()),
                    );
                    parts.push(part);
                }
                if let Some(call) = &msg.function_call {
                    let mut part = function_call_part(index, &call.name, call)?;
                    part.thought_signature = Some(SKIP_THOUGHT_SIGNATURE.to_owned());
                    parts.push(part);
                }
                push_content(&mut contents, g::Role::Model, parts);
            }
            oa::Role::Tool | oa::Role::Function => {
                let name = match msg.tool_call_id.as_deref() {
                    Some(id) => match call_names.get(id) {
                        Some(name) => (*name).to_owned(),
                        None => {
                            return Err(GeminiTranslateError::UnknownToolCallId {
                                index,
                                id: id.to_owned(),
                            })
                        }
                    },
                    None => msg
                        .name
                        .clone()
                        .ok_or(GeminiTranslateError::MissingToolCallId { index })?,
                };
                let text = msg
                    .content
                    .as_ref()
                    .map(oa::MessageContent::joined_text)
                    .unwrap_or_default();
                let part = g::Part {
                    function_response: Some(g::FunctionResponse {
                        id: None,
                        name,
                        response: function_response_body(text),
                        extra: Map::new(),
                    }),
                    ..g::Part::default()
                };
                push_function_response(&mut contents, part);
            }
        }
    }

    if contents.is_empty() {
        return Err(GeminiTranslateError::NoContents);
    }

    let mut tools = Vec::new();
    let mut declarations = Vec::new();
    for tool in req.tools.iter().flatten() {
        if tool.kind != "function" {
            return Err(GeminiTranslateError::UnsupportedTool {
                kind: tool.kind.clone(),
            });
        }
        declarations.push(function_declaration(&tool.function));
    }
    for function in req.functions.iter().flatten() {
        declarations.push(function_declaration(function));
    }
    if !declarations.is_empty() {
        tools.push(g::Tool {
            function_declarations: declarations,
            extra: Map::new(),
        });
    }

    let generation_config = generation_config(req);

    Ok(g::GenerateContentRequest {
        contents,
        system_instruction: (!system_parts.is_empty()).then(|| g::Content {
            role: None,
            parts: system_parts,
            extra: Map::new(),
        }),
        tools,
        tool_config: tool_config(req),
        generation_config: (!generation_config.is_empty()).then_some(generation_config),
        safety_settings: Vec::new(),
        extra: Map::new(),
    })
}

/// Appends a turn, skipping empty ones (Gemini rejects a content without parts).
fn push_content(contents: &mut Vec<g::Content>, role: g::Role, parts: Vec<g::Part>) {
    if parts.is_empty() {
        return;
    }
    contents.push(g::Content {
        role: Some(role),
        parts,
        extra: Map::new(),
    });
}

/// Adds a function response to the previous turn when that turn holds only function
/// responses, so the answers to parallel calls travel together.
fn push_function_response(contents: &mut Vec<g::Content>, part: g::Part) {
    if let Some(last) = contents.last_mut() {
        if last.role == Some(g::Role::User)
            && last.parts.iter().all(|p| p.function_response.is_some())
        {
            last.parts.push(part);
            return;
        }
    }
    push_content(contents, g::Role::User, vec![part]);
}

fn function_response_body(text: String) -> Value {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => {
            let mut map = Map::new();
            map.insert("content".to_owned(), Value::String(text));
            Value::Object(map)
        }
    }
}

fn function_call_part(
    index: usize,
    id: &str,
    call: &oa::FunctionCall,
) -> Result<g::Part, GeminiTranslateError> {
    let args = if call.arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str::<Value>(&call.arguments).map_err(|e| {
            GeminiTranslateError::InvalidToolArguments {
                index,
                id: id.to_owned(),
                reason: e.to_string(),
            }
        })?
    };
    if !args.is_object() {
        return Err(GeminiTranslateError::ToolArgumentsNotObject {
            index,
            id: id.to_owned(),
        });
    }
    Ok(g::Part {
        function_call: Some(g::FunctionCall {
            id: None,
            name: call.name.clone(),
            args: Some(args),
            extra: Map::new(),
        }),
        ..g::Part::default()
    })
}

fn user_parts(
    index: usize,
    content: &oa::MessageContent,
) -> Result<Vec<g::Part>, GeminiTranslateError> {
    let parts = match content {
        oa::MessageContent::Text(text) => vec![g::Part::text(text.clone())],
        oa::MessageContent::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                out.push(user_part(index, part)?);
            }
            out
        }
    };
    Ok(parts)
}

fn user_part(index: usize, part: &oa::ContentPart) -> Result<g::Part, GeminiTranslateError> {
    let unsupported = |kind: &str| GeminiTranslateError::UnsupportedContentPart {
        index,
        kind: kind.to_owned(),
    };
    match part {
        oa::ContentPart::Text(t) => Ok(g::Part::text(t.text.clone())),
        oa::ContentPart::ImageUrl(img) => url_part(index, &img.image_url.url),
        oa::ContentPart::InputAudio(audio) => {
            let mime_type = match audio.input_audio.format.as_str() {
                "mp3" => "audio/mp3".to_owned(),
                other => format!("audio/{other}"),
            };
            Ok(inline_part(mime_type, audio.input_audio.data.clone()))
        }
        oa::ContentPart::File(file) => match &file.file.file_data {
            Some(data) => url_part(index, data),
            None => Err(unsupported("file (by file_id)")),
        },
        oa::ContentPart::Unknown(v) => Err(unsupported(
            v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        )),
    }
}

/// A `data:` URL becomes inline bytes; any other URL a file reference.
fn url_part(index: usize, url: &str) -> Result<g::Part, GeminiTranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or(GeminiTranslateError::InvalidDataUrl { index })?;
        let header = header
            .strip_suffix(";base64")
            .ok_or(GeminiTranslateError::InvalidDataUrl { index })?;
        let mime_type = header.split(';').next().unwrap_or_default();
        if mime_type.is_empty() || data.is_empty() {
            return Err(GeminiTranslateError::InvalidDataUrl { index });
        }
        return Ok(inline_part(mime_type.to_owned(), data.to_owned()));
    }
    Ok(g::Part {
        file_data: Some(g::FileData {
            mime_type: guess_mime_type(url).map(str::to_owned),
            file_uri: url.to_owned(),
            extra: Map::new(),
        }),
        ..g::Part::default()
    })
}

fn inline_part(mime_type: String, data: String) -> g::Part {
    g::Part {
        inline_data: Some(g::Blob {
            mime_type,
            data,
            extra: Map::new(),
        }),
        ..g::Part::default()
    }
}

/// Gemini wants a MIME type with most file URIs; OpenAI image URLs carry none, so guess
/// it from the extension of the path.
fn guess_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    let mime = match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => return None,
    };
    Some(mime)
}

fn function_declaration(f: &oa::FunctionDefinition) -> g::FunctionDeclaration {
    g::FunctionDeclaration {
        name: f.name.clone(),
        description: f.description.clone(),
        parameters: f
            .parameters
            .as_ref()
            .map(sanitize_schema)
            .filter(|p| !is_empty_object_schema(p)),
        extra: Map::new(),
    }
}

/// Gemini rejects an OBJECT schema without properties ("should be non-empty for OBJECT
/// type"), which is how OpenAI clients declare a function without arguments: omit it.
fn is_empty_object_schema(schema: &Value) -> bool {
    let no_properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    schema.get("type").and_then(Value::as_str) == Some("object") && no_properties
}

/// Schema keys Gemini's OpenAPI-subset `Schema` accepts. Everything else is dropped,
/// recursively, because Gemini answers 400 "Unknown name" for it; in particular
/// `$schema`, `$id`, `$defs`, `definitions`, `additionalProperties`, `strict`,
/// `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`, `uniqueItems`, `examples`,
/// `oneOf`/`allOf`/`not` and `patternProperties`. Two rewrites keep meaning instead:
/// `const: x` becomes `enum: [x]`, and `type: [T, "null"]` becomes `type: T` with
/// `nullable: true`. String `format`s other than `enum` and `date-time` are dropped too.
/// `$ref` is dropped, so schemas that rely on references lose that sub-schema.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Rewrites a JSON Schema into the subset Gemini accepts (see [`SCHEMA_KEYS`]).
pub fn sanitize_schema(schema: &Value) -> Value {
    let Value::Object(obj) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    let props = props
                        .iter()
                        .map(|(name, s)| (name.clone(), sanitize_schema(s)))
                        .collect();
                    out.insert(key.clone(), Value::Object(props));
                }
            }
            "items" => {
                out.insert(key.clone(), sanitize_schema(value));
            }
            "anyOf" => {
                if let Value::Array(items) = value {
                    out.insert(
                        key.clone(),
                        Value::Array(items.iter().map(sanitize_schema).collect()),
                    );
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    let non_null: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".to_owned(), Value::Bool(true));
                    }
                    if let Some(first) = non_null.first() {
                        out.insert(key.clone(), (*first).clone());
                    }
                }
                other => {
                    out.insert(key.clone(), other.clone());
                }
            },
            "const" => {
                out.insert("enum".to_owned(), Value::Array(vec![value.clone()]));
            }
            "format" => {
                let is_string = obj.get("type").and_then(Value::as_str) == Some("string");
                let keep = !is_string || matches!(value.as_str(), Some("enum" | "date-time"));
                if keep {
                    out.insert(key.clone(), value.clone());
                }
            }
            k if SCHEMA_KEYS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn tool_config(req: &oa::ChatCompletionRequest) -> Option<g::ToolConfig> {
    let (mode, allowed) = match (&req.tool_choice, &req.function_call) {
        (Some(oa::ToolChoice::Mode(mode)), _) => (
            match mode {
                oa::ToolChoiceMode::None => g::FunctionCallingMode::None,
                oa::ToolChoiceMode::Auto => g::FunctionCallingMode::Auto,
                oa::ToolChoiceMode::Required => g::FunctionCallingMode::Any,
            },
            Vec::new(),
        ),
        (Some(oa::ToolChoice::Named(named)), _) => (
            g::FunctionCallingMode::Any,
            vec![named.function.name.clone()],
        ),
        (None, Some(oa::FunctionCallChoice::Mode(mode))) => match mode.as_str() {
            "none" => (g::FunctionCallingMode::None, Vec::new()),
            _ => (g::FunctionCallingMode::Auto, Vec::new()),
        },
        (None, Some(oa::FunctionCallChoice::Named(named))) => {
            (g::FunctionCallingMode::Any, vec![named.name.clone()])
        }
        (None, None) => return None,
    };
    Some(g::ToolConfig {
        function_calling_config: Some(g::FunctionCallingConfig {
            mode: Some(mode),
            allowed_function_names: allowed,
            extra: Map::new(),
        }),
        extra: Map::new(),
    })
}

fn generation_config(req: &oa::ChatCompletionRequest) -> g::GenerationConfig {
    let (response_mime_type, response_schema) = match &req.response_format {
        Some(f) if f.kind == "json_object" => (Some("application/json".to_owned()), None),
        Some(f) if f.kind == "json_schema" => (
            Some("application/json".to_owned()),
            f.json_schema
                .as_ref()
                .and_then(|s| s.get("schema"))
                .map(sanitize_schema),
        ),
        _ => (None, None),
    };
    g::GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_output_tokens(),
        stop_sequences: req.stop.as_ref().map(oa::Stop::to_vec).unwrap_or_default(),
        candidate_count: req.n,
        response_mime_type,
        response_schema,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..g::GenerationConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Response: Gemini -> OpenAI
// ---------------------------------------------------------------------------------------

/// Maps a Gemini finish reason to OpenAI's. `STOP` with function calls in the candidate
/// is `tool_calls`; safety-style blocks (`SAFETY`, `RECITATION`, `BLOCKLIST`,
/// `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY`) are `content_filter`; everything else,
/// unknown values included, is `stop`.
pub fn map_finish_reason(reason: &g::FinishReason, has_tool_calls: bool) -> oa::FinishReason {
    match reason {
        g::FinishReason::MaxTokens => oa::FinishReason::Length,
        g::FinishReason::Safety
        | g::FinishReason::Recitation
        | g::FinishReason::Blocklist
        | g::FinishReason::ProhibitedContent
        | g::FinishReason::Spii
        | g::FinishReason::ImageSafety => oa::FinishReason::ContentFilter,
        _ if has_tool_calls => oa::FinishReason::ToolCalls,
        _ => oa::FinishReason::Stop,
    }
}

/// Normalised usage of a Gemini response (see [`g::UsageMetadata::to_usage`]).
pub fn gemini_usage(resp: &g::GenerateContentResponse) -> Option<Usage> {
    resp.usage_metadata.as_ref().map(g::UsageMetadata::to_usage)
}

/// What one candidate (or one stream delta of it) says, in OpenAI terms.
struct CandidateParts {
    text: String,
    has_text: bool,
    reasoning: String,
    calls: Vec<(g::FunctionCall, Option<String>)>,
}

fn split_parts(candidate: &g::Candidate) -> CandidateParts {
    let mut out = CandidateParts {
        text: String::new(),
        has_text: false,
        reasoning: String::new(),
        calls: Vec::new(),
    };
    for part in candidate.content.iter().flat_map(|c| c.parts.iter()) {
        match part.kind() {
            g::PartKind::Text(t) => {
                out.text.push_str(t);
                out.has_text = true;
            }
            g::PartKind::Thought(t) => out.reasoning.push_str(t),
            g::PartKind::FunctionCall(call) => {
                out.calls
                    .push((call.clone(), part.thought_signature.clone()));
            }
            _ => {}
        }
    }
    out
}

/// OpenAI arguments are a JSON string; absent args are `{}`.
fn arguments_json(call: &g::FunctionCall) -> String {
    match &call.args {
        Some(args) => args.to_string(),
        None => "{}".to_owned(),
    }
}

fn call_id(call: &g::FunctionCall, index: usize) -> String {
    match &call.id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => format!("call_{index}"),
    }
}

fn candidate_index(candidate: &g::Candidate, position: usize) -> u32 {
    candidate
        .index
        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX))
}

/// Translates a Gemini `generateContent` response into an OpenAI chat completion.
///
/// Text parts are joined into `content`, thought parts into `reasoning_content`, function
/// calls become `tool_calls` with the Gemini id or `call_<n>` (n counts the calls of the
/// candidate). A prompt blocked before any candidate gives one empty choice finished by
/// `content_filter`.
pub fn from_gemini_response(
    resp: &g::GenerateContentResponse,
    id: &str,
    created: u64,
    model: &str,
) -> oa::ChatCompletionResponse {
    let mut choices = Vec::with_capacity(resp.candidates.len());
    for (position, candidate) in resp.candidates.iter().enumerate() {
        let parts = split_parts(candidate);
        let tool_calls: Vec<oa::ToolCall> = parts
            .calls
            .iter()
            .enumerate()
            .map(|(i, (call, signature))| {
                let mut tc =
                    oa::ToolCall::function(call_id(call, i), &call.name, arguments_json(call));
                tc.thought_signature.clone_from(signature);
                tc
            })
            .collect();
        let has_tool_calls = !tool_calls.is_empty();
        let mut message = oa::ChatMessage::empty(oa::Role::Assistant);
        if parts.has_text || !has_tool_calls {
            message.content = Some(oa::MessageContent::Text(parts.text));
        }
        if !parts.reasoning.is_empty() {
            message.reasoning_content = Some(parts.reasoning);
        }
        if has_tool_calls {
            message.tool_calls = Some(tool_calls);
        }
        let reason = candidate
            .finish_reason
            .clone()
            .unwrap_or(g::FinishReason::Stop);
        choices.push(oa::ChatChoice {
            index: candidate_index(candidate, position),
            message,
            finish_reason: Some(map_finish_reason(&reason, has_tool_calls)),
            logprobs: None,
            extra: Map::new(),
        });
    }
    if choices.is_empty() {
        let blocked = resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
        choices.push(oa::ChatChoice {
            index: 0,
            message: oa::ChatMessage::text(oa::Role::Assistant, ""),
            finish_reason: Some(if blocked {
                oa::FinishReason::ContentFilter
            } else {
                oa::FinishReason::Stop
            }),
            logprobs: None,
            extra: Map::new(),
        });
    }
    oa::ChatCompletionResponse {
        id: id.to_owned(),
        object: oa::CHAT_COMPLETION_OBJECT.to_owned(),
        created,
        model: model.to_owned(),
        choices,
        usage: gemini_usage(resp).map(|u| oa::CompletionUsage::from(&u)),
        system_fingerprint: None,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Stream: Gemini events -> OpenAI chunks
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct StreamChoice {
    role_sent: bool,
    tool_calls: u32,
    finished: bool,
}

/// Translates `streamGenerateContent?alt=sse` events into OpenAI chat chunks.
///
/// Feed each event's data, parsed with [`g::StreamPayload::parse`], to
/// [`on_payload`](Self::on_payload) (or a parsed response to [`on_event`](Self::on_event);
/// an error body parsed as a response is still recognised), then call
/// [`finish`](Self::finish) once at the end of the stream. After an upstream error,
/// [`upstream_error`](Self::upstream_error) returns it and no more chunks are produced.
///
/// Output per choice: the first chunk carries `role: assistant`; text becomes `content`
/// deltas and thoughts `reasoning_content` deltas; each function call (Gemini sends them
/// whole) becomes one `tool_calls` delta with id, name and complete arguments, with
/// increasing `index`; a finish reason comes in its own chunk with an empty delta. With
/// `include_usage`, `finish` adds the usage-only chunk (empty `choices`) OpenAI sends for
/// `stream_options.include_usage`. Usage for billing is always available from
/// [`usage`](Self::usage), whatever the client asked for.
#[derive(Debug)]
pub struct GeminiStreamTranslator {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    choices: BTreeMap<u32, StreamChoice>,
    usage: Option<g::UsageMetadata>,
    error: Option<g::ErrorBody>,
    blocked: bool,
    finished: bool,
}

impl GeminiStreamTranslator {
    /// `id`, `created` and `model` are what the client sees on every chunk.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        include_usage: bool,
    ) -> Self {
        Self {
            id: id.into(),
            created,
            model: model.into(),
            include_usage,
            choices: BTreeMap::new(),
            usage: None,
            error: None,
            blocked: false,
            finished: false,
        }
    }

    fn chunk(
        &self,
        index: u32,
        delta: oa::ChunkDelta,
        finish: Option<oa::FinishReason>,
    ) -> oa::ChatCompletionChunk {
        let mut chunk =
            oa::ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone());
        chunk.choices.push(oa::ChunkChoice {
            index,
            delta,
            finish_reason: finish,
            logprobs: None,
            extra: Map::new(),
        });
        chunk
    }

    /// Translates one parsed `data:` payload: a response event, or an upstream error,
    /// which is recorded (see [`upstream_error`](Self::upstream_error)) and ends the
    /// output; `finish` then emits nothing, and the caller reports the error its own way.
    pub fn on_payload(&mut self, payload: g::StreamPayload) -> Vec<oa::ChatCompletionChunk> {
        match payload {
            g::StreamPayload::Response(ev) => self.on_event(ev),
            g::StreamPayload::Error(e) => {
                self.on_error(e.error);
                Vec::new()
            }
        }
    }

    /// Records an upstream error reported in the stream (see [`on_payload`](Self::on_payload)).
    pub fn on_error(&mut self, error: g::ErrorBody) {
        self.error = Some(error);
    }

    /// Translates one upstream event into zero or more chunks.
    pub fn on_event(&mut self, ev: g::GenerateContentResponse) -> Vec<oa::ChatCompletionChunk> {
        if let Some(error) = ev.upstream_error() {
            self.on_error(error);
            return Vec::new();
        }
        if self.error.is_some() {
            return Vec::new();
        }
        if let Some(usage) = ev.usage_metadata {
            self.usage = Some(usage);
        }
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        if ev.candidates.is_empty()
            && ev
                .prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
        {
            self.blocked = true;
            let state = self.choices.entry(0).or_default();
            if !state.finished {
                let first = !state.role_sent;
                state.role_sent = true;
                state.finished = true;
                if first {
                    out.push(self.chunk(0, role_delta(), None));
                }
                out.push(self.chunk(
                    0,
                    oa::ChunkDelta::default(),
                    Some(oa::FinishReason::ContentFilter),
                ));
            }
            return out;
        }
        for (position, candidate) in ev.candidates.iter().enumerate() {
            let index = candidate_index(candidate, position);
            let parts = split_parts(candidate);
            let state = self.choices.entry(index).or_default();
            if state.finished {
                continue;
            }
            let mut delta = oa::ChunkDelta::default();
            if !state.role_sent {
                state.role_sent = true;
                delta.role = Some(oa::Role::Assistant);
            }
            if !parts.reasoning.is_empty() {
                delta.reasoning_content = Some(parts.reasoning);
            }
            if !parts.text.is_empty() {
                delta.content = Some(parts.text);
            }
            if !parts.calls.is_empty() {
                let mut calls = Vec::with_capacity(parts.calls.len());
                for (call, _) in &parts.calls {
                    let n = state.tool_calls;
                    state.tool_calls = n.saturating_add(1);
                    calls.push(oa::ToolCallDelta {
                        index: n,
                        id: Some(call_id(call, usize::try_from(n).unwrap_or(usize::MAX))),
                        kind: Some("function".to_owned()),
                        function: Some(oa::FunctionCallDelta {
                            name: Some(call.name.clone()),
                            arguments: Some(arguments_json(call)),
                        }),
                    });
                }
                delta.tool_calls = Some(calls);
            }
            let finish = candidate.finish_reason.as_ref().map(|r| {
                state.finished = true;
                map_finish_reason(r, state.tool_calls > 0)
            });
            if delta != oa::ChunkDelta::default() {
                out.push(self.chunk(index, delta, None));
            }
            if let Some(reason) = finish {
                out.push(self.chunk(index, oa::ChunkDelta::default(), Some(reason)));
            }
        }
        out
    }

    /// Ends the stream: closes choices that never got a finish reason (as `stop`, or
    /// `tool_calls` if they called functions) and, if asked, emits the usage chunk.
    /// Emits nothing more after an upstream error.
    pub fn finish(&mut self) -> Vec<oa::ChatCompletionChunk> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        if self.error.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let open: Vec<(u32, bool)> = self
            .choices
            .iter()
            .filter(|(_, s)| !s.finished)
            .map(|(i, s)| (*i, s.tool_calls > 0))
            .collect();
        for (index, has_tool_calls) in open {
            let reason = if has_tool_calls {
                oa::FinishReason::ToolCalls
            } else {
                oa::FinishReason::Stop
            };
            out.push(self.chunk(index, oa::ChunkDelta::default(), Some(reason)));
        }
        if self.include_usage {
            if let Some(usage) = self.usage() {
                let mut chunk =
                    oa::ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone());
                chunk.usage = Some(oa::CompletionUsage::from(&usage));
                out.push(chunk);
            }
        }
        out
    }

    /// The last (cumulative) usage the upstream reported, normalised.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(g::UsageMetadata::to_usage)
    }

    /// The error payload the upstream sent in the stream, if any.
    pub fn upstream_error(&self) -> Option<&g::ErrorBody> {
        self.error.as_ref()
    }

    /// True when the prompt was blocked (`promptFeedback.blockReason`) before any output.
    pub fn prompt_blocked(&self) -> bool {
        self.blocked
    }
}

fn role_delta() -> oa::ChunkDelta {
    oa::ChunkDelta {
        role: Some(oa::Role::Assistant),
        ..oa::ChunkDelta::default()
    }
}
