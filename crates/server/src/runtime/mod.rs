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
//!                                         ReadReady → oneshot, and the request's
//!                                                     task runs it (execute_read on a
//!                                                     ReadView; ranges on the blocking pool)
//!                         ─▶ events: its shard's watch hub (every event),
//!                            then broadcast
//!                         ─▶ every STATUS_REFRESH_INTERVAL: NodeState, metrics,
//!                            transport address book from the member table
//! ```
//!
//! The node is a pure loop; this thread is the only one that touches it, so
//! it needs no locks. Reads are ordered by the node (ReadIndex) but executed
//! elsewhere, so they never serialize behind WAL fsyncs. Serializable
//! ranges need no ordering and skip the thread altogether while auth is off
//! ([`NodeHandle::range_serializable`]). A full inbox turns
//! a client request away with `etcdserver: too many requests` at once, and
//! drops a peer frame (which consensus tolerates as loss).
//!
//! # Applied changes
//!
//! Every round's applied changes ([`WatchEvents`]) are published once, in
//! apply order, on a [`tokio::sync::broadcast`] channel
//! ([`NodeHandle::subscribe_events`]). The Lock and Election services wait
//! for key deletions through it; the watch hub is fed directly on the node
//! thread before that, since it must see every event and never lag.

mod io;
mod node_loop;
mod state;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::{
    Credential, DATA_SHARD, Engine, EngineKind, Header, Node, NodeConfig, NodeError, ReadRequest,
    Reply, Request, WatchEvents, WithEngine, execute_read, stored_engine,
};
use ringkv_ring::Keyspace;
use ringkv_storage::FsDisk;
use ringkv_storage::mvcc::{MvccStore, RangeRequest};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

pub use io::{BULK_FRAME_BYTES_MIN, MonotonicClock, PeerLink, TimedDisk, TimedFile};
pub use state::{NodeState, ShardReport};

use crate::api::EtcdError;
use crate::metrics::Metrics;
use crate::peer::{Delivery, PeerEvent};
use crate::watch::{WatchConfig, WatchContext, WatchHub, WatchHubs};

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

/// What the node thread sends back for a request.
#[derive(Debug)]
enum NodeReply {
    /// The answer.
    Done(NodeResult),
    /// A read the node has ordered (a linearizable read once its index is
    /// applied): the waiting task runs it on the store itself, rather than
    /// a task spawned for it that then wakes the waiting one.
    Read(OrderedRead),
}

/// A read ready to run (see [`NodeReply::Read`]).
#[derive(Debug)]
struct OrderedRead {
    store: Arc<MvccStore>,
    header: ringkv_node::Header,
    shard: ShardId,
    read: ReadRequest,
    auth_revision: Option<u64>,
}

impl OrderedRead {
    fn run(self) -> NodeResult {
        let OrderedRead { store, header, shard, read, auth_revision } = self;
        store
            .read()
            .map_err(NodeError::from)
            .and_then(|view| execute_read(&view, shard, &read, auth_revision))
            .map(|reply| Answer { header, reply })
    }

    /// Runs the read: a point read here, on the caller's runtime worker
    /// (a few microseconds in the store's cache); a range, which may scan
    /// much more, on the blocking pool, where it cannot stall other
    /// requests' tasks. `None`: the blocking pool is shutting down.
    async fn serve(self) -> Option<NodeResult> {
        if is_point_read(&self.read) {
            return Some(self.run());
        }
        tokio::task::spawn_blocking(move || self.run()).await.ok()
    }
}

/// What the node thread takes from its inbox.
#[derive(Debug)]
enum NodeInput {
    /// A client request, the data shard it is aimed at (`None`: the node
    /// routes it by its keys, or to the metadata group), what its client
    /// presented, and where to send its answer.
    Request {
        request: Request,
        shard: Option<ShardId>,
        credential: Credential,
        reply: oneshot::Sender<NodeReply>,
    },
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
    /// The watch hub could not read the store it serves.
    #[error("cannot open the watch hub: {0}")]
    Watch(#[source] crate::watch::WatchError),
}

/// The services' handle on the node; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    inbox: SyncSender<NodeInput>,
    state: Arc<NodeState>,
    store: Arc<MvccStore>,
    events: broadcast::Sender<Arc<[WatchEvents]>>,
    hubs: Arc<WatchHubs>,
    metrics: Metrics,
    /// The cluster's shards and hash-key rule: where each key lives.
    keyspace: Keyspace,
}

impl NodeHandle {
    /// Sends `request` to the node and waits for its answer.
    ///
    /// # Errors
    /// `etcdserver: too many requests` when the inbox is full, `etcdserver:
    /// server stopped` when the node thread is gone, and the node's own
    /// errors in etcd's form.
    pub async fn call(&self, request: Request) -> Result<Answer, EtcdError> {
        self.call_as(Credential::Anonymous, request).await
    }

    /// Sends `request`, made with `credential`, to the node and waits for
    /// its answer (the node resolves the credential and checks the rights).
    ///
    /// # Errors
    /// As [`NodeHandle::call`], and etcd's auth errors.
    pub async fn call_as(
        &self,
        credential: Credential,
        request: Request,
    ) -> Result<Answer, EtcdError> {
        self.send(credential, None, request).await
    }

    /// Sends a KV request (`Range`, `Put`, `DeleteRange`, `Txn`), made with
    /// `credential`, to data shard `shard` and waits for its answer: one
    /// part of a request over several shards. The request must only name
    /// keys of that shard.
    ///
    /// # Errors
    /// As [`NodeHandle::call_as`].
    pub async fn call_shard_as(
        &self,
        credential: Credential,
        shard: ShardId,
        request: Request,
    ) -> Result<Answer, EtcdError> {
        self.send(credential, Some(shard), request).await
    }

    async fn send(
        &self,
        credential: Credential,
        shard: Option<ShardId>,
        request: Request,
    ) -> Result<Answer, EtcdError> {
        let proposal = is_proposal(&request);
        if proposal {
            self.metrics.proposal_submitted();
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.inbox.try_send(NodeInput::Request { request, shard, credential, reply });
        let result = match sent {
            Err(TrySendError::Full(_)) => Err(EtcdError::TooManyRequests),
            Err(TrySendError::Disconnected(_)) => Err(EtcdError::Stopped),
            Ok(()) => match answer.await {
                Ok(NodeReply::Done(result)) => result.map_err(EtcdError::from),
                Ok(NodeReply::Read(read)) => match read.serve().await {
                    Some(result) => result.map_err(EtcdError::from),
                    None => Err(EtcdError::Stopped),
                },
                Err(_) => Err(EtcdError::Stopped),
            },
        };
        if proposal {
            match result {
                Ok(_) => self.metrics.proposal_applied(),
                Err(_) => self.metrics.proposal_failed(),
            }
        }
        result
    }

    /// Serves a serializable `Range` from the store on the calling task,
    /// without the node thread: the node would order nothing for it (it
    /// reads the latest applied state at once, even when stopped), so the
    /// answer is the one the node gives — the same store read
    /// ([`execute_read`]), header and errors — without two thread
    /// hand-offs. Point reads run here; a range, which may scan much
    /// more, on the blocking pool, as the node thread sends them.
    ///
    /// Gives the request back ([`DirectRead::NeedsNode`]) when the node
    /// must serve it: auth is enabled (it resolves the caller's token and
    /// checks their rights at the auth revision it runs with), this node
    /// does not hold `shard` (as of its last published state), or
    /// [`NodeState::set_direct_serializable_reads`] turned this off.
    ///
    /// `shard` is the data shard that holds every key of the range.
    pub async fn range_serializable(&self, shard: ShardId, req: RangeRequest) -> DirectRead {
        // A shard this node does not hold (placed elsewhere) has no rows
        // in its store: the node forwards the read to a node that holds it.
        if !self.state.direct_serializable_reads()
            || self.state.auth_enabled()
            || !self.state.hosts(shard)
        {
            return DirectRead::NeedsNode(req);
        }
        if self.state.is_closed() {
            return DirectRead::Answered(Err(EtcdError::Stopped));
        }
        let point = req.range_end.is_empty();
        let store = Arc::clone(&self.store);
        let state = Arc::clone(&self.state);
        let auth = auth_shard(&self.keyspace);
        let run = move || direct_range(&store, &state, auth, shard, req);
        let served = if point {
            run()
        } else {
            match tokio::task::spawn_blocking(run).await {
                Ok(served) => served,
                // The node path reports a read that died as a closed reply.
                Err(_) => return DirectRead::Answered(Err(EtcdError::Stopped)),
            }
        };
        match served {
            Ok(answer) => DirectRead::Answered(answer.map_err(EtcdError::from)),
            Err(req) => DirectRead::NeedsNode(req),
        }
    }

    /// The cluster's shards and hash-key rule.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// Whether this node holds a replica of `shard` (the metadata shard
    /// included), as of the node thread's last refresh.
    pub fn hosts(&self, shard: ShardId) -> bool {
        self.state.hosts(shard)
    }

    /// The nodes holding `shard`, ascending, as of the node thread's last
    /// refresh (see [`NodeState::shard_replica_nodes`]); empty for a shard
    /// that is not the cluster's.
    pub fn shard_replica_nodes(&self, shard: ShardId) -> Vec<NodeId> {
        let data = (1..=u64::from(self.keyspace.shard_count())).contains(&shard.0);
        let meta = self.keyspace.shard_count() > 1 && shard == auth_shard(&self.keyspace);
        if data || meta || self.state.hosts(shard) {
            self.state.shard_replica_nodes(shard)
        } else {
            Vec::new()
        }
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

    /// The first data shard's watch hub (the only one with one shard).
    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        self.hubs.first()
    }

    /// The watch hubs of every data shard.
    pub fn watch_hubs(&self) -> &Arc<WatchHubs> {
        &self.hubs
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

/// What [`NodeHandle::range_serializable`] did with a read.
#[derive(Debug)]
pub enum DirectRead {
    /// Served without the node thread.
    Answered(Result<Answer, EtcdError>),
    /// Only the node may serve it: here it is back.
    NeedsNode(RangeRequest),
}

/// One direct serializable range on a fresh view, or the request back when
/// the view shows auth enabled: the flag in [`NodeState`] lags the store
/// by up to a round, and the node's rights check must not be skipped for
/// a read that sees auth on.
fn direct_range(
    store: &MvccStore,
    state: &NodeState,
    auth: ShardId,
    shard: ShardId,
    req: RangeRequest,
) -> Result<Result<Answer, NodeError>, RangeRequest> {
    let view = match store.read() {
        Ok(view) => view,
        Err(e) => return Ok(Err(NodeError::from(e))),
    };
    // On a sharded cluster the data shard holds a copy of the metadata
    // shard's auth store, which on this node may be ahead of the metadata
    // replica: auth on in either needs the node's check.
    for holder in [auth, shard] {
        match ringkv_node::auth::stored_enabled(&view, holder) {
            Ok(false) => {}
            Ok(true) => return Err(req),
            Err(e) => return Ok(Err(e)),
        }
    }
    let header = state.node_header();
    let read = ReadRequest::Range(req);
    Ok(execute_read(&view, shard, &read, None).map(|reply| Answer { header, reply }))
}

/// The shard whose store holds the auth tables: the data shard of a
/// one-shard cluster (exactly etcd's layout), the metadata group otherwise
/// (ADR 0002).
fn auth_shard(keyspace: &Keyspace) -> ShardId {
    if keyspace.shard_count() == 1 { DATA_SHARD } else { ShardId(ringkv_ring::METADATA_SHARD.0) }
}

/// Whether a read touches at most one key (a `Get`), so that it may run on
/// a runtime worker: a range or a member list may scan much more and goes
/// to the blocking pool, where it cannot stall other requests' tasks.
fn is_point_read(read: &ReadRequest) -> bool {
    matches!(read, ReadRequest::Range(r) if r.range_end.is_empty())
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
        | Request::MemberPromote(_)
        | Request::Drain { .. }
        | Request::AuthChange(_) => true,
        Request::Alarm { action, .. } => *action != ringkv_node::AlarmAction::Get,
        _ => false,
    }
}

/// What the node thread sends back once the node is open.
type Opened = Result<(Arc<NodeState>, Arc<MvccStore>, Arc<WatchHubs>), StartError>;

/// The node thread's work once the engine is known: open the node with
/// engine `E`, tell the caller, run the loop.
struct OpenAndRun {
    config: NodeConfig,
    keyspace: Keyspace,
    disk: TimedDisk<FsDisk>,
    opened: oneshot::Sender<Opened>,
    inbox: Receiver<NodeInput>,
    events: broadcast::Sender<Arc<[WatchEvents]>>,
    link: PeerLink,
    metrics: Metrics,
}

impl WithEngine for OpenAndRun {
    type Output = ();

    fn run<E: Engine>(self) {
        let OpenAndRun { config, keyspace, disk, opened, inbox, events, link, metrics } = self;
        let clock = MonotonicClock::new();
        let election_timeout = config.election_timeout();
        let node = match Node::<E, _, _, _>::open(config, disk, link.clone(), clock) {
            Ok(node) => node,
            Err(e) => {
                let _ = opened.send(Err(StartError::Node(e)));
                return;
            }
        };
        // The largest data shard revision (with one shard, the revision).
        let revision = keyspace
            .shard_ids()
            .filter_map(|s| node.shard_status(ShardId(s.0)))
            .map(|s| s.revision)
            .max()
            .unwrap_or_default();
        let state = Arc::new(NodeState::new(node.id(), node.cluster_id(), revision));
        let store = Arc::clone(node.store());
        let context: Arc<dyn WatchContext> = Arc::clone(&state) as Arc<dyn WatchContext>;
        // `hasleader` streams check for a leader once per election
        // timeout, as etcd's do.
        let watch_config =
            WatchConfig { leader_check_interval: election_timeout, ..WatchConfig::default() };
        let hubs = match WatchHubs::new(&store, keyspace, &context, &watch_config) {
            Ok(hubs) => hubs,
            Err(e) => {
                let _ = opened.send(Err(StartError::Watch(e)));
                return;
            }
        };
        if opened.send(Ok((Arc::clone(&state), store, Arc::clone(&hubs)))).is_err() {
            return;
        }
        node_loop::Loop { node, clock, inbox, state, events, hubs, link, metrics }.run();
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
    /// `config.keyspace` says which data shards the node hosts (and the
    /// server routes by).
    ///
    /// `engine` is the consensus engine of a new data directory; one that
    /// was created before keeps the engine it was created with (as etcd
    /// ignores its `--initial-cluster*` flags on restart), and a different
    /// `engine` is only logged.
    ///
    /// # Errors
    /// The data directory cannot be opened (or another process holds it),
    /// or the node refuses its configuration or durable state.
    pub async fn start(
        engine: EngineKind,
        config: NodeConfig,
        data_dir: &Path,
        metrics: Metrics,
    ) -> Result<NodeRuntime, StartError> {
        let keyspace = config.keyspace;
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
                let engine = match stored_engine(&disk, config.store.clone()) {
                    Ok(Some(stored)) => {
                        if stored != engine {
                            warn!(
                                %stored, requested = %engine,
                                "the data directory was created with another engine: keeping it"
                            );
                        }
                        stored
                    }
                    Ok(None) => engine,
                    Err(e) => {
                        let _ = opened_tx.send(Err(StartError::Node(e)));
                        return;
                    }
                };
                info!(%engine, "consensus engine");
                thread_metrics.set_engine(engine.name());
                engine.dispatch(OpenAndRun {
                    config,
                    keyspace,
                    disk,
                    opened: opened_tx,
                    inbox: inbox_rx,
                    events: thread_events,
                    link: thread_link,
                    metrics: thread_metrics,
                });
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let (state, store, hubs) = match opened_rx.await {
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
            handle: NodeHandle { inbox, state, store, events, hubs, metrics, keyspace },
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
