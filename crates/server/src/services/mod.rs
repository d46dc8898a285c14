//! The etcd v3 gRPC services, one per file, each a thin layer over the
//! node: convert and check the request ([`crate::api::convert::from_pb`]),
//! hand it to the node ([`NodeHandle::call`]), convert the answer
//! ([`crate::api::convert::to_pb`]). Every error reaches the client
//! through [`EtcdError`], with etcd's code and message.
//!
//! | file | service |
//! | --- | --- |
//! | `kv.rs` | `etcdserverpb.KV` |
//! | `lease.rs` | `etcdserverpb.Lease` |
//! | `cluster.rs` | `etcdserverpb.Cluster` |
//! | `maintenance.rs` | `etcdserverpb.Maintenance` |
//! | `lock.rs` | `v3lockpb.Lock` |
//! | `election.rs` | `v3electionpb.Election` |
//!
//! | `auth.rs` | `etcdserverpb.Auth` |
//!
//! `etcdserverpb.Watch` is the watch module's. `scatter.rs` serves a
//! `Range` or `DeleteRange` over the shards it touches
//! ([`crate::shards`]); `forward.rs` sends a KV request (or one shard's
//! part of it) for a shard this member does not host to a member that
//! does.
//!
//! # Who is calling
//!
//! Each RPC binds the shared [`Context`] to its request
//! ([`Context::for_request`]): the token in its metadata (or the client
//! certificate's name) travels with every call it makes to the node, which
//! resolves it and enforces etcd's rules (see [`ringkv_node::auth`]). The
//! Lock and Election services run their KV operations through the same
//! bound context, so they act with their client's rights, as etcd's do.
//!
//! # Learners
//!
//! A learner serves only status and serializable ranges, as etcd's does:
//! see `learner.rs`.
//!
//! # `hasleader`
//!
//! A call whose metadata carries `hasleader: true` (clientv3's
//! `WithRequireLeader`, used by etcdctl's and Kubernetes' watches) fails
//! with `Unavailable "etcdserver: no leader"` when this member knows no
//! leader; a stream opened that way is ended with the same error once the
//! member has had no leader for a few election timeouts
//! ([`Context::leader_lost`]), as etcd's interceptors do: an election alone
//! does not end it.

mod auth;
mod cluster;
mod concurrency;
mod election;
mod forward;
mod kv;
mod learner;
mod lease;
mod lock;
mod maintenance;
mod scatter;

use std::sync::Arc;

use futures_util::StreamExt;
use ringkv_node::{Credential, Header, Reply, Request};
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::BoxStream;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use concurrency::SESSION_TTL_DEFAULT_SECONDS;
pub use election::{ElectionService, MISSING_LEADER_KEY, OBSERVE_RESPONSES_QUEUED_MAX};
pub use forward::{CONCURRENCY_FORWARD_TIMEOUT_MAX, FORWARDED_SHARD_METADATA, KvForwarding};
pub use kv::KvService;
pub use learner::{LEARNER_METHODS, check_learner, refuse_on_learner};
pub use lease::{KEEP_ALIVE_RESPONSES_QUEUED_MAX, LeaseService};
pub use lock::{LockService, SESSION_EXPIRED};
pub use maintenance::{
    ETCD_CLUSTER_VERSION, ETCD_VERSION, MaintenanceService, SNAPSHOT_ALIGN_BYTES,
    SNAPSHOT_CHUNKS_QUEUED_MAX,
};

use crate::api::{EtcdError, HeaderInfo, RequestLimits};
use crate::auth::Authenticator;
use crate::runtime::{Answer, NodeHandle, NodeState};
use crate::watch::{LEADER_CHECK_INTERVAL_DEFAULT, LEADERLESS_CHECKS_MAX};

/// The gRPC metadata key of clientv3's `WithRequireLeader`.
pub const HAS_LEADER_METADATA: &str = "hasleader";

/// How long a member may have no leader before its `hasleader` streams
/// end, unless the server sets its own ([`Context::with_leader_loss_grace`]):
/// [`LEADERLESS_CHECKS_MAX`] election timeouts of the default
/// [`LEADER_CHECK_INTERVAL_DEFAULT`], as etcd waits.
pub const LEADER_LOSS_GRACE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(
    LEADER_CHECK_INTERVAL_DEFAULT.as_secs() * LEADERLESS_CHECKS_MAX as u64,
);

/// What every service shares: the node, the request limits and the
/// authenticator; and, once bound to a request
/// ([`Context::for_request`]), what its client presented.
#[derive(Clone, Debug)]
pub struct Context {
    node: NodeHandle,
    limits: RequestLimits,
    /// See [`Context::with_leader_loss_grace`].
    leader_loss_grace: std::time::Duration,
    auth: Arc<Authenticator>,
    /// Who the calls made through this context act for.
    credential: Credential,
    /// How KV requests for shards this member does not host are sent on;
    /// `None`: every shard is served here.
    forwarding: Option<Arc<KvForwarding>>,
    /// Once bound to a KV request ([`Context::for_kv_request`]): its
    /// forwarding state.
    route: Option<Arc<forward::KvRoute>>,
}

impl Context {
    /// A context over `node` enforcing `limits`, authenticating with `auth`.
    pub fn new(node: NodeHandle, limits: RequestLimits, auth: Arc<Authenticator>) -> Context {
        Context {
            node,
            limits,
            leader_loss_grace: LEADER_LOSS_GRACE_DEFAULT,
            auth,
            credential: Credential::Anonymous,
            forwarding: None,
            route: None,
        }
    }

    /// This context sending KV requests for shards this member does not
    /// host on with `forwarding` (see `forward.rs`).
    #[must_use]
    pub fn with_forwarding(mut self, forwarding: KvForwarding) -> Context {
        self.forwarding = Some(Arc::new(forwarding));
        self
    }

    /// How long the member may go without a leader before its `hasleader`
    /// streams end (etcd: [`LEADERLESS_CHECKS_MAX`] election timeouts).
    /// An election must not end them: clients re-create every watch and
    /// keep-alive of a stream that ends.
    #[must_use]
    pub fn with_leader_loss_grace(mut self, grace: std::time::Duration) -> Context {
        self.leader_loss_grace = grace;
        self
    }

    /// This context acting for the client of `request`: every call made
    /// through it carries what the client presented (token or client
    /// certificate), and the node checks that client's rights.
    pub fn for_request<T>(&self, request: &tonic::Request<T>) -> Context {
        let credential = self.auth.credential(request.metadata(), request.extensions());
        Context { credential, route: None, ..self.clone() }
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The node.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The node's published state.
    pub fn state(&self) -> &Arc<NodeState> {
        self.node.state()
    }

    /// The request limits.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// etcd's `hasleader` rule for a new call or stream.
    ///
    /// # Errors
    /// `etcdserver: no leader` when the call requires a leader and this
    /// member knows none.
    pub fn check_leader<T>(&self, request: &tonic::Request<T>) -> Result<(), Status> {
        if requires_leader(request) && !self.state().has_leader() {
            return Err(EtcdError::NoLeader.into());
        }
        Ok(())
    }

    /// For a stream opened with `hasleader`: what resolves once this member
    /// has had no leader for the grace period; `None` when the stream did
    /// not ask.
    pub fn leader_lost<T>(&self, request: &tonic::Request<T>) -> Option<LeaderLoss> {
        requires_leader(request).then(|| LeaderLoss {
            leader: self.state().watch_leader(),
            grace: self.leader_loss_grace,
            leaderless_since: None,
        })
    }

    /// Sends a request to the node.
    ///
    /// # Errors
    /// The node's answer, as a status.
    pub async fn call(&self, request: Request) -> Result<Answer, Status> {
        self.node.call_as(self.credential.clone(), request).await.map_err(Status::from)
    }
}

/// Resolves when the member has had no leader for a grace period (see
/// [`Context::leader_lost`]).
#[derive(Debug)]
pub struct LeaderLoss {
    leader: watch::Receiver<Option<ringkv_consensus::NodeId>>,
    grace: std::time::Duration,
    /// When the member was last seen losing its leader, if it has none
    /// since. Kept across calls: a stream polls [`LeaderLoss::wait`] anew
    /// after each request, and that must not restart the grace period.
    leaderless_since: Option<tokio::time::Instant>,
}

impl LeaderLoss {
    /// Waits until no leader has been known for the whole grace period (or
    /// the node is gone). Cancel-safe.
    pub async fn wait(&mut self) {
        loop {
            if self.leader.borrow().is_some() {
                self.leaderless_since = None;
            }
            match self.leaderless_since {
                None => {
                    if self.leader.wait_for(Option::is_none).await.is_err() {
                        return;
                    }
                    self.leaderless_since = Some(tokio::time::Instant::now());
                }
                Some(since) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(since + self.grace) => return,
                        found = self.leader.wait_for(Option::is_some) => {
                            if found.is_err() {
                                return;
                            }
                            self.leaderless_since = None;
                        }
                    }
                }
            }
        }
    }
}

/// Ends `stream` with `etcdserver: no leader` when `loss` resolves (a
/// stream opened with `hasleader`); returns it unchanged without `loss`.
pub(crate) fn until_leader_lost<T: Send + 'static>(
    stream: BoxStream<T>,
    loss: Option<LeaderLoss>,
) -> BoxStream<T> {
    let Some(loss) = loss else { return stream };
    Box::pin(futures_util::stream::unfold(
        (stream, loss, false),
        |(mut stream, mut loss, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                item = stream.next() => item.map(|item| (item, (stream, loss, false))),
                () = loss.wait() => {
                    Some((Err(EtcdError::NoLeader.into()), (stream, loss, true)))
                }
            }
        },
    ))
}

fn requires_leader<T>(request: &tonic::Request<T>) -> bool {
    request
        .metadata()
        .get(HAS_LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The header fields a completion carries, as the conversions want them.
pub(crate) fn header_info(header: &Header) -> HeaderInfo {
    HeaderInfo {
        cluster_id: header.cluster_id,
        member_id: header.member_id.0,
        raft_term: header.raft_term,
    }
}

/// The node answered a request with a reply of the wrong kind: a bug,
/// reported rather than panicking the server.
pub(crate) fn unexpected(rpc: &'static str, reply: &Reply) -> Status {
    let kind = match reply {
        Reply::Kv(_) => "a state machine answer",
        Reply::Range(_) => "a range",
        Reply::LeaseKeepAlive { .. } => "a keep-alive",
        Reply::LeaseTimeToLive(_) => "a time-to-live",
        Reply::LeaseLeases(_) => "a lease list",
        Reply::Members { .. } => "a member list",
        Reply::Alarms(_) => "an alarm list",
        Reply::Status(_) => "a status",
        Reply::Hash { .. } => "a hash",
        Reply::HashKv(_) => "a key-value hash",
        Reply::Done => "a bare success",
        Reply::Auth(_) => "an auth answer",
    };
    EtcdError::Unknown {
        message: format!("ringkv: internal error: the node answered {rpc} with {kind}"),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ringkv_consensus::NodeId;
    use tokio::sync::watch;
    use tokio::time::{Instant, sleep, timeout};

    use super::LeaderLoss;

    const GRACE: Duration = Duration::from_secs(3);

    fn loss(leader: watch::Receiver<Option<NodeId>>) -> LeaderLoss {
        LeaderLoss { leader, grace: GRACE, leaderless_since: None }
    }

    /// Virtual time: the grace period is measured exactly.
    #[tokio::test(start_paused = true)]
    async fn an_election_does_not_end_a_stream_a_lost_quorum_does() {
        let (tx, rx) = watch::channel(Some(NodeId(1)));
        let mut loss = loss(rx);
        // An election: two seconds without a leader, then a new one.
        tx.send(None).unwrap();
        let election = async {
            sleep(Duration::from_secs(2)).await;
            tx.send(Some(NodeId(2))).unwrap();
            sleep(Duration::from_secs(10)).await;
        };
        tokio::select! {
            () = loss.wait() => panic!("an election ended the stream"),
            () = election => {}
        }
        // Cut off: no leader from now on.
        let lost_at = Instant::now();
        tx.send(None).unwrap();
        loss.wait().await;
        assert_eq!(lost_at.elapsed(), GRACE);
    }

    /// A stream polls `wait` anew after each request; that must not
    /// restart the grace period.
    #[tokio::test(start_paused = true)]
    async fn polling_again_keeps_the_grace_period_running() {
        let (tx, rx) = watch::channel(Some(NodeId(1)));
        let mut loss = loss(rx);
        let lost_at = Instant::now();
        tx.send(None).unwrap();
        let mut polls = 0;
        while timeout(Duration::from_millis(700), loss.wait()).await.is_err() {
            polls += 1;
            assert!(polls < 10, "never resolved");
        }
        assert_eq!(lost_at.elapsed(), GRACE);
        assert_eq!(polls, 4, "resolved during the fifth poll (at 3 s of 3.5)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_node_ends_the_wait_at_once() {
        let (tx, rx) = watch::channel(Some(NodeId(1)));
        let mut loss = loss(rx);
        drop(tx);
        let at = Instant::now();
        loss.wait().await;
        assert_eq!(at.elapsed(), Duration::ZERO);
    }
}
