//! Keys to shards: the hash-key rules, the key hash, and the sound answers a
//! router needs for prefixes and ranges.
//!
//! A key's *hash key* is the part of it that decides its shard; keys with the
//! same hash key always share a shard, which is what lets an application keep
//! related keys together (and inside one shard's transactions). The shard is
//! `1 + ⌊xxh3_64(hash key) · S / 2⁶⁴⌋` for a cluster of `S` data shards.

use std::num::NonZeroU32;

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use crate::ids::{FIRST_DATA_SHARD, ShardId};

/// Largest number of data shards a cluster may be created with.
///
/// Every shard is a consensus group with its own log and its own entry in the
/// metadata group; 65 536 groups is far beyond what the node loop batches
/// well, and keeps every shard index inside a `u32`.
pub const SHARD_COUNT_MAX: u32 = 1 << 16;

/// Byte that opens a hash tag (`user:{42}:cart`); as in Redis Cluster.
const TAG_OPEN: u8 = b'{';
/// Byte that closes a hash tag.
const TAG_CLOSE: u8 = b'}';
/// Byte that separates key segments for [`HashKeyRule::Segments`].
const SEGMENT_SEPARATOR: u8 = b'/';

/// Which part of a key decides its shard.
///
/// Hash tags apply under both rules. Under [`HashKeyRule::Segments`] the
/// segment prefix is cut first and a tag counts only if it closes inside it,
/// so that a prefix naming the first `N` segments pins one shard even though
/// keys below it may contain braces.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum HashKeyRule {
    /// The whole key, or its hash tag when it has a non-empty one.
    #[default]
    WholeKey,
    /// The first `N` `/`-separated segments, or the hash tag inside them.
    ///
    /// A leading `/` belongs to the first segment, so with `N = 2` the key
    /// `/registry/pods/default/web` has the hash key `/registry/pods`; a key
    /// with fewer than `N` separators after its first byte is its own hash key.
    Segments(NonZeroU32),
}

impl HashKeyRule {
    /// The hash key of `key`: the bytes whose hash decides its shard.
    ///
    /// The result is always a sub-slice of `key`; keys are arbitrary bytes.
    pub fn hash_key<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let (cut, _) = self.segment_cut(key);
        hash_tag(cut).unwrap_or(cut)
    }

    /// The hash key shared by every key that starts with `prefix`, if one is
    /// forced by the prefix alone; `None` when keys below the prefix can have
    /// different hash keys.
    ///
    /// Sound: `Some(h)` implies `hash_key(k) == h` for every `k` starting with
    /// `prefix`. Tight: `None` means two such keys have different hash keys.
    fn prefix_hash_key<'p>(&self, prefix: &'p [u8]) -> Option<&'p [u8]> {
        let (cut, complete) = self.segment_cut(prefix);
        // Every key below `prefix` has a segment cut that starts with `cut`
        // (equals it when `complete`), so its first `{` is the first `{` of
        // `cut` if `cut` has one, and the first `}` after it likewise.
        match find_tag(cut) {
            Tag::Found(tag) => Some(tag),
            Tag::Empty | Tag::Unclosed | Tag::Absent if complete => Some(cut),
            // A suffix can still close the tag, open one, or (empty tag or
            // whole-key rule) simply change the hashed bytes.
            Tag::Empty | Tag::Unclosed | Tag::Absent => None,
        }
    }

    /// The key cut after its first `N` segments, and whether the cut was made
    /// (`false`: fewer than `N` separators, so the cut is the whole key).
    fn segment_cut<'k>(&self, key: &'k [u8]) -> (&'k [u8], bool) {
        let HashKeyRule::Segments(segments) = *self else {
            return (key, false);
        };
        let mut separators = 0u32;
        // Index 0 is skipped: a leading separator opens the first segment.
        for (i, &byte) in key.iter().enumerate().skip(1) {
            if byte == SEGMENT_SEPARATOR {
                separators += 1;
                if separators == segments.get() {
                    return (&key[..i], true);
                }
            }
        }
        (key, false)
    }
}

/// What the first `{` of a key opens.
enum Tag<'k> {
    /// A non-empty tag: the bytes between the first `{` and the next `}`.
    Found(&'k [u8]),
    /// The first `{` is immediately closed: `{}` means "no tag".
    Empty,
    /// There is a `{` but no `}` after it.
    Unclosed,
    /// There is no `{`.
    Absent,
}

/// Redis Cluster's rule: the first `{`, then the first `}` after it.
fn find_tag(key: &[u8]) -> Tag<'_> {
    let Some(open) = key.iter().position(|&b| b == TAG_OPEN) else {
        return Tag::Absent;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == TAG_CLOSE) {
        None => Tag::Unclosed,
        Some(0) => Tag::Empty,
        Some(close) => Tag::Found(&rest[..close]),
    }
}

/// The non-empty hash tag of `key`, if it has one.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    match find_tag(key) {
        Tag::Found(tag) => Some(tag),
        Tag::Empty | Tag::Unclosed | Tag::Absent => None,
    }
}

/// The 64-bit hash of a hash key: XXH3-64 with seed 0.
///
/// Part of the cluster's format: XXH3's output is specified and stable across
/// versions and platforms; changing this function moves every key.
pub fn key_hash(hash_key: &[u8]) -> u64 {
    xxh3_64(hash_key)
}

/// Which shards a request over a set of keys must visit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ShardSpan {
    /// The set of keys is empty (an empty or inverted range).
    Empty,
    /// Every key of the set lives on this one shard.
    One(ShardId),
    /// Keys of the set may live on any data shard.
    All,
}

/// The upper end of a key range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RangeEnd<'k> {
    /// Keys strictly below this one.
    Exclusive(&'k [u8]),
    /// No upper end: every key from the start on.
    Unbounded,
}

/// Error building a [`Keyspace`].
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyspaceError {
    /// The shard count is zero or above [`SHARD_COUNT_MAX`].
    #[error(
        "shard count {shard_count} is out of range: choose between 1 and {max} shards when \
         creating the cluster"
    )]
    ShardCountOutOfRange {
        /// The shard count asked for.
        shard_count: u32,
        /// [`SHARD_COUNT_MAX`].
        max: u32,
    },
}

/// The key space of a cluster: a fixed number of data shards and the rule
/// that picks each key's hash key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keyspace {
    /// Number of data shards `S`. Invariant: `1 <= S <= SHARD_COUNT_MAX`.
    shard_count: u32,
    /// How a key's hash key is found.
    rule: HashKeyRule,
}

impl Keyspace {
    /// A key space of `shard_count` data shards (ids `1..=shard_count`).
    ///
    /// # Errors
    ///
    /// [`KeyspaceError::ShardCountOutOfRange`] unless
    /// `1 <= shard_count <= SHARD_COUNT_MAX`.
    pub fn new(shard_count: u32, rule: HashKeyRule) -> Result<Self, KeyspaceError> {
        if shard_count == 0 || shard_count > SHARD_COUNT_MAX {
            return Err(KeyspaceError::ShardCountOutOfRange { shard_count, max: SHARD_COUNT_MAX });
        }
        Ok(Keyspace { shard_count, rule })
    }

    /// The number of data shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The hash-key rule.
    pub fn rule(&self) -> HashKeyRule {
        self.rule
    }

    /// Every data shard id, ascending.
    pub fn shard_ids(&self) -> impl Iterator<Item = ShardId> + use<> {
        (0..u64::from(self.shard_count)).map(|i| ShardId(FIRST_DATA_SHARD.0 + i))
    }

    /// The shard that holds `key`.
    #[inline]
    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        if self.shard_count == 1 {
            // One shard is plain etcd: no need to look at the key.
            return FIRST_DATA_SHARD;
        }
        self.shard_of_hash(key_hash(self.rule.hash_key(key)))
    }

    /// The shard that holds every key whose hash key hashes to `hash`.
    ///
    /// Multiply-shift (Lemire's "fast range") maps the hash onto `S` equal,
    /// contiguous slices of the 64-bit space: uniform up to a bias of `S/2⁶⁴`,
    /// one multiplication, and doubling `S` later would split every shard
    /// into two halves rather than reshuffle keys.
    #[inline]
    pub fn shard_of_hash(&self, hash: u64) -> ShardId {
        let index = (u128::from(hash) * u128::from(self.shard_count)) >> 64;
        // `index < shard_count <= u32::MAX`, so the conversion is lossless.
        ShardId(FIRST_DATA_SHARD.0 + index as u64)
    }

    /// The shards that may hold keys starting with `prefix`.
    ///
    /// `One` when the prefix alone fixes the hash key: it contains a complete
    /// non-empty hash tag, or (under [`HashKeyRule::Segments`]) all `N`
    /// segments. `All` otherwise, since then keys below the prefix can hash
    /// anywhere.
    pub fn shards_for_prefix(&self, prefix: &[u8]) -> ShardSpan {
        if self.shard_count == 1 {
            return ShardSpan::One(FIRST_DATA_SHARD);
        }
        match self.rule.prefix_hash_key(prefix) {
            Some(hash_key) => ShardSpan::One(self.shard_of_hash(key_hash(hash_key))),
            None => ShardSpan::All,
        }
    }

    /// The shards that may hold keys `k` with `start <= k < end`.
    ///
    /// `Empty` for an empty range; `One` for a single key, or when every key
    /// of the range shares a prefix that fixes the hash key (see
    /// [`Keyspace::shards_for_prefix`]); `All` otherwise. The answer is sound
    /// (no key of the range lives outside it) and is `One` whenever the
    /// longest prefix shared by every key of the range decides the shard.
    pub fn shards_for_range(&self, start: &[u8], end: RangeEnd<'_>) -> ShardSpan {
        if let RangeEnd::Exclusive(end) = end {
            if end <= start {
                return ShardSpan::Empty;
            }
            if is_successor(start, end) {
                return ShardSpan::One(self.shard_of(start));
            }
        }
        self.shards_for_prefix(enclosing_prefix(start, end))
    }

    /// The shards an etcd `Range`, `DeleteRange` or `Watch` request over
    /// `key` and `range_end` may touch, with etcd's conventions: an empty
    /// `range_end` means the single key `key`; `range_end == "\0"` means
    /// every key from `key` on.
    pub fn shards_for_etcd_range(&self, key: &[u8], range_end: &[u8]) -> ShardSpan {
        match range_end {
            [] => ShardSpan::One(self.shard_of(key)),
            [0] => self.shards_for_range(key, RangeEnd::Unbounded),
            end => self.shards_for_range(key, RangeEnd::Exclusive(end)),
        }
    }
}

/// Whether `end` is the immediate successor of `start` (`start` + `\0`), so
/// that `[start, end)` holds exactly the key `start`.
fn is_successor(start: &[u8], end: &[u8]) -> bool {
    end.len() == start.len() + 1 && end.starts_with(start) && end[start.len()] == 0
}

/// The longest prefix `p` of `start` such that every key in `[start, end)`
/// starts with `p`.
///
/// The keys starting with `p` are exactly `[p, prefix_end(p))`, so `p` works
/// iff `end <= prefix_end(p)`; `prefix_end` only shrinks as `p` grows, so the
/// longest working length is found by binary search (keys may be megabytes).
fn enclosing_prefix<'k>(start: &'k [u8], end: RangeEnd<'_>) -> &'k [u8] {
    let fits = |len: usize| match (prefix_end(&start[..len]), end) {
        (None, _) => true,
        (Some(_), RangeEnd::Unbounded) => false,
        (Some(bound), RangeEnd::Exclusive(end)) => end <= bound.as_slice(),
    };
    // Invariant: fits(low) (the empty prefix bounds nothing), !fits(high + 1).
    let (mut low, mut high) = (0usize, start.len());
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if fits(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    &start[..low]
}

/// The smallest key above every key that starts with `prefix` (etcd's
/// "prefix end"), or `None` when no such key exists (`prefix` is empty or
/// all `0xff`): `prefix` without its trailing `0xff`s, last byte incremented.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != u8::MAX)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

#[cfg(test)]
mod tests;
