//! The watch relay: a client stream's part on a shard this member does not
//! host, served by an etcd v3 `Watch` stream to a member that does.
//!
//! # Roles
//!
//! - [`WatchRelay`]: the member-wide settings: where shards are
//!   ([`ShardLocality`]) and how to dial ([`MemberDialer`], shared with
//!   the KV forwarding).
//! - [`RelayStream`]: one client stream's view of it: the client's
//!   credentials, forwarded on every upstream stream.
//! - `RemoteShard`: one client stream's part on one remote shard. A task
//!   owns the upstream stream: it sends the client's creates, cancels and
//!   progress requests on, and hands the upstream's responses back as if
//!   the shard's local stream had made them.
//!
//! # The upstream stream
//!
//! It carries [`RELAY_SHARD_METADATA`] naming the shard: the member serves
//! it from its own hub of that shard alone (never relayed further, never
//! other shards' events), with the client's `token` / `authorization` and
//! `hasleader` metadata, so that the hosting member checks the client's
//! permissions and leader as it would for the client itself.
//!
//! # No event lost or repeated
//!
//! For each watch the task keeps `next`: the first revision of the shard
//! not yet handed to the client. It starts at the requested start revision,
//! or, for a watch from now, at the `created` answer's header revision + 1;
//! every event response moves it past its header revision (every event of
//! the watch up to that revision is in it or before it), and so does every
//! progress response. A `fragment` response is held until its revision's
//! last piece arrives, so the client never sees part of a revision from
//! one upstream and the rest again from another.
//!
//! When the upstream stream fails or ends, the task dials again (the same
//! member first, then the next candidate, with backoff from
//! [`RELAY_BACKOFF_INITIAL`] doubling to [`RELAY_BACKOFF_MAX`]) and
//! re-creates every live watch from its `next`: the new upstream replays
//! history from there, or, if it is behind, skips what it publishes below
//! it. Its `created` answers are swallowed (the client heard the first).
//! If history at `next` was compacted meanwhile, the upstream cancels the
//! watch with `compact_revision`, and the client sees exactly that.
//!
//! ```text
//!   dial ──ok──▶ streaming ──error or end──▶ backoff ──▶ dial (next candidate on failure)
//!    │                                          ▲
//!    └──────────────failure─────────────────────┘
//! ```
//!
//! # Dialing
//!
//! Channels come from the member-wide [`MemberDialer`] the KV forwarding
//! shares (one connection per member; `https://` with this member's
//! client TLS files). A client known by its certificate's common name
//! alone (no token) is therefore seen by the hosting member as this
//! member's certificate's name: the client's own rights were checked
//! here, on create, already.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_api::etcdserverpb::watch_client::WatchClient;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use ringkv_consensus::ShardId;
use ringkv_storage::mvcc::Revision;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::WatchContext;
use super::stream::INVALID_WATCH_ID;
use crate::remote::{
    MEMBER_CONNECT_TIMEOUT, MemberDialer, RelayCandidate, ShardHome, ShardLocality,
    forwarded_metadata,
};

/// The metadata key of an upstream stream: the data shard it watches,
/// served from the receiving member's own hub of that shard only.
pub const RELAY_SHARD_METADATA: &str = "ringkv-relay-shard";

/// Pause before the first redial after a lost or failed upstream.
pub const RELAY_BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Longest pause between redials; the pause doubles from
/// [`RELAY_BACKOFF_INITIAL`] with each consecutive failure up to this.
pub const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Responses a relay task hands to its client stream before it waits for
/// the stream to take them (then it stops reading the upstream, and the
/// hosting member's buffers take the backlog, as for any slow client).
pub const RELAY_RESPONSES_QUEUED: usize = 16;

/// Most fragments of one revision held until its last piece: far more than
/// a revision within the request size limit splits into.
pub const RELAY_FRAGMENTS_HELD_MAX: usize = 1024;

/// The member-wide relay settings.
#[derive(Debug)]
pub struct WatchRelay {
    locality: Arc<dyn ShardLocality>,
    dialer: Arc<MemberDialer>,
}

impl WatchRelay {
    /// Relays shards `locality` calls remote, dialing with `dialer`.
    pub fn new(locality: Arc<dyn ShardLocality>, dialer: Arc<MemberDialer>) -> Arc<WatchRelay> {
        Arc::new(WatchRelay { locality, dialer })
    }

    /// Where `shard`'s events come from.
    pub fn locate(&self, shard: ShardId) -> ShardHome {
        self.locality.locate(shard)
    }

    /// Whether this member may serve another member's relay of `shard`.
    pub fn hosts(&self, shard: ShardId) -> bool {
        self.locality.hosts(shard)
    }

    /// The relay for one client stream, forwarding the client's metadata
    /// of [`crate::remote::FORWARDED_METADATA`] that `metadata` carries.
    pub fn for_client(self: &Arc<Self>, metadata: &MetadataMap) -> RelayStream {
        RelayStream { relay: Arc::clone(self), forward: forwarded_metadata(metadata) }
    }
}

/// The relay as one client stream uses it.
#[derive(Clone, Debug)]
pub struct RelayStream {
    relay: Arc<WatchRelay>,
    forward: MetadataMap,
}

impl RelayStream {
    /// Where `shard`'s events come from.
    pub(super) fn locate(&self, shard: ShardId) -> ShardHome {
        self.relay.locate(shard)
    }

    /// Starts the part of the client stream on remote `shard`.
    pub(super) fn open(
        &self,
        shard: ShardId,
        candidates: Vec<RelayCandidate>,
        context: Arc<dyn WatchContext>,
    ) -> RemoteShard {
        let inbox = Arc::new(Inbox::default());
        let (tx, rx) = mpsc::channel(RELAY_RESPONSES_QUEUED);
        let task = Upstream {
            shard,
            relay: Arc::clone(&self.relay),
            forward: self.forward.clone(),
            context,
            inbox: Arc::clone(&inbox),
            out: tx,
            candidates,
            cursor: 0,
            watches: BTreeMap::new(),
            progress_pending: false,
        };
        let handle = tokio::spawn(task.run());
        RemoteShard { inbox, responses: rx, task: handle }
    }
}

/// What the client stream asked of the part, not yet sent upstream.
#[derive(Debug, Default)]
struct Inbox {
    queue: Mutex<InboxState>,
    wake: Notify,
}

/// Requests in order; a progress request is one flag (asking twice before
/// it is sent is asking once). Bounded: creates by the stream's watcher
/// limit, cancels by its live watches.
#[derive(Debug, Default)]
struct InboxState {
    requests: VecDeque<RequestUnion>,
    progress: bool,
}

impl Inbox {
    fn push(&self, request: RequestUnion) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match request {
            RequestUnion::ProgressRequest(_) => q.progress = true,
            other => q.requests.push_back(other),
        }
        drop(q);
        self.wake.notify_one();
    }

    fn take(&self) -> (Vec<RequestUnion>, bool) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let requests = q.requests.drain(..).collect();
        (requests, std::mem::take(&mut q.progress))
    }
}

/// One client stream's part on a remote shard; dropping it ends the
/// upstream stream (and with it every upstream watcher).
#[derive(Debug)]
pub(super) struct RemoteShard {
    inbox: Arc<Inbox>,
    responses: mpsc::Receiver<WatchResponse>,
    task: JoinHandle<()>,
}

impl RemoteShard {
    /// Creates a watch (the request's `watch_id` is set: the client
    /// stream's id).
    pub(super) fn create(&mut self, req: WatchCreateRequest) {
        debug_assert!(req.watch_id >= 0, "the client stream chooses the id");
        self.inbox.push(RequestUnion::CreateRequest(req));
    }

    /// Cancels a watch; its `canceled` answer follows.
    pub(super) fn cancel(&mut self, watch_id: i64) {
        self.inbox.push(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
    }

    /// Asks the upstream for a stream-wide progress response.
    pub(super) fn request_progress(&mut self) {
        self.inbox.push(RequestUnion::ProgressRequest(WatchProgressRequest {}));
    }

    /// The next response; cancel-safe.
    pub(super) async fn next_response(&mut self) -> WatchResponse {
        match self.responses.recv().await {
            Some(response) => response,
            // The task runs until this part is dropped; only a panic ends
            // it sooner, and the part then has nothing more to say.
            None => std::future::pending().await,
        }
    }
}

impl Drop for RemoteShard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One watch as the relay task keeps it.
#[derive(Debug)]
struct RelayWatch {
    /// The client's create, as first asked.
    create: WatchCreateRequest,
    /// The first revision of the shard not yet handed to the client;
    /// `None` for a watch from now that no upstream has answered yet
    /// (re-created from now: the client has heard nothing of it).
    ///
    /// Invariant: every event of the watch below it was handed on, none at
    /// or above it.
    next: Option<Revision>,
    /// The client heard `created` (re-creates are swallowed).
    announced: bool,
    /// A cancel was sent: its events are dropped, and if the upstream is
    /// lost before it answers, the task answers `canceled` itself.
    canceling: bool,
    /// Fragments of one revision, held until its last piece.
    fragments: Vec<WatchResponse>,
}

impl RelayWatch {
    /// Moves `next` past `revision`: everything up to it was handed on.
    fn covered(&mut self, revision: i64) {
        let past = Revision(revision.saturating_add(1));
        self.next = Some(self.next.map_or(past, |n| n.max(past)));
    }

    /// The create that resumes the watch on a new upstream.
    fn resume(&self, watch_id: i64) -> WatchCreateRequest {
        let start = self.next.map_or(self.create.start_revision, |n| n.0);
        WatchCreateRequest { watch_id, start_revision: start, ..self.create.clone() }
    }
}

/// Why an upstream session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The client stream is gone: the task ends.
    ClientGone,
    /// The upstream failed or ended after it was streaming.
    Lost(String),
    /// The dial or the stream's opening failed.
    DialFailed(String),
}

/// The relay task of one remote shard part.
struct Upstream {
    shard: ShardId,
    relay: Arc<WatchRelay>,
    forward: MetadataMap,
    context: Arc<dyn WatchContext>,
    inbox: Arc<Inbox>,
    out: mpsc::Sender<WatchResponse>,
    candidates: Vec<RelayCandidate>,
    /// Index of the (member, URL) pair to dial next, over the flattened
    /// candidates.
    cursor: usize,
    watches: BTreeMap<i64, RelayWatch>,
    /// A stream-wide progress request was sent and not answered yet
    /// (asked again of the next upstream).
    progress_pending: bool,
}

impl Upstream {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            match self.session().await {
                SessionEnd::ClientGone => return,
                SessionEnd::Lost(why) => {
                    tracing::info!(shard = self.shard.0, %why, "watch relay lost its upstream; resuming");
                    failures = 1;
                }
                SessionEnd::DialFailed(why) => {
                    tracing::debug!(shard = self.shard.0, %why, "watch relay could not dial");
                    self.cursor = self.cursor.wrapping_add(1);
                    failures = failures.saturating_add(1);
                }
            }
            let pause = RELAY_BACKOFF_INITIAL
                .saturating_mul(1 << failures.saturating_sub(1).min(16))
                .min(RELAY_BACKOFF_MAX);
            tokio::select! {
                () = self.out.closed() => return,
                () = tokio::time::sleep(pause) => {}
            }
            if let ShardHome::Remote(fresh) = self.relay.locate(self.shard)
                && !fresh.is_empty()
            {
                self.candidates = fresh;
            }
        }
    }

    /// The (member, URL) pair to dial now.
    fn target(&self) -> Option<String> {
        let urls: Vec<&String> = self.candidates.iter().flat_map(|c| &c.client_urls).collect();
        if urls.is_empty() {
            return None;
        }
        Some(urls[self.cursor % urls.len()].clone())
    }

    /// Dials one candidate and relays until the upstream is lost.
    async fn session(&mut self) -> SessionEnd {
        let Some(url) = self.target() else {
            return SessionEnd::DialFailed("no member to relay from is known".into());
        };
        let channel = match self.relay.dialer.channel(&url).await {
            Ok(channel) => channel,
            Err(e) => return SessionEnd::DialFailed(e.to_string()),
        };
        // Requests of this session, in order: the resumes first.
        let (tx, rx) = mpsc::unbounded_channel::<WatchRequest>();
        let mut pending_creates: VecDeque<i64> = VecDeque::new();
        self.answer_lost_cancels().await;
        for (&id, w) in &mut self.watches {
            // A revision cut short by the loss comes again whole.
            w.fragments.clear();
            pending_creates.push_back(id);
            let _ = tx.send(request(RequestUnion::CreateRequest(w.resume(id))));
        }
        if self.progress_pending {
            let _ = tx.send(request(RequestUnion::ProgressRequest(WatchProgressRequest {})));
        }
        let outbound =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let mut call = tonic::Request::new(outbound);
        *call.metadata_mut() = self.forward.clone();
        let shard = MetadataValue::from(self.shard.0);
        call.metadata_mut().insert(RELAY_SHARD_METADATA, shard);
        let opened = tokio::time::timeout(
            MEMBER_CONNECT_TIMEOUT,
            WatchClient::new(channel).max_decoding_message_size(usize::MAX).watch(call),
        )
        .await;
        let mut inbound = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                self.relay.dialer.evict(&url);
                return SessionEnd::DialFailed(format!("{url}: {status}"));
            }
            Err(_) => {
                self.relay.dialer.evict(&url);
                return SessionEnd::DialFailed(format!("{url}: opening the stream timed out"));
            }
        };
        tracing::debug!(shard = self.shard.0, %url, watches = self.watches.len(), "watch relay streaming");
        loop {
            let inbox = Arc::clone(&self.inbox);
            tokio::select! {
                () = self.out.closed() => return SessionEnd::ClientGone,
                () = inbox.wake.notified() => {
                    let (requests, progress) = self.inbox.take();
                    for r in requests {
                        match &r {
                            RequestUnion::CreateRequest(create) => {
                                let watch = RelayWatch {
                                    create: create.clone(),
                                    next: (create.start_revision > 0)
                                        .then_some(Revision(create.start_revision)),
                                    announced: false,
                                    canceling: false,
                                    fragments: Vec::new(),
                                };
                                self.watches.insert(create.watch_id, watch);
                                pending_creates.push_back(create.watch_id);
                            }
                            RequestUnion::CancelRequest(cancel) => {
                                match self.watches.get_mut(&cancel.watch_id) {
                                    Some(w) => w.canceling = true,
                                    None => continue,
                                }
                            }
                            RequestUnion::ProgressRequest(_) => {}
                        }
                        let _ = tx.send(request(r));
                    }
                    if progress {
                        self.progress_pending = true;
                        let _ = tx.send(request(RequestUnion::ProgressRequest(WatchProgressRequest {})));
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(response)) => {
                        for out in self.translate(response, &mut pending_creates) {
                            if self.out.send(out).await.is_err() {
                                return SessionEnd::ClientGone;
                            }
                        }
                    }
                    Ok(None) => return SessionEnd::Lost(format!("{url} ended the stream")),
                    Err(status) => {
                        // The connection may be what failed: dial afresh.
                        self.relay.dialer.evict(&url);
                        return SessionEnd::Lost(format!("{url}: {status}"));
                    }
                },
            }
        }
    }

    /// Watches whose cancel was sent to an upstream now lost: that
    /// upstream's watcher is gone with it, so the cancel is done; answered
    /// here, as the upstream would have.
    async fn answer_lost_cancels(&mut self) {
        let canceled: Vec<i64> =
            self.watches.iter().filter(|(_, w)| w.canceling).map(|(&id, _)| id).collect();
        for id in canceled {
            self.watches.remove(&id);
            let response = WatchResponse {
                header: Some(self.context.header(Revision::ZERO)),
                watch_id: id,
                canceled: true,
                ..WatchResponse::default()
            };
            // A gone client is noticed by the caller's next select.
            let _ = self.out.send(response).await;
        }
    }

    /// What the client stream hears of one upstream response.
    fn translate(
        &mut self,
        mut response: WatchResponse,
        pending_creates: &mut VecDeque<i64>,
    ) -> Vec<WatchResponse> {
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        // Our header, with the shard's revision.
        response.header = Some(self.context.header(Revision(revision)));
        if response.created {
            // Creates are answered in the order they were sent: a refusal
            // (id -1) is the oldest pending create's.
            let Some(id) = pending_creates.pop_front() else {
                tracing::warn!(
                    shard = self.shard.0,
                    "watch relay: unexpected created answer upstream"
                );
                return Vec::new();
            };
            if response.canceled {
                let Some(w) = self.watches.remove(&id) else { return Vec::new() };
                response.watch_id = id;
                // Heard before: now only its cancel.
                response.created = !w.announced;
                return vec![response];
            }
            debug_assert_eq!(response.watch_id, id, "upstream keeps the ids it is given");
            let Some(w) = self.watches.get_mut(&id) else { return Vec::new() };
            if w.next.is_none() {
                w.covered(revision);
            }
            if std::mem::replace(&mut w.announced, true) {
                return Vec::new();
            }
            return vec![response];
        }
        if response.canceled {
            return match self.watches.remove(&response.watch_id) {
                Some(_) => vec![response],
                None => Vec::new(),
            };
        }
        if response.watch_id == INVALID_WATCH_ID {
            // Stream-wide progress: every watcher upstream is synced up to
            // it, every create sent before the request was answered.
            self.progress_pending = false;
            for w in self.watches.values_mut().filter(|w| w.announced && w.next.is_some()) {
                w.covered(revision);
            }
            return vec![response];
        }
        let Some(w) = self.watches.get_mut(&response.watch_id) else { return Vec::new() };
        if w.canceling {
            return Vec::new();
        }
        if response.fragment {
            if w.fragments.len() >= RELAY_FRAGMENTS_HELD_MAX {
                // Cannot happen within the request size limits; dropping
                // the piece would lose events, so the watch ends instead.
                tracing::warn!(
                    shard = self.shard.0,
                    watch_id = response.watch_id,
                    "watch relay: too many fragments; canceling"
                );
                w.canceling = true;
                w.fragments.clear();
                return Vec::new();
            }
            w.fragments.push(response);
            return Vec::new();
        }
        let last_event =
            response.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max();
        w.covered(revision.max(last_event.unwrap_or(0)));
        let mut out = std::mem::take(&mut w.fragments);
        out.push(response);
        out
    }
}

/// A request with `union`.
fn request(union: RequestUnion) -> WatchRequest {
    WatchRequest { request_union: Some(union) }
}
