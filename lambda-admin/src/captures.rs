//! The admin proxy of the capture review API (`/api/admin/conversations...`,
//! docs/training-data.md): list, view, mark, batch-mark and delete conversations, and
//! delete a member's captured data. Captures live at the edge (D1 index, R2 bodies);
//! the worker is their only writer, so every call here is forwarded to its signed
//! internal API (docs/sync-api.md#captures) and the worker's answer is passed on.
//!
//! Reads need any admin session (viewers included); writes need the admin role and are
//! audited, like every other admin write ([`crate::admin::route`] checks the role before
//! this module runs).

use lambda_http::{Body, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::admin::audit;
use crate::app::{json_response, AppState, Claims, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::store::ItemStore;
use crate::sync::{EdgeSync, SyncCall};

/// The review list's filters (the same names as the internal API's query). The export
/// job takes the same object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The longest capture's status (`ok`, `client_abort`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `pending` | `confirmed` | `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// Conversations with (true) or without (false) tool definitions, calls or results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    /// Case-insensitive text search over each conversation's search window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Last activity in `[from, to)`, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

pub const REVIEW_STATES: [&str; 3] = ["pending", "confirmed", "rejected"];

impl Filter {
    /// The filter from a query string's parameters; unknown parameters are refused
    /// (a typo must not silently widen a batch operation).
    pub fn from_query(
        query: &std::collections::HashMap<String, String>,
        extra: &[&str],
    ) -> ApiResult<Filter> {
        let mut f = Filter::default();
        for (k, v) in query {
            let v = v.clone();
            match k.as_str() {
                "member" => f.member = Some(v),
                "model" => f.model = Some(v),
                "app" => f.app = Some(v),
                "status" => f.status = Some(v),
                "review" => f.review = Some(v),
                "q" => f.q = Some(v),
                "tools" => {
                    f.tools = Some(match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(ApiError::invalid("tools", "use true or false")),
                    })
                }
                "from" | "to" => {
                    let n = v.parse::<u64>().map_err(|_| {
                        ApiError::invalid(k, format!("{k} is unix seconds (an integer)"))
                    })?;
                    if k == "from" {
                        f.from = Some(n);
                    } else {
                        f.to = Some(n);
                    }
                }
                other if extra.contains(&other) => {}
                other => {
                    return Err(ApiError::invalid(
                        other,
                        format!("unknown parameter {other:?}"),
                    ))
                }
            }
        }
        f.validate()?;
        Ok(f)
    }

    /// Checks what the worker would refuse anyway, so a bad filter is a 400 here
    /// (before a job is queued) and names its field.
    pub fn validate(&self) -> ApiResult<()> {
        if let Some(r) = &self.review {
            if !REVIEW_STATES.contains(&r.as_str()) {
                return Err(ApiError::invalid(
                    "review",
                    "review is pending, confirmed or rejected",
                ));
            }
        }
        for (name, v) in [
            ("member", &self.member),
            ("model", &self.model),
            ("app", &self.app),
            ("status", &self.status),
            ("q", &self.q),
        ] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 512) {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} is 1-512 characters"),
                ));
            }
        }
        if let (Some(a), Some(b)) = (self.from, self.to) {
            if a >= b {
                return Err(ApiError::invalid("from", "from must be before to"));
            }
        }
        Ok(())
    }

    /// The internal API's query string (`member=...&review=...`), without `?`.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        };
        add("member", self.member.clone());
        add("model", self.model.clone());
        add("app", self.app.clone());
        add("status", self.status.clone());
        add("review", self.review.clone());
        add("tools", self.tools.map(|t| t.to_string()));
        add("q", self.q.clone());
        add("from", self.from.map(|t| t.to_string()));
        add("to", self.to.map(|t| t.to_string()));
        q.finish()
    }
}

/// One page of the internal list: `(conversation rows, next cursor)`.
pub async fn list_page<E: EdgeSync>(
    sync: &E,
    filter: &Filter,
    cursor: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<Value>, Option<String>)> {
    let mut query = filter.to_query();
    // (The serializer is not Send: built and dropped before the await.)
    let extra = {
        let mut extra = form_urlencoded::Serializer::new(String::new());
        if let Some(c) = cursor {
            extra.append_pair("cursor", c);
        }
        extra.append_pair("limit", &limit.clamp(1, 200).to_string());
        extra.finish()
    };
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(&extra);
    let body = forward(sync, read(format!("/internal/v1/conversations?{query}"))).await?;
    let rows = body
        .get("conversations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let next = body
        .get("next")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Ok((rows, next))
}

/// One conversation: `{"conversation", "captures", "longest"}`; `None` when unknown.
pub async fn view<E: EdgeSync>(sync: &E, id: &str) -> ApiResult<Option<Value>> {
    match forward(
        sync,
        read(format!("/internal/v1/conversations/{}", seg(id)?)),
    )
    .await
    {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.status == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A path segment as sent to the worker: ids are opaque, but never contain `/`, `?`,
/// `#` or `%` (which would reach another route of the internal API).
fn seg(id: &str) -> ApiResult<&str> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ApiError::not_found("conversation"));
    }
    Ok(id)
}

fn read(path: String) -> SyncCall {
    SyncCall {
        method: "GET",
        path,
        body: None,
        idempotency_key: String::new(),
    }
}

fn write(method: &'static str, path: String, body: Option<Value>) -> ApiResult<SyncCall> {
    Ok(SyncCall {
        method,
        path,
        body,
        idempotency_key: format!("review-{}", crate::crypto::new_id()?),
    })
}

/// Sends `call` and passes the worker's answer on: 2xx bodies as they are; its 400,
/// 404 and 409 (the OpenAI error body, naming the field) with their status; anything
/// else is a 502 (the worker's internals are not the caller's business).
async fn forward<E: EdgeSync>(sync: &E, call: SyncCall) -> ApiResult<Value> {
    let path = call.path.clone();
    let (status, body) = sync.exchange(call).await?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the edge refused the call")
        .to_owned();
    let param = body
        .pointer("/error/param")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut e = match status {
        400 => ApiError::bad_request(message),
        404 => ApiError::new(404, "invalid_request_error", "not_found", message),
        409 => ApiError::conflict(message),
        _ => {
            let path = path.split('?').next().unwrap_or_default().to_owned();
            return Err(crate::sync::SyncError::Refused { path, status }.into());
        }
    };
    e.param = param;
    Err(e)
}

/// A mark: the review state, tags and a note (the internal API checks their bounds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    review: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl Mark {
    fn check(&self) -> ApiResult<()> {
        if !REVIEW_STATES.contains(&self.review.as_str()) {
            return Err(ApiError::invalid(
                "review",
                "review is pending, confirmed or rejected",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchMark {
    #[serde(default)]
    filter: Filter,
    review: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    note: Option<String>,
}

/// Internal calls per admin request for a batch mark: each marks up to 500
/// conversations (one D1 batch), so one request covers up to 10 000 and answers
/// `more: true` beyond (the caller repeats).
const MAX_ROUNDS: usize = 20;
/// The same for a member's deletion, where each call also deletes up to 500 R2 bodies:
/// 4 calls (2 000 conversations) stay well inside the API's 30 s.
const MAX_DELETE_ROUNDS: usize = 4;

/// Deletes a member's captured conversations at the edge, up to [`MAX_DELETE_ROUNDS`]
/// internal calls: `(conversations, captures, more)`; `more` asks the caller to repeat.
pub async fn delete_member_captures<E: EdgeSync>(
    sync: &E,
    member_id: &str,
) -> ApiResult<(u64, u64, bool)> {
    let (mut conversations, mut captures) = (0u64, 0u64);
    let mut more = true;
    let mut rounds = 0;
    while more && rounds < MAX_DELETE_ROUNDS {
        rounds += 1;
        let call = write(
            "DELETE",
            format!("/internal/v1/members/{member_id}/captures"),
            None,
        )?;
        let r = forward(sync, call).await?;
        conversations += r.get("conversations").and_then(Value::as_u64).unwrap_or(0);
        captures += r.get("captures").and_then(Value::as_u64).unwrap_or(0);
        more = r.get("more").and_then(Value::as_bool).unwrap_or(false);
    }
    Ok((conversations, captures, more))
}

/// `segs` is the path after `/api/admin/`; the role was checked by the caller.
pub async fn route<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
    a: &Claims,
    segs: &[&str],
) -> ApiResult<Response<Body>> {
    match (ctx.method.as_str(), segs) {
        ("GET", ["conversations"]) => {
            let filter = Filter::from_query(&ctx.query, &["cursor", "limit"])?;
            let limit = match ctx.query.get("limit") {
                None => 50,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=200).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "limit is 1..200"))?,
            };
            let cursor = ctx.query.get("cursor").map(String::as_str);
            let (rows, next) = list_page(&st.sync, &filter, cursor, limit).await?;
            Ok(json_response(
                200,
                &json!({"data": rows, "next": next, "filter": filter}),
            ))
        }
        ("GET", ["conversations", id]) => match view(&st.sync, id).await? {
            Some(v) => Ok(json_response(200, &v)),
            None => Err(ApiError::not_found("conversation")),
        },
        ("POST", ["conversations", "review"]) => {
            let b: BatchMark = ctx.json()?;
            b.filter.validate()?;
            let mark = Mark {
                review: b.review,
                tags: b.tags,
                note: b.note,
            };
            mark.check()?;
            let mut updated = 0u64;
            let mut more = true;
            let mut rounds = 0;
            while more && rounds < MAX_ROUNDS {
                rounds += 1;
                let mut body =
                    serde_json::to_value(&mark).map_err(|e| ApiError::internal(e.to_string()))?;
                if let Some(o) = body.as_object_mut() {
                    o.insert("filter".into(), json!(b.filter));
                }
                let call = write(
                    "POST",
                    "/internal/v1/conversations/review".into(),
                    Some(body),
                )?;
                let r = forward(&st.sync, call).await?;
                updated += r.get("updated").and_then(Value::as_u64).unwrap_or(0);
                more = r.get("more").and_then(Value::as_bool).unwrap_or(false);
            }
            audit(
                st,
                ctx,
                a,
                "conversations.review",
                &mark.review,
                json!({"filter": b.filter, "tags": mark.tags, "updated": updated}),
            )
            .await?;
            Ok(json_response(
                200,
                &json!({"updated": updated, "more": more}),
            ))
        }
        ("POST", ["conversations", id, "review"]) => {
            let id = seg(id)?;
            let mark: Mark = ctx.json()?;
            mark.check()?;
            let body =
                serde_json::to_value(&mark).map_err(|e| ApiError::internal(e.to_string()))?;
            let call = write(
                "POST",
                format!("/internal/v1/conversations/{id}/review"),
                Some(body),
            )?;
            let r = forward(&st.sync, call).await?;
            audit(
                st,
                ctx,
                a,
                "conversation.review",
                id,
                json!({"review": mark.review, "tags": mark.tags}),
            )
            .await?;
            Ok(json_response(200, &r))
        }
        ("DELETE", ["conversations", id]) => {
            let id = seg(id)?;
            let call = write("DELETE", format!("/internal/v1/conversations/{id}"), None)?;
            let r = forward(&st.sync, call).await?;
            audit(st, ctx, a, "conversation.delete", id, Value::Null).await?;
            Ok(json_response(200, &r))
        }
        ("DELETE", ["members", id, "captures"]) => {
            let id = seg(id).map_err(|_| ApiError::not_found("member"))?;
            let (conversations, captures, more) = delete_member_captures(&st.sync, id).await?;
            audit(
                st,
                ctx,
                a,
                "member.captures.delete",
                id,
                json!({"conversations": conversations, "captures": captures}),
            )
            .await?;
            Ok(json_response(
                200,
                &json!({"conversations": conversations, "captures": captures, "more": more}),
            ))
        }
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("Unknown route: {} {}", ctx.method, ctx.path),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn test_filter_query_round_trip_and_refusals() {
        let f = Filter::from_query(
            &q(&[
                ("member", "m 1"),
                ("review", "confirmed"),
                ("tools", "true"),
                ("from", "5"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(f.member.as_deref(), Some("m 1"));
        assert_eq!(f.tools, Some(true));
        assert_eq!(
            f.to_query(),
            "member=m+1&review=confirmed&tools=true&from=5"
        );
        for (k, v) in [
            ("review", "good"),
            ("tools", "maybe"),
            ("from", "yesterday"),
            ("colour", "red"),
            ("member", ""),
        ] {
            let e = Filter::from_query(&q(&[(k, v)]), &[]).unwrap_err();
            assert_eq!(e.status, 400, "{k}");
            assert_eq!(e.param.as_deref(), Some(k), "{k}");
        }
        let e = Filter::from_query(&q(&[("from", "9"), ("to", "3")]), &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("from"));
        assert!(Filter::from_query(&q(&[("cursor", "x")]), &["cursor"]).is_ok());
    }

    #[test]
    fn test_ids_cannot_reach_other_internal_routes() {
        for bad in ["", "a/b", "../x", "a?b", "a%2fb", "a#b"] {
            assert!(seg(bad).is_err(), "{bad}");
        }
        assert_eq!(seg("conv_01-ab.c").unwrap(), "conv_01-ab.c");
    }
}
