//! `POST /v1/chat/completions` and `POST /v1/messages`.
//!
//! Everything goes through the hub format (OpenAI chat): Anthropic ingress is translated
//! to it, the upstream's answer is decoded into hub chunks ([`ChatDecoder`]) and the
//! egress encodes them in the caller's protocol ([`Egress`]).
//!
//! Retry and fallback happen only before the response is committed: for a stream the
//! first upstream event is read (peeked) before the 200 goes out. After that, an
//! upstream failure reaches the client as an error event. The rest of a stream is
//! pumped inside `ctx.wait_until`, so it runs to the end (and metering settles) even
//! when the client goes away; the response body is the receiving end of a channel.

use std::rc::Rc;

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::Value;
use tollbooth_core::catalogue::{Catalogue, ProviderKind, StreamMode};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::routing::{
    counts_against_health, fallback_order, is_retryable, weighted_order, AttemptFailure,
    OpenBreakers,
};
use tollbooth_core::sse;
use tollbooth_core::translate::anthropic as tan;
use tollbooth_core::translate::stream_convert::{response_to_chunks, ChunkAggregator};
use worker::{AbortController, ByteStream, Context, Delay, Env, Headers, Response};

use super::{json_response, parse_body, require_model, resolve_allowed, ReqCtx, Shape};
use crate::breakers;
use crate::config::Config;
use crate::metering::{self, MeterRequest, Outcome, Reservation};
use crate::upstream::{self, ChatDecoder};
use crate::util::{clock_ms, now_ms, now_s, random_u64};

/// After the client disconnects, keep reading the upstream for its usage at most this much.
const DRAIN_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// The candidates for one request, in the order to try them: a weighted order over
/// deployments, and within each a weighted order over its credentials with open breakers
/// last. Returns (target index, credential index).
fn candidate_order(
    targets: &[tollbooth_core::catalogue::Target<'_>],
    config: &Config,
) -> Vec<(usize, usize)> {
    let now = now_ms();
    let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
    let mut out = Vec::new();
    for ti in weighted_order(&weights, random_u64()) {
        let Some(t) = targets.get(ti) else { continue };
        let creds = &t.provider.credentials;
        let cw: Vec<u32> = creds.iter().map(|c| c.weight).collect();
        let available: Vec<bool> = creds
            .iter()
            .map(|c| {
                breakers::allows(
                    &breakers::breaker_key(&t.provider.id, &c.id),
                    now,
                    &config.breaker,
                )
            })
            .collect();
        for ci in fallback_order(&cw, &available, random_u64(), OpenBreakers::Last) {
            out.push((ti, ci));
        }
    }
    // Healthy credentials of every deployment before any open breaker.
    out.sort_by_key(|&(ti, ci)| {
        targets
            .get(ti)
            .and_then(|t| t.provider.credentials.get(ci).map(|c| (t, c)))
            .is_some_and(|(t, c)| {
                !breakers::allows(
                    &breakers::breaker_key(&t.provider.id, &c.id),
                    now,
                    &config.breaker,
                )
            })
    });
    out
}

/// Awaits `fut` for at most `ms`; `None` on timeout.
async fn within<F: std::future::Future>(fut: F, ms: u64) -> Option<F::Output> {
    let timeout = Delay::from(std::time::Duration::from_millis(ms));
    futures_util::pin_mut!(fut);
    match select(fut, timeout).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Encodes hub chunks for the caller.
enum Egress {
    OpenAi {
        wants_usage: bool,
        model: String,
    },
    Anthropic(Box<tan::OpenAiToAnthropicStream>),
    /// `/v1/messages` against an Anthropic upstream: the upstream's own events are
    /// forwarded (only `message.model` rewritten), so thinking signatures, cache usage
    /// and unknown event types reach the client unchanged.
    AnthropicRaw {
        model: String,
    },
}

impl Egress {
    fn chunk(&mut self, mut c: oa::ChatCompletionChunk, out: &mut String) {
        match self {
            Egress::OpenAi { wants_usage, model } => {
                if !*wants_usage {
                    if c.choices.is_empty() && c.usage.is_some() {
                        return;
                    }
                    c.usage = None;
                }
                c.model.clone_from(model);
                if let Ok(s) = serde_json::to_string(&c) {
                    out.push_str(&sse::data(&s));
                }
            }
            Egress::Anthropic(t) => {
                for ev in t.on_event(c) {
                    push_anthropic(&ev, out);
                }
            }
            // Raw events are forwarded by `raw`.
            Egress::AnthropicRaw { .. } => {}
        }
    }

    fn is_raw(&self) -> bool {
        matches!(self, Egress::AnthropicRaw { .. })
    }

    /// Forwards one upstream Anthropic event as is (raw mode only).
    fn raw(&mut self, ev: &sse::Event, out: &mut String) {
        let Egress::AnthropicRaw { model } = self else {
            return;
        };
        let mut ev = ev.clone();
        if ev.event.as_deref() == Some("message_start") {
            if let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) {
                if let Some(m) = v.get_mut("message").and_then(Value::as_object_mut) {
                    m.insert("model".into(), Value::String(model.clone()));
                }
                ev.data = v.to_string();
            }
        }
        out.push_str(&sse::encode(&ev));
    }

    fn error(&mut self, err: &GatewayError, out: &mut String) {
        match self {
            Egress::OpenAi { .. } => out.push_str(&sse::data(&err.openai_body().to_string())),
            Egress::Anthropic(t) => {
                let body = oa::ErrorBody {
                    message: err.safe_message(),
                    ..oa::ErrorResponse::new(err.openai_type(), err.safe_message()).error
                };
                for ev in t.on_error(&body) {
                    push_anthropic(&ev, out);
                }
            }
            Egress::AnthropicRaw { .. } => {
                out.push_str(&sse::named("error", &err.anthropic_body().to_string()));
            }
        }
    }

    fn finish(&mut self, out: &mut String) {
        match self {
            Egress::OpenAi { .. } => out.push_str(sse::done()),
            Egress::Anthropic(t) => {
                for ev in t.finish() {
                    push_anthropic(&ev, out);
                }
            }
            // The upstream's own `message_stop` was forwarded.
            Egress::AnthropicRaw { .. } => {}
        }
    }
}

fn push_anthropic(ev: &an::StreamEvent, out: &mut String) {
    if let Ok(e) = ev.to_sse() {
        out.push_str(&sse::encode(&e));
    }
}

/// Characters of generated text in a chunk (estimate basis when no usage comes).
fn chunk_chars(c: &oa::ChatCompletionChunk) -> u64 {
    let mut n = 0usize;
    for ch in &c.choices {
        n += ch.delta.content.as_deref().map_or(0, |s| s.chars().count());
        n += ch
            .delta
            .reasoning_content
            .as_deref()
            .map_or(0, |s| s.chars().count());
        if let Some(tc) = &ch.delta.tool_calls {
            for t in tc {
                n += t
                    .function
                    .as_ref()
                    .and_then(|f| f.arguments.as_deref())
                    .map_or(0, |s| s.chars().count());
            }
        }
    }
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What the client asked for, in the hub format.
struct ChatJob {
    shape: Shape,
    /// The client's Anthropic body, forwarded as is to Anthropic upstreams.
    raw: Option<Value>,
    client_model: String,
    client_stream: bool,
    hub: oa::ChatCompletionRequest,
}

fn parse_job(body: &[u8], shape: Shape) -> Result<ChatJob, GatewayError> {
    match shape {
        Shape::OpenAi => {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
            })?;
            require_model(&value)?;
            if !value.get("messages").is_some_and(Value::is_array) {
                return Err(GatewayError::invalid_param(
                    "`messages` is required and must be an array.",
                    "messages",
                ));
            }
            let (hub, _) = parse_body::<oa::ChatCompletionRequest>(body)?;
            if hub.messages.is_empty() {
                return Err(GatewayError::invalid_param(
                    "`messages` must not be empty.",
                    "messages",
                ));
            }
            Ok(ChatJob {
                shape,
                raw: None,
                client_model: hub.model.clone(),
                client_stream: hub.is_stream(),
                hub,
            })
        }
        Shape::Anthropic => {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
            })?;
            require_model(&value)?;
            if !value.get("messages").is_some_and(Value::is_array) {
                return Err(GatewayError::invalid_param(
                    "`messages` is required and must be an array.",
                    "messages",
                ));
            }
            if !value.get("max_tokens").is_some_and(Value::is_u64) {
                return Err(GatewayError::invalid_param(
                    "`max_tokens` is required and must be a positive integer.",
                    "max_tokens",
                ));
            }
            let (req, _) = parse_body::<an::MessagesRequest>(body)?;
            let hub = tan::anthropic_to_openai_request(&req).map_err(|e| {
                let e = e.to_openai().error;
                match e.param {
                    Some(p) => GatewayError::invalid_param(e.message, p),
                    None => GatewayError::invalid_request(e.message),
                }
            })?;
            Ok(ChatJob {
                shape,
                raw: Some(value),
                client_model: req.model.clone(),
                client_stream: req.is_stream(),
                hub,
            })
        }
    }
}

fn prompt_chars(req: &oa::ChatCompletionRequest) -> u64 {
    let n: usize = req
        .messages
        .iter()
        .map(|m| {
            m.content
                .as_ref()
                .map_or(0, |c| c.joined_text().chars().count())
        })
        .sum();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Handles a chat request for an authenticated key. Returns the response (already
/// committed) or an error for the router to render in `shape`.
#[allow(clippy::too_many_arguments)]
pub async fn chat_handler(
    rc: &mut ReqCtx,
    env: &Env,
    ctx: &Context,
    config: &Rc<Config>,
    catalogue: Rc<Catalogue>,
    key: Rc<KeyRecord>,
    body: &[u8],
    shape: Shape,
) -> Result<Response, GatewayError> {
    let job = parse_job(body, shape)?;
    rc.model = Some(job.client_model.clone());
    let resolved = resolve_allowed(&catalogue, &key, &job.client_model)?;
    let plan_capture = catalogue.plan(&key.plan_id).is_some_and(|p| p.capture);

    let meter_req = MeterRequest {
        request_id: rc.id.clone(),
        key_public_id: key.public_id.clone(),
        member_id: key.member_id.clone(),
        plan_id: key.plan_id.clone(),
        endpoint: if shape == Shape::Anthropic {
            "/v1/messages"
        } else {
            "/v1/chat/completions"
        },
        model: resolved.name.to_owned(),
        prompt_chars: prompt_chars(&job.hub),
        max_output_tokens: job.hub.max_output_tokens(),
        stream: job.client_stream,
        capture: key.capture || plan_capture,
    };
    metering::check_rate_limit(env, &meter_req).await?;
    let reservation = metering::reserve(env, &meter_req).await?;

    let mode = resolved
        .model
        .and_then(|m| m.stream_mode)
        .unwrap_or(catalogue.settings().stream_mode);
    let upstream_stream = match mode {
        StreamMode::Auto => job.client_stream,
        StreamMode::ForceStream => true,
        StreamMode::ForceNonStream => false,
    };
    let default_max_tokens = resolved
        .model
        .map_or(catalogue.settings().default_max_tokens, |m| {
            m.max_output_tokens
                .min(catalogue.settings().default_max_tokens.max(1))
        });
    let created = now_s();
    let hub_id = format!("chatcmpl-{}", rc.id);

    let order = candidate_order(&resolved.targets, config);
    let max_attempts = usize::try_from(catalogue.settings().max_attempts.max(1)).unwrap_or(1);
    let mut last_err = GatewayError::Overloaded {
        message: "No upstream is available for this model right now.".into(),
        retry_after_secs: None,
    };
    let result = 'attempts: {
        for (ti, ci) in order.into_iter().take(max_attempts) {
            let (Some(target), Some(cred)) = (
                resolved.targets.get(ti),
                resolved
                    .targets
                    .get(ti)
                    .and_then(|t| t.provider.credentials.get(ci)),
            ) else {
                continue;
            };
            let provider = target.provider;
            let bkey = breakers::breaker_key(&provider.id, &cred.id);
            let _ = breakers::try_acquire(&bkey, now_ms(), &config.breaker);
            let raw_body = job.raw.as_ref().filter(|_| {
                provider.kind == ProviderKind::Anthropic && upstream_stream == job.client_stream
            });
            let built = match raw_body {
                Some(raw) => upstream::anthropic_passthrough_request(
                    provider,
                    cred,
                    target.upstream_model,
                    raw,
                    upstream_stream,
                    config.allow_loopback_upstreams,
                ),
                None => upstream::chat_request(
                    provider,
                    cred,
                    target.upstream_model,
                    &job.hub,
                    upstream_stream,
                    default_max_tokens,
                    config.allow_loopback_upstreams,
                ),
            };
            let passthrough = raw_body.is_some();
            let request = match built {
                Ok(r) => r,
                // The caller's request cannot be expressed for this upstream.
                Err(e @ GatewayError::InvalidRequest { .. }) => break 'attempts Err(e),
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            rc.attempts += 1;
            rc.deployment = Some(format!("{}/{}", provider.id, target.upstream_model));
            let timeout_ms = provider.timeout_ms.max(1);
            let t0 = clock_ms();
            let sent = upstream::send(&request, timeout_ms).await;
            let fail = |f: AttemptFailure| {
                if counts_against_health(f) {
                    breakers::on_failure(&bkey, now_ms(), &config.breaker);
                }
            };
            let (mut resp, controller) = match sent {
                Ok(v) => v,
                Err(f) => {
                    rc.upstream_ms += clock_ms() - t0;
                    fail(f);
                    last_err = match f {
                        AttemptFailure::Timeout => GatewayError::UpstreamTimeout {
                            message: "The upstream did not answer in time.".into(),
                        },
                        _ => GatewayError::from_upstream_status(
                            502,
                            "The upstream could not be reached.",
                        ),
                    };
                    continue;
                }
            };
            let status = resp.status_code();
            if !(200..300).contains(&status) {
                let text = within(resp.text(), timeout_ms)
                    .await
                    .and_then(Result::ok)
                    .unwrap_or_default();
                rc.upstream_ms += clock_ms() - t0;
                let f = AttemptFailure::Status(status);
                fail(f);
                last_err =
                    GatewayError::from_upstream_status(status, upstream::error_message(&text));
                // 401/403 are about our credential, not the caller: another may work.
                if is_retryable(f, false) || matches!(status, 401 | 403) {
                    continue;
                }
                break 'attempts Err(last_err);
            }
            let kind = provider.kind;
            if !upstream_stream {
                let text = within(resp.text(), timeout_ms).await;
                rc.upstream_ms += clock_ms() - t0;
                let Some(Ok(text)) = text else {
                    fail(AttemptFailure::Timeout);
                    last_err = GatewayError::UpstreamTimeout {
                        message: "The upstream did not answer in time.".into(),
                    };
                    continue;
                };
                if passthrough {
                    let parsed = serde_json::from_str::<an::MessagesResponse>(&text)
                        .ok()
                        .zip(serde_json::from_str::<Value>(&text).ok());
                    let Some((msg, mut value)) = parsed else {
                        fail(AttemptFailure::Status(502));
                        last_err = GatewayError::from_upstream_status(
                            502,
                            "The upstream sent an unreadable answer.",
                        );
                        continue;
                    };
                    if let Some(obj) = value.as_object_mut() {
                        obj.insert("model".into(), Value::String(job.client_model.clone()));
                    }
                    breakers::on_success(&bkey);
                    let hub = tan::anthropic_to_openai_response(&msg, created);
                    break 'attempts Ok(Answer::Raw(value.to_string(), Box::new(hub)));
                }
                let full = match upstream::decode_full_response(
                    kind,
                    &text,
                    &hub_id,
                    created,
                    resolved.name,
                ) {
                    Ok(r) => r,
                    Err(_) => {
                        fail(AttemptFailure::Status(502));
                        last_err = GatewayError::from_upstream_status(
                            502,
                            "The upstream sent an unreadable answer.",
                        );
                        continue;
                    }
                };
                breakers::on_success(&bkey);
                break 'attempts Ok(Answer::Full(Box::new(full)));
            }
            // Stream: peek until the first hub chunk before committing.
            let Ok(mut body) = resp.stream() else {
                fail(AttemptFailure::Connect);
                continue;
            };
            let mut decoder = sse::Decoder::new();
            let mut chat = ChatDecoder::new(kind, &hub_id, created, resolved.name);
            let mut pending = Vec::new();
            let mut pending_raw = Vec::new();
            let mut ended = false;
            let deadline = t0 + timeout_ms as f64;
            let peek: Result<(), AttemptFailure> = loop {
                let left = (deadline - clock_ms()).max(1.0) as u64;
                match within(body.next(), left).await {
                    None => break Err(AttemptFailure::Timeout),
                    Some(None) => {
                        ended = true;
                        for ev in decoder.finish() {
                            if let Ok(c) = chat.on_event(&ev) {
                                pending.extend(c);
                            }
                            pending_raw.push(ev);
                        }
                        match chat.finish() {
                            Ok(c) => pending.extend(c),
                            Err(_) => break Err(AttemptFailure::Status(502)),
                        }
                        break Ok(());
                    }
                    Some(Some(Err(_))) => break Err(AttemptFailure::Connect),
                    Some(Some(Ok(bytes))) => {
                        let mut failed = false;
                        for ev in decoder.push(&bytes) {
                            match chat.on_event(&ev) {
                                Ok(c) => pending.extend(c),
                                Err(_) => failed = true,
                            }
                            pending_raw.push(ev);
                        }
                        if failed {
                            break Err(AttemptFailure::Status(502));
                        }
                        if !pending.is_empty() {
                            break Ok(());
                        }
                    }
                }
            };
            rc.upstream_ms += clock_ms() - t0;
            if let Err(f) = peek {
                controller.abort();
                fail(f);
                last_err = match f {
                    AttemptFailure::Timeout => GatewayError::UpstreamTimeout {
                        message: "The upstream did not start answering in time.".into(),
                    },
                    _ => GatewayError::from_upstream_status(
                        502,
                        "The upstream stream failed before it started.",
                    ),
                };
                continue;
            }
            breakers::on_success(&bkey);
            break 'attempts Ok(Answer::Stream(Box::new(UpstreamStream {
                body,
                decoder,
                chat,
                pending,
                pending_raw,
                ended,
                idle_ms: timeout_ms,
                raw: passthrough,
                _controller: controller,
            })));
        }
        Err(last_err)
    };

    let answer = match result {
        Ok(a) => a,
        Err(e) => {
            let outcome = Outcome {
                status: e.http_status(),
                ..Outcome::default()
            };
            let env2 = env.clone();
            ctx.wait_until(async move {
                metering::settle(&env2, &meter_req, reservation, outcome).await
            });
            return Err(e);
        }
    };

    let egress = || match job.shape {
        Shape::OpenAi => Egress::OpenAi {
            wants_usage: job.hub.wants_stream_usage(),
            model: job.client_model.clone(),
        },
        Shape::Anthropic => Egress::Anthropic(Box::new(tan::OpenAiToAnthropicStream::new(
            format!("msg_{}", rc.id),
            job.client_model.clone(),
        ))),
    };

    match (answer, job.client_stream) {
        (Answer::Raw(text, hub), _) => {
            let usage = hub.usage.as_ref().map(tollbooth_core::usage::Usage::from);
            let chars: u64 = response_to_chunks(&hub, false)
                .iter()
                .map(chunk_chars)
                .sum();
            rc.usage = usage;
            rc.status = 200;
            let outcome = Outcome {
                status: 200,
                deployment: rc.deployment.clone(),
                usage,
                output_chars: chars,
                ..Outcome::default()
            };
            let env2 = env.clone();
            ctx.wait_until(async move {
                metering::settle(&env2, &meter_req, reservation, outcome).await
            });
            json_response(&text)
        }
        (Answer::Full(full), false) => {
            let usage = full.usage.as_ref().map(tollbooth_core::usage::Usage::from);
            finish_full(rc, env, ctx, meter_req, reservation, *full, &job, usage)
        }
        (Answer::Full(full), true) => {
            // Force non-stream: the whole answer, re-emitted as one stream.
            let usage = full.usage.as_ref().map(tollbooth_core::usage::Usage::from);
            let mut eg = egress();
            let mut out = String::new();
            let mut chars = 0;
            for c in response_to_chunks(&full, true) {
                chars += chunk_chars(&c);
                eg.chunk(c, &mut out);
            }
            eg.finish(&mut out);
            rc.usage = usage;
            rc.status = 200;
            rc.ttft_ms = Some(clock_ms() - rc.started);
            let outcome = Outcome {
                status: 200,
                deployment: rc.deployment.clone(),
                usage,
                output_chars: chars,
                ..Outcome::default()
            };
            let env2 = env.clone();
            ctx.wait_until(async move {
                metering::settle(&env2, &meter_req, reservation, outcome).await
            });
            sse_response(
                rc,
                futures_util::stream::once(async move {
                    Ok::<Vec<u8>, worker::Error>(out.into_bytes())
                }),
            )
        }
        (Answer::Stream(mut up), false) => {
            // Force stream: read it all, answer once.
            let mut agg = ChunkAggregator::new();
            for c in up.pending.drain(..) {
                agg.push(&c);
            }
            let t0 = clock_ms();
            let mut err = None;
            if !up.ended {
                loop {
                    let Some(next) = within(up.body.next(), up.idle_ms).await else {
                        err = Some("The upstream stopped sending.".into());
                        break;
                    };
                    let Some(item) = next else { break };
                    match item {
                        Ok(bytes) => {
                            for ev in up.decoder.push(&bytes) {
                                match up.chat.on_event(&ev) {
                                    Ok(cs) => cs.iter().for_each(|c| agg.push(c)),
                                    Err(m) => err = Some(m),
                                }
                            }
                        }
                        Err(_) => {
                            err = Some("The upstream stream broke off.".into());
                            break;
                        }
                    }
                    if err.is_some() {
                        break;
                    }
                }
                if err.is_none() {
                    for ev in up.decoder.finish() {
                        if let Ok(cs) = up.chat.on_event(&ev) {
                            cs.iter().for_each(|c| agg.push(c));
                        }
                    }
                    match up.chat.finish() {
                        Ok(cs) => cs.iter().for_each(|c| agg.push(c)),
                        Err(m) => err = Some(m),
                    }
                }
            }
            rc.upstream_ms += clock_ms() - t0;
            let usage = up.chat.usage();
            if let Some(m) = err {
                let e = GatewayError::from_upstream_status(502, m);
                let outcome = Outcome {
                    status: e.http_status(),
                    deployment: rc.deployment.clone(),
                    usage,
                    upstream_failed: true,
                    ..Outcome::default()
                };
                let env2 = env.clone();
                ctx.wait_until(async move {
                    metering::settle(&env2, &meter_req, reservation, outcome).await
                });
                return Err(e);
            }
            let mut full = agg.finish();
            if full.usage.is_none() {
                full.usage = usage.as_ref().map(oa::CompletionUsage::from);
            }
            finish_full(rc, env, ctx, meter_req, reservation, full, &job, usage)
        }
        (Answer::Stream(up), true) => {
            let (tx, rx) = unbounded::<Result<Vec<u8>, worker::Error>>();
            rc.status = 200;
            let eg = if up.raw {
                Egress::AnthropicRaw {
                    model: job.client_model.clone(),
                }
            } else {
                egress()
            };
            let resp = sse_response(rc, rx)?;
            let mut log = rc.clone();
            let env2 = env.clone();
            ctx.wait_until(async move {
                let outcome = pump(*up, eg, tx, &mut log).await;
                log.usage = outcome.usage;
                log.log();
                metering::settle(&env2, &meter_req, reservation, outcome).await;
            });
            // The pump logs this request when the stream ends.
            rc.status = 0;
            Ok(resp)
        }
    }
}

enum Answer {
    Full(Box<oa::ChatCompletionResponse>),
    /// An Anthropic answer forwarded as is (JSON text), and its hub form for metering.
    Raw(String, Box<oa::ChatCompletionResponse>),
    Stream(Box<UpstreamStream>),
}

/// A committed upstream stream and what was read of it while peeking.
struct UpstreamStream {
    body: ByteStream,
    decoder: sse::Decoder,
    chat: ChatDecoder,
    pending: Vec<oa::ChatCompletionChunk>,
    /// The raw events behind `pending`, for [`Egress::AnthropicRaw`].
    pending_raw: Vec<sse::Event>,
    ended: bool,
    /// Give up when the upstream sends nothing for this long mid-stream.
    idle_ms: u64,
    /// Forward the upstream's events as is ([`Egress::AnthropicRaw`]).
    raw: bool,
    /// Kept alive with the body: dropping the controller must not cancel it.
    _controller: AbortController,
}

#[allow(clippy::too_many_arguments)]
fn finish_full(
    rc: &mut ReqCtx,
    env: &Env,
    ctx: &Context,
    meter_req: MeterRequest,
    reservation: Reservation,
    mut full: oa::ChatCompletionResponse,
    job: &ChatJob,
    usage: Option<tollbooth_core::usage::Usage>,
) -> Result<Response, GatewayError> {
    full.model.clone_from(&job.client_model);
    let chars: u64 = response_to_chunks(&full, false)
        .iter()
        .map(chunk_chars)
        .sum();
    let text = match job.shape {
        Shape::OpenAi => serde_json::to_string(&full),
        Shape::Anthropic => {
            let mut msg = tan::openai_to_anthropic_response(&full);
            msg.model.clone_from(&job.client_model);
            serde_json::to_string(&msg)
        }
    }
    .map_err(|_| GatewayError::internal("could not encode the response"))?;
    rc.usage = usage;
    rc.status = 200;
    let outcome = Outcome {
        status: 200,
        deployment: rc.deployment.clone(),
        usage,
        output_chars: chars,
        ..Outcome::default()
    };
    let env2 = env.clone();
    ctx.wait_until(async move { metering::settle(&env2, &meter_req, reservation, outcome).await });
    json_response(&text)
}

fn sse_response<S>(rc: &ReqCtx, stream: S) -> Result<Response, GatewayError>
where
    S: futures_util::TryStream + 'static,
    S::Ok: Into<Vec<u8>>,
    S::Error: Into<worker::Error>,
{
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    let resp = Response::from_stream(stream)
        .map_err(|_| GatewayError::internal("could not start the stream"))?
        .with_headers(headers);
    rc.stamp(resp.headers());
    Ok(resp)
}

/// Feeds one upstream event through the decoder and the egress. Returns the upstream's
/// in-stream error, if it reported one.
fn feed(
    ev: &sse::Event,
    chat: &mut ChatDecoder,
    egress: &mut Egress,
    out: &mut String,
    outcome: &mut Outcome,
) -> Option<String> {
    let result = chat.on_event(ev);
    if egress.is_raw() {
        egress.raw(ev, out);
    }
    match result {
        Ok(cs) => {
            for c in cs {
                outcome.output_chars += chunk_chars(&c);
                egress.chunk(c, out);
            }
            None
        }
        Err(m) => Some(m),
    }
}

/// Forwards the rest of a committed stream to the client, chunk by chunk. Keeps reading
/// (bounded) after the client left, to get the provider's usage.
async fn pump(
    mut up: UpstreamStream,
    mut egress: Egress,
    tx: UnboundedSender<Result<Vec<u8>, worker::Error>>,
    log: &mut ReqCtx,
) -> Outcome {
    let mut outcome = Outcome {
        status: 200,
        deployment: log.deployment.clone(),
        ..Outcome::default()
    };
    let mut drained = 0usize;
    let send = |out: String, outcome: &mut Outcome| {
        if out.is_empty() || outcome.client_disconnected {
            return;
        }
        if tx.unbounded_send(Ok(out.into_bytes())).is_err() {
            outcome.client_disconnected = true;
        }
    };
    let mut out = String::new();
    if egress.is_raw() {
        for ev in up.pending_raw.drain(..) {
            egress.raw(&ev, &mut out);
        }
    }
    for c in up.pending.drain(..) {
        outcome.output_chars += chunk_chars(&c);
        egress.chunk(c, &mut out);
    }
    if log.ttft_ms.is_none() {
        log.ttft_ms = Some(clock_ms() - log.started);
    }
    send(std::mem::take(&mut out), &mut outcome);
    // (message, already forwarded to the client as the upstream's own error event)
    let mut error: Option<(String, bool)> = None;
    if !up.ended {
        loop {
            match within(up.body.next(), up.idle_ms).await {
                None => {
                    error = Some(("The upstream stopped sending.".into(), false));
                    break;
                }
                Some(None) => {
                    for ev in up.decoder.finish() {
                        if let Some(m) =
                            feed(&ev, &mut up.chat, &mut egress, &mut out, &mut outcome)
                        {
                            error = Some((m, egress.is_raw()));
                        }
                    }
                    if error.is_none() {
                        match up.chat.finish() {
                            Ok(cs) => {
                                for c in cs {
                                    egress.chunk(c, &mut out);
                                }
                            }
                            Err(m) => error = Some((m, false)),
                        }
                    }
                    break;
                }
                Some(Some(Err(_))) => {
                    error = Some(("The upstream stream broke off.".into(), false));
                    break;
                }
                Some(Some(Ok(bytes))) => {
                    if outcome.client_disconnected {
                        drained += bytes.len();
                        if drained > DRAIN_LIMIT_BYTES {
                            break;
                        }
                    }
                    for ev in up.decoder.push(&bytes) {
                        if let Some(m) =
                            feed(&ev, &mut up.chat, &mut egress, &mut out, &mut outcome)
                        {
                            error = Some((m, egress.is_raw()));
                            break;
                        }
                    }
                    send(std::mem::take(&mut out), &mut outcome);
                    if error.is_some() {
                        break;
                    }
                }
            }
        }
    }
    match error {
        Some((m, forwarded)) => {
            outcome.upstream_failed = true;
            log.error = Some(m.clone());
            if !forwarded {
                let e = GatewayError::from_upstream_status(502, m);
                egress.error(&e, &mut out);
            }
        }
        None => egress.finish(&mut out),
    }
    send(out, &mut outcome);
    outcome.usage = up.chat.usage();
    log.status = 200;
    outcome
}
