//! Zones acted on by real processes (`--zone`, issue #7): six
//! `ringkv server` members in three zones, two per zone, found a cluster
//! of 16 shards with `--placement-moves` and three replicas per shard.
//! The founders place without zones (each knows only its own); once every
//! member has published its zone, the shards move until every shard's
//! three replicas are in three distinct zones, as `ringkv ctl shards`
//! shows. `ringkv ctl status` shows each member's zone, and a member
//! restarted with another zone shows the new one.
#![allow(clippy::unwrap_used, reason = "a test")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use support::{ProcessCluster, Timing, ringkv_ctl_json, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(120);

/// Members, zones, shards and replicas per shard.
const MEMBERS: usize = 6;
const ZONES: usize = 3;
const SHARDS: usize = 16;
const R: usize = 3;

/// Member `i`'s zone.
fn zone(i: usize) -> String {
    format!("zone-{}", i % ZONES)
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

/// Each data shard's replicas (member names) with their zones as
/// `ctl shards` reports them, once every data shard is on R members with
/// no move under way; `None` before.
fn settled(endpoints: &str) -> Option<BTreeMap<u64, Vec<(String, String)>>> {
    let view = ringkv_ctl_json(endpoints, &["shards"])?;
    let mut out = BTreeMap::new();
    for s in view["shards"].as_array()? {
        if s["metadata"].as_bool()? {
            continue;
        }
        let replicas = strings(&s["replicas"])?;
        let zones = strings(&s["replica_zones"])?;
        if replicas.len() != R || !s["learners"].as_array()?.is_empty() || s["moving"].as_bool()? {
            return None;
        }
        out.insert(s["id"].as_u64()?, replicas.into_iter().zip(zones).collect());
    }
    (out.len() == SHARDS).then_some(out)
}

#[test]
fn every_shard_s_replicas_end_in_three_zones() {
    let shards = format!("--shards={SHARDS}");
    let mut cluster = ProcessCluster::start_each(
        MEMBERS,
        &[&shards, "--placement-moves", &format!("--replicas={R}")],
        Timing::Fast,
        |i| vec![format!("--zone={}", zone(i))],
    )
    .unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let zone_of: BTreeMap<String, String> =
        (0..MEMBERS).map(|i| (cluster.members[i].name.clone(), zone(i))).collect();

    let endpoints = cluster.endpoints();
    let mut last = None;
    let spread = wait_until(WAIT, || {
        last = settled(&endpoints);
        last.as_ref().is_some_and(|placement| {
            placement.values().all(|replicas| {
                // The zones the members were started with, not only the
                // ones `ctl shards` reports.
                let zones: BTreeSet<&String> = replicas.iter().map(|(n, _)| &zone_of[n]).collect();
                zones.len() == R
            })
        })
    });
    assert!(spread, "shards never spanned {R} zones: {last:#?}");
    for (shard, replicas) in last.unwrap() {
        for (name, reported) in replicas {
            assert_eq!(reported, zone_of[&name], "shard {shard}: {name}'s zone as ctl shards says");
        }
    }

    let status = ringkv_ctl_json(&endpoints, &["status"]).unwrap();
    let reported: BTreeMap<String, String> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_owned(), m["zone"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(reported, zone_of);

    // A restart with another zone replaces the recorded one.
    let last_member = MEMBERS - 1;
    cluster.stop(last_member, Duration::from_secs(10));
    cluster.members[last_member].own_flags = vec!["--zone=zone-moved".to_owned()];
    cluster.restart(last_member).unwrap();
    let name = cluster.members[last_member].name.clone();
    let moved = wait_until(WAIT, || {
        let Some(status) = ringkv_ctl_json(&cluster.endpoints(), &["status"]) else {
            return false;
        };
        status["members"].as_array().is_some_and(|members| {
            members.iter().any(|m| m["name"] == name.as_str() && m["zone"] == "zone-moved")
        })
    });
    assert!(moved, "{name}'s new zone never showed: {}", cluster.log(last_member));
}
