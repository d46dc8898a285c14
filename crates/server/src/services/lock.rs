//! `v3lockpb.Lock`: a distributed mutex held by a lease, run server side
//! as etcd's v3lock service runs it (etcd's `concurrency.Mutex` recipe).
//!
//! `Lock(name, lease)` puts `<name>/<lease in hex>` with the lease (or finds
//! it, if this lease asked before), then waits until every key under
//! `<name>/` created before it is deleted (released, or its lease expired).
//! The caller holds the lock as long as its key exists; `Unlock(key)`
//! deletes it. A caller that goes away while waiting gives up its place.

use bytes::Bytes;
use ringkv_api::v3lockpb::{self as pb, lock_client::LockClient, lock_server::Lock};
use ringkv_storage::mvcc::{
    Compare, CompareResult, CompareTarget, LeaseId, PutRequest, RangeRequest, RequestOp,
    ResponseOp, Revision, TxnRequest,
};
use tonic::{Response, Status};

use super::Context;
use super::concurrency::{
    GiveUpOnDrop, delete, first_created, forward_whole, lease_key, name_prefix, prefix_end, range,
    remote_home, session_lease, txn, wait_deletes,
};
use crate::api::EtcdError;

/// The message etcd's mutex fails with when the caller's key vanished
/// (its lease expired) while it waited (`concurrency.ErrSessionExpired`,
/// answered with code `Unknown`, as etcd's service does).
pub const SESSION_EXPIRED: &str = "session expired";

/// The Lock service.
#[derive(Clone, Debug)]
pub struct LockService {
    ctx: Context,
}

impl LockService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> LockService {
        LockService { ctx }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: tonic::Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = request.into_inner();
        let prefix = name_prefix(&req.name);
        if let Some(home) = remote_home(&ctx, &prefix, &prefix_end(&prefix))? {
            let call = |ch, call| async move { LockClient::new(ch).lock(call).await };
            return forward_whole(&ctx, home, true, req, call).await;
        }
        let lease = session_lease(&ctx, req.lease).await?;
        let key = lease_key(&prefix, lease);
        let (_, created) = txn(&ctx, create_or_get(&key, lease, &prefix)).await?;
        let my_rev = if created.succeeded {
            created.revision
        } else {
            match created.responses.first() {
                Some(ResponseOp::Range(r)) => {
                    r.kvs.first().map_or(Revision::ZERO, |kv| kv.create_revision)
                }
                _ => Revision::ZERO,
            }
        };
        if my_rev == Revision::ZERO {
            // The key vanished between the compare and the read: its lease
            // expired just now.
            return Err(EtcdError::Unknown { message: SESSION_EXPIRED.to_owned() }.into());
        }
        let owner = match created.responses.get(1) {
            Some(ResponseOp::Range(r)) => r.kvs.first().map(|kv| kv.create_revision),
            _ => None,
        };
        let guard = GiveUpOnDrop::new(&ctx, key.clone(), my_rev);
        if owner != Some(my_rev) {
            wait_deletes(&ctx, &prefix, Revision(my_rev.0 - 1)).await?;
        }
        // The key must still be ours: the lease may have expired meanwhile.
        let own = RangeRequest { key: key.clone(), ..RangeRequest::default() };
        let (info, found) = range(&ctx, own).await?;
        if found.kvs.first().is_none_or(|kv| kv.create_revision != my_rev) {
            return Err(EtcdError::Unknown { message: SESSION_EXPIRED.to_owned() }.into());
        }
        guard.disarm();
        Ok(Response::new(pb::LockResponse {
            header: Some(info.header(found.revision)),
            key: key.to_vec(),
        }))
    }

    async fn unlock(
        &self,
        request: tonic::Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = request.into_inner();
        let key = Bytes::from(req.key.clone());
        if key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        if let Some(home) = remote_home(&ctx, &key, &[])? {
            let call = |ch, call| async move { LockClient::new(ch).unlock(call).await };
            return forward_whole(&ctx, home, true, req, call).await;
        }
        let (info, deleted) = delete(&ctx, key).await?;
        Ok(Response::new(pb::UnlockResponse { header: Some(info.header(deleted.revision)) }))
    }
}

/// `if create_revision(key) == 0 then put(key, lease), first(prefix) else
/// get(key), first(prefix)`: one round trip that takes a place in the queue
/// (or finds the one this lease already has) and reads who is first.
fn create_or_get(key: &Bytes, lease: LeaseId, prefix: &Bytes) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create(Revision::ZERO),
            key: key.clone(),
            range_end: Bytes::new(),
        }],
        success: vec![
            RequestOp::Put(PutRequest { key: key.clone(), lease, ..PutRequest::default() }),
            RequestOp::Range(first_created(prefix)),
        ],
        failure: vec![
            RequestOp::Range(RangeRequest { key: key.clone(), ..RangeRequest::default() }),
            RequestOp::Range(first_created(prefix)),
        ],
    }
}
