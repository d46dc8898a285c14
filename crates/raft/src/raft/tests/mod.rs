//! Rule-by-rule tests: set up a state, feed one input, assert the exact
//! Ready. One test per rule of Figure 2 of the Raft paper (`figure2`) and of
//! the thesis chapters on membership (`membership`), leadership transfer
//! (`transfer`), reads (`reads`), and of snapshots, pre-vote, check-quorum,
//! limits and recovery (`other`).

mod figure2;
mod leader_down;
mod membership;
mod other;
mod reads;
mod transfer;

use bytes::Bytes;
use ringkv_consensus::{
    Config, Entry, EntryKind, Envelope, Epoch, HardState, LogIndex, LogStorage, Membership,
    MemoryLog, NodeId, Ready, Replica, Role, ShardId, SoftState,
};

use crate::message::{Body, Message};
use crate::options::RaftOptions;
use crate::raft::Raft;

const SHARD: ShardId = ShardId(1);

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn t(term: u64) -> Epoch {
    Epoch::term(term)
}

fn i(index: u64) -> LogIndex {
    LogIndex(index)
}

/// A plain configuration: no pre-vote, no check-quorum, unless a test
/// turns them on.
fn config(id: u64) -> Config {
    let mut c = Config::new(n(id), SHARD);
    c.pre_vote = false;
    c.check_quorum = false;
    c.seed = id;
    c
}

/// A command entry; its payload names its position.
fn cmd(index: u64, term: u64) -> Entry {
    Entry {
        index: i(index),
        epoch: t(term),
        kind: EntryKind::Command,
        payload: Bytes::from(format!("c{index}")),
    }
}

fn noop(index: u64, term: u64) -> Entry {
    Entry { index: i(index), epoch: t(term), kind: EntryKind::Noop, payload: Bytes::new() }
}

fn hard(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { epoch: t(term), vote: vote.map(n), commit: i(commit) }
}

fn soft(role: Role, leader: Option<u64>, term: u64) -> SoftState {
    SoftState { role, leader: leader.map(n), epoch: t(term) }
}

/// A storage holding commands with the given terms at indexes 1.., and the
/// hard state.
fn storage(voters: &[u64], log_terms: &[u64], hs: HardState) -> MemoryLog {
    let mut s = MemoryLog::new(Membership::new(voters.iter().map(|&v| n(v))));
    let entries: Vec<Entry> =
        log_terms.iter().enumerate().map(|(k, &term)| cmd(k as u64 + 1, term)).collect();
    s.append(&entries);
    s.set_hard_state(hs);
    s
}

fn raft_with(cfg: Config, s: MemoryLog) -> Raft<MemoryLog> {
    Raft::new(RaftOptions::new(cfg), s).expect("valid test setup")
}

/// A follower with the given log and hard state.
fn follower(id: u64, voters: &[u64], log_terms: &[u64], hs: HardState) -> Raft<MemoryLog> {
    raft_with(config(id), storage(voters, log_terms, hs))
}

fn env(from: u64, to: u64, term: u64, body: Body) -> Envelope<Message> {
    Envelope { shard: SHARD, from: n(from), to: n(to), body: Message { term: t(term), body } }
}

/// The next Ready, which must exist.
fn ready(r: &mut Raft<MemoryLog>) -> Ready<Message> {
    r.ready().expect("a Ready is due")
}

/// Persists a Ready as the caller would, and acknowledges it.
fn persist(r: &mut Raft<MemoryLog>, rd: &Ready<Message>) {
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
fn drain(r: &mut Raft<MemoryLog>) -> Vec<Ready<Message>> {
    let mut all = Vec::new();
    while let Some(rd) = r.ready() {
        persist(r, &rd);
        all.push(rd);
    }
    all
}

fn step(r: &mut Raft<MemoryLog>, m: Envelope<Message>) {
    r.step(m).expect("well-formed message");
}

fn append(prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Body {
    Body::Append { prev_index: i(prev.0), prev_term: t(prev.1), entries, commit: i(commit) }
}

fn ack(index: u64) -> Body {
    Body::AppendResponse { index: i(index), reject: None }
}

fn vote_req(last: (u64, u64)) -> Body {
    Body::Vote { pre_vote: false, last_index: i(last.0), last_term: t(last.1), transfer: false }
}

fn granted(pre_vote: bool) -> Body {
    Body::VoteResponse { pre_vote, granted: true }
}

fn rejected(pre_vote: bool) -> Body {
    Body::VoteResponse { pre_vote, granted: false }
}

/// Node `id` elected leader of `term` (its log: `log_terms`), its no-op
/// appended and persisted, every peer in probe state. Drains its Readys.
fn leader_with(cfg: Config, voters: &[u64], log_terms: &[u64], term: u64) -> Raft<MemoryLog> {
    let id = cfg.id.0;
    let mut r = raft_with(cfg, storage(voters, log_terms, hard(term - 1, None, 0)));
    r.campaign();
    drain(&mut r);
    for &v in voters.iter().filter(|&&v| v != id) {
        step(&mut r, env(v, id, term, granted(false)));
    }
    drain(&mut r);
    assert_eq!(r.role, Role::Leader, "setup: node {id} leads term {term}");
    r
}

fn leader(id: u64, voters: &[u64], log_terms: &[u64], term: u64) -> Raft<MemoryLog> {
    leader_with(config(id), voters, log_terms, term)
}

/// A leader whose peers have all acknowledged its whole log (replicate
/// state, everything committed and applied).
fn settled_leader(id: u64, voters: &[u64], term: u64) -> Raft<MemoryLog> {
    let mut r = leader(id, voters, &[], term);
    let last = r.log.last_index().0;
    for &v in voters.iter().filter(|&&v| v != id) {
        step(&mut r, env(v, id, term, ack(last)));
    }
    drain(&mut r);
    assert_eq!(r.log.committed, i(last), "setup: the no-op is committed");
    r
}
