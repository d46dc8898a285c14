//! Disk access: the [`Disk`] trait, the real [`FsDisk`] and the simulated [`SimDisk`].
//!
//! Everything the WAL (and later the snapshot store) does to a disk goes
//! through [`Disk`]: a flat directory of named files, each read and written
//! at explicit offsets. That is all a log-structured store needs, and it is
//! small enough to be modelled exactly in memory, so the simulator runs the
//! real WAL code against [`SimDisk`]'s crashes, torn writes and I/O errors.
//!
//! # Durability contract
//!
//! Every implementation promises what POSIX promises on Linux, and no more:
//!
//! - [`DiskFile::write_at`], [`DiskFile::set_len`] and
//!   [`DiskFile::allocate`] change what reads see at once, but survive a
//!   crash only after a successful [`DiskFile::sync_data`] (fdatasync) of
//!   that file. Before it, a crash may keep none, all, or a prefix of them,
//!   the last one possibly torn (a prefix of its bytes written).
//! - [`Disk::create`], [`Disk::rename`] and [`Disk::remove`] change the
//!   directory at once, but survive a crash only after a successful
//!   [`Disk::sync_dir`] (fsync of the directory). Before it, a crash may keep
//!   a prefix of them.
//! - A failed `sync_data` guarantees nothing about the writes it covered, and
//!   a later successful `sync_data` does not make them durable either (Linux
//!   marks the pages clean after reporting the error once). Callers must
//!   treat the file as lost: the WAL poisons itself.
//! - A rename onto an existing name replaces it atomically.
//!
//! File names are plain names inside the disk's directory: non-empty, no
//! `/`, not `.` or `..`. Files are opened for reading and writing.

mod fs;
mod sim;

use std::io;

pub use fs::{FsDisk, FsFile};
pub use sim::{CrashMode, FaultKind, FaultOp, FaultRates, SimDisk, SimDiskStats, SimFile};

/// A directory of files with explicit durability points.
///
/// Cloning a `Disk` gives another handle to the same directory.
pub trait Disk: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// An open file.
    type File: DiskFile;

    /// Creates a new, empty file.
    ///
    /// # Errors
    /// `AlreadyExists` if the name is taken; `InvalidInput` for a bad name;
    /// any I/O error.
    fn create(&self, name: &str) -> io::Result<Self::File>;

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// `NotFound` if there is no such file; `InvalidInput` for a bad name.
    fn open(&self, name: &str) -> io::Result<Self::File>;

    /// Removes a file. Open handles keep working until dropped.
    ///
    /// # Errors
    /// `NotFound` if there is no such file; any I/O error.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    ///
    /// # Errors
    /// `NotFound` if `from` does not exist; any I/O error.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// The names of all files, sorted.
    ///
    /// # Errors
    /// Any I/O error reading the directory.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Makes every earlier create, rename and remove durable (fsync of the
    /// directory).
    ///
    /// # Errors
    /// Any I/O error; the directory changes are then of unknown durability.
    fn sync_dir(&self) -> io::Result<()>;

    /// How to name `name` in messages to operators (a full path for a real
    /// disk).
    fn describe(&self, name: &str) -> String;
}

/// An open file of a [`Disk`]. All methods take `&self`: a file may be read
/// by many threads while one writes.
pub trait DiskFile: std::fmt::Debug + Send + Sync + 'static {
    /// Reads up to `buf.len()` bytes at `offset`, returning how many were
    /// read: fewer only when the file ends first.
    ///
    /// # Errors
    /// Any I/O error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, growing the file if needed.
    ///
    /// # Errors
    /// Any I/O error, including `StorageFull`; part of `data` may have been
    /// written.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every earlier write, `set_len` and `allocate` of this file
    /// durable (fdatasync).
    ///
    /// # Errors
    /// Any I/O error; see the module docs for what a failure means.
    fn sync_data(&self) -> io::Result<()>;

    /// The file's length in bytes.
    ///
    /// # Errors
    /// Any I/O error.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    ///
    /// # Errors
    /// Any I/O error.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes.
    ///
    /// # Errors
    /// Any I/O error.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reserves disk space for bytes `0..len`, extending the file with zeros
    /// if it is shorter, so that later writes in that range need no new
    /// space and no file-size update.
    ///
    /// # Errors
    /// `StorageFull` if the space is not available; any I/O error.
    fn allocate(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `len` bytes at `offset`, or fewer if the file ends.
    ///
    /// # Errors
    /// Any I/O error.
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        let n = self.read_at(offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// Checks that `name` is a plain file name inside the directory.
pub(crate) fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

/// Whether an I/O error means the device (or a quota) is full: `ENOSPC`, `EDQUOT`.
pub fn is_no_space(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}
