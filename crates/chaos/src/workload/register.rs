//! The register workload: reads, writes and compare-and-sets on a few keys,
//! checked for linearizability by `ringkv-lincheck`.
//!
//! Each worker picks a key and does a linearizable read (50 %), a write of
//! a value unique to the run (25 %) or a compare-and-set (25 %): a one-key
//! `Txn` comparing the value the worker last saw (or, half the time, the
//! mod revision it last saw; 0 when it saw the key absent) and putting a
//! new unique value. Revisions are recorded (a put's and a CAS's header
//! revision, a read's `mod_revision`) and lincheck checks them too.
//!
//! A process of the history runs one operation at a time; after an
//! operation of unknown outcome the worker continues as a new process (the
//! old one may still be "in flight" forever), as in Jepsen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rand::RngExt;
use ringkv_api::etcdserverpb::{PutRequest, TxnRequest};
use ringkv_lincheck::{
    Call, CheckResult, Compare, Found, History, OpId, Options, Outcome, ProcessId, Ret, Revision,
    Timestamp,
};
use serde_json::json;

use super::{
    FINAL_READ_ATTEMPTS, FINAL_READ_RETRY, KEY_PREFIX, WorkloadOutcome, backoff, compare_mod,
    compare_value, describe_spread, keys_per_shard, outcome_of, put_op, range, record, text,
};
use crate::client::{OpError, call};
use crate::error::ChaosError;
use crate::history::OpOutcome;
use crate::report::Anomaly;
use crate::run::Ctx;

/// The history and, for each of its operations, the worker that issued it.
#[derive(Debug, Default)]
struct Shared {
    history: History,
    workers: Vec<usize>,
}

/// Key `k` of the run.
fn key(k: usize) -> Bytes {
    Bytes::from(format!("{KEY_PREFIX}register/{k}"))
}

/// Runs the workload; see the module docs.
///
/// # Errors
/// None yet: anomalies are reported in the outcome.
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let workers = ctx.args.client_count();
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(Arc::clone(&ctx), w, Arc::clone(&shared))))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            ctx.anomaly(Anomaly::new("harness", format!("a register worker failed: {e}")));
        }
    }
    ctx.quiesce().await;
    final_reads(&ctx, &shared, workers).await;

    let shared =
        Arc::into_inner(shared).expect("every worker is done").into_inner().expect("no poison");
    let history = shared.history;
    let mut outcome = WorkloadOutcome {
        checked: history.len(),
        artifacts: vec![("history.jsonl".to_owned(), ringkv_lincheck::to_jsonl(&history))],
        ..WorkloadOutcome::default()
    };
    let ok = history.ops().iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count();
    let keys: Vec<Bytes> = (0..ctx.args.keys).map(key).collect();
    outcome.keys_per_shard = keys_per_shard(&ctx, keys.iter().map(|k| &k[..]));
    outcome.summary.push(describe_spread(ctx.args.shards, &outcome.keys_per_shard));
    let (history, result) = tokio::task::spawn_blocking(move || {
        let result = ringkv_lincheck::check(&history, &Options::default());
        (history, result)
    })
    .await
    .map_err(|e| ChaosError::Config {
        setting: "lincheck",
        why: format!("the checker panicked: {e}"),
    })?;
    outcome.summary.push(format!(
        "register: {} operations in the history ({ok} ok), {} keys, lincheck: {}",
        history.len(),
        ctx.args.keys,
        match &result {
            CheckResult::Linearizable => "linearizable".to_owned(),
            CheckResult::NotLinearizable(_) => "NOT linearizable".to_owned(),
            CheckResult::Undecided(u) => u.to_string(),
        }
    ));
    match result {
        CheckResult::Linearizable => {}
        CheckResult::Undecided(u) => outcome.undecided = Some(u.to_string()),
        CheckResult::NotLinearizable(cx) => {
            let ids: Vec<OpId> = cx.operations.keys().copied().collect();
            let mut window = (u64::MAX, 0);
            let mut ops = Vec::new();
            for id in &ids {
                if let Some(op) = history.get(*id) {
                    ops.push((shared.workers[id.0], op.invoked_at.0));
                    // Operations of unknown outcome may stretch far: the
                    // picture frames the answered ones.
                    if let (Outcome::Ok(_), Some(done)) = (&op.outcome, op.completed_at) {
                        window.0 = window.0.min(op.invoked_at.0);
                        window.1 = window.1.max(done.0);
                    }
                }
            }
            let blocked = cx.unplaced.iter().find(|u| u.blocked).or(cx.unplaced.first());
            let at =
                blocked.and_then(|u| history.get(u.op)).and_then(|op| op.completed_at).map(|t| t.0);
            outcome.artifacts.push(("lincheck.txt".to_owned(), cx.to_string()));
            outcome.artifacts.push(("lincheck.svg".to_owned(), cx.svg()));
            outcome.anomalies.push(Anomaly {
                kind: "not-linearizable".to_owned(),
                detail: cx.to_string(),
                at_ns: at,
                window_ns: (window.0 <= window.1).then_some(window),
                ops,
            });
        }
    }
    Ok(outcome)
}

/// One client worker: see the module docs.
async fn worker(ctx: Arc<Ctx>, w: usize, shared: Arc<Mutex<Shared>>) {
    let node = w % ctx.nodes();
    let mut kv = ctx.clients.node(node).kv.clone();
    let mut rng = ctx.rng(w as u64);
    let workers = ctx.args.client_count() as u64;
    let timeout = ctx.args.op_timeout;
    let mut process = w as u64;
    let mut seq = 0u64;
    // What this worker last saw of each key: value (None: absent) and mod revision.
    let mut seen: HashMap<usize, (Option<Bytes>, i64)> = HashMap::new();
    while ctx.next_op() {
        let k = rng.random_range(0..ctx.args.keys);
        let key = key(k);
        let roll = rng.random_range(0..100);
        seq += 1;
        let value = Bytes::from(format!("{w}.{seq}"));
        let (f, lincheck_call) = if roll < 50 {
            ("read", Call::Get { key: key.clone() })
        } else if roll < 75 {
            ("write", Call::Put { key: key.clone(), value: value.clone() })
        } else {
            let compare = match seen.get(&k) {
                Some((Some(v), _)) if rng.random_bool(0.5) => Compare::Value(Some(v.clone())),
                Some((_, rev)) => Compare::ModRevision(Revision(u64::try_from(*rev).unwrap_or(0))),
                None => Compare::ModRevision(Revision(0)),
            };
            ("cas", Call::CompareAndSet { key: key.clone(), compare, value: value.clone() })
        };
        let invoked = ctx.recorder.now_ns();
        {
            let mut s = shared.lock().expect("no panic while holding the lock");
            s.history
                .invoke(ProcessId(process), lincheck_call.clone(), Timestamp(invoked))
                .expect("a worker's process runs one operation at a time, in time order");
            s.workers.push(w);
        }
        let result: Result<Ret, OpError> = match &lincheck_call {
            Call::Get { .. } => {
                let mut req = range(&key);
                req.serializable = ctx.args.serializable_reads;
                call(timeout, kv.range(req)).await.map(|r| {
                    Ret::Get(r.kvs.first().map(|kv| Found {
                        value: Bytes::from(kv.value.clone()),
                        mod_revision: revision(kv.mod_revision),
                    }))
                })
            }
            Call::Put { .. } => {
                let req = PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..PutRequest::default()
                };
                call(timeout, kv.put(req))
                    .await
                    .map(|r| Ret::Put { revision: r.header.and_then(|h| revision(h.revision)) })
            }
            Call::CompareAndSet { compare, .. } => {
                let cmp = match compare {
                    Compare::Value(Some(v)) => compare_value(&key, v),
                    Compare::Value(None) => compare_mod(&key, 0),
                    Compare::ModRevision(r) => {
                        compare_mod(&key, i64::try_from(r.0).unwrap_or(i64::MAX))
                    }
                };
                let req = TxnRequest {
                    compare: vec![cmp],
                    success: vec![put_op(&key, &value)],
                    failure: vec![],
                };
                call(timeout, kv.txn(req)).await.map(|r| Ret::CompareAndSet {
                    succeeded: r.succeeded,
                    revision: r.header.and_then(|h| revision(h.revision)),
                })
            }
            Call::Delete { .. } | Call::Range { .. } => {
                unreachable!("the register workload issues neither")
            }
        };
        let completed = ctx.recorder.now_ns();
        let class = outcome_of(&result);
        let (lincheck_outcome, answer, error) = match result {
            Ok(ret) => {
                remember(&mut seen, k, &lincheck_call, &ret);
                let answer = describe(&ret);
                (Outcome::Ok(ret), answer, None)
            }
            Err(e) if class == OpOutcome::Fail => (Outcome::Fail, serde_json::Value::Null, Some(e)),
            Err(e) => (Outcome::Unknown, serde_json::Value::Null, Some(e)),
        };
        shared
            .lock()
            .expect("no panic while holding the lock")
            .history
            .complete(ProcessId(process), lincheck_outcome, Timestamp(completed))
            .expect("the operation was invoked by this process");
        if class == OpOutcome::Unknown {
            process += workers;
        }
        let call_json = json!({
            "key": text(&key),
            "value": (f != "read").then(|| text(&value)),
            "compare": match &lincheck_call {
                Call::CompareAndSet { compare: Compare::Value(v), .. } => json!({"value": v.as_deref().map(text)}),
                Call::CompareAndSet { compare: Compare::ModRevision(r), .. } => json!({"mod_revision": r.0}),
                _ => serde_json::Value::Null,
            },
            "answer": answer,
        });
        record(&ctx, w, node, f, invoked, class, call_json, error);
        backoff(class).await;
    }
}

fn revision(r: i64) -> Option<Revision> {
    u64::try_from(r).ok().filter(|&r| r > 0).map(Revision)
}

fn remember(seen: &mut HashMap<usize, (Option<Bytes>, i64)>, k: usize, call: &Call, ret: &Ret) {
    let rev = |r: &Option<Revision>| r.map_or(0, |r| i64::try_from(r.0).unwrap_or(0));
    match (call, ret) {
        (_, Ret::Get(found)) => {
            let entry = match found {
                Some(f) => (Some(f.value.clone()), rev(&f.mod_revision)),
                None => (None, 0),
            };
            seen.insert(k, entry);
        }
        (Call::Put { value, .. }, Ret::Put { revision }) => {
            seen.insert(k, (Some(value.clone()), rev(revision)));
        }
        (Call::CompareAndSet { value, .. }, Ret::CompareAndSet { succeeded: true, revision }) => {
            seen.insert(k, (Some(value.clone()), rev(revision)));
        }
        _ => {}
    }
}

fn describe(ret: &Ret) -> serde_json::Value {
    match ret {
        Ret::Get(None) => json!({"value": null}),
        Ret::Get(Some(f)) => {
            json!({"value": text(&f.value), "mod_revision": f.mod_revision.map(|r| r.0)})
        }
        Ret::Put { revision } => json!({"revision": revision.map(|r| r.0)}),
        Ret::CompareAndSet { succeeded, revision } => {
            json!({"succeeded": succeeded, "revision": revision.map(|r| r.0)})
        }
        other => json!(format!("{other:?}")),
    }
}

/// After the faults are healed, reads every key until one read of each
/// succeeds, so the history ends with the final state.
async fn final_reads(ctx: &Arc<Ctx>, shared: &Arc<Mutex<Shared>>, workers: usize) {
    let w = workers; // the final reader is one more worker
    let timeout = ctx.args.op_timeout;
    let mut process = (w as u64) * 1_000_000;
    for k in 0..ctx.args.keys {
        let key = key(k);
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let node = (k + attempt) % ctx.nodes();
            let mut kv = ctx.clients.node(node).kv.clone();
            let invoked = ctx.recorder.now_ns();
            {
                let mut s = shared.lock().expect("no panic while holding the lock");
                s.history
                    .invoke(ProcessId(process), Call::Get { key: key.clone() }, Timestamp(invoked))
                    .expect("the final reader runs one read at a time");
                s.workers.push(w);
            }
            let result = call(timeout, kv.range(range(&key))).await;
            let class = outcome_of(&result);
            let (o, answer, error) = match result {
                Ok(r) => {
                    let found = r.kvs.first().map(|kv| Found {
                        value: Bytes::from(kv.value.clone()),
                        mod_revision: revision(kv.mod_revision),
                    });
                    let ret = Ret::Get(found);
                    let answer = describe(&ret);
                    (Outcome::Ok(ret), answer, None)
                }
                Err(e) if class == OpOutcome::Fail => {
                    (Outcome::Fail, serde_json::Value::Null, Some(e))
                }
                Err(e) => (Outcome::Unknown, serde_json::Value::Null, Some(e)),
            };
            shared
                .lock()
                .expect("no panic while holding the lock")
                .history
                .complete(ProcessId(process), o, Timestamp(ctx.recorder.now_ns()))
                .expect("invoked above");
            process += 1;
            record(
                ctx,
                w,
                node,
                "read",
                invoked,
                class,
                json!({"key": text(&key), "final": true, "answer": answer}),
                error,
            );
            if class == OpOutcome::Ok {
                break;
            }
            tokio::time::sleep(FINAL_READ_RETRY).await;
        }
    }
}
