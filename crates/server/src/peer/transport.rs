//! The transport handle, its outbound links and its inbound listeners.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ringkv_consensus::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{sleep, timeout};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::SendObserver;
use super::backoff::Backoff;
use super::handshake::{HELLO_BYTES, HandshakeError, Hello, REPLY_BYTES, Reply, ReplyStatus};
use super::members::MembersProvider;
use super::stats::{Counters, PeerCounters, bump};
use super::{
    BATCH_BYTES_MAX, BATCH_FRAMES_MAX, BATCH_WRITE_TIMEOUT, CONNECT_TIMEOUT,
    CONNECTION_STABLE_AFTER, ClusterId, Delivery, FRAME_BYTES_MAX, HANDSHAKE_TIMEOUT,
    INBOUND_CONNECTIONS_MAX, Lane, PeerEvent, PeerStats, TCP_KEEPALIVE_IDLE, TransportStats,
    UNREACHABLE_WARN_EVERY,
};
use crate::config::{Host, HttpUrl};
use crate::tls::{ReloadingServerConfig, TlsFiles};

/// A peer connection's byte stream: plain TCP or TLS over it.
pub(super) trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerIo for T {}

/// A boxed [`PeerIo`].
pub(super) type BoxIo = Box<dyn PeerIo>;

/// Mutual TLS on the peer port (`--peer-cert-file`, ...): every listener
/// accepts TLS only, and `https://` peer URLs are dialed with TLS,
/// presenting this member's certificate and checking the peer's against
/// the peer CAs.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The listeners' configuration (reloaded when the files change).
    pub server: Arc<ReloadingServerConfig>,
    /// The files, read again for each dial (dials are rare: a renewed
    /// certificate is presented from the next one on).
    pub files: TlsFiles,
}

/// Dials `url` over TLS with `files`, on `stream`.
///
/// # Errors
/// The files do not load, the peer's certificate does not verify for the
/// URL's host, or the handshake fails.
pub(crate) async fn tls_connect(
    files: &TlsFiles,
    url: &HttpUrl,
    stream: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = crate::tls::client_config(files, "--peer-trusted-ca-file")
        .map_err(|e| io::Error::other(e.to_string()))?;
    let name = match url.host() {
        Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
        Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    timeout(crate::tls::TLS_HANDSHAKE_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Where the transport listens and who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The cluster this node belongs to; peers of any other cluster are refused.
    pub cluster: ClusterId,
    /// This node. Must be valid (non-zero).
    pub node: NodeId,
    /// Addresses to accept peer connections on (port 0 picks a free port;
    /// [`PeerTransport::local_addrs`] tells which).
    pub listen: Vec<SocketAddr>,
}

/// Why the transport could not start or take a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A listen address could not be bound.
    #[error(
        "cannot listen for peers on {addr}: {source} (is another process using it? \
         see --listen-peer-urls)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// No listen address given.
    #[error("no address to listen for peers on: give at least one --listen-peer-urls")]
    NoListenAddr,
    /// A node id of zero, which is reserved.
    #[error("node id {node} is invalid: zero is reserved for \"no node\"")]
    InvalidNodeId {
        /// The id.
        node: NodeId,
    },
    /// This node was given as its own peer.
    #[error("peer {peer} is this node itself; a node never dials itself")]
    SelfAsPeer {
        /// The id.
        peer: NodeId,
    },
    /// A peer without any URL to dial.
    #[error("peer {peer} has no URL to dial")]
    NoPeerUrls {
        /// The id.
        peer: NodeId,
    },
    /// `start` was polled outside a tokio runtime.
    #[error("the peer transport must be started from within a tokio runtime")]
    NoRuntime,
    /// The transport was shut down.
    #[error("the peer transport is shut down")]
    ShutDown,
}

/// Why a frame was not queued. The frame is dropped and counted either way;
/// consensus tolerates the loss, so callers usually only log or count it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The destination is not in the address book.
    #[error("no peer {to} in the address book; frame dropped")]
    UnknownPeer {
        /// The destination.
        to: NodeId,
    },
    /// The destination's queue for this lane is full: the peer is slow or
    /// unreachable. For the bulk lane this is flow control: send the chunk
    /// again later.
    #[error("{lane} queue to peer {to} is full; frame dropped")]
    QueueFull {
        /// The destination.
        to: NodeId,
        /// The lane whose queue is full.
        lane: Lane,
    },
    /// The frame is longer than any peer accepts.
    #[error(
        "frame of {bytes} bytes to peer {to} exceeds the {max}-byte frame limit; frame dropped"
    )]
    FrameTooLarge {
        /// The destination.
        to: NodeId,
        /// The frame's length.
        bytes: usize,
        /// [`FRAME_BYTES_MAX`](super::FRAME_BYTES_MAX).
        max: usize,
    },
    /// The transport was shut down.
    #[error("the peer transport is shut down; frame to {to} dropped")]
    ShutDown {
        /// The destination.
        to: NodeId,
    },
}

/// The sink every inbound event goes to.
type Sink = Arc<dyn Fn(PeerEvent) -> Delivery + Send + Sync>;

/// Handle to the peer transport. Cheap to clone; every method but
/// [`start`](Self::start) and [`shutdown`](Self::shutdown) is synchronous,
/// never blocks on the network and may be called from any thread, inside the
/// runtime or not (the node loop runs on a plain thread). When the last
/// clone is dropped, every connection is closed.
#[derive(Clone)]
pub struct PeerTransport {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    local_addrs: Vec<SocketAddr>,
    runtime: Handle,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The address book, with each peer's queues and link tasks.
    peers: RwLock<HashMap<NodeId, Peer>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What the runtime tasks share. Never holds a reference to [`Inner`], so
/// dropping the last handle is what ends them.
struct Shared {
    cluster: ClusterId,
    node: NodeId,
    sink: Sink,
    counters: Counters,
    /// The established inbound connection per (peer, lane): a peer that
    /// reconnects replaces its previous connection, so a half-dead one does
    /// not linger until keepalive notices.
    inbound: Mutex<HashMap<(NodeId, Lane), InboundEntry>>,
    next_connection_id: AtomicU64,
    /// Bounds inbound connections, [`INBOUND_CONNECTIONS_MAX`].
    inbound_slots: Arc<Semaphore>,
    /// Answers `GET /members` on the peer port, once set.
    members: RwLock<Option<MembersProvider>>,
    /// Told how long each batch took to write, once set.
    send_observer: OnceLock<SendObserver>,
    /// Mutual TLS, when configured.
    tls: Option<PeerTls>,
}

struct InboundEntry {
    id: u64,
    addr: SocketAddr,
    cancel: CancellationToken,
}

/// An address-book entry: where the peer is, and its two queues.
struct Peer {
    urls: Vec<HttpUrl>,
    /// The same URLs, shared with the two links, which read them at each
    /// dial: changing them leaves the queues and connections alone.
    dial_urls: DialUrls,
    queues: [LaneQueue; 2],
    counters: Arc<PeerCounters>,
    /// Stops this peer's link tasks (a child of the transport's shutdown).
    cancel: CancellationToken,
}

/// A peer's URLs as its links see them (never empty: `set_peer` refuses
/// an empty list).
type DialUrls = Arc<Mutex<Vec<HttpUrl>>>;

impl Drop for Peer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The sending half of one lane's bounded queue.
struct LaneQueue {
    tx: mpsc::Sender<Bytes>,
    /// Payload bytes queued, not yet taken by the link.
    ///
    /// Invariant: at most `lane.queue_bytes_max()`, except transiently while
    /// a push that will be refused is being undone.
    queued_bytes: Arc<AtomicUsize>,
}

enum PushError {
    Full,
    Closed,
}

impl LaneQueue {
    fn push(&self, lane: Lane, frame: Bytes) -> Result<(), PushError> {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > lane.queue_bytes_max() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(PushError::Full);
        }
        self.tx.try_send(frame).map_err(|err| {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            match err {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(_) => PushError::Closed,
            }
        })
    }

    fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

impl PeerTransport {
    /// Binds the listen addresses and starts accepting peer connections.
    /// Inbound frames and unreachability reports go to `sink`, which is
    /// called on runtime threads: it must not block (forward into a channel
    /// and return [`Delivery::Dropped`] if that channel is full).
    ///
    /// Wiring it to a node loop that waits on one bounded inbox:
    ///
    /// ```no_run
    /// # async fn wire() -> Result<(), ringkv_server::peer::TransportError> {
    /// use std::sync::mpsc;
    /// use ringkv_consensus::NodeId;
    /// use ringkv_server::peer::{ClusterId, Delivery, PeerEvent, PeerTransport, TransportConfig};
    ///
    /// enum NodeInput {
    ///     Peer(PeerEvent),
    ///     // client requests, ...
    /// }
    /// let (inbox, inbox_rx) = mpsc::sync_channel::<NodeInput>(65_536);
    /// let config = TransportConfig {
    ///     cluster: ClusterId(7),
    ///     node: NodeId(1),
    ///     listen: vec!["127.0.0.1:2380".parse().expect("an address")],
    /// };
    /// let transport = PeerTransport::start(config, move |event| {
    ///     match inbox.try_send(NodeInput::Peer(event)) {
    ///         Ok(()) => Delivery::Accepted,
    ///         Err(_) => Delivery::Dropped,
    ///     }
    /// })
    /// .await?;
    /// // On the node loop's thread: `inbox_rx.recv_timeout(until_next_tick)`,
    /// // and `transport.send(to, frame)` for every outgoing message.
    /// # drop((transport, inbox_rx));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TransportError::Bind`] when an address cannot be listened on;
    /// [`TransportError::NoListenAddr`], [`TransportError::InvalidNodeId`]
    /// for a bad configuration; [`TransportError::NoRuntime`] outside tokio.
    pub async fn start(
        config: TransportConfig,
        sink: impl Fn(PeerEvent) -> Delivery + Send + Sync + 'static,
    ) -> Result<PeerTransport, TransportError> {
        PeerTransport::start_with_tls(config, None, sink).await
    }

    /// [`PeerTransport::start`] with mutual TLS on every listener and on
    /// `https://` dials (see [`PeerTls`]).
    ///
    /// # Errors
    /// As [`PeerTransport::start`].
    pub async fn start_with_tls(
        config: TransportConfig,
        tls: Option<PeerTls>,
        sink: impl Fn(PeerEvent) -> Delivery + Send + Sync + 'static,
    ) -> Result<PeerTransport, TransportError> {
        if !config.node.is_valid() {
            return Err(TransportError::InvalidNodeId { node: config.node });
        }
        if config.listen.is_empty() {
            return Err(TransportError::NoListenAddr);
        }
        let runtime = Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let mut listeners = Vec::with_capacity(config.listen.len());
        let mut local_addrs = Vec::with_capacity(config.listen.len());
        for &addr in &config.listen {
            let bind_error = |source| TransportError::Bind { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            local_addrs.push(listener.local_addr().map_err(bind_error)?);
            listeners.push(listener);
        }
        let shared = Arc::new(Shared {
            cluster: config.cluster,
            node: config.node,
            sink: Arc::new(sink),
            counters: Counters::default(),
            inbound: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(0),
            inbound_slots: Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX)),
            members: RwLock::new(None),
            send_observer: OnceLock::new(),
            tls,
        });
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        for listener in listeners {
            tasks.spawn_on(
                accept_loop(listener, Arc::clone(&shared), tasks.clone(), shutdown.clone()),
                &runtime,
            );
        }
        info!(node = %config.node, cluster = %config.cluster, addrs = ?local_addrs, "listening for peers");
        let inner = Inner {
            shared,
            local_addrs,
            runtime,
            shutdown,
            tasks,
            peers: RwLock::new(HashMap::new()),
        };
        Ok(PeerTransport { inner: Arc::new(inner) })
    }

    /// The addresses actually listened on, in the order of
    /// [`TransportConfig::listen`] (with real ports where 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.local_addrs
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.shared.node
    }

    /// This node's cluster.
    pub fn cluster(&self) -> ClusterId {
        self.inner.shared.cluster
    }

    /// Queues `frame` for `to` on the regular lane. Never blocks.
    ///
    /// # Errors
    ///
    /// The frame is dropped (and counted) when `to` is unknown, its queue is
    /// full, the frame exceeds [`FRAME_BYTES_MAX`], or the transport is shut
    /// down.
    pub fn send(&self, to: NodeId, frame: Bytes) -> Result<(), SendError> {
        self.enqueue(to, Lane::Regular, frame)
    }

    /// Queues `frame` for `to` on the bulk lane (snapshot chunks). Never
    /// blocks. A full bulk queue is the flow-control signal: try later.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_bulk(&self, to: NodeId, frame: Bytes) -> Result<(), SendError> {
        self.enqueue(to, Lane::Bulk, frame)
    }

    fn enqueue(&self, to: NodeId, lane: Lane, frame: Bytes) -> Result<(), SendError> {
        let counters = &self.inner.shared.counters;
        if frame.len() > FRAME_BYTES_MAX {
            bump(&counters.frames_dropped_too_large, 1);
            return Err(SendError::FrameTooLarge { to, bytes: frame.len(), max: FRAME_BYTES_MAX });
        }
        let peers = self.inner.peers.read().unwrap_or_else(PoisonError::into_inner);
        let Some(peer) = peers.get(&to) else {
            bump(&counters.frames_dropped_unknown_peer, 1);
            return Err(SendError::UnknownPeer { to });
        };
        match peer.queues[lane.index()].push(lane, frame) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => {
                bump(&counters.frames_dropped_queue_full, 1);
                bump(&peer.counters.frames_dropped, 1);
                Err(SendError::QueueFull { to, lane })
            }
            Err(PushError::Closed) => Err(SendError::ShutDown { to }),
        }
    }

    /// Adds `peer` to the address book, or changes its URLs. Its links dial
    /// the URLs in turn, and only once there is a frame to send. Changing the
    /// URLs keeps the frames queued for the peer and its connections (the
    /// handshake checked who is at their other end); the new URLs are dialed
    /// from the next dial on. Dropping queued frames here would lose what
    /// the node sends only once, such as a proposal forwarded to the leader.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidNodeId`], [`TransportError::SelfAsPeer`],
    /// [`TransportError::NoPeerUrls`], [`TransportError::ShutDown`].
    pub fn set_peer(&self, peer: NodeId, urls: Vec<HttpUrl>) -> Result<(), TransportError> {
        if !peer.is_valid() {
            return Err(TransportError::InvalidNodeId { node: peer });
        }
        if peer == self.inner.shared.node {
            return Err(TransportError::SelfAsPeer { peer });
        }
        if urls.is_empty() {
            return Err(TransportError::NoPeerUrls { peer });
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::ShutDown);
        }
        let mut peers = self.inner.peers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = peers.get_mut(&peer) {
            if existing.urls != urls {
                info!(%peer, old = ?existing.urls, new = ?urls, "peer address changed");
                *existing.dial_urls.lock().unwrap_or_else(PoisonError::into_inner) = urls.clone();
                existing.urls = urls;
            }
            return Ok(());
        }
        info!(%peer, ?urls, "peer added");
        let entry = self.spawn_peer(peer, urls);
        peers.insert(peer, entry);
        Ok(())
    }

    /// Removes `peer` from the address book: its queued frames are dropped
    /// and its outbound connections closed. Returns whether it was there.
    pub fn remove_peer(&self, peer: NodeId) -> bool {
        let removed =
            self.inner.peers.write().unwrap_or_else(PoisonError::into_inner).remove(&peer);
        if removed.is_some() {
            info!(%peer, "peer removed");
        }
        removed.is_some()
    }

    /// The address book, sorted by node id.
    pub fn peers(&self) -> Vec<(NodeId, Vec<HttpUrl>)> {
        let peers = self.inner.peers.read().unwrap_or_else(PoisonError::into_inner);
        let mut book: Vec<_> = peers.iter().map(|(id, peer)| (*id, peer.urls.clone())).collect();
        book.sort_by_key(|(id, _)| *id);
        book
    }

    /// Serves `GET /members` on the peer port with what `provider` returns
    /// (see [`super::members`]); until this is called it answers 503.
    pub fn serve_members(&self, provider: MembersProvider) {
        *self.inner.shared.members.write().unwrap_or_else(PoisonError::into_inner) = Some(provider);
    }

    /// Has `observer` told how long each batch took to write and flush (a
    /// peer or network that stops keeping up shows there first). Set once;
    /// a second observer is ignored.
    pub fn observe_send_durations(&self, observer: SendObserver) {
        let _ = self.inner.shared.send_observer.set(observer);
    }

    /// The transport's counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.shared.counters.snapshot()
    }

    /// One peer's connection state and counters, if it is in the address book.
    pub fn peer_stats(&self, peer: NodeId) -> Option<PeerStats> {
        let peers = self.inner.peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.get(&peer).map(|p| PeerStats {
            connected: p.counters.connected(Lane::Regular),
            bulk_connected: p.counters.connected(Lane::Bulk),
            queued_frames: p.queues[Lane::Regular.index()].depth(),
            bulk_queued_frames: p.queues[Lane::Bulk.index()].depth(),
            frames_sent: p.counters.frames_sent.load(Ordering::Relaxed),
            frames_dropped: p.counters.frames_dropped.load(Ordering::Relaxed),
        })
    }

    /// Closes every listener and connection and waits until all of the
    /// transport's tasks have ended, so its ports can be bound again at once.
    /// Frames still queued are dropped. Later sends fail with
    /// [`SendError::ShutDown`].
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        info!(node = %self.inner.shared.node, "peer transport shut down");
    }

    fn spawn_peer(&self, peer: NodeId, urls: Vec<HttpUrl>) -> Peer {
        let cancel = self.inner.shutdown.child_token();
        let counters = Arc::new(PeerCounters::default());
        let dial_urls: DialUrls = Arc::new(Mutex::new(urls.clone()));
        let queues = Lane::ALL.map(|lane| {
            let (tx, rx) = mpsc::channel(lane.queue_frames_max());
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let link = Link {
                shared: Arc::clone(&self.inner.shared),
                peer,
                lane,
                urls: Arc::clone(&dial_urls),
                next_url: 0,
                rx,
                queued_bytes: Arc::clone(&queued_bytes),
                counters: Arc::clone(&counters),
                cancel: cancel.clone(),
                backoff: Backoff::new(),
                pause: None,
                failures_in_row: 0,
            };
            self.inner.tasks.spawn_on(link.run(), &self.inner.runtime);
            LaneQueue { tx, queued_bytes }
        });
        Peer { urls, dial_urls, queues, counters, cancel }
    }
}

impl fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTransport")
            .field("node", &self.inner.shared.node)
            .field("cluster", &self.inner.shared.cluster)
            .field("local_addrs", &self.inner.local_addrs)
            .finish_non_exhaustive()
    }
}

/// The framing on both sides of every connection: a 4-byte big-endian length
/// then the frame, at most [`FRAME_BYTES_MAX`] bytes.
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Socket options for a peer connection, either direction. Failures are
/// logged and ignored: the connection still works, just with OS defaults.
fn tune_socket(stream: &TcpStream, addr: SocketAddr) {
    // Frames are batched before each flush, so Nagle would only add delay
    // to the last frame of every batch.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%addr, %error, "could not disable Nagle's algorithm on a peer connection");
    }
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE_IDLE);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(super::TCP_KEEPALIVE_INTERVAL)
        .with_retries(super::TCP_KEEPALIVE_RETRIES);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        debug!(%addr, %error, "could not enable TCP keepalive on a peer connection");
    }
    #[cfg(target_os = "linux")]
    if let Err(error) = socket.set_tcp_user_timeout(Some(super::TCP_USER_TIMEOUT)) {
        debug!(%addr, %error, "could not set TCP_USER_TIMEOUT on a peer connection");
    }
}

// ---------------------------------------------------------------------------
// Outbound: one link task per peer and lane.
// ---------------------------------------------------------------------------

/// Why a dial did not produce a usable connection.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("TCP connect failed: {0}")]
    Connect(#[source] io::Error),
    #[error("no TCP connection within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("handshake failed: {0}")]
    HandshakeIo(#[source] io::Error),
    #[error("no handshake reply within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("the reply is not a ringkv handshake: {0}")]
    BadReply(#[source] HandshakeError),
    #[error("the peer refused the connection: {} (its cluster id is {cluster})", .status.describe())]
    Refused { status: ReplyStatus, cluster: ClusterId },
    #[error("the peer accepted but is {node} of cluster {cluster}")]
    Impostor { node: NodeId, cluster: ClusterId },
    #[error("TLS failed: {0}")]
    Tls(#[source] io::Error),
}

/// An established outbound connection.
struct Connection {
    /// Never carries data (the acceptor only reads after its reply): watched
    /// so that a peer closing the connection is noticed before the next write.
    reader: ReadHalf<BoxIo>,
    writer: FramedWrite<WriteHalf<BoxIo>, LengthDelimitedCodec>,
    addr: SocketAddr,
    since: Instant,
}

/// How a connection's pump ended.
enum Ended {
    /// The peer was removed or the transport shut down.
    Stop,
    /// The connection failed; dial again when there is something to send.
    Broken,
}

/// Drains one lane's queue for one peer into one connection at a time.
///
/// ```text
///  idle ──frame queued──▶ dialing ──handshake ok──▶ connected ──write/read fails──▶ idle
///             ▲              │ fails: report Unreachable,                              │
///             │              └─ wait backoff, next URL ─┐  (after a pause if the       │
///             │                                         │   connection was short-lived)│
///             └─────────────────────────────────────────┴──────────────────────────────┘
/// ```
struct Link {
    shared: Arc<Shared>,
    peer: NodeId,
    lane: Lane,
    /// The peer's current URLs (see [`PeerTransport::set_peer`]).
    urls: DialUrls,
    /// Which URL to dial next; advanced after every failed dial.
    next_url: usize,
    rx: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    counters: Arc<PeerCounters>,
    cancel: CancellationToken,
    backoff: Backoff,
    /// Wait before the next dial; `None` dials at once.
    pause: Option<Duration>,
    /// Failed dials since the last successful one.
    failures_in_row: u32,
}

impl Link {
    async fn run(mut self) {
        // Connect only when there is something to send: an idle peer costs
        // no connection, and a removed peer's link ends here.
        while let Some(first) = self.next_frame().await {
            let Some(connection) = self.connect().await else { break };
            if let Ended::Stop = self.pump(connection, first).await {
                break;
            }
        }
        self.counters.set_connected(self.lane, false);
        debug!(peer = %self.peer, lane = %self.lane, "peer link stopped");
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        let frame = tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            frame = self.rx.recv() => frame,
        }?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Takes more queued frames into `batch`, up to the batch limits.
    fn fill(&mut self, batch: &mut Vec<Bytes>) {
        let mut bytes: usize = batch.iter().map(Bytes::len).sum();
        while batch.len() < BATCH_FRAMES_MAX && bytes < BATCH_BYTES_MAX {
            let Ok(frame) = self.rx.try_recv() else { break };
            self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
            bytes += frame.len();
            batch.push(frame);
        }
    }

    /// Dials until a connection is up; `None` when told to stop.
    async fn connect(&mut self) -> Option<Connection> {
        loop {
            if let Some(pause) = self.pause.take() {
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return None,
                    () = sleep(pause) => {}
                }
            }
            let url = {
                let urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
                urls[self.next_url % urls.len()].clone()
            };
            let dialed = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                dialed = self.dial(&url) => dialed,
            };
            match dialed {
                Ok(connection) => {
                    self.on_connected(&connection);
                    return Some(connection);
                }
                Err(error) => {
                    self.on_dial_failed(&url, &error);
                    self.next_url = self.next_url.wrapping_add(1);
                    self.pause = Some(self.backoff.next_delay(&mut rand::rng()));
                }
            }
        }
    }

    async fn dial(&self, url: &HttpUrl) -> Result<Connection, DialError> {
        let connecting = async {
            match url.host() {
                Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, url.port())).await,
                Host::Name(name) => TcpStream::connect((name.as_str(), url.port())).await,
            }
        };
        let tcp = timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| DialError::ConnectTimeout)?
            .map_err(DialError::Connect)?;
        let addr = tcp.peer_addr().map_err(DialError::Connect)?;
        tune_socket(&tcp, addr);
        let mut stream: BoxIo = if url.is_tls() {
            let Some(tls) = &self.shared.tls else {
                return Err(DialError::Tls(io::Error::other(
                    "an https:// peer URL, but no --peer-cert-file and --peer-key-file",
                )));
            };
            Box::new(tls_connect(&tls.files, url, tcp).await.map_err(DialError::Tls)?)
        } else {
            Box::new(tcp)
        };
        let hello = Hello {
            lane: self.lane,
            cluster: self.shared.cluster,
            from: self.shared.node,
            to: self.peer,
        };
        let mut reply = [0u8; REPLY_BYTES];
        let exchange = async {
            stream.write_all(&hello.encode()).await?;
            stream.read_exact(&mut reply).await
        };
        timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| DialError::HandshakeTimeout)?
            .map_err(DialError::HandshakeIo)?;
        let reply = Reply::decode(&reply).map_err(DialError::BadReply)?;
        if reply.status != ReplyStatus::Accepted {
            return Err(DialError::Refused { status: reply.status, cluster: reply.cluster });
        }
        if reply.cluster != self.shared.cluster || reply.node != self.peer {
            return Err(DialError::Impostor { node: reply.node, cluster: reply.cluster });
        }
        let (reader, writer) = tokio::io::split(stream);
        let mut writer = FramedWrite::new(writer, codec());
        // Let a whole batch accumulate before the codec writes on its own.
        writer.set_backpressure_boundary(BATCH_BYTES_MAX);
        Ok(Connection { reader, writer, addr, since: Instant::now() })
    }

    fn on_connected(&mut self, connection: &Connection) {
        bump(&self.shared.counters.connections_established, 1);
        self.counters.set_connected(self.lane, true);
        info!(
            peer = %self.peer,
            lane = %self.lane,
            addr = %connection.addr,
            failed_dials = self.failures_in_row,
            "connected to peer"
        );
        self.failures_in_row = 0;
    }

    fn on_dial_failed(&mut self, url: &HttpUrl, error: &DialError) {
        bump(&self.shared.counters.dial_failures, 1);
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        let loud = self.failures_in_row == 1
            || self.failures_in_row.is_multiple_of(UNREACHABLE_WARN_EVERY);
        let (peer, lane, failures) = (self.peer, self.lane, self.failures_in_row);
        match error {
            DialError::Refused { status: ReplyStatus::ClusterMismatch, cluster } => {
                bump(&self.shared.counters.dials_refused, 1);
                if loud {
                    error!(
                        %peer, %lane, %url, ours = %self.shared.cluster, theirs = %cluster, failures,
                        "peer belongs to another cluster; check --initial-cluster-token on both nodes"
                    );
                }
            }
            DialError::Refused { .. } => {
                bump(&self.shared.counters.dials_refused, 1);
                if loud {
                    warn!(%peer, %lane, %url, %error, failures, "peer refused our connection; retrying with backoff");
                }
            }
            _ if loud => {
                warn!(%peer, %lane, %url, %error, failures, "cannot reach peer; retrying with backoff");
            }
            _ => {
                debug!(%peer, %lane, %url, %error, failures, "cannot reach peer; retrying with backoff")
            }
        }
        self.report_unreachable();
    }

    fn report_unreachable(&self) {
        // A refused report only means the node's inbox is gone or full; the
        // next failure reports again.
        let _ = (self.shared.sink)(PeerEvent::Unreachable(self.peer));
    }

    /// Writes frames to `connection` until it fails or the link must stop.
    async fn pump(&mut self, mut connection: Connection, first: Bytes) -> Ended {
        let mut batch = vec![first];
        // The acceptor never writes after its reply: one byte is enough to
        // tell "closed" (0) from a protocol violation (1).
        let mut probe = [0u8; 1];
        let ended = loop {
            self.fill(&mut batch);
            let started = Instant::now();
            let written = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break Ended::Stop,
                written = timeout(BATCH_WRITE_TIMEOUT, write_batch(&mut connection.writer, &batch)) => written,
            };
            match written {
                Ok(Ok(())) => {
                    if let Some(observe) = self.shared.send_observer.get() {
                        observe(self.lane, started.elapsed());
                    }
                    self.on_batch_written(&batch);
                }
                Ok(Err(error)) => {
                    warn!(peer = %self.peer, lane = %self.lane, addr = %connection.addr, %error, "writing to peer failed; reconnecting");
                    break Ended::Broken;
                }
                Err(_) => {
                    warn!(
                        peer = %self.peer, lane = %self.lane, addr = %connection.addr,
                        timeout = ?BATCH_WRITE_TIMEOUT,
                        "peer stopped reading; dropping the connection"
                    );
                    break Ended::Broken;
                }
            }
            batch.clear();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break Ended::Stop,
                frame = self.rx.recv() => match frame {
                    Some(frame) => {
                        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
                        batch.push(frame);
                    }
                    None => break Ended::Stop,
                },
                read = connection.reader.read(&mut probe) => {
                    match read {
                        Ok(0) => info!(peer = %self.peer, lane = %self.lane, addr = %connection.addr, "peer closed the connection"),
                        Ok(_) => warn!(peer = %self.peer, lane = %self.lane, addr = %connection.addr, "peer sent data on a send-only connection; disconnecting"),
                        Err(error) => info!(peer = %self.peer, lane = %self.lane, addr = %connection.addr, %error, "peer connection failed"),
                    }
                    break Ended::Broken;
                }
            }
        };
        self.counters.set_connected(self.lane, false);
        if let Ended::Broken = ended {
            bump(&self.shared.counters.frames_lost_in_flight, batch.len() as u64);
            self.report_unreachable();
            if connection.since.elapsed() >= CONNECTION_STABLE_AFTER {
                self.backoff.reset();
                self.pause = None;
            } else {
                self.pause = Some(self.backoff.next_delay(&mut rand::rng()));
            }
        }
        ended
    }

    fn on_batch_written(&self, batch: &[Bytes]) {
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        let counters = &self.shared.counters;
        bump(&counters.frames_sent, batch.len() as u64);
        bump(&counters.bytes_sent, bytes as u64);
        bump(&counters.batches_sent, 1);
        bump(&self.counters.frames_sent, batch.len() as u64);
    }
}

/// Encodes every frame of the batch, then flushes once.
async fn write_batch(
    writer: &mut FramedWrite<WriteHalf<BoxIo>, LengthDelimitedCodec>,
    batch: &[Bytes],
) -> io::Result<()> {
    for frame in batch {
        writer.feed(frame.clone()).await?;
    }
    SinkExt::<Bytes>::flush(writer).await
}

// ---------------------------------------------------------------------------
// Inbound: a listener per address, a reader task per connection.
// ---------------------------------------------------------------------------

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => match Arc::clone(&shared.inbound_slots).try_acquire_owned() {
                Ok(permit) => {
                    tasks.spawn(serve_inbound(
                        Arc::clone(&shared),
                        stream,
                        addr,
                        permit,
                        shutdown.clone(),
                    ));
                }
                Err(_) => warn!(
                    %addr,
                    limit = INBOUND_CONNECTIONS_MAX,
                    "too many inbound peer connections; closing this one"
                ),
            },
            Err(error) => {
                warn!(%error, "accepting a peer connection failed; pausing before the next accept");
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = sleep(super::ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
}

async fn serve_inbound(
    shared: Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    tune_socket(&tcp, addr);
    let mut stream: BoxIo = match &shared.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.current());
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                accepted = timeout(crate::tls::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => accepted,
            };
            match accepted {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(error)) => {
                    bump(&shared.counters.inbound_refused, 1);
                    warn!(%addr, %error, "refused a peer connection: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    bump(&shared.counters.protocol_errors, 1);
                    warn!(%addr, "refused a peer connection: TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let handshake = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        hello = accept_handshake(&shared, &mut stream, addr) => hello,
    };
    let hello = match handshake {
        Inbound::Peer(hello) => hello,
        Inbound::Refused => return,
        Inbound::Http(head) => {
            let provider = shared.members.read().unwrap_or_else(PoisonError::into_inner).clone();
            if !super::members::serve(stream, addr, &head, provider).await {
                bump(&shared.counters.protocol_errors, 1);
                warn!(%addr, "HTTP request on the peer port for something other than /members");
            }
            return;
        }
    };
    let key = (hello.from, hello.lane);
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let cancel = shutdown.child_token();
    {
        let mut inbound = shared.inbound.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = InboundEntry { id, addr, cancel: cancel.clone() };
        if let Some(previous) = inbound.insert(key, entry) {
            info!(
                peer = %hello.from, lane = %hello.lane, previous = %previous.addr, %addr,
                "peer reconnected; closing its previous connection"
            );
            previous.cancel.cancel();
        }
    }
    bump(&shared.counters.inbound_accepted, 1);
    debug!(peer = %hello.from, lane = %hello.lane, %addr, "accepted peer connection");

    read_frames(&shared, stream, addr, hello, &cancel).await;

    let mut inbound = shared.inbound.lock().unwrap_or_else(PoisonError::into_inner);
    if inbound.get(&key).is_some_and(|entry| entry.id == id) {
        inbound.remove(&key);
    }
}

/// What an inbound connection turned out to be.
enum Inbound {
    /// A peer whose hello was accepted.
    Peer(Hello),
    /// Refused or broken; already logged.
    Refused,
    /// An HTTP request (`GET /members`), with the bytes read so far.
    Http(Vec<u8>),
}

/// Reads and judges the dialer's hello, answers it, and returns it if accepted.
async fn accept_handshake(shared: &Shared, stream: &mut BoxIo, addr: SocketAddr) -> Inbound {
    let outcome = accept_hello(shared, stream, addr).await;
    match outcome {
        Ok(Some(hello)) => Inbound::Peer(hello),
        Ok(None) => Inbound::Refused,
        Err(head) => Inbound::Http(head),
    }
}

/// [`accept_handshake`]'s work: `Err` carries the head of an HTTP request.
async fn accept_hello(
    shared: &Shared,
    stream: &mut BoxIo,
    addr: SocketAddr,
) -> Result<Option<Hello>, Vec<u8>> {
    let mut buf = [0u8; HELLO_BYTES];
    match timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            bump(&shared.counters.protocol_errors, 1);
            warn!(%addr, %error, "peer connection ended before completing the handshake; closing");
            return Ok(None);
        }
        Err(_) => {
            bump(&shared.counters.protocol_errors, 1);
            warn!(%addr, timeout = ?HANDSHAKE_TIMEOUT, "peer connection sent no handshake in time; closing");
            return Ok(None);
        }
    }
    if buf.starts_with(b"GET ") {
        return Err(buf.to_vec());
    }
    let (hello, status) = match Hello::decode(&buf) {
        Ok(hello) => (Some(hello), hello.verdict(shared.cluster, shared.node)),
        Err(error @ HandshakeError::BadMagic { .. }) => {
            // Not our protocol: no reply, whoever it is would not read it.
            bump(&shared.counters.protocol_errors, 1);
            warn!(%addr, %error, "connection to the peer port is not a ringkv peer; closing");
            return Ok(None);
        }
        Err(HandshakeError::UnsupportedVersion { .. }) => (None, ReplyStatus::UnsupportedVersion),
        Err(_) => (None, ReplyStatus::Malformed),
    };
    let reply = Reply { status, cluster: shared.cluster, node: shared.node }.encode();
    // Counted before answering: once the dialer reads the refusal, the
    // count already says so.
    if status != ReplyStatus::Accepted {
        bump(&shared.counters.inbound_refused, 1);
    }
    // Refusals are answered too, so the dialer can log why it was refused.
    let answered = timeout(HANDSHAKE_TIMEOUT, stream.write_all(&reply)).await;
    if status != ReplyStatus::Accepted {
        match hello {
            Some(hello) => warn!(
                %addr,
                claimed_from = %hello.from,
                claimed_to = %hello.to,
                their_cluster = %hello.cluster,
                our_cluster = %shared.cluster,
                reason = status.describe(),
                "refused peer connection"
            ),
            None => warn!(%addr, reason = status.describe(), "refused peer connection"),
        }
        return Ok(None);
    }
    match answered {
        Ok(Ok(())) => Ok(hello),
        Ok(Err(error)) => {
            debug!(%addr, %error, "peer connection failed during the handshake");
            Ok(None)
        }
        Err(_) => {
            warn!(%addr, timeout = ?HANDSHAKE_TIMEOUT, "peer did not take our handshake reply in time; closing");
            Ok(None)
        }
    }
}

/// Hands every frame of an accepted connection to the sink, in order, until
/// the connection ends, breaks the framing, or is cancelled.
async fn read_frames(
    shared: &Shared,
    stream: BoxIo,
    addr: SocketAddr,
    hello: Hello,
    cancel: &CancellationToken,
) {
    let (peer, lane) = (hello.from, hello.lane);
    let mut frames = FramedRead::new(stream, codec());
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            next = frames.next() => next,
        };
        match next {
            Some(Ok(frame)) => {
                bump(&shared.counters.frames_received, 1);
                bump(&shared.counters.bytes_received, frame.len() as u64);
                let event = PeerEvent::Frame { from: peer, frame: frame.freeze() };
                if (shared.sink)(event) == Delivery::Dropped {
                    bump(&shared.counters.frames_dropped_inbound, 1);
                }
            }
            // The codec reports a length prefix over the limit as InvalidData.
            Some(Err(error)) if error.kind() == io::ErrorKind::InvalidData => {
                bump(&shared.counters.protocol_errors, 1);
                warn!(
                    %peer, %lane, %addr, %error, limit = FRAME_BYTES_MAX,
                    "peer sent a frame over the size limit; disconnecting"
                );
                return;
            }
            Some(Err(error)) => {
                info!(%peer, %lane, %addr, %error, "peer connection failed");
                return;
            }
            None => {
                debug!(%peer, %lane, %addr, "peer closed its connection");
                return;
            }
        }
    }
}
