//! The tools' percentile rule, and how they print a latency.

/// Nearest-rank percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// [`percentile`] `p` of sorted µs samples, in ms.
pub fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    percentile(sorted, p).map(|us| f64::from(us) / 1000.0)
}

/// `12.34 ms`, or `-` for no value.
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=10).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(5000));
        assert_eq!(percentile(&v, 99.0), Some(10_000));
        assert_eq!(percentile(&v, 0.0), Some(1000));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile_ms(&v, 90.0), Some(9.0));
        assert_eq!(fmt_ms(Some(1.234)), "1.23 ms");
        assert_eq!(fmt_ms(None), "-");
    }
}
