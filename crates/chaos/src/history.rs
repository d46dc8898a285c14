//! What happened during a run: every client operation ([`OpRecord`]) and
//! every fault ([`FaultEvent`]), on one clock (nanoseconds since the run
//! started).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::OpError;

/// How an operation ended, as the checkers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpOutcome {
    /// It was answered.
    Ok,
    /// It certainly had no effect.
    Fail,
    /// It may or may not have taken effect.
    Unknown,
}

/// One client operation, for `ops.jsonl` and the timeline picture.
#[derive(Clone, Debug, Serialize)]
pub struct OpRecord {
    /// The client worker (one task, one operation at a time).
    pub worker: usize,
    /// The node the worker sent it to.
    pub node: usize,
    /// What kind of operation (`read`, `write`, `cas`, `add`, `txn`, …).
    pub f: &'static str,
    /// When it was sent (ns since the run started).
    pub invoked_ns: u64,
    /// When it was answered or given up (ns since the run started).
    pub completed_ns: u64,
    /// How it ended.
    pub outcome: OpOutcome,
    /// The workload's description of the call and its answer.
    pub value: serde_json::Value,
    /// The error, when it was not answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
}

impl OpRecord {
    /// Whether this is a write that the store acknowledged.
    pub fn is_acknowledged_write(&self) -> bool {
        self.outcome == OpOutcome::Ok && WRITE_KINDS.contains(&self.f)
    }
}

/// Operation kinds that change the store (for availability figures).
pub const WRITE_KINDS: [&str; 6] = ["write", "cas", "add", "txn", "put", "append"];

/// A fault starting or ending.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    /// When (ns since the run started).
    pub at_ns: u64,
    /// `start` or `end`.
    pub phase: &'static str,
    /// The fault (`kill-leader`, `partition-halves`, …).
    pub fault: String,
    /// The nodes it concerns.
    pub nodes: Vec<usize>,
    /// Anything else worth knowing (the rules, the offset, an error healing it).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The shared log of a run.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<OpRecord>>,
    faults: Mutex<Vec<FaultEvent>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), ops: Mutex::default(), faults: Mutex::default() }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records an operation.
    pub fn op(&self, record: OpRecord) {
        self.ops.lock().expect("no panic while holding the lock").push(record);
    }

    /// Records a fault event now.
    pub fn fault(&self, phase: &'static str, fault: &str, nodes: &[usize], detail: String) {
        let event = FaultEvent {
            at_ns: self.now_ns(),
            phase,
            fault: fault.to_owned(),
            nodes: nodes.to_vec(),
            detail,
        };
        tracing::info!(phase, fault, ?nodes, detail = %event.detail, "nemesis");
        self.faults.lock().expect("no panic while holding the lock").push(event);
    }

    /// Every operation so far, ordered by invocation.
    pub fn ops(&self) -> Vec<OpRecord> {
        let mut ops = self.ops.lock().expect("no panic while holding the lock").clone();
        ops.sort_by_key(|o| (o.invoked_ns, o.worker));
        ops
    }

    /// Every fault event so far, in time order.
    pub fn faults(&self) -> Vec<FaultEvent> {
        self.faults.lock().expect("no panic while holding the lock").clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}
