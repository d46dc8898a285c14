use ringkv_consensus::ShardId;
use ringkv_ring::{HashKeyRule, Keyspace};

use super::view::merge_events;
use super::*;
use crate::metrics::events::{Event, EventKind};
use crate::metrics::{CounterSample, MetricsSnapshot};

/// The first hash of shard `s` of `count` (multiply-shift's boundary).
fn first_hash(s: u64, count: u32) -> u64 {
    let numerator = u128::from(s - 1) << 64;
    let count = u128::from(count);
    u64::try_from(numerator.div_ceil(count)).unwrap()
}

#[test]
fn keyspace_arcs_are_the_ring_crates_slices() {
    for count in [1u32, 2, 3, 7, 8, 64, 1000] {
        let keyspace = Keyspace::new(count, HashKeyRule::WholeKey).unwrap();
        let mut end_of_previous = 0.0;
        for s in 1..=u64::from(count) {
            let [start, end] = keyspace_arc(s, count);
            assert!((start - end_of_previous).abs() < 1e-12, "arcs tile the circle");
            end_of_previous = end;
            // The arc starts where the ring crate's shard starts.
            let h = first_hash(s, count);
            assert_eq!(keyspace.shard_of_hash(h), ringkv_ring::ShardId(s), "{s} of {count}");
            if s > 1 {
                assert_eq!(keyspace.shard_of_hash(h - 1), ringkv_ring::ShardId(s - 1));
            }
            assert!((h as f64 / 2f64.powi(64) - start).abs() < 1e-9, "{s} of {count}");
        }
        assert!((end_of_previous - 1.0).abs() < 1e-12);
    }
    assert_eq!(keyspace_arc(1, 1), [0.0, 1.0]);
}

fn view_with(events: Vec<Event>) -> NodeView {
    NodeView {
        member_id: "0000000000000001".into(),
        name: "m0".into(),
        zone: None,
        cluster_id: "00000000000000aa".into(),
        engine: "raft".into(),
        version: "0.1.0".into(),
        healthy: true,
        health_reason: String::new(),
        shards: Vec::new(),
        members: Vec::new(),
        metrics: MetricsSnapshot::default(),
        history: vec![CounterSample {
            at_unix_ms: 5,
            latency_buckets: vec![1, 2],
            ..Default::default()
        }],
        events,
        now_unix_ms: 0,
    }
}

fn elected(at: u64, term: u64, leader: &str) -> Event {
    Event {
        at_unix_ms: at,
        shard: ShardId(1).0,
        term,
        kind: EventKind::LeaderElected { leader: leader.into(), previous: None },
    }
}

#[test]
fn merged_events_keep_one_per_change_at_its_earliest_sighting() {
    let a = view_with(vec![elected(105, 2, "a"), elected(300, 3, "b")]);
    let b = view_with(vec![elected(100, 2, "a"), elected(310, 3, "b"), elected(400, 4, "c")]);
    let merged = merge_events([&a, &b].into_iter());
    let seen: Vec<(u64, u64)> = merged.iter().map(|e| (e.at_unix_ms, e.term)).collect();
    assert_eq!(seen, vec![(100, 2), (300, 3), (400, 4)]);

    let many: Vec<Event> =
        (0..(CLUSTER_EVENTS_MAX as u64 + 5)).map(|i| elected(i, i, "a")).collect();
    let merged = merge_events([&view_with(many)].into_iter());
    assert_eq!(merged.len(), CLUSTER_EVENTS_MAX);
    assert_eq!(merged[0].term, 5, "the oldest are dropped");
}

#[test]
fn node_views_survive_a_round_trip_through_json() {
    let view = view_with(vec![elected(1, 2, "a")]);
    let json = serde_json::to_string(&view).unwrap();
    let back: NodeView = serde_json::from_str(&json).unwrap();
    assert_eq!(back, view);
}

/// A member that predates zones sends views without them: they read as
/// no zone; a zone, member's and own, survives the round trip.
#[test]
fn zones_are_optional_in_node_views() {
    let mut view = view_with(Vec::new());
    view.members.push(MemberView {
        id: view.member_id.clone(),
        name: "m0".into(),
        client_urls: Vec::new(),
        peer_urls: Vec::new(),
        is_learner: false,
        zone: Some("a".into()),
    });
    view.zone = Some("a".into());
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(serde_json::from_value::<NodeView>(json.clone()).unwrap(), view);
    let mut old = json;
    old.as_object_mut().unwrap().remove("zone");
    old["members"][0].as_object_mut().unwrap().remove("zone");
    let back: NodeView = serde_json::from_value(old).unwrap();
    assert_eq!((back.zone, back.members[0].zone.clone()), (None, None));
}

#[test]
fn the_page_loads_only_its_own_files() {
    let html = assets::INDEX_HTML;
    assert!(html.contains(r#"src="/dashboard/app.js""#));
    assert!(html.contains(r#"href="/dashboard/style.css""#));
    for text in [assets::INDEX_HTML, assets::APP_JS, assets::STYLE_CSS] {
        for external in ["http://", "https://", "//fonts.", "@import", "cdn"] {
            // The SVG namespace is a name, not a fetch.
            let hits = text.matches(external).count()
                - text.matches("http://www.w3.org/2000/svg").count()
                    * usize::from(external == "http://");
            assert_eq!(hits, 0, "the dashboard must not load {external}…");
        }
    }
    assert!(assets::APP_JS.contains("/dashboard/api/cluster"));
}
