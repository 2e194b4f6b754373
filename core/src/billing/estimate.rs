//! How much to reserve before a request runs.
//!
//! The reservation is realistic, not worst-case: a prompt estimate from the request's text
//! plus the output the request can produce (`max_tokens` capped at the model maximum, or a
//! default when absent). A request without `max_tokens` therefore never reserves the whole
//! budget. After the request, settlement charges the provider's actual usage and refunds
//! (or, rarely, tops up) the difference.

use serde::{Deserialize, Serialize};

use super::price::{cost_micros, Price};
use super::unit::{charge_in_unit, AllowanceUnit};
use crate::usage::Usage;

/// ASCII characters per token in the prompt estimate (and output characters per token
/// when reserving a characters allowance). English BPE averages about 4 chars per token.
pub const CHARS_PER_TOKEN_ESTIMATE: u64 = 4;

/// Tokens added per message for role markers and separators in chat templates.
pub const PER_MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// Tokens added once per request (reply priming).
pub const PER_REQUEST_OVERHEAD_TOKENS: u64 = 3;

/// Output reserved when the request has no `max_tokens` and the model has no better
/// default.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 4096;

/// Estimated tokens of one piece of text: ASCII characters / 4 rounded up, plus one token
/// per non-ASCII character.
///
/// Conservative (it overestimates for most text): BPE tokenizers average ~4 ASCII chars
/// per token, and CJK or other non-Latin characters take about one token each (often
/// less), so a prompt is rarely underestimated. It is only used to reserve; billing uses
/// the provider's reported usage.
pub fn estimate_text_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold((0u64, 0u64), |(a, o), c| {
        if c.is_ascii() {
            (a.saturating_add(1), o)
        } else {
            (a, o.saturating_add(1))
        }
    });
    ascii
        .div_ceil(CHARS_PER_TOKEN_ESTIMATE)
        .saturating_add(other)
}

/// Estimated prompt tokens of a request, given the text of each message (and of anything
/// else sent as prompt: system prompt, tool definitions as JSON, ...; one item each):
/// [`PER_REQUEST_OVERHEAD_TOKENS`] + for each item its [`estimate_text_tokens`] +
/// [`PER_MESSAGE_OVERHEAD_TOKENS`]. Non-text inputs (images, audio) are the caller's to add.
pub fn estimate_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    messages
        .into_iter()
        .fold(PER_REQUEST_OVERHEAD_TOKENS, |total, text| {
            total
                .saturating_add(estimate_text_tokens(text))
                .saturating_add(PER_MESSAGE_OVERHEAD_TOKENS)
        })
}

/// Prompt tokens counted for one image part (OpenAI `image_url`/`input_image`, Anthropic
/// `image`, Gemini inline or file image data): about what the providers charge for a large
/// image (Anthropic ~1,600, OpenAI high detail up to ~1,100, Gemini 258 per tile).
pub const IMAGE_PART_TOKENS: u64 = 1_600;

/// Prompt tokens counted for one file or document part (PDF and the like).
pub const FILE_PART_TOKENS: u64 = 3_000;

/// Prompt tokens counted for one audio input part.
pub const AUDIO_PART_TOKENS: u64 = 1_600;

/// The prompt of a request body, estimated two ways (see [`estimate_body`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyEstimate {
    /// The realistic, conservative estimate: [`estimate_text_tokens`] of every string
    /// and key plus one token each for the punctuation around it, one token per number,
    /// boolean and null, per-part constants for media, plus the request and per-message
    /// overheads.
    pub tokens: u64,
    /// An upper bound: one token per byte of the body (no tokenizer emits more tokens
    /// than bytes) plus the per-part constants of its media parts.
    pub worst: u64,
    /// Media parts counted by constants.
    pub media_parts: u64,
    /// Document or file parts sent by reference (a URL or a provider file id): their
    /// size is unknown here, so [`BodyEstimate::bounded_by`] counts each at the model's
    /// input limit in the upper bound.
    pub by_reference: u64,
}

impl BodyEstimate {
    /// The estimate with its upper bound covering by-reference documents and files: each
    /// adds `max_input_tokens` (the model's input context limit) to `worst`, on top of
    /// its constant. `None` when the body has such parts and the model has no limit: the
    /// request cannot be bounded and must be refused.
    pub fn bounded_by(self, max_input_tokens: Option<u64>) -> Option<BodyEstimate> {
        if self.by_reference == 0 {
            return Some(self);
        }
        let limit = max_input_tokens?;
        Some(BodyEstimate {
            worst: self
                .worst
                .saturating_add(self.by_reference.saturating_mul(limit)),
            ..self
        })
    }
}

/// Whether a media object is a document or file sent by reference (URL or file id) rather
/// than inline: Anthropic `document` with a `url`/`file` source, OpenAI `file` and
/// Responses `input_file` with `file_id`/`file_url`, Gemini `fileData` that is not an
/// image. Images by URL are not: providers scale images to a bounded token count.
fn by_reference(obj: &serde_json::Map<String, serde_json::Value>) -> bool {
    let has = |v: &serde_json::Value, keys: &[&str]| keys.iter().any(|k| v.get(*k).is_some());
    match obj.get("type").and_then(serde_json::Value::as_str) {
        Some("document") => obj
            .get("source")
            .and_then(|s| s.get("type"))
            .and_then(serde_json::Value::as_str)
            .is_some_and(|t| t != "base64" && t != "text" && t != "content"),
        Some("file") => obj
            .get("file")
            .is_some_and(|f| has(f, &["file_id", "file_url"])),
        Some("input_file") => obj.contains_key("file_id") || obj.contains_key("file_url"),
        _ => ["file_data", "fileData"].iter().any(|k| {
            obj.get(*k).is_some_and(|part| {
                !part
                    .get("mime_type")
                    .or_else(|| part.get("mimeType"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .starts_with("image/")
            })
        }),
    }
}

/// What kind of media a JSON object is, if any.
fn media_kind(obj: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    let kind = obj.get("type").and_then(serde_json::Value::as_str);
    match kind {
        Some("image_url" | "input_image" | "image") => return Some(IMAGE_PART_TOKENS),
        Some("input_audio" | "audio") => return Some(AUDIO_PART_TOKENS),
        Some("file" | "input_file" | "document") => return Some(FILE_PART_TOKENS),
        _ => {}
    }
    for key in ["inline_data", "inlineData", "file_data", "fileData"] {
        if let Some(part) = obj.get(key) {
            let mime = part
                .get("mime_type")
                .or_else(|| part.get("mimeType"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            return Some(if mime.starts_with("image/") {
                IMAGE_PART_TOKENS
            } else if mime.starts_with("audio/") {
                AUDIO_PART_TOKENS
            } else {
                FILE_PART_TOKENS
            });
        }
    }
    None
}

fn walk(v: &serde_json::Value, est: &mut BodyEstimate) {
    use serde_json::Value;
    match v {
        // +1: the quotes and separators around it are tokens too.
        Value::String(s) => {
            est.tokens = est
                .tokens
                .saturating_add(estimate_text_tokens(s))
                .saturating_add(1)
        }
        Value::Number(_) | Value::Bool(_) | Value::Null => {
            est.tokens = est.tokens.saturating_add(1)
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, est)),
        Value::Object(obj) => {
            if let Some(constant) = media_kind(obj) {
                est.tokens = est.tokens.saturating_add(constant);
                est.worst = est.worst.saturating_add(constant);
                est.media_parts = est.media_parts.saturating_add(1);
                if by_reference(obj) {
                    est.by_reference = est.by_reference.saturating_add(1);
                }
                return;
            }
            for (k, v) in obj {
                est.tokens = est
                    .tokens
                    .saturating_add(estimate_text_tokens(k))
                    .saturating_add(1);
                walk(v, est);
            }
        }
    }
}

/// Estimates the prompt of a whole request body: every message, system prompt, tool
/// definition and schema, tool-call argument and any other field the upstream may be
/// sent, not just the message text. `body_bytes` is the length of the JSON text the
/// value was parsed from. Media parts count as [`IMAGE_PART_TOKENS`],
/// [`FILE_PART_TOKENS`] or [`AUDIO_PART_TOKENS`] each (their base64 data is not read).
pub fn estimate_body(value: &serde_json::Value, body_bytes: u64) -> BodyEstimate {
    let mut est = BodyEstimate::default();
    walk(value, &mut est);
    est.tokens = est.tokens.saturating_add(PER_REQUEST_OVERHEAD_TOKENS);
    let messages = value
        .get("messages")
        .or_else(|| value.get("contents"))
        .and_then(serde_json::Value::as_array)
        .map_or(0, |m| u64::try_from(m.len()).unwrap_or(u64::MAX));
    let overhead = PER_REQUEST_OVERHEAD_TOKENS
        .saturating_add(messages.saturating_mul(PER_MESSAGE_OVERHEAD_TOKENS));
    est.tokens = est
        .tokens
        .saturating_add(messages.saturating_mul(PER_MESSAGE_OVERHEAD_TOKENS));
    est.worst = est
        .worst
        .saturating_add(body_bytes)
        .saturating_add(overhead);
    est
}

/// The model facts the output estimate needs (from the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputLimits {
    /// The model's maximum output tokens; requests asking for more are capped.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Output reserved when the request sets no `max_tokens`.
    #[serde(default = "default_output_tokens")]
    pub default_output_tokens: u64,
}

fn default_output_tokens() -> u64 {
    DEFAULT_OUTPUT_TOKENS
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_output_tokens: None,
            default_output_tokens: DEFAULT_OUTPUT_TOKENS,
        }
    }
}

/// The estimated usage of a request before it runs: what to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationEstimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl ReservationEstimate {
    /// `prompt_tokens` from [`estimate_prompt_tokens`]; `requested_max_tokens` is the
    /// request's `max_tokens` / `max_completion_tokens` / `maxOutputTokens`. The output is
    /// the requested maximum, or the default when absent, capped at the model maximum.
    pub fn new(
        prompt_tokens: u64,
        requested_max_tokens: Option<u64>,
        limits: &OutputLimits,
    ) -> Self {
        let wanted = requested_max_tokens.unwrap_or(limits.default_output_tokens);
        let output_tokens = match limits.max_output_tokens {
            Some(cap) => wanted.min(cap),
            None => wanted,
        };
        ReservationEstimate {
            input_tokens: prompt_tokens,
            output_tokens,
        }
    }

    /// The estimate as a [`Usage`] (no cached tokens assumed: the dearer case).
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            ..Usage::default()
        }
    }

    /// Output characters to reserve against a characters allowance.
    pub fn output_chars(&self) -> u64 {
        self.output_tokens.saturating_mul(CHARS_PER_TOKEN_ESTIMATE)
    }

    /// The estimated cost in micro-units.
    pub fn cost_micros(&self, price: &Price) -> u64 {
        cost_micros(price, &self.usage())
    }

    /// What to reserve against an allowance counted in `unit`.
    pub fn in_unit(&self, unit: AllowanceUnit, price: &Price) -> u64 {
        let cost = match unit {
            AllowanceUnit::Money => self.cost_micros(price),
            _ => 0,
        };
        charge_in_unit(unit, &self.usage(), self.output_chars(), cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_text_estimate() {
        assert_eq!(estimate_text_tokens(""), 0);
        assert_eq!(estimate_text_tokens("abcd"), 1);
        assert_eq!(estimate_text_tokens("abcde"), 2);
        assert_eq!(estimate_text_tokens("你好世界"), 4);
        assert_eq!(estimate_text_tokens("héllo"), 1 + 1); // 4 ASCII + 1 other
        assert_eq!(estimate_text_tokens("🎉"), 1);
    }

    #[test]
    fn test_prompt_estimate_overheads() {
        assert_eq!(estimate_prompt_tokens([]), PER_REQUEST_OVERHEAD_TOKENS);
        assert_eq!(
            estimate_prompt_tokens(["You are helpful.", "Hi"]),
            PER_REQUEST_OVERHEAD_TOKENS
                + (4 + PER_MESSAGE_OVERHEAD_TOKENS)
                + (1 + PER_MESSAGE_OVERHEAD_TOKENS)
        );
    }

    #[test]
    fn test_estimate_overestimates_typical_english() {
        // ~ 60 real tokens in cl100k for this paragraph.
        let text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen \
                    liquor jugs. How vexingly quick daft zebras jump! Sphinx of black quartz, \
                    judge my vow. The five boxing wizards jump quickly.";
        assert!(estimate_text_tokens(text) >= 45);
    }

    #[test]
    fn test_output_default_when_absent_and_capped() {
        let limits = OutputLimits {
            max_output_tokens: Some(8192),
            default_output_tokens: 1024,
        };
        assert_eq!(
            ReservationEstimate::new(10, None, &limits).output_tokens,
            1024
        );
        assert_eq!(
            ReservationEstimate::new(10, Some(100), &limits).output_tokens,
            100
        );
        assert_eq!(
            ReservationEstimate::new(10, Some(1_000_000), &limits).output_tokens,
            8192
        );
        // The default itself is capped by a smaller model maximum.
        let small = OutputLimits {
            max_output_tokens: Some(512),
            default_output_tokens: 4096,
        };
        assert_eq!(
            ReservationEstimate::new(10, None, &small).output_tokens,
            512
        );
        // No model max: the default applies, never "the whole budget".
        let est = ReservationEstimate::new(10, None, &OutputLimits::default());
        assert_eq!(est.output_tokens, DEFAULT_OUTPUT_TOKENS);
    }

    #[test]
    fn test_estimate_in_each_unit() {
        let price = Price {
            input_per_mtok: 1_000_000,
            output_per_mtok: 2_000_000,
            per_request: 5,
            ..Price::default()
        };
        let est = ReservationEstimate::new(100, Some(50), &OutputLimits::default());
        assert_eq!(est.in_unit(AllowanceUnit::Tokens, &price), 150);
        assert_eq!(est.in_unit(AllowanceUnit::Characters, &price), 200);
        assert_eq!(est.in_unit(AllowanceUnit::Requests, &price), 1);
        assert_eq!(est.in_unit(AllowanceUnit::Money, &price), 100 + 100 + 5);
    }

    fn body(v: &serde_json::Value) -> BodyEstimate {
        let text = v.to_string();
        estimate_body(v, text.len() as u64)
    }

    #[test]
    fn test_body_estimate_counts_tools_schemas_and_arguments() {
        // A 50 KB tools array next to a two-word message.
        let props: serde_json::Map<String, serde_json::Value> = (0..600)
            .map(|i| {
                (
                    format!("field_{i}"),
                    serde_json::json!({"type": "string", "description": "a described parameter"}),
                )
            })
            .collect();
        let v = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi there"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters":
                {"type": "object", "properties": props}}}]});
        let len = v.to_string().len() as u64;
        assert!(len > 40_000, "{len}");
        let est = body(&v);
        assert!(est.tokens >= len / 4, "{} < {}", est.tokens, len / 4);
        assert!(est.worst >= len);
        // Tool-call arguments of earlier turns count too.
        let args = "x".repeat(4_000);
        let v = serde_json::json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]}]});
        assert!(body(&v).tokens >= 1_000);
    }

    #[test]
    fn test_body_estimate_media_parts_by_constant_and_non_ascii_conservative() {
        let image = serde_json::json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}});
        let parts: Vec<_> = std::iter::repeat_n(image, 10).collect();
        let v = serde_json::json!({"messages": [{"role": "user", "content": parts}]});
        let est = body(&v);
        assert_eq!(est.media_parts, 10);
        assert!(est.tokens >= 10 * IMAGE_PART_TOKENS);
        assert!(
            est.tokens < 10 * IMAGE_PART_TOKENS + 100,
            "base64 is not read"
        );
        assert!(est.worst >= 1_000_000);
        // Anthropic image and document blocks, Gemini inline data.
        let v = serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            {"type": "document", "source": {"type": "base64", "data": "AAAA"}}]}],
            "contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA"}}]}]});
        let est = body(&v);
        assert_eq!(est.media_parts, 3);
        assert!(est.tokens >= IMAGE_PART_TOKENS + FILE_PART_TOKENS + AUDIO_PART_TOKENS);
        // CJK: one token per character, not four characters per token.
        let cjk = "你好".repeat(500);
        let v = serde_json::json!({"messages": [{"role": "user", "content": cjk}]});
        assert!(body(&v).tokens >= 1_000);
    }

    #[test]
    fn test_limits_serde_default() {
        let limits: OutputLimits = serde_json::from_str(r#"{"max_output_tokens":100}"#).unwrap();
        assert_eq!(limits.default_output_tokens, DEFAULT_OUTPUT_TOKENS);
        assert_eq!(limits.max_output_tokens, Some(100));
    }

    #[test]
    fn test_by_reference_documents_are_bounded_by_the_input_limit() {
        use serde_json::json;
        let refs = [
            json!({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}),
            json!({"type": "document", "source": {"type": "file", "file_id": "file_1"}}),
            json!({"type": "file", "file": {"file_id": "file-abc"}}),
            json!({"type": "file", "file": {"file_url": "https://x/a.pdf"}}),
            json!({"type": "input_file", "file_id": "file-abc"}),
            json!({"type": "input_file", "file_url": "https://x/a.pdf"}),
            json!({"fileData": {"mimeType": "application/pdf", "fileUri": "gs://b/a.pdf"}}),
        ];
        for part in refs {
            let body = json!({"messages": [{"role": "user", "content": [part.clone()]}]});
            let est = estimate_body(&body, 500);
            assert_eq!(est.by_reference, 1, "{part}");
            // The estimate keeps the documented constant ...
            assert!(est.tokens >= FILE_PART_TOKENS && est.tokens < FILE_PART_TOKENS + 100);
            // ... the upper bound adds the model's input limit per reference.
            let bounded = est.bounded_by(Some(200_000)).unwrap();
            assert_eq!(bounded.worst, est.worst + 200_000, "{part}");
            assert_eq!(bounded.tokens, est.tokens);
            // Without a limit the request cannot be bounded.
            assert_eq!(est.bounded_by(None), None, "{part}");
        }
        // Inline documents and images by URL are bounded by their bytes / the constant.
        let inline = [
            json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}),
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x"}}),
            json!({"type": "input_file", "file_data": "JVBERi0x"}),
            json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}}),
            json!({"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}),
            json!({"fileData": {"mimeType": "image/png", "fileUri": "gs://b/a.png"}}),
        ];
        for part in inline {
            let body = json!({"messages": [{"role": "user", "content": [part.clone()]}]});
            let est = estimate_body(&body, 500);
            assert_eq!(est.by_reference, 0, "{part}");
            assert_eq!(est.bounded_by(None), Some(est));
        }
    }
}
