//! The workloads: what the clients do and how their history is checked.
//!
//! Each workload runs its workers until the clients' phase ends (time or
//! operation limit), then calls [`Ctx::quiesce`] (faults healed, a leader
//! agreed), makes its final reads, and checks. Worker `w` sends to node
//! `w % nodes`, as Jepsen binds clients to nodes, so a dead node's workers
//! see fast connection failures while the others carry on.

pub mod append;
pub mod lease;
pub mod register;
pub mod set;
pub mod watch;

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
}
