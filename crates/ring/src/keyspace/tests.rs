use std::num::NonZeroU32;

use proptest::collection::vec;
use proptest::prelude::*;

use super::{enclosing_prefix, prefix_end};
use crate::{
    HashKeyRule, Keyspace, KeyspaceError, RangeEnd, SHARD_COUNT_MAX, ShardId, ShardSpan, key_hash,
};

fn segments(n: u32) -> HashKeyRule {
    HashKeyRule::Segments(NonZeroU32::new(n).unwrap())
}

fn keyspace(shards: u32, rule: HashKeyRule) -> Keyspace {
    Keyspace::new(shards, rule).unwrap()
}

#[test]
fn hash_tags_follow_redis_cluster() {
    let whole = HashKeyRule::WholeKey;
    let cases: &[(&[u8], &[u8])] = &[
        (b"user:{42}:cart", b"42"),
        (b"{42}", b"42"),
        (b"plain", b"plain"),
        (b"", b""),
        // Empty tag: no tag, the whole key is hashed (even with a later tag).
        (b"{}", b"{}"),
        (b"a{}{b}", b"a{}{b}"),
        // Unmatched braces: no tag.
        (b"a{b", b"a{b"),
        (b"a}b", b"a}b"),
        (b"}{x}", b"x"),
        // The first `{` and the first `}` after it.
        (b"a{{b}}", b"{b"),
        (b"a{b}{c}", b"b"),
        // Binary keys: any byte is fine, only `{` and `}` are special.
        (b"\xff{\x00\xfe}\x00", b"\x00\xfe"),
        (b"\x00\xff", b"\x00\xff"),
    ];
    for &(key, expected) in cases {
        assert_eq!(whole.hash_key(key), expected, "key {:?}", key.escape_ascii().to_string());
    }
}

#[test]
fn segments_cut_after_the_nth_separator() {
    let cases: &[(u32, &[u8], &[u8])] = &[
        (2, b"/registry/pods/default/web", b"/registry/pods"),
        (1, b"/registry/pods/default/web", b"/registry"),
        (2, b"/registry/pods", b"/registry/pods"),
        (2, b"/registry/pods/", b"/registry/pods"),
        (2, b"/registry", b"/registry"),
        (2, b"a/b/c", b"a/b"),
        (1, b"/", b"/"),
        (1, b"//x", b"/"),
        (2, b"/a//b", b"/a/"),
        (3, b"", b""),
        // A tag counts only inside the cut.
        (3, b"/t/{x}/y/z", b"x"),
        (2, b"/t/{x/y}/z", b"/t/{x"),
        (2, b"/t/u/{x}", b"/t/u"),
    ];
    for &(n, key, expected) in cases {
        let got = segments(n).hash_key(key);
        assert_eq!(got, expected, "N = {n}, key {:?}", key.escape_ascii().to_string());
    }
}

#[test]
fn the_key_hash_is_xxh3_and_pinned() {
    // XXH3-64 of the empty input, from the XXH3 specification's test vectors.
    assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
    // The mapping of keys to shards is part of the cluster's format: a change
    // here would strand every key of every existing cluster. These values were
    // recorded from the first implementation; they must never change.
    let ks = keyspace(64, HashKeyRule::WholeKey);
    let pinned: Vec<u64> = [&b"foo"[..], b"/registry/pods/default/web", b"{user42}"]
        .map(|k| ks.shard_of(k).0)
        .to_vec();
    assert_eq!(pinned, [PINNED_FOO, PINNED_POD, PINNED_TAG]);
}

const PINNED_FOO: u64 = 43;
const PINNED_POD: u64 = 36;
const PINNED_TAG: u64 = 40;

#[test]
fn shard_ids_cover_one_to_s() {
    let ks = keyspace(8, HashKeyRule::WholeKey);
    assert_eq!(ks.shard_ids().collect::<Vec<_>>(), (1..=8).map(ShardId).collect::<Vec<_>>());
    assert_eq!(ks.shard_of_hash(0), ShardId(1));
    assert_eq!(ks.shard_of_hash(u64::MAX), ShardId(8));
    assert_eq!(ks.shard_of_hash(1 << 63), ShardId(5));
    assert_eq!(
        Keyspace::new(0, HashKeyRule::WholeKey),
        Err(KeyspaceError::ShardCountOutOfRange { shard_count: 0, max: SHARD_COUNT_MAX })
    );
    assert!(Keyspace::new(SHARD_COUNT_MAX + 1, HashKeyRule::WholeKey).is_err());
    assert!(Keyspace::new(SHARD_COUNT_MAX, HashKeyRule::WholeKey).is_ok());
}

#[test]
fn one_shard_is_plain_etcd() {
    let ks = keyspace(1, HashKeyRule::WholeKey);
    assert_eq!(ks.shard_of(b"anything"), ShardId(1));
    assert_eq!(ks.shards_for_prefix(b""), ShardSpan::One(ShardId(1)));
    assert_eq!(ks.shards_for_etcd_range(b"\0", b"\0"), ShardSpan::One(ShardId(1)));
    assert_eq!(ks.shards_for_range(b"b", RangeEnd::Exclusive(b"a")), ShardSpan::Empty);
}

/// Keys spread evenly: 64 000 keys over 64 shards, each within 6σ of 1000.
#[test]
fn keys_spread_uniformly() {
    let ks = keyspace(64, HashKeyRule::WholeKey);
    let mut counts = [0u32; 64];
    for i in 0..64_000 {
        let key = format!("/registry/pods/default/pod-{i}");
        counts[(ks.shard_of(key.as_bytes()).0 - 1) as usize] += 1;
    }
    let sigma = (1000.0f64 * (63.0 / 64.0)).sqrt();
    for (shard, &count) in counts.iter().enumerate() {
        assert!((f64::from(count) - 1000.0).abs() <= 6.0 * sigma, "shard {}: {count}", shard + 1);
    }
}

#[test]
fn prefixes_and_ranges() {
    let ks = keyspace(64, HashKeyRule::WholeKey);
    let tag = ShardSpan::One(ks.shard_of(b"{t}"));
    assert_eq!(ks.shards_for_prefix(b"/a/{t}/"), tag);
    assert_eq!(ks.shards_for_prefix(b"/a/{t}"), tag);
    assert_eq!(ks.shards_for_prefix(b"/a/{t"), ShardSpan::All);
    assert_eq!(ks.shards_for_prefix(b"/a/{}"), ShardSpan::All);
    assert_eq!(ks.shards_for_prefix(b"/a/"), ShardSpan::All);
    assert_eq!(ks.shards_for_prefix(b""), ShardSpan::All);
    // etcd's conventions: one key, a prefix, from a key on, everything.
    assert_eq!(ks.shards_for_etcd_range(b"/k", b""), ShardSpan::One(ks.shard_of(b"/k")));
    assert_eq!(ks.shards_for_etcd_range(b"/k", b"/k\0"), ShardSpan::One(ks.shard_of(b"/k")));
    assert_eq!(ks.shards_for_etcd_range(b"/a/{t}/", b"/a/{t}0"), tag);
    assert_eq!(ks.shards_for_etcd_range(b"/a/{t}/x", b"/a/{t}/y"), tag);
    assert_eq!(ks.shards_for_etcd_range(b"/a/{t}/x", b"/a/{t}0"), tag);
    assert_eq!(ks.shards_for_etcd_range(b"/a/{t}/", b"/a/{u}"), ShardSpan::All);
    assert_eq!(ks.shards_for_etcd_range(b"/a", b"\0"), ShardSpan::All);
    assert_eq!(ks.shards_for_etcd_range(b"\0", b"\0"), ShardSpan::All);
    assert_eq!(ks.shards_for_etcd_range(b"b", b"a"), ShardSpan::Empty);
    assert_eq!(ks.shards_for_etcd_range(b"a", b"a"), ShardSpan::Empty);

    let ks = keyspace(64, segments(2));
    let pods = ShardSpan::One(ks.shard_of(b"/registry/pods"));
    assert_eq!(ks.shards_for_prefix(b"/registry/pods/"), pods);
    assert_eq!(ks.shards_for_prefix(b"/registry/pods/{x}"), pods);
    assert_eq!(ks.shards_for_etcd_range(b"/registry/pods/", b"/registry/pods0"), pods);
    assert_eq!(ks.shards_for_prefix(b"/registry/pods"), ShardSpan::All);
    assert_eq!(ks.shards_for_prefix(b"/registry/"), ShardSpan::All);
}

#[test]
fn prefix_end_is_etcds() {
    assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
    assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}

/// Bytes the generated keys are made of: ordinary, separator, braces, and the
/// extremes that ranges and prefix ends treat specially.
const ALPHABET: [u8; 7] = [b'a', b'b', b'/', b'{', b'}', 0x00, 0xff];

fn key(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(proptest::sample::select(&ALPHABET[..]), 0..=max_len)
}

fn rule() -> impl Strategy<Value = HashKeyRule> {
    prop_oneof![Just(HashKeyRule::WholeKey), (1u32..=3).prop_map(segments)]
}

/// Every key of `[start, end)` over a 3-byte alphabet up to length 4.
fn keys_between(start: &[u8], end: Option<&[u8]>) -> Vec<Vec<u8>> {
    let mut all = vec![Vec::new()];
    let mut frontier = vec![Vec::new()];
    for _ in 0..4 {
        frontier = frontier
            .iter()
            .flat_map(|k: &Vec<u8>| {
                [0u8, 1, 0xff].map(|b| {
                    let mut k = k.clone();
                    k.push(b);
                    k
                })
            })
            .collect();
        all.extend(frontier.iter().cloned());
    }
    all.retain(|k| k.as_slice() >= start && end.is_none_or(|end| k.as_slice() < end));
    all
}

/// Exhaustive over short keys: every key of the range starts with the
/// enclosing prefix, and one byte more would leave some key out.
#[test]
fn the_enclosing_prefix_is_sound_and_longest() {
    let short = keys_between(b"", None);
    let short: Vec<&[u8]> = short.iter().map(Vec::as_slice).filter(|k| k.len() <= 3).collect();
    for &start in &short {
        for end in short.iter().map(|&e| Some(e)).chain([None]) {
            if end.is_some_and(|end| end <= start) {
                continue;
            }
            let range_end = end.map_or(RangeEnd::Unbounded, RangeEnd::Exclusive);
            let prefix = enclosing_prefix(start, range_end);
            let inside = keys_between(start, end);
            assert!(inside.iter().all(|k| k.starts_with(prefix)), "{start:?}..{end:?}");
            if prefix.len() < start.len() {
                let longer = &start[..=prefix.len()];
                let past = match prefix_end(longer) {
                    Some(bound) => end.is_none_or(|end| end > bound.as_slice()),
                    None => false,
                };
                assert!(past, "{start:?}..{end:?}: {longer:?} would also enclose the range");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn keys_with_one_hash_key_share_a_shard(
        rule in rule(), tag in key(4), a in key(6), b in key(6),
    ) {
        let ks = keyspace(64, rule);
        prop_assert_eq!(ks.shard_of(&a), ks.shard_of(&a));
        if rule.hash_key(&a) == rule.hash_key(&b) {
            prop_assert_eq!(ks.shard_of(&a), ks.shard_of(&b));
        }
        // A non-empty brace-free tag co-locates any two whole keys around it.
        if rule == HashKeyRule::WholeKey && !tag.is_empty()
            && !tag.contains(&b'{') && !tag.contains(&b'}')
            && !a.contains(&b'{')
        {
            let wrap = |outer: &[u8]| [outer, b"{", &tag, b"}", &b[..]].concat();
            prop_assert_eq!(ks.shard_of(&wrap(&a)), ks.shard_of(&[&b"x{"[..], &tag, b"}"].concat()));
        }
    }

    /// Sound: a prefix that answers one shard holds only keys of that shard.
    /// Tight: a prefix that answers "all" has keys of two hash keys below it.
    #[test]
    fn prefix_answers_are_sound_and_tight(rule in rule(), prefix in key(8), suffixes in vec(key(6), 1..8)) {
        let ks = keyspace(64, rule);
        match rule.prefix_hash_key(&prefix) {
            Some(hash_key) => {
                prop_assert_eq!(ks.shards_for_prefix(&prefix), ShardSpan::One(ks.shard_of(hash_key)));
                for suffix in &suffixes {
                    let key = [&prefix[..], suffix].concat();
                    prop_assert_eq!(rule.hash_key(&key), hash_key);
                }
            }
            None => {
                prop_assert_eq!(ks.shards_for_prefix(&prefix), ShardSpan::All);
                let extended = [&prefix[..], b"a"].concat();
                prop_assert_ne!(rule.hash_key(&prefix), rule.hash_key(&extended));
            }
        }
    }

    /// Every key of a range lives on a shard the range's answer includes.
    #[test]
    fn range_answers_are_sound(
        rule in rule(),
        start in key(6),
        end in proptest::option::of(key(6)),
        suffixes in vec(key(4), 1..8),
    ) {
        let ks = keyspace(64, rule);
        let range_end = end.as_deref().map_or(RangeEnd::Unbounded, RangeEnd::Exclusive);
        let answer = ks.shards_for_range(&start, range_end);
        let mut candidates: Vec<Vec<u8>> =
            suffixes.iter().map(|s| [&start[..], s].concat()).collect();
        if let Some(end) = &end {
            candidates.extend(suffixes.iter().map(|s| [&end[..end.len().saturating_sub(1)], s].concat()));
        }
        let inside = |k: &[u8]| k >= start.as_slice() && end.as_deref().is_none_or(|e| k < e);
        for key in candidates.iter().filter(|k| inside(k)) {
            match answer {
                ShardSpan::Empty => prop_assert!(false, "{:?} is inside an empty range", key),
                ShardSpan::One(shard) => prop_assert_eq!(ks.shard_of(key), shard),
                ShardSpan::All => {}
            }
        }
        if end.as_deref().is_some_and(|e| e <= start.as_slice()) {
            prop_assert_eq!(answer, ShardSpan::Empty);
        }
    }
}
