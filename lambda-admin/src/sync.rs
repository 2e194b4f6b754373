//! The edge sync client: how the control plane changes edge state, through the signed
//! internal API of the worker (docs/sync-api.md). The worker is the only writer of KV and
//! D1; this side only ever calls it.
//!
//! Every call is signed with `tollbooth_core::auth::sign_request` under `SYNC_SECRET` and
//! carries an idempotency key chosen by the caller, so a retried push changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tollbooth_core::auth::{sign_request, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use tollbooth_core::catalogue::CatalogueSnapshot;
use tollbooth_core::keyrecord::KeyRecord;

use crate::app::unix_now;

/// Header carrying the caller-chosen idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "x-tollbooth-idempotency-key";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    #[error("edge sync is not configured (EDGE_ORIGIN / SYNC_SECRET unset)")]
    NotConfigured,
    #[error("edge unreachable: {0}")]
    Unreachable(String),
    #[error("edge refused {path}: HTTP {status}")]
    Refused { path: String, status: u16 },
}

/// One internal API call.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCall {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
    pub idempotency_key: String,
}

/// The port: sends one call and returns the worker's JSON answer.
pub trait EdgeSync: Send + Sync {
    fn send(&self, call: SyncCall) -> impl Future<Output = Result<Value, SyncError>> + Send;

    /// Like [`EdgeSync::send`], but a refusal comes back as the worker's status and JSON
    /// body instead of an error, for callers that pass the worker's answer on (the review
    /// API proxy: a 404 or a 400 naming the field). `Err` only when the worker was not
    /// reached or is not configured.
    fn exchange(
        &self,
        call: SyncCall,
    ) -> impl Future<Output = Result<(u16, Value), SyncError>> + Send {
        async move {
            match self.send(call).await {
                Ok(v) => Ok((200, v)),
                Err(SyncError::Refused { status, .. }) => Ok((status, Value::Null)),
                Err(e) => Err(e),
            }
        }
    }
}

/// Typed helpers for the endpoints of docs/sync-api.md.
pub mod calls {
    use super::*;

    pub fn put_key(record: &KeyRecord, idem: String) -> SyncCall {
        SyncCall {
            method: "PUT",
            path: format!("/internal/v1/keys/{}", record.public_id),
            body: serde_json::to_value(record).ok(),
            idempotency_key: idem,
        }
    }
    pub fn delete_key(public_id: &str, idem: String) -> SyncCall {
        SyncCall {
            method: "DELETE",
            path: format!("/internal/v1/keys/{public_id}"),
            body: None,
            idempotency_key: idem,
        }
    }
    pub fn member_status(member_id: &str, status: &str, version: u64, idem: String) -> SyncCall {
        SyncCall {
            method: "PUT",
            path: format!("/internal/v1/members/{member_id}/status"),
            body: Some(json!({ "status": status, "version": version })),
            idempotency_key: idem,
        }
    }
    /// The member record the edge shows at `GET /v1/user-profile` (and its status).
    pub fn member(member_id: &str, body: Value, idem: String) -> SyncCall {
        SyncCall {
            method: "PUT",
            path: format!("/internal/v1/members/{member_id}"),
            body: Some(body),
            idempotency_key: idem,
        }
    }
    pub fn catalogue(snapshot: &CatalogueSnapshot) -> SyncCall {
        SyncCall {
            method: "PUT",
            path: "/internal/v1/catalogue".into(),
            body: serde_json::to_value(snapshot).ok(),
            idempotency_key: format!("catalogue-{}", snapshot.version),
        }
    }
    pub fn credit(member_id: &str, credit_id: &str, amount_micros: i64, reason: &str) -> SyncCall {
        SyncCall {
            method: "POST",
            path: format!("/internal/v1/wallets/{member_id}/credits"),
            body: Some(
                json!({"credit_id": credit_id, "amount_micros": amount_micros, "reason": reason}),
            ),
            idempotency_key: format!("credit-{credit_id}"),
        }
    }
    pub fn allowance(member_id: &str, body: Value, grant_id: &str) -> SyncCall {
        SyncCall {
            method: "PUT",
            path: format!("/internal/v1/allowances/{member_id}"),
            body: Some(body),
            idempotency_key: format!("allowance-{grant_id}"),
        }
    }
}

/// The HTTP client against the worker's origin.
#[derive(Clone)]
pub struct HttpEdgeSync {
    origin: Option<String>,
    secret: Vec<u8>,
    client: reqwest::Client,
    /// Last timestamp used per canonical request (without the timestamp): the worker
    /// refuses a second identical signature as a replay, so an identical call (a retry,
    /// or the same push twice in one second) is signed with a later timestamp.
    last_ts: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for HttpEdgeSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdgeSync")
            .field("origin", &self.origin)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl HttpEdgeSync {
    /// `origin` = the worker's base URL; `None` (or an empty secret) disables syncing.
    pub fn new(origin: Option<String>, secret: Vec<u8>) -> Self {
        // Never follow a redirect: the signed call goes to the configured origin only.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        HttpEdgeSync {
            origin: origin.map(|o| o.trim_end_matches('/').to_owned()),
            secret,
            client,
            last_ts: Arc::default(),
        }
    }
}

impl HttpEdgeSync {
    fn timestamp_for(&self, call: &SyncCall, body: &[u8]) -> u64 {
        let now = unix_now();
        let id = format!(
            "{} {} {}",
            call.method,
            call.path,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
        );
        let Ok(mut last) = self.last_ts.lock() else {
            return now;
        };
        last.retain(|_, t| t.saturating_add(60) >= now);
        let ts = match last.get(&id) {
            Some(prev) if *prev >= now => prev.saturating_add(1),
            _ => now,
        };
        last.insert(id, ts);
        ts
    }
}

impl EdgeSync for HttpEdgeSync {
    async fn send(&self, call: SyncCall) -> Result<Value, SyncError> {
        let path = call.path.clone();
        let (status, body) = self.exchange(call).await?;
        if !(200..300).contains(&status) {
            return Err(SyncError::Refused { path, status });
        }
        Ok(body)
    }

    async fn exchange(&self, call: SyncCall) -> Result<(u16, Value), SyncError> {
        let origin = match &self.origin {
            Some(o) if !self.secret.is_empty() => o,
            _ => return Err(SyncError::NotConfigured),
        };
        let body = call
            .body
            .as_ref()
            .map(|b| b.to_string().into_bytes())
            .unwrap_or_default();
        let ts = self.timestamp_for(&call, &body);
        let host = tollbooth_core::auth::canonical_host(origin).unwrap_or_default();
        let sig = sign_request(
            &self.secret,
            &SignedRequest {
                method: call.method,
                host: &host,
                path_and_query: &call.path,
                timestamp: ts,
                body: &body,
            },
        );
        let method = reqwest::Method::from_bytes(call.method.as_bytes())
            .map_err(|_| SyncError::Unreachable("bad method".into()))?;
        let mut req = self
            .client
            .request(method, format!("{origin}{}", call.path))
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sig)
            .header(IDEMPOTENCY_HEADER, &call.idempotency_key);
        if call.body.is_some() {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SyncError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
    }
}

/// Records every call (and answers `{"ok": true}`), for unit tests.
#[derive(Debug, Clone, Default)]
pub struct RecordingSync {
    pub calls: Arc<Mutex<Vec<SyncCall>>>,
    pub fail: bool,
    /// Like `fail`, but switchable while shared (an edge that goes down and comes back).
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingSync {
    pub fn calls(&self) -> Vec<SyncCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl EdgeSync for RecordingSync {
    async fn send(&self, call: SyncCall) -> Result<Value, SyncError> {
        if self.fail || self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SyncError::Unreachable("recording fake set to fail".into()));
        }
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
        Ok(json!({"ok": true}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A signed push answered with a 307 to another path is not followed: the call fails
    /// as refused, and the redirect target never sees the signed request.
    #[tokio::test]
    async fn test_sync_client_follows_no_redirect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                seen.lock().unwrap().push(path.clone());
                let resp = if path.starts_with("/internal/") {
                    format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{addr}/stolen\r\n\
                         content-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}"
                        .to_owned()
                };
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        let s = HttpEdgeSync::new(Some(format!("http://{addr}")), b"secret-1".to_vec());
        let r = s
            .send(calls::member_status("m1", "suspended", 2, "i-1".into()))
            .await;
        match r {
            Err(SyncError::Refused { status, .. }) => assert_eq!(status, 307),
            other => panic!("a redirect was not refused: {other:?}"),
        }
        let hits = hits.lock().unwrap().clone();
        assert_eq!(hits, ["/internal/v1/members/m1/status"], "{hits:?}");
    }

    #[test]
    fn test_identical_calls_get_distinct_timestamps() {
        let s = HttpEdgeSync::new(Some("http://127.0.0.1:9".into()), b"k".to_vec());
        let call = calls::delete_key("abcd", "i".into());
        let a = s.timestamp_for(&call, b"");
        let b = s.timestamp_for(&call, b"");
        assert!(b > a, "{a} {b}");
        let other = calls::delete_key("efgh", "i".into());
        assert!(s.timestamp_for(&other, b"") <= b);
    }
}
