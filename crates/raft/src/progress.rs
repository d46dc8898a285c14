//! The leader's view of each peer's log: one [`Progress`] per member.
//!
//! ```text
//!            append accepted                 snapshot acknowledged
//!   Probe ─────────────────────▶ Replicate      Snapshot ──────────▶ Probe
//!     ▲  ◀──── rejection / unreachable ──┘         ▲
//!     └────────── needs compacted entries ─────────┘ (from Probe or Replicate)
//! ```
//!
//! * **Probe**: the leader does not know where the follower's log matches
//!   its own; it sends one append at a time and waits for the answer (or the
//!   next heartbeat response) before sending another (Raft, Fig. 2: "if
//!   AppendEntries fails because of log inconsistency: decrement nextIndex
//!   and retry"; thesis §5.3 for the faster backtracking).
//! * **Replicate**: the follower's log matches up to `matched`; the leader
//!   streams entries optimistically, advancing `next` as it sends, bounded by
//!   the [`Inflights`] window (thesis §10.2.2, pipelining).
//! * **Snapshot**: the entries the follower needs are compacted; the leader
//!   streams a snapshot in chunks and sends no entries until it is
//!   acknowledged (thesis §5.3).
//!
//! Invariant (every state): `matched < next`.

use std::collections::VecDeque;

use bytes::Bytes;
use ringkv_consensus::{LogIndex, NodeId, PeerProgress, ProgressState, Snapshot};

/// A bounded window of append messages sent but not yet acknowledged, each
/// remembered by the last index it carried.
///
/// Invariant: indexes are strictly increasing; `len() <= capacity`.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    last_indexes: VecDeque<LogIndex>,
    capacity: usize,
}

impl Inflights {
    pub(crate) fn new(capacity: usize) -> Inflights {
        assert!(capacity > 0, "an in-flight window must hold at least one message");
        Inflights { last_indexes: VecDeque::new(), capacity }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.last_indexes.len()
    }

    /// Records a message whose last entry is `last`.
    pub(crate) fn add(&mut self, last: LogIndex) {
        assert!(!self.is_full(), "in-flight window overflow: callers check is_full first");
        debug_assert!(self.last_indexes.back().is_none_or(|&b| b < last));
        self.last_indexes.push_back(last);
    }

    /// Forgets every message whose entries are all at or below `index`.
    pub(crate) fn free_to(&mut self, index: LogIndex) {
        while self.last_indexes.front().is_some_and(|&f| f <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Forgets the oldest message, so a stalled window can make progress
    /// when a heartbeat response shows the peer is alive but our appends
    /// were lost.
    pub(crate) fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// A snapshot being streamed to a peer in chunks.
#[derive(Clone, Debug)]
pub(crate) struct OutgoingSnapshot {
    /// The snapshot (its data is a cheap, shared `Bytes`).
    pub(crate) snapshot: Snapshot,
    /// Bytes the peer has acknowledged receiving.
    pub(crate) acked: u64,
    /// Bytes sent so far. Invariant: `acked <= sent <= data.len()`.
    pub(crate) sent: u64,
    /// Whether the last chunk has been sent (an empty snapshot still needs
    /// one empty chunk to carry its metadata).
    pub(crate) sent_all: bool,
    /// Ticks since the peer last acknowledged a chunk; past the election
    /// timeout the leader resends from `acked` (chunks may be lost).
    pub(crate) idle_ticks: u32,
}

impl OutgoingSnapshot {
    pub(crate) fn new(snapshot: Snapshot) -> OutgoingSnapshot {
        OutgoingSnapshot { snapshot, acked: 0, sent: 0, sent_all: false, idle_ticks: 0 }
    }

    pub(crate) fn total(&self) -> u64 {
        self.snapshot.data.len() as u64
    }

    /// The next chunk to send, at most `chunk_bytes` long, or `None` when
    /// everything was sent.
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

    /// Resends from `offset` (at most what was sent): the peer lost chunks
    /// or restarted.
    pub(crate) fn rewind_to(&mut self, offset: u64) {
        let offset = offset.min(self.sent);
        self.acked = offset;
        self.sent = offset;
        self.sent_all = false;
        self.idle_ticks = 0;
    }
}

/// What the leader knows about one peer's log.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log on this peer.
    ///
    /// Invariant: `matched < next`. Zero when a node becomes leader: a new
    /// leader knows nothing of a follower's log until it answers (Fig. 2).
    pub(crate) matched: LogIndex,
    /// Next index to send.
    pub(crate) next: LogIndex,
    /// Replication state.
    pub(crate) state: ProgressState,
    /// Probe state: an append was sent and is unanswered, so no other may go.
    pub(crate) probe_sent: bool,
    /// Replicate state: appends sent and unacknowledged.
    pub(crate) inflights: Inflights,
    /// Snapshot state: the snapshot being sent.
    pub(crate) snapshot: Option<OutgoingSnapshot>,
    /// Heard from since the last check-quorum round (thesis §6.2).
    pub(crate) recent_active: bool,
    /// Highest heartbeat round this peer echoed in the current term.
    pub(crate) acked_round: u64,
    /// Send tick of the newest heartbeat this peer echoed (leases).
    pub(crate) acked_tick: Option<u64>,
    /// The commit index last sent to this peer, to skip redundant empty appends.
    pub(crate) commit_sent: LogIndex,
}

impl Progress {
    /// A peer the leader knows nothing about: probe from the end of its log.
    pub(crate) fn new(next: LogIndex, inflight_max: usize) -> Progress {
        Progress {
            matched: LogIndex::ZERO,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_max),
            snapshot: None,
            recent_active: true,
            acked_round: 0,
            acked_tick: None,
            commit_sent: LogIndex::ZERO,
        }
    }

    /// Falls back to probing right after what is known to match.
    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
        self.next = self.matched.next();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
        self.next = self.matched.next();
    }

    pub(crate) fn become_snapshot(&mut self, snapshot: Snapshot) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(OutgoingSnapshot::new(snapshot));
    }

    /// Whether no append may be sent now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an append carrying entries up to `last` (or none, when
    /// `last` is `None`) was sent.
    pub(crate) fn on_append_sent(&mut self, last: Option<LogIndex>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last.next();
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {
                unreachable!("appends are never sent to a peer receiving a snapshot")
            }
        }
    }

    /// An acknowledgement that the peer matches up to `index`. Returns
    /// whether it told us anything new.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        updated
    }

    /// A rejection of an append whose `prev_index` was `rejected`; `hint` is
    /// where the leader's log may match the peer's. Returns whether the
    /// rejection was current (not a stale answer to an older append).
    pub(crate) fn maybe_decrease_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        match self.state {
            ProgressState::Replicate => {
                // Everything at or below `matched` is known to match, so a
                // rejection there is stale.
                if rejected <= self.matched {
                    return false;
                }
                self.next = self.matched.next();
                true
            }
            ProgressState::Probe => {
                // Only the answer to the probe we sent last counts.
                if rejected != self.next.prev() {
                    return false;
                }
                // Never re-probe at the rejected index itself, nor at or
                // below what is known to match.
                self.next = rejected.min(hint.next()).max(self.matched.next());
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot => false,
        }
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
    use ringkv_consensus::{Epoch, SnapshotMeta};

    #[test]
    fn inflights_free_and_fill() {
        let mut w = Inflights::new(2);
        w.add(LogIndex(3));
        w.add(LogIndex(5));
        assert!(w.is_full());
        w.free_to(LogIndex(4));
        assert_eq!(w.len(), 1);
        w.free_to(LogIndex(5));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn probe_rejection_backtracks_to_hint_but_not_below_match() {
        let mut p = Progress::new(LogIndex(11), 4);
        p.on_append_sent(None);
        assert!(p.is_paused());
        // A stale rejection (not for prev 10) changes nothing.
        assert!(!p.maybe_decrease_to(LogIndex(7), LogIndex(3)));
        assert!(p.maybe_decrease_to(LogIndex(10), LogIndex(4)));
        assert_eq!(p.next, LogIndex(5));
        assert!(!p.is_paused());
        p.matched = LogIndex(6);
        p.next = LogIndex(9);
        assert!(p.maybe_decrease_to(LogIndex(8), LogIndex(2)));
        assert_eq!(p.next, LogIndex(7), "never below matched + 1");
    }

    #[test]
    fn replicate_rejection_falls_back_to_match() {
        let mut p = Progress::new(LogIndex(1), 4);
        p.maybe_update(LogIndex(5));
        p.become_replicate();
        p.on_append_sent(Some(LogIndex(8)));
        p.on_append_sent(Some(LogIndex(10)));
        assert_eq!(p.next, LogIndex(11));
        assert!(!p.maybe_decrease_to(LogIndex(4), LogIndex(0)), "stale");
        assert!(p.maybe_decrease_to(LogIndex(8), LogIndex(6)));
        assert_eq!(p.next, LogIndex(6));
    }

    #[test]
    fn snapshot_chunks_cover_the_data_once() {
        let snapshot = Snapshot {
            meta: SnapshotMeta { index: LogIndex(9), epoch: Epoch::term(1), ..Default::default() },
            data: Bytes::from_static(b"abcdefg"),
        };
        let mut s = OutgoingSnapshot::new(snapshot);
        let mut got = Vec::new();
        while let Some((off, chunk)) = s.next_chunk(3) {
            assert_eq!(off as usize, got.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"abcdefg");
        s.rewind_to(3);
        assert_eq!(s.next_chunk(100).map(|(o, d)| (o, d.len())), Some((3, 4)));
    }

    #[test]
    fn empty_snapshot_is_one_empty_chunk() {
        let mut s = OutgoingSnapshot::new(Snapshot::default());
        assert_eq!(s.next_chunk(3).map(|(o, d)| (o, d.len())), Some((0, 0)));
        assert_eq!(s.next_chunk(3), None);
    }
}
