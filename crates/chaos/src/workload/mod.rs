//! The workloads: what the clients do and how their history is checked.
//!
//! Each workload runs its workers until the clients' phase ends (time or
//! operation limit), then calls [`Ctx::quiesce`] (faults healed, a leader
//! agreed), makes its final reads, and checks. Worker `w` sends to node
//! `w % nodes`, as Jepsen binds clients to nodes, so a dead node's workers
//! see fast connection failures while the others carry on.
//!
//! # Sharded clusters (`--shards N`)
//!
//! Every operation of the register and set workloads touches one key, and
//! a one-key operation has exactly etcd's semantics on a sharded cluster
//! (the shard is its own consensus group and its own revision sequence).
//! Their checkers are per key: lincheck is P-compositional, each key is
//! checked alone and its revisions are compared only with the same key's;
//! each set is one key, read back with a one-key read, not a prefix range.
//! So both checks keep their full meaning on any number of shards. The
//! report lists how many of the workload's keys each shard holds
//! ([`keys_per_shard`]), as the nodes compute it, so a run shows it did
//! spread over several shards. The lease workload's last read is a prefix
//! range, a scatter-gather that is no single snapshot; it only asks that
//! no key is left once every lease expired, which holds per shard.
//! The watch and append workloads need one revision sequence (a watch
//! over a prefix is one stream merging every shard's revisions; append's
//! transactions span keys, which a sharded cluster refuses across shards):
//! they refuse `--shards` above 1 ([`unsharded_only`]).

pub mod append;
pub mod lease;
pub mod register;
pub mod set;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ringkv_api::etcdserverpb::{Compare, RangeRequest, RequestOp, compare, request_op};

use crate::client::{ErrorClass, OpError};
use crate::config::WorkloadKind;
use crate::error::ChaosError;
use crate::history::{OpOutcome, OpRecord};
use crate::report::Anomaly;
use crate::run::Ctx;

/// Most attempts at a final read after the faults are healed.
pub const FINAL_READ_ATTEMPTS: usize = 30;

/// Pause between final read attempts.
pub const FINAL_READ_RETRY: Duration = Duration::from_millis(500);

/// Pause of a worker after an operation that was not answered, so a
/// worker bound to a dead node does not spin through the operation budget.
pub const FAIL_BACKOFF: Duration = Duration::from_millis(100);

/// Prefix of every key the harness writes.
pub const KEY_PREFIX: &str = "chaos/";

/// What a workload found.
#[derive(Clone, Debug, Default)]
pub struct WorkloadOutcome {
    /// Operations the checker examined.
    pub checked: usize,
    /// What it found wrong.
    pub anomalies: Vec<Anomaly>,
    /// Why the workload could not run at all (e.g. an unimplemented service).
    pub skipped: Option<String>,
    /// Why the check could not decide.
    pub undecided: Option<String>,
    /// Files for the output directory: (name, contents).
    pub artifacts: Vec<(String, String)>,
    /// Lines for the report.
    pub summary: Vec<String>,
    /// How many of the workload's keys each data shard holds (empty for a
    /// workload whose keys are not fixed in advance).
    pub keys_per_shard: BTreeMap<u64, usize>,
}

/// Why a workload cannot run on more than one shard, if it cannot.
pub fn unsharded_only(kind: WorkloadKind) -> Option<&'static str> {
    match kind {
        WorkloadKind::Register | WorkloadKind::Set | WorkloadKind::Lease => None,
        WorkloadKind::Watch => Some(
            "its checker compares every watcher's events by one revision sequence, while a \
             prefix watch over several shards carries each shard's own revisions",
        ),
        WorkloadKind::Append => {
            Some("its transactions span keys, and a sharded cluster refuses those across shards")
        }
    }
}

/// How many of `keys` each data shard of the run's key space holds.
pub fn keys_per_shard<'k>(
    ctx: &Ctx,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> BTreeMap<u64, usize> {
    let keyspace = ctx.args.keyspace();
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(keyspace.shard_of(key).0).or_insert(0) += 1;
    }
    counts
}

/// The report line of [`keys_per_shard`]'s counts.
pub fn describe_spread(shards: u32, counts: &BTreeMap<u64, usize>) -> String {
    let per: Vec<String> = counts.iter().map(|(s, n)| format!("s{s}:{n}")).collect();
    let mut line = format!(
        "shards: {shards}; the workload's keys are on {} of them ({})",
        counts.len(),
        per.join(" ")
    );
    if shards > 1 && counts.len() < 2 {
        line.push_str(
            "; every key on one shard: more --keys, or fewer --hash-key-segments, spread them",
        );
    }
    line
}

/// Runs the workload the flags name.
///
/// # Errors
/// A harness failure (checkers report anomalies, not errors).
pub async fn run(ctx: Arc<Ctx>) -> Result<WorkloadOutcome, ChaosError> {
    match ctx.args.workload {
        WorkloadKind::Register => register::run(ctx).await,
        WorkloadKind::Set => set::run(ctx).await,
        WorkloadKind::Lease => lease::run(ctx).await,
        WorkloadKind::Watch => watch::run(ctx).await,
        WorkloadKind::Append => append::run(ctx).await,
    }
}

/// The outcome class of a request's result.
pub fn outcome_of<T>(result: &Result<T, OpError>) -> OpOutcome {
    match result {
        Ok(_) => OpOutcome::Ok,
        Err(e) if e.class == ErrorClass::Fail => OpOutcome::Fail,
        Err(_) => OpOutcome::Unknown,
    }
}

/// Waits [`FAIL_BACKOFF`] after an operation that was not answered.
pub async fn backoff(outcome: OpOutcome) {
    if outcome != OpOutcome::Ok {
        tokio::time::sleep(FAIL_BACKOFF).await;
    }
}

/// Records one operation.
#[allow(clippy::too_many_arguments, reason = "one record's fields, named at the call")]
pub fn record(
    ctx: &Ctx,
    worker: usize,
    node: usize,
    f: &'static str,
    invoked_ns: u64,
    outcome: OpOutcome,
    value: serde_json::Value,
    error: Option<OpError>,
) {
    ctx.recorder.op(OpRecord {
        worker,
        node,
        f,
        invoked_ns,
        completed_ns: ctx.recorder.now_ns(),
        outcome,
        value,
        error,
    });
}

/// A linearizable read of one key.
pub fn range(key: &[u8]) -> RangeRequest {
    RangeRequest { key: key.to_vec(), ..RangeRequest::default() }
}

/// A read of every key with `prefix`.
pub fn range_prefix(prefix: &[u8]) -> RangeRequest {
    RangeRequest { key: prefix.to_vec(), range_end: prefix_end(prefix), ..RangeRequest::default() }
}

/// The end of the range of keys starting with `prefix` (etcd's convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A put inside a transaction.
pub fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(ringkv_api::etcdserverpb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

/// A read inside a transaction.
pub fn range_op(key: &[u8]) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(range(key))) }
}

/// `mod_revision(key) == revision` (0: the key is absent).
pub fn compare_mod(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
    }
}

/// `value(key) == value` (false when the key is absent, as in etcd).
pub fn compare_value(key: &[u8], value: &[u8]) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Value as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::Value(value.to_vec())),
    }
}

/// Keys as text for the records (they are ASCII).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn only_one_key_workloads_run_sharded() {
        assert_eq!(unsharded_only(WorkloadKind::Register), None);
        assert_eq!(unsharded_only(WorkloadKind::Set), None);
        assert!(unsharded_only(WorkloadKind::Watch).is_some());
        assert!(unsharded_only(WorkloadKind::Append).is_some());
    }

    #[test]
    fn a_spread_over_one_shard_is_called_out() {
        let one = BTreeMap::from([(3, 8)]);
        assert!(describe_spread(8, &one).contains("every key on one shard"));
        assert!(!describe_spread(1, &one).contains("every key on one shard"));
        let two = BTreeMap::from([(1, 5), (7, 3)]);
        assert_eq!(
            describe_spread(8, &two),
            "shards: 8; the workload's keys are on 2 of them (s1:5 s7:3)"
        );
    }
}
