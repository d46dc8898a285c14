//! Reading the history table: the version of each key visible at a
//! revision, and etcd's range semantics on top of it.
//!
//! Generic over redb's `ReadableTable`, so the same code serves reads from
//! a read transaction (a consistent snapshot while writes go on) and reads
//! inside the apply transaction (a txn's range sees its own earlier writes).

use std::cmp::Ordering;
use std::ops::Bound;

use bytes::Bytes;
use redb::ReadableTable;

use super::error::{MvccError, StoreError};
use super::tables::{HistoryKey, ShardMeta, VersionRecord, invert, uninvert};
use super::types::{KeyValue, RangeRequest, RangeResponse, Revision, SortOrder, SortTarget};

/// Rows a scan steps over (versions hidden from its revision) before it
/// seeks past them instead: keeps ranges over hot keys with long histories
/// proportional to the keys, not the versions.
const SCAN_SKIPS_BEFORE_SEEK: usize = 8;

/// Where a key range ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RangeEnd {
    /// Only the start key.
    Single,
    /// Every key from the start on (etcd's `range_end == "\0"`).
    Unbounded,
    /// Keys below this one.
    Before(Bytes),
}

/// A key range in etcd's `(key, range_end)` convention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) start: Bytes,
    pub(crate) end: RangeEnd,
}

impl KeyRange {
    pub(crate) fn new(key: &Bytes, range_end: &Bytes) -> KeyRange {
        let end = match range_end.as_ref() {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            _ => RangeEnd::Before(range_end.clone()),
        };
        KeyRange { start: key.clone(), end }
    }

    /// Whether `key` lies in the range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_ref(),
            RangeEnd::Unbounded => key >= self.start.as_ref(),
            RangeEnd::Before(end) => key >= self.start.as_ref() && key < end.as_ref(),
        }
    }

    /// Whether the range holds no key at all (an end at or before the start).
    fn is_empty(&self) -> bool {
        matches!(&self.end, RangeEnd::Before(end) if end <= &self.start)
    }
}

/// The version of `key` visible at `rev` (`None` if absent or deleted).
pub(crate) fn get_at<T>(
    history: &T,
    shard: u64,
    key: &[u8],
    rev: i64,
    with_value: bool,
) -> Result<Option<KeyValue>, StoreError>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    let lo: (u64, &[u8], u64) = (shard, key, invert(rev));
    let hi: (u64, &[u8], u64) = (shard, key, u64::MAX);
    let mut iter = history.range(lo..=hi).map_err(StoreError::engine("range history"))?;
    match iter.next() {
        None => Ok(None),
        Some(item) => {
            let (k, v) = item.map_err(StoreError::engine("read history"))?;
            let record = VersionRecord::decode(shard, v.value(), with_value)?;
            if record.tombstone {
                Ok(None)
            } else {
                Ok(Some(record.to_kv(key, uninvert(k.value().2))))
            }
        }
    }
}

/// The latest version of `key` (`None` if absent or deleted).
pub(crate) fn get_latest<T>(
    history: &T,
    shard: u64,
    key: &[u8],
) -> Result<Option<KeyValue>, StoreError>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    // Inverted revision 0 is the newest possible version.
    get_at(history, shard, key, i64::MAX, true)
}

/// Calls `visit` with every key live at `rev` in `range`, in key order,
/// until it returns `false`.
pub(crate) fn scan_at<T>(
    history: &T,
    shard: u64,
    range: &KeyRange,
    rev: i64,
    with_value: bool,
    mut visit: impl FnMut(KeyValue) -> bool,
) -> Result<(), StoreError>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    if range.is_empty() {
        return Ok(());
    }
    let lo: (u64, &[u8], u64) = (shard, range.start.as_ref(), 0);
    let upper: Bound<(u64, &[u8], u64)> = match &range.end {
        RangeEnd::Single => Bound::Included((shard, range.start.as_ref(), u64::MAX)),
        RangeEnd::Before(end) => Bound::Excluded((shard, end.as_ref(), 0)),
        // The next shard's rows start after this shard's; stop there by hand
        // rather than computing `shard + 1`, which could overflow.
        RangeEnd::Unbounded => Bound::Unbounded,
    };
    let newest_visible = invert(rev);
    // Where the (next) scan starts; owned so that a re-seek can move it.
    let mut lower: Bound<(u64, Vec<u8>, u64)> = Bound::Included((shard, lo.1.to_vec(), 0));
    // The key whose visible version has been found; its older versions follow.
    let mut decided: Option<Vec<u8>> = None;
    loop {
        let from = match &lower {
            Bound::Included((s, k, i)) => Bound::Included((*s, k.as_slice(), *i)),
            Bound::Excluded((s, k, i)) => Bound::Excluded((*s, k.as_slice(), *i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let iter = history
            .range::<(u64, &[u8], u64)>((from, upper))
            .map_err(StoreError::engine("range history"))?;
        // Rows passed over in a row: past a few, one seek is cheaper.
        let mut skipped = 0;
        let mut seek = None;
        for item in iter {
            let (k, v) = item.map_err(StoreError::engine("read history"))?;
            let (row_shard, key, inverted) = k.value();
            if row_shard != shard {
                return Ok(());
            }
            if decided.as_deref() == Some(key) {
                // An older version of a decided key: next key.
                skipped += 1;
                if skipped > SCAN_SKIPS_BEFORE_SEEK {
                    seek = Some(Bound::Excluded((shard, key.to_vec(), u64::MAX)));
                    break;
                }
                continue;
            }
            if inverted < newest_visible {
                // Newer than the read revision: its visible version.
                skipped += 1;
                if skipped > SCAN_SKIPS_BEFORE_SEEK {
                    seek = Some(Bound::Included((shard, key.to_vec(), newest_visible)));
                    break;
                }
                continue;
            }
            skipped = 0;
            match &mut decided {
                Some(d) => {
                    d.clear();
                    d.extend_from_slice(key);
                }
                None => decided = Some(key.to_vec()),
            }
            let record = VersionRecord::decode(shard, v.value(), with_value)?;
            if record.tombstone {
                continue;
            }
            if !visit(record.to_kv(key, uninvert(inverted))) {
                return Ok(());
            }
        }
        match seek {
            Some(bound) => lower = bound,
            None => return Ok(()),
        }
    }
}

/// The revision a read asking for `requested` is served at.
///
/// # Errors
/// [`MvccError::FutureRevision`] above `current`, [`MvccError::Compacted`]
/// below the compacted revision (a read at it still works, as in etcd).
pub(crate) fn read_revision(
    meta: &ShardMeta,
    current: Revision,
    requested: Revision,
) -> Result<Revision, MvccError> {
    if requested > current {
        return Err(MvccError::FutureRevision { requested, current });
    }
    let rev = if requested.0 <= 0 { current } else { requested };
    if rev < meta.compacted {
        return Err(MvccError::Compacted { requested: rev, compacted: meta.compacted });
    }
    Ok(rev)
}

/// Checks a range request's own fields (before any state is consulted).
pub(crate) fn check_range_request(req: &RangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Serves `req` at revision `rev` (already checked by [`read_revision`]);
/// `header` is the revision reported in the answer.
pub(crate) fn range_at<T>(
    history: &T,
    shard: u64,
    req: &RangeRequest,
    rev: Revision,
    header: Revision,
) -> Result<RangeResponse, StoreError>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    let range = KeyRange::new(&req.key, &req.range_end);
    let order = match (req.sort_order, req.sort_target) {
        // etcd: a non-key target with no order sorts ascending; key
        // ascending is the natural order and needs no sort.
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => {
            SortOrder::None
        }
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let filtered = req.min_mod_revision.0 != 0
        || req.max_mod_revision.0 != 0
        || req.min_create_revision.0 != 0
        || req.max_create_revision.0 != 0;
    let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
    // In natural order without filters, keys past `limit + 1` are only counted.
    let keep_max = match (order, filtered, limit) {
        (SortOrder::None, false, Some(l)) => l.saturating_add(1),
        _ => usize::MAX,
    };
    let want_value = !req.count_only && (!req.keys_only || req.sort_target == SortTarget::Value);
    let passes = |kv: &KeyValue| {
        (req.min_mod_revision.0 == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision.0 == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision.0 == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision.0 == 0 || kv.create_revision <= req.max_create_revision)
    };

    let mut count: i64 = 0;
    let mut kvs = Vec::new();
    scan_at(history, shard, &range, rev.0, want_value, |kv| {
        count += 1;
        if !req.count_only && kvs.len() < keep_max && passes(&kv) {
            kvs.push(kv);
        }
        true
    })?;
    if req.count_only {
        return Ok(RangeResponse { revision: header, kvs: Vec::new(), more: false, count });
    }
    sort_kvs(&mut kvs, order, req.sort_target);
    let mut more = false;
    if let Some(l) = limit
        && kvs.len() > l
    {
        kvs.truncate(l);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse { revision: header, kvs, more, count })
}

/// Sorts key-ordered `kvs` by `target`. The sort is stable, so ties keep
/// key order in both directions.
pub(crate) fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}
