//! The hub and a stream, driven directly (no gRPC).

use std::collections::HashMap;

use prost::Message;
use ringkv_api::etcdserverpb::WatchCreateRequest;
use ringkv_api::etcdserverpb::watch_create_request::FilterType;
use ringkv_api::mvccpb;
use ringkv_storage::mvcc::Revision;

use super::*;
use crate::watch::WatchStats;
use crate::watch::stream::INVALID_WATCH_ID;

/// Collects events per watcher until each has its `want` count, checking
/// every response (see `check_events_response`).
async fn collect_all(
    stream: &mut WatchStream,
    want: &HashMap<i64, usize>,
) -> HashMap<i64, Vec<mvccpb::Event>> {
    let mut got: HashMap<i64, Vec<mvccpb::Event>> =
        want.keys().map(|&id| (id, Vec::new())).collect();
    while want.iter().any(|(id, n)| got[id].len() < *n) {
        let resp = next(stream).await;
        let events = got.get_mut(&resp.watch_id).unwrap_or_else(|| panic!("unexpected {resp:?}"));
        check_events_response(&resp, events.last());
        events.extend(resp.events);
        assert!(events.len() <= want[&resp.watch_id], "watcher {} got too many", resp.watch_id);
    }
    got
}

/// Asserts that nothing is queued before the answer to a fresh create:
/// creates watcher `fence_id` on an unused key and expects its `created`
/// as the very next response.
async fn assert_nothing_queued(stream: &mut WatchStream, fence_id: i64) {
    stream.create(WatchCreateRequest { watch_id: fence_id, ..create("fence", "", 0) });
    let resp = next(stream).await;
    assert!(resp.created && resp.watch_id == fence_id, "expected the fence, got {resp:?}");
}

#[tokio::test]
async fn live_events_arrive_in_order_exactly_once() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let mut s = hub.open_stream();
    let prefix = created(&mut s, create("a/", "a0", 0)).await;
    let single = created(&mut s, create("a/3", "", 0)).await;
    let from_key =
        created(&mut s, WatchCreateRequest { prev_kv: true, ..create("a/5", "\0", 0) }).await;
    let start = Revision(w.revision().0 + 1);
    for i in 0..120 {
        let k = format!("a/{}", i % 9);
        match i % 6 {
            0..=2 => w.put(&k, &i.to_string()),
            3 => w.delete(&k, ""),
            4 => w.run(txn(&[("a/3", "t"), ("a/7", "t"), ("b/1", "t")])),
            _ => w.delete("a/4", "a/6"),
        };
    }
    let want: HashMap<i64, Vec<mvccpb::Event>> = [
        (prefix, w.expected("a/", "a0", start, false)),
        (single, w.expected("a/3", "", start, false)),
        (from_key, w.expected("a/5", "\0", start, true)),
    ]
    .into_iter()
    .collect();
    let counts = want.iter().map(|(id, e)| (*id, e.len())).collect();
    let got = collect_all(&mut s, &counts).await;
    assert_eq!(got, want);
    assert!(want[&from_key].iter().any(|e| e.prev_kv.is_some()), "prev_kv exercised");
    assert_eq!(hub.stats().synced, 3);
}

#[tokio::test]
async fn a_historical_start_replays_in_pages_then_follows_live() {
    let (_ctx, hub, mut w) = setup(tight_config());
    for i in 0..50 {
        w.put(&format!("k{}", i % 7), &i.to_string());
    }
    let mut s = hub.open_stream();
    s.create(create("k", "l", 10));
    let resp = next(&mut s).await;
    assert!(resp.created);
    assert_eq!(resp.header.unwrap().revision, w.revision().0, "created at the current revision");
    for i in 50..70 {
        w.put(&format!("k{}", i % 7), &i.to_string());
    }
    let want = w.expected("k", "l", Revision(10), false);
    assert_eq!(want.first().map(revision_of), Some(10));
    let got = collect(&mut s, resp.watch_id, want.len()).await;
    assert_eq!(got, want);
    assert_eq!(hub.stats().synced, 1, "joined the live stream");
}

#[tokio::test]
async fn prev_kv_only_for_watchers_that_ask_live_and_from_history() {
    let (_ctx, hub, mut w) = setup(tight_config());
    w.put("p", "1");
    w.put("p", "2");
    w.delete("p", "");
    let mut s = hub.open_stream();
    let with = created(&mut s, WatchCreateRequest { prev_kv: true, ..create("p", "", 2) }).await;
    let without = created(&mut s, create("p", "", 2)).await;
    w.put("p", "3");
    w.put("p", "4");
    let want: HashMap<i64, Vec<mvccpb::Event>> = [
        (with, w.expected("p", "", Revision(2), true)),
        (without, w.expected("p", "", Revision(2), false)),
    ]
    .into_iter()
    .collect();
    let counts = want.iter().map(|(id, e)| (*id, e.len())).collect();
    let got = collect_all(&mut s, &counts).await;
    assert_eq!(got, want);
    // History (revisions 2..4) and live (5..6) alike.
    let prevs: Vec<Option<&[u8]>> =
        got[&with].iter().map(|e| e.prev_kv.as_ref().map(|kv| kv.value.as_slice())).collect();
    assert_eq!(prevs, vec![None, Some(&b"1"[..]), Some(b"2"), None, Some(b"3")]);
    assert!(got[&without].iter().all(|e| e.prev_kv.is_none()));
}

#[tokio::test]
async fn filters_drop_puts_or_deletes() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let mut s = hub.open_stream();
    let no_put = created(
        &mut s,
        WatchCreateRequest { filters: vec![FilterType::Noput as i32], ..create("f", "g", 0) },
    )
    .await;
    let no_delete = created(
        &mut s,
        WatchCreateRequest { filters: vec![FilterType::Nodelete as i32], ..create("f", "g", 0) },
    )
    .await;
    let start = Revision(w.revision().0 + 1);
    for i in 0..10 {
        w.put(&format!("f{}", i % 3), "v");
        if i % 3 == 2 {
            w.delete("f", "g");
        }
    }
    let all = w.expected("f", "g", start, false);
    let kind = |t: mvccpb::event::EventType| {
        all.iter().filter(|e| e.r#type == t as i32).cloned().collect::<Vec<_>>()
    };
    let want: HashMap<i64, Vec<mvccpb::Event>> = [
        (no_put, kind(mvccpb::event::EventType::Delete)),
        (no_delete, kind(mvccpb::event::EventType::Put)),
    ]
    .into_iter()
    .collect();
    assert!(want.values().all(|v| !v.is_empty()));
    let counts = want.iter().map(|(id, e)| (*id, e.len())).collect();
    assert_eq!(collect_all(&mut s, &counts).await, want);
}

#[tokio::test]
async fn cancel_drops_queued_events_and_ignores_unknown_ids() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let mut s = hub.open_stream();
    let id = created(&mut s, create("c", "", 0)).await;
    w.put("c", "queued, then dropped by the cancel");
    s.cancel(id);
    let resp = next(&mut s).await;
    assert!(resp.canceled && !resp.created && resp.watch_id == id, "{resp:?}");
    assert_eq!(resp.header.unwrap().revision, w.revision().0);
    w.put("c", "after the cancel");
    s.cancel(12345);
    assert_nothing_queued(&mut s, 77).await;
    assert_eq!(hub.stats().watchers, 1, "only the fence is left");
}

#[tokio::test]
async fn progress_notify_ticks_only_for_idle_synced_watchers_past_their_start() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    w.put("x", "0");
    let mut s = hub.open_stream();
    let notify =
        created(&mut s, WatchCreateRequest { progress_notify: true, ..create("n", "", 0) }).await;
    let _quiet = created(&mut s, create("n", "", 0)).await;
    let future = WatchCreateRequest { progress_notify: true, ..create("n", "", 1000) };
    let _future = created(&mut s, future).await;

    s.progress_tick();
    let resp = next(&mut s).await;
    assert_eq!(resp.watch_id, notify, "only the idle progress_notify watcher: {resp:?}");
    assert!(resp.events.is_empty() && !resp.created && !resp.canceled);
    assert_eq!(resp.header.unwrap().revision, w.revision().0);
    assert_nothing_queued(&mut s, 100).await;

    // Events since the last tick elide the next notification...
    w.put("n", "1");
    let events = collect(&mut s, notify, 1).await;
    assert_eq!(revision_of(&events[0]), w.revision().0);
    let other = next(&mut s).await; // The quiet watcher's copy.
    assert_eq!(other.events.len(), 1);
    s.progress_tick();
    assert_nothing_queued(&mut s, 101).await;
    // ...and the one after reports again.
    s.progress_tick();
    let resp = next(&mut s).await;
    assert_eq!((resp.watch_id, resp.header.unwrap().revision), (notify, w.revision().0));
}

#[tokio::test]
async fn progress_request_answers_minus_one_only_when_every_watcher_is_synced() {
    let (_ctx, hub, mut w) = setup(tight_config());
    let mut s = hub.open_stream();
    // No watcher: answered (etcd stays silent here; see the module docs).
    s.request_progress();
    let resp = next(&mut s).await;
    assert_eq!((resp.watch_id, resp.header.unwrap().revision), (INVALID_WATCH_ID, 1));

    for i in 0..30 {
        w.put("h", &i.to_string());
    }
    let live = created(&mut s, create("h", "", 0)).await;
    s.request_progress();
    let resp = next(&mut s).await;
    assert_eq!((resp.watch_id, resp.header.unwrap().revision), (INVALID_WATCH_ID, 31));

    // A watcher replaying history: the request is dropped, not deferred.
    s.create(create("h", "", 2));
    s.request_progress();
    let resp = next(&mut s).await;
    assert!(resp.created, "nothing before the create's answer: {resp:?}");
    let historical = resp.watch_id;
    let want = w.expected("h", "", Revision(2), false);
    let got = collect(&mut s, historical, want.len()).await;
    assert_eq!(got, want);
    assert_eq!(hub.stats().synced, 2);
    w.put("h", "live");
    let counts = [(live, 1), (historical, 1)].into_iter().collect();
    collect_all(&mut s, &counts).await;
    s.request_progress();
    let resp = next(&mut s).await;
    assert_eq!((resp.watch_id, resp.header.unwrap().revision), (INVALID_WATCH_ID, 32));
}

#[tokio::test]
async fn a_compacted_start_is_created_then_canceled_with_the_compact_revision() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    for i in 0..30 {
        w.put("z", &i.to_string());
    }
    w.compact(Revision(20));
    let mut s = hub.open_stream();
    let id = created(&mut s, create("z", "", 5)).await;
    let resp = next(&mut s).await;
    assert!(resp.canceled && !resp.created && resp.events.is_empty(), "{resp:?}");
    assert_eq!((resp.watch_id, resp.compact_revision), (id, 20));
    assert_eq!(resp.header.unwrap().revision, 0, "as etcd's, the header has no revision");
    assert_eq!(hub.stats().watchers, 0);

    // At the compacted revision itself history is still there.
    let ok = created(&mut s, create("z", "", 20)).await;
    let want = w.expected("z", "", Revision(20), false);
    assert_eq!(collect(&mut s, ok, want.len()).await, want);

    // A negative start: refused at once with etcd's compacted error.
    s.create(create("z", "", -3));
    let resp = next(&mut s).await;
    assert!(resp.created && resp.canceled && resp.watch_id == INVALID_WATCH_ID, "{resp:?}");
    assert_eq!(resp.cancel_reason, "etcdserver: mvcc: required revision has been compacted");
}

#[tokio::test]
async fn watch_ids_follow_etcds_rules() {
    let config = WatchConfig { watchers_per_stream_max: 6, ..WatchConfig::default() };
    let (_ctx, hub, _w) = setup(config);
    let mut s = hub.open_stream();
    let mut ids = Vec::new();
    for watch_id in [0, 0, 3, 0, 0] {
        ids.push(created(&mut s, WatchCreateRequest { watch_id, ..create("i", "", 0) }).await);
    }
    assert_eq!(ids, vec![0, 1, 3, 2, 4], "auto ids count from 0 and skip ids in use");

    let refused = |reason: &str, resp: ringkv_api::etcdserverpb::WatchResponse| {
        assert!(resp.created && resp.canceled && resp.watch_id == INVALID_WATCH_ID, "{resp:?}");
        assert!(resp.cancel_reason.contains(reason), "{resp:?}");
    };
    s.create(WatchCreateRequest { watch_id: 3, ..create("i", "", 0) });
    refused("mvcc: duplicate watch ID provided on the WatchStream", next(&mut s).await);
    s.create(create("b", "a", 0));
    refused("mvcc: watcher range is empty", next(&mut s).await);
    s.create(create("b", "b", 0));
    refused("mvcc: watcher range is empty", next(&mut s).await);
    s.create(WatchCreateRequest { watch_id: -5, ..create("i", "", 0) });
    refused("negative", next(&mut s).await);
    created(&mut s, create("i", "", 0)).await;
    s.create(create("i", "", 0));
    refused("6 watchers", next(&mut s).await);

    // A canceled id is free again, for the client to choose.
    s.cancel(3);
    assert!(next(&mut s).await.canceled);
    assert_eq!(created(&mut s, WatchCreateRequest { watch_id: 3, ..create("i", "", 0) }).await, 3);
}

#[tokio::test]
async fn an_empty_key_watches_from_the_smallest_key() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let mut s = hub.open_stream();
    let all = created(&mut s, create("", "\0", 0)).await;
    let start = Revision(w.revision().0 + 1);
    w.put("\0", "smallest");
    w.put("m", "1");
    w.put("\u{7f}", "2");
    let want = w.expected("\0", "\0", start, false);
    assert_eq!(want.len(), 3);
    assert_eq!(collect(&mut s, all, 3).await, want);
}

#[tokio::test]
async fn a_slow_stream_never_blocks_publish_and_catches_up_from_history() {
    let config = tight_config();
    let stream_max = config.events_buffered_per_stream_max;
    let (_ctx, hub, w) = setup(config);
    let mut slow = hub.open_stream();
    let mut fast = hub.open_stream();
    let slow_id = created(&mut slow, create("s", "t", 0)).await;
    let fast_id = created(&mut fast, create("s", "t", 0)).await;
    let start = Revision(w.revision().0 + 1);

    // The writer publishes 600 revisions on its own thread while only the
    // fast stream is read: it must finish though the slow one never reads.
    let writes = std::thread::spawn(move || {
        let mut w = w;
        for i in 0..600 {
            match i % 10 {
                9 => w.run(txn(&[("s1", "t"), ("s2", "t"), ("s3", "t")])),
                _ => w.put(&format!("s{}", i % 4), &i.to_string()),
            };
        }
        w
    });
    let mut fast_events: Vec<mvccpb::Event> = Vec::new();
    while !writes.is_finished() || fast.buffered_events() > 0 {
        let resp =
            tokio::time::timeout(std::time::Duration::from_millis(50), fast.next_response()).await;
        if let Ok(resp) = resp {
            assert_eq!(resp.watch_id, fast_id);
            check_events_response(&resp, fast_events.last());
            fast_events.extend(resp.events);
        }
    }
    let w = writes.join().unwrap();
    let want = w.expected("s", "t", start, false);
    let rest = collect(&mut fast, fast_id, want.len() - fast_events.len()).await;
    fast_events.extend(rest);
    assert_eq!(fast_events, want);

    // The slow stream holds a bounded buffer and was moved to history.
    assert!(slow.buffered_events() <= stream_max + 3, "{}", slow.buffered_events());
    assert!(hub.stats().synced < 2, "the slow watcher left the live stream");
    let got = collect(&mut slow, slow_id, want.len()).await;
    assert_eq!(got, want);
    assert_eq!(hub.stats().synced, 2, "both are live again");
}

#[tokio::test]
async fn compaction_cancels_a_watcher_that_still_needs_the_history() {
    let (_ctx, hub, mut w) = setup(tight_config());
    let mut s = hub.open_stream();
    let id = created(&mut s, create("q", "", 0)).await;
    let start = Revision(w.revision().0 + 1);
    for i in 0..100 {
        w.put("q", &i.to_string());
    }
    assert_eq!(hub.stats().synced, 0, "fell behind");
    w.compact(Revision(60));
    let want = w.expected("q", "", start, false);
    let mut got: Vec<mvccpb::Event> = Vec::new();
    let cancel = loop {
        let resp = next(&mut s).await;
        assert_eq!(resp.watch_id, id);
        if resp.canceled {
            break resp;
        }
        check_events_response(&resp, got.last());
        got.extend(resp.events);
    };
    assert_eq!(cancel.compact_revision, 60);
    assert!(cancel.events.is_empty());
    assert!(!got.is_empty() && got.len() < want.len(), "{} of {}", got.len(), want.len());
    assert_eq!(got, want[..got.len()], "a gapless prefix before the cancel");
    assert!(revision_of(got.last().unwrap()) < 60);
    assert_eq!(hub.stats().watchers, 0);
}

#[tokio::test]
async fn fragment_watchers_get_large_revisions_in_pieces() {
    let bytes_max = 1000;
    let config = WatchConfig { response_bytes_max: bytes_max, ..WatchConfig::default() };
    let (_ctx, hub, mut w) = setup(config);
    let mut s = hub.open_stream();
    let frag =
        created(&mut s, WatchCreateRequest { fragment: true, ..create("f/", "f0", 0) }).await;
    let whole = created(&mut s, create("f/", "f0", 0)).await;
    let value = "v".repeat(300);
    let keys: Vec<String> = (0..10).map(|i| format!("f/{i}")).collect();
    let puts: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
    let revision = w.run(txn(&puts));
    w.put("f/small", "x");

    let mut pieces = Vec::new();
    loop {
        let resp = next(&mut s).await;
        assert_eq!(resp.watch_id, frag, "fragments are not interleaved: {resp:?}");
        assert_eq!(resp.header.as_ref().unwrap().revision, revision.0);
        assert!(!resp.events.is_empty());
        assert!(resp.encoded_len() < bytes_max || resp.events.len() == 1, "{}", resp.encoded_len());
        let last = !resp.fragment;
        pieces.push(resp);
        if last {
            break;
        }
    }
    assert!(pieces.len() >= 3, "10 × 300 bytes in pieces under 1,000: {}", pieces.len());
    let joined: Vec<mvccpb::Event> = pieces.into_iter().flat_map(|r| r.events).collect();
    assert_eq!(joined, w.expected("f/", "f0", revision, false)[..10]);

    let resp = next(&mut s).await;
    assert_eq!((resp.watch_id, resp.events.len(), resp.fragment), (whole, 10, false));
    // Small revisions are not fragmented.
    let resp = next(&mut s).await;
    assert_eq!((resp.watch_id, resp.events.len(), resp.fragment), (frag, 1, false));
}

#[tokio::test]
async fn many_watchers_on_many_streams_each_get_their_own_events() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let (streams, per_stream) = (12, 40);
    let mut opened = Vec::new();
    for s in 0..streams {
        let mut stream = hub.open_stream();
        let mut ids = HashMap::new();
        for i in 0..per_stream {
            let id = created(&mut stream, create(&format!("m{s}/{i}"), "", 0)).await;
            ids.insert(id, format!("m{s}/{i}"));
        }
        let prefix = created(&mut stream, create(&format!("m{s}/"), &format!("m{s}0"), 0)).await;
        opened.push((stream, ids, prefix));
    }
    assert_eq!(hub.stats().watchers, streams * (per_stream + 1));
    let start = Revision(w.revision().0 + 1);
    for i in (0..per_stream).rev() {
        for s in 0..streams {
            w.put(&format!("m{s}/{i}"), &format!("{s}.{i}"));
        }
    }
    for (s, (mut stream, ids, prefix)) in opened.into_iter().enumerate() {
        let mut want: HashMap<i64, Vec<mvccpb::Event>> =
            ids.iter().map(|(id, key)| (*id, w.expected(key, "", start, false))).collect();
        want.insert(prefix, w.expected(&format!("m{s}/"), &format!("m{s}0"), start, false));
        assert!(want.values().all(|e| !e.is_empty()));
        let counts = want.iter().map(|(id, e)| (*id, e.len())).collect();
        assert_eq!(collect_all(&mut stream, &counts).await, want, "stream {s}");
    }
    assert_eq!(hub.stats().streams, 0, "dropped streams leave the hub");
    assert_eq!(hub.stats().watchers, 0);
}

#[tokio::test]
async fn a_revision_gap_or_a_resync_sends_watchers_to_history() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let mut s = hub.open_stream();
    let id = created(&mut s, create("g", "", 0)).await;
    let start = Revision(w.revision().0 + 1);
    // Applied but never published, as a snapshot install would leave it.
    let unpublished = w.apply(put("g", "restored")).unwrap();
    w.log.push(unpublished);
    w.put("g", "after");
    assert_eq!(hub.stats().synced, 0);
    let want = w.expected("g", "", start, false);
    assert_eq!(want.len(), 2);
    assert_eq!(collect(&mut s, id, 2).await, want);
    assert_eq!(hub.stats().synced, 1);

    let skipped = w.apply(put("g", "skipped")).unwrap();
    w.log.push(skipped);
    hub.resync().unwrap();
    assert_eq!(
        hub.stats(),
        WatchStats { streams: 1, watchers: 1, synced: 0, revision: w.revision() }
    );
    w.put("g", "live again");
    let want = w.expected("g", "", start, false);
    assert_eq!(collect(&mut s, id, 2).await, want[2..]);
}

#[tokio::test]
async fn other_shards_and_old_revisions_are_ignored() {
    let (_ctx, hub, mut w) = setup(WatchConfig::default());
    let mut s = hub.open_stream();
    let id = created(&mut s, create("o", "", 0)).await;
    let batch = w.apply(put("o", "1")).unwrap();
    let elsewhere = WatchEvents { shard: ShardId(2), ..batch.clone() };
    hub.publish(&elsewhere);
    assert_eq!(hub.revision(), Revision(1));
    hub.publish(&batch);
    hub.publish(&batch);
    let got = collect(&mut s, id, 1).await;
    assert_eq!(revision_of(&got[0]), 2);
    assert_nothing_queued(&mut s, 9).await;
}

#[tokio::test]
async fn a_replay_that_read_ahead_of_publish_skips_those_revisions_when_published() {
    // The node commits an entry to the store before it publishes it, so a
    // history page can hold revisions the hub has not seen yet.
    let (_ctx, hub, mut w) = setup(tight_config());
    w.put("r", "1");
    w.put("r", "2");
    let ahead = w.apply(put("r", "committed, not yet published")).unwrap();
    let mut s = hub.open_stream();
    let id = created(&mut s, create("r", "", 2)).await;
    let got = collect(&mut s, id, 3).await;
    assert_eq!(got.iter().map(revision_of).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(hub.stats().synced, 1, "joined although revision 4 is not published yet");
    hub.publish(&ahead);
    w.log.push(ahead);
    w.put("r", "5");
    let got = collect(&mut s, id, 1).await;
    assert_eq!(revision_of(&got[0]), 5, "revision 4 is not delivered twice");
    assert_nothing_queued(&mut s, 50).await;
}
