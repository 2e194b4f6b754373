//! Model prices and the cost of one request.

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// Micro-units per currency unit (1 USD = 1_000_000 micro-dollars).
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// Token prices are quoted per this many tokens.
pub const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

/// The price of one model, in integer micro-units of the currency.
///
/// E.g. $2.50 per 1M input tokens is `input_per_mtok: 2_500_000`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per 1M uncached input tokens.
    #[serde(default)]
    pub input_per_mtok: u64,
    /// Per 1M output tokens (reasoning tokens included).
    #[serde(default)]
    pub output_per_mtok: u64,
    /// Per 1M input tokens served from the provider's cache; `None` = the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<u64>,
    /// Per 1M cache-write tokens (Anthropic `cache_creation_input_tokens`); `None` = the
    /// input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<u64>,
    /// Flat fee per request (e.g. rerank or image endpoints priced per call).
    #[serde(default)]
    pub per_request: u64,
}

impl Price {
    /// The effective price of cached input tokens.
    pub fn cached_input_price(&self) -> u64 {
        self.cached_input_per_mtok.unwrap_or(self.input_per_mtok)
    }

    /// The effective price of cache-write tokens.
    pub fn cache_write_price(&self) -> u64 {
        self.cache_write_per_mtok.unwrap_or(self.input_per_mtok)
    }

    /// Whether every token class and the per-request fee cost nothing: a request at this
    /// price would be free. Only models the operator marked `free` may be served at it.
    pub fn is_zero(&self) -> bool {
        self.input_per_mtok == 0
            && self.output_per_mtok == 0
            && self.cached_input_price() == 0
            && self.cache_write_price() == 0
            && self.per_request == 0
    }
}

/// What one request costs, in micro-units.
///
/// Rounding rule: each token class is multiplied by its per-1M price exactly (in `u128`),
/// the products are summed, and the sum is divided by 1,000,000 **rounding up, once**.
/// So a request is never under-charged by rounding and is over-charged by less than one
/// micro-unit. The per-request fee is added after. The result saturates at `u64::MAX`
/// instead of overflowing.
///
/// Token classes: uncached input = `input - cached - cache_creation` (saturating at 0,
/// since [`Usage::input_tokens`] includes the cached tokens), cached input, cache writes
/// and output.
pub fn cost_micros(price: &Price, usage: &Usage) -> u64 {
    let uncached = usage
        .input_tokens
        .saturating_sub(usage.cached_input_tokens)
        .saturating_sub(usage.cache_creation_input_tokens);
    let terms = [
        (uncached, price.input_per_mtok),
        (usage.cached_input_tokens, price.cached_input_price()),
        (usage.cache_creation_input_tokens, price.cache_write_price()),
        (usage.output_tokens, price.output_per_mtok),
    ];
    let scaled = terms.iter().fold(0u128, |acc, &(tokens, per_mtok)| {
        acc.saturating_add(u128::from(tokens).saturating_mul(u128::from(per_mtok)))
    });
    let tokens_cost = scaled.div_ceil(TOKENS_PER_PRICE_UNIT);
    u64::try_from(tokens_cost)
        .unwrap_or(u64::MAX)
        .saturating_add(price.per_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn test_exact_cost() {
        // $2.50 / $10 per 1M: 1M in + 1M out = $12.50
        let price = Price {
            input_per_mtok: 2_500_000,
            output_per_mtok: 10_000_000,
            ..Price::default()
        };
        assert_eq!(
            cost_micros(&price, &usage(1_000_000, 1_000_000)),
            12_500_000
        );
        assert_eq!(cost_micros(&price, &usage(0, 0)), 0);
    }

    #[test]
    fn test_rounds_up_once_at_the_end() {
        // 1 token at 1 micro per 1M = 0.000001 micro -> 1 micro.
        let price = Price {
            input_per_mtok: 1,
            output_per_mtok: 1,
            ..Price::default()
        };
        assert_eq!(cost_micros(&price, &usage(1, 0)), 1);
        // Rounding per class would give 2; rounding once gives 1.
        assert_eq!(cost_micros(&price, &usage(1, 1)), 1);
        // Exactly representable: no extra micro.
        assert_eq!(cost_micros(&price, &usage(500_000, 500_000)), 1);
        assert_eq!(cost_micros(&price, &usage(500_000, 500_001)), 2);
    }

    #[test]
    fn test_per_request_fee_added() {
        let price = Price {
            input_per_mtok: 1_000_000,
            per_request: 700,
            ..Price::default()
        };
        assert_eq!(cost_micros(&price, &usage(10, 0)), 10 + 700);
        assert_eq!(cost_micros(&price, &Usage::default()), 700);
    }

    #[test]
    fn test_cached_tokens_priced_separately() {
        let price = Price {
            input_per_mtok: 3_000_000,
            output_per_mtok: 15_000_000,
            cached_input_per_mtok: Some(300_000),
            cache_write_per_mtok: Some(3_750_000),
            per_request: 0,
        };
        let usage = Usage {
            input_tokens: 10_000,
            output_tokens: 1_000,
            cached_input_tokens: 6_000,
            cache_creation_input_tokens: 2_000,
            reasoning_tokens: 0,
        };
        // uncached 2000*3 + cached 6000*0.3 + write 2000*3.75 + out 1000*15 (micros/token)
        assert_eq!(cost_micros(&price, &usage), 6_000 + 1_800 + 7_500 + 15_000);
    }

    #[test]
    fn test_cached_defaults_to_input_price() {
        let price = Price {
            input_per_mtok: 1_000_000,
            ..Price::default()
        };
        let usage = Usage {
            input_tokens: 100,
            cached_input_tokens: 40,
            cache_creation_input_tokens: 10,
            ..Usage::default()
        };
        assert_eq!(cost_micros(&price, &usage), 100);
    }

    #[test]
    fn test_inconsistent_cached_counts_saturate() {
        let price = Price {
            input_per_mtok: 1_000_000,
            cached_input_per_mtok: Some(0),
            ..Price::default()
        };
        let usage = Usage {
            input_tokens: 10,
            cached_input_tokens: 50,
            ..Usage::default()
        };
        assert_eq!(cost_micros(&price, &usage), 0);
    }

    #[test]
    fn test_overflow_saturates() {
        let price = Price {
            input_per_mtok: u64::MAX,
            output_per_mtok: u64::MAX,
            cached_input_per_mtok: Some(u64::MAX),
            cache_write_per_mtok: Some(u64::MAX),
            per_request: u64::MAX,
        };
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cached_input_tokens: 1,
            cache_creation_input_tokens: 1,
            reasoning_tokens: u64::MAX,
        };
        assert_eq!(cost_micros(&price, &huge), u64::MAX);
        let price = Price {
            output_per_mtok: u64::MAX,
            ..Price::default()
        };
        assert_eq!(cost_micros(&price, &usage(0, u64::MAX)), u64::MAX);
    }

    #[test]
    fn test_price_serde_defaults_and_unknown_fields() {
        let price: Price =
            serde_json::from_str(r#"{"input_per_mtok":5,"output_per_mtok":7}"#).unwrap();
        assert_eq!(price.cached_input_price(), 5);
        assert_eq!(price.cache_write_price(), 5);
        assert!(serde_json::from_str::<Price>(r#"{"input":5}"#).is_err());
    }
}
