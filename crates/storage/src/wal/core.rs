//! The WAL's state machine, shared by [`super::Wal`] (one thread) and
//! [`super::SharedWal`] (group commit across threads).
//!
//! A sync is split in three so the I/O can run without holding the state:
//! [`Core::begin_sync`] takes the buffered batch and the segment writer out,
//! [`SyncJob::run`] writes and fdatasyncs it, and [`Core::finish_sync`]
//! applies it to the durable index (or poisons the WAL).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ringkv_consensus::{Entry, HardState, LogIndex, Membership, ShardId, SnapshotMeta};

use super::error::{CompactionRefusal, DiskOp, WalError};
use super::format::{BATCH_HEADER_BYTES, BatchHeader, Op, encode_record};
use super::index::{Index, Loc, LogShape, Mode, ShapeError};
use super::recovery::Recovered;
use super::writer::SegmentWriter;
use super::{BatchSeq, RecoveryReport, WalOptions, WalStats};
use crate::disk::Disk;

/// The durable index, shared with every [`super::ShardLog`].
pub(crate) type SharedIndex<F> = Arc<RwLock<Index<F>>>;

pub(crate) fn read_index<F>(index: &RwLock<Index<F>>) -> RwLockReadGuard<'_, Index<F>> {
    index.read().expect("WAL index lock poisoned: a thread panicked while updating it")
}

fn write_index<F>(index: &RwLock<Index<F>>) -> RwLockWriteGuard<'_, Index<F>> {
    index.write().expect("WAL index lock poisoned: a thread panicked while updating it")
}

/// A record accepted but not yet applied to the durable index.
#[derive(Debug)]
struct PendingOp {
    /// The batch it is (or will be) written in.
    seq: u64,
    shard: ShardId,
    op: Op,
    /// Offset of its record in the batch buffer (header included).
    offset: u32,
    len: u32,
}

/// One batch on its way to disk.
pub(crate) struct SyncJob<D: Disk> {
    writer: SegmentWriter<D>,
    seq: u64,
    /// Batch header and records.
    buf: Vec<u8>,
    /// Bytes of checkpoint records placed before the accepted ones.
    checkpoint_bytes: u32,
    records: u32,
    rotate: bool,
    /// The segment the batch went to, if it is a new one.
    created: bool,
}

impl<D: Disk> SyncJob<D> {
    /// Writes the batch (after rotating if needed) and fdatasyncs it.
    pub(crate) fn run(&mut self) -> Result<(), WalError> {
        if self.rotate {
            self.writer.rotate(self.seq)?;
            self.created = true;
        }
        self.writer.write_batch(&self.buf)
    }
}

pub(crate) struct Core<D: Disk> {
    disk: D,
    options: WalOptions,
    index: SharedIndex<D::File>,
    /// Every shard's log as it will be once every accepted record is
    /// durable: what new records are validated against.
    accepted: BTreeMap<ShardId, LogShape>,
    /// The batch being filled: a header placeholder, then records.
    pending: Vec<u8>,
    pending_records: u32,
    /// Accepted records not yet applied to the index, oldest first (those
    /// of a batch being written come before those still buffered).
    unapplied: VecDeque<PendingOp>,
    /// Sequence number of the batch being filled.
    next_seq: u64,
    /// Every batch up to this one is durable.
    durable_seq: u64,
    /// `None` while a [`SyncJob`] holds it.
    writer: Option<SegmentWriter<D>>,
    poison: Option<Arc<WalError>>,
    stats: WalStats,
    report: RecoveryReport,
}

impl<D: Disk> Core<D> {
    pub(crate) fn open(disk: D, options: WalOptions) -> Result<Core<D>, WalError> {
        options.validate()?;
        let Recovered { index, writer, next_seq, report } =
            super::recovery::recover(&disk, &options)?;
        let accepted = index.shards.iter().map(|(id, s)| (*id, s.shape.clone())).collect();
        let mut core = Core {
            disk,
            options,
            index: Arc::new(RwLock::new(index)),
            accepted,
            pending: vec![0; BATCH_HEADER_BYTES],
            pending_records: 0,
            unapplied: VecDeque::new(),
            next_seq,
            durable_seq: next_seq - 1,
            writer: Some(writer),
            poison: None,
            stats: WalStats::default(),
            report,
        };
        core.collect_segments()?;
        Ok(core)
    }

    pub(crate) fn index(&self) -> &SharedIndex<D::File> {
        &self.index
    }

    pub(crate) fn disk(&self) -> &D {
        &self.disk
    }

    pub(crate) fn report(&self) -> &RecoveryReport {
        &self.report
    }

    pub(crate) fn stats(&self) -> WalStats {
        self.stats
    }

    pub(crate) fn durable(&self) -> BatchSeq {
        BatchSeq(self.durable_seq)
    }

    /// The batch records accepted now will be written in.
    pub(crate) fn filling(&self) -> BatchSeq {
        BatchSeq(self.next_seq)
    }

    /// Whether any accepted record is not yet durable.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending_records > 0
    }

    pub(crate) fn pending_bytes(&self) -> u64 {
        (self.pending.len() - BATCH_HEADER_BYTES) as u64
    }

    pub(crate) fn poison(&self) -> Option<&Arc<WalError>> {
        self.poison.as_ref()
    }

    fn check_poison(&self) -> Result<(), WalError> {
        match &self.poison {
            Some(cause) => Err(WalError::Poisoned { cause: Arc::clone(cause) }),
            None => Ok(()),
        }
    }

    /// Encodes `ops` for `shard` into the batch being filled, all or none.
    fn buffer(&mut self, shard: ShardId, ops: Vec<Op>) -> Result<BatchSeq, WalError> {
        let start = self.pending.len();
        let mut placed = Vec::with_capacity(ops.len());
        for op in &ops {
            let at = self.pending.len();
            let len = encode_record(&mut self.pending, shard, op);
            if len as u64 > self.options.record_bytes_max {
                self.pending.truncate(start);
                return Err(WalError::RecordTooLarge {
                    shard,
                    bytes: len as u64,
                    max_bytes: self.options.record_bytes_max,
                });
            }
            placed.push((at, len));
        }
        if self.pending_bytes() > self.options.batch_bytes_max {
            let pending_bytes = (start - BATCH_HEADER_BYTES) as u64;
            self.pending.truncate(start);
            return Err(WalError::Busy { pending_bytes, max_bytes: self.options.batch_bytes_max });
        }
        let seq = self.next_seq;
        for (op, (at, len)) in ops.into_iter().zip(placed) {
            let offset = u32::try_from(at).expect("batches are bounded by batch_bytes_max");
            let len = u32::try_from(len).expect("records are bounded by record_bytes_max");
            self.unapplied.push_back(PendingOp { seq, shard, op, offset, len });
            self.pending_records += 1;
        }
        Ok(BatchSeq(seq))
    }

    pub(crate) fn append(
        &mut self,
        shard: ShardId,
        entries: &[Entry],
    ) -> Result<BatchSeq, WalError> {
        self.check_poison()?;
        let Some(first) = entries.first() else { return Ok(self.durable()) };
        let (snapshot, last) = self
            .accepted
            .get(&shard)
            .map_or((LogIndex::ZERO, LogIndex::ZERO), |s| (s.snapshot.index, s.last_index()));
        if first.index <= snapshot {
            return Err(WalError::BelowSnapshot { shard, index: first.index, snapshot });
        }
        let next = last.next();
        if first.index > next {
            return Err(WalError::Gap { shard, first: first.index, next });
        }
        for (k, e) in entries.iter().enumerate() {
            if e.index != first.index.plus(k as u64) {
                return Err(WalError::Gap {
                    shard,
                    first: e.index,
                    next: first.index.plus(k as u64),
                });
            }
        }
        let seq = self.buffer(shard, entries.iter().cloned().map(Op::Entry).collect())?;
        let shape = self.accepted.entry(shard).or_default();
        for e in entries {
            shape.apply_entry(e.index, e.epoch, Mode::Strict).expect("validated above");
        }
        Ok(seq)
    }

    pub(crate) fn set_hard_state(
        &mut self,
        shard: ShardId,
        hard_state: HardState,
    ) -> Result<BatchSeq, WalError> {
        self.check_poison()?;
        let seq = self.buffer(shard, vec![Op::HardState(hard_state)])?;
        self.accepted.entry(shard).or_default().hard_state = hard_state;
        Ok(seq)
    }

    pub(crate) fn install_snapshot(
        &mut self,
        shard: ShardId,
        meta: &SnapshotMeta,
    ) -> Result<BatchSeq, WalError> {
        self.check_poison()?;
        let current = self.accepted.get(&shard).map_or(LogIndex::ZERO, |s| s.snapshot.index);
        if meta.index < current {
            return Err(WalError::StaleSnapshot { shard, index: meta.index, current });
        }
        let keep = self.accepted.get(&shard).is_some_and(|s| s.install_keeps_suffix(meta));
        let op = if keep { Op::Compact(meta.clone()) } else { Op::Install(meta.clone()) };
        let seq = self.buffer(shard, vec![op])?;
        let shape = self.accepted.entry(shard).or_default();
        if keep {
            shape.apply_compact(meta)
        } else {
            shape.apply_reset(meta)
        };
        Ok(seq)
    }

    pub(crate) fn compact(
        &mut self,
        shard: ShardId,
        upto: LogIndex,
        membership: Membership,
    ) -> Result<BatchSeq, WalError> {
        self.check_poison()?;
        let refuse = |why| Err(WalError::CompactionRefused { shard, index: upto, why });
        let accepted_snapshot =
            self.accepted.get(&shard).map_or(LogIndex::ZERO, |s| s.snapshot.index);
        if upto <= accepted_snapshot {
            return refuse(CompactionRefusal::AlreadyCompacted);
        }
        let conflict = self.unapplied.iter().any(|p| {
            p.shard == shard
                && match &p.op {
                    Op::Entry(e) => e.index <= upto,
                    Op::Install(_) | Op::Remove => true,
                    Op::HardState(_) | Op::Compact(_) => false,
                }
        });
        if conflict {
            return refuse(CompactionRefusal::ConflictsWithPending);
        }
        let epoch = {
            let index = read_index(&self.index);
            let durable = index.shards.get(&shard).map(|s| &s.shape);
            match durable {
                Some(shape) if upto <= shape.last_index() => {
                    shape.epoch_at(upto).expect("above the accepted snapshot and durable")
                }
                _ => return refuse(CompactionRefusal::NotDurable),
            }
        };
        let meta = SnapshotMeta { index: upto, epoch, membership };
        let seq = self.buffer(shard, vec![Op::Compact(meta.clone())])?;
        self.accepted.entry(shard).or_default().apply_compact(&meta);
        Ok(seq)
    }

    pub(crate) fn remove_shard(&mut self, shard: ShardId) -> Result<BatchSeq, WalError> {
        self.check_poison()?;
        if !self.accepted.contains_key(&shard) {
            // Nothing to remove; but a removal still on its way to disk is
            // durable only with its own batch.
            let last_op = self.unapplied.iter().rev().find(|p| p.shard == shard);
            return Ok(last_op.map_or(self.durable(), |p| BatchSeq(p.seq)));
        }
        let seq = self.buffer(shard, vec![Op::Remove])?;
        self.accepted.remove(&shard);
        Ok(seq)
    }

    /// Takes the buffered batch and the writer out for writing, or `None`
    /// if nothing is buffered.
    ///
    /// # Panics
    /// If another sync is in progress.
    pub(crate) fn begin_sync(&mut self) -> Result<Option<SyncJob<D>>, WalError> {
        self.check_poison()?;
        if self.pending_records == 0 {
            return Ok(None);
        }
        let writer = self.writer.take().expect("one sync at a time");
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut buf = std::mem::replace(&mut self.pending, vec![0; BATCH_HEADER_BYTES]);
        let mut records = std::mem::take(&mut self.pending_records);
        let rotate = writer.must_rotate(buf.len() as u64);
        let mut checkpoint_bytes = 0;
        if rotate || !writer.has_batches {
            // The first batch of every segment restates every shard's hard
            // state and snapshot, so older segments are needed only for
            // their entries once it is durable. (The hard state record also
            // keeps a shard whose state is all defaults in existence.)
            let mut checkpoint = vec![0; BATCH_HEADER_BYTES];
            let index = read_index(&self.index);
            for (shard, s) in &index.shards {
                encode_record(&mut checkpoint, *shard, &Op::HardState(s.shape.hard_state));
                records += 1;
                if s.shape.snapshot != SnapshotMeta::default() {
                    encode_record(&mut checkpoint, *shard, &Op::Compact(s.shape.snapshot.clone()));
                    records += 1;
                }
            }
            drop(index);
            checkpoint_bytes = (checkpoint.len() - BATCH_HEADER_BYTES) as u32;
            checkpoint.extend_from_slice(&buf[BATCH_HEADER_BYTES..]);
            buf = checkpoint;
        }
        let body_bytes = u32::try_from(buf.len() - BATCH_HEADER_BYTES)
            .expect("batches are bounded by batch_bytes_max");
        buf[..BATCH_HEADER_BYTES]
            .copy_from_slice(&BatchHeader { seq, body_bytes, records }.encode());
        Ok(Some(SyncJob { writer, seq, buf, checkpoint_bytes, records, rotate, created: false }))
    }

    /// Applies a written batch to the index, or poisons the WAL if writing
    /// it failed. Returns the durable sequence number.
    pub(crate) fn finish_sync(
        &mut self,
        job: SyncJob<D>,
        result: Result<(), WalError>,
    ) -> Result<BatchSeq, WalError> {
        let SyncJob { mut writer, seq, buf, checkpoint_bytes, records, created, .. } = job;
        if created {
            self.stats.segments_created += 1;
        }
        let result = result.map(|()| {
            let mut index = write_index(&self.index);
            if created {
                index.segments.entry(writer.id).or_insert_with(|| super::index::Segment {
                    name: writer.name.clone(),
                    file: Arc::clone(&writer.file),
                    live_entries: 0,
                });
            }
            let base = writer.offset + u64::from(checkpoint_bytes);
            while self.unapplied.front().is_some_and(|p| p.seq == seq) {
                let p = self.unapplied.pop_front().expect("front exists");
                let loc =
                    Loc { segment: writer.id, offset: base + u64::from(p.offset), len: p.len };
                index.apply(p.shard, p.op, loc, Mode::Strict).unwrap_or_else(|e: ShapeError| {
                    panic!("record for shard {} was validated when accepted: {e:?}", p.shard)
                });
            }
            #[cfg(debug_assertions)]
            index.check_invariants();
            drop(index);
            writer.offset += buf.len() as u64;
            writer.has_batches = true;
            self.durable_seq = seq;
            self.stats.batches += 1;
            self.stats.records += u64::from(records);
            self.stats.bytes += buf.len() as u64;
        });
        self.writer = Some(writer);
        match result {
            Ok(()) => {
                // The batch is durable whatever happens to the clean-up.
                if let Err(e) = self.collect_segments() {
                    self.poison = Some(Arc::new(e));
                }
                Ok(BatchSeq(seq))
            }
            Err(e) => {
                self.poison = Some(Arc::new(e.clone()));
                Err(e)
            }
        }
    }

    /// Deletes the oldest segments while no shard needs them: no live
    /// entries, and the checkpoint that restates their hard states and
    /// snapshots is durable (the next segment holds a batch). Only a prefix
    /// is ever deleted, each deletion made durable before the next, so the
    /// segments on disk always form a contiguous run.
    fn collect_segments(&mut self) -> Result<(), WalError> {
        let Some((current, current_has_batches)) =
            self.writer.as_ref().map(|w| (w.id, w.has_batches))
        else {
            return Ok(());
        };
        loop {
            let name = {
                let mut index = write_index(&self.index);
                let Some((&id, seg)) = index.segments.first_key_value() else { return Ok(()) };
                let checkpointed = id + 1 < current || (id + 1 == current && current_has_batches);
                if id == current || seg.live_entries > 0 || !checkpointed {
                    return Ok(());
                }
                index.segments.remove(&id).expect("just looked up").name
            };
            let path = self.disk.describe(&name);
            self.disk.remove(&name).map_err(|e| WalError::io(DiskOp::Remove, path.clone(), e))?;
            self.disk.sync_dir().map_err(|e| WalError::io(DiskOp::SyncDir, path, e))?;
            self.stats.segments_deleted += 1;
        }
    }

    /// Shards whose entries keep the oldest segment alive.
    pub(crate) fn oldest_segment_pinned_by(&self) -> Vec<ShardId> {
        let index = read_index(&self.index);
        match index.segments.first_key_value() {
            Some((&id, seg)) if seg.live_entries > 0 => index.shards_in(id),
            _ => Vec::new(),
        }
    }

    /// Ids of the live segments, oldest first.
    pub(crate) fn segment_ids(&self) -> Vec<u64> {
        read_index(&self.index).segments.keys().copied().collect()
    }

    /// Shards with any durable state.
    pub(crate) fn shards(&self) -> Vec<ShardId> {
        read_index(&self.index).shards.keys().copied().collect()
    }
}
