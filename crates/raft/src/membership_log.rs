//! Which configuration is in effect at each point of the log.
//!
//! A server uses the latest configuration in its log, committed or not
//! (thesis §4.1): a configuration takes effect when its entry is appended
//! and is undone when a conflicting append truncates that entry. This module
//! keeps the configurations of the log's membership entries, above a base
//! taken from the snapshot, so truncation can fall back to the previous one
//! and a restart can recover the current one.
//!
//! Invariant: `history` is non-empty and strictly ascending by index; its
//! first element is the base (the snapshot's configuration).

use ringkv_consensus::{LogIndex, Membership};

#[derive(Clone, Debug)]
pub(crate) struct MembershipLog {
    history: Vec<(LogIndex, Membership)>,
}

impl MembershipLog {
    /// Starts from the configuration in effect at a snapshot `index`.
    pub(crate) fn new(index: LogIndex, base: Membership) -> MembershipLog {
        MembershipLog { history: vec![(index, base)] }
    }

    /// The configuration in effect (the latest in the log).
    pub(crate) fn current(&self) -> &Membership {
        &self.history.last().expect("membership history is never empty").1
    }

    /// The index of the entry that set the current configuration (the
    /// snapshot index for the base).
    pub(crate) fn current_index(&self) -> LogIndex {
        self.history.last().expect("membership history is never empty").0
    }

    /// The configuration in effect at `index`; `None` if that is below the
    /// base, or unknown: a replica that joined with an empty configuration
    /// and received the log from the start never saw the configurations
    /// before its first membership entry (the initial one lives in the
    /// other replicas' snapshot metadata, not in the log).
    pub(crate) fn at(&self, index: LogIndex) -> Option<&Membership> {
        if index < self.history[0].0 {
            return None;
        }
        let m = self.history.iter().rev().find(|(i, _)| *i <= index).map(|(_, m)| m)?;
        (*m != Membership::default()).then_some(m)
    }

    /// A membership entry at `index` was appended.
    pub(crate) fn push(&mut self, index: LogIndex, membership: Membership) {
        assert!(index > self.current_index(), "membership entries out of order");
        self.history.push((index, membership));
    }

    /// The log was truncated from `index` on: forget configurations there.
    /// Returns whether the current configuration changed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) -> bool {
        let before = self.history.len();
        while self.history.len() > 1 && self.current_index() >= index {
            self.history.pop();
        }
        assert!(self.history[0].0 < index, "truncating the base configuration at {index}");
        self.history.len() != before
    }

    /// The log was replaced by a snapshot.
    pub(crate) fn reset(&mut self, index: LogIndex, base: Membership) {
        self.history.clear();
        self.history.push((index, base));
    }

    /// Forgets configurations superseded at or before `index` (the storage
    /// snapshot), keeping the one in effect there as the new base.
    pub(crate) fn prune_to(&mut self, index: LogIndex) {
        let keep_from = self.history.iter().rposition(|(i, _)| *i <= index).unwrap_or(0);
        self.history.drain(..keep_from);
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
    fn truncation_reverts_to_the_previous_configuration() {
        let mut log = MembershipLog::new(LogIndex(0), m(&[1, 2, 3]));
        log.push(LogIndex(5), m(&[1, 2, 3, 4]));
        log.push(LogIndex(9), m(&[1, 2, 3]));
        assert!(!log.truncate_from(LogIndex(10)));
        assert!(log.truncate_from(LogIndex(7)));
        assert_eq!(log.current(), &m(&[1, 2, 3, 4]));
        assert_eq!(log.current_index(), LogIndex(5));
        assert_eq!(log.at(LogIndex(4)), Some(&m(&[1, 2, 3])));
    }

    #[test]
    fn pruning_keeps_the_configuration_in_effect() {
        let mut log = MembershipLog::new(LogIndex(0), m(&[1]));
        log.push(LogIndex(3), m(&[1, 2]));
        log.push(LogIndex(8), m(&[1, 2, 3]));
        log.prune_to(LogIndex(5));
        assert_eq!(log.at(LogIndex(5)), Some(&m(&[1, 2])));
        assert_eq!(log.at(LogIndex(2)), None);
        assert_eq!(log.current(), &m(&[1, 2, 3]));
    }

    #[test]
    fn configurations_before_a_joiners_first_entry_are_unknown() {
        let mut log = MembershipLog::new(LogIndex(0), Membership::default());
        log.push(LogIndex(7), m(&[1, 2, 3, 4]));
        assert_eq!(log.at(LogIndex(6)), None);
        assert_eq!(log.at(LogIndex(7)), Some(&m(&[1, 2, 3, 4])));
    }
}
