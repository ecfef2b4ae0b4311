//! Quota admission: a tenant with a quota is admitted while every dimension's usage in the
//! current period is below its hard limit, decided from this node's [`usage::QuotaBoard`] (the
//! last totals the aggregator published, plus what this node has answered since): in memory, no
//! network call. The request that crosses a limit is served (its size is not known before); the
//! next is refused with 429 `quota-exceeded` until the period ends. Also the quota's state as
//! the usage answers report it.

use std::time::Duration;

use identity::{Quota, QuotaPeriod};
use usage::{QuotaBoard, QuotaUsage, Used};

use crate::problem::ApiError;

/// A quota dimension's name in answers, metrics and problem details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    InputBytes,
    OutputMegapixels,
    CpuSeconds,
}

impl Dimension {
    pub const ALL: [Dimension; 4] =
        [Dimension::Requests, Dimension::InputBytes, Dimension::OutputMegapixels, Dimension::CpuSeconds];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::InputBytes => "input_bytes",
            Dimension::OutputMegapixels => "output_megapixels",
            Dimension::CpuSeconds => "cpu_seconds",
        }
    }

    /// The hard limit, in the board's units (pixels, microseconds).
    fn limit(self, quota: &Quota) -> Option<u64> {
        match self {
            Dimension::Requests => quota.requests,
            Dimension::InputBytes => quota.input_bytes,
            Dimension::OutputMegapixels => quota.output_pixels,
            Dimension::CpuSeconds => quota.cpu_us,
        }
    }

    fn used(self, used: &Used) -> u64 {
        match self {
            Dimension::Requests => used.requests,
            Dimension::InputBytes => used.input_bytes,
            Dimension::OutputMegapixels => used.output_pixels,
            Dimension::CpuSeconds => used.cpu_us,
        }
    }

    /// A board amount in the unit answers speak (megapixels, seconds).
    pub fn shown(self, amount: u64) -> serde_json::Value {
        match self {
            Dimension::Requests | Dimension::InputBytes => amount.into(),
            Dimension::OutputMegapixels => (amount as f64 / 1e6).into(),
            Dimension::CpuSeconds => (amount as f64 / 1e6).into(),
        }
    }
}

/// The period's code on the board and in usage totals: 0 the calendar month, else seconds.
pub fn period_code(quota: &Quota) -> u32 {
    quota.period.as_seconds_code()
}

/// An admitted request's place on the board: out of flight when dropped, and counted as used
/// when finished with its billable amounts.
pub struct QuotaHold<'a> {
    board: &'a QuotaBoard,
    tenant: u64,
    done: bool,
}

impl QuotaHold<'_> {
    /// The request is answered: `billed` is its record's time and billable amounts (None when
    /// it was not billed).
    pub fn finish(mut self, billed: Option<(i64, Used)>) {
        self.done = true;
        self.board.finish(self.tenant, billed);
    }
}

impl Drop for QuotaHold<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.board.finish(self.tenant, None);
        }
    }
}

/// Admits a request of `tenant` under `quota` at `now_ms`, or refuses it with the first
/// dimension whose limit is used up and the wait until the period ends.
pub fn admit<'a>(board: &'a QuotaBoard, tenant: u64, quota: &Quota, now_ms: i64) -> Result<QuotaHold<'a>, ApiError> {
    board.admit(tenant, period_code(quota), now_ms, |usage: &QuotaUsage| {
        match Dimension::ALL
            .into_iter()
            .find_map(|d| d.limit(quota).filter(|&limit| d.used(&usage.used) >= limit).map(|l| (d, l)))
        {
            None => Ok(()),
            Some((dimension, limit)) => Err(ApiError::QuotaExceeded {
                dimension: dimension.as_str(),
                limit: dimension.shown(limit).to_string(),
                period: period_name(quota.period),
                period_end_ms: usage.end_ms,
                retry_after: Duration::from_millis(u64::try_from(usage.end_ms - now_ms).unwrap_or(0)),
            }),
        }
    })?;
    Ok(QuotaHold { board, tenant, done: false })
}

/// `month`, or `86400 s`.
pub fn period_name(period: QuotaPeriod) -> String {
    match period {
        QuotaPeriod::Month => "calendar month (UTC)".into(),
        QuotaPeriod::Rolling { seconds } => format!("{seconds} s"),
    }
}

/// The quota as usage answers report it: the period, and per dimension with a limit the
/// limit, the amount used, what remains and whether the soft threshold is reached; plus
/// `soft_reached` and `exceeded` over all of them.
pub fn report(quota: &Quota, usage: &QuotaUsage) -> serde_json::Value {
    let mut dimensions = serde_json::Map::new();
    let (mut soft_reached, mut exceeded) = (false, false);
    for d in Dimension::ALL {
        let Some(limit) = d.limit(quota) else { continue };
        let used = d.used(&usage.used);
        let soft = (limit as u128 * u128::from(quota.soft_percent)).div_ceil(100) as u64;
        soft_reached |= used >= soft;
        exceeded |= used >= limit;
        dimensions.insert(
            d.as_str().into(),
            serde_json::json!({
                "limit": d.shown(limit),
                "used": d.shown(used),
                "remaining": d.shown(limit.saturating_sub(used)),
                "soft_limit": d.shown(soft),
            }),
        );
    }
    serde_json::json!({
        "period": match quota.period { QuotaPeriod::Month => "month", QuotaPeriod::Rolling { .. } => "rolling" },
        "period_seconds": match quota.period { QuotaPeriod::Month => None, QuotaPeriod::Rolling { seconds } => Some(seconds) },
        "period_start": crate::time::rfc3339_ms(usage.start_ms),
        "period_end": crate::time::rfc3339_ms(usage.end_ms),
        "soft_percent": quota.soft_percent,
        "soft_reached": soft_reached,
        "exceeded": exceeded,
        "dimensions": dimensions,
    })
}

/// The tenant's quota report ([`report`]) from this node's board, or null without a quota or
/// a board.
pub fn status(app: &crate::App, tenant: identity::TenantId, quota: Option<&Quota>) -> serde_json::Value {
    match (quota, app.quota_board()) {
        (Some(quota), Some(board)) => {
            let usage = board.usage(tenant.get(), period_code(quota), crate::time::now_ms());
            report(quota, &usage)
        }
        _ => serde_json::Value::Null,
    }
}

/// A quota as the admin API writes it: `{"period": "month" | "rolling", "period_seconds": N,
/// "requests": N, "input_bytes": N, "output_megapixels": X, "cpu_seconds": X, "soft_percent": P}`,
/// each limit optional (absent or null: not limited), `period_seconds` only (and required) for
/// `rolling`, `soft_percent` 80 unless given.
pub fn from_json(value: &serde_json::Value) -> Result<Quota, ApiError> {
    let bad = |what: &str| ApiError::BadRequest(format!("`limits.quota`: {what}"));
    let serde_json::Value::Object(map) = value else {
        return Err(bad("must be a JSON object or null"));
    };
    const FIELDS: [&str; 7] =
        ["period", "period_seconds", "requests", "input_bytes", "output_megapixels", "cpu_seconds", "soft_percent"];
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(&format!("unknown field `{unknown}`; the fields are {}", FIELDS.join(", "))));
    }
    let seconds = map.get("period_seconds").filter(|v| !v.is_null());
    let period = match (map.get("period").and_then(|v| v.as_str()), seconds) {
        (Some("month"), None) => QuotaPeriod::Month,
        (Some("month"), Some(_)) => return Err(bad("`period_seconds` is only for a rolling period")),
        (Some("rolling"), Some(v)) => QuotaPeriod::Rolling {
            seconds: v
                .as_u64()
                .and_then(|s| u32::try_from(s).ok())
                .filter(|s| (1..=identity::MAX_ROLLING_SECONDS).contains(s))
                .ok_or_else(|| bad(&format!("`period_seconds` must be 1 to {}", identity::MAX_ROLLING_SECONDS)))?,
        },
        (Some("rolling"), None) => return Err(bad("a rolling period needs `period_seconds`")),
        _ => return Err(bad("`period` must be \"month\" or \"rolling\"")),
    };
    let mut quota = Quota::unlimited(period);
    let whole = |name: &str| -> Result<Option<u64>, ApiError> {
        match map.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= i64::MAX as u64)
                .map(Some)
                .ok_or_else(|| bad(&format!("`{name}` must be a whole number ≥ 0 or null"))),
        }
    };
    // Megapixels and seconds may be fractional; the board counts pixels and microseconds.
    let scaled = |name: &str| -> Result<Option<u64>, ApiError> {
        match map.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0 && *x * 1e6 < 9.2e18)
                .map(|x| Some((x * 1e6).round() as u64))
                .ok_or_else(|| bad(&format!("`{name}` must be a number ≥ 0 or null"))),
        }
    };
    quota.requests = whole("requests")?;
    quota.input_bytes = whole("input_bytes")?;
    quota.output_pixels = scaled("output_megapixels")?;
    quota.cpu_us = scaled("cpu_seconds")?;
    if let Some(v) = map.get("soft_percent").filter(|v| !v.is_null()) {
        quota.soft_percent = v
            .as_u64()
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| bad("`soft_percent` must be a whole number from 1 to 100"))?;
    }
    quota.validate().map_err(|e| bad(&e.to_string()))?;
    Ok(quota)
}

/// A quota as the admin API shows it (the form [`from_json`] reads).
pub fn to_json(quota: &Quota) -> serde_json::Value {
    let (period, seconds) = match quota.period {
        QuotaPeriod::Month => ("month", None),
        QuotaPeriod::Rolling { seconds } => ("rolling", Some(seconds)),
    };
    serde_json::json!({
        "period": period,
        "period_seconds": seconds,
        "requests": quota.requests,
        "input_bytes": quota.input_bytes,
        "output_megapixels": quota.output_pixels.map(|p| p as f64 / 1e6),
        "cpu_seconds": quota.cpu_us.map(|us| us as f64 / 1e6),
        "soft_percent": quota.soft_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_admin_form_reads_back_what_it_shows_and_refuses_nonsense() {
        let q = from_json(&json!({"period": "rolling", "period_seconds": 60, "requests": 3, "output_megapixels": 0.5}))
            .expect("valid");
        assert_eq!((q.requests, q.output_pixels, q.input_bytes, q.soft_percent), (Some(3), Some(500_000), None, 80));
        assert_eq!(from_json(&to_json(&q)).expect("round trip"), q);
        for bad in [
            json!({"period": "week"}),
            json!({"period": "rolling"}),
            json!({"period": "month", "period_seconds": 5}),
            json!({"period": "month", "requests": -1}),
            json!({"period": "month", "requests": 1.5}),
            json!({"period": "month", "soft_percent": 0}),
            json!({"period": "month", "cpu_seconds": "1"}),
            json!({"period": "month", "bytes": 1}),
            json!("month"),
        ] {
            assert!(from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admission_refuses_at_the_limit_until_the_window_ends() {
        let board = QuotaBoard::new("n");
        let quota = from_json(&json!({"period": "rolling", "period_seconds": 10, "requests": 2})).expect("valid");
        let now = 1_000_000_005_000;
        for _ in 0..2 {
            admit(&board, 1, &quota, now).expect("within").finish(Some((now, Used { requests: 1, ..Used::default() })));
        }
        match admit(&board, 1, &quota, now) {
            Err(ApiError::QuotaExceeded { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(5)),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        let report = report(&quota, &board.usage(1, 10, now));
        assert_eq!(report["dimensions"]["requests"]["remaining"], 0);
        assert_eq!((report["exceeded"].as_bool(), report["soft_reached"].as_bool()), (Some(true), Some(true)));
        assert!(admit(&board, 1, &quota, now + 5_000).is_ok(), "the next window opens");
    }
}
