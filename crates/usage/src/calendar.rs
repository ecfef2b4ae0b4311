//! UTC calendar dates (proleptic Gregorian) without a date library: the `YYYY-MM-DD` names of the
//! archive's `date=` partitions, strictly parsed back, and the aggregator's today to compare with
//! them. Only four-digit years are partition names, so that names sort as dates do. It must not
//! know about files or records.

pub(crate) const DAY_MS: i64 = 86_400_000;
/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: four-digit years keep the `date=` partition
/// names in lexicographic = chronological order.
pub(crate) const MIN_MS: i64 = -62_167_219_200_000;
pub(crate) const END_MS: i64 = 253_402_300_800_000;

/// `YYYY-MM-DD` of the UTC day holding `ms`, or None outside the years 0000 to 9999.
pub(crate) fn date_of(ms: i64) -> Option<String> {
    (MIN_MS..END_MS).contains(&ms).then(|| utc_date(ms))
}

/// `YYYY-MM-DD` of the UTC day holding `ms`, any year (past 9999 with more digits).
pub(crate) fn utc_date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The UTC calendar month holding `ms`: its first and its next month's first millisecond.
pub(crate) fn month_bounds(ms: i64) -> (i64, i64) {
    let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
    let (next_y, next_m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(y, m, 1) * DAY_MS, days_from_civil(next_y, next_m, 1) * DAY_MS)
}

/// Days since 1970-01-01 of a strict `YYYY-MM-DD` calendar date.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let days = days_from_civil(y, m, d);
    // Round-tripping rejects 2023-02-30 and month 13.
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-03-09T23:59:59.000Z and the next UTC midnight.
    const EVENING: i64 = 1_710_028_799_000;
    const MIDNIGHT: i64 = 1_710_028_800_000;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(utc_date(1_795_628_767_250), "2026-11-25");
    }

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(date_of(0).as_deref(), Some("1970-01-01"));
        assert_eq!(date_of(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(date_of(EVENING).as_deref(), Some("2024-03-09"));
        assert_eq!(date_of(MIDNIGHT).as_deref(), Some("2024-03-10"));
        assert_eq!(date_of(1_709_164_800_000).as_deref(), Some("2024-02-29"));
        assert_eq!(date_of(MIN_MS).as_deref(), Some("0000-01-01"));
        assert_eq!(date_of(END_MS - 1).as_deref(), Some("9999-12-31"));
        assert_eq!(date_of(END_MS), None);
        assert_eq!(date_of(MIN_MS - 1), None);
        assert_eq!(parse_date("2024-03-10"), Some(MIDNIGHT / DAY_MS));
        assert_eq!(parse_date("2024-02-29").map(|d| d * DAY_MS), Some(1_709_164_800_000));
        for bad in ["2023-02-29", "2024-13-01", "2024-00-10", "2024-3-10", "2024-03-1x", "+024-03-10", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
