//! Route handlers. Each takes the middleware's [`crate::middleware::Call`] and returns
//! a response or an [`crate::context::EdgeError`] for the middleware to render.

pub mod chat;
pub mod front_door;
pub mod health;
pub mod ingress_extra;
pub mod internal;
pub mod json;
pub mod member;
pub mod models;
pub mod passthrough;
pub mod ws;

use std::rc::Rc;

use tollbooth_core::catalogue::{model_allowed, Catalogue, Resolved};
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::{KeyRecord, KeyRole};
use worker::{Env, Request};

use crate::auth::{authenticate_from, KeySource, KvKeyStore};
use crate::config::Config;
use crate::context::ReqCtx;

/// Authenticates the caller and records who it is in the request context.
pub async fn authed(
    rc: &mut ReqCtx,
    req: &Request,
    env: &Env,
    config: &Config,
) -> Result<Rc<KeyRecord>, GatewayError> {
    authed_from(rc, req, env, config, KeySource::Standard).await
}

/// [`authed`] with the key looked for in `source` (the Gemini routes also accept
/// `x-goog-api-key` and `?key=`).
pub async fn authed_from(
    rc: &mut ReqCtx,
    req: &Request,
    env: &Env,
    config: &Config,
    source: KeySource,
) -> Result<Rc<KeyRecord>, GatewayError> {
    let store = KvKeyStore::new(env, config.key_cache_ttl_ms);
    let key = authenticate_from(req, &store, source).await?;
    rc.key_public_id = Some(key.public_id.clone());
    rc.operator = key.role == KeyRole::Operator;
    Ok(key)
}

/// Resolves and permits `model` for `key`: 404 `model_not_found` (also for disabled and
/// unpriced prefix routes), 403 `model_not_allowed`, 403 `model_not_priced` (a zero
/// price the operator did not mark free).
pub fn resolve_allowed<'a>(
    catalogue: &'a Catalogue,
    key: &KeyRecord,
    model: &'a str,
) -> Result<Resolved<'a>, GatewayError> {
    let resolved = catalogue
        .resolve(model)
        .ok_or_else(|| GatewayError::model_not_found(model))?;
    if !key_may_use(catalogue, key, resolved.name) {
        return Err(GatewayError::permission_denied(
            format!("Your plan or key does not allow the model `{model}`."),
            "model_not_allowed",
        ));
    }
    if resolved.unpriced() {
        return Err(GatewayError::permission_denied(
            format!("The model `{model}` is not available: it has no price."),
            "model_not_priced",
        ));
    }
    Ok(resolved)
}

/// Whether the key's plan and the key itself allow the virtual model `name`.
pub fn key_may_use(catalogue: &Catalogue, key: &KeyRecord, name: &str) -> bool {
    let plan_ok = catalogue
        .plan(&key.plan_id)
        .is_some_and(|p| model_allowed(&p.allowed_models, name));
    let key_ok = key
        .allowed_models
        .as_ref()
        .is_none_or(|a| model_allowed(a, name));
    plan_ok && key_ok
}
