//! How much to reserve before a request runs.
//!
//! The reservation is realistic, not worst-case: a prompt estimate from the request's text
//! plus the output the request can produce (`max_tokens` capped at the model maximum, or a
//! default when absent). A request without `max_tokens` therefore never reserves the whole
//! budget. After the request, settlement charges the provider's actual usage and refunds
//! (or, rarely, tops up) the difference.

use serde::{Deserialize, Serialize};

use super::price::{cost_micros, Price};
use super::unit::{charge_in_unit, AllowanceUnit};
use crate::usage::Usage;

/// ASCII characters per token in the prompt estimate (and output characters per token
/// when reserving a characters allowance). English BPE averages about 4 chars per token.
pub const CHARS_PER_TOKEN_ESTIMATE: u64 = 4;

/// Tokens added per message for role markers and separators in chat templates.
pub const PER_MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// Tokens added once per request (reply priming).
pub const PER_REQUEST_OVERHEAD_TOKENS: u64 = 3;

/// Output reserved when the request has no `max_tokens` and the model has no better
/// default.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 4096;

/// Estimated tokens of one piece of text: ASCII characters / 4 rounded up, plus one token
/// per non-ASCII character.
///
/// Conservative (it overestimates for most text): BPE tokenizers average ~4 ASCII chars
/// per token, and CJK or other non-Latin characters take about one token each (often
/// less), so a prompt is rarely underestimated. It is only used to reserve; billing uses
/// the provider's reported usage.
pub fn estimate_text_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold((0u64, 0u64), |(a, o), c| {
        if c.is_ascii() {
            (a.saturating_add(1), o)
        } else {
            (a, o.saturating_add(1))
        }
    });
    ascii
        .div_ceil(CHARS_PER_TOKEN_ESTIMATE)
        .saturating_add(other)
}

/// Estimated prompt tokens of a request, given the text of each message (and of anything
/// else sent as prompt: system prompt, tool definitions as JSON, ...; one item each):
/// [`PER_REQUEST_OVERHEAD_TOKENS`] + for each item its [`estimate_text_tokens`] +
/// [`PER_MESSAGE_OVERHEAD_TOKENS`]. Non-text inputs (images, audio) are the caller's to add.
pub fn estimate_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    messages
        .into_iter()
        .fold(PER_REQUEST_OVERHEAD_TOKENS, |total, text| {
            total
                .saturating_add(estimate_text_tokens(text))
                .saturating_add(PER_MESSAGE_OVERHEAD_TOKENS)
        })
}

/// The model facts the output estimate needs (from the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputLimits {
    /// The model's maximum output tokens; requests asking for more are capped.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Output reserved when the request sets no `max_tokens`.
    #[serde(default = "default_output_tokens")]
    pub default_output_tokens: u64,
}

fn default_output_tokens() -> u64 {
    DEFAULT_OUTPUT_TOKENS
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_output_tokens: None,
            default_output_tokens: DEFAULT_OUTPUT_TOKENS,
        }
    }
}

/// The estimated usage of a request before it runs: what to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationEstimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl ReservationEstimate {
    /// `prompt_tokens` from [`estimate_prompt_tokens`]; `requested_max_tokens` is the
    /// request's `max_tokens` / `max_completion_tokens` / `maxOutputTokens`. The output is
    /// the requested maximum, or the default when absent, capped at the model maximum.
    pub fn new(
        prompt_tokens: u64,
        requested_max_tokens: Option<u64>,
        limits: &OutputLimits,
    ) -> Self {
        let wanted = requested_max_tokens.unwrap_or(limits.default_output_tokens);
        let output_tokens = match limits.max_output_tokens {
            Some(cap) => wanted.min(cap),
            None => wanted,
        };
        ReservationEstimate {
            input_tokens: prompt_tokens,
            output_tokens,
        }
    }

    /// The estimate as a [`Usage`] (no cached tokens assumed: the dearer case).
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            ..Usage::default()
        }
    }

    /// Output characters to reserve against a characters allowance.
    pub fn output_chars(&self) -> u64 {
        self.output_tokens.saturating_mul(CHARS_PER_TOKEN_ESTIMATE)
    }

    /// The estimated cost in micro-units.
    pub fn cost_micros(&self, price: &Price) -> u64 {
        cost_micros(price, &self.usage())
    }

    /// What to reserve against an allowance counted in `unit`.
    pub fn in_unit(&self, unit: AllowanceUnit, price: &Price) -> u64 {
        let cost = match unit {
            AllowanceUnit::Money => self.cost_micros(price),
            _ => 0,
        };
        charge_in_unit(unit, &self.usage(), self.output_chars(), cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_text_estimate() {
        assert_eq!(estimate_text_tokens(""), 0);
        assert_eq!(estimate_text_tokens("abcd"), 1);
        assert_eq!(estimate_text_tokens("abcde"), 2);
        assert_eq!(estimate_text_tokens("你好世界"), 4);
        assert_eq!(estimate_text_tokens("héllo"), 1 + 1); // 4 ASCII + 1 other
        assert_eq!(estimate_text_tokens("🎉"), 1);
    }

    #[test]
    fn test_prompt_estimate_overheads() {
        assert_eq!(estimate_prompt_tokens([]), PER_REQUEST_OVERHEAD_TOKENS);
        assert_eq!(
            estimate_prompt_tokens(["You are helpful.", "Hi"]),
            PER_REQUEST_OVERHEAD_TOKENS
                + (4 + PER_MESSAGE_OVERHEAD_TOKENS)
                + (1 + PER_MESSAGE_OVERHEAD_TOKENS)
        );
    }

    #[test]
    fn test_estimate_overestimates_typical_english() {
        // ~ 60 real tokens in cl100k for this paragraph.
        let text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen \
                    liquor jugs. How vexingly quick daft zebras jump! Sphinx of black quartz, \
                    judge my vow. The five boxing wizards jump quickly.";
        assert!(estimate_text_tokens(text) >= 45);
    }

    #[test]
    fn test_output_default_when_absent_and_capped() {
        let limits = OutputLimits {
            max_output_tokens: Some(8192),
            default_output_tokens: 1024,
        };
        assert_eq!(
            ReservationEstimate::new(10, None, &limits).output_tokens,
            1024
        );
        assert_eq!(
            ReservationEstimate::new(10, Some(100), &limits).output_tokens,
            100
        );
        assert_eq!(
            ReservationEstimate::new(10, Some(1_000_000), &limits).output_tokens,
            8192
        );
        // The default itself is capped by a smaller model maximum.
        let small = OutputLimits {
            max_output_tokens: Some(512),
            default_output_tokens: 4096,
        };
        assert_eq!(
            ReservationEstimate::new(10, None, &small).output_tokens,
            512
        );
        // No model max: the default applies, never "the whole budget".
        let est = ReservationEstimate::new(10, None, &OutputLimits::default());
        assert_eq!(est.output_tokens, DEFAULT_OUTPUT_TOKENS);
    }

    #[test]
    fn test_estimate_in_each_unit() {
        let price = Price {
            input_per_mtok: 1_000_000,
            output_per_mtok: 2_000_000,
            per_request: 5,
            ..Price::default()
        };
        let est = ReservationEstimate::new(100, Some(50), &OutputLimits::default());
        assert_eq!(est.in_unit(AllowanceUnit::Tokens, &price), 150);
        assert_eq!(est.in_unit(AllowanceUnit::Characters, &price), 200);
        assert_eq!(est.in_unit(AllowanceUnit::Requests, &price), 1);
        assert_eq!(est.in_unit(AllowanceUnit::Money, &price), 100 + 100 + 5);
    }

    #[test]
    fn test_limits_serde_default() {
        let limits: OutputLimits = serde_json::from_str(r#"{"max_output_tokens":100}"#).unwrap();
        assert_eq!(limits.default_output_tokens, DEFAULT_OUTPUT_TOKENS);
        assert_eq!(limits.max_output_tokens, Some(100));
    }
}
