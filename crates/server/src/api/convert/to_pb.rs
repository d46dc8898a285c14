//! Store answers (and requests) to etcd's wire types.
//!
//! Responses take the store's answer by value so that keys and values move
//! into the message without a copy when the store's buffers are not shared.

use bytes::Bytes;
use ringkv_api::etcdserverpb::{
    self as pb, ResponseHeader, compare::CompareResult as PbCompareResult,
    compare::CompareTarget as PbCompareTarget, compare::TargetUnion,
    range_request::SortOrder as PbSortOrder, range_request::SortTarget as PbSortTarget,
    request_op::Request, response_op::Response,
};
use ringkv_api::mvccpb::{self, event::EventType};
use ringkv_storage::mvcc::{
    self, CompareResult, CompareTarget, EventKind, LeaseId, Revision, SortOrder, SortTarget,
};

use super::HeaderInfo;

/// A key-value pair.
pub fn key_value(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Vec::from(kv.key),
        create_revision: kv.create_revision.0,
        mod_revision: kv.mod_revision.0,
        version: kv.version,
        value: Vec::from(kv.value),
        lease: kv.lease.0,
    }
}

/// A watch event; the previous version only for a watcher that asked for
/// it (`prev_kv`), as the store always records it.
pub fn event(ev: mvcc::Event, with_prev_kv: bool) -> mvccpb::Event {
    let kind = match ev.kind {
        EventKind::Put => EventType::Put,
        EventKind::Delete => EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(ev.kv)),
        prev_kv: if with_prev_kv { ev.prev_kv.map(key_value) } else { None },
    }
}

/// The answer to a `Range`.
pub fn range_response(resp: mvcc::RangeResponse, info: &HeaderInfo) -> pb::RangeResponse {
    let header = info.header(resp.revision);
    range(resp, header)
}

/// The answer to a `Put`.
pub fn put_response(resp: mvcc::PutResponse, info: &HeaderInfo) -> pb::PutResponse {
    let header = info.header(resp.revision);
    put(resp, header)
}

/// The answer to a `DeleteRange`.
pub fn delete_range_response(
    resp: mvcc::DeleteRangeResponse,
    info: &HeaderInfo,
) -> pb::DeleteRangeResponse {
    let header = info.header(resp.revision);
    delete_range(resp, header)
}

/// The answer to a `Txn`: the outer header is full, the answers inside
/// carry only their revision and a nested transaction's header is empty,
/// as etcd answers.
pub fn txn_response(resp: mvcc::TxnResponse, info: &HeaderInfo) -> pb::TxnResponse {
    let header = info.header(resp.revision);
    txn(resp, header)
}

/// The answer to a `Compact`.
pub fn compaction_response(
    resp: mvcc::CompactionResponse,
    info: &HeaderInfo,
) -> pb::CompactionResponse {
    pb::CompactionResponse { header: Some(info.header(resp.revision)) }
}

/// The answer to a `LeaseGrant`.
pub fn lease_grant_response(
    resp: mvcc::LeaseGrantResponse,
    info: &HeaderInfo,
) -> pb::LeaseGrantResponse {
    pb::LeaseGrantResponse {
        header: Some(info.header(resp.revision)),
        id: resp.id.0,
        ttl: resp.ttl,
        error: String::new(),
    }
}

/// The answer to a `LeaseRevoke`.
pub fn lease_revoke_response(
    resp: mvcc::LeaseRevokeResponse,
    info: &HeaderInfo,
) -> pb::LeaseRevokeResponse {
    pb::LeaseRevokeResponse { header: Some(info.header(resp.revision)) }
}

/// One answer on a `LeaseKeepAlive` stream. `ttl_seconds` is the renewed
/// TTL, or `None` if the lease does not exist: etcd answers that with
/// TTL 0 rather than an error, and clients read it as "lease gone".
pub fn lease_keep_alive_response(
    info: &HeaderInfo,
    revision: Revision,
    id: LeaseId,
    ttl_seconds: Option<i64>,
) -> pb::LeaseKeepAliveResponse {
    pb::LeaseKeepAliveResponse {
        header: Some(info.header(revision)),
        id: id.0,
        ttl: ttl_seconds.unwrap_or(0),
    }
}

/// What `LeaseTimeToLive` reports about an existing lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Seconds until the lease expires, as the shard leader counts.
    pub remaining_seconds: i64,
    /// The TTL the lease was granted with.
    pub granted_seconds: i64,
    /// The keys attached to it, if the request asked for them.
    pub keys: Vec<Bytes>,
}

/// The answer to a `LeaseTimeToLive`; `lease` is `None` for a lease that
/// does not exist, which etcd answers with TTL -1 rather than an error.
pub fn lease_time_to_live_response(
    info: &HeaderInfo,
    revision: Revision,
    id: LeaseId,
    lease: Option<LeaseTimeToLive>,
) -> pb::LeaseTimeToLiveResponse {
    /// etcd's TTL for a lease that does not exist.
    const TTL_NOT_FOUND: i64 = -1;
    let header = Some(info.header(revision));
    match lease {
        Some(lease) => pb::LeaseTimeToLiveResponse {
            header,
            id: id.0,
            ttl: lease.remaining_seconds,
            granted_ttl: lease.granted_seconds,
            keys: lease.keys.into_iter().map(Vec::from).collect(),
        },
        None => pb::LeaseTimeToLiveResponse {
            header,
            id: id.0,
            ttl: TTL_NOT_FOUND,
            granted_ttl: 0,
            keys: Vec::new(),
        },
    }
}

/// The answer to a `LeaseLeases`.
pub fn lease_leases_response(
    info: &HeaderInfo,
    revision: Revision,
    ids: impl IntoIterator<Item = LeaseId>,
) -> pb::LeaseLeasesResponse {
    pb::LeaseLeasesResponse {
        header: Some(info.header(revision)),
        leases: ids.into_iter().map(|id| pb::LeaseStatus { id: id.0 }).collect(),
    }
}

/// A `Range` request (the reverse of [`super::from_pb::range_request`]).
pub fn range_request(req: mvcc::RangeRequest) -> pb::RangeRequest {
    let sort_order = match req.sort_order {
        SortOrder::None => PbSortOrder::None,
        SortOrder::Ascend => PbSortOrder::Ascend,
        SortOrder::Descend => PbSortOrder::Descend,
    };
    let sort_target = match req.sort_target {
        SortTarget::Key => PbSortTarget::Key,
        SortTarget::Version => PbSortTarget::Version,
        SortTarget::Create => PbSortTarget::Create,
        SortTarget::Mod => PbSortTarget::Mod,
        SortTarget::Value => PbSortTarget::Value,
    };
    pb::RangeRequest {
        key: Vec::from(req.key),
        range_end: Vec::from(req.range_end),
        limit: req.limit,
        revision: req.revision.0,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: req.serializable,
        keys_only: req.keys_only,
        count_only: req.count_only,
        min_mod_revision: req.min_mod_revision.0,
        max_mod_revision: req.max_mod_revision.0,
        min_create_revision: req.min_create_revision.0,
        max_create_revision: req.max_create_revision.0,
    }
}

/// A `Put` request.
pub fn put_request(req: mvcc::PutRequest) -> pb::PutRequest {
    pb::PutRequest {
        key: Vec::from(req.key),
        value: Vec::from(req.value),
        lease: req.lease.0,
        prev_kv: req.prev_kv,
        ignore_value: req.ignore_value,
        ignore_lease: req.ignore_lease,
    }
}

/// A `DeleteRange` request.
pub fn delete_range_request(req: mvcc::DeleteRangeRequest) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: Vec::from(req.key),
        range_end: Vec::from(req.range_end),
        prev_kv: req.prev_kv,
    }
}

/// A `Txn` request.
pub fn txn_request(req: mvcc::TxnRequest) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: req.compare.into_iter().map(compare).collect(),
        success: req.success.into_iter().map(request_op).collect(),
        failure: req.failure.into_iter().map(request_op).collect(),
    }
}

/// A `Compact` request.
pub fn compaction_request(req: mvcc::CompactionRequest) -> pb::CompactionRequest {
    pb::CompactionRequest { revision: req.revision.0, physical: req.physical }
}

/// A `LeaseGrant` request (with the id the proposer chose).
pub fn lease_grant_request(req: mvcc::LeaseGrantRequest) -> pb::LeaseGrantRequest {
    pb::LeaseGrantRequest { ttl: req.ttl, id: req.id.0 }
}

/// A `LeaseRevoke` request.
pub fn lease_revoke_request(req: mvcc::LeaseRevokeRequest) -> pb::LeaseRevokeRequest {
    pb::LeaseRevokeRequest { id: req.id.0 }
}

fn range(resp: mvcc::RangeResponse, header: ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: resp.kvs.into_iter().map(key_value).collect(),
        more: resp.more,
        count: resp.count,
    }
}

fn put(resp: mvcc::PutResponse, header: ResponseHeader) -> pb::PutResponse {
    pb::PutResponse { header: Some(header), prev_kv: resp.prev_kv.map(key_value) }
}

fn delete_range(
    resp: mvcc::DeleteRangeResponse,
    header: ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: resp.deleted,
        prev_kvs: resp.prev_kvs.into_iter().map(key_value).collect(),
    }
}

fn txn(resp: mvcc::TxnResponse, header: ResponseHeader) -> pb::TxnResponse {
    pb::TxnResponse {
        header: Some(header),
        succeeded: resp.succeeded,
        responses: resp.responses.into_iter().map(response_op).collect(),
    }
}

/// An answer inside a transaction: etcd sets only the revision of its
/// header, and leaves a nested transaction's header empty.
fn response_op(op: mvcc::ResponseOp) -> pb::ResponseOp {
    let revision_only =
        |revision: Revision| ResponseHeader { revision: revision.0, ..Default::default() };
    let response = match op {
        mvcc::ResponseOp::Range(r) => {
            let header = revision_only(r.revision);
            Response::ResponseRange(range(r, header))
        }
        mvcc::ResponseOp::Put(p) => {
            let header = revision_only(p.revision);
            Response::ResponsePut(put(p, header))
        }
        mvcc::ResponseOp::DeleteRange(d) => {
            let header = revision_only(d.revision);
            Response::ResponseDeleteRange(delete_range(d, header))
        }
        mvcc::ResponseOp::Txn(t) => Response::ResponseTxn(txn(t, ResponseHeader::default())),
    };
    pb::ResponseOp { response: Some(response) }
}

fn request_op(op: mvcc::RequestOp) -> pb::RequestOp {
    let request = match op {
        mvcc::RequestOp::Range(r) => Request::RequestRange(range_request(r)),
        mvcc::RequestOp::Put(p) => Request::RequestPut(put_request(p)),
        mvcc::RequestOp::DeleteRange(d) => Request::RequestDeleteRange(delete_range_request(d)),
        mvcc::RequestOp::Txn(t) => Request::RequestTxn(txn_request(t)),
    };
    pb::RequestOp { request: Some(request) }
}

fn compare(c: mvcc::Compare) -> pb::Compare {
    let result = match c.result {
        CompareResult::Equal => PbCompareResult::Equal,
        CompareResult::Greater => PbCompareResult::Greater,
        CompareResult::Less => PbCompareResult::Less,
        CompareResult::NotEqual => PbCompareResult::NotEqual,
    };
    let (target, union) = match c.target {
        CompareTarget::Version(v) => (PbCompareTarget::Version, TargetUnion::Version(v)),
        CompareTarget::Create(r) => (PbCompareTarget::Create, TargetUnion::CreateRevision(r.0)),
        CompareTarget::Mod(r) => (PbCompareTarget::Mod, TargetUnion::ModRevision(r.0)),
        CompareTarget::Value(v) => (PbCompareTarget::Value, TargetUnion::Value(Vec::from(v))),
        CompareTarget::Lease(l) => (PbCompareTarget::Lease, TargetUnion::Lease(l.0)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: Vec::from(c.key),
        range_end: Vec::from(c.range_end),
        target_union: Some(union),
    }
}
