//! Server-sent events: a byte-level decoder and an encoder.
//!
//! The decoder never assumes one network chunk is one line or one event: bytes are fed in
//! with [`Decoder::push`] in whatever pieces the network delivered, and the same events come
//! out for every possible split of the stream (a CRLF split across two reads, a UTF-8
//! character split across two reads, a BOM split across reads, ...).
//!
//! Parsing follows the WHATWG "event stream interpretation" rules with two deliberate
//! leniencies for upstream LLM providers:
//! - [`Decoder::finish`] dispatches a final event that lacks the closing blank line (the
//!   spec discards it; providers often omit the last newline).
//! - invalid UTF-8 inside a line is replaced with U+FFFD instead of failing the stream.
//!
//! Memory is bounded by [`Decoder::with_max_event_bytes`]: an event (its pending line plus
//! the data, event and id fields accumulated so far) larger than the limit is **dropped**:
//! the decoder discards input up to the blank line that ends that event, counts it in
//! [`Decoder::dropped_events`] and carries on with the next event. Callers that must not
//! lose events (e.g. billing-relevant final chunks) check that counter and treat a non-zero
//! value as an upstream error.

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// The data payload OpenAI-style streams end with.
pub const DONE_DATA: &str = "[DONE]";

/// The encoded `data: [DONE]` sentinel event, ready to write to the wire.
pub const DONE: &str = "data: [DONE]\n\n";

/// A comment line clients ignore; used as a keep-alive while waiting for the upstream.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// Default bound on one event's size: generous because some providers (Gemini image
/// output) put multi-megabyte base64 blobs in a single event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Event {
    /// An unnamed event carrying `data`.
    pub fn data(data: impl Into<String>) -> Self {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    /// A named event (`event: name`) carrying `data`.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Event {
            event: Some(event.into()),
            data: data.into(),
            ..Event::default()
        }
    }

    /// Whether this is the OpenAI `data: [DONE]` end-of-stream sentinel.
    pub fn is_done(&self) -> bool {
        self.data.trim() == DONE_DATA
    }
}

/// Incremental SSE decoder. See the module docs for the rules and the size bound.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_event_bytes: usize,
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous byte was a CR: a following LF belongs to the same line ending.
    after_cr: bool,
    /// Still at the start of the stream, where a BOM may be stripped.
    at_stream_start: bool,
    /// Inside an oversized event: ignore everything up to the next blank line.
    discarding: bool,
    /// Length of the current line while discarding (only zero vs non-zero matters).
    discard_line_len: usize,
    pending: PendingEvent,
    last_event_id: Option<String>,
    retry: Option<u64>,
    dropped_events: u64,
}

#[derive(Debug, Clone, Default)]
struct PendingEvent {
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
}

impl PendingEvent {
    fn size(&self) -> usize {
        self.data
            .len()
            .saturating_add(self.event.as_ref().map_or(0, String::len))
            .saturating_add(self.id.as_ref().map_or(0, String::len))
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that drops events larger than `max_event_bytes` (see the module docs).
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Decoder {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            at_stream_start: true,
            discarding: false,
            discard_line_len: 0,
            pending: PendingEvent::default(),
            last_event_id: None,
            retry: None,
            dropped_events: 0,
        }
    }

    /// Feeds the next bytes of the stream; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if let Some((b'\n', tail)) = rest.split_first() {
                    rest = tail;
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(pos) => {
                    let (content, tail) = rest.split_at(pos);
                    self.append(content);
                    if let Some((&terminator, tail)) = tail.split_first() {
                        self.after_cr = terminator == b'\r';
                        rest = tail;
                    } else {
                        rest = &[];
                    }
                    self.end_line(&mut out);
                }
                None => {
                    self.append(rest);
                    rest = &[];
                }
            }
        }
        out
    }

    /// Ends the stream: a final unterminated line and a final event without the closing
    /// blank line are dispatched. The decoder is then reset for a new stream (the size
    /// limit is kept, the dropped-events counter too).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.line.is_empty() || (self.discarding && self.discard_line_len > 0) {
            self.end_line(&mut out);
        }
        if !self.discarding {
            self.dispatch(&mut out);
        }
        let dropped = self.dropped_events;
        *self = Self::with_max_event_bytes(self.max_event_bytes);
        self.dropped_events = dropped;
        out
    }

    /// How many oversized events were dropped so far.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// The last `id:` seen on the stream (persists across events, as in the spec); what a
    /// reconnecting client would send as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The last valid `retry:` seen on the stream, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    fn append(&mut self, content: &[u8]) {
        if content.is_empty() {
            return;
        }
        if self.discarding {
            self.discard_line_len = self.discard_line_len.saturating_add(content.len());
            return;
        }
        let size = self
            .line
            .len()
            .saturating_add(content.len())
            .saturating_add(self.pending.size());
        if size > self.max_event_bytes {
            self.line.clear();
            self.pending = PendingEvent::default();
            self.discarding = true;
            self.discard_line_len = content.len();
            self.at_stream_start = false;
            self.dropped_events = self.dropped_events.saturating_add(1);
            return;
        }
        self.line.extend_from_slice(content);
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        if self.discarding {
            if self.discard_line_len == 0 {
                // The blank line that ends the oversized event.
                self.discarding = false;
            }
            self.discard_line_len = 0;
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        if self.at_stream_start {
            self.at_stream_start = false;
            if line.starts_with(BOM) {
                line.drain(..BOM.len());
            }
        }
        self.process_line(&line, out);
        // Reuse the allocation for the next line.
        line.clear();
        self.line = line;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.first() == Some(&b':') {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (field, rest) = line.split_at(colon);
                let value = rest.get(1..).unwrap_or_default();
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (field, value)
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.pending.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.has_data = true;
                self.pending.data.push_str(&String::from_utf8_lossy(value));
            }
            b"event" => {
                self.pending.event = if value.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(value).into_owned())
                };
            }
            // The spec ignores ids containing NUL.
            b"id" if !value.contains(&0) => {
                let id = String::from_utf8_lossy(value).into_owned();
                self.last_event_id = Some(id.clone());
                self.pending.id = Some(id);
            }
            // Digits only; a value too large for u64 is ignored too.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    self.retry = Some(ms);
                    self.pending.retry = Some(ms);
                }
            }
            _ => {} // unknown fields are ignored
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let pending = std::mem::take(&mut self.pending);
        if pending.has_data {
            out.push(Event {
                event: pending.event,
                data: pending.data,
                id: pending.id,
                retry: pending.retry,
            });
        }
    }
}

/// Encodes one event for the wire, ending with the blank line that dispatches it.
///
/// Multi-line data becomes several `data:` lines (`\r\n`, `\r` and `\n` in the data all
/// count as line breaks, so they decode back as `\n`). CR and LF in `event` and `id` would
/// break the framing and are removed. An event always carries at least one `data:` line,
/// since the decoder does not dispatch events without data.
pub fn encode(event: &Event) -> String {
    let mut out = String::with_capacity(event.data.len().saturating_add(32));
    if let Some(name) = &event.event {
        out.push_str("event: ");
        push_single_line(&mut out, name);
        out.push('\n');
    }
    if let Some(id) = &event.id {
        out.push_str("id: ");
        push_single_line(&mut out, id);
        out.push('\n');
    }
    if let Some(retry) = event.retry {
        out.push_str("retry: ");
        out.push_str(&retry.to_string());
        out.push('\n');
    }
    push_data_lines(&mut out, &event.data);
    out.push('\n');
    out
}

/// Encodes an unnamed event whose data is `payload` (typically one JSON document).
pub fn data(payload: &str) -> String {
    let mut out = String::with_capacity(payload.len().saturating_add(8));
    push_data_lines(&mut out, payload);
    out.push('\n');
    out
}

/// Encodes a named event (`event: name` + data), the Anthropic Messages stream shape.
pub fn named(event: &str, payload: &str) -> String {
    let mut out = String::with_capacity(payload.len().saturating_add(event.len() + 16));
    out.push_str("event: ");
    push_single_line(&mut out, event);
    out.push('\n');
    push_data_lines(&mut out, payload);
    out.push('\n');
    out
}

/// The `data: [DONE]` sentinel that ends OpenAI-style streams.
pub fn done() -> &'static str {
    DONE
}

/// A comment line (ignored by clients); line breaks in `text` are replaced by spaces.
pub fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len().saturating_add(4));
    out.push_str(": ");
    out.extend(
        text.chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
    );
    out.push_str("\n\n");
    out
}

fn push_single_line(out: &mut String, value: &str) {
    out.extend(value.chars().filter(|&c| c != '\r' && c != '\n'));
}

fn push_data_lines(out: &mut String, data: &str) {
    let mut rest = data;
    loop {
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(pos) => {
                let (line, tail) = rest.split_at(pos);
                let skip = if tail.starts_with("\r\n") { 2 } else { 1 };
                (line, tail.get(skip..))
            }
            None => (rest, None),
        };
        if line.is_empty() {
            out.push_str("data:\n");
        } else {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        match next {
            Some(tail) => rest = tail,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Event> {
        let mut d = Decoder::new();
        let mut events = d.push(input);
        events.extend(d.finish());
        events
    }

    #[test]
    fn test_basic_fields() {
        let events = decode_all(b"event: e\nid: 7\nretry: 150\ndata: a\ndata:b\n\n");
        assert_eq!(
            events,
            vec![Event {
                event: Some("e".into()),
                data: "a\nb".into(),
                id: Some("7".into()),
                retry: Some(150),
            }]
        );
    }

    #[test]
    fn test_field_without_colon_and_empty_data() {
        // `data` alone is a data field with an empty value.
        let events = decode_all(b"data\n\ndata:\n\n");
        assert_eq!(events, vec![Event::data(""), Event::data("")]);
    }

    #[test]
    fn test_only_one_leading_space_stripped() {
        let events = decode_all(b"data:  two\n\n");
        assert_eq!(events, vec![Event::data(" two")]);
    }

    #[test]
    fn test_events_without_data_not_dispatched() {
        let mut d = Decoder::new();
        let events = d.push(b"event: ping\n\nid: 3\n\nretry: 10\n\n");
        assert!(events.is_empty());
        assert_eq!(d.last_event_id(), Some("3"));
        assert_eq!(d.retry(), Some(10));
    }

    #[test]
    fn test_bad_retry_ignored() {
        let events = decode_all(b"retry: 1x\ndata: a\n\nretry: -1\ndata: b\n\n");
        assert!(events.iter().all(|e| e.retry.is_none()));
    }

    #[test]
    fn test_bom_only_at_start() {
        let events = decode_all(b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n");
        assert_eq!(
            events.len(),
            1,
            "second line's field name is BOM+data: unknown"
        );
        assert_eq!(events[0].data, "a");
    }

    #[test]
    fn test_finish_dispatches_unterminated_event() {
        let mut d = Decoder::new();
        assert!(d.push(b"data: a\ndata: b").is_empty());
        assert_eq!(d.finish(), vec![Event::data("a\nb")]);
    }

    #[test]
    fn test_oversized_event_dropped_and_stream_continues() {
        let mut d = Decoder::with_max_event_bytes(16);
        let mut events = d.push(b"data: small\n\ndata: 0123456789abcdefghij\ndata: x\n");
        events.extend(d.push(b"\ndata: next\n\n"));
        assert_eq!(events, vec![Event::data("small"), Event::data("next")]);
        assert_eq!(d.dropped_events(), 1);
    }

    #[test]
    fn test_oversized_by_accumulated_lines() {
        let mut d = Decoder::with_max_event_bytes(20);
        let events = d.push(b"data: 0123456789\ndata: 0123456789\ndata: z\n\ndata: ok\n\n");
        assert_eq!(events, vec![Event::data("ok")]);
        assert_eq!(d.dropped_events(), 1);
    }

    #[test]
    fn test_encode_shapes() {
        assert_eq!(data("{}"), "data: {}\n\n");
        assert_eq!(named("ping", "{}"), "event: ping\ndata: {}\n\n");
        assert_eq!(done(), "data: [DONE]\n\n");
        assert_eq!(
            encode(&Event {
                event: Some("a\nb".into()),
                data: "x\r\ny\n".into(),
                id: Some("1".into()),
                retry: Some(5),
            }),
            "event: ab\nid: 1\nretry: 5\ndata: x\ndata: y\ndata:\n\n"
        );
        assert_eq!(comment("hi\nthere"), ": hi there\n\n");
    }
}
