//! The event trace of a run: a running hash of every event (the
//! determinism self-check compares it between two runs of one seed) and,
//! when asked for, a readable line per event.
//!
//! Hashing is cheap and always on; formatting happens only when the trace
//! is kept, so the hot path never builds strings.

use std::fmt::Write as _;

use ringkv_consensus::NodeId;

use crate::time::Time;

/// Mixes `value` into `h` (a multiply–xorshift step with the SplitMix64
/// finaliser's constants): order-sensitive and well distributed.
pub fn mix(h: u64, value: u64) -> u64 {
    let mut z = (h ^ value).wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of `bytes`, eight bytes per step.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = mix(0x243f_6a88_85a3_08d3, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().expect("chunks_exact yields eight bytes")));
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    mix(h, u64::from_le_bytes(tail))
}

/// Who an event happened to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The simulator itself (faults, phases).
    World,
    /// A replica's node.
    Node(NodeId),
    /// A client process.
    Client(u64),
}

impl Actor {
    fn code(self) -> u64 {
        match self {
            Actor::World => 0,
            Actor::Node(n) => (1 << 32) | n.0,
            Actor::Client(c) => (2 << 32) | c,
        }
    }
}

/// The trace of one run.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    /// Readable lines, when kept.
    lines: Option<String>,
}

impl Trace {
    /// A trace that keeps readable lines if `keep` is set.
    pub fn new(keep: bool) -> Trace {
        Trace { hash: 0, events: 0, lines: keep.then(String::new) }
    }

    /// Whether readable lines are kept.
    pub fn is_kept(&self) -> bool {
        self.lines.is_some()
    }

    /// Records one event: `kind` and the numbers `a`, `b` enter the hash;
    /// `detail` is rendered only when lines are kept.
    pub fn event(
        &mut self,
        at: Time,
        actor: Actor,
        kind: &'static str,
        a: u64,
        b: u64,
        detail: impl FnOnce() -> String,
    ) {
        self.events += 1;
        let mut h = mix(self.hash, at.0);
        h = mix(h, actor.code());
        h = mix(h, hash_bytes(kind.as_bytes()));
        h = mix(h, a);
        self.hash = mix(h, b);
        if let Some(lines) = &mut self.lines {
            let who = match actor {
                Actor::World => "world".to_string(),
                Actor::Node(n) => n.to_string(),
                Actor::Client(c) => format!("c{c}"),
            };
            let _ = writeln!(lines, "{at} {who:>5} {kind:<14} {}", detail());
        }
    }

    /// Records an event in the hash only: too frequent to be worth a line
    /// (ticks).
    pub fn quiet(&mut self, at: Time, actor: Actor, kind: &'static str) {
        self.event(at, actor, kind, 0, 0, String::new);
        if let Some(lines) = &mut self.lines {
            // Drop the line just written.
            let cut = lines[..lines.len() - 1].rfind('\n').map_or(0, |i| i + 1);
            lines.truncate(cut);
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The readable lines, if kept.
    pub fn lines(&self) -> Option<&str> {
        self.lines.as_deref()
    }

    /// Takes the readable lines, if kept.
    pub fn take_lines(&mut self) -> Option<String> {
        self.lines.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_order_and_content() {
        let mut a = Trace::new(false);
        a.event(Time(1), Actor::World, "x", 1, 2, String::new);
        a.event(Time(2), Actor::Node(NodeId(1)), "y", 3, 4, String::new);
        let mut b = Trace::new(true);
        b.event(Time(1), Actor::World, "x", 1, 2, String::new);
        b.event(Time(2), Actor::Node(NodeId(1)), "y", 3, 4, String::new);
        assert_eq!(a.hash(), b.hash());
        let mut c = Trace::new(false);
        c.event(Time(2), Actor::Node(NodeId(1)), "y", 3, 4, String::new);
        c.event(Time(1), Actor::World, "x", 1, 2, String::new);
        assert_ne!(a.hash(), c.hash());
        assert!(b.lines().is_some_and(|l| l.lines().count() == 2));
    }

    #[test]
    fn byte_hash_sees_every_byte() {
        assert_ne!(hash_bytes(b"abcdefghi"), hash_bytes(b"abcdefghj"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
    }
}
