//! The `etcdserverpb.Watch` gRPC service.
//!
//! Each client stream gets a task that reads the client's requests into a
//! [`WatchStream`], hands its responses to tonic through a small bounded
//! queue ([`STREAM_SEND_QUEUE_RESPONSES`]), ticks progress notifications,
//! and checks the leader for `hasleader` streams. A client that stops
//! reading stalls only its own task; the hub keeps publishing and moves the
//! stream's watchers to history once their buffers fill.
//!
//! The stream ends when the client goes away, or with `Unavailable
//! "etcdserver: no leader"` when a `hasleader` stream's member has found no
//! leader at [`super::LEADERLESS_CHECKS_MAX`] consecutive checks (etcd
//! checks once per election timeout, and waits out elections the same
//! way). A client that half-closes its side keeps receiving, as with etcd.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use rand::RngExt;
use ringkv_api::etcdserverpb::watch_server::{Watch, WatchServer};
use ringkv_api::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_consensus::ShardId;
use ringkv_node::Request as NodeRequest;
use ringkv_node::auth::{AccessCheck, AuthQuery};

use super::relay::{RELAY_SHARD_METADATA, WatchRelay};
use super::{ClientStream, STREAM_SEND_QUEUE_RESPONSES, WatchHub, WatchHubs};
use crate::api::EtcdError;
use crate::services::Context;

/// The metadata key clientv3's `WithRequireLeader` sets (etcd's
/// `rpctypes.MetadataRequireLeaderKey`).
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// The value that key carries (etcd's `rpctypes.MetadataHasLeader`).
pub const REQUIRE_LEADER_VALUE: &str = "true";

/// The message of the `Unavailable` status a stream ends with when the
/// member shuts down: clients (and relaying members) resume elsewhere.
const SHUTTING_DOWN: &str = "ringkv: this member is shutting down; watch through another member";

/// The etcd `Watch` service over the hubs of every data shard.
#[derive(Clone, Debug)]
pub struct WatchService {
    hubs: Arc<WatchHubs>,
    /// Checks a client's right to read what it watches, when auth is on.
    auth: Option<Context>,
    /// Serves the shards this member does not host; `None`: it hosts all.
    relay: Option<Arc<WatchRelay>>,
    /// Ends every stream when the member shuts down (its clients, and
    /// members relaying from it, then resume elsewhere).
    shutdown: CancellationToken,
}

impl WatchService {
    /// The service for the one shard of `hub`, with no permission checks.
    pub fn new(hub: Arc<WatchHub>) -> WatchService {
        WatchService {
            hubs: WatchHubs::single(hub),
            auth: None,
            relay: None,
            shutdown: CancellationToken::new(),
        }
    }

    /// The service for `hubs`, with no permission checks (tests).
    pub fn from_hubs(hubs: Arc<WatchHubs>) -> WatchService {
        WatchService { hubs, auth: None, relay: None, shutdown: CancellationToken::new() }
    }

    /// The service for `hubs`, checking with the node through `ctx` that a
    /// client may read what it asks to watch (etcd's `isWatchPermitted`).
    pub fn with_auth(hubs: Arc<WatchHubs>, ctx: Context) -> WatchService {
        WatchService { hubs, auth: Some(ctx), relay: None, shutdown: CancellationToken::new() }
    }

    /// This service, ending its streams with `Unavailable` once `shutdown`
    /// is canceled.
    #[must_use]
    pub fn with_shutdown(self, shutdown: CancellationToken) -> WatchService {
        WatchService { shutdown, ..self }
    }

    /// This service, relaying the shards `relay` locates elsewhere.
    #[must_use]
    pub fn with_relay(self, relay: Arc<WatchRelay>) -> WatchService {
        WatchService { relay: Some(relay), ..self }
    }

    /// The tonic service to mount (message size limits are the caller's).
    pub fn into_server(self) -> WatchServer<WatchService> {
        WatchServer::new(self)
    }
}

/// Whether the client asked for the stream to fail without a leader.
fn requires_leader(metadata: &MetadataMap) -> bool {
    metadata
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|v| v.as_bytes() == REQUIRE_LEADER_VALUE.as_bytes())
}

/// The shard a relaying member's upstream stream names, if it is one.
fn relayed_shard(metadata: &MetadataMap) -> Result<Option<ShardId>, Status> {
    let Some(value) = metadata.get(RELAY_SHARD_METADATA) else { return Ok(None) };
    value.to_str().ok().and_then(|v| v.parse().ok()).map(|s| Some(ShardId(s))).ok_or_else(|| {
        Status::invalid_argument(format!("ringkv: {RELAY_SHARD_METADATA} is not a shard number"))
    })
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        let require_leader = requires_leader(request.metadata());
        if require_leader && !self.hubs.first().context().has_leader() {
            return Err(EtcdError::NoLeader.to_status());
        }
        let auth = self.auth.as_ref().map(|ctx| ctx.for_request(&request));
        let stream = match relayed_shard(request.metadata())? {
            Some(shard) if self.relay.as_ref().is_some_and(|r| !r.hosts(shard)) => {
                return Err(Status::unavailable(format!(
                    "ringkv: this member does not host shard {}; relay it from one that does",
                    shard.0
                )));
            }
            // Another member relays this shard: its own hub serves it.
            Some(shard) => self.hubs.open_shard_stream(shard).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "ringkv: {RELAY_SHARD_METADATA} names shard {}, not a data shard of this                      cluster",
                    shard.0
                ))
            })?,
            None => self
                .hubs
                .open_relayed_stream(self.relay.as_ref().map(|r| r.for_client(request.metadata()))),
        };
        let inbound = request.into_inner();
        let (tx, mut rx) = mpsc::channel(STREAM_SEND_QUEUE_RESPONSES);
        let failure = Arc::new(Mutex::new(None::<Status>));
        let task = Stream {
            hub: Arc::clone(self.hubs.first()),
            tx,
            failure: Arc::clone(&failure),
            auth,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(task.serve(stream, inbound, require_leader));
        let mut ended = false;
        let responses = futures_util::stream::poll_fn(move |cx| {
            if ended {
                return Poll::Ready(None);
            }
            // A failure overtakes queued responses, as etcd's canceled
            // stream context drops them; the task then drops the sender,
            // which wakes this poll.
            if let Some(status) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
                ended = true;
                return Poll::Ready(Some(Err(status)));
            }
            rx.poll_recv(cx).map(|r| r.map(Ok))
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// The progress interval of one stream: the configured one plus up to a
/// tenth of jitter, so that streams opened together tick apart (etcd).
fn jittered(interval: Duration) -> Duration {
    let tenth = u64::try_from(interval.as_nanos() / 10).unwrap_or(u64::MAX);
    interval + Duration::from_nanos(rand::rng().random_range(0..=tenth))
}

/// One client stream's task.
struct Stream {
    /// The first shard's hub: the configuration and the leader check.
    hub: Arc<WatchHub>,
    tx: mpsc::Sender<WatchResponse>,
    /// The status the stream ends with, if it fails.
    failure: Arc<Mutex<Option<Status>>>,
    /// The node, acting for this stream's client, to check its rights.
    auth: Option<Context>,
    /// Canceled when the member shuts down.
    shutdown: CancellationToken,
}

impl Stream {
    /// Runs until the client leaves or, for a `hasleader` stream, the
    /// member has found no leader at enough consecutive checks.
    async fn serve(
        self,
        mut stream: ClientStream,
        mut inbound: Streaming<WatchRequest>,
        require_leader: bool,
    ) {
        let config = self.hub.config();
        let period = jittered(config.progress_notify_interval);
        let mut progress = tokio::time::interval_at(Instant::now() + period, period);
        progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let check = config.leader_check_interval;
        let mut leader = tokio::time::interval_at(Instant::now() + check, check);
        leader.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Consecutive checks that found no leader.
        let mut leaderless = 0u32;
        let mut inbound_open = true;
        loop {
            tokio::select! {
                biased;
                () = self.tx.closed() => break,
                () = self.shutdown.cancelled() => {
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Status::unavailable(SHUTTING_DOWN));
                    break;
                }
                _ = leader.tick(), if require_leader => {
                    if self.hub.context().has_leader() {
                        leaderless = 0;
                    } else {
                        leaderless += 1;
                        if leaderless >= config.leaderless_checks_max {
                            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(EtcdError::NoLeader.to_status());
                            break;
                        }
                    }
                }
                message = inbound.message(), if inbound_open => match message {
                    Ok(Some(request)) => match self.refusal(&request).await {
                        Some(reason) => stream.refuse_create(reason),
                        None => stream.handle(request),
                    },
                    // Half-closed: keep sending, as etcd does.
                    Ok(None) => inbound_open = false,
                    Err(status) => {
                        tracing::debug!(%status, "watch stream receive failed; closing it");
                        break;
                    }
                },
                _ = progress.tick() => stream.progress_tick(),
                sent = send_next(&mut stream, &self.tx) => if !sent { break },
            }
        }
    }
}

impl Stream {
    /// Why a create request must be refused for its client's rights, when
    /// auth is enabled: etcd answers it created and canceled, with the
    /// error as the cancel reason, and the stream goes on.
    async fn refusal(&self, request: &WatchRequest) -> Option<String> {
        let ctx = self.auth.as_ref()?;
        let Some(RequestUnion::CreateRequest(create)) = &request.request_union else {
            return None;
        };
        if !ctx.state().auth_enabled() {
            return None;
        }
        // The key as the watch takes it: empty is "\0", every key.
        let key = if create.key.is_empty() { vec![0] } else { create.key.clone() };
        let check =
            AccessCheck::Read { key: key.into(), range_end: create.range_end.clone().into() };
        match ctx.call(NodeRequest::AuthQuery(AuthQuery::Check(check))).await {
            Ok(_) => None,
            // etcd writes the whole status, as Go prints it.
            Err(status) => {
                Some(format!("rpc error: code = {:?} desc = {}", status.code(), status.message()))
            }
        }
    }
}

/// Sends the stream's next response once tonic has room for it; false if
/// the client is gone.
async fn send_next(stream: &mut ClientStream, tx: &mpsc::Sender<WatchResponse>) -> bool {
    let Ok(permit) = tx.reserve().await else { return false };
    permit.send(stream.next_response().await);
    true
}
