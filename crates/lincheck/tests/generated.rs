//! Property tests on generated histories: every history produced by running
//! operations against a sequential store at points inside their intervals
//! is accepted, and the same history with one read corrupted to a value
//! never written is rejected, with that read named.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use ringkv_lincheck::synth::{SynthOptions, linearizable_history};
use ringkv_lincheck::*;

/// A value `synth` never writes (it writes `v<n>` only).
const CORRUPT: &[u8] = b"corrupt: never written";

fn synth_options() -> impl Strategy<Value = SynthOptions> {
    (
        any::<u64>(),
        1u32..=6,
        0usize..=80,
        1u32..=4,
        0u64..=60,
        (0u32..=10, 0u32..=20, 0u32..=20),
        any::<bool>(),
    )
        .prop_map(
            |(seed, processes, operations, keys, max_skew, (fail, unknown, range), revisions)| {
                SynthOptions {
                    seed,
                    processes,
                    operations,
                    keys,
                    max_skew,
                    fail_percent: fail,
                    unknown_percent: unknown,
                    range_percent: range,
                    revisions,
                }
            },
        )
}

fn is_ok_read(op: &Operation) -> bool {
    matches!(op.outcome, Outcome::Ok(Ret::Get(_) | Ret::Range(_)))
}

/// `history` with the ok read `target` returning [`CORRUPT`] for one of its
/// keys; also returns that key.
fn corrupt(history: &History, target: usize) -> (History, Bytes) {
    let mut out = History::new();
    let mut corrupted_key = None;
    for (i, op) in history.ops().iter().enumerate() {
        let mut op = op.clone();
        if i == target {
            let key = op.call.keys()[0].clone();
            let value = Bytes::from_static(CORRUPT);
            op.outcome = match op.outcome {
                Outcome::Ok(Ret::Get(found)) => Outcome::Ok(Ret::Get(Some(Found {
                    value,
                    mod_revision: found.and_then(|f| f.mod_revision),
                }))),
                Outcome::Ok(Ret::Range(mut kvs)) => {
                    kvs.retain(|kv| kv.key != key);
                    kvs.push(KeyValue { key: key.clone(), value, mod_revision: None });
                    Outcome::Ok(Ret::Range(kvs))
                }
                other => panic!("target {i} is not an ok read: {other:?}"),
            };
            corrupted_key = Some(key);
        }
        out.push(op).expect("same shape as a valid history");
    }
    (out, corrupted_key.expect("target is in range"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("tests/generated.proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_histories_are_linearizable(opts in synth_options()) {
        let history = linearizable_history(&opts);
        let verdict = check(&history, &Options::default());
        prop_assert!(
            verdict.is_linearizable(),
            "{opts:?}\n{verdict:?}\n{}",
            to_jsonl(&history)
        );
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected(opts in synth_options(), pick in any::<Index>()) {
        let history = linearizable_history(&opts);
        let reads: Vec<usize> =
            history.ops().iter().enumerate().filter(|(_, op)| is_ok_read(op)).map(|(i, _)| i).collect();
        prop_assume!(!reads.is_empty());
        let target = reads[pick.index(reads.len())];
        let (broken, key) = corrupt(&history, target);
        let cx = match check(&broken, &Options::default()) {
            CheckResult::NotLinearizable(cx) => cx,
            other => return Err(TestCaseError::fail(format!(
                "corrupted op {target} accepted: {other:?}\n{}", to_jsonl(&broken)
            ))),
        };
        prop_assert!(cx.keys.contains(&key), "{cx}");
        prop_assert!(cx.unplaced.iter().any(|u| u.op == OpId(target)), "{cx}");
        // The shortest failing prefix ends exactly when the bad read returns:
        // before that, the history is the original, linearizable one.
        let completed = |id: OpId| broken.get(id).and_then(|op| op.completed_at);
        prop_assert_eq!(cx.cut.and_then(completed), completed(OpId(target)), "{}", cx);
    }

    #[test]
    fn jsonl_round_trips(opts in synth_options()) {
        let history = linearizable_history(&opts);
        let back = parse_jsonl(&to_jsonl(&history)).expect("our own output parses");
        prop_assert_eq!(back.ops(), history.ops());
    }
}
