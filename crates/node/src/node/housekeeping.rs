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
use crate::proposal::{AlarmChange, AlarmMember, AlarmType, MemberChange, ProposalBody};
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
        }
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

    /// Brings the consensus group's membership one step closer to the
    /// member table: adds and promotions first, then removals of others,
    /// this node's own removal last (so it leads the others through).
    ///
    /// A data shard of a sharded cluster follows the metadata shard's
    /// table as applied on this node, and only while that replica has
    /// applied all it knows committed; it never adds a member the table
    /// lists as removed. (A replica can lag without knowing it: a member
    /// re-added from such a stale view stays a dead voter until a leader
    /// with a fresh view removes it again; it costs availability, never
    /// safety.)
    fn reconcile_membership(&mut self, shard: ShardId, now: Duration) {
        let me = self.id;
        let meta = self.meta_shard();
        let Some(s) = self.shards.get(&shard) else { return };
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
        let current = s.replica.membership();
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
        let mut removes = Vec::new();
        for m in table.members.values().filter(|m| !table.removed.contains(&m.id)) {
            match (role(m.id), m.is_learner) {
                (Some(have), want) if have == want => {}
                // A data shard promotes a learner the metadata shard
                // promoted only once it has caught up in this shard too,
                // so that the promotion cannot stall this shard's quorum.
                (Some(true), false)
                    if shard != meta
                        && super::route::learner_ready(&s.replica.status(), m.id).is_err() => {}
                (_, false) => adds.push(ChangeOp::AddVoter(m.id)),
                (_, true) => adds.push(ChangeOp::AddLearner(m.id)),
            }
        }
        for id in current.members() {
            if !table.members.contains_key(&id) {
                removes.push(ChangeOp::Remove(id));
            }
        }
        removes.sort_by_key(|op| op.node() == me);
        let Some(op) = adds.into_iter().chain(removes).next() else { return };
        let retry = self.cfg.request_timeout;
        let s = self.shards.get_mut(&shard).expect("checked above");
        s.wake();
        match s.replica.change_membership(MembershipChange { ops: vec![op] }) {
            Ok(_) => {}
            // One change at a time: the next round tries again.
            Err(
                ProposeError::MembershipChangeInProgress | ProposeError::TransferInProgress { .. },
            ) => {}
            // The engine refuses this change (e.g. it would leave no voter):
            // do not hammer it every round.
            Err(_) => s.retry_membership_at = now + retry,
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
        for shard in self.cfg.keyspace.shard_ids().map(|s| ShardId(s.0)) {
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
    /// metadata shard's store at `meta_index`, as applied here.
    fn auth_behind(&self, meta_index: u64) -> Vec<ShardId> {
        self.cfg
            .keyspace
            .shard_ids()
            .map(|s| ShardId(s.0))
            .filter(|id| self.shards.get(id).is_some_and(|s| s.auth.synced_at() < meta_index))
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

    /// Answers the auth fan-outs every data shard has caught up with (as
    /// applied on this node, which hosts every shard in this step).
    pub(super) fn check_auth_fanouts(&mut self) {
        let mut done = Vec::new();
        for (&seq, f) in &mut self.auth_fanouts {
            let shards = &self.shards;
            f.waiting
                .retain(|id, _| shards.get(id).is_some_and(|s| s.auth.synced_at() < f.meta_index));
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

    /// The metadata leader's convergence, at most once per request
    /// timeout: a data shard whose copy of the auth store differs from the
    /// metadata shard's missed a change (the node carrying it crashed or
    /// lost its proposal) and gets the whole store as applied here. Run
    /// only while this leader has applied all it committed, so the copy
    /// holds every change any client was answered for; a copy that was
    /// already on its way is harmless (installing is idempotent and never
    /// goes back).
    fn sync_auth_stores(&mut self, now: Duration) {
        if now < self.next_auth_sync {
            return;
        }
        let Some(m) = self.shards.get(&META_SHARD) else { return };
        if !m.leases_ready() || m.applied < m.replica.commit_index() {
            return;
        }
        self.next_auth_sync = now + self.cfg.request_timeout;
        let stale: Vec<ShardId> = self
            .cfg
            .keyspace
            .shard_ids()
            .map(|s| ShardId(s.0))
            .filter(|id| self.shards.get(id).is_some_and(|s| !s.auth.same_rules(&m.auth)))
            .collect();
        if stale.is_empty() {
            return;
        }
        let Some(snapshot) = self.auth_snapshot() else { return };
        for shard in stale {
            self.propose_internal(shard, ProposalBody::AuthSync(snapshot.clone()), now);
        }
    }

    /// Publishes this member's name and client URLs once it runs (members
    /// added through MemberAdd have neither; founders have no client URLs).
    fn publish_attributes(&mut self, shard: ShardId, now: Duration) {
        let Some(s) = self.shards.get_mut(&shard) else { return };
        let Some(m) = s.tables.members.get(&self.id) else { return };
        if (m.name == self.cfg.name && m.client_urls == self.cfg.client_urls)
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
