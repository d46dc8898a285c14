//! Applying committed entries of every shard in one store transaction,
//! then answering the clients that wait for them.
//!
//! Every decision made while applying (refusing a member change, refusing
//! a write under NOSPACE, skipping an entry that does not decode) depends
//! only on the entry and on replicated state, so every replica decides the
//! same. Only after the transaction commits does the node touch its
//! in-memory mirrors (tables, lease clocks) and answer anyone, so a failed
//! commit leaves nothing half-done.

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_consensus::{Entry, EntryKind, LogIndex, Replica, ShardId};
use ringkv_storage::Disk;
use ringkv_storage::mvcc::{ApplyBatch, Command, Event, LeaseId, Response, Revision, StoreError};

use super::Node;
use super::route::{KvCheck, check_command, needs_space};
use crate::auth::{AuthChange, AuthInfo, AuthStore};
use crate::cluster::ClusterTables;
use crate::engine::Engine;
use crate::error::NodeError;
use crate::frame::{LeaderReply, NodeMessage};
use crate::io::{Clock, Transport};
use crate::proposal::{MemberChange, Proposal, ProposalBody, ProposalId};
use crate::request::{Reply, WatchEvents};

/// The auth store while a batch applies: the applied one until an entry
/// changes it, then a copy the batch changes, installed once the batch
/// commits (so a failed commit leaves the mirror as the store is).
struct StagedAuth<'a> {
    applied: &'a AuthStore,
    staged: Option<AuthStore>,
}

impl StagedAuth<'_> {
    fn current(&self) -> &AuthStore {
        self.staged.as_ref().unwrap_or(self.applied)
    }

    fn staged(&mut self) -> &mut AuthStore {
        self.staged.get_or_insert_with(|| self.applied.clone())
    }
}

/// What applying one entry did.
struct Outcome {
    shard: ShardId,
    index: LogIndex,
    id: Option<ProposalId>,
    result: Result<Reply, NodeError>,
    events: Vec<Event>,
    revision: Revision,
    lease: LeaseEffect,
    /// The member change applied, if the entry was one.
    change: Option<MemberChange>,
    /// What it did to the simple tokens.
    tokens: TokenEffect,
    /// The lease grant or revoke it carried, applied or refused (a marker
    /// reaching a data shard that already has the lease, or no longer
    /// has it, leaves that shard as the metadata shard wants it).
    marker: Option<LeaseMarker>,
    /// A client's auth change the store took (carried to every data
    /// shard of a sharded cluster before its client is answered).
    auth_changed: bool,
}

/// A lease grant or revoke command, whatever its result.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum LeaseMarker {
    Grant(LeaseId),
    Revoke(LeaseId),
}

/// How an entry changed the simple tokens every replica holds.
enum TokenEffect {
    None,
    /// A token was issued.
    Issued {
        token: String,
        user: String,
    },
    /// A user's tokens are void (deleted, or its password changed).
    InvalidateUser(String),
    /// Every token is void (auth disabled).
    Clear,
}

/// The caller's rights for a proposal, checked by every replica when it
/// applies the entry, against the auth store as of that entry (see
/// [`crate::auth`]).
fn check_entry(
    b: &ApplyBatch<'_>,
    shard: ShardId,
    auth: &AuthStore,
    caller: &AuthInfo,
    body: &ProposalBody,
) -> Result<Result<(), NodeError>, StoreError> {
    if !auth.enabled() {
        return Ok(Ok(()));
    }
    let lease_keys = |id: LeaseId| b.lease_keys(shard, id).map_err(NodeError::from);
    let checked = match body {
        ProposalBody::Kv(Command::Put(p)) => {
            check_command(auth, caller, KvCheck::Put(p), lease_keys)
        }
        ProposalBody::Kv(Command::DeleteRange(d)) => {
            check_command(auth, caller, KvCheck::DeleteRange(d), lease_keys)
        }
        ProposalBody::Kv(Command::Txn(t)) => {
            check_command(auth, caller, KvCheck::Txn(t), lease_keys)
        }
        ProposalBody::Kv(Command::Compaction(_) | Command::LeaseGrant(_)) => {
            auth.check_user(caller).map_err(NodeError::from)
        }
        ProposalBody::Kv(Command::LeaseRevoke(r)) => auth
            .check_user(caller)
            .map_err(NodeError::from)
            .and_then(|()| lease_keys(r.id))
            .and_then(|keys| auth.check_lease_keys(caller, &keys).map_err(NodeError::from)),
        ProposalBody::Auth(change) if !change.needs_admin() => Ok(()),
        // Membership, alarms, auth changes, and anything a client should
        // never send (checkpoints, cluster initialization).
        _ => auth.check_admin(caller).map_err(NodeError::from),
    };
    Ok(checked)
}

/// How an entry changed the lease table, for the leader's clocks.
#[derive(Copy, Clone)]
enum LeaseEffect {
    None,
    Granted { id: LeaseId, ttl: i64 },
    Revoked(LeaseId),
}

/// Applies one entry inside the batch. The outer error is the store
/// failing; refusals are in the outcome.
fn apply_entry(
    b: &mut ApplyBatch<'_>,
    shard: ShardId,
    e: &Entry,
    tables: &mut ClusterTables,
    auth: &mut StagedAuth<'_>,
) -> Result<Option<Outcome>, StoreError> {
    if e.kind != EntryKind::Command {
        // No-ops and configurations: the engine interprets them.
        b.skip(shard, e.index)?;
        return Ok(None);
    }
    let Ok(proposal) = Proposal::from_bytes(e.payload.clone()) else {
        // Leaders decode what they append, so this is a bug or damage; every
        // replica skips it alike.
        b.skip(shard, e.index)?;
        return Ok(None);
    };
    let mut out = Outcome {
        shard,
        index: e.index,
        id: proposal.id,
        result: Ok(Reply::Done),
        events: Vec::new(),
        revision: Revision::ZERO,
        lease: LeaseEffect::None,
        change: None,
        tokens: TokenEffect::None,
        marker: match &proposal.body {
            ProposalBody::Kv(Command::LeaseGrant(g)) => Some(LeaseMarker::Grant(g.id)),
            ProposalBody::Kv(Command::LeaseRevoke(r)) => Some(LeaseMarker::Revoke(r.id)),
            _ => None,
        },
        auth_changed: false,
    };
    let members = |t: &ClusterTables, m| Reply::Members { member: m, members: t.member_list() };
    if let Some(caller) = &proposal.auth
        && let Err(err) = check_entry(b, shard, auth.current(), caller, &proposal.body)?
    {
        b.skip(shard, e.index)?;
        out.result = Err(err);
        return Ok(Some(out));
    }
    match &proposal.body {
        body if needs_space(body) && tables.no_space() => {
            b.skip(shard, e.index)?;
            out.result = Err(NodeError::NoSpace);
        }
        ProposalBody::Auth(change) => {
            b.skip(shard, e.index)?;
            let applied = auth.staged().apply(b, shard, change)?;
            if applied.is_ok() {
                out.tokens = match change {
                    AuthChange::IssueToken { user, token, .. } => {
                        TokenEffect::Issued { token: token.clone(), user: user.clone() }
                    }
                    AuthChange::UserDelete { name }
                    | AuthChange::UserChangePassword { name, .. } => {
                        TokenEffect::InvalidateUser(name.clone())
                    }
                    AuthChange::Disable => TokenEffect::Clear,
                    _ => TokenEffect::None,
                };
            }
            out.auth_changed = applied.is_ok() && !matches!(change, AuthChange::IssueToken { .. });
            out.result = applied.map(Reply::Auth).map_err(NodeError::from);
        }
        ProposalBody::AuthSync(snapshot) => {
            b.skip(shard, e.index)?;
            // Copies proposed by different nodes may commit out of order:
            // an older one than the copy held changes nothing.
            if snapshot.meta_index > auth.current().synced_at() {
                auth.staged().install(b, shard, &snapshot.store, snapshot.meta_index)?;
            }
        }
        ProposalBody::Kv(cmd) => {
            let applied = b.apply(shard, e.index, cmd)?;
            out.events = applied.events;
            if let Ok(r) = &applied.result {
                out.revision = r.revision();
                out.lease = match (cmd, r) {
                    (Command::LeaseGrant(g), Response::LeaseGrant(_)) => {
                        LeaseEffect::Granted { id: g.id, ttl: g.ttl }
                    }
                    (Command::LeaseRevoke(r), _) => LeaseEffect::Revoked(r.id),
                    _ => LeaseEffect::None,
                };
            }
            out.result = applied.result.map(Reply::Kv).map_err(NodeError::Mvcc);
        }
        ProposalBody::Member(change) => {
            b.skip(shard, e.index)?;
            out.change = Some(change.clone());
            out.result = match tables.apply_member(b, shard, change)? {
                Ok(m) => Ok(members(tables, Some(m))),
                Err(err) => Err(err.into()),
            };
        }
        ProposalBody::Alarm(change) => {
            b.skip(shard, e.index)?;
            out.result = Ok(Reply::Alarms(tables.apply_alarm(b, shard, change)?));
        }
        ProposalBody::InitCluster(init) => {
            b.skip(shard, e.index)?;
            tables.apply_init(b, shard, init)?;
        }
        ProposalBody::Keyspace(keyspace) => {
            b.skip(shard, e.index)?;
            tables.apply_keyspace(b, shard, keyspace)?;
        }
        ProposalBody::Layout(layout) => {
            b.skip(shard, e.index)?;
            tables.apply_layout(b, shard, layout)?;
        }
        ProposalBody::ShardTargets(targets) => {
            b.skip(shard, e.index)?;
            // A refused target (not a data shard) changes nothing; every
            // replica refuses it alike.
            tables.apply_targets(b, shard, targets)?;
        }
        ProposalBody::ShardConfig(config) => {
            b.skip(shard, e.index)?;
            tables.apply_config(b, shard, config)?;
        }
        ProposalBody::InitialTargets(targets) => {
            b.skip(shard, e.index)?;
            tables.apply_initial_targets(b, shard, targets)?;
        }
        ProposalBody::Drain(change) => {
            b.skip(shard, e.index)?;
            out.result = tables.apply_drain(b, shard, change)?.map(|()| Reply::Done);
        }
    }
    Ok(Some(out))
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// Applies committed entries (per shard, ascending) in one store
    /// transaction, then answers waiters and emits watch events.
    pub(super) fn apply(
        &mut self,
        batches: Vec<(ShardId, Vec<Entry>)>,
        now: Duration,
    ) -> Result<(), NodeError> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut tables: BTreeMap<ShardId, ClusterTables> = batches
            .iter()
            .filter_map(|(id, _)| self.shards.get(id).map(|s| (*id, s.tables.clone())))
            .collect();
        let store = &self.store;
        let shards = &self.shards;
        let mut staged_auth: BTreeMap<ShardId, AuthStore> = BTreeMap::new();
        let (outcomes, _) = store.write(|b| {
            let mut outcomes = Vec::new();
            staged_auth.clear();
            for (shard, entries) in &batches {
                let t = tables.get_mut(shard).expect("built from the same list");
                let Some(hosted) = shards.get(shard) else { continue };
                let mut auth = StagedAuth { applied: &hosted.auth, staged: None };
                let applied = b.shard_state(*shard)?.applied_index;
                // After a restart the engine may hand out entries the store
                // already holds (it persists its commit index lazily).
                for e in entries.iter().filter(|e| e.index > applied) {
                    if let Some(o) = apply_entry(b, *shard, e, t, &mut auth)? {
                        outcomes.push(o);
                    }
                }
                if let Some(changed) = auth.staged {
                    staged_auth.insert(*shard, changed);
                }
            }
            Ok(outcomes)
        })?;
        for (shard, entries) in &batches {
            let last = entries.last().map_or(LogIndex::ZERO, |e| e.index);
            let s = self.shards.get_mut(shard).expect("hosted");
            if let Some(t) = tables.remove(shard) {
                s.tables = t;
            }
            if let Some(a) = staged_auth.remove(shard) {
                s.auth = a;
            }
            s.applied = s.applied.max(last);
            s.replica.on_applied(last);
        }
        let me = self.id;
        let removed = outcomes.iter().any(|o| {
            o.result.is_ok() && matches!(o.change, Some(MemberChange::Remove(id)) if id == me)
        });
        for o in outcomes {
            let s = self.shards.get_mut(&o.shard).expect("hosted");
            match o.lease {
                LeaseEffect::Granted { id, ttl } => s.leases.granted(id, ttl, now),
                LeaseEffect::Revoked(id) => s.leases.revoked(id),
                LeaseEffect::None => {}
            }
            match o.tokens {
                // Replayed after a restart: issued before it, forgotten
                // with it.
                TokenEffect::Issued { .. } if o.index <= self.tokens_from => {}
                TokenEffect::Issued { token, user } => {
                    self.tokens.issue(token, user, now, self.cfg.auth_token_ttl);
                }
                TokenEffect::InvalidateUser(user) => self.tokens.invalidate_user(&user),
                TokenEffect::Clear => self.tokens.clear(),
                TokenEffect::None => {}
            }
            if !o.events.is_empty() {
                self.out.events.push(WatchEvents {
                    shard: o.shard,
                    index: o.index,
                    revision: o.revision,
                    events: o.events,
                });
            }
            let meta = self.meta_shard();
            if let Some(marker) = o.marker
                && self.is_sharded()
                && o.shard != meta
            {
                self.on_marker_applied(o.shard, marker);
            }
            // A proposal forwarded by a node that does not hold the shard:
            // tell it the entry applied (it cannot see the apply).
            if let Some(id) = o.id.filter(|id| id.node != self.id)
                && self.remote_notify.remove(&id).is_some()
            {
                let reply = NodeMessage::Reply { seq: id.seq, result: Ok(LeaderReply::Applied) };
                self.push_node_message(id.node, reply);
            }
            let Some(id) = o.id.filter(|id| id.node == self.id) else { continue };
            let Some(p) = self.remove_proposal(id) else { continue };
            // The metadata shard took a grant or revoke: carry it to every
            // data shard before answering.
            let fanout = match o.lease {
                _ if o.shard != meta || !self.is_sharded() => None,
                LeaseEffect::Granted { id, ttl } => Some((id, Some(ttl))),
                LeaseEffect::Revoked(id) => Some((id, None)),
                LeaseEffect::None => None,
            };
            match (fanout, o.result) {
                (Some((lease, ttl)), Ok(reply)) => {
                    self.start_fanout(p.token, p.deadline, lease, ttl, reply, now);
                }
                (None, Ok(reply)) if o.auth_changed && o.shard == meta && self.is_sharded() => {
                    self.start_auth_fanout(p.token, p.deadline, reply, now);
                }
                (_, result) => {
                    if let Some(token) = p.token {
                        self.complete(token, o.shard, result);
                    }
                }
            }
        }
        // A proposal this node appended at an index now applied with
        // another entry was lost to a leader change.
        let lost: Vec<ProposalId> = self
            .proposals
            .iter()
            .filter(|(_, p)| match p.placement {
                super::Placement::Local { index } => {
                    self.shards.get(&p.shard).is_some_and(|s| s.applied >= index)
                }
                _ => false,
            })
            .map(|(&id, _)| id)
            .collect();
        for id in lost {
            self.fail_proposal(id, NodeError::LeaderChanged);
        }
        self.check_auth_fanouts();
        if removed {
            // Answered its waiters above; now this member stops for good.
            return Err(NodeError::Removed);
        }
        // A joining node learns its cluster's keyspace by applying it.
        self.check_recorded_keyspace()?;
        Ok(())
    }
}
