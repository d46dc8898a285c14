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
//! `etcdserverpb.Watch` is the watch module's; `etcdserverpb.Auth` is not
//! implemented yet (its RPCs answer `UNIMPLEMENTED`).
//!
//! # `hasleader`
//!
//! A call whose metadata carries `hasleader: true` (clientv3's
//! `WithRequireLeader`, used by etcdctl's and Kubernetes' watches) fails
//! with `Unavailable "etcdserver: no leader"` when this member knows no
//! leader; a stream opened that way is ended with the same error when the
//! leader is lost ([`Context::leader_lost`]), as etcd's interceptors do.

mod cluster;
mod concurrency;
mod election;
mod kv;
mod lease;
mod lock;
mod maintenance;

use std::sync::Arc;

use futures_util::StreamExt;
use ringkv_node::{Header, Reply, Request};
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::BoxStream;

pub use cluster::ClusterService;
pub use concurrency::SESSION_TTL_DEFAULT_SECONDS;
pub use election::{ElectionService, MISSING_LEADER_KEY, OBSERVE_RESPONSES_QUEUED_MAX};
pub use kv::KvService;
pub use lease::{KEEP_ALIVE_RESPONSES_QUEUED_MAX, LeaseService};
pub use lock::{LockService, SESSION_EXPIRED};
pub use maintenance::{
    ETCD_CLUSTER_VERSION, ETCD_VERSION, MaintenanceService, SNAPSHOT_ALIGN_BYTES,
    SNAPSHOT_CHUNKS_QUEUED_MAX,
};

use crate::api::{EtcdError, HeaderInfo, RequestLimits};
use crate::runtime::{Answer, NodeHandle, NodeState};

/// The gRPC metadata key of clientv3's `WithRequireLeader`.
pub const HAS_LEADER_METADATA: &str = "hasleader";

/// What every service shares: the node and the request limits.
#[derive(Clone, Debug)]
pub struct Context {
    node: NodeHandle,
    limits: RequestLimits,
}

impl Context {
    /// A context over `node` enforcing `limits`.
    pub fn new(node: NodeHandle, limits: RequestLimits) -> Context {
        Context { node, limits }
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

    /// For a stream opened with `hasleader`: a future that resolves when
    /// this member loses its leader; `None` when the stream did not ask.
    pub fn leader_lost<T>(&self, request: &tonic::Request<T>) -> Option<LeaderLoss> {
        requires_leader(request).then(|| LeaderLoss { leader: self.state().watch_leader() })
    }

    /// Sends a request to the node.
    ///
    /// # Errors
    /// The node's answer, as a status.
    pub async fn call(&self, request: Request) -> Result<Answer, Status> {
        self.node.call(request).await.map_err(Status::from)
    }
}

/// Resolves when the member has no leader (see [`Context::leader_lost`]).
#[derive(Debug)]
pub struct LeaderLoss {
    leader: watch::Receiver<Option<ringkv_consensus::NodeId>>,
}

impl LeaderLoss {
    /// Waits until no leader is known (or the node is gone).
    pub async fn wait(&mut self) {
        let _ = self.leader.wait_for(Option::is_none).await;
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
    };
    EtcdError::Unknown {
        message: format!("ringkv: internal error: the node answered {rpc} with {kind}"),
    }
    .into()
}
