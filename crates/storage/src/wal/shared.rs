//! [`SharedWal`]: group commit for many threads.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ringkv_consensus::{Entry, HardState, LogIndex, Membership, ShardId, SnapshotMeta};

use super::core::Core;
use super::{BatchSeq, ShardLog, WalError, WalStats};
use crate::disk::Disk;

/// A WAL many threads append to, with group commit.
///
/// Threads add records ([`SharedWal::append`] and friends return the batch
/// the records will be written in) and wait for durability with
/// [`SharedWal::wait_durable`]. Waiting threads elect a leader among
/// themselves: the first to find no write in progress takes every record
/// buffered so far, writes them as one batch with one fdatasync without
/// holding the lock, and wakes the others; records added meanwhile go into
/// the next batch, which the next waiter to wake writes. So the number of
/// fdatasyncs per second stays what the disk allows while the records per
/// fdatasync grow with the number of waiting threads.
pub struct SharedWal<D: Disk> {
    inner: Arc<Inner<D>>,
}

impl<D: Disk> Clone for SharedWal<D> {
    fn clone(&self) -> SharedWal<D> {
        SharedWal { inner: Arc::clone(&self.inner) }
    }
}

impl<D: Disk> std::fmt::Debug for SharedWal<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWal").finish_non_exhaustive()
    }
}

struct Inner<D: Disk> {
    state: Mutex<State<D>>,
    /// `written[n % 2]` is signalled when batch `n` has been written. At
    /// most two batches have waiters (the one being written and the one
    /// filling), so waking the waiters of one does not wake the others: no
    /// thundering herd of threads that would only go back to sleep.
    written: [Condvar; 2],
}

struct State<D: Disk> {
    core: Core<D>,
    /// Whether a leader is writing a batch.
    writing: bool,
}

impl<D: Disk> SharedWal<D> {
    pub(crate) fn new(core: Core<D>) -> SharedWal<D> {
        SharedWal {
            inner: Arc::new(Inner {
                state: Mutex::new(State { core, writing: false }),
                written: [Condvar::new(), Condvar::new()],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<D>> {
        self.inner.state.lock().expect("WAL lock poisoned: a thread panicked while holding it")
    }

    /// Buffers entries for `shard`; see [`super::Wal::append`].
    ///
    /// # Errors
    /// As [`super::Wal::append`].
    pub fn append(&self, shard: ShardId, entries: &[Entry]) -> Result<BatchSeq, WalError> {
        self.lock().core.append(shard, entries)
    }

    /// Buffers a hard state; see [`super::Wal::set_hard_state`].
    ///
    /// # Errors
    /// As [`super::Wal::set_hard_state`].
    pub fn set_hard_state(
        &self,
        shard: ShardId,
        hard_state: HardState,
    ) -> Result<BatchSeq, WalError> {
        self.lock().core.set_hard_state(shard, hard_state)
    }

    /// Buffers a snapshot installation; see [`super::Wal::install_snapshot`].
    ///
    /// # Errors
    /// As [`super::Wal::install_snapshot`].
    pub fn install_snapshot(
        &self,
        shard: ShardId,
        meta: &SnapshotMeta,
    ) -> Result<BatchSeq, WalError> {
        self.lock().core.install_snapshot(shard, meta)
    }

    /// Buffers a compaction; see [`super::Wal::compact`].
    ///
    /// # Errors
    /// As [`super::Wal::compact`].
    pub fn compact(
        &self,
        shard: ShardId,
        upto: LogIndex,
        membership: Membership,
    ) -> Result<BatchSeq, WalError> {
        self.lock().core.compact(shard, upto, membership)
    }

    /// Buffers the removal of a shard; see [`super::Wal::remove_shard`].
    ///
    /// # Errors
    /// As [`super::Wal::remove_shard`].
    pub fn remove_shard(&self, shard: ShardId) -> Result<BatchSeq, WalError> {
        self.lock().core.remove_shard(shard)
    }

    /// Blocks until batch `seq` is durable, writing batches as the group
    /// commit leader when no other thread is.
    ///
    /// # Errors
    /// The WAL is poisoned (by this write or an earlier one): the batch may
    /// or may not be durable, and never will be made so by this process.
    ///
    /// # Panics
    /// If `seq` was never handed out by this WAL.
    pub fn wait_durable(&self, seq: BatchSeq) -> Result<(), WalError> {
        self.wait_locked(self.lock(), seq)
    }

    fn wait_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<D>>,
        seq: BatchSeq,
    ) -> Result<(), WalError> {
        assert!(seq <= st.core.filling(), "batch {} was never handed out", seq.0);
        let written = |n: u64| &self.inner.written[(n % 2) as usize];
        loop {
            if st.core.durable() >= seq {
                return Ok(());
            }
            if let Some(cause) = st.core.poison() {
                return Err(WalError::Poisoned { cause: Arc::clone(cause) });
            }
            if st.writing {
                st = written(seq.0).wait(st).expect("WAL lock poisoned by a panicking thread");
                continue;
            }
            let Some(mut job) = st.core.begin_sync()? else {
                unreachable!("batch {} is neither durable nor buffered", seq.0);
            };
            let batch = st.core.filling().0 - 1;
            st.writing = true;
            drop(st);
            let result = job.run();
            st = self.lock();
            st.writing = false;
            let finished = st.core.finish_sync(job, result);
            // Wake this batch's waiters, and one waiter of the next batch to
            // lead it; after a failure, everyone, to see the poison.
            written(batch).notify_all();
            if finished.is_ok() {
                written(batch + 1).notify_one();
            } else {
                written(batch + 1).notify_all();
            }
            finished?;
        }
    }

    /// Appends entries and waits until they are durable.
    ///
    /// # Errors
    /// As [`SharedWal::append`] and [`SharedWal::wait_durable`].
    pub fn append_durably(&self, shard: ShardId, entries: &[Entry]) -> Result<BatchSeq, WalError> {
        let mut st = self.lock();
        let seq = st.core.append(shard, entries)?;
        self.wait_locked(st, seq)?;
        Ok(seq)
    }

    /// Makes everything buffered so far durable.
    ///
    /// # Errors
    /// As [`SharedWal::wait_durable`].
    pub fn sync(&self) -> Result<BatchSeq, WalError> {
        let st = self.lock();
        if let Some(cause) = st.core.poison() {
            return Err(WalError::Poisoned { cause: Arc::clone(cause) });
        }
        let seq = if st.core.has_pending() { st.core.filling() } else { st.core.durable() };
        self.wait_locked(st, seq)?;
        Ok(seq)
    }

    /// Every batch up to this one is durable.
    pub fn durable(&self) -> BatchSeq {
        self.lock().core.durable()
    }

    /// The durable log of `shard`, for its engine.
    pub fn log(&self, shard: ShardId) -> ShardLog<D> {
        let st = self.lock();
        ShardLog::new(shard, std::sync::Arc::clone(st.core.index()), st.core.disk().clone())
    }

    /// Counters of what the WAL has written.
    pub fn stats(&self) -> WalStats {
        self.lock().core.stats()
    }
}
