//! Synthetic linearizable histories, for tests and benchmarks.
//!
//! Operations are executed one after another against a plain sequential
//! store (independent of the checker's model), each at a *linearization
//! point*; each is then given a random interval around its point, so that
//! intervals of different processes overlap while each process's own
//! operations stay sequential. Some operations are recorded as failed (not
//! executed) or of unknown outcome (executed or not, and possibly after the
//! client gave up). Such a history is linearizable by construction.
//! Everything is derived from `seed`: no global randomness.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::history::{
    Call, Compare, Found, History, KeyValue, Operation, Outcome, ProcessId, Ret, Revision,
    Timestamp,
};

/// Time between consecutive linearization points.
pub const LINEARIZATION_SPACING: u64 = 10;

/// How to generate a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthOptions {
    /// Seed of the generator; the same options give the same history.
    pub seed: u64,
    /// Number of client processes (at least 1).
    pub processes: u32,
    /// Number of operations.
    pub operations: usize,
    /// Number of distinct keys (at least 1), named `k0`, `k1`, ...
    pub keys: u32,
    /// Most time between an operation's invocation (or completion) and its
    /// linearization point; points are [`LINEARIZATION_SPACING`] apart, so
    /// larger values mean more overlap.
    pub max_skew: u64,
    /// Percent of operations that fail (and did not take effect).
    pub fail_percent: u32,
    /// Percent of operations of unknown outcome (half of them took effect).
    pub unknown_percent: u32,
    /// Percent of operations that are multi-key ranges.
    pub range_percent: u32,
    /// Whether results carry revisions (each field is still left out at random).
    pub revisions: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            seed: 0,
            processes: 4,
            operations: 100,
            keys: 3,
            max_skew: 40,
            fail_percent: 3,
            unknown_percent: 5,
            range_percent: 5,
            revisions: true,
        }
    }
}

/// SplitMix64: a tiny, good-enough generator owned by the caller.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u32) -> bool {
        self.below(100) < u64::from(p)
    }
}

/// The reference: a sequential etcd-like store with one global revision.
struct Store {
    revision: u64,
    data: BTreeMap<Bytes, (Bytes, u64)>,
}

impl Default for Store {
    fn default() -> Self {
        // An empty etcd is at revision 1; its first write creates revision 2.
        Store { revision: 1, data: BTreeMap::new() }
    }
}

impl Store {
    fn apply(&mut self, call: &Call) -> Ret {
        match call {
            Call::Get { key } => Ret::Get(
                self.data
                    .get(key)
                    .map(|(v, r)| Found { value: v.clone(), mod_revision: Some(Revision(*r)) }),
            ),
            Call::Put { key, value } => {
                self.revision += 1;
                self.data.insert(key.clone(), (value.clone(), self.revision));
                Ret::Put { revision: Some(Revision(self.revision)) }
            }
            Call::Delete { key } => {
                let deleted = self.data.contains_key(key);
                if deleted {
                    self.revision += 1;
                    self.data.remove(key);
                }
                Ret::Delete { deleted: Some(deleted), revision: Some(Revision(self.revision)) }
            }
            Call::CompareAndSet { key, compare, value } => {
                let current = self.data.get(key);
                let holds = match compare {
                    Compare::Value(expected) => current.map(|(v, _)| v) == expected.as_ref(),
                    Compare::ModRevision(r) => current.map_or(0, |(_, m)| *m) == r.0,
                };
                if holds {
                    self.revision += 1;
                    self.data.insert(key.clone(), (value.clone(), self.revision));
                }
                Ret::CompareAndSet { succeeded: holds, revision: Some(Revision(self.revision)) }
            }
            Call::Range { keys } => Ret::Range(
                keys.iter()
                    .filter_map(|k| {
                        self.data.get(k).map(|(v, r)| KeyValue {
                            key: k.clone(),
                            value: v.clone(),
                            mod_revision: Some(Revision(*r)),
                        })
                    })
                    .collect(),
            ),
        }
    }
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("k{i}"))
}

fn random_call(rng: &mut Rng, opts: &SynthOptions, store: &Store, index: usize) -> Call {
    let keys = u64::from(opts.keys.max(1));
    let k = key(rng.below(keys));
    if keys >= 2 && rng.percent(opts.range_percent) {
        let n = 2 + rng.below(keys - 1);
        let mut picked: Vec<Bytes> = (0..n).map(|_| key(rng.below(keys))).collect();
        picked.sort();
        picked.dedup();
        return Call::Range { keys: picked };
    }
    let value = Bytes::from(format!("v{index}"));
    match rng.below(100) {
        0..40 => Call::Get { key: k },
        40..72 => Call::Put { key: k, value },
        72..80 => Call::Delete { key: k },
        _ => {
            let current = store.data.get(&k);
            let compare = match (rng.below(2), rng.below(10) < 7) {
                (0, true) => Compare::Value(current.map(|(v, _)| v.clone())),
                (0, false) => {
                    Compare::Value(Some(Bytes::from(format!("v{}", rng.below(index as u64 + 1)))))
                }
                (_, true) => Compare::ModRevision(Revision(current.map_or(0, |(_, r)| *r))),
                (_, false) => Compare::ModRevision(Revision(rng.below(store.revision + 1))),
            };
            Call::CompareAndSet { key: k, compare, value }
        }
    }
}

fn keep(rng: &mut Rng, opts: &SynthOptions, revision: Option<Revision>) -> Option<Revision> {
    revision.filter(|_| opts.revisions && rng.below(5) != 0)
}

/// Leave out revision fields (and `deleted`) at random, or all revisions,
/// as clients that do not record them do.
fn thin_revisions(rng: &mut Rng, opts: &SynthOptions, ret: Ret) -> Ret {
    match ret {
        Ret::Get(found) => {
            Ret::Get(found.map(|f| Found { mod_revision: keep(rng, opts, f.mod_revision), ..f }))
        }
        Ret::Put { revision } => Ret::Put { revision: keep(rng, opts, revision) },
        Ret::Delete { deleted, revision } => Ret::Delete {
            deleted: deleted.filter(|_| rng.below(4) != 0),
            revision: keep(rng, opts, revision),
        },
        Ret::CompareAndSet { succeeded, revision } => {
            Ret::CompareAndSet { succeeded, revision: keep(rng, opts, revision) }
        }
        Ret::Range(kvs) => Ret::Range(
            kvs.into_iter()
                .map(|kv| KeyValue { mod_revision: keep(rng, opts, kv.mod_revision), ..kv })
                .collect(),
        ),
    }
}

/// Generate a linearizable history as described in the module docs.
pub fn linearizable_history(opts: &SynthOptions) -> History {
    let mut rng = Rng(opts.seed);
    let processes = u64::from(opts.processes.max(1));
    let n = opts.operations;
    let owner: Vec<u64> = (0..n).map(|_| rng.below(processes)).collect();
    let point = |i: usize| (i as u64 + 1) * LINEARIZATION_SPACING;
    // Linearization point of each operation's successor on the same process.
    let mut next_point = vec![u64::MAX; n];
    let mut later: BTreeMap<u64, u64> = BTreeMap::new();
    for i in (0..n).rev() {
        if let Some(&p) = later.get(&owner[i]) {
            next_point[i] = p;
        }
        later.insert(owner[i], point(i));
    }
    let mut store = Store::default();
    let mut free_at: BTreeMap<u64, u64> = BTreeMap::new();
    let mut history = History::new();
    for i in 0..n {
        let process = owner[i];
        let at = point(i);
        let earliest = free_at.get(&process).copied().unwrap_or(0);
        let invoked_at = earliest.max(at.saturating_sub(rng.below(opts.max_skew + 1)));
        let completed_at = (at + rng.below(opts.max_skew + 1)).min(next_point[i] - 1);
        let call = random_call(&mut rng, opts, &store, i);
        let (outcome, completed_at) = if rng.percent(opts.fail_percent) {
            (Outcome::Fail, completed_at)
        } else if rng.percent(opts.unknown_percent) {
            if rng.below(2) == 0 {
                store.apply(&call);
            }
            // The client may have given up before the operation took effect.
            (Outcome::Unknown, invoked_at + rng.below(completed_at - invoked_at + 1))
        } else {
            let ret = store.apply(&call);
            (Outcome::Ok(thin_revisions(&mut rng, opts, ret)), completed_at)
        };
        free_at.insert(process, completed_at + 1);
        history
            .push(Operation {
                process: ProcessId(process),
                call,
                outcome,
                invoked_at: Timestamp(invoked_at),
                completed_at: Some(Timestamp(completed_at)),
            })
            .expect("generated intervals are sequential per process and results match calls");
    }
    history
}
