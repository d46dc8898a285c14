//! **Log matching**: if two logs contain an entry with the same index and
//! term, the logs are identical in all entries up through that index
//! (Raft, Fig. 3 and §5.3).
//!
//! Checked incrementally, over every entry any replica ever writes: the
//! first write of `(index, epoch)` registers the entry's digest and the
//! epoch of the entry before it; every later write of the same `(index,
//! epoch)`, by any replica, must agree on both. Agreement on the preceding
//! epoch at every index gives, by induction, agreement on the whole prefix
//! (the argument of §5.3), without comparing whole logs.
//!
//! When the preceding epoch is unknown (the entry follows a snapshot) only
//! the entry itself is compared.
//!
//! **Multi-Paxos** ([`Identity::Value`]) has no prefix property: acceptors'
//! logs legitimately differ below a slot (holes, values accepted in older
//! ballots, chosen values re-accepted in newer ones). What it has is *one
//! value per slot per ballot* ("Paxos Made Simple" §2.2: a proposer
//! proposes at most one value per slot in a ballot, and ballots are unique
//! to proposers), which learning relies on. So only the entry is compared:
//! every write of `(slot, ballot)`, by any acceptor, must hold the same
//! value. Vacant slots (ballot zero) hold no value and are skipped.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use ringkv_consensus::{Epoch, LogIndex, NodeId};

use crate::checkers::{FixedHasher, Identity};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Written {
    digest: u64,
    prev: Option<Epoch>,
}

/// Every `(index, epoch)` ever written, with what it held.
#[derive(Debug)]
pub struct LogMatching {
    /// Whether the entry before each one is compared too (Raft).
    prefix: bool,
    written: HashMap<(LogIndex, Epoch), Written, BuildHasherDefault<FixedHasher>>,
}

impl Default for LogMatching {
    fn default() -> LogMatching {
        LogMatching::new(Identity::default())
    }
}

impl LogMatching {
    /// The checker for an engine whose entries are named by `identity`.
    pub fn new(identity: Identity) -> LogMatching {
        LogMatching { prefix: identity == Identity::Epoch, written: HashMap::default() }
    }

    /// The digest of what was written as `index@epoch`, if it was.
    pub fn digest(&self, index: LogIndex, epoch: Epoch) -> Option<u64> {
        self.written.get(&(index, epoch)).map(|w| w.digest)
    }

    /// `node` wrote `entries` (`(index, epoch, digest)`, contiguous) after
    /// an entry of epoch `prev_epoch`.
    ///
    /// # Errors
    /// An `(index, epoch)` already written with other contents or after
    /// another epoch.
    pub fn on_write(
        &mut self,
        node: NodeId,
        prev_epoch: Option<Epoch>,
        entries: &[(LogIndex, Epoch, u64)],
    ) -> Result<(), String> {
        let mut prev = prev_epoch.filter(|_| self.prefix);
        for &(index, epoch, digest) in entries {
            if !self.prefix && epoch == Epoch::ZERO {
                continue;
            }
            let new = Written { digest, prev };
            match self.written.get_mut(&(index, epoch)) {
                None => {
                    self.written.insert((index, epoch), new);
                }
                Some(old) => {
                    if old.digest != digest {
                        return Err(format!(
                            "node {node} wrote {index}@{epoch} with other contents than an earlier write"
                        ));
                    }
                    match (old.prev, prev) {
                        (Some(a), Some(b)) if a != b => {
                            return Err(format!(
                                "node {node} wrote {index}@{epoch} after an entry of epoch {b}, \
                                 another replica after epoch {a}: the logs differ before it"
                            ));
                        }
                        (None, Some(_)) => old.prev = prev,
                        _ => {}
                    }
                }
            }
            prev = Some(epoch).filter(|_| self.prefix);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Epoch = Epoch::term(1);
    const T2: Epoch = Epoch::term(2);

    #[test]
    fn agreeing_writes_pass() {
        let mut c = LogMatching::new(Identity::Epoch);
        c.on_write(NodeId(1), Some(Epoch::ZERO), &[(LogIndex(1), T1, 7), (LogIndex(2), T1, 8)])
            .unwrap();
        c.on_write(NodeId(2), Some(T1), &[(LogIndex(2), T1, 8)]).unwrap();
        c.on_write(NodeId(3), None, &[(LogIndex(2), T1, 8)]).unwrap();
    }

    #[test]
    fn different_contents_are_caught() {
        let mut c = LogMatching::new(Identity::Epoch);
        c.on_write(NodeId(1), Some(T1), &[(LogIndex(2), T2, 1)]).unwrap();
        assert!(c.on_write(NodeId(2), Some(T1), &[(LogIndex(2), T2, 2)]).is_err());
    }

    #[test]
    fn different_prefixes_are_caught() {
        let mut c = LogMatching::new(Identity::Epoch);
        c.on_write(NodeId(1), Some(T1), &[(LogIndex(3), T2, 1)]).unwrap();
        assert!(c.on_write(NodeId(2), Some(T2), &[(LogIndex(3), T2, 1)]).is_err());
    }

    #[test]
    fn paxos_compares_values_per_slot_and_ballot_only() {
        let b = |round| Epoch::ballot(round, NodeId(1));
        let mut c = LogMatching::new(Identity::Value);
        c.on_write(NodeId(1), Some(b(1)), &[(LogIndex(3), b(2), 1)]).unwrap();
        // Another acceptor got the slot after a hole or another ballot.
        c.on_write(NodeId(2), Some(b(2)), &[(LogIndex(3), b(2), 1)]).unwrap();
        c.on_write(NodeId(2), None, &[(LogIndex(2), Epoch::ZERO, 5), (LogIndex(3), b(3), 7)])
            .unwrap();
        c.on_write(NodeId(3), None, &[(LogIndex(2), Epoch::ZERO, 6)]).unwrap();
        assert!(c.on_write(NodeId(3), None, &[(LogIndex(3), b(2), 2)]).is_err());
    }
}
