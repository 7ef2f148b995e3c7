//! Open-loop HTTP load for acknowledgement benchmarks.
//!
//! The frontends' benches (Slack slash commands, GitHub webhooks) measure what
//! the sender sees: request *i* of a load is due at `start + i / rate` and is
//! sent then, whatever happened to the earlier ones, and its latency counts from
//! when it was due to when the whole answer was read. Queueing delay is counted
//! (no coordinated omission).
//!
//! A plain pacer thread keeps the schedule with `std::thread::sleep`, which is
//! precise to tens of microseconds; tokio's timer wheel rounds every deadline up
//! to the next millisecond, which would add up to a millisecond of the sender's
//! own lateness to every latency. The pacer hands each request to a one-worker
//! runtime that sends it over a keep-alive `reqwest::Client` pool, as
//! `youops-load` does for the HTTP API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One pre-built request: headers and body (signed beforehand, so signing
/// costs the sender nothing during the load).
pub type Prepared = (Vec<(&'static str, String)>, Bytes);

/// What one load gave.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Offered requests per second.
    pub offered: u64,
    /// Requests sent.
    pub sent: usize,
    /// From the first due time to the last answer.
    pub wall: Duration,
    /// Latency of every request from its due time, sorted.
    pub latencies: Vec<Duration>,
    /// Answer kind → count: the HTTP status; `"<status> rate-limited"` when the
    /// body says `rate_limit` (the executor's per-principal limit, which appends
    /// nothing); `"error"` for a transport error.
    pub statuses: BTreeMap<String, usize>,
    /// Largest lateness of a send behind its due time (the pacer's own).
    pub max_send_lag: Duration,
}

impl LoadResult {
    /// Requests per second actually answered.
    pub fn achieved(&self) -> f64 {
        self.sent as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `p`-quantile (0..=1) of the latencies; zero when there are none.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
        self.latencies[i]
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    /// The answers as `status: count, ...`.
    pub fn answers(&self) -> String {
        let st: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        st.join(", ")
    }
}

/// `d` in milliseconds with two decimals, e.g. `2.41 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The header of the acknowledgement benches' markdown table; `api` names the
/// fake API whose calls the last column counts (`Slack`, `GitHub`).
pub fn table_header(api: &str) -> String {
    format!(
        "| offered/s | sent | achieved/s | p50 | p90 | p99 | max | answers | {api} API calls |\n|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    )
}

/// One row of that table: the load, and the calls the fake API got.
pub fn table_row(r: &LoadResult, api_calls: u64) -> String {
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
        r.offered,
        r.sent,
        r.achieved(),
        ms(r.percentile(0.50)),
        ms(r.percentile(0.90)),
        ms(r.percentile(0.99)),
        ms(r.max()),
        r.answers(),
        api_calls
    )
}

/// One load of a bench's table: [`run_open_loop`], and its [`table_row`] with
/// what the fake API did meanwhile (`api_calls` is the counter the fake API
/// bumps per call).
///
/// # Panics
///
/// As [`run_open_loop`].
pub fn measure(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    reqs: Vec<Prepared>,
    api_calls: &std::sync::atomic::AtomicU64,
) -> (LoadResult, String) {
    use std::sync::atomic::Ordering;
    let calls0 = api_calls.load(Ordering::Relaxed);
    let r = run_open_loop(client, url, rate, reqs);
    let row = table_row(&r, api_calls.load(Ordering::Relaxed) - calls0);
    (r, row)
}

/// POST `reqs` to `url` open-loop at `rate` per second and wait for every answer.
///
/// Runs on its own threads (a pacer and a one-worker runtime), so the caller's
/// runtime, which serves the requests in a bench, is not the one sending them.
///
/// # Panics
///
/// If `rate` is zero or a thread or runtime cannot be started (a bench harness).
pub fn run_open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    reqs: Vec<Prepared>,
) -> LoadResult {
    assert!(rate > 0, "rate must be positive");
    let client = client.clone();
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("load generator runtime");
        let sent = reqs.len();
        // Start a little in the future so the schedule does not begin behind.
        let start = Instant::now() + Duration::from_millis(5);
        let mut tasks = Vec::with_capacity(sent);
        let mut max_send_lag = Duration::ZERO;
        for (i, (headers, body)) in reqs.into_iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            max_send_lag = max_send_lag.max(Instant::now().saturating_duration_since(due));
            let mut rb = client.post(&url).body(body);
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            tasks.push(rt.spawn(async move {
                let status = match rb.send().await {
                    Ok(res) => {
                        let s = res.status().as_u16();
                        match res.bytes().await {
                            Ok(b) if b.windows(10).any(|w| w == b"rate_limit") => {
                                format!("{s} rate-limited")
                            }
                            Ok(_) => s.to_string(),
                            Err(_) => "error".to_string(),
                        }
                    }
                    Err(_) => "error".to_string(),
                };
                (due.elapsed(), status)
            }));
        }
        let samples = std::env::var_os("YOUOPS_BENCH_SAMPLES");
        let keep_order = samples.is_some();
        let (mut latencies, statuses, in_order) = rt.block_on(async move {
            let mut latencies = Vec::with_capacity(sent);
            let mut statuses = BTreeMap::new();
            let mut in_order = Vec::new();
            for t in tasks {
                let (d, s) = match t.await {
                    Ok(v) => v,
                    Err(_) => (Duration::MAX, "error".to_string()),
                };
                latencies.push(d);
                if keep_order {
                    in_order.push((d, s.clone()));
                }
                *statuses.entry(s).or_insert(0) += 1;
            }
            (latencies, statuses, in_order)
        });
        let wall = start.elapsed();
        if let Some(path) = samples {
            write_samples(&path, rate, &in_order);
        }
        latencies.sort();
        LoadResult {
            offered: rate,
            sent,
            wall,
            latencies,
            statuses,
            max_send_lag,
        }
    })
    .join()
    .expect("load generator thread")
}

/// The offered loads of a bench: `YOUOPS_BENCH_RATES` (comma-separated
/// requests per second) if set, else `default`.
///
/// # Panics
///
/// If the variable holds anything but positive integers (a bench harness).
pub fn bench_rates(default: &[u64]) -> Vec<u64> {
    match std::env::var("YOUOPS_BENCH_RATES") {
        Ok(v) => v
            .split(',')
            .map(|r| match r.trim().parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => panic!("YOUOPS_BENCH_RATES must list positive integers, not {v:?}"),
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// With `YOUOPS_BENCH_SAMPLES=PREFIX` set, each load writes `PREFIX-<rate>.csv`:
/// one line per request in send order, in `youops-load --samples`' columns
/// (`scheduled_ms,latency_us,status`, scheduled from the load's start), to find
/// when the slow ones happened.
fn write_samples(prefix: &std::ffi::OsStr, rate: u64, in_order: &[(Duration, String)]) {
    use std::fmt::Write as _;
    let mut out = String::from("scheduled_ms,latency_us,status\n");
    for (i, (d, status)) in in_order.iter().enumerate() {
        let at_ms = i as f64 * 1e3 / rate as f64;
        let _ = writeln!(out, "{at_ms:.3},{},{status}", d.as_micros());
    }
    let mut path = prefix.to_os_string();
    path.push(format!("-{rate}.csv"));
    if let Err(e) = std::fs::write(&path, out) {
        eprintln!("cannot write samples to {}: {e}", path.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paces_and_counts_answers() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // A tiny HTTP/1.1 server: 200 with `ok` for even bodies, 429 with
        // `rate_limit` for odd ones.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // One request per read burst: headers + a one-byte body.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            if buf.len() < end + 5 {
                                break;
                            }
                            let odd = (buf[end + 4] - b'0') % 2 == 1;
                            buf.drain(..end + 5);
                            let (status, body) = if odd {
                                ("429 Too Many Requests", "rate_limited")
                            } else {
                                ("200 OK", "ok")
                            };
                            let resp = format!(
                                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let reqs: Vec<Prepared> = (0..20)
            .map(|i| (vec![], Bytes::from(format!("{}", i % 10))))
            .collect();
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/");
        let r = tokio::task::spawn_blocking(move || run_open_loop(&client, &url, 200, reqs))
            .await
            .unwrap();
        assert_eq!(r.sent, 20);
        assert_eq!(r.statuses.get("200"), Some(&10), "{:?}", r.statuses);
        assert_eq!(r.statuses.get("429 rate-limited"), Some(&10));
        // 20 requests at 200/s take at least the 95 ms of the schedule.
        assert!(r.wall >= Duration::from_millis(95), "{:?}", r.wall);
        assert!(r.percentile(0.5) <= r.max());
        assert_eq!(r.answers(), "200: 10, 429 rate-limited: 10");
    }
}
