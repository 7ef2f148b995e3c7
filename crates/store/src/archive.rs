//! Retention: sealed segments move whole into the archive directory.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use youops_core::audit::{
    archive_file_name, archive_files, parse_archive_file_name, AppendOptions, ArchiveReport,
    AuditStore, StoreError,
};
use youops_core::model::{EventBody, NewEvent, RequestId};

use crate::format::check_line;
use crate::index::Intent;
use crate::log::{corrupt, io_err};
use crate::state::{lock, Shared};
use crate::LogStore;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("archive task: {e}")))?
}

/// [`AuditStore::archive`] of the log store.
pub(crate) async fn archive(
    store: &LogStore,
    through_seq: u64,
    dir: &Path,
) -> Result<Option<ArchiveReport>, StoreError> {
    let inner = &store.inner;
    let _one = inner.archiving.lock().await;
    inner.shared.poisoned()?;
    let shared = inner.shared.clone();
    blocking(move || repair(&shared)).await?;
    // Everything indexed: the records of the archived requests are all in
    // the index when they are removed below.
    store.flush().await?;
    let (tip, _) = store.head().await?;
    let mut through = through_seq.min(tip);
    if through == tip && tip > 0 {
        // A checkpoint at the tip stays: archiving it would only append another.
        let last = inner.shared.events(tip - 1, 1)?;
        if last
            .first()
            .is_some_and(|e| matches!(e.body, EventBody::Checkpoint { .. }))
        {
            through = tip - 1;
        }
    }
    store.seal(through).await?;
    let dir = std::path::absolute(dir)
        .map_err(|e| io_err(format!("bad archive directory {}", dir.display()), e))?;
    let shared = inner.shared.clone();
    let Some(intent) = blocking(move || plan(&shared, through, &dir)).await? else {
        return Ok(None);
    };
    // 1. The intent, durable: from here a crash is finished by the next open.
    inner.shared.index.begin_archive(&intent)?;
    {
        let mut segs = lock(&inner.shared.segs);
        for (first, last) in &intent.segments {
            segs.archived.insert(*first, (*last, intent.dir.clone()));
        }
    }
    // 2. The checkpoint, durable, in the chain.
    let (first, _) = intent.segments[0];
    let (last_first, through) = *intent.segments.last().expect("a plan has segments");
    let name = archive_file_name(last_first, through);
    let checkpoint = store
        .append(
            vec![NewEvent::global(EventBody::Checkpoint {
                archived_through_seq: through,
                archived_last_hash: intent.last_hash.clone(),
                archive: name.clone(),
            })],
            AppendOptions::durable(),
        )
        .await?;
    // 3. The segments move, then the index forgets them.
    let shared = inner.shared.clone();
    let moving = intent.clone();
    let (bytes, records_removed) = blocking(move || finish(&shared, &moving)).await?;
    let mut report = blank_report();
    report.file = intent.dir.join(name);
    report.first_seq = first;
    report.through_seq = through;
    report.last_hash = intent.last_hash;
    report.checkpoint_seq = checkpoint.first().map_or(0, |e| e.seq);
    report.bytes = bytes;
    report.records_removed = records_removed;
    Ok(Some(report))
}

/// An [`ArchiveReport`] to fill in (it is `#[non_exhaustive]`).
fn blank_report() -> ArchiveReport {
    serde_json::from_value(serde_json::json!({
        "file": "", "first_seq": 0, "through_seq": 0, "last_hash": "",
        "checkpoint_seq": 0, "bytes": 0, "records_removed": 0,
    }))
    .expect("the blank archive report decodes")
}

/// Which sealed segments go: every one whose last event is at or before
/// `through`, oldest first. Refuses a directory that holds other archives
/// of these events.
fn plan(shared: &Shared, through: u64, dir: &Path) -> Result<Option<Intent>, StoreError> {
    let segments: Vec<(u64, u64)> = lock(&shared.segs)
        .live
        .iter()
        .map_while(|(first, last)| last.filter(|l| *l <= through).map(|l| (*first, l)))
        .collect();
    let Some((last_first, last)) = segments.last().copied() else {
        return Ok(None);
    };
    let fs = &*shared.fs;
    let last_path = shared.log_dir.join(archive_file_name(last_first, last));
    let len = fs
        .len(&last_path)
        .map_err(|e| io_err(format!("cannot read {}", last_path.display()), e))?;
    let line = read_last_line(shared, &last_path, len)?;
    let last_hash = check_line(&line)
        .map_err(|r| {
            corrupt(format!(
                "record #{last} ({}, last line) {r}: not archiving",
                last_path.display()
            ))
        })?
        .hash
        .to_string();
    crate::fs::create_dir_durably(fs, dir)
        .map_err(|e| io_err(format!("cannot create {}", dir.display()), e))?;
    // Archives of other records here (say, of another store) are never
    // touched, nor mixed with these.
    let mine: BTreeSet<String> = segments
        .iter()
        .map(|(f, l)| archive_file_name(*f, *l))
        .collect();
    let (first, _) = segments[0];
    let listed = archive_files(dir)
        .map_err(|e| io_err(format!("cannot list archives in {}", dir.display()), e))?;
    for path in listed {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some((a, b)) = parse_archive_file_name(name) else {
            continue;
        };
        if mine.contains(name) || b < first || a > last {
            continue;
        }
        return Err(corrupt(format!(
            "{} holds records #{a}..=#{b}, which this store is archiving as other files: not \
             archiving into a directory of another store's archives (nothing was changed)",
            path.display()
        )));
    }
    // A file of the same name must be this very segment (an earlier move cut
    // short): checked now, before anything is recorded.
    for (f, l) in &segments {
        let name = archive_file_name(*f, *l);
        let (src, dst) = (shared.log_dir.join(&name), dir.join(&name));
        if stat(shared, &dst)?.is_some() && !same_bytes(shared, &src, &dst)? {
            return Err(corrupt(format!(
                "{} exists and differs from the log's segment {name}: not archiving into a \
                 directory of another store's archives (nothing was changed)",
                dst.display()
            )));
        }
    }
    Ok(Some(Intent {
        segments,
        dir: dir.to_path_buf(),
        last_hash,
    }))
}

fn read_last_line(shared: &Shared, path: &Path, len: u64) -> Result<Vec<u8>, StoreError> {
    let fs = &*shared.fs;
    let mut want = 4096u64;
    loop {
        let from = len.saturating_sub(want);
        let mut buf = vec![0u8; usize::try_from(len - from).unwrap_or(usize::MAX)];
        let n = fs
            .read_at(path, from, &mut buf)
            .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
        buf.truncate(n);
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match body.iter().rposition(|b| *b == b'\n') {
            Some(nl) => return Ok(body[nl + 1..].to_vec()),
            None if from == 0 => return Ok(body.to_vec()),
            None => want *= 4,
        }
    }
}

/// Move the intent's segments (those not moved yet), then drop the positions
/// of their events and the records of finished requests whose events are all
/// archived, and the intent. The bytes moved and the records removed.
pub(crate) fn finish(shared: &Shared, intent: &Intent) -> Result<(u64, u64), StoreError> {
    let through = intent.through();
    let mut bytes = 0;
    for (first, last) in &intent.segments {
        let name = archive_file_name(*first, *last);
        bytes += move_segment(
            shared,
            *first,
            &shared.log_dir.join(&name),
            &intent.dir.join(&name),
        )?;
    }
    // The requests with events in the archived segments.
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        request_id: Option<RequestId>,
    }
    let mut touched = BTreeSet::new();
    for (first, last) in &intent.segments {
        let path = intent.dir.join(archive_file_name(*first, *last));
        let text = shared
            .fs
            .read(&path)
            .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(Head {
                request_id: Some(id),
            }) = serde_json::from_slice(line)
            {
                touched.insert(id);
            }
        }
    }
    let mut remove = Vec::new();
    for id in touched {
        if lock(&shared.mem).records.contains_key(&id) {
            continue;
        }
        if let Some(e) = shared.index.entry(id)? {
            if e.state.is_terminal() && e.last_seq() <= through {
                remove.push(id);
            }
        }
    }
    shared.index.end_archive(through, &remove)?;
    Ok((bytes, remove.len() as u64))
}

fn stat(shared: &Shared, path: &Path) -> Result<Option<u64>, StoreError> {
    match shared.fs.len(path) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("cannot stat {}", path.display()), e)),
    }
}

fn same_bytes(shared: &Shared, a: &Path, b: &Path) -> Result<bool, StoreError> {
    let read = |p: &Path| {
        shared
            .fs
            .read(p)
            .map_err(|e| io_err(format!("cannot read {}", p.display()), e))
    };
    Ok(read(a)? == read(b)?)
}

/// Whether `link` failed because a hard link cannot be made there (another
/// file system, or one without hard links): then the segment is copied.
fn cannot_link(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
    ) || matches!(
        e.kind(),
        io::ErrorKind::CrossesDevices | io::ErrorKind::Unsupported
    )
}

/// Move one sealed segment from the log to the archive directory without ever
/// replacing a file there: a hard link and an unlink (a rename that cannot
/// overwrite), or across file systems a copy (to a temporary name, fsynced,
/// renamed), each step followed by an fsync of the directory it changed. A
/// crash between the steps leaves the segment in both places; the next try
/// checks they are the same bytes and removes the log's copy.
fn move_segment(shared: &Shared, first: u64, src: &Path, dst: &Path) -> Result<u64, StoreError> {
    let fs = &*shared.fs;
    let dir = dst.parent().unwrap_or(Path::new("."));
    let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let size = match (stat(shared, src)?, stat(shared, dst)?) {
        (None, Some(n)) => {
            lock(&shared.segs).live.remove(&first);
            return Ok(n);
        }
        (None, None) => {
            return Err(corrupt(format!(
                "segment {name} is neither in {} nor in {}",
                shared.log_dir.display(),
                dir.display()
            )))
        }
        (Some(n), Some(m)) => {
            let same = n == m
                && fs
                    .read(src)
                    .map_err(|e| io_err(format!("cannot read {}", src.display()), e))?
                    == fs
                        .read(dst)
                        .map_err(|e| io_err(format!("cannot read {}", dst.display()), e))?;
            if !same {
                return Err(corrupt(format!(
                    "{} exists and differs from the log's segment {name}: not archiving \
                     (nothing was changed)",
                    dst.display()
                )));
            }
            n
        }
        (Some(n), None) => {
            match fs.link(src, dst) {
                Ok(()) => {}
                Err(e) if cannot_link(&e) => copy(shared, src, dst)?,
                Err(e) => {
                    return Err(io_err(
                        format!("cannot link {} to {}", src.display(), dst.display()),
                        e,
                    ))
                }
            }
            fs.sync_dir(dir)
                .map_err(|e| io_err(format!("fsync {}", dir.display()), e))?;
            n
        }
    };
    {
        // Readers find the segment in the archive once it is gone from the log.
        let mut segs = lock(&shared.segs);
        fs.remove(src)
            .map_err(|e| io_err(format!("cannot remove {}", src.display()), e))?;
        segs.live.remove(&first);
    }
    fs.sync_dir(&shared.log_dir)
        .map_err(|e| io_err(format!("fsync {}", shared.log_dir.display()), e))?;
    Ok(size)
}

fn copy(shared: &Shared, src: &Path, dst: &Path) -> Result<(), StoreError> {
    let fs = &*shared.fs;
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let err = |what: &str, p: &Path, e: io::Error| io_err(format!("{what} {}", p.display()), e);
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot remove", &tmp, e)),
    }
    let mut out = fs.create(&tmp).map_err(|e| err("cannot create", &tmp, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = fs
            .read_at(src, at, &mut buf)
            .map_err(|e| err("cannot read", src, e))?;
        if n == 0 {
            break;
        }
        out.append(&buf[..n])
            .map_err(|e| err("cannot write", &tmp, e))?;
        at += n as u64;
    }
    out.sync_data().map_err(|e| err("fsync", &tmp, e))?;
    drop(out);
    fs.rename(&tmp, dst)
        .map_err(|e| err("cannot rename", &tmp, e))
}

/// Finish or forget an archive a crash (or an error) cut short. With its
/// checkpoint in the chain it happened: finish moving its segments. Without,
/// it never did (nothing moves before the checkpoint is durable): forget it.
pub(crate) fn repair(shared: &Shared) -> Result<(), StoreError> {
    let Some(intent) = shared.index.intent()? else {
        return Ok(());
    };
    let through = intent.through();
    let (last_first, _) = *intent
        .segments
        .last()
        .ok_or_else(|| corrupt("an archive intent without segments".into()))?;
    let name = archive_file_name(last_first, through);
    if has_checkpoint(shared, through, &name)? {
        let (_, removed) = finish(shared, &intent)?;
        tracing::warn!(
            through,
            dir = %intent.dir.display(),
            records_removed = removed,
            "audit retention: finished an archive cut short (its checkpoint is in the chain)"
        );
    } else {
        shared.index.abandon_archive(&intent)?;
        let mut segs = lock(&shared.segs);
        for (first, _) in &intent.segments {
            segs.archived.remove(first);
        }
        tracing::warn!(
            through,
            "audit retention: forgot an archive cut short before its checkpoint (its segments \
             stay in the log)"
        );
    }
    Ok(())
}

/// Whether the live chain after `through` has the checkpoint of archive `name`.
fn has_checkpoint(shared: &Shared, through: u64, name: &str) -> Result<bool, StoreError> {
    let mut after = through;
    loop {
        let batch = shared.events(after, 1000)?;
        let Some(last) = batch.last() else {
            return Ok(false);
        };
        after = last.seq;
        if batch.iter().any(|e| {
            matches!(
                &e.body,
                EventBody::Checkpoint { archived_through_seq, archive, .. }
                    if *archived_through_seq == through && archive == name
            )
        }) {
            return Ok(true);
        }
    }
}

impl LogStore {
    /// Seal the open segment if all of it is at or before `through`.
    pub(crate) async fn seal(&self, through: u64) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(crate::writer::Msg::Seal { through, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_link_that_cannot_be_made_means_a_copy() {
        assert!(cannot_link(&io::Error::from_raw_os_error(libc::EXDEV)));
        assert!(!cannot_link(&io::Error::from_raw_os_error(libc::ENOSPC)));
    }

    #[test]
    fn the_blank_report_decodes() {
        assert_eq!(blank_report().checkpoint_seq, 0);
    }
}
