//! Multi-shard runs (`--sharded`): S shards, each its own consensus group,
//! placed on the nodes by the consistent-hash ring of [`ringkv_ring`], and
//! moved between nodes while the workload and the faults go on.
//!
//! * **Layout** ([`Layout`], drawn from the seed on its own random stream,
//!   so single-shard runs draw exactly as before): 2 to 8 shards,
//!   replication factor 3, 4 to 6 nodes of which some start outside the
//!   ring, how many moves may run at once, and how often the ring changes.
//! * **Nodes**: one simulated node carries a replica of every shard the
//!   placement gives it. Its replicas share the node's fate: one tick
//!   drives them all, one crash stops them all, and every message between
//!   two nodes, whatever its shard, goes through the same simulated link,
//!   so a partition or a clog hits every group of a node at once. Each
//!   replica keeps its own WAL on its own [`SimDisk`]: the host
//!   ([`crate::host::ReplicaHost`]) owns its WAL and runs its own fsync
//!   pipeline, and sharing one WAL between a node's groups would mean a
//!   per-node pipeline the host does not have yet. A node crash crashes
//!   every one of its disks at the same instant.
//! * **Clients** route every operation with [`Keyspace`] to its shard,
//!   and to that shard's leader as far as they know it (their routing
//!   table is refreshed from the groups' configurations as moves finish).
//!   Keys are independent, so the one history stays checkable by
//!   [`ringkv_lincheck`] across shards.
//! * **Ring changes**: now and then a node outside the ring joins it, or
//!   one inside leaves (decommission). The new [`Placement`] and the
//!   [`MovementPlan`] from the old one come from the ring crate; each
//!   replica move runs as membership changes through the shard's own
//!   engine: add the new replica as a learner, let it catch up (the
//!   leader's view of its log reaches the commit index, by appends or a
//!   snapshot), promote it, then remove the old replica; the old replica's
//!   node drops the shard's state once a committed configuration excludes
//!   it. At most `moves_at_once` moves run at a time, one per shard, while
//!   crashes, partitions and packet faults go on.
//! * **Replica ids**: a shard's first replica on a node has the node's id;
//!   a replica created later on a node that carried the shard before
//!   gets a fresh one ([`REPLICA_ID_STRIDE`]), as etcd member ids and TiKV
//!   peer ids are unique per replica. Reusing the node's id is unsafe:
//!   Multi-Paxos paxos seed 18 lost a chosen value that way (a voter of an
//!   old configuration formed its phase-1 quorum with the wiped replica's
//!   empty promise), kept as the planted bug `reuse-replica-id`.
//! * **Idle groups**: a shard no client writes to still moves: a
//!   Multi-Paxos leader pads a predecessor's change with no-ops itself
//!   (paxos seed 9 once stalled on a change chosen without them, the
//!   driver wrote to idle groups then). Multi-Paxos' α is capped at
//!   [`CONFIG_DELAY_SLOTS_MAX`]: each move is three changes, each padded
//!   with α − 1 no-ops.
//! * **Left to single-shard runs**: disk faults (fsync `EIO`, `ENOSPC`,
//!   torn writes, read errors) and the single-group membership nemesis
//!   (the ring changes take its place); crashes lose every unsynced write
//!   of every group of the node.
//! * **Checks**: every per-group checker, per group; `move-protocol`: no
//!   group's configuration ever has fewer voters than the replication
//!   factor (the point of adding before removing); at the end, every
//!   shard's configuration equals the target placement, every acknowledged
//!   write is on every member, and the history is linearizable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use ringkv_consensus::{
    ChangeOp, DetRng, Epoch, LogIndex, Membership, MembershipChange, NodeId, Role, ShardId, Status,
};
use ringkv_lincheck::{History, Outcome};
use ringkv_ring::{
    HashKeyRule, Keyspace, MovementPlan, NodeSpec, Placement, PlacementConfig, Ring, Step,
};
use ringkv_storage::SimDisk;

use crate::checkers::wal_recovery::{self, DurableState};
use crate::checkers::{self, Checkers, linearizability};
use crate::client::{Client, ClientStep};
use crate::engine::{EngineOptions, PlantedBug};
use crate::faults::{FaultCounts, FaultKind};
use crate::host::{Effects, Host, HostSpec, Observation, Outgoing, Stopped};
use crate::kv::ClientId;
use crate::network::{Addr, Fate, Network};
use crate::protocol::{Request, Response};
use crate::scenario::{ELECTION_TICKS, Scenario, TICK_US};
use crate::time::{EventQueue, MICROS_PER_MILLI, Time};
use crate::trace::{Actor, Trace, hash_bytes, mix};
use crate::world::{Failure, RunOptions, RunReport, RunStats, STORM_PACKETS_PER_TICK};

/// Replicas per shard.
pub const REPLICATION: u32 = 3;
/// Fewest shards a sharded run draws.
pub const SHARDS_MIN: u32 = 2;
/// Most shards a sharded run draws.
pub const SHARDS_MAX: u32 = 8;
/// Fewest simulated nodes.
pub const NODES_MIN: u64 = 4;
/// Most simulated nodes.
pub const NODES_MAX: u64 = 6;
/// Most replica moves a run lets run at once.
pub const MOVES_AT_ONCE_MAX: u32 = 3;
/// Fewest keys the workload touches (more shards need more keys to all
/// see traffic).
pub const KEYS_MIN: u32 = 8;
/// Most keys the workload touches.
pub const KEYS_MAX: u32 = 24;
/// A learner counts as caught up when the leader knows its log to reach
/// within this many entries of the commit index (writes keep arriving, so
/// asking for equality would chase a moving target).
pub const CATCH_UP_SLACK_ENTRIES: u64 = 16;
/// Ticks the cluster has after healing to finish every move, elect a
/// leader in every shard and apply what it led on every member: more
/// than a single shard's bound, since moves still queued when the faults
/// stop run one after another.
pub const LIVENESS_TICKS_MAX: u64 = 60 * ELECTION_TICKS as u64;
/// Ticks the drained cluster has to apply every acknowledged write on
/// every member.
pub const SETTLE_TICKS_MAX: u64 = 10 * ELECTION_TICKS as u64;
/// Largest Multi-Paxos α in a sharded run. Every move is three
/// membership changes, each padded with α − 1 no-ops that a learner must
/// receive and a new leader may have to re-propose, and a ring change
/// queues several moves: at α = 1024 one ring change left just before
/// healing outlasts the liveness bound without anything being wrong.
pub const CONFIG_DELAY_SLOTS_MAX: u64 = 64;
/// Largest α when the seed's leader sends one slot per message.
pub const CONFIG_DELAY_SLOTS_ONE_SLOT_PER_MESSAGE_MAX: u64 = 8;
/// How often the move driver looks at its moves.
const MOVER_US: u64 = 20 * MICROS_PER_MILLI;
/// How often the liveness phase checks its goal.
const PROBE_US: u64 = 10 * MICROS_PER_MILLI;
/// How soon a node stopped after healing restarts.
const HEALED_RESTART_US: u64 = MICROS_PER_MILLI;
/// Events one run may process; far above any real run.
const EVENTS_MAX: u64 = 20_000_000;
/// The random stream the layout is drawn from (apart from the scenario's,
/// which stays as single-shard runs draw it).
const LAYOUT_STREAM: u64 = 0x5a4d_0001;
/// Replica ids: the `n`-th replica of a shard created on a node has the
/// id `node + n · this` (node ids stay below it).
///
/// A replica created on a node that carried the shard before must not
/// reuse the old replica's id: the new one starts empty, and a member of
/// an older configuration that never learned of the removal still counts
/// the id in its quorums. Under Multi-Paxos its empty promise then lets a
/// stale voter re-decide a chosen slot (`--move-bug reuse-replica-id`
/// shows it); etcd's member ids and TiKV's peer ids are unique per
/// replica for the same reason.
pub const REPLICA_ID_STRIDE: u64 = 1_000;

/// A bug planted in the move protocol, to show the checks catch it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MoveBug {
    /// Removes the old replica as soon as the new one is a learner,
    /// before promoting it: the group runs a while on fewer voters than
    /// the replication factor.
    RemoveBeforePromote,
    /// Gives a replica re-created on a node that carried the shard before
    /// the node's id again, instead of a fresh replica id.
    ReuseReplicaId,
}

impl MoveBug {
    /// Every move bug.
    pub const ALL: [MoveBug; 2] = [MoveBug::RemoveBeforePromote, MoveBug::ReuseReplicaId];

    /// The name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            MoveBug::RemoveBeforePromote => "remove-before-promote",
            MoveBug::ReuseReplicaId => "reuse-replica-id",
        }
    }
}

impl fmt::Display for MoveBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// No move bug has the name given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown move bug {name:?}: choose remove-before-promote or reuse-replica-id")]
pub struct UnknownMoveBug {
    /// The name given.
    pub name: String,
}

impl FromStr for MoveBug {
    type Err = UnknownMoveBug;

    fn from_str(s: &str) -> Result<MoveBug, UnknownMoveBug> {
        MoveBug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownMoveBug { name: s.to_owned() })
    }
}

/// The shape of one sharded run, drawn from its seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data shards, numbered from 1.
    pub shards: u32,
    /// Simulated nodes, numbered from 1.
    pub nodes: u64,
    /// Nodes `1..=ring_nodes` start in the ring; the others wait outside.
    pub ring_nodes: u64,
    /// Most replica moves running at once.
    pub moves_at_once: u32,
    /// Keys the workload touches.
    pub keys: u32,
    /// A node joins or leaves the ring every `[min, max)` µs (when no
    /// moves are left from the last change).
    pub ring_change_us: (u64, u64),
}

impl Layout {
    /// Draws the layout of `seed`'s sharded run.
    pub fn draw(seed: u64) -> Layout {
        let mut rng = DetRng::new(mix(seed, LAYOUT_STREAM));
        let shards = rng.range(u64::from(SHARDS_MIN), u64::from(SHARDS_MAX) + 1) as u32;
        let nodes = rng.range(NODES_MIN, NODES_MAX + 1);
        let ring_nodes = (nodes - rng.range(1, 3)).max(u64::from(REPLICATION));
        let moves_at_once = rng.range(1, u64::from(MOVES_AT_ONCE_MAX) + 1) as u32;
        let keys = rng.range(u64::from(KEYS_MIN), u64::from(KEYS_MAX) + 1) as u32;
        let min = rng.range(100, 400) * MICROS_PER_MILLI;
        let ring_change_us = (min, min + rng.range(1, 400) * MICROS_PER_MILLI);
        Layout { shards, nodes, ring_nodes, moves_at_once, keys, ring_change_us }
    }
}

/// The id of the `nth` replica of a shard created on `node`.
fn replica_id(node: NodeId, nth: u64) -> NodeId {
    NodeId(node.0 + nth * REPLICA_ID_STRIDE)
}

/// The node that carries replica `id`.
fn node_of_replica(id: NodeId) -> NodeId {
    NodeId(id.0 % REPLICA_ID_STRIDE)
}

/// The member of `m` that lives on `node`, if any.
fn member_on(m: &Membership, node: NodeId) -> Option<NodeId> {
    m.members().into_iter().find(|id| node_of_replica(*id) == node)
}

/// The nodes carrying `ids`.
fn nodes_of(ids: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    ids.iter().copied().map(node_of_replica).collect()
}

fn ring_node(n: NodeId) -> ringkv_ring::NodeId {
    ringkv_ring::NodeId(n.0)
}

fn node_of(n: ringkv_ring::NodeId) -> NodeId {
    NodeId(n.0)
}

fn ring_shard(s: ShardId) -> ringkv_ring::ShardId {
    ringkv_ring::ShardId(s.0)
}

/// One replica a node carries.
struct ReplicaSlot<H> {
    disk: SimDisk,
    host: Option<H>,
    initial: Option<Membership>,
    /// Unique per replica ever created: wakes of a dropped replica's I/O
    /// never reach a later replica of the same shard on the same node.
    generation: u64,
    /// The replica's id in its group (its engine's `NodeId`): the node's
    /// id for the first replica of the shard on the node, a fresh one for
    /// every later one (see [`replica_id`]).
    id: NodeId,
    /// The id the checkers know this replica by: always fresh per
    /// replica, so the checkers see a new process with new state even
    /// when [`MoveBug::ReuseReplicaId`] reuses the engine id.
    checker_id: NodeId,
    boots: u64,
    synced_at_crash: Option<DurableState>,
}

struct NodeSlot<H> {
    up: bool,
    incarnation: u64,
    tick_us: u64,
    replicas: BTreeMap<ShardId, ReplicaSlot<H>>,
    /// Replicas of each shard created on this node so far.
    generations: BTreeMap<ShardId, u64>,
}

#[derive(Debug)]
enum Packet {
    Peer { shard: ShardId, from: NodeId, to: NodeId, payload: Bytes, describe: Option<String> },
    Request(Request),
    Response(Response),
}

impl Packet {
    fn copy(&self) -> Packet {
        match self {
            Packet::Peer { shard, from, to, payload, describe } => Packet::Peer {
                shard: *shard,
                from: *from,
                to: *to,
                payload: payload.clone(),
                describe: describe.clone(),
            },
            Packet::Request(r) => Packet::Request(r.clone()),
            Packet::Response(r) => Packet::Response(r.clone()),
        }
    }
}

#[derive(Debug)]
enum Event {
    Tick { node: NodeId, incarnation: u64 },
    Wake { node: NodeId, shard: ShardId, generation: u64, incarnation: u64 },
    Packet { from: Addr, to: Addr, packet: Packet },
    Restart { node: NodeId },
    Client { index: usize, token: u64 },
    Nemesis,
    RingChange,
    HealLinks { episode: u64 },
    Mover,
    Heal,
    Probe,
    LivenessDeadline,
    DrainDeadline,
    SettleDeadline,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
    Drain,
    Settle,
    Done,
}

/// One replica move (or addition, or removal) of a movement plan.
#[derive(Clone, Debug)]
struct Move {
    shard: ShardId,
    from: Option<NodeId>,
    to: Option<NodeId>,
}

/// When a removed replica was first seen excluded: `(leader, its epoch,
/// its last index)`.
type RemovalSeen = Option<(NodeId, Epoch, LogIndex)>;

/// One sharded run.
pub struct ShardedWorld<H: Host> {
    seed: u64,
    engine: &'static str,
    scenario: Scenario,
    layout: Layout,
    bugs: Vec<PlantedBug>,
    move_bug: Option<MoveBug>,
    disabled_checkers: Vec<&'static str>,
    rng: DetRng,
    queue: EventQueue<Event>,
    network: Network,
    nodes: BTreeMap<NodeId, NodeSlot<H>>,
    clients: Vec<Client>,
    client_tokens: Vec<u64>,
    history: History,
    checkers: BTreeMap<ShardId, Checkers>,
    trace: Trace,
    faults: FaultCounts,
    stats: RunStats,
    phase: Phase,
    heal_at: Time,
    failure: Option<Failure>,
    link_episode: u64,
    packet_window: (u64, u64),
    ring: Ring,
    /// The placement the moves work towards.
    placement: Placement,
    pending: VecDeque<Move>,
    active: Vec<Move>,
    /// Old replicas to drop once a committed configuration excludes them:
    /// `(leader, epoch, its last index)` when first seen excluded.
    removals: BTreeMap<(ShardId, NodeId), RemovalSeen>,
    /// Which shard each key lives in.
    keyspace: Keyspace,
    /// Per shard, the index every member must apply for liveness.
    liveness_targets: BTreeMap<ShardId, LogIndex>,
    next_generation: u64,
}

impl<H: Host> ShardedWorld<H> {
    /// A sharded world for `seed`, ready to run.
    pub fn new(seed: u64, options: &RunOptions) -> ShardedWorld<H> {
        let mut scenario = Scenario::draw(seed, !options.no_faults);
        let layout = Layout::draw(seed);
        scenario.client.keys = layout.keys;
        let alpha_max = if scenario.config.max_message_bytes == 1 {
            CONFIG_DELAY_SLOTS_ONE_SLOT_PER_MESSAGE_MAX
        } else {
            CONFIG_DELAY_SLOTS_MAX
        };
        scenario.config_delay_slots = scenario.config_delay_slots.min(alpha_max);
        let ring =
            Ring::new((1..=layout.ring_nodes).map(|i| NodeSpec::new(ringkv_ring::NodeId(i))))
                .expect("a few nodes with distinct ids and default weights form a ring");
        let placement = ring
            .place(&PlacementConfig::new(layout.shards, REPLICATION))
            .expect("the ring starts with at least REPLICATION nodes");
        ShardedWorld {
            seed,
            engine: H::ENGINE,
            network: Network::new(scenario.network),
            rng: DetRng::new(mix(seed, 0x5eed_5a4d)),
            queue: EventQueue::new(),
            nodes: BTreeMap::new(),
            clients: Vec::new(),
            client_tokens: Vec::new(),
            history: History::new(),
            checkers: BTreeMap::new(),
            trace: Trace::new(options.trace),
            faults: FaultCounts::default(),
            stats: RunStats::default(),
            phase: Phase::Safety,
            heal_at: Time(0),
            failure: None,
            link_episode: 0,
            packet_window: (0, 0),
            ring,
            placement,
            pending: VecDeque::new(),
            active: Vec::new(),
            removals: BTreeMap::new(),
            keyspace: Keyspace::new(layout.shards, HashKeyRule::WholeKey)
                .expect("the shard count is within the keyspace's range"),
            liveness_targets: BTreeMap::new(),
            next_generation: 0,
            bugs: options.bugs.clone(),
            move_bug: options.move_bug,
            disabled_checkers: options.disabled_checkers.clone(),
            scenario,
            layout,
        }
    }

    /// Runs to the end (or the first failure) and reports.
    pub fn run(mut self) -> RunReport {
        self.setup();
        while self.failure.is_none() && self.phase != Phase::Done {
            let Some((now, event)) = self.queue.pop() else { break };
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                self.fail("simulator", format!("the run exceeded {EVENTS_MAX} events"));
                break;
            }
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.dispatch(now, event);
            }));
            if let Err(panic) = step {
                self.fail("assertion", crate::world::panic_message(panic.as_ref()));
                break;
            }
        }
        self.finish()
    }

    fn now(&self) -> Time {
        self.queue.now()
    }

    fn fail(&mut self, checker: &'static str, what: String) {
        debug_assert!(checkers::NAMES.contains(&checker), "unlisted checker {checker}");
        if self.disabled_checkers.contains(&checker) {
            return;
        }
        if self.failure.is_none() {
            let at = self.now();
            self.trace.event(at, Actor::World, "FAILURE", 0, 0, || format!("{checker}: {what}"));
            self.failure = Some(Failure { checker, at, what });
        }
    }

    fn setup(&mut self) {
        let l = &self.layout;
        let summary = format!(
            "seed {} engine {} sharded: {} shards x{} on {} nodes ({} in the ring), {} moves at \
             once, {} keys, ring change every {:?}us; nemesis every {:?}us: {:?}",
            self.seed,
            self.engine,
            l.shards,
            REPLICATION,
            l.nodes,
            l.ring_nodes,
            l.moves_at_once,
            l.keys,
            l.ring_change_us,
            self.scenario.faults.nemesis_interval_us,
            self.scenario
                .faults
                .nemesis
                .iter()
                .map(|(k, w)| format!("{k}x{w}"))
                .collect::<Vec<_>>()
        );
        self.trace.event(Time(0), Actor::World, "start", self.seed, 0, || summary);
        for i in 1..=self.layout.nodes {
            let skew = self.rng.range(0, self.scenario.tick_skew_us.max(1));
            let slot = NodeSlot {
                up: false,
                incarnation: 0,
                tick_us: TICK_US + skew,
                replicas: BTreeMap::new(),
                generations: BTreeMap::new(),
            };
            self.nodes.insert(NodeId(i), slot);
        }
        let shards: Vec<(ShardId, Vec<NodeId>)> = self
            .placement
            .iter()
            .map(|(s, rs)| (ShardId(s.0), rs.iter().copied().map(node_of).collect()))
            .collect();
        for (shard, replicas) in shards {
            self.checkers.insert(shard, Checkers::new(H::IDENTITY));
            let membership = Membership::new(replicas.iter().copied());
            for node in replicas {
                self.add_replica_slot(node, shard, Some(membership.clone()));
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.boot_node(id);
        }
        for i in 0..self.scenario.clients {
            let id = ClientId(i + 1);
            let seed = mix(self.seed, 0xc11e_0000 + i);
            let mut params = self.scenario.client.clone();
            if i > 0 && self.rng.chance(1, 3) {
                params.weights = [0, 0, 0, 1, 1];
            }
            self.clients.push(Client::new(id, seed, params).route_with(self.keyspace));
            self.client_tokens.push(0);
            let start = Time(self.rng.range(0, 2 * TICK_US));
            self.wake_client(i as usize, start);
        }
        self.refresh_routing();
        if !self.scenario.faults.nemesis.is_empty() {
            let (lo, hi) = self.scenario.faults.nemesis_interval_us;
            let first = self.rng.range(lo, hi);
            self.queue.after(first, Event::Nemesis);
        }
        let (lo, hi) = self.layout.ring_change_us;
        let first = self.rng.range(lo, hi);
        self.queue.after(first, Event::RingChange);
        self.queue.after(MOVER_US, Event::Mover);
        self.queue.at(Time(self.scenario.safety_us), Event::Heal);
    }

    /// Creates the slot of a new replica of `shard` on `node` (booted with
    /// the node, or at once if the node is up).
    fn add_replica_slot(&mut self, node: NodeId, shard: ShardId, initial: Option<Membership>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(slot) = self.nodes.get_mut(&node) else { return };
        let nth = slot.generations.entry(shard).or_insert(0);
        let checker_id = replica_id(node, *nth);
        let id = if self.move_bug == Some(MoveBug::ReuseReplicaId) { node } else { checker_id };
        *nth += 1;
        let disk = SimDisk::new(mix(self.seed, 0xd15c_0000 + (generation << 8) + node.0));
        let replica = ReplicaSlot {
            disk,
            host: None,
            initial,
            generation,
            id,
            checker_id,
            boots: 0,
            synced_at_crash: None,
        };
        slot.replicas.insert(shard, replica);
    }

    fn spec(&self, node: NodeId, shard: ShardId) -> Option<HostSpec> {
        let r = self.nodes.get(&node)?.replicas.get(&shard)?;
        let mut config = self.scenario.config.clone();
        config.id = r.id;
        config.shard = shard;
        Some(HostSpec {
            config,
            initial_membership: r.initial.clone(),
            wal: self.scenario.wal,
            snapshot_every_entries: self.scenario.snapshot_every_entries,
            fsync: self.scenario.fsync,
            engine: EngineOptions {
                bugs: self.bugs.clone(),
                config_delay_slots: self.scenario.config_delay_slots,
            },
            incarnation: r.boots,
            describe_messages: self.trace.is_kept(),
        })
    }

    fn boot_node(&mut self, node: NodeId) {
        let Some(slot) = self.nodes.get_mut(&node) else { return };
        if slot.up {
            return;
        }
        slot.up = true;
        let (incarnation, tick_us) = (slot.incarnation, slot.tick_us);
        let shards: Vec<ShardId> = slot.replicas.keys().copied().collect();
        if incarnation > 0 {
            self.stats.restarts += 1;
        }
        let now = self.now();
        self.trace.event(now, Actor::Node(node), "up", incarnation, 0, || {
            format!("booted (life {incarnation}) with shards {shards:?}")
        });
        let first = self.rng.range(1, tick_us);
        self.queue.after(first, Event::Tick { node, incarnation });
        for shard in shards {
            self.boot_replica(node, shard);
        }
    }

    fn boot_replica(&mut self, node: NodeId, shard: ShardId) {
        let Some(spec) = self.spec(node, shard) else { return };
        let Some(r) = self.nodes.get(&node).and_then(|s| s.replicas.get(&shard)) else { return };
        if r.host.is_some() || !self.nodes[&node].up {
            return;
        }
        let (disk, id) = (r.disk.clone(), r.id);
        let mut fx = Effects::default();
        match H::boot(id, &spec, disk, &mut fx) {
            Ok(host) => {
                let r = self.replica_mut(node, shard).expect("checked above");
                r.host = Some(host);
                r.boots += 1;
                self.handle(node, shard, fx, Ok(()));
            }
            Err(e) => {
                // No disk faults are injected in sharded runs: a replica
                // that cannot boot lost something it had made durable.
                self.fail("recovery", format!("node {node} cannot start shard {shard}: {e}"));
            }
        }
    }

    fn replica_mut(&mut self, node: NodeId, shard: ShardId) -> Option<&mut ReplicaSlot<H>> {
        self.nodes.get_mut(&node)?.replicas.get_mut(&shard)
    }

    fn host(&self, node: NodeId, shard: ShardId) -> Option<&H> {
        self.nodes.get(&node)?.replicas.get(&shard)?.host.as_ref()
    }

    /// Stops a node's process and crashes every one of its disks.
    fn crash_node(&mut self, node: NodeId, why: &str) {
        let Some(slot) = self.nodes.get_mut(&node) else { return };
        if !slot.up {
            return;
        }
        for r in slot.replicas.values_mut() {
            r.synced_at_crash = r.host.as_ref().map(|h| h.durable_state());
            r.host = None;
            r.disk.crash();
        }
        slot.up = false;
        slot.incarnation += 1;
        let now = self.now();
        self.trace.event(now, Actor::Node(node), "down", 0, 0, || why.to_string());
        let delay = if self.phase == Phase::Safety {
            let (lo, hi) = self.scenario.downtime_us;
            self.rng.range(lo, hi)
        } else {
            HEALED_RESTART_US
        };
        self.queue.after(delay, Event::Restart { node });
    }

    /// Drops a removed replica: its node forgets the shard.
    fn drop_replica(&mut self, node: NodeId, shard: ShardId) {
        self.removals.remove(&(shard, node));
        let Some(slot) = self.nodes.get_mut(&node) else { return };
        if slot.replicas.remove(&shard).is_some() {
            let now = self.now();
            self.trace.event(now, Actor::Node(node), "drop", shard.0, 0, || {
                format!("shard {shard} removed from this node; its state is dropped")
            });
        }
    }

    fn wake_client(&mut self, index: usize, at: Time) {
        self.client_tokens[index] += 1;
        let token = self.client_tokens[index];
        self.queue.at(at, Event::Client { index, token });
    }

    fn all_nodes(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn dispatch(&mut self, now: Time, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                let Some(slot) = self.nodes.get(&node) else { return };
                if slot.incarnation != incarnation || !slot.up {
                    return;
                }
                let tick_us = slot.tick_us;
                let shards: Vec<ShardId> = slot.replicas.keys().copied().collect();
                self.trace.quiet(now, Actor::Node(node), "tick");
                self.queue.after(tick_us, Event::Tick { node, incarnation });
                for shard in shards {
                    self.with_host(node, shard, |h, fx| h.tick(fx));
                }
            }
            Event::Wake { node, shard, generation, incarnation } => {
                let current = self.nodes.get(&node).is_some_and(|s| {
                    s.incarnation == incarnation
                        && s.replicas.get(&shard).is_some_and(|r| r.generation == generation)
                });
                if current {
                    self.trace.event(now, Actor::Node(node), "io-done", shard.0, 0, String::new);
                    self.with_host(node, shard, |h, fx| h.wake(fx));
                }
            }
            Event::Packet { from, to, packet } => self.deliver(now, from, to, packet),
            Event::Restart { node } => self.boot_node(node),
            Event::Client { index, token } => {
                if self.client_tokens[index] == token {
                    let nodes = self.all_nodes();
                    let step = self.clients[index].wake(now, &nodes, &mut self.history);
                    self.client_step(index, step);
                }
            }
            Event::Nemesis => self.nemesis(),
            Event::RingChange => self.ring_change(),
            Event::HealLinks { episode } => {
                if episode == self.link_episode {
                    self.network.heal();
                    self.trace.event(now, Actor::World, "links-healed", episode, 0, || {
                        "every link restored".into()
                    });
                }
            }
            Event::Mover => self.mover(),
            Event::Heal => self.heal(),
            Event::Probe => self.probe(),
            Event::LivenessDeadline => {
                if self.phase == Phase::Liveness {
                    let states = self.describe();
                    self.fail(
                        "liveness",
                        format!(
                            "the shards did not all reach their target placement and apply \
                             their leaders' logs on every member within {LIVENESS_TICKS_MAX} \
                             ticks of healing\n{states}"
                        ),
                    );
                }
            }
            Event::DrainDeadline => {
                if self.phase == Phase::Drain {
                    self.settle();
                }
            }
            Event::SettleDeadline => {
                if self.phase == Phase::Settle {
                    self.phase = Phase::Done;
                }
            }
        }
    }

    fn with_host(
        &mut self,
        node: NodeId,
        shard: ShardId,
        f: impl FnOnce(&mut H, &mut Effects) -> Result<(), Stopped>,
    ) {
        let Some(host) = self
            .nodes
            .get_mut(&node)
            .and_then(|s| s.replicas.get_mut(&shard))
            .and_then(|r| r.host.as_mut())
        else {
            return;
        };
        let mut fx = Effects::default();
        let result = f(host, &mut fx);
        self.handle(node, shard, fx, result);
    }

    fn handle(&mut self, node: NodeId, shard: ShardId, fx: Effects, result: Result<(), Stopped>) {
        let now = self.now();
        let Some(checker_id) =
            self.nodes.get(&node).and_then(|s| s.replicas.get(&shard)).map(|r| r.checker_id)
        else {
            return;
        };
        for o in &fx.observations {
            let (kind, detail) = describe(o);
            self.trace.event(now, Actor::Node(node), kind, shard.0, 0, || {
                format!("shard {shard}: {detail}")
            });
            match o {
                Observation::Compacted { .. } => self.stats.snapshots += 1,
                Observation::Restored { .. } => self.stats.snapshot_installs += 1,
                _ => {}
            }
            if let Observation::Booted { durable, .. } = o
                && let Some(synced) =
                    self.replica_mut(node, shard).and_then(|r| r.synced_at_crash.take())
                && let Err(what) = wal_recovery::check(checker_id, &synced, durable)
            {
                self.fail("wal-recovery", format!("shard {shard}: {what}"));
            }
            let host = self
                .nodes
                .get(&node)
                .and_then(|s| s.replicas.get(&shard))
                .and_then(|r| r.host.as_ref());
            let mut violations = Vec::new();
            if let Some(c) = self.checkers.get_mut(&shard) {
                c.observe(checker_id, o, host, &mut violations);
            }
            for v in violations {
                self.fail(v.checker, format!("shard {shard}: {}", v.what));
            }
            if self.failure.is_some() {
                return;
            }
        }
        for o in fx.sends {
            self.send_peer(node, shard, o);
        }
        for (client, mut response) in fx.replies {
            // Clients address nodes: a leader hint names a replica.
            if let Response::NotLeader { leader, .. } = &mut response {
                *leader = leader.map(node_of_replica);
            }
            self.send(Addr::Node(node), Addr::Client(client), Packet::Response(response));
        }
        if let Some(us) = fx.wake_after_us {
            let slot = &self.nodes[&node];
            let generation = slot.replicas.get(&shard).map_or(u64::MAX, |r| r.generation);
            let incarnation = slot.incarnation;
            self.queue.after(us, Event::Wake { node, shard, generation, incarnation });
        }
        if let Err(stopped) = result {
            // The process dies with every group it carries.
            self.crash_node(node, &format!("shard {shard} stopped it: {}", stopped.reason));
        }
    }

    fn send_peer(&mut self, from: NodeId, shard: ShardId, o: Outgoing) {
        let Outgoing { to, payload, describe } = o;
        let node = node_of_replica(to);
        let Some(sender) = self.nodes.get(&from).and_then(|s| s.replicas.get(&shard)) else {
            return;
        };
        if !self.nodes.contains_key(&node) {
            return;
        }
        let packet = Packet::Peer { shard, from: sender.id, to, payload, describe };
        self.send(Addr::Node(from), Addr::Node(node), packet);
    }

    fn send(&mut self, from: Addr, to: Addr, packet: Packet) {
        let now = self.now();
        let fate = self.network.send(&mut self.rng, now, from, to);
        match &fate {
            Fate::Lost => {
                self.faults.add(FaultKind::Loss);
                self.trace.event(now, actor(from), "lost", addr_code(to), 0, || {
                    format!("packet to {to:?} lost")
                });
            }
            Fate::Cut | Fate::QueueFull => {
                self.trace.event(now, actor(from), "dropped", addr_code(to), 0, || {
                    format!("packet to {to:?} dropped: {fate:?}")
                });
            }
            Fate::Deliver { at, duplicated, delayed, reordered } => {
                if *duplicated {
                    self.faults.add(FaultKind::Duplicate);
                }
                if *reordered {
                    self.faults.add(FaultKind::Reorder);
                }
                if *delayed {
                    self.faults.add(FaultKind::Delay);
                }
                let (last, rest) = at.split_last().expect("a delivered packet has an arrival time");
                for &t in rest {
                    self.queue.at(t, Event::Packet { from, to, packet: packet.copy() });
                }
                self.queue.at(*last, Event::Packet { from, to, packet });
            }
        }
    }

    fn deliver(&mut self, now: Time, from: Addr, to: Addr, packet: Packet) {
        if !self.network.arrived(from, to) {
            self.trace.event(now, actor(to), "cut-in-flight", addr_code(from), 0, || {
                format!("packet from {from:?} lost: its link was cut")
            });
            return;
        }
        let window = now.0 / TICK_US;
        if self.packet_window.0 != window {
            self.packet_window = (window, 0);
        }
        self.packet_window.1 += 1;
        self.stats.packets_per_tick_max = self.stats.packets_per_tick_max.max(self.packet_window.1);
        let storm = STORM_PACKETS_PER_TICK * u64::from(self.layout.shards);
        if self.packet_window.1 > storm {
            self.fail(
                "message-storm",
                format!("more than {storm} packets delivered within one tick"),
            );
            return;
        }
        match (to, packet) {
            (Addr::Node(node), packet) => {
                if self.nodes.get(&node).is_none_or(|s| !s.up) {
                    return;
                }
                self.stats.packets += 1;
                match packet {
                    Packet::Peer { shard, from: peer, to: replica, payload, describe } => {
                        let h = hash_bytes(&payload);
                        self.trace.event(now, Actor::Node(node), "recv", peer.0, h, || {
                            format!(
                                "shard {shard} from {peer} to {replica}: {}",
                                describe.unwrap_or_default()
                            )
                        });
                        // A message for a replica the node does not carry
                        // (any more, or not yet) is dropped, as a real
                        // node drops messages for an unknown peer.
                        let here = self.nodes[&node].replicas.get(&shard).map(|r| r.id);
                        if here == Some(replica) {
                            self.with_host(node, shard, |host, fx| host.receive(peer, payload, fx));
                        }
                    }
                    Packet::Request(r) => {
                        let shard = self.request_shard(&r);
                        self.trace.event(
                            now,
                            Actor::Node(node),
                            "request",
                            r.client().0,
                            r.seq(),
                            || format!("shard {shard}: {r:?}"),
                        );
                        if self.host(node, shard).is_some() {
                            self.with_host(node, shard, |host, fx| host.request(r, fx));
                        } else {
                            let answer = Response::NotLeader { seq: r.seq(), leader: None };
                            self.send(
                                Addr::Node(node),
                                Addr::Client(r.client()),
                                Packet::Response(answer),
                            );
                        }
                    }
                    Packet::Response(_) => {}
                }
            }
            (Addr::Client(c), Packet::Response(r)) => {
                let Addr::Node(node) = from else { return };
                let index = (c.0 - 1) as usize;
                self.stats.packets += 1;
                self.trace.event(now, Actor::Client(c.0), "response", node.0, r.seq(), || {
                    format!("from {node}: {r:?}")
                });
                let nodes = self.all_nodes();
                let step = self.clients[index].on_response(now, node, r, &nodes, &mut self.history);
                self.client_step(index, step);
            }
            (Addr::Client(_), _) => {}
        }
    }

    /// The shard a request's keys live in (clients send one shard's keys).
    fn request_shard(&self, r: &Request) -> ShardId {
        let key: &[u8] = match r {
            Request::Write { op, .. } => op.key(),
            Request::Read { keys, .. } => keys.first().map_or(&[], |k| &k[..]),
        };
        ShardId(self.keyspace.shard_of(key).0)
    }

    fn client_step(
        &mut self,
        index: usize,
        step: Result<ClientStep, ringkv_lincheck::HistoryError>,
    ) {
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                self.fail("simulator", format!("the client history refused an event: {e}"));
                return;
            }
        };
        let now = self.now();
        let id = self.clients[index].id();
        if let Some(note) = step.note {
            self.trace.event(now, Actor::Client(id.0), "client", 0, 0, || note);
        }
        if let Some((to, request)) = step.send {
            self.send(Addr::Client(id), Addr::Node(to), Packet::Request(request));
        }
        if let Some(at) = step.wake_at {
            self.wake_client(index, at);
        }
    }

    // ------------------------------------------------------------ groups

    /// The replica of `shard` that leads the highest epoch, with its status.
    fn leader(&self, shard: ShardId) -> Option<(NodeId, Status)> {
        self.nodes
            .iter()
            .filter_map(|(id, s)| s.replicas.get(&shard)?.host.as_ref().map(|h| (*id, h.status())))
            .filter(|(_, st)| st.role == Role::Leader)
            .max_by_key(|(_, st)| st.epoch)
    }

    fn shard_ids(&self) -> Vec<ShardId> {
        self.checkers.keys().copied().collect()
    }

    fn target(&self, shard: ShardId) -> BTreeSet<NodeId> {
        self.placement
            .replicas(ring_shard(shard))
            .map(|rs| rs.iter().copied().map(node_of).collect())
            .unwrap_or_default()
    }

    fn change(&mut self, shard: ShardId, leader: NodeId, ops: Vec<ChangeOp>) -> bool {
        let desc = format!("shard {shard}: {ops:?}");
        let mut fx = Effects::default();
        let Some(host) = self
            .nodes
            .get_mut(&leader)
            .and_then(|s| s.replicas.get_mut(&shard))
            .and_then(|r| r.host.as_mut())
        else {
            return false;
        };
        let r = host.change_membership(MembershipChange { ops }, &mut fx);
        let (ok, stop) = match &r {
            Ok(Ok(_)) => (true, Ok(())),
            Ok(Err(_)) => (false, Ok(())),
            Err(s) => (false, Err(s.clone())),
        };
        let now = self.now();
        self.trace.event(now, Actor::World, "membership", leader.0, u64::from(ok), || {
            format!("{desc} at {leader}: {r:?}")
        });
        self.handle(leader, shard, fx, stop);
        ok
    }

    /// Makes sure `node` carries a replica of `shard`, to be added to the
    /// group (it learns the configuration from the leader).
    /// Returns its replica id.
    fn ensure_replica(&mut self, node: NodeId, shard: ShardId) -> NodeId {
        if let Some(r) = self.nodes.get(&node).and_then(|s| s.replicas.get(&shard)) {
            return r.id;
        }
        self.add_replica_slot(node, shard, None);
        self.boot_replica(node, shard);
        self.nodes.get(&node).and_then(|s| s.replicas.get(&shard)).map_or(node, |r| r.id)
    }

    // ------------------------------------------------------------ ring

    fn ring_change(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let (lo, hi) = self.layout.ring_change_us;
        let next = self.rng.range(lo, hi);
        self.queue.after(next, Event::RingChange);
        if !self.pending.is_empty() || !self.active.is_empty() {
            // One ring change at a time: the next plan starts from the
            // placement the last one reached.
            return;
        }
        let inside: BTreeSet<NodeId> = self.ring.nodes().iter().map(|n| node_of(n.id)).collect();
        let outside: Vec<NodeId> =
            self.all_nodes().into_iter().filter(|n| !inside.contains(n)).collect();
        let can_leave = inside.len() > REPLICATION as usize;
        let join = match (outside.is_empty(), can_leave) {
            (true, false) => return,
            (false, false) => true,
            (true, true) => false,
            (false, true) => self.rng.chance(1, 2),
        };
        let (new_ring, node, kind) = if join {
            let node = outside[self.rng.range(0, outside.len() as u64) as usize];
            let ring = self.ring.with_node(NodeSpec::new(ring_node(node)));
            (ring, node, FaultKind::JoinNode)
        } else {
            let inside: Vec<NodeId> = inside.into_iter().collect();
            let node = inside[self.rng.range(0, inside.len() as u64) as usize];
            (self.ring.without_node(ring_node(node)), node, FaultKind::LeaveNode)
        };
        let new_ring =
            new_ring.expect("the node joining is outside the ring, the one leaving inside");
        let placement = new_ring
            .place(&PlacementConfig::new(self.layout.shards, REPLICATION))
            .expect("the ring keeps at least REPLICATION nodes");
        let plan = MovementPlan::between(&self.placement, &placement)
            .expect("two placements of the same shards have a plan between them");
        // The ideal share of a join or a leave: R·S/N of the larger ring.
        let n = new_ring.node_count().max(self.ring.node_count()) as u64;
        let ideal_milli = u64::from(REPLICATION * self.layout.shards) * 1_000 / n;
        self.stats.replicas_moved += plan.replicas_created() as u64;
        self.stats.replicas_moved_ideal_milli += ideal_milli;
        self.faults.add(kind);
        let now = self.now();
        let steps = plan.steps().to_vec();
        self.trace.event(now, Actor::World, kind.name(), node.0, steps.len() as u64, || {
            format!(
                "{node} {} the ring: {} replicas to move (ideal {}.{:03}): {steps:?}",
                if join { "joins" } else { "leaves" },
                plan.replicas_created(),
                ideal_milli / 1_000,
                ideal_milli % 1_000
            )
        });
        for step in steps {
            let shard = ShardId(step.shard().0);
            let mv = match step {
                Step::Move { from, to, .. } => {
                    Move { shard, from: Some(node_of(from)), to: Some(node_of(to)) }
                }
                Step::Add { node, .. } => Move { shard, from: None, to: Some(node_of(node)) },
                Step::Remove { node, .. } => Move { shard, from: Some(node_of(node)), to: None },
                // Leadership is a role, not data: the groups elect whom
                // they elect, and the end check compares replica sets.
                Step::TransferLeader { .. } => continue,
            };
            self.pending.push_back(mv);
        }
        self.ring = new_ring;
        self.placement = placement;
    }

    fn mover(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        self.queue.after(MOVER_US, Event::Mover);
        self.check_removals();
        while self.active.len() < self.layout.moves_at_once as usize {
            let busy: BTreeSet<ShardId> = self.active.iter().map(|m| m.shard).collect();
            let Some(i) = self.pending.iter().position(|m| !busy.contains(&m.shard)) else { break };
            let mv = self.pending.remove(i).expect("the position is in range");
            let now = self.now();
            self.trace.event(now, Actor::World, "move-start", mv.shard.0, 0, || format!("{mv:?}"));
            self.active.push(mv);
        }
        let mut i = 0;
        while i < self.active.len() {
            let mv = self.active[i].clone();
            if self.advance(&mv) {
                self.active.remove(i);
                self.stats.moves += 1;
                let now = self.now();
                self.trace
                    .event(now, Actor::World, "move-done", mv.shard.0, 0, || format!("{mv:?}"));
            } else {
                i += 1;
            }
            if self.failure.is_some() {
                return;
            }
        }
        self.check_replication();
        self.refresh_routing();
    }

    /// Takes the next step of a move; true once it is complete.
    fn advance(&mut self, mv: &Move) -> bool {
        let shard = mv.shard;
        let Some((leader, st)) = self.leader(shard) else { return false };
        let m = &st.membership;
        if m.is_joint() {
            return false;
        }
        if let Some(node) = mv.to {
            let Some(to) = member_on(m, node) else {
                let to = self.ensure_replica(node, shard);
                self.change(shard, leader, vec![ChangeOp::AddLearner(to)]);
                return false;
            };
            if m.is_learner_only(to) {
                if self.move_bug == Some(MoveBug::RemoveBeforePromote)
                    && let Some(from) =
                        mv.from.and_then(|f| member_on(m, f)).filter(|f| m.is_voter(*f))
                {
                    self.change(shard, leader, vec![ChangeOp::Remove(from)]);
                    return false;
                }
                let matched = st.progress.iter().find(|p| p.id == to).map(|p| p.matched);
                // Nothing acknowledged yet means nothing received.
                let caught_up = matched.is_some_and(|i| {
                    i > LogIndex::ZERO && i.0 + CATCH_UP_SLACK_ENTRIES >= st.commit.0
                });
                if caught_up {
                    self.change(shard, leader, vec![ChangeOp::AddVoter(to)]);
                }
                return false;
            }
        }
        if let Some(from) = mv.from {
            if let Some(id) = member_on(m, from) {
                self.change(shard, leader, vec![ChangeOp::Remove(id)]);
                return false;
            }
            if self.nodes.get(&from).is_some_and(|s| s.replicas.contains_key(&shard)) {
                self.removals.entry((shard, from)).or_insert(None);
                return false;
            }
        }
        true
    }

    /// Drops removed replicas once a committed configuration excludes them:
    /// the leader that excluded them has committed past its last index.
    fn check_removals(&mut self) {
        let keys: Vec<(ShardId, NodeId)> = self.removals.keys().copied().collect();
        let mut done = Vec::new();
        for (shard, node) in keys {
            let Some((leader, st)) = self.leader(shard) else { continue };
            let id = self.nodes.get(&node).and_then(|s| s.replicas.get(&shard)).map(|r| r.id);
            let seen = self.removals.get_mut(&(shard, node)).expect("listed above");
            if id.is_some_and(|id| st.membership.contains(id)) {
                *seen = None;
                continue;
            }
            match *seen {
                Some((l, e, index)) if l == leader && e == st.epoch && st.commit >= index => {
                    done.push((shard, node));
                }
                Some((l, e, _)) if l == leader && e == st.epoch => {}
                _ => *seen = Some((leader, st.epoch, st.last_index)),
            }
        }
        for (shard, node) in done {
            self.drop_replica(node, shard);
        }
    }

    /// The move protocol adds before it removes: no group may ever run on
    /// fewer voters than the replication factor.
    fn check_replication(&mut self) {
        for shard in self.shard_ids() {
            let Some((leader, st)) = self.leader(shard) else { continue };
            let m = &st.membership;
            if !m.is_joint() && m.voters.len() < REPLICATION as usize {
                self.fail(
                    "move-protocol",
                    format!(
                        "shard {shard} runs on {} voters {:?} (leader {leader}), fewer than the \
                         replication factor {REPLICATION}: a replica was removed before its \
                         replacement was a voter",
                        m.voters.len(),
                        m.voters
                    ),
                );
                return;
            }
        }
    }

    /// Gives every client the shards' current replicas, as a client would
    /// read them from the metadata group.
    fn refresh_routing(&mut self) {
        for shard in self.shard_ids() {
            let nodes: Vec<NodeId> = match self.leader(shard) {
                Some((_, st)) => nodes_of(&st.membership.voters).into_iter().collect(),
                None => self.target(shard).into_iter().collect(),
            };
            for c in &mut self.clients {
                c.set_replicas(shard.0, nodes.clone());
            }
        }
    }

    // ------------------------------------------------------------ nemesis

    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, s)| s.up).map(|(id, _)| *id).collect()
    }

    fn pick(&mut self, nodes: &[NodeId]) -> Option<NodeId> {
        (!nodes.is_empty()).then(|| nodes[self.rng.range(0, nodes.len() as u64) as usize])
    }

    /// An up node, half the time one that leads some shard.
    fn pick_target(&mut self) -> Option<NodeId> {
        if self.rng.chance(1, 2) {
            let leaders: Vec<NodeId> = self
                .shard_ids()
                .into_iter()
                .filter_map(|s| self.leader(s).map(|(l, _)| l))
                .collect();
            if let Some(l) = self.pick(&leaders) {
                return Some(l);
            }
        }
        let up = self.up_nodes();
        self.pick(&up)
    }

    fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let (lo, hi) = self.scenario.faults.nemesis_interval_us;
        let next = self.rng.range(lo, hi);
        self.queue.after(next, Event::Nemesis);
        let Some(kind) = self.scenario.faults.pick(&mut self.rng) else { return };
        let done = match kind {
            FaultKind::Partition | FaultKind::AsymmetricPartition => self.partition(kind),
            FaultKind::Isolate => match self.pick_target() {
                Some(node) => {
                    self.isolate(node);
                    true
                }
                None => false,
            },
            FaultKind::Clog => self.clog(),
            FaultKind::Crash => match self.pick_target() {
                Some(n) => {
                    self.crash_node(n, "crashed by the nemesis");
                    true
                }
                None => false,
            },
            FaultKind::TransferLeader => self.transfer_leader(),
            // Disk faults, and the single-group membership driver (the
            // ring changes replace it here), are left to single-shard runs.
            _ => false,
        };
        if done {
            self.faults.add(kind);
        }
    }

    fn isolate(&mut self, node: NodeId) {
        self.network.heal();
        for other in self.all_nodes() {
            if other != node {
                self.network.set_cut(node, other, true);
                self.network.set_cut(other, node, true);
            }
        }
        self.schedule_link_heal("isolate", format!("{node} cut off"));
    }

    fn partition(&mut self, kind: FaultKind) -> bool {
        let mut nodes = self.all_nodes();
        for i in (1..nodes.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            nodes.swap(i, j);
        }
        if nodes.len() < 2 {
            return false;
        }
        let split = self.rng.range(1, nodes.len() as u64) as usize;
        let (a, b) = nodes.split_at(split);
        let symmetric = kind == FaultKind::Partition;
        self.network.heal();
        for &x in a {
            for &y in b {
                self.network.set_cut(x, y, true);
                if symmetric {
                    self.network.set_cut(y, x, true);
                }
            }
        }
        let desc = format!("{a:?} {} {b:?}", if symmetric { "|" } else { "-/->" });
        self.schedule_link_heal(kind.name(), desc);
        true
    }

    fn schedule_link_heal(&mut self, what: &'static str, desc: String) {
        self.link_episode += 1;
        let (lo, hi) = self.scenario.partition_us;
        let lasts = self.rng.range(lo, hi);
        let now = self.now();
        self.trace.event(now, Actor::World, what, self.link_episode, lasts, || {
            format!("{desc} for {}ms", lasts / MICROS_PER_MILLI)
        });
        self.queue.after(lasts, Event::HealLinks { episode: self.link_episode });
    }

    fn clog(&mut self) -> bool {
        let Some(node) = self.pick_target() else { return false };
        let (lo, hi) = self.scenario.clog_us;
        let until = self.now().plus(self.rng.range(lo, hi));
        let both = self.rng.chance(1, 2);
        for other in self.all_nodes() {
            if other != node {
                self.network.clog(node, other, until);
                if both {
                    self.network.clog(other, node, until);
                }
            }
        }
        let now = self.now();
        self.trace.event(now, Actor::Node(node), "clog", until.0, u64::from(both), || {
            format!("links {} clogged until {until}", if both { "both ways" } else { "outbound" })
        });
        true
    }

    fn transfer_leader(&mut self) -> bool {
        let shards = self.shard_ids();
        let shard = shards[self.rng.range(0, shards.len() as u64) as usize];
        let Some((leader, st)) = self.leader(shard) else { return false };
        let others: Vec<NodeId> =
            st.membership.voters.iter().copied().filter(|v| *v != leader).collect();
        let Some(to) = self.pick(&others) else { return false };
        let mut fx = Effects::default();
        let Some(host) = self
            .nodes
            .get_mut(&leader)
            .and_then(|s| s.replicas.get_mut(&shard))
            .and_then(|r| r.host.as_mut())
        else {
            return false;
        };
        let r = host.transfer_leadership(to, &mut fx);
        let ok = matches!(r, Ok(Ok(())));
        let now = self.now();
        self.trace.event(now, Actor::World, "transfer", to.0, u64::from(ok), || {
            format!("asked {leader} to hand shard {shard}'s leadership to {to}: {r:?}")
        });
        self.handle(leader, shard, fx, r.map(|_| ()));
        ok
    }

    // ------------------------------------------------------------ phases

    fn heal(&mut self) {
        self.phase = Phase::Liveness;
        self.heal_at = self.now();
        self.link_episode += 1;
        self.network.heal();
        let mut params = self.network.params();
        params.loss_ppm = 0;
        params.duplicate_ppm = 0;
        params.delay_ppm = 0;
        params.reorder = false;
        self.network.set_params(params);
        let down: Vec<NodeId> =
            self.nodes.iter().filter(|(_, s)| !s.up).map(|(id, _)| *id).collect();
        let now = self.now();
        self.trace.event(now, Actor::World, "heal", 0, 0, || {
            format!("all faults healed; restarting {down:?}")
        });
        for node in down {
            self.queue.after(HEALED_RESTART_US, Event::Restart { node });
        }
        self.queue.after(PROBE_US, Event::Probe);
        self.queue.after(LIVENESS_TICKS_MAX * TICK_US, Event::LivenessDeadline);
    }

    fn probe(&mut self) {
        match self.phase {
            Phase::Liveness => {
                if self.liveness_met() {
                    let now = self.now();
                    self.stats.liveness_ticks = (now.0 - self.heal_at.0).div_ceil(TICK_US);
                    self.trace.event(now, Actor::World, "live", 0, 0, || {
                        "every shard placed and caught up; draining clients".into()
                    });
                    self.phase = Phase::Drain;
                    for c in &mut self.clients {
                        c.drain();
                    }
                    let drain = self.scenario.client.op_timeout_us + TICK_US;
                    self.queue.after(drain, Event::DrainDeadline);
                }
            }
            Phase::Drain => {
                if self.clients.iter().all(|c| !c.busy()) {
                    self.settle();
                }
            }
            Phase::Settle => {
                if self.settled() {
                    self.phase = Phase::Done;
                }
            }
            Phase::Safety | Phase::Done => return,
        }
        self.queue.after(PROBE_US, Event::Probe);
    }

    fn settle(&mut self) {
        self.phase = Phase::Settle;
        self.queue.after(SETTLE_TICKS_MAX * TICK_US, Event::SettleDeadline);
    }

    /// The applied index of replica `id` of `shard`, if it is up.
    fn applied(&self, id: NodeId, shard: ShardId) -> Option<LogIndex> {
        let r = self.nodes.get(&node_of_replica(id))?.replicas.get(&shard)?;
        (r.id == id).then(|| r.host.as_ref().map(|h| h.applied())).flatten()
    }

    /// Every move done; every shard led, configured as the target
    /// placement, and its members have applied what its leader had logged
    /// when first seen after healing.
    fn liveness_met(&mut self) -> bool {
        if !self.pending.is_empty() || !self.active.is_empty() {
            return false;
        }
        let mut met = true;
        for shard in self.shard_ids() {
            let Some((_, st)) = self.leader(shard) else {
                met = false;
                continue;
            };
            let target = *self.liveness_targets.entry(shard).or_insert(st.last_index);
            let m = &st.membership;
            let placed =
                !m.is_joint() && m.learners.is_empty() && nodes_of(&m.voters) == self.target(shard);
            met &= placed
                && m.voters.iter().all(|v| self.applied(*v, shard).is_some_and(|a| a >= target));
        }
        met
    }

    fn settled(&self) -> bool {
        self.shard_ids().into_iter().all(|shard| {
            let Some((_, st)) = self.leader(shard) else { return false };
            let last = self.checkers[&shard].durability.last_acked();
            st.membership
                .members()
                .iter()
                .all(|m| self.applied(*m, shard).is_some_and(|a| a >= last))
        })
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for shard in self.shard_ids() {
            out.push_str(&format!("shard {shard}: target {:?}\n", self.target(shard)));
            for (id, slot) in &self.nodes {
                let Some(r) = slot.replicas.get(&shard) else { continue };
                let line = match &r.host {
                    Some(h) => {
                        let st = h.status();
                        format!(
                            "  {id}: {:?} epoch {} leader {:?} commit {} applied {} last {} voters {:?} learners {:?}",
                            st.role,
                            st.epoch,
                            st.leader.map(|l| l.0),
                            st.commit,
                            h.applied(),
                            st.last_index,
                            st.membership.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
                            st.membership.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
                        )
                    }
                    None => format!("  {id}: down"),
                };
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str(&format!("moves pending {:?}, running {:?}\n", self.pending, self.active));
        out
    }

    fn finish(mut self) -> RunReport {
        if self.failure.is_none() {
            self.final_checks();
        }
        let s = &mut self.stats;
        for c in self.checkers.values() {
            s.elections += c.election.elections();
            s.committed += c.completeness.committed();
            s.acked += c.durability.acked();
        }
        s.ops = self.history.len() as u64;
        for op in self.history.ops() {
            match op.outcome {
                Outcome::Ok(_) => s.ops_ok += 1,
                Outcome::Unknown => s.ops_unknown += 1,
                Outcome::Fail => {}
            }
        }
        RunReport {
            seed: self.seed,
            engine: self.engine,
            trace_hash: self.trace.hash(),
            faults: self.faults,
            stats: self.stats,
            ended_at: self.queue.now(),
            failure: self.failure,
            trace: self.trace.take_lines(),
        }
    }

    fn final_checks(&mut self) {
        for shard in self.shard_ids() {
            let Some((leader, st)) = self.leader(shard) else {
                self.fail("placement", format!("shard {shard} has no leader at the end"));
                return;
            };
            let m = &st.membership;
            let target = self.target(shard);
            if m.is_joint() || !m.learners.is_empty() || nodes_of(&m.voters) != target {
                let what = format!(
                    "shard {shard}'s configuration at leader {leader} is voters {:?} learners {:?}, \
                     not the target placement {target:?}",
                    m.voters, m.learners
                );
                self.fail("placement", what);
                return;
            }
            for member in m.members() {
                let node = node_of_replica(member);
                let Some(r) = self.nodes.get(&node).and_then(|s| s.replicas.get(&shard)) else {
                    continue;
                };
                if r.id != member {
                    continue;
                }
                let (id, applied) = (r.checker_id, r.host.as_ref().map(|h| h.applied()));
                if let Some(applied) = applied
                    && let Err(what) = self
                        .checkers
                        .get_mut(&shard)
                        .expect("every shard has checkers")
                        .durability
                        .at_end(id, applied)
                {
                    self.fail("durability-at-end", format!("shard {shard}: {what}"));
                    return;
                }
            }
        }
        match linearizability::check(&self.history) {
            Ok(linearizability::Verdict::Linearizable) => {}
            Ok(linearizability::Verdict::Undecided(why)) => {
                self.stats.lincheck_undecided = true;
                let now = self.now();
                self.trace.event(now, Actor::World, "lincheck", 0, 0, || why);
            }
            Err(what) => self.fail("linearizability", what),
        }
    }
}

fn describe(o: &Observation) -> (&'static str, String) {
    match o {
        Observation::Booted { applied, commit, .. } => {
            ("boot", format!("applied {applied} commit {commit}"))
        }
        Observation::Role { role, epoch, leader } => (
            "role",
            format!(
                "{role:?} epoch {epoch} leader {}",
                leader.map_or("none".into(), |l| l.to_string())
            ),
        ),
        Observation::Wrote { entries, .. } => {
            let first = entries.first().map_or(0, |e| e.0.0);
            let last = entries.last().map_or(0, |e| e.0.0);
            ("write", format!("entries {first}..={last}"))
        }
        Observation::Committed { commit, at, .. } => {
            ("commit", format!("commit {commit} in epoch {at}"))
        }
        Observation::Applied { index, epoch, .. } => ("apply", format!("{index}@{epoch}")),
        Observation::Restored { index, .. } => ("restore", format!("snapshot at {index}")),
        Observation::Acked { client, seq, index, .. } => {
            ("ack", format!("client {} op {seq} done as {index}", client.0))
        }
        Observation::Compacted { index } => ("compact", format!("snapshot at {index}")),
        Observation::ReadAsked { id } => ("read-asked", format!("read {id} asked")),
        Observation::ReadConfirmed { id, index } => {
            ("read-index", format!("read {id} confirmed at {index}"))
        }
        Observation::Violation { what } => ("violation", what.clone()),
    }
}

fn actor(a: Addr) -> Actor {
    match a {
        Addr::Node(n) => Actor::Node(n),
        Addr::Client(c) => Actor::Client(c.0),
    }
}

fn addr_code(a: Addr) -> u64 {
    match a {
        Addr::Node(n) => n.0,
        Addr::Client(c) => (1 << 32) | c.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_in_range_and_leave_room_to_join() {
        for seed in 0..500 {
            let l = Layout::draw(seed);
            assert!((SHARDS_MIN..=SHARDS_MAX).contains(&l.shards));
            assert!((NODES_MIN..=NODES_MAX).contains(&l.nodes));
            assert!(l.ring_nodes >= u64::from(REPLICATION) && l.ring_nodes < l.nodes);
            assert!((1..=MOVES_AT_ONCE_MAX).contains(&l.moves_at_once));
            assert!(l.ring_change_us.0 < l.ring_change_us.1);
            assert_eq!(Layout::draw(seed), l);
        }
    }

    #[test]
    fn move_bug_names_round_trip() {
        for b in MoveBug::ALL {
            assert_eq!(b.name().parse::<MoveBug>(), Ok(b));
        }
        assert!("nope".parse::<MoveBug>().is_err());
    }
}
