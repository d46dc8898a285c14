//! **Durability**: a write acknowledged to a client is never lost. Its
//! entry stays in the log of every leader of a later epoch, at the same
//! index with the same epoch (or below that leader's snapshot), and at the
//! end of the run every replica of the final configuration has applied it.
//! "Later" is counted from the epoch of the replica that acknowledged it,
//! an upper bound of the epoch the write was committed in (see
//! [`super::leader_completeness`] for why a late leader of an older epoch
//! is not bound).
//!
//! An acknowledgement means the entry carrying the request was applied at
//! the replica that answered — committed, and durable on a quorum by the
//! consensus contract. A replica that acknowledges before its followers
//! have the entry on disk (or a leader elected without it) breaks this
//! after a crash, even when no two replicas ever apply different entries.

use std::collections::BTreeMap;

use ringkv_consensus::{Epoch, LogIndex, NodeId};

use super::EntryId;

/// Every acknowledged write's entry, by index: `(entry, acknowledged in)`.
#[derive(Debug, Default)]
pub struct Durability {
    acked: BTreeMap<LogIndex, (EntryId, Epoch)>,
}

impl Durability {
    /// `node`, in epoch `at`, acknowledged a write because entry `id` at
    /// `index` was applied.
    ///
    /// # Errors
    /// Another entry was acknowledged at the same index.
    pub fn on_acked(
        &mut self,
        node: NodeId,
        at: Epoch,
        index: LogIndex,
        id: EntryId,
    ) -> Result<(), String> {
        match self.acked.get_mut(&index) {
            Some((old, _)) if *old != id => Err(format!(
                "node {node} acknowledged a write as the entry of {id} at {index}, but a write \
                 was already acknowledged there as the entry of {old}"
            )),
            Some((_, by)) => {
                *by = (*by).min(at);
                Ok(())
            }
            None => {
                self.acked.insert(index, (id, at));
                Ok(())
            }
        }
    }

    /// `node` became leader of `epoch`; `id_at` reads its log (including
    /// entries not yet persisted), whose entries up to `snapshot` are
    /// compacted.
    ///
    /// # Errors
    /// An acknowledged write is missing from the new leader's log.
    pub fn on_leader(
        &self,
        node: NodeId,
        epoch: Epoch,
        snapshot: LogIndex,
        id_at: impl Fn(LogIndex) -> Option<EntryId>,
    ) -> Result<(), String> {
        for (&index, &(acked, by)) in self.acked.range(snapshot.next()..) {
            if by >= epoch {
                continue;
            }
            let found = id_at(index);
            if found != Some(acked) {
                let found = found.map_or("nothing".to_string(), |e| e.to_string());
                return Err(format!(
                    "node {node} leads epoch {epoch} but holds {found} at index {index}, \
                     where a write acknowledged to a client sits as the entry of {acked}"
                ));
            }
        }
        Ok(())
    }

    /// At the end of the run: `node` of the final configuration has
    /// applied up to `applied`.
    ///
    /// # Errors
    /// It has not applied every acknowledged write.
    pub fn at_end(&self, node: NodeId, applied: LogIndex) -> Result<(), String> {
        match self.acked.keys().next_back() {
            Some(&last) if last > applied => Err(format!(
                "at the end node {node} has applied up to {applied}, short of the acknowledged \
                 write at {last}"
            )),
            _ => Ok(()),
        }
    }

    /// The highest index of an acknowledged write.
    pub fn last_acked(&self) -> LogIndex {
        self.acked.keys().next_back().copied().unwrap_or(LogIndex::ZERO)
    }

    /// How many acknowledged writes were recorded.
    pub fn acked(&self) -> u64 {
        self.acked.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_acknowledged_writes_are_caught() {
        let t = |n| EntryId::Epoch(Epoch::term(n));
        let mut c = Durability::default();
        c.on_acked(NodeId(1), Epoch::term(2), LogIndex(3), t(2)).unwrap();
        assert!(c.on_acked(NodeId(2), Epoch::term(3), LogIndex(3), t(3)).is_err());
        let has = |i: LogIndex| (i.0 <= 3).then_some(t(2));
        c.on_leader(NodeId(2), Epoch::term(4), LogIndex::ZERO, has).unwrap();
        let lacks = |i: LogIndex| (i.0 <= 2).then_some(t(2));
        assert!(c.on_leader(NodeId(3), Epoch::term(5), LogIndex::ZERO, lacks).is_err());
        assert!(c.at_end(NodeId(3), LogIndex(2)).is_err());
        c.at_end(NodeId(3), LogIndex(3)).unwrap();
    }
}
