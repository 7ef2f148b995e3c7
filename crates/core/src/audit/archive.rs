//! Archive files: the JSON-lines files retention moves old events into, one
//! event per line exactly as stored, named by the range they hold, written
//! whole or not at all. Every store that archives into files shares these.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{AuditEvent, StoreError};
use crate::model::EventBody;

/// The name of the archive file of events `first..=through`: they sort in chain order.
pub fn archive_file_name(first: u64, through: u64) -> String {
    format!("audit-{first:012}-{through:012}.jsonl")
}

/// The range `(first, through)` an archive file's name says it holds.
pub fn parse_archive_file_name(name: &str) -> Option<(u64, u64)> {
    let (first, through) = name
        .strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .split_once('-')?;
    // `{:012}`: at least 12 digits, only digits.
    let seq = |s: &str| -> Option<u64> {
        (s.len() >= 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    Some((seq(first)?, seq(through)?))
}

/// The archive files in `dir`, in chain order (by first sequence number).
pub fn archive_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("audit-") && name.ends_with(".jsonl") {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files.sort();
    Ok(files)
}

/// The first step of [`recover_archives`]: remove half-written archive files
/// (`audit-*.jsonl.tmp`), then list the complete ones as `(path, file name,
/// first seq, last seq)` in chain order. Nothing when `dir` does not exist.
fn archives_to_recover(dir: &Path) -> Result<Vec<(PathBuf, String, u64, u64)>, StoreError> {
    let listed = |e: std::io::Error| {
        StoreError::Io(format!("cannot list archives in {}: {e}", dir.display()))
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e.map_err(listed)?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("audit-") && name.ends_with(".jsonl.tmp") {
                    std::fs::remove_file(&path).map_err(|e| {
                        StoreError::Io(format!("cannot remove {}: {e}", path.display()))
                    })?;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(listed(e)),
    }
    let mut out = Vec::new();
    for path in archive_files(dir).map_err(listed)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some((first, through)) = parse_archive_file_name(&name) {
            out.push((path, name, first, through));
        }
    }
    Ok(out)
}

/// The last event of a JSON-lines archive file (`None`: empty or unreadable last
/// line): how [`recover_archives`] tells whether the file ends with the
/// store's own event.
fn last_event_in_archive(path: &Path) -> Result<Option<AuditEvent>, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok()))
}

/// Write `events` (`first..=through`, in order) to a new archive file in `dir`,
/// one JSON line each: through a temporary file, fsynced, renamed, directory
/// fsynced, so the file is whole under its final name or absent. Returns the
/// file and the bytes written.
pub fn write_archive_file(
    dir: &Path,
    first: u64,
    through: u64,
    events: &[AuditEvent],
) -> Result<(PathBuf, u64), StoreError> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(archive_file_name(first, through));
    let tmp = path.with_extension("jsonl.tmp");
    let write = || -> Result<u64, StoreError> {
        let f = std::fs::File::create(&tmp)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", tmp.display())))?;
        let mut out = std::io::BufWriter::new(f);
        let mut bytes = 0u64;
        for ev in events {
            let line = serde_json::to_vec(ev)
                .map_err(|e| StoreError::Io(format!("cannot encode event #{}: {e}", ev.seq)))?;
            out.write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| StoreError::Io(format!("writing {}: {e}", tmp.display())))?;
            bytes += line.len() as u64 + 1;
        }
        let f = out
            .into_inner()
            .map_err(|e| StoreError::Io(format!("writing {}: {e}", tmp.display())))?;
        f.sync_all()
            .map_err(|e| StoreError::Io(format!("fsync {}: {e}", tmp.display())))?;
        Ok(bytes)
    };
    let bytes = match write() {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &path)
        .map_err(|e| StoreError::Io(format!("rename to {}: {e}", path.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((path, bytes))
}

/// Whether `body` is the checkpoint of archive file `archive`, which holds
/// the events through `through`: how a store answers
/// [`ArchiveRecovery::has_checkpoint`].
pub fn is_checkpoint_of(body: &EventBody, through: u64, archive: &str) -> bool {
    matches!(
        body,
        EventBody::Checkpoint { archived_through_seq, archive: name, .. }
            if *archived_through_seq == through && name == archive
    )
}

/// What [`recover_archives`] asks of a store that archives into files. A
/// store implements it on a private handle, not on the store itself, so
/// that finishing a move stays out of the store's public API.
#[async_trait]
pub trait ArchiveRecovery: Send + Sync {
    /// The seq of the first live event: one past the last archived event
    /// (`1` when nothing was archived).
    async fn live_start(&self) -> Result<u64, StoreError>;

    /// The hash of the store's live event #`seq`; `None` if it has none.
    async fn event_hash(&self, seq: u64) -> Result<Option<String>, StoreError>;

    /// Whether the store's chain holds the checkpoint of archive file
    /// `name`, which holds the events through `through` (see
    /// [`is_checkpoint_of`]).
    async fn has_checkpoint(&self, through: u64, name: &str) -> Result<bool, StoreError>;

    /// Finish an archive of events `first..=through` into file `name` that
    /// was cut short after its checkpoint: the last step of archiving, which
    /// takes the archived events out of the live chain and removes the
    /// records of finished requests archived whole. How many records went.
    async fn finish_move(&self, first: u64, through: u64, name: &str) -> Result<u64, StoreError>;
}

/// Finish or undo the archives in `dir` that a crash cut short, and refuse
/// an archive directory that does not agree with `store`: the rules of every
/// store that copies events into archive files (the log store moves whole
/// segments instead), so that they all behave alike. A store runs it before
/// it archives into `dir`.
///
/// Archiving writes the file, then appends the checkpoint, then removes the
/// archived events; an archive file whose events are still live was cut
/// short after the first or second step. Half-written files (`.jsonl.tmp`)
/// are removed. A complete file whose events were all archived already is
/// left alone. Any other must start at the live start and end with the
/// store's own event (its seq and hash), or it is not this store's archive
/// (say, a new store beside an old archive directory): recovery fails
/// ([`StoreError::Corrupt`]) and nothing is changed, the file is never
/// removed nor written over. With its checkpoint in the chain the archive
/// is committed: the move is finished ([`ArchiveRecovery::finish_move`]).
/// Without, it never happened: the file is removed (its events stay in the
/// store) and the directory fsynced.
pub async fn recover_archives<S>(dir: &Path, store: &S) -> Result<(), StoreError>
where
    S: ArchiveRecovery + ?Sized,
{
    let owned = dir.to_path_buf();
    for (path, name, first, through) in
        blocking("listing archives", move || archives_to_recover(&owned)).await?
    {
        let live_start = store.live_start().await?;
        if through < live_start {
            continue;
        }
        let disagree = |why: String| {
            StoreError::Corrupt(format!(
                "{} holds events #{first}..=#{through} but {why}: not archiving until the \
                 archive directory and the store agree (nothing was changed)",
                path.display()
            ))
        };
        if first != live_start {
            return Err(disagree(format!("the store starts at #{live_start}")));
        }
        let file = path.clone();
        let file_last =
            blocking("reading an archive", move || last_event_in_archive(&file)).await?;
        match (file_last, store.event_hash(through).await?) {
            (Some(a), Some(hash)) if a.seq == through && a.hash == hash => {}
            (_, Some(hash)) => {
                return Err(disagree(format!(
                    "its last record is not the store's #{through} (hash {})",
                    hash.get(..12).unwrap_or(&hash)
                )))
            }
            (_, None) => return Err(disagree(format!("the store has no record #{through}"))),
        }
        if store.has_checkpoint(through, &name).await? {
            let removed = store.finish_move(first, through, &name).await?;
            tracing::warn!(
                file = %path.display(),
                through,
                records_removed = removed,
                "audit retention: finished an archive cut short (its checkpoint is in the chain)"
            );
        } else {
            let (file, dir) = (path.clone(), dir.to_path_buf());
            blocking("removing an archive", move || remove_archive(&file, &dir)).await?;
            tracing::warn!(
                file = %path.display(),
                "audit retention: removed an archive cut short before its checkpoint \
                 (its events are still in the store)"
            );
        }
    }
    Ok(())
}

/// Remove archive file `path`, then fsync `dir`: the removal is durable
/// before the store goes on, so a crash cannot bring the file back beside a
/// later archive of the same events.
fn remove_archive(path: &Path, dir: &Path) -> Result<(), StoreError> {
    std::fs::remove_file(path)
        .map_err(|e| StoreError::Io(format!("cannot remove {}: {e}", path.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Run file work `f` off the async threads (`what`: for the error if the
/// task panics).
async fn blocking<T, F>(what: &str, f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("{what}: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::audit::GENESIS_HASH;

    /// A store reduced to what recovery asks of it: live events
    /// `live_start..` known by their hashes, and at most one checkpoint.
    #[derive(Debug, Default)]
    struct Fake {
        live_start: u64,
        hashes: BTreeMap<u64, String>,
        checkpoint: Option<(u64, String)>,
        /// The moves finished: `(first, through, name)`.
        finished: Mutex<Vec<(u64, u64, String)>>,
    }

    #[async_trait]
    impl ArchiveRecovery for Fake {
        async fn live_start(&self) -> Result<u64, StoreError> {
            Ok(self.live_start)
        }

        async fn event_hash(&self, seq: u64) -> Result<Option<String>, StoreError> {
            Ok(self.hashes.get(&seq).cloned())
        }

        async fn has_checkpoint(&self, through: u64, name: &str) -> Result<bool, StoreError> {
            Ok(self
                .checkpoint
                .as_ref()
                .is_some_and(|(t, n)| *t == through && n == name))
        }

        async fn finish_move(
            &self,
            first: u64,
            through: u64,
            name: &str,
        ) -> Result<u64, StoreError> {
            let mut finished = self.finished.lock().unwrap();
            finished.push((first, through, name.to_string()));
            Ok(1)
        }
    }

    /// The hash of event `seq` in these tests (any string does: recovery
    /// only compares them).
    fn hash(seq: u64) -> String {
        format!("{seq:x}").repeat(64)[..64].to_string()
    }

    /// A store whose live events are `live_start..=head`, with [`hash`]es.
    fn store(live_start: u64, head: u64) -> Fake {
        Fake {
            live_start,
            hashes: (live_start..=head).map(|s| (s, hash(s))).collect(),
            ..Fake::default()
        }
    }

    fn event(seq: u64, hash: String) -> AuditEvent {
        AuditEvent {
            seq,
            time: chrono::Utc::now(),
            request_id: None,
            body: EventBody::Notice {
                source: "test".into(),
                kind: "k".into(),
                message: format!("m{seq}"),
                data: serde_json::Value::Null,
            },
            prev_hash: GENESIS_HASH.into(),
            hash,
        }
    }

    /// The archive file of events `first..=through` (with [`hash`]es).
    fn archive(dir: &Path, first: u64, through: u64) -> PathBuf {
        let events: Vec<_> = (first..=through).map(|s| event(s, hash(s))).collect();
        write_archive_file(dir, first, through, &events).unwrap().0
    }

    /// The message of a refusal, which must be [`StoreError::Corrupt`].
    fn refusal(result: Result<(), StoreError>) -> String {
        match result {
            Err(StoreError::Corrupt(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn disagree(path: &Path, first: u64, through: u64, why: &str) -> String {
        format!(
            "{} holds events #{first}..=#{through} but {why}: not archiving until the archive \
             directory and the store agree (nothing was changed)",
            path.display()
        )
    }

    #[tokio::test]
    async fn archives_already_archived_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = [archive(dir.path(), 1, 3), archive(dir.path(), 4, 6)];
        // After them, one cut short before its checkpoint.
        let cut = archive(dir.path(), 7, 9);
        let store = store(7, 10);
        recover_archives(dir.path(), &store).await.unwrap();
        assert!(old.iter().all(|p| p.exists()), "archived files are kept");
        assert!(!cut.exists(), "the files after them are still recovered");
        assert!(store.finished.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_archive_not_at_the_live_start_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), 1, 5);
        // The store has #5 as the file has it, but starts at #3.
        let store = store(3, 6);
        let why = refusal(recover_archives(dir.path(), &store).await);
        assert_eq!(why, disagree(&path, 1, 5, "the store starts at #3"));
        assert!(path.exists());
    }

    #[tokio::test]
    async fn an_archive_not_ending_with_the_stores_event_is_refused() {
        // Another store's #3 (another hash); the store's hash at the wrong
        // seq; a last line that is not an event.
        let files: [(&str, Vec<AuditEvent>); 3] = [
            (
                "another hash",
                vec![event(1, hash(1)), event(3, "f".repeat(64))],
            ),
            ("another seq", vec![event(1, hash(1)), event(2, hash(3))]),
            ("torn", Vec::new()),
        ];
        for (case, events) in files {
            let dir = tempfile::tempdir().unwrap();
            let path = if events.is_empty() {
                let path = dir.path().join(archive_file_name(1, 3));
                std::fs::write(&path, b"{\"seq\":3,\n").unwrap();
                path
            } else {
                write_archive_file(dir.path(), 1, 3, &events).unwrap().0
            };
            let store = store(1, 4);
            let why = refusal(recover_archives(dir.path(), &store).await);
            let want = format!(
                "its last record is not the store's #3 (hash {})",
                &hash(3)[..12]
            );
            assert_eq!(why, disagree(&path, 1, 3, &want), "{case}");
            assert!(path.exists(), "{case}");
        }
    }

    #[tokio::test]
    async fn an_archive_of_events_the_store_lacks_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), 1, 3);
        let store = store(1, 2);
        let why = refusal(recover_archives(dir.path(), &store).await);
        assert_eq!(why, disagree(&path, 1, 3, "the store has no record #3"));
        assert!(path.exists());
    }

    #[tokio::test]
    async fn an_archive_with_its_checkpoint_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), 1, 3);
        let name = archive_file_name(1, 3);
        let store = Fake {
            checkpoint: Some((3, name.clone())),
            ..store(1, 4)
        };
        recover_archives(dir.path(), &store).await.unwrap();
        assert_eq!(*store.finished.lock().unwrap(), [(1, 3, name)]);
        assert!(path.exists(), "the archive is kept");
    }

    #[tokio::test]
    async fn an_archive_without_its_checkpoint_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), 1, 3);
        let half = dir.path().join(format!("{}.tmp", archive_file_name(4, 4)));
        std::fs::write(&half, b"").unwrap();
        // The checkpoint of another archive through #3 is not its own.
        let store = Fake {
            checkpoint: Some((3, archive_file_name(2, 3))),
            ..store(1, 4)
        };
        recover_archives(dir.path(), &store).await.unwrap();
        assert!(!path.exists(), "the archive is removed");
        assert!(!half.exists(), "the half-written file is removed");
        assert!(store.finished.lock().unwrap().is_empty());
    }
}
