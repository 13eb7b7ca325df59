//! Durations and sizes as flags write them: `200ms`, `2s`, `1m`; `16Mi`.

use std::time::Duration;

/// `200ms`, `2s`, `1.5s`, `1m`, `1h`, or `0`; at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => s.split_at(at),
        None => (s, ""),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 200ms, 2s, 1m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "" if value == 0.0 => 0.0,
        _ => return Err(format!("`{s}`: the unit must be ms, s, m or h")),
    };
    if seconds > MAX_DURATION_SECONDS {
        return Err(format!("`{s}`: at most a day (24h) is accepted"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

/// Longest duration a flag takes: time arithmetic stays far from overflow.
const MAX_DURATION_SECONDS: f64 = 86_400.0;

/// A duration that must not be zero (a timeout, an interval).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let duration = parse_duration(s)?;
    if duration.is_zero() {
        return Err(format!("`{s}`: must be more than 0"));
    }
    Ok(duration)
}

/// A drain time: a duration (`10s`, `1m`), or a bare number of seconds as
/// the older `--drain-seconds` took it.
pub fn parse_drain(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return parse_duration(&format!("{t}s"));
    }
    parse_duration(s)
}

/// `16Mi`, `512Ki`, `1Gi`, or a number of bytes.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, ""),
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 16Mi, 512Ki or 1048576"))?;
    let scale: usize = match unit {
        "" | "B" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => return Err(format!("`{s}`: the unit must be Ki, Mi or Gi")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_flags_document() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("25h").is_err(), "more than a day");
        assert!(parse_duration("1441m").is_err(), "more than a day");
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_timeout("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn a_drain_is_a_duration_or_a_bare_number_of_seconds() {
        assert_eq!(parse_drain("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_drain(" 7 "), Ok(Duration::from_secs(7)));
        assert_eq!(parse_drain("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_drain("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_drain("0"), Ok(Duration::ZERO));
        assert!(parse_drain("").is_err());
        assert!(parse_drain("-5").is_err());
        assert!(parse_drain("ten").is_err());
        assert!(
            parse_drain("99999999999999999999").is_err(),
            "more than a day"
        );
    }

    #[test]
    fn sizes_parse_like_the_flags_document() {
        assert_eq!(parse_bytes("16Mi"), Ok(16 << 20));
        assert_eq!(parse_bytes("512Ki"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("16M").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999Gi").is_err());
    }
}
