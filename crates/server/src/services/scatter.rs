//! `Range` and `DeleteRange` over any number of shards: a request confined
//! to one shard goes to it unchanged (exactly etcd); one over several is
//! sent to each of them at once and the answers merged
//! ([`crate::shards`], which says what a merged answer is and is not).
//! Each shard's part is served where its shard is (`forward.rs`): by this
//! member's node, or by a member that hosts it, whose answer to a whole
//! request is handed on untouched and to a part merged like a local one.

use futures_util::future::try_join_all;
use ringkv_api::etcdserverpb as pb;
use ringkv_consensus::ShardId;
use ringkv_node::{Reply, Request};
use ringkv_storage::mvcc::{
    DeleteRangeRequest, DeleteRangeResponse, RangeRequest, RangeResponse, Response as MvccResponse,
};
use tonic::Status;

use super::forward::{Forwarded, Reached};
use super::{Context, header_info, unexpected};
use crate::api::HeaderInfo;
use crate::api::convert::{from_pb, to_pb};
use crate::shards::{self, Targets};

impl Context {
    /// Serves a `Range`, over one shard or several (see the module docs).
    ///
    /// # Errors
    /// The node's errors (or the hosting member's); `InvalidArgument` for
    /// a read at a revision over several shards.
    pub(crate) async fn range(&self, req: RangeRequest) -> Result<pb::RangeResponse, Status> {
        let targets = self.range_targets(&req.key, &req.range_end);
        let shards = match targets {
            Targets::One(shard) => {
                return match self.reach(shard, None, Request::Range(req)).await? {
                    Reached::Here(answer) => match answer.reply {
                        Reply::Range(r) => {
                            Ok(to_pb::range_response(r, &header_info(&answer.header)))
                        }
                        other => Err(unexpected("Range", &other)),
                    },
                    Reached::There(Forwarded::Range(r)) => Ok(r),
                    Reached::There(_) => Err(wrong_answer("Range")),
                };
            }
            Targets::Many(ref shards) => {
                shards::check_range_revision(&req, &targets)?;
                shards
            }
        };
        let part = shards::part_range(&req);
        let answers =
            try_join_all(shards.iter().map(|&s| self.range_part(s, part.clone()))).await?;
        let (terms, parts): (Vec<u64>, Vec<RangeResponse>) = answers.into_iter().unzip();
        let merged = shards::merge_ranges(&req, parts);
        Ok(to_pb::range_response(merged, &self.merged_header(&terms)))
    }

    /// Serves a `DeleteRange`, over one shard or several: each shard
    /// deletes its keys at one revision of its own.
    ///
    /// # Errors
    /// The node's errors (or the hosting member's). Over several shards,
    /// the first failure is reported; the shards that succeeded have
    /// deleted their keys (the request is not atomic across shards, as the
    /// README says).
    pub(crate) async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Status> {
        let targets = self.range_targets(&req.key, &req.range_end);
        let shards = match targets {
            Targets::One(shard) => {
                return match self.reach(shard, None, Request::DeleteRange(req)).await? {
                    Reached::Here(answer) => match answer.reply {
                        Reply::Kv(MvccResponse::DeleteRange(r)) => {
                            Ok(to_pb::delete_range_response(r, &header_info(&answer.header)))
                        }
                        other => Err(unexpected("DeleteRange", &other)),
                    },
                    Reached::There(Forwarded::DeleteRange(r)) => Ok(r),
                    Reached::There(_) => Err(wrong_answer("DeleteRange")),
                };
            }
            Targets::Many(shards) => shards,
        };
        let answers =
            try_join_all(shards.iter().map(|&s| self.delete_part(s, req.clone()))).await?;
        let (terms, parts): (Vec<u64>, Vec<DeleteRangeResponse>) = answers.into_iter().unzip();
        Ok(to_pb::delete_range_response(shards::merge_deletes(parts), &self.merged_header(&terms)))
    }

    /// The shards a range over `key`..`range_end` touches: its keys', or,
    /// for a call another member forwarded, the one shard it names (the
    /// sender split the request; this is its part).
    fn range_targets(&self, key: &[u8], range_end: &[u8]) -> Targets {
        match self.forwarded() {
            Some(shard) => Targets::One(shard),
            None => shards::range_targets(self.node().keyspace(), key, range_end),
        }
    }

    /// One shard's part of a range over several: its term and its answer.
    async fn range_part(
        &self,
        shard: ShardId,
        req: RangeRequest,
    ) -> Result<(u64, RangeResponse), Status> {
        match self.reach(shard, Some(shard), Request::Range(req)).await? {
            Reached::Here(answer) => match answer.reply {
                Reply::Range(r) => Ok((answer.header.raft_term, r)),
                other => Err(unexpected("Range", &other)),
            },
            Reached::There(Forwarded::Range(r)) => {
                Ok((r.header.as_ref().map_or(0, |h| h.raft_term), from_pb::range_response(r)))
            }
            Reached::There(_) => Err(wrong_answer("Range")),
        }
    }

    /// One shard's part of a delete over several: its term and its answer.
    async fn delete_part(
        &self,
        shard: ShardId,
        req: DeleteRangeRequest,
    ) -> Result<(u64, DeleteRangeResponse), Status> {
        match self.reach(shard, Some(shard), Request::DeleteRange(req)).await? {
            Reached::Here(answer) => match answer.reply {
                Reply::Kv(MvccResponse::DeleteRange(r)) => Ok((answer.header.raft_term, r)),
                other => Err(unexpected("DeleteRange", &other)),
            },
            Reached::There(Forwarded::DeleteRange(r)) => Ok((
                r.header.as_ref().map_or(0, |h| h.raft_term),
                from_pb::delete_range_response(r),
            )),
            Reached::There(_) => Err(wrong_answer("DeleteRange")),
        }
    }

    /// The header of a merged answer: this member's, with the highest term
    /// any part reported (each shard has its own term).
    fn merged_header(&self, terms: &[u64]) -> HeaderInfo {
        let mut header = self.state().header_info();
        header.raft_term = terms.iter().copied().max().unwrap_or(header.raft_term);
        header
    }
}

/// Another member answered a forwarded call with an answer to another
/// RPC: a bug, reported rather than panicking the server.
pub(crate) fn wrong_answer(rpc: &'static str) -> Status {
    crate::api::EtcdError::Unknown {
        message: format!(
            "ringkv: internal error: a member answered a forwarded {rpc} with another RPC's answer"
        ),
    }
    .into()
}
