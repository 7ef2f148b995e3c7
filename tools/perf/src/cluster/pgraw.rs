//! The raw PostgreSQL baseline: closed loops, one connection each, over the
//! same Unix socket of the same server the nodes use, each doing `BEGIN`,
//! a single-row `INSERT` of an audit event's size into a small table and
//! `COMMIT`, timed from `BEGIN` to the commit's answer. The server's own
//! `fsync` settings apply (the throw-away cluster's: `fsync = on`,
//! `synchronous_commit` at its default, on).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// What the loops gave over the measured window.
#[derive(Debug)]
pub(crate) struct Raw {
    /// Connections (closed loops).
    pub(crate) clients: usize,
    /// Commits per second.
    pub(crate) rps: f64,
    /// Latencies of a transaction (µs, sorted).
    pub(crate) lat: Vec<u32>,
    /// Transactions that failed.
    pub(crate) errors: u64,
}

/// The bytes each row carries: about one audit event line.
const ROW_BYTES: usize = 420;

/// Let the server settle after a load: `VACUUM (ANALYZE)` every database
/// and `CHECKPOINT` (the vacuuming and writing out of what the last phase
/// left, which autovacuum and the checkpointer would otherwise do during
/// the next one, on the same disk), then a second of quiet.
pub(crate) fn settle(rt: &tokio::runtime::Runtime, url: &str) -> Result<(), String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
    rt.block_on(async {
        let c = connect(&config).await?;
        let dbs = c
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate",
                &[],
            )
            .await
            .map_err(|e| format!("listing databases: {e}"))?;
        for row in dbs {
            let name: String = row.get(0);
            let mut each = config.clone();
            each.dbname(&name);
            connect(&each)
                .await?
                .batch_execute("VACUUM (ANALYZE)")
                .await
                .map_err(|e| format!("VACUUM of {name}: {e}"))?;
        }
        c.batch_execute("CHECKPOINT")
            .await
            .map_err(|e| format!("CHECKPOINT: {e}"))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    })
}

/// `clients` loops of insert-and-commit on database `url` (which gets the
/// table), `warmup` then `duration` measured.
pub(crate) fn insert_commit(
    rt: &tokio::runtime::Runtime,
    url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Raw, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let lat = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let last_done = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let setup = connect(&config).await?;
        setup
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS bench_raw \
                 (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)",
            )
            .await
            .map_err(|e| format!("creating the table: {e}"))?;
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients.max(1) {
            conns.push(connect(&config).await?);
        }
        let measure_start = Instant::now() + warmup;
        let end = measure_start + duration;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| {
                let (lat, errors, last_done) = (lat.clone(), errors.clone(), last_done.clone());
                tokio::spawn(async move {
                    let w = Window { measure_start, end };
                    w.run(c, &lat, &errors, &last_done).await
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok::<_, String>(())
    })?;
    let mut lat = std::mem::take(&mut *lock(&lat));
    lat.sort_unstable();
    let window = (last_done.load(Ordering::Relaxed) as f64 / 1e6).max(duration.as_secs_f64());
    Ok(Raw {
        clients,
        rps: lat.len() as f64 / window,
        lat,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// A connection whose driver runs on a task of its own.
async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// The measured window of one loop.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_start: Instant,
    end: Instant,
}

impl Window {
    /// Insert-and-commit on `c` until the window ends; record the measured ones.
    async fn run(
        self,
        mut c: tokio_postgres::Client,
        lat: &Mutex<Vec<u32>>,
        errors: &AtomicU64,
        last_done: &AtomicU64,
    ) {
        let body = "x".repeat(ROW_BYTES);
        let Ok(stmt) = c.prepare("INSERT INTO bench_raw (body) VALUES ($1)").await else {
            errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        loop {
            let began = Instant::now();
            if began >= self.end {
                return;
            }
            let ok = match c.transaction().await {
                Ok(tx) => match tx.execute(&stmt, &[&body]).await {
                    Ok(_) => tx.commit().await.is_ok(),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            let done = Instant::now();
            if began < self.measure_start {
                continue;
            }
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let us = done.duration_since(began).as_micros();
            lock(lat).push(u32::try_from(us).unwrap_or(u32::MAX));
            let since = done
                .saturating_duration_since(self.measure_start)
                .as_micros();
            last_done.fetch_max(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
}
