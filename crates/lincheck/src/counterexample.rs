//! What the checker reports when a history is not linearizable.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::history::{OpId, Operation, Revision};
use crate::render::{self, ShowBytes};

/// Why a partition's history cannot be linearized, in a form small enough
/// to read: the longest linearizable order the search found (its last
/// operations as context), the state after it, and the operations that
/// could not be placed next, each with the reason.
///
/// `Display` renders it as text followed by a timeline; see also
/// [`Counterexample::timeline`] and [`Counterexample::svg`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counterexample {
    /// The keys of the failing partition: one key, or several that a
    /// multi-key range reads together. When one key of a merged partition
    /// already fails on its own (ranges reduced to their read of it), just
    /// that key.
    pub keys: Vec<Bytes>,
    /// Operations of that partition the checker considered (failed
    /// operations and reads of unknown outcome are not).
    pub partition_ops: usize,
    /// The operation whose completion ends the shortest prefix of the
    /// history that is already not linearizable (`None` when the
    /// counterexample was not minimized). Operations invoked after it were
    /// not needed to show the violation; those outstanding at that moment
    /// were treated as of unknown outcome.
    pub cut: Option<OpId>,
    /// Length of the longest linearizable order found (ok operations plus
    /// operations of unknown outcome placed as having taken effect).
    pub linearized: usize,
    /// The end of that order, in linearization order: operations that
    /// overlap the ones that could not be placed, and the writes that
    /// produced the final state.
    pub context: Vec<OpId>,
    /// The state after the order.
    pub state: Vec<KeySnapshot>,
    /// Ok operations that could not be placed after the order, with why.
    /// The first one is the operation whose completion stopped the search,
    /// when there is one (see [`Unplaced::blocked`]).
    pub unplaced: Vec<Unplaced>,
    /// Operations of unknown outcome invoked before the violation and left
    /// out of the order (they may or may not have taken effect).
    pub unknown: Vec<OpId>,
    /// Every operation mentioned above, as recorded.
    pub operations: BTreeMap<OpId, Operation>,
}

/// One key of the model state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySnapshot {
    /// The key.
    pub key: Bytes,
    /// Its value; `None` when absent.
    pub value: Option<Bytes>,
    /// Its mod revision, when known (the write that set it reported it, or
    /// a read revealed it).
    pub mod_revision: Option<Revision>,
}

/// An operation that could not be placed next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    /// The operation.
    pub op: OpId,
    /// Why it cannot take effect after the order.
    pub reason: Reason,
    /// Whether the search reached this operation's completion without being
    /// able to linearize it: the point where every order failed.
    pub blocked: bool,
}

/// Why an operation cannot take effect in a given state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A read returned a value (or absence) other than the current one.
    ValueMismatch {
        /// The key.
        key: Bytes,
        /// Its current value; `None` when absent.
        current: Option<Bytes>,
        /// What the read returned; `None` when absent.
        observed: Option<Bytes>,
        /// Operations of the history, whatever their outcome, that asked to
        /// write `observed` to `key` (at most [`crate::WRITERS_SHOWN_MAX`]);
        /// empty when none did.
        written_by: Vec<OpId>,
    },
    /// A read returned a mod revision other than the current, known one.
    ModRevisionMismatch {
        /// The key.
        key: Bytes,
        /// Its current mod revision.
        current: Revision,
        /// What the read returned.
        observed: Revision,
    },
    /// A read returned a mod revision older than the write that set the
    /// current value (whose exact revision was not recorded).
    ModRevisionTooOld {
        /// The key.
        key: Bytes,
        /// That write's revision is above this one.
        above: Revision,
        /// What the read returned.
        observed: Revision,
    },
    /// A write reported a revision not above one the key already reached.
    RevisionNotIncreasing {
        /// The key.
        key: Bytes,
        /// The revision the key already reached.
        reached: Revision,
        /// The revision the write reported.
        observed: Revision,
    },
    /// A response that changed nothing reported a store revision below one
    /// the key already reached.
    RevisionBehind {
        /// The key.
        key: Bytes,
        /// The revision the key already reached.
        reached: Revision,
        /// The revision the response reported.
        observed: Revision,
    },
    /// A delete reported removing a key that was absent, or the reverse.
    DeletedMismatch {
        /// The key.
        key: Bytes,
        /// Whether the key existed.
        existed: bool,
        /// What the delete reported.
        observed: bool,
    },
    /// A compare-and-set reported the opposite of what its condition gives.
    CasOutcomeMismatch {
        /// The key.
        key: Bytes,
        /// Whether the condition holds in this state.
        holds: bool,
        /// What the operation reported.
        observed: bool,
    },
    /// The operation fits here, but no order of the remaining operations
    /// works after it.
    NoOrderAfter,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<Bytes>| match v {
            Some(v) => ShowBytes(v).to_string(),
            None => "absent".to_string(),
        };
        match self {
            Reason::ValueMismatch { key, current, observed, .. } => {
                write!(
                    f,
                    "{} is {} here, but the read returned {}",
                    ShowBytes(key),
                    opt(current),
                    opt(observed)
                )
            }
            Reason::ModRevisionMismatch { key, current, observed } => write!(
                f,
                "{} has mod_revision {current} here, but the read returned mod_revision {observed}",
                ShowBytes(key)
            ),
            Reason::ModRevisionTooOld { key, above, observed } => write!(
                f,
                "the read returned mod_revision {observed}, but the value of {} was written \
                 after revision {above} had been reached",
                ShowBytes(key)
            ),
            Reason::RevisionNotIncreasing { key, reached, observed } => write!(
                f,
                "the write reported revision {observed}, but {} had already reached revision \
                 {reached}; a later write must get a higher revision",
                ShowBytes(key)
            ),
            Reason::RevisionBehind { key, reached, observed } => write!(
                f,
                "the response reported store revision {observed}, but {} had already reached \
                 revision {reached}",
                ShowBytes(key)
            ),
            Reason::DeletedMismatch { key, existed, observed } => write!(
                f,
                "{} {} here, but the delete reported deleted={observed}",
                ShowBytes(key),
                if *existed { "exists" } else { "is absent" }
            ),
            Reason::CasOutcomeMismatch { key, holds, observed } => write!(
                f,
                "the condition on {} {} here, but the compare-and-set reported succeeded={observed}",
                ShowBytes(key),
                if *holds { "holds" } else { "does not hold" }
            ),
            Reason::NoOrderAfter => {
                f.write_str("it fits here, but no order of the remaining operations works after it")
            }
        }
    }
}

impl Counterexample {
    /// The recorded operation `id`, if this counterexample mentions it.
    pub fn operation(&self, id: OpId) -> Option<&Operation> {
        self.operations.get(&id)
    }

    /// A text timeline of the operations shown: one row per process, each
    /// operation a bar from its invocation to its completion.
    pub fn timeline(&self) -> String {
        render::timeline(self)
    }

    /// The same timeline as a small standalone SVG image.
    pub fn svg(&self) -> String {
        render::svg(self)
    }

    fn write_op(&self, f: &mut fmt::Formatter<'_>, id: OpId) -> fmt::Result {
        match self.operations.get(&id) {
            Some(op) => writeln!(f, "  {}", render::op_line(id, op)),
            None => writeln!(f, "  {id}"),
        }
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.keys.len() == 1 { "key" } else { "keys" };
        write!(f, "not linearizable: {plural} ")?;
        render::write_key_list(f, &self.keys)?;
        writeln!(f, " ({} operations checked)", self.partition_ops)?;
        if let Some(cut) = self.cut
            && let Some(at) = self.operations.get(&cut).and_then(|op| op.completed_at)
        {
            writeln!(
                f,
                "already not linearizable when {cut} completes at t={at}; operations invoked \
                 later were not needed to show it"
            )?;
        }
        let shown = self.context.len();
        if self.linearized == 0 {
            writeln!(f, "no operation can be linearized first")?;
        } else if shown < self.linearized {
            writeln!(
                f,
                "longest linearizable order found: {} operations (the relevant {shown}, in order):",
                self.linearized
            )?;
        } else {
            writeln!(f, "longest linearizable order found: {} operations:", self.linearized)?;
        }
        for &id in &self.context {
            self.write_op(f, id)?;
        }
        write!(f, "state after it:")?;
        for (i, ks) in self.state.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            match &ks.value {
                None => write!(f, "{sep}{} absent", ShowBytes(&ks.key))?,
                Some(v) => {
                    write!(f, "{sep}{} = {}", ShowBytes(&ks.key), ShowBytes(v))?;
                    if let Some(r) = ks.mod_revision {
                        write!(f, " (mod_revision {r})")?;
                    }
                }
            }
        }
        writeln!(f)?;
        writeln!(f, "could not be placed next:")?;
        for u in &self.unplaced {
            self.write_op(f, u.op)?;
            writeln!(f, "      why: {}", u.reason)?;
            if let Reason::ValueMismatch { observed: Some(v), written_by, .. } = &u.reason {
                if written_by.is_empty() {
                    writeln!(f, "      no operation ever wrote {} to this key", ShowBytes(v))?;
                } else {
                    write!(f, "      {} was written by", ShowBytes(v))?;
                    for (i, w) in written_by.iter().enumerate() {
                        let sep = if i == 0 { " " } else { ", " };
                        write!(f, "{sep}{w}")?;
                        if let Some(op) = self.operations.get(w) {
                            write!(f, " ({})", render::outcome_and_time(op))?;
                        }
                    }
                    writeln!(f)?;
                }
            }
            if u.blocked {
                writeln!(f, "      no order of the operations places it before its completion")?;
            }
        }
        if !self.unknown.is_empty() {
            writeln!(
                f,
                "outcome unknown, left out of the order (each may or may not have taken effect):"
            )?;
            for &id in &self.unknown {
                self.write_op(f, id)?;
            }
        }
        writeln!(f)?;
        f.write_str(&self.timeline())
    }
}
