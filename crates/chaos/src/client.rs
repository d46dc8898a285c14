//! etcd v3 clients of the workloads, and how their errors are classified.
//!
//! Every request's outcome is one of three, as Jepsen's are:
//!
//! * **ok**: an answer came back;
//! * **fail**: the request certainly had no effect, so the checkers may
//!   drop it: the connection could not be made (nothing was sent), or the
//!   server refused it with an error that is given before anything is
//!   proposed ([`DEFINITE_FAILURE_CODES`], and `etcdserver: no leader`,
//!   which ringkv answers only for a request never placed in the log);
//! * **unknown**: anything else once the request may have left: a client
//!   timeout, a broken connection, `Unavailable` (leader changed, request
//!   timed out, server stopped), `Unknown` or `Internal`. The write may
//!   have happened, at any time after it was sent.
//!
//! Classifying an error as *fail* is a claim about ringkv that the checkers
//! then test: if such a request did take effect, lincheck reports it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_api::etcdserverpb::StatusRequest;
use ringkv_api::etcdserverpb::cluster_client::ClusterClient;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::lease_client::LeaseClient;
use ringkv_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ringkv_api::etcdserverpb::watch_client::WatchClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::error::ChaosError;

/// How long a client waits for a TCP connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Interval of HTTP/2 pings on idle client connections, so a connection to
/// a node that vanished is noticed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a status probe (leader discovery) waits for its answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// gRPC codes ringkv (as etcd) answers only for requests refused before
/// they are proposed: bad arguments, unknown leases, compacted revisions,
/// quota and rate limits, auth, and RPCs the server does not implement.
pub const DEFINITE_FAILURE_CODES: [Code; 9] = [
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::OutOfRange,
    Code::ResourceExhausted,
    Code::Unimplemented,
];

/// The message of the one `Unavailable` error that promises no effect.
pub const NO_LEADER_MESSAGE: &str = "etcdserver: no leader";

/// Whether a failed request certainly had no effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// It did not happen.
    Fail,
    /// It may have happened.
    Unknown,
}

/// A request that did not get an answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OpError {
    /// Whether it may have taken effect.
    pub class: ErrorClass,
    /// The gRPC code, or `timeout` for a client-side timeout.
    pub code: String,
    /// The message.
    pub message: String,
}

impl OpError {
    /// A client-side timeout: unknown.
    pub fn timeout(after: Duration) -> OpError {
        OpError {
            class: ErrorClass::Unknown,
            code: "timeout".to_owned(),
            message: format!("no answer within {after:?}"),
        }
    }

    /// Whether the error says the service is not implemented by this server.
    pub fn is_unimplemented(&self) -> bool {
        self.code == format!("{:?}", Code::Unimplemented)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.class, self.code, self.message)
    }
}

/// Classifies a gRPC error; see the module docs.
pub fn classify(status: &tonic::Status) -> OpError {
    let code = status.code();
    let definite = DEFINITE_FAILURE_CODES.contains(&code)
        || (code == Code::Unavailable && status.message() == NO_LEADER_MESSAGE)
        || (code == Code::Unavailable && is_connect_error(status));
    let mut message = status.message().to_owned();
    if let Some(source) = std::error::Error::source(status) {
        message = format!("{message}: {}", error_chain(source));
    }
    OpError {
        class: if definite { ErrorClass::Fail } else { ErrorClass::Unknown },
        code: format!("{code:?}"),
        message,
    }
}

/// Whether the error happened while connecting: nothing was sent.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        // hyper-util's connector names its failures this way; nothing was
        // written to a connection that never opened.
        if e.to_string().contains("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    false
}

fn error_chain(mut e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    while let Some(next) = e.source() {
        parts.push(next.to_string());
        e = next;
    }
    parts.join(": ")
}

/// Runs one request with a client-side deadline and classifies its error.
///
/// # Errors
/// The classified [`OpError`].
pub async fn call<T, F>(timeout: Duration, request: F) -> Result<T, OpError>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(classify(&status)),
        Err(_) => Err(OpError::timeout(timeout)),
    }
}

/// One node's gRPC clients over one (lazily connected, reconnecting) channel.
#[derive(Clone, Debug)]
pub struct NodeClient {
    /// KV service.
    pub kv: KvClient<Channel>,
    /// Lease service.
    pub lease: LeaseClient<Channel>,
    /// Watch service.
    pub watch: WatchClient<Channel>,
    /// Cluster service.
    pub cluster: ClusterClient<Channel>,
    /// Maintenance service.
    pub maintenance: MaintenanceClient<Channel>,
}

impl NodeClient {
    /// Clients of the node at `url` (`http://ip:port`); connects on first use.
    ///
    /// # Errors
    /// [`ChaosError::Endpoint`] for a malformed URL.
    pub fn new(url: &str) -> Result<NodeClient, ChaosError> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|source| ChaosError::Endpoint { url: url.to_owned(), source })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(NodeClient {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            cluster: ClusterClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel),
        })
    }
}

/// What a node says of itself in `Maintenance.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its member id.
    pub member_id: u64,
    /// The leader it follows (`None`: it knows of none).
    pub leader: Option<u64>,
    /// Its Raft term.
    pub term: u64,
}

/// Asks node `client` for its status.
///
/// # Errors
/// The classified error.
pub async fn status(client: &NodeClient) -> Result<NodeStatus, OpError> {
    let mut m = client.maintenance.clone();
    let s = call(STATUS_TIMEOUT, m.status(StatusRequest {})).await?;
    Ok(NodeStatus {
        member_id: s.header.map_or(0, |h| h.member_id),
        leader: (s.leader != 0).then_some(s.leader),
        term: s.raft_term,
    })
}

/// The clients of every node, and which member id each node has.
#[derive(Clone, Debug)]
pub struct Clients {
    nodes: Vec<NodeClient>,
    /// Member id → node index, learned from status answers (a node that
    /// rejoins gets a new id).
    members: Arc<Mutex<HashMap<u64, usize>>>,
}

impl Clients {
    /// Clients of the nodes at `urls`.
    ///
    /// # Errors
    /// [`ChaosError::Endpoint`].
    pub fn new(urls: &[String]) -> Result<Clients, ChaosError> {
        Ok(Clients {
            nodes: urls.iter().map(|u| NodeClient::new(u)).collect::<Result<_, _>>()?,
            members: Arc::default(),
        })
    }

    /// Node `i`'s clients.
    pub fn node(&self, i: usize) -> &NodeClient {
        &self.nodes[i]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s status, remembering its member id.
    ///
    /// # Errors
    /// The classified error.
    pub async fn status(&self, i: usize) -> Result<NodeStatus, OpError> {
        let s = status(&self.nodes[i]).await?;
        if s.member_id != 0 {
            let mut members = self.members.lock().expect("no panic while holding the lock");
            members.retain(|_, &mut node| node != i);
            members.insert(s.member_id, i);
        }
        Ok(s)
    }

    /// The node index of a member id, if known.
    pub fn node_of(&self, member_id: u64) -> Option<usize> {
        self.members.lock().expect("no panic while holding the lock").get(&member_id).copied()
    }

    /// The member id of node `i`, if known.
    pub fn member_of(&self, i: usize) -> Option<u64> {
        let members = self.members.lock().expect("no panic while holding the lock");
        members.iter().find(|&(_, &node)| node == i).map(|(&id, _)| id)
    }

    /// The leader every node of `all` names, when each of them answers.
    pub async fn unanimous_leader(&self, all: &[usize]) -> Option<usize> {
        let answers = futures_util::future::join_all(all.iter().map(|&i| self.status(i))).await;
        let mut leaders = answers.into_iter().map(|a| a.ok().and_then(|s| s.leader));
        let first = leaders.next()??;
        if leaders.all(|l| l == Some(first)) { self.node_of(first) } else { None }
    }

    /// The leader as most answering nodes among `among` see it (a quick
    /// guess for the nemeses; `None` when nobody names one).
    pub async fn likely_leader(&self, among: &[usize]) -> Option<usize> {
        let answers = futures_util::future::join_all(among.iter().map(|&i| self.status(i))).await;
        let mut votes: HashMap<u64, usize> = HashMap::new();
        for l in answers.into_iter().flatten().filter_map(|s| s.leader) {
            *votes.entry(l).or_default() += 1;
        }
        let (id, _) = votes.into_iter().max_by_key(|&(id, n)| (n, std::cmp::Reverse(id)))?;
        self.node_of(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        let fail = [
            tonic::Status::invalid_argument("etcdserver: key is not provided"),
            tonic::Status::resource_exhausted("etcdserver: too many requests"),
            tonic::Status::unavailable(NO_LEADER_MESSAGE),
            tonic::Status::unimplemented("Not yet implemented"),
        ];
        for s in &fail {
            assert_eq!(classify(s).class, ErrorClass::Fail, "{s:?}");
        }
        let unknown = [
            tonic::Status::unavailable("etcdserver: request timed out"),
            tonic::Status::unavailable("etcdserver: leader changed"),
            tonic::Status::unknown("h2 protocol error"),
            tonic::Status::cancelled("canceled"),
            tonic::Status::deadline_exceeded("deadline"),
            tonic::Status::internal("broken"),
        ];
        for s in &unknown {
            assert_eq!(classify(s).class, ErrorClass::Unknown, "{s:?}");
        }
        assert!(classify(&tonic::Status::unimplemented("")).is_unimplemented());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_definite_failure() {
        // A port nobody listens on: bind, note it, release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = NodeClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = status(&client).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Fail, "{e}");
    }
}
