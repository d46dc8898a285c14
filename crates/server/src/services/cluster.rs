//! `etcdserverpb.Cluster`: MemberAdd (learners included), MemberRemove,
//! MemberUpdate, MemberList, MemberPromote.
//!
//! Every change goes through the log; the consensus group's membership
//! follows the member table (the node reconciles them), and the transport's
//! address book follows it too (the runtime re-reads it).

use ringkv_api::etcdserverpb::{self as pb, cluster_server::Cluster};
use ringkv_consensus::NodeId;
use ringkv_node::{Member, Reply, Request};
use tonic::{Response, Status};

use super::{Context, unexpected};
use crate::api::EtcdError;
use crate::config::HttpUrl;

/// The Cluster service.
#[derive(Clone, Debug)]
pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> ClusterService {
        ClusterService { ctx }
    }

    async fn members(
        &self,
        rpc: &'static str,
        request: Request,
    ) -> Result<(pb::ResponseHeader, Option<pb::Member>, Vec<pb::Member>), Status> {
        let answer = self.ctx.call(request).await?;
        match answer.reply {
            Reply::Members { member, members } => {
                let header =
                    super::header_info(&answer.header).header(self.ctx.state().current_revision());
                Ok((header, member.map(to_pb), members.into_iter().map(to_pb).collect()))
            }
            other => Err(unexpected(rpc, &other)),
        }
    }
}

/// A member as etcd's API shows it.
pub(crate) fn to_pb(m: Member) -> pb::Member {
    pb::Member {
        id: m.id.0,
        name: m.name,
        peer_urls: m.peer_urls,
        client_urls: m.client_urls,
        is_learner: m.is_learner,
    }
}

/// Peer URLs as the member table stores them: each parsed (only `http://`
/// URLs are served) and written in one canonical form.
fn peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    if urls.is_empty() {
        return Err(EtcdError::MemberBadUrls.into());
    }
    urls.iter()
        .map(|u| u.parse::<HttpUrl>().map(|u| u.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| EtcdError::MemberBadUrls.into())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: tonic::Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let req = request.into_inner();
        self.ctx.limits().check_proposal_size(&req)?;
        let request =
            Request::MemberAdd { peer_urls: peer_urls(req.peer_urls)?, is_learner: req.is_learner };
        let (header, member, members) = self.members("MemberAdd", request).await?;
        Ok(Response::new(pb::MemberAddResponse { header: Some(header), member, members }))
    }

    async fn member_remove(
        &self,
        request: tonic::Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let id = NodeId(request.into_inner().id);
        let (header, _, members) = self.members("MemberRemove", Request::MemberRemove(id)).await?;
        Ok(Response::new(pb::MemberRemoveResponse { header: Some(header), members }))
    }

    async fn member_update(
        &self,
        request: tonic::Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let req = request.into_inner();
        self.ctx.limits().check_proposal_size(&req)?;
        let request =
            Request::MemberUpdate { id: NodeId(req.id), peer_urls: peer_urls(req.peer_urls)? };
        let (header, _, members) = self.members("MemberUpdate", request).await?;
        Ok(Response::new(pb::MemberUpdateResponse { header: Some(header), members }))
    }

    async fn member_list(
        &self,
        request: tonic::Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let linearizable = request.into_inner().linearizable;
        let (header, _, members) =
            self.members("MemberList", Request::MemberList { linearizable }).await?;
        Ok(Response::new(pb::MemberListResponse { header: Some(header), members }))
    }

    async fn member_promote(
        &self,
        request: tonic::Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let id = NodeId(request.into_inner().id);
        let (header, _, members) =
            self.members("MemberPromote", Request::MemberPromote(id)).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header: Some(header), members }))
    }
}
