//! Command-line values the tools share: durations such as `10s`, `500ms`, `5m`.

use std::time::Duration;

/// Seconds of a duration written `N` (seconds), `Ns`, `Nms` or `Nm`; `examples`
/// shows the caller's own forms in the error (e.g. `10s, 500ms`).
fn duration_secs(s: &str, examples: &str) -> Result<f64, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. {examples})"))?;
    match unit {
        "ms" => Ok(n / 1e3),
        "s" | "" => Ok(n),
        "m" => Ok(n * 60.0),
        _ => Err(format!("`{s}`: unit must be ms, s or m")),
    }
}

/// A duration of zero or more: a number with an optional unit, `ms`, `s`
/// (the default) or `m`.
pub fn parse_duration(s: &str, examples: &str) -> Result<Duration, String> {
    let s = s.trim();
    let secs = duration_secs(s, examples)?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration above zero and at most an hour (a probe's length).
pub fn parse_bounded_duration(s: &str, examples: &str) -> Result<Duration, String> {
    let s = s.trim();
    let secs = duration_secs(s, examples)?;
    if !secs.is_finite() || secs <= 0.0 || secs > 3600.0 {
        return Err(format!("`{s}` is not a duration between 0 and 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration(" 500ms ", "x"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2", "x"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m", "x"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s", "x"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("x", "10s, 500ms").unwrap_err(),
            "`x` is not a duration (e.g. 10s, 500ms)"
        );
        assert_eq!(
            parse_duration("3h", "x").unwrap_err(),
            "`3h`: unit must be ms, s or m"
        );
        assert_eq!(
            parse_bounded_duration("0s", "x").unwrap_err(),
            "`0s` is not a duration between 0 and 1h"
        );
        assert_eq!(
            parse_bounded_duration("61m", "x").unwrap_err(),
            "`61m` is not a duration between 0 and 1h"
        );
        assert_eq!(
            parse_bounded_duration("3s", "x"),
            Ok(Duration::from_secs(3))
        );
    }
}
