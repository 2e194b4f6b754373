//! The non-chat routes of the Responses, Anthropic and Gemini ingresses (issue 15):
//!
//! - `POST /v1/messages/count_tokens` and `POST /v1beta/models/{model}:countTokens`:
//!   authenticated, the model must be one the caller may use (catalogue names only,
//!   priced or free), answered with the billing estimator's count
//!   (`tollbooth_core::translate::count_tokens`). Not billed and not rate limited: no
//!   upstream is called.
//! - `GET /v1beta/models` and `GET /v1beta/models/{model}`: the models the caller's plan
//!   and key allow, in Gemini's shape.
//! - `GET` / `DELETE /v1/responses/{id}`: responses are never stored (`store: true` and
//!   `previous_response_id` are refused at `POST /v1/responses`), so 404 in the OpenAI
//!   shape, after authentication.

use tollbooth_core::catalogue::{Catalogue, Model, ModelKind};
use tollbooth_core::error::GatewayError;
use tollbooth_core::protocol::anthropic as an;
use tollbooth_core::protocol::gemini as g;
use tollbooth_core::translate::count_tokens::{anthropic_count_tokens, gemini_count_tokens};
use tollbooth_core::translate::gemini_ingress as gi;
use tollbooth_core::translate::hub::Ingress;
use worker::Response;

use super::{authed, authed_from, key_may_use, resolve_allowed};
use crate::auth::KeySource;
use crate::catalogue;
use crate::context::EdgeError;
use crate::middleware::{json_response, Call};
use crate::pipeline::ingress::typed;
use crate::protect;
use crate::routes::{gemini_model, gemini_target};

fn encode<T: serde::Serialize>(v: &T) -> Result<Response, EdgeError> {
    let text = serde_json::to_string(v)
        .map_err(|_| GatewayError::internal("could not encode the response"))?;
    Ok(json_response(text)?)
}

fn not_found(call: &Call<'_>) -> GatewayError {
    GatewayError::NotFound {
        message: format!("Unknown route: {} {}", call.rc.method, call.path),
        code: Some("not_found".into()),
    }
}

fn body_value(body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("The request body is not valid JSON: {e}"))
    })
}

/// The model must resolve, be allowed and priced, and be a chat model.
fn check_model(
    catalogue: &Catalogue,
    key: &tollbooth_core::keyrecord::KeyRecord,
    model: &str,
) -> Result<(), GatewayError> {
    let resolved = resolve_allowed(catalogue, key, model)?;
    if resolved.kind() != ModelKind::Chat {
        return Err(GatewayError::invalid_param(
            format!("The model `{model}` is not a chat model."),
            "model",
        ));
    }
    Ok(())
}

/// `POST /v1/messages/count_tokens` or `POST /v1beta/models/{model}:countTokens`.
pub async fn count_tokens_handler(call: Call<'_>, ingress: Ingress) -> Result<Response, EdgeError> {
    let gemini = ingress == Ingress::Gemini;
    let path_model = if gemini {
        Some(gemini_target(call.path).ok_or_else(|| not_found(&call))?.0)
    } else {
        None
    };
    let source = if gemini {
        KeySource::Google
    } else {
        KeySource::Standard
    };
    let key = authed_from(call.rc, call.req, call.env, call.config, source).await?;
    let body = protect::read_body_limited(call.req, call.config.max_body_bytes).await?;
    let value = body_value(&body)?;
    let catalogue = catalogue::load(call.env, call.config.catalogue_ttl_ms).await?;
    match path_model {
        Some(model) => {
            call.rc.model = Some(model.clone());
            let req: g::CountTokensRequest = typed(&value)?;
            check_model(&catalogue, &key, &model)?;
            encode(&gemini_count_tokens(req))
        }
        None => {
            let req: an::CountTokensRequest = typed(&value)?;
            call.rc.model = Some(req.model.clone());
            check_model(&catalogue, &key, &req.model)?;
            encode(&anthropic_count_tokens(&req))
        }
    }
}

/// Whether `m` is listed for `key`: enabled, allowed, priced (or free), a chat model.
fn listed(catalogue: &Catalogue, key: &tollbooth_core::keyrecord::KeyRecord, m: &Model) -> bool {
    m.enabled
        && m.kind == ModelKind::Chat
        && key_may_use(catalogue, key, &m.name)
        && catalogue.resolve(&m.name).is_some_and(|r| !r.unpriced())
}

fn info(m: &Model) -> g::ModelInfo {
    gi::model_info(&m.name, None, Some(m.max_output_tokens).filter(|n| *n > 0))
}

/// `GET /v1beta/models`.
pub async fn gemini_models_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let key = authed_from(call.rc, call.req, call.env, call.config, KeySource::Google).await?;
    let catalogue = catalogue::load(call.env, call.config.catalogue_ttl_ms).await?;
    let models = catalogue
        .models()
        .filter(|m| listed(&catalogue, &key, m))
        .map(info)
        .collect();
    encode(&gi::model_list(models))
}

/// `GET /v1beta/models/{model}`.
pub async fn gemini_model_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let name = gemini_model(call.path).ok_or_else(|| not_found(&call))?;
    let key = authed_from(call.rc, call.req, call.env, call.config, KeySource::Google).await?;
    let catalogue = catalogue::load(call.env, call.config.catalogue_ttl_ms).await?;
    let model = catalogue
        .models()
        .find(|m| m.name == name && listed(&catalogue, &key, m))
        .ok_or_else(|| GatewayError::model_not_found(&name))?;
    encode(&info(model))
}

/// `GET` / `DELETE /v1/responses/{id}`: nothing is stored.
pub async fn responses_stored_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    authed(call.rc, call.req, call.env, call.config).await?;
    Err(GatewayError::NotFound {
        message: "Responses are not stored by this gateway: `store: true` and `previous_response_id` are not supported, so there is no response to read or delete.".into(),
        code: Some("response_not_found".into()),
    }
    .into())
}
