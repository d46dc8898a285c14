//! Outbox items to wire responses: whole revisions per response, and
//! etcd's fragmentation for watchers that allow it.

use std::collections::VecDeque;

use prost::Message;
use ringkv_api::etcdserverpb::WatchResponse;
use ringkv_api::mvccpb;
use ringkv_storage::mvcc::{Event, Revision};

use super::stream::{Control, Outgoing};
use super::{WatchConfig, WatchContext};
use crate::api::convert::to_pb;

/// Field number of `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// Appends the responses for `item` to `out`.
pub(super) fn build(
    ctx: &dyn WatchContext,
    item: Outgoing,
    config: &WatchConfig,
    out: &mut VecDeque<WatchResponse>,
) {
    match item {
        Outgoing::Control(Control {
            watch_id,
            revision,
            created,
            canceled,
            compact_revision,
            cancel_reason,
        }) => out.push_back(WatchResponse {
            header: Some(ctx.header(revision)),
            watch_id,
            created,
            canceled,
            compact_revision: compact_revision.0,
            cancel_reason,
            ..WatchResponse::default()
        }),
        Outgoing::Progress { watch_id, revision } => out.push_back(WatchResponse {
            header: Some(ctx.header(revision)),
            watch_id,
            ..WatchResponse::default()
        }),
        Outgoing::Events { watch_id, fragment, covered, events, .. } => {
            let ends = chunk_ends(&events, config.events_per_response_max);
            let mut events = events.into_iter();
            let mut taken = 0;
            for (i, &end) in ends.iter().enumerate() {
                let chunk: Vec<mvccpb::Event> =
                    events.by_ref().take(end - taken).map(|e| to_pb::event(e, true)).collect();
                taken = end;
                // The batch's last response reports how far the batch
                // covers; one cut inside it, its own last revision.
                let revision = match chunk.last().and_then(|e| e.kv.as_ref()) {
                    Some(kv) if i + 1 < ends.len() => Revision(kv.mod_revision),
                    _ => covered,
                };
                let resp = WatchResponse {
                    header: Some(ctx.header(revision)),
                    watch_id,
                    events: chunk,
                    ..WatchResponse::default()
                };
                if fragment {
                    fragments(resp, config.response_bytes_max, out);
                } else {
                    out.push_back(resp);
                }
            }
        }
    }
}

/// Where to cut `events` into responses: each holds whole revisions and at
/// most `max` events, except a single revision larger than `max`, which
/// goes alone. Returns each response's end index; never cuts an empty
/// batch (one empty response: the caller's events are never empty).
fn chunk_ends(events: &[Event], max: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut chunk_start, mut i) = (0, 0);
    while i < events.len() {
        let revision = events[i].kv.mod_revision;
        let mut j = i;
        while j < events.len() && events[j].kv.mod_revision == revision {
            j += 1;
        }
        if j - chunk_start > max && i > chunk_start {
            ends.push(i);
            chunk_start = i;
        }
        i = j;
    }
    ends.push(events.len());
    ends
}

/// etcd's fragmentation: a response at or above `bytes_max` with two or
/// more events is split into responses under `bytes_max` (each with at
/// least one event), all but the last marked `fragment`.
fn fragments(resp: WatchResponse, bytes_max: usize, out: &mut VecDeque<WatchResponse>) {
    if resp.encoded_len() < bytes_max || resp.events.len() < 2 {
        out.push_back(resp);
        return;
    }
    let mut template = resp;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base = template.encoded_len();
    let mut size = base;
    let mut current: Vec<mvccpb::Event> = Vec::new();
    for event in events {
        let len = prost::encoding::message::encoded_len(EVENTS_FIELD, &event);
        if !current.is_empty() && size + len >= bytes_max {
            out.push_back(WatchResponse {
                events: std::mem::take(&mut current),
                ..template.clone()
            });
            size = base;
        }
        size += len;
        current.push(event);
    }
    out.push_back(WatchResponse { events: current, fragment: false, ..template });
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ringkv_storage::mvcc::{EventKind, KeyValue};

    use super::*;

    fn event(revision: i64, value_bytes: usize) -> Event {
        let kv = KeyValue {
            key: Bytes::from(format!("key{revision}")),
            mod_revision: Revision(revision),
            value: Bytes::from(vec![b'v'; value_bytes]),
            ..KeyValue::default()
        };
        Event { kind: EventKind::Put, kv, prev_kv: None }
    }

    #[test]
    fn responses_hold_whole_revisions_up_to_the_limit() {
        let events: Vec<Event> = [2, 2, 3, 4, 4, 4, 5].iter().map(|&r| event(r, 1)).collect();
        assert_eq!(chunk_ends(&events, 3), vec![3, 6, 7]);
        assert_eq!(chunk_ends(&events, 100), vec![7]);
        // A revision larger than the limit goes alone, whole.
        let events: Vec<Event> = [2, 3, 3, 3, 3, 4].iter().map(|&r| event(r, 1)).collect();
        assert_eq!(chunk_ends(&events, 2), vec![1, 5, 6]);
        assert_eq!(chunk_ends(&events, 1), vec![1, 5, 6]);
    }

    #[test]
    fn fragments_stay_under_the_limit_and_only_the_last_is_final() {
        let events: Vec<mvccpb::Event> =
            (0..20).map(|i| to_pb::event(event(7, 10 + 13 * i), true)).collect();
        let resp =
            WatchResponse { watch_id: 3, events: events.clone(), ..WatchResponse::default() };
        for bytes_max in [64, 200, 1000] {
            let mut out = VecDeque::new();
            fragments(resp.clone(), bytes_max, &mut out);
            assert!(out.len() > 1, "{bytes_max}: split");
            let last = out.len() - 1;
            for (i, piece) in out.iter().enumerate() {
                assert_eq!(piece.fragment, i != last);
                assert_eq!(piece.watch_id, 3);
                assert!(!piece.events.is_empty());
                assert!(piece.encoded_len() < bytes_max || piece.events.len() == 1);
            }
            let joined: Vec<mvccpb::Event> = out.into_iter().flat_map(|r| r.events).collect();
            assert_eq!(joined, events);
        }
        // Under the limit, or a single event: untouched.
        for (resp, bytes_max) in [
            (resp.clone(), resp.encoded_len() + 1),
            (WatchResponse { events: events[..1].to_vec(), ..resp.clone() }, 8),
        ] {
            let mut out = VecDeque::new();
            fragments(resp.clone(), bytes_max, &mut out);
            assert_eq!(out, VecDeque::from([resp]));
        }
    }
}
