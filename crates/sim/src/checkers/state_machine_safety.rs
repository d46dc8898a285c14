//! **State-machine safety**: if a server has applied a log entry at a
//! given index to its state machine, no other server will ever apply a
//! different log entry for the same index (Raft, Fig. 3 and §5.4.3).
//!
//! Every application is compared with the first one at that index: the
//! same entry (the same epoch for Raft, see [`Identity`](super::Identity);
//! Multi-Paxos replicas may hold one chosen value under different
//! ballots), the same contents (digest), and the same state-machine *chain* after
//! it (a hash over everything applied up to there, see [`crate::kv`]).
//! Snapshots carry the chain too, so a replica restoring a snapshot at `i`
//! — received from a leader, or its own after a restart — must hold exactly
//! the state every other replica had after applying `i`.

use std::collections::BTreeMap;

use ringkv_consensus::{LogIndex, NodeId};

use super::EntryId;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct AppliedAt {
    /// The entry, once some replica applied it (a snapshot alone does not say).
    entry: Option<(EntryId, u64)>,
    chain: u64,
    first: NodeId,
}

/// What was applied at each index, and the chain after it.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<LogIndex, AppliedAt>,
}

impl StateMachineSafety {
    /// `node` applied the entry `id` at `index` with contents `digest`,
    /// reaching `chain`.
    ///
    /// # Errors
    /// Another replica applied something else at `index`, or reached
    /// another state.
    pub fn on_applied(
        &mut self,
        node: NodeId,
        index: LogIndex,
        id: EntryId,
        digest: u64,
        chain: u64,
    ) -> Result<(), String> {
        let new = AppliedAt { entry: Some((id, digest)), chain, first: node };
        let Some(old) = self.applied.get_mut(&index) else {
            self.applied.insert(index, new);
            return Ok(());
        };
        match old.entry {
            Some((e, d)) if (e, d) != (id, digest) => {
                return Err(format!(
                    "node {node} applied the entry of {id} at {index} but node {} applied the \
                     entry of {e} there{}",
                    old.first,
                    if e == id { " with other contents" } else { "" }
                ));
            }
            None => old.entry = Some((id, digest)),
            Some(_) => {}
        }
        if old.chain != chain {
            return Err(format!(
                "node {node} reached another state-machine state than node {} after applying \
                 the same entry of {id} at {index}: their earlier histories differ",
                old.first
            ));
        }
        Ok(())
    }

    /// `node`'s state machine now holds a snapshot at `index` with `chain`
    /// (restored from a leader's snapshot, or from its own after a restart).
    ///
    /// # Errors
    /// Another replica had another state after applying `index`.
    pub fn on_snapshot(&mut self, node: NodeId, index: LogIndex, chain: u64) -> Result<(), String> {
        if index == LogIndex::ZERO {
            return Ok(());
        }
        match self.applied.get(&index) {
            None => {
                self.applied.insert(index, AppliedAt { entry: None, chain, first: node });
                Ok(())
            }
            Some(old) if old.chain != chain => Err(format!(
                "node {node} holds a snapshot at {index} whose state differs from the state \
                 node {} reached there",
                old.first
            )),
            Some(_) => Ok(()),
        }
    }

    /// The highest index any replica applied.
    pub fn last_applied(&self) -> LogIndex {
        self.applied.keys().next_back().copied().unwrap_or(LogIndex::ZERO)
    }

    /// The chain recorded after `index`, if any replica reached it.
    pub fn chain_at(&self, index: LogIndex) -> Option<u64> {
        self.applied.get(&index).map(|a| a.chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> EntryId {
        EntryId::Epoch(ringkv_consensus::Epoch::term(n))
    }

    #[test]
    fn different_entries_at_one_index_are_caught() {
        let mut c = StateMachineSafety::default();
        c.on_applied(NodeId(1), LogIndex(1), t(1), 5, 50).unwrap();
        c.on_applied(NodeId(2), LogIndex(1), t(1), 5, 50).unwrap();
        assert!(c.on_applied(NodeId(3), LogIndex(1), t(2), 5, 51).is_err());
        assert!(c.on_applied(NodeId(3), LogIndex(1), t(1), 6, 50).is_err());
        assert!(c.on_applied(NodeId(3), LogIndex(1), t(1), 5, 49).is_err());
    }

    #[test]
    fn snapshots_must_match_applied_state() {
        let mut c = StateMachineSafety::default();
        c.on_snapshot(NodeId(1), LogIndex(4), 40).unwrap();
        c.on_applied(NodeId(2), LogIndex(4), t(1), 1, 40).unwrap();
        assert!(c.on_snapshot(NodeId(3), LogIndex(4), 41).is_err());
        assert!(c.on_applied(NodeId(3), LogIndex(4), t(1), 1, 41).is_err());
        assert_eq!(c.last_applied(), LogIndex(4));
    }
}
