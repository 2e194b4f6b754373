//! Adversarial: switching plans to reset a used allowance (issue 10, invariant 5). A
//! member uses up a free plan, then toggles between two free plans (A→B→A) or goes
//! through a paid plan and back: inside one period every switch updates the same
//! allowance period at the edge, which keeps what was used, so the member stays
//! refused. Through the real stack (admin server on DynamoDB Local, worker on workerd
//! with local D1/KV); after every request the ledger equals the sum of its usage events.

use serde_json::json;
use tollbooth_tests::admin_client::Stack;
use tollbooth_tests::ledger_check::assert_balanced;

#[tokio::test]
async fn test_toggling_free_plans_never_refills_the_allowance() {
    let st = Stack::start().await.unwrap();
    st.catalogue().await;
    // Two small free plans (a few requests each) and a paid one.
    for (id, amount) in [("free", 60), ("student", 60)] {
        st.plan(
            json!({"id": id, "name": id, "period": "month", "allowance_amount": amount,
                       "allowance_unit": "tokens"}),
        )
        .await;
    }
    st.plan(
        json!({"id": "pro", "name": "Pro", "period": "month", "price_micros": 9_000_000,
                   "allowance_amount": 60, "allowance_unit": "tokens"}),
    )
    .await;
    let c = &st.client;
    let (token, member) = c.signup("toggler@example.com").await;
    let subscribe = |plan: &'static str| {
        let token = token.clone();
        async move {
            let (s, b) = c
                .req(
                    "POST",
                    "/api/me/subscription",
                    Some(&token),
                    Some(json!({"plan_id": plan})),
                )
                .await;
            assert_eq!(s, 200, "{plan}: {b}");
            assert_eq!(b["edge"]["synced"], true, "{plan}: {b}");
        }
    };
    subscribe("free").await;
    let (key, _) = st.key(&token).await;

    // Use the allowance up.
    let mut served = 0;
    let mut refused = None;
    for _ in 0..20 {
        let (s, b) = st.chat(&key, "writer").await;
        assert_balanced(&st.sync, &member).await;
        if s == 200 {
            served += 1;
        } else {
            refused = Some((s, b));
            break;
        }
    }
    let (status, body) = refused.expect("the allowance never ran out");
    assert!(served >= 1, "nothing was served at all: {status} {body}");
    assert!(status == 402 || status == 429, "{status} {body}");

    // Toggle: every switch lands in the same period, with what was used kept.
    for plan in ["student", "free", "student", "free"] {
        subscribe(plan).await;
        let (s, b) = st.chat(&key, "writer").await;
        assert_eq!(
            s, status,
            "after switching to {plan} the member was served: {b}"
        );
        assert_balanced(&st.sync, &member).await;
    }
    let periods = st.sync.audit(&member).await.unwrap().body["allowances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        periods.len(),
        1,
        "one period, not one per switch: {periods:?}"
    );

    // An admin's move to the paid plan (as a payment would) starts a paid period; going
    // back to free inside it keeps the paid period's row: no fresh free allowance.
    let (s, b) = c
        .req(
            "POST",
            &format!("/api/admin/members/{member}/subscription"),
            Some(&st.root),
            Some(json!({"plan_id": "pro", "action": "start"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut paid_served = 0;
    for _ in 0..20 {
        let (s, _) = st.chat(&key, "writer").await;
        if s != 200 {
            break;
        }
        paid_served += 1;
    }
    assert!(paid_served >= 1, "the paid period was not granted");
    subscribe("free").await;
    let (s, b) = st.chat(&key, "writer").await;
    assert_ne!(s, 200, "paid -> free opened a fresh free allowance: {b}");
    assert_balanced(&st.sync, &member).await;
}

/// A paid plan grants a paid-only model; when the subscription ends (the admin's
/// `expire`, as a lapsed payment would) and the scheduled job runs, the member's key is
/// refused that model at the edge, through the worker, and stays refused.
#[tokio::test]
async fn test_ended_paid_subscription_loses_the_paid_only_model_at_the_edge() {
    let st = Stack::start().await.unwrap();
    st.catalogue().await;
    let c = &st.client;
    let (s, b) = c
        .req(
            "POST",
            "/api/admin/models",
            Some(&st.root),
            Some(json!({"name": "premium",
                "deployments": [{"provider": "mock", "model": "gpt-4o"}],
                "price": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
                "max_output_tokens": 20})),
        )
        .await;
    assert_eq!(s, 201, "model: {b}");
    st.plan(json!({"id": "free", "name": "Free", "period": "month",
                   "allowance_amount": 100_000, "allowance_unit": "tokens",
                   "allowed_models": ["writer"]}))
        .await;
    st.plan(
        json!({"id": "pro", "name": "Pro", "period": "month", "price_micros": 9_000_000,
                   "allowance_amount": 100_000, "allowance_unit": "tokens",
                   "allowed_models": ["writer", "premium"]}),
    )
    .await;
    let (token, member) = c.signup("lapsed@example.com").await;
    let (s, b) = c
        .req(
            "POST",
            "/api/me/subscription",
            Some(&token),
            Some(json!({"plan_id": "free"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (key, _) = st.key(&token).await;
    let (s, b) = st.chat(&key, "premium").await;
    assert_ne!(s, 200, "the free plan reached the paid-only model: {b}");
    assert_balanced(&st.sync, &member).await;

    let admin_sub = |action: &'static str| {
        let path = format!("/api/admin/members/{member}/subscription");
        let root = st.root.clone();
        async move {
            let (s, b) = c
                .req(
                    "POST",
                    &path,
                    Some(&root),
                    Some(json!({"plan_id": "pro", "action": action})),
                )
                .await;
            assert_eq!(s, 200, "{action}: {b}");
            b
        }
    };
    admin_sub("start").await;
    let (s, b) = st.chat(&key, "premium").await;
    assert_eq!(s, 200, "the paid plan did not grant its model: {b}");
    assert_balanced(&st.sync, &member).await;

    let b = admin_sub("expire").await;
    assert_eq!(b["subscription"]["status"], "expired", "{b}");
    st.run_jobs().await;
    for _ in 0..2 {
        let (s, b) = st.chat(&key, "premium").await;
        assert!(
            s == 402 || s == 403,
            "an ended paid subscription still reached the paid-only model: {s} {b}"
        );
        assert_balanced(&st.sync, &member).await;
        // A second job run must not bring the paid terms back.
        st.run_jobs().await;
    }
    let (s, b) = c
        .req("GET", "/api/me/subscription", Some(&token), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(b["subscription"]["status"], "active", "{b}");
}
