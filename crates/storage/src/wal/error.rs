//! [`WalError`]: what went wrong, to what, and what the operator can do.

use std::fmt;
use std::io;
use std::sync::Arc;

use ringkv_consensus::{LogIndex, ShardId};

/// A disk operation, named in error messages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiskOp {
    /// Listing the WAL directory.
    List,
    /// Creating a file.
    Create,
    /// Opening a file.
    Open,
    /// Reading a file.
    Read,
    /// Writing a file.
    Write,
    /// `fdatasync` of a file.
    SyncData,
    /// `fsync` of the WAL directory.
    SyncDir,
    /// Reserving space for a file.
    Allocate,
    /// Truncating a file.
    Truncate,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
}

impl fmt::Display for DiskOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskOp::List => "list the directory of",
            DiskOp::Create => "create",
            DiskOp::Open => "open",
            DiskOp::Read => "read",
            DiskOp::Write => "write to",
            DiskOp::SyncData => "fdatasync",
            DiskOp::SyncDir => "fsync the directory holding",
            DiskOp::Allocate => "preallocate space for",
            DiskOp::Truncate => "truncate",
            DiskOp::Rename => "rename",
            DiskOp::Remove => "remove",
        })
    }
}

/// What is wrong with a corrupt segment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The segment header's magic or checksum is wrong.
    BadSegmentHeader,
    /// The header names another segment than the file name does.
    SegmentIdMismatch {
        /// The id in the file name.
        expected: u64,
        /// The id in the header.
        found: u64,
    },
    /// A segment between two present ones is missing.
    MissingSegment {
        /// The id that should be present.
        expected: u64,
    },
    /// Batches are missing: the sequence jumps.
    MissingBatches {
        /// The batch sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A damaged batch is followed by a valid one, so it was durable and the
    /// damage is not a torn write.
    DamagedBatch {
        /// Offset of the next valid batch.
        valid_batch_at: u64,
        /// Sequence number of that batch.
        valid_batch_seq: u64,
    },
    /// A segment that is not the last one ends in damaged bytes, not zeros.
    DamagedSegmentTail,
    /// A record's checksum is right but its contents cannot be decoded.
    UndecodableRecord {
        /// Why decoding failed.
        reason: String,
    },
    /// Records contradict each other (for example, entries are missing
    /// between a snapshot and the next entry).
    Inconsistent {
        /// The shard whose records disagree.
        shard: ShardId,
        /// What disagrees.
        what: String,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadSegmentHeader => write!(f, "the segment header is damaged"),
            Corruption::SegmentIdMismatch { expected, found } => {
                write!(f, "the header says segment {found} but the file name says {expected}")
            }
            Corruption::MissingSegment { expected } => {
                write!(f, "segment {expected}, which must come before this one, is missing")
            }
            Corruption::MissingBatches { expected, found } => {
                write!(f, "expected batch {expected} but found batch {found}: batches are missing")
            }
            Corruption::DamagedBatch { valid_batch_at, valid_batch_seq } => write!(
                f,
                "the batch here is damaged, yet a valid later batch ({valid_batch_seq}) follows at \
                 byte {valid_batch_at}"
            ),
            Corruption::DamagedSegmentTail => write!(
                f,
                "the segment ends in damaged bytes although later segments exist (only the last \
                 segment can end in a torn write)"
            ),
            Corruption::UndecodableRecord { reason } => {
                write!(f, "a record's checksum is valid but it cannot be decoded ({reason})")
            }
            Corruption::Inconsistent { shard, what } => {
                write!(f, "the records of shard {shard} are inconsistent: {what}")
            }
        }
    }
}

/// Why a compaction was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactionRefusal {
    /// The index is at or below the current snapshot.
    AlreadyCompacted,
    /// The index is past the last durable entry.
    NotDurable,
    /// Another operation on the shard waiting to be synced (an install, a
    /// removal, or a truncation at or below the index) could change it.
    ConflictsWithPending,
}

impl fmt::Display for CompactionRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompactionRefusal::AlreadyCompacted => "the log is already compacted that far",
            CompactionRefusal::NotDurable => {
                "that entry is not durable yet: compact only applied (hence durable) entries"
            }
            CompactionRefusal::ConflictsWithPending => {
                "an unsynced install, removal or truncation of the shard could change that entry; \
                 sync first"
            }
        })
    }
}

/// Everything the WAL can fail with.
///
/// `Io`, `NoSpace` and `Poisoned` are environmental: the WAL is poisoned
/// and the node must restart. `Corrupt`, `UnsupportedVersion` and
/// `UnknownRecordType` come only from [`crate::Wal::open`]. The rest are
/// refusals of a bad request, which change nothing.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A disk operation failed.
    #[error(
        "WAL I/O error: could not {op} {file}: {source}. Check the disk and the kernel log \
         (dmesg); the WAL accepts no more writes until the node restarts, and recovery keeps \
         everything that was acknowledged"
    )]
    Io {
        /// What was being done.
        op: DiskOp,
        /// The file (or directory) it was done to.
        file: String,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The device holding the WAL is full.
    #[error(
        "no space left on the device holding the WAL: could not {op} {file}. Free space or grow \
         the volume, then restart the node; everything acknowledged is kept"
    )]
    NoSpace {
        /// What was being done.
        op: DiskOp,
        /// The file it was done to.
        file: String,
    },

    /// An earlier I/O failure poisoned the WAL: nothing may be written,
    /// because the durability of what was written before is unknown.
    #[error(
        "the WAL refuses writes since an earlier failure ({cause}); restart the node to recover \
         from what is durable"
    )]
    Poisoned {
        /// The failure that poisoned the WAL.
        #[source]
        cause: Arc<WalError>,
    },

    /// A segment is damaged in a way a crash cannot explain.
    #[error(
        "WAL segment {file} is corrupt at byte {offset}: {reason}. This is damage to data that \
         was already durable, not a torn write from a crash, so the node refuses to start rather \
         than silently drop acknowledged writes. To recover, restore this node's data directory \
         from a backup, or wipe it and let the node rejoin and catch up from its peers; keep a \
         copy of the segment for diagnosis"
    )]
    Corrupt {
        /// The segment file.
        file: String,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },

    /// A segment was written by a newer format version.
    #[error(
        "WAL segment {file} uses format version {found}, but this ringkv reads only version \
         {supported}: run the ringkv release that wrote it (or a newer one)"
    )]
    UnsupportedVersion {
        /// The segment file.
        file: String,
        /// The version in its header.
        found: u32,
        /// The version this code writes and reads.
        supported: u32,
    },

    /// A valid record of a type this code does not know (a newer writer).
    #[error(
        "WAL segment {file} holds a record of unknown type {record_type} at byte {offset}: it was \
         written by a newer ringkv; run that release (or a newer one)"
    )]
    UnknownRecordType {
        /// The segment file.
        file: String,
        /// Byte offset of the record.
        offset: u64,
        /// The type byte.
        record_type: u8,
    },

    /// Entries must be contiguous and may not leave a gap after the log.
    #[error(
        "cannot append to shard {shard}: entries must be contiguous and start at or before index \
         {next}, but they start at {first} (or skip an index)"
    )]
    Gap {
        /// The shard.
        shard: ShardId,
        /// The first index given (or the first out of sequence).
        first: LogIndex,
        /// The highest index the append could start at.
        next: LogIndex,
    },

    /// An append would overwrite entries covered by the snapshot.
    #[error(
        "cannot append index {index} to shard {shard}: entries up to {snapshot} are replaced by a \
         snapshot"
    )]
    BelowSnapshot {
        /// The shard.
        shard: ShardId,
        /// The first index given.
        index: LogIndex,
        /// The snapshot's index.
        snapshot: LogIndex,
    },

    /// A snapshot older than the current one.
    #[error(
        "cannot install a snapshot at {index} on shard {shard}: it already has one at {current}"
    )]
    StaleSnapshot {
        /// The shard.
        shard: ShardId,
        /// The snapshot's index.
        index: LogIndex,
        /// The current snapshot's index.
        current: LogIndex,
    },

    /// A compaction the WAL cannot perform.
    #[error("cannot compact shard {shard} up to {index}: {why}")]
    CompactionRefused {
        /// The shard.
        shard: ShardId,
        /// The index asked for.
        index: LogIndex,
        /// Why.
        why: CompactionRefusal,
    },

    /// Too much is buffered; sync before adding more.
    #[error(
        "the WAL already buffers {pending_bytes} unsynced bytes (limit {max_bytes}); sync before \
         adding more"
    )]
    Busy {
        /// Bytes buffered.
        pending_bytes: u64,
        /// The limit ([`crate::WalOptions::batch_bytes_max`]).
        max_bytes: u64,
    },

    /// One record is larger than the limit.
    #[error(
        "a record for shard {shard} would take {bytes} bytes, more than the limit of {max_bytes} \
         (WalOptions::record_bytes_max); split the command or raise the limit"
    )]
    RecordTooLarge {
        /// The shard.
        shard: ShardId,
        /// The record's size.
        bytes: u64,
        /// The limit.
        max_bytes: u64,
    },

    /// The options cannot work.
    #[error("invalid WAL option {field}: {why}")]
    InvalidOptions {
        /// The option.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl WalError {
    /// Wraps an I/O error with what was being done to which file.
    pub(crate) fn io(op: DiskOp, file: String, source: io::Error) -> WalError {
        if crate::disk::is_no_space(&source) {
            WalError::NoSpace { op, file }
        } else {
            WalError::Io { op, file, source: Arc::new(source) }
        }
    }

    /// Whether this error poisons the WAL (an environmental failure rather
    /// than a refused request).
    pub fn is_environmental(&self) -> bool {
        matches!(self, WalError::Io { .. } | WalError::NoSpace { .. } | WalError::Poisoned { .. })
    }

    /// The failure at the root of a chain of `Poisoned` errors.
    pub fn root_cause(&self) -> &WalError {
        match self {
            WalError::Poisoned { cause } => cause.root_cause(),
            other => other,
        }
    }
}
