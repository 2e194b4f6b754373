//! OpenAI chat completions <-> Anthropic Messages, both directions, for requests,
//! responses and streams.
//!
//! - Anthropic upstreams: [`openai_to_anthropic_request`], [`anthropic_to_openai_response`],
//!   [`AnthropicToOpenAiStream`].
//! - Anthropic ingress (`/v1/messages`): [`anthropic_to_openai_request`],
//!   [`openai_to_anthropic_response`], [`OpenAiToAnthropicStream`].
//!
//! Decisions that apply throughout:
//! - Anthropic `thinking` maps to the OpenAI `reasoning_content` extension (what DeepSeek,
//!   vLLM and most OpenAI-compatible clients read). Thinking signatures and
//!   `redacted_thinking` have no OpenAI equivalent and are dropped.
//! - Options that only tune sampling and have no counterpart are dropped with a comment;
//!   options whose loss would change what the client gets back are rejected with
//!   [`TranslateError::InvalidRequest`].
//! - Pure: ids and timestamps come in as arguments or from the upstream payload.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::protocol::anthropic as an;
use crate::protocol::openai as oa;
use crate::usage::Usage;

/// A request that can't be expressed on the other protocol without changing its meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        /// The offending field, e.g. `messages[2].tool_calls[0].function.arguments`.
        param: Option<String>,
    },
}

impl TranslateError {
    /// An invalid request caused by `param`.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        TranslateError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// As an OpenAI error body (`invalid_request_error`, HTTP 400).
    pub fn to_openai(&self) -> oa::ErrorResponse {
        match self {
            TranslateError::InvalidRequest { message, param } => {
                let mut e = oa::ErrorResponse::new("invalid_request_error", message.clone());
                e.error.param = param.clone();
                e
            }
        }
    }

    /// As an Anthropic error body (`invalid_request_error`, HTTP 400).
    pub fn to_anthropic(&self) -> an::ErrorResponse {
        match self {
            TranslateError::InvalidRequest { message, param } => {
                let message = match param {
                    Some(p) => format!("{p}: {message}"),
                    None => message.clone(),
                };
                an::ErrorResponse::new("invalid_request_error", message)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stop reasons and errors
// ---------------------------------------------------------------------------------------

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
///
/// `end_turn`, `stop_sequence` and `pause_turn` -> `stop`; `max_tokens` -> `length`;
/// `tool_use` -> `tool_calls`; `refusal` -> `content_filter`; unknown -> `stop` (clients
/// validate finish reasons against a closed list).
pub fn anthropic_stop_to_openai(reason: &an::StopReason) -> oa::FinishReason {
    match reason {
        an::StopReason::EndTurn
        | an::StopReason::StopSequence
        | an::StopReason::PauseTurn
        | an::StopReason::Other(_) => oa::FinishReason::Stop,
        an::StopReason::MaxTokens => oa::FinishReason::Length,
        an::StopReason::ToolUse => oa::FinishReason::ToolCalls,
        an::StopReason::Refusal => oa::FinishReason::ContentFilter,
    }
}

/// OpenAI `finish_reason` -> Anthropic `stop_reason`.
///
/// `stop` -> `end_turn` (OpenAI does not say whether a stop sequence matched);
/// `length` -> `max_tokens`; `tool_calls`/`function_call` -> `tool_use`;
/// `content_filter` -> `refusal`; unknown -> `end_turn`.
pub fn openai_finish_to_anthropic(reason: &oa::FinishReason) -> an::StopReason {
    match reason {
        oa::FinishReason::Stop | oa::FinishReason::Other(_) => an::StopReason::EndTurn,
        oa::FinishReason::Length => an::StopReason::MaxTokens,
        oa::FinishReason::ToolCalls | oa::FinishReason::FunctionCall => an::StopReason::ToolUse,
        oa::FinishReason::ContentFilter => an::StopReason::Refusal,
    }
}

/// An Anthropic error (body or stream `error` event) as an OpenAI error body.
pub fn anthropic_error_to_openai(err: &an::ErrorBody) -> oa::ErrorResponse {
    let kind = match err.kind.as_str() {
        "api_error" | "overloaded_error" => "server_error",
        "" => "server_error",
        other => other,
    };
    let mut out = oa::ErrorResponse::new(kind, err.message.clone());
    if !err.kind.is_empty() {
        out.error.code = Some(Value::String(err.kind.clone()));
    }
    out
}

/// An OpenAI error body as an Anthropic error body.
pub fn openai_error_to_anthropic(err: &oa::ErrorBody) -> an::ErrorResponse {
    let kind = match err.kind.as_str() {
        k @ ("invalid_request_error"
        | "authentication_error"
        | "permission_error"
        | "not_found_error"
        | "rate_limit_error"
        | "overloaded_error") => k,
        "insufficient_quota" | "requests" | "tokens" => "rate_limit_error",
        _ => "api_error",
    };
    an::ErrorResponse::new(kind, err.message.clone())
}

// ---------------------------------------------------------------------------------------
// 1. OpenAI request -> Anthropic request
// ---------------------------------------------------------------------------------------

/// Thinking budgets used for OpenAI `reasoning_effort` on Anthropic models.
const EFFORT_BUDGETS: [(&str, u64); 3] = [("low", 1024), ("medium", 4096), ("high", 16384)];
/// Anthropic's minimum thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Builds an Anthropic Messages request from an OpenAI chat request.
///
/// `default_max_tokens` is used when the client set neither `max_completion_tokens` nor
/// `max_tokens` (Anthropic requires it). System and developer messages become `system`;
/// tool results become `tool_result` blocks in a user turn; consecutive turns of the same
/// role are merged, as Anthropic requires alternation.
pub fn openai_to_anthropic_request(
    req: &oa::ChatCompletionRequest,
    default_max_tokens: u64,
) -> Result<an::MessagesRequest, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::invalid(
            "n > 1 is not supported by this model",
            "n",
        ));
    }
    if let Some(fmt) = &req.response_format {
        // `json_object` requires the prompt itself to ask for JSON, so Claude follows it
        // without enforcement; a schema can't be enforced here, which changes the contract.
        if fmt.kind == "json_schema" {
            return Err(TranslateError::invalid(
                "response_format json_schema is not supported by this model",
                "response_format",
            ));
        }
    }

    let mut system: Vec<an::ContentBlock> = Vec::new();
    let mut turns: Vec<an::Message> = Vec::new();
    // Legacy function calls have no id: give each a deterministic one and let the
    // following `role: function` message find it by name.
    let mut legacy_ids: HashMap<String, String> = HashMap::new();

    for (i, msg) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        match msg.role {
            oa::Role::System | oa::Role::Developer => {
                if let Some(content) = &msg.content {
                    system.extend(system_blocks(content, &param)?);
                }
            }
            oa::Role::User => {
                let blocks = match &msg.content {
                    Some(c) => user_blocks(c, &param)?,
                    None => Vec::new(),
                };
                push_turn(&mut turns, an::Role::User, blocks);
            }
            oa::Role::Assistant => {
                // `reasoning_content` is dropped: Anthropic only accepts thinking blocks
                // with the signature it issued, which OpenAI history doesn't carry.
                let mut blocks = Vec::new();
                if let Some(c) = &msg.content {
                    let text = c.joined_text();
                    if !text.is_empty() {
                        blocks.push(an::ContentBlock::text(text));
                    }
                }
                for (j, call) in msg.tool_calls.iter().flatten().enumerate() {
                    let input = parse_arguments(
                        &call.function.arguments,
                        &format!("{param}.tool_calls[{j}].function.arguments"),
                    )?;
                    blocks.push(tool_use_block(&call.id, &call.function.name, input));
                }
                if let Some(fc) = &msg.function_call {
                    let input = parse_arguments(
                        &fc.arguments,
                        &format!("{param}.function_call.arguments"),
                    )?;
                    let id = format!("call_legacy_{i}");
                    legacy_ids.insert(fc.name.clone(), id.clone());
                    blocks.push(tool_use_block(&id, &fc.name, input));
                }
                push_turn(&mut turns, an::Role::Assistant, blocks);
            }
            oa::Role::Tool => {
                let id = msg.tool_call_id.clone().ok_or_else(|| {
                    TranslateError::invalid(
                        "tool message without tool_call_id",
                        format!("{param}.tool_call_id"),
                    )
                })?;
                let block = tool_result_block(id, msg.content.as_ref(), &param)?;
                push_turn(&mut turns, an::Role::User, vec![block]);
            }
            oa::Role::Function => {
                let id = msg
                    .name
                    .as_ref()
                    .and_then(|n| legacy_ids.get(n))
                    .cloned()
                    .ok_or_else(|| {
                        TranslateError::invalid(
                            "function message does not answer an earlier function_call",
                            format!("{param}.name"),
                        )
                    })?;
                let block = tool_result_block(id, msg.content.as_ref(), &param)?;
                push_turn(&mut turns, an::Role::User, vec![block]);
            }
        }
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "at least one user or assistant message is required",
            "messages",
        ));
    }
    for turn in &mut turns {
        collapse_single_text(&mut turn.content);
    }

    let mut tools: Vec<an::Tool> = Vec::new();
    for (j, tool) in req.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(TranslateError::invalid(
                format!("tool type `{}` is not supported by this model", tool.kind),
                format!("tools[{j}].type"),
            ));
        }
        tools.push(anthropic_tool(&tool.function));
    }
    for f in req.functions.iter().flatten() {
        tools.push(anthropic_tool(f));
    }

    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    let mut tool_choice = match (&req.tool_choice, &req.function_call) {
        (Some(oa::ToolChoice::Mode(mode)), _) => Some(match mode {
            oa::ToolChoiceMode::None => an::ToolChoice::None,
            oa::ToolChoiceMode::Auto => an::ToolChoice::Auto {
                disable_parallel_tool_use: disable_parallel,
            },
            oa::ToolChoiceMode::Required => an::ToolChoice::Any {
                disable_parallel_tool_use: disable_parallel,
            },
        }),
        (Some(oa::ToolChoice::Named(named)), _) => Some(an::ToolChoice::Tool {
            name: named.function.name.clone(),
            disable_parallel_tool_use: disable_parallel,
        }),
        (None, Some(oa::FunctionCallChoice::Named(f))) => Some(an::ToolChoice::Tool {
            name: f.name.clone(),
            disable_parallel_tool_use: disable_parallel,
        }),
        (None, Some(oa::FunctionCallChoice::Mode(m))) if m == "none" => Some(an::ToolChoice::None),
        (None, Some(oa::FunctionCallChoice::Mode(_))) | (None, None) => {
            disable_parallel.map(|d| an::ToolChoice::Auto {
                disable_parallel_tool_use: Some(d),
            })
        }
    };
    if tools.is_empty() && !matches!(tool_choice, Some(an::ToolChoice::None)) {
        // Anthropic rejects a tool_choice without tools.
        tool_choice = None;
    }

    let max_tokens = req.max_output_tokens().unwrap_or(default_max_tokens);
    // With thinking on, Anthropic answers 400 ("a final assistant message must start
    // with a thinking block") when the last assistant turn used tools without the signed
    // thinking that preceded the calls; OpenAI history never carries it.
    let thinking = thinking_for(req, max_tokens).filter(|_| !unsigned_tool_turn(&turns));
    let thinking_on = matches!(thinking, Some(an::ThinkingConfig::Enabled { .. }));

    let system = system_prompt(system);
    let top_k = req
        .extra
        .get("top_k")
        .and_then(Value::as_u64)
        .and_then(|k| u32::try_from(k).ok());

    Ok(an::MessagesRequest {
        model: req.model.clone(),
        messages: turns,
        system,
        max_tokens,
        metadata: req.user.as_ref().map(|u| an::Metadata {
            user_id: Some(u.clone()),
            extra: Map::new(),
        }),
        stop_sequences: req.stop.as_ref().map(oa::Stop::to_vec),
        stream: req.stream,
        // OpenAI's range is 0..=2, Anthropic's 0..=1: clamp rather than fail. Extended
        // thinking rejects any temperature or top_k change, so they are dropped then.
        temperature: if thinking_on {
            None
        } else {
            req.temperature.map(|t| t.clamp(0.0, 1.0))
        },
        top_p: req.top_p,
        top_k: if thinking_on { None } else { top_k },
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        thinking,
        // presence/frequency penalties, seed, logit_bias, logprobs and stream_options have
        // no Anthropic counterpart: they tune sampling or extras, so they are dropped.
        // Unknown OpenAI fields are not forwarded: Anthropic rejects unknown fields.
        extra: Map::new(),
    })
}

/// True when the last assistant turn calls tools and does not start with a signed
/// thinking (or redacted thinking) block.
fn unsigned_tool_turn(turns: &[an::Message]) -> bool {
    let Some(last) = turns.iter().rev().find(|t| t.role == an::Role::Assistant) else {
        return false;
    };
    let an::MessageContent::Blocks(blocks) = &last.content else {
        return false;
    };
    let calls_tools = blocks
        .iter()
        .any(|b| matches!(b, an::ContentBlock::ToolUse(_)));
    let signed = match blocks.first() {
        Some(an::ContentBlock::Thinking(t)) => {
            t.signature.as_deref().is_some_and(|s| !s.is_empty())
        }
        Some(an::ContentBlock::RedactedThinking(_)) => true,
        _ => false,
    };
    calls_tools && !signed
}

fn thinking_for(req: &oa::ChatCompletionRequest, max_tokens: u64) -> Option<an::ThinkingConfig> {
    // Clients using the OpenAI SDK against Claude may pass Anthropic's own `thinking`
    // object through `extra_body`; it wins over `reasoning_effort`.
    if let Some(t) = req.extra.get("thinking") {
        return serde_json::from_value(t.clone()).ok();
    }
    let effort = req.reasoning_effort.as_deref()?;
    let budget = EFFORT_BUDGETS
        .iter()
        .find(|(name, _)| *name == effort)
        .map(|(_, b)| *b)?;
    // The budget counts against max_tokens: keep at least half for the answer, and skip
    // thinking when that leaves less than Anthropic's minimum budget.
    let budget = budget.min(max_tokens / 2);
    (budget >= MIN_THINKING_BUDGET).then_some(an::ThinkingConfig::Enabled {
        budget_tokens: budget,
    })
}

fn system_prompt(blocks: Vec<an::ContentBlock>) -> Option<an::SystemPrompt> {
    if blocks.is_empty() {
        return None;
    }
    let plain = blocks
        .iter()
        .all(|b| matches!(b, an::ContentBlock::Text(t) if t.extra.is_empty()));
    if plain {
        let text = an::SystemPrompt::Blocks(blocks).joined_text();
        Some(an::SystemPrompt::Text(text))
    } else {
        Some(an::SystemPrompt::Blocks(blocks))
    }
}

/// Appends blocks as a turn, merging with the previous turn when the role repeats.
fn push_turn(turns: &mut Vec<an::Message>, role: an::Role, blocks: Vec<an::ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut() {
        if last.role == role {
            let content = std::mem::replace(&mut last.content, an::MessageContent::Blocks(vec![]));
            let mut merged = content.into_blocks();
            merged.extend(blocks);
            last.content = an::MessageContent::Blocks(merged);
            return;
        }
    }
    turns.push(an::Message {
        role,
        content: an::MessageContent::Blocks(blocks),
    });
}

/// A turn that is one plain text block is sent as a string (the common, compact form).
fn collapse_single_text(content: &mut an::MessageContent) {
    if let an::MessageContent::Blocks(blocks) = content {
        if let [an::ContentBlock::Text(t)] = blocks.as_slice() {
            if t.extra.is_empty() {
                *content = an::MessageContent::Text(t.text.clone());
            }
        }
    }
}

/// Carries Anthropic's `cache_control` when a client put it on an OpenAI part (a common
/// convention for prompt caching through OpenAI-shaped gateways).
fn cache_control_of(extra: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(cc) = extra.get("cache_control") {
        out.insert("cache_control".to_owned(), cc.clone());
    }
    out
}

fn text_block_with(text: String, extra: &Map<String, Value>) -> an::ContentBlock {
    an::ContentBlock::Text(an::TextBlock {
        text,
        extra: cache_control_of(extra),
    })
}

fn system_blocks(
    content: &oa::MessageContent,
    param: &str,
) -> Result<Vec<an::ContentBlock>, TranslateError> {
    match content {
        oa::MessageContent::Text(s) if s.is_empty() => Ok(Vec::new()),
        oa::MessageContent::Text(s) => Ok(vec![an::ContentBlock::text(s.clone())]),
        oa::MessageContent::Parts(parts) => {
            let mut out = Vec::new();
            for (k, part) in parts.iter().enumerate() {
                match part {
                    oa::ContentPart::Text(t) => {
                        if !t.text.is_empty() {
                            out.push(text_block_with(t.text.clone(), &t.extra));
                        }
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "system messages may only contain text",
                            format!("{param}.content[{k}]"),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn user_blocks(
    content: &oa::MessageContent,
    param: &str,
) -> Result<Vec<an::ContentBlock>, TranslateError> {
    let parts = match content {
        oa::MessageContent::Text(s) if s.is_empty() => return Ok(Vec::new()),
        oa::MessageContent::Text(s) => return Ok(vec![an::ContentBlock::text(s.clone())]),
        oa::MessageContent::Parts(parts) => parts,
    };
    let mut out = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{k}]");
        match part {
            oa::ContentPart::Text(t) => {
                // Anthropic rejects empty text blocks.
                if !t.text.is_empty() {
                    out.push(text_block_with(t.text.clone(), &t.extra));
                }
            }
            oa::ContentPart::ImageUrl(p) => {
                let source = image_source(&p.image_url.url, &part_param)?;
                // `detail` has no Anthropic counterpart; Claude picks its own resolution.
                out.push(an::ContentBlock::Image(an::ImageBlock {
                    source,
                    extra: cache_control_of(&p.extra),
                }));
            }
            oa::ContentPart::File(p) => {
                out.push(document_block(&p.file, &p.extra, &part_param)?);
            }
            oa::ContentPart::InputAudio(_) => {
                return Err(TranslateError::invalid(
                    "audio input is not supported by this model",
                    part_param,
                ))
            }
            oa::ContentPart::Unknown(v) => {
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
                return Err(TranslateError::invalid(
                    format!("unsupported content part type `{kind}`"),
                    part_param,
                ));
            }
        }
    }
    Ok(out)
}

/// Splits `data:<media type>[;params];base64,<data>` into (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let header = header.strip_suffix(";base64")?;
    let media_type = header.split(';').next().unwrap_or(header);
    Some((media_type, data))
}

fn image_source(url: &str, param: &str) -> Result<an::ImageSource, TranslateError> {
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url).ok_or_else(|| {
            TranslateError::invalid(
                "image data URL must be base64 (data:<type>;base64,...)",
                format!("{param}.image_url.url"),
            )
        })?;
        return Ok(an::ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(an::ImageSource::Url {
            url: url.to_owned(),
        });
    }
    Err(TranslateError::invalid(
        "image_url must be an http(s) or base64 data URL",
        format!("{param}.image_url.url"),
    ))
}

fn document_block(
    file: &oa::FileRef,
    extra: &Map<String, Value>,
    param: &str,
) -> Result<an::ContentBlock, TranslateError> {
    // File ids point into OpenAI's file store, which Anthropic can't read.
    let data_url = file.file_data.as_deref().ok_or_else(|| {
        TranslateError::invalid(
            "only inline file_data is supported for this model",
            format!("{param}.file"),
        )
    })?;
    let (media_type, data) = parse_data_url(data_url)
        .filter(|(m, _)| *m == "application/pdf")
        .ok_or_else(|| {
            TranslateError::invalid(
                "file_data must be a base64 PDF data URL for this model",
                format!("{param}.file.file_data"),
            )
        })?;
    let mut block_extra = cache_control_of(extra);
    if let Some(name) = &file.filename {
        block_extra.insert("title".to_owned(), Value::String(name.clone()));
    }
    Ok(an::ContentBlock::Document(an::DocumentBlock {
        source: serde_json::json!({"type": "base64", "media_type": media_type, "data": data}),
        extra: block_extra,
    }))
}

fn parse_arguments(arguments: &str, param: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(TranslateError::invalid(
            "tool call arguments must be a JSON object",
            param,
        )),
        Err(e) => Err(TranslateError::invalid(
            format!("tool call arguments are not valid JSON: {e}"),
            param,
        )),
    }
}

fn tool_use_block(id: &str, name: &str, input: Value) -> an::ContentBlock {
    an::ContentBlock::ToolUse(an::ToolUseBlock {
        id: id.to_owned(),
        name: name.to_owned(),
        input,
        extra: Map::new(),
    })
}

fn tool_result_block(
    tool_use_id: String,
    content: Option<&oa::MessageContent>,
    param: &str,
) -> Result<an::ContentBlock, TranslateError> {
    let content = match content {
        None => None,
        Some(oa::MessageContent::Text(s)) => Some(an::ToolResultContent::Text(s.clone())),
        Some(c @ oa::MessageContent::Parts(_)) => {
            Some(an::ToolResultContent::Blocks(user_blocks(c, param)?))
        }
    };
    Ok(an::ContentBlock::ToolResult(an::ToolResultBlock {
        tool_use_id,
        content,
        is_error: None,
        extra: Map::new(),
    }))
}

fn anthropic_tool(f: &oa::FunctionDefinition) -> an::Tool {
    an::Tool {
        name: f.name.clone(),
        description: f.description.clone(),
        // Anthropic requires a schema; OpenAI allows omitting it for no-argument tools.
        // `strict` has no counterpart and is dropped.
        input_schema: Some(
            f.parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        ),
        kind: None,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// 2. Anthropic response -> OpenAI response
// ---------------------------------------------------------------------------------------

/// Builds an OpenAI chat completion from an Anthropic message. `created` is the Unix time
/// to report; the id and model are the upstream's.
pub fn anthropic_to_openai_response(
    resp: &an::MessagesResponse,
    created: u64,
) -> oa::ChatCompletionResponse {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in &resp.content {
        match block {
            an::ContentBlock::Text(t) => text.push_str(&t.text),
            an::ContentBlock::Thinking(t) => reasoning.push_str(&t.thinking),
            an::ContentBlock::ToolUse(t) => {
                tool_calls.push(oa::ToolCall::function(&t.id, &t.name, t.input.to_string()));
            }
            // Redacted thinking, server tool blocks and unknown blocks have no OpenAI form.
            _ => {}
        }
    }
    let mut message = oa::ChatMessage::empty(oa::Role::Assistant);
    if !text.is_empty() || tool_calls.is_empty() {
        message.content = Some(oa::MessageContent::Text(text));
    }
    if !reasoning.is_empty() {
        message.reasoning_content = Some(reasoning);
    }
    if !tool_calls.is_empty() {
        message.tool_calls = Some(tool_calls);
    }
    let finish_reason = resp
        .stop_reason
        .as_ref()
        .map_or(oa::FinishReason::Stop, anthropic_stop_to_openai);
    oa::ChatCompletionResponse {
        id: resp.id.clone(),
        object: oa::CHAT_COMPLETION_OBJECT.to_owned(),
        created,
        model: resp.model.clone(),
        choices: vec![oa::ChatChoice {
            index: 0,
            message,
            finish_reason: Some(finish_reason),
            logprobs: None,
            extra: Map::new(),
        }],
        usage: Some(oa::CompletionUsage::from(&Usage::from(&resp.usage))),
        system_fingerprint: None,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// 3. Anthropic stream -> OpenAI chunks
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A tool_use block and the OpenAI `tool_calls[].index` it streams as.
    Tool(u32),
    Other,
}

/// Translates an Anthropic Messages stream into OpenAI chat completion chunks.
///
/// Feed every parsed upstream event to [`on_event`](Self::on_event), then call
/// [`finish`](Self::finish) at the end of the upstream stream. After each call check
/// [`error`](Self::error): an upstream `error` event, or a stream that ended before
/// `message_stop`/`message_delta`, sets it, and the caller should send the client an
/// error (e.g. [`anthropic_error_to_openai`]) instead of `[DONE]`. Once an error is set
/// the translator emits nothing more. The caller writes `data: [DONE]` itself.
#[derive(Debug, Clone)]
pub struct AnthropicToOpenAiStream {
    created: u64,
    include_usage: bool,
    id: String,
    model: String,
    started: bool,
    blocks: HashMap<u32, BlockKind>,
    next_tool_index: u32,
    usage: Option<an::Usage>,
    finish_sent: bool,
    stopped: bool,
    error: Option<an::ErrorBody>,
    output_chars: u64,
}

impl AnthropicToOpenAiStream {
    /// `created` is the Unix time stamped on every chunk; `include_usage` mirrors the
    /// client's `stream_options.include_usage` (a final chunk with empty `choices` and
    /// `usage`). Id and model come from the upstream's `message_start`.
    pub fn new(created: u64, include_usage: bool) -> Self {
        AnthropicToOpenAiStream {
            created,
            include_usage,
            id: String::new(),
            model: String::new(),
            started: false,
            blocks: HashMap::new(),
            next_tool_index: 0,
            usage: None,
            finish_sent: false,
            stopped: false,
            error: None,
            output_chars: 0,
        }
    }

    /// Translates one upstream event.
    pub fn on_event(&mut self, event: an::StreamEvent) -> Vec<oa::ChatCompletionChunk> {
        if self.error.is_some() || self.stopped {
            return Vec::new();
        }
        match event {
            an::StreamEvent::MessageStart { message } => {
                self.started = true;
                self.id = message.id;
                self.model = message.model;
                self.usage = Some(message.usage);
                vec![self.delta_chunk(oa::ChunkDelta {
                    role: Some(oa::Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                })]
            }
            an::StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => self.on_block_start(index, content_block),
            an::StreamEvent::ContentBlockDelta { index, delta } => {
                self.on_block_delta(index, delta)
            }
            an::StreamEvent::ContentBlockStop { .. } | an::StreamEvent::Ping => Vec::new(),
            an::StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.merge_usage(&u);
                }
                match delta.stop_reason {
                    Some(reason) if !self.finish_sent => {
                        self.finish_sent = true;
                        vec![self.finish_chunk(anthropic_stop_to_openai(&reason))]
                    }
                    _ => Vec::new(),
                }
            }
            an::StreamEvent::MessageStop => {
                self.stopped = true;
                let mut out = Vec::new();
                if !self.finish_sent {
                    self.finish_sent = true;
                    out.push(self.finish_chunk(oa::FinishReason::Stop));
                }
                out.extend(self.usage_chunk());
                out
            }
            an::StreamEvent::Error { error } => {
                self.error = Some(error);
                Vec::new()
            }
            an::StreamEvent::Unknown(v) => {
                // A malformed `error` event still ends the stream as an error.
                if v.get("type").and_then(Value::as_str) == Some("error") {
                    let error = v
                        .get("error")
                        .and_then(|e| serde_json::from_value(e.clone()).ok())
                        .unwrap_or_else(|| an::ErrorBody {
                            kind: "api_error".to_owned(),
                            message: "upstream stream error".to_owned(),
                        });
                    self.error = Some(error);
                }
                // Any other unknown event is ignored: new upstream event types must not
                // break the client's stream.
                Vec::new()
            }
        }
    }

    /// Ends the stream. If the upstream already finished cleanly this returns the
    /// pending usage chunk at most; if it stopped before any stop reason, it sets
    /// [`error`](Self::error) instead of inventing a clean end.
    pub fn finish(&mut self) -> Vec<oa::ChatCompletionChunk> {
        if self.error.is_some() || self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        if self.finish_sent {
            return self.usage_chunk();
        }
        self.error = Some(an::ErrorBody {
            kind: "api_error".to_owned(),
            message: "upstream stream ended before the message was complete".to_owned(),
        });
        Vec::new()
    }

    /// The upstream error that ended the stream, if any.
    pub fn error(&self) -> Option<&an::ErrorBody> {
        self.error.as_ref()
    }

    /// Usage so far: input (incl. cache) from `message_start`, output from the latest
    /// `message_delta`. `None` before `message_start`.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(Usage::from)
    }

    /// Characters of text, reasoning and tool arguments streamed so far, for estimating
    /// usage when the upstream never reports it.
    pub fn output_chars(&self) -> u64 {
        self.output_chars
    }

    fn on_block_start(
        &mut self,
        index: u32,
        block: an::ContentBlock,
    ) -> Vec<oa::ChatCompletionChunk> {
        match block {
            an::ContentBlock::Text(t) => {
                self.blocks.insert(index, BlockKind::Text);
                self.text_chunk(t.text)
            }
            an::ContentBlock::Thinking(t) => {
                self.blocks.insert(index, BlockKind::Thinking);
                self.reasoning_chunk(t.thinking)
            }
            an::ContentBlock::ToolUse(t) => {
                let k = self.next_tool_index;
                self.next_tool_index = k.saturating_add(1);
                self.blocks.insert(index, BlockKind::Tool(k));
                // Streams start tool input as `{}` and send it as input_json_delta; a
                // non-empty input here is the whole input.
                let arguments = match &t.input {
                    Value::Object(m) if !m.is_empty() => t.input.to_string(),
                    _ => String::new(),
                };
                self.count(&arguments);
                vec![self.tool_chunk(oa::ToolCallDelta {
                    index: k,
                    id: Some(t.id),
                    kind: Some("function".to_owned()),
                    function: Some(oa::FunctionCallDelta {
                        name: Some(t.name),
                        arguments: Some(arguments),
                    }),
                })]
            }
            _ => {
                self.blocks.insert(index, BlockKind::Other);
                Vec::new()
            }
        }
    }

    fn on_block_delta(
        &mut self,
        index: u32,
        delta: an::ContentDelta,
    ) -> Vec<oa::ChatCompletionChunk> {
        let kind = self.blocks.get(&index).copied();
        match delta {
            an::ContentDelta::TextDelta { text } => self.text_chunk(text),
            an::ContentDelta::ThinkingDelta { thinking } => self.reasoning_chunk(thinking),
            an::ContentDelta::InputJsonDelta { partial_json } => match kind {
                Some(BlockKind::Tool(k)) if !partial_json.is_empty() => {
                    self.count(&partial_json);
                    vec![self.tool_chunk(oa::ToolCallDelta {
                        index: k,
                        id: None,
                        kind: None,
                        function: Some(oa::FunctionCallDelta {
                            name: None,
                            arguments: Some(partial_json),
                        }),
                    })]
                }
                // Input of server tools (or of a block we never saw start) is not
                // something the client called.
                _ => Vec::new(),
            },
            // Signatures only matter to Anthropic; citations have no OpenAI form.
            an::ContentDelta::SignatureDelta { .. } | an::ContentDelta::Unknown(_) => Vec::new(),
        }
    }

    fn merge_usage(&mut self, delta: &an::DeltaUsage) {
        let usage = self.usage.get_or_insert_with(an::Usage::default);
        usage.output_tokens = delta.output_tokens;
        if let Some(n) = delta.input_tokens {
            usage.input_tokens = n;
        }
        if let Some(n) = delta.cache_creation_input_tokens {
            usage.cache_creation_input_tokens = Some(n);
        }
        if let Some(n) = delta.cache_read_input_tokens {
            usage.cache_read_input_tokens = Some(n);
        }
    }

    fn count(&mut self, s: &str) {
        let n = u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
        self.output_chars = self.output_chars.saturating_add(n);
    }

    fn text_chunk(&mut self, text: String) -> Vec<oa::ChatCompletionChunk> {
        if text.is_empty() {
            return Vec::new();
        }
        self.count(&text);
        vec![self.delta_chunk(oa::ChunkDelta {
            content: Some(text),
            ..Default::default()
        })]
    }

    fn reasoning_chunk(&mut self, text: String) -> Vec<oa::ChatCompletionChunk> {
        if text.is_empty() {
            return Vec::new();
        }
        self.count(&text);
        vec![self.delta_chunk(oa::ChunkDelta {
            reasoning_content: Some(text),
            ..Default::default()
        })]
    }

    fn tool_chunk(&self, call: oa::ToolCallDelta) -> oa::ChatCompletionChunk {
        self.delta_chunk(oa::ChunkDelta {
            tool_calls: Some(vec![call]),
            ..Default::default()
        })
    }

    fn base_chunk(&self) -> oa::ChatCompletionChunk {
        oa::ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone())
    }

    fn delta_chunk(&self, delta: oa::ChunkDelta) -> oa::ChatCompletionChunk {
        let mut chunk = self.base_chunk();
        chunk.choices.push(oa::ChunkChoice {
            delta,
            ..Default::default()
        });
        chunk
    }

    fn finish_chunk(&self, reason: oa::FinishReason) -> oa::ChatCompletionChunk {
        let mut chunk = self.base_chunk();
        chunk.choices.push(oa::ChunkChoice {
            finish_reason: Some(reason),
            ..Default::default()
        });
        chunk
    }

    fn usage_chunk(&self) -> Vec<oa::ChatCompletionChunk> {
        if !self.include_usage {
            return Vec::new();
        }
        let mut chunk = self.base_chunk();
        chunk.usage = Some(oa::CompletionUsage::from(&self.usage().unwrap_or_default()));
        vec![chunk]
    }
}

// ---------------------------------------------------------------------------------------
// 4. Anthropic request -> OpenAI request
// ---------------------------------------------------------------------------------------

/// Budgets at or below these map to `low` / `medium`; above is `high`.
const EFFORT_THRESHOLDS: [(u64, &str); 2] = [(2048, "low"), (8192, "medium")];

/// Builds an OpenAI chat request from an Anthropic Messages request (the `/v1/messages`
/// ingress). Streams always ask for `include_usage`, which billing needs.
pub fn anthropic_to_openai_request(
    req: &an::MessagesRequest,
) -> Result<oa::ChatCompletionRequest, TranslateError> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        let text = system.joined_text();
        if !text.is_empty() {
            messages.push(oa::ChatMessage::text(oa::Role::System, text));
        }
    }
    for (i, msg) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        match msg.role {
            an::Role::User => user_to_openai(&msg.content, &param, &mut messages)?,
            an::Role::Assistant => messages.push(assistant_to_openai(&msg.content)),
            an::Role::System => {
                let text = msg.content.joined_text();
                if !text.is_empty() {
                    messages.push(oa::ChatMessage::text(oa::Role::System, text));
                }
            }
        }
    }

    let mut tools = Vec::new();
    for (j, tool) in req.tools.iter().flatten().enumerate() {
        // Server tools (web search, code execution, ...) run inside Anthropic's API; an
        // OpenAI upstream can't run them.
        if tool.kind.as_deref().is_some_and(|k| k != "custom") {
            return Err(TranslateError::invalid(
                format!(
                    "tool type `{}` is not supported by this model",
                    tool.kind.as_deref().unwrap_or_default()
                ),
                format!("tools[{j}].type"),
            ));
        }
        tools.push(oa::Tool {
            kind: "function".to_owned(),
            function: oa::FunctionDefinition {
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters: tool.input_schema.clone(),
                strict: None,
            },
            extra: Map::new(),
        });
    }

    let (tool_choice, parallel_tool_calls) = match &req.tool_choice {
        None => (None, None),
        Some(an::ToolChoice::None) => (Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::None)), None),
        Some(an::ToolChoice::Auto {
            disable_parallel_tool_use,
        }) => (
            Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::Auto)),
            parallel_flag(*disable_parallel_tool_use),
        ),
        Some(an::ToolChoice::Any {
            disable_parallel_tool_use,
        }) => (
            Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::Required)),
            parallel_flag(*disable_parallel_tool_use),
        ),
        Some(an::ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }) => (
            Some(oa::ToolChoice::Named(oa::NamedToolChoice::function(name))),
            parallel_flag(*disable_parallel_tool_use),
        ),
    };

    let reasoning_effort = match &req.thinking {
        Some(an::ThinkingConfig::Enabled { budget_tokens }) => Some(
            EFFORT_THRESHOLDS
                .iter()
                .find(|(limit, _)| budget_tokens <= limit)
                .map_or("high", |(_, name)| *name)
                .to_owned(),
        ),
        _ => None,
    };

    let stream = req.stream;
    Ok(oa::ChatCompletionRequest {
        model: req.model.clone(),
        messages,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls,
        // `max_tokens` rather than `max_completion_tokens`: every OpenAI-compatible
        // server understands it.
        max_tokens: Some(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        // top_k has no OpenAI counterpart; it only narrows sampling, so it is dropped.
        stop: req
            .stop_sequences
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| oa::Stop::Many(s.clone())),
        user: req.metadata.as_ref().and_then(|m| m.user_id.clone()),
        stream,
        stream_options: stream.filter(|s| *s).map(|_| oa::StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        reasoning_effort,
        ..Default::default()
    })
}

fn parallel_flag(disable: Option<bool>) -> Option<bool> {
    (disable == Some(true)).then_some(false)
}

/// A user turn: its tool results become `tool` messages first (OpenAI wants them right
/// after the assistant's calls), then the rest as one user message.
fn user_to_openai(
    content: &an::MessageContent,
    param: &str,
    out: &mut Vec<oa::ChatMessage>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        an::MessageContent::Text(s) => {
            out.push(oa::ChatMessage::text(oa::Role::User, s.clone()));
            return Ok(());
        }
        an::MessageContent::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    // Images inside tool results can't go in an OpenAI tool message; they follow in the
    // user message so the model still sees them.
    let mut tool_images = Vec::new();
    for (k, block) in blocks.iter().enumerate() {
        let block_param = format!("{param}.content[{k}]");
        match block {
            an::ContentBlock::ToolResult(r) => {
                let text = match &r.content {
                    None => String::new(),
                    Some(an::ToolResultContent::Text(s)) => s.clone(),
                    Some(an::ToolResultContent::Blocks(inner)) => {
                        let mut text = Vec::new();
                        for b in inner {
                            match b {
                                an::ContentBlock::Text(t) => text.push(t.text.clone()),
                                other => tool_images.push(block_to_part(other, &block_param)?),
                            }
                        }
                        text.join("\n")
                    }
                };
                // OpenAI tool messages have no error flag; the text carries the failure
                // (clients put the error message there), so `is_error` is dropped.
                let mut msg = oa::ChatMessage::text(oa::Role::Tool, text);
                msg.tool_call_id = Some(r.tool_use_id.clone());
                out.push(msg);
            }
            other => parts.push(block_to_part(other, &block_param)?),
        }
    }
    parts.extend(tool_images);
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [oa::ContentPart::Text(t)] if t.extra.is_empty() => {
                oa::MessageContent::Text(t.text.clone())
            }
            _ => oa::MessageContent::Parts(parts),
        };
        let mut msg = oa::ChatMessage::empty(oa::Role::User);
        msg.content = Some(content);
        out.push(msg);
    }
    Ok(())
}

fn block_to_part(block: &an::ContentBlock, param: &str) -> Result<oa::ContentPart, TranslateError> {
    match block {
        an::ContentBlock::Text(t) => Ok(oa::ContentPart::text(t.text.clone())),
        an::ContentBlock::Image(img) => {
            let url = match &img.source {
                an::ImageSource::Base64 { media_type, data } => {
                    format!("data:{media_type};base64,{data}")
                }
                an::ImageSource::Url { url } => url.clone(),
                an::ImageSource::Unknown(_) => {
                    return Err(TranslateError::invalid(
                        "unsupported image source",
                        format!("{param}.source"),
                    ))
                }
            };
            Ok(oa::ContentPart::ImageUrl(oa::ImageUrlPart {
                image_url: oa::ImageUrl { url, detail: None },
                extra: Map::new(),
            }))
        }
        an::ContentBlock::Document(doc) => {
            let source = &doc.source;
            let kind = source.get("type").and_then(Value::as_str);
            let media_type = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            match (kind, media_type, data) {
                (Some("base64"), Some(media_type), Some(data)) => {
                    Ok(oa::ContentPart::File(oa::FilePart {
                        file: oa::FileRef {
                            file_data: Some(format!("data:{media_type};base64,{data}")),
                            file_id: None,
                            filename: doc
                                .extra
                                .get("title")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        },
                        extra: Map::new(),
                    }))
                }
                // A plain-text document is just text to an OpenAI model.
                (Some("text"), _, Some(data)) => Ok(oa::ContentPart::text(data.to_owned())),
                _ => Err(TranslateError::invalid(
                    "unsupported document source",
                    format!("{param}.source"),
                )),
            }
        }
        an::ContentBlock::ToolUse(_) => Err(TranslateError::invalid(
            "tool_use blocks are only allowed in assistant messages",
            param,
        )),
        // Thinking is model output: a user turn carrying it is malformed.
        an::ContentBlock::Thinking(_) | an::ContentBlock::RedactedThinking(_) => {
            Err(TranslateError::invalid(
                "thinking blocks are only allowed in assistant messages",
                param,
            ))
        }
        an::ContentBlock::ToolResult(_) => Err(TranslateError::invalid(
            "nested tool_result blocks are not supported",
            param,
        )),
        an::ContentBlock::Unknown(v) => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
            Err(TranslateError::invalid(
                format!("unsupported content block type `{kind}`"),
                param,
            ))
        }
    }
}

fn assistant_to_openai(content: &an::MessageContent) -> oa::ChatMessage {
    let mut msg = oa::ChatMessage::empty(oa::Role::Assistant);
    let blocks = match content {
        an::MessageContent::Text(s) => {
            msg.content = Some(oa::MessageContent::Text(s.clone()));
            return msg;
        }
        an::MessageContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block {
            an::ContentBlock::Text(t) => text.push_str(&t.text),
            an::ContentBlock::Thinking(t) => reasoning.push_str(&t.thinking),
            an::ContentBlock::ToolUse(t) => {
                calls.push(oa::ToolCall::function(&t.id, &t.name, t.input.to_string()));
            }
            // Redacted thinking and server-tool history (web search results, ...) are
            // Anthropic-internal; the past turn still reads correctly without them.
            _ => {}
        }
    }
    if !text.is_empty() || calls.is_empty() {
        msg.content = Some(oa::MessageContent::Text(text));
    }
    if !reasoning.is_empty() {
        msg.reasoning_content = Some(reasoning);
    }
    if !calls.is_empty() {
        msg.tool_calls = Some(calls);
    }
    msg
}

// ---------------------------------------------------------------------------------------
// 5. OpenAI response -> Anthropic response
// ---------------------------------------------------------------------------------------

/// Builds an Anthropic message from an OpenAI chat completion (first choice; the ingress
/// never asks for more). Id and model are the upstream's.
///
/// Tool call arguments that aren't a JSON object (a model glitch) become `{}`: Anthropic
/// requires an object and the client can't use a broken call anyway.
pub fn openai_to_anthropic_response(resp: &oa::ChatCompletionResponse) -> an::MessagesResponse {
    let mut out = an::MessagesResponse::new(resp.id.clone(), resp.model.clone());
    let choice = resp.choices.first();
    if let Some(choice) = choice {
        let msg = &choice.message;
        if let Some(r) = msg.reasoning_content.as_ref().filter(|r| !r.is_empty()) {
            // No signature: this thinking came from a non-Anthropic model.
            out.content
                .push(an::ContentBlock::Thinking(an::ThinkingBlock {
                    thinking: r.clone(),
                    signature: Some(String::new()),
                    extra: Map::new(),
                }));
        }
        let text = msg.content.as_ref().map(oa::MessageContent::joined_text);
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            out.content.push(an::ContentBlock::text(text));
        }
        if let Some(refusal) = msg.refusal.as_ref().filter(|r| !r.is_empty()) {
            out.content.push(an::ContentBlock::text(refusal.clone()));
        }
        for call in msg.tool_calls.iter().flatten() {
            out.content.push(tool_use_block(
                &call.id,
                &call.function.name,
                object_or_empty(&call.function.arguments),
            ));
        }
        if let Some(fc) = &msg.function_call {
            out.content.push(tool_use_block(
                "call_legacy_0",
                &fc.name,
                object_or_empty(&fc.arguments),
            ));
        }
        out.stop_reason = Some(
            choice
                .finish_reason
                .as_ref()
                .map_or(an::StopReason::EndTurn, openai_finish_to_anthropic),
        );
    }
    if let Some(u) = &resp.usage {
        out.usage = an::Usage::from(&Usage::from(u));
    }
    out
}

fn object_or_empty(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

// ---------------------------------------------------------------------------------------
// 6. OpenAI chunks -> Anthropic stream events
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum OpenBlock {
    Text(u32),
    Thinking(u32),
    Tool {
        block: u32,
        openai_index: u32,
        id: String,
    },
}

impl OpenBlock {
    fn index(&self) -> u32 {
        match self {
            OpenBlock::Text(i) | OpenBlock::Thinking(i) => *i,
            OpenBlock::Tool { block, .. } => *block,
        }
    }
}

/// Translates an OpenAI chat completion stream into Anthropic Messages stream events.
///
/// Feed each parsed chunk to [`on_event`](Self::on_event) (only choice 0 is used), call
/// [`on_error`](Self::on_error) for a mid-stream `{"error":...}`, and call
/// [`finish`](Self::finish) on `[DONE]` or end of stream: it closes any open block and
/// sends `message_delta` (stop reason and usage, which OpenAI sends last) and
/// `message_stop`, even when the upstream never sent a finish reason.
#[derive(Debug, Clone)]
pub struct OpenAiToAnthropicStream {
    id: String,
    model: String,
    started: bool,
    finished: bool,
    next_block: u32,
    open: Option<OpenBlock>,
    stop_reason: Option<an::StopReason>,
    saw_tool: bool,
    usage: Option<oa::CompletionUsage>,
    output_chars: u64,
}

impl OpenAiToAnthropicStream {
    /// `message_id` (e.g. `msg_<request id>`) and `model` are reported in `message_start`.
    pub fn new(message_id: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiToAnthropicStream {
            id: message_id.into(),
            model: model.into(),
            started: false,
            finished: false,
            next_block: 0,
            open: None,
            stop_reason: None,
            saw_tool: false,
            usage: None,
            output_chars: 0,
        }
    }

    /// Translates one upstream chunk.
    pub fn on_event(&mut self, chunk: oa::ChatCompletionChunk) -> Vec<an::StreamEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        // Anthropic has a single candidate; other choices (n > 1) can't be expressed.
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return out;
        };
        let delta = choice.delta;
        if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
            let index = self.ensure_thinking(&mut out);
            self.count(&text);
            out.push(an::StreamEvent::ContentBlockDelta {
                index,
                delta: an::ContentDelta::ThinkingDelta { thinking: text },
            });
        }
        for text in [delta.content, delta.refusal].into_iter().flatten() {
            if text.is_empty() {
                continue;
            }
            let index = self.ensure_text(&mut out);
            self.count(&text);
            out.push(an::StreamEvent::ContentBlockDelta {
                index,
                delta: an::ContentDelta::TextDelta { text },
            });
        }
        for call in delta.tool_calls.into_iter().flatten() {
            let function = call.function.unwrap_or_default();
            self.on_tool_delta(call.index, call.id, function, &mut out);
        }
        if let Some(function) = delta.function_call {
            // Legacy streams have one unnamed call; give it a stable id.
            let id = (!self.saw_tool).then(|| "call_legacy_0".to_owned());
            self.on_tool_delta(0, id, function, &mut out);
        }
        if let Some(reason) = choice.finish_reason {
            self.stop_reason = Some(openai_finish_to_anthropic(&reason));
            self.close_open(&mut out);
        }
        out
    }

    /// Ends the stream with an Anthropic `error` event for a mid-stream upstream error.
    pub fn on_error(&mut self, err: &oa::ErrorBody) -> Vec<an::StreamEvent> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        vec![an::StreamEvent::Error {
            error: openai_error_to_anthropic(err).error,
        }]
    }

    /// Closes any open block and ends the message. Idempotent.
    pub fn finish(&mut self) -> Vec<an::StreamEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        self.close_open(&mut out);
        self.finished = true;
        let stop_reason = self.stop_reason.clone().unwrap_or(if self.saw_tool {
            an::StopReason::ToolUse
        } else {
            an::StopReason::EndTurn
        });
        let usage = an::Usage::from(&self.usage().unwrap_or_default());
        out.push(an::StreamEvent::MessageDelta {
            delta: an::MessageDeltaBody {
                stop_reason: Some(stop_reason),
                stop_sequence: None,
                extra: Map::new(),
            },
            usage: Some(an::DeltaUsage {
                input_tokens: Some(usage.input_tokens),
                output_tokens: usage.output_tokens,
                cache_creation_input_tokens: usage.cache_creation_input_tokens,
                cache_read_input_tokens: usage.cache_read_input_tokens,
                extra: Map::new(),
            }),
        });
        out.push(an::StreamEvent::MessageStop);
        out
    }

    /// Usage reported by the upstream (its final `usage` chunk), if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(Usage::from)
    }

    /// Characters of text, reasoning and tool arguments streamed so far.
    pub fn output_chars(&self) -> u64 {
        self.output_chars
    }

    fn count(&mut self, s: &str) {
        let n = u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
        self.output_chars = self.output_chars.saturating_add(n);
    }

    fn ensure_started(&mut self, out: &mut Vec<an::StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        // Input usage is unknown until OpenAI's last chunk; it is repeated in
        // `message_delta`.
        let message = an::MessagesResponse::new(self.id.clone(), self.model.clone());
        out.push(an::StreamEvent::MessageStart { message });
    }

    fn close_open(&mut self, out: &mut Vec<an::StreamEvent>) {
        if let Some(open) = self.open.take() {
            out.push(an::StreamEvent::ContentBlockStop {
                index: open.index(),
            });
        }
    }

    fn start_block(&mut self, block: an::ContentBlock, out: &mut Vec<an::StreamEvent>) -> u32 {
        self.close_open(out);
        let index = self.next_block;
        self.next_block = index.saturating_add(1);
        out.push(an::StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        });
        index
    }

    fn ensure_text(&mut self, out: &mut Vec<an::StreamEvent>) -> u32 {
        if let Some(OpenBlock::Text(i)) = self.open {
            return i;
        }
        let index = self.start_block(an::ContentBlock::text(""), out);
        self.open = Some(OpenBlock::Text(index));
        index
    }

    fn ensure_thinking(&mut self, out: &mut Vec<an::StreamEvent>) -> u32 {
        if let Some(OpenBlock::Thinking(i)) = self.open {
            return i;
        }
        let block = an::ContentBlock::Thinking(an::ThinkingBlock {
            thinking: String::new(),
            signature: Some(String::new()),
            extra: Map::new(),
        });
        let index = self.start_block(block, out);
        self.open = Some(OpenBlock::Thinking(index));
        index
    }

    fn on_tool_delta(
        &mut self,
        openai_index: u32,
        id: Option<String>,
        function: oa::FunctionCallDelta,
        out: &mut Vec<an::StreamEvent>,
    ) {
        let same_call = match &self.open {
            // Some servers send every call with index 0; a new id means a new call.
            Some(OpenBlock::Tool {
                openai_index: open_index,
                id: open_id,
                ..
            }) => *open_index == openai_index && id.as_ref().is_none_or(|i| i == open_id),
            _ => false,
        };
        let index = match (&self.open, same_call) {
            (Some(open), true) => open.index(),
            _ => {
                let id = id.unwrap_or_else(|| format!("call_{}_{}", self.next_block, openai_index));
                let block = tool_use_block(
                    &id,
                    function.name.as_deref().unwrap_or_default(),
                    Value::Object(Map::new()),
                );
                let index = self.start_block(block, out);
                self.open = Some(OpenBlock::Tool {
                    block: index,
                    openai_index,
                    id,
                });
                self.saw_tool = true;
                index
            }
        };
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            self.count(&arguments);
            out.push(an::StreamEvent::ContentBlockDelta {
                index,
                delta: an::ContentDelta::InputJsonDelta {
                    partial_json: arguments,
                },
            });
        }
    }
}
