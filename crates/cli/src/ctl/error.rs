//! What can go wrong in `ringkv ctl`, each message naming what failed, on
//! which endpoint or file, and what the user can do.

use std::path::PathBuf;
use std::time::Duration;

/// A `ringkv ctl` failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CtlError {
    /// An `--endpoints` entry that is not a usable URL.
    #[error("endpoint {endpoint:?} is not usable: {reason} (expected http://host:port)")]
    BadEndpoint {
        /// The entry as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No endpoint was given at all.
    #[error("no endpoint given: pass --endpoints=http://host:port[,...]")]
    NoEndpoints,
    /// Connecting to one endpoint failed.
    #[error("cannot connect to {endpoint}: {source}; is a member serving clients there?")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting to one endpoint took longer than `--dial-timeout`.
    #[error("cannot connect to {endpoint} within {waited:?} (--dial-timeout); is it reachable?")]
    ConnectTimeout {
        /// The endpoint.
        endpoint: String,
        /// The dial timeout.
        waited: Duration,
    },
    /// Every endpoint was tried and none answered.
    #[error("no endpoint answered {method}: {tried}")]
    NoEndpointAnswered {
        /// The RPC.
        method: &'static str,
        /// Each endpoint with its failure, `; `-separated.
        tried: String,
    },
    /// The server does not implement an RPC.
    #[error(
        "{endpoint} does not serve {method} (gRPC status UNIMPLEMENTED): this server version has \
         no such service yet"
    )]
    Unimplemented {
        /// The endpoint.
        endpoint: String,
        /// The RPC.
        method: &'static str,
    },
    /// An RPC failed.
    #[error("{method} on {endpoint} failed: {} (gRPC status {:?})", .status.message(), .status.code())]
    Rpc {
        /// The endpoint.
        endpoint: String,
        /// The RPC.
        method: &'static str,
        /// What the server (or the transport) said.
        status: Box<tonic::Status>,
    },
    /// A member given by name or id is not in the member list.
    #[error("no member named or numbered {member:?}; members: {known}")]
    NoSuchMember {
        /// What was given.
        member: String,
        /// The members, `name (id)`, comma-separated.
        known: String,
    },
    /// No member reports a leader.
    #[error(
        "no member reports a leader; the cluster may have lost its quorum (try `ringkv ctl status`)"
    )]
    NoLeader,
    /// Decommissioning the leader needs another voting member to hand over to.
    #[error(
        "{member} is the only reachable voting member: there is no one to hand leadership to; \
         add a member first (`ringkv ctl node add`)"
    )]
    NoTransferee {
        /// The member being decommissioned.
        member: String,
    },
    /// Leadership did not move away in time.
    #[error(
        "leadership did not move away from {member} within {waited:?}; nothing was removed. \
         Check `ringkv ctl status` and retry"
    )]
    LeaderDidNotMove {
        /// The member.
        member: String,
        /// How long we waited.
        waited: Duration,
    },
    /// An admin call on a member's HTTP side failed (a drain start or
    /// its status).
    #[error("{source}")]
    Admin {
        /// What failed (boxed: it names a URL, a path and a reason).
        source: Box<ringkv_server::http::admin_client::AdminCallError>,
    },
    /// No member other than the one leaving has a client URL to ask.
    #[error(
        "no member other than {member} has a client URL to ask about its drain; start the others \
         (or check `ringkv ctl status`)"
    )]
    NoOtherMember {
        /// The member being decommissioned.
        member: String,
    },
    /// The member being drained disappeared from the member table.
    #[error("{member} is no longer a member: someone else removed it during its drain")]
    DrainedMemberGone {
        /// The member.
        member: String,
    },
    /// The member's replicas did not all move away in time.
    #[error(
        "{member} still holds replicas of {} data shards after {waited:?} (--drain-timeout): \
         shards {}; nothing was removed and the drain stays in place: run the same command again \
         to keep waiting (`ringkv ctl shards` shows the moves)",
        .shards.len(),
        .shards.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )]
    DrainTimedOut {
        /// The member.
        member: String,
        /// How long we waited.
        waited: Duration,
        /// The data shards it still holds.
        shards: Vec<u64>,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What we were doing (`write`, `read`, `rename`, …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot file failed its integrity check.
    #[error("snapshot {} is damaged: {problem}; save a new one", .path.display())]
    SnapshotDamaged {
        /// The file.
        path: PathBuf,
        /// What the check found.
        problem: SnapshotProblem,
    },
    /// A snapshot file holds no ringkv snapshot (an etcd one, say).
    #[error(
        "{} is not a ringkv snapshot (its SHA-256 trailer is fine, but it does not start with a \
         ringkv snapshot header); an etcd snapshot is restored with etcdutl",
        .path.display()
    )]
    NotRingkvSnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The snapshot's content did not decode.
    #[error("snapshot {} does not decode: {source}", .path.display())]
    SnapshotDecode {
        /// The file.
        path: PathBuf,
        /// What the store's reader said.
        #[source]
        source: ringkv_storage::mvcc::SnapshotError,
    },
    /// Reading the decoded snapshot failed.
    #[error("cannot read the keys of snapshot {}: {reason}", .path.display())]
    SnapshotRead {
        /// The file.
        path: PathBuf,
        /// What the store said.
        reason: String,
    },
    /// A restore would overwrite keys already in the cluster.
    #[error(
        "the cluster at {endpoint} already holds {keys} key(s); restore into an empty cluster, or \
         pass --force to overwrite keys of the same name"
    )]
    TargetNotEmpty {
        /// The endpoint asked.
        endpoint: String,
        /// How many keys it holds.
        keys: i64,
    },
    /// A task the command needed could not run.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What is wrong with a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SnapshotProblem {
    /// Shorter than its trailer.
    #[error("it is {bytes} bytes, shorter than its 32-byte SHA-256 trailer")]
    TooShort {
        /// Its length.
        bytes: u64,
    },
    /// The body is not a whole number of 512-byte blocks.
    #[error("its {body_bytes} bytes before the trailer are not a multiple of 512")]
    Misaligned {
        /// Length before the trailer.
        body_bytes: u64,
    },
    /// The trailer is not the body's hash.
    #[error("its SHA-256 is {actual} but its trailer says {expected}")]
    HashMismatch {
        /// The trailer, hex.
        expected: String,
        /// The body's hash, hex.
        actual: String,
    },
    /// The stream ended before its last message.
    #[error("the stream ended after {bytes} bytes without its trailer")]
    Truncated {
        /// Bytes received.
        bytes: u64,
    },
}

impl CtlError {
    /// The error for a failed RPC: [`CtlError::Unimplemented`] for that
    /// code, [`CtlError::Rpc`] otherwise.
    pub(crate) fn rpc(endpoint: &str, method: &'static str, status: tonic::Status) -> CtlError {
        if status.code() == tonic::Code::Unimplemented {
            CtlError::Unimplemented { endpoint: endpoint.to_owned(), method }
        } else {
            CtlError::Rpc { endpoint: endpoint.to_owned(), method, status: Box::new(status) }
        }
    }
}

impl From<ringkv_server::http::admin_client::AdminCallError> for CtlError {
    fn from(source: ringkv_server::http::admin_client::AdminCallError) -> CtlError {
        CtlError::Admin { source: Box::new(source) }
    }
}
