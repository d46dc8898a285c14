//! Pacing of the snapshot bytes a node sends (`--move-bytes-per-second`,
//! ADR 0002): a data shard's leader catching up a new replica (a move)
//! or a far-behind follower sends it the shard's whole state, and at full
//! speed that would starve the foreground traffic sharing the links.
//!
//! A token bucket over the node's injected clock: it fills at the rate, up
//! to [`MOVE_BURST`] of it. A chunk leaves while the balance is not
//! negative and takes its size from it; the balance may go below zero, so
//! a chunk larger than the bucket still leaves (nothing can wedge on the
//! bucket's size) and the debt is repaid before the next. Over any
//! interval of length `t` the chunk bytes that leave are therefore at most
//! `burst + rate·t + one chunk`.
//!
//! A chunk that may not leave yet is *held*, per (shard, peer), by its
//! offset, and leaves in order in a later round (every round releases what
//! the bucket allows). The engine resends chunks it thinks lost (Raft and
//! Multi-Paxos both resend from the last acknowledged offset after an
//! election timeout of silence): a resent chunk replaces the held copy of
//! the same offset instead of queueing twice; a chunk of another snapshot
//! drops the held chunks of the old one; and past [`MOVE_HELD_CHUNKS_MAX`] held
//! chunks a new one is dropped, which the engine's own retry repairs.
//! Held chunks are never lost otherwise: a delayed snapshot still arrives,
//! or is sent again by the engine.
//!
//! The metadata shard's snapshots are never held: it is small and every
//! member needs it to serve anything.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ringkv_consensus::{Envelope, LogIndex, NodeId, ShardId};

use crate::engine::SnapshotChunk;

/// How much of the rate the bucket holds: one second's worth, so that a
/// move that waited sends at most a second's bytes at once.
pub const MOVE_BURST: Duration = Duration::from_secs(1);

/// Most snapshot chunks held back at once, over every shard and peer: a
/// bound on the throttle's bookkeeping (the chunks themselves are slices
/// of snapshot data the engines hold anyway). An engine may keep up to
/// `max_inflight_messages` chunks in flight to one peer, so one transfer
/// can fill it; past it a new chunk is dropped and its engine sends it
/// again after an election timeout of silence.
pub const MOVE_HELD_CHUNKS_MAX: usize = 256;

/// Nanoseconds per second: the bucket counts bytes × 10⁹ so that refills
/// over any number of nanoseconds are exact integers.
const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A token bucket of bytes, refilled from the readings of a clock.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Balance in bytes × 10⁹. Invariant: at most `capacity`; below zero
    /// only by the last chunk taken.
    balance: i128,
    /// `rate × MOVE_BURST`, in bytes × 10⁹.
    capacity: i128,
    /// The clock reading the balance is as of.
    at: Duration,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second as of `now`.
    pub(crate) fn new(rate: u64, now: Duration) -> TokenBucket {
        assert!(rate > 0, "a rate of 0 is no limit, not a bucket");
        let capacity = i128::from(rate) * MOVE_BURST.as_nanos() as i128;
        TokenBucket { rate, balance: capacity, capacity, at: now }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_nanos() as i128;
        self.at = self.at.max(now);
        self.balance = (self.balance + elapsed * i128::from(self.rate)).min(self.capacity);
    }

    /// Takes `bytes` if the balance is not negative at `now` (leaving it
    /// negative if they are more than it holds); `false` otherwise.
    pub(crate) fn take(&mut self, bytes: u64, now: Duration) -> bool {
        self.refill(now);
        if self.balance < 0 {
            return false;
        }
        self.balance -= i128::from(bytes) * NANOS_PER_SECOND;
        debug_assert!(self.balance <= self.capacity);
        true
    }
}

/// The held chunks of one (shard, peer): one snapshot's, by offset.
#[derive(Debug)]
struct Held<M> {
    index: LogIndex,
    chunks: BTreeMap<u64, (u64, Envelope<M>)>,
}

/// The node's pacing of snapshot chunks (see the module docs).
#[derive(Debug)]
pub(crate) struct MoveThrottle<M> {
    /// `None`: no limit; every chunk leaves at once.
    bucket: Option<TokenBucket>,
    held: BTreeMap<(ShardId, NodeId), Held<M>>,
    /// The (shard, peer) pairs with held chunks, in the order they first
    /// had to wait, so no pair starves the others.
    order: VecDeque<(ShardId, NodeId)>,
    /// Chunks held, over every pair. Invariant: `<= MOVE_HELD_CHUNKS_MAX`.
    held_count: usize,
    /// Chunk data bytes let through since the node started.
    sent_bytes: u64,
    /// Chunks dropped because too many were held.
    dropped: u64,
}

impl<M> MoveThrottle<M> {
    /// A throttle of `bytes_per_second` (0: no limit) as of `now`.
    pub(crate) fn new(bytes_per_second: u64, now: Duration) -> MoveThrottle<M> {
        MoveThrottle {
            bucket: (bytes_per_second > 0).then(|| TokenBucket::new(bytes_per_second, now)),
            held: BTreeMap::new(),
            order: VecDeque::new(),
            held_count: 0,
            sent_bytes: 0,
            dropped: 0,
        }
    }

    /// Offers a chunk for sending: `Some` if it may leave now (nothing of
    /// its pair is waiting and the bucket allows it), else it is held (or
    /// dropped when too many are) and `None`.
    pub(crate) fn offer(
        &mut self,
        env: Envelope<M>,
        chunk: SnapshotChunk,
        now: Duration,
    ) -> Option<Envelope<M>> {
        let key = (env.shard, env.to);
        let Some(bucket) = &mut self.bucket else {
            self.sent_bytes += chunk.bytes;
            return Some(env);
        };
        if !self.held.contains_key(&key) && bucket.take(chunk.bytes, now) {
            self.sent_bytes += chunk.bytes;
            return Some(env);
        }
        let held = self
            .held
            .entry(key)
            .or_insert_with(|| Held { index: chunk.index, chunks: BTreeMap::new() });
        if held.chunks.is_empty() {
            self.order.push_back(key);
        }
        if held.index != chunk.index {
            // Another snapshot: the old one's chunks are of no use.
            self.held_count -= held.chunks.len();
            held.chunks.clear();
            held.index = chunk.index;
        }
        let replaced = held.chunks.contains_key(&chunk.offset);
        if !replaced && self.held_count >= MOVE_HELD_CHUNKS_MAX {
            self.dropped += 1;
            if held.chunks.is_empty() {
                self.held.remove(&key);
                self.order.retain(|k| *k != key);
            }
            return None;
        }
        held.chunks.insert(chunk.offset, (chunk.bytes, env));
        if !replaced {
            self.held_count += 1;
        }
        None
    }

    /// The held chunks the bucket lets leave at `now`, each pair's in
    /// offset order, pairs in the order they began waiting.
    pub(crate) fn release(&mut self, now: Duration) -> Vec<Envelope<M>> {
        let mut out = Vec::new();
        let Some(bucket) = &mut self.bucket else { return out };
        while let Some(&key) = self.order.front() {
            let held = self.held.get_mut(&key).expect("a waiting pair holds chunks");
            let (&offset, &(bytes, _)) =
                held.chunks.first_key_value().expect("a waiting pair holds chunks");
            if !bucket.take(bytes, now) {
                break;
            }
            let (_, env) = held.chunks.remove(&offset).expect("just looked");
            self.held_count -= 1;
            self.sent_bytes += bytes;
            out.push(env);
            if held.chunks.is_empty() {
                self.held.remove(&key);
                self.order.pop_front();
            }
        }
        debug_assert_eq!(
            self.held_count,
            self.held.values().map(|h| h.chunks.len()).sum::<usize>()
        );
        out
    }

    /// Whether chunks are waiting for the bucket.
    pub(crate) fn is_holding(&self) -> bool {
        self.held_count > 0
    }

    /// Chunk data bytes let through since the node started.
    pub(crate) fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Chunks dropped because [`MOVE_HELD_CHUNKS_MAX`] were held.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(shard: u64, to: u64, body: u32) -> Envelope<u32> {
        Envelope { shard: ShardId(shard), from: NodeId(1), to: NodeId(to), body }
    }

    fn chunk(index: u64, offset: u64, bytes: u64) -> SnapshotChunk {
        SnapshotChunk { index: LogIndex(index), offset, bytes }
    }

    const MS: Duration = Duration::from_millis(1);

    proptest! {
        /// Over every interval, what the bucket lets through is at most a
        /// burst, the rate times the interval, and one chunk.
        #[test]
        fn a_bucket_never_lets_more_than_its_bound_through(
            rate in 1u64..100_000,
            asks in prop::collection::vec((0u64..50, 1u64..20_000), 1..200),
        ) {
            let mut bucket = TokenBucket::new(rate, Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut taken: Vec<(Duration, u64)> = Vec::new();
            let largest = asks.iter().map(|&(_, b)| b).max().unwrap();
            for (wait_ms, bytes) in asks {
                now += MS * u32::try_from(wait_ms).unwrap();
                if bucket.take(bytes, now) {
                    taken.push((now, bytes));
                }
            }
            let burst = u128::from(rate) * MOVE_BURST.as_nanos();
            for i in 0..taken.len() {
                let mut sum = 0u128;
                for &(at, bytes) in &taken[i..] {
                    sum += u128::from(bytes);
                    let allowed = burst
                        + u128::from(rate) * (at - taken[i].0).as_nanos()
                        + u128::from(largest) * 1_000_000_000;
                    prop_assert!(sum * 1_000_000_000 <= allowed, "{sum} bytes by {at:?}");
                }
            }
        }
    }

    #[test]
    fn a_chunk_larger_than_the_bucket_still_leaves_and_the_next_waits_for_the_debt() {
        let mut bucket = TokenBucket::new(1_000, Duration::ZERO);
        assert!(bucket.take(5_000, Duration::ZERO), "a full bucket lets any chunk out");
        assert!(!bucket.take(1, MS * 3_999), "4 s of debt are not repaid after 3.999 s");
        assert!(bucket.take(1, MS * 4_000));
    }

    #[test]
    fn no_limit_lets_every_chunk_out_at_once() {
        let mut t = MoveThrottle::new(0, Duration::ZERO);
        for i in 0..1_000 {
            assert!(
                t.offer(env(1, 2, i), chunk(5, u64::from(i), 1 << 20), Duration::ZERO).is_some()
            );
        }
        assert!(!t.is_holding());
        assert_eq!(t.sent_bytes(), 1_000 << 20);
    }

    #[test]
    fn held_chunks_leave_in_offset_order_as_the_bucket_fills() {
        let mut t = MoveThrottle::new(100, Duration::ZERO);
        let now = Duration::ZERO;
        // 150 bytes from a bucket of 100: out, and 50 bytes of debt.
        assert_eq!(t.offer(env(1, 2, 0), chunk(5, 0, 150), now).map(|e| e.body), Some(0));
        assert!(t.offer(env(1, 2, 2), chunk(5, 250, 100), now).is_none());
        assert!(t.offer(env(1, 2, 1), chunk(5, 150, 100), now).is_none());
        // The engine resends offset 150: it replaces the held copy.
        assert!(t.offer(env(1, 2, 11), chunk(5, 150, 100), now).is_none());
        assert!(t.release(MS * 499).is_empty(), "the debt is not repaid yet");
        let out: Vec<u32> = t.release(MS * 500).into_iter().map(|e| e.body).collect();
        assert_eq!(out, vec![11]);
        assert!(t.release(MS * 1_499).is_empty());
        let out: Vec<u32> = t.release(MS * 1_500).into_iter().map(|e| e.body).collect();
        assert_eq!(out, vec![2]);
        assert!(!t.is_holding());
        assert_eq!(t.sent_bytes(), 350);
        // Nothing held: the next chunk leaves at once if the bucket allows.
        assert!(t.offer(env(1, 2, 3), chunk(5, 350, 100), MS * 2_500).is_some());
    }

    #[test]
    fn a_new_snapshot_drops_the_old_one_s_held_chunks() {
        let mut t = MoveThrottle::new(100, Duration::ZERO);
        let now = Duration::ZERO;
        assert!(t.offer(env(1, 2, 0), chunk(5, 0, 1_000), now).is_some());
        assert!(t.offer(env(1, 2, 1), chunk(5, 1_000, 100), now).is_none());
        assert!(t.offer(env(1, 2, 2), chunk(9, 0, 100), now).is_none());
        let out: Vec<u32> = t.release(MS * 100_000).into_iter().map(|e| e.body).collect();
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn past_the_held_limit_a_chunk_is_dropped_for_its_engine_to_resend() {
        let mut t = MoveThrottle::new(1, Duration::ZERO);
        let now = Duration::ZERO;
        assert!(t.offer(env(1, 2, 0), chunk(5, 0, 10), now).is_some());
        let max = u32::try_from(MOVE_HELD_CHUNKS_MAX).unwrap();
        for i in 1..=max {
            // One pair per chunk: the limit is over every pair.
            assert!(t.offer(env(u64::from(i), 2, i), chunk(5, 0, 1), now).is_none());
        }
        assert_eq!(t.dropped(), 0);
        assert!(t.offer(env(9_999, 3, 0), chunk(5, 0, 1), now).is_none());
        assert_eq!(t.dropped(), 1);
        // A resend of a held offset is not a new chunk: it still fits.
        assert!(t.offer(env(1, 2, 7), chunk(5, 0, 1), now).is_none());
        assert_eq!(t.dropped(), 1);
        // Pairs leave in the order they began waiting, one a second (the
        // bucket holds one byte; the first chunk left 9 bytes of debt).
        let mut release = |secs| -> Vec<u32> {
            t.release(Duration::from_secs(secs)).into_iter().map(|e| e.body).collect()
        };
        assert_eq!(release(8), Vec::<u32>::new());
        assert_eq!(release(9), vec![7]);
        assert_eq!(release(10), vec![2]);
        assert_eq!(release(11), vec![3]);
    }
}
