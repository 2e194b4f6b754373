//! `POST /v1/chat/completions`, `POST /v1/messages`, `POST /v1/responses` and
//! `POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent` (and each
//! WebSocket chat message): the pipeline of [`crate::routes`], composed from
//! [`crate::pipeline`]. Every ingress goes through the same admission, attempts,
//! streaming and settlement; only parsing and encoding differ.
//!
//! [`prepare`] runs everything up to a committed upstream answer (auth is the caller's):
//! permissions and price, the output cap, admission, the attempts. [`deliver_http`]
//! turns that answer into the HTTP response (a stream is pumped inside `ctx.wait_until`,
//! so it runs to the end, and settles, even when the client goes away); the WebSocket
//! handler delivers the same answer as socket messages.

use std::rc::Rc;

use futures_channel::mpsc::unbounded;
use futures_util::future::{select, Either};
use tollbooth_core::billing::{Ending, Observed};
use tollbooth_core::catalogue::{
    Catalogue, Credential, ModelKind, ProviderKind, Resolved, StreamMode, Target,
};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::provider::{self, UpstreamRequest};
use tollbooth_core::routing::AttemptFailure;
use tollbooth_core::sse;
use tollbooth_core::translate::hub::{
    decode_full, encode_full_for, response_output, FullAnswer, HubDecoder, HubEncoder, Ingress,
};
use tollbooth_core::translate::stream_convert::response_to_chunks;
use worker::{Context, Env, Headers, Response};

use super::{authed_from, resolve_allowed};
use crate::auth::KeySource;
use crate::breakers;
use crate::catalogue;
use crate::config::Config;
use crate::context::{EdgeError, LogMode, ReqCtx};
use crate::middleware::{json_response, Call};
use crate::pipeline::attempts::{self, Attempt, Verdict};
use crate::pipeline::capture;
use crate::pipeline::ingress::{parse_chat_with, ChatJob, IngressFacts};
use crate::pipeline::metering::{self, Finish, Meter, Settlement};
use crate::pipeline::speculate;
use crate::pipeline::stream::{self, SseSink, UpstreamStream};
use crate::protect;
use crate::routes::{gemini_target, GeminiMethod};
use crate::upstream::{self, Abort};
use crate::util::{clock_ms, now_ms, now_s};

/// The HTTP handler.
pub async fn chat_handler(call: Call<'_>, ingress: Ingress) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        ctx,
        config,
        ..
    } = call;
    let mut facts = IngressFacts {
        response_id: format!("resp_{}", rc.id),
        created: now_s(),
        ..IngressFacts::default()
    };
    let source = if ingress == Ingress::Gemini {
        let (model, method) = gemini_target(call.path).ok_or_else(|| GatewayError::NotFound {
            message: format!("Unknown route: {} {}", rc.method, call.path),
            code: Some("not_found".into()),
        })?;
        facts.path_model = Some(model);
        facts.path_stream = method == GeminiMethod::Stream;
        facts.alt_sse = query_param(req, "alt").as_deref() == Some("sse");
        KeySource::Google
    } else {
        KeySource::Standard
    };
    // Authentication and the catalogue are independent: loaded together (an
    // authentication failure answers at once). The body is read only once the caller is
    // authenticated: an unauthenticated caller's body is never read (a 401 comes first).
    let (key, catalogue) = {
        let auth = authed_from(rc, req, env, config, source);
        let cat = catalogue::load(env, config.catalogue_ttl_ms);
        futures_util::pin_mut!(auth, cat);
        match select(auth, cat).await {
            Either::Left((key, cat)) => (key?, cat.await),
            Either::Right((cat, auth)) => (auth.await?, cat),
        }
    };
    let body = protect::read_body_limited(req, config.max_body_bytes).await?;
    let job = parse_chat_with(ingress, &body, &facts)?;
    drop(body);
    let catalogue = catalogue?;
    breakers::refresh_in_background(env, ctx);
    let prepared = prepare(rc, env, ctx, config, &catalogue, &key, job).await?;
    deliver_http(rc, ctx, config, prepared).await
}

/// A query parameter of the request URL (first occurrence).
pub fn query_param(req: &worker::Request, name: &str) -> Option<String> {
    let url = req.url().ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What the upstream answered, committed (retries are over).
pub enum ChatAnswer {
    Full(Box<FullAnswer>),
    Stream(Box<UpstreamStream>),
}

/// A request that passed admission and got its upstream answer.
pub struct Prepared {
    pub job: ChatJob,
    pub settlement: Settlement,
    pub answer: ChatAnswer,
    /// The upstream's own Anthropic events/JSON are forwarded.
    pub raw: bool,
}

/// The output cap sent upstream: the caller's, or the catalogue default when it named
/// none, never above the model's maximum.
fn output_cap(job: &ChatJob, resolved: &Resolved<'_>, catalogue: &Catalogue) -> u64 {
    let default = catalogue.settings().default_max_tokens.max(1);
    let requested = job.hub.max_output_tokens().unwrap_or(default).max(1);
    match resolved.max_output_tokens() {
        Some(max) => requested.min(max.max(1)),
        None => requested,
    }
}

/// Everything up to a committed upstream answer (see the module docs).
pub async fn prepare(
    rc: &mut ReqCtx,
    env: &Env,
    ctx: &Context,
    config: &Rc<Config>,
    catalogue: &Catalogue,
    key: &Rc<KeyRecord>,
    mut job: ChatJob,
) -> Result<Prepared, EdgeError> {
    rc.model = Some(job.client_model.clone());
    let model_name = job.client_model.clone();
    let resolved = resolve_allowed(catalogue, key, &model_name)?;
    if resolved.kind() != ModelKind::Chat {
        return Err(GatewayError::invalid_param(
            format!(
                "The model `{}` does not support {}.",
                job.client_model,
                job.ingress.endpoint()
            ),
            "model",
        )
        .into());
    }
    // The reservation bounds the request: the cap is always sent upstream.
    let cap = output_cap(&job, &resolved, catalogue);
    if job.hub.max_completion_tokens.is_some() {
        job.hub.max_completion_tokens = Some(cap);
        job.hub.max_tokens = None;
    } else {
        job.hub.max_tokens = Some(cap);
    }
    let prompt = job
        .prompt
        .bounded_by(resolved.max_input_tokens())
        .ok_or_else(|| {
            GatewayError::invalid_param(
                format!(
                    "The model `{}` does not accept documents or files by reference (URL or \
                     file id): send them inline.",
                    job.client_model
                ),
                "messages",
            )
        })?;
    let (estimate, worst) =
        metering::estimates(&prompt, resolved.reserved_output_cap(cap), job.choices);
    let plan = catalogue.plan(&key.plan_id);
    let request_id = rc.id.clone();
    let meter = Meter {
        request_id: &request_id,
        key,
        plan,
        model: resolved.name,
        price: resolved.price,
        estimate,
        worst,
        now_s: rc.now_s,
    };
    let settings = catalogue.settings();
    let mode = resolved
        .model
        .and_then(|m| m.stream_mode)
        .unwrap_or(settings.stream_mode);
    // Speculation calls the upstream in stream mode (an abort then stops generation), so
    // it is off where that would change the answer: a model forced to non-stream, and a
    // non-stream caller whose own body is forwarded as is.
    let raw_body = job.anthropic_body.is_some() || job.responses_body.is_some();
    let ticket = (!config.hooks.metering_off
        && mode != StreamMode::ForceNonStream
        && (job.client_stream || !raw_body))
        .then(|| {
            speculate::decide(
                settings,
                &speculate::Candidate {
                    member_id: &key.member_id,
                    key_id: &key.public_id,
                    price: &resolved.price,
                    worst: &worst,
                    input_tokens: estimate.input_tokens,
                },
            )
        })
        .flatten();
    let upstream_stream = ticket.is_some()
        || match mode {
            StreamMode::Auto => job.client_stream,
            StreamMode::ForceStream => true,
            StreamMode::ForceNonStream => false,
        };
    let calls = speculate::Calls::default();
    let mut attempt = ChatAttempt {
        job: &job,
        cap,
        upstream_stream,
        allow_loopback: config.hooks.allow_loopback,
        hub_id: format!("chatcmpl-{}", rc.id),
        created: now_s(),
        name: resolved.name,
        raw: false,
        calls: ticket.as_ref().map(|_| calls.clone()),
    };
    let started_ms = now_ms();
    let admitted = if ticket.is_some() {
        let admit = metering::admit(env, ctx, config, &meter);
        let run = attempts::run(
            rc,
            &resolved,
            settings,
            config,
            &job.client_model,
            &mut attempt,
        );
        futures_util::pin_mut!(admit, run);
        match select(admit, run).await {
            Either::Left((Ok(settlement), run)) => Ok((settlement, run.await)),
            Either::Left((Err(refusal), _)) => Err(refusal),
            Either::Right((result, admit)) => match admit.await {
                Ok(settlement) => Ok((settlement, result)),
                Err(refusal) => Err(refusal),
            },
        }
    } else {
        match metering::admit(env, ctx, config, &meter).await {
            Ok(settlement) => Ok((
                settlement,
                attempts::run(
                    rc,
                    &resolved,
                    settings,
                    config,
                    &job.client_model,
                    &mut attempt,
                )
                .await,
            )),
            Err(refusal) => Err(refusal),
        }
    };
    drop(ticket);
    let (mut settlement, result) = match admitted {
        Ok(pair) => pair,
        Err(refusal) => {
            speculate::refused(
                &key.member_id,
                &key.public_id,
                refusal.error.http_status(),
                refusal.error.retry_after_secs(),
            );
            // Whatever the speculative attempt started is cancelled: no byte of it was
            // sent to the caller, and the provider stops generating.
            if calls.cancel_all() {
                ctx.wait_until(speculate::record_abort(
                    env.clone(),
                    speculate::AbortEvent {
                        request_id: request_id.clone(),
                        member_id: key.member_id.clone(),
                        key_id: key.public_id.clone(),
                        model: resolved.name.to_owned(),
                        deployment: rc.deployment.clone(),
                        input_tokens_est: estimate.input_tokens,
                        latency_ms: now_ms().saturating_sub(started_ms),
                        now_s: rc.now_s,
                    },
                ));
            }
            return Err(refusal);
        }
    };
    if let Some(adm) = settlement.admission() {
        speculate::admitted(&adm.member_id, adm.unit, adm.headroom);
    }
    settlement.set_capture(capture::decide(
        key,
        catalogue,
        &job.hub,
        job.ingress.endpoint(),
        &job.client_model,
    ));
    let raw = attempt.raw;
    match result {
        Ok(answer) => Ok(Prepared {
            job,
            settlement,
            answer,
            raw,
        }),
        Err(e) => {
            settlement.finish(if e.timed_out {
                Finish::timed_out(rc.deployment.clone())
            } else {
                Finish::failed_before_output()
            });
            Err(e.error.into())
        }
    }
}

struct ChatAttempt<'a> {
    job: &'a ChatJob,
    cap: u64,
    upstream_stream: bool,
    allow_loopback: bool,
    hub_id: String,
    created: u64,
    name: &'a str,
    /// Whether the last built request forwards the Anthropic body as is.
    raw: bool,
    /// Speculative admission: every upstream call, to cancel them on a refusal.
    calls: Option<speculate::Calls>,
}

impl Attempt for ChatAttempt<'_> {
    type Output = ChatAnswer;

    fn build(
        &mut self,
        target: &Target<'_>,
        cred: &Credential,
    ) -> Result<UpstreamRequest, GatewayError> {
        let p = target.provider;
        let same_mode = self.upstream_stream == self.job.client_stream;
        let responses_body = self
            .job
            .responses_body
            .as_ref()
            .filter(|_| p.kind == ProviderKind::Responses && same_mode);
        if let Some(body) = responses_body {
            self.raw = true;
            return provider::responses_passthrough_request(
                p,
                cred,
                target.upstream_model,
                body,
                self.cap,
                self.upstream_stream,
                self.allow_loopback,
            );
        }
        let raw_body = self
            .job
            .anthropic_body
            .as_ref()
            .filter(|_| p.kind == ProviderKind::Anthropic && same_mode);
        // An OpenAI caller streaming from an OpenAI-compatible upstream: the upstream's
        // chunks are relayed as they are (only `model` patched), not re-serialised.
        let relay = self.job.ingress == Ingress::OpenAiChat
            && matches!(p.kind, ProviderKind::Openai | ProviderKind::Azure)
            && self.upstream_stream
            && self.job.client_stream;
        self.raw = raw_body.is_some() || relay;
        match raw_body {
            Some(body) => provider::anthropic_passthrough_request(
                p,
                cred,
                target.upstream_model,
                body,
                self.cap,
                self.upstream_stream,
                self.allow_loopback,
            ),
            None => provider::chat_request(
                p,
                cred,
                target.upstream_model,
                &self.job.hub,
                self.upstream_stream,
                self.allow_loopback,
            ),
        }
    }

    fn track(&self, abort: &Abort) {
        if let Some(calls) = &self.calls {
            calls.track(abort);
        }
    }

    async fn accept(
        &mut self,
        _rc: &mut ReqCtx,
        mut resp: Response,
        controller: Abort,
        target: &Target<'_>,
        timeout_ms: u64,
    ) -> Verdict<ChatAnswer> {
        let kind = target.provider.kind;
        if self.upstream_stream {
            let decoder = HubDecoder::new(kind, &self.hub_id, self.created, self.name, self.raw);
            return match stream::peek(resp, controller, decoder, timeout_ms).await {
                Verdict::Accept(up) => Verdict::Accept(ChatAnswer::Stream(Box::new(up))),
                Verdict::Retry(f, e) => Verdict::Retry(f, e),
                Verdict::Stop(f, e) => Verdict::Stop(f, e),
            };
        }
        let Some(text) = upstream::read_text(&mut resp, timeout_ms).await else {
            controller.abort();
            return Verdict::Stop(
                AttemptFailure::Timeout,
                GatewayError::UpstreamTimeout {
                    message: "The upstream did not answer in time.".into(),
                },
            );
        };
        match decode_full(kind, &text, &self.hub_id, self.created, self.name, self.raw) {
            Ok(answer) => Verdict::Accept(ChatAnswer::Full(Box::new(answer))),
            Err(_) => Verdict::Retry(
                AttemptFailure::Status(502),
                GatewayError::from_upstream_status(502, "The upstream sent an unreadable answer."),
            ),
        }
    }
}

fn completed(
    output: tollbooth_core::translate::hub::Output,
    usage: Option<tollbooth_core::usage::Usage>,
) -> Observed {
    Observed {
        ending: Ending::Completed,
        usage,
        output_chars: output.chars,
        output_tokens_est: output.tokens,
    }
}

/// The id of the caller's message (Anthropic) or response (Gemini `responseId`).
fn message_id(rc: &ReqCtx) -> String {
    format!("msg_{}", rc.id)
}

/// The encoder for this request's caller.
pub fn encoder(rc: &ReqCtx, job: &ChatJob, raw: bool) -> HubEncoder {
    HubEncoder::for_context(
        &job.context,
        &job.client_model,
        &message_id(rc),
        job.include_usage,
        raw,
    )
}

/// The caller's JSON for a whole answer.
fn encode_full(
    rc: &ReqCtx,
    job: &ChatJob,
    answer: &FullAnswer,
    raw: bool,
) -> Result<String, GatewayError> {
    encode_full_for(
        &job.context,
        answer,
        &job.client_model,
        &message_id(rc),
        raw,
    )
}

fn sse_response<S>(stream: S, content_type: &str) -> Result<Response, GatewayError>
where
    S: futures_util::TryStream + 'static,
    S::Ok: Into<Vec<u8>>,
    S::Error: Into<worker::Error>,
{
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    let _ = headers.set("cache-control", "no-cache");
    Ok(Response::from_stream(stream)
        .map_err(|_| GatewayError::internal("could not start the stream"))?
        .with_headers(headers))
}

/// A whole answer re-emitted as the caller's events (force non-stream to a streaming
/// caller, and WebSocket messages).
pub fn full_as_events(rc: &ReqCtx, job: &ChatJob, answer: &FullAnswer) -> Vec<sse::Event> {
    let mut enc = encoder(rc, job, false);
    let mut events = Vec::new();
    let mut hub = answer.hub.clone();
    if hub.usage.is_none() {
        hub.usage = answer.usage.as_ref().map(Into::into);
    }
    for c in response_to_chunks(&hub, true) {
        enc.chunk(c, &mut events);
    }
    enc.finish(&mut events);
    events
}

/// Turns a prepared answer into the HTTP response, settling exactly once.
pub async fn deliver_http(
    rc: &mut ReqCtx,
    ctx: &Context,
    config: &Config,
    prepared: Prepared,
) -> Result<Response, EdgeError> {
    let Prepared {
        job,
        settlement,
        answer,
        raw,
    } = prepared;
    let deployment = rc.deployment.clone();
    match (answer, job.client_stream) {
        (ChatAnswer::Full(answer), false) => {
            let text = encode_full(rc, &job, &answer, raw)?;
            rc.usage = answer.usage;
            let response = settlement
                .wants_response()
                .then(|| Box::new(answer.hub.clone()));
            settlement.finish(Finish {
                observed: completed(response_output(&answer.hub), answer.usage),
                deployment,
                ttft_ms: None,
                response,
            });
            Ok(json_response(text)?)
        }
        (ChatAnswer::Full(answer), true) => {
            // Force non-stream: the whole answer, re-emitted as one stream.
            let events = full_as_events(rc, &job, &answer);
            let wire = encoder(rc, &job, false);
            let body = wire.wire(&events).into_bytes();
            let content_type = wire.content_type();
            rc.usage = answer.usage;
            rc.ttft_ms = Some(clock_ms() - rc.started);
            let response = settlement
                .wants_response()
                .then(|| Box::new(answer.hub.clone()));
            settlement.finish(Finish {
                observed: completed(response_output(&answer.hub), answer.usage),
                deployment,
                ttft_ms: rc.ttft_ms.map(|t| t.max(0.0).round() as u64),
                response,
            });
            Ok(sse_response(
                futures_util::stream::once(async move { Ok::<Vec<u8>, worker::Error>(body) }),
                content_type,
            )?)
        }
        (ChatAnswer::Stream(up), false) => {
            // Force stream: read it all, answer once.
            let t0 = clock_ms();
            let result = stream::aggregate(*up).await;
            rc.upstream_ms += clock_ms() - t0;
            match result {
                Ok((hub, usage, output)) => {
                    let answer = FullAnswer {
                        hub,
                        usage,
                        raw: None,
                    };
                    let text = encode_full(rc, &job, &answer, false)?;
                    rc.usage = usage;
                    let response = settlement
                        .wants_response()
                        .then(|| Box::new(answer.hub.clone()));
                    settlement.finish(Finish {
                        observed: completed(output, usage),
                        deployment,
                        ttft_ms: None,
                        response,
                    });
                    Ok(json_response(text)?)
                }
                Err((message, observed)) => {
                    rc.usage = observed.usage;
                    settlement.finish(Finish {
                        observed,
                        deployment,
                        ttft_ms: None,
                        response: None,
                    });
                    Err(GatewayError::from_upstream_status(502, message).into())
                }
            }
        }
        (ChatAnswer::Stream(up), true) => {
            let (tx, rx) = unbounded::<Result<Vec<u8>, worker::Error>>();
            let enc = encoder(rc, &job, raw);
            let resp = sse_response(rx, enc.content_type())?;
            rc.status = 200;
            rc.overhead_at_commit = Some(rc.overhead_ms());
            // The pump writes this request's log line when the stream ends.
            rc.log = LogMode::Deferred;
            let mut log = rc.clone();
            let verbatim = enc.is_verbatim();
            let drain_ms = config.drain_timeout_ms;
            ctx.wait_until(async move {
                let mut sink = SseSink { tx, verbatim };
                let assemble = settlement.wants_response();
                let pumped = stream::pump(
                    *up,
                    enc,
                    &mut sink,
                    &mut log,
                    &settlement,
                    drain_ms,
                    assemble,
                )
                .await;
                drop(sink);
                log.write_log();
                settlement
                    .finish_now(Finish {
                        observed: pumped.observed,
                        deployment: log.deployment.clone(),
                        ttft_ms: log.ttft_ms.map(|t| t.max(0.0).round() as u64),
                        response: pumped.response.map(Box::new),
                    })
                    .await;
            });
            Ok(resp)
        }
    }
}
