//! InstallSnapshot in chunks (thesis §5.3), receiving side.
//!
//! ```text
//!  leader                                   follower
//!  Snapshot{meta, total, offset 0, data} ──▶ start assembling
//!        ◀── SnapshotResponse{next_offset}    (per chunk, sent at once)
//!  Snapshot{offset k, ...}               ──▶ append if k == received
//!        ◀── SnapshotResponse{next_offset}    (or "resend from here")
//!  last chunk (offset + len == total)    ──▶ Ready.snapshot → persist
//!        ◀── AppendResponse{index}            (after persist: durable)
//! ```
//!
//! The leader keeps up to `max_inflight_messages` chunks in flight and
//! resends from the last acknowledged offset when the follower asks for it
//! or stays silent for an election timeout (chunks may be lost; a restarted
//! follower asks for offset 0). The final acknowledgement is an ordinary
//! `AppendResponse`, which moves the follower back to log replication; a
//! transfer the caller reports unreachable (`report_unreachable`) aborts the
//! snapshot and the leader probes again later. A chunk from an older term,
//! or for another snapshot, restarts assembly.

use ringkv_consensus::{Epoch, LogIndex, SnapshotMeta};

/// A snapshot being received, chunk by chunk.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    /// The term of the leader sending it.
    pub(crate) term: Epoch,
    /// What the snapshot covers.
    pub(crate) meta: SnapshotMeta,
    /// Declared size of the whole data.
    pub(crate) total: u64,
    /// The bytes received so far (the next expected offset is its length).
    pub(crate) data: Vec<u8>,
}

impl IncomingSnapshot {
    pub(crate) fn received(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether a chunk at `offset` of the snapshot at `index` from a leader
    /// of `term` continues this assembly.
    pub(crate) fn continues(&self, term: Epoch, index: LogIndex, total: u64, offset: u64) -> bool {
        self.term == term
            && self.meta.index == index
            && self.total == total
            && offset == self.received()
    }
}
