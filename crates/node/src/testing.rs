//! A deterministic multi-node harness: real [`Node`]s on [`SimDisk`]s,
//! an in-memory network with loss and partitions, one manual clock.
//!
//! Everything runs on the calling thread and every random choice comes
//! from the seed, so a scenario replays exactly. This crate's tests use it;
//! the simulator may reuse it (feature `testing`).
//!
//! The cluster is generic over the consensus engine: `Cluster<RaftEngine>`
//! (the default, built by [`Cluster::new`]) or `Cluster<PaxosEngine>`
//! (built by [`Cluster::with_engine`]), so one scenario runs on both.
//!
//! One [`Cluster::step`] is one tick of time: every running node, in id
//! order, receives the frames queued for it and runs its rounds; reads it
//! declares ready are executed at once on a fresh view; then the clock
//! advances by one tick interval.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::{DetRng, NodeId, Role, ShardId};
use ringkv_storage::disk::CrashMode;
use ringkv_storage::mvcc::{Revision, StoreOptions};
use ringkv_storage::{SimDisk, WalOptions};

use crate::{
    Bootstrap, Clock, Completion, Engine, InitialMember, Node, NodeConfig, NodeError, RaftEngine,
    Reply, Request, Token, Transport, Unreachable, WatchEvents, execute_read, member_id,
};

/// Rounds a node runs in one step at most while it reports more work.
const ROUNDS_PER_STEP_MAX: usize = 4;

/// Steps [`Cluster::wait_leader_among`] waits.
const WAIT_STEPS: usize = 300;

/// Segment size of test WALs: small, so segments rotate and compaction
/// deletes files.
pub const TEST_SEGMENT_BYTES: u64 = 64 << 10;

/// A clock the test moves by hand; clones share the time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<Mutex<Duration>>,
}

impl ManualClock {
    fn lock(&self) -> MutexGuard<'_, Duration> {
        self.now.lock().expect("clock lock poisoned")
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.lock()
    }
}

#[derive(Debug)]
struct NetState {
    /// Frames per destination: the step they may be delivered at, the
    /// sender, the frame.
    queues: BTreeMap<NodeId, VecDeque<(u64, NodeId, Bytes)>>,
    /// The network's step counter (advanced by [`Cluster::step`]).
    now: u64,
    /// Frames delayed at random, per million, by up to `delay_steps_max`.
    delay_ppm: u64,
    delay_steps_max: u64,
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes that are down: frames to them are lost.
    down: BTreeSet<NodeId>,
    rng: DetRng,
    /// Frames lost at random, per million.
    loss_ppm: u64,
    sent: u64,
    lost: u64,
}

/// An in-memory network: a queue per node, partitions, random loss.
#[derive(Clone, Debug)]
pub struct Network {
    state: Arc<Mutex<NetState>>,
}

impl Network {
    /// An empty network whose random loss draws from `seed`.
    pub fn new(seed: u64) -> Network {
        Network {
            state: Arc::new(Mutex::new(NetState {
                queues: BTreeMap::new(),
                now: 0,
                delay_ppm: 0,
                delay_steps_max: 0,
                cut: BTreeSet::new(),
                down: BTreeSet::new(),
                rng: DetRng::new(seed),
                loss_ppm: 0,
                sent: 0,
                lost: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().expect("network lock poisoned")
    }

    /// Loses `ppm` frames per million at random.
    pub fn set_loss_ppm(&self, ppm: u64) {
        self.lock().loss_ppm = ppm;
    }

    /// Delays `ppm` frames per million by 1 to `steps_max` steps at random,
    /// so frames overtake each other.
    pub fn set_delay(&self, ppm: u64, steps_max: u64) {
        let mut st = self.lock();
        st.delay_ppm = ppm;
        st.delay_steps_max = steps_max;
    }

    fn advance(&self) {
        self.lock().now += 1;
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut st = self.lock();
        for &x in a {
            for &y in b {
                st.cut.insert((x, y));
                st.cut.insert((y, x));
            }
        }
    }

    /// Cuts the link from `from` to `to` only; frames in flight on it are
    /// lost too.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        let mut st = self.lock();
        st.cut.insert((from, to));
        if let Some(q) = st.queues.get_mut(&to) {
            q.retain(|(_, sender, _)| *sender != from);
        }
    }

    /// Cuts every link of `node`.
    pub fn isolate(&self, node: NodeId, all: &[NodeId]) {
        self.partition(&[node], all);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn set_down(&self, node: NodeId, down: bool) {
        let mut st = self.lock();
        if down {
            st.down.insert(node);
            st.queues.remove(&node);
        } else {
            st.down.remove(&node);
        }
    }

    /// The frames for `node` due now, in the order they became due.
    fn take(&self, node: NodeId) -> Vec<Bytes> {
        let mut st = self.lock();
        let now = st.now;
        let Some(q) = st.queues.get_mut(&node) else { return Vec::new() };
        let mut due: Vec<(u64, usize, Bytes)> = Vec::new();
        let mut later = VecDeque::new();
        for (i, (at, from, frame)) in q.drain(..).enumerate() {
            if at <= now {
                due.push((at, i, frame));
            } else {
                later.push_back((at, from, frame));
            }
        }
        *q = later;
        due.sort_by_key(|(at, i, _)| (*at, *i));
        due.into_iter().map(|(_, _, f)| f).collect()
    }

    /// Frames sent and frames lost so far.
    pub fn counters(&self) -> (u64, u64) {
        let st = self.lock();
        (st.sent, st.lost)
    }
}

/// A node's end of a [`Network`].
#[derive(Clone, Debug)]
pub struct MemTransport {
    from: NodeId,
    net: Network,
}

impl Transport for MemTransport {
    fn send(&mut self, to: NodeId, frame: Bytes) -> Result<(), Unreachable> {
        let mut st = self.net.lock();
        st.sent += 1;
        let ppm = st.loss_ppm;
        let lost = st.down.contains(&to)
            || st.cut.contains(&(self.from, to))
            || (ppm > 0 && st.rng.chance(ppm, 1_000_000));
        if lost {
            // Loss is silent, as on a real network.
            st.lost += 1;
            return Ok(());
        }
        let mut at = st.now;
        let (delay_ppm, max) = (st.delay_ppm, st.delay_steps_max);
        if delay_ppm > 0 && max > 0 && st.rng.chance(delay_ppm, 1_000_000) {
            at += st.rng.range(1, max + 1);
        }
        st.queues.entry(to).or_default().push_back((at, self.from, frame));
        Ok(())
    }
}

/// The node type the harness runs.
pub type TestNode<E = RaftEngine> = Node<E, SimDisk, MemTransport, ManualClock>;

/// The configuration of test member `i` (1-based) of an `n`-member cluster.
pub fn test_config(i: usize, n: usize, seed: u64) -> NodeConfig {
    let members = (1..=n)
        .map(|j| InitialMember {
            name: format!("n{j}"),
            peer_urls: vec![format!("http://n{j}:2380")],
        })
        .collect();
    let mut cfg = NodeConfig::new(
        format!("n{i}"),
        format!("test-{seed}"),
        vec![format!("http://n{i}:2380")],
        vec![format!("http://n{i}:2379")],
        Bootstrap::NewCluster { members },
    );
    cfg.seed = seed.wrapping_add(i as u64);
    cfg.wal = WalOptions {
        segment_bytes: TEST_SEGMENT_BYTES,
        cache_bytes_per_shard: 64 << 10,
        ..WalOptions::default()
    };
    cfg.store = StoreOptions { cache_bytes: 1 << 20, ..StoreOptions::default() };
    cfg
}

/// Runs `f` over the config of every member (to change limits in a test).
pub type ConfigEdit<'a> = &'a dyn Fn(&mut NodeConfig);

/// A cluster of nodes in one process, running engine `E`.
pub struct Cluster<E: Engine = RaftEngine> {
    /// The shared clock.
    pub clock: ManualClock,
    /// The network.
    pub net: Network,
    configs: BTreeMap<NodeId, NodeConfig>,
    disks: BTreeMap<NodeId, SimDisk>,
    nodes: BTreeMap<NodeId, TestNode<E>>,
    next_token: u64,
    results: BTreeMap<(NodeId, Token), Result<Reply, NodeError>>,
    /// Watch events each node emitted, in order.
    pub events: BTreeMap<NodeId, Vec<WatchEvents>>,
    /// Steps taken.
    pub steps: u64,
    /// What the network delivered so far.
    pub traffic: Traffic,
    /// Data shards' snapshot data bytes delivered, by sender, as
    /// (clock reading, running total) at every step it changed: what
    /// `--move-bytes-per-second` paces, seen from the network.
    pub snapshot_bytes_from: BTreeMap<NodeId, Vec<(Duration, u64)>>,
}

/// Traffic the network delivered to running nodes, counted as frames are
/// taken from it (frames lost or queued for a crashed node do not count).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames delivered.
    pub frames: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Consensus engine messages they carried (every shard's).
    pub consensus_messages: u64,
    /// Node-layer messages they carried (forwarded requests, replies,
    /// node-level heartbeats).
    pub node_messages: u64,
}

impl Traffic {
    /// The traffic since `earlier`, a reading of the same counters.
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            frames: self.frames - earlier.frames,
            bytes: self.bytes - earlier.bytes,
            consensus_messages: self.consensus_messages - earlier.consensus_messages,
            node_messages: self.node_messages - earlier.node_messages,
        }
    }
}

impl<E: Engine> std::fmt::Debug for Cluster<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("engine", &E::NAME)
            .field("nodes", &self.nodes.keys())
            .finish_non_exhaustive()
    }
}

impl Cluster<RaftEngine> {
    /// A new `n`-member Raft cluster with the test defaults.
    ///
    /// # Panics
    /// If a node fails to open.
    pub fn new(n: usize, seed: u64) -> Cluster {
        Cluster::with_config(n, seed, &|_| {})
    }

    /// A new `n`-member Raft cluster, each config edited by `edit`.
    ///
    /// # Panics
    /// If a node fails to open.
    pub fn with_config(n: usize, seed: u64, edit: ConfigEdit<'_>) -> Cluster {
        Cluster::with_engine(n, seed, edit)
    }
}

impl<E: Engine> Cluster<E> {
    /// A new `n`-member cluster running engine `E`, each config edited by
    /// `edit`.
    ///
    /// # Panics
    /// If a node fails to open.
    pub fn with_engine(n: usize, seed: u64, edit: ConfigEdit<'_>) -> Cluster<E> {
        let mut c = Cluster {
            clock: ManualClock::default(),
            net: Network::new(seed ^ 0x6e65_7477_6f72_6b00),
            configs: BTreeMap::new(),
            disks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            next_token: 1,
            results: BTreeMap::new(),
            events: BTreeMap::new(),
            steps: 0,
            traffic: Traffic::default(),
            snapshot_bytes_from: BTreeMap::new(),
        };
        for i in 1..=n {
            let mut cfg = test_config(i, n, seed);
            edit(&mut cfg);
            let id = member_id(&cfg.cluster_token, &cfg.name, &cfg.peer_urls);
            c.disks.insert(id, SimDisk::new(seed.wrapping_mul(31).wrapping_add(i as u64)));
            c.configs.insert(id, cfg);
            c.start(id).expect("a fresh node opens");
        }
        c
    }

    /// Adds a node that joins as `id` (already added through MemberAdd).
    ///
    /// # Errors
    /// The node fails to open.
    pub fn add_joining(&mut self, id: NodeId, mut cfg: NodeConfig) -> Result<(), NodeError> {
        cfg.bootstrap = Bootstrap::Join { id };
        let seed = cfg.seed;
        self.disks.insert(id, SimDisk::new(seed.wrapping_mul(977)));
        self.configs.insert(id, cfg);
        self.start(id)
    }

    fn start(&mut self, id: NodeId) -> Result<(), NodeError> {
        let cfg = self.configs.get(&id).expect("known node").clone();
        let disk = self.disks.get(&id).expect("known node").clone();
        let transport = MemTransport { from: id, net: self.net.clone() };
        self.net.set_down(id, false);
        let node = Node::open(cfg, disk, transport, self.clock.clone())?;
        assert_eq!(node.id(), id, "the node derived another id than the harness");
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Every member's id (running or not), ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.configs.keys().copied().collect()
    }

    /// The running nodes' ids, ascending.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// A running node.
    ///
    /// # Panics
    /// If `id` is not running.
    pub fn node(&self, id: NodeId) -> &TestNode<E> {
        self.nodes.get(&id).expect("node is running")
    }

    /// A running node, mutably.
    ///
    /// # Panics
    /// If `id` is not running.
    pub fn node_mut(&mut self, id: NodeId) -> &mut TestNode<E> {
        self.nodes.get_mut(&id).expect("node is running")
    }

    /// The disk of a node.
    ///
    /// # Panics
    /// If `id` is unknown.
    pub fn disk(&self, id: NodeId) -> &SimDisk {
        self.disks.get(&id).expect("known node")
    }

    /// The configuration of a node.
    ///
    /// # Panics
    /// If `id` is unknown.
    pub fn config(&self, id: NodeId) -> &NodeConfig {
        self.configs.get(&id).expect("known node")
    }

    /// The configuration of a node, to change before it restarts.
    ///
    /// # Panics
    /// If `id` is unknown.
    pub fn config_mut(&mut self, id: NodeId) -> &mut NodeConfig {
        self.configs.get_mut(&id).expect("known node")
    }

    /// One tick of time (see the module docs).
    pub fn step(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            for frame in self.net.take(id) {
                self.traffic.frames += 1;
                self.traffic.bytes += frame.len() as u64;
                if let Ok(f) = crate::PeerFrame::<E::Message>::from_bytes(frame.clone()) {
                    self.traffic.consensus_messages += f.messages.len() as u64;
                    self.traffic.node_messages += f.node_messages.len() as u64;
                    let snapshot_bytes: u64 = f
                        .messages
                        .iter()
                        .filter(|m| m.shard != crate::META_SHARD)
                        .filter_map(|m| E::snapshot_chunk(&m.body))
                        .map(|c| c.bytes)
                        .sum();
                    if snapshot_bytes > 0 {
                        let now = self.clock.now();
                        let totals = self.snapshot_bytes_from.entry(f.from).or_default();
                        let total = totals.last().map_or(0, |&(_, t)| t) + snapshot_bytes;
                        match totals.last_mut() {
                            Some(last) if last.0 == now => last.1 = total,
                            _ => totals.push((now, total)),
                        }
                    }
                }
                // A full inbox drops frames, as a network would.
                let _ = self.node_mut(id).receive(frame);
            }
            for _ in 0..ROUNDS_PER_STEP_MAX {
                let out = self.node_mut(id).run_round();
                self.collect(id, out.completions);
                self.events.entry(id).or_default().extend(out.events);
                if !out.more {
                    break;
                }
            }
        }
        let tick =
            self.configs.values().next().map_or(Duration::from_millis(100), |c| c.tick_interval);
        self.clock.advance(tick);
        self.net.advance();
        self.steps += 1;
    }

    fn collect(&mut self, id: NodeId, completions: Vec<Completion>) {
        for c in completions {
            match c {
                Completion::Done { token, result, .. } => {
                    self.results.insert((id, token), result);
                }
                Completion::ReadReady { token, shard, read, auth_revision, .. } => {
                    let store = Arc::clone(self.node(id).store());
                    let result = store
                        .read()
                        .map_err(NodeError::from)
                        .and_then(|view| execute_read(&view, shard, &read, auth_revision));
                    self.results.insert((id, token), result);
                }
            }
        }
    }

    /// Takes `steps` steps.
    pub fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Steps until `done` holds (checked before each step); returns whether
    /// it did within `max_steps`.
    pub fn run_until(
        &mut self,
        max_steps: usize,
        mut done: impl FnMut(&Cluster<E>) -> bool,
    ) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// The running node that leads with the highest term, if any (a node
    /// stopped after a failure or its removal leads nothing).
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.stopped().is_none())
            .filter_map(|(&id, n)| {
                let st = n.replica_status(n.meta_shard())?;
                (st.role == Role::Leader).then_some((st.epoch, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Steps until a leader is elected and every running node knows it
    /// (but stopped ones, which follow nobody).
    ///
    /// # Panics
    /// If none is within `max_steps`.
    pub fn wait_leader(&mut self, max_steps: usize) -> NodeId {
        let ok = self.run_until(max_steps, |c| {
            c.leader().is_some_and(|l| {
                c.nodes.values().filter(|n| n.stopped().is_none()).all(|n| n.leader() == Some(l))
            })
        });
        assert!(ok, "no leader known to every running node after {max_steps} steps");
        self.leader().expect("checked above")
    }

    /// Steps until one of `among` leads and all of them know it.
    ///
    /// # Panics
    /// If none does within a few election timeouts.
    pub fn wait_leader_among(&mut self, among: &[NodeId]) -> NodeId {
        let among = among.to_vec();
        let ok = self.run_until(WAIT_STEPS, |c| {
            c.leader().is_some_and(|l| {
                among.contains(&l) && among.iter().all(|id| c.node(*id).leader() == Some(l))
            })
        });
        assert!(ok, "no leader among {among:?}");
        self.leader().expect("checked above")
    }

    /// Submits `request` on node `on`; the answer is collected by later steps.
    ///
    /// # Panics
    /// If `on` is not running or refuses the request at once.
    pub fn submit(&mut self, on: NodeId, request: Request) -> Token {
        self.submit_as(on, request, crate::Credential::Anonymous)
    }

    /// Submits `request` on `on` with `credential`; returns its token.
    ///
    /// # Panics
    /// If the node refuses it (a full queue).
    pub fn submit_as(
        &mut self,
        on: NodeId,
        request: Request,
        credential: crate::Credential,
    ) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.node_mut(on).submit_as(token, request, credential).expect("node accepts the request");
        token
    }

    /// The answer to `token` on `on`, if it arrived (taken).
    pub fn take_result(&mut self, on: NodeId, token: Token) -> Option<Result<Reply, NodeError>> {
        self.results.remove(&(on, token))
    }

    /// Submits and steps until the answer arrives.
    ///
    /// # Panics
    /// If no answer arrives within `max_steps`.
    pub fn call(
        &mut self,
        on: NodeId,
        request: Request,
        max_steps: usize,
    ) -> Result<Reply, NodeError> {
        self.call_as(on, request, crate::Credential::Anonymous, max_steps)
    }

    /// Submits with `credential` and steps until the answer arrives.
    ///
    /// # Panics
    /// If no answer arrives within `max_steps`.
    pub fn call_as(
        &mut self,
        on: NodeId,
        request: Request,
        credential: crate::Credential,
        max_steps: usize,
    ) -> Result<Reply, NodeError> {
        let token = self.submit_as(on, request, credential);
        for _ in 0..max_steps {
            if let Some(r) = self.take_result(on, token) {
                return r;
            }
            self.step();
        }
        self.take_result(on, token).unwrap_or_else(|| panic!("no answer within {max_steps} steps"))
    }

    /// Submits a KV request for data shard `shard` on `on`
    /// ([`Node::submit_to`]) and steps until the answer arrives.
    ///
    /// # Panics
    /// If the node refuses it at once (use [`Node::submit_to`] to see why)
    /// or no answer arrives within `max_steps`.
    pub fn call_to(
        &mut self,
        on: NodeId,
        shard: ShardId,
        request: Request,
        max_steps: usize,
    ) -> Result<Reply, NodeError> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.node_mut(on)
            .submit_to(token, shard, request, crate::Credential::Anonymous)
            .expect("node accepts the request");
        for _ in 0..max_steps {
            if let Some(r) = self.take_result(on, token) {
                return r;
            }
            self.step();
        }
        self.take_result(on, token).unwrap_or_else(|| panic!("no answer within {max_steps} steps"))
    }

    /// The running node that leads `shard` with the highest term, if any.
    pub fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.stopped().is_none())
            .filter_map(|(&id, n)| {
                let st = n.replica_status(shard)?;
                (st.role == Role::Leader).then_some((st.epoch, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Crashes a node: unsynced data on its disk is lost or torn at random
    /// and its process is gone.
    pub fn crash(&mut self, id: NodeId) {
        self.crash_with(id, CrashMode::Random);
    }

    /// Crashes a node, keeping as much unsynced data as `mode` says.
    pub fn crash_with(&mut self, id: NodeId, mode: CrashMode) {
        self.disks.get(&id).expect("known node").crash_with(mode);
        // Dropped after the crash: its handles are stale, so nothing more
        // reaches the disk (as after kill -9).
        self.nodes.remove(&id);
        self.net.set_down(id, true);
    }

    /// Restarts a crashed node from its disk.
    ///
    /// # Errors
    /// The node fails to open.
    pub fn restart(&mut self, id: NodeId) -> Result<(), NodeError> {
        self.start(id)
    }

    /// The data shard's HashKV on a running node, at its current revision.
    ///
    /// # Panics
    /// If the store fails.
    pub fn hash_kv(&self, id: NodeId) -> (u32, Revision) {
        let view = self.node(id).store().read().expect("store reads");
        let h = view.hash_kv(crate::DATA_SHARD, Revision::ZERO).expect("hash");
        (h.hash, h.revision)
    }

    /// The data shard's whole-state hash on a running node.
    ///
    /// # Panics
    /// If the store fails.
    pub fn hash(&self, id: NodeId) -> u32 {
        self.node(id).store().read().expect("store reads").hash(crate::DATA_SHARD).expect("hash")
    }
}
