//! The report's resources part: the daemon's memory, CPU and open files over
//! the load, and the live store's (and the archive's) size.

use serde_json::{json, Value};

use super::{Outcome, Report};
use crate::procfs;
use crate::soak::doors::{ok_of, Door};
use crate::soak::sampling::{disk_bytes, live_store_bytes, Samples};
use crate::soak::stats::{f2, mean_in, mib, slope_per_min};

/// Memory, CPU, store.
pub(super) fn memory(r: &mut Report, o: &Outcome<'_>) {
    let rss_mib = rss(r, o);
    let (cpu, fds) = cpu_and_fds(r, o);
    let store_bytes = store(r, o);
    let census = o.census;
    let archive_end = o.args.archive.as_deref().map(disk_bytes);
    if let Some(a) = archive_end {
        r.line(format!(
            "archive on disk after the drain: {:.1} MiB; {} of the {} requests were archived out of the store (read back from the archive files)",
            a as f64 / 1048576.0,
            census.archived,
            census.total
        ));
    }
    r.json.insert(
        "memory".into(),
        json!({
            "rss_mib": rss_mib,
            "fds": fds,
            "cpu": cpu,
            "archive_bytes": archive_end,
            "archived_requests": census.archived,
            "store_bytes": store_bytes,
        }),
    );
}

/// Resident memory over the load, its growth over the second half, and its
/// check; the `rss_mib` JSON.
fn rss(r: &mut Report, o: &Outcome<'_>) -> Value {
    let (args, samples) = (o.args, o.samples);
    let dur = args.duration.as_secs_f64();
    let in_load: Vec<(f64, u64)> = samples
        .rss
        .iter()
        .copied()
        .filter(|p| p.0 <= dur + 0.5)
        .collect();
    let rss_min = in_load.iter().map(|p| p.1).min().unwrap_or(0) as f64;
    let rss_max = in_load.iter().map(|p| p.1).max().unwrap_or(0) as f64;
    let w = (dur * 0.1).clamp(5.0, 30.0);
    let mid = mean_in(&in_load, dur / 2.0 - w / 2.0, dur / 2.0 + w / 2.0);
    let last = mean_in(&in_load, dur - w, dur + 0.5);
    let growth = match (mid, last) {
        (Some(a), Some(b)) => Some(mib(b - a)),
        _ => None,
    };
    let half = |first: bool| -> Vec<(f64, f64)> {
        in_load
            .iter()
            .filter(|p| {
                if first {
                    p.0 < dur / 2.0
                } else {
                    p.0 >= dur / 2.0
                }
            })
            .map(|p| (p.0, mib(p.1 as f64)))
            .collect()
    };
    let (s1, s2) = (slope_per_min(&half(true)), slope_per_min(&half(false)));
    r.line("");
    r.line(format!(
        "daemon RSS over the load ({} samples, 1/s): min {:.1} MiB, max {:.1} MiB; slope first half {} MiB/min, second half {} MiB/min",
        in_load.len(),
        mib(rss_min),
        mib(rss_max),
        f2(s1),
        f2(s2)
    ));
    r.line(format!(
        "  mean of the {w:.0} s around the middle {} MiB, of the last {w:.0} s {} MiB: growth over the second half {} MiB (bound {} MiB)",
        f2(mid.map(mib)),
        f2(last.map(mib)),
        f2(growth),
        args.rss_growth_mib
    ));
    let per_min = rss_per_minute(samples, dur);
    let at_end = samples.rss.last().map(|p| mib(p.1 as f64));
    r.line(format!(
        "  RSS at each minute: {}; after the drain {} MiB",
        per_min
            .iter()
            .map(|v| format!(
                "{:.0}m {:.1}",
                v["t_s"].as_f64().unwrap_or(0.0) / 60.0,
                v["rss_mib"].as_f64().unwrap_or(0.0)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        f2(at_end)
    ));
    r.check(
        format!(
            "RSS growth over the second half ≤ {} MiB ({} MiB)",
            args.rss_growth_mib,
            f2(growth)
        ),
        growth.is_some_and(|g| g <= args.rss_growth_mib),
    );
    json!({ "min": mib(rss_min), "max": mib(rss_max), "after_drain": at_end,
            "mid_mean": mid.map(mib), "last_mean": last.map(mib), "window_s": w,
            "growth_second_half": growth, "bound": args.rss_growth_mib,
            "slope_first_half_per_min": s1, "slope_second_half_per_min": s2,
            "per_minute": per_min,
            "series": samples.rss.iter().map(|p| json!([p.0, p.1])).collect::<Vec<_>>() })
}

/// `{t_s, rss_mib}` at each whole minute of the load.
fn rss_per_minute(samples: &Samples, dur: f64) -> Vec<Value> {
    let mut per_min = Vec::new();
    let mut m = 0.0;
    while m <= dur + 0.5 {
        if let Some(p) = samples.rss.iter().find(|p| p.0 >= m - 0.5) {
            per_min.push(json!({ "t_s": m, "rss_mib": mib(p.1 as f64) }));
        }
        m += 60.0;
    }
    per_min
}

/// The daemon's CPU over the load and its open files; the `cpu` and `fds`
/// JSON.
fn cpu_and_fds(r: &mut Report, o: &Outcome<'_>) -> (Value, Value) {
    let samples = o.samples;
    let dur = o.args.duration.as_secs_f64();
    let cpu_at = |t: f64| samples.cpu.iter().find(|p| p.0 >= t).copied();
    let cpu_load = match (cpu_at(0.0), cpu_at(dur)) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let secs = (b.1.saturating_sub(a.1)) as f64 / procfs::USER_HZ;
            let reqs: u64 = Door::ALL.iter().map(|d| ok_of(o.recs, *d)).sum();
            Some((secs / (b.0 - a.0) * 100.0, secs / reqs.max(1) as f64 * 1e6))
        }
        _ => None,
    };
    if let Some((pct, us)) = cpu_load {
        r.line(format!("daemon CPU over the load: {pct:.0}% of one core, {us:.0} µs per accepted request (feedback work included)"));
    }
    let fd_max = samples.fds.iter().map(|p| p.1).max();
    let fd_first = samples.fds.first().map(|p| p.1);
    let fd_last = samples.fds.last().map(|p| p.1);
    r.line(format!(
        "daemon open file descriptors (every 5 s): first {}, max {}, last {}",
        fd_first.map_or("-".into(), |v| v.to_string()),
        fd_max.map_or("-".into(), |v| v.to_string()),
        fd_last.map_or("-".into(), |v| v.to_string())
    ));
    (
        json!(cpu_load.map(|(pct, us)| json!({ "core_pct": pct, "us_per_request": us }))),
        json!({ "first": fd_first, "max": fd_max, "last": fd_last }),
    )
}

/// The live store's size over the load, its growth over the second half (and
/// its check, with `--store-growth-pct`); the `store_bytes` JSON.
fn store(r: &mut Report, o: &Outcome<'_>) -> Value {
    let (args, samples, census) = (o.args, o.samples, o.census);
    let dur = args.duration.as_secs_f64();
    let store_at_min: Vec<String> = {
        let mut v = Vec::new();
        let mut m = 0.0;
        while m <= dur + 0.5 {
            if let Some(p) = samples.store.iter().find(|p| p.0 >= m - 1.0) {
                v.push(format!("{:.0}m {:.1}", m / 60.0, p.1 as f64 / 1048576.0));
            }
            m += 60.0;
        }
        v
    };
    let store_end = live_store_bytes(&args.store);
    let in_store_now = census.total - census.archived;
    let per_req = store_end as f64 / in_store_now.max(1) as f64;
    r.line(format!(
        "live store (log segments + index, MiB) at each minute: {}; after the drain {:.1} MiB = {:.0} bytes per stored request ({} requests)",
        store_at_min.join(", "),
        store_end as f64 / 1048576.0,
        per_req,
        in_store_now
    ));
    // Growth of the live store over the second half of the load: the mean of
    // the last window against the mean of the same window around the middle.
    let sw = args.store_window.as_secs_f64().min(dur / 2.0).max(2.0);
    let store_load: Vec<(f64, u64)> = samples
        .store
        .iter()
        .copied()
        .filter(|p| p.0 <= dur + 0.5)
        .collect();
    let s_mid = mean_in(&store_load, dur / 2.0 - sw / 2.0, dur / 2.0 + sw / 2.0);
    let s_last = mean_in(&store_load, dur - sw, dur + 0.5);
    let s_growth = match (s_mid, s_last) {
        (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a * 100.0),
        _ => None,
    };
    let second_half: Vec<u64> = store_load
        .iter()
        .filter(|p| p.0 >= dur / 2.0)
        .map(|p| p.1)
        .collect();
    let (s_min2, s_max2) = (
        second_half.iter().copied().min(),
        second_half.iter().copied().max(),
    );
    let mb = |v: Option<f64>| v.map_or("-".into(), |b| format!("{:.1}", b / 1048576.0));
    r.line(format!(
        "  mean of the {sw:.0} s around the middle {} MiB, of the last {sw:.0} s {} MiB: growth over the second half {}% (bound {}); second half min {} MiB, max {} MiB",
        mb(s_mid),
        mb(s_last),
        f2(s_growth),
        args.store_growth_pct
            .map_or("none".to_string(), |b| format!("{b}%")),
        mb(s_min2.map(|v| v as f64)),
        mb(s_max2.map(|v| v as f64)),
    ));
    if let Some(bound) = args.store_growth_pct {
        r.check(
            format!(
                "live store growth over the second half ≤ {bound}% ({}%)",
                f2(s_growth)
            ),
            s_growth.is_some_and(|g| g <= bound),
        );
    }
    json!({ "what": "log/*.jsonl + index.redb (live store, archives excluded)",
            "after_drain": store_end, "per_request": per_req,
            "mid_mean": s_mid, "last_mean": s_last, "window_s": sw,
            "growth_second_half_pct": s_growth, "bound_pct": args.store_growth_pct,
            "second_half_min": s_min2, "second_half_max": s_max2,
            "series": samples.store.iter().map(|p| json!([p.0, p.1])).collect::<Vec<_>>() })
}
