//! Pass-through traffic for capture and bring-your-own-key (BYOK):
//!
//! - [`byok_kind`]: the provider protocol and auth style, from the path and the host:
//!   `/anthropic/` in the path or a `/v1/messages` path → Anthropic (`x-api-key`);
//!   a Google host (`*.googleapis.com`) → Gemini (`x-goog-api-key`); anything else →
//!   OpenAI-style (`Authorization: Bearer`).
//! - [`request_value`] and [`response_value`]: the raw bodies as the capture stores
//!   them: OpenAI and Anthropic requests as sent (the normalizer reads both), Gemini
//!   requests in hub form; answers in hub form (a stream is reassembled), or as sent
//!   when they cannot be read.

use serde_json::Value;

use crate::catalogue::{AuthStyle, ProviderKind};
use crate::protocol::gemini as g;
use crate::translate::gemini_ingress::gemini_to_hub_request;
use crate::translate::hub::{decode_full, HubDecoder};
use crate::translate::stream_convert::ChunkAggregator;

/// The protocol of a pass-through call, from its API path and host.
pub fn byok_kind(api_path: &str, host: &str) -> ProviderKind {
    let path = api_path.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let host = host.split(':').next().unwrap_or("");
    if path.contains("/anthropic/")
        || path.ends_with("/v1/messages")
        || path.contains("/v1/messages?")
    {
        ProviderKind::Anthropic
    } else if host == "googleapis.com" || host.ends_with(".googleapis.com") {
        ProviderKind::Gemini
    } else {
        ProviderKind::Openai
    }
}

/// The auth style of a protocol's provider key.
pub fn auth_style(kind: ProviderKind) -> AuthStyle {
    match kind {
        ProviderKind::Anthropic => AuthStyle::XApiKey,
        ProviderKind::Gemini => AuthStyle::Google,
        ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Responses => AuthStyle::Bearer,
    }
}

/// The model named in a Gemini path (`.../models/{model}:generateContent`).
fn gemini_path_model(api_path: &str) -> Option<(String, bool)> {
    let rest = api_path.split("/models/").nth(1)?;
    let (model, action) = rest.split_once(':')?;
    let action = action.split('?').next().unwrap_or("");
    Some((
        model.to_owned(),
        action.starts_with("streamGenerateContent"),
    ))
}

/// The model a request names (body `model`, or the Gemini path's).
pub fn request_model(kind: ProviderKind, api_path: &str, body: &Value) -> String {
    if let Some(m) = body.get("model").and_then(Value::as_str) {
        return m.to_owned();
    }
    if kind == ProviderKind::Gemini {
        if let Some((m, _)) = gemini_path_model(api_path) {
            return m;
        }
    }
    "unknown".to_owned()
}

/// The request as captured (see the module docs); `None` when the body is not JSON.
pub fn request_value(kind: ProviderKind, api_path: &str, body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if kind == ProviderKind::Gemini {
        if let (Some((model, stream)), Ok(req)) = (
            gemini_path_model(api_path),
            serde_json::from_value::<g::GenerateContentRequest>(v.clone()),
        ) {
            if let Ok(hub) = gemini_to_hub_request(&req, &model, stream) {
                if let Ok(h) = serde_json::to_value(hub) {
                    return Some(h);
                }
            }
        }
    }
    Some(v)
}

/// The answer as captured (see the module docs); `None` when it is empty.
pub fn response_value(
    kind: ProviderKind,
    sse: bool,
    body: &[u8],
    id: &str,
    created: u64,
    model: &str,
) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    if sse {
        let mut dec = HubDecoder::new(kind, id, created, model, false);
        let mut agg = ChunkAggregator::new();
        let mut d = dec.push(body);
        d.chunks.extend(dec.finish().chunks);
        for c in &d.chunks {
            agg.push(c);
        }
        if agg.has_chunks() {
            let mut hub = agg.finish();
            if hub.usage.is_none() {
                hub.usage = dec.usage().as_ref().map(Into::into);
            }
            return serde_json::to_value(hub).ok();
        }
    }
    let text = String::from_utf8_lossy(body);
    if let Ok(full) = decode_full(kind, &text, id, created, model, false) {
        return serde_json::to_value(full.hub).ok();
    }
    serde_json::from_str(&text)
        .ok()
        .or_else(|| Some(Value::String(text.into_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_byok_kind_from_path_and_host() {
        assert_eq!(
            byok_kind("/v1/messages", "api.anthropic.com"),
            ProviderKind::Anthropic
        );
        assert_eq!(
            byok_kind("/api/anthropic/v1/x", "proxy.example.com"),
            ProviderKind::Anthropic
        );
        assert_eq!(
            byok_kind(
                "/v1beta/models/g:generateContent",
                "generativelanguage.googleapis.com"
            ),
            ProviderKind::Gemini
        );
        assert_eq!(
            byok_kind("/v1/chat/completions", "api.openai.com"),
            ProviderKind::Openai
        );
        assert_eq!(
            byok_kind("/v1/chat/completions", "googleapis.com.evil.io"),
            ProviderKind::Openai
        );
        assert_eq!(auth_style(ProviderKind::Gemini), AuthStyle::Google);
    }

    #[test]
    fn test_stream_reassembled_into_hub() {
        let sse = concat!(
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
            "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
            "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let v = response_value(ProviderKind::Openai, true, sse.as_bytes(), "id", 1, "m").unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let req = request_value(
            ProviderKind::Gemini,
            "/v1beta/models/gem:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(req["messages"][0]["content"], "hi");
    }
}
