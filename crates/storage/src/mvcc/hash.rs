//! Hashes of a shard's state, for etcd's `Hash` and `HashKV` and for
//! checking that replicas agree.
//!
//! Both hash what every replica of a shard holds identically at the same
//! applied index: the store applies compaction inside the apply (see
//! [`super::CompactionRequest`]), so replicas keep the same rows, and rows
//! are visited in key order, never in an order one process chose.

use std::ops::Bound;

use ringkv_consensus::ShardId;

use super::changes::for_each_change;
use super::error::{MvccError, ReadError, StoreError};
use super::store::ReadView;
use super::tables::uninvert;
use super::types::Revision;

/// The answer to etcd's `HashKV`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32C (Castagnoli, as etcd) of every stored key version up to
    /// `hash_revision`: key, revision and the version record.
    pub hash: u32,
    /// The shard's compacted revision: versions below it are gone, so a
    /// hash is comparable only between replicas with the same one.
    pub compact_revision: Revision,
    /// The revision the hash covers.
    pub hash_revision: Revision,
    /// The shard's current revision (the response header's).
    pub revision: Revision,
}

impl ReadView {
    /// etcd's `HashKV`: a hash of `shard`'s key versions up to `revision`
    /// (`<= 0` means the current one), including deletion markers.
    ///
    /// # Errors
    /// [`MvccError::Compacted`] below the compacted revision,
    /// [`MvccError::FutureRevision`] above the current one, or the store
    /// failed.
    pub fn hash_kv(&self, shard: ShardId, revision: Revision) -> Result<HashKv, ReadError> {
        let meta = self.meta(shard)?;
        if revision.0 > 0 && revision < meta.compacted {
            return Err(
                MvccError::Compacted { requested: revision, compacted: meta.compacted }.into()
            );
        }
        if revision > meta.revision {
            return Err(
                MvccError::FutureRevision { requested: revision, current: meta.revision }.into()
            );
        }
        let upto = if revision.0 <= 0 { meta.revision } else { revision };
        let mut crc = 0u32;
        let lo: (u64, &[u8], u64) = (shard.0, &[], 0);
        let iter = self
            .history
            .range::<(u64, &[u8], u64)>((Bound::Included(lo), Bound::Unbounded))
            .map_err(StoreError::engine("hash history"))?;
        for item in iter {
            let (k, v) = item.map_err(StoreError::engine("hash history"))?;
            let (s, key, inverted) = k.value();
            if s != shard.0 {
                break;
            }
            let rev = uninvert(inverted);
            if rev > upto.0 {
                continue;
            }
            crc = crc32c::crc32c_append(crc, &(key.len() as u64).to_le_bytes());
            crc = crc32c::crc32c_append(crc, key);
            crc = crc32c::crc32c_append(crc, &rev.to_le_bytes());
            crc = crc32c::crc32c_append(crc, v.value());
        }
        Ok(HashKv {
            hash: crc,
            compact_revision: meta.compacted,
            hash_revision: upto,
            revision: meta.revision,
        })
    }

    /// etcd's `Hash`: a hash of everything `shard` holds — key versions,
    /// the change log, leases, lease attachments, the node layer's records
    /// and the revision counters — but not the applied index, so replicas
    /// that applied the same commands agree whatever no-ops they skipped.
    ///
    /// # Errors
    /// The store failed.
    pub fn hash(&self, shard: ShardId) -> Result<u32, StoreError> {
        let s = shard.0;
        let mut crc = 0u32;
        let mut feed = |tag: u8, parts: &[&[u8]]| {
            crc = crc32c::crc32c_append(crc, &[tag]);
            for p in parts {
                crc = crc32c::crc32c_append(crc, &(p.len() as u64).to_le_bytes());
                crc = crc32c::crc32c_append(crc, p);
            }
        };
        let meta = self.meta(shard)?;
        feed(0, &[&meta.revision.0.to_le_bytes(), &meta.compacted.0.to_le_bytes()]);
        let e = |during| StoreError::engine(during);
        let lo: (u64, &[u8], u64) = (s, &[], 0);
        for item in self
            .history
            .range::<(u64, &[u8], u64)>((Bound::Included(lo), Bound::Unbounded))
            .map_err(e("hash history"))?
        {
            let (k, v) = item.map_err(e("hash history"))?;
            let (row, key, inverted) = k.value();
            if row != s {
                break;
            }
            feed(1, &[key, &inverted.to_le_bytes(), v.value()]);
        }
        // Entries, not rows: the same whichever way the log was batched.
        let from = (meta.compacted.0 as u64, 0);
        for_each_change(&self.changes, s, from, u64::MAX, |rev, sub, key| {
            feed(2, &[&rev.to_le_bytes(), &sub.to_le_bytes(), key]);
            Ok(true)
        })?;
        for item in self.leases.range((s, i64::MIN)..=(s, i64::MAX)).map_err(e("hash leases"))? {
            let (k, v) = item.map_err(e("hash leases"))?;
            feed(3, &[&k.value().1.to_le_bytes(), v.value()]);
        }
        let lo: (u64, i64, &[u8]) = (s, i64::MIN, &[]);
        for item in self
            .lease_keys
            .range::<(u64, i64, &[u8])>((Bound::Included(lo), Bound::Unbounded))
            .map_err(e("hash lease keys"))?
        {
            let (k, _) = item.map_err(e("hash lease keys"))?;
            let (row, id, key) = k.value();
            if row != s {
                break;
            }
            feed(4, &[&id.to_le_bytes(), key]);
        }
        for (name, value) in self.records(shard, "")? {
            feed(5, &[name.as_bytes(), &value]);
        }
        Ok(crc)
    }
}
