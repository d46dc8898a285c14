//! The sequential specification: an etcd-like store restricted to the keys
//! of one partition, with values interned to small integers so that states
//! hash and compare cheaply.
//!
//! Per key the state is the value (or absent), what is known of its mod
//! revision, and a revision floor. The floor makes revision checks sound when
//! some writes did not report their revision: it is a lower bound that every
//! later write's revision must exceed, raised by every revision the history
//! reveals (a write's revision, a read's mod revision, a response header).

use std::collections::HashMap;

use bytes::Bytes;

use crate::history::{Call, Compare, Ret};

/// An interned value: an index into [`Interner::values`].
pub(crate) type ValueId = u32;

/// Values of one partition, interned.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: HashMap<Bytes, ValueId>,
    values: Vec<Bytes>,
}

impl Interner {
    pub(crate) fn intern(&mut self, value: &Bytes) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = ValueId::try_from(self.values.len()).expect(
            "a partition holds fewer than 2^32 distinct values (one per operation at most)",
        );
        self.ids.insert(value.clone(), id);
        self.values.push(value.clone());
        id
    }

    pub(crate) fn value(&self, id: ValueId) -> &Bytes {
        &self.values[id as usize]
    }
}

/// What the checker knows of a key's mod revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ModRev {
    /// Exactly this revision; 0 while the key is absent.
    Known(u64),
    /// Set by a write that did not report its revision, which is therefore
    /// some revision greater than `above`. The first read that reports it
    /// turns this into `Known`.
    Unknown { above: u64 },
}

/// The model state of one key.
///
/// Invariants: `value.is_none()` implies `mod_rev == Known(0)`; a present key
/// has `Known(r)` with `r > 0` or `Unknown`; `floor` never decreases along a
/// linearization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyState {
    pub(crate) value: Option<ValueId>,
    pub(crate) mod_rev: ModRev,
    /// Highest revision known to have been reached when this key was last
    /// touched: every later write to the key has a greater revision, every
    /// later response header one at least as great.
    pub(crate) floor: u64,
}

impl KeyState {
    pub(crate) const ABSENT: KeyState =
        KeyState { value: None, mod_rev: ModRev::Known(0), floor: 0 };
}

/// The state of a partition: one [`KeyState`] per key, indexed like the
/// partition's key list.
pub(crate) type State = Box<[KeyState]>;

/// What a read observed for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) value: Option<ValueId>,
    pub(crate) mod_rev: Option<u64>,
}

/// The condition of a compare-and-set, interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Value(Option<ValueId>),
    ModRevision(u64),
}

/// An operation compiled against a partition: keys are indices into the
/// partition's key list, values are interned, and a result is present only
/// when the operation completed ok.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Get { key: usize, observed: Observed },
    Put { key: usize, value: ValueId, revision: Option<u64> },
    Delete { key: usize, deleted: Option<bool>, revision: Option<u64> },
    Cas { key: usize, compare: Cmp, value: ValueId, result: Option<(bool, Option<u64>)> },
    Range { reads: Box<[(usize, Observed)]> },
}

impl Step {
    /// Compile a call for a partition whose keys are indexed by `keys`;
    /// `ret` is the result when the operation completed ok, `None` when its
    /// outcome is unknown. Returns `None` for a read-only call of unknown
    /// outcome: it changed nothing and its result is unconstrained, so the
    /// checker drops it. (Failed operations never reach here.)
    pub(crate) fn compile(
        call: &Call,
        ret: Option<&Ret>,
        keys: &HashMap<Bytes, usize>,
        interner: &mut Interner,
    ) -> Option<Step> {
        if ret.is_none() && call.is_read_only() {
            return None;
        }
        let index = |key: &Bytes| *keys.get(key).expect("the partition holds every key of its ops");
        let step = match (call, ret) {
            (Call::Get { key }, Some(Ret::Get(found))) => Step::Get {
                key: index(key),
                observed: Observed {
                    value: found.as_ref().map(|f| interner.intern(&f.value)),
                    mod_rev: found.as_ref().and_then(|f| f.mod_revision).map(|r| r.0),
                },
            },
            (Call::Put { key, value }, ret) => Step::Put {
                key: index(key),
                value: interner.intern(value),
                revision: match ret {
                    Some(Ret::Put { revision }) => revision.map(|r| r.0),
                    _ => None,
                },
            },
            (Call::Delete { key }, ret) => {
                let (deleted, revision) = match ret {
                    Some(Ret::Delete { deleted, revision }) => (*deleted, revision.map(|r| r.0)),
                    _ => (None, None),
                };
                Step::Delete { key: index(key), deleted, revision }
            }
            (Call::CompareAndSet { key, compare, value }, ret) => Step::Cas {
                key: index(key),
                compare: match compare {
                    Compare::Value(v) => Cmp::Value(v.as_ref().map(|v| interner.intern(v))),
                    Compare::ModRevision(r) => Cmp::ModRevision(r.0),
                },
                value: interner.intern(value),
                result: match ret {
                    Some(Ret::CompareAndSet { succeeded, revision }) => {
                        Some((*succeeded, revision.map(|r| r.0)))
                    }
                    _ => None,
                },
            },
            (Call::Range { keys: range }, Some(Ret::Range(kvs))) => {
                // In a one-key projection of a merged partition, a range
                // keeps only its read of that key.
                let reads = range
                    .iter()
                    .filter_map(|key| {
                        let index = *keys.get(key)?;
                        let kv = kvs.iter().find(|kv| kv.key == key);
                        let observed = Observed {
                            value: kv.map(|kv| interner.intern(&kv.value)),
                            mod_rev: kv.and_then(|kv| kv.mod_revision).map(|r| r.0),
                        };
                        Some((index, observed))
                    })
                    .collect();
                Step::Range { reads }
            }
            (Call::Get { .. } | Call::Range { .. }, _) => {
                unreachable!("History validates that a result answers its call")
            }
        };
        Some(step)
    }
}

/// Why an operation cannot take effect in a given state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// A read saw a value (or absence) other than the current one.
    Value { key: usize, current: Option<ValueId>, observed: Option<ValueId> },
    /// A read saw a mod revision other than the current, known one.
    ModRevision { key: usize, current: u64, observed: u64 },
    /// A read saw a mod revision too old for the write of unknown revision
    /// that set the current value.
    ModRevisionTooOld { key: usize, above: u64, observed: u64 },
    /// A write reported a revision not above one the key already reached.
    RevisionNotIncreasing { key: usize, floor: u64, observed: u64 },
    /// A response header reported a revision below one the key already reached.
    RevisionBehind { key: usize, reached: u64, observed: u64 },
    /// A delete said it removed a key that was absent, or the reverse.
    Deleted { key: usize, existed: bool, observed: bool },
    /// A compare-and-set reported the opposite of what its condition gives here.
    CasOutcome { key: usize, holds: bool, observed: bool },
}

/// The states an operation can lead to.
#[derive(Debug)]
pub(crate) enum Next {
    /// The state does not change.
    Same,
    /// Exactly one successor.
    One(State),
    /// Two successors: an unknown compare-and-set whose condition cannot be
    /// decided (it compares a mod revision not known yet) may have succeeded
    /// or not.
    Two(State, State),
}

impl Next {
    pub(crate) fn len(&self) -> usize {
        match self {
            Next::Same | Next::One(_) => 1,
            Next::Two(..) => 2,
        }
    }

    /// Successor `alt` (`alt < self.len()`), with `current` standing for `Same`.
    pub(crate) fn get<'a>(&'a self, alt: usize, current: &'a State) -> &'a State {
        match (self, alt) {
            (Next::Same, _) => current,
            (Next::One(s), _) => s,
            (Next::Two(a, _), 0) => a,
            (Next::Two(_, b), _) => b,
        }
    }
}

/// Apply `step` to `state`: the successor states, or why it cannot happen here.
pub(crate) fn apply(state: &State, step: &Step) -> Result<Next, Reject> {
    match step {
        Step::Get { key, observed } => {
            let mut ks = state[*key];
            read(&mut ks, *key, observed)?;
            Ok(replace_key(state, *key, ks))
        }
        Step::Range { reads } => {
            let mut next: Option<State> = None;
            for (key, observed) in reads.iter() {
                let mut ks = state[*key];
                read(&mut ks, *key, observed)?;
                if ks != state[*key] {
                    next.get_or_insert_with(|| state.clone())[*key] = ks;
                }
            }
            Ok(next.map_or(Next::Same, Next::One))
        }
        Step::Put { key, value, revision } => {
            let mut ks = state[*key];
            write(&mut ks, *key, Some(*value), *revision)?;
            Ok(replace_key(state, *key, ks))
        }
        Step::Delete { key, deleted, revision } => {
            let mut ks = state[*key];
            let existed = ks.value.is_some();
            if let Some(observed) = *deleted
                && observed != existed
            {
                return Err(Reject::Deleted { key: *key, existed, observed });
            }
            if existed {
                write(&mut ks, *key, None, *revision)?;
            } else {
                header(&mut ks, *key, *revision)?;
            }
            Ok(replace_key(state, *key, ks))
        }
        Step::Cas { key, compare, value, result } => {
            let ks = state[*key];
            let holds = condition(&ks, *compare);
            match *result {
                Some((succeeded, revision)) => {
                    if let Some(holds) = holds
                        && holds != succeeded
                    {
                        return Err(Reject::CasOutcome { key: *key, holds, observed: succeeded });
                    }
                    let mut ks = ks;
                    if succeeded {
                        if holds.is_none() {
                            learn_from_compare(&mut ks, *compare);
                        }
                        write(&mut ks, *key, Some(*value), revision)?;
                    } else {
                        header(&mut ks, *key, revision)?;
                    }
                    Ok(replace_key(state, *key, ks))
                }
                None => {
                    let mut wrote = ks;
                    learn_from_compare(&mut wrote, *compare);
                    write(&mut wrote, *key, Some(*value), None)?;
                    Ok(match holds {
                        Some(true) => replace_key(state, *key, wrote),
                        Some(false) => Next::Same,
                        None => {
                            let mut a = state.clone();
                            a[*key] = wrote;
                            Next::Two(a, state.clone())
                        }
                    })
                }
            }
        }
    }
}

fn replace_key(state: &State, key: usize, ks: KeyState) -> Next {
    if state[key] == ks {
        return Next::Same;
    }
    let mut next = state.clone();
    next[key] = ks;
    Next::One(next)
}

/// Whether a compare-and-set's condition holds; `None` when it depends on a
/// mod revision the history has not revealed yet.
fn condition(ks: &KeyState, compare: Cmp) -> Option<bool> {
    match compare {
        Cmp::Value(expected) => Some(ks.value == expected),
        Cmp::ModRevision(0) => Some(ks.value.is_none()),
        Cmp::ModRevision(_) if ks.value.is_none() => Some(false),
        Cmp::ModRevision(expected) => match ks.mod_rev {
            ModRev::Known(current) => Some(current == expected),
            ModRev::Unknown { above } if expected <= above => Some(false),
            ModRev::Unknown { .. } => None,
        },
    }
}

/// A compare-and-set on an undecided mod revision succeeded: the mod
/// revision is the one it compared against.
fn learn_from_compare(ks: &mut KeyState, compare: Cmp) {
    if let (Cmp::ModRevision(revision), ModRev::Unknown { .. }) = (compare, ks.mod_rev) {
        ks.mod_rev = ModRev::Known(revision);
        ks.floor = ks.floor.max(revision);
    }
}

fn read(ks: &mut KeyState, key: usize, observed: &Observed) -> Result<(), Reject> {
    if ks.value != observed.value {
        return Err(Reject::Value { key, current: ks.value, observed: observed.value });
    }
    let (Some(_), Some(seen)) = (observed.value, observed.mod_rev) else { return Ok(()) };
    match ks.mod_rev {
        ModRev::Known(current) if current == seen => Ok(()),
        ModRev::Known(current) => Err(Reject::ModRevision { key, current, observed: seen }),
        ModRev::Unknown { above } if seen > above => {
            ks.mod_rev = ModRev::Known(seen);
            ks.floor = ks.floor.max(seen);
            Ok(())
        }
        ModRev::Unknown { above } => Err(Reject::ModRevisionTooOld { key, above, observed: seen }),
    }
}

/// A write: set the value (`None` deletes) at `revision` when reported.
fn write(
    ks: &mut KeyState,
    key: usize,
    value: Option<ValueId>,
    revision: Option<u64>,
) -> Result<(), Reject> {
    match revision {
        Some(revision) if revision <= reached(ks) => {
            return Err(Reject::RevisionNotIncreasing {
                key,
                floor: reached(ks),
                observed: revision,
            });
        }
        Some(revision) => {
            ks.floor = revision;
            ks.mod_rev = ModRev::Known(revision);
        }
        None => ks.mod_rev = ModRev::Unknown { above: ks.floor },
    }
    ks.value = value;
    if value.is_none() {
        ks.mod_rev = ModRev::Known(0);
    }
    Ok(())
}

/// An operation that changed nothing reported the store's revision: it is
/// at least every revision the key reached, and raises the floor.
fn header(ks: &mut KeyState, key: usize, revision: Option<u64>) -> Result<(), Reject> {
    let Some(revision) = revision else { return Ok(()) };
    let reached = reached(ks);
    if revision < reached {
        return Err(Reject::RevisionBehind { key, reached, observed: revision });
    }
    ks.floor = revision;
    Ok(())
}

/// The least revision the store certainly reached when the key was last
/// touched: the floor, or just past it when the last write's revision is
/// unknown (that write created a revision above `above`).
fn reached(ks: &KeyState) -> u64 {
    match ks.mod_rev {
        ModRev::Unknown { above } => ks.floor.max(above + 1),
        ModRev::Known(_) => ks.floor,
    }
}
