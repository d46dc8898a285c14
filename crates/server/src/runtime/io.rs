//! The node's doors to the world, for real: a monotonic [`Clock`], a
//! [`Transport`] over the TCP [`PeerTransport`], and a [`Disk`] wrapper that
//! times every fsync for `/metrics`.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_consensus::NodeId;
use ringkv_node::{Clock, Transport, Unreachable};
use ringkv_storage::Disk;
use ringkv_storage::disk::DiskFile;

use crate::metrics::Metrics;
use crate::peer::PeerTransport;

/// Frames at least this large travel on the transport's bulk lane: they
/// are snapshot chunks (about 1 MiB each) or large batches of entries, and
/// must not delay heartbeats and votes on the regular connection.
pub const BULK_FRAME_BYTES_MIN: usize = 256 * 1024;

/// The monotonic system clock, counted from the process's first reading.
#[derive(Copy, Clone, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> MonotonicClock {
        MonotonicClock { origin: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The node's [`Transport`]: frames go to the [`PeerTransport`], large ones
/// on its bulk lane.
///
/// The transport can only start once the node's id is known, which opening
/// the node decides (a restarted member reads it from its disk), so the
/// link is created empty and bound right after [`ringkv_node::Node::open`];
/// until then every send reports the peer unreachable, which the engines
/// tolerate as loss.
#[derive(Clone, Debug, Default)]
pub struct PeerLink {
    transport: Arc<OnceLock<PeerTransport>>,
}

impl PeerLink {
    /// An unbound link.
    pub fn new() -> PeerLink {
        PeerLink::default()
    }

    /// Binds the link to the started transport. Binding twice keeps the
    /// first transport.
    pub fn bind(&self, transport: PeerTransport) {
        let _ = self.transport.set(transport);
    }

    /// The transport, once bound.
    pub fn transport(&self) -> Option<&PeerTransport> {
        self.transport.get()
    }
}

impl Transport for PeerLink {
    fn send(&mut self, to: NodeId, frame: Bytes) -> Result<(), Unreachable> {
        let Some(transport) = self.transport.get() else { return Err(Unreachable { to }) };
        let sent = if frame.len() >= BULK_FRAME_BYTES_MIN {
            transport.send_bulk(to, frame)
        } else {
            transport.send(to, frame)
        };
        sent.map_err(|_| Unreachable { to })
    }
}

/// A [`Disk`] that records how long each fdatasync takes
/// (`ringkv_disk_fsync_duration_seconds`): the WAL's group commits and the
/// store's durable checkpoints.
#[derive(Clone, Debug)]
pub struct TimedDisk<D> {
    inner: D,
    metrics: Metrics,
}

impl<D: Disk> TimedDisk<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, metrics: Metrics) -> TimedDisk<D> {
        TimedDisk { inner, metrics }
    }
}

/// A file of a [`TimedDisk`].
#[derive(Debug)]
pub struct TimedFile<F> {
    inner: F,
    metrics: Metrics,
}

impl<D: Disk> Disk for TimedDisk<D> {
    type File = TimedFile<D::File>;

    fn create(&self, name: &str) -> io::Result<Self::File> {
        let inner = self.inner.create(name)?;
        Ok(TimedFile { inner, metrics: self.metrics.clone() })
    }

    fn open(&self, name: &str) -> io::Result<Self::File> {
        let inner = self.inner.open(name)?;
        Ok(TimedFile { inner, metrics: self.metrics.clone() })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
}

impl<F: DiskFile> DiskFile for TimedFile<F> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)
    }

    fn sync_data(&self) -> io::Result<()> {
        let started = Instant::now();
        let result = self.inner.sync_data();
        self.metrics.record_fsync(started.elapsed());
        result
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
}
