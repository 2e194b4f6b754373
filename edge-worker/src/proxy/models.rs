//! `GET /v1/models`: the models the caller's plan and key allow, in OpenAI's list shape.

use tollbooth_core::catalogue::Catalogue;
use tollbooth_core::error::GatewayError;
use tollbooth_core::keyrecord::KeyRecord;
use tollbooth_core::protocol::openai as oa;
use worker::Response;

use super::{json_response, key_may_use};

/// A fixed `created` (the catalogue does not track when a virtual model appeared).
const CREATED: u64 = 1_700_000_000;

pub fn models_handler(catalogue: &Catalogue, key: &KeyRecord) -> Result<Response, GatewayError> {
    let data: Vec<oa::Model> = catalogue
        .models()
        .filter(|m| m.enabled && key_may_use(catalogue, key, &m.name))
        .filter(|m| catalogue.resolve(&m.name).is_some())
        .map(|m| {
            oa::Model::new(
                m.name.clone(),
                CREATED,
                m.owned_by.clone().unwrap_or_else(|| "tollbooth".into()),
            )
        })
        .collect();
    let text = serde_json::to_string(&oa::ModelList::new(data))
        .map_err(|_| GatewayError::internal("could not encode the model list"))?;
    json_response(&text)
}
