//! Speculative admission: when this isolate expects a member to be admitted, the
//! upstream call starts while the D1 reservation commits, so the D1 round trip hides
//! behind the upstream's time to first token. Nothing reaches the client before the
//! reservation exists (the commit point is unchanged); a refusal cancels the upstream
//! call and answers the refusal, and is recorded as a usage event charged 0 with status
//! `speculative_abort` (what it cost the operator is then visible).
//!
//! "Expects admission" is decided in isolate memory, per member:
//! - a **hint**: what was left of the source (allowance or wallet) after the member's
//!   last admission here, younger than [`HINT_TTL_MS`]; it must cover
//!   [`HEADROOM_FACTOR`] × the request's upper bound, and each speculative request in
//!   flight takes its upper bound off it, so concurrent speculation stays within it;
//! - a **negative cache**: a refused member (402) or key (429) is not speculated for
//!   until the rate window resets, or for [`REFUSAL_TTL_MS`];
//! - a member has at most [`MAX_IN_FLIGHT`] speculative requests in flight per isolate;
//! - the catalogue settings: `speculative_admission` (the kill switch) and
//!   `speculative_max_input_tokens` (no speculation for larger prompts).
//!
//! A member seen for the first time in this isolate is admitted serially (no hint yet).
//! Exactness does not depend on any of this: the reservation is the same conditional
//! D1 batch whether or not the upstream call started before it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tollbooth_core::billing::{AllowanceUnit, Price, ReservationEstimate};
use tollbooth_core::catalogue::Settings;
use worker::Env;

use crate::context::log_error;
use crate::ledger::{self, num, opt_text, stmt, text};
use crate::upstream::Abort;
use crate::util::now_ms;

/// A hint older than this is not trusted.
pub const HINT_TTL_MS: u64 = 10 * 60 * 1000;
/// How long a 402 stops speculation for the member.
pub const REFUSAL_TTL_MS: u64 = 60 * 1000;
/// The hint must cover this many upper bounds of the request.
pub const HEADROOM_FACTOR: u64 = 2;
/// Speculative requests in flight per member and isolate.
pub const MAX_IN_FLIGHT: u32 = 4;
/// Bounds the tables (a flood of members cannot grow isolate memory without limit).
const MAX_ENTRIES: usize = 10_000;

struct Hint {
    unit: AllowanceUnit,
    left: u64,
    at_ms: u64,
    in_flight: u32,
    /// Bumped by every refresh: a ticket gives its share back only to the hint it took
    /// it from (a refreshed hint already counts the reservation).
    generation: u64,
}

thread_local! {
    static HINTS: RefCell<HashMap<String, Hint>> = RefCell::new(HashMap::new());
    /// `member:<id>` / `key:<id>` → refused until (isolate ms).
    static REFUSED: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

fn refused_until(scope: &str, now: u64) -> bool {
    REFUSED.with(|r| r.borrow().get(scope).is_some_and(|until| *until > now))
}

/// A speculative request in flight: holds its share of the member's hint until dropped.
pub struct Ticket {
    member: String,
    need: u64,
    generation: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        HINTS.with(|h| {
            if let Some(hint) = h.borrow_mut().get_mut(&self.member) {
                hint.in_flight = hint.in_flight.saturating_sub(1);
                if hint.generation == self.generation {
                    hint.left = hint.left.saturating_add(self.need);
                }
            }
        });
    }
}

/// What the decision needs to know about a request.
pub struct Candidate<'a> {
    pub member_id: &'a str,
    pub key_id: &'a str,
    pub price: &'a Price,
    pub worst: &'a ReservationEstimate,
    pub input_tokens: u64,
}

/// Whether to speculate for this request; the ticket must live until admission is
/// decided.
pub fn decide(settings: &Settings, c: &Candidate<'_>) -> Option<Ticket> {
    if !settings.speculative_admission || c.input_tokens > settings.speculative_max_input_tokens {
        return None;
    }
    let now = now_ms();
    if refused_until(&format!("member:{}", c.member_id), now)
        || refused_until(&format!("key:{}", c.key_id), now)
    {
        return None;
    }
    HINTS.with(|h| {
        let mut h = h.borrow_mut();
        let hint = h.get_mut(c.member_id)?;
        if now.saturating_sub(hint.at_ms) >= HINT_TTL_MS || hint.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        let need = c.worst.in_unit(hint.unit, c.price);
        if hint.left < need.saturating_mul(HEADROOM_FACTOR) {
            return None;
        }
        hint.left -= need;
        hint.in_flight += 1;
        Some(Ticket {
            member: c.member_id.to_owned(),
            need,
            generation: hint.generation,
        })
    })
}

/// Records an admission's headroom (after every admission, speculative or not).
pub fn admitted(member_id: &str, unit: AllowanceUnit, headroom: Option<u64>) {
    let now = now_ms();
    REFUSED.with(|r| r.borrow_mut().remove(&format!("member:{member_id}")));
    HINTS.with(|h| {
        let mut h = h.borrow_mut();
        let Some(left) = headroom else {
            h.remove(member_id);
            return;
        };
        if h.len() >= MAX_ENTRIES && !h.contains_key(member_id) {
            h.retain(|_, v| v.in_flight > 0 && now.saturating_sub(v.at_ms) < HINT_TTL_MS);
            if h.len() >= MAX_ENTRIES {
                return;
            }
        }
        let (in_flight, generation) = h
            .get(member_id)
            .map_or((0, 0), |v| (v.in_flight, v.generation.wrapping_add(1)));
        h.insert(
            member_id.to_owned(),
            Hint {
                unit,
                left,
                at_ms: now,
                in_flight,
                generation,
            },
        );
    });
}

/// Records a refusal: a 429 stops speculation for the key for `retry_after_secs`, a 402
/// for the member for [`REFUSAL_TTL_MS`] (and forgets its hint).
pub fn refused(member_id: &str, key_id: &str, status: u16, retry_after_secs: Option<u64>) {
    let now = now_ms();
    let (scope, ttl) = match status {
        429 => (
            format!("key:{key_id}"),
            retry_after_secs.unwrap_or(60).saturating_mul(1000),
        ),
        402 => (format!("member:{member_id}"), REFUSAL_TTL_MS),
        _ => return,
    };
    if status == 402 {
        HINTS.with(|h| {
            if let Some(hint) = h.borrow_mut().get_mut(member_id) {
                hint.left = 0;
                hint.generation = hint.generation.wrapping_add(1);
            }
        });
    }
    REFUSED.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() >= MAX_ENTRIES {
            r.retain(|_, until| *until > now);
            if r.len() >= MAX_ENTRIES {
                r.clear();
            }
        }
        r.insert(scope, now.saturating_add(ttl));
    });
}

/// The upstream calls a speculative request started (all are cancelled on refusal).
#[derive(Clone, Default)]
pub struct Calls(Rc<RefCell<Vec<Abort>>>);

impl Calls {
    pub fn track(&self, abort: &Abort) {
        self.0.borrow_mut().push(abort.clone());
    }

    /// Cancels every call (and the reading of its body); `true` if there was one.
    pub fn cancel_all(&self) -> bool {
        let calls = std::mem::take(&mut *self.0.borrow_mut());
        for c in &calls {
            c.abort();
        }
        !calls.is_empty()
    }
}

/// A cancelled speculative request, for its usage event.
pub struct AbortEvent {
    pub request_id: String,
    pub member_id: String,
    pub key_id: String,
    pub model: String,
    pub deployment: Option<String>,
    pub input_tokens_est: u64,
    pub latency_ms: u64,
    pub now_s: u64,
}

/// Writes the usage event of a cancelled speculative request: charged 0, status
/// `speculative_abort`, source `speculative`, the prompt estimate as its input tokens
/// (what the provider may bill the operator for). Best effort: a failure is logged.
pub async fn record_abort(env: Env, ev: AbortEvent) {
    let result = async {
        let db = ledger::db(&env)?;
        stmt(
            &db,
            "INSERT OR IGNORE INTO usage_events (request_id, member_id, key_id, model, \
               deployment, input_tokens, output_tokens, cached_tokens, output_chars, \
               cost_micros, charged, charged_unit, source, status, estimated, latency_ms, \
               ttft_ms, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, 0, 0, 'money', 'speculative', \
               'speculative_abort', 1, ?7, NULL, ?8)",
            &[
                text(&ev.request_id),
                text(&ev.member_id),
                text(&ev.key_id),
                text(&ev.model),
                opt_text(ev.deployment.as_deref()),
                num(ev.input_tokens_est),
                num(ev.latency_ms),
                num(ev.now_s),
            ],
        )?
        .run()
        .await?;
        Ok::<(), worker::Error>(())
    }
    .await;
    if let Err(e) = result {
        log_error(
            "speculative abort event not recorded",
            serde_json::json!({ "request_id": ev.request_id, "error": e.to_string() }),
        );
    }
}
