//! The core's CPU per request on the edge hot path (issue 11 §6): the auth decision, the
//! translation of a 100-chunk stream and the metering arithmetic, each and together.
//!
//! `make bench-core` (or `cargo bench -p tollbooth-core --bench hot_path`). Criterion
//! reports the time per iteration; one iteration is one request's worth of work, so the
//! figures read directly as µs per request. Native code: the worker runs the same code
//! as wasm, typically 1.3–2× slower (docs/benchmarks.md).

// Bench code, like tests: a broken fixture should stop the run loudly.
#![allow(clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Value};
use tollbooth_core::auth::{bearer_token, ApiKey};
use tollbooth_core::billing::{
    bill, charge_in_unit, cost_micros, estimate_body, AllowanceUnit, Ending, Observed,
    OutputLimits, Price, ReservationEstimate,
};
use tollbooth_core::catalogue::{model_allowed, ProviderKind};
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::sse;
use tollbooth_core::translate::hub::{
    chunk_output, wire_bytes, HubDecoder, HubEncoder, Ingress, Output,
};
use tollbooth_core::usage::Usage;

const CHUNKS: usize = 100;
const NOW_S: u64 = 1_780_000_000;

/// A key, its `Authorization` header and its stored record as KV holds it (JSON text).
struct AuthFixture {
    header: String,
    record_json: String,
    record: KeyRecord,
}

fn auth_fixture() -> AuthFixture {
    let key = ApiKey::generate(&[42u8; 32]);
    let record_json = json!({
        "public_id": key.public_id(),
        "secret_hash": key.secret_hash(),
        "member_id": "member-0001",
        "plan_id": "pro",
        "status": "active",
        "expires_at": NOW_S + 86_400,
        "allowed_models": ["gpt-4o-mini", "claude-*", "bench"],
        "rpm": 600,
        "version": 7
    })
    .to_string();
    let record = serde_json::from_str(&record_json).unwrap_or_else(|e| panic!("record: {e}"));
    AuthFixture {
        header: format!("Bearer {}", key.expose()),
        record_json,
        record,
    }
}

/// The auth decision: parse the bearer key, read the stored record (`cold`: from its
/// JSON text, as on an isolate-cache miss; otherwise the cached record), check the
/// secret in constant time, status and expiry, then the key's model list.
fn auth_decision(f: &AuthFixture, cold: bool) -> bool {
    let Some(token) = bearer_token(&f.header) else {
        return false;
    };
    let Ok(key) = ApiKey::parse(token) else {
        return false;
    };
    let parsed;
    let record = if cold {
        match serde_json::from_str::<KeyRecord>(&f.record_json) {
            Ok(r) => {
                parsed = r;
                &parsed
            }
            Err(_) => return false,
        }
    } else {
        &f.record
    };
    if record.public_id != key.public_id() || record.check(key.secret(), NOW_S).is_err() {
        return false;
    }
    record
        .allowed_models
        .as_deref()
        .is_none_or(|m| model_allowed(m, "bench"))
}

/// An OpenAI upstream's SSE body of `CHUNKS` content chunks, a finish chunk, a usage
/// chunk and `[DONE]`, one network read per event (the worst case for per-read work).
fn upstream_reads() -> Vec<Vec<u8>> {
    let mut reads = Vec::with_capacity(CHUNKS + 3);
    let base = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": NOW_S,
               "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    reads.push(
        sse::data(&base(json!({"role": "assistant", "content": ""}), Value::Null).to_string())
            .into_bytes(),
    );
    for i in 0..CHUNKS {
        let text = format!(" word{i} and some more text,");
        reads
            .push(sse::data(&base(json!({"content": text}), Value::Null).to_string()).into_bytes());
    }
    reads.push(sse::data(&base(json!({}), json!("stop")).to_string()).into_bytes());
    let usage = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": NOW_S,
        "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": 42, "completion_tokens": 700, "total_tokens": 742}});
    reads.push(sse::data(&usage.to_string()).into_bytes());
    reads.push(sse::done().as_bytes().to_vec());
    reads
}

/// One stream through the hub: decode every read, count the output for metering,
/// encode for the caller's protocol and produce the wire bytes. Returns the bytes
/// written and the usage (so nothing is optimised away).
fn translate_stream(reads: &[Vec<u8>], ingress: Ingress) -> (usize, Output, Option<Usage>) {
    let mut decoder = HubDecoder::new(
        ProviderKind::Openai,
        "chatcmpl-bench",
        NOW_S,
        "bench",
        false,
    );
    let mut encoder = HubEncoder::new(ingress, "bench", "msg_bench", true, false);
    let verbatim = encoder.is_verbatim();
    let mut out = Output::default();
    let mut events = Vec::new();
    let mut written = 0usize;
    let mut step = |decoded: tollbooth_core::translate::hub::Decoded,
                    encoder: &mut HubEncoder,
                    events: &mut Vec<sse::Event>| {
        for c in &decoded.chunks {
            out.merge(chunk_output(c));
        }
        encoder.encode(decoded, events);
        let n = wire_bytes(events, verbatim).len();
        events.clear();
        n
    };
    for r in reads {
        let d = decoder.push(r);
        written += step(d, &mut encoder, &mut events);
    }
    let d = decoder.finish();
    written += step(d, &mut encoder, &mut events);
    encoder.finish(&mut events);
    written += wire_bytes(&events, verbatim).len();
    (written, out, decoder.usage())
}

fn request_body() -> Vec<u8> {
    json!({
        "model": "bench",
        "stream": true,
        "max_tokens": 1024,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
            {"role": "user", "content": "Summarise the following paragraph in two sentences: the quick brown fox jumps over the lazy dog while the cat watches from the windowsill, unimpressed."},
            {"role": "assistant", "content": "A fox jumps over a dog. A cat watches, unimpressed."},
            {"role": "user", "content": "Now in French, please."}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}}]
    })
    .to_string()
    .into_bytes()
}

const PRICE: Price = Price {
    input_per_mtok: 150_000,
    output_per_mtok: 600_000,
    cached_input_per_mtok: Some(75_000),
    cache_write_per_mtok: None,
    per_request: 10,
};

/// Metering: the reservation (body estimate, output cap, the amount in each allowance
/// unit) and the settlement (the bill from what was observed, its cost and charges).
/// `body` is the parsed request, as the pipeline has it once.
fn metering(body: &Value, body_len: u64, observed: &Observed) -> u64 {
    let limits = OutputLimits {
        max_output_tokens: Some(16_384),
        ..OutputLimits::default()
    };
    let Some(est) = estimate_body(body, body_len).bounded_by(Some(128_000)) else {
        return 0;
    };
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    let reserve = ReservationEstimate::new(est.tokens, max_tokens, &limits);
    let worst = ReservationEstimate::new(est.worst, max_tokens, &limits);
    let mut total = 0u64;
    for unit in [
        AllowanceUnit::Money,
        AllowanceUnit::Tokens,
        AllowanceUnit::Requests,
        AllowanceUnit::Characters,
    ] {
        total = total
            .wrapping_add(reserve.in_unit(unit, &PRICE))
            .wrapping_add(worst.in_unit(unit, &PRICE));
    }
    let b = bill(&reserve, observed);
    let cost = cost_micros(&PRICE, &b.usage);
    for unit in [
        AllowanceUnit::Money,
        AllowanceUnit::Tokens,
        AllowanceUnit::Characters,
    ] {
        total = total.wrapping_add(charge_in_unit(unit, &b.usage, b.output_chars, cost));
    }
    total
}

fn observed() -> Observed {
    Observed {
        ending: Ending::Completed,
        usage: Some(Usage {
            input_tokens: 42,
            output_tokens: 700,
            cached_input_tokens: 10,
            ..Usage::default()
        }),
        output_chars: 2_900,
        output_tokens_est: 700,
    }
}

fn benches(c: &mut Criterion) {
    let auth = auth_fixture();
    assert!(
        auth_decision(&auth, true) && auth_decision(&auth, false),
        "the fixture key must pass"
    );
    let reads = upstream_reads();
    let (written, out, usage) = translate_stream(&reads, Ingress::OpenAiChat);
    assert!(
        written > 0 && out.chars > 0 && usage.is_some(),
        "the stream must translate"
    );
    let body_bytes = request_body();
    let observed = observed();

    let mut g = c.benchmark_group("auth");
    g.bench_function("decision, cached record", |b| {
        b.iter(|| auth_decision(black_box(&auth), false))
    });
    g.bench_function("decision, record parsed from KV text", |b| {
        b.iter(|| auth_decision(black_box(&auth), true))
    });
    g.finish();

    let mut g = c.benchmark_group("stream_100_chunks");
    g.bench_function("openai upstream -> openai caller", |b| {
        b.iter(|| translate_stream(black_box(&reads), Ingress::OpenAiChat))
    });
    g.bench_function("openai upstream -> anthropic caller", |b| {
        b.iter(|| translate_stream(black_box(&reads), Ingress::AnthropicMessages))
    });
    g.finish();

    let mut g = c.benchmark_group("metering");
    let parsed: Value = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
    g.bench_function("reserve + settle arithmetic", |b| {
        b.iter(|| {
            metering(
                black_box(&parsed),
                body_bytes.len() as u64,
                black_box(&observed),
            )
        })
    });
    g.bench_function("body parse + reserve + settle", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&body_bytes)).unwrap_or(Value::Null);
            metering(&v, body_bytes.len() as u64, &observed)
        })
    });
    g.finish();

    // One whole streamed request's core work: auth (cache miss), body parse, reservation,
    // 100 chunks translated and counted, settlement.
    let mut g = c.benchmark_group("request");
    g.bench_function("auth + body + meter + 100-chunk stream", |b| {
        b.iter_batched(
            || (),
            |()| {
                let ok = auth_decision(&auth, true);
                let v: Value = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
                let (n, _, _) = translate_stream(&reads, Ingress::OpenAiChat);
                (ok, metering(&v, body_bytes.len() as u64, &observed), n)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
