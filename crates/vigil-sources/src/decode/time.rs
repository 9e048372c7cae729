//! Event timestamps to nanoseconds since the epoch.
//!
//! Every audit event carries two timestamps, so their parsing is on the
//! hot path. The common form, UTC with a `Z` (`2024-05-13T10:00:00.123456Z`,
//! as the API server, Falco and Tetragon write it), is read by hand; any
//! other form, and anything the fast path is unsure of, goes to chrono,
//! which also words the errors.

use super::TimeError;

/// Parse a timestamp to nanoseconds since the epoch. `field` names it in
/// the error.
///
/// RFC 3339 is the format of every source; timestamps without a zone
/// (`2022-11-29 00:09:04.38`, `2022-11-29T00:09:04`), as log pipelines
/// sometimes rewrite them, are read as UTC.
pub fn parse_time(field: &str, value: &str) -> Result<i64, TimeError> {
    if let Some(ns) = parse_utc_z(value.as_bytes()) {
        return Ok(ns);
    }
    let utc = match chrono::DateTime::parse_from_rfc3339(value) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(error) => ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(value, f).ok())
            .map(|t| t.and_utc())
            .ok_or_else(|| TimeError::Invalid {
                field: field.to_string(),
                value: value.to_string(),
                error,
            })?,
    };
    utc.timestamp_nanos_opt()
        .ok_or_else(|| TimeError::OutOfRange {
            field: field.to_string(),
            value: value.to_string(),
        })
}

/// Parse an optional timestamp field.
pub fn parse_opt_time(field: &str, value: Option<&str>) -> Result<Option<i64>, TimeError> {
    value.map(|v| parse_time(field, v)).transpose()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (`t` or `z` accepted as RFC 3339
/// allows), a valid date, seconds below 60, at most nine fraction digits,
/// and a result within i64 nanoseconds; `None` for anything else.
fn parse_utc_z(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't') || !matches!(b[b.len() - 1], b'Z' | b'z') {
        return None;
    }
    let num = |at: usize, len: usize| -> Option<i64> {
        b[at..at + len].iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let fraction = &b[19..b.len() - 1];
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let n = num(20, digits.len())?;
            n * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_ns(value: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(value)
            .ok()?
            .timestamp_nanos_opt()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20000))]
        /// Where the fast path answers, chrono agrees; and it answers for
        /// every valid `Z` timestamp within the range.
        #[test]
        fn the_fast_path_agrees_with_chrono(
            year in 1600i64..2300, month in 0i64..14, day in 0i64..33,
            hour in 0i64..25, minute in 0i64..61, second in 0i64..61,
            digits in 0usize..11, fraction in 0u64..10_000_000_000,
        ) {
            let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            if digits > 0 {
                let f = format!("{fraction:010}");
                text.push('.');
                text.push_str(&f[..digits]);
            }
            text.push('Z');
            let fast = parse_utc_z(text.as_bytes());
            let reference = chrono_ns(&text);
            if let Some(ns) = fast {
                proptest::prop_assert_eq!(Some(ns), reference, "{}", text);
            }
            if second < 60 && digits <= 9 {
                proptest::prop_assert_eq!(fast, reference, "{}", text);
            }
        }
    }

    #[test]
    fn other_forms_go_to_chrono_and_errors_keep_its_words() {
        for (text, expected) in [
            ("2022-11-29T00:09:04.38+02:00", "2022-11-28T22:09:04.38Z"),
            ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.000000000Z"),
            ("2022-11-29t00:09:04z", "2022-11-29T00:09:04Z"),
        ] {
            let got = parse_time("t", text).unwrap();
            assert_eq!(chrono_ns(text), Some(got), "{text}");
            assert!(chrono_ns(expected).is_some());
        }
        let invalid = parse_time("t", "2022-02-29T00:00:00Z").unwrap_err();
        assert!(matches!(invalid, TimeError::Invalid { .. }), "{invalid:?}");
        assert!(
            invalid.to_string().contains("invalid RFC 3339"),
            "{invalid}"
        );
        let far = parse_time("t", "9999-12-31T00:00:00Z").unwrap_err();
        assert_eq!(
            far,
            TimeError::OutOfRange {
                field: "t".into(),
                value: "9999-12-31T00:00:00Z".into()
            }
        );
        assert!(far.to_string().contains("outside the representable range"));
        assert!(parse_utc_z("1969-12-31T23:59:59.5Z".as_bytes()) == Some(-500_000_000));
        assert_eq!(parse_utc_z("+0000-01-01T00:00:00Z".as_bytes()), None);
    }
}
