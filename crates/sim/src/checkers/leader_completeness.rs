//! **Leader completeness**: if a log entry is committed in a given term,
//! that entry will be present in the logs of the leaders for all
//! higher-numbered terms (Raft, Fig. 3 and §5.4). For Multi-Paxos: a
//! proposer that wins phase 1 with a ballot above the one a value was
//! chosen in holds that value at its slot ("Paxos Made Simple", P2b/P2c:
//! every later ballot proposes only the chosen value), which it learns
//! from the promises before it proposes anything.
//!
//! Entries count as committed once any replica reports a commit index
//! covering them (with the entry its log holds there, named by the
//! engine's [`Identity`](super::Identity): the term for Raft, the value for
//! Multi-Paxos, which re-proposes chosen values under its own ballot). The
//! property binds leaders of epochs *after* the one the entry was committed
//! in, which no replica knows exactly; the reporting replica's current
//! epoch is an upper bound (it learned of the commit in that epoch or
//! later), so the checker binds leaders of epochs above the lowest such
//! bound seen. (A leader of an older epoch can legitimately be elected
//! late, from votes still in flight, and lack the entry: it can commit
//! nothing.)
//!
//! Whenever a replica becomes leader, every entry bound to it above its
//! snapshot must be in its log; entries below its snapshot are covered by
//! the state-machine checker's snapshot chains. A committed entry is only
//! ever observed after it was committed, so the check never runs ahead of
//! the property.

use std::collections::BTreeMap;

use ringkv_consensus::{Epoch, LogIndex, NodeId};

use super::EntryId;

/// Entries known committed, by index: `(entry, committed no later than)`.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<LogIndex, (EntryId, Epoch)>,
}

impl LeaderCompleteness {
    /// Entries reported committed by a replica in epoch `at`. Conflicting
    /// reports are the commit checker's to flag; the first entry stands
    /// here, with the lowest epoch it was reported in.
    pub fn on_committed(&mut self, at: Epoch, entries: &[(LogIndex, EntryId)]) {
        for &(index, id) in entries {
            let e = self.committed.entry(index).or_insert((id, at));
            e.1 = e.1.min(at);
        }
    }

    /// `node` became leader of `epoch`; `id_at` reads its log (including
    /// entries not yet persisted), whose entries up to `snapshot` are
    /// compacted.
    ///
    /// # Errors
    /// A committed entry is missing from the new leader's log.
    pub fn on_leader(
        &self,
        node: NodeId,
        epoch: Epoch,
        snapshot: LogIndex,
        id_at: impl Fn(LogIndex) -> Option<EntryId>,
    ) -> Result<(), String> {
        for (&index, &(committed, by)) in self.committed.range(snapshot.next()..) {
            if by >= epoch {
                continue;
            }
            let found = id_at(index);
            if found != Some(committed) {
                let found = found.map_or("nothing".to_string(), |e| e.to_string());
                return Err(format!(
                    "node {node} leads epoch {epoch} but holds {found} at index {index}, \
                     where the entry of {committed} was committed"
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

    const T1: EntryId = EntryId::Epoch(Epoch::term(1));

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut c = LeaderCompleteness::default();
        c.on_committed(Epoch::term(1), &[(LogIndex(1), T1), (LogIndex(2), T1)]);
        let full = |i: LogIndex| (i.0 <= 3).then_some(T1);
        c.on_leader(NodeId(1), Epoch::term(2), LogIndex::ZERO, full).unwrap();
        let short = |i: LogIndex| (i.0 <= 1).then_some(T1);
        assert!(c.on_leader(NodeId(2), Epoch::term(3), LogIndex::ZERO, short).is_err());
        // Compacted entries are not looked up.
        c.on_leader(NodeId(2), Epoch::term(3), LogIndex(2), short).unwrap();
        let other = |_| Some(EntryId::Epoch(Epoch::term(7)));
        assert!(c.on_leader(NodeId(3), Epoch::term(8), LogIndex::ZERO, other).is_err());
    }

    #[test]
    fn a_late_leader_of_an_older_term_is_not_bound() {
        let mut c = LeaderCompleteness::default();
        let t3 = EntryId::Epoch(Epoch::term(3));
        c.on_committed(Epoch::term(3), &[(LogIndex(2), t3)]);
        let stale = |i: LogIndex| (i.0 <= 2).then_some(EntryId::Epoch(Epoch::term(2)));
        c.on_leader(NodeId(2), Epoch::term(2), LogIndex::ZERO, stale).unwrap();
        c.on_leader(NodeId(2), Epoch::term(3), LogIndex::ZERO, stale).unwrap();
        assert!(c.on_leader(NodeId(2), Epoch::term(4), LogIndex::ZERO, stale).is_err());
    }

    #[test]
    fn values_are_compared_not_ballots() {
        let mut c = LeaderCompleteness::default();
        let b = |round| Epoch::ballot(round, NodeId(1));
        c.on_committed(b(2), &[(LogIndex(1), EntryId::Value(9))]);
        // The next leader re-proposed the chosen value under its ballot:
        // the identity is the same value.
        c.on_leader(NodeId(2), b(3), LogIndex::ZERO, |_| Some(EntryId::Value(9))).unwrap();
        assert!(c.on_leader(NodeId(3), b(4), LogIndex::ZERO, |_| Some(EntryId::Value(8))).is_err());
        assert!(c.on_leader(NodeId(3), b(4), LogIndex::ZERO, |_| None).is_err());
    }
}
