//! The Multi-Paxos state machine: ballots, phase 1 for all slots above the
//! commit point, pipelined phase 2 per slot, commit notification, catch-up,
//! reads, transfer and membership, behind [`ringkv_consensus::Replica`].
//!
//! ```text
//!              election timeout / TimeoutNow
//!   Follower ─────────────────────────────────▶ Candidate (phase 1, ballot (r, me))
//!     ▲  ▲                                        │    │ promises from a quorum of every
//!     │  │ higher ballot (Nack, prepare, accept)  │    │ configuration deciding a slot > commit
//!     │  └────────────────────────────────────────┘    ▼
//!     └─── higher ballot, check-quorum failure, removed ──── Leader (phase 2 per slot)
//! ```
//!
//! Rules, by source ("PMS" = Lamport, *Paxos Made Simple*, 2001; "PMMC" =
//! van Renesse & Altinbuken, *Paxos Made Moderately Complex*, 2015):
//! * Acceptor (PMS §2.2, P1a/P2b): promise a ballot only above the promised
//!   one; accept a value only at or above it, which raises the promise; an
//!   accepted value of a slot is replaced only by a value of a higher ballot
//!   for the same slot, never dropped ([`crate::log`]).
//! * Durability: a promise and an acceptance are sent only after the state
//!   they promise is durable (`Ready::after_persist`); a candidate counts its
//!   own promise and a leader its own acceptance only once durable.
//! * Phase 1 (PMS §3, "for all instances at once"): the candidate asks for
//!   every value accepted above its commit point; it needs a quorum of every
//!   configuration that decides some slot above its commit point (α
//!   reconfiguration: those known from its chosen prefix and those named by
//!   any membership entry it sees).
//! * Value rule (PMS P2c): per slot, the new leader re-proposes the value of
//!   the highest ballot reported; slots where nothing was reported (holes)
//!   get no-ops.
//! * Phase 2: one value per slot per ballot; a slot is chosen when a quorum
//!   of its configuration accepted it in this ballot; the commit point is
//!   the end of the chosen prefix. At most α slots past the commit point are
//!   in phase 2, so every proposed slot's configuration is decided.
//! * Learning (commit notification): the leader announces its commit point
//!   with its ballot; an acceptor learns slot `s` chosen only if it holds a
//!   value of *that* ballot at `s` (one value per slot per ballot), so a
//!   stale or partial log is never mistaken for the chosen one. Slots it
//!   lacks, or holds from other ballots, are re-sent as accepts of the
//!   current ballot (catch-up by log), or as a snapshot when compacted.
//!
//! The choices the contract leaves open are listed in the crate docs.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ringkv_consensus::{
    Config, DetRng, Entry, EntryKind, Envelope, Epoch, HardState, LeaderDownHint, LogError,
    LogIndex, LogStorage, Membership, MembershipChange, NodeId, ProgressState, Proposal,
    ProposeError, ReadMode, ReadState, Ready, ReadyNumber, Replica, RequestId, Role, ShardId,
    Snapshot, SnapshotMeta, SoftState, Status, StepError, VoteResult, decode_exact, encode_to_vec,
};

use crate::log::{PaxosLog, is_vacant, vacant};
use crate::membership::MembershipHistory;
use crate::message::{Body, Message, check_accept, check_promised};
#[cfg(feature = "planted-bugs")]
use crate::options::PlantedBugs;
use crate::options::{PaxosError, PaxosOptions};
use crate::progress::Peer;
use crate::read_only::{PendingRead, ReadQueue};
use crate::snapshot::IncomingSnapshot;

/// Bytes of log read per batch when scanning for membership entries on
/// recovery.
const RECOVERY_SCAN_BYTES: u64 = 4 << 20;

/// Heartbeat intervals a peer may leave sent slots unacknowledged before
/// the leader resends from its first hole (accepts may be lost).
const STALL_HEARTBEATS: u32 = 3;

/// A phase 1 in progress.
#[derive(Debug)]
struct Campaign {
    ballot: Epoch,
    /// Answers `TimeoutNow`: acceptors must not ignore it for a lease.
    transfer: bool,
    /// Promises received: the acceptor's commit point and what it reported.
    promises: BTreeMap<NodeId, (LogIndex, Vec<Entry>)>,
    /// Acceptors that refused (they know more chosen slots than we do).
    rejected: BTreeSet<NodeId>,
    /// Acceptors a prepare was sent to.
    asked: BTreeSet<NodeId>,
    /// Our own promise is durable.
    self_durable: bool,
}

/// A leadership transfer in progress.
#[derive(Copy, Clone, Debug)]
struct Transfer {
    to: NodeId,
    /// Ticks since it started; abandoned after an election timeout.
    elapsed: u32,
}

/// Bytes proposed by this leader and not yet committed, for the
/// [`Config::max_uncommitted_bytes`] budget.
#[derive(Debug, Default)]
struct Uncommitted {
    proposed_total: u64,
    committed_total: u64,
    /// `(index, proposed_total after it)`, ascending.
    marks: VecDeque<(LogIndex, u64)>,
}

impl Uncommitted {
    fn bytes(&self) -> u64 {
        self.proposed_total - self.committed_total
    }

    fn add(&mut self, index: LogIndex, bytes: u64) {
        self.proposed_total += bytes;
        self.marks.push_back((index, self.proposed_total));
    }

    fn commit_to(&mut self, index: LogIndex) {
        while let Some(&(i, total)) = self.marks.front() {
            if i > index {
                break;
            }
            self.committed_total = total;
            self.marks.pop_front();
        }
    }
}

/// What a handed-out Ready wrote, to settle on `on_persisted`.
#[derive(Debug)]
struct Unpersisted {
    number: ReadyNumber,
    /// The log's `emitted_to` right after this Ready was taken.
    emitted_to: LogIndex,
    /// The lowest slot this Ready rewrote (entries, or after a snapshot).
    low: Option<LogIndex>,
    snapshot: Option<LogIndex>,
    hard_state: Option<HardState>,
}

/// A Multi-Paxos replica of one shard: a pure state machine over a
/// [`LogStorage`]. Construct with [`Paxos::new`], then drive through
/// [`Replica`].
#[derive(Debug)]
pub struct Paxos<S: LogStorage> {
    id: NodeId,
    cfg: Config,
    /// α (see [`crate::CONFIG_DELAY_SLOTS`]).
    delay: u64,
    #[cfg(feature = "planted-bugs")]
    bugs: PlantedBugs,
    rng: DetRng,

    /// The highest ballot promised (persisted as `HardState::epoch`). A
    /// leader's or candidate's own ballot.
    promised: Epoch,
    /// The highest ballot seen anywhere (a Nack tells), so the next
    /// campaign outbids it.
    highest_seen: Epoch,
    log: PaxosLog<S>,
    /// Chosen configurations and which slots they decide.
    memberships: MembershipHistory,
    /// Membership entries in the log above the commit point (accepted, not
    /// known chosen), by slot.
    log_configs: BTreeMap<LogIndex, Membership>,

    role: Role,
    leader: Option<NodeId>,
    /// Ticks since construction: the leader's clock for leases.
    ticks: u64,
    /// Followers and candidates: ticks since the last contact from a leader
    /// or the last promise granted. Leaders: ticks since the last
    /// check-quorum.
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    /// Drawn from `[election_ticks, 2 * election_ticks)` at every reset.
    randomized_election_ticks: u32,
    /// Lease mode: after a restart, honour a lease we may have granted
    /// before crashing by ignoring prepares for one election timeout.
    boot_lease_guard: bool,
    /// Followers: the transport reported our leader unreachable since we
    /// last heard from it, so we no longer defend its lease, and when we
    /// campaign (see [`Replica::report_unreachable`]).
    /// Invariant: only down on a follower with a leader, check-quorum on and
    /// ReadIndex reads.
    leader_down: LeaderDownHint,
    /// We refused a prepare because we know more chosen slots than the
    /// candidate, and we cannot normally lead (we vote in no configuration
    /// ahead): we campaign anyway when our timer fires, so the knowledge we
    /// hold reaches the voters, then hand over.
    take_over: bool,

    campaign: Option<Campaign>,
    /// Leaders: every other member's progress, ascending by id.
    peers: Vec<(NodeId, Peer)>,
    /// Leaders: the last slot re-proposed after phase 1. Reads and
    /// membership changes wait until it is committed.
    phase1_end: LogIndex,
    /// Leaders: the slot of an uncommitted membership change of ours.
    pending_change: Option<LogIndex>,
    transfer: Option<Transfer>,
    reads: ReadQueue,
    uncommitted: Uncommitted,
    /// Leaders: `TimeoutNow` was sent in this ballot, so leases are void.
    lease_void: bool,
    incoming_snapshot: Option<IncomingSnapshot>,
    /// Leaders: the storage's latest snapshot, read by `wants_send` to
    /// learn that one can be sent and kept for `start_snapshot`. A node's
    /// storage reads it from a file, so it is read once per snapshot sent,
    /// not on every `has_ready` while a peer lags. Dropped by `ready`.
    loaded_snapshot: RefCell<Option<Snapshot>>,

    messages: Vec<Envelope<Message>>,
    after_persist: Vec<Envelope<Message>>,
    read_states: Vec<ReadState>,
    last_soft: SoftState,
    last_hard: HardState,
    durable_hard: HardState,
    next_ready: ReadyNumber,
    unpersisted: VecDeque<Unpersisted>,
}

impl<S: LogStorage> Paxos<S> {
    /// A replica over `storage`, recovering the promised ballot, accepted
    /// values, commit point and configurations from what it holds (a fresh
    /// storage starts a fresh replica). An empty membership means the
    /// replica waits to learn its configuration from a leader.
    ///
    /// # Errors
    /// Invalid options, unreadable storage, or storage contents that
    /// contradict themselves.
    pub fn new(options: PaxosOptions, storage: S) -> Result<Paxos<S>, PaxosError> {
        options.validate()?;
        let cfg = options.config;
        let delay = options.config_delay_slots;
        let hard = storage.hard_state();
        let snap = storage.snapshot_meta();
        let last = storage.last_index();
        if hard.commit > last {
            return Err(PaxosError::CommitPastLog { commit: hard.commit, last });
        }
        // Whatever the state machine applied was committed, even if the
        // hard state recording it did not reach the disk.
        let commit = hard.commit.max(snap.index).max(options.applied.min(last));
        let mut memberships = MembershipHistory::new(snap.index, snap.membership, delay);
        let mut log_configs = BTreeMap::new();
        let mut lo = snap.index.next();
        while lo <= last {
            let batch = storage.entries(lo, last.next(), RECOVERY_SCAN_BYTES)?;
            for e in &batch {
                if is_vacant(e) {
                    if e.index <= commit {
                        return Err(PaxosError::VacantCommitted { index: e.index });
                    }
                    continue;
                }
                if e.epoch > hard.epoch {
                    return Err(PaxosError::AcceptedAbovePromise { index: e.index });
                }
                if e.kind == EntryKind::Membership {
                    let m = decode_exact::<Membership>(e.payload.clone())
                        .map_err(|_| PaxosError::CorruptMembership { index: e.index })?;
                    if e.index <= commit {
                        memberships.push(e.index, m);
                    } else {
                        log_configs.insert(e.index, m);
                    }
                }
            }
            lo = batch.last().expect("a non-empty range yields at least one entry").index.next();
        }
        let log = PaxosLog::new(storage, commit, options.applied);
        let mut rng = DetRng::new(cfg.seed);
        let base = u64::from(cfg.election_ticks);
        let randomized_election_ticks = rng.range(base, 2 * base) as u32;
        let soft = SoftState { role: Role::Follower, leader: None, epoch: hard.epoch };
        let paxos = Paxos {
            id: cfg.id,
            delay,
            boot_lease_guard: matches!(cfg.read_mode, ReadMode::Lease { .. }),
            #[cfg(feature = "planted-bugs")]
            bugs: options.planted_bugs,
            cfg,
            rng,
            promised: hard.epoch,
            highest_seen: hard.epoch,
            log,
            memberships,
            log_configs,
            role: Role::Follower,
            leader: None,
            ticks: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks,
            leader_down: LeaderDownHint::None,
            take_over: false,
            campaign: None,
            peers: Vec::new(),
            phase1_end: LogIndex::ZERO,
            pending_change: None,
            transfer: None,
            reads: ReadQueue::default(),
            uncommitted: Uncommitted::default(),
            lease_void: false,
            incoming_snapshot: None,
            loaded_snapshot: RefCell::new(None),
            messages: Vec::new(),
            after_persist: Vec::new(),
            read_states: Vec::new(),
            last_soft: soft,
            last_hard: hard,
            durable_hard: hard,
            next_ready: ReadyNumber(1),
            unpersisted: VecDeque::new(),
        };
        paxos.check_invariants();
        Ok(paxos)
    }

    /// Starts phase 1 now, as if the election timeout had elapsed. Does
    /// nothing on a leader or a replica that cannot vote.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && (self.promotable() || self.take_over) && self.knows_config()
        {
            self.start_campaign(false);
        }
        self.debug_check();
    }

    /// The configuration to record with a snapshot taken at `index`: the one
    /// that decides the slots after it. `None` while a membership change
    /// chosen at or before `index` has not taken effect by `index + 1`, if
    /// `index` lies below what this replica remembers, or if it never
    /// learned its configuration (it joined empty): do not compact there.
    pub fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        if index > self.log.committed {
            return None;
        }
        self.memberships.for_snapshot_at(index)
    }

    /// The ballot the value at `index` was accepted in by this replica
    /// (including entries not yet persisted); [`Epoch::ZERO`] for a vacant
    /// slot. Replicas may hold one chosen value under different ballots.
    ///
    /// # Errors
    /// The index is compacted or past the end.
    pub fn epoch_at(&self, index: LogIndex) -> Result<Epoch, LogError> {
        self.log.epoch(index)
    }

    /// The value this replica accepted at `index` (including entries not yet
    /// persisted), or `None` for a vacant slot.
    ///
    /// # Errors
    /// The index is compacted or past the end.
    pub fn entry_at(&self, index: LogIndex) -> Result<Option<Entry>, LogError> {
        let mut e = self.log.entries(index, index.next(), u64::MAX)?;
        match e.pop() {
            Some(e) if !is_vacant(&e) => Ok(Some(e)),
            Some(_) => Ok(None),
            None => Err(LogError::Unavailable { index, last: self.log.last_index() }),
        }
    }

    /// The highest ballot this replica promised (a leader's own ballot).
    pub fn ballot(&self) -> Epoch {
        self.promised
    }

    /// The replica's current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The commit point: every slot up to it is chosen.
    pub fn commit(&self) -> LogIndex {
        self.log.committed
    }

    /// α, the configuration delay in slots.
    pub fn config_delay_slots(&self) -> u64 {
        self.delay
    }

    /// Consumes the replica, returning its storage (e.g. to restart it).
    pub fn into_storage(self) -> S {
        self.log.storage
    }

    /// Asserts the engine's invariants; cheap enough for every step in
    /// debug builds and in the simulator.
    ///
    /// # Panics
    /// If an invariant is broken, naming it.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        assert!(self.durable_hard.epoch <= self.promised, "durable promise above the promise");
        assert!(
            !self.leader_down.is_down() || (self.role == Role::Follower && self.leader.is_some()),
            "only a follower with a leader suspects it"
        );
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "a leader knows itself as leader");
                assert_eq!(self.promised.node, self.id, "a leader leads its own ballot");
                assert!(self.campaign.is_none(), "a leader runs no phase 1");
            }
            Role::Candidate => {
                let c = self.campaign.as_ref().expect("a candidate runs phase 1");
                assert_eq!(c.ballot, self.promised, "a candidate promised its own ballot");
                assert!(self.peers.is_empty(), "only leaders track progress");
            }
            Role::Follower | Role::PreCandidate => {
                assert!(self.peers.is_empty(), "only leaders track progress");
                assert!(self.campaign.is_none(), "followers run no phase 1");
            }
        }
        for (id, p) in &self.peers {
            assert!(p.matched < p.next, "peer {id}: matched {} >= next {}", p.matched, p.next);
            assert!(
                p.inflight.len() <= self.cfg.max_inflight_messages,
                "peer {id}: window overflow"
            );
            assert!(
                p.acked.first().is_none_or(|&s| s > p.matched.next()),
                "peer {id}: acknowledged slot not above matched + 1"
            );
        }
        if let Some((&slot, _)) = self.log_configs.first_key_value() {
            assert!(slot > self.log.committed, "chosen membership entry {slot} not in the history");
        }
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    fn bug_accept_any_ballot(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.bugs.accept_without_promise_check {
            return true;
        }
        false
    }

    fn bug_adopt_lowest(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.bugs.adopt_lowest_ballot {
            return true;
        }
        false
    }

    fn bug_ack_early(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.bugs.ack_before_persist {
            return true;
        }
        false
    }

    // ---------------------------------------------------------------- roles

    /// Whether this replica may run phase 1: it votes in the configuration
    /// of the first undecided slot, and no snapshot is half-installed.
    fn promotable(&self) -> bool {
        !self.log.has_unstable_snapshot()
            && self.memberships.config_for(self.log.committed.next()).is_voter(self.id)
    }

    /// Whether this replica knows which configuration decides its next
    /// slot (a replica that joined empty waits to learn it).
    fn knows_config(&self) -> bool {
        !self.log.has_unstable_snapshot()
            && *self.memberships.config_for(self.log.committed.next()) != Membership::default()
    }

    /// Whether this leader votes in no configuration deciding a slot past
    /// its commit point: its removal is in effect.
    fn removed(&self) -> bool {
        let committed = self.log.committed;
        !self.memberships.config_for(committed.next()).is_voter(self.id)
            && self.memberships.pending_after(committed).is_none()
    }

    /// A removed leader hands over to a voter that holds and knows every
    /// chosen slot, then steps down. Until one does, it keeps leading: a
    /// proposer need not be an acceptor, and the voters may need what it
    /// knows.
    fn maybe_hand_over(&mut self) {
        if self.role != Role::Leader || !self.removed() {
            return;
        }
        let (last, committed) = (self.log.last_index(), self.log.committed);
        let voters = &self.memberships.config_for(committed.next()).voters;
        let successor = self
            .peers
            .iter()
            .find(|(id, p)| voters.contains(id) && p.matched >= last && p.commit >= committed)
            .map(|(id, _)| *id);
        if let Some(to) = successor {
            self.send_timeout_now(to);
            self.become_follower(None);
        }
    }

    fn reset_timer(&mut self) {
        self.clear_leader_down();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = u64::from(self.cfg.election_ticks);
        self.randomized_election_ticks = self.rng.range(base, 2 * base) as u32;
    }

    /// Drops everything a leader or candidate keeps.
    fn clear_role_state(&mut self) {
        self.campaign = None;
        self.peers.clear();
        self.transfer = None;
        self.reads.reset();
        self.uncommitted = Uncommitted::default();
        self.lease_void = false;
        self.pending_change = None;
        self.phase1_end = LogIndex::ZERO;
        self.loaded_snapshot.get_mut().take();
    }

    fn become_follower(&mut self, leader: Option<NodeId>) {
        self.clear_role_state();
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_timer();
    }

    /// Raises the promise (persisted with the next Ready).
    fn promise(&mut self, ballot: Epoch) {
        if ballot > self.promised {
            self.promised = ballot;
            self.highest_seen = self.highest_seen.max(ballot);
        }
        if self.incoming_snapshot.as_ref().is_some_and(|s| s.ballot != self.promised) {
            self.incoming_snapshot = None;
        }
    }

    /// Phase 1a with a ballot above every one seen.
    fn start_campaign(&mut self, transfer: bool) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        let round = self.promised.max(self.highest_seen).round + 1;
        let ballot = Epoch::ballot(round, self.id);
        self.clear_role_state();
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_timer();
        self.promise(ballot);
        self.campaign = Some(Campaign {
            ballot,
            transfer,
            promises: BTreeMap::new(),
            rejected: BTreeSet::new(),
            asked: BTreeSet::new(),
            self_durable: false,
        });
        self.send_prepares();
    }

    /// Configurations whose quorums phase 1 needs: every one deciding a
    /// slot above our commit point, including those named by membership
    /// entries we hold or were told of (their slots are not decided yet,
    /// so each could be the one that is chosen).
    fn phase1_configs(&self) -> Vec<Membership> {
        let mut out: Vec<Membership> =
            self.memberships.governing_after(self.log.committed).cloned().collect();
        let mut push = |m: Membership| {
            if !out.contains(&m) {
                out.push(m);
            }
        };
        for m in self.log_configs.values() {
            push(m.clone());
        }
        if let Some(c) = &self.campaign {
            for (_, entries) in c.promises.values() {
                for e in entries.iter().filter(|e| e.kind == EntryKind::Membership) {
                    if let Ok(m) = decode_exact::<Membership>(e.payload.clone()) {
                        push(m);
                    }
                }
            }
        }
        out
    }

    /// Sends a prepare to every voter phase 1 needs that was not asked yet.
    fn send_prepares(&mut self) {
        let Some(c) = &self.campaign else { return };
        let (ballot, transfer) = (c.ballot, c.transfer);
        let mut to_ask: BTreeSet<NodeId> = BTreeSet::new();
        for m in self.phase1_configs() {
            to_ask.extend(m.voters.iter().chain(m.outgoing.iter()).copied());
        }
        to_ask.remove(&self.id);
        let c = self.campaign.as_mut().expect("checked above");
        to_ask.retain(|id| c.asked.insert(*id));
        let commit = self.log.committed;
        for to in to_ask {
            // Only once our own promise of the ballot is durable: a
            // proposer that crashed before could otherwise come back with
            // the same ballot and propose other values in it, breaking
            // "one value per slot per ballot", which learning relies on.
            let env = Envelope {
                shard: self.cfg.shard,
                from: self.id,
                to,
                body: Message { ballot, body: Body::Prepare { commit, transfer } },
            };
            self.after_persist.push(env);
        }
    }

    /// Counts promises; ends phase 1 when it is won or lost.
    fn poll(&mut self) {
        let Some(c) = &self.campaign else { return };
        let me = self.id;
        let granted = |id: NodeId| {
            if id == me {
                c.self_durable.then_some(true)
            } else if c.promises.contains_key(&id) {
                Some(true)
            } else if c.rejected.contains(&id) {
                Some(false)
            } else {
                None
            }
        };
        let (mut lost, mut pending) = (false, false);
        for m in self.phase1_configs() {
            match m.vote_result(granted) {
                VoteResult::Won => {}
                VoteResult::Lost => lost = true,
                VoteResult::Pending => pending = true,
            }
        }
        if lost {
            self.become_follower(None);
        } else if !pending {
            self.become_leader();
        }
    }

    /// Phase 1 is won: adopt, per slot above the commit point, the value of
    /// the highest ballot reported (PMS P2c), fill holes with no-ops, pad
    /// every change in play up to where it takes effect, and re-propose all
    /// of it in our ballot.
    fn become_leader(&mut self) {
        let c = self.campaign.take().expect("only a candidate wins phase 1");
        let ballot = c.ballot;
        let commit = self.log.committed;
        let last = self.log.last_index();
        let own = match self.log.all_entries(commit.next(), last.next()) {
            Ok(own) => own,
            Err(_) => {
                // Our own log is unreadable: we cannot tell what we
                // accepted, so we cannot lead. Someone else will.
                self.become_follower(None);
                return;
            }
        };
        let lowest = self.bug_adopt_lowest();
        let commits: BTreeMap<NodeId, LogIndex> =
            c.promises.iter().map(|(id, (commit, _))| (*id, *commit)).collect();
        let mut best: BTreeMap<LogIndex, Entry> = BTreeMap::new();
        let reported = own.into_iter().chain(c.promises.into_values().flat_map(|(_, e)| e));
        for e in reported.filter(|e| e.index > commit && !is_vacant(e)) {
            match best.get(&e.index) {
                Some(old) if (e.epoch > old.epoch) == lowest || e.epoch == old.epoch => {}
                _ => {
                    best.insert(e.index, e);
                }
            }
        }
        let mut end = best.keys().next_back().copied().unwrap_or(commit).max(last);
        // A change takes effect α slots after its own, and its proposer
        // pads the gap with no-ops; if it failed before they were accepted
        // we pad in its place. Otherwise an idle group would wait for
        // traffic for ever before the change took effect, refusing every
        // further change meanwhile.
        let changes = best.iter().filter(|(_, e)| e.kind == EntryKind::Membership).map(|(s, _)| *s);
        for s in self.memberships.pending_after(commit).into_iter().chain(changes) {
            end = end.max(s.plus(self.delay.saturating_sub(1)));
        }
        let mut run = Vec::with_capacity((end.0 - commit.0) as usize);
        let mut s = commit.next();
        while s <= end {
            let mut e = best.remove(&s).unwrap_or_else(|| Entry {
                index: s,
                epoch: ballot,
                kind: EntryKind::Noop,
                payload: Bytes::new(),
            });
            e.epoch = ballot;
            run.push(e);
            s = s.next();
        }
        self.log_configs.clear();
        for e in run.iter().filter(|e| e.kind == EntryKind::Membership) {
            if let Ok(m) = decode_exact::<Membership>(e.payload.clone()) {
                self.log_configs.insert(e.index, m);
            }
        }
        if self.log.replace(run).is_err() {
            self.become_follower(None);
            return;
        }
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.boot_lease_guard = false;
        self.reset_timer();
        self.phase1_end = self.log.last_index();
        self.peers.clear();
        for id in self.leader_members() {
            if id != self.id {
                self.peers.push((id, Peer::new(commits.get(&id).copied())));
            }
        }
    }

    /// Every member a leader replicates to: those of the configurations
    /// deciding slots above the commit point, and of configurations in its
    /// log that may take effect later (so new members catch up early).
    fn leader_members(&self) -> BTreeSet<NodeId> {
        let mut ids = BTreeSet::new();
        for m in self.memberships.governing_after(self.log.committed) {
            ids.extend(m.members());
        }
        for m in self.log_configs.values() {
            ids.extend(m.members());
        }
        ids
    }

    /// Brings the leader's peer set in line with its configurations.
    fn sync_peers(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members = self.leader_members();
        self.peers.retain(|(id, _)| members.contains(id));
        for &id in &members {
            if id == self.id {
                continue;
            }
            if let Err(i) = self.peers.binary_search_by_key(&id, |(p, _)| *p) {
                self.peers.insert(i, (id, Peer::new(None)));
            }
        }
        if let Some(t) = self.transfer
            && !self.memberships.config_for(self.log.committed.next()).voters.contains(&t.to)
        {
            self.transfer = None;
        }
    }

    /// Whether we heard from a leader less than an election timeout ago (or
    /// may have, before a restart, in lease mode), so a promise now could
    /// depose a live leader or break its lease.
    fn in_lease(&self) -> bool {
        self.election_elapsed < self.cfg.election_ticks
            && (self.leader.is_some() || self.boot_lease_guard)
            && !self.leader_down.is_down()
    }

    /// Takes a leader-down hint about `to` (see [`Replica::report_unreachable`]).
    /// Without check-quorum nobody defends a lease, so a hinted campaign
    /// would only depose live leaders sooner; in lease mode it would break
    /// the lease.
    fn maybe_suspect_leader(&mut self, to: NodeId) {
        if self.role != Role::Follower
            || self.leader != Some(to)
            || self.leader_down.is_down()
            || !self.cfg.check_quorum
            || self.cfg.read_mode != ReadMode::ReadIndex
        {
            return;
        }
        self.leader_down.suspect(&mut self.rng, self.election_elapsed, self.cfg.heartbeat_ticks);
    }

    fn clear_leader_down(&mut self) {
        self.leader_down = LeaderDownHint::None;
    }

    // ---------------------------------------------------------------- sending

    fn send_with(&mut self, to: NodeId, ballot: Epoch, body: Body) {
        let env =
            Envelope { shard: self.cfg.shard, from: self.id, to, body: Message { ballot, body } };
        self.messages.push(env);
    }

    fn send(&mut self, to: NodeId, body: Body) {
        self.send_with(to, self.promised, body);
    }

    /// Sends a message that promises durable state: only after persisting.
    fn send_after_persist(&mut self, to: NodeId, ballot: Epoch, body: Body) {
        let env =
            Envelope { shard: self.cfg.shard, from: self.id, to, body: Message { ballot, body } };
        if self.bug_ack_early() {
            self.messages.push(env);
        } else {
            self.after_persist.push(env);
        }
    }

    fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|(p, _)| *p == id).map(|(_, p)| p)
    }

    fn peer_mut(&mut self, id: NodeId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|(p, _)| *p == id).map(|(_, p)| p)
    }

    /// The last slot phase 2 may reach now: α past the commit point.
    fn window_end(&self) -> LogIndex {
        self.log.last_index().min(self.log.committed.plus(self.delay))
    }

    /// Whether `p` has something to be sent by [`Paxos::flush_accepts`].
    fn wants_send(&self, p: &Peer) -> bool {
        if p.state != ProgressState::Replicate {
            return false;
        }
        if p.next < self.log.first_index() {
            // Such a peer needs a snapshot, which `ready` starts only if
            // the storage has one to send (not while one is being made):
            // claiming work without it promised a Ready that came out
            // empty (sim seed 848). Same conditions as `start_snapshot`.
            return p.recent_active && self.load_snapshot();
        }
        (p.next <= self.window_end() && p.can_send(self.cfg.max_inflight_messages))
            || p.commit_sent < self.log.committed
    }

    /// Sends every peer the accepts it can take now (batching every
    /// proposal since the last Ready), and the commit point to those that
    /// got nothing else.
    fn flush_accepts(&mut self) {
        let ballot = self.promised;
        let (first, end, committed) =
            (self.log.first_index(), self.window_end(), self.log.committed);
        for i in 0..self.peers.len() {
            let to = self.peers[i].0;
            if self.peers[i].1.state != ProgressState::Replicate {
                continue;
            }
            if self.peers[i].1.next < first {
                self.start_snapshot(to);
                continue;
            }
            loop {
                let p = &self.peers[i].1;
                if p.next > end || !p.can_send(self.cfg.max_inflight_messages) {
                    break;
                }
                let mut entries =
                    match self.log.entries(p.next, end.next(), self.cfg.max_message_bytes) {
                        Ok(e) if !e.is_empty() => e,
                        Err(LogError::Compacted { .. }) => {
                            self.start_snapshot(to);
                            break;
                        }
                        // The storage failed; a heartbeat response retries.
                        _ => break,
                    };
                for e in &mut entries {
                    // Chosen slots below our phase 1 keep their old ballot
                    // here; re-sent, they are proposals of ours.
                    e.epoch = ballot;
                }
                let hi = entries.last().expect("non-empty").index;
                let p = &mut self.peers[i].1;
                p.sent(hi);
                p.commit_sent = committed;
                self.send(to, Body::Accept { entries, commit: committed });
            }
            let p = &self.peers[i].1;
            if p.state == ProgressState::Replicate && p.commit_sent < committed {
                self.send_heartbeat(i, self.reads.round);
            }
        }
    }

    fn send_heartbeat(&mut self, i: usize, round: u64) {
        let (to, p) = &mut self.peers[i];
        let commit = self.log.committed;
        p.commit_sent = commit;
        let to = *to;
        let sent_tick = self.ticks;
        self.send(to, Body::Heartbeat { commit, round, sent_tick });
    }

    fn broadcast_heartbeat(&mut self) -> u64 {
        let round = self.reads.next_round();
        for i in 0..self.peers.len() {
            self.send_heartbeat(i, round);
        }
        round
    }

    fn start_snapshot(&mut self, to: NodeId) {
        if !self.peer(to).is_some_and(|p| p.recent_active) {
            // Do not ship a snapshot to a peer that may be down.
            return;
        }
        if !self.load_snapshot() {
            // Being made, or failed: a later heartbeat response retries.
            return;
        }
        let snapshot = self.loaded_snapshot.get_mut().clone().expect("loaded above");
        self.peer_mut(to).expect("peer checked above").become_snapshot(snapshot);
        self.send_snapshot_chunks(to);
    }

    /// Whether the storage has a snapshot to send now, keeping it in
    /// `loaded_snapshot`: read from the storage only if the one kept is not
    /// its latest. A failed read is not remembered, so the next call asks
    /// again, as `start_snapshot` would.
    fn load_snapshot(&self) -> bool {
        let first = self.log.storage.first_index();
        let mut loaded = self.loaded_snapshot.borrow_mut();
        if loaded.as_ref().is_some_and(|s| s.meta.index.next() == first) {
            return true;
        }
        *loaded = self.log.storage.snapshot().ok();
        loaded.is_some()
    }

    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk = self.cfg.snapshot_chunk_bytes;
        let window = chunk.saturating_mul(self.cfg.max_inflight_messages as u64);
        loop {
            let Some(s) = self.peer_mut(to).and_then(|p| p.snapshot.as_mut()) else { return };
            if s.sent > s.acked && s.sent - s.acked >= window {
                return;
            }
            let Some((offset, data)) = s.next_chunk(chunk) else { return };
            let body = Body::Snapshot {
                meta: s.snapshot.meta.clone(),
                total_bytes: s.total(),
                offset,
                data,
            };
            self.send(to, body);
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        // A transfer's prepare ignores leases, so ours ends here.
        self.lease_void = true;
        self.send(to, Body::TimeoutNow);
    }

    // ---------------------------------------------------------------- leader

    fn committed_in_ballot(&self) -> bool {
        self.role == Role::Leader && self.log.committed >= self.phase1_end
    }

    /// Advances the commit point over every slot that a quorum of its
    /// configuration accepted in our ballot (our own acceptance counts once
    /// durable).
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let end = self.window_end();
        let (me, persisted) = (self.id, self.log.persisted);
        let mut c = self.log.committed;
        while c < end {
            let s = c.next();
            let peers = &self.peers;
            let won = self.memberships.config_for(s).vote_result(|id| {
                Some(if id == me {
                    s <= persisted
                } else {
                    peers.iter().any(|(p, pr)| *p == id && pr.has(s))
                })
            }) == VoteResult::Won;
            if !won {
                break;
            }
            c = s;
        }
        if c > self.log.committed {
            self.log.commit_to(c);
            self.on_commit_advanced();
        }
    }

    /// Settles what a higher commit point decides: chosen configurations,
    /// the uncommitted budget, reads, and a removed leader's exit.
    fn on_commit_advanced(&mut self) {
        let committed = self.log.committed;
        self.uncommitted.commit_to(committed);
        while let Some(entry) = self.log_configs.first_entry() {
            if *entry.key() > committed {
                break;
            }
            let (slot, m) = entry.remove_entry();
            if slot > self.log.snapshot_index() {
                self.memberships.push(slot, m);
            }
        }
        if self.pending_change.is_some_and(|s| s <= committed) {
            self.pending_change = None;
        }
        if self.role != Role::Leader {
            return;
        }
        self.sync_peers();
        self.advance_reads();
        self.maybe_hand_over();
    }

    /// Whether every configuration deciding a slot past the commit point
    /// has a quorum among us and the peers `ok` accepts.
    fn quorum_of_all(&self, ok: impl Fn(&Peer) -> bool) -> bool {
        let (me, peers) = (self.id, &self.peers);
        self.memberships.governing_after(self.log.committed).all(|m| {
            m.vote_result(|id| Some(id == me || peers.iter().any(|(p, pr)| *p == id && ok(pr))))
                == VoteResult::Won
        })
    }

    fn lease_valid(&self) -> bool {
        let ReadMode::Lease { drift_ticks } = self.cfg.read_mode else { return false };
        if self.lease_void {
            return false;
        }
        let span = u64::from(self.cfg.election_ticks - drift_ticks);
        let now = self.ticks;
        self.quorum_of_all(|p| p.acked_tick.is_some_and(|t| now < t.saturating_add(span)))
    }

    fn leader_read(&mut self, read: PendingRead) -> Result<(), ProposeError> {
        let pending = self.reads.pending();
        if pending >= self.cfg.max_pending_reads {
            return Err(ProposeError::Busy {
                pending: pending as u64,
                limit: self.cfg.max_pending_reads as u64,
            });
        }
        if self.committed_in_ballot() && self.lease_valid() {
            let index = self.log.committed;
            self.deliver_read(index, read);
            return Ok(());
        }
        self.reads.push(read);
        Ok(())
    }

    fn deliver_read(&mut self, index: LogIndex, read: PendingRead) {
        match read.from {
            None => self.read_states.push(ReadState { id: read.id, index }),
            Some(to) => self.send(to, Body::ReadIndexResponse { id: read.id, index }),
        }
    }

    /// Starts a heartbeat round for the reads that arrived since the last
    /// one, once everything re-proposed after phase 1 is committed.
    fn flush_reads(&mut self) {
        if !self.reads.has_unsent() || !self.committed_in_ballot() {
            return;
        }
        let round = self.broadcast_heartbeat();
        self.reads.assign_unsent(round, self.log.committed);
        self.advance_reads();
    }

    fn advance_reads(&mut self) {
        let mut confirmed = Vec::new();
        let mut reads = std::mem::take(&mut self.reads);
        reads
            .take_confirmed(|round| self.quorum_of_all(|p| p.acked_round >= round), &mut confirmed);
        self.reads = reads;
        for (index, read) in confirmed {
            self.deliver_read(index, read);
        }
    }

    fn maybe_finish_transfer(&mut self, from: NodeId) {
        let Some(t) = self.transfer else { return };
        if t.to != from || self.role != Role::Leader {
            return;
        }
        let (last, committed) = (self.log.last_index(), self.log.committed);
        // The target must know everything chosen, or acceptors that know
        // more would refuse its prepare.
        if self.peer(from).is_some_and(|p| p.matched >= last && p.commit >= committed) {
            self.send_timeout_now(from);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                // A leader that cannot reach a quorum steps down, so clients
                // find the real leader.
                if !self.quorum_of_all(|p| p.recent_active) {
                    self.become_follower(None);
                    return;
                }
                for (_, p) in &mut self.peers {
                    p.recent_active = false;
                }
            }
        }
        if let Some(t) = &mut self.transfer {
            t.elapsed += 1;
            if t.elapsed >= self.cfg.election_ticks {
                // The target did not take over in time; keep leading.
                self.transfer = None;
            }
        }
        let (election_ticks, stall) =
            (self.cfg.election_ticks, self.cfg.heartbeat_ticks * STALL_HEARTBEATS);
        let mut resend = Vec::new();
        for (id, p) in &mut self.peers {
            if let Some(s) = &mut p.snapshot {
                s.idle_ticks += 1;
                if s.idle_ticks >= election_ticks {
                    let acked = s.acked;
                    s.rewind_to(acked);
                    resend.push(*id);
                }
            } else if p.outstanding() {
                p.stalled_ticks += 1;
                if p.stalled_ticks >= stall {
                    // Accepts or their answers were lost: resend from the
                    // first hole.
                    let matched = p.matched;
                    p.become_replicate(matched);
                }
            }
        }
        for id in resend {
            self.send_snapshot_chunks(id);
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.cfg.election_ticks {
            self.boot_lease_guard = false;
        }
        let due = self.leader_down.campaign_due(self.randomized_election_ticks);
        if (self.promotable() || self.take_over)
            && self.knows_config()
            && self.election_elapsed >= due
        {
            self.start_campaign(false);
        }
    }

    // ---------------------------------------------------------------- steps

    fn step_message(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        let Message { ballot, body } = message;
        match body {
            Body::Prepare { commit, transfer } => self.on_prepare(from, ballot, commit, transfer),
            Body::Promise { commit, accepted } => {
                if let Some(c) = &mut self.campaign
                    && c.ballot == ballot
                {
                    c.promises.insert(from, (commit, accepted));
                    self.send_prepares();
                    self.poll();
                } else if self.role == Role::Leader
                    && ballot == self.promised
                    && let Some(p) = self.peer_mut(from)
                    && p.state == ProgressState::Probe
                {
                    // A promise after phase 1 was won still tells where the
                    // acceptor stands (what it reports was not needed).
                    p.recent_active = true;
                    p.commit = commit;
                    p.become_replicate(commit);
                }
            }
            Body::PromiseRejected { .. } => {
                if let Some(c) = &mut self.campaign
                    && c.ballot == ballot
                {
                    c.rejected.insert(from);
                    self.poll();
                }
            }
            Body::Nack => {
                self.highest_seen = self.highest_seen.max(ballot);
                if self.role != Role::Follower && ballot > self.promised {
                    // A higher ballot exists: we are no longer leading.
                    self.become_follower(None);
                }
            }
            Body::Accept { entries, commit } => {
                if self.admit_leader(from, ballot) {
                    self.on_accept(from, ballot, entries, commit)?;
                }
            }
            Body::Heartbeat { commit, round, sent_tick } => {
                if self.admit_leader(from, ballot) {
                    self.learn_commit(ballot, commit);
                    let body = Body::HeartbeatResponse {
                        round,
                        sent_tick,
                        commit: self.log.committed,
                        asked: commit,
                    };
                    self.send_with(from, ballot, body);
                }
            }
            Body::Snapshot { meta, total_bytes, offset, data } => {
                if self.admit_leader(from, ballot) {
                    self.on_snapshot(from, ballot, meta, total_bytes, offset, data)?;
                }
            }
            Body::TimeoutNow => {
                if self.role == Role::Follower
                    && ballot == self.promised
                    && self.leader == Some(from)
                    && self.promotable()
                {
                    self.start_campaign(true);
                }
            }
            Body::Accepted { lo, hi, commit } => {
                if self.role == Role::Leader && ballot == self.promised {
                    self.on_accepted(from, lo, hi, commit);
                }
            }
            Body::HeartbeatResponse { round, sent_tick, commit, asked } => {
                if self.role == Role::Leader && ballot == self.promised {
                    self.on_heartbeat_response(from, round, sent_tick, commit, asked);
                }
            }
            Body::SnapshotResponse { index, next_offset } => {
                if self.role == Role::Leader && ballot == self.promised {
                    self.on_snapshot_response(from, index, next_offset);
                }
            }
            Body::ReadIndex { id } => {
                if self.role == Role::Leader {
                    // Over the limit, the forwarded read is dropped; the
                    // follower's caller retries.
                    let _ = self.leader_read(PendingRead { id, from: Some(from) });
                }
            }
            Body::ReadIndexResponse { id, index } => {
                self.read_states.push(ReadState { id, index });
            }
        }
        Ok(())
    }

    /// Gate for a leader's message (accept, heartbeat, snapshot) in
    /// `ballot`: refuse it below our promise (Nack), else follow its sender.
    fn admit_leader(&mut self, from: NodeId, ballot: Epoch) -> bool {
        if ballot < self.promised {
            if self.role == Role::Follower && self.bug_accept_any_ballot() {
                return true;
            }
            let promised = self.promised;
            self.send_with(from, promised, Body::Nack);
            return false;
        }
        self.promise(ballot);
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(Some(from));
        }
        self.election_elapsed = 0;
        self.clear_leader_down();
        self.take_over = false;
        true
    }

    /// Phase 1b.
    fn on_prepare(&mut self, from: NodeId, ballot: Epoch, commit: LogIndex, transfer: bool) {
        self.highest_seen = self.highest_seen.max(ballot);
        if ballot < self.promised {
            let promised = self.promised;
            self.send_with(from, promised, Body::Nack);
            return;
        }
        let repeat = ballot == self.promised;
        if repeat && (self.role != Role::Follower || ballot.node != from) {
            return;
        }
        if !repeat && self.cfg.check_quorum && self.in_lease() && !transfer {
            // A live leader is not deposed by a proposer that merely
            // stopped hearing from it (and its lease holds).
            return;
        }
        if commit < self.log.committed {
            // We could not report what we compacted, and the candidate
            // could not serve what it lacks: let a better-informed one lead.
            let committed = self.log.committed;
            self.send_with(from, ballot, Body::PromiseRejected { commit: committed });
            if !self.promotable() {
                self.take_over = true;
            }
            return;
        }
        let accepted = match self.log.all_entries(commit.next(), self.log.last_index().next()) {
            Ok(entries) => entries.into_iter().filter(|e| !is_vacant(e)).collect(),
            // Unreadable log: no promise; the candidate retries or loses.
            Err(_) => return,
        };
        if !repeat {
            if self.role != Role::Follower {
                self.become_follower(None);
            } else {
                self.leader = None;
                self.reset_timer();
            }
            self.promise(ballot);
        }
        let committed = self.log.committed;
        self.send_after_persist(from, ballot, Body::Promise { commit: committed, accepted });
    }

    /// Phase 2b: accept every slot above our commit point, filling holes
    /// before it with vacant slots and keeping whatever follows it.
    fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Epoch,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) -> Result<(), StepError> {
        let committed = self.log.committed;
        let skip = entries.iter().take_while(|e| e.index <= committed).count();
        let (lo, hi) = match (entries.get(skip), entries.last()) {
            (Some(first), Some(last)) => (first.index, last.index),
            _ => {
                self.learn_commit(ballot, commit);
                let committed = self.log.committed;
                let body =
                    Body::Accepted { lo: committed.next(), hi: committed, commit: committed };
                self.send_with(from, ballot, body);
                return Ok(());
            }
        };
        let last = self.log.last_index();
        if lo > last.next().plus(self.delay) {
            // A hole wider than any correct leader's window: the accepts
            // before it were lost; the leader resends from our first hole.
            return Ok(());
        }
        // Leading slots we already hold in this ballot need no write.
        let mut k = skip;
        while k < entries.len()
            && entries[k].index <= last
            && self.log.epoch(entries[k].index).is_ok_and(|e| e == ballot)
        {
            k += 1;
        }
        if k < entries.len() {
            let from_slot = entries[k].index;
            let mut run = Vec::with_capacity(entries.len() - k);
            let mut s = last.next();
            while s < from_slot {
                run.push(vacant(s));
                s = s.next();
            }
            let write_lo = run.first().map_or(from_slot, |e| e.index);
            let mut configs = Vec::new();
            for e in &entries[k..] {
                if e.kind == EntryKind::Membership {
                    let m = decode_exact::<Membership>(e.payload.clone()).map_err(|_| {
                        StepError::Malformed { from, why: "membership entry does not decode" }
                    })?;
                    configs.push((e.index, m));
                }
            }
            run.extend(entries.into_iter().skip(k));
            if self.log.replace(run).is_err() {
                // Reading our own suffix failed: no acceptance, no answer.
                return Ok(());
            }
            let stale: Vec<LogIndex> =
                self.log_configs.range(write_lo..=hi).map(|(s, _)| *s).collect();
            for s in stale {
                self.log_configs.remove(&s);
            }
            self.log_configs.extend(configs);
        }
        self.learn_commit(ballot, commit);
        let committed = self.log.committed;
        self.send_after_persist(from, ballot, Body::Accepted { lo, hi, commit: committed });
        Ok(())
    }

    /// Learns slots up to `commit` chosen, for each slot that holds a value
    /// of `ballot` (the announcing leader proposes one value per slot, so a
    /// value of its ballot is the chosen one); stops at the first slot that
    /// holds anything else.
    fn learn_commit(&mut self, ballot: Epoch, commit: LogIndex) {
        let target = commit.min(self.log.last_index());
        let mut c = self.log.committed;
        while c < target {
            let s = c.next();
            if !self.log.epoch(s).is_ok_and(|e| e == ballot) {
                break;
            }
            c = s;
        }
        if c > self.log.committed {
            self.log.commit_to(c);
            self.on_commit_advanced();
        }
    }

    /// A snapshot chunk from the leader (see [`crate::snapshot`]).
    fn on_snapshot(
        &mut self,
        from: NodeId,
        ballot: Epoch,
        meta: SnapshotMeta,
        total: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StepError> {
        if meta.index <= self.log.committed {
            // We already know everything it covers.
            self.incoming_snapshot = None;
            let committed = self.log.committed;
            let body = Body::Accepted { lo: committed.next(), hi: committed, commit: committed };
            self.send_with(from, ballot, body);
            return Ok(());
        }
        if meta.membership.validate().is_err() {
            return Err(StepError::Malformed { from, why: "snapshot configuration is invalid" });
        }
        let index = meta.index;
        if offset == 0 {
            self.incoming_snapshot =
                Some(IncomingSnapshot { ballot, meta, total, data: Vec::new() });
        } else if !self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.continues(ballot, index, total, offset))
        {
            // A lost or reordered chunk, or we restarted: ask for a resend.
            let next_offset = match &self.incoming_snapshot {
                Some(s) if s.ballot == ballot && s.meta.index == index => s.received(),
                _ => 0,
            };
            self.send_with(from, ballot, Body::SnapshotResponse { index, next_offset });
            return Ok(());
        }
        let s = self.incoming_snapshot.as_mut().expect("assembly started above");
        s.data.extend_from_slice(&data);
        if s.received() < total {
            let next_offset = s.received();
            self.send_with(from, ballot, Body::SnapshotResponse { index, next_offset });
            return Ok(());
        }
        let last = self.log.last_index();
        // Our acceptances after the snapshot survive it: forgetting one could
        // hide a chosen value from a later phase 1.
        let suffix = if last > index {
            match self.log.all_entries(index.next(), last.next()) {
                Ok(s) => s,
                Err(_) => return Ok(()),
            }
        } else {
            Vec::new()
        };
        let s = self.incoming_snapshot.take().expect("assembly started above");
        let membership = s.meta.membership.clone();
        self.log.restore(Snapshot { meta: s.meta, data: Bytes::from(s.data) }, suffix);
        self.memberships.reset(index, membership);
        let stale: Vec<LogIndex> = self.log_configs.range(..=index).map(|(s, _)| *s).collect();
        for s in stale {
            self.log_configs.remove(&s);
        }
        self.on_commit_advanced();
        let body = Body::Accepted { lo: index.next(), hi: index, commit: index };
        self.send_after_persist(from, ballot, body);
        Ok(())
    }

    fn on_accepted(&mut self, from: NodeId, lo: LogIndex, hi: LogIndex, commit: LogIndex) {
        let Some(p) = self.peer_mut(from) else { return };
        p.recent_active = true;
        match p.state {
            ProgressState::Probe => {
                let matched = p.matched.max(commit);
                p.become_replicate(matched);
            }
            ProgressState::Snapshot => {
                let done = p.snapshot.as_ref().is_none_or(|s| commit >= s.snapshot.meta.index);
                if !done {
                    return;
                }
                p.become_replicate(commit);
            }
            ProgressState::Replicate => {}
        }
        p.on_accepted(lo, hi, commit);
        self.maybe_commit();
        self.maybe_finish_transfer(from);
        self.maybe_hand_over();
    }

    fn on_heartbeat_response(
        &mut self,
        from: NodeId,
        round: u64,
        sent_tick: u64,
        commit: LogIndex,
        asked: LogIndex,
    ) {
        let Some(p) = self.peer_mut(from) else { return };
        p.recent_active = true;
        p.acked_round = p.acked_round.max(round);
        p.acked_tick = Some(p.acked_tick.map_or(sent_tick, |t| t.max(sent_tick)));
        match p.state {
            ProgressState::Probe => {
                p.commit = commit;
                p.become_replicate(commit);
            }
            ProgressState::Replicate if commit < asked.min(p.matched) => {
                // It cannot learn slots we think it holds in our ballot (it
                // restarted, or holds other ballots' values): resend from
                // its commit point.
                p.commit = commit;
                p.become_replicate(commit);
            }
            ProgressState::Replicate => {
                let hi = commit;
                p.on_accepted(commit.next(), hi, commit);
            }
            ProgressState::Snapshot => {}
        }
        self.advance_reads();
        self.maybe_commit();
        self.maybe_finish_transfer(from);
        self.maybe_hand_over();
    }

    fn on_snapshot_response(&mut self, from: NodeId, index: LogIndex, next_offset: u64) {
        let Some(p) = self.peer_mut(from) else { return };
        p.recent_active = true;
        let Some(s) = p.snapshot.as_mut() else { return };
        if s.snapshot.meta.index != index {
            return;
        }
        if next_offset > s.acked && next_offset <= s.sent {
            s.acked = next_offset;
            s.idle_ticks = 0;
        } else if next_offset < s.acked {
            // The acceptor lost what it had (it restarted): start over.
            s.rewind_to(next_offset);
        }
        self.send_snapshot_chunks(from);
    }

    // ---------------------------------------------------------------- ready

    fn soft_state(&self) -> SoftState {
        SoftState { role: self.role, leader: self.leader, epoch: self.promised }
    }

    fn hard_state(&self) -> HardState {
        HardState { epoch: self.promised, vote: None, commit: self.log.committed }
    }
}

impl<S: LogStorage> Replica for Paxos<S> {
    type Message = Message;
    type Storage = S;

    fn id(&self) -> NodeId {
        self.id
    }

    fn shard(&self) -> ShardId {
        self.cfg.shard
    }

    fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.debug_check();
    }

    fn step(&mut self, message: Envelope<Message>) -> Result<(), StepError> {
        if message.shard != self.cfg.shard {
            return Err(StepError::WrongShard { expected: self.cfg.shard, got: message.shard });
        }
        if message.to != self.id {
            return Err(StepError::WrongRecipient { expected: self.id, got: message.to });
        }
        let from = message.from;
        if !from.is_valid() || from == self.id {
            return Err(StepError::Malformed {
                from,
                why: "sender is node 0 or this replica itself",
            });
        }
        let ballot = message.body.ballot;
        match &message.body.body {
            Body::Accept { entries, .. } => {
                if let Some(why) = check_accept(ballot, entries) {
                    return Err(StepError::Malformed { from, why });
                }
                if entries.iter().any(|e| {
                    e.kind == EntryKind::Membership
                        && decode_exact::<Membership>(e.payload.clone()).is_err()
                }) {
                    return Err(StepError::Malformed {
                        from,
                        why: "membership entry does not decode",
                    });
                }
            }
            Body::Promise { accepted, .. } => {
                if let Some(why) = check_promised(ballot, accepted) {
                    return Err(StepError::Malformed { from, why });
                }
                let bad_config = accepted.iter().any(|e| {
                    e.kind == EntryKind::Membership
                        && decode_exact::<Membership>(e.payload.clone()).is_err()
                });
                if bad_config {
                    return Err(StepError::Malformed {
                        from,
                        why: "promised membership entry does not decode",
                    });
                }
            }
            _ => {}
        }
        let result = self.step_message(from, message.body);
        self.debug_check();
        result
    }

    fn propose(&mut self, command: Bytes) -> Result<Proposal, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if let Some(t) = self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.to });
        }
        let bytes = command.len() as u64;
        if bytes > self.cfg.max_command_bytes {
            return Err(ProposeError::TooLarge { bytes, limit: self.cfg.max_command_bytes });
        }
        let index = self.log.last_index().next();
        let entry =
            Entry { index, epoch: self.promised, kind: EntryKind::Command, payload: command };
        let size = entry.size_bytes();
        let pending = self.uncommitted.bytes();
        if pending > 0 && pending + size > self.cfg.max_uncommitted_bytes {
            return Err(ProposeError::Busy { pending, limit: self.cfg.max_uncommitted_bytes });
        }
        self.uncommitted.add(index, size);
        self.log.append(entry);
        Ok(Proposal { index, epoch: self.promised })
    }

    fn read_index(&mut self, id: RequestId) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                let result = self.leader_read(PendingRead { id, from: None });
                self.debug_check();
                result
            }
            _ => match self.leader {
                // Followers serve linearizable reads too: the leader
                // confirms the index and sends it back.
                Some(leader) if leader != self.id => {
                    self.send(leader, Body::ReadIndex { id });
                    Ok(())
                }
                _ => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if let Some(t) = self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.to });
        }
        if to == self.id {
            return Err(ProposeError::InvalidTransferTarget {
                to,
                why: "it is already the leader",
            });
        }
        if !self.memberships.config_for(self.log.committed.next()).voters.contains(&to) {
            return Err(ProposeError::InvalidTransferTarget {
                to,
                why: "it is not a voter of the configuration in effect; promote it first",
            });
        }
        self.transfer = Some(Transfer { to, elapsed: 0 });
        // Catch the target up first (accepts and heartbeats do); its answer
        // triggers TimeoutNow once it holds and knows everything.
        self.maybe_finish_transfer(to);
        self.debug_check();
        Ok(())
    }

    fn change_membership(&mut self, change: MembershipChange) -> Result<Proposal, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if let Some(t) = self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.to });
        }
        // One change at a time, and not before phase 1's re-proposals are
        // chosen (a predecessor's change may be among them).
        let committed = self.log.committed;
        if !self.committed_in_ballot()
            || self.pending_change.is_some()
            || !self.log_configs.is_empty()
            || self.memberships.pending_after(committed).is_some()
        {
            return Err(ProposeError::MembershipChangeInProgress);
        }
        let current = self.memberships.config_for(committed.next());
        let mut next = current.enter(&change)?;
        if next.is_joint() {
            // Each slot is decided by exactly one configuration and phase 1
            // covers every one in play, so no joint phase is needed.
            next = next.leave_joint().expect("configuration is joint");
        }
        let ballot = self.promised;
        let index = self.log.last_index().next();
        let payload = Bytes::from(encode_to_vec(&next));
        let entry = Entry { index, epoch: ballot, kind: EntryKind::Membership, payload };
        self.uncommitted.add(index, entry.size_bytes());
        self.log.append(entry);
        // Pad with no-ops so the change takes effect α slots later without
        // waiting for traffic.
        for k in 1..self.delay {
            let noop = Entry {
                index: index.plus(k),
                epoch: ballot,
                kind: EntryKind::Noop,
                payload: Bytes::new(),
            };
            self.uncommitted.add(noop.index, noop.size_bytes());
            self.log.append(noop);
        }
        self.log_configs.insert(index, next);
        self.pending_change = Some(index);
        self.sync_peers();
        self.debug_check();
        Ok(Proposal { index, epoch: ballot })
    }

    fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft
            || self.hard_state() != self.last_hard
            || self.log.has_unemitted()
            || self.log.has_next_committed()
            || !self.messages.is_empty()
            || !self.after_persist.is_empty()
            || !self.read_states.is_empty()
            || (self.role == Role::Leader
                && (self.peers.iter().any(|(_, p)| self.wants_send(p))
                    || (self.reads.has_unsent() && self.committed_in_ballot())))
    }

    fn ready(&mut self) -> Option<Ready<Message>> {
        if self.role == Role::Leader {
            self.flush_accepts();
            self.flush_reads();
        }
        // Every peer that needed the snapshot holds it now.
        self.loaded_snapshot.get_mut().take();
        let mut rd = Ready::new(self.next_ready);
        let soft = self.soft_state();
        if soft != self.last_soft {
            rd.soft_state = Some(soft);
            self.last_soft = soft;
        }
        let hard = self.hard_state();
        if hard != self.last_hard {
            rd.hard_state = Some(hard);
            self.last_hard = hard;
        }
        let (snapshot, entries) = self.log.take_unemitted();
        rd.snapshot = snapshot;
        rd.entries = entries;
        // A storage failure here leaves the entries to a later Ready.
        rd.committed = self
            .log
            .take_next_committed(self.cfg.max_committed_bytes_per_ready)
            .unwrap_or_default();
        rd.messages = std::mem::take(&mut self.messages);
        rd.after_persist = std::mem::take(&mut self.after_persist);
        rd.read_states = std::mem::take(&mut self.read_states);
        if rd.is_empty() {
            return None;
        }
        let snap = rd.snapshot.as_ref().map(|s| s.meta.index);
        self.unpersisted.push_back(Unpersisted {
            number: rd.number,
            emitted_to: self.log.emitted_to(),
            low: rd.entries.first().map(|e| e.index).or(snap.map(LogIndex::next)),
            snapshot: snap,
            hard_state: rd.hard_state,
        });
        self.next_ready = ReadyNumber(self.next_ready.0 + 1);
        self.debug_check();
        Some(rd)
    }

    fn on_persisted(&mut self, number: ReadyNumber) {
        let mut durable_to = None;
        while self.unpersisted.front().is_some_and(|u| u.number <= number) {
            let u = self.unpersisted.pop_front().expect("front checked");
            if let Some(hard) = u.hard_state {
                self.durable_hard = hard;
            }
            if let Some(at) = u.snapshot {
                self.log.stable_to(LogIndex::ZERO, Some(at));
            }
            durable_to = Some(u.emitted_to);
        }
        if let Some(d) = durable_to {
            // Slots rewritten by a later Ready, or not yet handed out, are
            // not durable in their current form.
            let later = self.unpersisted.iter().filter_map(|u| u.low).min();
            let mut upto = d.min(self.log.emitted_to());
            if let Some(low) = later {
                upto = upto.min(low.prev());
            }
            self.log.stable_to(upto, None);
        }
        match self.role {
            Role::Candidate => {
                if let Some(c) = &mut self.campaign
                    && !c.self_durable
                    && self.durable_hard.epoch == c.ballot
                {
                    c.self_durable = true;
                    self.poll();
                }
            }
            Role::Leader => self.maybe_commit(),
            _ => {}
        }
        self.debug_check();
    }

    fn on_applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        // The caller may have compacted; forget configurations below it.
        let snapshot_index = self.log.storage.first_index().prev();
        self.memberships.prune_to(snapshot_index.min(self.log.applied));
    }

    fn report_unreachable(&mut self, to: NodeId) {
        self.maybe_suspect_leader(to);
        if let Some(p) = self.peer_mut(to)
            && p.state != ProgressState::Probe
        {
            // Streaming into the void helps nobody; the next heartbeat
            // answer tells where to resume.
            p.become_probe();
        }
    }

    fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    fn membership(&self) -> &Membership {
        self.memberships.config_for(self.log.committed.next())
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            shard: self.cfg.shard,
            role: self.role,
            leader: self.leader,
            epoch: self.promised,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            membership: self.memberships.config_for(self.log.committed.next()).clone(),
            progress: self.peers.iter().map(|(id, p)| p.report(*id)).collect(),
        }
    }

    fn storage(&self) -> &S {
        &self.log.storage
    }

    fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
}

#[cfg(test)]
mod tests;
