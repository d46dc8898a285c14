//! Connections to the endpoints given with `--endpoints`: one gRPC channel
//! per endpoint, tried in order, as etcdctl does.

use std::time::Duration;

use ringkv_api::etcdserverpb::cluster_client::ClusterClient;
use ringkv_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ringkv_api::etcdserverpb::{Member, MemberListRequest, StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

use super::error::CtlError;

/// Largest message accepted from a server: a range over many keys, or a
/// member's snapshot chunk (etcd's client default is the same unbounded
/// receive; we bound it so a broken server cannot exhaust memory).
pub(crate) const RECEIVE_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// An `--endpoints` entry as a URL tonic can dial: `host:port` gains
/// `http://`; `https://` is refused (ringkv serves no TLS yet).
///
/// # Errors
/// [`CtlError::BadEndpoint`] naming what is wrong.
pub(crate) fn normalize_endpoint(text: &str) -> Result<String, CtlError> {
    let text = text.trim();
    let bad = |reason| CtlError::BadEndpoint { endpoint: text.to_owned(), reason };
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text.starts_with("https://") {
        return Err(bad("TLS is not supported yet; use http://"));
    }
    let url = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad("only http:// URLs are supported"));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(bad("it must be a host and a port, with no path"));
    }
    Ok(format!("http://{authority}"))
}

/// The endpoints and timeouts every command uses.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    /// Normalized URLs, in the order given.
    ///
    /// Invariant: not empty.
    endpoints: Vec<String>,
    dial_timeout: Duration,
    command_timeout: Duration,
}

impl Clients {
    /// Clients over `endpoints` (as given on the command line).
    ///
    /// # Errors
    /// A malformed endpoint, or none at all.
    pub(crate) fn new(
        endpoints: &[String],
        dial_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Clients, CtlError> {
        let endpoints =
            endpoints.iter().map(|e| normalize_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(CtlError::NoEndpoints);
        }
        Ok(Clients { endpoints, dial_timeout, command_timeout })
    }

    /// The endpoints, normalized.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The connection timeout.
    pub(crate) fn dial_timeout(&self) -> Duration {
        self.dial_timeout
    }

    /// The per-request timeout.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// A channel to `endpoint` whose requests time out after
    /// `--command-timeout` (`streaming`: no request timeout, for watches
    /// and snapshots, which last as long as they last).
    ///
    /// # Errors
    /// [`CtlError::Connect`].
    pub(crate) async fn connect(
        &self,
        endpoint: &str,
        streaming: bool,
    ) -> Result<Channel, CtlError> {
        let connect_error = |source| CtlError::Connect { endpoint: endpoint.to_owned(), source };
        let mut target = Endpoint::from_shared(endpoint.to_owned())
            .map_err(connect_error)?
            .connect_timeout(self.dial_timeout);
        if !streaming {
            target = target.timeout(self.command_timeout);
        }
        // A connect that hangs past the dial timeout (a black-holed
        // address) is bounded too.
        match tokio::time::timeout(self.dial_timeout, target.connect()).await {
            Ok(channel) => channel.map_err(connect_error),
            Err(_) => Err(CtlError::ConnectTimeout {
                endpoint: endpoint.to_owned(),
                waited: self.dial_timeout,
            }),
        }
    }

    /// Runs `call` on the first endpoint that connects and answers; an
    /// endpoint that cannot be reached or answers `UNAVAILABLE` (no leader,
    /// shutting down) passes the call to the next. Returns the endpoint
    /// that answered with the answer.
    ///
    /// # Errors
    /// The first other failure as is; [`CtlError::NoEndpointAnswered`] when
    /// every endpoint failed that way.
    pub(crate) async fn call_any<T>(
        &self,
        method: &'static str,
        streaming: bool,
        call: impl AsyncFn(Channel) -> Result<T, tonic::Status>,
    ) -> Result<(String, T), CtlError> {
        let mut tried = Vec::new();
        for endpoint in &self.endpoints {
            let channel = match self.connect(endpoint, streaming).await {
                Ok(channel) => channel,
                Err(e) => {
                    tried.push(e.to_string());
                    continue;
                }
            };
            match call(channel).await {
                Ok(answer) => return Ok((endpoint.clone(), answer)),
                Err(status) if is_retryable(&status) => {
                    tried.push(format!("{endpoint}: {}", status.message()));
                }
                Err(status) => return Err(CtlError::rpc(endpoint, method, status)),
            }
        }
        Err(CtlError::NoEndpointAnswered { method, tried: tried.join("; ") })
    }

    /// The member list, from the first endpoint that answers.
    ///
    /// # Errors
    /// As [`Clients::call_any`].
    pub(crate) async fn members(&self) -> Result<(String, Vec<Member>), CtlError> {
        self.call_any("Cluster.MemberList", false, async |channel| {
            let mut client = ClusterClient::new(channel);
            let request = MemberListRequest { linearizable: false };
            Ok(client.member_list(request).await?.into_inner().members)
        })
        .await
    }

    /// `Maintenance.Status` of the member serving `endpoint`.
    ///
    /// # Errors
    /// The endpoint is unreachable or the call failed.
    pub(crate) async fn status_of(&self, endpoint: &str) -> Result<StatusResponse, CtlError> {
        let channel = self.connect(endpoint, false).await?;
        let mut client = MaintenanceClient::new(channel);
        client
            .status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CtlError::rpc(endpoint, "Maintenance.Status", status))
    }
}

/// Whether another endpoint may answer where this one could not.
fn is_retryable(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
}
