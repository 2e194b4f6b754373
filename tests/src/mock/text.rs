//! Small deterministic helpers: word counts, splitting, vectors, encodings.

use serde_json::Value;

/// Number of whitespace-separated words.
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Appends the text of a message `content` value: a string, or an array of parts/blocks whose
/// `text` is taken, recursing into `content` of blocks (Anthropic `tool_result`).
pub fn collect_content_text(content: &Value, out: &mut Vec<String>) {
    match content {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    Value::Object(map) => {
                        if let Some(Value::String(t)) = map.get("text") {
                            out.push(t.clone());
                        }
                        if let Some(inner) = map.get("content") {
                            collect_content_text(inner, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Prompt tokens the gateway's estimate documents for one media part (docs/billing.md):
/// images, files/documents, audio.
pub const IMAGE_TOKENS: u64 = 1_600;
pub const FILE_TOKENS: u64 = 3_000;
pub const AUDIO_TOKENS: u64 = 1_600;

fn text_tokens(s: &str) -> u64 {
    let ascii = s.chars().filter(char::is_ascii).count() as u64;
    let other = s.chars().count() as u64 - ascii;
    ascii.div_ceil(4) + other
}

fn media_tokens(map: &serde_json::Map<String, Value>) -> Option<u64> {
    match map.get("type").and_then(Value::as_str) {
        Some("image_url" | "input_image" | "image") => return Some(IMAGE_TOKENS),
        Some("input_audio" | "audio") => return Some(AUDIO_TOKENS),
        Some("file" | "input_file" | "document") => return Some(FILE_TOKENS),
        _ => {}
    }
    for key in ["inline_data", "inlineData", "file_data", "fileData"] {
        if let Some(part) = map.get(key) {
            let mime = part
                .get("mime_type")
                .or_else(|| part.get("mimeType"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Some(if mime.starts_with("image/") {
                IMAGE_TOKENS
            } else if mime.starts_with("audio/") {
                AUDIO_TOKENS
            } else {
                FILE_TOKENS
            });
        }
    }
    None
}

fn walk_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => text_tokens(s) + 1,
        Value::Array(items) => items.iter().map(walk_tokens).sum(),
        Value::Object(map) => match media_tokens(map) {
            Some(n) => n,
            None => map
                .iter()
                .map(|(k, v)| text_tokens(k) + 1 + walk_tokens(v))
                .sum(),
        },
        _ => 1,
    }
}

/// Prompt tokens of a whole request body, counted the way docs/billing.md documents the
/// gateway's estimate (written here independently of the gateway's code): every string
/// and key at ASCII characters / 4 (rounded up) plus one per non-ASCII character, plus one
/// token of punctuation each; one token per number, boolean and null; media parts by
/// constant; 3 tokens per request and 4 per message (`messages` or Gemini `contents`).
pub fn body_prompt_tokens(body: &Value) -> u64 {
    let messages = body
        .get("messages")
        .or_else(|| body.get("contents"))
        .and_then(Value::as_array)
        .map_or(0, |m| m.len() as u64);
    walk_tokens(body) + 3 + 4 * messages
}

/// Text of one content value, parts joined with a single space.
pub fn content_text(content: &Value) -> String {
    let mut parts = Vec::new();
    collect_content_text(content, &mut parts);
    parts.join(" ")
}

/// The reply pieces: `tok{i} ` for `i < chunks`, or the echo text split into
/// `min(chunks, chars)` near-equal pieces (at least one).
pub fn reply_pieces(chunks: usize, echo: Option<&str>) -> Vec<String> {
    match echo {
        None => (0..chunks).map(|i| format!("tok{i} ")).collect(),
        Some(text) => split_even(text, chunks),
    }
}

/// Splits `text` into `min(n, chars)` pieces of near-equal char counts (at least one piece,
/// possibly empty). Concatenating the pieces gives `text` back.
pub fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = n.min(chars.len()).max(1);
    let base = chars.len() / pieces;
    let extra = chars.len() % pieces;
    let mut out = Vec::with_capacity(pieces);
    let mut iter = chars.into_iter();
    for i in 0..pieces {
        let take = base + usize::from(i < extra);
        out.push(iter.by_ref().take(take).collect());
    }
    out
}

/// Percent-decodes a URL component (`+` is kept as is in paths, decoded to space in queries).
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if plus_as_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into decoded pairs.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// FNV-1a 64-bit.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A deterministic unit-length vector for `text`.
pub fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv1a(dim as u64, text.as_bytes());
    let mut v: Vec<f64> = (0..dim)
        .map(|_| {
            // splitmix64 step
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v.into_iter().map(|x| x as f32).collect()
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(ALPHABET[(i & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// Distinct lowercase alphanumeric words.
fn word_set(s: &str) -> std::collections::BTreeSet<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Rerank score: share of the distinct query words present in the document, 4 decimals.
pub fn relevance(query: &str, doc: &str) -> f64 {
    let q = word_set(query);
    if q.is_empty() {
        return 0.0;
    }
    let d = word_set(doc);
    let hits = q.iter().filter(|w| d.contains(*w)).count();
    ((hits as f64 / q.len() as f64) * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_round_trips() {
        assert_eq!(split_even("hello", 2), vec!["hel", "lo"]);
        assert_eq!(split_even("hi", 5), vec!["h", "i"]);
        assert_eq!(split_even("", 3), vec![""]);
        assert_eq!(split_even("héllo wörld", 3).concat(), "héllo wörld");
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embedding_is_unit_and_stable() {
        let a = embedding("hello", 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2Cc+d%zz", false), "a@b,c+d%zz");
        assert_eq!(
            parse_query("key=k%201&alt=sse"),
            vec![("key".into(), "k 1".into()), ("alt".into(), "sse".into())]
        );
    }
}
