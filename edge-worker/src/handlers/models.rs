//! `GET /v1/models`: the models the caller's plan and key allow, in OpenAI's list shape.
//! Nothing internal shows: `owned_by` is the catalogue's value unless it names a
//! provider id (pulled models carry one), then `tollbooth`. Each item also carries the
//! `root`, `parent` and `permission` fields older OpenAI clients read.

use serde_json::{json, Value};
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
            let mut item = oa::Model::new(m.name.clone(), CREATED, owner);
            // The fields older OpenAI clients read: a virtual model is its own root.
            item.extra.insert("root".into(), json!(m.name));
            item.extra.insert("parent".into(), Value::Null);
            item.extra.insert(
                "permission".into(),
                json!([{
                    "id": format!("modelperm-{}", m.name),
                    "object": "model_permission",
                    "created": CREATED,
                    "allow_create_engine": false,
                    "allow_sampling": true,
                    "allow_logprobs": true,
                    "allow_search_indices": false,
                    "allow_view": true,
                    "allow_fine_tuning": false,
                    "organization": "*",
                    "group": null,
                    "is_blocking": false
                }]),
            );
            item
        })
        .collect();
    let text = serde_json::to_string(&oa::ModelList::new(data))
        .map_err(|_| GatewayError::internal("could not encode the model list"))?;
    Ok(json_response(text)?)
}
