//! The file layer under the log: every file operation the log makes goes
//! through [`LogFs`] and [`LogFile`], so that tests can run the store on a
//! double that loses what a power cut loses (`SimFs`) or fails at a chosen
//! operation (`FaultFs`) (both behind the `test-util` feature).
//!
//! [`StdFs`] is the real implementation on `std::fs`. Only the log (`log/`)
//! and the archive directory go through this layer; the lock file and the redb
//! index are always real files.

use std::fmt;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

/// A log segment open for appending.
#[allow(clippy::len_without_is_empty)] // a file's length is what the log needs; emptiness is `len() == 0`
pub trait LogFile: Send + fmt::Debug {
    /// Append all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: everything appended so far is on disk, with the file's size.
    fn sync_data(&mut self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// The file system operations of the log.
pub trait LogFs: Send + Sync + fmt::Debug + 'static {
    /// Create `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir` (`NotFound` if there is no `dir`).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Create a new, empty file for appending (`AlreadyExists` if it exists).
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Open an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Read into `buf` from `offset`; the count read, `0` at the end.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The file's length.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Cut the file to `len` bytes and sync it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Rename `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Give the file `from` the second name `to`: `AlreadyExists` if `to`
    /// exists, `CrossesDevices` if it is on another file system.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// `fsync` a directory: the names created, renamed or removed in it are on disk.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// [`LogFs`] on `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(std::fs::File);

impl LogFile for StdFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl LogFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Ok(name) = e?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile(f)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(StdFile(f)))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Create `dir` and any missing parents, and fsync the parent of each one
/// created, so that the new directories survive a power cut.
pub(crate) fn create_dir_durably(fs: &dyn LogFs, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    loop {
        match fs.list(d) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(d);
                match d.parent() {
                    Some(p) if !p.as_os_str().is_empty() => d = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(dir)?;
    for m in missing.iter().rev() {
        if let Some(parent) = m.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)?;
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "test-util"))]
mod sim;
#[cfg(any(test, feature = "test-util"))]
pub use sim::{FaultFs, SimFs};
