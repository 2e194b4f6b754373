//! Billing through the public API: reserve before, settle after.

use tollbooth_core::billing::{
    charge_in_unit, cost_micros, estimate_prompt_tokens, AllowanceUnit, OutputLimits, PlanPeriod,
    Price, ReservationEstimate, DEFAULT_OUTPUT_TOKENS,
};
use tollbooth_core::usage::Usage;

fn gpt_like_price() -> Price {
    // $0.15 / $0.60 per 1M tokens, cached input at half price.
    Price {
        input_per_mtok: 150_000,
        output_per_mtok: 600_000,
        cached_input_per_mtok: Some(75_000),
        ..Price::default()
    }
}

#[test]
fn test_price_from_catalogue_json() {
    let price: Price = serde_json::from_value(serde_json::json!({
        "input_per_mtok": 150_000,
        "output_per_mtok": 600_000,
        "cached_input_per_mtok": 75_000
    }))
    .unwrap();
    assert_eq!(price, gpt_like_price());
}

#[test]
fn test_reserve_then_settle_refunds_the_difference() {
    let price = gpt_like_price();
    let limits = OutputLimits {
        max_output_tokens: Some(16_384),
        default_output_tokens: 2_048,
    };
    let prompt =
        estimate_prompt_tokens(["You are a helpful assistant.", "Write a haiku about tolls."]);
    let estimate = ReservationEstimate::new(prompt, None, &limits);
    assert_eq!(estimate.output_tokens, 2_048);

    let actual = Usage {
        input_tokens: 27,
        output_tokens: 19,
        ..Usage::default()
    };
    for unit in AllowanceUnit::ALL {
        let reserved = estimate.in_unit(unit, &price);
        let cost = cost_micros(&price, &actual);
        let charged = charge_in_unit(unit, &actual, 70, cost);
        assert!(charged <= reserved, "{unit:?}: {charged} > {reserved}");
    }
}

#[test]
fn test_missing_max_tokens_never_reserves_the_whole_budget() {
    let price = gpt_like_price();
    let estimate = ReservationEstimate::new(1_000, None, &OutputLimits::default());
    let budget_micros = 5_000_000; // $5
    let reserved = estimate.in_unit(AllowanceUnit::Money, &price);
    assert!(reserved < budget_micros / 100, "reserved {reserved}");
    assert_eq!(estimate.output_tokens, DEFAULT_OUTPUT_TOKENS);
}

#[test]
fn test_money_is_never_under_charged() {
    // Many tiny requests: each rounds up by < 1 micro, never down.
    let price = gpt_like_price();
    let mut total_charged = 0u64;
    let mut exact_numerator = 0u128;
    for i in 1..=1000u64 {
        let usage = Usage {
            input_tokens: i,
            output_tokens: i % 7,
            cached_input_tokens: i / 3,
            ..Usage::default()
        };
        let charged = cost_micros(&price, &usage);
        let numerator = u128::from(i - i / 3) * 150_000
            + u128::from(i / 3) * 75_000
            + u128::from(i % 7) * 600_000;
        assert!(u128::from(charged) * 1_000_000 >= numerator);
        assert!(u128::from(charged) * 1_000_000 < numerator + 1_000_000);
        total_charged += charged;
        exact_numerator += numerator;
    }
    assert!(u128::from(total_charged) * 1_000_000 >= exact_numerator);
}

#[test]
fn test_allowance_period_resets_monthly_from_subscription_day() {
    // Subscribed 2024-01-31 10:00:00 UTC.
    let anchor = 1_706_695_200;
    // 2024-02-29 09:59:59 is still in the first period; 10:00:00 starts the second.
    let (start, end) = PlanPeriod::Month.bounds(anchor, 1_709_200_799);
    assert_eq!((start, end), (anchor, 1_709_200_800));
    assert_eq!(
        PlanPeriod::Month.bounds(anchor, 1_709_200_800).0,
        1_709_200_800
    );
}
