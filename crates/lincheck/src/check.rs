//! The checker's entry point: split the history into independent
//! partitions, search each, and turn a failure into a small counterexample.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use crate::counterexample::{Counterexample, KeySnapshot, Reason, Unplaced};
use crate::history::{Call, History, OpId, Operation, Outcome, Revision};
use crate::model::{Interner, KeyState, ModRev, Reject, State, Step};
use crate::search::{self, Problem, ProblemOp, Verdict};

/// Default for [`Options::step_budget`]: on the order of a second of search
/// for one partition (release build) before giving up. A per-key
/// 10,000-operation history from 16 clients is checked in tens of
/// milliseconds, far inside it.
pub const DEFAULT_STEP_BUDGET: u64 = 10_000_000;

/// Most operations of the linearized order shown as context before the
/// operations that could not be placed.
pub const CONTEXT_OPS_MAX: usize = 16;

/// Most operations listed as having written a value a failing read returned.
pub const WRITERS_SHOWN_MAX: usize = 3;

/// How to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most search steps (iterations of the Wing–Gong loop) for one
    /// partition; past it that partition is reported undecided instead of
    /// searched further. Linearizability checking is NP-complete, and a
    /// history with many concurrent operations of unknown outcome can need
    /// exponentially many steps.
    pub step_budget: u64,
    /// Shrink a counterexample to the shortest failing prefix of the
    /// history. This runs up to about log2(n) + 2 more searches of the
    /// failing partition, each under `step_budget`.
    pub minimize: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { step_budget: DEFAULT_STEP_BUDGET, minimize: true }
    }
}

/// The verdict on a history.
#[derive(Clone, Debug)]
pub enum CheckResult {
    /// Every partition has a linearization.
    Linearizable,
    /// Some partition has none; this explains the first such partition (in
    /// key order).
    NotLinearizable(Box<Counterexample>),
    /// No partition was shown non-linearizable, but some ran out of budget.
    Undecided(Undecided),
}

impl CheckResult {
    /// Whether the history was shown linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// Why a check could not decide: "undecided: budget exhausted".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    /// The keys of each partition whose search ran out of steps.
    pub partitions: Vec<Vec<Bytes>>,
    /// The budget each of them exhausted.
    pub step_budget: u64,
}

impl std::fmt::Display for Undecided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "undecided: budget exhausted: the search of {} partition(s) used all {} steps \
             without deciding (first: keys ",
            self.partitions.len(),
            self.step_budget
        )?;
        let first = self.partitions.first().map(Vec::as_slice).unwrap_or_default();
        crate::render::write_key_list(f, first)?;
        write!(
            f,
            "); raise the step budget, or record fewer concurrent operations of unknown outcome"
        )
    }
}

/// Check `history` for linearizability against the key-value model.
pub fn check(history: &History, options: &Options) -> CheckResult {
    let mut undecided = Vec::new();
    for spec in partitions(history) {
        // A partition merged by ranges is first checked key by key, each
        // range reduced to its read of that key. Every such projection of a
        // linearizable history is linearizable, so a failing one is a
        // (smaller) counterexample; passing ones give, per key, an order
        // that guides the search of the whole partition, which otherwise
        // explores the interleavings of unrelated keys' operations when it
        // has to revise an early choice.
        let mut hints = Vec::new();
        if spec.keys.len() > 1 {
            for key in &spec.keys {
                let ops = spec
                    .ops
                    .iter()
                    .copied()
                    .filter(|id| history.ops()[id.0].call.keys().contains(key));
                let spec = PartitionSpec { keys: vec![key.clone()], ops: ops.collect() };
                let projection = Partition::new(history, spec, Vec::new());
                let (problem, ids) = projection.problem(None);
                let outcome = search::search(&problem, options.step_budget, false);
                match (outcome.verdict, outcome.order) {
                    (Verdict::NotLinearizable, _) => {
                        return CheckResult::NotLinearizable(Box::new(
                            projection.counterexample(options),
                        ));
                    }
                    (Verdict::Linearizable, Some(order)) => {
                        hints.push(order.into_iter().map(|i| ids[i]).collect());
                    }
                    _ => {}
                }
            }
        }
        let partition = Partition::new(history, spec, hints);
        let (problem, _) = partition.problem(None);
        let outcome = search::search(&problem, options.step_budget, false);
        match outcome.verdict {
            Verdict::Linearizable => {}
            Verdict::Exhausted => undecided.push(partition.keys.clone()),
            Verdict::NotLinearizable => {
                return CheckResult::NotLinearizable(Box::new(partition.counterexample(options)));
            }
        }
    }
    if undecided.is_empty() {
        CheckResult::Linearizable
    } else {
        CheckResult::Undecided(Undecided {
            partitions: undecided,
            step_budget: options.step_budget,
        })
    }
}

/// Keys and operations of one partition, before compilation.
struct PartitionSpec {
    keys: Vec<Bytes>,
    ops: Vec<OpId>,
}

/// Whether the checker looks at this operation at all: failed operations
/// did not happen, and a read of unknown outcome neither changed anything
/// nor constrains anything.
fn is_checked(op: &Operation) -> bool {
    match op.outcome {
        Outcome::Fail => false,
        Outcome::Unknown => !op.call.is_read_only(),
        Outcome::Ok(_) => true,
    }
}

/// P-compositionality: the store is a product of independent objects, one
/// per key, except that a multi-key range reads several keys as one atomic
/// operation. Keys read together by some range are therefore merged into
/// one object (union–find over keys); every operation touches exactly one
/// resulting partition, and by the locality of linearizability (Herlihy &
/// Wing, Theorem 1) the history is linearizable iff every partition's
/// subhistory is.
fn partitions(history: &History) -> Vec<PartitionSpec> {
    let mut index: HashMap<&Bytes, usize> = HashMap::new();
    let mut keys: Vec<&Bytes> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for op in history.ops().iter().filter(|op| is_checked(op)) {
        let mut first = None;
        for key in op.call.keys() {
            let i = *index.entry(key).or_insert_with(|| {
                keys.push(key);
                parent.push(parent.len());
                parent.len() - 1
            });
            match first {
                None => first = Some(i),
                Some(f) => {
                    let (a, b) = (root(&mut parent, f), root(&mut parent, i));
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
    }
    let mut by_root: BTreeMap<usize, PartitionSpec> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let r = root(&mut parent, i);
        by_root
            .entry(r)
            .or_insert_with(|| PartitionSpec { keys: Vec::new(), ops: Vec::new() })
            .keys
            .push((*key).clone());
    }
    for (id, op) in history.ops().iter().enumerate() {
        if is_checked(op) {
            let r = root(&mut parent, index[&op.call.keys()[0]]);
            by_root.get_mut(&r).expect("every key has a partition").ops.push(OpId(id));
        }
    }
    let mut specs: Vec<PartitionSpec> = by_root.into_values().collect();
    for spec in &mut specs {
        spec.keys.sort();
    }
    specs.sort_by(|a, b| a.keys.cmp(&b.keys));
    specs
}

/// One operation of a partition, compiled both ways: as recorded, and as if
/// its outcome were unknown (for cutting the history short).
struct Compiled {
    id: OpId,
    /// As recorded, when the outcome is ok.
    ok: Option<Step>,
    /// As an operation of unknown outcome; `None` when read-only.
    unknown: Option<Step>,
    invoked_at: u64,
    /// Completion of an ok operation.
    completed_at: Option<u64>,
}

struct Partition<'h> {
    history: &'h History,
    keys: Vec<Bytes>,
    interner: Interner,
    ops: Vec<Compiled>,
    /// Suggested orders for the search (see [`Problem::hints`]).
    hints: Vec<Vec<OpId>>,
}

impl<'h> Partition<'h> {
    fn new(history: &'h History, spec: PartitionSpec, hints: Vec<Vec<OpId>>) -> Self {
        let key_index: HashMap<Bytes, usize> =
            spec.keys.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect();
        let mut interner = Interner::default();
        let mut ops = Vec::with_capacity(spec.ops.len());
        for id in spec.ops {
            let op = &history.ops()[id.0];
            let ret = match &op.outcome {
                Outcome::Ok(ret) => Some(ret),
                _ => None,
            };
            let ok =
                ret.and_then(|ret| Step::compile(&op.call, Some(ret), &key_index, &mut interner));
            let unknown = Step::compile(&op.call, None, &key_index, &mut interner);
            let completed_at = if ret.is_some() { op.completed_at.map(|t| t.0) } else { None };
            ops.push(Compiled { id, ok, unknown, invoked_at: op.invoked_at.0, completed_at });
        }
        Partition { history, keys: spec.keys, interner, ops, hints }
    }

    /// The search problem for the history cut at time `cut`: operations
    /// invoked after it are left out, and operations still outstanding at
    /// it become of unknown outcome. Also returns each problem op's id.
    fn problem(&self, cut: Option<u64>) -> (Problem, Vec<OpId>) {
        let mut ops = Vec::with_capacity(self.ops.len());
        let mut ids = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            if cut.is_some_and(|cut| op.invoked_at > cut) {
                continue;
            }
            let done = op.completed_at.filter(|&c| cut.is_none_or(|cut| c <= cut));
            let step = match (done, &op.ok, &op.unknown) {
                (Some(_), Some(step), _) => step,
                (_, _, Some(step)) => step,
                _ => continue,
            };
            ops.push(ProblemOp {
                step: step.clone(),
                invoked_at: op.invoked_at,
                completed_at: done,
            });
            ids.push(op.id);
        }
        let initial: State = vec![KeyState::ABSENT; self.keys.len()].into_boxed_slice();
        let index: HashMap<OpId, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let hints = self
            .hints
            .iter()
            .map(|chain| chain.iter().filter_map(|id| index.get(id).copied()).collect())
            .collect();
        (Problem { ops, initial, hints }, ids)
    }

    /// Explain why this (non-linearizable) partition fails.
    fn counterexample(&self, options: &Options) -> Counterexample {
        let cut =
            if options.minimize { self.shortest_failing_cut(options.step_budget) } else { None };
        let (problem, ids) = self.problem(cut);
        let outcome = search::search(&problem, options.step_budget, true);
        debug_assert_ne!(outcome.verdict, Verdict::Linearizable, "the cut was checked to fail");
        let deepest = outcome.deepest.unwrap_or_else(|| search::Deepest {
            order: Vec::new(),
            state: problem.initial.clone(),
            blocked: None,
        });
        let in_order: BTreeSet<usize> = deepest.order.iter().copied().collect();

        // Operations that could not be placed: the blocked one first, then the
        // other ok ones in completion order.
        let mut stuck: Vec<usize> = (0..problem.ops.len())
            .filter(|i| !in_order.contains(i) && problem.ops[*i].completed_at.is_some())
            .collect();
        stuck.sort_by_key(|&i| (Some(i) != deepest.blocked, problem.ops[i].completed_at, i));
        let unplaced: Vec<Unplaced> = stuck
            .iter()
            .map(|&i| Unplaced {
                op: ids[i],
                reason: match crate::model::apply(&deepest.state, &problem.ops[i].step) {
                    Ok(_) => Reason::NoOrderAfter,
                    Err(reject) => self.reason(reject),
                },
                blocked: Some(i) == deepest.blocked,
            })
            .collect();

        // Context: the end of the order, from where the unplaced operations
        // or the writes that produced the final state begin (what overlaps
        // them is what constrains where they can go).
        let mut last_write: HashMap<usize, usize> = HashMap::new();
        for (pos, &i) in deepest.order.iter().enumerate() {
            if let Some(key) = written_keys(&problem.ops[i].step) {
                last_write.insert(key, pos);
            }
        }
        let window_start = stuck
            .iter()
            .copied()
            .chain(last_write.values().map(|&pos| deepest.order[pos]))
            .map(|i| problem.ops[i].invoked_at)
            .min()
            .unwrap_or(u64::MAX);
        let mut context: Vec<usize> = Vec::new();
        for (pos, &i) in deepest.order.iter().enumerate() {
            let recent = problem.ops[i].completed_at.is_none_or(|c| c >= window_start);
            if recent || last_write.values().any(|&p| p == pos) {
                context.push(pos);
            }
        }
        if context.len() > CONTEXT_OPS_MAX {
            // Keep the state-producing writes and the most recent operations.
            let keep_writes: BTreeSet<usize> = last_write.values().copied().collect();
            let mut recent: Vec<usize> =
                context.iter().copied().filter(|p| !keep_writes.contains(p)).collect();
            let room = CONTEXT_OPS_MAX.saturating_sub(keep_writes.len());
            recent.drain(..recent.len().saturating_sub(room));
            context = keep_writes.into_iter().chain(recent).collect();
            context.sort_unstable();
        }
        let context: Vec<OpId> = context.into_iter().map(|pos| ids[deepest.order[pos]]).collect();

        let last_unplaced_completion =
            stuck.iter().filter_map(|&i| problem.ops[i].completed_at).max().unwrap_or(u64::MAX);
        let unknown: Vec<OpId> = (0..problem.ops.len())
            .filter(|i| {
                !in_order.contains(i)
                    && problem.ops[*i].completed_at.is_none()
                    && problem.ops[*i].invoked_at <= last_unplaced_completion
            })
            .map(|i| ids[i])
            .rev()
            .take(CONTEXT_OPS_MAX)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();

        let mut mentioned: BTreeSet<OpId> = BTreeSet::new();
        mentioned.extend(context.iter().copied());
        mentioned.extend(unplaced.iter().map(|u| u.op));
        mentioned.extend(unknown.iter().copied());
        for u in &unplaced {
            if let Reason::ValueMismatch { written_by, .. } = &u.reason {
                mentioned.extend(written_by.iter().copied());
            }
        }
        let operations =
            mentioned.into_iter().map(|id| (id, self.history.ops()[id.0].clone())).collect();
        let cut_op = cut.and_then(|cut| {
            self.ops
                .iter()
                .find(|op| op.ok.is_some() && op.completed_at == Some(cut))
                .map(|op| op.id)
        });
        Counterexample {
            keys: self.keys.clone(),
            partition_ops: self.ops.len(),
            cut: cut_op,
            linearized: deepest.order.len(),
            context,
            state: self.snapshot(&deepest.state),
            unplaced,
            unknown,
            operations,
        }
    }

    /// The earliest completion time `t` of an ok operation such that the
    /// history cut at `t` is already not linearizable. Cutting is sound:
    /// any linearization of the whole history, truncated before the first
    /// operation invoked after `t`, linearizes the cut history (whose
    /// operations outstanding at `t` are of unknown outcome and may be
    /// dropped). So the property is monotone in `t` and a binary search
    /// finds the least failing cut. `None` when no cut fails within the
    /// budget, in which case the whole history is used.
    fn shortest_failing_cut(&self, budget: u64) -> Option<u64> {
        let mut cuts: Vec<u64> =
            self.ops.iter().filter(|op| op.ok.is_some()).filter_map(|op| op.completed_at).collect();
        cuts.sort_unstable();
        cuts.dedup();
        // Invariant: cuts[hi] fails (or hi == len: the whole history, known to fail).
        let (mut lo, mut hi) = (0usize, cuts.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (problem, _) = self.problem(Some(cuts[mid]));
            if search::search(&problem, budget, false).verdict == Verdict::NotLinearizable {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        cuts.get(hi).copied()
    }

    fn value(&self, id: Option<u32>) -> Option<Bytes> {
        id.map(|id| self.interner.value(id).clone())
    }

    fn snapshot(&self, state: &State) -> Vec<KeySnapshot> {
        self.keys
            .iter()
            .zip(state.iter())
            .map(|(key, ks)| KeySnapshot {
                key: key.clone(),
                value: self.value(ks.value),
                mod_revision: match ks.mod_rev {
                    ModRev::Known(r) if ks.value.is_some() => Some(Revision(r)),
                    _ => None,
                },
            })
            .collect()
    }

    fn reason(&self, reject: Reject) -> Reason {
        let key = |k: usize| self.keys[k].clone();
        match reject {
            Reject::Value { key: k, current, observed } => {
                let observed = self.value(observed);
                let written_by = match &observed {
                    None => Vec::new(),
                    Some(value) => self.writers(&self.keys[k], value),
                };
                Reason::ValueMismatch {
                    key: key(k),
                    current: self.value(current),
                    observed,
                    written_by,
                }
            }
            Reject::ModRevision { key: k, current, observed } => Reason::ModRevisionMismatch {
                key: key(k),
                current: Revision(current),
                observed: Revision(observed),
            },
            Reject::ModRevisionTooOld { key: k, above, observed } => Reason::ModRevisionTooOld {
                key: key(k),
                above: Revision(above),
                observed: Revision(observed),
            },
            Reject::RevisionNotIncreasing { key: k, floor, observed } => {
                Reason::RevisionNotIncreasing {
                    key: key(k),
                    reached: Revision(floor),
                    observed: Revision(observed),
                }
            }
            Reject::RevisionBehind { key: k, reached, observed } => Reason::RevisionBehind {
                key: key(k),
                reached: Revision(reached),
                observed: Revision(observed),
            },
            Reject::Deleted { key: k, existed, observed } => {
                Reason::DeletedMismatch { key: key(k), existed, observed }
            }
            Reject::CasOutcome { key: k, holds, observed } => {
                Reason::CasOutcomeMismatch { key: key(k), holds, observed }
            }
        }
    }

    /// Operations of the history, whatever their outcome, that asked to
    /// write `value` to `key` (a failed one explains a read of its value too).
    fn writers(&self, key: &Bytes, value: &Bytes) -> Vec<OpId> {
        self.history
            .ops()
            .iter()
            .enumerate()
            .filter(|(_, op)| match &op.call {
                Call::Put { key: k, value: v } | Call::CompareAndSet { key: k, value: v, .. } => {
                    k == key && v == value
                }
                _ => false,
            })
            .map(|(id, _)| OpId(id))
            .take(WRITERS_SHOWN_MAX)
            .collect()
    }
}

/// The key an operation may have written (a compare-and-set that reported
/// failure wrote nothing).
fn written_keys(step: &Step) -> Option<usize> {
    match step {
        Step::Put { key, .. } | Step::Delete { key, .. } => Some(*key),
        Step::Cas { key, result, .. } => match result {
            Some((false, _)) => None,
            _ => Some(*key),
        },
        Step::Get { .. } | Step::Range { .. } => None,
    }
}
