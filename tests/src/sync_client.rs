//! A client for the worker's signed internal API (docs/sync-api.md), for tests and for
//! the admin side: every call is signed with `SYNC_SECRET` (HMAC-SHA256 over method, the
//! target host, path with query, timestamp and the body's sha256) and mutating calls
//! carry an idempotency key.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use tollbooth_tests::sync_client::SyncClient;
//! let sync = SyncClient::new("http://127.0.0.1:8787", "secret");
//! let r = sync.credit_wallet("m1", "order-42", 5_000_000, "top-up").await?;
//! assert_eq!(r.status, 200);
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tollbooth_core::auth::signing::{
    canonical_host, sign_request, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use tollbooth_core::catalogue::CatalogueSnapshot;
use tollbooth_core::keyrecord::KeyRecord;

pub const IDEMPOTENCY_HEADER: &str = "x-tollbooth-idempotency-key";
pub const REPLAY_HEADER: &str = "x-tollbooth-idempotent-replay";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response: status, JSON body (Null if not JSON) and whether the worker replayed a
/// stored idempotent result.
#[derive(Debug, Clone)]
pub struct SyncResponse {
    pub status: u16,
    pub body: Value,
    pub idempotent_replay: bool,
}

/// A fully specified signed request, for tests that tamper with one part.
#[derive(Debug, Clone)]
pub struct RawCall {
    pub method: String,
    /// The host the signature binds (the base URL's, unless a test changes it).
    pub host: String,
    pub path_and_query: String,
    pub body: Vec<u8>,
    pub timestamp: u64,
    pub signature: Option<String>,
    pub idempotency_key: Option<String>,
}

pub struct SyncClient {
    /// The last timestamp this client signed with: identical requests in one second
    /// would have identical signatures (refused as replays), so each call gets a
    /// distinct timestamp, running ahead of the clock by at most a few seconds.
    last_ts: AtomicU64,
    base_url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fresh_key() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "idem-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl SyncClient {
    pub fn new(base_url: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            secret: secret.as_ref().to_vec(),
            http: reqwest::Client::new(),
            last_ts: AtomicU64::new(0),
        }
    }

    /// A correctly signed call with the current time and, for mutating methods, a fresh
    /// idempotency key unless one is given.
    pub fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> RawCall {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mutating = matches!(method, "POST" | "PUT" | "DELETE");
        let mut call = RawCall {
            method: method.to_string(),
            host: canonical_host(&self.base_url).unwrap_or_default(),
            path_and_query: path_and_query.to_string(),
            body,
            timestamp: self.next_timestamp(),
            signature: None,
            idempotency_key: idempotency_key
                .map(str::to_string)
                .or_else(|| mutating.then(fresh_key)),
        };
        call.signature = Some(self.sign(&call));
        call
    }

    fn next_timestamp(&self) -> u64 {
        let now = now_unix();
        let mut prev = self.last_ts.load(Ordering::Relaxed);
        loop {
            // Never more than 60 s ahead of the clock (the worker accepts 300 s).
            let next = if prev >= now {
                (prev + 1).min(now + 60)
            } else {
                now
            };
            match self
                .last_ts
                .compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// The signature of `call` as it stands.
    pub fn sign(&self, call: &RawCall) -> String {
        sign_request(
            &self.secret,
            &SignedRequest {
                method: &call.method,
                host: &call.host,
                path_and_query: &call.path_and_query,
                timestamp: call.timestamp,
                body: &call.body,
            },
        )
    }

    /// Sends a call exactly as given (no re-signing).
    pub async fn send(&self, call: &RawCall) -> Result<SyncResponse, BoxError> {
        let method = reqwest::Method::from_bytes(call.method.as_bytes())?;
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base_url, call.path_and_query))
            .header(TIMESTAMP_HEADER, call.timestamp.to_string());
        if let Some(sig) = &call.signature {
            rb = rb.header(SIGNATURE_HEADER, sig);
        }
        if let Some(k) = &call.idempotency_key {
            rb = rb.header(IDEMPOTENCY_HEADER, k);
        }
        if !call.body.is_empty() {
            rb = rb
                .header("content-type", "application/json")
                .body(call.body.clone());
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let idempotent_replay = resp
            .headers()
            .get(REPLAY_HEADER)
            .is_some_and(|v| v == "true");
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(SyncResponse {
            status,
            body,
            idempotent_replay,
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<SyncResponse, BoxError> {
        let call = self.call(method, path, body, idempotency_key);
        self.send(&call).await
    }

    fn to_value<T: Serialize>(v: &T) -> Result<Value, BoxError> {
        Ok(serde_json::to_value(v)?)
    }

    pub async fn put_key(&self, record: &KeyRecord) -> Result<SyncResponse, BoxError> {
        let body = Self::to_value(record)?;
        self.request(
            "PUT",
            &format!("/internal/v1/keys/{}", record.public_id),
            Some(&body),
            None,
        )
        .await
    }

    pub async fn revoke_key(&self, public_id: &str) -> Result<SyncResponse, BoxError> {
        self.request(
            "DELETE",
            &format!("/internal/v1/keys/{public_id}"),
            None,
            None,
        )
        .await
    }

    pub async fn set_member_status(
        &self,
        member_id: &str,
        status: &str,
    ) -> Result<SyncResponse, BoxError> {
        self.request(
            "PUT",
            &format!("/internal/v1/members/{member_id}/status"),
            Some(&json!({ "status": status })),
            None,
        )
        .await
    }

    /// `profile`: `{"email","username","status","plan_expires_at"}` (all optional).
    pub async fn put_member(
        &self,
        member_id: &str,
        profile: &Value,
    ) -> Result<SyncResponse, BoxError> {
        self.request(
            "PUT",
            &format!("/internal/v1/members/{member_id}"),
            Some(profile),
            None,
        )
        .await
    }

    pub async fn put_catalogue(
        &self,
        snapshot: &CatalogueSnapshot,
    ) -> Result<SyncResponse, BoxError> {
        let body = Self::to_value(snapshot)?;
        self.request("PUT", "/internal/v1/catalogue", Some(&body), None)
            .await
    }

    /// Credits (or, negative, debits) a wallet once per `credit_id`. The idempotency key
    /// is derived from the credit id, so a retried call is replayed, not re-applied.
    pub async fn credit_wallet(
        &self,
        member_id: &str,
        credit_id: &str,
        amount_micros: i64,
        reason: &str,
    ) -> Result<SyncResponse, BoxError> {
        self.request(
            "POST",
            &format!("/internal/v1/wallets/{member_id}/credits"),
            Some(&json!({
                "credit_id": credit_id,
                "amount_micros": amount_micros,
                "reason": reason,
            })),
            Some(&format!("credit:{credit_id}")),
        )
        .await
    }

    /// `grant`: `{"plan_id","unit","amount","period_start","period_end","grant_id"}` and
    /// optionally `"period"` (auto-renew rule).
    pub async fn put_allowance(
        &self,
        member_id: &str,
        grant: &Value,
    ) -> Result<SyncResponse, BoxError> {
        let key = grant
            .get("grant_id")
            .and_then(Value::as_str)
            .map(|g| format!("grant:{g}"));
        self.request(
            "PUT",
            &format!("/internal/v1/allowances/{member_id}"),
            Some(grant),
            key.as_deref(),
        )
        .await
    }

    pub async fn balance(&self, member_id: &str) -> Result<SyncResponse, BoxError> {
        self.request(
            "GET",
            &format!("/internal/v1/members/{member_id}/balance"),
            None,
            None,
        )
        .await
    }

    /// `feed`: `usage`, `rollups` or `captures`.
    pub async fn read_feed(
        &self,
        feed: &str,
        after: &str,
        limit: u32,
    ) -> Result<SyncResponse, BoxError> {
        self.request(
            "GET",
            &format!("/internal/v1/{feed}?after={after}&limit={limit}"),
            None,
            None,
        )
        .await
    }

    /// Every usage event of `member`, read through the whole feed page by page.
    pub async fn member_usage_events(&self, member: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let r = self.read_feed("usage", &after, 1000).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            let events = r.body["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return out;
            }
            out.extend(events.into_iter().filter(|e| e["member_id"] == member));
            after = r.body["next"].as_str().unwrap().to_string();
        }
    }

    /// Charges expired reservations and finishes pending settlements now (what the
    /// scheduled handler does).
    pub async fn sweep(&self) -> Result<SyncResponse, BoxError> {
        self.request("POST", "/internal/v1/sweep", None, None).await
    }

    /// [`SyncClient::sweep`] with the ledger clock set to `now` (workers with the
    /// `TEST_CLOCK` hook only).
    pub async fn sweep_at(&self, now: u64) -> Result<SyncResponse, BoxError> {
        let call = self.call("POST", "/internal/v1/sweep", None, None);
        let method = reqwest::Method::POST;
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base_url, call.path_and_query))
            .header(TIMESTAMP_HEADER, call.timestamp.to_string())
            .header("x-tollbooth-test-now", now.to_string());
        if let Some(sig) = &call.signature {
            rb = rb.header(SIGNATURE_HEADER, sig);
        }
        if let Some(k) = &call.idempotency_key {
            rb = rb.header(IDEMPOTENCY_HEADER, k);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok(SyncResponse {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            idempotent_replay: false,
        })
    }

    /// The member's ledger audit: allowances, wallet, credits, usage-event sums and
    /// open reservations, computed by D1 from the rows (see `crate::ledger_check`).
    pub async fn audit(&self, member_id: &str) -> Result<SyncResponse, BoxError> {
        self.request(
            "GET",
            &format!("/internal/v1/members/{member_id}/audit"),
            None,
            None,
        )
        .await
    }

    /// How many settlements are pending (failed, to be finished by the cron).
    pub async fn pending(&self) -> Result<SyncResponse, BoxError> {
        self.request("GET", "/internal/v1/pending", None, None)
            .await
    }
}
