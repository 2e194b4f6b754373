//! Mock upstream: one HTTP server that speaks the OpenAI-compatible (chat completions and
//! Responses), Anthropic Messages and Gemini protocols, used in place of real providers by every e2e test, benchmark and the
//! local demo.
//!
//! It is an independent implementation of the provider wire formats (it does not use
//! `tollbooth-core`), so tests against it check the gateway's translation honestly. Every
//! answer is deterministic; this comment is the reference for test writers.
//!
//! # Running it
//!
//! * Binary: `mock-upstream [--addr 127.0.0.1] [--port 0] [--require-key K]... [--model M]...`.
//!   It binds, then prints exactly one line `LISTENING http://HOST:PORT` to stdout and serves
//!   until SIGTERM/SIGINT (graceful: stops accepting, lets in-flight answers finish for up to
//!   5 s; a `hang` request then gets a 503, a hanging stream is aborted). `MOCK_KEYS=k1,k2`
//!   adds required keys like `--require-key`.
//! * In process: [`spawn`]`(`[`MockConfig`]`).await` returns a [`MockHandle`] with
//!   [`MockHandle::addr`], [`MockHandle::base_url`] and [`MockHandle::shutdown`] (dropping
//!   the handle also stops the server).
//!
//! Accepted sockets get `TCP_NODELAY`; every stream event is its own write and flush, so a
//! client sees event *i* before event *i + 1* is produced.
//!
//! # Endpoints
//!
//! | Method & path | Protocol | Key |
//! |---|---|---|
//! | `POST /v1/chat/completions` | OpenAI, JSON or SSE (`"stream": true`) | `Authorization: Bearer K` |
//! | `POST /v1/embeddings` | OpenAI | Bearer |
//! | `POST /v1/rerank` | Jina / Cohere | Bearer |
//! | `GET /v1/models` | OpenAI (Anthropic with `x-api-key`) | Bearer, or `x-api-key` + `anthropic-version` |
//! | `POST /v1/messages` | Anthropic, JSON or SSE (`"stream": true`) | `x-api-key: K` and `anthropic-version` |
//! | `POST /v1/responses` | OpenAI Responses, JSON or typed SSE events (`"stream": true`) | Bearer |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini | `x-goog-api-key: K` or `?key=K` |
//! | `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` | Gemini SSE (without `alt=sse`: a streamed JSON array) | same |
//! | `GET /_mock/health` | 200 `{"status":"ok"}` | none |
//! | `GET /_mock/requests` / `DELETE /_mock/requests` | request log / clear it | none |
//! | `GET /_mock/stats` / `DELETE /_mock/stats` | counts per model string / reset counts and `fail_first` counters | none |
//!
//! Anything else gets a 404 in the OpenAI error shape.
//!
//! # Authentication
//!
//! A missing or empty key is always rejected. When keys are required (`--require-key`,
//! `MOCK_KEYS`, [`MockConfig::require_keys`]) a key outside that set is rejected too; otherwise
//! any non-empty key is accepted. Rejections are the protocol's 401:
//! OpenAI `{"error":{"type":"invalid_request_error","code":"invalid_api_key",..}}`,
//! Anthropic `{"type":"error","error":{"type":"authentication_error",..}}`,
//! Gemini `{"error":{"code":401,"status":"UNAUTHENTICATED",..}}` (real Gemini answers 400/403
//! here; the mock uses 401 so every protocol reports auth failures alike).
//! Anthropic without `anthropic-version` gets 400 `invalid_request_error`.
//! Authentication is checked first, before any directive takes effect.
//!
//! # Behaviour directives
//!
//! Behaviour is chosen per request by directives appended to the model name after `@`, e.g.
//! `gpt-4o-mini@ttft=100,delay=200,chunks=5,usage=0,tools=1` (for Gemini the model is the
//! path segment, percent-decoded). The header `x-mock: ttft=100,delay=200` uses the same
//! syntax (a leading `@` or `name@` is ignored) and wins over the model name directive by
//! directive. A bare flag (`tools`) means `=1`. Unknown directives and unparsable values are
//! ignored.
//!
//! | Directive | Effect |
//! |---|---|
//! | `ttft=MS` | Non-stream: wait MS before the status line. Stream: headers are sent at once, then MS pass before the first event. Also delays `status`/`fail_first` errors. |
//! | `delay=MS` | Wait MS between consecutive content chunks of a stream (default 0). |
//! | `chunks=N` | Number of content chunks (default 3, max 10 000). |
//! | `usage=0\|1\|force` | `0`: no usage anywhere. `1` (default): usage included; OpenAI streams only when `stream_options.include_usage` is true. `force`: OpenAI streams get the usage chunk even without `include_usage`. |
//! | `tools=1` | When the request declares tools, answer with a call to a tool instead of text. |
//! | `tools=once` | As `tools=1`, but only while the conversation holds no tool result (OpenAI `role: tool`, Anthropic `tool_result`, Gemini `functionResponse`, Responses `function_call_output`): an agent calls the tool once and then gets text. |
//! | `status=CODE` | Fail with that status (400..=599) and the protocol's error body; 429 adds `retry-after: 1`. |
//! | `hang=1` | Accept the request and never answer (until the client gives up or the server shuts down). |
//! | `hang_after=N` | Send exactly N content chunks, then hang (stream stays open, no terminator). |
//! | `reset_after=N` | Send exactly N content chunks, then abort the TCP connection with a RST (no terminating chunk). |
//! | `malformed=1` | Stream: an invalid SSE event (truncated JSON) right after the first content chunk, then the stream continues normally. Non-stream: a 200 body that is truncated JSON. |
//! | `fail_first=N` | The first N requests with this exact counter key fail with 500, later ones succeed. The key is the full model string, plus `#` and the `x-mock` header value when that header is present. |
//! | `cached=N` | Report N cached prompt tokens (capped at the prompt tokens). |
//! | `cache_write=N` | Anthropic: report N `cache_creation_input_tokens` (capped at the prompt tokens left after `cached`); `input_tokens` shrinks by as much. |
//! | `dim=N` | Embedding dimension (default: the request's `dimensions`, else 16; max 65 536). |
//! | `echo=1` | The reply text is the last user message instead of `tok{i} `. |
//! | `prompt=N` | Report exactly N prompt tokens, whatever the body says (a provider whose tokenizer counts more than the gateway estimated). |
//! | `usage=body` | Usage on, with the prompt tokens of the **whole request body** (tools, schemas, system, tool-call arguments, media by the per-part constants of docs/billing.md), counted like the gateway's documented estimate ([`text::body_prompt_tokens`]), instead of message words. |
//!
//! For non-stream requests `hang_after`/`reset_after` send the headers (with the full
//! `Content-Length`) and the first half of the body, then hang/reset.
//!
//! # Deterministic answers
//!
//! * **Text.** Content chunk *i* (from 0) is `"tok{i} "`, so with the default 3 chunks the
//!   text is `"tok0 tok1 tok2 "`. With `echo=1` the text is the last user message split into
//!   `min(chunks, chars)` near-equal pieces (at least one piece). The non-stream text is the
//!   concatenation of the stream's pieces.
//! * **Tool call.** With `tools=1` and tools in the request, the call goes to the tool named by
//!   a forced tool choice (OpenAI `tool_choice.function.name`, Anthropic
//!   `tool_choice {"type":"tool","name"}`, Gemini `allowedFunctionNames[0]`) or else the first
//!   declared tool; a tool choice of none (`"none"`, `{"type":"none"}`, mode `NONE`) keeps text.
//!   Arguments are always `{"location":"Paris"}`. Ids are `call_mock_0` (OpenAI and
//!   Responses) and `toolu_mock_0` (Anthropic). Finish reason: `tool_calls` / `tool_use` / Gemini `STOP` with
//!   a `functionCall` part. OpenAI and Anthropic streams split the arguments JSON into
//!   `min(chunks, len)` fragments (each a content chunk); Gemini sends the whole
//!   `functionCall` in one chunk, with `thoughtSignature` `mock-thought-signature`.
//! * **Gemini 3 thought signatures.** A Gemini request whose model turn has a first
//!   `functionCall` part without `thoughtSignature` gets 400 `INVALID_ARGUMENT`, as
//!   Gemini 3 answers (any non-empty signature passes).
//! * **Prompt tokens** P = number of whitespace-separated words in all message text, minimum 1
//!   (or what `prompt=N` / `usage=body` say).
//!   Text is: OpenAI every message `content` (string, or `text` of parts); Anthropic `system`
//!   plus every message `content` (string, `text` blocks, and the content of `tool_result`
//!   blocks); Gemini `systemInstruction` plus every `contents[].parts[].text`. Tool
//!   definitions are not counted. Embeddings: words of all inputs (a token array counts its
//!   length), min 1. Rerank: words of query and documents, min 1.
//! * **Completion tokens** C = number of content chunks actually planned (text pieces or
//!   argument fragments; 1 for a Gemini function call).
//! * **Cached tokens** with `cached=N`: K = min(N, P). OpenAI `prompt_tokens` = P with
//!   `prompt_tokens_details.cached_tokens` = K (the details object only appears when `cached`
//!   is set); Anthropic `input_tokens` = P − K, `cache_read_input_tokens` = K,
//!   `cache_creation_input_tokens` = 0 (always present); Gemini `promptTokenCount` = P,
//!   `cachedContentTokenCount` = K (only when set). So every protocol's total prompt is P.
//! * **Model** in answers is the model string exactly as received (directives included).
//! * **Ids** carry the request's sequence number (`chatcmpl-mock-N`, `msg_mock_N`, Gemini
//!   `responseId` `mock-N`); every protocol response also has an `x-mock-seq: N` header, the
//!   `seq` of its `/_mock/requests` entry.
//!
//! # Protocol details
//!
//! * **OpenAI chat stream:** a role chunk (`delta: {"role":"assistant","content":""}`, or with
//!   the tool call head and `arguments: ""`), the content chunks, a chunk with empty `delta`
//!   and `finish_reason`, then (when usage applies) a chunk with `"choices": []` and `usage`,
//!   then `data: [DONE]`. With `include_usage` every other chunk carries `"usage": null`,
//!   like the real API.
//! * **Anthropic stream:** `message_start` (usage with `output_tokens: 1`),
//!   `content_block_start`, `ping`, `content_block_delta`s (`text_delta` or
//!   `input_json_delta`), `content_block_stop`, `message_delta` (`stop_reason`,
//!   `usage.output_tokens` = C), `message_stop`; each with its `event:` line.
//! * **Responses:** the response object (`resp_mock_N`) with one output item: a
//!   `message` (`msg_mock_N`, one `output_text`), a `function_call` (`fc_mock_N`), or, when
//!   the chosen tool is declared `"type": "custom"`, a `custom_tool_call` (`ctc_mock_N`)
//!   whose `input` is the same text. Tools: the forced `tool_choice.name`, else the first
//!   function or custom tool (hosted tools are ignored); `tool_choice: "none"` keeps text.
//!   Prompt words: `instructions` plus the text of every input item (message content and
//!   call outputs). Usage: `input_tokens` P (`cached_tokens` K), `output_tokens` C;
//!   `usage=0` sends `"usage": null`.
//! * **Responses stream:** `response.created`, `response.in_progress`,
//!   `response.output_item.added`, for a message `response.content_part.added` then one
//!   `response.output_text.delta` per content chunk, `.output_text.done`,
//!   `.content_part.done`; for a call one `response.function_call_arguments.delta` (or
//!   `response.custom_tool_call_input.delta`) per fragment and the `.done`; then
//!   `response.output_item.done` and `response.completed` with the usage. Each event has
//!   its `event:` line and a `sequence_number` counting from 0.
//! * **Gemini stream:** one `data:` line per content chunk, each a full
//!   `GenerateContentResponse`; the last one carries `finishReason: "STOP"` and
//!   `usageMetadata`.
//! * **Embeddings:** unit-length vectors that depend only on (input text, dimension); the same
//!   text always gets the same vector. `encoding_format: "base64"` gives standard base64 of
//!   little-endian f32s.
//! * **Rerank:** score = (distinct lowercase alphanumeric query words found in the document) /
//!   (distinct query words), rounded to 4 decimals; results sorted by score desc, ties by index;
//!   `top_n` truncates; `return_documents` (default false) adds `document: {"text"}` (object
//!   documents are returned as sent). The answer has `results`, `usage.total_tokens` (Jina) and
//!   `meta.billed_units.search_units` (Cohere).
//! * **Malformed JSON request** bodies get the protocol's 400; nothing on the request path
//!   panics.
//!
//! # Introspection
//!
//! `GET /_mock/requests` returns the last 200 requests (oldest first), `/_mock/*` excluded:
//! `{"seq","method","path","query","headers":{lowercase name: value},"model","body"}` where
//! `body` is the parsed JSON (or `null`, with `body_text` holding the raw text when it is not
//! JSON). A streamed (or `hang_after`/`reset_after`) answer adds `stream_end` once its body
//! ends: `completed` (all sent), `cancelled` (the client went away or aborted first),
//! `reset` or `shutdown`. Credentials are included verbatim (`authorization`, `x-api-key`, `x-goog-api-key`
//! and `key=` in `query`) so tests can check which key and which auth style the gateway used.
//! `GET /_mock/stats` returns `{"total": N, "models": {"<model string>": count}}`.

mod behavior;
mod body;
pub mod cli;
mod protocol;
mod server;
mod text;

pub use behavior::{Behavior, UsageMode};
pub use server::{spawn, MockConfig, MockHandle};
