//! The node's two doors to the world besides its [`ringkv_storage::Disk`]:
//! a [`Clock`] and a [`Transport`].
//!
//! Both are called only from the node loop's thread. The server implements
//! them with the monotonic system clock and a TCP connection per peer; the
//! simulator with a virtual clock and a simulated network; this crate's
//! `testing` harness with a manual clock and in-memory queues.

use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::NodeId;

/// A monotonic clock.
pub trait Clock {
    /// Time since the clock's origin; never goes backwards. The origin is
    /// arbitrary (process start, simulation start): the node only compares
    /// and subtracts readings.
    fn now(&self) -> Duration;
}

/// The peer is known to be unreachable (no connection, send queue full);
/// the frame was dropped.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer {to} is unreachable; the frame was dropped")]
pub struct Unreachable {
    /// The peer.
    pub to: NodeId,
}

/// Moves encoded [`crate::PeerFrame`]s to other nodes.
///
/// Delivery is best effort: frames may be lost, delayed or reordered
/// between two nodes' rounds, never corrupted undetected (the receiving
/// node decodes and refuses malformed frames). The consensus engines and
/// the node's request handling tolerate loss; a frame is one unit, so its
/// messages arrive together or not at all.
pub trait Transport {
    /// Hands `frame` to the network for `to`. An `Err` tells the node the
    /// peer is unreachable, so its engines stop streaming to it and probe
    /// instead.
    ///
    /// # Errors
    /// [`Unreachable`] when the frame could not be queued for `to`.
    fn send(&mut self, to: NodeId, frame: Bytes) -> Result<(), Unreachable>;
}
