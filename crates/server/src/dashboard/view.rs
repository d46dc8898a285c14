//! The JSON the dashboard polls: one member's view, and the cluster's,
//! gathered from every member.

use std::collections::BTreeMap;

use ringkv_consensus::NodeId;
use serde::{Deserialize, Serialize};

use super::fetch::fetch_node_view;
use super::{CLUSTER_EVENTS_MAX, MEMBERS_FETCHED_MAX, PEER_FETCH_TIMEOUT};
use crate::config::HttpUrl;
use crate::metrics::events::{Event, hex_id, now_unix_ms};
use crate::metrics::{CounterSample, MetricsSnapshot};
use crate::services::Context;

/// One member as its own view describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its member id (16 hex digits).
    pub member_id: String,
    /// Its name.
    pub name: String,
    /// Its zone (`--zone`) as the member table records it; `None` for a
    /// member without one (and in views from members that predate zones).
    #[serde(default)]
    pub zone: Option<String>,
    /// The cluster id (16 hex digits).
    pub cluster_id: String,
    /// Its consensus engine (`raft`, `paxos`).
    pub engine: String,
    /// The ringkv version it runs.
    pub version: String,
    /// Whether it serves: it knows a leader, has no alarm and has not
    /// stopped (as `/health`, without the read).
    pub healthy: bool,
    /// Why not, in `/health`'s words; empty when healthy.
    pub health_reason: String,
    /// The shards it hosts.
    pub shards: Vec<ShardView>,
    /// The member table as it applied it.
    pub members: Vec<MemberView>,
    /// Its counters.
    pub metrics: MetricsSnapshot,
    /// Its counters over the last minutes, oldest first, for the charts.
    pub history: Vec<CounterSample>,
    /// The leader and replica changes it saw, oldest first.
    pub events: Vec<Event>,
    /// When the view was made, in milliseconds since the Unix epoch.
    pub now_unix_ms: u64,
}

/// One shard as a member hosting it sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardView {
    /// The shard.
    pub shard: u64,
    /// This member's role in it: `leader`, `follower` or `learner`.
    pub role: String,
    /// Its leader as this member knows it.
    pub leader: Option<String>,
    /// Term (Paxos: ballot round).
    pub term: u64,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied here.
    pub applied_index: u64,
    /// The MVCC revision.
    pub revision: i64,
    /// Voting replicas.
    pub voters: Vec<String>,
    /// Learners.
    pub learners: Vec<String>,
    /// The replicas the metadata shard's target names for it (empty while
    /// every member holds it, and for the metadata shard).
    #[serde(default)]
    pub target: Vec<String>,
    /// Where its keys sit on the key-hash circle, as fractions of a turn:
    /// `[start, end)` (see [`keyspace_arc`]).
    pub keyspace: [f64; 2],
}

/// One member of the member table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Member id (16 hex digits).
    pub id: String,
    /// Name (empty until it started).
    pub name: String,
    /// Client URLs (empty until it started).
    pub client_urls: Vec<String>,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Its zone (`--zone`; `None` until it started, or without one).
    #[serde(default)]
    pub zone: Option<String>,
}

/// One member in the cluster view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Member id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The client URL its view was asked at.
    pub url: Option<String>,
    /// Whether its view arrived.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// Its view.
    pub view: Option<NodeView>,
}

/// The whole cluster as one member gathered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The member that gathered it.
    pub via: String,
    /// The cluster id.
    pub cluster_id: String,
    /// Data shards in the cluster.
    pub shard_count: u32,
    /// Every member, by name (then id).
    pub nodes: Vec<NodeEntry>,
    /// Events every member saw, merged (one per change, at the time the
    /// first member saw it), oldest first, at most
    /// [`CLUSTER_EVENTS_MAX`].
    pub events: Vec<Event>,
    /// When it was gathered, in milliseconds since the Unix epoch.
    pub now_unix_ms: u64,
}

/// The slice of the key-hash circle that `shard` (of `shard_count`) owns,
/// as fractions of a turn. The ring crate maps a key whose hash is `h` to
/// shard `1 + ⌊h · S / 2⁶⁴⌋`, so shard `s` owns `[(s − 1)/S, s/S)`.
pub fn keyspace_arc(shard: u64, shard_count: u32) -> [f64; 2] {
    let count = f64::from(shard_count.max(1));
    let index = shard.saturating_sub(1) as f64;
    [index / count, (index + 1.0) / count]
}

fn hex_ids(ids: &[NodeId]) -> Vec<String> {
    ids.iter().copied().map(hex_id).collect()
}

/// This member's view.
pub fn node_view(ctx: &Context, shard_count: u32) -> NodeView {
    let node = ctx.node();
    let state = ctx.state();
    let health_reason = if state.is_stopped() {
        "STOPPED".to_owned()
    } else if !state.has_leader() {
        "RAFT NO LEADER".to_owned()
    } else if let Some(alarm) = state.alarms().first() {
        format!("ALARM {}", alarm.alarm.name())
    } else {
        String::new()
    };
    let members = state.members();
    let me = state.member_id();
    let own = members.iter().find(|m| m.id == me);
    let name = own.map(|m| m.name.clone()).unwrap_or_default();
    let zone = own.and_then(|m| m.zone.clone());
    let shards = state
        .shard_reports()
        .into_iter()
        .map(|r| {
            let s = &r.status;
            let role = if s.is_leader {
                "leader"
            } else if s.is_learner {
                "learner"
            } else {
                "follower"
            };
            ShardView {
                shard: s.shard.0,
                role: role.to_owned(),
                leader: s.leader.map(hex_id),
                term: s.term,
                commit_index: s.commit_index.0,
                applied_index: s.applied_index.0,
                revision: s.revision.0,
                voters: hex_ids(&r.voters),
                learners: hex_ids(&r.learners),
                target: state.shard_target(s.shard).as_deref().map(hex_ids).unwrap_or_default(),
                keyspace: keyspace_arc(s.shard.0, shard_count),
            }
        })
        .collect();
    NodeView {
        member_id: hex_id(me),
        name,
        zone,
        cluster_id: format!("{:016x}", state.cluster_id()),
        engine: node.metrics().engine().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        healthy: health_reason.is_empty(),
        health_reason,
        shards,
        members: members
            .into_iter()
            .map(|m| MemberView {
                id: hex_id(m.id),
                name: m.name,
                client_urls: m.client_urls,
                peer_urls: m.peer_urls,
                is_learner: m.is_learner,
                zone: m.zone,
            })
            .collect(),
        metrics: node.metrics().snapshot(),
        history: node.metrics().history(),
        events: node.metrics().events(),
        now_unix_ms: now_unix_ms(),
    }
}

/// Every member's view: this one's, and the others' fetched from their
/// first client URL (see the module docs of [`super`]).
pub async fn cluster_view(ctx: &Context, shard_count: u32) -> ClusterView {
    let own = node_view(ctx, shard_count);
    let mut members = own.members.clone();
    if !members.iter().any(|m| m.id == own.member_id) {
        // Not in its own table yet (a member still catching up).
        members.push(MemberView {
            id: own.member_id.clone(),
            name: own.name.clone(),
            client_urls: Vec::new(),
            peer_urls: Vec::new(),
            is_learner: false,
            zone: own.zone.clone(),
        });
    }
    let fetches = members.iter().enumerate().map(|(i, m)| {
        let own = (m.id == own.member_id).then(|| own.clone());
        let url = m.client_urls.first().cloned();
        let fetch = i < MEMBERS_FETCHED_MAX;
        async move {
            let (view, error) = match (own, &url) {
                (Some(view), _) => (Some(view), None),
                (None, _) if !fetch => {
                    (None, Some(format!("not fetched: over {MEMBERS_FETCHED_MAX} members")))
                }
                (None, None) => (None, Some("has not published a client URL yet".to_owned())),
                (None, Some(url)) => match url.parse::<HttpUrl>() {
                    Err(e) => (None, Some(e.to_string())),
                    Ok(parsed) => match fetch_node_view(&parsed, PEER_FETCH_TIMEOUT).await {
                        Ok(view) => (Some(view), None),
                        Err(e) => (None, Some(e.to_string())),
                    },
                },
            };
            NodeEntry {
                id: m.id.clone(),
                name: m.name.clone(),
                url,
                reachable: view.is_some(),
                error,
                view,
            }
        }
    });
    let mut nodes = futures_util::future::join_all(fetches).await;
    nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let events = merge_events(nodes.iter().filter_map(|n| n.view.as_ref()));
    ClusterView {
        via: own.member_id,
        cluster_id: own.cluster_id,
        shard_count,
        nodes,
        events,
        now_unix_ms: now_unix_ms(),
    }
}

/// The events of every view, one per change (members see the same
/// election, each at its own time: the earliest is kept), oldest first,
/// the newest [`CLUSTER_EVENTS_MAX`].
pub(crate) fn merge_events<'a>(views: impl Iterator<Item = &'a NodeView>) -> Vec<Event> {
    let mut unique: BTreeMap<(u64, u64, String), Event> = BTreeMap::new();
    for event in views.flat_map(|v| &v.events) {
        let kind = serde_json::to_string(&event.kind).expect("events serialize");
        let slot = unique.entry((event.shard, event.term, kind)).or_insert_with(|| event.clone());
        if event.at_unix_ms < slot.at_unix_ms {
            *slot = event.clone();
        }
    }
    let mut events: Vec<Event> = unique.into_values().collect();
    events.sort_by_key(|e| (e.at_unix_ms, e.shard, e.term));
    let excess = events.len().saturating_sub(CLUSTER_EVENTS_MAX);
    events.drain(..excess);
    events
}
