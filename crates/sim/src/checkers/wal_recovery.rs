//! **Recovery restores exactly what was synced**: a replica that crashes
//! while none of its writes is in flight (every WAL batch and snapshot
//! file it wrote was fsynced) must come back with the same durable state:
//! hard state, snapshot, and every log entry (index and epoch). Losing a
//! synced batch breaks every promise the replica made (votes,
//! acknowledgements); gaining one means recovery invented data.
//!
//! Crashes in the middle of a write (a torn write, a failed fsync) are
//! not held to this: what survives them is legitimately either side of
//! the interrupted batch, and the other checkers judge the consequences.

use ringkv_consensus::{Epoch, HardState, LogIndex, NodeId};

/// A replica's durable state, as its WAL holds it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DurableState {
    /// The durable hard state.
    pub hard_state: HardState,
    /// The snapshot's index and epoch.
    pub snapshot: (LogIndex, Epoch),
    /// The last log index.
    pub last_index: LogIndex,
    /// A hash of the epochs of every entry after the snapshot.
    pub entries: u64,
}

/// Compares what a replica recovered with what it had synced.
///
/// # Errors
/// They differ.
pub fn check(node: NodeId, synced: &DurableState, recovered: &DurableState) -> Result<(), String> {
    if synced == recovered {
        return Ok(());
    }
    Err(format!(
        "node {node} crashed with nothing in flight, yet recovered another durable state: \
         synced {synced:?}, recovered {recovered:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_difference_is_caught() {
        let s = DurableState {
            hard_state: HardState::default(),
            snapshot: (LogIndex(0), Epoch::ZERO),
            last_index: LogIndex(3),
            entries: 7,
        };
        check(NodeId(1), &s, &s).unwrap();
        assert!(check(NodeId(1), &s, &DurableState { last_index: LogIndex(2), ..s }).is_err());
        assert!(check(NodeId(1), &s, &DurableState { entries: 8, ..s }).is_err());
    }
}
