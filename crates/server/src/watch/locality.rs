//! Where a shard's watch events come from: this member's own hub, or a
//! member that hosts the shard (the relay, `relay.rs`).
//!
//! The watch layer asks [`ShardLocality::locate`] once per client stream and
//! shard, when the stream first watches the shard, and again each time a
//! relay reconnects (for fresh candidates). Today every member hosts every
//! shard ([`AllLocal`]); [`DebugRelayEverything`] is the test-only stand-in
//! for placement on a subset of the members. Placement plugs in as one more
//! implementation: `Local` when the node hosts the shard, otherwise the
//! shard's replicas as candidates.

use std::sync::Arc;

use ringkv_consensus::{NodeId, ShardId};

use crate::runtime::NodeState;

/// A member a relay may dial for a shard's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCandidate {
    /// The member.
    pub member: NodeId,
    /// Its advertised client URLs (`http://` or `https://`), tried in order.
    pub client_urls: Vec<String>,
}

/// Where a shard's watch events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardHome {
    /// This member applies the shard: its own hub has every event.
    Local,
    /// This member does not host the shard: relay from one of these members
    /// (tried in order, then round again). Empty: no member is known yet;
    /// the relay retries with backoff.
    Remote(Vec<RelayCandidate>),
}

/// What the watch layer asks about each shard it serves.
pub trait ShardLocality: Send + Sync + std::fmt::Debug + 'static {
    /// Where `shard`'s watch events come from for this member's clients.
    fn locate(&self, shard: ShardId) -> ShardHome;

    /// Whether this member applies `shard`, so that it may serve another
    /// member's relay of it (a member that does not would serve a stream
    /// that never hears an event; it refuses, and the relay tries the next
    /// candidate).
    fn hosts(&self, shard: ShardId) -> bool;
}

/// Every shard is local: every member hosts every shard (today's
/// placement, and always the case with at most R members).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllLocal;

impl ShardLocality for AllLocal {
    fn locate(&self, _shard: ShardId) -> ShardHome {
        ShardHome::Local
    }

    fn hosts(&self, _shard: ShardId) -> bool {
        true
    }
}

/// TEST ONLY (`--debug-relay-watches`): every data shard counts as remote,
/// with every other voting member as a candidate, so that the relay path
/// runs in real clusters while every member still hosts every shard.
/// Never for production: each watched shard costs an extra stream to
/// another member.
#[derive(Debug)]
pub struct DebugRelayEverything {
    state: Arc<NodeState>,
    me: NodeId,
}

impl DebugRelayEverything {
    /// The locality of member `me`, whose member table is `state`'s.
    pub fn new(state: Arc<NodeState>, me: NodeId) -> DebugRelayEverything {
        DebugRelayEverything { state, me }
    }
}

impl ShardLocality for DebugRelayEverything {
    fn locate(&self, _shard: ShardId) -> ShardHome {
        let candidates = self
            .state
            .members()
            .into_iter()
            // A learner refuses client calls, watches included.
            .filter(|m| m.id != self.me && !m.is_learner && !m.client_urls.is_empty())
            .map(|m| RelayCandidate { member: m.id, client_urls: m.client_urls })
            .collect();
        ShardHome::Remote(candidates)
    }

    /// It does host every shard: it only pretends not to for its own
    /// clients.
    fn hosts(&self, _shard: ShardId) -> bool {
        true
    }
}
