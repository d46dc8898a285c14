//! The leader's view of each peer: one [`Peer`] per member.
//!
//! ```text
//!   Probe ──report of its commit point──▶ Replicate ──needs compacted slots──▶ Snapshot
//!     ▲                                      │  ▲                                  │
//!     └──────── unreachable ─────────────────┘  └──────── snapshot installed ──────┘
//! ```
//!
//! * **Probe**: the leader does not know the peer's commit point (it did not
//!   promise in this ballot); it sends only heartbeats, whose answers say.
//! * **Replicate**: the leader streams phase-2 accepts from `next`, at most
//!   `max_inflight_messages` messages in flight. Acceptances arrive per
//!   slot and in any order: `acked` holds those above `matched`.
//! * **Snapshot**: the peer needs slots the leader compacted; it streams its
//!   snapshot in chunks and sends no accepts until it is installed.
//!
//! `matched` is the prefix the peer is known to hold chosen values of, or
//! values of this ballot: everything up to its reported commit point, and
//! every slot it acknowledged in this ballot without a hole below. It is
//! only a hint for what to send; a peer never trusts it (it verifies each
//! slot's ballot before it learns the slot chosen).
//!
//! Invariants: `matched < next`; every slot in `acked` is above
//! `matched + 1` (a rewind may leave acknowledged slots at or past `next`:
//! they are resent, and answered again).

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use ringkv_consensus::{LogIndex, NodeId, PeerProgress, ProgressState, Snapshot};

/// A snapshot being streamed to a peer in chunks.
#[derive(Clone, Debug)]
pub(crate) struct OutgoingSnapshot {
    pub(crate) snapshot: Snapshot,
    /// Bytes the peer has acknowledged receiving.
    pub(crate) acked: u64,
    /// Bytes sent so far. Invariant: `acked <= sent <= data.len()`.
    pub(crate) sent: u64,
    /// Whether the last chunk has been sent (an empty snapshot still needs
    /// one empty chunk to carry its metadata).
    pub(crate) sent_all: bool,
    /// Ticks since the peer last acknowledged a chunk.
    pub(crate) idle_ticks: u32,
}

impl OutgoingSnapshot {
    pub(crate) fn new(snapshot: Snapshot) -> OutgoingSnapshot {
        OutgoingSnapshot { snapshot, acked: 0, sent: 0, sent_all: false, idle_ticks: 0 }
    }

    pub(crate) fn total(&self) -> u64 {
        self.snapshot.data.len() as u64
    }

    /// The next chunk, at most `chunk_bytes` long, or `None` when all is sent.
    pub(crate) fn next_chunk(&mut self, chunk_bytes: u64) -> Option<(u64, Bytes)> {
        if self.sent_all {
            return None;
        }
        let start = self.sent;
        let end = self.total().min(start.saturating_add(chunk_bytes));
        self.sent = end;
        self.sent_all = end == self.total();
        Some((start, self.snapshot.data.slice(start as usize..end as usize)))
    }

    /// Resends from `offset` (at most what was sent).
    pub(crate) fn rewind_to(&mut self, offset: u64) {
        let offset = offset.min(self.sent);
        self.acked = self.acked.min(offset);
        self.sent = offset;
        self.sent_all = false;
        self.idle_ticks = 0;
    }
}

/// Phase-2 progress of one peer, kept by the leader.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) state: ProgressState,
    /// See the module docs.
    pub(crate) matched: LogIndex,
    /// Slots above `matched` acknowledged in this ballot.
    pub(crate) acked: BTreeSet<LogIndex>,
    /// Next slot to send.
    pub(crate) next: LogIndex,
    /// The last slot of each accept message in flight, ascending.
    pub(crate) inflight: VecDeque<LogIndex>,
    /// Ticks since `matched` last moved while slots were outstanding.
    pub(crate) stalled_ticks: u32,
    /// The commit point the peer last reported.
    pub(crate) commit: LogIndex,
    /// The commit point last announced to it.
    pub(crate) commit_sent: LogIndex,
    /// Heard from within the current check-quorum period.
    pub(crate) recent_active: bool,
    /// Highest heartbeat round it echoed (ReadIndex).
    pub(crate) acked_round: u64,
    /// Highest send tick of a heartbeat it echoed (leases).
    pub(crate) acked_tick: Option<u64>,
    pub(crate) snapshot: Option<OutgoingSnapshot>,
}

impl Peer {
    /// A peer that promised with its commit point `commit` (replicate), or
    /// one whose state is unknown (`None`: probe).
    pub(crate) fn new(commit: Option<LogIndex>) -> Peer {
        let (state, matched) = match commit {
            Some(c) => (ProgressState::Replicate, c),
            None => (ProgressState::Probe, LogIndex::ZERO),
        };
        Peer {
            state,
            matched,
            acked: BTreeSet::new(),
            next: matched.next(),
            inflight: VecDeque::new(),
            stalled_ticks: 0,
            commit: matched,
            commit_sent: LogIndex::ZERO,
            recent_active: commit.is_some(),
            acked_round: 0,
            acked_tick: None,
            snapshot: None,
        }
    }

    /// Starts (or restarts) streaming accepts right after `matched`.
    pub(crate) fn become_replicate(&mut self, matched: LogIndex) {
        self.state = ProgressState::Replicate;
        self.matched = matched;
        self.acked.clear();
        self.next = matched.next();
        self.inflight.clear();
        self.stalled_ticks = 0;
        self.snapshot = None;
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.acked.clear();
        self.next = self.matched.next();
        self.inflight.clear();
        self.stalled_ticks = 0;
        self.snapshot = None;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot: Snapshot) {
        self.state = ProgressState::Snapshot;
        self.acked.clear();
        self.inflight.clear();
        self.snapshot = Some(OutgoingSnapshot::new(snapshot));
    }

    /// Whether another accept message may leave now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        self.state == ProgressState::Replicate && self.inflight.len() < max_inflight
    }

    /// Records an accept message carrying `lo..=hi`.
    pub(crate) fn sent(&mut self, hi: LogIndex) {
        debug_assert!(hi >= self.next);
        self.inflight.push_back(hi);
        self.next = hi.next();
    }

    /// Slots `lo..=hi` are accepted in this ballot and the peer's commit
    /// point is `commit`. Returns whether `matched` moved.
    pub(crate) fn on_accepted(&mut self, lo: LogIndex, hi: LogIndex, commit: LogIndex) -> bool {
        let before = self.matched;
        self.commit = self.commit.max(commit);
        if commit > self.matched {
            self.matched = commit;
        }
        if lo <= self.matched.next() && self.acked.is_empty() {
            // In-order acceptance, the common case: no set to maintain.
            self.matched = self.matched.max(hi);
        }
        let mut s = lo.max(self.matched.next());
        while s <= hi {
            self.acked.insert(s);
            s = s.next();
        }
        while self.acked.first().is_some_and(|&f| f <= self.matched.next()) {
            let f = self.acked.pop_first().expect("checked above");
            self.matched = self.matched.max(f);
        }
        // Out-of-order acceptances free the window of what they cover.
        while self.inflight.front().is_some_and(|&f| f <= hi.max(self.matched)) {
            self.inflight.pop_front();
        }
        if self.next <= self.matched {
            self.next = self.matched.next();
        }
        let moved = self.matched > before;
        if moved {
            self.stalled_ticks = 0;
        }
        moved
    }

    /// Whether the peer accepted `slot` in this ballot or holds it chosen.
    pub(crate) fn has(&self, slot: LogIndex) -> bool {
        slot <= self.matched || self.acked.contains(&slot)
    }

    /// Whether slots were sent and not all acknowledged.
    pub(crate) fn outstanding(&self) -> bool {
        self.state == ProgressState::Replicate && self.next > self.matched.next()
    }

    pub(crate) fn report(&self, id: NodeId) -> PeerProgress {
        PeerProgress {
            id,
            matched: self.matched,
            next: self.next,
            state: self.state,
            recently_active: self.recent_active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(n: u64) -> LogIndex {
        LogIndex(n)
    }

    #[test]
    fn out_of_order_acceptances_fill_in() {
        let mut p = Peer::new(Some(i(2)));
        p.sent(i(4));
        p.sent(i(6));
        assert!(!p.on_accepted(i(5), i(6), i(2)), "a hole at 3..4 keeps matched");
        assert!(p.has(i(5)) && !p.has(i(3)));
        assert!(p.inflight.is_empty(), "acceptance of 6 frees the window up to it");
        assert!(p.on_accepted(i(3), i(4), i(2)));
        assert_eq!(p.matched, i(6));
        assert!(p.acked.is_empty());
    }

    #[test]
    fn a_reported_commit_point_counts_as_matched() {
        let mut p = Peer::new(None);
        assert_eq!(p.state, ProgressState::Probe);
        p.become_replicate(i(0));
        assert!(p.on_accepted(i(1), i(0), i(7)));
        assert_eq!((p.matched, p.next), (i(7), i(8)));
    }
}
