//! `etcdserverpb.Lease`: Grant, Revoke, KeepAlive (a bidirectional
//! stream), TimeToLive and Leases.
//!
//! Expiry is the shard leader's: keep-alives, time-to-live and the list are
//! answered by the leader (the node forwards them), grants and revokes go
//! through the log.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use ringkv_api::etcdserverpb::{self as pb, lease_server::Lease};
use ringkv_node::{Reply, Request};
use ringkv_storage::mvcc::{LEASE_TTL_MAX_SECONDS, LeaseId, Response as MvccResponse};
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Response, Status};

use super::{Context, header_info, unexpected};
use crate::api::EtcdError;
use crate::api::convert::{from_pb, to_pb};

/// Answers queued on one keep-alive stream before the stream stops reading
/// requests (the client reads too slowly): bounds memory per stream.
pub const KEEP_ALIVE_RESPONSES_QUEUED_MAX: usize = 16;

/// The Lease service.
#[derive(Clone, Debug)]
pub struct LeaseService {
    ctx: Context,
}

impl LeaseService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> LeaseService {
        LeaseService { ctx }
    }

    /// Serves a keep-alive stream: one answer per request, in order. Used
    /// by the gRPC method and by the gateway.
    pub fn keep_alive_stream<S>(
        &self,
        requests: S,
        mut leader_lost: Option<super::LeaderLoss>,
    ) -> BoxStream<pb::LeaseKeepAliveResponse>
    where
        S: Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_RESPONSES_QUEUED_MAX);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let mut requests = Box::pin(requests);
            loop {
                let next = match &mut leader_lost {
                    Some(loss) => tokio::select! {
                        next = requests.next() => next,
                        () = loss.wait() => Some(Err(EtcdError::NoLeader.into())),
                    },
                    None => requests.next().await,
                };
                let answer = match next {
                    None => break,
                    // The client's stream broke: nothing more to answer.
                    Some(Err(_)) if tx.is_closed() => break,
                    Some(Err(status)) => Err(status),
                    Some(Ok(req)) => keep_alive_once(&ctx, LeaseId(req.id)).await,
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Box::pin(receiver_stream(rx))
    }
}

/// A stream of what `rx` receives.
pub(crate) fn receiver_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> Pin<Box<dyn Stream<Item = T> + Send>> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn keep_alive_once(ctx: &Context, id: LeaseId) -> Result<pb::LeaseKeepAliveResponse, Status> {
    // etcd fills the header before renewing: the revision is one the
    // renewal happened at or after.
    let revision = ctx.state().current_revision();
    let answer = ctx.call(Request::LeaseKeepAlive(id)).await;
    let info = ctx.state().header_info();
    match answer {
        Ok(answer) => match answer.reply {
            Reply::LeaseKeepAlive { id, ttl } => Ok(to_pb::lease_keep_alive_response(
                &header_info(&answer.header),
                revision,
                id,
                (ttl > 0).then_some(ttl),
            )),
            other => Err(unexpected("LeaseKeepAlive", &other)),
        },
        // An unknown lease is TTL 0, not an error (clients read it as
        // "the lease is gone").
        Err(status) if status.message() == EtcdError::LeaseNotFound.message() => {
            Ok(to_pb::lease_keep_alive_response(&info, revision, id, None))
        }
        Err(status) => Err(status),
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: tonic::Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let req = request.into_inner();
        if req.ttl > LEASE_TTL_MAX_SECONDS {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        self.ctx.limits().check_proposal_size(&req)?;
        // The node picks the id when the client leaves it 0, and raises the
        // TTL to the cluster's minimum.
        let answer =
            self.ctx.call(Request::LeaseGrant { id: LeaseId(req.id), ttl: req.ttl }).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::LeaseGrant(r)) => {
                Ok(Response::new(to_pb::lease_grant_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("LeaseGrant", &other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: tonic::Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let req = from_pb::lease_revoke_request(request.into_inner())?;
        let answer = self.ctx.call(Request::LeaseRevoke(req.id)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::LeaseRevoke(r)) => {
                Ok(Response::new(to_pb::lease_revoke_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("LeaseRevoke", &other)),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: tonic::Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<pb::LeaseKeepAliveResponse>>, Status> {
        self.ctx.check_leader(&request)?;
        let leader_lost = self.ctx.leader_lost(&request);
        Ok(Response::new(self.keep_alive_stream(request.into_inner(), leader_lost)))
    }

    async fn lease_time_to_live(
        &self,
        request: tonic::Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let req = request.into_inner();
        let revision = self.ctx.state().current_revision();
        let answer =
            self.ctx.call(Request::LeaseTimeToLive { id: LeaseId(req.id), keys: req.keys }).await?;
        match answer.reply {
            Reply::LeaseTimeToLive(ttl) => {
                let info = header_info(&answer.header);
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: Some(info.header(revision)),
                    id: ttl.id.0,
                    ttl: ttl.ttl,
                    granted_ttl: ttl.granted_ttl,
                    keys: ttl.keys.into_iter().map(Vec::from).collect(),
                }))
            }
            other => Err(unexpected("LeaseTimeToLive", &other)),
        }
    }

    async fn lease_leases(
        &self,
        request: tonic::Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let revision = self.ctx.state().current_revision();
        let answer = self.ctx.call(Request::LeaseLeases).await?;
        match answer.reply {
            Reply::LeaseLeases(ids) => Ok(Response::new(to_pb::lease_leases_response(
                &header_info(&answer.header),
                revision,
                ids,
            ))),
            other => Err(unexpected("LeaseLeases", &other)),
        }
    }
}
