//! Rule-by-rule tests: set up a state, feed one input, assert the exact
//! Ready. `acceptor` covers phase 1b/2b and learning, `proposer` phase 1a,
//! the value rule and phase 2a/commit, `reads` ReadIndex and leases, and
//! `other` transfer, membership (α), learners, snapshots, recovery and
//! limits.

mod acceptor;
mod leader_down;
mod other;
mod proposer;
mod reads;

use bytes::Bytes;
use ringkv_consensus::{
    Config, Entry, EntryKind, Envelope, Epoch, HardState, LogIndex, LogStorage, Membership,
    MemoryLog, NodeId, Ready, Replica, Role, ShardId, SoftState,
};

use crate::message::{Body, Message};
use crate::options::PaxosOptions;
use crate::paxos::Paxos;

const SHARD: ShardId = ShardId(1);

/// α in these tests: small, so padding and windows stay readable.
const ALPHA: u64 = 4;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// Ballot `round.node`.
fn b(round: u64, node: u64) -> Epoch {
    Epoch::ballot(round, n(node))
}

fn i(index: u64) -> LogIndex {
    LogIndex(index)
}

/// A plain configuration: no check-quorum unless a test turns it on.
fn config(id: u64) -> Config {
    let mut c = Config::new(n(id), SHARD);
    c.pre_vote = false;
    c.check_quorum = false;
    c.seed = id;
    c
}

fn options(cfg: Config) -> PaxosOptions {
    let mut o = PaxosOptions::new(cfg);
    o.config_delay_slots = ALPHA;
    o
}

/// A command accepted at `index` in `ballot`; its payload is `data`.
fn cmd(index: u64, ballot: Epoch, data: &'static str) -> Entry {
    Entry { index: i(index), epoch: ballot, kind: EntryKind::Command, payload: Bytes::from(data) }
}

fn noop(index: u64, ballot: Epoch) -> Entry {
    Entry { index: i(index), epoch: ballot, kind: EntryKind::Noop, payload: Bytes::new() }
}

fn vacant(index: u64) -> Entry {
    noop(index, Epoch::ZERO)
}

fn hard(promised: Epoch, commit: u64) -> HardState {
    HardState { epoch: promised, vote: None, commit: i(commit) }
}

fn soft(role: Role, leader: Option<u64>, ballot: Epoch) -> SoftState {
    SoftState { role, leader: leader.map(n), epoch: ballot }
}

/// A storage of `voters` holding `entries` (from slot 1) and the hard state.
fn storage(voters: &[u64], entries: &[Entry], hs: HardState) -> MemoryLog {
    let mut s = MemoryLog::new(Membership::new(voters.iter().map(|&v| n(v))));
    s.append(entries);
    s.set_hard_state(hs);
    s
}

fn paxos_with(cfg: Config, s: MemoryLog) -> Paxos<MemoryLog> {
    Paxos::new(options(cfg), s).expect("valid test setup")
}

/// An acceptor with the given log and hard state.
fn acceptor(id: u64, voters: &[u64], entries: &[Entry], hs: HardState) -> Paxos<MemoryLog> {
    paxos_with(config(id), storage(voters, entries, hs))
}

fn env(from: u64, to: u64, ballot: Epoch, body: Body) -> Envelope<Message> {
    Envelope { shard: SHARD, from: n(from), to: n(to), body: Message { ballot, body } }
}

/// The next Ready, which must exist.
fn ready<S: LogStorage>(r: &mut Paxos<S>) -> Ready<Message> {
    r.ready().expect("a Ready is due")
}

/// Persists a Ready as the caller would, and acknowledges it.
fn persist<S: LogStorage>(r: &mut Paxos<S>, rd: &Ready<Message>) {
    let s = r.storage_mut();
    if let Some(snap) = &rd.snapshot {
        s.install_snapshot(snap.clone());
    }
    s.append(&rd.entries);
    if let Some(h) = rd.hard_state {
        s.set_hard_state(h);
    }
    r.on_persisted(rd.number);
    if let Some(last) = rd.committed.last() {
        r.on_applied(last.index);
    }
}

/// Handles every pending Ready (persisting each); returns them.
fn drain<S: LogStorage>(r: &mut Paxos<S>) -> Vec<Ready<Message>> {
    let mut all = Vec::new();
    while let Some(rd) = r.ready() {
        persist(r, &rd);
        all.push(rd);
    }
    all
}

fn step<S: LogStorage>(r: &mut Paxos<S>, m: Envelope<Message>) {
    r.step(m).expect("well-formed message");
}

fn prepare(commit: u64) -> Body {
    Body::Prepare { commit: i(commit), transfer: false }
}

fn promise(commit: u64, accepted: Vec<Entry>) -> Body {
    Body::Promise { commit: i(commit), accepted }
}

fn accept(entries: Vec<Entry>, commit: u64) -> Body {
    Body::Accept { entries, commit: i(commit) }
}

fn accepted(lo: u64, hi: u64, commit: u64) -> Body {
    Body::Accepted { lo: i(lo), hi: i(hi), commit: i(commit) }
}

fn heartbeat(commit: u64, round: u64, tick: u64) -> Body {
    Body::Heartbeat { commit: i(commit), round, sent_tick: tick }
}

/// Node `id` wins phase 1 for its next ballot (its log: `entries`,
/// promised `promised`), every other voter promising with commit 0 and
/// nothing accepted. Drains its Readys.
fn leader_with(
    cfg: Config,
    voters: &[u64],
    entries: &[Entry],
    promised: Epoch,
) -> Paxos<MemoryLog> {
    let id = cfg.id.0;
    let mut r = paxos_with(cfg, storage(voters, entries, hard(promised, 0)));
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    for &v in voters.iter().filter(|&&v| v != id) {
        step(&mut r, env(v, id, ballot, promise(0, vec![])));
    }
    drain(&mut r);
    assert_eq!(r.role, Role::Leader, "setup: node {id} leads");
    r
}

fn leader(id: u64, voters: &[u64]) -> Paxos<MemoryLog> {
    leader_with(config(id), voters, &[], Epoch::ZERO)
}

/// A leader whose peers all accepted slot 1 (a command) and know it chosen.
fn settled_leader(id: u64, voters: &[u64]) -> Paxos<MemoryLog> {
    let mut r = leader(id, voters);
    r.propose(Bytes::from_static(b"x")).expect("leader");
    drain(&mut r);
    let ballot = r.ballot();
    for &v in voters.iter().filter(|&&v| v != id) {
        step(&mut r, env(v, id, ballot, accepted(1, 1, 0)));
    }
    drain(&mut r);
    for &v in voters.iter().filter(|&&v| v != id) {
        step(&mut r, env(v, id, ballot, accepted(2, 1, 1)));
    }
    drain(&mut r);
    assert_eq!(r.log.committed, i(1), "setup: slot 1 is chosen");
    r
}
