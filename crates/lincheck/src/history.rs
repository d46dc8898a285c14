//! Histories: what clients asked for, when, and what they were told.
//!
//! A [`History`] is a list of [`Operation`]s. Each operation has a process
//! (one client thread: at most one operation outstanding at a time), a
//! [`Call`], an [`Outcome`] and the interval `[invoked_at, completed_at]` in
//! which it was outstanding. Build one either event by event
//! ([`History::invoke`] then [`History::complete`]) or from completed
//! operations ([`History::push`]); both validate as they go, so a history
//! that reaches the checker is well formed.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;

/// A client process: a single thread that has at most one operation outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId(pub u64);

/// The position of an operation in its [`History`] (0-based, in push order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

/// A point in time: logical or real (for example nanoseconds), as long as
/// all processes of one history use the same clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

/// An etcd store revision. Revisions of real writes start at 1; `Revision(0)`
/// only appears in [`Compare::ModRevision`], where it means "the key is absent"
/// (etcd's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a client asked the store to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Read one key.
    Get {
        /// The key read.
        key: Bytes,
    },
    /// Write one key.
    Put {
        /// The key written.
        key: Bytes,
        /// The value written.
        value: Bytes,
    },
    /// Remove one key; later reads find it absent.
    Delete {
        /// The key removed.
        key: Bytes,
    },
    /// If the key's current value (or mod revision) equals `compare`, write
    /// `value`; otherwise change nothing. A one-key etcd `Txn`.
    CompareAndSet {
        /// The key compared and written.
        key: Bytes,
        /// The condition on the key's current state.
        compare: Compare,
        /// The value written when the condition holds.
        value: Bytes,
    },
    /// Read a fixed set of keys at once, from one consistent snapshot.
    ///
    /// Invariant (enforced by [`History`]): `keys` is non-empty, sorted and
    /// free of duplicates.
    Range {
        /// The keys read.
        keys: Vec<Bytes>,
    },
}

/// The condition of a [`Call::CompareAndSet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's value equals this one; `None` means the key is absent.
    Value(Option<Bytes>),
    /// The key's mod revision equals this one; `Revision(0)` means the key is absent.
    ModRevision(Revision),
}

/// The kind of a [`Call`] or [`Ret`], for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// [`Call::Get`] / [`Ret::Get`].
    Get,
    /// [`Call::Put`] / [`Ret::Put`].
    Put,
    /// [`Call::Delete`] / [`Ret::Delete`].
    Delete,
    /// [`Call::CompareAndSet`] / [`Ret::CompareAndSet`].
    CompareAndSet,
    /// [`Call::Range`] / [`Ret::Range`].
    Range,
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallKind::Get => "get",
            CallKind::Put => "put",
            CallKind::Delete => "delete",
            CallKind::CompareAndSet => "cas",
            CallKind::Range => "range",
        })
    }
}

impl Call {
    /// The kind of this call.
    pub fn kind(&self) -> CallKind {
        match self {
            Call::Get { .. } => CallKind::Get,
            Call::Put { .. } => CallKind::Put,
            Call::Delete { .. } => CallKind::Delete,
            Call::CompareAndSet { .. } => CallKind::CompareAndSet,
            Call::Range { .. } => CallKind::Range,
        }
    }

    /// The keys this call touches.
    pub fn keys(&self) -> &[Bytes] {
        match self {
            Call::Get { key }
            | Call::Put { key, .. }
            | Call::Delete { key }
            | Call::CompareAndSet { key, .. } => std::slice::from_ref(key),
            Call::Range { keys } => keys,
        }
    }

    /// Whether the call can never change the store (so an unknown outcome
    /// tells the checker nothing).
    pub fn is_read_only(&self) -> bool {
        matches!(self, Call::Get { .. } | Call::Range { .. })
    }
}

/// A key found by a read: its value and, when the client recorded it, its
/// mod revision (the revision of the write that set it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The value read.
    pub value: Bytes,
    /// The key's mod revision, when recorded. Checked when present.
    pub mod_revision: Option<Revision>,
}

/// One key of a [`Ret::Range`] result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value read.
    pub value: Bytes,
    /// The key's mod revision, when recorded. Checked when present.
    pub mod_revision: Option<Revision>,
}

/// What the store answered to a call that completed normally.
///
/// Every revision field is optional: a recorded revision is checked, an
/// absent one is not (hand-written and logical histories rarely have them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// Result of [`Call::Get`]: the key, or `None` when it was absent.
    Get(Option<Found>),
    /// Result of [`Call::Put`].
    Put {
        /// The revision the put created (etcd's response header revision).
        revision: Option<Revision>,
    },
    /// Result of [`Call::Delete`].
    Delete {
        /// Whether the key existed and was removed (etcd's `deleted` count).
        deleted: Option<bool>,
        /// The store revision after the delete (etcd's response header revision).
        revision: Option<Revision>,
    },
    /// Result of [`Call::CompareAndSet`]. `succeeded: false` is a normal
    /// answer ("the comparison failed, nothing was written"), unlike
    /// [`Outcome::Fail`] ("the request did not happen").
    CompareAndSet {
        /// Whether the comparison held and the value was written.
        succeeded: bool,
        /// The store revision after the call: the new mod revision of the
        /// key when `succeeded`.
        revision: Option<Revision>,
    },
    /// Result of [`Call::Range`]: the keys of the range that exist, in any
    /// order; a key of the range that is not listed was absent.
    Range(Vec<KeyValue>),
}

impl Ret {
    /// The kind of call this result answers.
    pub fn kind(&self) -> CallKind {
        match self {
            Ret::Get(_) => CallKind::Get,
            Ret::Put { .. } => CallKind::Put,
            Ret::Delete { .. } => CallKind::Delete,
            Ret::CompareAndSet { .. } => CallKind::CompareAndSet,
            Ret::Range(_) => CallKind::Range,
        }
    }

    fn revisions(&self) -> Vec<Revision> {
        match self {
            Ret::Get(found) => found.iter().filter_map(|f| f.mod_revision).collect(),
            Ret::Put { revision }
            | Ret::Delete { revision, .. }
            | Ret::CompareAndSet { revision, .. } => revision.iter().copied().collect(),
            Ret::Range(kvs) => kvs.iter().filter_map(|kv| kv.mod_revision).collect(),
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect, once, somewhere inside its interval, and returned this.
    Ok(Ret),
    /// It definitely did not take effect (for example the request was
    /// refused before reaching the leader). Removed before checking.
    Fail,
    /// The client does not know (a timeout, a lost connection): it may have
    /// taken effect at any time after its invocation, even after the client
    /// gave up, or never; its result is unconstrained.
    Unknown,
}

/// One client operation with its interval and outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client process that issued it.
    pub process: ProcessId,
    /// What was asked.
    pub call: Call,
    /// What came back.
    pub outcome: Outcome,
    /// When the request was sent.
    pub invoked_at: Timestamp,
    /// When the answer came (or the client gave up). `None` only for an
    /// [`Outcome::Unknown`] operation that never completed at all.
    pub completed_at: Option<Timestamp>,
}

/// A history that breaks the rules of [`History`]; nothing was added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A process invoked an operation while another of its operations was outstanding.
    #[error(
        "process {process} invoked a new operation while {pending} was still outstanding; \
         a process runs one operation at a time (use a new process id after a timeout)"
    )]
    ProcessBusy {
        /// The process.
        process: ProcessId,
        /// Its outstanding operation.
        pending: OpId,
    },
    /// A completion arrived for a process with nothing outstanding.
    #[error("process {process} completed an operation but has none outstanding")]
    NothingOutstanding {
        /// The process.
        process: ProcessId,
    },
    /// An operation started before its process's previous operation ended.
    #[error(
        "process {process} invoked an operation at t={invoked_at}, before its previous \
         operation {previous} completed at t={previous_completed_at}; a process's operations \
         must not overlap"
    )]
    Overlap {
        /// The process.
        process: ProcessId,
        /// Its previous operation.
        previous: OpId,
        /// When the previous operation completed.
        previous_completed_at: Timestamp,
        /// When the new operation was invoked.
        invoked_at: Timestamp,
    },
    /// An operation completed before it was invoked.
    #[error(
        "an operation of process {process} completed at t={completed_at}, before it was \
         invoked at t={invoked_at}"
    )]
    CompletedBeforeInvoked {
        /// The process.
        process: ProcessId,
        /// When it was invoked.
        invoked_at: Timestamp,
        /// When it completed.
        completed_at: Timestamp,
    },
    /// An ok or failed operation has no completion time.
    #[error("an operation of process {process} is ok or failed but has no completion time")]
    MissingCompletionTime {
        /// The process.
        process: ProcessId,
    },
    /// The result does not answer the call (for example a put answered like a get).
    #[error("an operation of process {process} is a {call} but its result is a {ret} result")]
    ResultMismatch {
        /// The process.
        process: ProcessId,
        /// The call's kind.
        call: CallKind,
        /// The result's kind.
        ret: CallKind,
    },
    /// A range call lists no key.
    #[error("a range of process {process} reads no key; list at least one")]
    EmptyRange {
        /// The process.
        process: ProcessId,
    },
    /// A range result holds a key the range did not read, or one key twice.
    #[error(
        "a range result of process {process} lists key {key} {problem}",
        key = crate::render::ShowBytes(key),
        problem = if *.duplicate { "twice" } else { "that the range does not read" }
    )]
    BadRangeResult {
        /// The process.
        process: ProcessId,
        /// The offending key.
        key: Bytes,
        /// True when listed twice; false when outside the range.
        duplicate: bool,
    },
    /// A result carries revision 0, which no etcd write ever has.
    #[error(
        "a result of process {process} carries revision 0; etcd revisions start at 1 \
         (leave the field out when it is unknown)"
    )]
    ZeroRevision {
        /// The process.
        process: ProcessId,
    },
}

/// A validated history of client operations.
///
/// Invariants: every operation's result matches its call; a process's
/// operations do not overlap and were added in time order; ok and failed
/// operations have a completion time not before their invocation.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Operation>,
    /// The last operation of each process, to enforce one-at-a-time.
    last: HashMap<ProcessId, OpId>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `process` sent `call` at `time`. The operation stays
    /// outstanding (treated as [`Outcome::Unknown`]) until [`History::complete`].
    ///
    /// # Errors
    ///
    /// [`HistoryError::ProcessBusy`] if the process has an operation
    /// outstanding, [`HistoryError::Overlap`] if `time` is before its previous
    /// completion, [`HistoryError::EmptyRange`] for a range of no key.
    pub fn invoke(
        &mut self,
        process: ProcessId,
        call: Call,
        time: Timestamp,
    ) -> Result<OpId, HistoryError> {
        self.push(Operation {
            process,
            call,
            outcome: Outcome::Unknown,
            invoked_at: time,
            completed_at: None,
        })
    }

    /// Record that the outstanding operation of `process` ended at `time`.
    ///
    /// # Errors
    ///
    /// [`HistoryError::NothingOutstanding`], [`HistoryError::CompletedBeforeInvoked`],
    /// or a result that does not answer the call.
    pub fn complete(
        &mut self,
        process: ProcessId,
        outcome: Outcome,
        time: Timestamp,
    ) -> Result<OpId, HistoryError> {
        let id = match self.last.get(&process) {
            Some(&id) if self.ops[id.0].completed_at.is_none() => id,
            _ => return Err(HistoryError::NothingOutstanding { process }),
        };
        let op = &self.ops[id.0];
        validate_outcome(process, &op.call, &outcome)?;
        if time < op.invoked_at {
            return Err(HistoryError::CompletedBeforeInvoked {
                process,
                invoked_at: op.invoked_at,
                completed_at: time,
            });
        }
        let op = &mut self.ops[id.0];
        op.outcome = outcome;
        op.completed_at = Some(time);
        Ok(id)
    }

    /// Add a completed (or never-completed unknown) operation. Operations of
    /// one process must be pushed in time order; different processes may
    /// interleave freely.
    ///
    /// # Errors
    ///
    /// Any [`HistoryError`] describing why the operation is malformed or
    /// overlaps its process's previous operation.
    pub fn push(&mut self, mut op: Operation) -> Result<OpId, HistoryError> {
        let process = op.process;
        if let Call::Range { keys } = &mut op.call {
            if keys.is_empty() {
                return Err(HistoryError::EmptyRange { process });
            }
            keys.sort();
            keys.dedup();
        }
        validate_outcome(process, &op.call, &op.outcome)?;
        match op.completed_at {
            None if !matches!(op.outcome, Outcome::Unknown) => {
                return Err(HistoryError::MissingCompletionTime { process });
            }
            Some(completed_at) if completed_at < op.invoked_at => {
                return Err(HistoryError::CompletedBeforeInvoked {
                    process,
                    invoked_at: op.invoked_at,
                    completed_at,
                });
            }
            _ => {}
        }
        if let Some(&previous) = self.last.get(&process) {
            match self.ops[previous.0].completed_at {
                None => return Err(HistoryError::ProcessBusy { process, pending: previous }),
                Some(previous_completed_at) if op.invoked_at < previous_completed_at => {
                    return Err(HistoryError::Overlap {
                        process,
                        previous,
                        previous_completed_at,
                        invoked_at: op.invoked_at,
                    });
                }
                Some(_) => {}
            }
        }
        let id = OpId(self.ops.len());
        self.ops.push(op);
        self.last.insert(process, id);
        Ok(id)
    }

    /// The operation `process` has outstanding (invoked, not completed), if any.
    pub fn outstanding(&self, process: ProcessId) -> Option<OpId> {
        self.last.get(&process).copied().filter(|id| self.ops[id.0].completed_at.is_none())
    }

    /// The operations, indexed by [`OpId`].
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// The operation with this id, if any.
    pub fn get(&self, id: OpId) -> Option<&Operation> {
        self.ops.get(id.0)
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the history has no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn validate_outcome(
    process: ProcessId,
    call: &Call,
    outcome: &Outcome,
) -> Result<(), HistoryError> {
    let Outcome::Ok(ret) = outcome else { return Ok(()) };
    if call.kind() != ret.kind() {
        return Err(HistoryError::ResultMismatch { process, call: call.kind(), ret: ret.kind() });
    }
    if ret.revisions().contains(&Revision(0)) {
        return Err(HistoryError::ZeroRevision { process });
    }
    if let (Call::Range { keys }, Ret::Range(kvs)) = (call, ret) {
        let mut seen = std::collections::HashSet::new();
        for kv in kvs {
            let duplicate = !seen.insert(&kv.key);
            if duplicate || keys.binary_search(&kv.key).is_err() {
                return Err(HistoryError::BadRangeResult {
                    process,
                    key: kv.key.clone(),
                    duplicate,
                });
            }
        }
    }
    Ok(())
}
