//! Routing client requests: proposals (placed locally on the leader or
//! forwarded to it), linearizable reads, leader-only calls, transfers; and
//! serving what other nodes forward to this one when it leads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::{NodeId, ProposeError, Replica, RequestId, ShardId};
use ringkv_ring::{Keyspace, ShardSpan};
use ringkv_storage::Disk;
use ringkv_storage::mvcc::{
    Command, DeleteRangeRequest, LeaseGrantRequest, LeaseId, LeaseRevokeRequest, PutRequest,
    RequestOp, TxnRequest,
};

use super::{
    Node, PendingCall, PendingProposal, PendingRead, PendingTransfer, Placement, ReadKind,
    ReadState, Submitted,
};
use crate::auth::{AuthError, AuthInfo, AuthQuery, AuthStore, Credential};
use crate::cluster::added_member_id;
use crate::config::{APPLY_GAP_MAX, DATA_SHARD, META_SHARD};
use crate::engine::Engine;
use crate::error::{NodeError, RemoteError, SpanningRequest};
use crate::frame::{LeaderReply, LeaderRequest, LeaseTtl, NodeMessage};
use crate::io::{Clock, Transport};
use crate::proposal::{
    AlarmChange, AlarmMember, DrainChange, Member, MemberChange, Proposal, ProposalBody, ProposalId,
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

/// A KV command's view for the rights check, borrowed from a request.
pub(super) enum KvCheck<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
}

/// etcd's rights for a KV write (its auth applier's Put, DeleteRange and
/// Txn): write on what it writes, read on what it returns (`prev_kv`,
/// compares, ranges in a transaction), and write on every key of a lease a
/// Put attaches to (whoever attaches a key could revoke the lease).
/// `lease_keys` lists a lease's keys.
pub(super) fn check_command(
    auth: &AuthStore,
    caller: &AuthInfo,
    command: KvCheck<'_>,
    lease_keys: impl Fn(LeaseId) -> Result<Vec<Bytes>, NodeError>,
) -> Result<(), NodeError> {
    match command {
        KvCheck::Put(p) => {
            auth.check_put(caller, &p.key)?;
            if p.lease.is_some() {
                auth.check_lease_keys(caller, &lease_keys(p.lease)?)?;
            }
            if p.prev_kv {
                auth.check_range(caller, &p.key, &[])?;
            }
        }
        KvCheck::DeleteRange(d) => {
            auth.check_delete(caller, &d.key, &d.range_end)?;
            if d.prev_kv {
                auth.check_range(caller, &d.key, &d.range_end)?;
            }
        }
        KvCheck::Txn(t) => auth.check_txn(caller, t)?,
    }
    Ok(())
}

/// Whether `member` holds at least 90% of the leader's log in the group
/// whose engine status is `st` (etcd's `readyPercent`).
pub(super) fn learner_ready(
    st: &ringkv_consensus::Status,
    member: NodeId,
) -> Result<(), RemoteError> {
    let leader_index = st.last_index.0;
    let matched = st.progress.iter().find(|p| p.id == member).map_or(0, |p| p.matched.0);
    if u128::from(matched) * 10 < u128::from(leader_index) * 9 {
        return Err(RemoteError::LearnerNotReady { id: member, matched, leader_index });
    }
    Ok(())
}

/// The name of a KV request that may be sent to one data shard, `None`
/// for any other request.
fn kv_request_name(request: &Request) -> Option<&'static str> {
    Some(match request {
        Request::Range(_) => "range",
        Request::Put(_) => "put",
        Request::DeleteRange(_) => "delete range",
        Request::Txn(_) => "txn",
        Request::Compact(_) => "compact",
        Request::HashKv(_) => "hash kv",
        _ => return None,
    })
}

/// Checks a shard named by [`Node::submit_to`]: a data shard of the
/// cluster, a KV request, and no key of it pinned to another shard (a put,
/// or a single key or a range within one shard, elsewhere would be written
/// or looked for where routing by key never looks). A range over several
/// shards is accepted: it acts on the named shard's part of it, which is
/// how a caller scatters it.
pub(super) fn check_named_shard(
    keyspace: &Keyspace,
    shard: ShardId,
    request: &Request,
) -> Result<(), NodeError> {
    let Some(name) = kv_request_name(request) else {
        return Err(NodeError::WrongShard {
            request: "a request other than range, put, delete range, txn, compact or hash kv",
            shard,
            why: "only KV requests name a shard; send the others with submit",
        });
    };
    if shard.0 == 0 || shard.0 > u64::from(keyspace.shard_count()) {
        return Err(NodeError::WrongShard {
            request: name,
            shard,
            why: "it is not a data shard of this cluster (data shards are 1 to --shards)",
        });
    }
    let mut elsewhere = false;
    visit_spans(keyspace, request, &mut |span| {
        elsewhere |= matches!(span, ShardSpan::One(s) if s.0 != shard.0);
    });
    if elsewhere {
        return Err(NodeError::WrongShard {
            request: name,
            shard,
            why: "a key of it lives on another shard (see Node::keyspace)",
        });
    }
    Ok(())
}

/// Calls `f` with the span of every key and range a KV request touches: a
/// Txn's compares and every op of both branches, nested ones included.
fn visit_spans(keyspace: &Keyspace, request: &Request, f: &mut impl FnMut(ShardSpan)) {
    fn txn(keyspace: &Keyspace, t: &TxnRequest, f: &mut impl FnMut(ShardSpan)) {
        for c in &t.compare {
            f(keyspace.shards_for_etcd_range(&c.key, &c.range_end));
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => f(keyspace.shards_for_etcd_range(&r.key, &r.range_end)),
                RequestOp::Put(p) => f(keyspace.shards_for_etcd_range(&p.key, &[])),
                RequestOp::DeleteRange(d) => {
                    f(keyspace.shards_for_etcd_range(&d.key, &d.range_end));
                }
                RequestOp::Txn(t) => txn(keyspace, t, f),
            }
        }
    }
    match request {
        Request::Range(r) => f(keyspace.shards_for_etcd_range(&r.key, &r.range_end)),
        Request::Put(p) => f(keyspace.shards_for_etcd_range(&p.key, &[])),
        Request::DeleteRange(d) => f(keyspace.shards_for_etcd_range(&d.key, &d.range_end)),
        Request::Txn(t) => txn(keyspace, t, f),
        _ => {}
    }
}

/// The data shards a KV request's keys may live on.
fn request_shards(keyspace: &Keyspace, request: &Request) -> BTreeSet<ShardId> {
    let mut out = BTreeSet::new();
    visit_spans(keyspace, request, &mut |span| match span {
        ShardSpan::Empty => {}
        ShardSpan::One(s) => {
            out.insert(ShardId(s.0));
        }
        ShardSpan::All => out.extend(keyspace.shard_ids().map(|s| ShardId(s.0))),
    });
    out
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
                .values()
                .map(|s| s.replica.commit_index().0.saturating_sub(s.applied.0))
                .max()
                .unwrap_or(0),
        };
        if now >= self.next_token_sweep {
            self.tokens.expire(now);
            self.next_token_sweep = now + crate::config::AUTH_TOKEN_SWEEP_INTERVAL;
        }
        while let Some(sub) = self.submitted.pop_front() {
            let Submitted { token, request, shard: named, credential, deadline } = sub;
            let checked = self.target_shard(&request, named).and_then(|shard| {
                let caller = self.resolve(&credential, now)?;
                self.authorize(&caller, &request)?;
                Ok((shard, caller))
            });
            match checked {
                // A data shard placed on other members: the server sends
                // the request on to one of them.
                Ok((shard, _))
                    if !self.shards.contains_key(&shard) && self.is_data_shard(shard) =>
                {
                    let hosts = self.shard_replica_nodes(shard);
                    self.complete(token, shard, Err(NodeError::NotHosted { shard, hosts }));
                }
                // A replica the shard removed, not yet dropped, knows no
                // leader and never will: the shard is elsewhere (the churn
                // simulation's seed 68 waited on one until the deadline).
                Ok((shard, _)) if self.left_behind(shard) => {
                    let hosts = self.meta_tables().map(|t| t.holders_of(shard)).unwrap_or_default();
                    self.complete(token, shard, Err(NodeError::NotHosted { shard, hosts }));
                }
                Ok((shard, caller)) => {
                    self.route(token, shard, request, caller, credential, deadline, now);
                }
                Err(e) => {
                    let shard = named.unwrap_or_else(|| self.meta_shard());
                    self.complete(token, shard, Err(e));
                }
            }
        }
    }

    /// The shard that serves `request`: `named` if the caller named one
    /// (checked by [`check_named_shard`]), else the shard of its keys for
    /// a KV request and the metadata shard for anything else.
    pub(super) fn target_shard(
        &self,
        request: &Request,
        named: Option<ShardId>,
    ) -> Result<ShardId, NodeError> {
        let keyspace = &self.cfg.keyspace;
        if let Some(shard) = named {
            check_named_shard(keyspace, shard, request)?;
            return Ok(shard);
        }
        if !self.is_sharded() {
            return Ok(DATA_SHARD);
        }
        let shard_count = keyspace.shard_count();
        let one = |request: SpanningRequest, set: BTreeSet<ShardId>| match set.len() {
            // No key at all (an empty range): any shard answers it.
            0 => Ok(DATA_SHARD),
            1 => Ok(set.into_iter().next().expect("one element")),
            _ => Err(NodeError::SpansShards { request, shards: set.into_iter().collect() }),
        };
        match request {
            Request::Range(_) => one(SpanningRequest::Range, request_shards(keyspace, request)),
            Request::Put(p) => Ok(ShardId(keyspace.shard_of(&p.key).0)),
            Request::DeleteRange(_) => {
                one(SpanningRequest::DeleteRange, request_shards(keyspace, request))
            }
            Request::Txn(_) => one(SpanningRequest::Txn, request_shards(keyspace, request)),
            Request::Compact(_) => {
                Err(NodeError::ShardRequired { request: "compact", shard_count })
            }
            Request::HashKv(_) => Err(NodeError::ShardRequired { request: "hash kv", shard_count }),
            _ => Ok(META_SHARD),
        }
    }

    /// Who a credential names, as etcd's `AuthInfoFromCtx` resolves it
    /// (see [`crate::auth`]).
    pub(super) fn resolve(
        &mut self,
        credential: &Credential,
        now: Duration,
    ) -> Result<AuthInfo, NodeError> {
        let shard = self.meta_shard();
        let Some(s) = self.shards.get(&shard) else {
            return Err(NodeError::UnknownShard { shard });
        };
        let (enabled, revision) = (s.auth.enabled(), s.auth.revision());
        // While auth is disabled a bad credential is ignored, as etcd
        // ignores tokens then; a good one is still carried, so that a write
        // applied after auth is enabled runs as its author.
        let refuse =
            |who: AuthInfo| if enabled { Err(AuthError::InvalidAuthToken.into()) } else { Ok(who) };
        match credential {
            Credential::Anonymous => Ok(AuthInfo::anonymous()),
            Credential::SimpleToken(t) => {
                match self.tokens.resolve(t, now, self.cfg.auth_token_ttl) {
                    Some(user) => Ok(AuthInfo { user, revision }),
                    None => refuse(AuthInfo::anonymous()),
                }
            }
            Credential::Signed(info) => Ok(info.clone()),
            Credential::Certificate(user) => Ok(AuthInfo { user: user.clone(), revision }),
            Credential::Invalid => refuse(AuthInfo::anonymous()),
        }
    }

    /// The checks made when a request is taken: those of leader calls and
    /// of calls no replica applies, against the auth store as applied here
    /// (etcd checks these on the member that takes them too). Proposals
    /// are checked by every replica when they apply, reads once their
    /// index is applied.
    fn authorize(&self, caller: &AuthInfo, request: &Request) -> Result<(), NodeError> {
        let shard = self.meta_shard();
        let Some(s) = self.shards.get(&shard) else {
            return Err(NodeError::UnknownShard { shard });
        };
        let auth = &s.auth;
        if !auth.enabled() {
            return Ok(());
        }
        let lease_keys = |id: LeaseId| -> Result<Vec<Bytes>, NodeError> {
            match self.store.read()?.lease(shard, id, true) {
                Ok(info) => Ok(info.keys),
                Err(_) => Ok(Vec::new()),
            }
        };
        match request {
            Request::LeaseKeepAlive(id) => {
                // etcd's checkLeaseRenew: a keep-alive keeps the keys alive.
                auth.check_user(caller)?;
                auth.check_lease_keys(caller, &lease_keys(*id)?)?;
            }
            Request::LeaseTimeToLive { id, keys } => {
                auth.check_user(caller)?;
                if *keys {
                    auth.check_lease_reads(caller, &lease_keys(*id)?)?;
                }
            }
            Request::LeaseLeases => {
                auth.check_user(caller)?;
                if auth.check_admin(caller).is_err() {
                    let view = self.store.read()?;
                    for l in view.leases(shard)? {
                        let keys =
                            view.lease(shard, l.id, true).map(|i| i.keys).unwrap_or_default();
                        auth.check_lease_reads(caller, &keys)?;
                    }
                }
            }
            Request::Hash
            | Request::HashKv(_)
            | Request::MoveLeader(_)
            | Request::Defragment
            | Request::Drain { .. } => {
                auth.check_admin(caller)?;
            }
            _ => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        token: Token,
        shard: ShardId,
        request: Request,
        caller: AuthInfo,
        credential: Credential,
        deadline: Duration,
        now: Duration,
    ) {
        let kv = ProposalBody::Kv;
        let member = ProposalBody::Member;
        let who = Some(caller.clone());
        match request {
            Request::Range(r) if r.serializable => {
                self.ready_read(token, shard, ReadRequest::Range(r), &caller);
            }
            Request::Range(r) => {
                let read = ReadKind::Store(ReadRequest::Range(r));
                self.start_read(token, shard, read, credential, deadline);
            }
            Request::MemberList { linearizable: false } => {
                self.ready_read(token, shard, ReadRequest::MemberList, &caller);
            }
            Request::MemberList { linearizable: true } => {
                let read = ReadKind::Store(ReadRequest::MemberList);
                self.start_read(token, shard, read, credential, deadline);
            }
            Request::AuthQuery(q @ AuthQuery::Check(_)) => {
                // Checked now, as etcd checks a watch when it is created.
                let result = self.answer_auth(shard, &caller, &q);
                self.complete(token, shard, result);
            }
            Request::AuthQuery(q) => {
                let read = ReadKind::Auth(q);
                self.start_read(token, shard, read, credential, deadline);
            }
            Request::AuthChange(change) => {
                self.propose_client(token, shard, ProposalBody::Auth(change), who, deadline, None);
            }
            Request::Put(p) => {
                self.propose_client(token, shard, kv(Command::Put(p)), who, deadline, None)
            }
            Request::DeleteRange(d) => {
                self.propose_client(token, shard, kv(Command::DeleteRange(d)), who, deadline, None);
            }
            Request::Txn(t) => {
                self.propose_client(token, shard, kv(Command::Txn(t)), who, deadline, None)
            }
            Request::Compact(c) => {
                self.propose_client(token, shard, kv(Command::Compaction(c)), who, deadline, None);
            }
            Request::LeaseGrant { id, ttl } => {
                let id = if id.is_some() { id } else { self.new_lease_id(now) };
                let ttl = ttl.max(self.cfg.lease_ttl_min_seconds());
                let cmd = Command::LeaseGrant(LeaseGrantRequest { id, ttl });
                self.propose_client(token, shard, kv(cmd), who, deadline, None);
            }
            Request::LeaseRevoke(id) => {
                let cmd = Command::LeaseRevoke(LeaseRevokeRequest { id });
                self.propose_client(token, shard, kv(cmd), who, deadline, None);
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
                let body = member(MemberChange::Add(m));
                self.propose_client(token, shard, body, who, deadline, None);
            }
            Request::Drain { .. } if !self.cfg.placement_moves || !self.is_sharded() => {
                self.complete(token, shard, Err(NodeError::DrainNeedsPlacementMoves));
            }
            Request::Drain { member, draining } => {
                let body = ProposalBody::Drain(DrainChange { member, draining });
                self.propose_client(token, shard, body, who, deadline, None);
            }
            Request::MemberRemove(id) if let Some(e) = self.removal_strands(id) => {
                self.complete(token, shard, Err(e));
            }
            Request::MemberRemove(id) => {
                let body = member(MemberChange::Remove(id));
                self.propose_client(token, shard, body, who, deadline, None);
            }
            Request::MemberUpdate { id, peer_urls } => {
                let change = MemberChange::Update { id, peer_urls };
                self.propose_client(token, shard, member(change), who, deadline, None);
            }
            Request::MemberPromote(id) => {
                let body = member(MemberChange::Promote(id));
                self.propose_client(token, shard, body, who, deadline, Some(id));
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
                let body = ProposalBody::Alarm(change);
                self.propose_client(token, shard, body, who, deadline, None);
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

    /// Whether this node's replica of data shard `shard` knows no leader
    /// and the shard's recorded configuration leaves it out: a replica the
    /// shard removed (or never added), which will not learn a leader.
    fn left_behind(&self, shard: ShardId) -> bool {
        let Some(s) = self.shards.get(&shard) else { return false };
        self.cfg.placement_moves
            && self.is_data_shard(shard)
            && s.soft.leader.is_none()
            && self
                .meta_tables()
                .and_then(|t| t.configs.get(&shard))
                .is_some_and(|c| !c.holds(s.rid))
    }

    /// With placement moves on, the refusal of removing `member` while it
    /// is one of too few voters of some data shard (a removed member stops,
    /// and the shard could no longer reach a quorum to replace it), judged
    /// by the configurations the shards' leaders last reported; or while a
    /// shard it holds or is to hold is moving (its reported configuration
    /// may lag: the churn simulation's seed 2 removed two voters of a shard
    /// whose report still named three).
    fn removal_strands(&self, member: NodeId) -> Option<NodeError> {
        if !self.cfg.placement_moves {
            return None;
        }
        let t = self.meta_tables()?;
        let stranded = t.configs.values().find_map(|c| {
            let n = c.voters.len();
            let holds = c.voters.iter().any(|&r| t.node_of(r) == member);
            (holds && n - 1 < n / 2 + 1).then_some(NodeError::RemoveStrandsShard {
                member,
                shard: c.shard,
                voters: n,
            })
        });
        stranded.or_else(|| {
            let moving = t.targets.keys().copied().find(|&s| {
                !t.shard_settled(s)
                    && (t.targets_node(s, member) || t.holders_of(s).contains(&member))
            })?;
            Some(NodeError::RemoveWhileMoving { member, shard: moving })
        })
    }

    /// Answers an auth query for `caller` from the auth store as applied.
    pub(super) fn answer_auth(
        &self,
        shard: ShardId,
        caller: &AuthInfo,
        query: &AuthQuery,
    ) -> Result<Reply, NodeError> {
        let s = self.shards.get(&shard).ok_or(NodeError::UnknownShard { shard })?;
        s.auth.answer(caller, query).map(Reply::Auth).map_err(NodeError::from)
    }

    /// A lease id nobody chose yet: the node's generator mixed with its
    /// clock and id, positive as etcd's are.
    fn new_lease_id(&mut self, now: Duration) -> LeaseId {
        let raw = self.rng.next_u64() ^ (now.as_nanos() as u64).rotate_left(21) ^ self.id.0;
        let id = (raw >> 1) as i64;
        LeaseId(if id == 0 { 1 } else { id })
    }

    /// Checks a client proposal and places it; `auth` is the caller,
    /// checked again by every replica when it applies the entry.
    fn propose_client(
        &mut self,
        token: Token,
        shard: ShardId,
        body: ProposalBody,
        auth: Option<AuthInfo>,
        deadline: Duration,
        promote: Option<NodeId>,
    ) {
        if !self.shards.contains_key(&shard) {
            self.complete(token, shard, Err(NodeError::UnknownShard { shard }));
            return;
        }
        // The alarms live in the metadata shard; a data shard checks them
        // here only (its replicas cannot see the metadata shard's alarms
        // at the same point of their logs).
        let no_space = self.meta_tables().is_some_and(|t| t.no_space());
        if needs_space(&body) && (no_space || self.round_limits.over_quota) {
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
        let bytes = Proposal { id: Some(id), auth, body }.to_bytes();
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
    pub(super) fn propose_internal(
        &mut self,
        shard: ShardId,
        body: ProposalBody,
        now: Duration,
    ) -> ProposalId {
        debug_assert!(!reconfigures(&body), "housekeeping never changes the membership");
        let id = ProposalId { node: self.id, seq: self.next_seq() };
        let bytes = Proposal { id: Some(id), auth: None, body }.to_bytes();
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
        id
    }

    /// Appends the proposal if this node leads, forwards it if another
    /// does, or leaves it unplaced until a leader is known. A leader defers
    /// a membership change until the previous one has taken effect.
    fn place(&mut self, id: ProposalId) {
        let Some(p) = self.proposals.get(&id) else { return };
        let shard = p.shard;
        if !self.shards.contains_key(&shard) && self.is_data_shard(shard) {
            self.place_remote(id);
            return;
        }
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
            s.wake();
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

    /// Forwards a proposal for a data shard this node holds no replica of
    /// (a lease marker, an auth copy) to a node that does: the one that
    /// last said it leads the shard, else the next holder. The leader that
    /// appends it says when it applied it; a proposal whose forward is
    /// lost expires, and its fan-out proposes it again.
    fn place_remote(&mut self, id: ProposalId) {
        let Some(p) = self.proposals.get(&id) else { return };
        let shard = p.shard;
        let hosts: Vec<NodeId> =
            self.shard_replica_nodes(shard).into_iter().filter(|&n| n != self.id).collect();
        let to = match self.remote_hint.get(&shard) {
            Some(&hint) => Some(hint),
            None if hosts.is_empty() => None,
            None => Some(hosts[(id.seq % hosts.len() as u64) as usize]),
        };
        let Some(to) = to else { return };
        let body = LeaderRequest::ProposeNotify(p.bytes.clone());
        self.push_node_message(to, NodeMessage::Request { shard, seq: id.seq, body });
        let p = self.proposals.get_mut(&id).expect("checked above");
        p.placement = Placement::Forwarded { to };
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
        let table = &s.tables.members;
        // Replica ids as nodes (a data-shard replica past its first
        // incarnation has an id of its own).
        let node_of = |r: &NodeId| s.tables.node_of(*r);
        let matches = |m: &ringkv_consensus::Membership| {
            let voters: BTreeSet<NodeId> = m.voters.iter().map(node_of).collect();
            let learners: BTreeSet<NodeId> = m.learners.iter().map(node_of).collect();
            !m.is_joint()
                && m.voters.len() + m.learners.len() == table.len()
                && table.values().all(|t| {
                    if t.is_learner { learners.contains(&t.id) } else { voters.contains(&t.id) }
                })
        };
        // On a sharded cluster every data shard follows the metadata
        // shard's table (see `reconcile_membership`): the table waits for
        // each to have caught up, so that no group is left behind by two
        // quick changes (e.g. two removals leaving a shard two dead voters
        // of three). A shard placed by a target has caught up once it holds
        // no replica on a node the table no longer lists (its move may go
        // on); a shard this node does not hold is judged by the
        // configuration its leader last reported.
        let tables = &s.tables;
        let listed = |n: &NodeId| tables.members.contains_key(n) && !tables.removed.contains(n);
        let data_settled = shard != META_SHARD
            || self.cfg.keyspace.shard_ids().map(|d| ShardId(d.0)).all(|d| {
                let placed = self.cfg.placement_moves && tables.targets.contains_key(&d);
                match (self.shards.get(&d), placed) {
                    (Some(h), true) => {
                        let m = h.replica.membership();
                        !m.is_joint() && m.members().iter().map(node_of).all(|n| listed(&n))
                    }
                    (Some(h), false) => matches(h.replica.membership()),
                    (None, _) => tables
                        .configs
                        .get(&d)
                        .is_none_or(|c| c.nodes().iter().map(node_of).all(|n| listed(&n))),
                }
            });
        matches(s.replica.membership()) && data_settled
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
        learner_ready(&s.replica.status(), member)
    }

    fn start_read(
        &mut self,
        token: Token,
        shard: ShardId,
        read: ReadKind,
        credential: Credential,
        deadline: Duration,
    ) {
        let seq = self.next_seq();
        let state = ReadState::Unsent;
        self.reads.insert(seq, PendingRead { token, deadline, shard, read, credential, state });
        // Asked for with the round's other reads of the shard, later in
        // this round (`send_reads`).
    }

    /// Asks the engine for one read index per shard for all the reads not
    /// asked for yet (or asked an election timeout ago without an answer).
    /// Every read of a batch arrived before its request went out, so the
    /// index the leader confirms for the request is one each may be served
    /// at (etcd's server batches its reads the same way). One request per
    /// shard per round rather than one per read: a follower sends its
    /// leader one message a round, not one per read, and the leader
    /// answers one.
    fn send_reads(&mut self, now: Duration) {
        let resend = self.cfg.election_timeout();
        let mut due: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
        for (&k, r) in &self.reads {
            let send = match r.state {
                ReadState::Unsent => true,
                ReadState::Sent { at, .. } => now >= at + resend,
                ReadState::Indexed(_) => false,
            };
            if send {
                due.entry(r.shard).or_default().push(k);
            }
        }
        for (shard, seqs) in due {
            let batch = self.next_seq();
            let Some(s) = self.shards.get_mut(&shard) else { continue };
            s.wake();
            match s.replica.read_index(RequestId(batch)) {
                Ok(()) => {
                    for k in seqs {
                        if let Some(r) = self.reads.get_mut(&k) {
                            r.state = ReadState::Sent { at: now, batch };
                        }
                    }
                }
                Err(ProposeError::Busy { pending, limit }) => {
                    for k in seqs {
                        if let Some(r) = self.reads.remove(&k) {
                            let e = NodeError::TooManyRequests { pending, limit };
                            self.complete(r.token, r.shard, Err(e));
                        }
                    }
                }
                // No leader known: try again next round.
                Err(_) => {}
            }
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
                let keys = if keys { self.lease_keys_everywhere(id)? } else { Vec::new() };
                Ok(LeaderReply::LeaseTimeToLive(LeaseTtl { id, ttl, granted_ttl, keys }))
            }
            LeaderRequest::LeaseLeases => Ok(LeaderReply::LeaseLeases(s.leases.ids())),
            // Proposals are served by `propose_forwarded`, not here.
            LeaderRequest::Propose(_)
            | LeaderRequest::ProposeNotify(_)
            | LeaderRequest::MemberPromote { .. } => Err(RemoteError::Malformed),
        }
    }

    /// The keys attached to lease `id`: the data shard's on a one-shard
    /// cluster; on a sharded one, gathered from this node's replica of every
    /// data shard. Not linearizable per shard: a replica may lag its
    /// shard's leader, so a key attached or deleted a moment ago may be
    /// missing or still listed (every node hosts every shard in this step,
    /// so the leader answering has a replica of each).
    fn lease_keys_everywhere(&self, id: LeaseId) -> Result<Vec<Bytes>, RemoteError> {
        let view = self.store.read().map_err(|_| RemoteError::Stopped)?;
        let shards: Vec<ShardId> = if self.is_sharded() {
            self.cfg.keyspace.shard_ids().map(|s| ShardId(s.0)).collect()
        } else {
            vec![DATA_SHARD]
        };
        let mut keys = Vec::new();
        for shard in shards {
            keys.extend(view.lease(shard, id, true).map(|info| info.keys).unwrap_or_default());
        }
        keys.sort();
        Ok(keys)
    }

    fn start_transfer(&mut self, token: Token, shard: ShardId, target: NodeId, deadline: Duration) {
        // The engine knows the target node by its replica's id.
        let to_replica = self.replica_on(shard, target).unwrap_or(target);
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
        s.wake();
        match s.replica.transfer_leadership(to_replica) {
            Ok(()) => self.transfers.push(PendingTransfer { token, deadline, shard, target }),
            Err(ProposeError::TransferInProgress { to }) if to == to_replica => {
                self.transfers.push(PendingTransfer { token, deadline, shard, target });
            }
            Err(ProposeError::NotLeader { leader }) => {
                let leader = leader.map(|l| self.node_of(l));
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
        self.send_reads(now);
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
                    LeaderRequest::Propose(bytes) => self.propose_forwarded(shard, bytes, None),
                    LeaderRequest::ProposeNotify(bytes) => {
                        let until = now + self.cfg.request_timeout;
                        self.propose_forwarded(shard, bytes, Some(until))
                    }
                    LeaderRequest::MemberPromote { member, proposal } => {
                        let leads = self.shards.get(&shard).is_some_and(|s| s.is_leader());
                        if leads && !self.reconfiguration_settled(shard) {
                            Err(RemoteError::Retry)
                        } else {
                            self.check_promotable(shard, member)
                                .and_then(|()| self.propose_forwarded(shard, proposal, None))
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
            NodeMessage::Alive { hibernated } => self.on_alive(from, hibernated, now),
        }
    }

    /// A member says this node was removed (its table holds the removal
    /// this node may never apply: the leader stops replicating to a removed
    /// member). Believed only from a member of this node's own table: stop
    /// serving for good, as a removed etcd member shuts down.
    fn on_removed(&mut self, from: NodeId) {
        let known = self.meta_tables().is_some_and(|t| t.members.contains_key(&from));
        if known && self.stopped.is_none() {
            self.stop(NodeError::Removed);
        }
    }

    /// Appends a proposal another node forwarded. `Ok(None)`: appended, no
    /// reply (the forwarding node answers when it applies the entry; or,
    /// when it holds no replica of the shard and asked to be told
    /// (`notify_until`), this node tells it when it applies the entry, if
    /// that happens before then).
    fn propose_forwarded(
        &mut self,
        shard: ShardId,
        bytes: Bytes,
        notify_until: Option<Duration>,
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
        s.wake();
        match s.replica.propose(bytes) {
            Ok(placed) => {
                if reconfigures {
                    s.reconfigured_at = Some(placed.index);
                }
                if let (Some(until), Some(id)) = (notify_until, proposal.id) {
                    self.remote_notify.insert(id, until);
                }
                Ok(None)
            }
            Err(ProposeError::NotLeader { leader }) => {
                Err(RemoteError::NotLeader { leader: leader.map(|l| self.node_of(l)) })
            }
            Err(ProposeError::Busy { .. }) => Err(RemoteError::TooManyRequests),
            Err(ProposeError::TooLarge { bytes, limit }) => {
                Err(RemoteError::TooLarge { bytes, limit })
            }
            Err(_) => Err(RemoteError::NotLeader { leader: None }),
        }
    }

    /// The answer to a proposal forwarded for a shard this node does not
    /// hold (see `place_remote`).
    fn on_remote_reply(
        &mut self,
        pid: ProposalId,
        from: NodeId,
        result: Result<LeaderReply, RemoteError>,
    ) {
        let Some(p) = self.proposals.get_mut(&pid) else { return };
        let shard = p.shard;
        match result {
            Ok(_) => {
                self.remove_proposal(pid);
                self.on_remote_applied(shard, pid);
            }
            // Refused before appending: try the leader it names, else the
            // next holder, next round.
            Err(RemoteError::NotLeader { leader }) => {
                p.placement = Placement::Unplaced;
                let hosts: Vec<NodeId> =
                    self.shard_replica_nodes(shard).into_iter().filter(|&n| n != self.id).collect();
                let next = leader.filter(|&l| l != from && l != self.id).or_else(|| {
                    let at = hosts.iter().position(|&h| h == from).map_or(0, |i| i + 1);
                    hosts.get(at % hosts.len().max(1)).copied()
                });
                match next {
                    Some(n) => self.remote_hint.insert(shard, n),
                    None => self.remote_hint.remove(&shard),
                };
            }
            Err(RemoteError::Retry) => p.placement = Placement::Deferred,
            Err(e) => self.fail_proposal(pid, e.into_node_error()),
        }
    }

    fn on_reply(&mut self, from: NodeId, seq: u64, result: Result<LeaderReply, RemoteError>) {
        let pid = ProposalId { node: self.id, seq };
        if let Some(p) = self.proposals.get_mut(&pid) {
            if p.placement != (Placement::Forwarded { to: from }) {
                return;
            }
            let shard = p.shard;
            if !self.shards.contains_key(&shard) {
                self.on_remote_reply(pid, from, result);
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
        LeaderReply::Applied => Reply::Done,
    }
}
