//! The faults the simulator injects, the mix a seed draws (swarm testing),
//! and their counters.
//!
//! Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012): instead of
//! every run trying every fault at a fixed rate, each seed switches each
//! fault kind on or off and draws its own rates. A bug that needs a long
//! quiet stretch between two specific faults is found by seeds where noisy
//! kinds happen to be off, which a uniform mix would almost never produce.

use std::fmt;

use ringkv_consensus::DetRng;

/// A kind of fault (or disruptive operator action) the simulator injects.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A packet is dropped.
    Loss,
    /// A packet is delivered twice.
    Duplicate,
    /// A packet is held back far longer than usual.
    Delay,
    /// A packet overtakes an earlier one on its link.
    Reorder,
    /// The nodes are split into two groups that cannot talk.
    Partition,
    /// Packets flow from one group to the other but not back.
    AsymmetricPartition,
    /// One node is cut off from every other node.
    Isolate,
    /// A link holds its packets for a while, then delivers them in a burst.
    Clog,
    /// A replica's process crashes (unsynced writes are lost) and restarts later.
    Crash,
    /// The disk crashes in the middle of a WAL write or fsync (a torn write).
    CrashDuringSync,
    /// An fsync fails with `EIO`: the WAL poisons itself and the replica stops.
    FsyncError,
    /// A write fails with `ENOSPC`: the WAL poisons itself and the replica stops.
    NoSpace,
    /// Reading the WAL back fails with `EIO` now and then.
    ReadError,
    /// A new replica joins (as a learner, then a voter).
    AddReplica,
    /// A voter is removed.
    RemoveReplica,
    /// A voter is replaced by a new node in one joint change.
    ReplaceReplica,
    /// The leader hands leadership to another voter.
    TransferLeader,
    /// Leadership is churned through nodes with diverging logs: the leader
    /// is cut off, then each next leader right after its election (which
    /// lets the previous one back), and the last one crashes at its first
    /// commit while everyone is let back (Raft's Figure 8 is such a run).
    LeaderChurn,
    /// A node joins the ring and shards move onto it (sharded runs).
    JoinNode,
    /// A node leaves the ring and its shards move off it (sharded runs).
    LeaveNode,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 20] = [
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Delay,
        FaultKind::Reorder,
        FaultKind::Partition,
        FaultKind::AsymmetricPartition,
        FaultKind::Isolate,
        FaultKind::Clog,
        FaultKind::Crash,
        FaultKind::CrashDuringSync,
        FaultKind::FsyncError,
        FaultKind::NoSpace,
        FaultKind::ReadError,
        FaultKind::AddReplica,
        FaultKind::RemoveReplica,
        FaultKind::ReplaceReplica,
        FaultKind::TransferLeader,
        FaultKind::LeaderChurn,
        FaultKind::JoinNode,
        FaultKind::LeaveNode,
    ];

    /// The name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Delay => "delay",
            FaultKind::Reorder => "reorder",
            FaultKind::Partition => "partition",
            FaultKind::AsymmetricPartition => "asymmetric-partition",
            FaultKind::Isolate => "isolate",
            FaultKind::Clog => "clog",
            FaultKind::Crash => "crash",
            FaultKind::CrashDuringSync => "crash-during-sync",
            FaultKind::FsyncError => "fsync-eio",
            FaultKind::NoSpace => "enospc",
            FaultKind::ReadError => "read-eio",
            FaultKind::AddReplica => "add-replica",
            FaultKind::RemoveReplica => "remove-replica",
            FaultKind::ReplaceReplica => "replace-replica",
            FaultKind::TransferLeader => "transfer-leader",
            FaultKind::LeaderChurn => "leader-churn",
            FaultKind::JoinNode => "join-node",
            FaultKind::LeaveNode => "leave-node",
        }
    }

    const fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many faults of each kind were injected.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    counts: [u64; FaultKind::ALL.len()],
}

impl FaultCounts {
    /// Counts one fault of `kind`.
    pub fn add(&mut self, kind: FaultKind) {
        self.counts[kind.slot()] += 1;
    }

    /// Faults of `kind` so far.
    pub fn get(&self, kind: FaultKind) -> u64 {
        self.counts[kind.slot()]
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &FaultCounts) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    /// All faults.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(kind, count)` for every kind, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (FaultKind, u64)> + '_ {
        FaultKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }
}

/// Faults chosen by the nemesis at random intervals, with their weights.
const NEMESIS_KINDS: [FaultKind; 13] = [
    FaultKind::Partition,
    FaultKind::AsymmetricPartition,
    FaultKind::Isolate,
    FaultKind::Clog,
    FaultKind::Crash,
    FaultKind::CrashDuringSync,
    FaultKind::FsyncError,
    FaultKind::NoSpace,
    FaultKind::AddReplica,
    FaultKind::RemoveReplica,
    FaultKind::ReplaceReplica,
    FaultKind::TransferLeader,
    FaultKind::LeaderChurn,
];

/// Largest per-packet loss rate a seed may draw, in parts per million.
const LOSS_PPM_MAX: u64 = 100_000;
/// Largest per-packet duplication rate, in parts per million.
const DUPLICATE_PPM_MAX: u64 = 50_000;
/// Largest rate of packets held back far longer than usual, per million.
const DELAY_PPM_MAX: u64 = 100_000;
/// Largest rate of WAL reads that fail, in parts per million.
const READ_ERROR_PPM_MAX: u64 = 20_000;

/// The faults one seed injects, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMix {
    /// Packets lost, per million.
    pub loss_ppm: u32,
    /// Packets duplicated, per million.
    pub duplicate_ppm: u32,
    /// Packets held back far longer than usual, per million.
    pub delay_ppm: u32,
    /// Packets on a link may overtake each other.
    pub reorder: bool,
    /// WAL reads failing with `EIO`, per million.
    pub read_error_ppm: u32,
    /// Discrete faults the nemesis picks from, with their relative weights.
    pub nemesis: Vec<(FaultKind, u32)>,
    /// The nemesis acts every `[min, max)` microseconds.
    pub nemesis_interval_us: (u64, u64),
    /// Whether a node told that a peer is unreachable passes it on to its
    /// engine, and whether a crash tells the survivors at once (their
    /// connections to it close): the engines' leader-down hint.
    pub report_unreachable: bool,
    /// Chance, per thousand, that a newly elected leader is crashed or cut
    /// off moments after its election, before its first entries spread:
    /// the diverging logs of Raft's Figure 8 come from such leaders.
    pub depose_new_leader_permille: u32,
}

impl FaultMix {
    /// No faults at all.
    pub fn none() -> FaultMix {
        FaultMix {
            loss_ppm: 0,
            duplicate_ppm: 0,
            delay_ppm: 0,
            reorder: false,
            read_error_ppm: 0,
            nemesis: Vec::new(),
            nemesis_interval_us: (1, 2),
            report_unreachable: false,
            depose_new_leader_permille: 0,
        }
    }

    /// Draws a mix: each kind on with probability one half, rates and
    /// weights at random.
    pub fn draw(rng: &mut DetRng) -> FaultMix {
        let rate = |max: u64, rng: &mut DetRng| {
            if rng.chance(1, 2) { rng.range(1, max) as u32 } else { 0 }
        };
        let loss_ppm = rate(LOSS_PPM_MAX, rng);
        let duplicate_ppm = rate(DUPLICATE_PPM_MAX, rng);
        let delay_ppm = rate(DELAY_PPM_MAX, rng);
        let read_error_ppm = rate(READ_ERROR_PPM_MAX, rng);
        let mut nemesis = Vec::new();
        for k in NEMESIS_KINDS {
            if rng.chance(1, 2) {
                nemesis.push((k, rng.range(1, 5) as u32));
            }
        }
        // From a storm (a fault every few milliseconds) to a trickle
        // (every 400 ms).
        let (min, max) = if rng.chance(1, 4) {
            let min = rng.range(2_000, 10_000);
            (min, min + rng.range(1, 20_000))
        } else {
            let min = rng.range(20_000, 200_000);
            (min, min + rng.range(1, 200_000))
        };
        let depose_new_leader_permille =
            if rng.chance(1, 2) { rng.range(300, 1_000) as u32 } else { 0 };
        FaultMix {
            loss_ppm,
            duplicate_ppm,
            delay_ppm,
            reorder: rng.chance(1, 3),
            read_error_ppm,
            nemesis,
            nemesis_interval_us: (min, max),
            report_unreachable: rng.chance(1, 2),
            depose_new_leader_permille,
        }
    }

    /// Picks the next nemesis action, if any kind is enabled.
    pub fn pick(&self, rng: &mut DetRng) -> Option<FaultKind> {
        let total: u64 = self.nemesis.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut roll = rng.range(0, total);
        for (k, w) in &self.nemesis {
            let w = u64::from(*w);
            if roll < w {
                return Some(*k);
            }
            roll -= w;
        }
        None
    }

    /// Whether `kind` may be injected in this run.
    pub fn enables(&self, kind: FaultKind) -> bool {
        match kind {
            FaultKind::Loss => self.loss_ppm > 0,
            FaultKind::Duplicate => self.duplicate_ppm > 0,
            FaultKind::Delay => self.delay_ppm > 0,
            FaultKind::Reorder => self.reorder,
            FaultKind::ReadError => self.read_error_ppm > 0,
            k => self.nemesis.iter().any(|(n, _)| *n == k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_between_seeds_and_repeat_per_seed() {
        let mixes: Vec<FaultMix> = (0..32).map(|s| FaultMix::draw(&mut DetRng::new(s))).collect();
        assert_eq!(mixes[3], FaultMix::draw(&mut DetRng::new(3)));
        let distinct = mixes.iter().filter(|m| **m != mixes[0]).count();
        assert!(distinct > 20, "swarm draws should differ: {distinct}");
        // Over many seeds every kind is sometimes on and sometimes off;
        // ring changes are not part of the mix (sharded runs schedule them
        // from their layout).
        let ring = [FaultKind::JoinNode, FaultKind::LeaveNode];
        assert!(!mixes.iter().any(|m| ring.iter().any(|r| m.enables(*r))));
        for kind in FaultKind::ALL.into_iter().filter(|k| !ring.contains(k)) {
            let on = mixes.iter().filter(|m| m.enables(kind)).count();
            assert!(on > 0 && on < mixes.len(), "{kind} on in {on} of {}", mixes.len());
        }
    }

    #[test]
    fn pick_only_enabled_kinds() {
        let mut rng = DetRng::new(1);
        let mix = FaultMix { nemesis: vec![(FaultKind::Crash, 1)], ..FaultMix::none() };
        for _ in 0..10 {
            assert_eq!(mix.pick(&mut rng), Some(FaultKind::Crash));
        }
        assert_eq!(FaultMix::none().pick(&mut rng), None);
    }

    #[test]
    fn counts_add_and_merge() {
        let mut a = FaultCounts::default();
        a.add(FaultKind::Crash);
        a.add(FaultKind::Crash);
        let mut b = FaultCounts::default();
        b.add(FaultKind::Loss);
        b.merge(&a);
        assert_eq!(b.get(FaultKind::Crash), 2);
        assert_eq!(b.total(), 3);
    }
}
