//! `v3electionpb.Election`: leader election held by a lease, run server
//! side as etcd's v3election service runs it (etcd's
//! `concurrency.Election` recipe).
//!
//! A candidate puts `<name>/<lease in hex>` with its value; the leader is
//! the candidate whose key was created first. `Campaign` returns once every
//! older candidate is gone; `Proclaim` and `Resign` act only while the
//! caller's key is still the generation it campaigned with; `Observe`
//! streams each new leader and each value it proclaims.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_api::v3electionpb::{
    self as pb, election_client::ElectionClient, election_server::Election,
};
use ringkv_node::WatchEvents;
use ringkv_storage::mvcc::{
    Compare, CompareResult, CompareTarget, EventKind, KeyValue, LeaseId, PutRequest, RangeRequest,
    RequestOp, ResponseOp, Revision, TxnRequest,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tonic::codegen::BoxStream;
use tonic::{Response, Status};

use super::concurrency::{
    GiveUpOnDrop, delete_if_created_at, first_created, forward_whole, lease_key, name_prefix,
    prefix_end, range, remote_home, session_lease, txn, wait_deletes,
};
use super::lease::receiver_stream;
use super::{Context, until_leader_lost};
use crate::api::EtcdError;
use crate::api::convert::to_pb;

/// The message etcd's election service answers a Proclaim or Resign
/// without a leader key with (code `Unknown`, as etcd's).
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

/// Answers queued on one Observe stream for a slow client before it stops
/// following changes (bounds memory per stream).
pub const OBSERVE_RESPONSES_QUEUED_MAX: usize = 16;

/// The Election service.
#[derive(Clone, Debug)]
pub struct ElectionService {
    ctx: Context,
}

impl ElectionService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> ElectionService {
        ElectionService { ctx }
    }

    /// Streams the election's leader: the current one (once there is one),
    /// then every change of leader and every value it proclaims. Used by
    /// the gRPC method and the gateway.
    /// `ctx` is bound to the observer's request: it reads with its rights.
    pub fn observe_stream(&self, ctx: Context, name: Bytes) -> BoxStream<pb::LeaderResponse> {
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES_QUEUED_MAX);
        tokio::spawn(async move {
            if let Err(status) = observe(&ctx, &name, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Box::pin(receiver_stream(rx))
    }
}

type Events = broadcast::Receiver<Arc<[WatchEvents]>>;

/// What an Observe stream last sent: (key, mod revision).
type Seen = Option<(Bytes, Revision)>;

async fn observe(
    ctx: &Context,
    name: &Bytes,
    tx: &mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) -> Result<(), Status> {
    let prefix = name_prefix(name);
    let mut seen: Seen = None;
    loop {
        let mut events = ctx.node().subscribe_events();
        let (info, first) = range(ctx, first_created(&prefix)).await?;
        let Some(leader) = first.kvs.into_iter().next() else {
            // No leader yet: wait for a candidate, then read again.
            if !wait_for(&mut events, tx, |e| e.kv.key.starts_with(&prefix)).await? {
                return Ok(());
            }
            continue;
        };
        if seen.as_ref() != Some(&(leader.key.clone(), leader.mod_revision)) {
            seen = Some((leader.key.clone(), leader.mod_revision));
            let message = pb::LeaderResponse {
                header: Some(info.header(first.revision)),
                kv: Some(to_pb::key_value(leader.clone())),
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(());
            }
        }
        // Follow the leader's key until it is deleted (then read again).
        if !follow_leader(ctx, &mut events, &leader, &mut seen, tx).await? {
            return Ok(());
        }
    }
}

/// Sends each value the leader proclaims; returns `Ok(true)` when the
/// leader's key is deleted (or the subscription lagged) and the caller
/// should read the election again, `Ok(false)` when the client is gone.
async fn follow_leader(
    ctx: &Context,
    events: &mut Events,
    leader: &KeyValue,
    seen: &mut Seen,
    tx: &mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) -> Result<bool, Status> {
    loop {
        let rounds = tokio::select! {
            received = events.recv() => received,
            () = tx.closed() => return Ok(false),
        };
        let rounds = match rounds {
            Ok(rounds) => rounds,
            Err(RecvError::Lagged(_)) => return Ok(true),
            Err(RecvError::Closed) => return Err(EtcdError::Stopped.into()),
        };
        for round in rounds.iter() {
            for e in &round.events {
                if e.kv.key != leader.key || e.kv.mod_revision <= leader.mod_revision {
                    continue;
                }
                if e.kind == EventKind::Delete {
                    return Ok(true);
                }
                *seen = Some((e.kv.key.clone(), e.kv.mod_revision));
                let message = pb::LeaderResponse {
                    header: Some(ctx.state().header(round.revision)),
                    kv: Some(to_pb::key_value(e.kv.clone())),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return Ok(false);
                }
            }
        }
    }
}

/// Waits for an applied event `matches` accepts; `Ok(true)` when one came
/// (or the subscription lagged: read again), `Ok(false)` when the client
/// is gone.
async fn wait_for(
    events: &mut Events,
    tx: &mpsc::Sender<Result<pb::LeaderResponse, Status>>,
    matches: impl Fn(&ringkv_storage::mvcc::Event) -> bool,
) -> Result<bool, Status> {
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            () = tx.closed() => return Ok(false),
        };
        match received {
            Ok(rounds) => {
                if rounds.iter().flat_map(|r| r.events.iter()).any(&matches) {
                    return Ok(true);
                }
            }
            Err(RecvError::Lagged(_)) => return Ok(true),
            Err(RecvError::Closed) => return Err(EtcdError::Stopped.into()),
        }
    }
}

fn create_compare(key: &Bytes, create_revision: Revision) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Create(create_revision),
        key: key.clone(),
        range_end: Bytes::new(),
    }
}

/// Puts `value` on the leader key if it is still the generation created at
/// `rev`; `Ok(None)` when it is not (no longer the leader).
async fn proclaim(
    ctx: &Context,
    key: &Bytes,
    rev: Revision,
    lease: LeaseId,
    value: Bytes,
) -> Result<Option<crate::api::HeaderInfo>, Status> {
    let put = PutRequest { key: key.clone(), value, lease, ..PutRequest::default() };
    let req = TxnRequest {
        compare: vec![create_compare(key, rev)],
        success: vec![RequestOp::Put(put)],
        failure: vec![],
    };
    let (info, resp) = txn(ctx, req).await?;
    Ok(resp.succeeded.then_some(info))
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: tonic::Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = request.into_inner();
        let prefix = name_prefix(&req.name);
        if let Some(home) = remote_home(&ctx, &prefix, &prefix_end(&prefix))? {
            let call = |ch, call| async move { ElectionClient::new(ch).campaign(call).await };
            return forward_whole(&ctx, home, true, req, call).await;
        }
        let lease = session_lease(&ctx, req.lease).await?;
        let key = lease_key(&prefix, lease);
        let value = Bytes::from(req.value);
        let put =
            PutRequest { key: key.clone(), value: value.clone(), lease, ..PutRequest::default() };
        let create = TxnRequest {
            compare: vec![create_compare(&key, Revision::ZERO)],
            success: vec![RequestOp::Put(put)],
            failure: vec![RequestOp::Range(RangeRequest {
                key: key.clone(),
                ..RangeRequest::default()
            })],
        };
        let (info, created) = txn(&ctx, create).await?;
        let mut leader_rev = created.revision;
        if !created.succeeded {
            // This lease already campaigns: keep its place, update its value.
            let existing = match created.responses.first() {
                Some(ResponseOp::Range(r)) => r.kvs.first().cloned(),
                _ => None,
            };
            let Some(existing) = existing else {
                return Err(EtcdError::Unknown {
                    message: super::lock::SESSION_EXPIRED.to_owned(),
                }
                .into());
            };
            leader_rev = existing.create_revision;
            if existing.value != value
                && proclaim(&ctx, &key, leader_rev, lease, value).await?.is_none()
            {
                return Err(EtcdError::ElectionNotLeader.into());
            }
        }
        let guard = GiveUpOnDrop::new(&ctx, key.clone(), leader_rev);
        wait_deletes(&ctx, &prefix, Revision(leader_rev.0 - 1)).await?;
        guard.disarm();
        Ok(Response::new(pb::CampaignResponse {
            header: Some(info.header(created.revision)),
            leader: Some(pb::LeaderKey {
                name: req.name,
                key: key.to_vec(),
                rev: leader_rev.0,
                lease: lease.0,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: tonic::Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = request.into_inner();
        let Some(leader) = req.leader.clone() else {
            return Err(EtcdError::Unknown { message: MISSING_LEADER_KEY.to_owned() }.into());
        };
        if let Some(home) = remote_home(&ctx, &leader.key, &[])? {
            let call = |ch, call| async move { ElectionClient::new(ch).proclaim(call).await };
            return forward_whole(&ctx, home, true, req, call).await;
        }
        let key = Bytes::from(leader.key);
        let value = Bytes::from(req.value);
        match proclaim(&ctx, &key, Revision(leader.rev), LeaseId(leader.lease), value).await? {
            Some(info) => Ok(Response::new(pb::ProclaimResponse {
                header: Some(info.header(self.ctx.state().current_revision())),
            })),
            None => Err(EtcdError::ElectionNotLeader.into()),
        }
    }

    async fn leader(
        &self,
        request: tonic::Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = request.into_inner();
        let prefix = name_prefix(&req.name);
        if let Some(home) = remote_home(&ctx, &prefix, &prefix_end(&prefix))? {
            let call = |ch, call| async move { ElectionClient::new(ch).leader(call).await };
            return forward_whole(&ctx, home, false, req, call).await;
        }
        let (info, first) = range(&ctx, first_created(&prefix)).await?;
        let Some(kv) = first.kvs.into_iter().next() else {
            return Err(EtcdError::ElectionNoLeader.into());
        };
        Ok(Response::new(pb::LeaderResponse {
            header: Some(info.header(first.revision)),
            kv: Some(to_pb::key_value(kv)),
        }))
    }

    async fn observe(
        &self,
        request: tonic::Request<pb::LeaderRequest>,
    ) -> Result<Response<BoxStream<pb::LeaderResponse>>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let leader_lost = self.ctx.leader_lost(&request);
        let req = request.into_inner();
        let prefix = name_prefix(&req.name);
        if let Some(home) = remote_home(&ctx, &prefix, &prefix_end(&prefix))? {
            // The stream lives as long as the client keeps it: no deadline
            // on the call itself (only on reaching a member, as any call).
            let (shard, candidates, deadline) = home;
            let send = |channel, metadata, _timeout| {
                let mut call = tonic::Request::new(req.clone());
                *call.metadata_mut() = metadata;
                async move { ElectionClient::new(channel).observe(call).await.map(Response::into_inner) }
            };
            let upstream = ctx.forward_with(shard, candidates, false, deadline, send).await?;
            let stream: BoxStream<pb::LeaderResponse> = Box::pin(upstream);
            return Ok(Response::new(until_leader_lost(stream, leader_lost)));
        }
        let name = Bytes::from(req.name);
        Ok(Response::new(until_leader_lost(self.observe_stream(ctx, name), leader_lost)))
    }

    async fn resign(
        &self,
        request: tonic::Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let ctx = self.ctx.for_kv_request(&request)?;
        let req = request.into_inner();
        let Some(leader) = req.leader.clone() else {
            return Err(EtcdError::Unknown { message: MISSING_LEADER_KEY.to_owned() }.into());
        };
        if let Some(home) = remote_home(&ctx, &leader.key, &[])? {
            let call = |ch, call| async move { ElectionClient::new(ch).resign(call).await };
            return forward_whole(&ctx, home, true, req, call).await;
        }
        // Resigning a candidacy that is already gone is not an error (etcd's).
        let (info, resp) =
            delete_if_created_at(&ctx, Bytes::from(leader.key), Revision(leader.rev)).await?;
        Ok(Response::new(pb::ResignResponse { header: Some(info.header(resp.revision)) }))
    }
}
