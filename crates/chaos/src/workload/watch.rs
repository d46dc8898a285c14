//! The watch workload: every watcher sees the same revisions, in order,
//! none missing, none repeated, across reconnects.
//!
//! Writers put unique values to `--keys` keys under one prefix. One watcher
//! per node watches the prefix from the revision after the store's revision
//! at the start; when its stream breaks (a killed node, a closed
//! connection, a cancel) it reconnects, to the next node after a failure,
//! resuming at the revision after the last event it saw. After the faults
//! are healed one final put is made, and every watcher must reach its
//! revision. Checked ([`check`]), with `R0` the starting revision and `Rf`
//! the final put's:
//!
//! * **order**: each watcher's revisions strictly increase (no duplicate,
//!   no reordering);
//! * **divergent**: two watchers report different keys or values for one
//!   revision;
//! * **missing**: a watcher skipped a revision another watcher saw;
//! * **gap**: a revision in `R0+1..=Rf` that no watcher saw (only this
//!   workload writes, one key per revision, so the revisions are dense;
//!   not checked when the disk nemesis wrote too);
//! * **lost-ack**: an acknowledged put's revision was not seen with its
//!   key and value;
//! * **phantom**: an event carries a value no writer wrote;
//! * **stalled**: a watcher did not reach `Rf` within [`CATCH_UP_TIMEOUT`].
//!
//! A server without the Watch service (`UNIMPLEMENTED`) makes the workload
//! report "skipped: watch unimplemented", never a pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rand::RngExt;
use ringkv_api::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, watch_request};
use serde_json::json;

use super::{
    FINAL_READ_ATTEMPTS, FINAL_READ_RETRY, KEY_PREFIX, WorkloadOutcome, backoff, outcome_of,
    prefix_end, range, record, text,
};
use crate::client::{ErrorClass, NodeClient, OpError, call, classify};
use crate::error::ChaosError;
use crate::history::OpOutcome;
use crate::report::Anomaly;
use crate::run::Ctx;

/// How long watchers may take to see the final put once it is acknowledged.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the probe waits for the server to confirm a watch.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before a watcher reconnects.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Revisions listed per anomaly.
pub const REVISIONS_SHOWN_MAX: usize = 20;

/// One event as a watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The event's revision (the key's mod revision).
    pub revision: i64,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

fn prefix() -> Vec<u8> {
    format!("{KEY_PREFIX}watch/").into_bytes()
}

fn key(k: usize) -> Vec<u8> {
    let mut key = prefix();
    key.extend_from_slice(k.to_string().as_bytes());
    key
}

/// Runs the workload; see the module docs.
///
/// # Errors
/// None: anomalies are reported in the outcome.
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    let mut outcome = WorkloadOutcome::default();
    let start_rev = match start_revision(&ctx).await {
        Ok(r) => r,
        Err(e) => {
            ctx.quiesce().await;
            outcome
                .anomalies
                .push(Anomaly::new("harness", format!("cannot read the starting revision: {e}")));
            return Ok(outcome);
        }
    };
    match probe(ctx.clients.node(0), start_rev + 1).await {
        Ok(()) => {}
        Err(e) if e.is_unimplemented() => {
            ctx.quiesce().await;
            outcome.skipped = Some(format!("watch unimplemented: the server answered {e}"));
            return Ok(outcome);
        }
        Err(e) => {
            ctx.quiesce().await;
            outcome.anomalies.push(Anomaly::new("harness", format!("the probe watch failed: {e}")));
            return Ok(outcome);
        }
    }

    let done = Arc::new(AtomicBool::new(false));
    let target = Arc::new(Mutex::new(i64::MAX));
    let watchers: Vec<_> = (0..ctx.nodes())
        .map(|j| {
            tokio::spawn(watcher(
                Arc::clone(&ctx),
                j,
                start_rev + 1,
                Arc::clone(&done),
                Arc::clone(&target),
            ))
        })
        .collect();
    let writes = Arc::new(Mutex::new(Writes::default()));
    let workers = ctx.args.client_count();
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(writer(Arc::clone(&ctx), w, Arc::clone(&writes))))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            ctx.anomaly(Anomaly::new("harness", format!("a watch writer failed: {e}")));
        }
    }
    ctx.quiesce().await;
    let final_rev = final_put(&ctx, workers, &writes).await;
    match final_rev {
        Some(r) => *target.lock().expect("no panic while holding the lock") = r,
        None => {
            outcome
                .anomalies
                .push(Anomaly::new("harness", "the final put never succeeded".to_owned()));
            done.store(true, Ordering::Relaxed);
        }
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    for (j, w) in watchers.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w).await {
            Ok(Ok(events)) => seen.push(events),
            Ok(Err(e)) => {
                outcome.anomalies.push(Anomaly::new("harness", format!("watcher {j} failed: {e}")));
                seen.push(Vec::new());
            }
            Err(_) => {
                done.store(true, Ordering::Relaxed);
                outcome.anomalies.push(Anomaly::new(
                    "stalled",
                    format!("watcher {j} did not reach the final revision {final_rev:?} within {CATCH_UP_TIMEOUT:?}"),
                ));
                seen.push(Vec::new());
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut writes = writes.lock().expect("no panic while holding the lock").clone();
    writes.foreign = ctx.foreign_writes() > 0;
    if let Some(final_rev) = final_rev {
        let stalled: HashSet<usize> = seen
            .iter()
            .enumerate()
            .filter(|(_, s)| s.last().is_none_or(|e| e.revision < final_rev))
            .map(|(j, _)| j)
            .collect();
        for &j in &stalled {
            if !outcome
                .anomalies
                .iter()
                .any(|a| a.kind == "stalled" && a.detail.starts_with(&format!("watcher {j} ")))
            {
                outcome.anomalies.push(Anomaly::new(
                    "stalled",
                    format!("watcher {j} stopped before the final revision {final_rev}"),
                ));
            }
        }
        outcome.anomalies.extend(check(&seen, &writes, start_rev, final_rev));
        outcome.checked = seen.iter().map(Vec::len).sum::<usize>() + writes.acked.len();
        outcome.summary.push(format!(
            "watch: {} watchers, revisions {}..={final_rev}, {} events seen in all, {} puts acknowledged, {} unknown",
            seen.len(),
            start_rev + 1,
            outcome.checked - writes.acked.len(),
            writes.acked.len(),
            writes.unknown
        ));
    }
    Ok(outcome)
}

/// What the writers did.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    /// Acknowledged puts: revision → (key, value).
    pub acked: BTreeMap<i64, (String, String)>,
    /// Every value any put tried, by key.
    pub tried: HashMap<String, HashSet<String>>,
    /// Puts of unknown outcome.
    pub unknown: usize,
    /// Whether something else (the disk nemesis) wrote too: revisions are
    /// then not all this workload's, and the gap check is off.
    pub foreign: bool,
}

/// Checks what the watchers saw; see the module docs.
pub fn check(seen: &[Vec<Seen>], writes: &Writes, start_rev: i64, final_rev: i64) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let show = |revs: &[i64]| -> String {
        let shown: Vec<String> =
            revs.iter().take(REVISIONS_SHOWN_MAX).map(i64::to_string).collect();
        let more = revs.len().saturating_sub(REVISIONS_SHOWN_MAX);
        if more > 0 { format!("{} … ({more} more)", shown.join(", ")) } else { shown.join(", ") }
    };
    let mut union: BTreeMap<i64, &Seen> = BTreeMap::new();
    for (j, events) in seen.iter().enumerate() {
        let bad: Vec<i64> = events
            .windows(2)
            .filter(|p| p[1].revision <= p[0].revision)
            .map(|p| p[1].revision)
            .collect();
        if !bad.is_empty() {
            out.push(Anomaly::new(
                "watch-order",
                format!("watcher {j} saw revisions out of order or twice: {}", show(&bad)),
            ));
        }
        for e in events.iter().filter(|e| e.revision <= final_rev) {
            match union.get(&e.revision) {
                Some(other) if (&other.key, &other.value) != (&e.key, &e.value) => {
                    out.push(Anomaly::new(
                        "watch-divergent",
                        format!(
                            "revision {}: watcher {j} saw {}={}, another watcher {}={}",
                            e.revision, e.key, e.value, other.key, other.value
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    union.insert(e.revision, e);
                }
            }
        }
    }
    for (j, events) in seen.iter().enumerate() {
        let mine: HashSet<i64> = events.iter().map(|e| e.revision).collect();
        let reached = events.last().map_or(start_rev, |e| e.revision);
        let missing: Vec<i64> =
            union.keys().copied().filter(|r| *r <= reached && !mine.contains(r)).collect();
        if !missing.is_empty() {
            out.push(Anomaly::new(
                "watch-missing",
                format!("watcher {j} skipped revisions other watchers saw: {}", show(&missing)),
            ));
        }
    }
    let gaps: Vec<i64> = (start_rev + 1..=final_rev).filter(|r| !union.contains_key(r)).collect();
    if !gaps.is_empty() && !writes.foreign {
        out.push(Anomaly::new("watch-gap", format!("no watcher saw revisions {}", show(&gaps))));
    }
    let lost: Vec<i64> = writes
        .acked
        .iter()
        .filter(|&(r, kv)| union.get(r).is_none_or(|e| (&e.key, &e.value) != (&kv.0, &kv.1)))
        .map(|(&r, _)| r)
        .collect();
    if !lost.is_empty() {
        out.push(Anomaly::new(
            "lost-ack",
            format!("acknowledged puts not seen by any watcher with their key and value, at revisions {}", show(&lost)),
        ));
    }
    let phantom: Vec<i64> = union
        .values()
        .filter(|e| !writes.tried.get(&e.key).is_some_and(|v| v.contains(&e.value)))
        .map(|e| e.revision)
        .collect();
    if !phantom.is_empty() {
        out.push(Anomaly::new(
            "watch-phantom",
            format!("events carry values no writer wrote, at revisions {}", show(&phantom)),
        ));
    }
    out
}

async fn start_revision(ctx: &Ctx) -> Result<i64, OpError> {
    let mut last = OpError::timeout(ctx.args.op_timeout);
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let mut kv = ctx.clients.node(attempt % ctx.nodes()).kv.clone();
        match call(ctx.args.op_timeout, kv.range(range(&key(0)))).await {
            Ok(r) => return Ok(r.header.map_or(0, |h| h.revision)),
            Err(e) => last = e,
        }
        tokio::time::sleep(FINAL_READ_RETRY).await;
    }
    Err(last)
}

fn create(from: i64) -> WatchRequest {
    let p = prefix();
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            range_end: prefix_end(&p),
            key: p,
            start_revision: from,
            ..WatchCreateRequest::default()
        })),
    }
}

/// Opens a watch and waits for the server to confirm it.
async fn probe(client: &NodeClient, from: i64) -> Result<(), OpError> {
    let mut w = client.watch.clone();
    let requests =
        futures_util::stream::iter([create(from)]).chain(futures_util::stream::pending());
    let mut stream = call(PROBE_TIMEOUT, w.watch(requests)).await?;
    match tokio::time::timeout(PROBE_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(r))) if r.created => Ok(()),
        Ok(Ok(Some(r))) => Err(OpError {
            class: ErrorClass::Fail,
            code: "NotCreated".to_owned(),
            message: format!("the first watch response is not a creation: {r:?}"),
        }),
        Ok(Ok(None)) => Err(OpError {
            class: ErrorClass::Fail,
            code: "Closed".to_owned(),
            message: "the watch stream ended at once".to_owned(),
        }),
        Ok(Err(status)) => Err(classify(&status)),
        Err(_) => Err(OpError::timeout(PROBE_TIMEOUT)),
    }
}

/// One watcher: watches until it has seen the target revision (or `done`),
/// reconnecting as needed; returns the events in the order received.
async fn watcher(
    ctx: Arc<Ctx>,
    j: usize,
    from: i64,
    done: Arc<AtomicBool>,
    target: Arc<Mutex<i64>>,
) -> Vec<Seen> {
    let mut events: Vec<Seen> = Vec::new();
    let mut node = j;
    let worker = ctx.args.client_count() + 1 + j;
    let reached = |events: &[Seen]| {
        let t = *target.lock().expect("no panic while holding the lock");
        events.last().is_some_and(|e| e.revision >= t)
    };
    while !done.load(Ordering::Relaxed) && !reached(&events) {
        let resume = events.last().map_or(from, |e| e.revision + 1);
        let invoked = ctx.recorder.now_ns();
        let mut w = ctx.clients.node(node).watch.clone();
        let requests =
            futures_util::stream::iter([create(resume)]).chain(futures_util::stream::pending());
        let before = events.len();
        let ended: Result<String, OpError> =
            match call(ctx.args.op_timeout, w.watch(requests)).await {
                Err(e) => Err(e),
                Ok(mut stream) => loop {
                    if done.load(Ordering::Relaxed) || reached(&events) {
                        break Ok("done".to_owned());
                    }
                    match tokio::time::timeout(RECONNECT_PAUSE * 5, stream.message()).await {
                        Err(_) => continue,
                        Ok(Ok(Some(r))) => {
                            if r.canceled {
                                break Ok(format!(
                                    "canceled: {} (compact revision {})",
                                    r.cancel_reason, r.compact_revision
                                ));
                            }
                            for ev in r.events {
                                if let Some(kv) = ev.kv {
                                    events.push(Seen {
                                        revision: kv.mod_revision,
                                        key: text(&kv.key),
                                        value: text(&kv.value),
                                    });
                                }
                            }
                        }
                        Ok(Ok(None)) => break Ok("stream ended".to_owned()),
                        Ok(Err(status)) => break Err(classify(&status)),
                    }
                },
            };
        let session = json!({"watcher": j, "from": resume, "events": events.len() - before});
        match ended {
            Ok(why) => {
                let mut s = session;
                s["ended"] = json!(why);
                record(&ctx, worker, node, "watch", invoked, OpOutcome::Ok, s, None);
            }
            Err(e) => {
                record(&ctx, worker, node, "watch", invoked, OpOutcome::Unknown, session, Some(e));
                node = (node + 1) % ctx.nodes();
            }
        }
        if !done.load(Ordering::Relaxed) && !reached(&events) {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    events
}

async fn writer(ctx: Arc<Ctx>, w: usize, writes: Arc<Mutex<Writes>>) {
    let node = w % ctx.nodes();
    let mut kv = ctx.clients.node(node).kv.clone();
    let mut rng = ctx.rng(w as u64);
    let mut seq = 0u64;
    while ctx.next_op() {
        seq += 1;
        let k = rng.random_range(0..ctx.args.keys);
        let key = key(k);
        let value = format!("{w}.{seq}");
        writes
            .lock()
            .expect("no panic while holding the lock")
            .tried
            .entry(text(&key))
            .or_default()
            .insert(value.clone());
        let invoked = ctx.recorder.now_ns();
        let req = PutRequest {
            key: key.clone(),
            value: value.clone().into_bytes(),
            ..PutRequest::default()
        };
        let result = call(ctx.args.op_timeout, kv.put(req)).await;
        let class = outcome_of(&result);
        let rev = result.as_ref().ok().and_then(|r| r.header.as_ref()).map(|h| h.revision);
        {
            let mut wr = writes.lock().expect("no panic while holding the lock");
            match (class, rev) {
                (OpOutcome::Ok, Some(r)) => {
                    wr.acked.insert(r, (text(&key), value.clone()));
                }
                (OpOutcome::Unknown, _) => wr.unknown += 1,
                _ => {}
            }
        }
        record(
            &ctx,
            w,
            node,
            "put",
            invoked,
            class,
            json!({"key": text(&key), "value": value, "revision": rev}),
            result.err(),
        );
        backoff(class).await;
    }
}

/// The final put, retried until acknowledged; its revision.
async fn final_put(ctx: &Ctx, workers: usize, writes: &Mutex<Writes>) -> Option<i64> {
    let key = key(0);
    let value = "final".to_owned();
    writes
        .lock()
        .expect("no panic while holding the lock")
        .tried
        .entry(text(&key))
        .or_default()
        .insert(value.clone());
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let node = attempt % ctx.nodes();
        let mut kv = ctx.clients.node(node).kv.clone();
        let invoked = ctx.recorder.now_ns();
        let req = PutRequest {
            key: key.clone(),
            value: value.clone().into_bytes(),
            ..PutRequest::default()
        };
        let result = call(ctx.args.op_timeout, kv.put(req)).await;
        let class = outcome_of(&result);
        let rev = result.as_ref().ok().and_then(|r| r.header.as_ref()).map(|h| h.revision);
        record(
            ctx,
            workers,
            node,
            "put",
            invoked,
            class,
            json!({"key": text(&key), "value": value, "revision": rev, "final": true}),
            result.err(),
        );
        if let Some(r) = rev {
            writes
                .lock()
                .expect("no panic while holding the lock")
                .acked
                .insert(r, (text(&key), value));
            return Some(r);
        }
        tokio::time::sleep(FINAL_READ_RETRY).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: i64, value: &str) -> Seen {
        Seen { revision, key: "k".into(), value: value.into() }
    }

    fn writes(acked: &[(i64, &str)]) -> Writes {
        let mut w = Writes::default();
        for &(r, v) in acked {
            w.acked.insert(r, ("k".into(), v.into()));
            w.tried.entry("k".into()).or_default().insert(v.into());
        }
        w
    }

    #[test]
    fn identical_complete_watchers_pass() {
        let all = vec![ev(11, "a"), ev(12, "b"), ev(13, "c")];
        // The put of "b" ended unknown: tried, not acknowledged.
        let mut w = writes(&[(11, "a"), (13, "c")]);
        w.tried.entry("k".into()).or_default().insert("b".into());
        let found = check(&[all.clone(), all], &w, 10, 13);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn finds_each_kind_of_anomaly() {
        let w = writes(&[(11, "a"), (12, "b"), (13, "c"), (14, "d")]);
        let kinds = |seen: &[Vec<Seen>]| -> Vec<String> {
            check(seen, &w, 10, 14).into_iter().map(|a| a.kind).collect()
        };
        let good = vec![ev(11, "a"), ev(12, "b"), ev(13, "c"), ev(14, "d")];
        assert_eq!(
            kinds(&[
                good.clone(),
                vec![ev(11, "a"), ev(12, "b"), ev(12, "b"), ev(13, "c"), ev(14, "d")]
            ]),
            ["watch-order"]
        );
        assert_eq!(
            kinds(&[good.clone(), vec![ev(11, "a"), ev(13, "c"), ev(14, "d")]]),
            ["watch-missing"]
        );
        assert_eq!(
            kinds(&[good.clone(), vec![ev(11, "a"), ev(12, "x"), ev(13, "c"), ev(14, "d")]]),
            ["watch-divergent"]
        );
        let no13 = vec![ev(11, "a"), ev(12, "b"), ev(14, "d")];
        assert_eq!(kinds(&[no13.clone(), no13]), ["watch-gap", "lost-ack"]);
        let phantom = vec![ev(11, "a"), ev(12, "b"), ev(13, "c"), ev(14, "d"), ev(15, "zz")];
        let found: Vec<String> =
            check(&[phantom.clone(), phantom], &w, 10, 15).into_iter().map(|a| a.kind).collect();
        assert_eq!(found, ["watch-phantom"]);
    }
}
