//! Input-token counts for `POST /v1/messages/count_tokens` (Anthropic) and
//! `models/{model}:countTokens` (Gemini), for upstreams that cannot count.
//!
//! The count is the billing estimator's ([`billing::estimate_body`]) over exactly the
//! parts of the request that are prompt: system prompt, messages, tools and tool choice
//! (Anthropic); system instruction, contents, tools and tool config (Gemini). It is the
//! same conservative count the reservation uses, so it overestimates typical text (about
//! four ASCII characters per token, one token per non-ASCII character, JSON structure
//! counted, media parts by their per-part constants) and never undercounts by much; a
//! provider's own tokenizer gives smaller numbers. Model, `max_tokens` and sampling
//! options are not prompt and are not counted.

use serde_json::{Map, Value};

use crate::billing;
use crate::protocol::anthropic as an;
use crate::protocol::gemini as g;

fn count(prompt: Map<String, Value>) -> u64 {
    let value = Value::Object(prompt);
    let bytes = serde_json::to_string(&value).map_or(0, |s| s.len());
    billing::estimate_body(&value, u64::try_from(bytes).unwrap_or(u64::MAX)).tokens
}

fn put<T: serde::Serialize>(out: &mut Map<String, Value>, key: &str, v: Option<&T>) {
    if let Some(v) = v.and_then(|v| serde_json::to_value(v).ok()) {
        out.insert(key.to_owned(), v);
    }
}

/// The estimated input tokens of an Anthropic `count_tokens` request.
pub fn anthropic_count_tokens(req: &an::CountTokensRequest) -> an::CountTokensResponse {
    let mut prompt = Map::new();
    put(&mut prompt, "system", req.system.as_ref());
    put(&mut prompt, "messages", Some(&req.messages));
    put(&mut prompt, "tools", req.tools.as_ref());
    put(&mut prompt, "tool_choice", req.tool_choice.as_ref());
    an::CountTokensResponse {
        input_tokens: count(prompt),
    }
}

/// The estimated input tokens of a Gemini `countTokens` request (bare `contents` or a
/// whole `generateContentRequest`).
pub fn gemini_count_tokens(req: g::CountTokensRequest) -> g::CountTokensResponse {
    let req = req.into_generate_request();
    let mut prompt = Map::new();
    put(
        &mut prompt,
        "systemInstruction",
        req.system_instruction.as_ref(),
    );
    put(&mut prompt, "contents", Some(&req.contents));
    if !req.tools.is_empty() {
        put(&mut prompt, "tools", Some(&req.tools));
    }
    put(&mut prompt, "toolConfig", req.tool_config.as_ref());
    super::gemini_ingress::count_tokens_response(count(prompt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn anthropic(v: Value) -> u64 {
        anthropic_count_tokens(&serde_json::from_value(v).unwrap()).input_tokens
    }

    #[test]
    fn test_anthropic_count_covers_system_messages_tools_and_media() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "Hello there"}]});
        let small = anthropic(base.clone());
        assert!(small >= billing::PER_REQUEST_OVERHEAD_TOKENS + 3, "{small}");
        let mut with_system = base.clone();
        with_system["system"] = json!("You are a careful assistant who answers briefly.");
        assert!(anthropic(with_system) > small + 10);
        let mut with_tools = base.clone();
        with_tools["tools"] = json!([{"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
        assert!(anthropic(with_tools) > small + 15);
        let mut with_image = base.clone();
        with_image["messages"][0]["content"] = json!([{"type": "text", "text": "Hello there"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"}}]);
        assert!(anthropic(with_image) >= small + billing::IMAGE_PART_TOKENS);
        // Model and sampling options are not prompt.
        let mut other_model = base;
        other_model["model"] = json!("a-much-much-longer-model-name-than-before");
        assert_eq!(anthropic(other_model), small);
    }

    #[test]
    fn test_count_is_conservative_for_english_and_cjk() {
        // ~45 real tokens for this English text; ~20 for the Chinese one.
        let english = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen \
                       liquor jugs. How vexingly quick daft zebras jump! Sphinx of black quartz.";
        assert!(
            anthropic(json!({"model": "m", "messages": [{"role": "user", "content": english}]}))
                >= 45
        );
        let cjk = "我们今天去公园散步，然后一起吃晚饭。";
        assert!(
            anthropic(json!({"model": "m", "messages": [{"role": "user", "content": cjk}]})) >= 18
        );
    }

    #[test]
    fn test_gemini_count_both_request_forms_agree() {
        let contents = json!([{"role": "user", "parts": [{"text": "Hello there"}]}]);
        let bare: g::CountTokensRequest =
            serde_json::from_value(json!({"contents": contents})).unwrap();
        let wrapped: g::CountTokensRequest = serde_json::from_value(
            json!({"generateContentRequest": {"model": "models/x", "contents": contents,
                   "generationConfig": {"temperature": 0.5}}}),
        )
        .unwrap();
        let a = gemini_count_tokens(bare).total_tokens;
        assert_eq!(a, gemini_count_tokens(wrapped).total_tokens);
        let with_system: g::CountTokensRequest = serde_json::from_value(json!({
            "generateContentRequest": {"contents": contents,
                "systemInstruction": {"parts": [{"text": "You are a careful assistant."}]}}}))
        .unwrap();
        assert!(gemini_count_tokens(with_system).total_tokens > a + 5);
    }
}
