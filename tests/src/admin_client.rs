//! A small HTTP client for the control plane (the admin server directly, or the
//! worker's front door), shared by the admin adversarial suites.

use std::time::Duration;

use serde_json::{json, Value};

/// The password every test member gets.
pub const MEMBER_PASSWORD: &str = "member-password-9";

/// The password the helpers give an account at its first login: a bootstrap or
/// invited account must change its initial password before any other admin call.
pub fn changed_password(initial: &str) -> String {
    format!("{initial}-changed")
}

/// Accounts whose initial password the helpers changed, by (server, email).
static CHANGED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn account_key(base_url: &str, email: &str) -> String {
    format!("{base_url} {}", email.to_ascii_lowercase())
}

/// Logs an admin in with `initial` (or the password the helpers changed it to before)
/// and, when the server asks for it, changes the initial password to
/// [`changed_password`]; answers the session token, which stays valid.
pub async fn admin_login(
    http: &reqwest::Client,
    base_url: &str,
    email: &str,
    initial: &str,
) -> String {
    let key = account_key(base_url, email);
    let was_changed = CHANGED
        .lock()
        .map(|c| c.iter().any(|(k, _)| *k == key))
        .unwrap_or(false);
    let password = if was_changed {
        changed_password(initial)
    } else {
        initial.to_owned()
    };
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut r = http.post(format!("{base_url}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            match r.send().await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    (s, resp.json::<Value>().await.unwrap_or(Value::Null))
                }
                Err(e) => (0, Value::String(e.to_string())),
            }
        }
    };
    let (s, b) = post(
        "/api/admin/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(s, 200, "admin login: {b}");
    let token = b["token"].as_str().unwrap_or_default().to_owned();
    if b["must_change_password"] == true {
        let (s, b) = post(
            "/api/admin/password",
            Some(&token),
            json!({"current_password": password, "new_password": changed_password(initial)}),
        )
        .await;
        assert_eq!(s, 200, "first password change: {b}");
        if let Ok(mut c) = CHANGED.lock() {
            c.push((key, String::new()));
        }
    }
    token
}

pub struct AdminClient {
    pub base_url: String,
    pub http: reqwest::Client,
}

impl AdminClient {
    /// A client that follows no redirect (the app login flow answers 302).
    pub fn new(base_url: impl Into<String>) -> AdminClient {
        AdminClient {
            base_url: base_url.into(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// One JSON call: status and body (a JSON string when the body is not JSON).
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.req_from(method, path, token, body, None).await
    }

    /// Like [`AdminClient::req`], as if from `address` (`x-forwarded-for`).
    pub async fn req_from(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        address: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        if let Some(a) = address {
            r = r.header("x-forwarded-for", a);
        }
        match r.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// An admin session token ([`admin_login`]: the first login changes the initial
    /// password).
    pub async fn admin_token(&self, email: &str, password: &str) -> String {
        admin_login(&self.http, &self.base_url, email, password).await
    }

    /// Signs a member up: (session token, member id).
    pub async fn signup(&self, email: &str) -> (String, String) {
        let (s, b) = self
            .req(
                "POST",
                "/api/auth/signup",
                None,
                Some(json!({"email": email, "password": MEMBER_PASSWORD})),
            )
            .await;
        assert_eq!(s, 201, "signup: {b}");
        (
            b["token"].as_str().unwrap_or_default().to_owned(),
            b["member"]["id"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// The whole stack as members meet it: DynamoDB Local, the mock upstream, the admin
/// server (pushing to the worker over the signed internal API) and the worker on
/// workerd (forwarding control-plane paths to the admin server). `client` talks to the
/// admin server directly (it keeps answering while the worker is down); `sync` is the
/// internal API client for audits and hand-made (stale) pushes.
pub struct Stack {
    pub client: AdminClient,
    pub worker: crate::harness::EdgeWorker,
    pub sync: crate::sync_client::SyncClient,
    pub mock: crate::harness::MockUpstream,
    pub admin: crate::harness::AdminServer,
    pub dynamo: crate::harness::DynamoLocal,
    pub root: String,
}

pub const STACK_SYNC_SECRET: &str = "adv-sync-secret-0123456789abcdef0123";
pub const STACK_ADMIN_EMAIL: &str = "ops@example.com";
pub const STACK_ADMIN_PASSWORD: &str = "ops-password-123";

impl Stack {
    pub async fn start() -> Result<Stack, crate::harness::BoxError> {
        Self::start_with(&[]).await
    }

    /// [`Stack::start`] with more variables for the admin server (e.g. the export
    /// bucket's `EXPORT_BUCKET` and `S3_ENDPOINT`).
    pub async fn start_with(admin_env: &[(&str, &str)]) -> Result<Stack, crate::harness::BoxError> {
        use crate::harness::{
            free_port, AdminServer, DynamoLocal, EdgeWorker, MockUpstream, WorkerOptions,
        };
        let dynamo = DynamoLocal::start().await?;
        let mock = MockUpstream::start(&[]).await?;
        let worker_port = free_port();
        let worker_url = format!("http://127.0.0.1:{worker_port}");
        let mut env = vec![
            ("EDGE_ORIGIN", worker_url.as_str()),
            ("SYNC_SECRET", STACK_SYNC_SECRET),
            ("ADMIN_EMAIL", STACK_ADMIN_EMAIL),
            ("ADMIN_PASSWORD", STACK_ADMIN_PASSWORD),
        ];
        env.extend_from_slice(admin_env);
        let admin = AdminServer::start(&dynamo.endpoint, &env).await?;
        let vars = [
            ("SYNC_SECRET", STACK_SYNC_SECRET),
            ("ALLOW_LOOPBACK_UPSTREAMS", "true"),
            ("CATALOGUE_TTL_MS", "0"),
            ("KEY_CACHE_TTL_MS", "0"),
            ("ADMIN_ORIGIN", admin.base_url.as_str()),
        ];
        let worker = EdgeWorker::start_on(
            worker_port,
            WorkerOptions {
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )
        .await?;
        let client = AdminClient::new(admin.base_url.clone());
        let root = client
            .admin_token(STACK_ADMIN_EMAIL, STACK_ADMIN_PASSWORD)
            .await;
        let sync = crate::sync_client::SyncClient::new(worker.base_url.clone(), STACK_SYNC_SECRET);
        Ok(Stack {
            client,
            worker,
            sync,
            mock,
            admin,
            dynamo,
            root,
        })
    }

    /// Provider `mock` (the mock upstream) and model `writer` (priced, 1 micro per
    /// token each way, at most 20 output tokens).
    pub async fn catalogue(&self) {
        let (s, b) = self
            .client
            .req(
                "POST",
                "/api/admin/providers",
                Some(&self.root),
                Some(json!({"id": "mock", "kind": "openai",
                    "base_url": format!("{}/v1", self.mock.base_url),
                    "credentials": [{"secret": "sk-upstream-secret-1"}]})),
            )
            .await;
        assert_eq!(s, 201, "provider: {b}");
        let (s, b) = self
            .client
            .req(
                "POST",
                "/api/admin/models",
                Some(&self.root),
                Some(json!({"name": "writer",
                    "deployments": [{"provider": "mock", "model": "gpt-4o-mini"}],
                    "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
                    "max_output_tokens": 20})),
            )
            .await;
        assert_eq!(s, 201, "model: {b}");
    }

    /// A plan through the admin API (published to the edge).
    pub async fn plan(&self, plan: Value) {
        let (s, b) = self
            .client
            .req("POST", "/api/admin/plans", Some(&self.root), Some(plan))
            .await;
        assert_eq!(s, 201, "plan: {b}");
        assert_eq!(b["edge"]["synced"], true, "catalogue push: {b}");
    }

    /// A member key: (full key, public id).
    pub async fn key(&self, token: &str) -> (String, String) {
        let (s, b) = self
            .client
            .req(
                "POST",
                "/api/me/keys",
                Some(token),
                Some(json!({"name": "k"})),
            )
            .await;
        assert_eq!(s, 201, "key: {b}");
        (
            b["key"].as_str().unwrap_or_default().to_owned(),
            b["public_id"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// One chat completion through the worker: (status, body).
    pub async fn chat(&self, key: &str, model: &str) -> (u16, Value) {
        let r = self
            .client
            .http
            .post(format!("{}/v1/chat/completions", self.worker.base_url))
            .bearer_auth(key)
            .json(&json!({"model": model, "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hello there"}]}))
            .send()
            .await;
        match r {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// Runs the scheduled job now, every outbox entry whatever its backoff
    /// (`POST /api/admin/jobs/run?force=1`).
    pub async fn run_jobs(&self) -> Value {
        let (s, b) = self
            .client
            .req(
                "POST",
                "/api/admin/jobs/run?force=1",
                Some(&self.root),
                None,
            )
            .await;
        assert_eq!(s, 200, "jobs: {b}");
        b
    }
}
