//! The Raft state machine: roles, elections, replication, commit, reads,
//! transfers and membership changes, behind [`ringkv_consensus::Replica`].
//!
//! ```text
//!                 timeout (pre-vote on)        quorum of pre-votes
//!   Follower ─────────────────────▶ PreCandidate ────────────────▶ Candidate
//!     ▲  ▲ │ timeout (pre-vote off) / TimeoutNow                    │  │
//!     │  │ └─────────────────────────────────────────────────────────┘  │ quorum of
//!     │  │          higher term, leader's append, or lost election      │ durable votes
//!     │  └──────────────────────────────────────────────────────────────┤
//!     │        higher term, check-quorum failure, removed and committed ▼
//!     └───────────────────────────────────────────────────────────── Leader
//! ```
//!
//! Rules implemented, by source (Raft = Ongaro & Ousterhout 2014, "Fig. 2";
//! thesis = Ongaro 2014):
//! * Fig. 2 "All servers": a higher term in any message makes us a follower
//!   of that term; commit → apply in order.
//! * Fig. 2 RequestVote: reject lower terms; one vote per term; grant only
//!   to candidates whose log is at least as up-to-date (§5.4.1).
//! * Fig. 2 AppendEntries: reject lower terms and mismatched `prev`; drop a
//!   conflicting suffix; append; `commit = min(leaderCommit, last new)`.
//! * Fig. 2 Leaders: a no-op on election (thesis §6.4 also needs it for
//!   reads), heartbeats, per-follower `next`/`matched` ([`crate::progress`]),
//!   commit only entries of the current term by counting (§5.4.2).
//! * Thesis §9.6 pre-vote, §6.2 check-quorum, §4.2.3 ignoring votes while a
//!   leader is heard (disruptive servers), §3.10 leadership transfer, §6.4
//!   ReadIndex and leases ([`crate::read_only`]), §5.3 snapshots
//!   ([`crate::snapshot`]), §4.1-4.3 membership changes (a configuration
//!   takes effect when appended; one change at a time; the leader first
//!   commits an entry of its term; joint consensus for larger changes, left
//!   automatically; a removed leader steps down once the change commits).
//!
//! Durability (the persist-before-send discipline): a vote grant and an
//! append acknowledgement go in `Ready::after_persist`; a candidate counts
//! its own vote and a leader its own log only once `on_persisted` says they
//! are durable; `Ready::committed` holds only locally durable entries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ringkv_consensus::DetRng;
use ringkv_consensus::{
    Config, Entry, EntryKind, Envelope, Epoch, HardState, LeaderDownHint, LogError, LogIndex,
    LogStorage, Membership, MembershipChange, NodeId, ProgressState, Proposal, ProposeError,
    ReadMode, ReadState, Ready, ReadyNumber, Replica, RequestId, Role, ShardId, Snapshot,
    SoftState, Status, StepError, VoteResult, decode_exact, encode_to_vec,
};

use crate::log::RaftLog;
use crate::membership_log::MembershipLog;
use crate::message::{Body, Message, RejectHint};
#[cfg(feature = "planted-bugs")]
use crate::options::PlantedBugs;
use crate::options::{RaftError, RaftOptions};
use crate::progress::Progress;
use crate::read_only::{PendingRead, ReadOnly};
use crate::snapshot::IncomingSnapshot;

/// Bytes of log read per batch when scanning for membership entries on
/// recovery.
const RECOVERY_SCAN_BYTES: u64 = 4 << 20;

/// How a campaign starts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Campaign {
    /// A pre-vote round first (thesis §9.6).
    PreVote,
    /// A real election.
    Election,
    /// A real election after `TimeoutNow`: voters ignore their lease.
    Transfer,
}

/// A leadership transfer in progress (thesis §3.10).
#[derive(Copy, Clone, Debug)]
struct Transfer {
    to: NodeId,
    /// Ticks since it started; it is abandoned after an election timeout.
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

    fn reset(&mut self) {
        *self = Uncommitted::default();
    }
}

/// What a handed-out Ready asked to persist, to settle on `on_persisted`.
#[derive(Debug)]
struct Unpersisted {
    number: ReadyNumber,
    last_entry: Option<(LogIndex, Epoch)>,
    snapshot: Option<LogIndex>,
    hard_state: Option<HardState>,
}

/// A Raft replica of one shard: a pure state machine over a [`LogStorage`].
///
/// Construct with [`Raft::new`], then drive through [`Replica`].
#[derive(Debug)]
pub struct Raft<S: LogStorage> {
    id: NodeId,
    cfg: Config,
    #[cfg(feature = "planted-bugs")]
    bugs: PlantedBugs,
    rng: DetRng,

    /// Fig. 2 `currentTerm` (persisted through the hard state).
    term: Epoch,
    /// Fig. 2 `votedFor` in `term` (persisted through the hard state).
    vote: Option<NodeId>,
    log: RaftLog<S>,
    membership: MembershipLog,

    role: Role,
    leader: Option<NodeId>,
    /// Ticks since construction: the leader's clock for leases.
    ticks: u64,
    /// Followers and candidates: ticks since the last contact from a leader
    /// or the last vote granted. Leaders: ticks since the last check-quorum.
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    /// Drawn from `[election_ticks, 2 * election_ticks)` at every reset.
    randomized_election_ticks: u32,
    /// Lease mode: after a restart, honour a lease we may have promised
    /// before crashing by refusing votes for one election timeout.
    boot_lease_guard: bool,
    /// Followers: the transport reported our leader unreachable since we
    /// last heard from it, so we no longer defend its lease, and when we
    /// campaign (see [`Replica::report_unreachable`]).
    /// Invariant: only down on a follower with a leader, pre-vote on and
    /// ReadIndex reads.
    leader_down: LeaderDownHint,

    /// Candidates: answers received in this campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Leaders: every other member's progress, ascending by id.
    peers: Vec<(NodeId, Progress)>,
    transfer: Option<Transfer>,
    reads: ReadOnly,
    uncommitted: Uncommitted,
    /// Leaders: `TimeoutNow` was sent in this term, so leases cannot be
    /// trusted any more (a transfer campaign ignores them).
    lease_void: bool,
    /// Leaders: index of this term's no-op; reads and membership changes
    /// wait until it commits.
    term_start: LogIndex,
    incoming_snapshot: Option<IncomingSnapshot>,

    messages: Vec<Envelope<Message>>,
    after_persist: Vec<Envelope<Message>>,
    read_states: Vec<ReadState>,
    last_soft: SoftState,
    last_hard: HardState,
    durable_hard: HardState,
    next_ready: ReadyNumber,
    unpersisted: VecDeque<Unpersisted>,
}

impl<S: LogStorage> Raft<S> {
    /// A replica over `storage`, recovering term, vote, commit index and
    /// membership from what it holds (a fresh storage starts a fresh
    /// replica). An empty membership means the replica waits to learn its
    /// configuration from a leader.
    ///
    /// # Errors
    /// Invalid options, unreadable storage, or storage contents that
    /// contradict themselves.
    pub fn new(options: RaftOptions, storage: S) -> Result<Raft<S>, RaftError> {
        options.validate()?;
        let cfg = options.config;
        let hard = storage.hard_state();
        let snap = storage.snapshot_meta();
        let last = storage.last_index();
        // Whatever the state machine applied was committed and is durable
        // here, even if the commit index recorded with it is older: the
        // node persists a commit-only change lazily, with the next write
        // that needs a sync.
        let commit = hard.commit.max(snap.index).max(options.applied.min(last));
        if commit > last {
            return Err(RaftError::CommitPastLog { commit, last });
        }
        let mut membership = MembershipLog::new(snap.index, snap.membership);
        let mut lo = snap.index.next();
        while lo <= last {
            let batch = storage.entries(lo, last.next(), RECOVERY_SCAN_BYTES)?;
            for e in batch.iter().filter(|e| e.kind == EntryKind::Membership) {
                let m = decode_exact::<Membership>(e.payload.clone())
                    .map_err(|_| RaftError::CorruptMembership { index: e.index })?;
                membership.push(e.index, m);
            }
            lo = batch.last().expect("a non-empty range yields at least one entry").index.next();
        }
        let log = RaftLog::new(storage, commit, options.applied);
        let mut rng = DetRng::new(cfg.seed);
        let randomized_election_ticks =
            rng.range(u64::from(cfg.election_ticks), 2 * u64::from(cfg.election_ticks)) as u32;
        let soft = SoftState { role: Role::Follower, leader: None, epoch: hard.epoch };
        let raft = Raft {
            id: cfg.id,
            boot_lease_guard: matches!(cfg.read_mode, ReadMode::Lease { .. }),
            #[cfg(feature = "planted-bugs")]
            bugs: options.planted_bugs,
            cfg,
            rng,
            term: hard.epoch,
            vote: hard.vote,
            log,
            membership,
            role: Role::Follower,
            leader: None,
            ticks: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks,
            leader_down: LeaderDownHint::None,
            votes: BTreeMap::new(),
            peers: Vec::new(),
            transfer: None,
            reads: ReadOnly::default(),
            uncommitted: Uncommitted::default(),
            lease_void: false,
            term_start: LogIndex::ZERO,
            incoming_snapshot: None,
            messages: Vec::new(),
            after_persist: Vec::new(),
            read_states: Vec::new(),
            last_soft: soft,
            last_hard: hard,
            durable_hard: hard,
            next_ready: ReadyNumber(1),
            unpersisted: VecDeque::new(),
        };
        raft.check_invariants();
        Ok(raft)
    }

    /// Starts an election now (pre-vote first if configured), as if the
    /// election timeout had elapsed. Does nothing on a leader or a replica
    /// that cannot vote.
    pub fn campaign(&mut self) {
        if self.promotable() {
            self.hup();
        }
        self.debug_check();
    }

    /// The configuration in effect at `index`, for building snapshot
    /// metadata; `None` if `index` lies below the storage's snapshot, or
    /// before the first configuration this replica learned (a replica that
    /// joined empty and received the log from the start cannot compact
    /// there).
    pub fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        self.membership.at(index).cloned()
    }

    /// The term of the entry at `index` in this replica's log (including
    /// entries not yet persisted).
    ///
    /// # Errors
    /// The index is compacted or past the end.
    pub fn term_at(&self, index: LogIndex) -> Result<Epoch, LogError> {
        self.log.term(index)
    }

    /// The replica's current term.
    pub fn term(&self) -> Epoch {
        self.term
    }

    /// The replica's current role.
    pub fn role(&self) -> Role {
        self.role
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
        assert!(self.durable_hard.epoch <= self.term, "durable term ahead of the current term");
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "a leader knows itself as leader");
                assert_eq!(self.vote, Some(self.id), "a leader voted for itself in its term");
            }
            Role::Candidate => {
                assert_eq!(self.vote, Some(self.id), "candidates vote for themselves")
            }
            Role::PreCandidate | Role::Follower => {
                assert!(self.peers.is_empty(), "only leaders track progress");
            }
        }
        assert!(
            !self.leader_down.is_down() || (self.role == Role::Follower && self.leader.is_some()),
            "only a follower with a leader suspects it"
        );
        for (id, p) in &self.peers {
            assert!(p.matched < p.next, "peer {id}: matched {} >= next {}", p.matched, p.next);
            assert!(
                p.inflights.len() <= self.cfg.max_inflight_messages,
                "peer {id}: window overflow"
            );
            assert!(p.matched <= self.log.last_index(), "peer {id} matched past our log");
        }
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    // ---------------------------------------------------------------- roles

    /// Whether this replica may campaign: it votes in the configuration in
    /// effect, or it did in the previous one and the change that took its
    /// vote away is not yet known committed. The latter keeps a leader that
    /// demoted or removed itself electable after a crash: otherwise a log
    /// holding the uncommitted change could outrank every voter's log and
    /// no one could win (thesis §4.2.2: such a server still leads C_new
    /// until C_new commits, then steps down).
    fn promotable(&self) -> bool {
        if self.has_pending_snapshot() {
            return false;
        }
        if self.membership.current().is_voter(self.id) {
            return true;
        }
        let index = self.membership.current_index();
        index > self.log.committed
            && self.membership.at(index.prev()).is_some_and(|m| m.is_voter(self.id))
    }

    fn has_pending_snapshot(&self) -> bool {
        // A snapshot not yet durable: campaigning on it could promise a log
        // we would not have after a crash.
        self.log.has_unstable_snapshot()
    }

    fn reset(&mut self, term: Epoch) {
        if self.term != term {
            assert!(term > self.term, "terms only grow");
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.clear_leader_down();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = u64::from(self.cfg.election_ticks);
        self.randomized_election_ticks = self.rng.range(base, 2 * base) as u32;
        self.votes.clear();
        self.peers.clear();
        self.transfer = None;
        self.reads.reset();
        self.uncommitted.reset();
        self.lease_void = false;
        if self.incoming_snapshot.as_ref().is_some_and(|s| s.term != term) {
            self.incoming_snapshot = None;
        }
    }

    fn become_follower(&mut self, term: Epoch, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        // The term and vote stay: a pre-vote changes no durable state.
        self.votes.clear();
        self.leader = None;
        self.clear_leader_down();
        self.role = Role::PreCandidate;
        let base = u64::from(self.cfg.election_ticks);
        self.randomized_election_ticks = self.rng.range(base, 2 * base) as u32;
        self.election_elapsed = 0;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        let next = Epoch::term(self.term.round + 1);
        self.reset(next);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate wins an election");
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        // We lead now; the guard was for a lease we may have promised to
        // an earlier leader.
        self.boot_lease_guard = false;
        let next = self.log.last_index().next();
        let membership = self.membership.current().clone();
        for id in membership.members() {
            if id != self.id {
                self.peers.push((id, Progress::new(next, self.cfg.max_inflight_messages)));
            }
        }
        // Fig. 2 / thesis §6.4: a no-op of the new term commits every earlier
        // entry and tells the leader its commit index is current.
        self.term_start = next;
        self.log.append(Entry {
            index: next,
            epoch: term,
            kind: EntryKind::Noop,
            payload: Bytes::new(),
        });
    }

    fn hup(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        self.election_elapsed = 0;
        let kind = if self.cfg.pre_vote { Campaign::PreVote } else { Campaign::Election };
        self.start_campaign(kind);
    }

    fn start_campaign(&mut self, kind: Campaign) {
        let pre_vote = kind == Campaign::PreVote;
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            // A pre-vote is a question, not a promise: count our own at once.
            self.votes.insert(self.id, true);
            Epoch::term(self.term.round + 1)
        } else {
            self.become_candidate();
            // Our own vote counts once it is durable (see on_persisted):
            // counting it earlier could elect two leaders in one term if we
            // crashed and forgot it.
            self.term
        };
        if pre_vote && self.poll() {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let membership = self.membership.current();
        let voters: Vec<NodeId> = membership
            .voters
            .iter()
            .chain(membership.outgoing.iter())
            .copied()
            .filter(|&v| v != self.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let transfer = kind == Campaign::Transfer;
        for to in voters {
            let body = Body::Vote { pre_vote, last_index, last_term, transfer };
            if pre_vote {
                self.send_with_term(to, vote_term, body);
            } else {
                // A vote request promises that this node is in the new term
                // and has voted for itself. If it left before that was durable,
                // a crash could bring us back in the old term to win the same
                // term a second time with another log, without counting our
                // own vote (thesis §3.8: persist before sending).
                self.send_after_persist(to, body);
            }
        }
    }

    /// Counts votes; returns whether the campaign ended (won or lost).
    fn poll(&mut self) -> bool {
        let votes = &self.votes;
        match self.membership.current().vote_result(|id| votes.get(&id).copied()) {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.start_campaign(Campaign::Election);
                } else {
                    self.become_leader();
                }
                true
            }
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
                true
            }
            VoteResult::Pending => false,
        }
    }

    /// Whether we heard from a leader less than an election timeout ago (or
    /// may have, before a restart, in lease mode), so a vote now could
    /// depose a live leader (thesis §4.2.3) or break its lease (§6.4.1).
    fn in_lease(&self) -> bool {
        self.election_elapsed < self.cfg.election_ticks
            && (self.leader.is_some() || self.boot_lease_guard)
            && !self.leader_down.is_down()
    }

    /// Takes a leader-down hint about `to` (see [`Replica::report_unreachable`]).
    /// Without pre-vote a hinted campaign would raise everyone's term even
    /// when the hint is wrong; in lease mode it would break the lease.
    fn maybe_suspect_leader(&mut self, to: NodeId) {
        if self.role != Role::Follower
            || self.leader != Some(to)
            || self.leader_down.is_down()
            || !self.cfg.pre_vote
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

    fn envelope(&self, to: NodeId, term: Epoch, body: Body) -> Envelope<Message> {
        Envelope { shard: self.cfg.shard, from: self.id, to, body: Message { term, body } }
    }

    fn send(&mut self, to: NodeId, body: Body) {
        let env = self.envelope(to, self.term, body);
        self.messages.push(env);
    }

    fn send_with_term(&mut self, to: NodeId, term: Epoch, body: Body) {
        let env = self.envelope(to, term, body);
        self.messages.push(env);
    }

    /// Sends a message that promises durable state: only after persisting.
    fn send_after_persist(&mut self, to: NodeId, body: Body) {
        let env = self.envelope(to, self.term, body);
        self.after_persist.push(env);
    }

    /// Acknowledges that our log matches the leader's through `index`.
    fn ack_append(&mut self, to: NodeId, index: LogIndex) {
        let body = Body::AppendResponse { index, reject: None };
        #[cfg(feature = "planted-bugs")]
        if self.bugs.ack_before_persist {
            self.send(to, body);
            return;
        }
        self.send_after_persist(to, body);
    }

    fn peer(&self, id: NodeId) -> Option<&Progress> {
        self.peers.iter().find(|(p, _)| *p == id).map(|(_, p)| p)
    }

    fn peer_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.peers.iter_mut().find(|(p, _)| *p == id).map(|(_, p)| p)
    }

    /// Sends `to` the entries it lacks from `next` on, up to the message
    /// byte limit, or an empty append carrying the commit index when
    /// `send_if_empty`. Falls back to a snapshot when the entries are
    /// compacted. Returns whether a message was sent.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(p) = self.peer(to) else { return false };
        if p.state == ProgressState::Snapshot || p.is_paused() {
            return false;
        }
        let next = p.next;
        let last = self.log.last_index();
        let prev_term = self.log.term(next.prev());
        let entries = if next <= last {
            self.log.entries(next, last.next(), self.cfg.max_message_bytes)
        } else {
            Ok(Vec::new())
        };
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(LogError::Compacted { .. }), _) | (_, Err(LogError::Compacted { .. })) => {
                return self.start_snapshot(to);
            }
            // The storage failed; nothing to send now, the next heartbeat
            // response retries.
            _ => return false,
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let committed = self.log.committed;
        let last_sent = entries.last().map(|e| e.index);
        let p = self.peer_mut(to).expect("peer checked above");
        p.on_append_sent(last_sent);
        p.commit_sent = committed;
        self.send(
            to,
            Body::Append { prev_index: next.prev(), prev_term, entries, commit: committed },
        );
        true
    }

    fn start_snapshot(&mut self, to: NodeId) -> bool {
        if !self.peer(to).is_some_and(|p| p.recent_active) {
            // Do not ship a snapshot to a peer that may be down.
            return false;
        }
        let Ok(snapshot) = self.log.storage.snapshot() else {
            // SnapshotTemporarilyUnavailable or a failure: retry on a later
            // heartbeat response.
            return false;
        };
        self.peer_mut(to).expect("peer checked above").become_snapshot(snapshot);
        self.send_snapshot_chunks(to);
        true
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
        // A transfer campaign ignores leases, so ours ends here.
        self.lease_void = true;
        self.send(to, Body::TimeoutNow);
    }

    fn broadcast_heartbeat(&mut self) -> u64 {
        let round = self.reads.next_round();
        let (committed, tick) = (self.log.committed, self.ticks);
        for i in 0..self.peers.len() {
            let (to, p) = &self.peers[i];
            // Never tell a follower to commit past what it is known to
            // match: its log beyond that may still differ from ours.
            let commit = p.matched.min(committed);
            let to = *to;
            self.send(to, Body::Heartbeat { commit, round, sent_tick: tick });
        }
        round
    }

    /// Whether the next Ready would send appends (see [`Raft::flush_appends`]).
    fn has_flushable_appends(&self) -> bool {
        let (last, committed, first) =
            (self.log.last_index(), self.log.committed, self.log.first_index());
        self.peers.iter().any(|(_, p)| {
            p.state != ProgressState::Snapshot
                && !p.is_paused()
                && p.next >= first
                && (p.next <= last || p.commit_sent < committed)
        })
    }

    /// Sends every peer what it can take now. Called once per Ready, so all
    /// proposals made since the last Ready travel in one message per peer
    /// (batching) and the window keeps the pipeline full.
    fn flush_appends(&mut self) {
        let first = self.log.first_index();
        for i in 0..self.peers.len() {
            let (to, p) = &self.peers[i];
            let to = *to;
            if p.state == ProgressState::Snapshot || p.next < first {
                // Snapshots are started by rejections and heartbeat responses.
                continue;
            }
            while self.maybe_send_append(to, false) {
                if self.peer(to).is_none_or(|p| p.state != ProgressState::Replicate) {
                    break;
                }
            }
            if self.peer(to).is_some_and(|p| p.commit_sent < self.log.committed) {
                self.maybe_send_append(to, true);
            }
        }
    }

    // ---------------------------------------------------------------- leader

    fn committed_in_term(&self) -> bool {
        self.role == Role::Leader && self.log.committed >= self.term_start
    }

    /// Advances the commit index to the highest index a quorum has durably
    /// stored, if that entry is of the current term (§5.4.2). Returns
    /// whether it moved.
    fn maybe_commit(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let (me, persisted, peers) = (self.id, self.log.persisted, &self.peers);
        let quorum = self.membership.current().committed_index(|id| {
            if id == me {
                persisted
            } else {
                peers.iter().find(|(p, _)| *p == id).map_or(LogIndex::ZERO, |(_, p)| p.matched)
            }
        });
        if quorum <= self.log.committed {
            return false;
        }
        let current_term = self.log.term(quorum).is_ok_and(|t| t == self.term);
        #[cfg(feature = "planted-bugs")]
        let current_term = current_term || self.bugs.commit_previous_term_by_counting;
        if !current_term {
            return false;
        }
        self.log.commit_to(quorum);
        self.on_commit_advanced();
        true
    }

    fn on_commit_advanced(&mut self) {
        let committed = self.log.committed;
        self.uncommitted.commit_to(committed);
        let conf_committed = self.membership.current_index() <= committed;
        if !conf_committed {
            return;
        }
        if self.membership.current().is_joint() {
            // Thesis §4.3: once C_old,new commits, the leader moves on to
            // C_new by itself.
            let next = self.membership.current().leave_joint().expect("configuration is joint");
            self.append_membership(next);
        } else if !self.membership.current().is_voter(self.id) {
            // Thesis §4.2.2: a leader outside C_new steps down once C_new is
            // committed; hand over to a caught-up voter to save a timeout.
            let last = self.log.last_index();
            let successor = self
                .peers
                .iter()
                .find(|(id, p)| p.matched == last && self.membership.current().voters.contains(id))
                .map(|(id, _)| *id);
            if let Some(to) = successor {
                self.send_timeout_now(to);
            }
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    fn append_membership(&mut self, next: Membership) {
        let index = self.log.last_index().next();
        let payload = Bytes::from(encode_to_vec(&next));
        let entry = Entry { index, epoch: self.term, kind: EntryKind::Membership, payload };
        self.uncommitted.add(index, entry.size_bytes());
        self.log.append(entry);
        self.membership.push(index, next);
        self.on_membership_changed();
    }

    /// Brings the leader's progress set in line with the configuration in
    /// effect, which may also settle commits and reads.
    fn on_membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let membership = self.membership.current().clone();
        let members = membership.members();
        let next = self.log.last_index().next();
        self.peers.retain(|(id, _)| members.contains(id));
        for &id in &members {
            if id == self.id {
                continue;
            }
            if let Err(i) = self.peers.binary_search_by_key(&id, |(p, _)| *p) {
                self.peers.insert(i, (id, Progress::new(next, self.cfg.max_inflight_messages)));
            }
        }
        if self.transfer.is_some_and(|t| !membership.voters.contains(&t.to)) {
            self.transfer = None;
        }
        self.maybe_commit();
        self.advance_reads();
    }

    fn quorum_active(&self) -> bool {
        let (me, peers) = (self.id, &self.peers);
        self.membership.current().vote_result(|id| {
            Some(id == me || peers.iter().any(|(p, pr)| *p == id && pr.recent_active))
        }) == VoteResult::Won
    }

    fn lease_valid(&self) -> bool {
        let ReadMode::Lease { drift_ticks } = self.cfg.read_mode else { return false };
        if self.lease_void {
            return false;
        }
        let span = u64::from(self.cfg.election_ticks - drift_ticks);
        let (me, peers, now) = (self.id, &self.peers, self.ticks);
        self.membership.current().vote_result(|id| {
            Some(
                id == me
                    || peers.iter().any(|(p, pr)| {
                        *p == id && pr.acked_tick.is_some_and(|t| now < t.saturating_add(span))
                    }),
            )
        }) == VoteResult::Won
    }

    fn leader_read(&mut self, read: PendingRead) -> Result<(), ProposeError> {
        let pending = self.reads.pending();
        if pending >= self.cfg.max_pending_reads {
            return Err(ProposeError::Busy {
                pending: pending as u64,
                limit: self.cfg.max_pending_reads as u64,
            });
        }
        #[cfg(feature = "planted-bugs")]
        if self.bugs.read_without_quorum {
            let index = self.log.committed;
            self.deliver_read(index, read);
            return Ok(());
        }
        if self.committed_in_term() && self.lease_valid() {
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
    /// one, once this term's no-op is committed (thesis §6.4 step 1).
    fn flush_reads(&mut self) {
        if !self.reads.has_unsent() || !self.committed_in_term() {
            return;
        }
        let round = self.broadcast_heartbeat();
        self.reads.assign_unsent(round, self.log.committed);
        self.advance_reads();
    }

    fn advance_reads(&mut self) {
        let mut confirmed = Vec::new();
        let (me, peers, membership) = (self.id, &self.peers, self.membership.current());
        self.reads.take_confirmed(
            |round| {
                membership.vote_result(|id| {
                    Some(
                        id == me || peers.iter().any(|(p, pr)| *p == id && pr.acked_round >= round),
                    )
                }) == VoteResult::Won
            },
            &mut confirmed,
        );
        for (index, read) in confirmed {
            self.deliver_read(index, read);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                // Thesis §6.2: a leader that cannot reach a quorum steps
                // down, so clients find the real leader.
                if !self.quorum_active() {
                    let term = self.term;
                    self.become_follower(term, None);
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
        let election_ticks = self.cfg.election_ticks;
        let mut resend = Vec::new();
        for (id, p) in &mut self.peers {
            if let Some(s) = &mut p.snapshot {
                s.idle_ticks += 1;
                if s.idle_ticks >= election_ticks {
                    let acked = s.acked;
                    s.rewind_to(acked);
                    resend.push(*id);
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
        if self.promotable() && self.election_elapsed >= due {
            self.hup();
        }
    }

    // ---------------------------------------------------------------- steps

    fn step_message(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        let Message { term, body } = message;
        if term > self.term {
            match &body {
                Body::Vote { pre_vote: false, transfer: false, .. }
                    if self.cfg.check_quorum && self.in_lease() =>
                {
                    // Thesis §4.2.3: a live leader is not deposed by a
                    // server that merely stopped hearing from it.
                    return Ok(());
                }
                // A pre-vote asks about a term nobody is in yet, and a grant
                // echoes that term: neither changes ours.
                Body::Vote { pre_vote: true, .. }
                | Body::VoteResponse { pre_vote: true, granted: true } => {}
                _ => {
                    let leader = message_leader(from, &body);
                    self.become_follower(term, leader);
                }
            }
        } else if term < self.term {
            match body {
                Body::Append { .. } | Body::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader learns our term and steps down, instead
                    // of us waiting forever for it (we may have raised our
                    // term while partitioned).
                    self.send(from, Body::AppendResponse { index: LogIndex::ZERO, reject: None });
                }
                // Fig. 2 RequestVote: "reply false if term < currentTerm",
                // which also tells the candidate our term.
                Body::Vote { pre_vote, .. } => {
                    self.send(from, Body::VoteResponse { pre_vote, granted: false });
                }
                _ => {}
            }
            return Ok(());
        }
        if let Body::Vote { pre_vote, last_index, last_term, transfer } = body {
            self.handle_vote(from, term, pre_vote, last_index, last_term, transfer);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(from, body),
            Role::Candidate | Role::PreCandidate => self.step_candidate(from, body),
            Role::Follower => self.step_follower(from, body),
        }
    }

    /// RequestVote receiver (Fig. 2, §5.4.1), and pre-votes (thesis §9.6).
    fn handle_vote(
        &mut self,
        from: NodeId,
        term: Epoch,
        pre_vote: bool,
        last_index: LogIndex,
        last_term: Epoch,
        transfer: bool,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        // Thesis §9.6: no pre-vote while a leader is heard from.
        let leader_alive = pre_vote && !transfer && self.in_lease();
        let up_to_date = self.log.is_up_to_date(last_index, last_term);
        #[cfg(feature = "planted-bugs")]
        let up_to_date = up_to_date || self.bugs.vote_without_log_check;
        if can_vote && up_to_date && !leader_alive {
            if pre_vote {
                // Another survivor campaigns already: ours would split the vote.
                self.leader_down.give_way();
                self.send_with_term(from, term, Body::VoteResponse { pre_vote, granted: true });
            } else {
                self.election_elapsed = 0;
                self.vote = Some(from);
                // The grant is a promise: it leaves only once the vote is durable.
                self.send_after_persist(from, Body::VoteResponse { pre_vote, granted: true });
            }
        } else {
            self.send(from, Body::VoteResponse { pre_vote, granted: false });
        }
    }

    fn step_follower(&mut self, from: NodeId, body: Body) -> Result<(), StepError> {
        match body {
            Body::Append { prev_index, prev_term, entries, commit } => {
                self.heard_from_leader(from);
                self.handle_append(from, prev_index, prev_term, entries, commit)?;
            }
            Body::Heartbeat { commit, round, sent_tick } => {
                self.heard_from_leader(from);
                let commit = commit.min(self.log.last_index());
                self.log.commit_to(commit);
                self.send(from, Body::HeartbeatResponse { round, sent_tick });
            }
            Body::Snapshot { meta, total_bytes, offset, data } => {
                self.heard_from_leader(from);
                self.handle_snapshot(from, meta, total_bytes, offset, data)?;
            }
            Body::TimeoutNow => {
                // Thesis §3.10: the target starts an election at once, with
                // no pre-vote and ignoring leases.
                if self.promotable() {
                    self.start_campaign(Campaign::Transfer);
                }
            }
            Body::ReadIndexResponse { id, index } => {
                self.read_states.push(ReadState { id, index });
            }
            // Reads forwarded to a non-leader are dropped; the sender retries.
            Body::ReadIndex { .. }
            | Body::Vote { .. }
            | Body::VoteResponse { .. }
            | Body::AppendResponse { .. }
            | Body::HeartbeatResponse { .. }
            | Body::SnapshotResponse { .. } => {}
        }
        Ok(())
    }

    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed = 0;
        self.leader = Some(from);
        self.clear_leader_down();
    }

    fn step_candidate(&mut self, from: NodeId, body: Body) -> Result<(), StepError> {
        match body {
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                // Fig. 2: a leader of our term exists; follow it.
                let term = self.term;
                self.become_follower(term, Some(from));
                self.step_follower(from, body)
            }
            Body::VoteResponse { pre_vote, granted } => {
                if pre_vote == (self.role == Role::PreCandidate) {
                    self.votes.insert(from, granted);
                    self.poll();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_leader(&mut self, from: NodeId, body: Body) -> Result<(), StepError> {
        if let Some(p) = self.peer_mut(from) {
            p.recent_active = true;
        }
        match body {
            Body::AppendResponse { index, reject } => {
                self.handle_append_response(from, index, reject)
            }
            Body::HeartbeatResponse { round, sent_tick } => {
                self.handle_heartbeat_response(from, round, sent_tick);
            }
            Body::SnapshotResponse { index, next_offset } => {
                self.handle_snapshot_response(from, index, next_offset);
            }
            Body::ReadIndex { id } => {
                // Over the limit, the forwarded read is dropped; the
                // follower's caller retries.
                let _ = self.leader_read(PendingRead { id, from: Some(from) });
            }
            // Another leader in our term would break election safety; never
            // act on it.
            _ => {}
        }
        Ok(())
    }

    /// AppendEntries receiver (Fig. 2).
    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: LogIndex,
        mut prev_term: Epoch,
        mut entries: Vec<Entry>,
        commit: LogIndex,
    ) -> Result<(), StepError> {
        let committed = self.log.committed;
        if prev_index < committed {
            // Everything up to our commit index is in the leader's log
            // already (leader completeness): skip it.
            let skip = (committed.0 - prev_index.0) as usize;
            if skip >= entries.len() {
                self.ack_append(from, committed);
                return Ok(());
            }
            prev_term = entries[skip - 1].epoch;
            prev_index = committed;
            entries.drain(..skip);
        }
        let mut configs = Vec::new();
        for e in entries.iter().filter(|e| e.kind == EntryKind::Membership) {
            let m = decode_exact::<Membership>(e.payload.clone()).map_err(|_| {
                StepError::Malformed { from, why: "membership entry does not decode" }
            })?;
            configs.push((e.index, m));
        }
        let old_last = self.log.last_index();
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Some((last_new, first_written)) => {
                if let Some(first) = first_written {
                    let mut changed = first <= old_last && self.membership.truncate_from(first);
                    for (index, m) in configs.into_iter().filter(|(i, _)| *i >= first) {
                        self.membership.push(index, m);
                        changed = true;
                    }
                    if changed {
                        self.on_membership_changed();
                    }
                }
                self.log.commit_to(commit.min(last_new));
                self.ack_append(from, last_new);
            }
            None => {
                let (index, term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                let hint = RejectHint { index, term };
                self.send(from, Body::AppendResponse { index: prev_index, reject: Some(hint) });
            }
        }
        Ok(())
    }

    /// InstallSnapshot receiver, one chunk at a time (see [`crate::snapshot`]).
    fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: ringkv_consensus::SnapshotMeta,
        total: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StepError> {
        if meta.index <= self.log.committed {
            // We already have everything it covers.
            self.incoming_snapshot = None;
            let committed = self.log.committed;
            self.ack_append(from, committed);
            return Ok(());
        }
        if meta.membership.validate().is_err() {
            return Err(StepError::Malformed { from, why: "snapshot configuration is invalid" });
        }
        let index = meta.index;
        if offset == 0 {
            self.incoming_snapshot =
                Some(IncomingSnapshot { term: self.term, meta, total, data: Vec::new() });
        } else if !self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.continues(self.term, index, total, offset))
        {
            // Lost or reordered chunk, or we restarted: ask for a resend.
            let next_offset = match &self.incoming_snapshot {
                Some(s) if s.term == self.term && s.meta.index == index => s.received(),
                _ => 0,
            };
            self.send(from, Body::SnapshotResponse { index, next_offset });
            return Ok(());
        }
        let s = self.incoming_snapshot.as_mut().expect("assembly started above");
        s.data.extend_from_slice(&data);
        if s.received() < total {
            let next_offset = s.received();
            self.send(from, Body::SnapshotResponse { index, next_offset });
            return Ok(());
        }
        let s = self.incoming_snapshot.take().expect("assembly started above");
        let membership = s.meta.membership.clone();
        let snapshot = Snapshot { meta: s.meta, data: Bytes::from(s.data) };
        if self.log.restore(snapshot) {
            self.membership.reset(index, membership);
            self.on_membership_changed();
            self.ack_append(from, index);
        } else {
            let committed = self.log.committed;
            self.ack_append(from, committed);
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        reject: Option<RejectHint>,
    ) {
        if self.peer(from).is_none() {
            return;
        }
        if let Some(hint) = reject {
            // Thesis §5.3: jump over the whole conflicting term at once.
            let probe = if hint.term > Epoch::ZERO {
                self.log.find_conflict_by_term(hint.index, hint.term).0
            } else {
                hint.index
            };
            let p = self.peer_mut(from).expect("peer checked above");
            if p.maybe_decrease_to(index, probe) {
                if p.state == ProgressState::Replicate {
                    p.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        let first = self.log.first_index();
        let p = self.peer_mut(from).expect("peer checked above");
        if p.maybe_update(index) {
            match p.state {
                ProgressState::Probe => p.become_replicate(),
                ProgressState::Snapshot => {
                    let done =
                        p.snapshot.as_ref().is_none_or(|s| p.matched >= s.snapshot.meta.index);
                    if done || p.matched.next() >= first {
                        p.become_replicate();
                    }
                }
                ProgressState::Replicate => p.inflights.free_to(index),
            }
            let matched = p.matched;
            self.maybe_commit();
            if self.role == Role::Leader
                && self.transfer.is_some_and(|t| t.to == from)
                && matched == self.log.last_index()
            {
                self.send_timeout_now(from);
            }
        } else if p.state == ProgressState::Replicate {
            p.inflights.free_to(index);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64, sent_tick: u64) {
        let last = self.log.last_index();
        let Some(p) = self.peer_mut(from) else { return };
        p.acked_round = p.acked_round.max(round);
        p.acked_tick = Some(p.acked_tick.map_or(sent_tick, |t| t.max(sent_tick)));
        // The peer is alive: let a stalled probe or window move again, so
        // lost appends are retried.
        p.probe_sent = false;
        if p.state == ProgressState::Replicate && p.inflights.is_full() {
            p.inflights.free_first();
        }
        if p.matched < last {
            self.maybe_send_append(from, true);
        }
        self.advance_reads();
    }

    fn handle_snapshot_response(&mut self, from: NodeId, index: LogIndex, next_offset: u64) {
        let Some(s) = self.peer_mut(from).and_then(|p| p.snapshot.as_mut()) else { return };
        if s.snapshot.meta.index != index {
            return;
        }
        if next_offset > s.acked && next_offset <= s.sent {
            s.acked = next_offset;
            s.idle_ticks = 0;
        } else if next_offset < s.acked {
            // The follower lost what it had (it restarted): start over there.
            s.rewind_to(next_offset);
        }
        self.send_snapshot_chunks(from);
    }

    // ---------------------------------------------------------------- ready

    fn soft_state(&self) -> SoftState {
        SoftState { role: self.role, leader: self.leader, epoch: self.term }
    }

    fn hard_state(&self) -> HardState {
        HardState { epoch: self.term, vote: self.vote, commit: self.log.committed }
    }

    fn apply_before_commit(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.bugs.apply_before_commit {
            return true;
        }
        false
    }
}

/// The leader a message from `from` reveals, if any.
fn message_leader(from: NodeId, body: &Body) -> Option<NodeId> {
    matches!(
        body,
        Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } | Body::TimeoutNow
    )
    .then_some(from)
}

impl<S: LogStorage> Replica for Raft<S> {
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
        if let Body::Append { prev_index, entries, .. } = &message.body.body {
            let contiguous = entries.first().is_none_or(|e| e.index == prev_index.next())
                && entries.last().is_none_or(|e| e.index == prev_index.plus(entries.len() as u64));
            if !contiguous {
                return Err(StepError::Malformed {
                    from,
                    why: "append entries do not follow prev_index",
                });
            }
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
        let entry = Entry { index, epoch: self.term, kind: EntryKind::Command, payload: command };
        let size = entry.size_bytes();
        let pending = self.uncommitted.bytes();
        if pending > 0 && pending + size > self.cfg.max_uncommitted_bytes {
            return Err(ProposeError::Busy { pending, limit: self.cfg.max_uncommitted_bytes });
        }
        self.uncommitted.add(index, size);
        self.log.append(entry);
        Ok(Proposal { index, epoch: self.term })
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
                // confirms the index and sends it back (thesis §6.4).
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
        if !self.membership.current().voters.contains(&to) {
            return Err(ProposeError::InvalidTransferTarget {
                to,
                why: "it is not a voter of the configuration in effect; promote it first",
            });
        }
        self.transfer = Some(Transfer { to, elapsed: 0 });
        if self.peer(to).is_some_and(|p| p.matched == self.log.last_index()) {
            self.send_timeout_now(to);
        } else {
            // Catch the target up first; its ack triggers TimeoutNow.
            self.maybe_send_append(to, true);
        }
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
        // One change at a time (thesis §4.1), and not before an entry of
        // this term commits: until then an uncommitted change of an earlier
        // leader may still be in the log (Ongaro, raft-dev, 2015).
        let current = self.membership.current();
        if current.is_joint()
            || self.membership.current_index() > self.log.committed
            || !self.committed_in_term()
        {
            return Err(ProposeError::MembershipChangeInProgress);
        }
        let next = current.enter(&change)?;
        self.append_membership(next);
        let index = self.log.last_index();
        self.debug_check();
        Ok(Proposal { index, epoch: self.term })
    }

    fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft
            || self.hard_state() != self.last_hard
            || self.log.has_unemitted()
            || self.log.has_next_committed(self.apply_before_commit())
            || !self.messages.is_empty()
            || !self.after_persist.is_empty()
            || !self.read_states.is_empty()
            || (self.role == Role::Leader
                && (self.has_flushable_appends()
                    || (self.reads.has_unsent() && self.committed_in_term())))
    }

    fn ready(&mut self) -> Option<Ready<Message>> {
        if self.role == Role::Leader {
            self.flush_appends();
            self.flush_reads();
        }
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
        let before_commit = self.apply_before_commit();
        // A storage failure here leaves the entries to a later Ready.
        rd.committed = self
            .log
            .take_next_committed(self.cfg.max_committed_bytes_per_ready, before_commit)
            .unwrap_or_default();
        rd.messages = std::mem::take(&mut self.messages);
        rd.after_persist = std::mem::take(&mut self.after_persist);
        rd.read_states = std::mem::take(&mut self.read_states);
        if rd.is_empty() {
            return None;
        }
        self.unpersisted.push_back(Unpersisted {
            number: rd.number,
            last_entry: rd.entries.last().map(|e| (e.index, e.epoch)),
            snapshot: rd.snapshot.as_ref().map(|s| s.meta.index),
            hard_state: rd.hard_state,
        });
        self.next_ready = ReadyNumber(self.next_ready.0 + 1);
        self.debug_check();
        Some(rd)
    }

    fn on_persisted(&mut self, number: ReadyNumber) {
        while self.unpersisted.front().is_some_and(|u| u.number <= number) {
            let u = self.unpersisted.pop_front().expect("front checked");
            if let Some(index) = u.snapshot {
                self.log.stable_snapshot_to(index);
            }
            if let Some((index, epoch)) = u.last_entry {
                self.log.stable_to(index, epoch);
            }
            if let Some(hard) = u.hard_state {
                self.durable_hard = hard;
            }
        }
        match self.role {
            Role::Candidate
                if self.durable_hard.epoch == self.term
                    && self.durable_hard.vote == Some(self.id)
                    && !self.votes.contains_key(&self.id) =>
            {
                self.votes.insert(self.id, true);
                self.poll();
            }
            Role::Leader => {
                self.maybe_commit();
            }
            _ => {}
        }
        self.debug_check();
    }

    fn on_applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        // The caller may have compacted; forget configurations below it.
        let snapshot_index = self.log.storage.first_index().prev();
        self.membership.prune_to(snapshot_index.min(self.log.applied));
    }

    fn report_unreachable(&mut self, to: NodeId) {
        self.maybe_suspect_leader(to);
        if let Some(p) = self.peer_mut(to) {
            // Replicating optimistically into the void helps nobody; a
            // snapshot that could not be delivered is retried later.
            if p.state != ProgressState::Probe {
                p.become_probe();
            }
        }
    }

    fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    fn membership(&self) -> &Membership {
        self.membership.current()
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            shard: self.cfg.shard,
            role: self.role,
            leader: self.leader,
            epoch: self.term,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            membership: self.membership.current().clone(),
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
