//! The recent cluster events this node saw (leaders elected and lost,
//! replicas added, promoted and removed), in a bounded ring buffer for the
//! dashboard. They are observed each time the node thread publishes its
//! state (every [`crate::runtime::STATUS_REFRESH_INTERVAL`]), so a change
//! undone within one interval is not seen: the log tells what the
//! operator should know about, not every step of an election.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use ringkv_consensus::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

/// Events kept; the oldest is dropped past it.
pub const EVENTS_MAX: usize = 256;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The shard has a new leader (its first, or another than before).
    LeaderElected {
        /// The new leader (as a hex member id).
        leader: String,
        /// The leader before it, if one was known.
        previous: Option<String>,
    },
    /// The shard's leader is no longer known here.
    LeaderLost {
        /// The leader that was known.
        previous: String,
    },
    /// A node became a voting replica of the shard.
    ReplicaAdded {
        /// The node (hex member id).
        node: String,
    },
    /// A node became a learner of the shard (a replica catching up before
    /// it votes: the first step of a move).
    LearnerAdded {
        /// The node.
        node: String,
    },
    /// A node left the shard's replicas.
    ReplicaRemoved {
        /// The node.
        node: String,
    },
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When this node saw it, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The shard.
    pub shard: u64,
    /// The shard's term (or ballot round) when it was seen.
    pub term: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The wall clock, in milliseconds since the Unix epoch (0 before it).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A member id as the dashboard and etcd print it.
pub fn hex_id(id: NodeId) -> String {
    format!("{:016x}", id.0)
}

/// The bounded log.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<VecDeque<Event>>,
}

impl EventLog {
    /// Appends an event seen now, dropping the oldest past [`EVENTS_MAX`].
    pub fn push(&self, shard: ShardId, term: u64, kind: EventKind) {
        let at_unix_ms = now_unix_ms();
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == EVENTS_MAX {
            events.pop_front();
        }
        events.push_back(Event { at_unix_ms, shard: shard.0, term, kind });
        debug_assert!(events.len() <= EVENTS_MAX);
    }

    /// Every kept event, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events_max() {
        let log = EventLog::default();
        for term in 0..(EVENTS_MAX as u64 + 10) {
            log.push(ShardId(1), term, EventKind::LeaderLost { previous: hex_id(NodeId(1)) });
        }
        let events = log.snapshot();
        assert_eq!(events.len(), EVENTS_MAX);
        assert_eq!(events[0].term, 10);
        assert_eq!(events[EVENTS_MAX - 1].term, EVENTS_MAX as u64 + 9);
    }

    #[test]
    fn events_serialize_flat_with_their_kind() {
        let log = EventLog::default();
        log.push(
            ShardId(1),
            3,
            EventKind::LeaderElected { leader: hex_id(NodeId(0xab)), previous: None },
        );
        let json = serde_json::to_value(&log.snapshot()[0]).unwrap();
        assert_eq!(json["kind"], "leader_elected");
        assert_eq!(json["leader"], "00000000000000ab");
        assert_eq!(json["shard"], 1);
        assert_eq!(json["term"], 3);
        assert!(json["previous"].is_null());
    }
}
