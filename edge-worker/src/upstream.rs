//! The only place that fetches provider URLs: an [`UpstreamRequest`] built by
//! `tollbooth_core::provider` goes out with a timeout, redirects are never followed (a
//! redirect could carry the credential elsewhere), and the body is read with a timeout.

use futures_util::future::{select, Either};
use tollbooth_core::provider::{UpstreamMethod, UpstreamRequest};
use tollbooth_core::routing::AttemptFailure;
use worker::wasm_bindgen::JsValue;
use worker::{
    AbortSignal, Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response,
};

/// Aborts one upstream fetch (its response body too). Unlike `worker::AbortController`
/// it can be shared: speculative admission keeps a copy to cancel a call whose
/// admission was refused while the attempt loop still owns the original.
#[derive(Debug, Clone)]
pub struct Abort(worker::web_sys::AbortController);

impl Abort {
    fn new() -> Option<Self> {
        worker::web_sys::AbortController::new().ok().map(Abort)
    }

    fn signal(&self) -> AbortSignal {
        AbortSignal::from(self.0.signal())
    }

    /// Cancels the fetch, or the reading of its body (idempotent).
    pub fn abort(&self) {
        self.0.abort();
    }
}

/// Awaits `fut` for at most `ms`; `None` on timeout.
pub async fn within<F: std::future::Future>(fut: F, ms: u64) -> Option<F::Output> {
    let timeout = Delay::from(std::time::Duration::from_millis(ms));
    futures_util::pin_mut!(fut);
    match select(fut, timeout).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Sends `req`, giving up after `timeout_ms` without response headers. The returned
/// controller aborts the body later (e.g. when the first event does not come in time).
pub async fn send(
    req: &UpstreamRequest,
    timeout_ms: u64,
    track: Option<&dyn Fn(&Abort)>,
) -> Result<(Response, Abort), AttemptFailure> {
    let headers = Headers::new();
    for (k, v) in &req.headers {
        headers.set(k, v).map_err(|_| AttemptFailure::Connect)?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    match req.method {
        UpstreamMethod::Get => {
            init.with_method(Method::Get);
        }
        UpstreamMethod::Post => {
            // Bytes, not a JS string: no UTF-16 round trip.
            let body = worker::js_sys::Uint8Array::from(req.body.as_bytes());
            init.with_method(Method::Post)
                .with_body(Some(JsValue::from(body)));
        }
    }
    let request = Request::new_with_init(&req.url, &init).map_err(|_| AttemptFailure::Connect)?;
    let controller = Abort::new().ok_or(AttemptFailure::Connect)?;
    if let Some(track) = track {
        track(&controller);
    }
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sending = fetch.send_with_signal(&signal);
    match within(sending, timeout_ms).await {
        Some(Ok(resp)) => Ok((resp, controller)),
        Some(Err(_)) => Err(AttemptFailure::Connect),
        None => {
            controller.abort();
            Err(AttemptFailure::Timeout)
        }
    }
}

/// The whole body as text, or `None` when it does not arrive within `timeout_ms`.
pub async fn read_text(resp: &mut Response, timeout_ms: u64) -> Option<String> {
    within(resp.text(), timeout_ms).await.and_then(Result::ok)
}
