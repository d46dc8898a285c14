//! A randomized cluster test: many seeds of random message loss, reordering
//! and duplication, asynchronous persistence, crashes that lose everything
//! not yet persisted, partitions, compaction, transfers, reads and
//! membership changes, with Multi-Paxos' safety properties checked after
//! every step:
//!
//! * **consensus safety**: at most one value is chosen per slot (every
//!   committed entry any replica hands out at a slot has the same kind and
//!   payload; ballots may differ between replicas);
//! * **state-machine safety**: every replica applies the same value at the
//!   same slot, also across restarts and snapshots (the same map, fed by
//!   what is applied);
//! * **durability**: a value chosen stays chosen across leader changes: a
//!   new leader's log holds, at every slot above its snapshot, the value
//!   chosen there so far (it adopted it in phase 1 or knew it);
//! * **one leader per ballot** (true by construction of ballots; asserted
//!   anyway);
//! * **linearizable reads**: a read's index covers every slot applied
//!   anywhere, or known committed by any replica, before the read was
//!   asked.
//!
//! Seeds vary check-quorum, 3 or 5 initial voters, one or many entries per
//! message, α (the configuration delay, which is also the window), and
//! ReadIndex or lease reads (lease seeds tick all nodes together: a lease is
//! only as good as the clocks).
//!
//! Then a liveness phase heals everything and requires a fresh command to
//! commit on every member.
//!
//! `PAXOS_SEEDS=n` runs n seeds (default 200); `PAXOS_SEED=s` runs only
//! seed s, which is also what a failure prints to reproduce it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use common::{Node, fresh_storage, test_config};
use ringkv_consensus::{
    ChangeOp, DetRng, Entry, EntryKind, Envelope, Epoch, LogIndex, LogStorage, MembershipChange,
    NodeId, ReadMode, Replica, RequestId, Role,
};
use ringkv_paxos::{Message, PaxosOptions};

/// Seeds run by default; keep the debug test well under a minute.
const SEEDS_DEFAULT: u64 = 200;
/// Random steps per seed in the fault phase.
const STEPS: usize = 5000;
/// Rounds the liveness phase may take before it is a failure.
const LIVENESS_ROUNDS_MAX: usize = 400;
/// Nodes that exist; the first three or all five start as the configuration.
const UNIVERSE: u64 = 5;

/// A safety or liveness violation, with what was seen.
type Violation = String;

struct Sim {
    rng: DetRng,
    nodes: BTreeMap<NodeId, Node>,
    network: Vec<Envelope<Message>>,
    /// Tick all live nodes together (lease seeds: clocks without drift).
    lockstep_ticks: bool,
    isolated: BTreeSet<NodeId>,
    /// One leader per ballot.
    leaders: BTreeMap<Epoch, NodeId>,
    /// The value chosen at each slot, as first handed out anywhere.
    chosen: BTreeMap<LogIndex, (EntryKind, Bytes)>,
    /// Reads asked and the index each must cover.
    reads: HashMap<(NodeId, RequestId), LogIndex>,
    next_read: u64,
    next_command: u64,
    /// Delivered messages by kind, for `PAXOS_STATS`.
    delivered: BTreeMap<&'static str, u64>,
}

impl Sim {
    fn new(seed: u64, options: fn(&mut PaxosOptions)) -> Sim {
        let mut rng = DetRng::new(seed);
        let initial_voters = if rng.chance(1, 2) { 3 } else { UNIVERSE };
        let voters: Vec<u64> = (1..=initial_voters).collect();
        let check_quorum = rng.chance(2, 3);
        let max_message_bytes = if rng.chance(1, 2) { 1 } else { 256 };
        let delay = [1, 3, 8, 32][rng.range(0, 4) as usize];
        let lease = check_quorum && rng.chance(1, 3);
        let mut nodes = BTreeMap::new();
        for id in 1..=UNIVERSE {
            let mut cfg = test_config(id);
            cfg.seed ^= seed.rotate_left(17);
            cfg.check_quorum = check_quorum;
            cfg.max_inflight_messages = 4;
            cfg.heartbeat_ticks = 2;
            cfg.max_message_bytes = max_message_bytes;
            cfg.snapshot_chunk_bytes = 16;
            cfg.max_uncommitted_bytes = 4096;
            cfg.max_command_bytes = 1024;
            if lease {
                cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
            }
            let mut o = PaxosOptions::new(cfg);
            o.config_delay_slots = delay;
            options(&mut o);
            let storage = if id <= initial_voters {
                fresh_storage(&voters, &[])
            } else {
                fresh_storage(&[], &[])
            };
            let mut node = Node::new(o, storage);
            node.snapshot_bytes = 40;
            nodes.insert(NodeId(id), node);
        }
        Sim {
            rng,
            nodes,
            network: Vec::new(),
            lockstep_ticks: lease,
            isolated: BTreeSet::new(),
            leaders: BTreeMap::new(),
            chosen: BTreeMap::new(),
            reads: HashMap::new(),
            next_read: 1,
            next_command: 1,
            delivered: BTreeMap::new(),
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.rng.range(0, items.len() as u64) as usize])
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.is_up()).map(|(id, _)| *id).collect()
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.paxos.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .max_by_key(|(_, n)| n.paxos_ref().ballot())
            .map(|(id, _)| *id)
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.isolated.contains(&a) != self.isolated.contains(&b)
    }

    /// Takes one Ready of `id`, checking what it commits and answers.
    fn take_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let promised = node.paxos_ref().has_ready();
        let taken = node.take_ready();
        if promised != taken.is_some() {
            return Err(format!(
                "contract: node {id} has_ready() = {promised} but ready() disagrees"
            ));
        }
        let Some((rd, out)) = taken else { return Ok(()) };
        for e in &rd.committed {
            if e.epoch == Epoch::ZERO {
                return Err(format!("contract: node {id} committed vacant slot {}", e.index));
            }
            self.check_chosen(id, e)?;
        }
        for r in &rd.read_states {
            if let Some(required) = self.reads.remove(&(id, r.id))
                && r.index < required
            {
                return Err(format!(
                    "linearizable read: node {id} read {} at index {} but index {required} was already committed",
                    r.id.0, r.index
                ));
            }
        }
        self.network.extend(out.messages);
        Ok(())
    }

    fn check_chosen(&mut self, id: NodeId, e: &Entry) -> Result<(), Violation> {
        let seen = (e.kind, e.payload.clone());
        match self.chosen.get(&e.index) {
            Some(old) if *old != seen => Err(format!(
                "consensus safety: node {id} committed {:?} {:?} at slot {} but {:?} {:?} was chosen there",
                e.kind, e.payload, e.index, old.0, old.1
            )),
            Some(_) => Ok(()),
            None => {
                self.chosen.insert(e.index, seen);
                Ok(())
            }
        }
    }

    fn persist(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        if let Some(after) = node.persist_one() {
            self.network.extend(after);
        }
    }

    /// One leader per ballot, and a new leader holds every chosen value.
    fn check_leaders(&mut self) -> Result<(), Violation> {
        for (id, node) in &self.nodes {
            let Some(paxos) = &node.paxos else { continue };
            if paxos.role() != Role::Leader {
                continue;
            }
            let ballot = paxos.ballot();
            match self.leaders.get(&ballot) {
                Some(other) if other != id => {
                    return Err(format!(
                        "one leader per ballot: nodes {} and {} both lead ballot {ballot}",
                        other.0, id.0
                    ));
                }
                Some(_) => continue,
                None => {
                    self.leaders.insert(ballot, *id);
                }
            }
            let first = paxos.storage().snapshot_meta().index;
            for (index, (kind, payload)) in self.chosen.range(first.next()..) {
                match paxos.entry_at(*index) {
                    Ok(Some(e)) if e.kind == *kind && e.payload == *payload => {}
                    got => {
                        return Err(format!(
                            "durability: leader {} of ballot {ballot} has {got:?} at slot {index}, where {kind:?} {payload:?} was chosen",
                            id.0
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn random_step(&mut self) -> Result<(), Violation> {
        let roll = self.rng.range(0, 1000);
        let up = self.up_nodes();
        match roll {
            0..200 => {
                if self.lockstep_ticks {
                    if self.rng.chance(1, up.len().max(1) as u64) {
                        for id in &up {
                            self.nodes.get_mut(id).expect("up").paxos().tick();
                        }
                    }
                } else if let Some(id) = self.pick(&up) {
                    self.nodes.get_mut(&id).expect("up").paxos().tick();
                }
            }
            200..600 => {
                if !self.network.is_empty() {
                    let i = self.rng.range(0, self.network.len() as u64) as usize;
                    let m = self.network.swap_remove(i);
                    self.deliver(m)?;
                }
            }
            600..615 => {
                if !self.network.is_empty() {
                    let i = self.rng.range(0, self.network.len() as u64) as usize;
                    self.network.swap_remove(i);
                }
            }
            615..625 => {
                if !self.network.is_empty() {
                    let i = self.rng.range(0, self.network.len() as u64) as usize;
                    let m = self.network[i].clone();
                    self.network.push(m);
                }
            }
            625..770 => {
                if let Some(id) = self.pick(&up) {
                    self.take_ready(id)?;
                }
            }
            770..900 => {
                if let Some(id) = self.pick(&up) {
                    self.persist(id);
                }
            }
            900..945 => self.propose_somewhere(),
            945..948 => {
                if let Some(id) = self.pick(&up) {
                    self.nodes.get_mut(&id).expect("up").crash();
                    self.network.retain(|m| m.to != id);
                }
            }
            948..960 => {
                let down: Vec<NodeId> =
                    self.nodes.iter().filter(|(_, n)| !n.is_up()).map(|(id, _)| *id).collect();
                if let Some(id) = self.pick(&down) {
                    self.nodes.get_mut(&id).expect("exists").restart();
                }
            }
            960..975 => self.read_somewhere(&up),
            975..980 => {
                if let Some(id) = self.pick(&up) {
                    let _ = self.nodes.get_mut(&id).expect("up").compact();
                }
            }
            980..987 => {
                if let Some(leader) = self.leader() {
                    let to = NodeId(self.rng.range(1, UNIVERSE + 1));
                    let _ =
                        self.nodes.get_mut(&leader).expect("up").paxos().transfer_leadership(to);
                }
            }
            987..992 => self.change_membership(),
            992..998 => {
                if self.isolated.is_empty() {
                    // Cutting off the leader half the time makes stale
                    // leaders, which the read and durability checks need.
                    let leader = self.leader().filter(|_| self.rng.chance(1, 2));
                    let id = leader.unwrap_or_else(|| NodeId(self.rng.range(1, UNIVERSE + 1)));
                    self.isolated.insert(id);
                    if self.rng.chance(1, 3) {
                        self.isolated.insert(NodeId(self.rng.range(1, UNIVERSE + 1)));
                    }
                }
            }
            _ => self.isolated.clear(),
        }
        self.check_leaders()
    }

    fn read_somewhere(&mut self, up: &[NodeId]) {
        // Half the reads go to a node that believes it leads, stale or not.
        let leaders: Vec<NodeId> = up
            .iter()
            .copied()
            .filter(|id| self.nodes[id].paxos_ref().role() == Role::Leader)
            .collect();
        let target = if self.rng.chance(1, 2) { self.pick(&leaders) } else { self.pick(up) };
        let Some(id) = target else { return };
        // A read must see every write acknowledged before it: everything
        // applied anywhere and everything any replica knows committed.
        let applied = self.chosen.keys().next_back().copied().unwrap_or(LogIndex::ZERO);
        let committed = self
            .nodes
            .values()
            .filter_map(|n| n.paxos.as_ref().map(|r| r.commit()))
            .max()
            .unwrap_or(LogIndex::ZERO);
        let required = applied.max(committed);
        let rid = RequestId(self.next_read);
        self.next_read += 1;
        if self.nodes.get_mut(&id).expect("up").paxos().read_index(rid).is_ok() {
            self.reads.insert((id, rid), required);
        }
    }

    fn deliver(&mut self, m: Envelope<Message>) -> Result<(), Violation> {
        if self.cut(m.from, m.to) {
            return Ok(());
        }
        let Some(node) = self.nodes.get_mut(&m.to) else { return Ok(()) };
        if !node.is_up() {
            return Ok(());
        }
        *self.delivered.entry(m.body.kind_name()).or_default() += 1;
        node.paxos().step(m).map_err(|e| format!("step refused a well-formed message: {e}"))
    }

    fn propose_somewhere(&mut self) {
        let Some(leader) = self.leader() else { return };
        let n = self.next_command;
        self.next_command += 1;
        let payload = Bytes::from(format!("c{n}"));
        let _ = self.nodes.get_mut(&leader).expect("up").paxos().propose(payload);
    }

    fn change_membership(&mut self) {
        let Some(leader) = self.leader() else { return };
        let current = self.nodes[&leader].paxos_ref().status().membership;
        let node = NodeId(self.rng.range(1, UNIVERSE + 1));
        let op = match self.rng.range(0, 3) {
            0 => ChangeOp::AddVoter(node),
            1 => ChangeOp::AddLearner(node),
            _ if current.voters.len() > 2 => ChangeOp::Remove(node),
            _ => ChangeOp::AddVoter(node),
        };
        let mut ops = vec![op];
        if self.rng.chance(1, 3) {
            // Two voter changes at once, in one step (α makes it safe).
            let other = NodeId(self.rng.range(1, UNIVERSE + 1));
            if other != node {
                ops.push(if current.voters.contains(&other) && current.voters.len() > 3 {
                    ChangeOp::Remove(other)
                } else {
                    ChangeOp::AddVoter(other)
                });
            }
        }
        let _ = self
            .nodes
            .get_mut(&leader)
            .expect("up")
            .paxos()
            .change_membership(MembershipChange { ops });
    }

    /// Heals everything and runs fairly until a fresh command commits on
    /// every member of the leader's configuration.
    fn liveness(&mut self) -> Result<(), Violation> {
        self.isolated.clear();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.nodes.get_mut(id).expect("exists").restart();
        }
        let mut target: Option<(NodeId, LogIndex, Bytes)> = None;
        for round in 0..LIVENESS_ROUNDS_MAX {
            for id in &ids {
                self.nodes.get_mut(id).expect("exists").paxos().tick();
            }
            for _ in 0..4 {
                for id in &ids {
                    while self.nodes[id].paxos_ref().has_ready() {
                        self.take_ready(*id)?;
                    }
                    while !self.nodes[id].unpersisted.is_empty() {
                        self.persist(*id);
                    }
                }
                let msgs = std::mem::take(&mut self.network);
                for m in msgs {
                    self.deliver(m)?;
                }
                self.check_leaders()?;
            }
            if target.is_none()
                && round % 5 == 0
                && let Some(leader) = self.leader()
            {
                let payload = Bytes::from(format!("liveness{round}"));
                if let Ok(p) =
                    self.nodes.get_mut(&leader).expect("up").paxos().propose(payload.clone())
                {
                    target = Some((leader, p.index, payload));
                }
            }
            if let Some((leader, index, payload)) = &target {
                match self.chosen.get(index) {
                    Some((_, p)) if p == payload => {
                        let membership = self.nodes[leader].paxos_ref().status().membership;
                        let all = membership
                            .members()
                            .into_iter()
                            .all(|v| self.nodes[&v].paxos_ref().status().applied >= *index);
                        if all {
                            return Ok(());
                        }
                    }
                    // Another value was chosen there: propose again.
                    Some(_) => target = None,
                    None => {
                        if self.leader() != Some(*leader) {
                            target = None;
                        }
                    }
                }
            }
        }
        let states: Vec<String> = self.nodes.values().map(common::format_state).collect();
        Err(format!(
            "liveness: no command committed on every member after healing\n{}",
            states.join("\n")
        ))
    }

    fn run(&mut self) -> Result<(), Violation> {
        for _ in 0..STEPS {
            self.random_step()?;
        }
        let r = self.liveness();
        if std::env::var("PAXOS_STATS").is_ok() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "ballots with leaders {} chosen {} reads pending {} delivered {:?}",
                    self.leaders.len(),
                    self.chosen.len(),
                    self.reads.len(),
                    self.delivered
                );
            }
        }
        r
    }
}

fn run_seed(seed: u64, options: fn(&mut PaxosOptions)) -> Result<(), Violation> {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(seed, options).run()));
    match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            Err(format!("engine assertion: {what}"))
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("PAXOS_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("PAXOS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS_DEFAULT);
    (0..n).collect()
}

#[test]
fn randomized_cluster_keeps_paxos_safety() {
    // PAXOS_KEEP_GOING=1 runs every seed and lists all failures.
    let keep_going = std::env::var("PAXOS_KEEP_GOING").is_ok();
    let mut failed = Vec::new();
    for seed in seeds() {
        if let Err(v) = run_seed(seed, |_| {}) {
            if !keep_going {
                panic!(
                    "seed {seed}: {v}\nreproduce: PAXOS_SEED={seed} cargo test -p ringkv-paxos --test randomized"
                );
            }
            #[allow(clippy::print_stderr)]
            {
                eprintln!("seed {seed}: {v}");
            }
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "{} seeds failed: {failed:?}", failed.len());
}

/// Each planted bug breaks one rule; the checkers above must catch each
/// within a bounded number of seeds, or they prove nothing.
#[cfg(feature = "planted-bugs")]
mod planted {
    use super::*;

    /// Seeds tried per bug before declaring it uncaught.
    const SEEDS_MAX: u64 = 2000;

    fn first_failure(bug: fn(&mut PaxosOptions)) -> Option<(u64, Violation)> {
        (0..SEEDS_MAX).find_map(|seed| run_seed(seed, bug).err().map(|v| (seed, v)))
    }

    fn assert_caught(name: &str, bug: fn(&mut PaxosOptions)) {
        match first_failure(bug) {
            Some((seed, v)) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("planted bug {name}: caught at seed {seed}: {v}");
                }
                assert!(
                    !v.starts_with("liveness") && !v.starts_with("engine assertion"),
                    "planted bug {name} must be caught by a safety checker, got: {v}"
                );
            }
            None => panic!("planted bug {name} was not caught in {SEEDS_MAX} seeds"),
        }
    }

    #[test]
    fn accept_without_promise_check_is_caught() {
        assert_caught("accept_without_promise_check", |o| {
            o.planted_bugs.accept_without_promise_check = true;
        });
    }

    #[test]
    fn adopt_lowest_ballot_is_caught() {
        assert_caught("adopt_lowest_ballot", |o| o.planted_bugs.adopt_lowest_ballot = true);
    }

    #[test]
    fn ack_before_persist_is_caught() {
        assert_caught("ack_before_persist", |o| o.planted_bugs.ack_before_persist = true);
    }
}
