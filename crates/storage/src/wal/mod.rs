//! The node's write-ahead log: one per node, shared by every shard on it.
//!
//! The WAL is the durability point of every shard hosted on a node: their
//! entries, hard states (votes), snapshot metadata and compactions. Each
//! shard's engine reads its durable log through a [`ShardLog`], which
//! implements [`ringkv_consensus::LogStorage`]. All disk access goes through
//! a [`crate::Disk`], so the simulator runs this exact code on a
//! [`crate::SimDisk`].
//!
//! # Group commit
//!
//! **Node loop (one thread).** For each shard with a Ready, the node buffers
//! what it asks to persist ([`Wal::append`], [`Wal::set_hard_state`],
//! [`Wal::install_snapshot`]; later [`Wal::compact`] and
//! [`Wal::remove_shard`]), then calls [`Wal::sync`] once: every shard's
//! records go out as **one batch, in one write and one fdatasync**. Each
//! buffering call returns the [`BatchSeq`] of the batch its records will be
//! written in; `sync` returns the highest durable one. The node keeps, per
//! shard, the `ReadyNumber` of each Ready with the batch holding it, and
//! after the sync calls `Replica::on_persisted` with the last Ready whose
//! batch is at or below the durable one. Records become visible through
//! [`ShardLog`] exactly when their batch is durable, never before.
//!
//! ```text
//!   append(s1) append(s2) set_hard_state(s1) ... ──▶ batch n (buffer)
//!   sync() ─▶ write(batch n) ─▶ fdatasync ─▶ apply to index ─▶ Ok(n)
//!                                        └─ error ─▶ poisoned (see below)
//! ```
//!
//! **Many threads ([`SharedWal`]).** Threads buffer records the same way and
//! block in [`SharedWal::wait_durable`]. The waiting threads elect a leader:
//! the first to find no write in progress takes the whole buffered batch,
//! writes and fdatasyncs it *without holding the lock*, applies it and wakes
//! everyone; records buffered meanwhile form the next batch, which the next
//! waiter to find the disk idle writes. One fdatasync thus covers every
//! record that arrived while the previous one ran.
//!
//! # On-disk format (version 1)
//!
//! The WAL is a directory of **segments** named `{id:016x}.wal` (ids
//! consecutive, oldest first). Integers are little-endian; CRCs are CRC32C
//! (Castagnoli).
//!
//! ```text
//! segment  := header batch* zeros
//! header   := magic "RINGKVWL" (8) | version u32 = 1 | crc u32 | segment id u64 | first batch seq u64
//!             crc covers magic, version, id and seq                                       (32 bytes)
//! batch    := magic "RKVB" (4) | crc u32 | seq u64 | body bytes u32 | record count u32   (24 bytes)
//!             crc covers seq, body bytes and count; the body (the records) follows
//! record   := crc u32 | payload length u32 | type u8 | shard u64 | payload               (17 + n bytes)
//!             crc covers length, type, shard and payload
//! ```
//!
//! | type | payload ([`ringkv_consensus::Wire`] encoding) | meaning on replay |
//! | --- | --- | --- |
//! | 1 entry | `Entry` | drop the shard's entries at or after its index, append it |
//! | 2 hard state | `HardState` | replace the hard state |
//! | 3 install snapshot | `SnapshotMeta` | drop every entry, take the snapshot |
//! | 4 compact | `SnapshotMeta` | drop entries up to its index, keep the rest, take the snapshot |
//!
//! [`Wal::install_snapshot`] writes a compact record when the log agrees
//! with the snapshot's last entry (`LogStorage::install_snapshot` keeps the
//! later entries then) and an install record otherwise: the decision is made
//! once, on the live log, because replay may no longer hold that entry.
//! | 5 remove shard | empty | forget the shard |
//!
//! A **batch** is the unit of one write and one fdatasync; batch sequence
//! numbers are consecutive over the life of the log, and each segment's
//! header names the first batch it holds. A batch is never split across
//! segments. Segments are **preallocated** (`fallocate`) to
//! [`WalOptions::segment_bytes`], so a batch overwrites reserved space and
//! its fdatasync need not update the file size; the unwritten rest reads as
//! zeros, which mark the end of the log. A segment is created under a
//! temporary name (`….wal.tmp`), written, preallocated and fdatasynced, then
//! renamed into place and the directory fsynced: a segment under its final
//! name always has a whole header.
//!
//! # Recovery rules ([`Wal::open`])
//!
//! Segments are read in order. Each must carry a valid header for its own
//! id, ids must be consecutive, and batch sequence numbers must continue
//! without a gap from one segment to the next. In each segment, batches are
//! read until the scan stops: at zeros (a clean end), or at bytes that are
//! not a valid batch (bad magic or CRC in the header or any record, a record
//! count or length that does not match, a body running past the file). A
//! batch is applied only if all of it is valid, so a batch is atomic.
//!
//! Where the scan stops, the rest of the segment is searched for a valid
//! batch header with a sequence number at least the expected one. Since a
//! batch is written only after the previous one's fdatasync succeeded, at
//! most the last batch can be torn by a crash; so:
//!
//! - a stop **followed by a valid later batch** (in the same segment, or, for
//!   damaged bytes, any later segment) is **corruption of durable data**:
//!   [`WalError::Corrupt`] names the file and offset, and the node refuses to
//!   start;
//! - **damaged bytes at the end of the last segment are a torn tail**: they
//!   are zeroed (the file is truncated to the last valid batch and
//!   preallocated again), and the WAL opens; [`RecoveryReport::torn_tail`]
//!   says what was dropped. That batch was never acknowledged: its fdatasync
//!   had not returned.
//! - a valid record of an unknown type or version is refused with a message
//!   naming the newer release that wrote it.
//!
//! A known limit, shared with every log that checksums records: damage
//! confined to the very last batch is indistinguishable from a torn write
//! and is truncated, although that batch may have been acknowledged, since
//! nothing later in the log vouches for it. (If it held a vote, the replica
//! could vote again in that term: the same exposure as a disk that silently
//! loses an acknowledged write.)
//!
//! After replay each shard's entries must follow its snapshot without a gap;
//! otherwise the log is refused as corrupt.
//!
//! # Segment lifecycle
//!
//! When a batch does not fit in the rest of the current segment, a new
//! segment is created and the batch written there. The **first batch of
//! every segment** starts with a **checkpoint**: the hard state and snapshot
//! metadata of every shard. Once that batch is durable, older segments hold
//! nothing needed except entries, and the WAL counts per segment the entries
//! still in some shard's log (not truncated, not compacted, shard not
//! removed). The oldest segments are deleted, in order, each deletion made
//! durable before the next, once that count is zero and the next segment
//! holds a durable batch (so a crash that loses a new segment's first batch
//! cannot take the only copy of a hard state with it). The segments on disk
//! therefore always form a contiguous run. A shard that never compacts pins
//! the oldest segment; [`Wal::oldest_segment_pinned_by`] names such shards
//! so the node can snapshot them.
//!
//! # Memory
//!
//! Per shard: its hard state, snapshot metadata, and for each live entry its
//! epoch and position (about 56 bytes, the epoch kept twice: once for the
//! durable log and once for the log as it will be after the buffered
//! records, which new records are checked against), plus the most recent
//! entries up to
//! [`WalOptions::cache_bytes_per_shard`]. Older entries are read back from
//! their segment (and their CRC checked) on demand. Compaction after
//! snapshots is what bounds the per-entry part.
//!
//! # Poisoning
//!
//! Any I/O error on the write path — writing or fdatasyncing a batch,
//! creating, renaming or deleting a segment, fsyncing the directory — and
//! running out of space ([`WalError::NoSpace`]) **poison** the WAL: the call
//! fails with the error, and every later write or sync fails at once with
//! [`WalError::Poisoned`] naming it. Nothing is retried: after a failed
//! fdatasync the kernel may have dropped the dirty pages and a retry would
//! report success for data that is not on disk. Reads of durable entries
//! still work. The way out is a restart: recovery reads back exactly what is
//! durable. Refused requests (a gap, a stale snapshot, a full buffer) do not
//! poison.

mod core;
mod error;
mod format;
mod index;
mod log;
mod recovery;
mod shared;
mod spool;
mod writer;

use ringkv_consensus::{Entry, HardState, LogIndex, Membership, ShardId, SnapshotMeta};

pub use error::{CompactionRefusal, Corruption, DiskOp, WalError};
pub use log::ShardLog;
pub use shared::SharedWal;
pub use spool::{SNAPSHOT_SPOOL_SUFFIX, SnapshotSpool};

use self::core::Core;
use crate::disk::Disk;
use format::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};

/// Default size segments are preallocated to and rotated at.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment size accepted (tests use small segments to rotate often).
pub const SEGMENT_BYTES_MIN: u64 = 1 << 10;
/// Default limit of buffered, unsynced record bytes.
pub const BATCH_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Default limit of one record: room for a command of the engines' default
/// maximum (2 MiB) with generous headroom.
pub const RECORD_BYTES_MAX_DEFAULT: u64 = 4 << 20;
/// Default budget of recent entries kept in memory per shard.
pub const CACHE_BYTES_PER_SHARD_DEFAULT: u64 = 1 << 20;

/// Tunables of a [`Wal`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size segments are preallocated to; a batch that does not fit in the
    /// rest of the current segment starts a new one (a batch larger than a
    /// whole segment gets a segment of its own, grown to fit).
    pub segment_bytes: u64,
    /// Most record bytes buffered before a sync; beyond it buffering fails
    /// with [`WalError::Busy`].
    pub batch_bytes_max: u64,
    /// Largest single record (an entry with its header).
    pub record_bytes_max: u64,
    /// Bytes of the most recent entries each shard keeps in memory.
    pub cache_bytes_per_shard: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            cache_bytes_per_shard: CACHE_BYTES_PER_SHARD_DEFAULT,
        }
    }
}

impl WalOptions {
    /// Checks the options for values that cannot work.
    ///
    /// # Errors
    /// The first bad option, named.
    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |field, why| Err(WalError::InvalidOptions { field, why });
        if self.segment_bytes < SEGMENT_BYTES_MIN {
            return bad("segment_bytes", "must be at least SEGMENT_BYTES_MIN (1 KiB)");
        }
        if self.record_bytes_max <= RECORD_HEADER_BYTES as u64 {
            return bad("record_bytes_max", "must leave room for a record header");
        }
        if self.batch_bytes_max < self.record_bytes_max {
            return bad("batch_bytes_max", "must be at least record_bytes_max");
        }
        if self.batch_bytes_max > u64::from(u32::MAX) - BATCH_HEADER_BYTES as u64 {
            return bad("batch_bytes_max", "must fit the 32-bit batch length (under 4 GiB)");
        }
        Ok(())
    }
}

/// Sequence number of a WAL batch. Every buffered record belongs to the
/// batch it will be written in; once [`Wal::sync`] reports a number, every
/// record of every batch up to it is durable.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchSeq(pub u64);

/// A torn last batch that recovery dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: String,
    /// Where the dropped bytes started (the end of the last valid batch).
    pub offset: u64,
    /// How many non-zero bytes were dropped.
    pub bytes: u64,
}

/// What [`Wal::open`] found, for the node to log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: usize,
    /// Valid batches replayed.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Shards with state after replay.
    pub shards: usize,
    /// The torn tail truncated, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Leftover temporary files from interrupted segment creations, removed.
    pub removed_temp_files: Vec<String>,
}

/// Counters of what a WAL wrote since it was opened.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches written, each with one write and one fdatasync.
    pub batches: u64,
    /// Records in them (checkpoint records included).
    pub records: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Segments deleted.
    pub segments_deleted: u64,
}

/// The node's write-ahead log, driven by one thread (the node loop).
///
/// See the [module docs](self) for the format and the rules.
pub struct Wal<D: Disk> {
    core: Core<D>,
}

impl<D: Disk> std::fmt::Debug for Wal<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("durable", &self.core.durable())
            .field("pending_bytes", &self.core.pending_bytes())
            .field("poisoned", &self.core.poison().is_some())
            .finish_non_exhaustive()
    }
}

impl<D: Disk> Wal<D> {
    /// Opens the WAL on `disk`, recovering what it holds (or creating an
    /// empty one).
    ///
    /// # Errors
    /// Invalid options; an I/O error; a corrupt segment
    /// ([`WalError::Corrupt`], naming the file, the offset and what to do);
    /// a segment or record written by a newer format.
    pub fn open(disk: D, options: WalOptions) -> Result<Wal<D>, WalError> {
        Ok(Wal { core: Core::open(disk, options)? })
    }

    /// What recovery found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.core.report()
    }

    /// Buffers `entries` for `shard`: every entry at or after
    /// `entries[0].index` is dropped (a conflicting suffix), then they are
    /// appended. Returns the batch they will be written in (or the durable
    /// sequence number if `entries` is empty).
    ///
    /// # Errors
    /// `Poisoned`; `BelowSnapshot` or `Gap` if the entries do not fit the
    /// log (as of every record buffered so far); `RecordTooLarge`; `Busy`.
    pub fn append(&mut self, shard: ShardId, entries: &[Entry]) -> Result<BatchSeq, WalError> {
        self.core.append(shard, entries)
    }

    /// Buffers `shard`'s hard state.
    ///
    /// # Errors
    /// `Poisoned`; `Busy`.
    pub fn set_hard_state(
        &mut self,
        shard: ShardId,
        hard_state: HardState,
    ) -> Result<BatchSeq, WalError> {
        self.core.set_hard_state(shard, hard_state)
    }

    /// Buffers the installation of a snapshot received from a leader (or,
    /// at index 0, a new shard's initial configuration): entries up to its
    /// index are dropped, and so are the later ones unless the log agrees
    /// with the snapshot's last entry.
    ///
    /// # Errors
    /// `Poisoned`; `StaleSnapshot` if it is older than the current one;
    /// `RecordTooLarge`; `Busy`.
    pub fn install_snapshot(
        &mut self,
        shard: ShardId,
        meta: &SnapshotMeta,
    ) -> Result<BatchSeq, WalError> {
        self.core.install_snapshot(shard, meta)
    }

    /// Buffers a compaction after the state machine took a snapshot at
    /// `upto` (with configuration `membership`): entries up to `upto` are
    /// dropped, and segments that held only those are deleted once this is
    /// durable.
    ///
    /// # Errors
    /// `Poisoned`; `CompactionRefused` if `upto` is already compacted, not
    /// durable, or an unsynced record could change it; `Busy`.
    pub fn compact(
        &mut self,
        shard: ShardId,
        upto: LogIndex,
        membership: Membership,
    ) -> Result<BatchSeq, WalError> {
        self.core.compact(shard, upto, membership)
    }

    /// Buffers the removal of everything about `shard` (its replica moved
    /// off this node).
    ///
    /// # Errors
    /// `Poisoned`; `Busy`.
    pub fn remove_shard(&mut self, shard: ShardId) -> Result<BatchSeq, WalError> {
        self.core.remove_shard(shard)
    }

    /// Writes every buffered record in one batch with one fdatasync, applies
    /// it to the shards' logs, deletes segments no longer needed, and
    /// returns the highest durable batch. With nothing buffered it does no
    /// I/O.
    ///
    /// # Errors
    /// `Io` or `NoSpace` (the WAL is now poisoned: the batch may or may not
    /// be on disk, and recovery will tell), or `Poisoned` by an earlier
    /// failure.
    pub fn sync(&mut self) -> Result<BatchSeq, WalError> {
        match self.core.begin_sync()? {
            None => Ok(self.core.durable()),
            Some(mut job) => {
                let result = job.run();
                self.core.finish_sync(job, result)
            }
        }
    }

    /// Every batch up to this one is durable.
    pub fn durable(&self) -> BatchSeq {
        self.core.durable()
    }

    /// Bytes of records buffered and not yet synced.
    pub fn pending_bytes(&self) -> u64 {
        self.core.pending_bytes()
    }

    /// The failure that poisoned the WAL, if one did.
    pub fn poisoned(&self) -> Option<&WalError> {
        self.core.poison().map(|e| &**e)
    }

    /// The durable log of `shard`, for its engine.
    pub fn log(&self, shard: ShardId) -> ShardLog<D> {
        ShardLog::new(shard, std::sync::Arc::clone(self.core.index()), self.core.disk().clone())
    }

    /// Shards with durable state, in order.
    pub fn shards(&self) -> Vec<ShardId> {
        self.core.shards()
    }

    /// Ids of the segments in use, oldest first.
    pub fn segment_ids(&self) -> Vec<u64> {
        self.core.segment_ids()
    }

    /// Shards whose uncompacted entries keep the oldest segment from being
    /// deleted (empty if nothing pins it).
    pub fn oldest_segment_pinned_by(&self) -> Vec<ShardId> {
        self.core.oldest_segment_pinned_by()
    }

    /// Counters of what the WAL has written since it was opened.
    pub fn stats(&self) -> WalStats {
        self.core.stats()
    }

    /// Turns this WAL into one many threads can share, with group commit.
    pub fn into_shared(self) -> SharedWal<D> {
        SharedWal::new(self.core)
    }
}
