//! What the node proposes on its own: lease revocations and checkpoints
//! (leader), membership changes that make the consensus group match the
//! member table (leader), its own name and client URLs once it runs, and
//! the NOSPACE alarm when its store passes the quota.
//!
//! Each is a housekeeping proposal nobody waits for; each is retried after
//! a request timeout if it has not taken effect by then.

use std::time::Duration;

use ringkv_consensus::{ChangeOp, MembershipChange, NodeId, ProposeError, Replica, ShardId};
use ringkv_storage::Disk;
use ringkv_storage::mvcc::{Command, LeaseCheckpointRequest, LeaseRevokeRequest};

use super::Node;
use crate::config::{LEASE_CHECKPOINT_BATCH_MAX, LEASE_REVOKES_PER_ROUND_MAX};
use crate::engine::Engine;
use crate::io::{Clock, Transport};
use crate::proposal::{AlarmChange, AlarmMember, AlarmType, MemberChange, ProposalBody};

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    pub(super) fn housekeeping(&mut self, now: Duration) {
        let shards: Vec<ShardId> = self.shards.keys().copied().collect();
        for shard in shards {
            self.expire_leases(shard, now);
            self.reconcile_membership(shard, now);
            self.publish_attributes(shard, now);
            self.check_quota(shard, now);
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
    fn reconcile_membership(&mut self, shard: ShardId, now: Duration) {
        let me = self.id;
        let Some(s) = self.shards.get_mut(&shard) else { return };
        if !s.is_leader() || s.tables.cluster_id.is_none() || now < s.retry_membership_at {
            return;
        }
        let st = s.replica.status();
        // The table is current only once everything committed is applied.
        if s.applied < st.commit || st.membership.is_joint() {
            return;
        }
        let current = &st.membership;
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
        for m in s.tables.members.values() {
            match (role(m.id), m.is_learner) {
                (Some(have), want) if have == want => {}
                (_, false) => adds.push(ChangeOp::AddVoter(m.id)),
                (_, true) => adds.push(ChangeOp::AddLearner(m.id)),
            }
        }
        for id in current.members() {
            if !s.tables.members.contains_key(&id) {
                removes.push(ChangeOp::Remove(id));
            }
        }
        removes.sort_by_key(|op| op.node() == me);
        let Some(op) = adds.into_iter().chain(removes).next() else { return };
        match s.replica.change_membership(MembershipChange { ops: vec![op] }) {
            Ok(_) => {}
            // One change at a time: the next round tries again.
            Err(
                ProposeError::MembershipChangeInProgress | ProposeError::TransferInProgress { .. },
            ) => {}
            // The engine refuses this change (e.g. it would leave no voter):
            // do not hammer it every round.
            Err(_) => s.retry_membership_at = now + self.cfg.request_timeout,
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
