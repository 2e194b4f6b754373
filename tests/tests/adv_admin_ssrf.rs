//! Adversarial: making the control plane fetch internal addresses (issue 10, invariant
//! 9). Provider base URLs are checked when saved and again at every model pull, with the
//! same URL check as the edge plus every DNS answer of the name; the pull connects only
//! to the checked addresses and follows no redirect. The real `admin-api` binary on
//! DynamoDB Local: one instance as in production (no loopback), one as in `make dev`
//! (`ALLOW_LOOPBACK_UPSTREAMS=1`, for the redirect case).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tollbooth_tests::admin_client::AdminClient;
use tollbooth_tests::harness::{AdminServer, DynamoLocal};

const ADMIN_EMAIL: &str = "ops@example.com";
const ADMIN_PASSWORD: &str = "ops-password-123";

/// A server answering every request with `status` and `location`, counting hits.
async fn serve(status: u16, location: Option<String>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let h = Arc::clone(&h);
            let location = location.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let location = location.clone();
                    async move {
                        let body = json!({"data": [{"id": "internal-secret-model"}]}).to_string();
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        if let Some(l) = location {
                            resp.headers_mut().insert("location", l.parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, hits)
}

fn provider(id: &str, base_url: &str) -> serde_json::Value {
    json!({"id": id, "kind": "openai", "base_url": base_url,
           "credentials": [{"secret": "sk-provider-secret-123456"}]})
}

#[tokio::test]
async fn test_admin_cannot_be_pointed_at_internal_addresses() {
    let dynamo = DynamoLocal::start().await.unwrap();
    let creds = [
        ("ADMIN_EMAIL", ADMIN_EMAIL),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
    ];
    let mut prod_env = creds.to_vec();
    prod_env.push(("ALLOW_LOOPBACK_UPSTREAMS", "0"));
    let prod = AdminServer::start(&dynamo.endpoint, &prod_env)
        .await
        .unwrap();
    let c = AdminClient::new(prod.base_url.clone());
    let root = c.admin_token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (internal, internal_hits) = serve(200, None).await;

    // This machine's own name: a DNS name whose answers are not public.
    let host = std::process::Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let port = internal.rsplit(':').next().unwrap().to_owned();
    let mut targets = vec![
        format!("{internal}/v1"),
        "http://127.0.0.1:9001/2018-06-01/runtime".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[fd00:ec2::254]/latest".to_owned(),
        "http://10.0.0.5:8080/v1".to_owned(),
        "http://192.168.1.1/v1".to_owned(),
        "http://100.100.100.200/v1".to_owned(),
        "http://0x7f.0.0.1/v1".to_owned(),
        "http://2130706433/v1".to_owned(),
        "http://[::ffff:127.0.0.1]/v1".to_owned(),
        "http://0.0.0.0/v1".to_owned(),
        format!("http://localhost:{port}/v1"),
        "http://metadata.google.internal/v1".to_owned(),
    ];
    let host_private = !host.is_empty()
        && tokio::net::lookup_host((host.as_str(), 80))
            .await
            .map(|addrs| {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty()
                    && addrs.iter().all(|a| match a.ip() {
                        std::net::IpAddr::V4(v) => {
                            v.is_loopback() || v.is_private() || v.is_link_local()
                        }
                        std::net::IpAddr::V6(v) => v.is_loopback(),
                    })
            })
            .unwrap_or(false);
    if host_private {
        targets.push(format!("http://{host}:{port}/v1"));
    }
    for (i, base) in targets.iter().enumerate() {
        let (s, b) = c
            .req(
                "POST",
                "/api/admin/providers",
                Some(&root),
                Some(provider(&format!("p{i}"), base)),
            )
            .await;
        assert_eq!(s, 400, "{base} was accepted: {b}");
        assert_eq!(b["error"]["param"], "base_url", "{b}");
        assert!(!b.to_string().contains("sk-provider-secret"));
    }
    assert!(host_private || host.is_empty(), "{host} resolves publicly?");
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "nothing internal was fetched"
    );

    // A name without DNS answers may be saved (DNS may come later), but the pull
    // checks again and refuses it before sending the credential anywhere.
    let (s, b) = c
        .req(
            "POST",
            "/api/admin/providers",
            Some(&root),
            Some(provider("later", "https://tb-no-such-host.invalid/v1")),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = c
        .req("POST", "/api/admin/providers/later/pull", Some(&root), None)
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["param"], "base_url");

    // The dev-mode instance allows loopback, but never follows a redirect: a provider
    // answering 302 to an internal address is an error, and the target is not fetched.
    let mut dev_env = creds.to_vec();
    dev_env.push(("ALLOW_LOOPBACK_UPSTREAMS", "1"));
    let dev = AdminServer::start(&dynamo.endpoint, &dev_env)
        .await
        .unwrap();
    let d = AdminClient::new(dev.base_url.clone());
    let root = d.admin_token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (redirector, redirect_hits) = serve(302, Some(format!("{internal}/v1/models"))).await;
    let (s, b) = d
        .req(
            "POST",
            "/api/admin/providers",
            Some(&root),
            Some(provider("bouncer", &format!("{redirector}/v1"))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = d
        .req(
            "POST",
            "/api/admin/providers/bouncer/pull",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(s, 502, "{b}");
    // Two calls reached it: the credential check on save and the pull.
    assert_eq!(redirect_hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    // Even in dev mode, private (non-loopback) addresses stay refused.
    let (s, _) = d
        .req(
            "POST",
            "/api/admin/providers",
            Some(&root),
            Some(provider("meta", "http://169.254.169.254/latest")),
        )
        .await;
    assert_eq!(s, 400);
}
