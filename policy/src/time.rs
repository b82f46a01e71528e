//! RFC 3339 timestamps to and from Unix seconds (the validity windows of rules).

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix seconds (fractions are truncated toward
/// the past). Never panics, whatever the input.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    parse(s).map(|(secs, _)| secs)
}

/// Parses an RFC 3339 timestamp into Unix nanoseconds (saturating outside 1677–2262).
pub fn parse_rfc3339_ns(s: &str) -> Result<i64, String> {
    let (secs, nanos) = parse(s)?;
    Ok(secs
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(nanos)))
}

/// (Unix seconds, nanoseconds within the second).
fn parse(s: &str) -> Result<(i64, u32), String> {
    let b = s.as_bytes();
    let bad = || format!("{s:?} is not an RFC 3339 timestamp like 2026-01-01T00:00:00Z");
    // Every byte position below is sliced as text: anything but ASCII is refused first, so a
    // multi-byte character can never put a slice off a character boundary.
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    // Byte-wise: a multi-byte character anywhere is simply not a digit.
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = b.get(r).ok_or_else(bad)?;
        if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(t.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - st < 9 {
                nanos += u32::from(b[i] - b'0') * 10u32.pow(8 - (i - st) as u32);
            }
            i += 1;
        }
        if i == st {
            return Err(bad());
        }
    }
    let o = &b[i..];
    let offset = match o {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let v = oh * 3600 + om * 60;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    Ok((
        days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset,
        nanos,
    ))
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            1_767_225_600
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T01:00:00+01:00").unwrap(),
            1_767_225_600
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.250Z").unwrap(),
            1_709_208_000
        );
        assert_eq!(format_rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "yesterday",
            "2026-01-01T00:00:00+1:00",
            "2026-01-01T00:00:00+€00",
            "2026-01-01T00:00:0€+00:00",
            "2026-01-01T00:00:00.€",
            "2026-01-01T00:00:00+00:€",
            "2026-01-01T00:00:00+00€0",
            "€026-01-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
        }
    }

    #[test]
    fn never_panics_and_keeps_fractions() {
        for s in [
            "2026-01-01T00:00:00+\u{20ac}00",
            "2026-01-01T00:00:00+€00",
            "2026-01-01T00:00:0€Z",
            "2026-01-01T00:00:00.€Z",
            "€€€€-01-01T00:00:00Z",
            "2026-01-01T00:00:00+00:0€",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
            assert!(parse_rfc3339_ns(s).is_err(), "{s}");
        }
        assert_eq!(
            parse_rfc3339_ns("2026-01-01T00:00:00.9Z").unwrap(),
            1_767_225_600_900_000_000
        );
        assert_eq!(
            parse_rfc3339_ns("2026-01-01T00:00:00.123456789123Z").unwrap(),
            1_767_225_600_123_456_789
        );
    }

    #[test]
    fn never_panics_on_any_text() {
        // Every prefix of, and every multi-byte character spliced at every position of, a valid
        // timestamp with an offset: parsing answers, never panics.
        let base = "2026-01-01T00:00:00.5+01:00";
        for cut in 0..=base.len() {
            let _ = parse_rfc3339(&base[..cut]);
            for c in ['€', 'é', '\u{10FFFF}', '\0'] {
                let mut s = base.to_string();
                s.insert(cut, c);
                assert!(parse_rfc3339(&s).is_err(), "{s:?}");
                let mut s = base.to_string();
                s.replace_range(cut..(cut + 1).min(base.len()), &c.to_string());
                let _ = parse_rfc3339(&s);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_generated_text(
            s in "[0-9€]{4}-[0-9]{2}-[0-9]{2}[Tt €][0-9]{2}:[0-9]{2}:[0-9€]{2}(\\.[0-9€]{0,3})?[Z+\\-€][0-9€:]{0,6}",
            t in ".*",
        ) {
            // Anything the parser accepts is a real instant that formats and parses back the same.
            for x in [&s, &t] {
                if let Ok(v) = parse_rfc3339(x) {
                    proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(v)), Ok(v));
                }
            }
        }
    }

    #[test]
    fn round_trip() {
        for t in [0i64, 951_782_400, 1_767_225_600, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t);
        }
    }
}
