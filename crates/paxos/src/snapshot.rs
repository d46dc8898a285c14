//! Receiving a snapshot in chunks.
//!
//! ```text
//!  leader                                   acceptor
//!  Snapshot{meta, total, offset 0, data} ──▶ start assembling
//!        ◀── SnapshotResponse{next_offset}    (per chunk, sent at once)
//!  last chunk (offset + len == total)    ──▶ Ready.snapshot (+ its own
//!                                            accepted slots after it)
//!        ◀── Accepted{none, commit = index}   (after persist: durable)
//! ```
//!
//! A chunk from another ballot or for another snapshot restarts assembly; a
//! chunk out of order asks the leader to resend from what was received.

use ringkv_consensus::{Epoch, LogIndex, SnapshotMeta};

/// A snapshot being received, chunk by chunk.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    /// The ballot of the leader sending it.
    pub(crate) ballot: Epoch,
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

    /// Whether a chunk continues this assembly.
    pub(crate) fn continues(
        &self,
        ballot: Epoch,
        index: LogIndex,
        total: u64,
        offset: u64,
    ) -> bool {
        self.ballot == ballot
            && self.meta.index == index
            && self.total == total
            && offset == self.received()
    }
}
