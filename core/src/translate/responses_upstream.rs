//! The OpenAI Responses API as an upstream protocol, for models served only through it:
//!
//! - [`hub_to_responses_request`]: a hub request becomes a `POST /responses` body.
//! - [`responses_to_hub_response`]: a response object becomes a hub completion.
//! - [`ResponsesToHubStream`]: Responses stream events become hub chunks (with usage).
//! - [`passthrough_body`] and [`rewrite_model`]: when the client speaks Responses too,
//!   the edge skips translation (as `/v1/messages` does against Anthropic): the client's
//!   body goes upstream with only `model` and `stream` set, so reasoning items with their
//!   `encrypted_content`, hosted tools and every other field pass untouched, and only the
//!   `model` of the answer is rewritten. Run [`ResponsesToHubStream`] beside the raw
//!   events to read usage for billing.
//!
//! Mapping choices: the whole conversation is sent as input items (`store: false`: the
//! gateway never asks the upstream to keep conversations); function tools are sent with
//! `strict: false` unless the client asked for strict (Responses defaults to strict,
//! chat completions does not); `max_tokens` below the Responses minimum of 16 is raised
//! to 16. Refused, because dropping them would change the answer: `n > 1`, `stop`,
//! audio input and non-function tools. Dropped (sampling or extras): penalties, seed,
//! `logit_bias`, `logprobs`, earlier turns' `reasoning_content` (Responses only takes
//! reasoning back as the encrypted items it issued).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::anthropic::TranslateError;
use crate::protocol::openai as oa;
use crate::protocol::responses as rs;
use crate::usage::Usage;

/// The Responses API's smallest `max_output_tokens`.
pub const MIN_MAX_OUTPUT_TOKENS: u64 = 16;

/// The request path relative to an OpenAI-style base URL (`.../v1`).
pub const UPSTREAM_PATH: &str = "responses";

// ---------------------------------------------------------------------------------------
// Request: hub -> Responses
// ---------------------------------------------------------------------------------------

/// Builds a Responses request from a hub request. `model` is the upstream model name.
pub fn hub_to_responses_request(
    req: &oa::ChatCompletionRequest,
    model: &str,
) -> Result<rs::ResponsesRequest, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::invalid(
            "n > 1 is not supported by this model",
            "n",
        ));
    }
    if req.stop.as_ref().is_some_and(|s| !s.to_vec().is_empty()) {
        return Err(TranslateError::invalid(
            "stop sequences are not supported by this model",
            "stop",
        ));
    }

    let mut items = Vec::new();
    // Legacy function calls have no id: give each a deterministic one that the following
    // `role: function` message finds by name.
    let mut legacy_ids: HashMap<String, String> = HashMap::new();
    for (i, msg) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        match msg.role {
            oa::Role::System | oa::Role::Developer => {
                let text = msg
                    .content
                    .as_ref()
                    .map(oa::MessageContent::joined_text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    let role = if msg.role == oa::Role::System {
                        rs::MessageRole::System
                    } else {
                        rs::MessageRole::Developer
                    };
                    items.push(easy_message(role, rs::MessageContent::Text(text)));
                }
            }
            oa::Role::User => {
                let content = match &msg.content {
                    None => continue,
                    Some(oa::MessageContent::Text(s)) => rs::MessageContent::Text(s.clone()),
                    Some(oa::MessageContent::Parts(parts)) => {
                        let mut out = Vec::with_capacity(parts.len());
                        for (k, p) in parts.iter().enumerate() {
                            out.push(input_part(p, &format!("{param}.content[{k}]"))?);
                        }
                        rs::MessageContent::Parts(out)
                    }
                };
                items.push(easy_message(rs::MessageRole::User, content));
            }
            oa::Role::Assistant => {
                let text = msg
                    .content
                    .as_ref()
                    .map(oa::MessageContent::joined_text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    items.push(easy_message(
                        rs::MessageRole::Assistant,
                        rs::MessageContent::Text(text),
                    ));
                }
                for call in msg.tool_calls.iter().flatten() {
                    items.push(function_call(&call.id, &call.function));
                }
                if let Some(fc) = &msg.function_call {
                    let id = format!("call_legacy_{i}");
                    legacy_ids.insert(fc.name.clone(), id.clone());
                    items.push(function_call(&id, fc));
                }
            }
            oa::Role::Tool | oa::Role::Function => {
                let call_id = match (&msg.tool_call_id, msg.role) {
                    (Some(id), _) => id.clone(),
                    (None, oa::Role::Function) => msg
                        .name
                        .as_ref()
                        .and_then(|n| legacy_ids.get(n))
                        .cloned()
                        .ok_or_else(|| {
                            TranslateError::invalid(
                                "function message does not answer an earlier function_call",
                                format!("{param}.name"),
                            )
                        })?,
                    (None, _) => {
                        return Err(TranslateError::invalid(
                            "tool message without tool_call_id",
                            format!("{param}.tool_call_id"),
                        ))
                    }
                };
                let output = msg
                    .content
                    .as_ref()
                    .map(oa::MessageContent::joined_text)
                    .unwrap_or_default();
                items.push(rs::Item::FunctionCallOutput(rs::FunctionCallOutputItem {
                    id: None,
                    call_id,
                    output: rs::MessageContent::Text(output),
                    status: None,
                    extra: Map::new(),
                }));
            }
        }
    }
    if items.is_empty() {
        return Err(TranslateError::invalid(
            "at least one message is required",
            "messages",
        ));
    }

    let mut tools = Vec::new();
    for (j, tool) in req.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(TranslateError::invalid(
                format!("tool type `{}` is not supported by this model", tool.kind),
                format!("tools[{j}].type"),
            ));
        }
        tools.push(function_tool(&tool.function));
    }
    for f in req.functions.iter().flatten() {
        tools.push(function_tool(f));
    }

    let tool_choice = match (&req.tool_choice, &req.function_call) {
        (Some(oa::ToolChoice::Mode(mode)), _) => Some(rs::ToolChoice::Mode(match mode {
            oa::ToolChoiceMode::None => rs::ToolChoiceMode::None,
            oa::ToolChoiceMode::Auto => rs::ToolChoiceMode::Auto,
            oa::ToolChoiceMode::Required => rs::ToolChoiceMode::Required,
        })),
        (Some(oa::ToolChoice::Named(n)), _) => Some(named_function(&n.function.name)),
        (None, Some(oa::FunctionCallChoice::Named(f))) => Some(named_function(&f.name)),
        (None, Some(oa::FunctionCallChoice::Mode(m))) if m == "none" => {
            Some(rs::ToolChoice::Mode(rs::ToolChoiceMode::None))
        }
        _ => None,
    };

    let format = match &req.response_format {
        None => None,
        Some(f) if f.kind == "text" => None,
        Some(f) if f.kind == "json_object" => Some(rs::TextFormat::JsonObject),
        Some(f) if f.kind == "json_schema" => {
            let js = f.json_schema.as_ref();
            let field = |k: &str| js.and_then(|v| v.get(k));
            Some(rs::TextFormat::JsonSchema {
                name: field("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema: field("schema")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
                description: field("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                strict: field("strict").and_then(Value::as_bool),
            })
        }
        Some(f) => {
            return Err(TranslateError::invalid(
                format!("response_format `{}` is not supported", f.kind),
                "response_format",
            ))
        }
    };

    Ok(rs::ResponsesRequest {
        model: model.to_owned(),
        input: Some(rs::Input::Items(items)),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        max_output_tokens: req
            .max_output_tokens()
            .map(|n| n.max(MIN_MAX_OUTPUT_TOKENS)),
        text: format.map(|f| rs::TextConfig {
            format: Some(f),
            verbosity: None,
            extra: Map::new(),
        }),
        reasoning: req
            .reasoning_effort
            .as_ref()
            .map(|effort| rs::ReasoningConfig {
                effort: Some(effort.clone()),
                summary: None,
                extra: Map::new(),
            }),
        stream: req.stream.filter(|s| *s),
        store: Some(false),
        temperature: req.temperature,
        top_p: req.top_p,
        user: req.user.clone(),
        ..Default::default()
    })
}

fn easy_message(role: rs::MessageRole, content: rs::MessageContent) -> rs::Item {
    rs::Item::Message(rs::MessageItem {
        kind: None,
        id: None,
        role,
        content,
        status: None,
        extra: Map::new(),
    })
}

fn function_call(call_id: &str, f: &oa::FunctionCall) -> rs::Item {
    rs::Item::FunctionCall(rs::FunctionCallItem {
        id: None,
        call_id: call_id.to_owned(),
        name: f.name.clone(),
        arguments: f.arguments.clone(),
        namespace: None,
        status: None,
        extra: Map::new(),
    })
}

fn named_function(name: &str) -> rs::ToolChoice {
    rs::ToolChoice::Named(rs::NamedToolChoice {
        kind: "function".to_owned(),
        name: name.to_owned(),
    })
}

fn function_tool(f: &oa::FunctionDefinition) -> rs::Tool {
    rs::Tool::Function(rs::FunctionTool {
        name: f.name.clone(),
        description: f.description.clone(),
        parameters: Some(
            f.parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        ),
        // Responses defaults to strict, which rejects most chat-style schemas.
        strict: Some(f.strict.unwrap_or(false)),
        extra: Map::new(),
    })
}

fn input_part(p: &oa::ContentPart, param: &str) -> Result<rs::ContentPart, TranslateError> {
    match p {
        oa::ContentPart::Text(t) => Ok(rs::ContentPart::input_text(t.text.clone())),
        oa::ContentPart::ImageUrl(img) => Ok(rs::ContentPart::InputImage(rs::ImagePart {
            image_url: Some(img.image_url.url.clone()),
            file_id: None,
            detail: Some(
                img.image_url
                    .detail
                    .clone()
                    .unwrap_or_else(|| "auto".to_owned()),
            ),
            extra: Map::new(),
        })),
        oa::ContentPart::File(f) => Ok(rs::ContentPart::InputFile(rs::FilePart {
            file_data: f.file.file_data.clone(),
            file_id: f.file.file_id.clone(),
            file_url: None,
            filename: f.file.filename.clone(),
            extra: Map::new(),
        })),
        oa::ContentPart::InputAudio(_) => Err(TranslateError::invalid(
            "audio input is not supported by this model",
            param,
        )),
        oa::ContentPart::Unknown(v) => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
            Err(TranslateError::invalid(
                format!("unsupported content part type `{kind}`"),
                param,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Passthrough: Responses ingress against a Responses upstream
// ---------------------------------------------------------------------------------------

/// The `include` value that makes a Responses upstream return reasoning items with their
/// `encrypted_content`, the only way they can be sent back when nothing is stored.
pub const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// The client's own body for a Responses upstream: `model` (the upstream's name) and
/// `stream` are set, `store` is forced false and `include` gains
/// [`ENCRYPTED_REASONING`] (once); everything else passes untouched.
pub fn passthrough_body(body: &Value, upstream_model: &str, stream: bool) -> Value {
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(upstream_model.to_owned()));
        // Nothing is stored upstream, so reasoning items the client echoes back are only
        // accepted with their `encrypted_content`: ask for it, or the next turn gets 400
        // "Item with id 'rs_…' not found".
        obj.insert("store".into(), Value::Bool(false));
        let mut include = match obj.remove("include") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        if !include
            .iter()
            .any(|v| v.as_str() == Some(ENCRYPTED_REASONING))
        {
            include.push(Value::String(ENCRYPTED_REASONING.to_owned()));
        }
        obj.insert("include".into(), Value::Array(include));
        if stream {
            obj.insert("stream".into(), Value::Bool(true));
        } else {
            obj.remove("stream");
        }
    }
    body
}

/// Replaces the upstream's model name by the client's in a response object or in the
/// data of a stream event (`response.model` of lifecycle events), so members never see
/// upstream model names. Anything else is left alone.
pub fn rewrite_model(value: &mut Value, model: &str) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    if obj.get("object").and_then(Value::as_str) == Some(rs::RESPONSE_OBJECT) {
        obj.insert("model".into(), Value::String(model.to_owned()));
    }
    if let Some(Value::Object(resp)) = obj.get_mut("response") {
        if resp.contains_key("model") {
            resp.insert("model".into(), Value::String(model.to_owned()));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Response: Responses -> hub
// ---------------------------------------------------------------------------------------

/// The hub finish reason of a finished response: `length` / `content_filter` for an
/// incomplete one, `tool_calls` when it called tools, else `stop`.
pub fn finish_reason(resp: &rs::Response, has_tool_calls: bool) -> oa::FinishReason {
    if resp.status == Some(rs::ResponseStatus::Incomplete) {
        let reason = resp.incomplete_details.as_ref().map(|d| d.reason.as_str());
        return match reason {
            Some("content_filter") => oa::FinishReason::ContentFilter,
            _ => oa::FinishReason::Length,
        };
    }
    if has_tool_calls {
        oa::FinishReason::ToolCalls
    } else {
        oa::FinishReason::Stop
    }
}

/// The error of a failed (or cancelled) response, as an OpenAI error body.
pub fn response_error(resp: &rs::Response) -> Option<oa::ErrorResponse> {
    match (&resp.status, &resp.error) {
        (_, Some(e)) => Some(error_body(&e.code, &e.message)),
        (Some(rs::ResponseStatus::Failed | rs::ResponseStatus::Cancelled), None) => Some(
            error_body("server_error", "the upstream response did not complete"),
        ),
        _ => None,
    }
}

fn error_body(code: &str, message: &str) -> oa::ErrorResponse {
    let kind = match code {
        "rate_limit_exceeded" => "rate_limit_error",
        "invalid_prompt" | "invalid_request_error" => "invalid_request_error",
        _ => "server_error",
    };
    let mut e = oa::ErrorResponse::new(kind, message);
    if !code.is_empty() {
        e.error.code = Some(Value::String(code.to_owned()));
    }
    e
}

/// A custom tool call in hub form: a function with `{"input": <text>}` arguments.
fn custom_arguments(input: &str) -> String {
    serde_json::json!({ "input": input }).to_string()
}

/// Builds a hub completion from a response object. `id`, `created` and `model` are what
/// the client sees (the upstream's id and model name are not shown).
///
/// Output text of every message is joined into `content`, refusals into `refusal`,
/// reasoning summaries (and raw reasoning text) into `reasoning_content`; function and
/// custom tool calls become `tool_calls` (custom ones with `{"input": ...}` arguments).
/// Hosted tool activity has no hub form and is left out.
pub fn responses_to_hub_response(
    resp: &rs::Response,
    id: &str,
    created: u64,
    model: &str,
) -> oa::ChatCompletionResponse {
    let mut text = String::new();
    let mut refusal = String::new();
    let mut reasoning = Vec::new();
    let mut calls = Vec::new();
    for item in &resp.output {
        match item {
            rs::Item::Message(m) => match &m.content {
                rs::MessageContent::Text(s) => text.push_str(s),
                rs::MessageContent::Parts(parts) => {
                    for p in parts {
                        match p {
                            rs::ContentPart::OutputText(t) => text.push_str(&t.text),
                            rs::ContentPart::Refusal(r) => refusal.push_str(&r.refusal),
                            _ => {}
                        }
                    }
                }
            },
            rs::Item::Reasoning(r) => {
                let t = r.text();
                if !t.is_empty() {
                    reasoning.push(t);
                }
            }
            rs::Item::FunctionCall(c) => {
                calls.push(oa::ToolCall::function(&c.call_id, &c.name, &c.arguments));
            }
            rs::Item::CustomToolCall(c) => {
                calls.push(oa::ToolCall::function(
                    &c.call_id,
                    &c.name,
                    custom_arguments(&c.input),
                ));
            }
            _ => {}
        }
    }
    let has_calls = !calls.is_empty();
    let mut message = oa::ChatMessage::empty(oa::Role::Assistant);
    if !text.is_empty() || !has_calls {
        message.content = Some(oa::MessageContent::Text(text));
    }
    if !reasoning.is_empty() {
        message.reasoning_content = Some(reasoning.join("\n\n"));
    }
    if !refusal.is_empty() {
        message.refusal = Some(refusal);
    }
    if has_calls {
        message.tool_calls = Some(calls);
    }
    oa::ChatCompletionResponse {
        id: id.to_owned(),
        object: oa::CHAT_COMPLETION_OBJECT.to_owned(),
        created,
        model: model.to_owned(),
        choices: vec![oa::ChatChoice {
            index: 0,
            message,
            finish_reason: Some(finish_reason(resp, has_calls)),
            logprobs: None,
            extra: Map::new(),
        }],
        usage: resp
            .usage
            .as_ref()
            .map(|u| oa::CompletionUsage::from(&Usage::from(u))),
        system_fingerprint: None,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Stream: Responses events -> hub chunks
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Function,
    Custom,
}

/// A tool call item being streamed.
#[derive(Debug, Clone, Copy)]
struct CallState {
    /// Its hub `tool_calls[].index`.
    index: u32,
    kind: CallKind,
    /// Whether any argument (or input) text was streamed for it yet.
    streamed: bool,
}

/// Translates a Responses event stream into hub chunks.
///
/// `response.created` gives the role chunk; text, refusal and reasoning (summary or raw)
/// deltas become `content`, `refusal` and `reasoning_content` deltas (a blank line
/// between reasoning parts); each function or custom tool call item becomes a hub tool
/// call whose arguments stream as they come (custom input is JSON-escaped into
/// `{"input": "..."}` piece by piece); `response.completed`/`response.incomplete` give
/// the finish chunk and, with `include_usage`, the usage chunk.
///
/// After each call check [`error`](Self::error): `response.failed`, an `error` event, or
/// a stream that ended before a final event set it, and nothing more is produced. Usage
/// for billing is always available from [`usage`](Self::usage). Hosted tool activity and
/// unknown events are ignored (a new event type must not break the client's stream).
#[derive(Debug, Clone)]
pub struct ResponsesToHubStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    role_sent: bool,
    /// Tool calls by upstream output index.
    calls: BTreeMap<u32, CallState>,
    next_tool: u32,
    /// Reasoning parts seen, to separate them: (output index, summary/content index).
    reasoning_part: Option<(u32, u32)>,
    usage: Option<Usage>,
    done: bool,
    error: Option<oa::ErrorBody>,
    output_chars: u64,
}

impl ResponsesToHubStream {
    /// `id`, `created` and `model` are stamped on every chunk.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        include_usage: bool,
    ) -> Self {
        ResponsesToHubStream {
            id: id.into(),
            created,
            model: model.into(),
            include_usage,
            role_sent: false,
            calls: BTreeMap::new(),
            next_tool: 0,
            reasoning_part: None,
            usage: None,
            done: false,
            error: None,
            output_chars: 0,
        }
    }

    /// The upstream error that ended the stream, if any.
    pub fn error(&self) -> Option<&oa::ErrorBody> {
        self.error.as_ref()
    }

    /// Usage from the final response event.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Characters of text, refusal, reasoning and tool arguments streamed so far.
    pub fn output_chars(&self) -> u64 {
        self.output_chars
    }

    fn chunk(
        &self,
        delta: oa::ChunkDelta,
        finish: Option<oa::FinishReason>,
    ) -> oa::ChatCompletionChunk {
        let mut c = oa::ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone());
        c.choices.push(oa::ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
            extra: Map::new(),
        });
        c
    }

    fn count(&mut self, s: &str) {
        let n = u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
        self.output_chars = self.output_chars.saturating_add(n);
    }

    fn role(&mut self, out: &mut Vec<oa::ChatCompletionChunk>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(
                oa::ChunkDelta {
                    role: Some(oa::Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                },
                None,
            ));
        }
    }

    fn delta(&mut self, delta: oa::ChunkDelta, out: &mut Vec<oa::ChatCompletionChunk>) {
        self.role(out);
        out.push(self.chunk(delta, None));
    }

    fn tool_delta(
        &mut self,
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
        out: &mut Vec<oa::ChatCompletionChunk>,
    ) {
        self.count(&arguments);
        let delta = oa::ChunkDelta {
            tool_calls: Some(vec![oa::ToolCallDelta {
                index,
                kind: id.as_ref().map(|_| "function".to_owned()),
                id,
                function: Some(oa::FunctionCallDelta {
                    name,
                    arguments: Some(arguments),
                }),
            }]),
            ..Default::default()
        };
        self.delta(delta, out);
    }

    fn reasoning_delta(
        &mut self,
        part: (u32, u32),
        text: String,
        out: &mut Vec<oa::ChatCompletionChunk>,
    ) {
        if text.is_empty() {
            return;
        }
        let text = match self.reasoning_part {
            Some(p) if p != part => format!("\n\n{text}"),
            _ => text,
        };
        self.reasoning_part = Some(part);
        self.count(&text);
        self.delta(
            oa::ChunkDelta {
                reasoning_content: Some(text),
                ..Default::default()
            },
            out,
        );
    }

    /// Translates one upstream event.
    pub fn on_event(&mut self, event: rs::StreamEvent) -> Vec<oa::ChatCompletionChunk> {
        let mut out = Vec::new();
        if self.done || self.error.is_some() {
            return out;
        }
        match event {
            rs::StreamEvent::Created { .. } | rs::StreamEvent::InProgress { .. } => {
                self.role(&mut out);
            }
            rs::StreamEvent::OutputItemAdded {
                output_index, item, ..
            } => match item {
                rs::Item::FunctionCall(c) => {
                    let streamed = !c.arguments.is_empty();
                    let k = self.new_call(output_index, CallKind::Function, streamed);
                    self.tool_delta(k, Some(c.call_id), Some(c.name), c.arguments, &mut out);
                }
                rs::Item::CustomToolCall(c) => {
                    let streamed = !c.input.is_empty();
                    let k = self.new_call(output_index, CallKind::Custom, streamed);
                    let mut args = "{\"input\":\"".to_owned();
                    args.push_str(&json_escape(&c.input));
                    self.tool_delta(k, Some(c.call_id), Some(c.name), args, &mut out);
                }
                _ => {}
            },
            rs::StreamEvent::OutputTextDelta { delta, .. } if !delta.is_empty() => {
                self.count(&delta);
                self.delta(
                    oa::ChunkDelta {
                        content: Some(delta),
                        ..Default::default()
                    },
                    &mut out,
                );
            }
            rs::StreamEvent::RefusalDelta { delta, .. } if !delta.is_empty() => {
                self.count(&delta);
                self.delta(
                    oa::ChunkDelta {
                        refusal: Some(delta),
                        ..Default::default()
                    },
                    &mut out,
                );
            }
            rs::StreamEvent::ReasoningSummaryTextDelta {
                output_index,
                summary_index,
                delta,
                ..
            } => self.reasoning_delta((output_index, summary_index), delta, &mut out),
            rs::StreamEvent::ReasoningTextDelta {
                output_index,
                content_index,
                delta,
                ..
            } => self.reasoning_delta(
                (output_index, content_index.saturating_add(1 << 16)),
                delta,
                &mut out,
            ),
            rs::StreamEvent::FunctionCallArgumentsDelta {
                output_index,
                delta,
                ..
            } => self.call_text(output_index, CallKind::Function, delta, &mut out),
            rs::StreamEvent::CustomToolCallInputDelta {
                output_index,
                delta,
                ..
            } => self.call_text(
                output_index,
                CallKind::Custom,
                json_escape(&delta),
                &mut out,
            ),
            rs::StreamEvent::OutputItemDone {
                output_index, item, ..
            } => {
                // Upstreams that send a call whole (no deltas) still deliver its text.
                let Some(state) = self.calls.get(&output_index).copied() else {
                    return out;
                };
                match (item, state.kind) {
                    (rs::Item::FunctionCall(c), CallKind::Function) if !state.streamed => {
                        self.call_text(output_index, CallKind::Function, c.arguments, &mut out);
                    }
                    (rs::Item::CustomToolCall(c), CallKind::Custom) => {
                        if !state.streamed {
                            let input = json_escape(&c.input);
                            self.call_text(output_index, CallKind::Custom, input, &mut out);
                        }
                        self.tool_delta(state.index, None, None, "\"}".to_owned(), &mut out);
                    }
                    _ => {}
                }
            }
            rs::StreamEvent::Completed { response, .. }
            | rs::StreamEvent::Incomplete { response, .. } => {
                self.done = true;
                self.usage = response.usage.as_ref().map(Usage::from);
                let reason = finish_reason(&response, !self.calls.is_empty());
                self.role(&mut out);
                out.push(self.chunk(oa::ChunkDelta::default(), Some(reason)));
                out.extend(self.usage_chunk());
            }
            rs::StreamEvent::Failed { response, .. } => {
                self.usage = response.usage.as_ref().map(Usage::from);
                let e = response_error(&response).map_or_else(
                    || error_body("server_error", "the upstream response failed").error,
                    |e| e.error,
                );
                self.error = Some(e);
            }
            rs::StreamEvent::Error { code, message, .. } => {
                self.error =
                    Some(error_body(code.as_deref().unwrap_or("server_error"), &message).error);
            }
            rs::StreamEvent::Unknown(v) => {
                // A malformed lifecycle failure still ends the stream as an error.
                let kind = v.get("type").and_then(Value::as_str);
                if matches!(kind, Some("response.failed" | "error")) {
                    self.error =
                        Some(error_body("server_error", "the upstream response failed").error);
                }
            }
            // Everything else (`.done` events, content parts, item additions without a
            // hub form) repeats what the deltas already carried.
            _ => {}
        }
        out
    }

    fn new_call(&mut self, output_index: u32, kind: CallKind, streamed: bool) -> u32 {
        let index = self.next_tool;
        self.next_tool = index.saturating_add(1);
        self.calls.insert(
            output_index,
            CallState {
                index,
                kind,
                streamed,
            },
        );
        index
    }

    /// Argument (or escaped custom input) text for the call at `output_index`.
    fn call_text(
        &mut self,
        output_index: u32,
        kind: CallKind,
        text: String,
        out: &mut Vec<oa::ChatCompletionChunk>,
    ) {
        if text.is_empty() {
            return;
        }
        let Some(state) = self.calls.get_mut(&output_index) else {
            return;
        };
        if state.kind != kind {
            return;
        }
        state.streamed = true;
        let index = state.index;
        self.tool_delta(index, None, None, text, out);
    }

    fn usage_chunk(&self) -> Vec<oa::ChatCompletionChunk> {
        if !self.include_usage {
            return Vec::new();
        }
        let mut c = oa::ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone());
        c.usage = Some(oa::CompletionUsage::from(&self.usage.unwrap_or_default()));
        vec![c]
    }

    /// Ends the stream. A stream that stopped before `response.completed` (or
    /// `.incomplete`/`.failed`) sets [`error`](Self::error) instead of inventing an end.
    pub fn finish(&mut self) -> Vec<oa::ChatCompletionChunk> {
        if !self.done && self.error.is_none() {
            self.error = Some(
                error_body(
                    "server_error",
                    "upstream stream ended before the response was complete",
                )
                .error,
            );
        }
        self.done = true;
        Vec::new()
    }
}

/// `s` as the inside of a JSON string literal.
fn json_escape(s: &str) -> String {
    let quoted = Value::String(s.to_owned()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_json_escape_streams_into_valid_json() {
        let pieces = ["*** Begin \"Patch\"\n", "tab\there \\ done"];
        let mut args = "{\"input\":\"".to_owned();
        for p in pieces {
            args.push_str(&json_escape(p));
        }
        args.push_str("\"}");
        let v: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(v["input"], pieces.concat());
    }

    #[test]
    fn test_passthrough_forces_store_false_and_asks_for_encrypted_reasoning() {
        let body = json!({"model": "m", "input": "hi", "store": true,
            "include": ["message.output_text.logprobs", "reasoning.encrypted_content"]});
        let out = passthrough_body(&body, "up", false);
        assert_eq!(out["store"], false);
        assert_eq!(
            out["include"],
            json!([
                "message.output_text.logprobs",
                "reasoning.encrypted_content"
            ])
        );
        let out = passthrough_body(
            &json!({"model": "m", "input": "hi", "include": null}),
            "up",
            false,
        );
        assert_eq!(out["include"], json!([ENCRYPTED_REASONING]));
    }

    #[test]
    fn test_passthrough_sets_model_and_stream_only() {
        let body = json!({"model": "client", "input": [{"type": "reasoning", "id": "rs_1",
            "summary": [], "encrypted_content": "gAAA"}], "store": false, "stream": false});
        let out = passthrough_body(&body, "gpt-5-upstream", true);
        assert_eq!(out["model"], "gpt-5-upstream");
        assert_eq!(out["stream"], true);
        assert_eq!(out["input"], body["input"]);
        assert_eq!(out["store"], false);
        assert_eq!(out["include"], json!([ENCRYPTED_REASONING]));
        let mut ev = json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_1", "object": "response", "model": "gpt-5-upstream"}});
        rewrite_model(&mut ev, "client");
        assert_eq!(ev["response"]["model"], "client");
        let mut full = json!({"id": "resp_1", "object": "response", "model": "gpt-5-upstream"});
        rewrite_model(&mut full, "client");
        assert_eq!(full["model"], "client");
        let mut delta = json!({"type": "response.output_text.delta", "delta": "model"});
        rewrite_model(&mut delta, "client");
        assert_eq!(delta["delta"], "model");
    }
}
