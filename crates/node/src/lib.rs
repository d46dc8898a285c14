//! The per-node loop of ringkv: one [`Node`] drives every shard replica a
//! node hosts (one shard now; many with sharding).
//!
//! Each round it feeds peer messages, client proposals and ticks to the
//! replicas in batches, collects every replica's `Ready`, sends what may
//! leave at once, writes every shard's entries with **one WAL write and one
//! fdatasync**, sends what had to wait for durability, applies committed
//! entries of every shard in **one store transaction**, answers the
//! requests that waited for them and hands out watch events and reads that
//! may now run. See [`Node`] for the round in detail.
//!
//! The node reaches the world only through three traits: [`Clock`],
//! [`Transport`] and [`ringkv_storage::Disk`] (its WAL and its MVCC store
//! both live on the disk), and is generic over the consensus [`Engine`]:
//! [`RaftEngine`] or [`PaxosEngine`], one per cluster for its whole life
//! (a data directory records its engine; see [`EngineKind`]). It uses no
//! threads and no async runtime:
//! the server runs it on a dedicated thread fed by channels, the simulator
//! calls it directly, and given the same inputs it does the same thing.
//!
//! What callers use:
//! * [`Node::open`], [`Node::submit`] ([`Request`], [`Token`]),
//!   [`Node::submit_to`] (a KV request for one data shard),
//!   [`Node::keyspace`],
//!   [`Node::receive`] (encoded [`PeerFrame`]s), [`Node::run_round`]
//!   ([`RoundOutput`]: [`Completion`]s and [`WatchEvents`]),
//!   [`Node::next_wakeup`], [`Node::status`], [`Node::store`];
//! * [`execute_read`], to run a [`Completion::ReadReady`] on a
//!   [`ringkv_storage::mvcc::ReadView`] on any thread; watch replays
//!   (`ReadView::events`) and `Maintenance.Snapshot` streams
//!   (`MvccStore::snapshot(DATA_SHARD)`) also run on the store the node
//!   shares ([`Node::store`]);
//! * [`NodeError`], with etcd's message for every client-visible error and
//!   its [`ErrorClass`] (the gRPC code etcd uses);
//! * with the `testing` feature, the `testing` module: a deterministic
//!   in-process cluster on simulated disks, network and clock.
//!
//! The auth store (etcd's users, roles and permissions; see [`auth`]) is
//! replicated the same way, and every node enforces it.
//!
//! The member table and alarms (etcd's Cluster and Alarm APIs), the auth
//! store and the lease table replicate through the log of the node's
//! metadata shard: the data shard itself on a one-shard cluster (the
//! default, byte for byte the etcd it was), the metadata group
//! [`META_SHARD`] when [`NodeConfig::keyspace`] has several data shards.
//!
//! # Several shards (ADR 0002, step 1)
//!
//! With `--shards S > 1` every node hosts [`META_SHARD`] and the data
//! shards `1..=S` (the cluster has at most R nodes in this step, so every
//! shard is on every node); each data shard has its own log, leader and
//! MVCC revision. [`Node::submit`] routes a KV request to the shard of its
//! keys and refuses one spanning shards ([`NodeError::SpansShards`]);
//! [`Node::submit_to`] names the data shard (scatter-gather of ranges,
//! per-shard Compact and HashKV); everything else goes to the metadata
//! shard. Data shards' consensus membership follows the metadata shard's
//! member table. Leases are granted, kept alive and expired by the
//! metadata shard alone; a grant or revoke is answered once every data
//! shard has applied the same change (a marker), so a Put with a lease
//! finds it in its own shard. A node configured with another keyspace
//! than its cluster's refuses to run ([`NodeError::KeyspaceMismatch`]).
//! Quiet data shards hibernate: a leader whose shard had nothing to do
//! for [`HIBERNATE_AFTER_TICKS`] stops ticking it (no heartbeats), its
//! followers stop ticking while a node-level heartbeat
//! ([`NodeMessage::Alive`], one per peer per tick) says the leader's node
//! lives and claims the shard, and any activity wakes it; an idle cluster
//! then costs about what one shard costs
//! ([`NodeConfig::hibernate_quiet_shards`]; never the metadata shard,
//! never with lease reads). Every [`LEADER_BALANCE_INTERVAL_TICKS`] a node
//! leading two data shards more than a live voter hands one to it, so
//! leaders spread evenly and come back to a node that returns.
//!
//! Auth across shards: every data shard keeps a copy of the metadata
//! shard's auth store, so that its replicas check a write (at apply, with
//! the caller's [`AuthInfo`] resolved against the metadata shard) against
//! the same rules and the same auth revision as a one-shard cluster
//! would. After an auth change applies to the metadata shard, the node
//! that proposed it proposes the metadata shard's whole store as applied
//! there, versioned by the metadata log index it is as of
//! ([`AuthSnapshot`]), to every data shard, and answers its client once
//! every data shard holds a copy at least that new. Installing a copy is
//! idempotent and never goes back, so copies may race, be lost or be
//! repeated; the metadata leader compares every data shard's copy with its
//! store once per request timeout and sends its store to any that differs
//! (a crash in the middle of carrying a change). A write taken before a
//! change and applied in a data shard after the change reached it fails
//! with `revision of auth store is old`, as in etcd; so does one taken
//! after the change and applied in a data shard the change has not reached
//! yet (its rights are newer than the shard's copy), so that no write is
//! checked against rules a client may already have seen replaced. Not
//! covered: enabling auth keeps the revision (as in etcd), so a write
//! applied in a data shard before the enable reaches it is not checked,
//! even if another client already saw auth enabled in the metadata shard;
//! the enable is answered only once every data shard has it. The whole
//! auth store travels in one proposal, so it must fit in one (the
//! engine's command limit, [`NodeConfig::request_bytes_max`] plus
//! room for the envelope).
//!
//! Placement (ADR 0002): the replicas per data shard
//! ([`NodeConfig::replicas`], `--replicas`) are fixed at creation like the
//! keyspace ([`NodeError::ReplicasMismatch`]). Once more than R members
//! vote, the metadata leader records each data shard's target replica set
//! ([`ProposalBody::ShardTargets`]; [`Node::shard_targets`],
//! [`Node::hosts`], [`Node::shard_replica_nodes`]); with
//! [`NodeConfig::placement_moves`] the shards move to their targets, and
//! a member silent for [`NodeConfig::down_timeout`] has its shards
//! re-created on the others. A replica's consensus id is its node's id
//! until a target drops the node from the shard; a replica the node gets
//! there later is a new one under a fresh id ([`replica_id`],
//! [`Node::shard_replica_id`]), so nothing its predecessor promised is
//! counted for it. A member being drained
//! ([`Request::Drain`], [`ProposalBody::Drain`]) is left out of placement
//! so that its replicas move before it is removed; [`Node::drain_status`]
//! counts what each member still holds.

pub mod auth;
mod cluster;
mod config;
mod engine;
mod error;
mod frame;
mod io;
mod node;
mod proposal;
mod request;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{AuthChange, AuthError, AuthInfo, AuthQuery, AuthReply, AuthSnapshot, Credential};
pub use cluster::{LEARNERS_MAX, added_member_id, cluster_id, member_id, replica_id};
pub use config::{
    ALARM_RAISE_ATTEMPTS_MAX, APPLY_GAP_MAX, AUTH_TOKEN_SWEEP_INTERVAL, AUTH_TOKEN_TTL_DEFAULT,
    Bootstrap, DATA_SHARD, DOWN_TIMEOUT_DEFAULT, ELECTION_TICKS_DEFAULT, HEARTBEAT_TICKS_DEFAULT,
    HIBERNATE_AFTER_TICKS, INBOX_FRAMES_MAX, InitialMember, LEADER_BALANCE_INTERVAL_TICKS,
    LEADER_BALANCE_TRANSFER_TICKS, LEASE_CHECKPOINT_BATCH_MAX, LEASE_CHECKPOINT_INTERVAL_DEFAULT,
    LEASE_REVOKES_PER_ROUND_MAX, MAX_CONCURRENT_MOVES_DEFAULT, META_SHARD,
    MOVE_BYTES_PER_SECOND_DEFAULT, NodeConfig, PENDING_REQUESTS_MAX_DEFAULT,
    QUOTA_BACKEND_BYTES_DEFAULT, REPLICAS_DEFAULT, REQUEST_BYTES_MAX_DEFAULT,
    REQUEST_TIMEOUT_DEFAULT, SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT, SNAPSHOT_CHUNKS_PER_ROUND_DEFAULT,
    SNAPSHOT_COUNT_DEFAULT, SNAPSHOT_MESSAGE_BYTES_DEFAULT, STORE_FILE, TICK_INTERVAL_DEFAULT,
    TICKS_PER_ROUND_MAX, ZONE_BYTES_MAX, ZoneError, check_zone, single_shard_keyspace,
};
pub use engine::{
    Engine, EngineError, EngineKind, PaxosEngine, RaftEngine, SnapshotChunk, UnknownEngine,
    WithEngine, stored_engine,
};
pub use error::{ErrorClass, MemberError, NodeError, RemoteError, SpanningRequest};
pub use frame::{LeaderReply, LeaderRequest, LeaseTtl, NodeMessage, PeerFrame};
pub use io::{Clock, Transport, Unreachable};
pub use node::throttle::{MOVE_BURST, MOVE_HELD_CHUNKS_MAX};
pub use node::{MemberReplicas, Node, ShardStamp};
pub use proposal::{
    AlarmChange, AlarmMember, AlarmType, ClusterInit, DrainChange, Layout, Member, MemberChange,
    Proposal, ProposalBody, ProposalId, ShardConfig, ShardTarget,
};
pub use request::{
    AlarmAction, Completion, Header, NodeStatus, ReadRequest, Reply, Request, RoundOutput,
    ShardStatus, Token, WatchEvents, execute_read,
};
/// The keyspace types of [`NodeConfig::keyspace`], re-exported so that a
/// caller configuring or routing needs no other crate.
pub use ringkv_ring::{HashKeyRule, Keyspace, ShardSpan};
