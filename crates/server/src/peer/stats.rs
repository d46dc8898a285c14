//! Counters of the peer transport, for metrics, the dashboard and tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Lane;

/// A snapshot of the transport's counters since it started. Every counter
/// only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Frames written to a peer connection and flushed.
    pub frames_sent: u64,
    /// Payload bytes of `frames_sent` (length prefixes excluded).
    pub bytes_sent: u64,
    /// Batches written, one flush each: `frames_sent / batches_sent` is how
    /// many frames each write coalesced.
    pub batches_sent: u64,
    /// Frames received and handed to the sink.
    pub frames_received: u64,
    /// Payload bytes of `frames_received`.
    pub bytes_received: u64,
    /// Frames refused by `send`/`send_bulk` because the peer's queue was full.
    pub frames_dropped_queue_full: u64,
    /// Frames refused because the destination is not in the address book.
    pub frames_dropped_unknown_peer: u64,
    /// Frames refused because they were longer than `FRAME_BYTES_MAX`.
    pub frames_dropped_too_large: u64,
    /// Frames taken from a queue whose write failed: lost with the connection.
    pub frames_lost_in_flight: u64,
    /// Inbound frames the sink refused (node inbox full or closed).
    pub frames_dropped_inbound: u64,
    /// Outbound connections that completed the handshake.
    pub connections_established: u64,
    /// Dials that failed before the handshake completed (refusals included).
    pub dial_failures: u64,
    /// Dials the remote node refused in its handshake reply.
    pub dials_refused: u64,
    /// Inbound connections that completed the handshake.
    pub inbound_accepted: u64,
    /// Inbound handshakes this node refused (other cluster, other node, ...).
    pub inbound_refused: u64,
    /// Inbound connections closed for a protocol violation: garbage instead
    /// of a handshake, an oversize or truncated frame.
    pub protocol_errors: u64,
}

/// Per-peer view, for the dashboard and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Whether the regular lane's connection is established.
    pub connected: bool,
    /// Whether the bulk lane's connection is established.
    pub bulk_connected: bool,
    /// Frames waiting in the regular queue.
    pub queued_frames: usize,
    /// Frames waiting in the bulk queue.
    pub bulk_queued_frames: usize,
    /// Frames written to this peer, both lanes.
    pub frames_sent: u64,
    /// Frames to this peer refused because a queue was full, both lanes.
    pub frames_dropped: u64,
}

/// The live counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_dropped_queue_full: AtomicU64,
    pub(crate) frames_dropped_unknown_peer: AtomicU64,
    pub(crate) frames_dropped_too_large: AtomicU64,
    pub(crate) frames_lost_in_flight: AtomicU64,
    pub(crate) frames_dropped_inbound: AtomicU64,
    pub(crate) connections_established: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) dials_refused: AtomicU64,
    pub(crate) inbound_accepted: AtomicU64,
    pub(crate) inbound_refused: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
}

/// Adds `n` to a counter. Relaxed: counters order nothing, they are read for
/// display and in tests after the fact.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            batches_sent: get(&self.batches_sent),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            frames_dropped_queue_full: get(&self.frames_dropped_queue_full),
            frames_dropped_unknown_peer: get(&self.frames_dropped_unknown_peer),
            frames_dropped_too_large: get(&self.frames_dropped_too_large),
            frames_lost_in_flight: get(&self.frames_lost_in_flight),
            frames_dropped_inbound: get(&self.frames_dropped_inbound),
            connections_established: get(&self.connections_established),
            dial_failures: get(&self.dial_failures),
            dials_refused: get(&self.dials_refused),
            inbound_accepted: get(&self.inbound_accepted),
            inbound_refused: get(&self.inbound_refused),
            protocol_errors: get(&self.protocol_errors),
        }
    }
}

/// The live per-peer counters behind [`PeerStats`] (queue depths are read
/// from the queues themselves).
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    connected: [AtomicBool; 2],
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
}

impl PeerCounters {
    pub(crate) fn set_connected(&self, lane: Lane, connected: bool) {
        self.connected[lane.index()].store(connected, Ordering::Relaxed);
    }

    pub(crate) fn connected(&self, lane: Lane) -> bool {
        self.connected[lane.index()].load(Ordering::Relaxed)
    }
}
