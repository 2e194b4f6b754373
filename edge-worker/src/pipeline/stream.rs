//! Streams over the core hub decoder and encoder: [`peek`] (read until the first hub
//! chunk, before the 200 is committed), [`aggregate`] (a forced upstream stream for a
//! non-stream caller) and [`pump`] (the rest of a committed stream to a [`Sink`]: the
//! SSE response body, or the WebSocket).
//!
//! After the caller disconnects the pump keeps reading the upstream for the provider's
//! usage, for at most `DRAIN_TIMEOUT_MS` (and [`DRAIN_LIMIT_BYTES`]); then it stops and
//! the request is settled from what was counted. While a stream runs the pump keeps its
//! reservation alive (a heartbeat every third of the reservation's lifetime), so the
//! sweep never charges a request that is still being served.

use std::pin::Pin;
use std::time::Duration;

use futures_channel::mpsc::UnboundedSender;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use tollbooth_core::billing::{Ending, Observed};
use tollbooth_core::error::GatewayError;
use tollbooth_core::protocol::openai as oa;
use tollbooth_core::routing::AttemptFailure;
use tollbooth_core::sse;
use tollbooth_core::translate::hub::{chunk_output, Decoded, HubDecoder, HubEncoder, Output};
use tollbooth_core::translate::stream_convert::ChunkAggregator;
use tollbooth_core::usage::Usage;
use worker::{ByteStream, Delay, Response};

use super::attempts::Verdict;
use super::metering::Settlement;
use crate::context::{log_error, ReqCtx};
use crate::upstream::{within, Abort};
use crate::util::{clock_ms, now_ms};

/// One timer for a whole stream (not a `setTimeout` per chunk): reads the next chunk of
/// `body` or gives up at `deadline` (clock ms). The armed timer survives the chunks
/// that arrive before it fires; when it fires early (the deadline moved on with the
/// data), it is re-armed once for what is left.
#[derive(Default)]
pub struct Watchdog {
    timer: Option<(Pin<Box<Delay>>, f64)>,
}

/// What the next read of a stream gave.
type Read = Option<Result<Vec<u8>, worker::Error>>;

impl Watchdog {
    /// The next read, or `None` when `deadline` passed first.
    pub async fn next(&mut self, body: &mut ByteStream, deadline: f64) -> Option<Read> {
        loop {
            let now = clock_ms();
            if now >= deadline {
                return None;
            }
            if self.timer.as_ref().is_none_or(|(_, at)| *at > deadline) {
                let ms = (deadline - now).ceil().max(1.0) as u64;
                self.timer = Some((Box::pin(Delay::from(Duration::from_millis(ms))), deadline));
            }
            let (timer, _) = self.timer.as_mut()?;
            match select(body.next(), timer.as_mut()).await {
                Either::Left((read, _)) => return Some(read),
                Either::Right(_) => self.timer = None,
            }
        }
    }
}

/// After the client disconnects, read at most this much more of the upstream.
pub const DRAIN_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// A committed upstream stream and what was read of it while peeking.
pub struct UpstreamStream {
    body: ByteStream,
    decoder: HubDecoder,
    /// Decoded while peeking, not yet delivered.
    pending: Decoded,
    ended: bool,
    /// Give up when the upstream sends nothing for this long.
    idle_ms: u64,
    /// Kept alive with the body: dropping the controller must not cancel it.
    _controller: Abort,
}

/// Reads the upstream until its first hub chunk, within `timeout_ms` of the attempt's
/// start. A timeout stops the attempt loop (the request was sent); an upstream error
/// before any output tries the next candidate.
pub async fn peek(
    mut resp: Response,
    controller: Abort,
    mut decoder: HubDecoder,
    timeout_ms: u64,
) -> Verdict<UpstreamStream> {
    let Ok(mut body) = resp.stream() else {
        return Verdict::Retry(
            AttemptFailure::Connect,
            GatewayError::from_upstream_status(502, "The upstream stream could not be read."),
        );
    };
    let deadline = clock_ms() + timeout_ms as f64;
    let mut pending = Decoded::default();
    let failed = |m: String| {
        Verdict::Retry(
            AttemptFailure::Status(502),
            GatewayError::from_upstream_status(
                502,
                format!("The upstream stream failed before it started: {m}"),
            ),
        )
    };
    loop {
        let left = (deadline - clock_ms()).max(1.0) as u64;
        match within(body.next(), left).await {
            None => {
                controller.abort();
                return Verdict::Stop(
                    AttemptFailure::Timeout,
                    GatewayError::UpstreamTimeout {
                        message: "The upstream did not start answering in time.".into(),
                    },
                );
            }
            Some(None) => {
                let end = decoder.finish();
                pending.chunks.extend(end.chunks);
                pending.raw.extend(end.raw);
                if let Some(m) = end.error {
                    return failed(m);
                }
                return Verdict::Accept(UpstreamStream {
                    body,
                    decoder,
                    pending,
                    ended: true,
                    idle_ms: timeout_ms,
                    _controller: controller,
                });
            }
            Some(Some(Err(_))) => {
                return Verdict::Retry(
                    AttemptFailure::Connect,
                    GatewayError::from_upstream_status(502, "The upstream stream broke off."),
                )
            }
            Some(Some(Ok(bytes))) => {
                let d = decoder.push(&bytes);
                if let Some(m) = d.error {
                    controller.abort();
                    return failed(m);
                }
                pending.chunks.extend(d.chunks);
                pending.raw.extend(d.raw);
                if !pending.chunks.is_empty() {
                    return Verdict::Accept(UpstreamStream {
                        body,
                        decoder,
                        pending,
                        ended: false,
                        idle_ms: timeout_ms,
                        _controller: controller,
                    });
                }
            }
        }
    }
}

/// A forced upstream stream read to its end for a non-stream caller: the assembled
/// answer and its usage, or the upstream's error (with what was produced and reported).
pub async fn aggregate(
    mut up: UpstreamStream,
) -> Result<(oa::ChatCompletionResponse, Option<Usage>, Output), (String, Observed)> {
    let mut agg = ChunkAggregator::new();
    let mut output = Output::default();
    let mut take = |d: Decoded, agg: &mut ChunkAggregator| {
        for c in &d.chunks {
            output.merge(chunk_output(c));
            agg.push(c);
        }
        d.error
    };
    let pending = std::mem::take(&mut up.pending);
    let mut error = take(pending, &mut agg);
    if error.is_none() && !up.ended {
        let mut watchdog = Watchdog::default();
        let mut last_data = clock_ms();
        loop {
            let read = watchdog
                .next(&mut up.body, last_data + up.idle_ms as f64)
                .await;
            if matches!(read, Some(Some(Ok(_)))) {
                last_data = clock_ms();
            }
            match read {
                None => {
                    error = Some("The upstream stopped sending.".into());
                    break;
                }
                Some(None) => {
                    let end = up.decoder.finish();
                    error = take(end, &mut agg);
                    break;
                }
                Some(Some(Err(_))) => {
                    error = Some("The upstream stream broke off.".into());
                    break;
                }
                Some(Some(Ok(bytes))) => {
                    let d = up.decoder.push(&bytes);
                    error = take(d, &mut agg);
                    if error.is_some() {
                        break;
                    }
                }
            }
        }
    }
    let usage = up.decoder.usage();
    match error {
        Some(m) => Err((
            m,
            Observed {
                ending: Ending::UpstreamFailed,
                usage,
                output_chars: output.chars,
                output_tokens_est: output.tokens,
            },
        )),
        None => {
            let mut full = agg.finish();
            if full.usage.is_none() {
                full.usage = usage.as_ref().map(oa::CompletionUsage::from);
            }
            Ok((full, usage, output))
        }
    }
}

/// Where a stream's events go.
pub trait Sink {
    /// Sends events; `false` when the client is gone.
    fn send(&mut self, events: &[sse::Event]) -> bool;
}

/// The HTTP stream body (the receiving end is `Response::from_stream`): SSE, or with
/// `verbatim` the events' data as it is (Gemini's framing, see `HubEncoder::is_verbatim`).
pub struct SseSink {
    pub tx: UnboundedSender<Result<Vec<u8>, worker::Error>>,
    pub verbatim: bool,
}

impl Sink for SseSink {
    fn send(&mut self, events: &[sse::Event]) -> bool {
        if events.is_empty() {
            return !self.tx.is_closed();
        }
        let bytes = tollbooth_core::translate::hub::wire_bytes(events, self.verbatim).into_bytes();
        self.tx.unbounded_send(Ok(bytes)).is_ok()
    }
}

/// What a pump observed.
pub struct Pumped {
    pub observed: Observed,
    /// The assembled answer, when asked for (capture).
    pub response: Option<oa::ChatCompletionResponse>,
}

/// Forwards the rest of a committed stream to `sink`, chunk by chunk (see the module
/// docs). `log` is the request's context (its log line is written by the caller).
pub async fn pump<S: Sink>(
    mut up: UpstreamStream,
    mut encoder: HubEncoder,
    sink: &mut S,
    log: &mut ReqCtx,
    settlement: &Settlement,
    drain_ms: u64,
    assemble: bool,
) -> Pumped {
    let mut output = Output::default();
    let mut agg = assemble.then(ChunkAggregator::new);
    let mut disconnected = false;
    let mut drain_deadline: Option<f64> = None;
    let mut drained = 0usize;
    let heartbeat_ms = settlement.heartbeat_every_ms();
    let mut next_heartbeat = heartbeat_ms.map(|h| now_ms().saturating_add(h));
    let mut events = Vec::new();
    // (message, already forwarded to the client as the upstream's own error event)
    let mut error: Option<(String, bool)> = None;
    // Idleness is measured from the last bytes, not from the last wake-up (heartbeats
    // wake the loop without data).
    let mut last_data = clock_ms();
    let mut watchdog = Watchdog::default();

    let mut deliver = |d: Decoded,
                       encoder: &mut HubEncoder,
                       events: &mut Vec<sse::Event>,
                       agg: &mut Option<ChunkAggregator>|
     -> Option<String> {
        for c in &d.chunks {
            output.merge(chunk_output(c));
            if let Some(a) = agg.as_mut() {
                a.push(c);
            }
        }
        let err = d.error.clone();
        encoder.encode(d, events);
        err
    };

    let pending = std::mem::take(&mut up.pending);
    if let Some(m) = deliver(pending, &mut encoder, &mut events, &mut agg) {
        error = Some((m, encoder.is_raw()));
    }
    if log.ttft_ms.is_none() {
        log.ttft_ms = Some(clock_ms() - log.started);
    }
    if !sink.send(&events) {
        disconnected = true;
    }
    events.clear();
    if error.is_none() && !up.ended {
        loop {
            if let (Some(at), Some(every)) = (next_heartbeat, heartbeat_ms) {
                if now_ms() >= at {
                    settlement.heartbeat().await;
                    next_heartbeat = Some(now_ms().saturating_add(every));
                }
            }
            let idle_at = last_data + up.idle_ms as f64;
            let mut deadline = idle_at;
            if let Some(d) = drain_deadline {
                deadline = deadline.min(d);
            }
            if let Some(at) = next_heartbeat {
                deadline = deadline.min(at as f64);
            }
            match watchdog.next(&mut up.body, deadline).await {
                None => {
                    if drain_deadline.is_some_and(|d| clock_ms() >= d) {
                        break;
                    }
                    if clock_ms() < idle_at {
                        // Woke for the heartbeat, not for idleness.
                        continue;
                    }
                    error = Some(("The upstream stopped sending.".into(), false));
                    break;
                }
                Some(None) => {
                    let end = up.decoder.finish();
                    if let Some(m) = deliver(end, &mut encoder, &mut events, &mut agg) {
                        error = Some((m, encoder.is_raw()));
                    }
                    break;
                }
                Some(Some(Err(_))) => {
                    error = Some(("The upstream stream broke off.".into(), false));
                    break;
                }
                Some(Some(Ok(bytes))) => {
                    last_data = clock_ms();
                    if disconnected {
                        drained += bytes.len();
                        if drained > DRAIN_LIMIT_BYTES {
                            break;
                        }
                    }
                    let d = up.decoder.push(&bytes);
                    if let Some(m) = deliver(d, &mut encoder, &mut events, &mut agg) {
                        error = Some((m, encoder.is_raw()));
                    }
                    if !disconnected && !sink.send(&events) {
                        disconnected = true;
                        drain_deadline = Some(clock_ms() + drain_ms as f64);
                    }
                    events.clear();
                    if error.is_some() {
                        break;
                    }
                }
            }
        }
    }
    if up.decoder.unreadable_events() > 0 {
        log_error(
            "unreadable upstream events",
            serde_json::json!({"request_id": log.id, "count": up.decoder.unreadable_events()}),
        );
    }
    match &error {
        Some((m, forwarded)) => {
            log.error = Some(m.clone());
            if !forwarded {
                encoder.error(
                    &GatewayError::from_upstream_status(502, m.clone()),
                    &mut events,
                );
            }
        }
        None => encoder.finish(&mut events),
    }
    if !disconnected && !sink.send(&events) {
        disconnected = true;
    }
    let usage = up.decoder.usage();
    log.usage = usage;
    log.status = 200;
    log.client_disconnected = disconnected;
    let ending = if disconnected {
        Ending::ClientAbort
    } else if error.is_some() {
        Ending::UpstreamFailed
    } else {
        Ending::Completed
    };
    let response = agg.map(|a| {
        let mut r = a.finish();
        if r.usage.is_none() {
            r.usage = usage.as_ref().map(oa::CompletionUsage::from);
        }
        r
    });
    Pumped {
        observed: Observed {
            ending,
            usage,
            output_chars: output.chars,
            output_tokens_est: output.tokens,
        },
        response,
    }
}
