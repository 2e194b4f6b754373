//! `GET /api/admin/summary?hours=N`: requests, errors, latency, tokens and cost over the
//! last N hours (default 24, at most 2160), computed from the edge's hourly rollups
//! (`GET /internal/v1/rollups`, docs/sync-api.md) — never from raw usage events.
//!
//! Rollups keep sums per (member, model, hour), so the mean latency is exact; the
//! percentiles are over those buckets' mean latencies, weighted by their request counts
//! (an approximation of request percentiles that is coarser when few buckets exist).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::sync::{EdgeSync, SyncCall};

/// Rollups read per call and the most pages read for one summary.
const PAGE: u64 = 1000;
const MAX_PAGES: usize = 100;

/// One hourly rollup row as the edge returns it.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct Rollup {
    pub member_id: String,
    pub model: String,
    pub hour: u64,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: i64,
    pub latency_ms_sum: u64,
    pub ttft_ms_sum: u64,
    pub ttft_count: u64,
}

#[derive(Default)]
struct Totals {
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cost_micros: i64,
    latency_ms_sum: u64,
    ttft_ms_sum: u64,
    ttft_count: u64,
}

impl Totals {
    fn add(&mut self, r: &Rollup) {
        self.requests += r.requests;
        self.errors += r.errors;
        self.input_tokens += r.input_tokens;
        self.output_tokens += r.output_tokens;
        self.cached_tokens += r.cached_tokens;
        self.cost_micros += r.cost_micros;
        self.latency_ms_sum += r.latency_ms_sum;
        self.ttft_ms_sum += r.ttft_ms_sum;
        self.ttft_count += r.ttft_count;
    }
    fn json(&self) -> Value {
        let div = |a: u64, b: u64| {
            if b == 0 {
                None
            } else {
                Some(a as f64 / b as f64)
            }
        };
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": div(self.errors, self.requests),
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "cached": self.cached_tokens,
                "total": self.input_tokens + self.output_tokens,
            },
            "cost_micros": self.cost_micros,
            "latency_ms_mean": div(self.latency_ms_sum, self.requests),
            "ttft_ms_mean": div(self.ttft_ms_sum, self.ttft_count),
        })
    }
}

/// Request-weighted percentile of the buckets' mean latencies.
fn weighted_percentile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (mean, weight) in buckets {
        seen += weight;
        if seen >= rank {
            return Some(*mean);
        }
    }
    buckets.last().map(|b| b.0)
}

/// Aggregates the rollups whose hour is at or after `since` (pure, unit-tested).
pub fn summarize(rows: &[Rollup], since: u64) -> Value {
    let mut all = Totals::default();
    let mut by_model: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut by_hour: BTreeMap<u64, Totals> = BTreeMap::new();
    let mut members = std::collections::BTreeSet::new();
    let mut buckets = Vec::new();
    for r in rows.iter().filter(|r| r.hour >= since) {
        all.add(r);
        by_model.entry(&r.model).or_default().add(r);
        by_hour.entry(r.hour).or_default().add(r);
        members.insert(r.member_id.as_str());
        if r.requests > 0 {
            buckets.push((r.latency_ms_sum as f64 / r.requests as f64, r.requests));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut v = all.json();
    if let Some(o) = v.as_object_mut() {
        o.insert("active_members".into(), json!(members.len()));
        o.insert(
            "latency_ms_percentiles".into(),
            json!({
                "p50": weighted_percentile(&buckets, 0.50),
                "p95": weighted_percentile(&buckets, 0.95),
                "p99": weighted_percentile(&buckets, 0.99),
                "basis": "request-weighted means of hourly rollup buckets",
            }),
        );
        o.insert(
            "by_model".into(),
            by_model
                .iter()
                .map(|(m, t)| (m.to_string(), t.json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );
        o.insert(
            "by_hour".into(),
            by_hour
                .iter()
                .map(|(h, t)| {
                    let mut j = t.json();
                    if let Some(o) = j.as_object_mut() {
                        o.insert("hour".into(), json!(h));
                    }
                    j
                })
                .collect::<Vec<_>>()
                .into(),
        );
    }
    v
}

/// A timezone for statistics: `UTC` or a fixed offset `+HH:MM` / `-HH:MM` (at most
/// 14 h); answers the offset in seconds east of UTC.
pub fn parse_utc_offset(tz: &str) -> Option<i64> {
    let tz = tz.trim();
    if tz.eq_ignore_ascii_case("utc") || tz == "Z" {
        return Some(0);
    }
    let (sign, rest) = match tz.strip_prefix('+') {
        Some(r) => (1, r),
        None => (-1, tz.strip_prefix('-')?),
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
    (h <= 14 && m < 60 && h * 60 + m <= 14 * 60).then_some(sign * (h * 3600 + m * 60))
}

/// Requests, tokens and cost per local calendar day (`offset_secs` east of UTC) of the
/// rollups at or after `since`. An hourly bucket counts on the day its hour starts in.
pub fn by_day(rows: &[Rollup], since: u64, offset_secs: i64) -> Value {
    let mut days: BTreeMap<i64, Totals> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.hour >= since) {
        let local = i64::try_from(r.hour)
            .unwrap_or(i64::MAX)
            .saturating_add(offset_secs);
        days.entry(local.div_euclid(86_400)).or_default().add(r);
    }
    days.iter()
        .map(|(d, t)| {
            let (y, m, dd) = tollbooth_core::billing::civil_from_days(*d);
            let mut j = t.json();
            if let Some(o) = j.as_object_mut() {
                o.insert("day".into(), json!(format!("{y:04}-{m:02}-{dd:02}")));
            }
            j
        })
        .collect::<Vec<_>>()
        .into()
}

/// Reads every rollup from the edge (cursor pages) and summarises the window; per-day
/// buckets are days of the statistics timezone (`offset_secs` east of UTC).
pub async fn summary<E: EdgeSync>(
    sync: &E,
    query: &std::collections::HashMap<String, String>,
    now: u64,
    offset_secs: i64,
) -> ApiResult<Value> {
    let hours = match query.get("hours") {
        None => 24,
        Some(h) => h
            .parse::<u64>()
            .ok()
            .filter(|h| (1..=2160).contains(h))
            .ok_or_else(|| ApiError::invalid("hours", "hours must be an integer from 1 to 2160"))?,
    };
    let since = (now - now % 3600).saturating_sub((hours - 1) * 3600);
    let mut rows: Vec<Rollup> = Vec::new();
    let mut after = String::from("0");
    let mut complete = false;
    for _ in 0..MAX_PAGES {
        let page = sync
            .send(SyncCall {
                method: "GET",
                path: format!("/internal/v1/rollups?after={after}&limit={PAGE}"),
                body: None,
                idempotency_key: String::new(),
            })
            .await
            .map_err(|e| ApiError::new(502, "api_error", "edge_unavailable", e.to_string()))?;
        let events = page.get("events").and_then(Value::as_array);
        let n = events.map_or(0, Vec::len);
        rows.extend(
            events
                .into_iter()
                .flatten()
                .filter_map(|e| serde_json::from_value::<Rollup>(e.clone()).ok()),
        );
        let next = page
            .get("next")
            .and_then(Value::as_str)
            .unwrap_or(&after)
            .to_owned();
        if (n as u64) < PAGE || next == after {
            complete = true;
            break;
        }
        after = next;
    }
    let mut v = summarize(&rows, since);
    if let Some(o) = v.as_object_mut() {
        o.insert("by_day".into(), by_day(&rows, since, offset_secs));
        o.insert("utc_offset_secs".into(), json!(offset_secs));
        o.insert(
            "window".into(),
            json!({"hours": hours, "since": since, "until": now}),
        );
        o.insert("complete".into(), json!(complete));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(member: &str, model: &str, hour: u64, requests: u64, latency_sum: u64) -> Rollup {
        Rollup {
            member_id: member.into(),
            model: model.into(),
            hour,
            requests,
            errors: 1,
            input_tokens: 10 * requests,
            output_tokens: 5 * requests,
            latency_ms_sum: latency_sum,
            cost_micros: 7,
            ..Rollup::default()
        }
    }

    #[test]
    fn test_summarize_totals_means_and_percentiles() {
        let rows = [
            row("m1", "a", 7200, 90, 90 * 100),
            row("m2", "a", 7200, 9, 9 * 300),
            row("m2", "b", 10800, 1, 2000),
            row("m3", "b", 0, 1000, 1000), // before the window
        ];
        let v = summarize(&rows, 3600);
        assert_eq!(v["requests"], 100);
        assert_eq!(v["errors"], 3);
        assert_eq!(v["tokens"]["total"], 1500);
        assert_eq!(v["cost_micros"], 21);
        assert_eq!(v["active_members"], 2);
        assert_eq!(v["latency_ms_mean"], (9000.0 + 2700.0 + 2000.0) / 100.0);
        assert_eq!(v["latency_ms_percentiles"]["p50"], 100.0);
        assert_eq!(v["latency_ms_percentiles"]["p95"], 300.0);
        assert_eq!(v["latency_ms_percentiles"]["p99"], 300.0);
        assert_eq!(v["by_model"]["a"]["requests"], 99);
        assert_eq!(v["by_hour"][1]["hour"], 10800);
    }

    #[test]
    fn test_days_follow_the_statistics_timezone() {
        // 2026-01-01T14:00Z and 20:00Z: one UTC day, two days at +08:00.
        let h1 = 1_767_297_600 - 6 * 3600;
        let rows = [
            row("m1", "a", h1, 2, 10),
            row("m1", "a", h1 + 6 * 3600, 3, 10),
        ];
        let utc = by_day(&rows, 0, 0);
        assert_eq!(utc.as_array().unwrap().len(), 1, "{utc}");
        assert_eq!(utc[0]["day"], "2026-01-01");
        assert_eq!(utc[0]["requests"], 5);
        let east = by_day(&rows, 0, parse_utc_offset("+08:00").unwrap());
        assert_eq!(east.as_array().unwrap().len(), 2, "{east}");
        assert_eq!(
            (east[0]["day"].clone(), east[0]["requests"].clone()),
            (json!("2026-01-01"), json!(2))
        );
        assert_eq!(
            (east[1]["day"].clone(), east[1]["requests"].clone()),
            (json!("2026-01-02"), json!(3))
        );
        let west = by_day(&rows, 0, parse_utc_offset("-05:00").unwrap());
        assert_eq!(west.as_array().unwrap().len(), 1, "{west}");
        assert_eq!(parse_utc_offset("UTC"), Some(0));
        assert_eq!(parse_utc_offset("+05:30"), Some(19_800));
        for bad in ["+15:00", "8", "+8:00", "Asia/Shanghai", "+08:60"] {
            assert_eq!(parse_utc_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_empty_window() {
        let v = summarize(&[], 0);
        assert_eq!(v["requests"], 0);
        assert!(v["error_rate"].is_null());
        assert!(v["latency_ms_percentiles"]["p50"].is_null());
    }
}
