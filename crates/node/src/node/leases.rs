//! The leader's lease clocks.
//!
//! Lease expiry is the shard leader's job, as in etcd: the store keeps each
//! lease's granted TTL (and the remaining TTL of the last checkpoint); only
//! the leader keeps a deadline per lease, on its own monotonic clock. It
//! renews deadlines on keep-alives, proposes a revoke when one passes, and
//! periodically proposes checkpoints of the remaining TTLs so that a new
//! leader restarts each clock where the old one left it rather than at the
//! full TTL. A new leader adds one election timeout to every deadline:
//! keep-alives sent to the old leader during the election were lost.
//!
//! A keep-alive resets a lease to its full TTL; if a checkpoint recorded a
//! smaller remaining TTL, that record is now stale and would make a later
//! leader expire the lease early, so the renewed lease is checkpointed
//! again in the same round (etcd's checkpoint-on-renew).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ringkv_storage::mvcc::{LeaseCheckpoint, LeaseId, LeaseInfo};

/// One lease's clock.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct LeaseClock {
    granted_ttl: i64,
    deadline: Duration,
    /// A checkpoint of this lease is (or will be) in the store.
    checkpointed: bool,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

/// The leader's clocks for one shard's leases; empty on followers.
#[derive(Debug, Default)]
pub(super) struct LeaseTracker {
    /// Whether this node leads the shard (clocks run only then).
    active: bool,
    clocks: BTreeMap<LeaseId, LeaseClock>,
    /// Leases whose revoke was proposed, with when to propose again if the
    /// revoke has not applied by then.
    revoking: BTreeMap<LeaseId, Duration>,
    next_checkpoint: Duration,
    /// Renewed leases whose stored checkpoint went stale.
    stale: BTreeSet<LeaseId>,
}

impl LeaseTracker {
    /// Starts the clocks on becoming leader.
    pub(super) fn promote(
        &mut self,
        leases: &[LeaseInfo],
        now: Duration,
        extend: Duration,
        checkpoint_interval: Duration,
    ) {
        *self = LeaseTracker {
            active: true,
            next_checkpoint: now + checkpoint_interval,
            ..LeaseTracker::default()
        };
        for l in leases {
            let ttl = l.remaining_ttl.unwrap_or(l.granted_ttl);
            self.clocks.insert(
                l.id,
                LeaseClock {
                    granted_ttl: l.granted_ttl,
                    deadline: now + seconds(ttl) + extend,
                    checkpointed: l.remaining_ttl.is_some(),
                },
            );
        }
    }

    /// Stops the clocks on losing leadership.
    pub(super) fn demote(&mut self) {
        *self = LeaseTracker::default();
    }

    /// Whether the clocks run (this node leads).
    pub(super) fn is_active(&self) -> bool {
        self.active
    }

    /// A grant applied.
    pub(super) fn granted(&mut self, id: LeaseId, ttl: i64, now: Duration) {
        if self.active {
            let clock =
                LeaseClock { granted_ttl: ttl, deadline: now + seconds(ttl), checkpointed: false };
            self.clocks.insert(id, clock);
        }
    }

    /// A revoke applied (by a client or by expiry).
    pub(super) fn revoked(&mut self, id: LeaseId) {
        self.clocks.remove(&id);
        self.revoking.remove(&id);
        self.stale.remove(&id);
    }

    /// A keep-alive: the lease's TTL from now, or `None` if there is no
    /// such lease.
    pub(super) fn renew(&mut self, id: LeaseId, now: Duration) -> Option<i64> {
        if self.revoking.contains_key(&id) {
            // Expired and being revoked: too late to renew, as in etcd.
            return None;
        }
        let clock = self.clocks.get_mut(&id)?;
        clock.deadline = now + seconds(clock.granted_ttl);
        if clock.checkpointed {
            self.stale.insert(id);
        }
        Some(clock.granted_ttl)
    }

    /// `(remaining seconds, granted seconds)` of a lease, remaining
    /// truncated as etcd reports it.
    pub(super) fn remaining(&self, id: LeaseId, now: Duration) -> Option<(i64, i64)> {
        let c = self.clocks.get(&id)?;
        Some((c.deadline.saturating_sub(now).as_secs() as i64, c.granted_ttl))
    }

    /// Every lease id with a clock, in order.
    pub(super) fn ids(&self) -> Vec<LeaseId> {
        self.clocks.keys().copied().collect()
    }

    /// Leases whose deadline passed and whose revoke is not already on its
    /// way (or has been for `retry_after` without applying), at most `max`.
    pub(super) fn take_expired(
        &mut self,
        now: Duration,
        retry_after: Duration,
        max: usize,
    ) -> Vec<LeaseId> {
        let mut out = Vec::new();
        for (&id, c) in &self.clocks {
            if out.len() >= max {
                break;
            }
            let due = self.revoking.get(&id).is_none_or(|&at| at <= now);
            if c.deadline <= now && due {
                out.push(id);
            }
        }
        for &id in &out {
            self.revoking.insert(id, now + retry_after);
        }
        out
    }

    /// Checkpoints to propose now: every lease's remaining TTL once per
    /// `interval`, and renewed leases whose checkpoint went stale at once.
    pub(super) fn take_checkpoints(
        &mut self,
        now: Duration,
        interval: Duration,
    ) -> Vec<LeaseCheckpoint> {
        let ids: Vec<LeaseId> = if now >= self.next_checkpoint {
            self.next_checkpoint = now + interval;
            self.clocks.keys().copied().collect()
        } else {
            self.stale.iter().copied().collect()
        };
        self.stale.clear();
        let mut out = Vec::new();
        for id in ids {
            let Some(c) = self.clocks.get_mut(&id) else { continue };
            if c.deadline <= now {
                continue;
            }
            let left = c.deadline - now;
            // Rounded up: a checkpoint never shortens a lease.
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            c.checkpointed = true;
            out.push(LeaseCheckpoint { id, remaining_ttl: secs as i64 });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: i64, granted: i64, remaining: Option<i64>) -> LeaseInfo {
        LeaseInfo { id: LeaseId(id), granted_ttl: granted, remaining_ttl: remaining, keys: vec![] }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn clocks_start_from_checkpoints_plus_an_election() {
        let mut t = LeaseTracker::default();
        t.promote(&[info(1, 10, None), info(2, 10, Some(3))], 100 * S, S, 300 * S);
        assert_eq!(t.remaining(LeaseId(1), 100 * S), Some((11, 10)));
        assert_eq!(t.remaining(LeaseId(2), 100 * S), Some((4, 10)));
        assert!(t.take_expired(Duration::from_millis(103_999), S, 10).is_empty());
        assert_eq!(t.take_expired(104 * S, S, 10), vec![LeaseId(2)]);
        // Not proposed again until the retry time.
        assert!(t.take_expired(Duration::from_millis(104_500), S, 10).is_empty());
        assert_eq!(t.take_expired(106 * S, S, 10), vec![LeaseId(2)]);
        assert_eq!(t.renew(LeaseId(2), 106 * S), None, "too late once revoking");
        t.revoked(LeaseId(2));
        assert_eq!(t.remaining(LeaseId(2), 106 * S), None);
    }

    #[test]
    fn renewing_a_checkpointed_lease_checkpoints_it_again() {
        let mut t = LeaseTracker::default();
        t.promote(
            &[info(1, 10, Some(2)), info(2, 10, None)],
            Duration::ZERO,
            Duration::ZERO,
            300 * S,
        );
        assert_eq!(t.renew(LeaseId(2), S), Some(10));
        assert!(t.take_checkpoints(S, 300 * S).is_empty(), "never checkpointed: nothing stale");
        assert_eq!(t.renew(LeaseId(1), S), Some(10));
        let cps = t.take_checkpoints(Duration::from_millis(1500), 300 * S);
        assert_eq!(cps, vec![LeaseCheckpoint { id: LeaseId(1), remaining_ttl: 10 }]);
        let all = t.take_checkpoints(300 * S, 300 * S);
        assert!(all.is_empty(), "both expired by then");
        t.granted(LeaseId(3), 60, 300 * S);
        let all = t.take_checkpoints(600 * S, 300 * S);
        assert!(all.is_empty(), "lease 3 expired at 360 s");
    }

    #[test]
    fn followers_keep_no_clocks() {
        let mut t = LeaseTracker::default();
        t.granted(LeaseId(1), 10, S);
        assert_eq!(t.renew(LeaseId(1), S), None);
        assert!(!t.is_active());
        t.promote(&[], S, S, S);
        t.granted(LeaseId(1), 10, S);
        assert_eq!(t.ids(), vec![LeaseId(1)]);
        t.demote();
        assert!(t.ids().is_empty());
    }
}
