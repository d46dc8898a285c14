//! What the node proposes on its own: lease revocations and checkpoints
//! (leader), membership changes that make the consensus group match the
//! member table (leader), its own name and client URLs once it runs, and
//! the NOSPACE alarm when its store passes the quota.
//!
//! On a sharded cluster also: carrying the metadata shard's lease grants
//! and revokes to every data shard (markers, see `start_fanout`), and the
//! metadata leader's repair of data shards whose leases differ from its
//! table (`sync_lease_markers`); likewise carrying the metadata shard's
//! auth store to every data shard after each auth change
//! (`start_auth_fanout`) and the metadata leader's repair of data shards
//! whose copy differs (`sync_auth_stores`).
//!
//! Each is a housekeeping proposal nobody waits for; each is retried after
//! a request timeout if it has not taken effect by then.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ringkv_consensus::{ChangeOp, MembershipChange, NodeId, ProposeError, Replica, ShardId};
use ringkv_storage::Disk;
use ringkv_storage::mvcc::{
    Command, LeaseCheckpointRequest, LeaseGrantRequest, LeaseId, LeaseRevokeRequest,
};

use super::apply::LeaseMarker;
use super::{AuthFanOut, LeaseFanOut, Node};
use crate::auth::AuthSnapshot;
use crate::config::{LEASE_CHECKPOINT_BATCH_MAX, LEASE_REVOKES_PER_ROUND_MAX, META_SHARD};
use crate::engine::Engine;
use crate::io::{Clock, Transport};
use crate::proposal::{
    AlarmChange, AlarmMember, AlarmType, MemberChange, ProposalBody, ProposalId,
};
use crate::request::{Reply, Token};

/// The data-shard command carrying a lease grant (`grant_ttl`) or revoke.
fn marker(lease: LeaseId, grant_ttl: Option<i64>) -> ProposalBody {
    ProposalBody::Kv(match grant_ttl {
        Some(ttl) => Command::LeaseGrant(LeaseGrantRequest { id: lease, ttl }),
        None => Command::LeaseRevoke(LeaseRevokeRequest { id: lease }),
    })
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    pub(super) fn housekeeping(&mut self, now: Duration) {
        let shards: Vec<ShardId> = self.shards.keys().copied().collect();
        for shard in shards {
            self.expire_leases(shard, now);
            self.reconcile_membership(shard, now);
            self.report_config(shard, now);
        }
        self.remote_notify.retain(|_, until| now < *until);
        let meta = self.meta_shard();
        self.publish_attributes(meta, now);
        self.check_quota(meta, now);
        if self.is_sharded() {
            self.retry_fanouts(now);
            self.sync_lease_markers(now);
            self.retry_auth_fanouts(now);
            self.sync_auth_stores(now);
            self.plan_placement(now);
        }
    }

    fn expire_leases(&mut self, shard: ShardId, now: Duration) {
        let retry = self.cfg.request_timeout;
        let interval = self.cfg.lease_checkpoint_interval;
        let Some(s) = self.shards.get_mut(&shard) else { return };
        if !s.leases_ready() {
            return;
        }
        let expired = s.leases.take_expired(now, retry, LEASE_REVOKES_PER_ROUND_MAX);
        let checkpoints = s.leases.take_checkpoints(now, interval);
        for id in expired {
            let body = ProposalBody::Kv(Command::LeaseRevoke(LeaseRevokeRequest { id }));
            self.propose_internal(shard, body, now);
        }
        for batch in checkpoints.chunks(LEASE_CHECKPOINT_BATCH_MAX) {
            let req = LeaseCheckpointRequest { checkpoints: batch.to_vec() };
            self.propose_internal(shard, ProposalBody::Kv(Command::LeaseCheckpoint(req)), now);
        }
    }

    /// Brings the consensus group's membership one step closer to where
    /// it belongs: adds and promotions first, then removals of others.
    ///
    /// The metadata shard (and a one-shard cluster's data shard) follows
    /// the member table; this node's own removal comes last (so it leads
    /// the others through).
    ///
    /// A data shard of a sharded cluster follows the metadata shard as
    /// applied on this node, and only while that replica has applied all
    /// it knows committed: its target if the metadata group recorded one
    /// (voters only; members only), else the member table. It never adds a
    /// member the table lists as removed. A new replica joins as a learner
    /// and is promoted once it has caught up (snapshot, then log), so
    /// that the promotion cannot stall the shard's quorum; replicas leave
    /// only once every replica the shard should have is a voter. A leader
    /// that must leave hands leadership to a caught-up voter that stays,
    /// which then removes it. (A replica can lag without knowing it: a
    /// member re-added from such a stale view stays a dead voter until a
    /// leader with a fresh view removes it again; it costs availability,
    /// never safety.)
    fn reconcile_membership(&mut self, shard: ShardId, now: Duration) {
        let meta = self.meta_shard();
        let Some(s) = self.shards.get(&shard) else { return };
        let me = s.rid;
        if !s.is_leader() || now < s.retry_membership_at {
            return;
        }
        let table = if shard == meta {
            &s.tables
        } else {
            let Some(m) = self.shards.get(&meta) else { return };
            if m.applied < m.replica.commit_index() || m.soft.leader.is_none() {
                return;
            }
            &m.tables
        };
        if table.cluster_id.is_none() {
            return;
        }
        // The table is current only once everything committed is applied.
        if s.applied < s.replica.commit_index() || s.replica.membership().is_joint() {
            return;
        }
        // A data shard whose target it moves to (`--placement-moves`).
        let data = shard != meta && self.cfg.placement_moves;
        let current = s.replica.membership();
        // Who should hold the shard, and whether as a learner: replica
        // ids. A target node keeps the replica the configuration has of
        // it; one without gets its current incarnation's, a fresh id if
        // it held the shard before.
        let held = current.members();
        let replica_of = |n: NodeId| {
            if shard == meta {
                return n;
            }
            let kept = held.iter().copied().find(|&r| table.node_of(r) == n);
            kept.unwrap_or_else(|| table.fresh_replica(shard, n))
        };
        let desired: Vec<(NodeId, bool)> = match table.targets.get(&shard) {
            Some(target) if data => target
                .iter()
                .filter(|n| !table.removed.contains(n))
                // A learner member (not yet promoted) holds its shards as a
                // learner too.
                .filter_map(|n| table.members.get(n))
                .map(|m| (replica_of(m.id), m.is_learner))
                .collect(),
            _ => table
                .members
                .values()
                .filter(|m| !table.removed.contains(&m.id))
                .map(|m| (replica_of(m.id), m.is_learner))
                .collect(),
        };
        let role = |id: NodeId| {
            if current.voters.contains(&id) {
                Some(false)
            } else if current.learners.contains(&id) {
                Some(true)
            } else {
                None
            }
        };
        let mut adds = Vec::new();
        let mut catching_up = false;
        for &(id, learner) in &desired {
            match (role(id), learner) {
                (Some(have), want) if have == want => {}
                // A data shard takes a new replica as a learner first and
                // promotes it once it has caught up in this shard.
                (None, false) if data => adds.push(ChangeOp::AddLearner(id)),
                (Some(true), false)
                    if shard != meta
                        && super::route::learner_ready(&s.replica.status(), id).is_err() =>
                {
                    catching_up = true;
                }
                (_, false) => adds.push(ChangeOp::AddVoter(id)),
                (_, true) => adds.push(ChangeOp::AddLearner(id)),
            }
        }
        let mut removes = Vec::new();
        // A data shard keeps its old replicas until the new ones vote.
        if !(data && catching_up) {
            for &id in &held {
                if !desired.iter().any(|&(d, _)| d == id) {
                    removes.push(ChangeOp::Remove(id));
                }
            }
        }
        removes.sort_by_key(|op| op.node() == me);
        let Some(op) = adds.into_iter().chain(removes).next() else { return };
        let retry = self.cfg.request_timeout;
        if data && op == ChangeOp::Remove(me) {
            self.hand_over(shard, &desired, now);
            return;
        }
        let s = self.shards.get_mut(&shard).expect("checked above");
        s.wake();
        match s.replica.change_membership(MembershipChange { ops: vec![op] }) {
            Ok(placed) => s.config_change_at = Some(placed.index),
            // One change at a time: the next round tries again.
            Err(
                ProposeError::MembershipChangeInProgress | ProposeError::TransferInProgress { .. },
            ) => {}
            // The engine refuses this change (e.g. it would leave no voter):
            // do not hammer it every round.
            Err(_) => s.retry_membership_at = now + retry,
        }
    }

    /// A data shard's leader that must leave the shard hands leadership to
    /// a voter that stays and has caught up (the new leader removes this
    /// one); at most once per request timeout.
    fn hand_over(&mut self, shard: ShardId, desired: &[(NodeId, bool)], now: Duration) {
        let retry = self.cfg.request_timeout;
        let Some(s) = self.shards.get_mut(&shard) else { return };
        s.retry_membership_at = now + retry;
        let status = s.replica.status();
        let to = desired.iter().find(|&&(id, learner)| {
            !learner
                && status.membership.voters.contains(&id)
                && super::route::learner_ready(&status, id).is_ok()
        });
        if let Some(&(to, _)) = to {
            s.wake();
            // Refused (a transfer under way, the target lagging): retried
            // after the timeout.
            let _ = s.replica.transfer_leadership(to);
        }
    }

    /// Starts carrying a lease grant (`grant_ttl`) or revoke the metadata
    /// shard applied to every data shard; `token`'s client is answered
    /// with `reply` once all have applied it.
    pub(super) fn start_fanout(
        &mut self,
        token: Option<Token>,
        deadline: Duration,
        lease: LeaseId,
        grant_ttl: Option<i64>,
        reply: Reply,
        now: Duration,
    ) {
        let shards: Vec<ShardId> = self.cfg.keyspace.shard_ids().map(|s| ShardId(s.0)).collect();
        let mut waiting = BTreeMap::new();
        for shard in shards {
            let id = self.propose_internal(shard, marker(lease, grant_ttl), now);
            waiting.insert(shard, id);
        }
        let deadline = if token.is_some() { deadline } else { now + self.cfg.request_timeout };
        let seq = self.next_seq();
        let f = LeaseFanOut { token, deadline, lease, grant_ttl, reply, waiting };
        self.fanouts.insert(seq, f);
    }

    /// This node's replica of data shard `shard` applied a lease marker:
    /// the fan-outs waiting for it there are one shard closer.
    pub(super) fn on_marker_applied(&mut self, shard: ShardId, applied: LeaseMarker) {
        let mut done = Vec::new();
        for (&seq, f) in &mut self.fanouts {
            let matches = match applied {
                LeaseMarker::Grant(id) => f.grant_ttl.is_some() && f.lease == id,
                LeaseMarker::Revoke(id) => f.grant_ttl.is_none() && f.lease == id,
            };
            if matches {
                f.waiting.remove(&shard);
                if f.waiting.is_empty() {
                    done.push(seq);
                }
            }
        }
        self.finish_fanouts(done);
    }

    /// A proposal this node forwarded for data shard `shard`, which it
    /// does not hold, applied on the shard's leader: the lease or auth
    /// fan-out waiting for it is one shard closer.
    pub(super) fn on_remote_applied(&mut self, shard: ShardId, id: ProposalId) {
        let mut done = Vec::new();
        for (&seq, f) in &mut self.fanouts {
            if f.waiting.get(&shard) == Some(&id) {
                f.waiting.remove(&shard);
                if f.waiting.is_empty() {
                    done.push(seq);
                }
            }
        }
        self.finish_fanouts(done);
        for f in self.auth_fanouts.values_mut() {
            if f.waiting.get(&shard) == Some(&id) {
                f.waiting.remove(&shard);
            }
        }
        self.check_auth_fanouts();
    }

    /// Answers the clients of lease fan-outs every data shard applied.
    fn finish_fanouts(&mut self, done: Vec<u64>) {
        let meta = self.meta_shard();
        for seq in done {
            let f = self.fanouts.remove(&seq).expect("just found");
            if let Some(token) = f.token {
                self.complete(token, meta, Ok(f.reply));
            }
        }
    }

    /// Proposes again the markers of fan-outs whose proposal was lost
    /// (a leader change, a timeout) before the shard applied it.
    fn retry_fanouts(&mut self, now: Duration) {
        let lost: Vec<(u64, ShardId, LeaseId, Option<i64>)> = self
            .fanouts
            .iter()
            .flat_map(|(&seq, f)| {
                f.waiting
                    .iter()
                    .filter(|(_, id)| !self.proposals.contains_key(id))
                    .map(move |(&shard, _)| (seq, shard, f.lease, f.grant_ttl))
            })
            .collect();
        for (seq, shard, lease, ttl) in lost {
            let id = self.propose_internal(shard, marker(lease, ttl), now);
            if let Some(f) = self.fanouts.get_mut(&seq) {
                f.waiting.insert(shard, id);
            }
        }
    }

    /// The metadata leader's convergence (ADR 0002, "Leases across
    /// shards"), at most once per request timeout: a data shard holding a
    /// lease the metadata shard does not has missed its revoke (the node
    /// carrying it crashed, or a grant's marker overtook a revoke), and
    /// one missing a lease the metadata shard holds has missed its grant.
    /// Safe because markers are proposed only after the metadata shard
    /// applied the grant, and run only while this leader has applied all
    /// it committed (so its table holds every grant any marker follows).
    fn sync_lease_markers(&mut self, now: Duration) {
        if now < self.next_lease_sync {
            return;
        }
        let Some(m) = self.shards.get(&META_SHARD) else { return };
        if !m.leases_ready() || m.applied < m.replica.commit_index() {
            return;
        }
        self.next_lease_sync = now + self.cfg.request_timeout;
        let Ok(view) = self.store.read() else { return };
        let Ok(table) = view.leases(META_SHARD) else { return };
        let table: BTreeMap<LeaseId, i64> = table.iter().map(|l| (l.id, l.granted_ttl)).collect();
        let moving: BTreeSet<LeaseId> = self.fanouts.values().map(|f| f.lease).collect();
        let mut fixes = Vec::new();
        // Only the shards this node holds: a lagging view of another
        // shard could revoke a lease it should keep.
        let hosted = self.cfg.keyspace.shard_ids().map(|s| ShardId(s.0));
        for shard in hosted.filter(|s| self.shards.contains_key(s)) {
            let Ok(local) = view.leases(shard) else { return };
            let local: BTreeSet<LeaseId> = local.iter().map(|l| l.id).collect();
            for id in local.iter().filter(|id| !table.contains_key(id)) {
                fixes.push((shard, *id, None));
            }
            for (id, ttl) in table.iter().filter(|(id, _)| !local.contains(id)) {
                fixes.push((shard, *id, Some(*ttl)));
            }
        }
        drop(view);
        let fixes = fixes.into_iter().filter(|(_, id, _)| !moving.contains(id));
        for (shard, id, ttl) in fixes.take(LEASE_REVOKES_PER_ROUND_MAX) {
            self.propose_internal(shard, marker(id, ttl), now);
        }
    }

    /// The metadata shard's auth store as applied here, as a copy for the
    /// data shards.
    fn auth_snapshot(&self) -> Option<AuthSnapshot> {
        let m = self.shards.get(&META_SHARD)?;
        Some(AuthSnapshot { meta_index: m.applied.0, store: m.auth.clone() })
    }

    /// Data shards whose copy of the auth store is older than the
    /// metadata shard's store at `meta_index`, as applied here; every data
    /// shard this node does not hold (it cannot tell: the copy is sent, and
    /// a copy no newer than the shard's changes nothing).
    fn auth_behind(&self, meta_index: u64) -> Vec<ShardId> {
        self.cfg
            .keyspace
            .shard_ids()
            .map(|s| ShardId(s.0))
            .filter(|id| self.shards.get(id).is_none_or(|s| s.auth.synced_at() < meta_index))
            .collect()
    }

    /// Starts carrying the auth change the metadata shard just applied
    /// (in the store as applied here now) to every data shard; `token`'s
    /// client is answered with `reply` once every data shard holds it.
    pub(super) fn start_auth_fanout(
        &mut self,
        token: Option<Token>,
        deadline: Duration,
        reply: Reply,
        now: Duration,
    ) {
        let Some(snapshot) = self.auth_snapshot() else { return };
        let meta_index = snapshot.meta_index;
        let mut waiting = BTreeMap::new();
        for shard in self.auth_behind(meta_index) {
            let body = ProposalBody::AuthSync(snapshot.clone());
            waiting.insert(shard, self.propose_internal(shard, body, now));
        }
        let seq = self.next_seq();
        let f = AuthFanOut { token, deadline, meta_index, reply, waiting };
        self.auth_fanouts.insert(seq, f);
        self.check_auth_fanouts();
    }

    /// Answers the auth fan-outs every data shard has caught up with: as
    /// applied on this node for a shard it holds, as its leader said
    /// (`on_remote_applied`) for one it does not.
    pub(super) fn check_auth_fanouts(&mut self) {
        let mut done = Vec::new();
        for (&seq, f) in &mut self.auth_fanouts {
            let shards = &self.shards;
            f.waiting
                .retain(|id, _| shards.get(id).is_none_or(|s| s.auth.synced_at() < f.meta_index));
            if f.waiting.is_empty() {
                done.push(seq);
            }
        }
        let meta = self.meta_shard();
        for seq in done {
            let f = self.auth_fanouts.remove(&seq).expect("just found");
            if let Some(token) = f.token {
                self.complete(token, meta, Ok(f.reply));
            }
        }
    }

    /// Proposes again, with the metadata shard's store as applied now,
    /// the copies of fan-outs whose proposal was lost before the shard
    /// applied it.
    fn retry_auth_fanouts(&mut self, now: Duration) {
        let lost: Vec<(u64, ShardId)> = self
            .auth_fanouts
            .iter()
            .flat_map(|(&seq, f)| {
                f.waiting
                    .iter()
                    .filter(|(_, id)| !self.proposals.contains_key(id))
                    .map(move |(&shard, _)| (seq, shard))
            })
            .collect();
        if lost.is_empty() {
            return;
        }
        let Some(snapshot) = self.auth_snapshot() else { return };
        for (seq, shard) in lost {
            let id = self.propose_internal(shard, ProposalBody::AuthSync(snapshot.clone()), now);
            if let Some(f) = self.auth_fanouts.get_mut(&seq) {
                f.waiting.insert(shard, id);
            }
        }
    }

    /// Convergence of the data shards' auth copies, at most once per
    /// request timeout: a data shard whose copy of the auth store differs
    /// from the metadata shard's missed a change (the node carrying it
    /// crashed or lost its proposal) and gets the whole store as applied
    /// here. The metadata leader, once it has applied all it committed (so
    /// the copy holds every change any client was answered for), repairs
    /// the shards it holds; a data shard's leader repairs its own shard
    /// (the metadata leader may not hold it). Only a copy newer than the
    /// shard's is sent, and installing is idempotent and never goes back,
    /// so a lagging view sends nothing harmful.
    fn sync_auth_stores(&mut self, now: Duration) {
        if now < self.next_auth_sync {
            return;
        }
        let Some(m) = self.shards.get(&META_SHARD) else { return };
        self.next_auth_sync = now + self.cfg.request_timeout;
        let meta_leader = m.leases_ready() && m.applied >= m.replica.commit_index();
        let stale: Vec<ShardId> = self
            .cfg
            .keyspace
            .shard_ids()
            .map(|s| ShardId(s.0))
            .filter(|id| {
                self.shards.get(id).is_some_and(|s| {
                    (meta_leader || s.is_leader())
                        && s.auth.synced_at() < m.applied.0
                        && !s.auth.same_rules(&m.auth)
                })
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let Some(snapshot) = self.auth_snapshot() else { return };
        for shard in stale {
            self.propose_internal(shard, ProposalBody::AuthSync(snapshot.clone()), now);
        }
    }

    /// Publishes this member's name, client URLs and zone once it runs
    /// (members added through MemberAdd have none of them; founders have
    /// no client URLs), and again after a restart that changed them.
    fn publish_attributes(&mut self, shard: ShardId, now: Duration) {
        let Some(s) = self.shards.get_mut(&shard) else { return };
        let Some(m) = s.tables.members.get(&self.id) else { return };
        if (m.name == self.cfg.name
            && m.client_urls == self.cfg.client_urls
            && m.zone == self.cfg.zone)
            || now < s.retry_publish_at
            || s.soft.leader.is_none()
        {
            return;
        }
        s.retry_publish_at = now + self.cfg.request_timeout;
        let change = MemberChange::Publish {
            id: self.id,
            name: self.cfg.name.clone(),
            client_urls: self.cfg.client_urls.clone(),
            zone: self.cfg.zone.clone(),
        };
        self.propose_internal(shard, ProposalBody::Member(change), now);
    }

    /// Raises NOSPACE when the store has grown past the quota (etcd checks
    /// the same before each write).
    fn check_quota(&mut self, shard: ShardId, now: Duration) {
        let alarm = AlarmMember { member: self.id, alarm: AlarmType::NoSpace };
        let Some(s) = self.shards.get_mut(&shard) else { return };
        if s.tables.alarms.contains(&alarm) || now < s.retry_alarm_at || s.soft.leader.is_none() {
            return;
        }
        let over = self.store.size_bytes().is_ok_and(|b| b > self.cfg.quota_backend_bytes);
        if !over {
            return;
        }
        s.retry_alarm_at = now + self.cfg.request_timeout;
        self.propose_internal(shard, ProposalBody::Alarm(AlarmChange::Activate(alarm)), now);
    }
}
