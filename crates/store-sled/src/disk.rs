//! sled's database, and the `fdatasync`s that make its flushes durable.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use youops_core::audit::StoreError;

use crate::encoding::io;
use crate::state::lock;

/// sled's database and what makes its flushes durable.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub(crate) db: sled::Db,
    pub(crate) sync: Arc<DiskSync>,
}

impl Disk {
    /// `Db::flush`, then [`DiskSync::sync`]: everything applied before the
    /// call is on disk when this returns `Ok`.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        self.sync.sync()
    }
}

/// `fdatasync` of sled's files after its flush (see the crate documentation):
/// `db`, blob files not synced yet, and the directories whose entries changed.
#[derive(Debug)]
pub(crate) struct DiskSync {
    pub(crate) dir: PathBuf,
    /// sled's data file, opened again (read-only: `fdatasync` needs no write access).
    pub(crate) db: std::fs::File,
    pub(crate) seen: Mutex<Seen>,
    /// A sync failed: every later one fails too. Linux may drop the dirty
    /// pages of a failed `fdatasync` and report the next one as successful,
    /// so a retry could acknowledge what is not on disk.
    pub(crate) failed: Mutex<Option<String>>,
}

/// What the last sync covered.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Blob files synced (names in `blobs/`).
    pub(crate) blobs: HashSet<OsString>,
    /// The store directory's entries.
    pub(crate) entries: Vec<OsString>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The names in `dir` (none if it does not exist).
pub(crate) fn names_in(dir: &Path) -> std::io::Result<Vec<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl DiskSync {
    /// Sync what sled just created or opened: `conf` (written without a
    /// sync), `db`, `blobs/`, the store directory and its parent.
    pub(crate) fn open(dir: &Path) -> Result<DiskSync, StoreError> {
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            StoreError::Io(format!("{what} {}: {e}", p.display()))
        };
        let db_path = dir.join("db");
        let db = std::fs::File::open(&db_path).map_err(|e| fail("cannot open", &db_path, e))?;
        let conf = dir.join("conf");
        match std::fs::File::open(&conf) {
            Ok(f) => f.sync_all().map_err(|e| fail("fsync", &conf, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("cannot open", &conf, e)),
        }
        let s = DiskSync {
            dir: dir.to_path_buf(),
            db,
            seen: Mutex::new(Seen::default()),
            failed: Mutex::new(None),
        };
        // Nothing seen yet: syncs `db`, every blob, `blobs/` and the directory.
        s.sync()?;
        let blobs = dir.join("blobs");
        sync_dir(&blobs).map_err(|e| fail("fsync", &blobs, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| fail("fsync", parent, e))?;
        }
        Ok(s)
    }

    /// After `Db::flush`: `fdatasync` `db` and every blob file not synced yet,
    /// and `fsync` `blobs/` if it gained one and the store directory if its
    /// entries changed (a snapshot renamed into place).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        if let Some(why) = lock(&self.failed).clone() {
            return Err(StoreError::Io(format!(
                "an earlier fdatasync of the sled store failed ({why}); reopen the store"
            )));
        }
        let mut seen = lock(&self.seen);
        match self.sync_locked(&mut seen) {
            Ok(()) => Ok(()),
            Err(why) => {
                tracing::error!(error = %why, "audit store: fdatasync failed; durable appends and flushes fail until the store is reopened");
                *lock(&self.failed) = Some(why.clone());
                Err(StoreError::Io(why))
            }
        }
    }

    fn sync_locked(&self, seen: &mut Seen) -> Result<(), String> {
        let at = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
        self.db
            .sync_data()
            .map_err(|e| at("fdatasync", &self.dir.join("db"), e))?;
        let blobs = self.dir.join("blobs");
        let names = names_in(&blobs).map_err(|e| at("cannot list", &blobs, e))?;
        let mut added = false;
        for name in &names {
            if seen.blobs.contains(name) {
                continue;
            }
            let path = blobs.join(name);
            match std::fs::File::open(&path) {
                Ok(f) => f.sync_data().map_err(|e| at("fdatasync", &path, e))?,
                // Collected by sled meanwhile: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at("cannot open", &path, e)),
            }
            added = true;
        }
        if added {
            sync_dir(&blobs).map_err(|e| at("fsync", &blobs, e))?;
        }
        seen.blobs = names.into_iter().collect();
        let entries = names_in(&self.dir).map_err(|e| at("cannot list", &self.dir, e))?;
        if entries != seen.entries {
            sync_dir(&self.dir).map_err(|e| at("fsync", &self.dir, e))?;
            seen.entries = entries;
        }
        Ok(())
    }
}
