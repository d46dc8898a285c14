//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use ringkv_api::etcdserverpb::{self as pb, kv_server::Kv};
use ringkv_node::{Reply, Request};
use ringkv_storage::mvcc::Response as MvccResponse;
use tonic::{Response, Status};

use super::{Context, header_info, learner, unexpected};
use crate::api::EtcdError;
use crate::api::convert::{from_pb, to_pb};
use crate::runtime::DirectRead;

/// The KV service.
#[derive(Clone, Debug)]
pub struct KvService {
    ctx: Context,
}

impl KvService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> KvService {
        KvService { ctx }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: tonic::Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_request(&request);
        let req = from_pb::range_request(request.into_inner())?;
        if learner::learner_refuses_range(self.ctx.state(), req.serializable) {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        // A serializable read needs no ordering: served off the node
        // thread unless only the node may serve it (auth enabled).
        let answer = if req.serializable {
            match self.ctx.node().range_serializable(req).await {
                DirectRead::Answered(answer) => answer?,
                DirectRead::NeedsNode(req) => ctx.call(Request::Range(req)).await?,
            }
        } else {
            ctx.call(Request::Range(req)).await?
        };
        match answer.reply {
            Reply::Range(r) => {
                Ok(Response::new(to_pb::range_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("Range", &other)),
        }
    }

    async fn put(
        &self,
        request: tonic::Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_request(&request);
        let req = from_pb::put_request(request.into_inner(), self.ctx.limits())?;
        let answer = ctx.call(Request::Put(req)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::Put(r)) => {
                Ok(Response::new(to_pb::put_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("Put", &other)),
        }
    }

    async fn delete_range(
        &self,
        request: tonic::Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_request(&request);
        let req = from_pb::delete_range_request(request.into_inner(), self.ctx.limits())?;
        let answer = ctx.call(Request::DeleteRange(req)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::DeleteRange(r)) => {
                Ok(Response::new(to_pb::delete_range_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("DeleteRange", &other)),
        }
    }

    async fn txn(
        &self,
        request: tonic::Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_request(&request);
        let req = from_pb::txn_request(request.into_inner(), self.ctx.limits())?;
        let answer = ctx.call(Request::Txn(req)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::Txn(r)) => {
                Ok(Response::new(to_pb::txn_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("Txn", &other)),
        }
    }

    async fn compact(
        &self,
        request: tonic::Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_request(&request);
        let req = from_pb::compaction_request(request.into_inner());
        let answer = ctx.call(Request::Compact(req)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::Compaction(r)) => {
                Ok(Response::new(to_pb::compaction_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("Compact", &other)),
        }
    }
}
