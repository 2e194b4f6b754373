//! `GET /v1/models`: the models the caller's plan and key allow, in OpenAI's list shape.
//! Nothing internal shows: `owned_by` is the catalogue's value unless it names a
//! provider id (pulled models carry one), then `tollbooth`.

use tollbooth_core::error::GatewayError;
use tollbooth_core::protocol::openai as oa;
use worker::Response;

use super::{authed, key_may_use};
use crate::catalogue;
use crate::context::EdgeError;
use crate::middleware::{json_response, Call};

/// A fixed `created` (the catalogue does not track when a virtual model appeared).
const CREATED: u64 = 1_700_000_000;

pub async fn models_handler(call: Call<'_>) -> Result<Response, EdgeError> {
    let key = authed(call.rc, call.req, call.env, call.config).await?;
    let catalogue = catalogue::load(call.env, call.config.catalogue_ttl_ms).await?;
    let data: Vec<oa::Model> = catalogue
        .models()
        .filter(|m| m.enabled && key_may_use(&catalogue, &key, &m.name))
        .filter(|m| catalogue.resolve(&m.name).is_some_and(|r| !r.unpriced()))
        .map(|m| {
            let owner = m
                .owned_by
                .clone()
                .filter(|o| catalogue.provider(o).is_none())
                .unwrap_or_else(|| "tollbooth".into());
            oa::Model::new(m.name.clone(), CREATED, owner)
        })
        .collect();
    let text = serde_json::to_string(&oa::ModelList::new(data))
        .map_err(|_| GatewayError::internal("could not encode the model list"))?;
    Ok(json_response(text)?)
}
