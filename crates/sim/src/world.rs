//! The simulated world of one run: nodes (hosts over simulated disks), the
//! network, clients, the nemesis that injects faults, and the checkers, all
//! driven by one event queue in virtual time.
//!
//! A run has three phases:
//!
//! 1. **Safety** (`Scenario::safety_us`): the workload runs while the
//!    nemesis injects the seed's fault mix. Every observation is checked as
//!    it happens.
//! 2. **Liveness**: everything heals at once — links restored, per-packet
//!    faults off, disk faults cleared, crashed nodes restarted. Within
//!    [`LIVENESS_TICKS_MAX`] ticks a write invoked after healing must be
//!    acknowledged and applied by every member of the leader's
//!    configuration.
//! 3. **Drain**: clients stop starting operations; those in flight finish
//!    or time out. Then the final durability check and the linearizability
//!    check of the whole client history.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_consensus::{
    ChangeOp, DetRng, Epoch, LogIndex, Membership, MembershipChange, NodeId, Role, Status,
};
use ringkv_lincheck::{History, Outcome};
use ringkv_storage::SimDisk;
use ringkv_storage::disk::{FaultKind as DiskFault, FaultOp, FaultRates};

use crate::checkers::wal_recovery::{self, DurableState};
use crate::checkers::{self, Checkers, linearizability};
use crate::client::{Client, ClientStep};
use crate::engine::{EngineOptions, PlantedBug};
use crate::faults::{FaultCounts, FaultKind};
use crate::host::{BootError, Effects, Host, HostSpec, Observation, Outgoing, Stopped};
use crate::kv::ClientId;
use crate::network::{Addr, Fate, Network};
use crate::protocol::{Request, Response};
use crate::scenario::{ELECTION_TICKS, NODES_MAX, Scenario, TICK_US, VOTERS_MAX, VOTERS_MIN};
use crate::time::{EventQueue, MICROS_PER_MILLI, Time};
use crate::trace::{Actor, Trace, hash_bytes, mix};

/// Ticks the cluster has after healing to elect a leader and commit and
/// apply a new write on every member: 30 election timeouts, room for
/// restarts, pre-vote rounds, a snapshot catch-up and client retries (the
/// slowest of 26,000 seeds needed 150 ticks).
pub const LIVENESS_TICKS_MAX: u64 = 30 * ELECTION_TICKS as u64;
/// How often the liveness phase checks its goal.
const PROBE_US: u64 = 10 * MICROS_PER_MILLI;
/// How soon a node stopped after healing restarts.
const HEALED_RESTART_US: u64 = MICROS_PER_MILLI;

/// Most delay before the survivors of a crash learn that its connections
/// closed (a killed process's sockets are closed by its kernel at once;
/// the peers' transports notice on their next read).
const CRASH_HINT_US_MAX: u64 = 2 * MICROS_PER_MILLI;
/// Pause before retrying a boot that failed on an I/O error.
const BOOT_RETRY_US: u64 = 20 * MICROS_PER_MILLI;
/// Ticks the drained cluster has to bring every member's state machine up
/// to the last acknowledged write before the final checks.
pub const SETTLE_TICKS_MAX: u64 = 10 * ELECTION_TICKS as u64;
/// A learner is promoted this long after it was added.
const PROMOTE_DELAY_US: u64 = 200 * MICROS_PER_MILLI;
/// A new leader chosen to be deposed goes within this long of its
/// election: a few round trips, before its first entries spread.
const DEPOSE_WITHIN_US: u64 = 5 * MICROS_PER_MILLI;
/// A leader churn that has not finished within this long is abandoned.
const CHURN_US_MAX: u64 = 2_000 * MICROS_PER_MILLI;
/// Attempts to promote a learner before giving up.
const PROMOTE_ATTEMPTS_MAX: u32 = 20;
/// Packets the whole cluster may receive within one tick before the run
/// is failed as a message storm: healthy runs stay far below (see
/// [`RunStats::packets_per_tick_max`]); a storm means messages multiply
/// (each answer triggering more than one new message).
pub const STORM_PACKETS_PER_TICK: u64 = 20_000;
/// Events one run may process; far above any real run (a runaway loop
/// would otherwise hang a sweep).
const EVENTS_MAX: u64 = 5_000_000;

/// How a run is configured besides its seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Planted bugs to switch on in every replica.
    pub bugs: Vec<PlantedBug>,
    /// Keep a readable trace.
    pub trace: bool,
    /// Run without any fault (a perfect network and disks).
    pub no_faults: bool,
    /// Checkers whose findings are ignored (by name, as in
    /// [`Failure::checker`]), to show that another checker catches a bug
    /// on its own.
    pub disabled_checkers: Vec<&'static str>,
    /// Run the multi-shard world ([`crate::sharded`]) instead of one shard.
    pub sharded: bool,
    /// A bug planted in the sharded world's move protocol.
    pub move_bug: Option<crate::sharded::MoveBug>,
}

/// A broken property, and when it was caught.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The checker that caught it.
    pub checker: &'static str,
    /// Virtual time of the catch.
    pub at: Time,
    /// What happened.
    pub what: String,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Packets delivered.
    pub packets: u64,
    /// Epochs that had a leader.
    pub elections: u64,
    /// Entries known committed.
    pub committed: u64,
    /// Writes acknowledged to clients.
    pub acked: u64,
    /// Node boots after the first (restarts).
    pub restarts: u64,
    /// Local snapshots taken.
    pub snapshots: u64,
    /// Snapshots restored into a state machine (received from a leader).
    pub snapshot_installs: u64,
    /// Client operations recorded.
    pub ops: u64,
    /// Of which acknowledged.
    pub ops_ok: u64,
    /// Of which of unknown outcome.
    pub ops_unknown: u64,
    /// Most packets delivered in one tick-long window.
    pub packets_per_tick_max: u64,
    /// Ticks from healing until the liveness goal was met.
    pub liveness_ticks: u64,
    /// Whether the linearizability check ran out of budget.
    pub lincheck_undecided: bool,
    /// Replica moves carried out (sharded runs).
    pub moves: u64,
    /// Replicas the ring's movement plans created on a node (sharded runs).
    pub replicas_moved: u64,
    /// The ideal share of those, `R·S/N` per join or leave, in thousandths.
    pub replicas_moved_ideal_milli: u64,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The engine's name.
    pub engine: &'static str,
    /// Hash of every event: equal for two runs of one seed.
    pub trace_hash: u64,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Counters.
    pub stats: RunStats,
    /// Virtual time at the end.
    pub ended_at: Time,
    /// The first broken property, if any.
    pub failure: Option<Failure>,
    /// The readable trace, if kept.
    pub trace: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum NodeState {
    Up,
    Down,
    /// Removed from the shard and stopped for good.
    Decommissioned,
}

struct Slot<H> {
    disk: SimDisk,
    host: Option<H>,
    state: NodeState,
    /// Bumped at every stop, so timers of an earlier life are ignored.
    incarnation: u64,
    boots: u64,
    initial_membership: Option<Membership>,
    tick_us: u64,
    last_boot_error: Option<String>,
    /// What the next boot must recover: the durable state at a crash that
    /// interrupted no write.
    synced_at_crash: Option<DurableState>,
}

#[derive(Debug)]
enum Packet {
    Peer { payload: Bytes, describe: Option<String> },
    Request(Request),
    Response(Response),
}

#[derive(Debug)]
enum Event {
    Tick { node: NodeId, incarnation: u64 },
    Wake { node: NodeId, incarnation: u64 },
    Unreachable { node: NodeId, incarnation: u64, peer: NodeId },
    Packet { from: Addr, to: Addr, packet: Packet },
    Restart { node: NodeId },
    Client { index: usize, token: u64 },
    Nemesis,
    HealLinks { episode: u64 },
    Promote { node: NodeId, attempt: u32 },
    Depose { node: NodeId, incarnation: u64, epoch: Epoch, isolate: bool },
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
    /// Clients finish what they have in flight.
    Drain,
    /// Members catch up with the last acknowledged write.
    Settle,
    Done,
}

/// One run.
pub struct World<H: Host> {
    seed: u64,
    engine: &'static str,
    scenario: Scenario,
    bugs: Vec<PlantedBug>,
    disabled_checkers: Vec<&'static str>,
    rng: DetRng,
    queue: EventQueue<Event>,
    network: Network,
    slots: BTreeMap<NodeId, Slot<H>>,
    clients: Vec<Client>,
    client_tokens: Vec<u64>,
    history: History,
    checkers: Checkers,
    trace: Trace,
    faults: FaultCounts,
    stats: RunStats,
    phase: Phase,
    heal_at: Time,
    liveness_target: Option<LogIndex>,
    failure: Option<Failure>,
    next_node: u64,
    link_episode: u64,
    /// Nodes that stopped themselves on a disk error.
    disk_stops: u64,
    /// Leaders that have not committed anything yet in their epoch.
    leading: BTreeMap<NodeId, Epoch>,
    /// Nodes to crash once `handle` is done with their effects.
    crash_after_effects: Vec<NodeId>,
    /// Leaders to crash at their first commit.
    crash_at_first_commit: BTreeMap<NodeId, Epoch>,
    /// A leader churn in progress: `(leaders still to cut off, give up at)`.
    churn: Option<(u32, Time)>,
    /// `(window, packets delivered in it)`, windows one tick long.
    packet_window: (u64, u64),
    /// Nodes removed from the shard, waiting to be stopped once a committed
    /// configuration excludes them: `(leader, epoch, its last index)` when
    /// first seen excluded.
    removals: BTreeMap<NodeId, Option<(NodeId, Epoch, LogIndex)>>,
}

fn describe_observation(o: &Observation) -> (&'static str, u64, u64, String) {
    match o {
        Observation::Booted { applied, chain, commit, .. } => {
            ("boot", applied.0, *chain, format!("applied {applied} commit {commit}"))
        }
        Observation::Role { role, epoch, leader } => (
            "role",
            epoch.round,
            leader.map_or(0, |l| l.0),
            format!(
                "{role:?} epoch {epoch} leader {}",
                leader.map_or("none".into(), |l| l.to_string())
            ),
        ),
        Observation::Wrote { entries, .. } => {
            let first = entries.first().map_or(0, |e| e.0.0);
            let last = entries.last().map_or(0, |e| e.0.0);
            let epoch = entries.last().map_or(0, |e| e.1.round);
            ("write", first, last, format!("entries {first}..={last} epoch {epoch}"))
        }
        Observation::Committed { commit, entries, at } => (
            "commit",
            commit.0,
            0,
            match entries.last() {
                Some((i, e)) => format!("commit {commit} (last {i}@{e}) in epoch {at}"),
                None => format!("commit {commit} in epoch {at}"),
            },
        ),
        Observation::Applied { index, epoch, chain, .. } => {
            ("apply", index.0, *chain, format!("{index}@{epoch}"))
        }
        Observation::Restored { index, chain } => {
            ("restore", index.0, *chain, format!("snapshot at {index}"))
        }
        Observation::Acked { client, seq, index, epoch, .. } => (
            "ack",
            index.0,
            client.0,
            format!("client {} op {seq} done as {index}@{epoch}", client.0),
        ),
        Observation::Compacted { index } => ("compact", index.0, 0, format!("snapshot at {index}")),
        Observation::ReadAsked { id } => ("read-asked", *id, 0, format!("read {id} asked")),
        Observation::ReadConfirmed { id, index } => {
            ("read-index", *id, index.0, format!("read {id} confirmed at {index}"))
        }
        Observation::Violation { what } => ("violation", 0, 0, what.clone()),
    }
}

impl<H: Host> World<H> {
    /// A world for `seed`, ready to run.
    pub fn new(seed: u64, options: &RunOptions) -> World<H> {
        let scenario = Scenario::draw(seed, !options.no_faults);
        let network = Network::new(scenario.network);
        World {
            seed,
            engine: H::ENGINE,
            rng: DetRng::new(mix(seed, 0x5eed)),
            queue: EventQueue::new(),
            network,
            slots: BTreeMap::new(),
            clients: Vec::new(),
            client_tokens: Vec::new(),
            history: History::new(),
            checkers: Checkers::new(H::IDENTITY),
            trace: Trace::new(options.trace),
            faults: FaultCounts::default(),
            stats: RunStats::default(),
            phase: Phase::Safety,
            heal_at: Time(0),
            liveness_target: None,
            failure: None,
            next_node: scenario.voters + 1,
            link_episode: 0,
            disk_stops: 0,
            packet_window: (0, 0),
            leading: BTreeMap::new(),
            crash_after_effects: Vec::new(),
            crash_at_first_commit: BTreeMap::new(),
            churn: None,
            removals: BTreeMap::new(),
            bugs: options.bugs.clone(),
            disabled_checkers: options.disabled_checkers.clone(),
            scenario,
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
                // An assertion inside an engine, the WAL or the simulator:
                // the state may be inconsistent, so stop here and report.
                self.fail("assertion", panic_message(panic.as_ref()));
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
        self.trace_start();
        let voters: Vec<NodeId> = (1..=self.scenario.voters).map(NodeId).collect();
        let membership = Membership::new(voters.iter().copied());
        for &id in &voters {
            self.create_node(id, Some(membership.clone()));
        }
        let s = &self.scenario;
        let (clients, params) = (s.clients, s.client.clone());
        for i in 0..clients {
            let id = ClientId(i + 1);
            let seed = mix(self.seed, 0xc11e_0000 + i);
            let mut params = params.clone();
            // Some clients only read, as watchers and dashboards do: they
            // stay with the node that answers them, stale leader or not.
            if i > 0 && self.rng.chance(1, 3) {
                params.weights = [0, 0, 0, 1, 1];
            }
            self.clients.push(Client::new(id, seed, params));
            self.client_tokens.push(0);
            let start = Time(self.rng.range(0, 2 * TICK_US));
            self.wake_client(i as usize, start);
        }
        if !self.scenario.faults.nemesis.is_empty() {
            let (lo, hi) = self.scenario.faults.nemesis_interval_us;
            let first = self.rng.range(lo, hi);
            self.queue.after(first, Event::Nemesis);
        }
        let rates = self.disk_fault_rates();
        for slot in self.slots.values() {
            slot.disk.set_fault_rates(rates);
        }
        self.queue.at(Time(self.scenario.safety_us), Event::Heal);
    }

    fn trace_start(&mut self) {
        let mix = &self.scenario.faults;
        let c = &self.scenario.config;
        let summary = format!(
            "seed {} engine {} voters {} clients {} pre-vote {} check-quorum {} reads {:?} heartbeat {} ticks, \
             message bytes {}, inflight {}, snapshot every {} entries, paxos alpha {}; loss {}ppm dup {}ppm \
             delay {}ppm reorder {} read-eio {}ppm depose-new-leader {}‰ nemesis every {:?}us: {:?}",
            self.seed,
            self.engine,
            self.scenario.voters,
            self.scenario.clients,
            c.pre_vote,
            c.check_quorum,
            c.read_mode,
            c.heartbeat_ticks,
            c.max_message_bytes,
            c.max_inflight_messages,
            self.scenario.snapshot_every_entries,
            self.scenario.config_delay_slots,
            mix.loss_ppm,
            mix.duplicate_ppm,
            mix.delay_ppm,
            mix.reorder,
            mix.read_error_ppm,
            mix.depose_new_leader_permille,
            mix.nemesis_interval_us,
            mix.nemesis.iter().map(|(k, w)| format!("{k}x{w}")).collect::<Vec<_>>()
        );
        self.trace.event(Time(0), Actor::World, "start", self.seed, 0, || summary);
    }

    fn create_node(&mut self, id: NodeId, initial_membership: Option<Membership>) {
        let disk = SimDisk::new(mix(self.seed, 0xd15c_0000 + id.0));
        disk.set_fault_rates(self.disk_fault_rates());
        let skew = self.rng.range(0, self.scenario.tick_skew_us.max(1));
        self.slots.insert(
            id,
            Slot {
                disk,
                host: None,
                state: NodeState::Down,
                incarnation: 0,
                boots: 0,
                initial_membership,
                tick_us: TICK_US + skew,
                last_boot_error: None,
                synced_at_crash: None,
            },
        );
        self.boot(id);
    }

    /// The random disk faults of the current phase: read errors while
    /// faults are on, if the seed's mix has them.
    fn disk_fault_rates(&self) -> FaultRates {
        match self.phase {
            Phase::Safety => FaultRates {
                read_ppm: self.scenario.faults.read_error_ppm,
                ..FaultRates::default()
            },
            _ => FaultRates::default(),
        }
    }

    fn spec(&self, id: NodeId) -> HostSpec {
        let slot = &self.slots[&id];
        HostSpec {
            config: self.scenario.config.clone(),
            initial_membership: slot.initial_membership.clone(),
            wal: self.scenario.wal,
            snapshot_every_entries: self.scenario.snapshot_every_entries,
            fsync: self.scenario.fsync,
            engine: EngineOptions {
                bugs: self.bugs.clone(),
                config_delay_slots: self.scenario.config_delay_slots,
            },
            incarnation: slot.boots,
            describe_messages: self.trace.is_kept(),
        }
    }

    fn boot(&mut self, id: NodeId) {
        let Some(slot) = self.slots.get(&id) else { return };
        if slot.state != NodeState::Down {
            return;
        }
        let spec = self.spec(id);
        let disk = self.slots[&id].disk.clone();
        let mut fx = Effects::default();
        let now = self.now();
        match H::boot(id, &spec, disk, &mut fx) {
            Ok(host) => {
                let slot = self.slots.get_mut(&id).expect("checked above");
                if slot.boots > 0 {
                    self.stats.restarts += 1;
                }
                slot.boots += 1;
                slot.host = Some(host);
                slot.state = NodeState::Up;
                slot.last_boot_error = None;
                let (incarnation, tick_us) = (slot.incarnation, slot.tick_us);
                self.trace.event(now, Actor::Node(id), "up", incarnation, 0, || {
                    format!("booted (life {incarnation})")
                });
                let first = self.rng.range(1, tick_us);
                self.queue.after(first, Event::Tick { node: id, incarnation });
                self.handle(id, fx, Ok(()));
            }
            Err(e) => {
                let reason = e.to_string();
                self.trace.event(now, Actor::Node(id), "boot-failed", 0, 0, || reason.clone());
                let retryable = match &e {
                    BootError::Io { .. } => true,
                    BootError::Corrupt { .. } => false,
                    // The engine reads the log while recovering; an
                    // injected read error makes it refuse, and a retry
                    // may pass.
                    BootError::Engine(_) => {
                        self.scenario.faults.read_error_ppm > 0 && self.phase == Phase::Safety
                    }
                };
                if retryable {
                    self.slots.get_mut(&id).expect("checked above").last_boot_error = Some(reason);
                    self.queue.after(BOOT_RETRY_US, Event::Restart { node: id });
                } else {
                    self.fail("recovery", format!("node {id} cannot restart: {e}"));
                }
            }
        }
    }

    /// Stops a node's process and crashes its disk: unsynced data is lost.
    fn crash(&mut self, id: NodeId, why: &str) {
        self.crash_with(id, why, false);
    }

    /// As [`World::crash`]; `mid_write` when a write was interrupted (the
    /// node stopped on a disk error), so recovery may go either way.
    fn crash_with(&mut self, id: NodeId, why: &str, mid_write: bool) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        if slot.state != NodeState::Up {
            return;
        }
        slot.synced_at_crash =
            if mid_write { None } else { slot.host.as_ref().map(|h| h.durable_state()) };
        slot.host = None;
        slot.disk.crash();
        slot.state = NodeState::Down;
        slot.incarnation += 1;
        let now = self.now();
        self.trace.event(now, Actor::Node(id), "down", 0, 0, || why.to_string());
        if self.scenario.faults.report_unreachable {
            // Its peers' connections to it break: each survivor's transport
            // says so, which engines take as a leader-down hint.
            let survivors: Vec<(NodeId, u64)> = self
                .slots
                .iter()
                .filter(|(n, s)| **n != id && s.state == NodeState::Up)
                .map(|(&n, s)| (n, s.incarnation))
                .collect();
            for (node, incarnation) in survivors {
                let delay = self.rng.range(0, CRASH_HINT_US_MAX);
                self.queue.after(delay, Event::Unreachable { node, incarnation, peer: id });
            }
        }
        let delay = if self.phase == Phase::Safety {
            let (lo, hi) = self.scenario.downtime_us;
            self.rng.range(lo, hi)
        } else {
            HEALED_RESTART_US
        };
        self.queue.after(delay, Event::Restart { node: id });
    }

    fn decommission(&mut self, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        if slot.state == NodeState::Decommissioned {
            return;
        }
        slot.host = None;
        slot.state = NodeState::Decommissioned;
        slot.incarnation += 1;
        self.removals.remove(&id);
        let now = self.now();
        self.trace.event(now, Actor::Node(id), "decommission", 0, 0, || {
            "removed from the shard; stopped for good".into()
        });
    }

    fn wake_client(&mut self, index: usize, at: Time) {
        self.client_tokens[index] += 1;
        let token = self.client_tokens[index];
        self.queue.at(at, Event::Client { index, token });
    }

    /// Nodes a client may address: every node not decommissioned.
    fn client_nodes(&self) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.state != NodeState::Decommissioned)
            .map(|(id, _)| *id)
            .collect()
    }

    fn dispatch(&mut self, now: Time, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                let Some(slot) = self.slots.get_mut(&node) else { return };
                if slot.incarnation != incarnation || slot.state != NodeState::Up {
                    return;
                }
                let tick_us = slot.tick_us;
                self.trace.quiet(now, Actor::Node(node), "tick");
                self.queue.after(tick_us, Event::Tick { node, incarnation });
                self.with_host(node, |h, fx| h.tick(fx));
            }
            Event::Wake { node, incarnation } => {
                if self.slots.get(&node).is_some_and(|s| s.incarnation == incarnation) {
                    self.trace.event(now, Actor::Node(node), "io-done", 0, 0, String::new);
                    self.with_host(node, |h, fx| h.wake(fx));
                }
            }
            Event::Unreachable { node, incarnation, peer } => {
                if self.slots.get(&node).is_some_and(|s| s.incarnation == incarnation) {
                    self.trace.event(now, Actor::Node(node), "unreachable", peer.0, 0, || {
                        format!("told {peer} is unreachable")
                    });
                    self.with_host(node, |h, fx| h.peer_unreachable(peer, fx));
                }
            }
            Event::Packet { from, to, packet } => self.deliver(now, from, to, packet),
            Event::Restart { node } => self.boot(node),
            Event::Client { index, token } => {
                if self.client_tokens[index] == token {
                    let nodes = self.client_nodes();
                    let step = self.clients[index].wake(now, &nodes, &mut self.history);
                    self.client_step(index, step);
                }
            }
            Event::Nemesis => self.nemesis(),
            Event::HealLinks { episode } => {
                if episode == self.link_episode {
                    self.network.heal();
                    self.trace.event(now, Actor::World, "links-healed", episode, 0, || {
                        "every link restored".into()
                    });
                }
            }
            Event::Promote { node, attempt } => self.promote(node, attempt),
            Event::Depose { node, incarnation, epoch, isolate } => {
                self.depose(node, incarnation, epoch, isolate);
            }
            Event::Heal => self.heal(),
            Event::Probe => self.probe(),
            Event::LivenessDeadline => {
                if self.phase == Phase::Liveness {
                    let states = self.describe_nodes();
                    self.fail(
                        "liveness",
                        format!(
                            "no write invoked after healing was acknowledged and applied by every \
                             member within {LIVENESS_TICKS_MAX} ticks\n{states}"
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
                    // The final durability check names the laggard.
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// Runs `f` on the node's host, if it is up, and handles its effects.
    fn with_host(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut H, &mut Effects) -> Result<(), Stopped>,
    ) {
        let Some(host) = self.slots.get_mut(&id).and_then(|s| s.host.as_mut()) else { return };
        let mut fx = Effects::default();
        let result = f(host, &mut fx);
        self.handle(id, fx, result);
    }

    fn handle(&mut self, id: NodeId, fx: Effects, result: Result<(), Stopped>) {
        let now = self.now();
        for o in &fx.observations {
            let (kind, a, b, detail) = describe_observation(o);
            self.trace.event(now, Actor::Node(id), kind, a, b, || detail);
            match o {
                Observation::Compacted { .. } => self.stats.snapshots += 1,
                Observation::Restored { .. } => self.stats.snapshot_installs += 1,
                Observation::Role { role: Role::Leader, epoch, .. } => {
                    self.leading.insert(id, *epoch);
                    self.on_new_leader(id, *epoch);
                }
                Observation::Role { .. } => {
                    self.leading.remove(&id);
                }
                // The leader's first commit of its term: crash it now,
                // sometimes, before the news spreads.
                Observation::Committed { at, .. } if self.leading.get(&id) == Some(at) => {
                    self.leading.remove(&id);
                    if self.crash_at_first_commit.remove(&id) == Some(*at) {
                        self.crash_after_effects.push(id);
                    } else {
                        self.maybe_crash_at_first_commit(id);
                    }
                }
                _ => {}
            }
            if let Observation::Booted { durable, .. } = o
                && let Some(synced) = self.slots.get_mut(&id).and_then(|s| s.synced_at_crash.take())
                && let Err(what) = wal_recovery::check(id, &synced, durable)
            {
                self.fail("wal-recovery", what);
            }
            let host = self.slots.get(&id).and_then(|s| s.host.as_ref());
            let mut violations = Vec::new();
            self.checkers.observe(id, o, host, &mut violations);
            for v in violations {
                self.fail(v.checker, v.what);
            }
            if self.failure.is_some() {
                return;
            }
        }
        for o in fx.sends {
            self.send_peer(id, o);
        }
        for (client, response) in fx.replies {
            self.send(Addr::Node(id), Addr::Client(client), Packet::Response(response));
        }
        if let Some(us) = fx.wake_after_us {
            let incarnation = self.slots[&id].incarnation;
            self.queue.after(us, Event::Wake { node: id, incarnation });
        }
        if let Err(stopped) = result {
            self.disk_stops += 1;
            self.crash_with(id, &stopped.reason, true);
        }
        for node in std::mem::take(&mut self.crash_after_effects) {
            self.faults.add(FaultKind::Crash);
            self.crash(node, "leader crashed by the nemesis at its first commit");
            // Nodes cut off earlier (deposed leaders with diverging logs)
            // come back right as the leader vanishes.
            self.link_episode += 1;
            self.network.heal();
        }
    }

    fn send_peer(&mut self, from: NodeId, o: Outgoing) {
        let Some(dest) = self.slots.get(&o.to) else { return };
        let dest_down = dest.state != NodeState::Up;
        let Outgoing { to, payload, describe } = o;
        let fate = self.send(Addr::Node(from), Addr::Node(to), Packet::Peer { payload, describe });
        let refused = matches!(fate, Fate::Cut | Fate::QueueFull) || dest_down;
        if refused && self.scenario.faults.report_unreachable && self.rng.chance(1, 4) {
            let incarnation = self.slots[&from].incarnation;
            self.queue.after(0, Event::Unreachable { node: from, incarnation, peer: to });
        }
    }

    fn send(&mut self, from: Addr, to: Addr, packet: Packet) -> Fate {
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
                    let copy = match &packet {
                        Packet::Peer { payload, describe } => {
                            Packet::Peer { payload: payload.clone(), describe: describe.clone() }
                        }
                        Packet::Request(r) => Packet::Request(r.clone()),
                        Packet::Response(r) => Packet::Response(r.clone()),
                    };
                    self.queue.at(t, Event::Packet { from, to, packet: copy });
                }
                self.queue.at(*last, Event::Packet { from, to, packet });
            }
        }
        fate
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
        if self.packet_window.1 > STORM_PACKETS_PER_TICK {
            self.fail(
                "message-storm",
                format!(
                    "more than {STORM_PACKETS_PER_TICK} packets delivered within one tick: \
                     messages multiply faster than the cluster can make progress"
                ),
            );
            return;
        }
        match (to, packet) {
            (Addr::Node(node), packet) => {
                if self.slots.get(&node).is_none_or(|s| s.state != NodeState::Up) {
                    return;
                }
                self.stats.packets += 1;
                match packet {
                    Packet::Peer { payload, describe } => {
                        let Addr::Node(peer) = from else { return };
                        let h = hash_bytes(&payload);
                        self.trace.event(now, Actor::Node(node), "recv", peer.0, h, || {
                            format!("from {peer}: {}", describe.unwrap_or_default())
                        });
                        self.with_host(node, |host, fx| host.receive(peer, payload, fx));
                    }
                    Packet::Request(r) => {
                        self.trace.event(
                            now,
                            Actor::Node(node),
                            "request",
                            r.client().0,
                            r.seq(),
                            || format!("{r:?}"),
                        );
                        self.with_host(node, |host, fx| host.request(r, fx));
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
                let nodes = self.client_nodes();
                let step = self.clients[index].on_response(now, node, r, &nodes, &mut self.history);
                self.client_step(index, step);
            }
            (Addr::Client(_), _) => {}
        }
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
        if let Some((invoked_at, index)) = step.write_done
            && self.phase == Phase::Liveness
            && invoked_at >= self.heal_at
            && self.liveness_target.is_none()
        {
            self.trace.event(now, Actor::World, "liveness-write", index.0, 0, || {
                format!("a write invoked after healing was acknowledged at index {index}")
            });
            self.liveness_target = Some(index);
        }
    }

    // ------------------------------------------------------------ nemesis

    fn up_nodes(&self) -> Vec<NodeId> {
        self.slots.iter().filter(|(_, s)| s.state == NodeState::Up).map(|(id, _)| *id).collect()
    }

    fn live_nodes(&self) -> Vec<NodeId> {
        self.client_nodes()
    }

    /// The up node that leads the highest epoch, with its status.
    fn leader(&self) -> Option<(NodeId, Status)> {
        self.slots
            .iter()
            .filter_map(|(id, s)| s.host.as_ref().map(|h| (*id, h.status())))
            .filter(|(_, st)| st.role == Role::Leader)
            .max_by_key(|(_, st)| st.epoch)
    }

    fn pick(&mut self, nodes: &[NodeId]) -> Option<NodeId> {
        (!nodes.is_empty()).then(|| nodes[self.rng.range(0, nodes.len() as u64) as usize])
    }

    /// An up node, the leader half the time.
    fn pick_target(&mut self) -> Option<NodeId> {
        if self.rng.chance(1, 2)
            && let Some((l, _)) = self.leader()
        {
            return Some(l);
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
        self.check_removals();
        if let Some((_, until)) = self.churn {
            if self.now() <= until {
                // A churn steers the cluster; other faults would only
                // scramble it.
                return;
            }
            self.churn = None;
        }
        let Some(kind) = self.scenario.faults.pick(&mut self.rng) else { return };
        let done = match kind {
            FaultKind::Partition | FaultKind::AsymmetricPartition => self.partition(kind),
            FaultKind::Isolate => self.isolate(),
            FaultKind::Clog => self.clog(),
            FaultKind::Crash => match self.pick_target() {
                Some(n) => {
                    self.crash(n, "crashed by the nemesis");
                    true
                }
                None => false,
            },
            FaultKind::CrashDuringSync | FaultKind::FsyncError | FaultKind::NoSpace => {
                self.disk_fault(kind)
            }
            FaultKind::AddReplica => self.add_replica(),
            FaultKind::RemoveReplica => self.remove_replica(),
            FaultKind::ReplaceReplica => self.replace_replica(),
            FaultKind::TransferLeader => self.transfer_leader(),
            FaultKind::LeaderChurn => self.start_churn(),
            FaultKind::Loss
            | FaultKind::Duplicate
            | FaultKind::Delay
            | FaultKind::Reorder
            | FaultKind::ReadError
            | FaultKind::JoinNode
            | FaultKind::LeaveNode => false,
        };
        if done {
            self.faults.add(kind);
        }
    }

    /// A leader was just elected: go on with a leader churn, or maybe
    /// schedule its fall.
    fn on_new_leader(&mut self, node: NodeId, epoch: Epoch) {
        if self.phase != Phase::Safety {
            return;
        }
        let incarnation = self.slots[&node].incarnation;
        match self.churn {
            Some((_, until)) if self.now() > until => self.churn = None,
            Some((left, until)) if left > 1 => {
                // Cut off at once: its first entries, in flight, are lost
                // and stay on it alone.
                self.churn = Some((left - 1, until));
                let isolate = true;
                self.queue.after(0, Event::Depose { node, incarnation, epoch, isolate });
                return;
            }
            Some(_) => {
                self.churn = None;
                self.crash_at_first_commit.insert(node, epoch);
                return;
            }
            None => {}
        }
        let permille = u64::from(self.scenario.faults.depose_new_leader_permille);
        if permille == 0 || !self.rng.chance(permille, 1_000) {
            return;
        }
        let delay = self.rng.range(0, DEPOSE_WITHIN_US);
        let isolate = self.rng.chance(2, 3);
        self.queue.after(delay, Event::Depose { node, incarnation, epoch, isolate });
    }

    /// Starts a leader churn: cuts off the current leader.
    fn start_churn(&mut self) -> bool {
        if self.churn.is_some() {
            return false;
        }
        let Some((leader, _)) = self.leader() else { return false };
        let steps = self.rng.range(2, 5) as u32;
        self.churn = Some((steps, self.now().plus(CHURN_US_MAX)));
        self.isolate_node(leader, format!("leader {leader} cut off to start a churn of {steps}"));
        true
    }

    /// Cuts `node` off from every other node, replacing any partition.
    fn isolate_node(&mut self, node: NodeId, why: String) {
        self.network.heal();
        for other in self.live_nodes() {
            if other != node {
                self.network.set_cut(node, other, true);
                self.network.set_cut(other, node, true);
            }
        }
        self.schedule_link_heal("isolate", why);
    }

    /// Maybe crashes a leader at its first commit of its term, after the
    /// effects of the step that committed (its messages leave).
    fn maybe_crash_at_first_commit(&mut self, node: NodeId) {
        let permille = u64::from(self.scenario.faults.depose_new_leader_permille);
        if self.phase == Phase::Safety && permille > 0 && self.rng.chance(permille, 2_000) {
            self.crash_after_effects.push(node);
        }
    }

    /// Cuts off (or crashes) `node` if it still leads `epoch`.
    fn depose(&mut self, node: NodeId, incarnation: u64, epoch: Epoch, isolate: bool) {
        let leads = self.slots.get(&node).is_some_and(|s| {
            s.incarnation == incarnation
                && s.host.as_ref().is_some_and(|h| {
                    let st = h.status();
                    st.role == Role::Leader && st.epoch == epoch
                })
        });
        if !leads || self.phase != Phase::Safety {
            return;
        }
        if isolate {
            self.faults.add(FaultKind::Isolate);
            self.isolate_node(node, format!("new leader {node} cut off"));
        } else {
            self.faults.add(FaultKind::Crash);
            self.crash(node, "new leader crashed by the nemesis");
        }
    }

    fn shuffled_live(&mut self) -> Vec<NodeId> {
        let mut nodes = self.live_nodes();
        for i in (1..nodes.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            nodes.swap(i, j);
        }
        nodes
    }

    fn partition(&mut self, kind: FaultKind) -> bool {
        let nodes = self.shuffled_live();
        if nodes.len() < 2 {
            return false;
        }
        let split = self.rng.range(1, nodes.len() as u64) as usize;
        let (a, b) = nodes.split_at(split);
        let symmetric = kind == FaultKind::Partition;
        // One partition at a time: the new one replaces the last.
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

    fn isolate(&mut self) -> bool {
        let Some(node) = self.pick_target() else { return false };
        self.isolate_node(node, format!("{node} cut off"));
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
        for other in self.live_nodes() {
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

    fn disk_fault(&mut self, kind: FaultKind) -> bool {
        let up = self.up_nodes();
        let Some(node) = self.pick(&up) else { return false };
        let disk = self.slots[&node].disk.clone();
        let (op, fault) = match kind {
            FaultKind::CrashDuringSync => {
                let ops = [FaultOp::Write, FaultOp::SyncData, FaultOp::Rename, FaultOp::SyncDir];
                (ops[self.rng.range(0, ops.len() as u64) as usize], DiskFault::Crash)
            }
            FaultKind::FsyncError => (FaultOp::SyncData, DiskFault::Eio),
            _ => {
                let ops = [FaultOp::Write, FaultOp::Allocate];
                (ops[self.rng.range(0, ops.len() as u64) as usize], DiskFault::NoSpace)
            }
        };
        disk.fail_next(op, fault);
        let now = self.now();
        self.trace.event(now, Actor::Node(node), kind.name(), 0, 0, || {
            format!("the next {op:?} on its disk fails with {fault:?}")
        });
        true
    }

    fn change(&mut self, change: MembershipChange) -> Option<LogIndex> {
        let (leader, _) = self.leader()?;
        let desc = format!("{:?}", change.ops);
        let mut fx = Effects::default();
        let host = self.slots.get_mut(&leader)?.host.as_mut()?;
        let r = host.change_membership(change, &mut fx);
        let (result, stop) = match r {
            Ok(r) => (r, Ok(())),
            Err(s) => (Err(ringkv_consensus::ProposeError::MembershipChangeInProgress), Err(s)),
        };
        let now = self.now();
        let outcome = format!("{desc} at {leader}: {result:?}");
        self.trace.event(
            now,
            Actor::World,
            "membership",
            leader.0,
            u64::from(result.is_ok()),
            || outcome,
        );
        self.handle(leader, fx, stop);
        result.ok().map(|p| p.index)
    }

    fn new_node(&mut self) -> Option<NodeId> {
        if self.next_node > NODES_MAX {
            return None;
        }
        let id = NodeId(self.next_node);
        self.next_node += 1;
        self.create_node(id, None);
        Some(id)
    }

    fn voters(&self) -> Option<Vec<NodeId>> {
        let (_, st) = self.leader()?;
        (!st.membership.is_joint()).then(|| st.membership.voters.iter().copied().collect())
    }

    fn add_replica(&mut self) -> bool {
        let Some(voters) = self.voters() else { return false };
        if voters.len() >= VOTERS_MAX || self.next_node > NODES_MAX {
            return false;
        }
        let Some(id) = self.new_node() else { return false };
        let change = MembershipChange { ops: vec![ChangeOp::AddLearner(id)] };
        if self.change(change).is_some() {
            self.queue.after(PROMOTE_DELAY_US, Event::Promote { node: id, attempt: 0 });
            true
        } else {
            self.decommission(id);
            false
        }
    }

    fn promote(&mut self, node: NodeId, attempt: u32) {
        let learner = self.leader().is_some_and(|(_, st)| st.membership.is_learner_only(node));
        if !learner {
            return;
        }
        let change = MembershipChange { ops: vec![ChangeOp::AddVoter(node)] };
        if self.change(change).is_none() && attempt < PROMOTE_ATTEMPTS_MAX {
            self.queue.after(PROMOTE_DELAY_US, Event::Promote { node, attempt: attempt + 1 });
        }
    }

    fn remove_replica(&mut self) -> bool {
        let Some(voters) = self.voters() else { return false };
        if voters.len() <= VOTERS_MIN {
            return false;
        }
        let Some(victim) = self.pick(&voters) else { return false };
        let change = MembershipChange { ops: vec![ChangeOp::Remove(victim)] };
        if self.change(change).is_some() {
            self.removals.insert(victim, None);
            true
        } else {
            false
        }
    }

    fn replace_replica(&mut self) -> bool {
        let Some(voters) = self.voters() else { return false };
        if self.next_node > NODES_MAX {
            return false;
        }
        let Some(old) = self.pick(&voters) else { return false };
        let Some(new) = self.new_node() else { return false };
        let change = MembershipChange { ops: vec![ChangeOp::AddVoter(new), ChangeOp::Remove(old)] };
        if self.change(change).is_some() {
            self.removals.insert(old, None);
            true
        } else {
            self.decommission(new);
            false
        }
    }

    fn transfer_leader(&mut self) -> bool {
        let Some((leader, st)) = self.leader() else { return false };
        let others: Vec<NodeId> =
            st.membership.voters.iter().copied().filter(|v| *v != leader).collect();
        let Some(to) = self.pick(&others) else { return false };
        let mut fx = Effects::default();
        let Some(host) = self.slots.get_mut(&leader).and_then(|s| s.host.as_mut()) else {
            return false;
        };
        let r = host.transfer_leadership(to, &mut fx);
        let ok = matches!(r, Ok(Ok(())));
        let now = self.now();
        self.trace.event(now, Actor::World, "transfer", to.0, u64::from(ok), || {
            format!("asked {leader} to hand leadership to {to}: {r:?}")
        });
        let stop = r.map(|_| ());
        self.handle(leader, fx, stop);
        ok
    }

    /// Stops removed nodes once a committed configuration excludes them.
    fn check_removals(&mut self) {
        if self.removals.is_empty() {
            return;
        }
        let Some((leader, st)) = self.leader() else { return };
        let mut done = Vec::new();
        for (node, seen) in &mut self.removals {
            if st.membership.contains(*node) {
                *seen = None;
                continue;
            }
            match *seen {
                Some((l, e, index)) if l == leader && e == st.epoch && st.commit >= index => {
                    done.push(*node);
                }
                Some((l, e, _)) if l == leader && e == st.epoch => {}
                _ => *seen = Some((leader, st.epoch, st.last_index)),
            }
        }
        for node in done {
            self.decommission(node);
        }
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
        let mut down = Vec::new();
        for (id, slot) in &self.slots {
            slot.disk.clear_faults();
            slot.disk.set_fault_rates(FaultRates::default());
            if slot.state == NodeState::Down {
                down.push(*id);
            }
        }
        let now = self.now();
        self.trace.event(now, Actor::World, "heal", 0, 0, || {
            format!("all faults healed; restarting {down:?}")
        });
        for id in down {
            self.queue.after(HEALED_RESTART_US, Event::Restart { node: id });
        }
        self.queue.after(PROBE_US, Event::Probe);
        self.queue.after(LIVENESS_TICKS_MAX * TICK_US, Event::LivenessDeadline);
    }

    fn probe(&mut self) {
        self.check_removals();
        match self.phase {
            Phase::Liveness => {
                if self.liveness_met() {
                    let now = self.now();
                    self.stats.liveness_ticks = (now.0 - self.heal_at.0).div_ceil(TICK_US);
                    self.trace.event(now, Actor::World, "live", 0, 0, || {
                        "liveness goal met; draining clients".into()
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

    /// Whether every member has applied every acknowledged write.
    fn settled(&self) -> bool {
        let Some((_, st)) = self.leader() else { return false };
        let last = self.checkers.durability.last_acked();
        st.membership.members().iter().all(|m| {
            self.slots.get(m).and_then(|s| s.host.as_ref()).is_some_and(|h| h.applied() >= last)
        })
    }

    fn liveness_met(&self) -> bool {
        let Some(target) = self.liveness_target else { return false };
        let Some((_, st)) = self.leader() else { return false };
        st.membership.members().iter().all(|m| {
            self.slots.get(m).and_then(|s| s.host.as_ref()).is_some_and(|h| h.applied() >= target)
        })
    }

    fn describe_nodes(&self) -> String {
        let mut out = String::new();
        for (id, slot) in &self.slots {
            let line = match (&slot.host, slot.state) {
                (Some(h), _) => {
                    let st = h.status();
                    format!(
                        "{id}: {:?} epoch {} leader {:?} commit {} applied {} last {} voters {:?} learners {:?}",
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
                (None, state) => format!(
                    "{id}: {state:?}{}",
                    slot.last_boot_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            };
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(t) = self.liveness_target {
            out.push_str(&format!("liveness write at index {t}\n"));
        } else {
            out.push_str("no write invoked after healing was acknowledged\n");
        }
        out
    }

    fn finish(mut self) -> RunReport {
        if self.failure.is_none() {
            self.final_checks();
        }
        // Random read errors are counted by the disks; every other disk
        // fault they count was a one-shot fault that stopped its node.
        let disk_faults: u64 = self.slots.values().map(|s| s.disk.stats().faults).sum();
        for _ in 0..disk_faults.saturating_sub(self.disk_stops) {
            self.faults.add(FaultKind::ReadError);
        }
        let s = &mut self.stats;
        s.elections = self.checkers.election.elections();
        s.committed = self.checkers.completeness.committed();
        s.acked = self.checkers.durability.acked();
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
        if let Some((_, st)) = self.leader() {
            for m in st.membership.members() {
                let applied = self.slots.get(&m).and_then(|s| s.host.as_ref()).map(|h| h.applied());
                if let Some(applied) = applied
                    && let Err(what) = self.checkers.durability.at_end(m, applied)
                {
                    self.fail("durability-at-end", what);
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

/// The message of a caught panic (`panic!` with a format string or a
/// literal), for the failure report.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
