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
//! The client address is the first `x-forwarded-for` entry (the worker's front door
//! sets it from `cf-connecting-ip`); a caller reaching the function directly can choose
//! it, so the per-account limit is the one that always holds.

use std::sync::OnceLock;

use crate::app::{AppState, Ctx};
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

/// The caller's address as the front door reports it; `unknown` when absent.
pub fn client_address(ctx: &Ctx) -> String {
    ctx.headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .unwrap_or("unknown")
        .to_owned()
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
