//! A test harness around the public API: replicas with in-memory durable
//! storage, a tiny state machine, crash/restart that loses everything not
//! yet persisted, and a trace formatter for Readys.
//!
//! Shared by the interaction scripts and the randomized cluster test; each
//! uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::Bytes;
use ringkv_consensus::{
    Config, Entry, EntryKind, Envelope, LogIndex, LogStorage, Membership, MemoryLog, NodeId, Ready,
    Replica, ShardId,
};
use ringkv_paxos::message::{describe_entry, describe_membership};
use ringkv_paxos::{Message, Paxos, PaxosOptions};

/// The shard every test replica serves.
pub(crate) const SHARD: ShardId = ShardId(1);

/// A deterministic state machine: a rolling hash of applied commands.
///
/// Its snapshot is `(applied, hash)`, so two replicas that applied
/// different values at the same slot disagree forever after. The hash
/// covers slot, kind and payload, not the ballot: replicas may hold one
/// chosen value under different ballots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StateMachine {
    pub(crate) applied: LogIndex,
    pub(crate) hash: u64,
}

impl StateMachine {
    pub(crate) fn apply(&mut self, e: &Entry) {
        assert_eq!(e.index, self.applied.next(), "entries must be applied in order, without gaps");
        self.applied = e.index;
        if e.kind == EntryKind::Command {
            self.hash = fnv(self.hash, &e.index.0.to_le_bytes());
            self.hash = fnv(self.hash, &e.payload);
        }
    }

    /// The snapshot data at `applied`, padded to `len_bytes` so that tests
    /// can exercise chunking.
    pub(crate) fn snapshot(&self, len_bytes: usize) -> Bytes {
        let mut out = Vec::with_capacity(16.max(len_bytes));
        out.extend_from_slice(&self.applied.0.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.resize(16.max(len_bytes), b'.');
        Bytes::from(out)
    }

    pub(crate) fn restore(data: &[u8]) -> StateMachine {
        if data.len() < 16 {
            return StateMachine::default();
        }
        let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().expect("eight bytes"));
        StateMachine { applied: LogIndex(word(0)), hash: word(8) }
    }
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    if h == 0 {
        h = 0xcbf2_9ce4_8422_2325;
    }
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// What processing one Ready produced for the world outside the node.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Messages to put on the network.
    pub(crate) messages: Vec<Envelope<Message>>,
    /// Entries applied to the state machine.
    pub(crate) applied: Vec<Entry>,
}

/// One replica with its durable storage and state machine.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) options: PaxosOptions,
    /// `None` while crashed.
    pub(crate) paxos: Option<Paxos<MemoryLog>>,
    /// The durable storage while crashed.
    pub(crate) disk: Option<MemoryLog>,
    pub(crate) sm: StateMachine,
    /// Readys handed out but not yet persisted (lost on a crash).
    pub(crate) unpersisted: VecDeque<Ready<Message>>,
    /// Bytes of state-machine snapshots this node makes (for chunking).
    pub(crate) snapshot_bytes: usize,
}

impl Node {
    pub(crate) fn new(options: PaxosOptions, storage: MemoryLog) -> Node {
        let id = options.config.id;
        let sm = StateMachine::restore(&storage.snapshot().expect("memory snapshot").data);
        let paxos = Paxos::new(options.clone(), storage).expect("valid test configuration");
        Node {
            id,
            options,
            paxos: Some(paxos),
            disk: None,
            sm,
            unpersisted: VecDeque::new(),
            snapshot_bytes: 16,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.paxos.is_some()
    }

    pub(crate) fn paxos(&mut self) -> &mut Paxos<MemoryLog> {
        self.paxos.as_mut().expect("node is up")
    }

    pub(crate) fn paxos_ref(&self) -> &Paxos<MemoryLog> {
        self.paxos.as_ref().expect("node is up")
    }

    /// Takes the next Ready: messages leave and committed entries are
    /// applied at once; the rest waits for [`Node::persist_one`].
    pub(crate) fn take_ready(&mut self) -> Option<(Ready<Message>, Output)> {
        let rd = self.paxos().ready()?;
        let mut out = Output { messages: rd.messages.clone(), applied: Vec::new() };
        for e in &rd.committed {
            self.sm.apply(e);
            out.applied.push(e.clone());
        }
        let applied = self.sm.applied;
        if !rd.committed.is_empty() {
            self.paxos().on_applied(applied);
        }
        self.unpersisted.push_back(rd.clone());
        Some((rd, out))
    }

    /// Persists the oldest outstanding Ready (all of it at once, as the WAL
    /// does); returns its `after_persist` messages, now free to leave.
    pub(crate) fn persist_one(&mut self) -> Option<Vec<Envelope<Message>>> {
        let rd = self.unpersisted.pop_front()?;
        let paxos = self.paxos.as_mut().expect("node is up");
        let storage = paxos.storage_mut();
        if let Some(s) = &rd.snapshot {
            storage.install_snapshot(s.clone());
        }
        storage.append(&rd.entries);
        if let Some(h) = rd.hard_state {
            storage.set_hard_state(h);
        }
        paxos.on_persisted(rd.number);
        if let Some(s) = &rd.snapshot {
            self.sm = StateMachine::restore(&s.data);
            assert_eq!(self.sm.applied, s.meta.index, "snapshot data and meta disagree");
            let applied = self.sm.applied;
            self.paxos().on_applied(applied);
        }
        Some(rd.after_persist)
    }

    /// Takes every Ready and persists it at once (synchronous caller).
    pub(crate) fn process_all(&mut self) -> Vec<(Ready<Message>, Output)> {
        let mut done = Vec::new();
        while let Some((rd, mut out)) = self.take_ready() {
            while let Some(after) = self.persist_one() {
                out.messages.extend(after);
            }
            done.push((rd, out));
        }
        done
    }

    /// Crashes: everything not persisted is lost, including the state
    /// machine (it is rebuilt from the durable snapshot on restart).
    pub(crate) fn crash(&mut self) {
        if let Some(paxos) = self.paxos.take() {
            self.disk = Some(paxos.into_storage());
        }
        self.unpersisted.clear();
    }

    pub(crate) fn restart(&mut self) {
        if self.paxos.is_some() {
            return;
        }
        let storage = self.disk.take().expect("a crashed node keeps its disk");
        self.sm = StateMachine::restore(&storage.snapshot().expect("memory snapshot").data);
        self.options.config.seed = self.options.config.seed.wrapping_add(0x9e37_79b9);
        self.paxos = Some(Paxos::new(self.options.clone(), storage).expect("recovery succeeds"));
    }

    /// Compacts the durable log at the applied index, snapshotting the
    /// state machine there.
    pub(crate) fn compact(&mut self) -> Result<LogIndex, String> {
        let index = self.sm.applied;
        let data = self.sm.snapshot(self.snapshot_bytes);
        let paxos = self.paxos.as_mut().ok_or("node is down")?;
        let membership = paxos.membership_at(index).ok_or("membership unknown at that index")?;
        paxos.storage_mut().compact(index, membership, data).map_err(|e| e.to_string())?;
        Ok(index)
    }
}

/// A config for tests: small timeouts, deterministic seed per node.
pub(crate) fn test_config(id: u64) -> Config {
    let mut c = Config::new(NodeId(id), SHARD);
    c.election_ticks = 10;
    c.heartbeat_ticks = 1;
    c.seed = id.wrapping_mul(0x2545_f491_4f6c_dd1d);
    c
}

/// A fresh storage with `voters` (empty: learn the configuration later).
pub(crate) fn fresh_storage(voters: &[u64], learners: &[u64]) -> MemoryLog {
    if voters.is_empty() {
        return MemoryLog::new(Membership::default());
    }
    let mut m = Membership::new(voters.iter().map(|&i| NodeId(i)));
    m.learners = learners.iter().map(|&i| NodeId(i)).collect();
    MemoryLog::new(m)
}

/// Formats a Ready as an indented trace block.
pub(crate) fn format_ready(id: NodeId, rd: &Ready<Message>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "> {} handling Ready #{}", id.0, rd.number.0);
    if let Some(soft) = &rd.soft_state {
        let leader = soft.leader.map_or("none".to_string(), |l| l.0.to_string());
        let _ = writeln!(s, "  soft: {:?} leader={} ballot={}", soft.role, leader, soft.epoch);
    }
    if let Some(h) = &rd.hard_state {
        let _ = writeln!(s, "  hard: promised={} commit={}", h.epoch, h.commit);
    }
    if let Some(snap) = &rd.snapshot {
        let _ = writeln!(
            s,
            "  snapshot: {}@{} conf {} ({} bytes)",
            snap.meta.index,
            snap.meta.epoch,
            describe_membership(&snap.meta.membership),
            snap.data.len()
        );
    }
    if !rd.entries.is_empty() {
        let _ = writeln!(s, "  entries:");
        for e in &rd.entries {
            let _ = writeln!(s, "    {}", describe_entry(e));
        }
    }
    if !rd.committed.is_empty() {
        let _ = writeln!(s, "  committed:");
        for e in &rd.committed {
            let _ = writeln!(s, "    {}", describe_entry(e));
        }
    }
    if !rd.messages.is_empty() {
        let _ = writeln!(s, "  messages:");
        for m in &rd.messages {
            let _ = writeln!(s, "    {}", format_envelope(m));
        }
    }
    if !rd.after_persist.is_empty() {
        let _ = writeln!(s, "  after persist:");
        for m in &rd.after_persist {
            let _ = writeln!(s, "    {}", format_envelope(m));
        }
    }
    if !rd.read_states.is_empty() {
        let _ = writeln!(s, "  reads:");
        for r in &rd.read_states {
            let _ = writeln!(s, "    id={} index={}", r.id.0, r.index);
        }
    }
    s
}

pub(crate) fn format_envelope(m: &Envelope<Message>) -> String {
    format!("{}->{} {}", m.from.0, m.to.0, m.body)
}

/// One line of state for a node.
pub(crate) fn format_state(node: &Node) -> String {
    let Some(paxos) = &node.paxos else {
        return format!("{}: crashed", node.id.0);
    };
    let st = paxos.status();
    let leader = st.leader.map_or("none".to_string(), |l| l.0.to_string());
    format!(
        "{}: {:?} ballot={} leader={} commit={} applied={} last={} conf {}",
        node.id.0,
        st.role,
        st.epoch,
        leader,
        st.commit,
        st.applied,
        st.last_index,
        describe_membership(&st.membership)
    )
}

/// The durable log of a node, one entry a line.
pub(crate) fn format_log(node: &Node) -> String {
    let storage: &MemoryLog = match (&node.paxos, &node.disk) {
        (Some(r), _) => r.storage(),
        (None, Some(d)) => d,
        (None, None) => return "no storage\n".to_string(),
    };
    let meta = storage.snapshot_meta();
    let mut s = String::new();
    let hs = storage.hard_state();
    let _ = writeln!(s, "promised={} commit={}", hs.epoch, hs.commit);
    if meta.index > LogIndex::ZERO {
        let _ = writeln!(
            s,
            "snapshot {}@{} conf {}",
            meta.index,
            meta.epoch,
            describe_membership(&meta.membership)
        );
    }
    for e in storage.all_entries() {
        let _ = writeln!(s, "{}", describe_entry(e));
    }
    s
}
