//! Checker throughput on realistic histories: 16 always-busy client
//! processes, 10,000 operations over 10 keys, with a few failed and unknown
//! operations. Target: well under a second per history.
//!
//! `cargo bench -p ringkv-lincheck`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringkv_lincheck::synth::{SynthOptions, linearizable_history};
use ringkv_lincheck::{CheckResult, Found, History, Operation, Options, Outcome, Ret, check};

fn options(range_percent: u32) -> SynthOptions {
    SynthOptions {
        seed: 0x5eed,
        processes: 16,
        operations: 10_000,
        keys: 10,
        // Intervals of up to ~30 linearization points: every process has an
        // operation in flight nearly all the time.
        max_skew: 150,
        fail_percent: 2,
        unknown_percent: 2,
        range_percent,
        revisions: true,
    }
}

/// The same history with the middle ok read returning a value never written.
fn corrupted(history: &History) -> History {
    let target = history
        .ops()
        .iter()
        .enumerate()
        .skip(history.len() / 2)
        .find(|(_, op)| matches!(op.outcome, Outcome::Ok(Ret::Get(_))))
        .map(|(i, _)| i)
        .expect("the history has reads");
    let mut out = History::new();
    for (i, op) in history.ops().iter().enumerate() {
        let mut op: Operation = op.clone();
        if i == target {
            op.outcome = Outcome::Ok(Ret::Get(Some(Found {
                value: bytes::Bytes::from_static(b"never written"),
                mod_revision: None,
            })));
        }
        out.push(op).expect("same shape as a valid history");
    }
    out
}

fn bench(c: &mut Criterion) {
    let per_key = linearizable_history(&options(0));
    // Ranges over random key sets tie all ten keys into one partition.
    let with_ranges = linearizable_history(&options(1));
    let broken = corrupted(&per_key);
    let defaults = Options::default();
    assert!(check(&per_key, &defaults).is_linearizable());
    assert!(check(&with_ranges, &defaults).is_linearizable());
    assert!(matches!(check(&broken, &defaults), CheckResult::NotLinearizable(_)));

    let mut group = c.benchmark_group("check");
    group.sample_size(20);
    group.bench_function("16 procs, 10k ops, 10 keys, per-key", |b| {
        b.iter(|| check(black_box(&per_key), &defaults))
    });
    group.bench_function("16 procs, 10k ops, 10 keys, 1% ranges (one partition)", |b| {
        b.iter(|| check(black_box(&with_ranges), &defaults))
    });
    group.bench_function("16 procs, 10k ops, 10 keys, one bad read + counterexample", |b| {
        b.iter(|| check(black_box(&broken), &defaults))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
