//! The catalogue from KV `CONFIG`, cached per isolate and keyed by version.
//!
//! `catalogue:current` names the version; `catalogue:v:<version>` holds the snapshot.
//! The isolate re-reads the (tiny) pointer after `CATALOGUE_TTL_MS` and parses a
//! snapshot only when the version changed, so a new catalogue is live within seconds
//! without a redeploy, and the hot path does no KV read at all: between one and two TTLs
//! the cached catalogue is still served and the pointer is re-read in the background
//! ([`refresh_in_background`]); only past two TTLs (or with a TTL of 0) does a request
//! wait for KV.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tollbooth_core::catalogue::Catalogue;
use tollbooth_core::error::GatewayError;
use worker::{Context, Env};

use crate::util::now_ms;

struct Cached {
    catalogue: Rc<Catalogue>,
    checked_ms: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<Cached>> = const { RefCell::new(None) };
    /// Served stale: the next `refresh_in_background` re-reads the pointer.
    static STALE: Cell<bool> = const { Cell::new(false) };
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

/// Re-reads the catalogue in `ctx.wait_until` when a request was served a stale one
/// (called once per request by the middleware; one refresh in flight per isolate).
pub fn refresh_in_background(env: &Env, ctx: &Context) {
    if !STALE.with(|s| s.replace(false)) || REFRESHING.with(|r| r.replace(true)) {
        return;
    }
    let env = env.clone();
    ctx.wait_until(async move {
        let _ = load(&env, 0).await;
        REFRESHING.with(|r| r.set(false));
    });
}

/// The current catalogue. 503 when none is published or it cannot be read (the last good
/// one is kept when a newer snapshot is invalid).
pub async fn load(env: &Env, ttl_ms: u64) -> Result<Rc<Catalogue>, GatewayError> {
    let now = now_ms();
    let cached = CURRENT.with(|c| {
        c.borrow().as_ref().map(|c| {
            let age = now.saturating_sub(c.checked_ms);
            if age < ttl_ms {
                return (c.catalogue.clone(), true);
            }
            if age < ttl_ms.saturating_mul(2) {
                STALE.with(|s| s.set(true));
                return (c.catalogue.clone(), true);
            }
            (c.catalogue.clone(), false)
        })
    });
    if let Some((cat, true)) = &cached {
        return Ok(cat.clone());
    }
    let unavailable = || GatewayError::Overloaded {
        message: "The model catalogue is not available.".into(),
        retry_after_secs: None,
    };
    let kv = env.kv("CONFIG").map_err(|_| unavailable())?;
    let version = match kv.get("catalogue:current").text().await {
        Ok(Some(v)) => v.trim().to_owned(),
        Ok(None) => return cached.map(|(c, _)| c).ok_or_else(unavailable),
        Err(_) => return cached.map(|(c, _)| c).ok_or_else(unavailable),
    };
    if let Some((cat, _)) = &cached {
        if cat.version() == version {
            remember(cat.clone(), now);
            return Ok(cat.clone());
        }
    }
    // Snapshots are immutable per version, so the KV edge cache may keep them long; only
    // the tiny pointer must be fresh.
    let parsed = match kv
        .get(&format!("catalogue:v:{version}"))
        .cache_ttl(3600)
        .text()
        .await
    {
        Ok(Some(json)) => Catalogue::from_json(&json).map_err(|e| e.to_string()),
        Ok(None) => Err(format!("catalogue:v:{version} is missing")),
        Err(e) => Err(e.to_string()),
    };
    match parsed {
        Ok(cat) => {
            let cat = Rc::new(cat);
            remember(cat.clone(), now);
            Ok(cat)
        }
        Err(e) => {
            worker::console_error!(
                "{}",
                serde_json::json!({"msg": "catalogue load failed", "version": version, "error": e})
            );
            match cached {
                Some((cat, _)) => {
                    remember(cat.clone(), now);
                    Ok(cat)
                }
                None => Err(unavailable()),
            }
        }
    }
}

fn remember(catalogue: Rc<Catalogue>, now: u64) {
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Cached {
            catalogue,
            checked_ms: now,
        })
    });
}
