//! Linearizable reads without writing to the log (thesis §6.4).
//!
//! **ReadIndex** (the default): the leader
//! 1. waits until an entry of its own term is committed (its no-op), so its
//!    commit index is at least that of any earlier leader;
//! 2. records its commit index as the read index;
//! 3. sends a heartbeat round and waits until a quorum echoes it, which
//!    proves no newer leader existed when the read arrived;
//! 4. answers with the read index; the caller serves the read once it has
//!    applied that far.
//!
//! Reads that arrive between two Readys share one heartbeat round, so a
//! burst of reads costs one round trip. Rounds are numbered per term; each
//! peer's highest echoed round lives in its `Progress`.
//!
//! **Lease** (opt-in, [`ringkv_consensus::ReadMode::Lease`], thesis §6.4.1):
//! followers ignore votes for an election timeout after hearing from the
//! leader (check-quorum), so while a quorum has echoed a heartbeat sent less
//! than `election_ticks - drift_ticks` ticks ago, no other leader can exist
//! and the leader answers at once. The lease is void for the rest of a term
//! once the leader has sent `TimeoutNow` (a transfer campaign ignores
//! leases).
//!
//! Followers forward reads to the leader (`ReadIndex` message) and receive
//! the index back (`ReadIndexResponse`), so they serve linearizable reads
//! from their own state machine. A forwarded read whose messages are lost,
//! or that reaches a node that is no longer leader, is dropped silently: the
//! caller times out and retries, as for any lost request.

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
/// Invariant: `waiting` is ascending by round; every round in it is at most
/// `round`.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// Reads not yet covered by a heartbeat round.
    unsent: Vec<PendingRead>,
    /// Reads with their read index, waiting for a quorum to echo `round`.
    waiting: VecDeque<(u64, LogIndex, PendingRead)>,
    /// The last heartbeat round started in this term.
    pub(crate) round: u64,
}

impl ReadOnly {
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

    /// Puts every unsent read behind `round` (just started) at `index`.
    pub(crate) fn assign_unsent(&mut self, round: u64, index: LogIndex) {
        debug_assert!(self.waiting.back().is_none_or(|&(r, _, _)| r <= round));
        self.waiting.extend(self.unsent.drain(..).map(|read| (round, index, read)));
    }

    /// Takes the reads whose round is confirmed by `confirmed(round)`.
    pub(crate) fn take_confirmed(
        &mut self,
        mut confirmed: impl FnMut(u64) -> bool,
        out: &mut Vec<(LogIndex, PendingRead)>,
    ) {
        // Rounds are ascending, and a quorum that echoed round r echoed
        // every earlier round too, so the first unconfirmed one stops us.
        let mut last_checked: Option<(u64, bool)> = None;
        while let Some(&(round, index, read)) = self.waiting.front() {
            let ok = match last_checked {
                Some((r, ok)) if r == round => ok,
                _ => confirmed(round),
            };
            last_checked = Some((round, ok));
            if !ok {
                break;
            }
            self.waiting.pop_front();
            out.push((index, read));
        }
    }

    /// Drops every read (leadership lost); rounds start over.
    pub(crate) fn reset(&mut self) {
        self.unsent.clear();
        self.waiting.clear();
        self.round = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_released_in_round_order() {
        let mut r = ReadOnly::default();
        let read = |id| PendingRead { id: RequestId(id), from: None };
        r.push(read(1));
        let round1 = r.next_round();
        r.assign_unsent(round1, LogIndex(5));
        r.push(read(2));
        r.push(read(3));
        let round2 = r.next_round();
        r.assign_unsent(round2, LogIndex(7));
        assert_eq!(r.pending(), 3);
        let mut out = Vec::new();
        r.take_confirmed(|round| round <= round1, &mut out);
        assert_eq!(out, vec![(LogIndex(5), read(1))]);
        out.clear();
        r.take_confirmed(|_| true, &mut out);
        assert_eq!(out, vec![(LogIndex(7), read(2)), (LogIndex(7), read(3))]);
        assert_eq!(r.pending(), 0);
    }
}
