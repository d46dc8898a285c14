//! **Linearizable reads (ReadIndex)**: a read is served at an index that
//! covers every entry committed before the read was asked (Raft thesis
//! §6.4: the leader records its commit index, confirms it still leads, and
//! the read waits until that index is applied).
//!
//! When a replica accepts a read, the checker notes the highest commit
//! index any replica has reported so far (each was committed before the
//! read was asked); the index the engine confirms for the read must not be
//! below it. This is sharper than the client history check: it needs no
//! conflicting write on the same key, only a leader answering from a stale
//! commit index.

use std::collections::BTreeMap;

use ringkv_consensus::{LogIndex, NodeId};

/// Reads in flight and the commit index each must cover.
#[derive(Debug, Default)]
pub struct ReadIndexSafety {
    max_committed: LogIndex,
    asked: BTreeMap<(NodeId, u64), LogIndex>,
}

impl ReadIndexSafety {
    /// Some replica reports `commit` committed.
    pub fn on_committed(&mut self, commit: LogIndex) {
        self.max_committed = self.max_committed.max(commit);
    }

    /// `node` (re)started: its read ids start over.
    pub fn on_boot(&mut self, node: NodeId) {
        self.asked.retain(|(n, _), _| *n != node);
    }

    /// `node` accepted read `id`.
    pub fn on_asked(&mut self, node: NodeId, id: u64) {
        self.asked.insert((node, id), self.max_committed);
    }

    /// The engine confirmed read `id` of `node` at `index`.
    ///
    /// # Errors
    /// `index` misses an entry committed before the read was asked.
    pub fn on_confirmed(&mut self, node: NodeId, id: u64, index: LogIndex) -> Result<(), String> {
        match self.asked.remove(&(node, id)) {
            Some(required) if index < required => Err(format!(
                "node {node} confirmed read {id} at index {index}, but index {required} was \
                 already committed when the read was asked"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_read_index_is_caught() {
        let mut c = ReadIndexSafety::default();
        c.on_committed(LogIndex(5));
        c.on_asked(NodeId(1), 1);
        c.on_committed(LogIndex(9));
        c.on_confirmed(NodeId(1), 1, LogIndex(5)).unwrap();
        c.on_asked(NodeId(2), 1);
        assert!(c.on_confirmed(NodeId(2), 1, LogIndex(8)).is_err());
        // Ids start over after a restart.
        c.on_asked(NodeId(3), 1);
        c.on_boot(NodeId(3));
        c.on_confirmed(NodeId(3), 1, LogIndex(0)).unwrap();
    }
}
