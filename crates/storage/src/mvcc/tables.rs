//! The redb tables and the encoding of their records.
//!
//! Every table is keyed by the shard id first, so one database holds all
//! of a node's shards and a shard's rows are one contiguous key range.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `mvcc_meta` | shard | [`ShardMeta`] |
//! | `mvcc_history` | (shard, key, `!revision`) | [`VersionRecord`] |
//! | `mvcc_changes` | (shard, revision, sub) | the keys written (see `changes.rs`) |
//! | `mvcc_leases` | (shard, lease) | [`LeaseRecord`] |
//! | `mvcc_lease_keys` | (shard, lease, key) | () |
//! | `mvcc_records` | (shard, name) | the node's replicated per-shard records (members, alarms) |
//! | `mvcc_node` | name | node-local records (never in a snapshot) |
//!
//! `mvcc_history` stores the revision inverted (`u64::MAX - revision`) so a
//! key's versions sort newest first: the version visible at revision `r` is
//! the first entry of the key's group at or after `!r`.

use bytes::Bytes;
use redb::TableDefinition;
use ringkv_consensus::codec::{Decoder, put_varint};
use ringkv_consensus::{LogIndex, ShardId};

use super::error::StoreError;
use super::types::{KeyValue, LeaseId, Revision};

/// Per-shard counters.
pub(crate) const META: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("mvcc_meta");
/// Every version of every key since the last compaction, tombstones included.
pub(crate) type HistoryKey = (u64, &'static [u8], u64);
/// See [`HistoryKey`].
pub(crate) const HISTORY: TableDefinition<'static, HistoryKey, &[u8]> =
    TableDefinition::new("mvcc_history");
/// Which keys each revision wrote, in write order: drives compaction (and
/// lets watchers replay events by revision).
pub(crate) const CHANGES: TableDefinition<'static, (u64, u64, u32), &[u8]> =
    TableDefinition::new("mvcc_changes");
/// Live leases.
pub(crate) const LEASES: TableDefinition<'static, (u64, i64), &[u8]> =
    TableDefinition::new("mvcc_leases");
/// Keys attached to each lease.
pub(crate) const LEASE_KEYS: TableDefinition<'static, (u64, i64, &[u8]), ()> =
    TableDefinition::new("mvcc_lease_keys");

/// Named records the node layer replicates through a shard's log (its
/// member table, alarms, ...): written in apply batches, exported with the
/// shard's snapshot, opaque to the store.
pub(crate) const RECORDS: TableDefinition<'static, (u64, &str), &[u8]> =
    TableDefinition::new("mvcc_records");
/// Node-local records (the node's own identity, what a snapshot restore
/// installed): never exported, never replicated.
pub(crate) const NODE: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("mvcc_node");

/// The stored revision of `rev` in [`HISTORY`]: newest first.
pub(crate) fn invert(rev: i64) -> u64 {
    debug_assert!(rev >= 1, "revision {rev} below 1 stored");
    u64::MAX - rev as u64
}

/// The revision stored as `inverted` in [`HISTORY`].
pub(crate) fn uninvert(inverted: u64) -> i64 {
    (u64::MAX - inverted) as i64
}

/// Format version of [`ShardMeta`] records.
const META_FORMAT: u8 = 1;

/// A shard's counters, stored in the same write transaction as the data
/// they describe, so they can never disagree with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShardMeta {
    /// Last log index applied.
    pub(crate) applied: LogIndex,
    /// Current revision. Invariant: `revision >= Revision::INITIAL`.
    pub(crate) revision: Revision,
    /// Compacted revision: reads below it fail. Invariant: `compacted <= revision`.
    pub(crate) compacted: Revision,
}

impl Default for ShardMeta {
    fn default() -> ShardMeta {
        ShardMeta {
            applied: LogIndex::ZERO,
            revision: Revision::INITIAL,
            compacted: Revision::ZERO,
        }
    }
}

impl ShardMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![META_FORMAT];
        put_varint(&mut out, self.applied.0);
        put_varint(&mut out, self.revision.0 as u64);
        put_varint(&mut out, self.compacted.0 as u64);
        out
    }

    pub(crate) fn decode(shard: ShardId, bytes: &[u8]) -> Result<ShardMeta, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { table: "mvcc_meta", shard, detail };
        let mut d = Decoder::new(Bytes::copy_from_slice(bytes));
        let format = d.u8().map_err(|e| corrupt(e.to_string()))?;
        if format != META_FORMAT {
            return Err(corrupt(format!("unknown format {format}")));
        }
        let mut next = || d.varint().map_err(|e| corrupt(e.to_string()));
        let meta = ShardMeta {
            applied: LogIndex(next()?),
            revision: Revision(next()? as i64),
            compacted: Revision(next()? as i64),
        };
        if meta.revision < Revision::INITIAL || meta.compacted > meta.revision {
            return Err(corrupt(format!("impossible counters {meta:?}")));
        }
        Ok(meta)
    }
}

const TOMBSTONE: u8 = 1;

/// One stored version of a key. The key and the mod revision are in the
/// table key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VersionRecord {
    /// A delete marker: the key did not exist from this revision on.
    pub(crate) tombstone: bool,
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
    pub(crate) value: Bytes,
}

impl VersionRecord {
    pub(crate) fn tombstone() -> VersionRecord {
        VersionRecord {
            tombstone: true,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
        }
    }

    pub(crate) fn live(kv: &KeyValue) -> VersionRecord {
        VersionRecord {
            tombstone: false,
            create_revision: kv.create_revision.0,
            version: kv.version,
            lease: kv.lease.0,
            value: kv.value.clone(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + 16);
        out.push(if self.tombstone { TOMBSTONE } else { 0 });
        put_varint(&mut out, self.create_revision as u64);
        put_varint(&mut out, self.version as u64);
        put_varint(&mut out, self.lease as u64);
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes a record; the value is copied only if `with_value`.
    pub(crate) fn decode(
        shard: u64,
        bytes: &[u8],
        with_value: bool,
    ) -> Result<VersionRecord, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            table: "mvcc_history",
            shard: ShardId(shard),
            detail: detail.to_owned(),
        };
        let (&flags, mut rest) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
        if flags & !TOMBSTONE != 0 {
            return Err(corrupt("unknown flags"));
        }
        let mut next = || -> Result<i64, StoreError> {
            let (v, used) = read_varint(rest).ok_or_else(|| corrupt("bad varint"))?;
            rest = &rest[used..];
            Ok(v as i64)
        };
        let create_revision = next()?;
        let version = next()?;
        let lease = next()?;
        let value = if with_value { Bytes::copy_from_slice(rest) } else { Bytes::new() };
        Ok(VersionRecord {
            tombstone: flags & TOMBSTONE != 0,
            create_revision,
            version,
            lease,
            value,
        })
    }

    pub(crate) fn to_kv(&self, key: &[u8], mod_revision: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key),
            create_revision: Revision(self.create_revision),
            mod_revision: Revision(mod_revision),
            version: self.version,
            value: self.value.clone(),
            lease: LeaseId(self.lease),
        }
    }
}

/// A LEB128 varint from the start of `bytes`: (value, bytes used).
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let low = u64::from(b & 0x7f);
        if i == 9 && low > 1 {
            return None;
        }
        v |= low << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A lease's stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub(crate) granted_ttl: i64,
    pub(crate) remaining_ttl: Option<i64>,
}

impl LeaseRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12);
        put_varint(&mut out, self.granted_ttl as u64);
        match self.remaining_ttl {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                put_varint(&mut out, r as u64);
            }
        }
        out
    }

    pub(crate) fn decode(shard: u64, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            table: "mvcc_leases",
            shard: ShardId(shard),
            detail: detail.to_owned(),
        };
        let (granted, used) = read_varint(bytes).ok_or_else(|| corrupt("bad ttl"))?;
        let rest = &bytes[used..];
        let remaining_ttl = match rest.split_first() {
            Some((0, [])) => None,
            Some((1, tail)) => match read_varint(tail) {
                Some((r, n)) if n == tail.len() => Some(r as i64),
                _ => return Err(corrupt("bad remaining ttl")),
            },
            _ => return Err(corrupt("bad remaining ttl tag")),
        };
        Ok(LeaseRecord { granted_ttl: granted as i64, remaining_ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_refuse_damage() {
        let meta =
            ShardMeta { applied: LogIndex(9), revision: Revision(7), compacted: Revision(3) };
        assert_eq!(ShardMeta::decode(ShardId(1), &meta.encode()).unwrap(), meta);
        let mut bad = meta.encode();
        bad[0] = 9;
        assert!(ShardMeta::decode(ShardId(1), &bad).is_err(), "unknown format");
        let impossible = ShardMeta { compacted: Revision(8), ..meta };
        assert!(ShardMeta::decode(ShardId(1), &impossible.encode()).is_err());

        let v = VersionRecord {
            tombstone: false,
            create_revision: 4,
            version: 2,
            lease: 77,
            value: Bytes::from_static(b"value"),
        };
        assert_eq!(VersionRecord::decode(1, &v.encode(), true).unwrap(), v);
        let no_value = VersionRecord::decode(1, &v.encode(), false).unwrap();
        assert_eq!((no_value.version, no_value.value.len()), (2, 0));
        assert!(VersionRecord::decode(1, &[], true).is_err());
        assert!(VersionRecord::decode(1, &[4, 1], true).is_err(), "unknown flag");
        assert!(VersionRecord::decode(1, &[0, 0x80], true).is_err(), "truncated varint");
        let t = VersionRecord::tombstone();
        assert_eq!(VersionRecord::decode(1, &t.encode(), true).unwrap(), t);

        for l in [
            LeaseRecord { granted_ttl: 60, remaining_ttl: None },
            LeaseRecord { granted_ttl: 60, remaining_ttl: Some(12) },
        ] {
            assert_eq!(LeaseRecord::decode(1, &l.encode()).unwrap(), l);
            let mut longer = l.encode();
            longer.push(0);
            assert!(LeaseRecord::decode(1, &longer).is_err());
        }
    }

    #[test]
    fn inverted_revisions_sort_newest_first() {
        assert!(invert(5) < invert(4));
        assert_eq!(uninvert(invert(123)), 123);
    }
}
