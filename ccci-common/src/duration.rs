//! Durations as CI operators write them (SPEC §1 "Durations").
//!
//! Accepted: a bare number of seconds (`90`, `0.5`), or one or more
//! `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d` (`90s`, `2m`,
//! `1h30m`, `500ms`, `1.5h`). Rejected with a message: empty values, signs,
//! spaces, unknown units and anything beyond `u64` nanoseconds (~584 years).
//!
//! The resolution is one nanosecond. A part that is not zero but smaller
//! than that (`0.0000000001`) counts as 1 ns, never as 0: a zero is refused
//! where a duration bounds a wait or a kill, and a tiny deadline should
//! fire at once, as timeout(1)'s does. Only a value whose digits are all
//! zero (`0`, `0s`, `0.000`) is zero.
//!
//! Why not `humantime::parse_duration`: it reads `M` as months and `y` as
//! years (a `-w 2M` typo would wait two months) and refuses bare seconds,
//! which timeout(1) users expect.

use std::time::Duration;

const NANOS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
];

/// Parses `value`; the error text explains the accepted forms.
pub fn parse(value: &str) -> Result<Duration, String> {
    let explain = || {
        "not a valid duration: use a number of seconds or parts like 90s, 2m, 1h30m, 500ms"
            .to_string()
    };
    if value.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let mut rest = value;
    let mut total: u128 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "" if parts == 0 && tail.is_empty() => 1_000_000_000,
            _ => match NANOS.iter().find(|(name, _)| *name == unit) {
                Some((_, scale)) => *scale,
                None => return Err(explain()),
            },
        };
        total = total
            .checked_add(scaled(number, scale).ok_or_else(explain)?)
            .ok_or_else(explain)?;
        parts += 1;
        rest = tail;
    }
    if parts == 0 {
        return Err(explain());
    }
    let nanos = u64::try_from(total).map_err(|_| "the duration is too long".to_string())?;
    Ok(Duration::from_nanos(nanos))
}

/// [`parse`], refusing zero: for every duration that bounds a wait or a
/// kill (`--deadline`, `--kill-after`, `--reap-timeout`; SPEC §1
/// "Durations"). A zero bound is refused rather than read as "at once" or
/// as timeout(1)'s "no bound": either reading surprises someone.
pub fn positive(value: &str) -> Result<Duration, String> {
    match parse(value)? {
        d if d.is_zero() => Err("must be more than 0 (to have none, leave the flag out)".into()),
        d => Ok(d),
    }
}

/// `number` (digits with an optional fraction) times `scale` nanoseconds.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(scale)?;
    let mut unit = scale;
    for digit in fraction.bytes().take(18) {
        unit /= 10;
        value = value.checked_add(u128::from(digit - b'0') * unit)?;
    }
    if value == 0 && fraction.bytes().any(|b| b != b'0') {
        // Below the resolution, but not zero: round up (see the module doc).
        value = 1;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let s = Duration::from_secs;
        assert_eq!(parse("90s"), Ok(s(90)));
        assert_eq!(parse("2m"), Ok(s(120)));
        assert_eq!(parse("1h30m"), Ok(s(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("45"), Ok(s(45)));
        assert_eq!(parse("0"), Ok(s(0)));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(s(5400)));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(Duration::new(93784, 5_000_000)));
    }

    #[test]
    fn a_bound_is_never_zero() {
        assert_eq!(positive("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(positive("0.0000000001"), Ok(Duration::from_nanos(1)));
        for zero in ["0", "0s", "0ms", "0.000", "0h0m"] {
            assert!(
                positive(zero).unwrap_err().contains("more than 0"),
                "{zero}"
            );
        }
        assert_eq!(positive("1x"), parse("1x"));
    }

    #[test]
    fn below_a_nanosecond_rounds_up_and_only_zero_digits_are_zero() {
        let ns = Duration::from_nanos;
        assert_eq!(parse("0.0000000001"), Ok(ns(1)));
        assert_eq!(parse("0.000000000000000000000001s"), Ok(ns(1)));
        assert_eq!(parse("0.0000001ms"), Ok(ns(1)));
        assert_eq!(parse("0.000000001"), Ok(ns(1)));
        assert_eq!(parse("0.000000002"), Ok(ns(2)));
        for zero in ["0", "0s", "0.000", "0.0000000000000000000000ms", "0h0m"] {
            assert_eq!(parse(zero), Ok(Duration::ZERO), "{zero}");
        }
    }

    #[test]
    fn the_limit_is_u64_nanoseconds() {
        // 2^64 - 1 ns is 18446744073.709551615 s, about 584.5 years.
        assert_eq!(
            parse("18446744073.709551615"),
            Ok(Duration::from_nanos(u64::MAX))
        );
        assert!(parse("18446744073.709551616").is_err());
        assert!(parse("213503d").is_ok());
        assert!(parse("213504d").unwrap_err().contains("too long"));
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "-1",
            "-5s",
            "+5s",
            " 5s",
            "5 s",
            "5x",
            "5M",
            "1y",
            "s",
            "1h30",
            "30 ",
            ".",
            "1..2s",
            "5sm",
            "99999999999999999999999h",
            "600000d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed as {:?}", parse(bad));
        }
        assert!(parse("-1").unwrap_err().contains("negative"));
    }
}
