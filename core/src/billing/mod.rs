//! Billing arithmetic: prices, what a request costs, what it charges against a plan
//! allowance, how much to reserve before it runs, and plan periods.
//!
//! All amounts are integers: money in micro-units of the currency (1 USD = 1_000_000),
//! quota in tokens, characters or requests. Nothing here rounds in the member's favour at
//! the operator's expense: costs round up (by at most one micro-unit per request).

mod estimate;
mod period;
mod price;
mod settle;
mod unit;

pub use estimate::{
    estimate_body, estimate_prompt_tokens, estimate_text_tokens, BodyEstimate, OutputLimits,
    ReservationEstimate, AUDIO_PART_TOKENS, CHARS_PER_TOKEN_ESTIMATE, DEFAULT_OUTPUT_TOKENS,
    FILE_PART_TOKENS, IMAGE_PART_TOKENS, PER_MESSAGE_OVERHEAD_TOKENS, PER_REQUEST_OVERHEAD_TOKENS,
};
pub use period::{civil_from_days, days_from_civil, days_in_month, is_leap_year, PlanPeriod};
pub use price::{cost_micros, Price, MICROS_PER_UNIT, TOKENS_PER_PRICE_UNIT};
pub use settle::{bill, Bill, Ending, Observed};
pub use unit::{charge_in_unit, AllowanceUnit};
