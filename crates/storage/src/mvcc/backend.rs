//! redb on a [`Disk`]: the store's database file as one [`DiskFile`].
//!
//! redb reaches its file only through [`redb::StorageBackend`] (length,
//! positioned reads and writes, `set_len`, `sync_data`), which maps one to
//! one onto [`DiskFile`]. Running the store on the node's [`Disk`] means a
//! [`crate::SimDisk`] crash hits the state machine exactly as it hits the
//! WAL: whatever was not fdatasynced may be lost or torn, and redb's
//! recovery (checksummed commit slots, quick-repair on durable commits)
//! must bring the store back to a durable checkpoint. The store's
//! durability contract (`super`'s module docs) then holds on simulated and
//! real disks alike.

use std::io;
use std::sync::Arc;

use crate::disk::DiskFile;

/// A redb storage backend over one file of a [`crate::Disk`].
#[derive(Debug)]
pub(crate) struct DiskBackend<F: DiskFile> {
    file: Arc<F>,
}

impl<F: DiskFile> DiskBackend<F> {
    pub(crate) fn new(file: Arc<F>) -> DiskBackend<F> {
        DiskBackend { file }
    }
}

impl<F: DiskFile> redb::StorageBackend for DiskBackend<F> {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        // `read_at` returns less only at the end of the file; redb never
        // reads past the length it set, so a short read means the file lost
        // bytes redb relies on.
        let n = self.file.read_at(offset, out)?;
        if n < out.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {} bytes at {offset} found only {n}", out.len()),
            ));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_at(offset, data)
    }
}
