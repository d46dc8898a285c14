use std::collections::BTreeMap;
use std::num::NonZeroU32;

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_node::Request;
use ringkv_ring::{HashKeyRule, Keyspace};
use ringkv_storage::mvcc::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse,
    KeyValue, LeaseId, MvccStore, PutRequest, RangeRequest, RangeResponse, RequestOp, Revision,
    SortOrder, SortTarget, StoreOptions, TxnRequest,
};

use super::{
    Targets, check_range_revision, merge_deletes, merge_ranges, part_range, range_targets, targets,
};
use crate::api::EtcdError;

fn keyspace(shards: u32) -> Keyspace {
    Keyspace::new(shards, HashKeyRule::WholeKey).unwrap()
}

fn all(shards: u32) -> Vec<ShardId> {
    (1..=u64::from(shards)).map(ShardId).collect()
}

/// Two keys `prefix<i>` that live on different shards of `ks`.
fn keys_on_two_shards(ks: &Keyspace, prefix: &str) -> (String, String) {
    let first = format!("{prefix}0");
    let home = ks.shard_of(first.as_bytes());
    let other = (1..1000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| ks.shard_of(k.as_bytes()) != home)
        .expect("1000 keys do not all hash to one shard of 8");
    (first, other)
}

fn shard_of(ks: &Keyspace, key: &str) -> ShardId {
    ShardId(ks.shard_of(key.as_bytes()).0)
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        ..RangeRequest::default()
    }
}

fn put(key: &str) -> PutRequest {
    PutRequest { key: Bytes::copy_from_slice(key.as_bytes()), ..PutRequest::default() }
}

fn kv(key: &str, version: i64, modified: i64, value: &str) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        create_revision: Revision(1),
        mod_revision: Revision(modified),
        version,
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease: LeaseId::NONE,
    }
}

fn part(revision: i64, kvs: Vec<KeyValue>, more: bool, count: i64) -> RangeResponse {
    RangeResponse { revision: Revision(revision), kvs, more, count }
}

fn keys(r: &RangeResponse) -> Vec<&[u8]> {
    r.kvs.iter().map(|kv| kv.key.as_ref()).collect()
}

#[test]
fn one_shard_sends_everything_to_shard_one() {
    let ks = keyspace(1);
    for request in [
        Request::Range(range("a", "\0")),
        Request::Range(range("a", "")),
        Request::Put(put("x")),
        Request::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            prev_kv: false,
        }),
    ] {
        assert_eq!(targets(&ks, &request), Some(Targets::One(ShardId(1))), "{request:?}");
    }
    assert_eq!(targets(&ks, &Request::Status), None);
}

#[test]
fn a_key_goes_to_its_shard_and_a_prefix_to_every_shard() {
    let ks = keyspace(8);
    let (a, b) = keys_on_two_shards(&ks, "k");
    assert_eq!(targets(&ks, &Request::Put(put(&a))), Some(Targets::One(shard_of(&ks, &a))));
    assert_eq!(range_targets(&ks, b.as_bytes(), b""), Targets::One(shard_of(&ks, &b)));
    // `key\0` is the single key `key`.
    let end = format!("{b}\0");
    assert_eq!(range_targets(&ks, b.as_bytes(), end.as_bytes()), Targets::One(shard_of(&ks, &b)));
    assert_eq!(range_targets(&ks, b"k", b"l"), Targets::Many(all(8)));
    assert_eq!(range_targets(&ks, b"\0", b"\0"), Targets::Many(all(8)));
    // A hash tag pins a prefix to one shard.
    assert_eq!(range_targets(&ks, b"{u1}/", b"{u1}0"), Targets::One(shard_of(&ks, "{u1}/x")));
    // An empty range goes to its key's shard, which answers it empty.
    assert_eq!(range_targets(&ks, b"z", b"a"), Targets::One(shard_of(&ks, "z")));
}

#[test]
fn the_segment_rule_pins_a_prefix_of_enough_segments() {
    let rule = HashKeyRule::Segments(NonZeroU32::new(2).unwrap());
    let ks = Keyspace::new(8, rule).unwrap();
    let one = Targets::One(ShardId(ks.shard_of(b"/registry/pods").0));
    assert_eq!(range_targets(&ks, b"/registry/pods/", b"/registry/pods0"), one);
    assert_eq!(range_targets(&ks, b"/registry/", b"/registry0"), Targets::Many(all(8)));
}

fn compare_on(key: &str) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::new(),
    }
}

#[test]
fn a_txn_touches_the_shards_of_its_compares_and_of_both_branches() {
    let ks = keyspace(8);
    let (a, b) = keys_on_two_shards(&ks, "t");
    let (sa, sb) = (shard_of(&ks, &a), shard_of(&ks, &b));
    let pair = |mut v: Vec<ShardId>| {
        v.sort();
        Targets::Many(v)
    };

    let compares =
        TxnRequest { compare: vec![compare_on(&a), compare_on(&b)], ..TxnRequest::default() };
    assert_eq!(targets(&ks, &Request::Txn(compares)), Some(pair(vec![sa, sb])));

    let failure_branch = TxnRequest {
        compare: vec![compare_on(&a)],
        success: vec![RequestOp::Put(put(&a))],
        failure: vec![RequestOp::Put(put(&b))],
    };
    assert_eq!(targets(&ks, &Request::Txn(failure_branch)), Some(pair(vec![sa, sb])));

    let nested = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            failure: vec![RequestOp::Range(range(&b, ""))],
            ..TxnRequest::default()
        })],
        compare: vec![compare_on(&a)],
        ..TxnRequest::default()
    };
    assert_eq!(targets(&ks, &Request::Txn(nested)), Some(pair(vec![sa, sb])));

    let tagged = TxnRequest {
        compare: vec![compare_on("{user1}/a")],
        success: vec![
            RequestOp::Put(put("{user1}/b")),
            RequestOp::Range(range("{user1}/", "{user1}0")),
        ],
        failure: vec![],
    };
    assert_eq!(targets(&ks, &Request::Txn(tagged)), Some(Targets::One(shard_of(&ks, "{user1}"))));

    let prefix_delete = TxnRequest {
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"b"),
            prev_kv: false,
        })],
        ..TxnRequest::default()
    };
    assert_eq!(targets(&ks, &Request::Txn(prefix_delete)), Some(Targets::Many(all(8))));

    // Nothing to touch: answered by the first data shard.
    assert_eq!(targets(&ks, &Request::Txn(TxnRequest::default())), Some(Targets::One(ShardId(1))));
}

#[test]
fn a_read_at_a_revision_is_refused_only_over_several_shards() {
    let mut req = range("a", "b");
    req.revision = Revision(5);
    assert_eq!(
        check_range_revision(&req, &Targets::Many(vec![ShardId(1), ShardId(2)])),
        Err(EtcdError::RevisionSpansShards)
    );
    assert_eq!(check_range_revision(&req, &Targets::One(ShardId(2))), Ok(()));
    req.revision = Revision(0);
    assert_eq!(check_range_revision(&req, &Targets::Many(vec![ShardId(1), ShardId(2)])), Ok(()));
}

#[test]
fn limit_applies_to_the_merged_keys_and_more_is_exact() {
    let mut req = range("a", "z");
    req.limit = 2;
    // Shard 1 had a third key past its limit.
    let merged = merge_ranges(
        &req,
        vec![
            part(7, vec![kv("a", 1, 2, ""), kv("c", 1, 3, "")], true, 3),
            part(9, vec![kv("b", 1, 4, ""), kv("d", 1, 5, "")], false, 2),
        ],
    );
    assert_eq!(keys(&merged), [b"a".as_slice(), b"b"]);
    assert!(merged.more);
    assert_eq!(merged.count, 5);
    assert_eq!(merged.revision, Revision(9));

    // No shard had more, but the merge cut the list.
    let merged = merge_ranges(
        &req,
        vec![
            part(3, vec![kv("a", 1, 2, ""), kv("c", 1, 3, "")], false, 2),
            part(2, vec![kv("b", 1, 2, "")], false, 1),
        ],
    );
    assert_eq!(keys(&merged), [b"a".as_slice(), b"b"]);
    assert!(merged.more);

    // Everything fits: no `more`.
    let merged = merge_ranges(
        &req,
        vec![
            part(3, vec![kv("c", 1, 3, "")], false, 1),
            part(2, vec![kv("b", 1, 2, "")], false, 1),
        ],
    );
    assert_eq!(keys(&merged), [b"b".as_slice(), b"c"]);
    assert!(!merged.more);
    assert_eq!(merged.count, 2);
}

#[test]
fn a_descending_sort_holds_across_shards_with_ties_in_key_order() {
    let mut req = range("a", "z");
    req.sort_order = SortOrder::Descend;
    let merged = merge_ranges(
        &req,
        vec![
            part(3, vec![kv("a", 1, 2, ""), kv("c", 1, 3, "")], false, 2),
            part(2, vec![kv("b", 1, 2, ""), kv("d", 1, 3, "")], false, 2),
        ],
    );
    assert_eq!(keys(&merged), [b"d".as_slice(), b"c", b"b", b"a"]);

    req.sort_target = SortTarget::Version;
    req.limit = 3;
    let merged = merge_ranges(
        &req,
        vec![
            part(3, vec![kv("c", 2, 3, ""), kv("a", 1, 2, "")], false, 2),
            part(2, vec![kv("d", 2, 3, ""), kv("b", 5, 2, "")], false, 2),
        ],
    );
    // Version 5, then the two of version 2 in key order; `a` is cut.
    assert_eq!(keys(&merged), [b"b".as_slice(), b"c", b"d"]);
    assert!(merged.more);
}

#[test]
fn a_non_key_target_without_an_order_sorts_ascending() {
    let mut req = range("a", "z");
    req.sort_target = SortTarget::Value;
    let merged = merge_ranges(
        &req,
        vec![
            part(3, vec![kv("a", 1, 2, "z"), kv("c", 1, 3, "m")], false, 2),
            part(2, vec![kv("b", 1, 2, "a")], false, 1),
        ],
    );
    assert_eq!(keys(&merged), [b"b".as_slice(), b"c", b"a"]);
}

#[test]
fn count_only_sums_the_counts_and_returns_no_keys() {
    let mut req = range("a", "z");
    req.count_only = true;
    req.limit = 1;
    let merged = merge_ranges(&req, vec![part(3, vec![], false, 4), part(8, vec![], false, 6)]);
    assert_eq!(
        merged,
        RangeResponse { revision: Revision(8), kvs: vec![], more: false, count: 10 }
    );
}

#[test]
fn keys_only_sorted_by_value_reads_values_then_drops_them() {
    let mut req = range("a", "z");
    req.keys_only = true;
    req.sort_target = SortTarget::Value;
    let asked = part_range(&req);
    assert!(!asked.keys_only, "the merge needs the values to sort by them");
    let merged = merge_ranges(
        &req,
        vec![
            part(3, vec![kv("a", 1, 2, "y")], false, 1),
            part(2, vec![kv("b", 1, 2, "x")], false, 1),
        ],
    );
    assert_eq!(keys(&merged), [b"b".as_slice(), b"a"]);
    assert!(merged.kvs.iter().all(|kv| kv.value.is_empty()));

    // Any other keys_only range is sent as it is.
    req.sort_target = SortTarget::Key;
    assert!(part_range(&req).keys_only);
}

#[test]
fn deletes_sum_and_merge_their_previous_versions_in_key_order() {
    let merged = merge_deletes(vec![
        DeleteRangeResponse {
            revision: Revision(4),
            deleted: 2,
            prev_kvs: vec![kv("a", 1, 2, ""), kv("c", 1, 3, "")],
        },
        DeleteRangeResponse {
            revision: Revision(6),
            deleted: 1,
            prev_kvs: vec![kv("b", 1, 2, "")],
        },
        DeleteRangeResponse { revision: Revision(2), deleted: 0, prev_kvs: vec![] },
    ]);
    assert_eq!(merged.deleted, 3);
    assert_eq!(merged.revision, Revision(6));
    let keys: Vec<&[u8]> = merged.prev_kvs.iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(keys, [b"a".as_slice(), b"b", b"c"]);
}

/// Shard that holds every key at once: the one-shard answer to compare with.
const WHOLE: ShardId = ShardId(1000);

/// A store where each key of `writes` is written to its shard of `ks` and
/// also to [`WHOLE`].
fn store_with(ks: &Keyspace, writes: &[(String, String)]) -> MvccStore {
    let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    let mut next: BTreeMap<ShardId, u64> = BTreeMap::new();
    for (key, value) in writes {
        let command = Command::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..PutRequest::default()
        });
        for shard in [shard_of(ks, key), WHOLE] {
            let index = next.entry(shard).or_insert(0);
            *index += 1;
            store.apply(shard, LogIndex(*index), &command).unwrap();
        }
    }
    store
}

fn arb_request() -> impl Strategy<Value = RangeRequest> {
    (
        prop::sample::select(vec![("k", "l"), ("\0", "\0"), ("k3", "k7"), ("k1", "\0")]),
        0i64..6,
        prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]),
        // Revisions differ between the shards and the whole-key shard, so
        // only targets that do not depend on them are compared.
        prop::sample::select(vec![SortTarget::Key, SortTarget::Version, SortTarget::Value]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((key, end), limit, sort_order, sort_target, keys_only, count_only)| {
            RangeRequest {
                limit,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                ..range(key, end)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The merge of the shards' answers is the answer of one shard holding
    /// every key (but for revisions, which differ by construction).
    #[test]
    fn merging_the_shards_answers_is_answering_over_one_shard(
        writes in prop::collection::vec(("k[0-9][a-c]?", "[a-d]"), 0..40),
        req in arb_request(),
    ) {
        let ks = keyspace(4);
        let store = store_with(&ks, &writes);
        let part = part_range(&req);
        let parts: Vec<RangeResponse> = ks
            .shard_ids()
            // A shard never written to has no state yet: nothing there.
            .map(|s| store.range(ShardId(s.0), &part).unwrap_or_default())
            .collect();
        let merged = merge_ranges(&req, parts);
        let whole = store.range(WHOLE, &req).unwrap_or_default();
        let shape = |r: &RangeResponse| -> Vec<(Bytes, i64, Bytes)> {
            r.kvs.iter().map(|kv| (kv.key.clone(), kv.version, kv.value.clone())).collect()
        };
        prop_assert_eq!(shape(&merged), shape(&whole));
        prop_assert_eq!(merged.count, whole.count);
        prop_assert_eq!(merged.more, whole.more);
    }
}
