//! What a finished request is billed: the settlement decision, pure.
//!
//! | how the request ended | billed |
//! |---|---|
//! | the provider reported usage | that usage, always (whatever else happened) |
//! | completed without usage | estimate: the reserved prompt + the output counted while streaming |
//! | client disconnected, or the upstream broke off after some output | the same estimate from what was produced (nothing if nothing was) |
//! | an attempt timed out after it was sent | the whole reservation (the provider may have run the generation to its end) |
//! | failed before any output (error status, unreachable) | nothing |
//! | never settled: the reservation expired | the whole reservation (a late real settlement corrects it) |
//!
//! Estimated bills are flagged `estimated` in the usage event.

use serde::{Deserialize, Serialize};

use super::estimate::ReservationEstimate;
use crate::usage::Usage;

/// How a request ended, as far as billing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Completed,
    ClientAbort,
    /// The upstream failed after the response started.
    UpstreamFailed,
    /// An upstream attempt timed out after the request was sent.
    TimedOut,
    /// Nothing reached the caller and the upstream produced nothing billable.
    FailedBeforeOutput,
    /// The reservation expired without a settlement (the sweep).
    Expired,
}

impl Ending {
    /// The usage event's `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Completed => "ok",
            Ending::ClientAbort => "client_abort",
            Ending::UpstreamFailed | Ending::FailedBeforeOutput => "upstream_error",
            Ending::TimedOut => "upstream_timeout",
            Ending::Expired => "expired",
        }
    }

    /// Counted as an error in the rollups.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Ending::UpstreamFailed | Ending::TimedOut | Ending::FailedBeforeOutput
        )
    }
}

/// What the request path observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub ending: Ending,
    /// The provider's usage, when it reported one.
    pub usage: Option<Usage>,
    /// Characters of generated output produced (see `translate::hub::chunk_chars`).
    pub output_chars: u64,
    /// Estimated tokens of that output (`estimate_text_tokens` of each piece: one token
    /// per non-ASCII character, so CJK output is not under-billed).
    pub output_tokens_est: u64,
}

/// The bill of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bill {
    pub usage: Usage,
    /// Characters charged against a characters allowance.
    pub output_chars: u64,
    pub estimated: bool,
    /// Whether anything is charged at all (a request that failed before any output is
    /// not, not even a per-request fee).
    pub charge: bool,
}

/// Decides the bill (see the module docs). `reserved` is the reservation's estimate.
pub fn bill(reserved: &ReservationEstimate, observed: &Observed) -> Bill {
    if let Some(usage) = observed.usage {
        return Bill {
            usage,
            output_chars: observed.output_chars,
            estimated: false,
            charge: true,
        };
    }
    let produced = observed.output_chars > 0 || observed.output_tokens_est > 0;
    let from_output = |estimated| Bill {
        usage: Usage {
            input_tokens: reserved.input_tokens,
            output_tokens: observed.output_tokens_est,
            ..Usage::default()
        },
        output_chars: observed.output_chars,
        estimated,
        charge: true,
    };
    let whole_reservation = Bill {
        usage: reserved.usage(),
        output_chars: reserved.output_chars(),
        estimated: true,
        charge: true,
    };
    match observed.ending {
        Ending::Completed => from_output(true),
        Ending::ClientAbort | Ending::UpstreamFailed if produced => from_output(true),
        Ending::TimedOut | Ending::Expired => whole_reservation,
        Ending::ClientAbort | Ending::UpstreamFailed | Ending::FailedBeforeOutput => Bill {
            usage: Usage::default(),
            output_chars: 0,
            estimated: false,
            charge: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESERVED: ReservationEstimate = ReservationEstimate {
        input_tokens: 100,
        output_tokens: 50,
    };

    fn observed(ending: Ending, usage: Option<Usage>, chars: u64, tokens: u64) -> Observed {
        Observed {
            ending,
            usage,
            output_chars: chars,
            output_tokens_est: tokens,
        }
    }

    #[test]
    fn test_provider_usage_always_wins() {
        let u = Usage {
            input_tokens: 7,
            output_tokens: 9,
            ..Usage::default()
        };
        for ending in [
            Ending::Completed,
            Ending::ClientAbort,
            Ending::UpstreamFailed,
            Ending::TimedOut,
            Ending::FailedBeforeOutput,
        ] {
            let b = bill(&RESERVED, &observed(ending, Some(u), 3, 1));
            assert_eq!(b.usage, u);
            assert!(!b.estimated);
        }
    }

    #[test]
    fn test_estimates_and_nothing_when_nothing_was_produced() {
        let b = bill(&RESERVED, &observed(Ending::Completed, None, 40, 12));
        assert_eq!((b.usage.input_tokens, b.usage.output_tokens), (100, 12));
        assert!(b.estimated);
        let b = bill(&RESERVED, &observed(Ending::ClientAbort, None, 40, 12));
        assert_eq!(b.usage.output_tokens, 12);
        for ending in [
            Ending::ClientAbort,
            Ending::UpstreamFailed,
            Ending::FailedBeforeOutput,
        ] {
            let b = bill(&RESERVED, &observed(ending, None, 0, 0));
            assert_eq!(b.usage, Usage::default(), "{ending:?}");
            assert!(!b.charge);
        }
    }

    #[test]
    fn test_timeout_after_send_and_expiry_bill_the_reservation() {
        for ending in [Ending::TimedOut, Ending::Expired] {
            let b = bill(&RESERVED, &observed(ending, None, 0, 0));
            assert_eq!(b.usage.total_tokens(), 150);
            assert_eq!(b.output_chars, 200);
            assert!(b.estimated);
        }
    }
}
