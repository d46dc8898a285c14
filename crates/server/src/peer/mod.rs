//! Peer transport: long-lived TCP connections between nodes carrying opaque,
//! already-encoded frames (`bytes::Bytes`). The node crate owns the frame
//! type and its codec; this module only moves bytes, in order per lane.
//!
//! # Shape
//!
//! ```text
//!  node loop thread (std)                      tokio runtime
//!  ─────────────────────                       ─────────────
//!  send(to, frame) ──try_send──▶ [regular queue, per peer] ──▶ link task ──TCP──▶ peer
//!  send_bulk(to, f) ─try_send──▶ [bulk queue, per peer]    ──▶ link task ──TCP──▶ peer
//!
//!  sink(PeerEvent) ◀── reader task per inbound connection ◀──TCP── peer
//!  sink(Unreachable) ◀── link task, on a failed dial or a broken connection
//! ```
//!
//! * `send` never blocks: each peer has a bounded queue per lane
//!   ([`QUEUE_FRAMES_MAX`], [`QUEUE_BYTES_MAX`]); a full queue drops the frame,
//!   counts it and returns [`SendError::QueueFull`]. Consensus tolerates loss,
//!   and a full queue is the back-pressure signal the engine sees.
//! * Inbound frames and [`PeerEvent::Unreachable`] reports go to a sink
//!   closure the integration supplies, typically one that forwards into the
//!   node loop's single `std::sync::mpsc` inbox, so the loop waits on
//!   "peer frames or client requests or the next tick" with one
//!   `recv_timeout`. The sink is called on runtime threads and must not block.
//! * Each link dials lazily (only once it has a frame to send), performs a
//!   handshake (layout in `peer/handshake.rs`), then writes every frame
//!   queued at that moment and flushes once: batching falls out of the queue.
//! * A failed dial or a broken connection reports `Unreachable(peer)` and
//!   retries with exponential backoff and jitter ([`RECONNECT_BACKOFF_INITIAL`]
//!   to [`RECONNECT_BACKOFF_MAX`]).
//!
//! # Large frames do not starve small ones
//!
//! Snapshot chunks (about 1 MiB each) travel on a separate **bulk lane**: a
//! queue and a TCP connection of their own ([`PeerTransport::send_bulk`]).
//! Interleaving both kinds on one connection would still put a heartbeat
//! behind whatever megabytes sit in the kernel's send buffer; with two
//! connections a vote or heartbeat never waits behind a chunk, neither in our
//! queues nor in TCP. The bulk queue is short ([`BULK_QUEUE_FRAMES_MAX`]), so
//! a snapshot streams at the speed the receiver reads: when it is full,
//! `send_bulk` says so and the engine sends the chunk again later (flow
//! control end to end, through TCP's window and our bounded queue).
//!
//! # Hostile or broken peers
//!
//! A connection that does not start with our handshake, names another
//! cluster or another receiving node, or sends a frame longer than
//! [`FRAME_BYTES_MAX`] is closed and logged with the peer's address and the
//! reason; nothing a peer sends can panic the node. The handshake is an
//! identity claim, not authentication: peer TLS is not implemented yet.

mod backoff;
pub(crate) mod handshake;
pub mod members;
mod stats;
mod transport;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::NodeId;

pub use stats::{PeerStats, TransportStats};
pub use transport::{PeerTransport, SendError, TransportConfig, TransportError};

/// Largest frame, in bytes, either side accepts. A longer length prefix is a
/// protocol error that closes the connection.
///
/// Comfortably above the largest request (`--max-request-bytes` is capped at
/// half of this, see `config`) plus its envelope, and above a snapshot chunk;
/// the node splits anything larger.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Frames a peer's regular queue holds before `send` drops.
///
/// At a heartbeat every 100 ms per shard this is seconds of traffic for
/// hundreds of shards; a peer that falls this far behind is not keeping up.
pub const QUEUE_FRAMES_MAX: usize = 4096;

/// Bytes a peer's regular queue holds before `send` drops. Bounds memory for
/// a slow peer independently of frame sizes.
pub const QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Frames a peer's bulk queue holds before `send_bulk` drops: a few snapshot
/// chunks in flight, so a snapshot moves at the speed the receiver reads.
pub const BULK_QUEUE_FRAMES_MAX: usize = 8;

/// Bytes a peer's bulk queue holds before `send_bulk` drops.
pub const BULK_QUEUE_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;

/// Frames written before one flush. Bounds the work between two looks at the
/// shutdown signal and the connection's health.
pub const BATCH_FRAMES_MAX: usize = 1024;

/// Bytes written before one flush (a batch may exceed it by its last frame).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// First delay before redialing a peer after a failure.
pub const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Longest delay between two dials of an unreachable peer. Short next to the
/// default 5-minute dead-node timeout, long enough not to spin.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long a connection must have lived for its failure to restart the
/// backoff at [`RECONNECT_BACKOFF_INITIAL`]. A peer that accepts and drops
/// connections at once is redialed with growing delays, not in a hot loop.
pub const CONNECTION_STABLE_AFTER: Duration = Duration::from_secs(1);

/// Longest wait for a TCP connection to a peer to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the other side's handshake, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time one batch may take to be written. A peer that stops reading
/// for this long is treated as gone, so its connection and queue do not stay
/// wedged until TCP gives up (about 15 minutes on Linux).
pub const BATCH_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle time before the first TCP keepalive probe, so a peer that vanished
/// without a FIN (power loss, partition) is noticed on idle connections too.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);

/// Time between TCP keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Unanswered keepalive probes before the kernel declares the connection dead.
pub const TCP_KEEPALIVE_RETRIES: u32 = 5;

/// Longest time written data may stay unacknowledged before the kernel
/// closes the connection (Linux `TCP_USER_TIMEOUT`).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// Inbound connections served at once, handshaking or not. Two per peer are
/// needed (one per lane); the rest is headroom for reconnect overlap. Past
/// it a new connection is closed at once, so a flood cannot exhaust memory.
pub const INBOUND_CONNECTIONS_MAX: usize = 1024;

/// Pause after a failed `accept` (for example out of file descriptors) so the
/// accept loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Failed dials in a row between two warnings about the same unreachable
/// peer; the first failure always warns, the others log at debug level.
pub const UNREACHABLE_WARN_EVERY: u32 = 30;

/// The identity of a cluster, carried in every handshake so that nodes of two
/// clusters that share addresses never exchange a frame (derived from
/// `--initial-cluster-token` by the integration).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which queue and connection a frame travels on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Consensus traffic: votes, appends, heartbeats, acknowledgements.
    Regular,
    /// Large, throughput-bound frames (snapshot chunks), kept off the
    /// regular connection so they never delay it.
    Bulk,
}

impl Lane {
    /// Both lanes, in index order.
    pub(crate) const ALL: [Lane; 2] = [Lane::Regular, Lane::Bulk];

    /// Position in per-lane arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Lane::Regular => 0,
            Lane::Bulk => 1,
        }
    }

    /// Frames the lane's per-peer queue holds.
    pub(crate) const fn queue_frames_max(self) -> usize {
        match self {
            Lane::Regular => QUEUE_FRAMES_MAX,
            Lane::Bulk => BULK_QUEUE_FRAMES_MAX,
        }
    }

    /// Bytes the lane's per-peer queue holds.
    pub(crate) const fn queue_bytes_max(self) -> usize {
        match self {
            Lane::Regular => QUEUE_BYTES_MAX,
            Lane::Bulk => BULK_QUEUE_BYTES_MAX,
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Regular => "regular",
            Lane::Bulk => "bulk",
        })
    }
}

// An empty queue must always accept one frame of the largest size, or a
// maximal frame could never be sent.
const _: () =
    assert!(QUEUE_BYTES_MAX >= FRAME_BYTES_MAX && BULK_QUEUE_BYTES_MAX >= FRAME_BYTES_MAX);
const _: () = assert!(RECONNECT_BACKOFF_INITIAL.as_nanos() <= RECONNECT_BACKOFF_MAX.as_nanos());

/// What the transport hands to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A frame arrived from `from`. Frames from one peer on one lane arrive
    /// in the order that peer sent them; the two lanes are not ordered with
    /// respect to each other. `from` is the id the peer claimed in its
    /// handshake.
    Frame {
        /// The sending node.
        from: NodeId,
        /// The encoded frame, exactly as the sender passed it to `send`.
        frame: Bytes,
    },
    /// A dial to this peer failed or its connection broke: frames to it are
    /// being lost. Each lane reports once per failed dial or broken
    /// connection (so at most about twice per [`RECONNECT_BACKOFF_MAX`] while
    /// the peer stays down), so the engine can stop pipelining to it.
    Unreachable(NodeId),
}

/// What the sink did with an event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The event was handed on.
    Accepted,
    /// The event was dropped (inbox full or closed); counted in
    /// [`TransportStats::frames_dropped_inbound`].
    Dropped,
}
