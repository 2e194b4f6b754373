//! The stored capture: metadata, the redacted request and answer (hub form, streams
//! reassembled), the system prompt and tool definitions pulled out for review, and the
//! size cap with its `truncated` flag. Built from bodies only: headers and credentials
//! never reach it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::normalize::{request_turns, response_turns, tool_defs, Turn};
use super::redact::Redactor;
use super::settings::CaptureSettings;

/// Marker appended to a string cut by the size cap.
pub const CUT_MARK: &str = "…[truncated]";
/// Characters of conversation text kept in the index for text search.
pub const SEARCH_WINDOW_CHARS: usize = 4_096;

/// Everything about a capture except its bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub id: String,
    pub request_id: String,
    pub member_id: String,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `openai_chat`, `anthropic_messages`, `responses`, `gemini`, or `passthrough`.
    pub ingress: String,
    pub model_requested: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_served: Option<String>,
    /// The usage event's status (`ok`, `client_abort`, `upstream_error`, ...), or the
    /// upstream HTTP status for pass-through (`http_200`).
    pub status: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub latency_ms: u64,
    /// Unix seconds when the exchange finished.
    pub created_at: u64,
}

/// The stored capture (R2 object body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRecord {
    #[serde(flatten)]
    pub meta: CaptureMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    pub request: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    pub truncated: bool,
}

/// What the index row needs beyond the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFacts {
    pub has_tools: bool,
    /// Turns of the request plus the answer (the transcript this capture ends with).
    pub transcript_len: usize,
    /// Bounded text for search (the last [`SEARCH_WINDOW_CHARS`] characters).
    pub search_text: String,
    pub bytes: usize,
}

/// A built capture: the record, its JSON bytes (within the cap) and index facts, and
/// the full (redacted, untruncated) transcript for threading.
#[derive(Debug, Clone)]
pub struct Built {
    pub record: CaptureRecord,
    pub json: String,
    pub facts: IndexFacts,
    pub transcript: Vec<Turn>,
    /// Turns of the request alone (a prefix of `transcript`).
    pub request_len: usize,
}

/// Redacts, extracts, caps: see the module docs.
pub fn build_record(
    meta: CaptureMeta,
    mut request: Value,
    mut response: Option<Value>,
    settings: &CaptureSettings,
) -> Built {
    let redactor = Redactor::new(settings);
    // Nothing but the body is ever passed in; drop fields that may carry secrets anyway.
    if let Some(m) = request.as_object_mut() {
        for k in ["api_key", "apiKey", "key", "authorization"] {
            m.remove(k);
        }
    }
    redactor.value(&mut request);
    if let Some(r) = response.as_mut() {
        redactor.value(r);
    }
    let mut transcript = request_turns(&request);
    let request_len = transcript.len();
    if let Some(r) = &response {
        transcript.extend(response_turns(r));
    }
    let system = transcript.iter().find_map(|t| match t {
        Turn::System { text } => Some(text.clone()),
        _ => None,
    });
    let tools = tool_defs(&request);
    let has_tools = !tools.is_empty()
        || transcript.iter().any(|t| {
            matches!(t, Turn::ToolResult { .. })
                || matches!(t, Turn::Assistant { calls, .. } if !calls.is_empty())
        });
    let search_text = search_window(&transcript);
    let mut record = CaptureRecord {
        meta,
        system,
        tools,
        request,
        response,
        truncated: false,
    };
    let cap = usize::try_from(settings.max_bytes.max(1_024)).unwrap_or(usize::MAX);
    let mut json = to_json(&record);
    if json.len() > cap {
        record.truncated = true;
        for limit in [16_384, 4_096, 1_024, 256, 64] {
            cut_strings(&mut record.request, limit);
            if let Some(r) = record.response.as_mut() {
                cut_strings(r, limit);
            }
            if let Some(s) = record.system.as_mut() {
                cut_string(s, limit);
            }
            json = to_json(&record);
            if json.len() <= cap {
                break;
            }
        }
        if json.len() > cap {
            // Still too large (very many messages): keep the metadata only.
            record.request = serde_json::json!({ "omitted": "size cap" });
            record.response = None;
            record.tools.clear();
            record.system = None;
            json = to_json(&record);
        }
    }
    let facts = IndexFacts {
        has_tools,
        transcript_len: transcript.len(),
        search_text,
        bytes: json.len(),
    };
    Built {
        record,
        json,
        facts,
        transcript,
        request_len,
    }
}

fn to_json(r: &CaptureRecord) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| "{}".into())
}

fn cut_string(s: &mut String, limit: usize) {
    if s.chars().count() > limit {
        let cut: String = s.chars().take(limit).collect();
        *s = format!("{cut}{CUT_MARK}");
    }
}

fn cut_strings(v: &mut Value, limit: usize) {
    match v {
        Value::String(s) => cut_string(s, limit),
        Value::Array(a) => a.iter_mut().for_each(|x| cut_strings(x, limit)),
        Value::Object(m) => m.values_mut().for_each(|x| cut_strings(x, limit)),
        _ => {}
    }
}

/// The last [`SEARCH_WINDOW_CHARS`] characters of the transcript's text, lowercased.
pub fn search_window(turns: &[Turn]) -> String {
    let mut all = String::new();
    for t in turns {
        let piece = match t {
            Turn::System { text } | Turn::User { text } | Turn::ToolResult { text, .. } => {
                text.as_str()
            }
            Turn::Assistant { text, calls } => {
                all.push_str(text);
                for c in calls {
                    all.push(' ');
                    all.push_str(&c.name);
                }
                ""
            }
        };
        all.push_str(piece);
        all.push('\n');
    }
    let n = all.chars().count();
    all.chars()
        .skip(n.saturating_sub(SEARCH_WINDOW_CHARS))
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> CaptureMeta {
        CaptureMeta {
            id: "c1".into(),
            request_id: "r1".into(),
            member_id: "m1".into(),
            key_id: "k1".into(),
            app_id: None,
            ingress: "openai_chat".into(),
            model_requested: "gpt".into(),
            model_served: Some("mock/gpt".into()),
            status: "ok".into(),
            input_tokens: 1,
            output_tokens: 2,
            cost_micros: 3,
            latency_ms: 4,
            created_at: 5,
        }
    }

    #[test]
    fn test_redacts_and_extracts() {
        let req = json!({"model": "gpt", "api_key": "sk-zzzzzzzzzzzzzzzzzzzz",
            "messages": [{"role": "system", "content": "be nice"},
                         {"role": "user", "content": "my key is sk-abcdefghijklmnopqrst, mail me@x.org"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        let resp = json!({"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]});
        let b = build_record(meta(), req, Some(resp), &CaptureSettings::default());
        assert!(!b.json.contains("sk-"), "{}", b.json);
        assert!(!b.json.contains("me@x.org"));
        assert_eq!(b.record.system.as_deref(), Some("be nice"));
        assert_eq!(b.record.tools.len(), 1);
        assert!(b.facts.has_tools);
        assert_eq!(b.facts.transcript_len, 3);
        assert_eq!(b.request_len, 2);
        assert!(!b.record.truncated);
        assert!(b.facts.search_text.contains("[redacted_email]"));
    }

    #[test]
    fn test_size_cap_truncates_and_flags() {
        let big = "x".repeat(50_000);
        let req = json!({"messages": [{"role": "user", "content": big}]});
        let s = CaptureSettings {
            max_bytes: 8_192,
            ..CaptureSettings::default()
        };
        let b = build_record(meta(), req, None, &s);
        assert!(b.record.truncated);
        assert!(b.json.len() <= 8_192, "{}", b.json.len());
        assert!(b.json.contains(CUT_MARK));
        // The transcript for threading is the full one.
        assert!(matches!(&b.transcript[0], Turn::User { text } if text.len() == 50_000));
        let many: Vec<Value> = (0..2_000)
            .map(|i| json!({"role": "user", "content": format!("message {i}")}))
            .collect();
        let b = build_record(meta(), json!({"messages": many}), None, &s);
        assert!(b.record.truncated);
        assert!(b.json.len() <= 8_192);
    }
}
