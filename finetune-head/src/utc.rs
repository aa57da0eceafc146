//! Dates of Unix timestamps for reports: UTC, proleptic Gregorian, no time-zone
//! database (Howard Hinnant's `civil_from_days`).

/// The date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `"YYYY-MM-DD HH:MM:SS UTC"`, or without the seconds `"YYYY-MM-DD HH:MM UTC"`.
pub fn utc(secs: u64, with_seconds: bool) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    if with_seconds {
        format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    } else {
        format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02} UTC")
    }
}

/// Today's date, `"YYYY-MM-DD"` (UTC).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(utc(0, true), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000, true), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400, false), "2000-02-29 00:00 UTC");
    }
}
