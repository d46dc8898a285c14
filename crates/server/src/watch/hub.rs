//! The hub: the index of synced watchers and the entry point of published
//! changes.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use ringkv_consensus::ShardId;
use ringkv_node::WatchEvents;
use ringkv_storage::mvcc::{Event, MvccStore, Revision};
use tokio::sync::Semaphore;

use super::index::{WatchRange, WatcherIndex};
use super::stream::{Limits, StreamShared, WatchStream};
use super::{WatchConfig, WatchContext, WatchError};

/// Fans a shard's applied changes out to its watchers.
///
/// Shared as `Arc<WatchHub>` by the node thread ([`WatchHub::publish`]) and
/// every client stream ([`WatchHub::open_stream`]). One mutex guards the
/// index and the published revision; publish holds it for the lookup and
/// the appends to the matched watchers' outboxes (each under its stream's
/// own mutex, always taken after the hub's), never for I/O or a client.
pub struct WatchHub {
    pub(super) shard: ShardId,
    pub(super) store: Arc<MvccStore>,
    pub(super) context: Arc<dyn WatchContext>,
    pub(super) config: WatchConfig,
    pub(super) limits: Limits,
    /// Permits for history reads ([`WatchConfig::replays_in_flight_max`]).
    pub(super) replays: Arc<Semaphore>,
    state: Mutex<HubState>,
}

/// What the hub's mutex guards.
pub(super) struct HubState {
    /// The last revision published, or the store's revision when the hub
    /// opened (or last resynced).
    ///
    /// Invariant: every synced watcher has been given every event of its
    /// range at or below it, and the store holds at least this revision.
    pub(super) revision: Revision,
    /// Synced watchers, by the keys they cover.
    pub(super) index: WatcherIndex<Subscriber>,
    /// Source of hub-wide watcher keys (never reused).
    pub(super) next_watcher: u64,
    /// Open streams.
    pub(super) streams: usize,
    /// Watchers on all streams, synced or not.
    pub(super) watchers: usize,
}

/// Where a synced watcher's events go.
pub(super) struct Subscriber {
    pub(super) stream: Arc<StreamShared>,
    pub(super) watch_id: i64,
}

/// Counts for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Open streams.
    pub streams: usize,
    /// Watchers on all streams.
    pub watchers: usize,
    /// Watchers receiving live events; the rest are catching up from history.
    pub synced: usize,
    /// The last revision published.
    pub revision: Revision,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("shard", &self.shard)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WatchHub {
    /// A hub for `shard` of `store`, starting at the shard's current
    /// revision: changes applied before it opened are served from history.
    ///
    /// # Errors
    /// The configuration has a zero limit, or the store cannot be read.
    pub fn new(
        store: Arc<MvccStore>,
        shard: ShardId,
        context: Arc<dyn WatchContext>,
        config: WatchConfig,
    ) -> Result<Arc<WatchHub>, WatchError> {
        config.validate()?;
        let revision = store.read()?.shard_state(shard)?.revision;
        Ok(Arc::new(WatchHub {
            shard,
            store,
            context,
            limits: Limits::from(&config),
            replays: Arc::new(Semaphore::new(config.replays_in_flight_max)),
            config,
            state: Mutex::new(HubState {
                revision,
                index: WatcherIndex::default(),
                next_watcher: 0,
                streams: 0,
                watchers: 0,
            }),
        }))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every critical section leaves the state consistent before it can
        // panic (panics there are broken invariants), so a poisoned lock
        // still guards usable state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard this hub serves.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The configuration.
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The runtime context.
    pub fn context(&self) -> &Arc<dyn WatchContext> {
        &self.context
    }

    /// The last revision published.
    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Current counts.
    pub fn stats(&self) -> WatchStats {
        let hub = self.lock();
        WatchStats {
            streams: hub.streams,
            watchers: hub.watchers,
            synced: hub.index.len(),
            revision: hub.revision,
        }
    }

    /// A new, empty client stream.
    pub fn open_stream(self: &Arc<Self>) -> WatchStream {
        self.lock().streams += 1;
        WatchStream::new(Arc::clone(self))
    }

    /// Hands the hub the changes of one applied entry. Call it from the
    /// node thread for every [`WatchEvents`] of every round, in order, and
    /// before answering the round's requests, so that a client that saw a
    /// write's revision finds it in any watch it opens afterwards.
    ///
    /// Costs one index lookup per event plus an append per matched watcher;
    /// never waits for a client. Other shards' changes are ignored, and so
    /// are revisions the hub already has (it opened after they applied). A
    /// revision that skips one (the store was restored from a snapshot)
    /// sends every synced watcher back to history, as
    /// [`WatchHub::resync`] does.
    pub fn publish(&self, batch: &WatchEvents) {
        if batch.shard != self.shard {
            return;
        }
        let mut hub = self.lock();
        if batch.revision <= hub.revision {
            return;
        }
        if batch.revision.0 != hub.revision.0 + 1 {
            tracing::warn!(
                shard = self.shard.0,
                published = hub.revision.0,
                revision = batch.revision.0,
                "watch hub saw a revision gap (a snapshot was installed?); watchers catch up from history"
            );
            hub.unsync_all();
            hub.revision = batch.revision;
            return;
        }
        hub.revision = batch.revision;
        let limits = &self.limits;
        let mut overflowed: Vec<(u64, WatchRange)> = Vec::new();
        let HubState { index, .. } = &mut *hub;
        if let [event] = batch.events.as_slice() {
            index.for_each_match(&event.kv.key, |id, sub| {
                if let Some(range) =
                    sub.stream.deliver_live(sub.watch_id, id, batch.revision, &[event], limits)
                {
                    overflowed.push((id, range));
                }
            });
        } else {
            // A multi-key revision: group per watcher so each gets one batch.
            let mut groups: Vec<(u64, &Subscriber, Vec<&Event>)> = Vec::new();
            let mut slot: HashMap<u64, usize> = HashMap::new();
            for event in &batch.events {
                index.for_each_match(&event.kv.key, |id, sub| match slot.entry(id) {
                    Entry::Occupied(at) => groups[*at.get()].2.push(event),
                    Entry::Vacant(at) => {
                        at.insert(groups.len());
                        groups.push((id, sub, vec![event]));
                    }
                });
            }
            for (id, sub, events) in groups {
                if let Some(range) =
                    sub.stream.deliver_live(sub.watch_id, id, batch.revision, &events, limits)
                {
                    overflowed.push((id, range));
                }
            }
        }
        for (id, range) in overflowed {
            let removed = index.remove(&range, id);
            debug_assert!(removed.is_some(), "an overflowing watcher was synced");
        }
    }

    /// Sends every synced watcher back to history and takes the store's
    /// current revision as the published one. Call it after the shard's
    /// store was replaced (a snapshot installed): events between the old
    /// and the new state were never published, and history has them (or
    /// has compacted them, which cancels the watchers that needed them).
    ///
    /// # Errors
    /// The store's revision cannot be read; nothing changed.
    pub fn resync(&self) -> Result<(), WatchError> {
        let revision = self.store.read()?.shard_state(self.shard)?.revision;
        let mut hub = self.lock();
        hub.unsync_all();
        // A publish may have raced ahead of the read; never move back.
        hub.revision = hub.revision.max(revision);
        Ok(())
    }
}

impl HubState {
    /// Moves every synced watcher to unsynced.
    fn unsync_all(&mut self) {
        for (id, sub) in self.index.drain() {
            sub.stream.unsync(sub.watch_id, id);
        }
    }
}
