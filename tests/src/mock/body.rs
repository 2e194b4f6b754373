//! Response bodies: a complete buffer, or a channel fed by a task that plays a list of
//! [`Step`]s with the requested pacing, so every event is its own write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, watch};

use super::behavior::Behavior;

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes that are not a content chunk (preamble, finish events, terminator).
    Event(Bytes),
    /// A content chunk; `delay`, `hang_after` and `reset_after` count these.
    Content(Bytes),
    /// Stop sending and keep the connection open until the client leaves.
    Hang,
    /// Abort the TCP connection with a RST.
    Reset,
}

/// Applies `hang_after`, `reset_after` and `malformed` to a planned stream.
pub fn shape_steps(mut steps: Vec<Step>, b: &Behavior, malformed: Bytes) -> Vec<Step> {
    if b.malformed {
        if let Some(pos) = steps.iter().position(|s| matches!(s, Step::Content(_))) {
            steps.insert(pos + 1, Step::Event(malformed));
        }
    }
    let cut = match (b.reset_after, b.hang_after) {
        (Some(n), _) => Some((n, Step::Reset)),
        (None, Some(n)) => Some((n, Step::Hang)),
        (None, None) => None,
    };
    if let Some((n, ending)) = cut {
        let content_positions: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::Content(_)))
            .map(|(i, _)| i)
            .collect();
        let at = match content_positions.get(n) {
            Some(&i) => i,
            None => content_positions.last().map_or(steps.len(), |&i| i + 1),
        };
        steps.truncate(at);
        steps.push(ending);
    }
    steps
}

/// What a body-feeding task needs from its connection.
#[derive(Clone)]
pub struct ConnCtx {
    /// Set before aborting so the connection's socket is closed with a RST.
    pub reset: Arc<AtomicBool>,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Told how a played body ended: `completed`, or `cancelled` when the client went
    /// away first (recorded as `stream_end` in the request log).
    pub on_end: Option<Arc<dyn Fn(&'static str) + Send + Sync>>,
}

type Item = Result<Bytes, io::Error>;

/// The body of every mock response.
pub struct MockBody {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Chan {
        rx: mpsc::Receiver<Item>,
        size: Option<u64>,
        done: bool,
    },
}

impl MockBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> MockBody {
        let b: Bytes = bytes.into();
        MockBody {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
        }
    }

    /// A body played by a background task. `ttft_ms` passes before the first step and
    /// `delay_ms` between content chunks. `size` is an exact length to announce, if any.
    pub fn played(
        steps: Vec<Step>,
        ttft_ms: u64,
        delay_ms: u64,
        size: Option<u64>,
        ctx: ConnCtx,
    ) -> MockBody {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(play(steps, ttft_ms, delay_ms, tx, ctx));
        MockBody {
            inner: Inner::Chan {
                rx,
                size,
                done: false,
            },
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Chan { rx, done, .. } => {
                if *done {
                    return Poll::Ready(None);
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(item)) => Poll::Ready(Some(item.map(Frame::data))),
                    Poll::Ready(None) => {
                        *done = true;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Chan { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Chan { size: Some(n), .. } => SizeHint::with_exact(*n),
            Inner::Chan { .. } => SizeHint::default(),
        }
    }
}

/// Sleeps `ms`; returns false if the client went away meanwhile.
async fn pause(ms: u64, tx: &mpsc::Sender<Item>) -> bool {
    if ms == 0 {
        return !tx.is_closed();
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
        _ = tx.closed() => false,
    }
}

async fn play(steps: Vec<Step>, ttft_ms: u64, delay_ms: u64, tx: mpsc::Sender<Item>, ctx: ConnCtx) {
    let on_end = ctx.on_end.clone();
    let ending = play_steps(steps, ttft_ms, delay_ms, tx, ctx).await;
    if let Some(f) = on_end {
        f(ending);
    }
}

/// Plays the steps; how it ended (see [`ConnCtx::on_end`]).
async fn play_steps(
    steps: Vec<Step>,
    ttft_ms: u64,
    delay_ms: u64,
    tx: mpsc::Sender<Item>,
    mut ctx: ConnCtx,
) -> &'static str {
    const CANCELLED: &str = "cancelled";
    if !pause(ttft_ms, &tx).await {
        return CANCELLED;
    }
    let mut sent_content = 0usize;
    for step in steps {
        match step {
            Step::Event(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    return CANCELLED;
                }
            }
            Step::Content(bytes) => {
                if sent_content > 0 && !pause(delay_ms, &tx).await {
                    return CANCELLED;
                }
                if tx.send(Ok(bytes)).await.is_err() {
                    return CANCELLED;
                }
                sent_content += 1;
            }
            Step::Hang => {
                let shut_down = tokio::select! {
                    _ = tx.closed() => false,
                    _ = ctx.shutdown.wait_for(|down| *down) => true,
                };
                if shut_down {
                    let _ = tx
                        .send(Err(io::Error::other("mock upstream shutting down")))
                        .await;
                    return "shutdown";
                }
                return CANCELLED;
            }
            Step::Reset => {
                // Let the connection flush what was sent, then fail the body: hyper drops the
                // connection and the socket, flagged here, closes with a RST.
                tokio::time::sleep(Duration::from_millis(20)).await;
                ctx.reset.store(true, Ordering::SeqCst);
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "mock reset_after",
                    )))
                    .await;
                return "reset";
            }
        }
    }
    "completed"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &'static str) -> Step {
        Step::Content(Bytes::from_static(s.as_bytes()))
    }
    fn e(s: &'static str) -> Step {
        Step::Event(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn cuts_after_n_content_chunks() {
        let steps = vec![e("start"), c("a"), c("b"), e("end")];
        let b = Behavior::from_request("m@reset_after=1", None);
        assert_eq!(
            shape_steps(steps.clone(), &b, Bytes::new()),
            vec![e("start"), c("a"), Step::Reset]
        );
        let b = Behavior::from_request("m@hang_after=9", None);
        assert_eq!(
            shape_steps(steps.clone(), &b, Bytes::new()),
            vec![e("start"), c("a"), c("b"), Step::Hang]
        );
        let b = Behavior::from_request("m@hang_after=0,malformed", None);
        assert_eq!(
            shape_steps(steps, &b, Bytes::from_static(b"x")),
            vec![e("start"), Step::Hang]
        );
    }
}
