//! Hand-written histories, linearizable and not, with their counterexamples.

use bytes::Bytes;
use ringkv_lincheck::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn get(k: &str) -> Call {
    Call::Get { key: b(k) }
}
fn put(k: &str, v: &str) -> Call {
    Call::Put { key: b(k), value: b(v) }
}
fn del(k: &str) -> Call {
    Call::Delete { key: b(k) }
}
fn cas(k: &str, expect: Option<&str>, v: &str) -> Call {
    Call::CompareAndSet { key: b(k), compare: Compare::Value(expect.map(b)), value: b(v) }
}
fn cas_rev(k: &str, rev: u64, v: &str) -> Call {
    Call::CompareAndSet { key: b(k), compare: Compare::ModRevision(Revision(rev)), value: b(v) }
}
fn range(keys: &[&str]) -> Call {
    Call::Range { keys: keys.iter().map(|k| b(k)).collect() }
}

fn read(v: Option<&str>) -> Outcome {
    Outcome::Ok(Ret::Get(v.map(|v| Found { value: b(v), mod_revision: None })))
}
fn read_rev(v: &str, rev: u64) -> Outcome {
    Outcome::Ok(Ret::Get(Some(Found { value: b(v), mod_revision: Some(Revision(rev)) })))
}
fn ok() -> Outcome {
    Outcome::Ok(Ret::Put { revision: None })
}
fn ok_rev(rev: u64) -> Outcome {
    Outcome::Ok(Ret::Put { revision: Some(Revision(rev)) })
}
fn deleted(d: bool) -> Outcome {
    Outcome::Ok(Ret::Delete { deleted: Some(d), revision: None })
}
fn swapped(succeeded: bool) -> Outcome {
    Outcome::Ok(Ret::CompareAndSet { succeeded, revision: None })
}
fn ranged(kvs: &[(&str, &str)]) -> Outcome {
    Outcome::Ok(Ret::Range(
        kvs.iter().map(|(k, v)| KeyValue { key: b(k), value: b(v), mod_revision: None }).collect(),
    ))
}

/// (process, call, outcome, invoked_at, completed_at), pushed in order.
type Row = (u64, Call, Outcome, u64, u64);

fn history(rows: Vec<Row>) -> History {
    let mut h = History::new();
    for (p, call, outcome, inv, comp) in rows {
        h.push(Operation {
            process: ProcessId(p),
            call,
            outcome,
            invoked_at: Timestamp(inv),
            completed_at: Some(Timestamp(comp)),
        })
        .expect("test histories are well formed");
    }
    h
}

fn verdict(rows: Vec<Row>) -> CheckResult {
    check(&history(rows), &Options::default())
}

#[track_caller]
fn assert_linearizable(rows: Vec<Row>) {
    match verdict(rows) {
        CheckResult::Linearizable => {}
        CheckResult::NotLinearizable(cx) => panic!("expected linearizable, got:\n{cx}"),
        other => panic!("expected linearizable, got {other:?}"),
    }
}

#[track_caller]
fn counterexample(rows: Vec<Row>) -> Box<Counterexample> {
    match verdict(rows) {
        CheckResult::NotLinearizable(cx) => cx,
        other => panic!("expected not linearizable, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(vec![]);
}

#[test]
fn sequential_writes_and_reads_are_linearizable() {
    assert_linearizable(vec![
        (1, get("x"), read(None), 0, 1),
        (1, put("x", "1"), ok(), 2, 3),
        (2, get("x"), read(Some("1")), 4, 5),
        (1, put("x", "2"), ok(), 6, 7),
        (2, get("x"), read(Some("2")), 8, 9),
    ]);
}

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    let cx = counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (1, put("x", "2"), ok(), 2, 3),
        (2, get("x"), read(Some("1")), 4, 5),
    ]);
    assert_eq!(cx.keys, vec![b("x")]);
    assert_eq!(cx.unplaced.len(), 1);
    let stale = &cx.unplaced[0];
    assert_eq!(stale.op, OpId(2));
    assert!(stale.blocked);
    assert_eq!(
        stale.reason,
        Reason::ValueMismatch {
            key: b("x"),
            current: Some(b("2")),
            observed: Some(b("1")),
            written_by: vec![OpId(0)],
        }
    );
    assert_eq!(cx.context, vec![OpId(1)], "the write that produced the state");
    let text = cx.to_string();
    assert!(text.contains("not linearizable: key \"x\""), "{text}");
    assert!(text.contains("\"x\" is \"2\" here, but the read returned \"1\""), "{text}");
    assert!(text.contains("\"1\" was written by #0 (ok, t=0..1)"), "{text}");
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let cx =
        counterexample(vec![(1, put("x", "1"), ok(), 0, 1), (2, get("x"), read(Some("9")), 0, 5)]);
    assert_eq!(cx.unplaced[0].op, OpId(1));
    assert!(
        matches!(&cx.unplaced[0].reason, Reason::ValueMismatch { written_by, .. } if written_by.is_empty())
    );
    assert!(cx.to_string().contains("no operation ever wrote \"9\" to this key"));
}

#[test]
fn lost_write_is_rejected() {
    let cx =
        counterexample(vec![(1, put("x", "1"), ok(), 0, 10), (2, get("x"), read(None), 11, 12)]);
    assert_eq!(cx.unplaced[0].op, OpId(1));
    assert!(matches!(cx.unplaced[0].reason, Reason::ValueMismatch { observed: None, .. }));
}

#[test]
fn concurrent_operations_can_be_reordered() {
    // The later-invoked write may take effect first.
    assert_linearizable(vec![
        (1, put("x", "1"), ok(), 0, 10),
        (2, put("x", "2"), ok(), 1, 9),
        (3, get("x"), read(Some("1")), 11, 12),
    ]);
    // A read overlapping a write may see it or not; two overlapping reads
    // may see it in either order as long as they overlap each other too.
    assert_linearizable(vec![
        (1, put("x", "1"), ok(), 0, 10),
        (2, get("x"), read(Some("1")), 1, 3),
        (3, get("x"), read(None), 2, 4),
    ]);
    // But once a read has seen the write, a read that starts later must too.
    counterexample(vec![
        (1, put("x", "1"), ok(), 0, 10),
        (2, get("x"), read(Some("1")), 1, 3),
        (3, get("x"), read(None), 4, 5),
    ]);
}

#[test]
fn touching_intervals_are_concurrent() {
    assert_linearizable(vec![(1, put("x", "1"), ok(), 0, 5), (2, get("x"), read(None), 5, 6)]);
}

#[test]
fn unknown_write_that_must_have_taken_effect() {
    assert_linearizable(vec![
        (1, put("x", "1"), Outcome::Unknown, 0, 1),
        (2, get("x"), read(Some("1")), 5, 6),
    ]);
    // It may take effect long after the client gave up.
    assert_linearizable(vec![
        (1, put("x", "1"), Outcome::Unknown, 0, 1),
        (2, get("x"), read(None), 2, 3),
        (2, get("x"), read(Some("1")), 5, 6),
    ]);
}

#[test]
fn unknown_write_that_must_never_have_happened() {
    assert_linearizable(vec![
        (1, put("x", "1"), Outcome::Unknown, 0, 1),
        (2, get("x"), read(None), 5, 6),
        (2, put("x", "2"), ok(), 7, 8),
        (2, get("x"), read(Some("2")), 9, 10),
    ]);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_invocation() {
    let cx = counterexample(vec![
        (2, get("x"), read(Some("1")), 0, 1),
        (1, put("x", "1"), Outcome::Unknown, 5, 6),
    ]);
    assert_eq!(cx.unplaced[0].op, OpId(0));
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    counterexample(vec![
        (1, put("x", "1"), Outcome::Unknown, 0, 1),
        (2, put("x", "2"), ok(), 2, 3),
        (2, get("x"), read(Some("1")), 4, 5),
        (2, get("x"), read(Some("2")), 6, 7),
        (2, get("x"), read(Some("1")), 8, 9),
    ]);
}

#[test]
fn unknown_operations_may_be_needed_in_a_row() {
    // An unknown put, then an unknown CAS that only succeeds after it.
    assert_linearizable(vec![
        (1, put("x", "1"), Outcome::Unknown, 0, 1),
        (2, cas("x", Some("1"), "2"), Outcome::Unknown, 2, 3),
        (3, get("x"), read(Some("2")), 4, 5),
    ]);
    // Unknown writes on two keys, both seen by one range.
    assert_linearizable(vec![
        (1, put("a", "1"), Outcome::Unknown, 0, 1),
        (2, put("b", "1"), Outcome::Unknown, 0, 1),
        (3, put("c", "1"), ok(), 2, 3),
        (3, range(&["a", "b", "c"]), ranged(&[("a", "1"), ("b", "1"), ("c", "1")]), 4, 5),
    ]);
    // Two unknown writes to one key, each seen in turn.
    assert_linearizable(vec![
        (1, put("x", "1"), Outcome::Unknown, 0, 1),
        (2, put("x", "2"), Outcome::Unknown, 0, 1),
        (3, get("x"), read(Some("1")), 2, 3),
        (3, get("x"), read(Some("2")), 4, 5),
    ]);
    // An unknown write on one key that took effect before an ok write on
    // another, observed together by a later range.
    assert_linearizable(vec![
        (1, put("a", "1"), Outcome::Unknown, 0, 1),
        (2, put("b", "1"), ok(), 2, 3),
        (2, range(&["a", "b"]), ranged(&[("b", "1")]), 4, 5),
        (2, range(&["a", "b"]), ranged(&[("a", "1"), ("b", "1")]), 6, 7),
    ]);
}

#[test]
fn many_pending_unknown_writes_stay_cheap() {
    // Without the overwrite and chain rules of the search, both take
    // exponentially many steps (every subset of the unknown writes).
    let options = Options { step_budget: 200_000, ..Options::default() };
    // Sixteen unknown writes to x, then a read no subset or order explains.
    let mut one_key: Vec<Row> =
        (0..16).map(|i| (i, put("x", &format!("v{i}")), Outcome::Unknown, 0, 1)).collect();
    one_key.push((99, get("x"), read(Some("never")), 2, 3));
    // Keys a..d checked together (an early range ties them), sixteen
    // unknown writes on each of b, c and d, then an impossible read of a:
    // the writes on other keys cannot help it.
    let mut four_keys: Vec<Row> = vec![(99, range(&["a", "b", "c", "d"]), ranged(&[]), 0, 1)];
    for (k, key) in ["b", "c", "d"].iter().enumerate() {
        for i in 0..16 {
            four_keys.push((
                k as u64 * 100 + i,
                put(key, &format!("v{i}")),
                Outcome::Unknown,
                2,
                3,
            ));
        }
    }
    four_keys.push((99, get("a"), read(Some("never")), 4, 5));
    for rows in [one_key, four_keys] {
        let h = history(rows);
        match check(&h, &options) {
            CheckResult::NotLinearizable(cx) => assert_eq!(cx.unplaced[0].op, OpId(h.len() - 1)),
            other => panic!("expected a decided violation, got {other:?}"),
        }
    }
}

#[test]
fn pending_operation_is_unknown() {
    let mut h = history(vec![(2, get("x"), read(None), 0, 1)]);
    h.invoke(ProcessId(1), put("x", "1"), Timestamp(2)).unwrap();
    h.push(Operation {
        process: ProcessId(3),
        call: get("x"),
        outcome: read(Some("1")),
        invoked_at: Timestamp(10),
        completed_at: Some(Timestamp(11)),
    })
    .unwrap();
    assert!(check(&h, &Options::default()).is_linearizable());
}

#[test]
fn failed_write_did_not_happen() {
    assert_linearizable(vec![
        (1, put("x", "1"), Outcome::Fail, 0, 1),
        (2, get("x"), read(None), 2, 3),
    ]);
    let cx = counterexample(vec![
        (1, put("x", "1"), Outcome::Fail, 0, 1),
        (2, get("x"), read(Some("1")), 2, 3),
    ]);
    // The failed write is cited as the only writer of the value read.
    assert!(cx.to_string().contains("#0 (failed, t=0..1)"), "{cx}");
}

#[test]
fn compare_and_set_on_value() {
    assert_linearizable(vec![
        (1, cas("x", None, "1"), swapped(true), 0, 1),
        (1, cas("x", Some("1"), "2"), swapped(true), 2, 3),
        (2, cas("x", Some("1"), "3"), swapped(false), 4, 5),
        (2, get("x"), read(Some("2")), 6, 7),
    ]);
    // "CAS returned false" is an answer: here the condition held, so it is wrong ...
    let cx = counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, cas("x", Some("1"), "2"), swapped(false), 2, 3),
    ]);
    assert_eq!(
        cx.unplaced[0].reason,
        Reason::CasOutcomeMismatch { key: b("x"), holds: true, observed: false }
    );
    // ... whereas a failed CAS simply did not happen.
    assert_linearizable(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, cas("x", Some("1"), "2"), Outcome::Fail, 2, 3),
        (2, get("x"), read(Some("1")), 4, 5),
    ]);
    // A CAS that succeeded when its condition cannot hold.
    counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, cas("x", Some("0"), "2"), swapped(true), 2, 3),
    ]);
}

#[test]
fn unknown_compare_and_set_may_or_may_not_apply() {
    let base = || {
        vec![(1, put("x", "1"), ok(), 0, 1), (2, cas("x", Some("1"), "2"), Outcome::Unknown, 2, 3)]
    };
    let mut applied = base();
    applied.push((3, get("x"), read(Some("2")), 4, 5));
    assert_linearizable(applied);
    let mut not_applied = base();
    not_applied.push((3, get("x"), read(Some("1")), 4, 5));
    assert_linearizable(not_applied);
    // Its condition did not hold, so it cannot have written.
    counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, cas("x", Some("0"), "2"), Outcome::Unknown, 2, 3),
        (3, get("x"), read(Some("2")), 4, 5),
    ]);
}

#[test]
fn compare_and_set_on_mod_revision() {
    assert_linearizable(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (
            1,
            cas_rev("x", 5, "2"),
            Outcome::Ok(Ret::CompareAndSet { succeeded: true, revision: Some(Revision(6)) }),
            2,
            3,
        ),
        (2, cas_rev("x", 5, "3"), swapped(false), 4, 5),
        (2, get("x"), read_rev("2", 6), 6, 7),
    ]);
    // Revision 0 compares "absent".
    assert_linearizable(vec![(1, cas_rev("x", 0, "1"), swapped(true), 0, 1)]);
    counterexample(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (1, cas_rev("x", 4, "2"), swapped(true), 2, 3),
    ]);
}

#[test]
fn compare_on_an_unrevealed_mod_revision_pins_it() {
    // The put did not report its revision; the successful CAS on revision 7
    // reveals it, so a later read reporting mod_revision 7 for "1" is fine
    // only before the CAS ... and the CAS's own write must be above 7.
    assert_linearizable(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, get("x"), read_rev("1", 7), 2, 3),
        (2, cas_rev("x", 7, "2"), swapped(true), 4, 5),
    ]);
    counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (
            2,
            cas_rev("x", 7, "2"),
            Outcome::Ok(Ret::CompareAndSet { succeeded: true, revision: Some(Revision(7)) }),
            4,
            5,
        ),
    ]);
}

#[test]
fn revisions_are_checked_when_present() {
    assert_linearizable(vec![
        (1, put("x", "1"), ok_rev(3), 0, 1),
        (2, get("x"), read_rev("1", 3), 2, 3),
        (1, put("x", "2"), ok_rev(9), 4, 5),
        (2, get("x"), read_rev("2", 9), 6, 7),
    ]);
    // Revisions must grow along the order of writes.
    let cx = counterexample(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (1, put("x", "2"), ok_rev(4), 2, 3),
    ]);
    assert_eq!(
        cx.unplaced[0].reason,
        Reason::RevisionNotIncreasing { key: b("x"), reached: Revision(5), observed: Revision(4) }
    );
    // A read's mod revision must be the last write's.
    let cx = counterexample(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (2, get("x"), read_rev("1", 6), 2, 3),
    ]);
    assert!(matches!(cx.unplaced[0].reason, Reason::ModRevisionMismatch { .. }));
    // A revision revealed by one read binds the next.
    counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, get("x"), read_rev("1", 5), 2, 3),
        (2, get("x"), read_rev("1", 6), 4, 5),
    ]);
    // A read cannot report a mod revision older than one the key reached
    // before the write of unknown revision.
    counterexample(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (1, put("x", "2"), ok(), 2, 3),
        (2, get("x"), read_rev("2", 5), 4, 5),
    ]);
}

#[test]
fn revisions_are_ignored_when_absent() {
    assert_linearizable(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (2, get("x"), read(Some("1")), 2, 3),
        (1, put("x", "2"), ok(), 4, 5),
        (2, get("x"), read_rev("2", 6), 6, 7),
    ]);
}

#[test]
fn response_header_revisions_cannot_go_back() {
    let cas_false_at =
        |rev| Outcome::Ok(Ret::CompareAndSet { succeeded: false, revision: Some(Revision(rev)) });
    assert_linearizable(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (2, cas("x", Some("0"), "2"), cas_false_at(8), 2, 3),
        (1, put("x", "3"), ok_rev(9), 4, 5),
    ]);
    let cx = counterexample(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (2, cas("x", Some("0"), "2"), cas_false_at(4), 2, 3),
    ]);
    assert!(matches!(cx.unplaced[0].reason, Reason::RevisionBehind { .. }));
    // A header revision also bounds later writes from below.
    counterexample(vec![
        (1, put("x", "1"), ok_rev(5), 0, 1),
        (2, cas("x", Some("0"), "2"), cas_false_at(8), 2, 3),
        (1, put("x", "3"), ok_rev(7), 4, 5),
    ]);
}

#[test]
fn delete_removes_the_key() {
    assert_linearizable(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (1, del("x"), deleted(true), 2, 3),
        (2, get("x"), read(None), 4, 5),
        (2, del("x"), deleted(false), 6, 7),
    ]);
    let cx = counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (1, del("x"), deleted(true), 2, 3),
        (2, get("x"), read(Some("1")), 4, 5),
    ]);
    assert_eq!(cx.unplaced[0].op, OpId(2));
    let cx =
        counterexample(vec![(1, put("x", "1"), ok(), 0, 1), (1, del("x"), deleted(false), 2, 3)]);
    assert_eq!(
        cx.unplaced[0].reason,
        Reason::DeletedMismatch { key: b("x"), existed: true, observed: false }
    );
}

#[test]
fn keys_are_independent() {
    assert_linearizable(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, put("y", "1"), ok(), 2, 3),
        (3, get("x"), read(Some("1")), 4, 5),
        (3, get("y"), read(Some("1")), 6, 7),
        (3, get("z"), read(None), 8, 9),
    ]);
    let cx = counterexample(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (2, put("y", "1"), ok(), 2, 3),
        (3, get("y"), read(None), 6, 7),
    ]);
    assert_eq!(cx.keys, vec![b("y")]);
}

#[test]
fn range_reads_one_snapshot_of_its_keys() {
    // p1 writes a, then b. A range overlapping both cannot see b's write but
    // not a's, although each key on its own could be linearized.
    let writes = || vec![(1, put("a", "1"), ok(), 0, 1), (1, put("b", "1"), ok(), 2, 3)];
    let mut torn = writes();
    torn.push((2, range(&["a", "b"]), ranged(&[("b", "1")]), 0, 5));
    let cx = counterexample(torn);
    assert_eq!(cx.keys, vec![b("a"), b("b")]);
    assert_eq!(cx.unplaced[0].op, OpId(2));
    // The per-key view of the same reads is linearizable: that is why keys
    // read together are checked together.
    let mut per_key = writes();
    per_key.push((2, get("a"), read(None), 0, 5));
    per_key.push((3, get("b"), read(Some("1")), 0, 5));
    assert_linearizable(per_key);
    // Consistent snapshots are fine.
    let mut before = writes();
    before.push((2, range(&["a", "b"]), ranged(&[("a", "1")]), 0, 5));
    assert_linearizable(before);
    let mut after = writes();
    after.push((2, range(&["b", "a", "c"]), ranged(&[("b", "1"), ("a", "1")]), 4, 5));
    assert_linearizable(after);
}

#[test]
fn range_merges_partitions_transitively() {
    // Each key on its own is linearizable; together they are not: the
    // range over b, c sees c = 1 (so a = 1 already) and b absent, so the
    // range over a, b, which sees b = 1, comes after it and must see a = 1.
    let rows = vec![
        (1, put("a", "1"), ok(), 0, 1),
        (1, put("c", "1"), ok(), 2, 3),
        (2, range(&["b", "c"]), ranged(&[("c", "1")]), 0, 10),
        (3, put("b", "1"), ok(), 0, 10),
        (4, range(&["a", "b"]), ranged(&[("b", "1")]), 0, 10),
        (5, put("d", "1"), ok(), 0, 1),
    ];
    let cx = counterexample(rows);
    assert_eq!(cx.keys, vec![b("a"), b("b"), b("c")]);
}

#[test]
fn a_merged_partition_reports_a_failing_key_on_its_own() {
    let cx = counterexample(vec![
        (1, range(&["a", "b"]), ranged(&[]), 0, 1),
        (2, put("b", "1"), ok(), 4, 5),
        (2, get("b"), read(None), 6, 7),
    ]);
    assert_eq!(cx.keys, vec![b("b")], "b's projection alone fails: {cx}");
    assert_eq!(cx.unplaced[0].op, OpId(2));
}

#[test]
fn counterexample_is_cut_to_the_first_violation() {
    // 200 good operations, a stale read, then 200 more good ones.
    let mut rows: Vec<Row> = Vec::new();
    let mut t = 0;
    for i in 0..100 {
        let v = format!("v{i}");
        rows.push((1, put("x", &v), ok(), t, t + 3));
        rows.push((2, get("x"), read(Some(&v)), t + 4, t + 6));
        t += 10;
    }
    let stale = OpId(rows.len());
    rows.push((2, get("x"), read(Some("v50")), t, t + 1));
    t += 10;
    for i in 100..200 {
        let v = format!("v{i}");
        rows.push((1, put("x", &v), ok(), t, t + 3));
        rows.push((2, get("x"), read(Some(&v)), t + 4, t + 6));
        t += 10;
    }
    let cx = counterexample(rows);
    assert_eq!(cx.cut, Some(stale));
    assert_eq!(cx.unplaced.len(), 1);
    assert_eq!(cx.unplaced[0].op, stale);
    assert!(cx.linearized >= 200, "the whole good prefix is linearized");
    assert!(cx.context.len() <= CONTEXT_OPS_MAX);
    assert!(cx.operations.len() < 10, "only a few operations are shown: {}", cx.operations.len());
}

#[test]
fn unminimized_counterexample_still_names_the_culprit() {
    let h = history(vec![
        (1, put("x", "1"), ok(), 0, 1),
        (1, put("x", "2"), ok(), 2, 3),
        (2, get("x"), read(Some("1")), 4, 5),
        (1, put("x", "3"), ok(), 6, 7),
    ]);
    let CheckResult::NotLinearizable(cx) =
        check(&h, &Options { minimize: false, ..Options::default() })
    else {
        panic!("expected a violation")
    };
    assert_eq!(cx.cut, None);
    assert_eq!(cx.unplaced[0].op, OpId(2));
}

#[test]
fn timeline_and_svg_show_every_process() {
    let cx = counterexample(vec![
        (1, put("x", "1"), ok(), 0, 10),
        (2, get("x"), read(Some("1")), 1, 3),
        (3, get("x"), read(None), 4, 5),
        (4, put("x", "2"), Outcome::Unknown, 2, 6),
    ]);
    let timeline = cx.timeline();
    let rows: Vec<&str> = timeline.lines().filter(|l| l.trim_start().starts_with('p')).collect();
    assert_eq!(rows.len(), 4, "{timeline}");
    assert!(timeline.contains("[#2="), "the unplaced read is drawn with '=': {timeline}");
    assert!(timeline.contains('~'), "the unknown write is drawn with '~': {timeline}");
    let svg = cx.svg();
    assert!(svg.starts_with("<svg "));
    assert!(svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<rect").count(), 1 + 4 + 3, "background, a bar per op, legend");
    assert!(svg.contains("get &quot;x&quot; -&gt; absent"), "titles are escaped: {svg}");
    assert!(cx.to_string().contains(&timeline), "Display ends with the timeline");
}

#[test]
fn binary_keys_render_as_hex() {
    let key = Bytes::from_static(&[0xff, 0x00]);
    let rows = vec![
        (1, Call::Put { key: key.clone(), value: b("1") }, ok(), 0, 1),
        (2, Call::Get { key: key.clone() }, read(None), 2, 3),
    ];
    let cx = counterexample(rows);
    assert!(cx.to_string().contains("key 0xff00"), "{cx}");
}

/// Twenty-four concurrent writes and a concurrent read of a value none of
/// them wrote: before giving up, the search tries every subset of the
/// writes as "already done", each ending with each of its writes.
fn pathological() -> Vec<Row> {
    let mut rows: Vec<Row> =
        (0..24).map(|i| (i, put("x", &format!("v{i}")), ok(), 0, 100)).collect();
    rows.push((99, get("x"), read(Some("never")), 0, 100));
    rows
}

#[test]
fn a_pathological_history_exhausts_the_budget() {
    let h = history(pathological());
    let options = Options { step_budget: 10_000, ..Options::default() };
    match check(&h, &options) {
        CheckResult::Undecided(u) => {
            assert_eq!(u.partitions, vec![vec![b("x")]]);
            assert_eq!(u.step_budget, 10_000);
            assert!(u.to_string().starts_with("undecided: budget exhausted"), "{u}");
        }
        other => panic!("expected undecided, got {other:?}"),
    }
}

#[test]
fn a_decided_partition_wins_over_an_undecided_one() {
    let mut rows = pathological();
    rows.push((100, put("y", "1"), ok(), 0, 1));
    rows.push((100, get("y"), read(None), 2, 3));
    let options = Options { step_budget: 10_000, ..Options::default() };
    let CheckResult::NotLinearizable(cx) = check(&history(rows), &options) else {
        panic!("expected the violation on y")
    };
    assert_eq!(cx.keys, vec![b("y")]);
}

#[test]
fn history_rejects_malformed_operations() {
    let mut h = History::new();
    h.invoke(ProcessId(1), get("x"), Timestamp(5)).unwrap();
    assert!(matches!(
        h.invoke(ProcessId(1), get("x"), Timestamp(6)),
        Err(HistoryError::ProcessBusy { pending: OpId(0), .. })
    ));
    assert!(matches!(
        h.complete(ProcessId(1), ok(), Timestamp(7)),
        Err(HistoryError::ResultMismatch { call: CallKind::Get, ret: CallKind::Put, .. })
    ));
    assert!(matches!(
        h.complete(ProcessId(1), read(None), Timestamp(4)),
        Err(HistoryError::CompletedBeforeInvoked { .. })
    ));
    h.complete(ProcessId(1), read(None), Timestamp(7)).unwrap();
    assert!(matches!(
        h.complete(ProcessId(1), read(None), Timestamp(8)),
        Err(HistoryError::NothingOutstanding { .. })
    ));
    assert!(matches!(
        h.invoke(ProcessId(1), get("x"), Timestamp(6)),
        Err(HistoryError::Overlap { previous: OpId(0), .. })
    ));
    assert!(matches!(
        h.invoke(ProcessId(2), range(&[]), Timestamp(0)),
        Err(HistoryError::EmptyRange { .. })
    ));
    let bad_range = Operation {
        process: ProcessId(3),
        call: range(&["a"]),
        outcome: ranged(&[("b", "1")]),
        invoked_at: Timestamp(0),
        completed_at: Some(Timestamp(1)),
    };
    assert!(matches!(
        h.push(bad_range),
        Err(HistoryError::BadRangeResult { duplicate: false, .. })
    ));
    let zero = Operation {
        process: ProcessId(3),
        call: put("a", "1"),
        outcome: ok_rev(0),
        invoked_at: Timestamp(0),
        completed_at: Some(Timestamp(1)),
    };
    assert!(matches!(h.push(zero), Err(HistoryError::ZeroRevision { .. })));
    let no_end = Operation {
        process: ProcessId(3),
        call: put("a", "1"),
        outcome: ok(),
        invoked_at: Timestamp(0),
        completed_at: None,
    };
    assert!(matches!(h.push(no_end), Err(HistoryError::MissingCompletionTime { .. })));
    assert_eq!(h.len(), 1, "rejected operations are not added");
}

#[test]
fn jsonl_round_trips_and_names_bad_lines() {
    let rows = vec![
        (1, put("x", "1"), ok_rev(2), 0, 1),
        (2, cas("x", None, "2"), swapped(false), 0, 3),
        (2, cas_rev("x", 2, "3"), Outcome::Unknown, 4, 5),
        (3, range(&["x", "y"]), ranged(&[("x", "1")]), 2, 3),
        (3, del("x"), deleted(true), 4, 6),
        (1, Call::Put { key: Bytes::from_static(&[0, 159]), value: b("v") }, Outcome::Fail, 2, 3),
    ];
    let h = history(rows);
    let text = to_jsonl(&h);
    let back = parse_jsonl(&text).unwrap();
    assert_eq!(back.ops(), h.ops());
    assert!(text.contains(r#"{"hex":"009f"}"#), "{text}");

    let bad = "\n{\"type\":\"invoke\",\"process\":1,\"time\":0,\"call\":{\"op\":\"get\",\"key\":\"x\"}}\n\
               {\"type\":\"ok\",\"process\":1,\"time\":1,\"result\":{\"revision\":3}}\n";
    let err = parse_jsonl(bad).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(matches!(err.kind, ParseErrorKind::BadResult { call: CallKind::Get, .. }), "{err}");
    assert!(err.to_string().starts_with("line 3: "), "{err}");

    let err = parse_jsonl("{\"type\":\"ok\",\"process\":1,\"time\":1}").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::History(HistoryError::NothingOutstanding { .. })));
    let err = parse_jsonl("{\"type\":\"invoke\",\"process\":1,\"time\":0,\"call\":{\"op\":\"get\",\"key\":{\"hex\":\"zz\"}}}").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::InvalidHex { .. }));
    let err = parse_jsonl("{\"type\":\"op\",\"process\":1,\"invoked_at\":0,\"completed_at\":1,\"call\":{\"op\":\"get\",\"key\":\"x\"},\"outcome\":\"ok\",\"result\":{}}").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::MissingValue));
    let err = parse_jsonl("{\"type\":\"op\",\"process\":1,\"invoked_at\":0,\"completed_at\":1,\"call\":{\"op\":\"cas\",\"key\":\"x\",\"expect\":{},\"value\":\"1\"},\"outcome\":\"fail\"}").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::BadExpect));
    let err = parse_jsonl("{\"type\":\"invoke\",\"process\":1,\"time\":0,\"call\":{\"op\":\"get\",\"key\":\"x\",\"typo\":1}}").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::Json(_)), "unknown fields are refused: {err}");
    let err = parse_jsonl("not json").unwrap_err();
    assert_eq!(err.line, 1);
}
