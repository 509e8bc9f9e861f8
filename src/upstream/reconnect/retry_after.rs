//! `Retry-After` (RFC 9110 §10.2.3) of a 429 or 503: delay-seconds, or an
//! HTTP-date in any of its three forms, as the time left to wait. The owner
//! hands the result to [`SseStream::on_failure`](super::SseStream::on_failure),
//! which caps it and takes it as a floor under the next delay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an
/// HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms). A
/// date in the past gives zero; an absurd number of seconds saturates.
/// The caller caps the result (`on_failure` caps it at `cap`).
pub fn parse_retry_after(value: &str, now_system: SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let secs = parse_http_date(value, now_system)?;
    let Ok(secs) = u64::try_from(secs) else {
        return Some(Duration::ZERO); // before 1970: long past
    };
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(at.duration_since(now_system).unwrap_or(Duration::ZERO))
}

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP-date (RFC 9110 §5.6.7) as seconds since the Unix epoch. The
/// weekday must be a weekday name but is not checked against the date.
fn parse_http_date(s: &str, now_system: SystemTime) -> Option<i64> {
    let fields: Vec<&str> = s.split_ascii_whitespace().collect();
    let (year, month, day, time) = match fields.as_slice() {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        [wd, day, mon, year, time, "GMT"] => {
            weekday(wd.strip_suffix(',')?, &SHORT_DAYS)?;
            (number(year, 4, 4)?, month(mon)?, number(day, 2, 2)?, *time)
        }
        // rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"
        [wd, date, time, "GMT"] => {
            weekday(wd.strip_suffix(',')?, &LONG_DAYS)?;
            let mut parts = date.split('-');
            let day = number(parts.next()?, 2, 2)?;
            let mon = month(parts.next()?)?;
            let yy = number(parts.next()?, 2, 2)?;
            if parts.next().is_some() {
                return None;
            }
            (two_digit_year(yy, now_system), mon, day, *time)
        }
        // asctime-date: "Sun Nov  6 08:49:37 1994"
        [wd, mon, day, time, year] => {
            weekday(wd, &SHORT_DAYS)?;
            (number(year, 4, 4)?, month(mon)?, number(day, 1, 2)?, *time)
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let hour = number(hms.next()?, 2, 2)?;
    let minute = number(hms.next()?, 2, 2)?;
    let second = number(hms.next()?, 2, 2)?;
    // 60 is a leap second.
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year as i64, month, day);
    Some(days * 86_400 + (hour * 3600 + minute * 60 + second) as i64)
}

/// Some if `name` is one of `days`.
fn weekday(name: &str, days: &[&str]) -> Option<()> {
    days.contains(&name).then_some(())
}

/// `s` as a decimal number of `min..=max` digits.
fn number(s: &str, min: usize, max: usize) -> Option<u32> {
    if !(min..=max).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// 1-based month of a three-letter name (case-sensitive, as RFC 9110 says).
fn month(name: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

/// RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in
/// the future is the most recent past year with those digits.
fn two_digit_year(yy: u32, now_system: SystemTime) -> u32 {
    let secs = now_system
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Close enough for a 50-year rule: a Gregorian year is 365.2425 days.
    let this_year = 1970 + (secs / 31_556_952) as u32;
    let year = this_year - this_year % 100 + yy;
    if year > this_year + 50 {
        year - 100
    } else {
        year
    }
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        let date = UNIX_EPOCH + secs(784_111_777);
        let before = date - secs(10);
        let imf = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(imf, before), Some(secs(10)));
        assert_eq!(parse_retry_after(imf, date - ms(500)), Some(ms(500)));
        assert_eq!(parse_retry_after(imf, date), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(imf, date + secs(60)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", before),
            Some(secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994", before),
            Some(secs(10))
        );
        // A leap day, a leap second and a far future.
        let now = UNIX_EPOCH + secs(1_709_164_800); // 2024-02-29 00:00:00
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:01:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:00:60 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Mar 2024 00:00:00 GMT", now),
            Some(secs(86_400))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            Some(Duration::ZERO),
            "94 is 1994, not 2094"
        );
        assert_eq!(parse_retry_after(" 120 ", now), Some(secs(120)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(secs(u64::MAX))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "7s",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Thu, 29 Feb 2023 00:00:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
