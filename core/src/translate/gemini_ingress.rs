//! Gemini-native ingress (`POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent`, `:countTokens`, `GET /v1beta/models`) over the hub:
//!
//! - [`gemini_to_hub_request`]: a `generateContent` body becomes a hub request.
//! - [`hub_to_gemini_response`]: a hub completion becomes a `GenerateContentResponse`.
//! - [`HubToGeminiStream`]: hub chunks become stream chunks (each a
//!   `GenerateContentResponse`), and [`GeminiStreamFramer`] writes them as SSE
//!   (`alt=sse`) or as the streamed JSON array Gemini sends without it.
//! - [`count_tokens_response`], [`model_list`], [`error_response`] and
//!   [`translate_error`]: the other shapes the routes answer with.
//!
//! Mapping choices (`docs/api.md` lists what is lost):
//! - `systemInstruction` becomes a system message; `model` turns become assistant
//!   messages (thought parts → `reasoning_content`; thought signatures are dropped);
//!   `functionCall` parts become tool calls with the part's `id` or `call_<turn>_<n>`;
//!   `functionResponse` parts become tool messages answering the call with the same id,
//!   else the earliest unanswered call of that name.
//! - `inlineData` becomes an image (`image/*`), audio (`audio/wav`, `audio/mp3`) or file
//!   part as a `data:` URL; `fileData` only for `http(s)` image URLs.
//! - Function declarations keep `parametersJsonSchema` as is; an OpenAPI-style
//!   `parameters` schema gets lower-case types and `nullable` folded into the type.
//! - `thinkingConfig` (`thinkingLevel`, or `thinkingBudget` by size) becomes
//!   `reasoning_effort`; `safetySettings`, `topK`, `responseModalities` and the other
//!   generation options without a hub counterpart are ignored; hosted tools
//!   (`googleSearch`, `codeExecution`, `urlContext`, ...) are dropped; `cachedContent` is
//!   refused.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Map, Value};

use super::anthropic::TranslateError;
use crate::protocol::gemini as g;
use crate::protocol::openai as oa;
use crate::usage::Usage;

/// `thinkingBudget` thresholds: at or below → `low` / `medium`; above → `high` (the
/// same thresholds the Anthropic ingress uses for `budget_tokens`).
const BUDGET_THRESHOLDS: [(i64, &str); 2] = [(2048, "low"), (8192, "medium")];

/// Builds a hub request from a Gemini `generateContent` body. `model` comes from the
/// path (`models/{model}:...`); `stream` from the method (`:streamGenerateContent`).
pub fn gemini_to_hub_request(
    req: &g::GenerateContentRequest,
    model: &str,
    stream: bool,
) -> Result<oa::ChatCompletionRequest, TranslateError> {
    if req.extra.get("cachedContent").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::invalid(
            "cachedContent is not supported; send the contents",
            "cachedContent",
        ));
    }
    let mut messages = Vec::new();
    if let Some(system) = &req.system_instruction {
        let text = text_of(&system.parts, "systemInstruction")?;
        if !text.is_empty() {
            messages.push(oa::ChatMessage::text(oa::Role::System, text));
        }
    }
    let mut calls = CallLedger::default();
    for (i, content) in req.contents.iter().enumerate() {
        let param = format!("contents[{i}]");
        match content.role.as_ref().unwrap_or(&g::Role::User) {
            g::Role::User => user_turn(content, i, &param, &mut calls, &mut messages)?,
            g::Role::Model => messages.push(model_turn(content, i, &param, &mut calls)?),
            g::Role::Unknown(r) => {
                return Err(TranslateError::invalid(
                    format!("unknown role `{r}` (expected `user` or `model`)"),
                    format!("{param}.role"),
                ))
            }
        }
    }
    if !messages.iter().any(|m| m.role != oa::Role::System) {
        return Err(TranslateError::invalid(
            "contents must not be empty",
            "contents",
        ));
    }

    let mut tools: Vec<oa::Tool> = Vec::new();
    for (j, tool) in req.tools.iter().enumerate() {
        for (k, decl) in tool.function_declarations.iter().enumerate() {
            let schema = match decl.extra.get("parametersJsonSchema") {
                Some(s) => Some(json_schema(s)),
                None => decl.parameters.as_ref().map(json_schema),
            };
            if decl.name.is_empty() {
                return Err(TranslateError::invalid(
                    "a function declaration needs a name",
                    format!("tools[{j}].functionDeclarations[{k}].name"),
                ));
            }
            tools.push(oa::Tool {
                kind: "function".to_owned(),
                function: oa::FunctionDefinition {
                    name: decl.name.clone(),
                    description: decl.description.clone(),
                    parameters: Some(
                        schema.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    ),
                    strict: None,
                },
                extra: Map::new(),
            });
        }
        // Other tool kinds (googleSearch, codeExecution, ...) run inside Google's API:
        // dropped (see the module docs).
    }

    let mut tool_choice = None;
    if let Some(cfg) = req
        .tool_config
        .as_ref()
        .and_then(|c| c.function_calling_config.as_ref())
    {
        let allowed = &cfg.allowed_function_names;
        tool_choice = match cfg.mode.as_ref() {
            Some(g::FunctionCallingMode::None) => {
                Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::None))
            }
            Some(g::FunctionCallingMode::Any) => match allowed.as_slice() {
                [one] => Some(oa::ToolChoice::Named(oa::NamedToolChoice::function(one))),
                _ => Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::Required)),
            },
            Some(_) | None => Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::Auto)),
        };
        if !allowed.is_empty() {
            tools.retain(|t| allowed.contains(&t.function.name));
        }
    }
    if tools.is_empty() {
        tool_choice = tool_choice.filter(|c| *c == oa::ToolChoice::Mode(oa::ToolChoiceMode::None));
    }

    let gc = req.generation_config.clone().unwrap_or_default();
    let response_format = response_format(&gc);
    let reasoning_effort = gc.thinking_config.as_ref().and_then(effort_of);
    let stream = stream.then_some(true);
    Ok(oa::ChatCompletionRequest {
        model: model.strip_prefix("models/").unwrap_or(model).to_owned(),
        messages,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        response_format,
        stream,
        stream_options: stream.map(|_| oa::StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: gc.max_output_tokens,
        temperature: gc.temperature,
        top_p: gc.top_p,
        n: gc.candidate_count.filter(|n| *n > 1),
        stop: (!gc.stop_sequences.is_empty()).then(|| oa::Stop::Many(gc.stop_sequences.clone())),
        presence_penalty: gc.presence_penalty,
        frequency_penalty: gc.frequency_penalty,
        seed: gc.seed,
        reasoning_effort,
        ..Default::default()
    })
}

fn response_format(gc: &g::GenerationConfig) -> Option<oa::ResponseFormat> {
    if gc.response_mime_type.as_deref() != Some("application/json") {
        return None;
    }
    let schema = gc
        .extra
        .get("responseJsonSchema")
        .or(gc.response_schema.as_ref())
        .map(json_schema);
    Some(match schema {
        Some(schema) => oa::ResponseFormat {
            kind: "json_schema".to_owned(),
            json_schema: Some(json!({"name": "response", "schema": schema})),
            extra: Map::new(),
        },
        None => oa::ResponseFormat {
            kind: "json_object".to_owned(),
            json_schema: None,
            extra: Map::new(),
        },
    })
}

fn effort_of(t: &g::ThinkingConfig) -> Option<String> {
    if let Some(level) = t.extra.get("thinkingLevel").and_then(Value::as_str) {
        return Some(level.to_ascii_lowercase());
    }
    match t.thinking_budget {
        Some(0) => Some("none".to_owned()),
        Some(b) if b > 0 => Some(
            BUDGET_THRESHOLDS
                .iter()
                .find(|(limit, _)| b <= *limit)
                .map_or("high", |(_, name)| *name)
                .to_owned(),
        ),
        _ => None,
    }
}

/// A Gemini (OpenAPI-subset) schema as JSON Schema: `type` names in lower case (Gemini
/// accepts `STRING` and `string`), `nullable: true` folded into `type: [T, "null"]`,
/// `propertyOrdering` dropped; recursive through `properties`, `items`, `anyOf`.
pub fn json_schema(schema: &Value) -> Value {
    let Value::Object(obj) = schema else {
        return schema.clone();
    };
    let nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
    let mut out = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "type" => {
                let lower = |v: &Value| match v.as_str() {
                    Some(s) => Value::String(s.to_ascii_lowercase()),
                    None => v.clone(),
                };
                let t = match value {
                    Value::Array(types) => Value::Array(types.iter().map(lower).collect()),
                    other => lower(other),
                };
                let t = match t {
                    Value::String(s) if nullable => json!([s, "null"]),
                    other => other,
                };
                out.insert(key.clone(), t);
            }
            "nullable" | "propertyOrdering" => {}
            "properties" => {
                if let Value::Object(props) = value {
                    let props = props
                        .iter()
                        .map(|(name, s)| (name.clone(), json_schema(s)))
                        .collect();
                    out.insert(key.clone(), Value::Object(props));
                }
            }
            "items" => {
                out.insert(key.clone(), json_schema(value));
            }
            "anyOf" | "oneOf" | "allOf" => {
                let items = match value {
                    Value::Array(items) => Value::Array(items.iter().map(json_schema).collect()),
                    other => other.clone(),
                };
                out.insert(key.clone(), items);
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// Calls made so far, to pair `functionResponse` parts with them.
#[derive(Default)]
struct CallLedger {
    /// Ids of calls not yet answered, by function name, oldest first.
    open: HashMap<String, VecDeque<String>>,
    /// Every id issued (to accept a response naming a known id).
    known: HashMap<String, String>,
}

impl CallLedger {
    fn called(&mut self, id: &str, name: &str) {
        self.open
            .entry(name.to_owned())
            .or_default()
            .push_back(id.to_owned());
        self.known.insert(id.to_owned(), name.to_owned());
    }

    /// The call a response answers: by its id if known, else the oldest open call of
    /// that name.
    fn answer(&mut self, id: Option<&str>, name: &str) -> Option<String> {
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            if let Some(called) = self.known.get(id) {
                let called = called.clone();
                if let Some(q) = self.open.get_mut(&called) {
                    q.retain(|open| open != id);
                }
                return Some(id.to_owned());
            }
        }
        self.open.get_mut(name).and_then(VecDeque::pop_front)
    }
}

fn text_of(parts: &[g::Part], param: &str) -> Result<String, TranslateError> {
    let mut text = String::new();
    for (k, p) in parts.iter().enumerate() {
        match p.kind() {
            g::PartKind::Text(t) => text.push_str(t),
            g::PartKind::Thought(_) => {}
            _ => {
                return Err(TranslateError::invalid(
                    "only text parts are allowed here",
                    format!("{param}.parts[{k}]"),
                ))
            }
        }
    }
    Ok(text)
}

fn model_turn(
    content: &g::Content,
    turn: usize,
    param: &str,
    calls: &mut CallLedger,
) -> Result<oa::ChatMessage, TranslateError> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for (k, part) in content.parts.iter().enumerate() {
        match part.kind() {
            g::PartKind::Text(t) => text.push_str(t),
            g::PartKind::Thought(t) => reasoning.push_str(t),
            g::PartKind::FunctionCall(c) => {
                let id = match &c.id {
                    Some(id) if !id.is_empty() => id.clone(),
                    _ => format!("call_{turn}_{k}"),
                };
                calls.called(&id, &c.name);
                let args = c
                    .args
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), Value::to_string);
                let mut call = oa::ToolCall::function(id, &c.name, args);
                call.thought_signature.clone_from(&part.thought_signature);
                tool_calls.push(call);
            }
            // A signature-only part carries nothing but the signature.
            g::PartKind::Unknown if part.thought_signature.is_some() => {}
            _ => {
                return Err(TranslateError::invalid(
                    "model turns may only contain text, thoughts and function calls",
                    format!("{param}.parts[{k}]"),
                ))
            }
        }
    }
    let mut msg = oa::ChatMessage::empty(oa::Role::Assistant);
    if !text.is_empty() || tool_calls.is_empty() {
        msg.content = Some(oa::MessageContent::Text(text));
    }
    if !reasoning.is_empty() {
        msg.reasoning_content = Some(reasoning);
    }
    if !tool_calls.is_empty() {
        msg.tool_calls = Some(tool_calls);
    }
    Ok(msg)
}

fn user_turn(
    content: &g::Content,
    turn: usize,
    param: &str,
    calls: &mut CallLedger,
    out: &mut Vec<oa::ChatMessage>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (k, part) in content.parts.iter().enumerate() {
        let part_param = format!("{param}.parts[{k}]");
        match part.kind() {
            g::PartKind::FunctionResponse(r) => {
                let id = calls
                    .answer(r.id.as_deref(), &r.name)
                    .or_else(|| r.id.clone().filter(|id| !id.is_empty()))
                    .unwrap_or_else(|| format!("call_{turn}_{k}"));
                let text = match &r.response {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut msg = oa::ChatMessage::text(oa::Role::Tool, text);
                msg.tool_call_id = Some(id);
                out.push(msg);
            }
            g::PartKind::Text(t) | g::PartKind::Thought(t) => {
                parts.push(oa::ContentPart::text(t.to_owned()));
            }
            g::PartKind::InlineData(blob) => parts.push(inline_part(blob, &part_param)?),
            g::PartKind::FileData(f) => {
                let image = f
                    .mime_type
                    .as_deref()
                    .is_none_or(|m| m.starts_with("image/"));
                if !(image
                    && (f.file_uri.starts_with("https://") || f.file_uri.starts_with("http://")))
                {
                    return Err(TranslateError::invalid(
                        "fileData is only supported for http(s) image URLs; send other files as inlineData",
                        part_param,
                    ));
                }
                parts.push(oa::ContentPart::ImageUrl(oa::ImageUrlPart {
                    image_url: oa::ImageUrl {
                        url: f.file_uri.clone(),
                        detail: None,
                    },
                    extra: Map::new(),
                }));
            }
            g::PartKind::FunctionCall(_) => {
                return Err(TranslateError::invalid(
                    "functionCall parts belong in model turns",
                    part_param,
                ))
            }
            g::PartKind::Unknown if part.thought_signature.is_some() => {}
            g::PartKind::Unknown => {
                let kind = part.extra.keys().next().map_or("?", String::as_str);
                return Err(TranslateError::invalid(
                    format!("part `{kind}` is not supported"),
                    part_param,
                ));
            }
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [oa::ContentPart::Text(t)] => oa::MessageContent::Text(t.text.clone()),
        _ => oa::MessageContent::Parts(parts),
    };
    let mut msg = oa::ChatMessage::empty(oa::Role::User);
    msg.content = Some(content);
    out.push(msg);
    Ok(())
}

fn inline_part(blob: &g::Blob, param: &str) -> Result<oa::ContentPart, TranslateError> {
    if blob.mime_type.is_empty() || blob.data.is_empty() {
        return Err(TranslateError::invalid(
            "inlineData needs a mimeType and data",
            param,
        ));
    }
    let url = format!("data:{};base64,{}", blob.mime_type, blob.data);
    let mime = blob.mime_type.to_ascii_lowercase();
    if mime.starts_with("image/") {
        return Ok(oa::ContentPart::ImageUrl(oa::ImageUrlPart {
            image_url: oa::ImageUrl { url, detail: None },
            extra: Map::new(),
        }));
    }
    let audio = match mime.as_str() {
        "audio/wav" | "audio/x-wav" | "audio/wave" => Some("wav"),
        "audio/mp3" | "audio/mpeg" => Some("mp3"),
        _ => None,
    };
    if let Some(format) = audio {
        return Ok(oa::ContentPart::InputAudio(oa::InputAudioPart {
            input_audio: oa::InputAudio {
                data: blob.data.clone(),
                format: format.to_owned(),
            },
            extra: Map::new(),
        }));
    }
    Ok(oa::ContentPart::File(oa::FilePart {
        file: oa::FileRef {
            file_data: Some(url),
            file_id: None,
            filename: None,
        },
        extra: Map::new(),
    }))
}

// ---------------------------------------------------------------------------------------
// Response: hub -> Gemini
// ---------------------------------------------------------------------------------------

/// The Gemini finish reason for a hub one: `length` → `MAX_TOKENS`, `content_filter` →
/// `SAFETY`, everything else (tool calls included, as Gemini does) → `STOP`.
pub fn gemini_finish_reason(reason: &oa::FinishReason) -> g::FinishReason {
    match reason {
        oa::FinishReason::Length => g::FinishReason::MaxTokens,
        oa::FinishReason::ContentFilter => g::FinishReason::Safety,
        _ => g::FinishReason::Stop,
    }
}

/// Gemini usage from normalised usage: `candidatesTokenCount` excludes thoughts, which
/// are reported as `thoughtsTokenCount`; cached prompt tokens as
/// `cachedContentTokenCount`.
pub fn usage_metadata(u: &Usage) -> g::UsageMetadata {
    g::UsageMetadata {
        prompt_token_count: Some(u.input_tokens),
        candidates_token_count: Some(u.output_tokens.saturating_sub(u.reasoning_tokens)),
        total_token_count: Some(u.total_tokens()),
        cached_content_token_count: (u.cached_input_tokens > 0).then_some(u.cached_input_tokens),
        thoughts_token_count: (u.reasoning_tokens > 0).then_some(u.reasoning_tokens),
        tool_use_prompt_token_count: None,
        extra: Map::new(),
    }
}

fn function_call_part(call: &oa::ToolCall) -> g::Part {
    // Gemini requires an object; a model glitch that produced anything else becomes `{}`.
    let args = match serde_json::from_str::<Value>(&call.function.arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    };
    g::Part {
        function_call: Some(g::FunctionCall {
            id: Some(call.id.clone()),
            name: call.function.name.clone(),
            args: Some(args),
            extra: Map::new(),
        }),
        thought_signature: call.thought_signature.clone(),
        ..g::Part::default()
    }
}

fn thought_part(text: String) -> g::Part {
    g::Part {
        text: Some(text),
        thought: Some(true),
        ..g::Part::default()
    }
}

fn candidate(index: u32, parts: Vec<g::Part>, finish: Option<g::FinishReason>) -> g::Candidate {
    g::Candidate {
        content: Some(g::Content {
            role: Some(g::Role::Model),
            parts,
            extra: Map::new(),
        }),
        finish_reason: finish,
        index: Some(index),
        safety_ratings: Vec::new(),
        extra: Map::new(),
    }
}

/// Builds a `GenerateContentResponse` from a hub completion, one candidate per choice.
/// `model` is the client-facing model name (`modelVersion`), `response_id` the id.
pub fn hub_to_gemini_response(
    hub: &oa::ChatCompletionResponse,
    model: &str,
    response_id: &str,
) -> g::GenerateContentResponse {
    let mut candidates = Vec::with_capacity(hub.choices.len());
    for choice in &hub.choices {
        let msg = &choice.message;
        let mut parts = Vec::new();
        if let Some(r) = msg.reasoning_content.as_ref().filter(|r| !r.is_empty()) {
            parts.push(thought_part(r.clone()));
        }
        let text = msg
            .content
            .as_ref()
            .map(oa::MessageContent::joined_text)
            .unwrap_or_default();
        let refusal = msg.refusal.clone().unwrap_or_default();
        let text = text + &refusal;
        if !text.is_empty() {
            parts.push(g::Part::text(text));
        }
        for call in msg.tool_calls.iter().flatten() {
            parts.push(function_call_part(call));
        }
        if let Some(fc) = &msg.function_call {
            parts.push(function_call_part(&oa::ToolCall::function(
                "call_legacy_0",
                &fc.name,
                &fc.arguments,
            )));
        }
        if parts.is_empty() {
            parts.push(g::Part::text(""));
        }
        let finish = choice
            .finish_reason
            .as_ref()
            .map_or(g::FinishReason::Stop, gemini_finish_reason);
        candidates.push(candidate(choice.index, parts, Some(finish)));
    }
    g::GenerateContentResponse {
        candidates,
        prompt_feedback: None,
        usage_metadata: hub.usage.as_ref().map(|u| usage_metadata(&Usage::from(u))),
        model_version: Some(model.to_owned()),
        response_id: Some(response_id.to_owned()),
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Stream: hub chunks -> Gemini chunks
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ChoiceState {
    /// Tool calls being assembled, by hub index: (id, name, arguments).
    calls: BTreeMap<u32, (String, String, String)>,
    finish: Option<g::FinishReason>,
}

/// Translates hub chunks into Gemini stream chunks.
///
/// Text and reasoning deltas go out at once (a `text` part, or a `thought: true` part).
/// Gemini sends function calls whole, so tool-call fragments are assembled and sent with
/// the candidate's `finishReason`. The last chunk carries `usageMetadata`; since the hub
/// sends usage after the finish reason, the finishing chunk is held until usage arrives
/// or [`finish`](Self::finish) is called. Every chunk carries `modelVersion` and
/// `responseId`.
#[derive(Debug)]
pub struct HubToGeminiStream {
    model: String,
    response_id: String,
    choices: BTreeMap<u32, ChoiceState>,
    usage: Option<Usage>,
    finished: bool,
}

impl HubToGeminiStream {
    pub fn new(model: impl Into<String>, response_id: impl Into<String>) -> Self {
        HubToGeminiStream {
            model: model.into(),
            response_id: response_id.into(),
            choices: BTreeMap::new(),
            usage: None,
            finished: false,
        }
    }

    /// Usage seen so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn response(&self, candidates: Vec<g::Candidate>) -> g::GenerateContentResponse {
        g::GenerateContentResponse {
            candidates,
            prompt_feedback: None,
            usage_metadata: None,
            model_version: Some(self.model.clone()),
            response_id: Some(self.response_id.clone()),
            extra: Map::new(),
        }
    }

    /// Translates one hub chunk.
    pub fn on_event(&mut self, chunk: oa::ChatCompletionChunk) -> Vec<g::GenerateContentResponse> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage::from(u));
        }
        for choice in chunk.choices {
            let state = self.choices.entry(choice.index).or_default();
            let delta = choice.delta;
            let mut parts = Vec::new();
            if let Some(r) = delta.reasoning_content.filter(|r| !r.is_empty()) {
                parts.push(thought_part(r));
            }
            let text: String = [delta.content, delta.refusal]
                .into_iter()
                .flatten()
                .collect();
            if !text.is_empty() {
                parts.push(g::Part::text(text));
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let entry = state.calls.entry(call.index).or_default();
                if let Some(id) = call.id.filter(|i| !i.is_empty()) {
                    entry.0 = id;
                }
                if let Some(f) = call.function {
                    if let Some(n) = f.name.filter(|n| !n.is_empty()) {
                        entry.1 = n;
                    }
                    if let Some(a) = f.arguments {
                        entry.2.push_str(&a);
                    }
                }
            }
            if let Some(f) = delta.function_call {
                let entry = state.calls.entry(0).or_default();
                if entry.0.is_empty() {
                    entry.0 = "call_legacy_0".to_owned();
                }
                if let Some(n) = f.name.filter(|n| !n.is_empty()) {
                    entry.1 = n;
                }
                if let Some(a) = f.arguments {
                    entry.2.push_str(&a);
                }
            }
            if let Some(reason) = choice.finish_reason {
                state.finish = Some(gemini_finish_reason(&reason));
            }
            if !parts.is_empty() {
                out.push(self.response(vec![candidate(choice.index, parts, None)]));
            }
        }
        out
    }

    /// Ends the stream: one last chunk with every candidate's assembled function calls,
    /// its `finishReason` (`STOP` when none came) and the usage. Idempotent.
    pub fn finish(&mut self) -> Vec<g::GenerateContentResponse> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let choices = std::mem::take(&mut self.choices);
        let mut candidates = Vec::new();
        for (index, state) in choices {
            let parts: Vec<g::Part> = state
                .calls
                .into_iter()
                .enumerate()
                .map(|(n, (_, (id, name, args)))| {
                    let id = if id.is_empty() {
                        format!("call_{index}_{n}")
                    } else {
                        id
                    };
                    function_call_part(&oa::ToolCall::function(id, name, args))
                })
                .collect();
            let parts = if parts.is_empty() {
                vec![g::Part::text("")]
            } else {
                parts
            };
            candidates.push(candidate(
                index,
                parts,
                Some(state.finish.unwrap_or(g::FinishReason::Stop)),
            ));
        }
        if candidates.is_empty() {
            candidates.push(candidate(
                0,
                vec![g::Part::text("")],
                Some(g::FinishReason::Stop),
            ));
        }
        let mut last = self.response(candidates);
        last.usage_metadata = self.usage.as_ref().map(usage_metadata);
        vec![last]
    }
}

/// Writes Gemini stream chunks for the wire: SSE (`data: <json>` + CRLF CRLF, for
/// `alt=sse`) or the JSON array Gemini streams without it (`[`, elements separated by
/// `,` + CRLF, `]`). A mid-stream error is one more element (or event): the error body.
#[derive(Debug, Clone)]
pub struct GeminiStreamFramer {
    sse: bool,
    elements: u64,
    closed: bool,
}

impl GeminiStreamFramer {
    /// `sse`: the request had `alt=sse`.
    pub fn new(sse: bool) -> Self {
        GeminiStreamFramer {
            sse,
            elements: 0,
            closed: false,
        }
    }

    /// The `Content-Type` of the stream.
    pub fn content_type(&self) -> &'static str {
        if self.sse {
            "text/event-stream"
        } else {
            "application/json; charset=UTF-8"
        }
    }

    fn element(&mut self, json: &str) -> String {
        if self.closed {
            return String::new();
        }
        if self.sse {
            return format!("data: {json}\r\n\r\n");
        }
        let sep = if self.elements == 0 { "[" } else { ",\r\n" };
        self.elements = self.elements.saturating_add(1);
        format!("{sep}{json}")
    }

    /// One chunk.
    pub fn chunk(&mut self, chunk: &g::GenerateContentResponse) -> String {
        match serde_json::to_string(chunk) {
            Ok(json) => self.element(&json),
            Err(_) => String::new(),
        }
    }

    /// A mid-stream error, then the end of the stream.
    pub fn error(&mut self, err: &g::ErrorResponse) -> String {
        let mut out = match serde_json::to_string(err) {
            Ok(json) => self.element(&json),
            Err(_) => String::new(),
        };
        out.push_str(&self.finish());
        out
    }

    /// The end of the stream (`]` for the array form, which is `[]` when empty).
    /// Idempotent.
    pub fn finish(&mut self) -> String {
        if self.closed {
            return String::new();
        }
        self.closed = true;
        match (self.sse, self.elements) {
            (true, _) => String::new(),
            (false, 0) => "[]".to_owned(),
            (false, _) => "]".to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The other shapes
// ---------------------------------------------------------------------------------------

/// The `countTokens` answer.
pub fn count_tokens_response(total_tokens: u64) -> g::CountTokensResponse {
    g::CountTokensResponse {
        total_tokens,
        extra: Map::new(),
    }
}

/// One model of `GET /v1beta/models`: `id` is the client-facing model name.
pub fn model_info(
    id: &str,
    input_token_limit: Option<u64>,
    output_token_limit: Option<u64>,
) -> g::ModelInfo {
    g::ModelInfo {
        name: format!("models/{id}"),
        display_name: Some(id.to_owned()),
        description: None,
        input_token_limit,
        output_token_limit,
        supported_generation_methods: ["generateContent", "streamGenerateContent", "countTokens"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        extra: Map::new(),
    }
}

/// `GET /v1beta/models` for the given models (all on one page).
pub fn model_list(models: Vec<g::ModelInfo>) -> g::ListModelsResponse {
    g::ListModelsResponse {
        models,
        next_page_token: None,
    }
}

/// A Gemini error body for an HTTP status.
pub fn error_response(status: u16, message: impl Into<String>) -> g::ErrorResponse {
    g::ErrorResponse::from_status(status, message)
}

/// A translation error as a Gemini `INVALID_ARGUMENT` (HTTP 400), naming the field.
pub fn translate_error(e: &TranslateError) -> g::ErrorResponse {
    match e {
        TranslateError::InvalidRequest { message, param } => {
            let message = match param {
                Some(p) => format!("{p}: {message}"),
                None => message.clone(),
            };
            g::ErrorResponse::from_status(400, message)
        }
    }
}
