//! `POST /v1/embeddings` and `POST /v1/rerank`: one JSON request, one JSON answer, to
//! OpenAI-compatible (Jina/Cohere-shaped for rerank) providers, with the same routing,
//! failover and breakers as chat.

use std::rc::Rc;

use serde_json::Value;
use tollbooth_core::catalogue::{Catalogue, ModelKind};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::routing::{counts_against_health, is_retryable, AttemptFailure};
use tollbooth_core::usage::Usage;
use worker::{Context, Env, Response};

use super::{json_response, require_model, resolve_allowed, ReqCtx};
use crate::breakers;
use crate::config::Config;
use crate::metering::{self, MeterRequest, Outcome};
use crate::upstream;
use crate::util::{clock_ms, now_ms, random_u64};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum JsonEndpoint {
    Embeddings,
    Rerank,
}

impl JsonEndpoint {
    fn path(self) -> &'static str {
        match self {
            JsonEndpoint::Embeddings => "embeddings",
            JsonEndpoint::Rerank => "rerank",
        }
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    let input = u
        .get("prompt_tokens")
        .or_else(|| u.get("total_tokens"))
        .and_then(Value::as_u64)?;
    Some(Usage {
        input_tokens: input,
        ..Usage::default()
    })
}

#[allow(clippy::too_many_arguments)]
pub async fn json_handler(
    rc: &mut ReqCtx,
    env: &Env,
    ctx: &Context,
    config: &Rc<Config>,
    catalogue: Rc<Catalogue>,
    key: Rc<KeyRecord>,
    body: &[u8],
    endpoint: JsonEndpoint,
) -> Result<Response, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(GatewayError::invalid_request(
            "The request body must be a JSON object.",
        ));
    }
    let model = require_model(&value)?;
    match endpoint {
        JsonEndpoint::Embeddings if value.get("input").is_none_or(Value::is_null) => {
            return Err(GatewayError::invalid_param("`input` is required.", "input"))
        }
        JsonEndpoint::Rerank if !value.get("query").is_some_and(Value::is_string) => {
            return Err(GatewayError::invalid_param("`query` is required.", "query"))
        }
        JsonEndpoint::Rerank if !value.get("documents").is_some_and(Value::is_array) => {
            return Err(GatewayError::invalid_param(
                "`documents` is required.",
                "documents",
            ))
        }
        _ => {}
    }
    rc.model = Some(model.clone());
    let resolved = resolve_allowed(&catalogue, &key, &model)?;
    let want = match endpoint {
        JsonEndpoint::Embeddings => ModelKind::Embedding,
        JsonEndpoint::Rerank => ModelKind::Rerank,
    };
    if resolved.model.is_some_and(|m| m.kind != want) {
        return Err(GatewayError::invalid_param(
            format!(
                "The model `{model}` does not support /v1/{}.",
                endpoint.path()
            ),
            "model",
        ));
    }
    let meter_req = MeterRequest {
        request_id: rc.id.clone(),
        key_public_id: key.public_id.clone(),
        member_id: key.member_id.clone(),
        plan_id: key.plan_id.clone(),
        endpoint: match endpoint {
            JsonEndpoint::Embeddings => "/v1/embeddings",
            JsonEndpoint::Rerank => "/v1/rerank",
        },
        model: resolved.name.to_owned(),
        prompt_chars: u64::try_from(body.len()).unwrap_or(u64::MAX),
        max_output_tokens: Some(0),
        stream: false,
        capture: false,
    };
    metering::check_rate_limit(env, &meter_req).await?;
    let reservation = metering::reserve(env, &meter_req).await?;

    let now = now_ms();
    let mut order = Vec::new();
    let weights: Vec<u32> = resolved.targets.iter().map(|t| t.weight).collect();
    for ti in tollbooth_core::routing::weighted_order(&weights, random_u64()) {
        let Some(t) = resolved.targets.get(ti) else {
            continue;
        };
        let cw: Vec<u32> = t.provider.credentials.iter().map(|c| c.weight).collect();
        let avail: Vec<bool> = t
            .provider
            .credentials
            .iter()
            .map(|c| {
                breakers::allows(
                    &breakers::breaker_key(&t.provider.id, &c.id),
                    now,
                    &config.breaker,
                )
            })
            .collect();
        for ci in
            tollbooth_core::routing::fallback_order(&cw, &avail, random_u64(), Default::default())
        {
            order.push((ti, ci));
        }
    }
    let max_attempts = usize::try_from(catalogue.settings().max_attempts.max(1)).unwrap_or(1);
    let mut last_err = GatewayError::Overloaded {
        message: "No upstream is available for this model right now.".into(),
        retry_after_secs: None,
    };
    for (ti, ci) in order.into_iter().take(max_attempts) {
        let Some(t) = resolved.targets.get(ti) else {
            continue;
        };
        let Some(cred) = t.provider.credentials.get(ci) else {
            continue;
        };
        let bkey = breakers::breaker_key(&t.provider.id, &cred.id);
        let _ = breakers::try_acquire(&bkey, now_ms(), &config.breaker);
        let req = match upstream::json_request(
            t.provider,
            cred,
            t.upstream_model,
            endpoint.path(),
            &value,
            config.allow_loopback_upstreams,
        ) {
            Ok(r) => r,
            Err(e @ GatewayError::InvalidRequest { .. }) => return Err(e),
            Err(e) => {
                last_err = e;
                continue;
            }
        };
        rc.attempts += 1;
        rc.deployment = Some(format!("{}/{}", t.provider.id, t.upstream_model));
        let t0 = clock_ms();
        let sent = upstream::send(&req, t.provider.timeout_ms.max(1)).await;
        let fail = |f: AttemptFailure| {
            if counts_against_health(f) {
                breakers::on_failure(&bkey, now_ms(), &config.breaker);
            }
        };
        let (mut resp, _controller) = match sent {
            Ok(v) => v,
            Err(f) => {
                rc.upstream_ms += clock_ms() - t0;
                fail(f);
                last_err = if f == AttemptFailure::Timeout {
                    GatewayError::UpstreamTimeout {
                        message: "The upstream did not answer in time.".into(),
                    }
                } else {
                    GatewayError::from_upstream_status(502, "The upstream could not be reached.")
                };
                continue;
            }
        };
        let status = resp.status_code();
        let text = resp.text().await.unwrap_or_default();
        rc.upstream_ms += clock_ms() - t0;
        if !(200..300).contains(&status) {
            let f = AttemptFailure::Status(status);
            fail(f);
            last_err = GatewayError::from_upstream_status(status, upstream::error_message(&text));
            if is_retryable(f, false) || matches!(status, 401 | 403) {
                continue;
            }
            return Err(last_err);
        }
        let Ok(mut parsed) = serde_json::from_str::<Value>(&text) else {
            fail(AttemptFailure::Status(502));
            last_err =
                GatewayError::from_upstream_status(502, "The upstream sent an unreadable answer.");
            continue;
        };
        breakers::on_success(&bkey);
        if let Some(obj) = parsed.as_object_mut() {
            if obj.contains_key("model") {
                obj.insert("model".into(), Value::String(model.clone()));
            }
        }
        let usage = usage_of(&parsed);
        rc.usage = usage;
        rc.status = 200;
        let outcome = Outcome {
            status: 200,
            deployment: rc.deployment.clone(),
            usage,
            ..Outcome::default()
        };
        let env2 = env.clone();
        ctx.wait_until(
            async move { metering::settle(&env2, &meter_req, reservation, outcome).await },
        );
        return json_response(&parsed.to_string());
    }
    let outcome = Outcome {
        status: last_err.http_status(),
        ..Outcome::default()
    };
    let env2 = env.clone();
    ctx.wait_until(async move { metering::settle(&env2, &meter_req, reservation, outcome).await });
    Err(last_err)
}
