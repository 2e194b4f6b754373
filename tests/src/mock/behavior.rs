//! Parsing of the behaviour directives (`model@k=v,k=v` and the `x-mock` header).

/// Maximum number of content chunks a request may ask for.
const MAX_CHUNKS: usize = 10_000;
/// Maximum embedding dimension a request may ask for.
const MAX_DIM: usize = 65_536;

/// How the usage is reported (`usage=0|1|force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageMode {
    /// `usage=0`: no usage at all.
    Off,
    /// `usage=1` (default): usage as the real API reports it.
    #[default]
    On,
    /// `usage=force`: also in OpenAI streams without `include_usage`.
    Force,
}

/// The behaviour of one request, as chosen by its directives. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// Milliseconds before the status line (non-stream) or the first event (stream).
    pub ttft_ms: u64,
    /// Milliseconds between content chunks.
    pub delay_ms: u64,
    /// Number of content chunks.
    pub chunks: usize,
    /// Usage reporting.
    pub usage: UsageMode,
    /// Answer with a tool call when tools are declared.
    pub tools: bool,
    /// `tools=once`: only while the conversation holds no tool result yet (one agent turn
    /// that calls a tool, then a text answer once the result is back).
    pub tools_once: bool,
    /// Fail with this status.
    pub status: Option<u16>,
    /// Never answer.
    pub hang: bool,
    /// Send this many content chunks, then hang.
    pub hang_after: Option<usize>,
    /// Send this many content chunks, then reset the connection.
    pub reset_after: Option<usize>,
    /// Send invalid data mid-stream.
    pub malformed: bool,
    /// The first N requests with the same counter key fail with 500.
    pub fail_first: Option<u64>,
    /// Cached prompt tokens to report.
    pub cached: Option<u64>,
    /// Anthropic cache-write prompt tokens to report.
    pub cache_write: Option<u64>,
    /// Embedding dimension.
    pub dim: Option<usize>,
    /// Echo the last user message.
    pub echo: bool,
    /// `prompt=N`: report exactly N prompt tokens, whatever the body says.
    pub prompt: Option<u64>,
    /// `usage=body`: report prompt tokens for the whole request body (tools, schemas,
    /// media by per-part constants), counted like the gateway's estimate
    /// ([`super::text::body_prompt_tokens`]) instead of message words.
    pub usage_body: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            ttft_ms: 0,
            delay_ms: 0,
            chunks: 3,
            usage: UsageMode::On,
            tools: false,
            tools_once: false,
            status: None,
            hang: false,
            hang_after: None,
            reset_after: None,
            malformed: false,
            fail_first: None,
            cached: None,
            cache_write: None,
            dim: None,
            echo: false,
            prompt: None,
            usage_body: false,
        }
    }
}

impl Behavior {
    /// Behaviour from a model string and an optional `x-mock` header value; the header's
    /// directives are applied last, so they win.
    pub fn from_request(model: &str, header: Option<&str>) -> Behavior {
        let mut b = Behavior::default();
        if let Some((_, directives)) = model.split_once('@') {
            b.apply(directives);
        }
        if let Some(h) = header {
            let directives = h.split_once('@').map_or(h, |(_, d)| d);
            b.apply(directives);
        }
        b
    }

    /// Applies a comma-separated directive list; unknown or unparsable ones are ignored.
    pub fn apply(&mut self, directives: &str) {
        for item in directives.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = item.split_once('=').unwrap_or((item, "1"));
            self.apply_one(key.trim(), value.trim());
        }
    }

    fn apply_one(&mut self, key: &str, value: &str) {
        let num = value.parse::<u64>().ok();
        let size = value.parse::<usize>().ok();
        let flag = matches!(value, "1" | "true" | "yes" | "on");
        match key {
            "ttft" => set(&mut self.ttft_ms, num),
            "delay" => set(&mut self.delay_ms, num),
            "chunks" => set(&mut self.chunks, size.map(|n| n.min(MAX_CHUNKS))),
            "usage" => match value {
                "0" | "false" | "off" | "no" => self.usage = UsageMode::Off,
                "force" | "2" => self.usage = UsageMode::Force,
                "body" => {
                    self.usage = UsageMode::On;
                    self.usage_body = true;
                }
                _ if flag => self.usage = UsageMode::On,
                _ => {}
            },
            "tools" => {
                self.tools_once = value == "once";
                self.tools = flag || self.tools_once;
            }
            "status" => match value.parse::<u16>() {
                Ok(s) if (400..=599).contains(&s) => self.status = Some(s),
                Ok(s) if s < 400 => self.status = None,
                _ => {}
            },
            "hang" => self.hang = flag,
            "hang_after" => self.hang_after = size.or(self.hang_after),
            "reset_after" => self.reset_after = size.or(self.reset_after),
            "malformed" => self.malformed = flag,
            "fail_first" => self.fail_first = num.or(self.fail_first),
            "cached" => self.cached = num.or(self.cached),
            "cache_write" => self.cache_write = num.or(self.cache_write),
            "dim" => {
                if let Some(d) = size.filter(|d| *d > 0) {
                    self.dim = Some(d.min(MAX_DIM));
                }
            }
            "echo" => self.echo = flag,
            "prompt" => self.prompt = num.or(self.prompt),
            _ => {}
        }
    }

    /// The prompt tokens to report for a chat request whose message words are `words`.
    pub fn prompt_tokens(&self, words: u64, body: &serde_json::Value) -> u64 {
        match (self.prompt, self.usage_body) {
            (Some(n), _) => n,
            (None, true) => super::text::body_prompt_tokens(body),
            (None, false) => words,
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_and_header_merge_header_wins() {
        let b = Behavior::from_request(
            "gpt-4o-mini@ttft=100,delay=200,chunks=5,usage=0,tools",
            Some("delay=7,bogus=3,cached=4"),
        );
        assert_eq!(b.ttft_ms, 100);
        assert_eq!(b.delay_ms, 7);
        assert_eq!(b.chunks, 5);
        assert_eq!(b.usage, UsageMode::Off);
        assert!(b.tools);
        assert_eq!(b.cached, Some(4));
    }

    #[test]
    fn prompt_and_body_usage_directives() {
        let body = serde_json::json!({"messages": [{"role": "user", "content": "two words"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
        let b = Behavior::from_request("m@prompt=12345", None);
        assert_eq!(b.prompt_tokens(2, &body), 12345);
        let b = Behavior::from_request("m@usage=body", None);
        assert_eq!(b.usage, UsageMode::On);
        assert!(b.prompt_tokens(2, &body) > 10, "tools count");
        assert_eq!(Behavior::default().prompt_tokens(2, &body), 2);
    }

    #[test]
    fn bad_values_are_ignored() {
        let b = Behavior::from_request("m@chunks=x,status=200,status=abc,dim=0", None);
        assert_eq!(b, Behavior::default());
        let b = Behavior::from_request("m", Some("@status=429"));
        assert_eq!(b.status, Some(429));
    }
}
