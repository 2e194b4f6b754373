//! A small kit for billing tests against the real edge: a worker under `wrangler dev
//! --local` with the test hooks it needs, an in-process mock upstream, a catalogue
//! published through the signed internal API, and helpers for keys, grants, credits,
//! requests, usage events and the ledger check ([`crate::ledger_check`]).

use std::time::Duration;

use serde_json::{json, Value};
use tollbooth_core::auth::ApiKey;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole};

use crate::harness::{EdgeWorker, WorkerOptions};
use crate::ledger_check;
use crate::mock::{spawn, MockConfig, MockHandle};
use crate::sync_client::SyncClient;

/// The `SYNC_SECRET` of every kit worker.
pub const SECRET: &str = "test-sync-secret-0123456789";

pub struct Gateway {
    pub worker: EdgeWorker,
    pub sync: SyncClient,
    pub mock: MockHandle,
    pub http: reqwest::Client,
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Gateway {
    /// A worker with `vars` (plus `SYNC_SECRET`, `TEST_CLOCK`, loopback upstreams and no
    /// isolate caches) and the catalogue `catalogue(mock base URL)`.
    pub async fn start(vars: &[(&str, &str)], catalogue: impl Fn(&str) -> Value) -> Gateway {
        let mock = spawn(MockConfig::default()).await.expect("mock");
        let mut all: Vec<(String, String)> = [
            ("SYNC_SECRET", SECRET),
            ("TEST_CLOCK", "1"),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("CATALOGUE_TTL_MS", "0"),
            ("KEY_CACHE_TTL_MS", "0"),
            ("BREAKER_FAILURE_THRESHOLD", "100000"),
        ]
        .iter()
        .filter(|(k, _)| !vars.iter().any(|(v, _)| v == k))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let worker = EdgeWorker::start(WorkerOptions { vars: all })
            .await
            .expect("worker");
        let sync = SyncClient::new(&worker.base_url, SECRET);
        let snapshot =
            serde_json::from_value(catalogue(&mock.base_url())).expect("catalogue snapshot");
        let r = sync.put_catalogue(&snapshot).await.expect("catalogue");
        assert_eq!(r.status, 200, "{}", r.body);
        Gateway {
            worker,
            sync,
            mock,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    /// A new key for `member` on `plan`; returns the full key.
    pub async fn key(&self, member: &str, plan: &str, role: KeyRole) -> String {
        let mut seed = [7u8; 32];
        for (i, b) in format!("{member}/{plan}/{role:?}")
            .bytes()
            .take(32)
            .enumerate()
        {
            if let Some(s) = seed.get_mut(i) {
                *s = b;
            }
        }
        let key = ApiKey::generate(&seed);
        let record = KeyRecord {
            public_id: key.public_id().to_string(),
            secret_hash: key.secret_hash(),
            member_id: member.into(),
            plan_id: plan.into(),
            status: Default::default(),
            role,
            expires_at: None,
            allowed_models: None,
            rpm: None,
            tpm: None,
            capture: false,
            app_id: None,
            byok: false,
            name: None,
            version: 1,
        };
        let r = self.sync.put_key(&record).await.expect("put key");
        assert_eq!(r.status, 200, "{}", r.body);
        key.expose()
    }

    /// A plan allowance of `amount` `unit` for the current day (no renewal).
    pub async fn grant(&self, member: &str, unit: &str, amount: u64) {
        let now = now_unix();
        let r = self
            .sync
            .put_allowance(
                member,
                &json!({"plan_id": "basic", "unit": unit, "amount": amount,
                        "period_start": now - 60, "period_end": now + 86_400,
                        "grant_id": format!("grant-{member}-{unit}-{amount}"), "period": "none"}),
            )
            .await
            .expect("grant");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Credits the wallet once.
    pub async fn credit(&self, member: &str, micros: i64) {
        let r = self
            .sync
            .credit_wallet(member, &format!("credit-{member}-{micros}"), micros, "test")
            .await
            .expect("credit");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// POSTs `body` to `path` with `key` (`x-api-key` for `/v1/messages`).
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.worker.base_url))
            .json(body);
        rb = if path.ends_with("/v1/messages") {
            rb.header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
        } else {
            rb.bearer_auth(key)
        };
        rb.send().await.expect("request")
    }

    /// `(status, body)` of a POST.
    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path, key, body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The member's balance view (`GET /internal/v1/members/{id}/balance`).
    pub async fn balance(&self, member: &str) -> Value {
        let r = self.sync.balance(member).await.expect("balance");
        r.body
    }

    /// Waits until the member has no open reservation, then checks the ledger.
    pub async fn settled(&self, member: &str) -> ledger_check::Audit {
        ledger_check::settled_and_balanced(&self.sync, member).await
    }

    /// All usage events of a member.
    pub async fn events(&self, member: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let r = self
                .sync
                .read_feed("usage", &after, 1000)
                .await
                .expect("usage feed");
            let events = r.body["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return out;
            }
            out.extend(events.into_iter().filter(|e| e["member_id"] == member));
            after = r.body["next"].as_str().unwrap_or("0").to_string();
        }
    }

    /// The requests the mock upstream received, oldest first.
    pub async fn upstream_requests(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/_mock/requests", self.mock.base_url()))
            .send()
            .await
            .expect("mock requests")
            .json()
            .await
            .unwrap_or(Value::Null);
        v.as_array().cloned().unwrap_or_default()
    }
}
