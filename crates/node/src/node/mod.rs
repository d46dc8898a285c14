//! The node loop; see [`Node`].

mod apply;
mod hosting;
mod housekeeping;
mod leases;
mod placement;
mod quiet;
pub use placement::MemberReplicas;
pub use quiet::ShardStamp;
mod round;
mod route;
mod snapshot;
pub(crate) mod throttle;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::{
    Config, DetRng, Entry, EntryKind, Envelope, Epoch, HardState, LogIndex, LogStorage, Membership,
    NodeId, Replica, Role, ShardId, SnapshotMeta, SoftState, decode_exact, encode_to_vec,
};
use ringkv_ring::Keyspace;
use ringkv_storage::mvcc::{LeaseId, MvccStore};
use ringkv_storage::{Disk, Wal, WalError};

use crate::auth::{AuthInfo, AuthQuery, AuthStore, Credential, TokenTable};
use crate::cluster::{ClusterTables, cluster_id, member_id};
use crate::config::{
    Bootstrap, DATA_SHARD, META_SHARD, NodeConfig, STORE_FILE, single_shard_keyspace,
};
use crate::engine::Engine;
use crate::error::NodeError;
use crate::frame::{NodeMessage, PeerFrame};
use crate::io::{Clock, Transport};
use crate::proposal::{ClusterInit, Member, Proposal, ProposalBody, ProposalId};
use crate::request::{
    Completion, Header, NodeStatus, ReadRequest, Reply, Request, RoundOutput, ShardStatus, Token,
};

use hosting::{load_tombstones, opened_shards};
use leases::LeaseTracker;
use snapshot::SnapshotState;

/// Node record holding this member's id.
pub(crate) const MEMBER_ID_RECORD: &str = "member_id";

/// Node record counting the node's starts.
const BOOT_RECORD: &str = "boots";

/// Node record holding the keyspace a sharded node was created with
/// (absent: one shard, as every data directory made before sharding).
const KEYSPACE_NODE_RECORD: &str = "keyspace";

/// Node record holding the replicas per data shard a sharded node was
/// created with (absent on sharded directories made before `--replicas`:
/// [`crate::cluster::REPLICAS_BEFORE_RECORD`]).
const REPLICAS_NODE_RECORD: &str = "replicas";

/// Request sequence numbers start at `boot << SEQ_BOOT_SHIFT`, so numbers
/// never repeat across restarts: an entry proposed before a crash may
/// still commit after it, and must not be taken for the answer to a new
/// request that happens to reuse its number (nor may a late read index
/// answer a new read). 2^40 requests per start is more than a node serves.
const SEQ_BOOT_SHIFT: u32 = 40;

/// An upper bound of the WAL bytes one data shard's bootstrap takes (its
/// configuration, a no-op entry, a hard state) beyond the founders' ids.
const BOOTSTRAP_SHARD_BYTES_MAX: u64 = 4096;

/// Epoch of a new cluster's first entry: below every epoch an election can
/// produce (Raft's first election is term 2; a Paxos ballot `(1, n)` with
/// `n >= 1` is above `(1, 0)`).
const BOOTSTRAP_EPOCH: Epoch = Epoch { round: 1, node: NodeId(0) };

/// Node record holding the metadata of the last snapshot restored into
/// `shard` (see [`snapshot`]).
fn snapshot_record(shard: ShardId) -> String {
    format!("restored_snapshot/{}", shard.0)
}

/// How a proposal reached (or waits for) the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Placement {
    /// Appended to this node's log at `index` while it led.
    Local { index: LogIndex },
    /// Forwarded to the leader `to`.
    Forwarded { to: NodeId },
    /// No leader known yet: placed as soon as one is.
    Unplaced,
    /// A change of the consensus group's membership the leader holds back
    /// until the previous one has taken effect (see
    /// `Node::reconfiguration_settled`); placed again every round.
    Deferred,
}

/// A proposal waiting to be applied.
#[derive(Debug)]
struct PendingProposal {
    /// The client waiting; `None` for the node's own housekeeping.
    token: Option<Token>,
    deadline: Duration,
    shard: ShardId,
    placement: Placement,
    /// The encoded proposal, kept to forward again if a leader refuses it
    /// before appending it.
    bytes: Bytes,
    /// A promotion the leader must check first.
    promote: Option<NodeId>,
    /// It changes the consensus group's voters or learners (MemberAdd,
    /// MemberRemove, MemberPromote): one such change at a time.
    reconfigures: bool,
}

/// Where a linearizable read is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ReadState {
    /// No leader known yet.
    Unsent,
    /// Asked the engine at `at`, in read batch `batch` (the request id the
    /// engine answers); the leader confirms it.
    Sent { at: Duration, batch: u64 },
    /// Confirmed: may be served once `index` is applied.
    Indexed(LogIndex),
}

/// What a linearizable read reads once its index is applied.
#[derive(Debug)]
enum ReadKind {
    /// The store, on a reader's thread ([`crate::execute_read`]).
    Store(ReadRequest),
    /// The auth store's mirror, answered on the node thread.
    Auth(AuthQuery),
}

/// A read waiting for its read index or for apply.
#[derive(Debug)]
struct PendingRead {
    token: Token,
    deadline: Duration,
    shard: ShardId,
    read: ReadKind,
    /// Who asks: resolved again, and the rights checked, once the index is
    /// applied (as etcd checks a read after its read barrier).
    credential: Credential,
    state: ReadState,
}

/// A request only the leader answers (lease keep-alive, time-to-live,
/// list), forwarded or waiting for a leader.
#[derive(Debug)]
struct PendingCall {
    token: Token,
    deadline: Duration,
    shard: ShardId,
    request: crate::frame::LeaderRequest,
    /// The leader it was sent to; `None` while waiting for one.
    sent_to: Option<NodeId>,
}

/// A lease grant or revoke the metadata group applied, being carried to
/// every data shard (ADR 0002, "Leases across shards"): the client (if
/// any) is answered once every data shard has applied the same change.
#[derive(Debug)]
struct LeaseFanOut {
    /// The client waiting; `None` for an expiry.
    token: Option<Token>,
    deadline: Duration,
    lease: LeaseId,
    /// `Some(ttl)` for a grant, `None` for a revoke.
    grant_ttl: Option<i64>,
    /// The metadata group's answer, given once every shard applied.
    reply: Reply,
    /// Data shards that have not applied the change yet, each with the
    /// housekeeping proposal carrying it there (proposed again if lost).
    waiting: BTreeMap<ShardId, ProposalId>,
}

/// A client's auth change the metadata group applied, being carried to
/// every data shard as a copy of the whole auth store
/// ([`crate::AuthSnapshot`]): the client is answered once every data
/// shard holds a copy at least as new as the metadata shard's store right
/// after the change.
#[derive(Debug)]
struct AuthFanOut {
    token: Option<Token>,
    deadline: Duration,
    /// The metadata shard's applied index the change is in.
    meta_index: u64,
    /// The metadata group's answer, given once every shard caught up.
    reply: Reply,
    /// Data shards whose copy is older, each with the housekeeping
    /// proposal carrying a newer one there (proposed again if lost).
    waiting: BTreeMap<ShardId, ProposalId>,
}

/// A MoveLeader waiting for the target to lead.
#[derive(Debug)]
struct PendingTransfer {
    token: Token,
    deadline: Duration,
    shard: ShardId,
    target: NodeId,
}

/// Why the node stopped.
#[derive(Clone, Debug)]
struct Stopped {
    reason: String,
    no_space: bool,
    /// Removed from the cluster, not failed.
    removed: bool,
    /// Asking the leader to raise this node's NOSPACE alarm.
    raise: Option<AlarmRaise>,
}

/// A stopped node's attempts to have the leader raise its NOSPACE alarm:
/// it sends the proposal to the leader it knows, or to each peer in turn,
/// and follows the leader a refusing peer names.
#[derive(Clone, Debug)]
struct AlarmRaise {
    next_at: Duration,
    target: Option<NodeId>,
    peers: Vec<NodeId>,
    next_peer: usize,
    attempts: u32,
}

/// A shard replica and the node's state about it.
struct HostedShard<E: Engine, D: Disk> {
    id: ShardId,
    /// This replica's consensus id: the node id, or a later incarnation's
    /// fresh id (`crate::cluster::replica_id`).
    rid: NodeId,
    /// The incarnation `rid` is of.
    incarnation: u32,
    replica: E::Replica<D>,
    /// The last soft state the engine reported, its leader as a node id
    /// (see `raw_leader`).
    soft: SoftState,
    /// The leader's replica id as the engine reported it, kept to map it
    /// again once the metadata tables know an id they did not.
    raw_leader: Option<NodeId>,
    /// Highest index applied to the store.
    applied: LogIndex,
    /// The member table and alarms as applied.
    tables: ClusterTables,
    /// The auth store as applied.
    auth: AuthStore,
    /// Leader-only lease clocks.
    leases: LeaseTracker,
    /// A new leader answers lease requests only once it has applied up to
    /// here (its first entry of the term): before, it may not yet know
    /// leases its predecessors granted (etcd waits for apply the same way).
    leases_ready_at: LogIndex,
    snapshot: SnapshotState<D>,
    /// Snapshots received from the leader and installed since this node
    /// opened.
    snapshots_installed: u64,
    /// The index of the last member-table change this node appended as
    /// leader that changes the group's membership; no other is appended
    /// before it is applied.
    reconfigured_at: Option<LogIndex>,
    /// Not before this time: another membership change, publish, or
    /// alarm proposal of this node's own housekeeping.
    retry_membership_at: Duration,
    retry_publish_at: Duration,
    retry_alarm_at: Duration,
    /// The index of the last membership change this node's housekeeping
    /// appended as the shard's leader (see `reconcile_membership`): the
    /// configuration is reported to the metadata group only once that is
    /// applied, so that a report never names an uncommitted configuration.
    config_change_at: Option<LogIndex>,
    /// Not before this time: the same report of the shard's configuration
    /// again.
    retry_report_at: Duration,
    /// The voters and learners this leader last reported.
    reported: Option<(Vec<NodeId>, Vec<NodeId>)>,
    /// When to report the recorded configuration once more, at a newer
    /// applied index (see `report_config`).
    confirm_report_at: Option<Duration>,
    /// Leader: consecutive ticks the shard was quiet (see [`quiet`]).
    quiet_ticks: u32,
    /// The replica does not tick (see [`quiet`]).
    hibernating: bool,
}

impl<E: Engine, D: Disk> HostedShard<E, D> {
    /// Starts the replica of `shard` from what the WAL and the store hold
    /// (nothing, for a replica created to join its shard), as node
    /// `node`'s replica in its `incarnation`.
    fn open(
        cfg: &NodeConfig,
        node: NodeId,
        incarnation: u32,
        shard: ShardId,
        store: &MvccStore,
        wal: &Wal<D>,
        now: Duration,
    ) -> Result<Self, NodeError> {
        let applied = store.applied_index(shard);
        let id = crate::cluster::replica_id(node, shard, incarnation);
        let replica = E::create(engine_config(cfg, id, shard), applied, wal.log(shard))?;
        let view = store.read()?;
        let tables = ClusterTables::load(&view, shard)?;
        let auth = AuthStore::load(&view, shard)?;
        drop(view);
        let soft = SoftState { role: Role::Follower, leader: None, epoch: replica.status().epoch };
        Ok(HostedShard {
            id: shard,
            rid: id,
            incarnation,
            raw_leader: None,
            soft,
            applied,
            tables,
            auth,
            leases: LeaseTracker::default(),
            leases_ready_at: LogIndex::ZERO,
            snapshot: SnapshotState::new(applied),
            reconfigured_at: None,
            replica,
            retry_membership_at: now,
            retry_publish_at: now,
            retry_alarm_at: now,
            snapshots_installed: 0,
            config_change_at: None,
            retry_report_at: now,
            reported: None,
            confirm_report_at: None,
            quiet_ticks: 0,
            hibernating: false,
        })
    }

    fn is_leader(&self) -> bool {
        self.soft.role == Role::Leader
    }

    /// Whether this leader's lease clocks cover every lease granted so far.
    fn leases_ready(&self) -> bool {
        self.is_leader() && self.leases.is_active() && self.applied >= self.leases_ready_at
    }
}

/// Admission facts computed once per round.
#[derive(Copy, Clone, Debug, Default)]
struct RoundLimits {
    over_quota: bool,
    /// Committed but unapplied entries of the shard that lags most.
    apply_gap: u64,
}

/// Messages for one peer, sent together as one frame.
struct Outgoing<M> {
    messages: Vec<Envelope<M>>,
    node_messages: Vec<NodeMessage>,
}

impl<M> Default for Outgoing<M> {
    fn default() -> Self {
        Outgoing { messages: Vec::new(), node_messages: Vec::new() }
    }
}

/// The per-node loop over every hosted shard replica.
///
/// The node is a plain value driven by method calls, with no threads and
/// no tokio: [`Node::submit`] and [`Node::receive`] queue inputs, and
/// [`Node::run_round`] does one round of work. The server runs it on a
/// dedicated thread fed by channels; the simulator calls it directly.
/// Given the same inputs, clock readings and disk behaviour, a node does
/// the same thing: its maps are ordered, its randomness comes from the
/// seed in its configuration.
///
/// # One round
///
/// ```text
///  step received frames ─▶ tick (as the clock says) ─▶ route requests
///    ─▶ leader housekeeping (lease expiry and checkpoints, membership
///       reconciliation, alarms) ─▶ take every shard's Ready
///    ─▶ send `messages` (one frame per peer)
///    ─▶ install snapshots; buffer entries and hard states of all shards
///    ─▶ ONE WAL write + fdatasync ─▶ on_persisted ─▶ send `after_persist`
///    ─▶ apply committed entries of all shards in ONE store transaction
///    ─▶ answer waiters, emit watch events, serve reads whose index is applied
///    ─▶ snapshots and WAL compaction ─▶ expire requests past their deadline
/// ```
///
/// # Failure
///
/// A WAL or store failure (an fsync error, a full disk) stops the node: it
/// hands leadership to a caught-up voter, answers every waiting request
/// (`etcdserver: mvcc: database space exceeded` when the disk is full,
/// `etcdserver: server stopped` otherwise), raises NOSPACE through the
/// leader when the disk is full, and takes no more writes. It never retries
/// an fsync. Everything it acknowledged is durable; a restart recovers.
pub struct Node<E: Engine, D: Disk, T: Transport, C: Clock> {
    cfg: NodeConfig,
    id: NodeId,
    transport: T,
    clock: C,
    wal: Wal<D>,
    store: Arc<MvccStore>,
    shards: BTreeMap<ShardId, HostedShard<E, D>>,
    rng: DetRng,
    next_seq: u64,
    last_tick: Duration,
    inbox: VecDeque<PeerFrame<E::Message>>,
    submitted: VecDeque<Submitted>,
    proposals: BTreeMap<ProposalId, PendingProposal>,
    /// Proposals in `proposals` a client waits for (kept, not counted, so
    /// that admitting a request costs O(1)).
    client_proposals: usize,
    /// Per round: whether new writes are refused for space, and whether
    /// apply lags too far behind commit (computed once, not per request).
    round_limits: RoundLimits,
    /// Keyed by the read's request id.
    reads: BTreeMap<u64, PendingRead>,
    /// Keyed by the request's sequence number.
    calls: BTreeMap<u64, PendingCall>,
    transfers: Vec<PendingTransfer>,
    outbox: BTreeMap<NodeId, Outgoing<E::Message>>,
    out: RoundOutput,
    stopped: Option<Stopped>,
    frames_dropped: u64,
    /// Simple auth tokens this node knows (in memory only; see
    /// [`crate::auth`]).
    tokens: TokenTable,
    /// When expired tokens are next dropped.
    next_token_sweep: Duration,
    /// The data shard's last log index when the node opened: tokens issued
    /// in entries up to it were issued before this start, and are not
    /// revived by replaying them (see [`crate::auth`]).
    tokens_from: LogIndex,
    /// Lease grants and revokes being carried to the data shards, keyed
    /// by the metadata proposal's sequence number.
    fanouts: BTreeMap<u64, LeaseFanOut>,
    /// When the metadata leader next compares the data shards' leases
    /// with its lease table (see `sync_lease_markers`).
    next_lease_sync: Duration,
    /// Auth changes being carried to the data shards, keyed by a
    /// sequence number of this node.
    auth_fanouts: BTreeMap<u64, AuthFanOut>,
    /// When the metadata leader next compares the data shards' auth
    /// stores with its own (see `sync_auth_stores`).
    next_auth_sync: Duration,
    /// Hibernation of quiet shards and leader balance (see [`quiet`]).
    quiet: quiet::Quiet,
    /// When the metadata leader next compares the recorded targets with
    /// the placement of the current members (see [`placement`]).
    next_placement: Duration,
    /// The target change this node proposed last, until it applies or is
    /// lost.
    placement_proposal: Option<ProposalId>,
    /// Data shards this node dropped its replica of (see [`hosting`]):
    /// never hosted again (the replica id is the node id).
    tombstones: BTreeMap<ShardId, u32>,
    /// Proposals another node forwarded for a shard it does not host,
    /// which this node appended as leader: it tells the forwarder when it
    /// applies one (kept until the deadline, then forgotten).
    remote_notify: BTreeMap<ProposalId, Duration>,
    /// For a data shard this node does not host: the node that last said
    /// it leads it (forwarded proposals go there first).
    remote_hint: BTreeMap<ShardId, NodeId>,
    /// When the node next compares the shards it hosts with where the
    /// metadata group places them (see [`hosting`]).
    next_hosting_check: Duration,
    /// The clock when the node opened (a peer never heard from since is
    /// counted as down from then).
    started_at: Duration,
    /// Pacing of the data shards' snapshot chunks
    /// (`--move-bytes-per-second`, see [`throttle`]).
    move_throttle: throttle::MoveThrottle<E::Message>,
}

/// A request queued by [`Node::submit_as`] or [`Node::submit_to`].
#[derive(Debug)]
struct Submitted {
    token: Token,
    request: Request,
    /// The data shard named by [`Node::submit_to`]; `None`: routed by key.
    shard: Option<ShardId>,
    credential: Credential,
    deadline: Duration,
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> std::fmt::Debug for Node<E, D, T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("engine", &E::NAME)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// Opens the node on `disk`: recovers the WAL and the store, or
    /// bootstraps an empty disk as `config.bootstrap` says, and starts a
    /// replica of every shard the node hosts.
    ///
    /// The first open of a data directory records the engine `E` in it;
    /// later opens refuse a directory created with another engine.
    ///
    /// # Errors
    /// Invalid configuration; a data directory created with another engine
    /// ([`NodeError::EngineMismatch`]); a WAL or store that cannot be opened
    /// or is corrupt; durable state that contradicts itself.
    pub fn open(config: NodeConfig, disk: D, transport: T, clock: C) -> Result<Self, NodeError> {
        config.validate()?;
        let store = Arc::new(MvccStore::open_on(&disk, STORE_FILE, config.store.clone())?);
        let stored_id = store.node_record(MEMBER_ID_RECORD)?;
        // Before the WAL is touched: another engine's log must not be read
        // (or written) as this one's.
        crate::engine::check_engine(&store, E::KIND, stored_id.is_none())?;
        check_keyspace(&store, &config, stored_id.is_some())?;
        let mut wal = Wal::open(disk, config.wal)?;
        let id = match stored_id {
            Some(v) => decode_exact::<NodeId>(v)
                .map_err(|source| NodeError::Codec { what: "stored member id", source })?,
            None => {
                let id = match &config.bootstrap {
                    Bootstrap::NewCluster { .. } => {
                        member_id(&config.cluster_token, &config.name, &config.peer_urls)
                    }
                    Bootstrap::Join { id } => *id,
                };
                store.set_node_record(MEMBER_ID_RECORD, Some(&encode_to_vec(&id)))?;
                id
            }
        };
        let boots = match store.node_record(BOOT_RECORD)? {
            Some(v) => decode_exact::<u64>(v)
                .map_err(|source| NodeError::Codec { what: "stored boot count", source })?,
            None => 0,
        } + 1;
        store.set_node_record(BOOT_RECORD, Some(&encode_to_vec(&boots)))?;
        let meta_shard = config.meta_shard();
        if !wal.shards().contains(&meta_shard)
            && store.applied_index(meta_shard) == LogIndex::ZERO
            && let Bootstrap::NewCluster { members } = &config.bootstrap
        {
            bootstrap_new_cluster(&mut wal, &config, id, members)?;
        }
        let now = clock.now();
        let hosting::Incarnations { dropped: tombstones, created } =
            load_tombstones(&store, &config)?;
        let mut shards = BTreeMap::new();
        for shard in opened_shards(&config, &wal, &store, &tombstones) {
            reconcile_restored_snapshot(&mut wal, &store, shard, E::SNAPSHOT_KEEPS_LATER_ENTRIES)?;
            let k = created.get(&shard).copied().unwrap_or(0);
            shards.insert(shard, HostedShard::open(&config, id, k, shard, &store, &wal, now)?);
        }
        // A drop that crashed part way: finish it.
        for &shard in tombstones.keys() {
            hosting::clear_shard(&mut wal, &store, shard)?;
        }
        let tokens_from = wal.log(meta_shard).last_index();
        let move_bytes_per_second = config.move_bytes_per_second;
        let mut node = Node {
            rng: DetRng::new(config.seed ^ id.0.rotate_left(17)),
            cfg: config,
            id,
            transport,
            clock,
            wal,
            store,
            shards,
            next_seq: boots << SEQ_BOOT_SHIFT,
            last_tick: now,
            inbox: VecDeque::new(),
            submitted: VecDeque::new(),
            proposals: BTreeMap::new(),
            client_proposals: 0,
            round_limits: RoundLimits::default(),
            reads: BTreeMap::new(),
            calls: BTreeMap::new(),
            transfers: Vec::new(),
            outbox: BTreeMap::new(),
            out: RoundOutput::default(),
            stopped: None,
            frames_dropped: 0,
            tokens: TokenTable::default(),
            next_token_sweep: now,
            tokens_from,
            fanouts: BTreeMap::new(),
            next_lease_sync: now,
            auth_fanouts: BTreeMap::new(),
            next_auth_sync: now,
            quiet: quiet::Quiet::default(),
            next_placement: now,
            placement_proposal: None,
            tombstones,
            remote_notify: BTreeMap::new(),
            remote_hint: BTreeMap::new(),
            next_hosting_check: now,
            started_at: now,
            move_throttle: throttle::MoveThrottle::new(move_bytes_per_second, now),
        };
        for shard in node.hosted_shards() {
            node.provide_snapshot_data(shard)?;
        }
        node.check_recorded_keyspace()?;
        Ok(node)
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster's id (0 until a joining member learns it).
    pub fn cluster_id(&self) -> u64 {
        self.shards.get(&self.meta_shard()).and_then(|s| s.tables.cluster_id).unwrap_or(0)
    }

    /// The cluster's keyspace: its data shards and how keys map to them.
    pub fn keyspace(&self) -> &Keyspace {
        &self.cfg.keyspace
    }

    /// The shard holding members, alarms, auth and leases:
    /// [`META_SHARD`] on a sharded cluster, [`DATA_SHARD`] otherwise.
    pub fn meta_shard(&self) -> ShardId {
        self.cfg.meta_shard()
    }

    /// Whether this node runs several data shards beside a metadata group.
    fn is_sharded(&self) -> bool {
        self.cfg.is_sharded()
    }

    /// Whether `shard` is one of the keyspace's data shards on a sharded
    /// cluster (placement applies to those only).
    fn is_data_shard(&self, shard: ShardId) -> bool {
        self.is_sharded() && (1..=u64::from(self.cfg.keyspace.shard_count())).contains(&shard.0)
    }

    /// The metadata shard's tables as applied here.
    fn meta_tables(&self) -> Option<&ClusterTables> {
        self.shards.get(&self.meta_shard()).map(|s| &s.tables)
    }

    /// Refuses to go on with a keyspace other than the one the cluster
    /// recorded (checked at open and whenever the record applies, e.g. on a
    /// joining node replaying the metadata log).
    fn check_recorded_keyspace(&self) -> Result<(), NodeError> {
        let configured = self.cfg.keyspace;
        let stored = if self.is_sharded() {
            match self.shards.get(&META_SHARD).and_then(|s| s.tables.keyspace) {
                Some(k) => k,
                // A data shard holding a cluster's initial member table:
                // the cluster was created with one shard.
                None if self
                    .shards
                    .range(DATA_SHARD..)
                    .any(|(_, s)| s.tables.cluster_id.is_some()) =>
                {
                    single_shard_keyspace()
                }
                None => return Ok(()),
            }
        } else {
            match self.shards.get(&DATA_SHARD).and_then(|s| s.tables.keyspace) {
                Some(k) => k,
                None => return Ok(()),
            }
        };
        if stored != configured {
            return Err(keyspace_mismatch(&stored, &configured));
        }
        if let Some(t) = self.shards.get(&META_SHARD).filter(|t| t.tables.keyspace.is_some())
            && self.is_sharded()
        {
            let stored = t.tables.replicas_per_shard();
            if stored != self.cfg.replicas {
                return Err(NodeError::ReplicasMismatch { stored, configured: self.cfg.replicas });
            }
        }
        Ok(())
    }

    /// The state machine, shared with the threads that execute reads
    /// ([`crate::execute_read`]), watch replays and snapshot streams.
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    /// The leader of the metadata shard ([`Node::meta_shard`]), as this
    /// node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.shards.get(&self.meta_shard()).and_then(|s| s.soft.leader)
    }

    /// Whether this member is a learner in the member table it has applied
    /// (etcd refuses most client calls on a learner).
    pub fn is_learner(&self) -> bool {
        self.meta_tables().and_then(|t| t.members.get(&self.id)).is_some_and(|m| m.is_learner)
    }

    /// Whether the node stopped after a storage failure (and why).
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_ref().map(|s| s.reason.as_str())
    }

    /// Frames dropped since the node opened (malformed, misaddressed, from
    /// another cluster, or past [`crate::config::INBOX_FRAMES_MAX`]).
    pub fn frames_dropped(&self) -> u64 {
        self.frames_dropped
    }

    /// Data shards' snapshot data bytes this node let out since it opened
    /// (paced by `--move-bytes-per-second`).
    pub fn snapshot_bytes_sent(&self) -> u64 {
        self.move_throttle.sent_bytes()
    }

    /// Data shards' snapshot chunks dropped since the node opened because
    /// [`MOVE_HELD_CHUNKS_MAX`](crate::MOVE_HELD_CHUNKS_MAX) were waiting for
    /// `--move-bytes-per-second` (their engines send them again).
    pub fn snapshot_chunks_dropped(&self) -> u64 {
        self.move_throttle.dropped()
    }

    /// When the loop should run its next round if nothing arrives: the next
    /// tick, or an earlier request deadline.
    pub fn next_wakeup(&self) -> Duration {
        let tick = self.last_tick + self.cfg.tick_interval;
        let deadlines = self
            .proposals
            .values()
            .map(|p| p.deadline)
            .chain(self.fanouts.values().map(|f| f.deadline))
            .chain(self.auth_fanouts.values().map(|f| f.deadline))
            .chain(self.reads.values().map(|r| r.deadline))
            .chain(self.calls.values().map(|c| c.deadline))
            .chain(self.transfers.iter().map(|t| t.deadline));
        deadlines.fold(tick, Duration::min)
    }

    /// Queues a client request made without credentials (see
    /// [`Node::submit_as`]).
    ///
    /// # Errors
    /// As [`Node::submit_as`].
    pub fn submit(&mut self, token: Token, request: Request) -> Result<(), NodeError> {
        self.submit_as(token, request, Credential::Anonymous)
    }

    /// Queues a KV request (Range, Put, DeleteRange, Txn, Compact, HashKV)
    /// for the data shard `shard`, whatever its keys: how a caller
    /// scatters a range over several shards, or compacts one shard. The
    /// answer carries that shard's header and revision.
    ///
    /// # Errors
    /// [`NodeError::WrongShard`] for a shard that is not one of the
    /// cluster's data shards or a request that is not a KV request; as
    /// [`Node::submit_as`] otherwise.
    pub fn submit_to(
        &mut self,
        token: Token,
        shard: ShardId,
        request: Request,
        credential: Credential,
    ) -> Result<(), NodeError> {
        route::check_named_shard(&self.cfg.keyspace, shard, &request)?;
        self.queue(token, request, Some(shard), credential)
    }

    /// Queues a client request made with `credential`; its answer arrives
    /// as a [`Completion`] carrying `token` from a later
    /// [`Node::run_round`]. The credential is resolved and the caller's
    /// rights checked as [`crate::auth`] describes.
    ///
    /// On a sharded cluster a KV request goes to the data shard of its
    /// keys ([`Node::keyspace`]); one whose keys span shards is answered
    /// with [`NodeError::SpansShards`] (a Txn's compares and every nested
    /// op count), and Compact and HashKV, which act on one shard's
    /// history, with [`NodeError::ShardRequired`] (use [`Node::submit_to`]).
    /// Everything else goes to the metadata shard.
    ///
    /// # Errors
    /// `etcdserver: too many requests` when
    /// [`NodeConfig::pending_requests_max`] requests already wait.
    pub fn submit_as(
        &mut self,
        token: Token,
        request: Request,
        credential: Credential,
    ) -> Result<(), NodeError> {
        self.queue(token, request, None, credential)
    }

    fn queue(
        &mut self,
        token: Token,
        request: Request,
        shard: Option<ShardId>,
        credential: Credential,
    ) -> Result<(), NodeError> {
        let pending = self.pending_requests();
        if pending >= self.cfg.pending_requests_max {
            return Err(NodeError::TooManyRequests {
                pending: pending as u64,
                limit: self.cfg.pending_requests_max as u64,
            });
        }
        let deadline = self.clock.now() + self.cfg.request_timeout;
        self.submitted.push_back(Submitted { token, request, shard, credential, deadline });
        Ok(())
    }

    /// Queues a frame received from a peer for the next round.
    ///
    /// # Errors
    /// The frame comes from a node of another engine, does not decode, is
    /// not addressed to this node, or the inbox is full; the frame is
    /// dropped (as the network may drop any).
    pub fn receive(&mut self, frame: Bytes) -> Result<(), NodeError> {
        if PeerFrame::<E::Message>::engine_of(&frame).is_ok_and(|k| k != E::KIND) {
            // Its messages would decode, if at all, as something else.
            self.frames_dropped += 1;
            return Err(NodeError::FrameRefused {
                why: "sent by a node running another consensus engine; every node of a cluster \
                      runs the engine the cluster was created with",
            });
        }
        let frame = match PeerFrame::<E::Message>::from_bytes(frame) {
            Ok(f) => f,
            Err(source) => {
                self.frames_dropped += 1;
                return Err(NodeError::Codec { what: "peer frame", source });
            }
        };
        if frame.to != self.id {
            self.frames_dropped += 1;
            return Err(NodeError::FrameRefused { why: "addressed to another node" });
        }
        if self.inbox.len() >= crate::config::INBOX_FRAMES_MAX {
            self.frames_dropped += 1;
            return Err(NodeError::FrameRefused { why: "the inbox is full (INBOX_FRAMES_MAX)" });
        }
        self.inbox.push_back(frame);
        Ok(())
    }

    /// Reports that `peer` cannot be reached, so engines probe it instead
    /// of streaming into the void (the transport also says so by refusing
    /// a frame).
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.forget_claims(peer);
        // The peer's replica of a shard may have an id of its own.
        let mut theirs = Vec::new();
        for s in self.shards.values() {
            // Runs on every failed send: no set built per shard.
            let m = s.replica.membership();
            for &r in m.voters.iter().chain(&m.outgoing).chain(&m.learners) {
                if r != s.rid && self.node_of(r) == peer && !theirs.contains(&(s.id, r)) {
                    theirs.push((s.id, r));
                }
            }
        }
        for (shard, r) in theirs {
            if let Some(s) = self.shards.get_mut(&shard) {
                s.replica.report_unreachable(r);
            }
        }
    }

    /// The node a replica id belongs to, as the metadata tables applied
    /// here say (see `ClusterTables::node_of`).
    pub(super) fn node_of(&self, replica: NodeId) -> NodeId {
        self.meta_tables().map_or(replica, |t| t.node_of(replica))
    }

    /// `node`'s replica in `shard`'s configuration as this node's replica
    /// knows it, if it has one.
    pub(super) fn replica_on(&self, shard: ShardId, node: NodeId) -> Option<NodeId> {
        let s = self.shards.get(&shard)?;
        s.replica.membership().members().into_iter().find(|&r| self.node_of(r) == node)
    }

    /// One shard's state, cheaply (no store scan): for metrics and tests.
    pub fn shard_status(&self, shard: ShardId) -> Option<ShardStatus> {
        let s = self.shards.get(&shard)?;
        let st = s.replica.status();
        let state = self.store.read().and_then(|v| v.shard_state(s.id)).unwrap_or_default();
        Some(ShardStatus {
            shard: s.id,
            leader: st.leader.map(|l| self.node_of(l)),
            is_leader: st.role == Role::Leader,
            is_learner: st.membership.is_learner_only(s.rid),
            term: st.epoch.round,
            commit_index: st.commit,
            applied_index: s.applied,
            revision: state.revision,
            compacted_revision: state.compacted_revision,
            snapshot_index: s.replica.storage().snapshot_meta().index,
            snapshots_installed: s.snapshots_installed,
        })
    }

    /// The node's state, for `Maintenance.Status`. Measures the store's
    /// live pages, which walks its trees: not for hot paths (see
    /// [`Node::shard_status`]).
    pub fn status(&self) -> NodeStatus {
        let shards: Vec<ShardStatus> =
            self.shards.keys().filter_map(|&id| self.shard_status(id)).collect();
        let meta = self.meta_shard();
        let data = shards.iter().find(|s| s.shard == meta);
        let revision = shards
            .iter()
            .filter(|s| s.shard != META_SHARD || !self.is_sharded())
            .map(|s| s.revision)
            .max()
            .unwrap_or_default();
        let mut errors: Vec<String> = self
            .meta_tables()
            .map(|t| {
                t.alarms
                    .iter()
                    .map(|a| format!("memberID:{} alarm:{}", a.member.0, a.alarm.name()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(stop) = &self.stopped {
            errors.push(stop.reason.clone());
        }
        NodeStatus {
            member_id: self.id,
            cluster_id: self.cluster_id(),
            engine: E::NAME,
            leader: data.and_then(|s| s.leader),
            raft_term: data.map_or(0, |s| s.term),
            raft_index: data.map_or(0, |s| s.commit_index.0),
            raft_applied_index: data.map_or(0, |s| s.applied_index.0),
            db_size: self.store.size_bytes().unwrap_or(0),
            db_size_in_use: self.store.size_in_use_bytes().unwrap_or(0),
            db_size_quota: self.cfg.quota_backend_bytes,
            is_learner: data.is_some_and(|s| s.is_learner),
            revision,
            errors,
            shards,
        }
    }

    /// Active alarms (the cluster's, as applied here, and this node's own
    /// NOSPACE if a full disk stopped it).
    pub fn alarms(&self) -> Vec<crate::AlarmMember> {
        self.alarm_list(self.meta_shard())
    }

    /// Members of the metadata shard's table, in id order.
    pub fn members(&self) -> Vec<Member> {
        self.meta_tables().map(ClusterTables::member_list).unwrap_or_default()
    }

    /// The engine status of `shard`'s replica (for tests and metrics).
    pub fn replica_status(&self, shard: ShardId) -> Option<ringkv_consensus::Status> {
        self.shards.get(&shard).map(|s| s.replica.status())
    }

    /// Asserts the node's invariants; run after every round in debug builds
    /// (and by the simulator whenever it likes).
    ///
    /// # Panics
    /// If an invariant is broken, naming it.
    pub fn check_invariants(&self) {
        let waited = self.proposals.values().filter(|p| p.token.is_some()).count();
        assert_eq!(self.client_proposals, waited, "client proposal count drifted");
        assert!(self.inbox.len() <= crate::config::INBOX_FRAMES_MAX, "inbox over its bound");
        self.check_quiet_invariants();
        let seqs = self
            .proposals
            .keys()
            .map(|id| id.seq)
            .chain(self.reads.keys().copied())
            .chain(self.calls.keys().copied());
        for seq in seqs {
            assert!(seq < self.next_seq, "request number {seq} not yet handed out");
        }
        for p in self.proposals.values() {
            assert!(
                self.shards.contains_key(&p.shard) || self.is_data_shard(p.shard),
                "a proposal for a shard that is neither hosted nor a data shard"
            );
            assert!(
                self.shards.contains_key(&p.shard)
                    || matches!(p.placement, Placement::Unplaced | Placement::Forwarded { .. }),
                "a proposal for a shard this node does not hold is placed locally"
            );
        }
        assert!(self.is_sharded() || self.fanouts.is_empty(), "lease fan-out on one shard");
        for f in self.fanouts.values() {
            assert!(
                f.waiting.keys().all(|&s| self.is_data_shard(s)),
                "a lease fan-out waits for a shard that is not a data shard"
            );
        }
        assert!(self.is_sharded() || self.auth_fanouts.is_empty(), "auth fan-out on one shard");
        for f in self.auth_fanouts.values() {
            assert!(
                f.waiting.keys().all(|&s| self.is_data_shard(s)),
                "an auth fan-out waits for a shard that is not a data shard"
            );
        }
        for (&t, &k) in &self.tombstones {
            let hosted = self.shards.get(&t).map(|s| s.incarnation);
            assert!(hosted != Some(k), "shard {t} hosted in incarnation {k} after it was dropped");
        }
        for s in self.shards.values() {
            let st = s.replica.status();
            assert!(
                s.applied <= st.commit,
                "shard {} applied {} past commit {}",
                s.id,
                s.applied,
                st.commit
            );
            assert_eq!(s.soft.role == Role::Leader, s.is_leader(), "role bookkeeping");
            assert!(!s.leases.is_active() || s.is_leader(), "lease clocks run on a follower");
        }
        if self.stopped.is_some() {
            let waiting = self.proposals.len()
                + self.reads.len()
                + self.calls.len()
                + self.transfers.len()
                + self.fanouts.len()
                + self.auth_fanouts.len();
            assert_eq!(waiting, 0, "a stopped node keeps waiters");
        }
    }

    fn pending_requests(&self) -> usize {
        self.submitted.len()
            + self.client_proposals
            + self.reads.len()
            + self.calls.len()
            + self.transfers.len()
            + self.fanouts.values().filter(|f| f.token.is_some()).count()
            + self.auth_fanouts.values().filter(|f| f.token.is_some()).count()
    }

    fn insert_proposal(&mut self, id: ProposalId, p: PendingProposal) {
        if p.token.is_some() {
            self.client_proposals += 1;
        }
        let previous = self.proposals.insert(id, p);
        assert!(previous.is_none(), "proposal ids are never reused");
    }

    fn remove_proposal(&mut self, id: ProposalId) -> Option<PendingProposal> {
        let p = self.proposals.remove(&id)?;
        if p.token.is_some() {
            self.client_proposals -= 1;
        }
        Some(p)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The header fields this node puts on an answer about `shard` now.
    pub fn header(&self, shard: ShardId) -> Header {
        Header {
            cluster_id: self.cluster_id(),
            member_id: self.id,
            raft_term: self.shards.get(&shard).map_or(0, |s| s.soft.epoch.round),
        }
    }

    fn complete(&mut self, token: Token, shard: ShardId, result: Result<Reply, NodeError>) {
        let header = self.header(shard);
        self.out.completions.push(Completion::Done { token, header, result });
    }

    /// Hands out a read that may run now, for `caller`, whose rights are
    /// checked here against the auth store as applied.
    fn ready_read(&mut self, token: Token, shard: ShardId, read: ReadRequest, caller: &AuthInfo) {
        let Some(s) = self.shards.get(&shard) else {
            self.complete(token, shard, Err(NodeError::UnknownShard { shard }));
            return;
        };
        let auth = &s.auth;
        if let ReadRequest::Range(r) = &read
            && let Err(e) = auth.check_range(caller, &r.key, &r.range_end)
        {
            self.complete(token, shard, Err(e.into()));
            return;
        }
        let auth_revision = auth.enabled().then(|| auth.revision());
        let header = self.header(shard);
        self.out.completions.push(Completion::ReadReady {
            token,
            header,
            shard,
            read,
            auth_revision,
        });
    }

    /// The auth store of the metadata shard as applied here.
    pub fn auth_store(&self) -> Option<&AuthStore> {
        self.shards.get(&self.meta_shard()).map(|s| &s.auth)
    }

    /// The auth store of `shard` as applied here: on a sharded cluster a
    /// data shard's is its copy of the metadata shard's.
    pub fn shard_auth_store(&self, shard: ShardId) -> Option<&AuthStore> {
        self.shards.get(&shard).map(|s| &s.auth)
    }

    /// Simple tokens this node holds.
    pub fn auth_tokens(&self) -> usize {
        self.tokens.len()
    }
}

/// The engine configuration of this node's replica of `shard`.
fn engine_config(cfg: &NodeConfig, id: NodeId, shard: ShardId) -> Config {
    let mut c = Config::new(id, shard);
    c.election_ticks = cfg.election_ticks;
    c.heartbeat_ticks = cfg.heartbeat_ticks;
    c.read_mode = cfg.read_mode;
    c.snapshot_chunk_bytes = cfg.snapshot_message_bytes;
    // Leave room in a request for the proposal envelope around it.
    c.max_command_bytes = c.max_command_bytes.max(cfg.request_bytes_max + 4096);
    c.max_uncommitted_bytes = c.max_uncommitted_bytes.max(c.max_command_bytes);
    c.seed = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id.0 ^ shard.0.rotate_left(32);
    c
}

/// The error of a node whose keyspace differs from its cluster's.
fn keyspace_mismatch(stored: &Keyspace, configured: &Keyspace) -> NodeError {
    NodeError::KeyspaceMismatch {
        stored: crate::proposal::describe_keyspace(stored),
        configured: crate::proposal::describe_keyspace(configured),
    }
}

/// Checks the configured keyspace against the one this data directory was
/// created with (`existing`: it holds a member already), or records it in
/// a new sharded directory. A one-shard directory records nothing, so its
/// store stays exactly as before sharding; no record means one shard.
fn check_keyspace(store: &MvccStore, cfg: &NodeConfig, existing: bool) -> Result<(), NodeError> {
    let stored = match store.node_record(KEYSPACE_NODE_RECORD)? {
        Some(v) => {
            let mut d = ringkv_consensus::codec::Decoder::new(v);
            Some(
                crate::proposal::decode_keyspace(&mut d)
                    .map_err(|source| NodeError::Codec { what: "stored keyspace", source })?,
            )
        }
        None => None,
    };
    if existing || stored.is_some() {
        let stored = stored.unwrap_or_else(single_shard_keyspace);
        if stored != cfg.keyspace {
            return Err(keyspace_mismatch(&stored, &cfg.keyspace));
        }
    } else if cfg.is_sharded() {
        let mut v = Vec::new();
        crate::proposal::encode_keyspace(&cfg.keyspace, &mut v);
        store.set_node_record(KEYSPACE_NODE_RECORD, Some(&v))?;
        let r = u64::from(cfg.replicas);
        store.set_node_record(REPLICAS_NODE_RECORD, Some(&encode_to_vec(&r)))?;
    }
    if cfg.is_sharded() {
        let stored = match store.node_record(REPLICAS_NODE_RECORD)? {
            Some(v) => {
                let r = decode_exact::<u64>(v)
                    .map_err(|source| NodeError::Codec { what: "stored replicas", source })?;
                u32::try_from(r).unwrap_or(u32::MAX)
            }
            None => crate::cluster::REPLICAS_BEFORE_RECORD,
        };
        if stored != cfg.replicas {
            return Err(NodeError::ReplicasMismatch { stored, configured: cfg.replicas });
        }
    }
    Ok(())
}

/// Writes a new cluster's initial state into the WAL: the founding voters
/// as the configuration at index 0 of every group, and the member table
/// as entry 1 of the metadata shard, committed, identical on every
/// founding node (etcd does the same with its initial configuration
/// entries). A sharded cluster's metadata shard records its keyspace as
/// entry 2; each data shard starts with a committed no-op, so every group
/// starts from the same shape of log.
///
/// With placement moves on and more founders than replicas, each data
/// shard starts on the founders the ring places it on (its configuration
/// names only them, and only they write it), and the metadata shard's
/// third entry records that placement as the initial targets: no founder
/// held a shard it is not placed on, so none needs a new incarnation.
fn bootstrap_new_cluster<D: Disk>(
    wal: &mut Wal<D>,
    cfg: &NodeConfig,
    me: NodeId,
    members: &[crate::config::InitialMember],
) -> Result<(), NodeError> {
    let meta_shard = cfg.meta_shard();
    let mut table: Vec<Member> = members
        .iter()
        .map(|m| Member {
            id: member_id(&cfg.cluster_token, &m.name, &m.peer_urls),
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
            // Published at start: a founder knows only its own.
            zone: None,
        })
        .collect();
    table.sort_by_key(|m| m.id);
    let ids = table.iter().map(|m| m.id).collect();
    let cluster = cluster_id(&cfg.cluster_token, &ids);
    let membership = Membership::new(ids.iter().copied());
    if let Err(e) = membership.validate() {
        return Err(NodeError::Config { field: "bootstrap", why: e.to_string() });
    }
    let command = |index: u64, body: ProposalBody| Entry {
        index: LogIndex(index),
        epoch: BOOTSTRAP_EPOCH,
        kind: EntryKind::Command,
        payload: Proposal { id: None, auth: None, body }.to_bytes(),
    };
    let placed = if cfg.is_sharded() && cfg.placement_moves && table.len() > cfg.replicas as usize {
        let founders = ClusterTables {
            members: table.iter().map(|m| (m.id, m.clone())).collect(),
            ..ClusterTables::default()
        };
        let shards = cfg.keyspace.shard_count();
        placement::ideal_targets(&founders, shards, cfg.replicas, &BTreeSet::new())
    } else {
        None
    };
    let init = ProposalBody::InitCluster(ClusterInit { cluster_id: cluster, members: table });
    let meta = SnapshotMeta { index: LogIndex::ZERO, epoch: Epoch::ZERO, membership };
    // The metadata shard last: a directory whose WAL holds it holds every
    // data shard too. A crash part way leaves no metadata shard; the next
    // open bootstraps the shards the WAL lacks (each shard's records go in
    // one atomic batch, so a shard in the WAL was bootstrapped whole).
    let present = wal.shards();
    for shard in cfg.hosted_shards().into_iter().rev() {
        if present.contains(&shard) {
            continue;
        }
        let placed_on = placed.as_ref().and_then(|p| p.get(&shard));
        if placed_on.is_some_and(|nodes| !nodes.contains(&me)) {
            continue;
        }
        let meta = match placed_on {
            Some(nodes) => {
                SnapshotMeta { membership: Membership::new(nodes.iter().copied()), ..meta.clone() }
            }
            None => meta.clone(),
        };
        let entries = if shard != meta_shard {
            let noop = Entry {
                index: LogIndex(1),
                epoch: BOOTSTRAP_EPOCH,
                kind: EntryKind::Noop,
                payload: Bytes::new(),
            };
            vec![noop]
        } else if cfg.is_sharded() {
            let layout = crate::proposal::Layout { keyspace: cfg.keyspace, replicas: cfg.replicas };
            let mut entries =
                vec![command(1, init.clone()), command(2, ProposalBody::Layout(layout))];
            if let Some(p) = &placed {
                let targets = p
                    .iter()
                    .map(|(&shard, nodes)| crate::proposal::ShardTarget {
                        shard,
                        nodes: nodes.clone(),
                    })
                    .collect();
                entries.push(command(3, ProposalBody::InitialTargets(targets)));
            }
            entries
        } else {
            vec![command(1, init.clone())]
        };
        let commit = LogIndex(entries.len() as u64);
        let hard_state = HardState { epoch: BOOTSTRAP_EPOCH, vote: None, commit };
        // Many shards may not fit in one WAL batch: write what is buffered
        // and go on (the shard's own records stay together, so each shard
        // is bootstrapped whole or not at all).
        if wal.pending_bytes() > 0
            && wal.pending_bytes() + BOOTSTRAP_SHARD_BYTES_MAX > cfg.wal.batch_bytes_max
        {
            wal.sync()?;
        }
        wal.install_snapshot(shard, &meta)?;
        wal.append(shard, &entries)?;
        wal.set_hard_state(shard, hard_state)?;
    }
    wal.sync()?;
    Ok(())
}

/// After a crash between restoring a snapshot into the store (durable
/// first) and recording it in the WAL, the WAL lacks the snapshot the
/// store holds: record it now, so the log and the state machine agree
/// again (the snapshot holds only committed entries, so recording it late
/// promises nothing new).
///
/// Recorded whether or not the log agrees with the snapshot's last entry:
/// a Multi-Paxos log may agree there and still hold vacant slots below it,
/// which must not be taken for committed ones. Where the log disagrees,
/// an engine whose snapshots keep later entries (Multi-Paxos never drops
/// an accepted value) gets the entries after the snapshot back, as the
/// Ready that installed it would have re-emitted them.
fn reconcile_restored_snapshot<D: Disk>(
    wal: &mut Wal<D>,
    store: &MvccStore,
    shard: ShardId,
    keep_later_entries: bool,
) -> Result<(), NodeError> {
    let Some(bytes) = store.node_record(&snapshot_record(shard))? else { return Ok(()) };
    let meta = decode_exact::<SnapshotMeta>(bytes)
        .map_err(|source| NodeError::Codec { what: "restored snapshot record", source })?;
    let log = wal.log(shard);
    if meta.index <= log.snapshot_meta().index {
        // Recorded, or the WAL moved on from this snapshot.
        return Ok(());
    }
    let agrees = log.epoch(meta.index).is_ok_and(|epoch| epoch == meta.epoch);
    let last = log.last_index();
    let later = if !agrees && keep_later_entries && last > meta.index {
        log.entries(meta.index.next(), last.next(), u64::MAX)
            .map_err(|e| NodeError::Corrupt { shard, what: format!("reading the WAL: {e}") })?
    } else {
        Vec::new()
    };
    // Agreeing, the WAL compacts and keeps the later entries itself.
    wal.install_snapshot(shard, &meta)?;
    if !later.is_empty() {
        wal.append(shard, &later)?;
    }
    wal.sync()?;
    Ok(())
}

/// Whether an error means the disk is full.
fn is_no_space(e: &NodeError) -> bool {
    match e {
        NodeError::Wal(w) => matches!(w.root_cause(), WalError::NoSpace { .. }),
        NodeError::Store(s) => s.is_no_space(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ringkv_consensus::{NodeId, encode_to_vec};
    use ringkv_storage::mvcc::StoreOptions;
    use ringkv_storage::{SimDisk, WalOptions};

    use super::*;

    const SHARD: ShardId = DATA_SHARD;

    fn entry(index: u64, epoch: Epoch) -> Entry {
        let payload = if epoch == Epoch::ZERO { Bytes::new() } else { Bytes::from(vec![7]) };
        let kind = if epoch == Epoch::ZERO { EntryKind::Noop } else { EntryKind::Command };
        Entry { index: LogIndex(index), epoch, kind, payload }
    }

    /// A sharded cluster's bootstrap spans many WAL batches when its shards
    /// do not fit in one; a crash part way is finished by the next open.
    #[test]
    fn a_sharded_bootstrap_writes_every_group_across_batches() {
        use crate::config::{InitialMember, META_SHARD};
        let members: Vec<InitialMember> = (1..=3)
            .map(|i| InitialMember {
                name: format!("n{i}"),
                peer_urls: vec![format!("http://n{i}")],
            })
            .collect();
        let mut cfg = NodeConfig::new(
            "n1",
            "tok",
            vec!["http://n1".into()],
            vec![],
            Bootstrap::NewCluster { members: members.clone() },
        );
        cfg.keyspace = Keyspace::new(64, ringkv_ring::HashKeyRule::WholeKey).unwrap();
        cfg.wal =
            WalOptions { batch_bytes_max: 2048, record_bytes_max: 2048, ..WalOptions::default() };
        // One whole bootstrap, in batches of a few shards each.
        let mut wal = Wal::open(SimDisk::new(3), cfg.wal).unwrap();
        bootstrap_new_cluster(&mut wal, &cfg, NodeId(1), &members).unwrap();
        let full = wal.shards();
        assert_eq!(full.len(), 65);
        // One cut short after the last two data shards (written first):
        // the next bootstrap writes the others and leaves those alone.
        let disk = SimDisk::new(4);
        let mut wal = Wal::open(disk.clone(), cfg.wal).unwrap();
        let first: Vec<ShardId> = cfg.hosted_shards().into_iter().rev().take(2).collect();
        for &shard in &first {
            let membership = Membership::new([NodeId(7)]);
            let meta = SnapshotMeta { index: LogIndex::ZERO, epoch: Epoch::ZERO, membership };
            wal.install_snapshot(shard, &meta).unwrap();
        }
        wal.sync().unwrap();
        bootstrap_new_cluster(&mut wal, &cfg, NodeId(1), &members).unwrap();
        drop(wal);
        let wal = Wal::open(disk, cfg.wal).unwrap();
        assert_eq!(wal.shards(), full, "every group, after a restart too");
        assert_eq!(wal.log(META_SHARD).last_index(), LogIndex(2), "members, then the keyspace");
        for shard in cfg.keyspace.shard_ids().map(|s| ShardId(s.0)) {
            let log = wal.log(shard);
            if first.contains(&shard) {
                // Present already: left as it was.
                assert_eq!(log.last_index(), LogIndex::ZERO, "{shard}");
            } else {
                assert_eq!(log.last_index(), LogIndex(1), "{shard}");
                assert_eq!(log.hard_state().commit, LogIndex(1), "{shard}");
                assert_eq!(log.snapshot_meta().membership.voters.len(), 3, "{shard}");
            }
        }
    }

    /// A Multi-Paxos acceptor's WAL: slots 1..=3 chosen in ballot `old`,
    /// 4..=5 vacant, 6..=10 accepted in ballot `new`; and its store,
    /// restored from a leader's snapshot at 6 (recorded with epoch
    /// `snapshot_epoch`) by a node that crashed before writing the WAL.
    fn crashed_mid_install(snapshot_epoch: Epoch) -> (Wal<SimDisk>, MvccStore) {
        let (old, new) = (Epoch::ballot(2, NodeId(1)), Epoch::ballot(3, NodeId(2)));
        let disk = SimDisk::new(5);
        let mut wal = Wal::open(disk.clone(), WalOptions::default()).unwrap();
        let membership = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
        let base = SnapshotMeta { index: LogIndex::ZERO, epoch: Epoch::ZERO, membership };
        wal.install_snapshot(SHARD, &base).unwrap();
        let mut entries: Vec<Entry> = (1..=3).map(|i| entry(i, old)).collect();
        entries.extend((4..=5).map(|i| entry(i, Epoch::ZERO)));
        entries.extend((6..=10).map(|i| entry(i, new)));
        wal.append(SHARD, &entries).unwrap();
        wal.set_hard_state(SHARD, HardState { epoch: new, vote: None, commit: LogIndex(3) })
            .unwrap();
        wal.sync().unwrap();

        // The leader's state at 6, exported as it sends it.
        let leader =
            MvccStore::open_on(&SimDisk::new(6), STORE_FILE, StoreOptions::default()).unwrap();
        leader.write(|b| (1..=6).try_for_each(|i| b.skip(SHARD, LogIndex(i)))).unwrap();
        let chunks: Vec<Bytes> = leader.snapshot(SHARD).unwrap().collect::<Result<_, _>>().unwrap();
        let store = MvccStore::open_on(&disk, STORE_FILE, StoreOptions::default()).unwrap();
        let meta = SnapshotMeta { index: LogIndex(6), epoch: snapshot_epoch, ..base };
        let record = encode_to_vec(&meta);
        let name = snapshot_record(SHARD);
        store.restore_with_node_records(SHARD, chunks, &[(name.as_str(), &record)]).unwrap();
        (wal, store)
    }

    fn epochs(wal: &Wal<SimDisk>) -> (LogIndex, Vec<Epoch>) {
        let log = wal.log(SHARD);
        let first = log.snapshot_meta().index;
        let entries = log.entries(first.next(), log.last_index().next(), u64::MAX).unwrap();
        (first, entries.iter().map(|e| e.epoch).collect())
    }

    #[test]
    fn a_paxos_repair_keeps_the_slots_accepted_after_the_snapshot() {
        let new = Epoch::ballot(3, NodeId(2));
        // The leader holds slot 6 in an older ballot than this acceptor.
        let (mut wal, store) = crashed_mid_install(Epoch::ballot(2, NodeId(1)));
        reconcile_restored_snapshot(&mut wal, &store, SHARD, true).unwrap();
        assert_eq!(epochs(&wal), (LogIndex(6), vec![new; 4]), "slots 7..=10 survive");
    }

    #[test]
    fn a_raft_repair_drops_a_log_that_disagrees_with_the_snapshot() {
        let (mut wal, store) = crashed_mid_install(Epoch::ballot(2, NodeId(1)));
        reconcile_restored_snapshot(&mut wal, &store, SHARD, false).unwrap();
        assert_eq!(epochs(&wal), (LogIndex(6), vec![]));
    }

    #[test]
    fn a_log_that_agrees_is_compacted_so_no_vacant_slot_looks_committed() {
        let new = Epoch::ballot(3, NodeId(2));
        for keep in [false, true] {
            let (mut wal, store) = crashed_mid_install(new);
            reconcile_restored_snapshot(&mut wal, &store, SHARD, keep).unwrap();
            assert_eq!(epochs(&wal), (LogIndex(6), vec![new; 4]), "keep later entries: {keep}");
            // Done once: a second open changes nothing.
            reconcile_restored_snapshot(&mut wal, &store, SHARD, keep).unwrap();
            assert_eq!(epochs(&wal).0, LogIndex(6));
        }
    }

    /// A follower's Ready that raises its promise to ballot 3 and accepts
    /// slots 4..=6 in it, learning 4..=5 chosen, written over several WAL
    /// batches as a Ready too large for one is: after a crash at any batch
    /// boundary the replica must still recover.
    #[test]
    fn every_prefix_of_a_split_ready_recovers() {
        use crate::engine::{Engine, PaxosEngine};
        use ringkv_consensus::{Config, Ready, ReadyNumber};
        use round::{ReadyWrite, ready_writes};

        let (old, new) = (Epoch::ballot(2, NodeId(1)), Epoch::ballot(3, NodeId(2)));
        let durable = HardState { epoch: old, vote: None, commit: LogIndex(3) };
        let mut rd: Ready<ringkv_paxos::Message> = Ready::new(ReadyNumber(9));
        rd.hard_state = Some(HardState { epoch: new, vote: None, commit: LogIndex(5) });
        rd.entries = (4..=6).map(|i| entry(i, new)).collect();
        let recovers = |writes: &[ReadyWrite<'_>]| {
            let mut wal = Wal::open(SimDisk::new(8), WalOptions::default()).unwrap();
            let membership = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
            let base = SnapshotMeta { index: LogIndex::ZERO, epoch: Epoch::ZERO, membership };
            wal.install_snapshot(SHARD, &base).unwrap();
            wal.append(SHARD, &(1..=3).map(|i| entry(i, old)).collect::<Vec<_>>()).unwrap();
            wal.set_hard_state(SHARD, durable).unwrap();
            wal.sync().unwrap();
            for w in writes {
                match w {
                    ReadyWrite::HardState(hs) => wal.set_hard_state(SHARD, *hs).map(|_| ()),
                    ReadyWrite::Entries(es) => wal.append(SHARD, es).map(|_| ()),
                    ReadyWrite::Snapshot(_) => unreachable!("no snapshot in this Ready"),
                }
                .unwrap();
                wal.sync().unwrap();
            }
            PaxosEngine::create(Config::new(NodeId(2), SHARD), LogIndex(3), wal.log(SHARD))
                .map(|_| ())
        };
        let writes = ready_writes(&rd, durable, true);
        for k in 0..=writes.len() {
            if let Err(e) = recovers(&writes[..k]) {
                panic!("a crash after {k} of {} batches: {e}", writes.len());
            }
        }
        // Written whole (one batch), the order does not matter; split in
        // that order, the entries would outrun the promise.
        let whole = ready_writes(&rd, durable, false);
        assert!(recovers(&whole).is_ok());
        assert!(recovers(&whole[..1]).is_err(), "entries above the stored promise are refused");
    }
}
