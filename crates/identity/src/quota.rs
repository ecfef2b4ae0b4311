//! A tenant's volume quota: how much billable usage it may have in a period (a calendar month
//! in UTC, or a fixed window of whole seconds), in up to four dimensions, each optional, with a
//! soft threshold that is reported and a hard limit that refuses. Plain data with its one text
//! form, the one both stores keep in a single column and the identity bucket carries; the
//! counting is `usage`'s and the api's.

use std::fmt;
use std::str::FromStr;

/// The period a quota counts over. Both kinds are fixed windows, so every period has an end,
/// which is what a refused request is told to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    /// The calendar month, in UTC.
    Month,
    /// Consecutive windows of this many seconds, counted from the Unix epoch (86400 is the UTC
    /// day). 1 to [`MAX_ROLLING_SECONDS`].
    Rolling { seconds: u32 },
}

/// The longest rolling period: 400 days, as far back as usage is read.
pub const MAX_ROLLING_SECONDS: u32 = 400 * 86_400;

impl QuotaPeriod {
    /// The period as usage records carry it: 0 the calendar month, else the window's seconds.
    pub fn as_seconds_code(self) -> u32 {
        match self {
            QuotaPeriod::Month => 0,
            QuotaPeriod::Rolling { seconds } => seconds,
        }
    }
}

/// Hard limits per period; `None` in a dimension: not limited in it. A quota with no limit at
/// all is an explicit "no quota" (it overrides a deployment default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub period: QuotaPeriod,
    /// Billable requests (answered 200).
    pub requests: Option<u64>,
    /// Bytes of the billable requests' bodies.
    pub input_bytes: Option<u64>,
    /// Pixels of the billable requests' outputs (the admin API speaks megapixels).
    pub output_pixels: Option<u64>,
    /// CPU time of the billable requests' conversions, in microseconds (the admin API speaks
    /// seconds).
    pub cpu_us: Option<u64>,
    /// The share of a hard limit, in percent (1–100), at which the tenant is flagged.
    pub soft_percent: u8,
}

/// The soft threshold when none is given.
pub const DEFAULT_SOFT_PERCENT: u8 = 80;

/// Why a quota was refused; the message is fit for an admin client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuota(pub String);

impl Quota {
    /// A quota with no limits: nothing is refused.
    pub fn unlimited(period: QuotaPeriod) -> Quota {
        Quota {
            period,
            requests: None,
            input_bytes: None,
            output_pixels: None,
            cpu_us: None,
            soft_percent: DEFAULT_SOFT_PERCENT,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.input_bytes.is_none() && self.output_pixels.is_none() && self.cpu_us.is_none()
    }

    /// Refuses what no counter can hold: both stores keep signed 64-bit integers.
    pub fn validate(&self) -> Result<(), InvalidQuota> {
        if let QuotaPeriod::Rolling { seconds } = self.period {
            if !(1..=MAX_ROLLING_SECONDS).contains(&seconds) {
                return Err(InvalidQuota(format!("a rolling quota period is 1 to {MAX_ROLLING_SECONDS} seconds")));
            }
        }
        if !(1..=100).contains(&self.soft_percent) {
            return Err(InvalidQuota("a quota's soft_percent is 1 to 100".into()));
        }
        for (name, v) in self.dimensions() {
            if v.is_some_and(|v| v > i64::MAX as u64) {
                return Err(InvalidQuota(format!("the quota's {name} is too large")));
            }
        }
        Ok(())
    }

    /// The dimensions by their names in the text form.
    pub fn dimensions(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("requests", self.requests),
            ("input_bytes", self.input_bytes),
            ("output_pixels", self.output_pixels),
            ("cpu_us", self.cpu_us),
        ]
    }
}

/// The text form: `month` or `rolling=<seconds>`, then `;name=value` for each limit set and
/// `;soft=<percent>`. E.g. `month;requests=100000;input_bytes=53687091200;soft=80`.
impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period {
            QuotaPeriod::Month => f.write_str("month")?,
            QuotaPeriod::Rolling { seconds } => write!(f, "rolling={seconds}")?,
        }
        for (name, v) in self.dimensions() {
            if let Some(v) = v {
                write!(f, ";{name}={v}")?;
            }
        }
        write!(f, ";soft={}", self.soft_percent)
    }
}

impl FromStr for Quota {
    type Err = InvalidQuota;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidQuota(format!("not a quota: `{s}`"));
        let mut parts = s.split(';');
        let period = match parts.next().ok_or_else(bad)? {
            "month" => QuotaPeriod::Month,
            other => {
                let seconds = other.strip_prefix("rolling=").ok_or_else(bad)?;
                QuotaPeriod::Rolling { seconds: seconds.parse().map_err(|_| bad())? }
            }
        };
        let mut quota = Quota::unlimited(period);
        for part in parts {
            let (name, value) = part.split_once('=').ok_or_else(bad)?;
            if name == "soft" {
                quota.soft_percent = value.parse().map_err(|_| bad())?;
                continue;
            }
            let value: u64 = value.parse().map_err(|_| bad())?;
            let slot = match name {
                "requests" => &mut quota.requests,
                "input_bytes" => &mut quota.input_bytes,
                "output_pixels" => &mut quota.output_pixels,
                "cpu_us" => &mut quota.cpu_us,
                _ => return Err(bad()),
            };
            if slot.replace(value).is_some() {
                return Err(bad());
            }
        }
        quota.validate()?;
        Ok(quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_and_refuses_what_it_cannot_mean() {
        let q = Quota {
            period: QuotaPeriod::Rolling { seconds: 60 },
            requests: Some(3),
            input_bytes: None,
            output_pixels: Some(1_000_000),
            cpu_us: Some(5),
            soft_percent: 75,
        };
        assert_eq!(q.to_string(), "rolling=60;requests=3;output_pixels=1000000;cpu_us=5;soft=75");
        assert_eq!(q.to_string().parse::<Quota>(), Ok(q));
        let none = Quota::unlimited(QuotaPeriod::Month);
        assert_eq!(none.to_string().parse::<Quota>(), Ok(none));
        assert!(none.is_unlimited());
        for bad in [
            "",
            "week",
            "rolling=0",
            "rolling=x",
            "month;requests=-1",
            "month;requests=1;requests=2",
            "month;soft=0",
            "month;bytes=1",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad}");
        }
    }
}
