//! OpenAI Responses ingress (`POST /v1/responses`) over the hub (OpenAI chat):
//!
//! - [`responses_to_hub_request`]: a Responses request becomes a hub request.
//! - [`ResponsesEcho`]: what the answer needs from the request (ids, the request
//!   parameters a response object echoes, how tool names map back).
//! - [`hub_to_responses_response`]: a hub completion becomes a response object.
//! - [`HubToResponsesStream`]: hub chunks become the typed Responses stream events.
//!
//! Mapping choices (what is lost or approximated is listed in `docs/api.md`):
//! - `instructions`, `system` and `developer` messages become hub `system` messages (the
//!   role every OpenAI-compatible server knows).
//! - Assistant messages, reasoning items and the function calls that follow them become
//!   one hub assistant turn (`content`, `reasoning_content`, `tool_calls`); call outputs
//!   become `tool` messages. Images inside a call output follow in a user message.
//! - Reasoning items contribute their summary text as `reasoning_content`; their
//!   `encrypted_content` only means something to a Responses upstream, which gets the
//!   client's body untouched instead (see `translate::responses_upstream::passthrough_body`).
//! - `custom` (freeform) tools become functions with one string parameter `input`; the
//!   grammar goes into its description. Their calls come back as `custom_tool_call`s.
//! - Functions of a `namespace` tool become hub functions named `<namespace>__<name>`
//!   and come back as `function_call`s with `namespace` set.
//! - Hosted tools (`web_search`, `file_search`, `tool_search`, `code_interpreter`, ...)
//!   are dropped: no non-Responses upstream can run them. Past hosted-tool activity items
//!   in the input are dropped too. Forcing a hosted tool, `item_reference`,
//!   `previous_response_id` (unless the caller resolved it with
//!   [`rs::ResponsesRequest::with_history`]), `background` and `conversation` are refused.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::anthropic::TranslateError;
use crate::protocol::openai as oa;
use crate::protocol::responses as rs;
use crate::usage::Usage;

/// Separator between a namespace and a function name in hub tool names.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// Input item types that record hosted-tool activity; they carry nothing a
/// non-Responses upstream could use and are left out of the hub conversation.
const HOSTED_ACTIVITY_ITEMS: &[&str] = &[
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "image_generation_call",
    "mcp_list_tools",
    "tool_search_call",
    "tool_search_output",
];

/// Top-level request fields that need state this gateway does not keep.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    (
        "conversation",
        "conversations are not supported; send the whole input",
    ),
    ("prompt", "stored prompt templates are not supported"),
];

/// How a hub function name maps back to the Responses tool the client declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolKind {
    Function,
    /// A freeform tool; the hub function takes `{"input": "<text>"}`.
    Custom,
    /// A function inside a `namespace` tool.
    Namespaced {
        namespace: String,
        name: String,
    },
}

/// The client's tools by hub function name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolMap {
    kinds: HashMap<String, ToolKind>,
}

impl ToolMap {
    /// Reads the declared tools of a request.
    pub fn from_request(req: &rs::ResponsesRequest) -> Self {
        let mut kinds = HashMap::new();
        for tool in req.tools.iter().flatten() {
            match tool {
                rs::Tool::Function(f) => {
                    kinds.insert(f.name.clone(), ToolKind::Function);
                }
                rs::Tool::Custom(c) => {
                    kinds.insert(c.name.clone(), ToolKind::Custom);
                }
                rs::Tool::Unknown(_) => {
                    if let Some((ns, fns)) = tool.namespace_functions() {
                        for f in fns {
                            kinds.insert(
                                namespaced_name(ns, &f.name),
                                ToolKind::Namespaced {
                                    namespace: ns.to_owned(),
                                    name: f.name.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
        ToolMap { kinds }
    }

    /// What the hub function `name` is on the client's side (a plain function when the
    /// name is not one of the declared tools).
    pub fn kind(&self, name: &str) -> ToolKind {
        self.kinds.get(name).cloned().unwrap_or(ToolKind::Function)
    }
}

fn namespaced_name(namespace: &str, name: &str) -> String {
    format!("{namespace}{NAMESPACE_SEPARATOR}{name}")
}

// ---------------------------------------------------------------------------------------
// Request: Responses -> hub
// ---------------------------------------------------------------------------------------

/// Builds a hub request from a Responses request. Streams always ask for
/// `include_usage`, which billing needs.
pub fn responses_to_hub_request(
    req: &rs::ResponsesRequest,
) -> Result<oa::ChatCompletionRequest, TranslateError> {
    if req.previous_response_id.is_some() {
        return Err(TranslateError::invalid(
            "previous_response_id is not supported: send the whole conversation in `input` (with store: false)",
            "previous_response_id",
        ));
    }
    if req.background == Some(true) {
        return Err(TranslateError::invalid(
            "background responses are not supported",
            "background",
        ));
    }
    for (field, why) in REFUSED_FIELDS {
        if req.extra.get(*field).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::invalid(*why, *field));
        }
    }

    let mut messages = Vec::new();
    if let Some(instructions) = req.instructions.as_ref().filter(|s| !s.is_empty()) {
        messages.push(oa::ChatMessage::text(
            oa::Role::System,
            instructions.clone(),
        ));
    }
    let items = req.input_items();
    if items.is_empty() {
        return Err(TranslateError::invalid("input is required", "input"));
    }
    let mut conv = Conversation::default();
    for (i, item) in items.iter().enumerate() {
        conv.push(item, &format!("input[{i}]"))?;
    }
    messages.extend(conv.finish());

    let (tools, tool_choice) = hub_tools(req)?;
    let response_format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        None | Some(rs::TextFormat::Text) => None,
        Some(rs::TextFormat::JsonObject) => Some(oa::ResponseFormat {
            kind: "json_object".to_owned(),
            json_schema: None,
            extra: Map::new(),
        }),
        Some(rs::TextFormat::JsonSchema {
            name,
            schema,
            description,
            strict,
        }) => {
            let mut js = Map::new();
            js.insert("name".to_owned(), Value::String(name.clone()));
            if let Some(d) = description {
                js.insert("description".to_owned(), Value::String(d.clone()));
            }
            js.insert("schema".to_owned(), schema.clone());
            if let Some(s) = strict {
                js.insert("strict".to_owned(), Value::Bool(*s));
            }
            Some(oa::ResponseFormat {
                kind: "json_schema".to_owned(),
                json_schema: Some(Value::Object(js)),
                extra: Map::new(),
            })
        }
        Some(rs::TextFormat::Unknown(v)) => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
            return Err(TranslateError::invalid(
                format!("text.format of type `{kind}` is not supported"),
                "text.format",
            ));
        }
    };

    let stream = req.stream.filter(|s| *s);
    Ok(oa::ChatCompletionRequest {
        model: req.model.clone(),
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        response_format,
        stream,
        stream_options: stream.map(|_| oa::StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        // `max_tokens` rather than `max_completion_tokens`: every OpenAI-compatible
        // server understands it (as for the Anthropic ingress).
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        user: req.user.clone(),
        reasoning_effort: req.reasoning.as_ref().and_then(|r| r.effort.clone()),
        // metadata, include, store, truncation, top_logprobs, max_tool_calls,
        // prompt_cache_key, service_tier and text.verbosity have no hub counterpart (or
        // would change billing); they are not forwarded.
        ..Default::default()
    })
}

/// Builds the hub conversation from input items.
#[derive(Default)]
struct Conversation {
    out: Vec<oa::ChatMessage>,
    /// Index in `out` of the assistant turn that following function calls join.
    assistant: Option<usize>,
    /// Reasoning text waiting for the assistant turn it belongs to.
    reasoning: Vec<String>,
    /// Images from call outputs, sent in a user message after the outputs.
    tool_images: Vec<oa::ContentPart>,
}

impl Conversation {
    fn push(&mut self, item: &rs::Item, param: &str) -> Result<(), TranslateError> {
        match item {
            rs::Item::Message(m) => self.message(m, param),
            rs::Item::FunctionCall(c) => {
                let name = match &c.namespace {
                    Some(ns) => namespaced_name(ns, &c.name),
                    None => c.name.clone(),
                };
                self.call(oa::ToolCall::function(&c.call_id, name, &c.arguments));
                Ok(())
            }
            rs::Item::CustomToolCall(c) => {
                let args = json!({ "input": c.input }).to_string();
                self.call(oa::ToolCall::function(&c.call_id, &c.name, args));
                Ok(())
            }
            rs::Item::FunctionCallOutput(o) | rs::Item::CustomToolCallOutput(o) => {
                self.assistant = None;
                let text = self.tool_output_text(&o.output, param)?;
                let mut msg = oa::ChatMessage::text(oa::Role::Tool, text);
                msg.tool_call_id = Some(o.call_id.clone());
                self.out.push(msg);
                Ok(())
            }
            rs::Item::Reasoning(r) => {
                let text = r.text();
                if !text.is_empty() {
                    self.reasoning.push(text);
                }
                Ok(())
            }
            rs::Item::Unknown(v) => {
                let kind = item.type_name();
                if HOSTED_ACTIVITY_ITEMS.contains(&kind) {
                    return Ok(());
                }
                let message = match kind {
                    "item_reference" => {
                        "item_reference needs stored responses; send the items themselves"
                            .to_owned()
                    }
                    "message"
                    | "function_call"
                    | "function_call_output"
                    | "custom_tool_call"
                    | "custom_tool_call_output"
                    | "reasoning" => {
                        format!("malformed `{kind}` item")
                    }
                    _ if v.get("type").is_none() => {
                        "an input item needs a `type` (or a `role` for messages)".to_owned()
                    }
                    _ => format!("input item type `{kind}` is not supported"),
                };
                Err(TranslateError::invalid(message, param))
            }
        }
    }

    fn flush_tool_images(&mut self) {
        if self.tool_images.is_empty() {
            return;
        }
        let mut msg = oa::ChatMessage::empty(oa::Role::User);
        msg.content = Some(oa::MessageContent::Parts(std::mem::take(
            &mut self.tool_images,
        )));
        self.out.push(msg);
    }

    fn message(&mut self, m: &rs::MessageItem, param: &str) -> Result<(), TranslateError> {
        match m.role {
            rs::MessageRole::System | rs::MessageRole::Developer => {
                self.flush_tool_images();
                self.assistant = None;
                let text = match &m.content {
                    rs::MessageContent::Text(s) => s.clone(),
                    rs::MessageContent::Parts(parts) => {
                        let mut text = String::new();
                        for (k, p) in parts.iter().enumerate() {
                            match p {
                                rs::ContentPart::InputText(t) => text.push_str(&t.text),
                                _ => {
                                    return Err(TranslateError::invalid(
                                        "system and developer messages may only contain text",
                                        format!("{param}.content[{k}]"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                if !text.is_empty() {
                    self.out.push(oa::ChatMessage::text(oa::Role::System, text));
                }
                Ok(())
            }
            rs::MessageRole::User => {
                self.flush_tool_images();
                self.assistant = None;
                let content = match &m.content {
                    rs::MessageContent::Text(s) => oa::MessageContent::Text(s.clone()),
                    rs::MessageContent::Parts(parts) => {
                        let mut out = Vec::with_capacity(parts.len());
                        for (k, p) in parts.iter().enumerate() {
                            out.push(user_part(p, &format!("{param}.content[{k}]"))?);
                        }
                        oa::MessageContent::Parts(out)
                    }
                };
                let mut msg = oa::ChatMessage::empty(oa::Role::User);
                msg.content = Some(content);
                self.out.push(msg);
                Ok(())
            }
            rs::MessageRole::Assistant => {
                self.flush_tool_images();
                let (text, refusal) = match &m.content {
                    rs::MessageContent::Text(s) => (s.clone(), String::new()),
                    rs::MessageContent::Parts(parts) => {
                        let mut text = String::new();
                        let mut refusal = String::new();
                        for (k, p) in parts.iter().enumerate() {
                            match p {
                                rs::ContentPart::OutputText(t) => text.push_str(&t.text),
                                rs::ContentPart::InputText(t) => text.push_str(&t.text),
                                rs::ContentPart::Refusal(r) => refusal.push_str(&r.refusal),
                                _ => {
                                    return Err(TranslateError::invalid(
                                        "assistant messages may only contain text and refusals",
                                        format!("{param}.content[{k}]"),
                                    ))
                                }
                            }
                        }
                        (text, refusal)
                    }
                };
                let mut msg = oa::ChatMessage::text(oa::Role::Assistant, text);
                if !refusal.is_empty() {
                    msg.refusal = Some(refusal);
                }
                if let Some(text) = self.take_reasoning() {
                    append_reasoning(&mut msg, text);
                }
                self.out.push(msg);
                self.assistant = Some(self.out.len().saturating_sub(1));
                Ok(())
            }
        }
    }

    /// Reasoning waiting for an assistant turn, joined.
    fn take_reasoning(&mut self) -> Option<String> {
        (!self.reasoning.is_empty()).then(|| std::mem::take(&mut self.reasoning).join("\n\n"))
    }

    fn call(&mut self, call: oa::ToolCall) {
        self.flush_tool_images();
        let idx = match self.assistant {
            Some(i) if i < self.out.len() => i,
            _ => {
                self.out.push(oa::ChatMessage::empty(oa::Role::Assistant));
                let i = self.out.len().saturating_sub(1);
                self.assistant = Some(i);
                i
            }
        };
        let reasoning = self.take_reasoning();
        if let Some(msg) = self.out.get_mut(idx) {
            if let Some(text) = reasoning {
                append_reasoning(msg, text);
            }
            msg.tool_calls.get_or_insert_with(Vec::new).push(call);
        }
    }

    fn tool_output_text(
        &mut self,
        output: &rs::ToolOutput,
        param: &str,
    ) -> Result<String, TranslateError> {
        let parts = match output {
            rs::MessageContent::Text(s) => return Ok(s.clone()),
            rs::MessageContent::Parts(parts) => parts,
        };
        let mut text = Vec::new();
        for (k, p) in parts.iter().enumerate() {
            match p {
                rs::ContentPart::InputText(t) => text.push(t.text.clone()),
                rs::ContentPart::OutputText(t) => text.push(t.text.clone()),
                other => self
                    .tool_images
                    .push(user_part(other, &format!("{param}.output[{k}]"))?),
            }
        }
        Ok(text.join("\n"))
    }

    fn finish(mut self) -> Vec<oa::ChatMessage> {
        self.flush_tool_images();
        // Reasoning with nothing after it (a cut-off turn) has no assistant turn to join.
        self.out
    }
}

fn append_reasoning(msg: &mut oa::ChatMessage, text: String) {
    match &mut msg.reasoning_content {
        Some(r) if !r.is_empty() => {
            r.push_str("\n\n");
            r.push_str(&text);
        }
        slot => *slot = Some(text),
    }
}

fn user_part(part: &rs::ContentPart, param: &str) -> Result<oa::ContentPart, TranslateError> {
    match part {
        rs::ContentPart::InputText(t) => Ok(oa::ContentPart::text(t.text.clone())),
        rs::ContentPart::OutputText(t) => Ok(oa::ContentPart::text(t.text.clone())),
        rs::ContentPart::Refusal(r) => Ok(oa::ContentPart::text(r.refusal.clone())),
        rs::ContentPart::InputImage(img) => match &img.image_url {
            Some(url) => Ok(oa::ContentPart::ImageUrl(oa::ImageUrlPart {
                image_url: oa::ImageUrl {
                    url: url.clone(),
                    detail: img.detail.clone().filter(|d| d != "original"),
                },
                extra: Map::new(),
            })),
            None => Err(TranslateError::invalid(
                "input_image needs an image_url (uploaded file ids are not supported)",
                param,
            )),
        },
        rs::ContentPart::InputFile(f) => {
            if f.file_data.is_none() && f.file_id.is_none() {
                return Err(TranslateError::invalid(
                    "input_file needs file_data or file_id (file_url is not supported)",
                    param,
                ));
            }
            Ok(oa::ContentPart::File(oa::FilePart {
                file: oa::FileRef {
                    file_data: f.file_data.clone(),
                    file_id: f.file_id.clone(),
                    filename: f.filename.clone(),
                },
                extra: Map::new(),
            }))
        }
        rs::ContentPart::Unknown(v) => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
            Err(TranslateError::invalid(
                format!("content part type `{kind}` is not supported"),
                param,
            ))
        }
    }
}

/// The hub function for a custom tool: one string parameter, the grammar described.
fn custom_tool_function(c: &rs::CustomTool) -> oa::FunctionDefinition {
    let mut input_doc = "The raw input for this freeform tool (plain text, not JSON).".to_owned();
    if let Some(format) = &c.format {
        let syntax = format.get("syntax").and_then(Value::as_str);
        let definition = format.get("definition").and_then(Value::as_str);
        if let (Some(syntax), Some(definition)) = (syntax, definition) {
            input_doc.push_str(&format!(
                " It must match this {syntax} grammar:\n{definition}"
            ));
        }
    }
    oa::FunctionDefinition {
        name: c.name.clone(),
        description: c.description.clone(),
        parameters: Some(json!({
            "type": "object",
            "properties": {"input": {"type": "string", "description": input_doc}},
            "required": ["input"]
        })),
        strict: None,
    }
}

fn function_definition(name: String, f: &rs::FunctionTool) -> oa::FunctionDefinition {
    oa::FunctionDefinition {
        name,
        description: f.description.clone(),
        parameters: f.parameters.clone(),
        strict: f.strict,
    }
}

type HubTools = (Option<Vec<oa::Tool>>, Option<oa::ToolChoice>);

fn hub_tools(req: &rs::ResponsesRequest) -> Result<HubTools, TranslateError> {
    let mut tools = Vec::new();
    for tool in req.tools.iter().flatten() {
        let function = match tool {
            rs::Tool::Function(f) => function_definition(f.name.clone(), f),
            rs::Tool::Custom(c) => custom_tool_function(c),
            rs::Tool::Unknown(_) => {
                if let Some((ns, fns)) = tool.namespace_functions() {
                    for f in fns {
                        tools.push(function_tool(function_definition(
                            namespaced_name(ns, &f.name),
                            &f,
                        )));
                    }
                }
                // Hosted tools: dropped (see the module docs).
                continue;
            }
        };
        tools.push(function_tool(function));
    }

    let choice = match &req.tool_choice {
        None => None,
        Some(rs::ToolChoice::Mode(mode)) => Some(oa::ToolChoice::Mode(match mode {
            rs::ToolChoiceMode::None => oa::ToolChoiceMode::None,
            rs::ToolChoiceMode::Auto => oa::ToolChoiceMode::Auto,
            rs::ToolChoiceMode::Required => oa::ToolChoiceMode::Required,
        })),
        Some(rs::ToolChoice::Named(n)) if matches!(n.kind.as_str(), "function" | "custom") => {
            if !tools.iter().any(|t| t.function.name == n.name) {
                return Err(TranslateError::invalid(
                    format!(
                        "tool_choice names `{}`, which is not a declared tool",
                        n.name
                    ),
                    "tool_choice",
                ));
            }
            Some(oa::ToolChoice::Named(oa::NamedToolChoice::function(
                &n.name,
            )))
        }
        Some(rs::ToolChoice::Named(n)) => return Err(hosted_choice(&n.kind)),
        Some(rs::ToolChoice::Other(v)) => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("?");
            if kind != "allowed_tools" {
                return Err(hosted_choice(kind));
            }
            let allowed: Vec<String> = v
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let name = t.get("name").and_then(Value::as_str)?;
                    Some(match t.get("namespace").and_then(Value::as_str) {
                        Some(ns) => namespaced_name(ns, name),
                        None => name.to_owned(),
                    })
                })
                .collect();
            tools.retain(|t| allowed.contains(&t.function.name));
            let mode = match v.get("mode").and_then(Value::as_str) {
                Some("required") => oa::ToolChoiceMode::Required,
                _ => oa::ToolChoiceMode::Auto,
            };
            Some(oa::ToolChoice::Mode(mode))
        }
    };
    Ok(((!tools.is_empty()).then_some(tools), choice))
}

fn hosted_choice(kind: &str) -> TranslateError {
    TranslateError::invalid(
        format!("tool_choice `{kind}` (a hosted tool) is not supported by this model"),
        "tool_choice",
    )
}

fn function_tool(function: oa::FunctionDefinition) -> oa::Tool {
    oa::Tool {
        kind: "function".to_owned(),
        function,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Response: hub -> Responses
// ---------------------------------------------------------------------------------------

/// What a response built for a request needs: its id, time and client-facing model,
/// the request parameters the response object echoes, and the tool map.
#[derive(Debug, Clone)]
pub struct ResponsesEcho {
    template: rs::Response,
    tools: ToolMap,
}

impl ResponsesEcho {
    /// `id` is the response id (e.g. `resp_<request id>`); `stored` says whether the
    /// gateway keeps this response (echoed as `store`).
    pub fn new(
        req: &rs::ResponsesRequest,
        id: impl Into<String>,
        created_at: u64,
        model: impl Into<String>,
        stored: bool,
    ) -> Self {
        let mut t = rs::Response::new(id, created_at, model, rs::ResponseStatus::InProgress);
        t.instructions = req.instructions.clone().map(Value::String);
        t.max_output_tokens = req.max_output_tokens;
        t.parallel_tool_calls = req.parallel_tool_calls.unwrap_or(true);
        t.previous_response_id.clone_from(&req.previous_response_id);
        t.reasoning.clone_from(&req.reasoning);
        t.store = Some(stored);
        t.temperature = req.temperature;
        t.text = Some(req.text.clone().unwrap_or_else(|| rs::TextConfig {
            format: Some(rs::TextFormat::Text),
            verbosity: None,
            extra: Map::new(),
        }));
        t.tool_choice = req
            .tool_choice
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or_else(|| Value::String("auto".to_owned()));
        t.tools = req.tools.clone().unwrap_or_default();
        t.top_p = req.top_p;
        t.truncation = Some(
            req.truncation
                .clone()
                .unwrap_or_else(|| "disabled".to_owned()),
        );
        t.user.clone_from(&req.user);
        t.metadata = req.metadata.clone().unwrap_or_default();
        ResponsesEcho {
            template: t,
            tools: ToolMap::from_request(req),
        }
    }

    /// The response id.
    pub fn id(&self) -> &str {
        &self.template.id
    }

    fn response(&self, status: rs::ResponseStatus) -> rs::Response {
        let mut r = self.template.clone();
        r.status = Some(status);
        r
    }

    /// An item id: `<prefix>_<response id without resp_>_<n>`.
    fn item_id(&self, prefix: &str, n: u32) -> String {
        let base = self
            .template
            .id
            .strip_prefix("resp_")
            .unwrap_or(&self.template.id);
        format!("{prefix}_{base}_{n}")
    }

    /// The output item for a hub tool call, as the client declared the tool.
    fn call_item(&self, n: u32, call: &oa::ToolCall, status: &str) -> rs::Item {
        match self.tools.kind(&call.function.name) {
            ToolKind::Custom => rs::Item::CustomToolCall(rs::CustomToolCallItem {
                id: Some(self.item_id("ctc", n)),
                call_id: call.id.clone(),
                name: call.function.name.clone(),
                input: custom_input(&call.function.arguments),
                namespace: None,
                extra: Map::new(),
            }),
            kind => {
                let (name, namespace) = match kind {
                    ToolKind::Namespaced { namespace, name } => (name, Some(namespace)),
                    _ => (call.function.name.clone(), None),
                };
                rs::Item::FunctionCall(rs::FunctionCallItem {
                    id: Some(self.item_id("fc", n)),
                    call_id: call.id.clone(),
                    name,
                    arguments: call.function.arguments.clone(),
                    namespace,
                    status: Some(status.to_owned()),
                    extra: Map::new(),
                })
            }
        }
    }
}

/// The text a custom tool call carries: the `input` of the hub arguments, or the raw
/// arguments when the model did not produce that object.
fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut m)) => match m.remove("input") {
            Some(Value::String(s)) => s,
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

/// Status and incomplete reason for a hub finish reason.
fn status_for(reason: Option<&oa::FinishReason>) -> (rs::ResponseStatus, Option<&'static str>) {
    match reason {
        Some(oa::FinishReason::Length) => {
            (rs::ResponseStatus::Incomplete, Some("max_output_tokens"))
        }
        Some(oa::FinishReason::ContentFilter) => {
            (rs::ResponseStatus::Incomplete, Some("content_filter"))
        }
        _ => (rs::ResponseStatus::Completed, None),
    }
}

/// Builds a response object from a hub completion (choice 0; the Responses API has one
/// output). Output order: reasoning, message (text and refusal), then tool calls.
pub fn hub_to_responses_response(
    hub: &oa::ChatCompletionResponse,
    echo: &ResponsesEcho,
) -> rs::Response {
    let choice = hub.choices.iter().find(|c| c.index == 0);
    let (status, incomplete) = status_for(choice.and_then(|c| c.finish_reason.as_ref()));
    let mut resp = echo.response(status);
    resp.incomplete_details = incomplete.map(rs::IncompleteDetails::new);
    let item_status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    let mut n = 0u32;
    let mut next = || {
        let i = n;
        n = n.saturating_add(1);
        i
    };
    if let Some(msg) = choice.map(|c| &c.message) {
        if let Some(r) = msg.reasoning_content.as_ref().filter(|r| !r.is_empty()) {
            resp.output.push(rs::Item::Reasoning(rs::ReasoningItem {
                id: Some(echo.item_id("rs", next())),
                summary: vec![rs::SummaryText::new(r.clone())],
                content: None,
                encrypted_content: None,
                status: None,
                extra: Map::new(),
            }));
        }
        let text = msg
            .content
            .as_ref()
            .map(oa::MessageContent::joined_text)
            .unwrap_or_default();
        let mut parts = Vec::new();
        if !text.is_empty() {
            parts.push(rs::ContentPart::output_text(text));
        }
        if let Some(r) = msg.refusal.as_ref().filter(|r| !r.is_empty()) {
            parts.push(rs::ContentPart::refusal(r.clone()));
        }
        if !parts.is_empty() {
            resp.output.push(rs::Item::Message(rs::MessageItem::output(
                echo.item_id("msg", next()),
                item_status,
                parts,
            )));
        }
        for call in msg.tool_calls.iter().flatten() {
            resp.output.push(echo.call_item(next(), call, "completed"));
        }
        if let Some(fc) = &msg.function_call {
            let call = oa::ToolCall::function("call_legacy_0", &fc.name, &fc.arguments);
            resp.output.push(echo.call_item(next(), &call, "completed"));
        }
    }
    resp.usage = hub
        .usage
        .as_ref()
        .map(|u| rs::ResponseUsage::from(&Usage::from(u)));
    resp
}

/// A failed response object for an error that ended a request (for non-stream callers
/// that want the object rather than the error body).
pub fn failed_response(echo: &ResponsesEcho, code: &str, message: &str) -> rs::Response {
    let mut resp = echo.response(rs::ResponseStatus::Failed);
    resp.error = Some(rs::ResponseError::new(code, message));
    resp
}

/// The Responses error `code` for an OpenAI error type.
pub fn error_code(err: &oa::ErrorBody) -> String {
    if let Some(Value::String(code)) = &err.code {
        return code.clone();
    }
    match err.kind.as_str() {
        "rate_limit_error" | "requests" | "tokens" | "insufficient_quota" => {
            "rate_limit_exceeded".to_owned()
        }
        "invalid_request_error" => "invalid_prompt".to_owned(),
        _ => "server_error".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Stream: hub chunks -> Responses events
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

#[derive(Debug, Clone)]
struct OpenMessage {
    output_index: u32,
    id: String,
    /// Finished parts, in order.
    parts: Vec<rs::ContentPart>,
    /// The part being streamed and its text.
    open: Option<(PartKind, String)>,
}

#[derive(Debug, Clone)]
struct OpenReasoning {
    output_index: u32,
    id: String,
    text: String,
}

#[derive(Debug, Clone)]
struct OpenTool {
    output_index: u32,
    item_id: String,
    call: oa::ToolCall,
    kind: ToolKind,
}

/// Translates hub chunks into Responses stream events that the official SDKs accept:
/// `response.created` and `response.in_progress` first, one item at a time for
/// reasoning and text (`output_item.added`, `content_part.added`, deltas, the `.done`
/// events, `output_item.done`), tool calls as their own items (custom tool input is sent
/// whole when the call ends, as it can only be decoded then), and a final
/// `response.completed` (or `response.incomplete` for a length or content-filter stop)
/// carrying the whole output and the usage.
///
/// Feed every hub chunk to [`on_event`](Self::on_event); call [`on_error`](Self::on_error)
/// when the upstream fails mid-stream (emits `response.failed`) or
/// [`finish`](Self::finish) at the end. Only choice 0 is used. Sequence numbers count up
/// from 0.
#[derive(Debug, Clone)]
pub struct HubToResponsesStream {
    echo: ResponsesEcho,
    seq: u64,
    started: bool,
    finished: bool,
    next_output: u32,
    /// Finished items by output index.
    done: BTreeMap<u32, rs::Item>,
    message: Option<OpenMessage>,
    reasoning: Option<OpenReasoning>,
    /// Open tool calls by hub `tool_calls[].index`.
    tools: BTreeMap<u32, OpenTool>,
    finish_reason: Option<oa::FinishReason>,
    usage: Option<oa::CompletionUsage>,
}

impl HubToResponsesStream {
    pub fn new(echo: ResponsesEcho) -> Self {
        HubToResponsesStream {
            echo,
            seq: 0,
            started: false,
            finished: false,
            next_output: 0,
            done: BTreeMap::new(),
            message: None,
            reasoning: None,
            tools: BTreeMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Usage reported by the hub stream so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(Usage::from)
    }

    fn seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = s.saturating_add(1);
        s
    }

    fn next_output(&mut self) -> u32 {
        let i = self.next_output;
        self.next_output = i.saturating_add(1);
        i
    }

    fn ensure_started(&mut self, out: &mut Vec<rs::StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = Box::new(self.echo.response(rs::ResponseStatus::InProgress));
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::Created {
            response: response.clone(),
            sequence_number,
        });
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::InProgress {
            response,
            sequence_number,
        });
    }

    /// Translates one hub chunk.
    pub fn on_event(&mut self, chunk: oa::ChatCompletionChunk) -> Vec<rs::StreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.ensure_started(&mut out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return out;
        };
        let delta = choice.delta;
        if let Some(r) = delta.reasoning_content.filter(|r| !r.is_empty()) {
            self.reasoning_delta(r, &mut out);
        }
        if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
            self.text_delta(PartKind::Text, t, &mut out);
        }
        if let Some(t) = delta.refusal.filter(|t| !t.is_empty()) {
            self.text_delta(PartKind::Refusal, t, &mut out);
        }
        for call in delta.tool_calls.into_iter().flatten() {
            self.tool_delta(call, &mut out);
        }
        if let Some(f) = delta.function_call {
            self.tool_delta(
                oa::ToolCallDelta {
                    index: 0,
                    id: Some("call_legacy_0".to_owned()),
                    kind: Some("function".to_owned()),
                    function: Some(f),
                },
                &mut out,
            );
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        out
    }

    fn reasoning_delta(&mut self, text: String, out: &mut Vec<rs::StreamEvent>) {
        self.close_message(out);
        if self.reasoning.is_none() {
            let output_index = self.next_output();
            let id = self.echo.item_id("rs", output_index);
            let item = rs::Item::Reasoning(rs::ReasoningItem {
                id: Some(id.clone()),
                summary: Vec::new(),
                content: None,
                encrypted_content: None,
                status: None,
                extra: Map::new(),
            });
            let sequence_number = self.seq();
            out.push(rs::StreamEvent::OutputItemAdded {
                output_index,
                item,
                sequence_number,
            });
            let sequence_number = self.seq();
            out.push(rs::StreamEvent::ReasoningSummaryPartAdded {
                item_id: id.clone(),
                output_index,
                summary_index: 0,
                part: rs::SummaryText::new(""),
                sequence_number,
            });
            self.reasoning = Some(OpenReasoning {
                output_index,
                id,
                text: String::new(),
            });
        }
        let sequence_number = self.seq();
        if let Some(r) = &mut self.reasoning {
            r.text.push_str(&text);
            out.push(rs::StreamEvent::ReasoningSummaryTextDelta {
                item_id: r.id.clone(),
                output_index: r.output_index,
                summary_index: 0,
                delta: text,
                sequence_number,
            });
        }
    }

    fn close_reasoning(&mut self, out: &mut Vec<rs::StreamEvent>) {
        let Some(r) = self.reasoning.take() else {
            return;
        };
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::ReasoningSummaryTextDone {
            item_id: r.id.clone(),
            output_index: r.output_index,
            summary_index: 0,
            text: r.text.clone(),
            sequence_number,
        });
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::ReasoningSummaryPartDone {
            item_id: r.id.clone(),
            output_index: r.output_index,
            summary_index: 0,
            part: rs::SummaryText::new(r.text.clone()),
            sequence_number,
        });
        let item = rs::Item::Reasoning(rs::ReasoningItem {
            id: Some(r.id),
            summary: vec![rs::SummaryText::new(r.text)],
            content: None,
            encrypted_content: None,
            status: None,
            extra: Map::new(),
        });
        self.done.insert(r.output_index, item.clone());
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::OutputItemDone {
            output_index: r.output_index,
            item,
            sequence_number,
        });
    }

    fn text_delta(&mut self, kind: PartKind, text: String, out: &mut Vec<rs::StreamEvent>) {
        self.close_reasoning(out);
        if self.message.is_none() {
            let output_index = self.next_output();
            let id = self.echo.item_id("msg", output_index);
            let item = rs::Item::Message(rs::MessageItem::output(
                id.clone(),
                "in_progress",
                Vec::new(),
            ));
            let sequence_number = self.seq();
            out.push(rs::StreamEvent::OutputItemAdded {
                output_index,
                item,
                sequence_number,
            });
            self.message = Some(OpenMessage {
                output_index,
                id,
                parts: Vec::new(),
                open: None,
            });
        }
        let switch = self
            .message
            .as_ref()
            .is_some_and(|m| m.open.as_ref().is_some_and(|(k, _)| *k != kind));
        if switch {
            self.close_part(out);
        }
        let opening = self.message.as_ref().is_some_and(|m| m.open.is_none());
        if opening {
            let sequence_number = self.seq();
            if let Some(m) = &mut self.message {
                let part = match kind {
                    PartKind::Text => rs::ContentPart::output_text(""),
                    PartKind::Refusal => rs::ContentPart::refusal(""),
                };
                out.push(rs::StreamEvent::ContentPartAdded {
                    item_id: m.id.clone(),
                    output_index: m.output_index,
                    content_index: part_index(m.parts.len()),
                    part,
                    sequence_number,
                });
                m.open = Some((kind, String::new()));
            }
        }
        let sequence_number = self.seq();
        if let Some(m) = &mut self.message {
            let content_index = part_index(m.parts.len());
            if let Some((_, acc)) = &mut m.open {
                acc.push_str(&text);
            }
            out.push(match kind {
                PartKind::Text => rs::StreamEvent::OutputTextDelta {
                    item_id: m.id.clone(),
                    output_index: m.output_index,
                    content_index,
                    delta: text,
                    logprobs: Vec::new(),
                    sequence_number,
                },
                PartKind::Refusal => rs::StreamEvent::RefusalDelta {
                    item_id: m.id.clone(),
                    output_index: m.output_index,
                    content_index,
                    delta: text,
                    sequence_number,
                },
            });
        }
    }

    fn close_part(&mut self, out: &mut Vec<rs::StreamEvent>) {
        let Some((kind, text)) = self.message.as_mut().and_then(|m| m.open.take()) else {
            return;
        };
        let s1 = self.seq();
        let s2 = self.seq();
        let Some(m) = &mut self.message else { return };
        let content_index = part_index(m.parts.len());
        let part = match kind {
            PartKind::Text => {
                out.push(rs::StreamEvent::OutputTextDone {
                    item_id: m.id.clone(),
                    output_index: m.output_index,
                    content_index,
                    text: text.clone(),
                    logprobs: Vec::new(),
                    sequence_number: s1,
                });
                rs::ContentPart::output_text(text)
            }
            PartKind::Refusal => {
                out.push(rs::StreamEvent::RefusalDone {
                    item_id: m.id.clone(),
                    output_index: m.output_index,
                    content_index,
                    refusal: text.clone(),
                    sequence_number: s1,
                });
                rs::ContentPart::refusal(text)
            }
        };
        out.push(rs::StreamEvent::ContentPartDone {
            item_id: m.id.clone(),
            output_index: m.output_index,
            content_index,
            part: part.clone(),
            sequence_number: s2,
        });
        m.parts.push(part);
    }

    fn close_message(&mut self, out: &mut Vec<rs::StreamEvent>) {
        self.close_part(out);
        let Some(m) = self.message.take() else {
            return;
        };
        let status = if status_for(self.finish_reason.as_ref()).1.is_some() {
            "incomplete"
        } else {
            "completed"
        };
        let item = rs::Item::Message(rs::MessageItem::output(m.id, status, m.parts));
        self.done.insert(m.output_index, item.clone());
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::OutputItemDone {
            output_index: m.output_index,
            item,
            sequence_number,
        });
    }

    fn tool_delta(&mut self, call: oa::ToolCallDelta, out: &mut Vec<rs::StreamEvent>) {
        let function = call.function.unwrap_or_default();
        if !self.tools.contains_key(&call.index) {
            self.close_reasoning(out);
            self.close_message(out);
            let output_index = self.next_output();
            let name = function.name.clone().unwrap_or_default();
            let call_id = call
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{}_{}", self.echo.id(), call.index));
            let tool = oa::ToolCall::function(call_id, name, "");
            let kind = self.echo.tools.kind(&tool.function.name);
            let item = self.echo.call_item(output_index, &tool, "in_progress");
            let item_id = item.id().unwrap_or_default().to_owned();
            let sequence_number = self.seq();
            out.push(rs::StreamEvent::OutputItemAdded {
                output_index,
                item,
                sequence_number,
            });
            self.tools.insert(
                call.index,
                OpenTool {
                    output_index,
                    item_id,
                    call: tool,
                    kind,
                },
            );
        }
        let Some(args) = function.arguments.filter(|a| !a.is_empty()) else {
            return;
        };
        let sequence_number = self.seq();
        if let Some(t) = self.tools.get_mut(&call.index) {
            t.call.function.arguments.push_str(&args);
            // Custom tool input is JSON-wrapped in the hub; it is sent when complete.
            if t.kind != ToolKind::Custom {
                out.push(rs::StreamEvent::FunctionCallArgumentsDelta {
                    item_id: t.item_id.clone(),
                    output_index: t.output_index,
                    delta: args,
                    sequence_number,
                });
            }
        }
    }

    fn close_tools(&mut self, out: &mut Vec<rs::StreamEvent>) {
        let tools = std::mem::take(&mut self.tools);
        let mut tools: Vec<OpenTool> = tools.into_values().collect();
        tools.sort_by_key(|t| t.output_index);
        for t in tools {
            let item = self.echo.call_item(t.output_index, &t.call, "completed");
            match &item {
                rs::Item::CustomToolCall(c) => {
                    if !c.input.is_empty() {
                        let sequence_number = self.seq();
                        out.push(rs::StreamEvent::CustomToolCallInputDelta {
                            item_id: t.item_id.clone(),
                            output_index: t.output_index,
                            delta: c.input.clone(),
                            sequence_number,
                        });
                    }
                    let sequence_number = self.seq();
                    out.push(rs::StreamEvent::CustomToolCallInputDone {
                        item_id: t.item_id.clone(),
                        output_index: t.output_index,
                        input: c.input.clone(),
                        sequence_number,
                    });
                }
                _ => {
                    let sequence_number = self.seq();
                    out.push(rs::StreamEvent::FunctionCallArgumentsDone {
                        item_id: t.item_id.clone(),
                        output_index: t.output_index,
                        arguments: t.call.function.arguments.clone(),
                        sequence_number,
                    });
                }
            }
            self.done.insert(t.output_index, item.clone());
            let sequence_number = self.seq();
            out.push(rs::StreamEvent::OutputItemDone {
                output_index: t.output_index,
                item,
                sequence_number,
            });
        }
    }

    fn snapshot(&self, status: rs::ResponseStatus) -> rs::Response {
        let mut r = self.echo.response(status);
        r.output = self.done.values().cloned().collect();
        r.usage = self
            .usage
            .as_ref()
            .map(|u| rs::ResponseUsage::from(&Usage::from(u)));
        r
    }

    /// Ends the response: closes open items and sends `response.completed` (or
    /// `response.incomplete`). Idempotent.
    pub fn finish(&mut self) -> Vec<rs::StreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.ensure_started(&mut out);
        self.close_reasoning(&mut out);
        self.close_message(&mut out);
        self.close_tools(&mut out);
        self.finished = true;
        let (status, incomplete) = status_for(self.finish_reason.as_ref());
        let mut response = self.snapshot(status);
        response.incomplete_details = incomplete.map(rs::IncompleteDetails::new);
        let response = Box::new(response);
        let sequence_number = self.seq();
        out.push(if incomplete.is_some() {
            rs::StreamEvent::Incomplete {
                response,
                sequence_number,
            }
        } else {
            rs::StreamEvent::Completed {
                response,
                sequence_number,
            }
        });
        out
    }

    /// Ends the response as failed (`response.failed` with the error), for an upstream
    /// error mid-stream. Output streamed so far is included as it stood.
    pub fn on_error(&mut self, err: &oa::ErrorBody) -> Vec<rs::StreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.ensure_started(&mut out);
        self.finished = true;
        let mut response = self.snapshot(rs::ResponseStatus::Failed);
        response.error = Some(rs::ResponseError::new(error_code(err), err.message.clone()));
        let sequence_number = self.seq();
        out.push(rs::StreamEvent::Failed {
            response: Box::new(response),
            sequence_number,
        });
        out
    }
}

fn part_index(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
