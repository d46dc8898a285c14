//! Quiet shards and leader balance on a sharded cluster (ADR 0002, "Quiet
//! shards"; issue #7).
//!
//! **Hibernation.** A data shard whose leader has seen it quiet (see
//! `Node::shard_is_quiet`) for [`HIBERNATE_AFTER_TICKS`] ticks, or two
//! heartbeat intervals if longer, stops ticking its replica: no
//! heartbeats leave it. Every node sends every peer
//! one [`NodeMessage::Alive`] per tick listing the data shards it leads
//! that hibernate. A follower stops ticking its replica of a shard when the
//! node it knows as the shard's leader starts claiming it, and ticks again
//! (so that a normal election can follow) as soon as:
//! * that node's heartbeat stops claiming the shard;
//! * no heartbeat came from that node for an election timeout (which is
//!   also the engine's leader-down hint, as if the transport had reported
//!   the node unreachable: the follower campaigns within a few ticks);
//! * the transport reports that node unreachable;
//! * any consensus message for the shard arrives;
//! * its view of the leader changes.
//!
//! Only a claim newly made puts a follower to sleep: a follower woken while
//! the claim stands ticks until the leader, woken in turn (by the
//! follower's campaign, if nothing else), drops the claim and makes it
//! again once the shard is quiet. The node-level heartbeat also goes out
//! with hibernation off: the leader balancer reads liveness from it.
//!
//! The leader wakes on any proposal, read, transfer or membership change
//! (the node calls [`HostedShard::wake`] before it asks the engine), when
//! a member's node goes silent for an election timeout (so that
//! check-quorum can step it down), when another node claims the shard, on
//! any message from a follower that gives its replica work to do, and on
//! any Ready of its own that writes entries or a snapshot. A heartbeat answer
//! that changes nothing does not wake it: the answers to its last
//! heartbeats arrive after it hibernated, and would wake it every time.
//!
//! Safety never depends on ticks (elections are safe whenever they
//! happen); liveness does, and every path above ends with ticking
//! replicas. Never hibernated: the metadata shard, a one-shard cluster,
//! and any shard in lease-read mode (a hibernated leader that lost its
//! quorum unknowingly must not serve reads from a lease).
//!
//! **Leader balance.** Every [`LEADER_BALANCE_INTERVAL_TICKS`] a node
//! counts, from its own replicas' soft states, how many data shards each
//! voter of the metadata group leads. If it leads at least two more than
//! the live voter that leads the fewest (which, once every shard has a
//! leader, also means it never leads more than `ceil(S / voters)` at
//! rest), it hands one shard to that voter, if the voter is caught up in
//! it: one transfer at a time, given up after
//! [`LEADER_BALANCE_TRANSFER_TICKS`]. A transfer only ever goes to a voter
//! leading at least two fewer, so the spread of counts shrinks with every
//! transfer and never oscillates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ringkv_consensus::{LogIndex, NodeId, Replica, Role, ShardId};
use ringkv_storage::Disk;

use super::{HostedShard, Node};
use crate::config::{
    HIBERNATE_AFTER_TICKS, LEADER_BALANCE_INTERVAL_TICKS, LEADER_BALANCE_TRANSFER_TICKS, META_SHARD,
};
use crate::engine::Engine;
use crate::frame::NodeMessage;
use crate::io::{Clock, Transport};

/// What a node heard from one peer's node-level heartbeats.
#[derive(Clone, Debug, Default)]
pub(super) struct PeerBeat {
    /// When the last heartbeat arrived.
    heard_at: Duration,
    /// The hibernated shards the peer claimed last, ascending.
    claims: Vec<ShardId>,
}

/// A leadership transfer the balancer started.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct BalanceTransfer {
    shard: ShardId,
    target: NodeId,
    /// Tick count at which it is given up.
    until_tick: u64,
}

/// The node's state for hibernation and leader balance.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    /// Node-level heartbeats heard, per peer.
    peers: BTreeMap<NodeId, PeerBeat>,
    /// Ticks taken since the node opened.
    ticks: u64,
    /// The tick count of the next look at the leaders' spread.
    next_balance: u64,
    balancing: Option<BalanceTransfer>,
    /// Leadership transfers the balancer started, for tests and metrics.
    transfers_started: u64,
}

impl Quiet {
    /// When the last node-level heartbeat from `peer` arrived, if any.
    pub(super) fn heard_at(&self, peer: NodeId) -> Option<Duration> {
        self.peers.get(&peer).map(|b| b.heard_at)
    }
}

impl<E: Engine, D: Disk> HostedShard<E, D> {
    /// Ticks again: the shard is (or may soon be) busy.
    pub(super) fn wake(&mut self) {
        self.hibernating = false;
        self.quiet_ticks = 0;
    }
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// Whether `shard` is one that may hibernate on this node.
    fn may_hibernate(&self, shard: ShardId) -> bool {
        self.cfg.hibernation_active() && shard != META_SHARD
    }

    /// Called after a peer's consensus message for `shard` was stepped:
    /// a follower wakes on any; a leader on one that gave it work.
    pub(super) fn after_step(&mut self, shard: ShardId) {
        if let Some(s) = self.shards.get_mut(&shard)
            && s.hibernating
            && (!s.is_leader() || s.replica.has_ready())
        {
            s.wake();
        }
    }

    /// A node-level heartbeat from `from`.
    pub(super) fn on_alive(&mut self, from: NodeId, hibernated: Vec<ShardId>, now: Duration) {
        let beat = self.quiet.peers.entry(from).or_default();
        beat.heard_at = now;
        let before = std::mem::replace(&mut beat.claims, hibernated);
        let after = &beat.claims;
        let active = self.cfg.hibernation_active();
        for (&id, s) in &mut self.shards {
            let claimed = after.binary_search(&id).is_ok();
            if id == META_SHARD {
                continue;
            }
            if s.is_leader() {
                if claimed && s.hibernating {
                    // Another node leads it now (this one was cut off
                    // while it slept): ticks let its heartbeats be refused
                    // and check-quorum step it down.
                    s.wake();
                }
                continue;
            }
            if s.soft.leader != Some(from) {
                continue;
            }
            let was = before.binary_search(&id).is_ok();
            if claimed && !was && active {
                // A claim newly made: the leader saw every member caught
                // up and stopped its heartbeats.
                s.hibernating = true;
            } else if !claimed && s.hibernating {
                s.wake();
            }
        }
    }

    /// The transport cannot reach `peer`: nothing it claimed holds.
    pub(super) fn forget_claims(&mut self, peer: NodeId) {
        if let Some(beat) = self.quiet.peers.get_mut(&peer) {
            beat.claims.clear();
        }
        for s in self.shards.values_mut() {
            if s.soft.leader == Some(peer) && !s.is_leader() {
                s.wake();
            }
        }
    }

    /// Whether a node-level heartbeat from `peer` arrived within an
    /// election timeout.
    fn heard_recently(&self, peer: NodeId, now: Duration) -> bool {
        self.quiet
            .peers
            .get(&peer)
            .is_some_and(|b| now.saturating_sub(b.heard_at) < self.cfg.election_timeout())
    }

    /// Before a round's ticks: followers whose leader went silent wake.
    /// Returns the shards that do not tick this round.
    pub(super) fn hibernating_shards(&mut self, now: Duration) -> BTreeSet<ShardId> {
        let silent: BTreeSet<NodeId> = self
            .shards
            .values()
            .filter(|s| s.hibernating && !s.is_leader())
            .filter_map(|s| s.soft.leader)
            .filter(|&l| !self.heard_recently(l, now))
            .collect();
        for s in self.shards.values_mut() {
            if !s.hibernating || s.is_leader() {
                continue;
            }
            match s.soft.leader {
                None => s.wake(),
                Some(l) if silent.contains(&l) => {
                    s.wake();
                    // An election timeout without a word from the leader's
                    // node is the engine's leader-down hint: campaign in a
                    // few ticks rather than after a whole timeout more
                    // (pre-vote, or check-quorum, still guards a live one).
                    if let Some(r) = s.raw_leader {
                        s.replica.report_unreachable(r);
                    }
                }
                Some(_) => {}
            }
        }
        self.shards.iter().filter(|(_, s)| s.hibernating).map(|(&id, _)| id).collect()
    }

    /// After a round's `ticks` ticks: leaders count quiet ticks and
    /// hibernate; the node-level heartbeat goes to every peer; the leader
    /// balance is looked at when due.
    pub(super) fn after_ticks(&mut self, ticks: u32, now: Duration) {
        if !self.is_sharded() || ticks == 0 {
            return;
        }
        self.quiet.ticks += u64::from(ticks);
        let busy = self.busy_shards();
        // At least two heartbeats after the last commit, however long the
        // configured heartbeat interval: they carry the commit index to
        // every follower.
        let after = HIBERNATE_AFTER_TICKS.max(2 * self.cfg.heartbeat_ticks);
        let ids: Vec<ShardId> = self.shards.keys().copied().collect();
        let mut claims = Vec::new();
        for id in ids {
            if !self.shards.get(&id).is_some_and(|s| s.is_leader()) {
                // A follower follows its leader's claim (`on_alive`).
                continue;
            }
            let quiet =
                self.may_hibernate(id) && !busy.contains(&id) && self.shard_is_quiet(id, now);
            let s = self.shards.get_mut(&id).expect("listed");
            if !quiet {
                // Also a sleeping leader whose followers' nodes went
                // silent: ticks let check-quorum step it down.
                s.wake();
                continue;
            }
            s.quiet_ticks = s.quiet_ticks.saturating_add(ticks);
            if s.quiet_ticks >= after {
                s.hibernating = true;
                claims.push(id);
            }
        }
        let peers: BTreeSet<NodeId> = self
            .shards
            .get(&META_SHARD)
            .map(|s| s.replica.membership().members())
            .unwrap_or_default();
        let me = self.id;
        for peer in peers.into_iter().filter(|&p| p != me) {
            self.push_node_message(peer, NodeMessage::Alive { hibernated: claims.clone() });
        }
        self.balance_leaders(now);
    }

    /// Data shards with something in flight here: a proposal or read
    /// waiting, a transfer asked for.
    fn busy_shards(&self) -> BTreeSet<ShardId> {
        self.proposals
            .values()
            .map(|p| p.shard)
            .chain(self.reads.values().map(|r| r.shard))
            .chain(self.transfers.iter().map(|t| t.shard))
            .chain(self.quiet.balancing.map(|b| b.shard))
            .collect()
    }

    /// Whether this node leads `shard` and the shard has nothing to do:
    /// no membership change, everything committed and applied, every
    /// member's log matched, and every member's node heard from within an
    /// election timeout. (Not the engine's `recently_active`: a leader
    /// with check-quorum clears it every election timeout, and it is set
    /// again only by the next answers.)
    fn shard_is_quiet(&self, shard: ShardId, now: Duration) -> bool {
        let Some(s) = self.shards.get(&shard) else { return false };
        if !s.is_leader() || s.reconfigured_at.is_some() {
            return false;
        }
        let st = s.replica.status();
        if st.membership.is_joint() || st.commit != st.last_index || s.applied != st.commit {
            return false;
        }
        st.membership.members().into_iter().filter(|&m| m != s.rid).all(|m| {
            self.heard_recently(self.node_of(m), now)
                && st.progress.iter().any(|p| p.id == m && p.matched == st.last_index)
        })
    }

    /// One look at the spread of data-shard leaders (see the module docs).
    fn balance_leaders(&mut self, now: Duration) {
        let ticks = self.quiet.ticks;
        if let Some(b) = self.quiet.balancing {
            let leads = self.shards.get(&b.shard).is_some_and(|s| s.is_leader());
            if ticks < b.until_tick && leads {
                return;
            }
            self.quiet.balancing = None;
        }
        if ticks < self.quiet.next_balance || self.stopped.is_some() {
            return;
        }
        self.quiet.next_balance = ticks + LEADER_BALANCE_INTERVAL_TICKS;
        let Some(meta) = self.shards.get(&META_SHARD) else { return };
        let voters = meta.replica.membership().voters.clone();
        if !voters.contains(&self.id) {
            return;
        }
        let mut counts: BTreeMap<NodeId, usize> = voters.iter().map(|&v| (v, 0)).collect();
        for (&id, s) in &self.shards {
            if id == META_SHARD {
                continue;
            }
            if let Some(n) = s.soft.leader.and_then(|l| counts.get_mut(&l)) {
                *n += 1;
            }
        }
        let mine = counts.get(&self.id).copied().unwrap_or(0);
        let Some((target, fewest)) = counts
            .iter()
            .filter(|&(&v, _)| v != self.id && self.heard_recently(v, now))
            .map(|(&v, &n)| (v, n))
            .min_by_key(|&(v, n)| (n, v))
        else {
            return;
        };
        if mine < fewest + 2 {
            return;
        }
        let busy = self.busy_shards();
        let shard = self.shards.iter().find_map(|(&id, s)| {
            if id == META_SHARD || !s.is_leader() || busy.contains(&id) {
                return None;
            }
            let st = s.replica.status();
            // The target node's replica of this shard, by its own id.
            let theirs =
                st.membership.voters.iter().copied().find(|&r| self.node_of(r) == target)?;
            let caught_up = !st.membership.is_joint()
                && st.progress.iter().any(|p| p.id == theirs && p.matched == st.last_index);
            caught_up.then_some((id, theirs))
        });
        let Some((shard, theirs)) = shard else { return };
        let s = self.shards.get_mut(&shard).expect("found above");
        s.wake();
        if s.replica.transfer_leadership(theirs).is_ok() {
            self.quiet.transfers_started += 1;
            self.quiet.balancing = Some(BalanceTransfer {
                shard,
                target,
                until_tick: ticks + LEADER_BALANCE_TRANSFER_TICKS,
            });
        }
    }

    /// Data shards this node hosts whose replica does not tick now.
    pub fn hibernating(&self) -> Vec<ShardId> {
        self.shards.iter().filter(|(_, s)| s.hibernating).map(|(&id, _)| id).collect()
    }

    /// What a shard's status depends on, cheaply (no engine status, no
    /// store read): while a shard hibernates and its stamp is unchanged,
    /// its [`Node::shard_status`] is too, so a periodic refresh can skip it.
    pub fn shard_stamp(&self, shard: ShardId) -> Option<ShardStamp> {
        let s = self.shards.get(&shard)?;
        Some(ShardStamp {
            asleep: s.hibernating,
            applied: s.applied,
            leader: s.soft.leader,
            role: s.soft.role,
            snapshots_installed: s.snapshots_installed,
        })
    }

    /// Leadership transfers the leader balancer started on this node.
    pub fn balance_transfers(&self) -> u64 {
        self.quiet.transfers_started
    }

    /// Checks the hibernation invariants (see `check_invariants`).
    pub(super) fn check_quiet_invariants(&self) {
        for (&id, s) in &self.shards {
            if s.hibernating {
                assert!(self.may_hibernate(id), "shard {id:?} hibernates where none may");
                assert!(
                    s.is_leader() || s.soft.role == Role::Follower,
                    "shard {id:?} hibernates while campaigning"
                );
            }
        }
        if let Some(b) = self.quiet.balancing {
            assert_ne!(b.target, self.id, "a balance transfer to this node itself");
            assert_ne!(b.shard, META_SHARD, "the metadata shard is not balanced");
        }
    }
}

/// A shard's cheap state (see [`Node::shard_stamp`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ShardStamp {
    /// The replica hibernates: it neither ticks nor has work, so nothing
    /// but a message (which wakes it or moves `applied`) changes its state.
    pub asleep: bool,
    /// Highest index applied to the store.
    pub applied: LogIndex,
    /// The leader the engine last reported.
    pub leader: Option<NodeId>,
    /// This replica's role as last reported.
    pub role: Role,
    /// Snapshots installed since the node opened.
    pub snapshots_installed: u64,
}
