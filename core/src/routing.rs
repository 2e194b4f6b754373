//! Choosing a deployment: weighted choice, weighted fallback order, per-credential
//! circuit breakers and retry classification.
//!
//! Randomness comes in as a `u64` from the caller (the edge draws it from
//! `crypto.getRandomValues`); orders derived from it are deterministic, so routing is
//! unit-testable. All times are unix milliseconds passed in.
//!
//! Weights: a candidate with weight 0 is never chosen and never appears in a fallback
//! order (weight 0 means "drained"; disable a deployment entirely in the catalogue).
//!
//! Open breakers: [`fallback_order`] puts candidates whose breaker does not admit a
//! request *after* all healthy ones ([`OpenBreakers::Last`], the default: better a likely
//! failure than a certain 503 when everything is down) or leaves them out
//! ([`OpenBreakers::Skip`]).

use serde::{Deserialize, Serialize};

/// Picks an index with probability proportional to its weight, from one random `u64`.
/// `None` when every weight is 0 (or the slice is empty). Uses the high bits of `random`
/// (multiply-shift), so the bias is below 2^-32 for any realistic total weight.
pub fn weighted_choice(weights: &[u32], random: u64) -> Option<usize> {
    let total = weights
        .iter()
        .fold(0u64, |sum, &w| sum.saturating_add(u64::from(w)));
    if total == 0 {
        return None;
    }
    // (random * total) >> 64 is uniform in 0..total.
    let target = (u128::from(random).saturating_mul(u128::from(total)) >> 64) as u64;
    let mut cumulative = 0u64;
    for (index, &weight) in weights.iter().enumerate() {
        cumulative = cumulative.saturating_add(u64::from(weight));
        if target < cumulative {
            return Some(index);
        }
    }
    None
}

/// A weighted random order without replacement: the first element is chosen as by
/// [`weighted_choice`], the next among the rest in proportion to their weights, and so
/// on. Zero-weight indices are left out. The randomness for each step is derived from
/// `random` with SplitMix64, so one `u64` orders any number of candidates.
pub fn weighted_order(weights: &[u32], random: u64) -> Vec<usize> {
    let mut remaining: Vec<(usize, u32)> = weights
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, w)| w > 0)
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    let mut state = random;
    while !remaining.is_empty() {
        let step_weights: Vec<u32> = remaining.iter().map(|&(_, w)| w).collect();
        let Some(pick) = weighted_choice(&step_weights, splitmix64(&mut state)) else {
            break;
        };
        if pick < remaining.len() {
            let (index, _) = remaining.remove(pick);
            order.push(index);
        } else {
            break;
        }
    }
    order
}

/// What [`fallback_order`] does with candidates whose breaker is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenBreakers {
    /// Try them after all healthy candidates (in their own weighted order).
    #[default]
    Last,
    /// Never try them.
    Skip,
}

/// The order in which to try candidates for one request: a [`weighted_order`] of those
/// with `available[i] == true` (typically [`Breaker::allows`]), then, with
/// [`OpenBreakers::Last`], a weighted order of the rest. A missing `available` entry
/// counts as available.
pub fn fallback_order(
    weights: &[u32],
    available: &[bool],
    random: u64,
    open: OpenBreakers,
) -> Vec<usize> {
    let is_available = |i: usize| available.get(i).copied().unwrap_or(true);
    let masked = |want: bool| -> Vec<u32> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| if is_available(i) == want { w } else { 0 })
            .collect()
    };
    let mut order = weighted_order(&masked(true), random);
    if open == OpenBreakers::Last {
        // A different stream for the second pass, so it is independent of the first.
        order.extend(weighted_order(
            &masked(false),
            random ^ 0xA5A5_5A5A_F0F0_0F0F,
        ));
    }
    order
}

/// SplitMix64: a tiny, well-mixed generator to expand one supplied seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Circuit-breaker tuning (from the catalogue's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// Cooldown after the first trip.
    pub base_cooldown_ms: u64,
    /// Cooldown cap; each consecutive trip doubles the cooldown up to this.
    pub max_cooldown_ms: u64,
    /// A half-open probe that has not reported after this long is presumed lost, and
    /// another probe may go.
    pub probe_timeout_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            base_cooldown_ms: 10_000,
            max_cooldown_ms: 300_000,
            probe_timeout_ms: 30_000,
        }
    }
}

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow; counts consecutive failures.
    Closed { consecutive_failures: u32 },
    /// No requests until `until_ms`.
    Open { until_ms: u64 },
    /// One probe request is in flight since `probe_started_ms`; others are held back.
    HalfOpen { probe_started_ms: u64 },
}

/// Health of one upstream credential: a circuit breaker.
///
/// Closed (counting consecutive failures) → after `failure_threshold` failures, Open
/// until `now + cooldown`, the cooldown doubling with each consecutive trip up to
/// `max_cooldown_ms` → once the cooldown has passed, [`Breaker::try_acquire`] lets one
/// probe through (HalfOpen) → the probe's success closes the breaker and resets the
/// cooldown; its failure opens it again with a longer cooldown.
///
/// Serializable so the edge can keep it in isolate memory, KV or D1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    #[serde(flatten)]
    pub state: BreakerState,
    /// Consecutive trips without a successful probe in between (drives the backoff).
    #[serde(default)]
    pub trips: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            trips: 0,
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a request would be admitted at `now_ms`, without changing state. Use it to
    /// order candidates; call [`Breaker::try_acquire`] when actually sending.
    pub fn allows(&self, now_ms: u64, config: &BreakerConfig) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until_ms } => now_ms >= until_ms,
            BreakerState::HalfOpen { probe_started_ms } => {
                now_ms >= probe_started_ms.saturating_add(config.probe_timeout_ms)
            }
        }
    }

    /// Admits a request at `now_ms` or refuses it. An open breaker whose cooldown has
    /// passed (or a half-open one whose probe timed out) admits this request as the
    /// probe and becomes half-open.
    pub fn try_acquire(&mut self, now_ms: u64, config: &BreakerConfig) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                if self.allows(now_ms, config) {
                    self.state = BreakerState::HalfOpen {
                        probe_started_ms: now_ms,
                    };
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records a success. Closes a half-open breaker (the probe worked) and resets the
    /// failure count of a closed one. A late success while open (a request sent before
    /// the trip) is ignored: the cooldown runs its course.
    pub fn on_success(&mut self) {
        match self.state {
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                *self = Breaker::default();
            }
            BreakerState::Open { .. } => {}
        }
    }

    /// Records a failure at `now_ms` (see [`counts_against_health`] for what counts).
    pub fn on_failure(&mut self, now_ms: u64, config: &BreakerConfig) {
        match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= config.failure_threshold.max(1) {
                    self.trip(now_ms, config);
                } else {
                    self.state = BreakerState::Closed {
                        consecutive_failures: failures,
                    };
                }
            }
            BreakerState::HalfOpen { .. } => self.trip(now_ms, config),
            // Late failures of requests sent before the trip change nothing.
            BreakerState::Open { .. } => {}
        }
    }

    /// The cooldown the next trip would get.
    pub fn next_cooldown_ms(&self, config: &BreakerConfig) -> u64 {
        let factor = 1u64.checked_shl(self.trips).unwrap_or(u64::MAX);
        config
            .base_cooldown_ms
            .saturating_mul(factor)
            .min(config.max_cooldown_ms.max(config.base_cooldown_ms))
    }

    fn trip(&mut self, now_ms: u64, config: &BreakerConfig) {
        let cooldown = self.next_cooldown_ms(config);
        self.state = BreakerState::Open {
            until_ms: now_ms.saturating_add(cooldown),
        };
        self.trips = self.trips.saturating_add(1);
    }
}

/// How an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "status", rename_all = "snake_case")]
pub enum AttemptFailure {
    /// DNS, TCP or TLS failure: nothing reached the upstream.
    Connect,
    /// No response (or no first byte) in time.
    Timeout,
    /// The upstream answered with this non-success status.
    Status(u16),
}

/// Whether to retry the request on another attempt or candidate: connect errors,
/// timeouts, 429 and 5xx are retryable, other 4xx are not (the same request would fail
/// again). Nothing is retryable once the first byte went to the client, since the
/// client would see two responses spliced together.
pub fn is_retryable(failure: AttemptFailure, first_byte_sent: bool) -> bool {
    if first_byte_sent {
        return false;
    }
    match failure {
        AttemptFailure::Connect | AttemptFailure::Timeout => true,
        AttemptFailure::Status(status) => status == 429 || (500..=599).contains(&status),
    }
}

/// Whether a failure says something about the credential's health (feeds
/// [`Breaker::on_failure`]): connect errors, timeouts, 5xx, 429 (this credential is
/// throttled) and 401/403 (this credential is rejected). Other 4xx are the caller's
/// fault and do not count.
pub fn counts_against_health(failure: AttemptFailure) -> bool {
    match failure {
        AttemptFailure::Connect | AttemptFailure::Timeout => true,
        AttemptFailure::Status(status) => {
            matches!(status, 401 | 403 | 429) || (500..=599).contains(&status)
        }
    }
}

/// What to do after an upstream attempt failed, before anything reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try the next candidate.
    TryNext,
    /// Answer the caller with this failure.
    Stop,
}

/// The retry rule of the attempt loop: connect errors, 429 and 5xx try the next candidate,
/// and so do 401/403 (they are about *our* credential, another may work). A timeout
/// **stops**: the request was sent and the provider may be generating (and billing) it,
/// so a retry would not be free; the caller is answered 504 and billed the reservation.
/// Other 4xx are the caller's and stop.
pub fn after_failure(failure: AttemptFailure) -> AfterFailure {
    match failure {
        AttemptFailure::Connect => AfterFailure::TryNext,
        AttemptFailure::Timeout => AfterFailure::Stop,
        AttemptFailure::Status(s) if is_retryable(failure, false) || matches!(s, 401 | 403) => {
            AfterFailure::TryNext
        }
        AttemptFailure::Status(_) => AfterFailure::Stop,
    }
}

/// The candidates of one request, in the order to try them: a weighted order over the
/// deployments, and within each a weighted order over its credentials; then every
/// credential whose breaker is open (or whose last health check failed) moved after all
/// healthy ones, keeping their relative order. `deployments[i]` is the deployment's
/// weight and its credentials as `(weight, available)`. Returns `(deployment,
/// credential)` index pairs.
pub fn candidate_order(
    deployments: &[(u32, Vec<(u32, bool)>)],
    mut random: impl FnMut() -> u64,
) -> Vec<(usize, usize, bool)> {
    let weights: Vec<u32> = deployments.iter().map(|(w, _)| *w).collect();
    let mut out = Vec::new();
    for di in weighted_order(&weights, random()) {
        let Some((_, creds)) = deployments.get(di) else {
            continue;
        };
        let cw: Vec<u32> = creds.iter().map(|(w, _)| *w).collect();
        let available: Vec<bool> = creds.iter().map(|(_, a)| *a).collect();
        for ci in fallback_order(&cw, &available, random(), OpenBreakers::Last) {
            let ok = available.get(ci).copied().unwrap_or(true);
            out.push((di, ci, ok));
        }
    }
    // Stable: healthy credentials of every deployment before any open breaker.
    out.sort_by_key(|&(_, _, ok)| !ok);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_candidate_order_puts_open_breakers_last_across_deployments() {
        let deployments = vec![(1, vec![(1, false), (1, true)]), (1, vec![(1, true)])];
        let mut n = 0u64;
        let order = candidate_order(&deployments, || {
            n += 1;
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        });
        assert_eq!(order.len(), 3);
        assert!(order.iter().take(2).all(|c| c.2), "{order:?}");
        assert_eq!(order.last(), Some(&(0, 0, false)));
    }

    #[test]
    fn test_after_failure_never_retries_a_timeout() {
        assert_eq!(
            after_failure(AttemptFailure::Connect),
            AfterFailure::TryNext
        );
        assert_eq!(after_failure(AttemptFailure::Timeout), AfterFailure::Stop);
        for s in [401, 403, 429, 500, 503] {
            assert_eq!(
                after_failure(AttemptFailure::Status(s)),
                AfterFailure::TryNext
            );
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(after_failure(AttemptFailure::Status(s)), AfterFailure::Stop);
        }
    }

    /// Deterministic LCG producing full-range u64s.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mix the high half down so all 64 bits vary well.
            self.0 ^ (self.0 >> 29)
        }
    }

    fn assert_close(counts: &[u64], weights: &[u32], draws: u64) {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        for (i, (&count, &w)) in counts.iter().zip(weights).enumerate() {
            let expected = draws as f64 * f64::from(w) / total as f64;
            if w == 0 {
                assert_eq!(count, 0, "index {i}");
            } else {
                // Within 5 standard deviations of a binomial.
                let p = f64::from(w) / total as f64;
                let sd = (draws as f64 * p * (1.0 - p)).sqrt();
                assert!(
                    (count as f64 - expected).abs() < 5.0 * sd + 1.0,
                    "index {i}: {count} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn test_weighted_choice_edges() {
        assert_eq!(weighted_choice(&[], 7), None);
        assert_eq!(weighted_choice(&[0, 0], 7), None);
        assert_eq!(weighted_choice(&[0, 5, 0], 0), Some(1));
        assert_eq!(weighted_choice(&[0, 5, 0], u64::MAX), Some(1));
        assert_eq!(weighted_choice(&[1, 1], 0), Some(0));
        assert_eq!(weighted_choice(&[1, 1], u64::MAX), Some(1));
        assert_eq!(weighted_choice(&[1, 1], 1 << 63), Some(1));
        assert_eq!(weighted_choice(&[1, 1], (1 << 63) - 1), Some(0));
        assert_eq!(weighted_choice(&[u32::MAX, u32::MAX, 0], u64::MAX), Some(1));
    }

    #[test]
    fn test_weighted_choice_statistics() {
        let weights = [1, 0, 3, 6, 0, 10];
        let mut counts = [0u64; 6];
        let mut rng = Lcg(42);
        let draws = 200_000;
        for _ in 0..draws {
            counts[weighted_choice(&weights, rng.next()).unwrap()] += 1;
        }
        assert_close(&counts, &weights, draws);
    }

    #[test]
    fn test_weighted_order_is_a_permutation_of_positive_weights() {
        let weights = [5, 0, 1, 2, 0, 9];
        let mut rng = Lcg(7);
        for _ in 0..1000 {
            let mut order = weighted_order(&weights, rng.next());
            order.sort_unstable();
            assert_eq!(order, vec![0, 2, 3, 5]);
        }
        assert!(weighted_order(&[0, 0], 1).is_empty());
        assert!(weighted_order(&[], 1).is_empty());
    }

    #[test]
    fn test_weighted_order_statistics() {
        let weights = [1, 2, 7];
        let mut first = [0u64; 3];
        let mut second_given_first_2 = [0u64; 3];
        let mut rng = Lcg(2024);
        let draws = 100_000;
        for _ in 0..draws {
            let order = weighted_order(&weights, rng.next());
            first[order[0]] += 1;
            if order[0] == 2 {
                second_given_first_2[order[1]] += 1;
            }
        }
        assert_close(&first, &weights, draws);
        // Without replacement: after index 2, the rest keep their relative weights 1:2.
        let n = second_given_first_2.iter().sum();
        assert_close(&second_given_first_2, &[1, 2, 0], n);
    }

    #[test]
    fn test_fallback_order_open_breakers() {
        let weights = [3, 3, 3, 0];
        let available = [true, false, true, true];
        let mut rng = Lcg(9);
        for _ in 0..200 {
            let r = rng.next();
            let last = fallback_order(&weights, &available, r, OpenBreakers::Last);
            assert_eq!(last.len(), 3);
            assert_eq!(last[2], 1, "open breaker goes last");
            let skip = fallback_order(&weights, &available, r, OpenBreakers::Skip);
            assert_eq!(skip.len(), 2);
            assert!(!skip.contains(&1) && !skip.contains(&3));
        }
        // Everything open: still an order with Last, nothing with Skip.
        assert_eq!(
            fallback_order(&[1, 1], &[false, false], 3, OpenBreakers::Last).len(),
            2
        );
        assert!(fallback_order(&[1, 1], &[false, false], 3, OpenBreakers::Skip).is_empty());
        // Missing availability entries count as available.
        assert_eq!(fallback_order(&[1, 1], &[], 3, OpenBreakers::Skip).len(), 2);
    }

    #[test]
    fn test_breaker_full_cycle() {
        let cfg = BreakerConfig {
            failure_threshold: 3,
            base_cooldown_ms: 1_000,
            max_cooldown_ms: 5_000,
            probe_timeout_ms: 2_000,
        };
        let mut b = Breaker::new();
        b.on_failure(0, &cfg);
        b.on_failure(1, &cfg);
        assert_eq!(
            b.state,
            BreakerState::Closed {
                consecutive_failures: 2
            }
        );
        // A success resets the count.
        b.on_success();
        assert_eq!(
            b.state,
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        for t in 0..3 {
            assert!(b.try_acquire(t, &cfg));
            b.on_failure(t, &cfg);
        }
        assert_eq!(
            b.state,
            BreakerState::Open {
                until_ms: 2 + 1_000
            }
        );
        assert!(!b.allows(1_001, &cfg));
        assert!(!b.try_acquire(1_001, &cfg));
        // Late results while open change nothing.
        b.on_success();
        b.on_failure(1_001, &cfg);
        assert_eq!(b.state, BreakerState::Open { until_ms: 1_002 });

        // Cooldown over: exactly one probe goes through.
        assert!(b.allows(1_002, &cfg));
        assert!(b.try_acquire(1_002, &cfg));
        assert_eq!(
            b.state,
            BreakerState::HalfOpen {
                probe_started_ms: 1_002
            }
        );
        assert!(!b.try_acquire(1_003, &cfg));
        assert!(!b.allows(1_003, &cfg));

        // Probe fails: open again with a doubled cooldown.
        b.on_failure(1_500, &cfg);
        assert_eq!(
            b.state,
            BreakerState::Open {
                until_ms: 1_500 + 2_000
            }
        );
        assert!(b.try_acquire(3_500, &cfg));
        b.on_failure(3_600, &cfg);
        assert_eq!(
            b.state,
            BreakerState::Open {
                until_ms: 3_600 + 4_000
            }
        );
        assert!(b.try_acquire(7_600, &cfg));
        b.on_failure(7_600, &cfg);
        // Capped.
        assert_eq!(
            b.state,
            BreakerState::Open {
                until_ms: 7_600 + 5_000
            }
        );

        // A lost probe: another may go after the probe timeout.
        assert!(b.try_acquire(12_600, &cfg));
        assert!(!b.try_acquire(14_599, &cfg));
        assert!(b.try_acquire(14_600, &cfg));
        assert_eq!(
            b.state,
            BreakerState::HalfOpen {
                probe_started_ms: 14_600
            }
        );

        // Probe succeeds: closed, backoff reset.
        b.on_success();
        assert_eq!(b, Breaker::new());
        assert_eq!(b.next_cooldown_ms(&cfg), 1_000);
    }

    #[test]
    fn test_breaker_cooldown_saturates() {
        let cfg = BreakerConfig {
            failure_threshold: 1,
            base_cooldown_ms: u64::MAX / 2,
            max_cooldown_ms: u64::MAX,
            probe_timeout_ms: 0,
        };
        let mut b = Breaker {
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            trips: 200,
        };
        assert_eq!(b.next_cooldown_ms(&cfg), u64::MAX);
        b.on_failure(u64::MAX - 5, &cfg);
        assert_eq!(b.state, BreakerState::Open { until_ms: u64::MAX });
        // Threshold 0 behaves as 1.
        let mut b = Breaker::new();
        b.on_failure(
            0,
            &BreakerConfig {
                failure_threshold: 0,
                ..BreakerConfig::default()
            },
        );
        assert!(matches!(b.state, BreakerState::Open { .. }));
    }

    #[test]
    fn test_breaker_serde_round_trip() {
        let b = Breaker {
            state: BreakerState::Open { until_ms: 123 },
            trips: 2,
        };
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"state":"open","until_ms":123,"trips":2}"#);
        assert_eq!(serde_json::from_str::<Breaker>(&json).unwrap(), b);
        let cfg: BreakerConfig = serde_json::from_str(r#"{"failure_threshold":2}"#).unwrap();
        assert_eq!(
            cfg.base_cooldown_ms,
            BreakerConfig::default().base_cooldown_ms
        );
    }

    #[test]
    fn test_retry_classification() {
        use AttemptFailure::*;
        for f in [
            Connect,
            Timeout,
            Status(429),
            Status(500),
            Status(502),
            Status(503),
            Status(529),
        ] {
            assert!(is_retryable(f, false), "{f:?}");
            assert!(!is_retryable(f, true), "{f:?} after first byte");
        }
        for f in [
            Status(400),
            Status(401),
            Status(403),
            Status(404),
            Status(413),
            Status(422),
        ] {
            assert!(!is_retryable(f, false), "{f:?}");
        }
        assert!(counts_against_health(Status(401)));
        assert!(counts_against_health(Status(503)));
        assert!(counts_against_health(Timeout));
        assert!(!counts_against_health(Status(400)));
        assert!(!counts_against_health(Status(404)));
    }
}
