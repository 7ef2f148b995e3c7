//! The benchmark's Markdown table: one row per configuration, beside the raw
//! PostgreSQL baseline and the targets derived from it.

use std::fmt::Write as _;

use super::pgraw::Raw;
use crate::load::{Saturation, Summary};
use crate::stats::percentile_ms;

/// One measured configuration of daemons.
#[derive(Debug)]
pub(crate) struct Measured {
    /// `embedded log store` or `PostgreSQL`.
    pub(crate) store: &'static str,
    pub(crate) nodes: usize,
    pub(crate) sat: Saturation,
    pub(crate) open: Summary,
    /// Warnings and errors in the daemons' logs.
    pub(crate) log_issues: usize,
}

/// `1.23`, or `-`.
fn f2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// `12,345`: thousands separated, as the benchmarks page writes them.
fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The p99 target at the open-loop rate: 2 × the single-connection commit p99
/// + 2 ms (an acknowledgement may wait for the commit under way, then its own),
///   the bound the HTTP benchmark puts on the disk's `fdatasync`.
pub(crate) fn p99_bound(raw1: &Raw) -> Option<f64> {
    percentile_ms(&raw1.lat, 99.0).map(|p| 2.0 * p + 2.0)
}

/// The table: the configurations, then the raw baselines.
pub(crate) fn table(rows: &[Measured], raw: &Raw, raw1: &Raw, clients: usize, rate: f64) -> String {
    let bound = p99_bound(raw1);
    let mut t = format!(
        "| configuration | durable req/s, {clients} clients | ceiling: raw PG commits/s | \
         ack p50 / p99 / max ms at {rate:.0} req/s | target: p99 ≤ | met | 202 / refused (saturation; {rate:.0} req/s) | daemon log warnings |\n\
         |---|---:|---:|---:|---:|---|---:|---:|\n"
    );
    for r in rows {
        let o = &r.open;
        let p99 = o.lat_ms(99.0);
        let (ceiling, target, met) = if r.store == "PostgreSQL" {
            let met = match (p99, bound) {
                (Some(p), Some(b)) if p <= b => "yes",
                _ => "**no**",
            };
            (thousands(raw.rps), f2(bound), met)
        } else {
            ("—".into(), "—".into(), "baseline")
        };
        let open_other = o.statuses.values().sum::<u64>() - o.ok + o.errors;
        let _ = writeln!(
            t,
            "| {}, {} node{} | {} | {ceiling} | {} / {} / {} | {target} | {met} | {} / {}; {} / {} | {} |",
            r.store,
            r.nodes,
            if r.nodes == 1 { "" } else { "s" },
            thousands(r.sat.rps),
            f2(o.lat_ms(50.0)),
            f2(p99),
            f2(o.lat.last().map(|us| f64::from(*us) / 1e3)),
            thousands(r.sat.ok() as f64),
            r.sat.refused(),
            thousands(o.ok as f64),
            open_other,
            r.log_issues,
        );
    }
    for x in [raw, raw1] {
        let _ = writeln!(
            t,
            "| raw PG `BEGIN; INSERT; COMMIT`, {} connection{} | {} | — | commit {} / {} / {} | — | — | {} / {} errors | — |",
            x.clients,
            if x.clients == 1 { "" } else { "s" },
            thousands(x.rps),
            f2(percentile_ms(&x.lat, 50.0)),
            f2(percentile_ms(&x.lat, 99.0)),
            f2(x.lat.last().map(|us| f64::from(*us) / 1e3)),
            thousands(x.lat.len() as f64),
            x.errors,
        );
    }
    t
}
