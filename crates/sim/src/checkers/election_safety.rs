//! **Election safety**: at most one leader can be elected in a given term
//! (Raft, Fig. 3 and §5.2); for Multi-Paxos, at most one proposer leads
//! with a given ballot.
//!
//! Every time a replica reports itself leader of an epoch, the epoch's
//! leader is recorded; a second node claiming the same epoch is a
//! violation. The same node claiming it again (it re-reports its role after
//! a Ready) is not.

use std::collections::BTreeMap;

use ringkv_consensus::{Epoch, NodeId};

/// The leader of every epoch seen so far.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Epoch, NodeId>,
}

impl ElectionSafety {
    /// `node` says it leads `epoch`.
    ///
    /// # Errors
    /// Another node already led `epoch`.
    pub fn on_leader(&mut self, node: NodeId, epoch: Epoch) -> Result<(), String> {
        match self.leaders.get(&epoch) {
            Some(other) if *other != node => {
                Err(format!("nodes {other} and {node} both lead epoch {epoch}"))
            }
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(epoch, node);
                Ok(())
            }
        }
    }

    /// How many epochs had a leader.
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_epoch_are_caught() {
        let mut c = ElectionSafety::default();
        c.on_leader(NodeId(1), Epoch::term(2)).unwrap();
        c.on_leader(NodeId(1), Epoch::term(2)).unwrap();
        c.on_leader(NodeId(2), Epoch::term(3)).unwrap();
        assert!(c.on_leader(NodeId(3), Epoch::term(2)).is_err());
        assert_eq!(c.elections(), 2);
    }
}
