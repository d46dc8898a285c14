//! The compactor's decisions, with no clock and no I/O: given the time
//! (as a [`Duration`] since an arbitrary origin) and a shard's revision at
//! each tick, what to compact. The task in [`super`] feeds it.
//!
//! The rules are etcd 3.4's (`server/etcdserver/api/v3compactor`):
//!
//! - **periodic** (retention `P`): a revision sample is taken every
//!   `min(P, 1 h) / 10`; the last `P / that + 1` samples are kept, so the
//!   oldest is the revision of `P` ago. The first compaction happens once
//!   `P` has passed since the compactor started, to that oldest sample;
//!   after a success the next one waits `min(P, 1 h)`, and after a failure
//!   it is retried on the next sample.
//! - **revision** (retention `R`): every [`REVISION_CHECK_INTERVAL_DEFAULT`]
//!   (5 min) the shard is compacted to `current − R`, unless that is not
//!   positive or is the revision the last success compacted to.
//!
//! A planner that is not active (its node does not lead; etcd's `Pause`)
//! keeps sampling but never compacts, so that a node that becomes leader
//! compacts to a revision it saw `P` ago, as etcd's resumed compactor does.

use std::collections::VecDeque;
use std::time::Duration;

use ringkv_storage::mvcc::Revision;

/// How often the revision compactor checks (etcd's `revInterval`).
pub const REVISION_CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// The periodic compactor compacts at most this often, however long the
/// retention (etcd: "if the period is more than an hour, compact every
/// hour").
pub const PERIODIC_COMPACT_INTERVAL_MAX: Duration = Duration::from_secs(60 * 60);

/// The periodic compactor samples the revision this many times per
/// compaction interval (etcd's `retryDivisor`).
pub const PERIODIC_SAMPLES_PER_INTERVAL: u32 = 10;

/// What to keep: etcd's `--auto-compaction-mode` with its retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Keep the history of the last `retention` of time.
    Periodic {
        /// How far back history is kept; never zero.
        retention: Duration,
    },
    /// Keep the last `retention` revisions, checked every `check_interval`.
    Revision {
        /// How many revisions are kept; never zero.
        retention: u64,
        /// How often the revision is checked
        /// ([`REVISION_CHECK_INTERVAL_DEFAULT`] unless a test shortens it).
        check_interval: Duration,
    },
}

impl Policy {
    /// How often the planner is ticked: the periodic sample interval, or
    /// the revision check interval.
    pub fn tick_interval(&self) -> Duration {
        match *self {
            Policy::Periodic { retention } => {
                retention.min(PERIODIC_COMPACT_INTERVAL_MAX) / PERIODIC_SAMPLES_PER_INTERVAL
            }
            Policy::Revision { check_interval, .. } => check_interval,
        }
    }

    /// How many samples the periodic planner keeps: enough that the
    /// oldest was taken `retention` ago (etcd's `getRetentions`).
    fn samples_kept(&self) -> usize {
        match *self {
            Policy::Periodic { retention } => {
                let every = self.tick_interval().as_nanos().max(1);
                usize::try_from(retention.as_nanos() / every)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1)
            }
            Policy::Revision { .. } => 0,
        }
    }
}

/// One shard's compaction planner.
#[derive(Clone, Debug)]
pub struct Planner {
    policy: Policy,
    /// Periodic: the revisions sampled at past ticks, oldest first.
    ///
    /// Invariant: `samples.len() <= policy.samples_kept()`.
    samples: VecDeque<Revision>,
    /// Periodic: when the last compaction succeeded (at first, when the
    /// planner started).
    last_success: Duration,
    /// Periodic: how long after `last_success` the next compaction is due:
    /// the retention at first, then the compaction interval.
    due_after: Duration,
    /// Revision: the revision the last success compacted to (etcd's `prev`).
    last_compacted: Revision,
}

impl Planner {
    /// A planner that starts at `now` and takes `current` as its first
    /// sample.
    pub fn new(policy: Policy, now: Duration, current: Revision) -> Planner {
        let due_after = match policy {
            Policy::Periodic { retention } => retention,
            Policy::Revision { .. } => Duration::ZERO,
        };
        let mut planner = Planner {
            policy,
            samples: VecDeque::new(),
            last_success: now,
            due_after,
            last_compacted: Revision(0),
        };
        planner.sample(current);
        planner
    }

    /// The policy planned for.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// One tick, [`Policy::tick_interval`] after the previous one (or the
    /// start), when the shard is at revision `current`: the revision to
    /// compact to, if one is due and `active` (this node leads). Report the
    /// outcome with [`Planner::on_compacted`]; a failure needs no report
    /// (the next tick retries).
    pub fn on_tick(&mut self, now: Duration, current: Revision, active: bool) -> Option<Revision> {
        let target = if active { self.due(now, current) } else { None };
        self.sample(current);
        debug_assert!(target.is_none_or(|t| t.0 > 0 && t <= current), "{target:?} {current:?}");
        target
    }

    /// The compaction to `revision` that [`Planner::on_tick`] asked for
    /// succeeded at `now`, or found it already compacted (also a success,
    /// as in etcd).
    pub fn on_compacted(&mut self, now: Duration, revision: Revision) {
        match self.policy {
            Policy::Periodic { retention } => {
                self.last_success = now;
                self.due_after = retention.min(PERIODIC_COMPACT_INTERVAL_MAX);
            }
            Policy::Revision { .. } => self.last_compacted = revision,
        }
    }

    fn due(&self, now: Duration, current: Revision) -> Option<Revision> {
        match self.policy {
            Policy::Periodic { .. } => {
                if now.saturating_sub(self.last_success) < self.due_after {
                    return None;
                }
                self.samples.front().copied().filter(|r| r.0 > 0)
            }
            Policy::Revision { retention, .. } => {
                let keep = i64::try_from(retention).unwrap_or(i64::MAX);
                let target = Revision(current.0.saturating_sub(keep));
                (target.0 > 0 && target != self.last_compacted).then_some(target)
            }
        }
    }

    fn sample(&mut self, current: Revision) {
        let kept = self.policy.samples_kept();
        if kept == 0 {
            return;
        }
        self.samples.push_back(current);
        while self.samples.len() > kept {
            self.samples.pop_front();
        }
    }
}
