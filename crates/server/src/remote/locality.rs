//! Where a data shard is served from: this member, or the members that
//! host it (ADR 0002, "Routing").
//!
//! The watch layer asks [`ShardLocality::locate`] once per client stream
//! and shard, when the stream first watches the shard, and again each time
//! a relay reconnects (for fresh candidates); the KV service asks it for
//! each request (or each part of one) before it goes to the node.
//! [`NodeLocality`] is the real answer: a shard is remote once the node
//! has published its state and does not hold it. [`DebugRemoteShards`] is
//! the test-only stand-in for placement on a subset of the members.

use std::sync::Arc;

use ringkv_consensus::{NodeId, ShardId};

use crate::runtime::{NodeHandle, NodeState};

/// A member a relay (or a forwarded KV call) may dial for a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCandidate {
    /// The member.
    pub member: NodeId,
    /// Its advertised client URLs (`http://` or `https://`), tried in order.
    pub client_urls: Vec<String>,
}

/// Where a shard is served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardHome {
    /// This member applies the shard: its node and hub serve it.
    Local,
    /// This member does not host the shard: ask one of these members
    /// (tried in order). Empty: no member is known yet; a relay retries
    /// with backoff, a KV call fails as unavailable.
    Remote(Vec<RelayCandidate>),
}

/// What the watch and KV services ask about each data shard they serve.
pub trait ShardLocality: Send + Sync + std::fmt::Debug + 'static {
    /// Where `shard` is served from for this member's clients.
    fn locate(&self, shard: ShardId) -> ShardHome;

    /// Whether this member applies `shard`, so that it may serve another
    /// member's relayed watch or forwarded call on it (a member that does
    /// not would serve a stream that never hears an event; it refuses,
    /// and the caller tries the next candidate).
    fn hosts(&self, shard: ShardId) -> bool;
}

/// Every shard is local: every member hosts every shard (a cluster whose
/// node serves every shard, and unit tests).
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

/// The node's own answer: a data shard is remote when the node has
/// published its state at least once and holds no replica of it; its
/// candidates are the voting members holding it, as the node last
/// published them (its replicas' configuration, else the metadata shard's
/// target). Before the first publication every shard counts as local: the
/// node itself then answers `NotHosted` for one it does not hold, and the
/// KV service sends the request on from that answer.
#[derive(Debug)]
pub struct NodeLocality {
    node: NodeHandle,
}

impl NodeLocality {
    /// The locality of the member whose node is `node`.
    pub fn new(node: NodeHandle) -> NodeLocality {
        NodeLocality { node }
    }
}

impl ShardLocality for NodeLocality {
    fn locate(&self, shard: ShardId) -> ShardHome {
        let state = self.node.state();
        if !state.published() || state.hosts(shard) {
            return ShardHome::Local;
        }
        ShardHome::Remote(candidates(state, &self.node.shard_replica_nodes(shard)))
    }

    fn hosts(&self, shard: ShardId) -> bool {
        let state = self.node.state();
        state.published() && state.hosts(shard)
    }
}

/// The members of `nodes` a call may be sent to, in that order: not this
/// member, not a learner member (it refuses client calls), and with a
/// client URL.
pub fn candidates(state: &NodeState, nodes: &[NodeId]) -> Vec<RelayCandidate> {
    let members = state.members();
    nodes
        .iter()
        .filter(|&&id| id != state.member_id())
        .filter_map(|&id| members.iter().find(|m| m.id == id))
        .filter(|m| !m.is_learner && !m.client_urls.is_empty())
        .map(|m| RelayCandidate { member: m.id, client_urls: m.client_urls.clone() })
        .collect()
}

/// TEST ONLY (`--debug-remote-shards`, hidden): every data shard but those
/// of `--debug-local-shards` counts as remote for this member's clients,
/// with every other voting member as a candidate, so that the watch relay
/// and the KV forwarding run in real clusters while every member still
/// hosts every shard. With `refuse`
/// (`--debug-refuse-forwarded`, hidden) the member also refuses every
/// relayed watch and forwarded KV call, as a member that hosts no data
/// shard would. Never for production: each remote shard costs a call to
/// another member.
#[derive(Debug)]
pub struct DebugRemoteShards {
    state: Arc<NodeState>,
    /// The data shards still served here.
    local: Vec<ShardId>,
    refuse: bool,
}

impl DebugRemoteShards {
    /// The locality of the member whose state is `state`, serving `local`
    /// here; `refuse`: it also refuses other members' calls (see the type
    /// docs).
    pub fn new(state: Arc<NodeState>, local: Vec<ShardId>, refuse: bool) -> DebugRemoteShards {
        DebugRemoteShards { state, local, refuse }
    }
}

impl ShardLocality for DebugRemoteShards {
    fn locate(&self, shard: ShardId) -> ShardHome {
        if self.local.contains(&shard) {
            return ShardHome::Local;
        }
        let mut all: Vec<NodeId> = self.state.members().iter().map(|m| m.id).collect();
        all.sort_unstable();
        ShardHome::Remote(candidates(&self.state, &all))
    }

    /// It does host every shard: it only pretends not to for its own
    /// clients, unless told to refuse.
    fn hosts(&self, _shard: ShardId) -> bool {
        !self.refuse
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringkv_consensus::{NodeId, ShardId};
    use ringkv_node::Member;
    use ringkv_storage::mvcc::Revision;

    use super::{DebugRemoteShards, RelayCandidate, ShardHome, ShardLocality, candidates};
    use crate::runtime::NodeState;

    fn member(id: u64, urls: &[&str], is_learner: bool) -> Member {
        Member {
            id: NodeId(id),
            client_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            is_learner,
            ..Member::default()
        }
    }

    /// Member 2's state, in a table of itself, two voters (one with two
    /// URLs), a learner and a member that has not published its URLs.
    fn state() -> Arc<NodeState> {
        let state = Arc::new(NodeState::new(NodeId(2), 1, Revision(1)));
        state.set_members(vec![
            member(5, &["http://e:1", "http://e:2"], false),
            member(1, &["http://a:1"], false),
            member(2, &["http://me:1"], false),
            member(3, &["http://c:1"], true),
            member(4, &[], false),
        ]);
        state
    }

    fn candidate(id: u64, urls: &[&str]) -> RelayCandidate {
        RelayCandidate {
            member: NodeId(id),
            client_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    #[test]
    fn candidates_are_the_reachable_voters_but_this_member_in_the_given_order() {
        let state = state();
        let nodes = [NodeId(5), NodeId(4), NodeId(3), NodeId(2), NodeId(1), NodeId(9)];
        assert_eq!(
            candidates(&state, &nodes),
            vec![candidate(5, &["http://e:1", "http://e:2"]), candidate(1, &["http://a:1"])]
        );
        assert!(candidates(&state, &[]).is_empty());
    }

    #[test]
    fn the_debug_locality_calls_every_shard_remote_and_refuses_only_when_told() {
        let pretend = DebugRemoteShards::new(state(), vec![ShardId(2)], false);
        assert_eq!(pretend.locate(ShardId(2)), ShardHome::Local);
        let expected = ShardHome::Remote(vec![
            candidate(1, &["http://a:1"]),
            candidate(5, &["http://e:1", "http://e:2"]),
        ]);
        assert_eq!(pretend.locate(ShardId(3)), expected);
        assert!(pretend.hosts(ShardId(3)), "it does host the shard: it serves forwarded calls");
        let refusing = DebugRemoteShards::new(state(), Vec::new(), true);
        assert_eq!(refusing.locate(ShardId(3)), expected);
        assert!(!refusing.hosts(ShardId(3)));
    }

    #[test]
    fn nothing_is_hosted_before_the_node_publishes() {
        let state = state();
        assert!(!state.published() && !state.hosts(ShardId(1)));
        state.set_shards(Vec::new());
        assert!(state.published(), "an empty publication is a publication");
    }
}
