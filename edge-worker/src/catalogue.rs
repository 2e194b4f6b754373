//! The catalogue from KV `CONFIG`, cached per isolate and keyed by version.
//!
//! `catalogue:current` names the version; `catalogue:v:<version>` holds the snapshot.
//! The isolate re-reads the (tiny) pointer after `CATALOGUE_TTL_MS` and parses a
//! snapshot only when the version changed, so a new catalogue is live within seconds
//! without a redeploy, and the hot path does no KV read at all.

use std::cell::RefCell;
use std::rc::Rc;

use tollbooth_core::catalogue::Catalogue;
use tollbooth_core::error::GatewayError;
use worker::Env;

use crate::util::now_ms;

struct Cached {
    catalogue: Rc<Catalogue>,
    checked_ms: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// The current catalogue. 503 when none is published or it cannot be read (the last good
/// one is kept when a newer snapshot is invalid).
pub async fn load(env: &Env, ttl_ms: u64) -> Result<Rc<Catalogue>, GatewayError> {
    let now = now_ms();
    let cached = CURRENT.with(|c| {
        c.borrow().as_ref().map(|c| {
            (
                c.catalogue.clone(),
                now.saturating_sub(c.checked_ms) < ttl_ms,
            )
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
    let parsed = match kv.get(&format!("catalogue:v:{version}")).text().await {
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
