//! A randomized cluster test: many seeds of random message loss, reordering
//! and duplication, asynchronous persistence, crashes that lose everything
//! not yet persisted, partitions, compaction, transfers, reads and
//! membership changes, with Raft's safety properties checked after every
//! step (Raft, Fig. 3):
//!
//! * **election safety**: at most one leader per term;
//! * **log matching**: two logs with an entry of the same index and term
//!   hold the same entry there and agree on everything before it (checked
//!   incrementally: every entry ever written is registered with its
//!   predecessor's term, and any later write of the same `(index, term)`
//!   must agree on both);
//! * **leader completeness**: a new leader's log holds every entry known
//!   to be committed;
//! * **state-machine safety**: no two replicas apply different entries at
//!   the same index (also across restarts and snapshots);
//! * **linearizable reads**: a read's index covers every entry applied
//!   anywhere, or known committed by any replica, before the read was
//!   asked.
//!
//! Seeds vary pre-vote, check-quorum, 3 or 5 initial voters, one or many
//! entries per message, and ReadIndex or lease reads (lease seeds tick all
//! nodes together: a lease is only as good as the clocks, and the drift
//! bound is the operator's promise, not something a test can break).
//!
//! Then a liveness phase heals everything and requires a fresh command to
//! commit on every voter.
//!
//! `RAFT_SEEDS=n` runs n seeds (default 200); `RAFT_SEED=s` runs only seed
//! s, which is also what a failure prints to reproduce it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use common::{Node, fresh_storage, test_config};
use ringkv_consensus::{
    ChangeOp, DetRng, Entry, EntryKind, Envelope, Epoch, LogIndex, LogStorage, MembershipChange,
    NodeId, ReadMode, Replica, RequestId, Role,
};
use ringkv_raft::{Message, RaftOptions};

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

#[derive(Clone, Debug, PartialEq, Eq)]
struct Registered {
    kind: EntryKind,
    payload: Bytes,
    prev_term: Option<Epoch>,
}

struct Sim {
    rng: DetRng,
    nodes: BTreeMap<NodeId, Node>,
    network: Vec<Envelope<Message>>,
    /// Tick all live nodes together (lease seeds: clocks without drift).
    lockstep_ticks: bool,
    /// Largest number of messages in flight at once, for `RAFT_STATS`.
    network_max: usize,
    isolated: BTreeSet<NodeId>,
    /// Election safety: the leader of each term.
    leaders: BTreeMap<Epoch, NodeId>,
    /// Log matching: every `(index, term)` ever written.
    written: HashMap<(LogIndex, Epoch), Registered>,
    /// State-machine safety: what was applied at each index.
    applied: BTreeMap<LogIndex, (Epoch, EntryKind, Bytes)>,
    /// Reads asked and the index each must cover.
    reads: HashMap<(NodeId, RequestId), LogIndex>,
    next_read: u64,
    next_command: u64,
    /// Delivered messages by kind, for `RAFT_STATS`.
    delivered: BTreeMap<&'static str, u64>,
}

impl Sim {
    fn new(seed: u64, options: fn(&mut RaftOptions)) -> Sim {
        let mut rng = DetRng::new(seed);
        let initial_voters = if rng.chance(1, 2) { 3 } else { UNIVERSE };
        let voters: Vec<u64> = (1..=initial_voters).collect();
        let mut nodes = BTreeMap::new();
        let pre_vote = rng.chance(1, 2);
        let check_quorum = rng.chance(2, 3);
        // Sometimes one entry per message, so acknowledgements stop at
        // every index (the Figure 8 scenario needs that).
        let max_message_bytes = if rng.chance(1, 2) { 1 } else { 256 };
        // Lease reads are safe only while clocks agree within the drift
        // margin, so lease seeds tick every live node at once (no drift).
        let lease = check_quorum && rng.chance(1, 3);
        for id in 1..=UNIVERSE {
            let mut cfg = test_config(id);
            cfg.seed ^= seed.rotate_left(17);
            cfg.pre_vote = pre_vote;
            cfg.check_quorum = check_quorum;
            cfg.max_inflight_messages = 4;
            // Fewer heartbeats keep the simulated network from flooding.
            cfg.heartbeat_ticks = 2;
            cfg.max_message_bytes = max_message_bytes;
            cfg.snapshot_chunk_bytes = 16;
            cfg.max_uncommitted_bytes = 4096;
            cfg.max_command_bytes = 1024;
            if lease {
                cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
            }
            let mut o = RaftOptions::new(cfg);
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
            network_max: 0,
            lockstep_ticks: lease,
            isolated: BTreeSet::new(),
            leaders: BTreeMap::new(),
            written: HashMap::new(),
            applied: BTreeMap::new(),
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
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .max_by_key(|(_, n)| n.raft_ref().term())
            .map(|(id, _)| *id)
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.isolated.contains(&a) != self.isolated.contains(&b)
    }

    /// Takes one Ready of `id`, checking what it writes and applies.
    fn take_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let promised = node.raft_ref().has_ready();
        let taken = node.take_ready();
        if promised != taken.is_some() {
            return Err(format!(
                "contract: node {id} has_ready() = {promised} but ready() disagrees"
            ));
        }
        let Some((rd, out)) = taken else { return Ok(()) };
        // Log matching: register every written entry with its predecessor.
        let mut prev_term =
            rd.entries.first().and_then(|e| node.raft_ref().term_at(e.index.prev()).ok());
        for e in &rd.entries {
            let reg = Registered { kind: e.kind, payload: e.payload.clone(), prev_term };
            match self.written.get(&(e.index, e.epoch)) {
                Some(old) if old.prev_term.is_some() && reg.prev_term.is_some() && *old != reg => {
                    return Err(format!(
                        "log matching: node {id} wrote {}@{} differently: {old:?} vs {reg:?}",
                        e.index, e.epoch
                    ));
                }
                Some(old) if old.kind != reg.kind || old.payload != reg.payload => {
                    return Err(format!(
                        "log matching: node {id} wrote {}@{} differently",
                        e.index, e.epoch
                    ));
                }
                Some(_) => {}
                None => {
                    self.written.insert((e.index, e.epoch), reg);
                }
            }
            prev_term = Some(e.epoch);
        }
        for e in &out.applied {
            self.check_applied(id, e)?;
        }
        for r in &rd.read_states {
            if let Some(required) = self.reads.remove(&(id, r.id))
                && r.index < required
            {
                return Err(format!(
                    "linearizable read: node {id} read {} at index {} but index {required} was already applied",
                    r.id.0, r.index
                ));
            }
        }
        self.network.extend(out.messages);
        Ok(())
    }

    fn check_applied(&mut self, id: NodeId, e: &Entry) -> Result<(), Violation> {
        let seen = (e.epoch, e.kind, e.payload.clone());
        match self.applied.get(&e.index) {
            Some(old) if *old != seen => Err(format!(
                "state machine safety: node {id} applied {}@{} but {}@{} was applied elsewhere",
                e.index, e.epoch, e.index, old.0
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(e.index, seen);
                Ok(())
            }
        }
    }

    fn persist(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("node exists");
        if let Some(after) = node.persist_one() {
            // A state machine restored from a snapshot must match what was
            // applied up to its index everywhere else.
            self.network.extend(after);
        }
        Ok(())
    }

    /// Checks election safety and leader completeness for every leader.
    fn check_leaders(&mut self) -> Result<(), Violation> {
        for (id, node) in &self.nodes {
            let Some(raft) = &node.raft else { continue };
            if raft.role() != Role::Leader {
                continue;
            }
            let term = raft.term();
            match self.leaders.get(&term) {
                Some(other) if other != id => {
                    return Err(format!(
                        "election safety: nodes {} and {} both lead term {term}",
                        other.0, id.0
                    ));
                }
                Some(_) => continue,
                None => {
                    self.leaders.insert(term, *id);
                }
            }
            // Leader completeness: every entry applied anywhere is in the
            // new leader's log (or below its snapshot).
            let first = raft.storage().snapshot_meta().index;
            for (index, (epoch, _, _)) in self.applied.range(first.next()..) {
                match raft.term_at(*index) {
                    Ok(t) if t == *epoch => {}
                    got => {
                        return Err(format!(
                            "leader completeness: leader {} of term {term} has {got:?} at {index}, committed {index}@{epoch}",
                            id.0
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn random_step(&mut self) -> Result<(), Violation> {
        self.network_max = self.network_max.max(self.network.len());
        let roll = self.rng.range(0, 1000);
        let up = self.up_nodes();
        match roll {
            0..200 => {
                if self.lockstep_ticks {
                    // One global clock tick (lease seeds): roughly one node
                    // tick per step on average, as in the other seeds.
                    if self.rng.chance(1, up.len().max(1) as u64) {
                        for id in &up {
                            self.nodes.get_mut(id).expect("up").raft().tick();
                        }
                    }
                } else if let Some(id) = self.pick(&up) {
                    self.nodes.get_mut(&id).expect("up").raft().tick();
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
                    self.persist(id)?;
                }
            }
            900..945 => self.propose_somewhere(),
            945..948 => {
                if let Some(id) = self.pick(&up) {
                    self.nodes.get_mut(&id).expect("up").crash();
                    // What was on its way to the node is lost with it.
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
            960..975 => {
                // Half the reads go to a node that believes it leads, stale
                // or not: that is where an unconfirmed read would go wrong.
                let leaders: Vec<NodeId> = up
                    .iter()
                    .copied()
                    .filter(|id| self.nodes[id].raft_ref().role() == Role::Leader)
                    .collect();
                let target =
                    if self.rng.chance(1, 2) { self.pick(&leaders) } else { self.pick(&up) };
                if let Some(id) = target {
                    // A read must see every write acknowledged before it:
                    // at least everything applied anywhere, and in fact
                    // everything any replica knows committed (a confirmed
                    // leader's commit index covers all of it once its
                    // no-op commits).
                    let applied =
                        self.applied.keys().next_back().copied().unwrap_or(LogIndex::ZERO);
                    let committed = self
                        .nodes
                        .values()
                        .filter_map(|n| n.raft.as_ref().map(|r| r.status().commit))
                        .max()
                        .unwrap_or(LogIndex::ZERO);
                    let required = applied.max(committed);
                    let rid = RequestId(self.next_read);
                    self.next_read += 1;
                    if self.nodes.get_mut(&id).expect("up").raft().read_index(rid).is_ok() {
                        self.reads.insert((id, rid), required);
                    }
                }
            }
            975..980 => {
                if let Some(id) = self.pick(&up) {
                    let _ = self.nodes.get_mut(&id).expect("up").compact();
                }
            }
            980..987 => {
                if let Some(leader) = self.leader() {
                    let to = NodeId(self.rng.range(1, UNIVERSE + 1));
                    let _ = self.nodes.get_mut(&leader).expect("up").raft().transfer_leadership(to);
                }
            }
            987..992 => self.change_membership(),
            992..998 => {
                if self.isolated.is_empty() {
                    // Cutting off the leader half the time makes stale
                    // leaders, which the read and election checks need.
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

    fn deliver(&mut self, m: Envelope<Message>) -> Result<(), Violation> {
        if self.cut(m.from, m.to) {
            return Ok(());
        }
        let Some(node) = self.nodes.get_mut(&m.to) else { return Ok(()) };
        if !node.is_up() {
            return Ok(());
        }
        *self.delivered.entry(m.body.kind_name()).or_default() += 1;
        node.raft().step(m).map_err(|e| format!("step refused a well-formed message: {e}"))
    }

    fn propose_somewhere(&mut self) {
        let Some(leader) = self.leader() else { return };
        let n = self.next_command;
        self.next_command += 1;
        let payload = Bytes::from(format!("c{n}"));
        let _ = self.nodes.get_mut(&leader).expect("up").raft().propose(payload);
    }

    fn change_membership(&mut self) {
        let Some(leader) = self.leader() else { return };
        let current = self.nodes[&leader].raft_ref().status().membership;
        let node = NodeId(self.rng.range(1, UNIVERSE + 1));
        let op = match self.rng.range(0, 3) {
            0 => ChangeOp::AddVoter(node),
            1 => ChangeOp::AddLearner(node),
            _ if current.voters.len() > 2 => ChangeOp::Remove(node),
            _ => ChangeOp::AddVoter(node),
        };
        let mut ops = vec![op];
        if self.rng.chance(1, 3) {
            // Two voter changes at once go through a joint configuration.
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
            .raft()
            .change_membership(MembershipChange { ops });
    }

    /// Heals everything and runs fairly until a fresh command commits on
    /// every voter of the leader's configuration.
    fn liveness(&mut self) -> Result<(), Violation> {
        self.isolated.clear();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.nodes.get_mut(id).expect("exists").restart();
        }
        let mut target: Option<(NodeId, LogIndex, Epoch)> = None;
        for round in 0..LIVENESS_ROUNDS_MAX {
            for id in &ids {
                self.nodes.get_mut(id).expect("exists").raft().tick();
            }
            for _ in 0..4 {
                for id in &ids {
                    while self.nodes[id].raft_ref().has_ready() {
                        self.take_ready(*id)?;
                    }
                    while !self.nodes[id].unpersisted.is_empty() {
                        self.persist(*id)?;
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
                && let Ok(p) = self
                    .nodes
                    .get_mut(&leader)
                    .expect("up")
                    .raft()
                    .propose(Bytes::from_static(b"liveness"))
            {
                target = Some((leader, p.index, p.epoch));
            }
            if let Some((leader, index, epoch)) = target {
                match self.applied.get(&index) {
                    Some((e, _, _)) if *e == epoch => {
                        let membership = self.nodes[&leader].raft_ref().status().membership;
                        let all = membership
                            .members()
                            .into_iter()
                            .all(|v| self.nodes[&v].raft_ref().status().applied >= index);
                        if all {
                            return Ok(());
                        }
                    }
                    // Lost to a leader change: propose again.
                    Some(_) => target = None,
                    None => {}
                }
                if self.leader() != Some(leader) && !self.applied.contains_key(&index) {
                    target = None;
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
        if std::env::var("RAFT_STATS").is_ok() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "terms with leaders {} applied {} written {} reads pending {} network max {} delivered {:?}",
                    self.leaders.len(),
                    self.applied.len(),
                    self.written.len(),
                    self.reads.len(),
                    self.network_max,
                    self.delivered
                );
            }
        }
        r
    }
}

fn run_seed(seed: u64, options: fn(&mut RaftOptions)) -> Result<(), Violation> {
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
    if let Some(seed) = std::env::var("RAFT_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("RAFT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS_DEFAULT);
    (0..n).collect()
}

#[test]
fn randomized_cluster_keeps_raft_safety() {
    // RAFT_KEEP_GOING=1 runs every seed and lists all failures (to measure
    // how often a broken rule is caught), instead of stopping at the first.
    let keep_going = std::env::var("RAFT_KEEP_GOING").is_ok();
    let mut failed = Vec::new();
    for seed in seeds() {
        if let Err(v) = run_seed(seed, |_| {}) {
            if !keep_going {
                panic!(
                    "seed {seed}: {v}\nreproduce: RAFT_SEED={seed} cargo test -p ringkv-raft --test randomized"
                );
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

    fn first_failure(bug: fn(&mut RaftOptions)) -> Option<(u64, Violation)> {
        (0..SEEDS_MAX).find_map(|seed| run_seed(seed, bug).err().map(|v| (seed, v)))
    }

    fn assert_caught(name: &str, bug: fn(&mut RaftOptions)) {
        match first_failure(bug) {
            Some((seed, v)) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("planted bug {name}: caught at seed {seed}: {v}");
                }
            }
            None => panic!("planted bug {name} was not caught in {SEEDS_MAX} seeds"),
        }
    }

    #[test]
    fn vote_without_log_check_is_caught() {
        assert_caught("vote_without_log_check", |o| o.planted_bugs.vote_without_log_check = true);
    }

    #[test]
    fn commit_previous_term_by_counting_is_caught() {
        assert_caught("commit_previous_term_by_counting", |o| {
            o.planted_bugs.commit_previous_term_by_counting = true;
        });
    }

    #[test]
    fn ack_before_persist_is_caught() {
        assert_caught("ack_before_persist", |o| o.planted_bugs.ack_before_persist = true);
    }

    #[test]
    fn apply_before_commit_is_caught() {
        assert_caught("apply_before_commit", |o| o.planted_bugs.apply_before_commit = true);
    }

    #[test]
    fn read_without_quorum_is_caught() {
        assert_caught("read_without_quorum", |o| o.planted_bugs.read_without_quorum = true);
    }
}
