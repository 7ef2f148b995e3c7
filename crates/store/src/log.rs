//! Segments of the log: their names, recovery on open, and reading them back.

use std::io;
use std::path::{Path, PathBuf};

use youops_core::audit::{archive_file_name, parse_archive_file_name, StoreError, GENESIS_HASH};
use youops_core::model::AuditEvent;

use crate::format::{check_line, lines};
use crate::fs::LogFs;

/// The log's directory under the store directory.
pub(crate) const LOG_DIR: &str = "log";
/// Written into the log directory when appending failed: the segment and its
/// last durable length (see [`crate::LogStore`]'s documentation).
pub(crate) const POISON_MARKER: &str = "POISONED";

pub(crate) fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt(msg)
}

pub(crate) fn io_err(what: impl std::fmt::Display, e: io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

/// The name of the open segment starting at `first`.
pub(crate) fn open_name(first: u64) -> String {
    format!("open-{first:012}.jsonl")
}

fn parse_open_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("open-")?.strip_suffix(".jsonl")?;
    (digits.len() >= 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A segment: events `first..=last`, or `first..` for the open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg {
    pub first: u64,
    /// `None`: the open segment.
    pub last: Option<u64>,
}

impl Seg {
    pub(crate) fn name(&self) -> String {
        match self.last {
            Some(last) => archive_file_name(self.first, last),
            None => open_name(self.first),
        }
    }
}

/// The log as recovery left it.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Live segments in chain order; only the last may be open.
    pub segments: Vec<Seg>,
    pub tip_seq: u64,
    pub tip_hash: String,
    /// Length of the open segment (`0` when there is none).
    pub open_len: u64,
}

impl Recovered {
    /// The first live sequence number.
    pub(crate) fn live_start(&self) -> u64 {
        self.segments.first().map_or(self.tip_seq + 1, |s| s.first)
    }
}

/// How much of the log to check on open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check {
    /// Every line of every segment; else only the first and last lines of
    /// sealed segments the index already holds.
    pub full: bool,
    /// Events up to this one were durable (the index holds them): never cut.
    pub durable: u64,
}

/// Undo what a failed sync or write may have left: cut the segment the
/// marker names back to its last durable length, then remove the marker.
fn clear_poison(fs: &dyn LogFs, dir: &Path) -> Result<(), StoreError> {
    // A marker that was never renamed into place was never written whole.
    let tmp = dir.join(format!("{POISON_MARKER}.tmp"));
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("cannot remove {}", tmp.display()), e)),
    }
    let marker = dir.join(POISON_MARKER);
    let text = match fs.read(&marker) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("cannot read {}", marker.display()), e)),
    };
    let parsed = text.split_once(' ').and_then(|(name, len)| {
        let name = name.trim();
        let ok = !name.contains('/') && parse_open_name(name).is_some();
        Some((name.to_string(), len.trim().parse::<u64>().ok()?)).filter(|_| ok)
    });
    let Some((name, durable)) = parsed else {
        return Err(corrupt(format!(
            "{} does not name a segment and its durable length ({text:?}): remove it once the log \
             is checked",
            marker.display()
        )));
    };
    let path = dir.join(&name);
    match fs.len(&path) {
        Ok(len) if len > durable => {
            fs.truncate(&path, durable)
                .map_err(|e| io_err(format!("cannot cut {}", path.display()), e))?;
            tracing::warn!(
                file = %path.display(),
                durable,
                dropped = len - durable,
                "audit log: cut what was appended after the last good sync (appending had failed)"
            );
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("cannot stat {}", path.display()), e)),
    }
    fs.remove(&marker)
        .map_err(|e| io_err(format!("cannot remove {}", marker.display()), e))?;
    fs.sync_dir(dir)
        .map_err(|e| io_err(format!("cannot sync {}", dir.display()), e))?;
    Ok(())
}

/// The live segments in `dir`, checked for gaps and order.
pub(crate) fn list_segments(fs: &dyn LogFs, dir: &Path) -> Result<Vec<Seg>, StoreError> {
    let names = fs
        .list(dir)
        .map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
    let mut segs: Vec<Seg> = names
        .iter()
        .filter_map(|n| match parse_archive_file_name(n) {
            Some((first, last)) => Some(Seg {
                first,
                last: Some(last),
            }),
            None => parse_open_name(n).map(|first| Seg { first, last: None }),
        })
        .collect();
    segs.sort_by_key(|s| (s.first, s.last.is_none()));
    for (i, s) in segs.iter().enumerate() {
        if s.last.is_some_and(|l| l < s.first) {
            return Err(corrupt(format!(
                "{}/{} names an empty range",
                dir.display(),
                s.name()
            )));
        }
        if s.last.is_none() && i + 1 != segs.len() {
            return Err(corrupt(format!(
                "{}/{} is open but {} follows it: the log's segments are out of order",
                dir.display(),
                s.name(),
                segs[i + 1].name()
            )));
        }
        if let Some(prev) = i.checked_sub(1).map(|j| segs[j]) {
            let want = prev.last.map_or(u64::MAX, |l| l + 1);
            if s.first != want {
                return Err(corrupt(format!(
                    "{}/{} follows {}: records are {} between them",
                    dir.display(),
                    s.name(),
                    prev.name(),
                    if s.first > want { "missing" } else { "twice" }
                )));
            }
        }
    }
    Ok(segs)
}

/// Open the log in `dir`: check it, and cut a torn tail off the newest segment.
///
/// Only the newest segment can end in bytes that were never synced. There,
/// the first line that does not check (or an incomplete last line) starts the
/// tail that is cut, provided nothing after it is an event and it holds no
/// event the index proves durable. Anything else that does not check is
/// damage, and the log is not opened.
pub(crate) fn recover(fs: &dyn LogFs, dir: &Path, check: Check) -> Result<Recovered, StoreError> {
    crate::fs::create_dir_durably(fs, dir)
        .map_err(|e| io_err(format!("cannot create {}", dir.display()), e))?;
    clear_poison(fs, dir)?;
    let segs = list_segments(fs, dir)?;
    let mut chain = Chain {
        prev_hash: None,
        next: segs.first().map_or(1, |s| s.first),
    };
    if chain.next == 1 {
        chain.prev_hash = Some(GENESIS_HASH.to_string());
    }
    let mut cut = None;
    let mut open_len = 0;
    for (i, seg) in segs.iter().enumerate() {
        let newest = i + 1 == segs.len();
        let path = dir.join(seg.name());
        let whole = check.full || newest || seg.last.is_none_or(|l| l > check.durable);
        if whole {
            let bytes = fs
                .read(&path)
                .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
            // Sealed segments were synced before they were renamed: only
            // the open one can end in a torn write.
            let may_cut = newest && seg.last.is_none();
            let end = scan(&bytes, seg, may_cut, &mut chain)?;
            if end < bytes.len() {
                cut = Some((seg.name(), end as u64, bytes.len() as u64));
            }
            if seg.last.is_none() {
                open_len = end as u64;
            }
        } else {
            scan_ends(fs, &path, seg, &mut chain)?;
        }
    }
    let tip_seq = chain.next - 1;
    let Some(tip_hash) = chain.prev_hash else {
        return Err(corrupt(format!(
            "{} holds no event but starts at #{}: its first records are missing",
            dir.display(),
            chain.next
        )));
    };
    if tip_seq < check.durable {
        let at = cut
            .as_ref()
            .map(|(f, from, _)| format!(" ({f} from byte {from} does not check)"))
            .unwrap_or_default();
        return Err(corrupt(format!(
            "record #{}{at}: the log ends at #{tip_seq} but the index holds records through \
             #{} (they were durable): the log lost records; not opening (nothing was changed)",
            tip_seq + 1,
            check.durable
        )));
    }
    if let Some((name, from, to)) = &cut {
        let path = dir.join(name);
        fs.truncate(&path, *from)
            .map_err(|e| io_err(format!("cannot cut {}", path.display()), e))?;
        tracing::warn!(
            file = %path.display(),
            at = from,
            bytes = to - from,
            tip = tip_seq,
            "audit log: cut a torn tail (written but never synced)"
        );
    }
    Ok(Recovered {
        segments: segs,
        tip_seq,
        tip_hash,
        open_len,
    })
}

/// The chain so far while checking segments.
struct Chain {
    /// Hash of the last record (`None` before the first, if the live log
    /// starts after archived records).
    prev_hash: Option<String>,
    /// The sequence number the next record must have.
    next: u64,
}

impl Chain {
    fn link(&mut self, line: &[u8]) -> Result<(), String> {
        let info = check_line(line)?;
        if info.seq != self.next {
            return Err(format!(
                "has sequence number {} where {} was expected (a record is missing or out of place)",
                info.seq, self.next
            ));
        }
        if let Some(prev) = &self.prev_hash {
            if info.prev_hash != prev {
                return Err(format!(
                    "prev_hash {} does not match the previous record's hash {}",
                    &info.prev_hash[..12],
                    prev.get(..12).unwrap_or(prev)
                ));
            }
        }
        self.prev_hash = Some(info.hash.to_string());
        self.next += 1;
        Ok(())
    }
}

/// Whether any line in `rest` (the last one may lack its newline) is an event.
fn any_event_in(rest: &[u8]) -> bool {
    rest.split(|b| *b == b'\n').any(|l| check_line(l).is_ok())
}

/// Check every line of a segment; the length of the good part (the newest
/// segment may end in a torn tail, which the caller cuts).
fn scan(bytes: &[u8], seg: &Seg, may_cut: bool, chain: &mut Chain) -> Result<usize, StoreError> {
    let name = seg.name();
    let (ls, tail) = lines(bytes);
    for (i, (off, line)) in ls.iter().enumerate() {
        let seq = chain.next;
        if let Err(reason) = chain.link(line) {
            let rest = &bytes[off + line.len() + 1..];
            if may_cut && check_line(line).is_err() && !any_event_in(rest) {
                return Ok(*off);
            }
            let after = if any_event_in(rest) {
                ", and records follow it"
            } else {
                ""
            };
            return Err(corrupt(format!(
                "record #{seq} ({name}:{}) {reason}{after}: the log is damaged; not opening \
                 (nothing was changed)",
                i + 1
            )));
        }
    }
    if tail < bytes.len() {
        if may_cut {
            return Ok(tail);
        }
        return Err(corrupt(format!(
            "record #{} ({name}:{}) is incomplete in a sealed segment: the log is damaged; not \
             opening (nothing was changed)",
            chain.next,
            ls.len() + 1
        )));
    }
    if let Some(last) = seg.last {
        if chain.next != last + 1 {
            return Err(corrupt(format!(
                "record #{} ({name}:{}) is missing: the segment ends at #{}",
                chain.next,
                ls.len() + 1,
                chain.next - 1
            )));
        }
    }
    Ok(bytes.len())
}

/// Check a sealed segment by its first and last lines only.
fn scan_ends(fs: &dyn LogFs, path: &Path, seg: &Seg, chain: &mut Chain) -> Result<(), StoreError> {
    let name = seg.name();
    let last = seg.last.unwrap_or(seg.first);
    let read_err = |e| io_err(format!("cannot read {}", path.display()), e);
    let first_line = read_line_at(fs, path, 0).map_err(read_err)?;
    let Some(first_line) = first_line else {
        return Err(corrupt(format!(
            "record #{} ({name}:1) is missing or incomplete",
            seg.first
        )));
    };
    if let Err(reason) = chain.link(&first_line) {
        return Err(corrupt(format!(
            "record #{} ({name}:1) {reason}: the log is damaged; not opening (nothing was changed)",
            seg.first
        )));
    }
    let len = fs.len(path).map_err(read_err)?;
    let last_line = read_last_line(fs, path, len).map_err(read_err)?;
    let info = last_line.as_deref().map(check_line);
    match info {
        Some(Ok(info)) if info.seq == last => {
            chain.prev_hash = Some(info.hash.to_string());
            chain.next = last + 1;
            Ok(())
        }
        Some(Ok(info)) => Err(corrupt(format!(
            "record #{last} ({name}, last line) has sequence number {}: the log is damaged",
            info.seq
        ))),
        Some(Err(reason)) => Err(corrupt(format!(
            "record #{last} ({name}, last line) {reason}: the log is damaged; not opening \
             (nothing was changed)"
        ))),
        None => Err(corrupt(format!(
            "record #{last} ({name}, last line) is incomplete in a sealed segment: the log is \
             damaged; not opening (nothing was changed)"
        ))),
    }
}

/// The line starting at `offset` (without its newline); `None` if the file
/// ends before a newline.
pub(crate) fn read_line_at(
    fs: &dyn LogFs,
    path: &Path,
    offset: u64,
) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = fs.read_at(path, offset + out.len() as u64, &mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(nl) = chunk[..n].iter().position(|b| *b == b'\n') {
            out.extend_from_slice(&chunk[..nl]);
            return Ok(Some(out));
        }
        out.extend_from_slice(&chunk[..n]);
        if chunk.len() < 1 << 20 {
            chunk.resize(chunk.len() * 4, 0);
        }
    }
}

/// The last line of a file of `len` bytes (`None` unless it ends with a newline).
fn read_last_line(fs: &dyn LogFs, path: &Path, len: u64) -> io::Result<Option<Vec<u8>>> {
    let mut want = 4096u64;
    loop {
        let from = len.saturating_sub(want);
        let mut buf = vec![0u8; usize::try_from(len - from).unwrap_or(usize::MAX)];
        let n = fs.read_at(path, from, &mut buf)?;
        buf.truncate(n);
        if buf.last() != Some(&b'\n') {
            return Ok(None);
        }
        let body = &buf[..buf.len() - 1];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(nl) => return Ok(Some(body[nl + 1..].to_vec())),
            None if from == 0 => return Ok(Some(body.to_vec())),
            None => want *= 4,
        }
    }
}

/// Reads lines one after the other from an offset, in chunks.
#[derive(Debug)]
pub(crate) struct LineReader {
    path: PathBuf,
    /// File offset of `buf[0]`.
    offset: u64,
    buf: Vec<u8>,
    /// Don't read past this length.
    limit: u64,
    /// Bytes to read next.
    chunk: u64,
}

impl LineReader {
    pub(crate) fn new(path: PathBuf, offset: u64, limit: u64) -> Self {
        LineReader {
            path,
            offset,
            buf: Vec::new(),
            limit,
            chunk: 16 << 10,
        }
    }

    /// The offset of the next line.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The next complete line and its offset; `None` at the end (an
    /// incomplete last line is not returned).
    pub(crate) fn next_line(&mut self, fs: &dyn LogFs) -> io::Result<Option<(u64, Vec<u8>)>> {
        let mut searched = 0;
        loop {
            if let Some(nl) = self.buf[searched..].iter().position(|b| *b == b'\n') {
                let end = searched + nl;
                let line = self.buf[..end].to_vec();
                let at = self.offset;
                self.buf.drain(..=end);
                self.offset += end as u64 + 1;
                return Ok(Some((at, line)));
            }
            searched = self.buf.len();
            let from = self.offset + self.buf.len() as u64;
            if from >= self.limit {
                return Ok(None);
            }
            // Small reads first (`events(after, 1)` is common), larger as it goes.
            let want = usize::try_from((self.limit - from).min(self.chunk)).unwrap_or(16 << 10);
            self.chunk = (self.chunk * 2).min(1 << 20);
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let n = fs.read_at(&self.path, from, &mut self.buf[start..])?;
            self.buf.truncate(start + n);
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

/// Decode a stored line.
pub(crate) fn decode(
    name: &str,
    line_no: Option<usize>,
    line: &[u8],
) -> Result<AuditEvent, StoreError> {
    serde_json::from_slice(line).map_err(|e| {
        let at = line_no.map(|n| format!(":{n}")).unwrap_or_default();
        corrupt(format!("a record in {name}{at} does not decode: {e}"))
    })
}
