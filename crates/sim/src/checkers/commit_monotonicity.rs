//! **Commit monotonicity**: what is committed stays committed.
//!
//! * A replica's commit index never decreases while it runs (Fig. 2:
//!   `commitIndex` increases monotonically); a restart may recover a lower
//!   one, since persisting it is an optimisation.
//! * A replica applies entries in index order, each once, without gaps
//!   (Fig. 2: `lastApplied` follows `commitIndex`); a snapshot moves it
//!   forward, never back.
//! * An index, once committed anywhere, is committed with the same entry
//!   everywhere and forever: two replicas never report different entries
//!   (epochs for Raft, values for Multi-Paxos: see
//!   [`Identity`](super::Identity)) as committed at one index.

use std::collections::BTreeMap;

use ringkv_consensus::{LogIndex, NodeId};

use super::EntryId;

#[derive(Copy, Clone, Debug, Default)]
struct Cursor {
    commit: LogIndex,
    applied: LogIndex,
}

/// Per-replica cursors and the committed prefix.
#[derive(Debug, Default)]
pub struct CommitMonotonicity {
    nodes: BTreeMap<NodeId, Cursor>,
    committed: BTreeMap<LogIndex, (EntryId, NodeId)>,
}

impl CommitMonotonicity {
    /// `node` (re)started with `commit` recovered and its state machine at `applied`.
    pub fn on_boot(&mut self, node: NodeId, commit: LogIndex, applied: LogIndex) {
        self.nodes.insert(node, Cursor { commit, applied });
    }

    /// `node` reports its commit index moved to `commit`; `entries` are the
    /// newly committed entries it holds.
    ///
    /// # Errors
    /// The commit index went back, or an index is committed with two entries.
    pub fn on_committed(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        entries: &[(LogIndex, EntryId)],
    ) -> Result<(), String> {
        let c = self.nodes.entry(node).or_default();
        if commit < c.commit {
            return Err(format!(
                "node {node}'s commit index went back from {} to {commit}",
                c.commit
            ));
        }
        c.commit = commit;
        for &(index, id) in entries {
            match self.committed.get(&index) {
                Some(&(e, other)) if e != id => {
                    return Err(format!(
                        "node {node} committed the entry of {id} at {index} but node {other} \
                         committed the entry of {e} there"
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, (id, node));
                }
            }
        }
        Ok(())
    }

    /// `node` applied the entry at `index`.
    ///
    /// # Errors
    /// Not the entry after the last one it applied.
    pub fn on_applied(&mut self, node: NodeId, index: LogIndex) -> Result<(), String> {
        let c = self.nodes.entry(node).or_default();
        if index != c.applied.next() {
            return Err(format!(
                "node {node} applied entry {index} right after entry {}: entries must be \
                 applied once each, in order",
                c.applied
            ));
        }
        c.applied = index;
        Ok(())
    }

    /// `node` restored a snapshot at `index` into its state machine.
    ///
    /// # Errors
    /// The snapshot is older than what it had applied.
    pub fn on_snapshot(&mut self, node: NodeId, index: LogIndex) -> Result<(), String> {
        let c = self.nodes.entry(node).or_default();
        if index < c.applied {
            return Err(format!(
                "node {node} restored a snapshot at {index} after applying up to {}: its state \
                 machine went back",
                c.applied
            ));
        }
        c.applied = index;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_going_back_is_caught_but_not_across_restarts() {
        let mut c = CommitMonotonicity::default();
        c.on_committed(NodeId(1), LogIndex(5), &[]).unwrap();
        assert!(c.on_committed(NodeId(1), LogIndex(4), &[]).is_err());
        c.on_boot(NodeId(1), LogIndex(2), LogIndex(0));
        c.on_committed(NodeId(1), LogIndex(3), &[]).unwrap();
    }

    #[test]
    fn two_entries_committed_at_one_index_are_caught() {
        let t = |n| EntryId::Epoch(ringkv_consensus::Epoch::term(n));
        let mut c = CommitMonotonicity::default();
        c.on_committed(NodeId(1), LogIndex(1), &[(LogIndex(1), t(1))]).unwrap();
        c.on_committed(NodeId(2), LogIndex(1), &[(LogIndex(1), t(1))]).unwrap();
        assert!(c.on_committed(NodeId(3), LogIndex(1), &[(LogIndex(1), t(2))]).is_err());
        let mut c = CommitMonotonicity::default();
        c.on_committed(NodeId(1), LogIndex(1), &[(LogIndex(1), EntryId::Value(4))]).unwrap();
        let other = [(LogIndex(1), EntryId::Value(5))];
        assert!(c.on_committed(NodeId(2), LogIndex(1), &other).is_err());
    }

    #[test]
    fn applies_must_be_in_order() {
        let mut c = CommitMonotonicity::default();
        c.on_applied(NodeId(1), LogIndex(1)).unwrap();
        assert!(c.on_applied(NodeId(1), LogIndex(1)).is_err());
        assert!(c.on_applied(NodeId(1), LogIndex(3)).is_err());
        c.on_snapshot(NodeId(1), LogIndex(7)).unwrap();
        c.on_applied(NodeId(1), LogIndex(8)).unwrap();
        assert!(c.on_snapshot(NodeId(1), LogIndex(6)).is_err());
    }
}
