//! **Leader completeness**: if a log entry is committed in a given term,
//! that entry will be present in the logs of the leaders for all
//! higher-numbered terms (Raft, Fig. 3 and §5.4).
//!
//! Entries count as committed once any replica reports a commit index
//! covering them (with the epoch its log holds there). The property binds
//! leaders of terms *after* the one the entry was committed in, which no
//! replica knows exactly; the reporting replica's current epoch is an upper
//! bound (it learned of the commit in that epoch or later), so the checker
//! binds leaders of epochs above the lowest such bound seen. (A leader of
//! an older term can legitimately be elected late, from votes still in
//! flight, and lack the entry: it can commit nothing.)
//!
//! Whenever a replica becomes leader, every entry bound to it above its
//! snapshot must be in its log with the same epoch; entries below its
//! snapshot are covered by the state-machine checker's snapshot chains.
//! A committed entry is only ever observed after it was committed, so the
//! check never runs ahead of the property.

use std::collections::BTreeMap;

use ringkv_consensus::{Epoch, LogIndex, NodeId};

/// Entries known committed, by index: `(entry epoch, committed no later than)`.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<LogIndex, (Epoch, Epoch)>,
}

impl LeaderCompleteness {
    /// Entries reported committed by a replica in epoch `at`. Conflicting
    /// reports are the commit checker's to flag; the first entry stands
    /// here, with the lowest epoch it was reported in.
    pub fn on_committed(&mut self, at: Epoch, entries: &[(LogIndex, Epoch)]) {
        for &(index, epoch) in entries {
            let e = self.committed.entry(index).or_insert((epoch, at));
            e.1 = e.1.min(at);
        }
    }

    /// `node` became leader of `epoch`; `epoch_at` reads its log, whose
    /// entries up to `snapshot` are compacted.
    ///
    /// # Errors
    /// A committed entry is missing from the new leader's log.
    pub fn on_leader(
        &self,
        node: NodeId,
        epoch: Epoch,
        snapshot: LogIndex,
        epoch_at: impl Fn(LogIndex) -> Option<Epoch>,
    ) -> Result<(), String> {
        for (&index, &(committed, by)) in self.committed.range(snapshot.next()..) {
            if by >= epoch {
                continue;
            }
            let found = epoch_at(index);
            if found != Some(committed) {
                let found = found.map_or("nothing".to_string(), |e| format!("epoch {e}"));
                return Err(format!(
                    "node {node} leads epoch {epoch} but holds {found} at index {index}, \
                     where an entry of epoch {committed} was committed"
                ));
            }
        }
        Ok(())
    }

    /// How many entries are known committed.
    pub fn committed(&self) -> u64 {
        self.committed.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut c = LeaderCompleteness::default();
        c.on_committed(
            Epoch::term(1),
            &[(LogIndex(1), Epoch::term(1)), (LogIndex(2), Epoch::term(1))],
        );
        let full = |i: LogIndex| (i.0 <= 3).then_some(Epoch::term(1));
        c.on_leader(NodeId(1), Epoch::term(2), LogIndex::ZERO, full).unwrap();
        let short = |i: LogIndex| (i.0 <= 1).then_some(Epoch::term(1));
        assert!(c.on_leader(NodeId(2), Epoch::term(3), LogIndex::ZERO, short).is_err());
        // Compacted entries are not looked up.
        c.on_leader(NodeId(2), Epoch::term(3), LogIndex(2), short).unwrap();
        let other = |_| Some(Epoch::term(7));
        assert!(c.on_leader(NodeId(3), Epoch::term(8), LogIndex::ZERO, other).is_err());
    }

    #[test]
    fn a_late_leader_of_an_older_term_is_not_bound() {
        let mut c = LeaderCompleteness::default();
        c.on_committed(Epoch::term(3), &[(LogIndex(2), Epoch::term(3))]);
        let stale = |i: LogIndex| (i.0 <= 2).then_some(Epoch::term(2));
        c.on_leader(NodeId(2), Epoch::term(2), LogIndex::ZERO, stale).unwrap();
        c.on_leader(NodeId(2), Epoch::term(3), LogIndex::ZERO, stale).unwrap();
        assert!(c.on_leader(NodeId(2), Epoch::term(4), LogIndex::ZERO, stale).is_err());
    }
}
