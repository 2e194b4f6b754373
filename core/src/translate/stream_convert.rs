//! Converting between a streamed and a whole OpenAI chat completion, for the gateway's
//! "force stream" and "force non-stream" modes.
//!
//! * [`ChunkAggregator`]: chunks in, one [`oa::ChatCompletionResponse`] out.
//! * [`response_to_chunks`]: one response in, the chunks a stream would have carried out.
//!
//! The two are inverse: aggregating the emitted chunks gives back an equivalent response
//! (same id, model, created, choices, tool calls and usage; extension fields of the
//! response and choice objects are not carried through chunks).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::protocol::openai as oa;

#[derive(Debug, Default)]
struct ToolCallAcc {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<oa::Role>,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolCallAcc>,
    function_call: Option<(Option<String>, String)>,
    finish_reason: Option<oa::FinishReason>,
    logprobs: Option<Value>,
}

fn append(slot: &mut Option<String>, piece: &str) {
    slot.get_or_insert_with(String::new).push_str(piece);
}

/// Assembles streamed chunks into one chat completion.
///
/// Per choice (by `index`): `content`, `reasoning_content` and `refusal` are
/// concatenated; tool calls are assembled by their `index`, taking `id`, `type` and
/// `function.name` from the first fragment that has them and concatenating the argument
/// pieces; legacy `function_call` fragments likewise; the last non-null `finish_reason`
/// wins; `logprobs.content` arrays are concatenated. `usage` comes from the chunk that
/// carries it (the last one wins); `id`, `created`, `model` and `system_fingerprint` from
/// the first chunk that has them.
#[derive(Debug, Default)]
pub struct ChunkAggregator {
    id: Option<String>,
    created: Option<u64>,
    model: Option<String>,
    system_fingerprint: Option<String>,
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<oa::CompletionUsage>,
    chunks: usize,
}

impl ChunkAggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once at least one chunk was fed.
    pub fn has_chunks(&self) -> bool {
        self.chunks > 0
    }

    /// Feeds one chunk.
    pub fn push(&mut self, chunk: &oa::ChatCompletionChunk) {
        self.chunks = self.chunks.saturating_add(1);
        if self.id.is_none() && !chunk.id.is_empty() {
            self.id = Some(chunk.id.clone());
        }
        if self.created.is_none() && chunk.created != 0 {
            self.created = Some(chunk.created);
        }
        if self.model.is_none() && !chunk.model.is_empty() {
            self.model = Some(chunk.model.clone());
        }
        if self.system_fingerprint.is_none() {
            self.system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        for choice in &chunk.choices {
            let acc = self.choices.entry(choice.index).or_default();
            let delta = &choice.delta;
            if acc.role.is_none() {
                acc.role = delta.role;
            }
            if let Some(c) = &delta.content {
                append(&mut acc.content, c);
            }
            if let Some(r) = &delta.reasoning_content {
                append(&mut acc.reasoning, r);
            }
            if let Some(r) = &delta.refusal {
                append(&mut acc.refusal, r);
            }
            for call in delta.tool_calls.iter().flatten() {
                let tc = acc.tool_calls.entry(call.index).or_default();
                if tc.id.is_none() {
                    tc.id = call.id.clone().filter(|id| !id.is_empty());
                }
                if tc.kind.is_none() {
                    tc.kind.clone_from(&call.kind);
                }
                if let Some(f) = &call.function {
                    if tc.name.is_none() {
                        tc.name = f.name.clone().filter(|n| !n.is_empty());
                    }
                    if let Some(args) = &f.arguments {
                        tc.arguments.push_str(args);
                    }
                }
            }
            if let Some(f) = &delta.function_call {
                let (name, args) = acc
                    .function_call
                    .get_or_insert_with(|| (None, String::new()));
                if name.is_none() {
                    name.clone_from(&f.name);
                }
                if let Some(a) = &f.arguments {
                    args.push_str(a);
                }
            }
            if choice.finish_reason.is_some() {
                acc.finish_reason.clone_from(&choice.finish_reason);
            }
            if let Some(lp) = &choice.logprobs {
                merge_logprobs(&mut acc.logprobs, lp);
            }
        }
    }

    /// The assembled completion. Missing id/model are empty strings and a missing
    /// `created` is 0 (see [`has_chunks`](Self::has_chunks)).
    pub fn finish(self) -> oa::ChatCompletionResponse {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, acc)| finish_choice(index, acc))
            .collect();
        oa::ChatCompletionResponse {
            id: self.id.unwrap_or_default(),
            object: oa::CHAT_COMPLETION_OBJECT.to_owned(),
            created: self.created.unwrap_or(0),
            model: self.model.unwrap_or_default(),
            choices,
            usage: self.usage,
            system_fingerprint: self.system_fingerprint,
            extra: Map::new(),
        }
    }
}

fn merge_logprobs(slot: &mut Option<Value>, piece: &Value) {
    let Some(existing) = slot else {
        *slot = Some(piece.clone());
        return;
    };
    for key in ["content", "refusal"] {
        if let Some(Value::Array(more)) = piece.get(key) {
            match existing.get_mut(key) {
                Some(Value::Array(items)) => items.extend(more.iter().cloned()),
                _ => {
                    if let Value::Object(obj) = existing {
                        obj.insert(key.to_owned(), Value::Array(more.clone()));
                    }
                }
            }
        }
    }
}

fn finish_choice(index: u32, acc: ChoiceAcc) -> oa::ChatChoice {
    let tool_calls: Vec<oa::ToolCall> = acc
        .tool_calls
        .into_iter()
        .map(|(i, tc)| oa::ToolCall {
            // A provider that never sent an id still gets a stable, unique one.
            id: tc.id.unwrap_or_else(|| format!("call_{index}_{i}")),
            kind: tc.kind.unwrap_or_else(|| "function".to_owned()),
            function: oa::FunctionCall {
                name: tc.name.unwrap_or_default(),
                arguments: tc.arguments,
            },
            thought_signature: None,
        })
        .collect();
    let function_call = acc.function_call.map(|(name, arguments)| oa::FunctionCall {
        name: name.unwrap_or_default(),
        arguments,
    });
    let calls_only = !tool_calls.is_empty() || function_call.is_some();
    let content = match acc.content {
        Some(c) => Some(c),
        // OpenAI sends `content: null` with calls and `""` for an empty answer.
        None if calls_only => None,
        None => Some(String::new()),
    };
    let mut message = oa::ChatMessage::empty(acc.role.unwrap_or(oa::Role::Assistant));
    message.content = content.map(oa::MessageContent::Text);
    message.reasoning_content = acc.reasoning;
    message.refusal = acc.refusal;
    message.tool_calls = (!tool_calls.is_empty()).then_some(tool_calls);
    message.function_call = function_call;
    oa::ChatChoice {
        index,
        message,
        finish_reason: acc.finish_reason,
        logprobs: acc.logprobs,
        extra: Map::new(),
    }
}

/// Aggregates a whole list of chunks (see [`ChunkAggregator`]).
pub fn aggregate_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a oa::ChatCompletionChunk>,
) -> oa::ChatCompletionResponse {
    let mut agg = ChunkAggregator::new();
    for chunk in chunks {
        agg.push(chunk);
    }
    agg.finish()
}

/// The chunks a stream of `resp` would carry, in order, for each choice: a role chunk,
/// a `reasoning_content` chunk, a `content` chunk (with the choice's `logprobs`), a
/// `refusal` chunk, one chunk per tool call (id, name and complete arguments), a legacy
/// `function_call` chunk, then a finish chunk with an empty delta. Chunks without
/// anything to say are skipped. When `include_usage` is true and the response has usage,
/// a final chunk with empty `choices` carries it (as `stream_options.include_usage`
/// asks).
pub fn response_to_chunks(
    resp: &oa::ChatCompletionResponse,
    include_usage: bool,
) -> Vec<oa::ChatCompletionChunk> {
    let base = || {
        let mut c = oa::ChatCompletionChunk::new(resp.id.clone(), resp.created, resp.model.clone());
        c.system_fingerprint.clone_from(&resp.system_fingerprint);
        c
    };
    let single = |index: u32,
                  delta: oa::ChunkDelta,
                  finish_reason: Option<oa::FinishReason>,
                  logprobs: Option<Value>| {
        let mut c = base();
        c.choices.push(oa::ChunkChoice {
            index,
            delta,
            finish_reason,
            logprobs,
            extra: Map::new(),
        });
        c
    };

    let mut out = Vec::new();
    for choice in &resp.choices {
        let msg = &choice.message;
        let index = choice.index;
        out.push(single(
            index,
            oa::ChunkDelta {
                role: Some(msg.role),
                ..oa::ChunkDelta::default()
            },
            None,
            None,
        ));
        if let Some(r) = msg.reasoning_content.as_ref().filter(|r| !r.is_empty()) {
            out.push(single(
                index,
                oa::ChunkDelta {
                    reasoning_content: Some(r.clone()),
                    ..oa::ChunkDelta::default()
                },
                None,
                None,
            ));
        }
        let text = msg
            .content
            .as_ref()
            .map(oa::MessageContent::joined_text)
            .unwrap_or_default();
        if !text.is_empty() || choice.logprobs.is_some() {
            out.push(single(
                index,
                oa::ChunkDelta {
                    content: Some(text),
                    ..oa::ChunkDelta::default()
                },
                None,
                choice.logprobs.clone(),
            ));
        }
        if let Some(r) = msg.refusal.as_ref().filter(|r| !r.is_empty()) {
            out.push(single(
                index,
                oa::ChunkDelta {
                    refusal: Some(r.clone()),
                    ..oa::ChunkDelta::default()
                },
                None,
                None,
            ));
        }
        for (i, call) in msg.tool_calls.iter().flatten().enumerate() {
            out.push(single(
                index,
                oa::ChunkDelta {
                    tool_calls: Some(vec![oa::ToolCallDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: Some(call.id.clone()),
                        kind: Some(call.kind.clone()),
                        function: Some(oa::FunctionCallDelta {
                            name: Some(call.function.name.clone()),
                            arguments: Some(call.function.arguments.clone()),
                        }),
                    }]),
                    ..oa::ChunkDelta::default()
                },
                None,
                None,
            ));
        }
        if let Some(f) = &msg.function_call {
            out.push(single(
                index,
                oa::ChunkDelta {
                    function_call: Some(oa::FunctionCallDelta {
                        name: Some(f.name.clone()),
                        arguments: Some(f.arguments.clone()),
                    }),
                    ..oa::ChunkDelta::default()
                },
                None,
                None,
            ));
        }
        out.push(single(
            index,
            oa::ChunkDelta::default(),
            Some(
                choice
                    .finish_reason
                    .clone()
                    .unwrap_or(oa::FinishReason::Stop),
            ),
            None,
        ));
    }
    if include_usage {
        if let Some(usage) = &resp.usage {
            let mut c = base();
            c.usage = Some(usage.clone());
            out.push(c);
        }
    }
    out
}
