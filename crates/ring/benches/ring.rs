//! Benchmarks: key-to-shard lookups, and computing whole placements.
//!
//! `cargo bench -p ringkv-ring --bench ring`. Targets: over 10 million
//! lookups per second on one core; a 100-node, 4096-shard placement well
//! inside a metadata-group tick.

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringkv_ring::{HashKeyRule, Keyspace, NodeId, NodeSpec, PlacementConfig, Ring};

/// Keys per lookup batch: enough to defeat branch prediction on one key,
/// few enough to stay in L1.
const KEYS: usize = 1024;

/// etcd-style keys (`/registry/pods/<namespace>/<name>`), about 35 bytes,
/// every eighth one with a hash tag.
fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| {
            let key = if i % 8 == 0 {
                format!("/registry/pods/ns-{}/{{tenant-{}}}-pod-{i:05}", i % 16, i % 5)
            } else {
                format!("/registry/pods/ns-{}/pod-{i:05}", i % 16)
            };
            key.into_bytes()
        })
        .collect()
}

fn key_to_shard(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("key_to_shard");
    group.throughput(Throughput::Elements(KEYS as u64));
    let segments = HashKeyRule::Segments(NonZeroU32::new(4).expect("non-zero"));
    for (name, rule) in [("whole_key", HashKeyRule::WholeKey), ("segments_4", segments)] {
        let keyspace = Keyspace::new(64, rule).expect("valid shard count");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for key in &keys {
                    sum = sum.wrapping_add(keyspace.shard_of(black_box(key)).0);
                }
                sum
            });
        });
    }
    group.finish();
}

fn ring(nodes: u64, zones: u64) -> Ring {
    Ring::new((1..=nodes).map(|i| {
        let node = NodeSpec::new(NodeId(i));
        if zones == 0 { node } else { node.with_zone(format!("zone-{}", i % zones)) }
    }))
    .expect("valid node set")
}

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("place_100_nodes_4096_shards");
    group.sample_size(20);
    let config = PlacementConfig::new(4096, 3);
    let cases = [
        ("no_zones", ring(100, 0), config),
        ("3_zones", ring(100, 3), config),
        ("no_zones_bounded_25", ring(100, 0), config.with_load_bound(25)),
        ("3_zones_bounded_25", ring(100, 3), config.with_load_bound(25)),
    ];
    for (name, ring, config) in cases {
        group.bench_function(name, |b| {
            b.iter(|| black_box(&ring).place(black_box(&config)).expect("valid config"));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("ring");
    group.sample_size(20);
    group.bench_function("build_100_nodes", |b| b.iter(|| ring(black_box(100), 3)));
    group.finish();
}

criterion_group!(benches, key_to_shard, placement);
criterion_main!(benches);
