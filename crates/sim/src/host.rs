//! A simulated server process hosting one replica: the seam between the
//! world (network, clock, clients, faults, checkers) and what runs on a node.
//!
//! The world drives a node only through the [`Host`] trait: it boots one
//! from a disk, feeds it inputs (ticks, peer packets, client requests, I/O
//! completions), and collects what the node wants done in [`Effects`]
//! (packets to send, replies, a timer for its next I/O completion, and
//! [`Observation`]s for the checkers). A crash drops the host and keeps
//! only its [`SimDisk`]. Today's host is [`ReplicaHost`]: one engine
//! replica over the real [`Wal`], processing Readys exactly as the
//! contract says. A later host will wrap the real per-node loop behind the
//! same trait.
//!
//! # How `ReplicaHost` processes Readys
//!
//! ```text
//!  ready() ─▶ send messages ─▶ buffer snapshot / entries / hard state in the WAL
//!     (more Readys may queue behind it while the fsync is in flight)
//!  fsync completes (a timer: the disk's latency) ─▶ Wal::sync()
//!     ─▶ for each durable Ready, in order: on_persisted, send after_persist,
//!        install its snapshot, apply committed entries, answer reads
//! ```
//!
//! A failed `Wal::sync` (fsync `EIO`, `ENOSPC`, a crash mid-write) poisons
//! the WAL and the host stops: it never continues as if the write happened.
//! Snapshots (local compactions and snapshots received from a leader) are
//! written to their own file, fsynced and renamed into place *before* the
//! WAL record that refers to them, so the WAL never names a snapshot that
//! is not on disk.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use ringkv_consensus::{
    Config, DetRng, Entry, Envelope, Epoch, LogIndex, LogStorage, Membership, MembershipChange,
    NodeId, Proposal, ProposeError, ReadState, ReadyNumber, Replica, RequestId, Role, ShardId,
    Snapshot, SnapshotMeta, Status, StepError, decode_exact, encode_to_vec,
};
use ringkv_storage::{BatchSeq, Disk, DiskFile, ShardLog, SimDisk, Wal, WalError, WalOptions};

use crate::checkers::wal_recovery::DurableState;
use crate::checkers::{Identity, entry_digest};
use crate::engine::{EngineError, EngineOptions, SimEngine};
use crate::kv::{ClientId, Command, KvStore};
use crate::protocol::{Request, Response};
use crate::trace::mix;

/// Most reads a host keeps waiting (for confirmation or for the apply
/// index); more are answered `Busy`.
pub const READS_PENDING_MAX: usize = 1024;
/// Most writes a host keeps waiting to be applied; more are answered `Busy`.
pub const WRITES_PENDING_MAX: usize = 1024;
/// Ticks after which a read or write still waiting here is forgotten: the
/// engine dropped it (a lost forward, a lost leadership) and its client
/// has long given up.
pub const REQUEST_WAIT_TICKS_MAX: u64 = 1_000;

const SNAPSHOT_PREFIX: &str = "snap-";
const SNAPSHOT_SUFFIX: &str = ".snap";
const SNAPSHOT_TEMP_SUFFIX: &str = ".snap.tmp";

/// How long a WAL fsync takes on this node's simulated disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FsyncLatency {
    /// Every fsync takes at least this long.
    pub min_us: u64,
    /// Extra time drawn uniformly up to this.
    pub jitter_us: u64,
    /// Chance in a million that an fsync is slow.
    pub slow_ppm: u32,
    /// How slow a slow fsync is (at most).
    pub slow_us: u64,
}

/// Everything needed to boot a host, besides its disk.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// The engine configuration (its seed is varied per incarnation).
    pub config: Config,
    /// The shard's initial configuration for a founding member; `None` for
    /// a replica that joins later and learns it from the leader.
    pub initial_membership: Option<Membership>,
    /// WAL tunables.
    pub wal: WalOptions,
    /// Take a local snapshot (and compact the WAL) every this many applied
    /// entries.
    pub snapshot_every_entries: u64,
    /// The disk's fsync latency.
    pub fsync: FsyncLatency,
    /// How the engine builds replicas (planted bugs, protocol constants).
    pub engine: EngineOptions,
    /// Which boot of this node this is (0 for the first); varies the
    /// engine's and the host's random draws.
    pub incarnation: u64,
    /// Render packets for the trace.
    pub describe_messages: bool,
}

/// A packet a host wants sent to a peer.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The peer.
    pub to: NodeId,
    /// The engine message, encoded.
    pub payload: Bytes,
    /// A rendering for the trace, when asked for.
    pub describe: Option<String>,
}

/// Something a checker needs to know about a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The replica started (a boot or a restart) from what its disk holds.
    Booted {
        /// What its WAL recovered.
        durable: DurableState,
        /// Its state machine's applied index (the snapshot it restored).
        applied: LogIndex,
        /// Its state machine's chain there.
        chain: u64,
        /// The commit index it recovered.
        commit: LogIndex,
    },
    /// Its role, leader or epoch changed.
    Role {
        /// The role.
        role: Role,
        /// The epoch.
        epoch: Epoch,
        /// The leader it knows.
        leader: Option<NodeId>,
    },
    /// It wrote entries to its log (they are in the WAL's next batch).
    Wrote {
        /// The epoch of the entry before the first one, if known.
        prev_epoch: Option<Epoch>,
        /// `(index, epoch, payload digest)` of each entry.
        entries: Vec<(LogIndex, Epoch, u64)>,
    },
    /// Its commit index advanced; the epochs of the newly committed entries
    /// in its log (those still present there).
    Committed {
        /// The replica's current epoch: the entries were committed in this
        /// epoch or an earlier one.
        at: Epoch,
        /// The new commit index.
        commit: LogIndex,
        /// `(index, epoch)` of the newly committed entries it still holds.
        entries: Vec<(LogIndex, Epoch)>,
    },
    /// It applied an entry to its state machine.
    Applied {
        /// The entry's index.
        index: LogIndex,
        /// Its epoch.
        epoch: Epoch,
        /// A digest of its kind and payload.
        digest: u64,
        /// The state machine's chain after it.
        chain: u64,
    },
    /// It replaced its state machine with a snapshot.
    Restored {
        /// The snapshot's index.
        index: LogIndex,
        /// The chain the snapshot carries.
        chain: u64,
    },
    /// It accepted a linearizable read and asked its engine for a read index.
    ReadAsked {
        /// The read's id (unique within this boot of the replica).
        id: u64,
    },
    /// Its engine confirmed a read at an index.
    ReadConfirmed {
        /// The read's id.
        id: u64,
        /// The index the read must wait for.
        index: LogIndex,
    },
    /// It answered a client's write as done.
    Acked {
        /// The replica's current epoch: the write was committed in this
        /// epoch or an earlier one.
        at: Epoch,
        /// The client.
        client: ClientId,
        /// The operation.
        seq: u64,
        /// The entry whose application answered it.
        index: LogIndex,
        /// That entry's epoch.
        epoch: Epoch,
        /// A digest of that entry's kind and payload.
        digest: u64,
    },
    /// It took a local snapshot and buffered the WAL compaction.
    Compacted {
        /// The snapshot index.
        index: LogIndex,
    },
    /// It broke a rule of its contract with the world (an engine or
    /// storage bug, not a fault).
    Violation {
        /// What happened.
        what: String,
    },
}

/// What a host asks of the world while handling one input.
#[derive(Debug, Default)]
pub struct Effects {
    /// Packets to peers.
    pub sends: Vec<Outgoing>,
    /// Answers to clients.
    pub replies: Vec<(ClientId, Response)>,
    /// Call [`Host::wake`] after this many microseconds (an I/O completion).
    pub wake_after_us: Option<u64>,
    /// What the checkers should know.
    pub observations: Vec<Observation>,
}

impl Effects {
    fn observe(&mut self, o: Observation) {
        self.observations.push(o);
    }

    fn violation(&mut self, what: String) {
        self.observations.push(Observation::Violation { what });
    }
}

/// Why a host stopped (its process must be considered dead).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node stopped: {reason}")]
pub struct Stopped {
    /// The failure, for the trace.
    pub reason: String,
}

/// Why a host could not boot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// An I/O error (an injected fault); booting again may work.
    #[error("boot failed on an I/O error, will retry: {reason}")]
    Io {
        /// What failed.
        reason: String,
    },
    /// What the disk holds is unusable: data that was durable is damaged or
    /// missing. Never caused by a fault the simulator injects, so a bug.
    #[error("the disk's contents are unusable after recovery: {reason}")]
    Corrupt {
        /// What is wrong.
        reason: String,
    },
    /// The engine refused to start over the recovered log.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A simulated node as the world drives it (see the module docs).
pub trait Host: Sized {
    /// The consensus engine's name, for reports.
    const ENGINE: &'static str;

    /// What names an entry when the checkers compare replicas.
    const IDENTITY: Identity;

    /// Boots (or recovers) the node from `disk`.
    ///
    /// # Errors
    /// I/O failures (retry later) or unusable disk contents.
    fn boot(
        id: NodeId,
        spec: &HostSpec,
        disk: SimDisk,
        fx: &mut Effects,
    ) -> Result<Self, BootError>;

    /// Advances the node's clock by one tick.
    ///
    /// # Errors
    /// The node had to stop.
    fn tick(&mut self, fx: &mut Effects) -> Result<(), Stopped>;

    /// Delivers a packet from a peer.
    ///
    /// # Errors
    /// The node had to stop.
    fn receive(&mut self, from: NodeId, payload: Bytes, fx: &mut Effects) -> Result<(), Stopped>;

    /// Delivers a client request.
    ///
    /// # Errors
    /// The node had to stop.
    fn request(&mut self, request: Request, fx: &mut Effects) -> Result<(), Stopped>;

    /// The I/O the node started has completed (see [`Effects::wake_after_us`]).
    ///
    /// # Errors
    /// The node had to stop (a failed fsync).
    fn wake(&mut self, fx: &mut Effects) -> Result<(), Stopped>;

    /// The transport reports that `peer` is unreachable.
    ///
    /// # Errors
    /// The node had to stop.
    fn peer_unreachable(&mut self, peer: NodeId, fx: &mut Effects) -> Result<(), Stopped>;

    /// An operator asks this node to change the shard's membership.
    ///
    /// # Errors
    /// The engine's refusal; `Ok(Err)` is a refusal, the outer error a stop.
    fn change_membership(
        &mut self,
        change: MembershipChange,
        fx: &mut Effects,
    ) -> Result<Result<Proposal, ProposeError>, Stopped>;

    /// An operator asks this node to hand leadership to `to`.
    ///
    /// # Errors
    /// As for [`Host::change_membership`].
    fn transfer_leadership(
        &mut self,
        to: NodeId,
        fx: &mut Effects,
    ) -> Result<Result<(), ProposeError>, Stopped>;

    /// The replica's status.
    fn status(&self) -> Status;

    /// The epoch of the entry at `index` in the replica's log, including
    /// entries not yet persisted (from memory: reading it never fails).
    fn epoch_at(&self, index: LogIndex) -> Option<Epoch>;

    /// The replica's snapshot index (entries at or below it are compacted).
    fn snapshot_index(&self) -> LogIndex;

    /// The state machine's applied index.
    fn applied(&self) -> LogIndex;

    /// The replica's durable state, as its WAL holds it.
    fn durable_state(&self) -> DurableState;
}

/// A Ready taken from the engine and not yet finished.
struct Pending<M> {
    number: ReadyNumber,
    /// The WAL batch holding its records; `None` if it had nothing to persist.
    batch: Option<BatchSeq>,
    snapshot: Option<Snapshot>,
    committed: Vec<Entry>,
    after_persist: Vec<Envelope<M>>,
    read_states: Vec<ReadState>,
}

/// A read waiting to be served.
struct ReadWait {
    client: ClientId,
    seq: u64,
    keys: Vec<Bytes>,
    /// The host's tick count when it arrived.
    since: u64,
}

type MessageOf<E> = <<E as SimEngine>::Replica as Replica>::Message;

/// One engine replica over the real WAL on a [`SimDisk`].
pub struct ReplicaHost<E: SimEngine> {
    id: NodeId,
    shard: ShardId,
    disk: SimDisk,
    wal: Wal<SimDisk>,
    replica: E::Replica,
    kv: KvStore,
    rng: DetRng,
    fsync: FsyncLatency,
    snapshot_every: u64,
    describe: bool,
    pipeline: VecDeque<Pending<MessageOf<E>>>,
    /// A wake is scheduled for an fsync.
    sync_scheduled: bool,
    last_commit: LogIndex,
    /// The replica's current epoch, as its Readys report it.
    epoch: Epoch,
    /// Ticks since boot.
    ticks: u64,
    /// The last index a local snapshot was attempted at.
    snapshot_attempted: LogIndex,
    next_read: u64,
    /// Reads asked of the engine, by request id.
    reads_confirming: BTreeMap<u64, ReadWait>,
    /// Reads confirmed at an index, waiting for it to be applied.
    reads_applying: Vec<(LogIndex, ReadWait)>,
    /// Writes proposed here, answered when applied here, with the tick
    /// count when they arrived.
    writes_waiting: BTreeMap<(ClientId, u64), u64>,
}

fn snapshot_file(index: LogIndex) -> String {
    format!("{SNAPSHOT_PREFIX}{:020}{SNAPSHOT_SUFFIX}", index.0)
}

fn parse_snapshot_file(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix(SNAPSHOT_PREFIX)?.strip_suffix(SNAPSHOT_SUFFIX)?;
    (digits.len() == 20).then(|| digits.parse().ok().map(LogIndex)).flatten()
}

fn stop(what: &str, e: impl std::fmt::Display) -> Stopped {
    Stopped { reason: format!("{what}: {e}") }
}

/// Writes a snapshot file durably: temporary name, fsync, rename, directory fsync.
fn write_snapshot(disk: &SimDisk, index: LogIndex, data: &[u8]) -> std::io::Result<()> {
    let name = snapshot_file(index);
    let temp = format!("{SNAPSHOT_PREFIX}{:020}{SNAPSHOT_TEMP_SUFFIX}", index.0);
    if disk.list()?.contains(&name) {
        // Already durable (the same state-machine state: a snapshot at an
        // index is a function of the committed log).
        return Ok(());
    }
    if disk.list()?.contains(&temp) {
        disk.remove(&temp)?;
    }
    let f = disk.create(&temp)?;
    f.write_at(0, data)?;
    f.sync_data()?;
    drop(f);
    disk.rename(&temp, &name)?;
    disk.sync_dir()
}

fn read_snapshot(disk: &SimDisk, index: LogIndex) -> std::io::Result<Bytes> {
    let f = disk.open(&snapshot_file(index))?;
    let len = f.len()?;
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    Ok(Bytes::from(f.read_vec(0, len)?))
}

impl<E: SimEngine> ReplicaHost<E> {
    fn config_for(spec: &HostSpec, id: NodeId) -> Config {
        let mut cfg = spec.config.clone();
        cfg.id = id;
        cfg.seed = mix(cfg.seed, spec.incarnation);
        cfg
    }

    fn fsync_latency(&mut self) -> u64 {
        let f = self.fsync;
        let mut us = f.min_us + self.rng.range(0, f.jitter_us.max(1));
        if f.slow_ppm > 0 && self.rng.chance(u64::from(f.slow_ppm), 1_000_000) {
            us += self.rng.range(0, f.slow_us.max(1));
        }
        us
    }

    /// Takes every Ready the engine has and starts its I/O.
    fn drive(&mut self, fx: &mut Effects) -> Result<(), Stopped> {
        loop {
            // Read faults injected while the engine built the Ready that
            // came back empty.
            let read_faults = loop {
                let before = self.disk.stats().faults;
                match self.replica.ready() {
                    Some(rd) => self.start(rd, fx)?,
                    None => break self.disk.stats().faults - before,
                }
            };
            let finished = self.finish_durable(fx)?;
            if !self.replica.has_ready() {
                break;
            }
            if finished {
                continue;
            }
            // Nothing reached the engine since `ready()` returned nothing,
            // yet `has_ready()` says a Ready waits. Both engines do this
            // when reading their log failed (they leave the work to a later
            // Ready); the next input retries, as a node's next round would.
            // Without a read error it is a broken contract, and asking
            // again would spin forever.
            if read_faults == 0 {
                let status = self.replica.status();
                fx.violation(format!(
                    "has_ready() is true but ready() returns nothing ({:?} of epoch {}, commit \
                     {}, last index {}, snapshot {})",
                    status.role,
                    status.epoch,
                    status.commit,
                    status.last_index,
                    self.replica.storage().snapshot_meta().index
                ));
            }
            break;
        }
        self.maybe_snapshot(fx)?;
        if self.wal.pending_bytes() > 0 && !self.sync_scheduled {
            self.sync_scheduled = true;
            fx.wake_after_us = Some(self.fsync_latency());
        }
        E::check_invariants(&self.replica);
        Ok(())
    }

    fn outgoing(&self, m: &Envelope<MessageOf<E>>) -> Outgoing {
        Outgoing {
            to: m.to,
            payload: Bytes::from(encode_to_vec(&m.body)),
            describe: self.describe.then(|| E::describe(&m.body)),
        }
    }

    fn start(
        &mut self,
        rd: ringkv_consensus::Ready<MessageOf<E>>,
        fx: &mut Effects,
    ) -> Result<(), Stopped> {
        if let Some(s) = rd.soft_state {
            self.epoch = s.epoch;
            if s.role != Role::Leader {
                // The engine drops reads it had not confirmed; their
                // clients time out and retry.
                self.reads_confirming.clear();
            }
        }
        for m in &rd.messages {
            let o = self.outgoing(m);
            fx.sends.push(o);
        }
        let wal_err = |e: WalError| {
            if e.is_environmental() {
                stop("WAL write failed", e)
            } else {
                // The engine asked for something the WAL refuses: a gap,
                // a stale snapshot. That breaks the Ready contract.
                Stopped { reason: format!("contract: the WAL refused a Ready: {e}") }
            }
        };
        if let Some(first) = rd.entries.first() {
            let prev_epoch = E::epoch_at(&self.replica, first.index.prev());
            let entries = rd.entries.iter().map(|e| (e.index, e.epoch, entry_digest(e))).collect();
            fx.observe(Observation::Wrote { prev_epoch, entries });
        }
        if let Some(s) = rd.soft_state {
            // After the entries: a new Multi-Paxos leader's log is checked
            // with the values it re-proposes, which the checkers learn from
            // the write.
            fx.observe(Observation::Role { role: s.role, epoch: s.epoch, leader: s.leader });
        }
        let mut batch = None;
        if let Some(snap) = &rd.snapshot {
            write_snapshot(&self.disk, snap.meta.index, &snap.data)
                .map_err(|e| stop("writing a received snapshot failed", e))?;
            batch = Some(self.wal.install_snapshot(self.shard, &snap.meta).map_err(wal_err)?);
        }
        if !rd.entries.is_empty() {
            batch = Some(self.wal.append(self.shard, &rd.entries).map_err(wal_err)?);
        }
        if let Some(hs) = rd.hard_state {
            batch = Some(self.wal.set_hard_state(self.shard, hs).map_err(wal_err)?);
            if hs.commit > self.last_commit {
                let entries = (self.last_commit.0 + 1..=hs.commit.0)
                    .filter_map(|i| {
                        E::epoch_at(&self.replica, LogIndex(i)).map(|e| (LogIndex(i), e))
                    })
                    .collect();
                fx.observe(Observation::Committed { at: self.epoch, commit: hs.commit, entries });
                self.last_commit = hs.commit;
            }
        }
        if batch.is_some_and(|b| b <= self.wal.durable()) {
            // Nothing new was buffered (for example an empty append).
            batch = None;
        }
        self.pipeline.push_back(Pending {
            number: rd.number,
            batch,
            snapshot: rd.snapshot,
            committed: rd.committed,
            after_persist: rd.after_persist,
            read_states: rd.read_states,
        });
        Ok(())
    }

    /// Finishes, in order, every Ready whose records are durable; says
    /// whether there was one.
    fn finish_durable(&mut self, fx: &mut Effects) -> Result<bool, Stopped> {
        let durable = self.wal.durable();
        let mut finished = false;
        while self.pipeline.front().is_some_and(|p| p.batch.is_none_or(|b| b <= durable)) {
            let p = self.pipeline.pop_front().expect("front checked");
            finished = true;
            self.replica.on_persisted(p.number);
            for m in &p.after_persist {
                let o = self.outgoing(m);
                fx.sends.push(o);
            }
            if let Some(snap) = p.snapshot {
                self.snapshot_attempted = self.snapshot_attempted.max(snap.meta.index);
                self.restore(snap, fx)?;
            }
            for e in &p.committed {
                self.apply(e, fx);
            }
            if !p.committed.is_empty() {
                self.replica.on_applied(self.kv.applied());
            }
            for rs in p.read_states {
                fx.observe(Observation::ReadConfirmed { id: rs.id.0, index: rs.index });
                if let Some(w) = self.reads_confirming.remove(&rs.id.0) {
                    self.reads_applying.push((rs.index, w));
                }
            }
        }
        self.serve_reads(fx);
        Ok(finished)
    }

    fn restore(&mut self, snap: Snapshot, fx: &mut Effects) -> Result<(), Stopped> {
        let index = snap.meta.index;
        match KvStore::restore(snap.data.clone(), E::IDENTITY) {
            Ok(kv) if kv.applied() == index => {
                self.kv = kv;
                fx.observe(Observation::Restored { index, chain: self.kv.chain() });
            }
            Ok(kv) => fx.violation(format!(
                "snapshot at {index} holds a state machine applied to {}",
                kv.applied()
            )),
            Err(e) => fx.violation(format!("snapshot at {index} does not restore: {e}")),
        }
        self.replica.storage_mut().install_snapshot(snap);
        self.replica.on_applied(self.kv.applied());
        Ok(())
    }

    fn apply(&mut self, e: &Entry, fx: &mut Effects) {
        match self.kv.apply(e) {
            Ok(reply) => {
                let digest = entry_digest(e);
                fx.observe(Observation::Applied {
                    index: e.index,
                    epoch: e.epoch,
                    digest,
                    chain: self.kv.chain(),
                });
                if let Some(a) = reply
                    && self.writes_waiting.remove(&(a.client, a.seq)).is_some()
                {
                    fx.replies.push((a.client, Response::Written { seq: a.seq, result: a.result }));
                    fx.observe(Observation::Acked {
                        at: self.epoch,
                        client: a.client,
                        seq: a.seq,
                        index: e.index,
                        epoch: e.epoch,
                        digest,
                    });
                }
            }
            Err(err) => fx.violation(format!("applying entry {}: {err}", e.index)),
        }
    }

    fn serve_reads(&mut self, fx: &mut Effects) {
        let applied = self.kv.applied();
        let mut i = 0;
        while i < self.reads_applying.len() {
            if self.reads_applying[i].0 <= applied {
                let (_, w) = self.reads_applying.swap_remove(i);
                let values = w.keys.iter().map(|k| self.kv.get(k)).collect();
                fx.replies.push((w.client, Response::Read { seq: w.seq, values }));
            } else {
                i += 1;
            }
        }
    }

    /// Takes a local snapshot once enough entries were applied since the
    /// last one, and buffers the WAL compaction.
    fn maybe_snapshot(&mut self, fx: &mut Effects) -> Result<(), Stopped> {
        let applied = self.kv.applied();
        if applied.0 < self.snapshot_attempted.0 + self.snapshot_every
            || self.wal.pending_bytes() > 0
        {
            return Ok(());
        }
        let Some(membership) = E::membership_at(&self.replica, applied) else { return Ok(()) };
        self.snapshot_attempted = applied;
        let current = self.replica.storage().snapshot_meta().index;
        let data = self.kv.snapshot();
        write_snapshot(&self.disk, applied, &data)
            .map_err(|e| stop("writing a local snapshot failed", e))?;
        match self.wal.compact(self.shard, applied, membership) {
            Ok(_) => {
                self.replica.storage_mut().set_snapshot_data(applied, data);
                fx.observe(Observation::Compacted { index: applied });
            }
            Err(WalError::CompactionRefused { .. }) => {}
            Err(e) => return Err(stop("buffering a WAL compaction failed", e)),
        }
        self.remove_old_snapshots(current).map_err(|e| stop("removing old snapshots failed", e))
    }

    /// Removes snapshot files older than the durable snapshot `keep`.
    fn remove_old_snapshots(&self, keep: LogIndex) -> std::io::Result<()> {
        let mut removed = false;
        for name in self.disk.list()? {
            if parse_snapshot_file(&name).is_some_and(|i| i < keep) {
                self.disk.remove(&name)?;
                removed = true;
            }
        }
        if removed {
            self.disk.sync_dir()?;
        }
        Ok(())
    }

    fn after_input(
        &mut self,
        result: Result<(), StepError>,
        fx: &mut Effects,
    ) -> Result<(), Stopped> {
        match result {
            // A WAL read failed (an injected read error): the engine retries.
            Ok(()) | Err(StepError::Log(_)) => {}
            Err(e) => fx.violation(format!("the engine refused a well-formed message: {e}")),
        }
        self.drive(fx)
    }
}

impl<E: SimEngine> Host for ReplicaHost<E> {
    const ENGINE: &'static str = E::NAME;

    const IDENTITY: Identity = E::IDENTITY;

    fn boot(
        id: NodeId,
        spec: &HostSpec,
        disk: SimDisk,
        fx: &mut Effects,
    ) -> Result<Self, BootError> {
        let io = |what: &str, e: std::io::Error| BootError::Io { reason: format!("{what}: {e}") };
        let names = disk.list().map_err(|e| io("listing the disk", e))?;
        for name in names.iter().filter(|n| n.ends_with(SNAPSHOT_TEMP_SUFFIX)) {
            disk.remove(name).map_err(|e| io("removing a temporary snapshot", e))?;
        }
        let mut wal = Wal::open(disk.clone(), spec.wal).map_err(|e| match e {
            WalError::Io { .. } | WalError::NoSpace { .. } => {
                BootError::Io { reason: format!("opening the WAL: {e}") }
            }
            other => BootError::Corrupt { reason: format!("opening the WAL: {other}") },
        })?;
        let shard = spec.config.shard;
        if !wal.shards().contains(&shard)
            && let Some(m) = &spec.initial_membership
        {
            let meta =
                SnapshotMeta { index: LogIndex::ZERO, epoch: Epoch::ZERO, membership: m.clone() };
            let boot_io =
                |e: WalError| BootError::Io { reason: format!("creating the shard: {e}") };
            wal.install_snapshot(shard, &meta).map_err(boot_io)?;
            wal.sync().map_err(boot_io)?;
        }
        let mut log = wal.log(shard);
        let meta = log.snapshot_meta();
        let kv = if meta.index > LogIndex::ZERO {
            let data = read_snapshot(&disk, meta.index).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    BootError::Corrupt {
                        reason: format!(
                            "the WAL names a snapshot at {} whose file is missing",
                            meta.index
                        ),
                    }
                } else {
                    io("reading the snapshot", e)
                }
            })?;
            let kv = KvStore::restore(data.clone(), E::IDENTITY).map_err(|e| {
                BootError::Corrupt { reason: format!("snapshot at {}: {e}", meta.index) }
            })?;
            if kv.applied() != meta.index {
                return Err(BootError::Corrupt {
                    reason: format!(
                        "snapshot file at {} holds a state machine applied to {}",
                        meta.index,
                        kv.applied()
                    ),
                });
            }
            log.set_snapshot_data(meta.index, data);
            kv
        } else {
            KvStore::new(E::IDENTITY)
        };
        let config = Self::config_for(spec, id);
        let replica = E::create(config, kv.applied(), log, &spec.engine)?;
        let status = replica.status();
        let commit = status.commit;
        let durable = durable_state(replica.storage());
        fx.observe(Observation::Booted {
            durable,
            applied: kv.applied(),
            chain: kv.chain(),
            commit,
        });
        let mut host = ReplicaHost {
            id,
            shard,
            disk,
            wal,
            replica,
            kv,
            rng: DetRng::new(mix(spec.config.seed ^ id.0, spec.incarnation)),
            fsync: spec.fsync,
            snapshot_every: spec.snapshot_every_entries.max(1),
            describe: spec.describe_messages,
            pipeline: VecDeque::new(),
            sync_scheduled: false,
            last_commit: commit,
            epoch: status.epoch,
            ticks: 0,
            snapshot_attempted: meta.index,
            next_read: 1,
            reads_confirming: BTreeMap::new(),
            reads_applying: Vec::new(),
            writes_waiting: BTreeMap::new(),
        };
        host.drive(fx).map_err(|s| BootError::Io { reason: s.reason })?;
        Ok(host)
    }

    fn tick(&mut self, fx: &mut Effects) -> Result<(), Stopped> {
        self.ticks += 1;
        let now = self.ticks;
        let fresh = |since: u64| now - since < REQUEST_WAIT_TICKS_MAX;
        self.reads_confirming.retain(|_, w| fresh(w.since));
        self.reads_applying.retain(|(_, w)| fresh(w.since));
        self.writes_waiting.retain(|_, since| fresh(*since));
        self.replica.tick();
        self.drive(fx)
    }

    fn receive(&mut self, from: NodeId, payload: Bytes, fx: &mut Effects) -> Result<(), Stopped> {
        let body = match decode_exact::<MessageOf<E>>(payload) {
            Ok(b) => b,
            Err(e) => {
                fx.violation(format!("a packet from {from} does not decode: {e}"));
                return Ok(());
            }
        };
        let env = Envelope { shard: self.shard, from, to: self.id, body };
        let r = self.replica.step(env);
        self.after_input(r, fx)
    }

    fn request(&mut self, request: Request, fx: &mut Effects) -> Result<(), Stopped> {
        let (client, seq) = (request.client(), request.seq());
        let refused = |e: ProposeError| match e {
            ProposeError::NotLeader { leader } => Response::NotLeader { seq, leader },
            _ => Response::Busy { seq },
        };
        match request {
            Request::Write { op, .. } => {
                if self.writes_waiting.len() >= WRITES_PENDING_MAX {
                    fx.replies.push((client, Response::Busy { seq }));
                    return Ok(());
                }
                let cmd = Command { client, seq, op };
                match self.replica.propose(cmd.encode()) {
                    Ok(_) => {
                        self.writes_waiting.insert((client, seq), self.ticks);
                    }
                    Err(e) => fx.replies.push((client, refused(e))),
                }
            }
            Request::Read { keys, .. } => {
                if self.reads_confirming.len() + self.reads_applying.len() >= READS_PENDING_MAX {
                    fx.replies.push((client, Response::Busy { seq }));
                    return Ok(());
                }
                let id = self.next_read;
                self.next_read += 1;
                match self.replica.read_index(RequestId(id)) {
                    Ok(()) => {
                        fx.observe(Observation::ReadAsked { id });
                        let since = self.ticks;
                        self.reads_confirming.insert(id, ReadWait { client, seq, keys, since });
                    }
                    Err(e) => fx.replies.push((client, refused(e))),
                }
            }
        }
        self.drive(fx)
    }

    fn wake(&mut self, fx: &mut Effects) -> Result<(), Stopped> {
        self.sync_scheduled = false;
        self.wal.sync().map_err(|e| stop("WAL sync failed", e))?;
        self.drive(fx)
    }

    fn peer_unreachable(&mut self, peer: NodeId, fx: &mut Effects) -> Result<(), Stopped> {
        self.replica.report_unreachable(peer);
        self.drive(fx)
    }

    fn change_membership(
        &mut self,
        change: MembershipChange,
        fx: &mut Effects,
    ) -> Result<Result<Proposal, ProposeError>, Stopped> {
        let r = self.replica.change_membership(change);
        self.drive(fx)?;
        Ok(r)
    }

    fn transfer_leadership(
        &mut self,
        to: NodeId,
        fx: &mut Effects,
    ) -> Result<Result<(), ProposeError>, Stopped> {
        let r = self.replica.transfer_leadership(to);
        self.drive(fx)?;
        Ok(r)
    }

    fn status(&self) -> Status {
        self.replica.status()
    }

    fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        E::epoch_at(&self.replica, index)
    }

    fn snapshot_index(&self) -> LogIndex {
        self.replica.storage().snapshot_meta().index
    }

    fn applied(&self) -> LogIndex {
        self.kv.applied()
    }

    fn durable_state(&self) -> DurableState {
        durable_state(self.replica.storage())
    }
}

/// The durable state a WAL view holds.
fn durable_state(log: &ShardLog<SimDisk>) -> DurableState {
    let meta = log.snapshot_meta();
    let last_index = log.last_index();
    let mut entries = 0;
    for i in meta.index.next().0..=last_index.0 {
        let epoch = log.epoch(LogIndex(i)).unwrap_or(Epoch::ZERO);
        entries = mix(mix(entries, i), mix(epoch.round, epoch.node.0));
    }
    DurableState {
        hard_state: log.hard_state(),
        snapshot: (meta.index, meta.epoch),
        last_index,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_file_names_round_trip_and_sort() {
        assert_eq!(parse_snapshot_file(&snapshot_file(LogIndex(42))), Some(LogIndex(42)));
        assert!(snapshot_file(LogIndex(9)) < snapshot_file(LogIndex(10)));
        assert_eq!(parse_snapshot_file("0000000000000001.wal"), None);
        assert_eq!(parse_snapshot_file("snap-1.snap"), None);
    }

    #[test]
    fn snapshot_files_survive_a_crash_once_written() {
        let disk = SimDisk::new(1);
        write_snapshot(&disk, LogIndex(7), b"state").unwrap();
        disk.crash();
        assert_eq!(read_snapshot(&disk, LogIndex(7)).unwrap(), Bytes::from_static(b"state"));
    }
}
