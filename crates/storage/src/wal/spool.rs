//! [`SnapshotSpool`]: a shard's snapshot data in a file instead of memory.
//!
//! A snapshot of a shard is the whole MVCC state (about the size of the
//! store: 300 MB for a million keys of 256 B). Holding it in memory from one
//! snapshot to the next made a node's resident memory grow with its data,
//! where etcd's does not (it streams its backend file when a follower needs
//! it). The spool writes the data to a file of the WAL's [`Disk`] chunk by
//! chunk as the export is read, and reads it back only when a lagging
//! follower is sent a snapshot; resident memory stays about one chunk.
//!
//! The bytes read back are exactly `encode_to_vec(&chunks)` of the
//! `Vec<Bytes>` of chunks pushed (a varint count, then each chunk
//! length-prefixed), the snapshot data format of the node layer: the file
//! holds the length-prefixed chunks, the count is prepended on read.
//!
//! The file is scratch, never fsynced: a spool is removed when dropped, and
//! whatever a crash leaves is removed when the WAL next opens (names end in
//! [`SNAPSHOT_SPOOL_SUFFIX`]); after a restart the node exports its store
//! again.

use std::io;

use bytes::Bytes;
use ringkv_consensus::codec::put_varint;
use ringkv_consensus::{LogIndex, ShardId};

use crate::disk::{Disk, DiskFile};

/// Ending of spool file names; files with it are removed when the WAL opens.
pub const SNAPSHOT_SPOOL_SUFFIX: &str = ".snap.tmp";

/// Bytes of a varint prefix at most (a `u64` in LEB128).
const VARINT_BYTES_MAX: usize = 10;

/// One snapshot's data, being written or written, in a scratch file.
pub struct SnapshotSpool<D: Disk> {
    disk: D,
    name: String,
    file: D::File,
    /// Chunks pushed.
    chunks: u64,
    /// Bytes of the file: every pushed chunk with its length prefix.
    ///
    /// Invariant: the file's bytes `0..len` are the pushed chunks.
    len: u64,
}

impl<D: Disk> std::fmt::Debug for SnapshotSpool<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSpool")
            .field("name", &self.name)
            .field("chunks", &self.chunks)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<D: Disk> SnapshotSpool<D> {
    /// Creates an empty spool for `shard`'s snapshot at `index`; `seq`
    /// tells apart spools of the same snapshot (the caller counts).
    ///
    /// # Errors
    /// The file cannot be created (a full disk, or the name is taken).
    pub fn create(disk: &D, shard: ShardId, index: LogIndex, seq: u64) -> io::Result<Self> {
        let name = format!("snapshot-{}-{}-{seq}{SNAPSHOT_SPOOL_SUFFIX}", shard.0, index.0);
        let file = disk.create(&name)?;
        Ok(SnapshotSpool { disk: disk.clone(), name, file, chunks: 0, len: 0 })
    }

    /// Appends one chunk of the snapshot data.
    ///
    /// # Errors
    /// The write failed; the spool is then unusable (its tail is unknown).
    pub fn push(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut record = Vec::with_capacity(VARINT_BYTES_MAX + chunk.len());
        put_varint(&mut record, chunk.len() as u64);
        record.extend_from_slice(chunk);
        self.file.write_at(self.len, &record)?;
        self.len += record.len() as u64;
        self.chunks += 1;
        Ok(())
    }

    /// Chunks pushed so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Bytes the data takes when read back.
    pub fn data_bytes(&self) -> u64 {
        let mut prefix = Vec::with_capacity(VARINT_BYTES_MAX);
        put_varint(&mut prefix, self.chunks);
        prefix.len() as u64 + self.len
    }

    /// The snapshot data: what `encode_to_vec(&chunks)` of the pushed
    /// chunks would be. Allocates all of it; the caller drops it when sent.
    ///
    /// # Errors
    /// The read failed, or the file is shorter than what was written.
    pub fn read(&self) -> io::Result<Bytes> {
        let len = usize::try_from(self.len)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "spool larger than memory"))?;
        let mut data = Vec::with_capacity(VARINT_BYTES_MAX + len);
        put_varint(&mut data, self.chunks);
        let prefix = data.len();
        data.resize(prefix + len, 0);
        let n = self.file.read_at(0, &mut data[prefix..])?;
        if n < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {n} of {len} bytes", self.disk.describe(&self.name)),
            ));
        }
        Ok(Bytes::from(data))
    }
}

impl<D: Disk> Drop for SnapshotSpool<D> {
    fn drop(&mut self) {
        // Scratch: a failure leaves a file the next WAL open removes.
        let _ = self.disk.remove(&self.name);
    }
}
