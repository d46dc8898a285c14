//! The node thread: one [`Node`] driven by one bounded inbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::{
    Clock, Completion, Credential, Engine, Member, Node, NodeError, Request, Token, WatchEvents,
};
use ringkv_storage::Disk;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::io::{MonotonicClock, PeerLink};
use super::{
    Answer, INBOX_DRAIN_MAX, NodeInput, NodeReply, NodeState, OrderedRead, STATUS_REFRESH_INTERVAL,
    ShardReport,
};
use crate::config::HttpUrl;
use crate::metrics::Metrics;
use crate::peer::PeerEvent;
use crate::watch::WatchHubs;

/// Everything the loop owns besides the node.
pub(super) struct Loop<E: Engine, D: Disk> {
    pub(super) node: Node<E, D, PeerLink, MonotonicClock>,
    pub(super) clock: MonotonicClock,
    pub(super) inbox: Receiver<NodeInput>,
    pub(super) state: Arc<NodeState>,
    pub(super) events: broadcast::Sender<Arc<[WatchEvents]>>,
    pub(super) hubs: Arc<WatchHubs>,
    pub(super) link: PeerLink,
    pub(super) metrics: Metrics,
}

impl<E: Engine, D: Disk> Loop<E, D> {
    /// Runs until a [`NodeInput::Shutdown`] arrives or every sender is gone.
    pub(super) fn run(mut self) {
        let mut waiting: HashMap<Token, tokio::sync::oneshot::Sender<NodeReply>> = HashMap::new();
        let mut next_token = 0u64;
        let mut more = false;
        let mut last_refresh: Option<Duration> = None;
        let mut peers = KnownPeers::default();
        let mut cache = RefreshCache::default();
        'outer: loop {
            // Wait for input, the next wakeup, or nothing if work is queued.
            let first = if more {
                match self.inbox.try_recv() {
                    Ok(input) => Some(input),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                let now = self.clock.now();
                let wait = self.node.next_wakeup().saturating_sub(now);
                let wait = wait.min(STATUS_REFRESH_INTERVAL);
                match self.inbox.recv_timeout(wait) {
                    Ok(input) => Some(input),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut input = first;
            let mut taken = 0;
            while let Some(next) = input.take() {
                match next {
                    NodeInput::Request { request, shard, credential, reply } => {
                        let token = Token(next_token);
                        next_token += 1;
                        match submit(&mut self.node, token, shard, request, credential) {
                            Ok(()) => {
                                waiting.insert(token, reply);
                            }
                            Err(e) => {
                                let _ = reply.send(NodeReply::Done(Err(e)));
                            }
                        }
                    }
                    NodeInput::Peer(PeerEvent::Frame { from, frame }) => {
                        if let Err(error) = self.node.receive(frame) {
                            debug!(%from, %error, "peer frame dropped");
                        }
                    }
                    NodeInput::Peer(PeerEvent::Unreachable(peer)) => {
                        self.node.report_unreachable(peer);
                    }
                    NodeInput::Shutdown => break 'outer,
                }
                taken += 1;
                if taken < INBOX_DRAIN_MAX {
                    input = self.inbox.try_recv().ok();
                }
            }

            let out = self.node.run_round();
            more = out.more;
            // Every round, before its answers go out: the serializable
            // reads served without this thread put these on their headers,
            // as the node puts its own on the answers below.
            let header = self.node.header(self.node.meta_shard());
            self.state.set_cluster_id(header.cluster_id);
            self.state.set_raft_term(header.raft_term);
            // Before this round's answers go out: a client that saw auth
            // enabled finds every service enforcing it here.
            self.state.set_auth_enabled(self.node.auth_store().is_some_and(|a| a.enabled()));
            // Likewise: a client told the member was promoted (or that
            // reads its status) finds it serving.
            self.state.set_learner(self.node.is_learner());
            if !out.events.is_empty() {
                // The largest data shard revision (with one shard, the
                // revision): the metadata group's are nobody's.
                for batch in out.events.iter().filter(|e| self.hubs.hub(e.shard).is_some()) {
                    self.state.advance_revision(batch.revision);
                }
                // The hub sees every event here, on the node thread, in
                // apply order and before this round's requests are answered
                // below, so a client that saw a write's revision finds it in
                // any watch it opens afterwards.
                for batch in &out.events {
                    self.hubs.publish(batch);
                }
                // The broadcast feeds the Lock and Election services (and any
                // other in-process follower of applied changes). It never
                // blocks the node: a subscriber that falls more than
                // `EVENT_BROADCAST_CAPACITY` rounds behind gets `Lagged` and
                // must re-read the store, which the concurrency services do.
                let _ = self.events.send(Arc::from(out.events));
            }
            for completion in out.completions {
                let Some(reply) = waiting.remove(&completion.token()) else { continue };
                match completion {
                    Completion::Done { header, result, .. } => {
                        let _ = reply
                            .send(NodeReply::Done(result.map(|reply| Answer { header, reply })));
                    }
                    Completion::ReadReady { header, shard, read, auth_revision, .. } => {
                        // Reads never run on this thread: the loop only
                        // orders them, and the request's own task runs
                        // each (`OrderedRead::serve`).
                        let store = Arc::clone(self.node.store());
                        let read = OrderedRead { store, header, shard, read, auth_revision };
                        let _ = reply.send(NodeReply::Read(read));
                    }
                }
            }
            let now = self.clock.now();
            if last_refresh.is_none_or(|at| now.saturating_sub(at) >= STATUS_REFRESH_INTERVAL) {
                last_refresh = Some(now);
                self.refresh(&mut peers, &mut cache, waiting.len());
            } else {
                // Cheap, and what the hasleader rule needs promptly.
                self.state.set_leader(self.node.leader());
            }
        }
        self.state.set_closed();
        info!(member = %self.node.id(), "node loop stopped");
        // Dropping the node closes the WAL; waiters see the reply channel
        // close, which the handle reports as `server stopped`.
    }

    /// Publishes the node's state and keeps the transport's address book in
    /// step with the member table. Logs the snapshots installed since the
    /// last refresh (`installed` counts those already logged).
    fn refresh(&mut self, peers: &mut KnownPeers, cache: &mut RefreshCache, pending: usize) {
        let node = &self.node;
        self.state.set_leader(node.leader());
        if node.stopped().is_some() && !self.state.is_stopped() {
            warn!(reason = node.stopped().unwrap_or_default(), "node stopped serving");
            self.state.set_stopped();
        }
        let mut shards = Vec::new();
        let mut changed = Vec::new();
        for shard in node.hosted_shards() {
            let Some(stamp) = node.shard_stamp(shard) else { continue };
            // A sleeping shard whose stamp is unchanged has the status it
            // had: skip the engine status, the store read and the gauges
            // (with 64 shards these dominated an idle node's CPU).
            if let Some((seen, report)) = cache.reports.get(&shard)
                && stamp.asleep
                && *seen == stamp
            {
                shards.push(report.clone());
                continue;
            }
            let Some(status) = node.shard_status(shard) else { continue };
            let logged = cache.installed.entry(shard).or_insert(0);
            if status.snapshots_installed > *logged {
                *logged = status.snapshots_installed;
                // Rare and worth knowing: this member fell behind a
                // leader's compacted log and was sent the shard's store.
                info!(
                    shard = status.shard.0,
                    index = status.snapshot_index.0,
                    revision = status.revision.0,
                    "installed a snapshot from the leader"
                );
            }
            if self.hubs.hub(shard).is_some() {
                self.state.advance_revision(status.revision);
            }
            let replica = node.replica_status(shard);
            let mut report = ShardReport::new(status, replica.as_ref());
            // Replicas by their nodes (a replica that came back to a node
            // has an id of its own).
            for ids in [&mut report.voters, &mut report.learners] {
                for id in ids.iter_mut() {
                    *id = node.replica_node(*id);
                }
                ids.sort_unstable();
            }
            cache.reports.insert(shard, (stamp, report.clone()));
            changed.push(report.clone());
            shards.push(report);
        }
        let hosted: Vec<ShardId> = shards.iter().map(|r| r.status.shard).collect();
        if !changed.is_empty() || hosted != cache.published {
            cache.reports.retain(|id, _| hosted.contains(id));
            self.metrics.observe_shards(&changed);
            self.state.set_shards(shards);
            cache.published = hosted;
        }
        self.state.set_alarms(node.alarms());
        // Targets change only when the metadata shard applies something.
        let meta_applied = node.shard_stamp(node.meta_shard()).map(|s| s.applied);
        if meta_applied != cache.targets_at {
            self.state.set_targets(node.shard_targets());
            self.state.set_drain_status(node.moves_replicas().then(|| node.drain_status()));
            cache.targets_at = meta_applied;
        }
        self.metrics.set_requests_pending(pending);
        self.metrics.upkeep();
        let members = node.members();
        let now = self.clock.now();
        if members != cache.members {
            sync_peers(&self.link, node.id(), &members, peers, now);
            self.state.set_members(members.clone());
            cache.members = members;
        } else {
            expire_leaving(&self.link, peers, now);
        }
    }
}

/// What the last status refresh published, so that the next one redoes
/// only what changed.
#[derive(Debug, Default)]
struct RefreshCache {
    /// Each shard's report and the stamp it was taken at.
    reports: BTreeMap<ShardId, (ringkv_node::ShardStamp, ShardReport)>,
    /// Snapshots installed per shard as already logged.
    installed: BTreeMap<ShardId, u64>,
    /// The shards of the last published reports, in order.
    published: Vec<ShardId>,
    /// The member table as last published.
    members: Vec<Member>,
    /// The metadata shard's applied index when the targets were last published.
    targets_at: Option<ringkv_consensus::LogIndex>,
}

/// Hands a request to the node: routed by the node when `shard` is `None`,
/// else to that data shard (a part of a request over several shards).
fn submit<E: Engine, D: Disk>(
    node: &mut Node<E, D, PeerLink, MonotonicClock>,
    token: Token,
    shard: Option<ShardId>,
    request: Request,
    credential: Credential,
) -> Result<(), NodeError> {
    match shard {
        None => node.submit_as(token, request, credential),
        Some(shard) => node.submit_to(token, shard, request, credential),
    }
}

/// How long a removed member stays in the transport's address book, so that
/// it can be told it was removed (see [`sync_peers`]): many election
/// timeouts, the time a removed follower takes to speak again.
const REMOVED_PEER_GRACE: Duration = Duration::from_secs(60);

/// The transport's address book as last set, and the removed members kept
/// in it until a deadline.
#[derive(Debug, Default)]
struct KnownPeers {
    known: BTreeMap<NodeId, Vec<HttpUrl>>,
    leaving: BTreeMap<NodeId, Duration>,
}

/// Drops from the transport the removed members whose grace has run out
/// (see [`REMOVED_PEER_GRACE`]).
fn expire_leaving(link: &PeerLink, peers: &mut KnownPeers, now: Duration) {
    let Some(transport) = link.transport() else { return };
    peers.leaving.retain(|id, until| {
        let keep = now < *until;
        if !keep {
            transport.remove_peer(*id);
        }
        keep
    });
}

/// Sets the transport's address book to the member table (every member but
/// this one, at its peer URLs).
///
/// A removed member stays in the book for [`REMOVED_PEER_GRACE`]: it may not
/// know yet that it was removed (the leader stops sending to it once the
/// removal applies, possibly before the commit reached it), and the node
/// tells it with a `Removed` message the next time it sends us anything
/// (a pre-vote, a forwarded request) — which the transport can only deliver
/// to a peer it still knows.
fn sync_peers(
    link: &PeerLink,
    me: NodeId,
    members: &[Member],
    peers: &mut KnownPeers,
    now: Duration,
) {
    expire_leaving(link, peers, now);
    let Some(transport) = link.transport() else { return };
    let KnownPeers { known, leaving } = peers;
    let wanted: BTreeMap<NodeId, Vec<HttpUrl>> = members
        .iter()
        .filter(|m| m.id != me)
        .map(|m| (m.id, m.peer_urls.iter().filter_map(|u| u.parse().ok()).collect::<Vec<_>>()))
        .filter(|(_, urls)| !urls.is_empty())
        .collect();
    if wanted == *known {
        return;
    }
    for id in known.keys() {
        if !wanted.contains_key(id) {
            leaving.insert(*id, now + REMOVED_PEER_GRACE);
        }
    }
    for id in wanted.keys() {
        leaving.remove(id);
    }
    for (id, urls) in &wanted {
        if known.get(id) != Some(urls)
            && let Err(error) = transport.set_peer(*id, urls.clone())
        {
            warn!(peer = %id, %error, "cannot add peer to the transport");
        }
    }
    *known = wanted;
}
