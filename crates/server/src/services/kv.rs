//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.
//!
//! With several shards a `Range` or `DeleteRange` may span them: it is
//! scattered and merged (`scatter.rs`). A `Put` goes to its key's shard,
//! and a `Txn` to the one shard all its keys share; the node refuses one
//! that spans shards (`FailedPrecondition`, naming them). A shard this
//! member does not host is served by one that does (`forward.rs`).

use ringkv_api::etcdserverpb::{self as pb, kv_server::Kv};
use ringkv_node::{Reply, Request};
use ringkv_storage::mvcc::Response as MvccResponse;
use tonic::{Response, Status};

use super::forward::{Forwarded, Reached};
use super::scatter::wrong_answer;
use super::{Context, header_info, learner, unexpected};
use crate::api::EtcdError;
use crate::api::convert::{from_pb, to_pb};

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
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = from_pb::range_request(request.into_inner())?;
        if learner::learner_refuses_range(self.ctx.state(), req.serializable) {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        // One shard: exactly etcd (a serializable read is served off the
        // node thread unless only the node may serve it). Several: each
        // shard's part, merged.
        Ok(Response::new(ctx.range(req).await?))
    }

    async fn put(
        &self,
        request: tonic::Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = from_pb::put_request(request.into_inner(), self.ctx.limits())?;
        match ctx.reach_one(Request::Put(req)).await? {
            Reached::Here(answer) => match answer.reply {
                Reply::Kv(MvccResponse::Put(r)) => {
                    Ok(Response::new(to_pb::put_response(r, &header_info(&answer.header))))
                }
                other => Err(unexpected("Put", &other)),
            },
            Reached::There(Forwarded::Put(r)) => Ok(Response::new(r)),
            Reached::There(_) => Err(wrong_answer("Put")),
        }
    }

    async fn delete_range(
        &self,
        request: tonic::Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = from_pb::delete_range_request(request.into_inner(), self.ctx.limits())?;
        Ok(Response::new(ctx.delete_range(req).await?))
    }

    async fn txn(
        &self,
        request: tonic::Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = from_pb::txn_request(request.into_inner(), self.ctx.limits())?;
        match ctx.reach_one(Request::Txn(req)).await? {
            Reached::Here(answer) => match answer.reply {
                Reply::Kv(MvccResponse::Txn(r)) => {
                    Ok(Response::new(to_pb::txn_response(r, &header_info(&answer.header))))
                }
                other => Err(unexpected("Txn", &other)),
            },
            Reached::There(Forwarded::Txn(r)) => Ok(Response::new(r)),
            Reached::There(_) => Err(wrong_answer("Txn")),
        }
    }

    async fn compact(
        &self,
        request: tonic::Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_request(&request);
        let req = from_pb::compaction_request(request.into_inner());
        let shards = self.ctx.node().keyspace().shard_count();
        if shards > 1 {
            // A revision names one shard's history (ADR 0002): compacting
            // every shard at it would drop unrelated histories.
            return Err(EtcdError::ShardRefused {
                message: format!(
                    "etcdserver: compaction by revision is refused on a cluster of {shards} \
                     shards: a revision names one shard's history (use --shards 1)"
                ),
            }
            .into());
        }
        let answer = ctx.call(Request::Compact(req)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::Compaction(r)) => {
                Ok(Response::new(to_pb::compaction_response(r, &header_info(&answer.header))))
            }
            other => Err(unexpected("Compact", &other)),
        }
    }
}
