//! The store's errors: etcd's request errors, storage failures, snapshot faults.

use bytes::Bytes;
use ringkv_consensus::{LogIndex, ShardId};

use super::types::{LeaseId, Revision};

/// Why a request was refused, with etcd's exact message as `Display`.
///
/// Clients (clientv3, Kubernetes, Patroni) match these strings, so the
/// message must never change; the fields carry the details for logs and
/// for the API layer. These are deterministic outcomes of applying a
/// command: every replica refuses the same command the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// A read or compaction named a revision that compaction removed.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The shard's compacted revision: the oldest still readable.
        compacted: Revision,
    },
    /// A read or compaction named a revision the shard has not reached.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The shard's current revision.
        current: Revision,
    },
    /// A put named, or a revoke/time-to-live asked for, a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound {
        /// The lease asked for.
        lease: LeaseId,
    },
    /// A grant named a lease id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists {
        /// The lease id.
        lease: LeaseId,
    },
    /// A grant asked for more than [`super::LEASE_TTL_MAX_SECONDS`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge {
        /// The TTL asked for, in seconds.
        ttl: i64,
    },
    /// A transaction writes a key twice (or puts into a range it deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey {
        /// The key written twice.
        key: Bytes,
    },
    /// A transaction has more compares or operations than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps {
        /// Operations at the offending level.
        count: usize,
        /// The limit at that level (the configured maximum minus what the
        /// enclosing levels used, as etcd counts).
        max: usize,
    },
    /// A put with `ignore_value` or `ignore_lease` on a missing key.
    #[error("etcdserver: key not found")]
    KeyNotFound {
        /// The key.
        key: Bytes,
    },
    /// A request with an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` also carried a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` also carried a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
}

/// The storage engine failed or the stored state is inconsistent.
///
/// These are environmental: the command was not applied, nothing of the
/// batch was committed, and the caller should stop applying to the store
/// (the node raises an alarm and steps its shards down) rather than retry
/// as if nothing happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb reported an error.
    #[error("state machine engine failed during {during}: {source}")]
    Engine {
        /// What the store was doing.
        during: &'static str,
        /// The engine's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record could not be decoded: the database is damaged or was
    /// written by an incompatible version. Restore the shard from a snapshot.
    #[error("corrupt state machine record in {table} for shard {shard}: {detail}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// The shard.
        shard: ShardId,
        /// What was wrong.
        detail: String,
    },
    /// An entry was handed to the store out of order: log entries must be
    /// applied exactly once, each index right after the previous one.
    #[error(
        "entry {index} of shard {shard} applied out of order: the shard has applied up to \
         {applied}, so the next must be {next}; the node loop must replay exactly the entries \
         after the applied index",
        next = applied.next()
    )]
    OutOfOrder {
        /// The shard.
        shard: ShardId,
        /// The shard's applied index.
        applied: LogIndex,
        /// The index offered.
        index: LogIndex,
    },
}

impl StoreError {
    /// Whether the engine failed because the device is full (`ENOSPC`,
    /// `EDQUOT`): the node raises NOSPACE rather than reporting corruption.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Engine { source, .. } => match &**source {
                redb::Error::Io(e) => crate::disk::is_no_space(e),
                _ => false,
            },
            _ => false,
        }
    }

    /// A mapper from any redb error to [`StoreError::Engine`].
    pub(crate) fn engine<E: Into<redb::Error>>(
        during: &'static str,
    ) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Engine { during, source: Box::new(e.into()) }
    }
}

/// A read failed: either the request was refused (etcd semantics) or the
/// store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The request was refused with an etcd error.
    #[error(transparent)]
    Request(#[from] MvccError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A snapshot could not be restored (or exported).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A chunk's checksum does not match its bytes.
    #[error(
        "snapshot chunk {chunk} is corrupt (checksum {found:#010x}, expected {expected:#010x}); \
         fetch the snapshot again"
    )]
    ChecksumMismatch {
        /// Sequence number of the chunk (0 = header).
        chunk: u64,
        /// Checksum stored in the chunk.
        expected: u32,
        /// Checksum of the bytes received.
        found: u32,
    },
    /// A chunk is malformed, out of sequence, or of an unknown format.
    #[error("snapshot chunk {chunk} is malformed: {detail}; fetch the snapshot again")]
    Malformed {
        /// Sequence number of the chunk (0 = header).
        chunk: u64,
        /// What was wrong.
        detail: String,
    },
    /// The stream ended before its trailer: the snapshot is incomplete.
    #[error("snapshot ended after {chunks} chunks without its trailer; fetch it again")]
    Truncated {
        /// Chunks received.
        chunks: u64,
    },
    /// The trailer's totals disagree with what was received.
    #[error(
        "snapshot totals mismatch: trailer says {expected_records} records with digest \
         {expected_digest:#010x}, received {records} with digest {digest:#010x}"
    )]
    TotalsMismatch {
        /// Records the trailer announces.
        expected_records: u64,
        /// Records received.
        records: u64,
        /// Digest of all chunk payloads the trailer announces.
        expected_digest: u32,
        /// Digest of the payloads received.
        digest: u32,
    },
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
