//! [`NodeConfig`]: a node's identity, how it starts, and every limit it keeps.

use std::time::Duration;

use ringkv_consensus::{NodeId, ReadMode, ShardId};
use ringkv_ring::{HashKeyRule, Keyspace};
use ringkv_storage::WalOptions;
use ringkv_storage::mvcc::StoreOptions;

use crate::error::NodeError;

/// The first data shard; with one shard (`--shards 1`, the default) the
/// only group, holding everything (members, auth, alarms, leases and keys),
/// exactly as etcd's one log does.
pub const DATA_SHARD: ShardId = ShardId(1);

/// The metadata group of a cluster of several data shards (`--shards` above
/// 1): members, cluster id, removed ids, alarms, auth, the keyspace and the
/// lease table (the TTL authority). A one-shard cluster has none.
pub const META_SHARD: ShardId = ShardId(0);

/// Name of the state machine's file on the node's disk (beside the WAL's
/// segments).
pub const STORE_FILE: &str = "state.redb";

/// Default tick: etcd's `--heartbeat-interval` (100 ms).
pub const TICK_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

/// Default election timeout in ticks: etcd's `--election-timeout` (1 s)
/// over its heartbeat interval.
pub const ELECTION_TICKS_DEFAULT: u32 = 10;

/// Default heartbeat interval in ticks.
pub const HEARTBEAT_TICKS_DEFAULT: u32 = 1;

/// Default request timeout: etcd's `5 s + 2 × election timeout`.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(7);

/// Default entries applied between snapshots: etcd 3.5's
/// `--snapshot-count` (3.4 used 100,000; 3.5 lowered it to bound memory and
/// replay time).
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 10_000;

/// Default entries kept in the WAL behind a snapshot, so that a follower a
/// little behind catches up from the log rather than by a whole snapshot
/// (etcd's `SnapshotCatchUpEntries`).
pub const SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT: u64 = 5_000;

/// Default store size that raises NOSPACE: etcd's `--quota-backend-bytes`
/// default (2 GiB).
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 << 30;

/// Default largest request: etcd's `--max-request-bytes` (1.5 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: u64 = 3 << 19;

/// Default most requests waiting in the node at once (queued, proposed,
/// forwarded, or waiting for a read index); beyond it requests get
/// `etcdserver: too many requests`.
pub const PENDING_REQUESTS_MAX_DEFAULT: usize = 16_384;

/// Most peer frames received and not yet stepped; beyond it frames are
/// dropped as the network would drop them.
pub const INBOX_FRAMES_MAX: usize = 4_096;

/// Most committed entries not yet applied before new proposals are refused
/// with `etcdserver: too many requests` (etcd's
/// `maxGapBetweenApplyAndCommitIndex`).
pub const APPLY_GAP_MAX: u64 = 5_000;

/// Default snapshot chunks (about 1 MiB each, the store's
/// `SNAPSHOT_CHUNK_BYTES`) read per round while taking a snapshot: bounds
/// the time one round spends on it, so a large shard never stalls the loop.
pub const SNAPSHOT_CHUNKS_PER_ROUND_DEFAULT: usize = 8;

/// Ticks a data shard's leader must see its shard quiet (no proposal, no
/// pending read, no membership change or transfer, every member's log
/// matched and committed) before it hibernates: two default election
/// timeouts, so that heartbeats have carried the final commit index to
/// every follower, and a shard that is merely between two writes of a
/// steady load does not flap between hibernating and waking.
pub const HIBERNATE_AFTER_TICKS: u32 = 2 * ELECTION_TICKS_DEFAULT;

/// Ticks between two looks of a node at the spread of data-shard leaders
/// (see [`NodeConfig`] and ADR 0002, "Quiet shards"): three default
/// election timeouts, longer than a leadership transfer takes, so one
/// transfer has completed (or timed out) before the next is chosen.
pub const LEADER_BALANCE_INTERVAL_TICKS: u64 = 3 * ELECTION_TICKS_DEFAULT as u64;

/// Ticks a leadership transfer the balancer started may take before the
/// balancer gives up on it and may choose again: two default election
/// timeouts (a transfer the target cannot finish ends with the old leader
/// leading on).
pub const LEADER_BALANCE_TRANSFER_TICKS: u64 = 2 * ELECTION_TICKS_DEFAULT as u64;

/// Most ticks taken in one round. A loop that stalled longer drops the
/// missed ticks, as a ticker does, rather than firing a burst of elections.
pub const TICKS_PER_ROUND_MAX: u32 = 3;

/// Default interval between lease checkpoints (etcd's
/// `leaseCheckpointInterval`).
pub const LEASE_CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_secs(300);

/// Default replicas per data shard (`--replicas`): while a sharded
/// cluster has at most this many members every node holds every shard.
pub const REPLICAS_DEFAULT: u32 = 3;

/// Default `--max-concurrent-moves`: how many data shards' target replica
/// sets the metadata leader changes in one placement pass, so that moves
/// (snapshots to new replicas) cannot swamp foreground traffic.
pub const MAX_CONCURRENT_MOVES_DEFAULT: u32 = 4;

/// Default `--down-timeout`: how long a member goes unheard before, with
/// placement moves on, its data shards are placed on the other members
/// (issue #7: five minutes; tests set seconds).
pub const DOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// Default `--move-bytes-per-second`: 64 MiB/s of snapshot data per
/// node. Generous on purpose: about half of a 1 Gbit/s link, so moves go
/// at a useful pace and foreground traffic keeps the other half; lower it
/// on slower links. 0 means no limit.
pub const MOVE_BYTES_PER_SECOND_DEFAULT: u64 = 64 * 1024 * 1024;

/// Default snapshot data bytes per message to a replica being caught up
/// (the engines' InstallSnapshot chunk; `ringkv_consensus::Config`'s
/// default).
pub const SNAPSHOT_MESSAGE_BYTES_DEFAULT: u64 = 1 << 20;

/// Longest zone label (`--zone`), in bytes: room for a region and a
/// rack (`eu-west-1/rack-17`), short enough that the label costs nothing
/// in every member record it is written into.
pub const ZONE_BYTES_MAX: usize = 64;

/// Why a label cannot be a zone label ([`check_zone`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// An empty label: leave the zone out instead.
    #[error("it is empty: leave --zone out for a member without a zone")]
    Empty,
    /// Longer than [`ZONE_BYTES_MAX`].
    #[error("it is {bytes} bytes long, more than the {max} a zone label may have")]
    TooLong {
        /// The label's length.
        bytes: usize,
        /// [`ZONE_BYTES_MAX`].
        max: usize,
    },
    /// A space or a control character in it.
    #[error("it contains whitespace or a control character: use letters, digits and punctuation")]
    NotPrintable,
}

/// Checks that `label` is usable as a zone label: non-empty, at most
/// [`ZONE_BYTES_MAX`] bytes, printable without spaces (so that a table or
/// a log line shows it as one word).
///
/// # Errors
/// What is wrong with it.
pub fn check_zone(label: &str) -> Result<(), ZoneError> {
    if label.is_empty() {
        Err(ZoneError::Empty)
    } else if label.len() > ZONE_BYTES_MAX {
        Err(ZoneError::TooLong { bytes: label.len(), max: ZONE_BYTES_MAX })
    } else if label.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(ZoneError::NotPrintable)
    } else {
        Ok(())
    }
}

/// Most leases in one checkpoint proposal (etcd's
/// `maxLeaseCheckpointBatchSize`).
pub const LEASE_CHECKPOINT_BATCH_MAX: usize = 1_000;

/// Most expired leases proposed for revocation in one round (etcd revokes
/// at most 1,000 a second).
pub const LEASE_REVOKES_PER_ROUND_MAX: usize = 1_000;

/// How many times a node stopped by a full disk asks the leader to raise
/// its NOSPACE alarm (one try per election timeout). It cannot see whether
/// the alarm applied (its log no longer moves); repeats are harmless, since
/// raising a raised alarm changes nothing.
pub const ALARM_RAISE_ATTEMPTS_MAX: u32 = 5;

/// Default lifetime of a simple auth token since its last use: etcd's
/// `--auth-token-ttl` (300 s).
pub const AUTH_TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(300);

/// How often the node drops expired simple tokens (tokens are also checked
/// for expiry on every use; this only bounds the memory they hold).
pub const AUTH_TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How a node starts when its disk holds no state yet. With existing state
/// the bootstrap is ignored, as etcd ignores its `--initial-cluster` flags
/// on restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Found a new cluster of these members (etcd's `--initial-cluster`
    /// with `--initial-cluster-state new`); this node must be one of them.
    NewCluster {
        /// Every founding member, this one included.
        members: Vec<InitialMember>,
    },
    /// Join a running cluster as the member `id`, already added through
    /// MemberAdd (etcd's `--initial-cluster-state existing`). The node
    /// learns the configuration and the data from the leader.
    Join {
        /// The id MemberAdd returned.
        id: NodeId,
    },
}

/// One entry of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This member's name (`--name`).
    pub name: String,
    /// The cluster token (`--initial-cluster-token`), mixed into ids so
    /// that two clusters with the same members never share ids.
    pub cluster_token: String,
    /// URLs peers reach this node at.
    pub peer_urls: Vec<String>,
    /// URLs clients reach this node at.
    pub client_urls: Vec<String>,
    /// This member's failure domain (`--zone`), published to the member
    /// table at start like the name; the ring puts a shard's replicas in
    /// distinct zones. `None`: no zone (a zone of its own). A usable label
    /// ([`check_zone`]).
    pub zone: Option<String>,
    /// How to start on an empty disk.
    pub bootstrap: Bootstrap,
    /// Real time per engine tick.
    pub tick_interval: Duration,
    /// Election timeout in ticks (randomized by the engine up to twice that).
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// A request not answered in this time fails with `request timed out`.
    pub request_timeout: Duration,
    /// Entries applied between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept in the WAL behind a snapshot for slow followers.
    pub snapshot_catch_up_entries: u64,
    /// Snapshot chunks read per round while taking a snapshot.
    pub snapshot_chunks_per_round: usize,
    /// Store size that raises NOSPACE (`--quota-backend-bytes`).
    pub quota_backend_bytes: u64,
    /// Largest request accepted (`--max-request-bytes`).
    pub request_bytes_max: u64,
    /// Most requests waiting in the node at once.
    pub pending_requests_max: usize,
    /// Interval between lease checkpoints.
    pub lease_checkpoint_interval: Duration,
    /// Lifetime of a simple auth token since its last use
    /// (`--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// Seed of the node's deterministic generator (lease ids, election
    /// jitter of its replicas).
    pub seed: u64,
    /// WAL tunables.
    pub wal: WalOptions,
    /// State machine tunables.
    pub store: StoreOptions,
    /// The cluster's data shards and hash-key rule (`--shards`), fixed at
    /// creation: a node configured otherwise than its cluster refuses to
    /// start ([`NodeError::KeyspaceMismatch`]).
    pub keyspace: Keyspace,
    /// Quiet data shards hibernate: their replicas stop ticking (no
    /// heartbeats, no election timers) while a node-level heartbeat says
    /// the leader's node is alive and still claims them (ADR 0002, "Quiet
    /// shards"). Has an effect only with several data shards and
    /// [`ReadMode::ReadIndex`]: the metadata shard, a one-shard cluster and
    /// lease reads never hibernate.
    pub hibernate_quiet_shards: bool,
    /// Replicas per data shard (`--replicas`) once a sharded cluster has
    /// more members than that, fixed at creation like the keyspace (a node
    /// configured otherwise refuses to start,
    /// [`NodeError::ReplicasMismatch`]); ignored with one shard.
    pub replicas: u32,
    /// Most data shards whose target replica set one placement pass of the
    /// metadata leader changes (`--max-concurrent-moves`).
    pub max_concurrent_moves: u32,
    /// Whether data shards move to their targets (`--placement-moves`, on
    /// by default in the server; off in [`NodeConfig::new`], which the
    /// simulations build on, so each says when it wants moves): replicas
    /// are created, caught up and dropped so that each shard ends on its
    /// target's nodes. Off, targets are only recorded and every member
    /// holds every shard.
    pub placement_moves: bool,
    /// Snapshot data bytes per message to a replica being caught up (the
    /// engines' InstallSnapshot chunk), at least 1.
    pub snapshot_message_bytes: u64,
    /// Snapshot data bytes per second this node sends for data shards
    /// (`--move-bytes-per-second`; 0: no limit): the catch-up of a moved
    /// replica, or of a follower too far behind, is paced so that it
    /// cannot starve foreground traffic (see `node::throttle`).
    pub move_bytes_per_second: u64,
    /// With placement moves on, how long the metadata leader goes without
    /// a node-level heartbeat from a member before it places that
    /// member's shards on the others (`--down-timeout`); only while enough
    /// other members are up to hold R replicas of every shard.
    pub down_timeout: Duration,
}

/// The keyspace of a cluster created without `--shards`: one data shard,
/// the whole key hashed (which with one shard hashes nothing).
pub fn single_shard_keyspace() -> Keyspace {
    Keyspace::new(1, HashKeyRule::WholeKey).expect("one shard is within the keyspace's range")
}

impl NodeConfig {
    /// A configuration with etcd's defaults.
    pub fn new(
        name: impl Into<String>,
        cluster_token: impl Into<String>,
        peer_urls: Vec<String>,
        client_urls: Vec<String>,
        bootstrap: Bootstrap,
    ) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            cluster_token: cluster_token.into(),
            peer_urls,
            client_urls,
            zone: None,
            bootstrap,
            tick_interval: TICK_INTERVAL_DEFAULT,
            election_ticks: ELECTION_TICKS_DEFAULT,
            heartbeat_ticks: HEARTBEAT_TICKS_DEFAULT,
            read_mode: ReadMode::ReadIndex,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            snapshot_count: SNAPSHOT_COUNT_DEFAULT,
            snapshot_catch_up_entries: SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT,
            snapshot_chunks_per_round: SNAPSHOT_CHUNKS_PER_ROUND_DEFAULT,
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            pending_requests_max: PENDING_REQUESTS_MAX_DEFAULT,
            lease_checkpoint_interval: LEASE_CHECKPOINT_INTERVAL_DEFAULT,
            auth_token_ttl: AUTH_TOKEN_TTL_DEFAULT,
            seed: 0,
            wal: WalOptions::default(),
            store: StoreOptions::default(),
            keyspace: single_shard_keyspace(),
            hibernate_quiet_shards: true,
            replicas: REPLICAS_DEFAULT,
            max_concurrent_moves: MAX_CONCURRENT_MOVES_DEFAULT,
            placement_moves: false,
            down_timeout: DOWN_TIMEOUT_DEFAULT,
            move_bytes_per_second: MOVE_BYTES_PER_SECOND_DEFAULT,
            snapshot_message_bytes: SNAPSHOT_MESSAGE_BYTES_DEFAULT,
        }
    }

    /// Whether the node hosts the metadata group and several data shards
    /// (`--shards` above 1) rather than one shard holding everything.
    pub fn is_sharded(&self) -> bool {
        self.keyspace.shard_count() > 1
    }

    /// The shard holding members, alarms, auth and the lease table:
    /// [`META_SHARD`] on a sharded cluster, [`DATA_SHARD`] otherwise.
    pub fn meta_shard(&self) -> ShardId {
        if self.is_sharded() { META_SHARD } else { DATA_SHARD }
    }

    /// Every shard this node hosts, ascending (every shard is on every
    /// node while a cluster has at most R nodes).
    pub fn hosted_shards(&self) -> Vec<ShardId> {
        let data = self.keyspace.shard_ids().map(|s| ShardId(s.0));
        if self.is_sharded() {
            std::iter::once(META_SHARD).chain(data).collect()
        } else {
            data.collect()
        }
    }

    /// Whether quiet data shards hibernate: asked for, several data
    /// shards, and reads confirmed by a quorum (a hibernated leader that
    /// lost its quorum unknowingly must not serve lease reads).
    pub fn hibernation_active(&self) -> bool {
        self.hibernate_quiet_shards
            && self.is_sharded()
            && matches!(self.read_mode, ReadMode::ReadIndex)
    }

    /// The election timeout in real time.
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_ticks
    }

    /// The shortest lease TTL granted, in seconds: `ceil(1.5 × election
    /// timeout)`, as etcd (a shorter lease could expire during an election).
    pub fn lease_ttl_min_seconds(&self) -> i64 {
        let millis = self.election_timeout().as_millis() * 3 / 2;
        millis.div_ceil(1000).max(1) as i64
    }

    /// Checks the configuration for values that cannot work.
    ///
    /// # Errors
    /// The first bad setting, named.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |field, why: &str| Err(NodeError::Config { field, why: why.to_owned() });
        if self.tick_interval.is_zero() {
            return bad("tick_interval", "must be positive");
        }
        if self.down_timeout < self.election_timeout() {
            return bad("down_timeout", "must be at least the election timeout");
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return bad("election_ticks", "must exceed heartbeat_ticks, which must be positive");
        }
        if self.request_timeout < self.election_timeout() {
            return bad("request_timeout", "must be at least one election timeout");
        }
        if self.snapshot_count == 0 || self.snapshot_chunks_per_round == 0 {
            return bad("snapshot_count", "it and snapshot_chunks_per_round must be positive");
        }
        if self.pending_requests_max == 0 {
            return bad("pending_requests_max", "must be positive");
        }
        if self.snapshot_message_bytes == 0 {
            return bad("snapshot_message_bytes", "must be positive");
        }
        if let Some(zone) = &self.zone
            && let Err(e) = check_zone(zone)
        {
            return Err(NodeError::Config { field: "zone", why: e.to_string() });
        }
        if self.peer_urls.is_empty() {
            return bad("peer_urls", "a member needs at least one peer URL");
        }
        if self.lease_checkpoint_interval.is_zero() {
            return bad("lease_checkpoint_interval", "must be positive");
        }
        if self.auth_token_ttl.is_zero() {
            return bad("auth_token_ttl", "must be positive");
        }
        if !(1..=ringkv_ring::REPLICAS_MAX).contains(&self.replicas) {
            let why = format!("must be between 1 and {}", ringkv_ring::REPLICAS_MAX);
            return Err(NodeError::Config { field: "replicas", why });
        }
        if self.max_concurrent_moves == 0 {
            return bad("max_concurrent_moves", "must be positive");
        }
        if let Bootstrap::NewCluster { members } = &self.bootstrap {
            let Some(me) = members.iter().find(|m| m.name == self.name) else {
                return bad("bootstrap", "the initial cluster must include this member's name");
            };
            let (mut listed, mut mine) = (me.peer_urls.clone(), self.peer_urls.clone());
            listed.sort();
            mine.sort();
            if listed != mine {
                // Ids derive from the URLs: a mismatch would make this node
                // a stranger to the configuration it founds.
                return bad(
                    "bootstrap",
                    "this member's peer URLs in the initial cluster differ from its own peer URLs",
                );
            }
            let mut names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            if names.windows(2).any(|w| w[0] == w[1]) {
                return bad("bootstrap", "two members of the initial cluster share a name");
            }
        }
        self.wal.validate().map_err(NodeError::Wal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(members: Vec<InitialMember>) -> NodeConfig {
        NodeConfig::new(
            "a",
            "tok",
            vec!["http://a:2380".into()],
            vec![],
            Bootstrap::NewCluster { members },
        )
    }

    fn member(name: &str, url: &str) -> InitialMember {
        InitialMember { name: name.into(), peer_urls: vec![url.into()] }
    }

    #[test]
    fn the_initial_cluster_must_name_this_member_with_its_urls() {
        assert!(
            config(vec![member("a", "http://a:2380"), member("b", "http://b:2380")])
                .validate()
                .is_ok()
        );
        let missing = config(vec![member("b", "http://b:2380")]).validate();
        assert!(matches!(missing, Err(NodeError::Config { field: "bootstrap", .. })));
        let other_url = config(vec![member("a", "http://elsewhere:2380")]).validate();
        assert!(matches!(other_url, Err(NodeError::Config { field: "bootstrap", .. })));
        let twice = config(vec![member("a", "http://a:2380"), member("a", "http://c:2380")]);
        assert!(matches!(twice.validate(), Err(NodeError::Config { field: "bootstrap", .. })));
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        let ok = config(vec![member("a", "http://a:2380")]);
        assert_eq!(ok.lease_ttl_min_seconds(), 2, "ceil(1.5 x 1 s)");
        let mut c = ok.clone();
        c.election_ticks = c.heartbeat_ticks;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.request_timeout = Duration::from_millis(10);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.snapshot_chunks_per_round = 0;
        assert!(c.validate().is_err());
        for replicas in [0, ringkv_ring::REPLICAS_MAX + 1] {
            let mut c = ok.clone();
            c.replicas = replicas;
            assert!(matches!(c.validate(), Err(NodeError::Config { field: "replicas", .. })));
        }
        let mut c = ok;
        c.max_concurrent_moves = 0;
        assert!(c.validate().is_err());
    }
}
