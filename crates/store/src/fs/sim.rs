//! Test doubles of the file layer.
//!
//! [`SimFs`] keeps every file in memory, with what a power cut would leave of
//! it: the bytes covered by a completed `sync_data` and the names covered by a
//! completed `sync_dir`. [`SimFs::power_cut`] returns the file system as it
//! comes back after the cut (unsynced bytes dropped, the last unsynced write
//! torn at a random byte) and kills the old one, so a store still running on
//! it fails every later operation instead of acknowledging anything more. It
//! can also fail a sync with `EIO` (and then, as Linux may, forget the unsynced
//! bytes: a later sync that succeeds writes zeros in their place) or a write
//! with `ENOSPC`, and counts syncs.
//!
//! [`FaultFs`] wraps another [`LogFs`] and fails every changing operation from
//! the n-th on, like a process that died there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{LogFile, LogFs};

fn eio(what: &str) -> io::Error {
    let e = io::Error::from_raw_os_error(libc::EIO);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[derive(Debug, Default, Clone)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Where the last append started.
    last_write: usize,
    /// Bytes a failed sync dropped from the page cache: a later sync that
    /// succeeds writes zeros there.
    lost: Vec<Range<usize>>,
}

impl Inode {
    fn sync(&mut self) {
        let mut durable = self.data.clone();
        for r in &self.lost {
            let end = r.end.min(durable.len());
            if r.start < end {
                durable[r.start..end].fill(0);
            }
        }
        self.durable = durable;
        self.last_write = self.data.len();
    }

    /// What is left after a power cut: the durable bytes and, if the file was
    /// only appended to since, a random number of the unsynced ones: none,
    /// every earlier write whole and the last torn, or torn anywhere.
    fn after_cut(&self, rng: &mut Rng) -> Vec<u8> {
        if !self.data.starts_with(&self.durable) {
            return self.durable.clone();
        }
        let unsynced = &self.data[self.durable.len()..];
        let k = match rng.below(3) {
            // Nothing of it reached the disk.
            0 => 0,
            // Every earlier write did, the last one torn.
            1 => {
                let whole = self.last_write.max(self.durable.len()) - self.durable.len();
                whole + rng.below(unsynced.len() - whole + 1)
            }
            // Torn anywhere.
            _ => rng.below(unsynced.len() + 1),
        };
        let mut out = self.durable.clone();
        out.extend_from_slice(&unsynced[..k]);
        out
    }
}

/// splitmix64: reproducible from a seed, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

#[derive(Debug)]
struct State {
    dead: bool,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    rng: Rng,
    sync_delay: Duration,
    /// Fail the sync with this number (counting from 1).
    fail_sync: Option<u64>,
    /// Most bytes all files may hold.
    capacity: Option<u64>,
    /// `link` fails with `EXDEV`, as across file systems.
    no_links: bool,
    syncs: u64,
    dir_syncs: u64,
}

/// An in-memory [`LogFs`] that models power cuts (see the module docs).
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimFs")
            .field("files", &s.names.len())
            .field("dead", &s.dead)
            .field("syncs", &s.syncs)
            .finish()
    }
}

impl SimFs {
    /// An empty file system; `seed` drives where power cuts tear writes.
    pub fn new(seed: u64) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(State {
                dead: false,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                inodes: HashMap::new(),
                next_inode: 1,
                rng: Rng(seed),
                sync_delay: Duration::ZERO,
                fail_sync: None,
                capacity: None,
                no_links: false,
                syncs: 0,
                dir_syncs: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alive(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = self.lock();
        if s.dead {
            return Err(eio("the power is off"));
        }
        Ok(s)
    }

    /// Cut the power: this file system fails every operation from now on, and
    /// the one returned is what comes back (see the module docs).
    pub fn power_cut(&self) -> SimFs {
        let mut s = self.lock();
        s.dead = true;
        let mut rng = Rng(s.rng.next());
        let names = s.durable_names.clone();
        let mut inodes = HashMap::new();
        for id in names.values() {
            if inodes.contains_key(id) {
                continue;
            }
            if let Some(inode) = s.inodes.get(id) {
                let data = inode.after_cut(&mut rng);
                inodes.insert(
                    *id,
                    Inode {
                        durable: data.clone(),
                        last_write: data.len(),
                        data,
                        lost: Vec::new(),
                    },
                );
            }
        }
        SimFs {
            state: Arc::new(Mutex::new(State {
                dead: false,
                durable_names: names.clone(),
                names,
                dirs: s.dirs.clone(),
                inodes,
                next_inode: s.next_inode,
                rng,
                sync_delay: s.sync_delay,
                fail_sync: None,
                capacity: None,
                no_links: s.no_links,
                syncs: 0,
                dir_syncs: 0,
            })),
        }
    }

    /// Make every `sync_data` take this long (as a disk would), so that
    /// appends queue up behind it.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    /// Fail the `n`-th `sync_data` from now (`1`: the next one) with `EIO`.
    pub fn fail_sync(&self, n: u64) {
        let mut s = self.lock();
        s.fail_sync = Some(s.syncs + n.max(1));
    }

    /// Let the files hold at most `extra` bytes more than they do now: the
    /// write that goes over writes what fits and fails with `ENOSPC`.
    pub fn fill_disk_after(&self, extra: u64) {
        let mut s = self.lock();
        let used = used(&s);
        s.capacity = Some(used + extra);
    }

    /// Lift the limit [`fill_disk_after`](Self::fill_disk_after) set.
    pub fn free_disk(&self) {
        self.lock().capacity = None;
    }

    /// Make `link` fail with `EXDEV`, as between two file systems.
    pub fn refuse_links(&self) {
        self.lock().no_links = true;
    }

    /// `sync_data` calls so far (failed ones included).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// `sync_dir` calls so far.
    pub fn dir_syncs(&self) -> u64 {
        self.lock().dir_syncs
    }

    /// The bytes of `path` that a power cut now would leave for sure (`None`:
    /// the name itself would not survive).
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let id = s.durable_names.get(path)?;
        s.inodes.get(id).map(|i| i.durable.clone())
    }

    /// The current bytes of `path`.
    pub fn bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let id = s.names.get(path)?;
        s.inodes.get(id).map(|i| i.data.clone())
    }

    /// Every file name, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }
}

fn used(s: &State) -> u64 {
    let ids: BTreeSet<u64> = s.names.values().copied().collect();
    ids.iter()
        .filter_map(|id| s.inodes.get(id))
        .map(|i| i.data.len() as u64)
        .sum()
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: u64,
}

impl LogFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.alive()?;
        let room = match s.capacity {
            Some(cap) => usize::try_from(cap.saturating_sub(used(&s))).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        inode.last_write = inode.data.len();
        if buf.len() > room {
            inode.data.extend_from_slice(&buf[..room]);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        inode.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let delay = self.fs.alive()?.sync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut s = self.fs.alive()?;
        s.syncs += 1;
        let fail = s.fail_sync == Some(s.syncs);
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if fail {
            // The unsynced pages are marked clean though not written.
            let from = inode.durable.len().min(inode.data.len());
            inode.lost.push(from..inode.data.len());
            return Err(eio("fdatasync"));
        }
        inode.sync();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.fs.alive()?;
        s.inodes
            .get(&self.inode)
            .map(|i| i.data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl LogFs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.alive()?;
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.alive()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut s = self.alive()?;
        if s.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if !path.parent().is_some_and(|d| s.dirs.contains(d)) {
            return Err(not_found(path));
        }
        let id = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(id, Inode::default());
        s.names.insert(path.to_path_buf(), id);
        drop(s);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let s = self.alive()?;
        let id = *s.names.get(path).ok_or_else(|| not_found(path))?;
        drop(s);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: id,
        }))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.alive()?;
        let id = s.names.get(path).ok_or_else(|| not_found(path))?;
        let data = &s.inodes[id].data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.alive()?;
        let id = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes[id].data.clone())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let s = self.alive()?;
        let id = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes[id].data.len() as u64)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.alive()?;
        let id = *s.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = s.inodes.get_mut(&id).expect("named inodes exist");
        inode
            .data
            .truncate(usize::try_from(len).unwrap_or(usize::MAX));
        inode.sync();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.alive()?;
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.alive()?;
        if s.no_links {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let id = *s.names.get(from).ok_or_else(|| not_found(from))?;
        if s.names.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if !to.parent().is_some_and(|d| s.dirs.contains(d)) {
            return Err(not_found(to));
        }
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.alive()?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.alive()?;
        s.dir_syncs += 1;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable_names.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_names.extend(now);
        Ok(())
    }
}

/// A [`LogFs`] that fails every changing operation (create, append, sync,
/// truncate, rename, link, remove, directory sync) from the `n`-th on, as if
/// the process had died there; reads still work.
#[derive(Debug, Clone)]
pub struct FaultFs {
    inner: Arc<dyn LogFs>,
    counts: Arc<FaultCounts>,
}

#[derive(Debug)]
struct FaultCounts {
    ops: AtomicU64,
    fail_from: AtomicU64,
}

impl FaultCounts {
    fn op(&self, what: &str) -> io::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_from.load(Ordering::SeqCst) {
            return Err(eio(&format!("injected failure of operation #{n} ({what})")));
        }
        Ok(())
    }
}

impl FaultFs {
    /// Wrap `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn LogFs>) -> Self {
        FaultFs {
            inner,
            counts: Arc::new(FaultCounts {
                ops: AtomicU64::new(0),
                fail_from: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// Changing operations so far.
    pub fn ops(&self) -> u64 {
        self.counts.ops.load(Ordering::SeqCst)
    }

    /// Fail the operation `n` from now (`0`: the next one) and every later one.
    pub fn fail_after(&self, n: u64) {
        let now = self.ops();
        self.counts.fail_from.store(now + n, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn LogFile>,
    counts: Arc<FaultCounts>,
}

impl LogFile for FaultFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.counts.op("append")?;
        self.inner.append(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.counts.op("sync_data")?;
        self.inner.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl LogFs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.counts.op("create_dir_all")?;
        self.inner.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        self.counts.op("create")?;
        Ok(Box::new(FaultFile {
            inner: self.inner.create(path)?,
            counts: self.counts.clone(),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(FaultFile {
            inner: self.inner.open_append(path)?,
            counts: self.counts.clone(),
        }))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(path, offset, buf)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        self.inner.len(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.counts.op("truncate")?;
        self.inner.truncate(path, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.counts.op("rename")?;
        self.inner.rename(from, to)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.counts.op("link")?;
        self.inner.link(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.counts.op("remove")?;
        self.inner.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.counts.op("sync_dir")?;
        self.inner.sync_dir(dir)
    }
}
