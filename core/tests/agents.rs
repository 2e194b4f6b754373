//! What the coding agents really send, recorded from the CLIs themselves (secrets and
//! random ids removed; `tests/fixtures/agents/`), must translate to every upstream:
//!
//! - Codex CLI 0.169.0 (`codex exec`, `POST /v1/responses`): `store: false`, `include`,
//!   `reasoning`, `client_metadata`, `prompt_cache_key`, a `namespace` tool group, the
//!   freeform `apply_patch` custom tool (with a Lark grammar), and the hosted
//!   `web_search` and `tool_search` tools.
//! - Claude Code 2.1.328 (`claude -p`, `POST /v1/messages?beta=true`): adaptive thinking,
//!   `context_management`, `output_config`, deferred tools, `cache_control`.
//! - Gemini CLI 0.61.0 (`gemini -p`): the routing `generateContent` call with a JSON
//!   response schema in upper-case types, and the main `streamGenerateContent?alt=sse`
//!   call with `parametersJsonSchema` tools and `thinkingLevel`.
//! - The second request of one tool turn of each agent, recorded against the mock
//!   upstream (`tools=once`): the call, its result and the ids that pair them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use serde_json::Value;
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::protocol::responses as rs;
use tollbooth_core::translate::anthropic as tan;
use tollbooth_core::translate::gemini as tg;
use tollbooth_core::translate::gemini_ingress as gi;
use tollbooth_core::translate::responses_ingress as ri;
use tollbooth_core::translate::responses_upstream as ru;

fn recorded(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The hub request goes to every upstream protocol without error.
fn assert_every_upstream_accepts(hub: &oa::ChatCompletionRequest) {
    tan::openai_to_anthropic_request(hub, 4096).unwrap();
    assert_every_upstream_but_anthropic_accepts(hub);
}

fn assert_every_upstream_but_anthropic_accepts(hub: &oa::ChatCompletionRequest) {
    tg::to_gemini_request(hub).unwrap();
    ru::hub_to_responses_request(hub, "upstream").unwrap();
    serde_json::to_value(hub).unwrap();
}

fn tool_names(hub: &oa::ChatCompletionRequest) -> Vec<String> {
    hub.tools
        .iter()
        .flatten()
        .map(|t| t.function.name.clone())
        .collect()
}

#[test]
fn test_codex_exec_requests_translate_to_every_upstream() {
    for name in ["codex_exec_gpt-5.5.json", "codex_exec_fallback_model.json"] {
        let rec = recorded(name);
        assert_eq!(rec["path"], "/v1/responses");
        let req: rs::ResponsesRequest = serde_json::from_value(rec["body"].clone()).unwrap();
        assert_eq!(req.store, Some(false));
        assert!(req.is_stream());
        let hub = ri::responses_to_hub_request(&req).unwrap();
        assert!(hub.wants_stream_usage());
        assert!(!hub.messages.is_empty());
        let names = tool_names(&hub);
        // Hosted tools are dropped, client tools all arrive.
        assert!(
            names.contains(&"exec_command".to_owned()),
            "{name}: {names:?}"
        );
        assert!(!names
            .iter()
            .any(|n| n == "web_search" || n == "tool_search"));
        assert_every_upstream_accepts(&hub);
    }
}

#[test]
fn test_codex_custom_tool_round_trips_as_custom_tool_call() {
    let rec = recorded("codex_exec_gpt-5.5.json");
    let req: rs::ResponsesRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    let hub = ri::responses_to_hub_request(&req).unwrap();
    let patch_tool = hub
        .tools
        .iter()
        .flatten()
        .find(|t| t.function.name == "apply_patch")
        .unwrap();
    let params = patch_tool.function.parameters.as_ref().unwrap();
    assert_eq!(params["required"][0], "input");
    let doc = params["properties"]["input"]["description"]
        .as_str()
        .unwrap();
    assert!(
        doc.contains("lark grammar") && doc.contains("begin_patch"),
        "{doc}"
    );

    // The model calls it through the hub; the client gets a custom_tool_call back.
    let echo = ri::ResponsesEcho::new(&req, "resp_1", 1, "m", false);
    let patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n";
    let mut hub_resp: oa::ChatCompletionResponse = serde_json::from_value(serde_json::json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": null, "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "apply_patch", "arguments": ""}}]}}]
    }))
    .unwrap();
    hub_resp.choices[0].message.tool_calls.as_mut().unwrap()[0]
        .function
        .arguments = serde_json::json!({ "input": patch }).to_string();
    let out = ri::hub_to_responses_response(&hub_resp, &echo);
    match &out.output[0] {
        rs::Item::CustomToolCall(c) => {
            assert_eq!(c.call_id, "call_9");
            assert_eq!(c.input, patch);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn test_claude_code_request_translates_to_every_upstream() {
    let rec = recorded("claude_code_p.json");
    assert_eq!(rec["path"], "/v1/messages");
    let req: an::MessagesRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    // Claude Code puts `role: system` messages inside `messages`.
    assert!(req.messages.iter().any(|m| m.role == an::Role::System));
    let hub = tan::anthropic_to_openai_request(&req).unwrap();
    assert!(hub.is_stream());
    assert!(hub
        .messages
        .iter()
        .skip(1)
        .any(|m| m.role == oa::Role::System));
    assert!(tool_names(&hub).contains(&"Bash".to_owned()));
    assert_every_upstream_accepts(&hub);
}

#[test]
fn test_gemini_cli_requests_translate_to_every_upstream() {
    let rec = recorded("gemini_cli_router.json");
    assert!(rec["path"].as_str().unwrap().ends_with(":generateContent"));
    let req: g::GenerateContentRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    let hub = gi::gemini_to_hub_request(&req, "gemini-3.5-flash-lite", false).unwrap();
    let format = hub.response_format.as_ref().unwrap();
    assert_eq!(format.kind, "json_schema");
    // Upper-case OpenAPI types become JSON Schema types.
    let schema = &format.json_schema.as_ref().unwrap()["schema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["complexity_score"]["type"], "integer");
    assert_eq!(hub.reasoning_effort.as_deref(), Some("high"));
    // The Anthropic upstream translator refuses a JSON schema it cannot enforce: Gemini
    // CLI's routing call needs an OpenAI, Gemini or Responses model (or a model that
    // is not Anthropic-backed for routing).
    let refused = tan::openai_to_anthropic_request(&hub, 4096).unwrap_err();
    assert!(refused.to_string().contains("json_schema"));
    assert_every_upstream_but_anthropic_accepts(&hub);

    let rec = recorded("gemini_cli_stream.json");
    assert!(rec["path"]
        .as_str()
        .unwrap()
        .ends_with(":streamGenerateContent"));
    assert_eq!(rec["query"], "alt=sse");
    let req: g::GenerateContentRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    let hub = gi::gemini_to_hub_request(&req, "gemini-3.1-pro-preview", true).unwrap();
    assert!(hub.wants_stream_usage());
    let tools = hub.tools.as_ref().unwrap();
    assert!(!tools.is_empty());
    assert!(tools.iter().all(|t| t.function.parameters.is_some()));
    assert_every_upstream_accepts(&hub);
}

/// Each agent's second request of a tool turn (recorded against the mock upstream with
/// `tools=once`): the call and its result stay paired through the hub.
#[test]
fn test_agent_tool_turns_translate_to_every_upstream() {
    let rec = recorded("codex_exec_tool_turn.json");
    let req: rs::ResponsesRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    let hub = ri::responses_to_hub_request(&req).unwrap();
    assert_tool_pairing(&hub);
    assert_every_upstream_accepts(&hub);

    let rec = recorded("claude_code_tool_turn.json");
    let req: an::MessagesRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    let hub = tan::anthropic_to_openai_request(&req).unwrap();
    assert_tool_pairing(&hub);
    assert_every_upstream_accepts(&hub);

    let rec = recorded("gemini_cli_tool_turn.json");
    let req: g::GenerateContentRequest = serde_json::from_value(rec["body"].clone()).unwrap();
    let hub = gi::gemini_to_hub_request(&req, "gemini-mock", true).unwrap();
    assert_tool_pairing(&hub);
    assert_every_upstream_accepts(&hub);
}

/// The last assistant turn calls a tool and the following tool message answers that id.
fn assert_tool_pairing(hub: &oa::ChatCompletionRequest) {
    let (pos, call) = hub
        .messages
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, m)| {
            m.tool_calls
                .as_ref()
                .and_then(|c| c.first())
                .map(|c| (i, c))
        })
        .expect("an assistant tool call");
    let answer = hub
        .messages
        .get(pos + 1)
        .expect("a tool result after the call");
    assert_eq!(answer.role, oa::Role::Tool);
    assert_eq!(answer.tool_call_id.as_deref(), Some(call.id.as_str()));
}
