//! Conversations, not requests: a multi-turn chat arrives as a series of growing
//! requests, each repeating the history. Captures are grouped by hashes of canonical
//! message prefixes:
//!
//! - `h(k)` is a chained sha256 over the member id and the first `k` canonical turns
//!   ([`prefix_hashes`]); tool-call ids are left out (some ingresses mint them per
//!   request) and text is trimmed, so a history sent back in another protocol or with
//!   other whitespace still matches.
//! - Each stored capture registers two hashes for its conversation ([`to_register`]):
//!   its request and its whole transcript (request + answer).
//! - A new capture looks up the hashes of its request's prefixes, longest first
//!   ([`lookup_hashes`]); the longest registered one names its conversation. None → a new
//!   conversation.
//! - A capture whose transcript is longer than the conversation's longest form replaces
//!   it ([`decide`]); the review and export see each conversation once, in that form.
//!
//! Stats per conversation: turns (assistant answers in the longest form), tokens and
//! cost (summed over every capture: each request was paid for), duration (first start
//! to last end).

use sha2::{Digest, Sha256};

use super::normalize::Turn;

/// Prefixes looked up per capture (the longest ones): bounds the D1 query.
pub const MAX_LOOKUP: usize = 64;

fn canonical_turn(t: &Turn) -> String {
    let v = match t {
        Turn::System { text } => serde_json::json!(["s", text.trim()]),
        Turn::User { text } => serde_json::json!(["u", text.trim()]),
        Turn::Assistant { text, calls } => serde_json::json!([
            "a",
            text.trim(),
            calls
                .iter()
                .map(|c| serde_json::json!([c.name, c.arguments]))
                .collect::<Vec<_>>()
        ]),
        Turn::ToolResult { text, .. } => serde_json::json!(["t", text.trim()]),
    };
    v.to_string()
}

/// `hashes[k-1]` = hash of the first `k` turns, scoped to `scope` (the member).
pub fn prefix_hashes(scope: &str, turns: &[Turn]) -> Vec<String> {
    let mut state: [u8; 32] = Sha256::digest(format!("tollbooth-conv\0{scope}")).into();
    let mut out = Vec::with_capacity(turns.len());
    for t in turns {
        let mut h = Sha256::new();
        h.update(state);
        h.update(canonical_turn(t).as_bytes());
        state = h.finalize().into();
        out.push(hex::encode(state));
    }
    out
}

/// The hashes a new capture looks up: its request's prefixes, longest first, at most
/// [`MAX_LOOKUP`]. `(hash, prefix length)`.
pub fn lookup_hashes(hashes: &[String], request_len: usize) -> Vec<(String, usize)> {
    let n = request_len.min(hashes.len());
    (1..=n)
        .rev()
        .take(MAX_LOOKUP)
        .filter_map(|k| hashes.get(k - 1).map(|h| (h.clone(), k)))
        .collect()
}

/// The hashes a stored capture registers: its request's and its transcript's.
pub fn to_register(hashes: &[String], request_len: usize) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(h) = request_len.checked_sub(1).and_then(|i| hashes.get(i)) {
        out.push(h.clone());
    }
    if let Some(h) = hashes.last() {
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    out
}

/// Where a capture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new conversation (its id is the capture's).
    New,
    /// Joins `conversation`; `longest` when its transcript becomes the longest form.
    Join { conversation: String, longest: bool },
}

/// `found` = the conversation of the longest registered prefix and that conversation's
/// longest transcript length.
pub fn decide(found: Option<(String, usize)>, transcript_len: usize) -> Decision {
    match found {
        None => Decision::New,
        Some((conversation, longest_len)) => Decision::Join {
            conversation,
            longest: transcript_len > longest_len,
        },
    }
}

/// Turns of a transcript for the stats: the assistant answers in it.
pub fn turn_count(turns: &[Turn]) -> usize {
    turns
        .iter()
        .filter(|t| matches!(t, Turn::Assistant { .. }))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::normalize::{request_turns, response_turns};
    use serde_json::{json, Value};

    fn transcript(msgs: &[Value], answer: &str) -> (Vec<Turn>, usize) {
        let mut t = request_turns(&json!({ "messages": msgs }));
        let n = t.len();
        t.extend(response_turns(&json!({"choices": [{"message":
            {"role": "assistant", "content": answer}}]})));
        (t, n)
    }

    /// A five-turn chat, replayed as the growing requests a client sends, threads into
    /// one conversation whose longest form is the last capture.
    #[test]
    fn test_five_turns_one_conversation() {
        let mut registry: Vec<(String, String, usize)> = Vec::new(); // hash, conv, len
        let mut longest: std::collections::HashMap<String, usize> = Default::default();
        let mut msgs = vec![json!({"role": "system", "content": "sys"})];
        let mut convs = Vec::new();
        for i in 0..5 {
            msgs.push(json!({"role": "user", "content": format!("question {i}")}));
            let answer = format!("answer {i}");
            let (t, req_len) = transcript(&msgs, &answer);
            let hashes = prefix_hashes("m1", &t);
            let found = lookup_hashes(&hashes, req_len)
                .into_iter()
                .find_map(|(h, _)| {
                    registry
                        .iter()
                        .find(|(rh, _, _)| *rh == h)
                        .map(|(_, c, _)| (c.clone(), longest[c]))
                });
            let conv = match decide(found, t.len()) {
                Decision::New => {
                    let c = format!("conv{i}");
                    longest.insert(c.clone(), t.len());
                    c
                }
                Decision::Join {
                    conversation,
                    longest: l,
                } => {
                    assert!(l, "turn {i} extends the conversation");
                    longest.insert(conversation.clone(), t.len());
                    conversation
                }
            };
            for h in to_register(&hashes, req_len) {
                registry.push((h, conv.clone(), t.len()));
            }
            convs.push(conv);
            // The client sends the answer back (as a string, with other whitespace).
            msgs.push(json!({"role": "assistant", "content": format!(" {answer}\n")}));
        }
        assert!(convs.iter().all(|c| c == "conv0"), "{convs:?}");
        assert_eq!(longest["conv0"], 11);
    }

    #[test]
    fn test_scoped_by_member_and_content() {
        let (t, _) = transcript(&[json!({"role": "user", "content": "hi"})], "yo");
        let a = prefix_hashes("m1", &t);
        let b = prefix_hashes("m2", &t);
        assert_ne!(a, b);
        let (t2, _) = transcript(&[json!({"role": "user", "content": "hello"})], "yo");
        assert_ne!(prefix_hashes("m1", &t2)[0], a[0]);
        // A regenerated answer (same request) joins without replacing the longest form.
        assert_eq!(
            decide(Some(("c".into(), 2)), 2),
            Decision::Join {
                conversation: "c".into(),
                longest: false
            }
        );
        assert_eq!(lookup_hashes(&a, 1), vec![(a[0].clone(), 1)]);
        assert_eq!(to_register(&a, 1), a);
        assert_eq!(turn_count(&t), 1);
    }
}
