//! The open-loop schedule: when each operation is meant to be sent, and
//! where its latency is measured from.
//!
//! With `--rate R`, operation `n` (numbered over all clients) is due at
//! `n / R` seconds after the start, whatever happened to earlier ones. A
//! client that takes operation `n` after its due time is behind because
//! the server was slow to answer earlier operations, so the latency is
//! measured from the due time, not from the late send: otherwise a stall
//! would hide the very requests it delayed ("coordinated omission", Gil
//! Tene). A client that is early sleeps until the due time and measures
//! from when it actually sends: the timer's wake-up jitter belongs to the
//! client, not to the server.
//!
//! Pure arithmetic on offsets from the start of the run, so it is tested
//! without a clock.

use std::time::Duration;

/// Nanoseconds in a second.
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A fixed-rate schedule of operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Operations per second, over all clients. Invariant: finite, `> 0`.
    rate_per_second: f64,
}

/// What a client does with the operation it just took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Send now; the latency counts from `measure_from`, the due time,
    /// which has already passed.
    Late {
        /// The due time (offset from the start).
        measure_from: Duration,
    },
    /// Sleep until `due` (offset from the start), then send and measure
    /// from the actual send.
    Wait {
        /// The due time (offset from the start).
        due: Duration,
    },
}

impl Schedule {
    /// A schedule of `rate_per_second` operations per second (finite, > 0:
    /// argument parsing checks it).
    pub fn new(rate_per_second: f64) -> Schedule {
        assert!(
            rate_per_second.is_finite() && rate_per_second > 0.0,
            "rate {rate_per_second} checked by argument parsing"
        );
        Schedule { rate_per_second }
    }

    /// When operation `ticket` is due, from the start.
    ///
    /// Exact for any ticket: `ticket * 1e9 / rate` in integer nanoseconds
    /// for whole rates, so a long run does not drift by accumulated
    /// rounding as summing intervals would.
    pub fn due(&self, ticket: u64) -> Duration {
        let nanos = if self.rate_per_second.fract() == 0.0 && self.rate_per_second < 1e18 {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a whole number below 1e18"
            )]
            let rate = self.rate_per_second as u128;
            u128::from(ticket) * NANOS_PER_SECOND / rate
        } else {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "non-negative; sub-nanosecond error is irrelevant"
            )]
            let nanos = (ticket as f64 / self.rate_per_second * 1e9) as u128;
            nanos
        };
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// What to do with operation `ticket`, taken at `now` (offset from the
    /// start).
    pub fn plan(&self, ticket: u64, now: Duration) -> Dispatch {
        let due = self.due(ticket);
        if now >= due { Dispatch::Late { measure_from: due } } else { Dispatch::Wait { due } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced_from_the_start() {
        let s = Schedule::new(1_000.0);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(1));
        assert_eq!(s.due(2_500), Duration::from_millis(2_500));
        let s = Schedule::new(3.0);
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.due(3), Duration::from_secs(1), "no drift from rounding");
        // Fractional rates.
        let s = Schedule::new(0.5);
        assert_eq!(s.due(3), Duration::from_secs(6));
    }

    #[test]
    fn no_drift_over_a_long_run() {
        let s = Schedule::new(7.0);
        assert_eq!(s.due(7 * 86_400), Duration::from_secs(86_400));
        let s = Schedule::new(1_000_000.0);
        assert_eq!(s.due(3_600_000_000), Duration::from_secs(3_600));
    }

    #[test]
    fn a_late_operation_is_measured_from_its_due_time() {
        let s = Schedule::new(100.0);
        // Operation 5 is due at 50 ms; the client took it at 80 ms because
        // its previous request was slow: those 30 ms are latency.
        assert_eq!(
            s.plan(5, Duration::from_millis(80)),
            Dispatch::Late { measure_from: Duration::from_millis(50) }
        );
        // Exactly on time counts as due.
        assert_eq!(
            s.plan(5, Duration::from_millis(50)),
            Dispatch::Late { measure_from: Duration::from_millis(50) }
        );
    }

    #[test]
    fn an_early_operation_waits_for_its_due_time() {
        let s = Schedule::new(100.0);
        assert_eq!(
            s.plan(5, Duration::from_millis(10)),
            Dispatch::Wait { due: Duration::from_millis(50) }
        );
    }
}
