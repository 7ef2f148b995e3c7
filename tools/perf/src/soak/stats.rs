//! The report's statistics: percentiles, slopes, window means, MiB.

pub(crate) use crate::stats::percentile_ms as percentile;

/// Least-squares slope of (t, y) in y-units per minute.
pub(crate) fn slope_per_min(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    (den > 0.0).then(|| num / den * 60.0)
}

pub(crate) fn mean_in(points: &[(f64, u64)], from: f64, to: f64) -> Option<f64> {
    let v: Vec<f64> = points
        .iter()
        .filter(|p| p.0 >= from && p.0 <= to)
        .map(|p| p.1 as f64)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(crate) fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

pub(crate) fn f2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}
