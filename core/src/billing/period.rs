//! Plan periods: when an allowance resets. Calendar arithmetic in UTC, without a clock.

use serde::{Deserialize, Serialize};

const SECS_PER_DAY: i64 = 86_400;

/// Latest timestamp handled: 9999-12-31T23:59:59Z. Later inputs are clamped to it.
const MAX_UNIX: i64 = 253_402_300_799;

/// How often a plan allowance resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanPeriod {
    Day,
    Week,
    /// Calendar months from the anchor's day of month and time of day; a day that does not
    /// exist in a month clamps to its last day (anchor Jan 31 -> Feb 28/29 -> Mar 31).
    Month,
    /// Calendar years from the anchor (Feb 29 -> Feb 28 in common years).
    Year,
    /// Never resets: one period from the anchor on.
    None,
}

impl PlanPeriod {
    /// The period containing `now_unix`: `(start, end)` in unix seconds, start inclusive,
    /// end exclusive. Periods repeat from `anchor_unix` (the subscription start) in both
    /// directions, so a `now` before the anchor gets the period before it (clamped at 0).
    ///
    /// `Day` and `Week` are fixed 86,400 s / 604,800 s steps (UTC has no DST). `Month` and
    /// `Year` are calendar steps, each computed from the anchor rather than from the
    /// previous period, so a clamp in February does not drift later months. `None` returns
    /// `(anchor, u64::MAX)`. Inputs after year 9999 are clamped.
    pub fn bounds(self, anchor_unix: u64, now_unix: u64) -> (u64, u64) {
        let anchor = clamp_ts(anchor_unix);
        let now = clamp_ts(now_unix);
        let (start, end) = match self {
            PlanPeriod::Day => fixed_bounds(anchor, now, SECS_PER_DAY),
            PlanPeriod::Week => fixed_bounds(anchor, now, 7 * SECS_PER_DAY),
            PlanPeriod::Month => calendar_bounds(anchor, now, 1),
            PlanPeriod::Year => calendar_bounds(anchor, now, 12),
            PlanPeriod::None => return (to_u64(anchor), u64::MAX),
        };
        (to_u64(start), to_u64(end))
    }
}

fn clamp_ts(ts: u64) -> i64 {
    i64::try_from(ts).unwrap_or(i64::MAX).min(MAX_UNIX)
}

fn to_u64(ts: i64) -> u64 {
    u64::try_from(ts).unwrap_or(0)
}

fn fixed_bounds(anchor: i64, now: i64, len: i64) -> (i64, i64) {
    let k = (now - anchor).div_euclid(len);
    let start = anchor + k * len;
    (start, start + len)
}

fn calendar_bounds(anchor: i64, now: i64, step_months: i64) -> (i64, i64) {
    let anchor_days = anchor.div_euclid(SECS_PER_DAY);
    let time_of_day = anchor.rem_euclid(SECS_PER_DAY);
    let (ay, am, ad) = civil_from_days(anchor_days);
    let (ny, nm, _) = civil_from_days(now.div_euclid(SECS_PER_DAY));
    let anchor_month = ay * 12 + i64::from(am) - 1;
    let month_diff = ny * 12 + i64::from(nm) - 1 - anchor_month;

    let start_of = |k: i64| -> i64 {
        let month_index = anchor_month + k * step_months;
        let year = month_index.div_euclid(12);
        // rem_euclid(12) is in 0..12, so the month is 1..=12.
        let month = u32::try_from(month_index.rem_euclid(12) + 1).unwrap_or(1);
        let day = ad.min(days_in_month(year, month));
        days_from_civil(year, month, day) * SECS_PER_DAY + time_of_day
    };

    let mut k = month_diff.div_euclid(step_months);
    if start_of(k) > now {
        k -= 1;
    }
    (start_of(k), start_of(k + 1))
}

/// Whether `year` (proleptic Gregorian) is a leap year.
pub fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1..=12) of `year`; 0 for an invalid month.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day`.
///
/// Counts in 400-year eras of 146,097 days, with years starting on March 1 so the leap
/// day is the last day of the (shifted) year.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let month = i64::from(month);
    let day = i64::from(day);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400; // 0..=399
    let shifted_month = (month + 9) % 12; // March = 0 .. February = 11
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 = days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097; // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are small positive numbers by construction.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(y: i64, m: u32, d: u32, hh: i64, mm: i64, ss: i64) -> u64 {
        (days_from_civil(y, m, d) * SECS_PER_DAY + hh * 3600 + mm * 60 + ss) as u64
    }

    fn date(y: i64, m: u32, d: u32) -> u64 {
        ts(y, m, d, 0, 0, 0)
    }

    #[test]
    fn test_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(date(2024, 2, 29), 1_709_164_800);
        assert_eq!(date(2038, 1, 19), 2_147_472_000);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn test_civil_round_trip_every_day_across_centuries() {
        let mut expected = (1899, 12, 31);
        for days in days_from_civil(1900, 1, 1)..days_from_civil(2401, 1, 1) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            // Consecutive days are consecutive dates.
            let (py, pm, pd) = expected;
            let next = if pd < days_in_month(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), next);
            expected = next;
        }
    }

    #[test]
    fn test_leap_years() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2024, 13), 0);
    }

    #[test]
    fn test_day_and_week() {
        let anchor = ts(2024, 5, 10, 13, 30, 0);
        assert_eq!(
            PlanPeriod::Day.bounds(anchor, ts(2024, 5, 12, 9, 0, 0)),
            (ts(2024, 5, 11, 13, 30, 0), ts(2024, 5, 12, 13, 30, 0))
        );
        // Edge: exactly at a boundary starts the new period.
        assert_eq!(
            PlanPeriod::Day.bounds(anchor, ts(2024, 5, 12, 13, 30, 0)),
            (ts(2024, 5, 12, 13, 30, 0), ts(2024, 5, 13, 13, 30, 0))
        );
        assert_eq!(
            PlanPeriod::Day
                .bounds(anchor, ts(2024, 5, 12, 13, 29, 59))
                .1,
            ts(2024, 5, 12, 13, 30, 0)
        );
        assert_eq!(
            PlanPeriod::Week.bounds(anchor, ts(2024, 5, 20, 0, 0, 0)),
            (ts(2024, 5, 17, 13, 30, 0), ts(2024, 5, 24, 13, 30, 0))
        );
        assert_eq!(
            PlanPeriod::Day.bounds(anchor, anchor),
            (anchor, anchor + 86_400)
        );
    }

    #[test]
    fn test_month_end_anchor_clamps_without_drift() {
        let anchor = ts(2023, 1, 31, 8, 0, 0);
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, ts(2023, 2, 15, 0, 0, 0)),
            (ts(2023, 1, 31, 8, 0, 0), ts(2023, 2, 28, 8, 0, 0))
        );
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, ts(2023, 3, 1, 0, 0, 0)),
            (ts(2023, 2, 28, 8, 0, 0), ts(2023, 3, 31, 8, 0, 0))
        );
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, ts(2023, 4, 30, 8, 0, 0)),
            (ts(2023, 4, 30, 8, 0, 0), ts(2023, 5, 31, 8, 0, 0))
        );
        // Leap year February.
        assert_eq!(
            PlanPeriod::Month.bounds(ts(2024, 1, 31, 8, 0, 0), ts(2024, 2, 29, 12, 0, 0)),
            (ts(2024, 2, 29, 8, 0, 0), ts(2024, 3, 31, 8, 0, 0))
        );
        // Same day of month, before the anchor's time of day: still previous period.
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, ts(2023, 3, 31, 7, 59, 59)),
            (ts(2023, 2, 28, 8, 0, 0), ts(2023, 3, 31, 8, 0, 0))
        );
    }

    #[test]
    fn test_month_across_year_end() {
        let anchor = date(2023, 11, 15);
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, date(2024, 1, 10)),
            (date(2023, 12, 15), date(2024, 1, 15))
        );
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, date(2024, 1, 15)),
            (date(2024, 1, 15), date(2024, 2, 15))
        );
    }

    #[test]
    fn test_year_with_leap_day_anchor() {
        let anchor = date(2024, 2, 29);
        assert_eq!(
            PlanPeriod::Year.bounds(anchor, date(2025, 1, 1)),
            (date(2024, 2, 29), date(2025, 2, 28))
        );
        assert_eq!(
            PlanPeriod::Year.bounds(anchor, date(2025, 3, 1)),
            (date(2025, 2, 28), date(2026, 2, 28))
        );
        assert_eq!(
            PlanPeriod::Year.bounds(anchor, date(2028, 3, 1)),
            (date(2028, 2, 29), date(2029, 2, 28))
        );
    }

    #[test]
    fn test_now_before_anchor_and_none() {
        let anchor = date(2024, 3, 10);
        assert_eq!(
            PlanPeriod::Month.bounds(anchor, date(2024, 2, 20)),
            (date(2024, 2, 10), date(2024, 3, 10))
        );
        assert_eq!(
            PlanPeriod::Day.bounds(anchor, anchor - 1),
            (anchor - 86_400, anchor)
        );
        assert_eq!(
            PlanPeriod::None.bounds(anchor, date(2030, 1, 1)),
            (anchor, u64::MAX)
        );
        assert_eq!(PlanPeriod::Day.bounds(0, 10), (0, 86_400));
    }

    #[test]
    fn test_every_now_lies_in_its_period() {
        let anchors = [
            date(2023, 1, 31),
            ts(2024, 2, 29, 23, 59, 59),
            date(2024, 8, 30),
        ];
        for anchor in anchors {
            for period in [
                PlanPeriod::Day,
                PlanPeriod::Week,
                PlanPeriod::Month,
                PlanPeriod::Year,
            ] {
                let mut now = anchor;
                while now < anchor + 800 * 86_400 {
                    let (start, end) = period.bounds(anchor, now);
                    assert!(start <= now && now < end, "{period:?} {anchor} {now}");
                    // The next period starts where this one ends.
                    assert_eq!(period.bounds(anchor, end).0, end);
                    now += 86_400 / 3 + 7;
                }
            }
        }
    }

    #[test]
    fn test_huge_inputs_clamped() {
        let (start, end) = PlanPeriod::Month.bounds(0, u64::MAX);
        assert!(start < end);
        let (start, end) = PlanPeriod::Year.bounds(u64::MAX, u64::MAX);
        assert!(start <= end);
    }

    #[test]
    fn test_period_serde() {
        assert_eq!(
            serde_json::to_string(&PlanPeriod::None).unwrap(),
            "\"none\""
        );
        assert_eq!(
            serde_json::from_str::<PlanPeriod>("\"month\"").unwrap(),
            PlanPeriod::Month
        );
    }
}
