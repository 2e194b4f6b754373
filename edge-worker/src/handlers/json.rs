//! `POST /v1/embeddings` and `POST /v1/rerank`: one JSON request, one JSON answer, to
//! OpenAI-compatible (Jina/Cohere-shaped for rerank) providers, through the same
//! admission, attempt loop and settlement guard as chat.

use serde_json::{Map, Value};
use tollbooth_core::billing::{Ending, Observed};
use tollbooth_core::catalogue::{Credential, ModelKind, Target};
use tollbooth_core::error::GatewayError;
use tollbooth_core::provider::{self, UpstreamRequest};
use tollbooth_core::routing::AttemptFailure;
use tollbooth_core::usage::Usage;
use worker::Response;

use super::{authed, resolve_allowed};
use crate::breakers;
use crate::catalogue;
use crate::context::{EdgeError, ReqCtx};
use crate::middleware::{json_response, Call};
use crate::pipeline::attempts::{self, Attempt, Verdict};
use crate::pipeline::ingress::{parse_json, JsonKind};
use crate::pipeline::metering::{self, Finish, Meter};
use crate::protect;
use crate::upstream::{self, Abort};

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

struct JsonAttempt<'a> {
    endpoint: JsonEndpoint,
    body: &'a Map<String, Value>,
    model: &'a str,
    allow_loopback: bool,
}

impl Attempt for JsonAttempt<'_> {
    type Output = Value;

    fn build(
        &mut self,
        target: &Target<'_>,
        cred: &Credential,
    ) -> Result<UpstreamRequest, GatewayError> {
        provider::json_request(
            target.provider,
            cred,
            target.upstream_model,
            self.endpoint.path(),
            self.body,
            self.allow_loopback,
        )
    }

    async fn accept(
        &mut self,
        _rc: &mut ReqCtx,
        mut resp: Response,
        controller: Abort,
        _target: &Target<'_>,
        timeout_ms: u64,
    ) -> Verdict<Value> {
        let Some(text) = upstream::read_text(&mut resp, timeout_ms).await else {
            controller.abort();
            return Verdict::Stop(
                AttemptFailure::Timeout,
                GatewayError::UpstreamTimeout {
                    message: "The upstream did not answer in time.".into(),
                },
            );
        };
        let Ok(mut parsed) = serde_json::from_str::<Value>(&text) else {
            return Verdict::Retry(
                AttemptFailure::Status(502),
                GatewayError::from_upstream_status(502, "The upstream sent an unreadable answer."),
            );
        };
        if let Some(obj) = parsed.as_object_mut() {
            if obj.contains_key("model") {
                obj.insert("model".into(), Value::String(self.model.to_owned()));
            }
        }
        Verdict::Accept(parsed)
    }
}

pub async fn json_handler(call: Call<'_>, endpoint: JsonEndpoint) -> Result<Response, EdgeError> {
    let Call {
        rc,
        req,
        env,
        ctx,
        config,
        ..
    } = call;
    let key = authed(rc, req, env, config).await?;
    let body = protect::read_body_limited(req, config.max_body_bytes).await?;
    let kind = match endpoint {
        JsonEndpoint::Embeddings => JsonKind::Embeddings,
        JsonEndpoint::Rerank => JsonKind::Rerank,
    };
    let job = parse_json(kind, &body)?;
    drop(body);
    rc.model = Some(job.model.clone());
    let catalogue = catalogue::load(env, config.catalogue_ttl_ms).await?;
    breakers::refresh_in_background(env, ctx);
    let resolved = resolve_allowed(&catalogue, &key, &job.model)?;
    let want = match endpoint {
        JsonEndpoint::Embeddings => ModelKind::Embedding,
        JsonEndpoint::Rerank => ModelKind::Rerank,
    };
    if resolved.kind() != want {
        return Err(GatewayError::invalid_param(
            format!(
                "The model `{}` does not support /v1/{}.",
                job.model,
                endpoint.path()
            ),
            "model",
        )
        .into());
    }
    // Embeddings and rerank produce no output tokens.
    let (estimate, worst) = metering::estimates(&job.prompt, 0, 1);
    let settlement = metering::admit(
        env,
        ctx,
        config,
        &Meter {
            request_id: &rc.id,
            key: &key,
            plan: catalogue.plan(&key.plan_id),
            model: resolved.name,
            price: resolved.price,
            estimate,
            worst,
            now_s: rc.now_s,
        },
    )
    .await?;
    let mut attempt = JsonAttempt {
        endpoint,
        body: &job.body,
        model: &job.model,
        allow_loopback: config.hooks.allow_loopback,
    };
    // Every exit below settles through the guard: finished explicitly, or dropped.
    match attempts::run(
        rc,
        &resolved,
        catalogue.settings(),
        config,
        &job.model,
        &mut attempt,
    )
    .await
    {
        Ok(answer) => {
            let usage = usage_of(&answer);
            rc.usage = usage;
            settlement.finish(Finish {
                observed: Observed {
                    ending: Ending::Completed,
                    usage,
                    output_chars: 0,
                    output_tokens_est: 0,
                },
                deployment: rc.deployment.clone(),
                ttft_ms: None,
                response: None,
            });
            Ok(json_response(answer.to_string())?)
        }
        Err(e) => {
            settlement.finish(if e.timed_out {
                Finish::timed_out(rc.deployment.clone())
            } else {
                Finish::failed_before_output()
            });
            Err(e.error.into())
        }
    }
}
