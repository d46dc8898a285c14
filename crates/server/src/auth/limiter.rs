//! Brute-force protection for `Authenticate`: failed attempts are counted
//! per user name and client address; past [`LOGIN_FAILURES_MAX`] within
//! [`LOGIN_FAILURE_WINDOW`], that user is refused from that address
//! without a password check until the window has passed. Other users and
//! other addresses are unaffected, so an attacker cannot lock a user out
//! from everywhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed logins allowed per user and address within
/// [`LOGIN_FAILURE_WINDOW`].
pub const LOGIN_FAILURES_MAX: u32 = 5;

/// The window failed logins are counted over, from the first failure.
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Most (user, address) pairs tracked; past it the oldest is forgotten, so
/// a flood of names costs bounded memory.
pub const LOGIN_LIMITER_ENTRIES_MAX: usize = 10_000;

#[derive(Copy, Clone, Debug)]
struct Failures {
    first_at: Instant,
    count: u32,
}

/// Failed logins per (user, address).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: HashMap<(String, Option<IpAddr>), Failures>,
}

impl LoginLimiter {
    /// How long `user` from `addr` must still wait, if it is blocked now.
    pub fn blocked_for(
        &mut self,
        user: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        let key = (user.to_owned(), addr);
        let f = *self.failures.get(&key)?;
        let until = f.first_at + LOGIN_FAILURE_WINDOW;
        if now >= until {
            self.failures.remove(&key);
            return None;
        }
        (f.count >= LOGIN_FAILURES_MAX).then(|| until - now)
    }

    /// Records a failed login.
    pub fn failed(&mut self, user: &str, addr: Option<IpAddr>, now: Instant) {
        let key = (user.to_owned(), addr);
        if !self.failures.contains_key(&key) && self.failures.len() >= LOGIN_LIMITER_ENTRIES_MAX {
            self.failures.retain(|_, f| now < f.first_at + LOGIN_FAILURE_WINDOW);
            if self.failures.len() >= LOGIN_LIMITER_ENTRIES_MAX
                && let Some(oldest) =
                    self.failures.iter().min_by_key(|(_, f)| f.first_at).map(|(k, _)| k.clone())
            {
                self.failures.remove(&oldest);
            }
        }
        let f = self.failures.entry(key).or_insert(Failures { first_at: now, count: 0 });
        if now >= f.first_at + LOGIN_FAILURE_WINDOW {
            *f = Failures { first_at: now, count: 0 };
        }
        f.count += 1;
    }

    /// Records a successful login: its failures are forgotten.
    pub fn succeeded(&mut self, user: &str, addr: Option<IpAddr>) {
        self.failures.remove(&(user.to_owned(), addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_one_user_from_one_address_for_the_window() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..LOGIN_FAILURES_MAX {
            assert_eq!(l.blocked_for("root", a, t0), None);
            l.failed("root", a, t0);
        }
        assert!(l.blocked_for("root", a, t0).is_some());
        assert_eq!(l.blocked_for("root", b, t0), None, "another address");
        assert_eq!(l.blocked_for("alice", a, t0), None, "another user");
        assert_eq!(l.blocked_for("root", a, t0 + LOGIN_FAILURE_WINDOW), None, "the window passed");
        l.failed("root", a, t0);
        l.succeeded("root", a);
        assert_eq!(l.blocked_for("root", a, t0), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..LOGIN_LIMITER_ENTRIES_MAX + 5 {
            l.failed(&format!("u{i}"), None, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(l.failures.len(), LOGIN_LIMITER_ENTRIES_MAX);
    }
}
