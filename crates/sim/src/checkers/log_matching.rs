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

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use ringkv_consensus::{Epoch, LogIndex, NodeId};

use crate::checkers::FixedHasher;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Written {
    digest: u64,
    prev: Option<Epoch>,
}

/// Every `(index, epoch)` ever written, with what it held.
#[derive(Debug, Default)]
pub struct LogMatching {
    written: HashMap<(LogIndex, Epoch), Written, BuildHasherDefault<FixedHasher>>,
}

impl LogMatching {
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
        let mut prev = prev_epoch;
        for &(index, epoch, digest) in entries {
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
            prev = Some(epoch);
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
        let mut c = LogMatching::default();
        c.on_write(NodeId(1), Some(Epoch::ZERO), &[(LogIndex(1), T1, 7), (LogIndex(2), T1, 8)])
            .unwrap();
        c.on_write(NodeId(2), Some(T1), &[(LogIndex(2), T1, 8)]).unwrap();
        c.on_write(NodeId(3), None, &[(LogIndex(2), T1, 8)]).unwrap();
    }

    #[test]
    fn different_contents_are_caught() {
        let mut c = LogMatching::default();
        c.on_write(NodeId(1), Some(T1), &[(LogIndex(2), T2, 1)]).unwrap();
        assert!(c.on_write(NodeId(2), Some(T1), &[(LogIndex(2), T2, 2)]).is_err());
    }

    #[test]
    fn different_prefixes_are_caught() {
        let mut c = LogMatching::default();
        c.on_write(NodeId(1), Some(T1), &[(LogIndex(3), T2, 1)]).unwrap();
        assert!(c.on_write(NodeId(2), Some(T2), &[(LogIndex(3), T2, 1)]).is_err());
    }
}
