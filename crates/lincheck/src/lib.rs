//! Linearizability checker for key-value histories.
//!
//! Given what clients asked a key-value store and what they were told, with
//! the time each request was sent and answered, [`check`] decides whether
//! some order of the operations (a *linearization*) both respects real time
//! (an operation that completed before another was invoked comes first) and
//! explains every answer by running the operations one at a time against
//! the sequential model below. If none exists it returns a small
//! [`Counterexample`]. The library is pure: no I/O, no clock, no randomness;
//! the `ringkv-lincheck` binary reads history files.
//!
//! ```
//! use bytes::Bytes;
//! use ringkv_lincheck::*;
//!
//! let x = Bytes::from("x");
//! let mut h = History::new();
//! // p1 writes x = 1 during [0, 10]; p2 then reads nothing during [20, 30]: a lost write.
//! h.invoke(ProcessId(1), Call::Put { key: x.clone(), value: Bytes::from("1") }, Timestamp(0))?;
//! h.complete(ProcessId(1), Outcome::Ok(Ret::Put { revision: None }), Timestamp(10))?;
//! h.invoke(ProcessId(2), Call::Get { key: x.clone() }, Timestamp(20))?;
//! h.complete(ProcessId(2), Outcome::Ok(Ret::Get(None)), Timestamp(30))?;
//!
//! match check(&h, &Options::default()) {
//!     CheckResult::NotLinearizable(cx) => {
//!         assert_eq!(cx.keys, vec![x]);
//!         println!("{cx}"); // text, then a timeline (one row per process)
//!     }
//!     other => panic!("expected a violation, got {other:?}"),
//! }
//! # Ok::<(), HistoryError>(())
//! ```
//!
//! # The model
//!
//! An etcd-like store. Keys and values are bytes ([`bytes::Bytes`]: etcd
//! keys and values are arbitrary bytes). Operations ([`Call`]):
//!
//! * `get(key)` returns the value or "absent", and optionally the key's
//!   `mod_revision`;
//! * `put(key, value)` sets the value and optionally returns the new revision;
//! * `delete(key)` makes the key absent, optionally reporting whether it
//!   existed (`deleted`) and the store revision;
//! * `cas(key, expect, value)` (compare-and-set, a one-key etcd `Txn`): if
//!   the current value equals the expected one (or "absent"), or the current
//!   mod revision equals the expected one (0 meaning absent, as in etcd),
//!   write `value` and return `succeeded: true`; otherwise change nothing and
//!   return `succeeded: false`. That is an ok answer, quite unlike a
//!   [`Outcome::Fail`], which says the request did not happen at all;
//! * `range(keys)` reads a fixed set of keys from one consistent snapshot.
//!
//! **Revisions are checked when present and ignored when absent.** Each key
//! tracks its value, what is known of its mod revision, and a *floor*: the
//! highest revision the history has revealed for it so far. A write that
//! reports revision `r` needs `r` above the floor (etcd revisions grow with
//! every write), and sets the mod revision to `r`; a write that reports none
//! leaves the mod revision unknown but above the floor, and the first read
//! or successful compare that reveals it pins it. A read's `mod_revision`
//! must equal the known one. A response header of an operation that changed
//! nothing (a failed compare, a delete of an absent key) must be at least
//! the floor, and raises it. A compare on a mod revision not yet known may
//! go either way. Not checked: etcd's `version` and `create_revision`, and
//! the ordering of revisions *across* keys (a global-revision check needs
//! all keys at once, which per-key partitioning gives up; see below).
//!
//! **Outcomes** ([`Outcome`]): an ok operation took effect exactly once,
//! inside its interval. A failed one did not happen and is removed before
//! checking. An unknown one (a timeout) may take effect at any time after
//! its invocation — its completion is treated as +infinity — or never, and
//! its result is unconstrained; an unknown read is therefore dropped.
//!
//! # The algorithm
//!
//! * **P-compositionality.** Linearizability is local (Herlihy & Wing): a
//!   history of independent objects is linearizable iff each object's
//!   subhistory is. Each key is an object, except that a multi-key `range`
//!   reads several keys atomically, which per-key checking would miss (a
//!   range that sees the second of two sequential writes but not the first
//!   is linearizable per key). So keys read together by some range are
//!   merged, by union–find, into one partition checked as a single object.
//!   This is sound and complete. A merged partition is first checked key by
//!   key, each range reduced to its read of that key: such a projection of
//!   a linearizable history is linearizable, so a failing one is already a
//!   (smaller) counterexample, and passing ones give per-key orders that the
//!   whole-partition search tries first.
//! * **Wing & Gong's search with Lowe's improvements** (G. Lowe, "Testing
//!   for linearizability", 2017) on each partition: depth-first over the
//!   calls in time order, backtracking when an operation's completion is
//!   reached before it could be linearized, with a cache of visited
//!   (linearized set as a bitset, model state) configurations.
//! * **Unknown operations** never force a backtrack (no completion) and the
//!   search succeeds as soon as every ok operation is placed. They are tried
//!   only after the ok ones at each point; a configuration is pruned when
//!   one with the same ok set and state and a subset of its unknown
//!   operations was visited (an unknown operation may always be skipped);
//!   an unknown write is not placed right over another on the same key; and
//!   a run of unknown operations must be followed by an ok operation
//!   touching all their keys (an unknown operation can always move later,
//!   past operations on other keys). See `search.rs` for the arguments.
//! * **A step budget** ([`Options::step_budget`], default
//!   [`DEFAULT_STEP_BUDGET`]) bounds each partition's search: the problem is
//!   NP-complete, and a pathological history yields
//!   [`CheckResult::Undecided`] ("undecided: budget exhausted") instead of
//!   hanging. Known weak spot: a large partition merged by ranges, with many
//!   clients and many operations of unknown outcome, can need more than the
//!   default (for example 10,000 operations from 16 always-busy clients with
//!   5% ranges and 2% unknown outcomes); per-key histories of that size take
//!   tens of milliseconds.
//! * **Counterexamples.** A failing partition is cut at the earliest
//!   completion after which it already fails (binary search; cutting is
//!   sound, see `check.rs`), searched again while recording the deepest
//!   configuration, and reported as the end of that longest linearizable
//!   order, the state after it, and each operation that could not be placed
//!   next with the reason, as text, as a text timeline
//!   ([`Counterexample::timeline`]) and as SVG ([`Counterexample::svg`]).
//!
//! # JSON-lines histories
//!
//! One JSON object per line (blank lines are skipped); [`parse_jsonl`] reads
//! it and [`to_jsonl`] writes it. A line is either an *event* — `invoke`,
//! then `ok`, `fail` or `unknown` for the same `process` — or a whole
//! *operation* (`"type": "op"`). A process runs one operation at a time and
//! its lines come in time order; events and operation lines may be mixed.
//! Times are unsigned integers on one clock (logical, or nanoseconds). An
//! operation invoked but never completed is of unknown outcome.
//!
//! * Calls: `{"op":"get","key":K}`, `{"op":"put","key":K,"value":V}`,
//!   `{"op":"delete","key":K}`, `{"op":"range","keys":[K,...]}`,
//!   `{"op":"cas","key":K,"expect":E,"value":V}` where `E` is
//!   `{"value":V}`, `{"value":null}` (the key is absent) or
//!   `{"mod_revision":N}` (0: absent).
//! * Results (ok only; revision fields optional): get `{"value":V,
//!   "mod_revision":N}` with `"value":null` for absent; put
//!   `{"revision":N}`; delete `{"deleted":true,"revision":N}`; cas
//!   `{"succeeded":false,"revision":N}`; range `{"kvs":[{"key":K,"value":V,
//!   "mod_revision":N}]}` listing the keys found. A put or delete result may
//!   be left out entirely.
//! * Keys and values are JSON strings (their UTF-8 bytes) or `{"hex":"00ff"}`.
//!
//! ```
//! let history = r#"
//! {"type":"invoke","process":1,"time":0,"call":{"op":"put","key":"x","value":"a"}}
//! {"type":"invoke","process":2,"time":1,"call":{"op":"get","key":"x"}}
//! {"type":"ok","process":1,"time":5,"result":{"revision":2}}
//! {"type":"ok","process":2,"time":6,"result":{"value":"a","mod_revision":2}}
//! {"type":"op","process":3,"invoked_at":7,"completed_at":9,"call":{"op":"cas","key":"x","expect":{"value":"a"},"value":"b"},"outcome":"ok","result":{"succeeded":true,"revision":3}}
//! {"type":"invoke","process":4,"time":8,"call":{"op":"delete","key":{"hex":"78"}}}
//! {"type":"unknown","process":4,"time":20}
//! {"type":"op","process":2,"invoked_at":21,"completed_at":22,"call":{"op":"range","keys":["x","y"]},"outcome":"ok","result":{"kvs":[]}}
//! "#;
//! let history = ringkv_lincheck::parse_jsonl(history)?;
//! assert_eq!(history.len(), 5);
//! let verdict = ringkv_lincheck::check(&history, &Default::default());
//! assert!(verdict.is_linearizable()); // the unknown delete took effect
//! # Ok::<(), ringkv_lincheck::ParseError>(())
//! ```
//!
//! The binary: `ringkv-lincheck [--budget STEPS] [--svg FILE] HISTORY.jsonl`
//! (`-` reads standard input) prints the verdict and exits 0 when
//! linearizable, 1 when not, 2 on an input error (naming the line), 3 when
//! undecided.

mod check;
mod counterexample;
mod history;
mod json;
mod model;
mod render;
mod search;
pub mod synth;

pub use check::{
    CONTEXT_OPS_MAX, CheckResult, DEFAULT_STEP_BUDGET, Options, Undecided, WRITERS_SHOWN_MAX, check,
};
pub use counterexample::{Counterexample, KeySnapshot, Reason, Unplaced};
pub use history::{
    Call, CallKind, Compare, Found, History, HistoryError, KeyValue, OpId, Operation, Outcome,
    ProcessId, Ret, Revision, Timestamp,
};
pub use json::{ParseError, ParseErrorKind, operation_json_line, parse_jsonl, to_jsonl};
pub use render::{KEYS_SHOWN_MAX, TIMELINE_WIDTH_CHARS};
