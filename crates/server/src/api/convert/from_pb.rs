//! Client requests (prost) to store requests, with etcd's API-layer checks.
//!
//! Each function checks in etcd's order: the request's own fields first
//! (what etcd's `v3rpc/key.go` checks), then its size (what etcd checks
//! before proposing). For a request with several faults, which one is
//! reported can differ from etcd in one case: a transaction whose operation
//! has no request set is refused as `key not found` before the key checks
//! of earlier operations run.

use bytes::Bytes;
use prost::Message;
use ringkv_api::etcdserverpb::{
    self as pb, compare::CompareResult as PbCompareResult,
    compare::CompareTarget as PbCompareTarget, compare::TargetUnion,
    range_request::SortOrder as PbSortOrder, range_request::SortTarget as PbSortTarget,
    request_op::Request,
};
use ringkv_api::mvccpb;
use ringkv_storage::mvcc::{
    self, CompareResult, CompareTarget, LEASE_TTL_MAX_SECONDS, LeaseId, Revision, SortOrder,
    SortTarget,
};

use crate::api::limits::RequestLimits;
use crate::api::status::EtcdError;

/// A `Range` request.
///
/// # Errors
/// [`EtcdError::EmptyKey`]; [`EtcdError::InvalidEnum`] for a sort order or
/// target etcd does not define.
pub fn range_request(req: pb::RangeRequest) -> Result<mvcc::RangeRequest, EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    range_fields(req)
}

/// A `Put` request.
///
/// # Errors
/// [`EtcdError::EmptyKey`], [`EtcdError::ValueProvided`] (a value with
/// `ignore_value`), [`EtcdError::LeaseProvided`] (a lease with
/// `ignore_lease`), [`EtcdError::RequestTooLarge`].
pub fn put_request(
    req: pb::PutRequest,
    limits: &RequestLimits,
) -> Result<mvcc::PutRequest, EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    limits.check_proposal_size(&req)?;
    Ok(put_fields(req))
}

/// A `DeleteRange` request.
///
/// # Errors
/// [`EtcdError::EmptyKey`], [`EtcdError::RequestTooLarge`].
pub fn delete_range_request(
    req: pb::DeleteRangeRequest,
    limits: &RequestLimits,
) -> Result<mvcc::DeleteRangeRequest, EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    limits.check_proposal_size(&req)?;
    Ok(delete_range_fields(req))
}

/// A `Txn` request, checked as etcd checks it before proposing: at most
/// `txn_ops_max` compares and operations per branch (a nested transaction
/// gets what its parent leaves), every operation set, no empty key, the put
/// flags, no key written twice ([`mvcc::TxnRequest::validate`], the same
/// check the store repeats on apply), and, unless every operation is a
/// read, the size.
///
/// # Errors
/// [`EtcdError::TooManyOps`], [`EtcdError::KeyNotFound`] (an operation with
/// no request), [`EtcdError::EmptyKey`], [`EtcdError::ValueProvided`],
/// [`EtcdError::LeaseProvided`], [`EtcdError::DuplicateKey`],
/// [`EtcdError::InvalidEnum`], [`EtcdError::RequestTooLarge`].
pub fn txn_request(
    req: pb::TxnRequest,
    limits: &RequestLimits,
) -> Result<mvcc::TxnRequest, EtcdError> {
    let encoded_bytes = req.encoded_len();
    let txn = txn_fields(req, limits.txn_ops_max)?;
    txn.validate(limits.txn_ops_max)?;
    if !txn_is_read_only(&txn) {
        limits.check_proposal_bytes(encoded_bytes)?;
    }
    Ok(txn)
}

/// Whether every operation of both branches, nested transactions included,
/// is a read: etcd serves such a transaction like a range, without a
/// proposal (and without the size check).
pub fn txn_is_read_only(txn: &mvcc::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match op {
        mvcc::RequestOp::Range(_) => true,
        mvcc::RequestOp::Txn(nested) => txn_is_read_only(nested),
        mvcc::RequestOp::Put(_) | mvcc::RequestOp::DeleteRange(_) => false,
    })
}

/// A `Compact` request. The revision is checked by the store (a compacted
/// or future revision is refused there, as in etcd).
pub fn compaction_request(req: pb::CompactionRequest) -> mvcc::CompactionRequest {
    mvcc::CompactionRequest { revision: Revision(req.revision), physical: req.physical }
}

/// A `LeaseGrant` request. Lease id 0 asks the server to choose:
/// `new_id` is called for one then (it must not return
/// [`LeaseId::NONE`]; etcd chooses positive ids). A TTL below
/// [`RequestLimits::lease_ttl_min_seconds`] (zero and negative included)
/// is raised to it, as etcd's lessor does; the granted TTL is the raised
/// one.
///
/// # Errors
/// [`EtcdError::LeaseTtlTooLarge`] above [`LEASE_TTL_MAX_SECONDS`],
/// [`EtcdError::RequestTooLarge`].
///
/// # Panics
/// If `new_id` returns [`LeaseId::NONE`].
pub fn lease_grant_request(
    req: pb::LeaseGrantRequest,
    limits: &RequestLimits,
    new_id: impl FnOnce() -> LeaseId,
) -> Result<mvcc::LeaseGrantRequest, EtcdError> {
    if req.ttl > LEASE_TTL_MAX_SECONDS {
        return Err(EtcdError::LeaseTtlTooLarge);
    }
    limits.check_proposal_size(&req)?;
    let id = if req.id == LeaseId::NONE.0 {
        let id = new_id();
        assert!(id.is_some(), "the lease id generator returned 0, which means \"no lease\"");
        id
    } else {
        LeaseId(req.id)
    };
    Ok(mvcc::LeaseGrantRequest { id, ttl: req.ttl.max(limits.lease_ttl_min_seconds) })
}

/// A `LeaseRevoke` request.
///
/// # Errors
/// [`EtcdError::LeaseNotFound`] for lease id 0, which never names a lease
/// (etcd answers the same, after a consensus round).
pub fn lease_revoke_request(
    req: pb::LeaseRevokeRequest,
) -> Result<mvcc::LeaseRevokeRequest, EtcdError> {
    if req.id == LeaseId::NONE.0 {
        return Err(EtcdError::LeaseNotFound);
    }
    Ok(mvcc::LeaseRevokeRequest { id: LeaseId(req.id) })
}

/// Another member's answer to a `Range` (one shard's part of a range
/// over several), as the store's: the header's revision is the answer's.
pub fn range_response(resp: pb::RangeResponse) -> mvcc::RangeResponse {
    mvcc::RangeResponse {
        revision: Revision(resp.header.map_or(0, |h| h.revision)),
        kvs: resp.kvs.into_iter().map(key_value).collect(),
        more: resp.more,
        count: resp.count,
    }
}

/// Another member's answer to a `DeleteRange` (one shard's part), as the
/// store's.
pub fn delete_range_response(resp: pb::DeleteRangeResponse) -> mvcc::DeleteRangeResponse {
    mvcc::DeleteRangeResponse {
        revision: Revision(resp.header.map_or(0, |h| h.revision)),
        deleted: resp.deleted,
        prev_kvs: resp.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// A key-value pair as the wire carries it (e.g. from another member).
pub fn key_value(kv: mvccpb::KeyValue) -> mvcc::KeyValue {
    mvcc::KeyValue {
        key: Bytes::from(kv.key),
        create_revision: Revision(kv.create_revision),
        mod_revision: Revision(kv.mod_revision),
        version: kv.version,
        value: Bytes::from(kv.value),
        lease: LeaseId(kv.lease),
    }
}

fn range_fields(req: pb::RangeRequest) -> Result<mvcc::RangeRequest, EtcdError> {
    let sort_order = match PbSortOrder::try_from(req.sort_order) {
        Ok(PbSortOrder::None) => SortOrder::None,
        Ok(PbSortOrder::Ascend) => SortOrder::Ascend,
        Ok(PbSortOrder::Descend) => SortOrder::Descend,
        Err(_) => {
            return Err(invalid_enum(
                "RangeRequest.sort_order",
                req.sort_order,
                PbSortOrder::Descend as i32,
            ));
        }
    };
    let sort_target = match PbSortTarget::try_from(req.sort_target) {
        Ok(PbSortTarget::Key) => SortTarget::Key,
        Ok(PbSortTarget::Version) => SortTarget::Version,
        Ok(PbSortTarget::Create) => SortTarget::Create,
        Ok(PbSortTarget::Mod) => SortTarget::Mod,
        Ok(PbSortTarget::Value) => SortTarget::Value,
        Err(_) => {
            return Err(invalid_enum(
                "RangeRequest.sort_target",
                req.sort_target,
                PbSortTarget::Value as i32,
            ));
        }
    };
    Ok(mvcc::RangeRequest {
        key: Bytes::from(req.key),
        range_end: Bytes::from(req.range_end),
        limit: req.limit,
        revision: Revision(req.revision),
        sort_order,
        sort_target,
        serializable: req.serializable,
        keys_only: req.keys_only,
        count_only: req.count_only,
        min_mod_revision: Revision(req.min_mod_revision),
        max_mod_revision: Revision(req.max_mod_revision),
        min_create_revision: Revision(req.min_create_revision),
        max_create_revision: Revision(req.max_create_revision),
    })
}

fn put_fields(req: pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: Bytes::from(req.key),
        value: Bytes::from(req.value),
        lease: LeaseId(req.lease),
        prev_kv: req.prev_kv,
        ignore_value: req.ignore_value,
        ignore_lease: req.ignore_lease,
    }
}

fn delete_range_fields(req: pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: Bytes::from(req.key),
        range_end: Bytes::from(req.range_end),
        prev_kv: req.prev_kv,
    }
}

/// Converts one transaction level. The operation count is checked before
/// anything at the level is converted (etcd's order), which also bounds
/// the recursion: each nesting level uses up at least one of `ops_max`.
fn txn_fields(req: pb::TxnRequest, ops_max: usize) -> Result<mvcc::TxnRequest, EtcdError> {
    let count = req.compare.len().max(req.success.len()).max(req.failure.len());
    if count > ops_max {
        return Err(EtcdError::TooManyOps);
    }
    let nested_ops_max = ops_max - count;
    let ops = |ops: Vec<pb::RequestOp>| -> Result<Vec<mvcc::RequestOp>, EtcdError> {
        ops.into_iter().map(|op| request_op(op, nested_ops_max)).collect()
    };
    Ok(mvcc::TxnRequest {
        compare: req.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: ops(req.success)?,
        failure: ops(req.failure)?,
    })
}

fn request_op(op: pb::RequestOp, ops_max: usize) -> Result<mvcc::RequestOp, EtcdError> {
    Ok(match op.request {
        // etcd's answer to an operation with nothing in it.
        None => return Err(EtcdError::KeyNotFound),
        Some(Request::RequestRange(r)) => mvcc::RequestOp::Range(range_fields(r)?),
        Some(Request::RequestPut(p)) => mvcc::RequestOp::Put(put_fields(p)),
        Some(Request::RequestDeleteRange(d)) => {
            mvcc::RequestOp::DeleteRange(delete_range_fields(d))
        }
        Some(Request::RequestTxn(t)) => mvcc::RequestOp::Txn(txn_fields(t, ops_max)?),
    })
}

fn compare(c: pb::Compare) -> Result<mvcc::Compare, EtcdError> {
    let result = match PbCompareResult::try_from(c.result) {
        Ok(PbCompareResult::Equal) => CompareResult::Equal,
        Ok(PbCompareResult::Greater) => CompareResult::Greater,
        Ok(PbCompareResult::Less) => CompareResult::Less,
        Ok(PbCompareResult::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(invalid_enum("Compare.result", c.result, PbCompareResult::NotEqual as i32));
        }
    };
    // The union's value counts only if it is the field the target names;
    // otherwise the target's default, as etcd's getters return.
    let union = c.target_union;
    let target = match PbCompareTarget::try_from(c.target) {
        Ok(PbCompareTarget::Version) => CompareTarget::Version(match union {
            Some(TargetUnion::Version(v)) => v,
            _ => 0,
        }),
        Ok(PbCompareTarget::Create) => CompareTarget::Create(Revision(match union {
            Some(TargetUnion::CreateRevision(r)) => r,
            _ => 0,
        })),
        Ok(PbCompareTarget::Mod) => CompareTarget::Mod(Revision(match union {
            Some(TargetUnion::ModRevision(r)) => r,
            _ => 0,
        })),
        Ok(PbCompareTarget::Value) => CompareTarget::Value(match union {
            Some(TargetUnion::Value(v)) => Bytes::from(v),
            _ => Bytes::new(),
        }),
        Ok(PbCompareTarget::Lease) => CompareTarget::Lease(LeaseId(match union {
            Some(TargetUnion::Lease(l)) => l,
            _ => 0,
        })),
        Err(_) => {
            return Err(invalid_enum("Compare.target", c.target, PbCompareTarget::Lease as i32));
        }
    };
    Ok(mvcc::Compare {
        result,
        target,
        key: Bytes::from(c.key),
        range_end: Bytes::from(c.range_end),
    })
}

fn invalid_enum(field: &'static str, value: i32, max: i32) -> EtcdError {
    EtcdError::InvalidEnum { field, value, max }
}
