//! Password logins with lockout, one implementation for members and admins.
//!
//! Every attempt is counted *before* the password is checked, by an atomic conditional
//! counter in the store ([`ItemStore::hit`]: a DynamoDB `ADD` with a condition), twice:
//! per account (`max_login_failures` per `lockout_secs` window) and per client address
//! (`max_logins_per_address` per window, over all accounts). An attempt over either
//! limit is refused without touching argon2, so N parallel guesses get at most
//! `max_login_failures` password checks per window, whatever N is. A successful login
//! resets the account's count; the address count is not reset (it is a rate limit).
//! Unknown accounts cost the same argon2 work as known ones (a dummy hash).
//!
//! The client address ([`client_address`]) is the one the worker's front door signs in
//! `x-tollbooth-client` (from `cf-connecting-ip`, HMAC'd with `SYNC_SECRET` for this
//! host, fresh for 60 s); without a valid one, the address API Gateway saw; a bare
//! `x-forwarded-for` only in a local/test/development environment. A caller reaching
//! the function directly can therefore not choose the address it is counted under.

use std::sync::OnceLock;

use tollbooth_core::auth::{verify_client_ip, CLIENT_IP_HEADER, CLIENT_IP_WINDOW_SECS};

use crate::app::{AppState, Ctx, Policy};
use crate::crypto::{hash_password, verify_password};
use crate::error::{ApiError, ApiResult};
use crate::model::{lock_pk, ONE};
use crate::store::{Hit, ItemStore};

/// Which account table a login is for (they count separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    Member,
    Admin,
}

fn account_counter(realm: Realm, email: &str) -> String {
    match realm {
        Realm::Member => lock_pk(email),
        Realm::Admin => lock_pk(&format!("admin:{email}")),
    }
}

fn address_counter(addr: &str) -> String {
    format!("LOGINADDR#{addr}")
}

/// The caller's address, most trusted source first: the worker's signed
/// `x-tollbooth-client` (verified with `SYNC_SECRET` for this request's host), then
/// API Gateway's `sourceIp`, then (only when [`Policy::trust_forwarded_for`], i.e. a
/// local/test/development environment) the first `x-forwarded-for` entry; `unknown`
/// when none applies. A bare `x-forwarded-for` is never trusted in production.
///
/// [`Policy::trust_forwarded_for`]: crate::app::Policy::trust_forwarded_for
pub fn client_address(policy: &Policy, ctx: &Ctx) -> String {
    let header = |name: &str| ctx.headers.get(name).and_then(|v| v.to_str().ok());
    let signed = policy.client_ip_secret.as_ref().and_then(|secret| {
        let value = header(CLIENT_IP_HEADER)?;
        let host = header("host")?.trim();
        verify_client_ip(&secret.0, value, host, ctx.now, CLIENT_IP_WINDOW_SECS).ok()
    });
    let usable = |v: &str| !v.is_empty() && v.len() <= 64;
    signed
        .or_else(|| {
            ctx.source_ip
                .as_deref()
                .map(str::trim)
                .filter(|v| usable(v))
                .map(str::to_owned)
        })
        .or_else(|| {
            policy
                .trust_forwarded_for
                .then(|| header("x-forwarded-for"))
                .flatten()
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| usable(v))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A real argon2id hash of a random password, made once: unknown accounts are
/// verified against it so they cost the same time as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw = crate::crypto::new_token().unwrap_or_else(|_| "dummy-password-1".into());
        hash_password(&pw).unwrap_or_default()
    })
}

#[cfg(test)]
thread_local! {
    /// Password verifications on this thread (tests: an unknown account must cost one,
    /// like a known one).
    pub(crate) static VERIFIES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The one argon2 verification of a login.
fn verify(password: &str, hash: &str) -> bool {
    #[cfg(test)]
    VERIFIES.with(|c| c.set(c.get() + 1));
    verify_password(password, hash)
}

pub fn bad_credentials() -> ApiError {
    ApiError::unauthorized("email or password is wrong")
}

pub fn locked(retry_after: u64) -> ApiError {
    ApiError::new(
        429,
        "rate_limit_error",
        "account_locked",
        format!("too many failed logins; try again in {retry_after} s"),
    )
}

/// Checks `password` for the account `email` (already normalised) of `realm`.
/// `account` is the stored password hash with the account, or `None` when unknown.
pub async fn check<S: ItemStore, E, T>(
    st: &AppState<S, E>,
    realm: Realm,
    email: &str,
    address: &str,
    password: &str,
    account: Option<(T, String)>,
    now: u64,
) -> ApiResult<T> {
    let p = &st.policy;
    if let Hit::Refused { until } = st
        .store
        .hit(
            &address_counter(address),
            ONE,
            u64::from(p.max_logins_per_address),
            p.lockout_secs,
            now,
        )
        .await?
    {
        return Err(ApiError::new(
            429,
            "rate_limit_error",
            "too_many_attempts",
            format!(
                "too many login attempts from this address; try again in {} s",
                until.saturating_sub(now)
            ),
        ));
    }
    let counter = account_counter(realm, email);
    let count = match st
        .store
        .hit(
            &counter,
            ONE,
            u64::from(p.max_login_failures),
            p.lockout_secs,
            now,
        )
        .await?
    {
        Hit::Refused { until } => return Err(locked(until.saturating_sub(now))),
        Hit::Counted { count } => count,
    };
    let good = match &account {
        Some((_, hash)) => verify(password, hash),
        None => {
            let _ = verify(password, dummy_hash());
            false
        }
    };
    match account {
        Some((acct, _)) if good => {
            st.store.delete(&counter, ONE).await?;
            Ok(acct)
        }
        _ if count >= u64::from(p.max_login_failures) => Err(locked(p.lockout_secs)),
        _ => Err(bad_credentials()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use tollbooth_core::auth::sign_client_ip;

    const SECRET: &[u8] = b"sync-secret-0123456789";
    const HOST: &str = "admin.example.com";

    fn ctx(headers: &[(&str, &str)], source_ip: Option<&str>) -> Ctx {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Ctx {
            method: "POST".into(),
            path: "/api/login".into(),
            query: Default::default(),
            headers: h,
            body: Vec::new(),
            now: 10_000,
            source_ip: source_ip.map(str::to_owned),
        }
    }

    fn policy(trust_forwarded_for: bool) -> Policy {
        Policy {
            client_ip_secret: Some(Secret(SECRET.to_vec())),
            trust_forwarded_for,
            ..Policy::default()
        }
    }

    #[test]
    fn test_signed_address_wins_over_forwarded_for_and_source_ip() {
        let signed = sign_client_ip(SECRET, "203.0.113.7", 10_000, HOST).unwrap();
        let headers = [
            ("host", HOST),
            ("x-forwarded-for", "198.51.100.1"),
            (CLIENT_IP_HEADER, signed.as_str()),
        ];
        for trust in [false, true] {
            let c = ctx(&headers, Some("104.16.0.1"));
            assert_eq!(client_address(&policy(trust), &c), "203.0.113.7");
        }
    }

    #[test]
    fn test_forged_addresses_ignored_in_production() {
        let p = policy(false);
        // A bare x-forwarded-for from a direct caller: not trusted.
        let c = ctx(&[("host", HOST), ("x-forwarded-for", "198.51.100.1")], None);
        assert_eq!(client_address(&p, &c), "unknown");
        // API Gateway's source address is used instead when present.
        let c = ctx(
            &[("host", HOST), ("x-forwarded-for", "198.51.100.1")],
            Some("192.0.2.9"),
        );
        assert_eq!(client_address(&p, &c), "192.0.2.9");
        // Signed with another secret, for another host, or stale: not trusted.
        for forged in [
            sign_client_ip(b"guessed-secret-000000", "198.51.100.1", 10_000, HOST).unwrap(),
            sign_client_ip(SECRET, "198.51.100.1", 10_000, "staging.example.com").unwrap(),
            sign_client_ip(SECRET, "198.51.100.1", 9_000, HOST).unwrap(),
        ] {
            let c = ctx(
                &[("host", HOST), (CLIENT_IP_HEADER, forged.as_str())],
                Some("192.0.2.9"),
            );
            assert_eq!(client_address(&p, &c), "192.0.2.9");
        }
        // Without a secret configured nothing signed is trusted.
        let signed = sign_client_ip(SECRET, "203.0.113.7", 10_000, HOST).unwrap();
        let c = ctx(&[("host", HOST), (CLIENT_IP_HEADER, signed.as_str())], None);
        assert_eq!(client_address(&Policy::default(), &c), "unknown");
    }

    #[test]
    fn test_forwarded_for_only_in_development() {
        let c = ctx(&[("x-forwarded-for", "198.51.100.1, 10.0.0.1")], None);
        assert_eq!(client_address(&policy(true), &c), "198.51.100.1");
        assert_eq!(client_address(&policy(false), &c), "unknown");
    }
}
