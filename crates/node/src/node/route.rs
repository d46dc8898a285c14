//! Routing client requests: proposals (placed locally on the leader or
//! forwarded to it), linearizable reads, leader-only calls, transfers; and
//! serving what other nodes forward to this one when it leads.

use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::{NodeId, ProposeError, Replica, RequestId, ShardId};
use ringkv_storage::Disk;
use ringkv_storage::mvcc::{
    Command, LeaseGrantRequest, LeaseId, LeaseRevokeRequest, RequestOp, TxnRequest,
};

use super::{
    Node, PendingCall, PendingProposal, PendingRead, PendingTransfer, Placement, ReadState,
};
use crate::cluster::added_member_id;
use crate::config::{APPLY_GAP_MAX, DATA_SHARD};
use crate::engine::Engine;
use crate::error::{NodeError, RemoteError};
use crate::frame::{LeaderReply, LeaderRequest, LeaseTtl, NodeMessage};
use crate::io::{Clock, Transport};
use crate::proposal::{
    AlarmChange, AlarmMember, Member, MemberChange, Proposal, ProposalBody, ProposalId,
};
use crate::request::{AlarmAction, ReadRequest, Reply, Request, Token, read_error};

/// Whether a proposal changes the consensus group's membership once the
/// leader reconciles the group with the member table.
pub(super) fn reconfigures(body: &ProposalBody) -> bool {
    matches!(
        body,
        ProposalBody::Member(
            MemberChange::Add(_) | MemberChange::Remove(_) | MemberChange::Promote(_)
        )
    )
}

/// Whether a command needs space: refused while NOSPACE is raised (etcd's
/// capped applier lets reads, deletes, revokes and compactions through).
pub(super) fn needs_space(body: &ProposalBody) -> bool {
    fn txn_puts(t: &TxnRequest) -> bool {
        t.success.iter().chain(&t.failure).any(|op| match op {
            RequestOp::Put(_) => true,
            RequestOp::Txn(t) => txn_puts(t),
            RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
        })
    }
    match body {
        ProposalBody::Kv(Command::Put(_) | Command::LeaseGrant(_)) => true,
        ProposalBody::Kv(Command::Txn(t)) => txn_puts(t),
        _ => false,
    }
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    pub(super) fn route_submitted(&mut self, now: Duration) {
        if self.submitted.is_empty() {
            return;
        }
        self.round_limits = super::RoundLimits {
            over_quota: self.store.size_bytes().is_ok_and(|b| b > self.cfg.quota_backend_bytes),
            apply_gap: self
                .shards
                .get(&DATA_SHARD)
                .map_or(0, |s| s.replica.status().commit.0.saturating_sub(s.applied.0)),
        };
        while let Some((token, request, deadline)) = self.submitted.pop_front() {
            self.route(token, request, deadline, now);
        }
    }

    fn route(&mut self, token: Token, request: Request, deadline: Duration, now: Duration) {
        let shard = DATA_SHARD;
        let kv = ProposalBody::Kv;
        let member = ProposalBody::Member;
        match request {
            Request::Range(r) if r.serializable => {
                self.ready_read(token, shard, ReadRequest::Range(r));
            }
            Request::Range(r) => {
                self.start_read(token, shard, ReadRequest::Range(r), deadline, now)
            }
            Request::MemberList { linearizable: false } => {
                self.ready_read(token, shard, ReadRequest::MemberList);
            }
            Request::MemberList { linearizable: true } => {
                self.start_read(token, shard, ReadRequest::MemberList, deadline, now);
            }
            Request::Put(p) => {
                self.propose_client(token, shard, kv(Command::Put(p)), deadline, None)
            }
            Request::DeleteRange(d) => {
                self.propose_client(token, shard, kv(Command::DeleteRange(d)), deadline, None);
            }
            Request::Txn(t) => {
                self.propose_client(token, shard, kv(Command::Txn(t)), deadline, None)
            }
            Request::Compact(c) => {
                self.propose_client(token, shard, kv(Command::Compaction(c)), deadline, None);
            }
            Request::LeaseGrant { id, ttl } => {
                let id = if id.is_some() { id } else { self.new_lease_id(now) };
                let ttl = ttl.max(self.cfg.lease_ttl_min_seconds());
                let cmd = Command::LeaseGrant(LeaseGrantRequest { id, ttl });
                self.propose_client(token, shard, kv(cmd), deadline, None);
            }
            Request::LeaseRevoke(id) => {
                let cmd = Command::LeaseRevoke(LeaseRevokeRequest { id });
                self.propose_client(token, shard, kv(cmd), deadline, None);
            }
            Request::LeaseKeepAlive(id) => {
                self.start_call(token, shard, LeaderRequest::LeaseKeepAlive(id), deadline, now);
            }
            Request::LeaseTimeToLive { id, keys } => {
                let body = LeaderRequest::LeaseTimeToLive { id, keys };
                self.start_call(token, shard, body, deadline, now);
            }
            Request::LeaseLeases => {
                self.start_call(token, shard, LeaderRequest::LeaseLeases, deadline, now);
            }
            Request::MemberAdd { peer_urls, is_learner } => {
                let id = added_member_id(&self.cfg.cluster_token, &peer_urls, now);
                let m = Member { id, peer_urls, is_learner, ..Member::default() };
                self.propose_client(token, shard, member(MemberChange::Add(m)), deadline, None);
            }
            Request::MemberRemove(id) => {
                self.propose_client(token, shard, member(MemberChange::Remove(id)), deadline, None);
            }
            Request::MemberUpdate { id, peer_urls } => {
                let change = MemberChange::Update { id, peer_urls };
                self.propose_client(token, shard, member(change), deadline, None);
            }
            Request::MemberPromote(id) => {
                let body = member(MemberChange::Promote(id));
                self.propose_client(token, shard, body, deadline, Some(id));
            }
            Request::Alarm { action: AlarmAction::Get, .. } => {
                let alarms = self.alarm_list(shard);
                self.complete(token, shard, Ok(Reply::Alarms(alarms)));
            }
            Request::Alarm { action, member: m, alarm } => {
                let am = AlarmMember { member: m, alarm };
                let change = if action == AlarmAction::Activate {
                    AlarmChange::Activate(am)
                } else {
                    AlarmChange::Deactivate(am)
                };
                self.propose_client(token, shard, ProposalBody::Alarm(change), deadline, None);
            }
            Request::Status => {
                let status = Box::new(self.status());
                self.complete(token, shard, Ok(Reply::Status(status)));
            }
            Request::Hash => {
                let result = self.store.read().map_err(NodeError::from).and_then(|v| {
                    let hash = v.hash(shard)?;
                    let revision = v.shard_state(shard)?.revision;
                    Ok(Reply::Hash { hash, revision })
                });
                self.complete(token, shard, result);
            }
            Request::HashKv(rev) => {
                let result = self
                    .store
                    .read()
                    .map_err(NodeError::from)
                    .and_then(|v| v.hash_kv(shard, rev).map_err(read_error))
                    .map(Reply::HashKv);
                self.complete(token, shard, result);
            }
            Request::MoveLeader(target) => self.start_transfer(token, shard, target, deadline),
            // redb reuses freed pages for new ones; shrinking the file
            // (`Database::compact`) needs exclusive access to the database,
            // which readers on other threads share. Defragment therefore
            // succeeds without work; free pages show as db size minus db
            // size in use in Status.
            Request::Defragment => self.complete(token, shard, Ok(Reply::Done)),
        }
    }

    /// A lease id nobody chose yet: the node's generator mixed with its
    /// clock and id, positive as etcd's are.
    fn new_lease_id(&mut self, now: Duration) -> LeaseId {
        let raw = self.rng.next_u64() ^ (now.as_nanos() as u64).rotate_left(21) ^ self.id.0;
        let id = (raw >> 1) as i64;
        LeaseId(if id == 0 { 1 } else { id })
    }

    /// Checks a client proposal and places it.
    fn propose_client(
        &mut self,
        token: Token,
        shard: ShardId,
        body: ProposalBody,
        deadline: Duration,
        promote: Option<NodeId>,
    ) {
        let Some(s) = self.shards.get(&shard) else {
            self.complete(token, shard, Err(NodeError::UnknownShard { shard }));
            return;
        };
        if needs_space(&body) && (s.tables.no_space() || self.round_limits.over_quota) {
            self.complete(token, shard, Err(NodeError::NoSpace));
            return;
        }
        let gap = self.round_limits.apply_gap;
        if gap > APPLY_GAP_MAX {
            let e = NodeError::TooManyRequests { pending: gap, limit: APPLY_GAP_MAX };
            self.complete(token, shard, Err(e));
            return;
        }
        let reconfigures = reconfigures(&body);
        let id = ProposalId { node: self.id, seq: self.next_seq() };
        let bytes = Proposal { id: Some(id), body }.to_bytes();
        let limit = self.cfg.request_bytes_max;
        if bytes.len() as u64 > limit {
            let e = NodeError::RequestTooLarge { bytes: bytes.len() as u64, limit };
            self.complete(token, shard, Err(e));
            return;
        }
        let p = PendingProposal {
            token: Some(token),
            deadline,
            shard,
            placement: Placement::Unplaced,
            bytes,
            promote,
            reconfigures,
        };
        self.insert_proposal(id, p);
        self.place(id);
    }

    /// Proposes on behalf of the node itself (lease expiry and checkpoints,
    /// membership, alarms, publishing its attributes). Nobody waits; the
    /// housekeeping that made it tries again later if it does not apply.
    pub(super) fn propose_internal(&mut self, shard: ShardId, body: ProposalBody, now: Duration) {
        debug_assert!(!reconfigures(&body), "housekeeping never changes the membership");
        let id = ProposalId { node: self.id, seq: self.next_seq() };
        let bytes = Proposal { id: Some(id), body }.to_bytes();
        let p = PendingProposal {
            token: None,
            deadline: now + self.cfg.request_timeout,
            shard,
            placement: Placement::Unplaced,
            bytes,
            promote: None,
            reconfigures: false,
        };
        self.insert_proposal(id, p);
        self.place(id);
    }

    /// Appends the proposal if this node leads, forwards it if another
    /// does, or leaves it unplaced until a leader is known. A leader defers
    /// a membership change until the previous one has taken effect.
    fn place(&mut self, id: ProposalId) {
        let Some(p) = self.proposals.get(&id) else { return };
        let shard = p.shard;
        let (bytes, promote, reconfigures) = (p.bytes.clone(), p.promote, p.reconfigures);
        let Some(s) = self.shards.get_mut(&shard) else { return };
        if s.is_leader() {
            if reconfigures && !self.reconfiguration_settled(shard) {
                let p = self.proposals.get_mut(&id).expect("checked above");
                p.placement = Placement::Deferred;
                return;
            }
            if let Some(m) = promote
                && let Err(e) = self.check_promotable(shard, m)
            {
                self.fail_proposal(id, e.into_node_error());
                return;
            }
            let s = self.shards.get_mut(&shard).expect("checked above");
            match s.replica.propose(bytes) {
                Ok(placed) => {
                    if reconfigures {
                        s.reconfigured_at = Some(placed.index);
                    }
                    let p = self.proposals.get_mut(&id).expect("checked above");
                    p.placement = Placement::Local { index: placed.index };
                }
                // Leadership is moving: wait for the next leader.
                Err(ProposeError::NotLeader { .. } | ProposeError::TransferInProgress { .. }) => {}
                Err(ProposeError::Busy { pending, limit }) => {
                    self.fail_proposal(id, NodeError::TooManyRequests { pending, limit });
                }
                Err(ProposeError::TooLarge { bytes, limit }) => {
                    self.fail_proposal(id, NodeError::RequestTooLarge { bytes, limit });
                }
                Err(_) => self.fail_proposal(id, NodeError::LeaderChanged),
            }
        } else if let Some(leader) = s.soft.leader.filter(|&l| l != self.id) {
            let body = match promote {
                Some(member) => LeaderRequest::MemberPromote { member, proposal: bytes },
                None => LeaderRequest::Propose(bytes),
            };
            self.push_node_message(leader, NodeMessage::Request { shard, seq: id.seq, body });
            let p = self.proposals.get_mut(&id).expect("checked above");
            p.placement = Placement::Forwarded { to: leader };
        }
    }

    /// Whether this leader may append a change of the group's membership:
    /// the consensus group's membership matches the member table with no
    /// change under way (one at a time, as etcd's strict reconfiguration
    /// check has it). The table leads and the engine follows (see
    /// `reconcile_membership`); a removed member stops as soon as it
    /// applies its removal. Without this, table changes could outrun the
    /// engine: under Multi-Paxos each change takes effect α slots after it
    /// is chosen, and two quick removals left the group waiting on two
    /// stopped voters, without a quorum.
    ///
    /// Settled means: every entry of earlier leaders is applied (one of
    /// them may be a table change), this leader's own last table change is
    /// applied, and the engine's configuration in effect has exactly the
    /// table's voters and learners.
    pub(super) fn reconfiguration_settled(&self, shard: ShardId) -> bool {
        let Some(s) = self.shards.get(&shard) else { return false };
        if !s.is_leader()
            || s.applied < s.leases_ready_at
            || s.reconfigured_at.is_some_and(|at| s.applied < at)
        {
            return false;
        }
        let st = s.replica.status();
        let m = &st.membership;
        let table = &s.tables.members;
        !m.is_joint()
            && m.voters.len() + m.learners.len() == table.len()
            && table.values().all(|t| {
                if t.is_learner { m.learners.contains(&t.id) } else { m.voters.contains(&t.id) }
            })
    }

    /// A learner may be promoted once it holds at least 90% of the
    /// leader's log (etcd's `readyPercent`), so the promotion cannot stall
    /// the quorum behind a slow new voter.
    fn check_promotable(&self, shard: ShardId, member: NodeId) -> Result<(), RemoteError> {
        let s = self.shards.get(&shard).ok_or(RemoteError::NotLeader { leader: None })?;
        match s.tables.members.get(&member) {
            None => return Err(RemoteError::MemberNotFound { id: member }),
            Some(m) if !m.is_learner => return Err(RemoteError::NotLearner { id: member }),
            Some(_) => {}
        }
        let st = s.replica.status();
        let leader_index = st.last_index.0;
        let matched = st.progress.iter().find(|p| p.id == member).map_or(0, |p| p.matched.0);
        if u128::from(matched) * 10 < u128::from(leader_index) * 9 {
            return Err(RemoteError::LearnerNotReady { id: member, matched, leader_index });
        }
        Ok(())
    }

    fn start_read(
        &mut self,
        token: Token,
        shard: ShardId,
        read: ReadRequest,
        deadline: Duration,
        now: Duration,
    ) {
        let seq = self.next_seq();
        self.reads
            .insert(seq, PendingRead { token, deadline, shard, read, state: ReadState::Unsent });
        self.send_read(seq, now);
    }

    /// Asks the engine for a read index (the leader confirms it; a
    /// follower's engine forwards the request to the leader).
    fn send_read(&mut self, seq: u64, now: Duration) {
        let Some(r) = self.reads.get(&seq) else { return };
        let Some(s) = self.shards.get_mut(&r.shard) else { return };
        let leader = s.soft.leader;
        match s.replica.read_index(RequestId(seq)) {
            Ok(()) => {
                let r = self.reads.get_mut(&seq).expect("checked above");
                r.state = ReadState::Sent { at: now, leader };
            }
            Err(ProposeError::Busy { pending, limit }) => {
                let r = self.reads.remove(&seq).expect("checked above");
                self.complete(r.token, r.shard, Err(NodeError::TooManyRequests { pending, limit }));
            }
            // No leader known: try again next round.
            Err(_) => {}
        }
    }

    fn start_call(
        &mut self,
        token: Token,
        shard: ShardId,
        request: LeaderRequest,
        deadline: Duration,
        now: Duration,
    ) {
        let seq = self.next_seq();
        let call = PendingCall { token, deadline, shard, request, sent_to: None };
        self.calls.insert(seq, call);
        self.send_call(seq, now);
    }

    /// Answers a leader-only call here if this node leads, or forwards it.
    fn send_call(&mut self, seq: u64, now: Duration) {
        let Some(c) = self.calls.get(&seq) else { return };
        let shard = c.shard;
        let Some(s) = self.shards.get(&shard) else { return };
        if s.is_leader() {
            if !s.leases_ready() {
                // Catching up on its predecessors' entries: next round.
                return;
            }
            let c = self.calls.remove(&seq).expect("checked above");
            let result = self.answer_call(shard, &c.request, now);
            let result = result.map(reply_of).map_err(RemoteError::into_node_error);
            self.complete(c.token, shard, result);
        } else if let Some(leader) = s.soft.leader.filter(|&l| l != self.id) {
            let body = c.request.clone();
            self.push_node_message(leader, NodeMessage::Request { shard, seq, body });
            self.calls.get_mut(&seq).expect("checked above").sent_to = Some(leader);
        }
    }

    /// The leader's answer to a lease call.
    fn answer_call(
        &mut self,
        shard: ShardId,
        request: &LeaderRequest,
        now: Duration,
    ) -> Result<LeaderReply, RemoteError> {
        let s = self.shards.get_mut(&shard).ok_or(RemoteError::NotLeader { leader: None })?;
        if !s.is_leader() {
            return Err(RemoteError::NotLeader { leader: s.soft.leader });
        }
        if !s.leases_ready() {
            return Err(RemoteError::Retry);
        }
        match *request {
            LeaderRequest::LeaseKeepAlive(id) => {
                let ttl = s.leases.renew(id, now).unwrap_or(0);
                Ok(LeaderReply::LeaseKeepAlive { id, ttl })
            }
            LeaderRequest::LeaseTimeToLive { id, keys } => {
                let Some((ttl, granted_ttl)) = s.leases.remaining(id, now) else {
                    return Ok(LeaderReply::LeaseTimeToLive(LeaseTtl {
                        id,
                        ttl: -1,
                        ..LeaseTtl::default()
                    }));
                };
                let keys = if keys {
                    self.store
                        .read()
                        .map_err(|_| RemoteError::Stopped)?
                        .lease(shard, id, true)
                        .map(|info| info.keys)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok(LeaderReply::LeaseTimeToLive(LeaseTtl { id, ttl, granted_ttl, keys }))
            }
            LeaderRequest::LeaseLeases => Ok(LeaderReply::LeaseLeases(s.leases.ids())),
            // Proposals are served by `propose_forwarded`, not here.
            LeaderRequest::Propose(_) | LeaderRequest::MemberPromote { .. } => {
                Err(RemoteError::Malformed)
            }
        }
    }

    fn start_transfer(&mut self, token: Token, shard: ShardId, target: NodeId, deadline: Duration) {
        let Some(s) = self.shards.get_mut(&shard) else {
            self.complete(token, shard, Err(NodeError::UnknownShard { shard }));
            return;
        };
        if !s.is_leader() {
            let leader = s.soft.leader;
            self.complete(token, shard, Err(NodeError::NotLeader { leader }));
            return;
        }
        if target == self.id {
            self.complete(token, shard, Ok(Reply::Done));
            return;
        }
        match s.replica.transfer_leadership(target) {
            Ok(()) => self.transfers.push(PendingTransfer { token, deadline, shard, target }),
            Err(ProposeError::TransferInProgress { to }) if to == target => {
                self.transfers.push(PendingTransfer { token, deadline, shard, target });
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.complete(token, shard, Err(NodeError::NotLeader { leader }));
            }
            Err(_) => self.complete(token, shard, Err(NodeError::BadTransferee { target })),
        }
    }

    /// Retries what waits for a leader, and reads whose confirmation seems
    /// lost (the engine does not answer a forwarded read that was dropped).
    pub(super) fn retry_waiting(&mut self, now: Duration) {
        let unplaced: Vec<ProposalId> = self
            .proposals
            .iter()
            .filter(|(_, p)| matches!(p.placement, Placement::Unplaced | Placement::Deferred))
            .map(|(&id, _)| id)
            .collect();
        for id in unplaced {
            self.place(id);
        }
        let resend = self.cfg.election_timeout();
        let reads: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| match r.state {
                ReadState::Unsent => true,
                ReadState::Sent { at, .. } => now >= at + resend,
                ReadState::Indexed(_) => false,
            })
            .map(|(&k, _)| k)
            .collect();
        for k in reads {
            self.send_read(k, now);
        }
        let calls: Vec<u64> =
            self.calls.iter().filter(|(_, c)| c.sent_to.is_none()).map(|(&k, _)| k).collect();
        for k in calls {
            self.send_call(k, now);
        }
    }

    /// A node-layer message from `from`.
    pub(super) fn on_node_message(&mut self, from: NodeId, m: NodeMessage, now: Duration) {
        match m {
            NodeMessage::Request { shard, seq, body } => {
                let result = match body {
                    LeaderRequest::Propose(bytes) => self.propose_forwarded(shard, bytes),
                    LeaderRequest::MemberPromote { member, proposal } => {
                        let leads = self.shards.get(&shard).is_some_and(|s| s.is_leader());
                        if leads && !self.reconfiguration_settled(shard) {
                            Err(RemoteError::Retry)
                        } else {
                            self.check_promotable(shard, member)
                                .and_then(|()| self.propose_forwarded(shard, proposal))
                        }
                    }
                    call => self.answer_call(shard, &call, now).map(Some),
                };
                let reply = match result {
                    Ok(None) => return,
                    Ok(Some(r)) => Ok(r),
                    Err(e) => Err(e),
                };
                self.push_node_message(from, NodeMessage::Reply { seq, result: reply });
            }
            NodeMessage::Reply { seq, result } => self.on_reply(from, seq, result),
            NodeMessage::Removed => self.on_removed(from),
        }
    }

    /// A member says this node was removed (its table holds the removal
    /// this node may never apply: the leader stops replicating to a removed
    /// member). Believed only from a member of this node's own table: stop
    /// serving for good, as a removed etcd member shuts down.
    fn on_removed(&mut self, from: NodeId) {
        let known =
            self.shards.get(&DATA_SHARD).is_some_and(|s| s.tables.members.contains_key(&from));
        if known && self.stopped.is_none() {
            self.stop(NodeError::Removed);
        }
    }

    /// Appends a proposal another node forwarded. `Ok(None)`: appended, no
    /// reply (the forwarding node answers when it applies the entry).
    fn propose_forwarded(
        &mut self,
        shard: ShardId,
        bytes: Bytes,
    ) -> Result<Option<LeaderReply>, RemoteError> {
        if self.stopped.is_some() {
            return Err(RemoteError::Stopped);
        }
        // Garbage from a peer must never reach every replica's log.
        let Ok(proposal) = Proposal::from_bytes(bytes.clone()) else {
            return Err(RemoteError::Malformed);
        };
        let reconfigures = reconfigures(&proposal.body);
        if reconfigures && !self.reconfiguration_settled(shard) {
            let s = self.shards.get(&shard).ok_or(RemoteError::NotLeader { leader: None })?;
            if !s.is_leader() {
                return Err(RemoteError::NotLeader { leader: s.soft.leader });
            }
            // The forwarding node places it again next round.
            return Err(RemoteError::Retry);
        }
        let s = self.shards.get_mut(&shard).ok_or(RemoteError::NotLeader { leader: None })?;
        match s.replica.propose(bytes) {
            Ok(placed) => {
                if reconfigures {
                    s.reconfigured_at = Some(placed.index);
                }
                Ok(None)
            }
            Err(ProposeError::NotLeader { leader }) => Err(RemoteError::NotLeader { leader }),
            Err(ProposeError::Busy { .. }) => Err(RemoteError::TooManyRequests),
            Err(ProposeError::TooLarge { bytes, limit }) => {
                Err(RemoteError::TooLarge { bytes, limit })
            }
            Err(_) => Err(RemoteError::NotLeader { leader: None }),
        }
    }

    fn on_reply(&mut self, from: NodeId, seq: u64, result: Result<LeaderReply, RemoteError>) {
        let pid = ProposalId { node: self.id, seq };
        if let Some(p) = self.proposals.get_mut(&pid) {
            if p.placement != (Placement::Forwarded { to: from }) {
                return;
            }
            match result {
                // Refused before appending: safe to place again.
                Err(RemoteError::NotLeader { .. }) => p.placement = Placement::Unplaced,
                // A membership change the leader holds back for now.
                Err(RemoteError::Retry) => p.placement = Placement::Deferred,
                Err(e) => self.fail_proposal(pid, e.into_node_error()),
                Ok(_) => {}
            }
            return;
        }
        let Some(c) = self.calls.get_mut(&seq) else { return };
        if c.sent_to != Some(from) {
            return;
        }
        match result {
            // Refused or not answerable yet: ask the leader again next round.
            Err(RemoteError::NotLeader { .. } | RemoteError::Retry) => c.sent_to = None,
            other => {
                let c = self.calls.remove(&seq).expect("checked above");
                let result = other.map(reply_of).map_err(RemoteError::into_node_error);
                self.complete(c.token, c.shard, result);
            }
        }
    }
}

fn reply_of(r: LeaderReply) -> Reply {
    match r {
        LeaderReply::LeaseKeepAlive { id, ttl } => Reply::LeaseKeepAlive { id, ttl },
        LeaderReply::LeaseTimeToLive(t) => Reply::LeaseTimeToLive(t),
        LeaderReply::LeaseLeases(ids) => Reply::LeaseLeases(ids),
    }
}
