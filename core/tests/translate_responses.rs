//! OpenAI Responses translation, both as an ingress (Responses → hub → Responses) and as
//! an upstream (hub → Responses → hub): the mapping rules and the refusals, chunk by
//! chunk for the streams. The every-pair goldens are in `pairs.rs`.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::protocol::responses as rs;
use tollbooth_core::translate::responses_ingress as ri;
use tollbooth_core::translate::responses_upstream as ru;
use tollbooth_core::translate::TranslateError;

fn req(v: Value) -> rs::ResponsesRequest {
    serde_json::from_value(v).unwrap()
}

fn hub(v: Value) -> oa::ChatCompletionRequest {
    ri::responses_to_hub_request(&req(v)).unwrap()
}

fn refused(v: Value) -> (String, String) {
    match ri::responses_to_hub_request(&req(v)).unwrap_err() {
        TranslateError::InvalidRequest { message, param } => (message, param.unwrap_or_default()),
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> oa::ChatCompletionChunk {
    serde_json::from_value(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
    )
    .unwrap()
}

fn usage_chunk() -> oa::ChatCompletionChunk {
    serde_json::from_value(json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}))
    .unwrap()
}

fn names(events: &[rs::StreamEvent]) -> Vec<&str> {
    events.iter().map(rs::StreamEvent::event_name).collect()
}

// --- ingress: request ---------------------------------------------------------------------

#[test]
fn test_string_input_and_instructions_become_system_and_user() {
    let h = hub(
        json!({"model": "m", "input": "hi", "instructions": "be brief",
                       "max_output_tokens": 50, "reasoning": {"effort": "low", "summary": "auto"},
                       "stream": true, "store": true, "metadata": {"a": "b"}}),
    );
    assert_eq!(
        serde_json::to_value(&h.messages).unwrap(),
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(h.max_tokens, Some(50));
    assert_eq!(h.reasoning_effort.as_deref(), Some("low"));
    assert!(h.wants_stream_usage(), "billing needs usage in streams");
    assert!(
        h.extra.is_empty(),
        "nothing unknown is forwarded: {:?}",
        h.extra
    );
}

#[test]
fn test_state_and_unsupported_items_are_refused_with_their_param() {
    let (m, p) = refused(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}));
    assert_eq!(p, "previous_response_id");
    assert!(m.contains("whole conversation"));
    let (_, p) = refused(json!({"model": "m", "input": "x", "background": true}));
    assert_eq!(p, "background");
    let (_, p) = refused(json!({"model": "m", "input": "x", "conversation": "conv_1"}));
    assert_eq!(p, "conversation");
    let (m, p) =
        refused(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    assert_eq!(p, "input[0]");
    assert!(m.contains("item_reference"));
    let (m, p) = refused(
        json!({"model": "m", "input": [{"role": "user", "content": "a"},
        {"type": "computer_call", "id": "c"}]}),
    );
    assert_eq!(p, "input[1]");
    assert!(m.contains("computer_call"));
    let (m, _) = refused(json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}));
    assert!(m.contains("malformed `function_call`"));
    let (_, p) = refused(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1"}]}]}));
    assert_eq!(p, "input[0].content[0]");
    let (_, p) = refused(json!({"model": "m"}));
    assert_eq!(p, "input");
}

#[test]
fn test_history_is_resolved_by_the_caller_with_with_history() {
    let r = req(json!({"model": "m", "input": "and now?", "previous_response_id": "resp_1"}));
    let prior: Vec<rs::Item> = serde_json::from_value(json!([
        {"role": "user", "content": "first"},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "answer", "annotations": []}]}
    ]))
    .unwrap();
    let h = ri::responses_to_hub_request(&r.with_history(prior)).unwrap();
    let roles: Vec<oa::Role> = h.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [oa::Role::User, oa::Role::Assistant, oa::Role::User]);
}

#[test]
fn test_hosted_tools_dropped_namespaces_flattened_forced_hosted_choice_refused() {
    let tools = json!([
        {"type": "web_search", "external_web_access": false},
        {"type": "tool_search", "execution": "client", "parameters": {"type": "object"}},
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "namespace", "name": "agents", "tools": [
            {"type": "function", "name": "spawn", "parameters": {"type": "object"}}]}
    ]);
    let h = hub(json!({"model": "m", "input": "x", "tools": tools}));
    let names: Vec<&str> = h
        .tools
        .iter()
        .flatten()
        .map(|t| t.function.name.as_str())
        .collect();
    assert_eq!(names, ["f", "agents__spawn"]);
    let (_, p) = refused(json!({"model": "m", "input": "x", "tools": tools,
                                "tool_choice": {"type": "web_search_preview"}}));
    assert_eq!(p, "tool_choice");
    let (m, _) = refused(json!({"model": "m", "input": "x", "tools": tools,
                                "tool_choice": {"type": "function", "name": "nope"}}));
    assert!(m.contains("nope"));
    // allowed_tools narrows the list.
    let h = hub(
        json!({"model": "m", "input": "x", "tools": tools, "tool_choice":
        {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}}),
    );
    assert_eq!(h.tools.as_ref().unwrap().len(), 1);
    assert_eq!(
        h.tool_choice,
        Some(oa::ToolChoice::Mode(oa::ToolChoiceMode::Required))
    );

    // A namespaced call comes back as a function_call with its namespace.
    let r = req(json!({"model": "m", "input": "x", "tools": tools}));
    let echo = ri::ResponsesEcho::new(&r, "resp_1", 1, "m", false);
    let answer: oa::ChatCompletionResponse = serde_json::from_value(json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "agents__spawn", "arguments": "{}"}}]}}]}))
    .unwrap();
    let out = ri::hub_to_responses_response(&answer, &echo);
    let v = serde_json::to_value(&out.output[0]).unwrap();
    assert_eq!(v["name"], "spawn");
    assert_eq!(v["namespace"], "agents");
    // Its history item maps back to the flat name.
    let h = hub(json!({"model": "m", "tools": tools, "input": [
        {"role": "user", "content": "x"}, v,
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]}));
    assert_eq!(
        h.messages[1].tool_calls.as_ref().unwrap()[0].function.name,
        "agents__spawn"
    );
}

#[test]
fn test_assistant_turn_joins_reasoning_text_and_calls_and_tool_images_follow() {
    let h = hub(json!({"model": "m", "input": [
        {"role": "user", "content": "look"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}], "encrypted_content": "x"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sure.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "view", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "view", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "image:"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "original"}]},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "done"},
        {"type": "web_search_call", "id": "ws", "status": "completed"}
    ]}));
    let v = serde_json::to_value(&h.messages).unwrap();
    assert_eq!(v[1]["role"], "assistant");
    assert_eq!(v[1]["content"], "Sure.");
    assert_eq!(v[1]["reasoning_content"], "think");
    assert_eq!(v[1]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        v[2],
        json!({"role": "tool", "content": "image:", "tool_call_id": "c1"})
    );
    assert_eq!(
        v[3],
        json!({"role": "tool", "content": "done", "tool_call_id": "c2"})
    );
    // The image follows the tool messages, in a user message (`original` is not a chat
    // detail level and is dropped).
    assert_eq!(v[4]["role"], "user");
    assert_eq!(
        v[4]["content"][0],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    );
    assert_eq!(
        v.as_array().unwrap().len(),
        5,
        "the web search record is dropped"
    );
}

#[test]
fn test_text_format_maps_to_response_format() {
    let h = hub(
        json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema",
        "name": "out", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"}}),
    );
    assert_eq!(
        serde_json::to_value(h.response_format.unwrap()).unwrap(),
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    let h = hub(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}));
    assert_eq!(h.response_format.unwrap().kind, "json_object");
    let h = hub(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}));
    assert!(h.response_format.is_none());
}

// --- ingress: response and stream ------------------------------------------------------

fn echo() -> ri::ResponsesEcho {
    let r = req(json!({"model": "m", "input": "x", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "custom", "name": "apply_patch"}]}));
    ri::ResponsesEcho::new(&r, "resp_1", 5, "client-model", false)
}

#[test]
fn test_length_stop_is_an_incomplete_response() {
    let answer: oa::ChatCompletionResponse = serde_json::from_value(json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "cut"}}]}))
    .unwrap();
    let out = ri::hub_to_responses_response(&answer, &echo());
    assert_eq!(out.status, Some(rs::ResponseStatus::Incomplete));
    assert_eq!(out.incomplete_details.unwrap().reason, "max_output_tokens");
    let v = serde_json::to_value(&out.output[0]).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(out.model, "client-model");
    assert_eq!(out.store, Some(false));

    let mut t = ri::HubToResponsesStream::new(echo());
    let mut ev = t.on_event(chunk(json!({"role": "assistant", "content": "cut"}), None));
    ev.extend(t.on_event(chunk(json!({}), Some("length"))));
    ev.extend(t.finish());
    let last = ev.last().unwrap();
    assert_eq!(last.event_name(), "response.incomplete");
}

#[test]
fn test_stream_with_nothing_still_completes_and_finish_is_idempotent() {
    let mut t = ri::HubToResponsesStream::new(echo());
    let ev = t.finish();
    assert_eq!(
        names(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.completed"
        ]
    );
    assert!(t.finish().is_empty());
    assert!(t
        .on_event(chunk(json!({"content": "late"}), None))
        .is_empty());
}

#[test]
fn test_stream_error_ends_with_response_failed() {
    let mut t = ri::HubToResponsesStream::new(echo());
    let mut ev = t.on_event(chunk(json!({"content": "par"}), None));
    let err = oa::ErrorResponse::new("rate_limit_error", "slow down").error;
    ev.extend(t.on_error(&err));
    assert!(t.finish().is_empty());
    match ev.last().unwrap() {
        rs::StreamEvent::Failed { response, .. } => {
            let e = response.error.as_ref().unwrap();
            assert_eq!(e.code, "rate_limit_exceeded");
            assert_eq!(e.message, "slow down");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn test_custom_tool_input_is_sent_when_the_call_ends() {
    let mut t = ri::HubToResponsesStream::new(echo());
    let mut ev = t.on_event(chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_p", "type": "function",
                               "function": {"name": "apply_patch", "arguments": "{\"inp"}}]}),
        None,
    ));
    ev.extend(t.on_event(chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "ut\":\"*** Begin\\n\"}"}}]}),
        None,
    )));
    ev.extend(t.on_event(chunk(json!({}), Some("tool_calls"))));
    ev.extend(t.on_event(usage_chunk()));
    ev.extend(t.finish());
    assert_eq!(
        names(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    match &ev[4] {
        rs::StreamEvent::CustomToolCallInputDone { input, .. } => assert_eq!(input, "*** Begin\n"),
        other => panic!("{other:?}"),
    }
    match &ev[6] {
        rs::StreamEvent::Completed { response, .. } => {
            assert_eq!(response.usage.as_ref().unwrap().total_tokens, 10);
            assert_eq!(response.output.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn test_interleaved_tool_calls_stay_separate_items() {
    let mut t = ri::HubToResponsesStream::new(echo());
    let mut ev = Vec::new();
    for (i, piece) in [(0, "{\"a\""), (1, "{\"b\""), (0, ":1}"), (1, ":2}")] {
        let head = if piece.starts_with('{') {
            json!({"index": i, "id": format!("call_{i}"), "type": "function",
                   "function": {"name": "f", "arguments": piece}})
        } else {
            json!({"index": i, "function": {"arguments": piece}})
        };
        ev.extend(t.on_event(chunk(json!({"tool_calls": [head]}), None)));
    }
    ev.extend(t.finish());
    let last = match ev.last().unwrap() {
        rs::StreamEvent::Completed { response, .. } => response.clone(),
        other => panic!("{other:?}"),
    };
    let args: Vec<Value> = last
        .output
        .iter()
        .map(|i| serde_json::to_value(i).unwrap()["arguments"].clone())
        .collect();
    assert_eq!(args, [json!("{\"a\":1}"), json!("{\"b\":2}")]);
}

// --- upstream ------------------------------------------------------------------------------

fn chat(v: Value) -> oa::ChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn test_upstream_request_refusals_and_defaults() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let mut v = base.clone();
    v["n"] = json!(2);
    assert!(ru::hub_to_responses_request(&chat(v), "u").is_err());
    let mut v = base.clone();
    v["stop"] = json!(["END"]);
    let err = ru::hub_to_responses_request(&chat(v), "u").unwrap_err();
    assert!(err.to_string().contains("stop"));
    let mut v = base.clone();
    v["messages"][0]["content"] =
        json!([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]);
    assert!(ru::hub_to_responses_request(&chat(v), "u").is_err());

    let mut v = base.clone();
    v["max_tokens"] = json!(5);
    v["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    v["reasoning_effort"] = json!("high");
    let r = ru::hub_to_responses_request(&chat(v), "u").unwrap();
    assert_eq!(r.max_output_tokens, Some(ru::MIN_MAX_OUTPUT_TOKENS));
    assert_eq!(
        r.store,
        Some(false),
        "the gateway never asks upstreams to store"
    );
    let t = serde_json::to_value(&r.tools.unwrap()[0]).unwrap();
    assert_eq!(t["strict"], false, "Responses defaults to strict");
    assert_eq!(t["parameters"], json!({"type": "object", "properties": {}}));
    assert_eq!(r.reasoning.unwrap().effort.as_deref(), Some("high"));
}

#[test]
fn test_upstream_legacy_function_messages_get_ids() {
    let r = ru::hub_to_responses_request(
        &chat(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "ok"}
        ]})),
        "u",
    )
    .unwrap();
    let v = serde_json::to_value(r.input).unwrap();
    assert_eq!(v[1]["call_id"], "call_legacy_1");
    assert_eq!(v[2]["call_id"], "call_legacy_1");
}

fn up_stream(events: Vec<Value>) -> (Vec<oa::ChatCompletionChunk>, ru::ResponsesToHubStream) {
    let mut t = ru::ResponsesToHubStream::new("chatcmpl-1", 1, "m", true);
    let mut out = Vec::new();
    for e in events {
        out.extend(t.on_event(rs::StreamEvent::from_data(&e.to_string()).unwrap()));
    }
    out.extend(t.finish());
    (out, t)
}

fn resp(status: &str, extra: Value) -> Value {
    let mut v = json!({"id": "r", "object": "response", "created_at": 1, "status": status,
        "model": "u", "output": [], "error": null, "incomplete_details": null});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn test_upstream_failures_and_truncation_are_errors() {
    let (_, t) = up_stream(vec![
        json!({"type": "response.created", "sequence_number": 0, "response": resp("in_progress", json!({}))}),
        json!({"type": "response.failed", "sequence_number": 1, "response": resp("failed",
            json!({"error": {"code": "rate_limit_exceeded", "message": "slow"}}))}),
    ]);
    let e = t.error().unwrap();
    assert_eq!(e.kind, "rate_limit_error");
    assert_eq!(e.message, "slow");
    let (_, t) = up_stream(vec![
        json!({"type": "error", "sequence_number": 0, "code": null, "message": "boom", "param": null}),
    ]);
    assert_eq!(t.error().unwrap().message, "boom");
    let (chunks, t) = up_stream(vec![
        json!({"type": "response.created", "sequence_number": 0, "response": resp("in_progress", json!({}))}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0,
               "content_index": 0, "delta": "hal"}),
    ]);
    assert!(t.error().unwrap().message.contains("ended before"));
    assert_eq!(chunks.len(), 2, "what arrived was still delivered");
}

#[test]
fn test_upstream_incomplete_is_length_and_usage_is_read() {
    let (chunks, t) = up_stream(vec![
        json!({"type": "response.output_text.delta", "sequence_number": 0, "item_id": "m", "output_index": 0,
               "content_index": 0, "delta": "cut"}),
        json!({"type": "brand.new.event", "sequence_number": 1}),
        json!({"type": "response.incomplete", "sequence_number": 2, "response": resp("incomplete", json!({
            "incomplete_details": {"reason": "max_output_tokens"},
            "usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}}))}),
    ]);
    assert!(t.error().is_none());
    assert_eq!(t.usage().unwrap().output_tokens, 4);
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c.choices.first().and_then(|c| c.finish_reason.clone()))
        .collect();
    assert_eq!(finish, [oa::FinishReason::Length]);
    assert_eq!(
        chunks.last().unwrap().usage.as_ref().unwrap().total_tokens,
        13
    );
}

#[test]
fn test_upstream_calls_sent_whole_or_as_custom_input_become_valid_arguments() {
    let added = json!({"type": "custom_tool_call", "id": "ctc", "call_id": "c9", "name": "apply_patch", "input": ""});
    let done = json!({"type": "custom_tool_call", "id": "ctc", "call_id": "c9", "name": "apply_patch",
                      "input": "line \"1\"\n"});
    let fc_done = json!({"type": "function_call", "id": "fc", "call_id": "c1", "name": "f",
                         "arguments": "{\"x\":1}", "status": "completed"});
    let (chunks, t) = up_stream(vec![
        json!({"type": "response.output_item.added", "sequence_number": 0, "output_index": 0, "item": added}),
        json!({"type": "response.output_item.done", "sequence_number": 1, "output_index": 0, "item": done}),
        json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 1,
               "item": {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": ""}}),
        json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 1, "item": fc_done}),
        json!({"type": "response.completed", "sequence_number": 4, "response": resp("completed", json!({}))}),
    ]);
    assert!(t.error().is_none());
    let full = tollbooth_core::translate::stream_convert::aggregate_chunks(&chunks);
    let calls = full.choices[0].message.tool_calls.as_ref().unwrap();
    let custom: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(custom, json!({"input": "line \"1\"\n"}));
    assert_eq!(calls[1].function.arguments, "{\"x\":1}");
    assert_eq!(
        full.choices[0].finish_reason,
        Some(oa::FinishReason::ToolCalls)
    );
}

#[test]
fn test_upstream_failed_response_object_is_an_error() {
    let r: rs::Response = serde_json::from_value(resp("failed", json!({}))).unwrap();
    assert!(ru::response_error(&r).is_some());
    let r: rs::Response = serde_json::from_value(resp("completed", json!({}))).unwrap();
    assert!(ru::response_error(&r).is_none());
}
