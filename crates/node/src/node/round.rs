//! One round of the loop: inputs, ticks, Readys, the WAL sync, sends.

use std::time::Duration;

use ringkv_consensus::{
    Entry, Envelope, HardState, LogStorage, NodeId, ReadState, Ready, Replica, Role, ShardId,
    Snapshot, SoftState, encode_to_vec,
};
use ringkv_storage::mvcc::RangeRequest;
use ringkv_storage::{BatchSeq, Disk, Wal, WalError};

use super::{AlarmRaise, Node, Placement, ReadState as Pending, Stopped, is_no_space};
use crate::config::{ALARM_RAISE_ATTEMPTS_MAX, META_SHARD, TICKS_PER_ROUND_MAX};
use crate::engine::Engine;
use crate::error::NodeError;
use crate::frame::{LeaderRequest, NodeMessage, PeerFrame};
use crate::io::{Clock, Transport};
use crate::proposal::{AlarmChange, AlarmMember, AlarmType, Proposal, ProposalBody};
use crate::request::{ReadRequest, Reply, Request, RoundOutput};

/// Upper bound of a record's bytes in a WAL batch beyond its payload
/// (record header, and the varints and tags around an entry's payload).
const RECORD_OVERHEAD_BYTES: u64 = 64;

/// An upper bound of the WAL bytes a Ready's records take.
fn ready_record_bytes<M>(rd: &Ready<M>) -> u64 {
    let entries: u64 =
        rd.entries.iter().map(|e| e.payload.len() as u64 + RECORD_OVERHEAD_BYTES).sum();
    let snapshot = rd
        .snapshot
        .as_ref()
        .map_or(0, |s| encode_to_vec(&s.meta).len() as u64 + RECORD_OVERHEAD_BYTES);
    // Twice: an oversize Ready writes its hard state before and after.
    let hard_state = if rd.hard_state.is_some() { 2 * RECORD_OVERHEAD_BYTES } else { 0 };
    entries + snapshot + hard_state
}

/// Whether a Ready must be durable before its effects go on: it holds
/// entries, a snapshot, or a new term or vote (`durable` is the hard state
/// already in the WAL). A Ready that only raises the commit index needs no
/// fsync of its own: the commit index is volatile state whose record is an
/// optimisation for restarts (Raft thesis §3.8), and its committed entries
/// are already durable here. Its record stays buffered and rides with the
/// next sync, so on the path of a single client's put the leader applies
/// and answers right after its log append is acknowledged, without a second
/// fsync (etcd applies committed entries while that Ready's hard state is
/// written, to the same effect). Its `after_persist` messages (a follower's
/// acknowledgement of an append that brought only a commit index) promise
/// nothing but what earlier rounds synced: every round that buffers
/// entries, a snapshot, a term or a vote syncs before it ends.
pub(super) fn ready_needs_sync<M>(rd: &Ready<M>, durable: HardState) -> bool {
    !rd.entries.is_empty()
        || rd.snapshot.is_some()
        || rd.hard_state.is_some_and(|hs| hs.epoch != durable.epoch || hs.vote != durable.vote)
}

/// One WAL write of a Ready.
#[derive(Debug, PartialEq)]
pub(super) enum ReadyWrite<'a> {
    HardState(HardState),
    Snapshot(&'a Snapshot),
    Entries(&'a [Entry]),
}

/// The WAL writes of a Ready, in order. A Ready that fits in one WAL batch
/// is written in one (the caller syncs before it otherwise), atomically.
/// One that does not (`split`) goes out over several batches, so every
/// prefix of its writes must recover: the raised term or ballot first
/// (an engine refuses a log holding entries of an epoch above its stored
/// one), the new commit index last (nor may it cover entries not there).
/// `durable` is the hard state already in the WAL.
pub(super) fn ready_writes<M>(
    rd: &Ready<M>,
    durable: HardState,
    split: bool,
) -> Vec<ReadyWrite<'_>> {
    let mut out = Vec::new();
    if split && let Some(hs) = rd.hard_state {
        out.push(ReadyWrite::HardState(HardState { commit: durable.commit.min(hs.commit), ..hs }));
    }
    if let Some(snapshot) = &rd.snapshot {
        out.push(ReadyWrite::Snapshot(snapshot));
    }
    if !rd.entries.is_empty() {
        out.push(ReadyWrite::Entries(&rd.entries));
    }
    if let Some(hs) = rd.hard_state {
        out.push(ReadyWrite::HardState(hs));
    }
    out
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// Runs one round (see [`Node`]) and returns what it produced.
    pub fn run_round(&mut self) -> RoundOutput {
        let now = self.clock.now();
        if self.stopped.is_some() {
            self.step_inbox_stopped(now);
            self.raise_alarm(now);
            self.flush_outbox();
            self.serve_stopped();
            return std::mem::take(&mut self.out);
        }
        if let Err(e) = self.step_inbox(now) {
            self.stop(e);
            return std::mem::take(&mut self.out);
        }
        self.tick(now);
        self.route_submitted(now);
        self.retry_waiting(now);
        self.housekeeping(now);
        let result =
            self.sync_hosting(now).and_then(|()| self.process_readies(now)).and_then(|()| {
                let count = self.cfg.snapshot_count;
                let shards: Vec<ShardId> = self
                    .shards
                    .iter()
                    .filter(|(_, s)| s.snapshot.has_work(s.applied, count))
                    .map(|(&id, _)| id)
                    .collect();
                shards.into_iter().try_for_each(|s| self.maybe_snapshot(s))
            });
        if let Err(e) = result {
            self.stop(e);
            return std::mem::take(&mut self.out);
        }
        self.expire(now);
        self.out.more = !self.inbox.is_empty()
            || !self.submitted.is_empty()
            || self.shards.values().any(|s| s.replica.has_ready());
        #[cfg(debug_assertions)]
        self.check_invariants();
        std::mem::take(&mut self.out)
    }

    fn step_inbox(&mut self, now: Duration) -> Result<(), NodeError> {
        let mut sharded_peer = false;
        while let Some(frame) = self.inbox.pop_front() {
            let ours = self.cluster_id();
            if frame.cluster_id != 0 && ours != 0 && frame.cluster_id != ours {
                self.frames_dropped += 1;
                continue;
            }
            let from = frame.from;
            let removed = self.meta_tables().is_some_and(|t| t.removed.contains(&from));
            if removed {
                // A removed member may not know it yet: tell it, drop the rest.
                self.frames_dropped += 1;
                self.push_node_message(from, NodeMessage::Removed);
                continue;
            }
            for env in frame.messages {
                // A peer speaks only for its own replicas, to this node's
                // replica of the shard as it is now: a message to or from
                // an earlier incarnation is stale (it may carry a vote or
                // a promise the current one never made).
                let mine = self.shards.get(&env.shard).map_or(self.id, |s| s.rid);
                if self.node_of(env.from) != from || env.to != mine {
                    self.frames_dropped += 1;
                    continue;
                }
                if env.shard == META_SHARD && !self.is_sharded() {
                    // Only a sharded cluster runs a metadata group. A member
                    // of a one-shard cluster drops such messages (a peer
                    // misconfigured with --shards must not stop it); a
                    // joining node that never learned its cluster is the
                    // one misconfigured, and stops below.
                    self.frames_dropped += 1;
                    sharded_peer |= self.cluster_id() == 0;
                    continue;
                }
                let shard = env.shard;
                if let Some(s) = self.shards.get_mut(&shard) {
                    // Refused messages (stale, malformed) change nothing.
                    let _ = s.replica.step(env);
                    self.after_step(shard);
                }
            }
            for m in frame.node_messages {
                self.on_node_message(from, m, now);
            }
        }
        if sharded_peer {
            return Err(NodeError::KeyspaceMismatch {
                stored: "several shards (its members run a metadata group)".to_owned(),
                configured: crate::proposal::describe_keyspace(&self.cfg.keyspace),
            });
        }
        Ok(())
    }

    fn tick(&mut self, now: Duration) {
        let interval = self.cfg.tick_interval;
        let elapsed = now.saturating_sub(self.last_tick);
        if elapsed < interval {
            return;
        }
        let due = elapsed.as_nanos() / interval.as_nanos();
        let ticks = due.min(u128::from(TICKS_PER_ROUND_MAX)) as u32;
        // Missed ticks beyond the cap are dropped, not owed.
        self.last_tick =
            now - Duration::from_nanos((elapsed.as_nanos() % interval.as_nanos()) as u64);
        let asleep = self.hibernating_shards(now);
        for (id, s) in &mut self.shards {
            if asleep.contains(id) {
                continue;
            }
            for _ in 0..ticks {
                s.replica.tick();
            }
        }
        self.after_ticks(ticks, now);
    }

    fn wal_buffer(
        &mut self,
        f: impl Fn(&mut Wal<D>) -> Result<BatchSeq, WalError>,
    ) -> Result<(), NodeError> {
        match f(&mut self.wal) {
            Err(WalError::Busy { .. }) => {
                // More than one batch's worth in one round: write what is
                // buffered now, then buffer the rest.
                self.wal.sync()?;
                f(&mut self.wal)?;
                Ok(())
            }
            r => r.map(|_| ()).map_err(NodeError::from),
        }
    }

    /// Takes every shard's Ready and carries it out: send, persist (one
    /// sync), acknowledge, send what waited, apply, serve reads.
    fn process_readies(&mut self, now: Duration) -> Result<(), NodeError> {
        let mut readies = Vec::new();
        for (&id, s) in &mut self.shards {
            if let Some(rd) = s.replica.ready() {
                readies.push((id, rd));
            }
        }
        for (id, rd) in &mut readies {
            if !rd.entries.is_empty() || rd.snapshot.is_some() {
                // New entries need retransmission and commit on ticks.
                self.shards.get_mut(id).expect("Readys come from hosted shards").wake();
            }
            if let Some(soft) = rd.soft_state {
                self.on_soft_state(*id, soft, now);
            }
            for env in std::mem::take(&mut rd.messages) {
                self.push_message(env);
            }
        }
        self.flush_outbox();
        let mut must_sync = false;
        for (id, rd) in &readies {
            let id = *id;
            let bytes = ready_record_bytes(rd);
            let limit = self.cfg.wal.batch_bytes_max;
            let pending = self.wal.pending_bytes();
            if pending > 0 && pending.saturating_add(bytes) > limit {
                // One Ready, one batch: a WAL batch is atomic, and
                // Multi-Paxos relies on a Ready becoming durable all or
                // nothing (a rewrite drops a suffix and re-appends it).
                self.wal.sync()?;
            }
            let durable = self
                .shards
                .get(&id)
                .map_or_else(HardState::default, |s| s.replica.storage().hard_state());
            must_sync |= ready_needs_sync(rd, durable);
            for write in ready_writes(rd, durable, bytes > limit) {
                match write {
                    ReadyWrite::HardState(hs) => self.wal_buffer(|w| w.set_hard_state(id, hs))?,
                    ReadyWrite::Snapshot(snapshot) => self.install_snapshot(id, snapshot)?,
                    ReadyWrite::Entries(entries) => self.wal_buffer(|w| w.append(id, entries))?,
                }
            }
        }
        if must_sync && self.wal.pending_bytes() > 0 {
            self.wal.sync()?;
        }
        let mut to_apply = Vec::new();
        for (id, mut rd) in readies {
            let s = self.shards.get_mut(&id).expect("Readys come from hosted shards");
            if let Some(snapshot) = rd.snapshot.take() {
                let index = snapshot.meta.index;
                // The WAL holds the metadata; the shard log keeps the data
                // to serve it to others.
                s.replica.storage_mut().install_snapshot(snapshot);
                s.replica.on_persisted(rd.number);
                s.replica.on_applied(index);
            } else {
                s.replica.on_persisted(rd.number);
            }
            for env in std::mem::take(&mut rd.after_persist) {
                self.push_message(env);
            }
            if !rd.committed.is_empty() {
                to_apply.push((id, std::mem::take(&mut rd.committed)));
            }
            for rs in rd.read_states {
                self.on_read_state(rs);
            }
        }
        self.flush_outbox();
        self.apply(to_apply, now)?;
        self.serve_reads();
        Ok(())
    }

    /// The leader confirmed read batch `rs.id` (see `send_reads`): every
    /// read still waiting on it may be served once `rs.index` is applied.
    /// A read asked for again in a later batch waits for that one.
    fn on_read_state(&mut self, rs: ReadState) {
        for r in self.reads.values_mut() {
            if matches!(r.state, Pending::Sent { batch, .. } if batch == rs.id.0) {
                r.state = Pending::Indexed(rs.index);
            }
        }
    }

    /// Serves the reads whose index the store has applied.
    pub(super) fn serve_reads(&mut self) {
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| match r.state {
                Pending::Indexed(i) => self.shards.get(&r.shard).is_some_and(|s| s.applied >= i),
                _ => false,
            })
            .map(|(&k, _)| k)
            .collect();
        let now = self.clock.now();
        for k in ready {
            let r = self.reads.remove(&k).expect("just found");
            let caller = match self.resolve(&r.credential, now) {
                Ok(caller) => caller,
                Err(e) => {
                    self.complete(r.token, r.shard, Err(e));
                    continue;
                }
            };
            match r.read {
                super::ReadKind::Store(read) => self.ready_read(r.token, r.shard, read, &caller),
                super::ReadKind::Auth(q) => {
                    let result = self.answer_auth(r.shard, &caller, &q);
                    self.complete(r.token, r.shard, result);
                }
            }
        }
    }

    /// Reacts to a change of role or leader: waiters bound to the old
    /// leader fail, lease clocks start or stop.
    pub(super) fn on_soft_state(&mut self, shard: ShardId, soft: SoftState, now: Duration) {
        // The engine names replicas; the node routes to nodes.
        let raw_leader = soft.leader;
        let soft = SoftState { leader: soft.leader.map(|l| self.node_of(l)), ..soft };
        let (prev, me) = {
            let s = self.shards.get_mut(&shard).expect("hosted");
            let prev = s.soft;
            s.soft = soft;
            s.raw_leader = raw_leader;
            s.wake();
            (prev, self.id)
        };
        if prev.leader != soft.leader {
            // The engine drops reads it was confirming when leadership moves.
            let lost: Vec<u64> = self
                .reads
                .iter()
                .filter(|(_, r)| r.shard == shard && matches!(r.state, Pending::Sent { .. }))
                .map(|(&k, _)| k)
                .collect();
            for k in lost {
                let r = self.reads.remove(&k).expect("just found");
                self.complete(r.token, shard, Err(NodeError::LeaderChanged));
            }
            let lost: Vec<_> = self
                .proposals
                .iter()
                .filter(|(_, p)| {
                    p.shard == shard
                        && match p.placement {
                            Placement::Local { .. } => soft.leader != Some(me),
                            Placement::Forwarded { to } => {
                                soft.leader.is_some() && soft.leader != Some(to)
                            }
                            Placement::Unplaced | Placement::Deferred => false,
                        }
                })
                .map(|(&id, _)| id)
                .collect();
            for id in lost {
                self.fail_proposal(id, NodeError::LeaderChanged);
            }
            // Lease calls are safe to repeat: ask the new leader.
            for c in self.calls.values_mut() {
                if c.shard == shard && c.sent_to.is_some() && c.sent_to != soft.leader {
                    c.sent_to = None;
                }
            }
            let moved: Vec<usize> = (0..self.transfers.len())
                .rev()
                .filter(|&i| {
                    self.transfers[i].shard == shard
                        && soft.leader == Some(self.transfers[i].target)
                })
                .collect();
            for i in moved {
                let t = self.transfers.remove(i);
                self.complete(t.token, shard, Ok(Reply::Done));
            }
        }
        let became = soft.role == Role::Leader && prev.role != Role::Leader;
        let lost = soft.role != Role::Leader && prev.role == Role::Leader;
        // On a sharded cluster the metadata shard is the one TTL authority:
        // a data shard's lease clocks never run (its leases come and go by
        // the metadata shard's markers).
        let clocks = !self.is_sharded() || shard == META_SHARD;
        if became && !clocks {
            let s = self.shards.get_mut(&shard).expect("hosted");
            s.leases_ready_at = s.replica.status().last_index;
            s.retry_membership_at = now;
        } else if became {
            let leases = self.store.read().and_then(|v| v.leases(shard)).unwrap_or_default();
            let extend = self.cfg.election_timeout();
            let interval = self.cfg.lease_checkpoint_interval;
            let s = self.shards.get_mut(&shard).expect("hosted");
            s.leases.promote(&leases, now, extend, interval);
            s.leases_ready_at = s.replica.status().last_index;
            s.retry_membership_at = now;
        } else if lost {
            self.shards.get_mut(&shard).expect("hosted").leases.demote();
        }
    }

    /// Queues `env` for this round's frame to its peer; a data shard's
    /// snapshot chunk only as `--move-bytes-per-second` allows (else it
    /// waits in [`throttle`](super::throttle) for a later round).
    pub(super) fn push_message(&mut self, env: Envelope<E::Message>) {
        let env = match E::snapshot_chunk(&env.body) {
            // The shard holding the member table (on one-shard clusters,
            // the only one) is never held back: every member needs it.
            Some(chunk) if env.shard != self.meta_shard() => {
                let now = self.clock.now();
                match self.move_throttle.offer(env, chunk, now) {
                    Some(env) => env,
                    None => return,
                }
            }
            _ => env,
        };
        let node = self.node_of(env.to);
        self.outbox.entry(node).or_default().messages.push(env);
    }

    pub(super) fn push_node_message(&mut self, to: NodeId, m: NodeMessage) {
        self.outbox.entry(to).or_default().node_messages.push(m);
    }

    /// Sends one frame per peer with everything queued for it.
    pub(super) fn flush_outbox(&mut self) {
        if self.move_throttle.is_holding() {
            for env in self.move_throttle.release(self.clock.now()) {
                let node = self.node_of(env.to);
                self.outbox.entry(node).or_default().messages.push(env);
            }
        }
        let cluster_id = self.cluster_id();
        for (to, out) in std::mem::take(&mut self.outbox) {
            let frame = PeerFrame {
                engine: E::KIND,
                cluster_id,
                from: self.id,
                to,
                messages: out.messages,
                node_messages: out.node_messages,
            };
            if self.transport.send(to, frame.to_bytes()).is_err() {
                self.report_unreachable(to);
            }
        }
    }

    /// Fails what waited past its deadline.
    fn expire(&mut self, now: Duration) {
        let late: Vec<_> =
            self.proposals.iter().filter(|(_, p)| p.deadline <= now).map(|(&id, _)| id).collect();
        for id in late {
            let unplaced =
                self.proposals.get(&id).is_some_and(|p| p.placement == Placement::Unplaced);
            let e = if unplaced { NodeError::NoLeader } else { NodeError::Timeout };
            self.fail_proposal(id, e);
        }
        let late: Vec<u64> =
            self.reads.iter().filter(|(_, r)| r.deadline <= now).map(|(&k, _)| k).collect();
        for k in late {
            let r = self.reads.remove(&k).expect("just found");
            let e =
                if r.state == Pending::Unsent { NodeError::NoLeader } else { NodeError::Timeout };
            self.complete(r.token, r.shard, Err(e));
        }
        let late: Vec<u64> =
            self.calls.iter().filter(|(_, c)| c.deadline <= now).map(|(&k, _)| k).collect();
        for k in late {
            let c = self.calls.remove(&k).expect("just found");
            let e = if c.sent_to.is_none() { NodeError::NoLeader } else { NodeError::Timeout };
            self.complete(c.token, c.shard, Err(e));
        }
        let late: Vec<u64> =
            self.fanouts.iter().filter(|(_, f)| f.deadline <= now).map(|(&k, _)| k).collect();
        for k in late {
            // The metadata shard applied the change; the data shards that
            // have not yet are brought in line by `sync_lease_markers`.
            let f = self.fanouts.remove(&k).expect("just found");
            if let Some(token) = f.token {
                self.complete(token, self.meta_shard(), Err(NodeError::Timeout));
            }
        }
        let late: Vec<u64> =
            self.auth_fanouts.iter().filter(|(_, f)| f.deadline <= now).map(|(&k, _)| k).collect();
        for k in late {
            // The metadata shard applied the change; the data shards that
            // have not yet are brought in line by `sync_auth_stores`.
            let f = self.auth_fanouts.remove(&k).expect("just found");
            if let Some(token) = f.token {
                self.complete(token, self.meta_shard(), Err(NodeError::Timeout));
            }
        }
        let (late, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.transfers).into_iter().partition(|t| t.deadline <= now);
        self.transfers = keep;
        for t in late {
            self.complete(t.token, t.shard, Err(NodeError::Timeout));
        }
    }

    /// Fails a waiting proposal (housekeeping proposals just go away).
    pub(super) fn fail_proposal(&mut self, id: crate::ProposalId, e: NodeError) {
        if let Some(p) = self.remove_proposal(id)
            && let Some(token) = p.token
        {
            self.complete(token, p.shard, Err(e));
        }
    }

    fn stop_error(&self) -> NodeError {
        match &self.stopped {
            Some(Stopped { no_space: true, .. }) => NodeError::NoSpace,
            Some(Stopped { removed: true, .. }) => NodeError::Removed,
            Some(s) => NodeError::Stopped { reason: s.reason.clone() },
            None => NodeError::Stopped { reason: "stopping".to_owned() },
        }
    }

    /// Stops the node after a storage failure (see [`Node`]).
    pub(super) fn stop(&mut self, e: NodeError) {
        let no_space = is_no_space(&e);
        let now = self.clock.now();
        let raise = no_space.then(|| AlarmRaise {
            next_at: now,
            target: self.leader().filter(|&l| l != self.id),
            peers: self
                .replica_status(self.meta_shard())
                .map(|st| st.membership.members().into_iter().filter(|&p| p != self.id).collect())
                .unwrap_or_default(),
            next_peer: 0,
            attempts: 0,
        });
        let removed = matches!(e, NodeError::Removed);
        let reason = if removed {
            "this member was removed from the cluster; wipe its data directory before adding it \
             back"
                .to_owned()
        } else {
            e.to_string()
        };
        self.stopped = Some(Stopped { reason, no_space, removed, raise });
        // Hand leadership to the most caught-up voter now, rather than
        // after an election timeout. Only `messages` may leave: nothing
        // this node holds unsynced may be promised.
        let ids: Vec<ShardId> = self.shards.keys().copied().collect();
        for shard in ids {
            let s = self.shards.get_mut(&shard).expect("listed");
            if s.is_leader() {
                let st = s.replica.status();
                let target = st
                    .progress
                    .iter()
                    .filter(|p| st.membership.voters.contains(&p.id))
                    .max_by_key(|p| (p.matched, std::cmp::Reverse(p.id)))
                    .map(|p| p.id);
                if let Some(t) = target {
                    let _ = s.replica.transfer_leadership(t);
                }
            }
            if let Some(mut rd) = s.replica.ready() {
                for env in std::mem::take(&mut rd.messages) {
                    self.push_message(env);
                }
            }
        }
        self.raise_alarm(now);
        self.flush_outbox();
        let proposals: Vec<_> = self.proposals.keys().copied().collect();
        for id in proposals {
            let e = self.stop_error();
            self.fail_proposal(id, e);
        }
        for (_, r) in std::mem::take(&mut self.reads) {
            let e = self.stop_error();
            self.complete(r.token, r.shard, Err(e));
        }
        for (_, c) in std::mem::take(&mut self.calls) {
            let e = self.stop_error();
            self.complete(c.token, c.shard, Err(e));
        }
        for t in std::mem::take(&mut self.transfers) {
            let e = self.stop_error();
            self.complete(t.token, t.shard, Err(e));
        }
        for f in std::mem::take(&mut self.fanouts).into_values() {
            if let Some(token) = f.token {
                let e = self.stop_error();
                self.complete(token, self.meta_shard(), Err(e));
            }
        }
        for f in std::mem::take(&mut self.auth_fanouts).into_values() {
            if let Some(token) = f.token {
                let e = self.stop_error();
                self.complete(token, self.meta_shard(), Err(e));
            }
        }
        self.serve_stopped();
    }

    /// A node whose own disk is full cannot write its NOSPACE alarm into
    /// its log; it asks the leader to (see [`AlarmRaise`]).
    fn raise_alarm(&mut self, now: Duration) {
        let alarm = AlarmMember { member: self.id, alarm: AlarmType::NoSpace };
        let raised = self.meta_tables().is_some_and(|t| t.alarms.contains(&alarm));
        let Some(Stopped { raise: Some(r), .. }) = &mut self.stopped else { return };
        if raised || r.attempts >= ALARM_RAISE_ATTEMPTS_MAX || now < r.next_at {
            return;
        }
        let to = match r.target.take() {
            Some(t) => t,
            None if r.peers.is_empty() => return,
            None => {
                let p = r.peers[r.next_peer % r.peers.len()];
                r.next_peer += 1;
                p
            }
        };
        r.attempts += 1;
        r.next_at = now + self.cfg.election_timeout();
        let proposal = Proposal {
            id: None,
            auth: None,
            body: ProposalBody::Alarm(AlarmChange::Activate(alarm)),
        };
        let seq = self.next_seq();
        self.push_node_message(
            to,
            NodeMessage::Request {
                shard: self.meta_shard(),
                seq,
                body: LeaderRequest::Propose(proposal.to_bytes()),
            },
        );
    }

    /// A stopped node steps no engine; it refuses forwarded requests and
    /// follows the leader that peers name while raising its alarm.
    fn step_inbox_stopped(&mut self, now: Duration) {
        while let Some(frame) = self.inbox.pop_front() {
            for m in frame.node_messages {
                match m {
                    NodeMessage::Request { seq, .. } => {
                        let result = Err(crate::RemoteError::Stopped);
                        self.push_node_message(frame.from, NodeMessage::Reply { seq, result });
                    }
                    NodeMessage::Reply {
                        result: Err(crate::RemoteError::NotLeader { leader: Some(l) }),
                        ..
                    } => {
                        if let Some(Stopped { raise: Some(r), .. }) = &mut self.stopped
                            && l != self.id
                        {
                            r.target = Some(l);
                            r.next_at = now;
                        }
                    }
                    NodeMessage::Reply { .. }
                    | NodeMessage::Removed
                    | NodeMessage::Alive { .. } => {}
                }
            }
        }
    }

    /// What a stopped node still answers: serializable reads, status and
    /// the alarm list; everything else fails.
    fn serve_stopped(&mut self) {
        let now = self.clock.now();
        while let Some(sub) = self.submitted.pop_front() {
            let super::Submitted { token, request, shard: named, credential, .. } = sub;
            let shard = match self.target_shard(&request, named) {
                Ok(shard) => shard,
                Err(e) => {
                    let shard = named.unwrap_or_else(|| self.meta_shard());
                    self.complete(token, shard, Err(e));
                    continue;
                }
            };
            match request {
                Request::Range(r @ RangeRequest { serializable: true, .. }) => {
                    match self.resolve(&credential, now) {
                        Ok(caller) => self.ready_read(token, shard, ReadRequest::Range(r), &caller),
                        Err(e) => self.complete(token, shard, Err(e)),
                    }
                }
                Request::Status => {
                    let status = Box::new(self.status());
                    self.complete(token, shard, Ok(Reply::Status(status)));
                }
                Request::Alarm { action: crate::AlarmAction::Get, .. } => {
                    let alarms = self.alarm_list(shard);
                    self.complete(token, shard, Ok(Reply::Alarms(alarms)));
                }
                _ => {
                    let e = self.stop_error();
                    self.complete(token, shard, Err(e));
                }
            }
        }
    }

    pub(super) fn alarm_list(&self, shard: ShardId) -> Vec<AlarmMember> {
        let mut alarms: Vec<AlarmMember> = self
            .shards
            .get(&shard)
            .map(|s| s.tables.alarms.iter().copied().collect())
            .unwrap_or_default();
        if let Some(Stopped { no_space: true, .. }) = &self.stopped {
            let mine = AlarmMember { member: self.id, alarm: AlarmType::NoSpace };
            if !alarms.contains(&mine) {
                alarms.push(mine);
                alarms.sort();
            }
        }
        alarms
    }
}
