//! The request body, parsed once: the JSON text becomes one `serde_json::Value` (never
//! parsed again), the typed request is read from it with errors naming the offending
//! field, and the forwarded-field allow-list (`tollbooth_core::provider`) is applied
//! before anything is estimated or sent. The prompt estimate walks the same value.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tollbooth_core::billing::{estimate_body, BodyEstimate};
use tollbooth_core::error::GatewayError;
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::protocol::responses as rs;
use tollbooth_core::provider::{screen_anthropic_body, screen_chat_request, RESPONSES_FIELDS};
use tollbooth_core::translate::anthropic as tan;
use tollbooth_core::translate::hub::{Ingress, IngressContext};
use tollbooth_core::translate::responses_ingress as ri;
use tollbooth_core::translate::{gemini_ingress as gi, TranslateError};

/// A chat request, whatever the ingress, in the hub format.
#[derive(Debug, Clone)]
pub struct ChatJob {
    pub ingress: Ingress,
    pub hub: oa::ChatCompletionRequest,
    /// Anthropic ingress: the screened body, forwarded as is to Anthropic upstreams.
    pub anthropic_body: Option<Map<String, Value>>,
    /// Responses ingress: the screened body, forwarded as is to Responses upstreams
    /// (hosted tools dropped, `store` false, the output cap set when it is sent).
    pub responses_body: Option<Value>,
    /// What the caller's answers need from its request (Responses echo, Gemini framing).
    pub context: IngressContext,
    pub client_model: String,
    pub client_stream: bool,
    /// The OpenAI caller asked for the usage chunk.
    pub include_usage: bool,
    pub prompt: BodyEstimate,
    /// Choices asked for (`n`, at least 1): the output reservation is multiplied by it.
    pub choices: u64,
}

/// An embeddings or rerank request.
#[derive(Debug, Clone)]
pub struct JsonJob {
    pub body: Map<String, Value>,
    pub model: String,
    pub prompt: BodyEstimate,
}

/// The body as a JSON value that is an object.
fn parse_value(body: &[u8]) -> Result<Value, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(GatewayError::invalid_request(
            "The request body must be a JSON object.",
        ));
    }
    Ok(value)
}

fn object(value: &Value) -> Result<&Map<String, Value>, GatewayError> {
    value
        .as_object()
        .ok_or_else(|| GatewayError::invalid_request("The request body must be a JSON object."))
}

/// Reads a typed request from the parsed value: 400 naming the field that is missing or
/// has the wrong type.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing top-level field shows up at path "." with the name in the message.
        let param = if path == "." || path.is_empty() {
            inner
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_default()
        } else {
            path
        };
        if param.is_empty() {
            GatewayError::invalid_request(format!("Invalid request body: {inner}"))
        } else {
            GatewayError::invalid_param(format!("Invalid `{param}`: {inner}"), param)
        }
    })
}

fn require_model(obj: &Map<String, Value>) -> Result<String, GatewayError> {
    match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => Ok(m.clone()),
        _ => Err(GatewayError::invalid_param(
            "You must provide a model parameter.",
            "model",
        )),
    }
}

fn require_messages(obj: &Map<String, Value>) -> Result<(), GatewayError> {
    match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => Ok(()),
        Some(Value::Array(_)) => Err(GatewayError::invalid_param(
            "`messages` must not be empty.",
            "messages",
        )),
        _ => Err(GatewayError::invalid_param(
            "`messages` is required and must be an array.",
            "messages",
        )),
    }
}

/// What a request carries outside its body: the Gemini model, method and framing from
/// the path and query, the Responses id and time.
#[derive(Debug, Clone, Default)]
pub struct IngressFacts {
    /// Gemini: the `{model}` of `models/{model}:...`.
    pub path_model: Option<String>,
    /// Gemini: `:streamGenerateContent`.
    pub path_stream: bool,
    /// Gemini: `alt=sse`.
    pub alt_sse: bool,
    /// Responses: the response id (`resp_<request id>`).
    pub response_id: String,
    /// Responses: `created_at`.
    pub created: u64,
}

/// A translator's refusal as a 400 naming the field.
fn translate_refusal(e: &TranslateError) -> GatewayError {
    let e = e.to_openai().error;
    match e.param {
        Some(p) => GatewayError::invalid_param(e.message, p),
        None => GatewayError::invalid_request(e.message),
    }
}

/// Responses tool types a Responses upstream gets as they are; hosted tools (billed per
/// use: web or file search, code interpreter, image generation, ...) are dropped, as the
/// translated path drops them.
const RESPONSES_FORWARDED_TOOLS: &[&str] = &["function", "custom", "namespace"];

/// The Responses body as a Responses upstream gets it (see [`ChatJob::responses_body`]).
fn screen_responses_body(mut value: Value) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.retain(|k, _| RESPONSES_FIELDS.contains(&k.as_str()));
        obj.insert("store".into(), Value::Bool(false));
        if let Some(Value::Array(tools)) = obj.get_mut("tools") {
            tools.retain(|t| {
                t.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|k| RESPONSES_FORWARDED_TOOLS.contains(&k))
            });
        }
    }
    value
}

/// Parses a chat request of `ingress` (OpenAI chat or Anthropic Messages; the other
/// ingresses need [`IngressFacts`]: [`parse_chat_with`]).
pub fn parse_chat(ingress: Ingress, body: &[u8]) -> Result<ChatJob, GatewayError> {
    parse_chat_with(ingress, body, &IngressFacts::default())
}

/// Parses a chat request of `ingress` with what the path and the request carry.
pub fn parse_chat_with(
    ingress: Ingress,
    body: &[u8],
    facts: &IngressFacts,
) -> Result<ChatJob, GatewayError> {
    let value = parse_value(body)?;
    let obj = object(&value)?;
    let prompt = estimate_body(&value, u64::try_from(body.len()).unwrap_or(u64::MAX));
    match ingress {
        Ingress::Gemini => {
            let client_model = facts
                .path_model
                .clone()
                .filter(|m| !m.trim().is_empty())
                .ok_or_else(|| {
                    GatewayError::invalid_param("The path must name a model.", "model")
                })?;
            let req: g::GenerateContentRequest = typed(&value)?;
            let mut hub = gi::gemini_to_hub_request(&req, &client_model, facts.path_stream)
                .map_err(|e| translate_refusal(&e))?;
            screen_chat_request(&mut hub)?;
            return Ok(ChatJob {
                ingress,
                client_model,
                client_stream: facts.path_stream,
                include_usage: false,
                choices: u64::from(hub.n.unwrap_or(1).max(1)),
                hub,
                anthropic_body: None,
                responses_body: None,
                context: IngressContext::Gemini {
                    alt_sse: facts.alt_sse,
                },
                prompt,
            });
        }
        Ingress::Responses => {
            let client_model = require_model(obj)?;
            if obj.get("store").and_then(Value::as_bool) == Some(true) {
                return Err(GatewayError::invalid_param(
                    "Stored responses are not supported: send `store: false` (or leave it out) and the whole conversation in `input`.",
                    "store",
                ));
            }
            let req: rs::ResponsesRequest = typed(&value)?;
            let mut hub = ri::responses_to_hub_request(&req).map_err(|e| translate_refusal(&e))?;
            screen_chat_request(&mut hub)?;
            let echo = ri::ResponsesEcho::new(
                &req,
                facts.response_id.clone(),
                facts.created,
                client_model.clone(),
                false,
            );
            return Ok(ChatJob {
                ingress,
                client_model,
                client_stream: req.is_stream(),
                include_usage: false,
                choices: 1,
                hub,
                anthropic_body: None,
                responses_body: Some(screen_responses_body(value)),
                context: IngressContext::Responses(Box::new(echo)),
                prompt,
            });
        }
        Ingress::OpenAiChat | Ingress::AnthropicMessages => {}
    }
    let client_model = require_model(obj)?;
    require_messages(obj)?;
    match ingress {
        Ingress::OpenAiChat => {
            let mut hub: oa::ChatCompletionRequest = typed(&value)?;
            screen_chat_request(&mut hub)?;
            Ok(ChatJob {
                ingress,
                client_model,
                client_stream: hub.is_stream(),
                include_usage: hub.wants_stream_usage(),
                choices: u64::from(hub.n.unwrap_or(1).max(1)),
                hub,
                anthropic_body: None,
                responses_body: None,
                context: IngressContext::OpenAiChat,
                prompt,
            })
        }
        Ingress::AnthropicMessages => {
            if obj
                .get("max_tokens")
                .and_then(Value::as_u64)
                .is_none_or(|n| n == 0)
            {
                return Err(GatewayError::invalid_param(
                    "`max_tokens` is required and must be a positive integer.",
                    "max_tokens",
                ));
            }
            let Value::Object(mut screened) = value else {
                return Err(GatewayError::invalid_request(
                    "The request body must be a JSON object.",
                ));
            };
            screen_anthropic_body(&mut screened)?;
            let value = Value::Object(screened);
            let req: an::MessagesRequest = typed(&value)?;
            let hub = tan::anthropic_to_openai_request(&req).map_err(|e| translate_refusal(&e))?;
            let Value::Object(screened) = value else {
                return Err(GatewayError::internal("unreachable body shape"));
            };
            Ok(ChatJob {
                ingress,
                client_model,
                client_stream: req.is_stream(),
                include_usage: false,
                choices: 1,
                hub,
                anthropic_body: Some(screened),
                responses_body: None,
                context: IngressContext::AnthropicMessages,
                prompt,
            })
        }
        Ingress::Responses | Ingress::Gemini => Err(GatewayError::internal("unreachable ingress")),
    }
}

/// Which JSON endpoint a [`JsonJob`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Embeddings,
    Rerank,
}

/// Parses an embeddings or rerank request.
pub fn parse_json(kind: JsonKind, body: &[u8]) -> Result<JsonJob, GatewayError> {
    let value = parse_value(body)?;
    let obj = object(&value)?;
    let model = require_model(obj)?;
    match kind {
        JsonKind::Embeddings if obj.get("input").is_none_or(Value::is_null) => {
            return Err(GatewayError::invalid_param("`input` is required.", "input"))
        }
        JsonKind::Rerank if !obj.get("query").is_some_and(Value::is_string) => {
            return Err(GatewayError::invalid_param("`query` is required.", "query"))
        }
        JsonKind::Rerank if !obj.get("documents").is_some_and(Value::is_array) => {
            return Err(GatewayError::invalid_param(
                "`documents` is required.",
                "documents",
            ))
        }
        _ => {}
    }
    let prompt = estimate_body(&value, u64::try_from(body.len()).unwrap_or(u64::MAX));
    let Value::Object(obj) = value else {
        return Err(GatewayError::invalid_request(
            "The request body must be a JSON object.",
        ));
    };
    Ok(JsonJob {
        body: obj,
        model,
        prompt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(body: &str) -> Option<String> {
        match parse_chat(Ingress::OpenAiChat, body.as_bytes()) {
            Err(e) => e.param().map(str::to_owned),
            Ok(_) => None,
        }
    }

    #[test]
    fn test_parse_errors_name_the_field() {
        assert_eq!(
            param(r#"{"messages": [{"role":"user","content":"x"}]}"#).as_deref(),
            Some("model")
        );
        assert_eq!(param(r#"{"model": "m"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param(r#"{"model": "m", "messages": []}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(
                r#"{"model": "m", "messages": [{"role":"user","content":"x"}], "max_tokens": "x"}"#
            )
            .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(r#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert!(parse_chat(Ingress::OpenAiChat, b"{nope").is_err());
        assert!(parse_chat(Ingress::OpenAiChat, b"[1]").is_err());
    }

    #[test]
    fn test_anthropic_requires_max_tokens_and_refuses_server_tools() {
        let e = parse_chat(
            Ingress::AnthropicMessages,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("max_tokens"));
        let e = parse_chat(
            Ingress::AnthropicMessages,
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
                "tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.http_status(), 400);
        let job = parse_chat(
            Ingress::AnthropicMessages,
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],
                "service_tier":"auto","stream":true}"#,
        )
        .unwrap();
        assert!(job.client_stream);
        assert!(!job.anthropic_body.unwrap().contains_key("service_tier"));
    }

    #[test]
    fn test_openai_choices_and_estimate() {
        let job = parse_chat(
            Ingress::OpenAiChat,
            br#"{"model":"m","n":4,"messages":[{"role":"user","content":"hello world"}],
                "service_tier":"priority"}"#,
        )
        .unwrap();
        assert_eq!(job.choices, 4);
        assert!(job.prompt.tokens > 0);
        assert!(job.hub.extra.get("service_tier").is_none());
        assert!(parse_chat(
            Ingress::OpenAiChat,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"web_search_options":{}}"#
        )
        .is_err());
    }

    #[test]
    fn test_responses_and_gemini_bodies() {
        let facts = IngressFacts {
            response_id: "resp_r1".into(),
            created: 7,
            ..IngressFacts::default()
        };
        let job = parse_chat_with(
            Ingress::Responses,
            br#"{"model":"m","input":"hi","stream":true,"service_tier":"priority",
                "tools":[{"type":"web_search"},{"type":"function","name":"f","parameters":{}}]}"#,
            &facts,
        )
        .unwrap();
        assert!(job.client_stream);
        assert!(matches!(job.context, IngressContext::Responses(ref e) if e.id() == "resp_r1"));
        let body = job.responses_body.unwrap();
        assert_eq!(body["store"], false);
        assert!(body.get("service_tier").is_none());
        assert_eq!(body["tools"].as_array().unwrap().len(), 1);
        assert_eq!(job.hub.tools.unwrap().len(), 1);
        for (body, param) in [
            (&br#"{"model":"m","input":"hi","store":true}"#[..], "store"),
            (
                &br#"{"model":"m","input":"hi","previous_response_id":"resp_0"}"#[..],
                "previous_response_id",
            ),
            (&br#"{"input":"hi"}"#[..], "model"),
        ] {
            let e = parse_chat_with(Ingress::Responses, body, &facts).unwrap_err();
            assert_eq!(e.http_status(), 400);
            assert_eq!(e.param(), Some(param));
        }

        let facts = IngressFacts {
            path_model: Some("g".into()),
            path_stream: true,
            alt_sse: false,
            ..IngressFacts::default()
        };
        let job = parse_chat_with(
            Ingress::Gemini,
            br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],
                "systemInstruction":{"parts":[{"text":"sys"}]}}"#,
            &facts,
        )
        .unwrap();
        assert_eq!(job.client_model, "g");
        assert!(job.client_stream);
        assert!(matches!(
            job.context,
            IngressContext::Gemini { alt_sse: false }
        ));
        assert_eq!(job.hub.messages.len(), 2);
        let e = parse_chat_with(Ingress::Gemini, br#"{"contents":"x"}"#, &facts).unwrap_err();
        assert_eq!(e.http_status(), 400);
        let e = parse_chat_with(
            Ingress::Gemini,
            br#"{"contents":[]}"#,
            &IngressFacts::default(),
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("model"));
    }

    #[test]
    fn test_responses_passthrough_keeps_only_allowed_fields() {
        let body = screen_responses_body(serde_json::json!({
            "model": "m", "input": "hi", "include": ["reasoning.encrypted_content"],
            "reasoning": {"effort": "low"}, "prompt": {"id": "pmpt_1"},
            "previous_response_id": "resp_0", "conversation": "conv_1", "background": true,
            "max_tool_calls": 5, "service_tier": "priority", "surprise_field": 1}));
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["include", "input", "model", "reasoning", "store"]);
        assert_eq!(body["store"], false);
    }
}
