//! The SSE decoder must give the same events for every split of the byte stream.

use tollbooth_core::sse::{self, Decoder, Event};

const OPENAI_CHAT: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,",
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},",
    "\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
    "\"delta\":{\"content\":\"Héllo, 世界 🎉\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],",
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC_MESSAGES: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",",
    "\"content\":[],\"model\":\"claude-sonnet-4\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Привет\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

// Gemini `alt=sse` uses CRLF line endings and no terminating sentinel.
const GEMINI_ALT_SSE: &str = concat!(
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The\"}],\"role\": \"model\"},",
    "\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8},",
    "\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" sky is blue — ✓\"}],",
    "\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": ",
    "{\"promptTokenCount\": 8,\"candidatesTokenCount\": 6,\"totalTokenCount\": 14}}\r\n\r\n",
);

// Keep-alive comments, a BOM, mixed line endings, multi-line data, id/retry, a field
// without colon and a final event without the closing blank line.
const MIXED: &str = concat!(
    "\u{feff}: connected\r\n",
    ": keep-alive\n\n",
    "retry: 3000\r",
    "id: 42\r\n",
    "event: update\r",
    "data: line one\r\n",
    "data:  line two\n",
    "data\r",
    "\r",
    ":ping\r\n\r\n",
    "event: ping\n\n",
    "unknown: field\n",
    "data:{\"x\":1}\n",
    "\n",
    "data: tail without newline",
);

fn all_streams() -> Vec<(&'static str, Vec<u8>)> {
    let crlf_openai = OPENAI_CHAT.replace('\n', "\r\n");
    let cr_anthropic = ANTHROPIC_MESSAGES.replace('\n', "\r");
    let no_final_newline = OPENAI_CHAT.trim_end_matches('\n').to_string();
    vec![
        ("openai", OPENAI_CHAT.as_bytes().to_vec()),
        ("anthropic", ANTHROPIC_MESSAGES.as_bytes().to_vec()),
        ("gemini", GEMINI_ALT_SSE.as_bytes().to_vec()),
        ("mixed", MIXED.as_bytes().to_vec()),
        ("openai-crlf", crlf_openai.into_bytes()),
        ("anthropic-cr", cr_anthropic.into_bytes()),
        ("openai-no-final-newline", no_final_newline.into_bytes()),
    ]
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(decoder.push(chunk));
    }
    events.extend(decoder.finish());
    events
}

/// Deterministic linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn test_expected_events_unsplit() {
    let openai = decode_chunks([OPENAI_CHAT.as_bytes()]);
    assert_eq!(openai.len(), 5);
    assert!(openai[1].data.contains("Héllo, 世界 🎉"));
    assert!(openai[4].is_done());
    assert!(openai.iter().all(|e| e.event.is_none()));

    let anthropic = decode_chunks([ANTHROPIC_MESSAGES.as_bytes()]);
    let names: Vec<_> = anthropic
        .iter()
        .map(|e| e.event.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for event in &anthropic {
        let _: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    }

    let gemini = decode_chunks([GEMINI_ALT_SSE.as_bytes()]);
    assert_eq!(gemini.len(), 2);
    assert!(gemini[1].data.contains("sky is blue — ✓"));
    assert!(!gemini[1].data.contains('\r'));

    let mixed = decode_chunks([MIXED.as_bytes()]);
    assert_eq!(
        mixed,
        vec![
            Event {
                event: Some("update".into()),
                data: "line one\n line two\n".into(),
                id: Some("42".into()),
                retry: Some(3000),
            },
            Event::data("{\"x\":1}"),
            Event::data("tail without newline"),
        ]
    );
}

#[test]
fn test_every_single_split_point() {
    for (name, stream) in all_streams() {
        let expected = decode_chunks([stream.as_slice()]);
        assert!(!expected.is_empty(), "{name}");
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(
                decode_chunks([a, b]),
                expected,
                "{name}: split at byte {at}"
            );
        }
    }
}

#[test]
fn test_every_two_split_points_on_small_streams() {
    // Exhaustive pairs of cut points for the stream with the most edge cases.
    let stream = MIXED.as_bytes();
    let expected = decode_chunks([stream]);
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let chunks = [&stream[..i], &stream[i..j], &stream[j..]];
            assert_eq!(decode_chunks(chunks), expected, "cuts at {i},{j}");
        }
    }
}

#[test]
fn test_byte_by_byte() {
    for (name, stream) in all_streams() {
        let expected = decode_chunks([stream.as_slice()]);
        assert_eq!(
            decode_chunks(stream.chunks(1)),
            expected,
            "{name}: byte by byte"
        );
    }
}

#[test]
fn test_random_multi_splits_fixed_seed() {
    let mut rng = Lcg(0x5EED_F55E);
    for (name, stream) in all_streams() {
        let expected = decode_chunks([stream.as_slice()]);
        for round in 0..300 {
            let mut cuts: Vec<usize> = (0..(rng.next() % 12))
                .map(|_| (rng.next() as usize) % (stream.len() + 1))
                .collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&stream[start..cut]);
                start = cut;
            }
            chunks.push(&stream[start..]);
            assert_eq!(
                decode_chunks(chunks.iter().copied()),
                expected,
                "{name}: round {round}"
            );
        }
    }
}

#[test]
fn test_crlf_split_across_pushes_is_one_line_ending() {
    let mut decoder = Decoder::new();
    let mut events = decoder.push(b"data: a\r");
    events.extend(decoder.push(b"\ndata: b\r"));
    events.extend(decoder.push(b"\n\r"));
    events.extend(decoder.push(b"\n"));
    assert_eq!(events, vec![Event::data("a\nb")]);
    assert!(decoder.finish().is_empty());
}

#[test]
fn test_utf8_split_inside_character() {
    let text = "data: 世🎉\n\n".as_bytes();
    // Cut inside the 3-byte and the 4-byte sequences.
    for at in 7..13 {
        let (a, b) = text.split_at(at);
        assert_eq!(decode_chunks([a, b]), vec![Event::data("世🎉")], "at {at}");
    }
}

#[test]
fn test_decoder_reusable_after_finish() {
    let mut decoder = Decoder::new();
    decoder.push(b"data: first");
    assert_eq!(decoder.finish(), vec![Event::data("first")]);
    // A BOM is stripped again at the start of the next stream.
    let mut events = decoder.push(b"\xEF\xBB\xBFdata: second\n\n");
    events.extend(decoder.finish());
    assert_eq!(events, vec![Event::data("second")]);
}

#[test]
fn test_encode_decode_round_trip() {
    let cases = vec![
        Event::data("{\"a\":1}"),
        Event::data(""),
        Event::data("multi\nline\n\ndata"),
        Event::data("  leading spaces and trailing\n"),
        Event::data(": looks like a comment"),
        Event::named("content_block_delta", "{\"type\":\"content_block_delta\"}"),
        Event {
            event: Some("update".into()),
            data: "Привет 🎉".into(),
            id: Some("evt-9".into()),
            retry: Some(2500),
        },
    ];
    let mut wire = String::new();
    for event in &cases {
        let encoded = sse::encode(event);
        assert_eq!(decode_chunks([encoded.as_bytes()]), vec![event.clone()]);
        wire.push_str(&encoded);
    }
    wire.push_str(sse::KEEP_ALIVE);
    wire.push_str(&sse::data("{\"b\":2}"));
    wire.push_str(&sse::named("ping", "{}"));
    wire.push_str(sse::done());
    let decoded = decode_chunks(wire.as_bytes().chunks(7));
    let mut expected = cases.clone();
    expected.push(Event::data("{\"b\":2}"));
    expected.push(Event::named("ping", "{}"));
    expected.push(Event::data("[DONE]"));
    assert_eq!(decoded, expected);
    assert!(decoded.last().unwrap().is_done());
}

#[test]
fn test_cr_in_data_normalised_by_encoder() {
    let event = Event::data("a\r\nb\rc");
    let decoded = decode_chunks([sse::encode(&event).as_bytes()]);
    assert_eq!(decoded, vec![Event::data("a\nb\nc")]);
}

#[test]
fn test_oversized_event_dropped_at_every_split() {
    let stream = b"data: ok1\n\ndata: this line is far too long for the limit\n\ndata: ok2\n\n";
    for at in 0..=stream.len() {
        let mut decoder = Decoder::with_max_event_bytes(24);
        let (a, b) = stream.split_at(at);
        let mut events = decoder.push(a);
        events.extend(decoder.push(b));
        events.extend(decoder.finish());
        assert_eq!(
            events,
            vec![Event::data("ok1"), Event::data("ok2")],
            "at {at}"
        );
        assert_eq!(decoder.dropped_events(), 1);
    }
}
