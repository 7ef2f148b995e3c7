//! Archive files: the JSON-lines files retention moves old events into, one
//! event per line exactly as stored, named by the range they hold, written
//! whole or not at all. Every store that archives into files shares these.

use std::path::{Path, PathBuf};

use super::{AuditEvent, StoreError};

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

/// The first step of recovering an archive directory after a crash, as the
/// stores that archive into files share it: remove half-written archive files
/// (`audit-*.jsonl.tmp`), then list the complete ones as `(path, file name,
/// first seq, last seq)` in chain order. Nothing when `dir` does not exist.
pub fn archives_to_recover(dir: &Path) -> Result<Vec<(PathBuf, String, u64, u64)>, StoreError> {
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
/// line): how a store recovering an archive cut short tells whether the file
/// ends with its own event.
pub fn last_event_in_archive(path: &Path) -> Result<Option<AuditEvent>, StoreError> {
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
