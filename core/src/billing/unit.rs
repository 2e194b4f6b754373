//! The units a plan allowance is counted in.

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// What a plan allowance (or a wallet) is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowanceUnit {
    /// Input + output tokens as reported by the upstream.
    Tokens,
    /// Characters of generated output (Unicode scalar values, not bytes).
    Characters,
    /// One per request.
    Requests,
    /// Money in micro-units (the request's [`cost_micros`](super::cost_micros)).
    Money,
}

impl AllowanceUnit {
    /// All units, for iterating over a plan's allowances.
    pub const ALL: [AllowanceUnit; 4] = [
        AllowanceUnit::Tokens,
        AllowanceUnit::Characters,
        AllowanceUnit::Requests,
        AllowanceUnit::Money,
    ];

    /// The serde name (`tokens`, `characters`, `requests`, `money`), for storage keys.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowanceUnit::Tokens => "tokens",
            AllowanceUnit::Characters => "characters",
            AllowanceUnit::Requests => "requests",
            AllowanceUnit::Money => "money",
        }
    }
}

/// What one finished request charges against an allowance counted in `unit`.
///
/// `output_chars` is the number of characters of generated output (count with
/// `str::chars().count()`); `cost_micros` is the request's money cost.
pub fn charge_in_unit(
    unit: AllowanceUnit,
    usage: &Usage,
    output_chars: u64,
    cost_micros: u64,
) -> u64 {
    match unit {
        AllowanceUnit::Tokens => usage.total_tokens(),
        AllowanceUnit::Characters => output_chars,
        AllowanceUnit::Requests => 1,
        AllowanceUnit::Money => cost_micros,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_charge_each_unit() {
        let usage = Usage {
            input_tokens: 100,
            output_tokens: 50,
            cached_input_tokens: 20,
            ..Usage::default()
        };
        assert_eq!(charge_in_unit(AllowanceUnit::Tokens, &usage, 210, 999), 150);
        assert_eq!(
            charge_in_unit(AllowanceUnit::Characters, &usage, 210, 999),
            210
        );
        assert_eq!(charge_in_unit(AllowanceUnit::Requests, &usage, 210, 999), 1);
        assert_eq!(charge_in_unit(AllowanceUnit::Money, &usage, 210, 999), 999);
    }

    #[test]
    fn test_unit_serde_snake_case() {
        for unit in AllowanceUnit::ALL {
            let json = serde_json::to_string(&unit).unwrap();
            assert_eq!(json, format!("\"{}\"", unit.as_str()));
            assert_eq!(serde_json::from_str::<AllowanceUnit>(&json).unwrap(), unit);
        }
    }

    #[test]
    fn test_tokens_saturate() {
        let usage = Usage {
            input_tokens: u64::MAX,
            output_tokens: 5,
            ..Usage::default()
        };
        assert_eq!(
            charge_in_unit(AllowanceUnit::Tokens, &usage, 0, 0),
            u64::MAX
        );
    }
}
