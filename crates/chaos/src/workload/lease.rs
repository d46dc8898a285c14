//! The lease workload: keys on an expired or revoked lease are gone, and
//! never come back.
//!
//! Each worker either (half the time) grants a lease of
//! [`LEASE_TTL_SECONDS`] (the server may raise it to its minimum), puts a
//! fresh key on it, and for a third of them revokes it at once; or reads a
//! key put earlier. Leases are never kept alive, so each expires. After the
//! faults are healed the workload waits for the longest granted TTL plus
//! [`EXPIRY_SLACK`] (plus the largest clock jump under the `clock-back`
//! nemesis, whose backward jumps delay expiry by as much) and reads every
//! key. Checked ([`check`]):
//!
//! * **resurrected**: a read found a key after an earlier read (one that
//!   completed before it was sent) had found it gone;
//! * **revoked-present**: a read sent after a revoke was acknowledged found
//!   the revoked lease's key;
//! * **never-expired**: after the wait, a key is still there.
//!
//! Only keys whose put was acknowledged are judged: a put of unknown
//! outcome may take effect late, while its lease still lives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use rand::seq::IndexedRandom;
use ringkv_api::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest,
};
use serde_json::json;

use super::{
    FINAL_READ_ATTEMPTS, FINAL_READ_RETRY, KEY_PREFIX, WorkloadOutcome, backoff, outcome_of, range,
    range_prefix, record, text,
};
use crate::client::call;
use crate::config::NemesisKind;
use crate::error::ChaosError;
use crate::history::OpOutcome;
use crate::nemesis::CLOCK_JUMP_SECONDS_MAX;
use crate::report::Anomaly;
use crate::run::Ctx;

/// TTL the workload asks for, in seconds.
pub const LEASE_TTL_SECONDS: i64 = 3;

/// Time allowed past the longest TTL, once the cluster has recovered, for
/// the leader to expire every lease (a new leader restarts every lease's
/// TTL, as etcd's does, so the wait starts after recovery).
pub const EXPIRY_SLACK: Duration = Duration::from_secs(5);

/// Keys listed in the record of the final read.
pub const FINAL_KEYS_RECORDED_MAX: usize = 1000;

/// Anomalies listed per kind.
pub const KEYS_SHOWN_MAX: usize = 10;

fn prefix() -> Vec<u8> {
    format!("{KEY_PREFIX}lease/").into_bytes()
}

/// One key put on a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeasedKey {
    /// The lease id.
    pub lease: i64,
    /// The granted TTL, seconds.
    pub ttl: i64,
    /// When the put was acknowledged (ns).
    pub put_at: u64,
    /// When a revoke was acknowledged (ns), if one was.
    pub revoked_at: Option<u64>,
}

/// A read of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// When it was sent (ns).
    pub invoked: u64,
    /// When it was answered (ns).
    pub completed: u64,
    /// Whether the key was there.
    pub present: bool,
}

/// What the workers did.
#[derive(Clone, Debug, Default)]
pub struct Leases {
    /// Keys whose put was acknowledged.
    pub keys: BTreeMap<String, LeasedKey>,
    /// Answered reads, by key.
    pub reads: BTreeMap<String, Vec<Read>>,
}

/// Runs the workload; see the module docs.
///
/// # Errors
/// None: anomalies are reported in the outcome.
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    let leases = Arc::new(Mutex::new(Leases::default()));
    let workers = ctx.args.client_count();
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(Arc::clone(&ctx), w, Arc::clone(&leases))))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            ctx.anomaly(Anomaly::new("harness", format!("a lease worker failed: {e}")));
        }
    }
    ctx.quiesce().await;
    let ttl_max = leases
        .lock()
        .expect("no panic while holding the lock")
        .keys
        .values()
        .map(|k| k.ttl)
        .max()
        .unwrap_or(0);
    // A clock that went back delays every deadline set while it was ahead
    // by as much: the lease's leader counts the TTL on its own clock.
    let clock_back = if ctx.args.nemeses().contains(&NemesisKind::ClockBack) {
        Duration::from_secs(CLOCK_JUMP_SECONDS_MAX.unsigned_abs())
    } else {
        Duration::ZERO
    };
    tokio::time::sleep(
        Duration::from_secs(u64::try_from(ttl_max).unwrap_or(0)) + EXPIRY_SLACK + clock_back,
    )
    .await;
    let mut outcome = WorkloadOutcome::default();
    let remaining = final_read(&ctx, workers).await;
    let leases = leases.lock().expect("no panic while holding the lock").clone();
    if remaining.is_none() {
        outcome
            .anomalies
            .push(Anomaly::new("harness", "the final read never succeeded".to_owned()));
    }
    let mut found = check(&leases, remaining.as_deref());
    if let Some(a) = found.iter_mut().find(|a| a.kind == "lease-never-expired") {
        a.detail.push_str(&ttl_left(&ctx, &leases, remaining.as_deref().unwrap_or_default()).await);
    }
    outcome.anomalies.extend(found);
    let reads: usize = leases.reads.values().map(Vec::len).sum();
    outcome.checked = leases.keys.len() + reads;
    outcome.summary.push(format!(
        "lease: {} keys put on leases ({} revoked), {reads} reads; after the wait {} keys remain",
        leases.keys.len(),
        leases.keys.values().filter(|k| k.revoked_at.is_some()).count(),
        remaining.as_ref().map_or("?".to_owned(), |r| r.len().to_string())
    ));
    Ok(outcome)
}

/// Checks the reads and the keys left; see the module docs. `remaining` is
/// `None` when the final read failed.
pub fn check(leases: &Leases, remaining: Option<&[String]>) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (key, reads) in &leases.reads {
        let Some(k) = leases.keys.get(key) else { continue };
        let mut reads = reads.clone();
        reads.sort_by_key(|r| r.invoked);
        let mut gone_since: Option<u64> = None;
        for r in &reads {
            if r.present {
                if let Some(t) = gone_since.filter(|&t| t < r.invoked) {
                    let mut a = Anomaly::new(
                        "lease-resurrected",
                        format!(
                            "{key} (lease {:x}) was read absent by a read completed at {t} ns, then present by a \
                             read sent at {} ns",
                            k.lease, r.invoked
                        ),
                    );
                    a.at_ns = Some(r.completed);
                    a.window_ns = Some((t, r.completed));
                    out.push(a);
                    break;
                }
                if let Some(revoked) = k.revoked_at.filter(|&t| t < r.invoked) {
                    let mut a = Anomaly::new(
                        "revoked-present",
                        format!(
                            "{key} was read present at {} ns, after the revoke of its lease {:x} was acknowledged \
                             at {revoked} ns",
                            r.invoked, k.lease
                        ),
                    );
                    a.at_ns = Some(r.completed);
                    a.window_ns = Some((revoked, r.completed));
                    out.push(a);
                    break;
                }
            } else if r.invoked > k.put_at {
                gone_since = Some(gone_since.map_or(r.completed, |g| g.min(r.completed)));
            }
        }
    }
    if let Some(remaining) = remaining {
        let stuck: Vec<&String> =
            remaining.iter().filter(|k| leases.keys.contains_key(*k)).collect();
        if !stuck.is_empty() {
            let shown: Vec<String> = stuck
                .iter()
                .take(KEYS_SHOWN_MAX)
                .map(|k| {
                    format!(
                        "{k} (lease {:x}, ttl {} s)",
                        leases.keys[*k].lease, leases.keys[*k].ttl
                    )
                })
                .collect();
            out.push(Anomaly::new(
                "lease-never-expired",
                format!("{} keys outlived their lease: {}", stuck.len(), shown.join(", ")),
            ));
        }
    }
    out
}

async fn worker(ctx: Arc<Ctx>, w: usize, leases: Arc<Mutex<Leases>>) {
    let node = w % ctx.nodes();
    let client = ctx.clients.node(node).clone();
    let mut rng = ctx.rng(w as u64);
    let timeout = ctx.args.op_timeout;
    let mut seq = 0u64;
    while ctx.next_op() {
        let known: Vec<String> = {
            let l = leases.lock().expect("no panic while holding the lock");
            l.keys.keys().rev().take(64).cloned().collect()
        };
        if rng.random_bool(0.5) && !known.is_empty() {
            let key = known.choose(&mut rng).expect("not empty").clone();
            let invoked = ctx.recorder.now_ns();
            let mut kv = client.kv.clone();
            let result = call(timeout, kv.range(range(key.as_bytes()))).await;
            let class = outcome_of(&result);
            let present = result.as_ref().ok().map(|r| !r.kvs.is_empty());
            if let Some(present) = present {
                let completed = ctx.recorder.now_ns();
                leases
                    .lock()
                    .expect("no panic while holding the lock")
                    .reads
                    .entry(key.clone())
                    .or_default()
                    .push(Read { invoked, completed, present });
            }
            record(
                &ctx,
                w,
                node,
                "read",
                invoked,
                class,
                json!({"key": key, "present": present}),
                result.err(),
            );
            backoff(class).await;
            continue;
        }
        seq += 1;
        let key = format!("{}{w}.{seq}", text(&prefix()));
        let invoked = ctx.recorder.now_ns();
        let mut lease = client.lease.clone();
        let granted =
            call(timeout, lease.lease_grant(LeaseGrantRequest { ttl: LEASE_TTL_SECONDS, id: 0 }))
                .await;
        let class = outcome_of(&granted);
        let grant = granted.as_ref().ok().map(|g| (g.id, g.ttl));
        record(
            &ctx,
            w,
            node,
            "grant",
            invoked,
            class,
            json!({"lease": grant.map(|g| g.0), "ttl": grant.map(|g| g.1)}),
            granted.err(),
        );
        let Some((id, ttl)) = grant else {
            backoff(class).await;
            continue;
        };
        let invoked = ctx.recorder.now_ns();
        let mut kv = client.kv.clone();
        let req = PutRequest {
            key: key.clone().into_bytes(),
            value: b"leased".to_vec(),
            lease: id,
            ..PutRequest::default()
        };
        let put = call(timeout, kv.put(req)).await;
        let class = outcome_of(&put);
        if class == OpOutcome::Ok {
            let put_at = ctx.recorder.now_ns();
            leases
                .lock()
                .expect("no panic while holding the lock")
                .keys
                .insert(key.clone(), LeasedKey { lease: id, ttl, put_at, revoked_at: None });
        }
        record(&ctx, w, node, "put", invoked, class, json!({"key": key, "lease": id}), put.err());
        if class != OpOutcome::Ok || !rng.random_bool(1.0 / 3.0) {
            backoff(class).await;
            continue;
        }
        let invoked = ctx.recorder.now_ns();
        let revoked = call(timeout, lease.lease_revoke(LeaseRevokeRequest { id })).await;
        let class = outcome_of(&revoked);
        if class == OpOutcome::Ok {
            let at = ctx.recorder.now_ns();
            if let Some(k) =
                leases.lock().expect("no panic while holding the lock").keys.get_mut(&key)
            {
                k.revoked_at = Some(at);
            }
        }
        record(
            &ctx,
            w,
            node,
            "revoke",
            invoked,
            class,
            json!({"key": key, "lease": id}),
            revoked.err(),
        );
        backoff(class).await;
    }
}

/// What the cluster says of the leases of keys still there: each lease's
/// TTL as node 0 reports it, grouped, and for a few keys whose lease the
/// cluster no longer knows, every node's answer and the lease the key
/// itself names.
async fn ttl_left(ctx: &Ctx, leases: &Leases, remaining: &[String]) -> String {
    let ttl = |node: usize, id: i64| {
        let mut lease = ctx.clients.node(node).lease.clone();
        async move {
            call(
                ctx.args.op_timeout,
                lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true }),
            )
            .await
            .map(|r| (r.ttl, r.granted_ttl, r.keys.len()))
        }
    };
    let mut unknown = Vec::new();
    let mut longer = 0;
    let mut other = 0;
    for key in remaining {
        let Some(l) = leases.keys.get(key) else { continue };
        match ttl(0, l.lease).await {
            Ok((-1, _, _)) => unknown.push((key, l)),
            Ok((left, granted, _)) if left > granted => longer += 1,
            _ => other += 1,
        }
    }
    let mut lines = format!(
        "\nthe cluster's view of those leases (LeaseTimeToLive at n0): {} unknown to the cluster \
         although the key is there; {longer} with more time left than granted (a clock moved \
         back); {other} other",
        unknown.len()
    );
    for (key, l) in unknown.into_iter().take(KEYS_SHOWN_MAX) {
        let mut kv = ctx.clients.node(0).kv.clone();
        let attached = match call(ctx.args.op_timeout, kv.range(range(key.as_bytes()))).await {
            Ok(r) => r
                .kvs
                .first()
                .map_or("absent now".to_owned(), |kv| format!("names lease {:x}", kv.lease)),
            Err(e) => e.to_string(),
        };
        let mut views = Vec::new();
        for node in 0..ctx.nodes() {
            views.push(match ttl(node, l.lease).await {
                Ok((left, granted, keys)) => format!("n{node}: ttl {left}/{granted}, {keys} keys"),
                Err(e) => format!("n{node}: {e}"),
            });
        }
        lines.push_str(&format!(
            "\n  {key} (lease {:x}, put at {:.3} s; the key {attached}): {}",
            l.lease,
            l.put_at as f64 / 1e9,
            views.join("; ")
        ));
    }
    lines
}

/// The keys left under the prefix, read until a read succeeds.
async fn final_read(ctx: &Ctx, workers: usize) -> Option<Vec<String>> {
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let node = attempt % ctx.nodes();
        let mut kv = ctx.clients.node(node).kv.clone();
        let invoked = ctx.recorder.now_ns();
        let result = call(ctx.args.op_timeout, kv.range(range_prefix(&prefix()))).await;
        let class = outcome_of(&result);
        match result {
            Ok(r) => {
                let keys: Vec<String> = r.kvs.iter().map(|kv| text(&kv.key)).collect();
                record(
                    ctx,
                    workers,
                    node,
                    "read",
                    invoked,
                    class,
                    json!({"final": true, "remaining": keys.len(), "keys": keys.iter().take(FINAL_KEYS_RECORDED_MAX).collect::<Vec<_>>()}),
                    None,
                );
                return Some(keys);
            }
            Err(e) => {
                record(ctx, workers, node, "read", invoked, class, json!({"final": true}), Some(e))
            }
        }
        tokio::time::sleep(FINAL_READ_RETRY).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(revoked_at: Option<u64>, reads: &[(u64, u64, bool)]) -> Leases {
        let mut l = Leases::default();
        l.keys.insert("k".into(), LeasedKey { lease: 7, ttl: 3, put_at: 10, revoked_at });
        l.reads.insert(
            "k".into(),
            reads
                .iter()
                .map(|&(invoked, completed, present)| Read { invoked, completed, present })
                .collect(),
        );
        l
    }

    #[test]
    fn present_then_gone_is_fine() {
        assert!(
            check(&leases(None, &[(20, 25, true), (30, 35, false), (40, 45, false)]), Some(&[]))
                .is_empty()
        );
        // Overlapping reads may disagree: the later one may be ordered first.
        assert!(check(&leases(None, &[(30, 50, false), (40, 45, true)]), Some(&[])).is_empty());
    }

    #[test]
    fn finds_resurrection_revoked_keys_and_immortal_keys() {
        let kinds = |l: &Leases, rem: &[String]| -> Vec<String> {
            check(l, Some(rem)).into_iter().map(|a| a.kind).collect()
        };
        assert_eq!(
            kinds(&leases(None, &[(30, 35, false), (40, 45, true)]), &[]),
            ["lease-resurrected"]
        );
        assert_eq!(kinds(&leases(Some(20), &[(30, 35, true)]), &[]), ["revoked-present"]);
        assert_eq!(kinds(&leases(None, &[]), &["k".to_owned()]), ["lease-never-expired"]);
        // A key nobody leased (another workload's) is not judged.
        assert!(kinds(&leases(None, &[]), &["other".to_owned()]).is_empty());
    }
}
