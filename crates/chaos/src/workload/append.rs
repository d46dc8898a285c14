//! The list-append workload: transactions over several keys, checked for
//! dependency cycles by [`crate::elle`] (strict serializability).
//!
//! A transaction has 1 to [`MOPS_MAX`] micro-operations on
//! `max(--keys, APPEND_KEYS_MIN)` keys, each a read of a key's list or an
//! append of a unique value (at most one append per key). A key holds its
//! list as comma-separated text. Executed in two round trips, as an etcd
//! client does optimistic transactions:
//!
//! 1. one read-only `Txn` reads every key involved at one revision;
//! 2. if anything is appended, a `Txn` whose compares require every
//!    involved key's mod revision to be unchanged puts the new lists.
//!    A failed compare aborts the transaction (a definite failure).
//!
//! The reads are those of step 1, which step 2's compares keep valid up to
//! its commit; a read after the same transaction's append of that key sees
//! it. After the faults are healed one transaction reads every key.

use std::sync::{Arc, Mutex};

use rand::RngExt;
use ringkv_api::etcdserverpb::{TxnRequest, response_op};
use serde_json::json;

use super::{
    FINAL_READ_ATTEMPTS, FINAL_READ_RETRY, KEY_PREFIX, WorkloadOutcome, backoff, compare_mod,
    put_op, range_op, record,
};
use crate::client::{ErrorClass, OpError, call};
use crate::elle::{self, Mop, Txn, TxnOutcome};
use crate::error::ChaosError;
use crate::history::OpOutcome;
use crate::report::Anomaly;
use crate::run::Ctx;
use crate::workload::set::parse;

/// Most micro-operations per transaction.
pub const MOPS_MAX: usize = 4;

/// Fewest keys the workload uses (fewer makes nearly every transaction
/// abort on a lost race).
pub const APPEND_KEYS_MIN: usize = 5;

fn key(k: usize) -> Vec<u8> {
    format!("{KEY_PREFIX}append/{k}").into_bytes()
}

/// Transactions and, per transaction, the worker that ran it.
#[derive(Debug, Default)]
struct Shared {
    txns: Vec<Txn>,
    workers: Vec<usize>,
}

/// Runs the workload; see the module docs.
///
/// # Errors
/// None: anomalies are reported in the outcome.
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    let keys = ctx.args.keys.max(APPEND_KEYS_MIN);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let workers = ctx.args.client_count();
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(Arc::clone(&ctx), w, keys, Arc::clone(&shared))))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            ctx.anomaly(Anomaly::new("harness", format!("an append worker failed: {e}")));
        }
    }
    ctx.quiesce().await;
    let mut outcome = WorkloadOutcome::default();
    let mut final_ok = false;
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let mops: Vec<Mop> = (0..keys).map(|key| Mop::Read { key, list: None }).collect();
        let node = attempt % ctx.nodes();
        if execute(&ctx, workers, node, mops, &shared).await == OpOutcome::Ok {
            final_ok = true;
            break;
        }
        tokio::time::sleep(FINAL_READ_RETRY).await;
    }
    if !final_ok {
        outcome
            .anomalies
            .push(Anomaly::new("harness", "the final read never succeeded".to_owned()));
    }
    let shared =
        Arc::into_inner(shared).expect("every worker is done").into_inner().expect("no poison");
    let txns = shared.txns;
    let workers_of = shared.workers;
    let artifact: String =
        txns.iter().map(|t| serde_json::to_string(t).expect("serializes") + "\n").collect();
    outcome.artifacts.push(("txns.jsonl".to_owned(), artifact));
    let (txns, result) = tokio::task::spawn_blocking(move || {
        let r = elle::check(&txns);
        (txns, r)
    })
    .await
    .map_err(|e| ChaosError::Config {
        setting: "elle",
        why: format!("the checker panicked: {e}"),
    })?;
    let count = |o: TxnOutcome| txns.iter().filter(|t| t.outcome == o).count();
    outcome.checked = txns.len();
    outcome.summary.push(format!(
        "append: {} transactions ({} ok, {} aborted or failed, {} unknown) on {keys} keys; {} committed; edges {:?}",
        txns.len(),
        count(TxnOutcome::Ok),
        count(TxnOutcome::Fail),
        count(TxnOutcome::Unknown),
        result.committed,
        result.edges
    ));
    for a in result.anomalies {
        let ops: Vec<(usize, u64)> =
            a.txns.iter().map(|&i| (workers_of[i], txns[i].invoked)).collect();
        let start = a.txns.iter().map(|&i| txns[i].invoked).min();
        let end = a.txns.iter().map(|&i| txns[i].completed.unwrap_or(txns[i].invoked)).max();
        let described: Vec<String> = a
            .txns
            .iter()
            .map(|&i| format!("T{i} = {}", serde_json::to_string(&txns[i]).expect("serializes")))
            .collect();
        outcome.anomalies.push(Anomaly {
            kind: a.kind,
            detail: format!("{}\n{}", a.detail, described.join("\n")),
            at_ns: end,
            window_ns: start.zip(end),
            ops,
        });
    }
    Ok(outcome)
}

async fn worker(ctx: Arc<Ctx>, w: usize, keys: usize, shared: Arc<Mutex<Shared>>) {
    let node = w % ctx.nodes();
    let mut rng = ctx.rng(w as u64);
    let mut seq = 0u64;
    while ctx.next_op() {
        let n = rng.random_range(1..=MOPS_MAX);
        let mut appended = Vec::new();
        let mut mops = Vec::new();
        for _ in 0..n {
            let key = rng.random_range(0..keys);
            if rng.random_bool(0.5) && !appended.contains(&key) {
                seq += 1;
                appended.push(key);
                mops.push(Mop::Append { key, value: (w as u64) * 1_000_000_000 + seq });
            } else {
                mops.push(Mop::Read { key, list: None });
            }
        }
        let class = execute(&ctx, w, node, mops, &shared).await;
        backoff(class).await;
    }
}

/// Runs one transaction (see the module docs), records it, and returns its outcome.
async fn execute(
    ctx: &Ctx,
    w: usize,
    node: usize,
    mut mops: Vec<Mop>,
    shared: &Mutex<Shared>,
) -> OpOutcome {
    let timeout = ctx.args.op_timeout;
    let mut kv = ctx.clients.node(node).kv.clone();
    let mut involved: Vec<usize> = mops
        .iter()
        .map(|m| match m {
            Mop::Append { key, .. } | Mop::Read { key, .. } => *key,
        })
        .collect();
    involved.sort_unstable();
    involved.dedup();
    let invoked = ctx.recorder.now_ns();
    let snapshot = TxnRequest {
        compare: vec![],
        success: involved.iter().map(|&k| range_op(&key(k))).collect(),
        failure: vec![],
    };
    let result: Result<(), OpError> = async {
        // Step 1 writes nothing: any failure of it is a definite one.
        let read = call(timeout, kv.txn(snapshot))
            .await
            .map_err(|e| OpError { class: ErrorClass::Fail, ..e })?;
        let mut lists = Vec::new();
        for (i, r) in read.responses.into_iter().enumerate() {
            let Some(response_op::Response::ResponseRange(range)) = r.response else {
                return Err(OpError {
                    class: ErrorClass::Fail,
                    code: "Malformed".to_owned(),
                    message: format!("response {i} is not a range"),
                });
            };
            let (list, rev) =
                range.kvs.first().map_or((Vec::new(), 0), |kv| (parse(&kv.value), kv.mod_revision));
            lists.push((involved[i], list, rev));
        }
        let list_of =
            |k: usize| lists.iter().find(|l| l.0 == k).map(|l| l.1.clone()).unwrap_or_default();
        let mut own: Vec<(usize, u64)> = Vec::new();
        for m in &mut mops {
            match m {
                Mop::Append { key, value } => own.push((*key, *value)),
                Mop::Read { key, list } => {
                    let mut l = list_of(*key);
                    l.extend(own.iter().filter(|(k, _)| k == key).map(|(_, v)| *v));
                    *list = Some(l);
                }
            }
        }
        if own.is_empty() {
            return Ok(());
        }
        let compare = lists.iter().map(|(k, _, rev)| compare_mod(&key(*k), *rev)).collect();
        let success = own
            .iter()
            .map(|&(k, v)| {
                let mut l = list_of(k);
                l.push(v);
                let text: Vec<String> = l.iter().map(u64::to_string).collect();
                put_op(&key(k), text.join(",").as_bytes())
            })
            .collect();
        let commit =
            call(timeout, kv.txn(TxnRequest { compare, success, failure: vec![] })).await?;
        if commit.succeeded {
            Ok(())
        } else {
            Err(OpError {
                class: ErrorClass::Fail,
                code: "Aborted".to_owned(),
                message: "a key changed since the read".to_owned(),
            })
        }
    }
    .await;
    let completed = ctx.recorder.now_ns();
    let (outcome, class) = match &result {
        Ok(()) => (TxnOutcome::Ok, OpOutcome::Ok),
        Err(e) if e.class == ErrorClass::Fail => (TxnOutcome::Fail, OpOutcome::Fail),
        Err(_) => (TxnOutcome::Unknown, OpOutcome::Unknown),
    };
    if outcome != TxnOutcome::Ok {
        for m in &mut mops {
            if let Mop::Read { list, .. } = m {
                *list = None;
            }
        }
    }
    let value = json!({"mops": mops});
    let txn = Txn {
        mops,
        outcome,
        invoked,
        completed: (outcome != TxnOutcome::Unknown).then_some(completed),
    };
    {
        let mut s = shared.lock().expect("no panic while holding the lock");
        s.txns.push(txn);
        s.workers.push(w);
    }
    record(ctx, w, node, "txn", invoked, class, value, result.err());
    class
}
