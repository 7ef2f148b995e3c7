//! [`Case::RetentionVerify`](super::Case::RetentionVerify): what every correct
//! backend's `archive(through, dir)` promises, whatever its cut.
//!
//! A backend may archive fewer events than asked (a log store moves whole
//! segments; a store may keep the events of requests in flight), into one
//! file or several, and may keep the events of a request in flight in the
//! store or move them to the archive. It must: report exactly what its files
//! hold, never past `through`; write every archived event once, in order, byte
//! for byte as `events` returned it; append a checkpoint that carries the last
//! archived hash; leave a live chain that `verify` reports as starting at the
//! checkpoint and that verifies behind its archives; keep every event of a
//! request in flight readable through `request_events`; remove the records of
//! finished requests whose events are all archived, and only those; continue
//! its first archive with the next; keep all that across a crash; and refuse
//! to archive into a directory of another store's archives.

use std::path::{Path, PathBuf};

use super::build::{notice, notice_on, received, request, to};
use super::support::{
    all_events, append_checked, check_chain, ensure, ensure_eq, events_of, expected_record, ids,
    verify_intact, Cx, Must, Step, Stop,
};
use crate::audit::{
    archive_files, parse_archive_file_name, verify_with_archives, AppendOptions, ArchiveReport,
    AuditStore,
};
use crate::model::{AuditEvent, EventBody, RequestFilter, RequestId, RequestRecord, State};

/// Events appended before the first archive.
const EVENTS: usize = 24;

/// How far the first archive is asked to go: short of the head, past the
/// first event of the request in flight (#9).
const FIRST_THROUGH: u64 = 20;

/// What the store must hold after an archive.
struct Expect {
    /// Every event appended so far, archived ones included, from #1.
    chain: Vec<AuditEvent>,
    /// The last archived event (0: none yet).
    through: u64,
    /// Every request appended.
    requests: Vec<RequestId>,
}

impl Expect {
    /// The events still in the store.
    fn live(&self) -> &[AuditEvent] {
        let from = usize::try_from(self.through).unwrap_or(usize::MAX);
        self.chain.get(from..).unwrap_or_default()
    }

    fn head(&self) -> (u64, String) {
        self.chain
            .last()
            .map_or((0, String::new()), |e| (e.seq, e.hash.clone()))
    }
}

/// A request whose record the store drops once the archives hold every
/// event through `through`: finished, and its last event archived.
fn removable(record: &Option<RequestRecord>, through: u64) -> bool {
    record
        .as_ref()
        .is_some_and(|r| r.state.is_terminal() && r.last_seq <= through)
}

pub(super) async fn retention_verify(cx: &mut Cx<'_>) -> Step {
    if !cx.caps.archive {
        return Err(Stop::Skip(
            "the backend does not archive (capability `archive`)".into(),
        ));
    }
    let mut site = cx.site().await?;
    let mut store = site.open().await.must("harness: open")?;
    let archive = tempfile::tempdir().must("a temporary archive directory")?;
    let dir = archive.path().join("archive");
    let (flight, mut x) = populate(&*store).await?;

    // Asked for #1..=#20 while `flight` (#9 on) is still running.
    let first = archive_checked(&*store, &dir, FIRST_THROUGH, &mut x).await?;
    check_view(&*store, &dir, &x).await?;
    ensure_eq!(
        store
            .archive(first.through_seq, &dir)
            .await
            .must("archive")?,
        None,
        "archive(through #{}) again, once #{}..=#{} are archived",
        first.through_seq,
        first.first_seq,
        first.through_seq
    );
    ensure_eq!(
        store.head().await.must("head")?,
        x.head(),
        "head after an archive with nothing to do"
    );
    match cx.crash_check() {
        Ok(()) => {
            store = cx.crash_and_reopen(&mut site, store).await?;
            check_view(&*store, &dir, &x).await?;
        }
        Err(why) => cx
            .notes
            .push(format!("retention after a crash not checked: {why}")),
    }

    // The request finishes; a second archive follows on, beside the first.
    let fin = append_checked(
        &*store,
        vec![to(flight, State::Succeeded)],
        AppendOptions::durable(),
    )
    .await?;
    x.chain.extend(fin);
    let kept = read_files(&archive_files(&dir).must("listing archives")?)?;
    archive_checked(&*store, &dir, u64::MAX, &mut x).await?;
    for (file, text) in &kept {
        ensure_eq!(
            &std::fs::read_to_string(file).must("reading an archive")?,
            text,
            "{} after the second archive (an archive file never changes)",
            file.display()
        );
    }
    check_view(&*store, &dir, &x).await?;
    another_store_refused(cx, &dir).await
}

/// Appends the case's events. `#1..=#8`: four finished requests; `#9`, `#10`:
/// one received and running (in flight); `#11..=#18`: four more finished;
/// `#19`: a notice of the one in flight; `#20..=#23`: two more finished;
/// `#24`: a global notice. The request in flight and what to expect.
async fn populate(store: &dyn AuditStore) -> Step<(RequestId, Expect)> {
    let done: Vec<_> = (0..4).map(|_| request("ops.old")).collect();
    for r in &done {
        append_checked(store, vec![received(r)], AppendOptions::durable()).await?;
        append_checked(
            store,
            vec![to(r.id, State::Succeeded)],
            AppendOptions::buffered(),
        )
        .await?;
    }
    let flight = request("ops.long");
    append_checked(
        store,
        vec![received(&flight), to(flight.id, State::Running)],
        AppendOptions::durable(),
    )
    .await?;
    let late: Vec<_> = (0..6).map(|_| request("ops.new")).collect();
    for (i, r) in late.iter().enumerate() {
        if i == 4 {
            let still = notice_on(flight.id, "still running");
            append_checked(store, vec![still], AppendOptions::durable()).await?;
        }
        append_checked(
            store,
            vec![received(r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await?;
    }
    let last = notice("before retention");
    append_checked(store, vec![last], AppendOptions::durable()).await?;
    let chain = all_events(store).await?;
    ensure_eq!(chain.len(), EVENTS, "events appended");
    let requests = done
        .iter()
        .chain([&flight])
        .chain(&late)
        .map(|r| r.id)
        .collect();
    let x = Expect {
        chain,
        through: 0,
        requests,
    };
    Ok((flight.id, x))
}

/// `store.archive(through, dir)`, which must archive something: its report,
/// the files it wrote (against what `events` returned before) and its
/// checkpoint. Records the checkpoint and the new archived seq in `x`.
async fn archive_checked(
    store: &dyn AuditStore,
    dir: &Path,
    through: u64,
    x: &mut Expect,
) -> Step<ArchiveReport> {
    let (head, _) = x.head();
    ensure_eq!(
        all_events(store).await?,
        x.live(),
        "live events before archiving"
    );
    let before = archive_files(dir).must("listing archives")?;
    let report = store
        .archive(through, dir)
        .await
        .must("archive")?
        .ok_or_else(|| {
            Stop::Fail(format!(
                "archive(through #{through}) archived nothing of #{}..=#{head} (a backend that \
                 archives coarsely, whole segments, needs a harness that makes them small)",
                x.through + 1
            ))
        })?;
    ensure_eq!(
        (report.first_seq, report.checkpoint_seq),
        (x.through + 1, head + 1),
        "archive report (first seq, checkpoint seq): it starts after what was archived \
         before, and its checkpoint is the one event it appends"
    );
    ensure!(
        report.first_seq <= report.through_seq && report.through_seq <= through.min(head),
        "archive report: archived #{}..=#{}, asked through #{through} with the head at #{head}",
        report.first_seq,
        report.through_seq
    );
    let last = &x.chain[usize::try_from(report.through_seq - 1).unwrap_or(usize::MAX)];
    ensure_eq!(
        report.last_hash,
        last.hash,
        "archive report: the last archived hash (of #{})",
        last.seq
    );
    let file = check_files(dir, &before, &report, &x.chain)?;
    let removed = x
        .requests
        .iter()
        .filter(|id| {
            let record = expected_record(&x.chain, **id);
            removable(&record, report.through_seq) && !removable(&record, x.through)
        })
        .count() as u64;
    ensure_eq!(
        report.records_removed,
        removed,
        "archive report: records removed (finished requests whose last event is archived now)"
    );
    let checkpoint = check_checkpoint(store, &report, &file, x).await?;
    x.chain.push(checkpoint);
    x.through = report.through_seq;
    Ok(report)
}

/// The archive files new since `before`: their names' ranges follow on from
/// each other and cover exactly the report's, each holds the events of its
/// range as `events` returned them (one JSON line each), their bytes add up
/// to the report's, and the report names the last. That file's name.
fn check_files(
    dir: &Path,
    before: &[PathBuf],
    report: &ArchiveReport,
    chain: &[AuditEvent],
) -> Step<String> {
    let files = archive_files(dir).must("listing archives")?;
    ensure!(
        files.starts_with(before),
        "the archive files were {before:?}, and after an archive they are {files:?}"
    );
    let new = &files[before.len()..];
    let names: Vec<String> = new
        .iter()
        .map(|f| f.file_name().and_then(|n| n.to_str()).unwrap_or("").into())
        .collect();
    let wrong = || {
        Stop::Fail(format!(
            "the files an archive of #{}..=#{} wrote, {names:?}, do not hold those events one \
             file after the other",
            report.first_seq, report.through_seq
        ))
    };
    let mut ranges = Vec::with_capacity(names.len());
    let mut next = report.first_seq;
    for name in &names {
        let (first, last) = parse_archive_file_name(name)
            .filter(|(first, last)| *first == next && last >= first)
            .ok_or_else(wrong)?;
        ranges.push((first, last));
        next = last + 1;
    }
    if ranges.is_empty() || next != report.through_seq + 1 {
        return Err(wrong());
    }
    ensure_eq!(
        new.last(),
        Some(&report.file),
        "archive report: the file (the last one written)"
    );
    let mut bytes = 0;
    for ((file, name), (first, last)) in new.iter().zip(&names).zip(ranges) {
        let text = std::fs::read_to_string(file).must("reading an archive file")?;
        let lines: Vec<String> = chain[(first - 1) as usize..last as usize]
            .iter()
            .map(|e| serde_json::to_string(e).map(|l| l + "\n"))
            .collect::<Result<_, _>>()
            .must("encoding events")?;
        ensure_eq!(
            text,
            lines.concat(),
            "archive file {name} (one JSON line per event, in order, as `events` read them)"
        );
        bytes += text.len() as u64;
    }
    ensure_eq!(report.bytes, bytes, "archive report: bytes of the files");
    Ok(names.last().cloned().unwrap_or_default())
}

/// The live events after an archive: those it did not archive, then its
/// checkpoint, which carries the last archived seq and hash and the name of
/// the last archive file. The checkpoint.
async fn check_checkpoint(
    store: &dyn AuditStore,
    report: &ArchiveReport,
    file: &str,
    x: &Expect,
) -> Step<AuditEvent> {
    let live = all_events(store).await?;
    let (kept, checkpoint) = match live.split_last() {
        Some((c, kept)) => (kept, c.clone()),
        None => return Err(Stop::Fail("no live events after an archive".into())),
    };
    let from = usize::try_from(report.through_seq).unwrap_or(usize::MAX);
    ensure_eq!(
        kept,
        x.chain.get(from..).unwrap_or_default(),
        "live events after archiving #{}..=#{} (the checkpoint aside)",
        report.first_seq,
        report.through_seq
    );
    let body = EventBody::Checkpoint {
        archived_through_seq: report.through_seq,
        archived_last_hash: report.last_hash.clone(),
        archive: file.to_string(),
    };
    ensure_eq!(
        (checkpoint.seq, &checkpoint.request_id, &checkpoint.body),
        (report.checkpoint_seq, &None, &body),
        "the checkpoint event"
    );
    check_chain(&live, report.through_seq + 1, &report.last_hash)?;
    Ok(checkpoint)
}

/// What readers see after an archive: the live chain, which `verify` reports
/// as starting at the checkpoint and which verifies behind the archives;
/// records, events of requests, the active set and the listing.
async fn check_view(store: &dyn AuditStore, dir: &Path, x: &Expect) -> Step {
    let live = x.live();
    ensure_eq!(
        all_events(store).await?,
        live,
        "live events, archived through #{}",
        x.through
    );
    let head = x.head();
    ensure_eq!(
        store.head().await.must("head")?,
        head,
        "head after archiving"
    );
    verify_intact(store, live.len() as u64, &head, Some(x.through + 1)).await?;
    let files = archive_files(dir).must("listing archives")?;
    let v = verify_with_archives(store, &files)
        .await
        .must("verify_with_archives")?;
    ensure!(
        v.report.ok(),
        "archives + store do not verify: {:?} (in {:?})",
        v.report.broken,
        v.broken_in
    );
    ensure_eq!(
        (v.archived, v.overlap, v.report.checked, v.report.head_seq),
        (x.through, 0, head.0, head.0),
        "verify_with_archives (archived, overlap, checked, head seq)"
    );
    check_records(store, x).await
}

/// Records of finished requests archived whole are gone; the others are as
/// folded. A request in flight has every event readable; a finished one at
/// least its live events (its archived ones, from the archive or not at all).
async fn check_records(store: &dyn AuditStore, x: &Expect) -> Step {
    let mut kept = Vec::new();
    for id in &x.requests {
        let want = expected_record(&x.chain, *id);
        let got = store.request(*id).await.must("request")?;
        if removable(&want, x.through) {
            ensure_eq!(
                got,
                None,
                "record of request {id} (finished, archived whole)"
            );
            continue;
        }
        ensure_eq!(got, want, "record of request {id}");
        let all = events_of(&x.chain, *id);
        let seqs = |events: &[AuditEvent]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        let read = store.request_events(*id).await.must("request_events")?;
        if want.as_ref().is_some_and(|r| r.state.is_terminal()) {
            let live = all.iter().filter(|e| e.seq > x.through).count();
            ensure!(
                read.len() >= live && all.ends_with(&read),
                "events of finished request {id}: #{:?}, not its last ones of #{:?} with at \
                 least those after #{}",
                seqs(&read),
                seqs(&all),
                x.through
            );
        } else {
            ensure_eq!(
                read,
                all,
                "events of request {id}, in flight (from the store or the archive)"
            );
        }
        kept.extend(want);
    }
    let mut active: Vec<RequestRecord> = kept
        .iter()
        .filter(|r| !r.state.is_terminal())
        .cloned()
        .collect();
    active.sort_by_key(|r| r.request.id);
    ensure_eq!(
        store.active_requests().await.must("active_requests")?,
        active,
        "active requests after archiving"
    );
    kept.sort_by_key(|r| std::cmp::Reverse(r.request.id));
    let listed = store
        .list_requests(&RequestFilter::default(), None, 100)
        .await
        .must("list_requests")?;
    ensure_eq!(
        ids(&listed),
        ids(&kept),
        "requests listed after archiving (newest id first)"
    );
    ensure_eq!(listed, kept, "records listed after archiving");
    Ok(())
}

/// The text of each file.
fn read_files(files: &[PathBuf]) -> Step<Vec<(PathBuf, String)>> {
    files
        .iter()
        .map(|f| Ok((f.clone(), std::fs::read_to_string(f)?)))
        .collect::<std::io::Result<_>>()
        .must("reading the archives")
}

/// A new store beside the archive directory never touches the archives: it
/// refuses to archive there, and removes nothing.
async fn another_store_refused(cx: &Cx<'_>, dir: &Path) -> Step {
    let files = archive_files(dir).must("listing archives")?;
    let texts = read_files(&files)?;
    let mut other_site = cx.site().await?;
    let other = other_site
        .open()
        .await
        .must("harness: open a second store")?;
    for _ in 0..12 {
        let r = request("ops.other");
        append_checked(
            &*other,
            vec![received(&r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await?;
    }
    let res = other.archive(u64::MAX, dir).await;
    ensure!(
        res.is_err(),
        "another store archived into a directory holding this store's archives: {res:?}"
    );
    ensure_eq!(
        archive_files(dir).must("listing archives")?,
        files,
        "archive files after the other store's attempt"
    );
    for (f, t) in &texts {
        ensure_eq!(
            &std::fs::read_to_string(f).must("reading an archive")?,
            t,
            "{} after the other store's attempt",
            f.display()
        );
    }
    ensure_eq!(
        other
            .events(0, 1)
            .await
            .must("events")?
            .first()
            .map(|e| e.seq),
        Some(1),
        "first event of the other store (nothing removed)"
    );
    Ok(())
}
