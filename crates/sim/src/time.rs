//! Virtual time and the event queue.
//!
//! Time is a count of simulated microseconds since the run began; nothing
//! reads a real clock. Events due at the same instant run in the order they
//! were scheduled (a sequence number breaks ties), so a run is a pure
//! function of its seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

/// Simulated microseconds since the start of the run.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

/// Microseconds in a simulated millisecond.
pub const MICROS_PER_MILLI: u64 = 1_000;

impl Time {
    /// `self + micros`.
    #[must_use]
    pub const fn plus(self, micros: u64) -> Time {
        Time(self.0 + micros)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>5}.{:03}ms", self.0 / MICROS_PER_MILLI, self.0 % MICROS_PER_MILLI)
    }
}

struct Scheduled<E> {
    at: Time,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap pops the earliest event first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Events ordered by due time, then by scheduling order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_seq: u64,
    now: Time,
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> EventQueue<E> {
        EventQueue { heap: BinaryHeap::new(), next_seq: 0, now: Time(0) }
    }

    /// The time of the event popped last.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Schedules `event` at `at` (never in the past: clamped to now).
    pub fn at(&mut self, at: Time, event: E) {
        let at = at.max(self.now);
        self.heap.push(Scheduled { at, seq: self.next_seq, event });
        self.next_seq += 1;
    }

    /// Schedules `event` `micros` from now.
    pub fn after(&mut self, micros: u64, event: E) {
        let at = self.now.plus(micros);
        self.at(at, event);
    }

    /// The due time of the next event.
    pub fn peek_time(&self) -> Option<Time> {
        self.heap.peek().map(|s| s.at)
    }

    /// Takes the next event and advances the clock to it.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let s = self.heap.pop()?;
        debug_assert!(s.at >= self.now, "time never goes backwards");
        self.now = s.at;
        Some((s.at, s.event))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_schedule_order() {
        let mut q = EventQueue::new();
        q.at(Time(5), "b");
        q.at(Time(1), "a");
        q.at(Time(5), "c");
        assert_eq!(q.pop(), Some((Time(1), "a")));
        q.after(4, "d");
        assert_eq!(q.pop(), Some((Time(5), "b")));
        assert_eq!(q.pop(), Some((Time(5), "c")));
        assert_eq!(q.pop(), Some((Time(5), "d")));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn never_schedules_in_the_past() {
        let mut q = EventQueue::new();
        q.at(Time(10), 1);
        q.pop();
        q.at(Time(3), 2);
        assert_eq!(q.pop(), Some((Time(10), 2)));
    }
}
