//! The set workload: lost updates.
//!
//! Each worker adds unique elements (integers) to one of `--keys` sets. A
//! set is one key holding its elements as comma-separated text; an add
//! reads the key (value and mod revision) and writes the value plus the
//! element in a `Txn` that compares the mod revision, retrying on a lost
//! race (at most [`ADD_ATTEMPTS_MAX`] times). After the faults are healed
//! every set is read. Checked ([`check`]):
//!
//! * **lost**: an element whose add was acknowledged is missing;
//! * **unexpected**: an element that no add ever tried is present;
//! * **duplicated**: an element is present twice (an add applied twice);
//! * **failed-but-present**: an element whose add failed definitely is
//!   present (an error that promised no effect had one).
//!
//! Elements whose add ended unknown may or may not be present; the summary
//! counts how many were.
//!
//! Every check is about one set, which is one key, written by one-key
//! transactions and read back by one-key reads: on a sharded cluster each
//! set lives on one shard and the checks hold as they are. No check
//! compares sets with each other at one instant, so no snapshot across
//! shards is assumed (the final reads of different sets are separate
//! linearizable reads, not one snapshot).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::RngExt;
use ringkv_api::etcdserverpb::TxnRequest;
use serde_json::json;

use super::{
    FINAL_READ_ATTEMPTS, FINAL_READ_RETRY, KEY_PREFIX, WorkloadOutcome, backoff, compare_mod,
    describe_spread, keys_per_shard, outcome_of, put_op, range, record, text,
};
use crate::client::{OpError, call};
use crate::error::ChaosError;
use crate::history::OpOutcome;
use crate::report::Anomaly;
use crate::run::Ctx;

/// Most read-then-CAS rounds of one add before it gives up (a definite
/// failure: the last CAS did not apply).
pub const ADD_ATTEMPTS_MAX: usize = 8;

/// Elements shown per anomaly.
pub const ELEMENTS_SHOWN_MAX: usize = 20;

fn key(k: usize) -> Vec<u8> {
    format!("{KEY_PREFIX}set/{k}").into_bytes()
}

/// What happened to each element's add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adds {
    /// Acknowledged: must be present. Element → (set, completion ns).
    pub ok: BTreeMap<u64, (usize, u64)>,
    /// Definitely failed: must be absent.
    pub failed: BTreeMap<u64, usize>,
    /// Unknown: may be either.
    pub unknown: BTreeMap<u64, usize>,
}

/// Runs the workload; see the module docs.
///
/// # Errors
/// None: anomalies are reported in the outcome.
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    let adds = Arc::new(Mutex::new(Adds::default()));
    let workers = ctx.args.client_count();
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(Arc::clone(&ctx), w, Arc::clone(&adds))))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            ctx.anomaly(Anomaly::new("harness", format!("a set worker failed: {e}")));
        }
    }
    ctx.quiesce().await;
    let adds = adds.lock().expect("no panic while holding the lock").clone();
    let mut outcome = WorkloadOutcome::default();
    let keys: Vec<Vec<u8>> = (0..ctx.args.keys).map(key).collect();
    outcome.keys_per_shard = keys_per_shard(&ctx, keys.iter().map(Vec::as_slice));
    outcome.summary.push(describe_spread(ctx.args.shards, &outcome.keys_per_shard));
    let mut finals = BTreeMap::new();
    for k in 0..ctx.args.keys {
        match final_read(&ctx, workers, k).await {
            Some(elements) => {
                finals.insert(k, elements);
            }
            None => outcome.anomalies.push(Anomaly::new(
                "harness",
                format!("set {k} could not be read after healing ({FINAL_READ_ATTEMPTS} attempts)"),
            )),
        }
    }
    let found = check(&adds, &finals);
    outcome.checked = adds.ok.len() + adds.failed.len() + adds.unknown.len();
    outcome.summary.push(format!(
        "set: {} adds acknowledged, {} failed, {} unknown ({} of them present); final sets hold {} elements",
        adds.ok.len(),
        adds.failed.len(),
        adds.unknown.len(),
        found.unknown_present,
        finals.values().map(Vec::len).sum::<usize>()
    ));
    outcome.anomalies.extend(found.anomalies);
    Ok(outcome)
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct SetCheck {
    /// The anomalies.
    pub anomalies: Vec<Anomaly>,
    /// Unknown adds whose element is present.
    pub unknown_present: usize,
}

/// Checks the final sets against the adds; see the module docs. Sets
/// missing from `finals` (unreadable) are not checked.
pub fn check(adds: &Adds, finals: &BTreeMap<usize, Vec<u64>>) -> SetCheck {
    let mut out = SetCheck::default();
    let mut present: BTreeMap<u64, usize> = BTreeMap::new();
    let mut duplicated = BTreeSet::new();
    for (&set, elements) in finals {
        for &e in elements {
            if present.insert(e, set).is_some() {
                duplicated.insert(e);
            }
        }
    }
    let show = |v: &[u64]| -> String {
        let shown: Vec<String> = v.iter().take(ELEMENTS_SHOWN_MAX).map(u64::to_string).collect();
        let more = v.len().saturating_sub(ELEMENTS_SHOWN_MAX);
        if more > 0 { format!("{} … ({more} more)", shown.join(", ")) } else { shown.join(", ") }
    };
    let lost: Vec<u64> = adds
        .ok
        .iter()
        .filter(|&(e, (set, _))| finals.contains_key(set) && !present.contains_key(e))
        .map(|(&e, _)| e)
        .collect();
    if !lost.is_empty() {
        let first = adds.ok[&lost[0]];
        let mut a = Anomaly::new(
            "lost-write",
            format!(
                "{} acknowledged adds are missing from the final sets: {}",
                lost.len(),
                show(&lost)
            ),
        );
        a.at_ns = Some(first.1);
        out.anomalies.push(a);
    }
    let known = |e: &u64| {
        adds.ok.contains_key(e) || adds.failed.contains_key(e) || adds.unknown.contains_key(e)
    };
    let unexpected: Vec<u64> = present.keys().copied().filter(|e| !known(e)).collect();
    if !unexpected.is_empty() {
        out.anomalies.push(Anomaly::new(
            "unexpected-element",
            format!(
                "{} elements no add tried are present: {}",
                unexpected.len(),
                show(&unexpected)
            ),
        ));
    }
    if !duplicated.is_empty() {
        let d: Vec<u64> = duplicated.into_iter().collect();
        out.anomalies.push(Anomaly::new(
            "duplicated-element",
            format!("{} elements are present twice: {}", d.len(), show(&d)),
        ));
    }
    let failed: Vec<u64> =
        adds.failed.keys().copied().filter(|e| present.contains_key(e)).collect();
    if !failed.is_empty() {
        out.anomalies.push(Anomaly::new(
            "failed-but-present",
            format!(
                "{} elements whose add failed with an error promising no effect are present: {}",
                failed.len(),
                show(&failed)
            ),
        ));
    }
    out.unknown_present = adds.unknown.keys().filter(|e| present.contains_key(e)).count();
    out
}

/// Parses a set's value.
pub fn parse(value: &[u8]) -> Vec<u64> {
    text(value).split(',').filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
}

async fn worker(ctx: Arc<Ctx>, w: usize, adds: Arc<Mutex<Adds>>) {
    let node = w % ctx.nodes();
    let mut kv = ctx.clients.node(node).kv.clone();
    let mut rng = ctx.rng(w as u64);
    let timeout = ctx.args.op_timeout;
    let mut seq = 0u64;
    while ctx.next_op() {
        seq += 1;
        let element = (w as u64) * 1_000_000_000 + seq;
        let k = rng.random_range(0..ctx.args.keys);
        let key = key(k);
        let invoked = ctx.recorder.now_ns();
        let mut result: Result<(), OpError> = Err(OpError {
            class: crate::client::ErrorClass::Fail,
            code: "Aborted".to_owned(),
            message: format!("lost the race {ADD_ATTEMPTS_MAX} times"),
        });
        let mut attempts = 0;
        while attempts < ADD_ATTEMPTS_MAX {
            attempts += 1;
            let read = match call(timeout, kv.range(range(&key))).await {
                Ok(r) => r,
                Err(e) => {
                    // Nothing was written yet: the add has had no effect.
                    result = Err(OpError { class: crate::client::ErrorClass::Fail, ..e });
                    break;
                }
            };
            let (value, rev) =
                read.kvs.first().map_or((Vec::new(), 0), |kv| (kv.value.clone(), kv.mod_revision));
            let mut next = value;
            if !next.is_empty() {
                next.push(b',');
            }
            next.extend_from_slice(element.to_string().as_bytes());
            let txn = TxnRequest {
                compare: vec![compare_mod(&key, rev)],
                success: vec![put_op(&key, &next)],
                failure: vec![],
            };
            match call(timeout, kv.txn(txn)).await {
                Ok(r) if r.succeeded => {
                    result = Ok(());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let class = outcome_of(&result);
        let completed = ctx.recorder.now_ns();
        {
            let mut a = adds.lock().expect("no panic while holding the lock");
            match class {
                OpOutcome::Ok => a.ok.insert(element, (k, completed)).map(drop),
                OpOutcome::Fail => a.failed.insert(element, k).map(drop),
                OpOutcome::Unknown => a.unknown.insert(element, k).map(drop),
            };
        }
        let value = json!({"set": k, "element": element, "attempts": attempts});
        record(&ctx, w, node, "add", invoked, class, value, result.err());
        backoff(class).await;
    }
}

async fn final_read(ctx: &Ctx, workers: usize, k: usize) -> Option<Vec<u64>> {
    let key = key(k);
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let node = (k + attempt) % ctx.nodes();
        let mut kv = ctx.clients.node(node).kv.clone();
        let invoked = ctx.recorder.now_ns();
        let result = call(ctx.args.op_timeout, kv.range(range(&key))).await;
        let class = outcome_of(&result);
        match result {
            Ok(r) => {
                let elements = r.kvs.first().map(|kv| parse(&kv.value)).unwrap_or_default();
                record(
                    ctx,
                    workers,
                    node,
                    "read",
                    invoked,
                    class,
                    json!({"set": k, "final": true, "size": elements.len()}),
                    None,
                );
                return Some(elements);
            }
            Err(e) => record(
                ctx,
                workers,
                node,
                "read",
                invoked,
                class,
                json!({"set": k, "final": true}),
                Some(e),
            ),
        }
        tokio::time::sleep(FINAL_READ_RETRY).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adds(ok: &[u64], failed: &[u64], unknown: &[u64]) -> Adds {
        Adds {
            ok: ok.iter().map(|&e| (e, (0, e))).collect(),
            failed: failed.iter().map(|&e| (e, 0)).collect(),
            unknown: unknown.iter().map(|&e| (e, 0)).collect(),
        }
    }

    #[test]
    fn a_complete_set_is_valid() {
        let finals = BTreeMap::from([(0, vec![1, 2, 3, 9])]);
        let found = check(&adds(&[1, 2, 3], &[4], &[8, 9]), &finals);
        assert!(found.anomalies.is_empty(), "{:?}", found.anomalies);
        assert_eq!(found.unknown_present, 1);
    }

    #[test]
    fn finds_lost_unexpected_duplicated_and_failed_elements() {
        let finals = BTreeMap::from([(0, vec![1, 3, 3, 4, 77])]);
        let found = check(&adds(&[1, 2, 3], &[4], &[]), &finals);
        let kinds: Vec<&str> = found.anomalies.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["lost-write", "unexpected-element", "duplicated-element", "failed-but-present"]
        );
        assert!(found.anomalies[0].detail.contains(": 2"), "{}", found.anomalies[0].detail);
        assert_eq!(found.anomalies[0].at_ns, Some(2));
    }

    #[test]
    fn an_unread_set_is_not_judged() {
        let found = check(&adds(&[1], &[], &[]), &BTreeMap::new());
        assert!(found.anomalies.is_empty());
    }

    #[test]
    fn parses_values() {
        assert_eq!(parse(b""), Vec::<u64>::new());
        assert_eq!(parse(b"1,22,333"), vec![1, 22, 333]);
    }
}
