//! Watches over several shards: one hub per data shard ([`WatchHubs`]) and
//! a client stream that spreads its watchers over them
//! ([`ClientStream`]).
//!
//! With one shard the client stream is the hub's [`WatchStream`] itself:
//! exactly etcd, nothing in between. With several:
//!
//! - A watch whose range lies in one shard is created on that shard's
//!   stream and behaves exactly as with one shard, with that shard's
//!   revisions (start revision, compaction, progress).
//! - A watch whose range spans shards is created on every shard's stream
//!   under the same id. The client sees one `created` and one `canceled`;
//!   events come from each shard in that shard's order, interleaved across
//!   shards, each response carrying its own shard's revision in
//!   `header.revision`. Those revisions are not comparable, so a start
//!   revision other than 0 is refused (created and canceled with a reason,
//!   etcd's form of a refused create), as a read at a revision over
//!   several shards is ([`REVISION_SPANS_SHARDS`]). If one shard cancels
//!   it (history compacted under a watcher that fell behind), its other
//!   shards' parts are canceled too and the client sees that one cancel.
//! - A progress request (or a `progress_notify` tick) is answered by every
//!   shard the stream watches, each with its own revision; with no watcher
//!   at all, once, at the largest published revision.
//!
//! # Remote shards
//!
//! A shard this member does not host ([`crate::remote::ShardLocality`]) is watched
//! through the relay (`relay.rs`): the stream's part on it is an upstream
//! stream to a member that hosts it, under the same watch ids, and its
//! responses mix with the local parts' as above. A remote part is
//! registered only when its upstream answers `created`, so a watch with a
//! remote part is announced `created` once every part has answered, and
//! whatever its parts say before that is held until then (at most
//! [`HELD_RESPONSES_PER_CREATE_MAX`] responses; beyond, the create is
//! refused rather than memory grown). A remote part that refuses the create
//! (the hosting member found the client may not read the range) makes the
//! whole create refused.
//!
//! Watch ids are chosen here for the whole client stream (etcd 3.5's rule:
//! from 0, skipping ids in use) and handed to the shards' streams
//! explicitly, so that one id names one watch across them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::select_all;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use ringkv_consensus::ShardId;
use ringkv_node::WatchEvents;
use ringkv_ring::Keyspace;
use ringkv_storage::mvcc::{MvccStore, Revision};

use super::index::WatchRange;
use super::relay::{RelayStream, RemoteShard};
use super::stream::INVALID_WATCH_ID;
use super::{WatchConfig, WatchContext, WatchError, WatchHub, WatchStats, WatchStream};
use crate::api::EtcdError;
use crate::api::status::REVISION_SPANS_SHARDS;
use crate::remote::ShardHome;

/// etcd's cancel reason for a create whose range holds no key.
const EMPTY_RANGE_REASON: &str = "mvcc: watcher range is empty";

/// etcd's cancel reason for a client-chosen id already in use.
const DUPLICATE_ID_REASON: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// Most responses of a watch held while its remote parts have not all
/// answered `created` (see the module docs): one stream's event buffer.
pub const HELD_RESPONSES_PER_CREATE_MAX: usize = super::EVENTS_BUFFERED_PER_STREAM_MAX;

/// The watch hubs of every data shard this member serves.
#[derive(Debug)]
pub struct WatchHubs {
    keyspace: Keyspace,
    /// Hub of data shard `i + 1` at index `i`. Invariant: one per data
    /// shard of `keyspace`, never empty.
    hubs: Vec<Arc<WatchHub>>,
}

impl WatchHubs {
    /// One hub per data shard of `keyspace` over `store`, each starting at
    /// its shard's current revision.
    ///
    /// # Errors
    /// As [`WatchHub::new`].
    pub fn new(
        store: &Arc<MvccStore>,
        keyspace: Keyspace,
        context: &Arc<dyn WatchContext>,
        config: &WatchConfig,
    ) -> Result<Arc<WatchHubs>, WatchError> {
        let hubs = keyspace
            .shard_ids()
            .map(|s| {
                WatchHub::new(Arc::clone(store), ShardId(s.0), Arc::clone(context), config.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(WatchHubs { keyspace, hubs }))
    }

    /// The hubs of a one-shard keyspace: `hub` alone (tests, and the
    /// services that watch one shard).
    pub fn single(hub: Arc<WatchHub>) -> Arc<WatchHubs> {
        let keyspace = Keyspace::new(1, ringkv_ring::HashKeyRule::WholeKey)
            .expect("one shard is a valid keyspace");
        Arc::new(WatchHubs { keyspace, hubs: vec![hub] })
    }

    /// The keyspace the hubs cover.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The hub of data shard `shard`, if it is one of the keyspace's.
    pub fn hub(&self, shard: ShardId) -> Option<&Arc<WatchHub>> {
        let index = usize::try_from(shard.0.checked_sub(1)?).ok()?;
        self.hubs.get(index)
    }

    /// The first data shard's hub: the only one with one shard.
    pub fn first(&self) -> &Arc<WatchHub> {
        &self.hubs[0]
    }

    /// Every hub, by shard.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<WatchHub>> {
        self.hubs.iter()
    }

    /// The hubs' counts summed over the shards (a watch over `k` shards
    /// counts `k` watchers, one per shard's stream), with the largest
    /// published revision.
    pub fn stats(&self) -> WatchStats {
        self.hubs.iter().map(|h| h.stats()).fold(WatchStats::default(), |sum, s| WatchStats {
            streams: sum.streams + s.streams,
            watchers: sum.watchers + s.watchers,
            synced: sum.synced + s.synced,
            revision: sum.revision.max(s.revision),
        })
    }

    /// Hands the changes of one applied entry to its shard's hub (see
    /// [`WatchHub::publish`]); the metadata group's are nobody's.
    pub fn publish(&self, batch: &WatchEvents) {
        if let Some(hub) = self.hub(batch.shard) {
            hub.publish(batch);
        }
    }

    /// A new, empty client stream, served by the local hubs alone.
    pub fn open_stream(self: &Arc<Self>) -> ClientStream {
        self.open_relayed_stream(None)
    }

    /// A new, empty client stream that watches the shards `relay` calls
    /// remote through it (see the module docs).
    pub fn open_relayed_stream(self: &Arc<Self>, relay: Option<RelayStream>) -> ClientStream {
        let first_local = relay.as_ref().is_none_or(|r| r.locate(ShardId(1)) == ShardHome::Local);
        if self.hubs.len() == 1 && first_local {
            return ClientStream::One(self.first().open_stream());
        }
        ClientStream::Sharded(ShardedStream {
            hubs: Arc::clone(self),
            relay,
            streams: BTreeMap::new(),
            watches: HashMap::new(),
            ready: VecDeque::new(),
            next_auto_id: 0,
        })
    }

    /// The stream of data shard `shard` alone, from its local hub: what a
    /// relaying member's upstream stream is served by.
    pub fn open_shard_stream(&self, shard: ShardId) -> Option<ClientStream> {
        Some(ClientStream::One(self.hub(shard)?.open_stream()))
    }
}

/// One client stream: the hub's own stream with one shard, or one spread
/// over the shards (see the module docs).
#[derive(Debug)]
pub enum ClientStream {
    /// One shard: exactly etcd.
    One(WatchStream),
    /// Several shards.
    Sharded(ShardedStream),
}

impl ClientStream {
    /// Acts on one client request.
    pub fn handle(&mut self, request: WatchRequest) {
        match self {
            ClientStream::One(s) => s.handle(request),
            ClientStream::Sharded(s) => s.handle(request),
        }
    }

    /// Refuses a create request for `reason` (see
    /// [`WatchStream::refuse_create`]).
    pub fn refuse_create(&mut self, reason: String) {
        match self {
            ClientStream::One(s) => s.refuse_create(reason),
            ClientStream::Sharded(s) => s.refuse(reason),
        }
    }

    /// One tick of the progress-notify interval.
    pub fn progress_tick(&mut self) {
        match self {
            ClientStream::One(s) => s.progress_tick(),
            ClientStream::Sharded(s) => s.streams.values_mut().for_each(Part::progress_tick),
        }
    }

    /// The next response for the client; cancel-safe.
    pub async fn next_response(&mut self) -> WatchResponse {
        match self {
            ClientStream::One(s) => s.next_response().await,
            ClientStream::Sharded(s) => s.next_response().await,
        }
    }
}

/// A client stream over several shards.
#[derive(Debug)]
pub struct ShardedStream {
    hubs: Arc<WatchHubs>,
    /// Where remote shards' parts come from; `None`: every shard is local.
    relay: Option<RelayStream>,
    /// The shards' streams, opened when a watch first needs them.
    streams: BTreeMap<ShardId, Part>,
    /// The client's watches, by id.
    watches: HashMap<i64, Watch>,
    /// Responses made here (creates, refusals), sent before anything the
    /// shards' streams say next.
    ready: VecDeque<WatchResponse>,
    /// Next server-chosen id.
    next_auto_id: i64,
}

/// One shard's part of a client stream.
#[derive(Debug)]
enum Part {
    /// From this member's hub.
    Local(WatchStream),
    /// Relayed from a member that hosts the shard.
    Remote(RemoteShard),
}

impl Part {
    fn create(&mut self, req: WatchCreateRequest) {
        match self {
            Part::Local(s) => s.create(req),
            Part::Remote(s) => s.create(req),
        }
    }

    fn cancel(&mut self, watch_id: i64) {
        match self {
            Part::Local(s) => s.cancel(watch_id),
            Part::Remote(s) => s.cancel(watch_id),
        }
    }

    fn request_progress(&mut self) {
        match self {
            Part::Local(s) => s.request_progress(),
            Part::Remote(s) => s.request_progress(),
        }
    }

    fn progress_tick(&mut self) {
        match self {
            Part::Local(s) => s.progress_tick(),
            // The hosting member ticks the watches that asked for progress.
            Part::Remote(_) => {}
        }
    }

    async fn next_response(&mut self) -> WatchResponse {
        match self {
            Part::Local(s) => s.next_response().await,
            Part::Remote(s) => s.next_response().await,
        }
    }
}

/// One client watch and the shards it is on.
#[derive(Debug)]
struct Watch {
    /// Ascending.
    shards: Vec<ShardId>,
    /// Whether it is being canceled, and how.
    cancel: Cancel,
    /// `created` answers of the shards still to swallow (a watch over
    /// several shards is answered `created` here, once).
    creates_to_swallow: usize,
    /// `Some` while the client has not heard `created` and a remote part
    /// has not answered yet: what its parts said meanwhile, in order.
    held: Option<Vec<WatchResponse>>,
}

/// Where a watch is in being canceled.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Cancel {
    /// Not canceled.
    Live,
    /// The client asked: `pending` shards' `canceled` answers are still to
    /// come, and the client hears the last.
    Requested { pending: usize },
    /// A shard canceled its part on its own and the client heard it: the
    /// other `pending` shards' answers are swallowed.
    Quiet { pending: usize },
}

impl ShardedStream {
    fn handle(&mut self, request: WatchRequest) {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create),
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => self.request_progress(),
            None => {}
        }
    }

    /// The largest revision published to any hub.
    fn revision(&self) -> Revision {
        self.hubs.iter().map(|h| h.revision()).max().unwrap_or(Revision::ZERO)
    }

    /// A response made here, with a header at `revision`.
    fn response(&self, revision: Revision) -> WatchResponse {
        WatchResponse {
            header: Some(self.hubs.first().context().header(revision)),
            ..WatchResponse::default()
        }
    }

    /// Refuses a create: `created` and `canceled` with id -1, as etcd.
    fn refuse(&mut self, reason: String) {
        let response = WatchResponse {
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..self.response(self.revision())
        };
        self.ready.push_back(response);
    }

    /// Why a create must be refused, checked here before any shard sees it
    /// (the shards' streams check the same, so none of them refuses a
    /// create this one let through), with etcd's order of checks.
    fn refusal(&self, req: &WatchCreateRequest, range: Option<&WatchRange>) -> Option<String> {
        let max = self.hubs.first().config().watchers_per_stream_max;
        if req.start_revision < 0 {
            Some(EtcdError::Compacted.message().into_owned())
        } else if range.is_none() {
            Some(EMPTY_RANGE_REASON.to_owned())
        } else if req.watch_id != 0 && self.watches.contains_key(&req.watch_id) {
            Some(DUPLICATE_ID_REASON.to_owned())
        } else if req.watch_id < 0 {
            Some(format!(
                "ringkv: watch_id {} is negative; send 0 to let the server choose one",
                req.watch_id
            ))
        } else if self.watches.len() >= max {
            Some(format!(
                "ringkv: this stream already has {max} watchers, the most it may hold; cancel \
                 some or open another stream"
            ))
        } else {
            None
        }
    }

    fn create(&mut self, mut req: WatchCreateRequest) {
        let key = if req.key.is_empty() {
            Bytes::from_static(&[0])
        } else {
            Bytes::from(req.key.clone())
        };
        let range = WatchRange::new(key.clone(), &req.range_end);
        if let Some(reason) = self.refusal(&req, range.as_ref()) {
            return self.refuse(reason);
        }
        let targets = crate::shards::range_targets(self.hubs.keyspace(), &key, &req.range_end);
        let shards = targets.shards();
        if shards.len() > 1 && req.start_revision != 0 {
            return self.refuse(REVISION_SPANS_SHARDS.to_owned());
        }
        let watch_id = if req.watch_id == 0 {
            while self.watches.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        } else {
            req.watch_id
        };
        req.watch_id = watch_id;
        let mut remote = false;
        for &shard in &shards {
            let Some(hub) = self.hubs.hub(shard) else { continue };
            let part = self.streams.entry(shard).or_insert_with(|| {
                match self.relay.as_ref().map(|r| (r, r.locate(shard))) {
                    Some((relay, ShardHome::Remote(candidates))) => {
                        Part::Remote(relay.open(shard, candidates, Arc::clone(hub.context())))
                    }
                    _ => Part::Local(hub.open_stream()),
                }
            });
            remote |= matches!(part, Part::Remote(_));
            part.create(req.clone());
        }
        let (creates_to_swallow, held) = if shards.len() > 1 && remote {
            // A remote part is registered only when it answers: the client
            // hears `created` once every part has.
            (shards.len(), Some(Vec::new()))
        } else if shards.len() > 1 {
            // Every part is registered (synced, from now on) before the
            // client hears it is created, as with one shard.
            let response =
                WatchResponse { watch_id, created: true, ..self.response(self.revision()) };
            self.ready.push_back(response);
            (shards.len(), None)
        } else {
            (0, None)
        };
        let watch = Watch { shards, cancel: Cancel::Live, creates_to_swallow, held };
        self.watches.insert(watch_id, watch);
    }

    fn cancel(&mut self, watch_id: i64) {
        let Some(watch) = self.watches.get_mut(&watch_id) else { return };
        if watch.cancel != Cancel::Live {
            return;
        }
        watch.cancel = Cancel::Requested { pending: watch.shards.len() };
        for shard in &watch.shards {
            if let Some(stream) = self.streams.get_mut(shard) {
                stream.cancel(watch_id);
            }
        }
    }

    fn request_progress(&mut self) {
        let mut asked = false;
        for (shard, stream) in &mut self.streams {
            if self.watches.values().any(|w| w.shards.contains(shard)) {
                stream.request_progress();
                asked = true;
            }
        }
        if !asked {
            // No watcher: answered at once, as on one shard.
            let response =
                WatchResponse { watch_id: INVALID_WATCH_ID, ..self.response(self.revision()) };
            self.ready.push_back(response);
        }
    }

    async fn next_response(&mut self) -> WatchResponse {
        loop {
            if let Some(response) = self.ready.pop_front() {
                return response;
            }
            if self.streams.is_empty() {
                // Nothing to say until a request arrives; the caller's
                // select drops this future then.
                std::future::pending::<()>().await;
            }
            let next = self.streams.iter_mut().map(|(&shard, stream)| {
                Box::pin(async move { (shard, stream.next_response().await) })
            });
            let ((shard, response), _, _) = select_all(next).await;
            if let Some(response) = self.pass(shard, response) {
                // Behind anything `pass` released first.
                self.ready.push_back(response);
            }
        }
    }

    /// What the client sees of `response` from `shard`'s stream: it as it
    /// is, or nothing (a part's `created` or `canceled` the client hears
    /// once, or a response held until the watch is announced).
    fn pass(&mut self, shard: ShardId, mut response: WatchResponse) -> Option<WatchResponse> {
        let id = response.watch_id;
        if id == INVALID_WATCH_ID {
            return Some(response);
        }
        // Events of a watch already gone (queued before its last cancel).
        let watch = self.watches.get_mut(&id)?;
        if response.created && !response.canceled && watch.creates_to_swallow > 0 {
            watch.creates_to_swallow -= 1;
            if watch.creates_to_swallow == 0
                && let Some(held) = watch.held.take()
            {
                // Every part answered: announce it, then what they said.
                let created = WatchResponse { created: true, events: Vec::new(), ..response };
                self.ready.push_back(created);
                self.ready.extend(held);
            }
            return None;
        }
        if response.created && response.canceled {
            // A remote part refused the create: the client hears etcd's
            // refusal (id -1) unless it heard `created` already.
            if watch.held.take().is_some() || watch.creates_to_swallow == 0 {
                response.watch_id = INVALID_WATCH_ID;
            } else {
                response.created = false;
            }
        } else if let Some(held) = watch.held.as_mut() {
            if !response.canceled {
                if held.len() < HELD_RESPONSES_PER_CREATE_MAX {
                    held.push(response);
                    return None;
                }
                // Too much said before every part answered: refuse, and
                // every part goes quietly.
                watch.held = None;
                watch.cancel = Cancel::Quiet { pending: watch.shards.len() };
                for part in &watch.shards {
                    if let Some(stream) = self.streams.get_mut(part) {
                        stream.cancel(id);
                    }
                }
                return Some(WatchResponse {
                    watch_id: INVALID_WATCH_ID,
                    created: true,
                    canceled: true,
                    cancel_reason: format!(
                        "ringkv: watch {id} got over {HELD_RESPONSES_PER_CREATE_MAX} responses                          before its remote shards confirmed it; create it again"
                    ),
                    ..self.response(self.revision())
                });
            } else {
                // A part canceled itself before the watch was announced:
                // the client hears `created`, what came before, the cancel.
                let held = watch.held.take().unwrap_or_default();
                let created =
                    WatchResponse { watch_id: id, created: true, ..self.response(self.revision()) };
                self.ready.push_back(created);
                self.ready.extend(held);
            }
        }
        let watch = self.watches.get_mut(&id)?;
        if !response.canceled {
            return Some(response);
        }
        // Each shard of the watch says `canceled` exactly once: for the
        // cancel asked of it, or for one it made itself.
        let (pending, heard) = match watch.cancel {
            Cancel::Live => {
                // The shard canceled on its own (compacted history under a
                // watcher that fell behind): the client hears this cancel,
                // and the other shards' parts go quietly.
                let others: Vec<ShardId> =
                    watch.shards.iter().copied().filter(|s| *s != shard).collect();
                watch.cancel = Cancel::Quiet { pending: others.len() };
                for other in &others {
                    if let Some(stream) = self.streams.get_mut(other) {
                        stream.cancel(id);
                    }
                }
                (others.len(), Some(response))
            }
            Cancel::Requested { pending } => {
                let pending = pending.saturating_sub(1);
                watch.cancel = Cancel::Requested { pending };
                // The client hears the last part's cancel: nothing of the
                // watch follows it.
                (pending, (pending == 0).then_some(response))
            }
            Cancel::Quiet { pending } => {
                let pending = pending.saturating_sub(1);
                watch.cancel = Cancel::Quiet { pending };
                (pending, None)
            }
        };
        if pending == 0 {
            self.watches.remove(&id);
        }
        heard
    }
}
