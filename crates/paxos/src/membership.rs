//! Which configuration decides each slot: chosen membership entries and α.
//!
//! A configuration chosen at slot `s` governs slots `s + α` and later
//! (α = `delay`), so the configuration of slot `t` depends only on slots at
//! or below `t - α`. A leader sends phase 2 for slot `t` only when
//! `t <= commit + α`, so the configuration of every slot it proposes is
//! fixed by its chosen prefix. The base configuration (from the snapshot, or
//! the initial one) governs every slot after its index until the first
//! later entry takes effect.
//!
//! Only **chosen** (committed) membership entries live here; accepted ones
//! above the commit point are the engine's business until they commit.
//!
//! Invariant: `history` is non-empty and strictly ascending by slot; the
//! first element is the base.

use ringkv_consensus::{LogIndex, Membership};

#[derive(Clone, Debug)]
pub(crate) struct MembershipHistory {
    history: Vec<(LogIndex, Membership)>,
    delay: u64,
}

impl MembershipHistory {
    /// Starts from `base`, in effect for every slot after `index`.
    pub(crate) fn new(index: LogIndex, base: Membership, delay: u64) -> MembershipHistory {
        assert!(delay > 0, "a configuration cannot govern its own slot");
        MembershipHistory { history: vec![(index, base)], delay }
    }

    /// The first slot that element `i` of the history governs.
    fn effective_from(&self, i: usize) -> LogIndex {
        let slot = self.history[i].0;
        if i == 0 { slot.next() } else { slot.plus(self.delay) }
    }

    /// The configuration that decides `slot`.
    pub(crate) fn config_for(&self, slot: LogIndex) -> &Membership {
        let i =
            (0..self.history.len()).rev().find(|&i| self.effective_from(i) <= slot).unwrap_or(0);
        &self.history[i].1
    }

    /// Every configuration that decides some slot after `commit`, oldest
    /// first: the one in effect at `commit + 1` and the chosen ones not yet
    /// in effect there.
    pub(crate) fn governing_after(
        &self,
        commit: LogIndex,
    ) -> impl Iterator<Item = &Membership> + '_ {
        let start = commit.next();
        std::iter::once(self.config_for(start)).chain(
            (0..self.history.len())
                .filter(move |&i| self.effective_from(i) > start)
                .map(|i| &self.history[i].1),
        )
    }

    /// The slot of the latest chosen entry that is not yet in effect at
    /// `commit + 1`, if any: a change still on its way.
    pub(crate) fn pending_after(&self, commit: LogIndex) -> Option<LogIndex> {
        let i = self.history.len() - 1;
        (i > 0 && self.effective_from(i) > commit.next()).then(|| self.history[i].0)
    }

    /// The configuration to record with a snapshot at `index`: the one that
    /// decides the slots after it. `None` when a change chosen at or before
    /// `index` takes effect only after `index + 1` (the snapshot could not
    /// say when), when `index` is below the base, or when this replica
    /// never learned the configuration (it joined empty).
    pub(crate) fn for_snapshot_at(&self, index: LogIndex) -> Option<Membership> {
        if index < self.history[0].0 {
            return None;
        }
        let pending_across = (1..self.history.len())
            .any(|i| self.history[i].0 <= index && self.effective_from(i) > index.next());
        if pending_across {
            return None;
        }
        let m = self.config_for(index.next());
        (*m != Membership::default()).then(|| m.clone())
    }

    /// A membership entry at `slot` was chosen.
    pub(crate) fn push(&mut self, slot: LogIndex, membership: Membership) {
        let last = self.history.last().expect("membership history is never empty").0;
        assert!(slot > last, "chosen membership entries out of order: {slot} after {last}");
        self.history.push((slot, membership));
    }

    /// The log was replaced by a snapshot at `index` with `base` deciding
    /// the slots after it.
    pub(crate) fn reset(&mut self, index: LogIndex, base: Membership) {
        self.history.clear();
        self.history.push((index, base));
    }

    /// Forgets configurations that decide no slot after `index` (the
    /// storage's snapshot), keeping the one in effect at `index + 1` as the
    /// new base.
    pub(crate) fn prune_to(&mut self, index: LogIndex) {
        let keep = (0..self.history.len())
            .rev()
            .find(|&i| self.effective_from(i) <= index.next())
            .unwrap_or(0);
        if keep == 0 {
            return;
        }
        // The kept element becomes the base, which is in effect right after
        // its slot; rewrite its slot so that holds.
        let base = self.history[keep].1.clone();
        self.history.drain(..=keep);
        self.history.insert(0, (index, base));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_consensus::NodeId;

    fn m(ids: &[u64]) -> Membership {
        Membership::new(ids.iter().map(|&i| NodeId(i)))
    }

    #[test]
    fn a_change_takes_effect_alpha_slots_later() {
        let mut h = MembershipHistory::new(LogIndex(0), m(&[1, 2, 3]), 4);
        h.push(LogIndex(5), m(&[1, 2, 3, 4]));
        assert_eq!(h.config_for(LogIndex(8)), &m(&[1, 2, 3]));
        assert_eq!(h.config_for(LogIndex(9)), &m(&[1, 2, 3, 4]));
        let after = |c| h.governing_after(LogIndex(c)).cloned().collect::<Vec<_>>();
        assert_eq!(after(5), vec![m(&[1, 2, 3]), m(&[1, 2, 3, 4])]);
        assert_eq!(after(8), vec![m(&[1, 2, 3, 4])]);
        assert_eq!(h.pending_after(LogIndex(7)), Some(LogIndex(5)));
        assert_eq!(h.pending_after(LogIndex(8)), None);
    }

    #[test]
    fn snapshots_are_refused_across_a_pending_change() {
        let mut h = MembershipHistory::new(LogIndex(0), m(&[1]), 4);
        h.push(LogIndex(5), m(&[1, 2]));
        assert_eq!(h.for_snapshot_at(LogIndex(4)), Some(m(&[1])));
        assert_eq!(h.for_snapshot_at(LogIndex(6)), None, "the change at 5 takes effect at 9");
        assert_eq!(h.for_snapshot_at(LogIndex(8)), Some(m(&[1, 2])));
    }

    #[test]
    fn pruning_keeps_what_decides_later_slots() {
        let mut h = MembershipHistory::new(LogIndex(0), m(&[1]), 4);
        h.push(LogIndex(5), m(&[1, 2]));
        h.push(LogIndex(20), m(&[1, 2, 3]));
        h.prune_to(LogIndex(10));
        assert_eq!(h.config_for(LogIndex(11)), &m(&[1, 2]));
        assert_eq!(h.config_for(LogIndex(24)), &m(&[1, 2, 3]));
        assert_eq!(h.for_snapshot_at(LogIndex(9)), None, "below the new base");
    }
}
