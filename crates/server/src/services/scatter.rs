//! `Range` and `DeleteRange` over any number of shards: a request confined
//! to one shard goes to the node unchanged (exactly etcd); one over several
//! is sent to each of them at once and the answers merged
//! ([`crate::shards`], which says what a merged answer is and is not).

use futures_util::future::try_join_all;
use ringkv_consensus::ShardId;
use ringkv_node::{Header, Reply, Request};
use ringkv_storage::mvcc::{
    DeleteRangeRequest, DeleteRangeResponse, RangeRequest, RangeResponse, Response as MvccResponse,
};
use tonic::Status;

use super::{Context, unexpected};
use crate::runtime::{Answer, DirectRead};
use crate::shards::{self, Targets};

impl Context {
    /// Serves a `Range`, over one shard or several (see the module docs).
    ///
    /// # Errors
    /// The node's errors; `InvalidArgument` for a read at a revision over
    /// several shards.
    pub(crate) async fn range(&self, req: RangeRequest) -> Result<(Header, RangeResponse), Status> {
        let targets = shards::range_targets(self.node().keyspace(), &req.key, &req.range_end);
        let shards = match targets {
            Targets::One(shard) => return self.range_part(shard, None, req).await,
            Targets::Many(ref shards) => {
                shards::check_range_revision(&req, &targets)?;
                shards
            }
        };
        let part = shards::part_range(&req);
        let answers =
            try_join_all(shards.iter().map(|&s| self.range_part(s, Some(s), part.clone()))).await?;
        let (headers, parts): (Vec<Header>, Vec<RangeResponse>) = answers.into_iter().unzip();
        Ok((merge_headers(&headers), shards::merge_ranges(&req, parts)))
    }

    /// Serves a `DeleteRange`, over one shard or several: each shard
    /// deletes its keys at one revision of its own.
    ///
    /// # Errors
    /// The node's errors. Over several shards, the first failure is
    /// reported; the shards that succeeded have deleted their keys (the
    /// request is not atomic across shards, as the README says).
    pub(crate) async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<(Header, DeleteRangeResponse), Status> {
        let targets = shards::range_targets(self.node().keyspace(), &req.key, &req.range_end);
        let shards = match targets {
            Targets::One(_) => return self.delete_part(None, req).await,
            Targets::Many(shards) => shards,
        };
        let answers =
            try_join_all(shards.iter().map(|&s| self.delete_part(Some(s), req.clone()))).await?;
        let (headers, parts): (Vec<Header>, Vec<DeleteRangeResponse>) = answers.into_iter().unzip();
        Ok((merge_headers(&headers), shards::merge_deletes(parts)))
    }

    /// One shard's range: a serializable one off the node thread when it
    /// may be, else through the node, to `aimed` (a part of a range over
    /// several shards) or routed by the node by its keys (`None`).
    async fn range_part(
        &self,
        shard: ShardId,
        aimed: Option<ShardId>,
        req: RangeRequest,
    ) -> Result<(Header, RangeResponse), Status> {
        let answer = if req.serializable {
            match self.node().range_serializable(shard, req).await {
                DirectRead::Answered(answer) => answer?,
                DirectRead::NeedsNode(req) => self.call_to(aimed, Request::Range(req)).await?,
            }
        } else {
            self.call_to(aimed, Request::Range(req)).await?
        };
        match answer.reply {
            Reply::Range(r) => Ok((answer.header, r)),
            other => Err(unexpected("Range", &other)),
        }
    }

    /// One shard's delete, to `aimed` or routed by the node (`None`).
    async fn delete_part(
        &self,
        aimed: Option<ShardId>,
        req: DeleteRangeRequest,
    ) -> Result<(Header, DeleteRangeResponse), Status> {
        let answer = self.call_to(aimed, Request::DeleteRange(req)).await?;
        match answer.reply {
            Reply::Kv(MvccResponse::DeleteRange(r)) => Ok((answer.header, r)),
            other => Err(unexpected("DeleteRange", &other)),
        }
    }

    /// Sends `request` to `aimed`, or lets the node route it (`None`).
    async fn call_to(&self, aimed: Option<ShardId>, request: Request) -> Result<Answer, Status> {
        match aimed {
            Some(shard) => self.call_shard(shard, request).await,
            None => self.call(request).await,
        }
    }
}

/// The header of a merged answer: this member's, with the highest term any
/// part reported (each shard has its own term).
fn merge_headers(headers: &[Header]) -> Header {
    let mut merged = headers.first().copied().unwrap_or_default();
    merged.raft_term = headers.iter().map(|h| h.raft_term).max().unwrap_or(merged.raft_term);
    merged
}
