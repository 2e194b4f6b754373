//! Adversarial: revoking a leaked key, or suspending a member, while the edge is down
//! (issue 10, invariant 6). The control plane writes the change and its outbox entry
//! together; the scheduled job retries until the edge acknowledges; the revocation is a
//! tombstone no later push can overwrite, and a stale member push cannot undo a
//! suspension. Driven through the real stack: the admin server on DynamoDB Local and the
//! worker on workerd with local D1/KV, killed and restarted on the same state. After
//! every request the ledger equals the sum of its usage events.

use serde_json::json;
use tollbooth_core::auth::{hash_secret, ApiKey};
use tollbooth_core::keyrecord::{KeyRecord, KeyRole, KeyStatus};
use tollbooth_tests::admin_client::Stack;
use tollbooth_tests::ledger_check::assert_balanced;

fn free_plan() -> serde_json::Value {
    json!({"id": "free", "name": "Free", "period": "month", "allowance_amount": 1_000_000,
           "allowance_unit": "tokens"})
}

#[tokio::test]
async fn test_revocation_and_suspension_survive_an_edge_outage() {
    let mut st = Stack::start().await.unwrap();
    st.catalogue().await;
    st.plan(free_plan()).await;
    let c = &st.client;
    // Alice's key leaks; Bob gets suspended.
    let (alice, alice_id) = c.signup("alice@example.com").await;
    let (bob, bob_id) = c.signup("bob@example.com").await;
    for t in [&alice, &bob] {
        let (s, b) = c
            .req(
                "POST",
                "/api/me/subscription",
                Some(t),
                Some(json!({"plan_id": "free"})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (leaked, leaked_id) = st.key(&alice).await;
    let (bob_key, _) = st.key(&bob).await;
    assert_eq!(st.chat(&leaked, "writer").await.0, 200);
    assert_eq!(st.chat(&bob_key, "writer").await.0, 200);

    // The edge goes down. Revoke and suspend: the store takes the change, the push
    // waits in the outbox.
    st.worker.proc.kill();
    let c = &st.client;
    let (s, b) = c
        .req(
            "DELETE",
            &format!("/api/me/keys/{leaked_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], false, "{b}");
    let (s, b) = c
        .req(
            "POST",
            &format!("/api/admin/members/{bob_id}/suspend"),
            Some(&st.root),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["edge"]["synced"], false, "{b}");
    // A retry of the revoke finds a tombstone, not a key; the job fails quietly while
    // the edge is down and keeps the entries.
    let (s, _) = c
        .req(
            "DELETE",
            &format!("/api/me/keys/{leaked_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let report = st.run_jobs().await;
    assert_eq!(report["edge_outbox"]["delivered"], 0, "{report}");
    let (_, pending) = c
        .req("GET", "/api/admin/edge-outbox", Some(&st.root), None)
        .await;
    let pending = pending["data"].as_array().unwrap().clone();
    assert!(pending.len() >= 2, "{pending:?}");

    // The edge comes back with its old state: it still knows nothing of the change.
    st.worker.crash_and_restart().await.unwrap();
    assert_eq!(
        st.chat(&leaked, "writer").await.0,
        200,
        "before the outbox drains the edge still serves the leaked key (the window)"
    );
    // The job delivers (retries are due after their backoff: force-run twice if needed).
    let mut delivered = 0;
    for _ in 0..30 {
        let report = st.run_jobs().await;
        delivered += report["edge_outbox"]["delivered"].as_u64().unwrap_or(0);
        let (_, left) = st
            .client
            .req("GET", "/api/admin/edge-outbox", Some(&st.root), None)
            .await;
        if left["data"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    assert!(delivered >= 2, "delivered {delivered}");
    let (s, b) = st.chat(&leaked, "writer").await;
    assert_eq!(s, 401, "the revoked key is refused: {b}");
    let (s, b) = st.chat(&bob_key, "writer").await;
    assert!(
        s == 401 || s == 403,
        "the suspended member is refused: {s} {b}"
    );

    // A delayed PUT of the old key record (say from a plan change that listed the keys
    // before the revocation), even with a high version, cannot revive it.
    let parsed = ApiKey::parse(&leaked).unwrap();
    let stale = KeyRecord {
        public_id: leaked_id.clone(),
        secret_hash: hash_secret(parsed.secret()),
        member_id: alice_id.clone(),
        plan_id: "free".into(),
        status: KeyStatus::Active,
        role: KeyRole::Member,
        expires_at: None,
        allowed_models: None,
        rpm: None,
        tpm: None,
        capture: false,
        app_id: None,
        byok: false,
        name: Some("k".into()),
        version: 1_000,
    };
    let r = st.sync.put_key(&stale).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    assert_eq!(st.chat(&leaked, "writer").await.0, 401);
    // A stale member push (an older version, or none) cannot undo the suspension.
    let r = st
        .sync
        .put_member(&bob_id, &json!({"status": "active", "version": 0}))
        .await
        .unwrap();
    assert_eq!(r.body["applied"], false, "{}", r.body);
    let (s, _) = st.chat(&bob_key, "writer").await;
    assert!(s == 401 || s == 403);
    // Nor can Alice's later plan change (it re-pushes her keys: never the tombstone).
    let (s, _) = st
        .client
        .req(
            "POST",
            "/api/me/subscription",
            Some(&alice),
            Some(json!({"plan_id": "free"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(st.chat(&leaked, "writer").await.0, 401);

    for m in [&alice_id, &bob_id] {
        assert_balanced(&st.sync, m).await;
    }
}
