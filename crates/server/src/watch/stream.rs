//! One client stream: its watchers, its ordered outbox, and the history
//! replays of its watchers that are behind.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::FutureExt;
use ringkv_api::etcdserverpb::watch_create_request::FilterType;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use ringkv_storage::mvcc::{Event, EventKind, MvccError, ReadError, Revision};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::WatchConfig;
use super::hub::{Subscriber, WatchHub};
use super::index::WatchRange;
use super::response;
use crate::api::EtcdError;

/// etcd's cancel reason for a create whose range holds no key
/// (`mvcc.ErrEmptyWatcherRange`).
const EMPTY_RANGE_REASON: &str = "mvcc: watcher range is empty";

/// etcd's cancel reason for a client-chosen id already in use on the
/// stream (`mvcc.ErrWatcherDuplicateID`).
const DUPLICATE_ID_REASON: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// The watch id of refused creates and of stream-wide progress responses
/// (clientv3's `InvalidWatchID`).
pub(super) const INVALID_WATCH_ID: i64 = -1;

/// The buffer limits publish and replay check, copied from the config.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) watcher_events_max: usize,
    pub(super) stream_events_max: usize,
    pub(super) response_events_max: usize,
    pub(super) replay_page_events: usize,
}

impl From<&WatchConfig> for Limits {
    fn from(c: &WatchConfig) -> Limits {
        Limits {
            watcher_events_max: c.events_buffered_per_watcher_max,
            stream_events_max: c.events_buffered_per_stream_max,
            response_events_max: c.events_per_response_max,
            replay_page_events: c.replay_page_events,
        }
    }
}

/// What a stream will say, in order.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A created or canceled notice.
    Control(Control),
    /// Events of one watcher.
    Events {
        watch_id: i64,
        /// The watcher's hub-wide key (ids can be reused after a cancel).
        watcher: u64,
        fragment: bool,
        /// Every event of the watcher at or below this revision is in this
        /// item or before it: the header revision of its last response.
        covered: Revision,
        /// Filtered, and without `prev_kv` unless the watcher asked.
        events: Vec<Event>,
    },
    /// A progress notification (`watch_id` -1: for the whole stream).
    Progress { watch_id: i64, revision: Revision },
}

/// A response without events.
#[derive(Debug, Default)]
pub(super) struct Control {
    pub(super) watch_id: i64,
    pub(super) revision: Revision,
    pub(super) created: bool,
    pub(super) canceled: bool,
    pub(super) compact_revision: Revision,
    pub(super) cancel_reason: String,
}

/// One watcher's settings and position.
#[derive(Debug)]
struct Watcher {
    /// Hub-wide key: the index entry and outbox items are tagged with it.
    key: u64,
    range: WatchRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// The requested start revision (0: from now). Progress is reported
    /// only once the published revision reaches it, as etcd does.
    start: Revision,
    /// Every event of the watcher's range below this revision has been
    /// given to it (queued or sent); published revisions below it are
    /// skipped.
    ///
    /// Invariant: unsynced ⇒ history from `next` is exactly what it still
    /// needs. Synced ⇒ it also has every event of its range up to the
    /// hub's revision (`next` then advances only with its own events).
    next: Revision,
    /// In the hub's index, receiving live events.
    synced: bool,
    /// Events of this watcher in the outbox.
    buffered: usize,
    /// Events were queued since the last progress tick (etcd elides the
    /// next progress notification then).
    events_since_tick: bool,
}

impl Watcher {
    /// The events this watcher wants, shaped as it asked.
    fn select<'e>(&self, events: impl IntoIterator<Item = &'e Event>) -> Vec<Event> {
        events
            .into_iter()
            .filter(|e| match e.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            })
            .map(|e| Event {
                kind: e.kind,
                kv: e.kv.clone(),
                prev_kv: if self.prev_kv { e.prev_kv.clone() } else { None },
            })
            .collect()
    }
}

/// What the stream's mutex guards.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    outbox: VecDeque<Outgoing>,
    /// Events in the outbox. Invariant: the sum over `Events` items.
    buffered: usize,
    watchers: HashMap<i64, Watcher>,
    /// Unsynced watchers waiting for a replay, oldest first; entries whose
    /// watcher is gone or synced are skipped when reached.
    unsynced: VecDeque<(i64, u64)>,
    /// Next server-assigned watch id (etcd 3.5: per stream, from 0,
    /// skipping ids in use).
    next_auto_id: i64,
}

impl StreamState {
    /// Queues `events` of a watcher, appending to the last item when it is
    /// the same watcher's and the merged item stays within one response.
    fn push_events(
        &mut self,
        watch_id: i64,
        watcher: u64,
        fragment: bool,
        covered: Revision,
        events: Vec<Event>,
        response_events_max: usize,
    ) {
        self.buffered += events.len();
        if let Some(Outgoing::Events { watcher: w, covered: c, events: queued, .. }) =
            self.outbox.back_mut()
            && *w == watcher
            && queued.len() + events.len() <= response_events_max
        {
            queued.extend(events);
            *c = covered;
            return;
        }
        self.outbox.push_back(Outgoing::Events { watch_id, watcher, fragment, covered, events });
    }
}

/// The part of a stream the hub reaches: its state and its wake-up.
#[derive(Debug, Default)]
pub(super) struct StreamShared {
    state: Mutex<StreamState>,
    /// Signalled whenever the outbox or the unsynced queue grows.
    wake: Notify,
}

impl StreamShared {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // As the hub's: critical sections keep the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one published revision's `events` for synced watcher
    /// `watch_id` (called by publish under the hub's lock). Returns the
    /// watcher's range when its buffer is full: it is now unsynced and the
    /// caller removes it from the index.
    pub(super) fn deliver_live(
        &self,
        watch_id: i64,
        watcher: u64,
        revision: Revision,
        events: &[&Event],
        limits: &Limits,
    ) -> Option<WatchRange> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(w) = st.watchers.get_mut(&watch_id).filter(|w| w.key == watcher) else {
            debug_assert!(false, "the index holds only live watchers");
            return None;
        };
        debug_assert!(w.synced, "the index holds only synced watchers");
        if revision < w.next {
            // A future start, or a replay that already read this revision.
            return None;
        }
        debug_assert!(
            events.iter().all(|e| w.range.contains(&e.kv.key)),
            "the index matched only keys in the watcher's range"
        );
        let selected = w.select(events.iter().copied());
        if selected.is_empty() {
            w.next = Revision(revision.0 + 1);
            return None;
        }
        let n = selected.len();
        let watcher_full = w.buffered > 0 && w.buffered + n > limits.watcher_events_max;
        let stream_full = st.buffered > 0 && st.buffered + n > limits.stream_events_max;
        if watcher_full || stream_full {
            // Keep `next` at this revision: the replay starts from it.
            w.synced = false;
            st.unsynced.push_back((watch_id, watcher));
            let range = w.range.clone();
            drop(guard);
            self.wake.notify_one();
            return Some(range);
        }
        w.next = Revision(revision.0 + 1);
        w.buffered += n;
        w.events_since_tick = true;
        let fragment = w.fragment;
        st.push_events(watch_id, watcher, fragment, revision, selected, limits.response_events_max);
        drop(guard);
        self.wake.notify_one();
        None
    }

    /// Marks synced watcher `watch_id` unsynced (the hub dropped its index).
    pub(super) fn unsync(&self, watch_id: i64, watcher: u64) {
        let mut st = self.lock();
        if let Some(w) = st.watchers.get_mut(&watch_id).filter(|w| w.key == watcher) {
            w.synced = false;
            st.unsynced.push_back((watch_id, watcher));
        }
        drop(st);
        self.wake.notify_one();
    }
}

/// A history read for one unsynced watcher.
struct ReplayJob {
    watch_id: i64,
    watcher: u64,
    from: Revision,
    range: WatchRange,
}

/// What a history read found.
enum ReplayResult {
    Page { events: Vec<Event>, resume: Revision },
    Compacted { compacted: Revision },
    Failed { reason: String },
}

/// A history read in flight.
struct Replay {
    job: ReplayJob,
    handle: JoinHandle<ReplayResult>,
}

/// One client's watch stream: many watchers, one ordered sequence of
/// [`WatchResponse`]s.
///
/// Feed it the client's requests ([`WatchStream::handle`] or the methods
/// it dispatches to) and take responses with
/// [`WatchStream::next_response`]. Dropping it removes its watchers.
pub struct WatchStream {
    hub: Arc<WatchHub>,
    shared: Arc<StreamShared>,
    /// Responses built from the outbox, not yet taken.
    ready: VecDeque<WatchResponse>,
    /// The history read in flight, if any (one per stream at a time).
    replay: Option<Replay>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("ready", &self.ready.len())
            .field("replaying", &self.replay.is_some())
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    pub(super) fn new(hub: Arc<WatchHub>) -> WatchStream {
        WatchStream { hub, shared: Arc::default(), ready: VecDeque::new(), replay: None }
    }

    /// Acts on one client request.
    pub fn handle(&mut self, request: WatchRequest) {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create),
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => self.request_progress(),
            // etcd ignores a request with nothing set rather than end the
            // stream.
            None => {}
        }
    }

    /// Refuses a create request for `reason` (the client may not watch what
    /// it asked for): answered `created` and `canceled` with id -1, as etcd.
    pub fn refuse_create(&mut self, reason: String) {
        let revision = self.hub.lock().revision;
        self.shared.lock().outbox.push_back(Outgoing::Control(Control {
            watch_id: INVALID_WATCH_ID,
            revision,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Control::default()
        }));
        self.shared.wake.notify_one();
    }

    /// Creates a watcher (etcd's rules): the answer, `created` with its id or
    /// `created` and `canceled` with id -1 and a reason, is queued first.
    ///
    /// - An empty key watches from `"\0"`; `range_end` follows etcd's range
    ///   convention; `key >= range_end` is refused (`mvcc: watcher range is
    ///   empty`).
    /// - `watch_id` 0 asks the server to choose (per stream, from 0, skipping
    ///   ids in use); an id in use is refused (`mvcc: duplicate watch ID
    ///   provided on the WatchStream`), and so is a negative one.
    /// - `start_revision` 0 means after the current revision; a negative one
    ///   is refused with the compacted error (etcd 3.4 creates it, then
    ///   cancels it as compacted); one below the compacted revision is
    ///   created and then canceled with `compact_revision` set (and, as in
    ///   etcd, header revision 0).
    pub fn create(&mut self, req: WatchCreateRequest) {
        let mut hub = self.hub.lock();
        let revision = hub.revision;
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let refuse = |st: &mut StreamState, reason: String| {
            st.outbox.push_back(Outgoing::Control(Control {
                watch_id: INVALID_WATCH_ID,
                revision,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Control::default()
            }));
        };
        let key = if req.key.is_empty() { Bytes::from_static(&[0]) } else { Bytes::from(req.key) };
        let range = WatchRange::new(key, &req.range_end);
        let max = self.hub.config.watchers_per_stream_max;
        // etcd's order of checks, then ringkv's own.
        let refused = if req.start_revision < 0 {
            Some(EtcdError::Compacted.message().into_owned())
        } else if range.is_none() {
            Some(EMPTY_RANGE_REASON.to_owned())
        } else if req.watch_id != 0 && st.watchers.contains_key(&req.watch_id) {
            Some(DUPLICATE_ID_REASON.to_owned())
        } else if req.watch_id < 0 {
            Some(format!(
                "ringkv: watch_id {} is negative; send 0 to let the server choose one",
                req.watch_id
            ))
        } else if st.watchers.len() >= max {
            Some(format!(
                "ringkv: this stream already has {max} watchers, the most it may hold; cancel \
                 some or open another stream"
            ))
        } else {
            None
        };
        let range = match (range, refused) {
            (Some(range), None) => range,
            (_, reason) => {
                refuse(st, reason.expect("a create without a range is refused above"));
                drop(guard);
                self.shared.wake.notify_one();
                return;
            }
        };
        let watch_id = if req.watch_id == 0 {
            while st.watchers.contains_key(&st.next_auto_id) {
                st.next_auto_id += 1;
            }
            st.next_auto_id += 1;
            st.next_auto_id - 1
        } else {
            req.watch_id
        };
        let start = Revision(req.start_revision);
        let next = if start == Revision::ZERO { Revision(revision.0 + 1) } else { start };
        let synced = next > revision;
        let key = hub.next_watcher;
        hub.next_watcher += 1;
        hub.watchers += 1;
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        let watcher = Watcher {
            key,
            range: range.clone(),
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            fragment: req.fragment,
            progress_notify: req.progress_notify,
            start,
            next,
            synced,
            buffered: 0,
            events_since_tick: false,
        };
        st.outbox.push_back(Outgoing::Control(Control {
            watch_id,
            revision,
            created: true,
            ..Control::default()
        }));
        st.watchers.insert(watch_id, watcher);
        if synced {
            let sub = Subscriber { stream: Arc::clone(&self.shared), watch_id };
            hub.index.insert(&range, key, sub);
        } else {
            st.unsynced.push_back((watch_id, key));
        }
        drop(guard);
        drop(hub);
        self.shared.wake.notify_one();
    }

    /// Cancels watcher `watch_id`: its queued events are dropped and a
    /// `canceled` response follows; an unknown id is ignored, as etcd does.
    pub fn cancel(&mut self, watch_id: i64) {
        let mut hub = self.hub.lock();
        let mut guard = self.shared.lock();
        let Some(w) = guard.watchers.remove(&watch_id) else { return };
        if w.synced {
            let removed = hub.index.remove(&w.range, w.key);
            debug_assert!(removed.is_some(), "a synced watcher is in the index");
        }
        hub.watchers -= 1;
        let revision = hub.revision;
        // Out of the index: nothing more arrives for it, so the outbox can
        // be combed without holding up publish.
        drop(hub);
        let st = &mut *guard;
        st.outbox.retain(|o| match o {
            Outgoing::Events { watcher, .. } => *watcher != w.key,
            Outgoing::Progress { watch_id: id, .. } => *id != watch_id,
            Outgoing::Control(_) => true,
        });
        st.buffered -= w.buffered;
        st.outbox.push_back(Outgoing::Control(Control {
            watch_id,
            revision,
            canceled: true,
            ..Control::default()
        }));
        drop(guard);
        self.shared.wake.notify_one();
    }

    /// etcd's `WatchProgressRequest`: queues a response with watch id -1
    /// and the published revision if every watcher on the stream is synced
    /// (and past its start revision); otherwise does nothing, as etcd.
    pub fn request_progress(&mut self) {
        // Every event at or below `revision` for a watcher synced now is
        // already queued (publish queues a revision's events before the
        // hub's lock is released), so the answer may follow them.
        let revision = self.hub.revision();
        let mut st = self.shared.lock();
        if st.watchers.values().all(|w| w.synced && revision >= w.start) {
            st.outbox.push_back(Outgoing::Progress { watch_id: INVALID_WATCH_ID, revision });
            drop(st);
            self.shared.wake.notify_one();
        }
    }

    /// One tick of the progress-notify interval: each `progress_notify`
    /// watcher that is synced and was given no events since the last tick
    /// gets an empty response at the published revision.
    pub fn progress_tick(&mut self) {
        // As in `request_progress`.
        let revision = self.hub.revision();
        let mut guard = self.shared.lock();
        let StreamState { watchers, outbox, .. } = &mut *guard;
        let mut queued = false;
        for (&watch_id, w) in watchers.iter_mut().filter(|(_, w)| w.progress_notify) {
            if !w.events_since_tick && w.synced && revision >= w.start {
                outbox.push_back(Outgoing::Progress { watch_id, revision });
                queued = true;
            }
            w.events_since_tick = false;
        }
        drop(guard);
        if queued {
            self.shared.wake.notify_one();
        }
    }

    /// The next response for the client. Waits for one; replays history
    /// for unsynced watchers meanwhile. Cancel-safe: a dropped call loses
    /// nothing.
    pub async fn next_response(&mut self) -> WatchResponse {
        loop {
            self.reap_replay();
            self.maybe_start_replay();
            if let Some(resp) = self.ready.pop_front() {
                return resp;
            }
            if self.fill_ready() {
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let woken = shared.wake.notified();
            match self.replay.as_mut() {
                Some(replay) => {
                    tokio::select! {
                        () = woken => {}
                        result = &mut replay.handle => self.finish_replay(result),
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Moves the oldest outbox item into `ready` as responses; false if the
    /// outbox is empty.
    fn fill_ready(&mut self) -> bool {
        let item = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            let Some(item) = st.outbox.pop_front() else { return false };
            if let Outgoing::Events { watch_id, watcher, events, .. } = &item {
                st.buffered -= events.len();
                if let Some(w) = st.watchers.get_mut(watch_id).filter(|w| w.key == *watcher) {
                    w.buffered -= events.len();
                }
            }
            item
        };
        let hub = &self.hub;
        response::build(&**hub.context(), item, &hub.config, &mut self.ready);
        true
    }

    /// Starts a history read for the oldest unsynced watcher, if none is in
    /// flight and its buffers have room for a page.
    fn maybe_start_replay(&mut self) {
        if self.replay.is_some() {
            return;
        }
        let limits = self.hub.limits;
        let page = limits.replay_page_events;
        let job = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            if st.buffered > 0 && st.buffered + page > limits.stream_events_max {
                return;
            }
            loop {
                let Some(&(watch_id, watcher)) = st.unsynced.front() else { return };
                let Some(w) = st.watchers.get(&watch_id).filter(|w| w.key == watcher && !w.synced)
                else {
                    st.unsynced.pop_front();
                    continue;
                };
                if w.buffered > 0 && w.buffered + page > limits.watcher_events_max {
                    // It drains in outbox order; the others wait behind it.
                    return;
                }
                st.unsynced.pop_front();
                break ReplayJob { watch_id, watcher, from: w.next, range: w.range.clone() };
            }
        };
        let hub = Arc::clone(&self.hub);
        let (from, key, range_end) =
            (job.from, job.range.start.clone(), job.range.range_end_bytes());
        let handle = tokio::spawn(async move {
            let Ok(_permit) = Arc::clone(&hub.replays).acquire_owned().await else {
                return ReplayResult::Failed { reason: "the watch hub is shutting down".into() };
            };
            let read = tokio::task::spawn_blocking(move || {
                let view = hub.store.read()?;
                view.events(hub.shard, from, &key, &range_end, page)
            });
            match read.await {
                Ok(Ok((events, resume))) => ReplayResult::Page { events, resume },
                Ok(Err(ReadError::Request(MvccError::Compacted { compacted, .. }))) => {
                    ReplayResult::Compacted { compacted }
                }
                Ok(Err(e)) => ReplayResult::Failed { reason: e.to_string() },
                Err(e) => ReplayResult::Failed { reason: e.to_string() },
            }
        });
        self.replay = Some(Replay { job, handle });
    }

    /// Applies a finished history read without waiting.
    fn reap_replay(&mut self) {
        let Some(replay) = self.replay.as_mut() else { return };
        if let Some(result) = (&mut replay.handle).now_or_never() {
            self.finish_replay(result);
        }
    }

    /// Applies a history read: queues its events, then either joins the
    /// watcher to the live stream (the page reached past the published
    /// revision) or queues it for the next page; cancels it if history it
    /// needs was compacted.
    fn finish_replay(&mut self, result: Result<ReplayResult, tokio::task::JoinError>) {
        let Some(Replay { job, .. }) = self.replay.take() else { return };
        let result = result.unwrap_or_else(|e| ReplayResult::Failed { reason: e.to_string() });
        let mut hub = self.hub.lock();
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let Some(w) = st.watchers.get_mut(&job.watch_id).filter(|w| w.key == job.watcher) else {
            // Canceled meanwhile.
            return;
        };
        debug_assert!(!w.synced && w.next == job.from, "only replays move an unsynced watcher");
        let ended = match result {
            ReplayResult::Page { events, resume } => {
                debug_assert!(resume >= job.from, "a page never moves back");
                let selected = w.select(&events);
                w.next = resume;
                if !selected.is_empty() {
                    w.buffered += selected.len();
                    w.events_since_tick = true;
                    let (fragment, covered) = (w.fragment, Revision(resume.0 - 1));
                    st.push_events(
                        job.watch_id,
                        job.watcher,
                        fragment,
                        covered,
                        selected,
                        self.hub.limits.response_events_max,
                    );
                }
                let w = st.watchers.get_mut(&job.watch_id).expect("looked up above");
                if w.next > hub.revision {
                    // Every published revision is queued: later ones arrive
                    // live, and those the view saw ahead of publish are
                    // skipped by `next` when they come.
                    w.synced = true;
                    let sub =
                        Subscriber { stream: Arc::clone(&self.shared), watch_id: job.watch_id };
                    hub.index.insert(&job.range, job.watcher, sub);
                } else {
                    st.unsynced.push_back((job.watch_id, job.watcher));
                }
                None
            }
            ReplayResult::Compacted { compacted } => Some(Control {
                watch_id: job.watch_id,
                // etcd's compaction cancel carries no header revision (its
                // watcher sync builds the response from the compacted
                // revision alone); clients see 0 there, so ours does too.
                revision: Revision::ZERO,
                canceled: true,
                compact_revision: compacted,
                ..Control::default()
            }),
            ReplayResult::Failed { reason } => {
                tracing::warn!(
                    shard = self.hub.shard.0,
                    watch_id = job.watch_id,
                    from = job.from.0,
                    %reason,
                    "watch history replay failed; canceling the watcher"
                );
                Some(Control {
                    watch_id: job.watch_id,
                    revision: hub.revision,
                    canceled: true,
                    cancel_reason: format!("ringkv: reading the watch history failed: {reason}"),
                    ..Control::default()
                })
            }
        };
        if let Some(control) = ended {
            // Its queued events still go out, before the cancel notice.
            st.watchers.remove(&job.watch_id);
            hub.watchers -= 1;
            st.outbox.push_back(Outgoing::Control(control));
        }
        drop(guard);
        drop(hub);
        self.shared.wake.notify_one();
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if let Some(replay) = self.replay.take() {
            replay.handle.abort();
        }
        let mut hub = self.hub.lock();
        let mut st = self.shared.lock();
        for (_, w) in st.watchers.drain() {
            if w.synced {
                hub.index.remove(&w.range, w.key);
            }
            hub.watchers -= 1;
        }
        st.outbox.clear();
        st.buffered = 0;
        hub.streams -= 1;
    }
}

#[cfg(test)]
impl WatchStream {
    /// Events queued in the outbox (tests check the buffer bound).
    pub(super) fn buffered_events(&self) -> usize {
        self.shared.lock().buffered
    }
}
