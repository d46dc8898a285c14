//! [`FsDisk`]: the real disk, a directory of the local file system.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FallocateFlags, FlockOperation};

use super::{Disk, DiskFile, check_name};

/// Bytes written per call when a file system cannot `fallocate` and space
/// is reserved by writing zeros instead.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// A directory on the local file system, locked for this process.
///
/// `sync_data` is `fdatasync`, `sync_dir` is `fsync` of the directory and
/// `allocate` is `fallocate` (falling back to writing zeros on file systems
/// that lack it). The directory is held under an exclusive `flock` for as
/// long as any clone of the `FsDisk` lives, so two processes can never
/// write the same WAL.
#[derive(Clone, Debug)]
pub struct FsDisk {
    dir: Arc<PathBuf>,
    /// The open directory: target of `fsync` and holder of the lock.
    handle: Arc<File>,
}

impl FsDisk {
    /// Opens `dir` (creating it, durably, if needed) and locks it for this
    /// process.
    ///
    /// # Errors
    /// The directory cannot be created or opened, or another process (or
    /// another `FsDisk` of this one) holds it: `WouldBlock`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<FsDisk> {
        let dir = dir.into();
        create_dir_durably(&dir)?;
        let handle = File::open(&dir)?;
        rustix::fs::flock(&handle, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another ringkv process (or another open WAL in this one); \
                         stop it first",
                        dir.display()
                    ),
                )
            } else {
                e
            }
        })?;
        Ok(FsDisk { dir: Arc::new(dir), handle: Arc::new(handle) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

impl Disk for FsDisk {
    type File = FsFile;

    fn create(&self, name: &str) -> io::Result<FsFile> {
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(self.path_of(name)?)?;
        Ok(FsFile { file })
    }

    fn open(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new().read(true).write(true).open(self.path_of(name)?)?;
        Ok(FsFile { file })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path_of(name)?)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path_of(from)?, self.path_of(to)?)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.dir.as_path())? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // Names that are not UTF-8 cannot be ours; leave them alone.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.handle.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Creates `dir` and any missing parents, fsyncing the parent of each
/// directory created so the new directory entries survive a crash too.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// A file of an [`FsDisk`].
#[derive(Debug)]
pub struct FsFile {
    file: File,
}

impl DiskFile for FsFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match rustix::fs::fallocate(&self.file, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                self.zero_fill(len)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl FsFile {
    /// Reserves space by writing zeros from the current end to `len`.
    fn zero_fill(&self, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
        let mut at = self.len()?;
        while at < len {
            let n = (len - at).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}
