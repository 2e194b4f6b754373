//! Training-data export end to end, on the real components: workerd (`wrangler dev
//! --local`, local D1 and R2) capturing conversations from the mock upstream, the admin
//! server on DynamoDB Local with its export bucket on moto's S3, everything reached
//! through the worker's front door. Conversations are reviewed through the admin proxy
//! of the review API, an export job runs in the admin server's background runner, and
//! its three files are downloaded through their presigned URLs and checked record by
//! record against golden expectations (`tests/tests/fixtures/export/`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tollbooth_tests::admin_client::{AdminClient, Stack};
use tollbooth_tests::harness::LocalS3;

const BUCKET: &str = "tollbooth-exports-test";
const TOOL: &str = "get_weather";

fn golden(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/export/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn jsonl(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Kit {
    st: Stack,
    /// The front door: the worker, which forwards `/api/...` to the admin server.
    door: AdminClient,
    http: reqwest::Client,
}

impl Kit {
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.door.req(method, path, Some(&self.st.root), body).await
    }

    /// A chat through the worker with the member's key: the status.
    async fn chat(&self, key: &str, path: &str, body: Value) -> u16 {
        let r = self
            .http
            .post(format!("{}{path}", self.st.worker.base_url))
            .bearer_auth(key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let _ = r.bytes().await; // a cut stream may end in an error: the capture counts
        status
    }

    /// The member's conversations through the admin proxy, once `n` are there.
    async fn wait_conversations(&self, member: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, b) = self
                .admin(
                    "GET",
                    &format!("/api/admin/conversations?member={member}"),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{b}");
            let rows = b["data"].as_array().cloned().unwrap();
            if rows.len() >= n {
                assert_eq!(rows.len(), n, "{b}");
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "conversations never captured: {b}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls an export job until it is done (or failed).
    async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (s, b) = self
                .admin("GET", &format!("/api/admin/exports/{id}"), None)
                .await;
            assert_eq!(s, 200, "{b}");
            match b["state"].as_str().unwrap() {
                "done" | "failed" => return b,
                "queued" | "running" => {}
                other => panic!("unknown state {other}: {b}"),
            }
            assert!(Instant::now() < deadline, "the job never finished: {b}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Downloads each file of a finished job through its presigned URL (no credentials)
    /// and checks its size and SHA-256 against the job record.
    async fn download(&self, job: &Value) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for f in job["files"].as_array().unwrap() {
            let url = f["url"].as_str().unwrap();
            assert!(url.contains("X-Amz-Signature="), "not presigned: {url}");
            let r = reqwest::get(url).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            let bytes = r.bytes().await.unwrap().to_vec();
            assert_eq!(f["bytes"], bytes.len(), "{f}");
            assert_eq!(f["sha256"], hex::encode(Sha256::digest(&bytes)), "{f}");
            out.push((f["name"].as_str().unwrap().to_owned(), bytes));
        }
        out
    }
}

/// An OpenAI-style tool turn already answered: the mock (`tools=once`) replies with text.
fn openai_tools_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 20,
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": TOOL,
                "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}"}],
        "tools": [{"type": "function", "function": {"name": TOOL,
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
}

/// The same turn in the Anthropic Messages shape (`tool_use` / `tool_result` blocks).
fn anthropic_tools_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 20, "system": "You are a weather bot.",
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                "name": TOOL, "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "content": "{\"temp_c\": 9}"}]}],
        "tools": [{"name": TOOL, "description": "Current weather",
                   "input_schema": {"type": "object",
                                    "properties": {"city": {"type": "string"}}}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_export_end_to_end() {
    let s3 = LocalS3::start().await.unwrap();
    let st = Stack::start_with(&[("EXPORT_BUCKET", BUCKET), ("S3_ENDPOINT", &s3.endpoint)])
        .await
        .unwrap();
    st.catalogue().await;
    let door = AdminClient::new(st.worker.base_url.clone());
    let kit = Kit {
        door,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        st,
    };
    let mock = format!("{}/v1", kit.st.mock.base_url);
    let (s, b) = kit
        .admin(
            "POST",
            "/api/admin/providers",
            Some(json!({"id": "anth", "kind": "anthropic", "base_url": mock,
                        "credentials": [{"secret": "sk-upstream-anth-1"}]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    for (name, provider, upstream) in [
        ("tooler", "mock", "gpt-4o-mini@tools=once"),
        ("caller", "mock", "gpt-4o-mini@tools=1"),
        ("cutter", "mock", "gpt-4o-mini@reset_after=1"),
        ("claude-tools", "anth", "claude-x@tools=once"),
    ] {
        let (s, b) = kit
            .admin(
                "POST",
                "/api/admin/models",
                Some(json!({"name": name,
                    "deployments": [{"provider": provider, "model": upstream}],
                    "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
                    "max_output_tokens": 20})),
            )
            .await;
        assert_eq!(s, 201, "{name}: {b}");
    }
    kit.st
        .plan(
            json!({"id": "collect", "name": "Collect", "period": "month",
                     "allowance_amount": 1_000_000, "allowance_unit": "tokens",
                     "allowed_models": ["*"], "capture": true}),
        )
        .await;
    let (token, member) = kit.st.client.signup("trainer@example.com").await;
    let (s, b) = kit
        .st
        .client
        .req(
            "POST",
            "/api/me/subscription",
            Some(&token),
            Some(json!({"plan_id": "collect"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (key, _) = kit.st.key(&token).await;

    // --- Captures: three fit for training, two not, one to reject.
    let plain = json!({"model": "writer", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "Say hello"}]});
    assert_eq!(kit.chat(&key, "/v1/chat/completions", plain).await, 200);
    assert_eq!(
        kit.chat(&key, "/v1/chat/completions", openai_tools_body("tooler"))
            .await,
        200
    );
    assert_eq!(
        kit.chat(&key, "/v1/messages", anthropic_tools_body("claude-tools"))
            .await,
        200
    );
    // A stream the upstream cuts after one chunk.
    let cut = json!({"model": "cutter", "max_tokens": 20, "stream": true,
                     "messages": [{"role": "user", "content": "Tell me a long story"}]});
    kit.chat(&key, "/v1/chat/completions", cut).await;
    // A tool call nobody answered.
    let mut unanswered = openai_tools_body("caller");
    unanswered["messages"] = json!([{"role": "user", "content": "Weather in Rome?"}]);
    assert_eq!(
        kit.chat(&key, "/v1/chat/completions", unanswered).await,
        200
    );
    let reject = json!({"model": "writer", "max_tokens": 20,
                        "messages": [{"role": "user", "content": "Something off-topic"}]});
    assert_eq!(kit.chat(&key, "/v1/chat/completions", reject).await, 200);
    let rows = kit.wait_conversations(&member, 6).await;
    // The list has no text: view each to find the one whose request says `needle`.
    let mut ids = std::collections::BTreeMap::new();
    for row in &rows {
        let id = row["id"].as_str().unwrap().to_owned();
        let (s, v) = kit
            .admin("GET", &format!("/api/admin/conversations/{id}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["conversation"]["id"], id.as_str());
        let text = v["longest"]["request"].to_string();
        for needle in [
            "Say hello",
            "Paris",
            "Oslo",
            "long story",
            "Rome",
            "off-topic",
        ] {
            if text.contains(needle) {
                ids.insert(needle, id.clone());
            }
        }
    }
    assert_eq!(ids.len(), 6, "{ids:?}");

    // --- Review through the admin proxy: a viewer reads but cannot mark; the admin
    // rejects one (with tags and a note) and confirms the rest with one batch call.
    let (s, b) = kit
        .admin(
            "POST",
            "/api/admin/admins",
            Some(
                json!({"email": "viewer@example.com", "password": "viewer-password-1",
                        "role": "viewer"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let viewer = kit
        .door
        .admin_token("viewer@example.com", "viewer-password-1")
        .await;
    let (s, _) = kit
        .door
        .req("GET", "/api/admin/conversations", Some(&viewer), None)
        .await;
    assert_eq!(s, 200);
    let off = ids["off-topic"].clone();
    let (s, e) = kit
        .door
        .req(
            "POST",
            &format!("/api/admin/conversations/{off}/review"),
            Some(&viewer),
            Some(json!({"review": "rejected"})),
        )
        .await;
    assert_eq!(s, 403, "{e}");
    let (s, e) = kit
        .admin(
            "POST",
            &format!("/api/admin/conversations/{off}/review"),
            Some(json!({"review": "maybe"})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "review");
    let (s, b) = kit
        .admin(
            "POST",
            &format!("/api/admin/conversations/{off}/review"),
            Some(json!({"review": "rejected", "tags": ["off-topic"], "note": "not ours"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = kit
        .admin(
            "POST",
            "/api/admin/conversations/review",
            Some(json!({"filter": {"member": member, "review": "pending"},
                        "review": "confirmed", "tags": ["batch"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"updated": 5, "more": false}));
    let (s, b) = kit
        .admin(
            "GET",
            &format!("/api/admin/conversations?member={member}&review=rejected"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"][0]["id"], off.as_str());
    assert_eq!(b["data"][0]["tags"], json!(["off-topic"]));
    let (s, _) = kit
        .admin("GET", "/api/admin/conversations/conv_unknown", None)
        .await;
    assert_eq!(s, 404);
    // The marks are in the audit log.
    let (_, audit) = kit.admin("GET", "/api/admin/audit", None).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"conversation.review"), "{actions:?}");
    assert!(actions.contains(&"conversations.review"), "{actions:?}");

    // --- Export (default: confirmed, ShareGPT), idempotent by key.
    let (s, e) = kit
        .door
        .req("POST", "/api/admin/exports", Some(&viewer), Some(json!({})))
        .await;
    assert_eq!(s, 403, "{e}");
    let create = |key: &'static str, body: Value| {
        let http = kit.http.clone();
        let url = format!("{}/api/admin/exports", kit.st.worker.base_url);
        let root = kit.st.root.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(root)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (s, job) = create("export-1", json!({})).await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["filter"], json!({"review": "confirmed"}));
    let id = job["id"].as_str().unwrap().to_owned();
    let (s, again) = create("export-1", json!({})).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    let job = kit.wait_job(&id).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        job["counts"],
        json!({"valid": 3, "invalid": 2, "total": 5, "skipped": 0})
    );
    assert!(job["urls_expire_at"].as_u64().unwrap() > job["finished_at"].as_u64().unwrap());
    let files = kit.download(&job).await;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["valid.jsonl", "invalid.jsonl", "manifest.json"]);
    let valid = jsonl(&files[0].1);
    let invalid = jsonl(&files[1].1);
    let manifest: Value = serde_json::from_slice(&files[2].1).unwrap();

    // The manifest: the job, its counts, each file's size and hash, the ids per file.
    assert_eq!(manifest["job_id"], id.as_str());
    assert_eq!(manifest["format"], "sharegpt");
    assert_eq!(manifest["filter"], json!({"review": "confirmed"}));
    assert_eq!(manifest["counts"], job["counts"]);
    for (i, (name, bytes)) in files.iter().take(2).enumerate() {
        assert_eq!(manifest["files"][i]["name"], name.as_str());
        assert_eq!(manifest["files"][i]["bytes"], bytes.len());
        assert_eq!(
            manifest["files"][i]["sha256"],
            hex::encode(Sha256::digest(bytes))
        );
    }
    let valid_ids: Vec<String> =
        serde_json::from_value(manifest["conversation_ids"]["valid"].clone()).unwrap();
    let invalid_ids: Vec<String> =
        serde_json::from_value(manifest["conversation_ids"]["invalid"].clone()).unwrap();
    assert_eq!(valid_ids.len(), 3);
    assert!(
        !valid_ids.contains(&off) && !invalid_ids.contains(&off),
        "rejected exported"
    );

    // valid.jsonl record by record against the golden expectations.
    let want = golden("valid.sharegpt.json");
    for (needle, case) in [
        ("Say hello", "plain"),
        ("Paris", "openai_tools"),
        ("Oslo", "anthropic_tools"),
    ] {
        let at = valid_ids.iter().position(|v| *v == ids[needle]).unwrap();
        assert_eq!(valid[at], want[case], "{case}");
    }
    // invalid.jsonl: each record with its id and reasons.
    let mut reasons = std::collections::BTreeMap::new();
    for line in &invalid {
        let codes: Vec<&str> = line["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        assert!(line["conversations"].is_array(), "{line}");
        reasons.insert(line["id"].as_str().unwrap().to_owned(), codes.join(","));
    }
    assert_eq!(reasons[&ids["long story"]], "incomplete", "{invalid:?}");
    assert_eq!(reasons[&ids["Rome"]], "unanswered_call", "{invalid:?}");
    let bad = golden("invalid.sharegpt.json");
    for (needle, case) in [("long story", "cut_short"), ("Rome", "unanswered")] {
        let line = invalid
            .iter()
            .find(|l| l["id"] == ids[needle].as_str())
            .unwrap();
        assert_eq!(line["conversations"], bad[case]["conversations"], "{case}");
        assert_eq!(line["tools"], bad[case]["tools"], "{case}");
    }

    // --- The OpenAI fine-tuning format.
    let (s, job2) = create("export-2", json!({"format": "openai"})).await;
    assert_eq!(s, 202, "{job2}");
    let job2 = kit.wait_job(job2["id"].as_str().unwrap()).await;
    assert_eq!(job2["state"], "done", "{job2}");
    assert_eq!(job2["counts"], job["counts"]);
    let files2 = kit.download(&job2).await;
    let valid2 = jsonl(&files2[0].1);
    let manifest2: Value = serde_json::from_slice(&files2[2].1).unwrap();
    assert_eq!(manifest2["format"], "openai");
    let want2 = golden("valid.openai.json");
    let ids2: Vec<String> =
        serde_json::from_value(manifest2["conversation_ids"]["valid"].clone()).unwrap();
    for (needle, case) in [
        ("Say hello", "plain"),
        ("Paris", "openai_tools"),
        ("Oslo", "anthropic_tools"),
    ] {
        let at = ids2.iter().position(|v| *v == ids[needle]).unwrap();
        assert_eq!(valid2[at], want2[case], "{case}");
    }
    // Both jobs listed, newest first; the viewer may read them.
    let (s, list) = kit
        .door
        .req("GET", "/api/admin/exports", Some(&viewer), None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["data"][0]["id"], job2["id"]);
    assert_eq!(list["data"][1]["id"], id.as_str());

    // --- Deleting the member's captures (a data request) empties the export source.
    let (s, b) = kit
        .admin(
            "DELETE",
            &format!("/api/admin/members/{member}/captures"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["conversations"], 6, "{b}");
    assert_eq!(b["more"], false);
    let (s, b) = kit
        .admin(
            "GET",
            &format!("/api/admin/conversations?member={member}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(b["data"].as_array().unwrap().is_empty(), "{b}");
    drop(s3);
}
