//! Linearizable reads without writing to the log.
//!
//! **ReadIndex** (the default): the leader
//! 1. waits until every slot it re-proposed after phase 1 is committed, so
//!    its commit point covers every value chosen before it led;
//! 2. records its commit point as the read index;
//! 3. sends a heartbeat round and waits until a quorum of every
//!    configuration deciding slots past its commit point echoes it: those
//!    acceptors had promised no higher ballot, so no newer leader had
//!    chosen anything yet;
//! 4. answers with the read index; the caller serves the read once it has
//!    applied that far.
//!
//! Reads that arrive between two Readys share one heartbeat round. Rounds
//! are numbered per ballot; each peer's highest echoed round lives in its
//! `Peer`.
//!
//! **Lease** (opt-in, [`ringkv_consensus::ReadMode::Lease`]): acceptors
//! ignore prepares for an election timeout after hearing from the leader
//! (check-quorum), so while a quorum has echoed a heartbeat sent less than
//! `election_ticks - drift_ticks` ticks ago, no other leader can be elected
//! and the leader answers at once. The lease is void for the rest of a
//! ballot once the leader sent `TimeoutNow` (a transfer's prepare ignores
//! leases).
//!
//! Followers forward reads to the leader and receive the index back; a
//! forwarded read that is lost or reaches a non-leader is dropped silently
//! and the caller retries.

use std::collections::VecDeque;

use ringkv_consensus::{LogIndex, NodeId, RequestId};

/// A read waiting for leadership to be confirmed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    pub(crate) id: RequestId,
    /// The follower that forwarded the read, or `None` for a local read.
    pub(crate) from: Option<NodeId>,
}

/// The leader's queue of reads.
///
/// Invariant: `waiting` is ascending by round, every round at most `round`.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// Reads not yet covered by a heartbeat round.
    unsent: Vec<PendingRead>,
    /// Reads with their read index, waiting for a quorum to echo the round.
    waiting: VecDeque<(u64, LogIndex, PendingRead)>,
    /// The last heartbeat round started in this ballot.
    pub(crate) round: u64,
}

impl ReadQueue {
    pub(crate) fn pending(&self) -> usize {
        self.unsent.len() + self.waiting.len()
    }

    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    pub(crate) fn push(&mut self, read: PendingRead) {
        self.unsent.push(read);
    }

    /// Starts a new heartbeat round and returns its number.
    pub(crate) fn next_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// Puts every unsent read behind `round` at read index `index`.
    pub(crate) fn assign_unsent(&mut self, round: u64, index: LogIndex) {
        self.waiting.extend(self.unsent.drain(..).map(|read| (round, index, read)));
    }

    /// Moves the reads whose round `confirmed` accepts into `out`, in order.
    pub(crate) fn take_confirmed(
        &mut self,
        mut confirmed: impl FnMut(u64) -> bool,
        out: &mut Vec<(LogIndex, PendingRead)>,
    ) {
        // A quorum that echoed round r echoed every earlier round too, so
        // the first unconfirmed round stops the scan.
        let mut memo: Option<(u64, bool)> = None;
        while let Some(&(round, index, read)) = self.waiting.front() {
            let ok = match memo {
                Some((r, ok)) if r == round => ok,
                _ => confirmed(round),
            };
            memo = Some((round, ok));
            if !ok {
                break;
            }
            self.waiting.pop_front();
            out.push((index, read));
        }
    }

    /// Drops every read (leadership lost); rounds start over.
    pub(crate) fn reset(&mut self) {
        *self = ReadQueue::default();
    }
}
