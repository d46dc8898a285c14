//! The runtime: the [`ringkv_node::Node`] on a dedicated thread, fed by one
//! bounded inbox, and the handle the services use to reach it.
//!
//! ```text
//!  gRPC / gateway tasks ──NodeHandle::call──┐
//!  peer transport (tokio) ──sink────────────┼─▶ inbox (bounded, INBOX_INPUTS_MAX)
//!  shutdown ────────────────────────────────┘        │
//!                                                     ▼
//!            node thread: recv_timeout(next_wakeup) ─▶ drain ≤ INBOX_DRAIN_MAX
//!                         ─▶ Node::run_round (WAL fsync happens here, blocking)
//!                         ─▶ completions: Done → oneshot;
//!                                         ReadReady → tokio blocking pool
//!                                                     (execute_read on a ReadView)
//!                         ─▶ events: watch hub (marked), then broadcast
//!                         ─▶ every STATUS_REFRESH_INTERVAL: NodeState, metrics,
//!                            transport address book from the member table
//! ```
//!
//! The node is a pure loop; this thread is the only one that touches it, so
//! it needs no locks. Reads are ordered by the node (ReadIndex) but executed
//! elsewhere, so they never serialize behind WAL fsyncs. A full inbox turns
//! a client request away with `etcdserver: too many requests` at once, and
//! drops a peer frame (which consensus tolerates as loss).
//!
//! # Applied changes
//!
//! Every round's applied changes ([`WatchEvents`]) are published once, in
//! apply order, on a [`tokio::sync::broadcast`] channel
//! ([`NodeHandle::subscribe_events`]). The Lock and Election services wait
//! for key deletions through it; the watch hub is fed directly on the node
//! thread (where marked in `node_loop.rs`), since it must see every event.

mod io;
mod node_loop;
mod state;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use ringkv_consensus::NodeId;
use ringkv_node::{
    DATA_SHARD, Engine, Header, Node, NodeConfig, NodeError, Reply, Request, WatchEvents,
};
use ringkv_storage::FsDisk;
use ringkv_storage::mvcc::MvccStore;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, oneshot};

pub use io::{BULK_FRAME_BYTES_MIN, MonotonicClock, PeerLink, TimedDisk, TimedFile};
pub use state::NodeState;

use crate::api::EtcdError;
use crate::metrics::Metrics;
use crate::peer::{Delivery, PeerEvent};

/// Most inputs (client requests and peer frames) waiting in the node's
/// inbox. Past it requests get `etcdserver: too many requests` and peer
/// frames are dropped. Well above the node's own
/// [`ringkv_node::PENDING_REQUESTS_MAX_DEFAULT`], so that under overload the
/// node's precise accounting answers first.
pub const INBOX_INPUTS_MAX: usize = 32_768;

/// Most inputs taken from the inbox before a round runs: bounds the work of
/// one round so that ticks and fsyncs keep their pace under a flood.
pub const INBOX_DRAIN_MAX: usize = 4_096;

/// How often the node thread publishes its state ([`NodeState`]), updates
/// the shard metrics and re-reads the member table for the transport.
pub const STATUS_REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// Rounds of applied changes the event broadcast buffers for a slow
/// subscriber before it lags (and must re-read the store).
pub const EVENT_BROADCAST_CAPACITY: usize = 1_024;

/// A request's successful answer from the node.
#[derive(Debug)]
pub struct Answer {
    /// Header fields (cluster, member, term).
    pub header: Header,
    /// The answer.
    pub reply: Reply,
}

/// What the node thread answers a request with.
type NodeResult = Result<Answer, NodeError>;

/// What the node thread takes from its inbox.
#[derive(Debug)]
enum NodeInput {
    /// A client request and where to send its answer.
    Request { request: Request, reply: oneshot::Sender<NodeResult> },
    /// A frame from a peer, or news that a peer is unreachable.
    Peer(PeerEvent),
    /// Stop the loop (graceful shutdown).
    Shutdown,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be opened or locked.
    #[error("cannot open data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The node refused its configuration or its durable state.
    #[error("cannot open the node: {0}")]
    Node(#[from] NodeError),
    /// The node thread could not be spawned or died while opening.
    #[error("the node thread failed to start: {0}")]
    Thread(String),
}

/// The services' handle on the node; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    inbox: SyncSender<NodeInput>,
    state: Arc<NodeState>,
    store: Arc<MvccStore>,
    events: broadcast::Sender<Arc<[WatchEvents]>>,
    metrics: Metrics,
}

impl NodeHandle {
    /// Sends `request` to the node and waits for its answer.
    ///
    /// # Errors
    /// `etcdserver: too many requests` when the inbox is full, `etcdserver:
    /// server stopped` when the node thread is gone, and the node's own
    /// errors in etcd's form.
    pub async fn call(&self, request: Request) -> Result<Answer, EtcdError> {
        let proposal = is_proposal(&request);
        if proposal {
            self.metrics.proposal_submitted();
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.inbox.try_send(NodeInput::Request { request, reply });
        let result = match sent {
            Err(TrySendError::Full(_)) => Err(EtcdError::TooManyRequests),
            Err(TrySendError::Disconnected(_)) => Err(EtcdError::Stopped),
            Ok(()) => match answer.await {
                Ok(result) => result.map_err(EtcdError::from),
                Err(_) => Err(EtcdError::Stopped),
            },
        };
        if proposal && result.is_err() {
            self.metrics.proposal_failed();
        }
        result
    }

    /// The node's published state.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// The state machine, for reads that need no ordering by the node
    /// (snapshot streams, watch replays).
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    /// Follows every applied change, round by round, in apply order (see
    /// the module docs).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<[WatchEvents]>> {
        self.events.subscribe()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Hands a peer event to the node without blocking (the transport's
    /// sink).
    pub fn deliver_peer_event(&self, event: PeerEvent) -> Delivery {
        match self.inbox.try_send(NodeInput::Peer(event)) {
            Ok(()) => Delivery::Accepted,
            Err(_) => Delivery::Dropped,
        }
    }

    /// Asks the node thread to stop after the round it is in.
    fn request_shutdown(&self) {
        // A full inbox is drained within a few rounds; a blocking send here
        // would only wait for that, and the thread may already be gone.
        let _ = self.inbox.send(NodeInput::Shutdown);
    }
}

/// Whether a request is proposed through consensus (counted as a proposal).
fn is_proposal(request: &Request) -> bool {
    match request {
        Request::Put(_)
        | Request::DeleteRange(_)
        | Request::Txn(_)
        | Request::Compact(_)
        | Request::LeaseGrant { .. }
        | Request::LeaseRevoke(_)
        | Request::MemberAdd { .. }
        | Request::MemberRemove(_)
        | Request::MemberUpdate { .. }
        | Request::MemberPromote(_) => true,
        Request::Alarm { action, .. } => *action != ringkv_node::AlarmAction::Get,
        _ => false,
    }
}

/// The running node thread.
#[derive(Debug)]
pub struct NodeRuntime {
    handle: NodeHandle,
    link: PeerLink,
    thread: Option<JoinHandle<()>>,
}

impl NodeRuntime {
    /// Opens the node on `data_dir` on a new thread and starts its loop.
    /// Must be called within a tokio runtime (reads run on its blocking
    /// pool). The transport is bound later through [`NodeRuntime::link`].
    ///
    /// # Errors
    /// The data directory cannot be opened (or another process holds it),
    /// or the node refuses its configuration or durable state.
    pub async fn start<E: Engine>(
        config: NodeConfig,
        data_dir: &Path,
        metrics: Metrics,
    ) -> Result<NodeRuntime, StartError> {
        let runtime = Handle::try_current()
            .map_err(|_| StartError::Thread("not called within a tokio runtime".to_owned()))?;
        let (inbox, inbox_rx) = sync_channel(INBOX_INPUTS_MAX);
        let (events, _) = broadcast::channel(EVENT_BROADCAST_CAPACITY);
        let link = PeerLink::new();
        let (opened_tx, opened_rx) = oneshot::channel();
        let dir = data_dir.to_path_buf();
        let thread_link = link.clone();
        let thread_events = events.clone();
        let thread_metrics = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("ringkv-node".to_owned())
            .spawn(move || {
                let disk = match FsDisk::open(&dir) {
                    Ok(disk) => TimedDisk::new(disk, thread_metrics.clone()),
                    Err(source) => {
                        let path = dir.display().to_string();
                        let _ = opened_tx.send(Err(StartError::DataDir { path, source }));
                        return;
                    }
                };
                let clock = MonotonicClock::new();
                let node = match Node::<E, _, _, _>::open(config, disk, thread_link.clone(), clock)
                {
                    Ok(node) => node,
                    Err(e) => {
                        let _ = opened_tx.send(Err(StartError::Node(e)));
                        return;
                    }
                };
                let revision =
                    node.shard_status(DATA_SHARD).map(|s| s.revision).unwrap_or_default();
                let state = Arc::new(NodeState::new(node.id(), node.cluster_id(), revision));
                let store = Arc::clone(node.store());
                if opened_tx.send(Ok((Arc::clone(&state), store))).is_err() {
                    return;
                }
                node_loop::Loop {
                    node,
                    clock,
                    inbox: inbox_rx,
                    state,
                    events: thread_events,
                    runtime,
                    link: thread_link,
                    metrics: thread_metrics,
                }
                .run();
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let (state, store) = match opened_rx.await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StartError::Thread("the node thread died while opening".to_owned()));
            }
        };
        Ok(NodeRuntime {
            handle: NodeHandle { inbox, state, store, events, metrics },
            link,
            thread: Some(thread),
        })
    }

    /// The handle the services use.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// This member's id.
    pub fn member_id(&self) -> NodeId {
        self.handle.state.member_id()
    }

    /// The node's transport link, to bind once the transport has started.
    pub fn link(&self) -> &PeerLink {
        &self.link
    }

    /// Stops the node thread and waits for it: the round in progress
    /// finishes (its fsync included), then the node closes.
    pub async fn shutdown(mut self) {
        if let Some(thread) = self.thread.take() {
            let handle = self.handle.clone();
            // Both may block (a full inbox, a round's fsync): off the
            // async workers.
            let _ = tokio::task::spawn_blocking(move || {
                handle.request_shutdown();
                thread.join()
            })
            .await;
        }
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.request_shutdown();
        }
    }
}
