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
use super::route::needs_space;
use crate::cluster::ClusterTables;
use crate::engine::Engine;
use crate::error::NodeError;
use crate::io::{Clock, Transport};
use crate::proposal::{MemberChange, Proposal, ProposalBody, ProposalId};
use crate::request::{Reply, WatchEvents};

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
}

/// How an entry changed the lease table, for the leader's clocks.
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
    };
    let members = |t: &ClusterTables, m| Reply::Members { member: m, members: t.member_list() };
    match &proposal.body {
        body if needs_space(body) && tables.no_space() => {
            b.skip(shard, e.index)?;
            out.result = Err(NodeError::NoSpace);
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
        let (outcomes, _) = store.write(|b| {
            let mut outcomes = Vec::new();
            for (shard, entries) in &batches {
                let t = tables.get_mut(shard).expect("built from the same list");
                let applied = b.shard_state(*shard)?.applied_index;
                // After a restart the engine may hand out entries the store
                // already holds (it persists its commit index lazily).
                for e in entries.iter().filter(|e| e.index > applied) {
                    if let Some(o) = apply_entry(b, *shard, e, t)? {
                        outcomes.push(o);
                    }
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
            if !o.events.is_empty() {
                self.out.events.push(WatchEvents {
                    shard: o.shard,
                    index: o.index,
                    revision: o.revision,
                    events: o.events,
                });
            }
            let Some(id) = o.id.filter(|id| id.node == self.id) else { continue };
            if let Some(p) = self.remove_proposal(id)
                && let Some(token) = p.token
            {
                self.complete(token, o.shard, o.result);
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
        if removed {
            // Answered its waiters above; now this member stops for good.
            return Err(NodeError::Removed);
        }
        Ok(())
    }
}
