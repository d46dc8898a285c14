//! KV requests for a data shard this member does not host, sent on to a
//! member that does (ADR 0002, "Routing": any member accepts any request).
//!
//! Each KV request, or each shard's part of one over several shards, goes
//! where [`ShardLocality`] says its shard is: to this member's node when it
//! hosts the shard, otherwise, as the same etcd RPC (the part for that
//! shard), to a member that hosts it, over that member's client URL
//! ([`MemberDialer`], shared with the watch relay). The node's own
//! `NotHosted` answer (placement moved the shard since the last published
//! state) sends the request on too, to the members it names.
//!
//! # The forwarded call
//!
//! It carries the client's [`crate::remote::FORWARDED_METADATA`] (token,
//! `hasleader`), so that the hosting member checks the client's rights
//! and leader rule itself, and [`FORWARDED_SHARD_METADATA`] naming the
//! shard: the receiving member serves that shard's part itself and never
//! sends it further. A member that does not host the shard answers
//! [`EtcdError::NotHosted`] (`Unavailable`, marked with
//! [`crate::api::status::NOT_HOSTED_METADATA`]), so no call travels more
//! than one hop. Its answer is handed to the client as it came (header,
//! revision, `kvs`, `more`, `count`), or, for one part of a scatter-gather,
//! merged with the other parts as a local part would be.
//!
//! # Retries
//!
//! Within the request's deadline (the client's `grpc-timeout`, at most
//! this member's request timeout) the members holding the shard are tried
//! in turn:
//!
//! | what happened | read (`Range`) | write (`Put`, `DeleteRange`, `Txn`) |
//! | --- | --- | --- |
//! | no connection could be made (nothing sent) | next member | next member |
//! | the member answered `NotHosted` (nothing applied) | next member | next member |
//! | another `Unavailable` (no leader, timeout, lost connection) | next member | the error, to the client |
//! | any other answer | to the client | to the client |
//! | the deadline passed | `request timed out` | `request timed out` |
//!
//! A write that reached a member may have been applied whatever the error
//! says, so it is never sent twice: the client decides, as it would for an
//! etcd member's own ambiguous error.

use std::time::Duration;

use ringkv_api::etcdserverpb::{self as pb, kv_client::KvClient};
use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::{Credential, Request};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

use super::Context;
use crate::api::EtcdError;
use crate::api::convert::to_pb;
use crate::api::status::NOT_HOSTED_METADATA;
use crate::remote::{
    MemberDialer, RelayCandidate, ShardHome, ShardLocality, candidates, forwarded_metadata,
};
use crate::runtime::{Answer, DirectRead};

/// The metadata key of a forwarded KV call: the data shard it is for. The
/// receiving member serves that shard's part itself, or answers
/// [`EtcdError::NotHosted`]; it never sends the call further.
pub const FORWARDED_SHARD_METADATA: &str = "ringkv-forwarded-shard";

/// The longest a forwarded Lock or Election call may take when its client
/// gave no deadline: a Lock waits for as long as the lock is held, so the
/// member's request timeout does not bound it; an hour does.
pub const CONCURRENCY_FORWARD_TIMEOUT_MAX: Duration = Duration::from_secs(60 * 60);

/// The gRPC metadata key of a call's deadline (`grpc-timeout`).
const GRPC_TIMEOUT_METADATA: &str = "grpc-timeout";

/// What a member needs to send KV requests on: where shards are, how to
/// dial, and how long a request may take.
#[derive(Debug)]
pub struct KvForwarding {
    locality: std::sync::Arc<dyn ShardLocality>,
    dialer: std::sync::Arc<MemberDialer>,
    /// The longest a request may take, forwarding included (the node's
    /// request timeout).
    request_timeout: Duration,
}

impl KvForwarding {
    /// Sends requests for the shards `locality` calls remote over
    /// `dialer`'s channels, each within `request_timeout` at most.
    pub fn new(
        locality: std::sync::Arc<dyn ShardLocality>,
        dialer: std::sync::Arc<MemberDialer>,
        request_timeout: Duration,
    ) -> KvForwarding {
        KvForwarding { locality, dialer, request_timeout }
    }
}

/// One KV request's forwarding state (see [`Context::for_kv_request`]).
#[derive(Debug)]
pub(crate) struct KvRoute {
    /// The shard a forwarded call names: it is served here or refused,
    /// never sent on. `None` for a client's own call.
    forwarded: Option<ShardId>,
    /// The client's metadata a forwarded call carries.
    metadata: MetadataMap,
    /// When the request's time is up.
    deadline: Instant,
    /// The client's own `grpc-timeout`, if it sent one.
    client_timeout: Option<Duration>,
}

/// Where one shard's part was served.
#[derive(Debug)]
pub(crate) enum Reached {
    /// By this member's node.
    Here(Answer),
    /// By another member, whose answer this is, untouched.
    There(Forwarded),
}

/// Another member's answer to a forwarded KV call.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// To a `Range`.
    Range(pb::RangeResponse),
    /// To a `Put`.
    Put(pb::PutResponse),
    /// To a `DeleteRange`.
    DeleteRange(pb::DeleteRangeResponse),
    /// To a `Txn`.
    Txn(pb::TxnResponse),
}

/// A KV request as the wire carries it to another member.
#[derive(Clone, Debug)]
enum KvMessage {
    Range(pb::RangeRequest),
    Put(pb::PutRequest),
    DeleteRange(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
}

impl KvMessage {
    /// `None` for a request that is not a KV request (never forwarded).
    fn new(request: Request) -> Option<KvMessage> {
        Some(match request {
            Request::Range(r) => KvMessage::Range(to_pb::range_request(r)),
            Request::Put(r) => KvMessage::Put(to_pb::put_request(r)),
            Request::DeleteRange(r) => KvMessage::DeleteRange(to_pb::delete_range_request(r)),
            Request::Txn(r) => KvMessage::Txn(to_pb::txn_request(r)),
            _ => return None,
        })
    }

    /// Whether sending it twice could apply it twice.
    fn is_write(&self) -> bool {
        !matches!(self, KvMessage::Range(_))
    }

    /// Sends it over `channel` with `metadata` and a deadline `timeout`
    /// away.
    async fn send(
        &self,
        channel: Channel,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<Forwarded, tonic::Status> {
        // The answer may be as large as the hosting member makes it.
        let mut client = KvClient::new(channel).max_decoding_message_size(usize::MAX);
        Ok(match self {
            KvMessage::Range(m) => Forwarded::Range(
                client.range(forwarded_call(m.clone(), metadata, timeout)).await?.into_inner(),
            ),
            KvMessage::Put(m) => Forwarded::Put(
                client.put(forwarded_call(m.clone(), metadata, timeout)).await?.into_inner(),
            ),
            KvMessage::DeleteRange(m) => Forwarded::DeleteRange(
                client
                    .delete_range(forwarded_call(m.clone(), metadata, timeout))
                    .await?
                    .into_inner(),
            ),
            KvMessage::Txn(m) => Forwarded::Txn(
                client.txn(forwarded_call(m.clone(), metadata, timeout)).await?.into_inner(),
            ),
        })
    }
}

/// A request carrying `metadata` that must be answered within `timeout`:
/// how a call is sent on to another member.
pub(crate) fn forwarded_call<T>(
    message: T,
    metadata: MetadataMap,
    timeout: Duration,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata;
    request.set_timeout(timeout);
    request
}

/// How one shard's part goes.
enum Via {
    /// To this member's node; `may_forward`: sent on if the node answers
    /// `NotHosted`.
    Local { may_forward: bool },
    /// To these members.
    Remote(Vec<RelayCandidate>),
}

impl Context {
    /// This context bound to KV `request`'s client (as
    /// [`Context::for_request`]) and to its forwarding: its deadline, the
    /// metadata a forwarded call carries, and, if it is a forwarded call
    /// itself, the shard it names.
    ///
    /// # Errors
    /// `InvalidArgument` when [`FORWARDED_SHARD_METADATA`] is not a shard
    /// number.
    pub(crate) fn for_kv_request<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Context, tonic::Status> {
        let mut ctx = self.for_request(request);
        let Some(forwarding) = &self.forwarding else { return Ok(ctx) };
        let metadata = request.metadata();
        let forwarded = match metadata.get(FORWARDED_SHARD_METADATA) {
            None => None,
            Some(value) => Some(
                value.to_str().ok().and_then(|v| v.parse().ok()).map(ShardId).ok_or_else(|| {
                    tonic::Status::invalid_argument(format!(
                        "ringkv: {FORWARDED_SHARD_METADATA} is not a shard number"
                    ))
                })?,
            ),
        };
        let client_timeout = metadata
            .get(GRPC_TIMEOUT_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let timeout = client_timeout
            .map_or(forwarding.request_timeout, |t| t.min(forwarding.request_timeout));
        ctx.route = Some(std::sync::Arc::new(KvRoute {
            forwarded,
            metadata: forwarded_metadata(metadata),
            deadline: Instant::now() + timeout,
            client_timeout,
        }));
        Ok(ctx)
    }

    /// Serves a KV request (or one shard's part of one) on data shard
    /// `shard`: by this member's node, to `aimed` or routed by its keys
    /// (`None`), or by a member that hosts the shard (see the module
    /// docs). A serializable range is served off the node thread when it
    /// may be ([`crate::runtime::NodeHandle::range_serializable`]).
    ///
    /// # Errors
    /// The node's errors, or the hosting member's, as a status.
    pub(crate) async fn reach(
        &self,
        shard: ShardId,
        aimed: Option<ShardId>,
        request: Request,
    ) -> Result<Reached, tonic::Status> {
        let may_forward = match self.via(shard)? {
            Via::Remote(candidates) => {
                return self.forward(shard, candidates, request).await.map(Reached::There);
            }
            Via::Local { may_forward } => may_forward,
        };
        // A forwarded call is for its shard alone (one part of a range
        // over several, as the sender split it).
        let aimed = if self.forwarded().is_some() { Some(shard) } else { aimed };
        let kept = may_forward.then(|| request.clone());
        match (self.serve_here(shard, aimed, request).await, kept) {
            (Ok(answer), _) => Ok(Reached::Here(answer)),
            (Err(EtcdError::NotHosted { hosts, .. }), Some(request)) => {
                let candidates = self.candidates_for(shard, &hosts);
                self.forward(shard, candidates, request).await.map(Reached::There)
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    /// Serves a `Put` or `Txn`: on the one shard its keys live on, or,
    /// for a `Txn` over several, by the node, which refuses it naming them.
    ///
    /// # Errors
    /// As [`Context::reach`].
    pub(crate) async fn reach_one(&self, request: Request) -> Result<Reached, tonic::Status> {
        match crate::shards::targets(self.node().keyspace(), &request) {
            Some(crate::shards::Targets::One(shard)) => self.reach(shard, None, request).await,
            _ => self.call(request).await.map(Reached::Here),
        }
    }

    /// The shard a forwarded call names, if this request is one.
    pub(crate) fn forwarded(&self) -> Option<ShardId> {
        self.route.as_ref().and_then(|r| r.forwarded)
    }

    fn via(&self, shard: ShardId) -> Result<Via, EtcdError> {
        let (Some(forwarding), Some(route)) = (&self.forwarding, &self.route) else {
            return Ok(Via::Local { may_forward: false });
        };
        if let Some(named) = route.forwarded {
            if named != shard {
                return Err(EtcdError::Unknown {
                    message: format!(
                        "ringkv: a call forwarded for shard {} names keys of shard {} (do the \
                         members run with the same --shards and hash-key rule?)",
                        named.0, shard.0
                    ),
                });
            }
            if !forwarding.locality.hosts(shard) {
                return Err(self.not_hosted(shard));
            }
            return Ok(Via::Local { may_forward: false });
        }
        // A client known by its certificate alone cannot be forwarded as
        // itself: the node checks its rights first (it authorizes before
        // it answers NotHosted), see the `remote` module docs.
        if matches!(self.credential, Credential::Certificate(_)) {
            return Ok(Via::Local { may_forward: true });
        }
        Ok(match forwarding.locality.locate(shard) {
            ShardHome::Local => Via::Local { may_forward: true },
            ShardHome::Remote(candidates) => Via::Remote(candidates),
        })
    }

    /// This member's refusal of `shard`, naming the members it knows hold it.
    fn not_hosted(&self, shard: ShardId) -> EtcdError {
        let hosts = self.node().shard_replica_nodes(shard);
        ringkv_node::NodeError::NotHosted { shard, hosts }.into()
    }

    /// The members to try for `shard`: those of `hosts` (the node's
    /// `NotHosted` answer), else those the locality names.
    fn candidates_for(&self, shard: ShardId, hosts: &[NodeId]) -> Vec<RelayCandidate> {
        let named = candidates(self.state(), hosts);
        if !named.is_empty() {
            return named;
        }
        match self.forwarding.as_ref().map(|f| f.locality.locate(shard)) {
            Some(ShardHome::Remote(candidates)) => candidates,
            _ => candidates(self.state(), &self.node().shard_replica_nodes(shard)),
        }
    }

    /// Serves `request` on this member's node.
    async fn serve_here(
        &self,
        shard: ShardId,
        aimed: Option<ShardId>,
        request: Request,
    ) -> Result<Answer, EtcdError> {
        let request = match request {
            Request::Range(req) if req.serializable => {
                match self.node().range_serializable(shard, req).await {
                    DirectRead::Answered(answer) => return answer,
                    DirectRead::NeedsNode(req) => Request::Range(req),
                }
            }
            request => request,
        };
        let credential = self.credential.clone();
        match aimed {
            Some(shard) => self.node().call_shard_as(credential, shard, request).await,
            None => self.node().call_as(credential, request).await,
        }
    }

    /// Sends `request` for `shard` to the first of `candidates` that
    /// answers (see the module docs for what is retried).
    async fn forward(
        &self,
        shard: ShardId,
        candidates: Vec<RelayCandidate>,
        request: Request,
    ) -> Result<Forwarded, tonic::Status> {
        let Some(route) = &self.route else {
            return Err(self.not_hosted(shard).into());
        };
        let Some(message) = KvMessage::new(request) else {
            return Err(self.not_hosted(shard).into());
        };
        let write = message.is_write();
        let send = |channel, metadata, timeout| message.send(channel, metadata, timeout);
        self.forward_with(shard, candidates, write, route.deadline, send).await
    }

    /// Sends one call for `shard` to the first of `candidates` that
    /// answers, by `send(channel, metadata, time left)`, with the client's
    /// metadata and [`FORWARDED_SHARD_METADATA`], until `deadline`; a
    /// `write` is not sent again once it may have arrived (see the module
    /// docs).
    pub(crate) async fn forward_with<T, F, Fut>(
        &self,
        shard: ShardId,
        candidates: Vec<RelayCandidate>,
        write: bool,
        deadline: Instant,
        send: F,
    ) -> Result<T, tonic::Status>
    where
        F: Fn(Channel, MetadataMap, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let (Some(forwarding), Some(route)) = (&self.forwarding, &self.route) else {
            return Err(self.not_hosted(shard).into());
        };
        let mut metadata = route.metadata.clone();
        metadata.insert(FORWARDED_SHARD_METADATA, MetadataValue::from(shard.0));
        let mut last: Option<tonic::Status> = None;
        'members: for candidate in &candidates {
            for url in &candidate.client_urls {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(EtcdError::Timeout.into());
                }
                let channel =
                    match tokio::time::timeout(remaining, forwarding.dialer.channel(url)).await {
                        Err(_) => return Err(EtcdError::Timeout.into()),
                        Ok(Err(e)) => {
                            tracing::debug!(shard = shard.0, error = %e, "forwarding: dial failed");
                            last = Some(tonic::Status::unavailable(format!(
                                "ringkv: cannot reach member {:x} for shard {}: {e}",
                                candidate.member.0, shard.0
                            )));
                            continue;
                        }
                        Ok(Ok(channel)) => channel,
                    };
                let sent = send(channel, metadata.clone(), remaining);
                let status = match tokio::time::timeout(remaining, sent).await {
                    // Sent, and maybe applied: a write is not sent again.
                    Err(_) => return Err(EtcdError::Timeout.into()),
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(status)) => status,
                };
                if std::error::Error::source(&status).is_some() {
                    // A transport failure: the next call dials afresh.
                    forwarding.dialer.evict(url);
                }
                let next = after_failure(write, &status);
                if next == AfterFailure::Surface {
                    return Err(status);
                }
                tracing::debug!(shard = shard.0, member = candidate.member.0, %status,
                    "forwarding: trying the next member");
                last = Some(status);
                if next == AfterFailure::NextMember {
                    // The member answered: its other URLs would too.
                    continue 'members;
                }
            }
        }
        Err(last.unwrap_or_else(|| self.not_hosted(shard).into()))
    }

    /// For a Lock or Election call on the keys of data shard `shard`: the
    /// members to send the whole call to when this member does not hold
    /// the shard, `None` to serve it here (it holds the shard, or the call
    /// was forwarded to it: it is never sent further). The call's
    /// deadline is the client's own (`grpc-timeout`), else
    /// [`CONCURRENCY_FORWARD_TIMEOUT_MAX`]: a Lock waits as long as the
    /// lock is held.
    ///
    /// # Errors
    /// A forwarded call for a shard this member does not hold.
    pub(crate) fn concurrency_home(
        &self,
        shard: ShardId,
    ) -> Result<Option<(Vec<RelayCandidate>, Instant)>, tonic::Status> {
        match self.via(shard)? {
            Via::Local { .. } => Ok(None),
            Via::Remote(candidates) => {
                let timeout = self
                    .route
                    .as_ref()
                    .and_then(|r| r.client_timeout)
                    .unwrap_or(CONCURRENCY_FORWARD_TIMEOUT_MAX);
                Ok(Some((candidates, Instant::now() + timeout)))
            }
        }
    }
}

/// What a forwarded call's failure leads to (the module docs' table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterFailure {
    /// Nothing was sent: try the member's next URL, then the next member.
    NextUrl,
    /// The member answered without applying it (or it is a read): try the
    /// next member.
    NextMember,
    /// It may have been applied, or the answer is the client's: hand the
    /// status to the client.
    Surface,
}

/// What follows a forwarded call (a `write` or not) failing with `status`.
fn after_failure(write: bool, status: &tonic::Status) -> AfterFailure {
    if is_connect_error(status) {
        return AfterFailure::NextUrl;
    }
    let refused = status.metadata().get(NOT_HOSTED_METADATA).is_some();
    if refused || (!write && status.code() == tonic::Code::Unavailable) {
        return AfterFailure::NextMember;
    }
    AfterFailure::Surface
}

/// Whether `status` says no connection could be made: the request never
/// left this member (tonic wraps every connector failure in
/// [`tonic::ConnectError`]).
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A `grpc-timeout` value (at most 8 digits and a unit: `H`, `M`, `S`, `m`,
/// `u`, `n`), as the gRPC HTTP/2 protocol defines it; `None` if malformed.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{AfterFailure, after_failure, parse_grpc_timeout};
    use crate::api::EtcdError;

    #[test]
    fn only_a_write_that_never_reached_a_shard_is_sent_again() {
        let refused_connection = tonic::Status::from_error(Box::new(tonic::ConnectError(
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        )));
        let not_hosted = EtcdError::NotHosted {
            shard: ringkv_consensus::ShardId(3),
            hosts: Vec::new(),
            message: "shard s3 is not on this member".into(),
        }
        .to_status();
        // Lost after it was sent, as tonic reports a connection that broke.
        let lost = tonic::Status::unavailable("h2 protocol error: connection reset");
        let cases = [
            (&refused_connection, AfterFailure::NextUrl, AfterFailure::NextUrl),
            (&not_hosted, AfterFailure::NextMember, AfterFailure::NextMember),
            (&EtcdError::NoLeader.to_status(), AfterFailure::NextMember, AfterFailure::Surface),
            (&EtcdError::Timeout.to_status(), AfterFailure::NextMember, AfterFailure::Surface),
            (&lost, AfterFailure::NextMember, AfterFailure::Surface),
            (
                &EtcdError::PermissionDenied.to_status(),
                AfterFailure::Surface,
                AfterFailure::Surface,
            ),
            (&EtcdError::Compacted.to_status(), AfterFailure::Surface, AfterFailure::Surface),
        ];
        for (status, read, write) in cases {
            assert_eq!(after_failure(false, status), read, "read: {status:?}");
            assert_eq!(after_failure(true, status), write, "write: {status:?}");
        }
    }

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_defines_them() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S", "5ß"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
