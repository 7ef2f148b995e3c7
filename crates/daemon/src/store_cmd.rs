//! `youops store copy --from STORE --to STORE`: copy a verified audit chain
//! into a new log store, or into an empty PostgreSQL database (moving from
//! one machine to a cluster).
//!
//! Both stores are named in the STORE syntax of [`crate::store`].
//!
//! # Copying
//!
//! The source is read in order, a page of events at a time
//! ([`AuditStore::events`]), and every event is checked with a
//! [`ChainVerifier`] before it is written: its hash over its own content, its
//! sequence number and its link to the one before. A source whose beginning
//! was archived (retention) starts after the archived records; it is accepted
//! when a checkpoint in it accounts for them, as `youops audit verify` accepts
//! it. The events go into the destination through [`LogStore::import`]
//! (which fdatasyncs each page) or `PgStore::import` (one transaction per
//! page, under the chain tip's lock), which keep their sequence numbers,
//! times and hashes (an append would number and hash them anew); the
//! destination derives request records and dedup claims from them as a
//! replay of its log does (a claim that expires holds until its event's time
//! plus the destination's dedup TTL, the default 7 days; one already expired
//! is not copied). So claims and records of requests whose `received`
//! event is in the copied chain come along; those whose `received` event was
//! archived in the source do not (the archive files stay where they are and
//! still verify in front of the copy: `youops audit verify` with `[store]
//! archive_dir`).
//!
//! The destination must be new: a path that does not exist, or an empty
//! directory; or a PostgreSQL database holding no events, live or archived
//! (its schema is created on open). Both stores are opened (the log stores
//! locked), so the daemon that uses the source must be stopped. At the end
//! the destination is verified (its whole chain) and its head must be the
//! source's.

use std::fmt;
use std::io::{IsTerminal as _, Write};
use std::path::Path;
use std::sync::Arc;

use clap::Subcommand;
use youops_core::audit::{AuditStore, ChainVerifier, StoreError, VerifyReport};
use youops_core::model::{AuditEvent, EventBody};
use youops_core::RequestId;
use youops_store::{LogOptions, LogStore};

use crate::cli::failure::{exit, Failure};
pub use crate::store::StoreLocation;

/// `youops store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy a store's verified audit chain into a new log store or an empty
    /// PostgreSQL database.
    ///
    /// Every event keeps its seq, time and hash; the copy is verified at the
    /// end. Stop the daemon that uses the source first. STORE is a log store
    /// directory (`PATH` or `log:PATH`), `sled:PATH` (builds with
    /// `--features sled`) or `postgres://…` (builds with the `postgres`
    /// feature, a default).
    Copy {
        /// The store to copy.
        #[arg(long, value_name = "STORE")]
        from: StoreLocation,
        /// The new store: a log store directory that does not exist or is
        /// empty, or `postgres://…`, a database that holds no events.
        #[arg(long, value_name = "STORE")]
        to: StoreLocation,
    },
}

/// `youops store ...`.
pub async fn run(cmd: &StoreCmd) -> Result<u8, Failure> {
    match cmd {
        StoreCmd::Copy { from, to } => {
            let mut progress = Progress::stderr();
            let summary = copy(from, to, &mut progress).await?;
            println!("{summary}");
            Ok(exit::OK)
        }
    }
}

/// Events read and imported at a time.
const PAGE: usize = 1000;

/// What [`copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopySummary {
    /// The source and the destination.
    pub from: String,
    /// The destination.
    pub to: String,
    /// Events copied.
    pub events: u64,
    /// The first event copied (1 unless the source archived its beginning).
    pub first_seq: u64,
    /// Head of both stores after the copy.
    pub head_seq: u64,
    /// Hash of the head.
    pub head_hash: String,
    /// The copied chain starts after archived records (`Some(first seq)`).
    pub starts_at_checkpoint: Option<u64>,
    /// Requests whose `received` event was copied (their records and claims came along).
    pub requests: u64,
    /// Dedup claims the copied `received` events carry.
    pub claims: u64,
    /// Events of requests whose `received` event is not in the copied chain
    /// (archived in the source): they derive no record in the destination.
    pub orphan_events: u64,
}

impl fmt::Display for CopySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.events == 0 {
            return write!(
                f,
                "{} holds no events: {} is an empty store",
                self.from, self.to
            );
        }
        writeln!(
            f,
            "copied {} events (#{}..=#{}) from {} to {}",
            self.events, self.first_seq, self.head_seq, self.from, self.to
        )?;
        write!(
            f,
            "the copy verifies; head #{} {} (the source's); {} requests, {} dedup claims",
            self.head_seq, self.head_hash, self.requests, self.claims
        )?;
        if let Some(start) = self.starts_at_checkpoint {
            write!(
                f,
                "\nthe source's chain starts at #{start}, after archived records (a checkpoint \
                 accounts for them): records and dedup claims of requests received before \
                 #{start} were not copied; their archive files verify in front of the copy"
            )?;
        }
        if self.orphan_events > 0 {
            write!(
                f,
                "\n{} events belong to requests received before the copied chain: they are \
                 copied, but derive no request record",
                self.orphan_events
            )?;
        }
        Ok(())
    }
}

/// Progress on stderr: a line rewritten in place on a terminal, else a line
/// every ~10 %.
#[derive(Debug)]
pub struct Progress<W: Write = std::io::Stderr> {
    out: W,
    tty: bool,
    /// The last tenth reported (not on a terminal).
    tenth: u64,
    shown: bool,
}

impl Progress {
    /// On stderr, rewritten in place if stderr is a terminal.
    pub fn stderr() -> Self {
        let out = std::io::stderr();
        let tty = out.is_terminal();
        Progress::new(out, tty)
    }
}

impl<W: Write> Progress<W> {
    /// Into `out`; `tty`: rewrite one line with `\r`.
    pub fn new(out: W, tty: bool) -> Self {
        Progress {
            out,
            tty,
            tenth: 0,
            shown: false,
        }
    }

    /// The writer.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn update(&mut self, done: u64, total: u64) {
        let total = total.max(done);
        if self.tty {
            let _ = write!(self.out, "\rcopied {done} of {total} events");
            let _ = self.out.flush();
            self.shown = true;
        } else {
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if tenth > self.tenth || (!self.shown && done > 0) {
                self.tenth = tenth;
                self.shown = true;
                let _ = writeln!(
                    self.out,
                    "copied {done} of {total} events ({}%)",
                    (done * 100).checked_div(total).unwrap_or(100)
                );
            }
        }
    }

    fn finish(&mut self) {
        if self.tty && self.shown {
            let _ = writeln!(self.out);
        }
    }
}

fn refused(msg: impl Into<String>) -> Failure {
    Failure::new(exit::REFUSED, msg)
}

fn failed(msg: impl Into<String>) -> Failure {
    Failure::new(exit::FAILED, msg)
}

fn store_failure(what: &str, at: &StoreLocation, e: StoreError) -> Failure {
    match e {
        StoreError::Locked(p) => Failure::new(
            exit::UNAVAILABLE,
            format!(
                "the audit store at {p} is locked by another process — stop `youops serve` \
                 before copying its store"
            ),
        ),
        other => failed(format!("{what} {at}: {other}")),
    }
}

/// Open an existing store to copy from.
async fn open_source(at: &StoreLocation) -> Result<Arc<dyn AuditStore>, Failure> {
    let opened = match at {
        StoreLocation::Postgres(url) => {
            crate::store::open_postgres(url, &youops_core::config::Config::default()).await
        }
        StoreLocation::Log(p) => {
            existing(at, p, "log", "log")?;
            LogStore::open(p, LogOptions::default()).map(|s| Arc::new(s) as Arc<dyn AuditStore>)
        }
        StoreLocation::Sled(p) => {
            existing(at, p, "db", "sled")?;
            open_sled(p)
        }
    };
    opened.map_err(|e| store_failure("cannot open", at, e))
}

/// Refuse a store directory without its `marker` file: nothing to copy.
fn existing(at: &StoreLocation, path: &Path, marker: &str, kind: &str) -> Result<(), Failure> {
    if path.join(marker).exists() {
        return Ok(());
    }
    Err(refused(format!(
        "{at}: no {kind} store there (no {})",
        path.join(marker).display()
    )))
}

#[cfg(feature = "sled")]
fn open_sled(path: &Path) -> Result<Arc<dyn AuditStore>, StoreError> {
    Ok(Arc::new(youops_store_sled::SledStore::open(path)?))
}

#[cfg(not(feature = "sled"))]
fn open_sled(path: &Path) -> Result<Arc<dyn AuditStore>, StoreError> {
    Err(StoreError::Io(format!(
        "sled:{}: this youops was built without sled: build it with `--features sled`",
        path.display()
    )))
}

/// Where the copy goes: the store and how it takes a page of events.
enum Destination {
    /// A new log store.
    Log(LogStore),
    /// An empty PostgreSQL store.
    #[cfg(feature = "postgres")]
    Postgres(youops_store_postgres::PgStore),
}

impl Destination {
    fn store(&self) -> &dyn AuditStore {
        match self {
            Destination::Log(s) => s,
            #[cfg(feature = "postgres")]
            Destination::Postgres(s) => s,
        }
    }

    /// Write a page of the chain, keeping seqs, times and hashes.
    async fn import(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        match self {
            Destination::Log(s) => s.import(events).await,
            #[cfg(feature = "postgres")]
            Destination::Postgres(s) => s.import(events).await,
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.store().flush().await
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.store().verify().await
    }

    async fn head(&self) -> Result<(u64, String), StoreError> {
        self.store().head().await
    }
}

/// What to do with an incomplete copy at `to` before trying again.
fn clean_up_hint(to: &StoreLocation) -> &'static str {
    match to {
        StoreLocation::Postgres(_) => "drop the database and create it again",
        _ => "remove it",
    }
}

/// The destination: a new log store (a path that does not exist, or an
/// empty directory), or a PostgreSQL store that holds no events.
async fn open_destination(at: &StoreLocation) -> Result<Destination, Failure> {
    match at {
        StoreLocation::Log(path) => open_log_destination(at, path).map(Destination::Log),
        StoreLocation::Postgres(url) => open_postgres_destination(at, url).await,
        StoreLocation::Sled(_) => Err(refused(format!(
            "{at}: a copy goes into a new log store (a directory path) or a PostgreSQL store \
             (postgres://…), not a sled store"
        ))),
    }
}

fn open_log_destination(at: &StoreLocation, path: &Path) -> Result<LogStore, Failure> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(refused(format!(
                    "{}: not empty; the destination must be a new store (a path that does not \
                     exist, or an empty directory)",
                    path.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(refused(format!("{}: not a directory", path.display())))
        }
        Err(e) => return Err(failed(format!("cannot read {}: {e}", path.display()))),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    LogStore::open(path, LogOptions::default()).map_err(|e| store_failure("cannot create", at, e))
}

/// Open the PostgreSQL store at `url` (creating its schema) and refuse it
/// unless it holds no events, live or archived.
#[cfg(feature = "postgres")]
async fn open_postgres_destination(
    at: &StoreLocation,
    url: &youops_core::config::StoreUrl,
) -> Result<Destination, Failure> {
    use youops_store_postgres::{PgOptions, PgStore};
    let store = PgStore::open(url.expose(), PgOptions::default())
        .await
        .map_err(|e| store_failure("cannot open", at, e))?;
    let read = |e| store_failure("cannot read", at, e);
    let (tip, _) = store.head().await.map_err(read)?;
    let live = store.events(0, 1).await.map_err(read)?;
    let archived = store.archived_events(0, 1).await.map_err(read)?;
    if tip > 0 || !live.is_empty() || !archived.is_empty() {
        return Err(refused(format!(
            "{at}: not empty (its chain ends at #{tip}); the destination must be a new store: a \
             PostgreSQL database that holds no events"
        )));
    }
    Ok(Destination::Postgres(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres_destination(
    at: &StoreLocation,
    _: &youops_core::config::StoreUrl,
) -> Result<Destination, Failure> {
    Err(failed(format!(
        "{at}: this youops was built without the `postgres` feature"
    )))
}

/// Whether two locations are the same directory.
fn same_place(a: &StoreLocation, b: &StoreLocation) -> bool {
    let path = |l: &StoreLocation| match l {
        StoreLocation::Log(p) | StoreLocation::Sled(p) => Some(p.clone()),
        StoreLocation::Postgres(_) => None,
    };
    if let (StoreLocation::Postgres(x), StoreLocation::Postgres(y)) = (a, b) {
        return x.expose() == y.expose();
    }
    let (Some(a), Some(b)) = (path(a), path(b)) else {
        return false;
    };
    a == b
        || matches!(
            (std::fs::canonicalize(&a), std::fs::canonicalize(&b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Copy the verified chain of `from` into the new store `to` (see the
/// [module](self) documentation), reporting progress to `progress`.
pub async fn copy<W: Write>(
    from: &StoreLocation,
    to: &StoreLocation,
    progress: &mut Progress<W>,
) -> Result<CopySummary, Failure> {
    if same_place(from, to) {
        return Err(refused(format!(
            "--from and --to are the same directory ({to})"
        )));
    }
    let source = open_source(from).await?;
    let dest = open_destination(to).await?;
    let incomplete = |why: String| {
        failed(format!(
            "{why}\nthe copy in {to} is incomplete: {} before trying again",
            clean_up_hint(to)
        ))
    };
    let (tip, tip_hash) = source
        .head()
        .await
        .map_err(|e| store_failure("cannot read", from, e))?;
    let first_seq = source
        .events(0, 1)
        .await
        .map_err(|e| store_failure("cannot read", from, e))?
        .first()
        .map_or(tip + 1, |e| e.seq);
    let total = (tip + 1).saturating_sub(first_seq);
    progress.update(0, total);
    let tally = copy_pages(
        source.as_ref(),
        &dest,
        from,
        to,
        total,
        progress,
        &incomplete,
    )
    .await?;
    let Tally {
        verifier,
        received,
        copied,
        claims,
        orphans,
    } = tally;
    progress.finish();
    let read = verifier.finish();
    if let Some(b) = &read.broken {
        return Err(incomplete(format!(
            "the chain of {from} does not verify: {b}"
        )));
    }
    if (read.head_seq, read.head_hash.as_str()) != (tip, tip_hash.as_str()) {
        return Err(incomplete(format!(
            "{from} changed while it was copied (its head was #{tip}, the copy ends at #{}): is \
             a daemon using it?",
            read.head_seq
        )));
    }
    check_copy(&dest, to, (tip, &tip_hash), copied, &incomplete).await?;
    drop(source);
    drop(dest);
    Ok(CopySummary {
        from: from.to_string(),
        to: to.to_string(),
        events: copied,
        first_seq,
        head_seq: tip,
        head_hash: tip_hash,
        starts_at_checkpoint: read.starts_at_checkpoint,
        requests: received.len() as u64,
        claims,
        orphan_events: orphans,
    })
}

/// What [`copy_pages`] saw: the chain so far, and what the summary counts.
#[derive(Default)]
struct Tally {
    verifier: ChainVerifier,
    /// Requests whose `Received` event was copied.
    received: std::collections::HashSet<RequestId>,
    copied: u64,
    claims: u64,
    orphans: u64,
}

/// Read `source` page by page, verify each page's chain, and import it into
/// `dest`; `incomplete` words a failure once something may have been written.
async fn copy_pages<W: Write>(
    source: &dyn AuditStore,
    dest: &Destination,
    from: &StoreLocation,
    to: &StoreLocation,
    total: u64,
    progress: &mut Progress<W>,
    incomplete: &dyn Fn(String) -> Failure,
) -> Result<Tally, Failure> {
    let mut t = Tally::default();
    let mut after = 0;
    loop {
        let page = source
            .events(after, PAGE)
            .await
            .map_err(|e| incomplete(format!("cannot read {from}: {e}")))?;
        let Some(last) = page.last() else {
            return Ok(t);
        };
        after = last.seq;
        for e in &page {
            if let Err(b) = t.verifier.check(e) {
                return Err(incomplete(format!(
                    "the chain of {from} is broken at {b}: nothing after record #{} was copied",
                    b.seq.saturating_sub(1)
                )));
            }
            match (&e.body, e.request_id) {
                (EventBody::Received { request }, Some(id)) => {
                    t.received.insert(id);
                    t.claims += u64::from(request.dedup_key.is_some());
                }
                (_, Some(id)) if !t.received.contains(&id) => t.orphans += 1,
                _ => {}
            }
        }
        let n = page.len() as u64;
        dest.import(page)
            .await
            .map_err(|e| incomplete(format!("cannot write to {to}: {e}")))?;
        t.copied += n;
        progress.update(t.copied, total);
    }
}

/// Flush the copy in `dest` and check it holds the source's chain: `copied`
/// events up to the source's head `(tip, tip_hash)`.
async fn check_copy(
    dest: &Destination,
    to: &StoreLocation,
    (tip, tip_hash): (u64, &str),
    copied: u64,
    incomplete: &dyn Fn(String) -> Failure,
) -> Result<(), Failure> {
    dest.flush()
        .await
        .map_err(|e| incomplete(format!("cannot flush {to}: {e}")))?;
    let check = dest
        .verify()
        .await
        .map_err(|e| incomplete(format!("cannot verify {to}: {e}")))?;
    let head = dest
        .head()
        .await
        .map_err(|e| incomplete(format!("cannot read {to}: {e}")))?;
    if let Some(b) = &check.broken {
        return Err(incomplete(format!("the copy does not verify: {b}")));
    }
    if head != (tip, tip_hash.to_string()) || check.head_seq != tip || check.checked != copied {
        return Err(incomplete(format!(
            "the copy ends at #{} {} ({} events checked), the source at #{tip} {tip_hash} \
             ({copied} copied)",
            head.0, head.1, check.checked
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_on_a_terminal_rewrites_one_line_and_elsewhere_prints_tenths() {
        let mut p = Progress::new(Vec::new(), true);
        for done in [0, 500, 1000] {
            p.update(done, 1000);
        }
        p.finish();
        let text = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(
            text,
            "\rcopied 0 of 1000 events\rcopied 500 of 1000 events\rcopied 1000 of 1000 events\n"
        );
        let mut p = Progress::new(Vec::new(), false);
        for done in (0..=100).map(|i| i * 10) {
            p.update(done, 1000);
        }
        p.finish();
        let text = String::from_utf8(p.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert_eq!(lines[0], "copied 10 of 1000 events (1%)");
        assert_eq!(lines[10], "copied 1000 of 1000 events (100%)");
    }
}
