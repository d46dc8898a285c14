//! The simple-token table: token → user, each with an expiry that every
//! use pushes back by the TTL (etcd's simple tokens behave the same).
//!
//! Every replica fills it when it applies an [`super::AuthChange::IssueToken`],
//! and times tokens out on its own clock. It lives in memory only: a
//! restarted node has forgotten every token, and its clients see `invalid
//! auth token` and authenticate again (clientv3 does so by itself).

use std::collections::BTreeMap;
use std::time::Duration;

/// Most tokens a node holds. Past it, issuing a token evicts the one
/// closest to expiring: a flood of logins costs memory only up to here.
pub const TOKENS_MAX: usize = 65_536;

/// A token's user and when it expires (node clock).
#[derive(Clone, Debug, PartialEq, Eq)]
struct TokenEntry {
    user: String,
    expires_at: Duration,
}

/// The simple tokens this node knows.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    tokens: BTreeMap<String, TokenEntry>,
}

impl TokenTable {
    /// Records `token` for `user`, valid until `now + ttl` (then renewed by
    /// every use).
    pub fn issue(&mut self, token: String, user: String, now: Duration, ttl: Duration) {
        if self.tokens.len() >= TOKENS_MAX && !self.tokens.contains_key(&token) {
            let soonest = self
                .tokens
                .iter()
                .min_by_key(|(_, e)| e.expires_at)
                .map(|(t, _)| t.clone())
                .expect("the table is full, so not empty");
            self.tokens.remove(&soonest);
        }
        self.tokens.insert(token, TokenEntry { user, expires_at: now + ttl });
        debug_assert!(self.tokens.len() <= TOKENS_MAX);
    }

    /// The user `token` was issued to, renewing it; `None` for an unknown
    /// or expired token.
    pub fn resolve(&mut self, token: &str, now: Duration, ttl: Duration) -> Option<String> {
        let entry = self.tokens.get_mut(token)?;
        if entry.expires_at <= now {
            self.tokens.remove(token);
            return None;
        }
        entry.expires_at = now + ttl;
        Some(entry.user.clone())
    }

    /// Forgets every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&mut self, user: &str) {
        self.tokens.retain(|_, e| e.user != user);
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    /// Drops the expired tokens.
    pub fn expire(&mut self, now: Duration) {
        self.tokens.retain(|_, e| e.expires_at > now);
    }

    /// How many tokens are held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
