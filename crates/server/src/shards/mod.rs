//! Requests over several shards: which shards a KV request touches, and how
//! the parts of a scatter-gather `Range` or `DeleteRange` merge into the
//! answer etcd would give for one range (ADR 0002).
//!
//! Pure: no I/O, no node. The KV service asks [`targets`] where a request
//! goes; a request confined to one shard goes there unchanged and keeps
//! exactly etcd's semantics. A `Range` or `DeleteRange` over several shards
//! is sent to each of them ([`part_range`]) and the answers are merged
//! ([`merge_ranges`], [`merge_deletes`]).
//!
//! # What a merged answer is, and is not
//!
//! - Each part is its shard's own read (linearizable unless the request is
//!   serializable); the parts are **not** one snapshot: a write to one
//!   shard that finished before a write to another started may be seen
//!   without it.
//! - `kvs` are in the requested order, `limit` applies to the merged list,
//!   `count` is the sum of the shards' counts and `more` is exact: some
//!   shard had more keys passing the filters than it returned, or the merge
//!   cut the list.
//! - `header.revision` is the largest of the parts' revisions. Revisions of
//!   different shards are not comparable, so it names no state of the whole
//!   range: a watch must not start from it across shards.
//! - `revision` (read at a revision) names one shard's history and is
//!   refused over several shards ([`check_range_revision`]).
//! - The `min`/`max` `mod`/`create` revision filters are applied by each
//!   shard to its own keys, against its own revisions; they are accepted
//!   but select within each shard's history. Sorting by `create` or `mod`
//!   revision across shards likewise compares numbers of different
//!   histories; it is deterministic (ties by key), not meaningful.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use bytes::Bytes;
use ringkv_consensus::ShardId;
use ringkv_node::Request;
use ringkv_ring::{Keyspace, ShardSpan};
use ringkv_storage::mvcc::{
    DeleteRangeResponse, KeyValue, RangeRequest, RangeResponse, RequestOp, Revision, SortOrder,
    SortTarget, TxnRequest,
};

use crate::api::EtcdError;

#[cfg(test)]
mod tests;

/// Where a KV request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Every key it names lives on this shard: send it there unchanged.
    One(ShardId),
    /// Its keys may live on each of these shards (ascending, at least two).
    Many(Vec<ShardId>),
}

impl Targets {
    /// Every shard named, ascending.
    pub fn shards(&self) -> Vec<ShardId> {
        match self {
            Targets::One(shard) => vec![*shard],
            Targets::Many(shards) => shards.clone(),
        }
    }

    /// `One` for a single shard, `Many` otherwise. `set` must not be empty.
    fn from_set(set: BTreeSet<ShardId>) -> Targets {
        debug_assert!(!set.is_empty(), "a request touches at least one shard");
        if set.len() == 1 {
            let shard = set.into_iter().next().expect("the set has one element");
            return Targets::One(shard);
        }
        Targets::Many(set.into_iter().collect())
    }
}

/// The node's shard id for the ring's.
fn node_shard(shard: ringkv_ring::ShardId) -> ShardId {
    ShardId(shard.0)
}

/// Adds the shards an etcd range (`key`, `range_end`, with etcd's empty and
/// `"\0"` conventions) may touch. An empty range (`range_end <= key`)
/// touches the shard of `key`: the store answers it there as etcd does (an
/// empty answer at that shard's revision).
fn add_range(keyspace: &Keyspace, key: &[u8], range_end: &[u8], into: &mut BTreeSet<ShardId>) {
    match keyspace.shards_for_etcd_range(key, range_end) {
        ShardSpan::One(shard) => {
            into.insert(node_shard(shard));
        }
        ShardSpan::Empty => {
            into.insert(node_shard(keyspace.shard_of(key)));
        }
        ShardSpan::All => into.extend(keyspace.shard_ids().map(node_shard)),
    }
}

/// Adds the shards every compare and every operation (of both branches,
/// nested transactions included) of `txn` touches.
fn add_txn(keyspace: &Keyspace, txn: &TxnRequest, into: &mut BTreeSet<ShardId>) {
    for compare in &txn.compare {
        add_range(keyspace, &compare.key, &compare.range_end, into);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) => add_range(keyspace, &r.key, &r.range_end, into),
            RequestOp::Put(p) => {
                into.insert(node_shard(keyspace.shard_of(&p.key)));
            }
            RequestOp::DeleteRange(d) => add_range(keyspace, &d.key, &d.range_end, into),
            RequestOp::Txn(nested) => add_txn(keyspace, nested, into),
        }
    }
}

/// The shards an etcd range over `key` and `range_end` touches.
pub fn range_targets(keyspace: &Keyspace, key: &[u8], range_end: &[u8]) -> Targets {
    let mut set = BTreeSet::new();
    add_range(keyspace, key, range_end, &mut set);
    Targets::from_set(set)
}

/// The shards a KV request (`Range`, `Put`, `DeleteRange`, `Txn`) touches;
/// `None` for any other request (the node sends those to the metadata
/// group, or to every shard for `Compact`).
///
/// A `Txn` with neither compares nor operations touches nothing; it is
/// placed on the first data shard, where it is answered at that shard's
/// revision.
pub fn targets(keyspace: &Keyspace, request: &Request) -> Option<Targets> {
    let mut set = BTreeSet::new();
    match request {
        Request::Range(r) => add_range(keyspace, &r.key, &r.range_end, &mut set),
        Request::Put(p) => {
            set.insert(node_shard(keyspace.shard_of(&p.key)));
        }
        Request::DeleteRange(d) => add_range(keyspace, &d.key, &d.range_end, &mut set),
        Request::Txn(txn) => {
            add_txn(keyspace, txn, &mut set);
            if set.is_empty() {
                set.insert(node_shard(ringkv_ring::FIRST_DATA_SHARD));
            }
        }
        _ => return None,
    }
    Some(Targets::from_set(set))
}

/// Refuses a read at a revision (`revision > 0`) over several shards: a
/// revision names one shard's history (ADR 0002).
///
/// # Errors
/// [`EtcdError::RevisionSpansShards`] when `targets` has several shards and
/// `req.revision` is set.
pub fn check_range_revision(req: &RangeRequest, targets: &Targets) -> Result<(), EtcdError> {
    match targets {
        Targets::Many(_) if req.revision.0 > 0 => Err(EtcdError::RevisionSpansShards),
        _ => Ok(()),
    }
}

/// The request each shard of a scatter-gather range is sent: the client's,
/// with the same `limit` (the merged answer's first `limit` keys are among
/// the shards' first `limit` each), except that a `keys_only` range sorted
/// by value asks for the values, which the merge needs to sort and then
/// drops ([`merge_ranges`]).
pub fn part_range(req: &RangeRequest) -> RangeRequest {
    let mut part = req.clone();
    if part.keys_only && part.sort_target == SortTarget::Value && !part.count_only {
        part.keys_only = false;
    }
    part
}

/// The order a range's answer is in, as the store decides it: key ascending
/// unless a sort is asked for; a non-key target with no order sorts
/// ascending (etcd).
fn effective_order(req: &RangeRequest) -> (SortOrder, SortTarget) {
    match (req.sort_order, req.sort_target) {
        (SortOrder::None | SortOrder::Ascend, SortTarget::Key) => {
            (SortOrder::Ascend, SortTarget::Key)
        }
        (SortOrder::None, target) => (SortOrder::Ascend, target),
        (order, target) => (order, target),
    }
}

/// Compares two keys by the range's order. Ties on the target are broken
/// by key ascending, in both directions: the store sorts stably from key
/// order, so that is the order one shard answers in, and the merge keeps
/// it across shards.
fn compare(a: &KeyValue, b: &KeyValue, order: SortOrder, target: SortTarget) -> Ordering {
    let by = match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    let by = if order == SortOrder::Descend { by.reverse() } else { by };
    by.then_with(|| a.key.cmp(&b.key))
}

/// Merges the shards' answers to [`part_range`]`(req)` into the answer to
/// `req` over all of them (see the module docs for what it is).
pub fn merge_ranges(req: &RangeRequest, parts: Vec<RangeResponse>) -> RangeResponse {
    let revision = parts.iter().map(|p| p.revision).max().unwrap_or(Revision::ZERO);
    let count = parts.iter().map(|p| p.count).sum();
    if req.count_only {
        // As one shard answers: the count alone, never `more`.
        return RangeResponse { revision, kvs: Vec::new(), more: false, count };
    }
    let mut more = parts.iter().any(|p| p.more);
    let mut kvs: Vec<KeyValue> = parts.into_iter().flat_map(|p| p.kvs).collect();
    let (order, target) = effective_order(req);
    kvs.sort_by(|a, b| compare(a, b, order, target));
    if let Some(limit) = usize::try_from(req.limit).ok().filter(|&l| l > 0)
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse { revision, kvs, more, count }
}

/// Merges the shards' answers to one `DeleteRange`: the keys deleted on
/// all of them, their previous versions in key order, and the largest of
/// the shards' revisions (each shard deleted its keys at one revision of
/// its own).
pub fn merge_deletes(parts: Vec<DeleteRangeResponse>) -> DeleteRangeResponse {
    let revision = parts.iter().map(|p| p.revision).max().unwrap_or(Revision::ZERO);
    let deleted = parts.iter().map(|p| p.deleted).sum();
    let mut prev_kvs: Vec<KeyValue> = parts.into_iter().flat_map(|p| p.prev_kvs).collect();
    prev_kvs.sort_by(|a, b| a.key.cmp(&b.key));
    DeleteRangeResponse { revision, deleted, prev_kvs }
}
