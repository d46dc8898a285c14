//! The Wing–Gong linearizability search with Lowe's improvements, for one
//! partition.
//!
//! Calls and returns form one doubly linked list in time order (a call
//! sorts before a return at the same time, so touching intervals count as
//! concurrent). The search walks the list from its head: a call is a
//! candidate to linearize next; reaching a return means the operation it
//! ends was not linearized in time, so the last choice is undone
//! (backtracking). Linearizing an operation *lifts* its call and return out
//! of the list; undoing puts them back in place, in last-in-first-out order,
//! which a doubly linked list allows in O(1).
//!
//! Lowe's memoization: a configuration is the set of linearized operations
//! (a bitset) and the model state; reaching one seen before cannot lead
//! anywhere new, so it is pruned.
//!
//! Unknown operations have no return (their completion is at +infinity),
//! so they never force a backtrack, and the search succeeds as soon as every
//! ok operation is linearized, leaving the rest "never happened". Two
//! refinements keep them cheap:
//!
//! * they are tried only after every ok candidate at that point has been
//!   tried (the *unknown pass*): most of them never took effect, or took
//!   effect late;
//! * the memo keys configurations by (ok set, state) and stores, per key,
//!   the sets of unknown operations already linearized. A configuration is
//!   dominated by a visited one with the same ok set and state whose unknown
//!   set is a subset of its own: everything reachable from it is reachable
//!   from the visited one (an unknown operation may always be skipped). So
//!   an unknown write whose effect was overwritten costs nothing more once
//!   the search has explored the same point without it.
//!
//! At each configuration the candidates are tried in up to three passes:
//! those next in every *hint* order they belong to (per-key linearizations
//! of a partition merged by ranges, see `check.rs`), then every ok one,
//! then every unknown one. The passes only order the exploration; every
//! candidate is tried before backtracking, so the verdict is the same.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::model::{self, State, Step};

/// One operation of a partition, ready for the search.
#[derive(Clone, Debug)]
pub(crate) struct ProblemOp {
    pub(crate) step: Step,
    pub(crate) invoked_at: u64,
    /// `None`: unknown outcome; it may take effect at any time after
    /// `invoked_at`, or never.
    pub(crate) completed_at: Option<u64>,
}

/// One partition's history, as the search sees it.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    pub(crate) ops: Vec<ProblemOp>,
    pub(crate) initial: State,
    /// Suggested orders (indices into `ops`), typically one linearization
    /// per key of a multi-key partition. Only the order in which candidates
    /// are tried depends on them, never the verdict.
    pub(crate) hints: Vec<Vec<usize>>,
}

/// What the search concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out first.
    Exhausted,
}

/// The configuration with the most ok operations linearized that the search
/// reached before it had to backtrack.
#[derive(Clone, Debug)]
pub(crate) struct Deepest {
    /// Operations (indices into `Problem::ops`) in linearization order.
    pub(crate) order: Vec<usize>,
    /// The model state after `order`.
    pub(crate) state: State,
    /// The operation whose return was reached with it still unlinearized,
    /// when the backtrack was caused by a return (not by the list's end).
    pub(crate) blocked: Option<usize>,
}

/// What [`search`] returns.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    pub(crate) verdict: Verdict,
    /// Recorded only when asked and the verdict is not `Linearizable`.
    pub(crate) deepest: Option<Deepest>,
    /// The linearization found, when the verdict is `Linearizable`
    /// (indices into `Problem::ops`, ok and unknown operations that took effect).
    pub(crate) order: Option<Vec<usize>>,
}

const HEAD: u32 = 0;
const NIL: u32 = u32::MAX;

/// The list node of an operation's call; its return (if any) is the next id.
fn call_node(op: usize) -> u32 {
    u32::try_from(1 + 2 * op).expect("a partition holds fewer than 2^31 operations")
}

fn op_of(node: u32) -> usize {
    (node as usize - 1) / 2
}

fn is_return(node: u32) -> bool {
    node.is_multiple_of(2)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Trying operations that come next in every hint order they are in.
    Hinted,
    /// Trying ok operations.
    Ok,
    /// Every ok candidate failed; trying unknown ones.
    Unknown,
}

struct Frame {
    op: usize,
    alt: usize,
    pass: Pass,
    /// The state before this operation; `None` when it left it unchanged.
    prev_state: Option<State>,
    /// `owed` before this operation.
    prev_owed: u64,
}

/// Bit mask of the keys (indices below 64) an operation touches. Keys from
/// index 64 on are left out, which only weakens the chain rule (see
/// [`search`]), never its soundness.
fn touched(step: &Step) -> u64 {
    let bit = |k: usize| if k < 64 { 1u64 << k } else { 0 };
    match step {
        Step::Get { key, .. }
        | Step::Put { key, .. }
        | Step::Delete { key, .. }
        | Step::Cas { key, .. } => bit(*key),
        Step::Range { reads } => reads.iter().fold(0, |mask, (k, _)| mask | bit(*k)),
    }
}

/// Run the search on `problem` for at most `budget` steps. With `record`,
/// also return the deepest configuration reached (for counterexamples).
///
/// Besides the memo, two rules prune sequences of unknown operations that
/// a smaller configuration already covers (both rely on unknown operations
/// having no deadline and touching one key, so that an unknown operation
/// commutes with every operation on other keys and can always move later):
///
/// * the *overwrite rule* ([`overwrites_unknown`]);
/// * the *chain rule*: every linearization can be rearranged so that each
///   unknown operation that took effect sits just before the next
///   operation touching its key (move it later past operations on other
///   keys; one with no later operation on its key may as well never have
///   happened). So after a chain of unknown operations the next ok
///   operation must touch every key the chain touched; the keys still owed
///   are tracked in `owed` and are part of each memo entry (a configuration
///   owing fewer keys dominates), and an unknown operation is placed only
///   if some ok operation that may come next touches all the keys owed
///   after it ([`can_pay`]). In a one-key partition this prunes nothing; in
///   a partition merged by ranges it stops the search from trying every
///   combination of unknown writes on keys the next operations do not read.
pub(crate) fn search(problem: &Problem, budget: u64, record: bool) -> Outcome {
    let n = problem.ops.len();
    // Ok and unknown operations get separate bit positions.
    let mut slot = Vec::with_capacity(n);
    let (mut n_ok, mut n_unknown) = (0usize, 0usize);
    for op in &problem.ops {
        if op.completed_at.is_some() {
            slot.push(n_ok);
            n_ok += 1;
        } else {
            slot.push(n_unknown);
            n_unknown += 1;
        }
    }
    let touches: Vec<u64> = problem.ops.iter().map(|op| touched(&op.step)).collect();
    let mut list = List::new(problem);
    let mut ok_bits = Bits::new(n_ok);
    let mut unknown_bits = Bits::new(n_unknown);
    let mut owed = 0u64;
    let mut memo = Memo::default();
    let mut state = problem.initial.clone();
    let mut stack: Vec<Frame> = Vec::new();
    let mut placed_ok = 0usize;
    let mut steps = 0u64;
    let mut deepest: Option<Deepest> = None;
    let mut deepest_ok = 0usize;

    let mut hints = Hints::new(problem);
    let first_pass = if problem.hints.is_empty() { Pass::Ok } else { Pass::Hinted };
    let mut cur = list.next[HEAD as usize];
    let mut pass = first_pass;
    let mut alt_start = 0usize;
    'search: loop {
        if placed_ok == n_ok {
            return Outcome {
                verdict: Verdict::Linearizable,
                deepest: None,
                order: Some(stack.iter().map(|f| f.op).collect()),
            };
        }
        if steps >= budget {
            return Outcome { verdict: Verdict::Exhausted, deepest, order: None };
        }
        steps += 1;

        if cur == NIL || is_return(cur) {
            // Recorded before unknown operations are tried, so the deepest
            // configuration holds only the unknown ones it needed.
            if record && deepest.as_ref().is_none_or(|_| deepest_ok < placed_ok) {
                deepest_ok = placed_ok;
                deepest = Some(Deepest {
                    order: stack.iter().map(|f| f.op).collect(),
                    state: state.clone(),
                    blocked: (cur != NIL).then(|| op_of(cur)),
                });
            }
            let next_pass = match pass {
                Pass::Hinted => Some(Pass::Ok),
                Pass::Ok if n_unknown > 0 => Some(Pass::Unknown),
                Pass::Ok | Pass::Unknown => None,
            };
            if let Some(next_pass) = next_pass {
                pass = next_pass;
                cur = list.next[HEAD as usize];
                alt_start = 0;
                continue;
            }
            let Some(frame) = stack.pop() else {
                return Outcome { verdict: Verdict::NotLinearizable, deepest, order: None };
            };
            if let Some(prev) = frame.prev_state {
                state = prev;
            }
            owed = frame.prev_owed;
            if problem.ops[frame.op].completed_at.is_some() {
                ok_bits.clear(slot[frame.op]);
                placed_ok -= 1;
            } else {
                unknown_bits.clear(slot[frame.op]);
            }
            hints.on_unplaced(frame.op);
            list.unlift(frame.op);
            cur = call_node(frame.op);
            pass = frame.pass;
            alt_start = frame.alt + 1;
            continue;
        }

        let op = op_of(cur);
        let known = problem.ops[op].completed_at.is_some();
        let in_pass = match pass {
            Pass::Hinted => hints.is_ready(op),
            Pass::Ok => known,
            Pass::Unknown => !known,
        };
        let allowed = in_pass
            && if known {
                owed & !touches[op] == 0
            } else {
                !overwrites_unknown(problem, &stack, op)
                    && can_pay(&list, problem, &touches, owed | touches[op])
            };
        if allowed && let Ok(next) = model::apply(&state, &problem.ops[op].step) {
            let next_owed = if known { 0 } else { owed | touches[op] };
            let bits = if known { &mut ok_bits } else { &mut unknown_bits };
            bits.set(slot[op]);
            let chosen = (alt_start..next.len())
                .find(|&alt| memo.visit(&ok_bits, &unknown_bits, next_owed, next.get(alt, &state)));
            if let Some(alt) = chosen {
                let prev_state = match (next, alt) {
                    (model::Next::Same, _) => None,
                    (model::Next::One(s), _) | (model::Next::Two(s, _), 0) => {
                        Some(std::mem::replace(&mut state, s))
                    }
                    (model::Next::Two(_, s), _) => Some(std::mem::replace(&mut state, s)),
                };
                stack.push(Frame { op, alt, pass, prev_state, prev_owed: owed });
                owed = next_owed;
                if known {
                    placed_ok += 1;
                }
                list.lift(op);
                hints.on_placed(op, |i| {
                    let bits = if problem.ops[i].completed_at.is_some() {
                        &ok_bits
                    } else {
                        &unknown_bits
                    };
                    bits.get(slot[i])
                });
                cur = list.next[HEAD as usize];
                pass = first_pass;
                alt_start = 0;
                continue 'search;
            }
            let bits = if known { &mut ok_bits } else { &mut unknown_bits };
            bits.clear(slot[op]);
        }
        cur = list.next[cur as usize];
        alt_start = 0;
    }
}

/// Progress along the hint orders: an operation is *ready* when every
/// operation before it in each hint order containing it is placed.
struct Hints<'p> {
    chains: &'p [Vec<usize>],
    /// For each operation, its (chain, position) pairs.
    positions: Vec<Vec<(usize, usize)>>,
    /// For each chain, the first position not placed yet.
    frontier: Vec<usize>,
}

impl<'p> Hints<'p> {
    fn new(problem: &'p Problem) -> Self {
        let mut positions = vec![Vec::new(); problem.ops.len()];
        for (c, chain) in problem.hints.iter().enumerate() {
            for (p, &op) in chain.iter().enumerate() {
                positions[op].push((c, p));
            }
        }
        Hints { chains: &problem.hints, positions, frontier: vec![0; problem.hints.len()] }
    }

    fn is_ready(&self, op: usize) -> bool {
        let at = &self.positions[op];
        !at.is_empty() && at.iter().all(|&(c, p)| self.frontier[c] == p)
    }

    fn on_placed(&mut self, op: usize, placed: impl Fn(usize) -> bool) {
        for &(c, p) in &self.positions[op] {
            if self.frontier[c] == p {
                let chain = &self.chains[c];
                while self.frontier[c] < chain.len() && placed(chain[self.frontier[c]]) {
                    self.frontier[c] += 1;
                }
            }
        }
    }

    fn on_unplaced(&mut self, op: usize) {
        for &(c, p) in &self.positions[op] {
            self.frontier[c] = self.frontier[c].min(p);
        }
    }
}

/// Chain-rule lookahead: whether some ok operation that may come next (a
/// call before the first return in the list) touches every key in `owed`.
/// If none does, no arrangement allowed by the chain rule can follow, so an
/// unknown operation that would leave these keys owed is not placed.
fn can_pay(list: &List, problem: &Problem, touches: &[u64], owed: u64) -> bool {
    let mut node = list.next[HEAD as usize];
    while node != NIL && !is_return(node) {
        let op = op_of(node);
        if problem.ops[op].completed_at.is_some() && owed & !touches[op] == 0 {
            return true;
        }
        node = list.next[node as usize];
    }
    false
}

/// The key an unknown operation blindly overwrites: a put or delete of
/// unknown outcome sets the key's value and mod revision regardless of the
/// state and leaves its floor alone (it reports no revision).
fn blind_write_key(op: &ProblemOp) -> Option<usize> {
    match op.step {
        _ if op.completed_at.is_some() => None,
        Step::Put { key, revision: None, .. } => Some(key),
        Step::Delete { key, deleted: None, revision: None } => Some(key),
        _ => None,
    }
}

/// Whether placing unknown `op` now is pointless because it would erase an
/// unknown blind write placed on the same key since the last ok operation.
/// Unknown operations on other keys commute with both, so the same state is
/// reached by skipping the earlier write, with a smaller set of unknown
/// operations: a configuration that dominates this one and that the search
/// reaches from the point before the earlier write. Without this rule the
/// search tries every subset of the pending unknown writes in a row, which
/// is exponential in their number.
fn overwrites_unknown(problem: &Problem, stack: &[Frame], op: usize) -> bool {
    let Some(key) = blind_write_key(&problem.ops[op]) else { return false };
    for frame in stack.iter().rev() {
        let earlier = &problem.ops[frame.op];
        if earlier.completed_at.is_some() {
            return false;
        }
        if blind_write_key(earlier) == Some(key) {
            return true;
        }
        if let Step::Cas { key: k, .. } = earlier.step
            && k == key
        {
            return false;
        }
    }
    false
}

/// The call/return list. Node 0 is the head sentinel; operation `i` has its
/// call at `1 + 2i` and, when it has a completion, its return at `2 + 2i`.
struct List {
    next: Vec<u32>,
    prev: Vec<u32>,
    has_return: Vec<bool>,
}

impl List {
    fn new(problem: &Problem) -> Self {
        let n = problem.ops.len();
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * n);
        for (i, op) in problem.ops.iter().enumerate() {
            let call = call_node(i);
            events.push((op.invoked_at, false, call));
            if let Some(completed_at) = op.completed_at {
                events.push((completed_at, true, call + 1));
            }
        }
        // Calls before returns at equal times: touching intervals are concurrent.
        events.sort_unstable();
        let mut next = vec![NIL; 2 * n + 1];
        let mut prev = vec![NIL; 2 * n + 1];
        let mut last = HEAD;
        for &(_, _, node) in &events {
            next[last as usize] = node;
            prev[node as usize] = last;
            last = node;
        }
        let has_return = problem.ops.iter().map(|op| op.completed_at.is_some()).collect();
        List { next, prev, has_return }
    }

    fn unlink(&mut self, node: u32) {
        let (p, q) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = q;
        if q != NIL {
            self.prev[q as usize] = p;
        }
    }

    /// Undo `unlink(node)`; valid only in reverse order of the unlinks.
    fn relink(&mut self, node: u32) {
        let (p, q) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if q != NIL {
            self.prev[q as usize] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(call_node(op));
        if self.has_return[op] {
            self.unlink(call_node(op) + 1);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.has_return[op] {
            self.relink(call_node(op) + 1);
        }
        self.relink(call_node(op));
    }
}

/// A fixed-size bitset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// Visited configurations, bucketed by the hash of (ok set, state).
#[derive(Default)]
struct Memo {
    buckets: HashMap<u64, Vec<MemoEntry>, BuildHasherDefault<FxHasher>>,
}

struct MemoEntry {
    ok: Bits,
    state: State,
    /// Antichain of (unknown set, owed keys) visited with this ok set and
    /// state, under "fewer unknown operations placed and fewer keys owed
    /// dominates".
    seen: Vec<(Bits, u64)>,
}

impl Memo {
    /// Record a configuration; false if it is dominated by one seen before.
    fn visit(&mut self, ok: &Bits, unknown: &Bits, owed: u64, state: &State) -> bool {
        let mut hasher = FxHasher::default();
        ok.hash(&mut hasher);
        state.hash(&mut hasher);
        let bucket = self.buckets.entry(hasher.finish()).or_default();
        let dominates = |a: &(Bits, u64), b: (&Bits, u64)| a.0.is_subset_of(b.0) && a.1 & !b.1 == 0;
        if let Some(entry) = bucket.iter_mut().find(|e| e.ok == *ok && e.state == *state) {
            if entry.seen.iter().any(|seen| dominates(seen, (unknown, owed))) {
                return false;
            }
            let new = (unknown.clone(), owed);
            entry.seen.retain(|seen| !dominates(&new, (&seen.0, seen.1)));
            entry.seen.push(new);
            return true;
        }
        bucket.push(MemoEntry {
            ok: ok.clone(),
            state: state.clone(),
            seen: vec![(unknown.clone(), owed)],
        });
        true
    }
}

/// A small, fast, non-cryptographic hasher (the multiply-rotate scheme of
/// Firefox and rustc); the memo's keys are not attacker-controlled.
#[derive(Default)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("chunks_exact yields 8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyState, Observed};

    fn op(step: Step, invoked_at: u64, completed_at: Option<u64>) -> ProblemOp {
        ProblemOp { step, invoked_at, completed_at }
    }

    fn put(value: u32) -> Step {
        Step::Put { key: 0, value, revision: None }
    }

    fn get(value: Option<u32>) -> Step {
        Step::Get { key: 0, observed: Observed { value, mod_rev: None } }
    }

    fn problem(ops: Vec<ProblemOp>) -> Problem {
        Problem { ops, initial: vec![KeyState::ABSENT].into_boxed_slice(), hints: Vec::new() }
    }

    #[test]
    fn list_lift_and_unlift_restore_the_order() {
        let p = problem(vec![op(put(0), 0, Some(5)), op(put(1), 1, Some(2)), op(put(2), 3, None)]);
        let mut list = List::new(&p);
        let walk = |list: &List| {
            let mut out = Vec::new();
            let mut n = list.next[0];
            while n != NIL {
                out.push(n);
                n = list.next[n as usize];
            }
            out
        };
        let before = walk(&list);
        assert_eq!(before, vec![1, 3, 4, 5, 2]);
        list.lift(1);
        list.lift(0);
        assert_eq!(walk(&list), vec![5]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!(walk(&list), before);
    }

    #[test]
    fn the_unknown_pass_places_an_unknown_write_only_when_needed() {
        // put(0) unknown, never observed; get -> absent; get -> 0 later.
        let p = problem(vec![
            op(put(0), 0, None),
            op(get(None), 1, Some(2)),
            op(get(Some(0)), 3, Some(4)),
        ]);
        let out = search(&p, 1_000, false);
        assert_eq!(out.verdict, Verdict::Linearizable);
    }

    #[test]
    fn the_budget_stops_the_search() {
        let p = problem(vec![op(put(0), 0, Some(1)), op(get(Some(1)), 2, Some(3))]);
        assert_eq!(search(&p, 1, false).verdict, Verdict::Exhausted);
        assert_eq!(search(&p, 1_000, false).verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn deepest_configuration_names_the_blocked_operation() {
        let p = problem(vec![
            op(put(0), 0, Some(1)),
            op(put(1), 2, Some(3)),
            op(get(Some(0)), 4, Some(5)),
        ]);
        let out = search(&p, 1_000, true);
        assert_eq!(out.verdict, Verdict::NotLinearizable);
        let deepest = out.deepest.expect("recorded");
        assert_eq!(deepest.order, vec![0, 1]);
        assert_eq!(deepest.blocked, Some(2));
    }

    #[test]
    fn dominance_prunes_supersets_of_unknowns() {
        let mut memo = Memo::default();
        let state: State = vec![KeyState::ABSENT].into_boxed_slice();
        let ok = Bits::new(3);
        let mut some = Bits::new(2);
        some.set(1);
        assert!(memo.visit(&ok, &some, 0b10, &state));
        let none = Bits::new(2);
        assert!(memo.visit(&ok, &none, 0b11, &state), "fewer unknowns but more owed keys is new");
        assert!(memo.visit(&ok, &none, 0b10, &state), "a subset is new");
        assert!(!memo.visit(&ok, &some, 0b10, &state), "a superset of a visited set is dominated");
        assert!(!memo.visit(&ok, &none, 0b11, &state), "owing more keys is dominated");
        assert!(!memo.visit(&ok, &none, 0b10, &state), "an exact repeat is dominated");
    }
}
