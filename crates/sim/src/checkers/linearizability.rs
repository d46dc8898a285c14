//! **Linearizability** of what clients saw (Herlihy & Wing, 1990): the
//! client history of the run — every operation with the virtual time it was
//! invoked and answered, failed operations removed, timeouts of unknown
//! outcome — must have a linearization against the key-value model.
//! Checked at the end of the run by [`ringkv_lincheck::check`].

use ringkv_lincheck::{CheckResult, History, Options};

/// Search budget per partition: far above what the simulator's histories
/// (hundreds of operations on a few keys) need, low enough that a
/// pathological history cannot stall a sweep.
pub const STEP_BUDGET: u64 = 2_000_000;

/// What the check of a history found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// The search ran out of budget; neither shown nor refuted.
    Undecided(String),
}

/// Checks `history`.
///
/// # Errors
/// The history is not linearizable: the counterexample, rendered.
pub fn check(history: &History) -> Result<Verdict, String> {
    let options = Options { step_budget: STEP_BUDGET, minimize: true };
    match ringkv_lincheck::check(history, &options) {
        CheckResult::Linearizable => Ok(Verdict::Linearizable),
        CheckResult::Undecided(u) => Ok(Verdict::Undecided(u.to_string())),
        CheckResult::NotLinearizable(cx) => {
            Err(format!("client history is not linearizable:\n{cx}\n{}", cx.timeline()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_lincheck::{Call, Outcome, ProcessId, Ret, Timestamp};

    #[test]
    fn stale_read_is_refuted() {
        let k = Bytes::from("k");
        let mut h = History::new();
        h.invoke(ProcessId(1), Call::Put { key: k.clone(), value: Bytes::from("1") }, Timestamp(0))
            .unwrap();
        h.complete(ProcessId(1), Outcome::Ok(Ret::Put { revision: None }), Timestamp(5)).unwrap();
        h.invoke(ProcessId(2), Call::Get { key: k }, Timestamp(6)).unwrap();
        h.complete(ProcessId(2), Outcome::Ok(Ret::Get(None)), Timestamp(7)).unwrap();
        assert!(check(&h).is_err());
        assert_eq!(check(&History::new()), Ok(Verdict::Linearizable));
    }
}
