//! The app login flow: an app sends the member to `/authorization`, the member signs
//! in, and the app exchanges the callback token at `/v1/verify-token` for the member's
//! profile and an API key bound to the app.
//!
//! The token travels in a redirect URL (browser history, Referer, logs, other apps
//! registered for the same custom scheme), so holding it is not enough:
//! - **PKCE S256**: `/authorization` requires `code_challenge` (=
//!   base64url(sha256(code_verifier)), `code_challenge_method=S256`); the exchange
//!   requires the `code_verifier`.
//! - **App signature** (apps that are not `public`, i.e. server apps that keep their
//!   secret): the exchange also requires `app_time` and
//!   `app_sign = hex(HMAC-SHA256(app_secret, "exchange:<token>:<app_time>"))`, fresh
//!   within 300 s. (The callback's own `sign` proves the redirect came from the gateway
//!   to the app; it travels with the token, so it authenticates nothing at exchange.)
//! - The token is bound to the `redirect_uri` it was issued for (the exchange must name
//!   it), expires after `app_token_ttl_secs`, and is single-use: it is taken (a
//!   conditional delete) before anything else is checked, so a failed exchange burns it
//!   and a replay finds nothing.
//! - The sign-in form carries a CSRF token, double-submitted as an `HttpOnly`,
//!   `SameSite=Strict` cookie: a page elsewhere cannot post credentials into it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lambda_http::{Body, Response};
use serde_json::json;
use tollbooth_core::auth::{constant_time_eq, hash_secret, hmac_sha256, sha256};

use crate::app::{esc, ok, raw_response, AppState, Ctx};
use crate::crypto::{self, new_token};
use crate::error::{ApiError, ApiResult};
use crate::login;
use crate::members::{authenticate, create_key, create_member, member_keys, rfc3339};
use crate::model::*;
use crate::store::ItemStore;
use crate::sync::EdgeSync;

/// The CSRF cookie of the sign-in form.
pub const CSRF_COOKIE: &str = "tb_authz_csrf";
/// How fresh `app_time` must be.
pub const APP_SIGN_WINDOW_SECS: u64 = 300;

/// The message an app signs to exchange a token.
pub fn exchange_message(token: &str, time: u64) -> String {
    format!("exchange:{token}:{time}")
}

/// `hex(HMAC-SHA256(app_secret, "exchange:<token>:<time>"))`, what a server app sends.
pub fn sign_exchange(app_secret: &[u8], token: &str, time: u64) -> String {
    hex::encode(hmac_sha256(
        app_secret,
        exchange_message(token, time).as_bytes(),
    ))
}

/// `base64url(sha256(verifier))`, the S256 challenge of a verifier.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
}

fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// What the sign-in form carries from the app's request to the submit.
struct Request {
    app: App,
    redirect_uri: String,
    challenge: String,
    state: String,
}

async fn app_request<S: ItemStore>(
    store: &S,
    field: impl Fn(&str) -> String,
    now: u64,
) -> ApiResult<Request> {
    let app_id = field("app_id");
    let redirect_uri = field("redirect_uri");
    let app: App = load(store, &app_pk(&app_id), ONE, now)
        .await?
        .ok_or_else(|| ApiError {
            param: Some("app_id".into()),
            ..ApiError::bad_request("unknown app_id")
        })?;
    // Exact match only: a prefix match would let `https://app.example.com.evil.io` in.
    if !app.callback_urls.contains(&redirect_uri) {
        return Err(ApiError {
            param: Some("redirect_uri".into()),
            ..ApiError::bad_request("redirect_uri is not registered for this app")
        });
    }
    let challenge = field("code_challenge");
    if !valid_challenge(&challenge) {
        return Err(ApiError::invalid(
            "code_challenge",
            "code_challenge is required: base64url(sha256(code_verifier)), 43 characters",
        ));
    }
    let method = field("code_challenge_method");
    if method != "S256" {
        return Err(ApiError::invalid(
            "code_challenge_method",
            "code_challenge_method must be S256",
        ));
    }
    let state = field("state");
    if state.len() > 256 || state.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "state",
            "state must be at most 256 characters",
        ));
    }
    Ok(Request {
        app,
        redirect_uri,
        challenge,
        state,
    })
}

fn login_page(status: u16, r: &Request, csrf: &str, error: Option<&str>) -> Response<Body> {
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in to {name}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
label,input,button{{display:block;width:100%;margin:.4rem 0}}input{{padding:.5rem}}button{{padding:.6rem}}
.error{{color:#b00020}}</style></head>
<body><h1>Sign in</h1><p>to continue to <strong>{name}</strong></p>{err}
<form method="post" action="/authorization">
<input type="hidden" name="app_id" value="{app_id}">
<input type="hidden" name="redirect_uri" value="{redirect}">
<input type="hidden" name="code_challenge" value="{challenge}">
<input type="hidden" name="code_challenge_method" value="S256">
<input type="hidden" name="state" value="{state}">
<input type="hidden" name="csrf" value="{csrf}">
<label>Email <input type="email" name="email" autocomplete="email" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required minlength="{min}"></label>
<button type="submit" name="action" value="login">Sign in</button>
<button type="submit" name="action" value="signup">Create account</button>
</form></body></html>"#,
        name = esc(&r.app.name),
        app_id = esc(&r.app.id),
        redirect = esc(&r.redirect_uri),
        challenge = esc(&r.challenge),
        state = esc(&r.state),
        csrf = esc(csrf),
        min = crate::members::MIN_PASSWORD_LEN,
    );
    let mut resp = raw_response(status, "text/html; charset=utf-8", html);
    let h = resp.headers_mut();
    h.insert(
        http::header::HeaderName::from_static("content-security-policy"),
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={csrf}; Path=/authorization; HttpOnly; Secure; SameSite=Strict; Max-Age=1800"
    )) {
        h.insert(http::header::SET_COOKIE, v);
    }
    resp
}

fn cookie(ctx: &Ctx, name: &str) -> Option<String> {
    ctx.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `GET /authorization`: the sign-in form.
pub async fn authorization_page_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let field = |k: &str| ctx.query.get(k).cloned().unwrap_or_default();
    let r = app_request(&st.store, field, ctx.now).await?;
    Ok(login_page(200, &r, &new_token()?, None))
}

/// `POST /authorization`: logs in (or signs up) and redirects to the app's callback with
/// a single-use token.
pub async fn authorization_submit_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let form = ctx.form();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let r = app_request(&st.store, &field, ctx.now).await?;
    // Double submit: the form's token must equal the cookie set with the form.
    let csrf = field("csrf");
    let csrf_ok = cookie(ctx, CSRF_COOKIE)
        .is_some_and(|c| !csrf.is_empty() && constant_time_eq(c.as_bytes(), csrf.as_bytes()));
    if !csrf_ok {
        return Ok(login_page(
            403,
            &r,
            &new_token()?,
            Some("the form expired; please sign in again"),
        ));
    }
    let result = match field("action").as_str() {
        "signup" => {
            create_member(
                &st.store,
                &field("email"),
                &field("password"),
                None,
                ctx.now,
            )
            .await
        }
        _ => {
            let address = login::client_address(&st.policy, ctx);
            authenticate(st, &field("email"), &field("password"), &address, ctx.now).await
        }
    };
    let member = match result {
        Ok(m) if m.status == MemberStatus::Suspended => {
            return Ok(login_page(
                403,
                &r,
                &csrf,
                Some("this account is suspended"),
            ))
        }
        Ok(m) => m,
        Err(e) => return Ok(login_page(e.status, &r, &csrf, Some(&e.message))),
    };
    let token = new_token()?;
    let expires_at = ctx.now.saturating_add(st.policy.app_token_ttl_secs);
    let item = to_item(
        app_token_pk(&hash_secret(&token)),
        ONE,
        &AppToken {
            member_id: member.id.clone(),
            app_id: r.app.id.clone(),
            expires_at,
            redirect_uri: Some(r.redirect_uri.clone()),
            code_challenge: Some(r.challenge.clone()),
        },
    )?
    .ttl(expires_at);
    crate::model::put(&st.store, item).await?;
    let secret = crypto::open(&st.master_key, &r.app.sealed_secret)?;
    let sign = tollbooth_core::auth::sign_callback(secret.as_bytes(), &token, ctx.now);
    let sep = if r.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut location = format!(
        "{}{sep}token={token}&sign={sign}&time={}",
        r.redirect_uri, ctx.now
    );
    if !r.state.is_empty() {
        location.push_str("&state=");
        location.extend(form_urlencoded::byte_serialize(r.state.as_bytes()));
    }
    let mut resp = raw_response(302, "text/plain; charset=utf-8", String::new());
    let loc = http::HeaderValue::from_str(&location).map_err(|_| {
        ApiError::invalid("redirect_uri", "redirect_uri is not a valid header value")
    })?;
    resp.headers_mut().insert(http::header::LOCATION, loc);
    Ok(resp)
}

/// `GET /v1/verify-token`: exchanges a callback token, once, for the member's profile
/// and an API key bound to the app. Needs `Authorization: Bearer <token>` and the query
/// `code_verifier`, `redirect_uri`, plus `app_time` and `app_sign` for server apps.
pub async fn verify_token_handler<S: ItemStore, E: EdgeSync>(
    st: &AppState<S, E>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let token = ctx
        .bearer()
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?
        .to_owned();
    let q = |k: &str| ctx.query.get(k).map(String::as_str).unwrap_or("");
    let invalid = || ApiError {
        code: "invalid_token",
        ..ApiError::unauthorized("token is invalid, expired or already used")
    };
    let unauthenticated = |m: &str| ApiError {
        code: "invalid_client",
        ..ApiError::unauthorized(m.to_owned())
    };
    // Single use: taken before any check, so a failed or concurrent exchange burns it.
    let taken = st
        .store
        .take(&app_token_pk(&hash_secret(&token)), ONE)
        .await?
        .ok_or_else(invalid)?;
    if taken.expired(ctx.now) {
        return Err(invalid());
    }
    let pending: AppToken = from_item(&taken)?;
    if pending.expires_at <= ctx.now {
        return Err(invalid());
    }
    let app: App = load(&st.store, &app_pk(&pending.app_id), ONE, ctx.now)
        .await?
        .ok_or_else(invalid)?;
    if pending.redirect_uri.as_deref() != Some(q("redirect_uri")) {
        return Err(ApiError {
            param: Some("redirect_uri".into()),
            ..unauthenticated("redirect_uri does not match the one the token was issued for")
        });
    }
    let verifier = q("code_verifier");
    let pkce_ok = valid_verifier(verifier)
        && pending
            .code_challenge
            .as_deref()
            .is_some_and(|c| constant_time_eq(c.as_bytes(), s256(verifier).as_bytes()));
    if !pkce_ok {
        return Err(ApiError {
            param: Some("code_verifier".into()),
            ..unauthenticated("code_verifier does not match the code_challenge")
        });
    }
    if !app.public {
        let secret = crypto::open(&st.master_key, &app.sealed_secret)?;
        let time: u64 = q("app_time").parse().map_err(|_| ApiError {
            param: Some("app_time".into()),
            ..unauthenticated("server apps must send app_time and app_sign")
        })?;
        let expected = sign_exchange(secret.as_bytes(), &token, time);
        let fresh = time.abs_diff(ctx.now) <= APP_SIGN_WINDOW_SECS;
        if !fresh || !constant_time_eq(expected.as_bytes(), q("app_sign").as_bytes()) {
            return Err(ApiError {
                param: Some("app_sign".into()),
                ..unauthenticated("app_sign is wrong or stale")
            });
        }
    }
    let member: Member = load(&st.store, &member_pk(&pending.member_id), PROFILE, ctx.now)
        .await?
        .ok_or_else(invalid)?;
    if member.status == MemberStatus::Suspended {
        return Err(ApiError::forbidden("this account is suspended"));
    }
    let existing = member_keys(&st.store, &member.id, ctx.now)
        .await?
        .into_iter()
        .find(|k| k.app_id.as_deref() == Some(app.id.as_str()) && k.sealed_key.is_some());
    let api_token = match existing.and_then(|k| k.sealed_key) {
        Some(sealed) => crypto::open(&st.master_key, &sealed)?,
        None => {
            create_key(st, &member.id, &app.name, Some(&app.id), ctx.now)
                .await?
                .1
        }
    };
    let sub: Option<Subscription> =
        load(&st.store, &member_pk(&member.id), SUBSCRIPTION, ctx.now).await?;
    let plan_name = match &sub {
        Some(s) => load::<Plan, _>(&st.store, &plan_pk(&s.plan_id), ONE, ctx.now)
            .await?
            .map(|p| p.name),
        None => None,
    };
    ok(json!({
        "email": member.email,
        "username": member.username,
        "user_plan": plan_name,
        "api_token": api_token,
        "expire_at": sub.and_then(|s| s.expires_at).map(rfc3339),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_s256_is_base64url_of_sha256() {
        // Computed independently (Python hashlib + base64.urlsafe_b64encode, unpadded).
        assert_eq!(
            s256("dBjftJeZ4CVP-mJ92K2Y8CGbVzqMjjHb5XBMl5hJ7Ds"),
            "uYWuI0fiYN6KyuQfZ_c5mAtsbp2W3-J2rsZDKXE_d_Q"
        );
        assert!(valid_challenge(&s256(&"a".repeat(43))));
        assert!(!valid_verifier("short"));
    }
}
