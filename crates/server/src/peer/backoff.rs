//! Exponential backoff with jitter for redialing a peer.

use std::time::Duration;

use rand::RngExt;

use super::{RECONNECT_BACKOFF_INITIAL, RECONNECT_BACKOFF_MAX};

/// The delays between dials of one unreachable peer.
///
/// Each delay is drawn uniformly from `[ceiling / 2, ceiling]` ("equal
/// jitter"), and the ceiling doubles after every draw up to
/// [`RECONNECT_BACKOFF_MAX`]. Half the delay is random so that every node of
/// a cluster that lost the same peer does not redial it in lockstep; half is
/// fixed so that the delay still grows.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// Upper bound of the next delay.
    ///
    /// Invariant: `RECONNECT_BACKOFF_INITIAL <= ceiling <= RECONNECT_BACKOFF_MAX`.
    ceiling: Duration,
}

impl Backoff {
    /// A backoff whose next delay is at most [`RECONNECT_BACKOFF_INITIAL`].
    pub(crate) fn new() -> Backoff {
        Backoff { ceiling: RECONNECT_BACKOFF_INITIAL }
    }

    /// Forgets past failures.
    pub(crate) fn reset(&mut self) {
        self.ceiling = RECONNECT_BACKOFF_INITIAL;
    }

    /// The delay before the next dial; grows the following one.
    pub(crate) fn next_delay(&mut self, rng: &mut impl rand::Rng) -> Duration {
        let ceiling_nanos = u64::try_from(self.ceiling.as_nanos()).unwrap_or(u64::MAX);
        let delay = Duration::from_nanos(rng.random_range(ceiling_nanos / 2..=ceiling_nanos));
        self.ceiling = (self.ceiling * 2).min(RECONNECT_BACKOFF_MAX);
        debug_assert!(delay <= RECONNECT_BACKOFF_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn delays_double_within_jitter_bounds_and_stop_at_the_maximum() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new();
        let mut ceiling = RECONNECT_BACKOFF_INITIAL;
        for _ in 0..20 {
            let delay = backoff.next_delay(&mut rng);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
            ceiling = (ceiling * 2).min(RECONNECT_BACKOFF_MAX);
        }
        assert_eq!(backoff.ceiling, RECONNECT_BACKOFF_MAX);
    }

    #[test]
    fn delays_are_jittered() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..16)
            .map(|_| {
                let mut backoff = Backoff::new();
                backoff.next_delay(&mut rng)
            })
            .collect();
        assert!(delays.iter().any(|d| *d != delays[0]), "16 first delays all equal: {delays:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new();
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= RECONNECT_BACKOFF_INITIAL);
    }
}
