//! Placement acted on (ADR 0002, step 2, `--placement-moves`): beyond R
//! voting members each data shard moves to its target's nodes (a new
//! replica joins as a learner, catches up, is promoted; the old one is
//! removed and its node drops its data), and no write is lost; a member
//! that holds no replica of a shard answers `NotHosted` with the shard's
//! holders; lease grants reach shards the granting member does not hold;
//! a member cannot be removed while a shard would lose its quorum; a
//! member unheard for `--down-timeout` has its shards re-created on the
//! others and drops them when it returns; a drained member's shards move
//! to the others before it is removed.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::testing::Cluster;
use ringkv_node::{Engine, NodeError, Reply, Request, replica_id};
use ringkv_storage::mvcc::{PutRequest, RangeRequest, Response};

/// Keys written before the moves, read back after.
const KEYS: usize = 40;
/// Times a read that met a leadership change is sent again.
const READ_RETRIES: usize = 5;

fn moving<E: Engine>(n: usize, seed: u64) -> Cluster<E> {
    cluster_with::<E>(n, seed, &|c| {
        c.keyspace = keyspace();
        c.placement_moves = true;
        c.snapshot_count = 50;
        c.snapshot_catch_up_entries = 10;
        c.down_timeout = c.election_timeout() * 4;
    })
}

fn shard_of(key: &str) -> ShardId {
    ShardId(keyspace().shard_of(key.as_bytes()).0)
}

/// Whether every data shard's replicas are on exactly its target's nodes,
/// as every running node sees it, with a leader whose configuration is
/// the target and every holder caught up.
fn placed<E: Engine>(c: &Cluster<E>) -> bool {
    let running = c.running();
    let Some(any) = running.first() else { return false };
    let targets = c.node(*any).shard_targets();
    if targets.len() != data_shards().len() {
        return false;
    }
    targets.iter().all(|(&s, target)| {
        let Some(l) = c.leader_of(s) else { return false };
        let st = c.node(l).replica_status(s).unwrap();
        let mut voters: Vec<NodeId> =
            st.membership.voters.iter().map(|&r| c.node(l).replica_node(r)).collect();
        voters.sort_unstable();
        voters == *target
            && st.membership.learners.is_empty()
            && running.iter().all(|&id| c.node(id).hosts(s) == target.contains(&id))
            && target.iter().all(|&id| {
                running.contains(&id)
                    && c.node(id).shard_status(s).is_some_and(|h| h.applied_index == st.applied)
            })
    })
}

fn write_keys<E: Engine>(c: &mut Cluster<E>, tag: &str) -> BTreeMap<String, String> {
    let leader = c.wait_leader(STEPS);
    (0..KEYS)
        .map(|i| {
            let (k, v) = (format!("k{i}"), format!("{tag}-{i}"));
            // A shard whose leadership moves is briefly unavailable.
            let mut tries = 0;
            while let Err(e) = put_routed(c, leader, &k, &v) {
                tries += 1;
                assert!(e.is_indeterminate() && tries < 5, "{k}: {e}");
            }
            (k, v)
        })
        .collect()
}

/// Every key reads back with its value, linearizably, from every node
/// that holds its shard, and `NotHosted` naming those nodes elsewhere.
fn check_keys<E: Engine>(c: &mut Cluster<E>, keys: &BTreeMap<String, String>) {
    for (k, v) in keys {
        let shard = shard_of(k);
        for id in c.running() {
            // A read is safe to repeat: leadership may move under it (the
            // leader balance hands shards back to a member that returned).
            let mut got = get_on(c, id, k, false);
            for _ in 0..READ_RETRIES {
                if !matches!(got, Err(NodeError::LeaderChanged | NodeError::NoLeader)) {
                    break;
                }
                got = get_on(c, id, k, false);
            }
            if c.node(id).hosts(shard) {
                assert_eq!(got.unwrap().unwrap().value, b(v), "{k} on {id}");
            } else {
                let Err(NodeError::NotHosted { shard: s, hosts }) = got else {
                    panic!("{k} on {id}, which does not hold {shard}: {got:?}")
                };
                assert_eq!(s, shard);
                // The holders as the shard's leader last reported them: a
                // request sent on to them finds the shard.
                let holding: Vec<NodeId> =
                    c.running().into_iter().filter(|&h| c.node(h).hosts(shard)).collect();
                assert!(hosts.iter().any(|h| holding.contains(h)), "{k} on {id}: {hosts:?}");
            }
        }
    }
}

fn a_fourth_member_moves_every_shard_to_its_target_and_loses_nothing<E: Engine>() {
    // Three founders hold every shard; a fourth voter makes the metadata
    // leader place each on three of the four.
    let mut c = moving::<E>(3, 101);
    wait_leaders(&mut c);
    let mut keys = write_keys(&mut c, "three");
    add_voter(&mut c, 4, 101, |cfg| cfg.placement_moves = true);
    keys.extend(write_keys(&mut c, "four"));
    assert!(c.run_until(STEPS * 20, placed), "shards never reached their targets");
    // Each data shard on R = 3 of the 4 nodes: 12 replicas, not 16.
    let held: usize = c
        .running()
        .iter()
        .map(|&id| data_shards().into_iter().filter(|&s| c.node(id).hosts(s)).count())
        .sum();
    assert_eq!(held, data_shards().len() * 3, "replicas held");
    check_keys(&mut c, &keys);
    // A restart keeps the shards a node dropped dropped.
    let victim = c.running()[1];
    let before: Vec<bool> = data_shards().iter().map(|&s| c.node(victim).hosts(s)).collect();
    c.crash(victim);
    c.restart(victim).unwrap();
    c.run(STEPS);
    let after: Vec<bool> = data_shards().iter().map(|&s| c.node(victim).hosts(s)).collect();
    assert_eq!(before, after, "{victim} holds other shards after a restart");
    assert!(c.run_until(STEPS * 10, placed));
    check_keys(&mut c, &keys);
}

fn a_fifth_member_takes_its_share_and_nothing_is_lost<E: Engine>() {
    // Four founders: each shard starts on three of them (no move).
    let mut c = moving::<E>(4, 102);
    wait_leaders(&mut c);
    assert!(c.run_until(STEPS * 20, placed), "four-member placement");
    let mut keys = write_keys(&mut c, "before");
    let fifth = add_voter(&mut c, 5, 102, |cfg| cfg.placement_moves = true);
    keys.extend(write_keys(&mut c, "during"));
    let settled = c.run_until(STEPS * 30, |c| {
        placed(c) && c.node(fifth).shard_targets().values().any(|t| t.contains(&fifth))
    });
    assert!(settled, "shards never reached their five-member targets");
    assert!(
        data_shards().iter().any(|&s| c.node(fifth).hosts(s)),
        "the fifth member holds nothing"
    );
    check_keys(&mut c, &keys);
    // A lease granted through any member reaches every shard, those the
    // granting member does not hold too: a put with it works on each.
    let granter = c.running()[0];
    let Reply::Kv(Response::LeaseGrant(g)) =
        c.call(granter, Request::LeaseGrant { id: Default::default(), ttl: 60 }, STEPS).unwrap()
    else {
        panic!("no lease")
    };
    for i in 0..KEYS {
        let key = format!("leased{i}");
        let holder = c.node(granter).shard_replica_nodes(shard_of(&key))[0];
        let put = PutRequest { key: b(&key), value: b("v"), lease: g.id, ..PutRequest::default() };
        c.call(holder, Request::Put(put), STEPS).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let req = RangeRequest { key: b("leased0"), ..RangeRequest::default() };
    let holder = c.node(granter).shard_replica_nodes(shard_of("leased0"))[0];
    let Reply::Range(r) = c.call(holder, Request::Range(req), STEPS).unwrap() else { panic!() };
    assert_eq!(r.kvs[0].lease, g.id);
}

/// A running node other than `not` that holds some data shard.
fn holder_not<E: Engine>(c: &Cluster<E>, not: NodeId) -> NodeId {
    c.running()
        .into_iter()
        .find(|&id| id != not && data_shards().iter().any(|&s| c.node(id).hosts(s)))
        .unwrap()
}

fn a_member_whose_removal_would_strand_a_shard_is_refused<E: Engine>() {
    // Two replicas per shard: every shard a member holds has one other
    // voter, which cannot make a quorum alone.
    let mut c = cluster_with::<E>(3, 103, &|c| {
        c.keyspace = keyspace();
        c.placement_moves = true;
        c.replicas = 2;
    });
    wait_leaders(&mut c);
    assert!(c.run_until(STEPS * 20, |c| {
        c.running().iter().all(|&id| c.node(id).shard_targets().len() == data_shards().len())
            && data_shards().iter().all(|&s| {
                c.leader_of(s).is_some_and(|l| {
                    c.node(l).replica_status(s).unwrap().membership.voters.len() == 2
                })
            })
    }));
    let leader = c.wait_leader(STEPS);
    let victim = holder_not(&c, leader);
    // Once every shard's leader has reported its configuration.
    assert!(c.run_until(STEPS * 10, |c| c.node(leader).shards_moving().is_empty()));
    let err = c.call(leader, Request::MemberRemove(victim), STEPS).unwrap_err();
    assert!(matches!(err, NodeError::RemoveStrandsShard { voters: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("without a quorum"), "{err}");
    assert!(c.node(victim).stopped().is_none());
}

fn a_member_down_past_the_timeout_has_its_shards_re_created_elsewhere<E: Engine>() {
    let mut c = moving::<E>(5, 104);
    wait_leaders(&mut c);
    assert!(c.run_until(STEPS * 20, placed), "five-member placement");
    let keys = write_keys(&mut c, "before");
    let leader = c.wait_leader(STEPS);
    let victim = holder_not(&c, leader);
    let held: Vec<ShardId> =
        data_shards().into_iter().filter(|&s| c.node(victim).hosts(s)).collect();
    c.crash(victim);
    // Every shard gets three live replicas again, none on the victim.
    let healed = c.run_until(STEPS * 40, |c| {
        placed(c)
            && c.running().iter().all(|&id| {
                c.node(id).shard_targets().values().all(|t| t.len() == 3 && !t.contains(&victim))
            })
    });
    assert!(healed, "{victim}'s shards {held:?} were not re-created elsewhere");
    check_keys(&mut c, &keys);
    // Back, the victim learns its replicas moved and drops them; its
    // share comes back to it as new replicas under fresh ids (the old ones
    // may have promised votes the new ones never made).
    c.restart(victim).unwrap();
    let replaced = c.run_until(STEPS * 60, |c| {
        placed(c)
            && c.node(victim).shard_targets().values().any(|t| t.contains(&victim))
            && held.iter().all(|&s| c.node(victim).shard_replica_id(s) != Some(victim))
    });
    assert!(replaced, "{victim} did not get its share back under fresh replica ids");
    let back: Vec<ShardId> = held.iter().copied().filter(|&s| c.node(victim).hosts(s)).collect();
    assert!(!back.is_empty(), "no shard came back to {victim}");
    for &s in &back {
        let rid = c.node(victim).shard_replica_id(s).unwrap();
        assert_ne!(rid, victim, "{s} back on {victim} under its old id");
        assert_eq!(c.node(victim).replica_node(rid), victim);
        assert!((1..4).any(|k| rid == replica_id(victim, s, k)), "{s}: {rid}");
    }
    check_keys(&mut c, &keys);
    // A restart reopens each new replica under the id it was created with.
    let ids: Vec<Option<NodeId>> =
        data_shards().iter().map(|&s| c.node(victim).shard_replica_id(s)).collect();
    c.crash(victim);
    c.restart(victim).unwrap();
    let again: Vec<Option<NodeId>> =
        data_shards().iter().map(|&s| c.node(victim).shard_replica_id(s)).collect();
    assert_eq!(ids, again, "replica ids after a restart");
    assert!(c.run_until(STEPS * 20, placed));
    check_keys(&mut c, &keys);
}

fn a_replica_given_back_to_a_node_reopens_without_its_predecessors_state<E: Engine>() {
    // A fourth member gets its shards by snapshot (each install leaves a
    // record of the restored snapshot on its disk).
    let small_snapshots = |c: &mut ringkv_node::NodeConfig| {
        c.keyspace = keyspace();
        c.placement_moves = true;
        c.snapshot_count = 4;
        c.snapshot_catch_up_entries = 2;
        c.down_timeout = c.election_timeout() * 4;
    };
    let mut c = cluster_with::<E>(3, 105, &small_snapshots);
    wait_leaders(&mut c);
    let mut keys = write_keys(&mut c, "three");
    let fourth = add_voter(&mut c, 4, 105, small_snapshots);
    keys.extend(write_keys(&mut c, "four"));
    assert!(c.run_until(STEPS * 20, placed), "four-member placement");
    let held: Vec<ShardId> =
        data_shards().into_iter().filter(|&s| c.node(fourth).hosts(s)).collect();
    assert!(!held.is_empty());
    let restored: Vec<ShardId> = held
        .iter()
        .copied()
        .filter(|&s| c.node(fourth).shard_status(s).unwrap().snapshots_installed > 0)
        .collect();
    assert!(!restored.is_empty(), "{fourth} got its shards without a snapshot");
    // Down past the timeout: its shards go back to the founders.
    c.crash(fourth);
    let healed = c.run_until(STEPS * 40, |c| {
        placed(c) && c.node(c.running()[0]).shard_targets().values().all(|t| !t.contains(&fourth))
    });
    assert!(healed, "{fourth}'s shards were not re-created elsewhere");
    // Back: it drops the old replicas and is given new ones. Stopped
    // the moment one exists (before its snapshot arrives), it must reopen
    // as the new, empty replica, not over what its predecessor restored.
    c.restart(fourth).unwrap();
    let fresh = |c: &Cluster<E>| {
        restored.iter().any(|&s| {
            let n = c.node(fourth);
            // Heard from its leader (so its WAL holds its term), not yet
            // sent the snapshot.
            n.shard_replica_id(s).is_some_and(|r| r != fourth)
                && n.shard_status(s).is_some_and(|st| st.snapshots_installed == 0)
                && n.replica_status(s).is_some_and(|st| st.leader.is_some())
        })
    };
    assert!(c.run_until(STEPS * 40, fresh), "no shard came back to {fourth}");
    c.crash(fourth);
    c.restart(fourth).unwrap_or_else(|e| panic!("{fourth} reopening its new replicas: {e}"));
    assert!(c.run_until(STEPS * 40, placed), "placement after the restart");
    check_keys(&mut c, &keys);
}

/// `--move-bytes-per-second` of the throttled move below: small against
/// the shards' snapshots, so that the bucket, not the moves, sets the pace.
const MOVE_RATE: u64 = 4_096;

/// Snapshot bytes per message there: several chunks per shard.
const MOVE_CHUNK: u64 = 1_024;

/// Whether every sender's snapshot bytes, over every interval between two
/// readings, stay within the bucket's bound: a burst (`MOVE_BURST` of the
/// rate), the rate times the interval (plus one step: a frame is counted
/// when delivered, a step after it left), and one chunk (the bucket lets
/// a chunk out whenever its balance is not negative). Returns the worst
/// excess, if any: `(sender, from, to, bytes, bound)`.
fn over_bound(
    sent: &BTreeMap<NodeId, Vec<(Duration, u64)>>,
    step: Duration,
) -> Option<(NodeId, Duration, Duration, u64, u64)> {
    let burst = MOVE_RATE * ringkv_node::MOVE_BURST.as_secs();
    for (&from, readings) in sent {
        for (i, &(t0, _)) in readings.iter().enumerate() {
            // The bytes delivered at t0 count too: the total before them.
            let before = if i == 0 { 0 } else { readings[i - 1].1 };
            for &(t1, total1) in &readings[i..] {
                let window = (t1 - t0 + step).as_millis() as u64;
                let bound = burst + MOVE_RATE * window / 1_000 + MOVE_CHUNK;
                if total1 - before > bound {
                    return Some((from, t0, t1, total1 - before, bound));
                }
            }
        }
    }
    None
}

/// The fourth-member move of the test above, with snapshot bytes
/// `rate`-limited (0: unlimited); returns the snapshot bytes each sender
/// delivered, over time, once every shard is placed and every key reads
/// back.
fn throttled_move<E: Engine>(rate: u64) -> (BTreeMap<NodeId, Vec<(Duration, u64)>>, Duration) {
    let edit = move |c: &mut ringkv_node::NodeConfig| {
        c.keyspace = keyspace();
        c.placement_moves = true;
        c.snapshot_count = 20;
        c.snapshot_catch_up_entries = 5;
        c.move_bytes_per_second = rate;
        c.snapshot_message_bytes = MOVE_CHUNK;
    };
    let mut c = cluster_with::<E>(3, 107, &edit);
    wait_leaders(&mut c);
    // Values large enough that each shard's snapshot is several chunks.
    let value = "v".repeat(600);
    let mut keys = write_keys(&mut c, &value);
    keys.extend(write_keys(&mut c, &format!("{value}-again")));
    add_voter(&mut c, 4, 107, edit);
    assert!(c.run_until(STEPS * 40, placed), "shards never reached their targets");
    // Leaders move for balance once the shards are placed: a read in
    // flight then fails with `LeaderChanged`, which `check_keys` does not
    // retry.
    c.run(STEPS);
    check_keys(&mut c, &keys);
    let step = c.config(c.running()[0]).tick_interval;
    (c.snapshot_bytes_from.clone(), step)
}

fn moves_send_snapshot_bytes_no_faster_than_the_limit<E: Engine>() {
    let (sent, step) = throttled_move::<E>(MOVE_RATE);
    let moved: u64 = sent.values().map(|r| r.last().map_or(0, |&(_, t)| t)).sum();
    // The scenario must move more than the bound allows at once, or the
    // check below could not fail.
    let burst = MOVE_RATE * ringkv_node::MOVE_BURST.as_secs();
    assert!(moved > 2 * (burst + MOVE_CHUNK), "only {moved} snapshot bytes moved");
    assert_eq!(over_bound(&sent, step), None, "the limit was exceeded");
    // Unlimited, the same moves go faster than the limit allows.
    let (sent, step) = throttled_move::<E>(0);
    assert!(over_bound(&sent, step).is_some(), "unthrottled moves stayed within the limit");
}

fn held_by<E: Engine>(c: &Cluster<E>, on: NodeId, member: NodeId) -> Option<Vec<ShardId>> {
    let status = c.node(on).drain_status();
    status.into_iter().find(|m| m.member == member).map(|m| m.shards)
}

fn a_drained_member_leaves_every_shard_before_its_removal<E: Engine>() {
    // Four founders, R = 3: each shard on three of them.
    let mut c = moving::<E>(4, 105);
    wait_leaders(&mut c);
    assert!(c.run_until(STEPS * 20, placed), "four-member placement");
    let keys = write_keys(&mut c, "before");
    let leader = c.wait_leader(STEPS);
    // Once every shard's leader has reported its configuration.
    assert!(c.run_until(STEPS * 10, |c| c.node(leader).shards_moving().is_empty()));
    let victim = holder_not(&c, leader);
    let before = held_by(&c, leader, victim).unwrap();
    assert!(!before.is_empty(), "{victim} holds nothing to drain");
    let unknown = NodeId(0xdead);
    let drain = |member, draining| Request::Drain { member, draining };
    let err = c.call(leader, drain(unknown, true), STEPS).unwrap_err();
    assert!(matches!(err, NodeError::DrainUnknownMember { member } if member == unknown));
    c.call(leader, drain(victim, true), STEPS).unwrap();
    // A second drain would leave two members for three replicas.
    let other = c.running().into_iter().find(|&id| id != victim && id != leader).unwrap();
    let err = c.call(leader, drain(other, true), STEPS).unwrap_err();
    assert!(matches!(err, NodeError::DrainTooFewMembers { left: 2, replicas: 3, .. }), "{err:?}");
    let drained = c.run_until(STEPS * 40, |c| {
        placed(c)
            && c.running().iter().all(|&id| held_by(c, id, victim).is_some_and(|s| s.is_empty()))
    });
    assert!(drained, "{victim} still holds {:?}", held_by(&c, leader, victim));
    // Every shard's reported configuration leaves it, and its leader's.
    for s in data_shards() {
        let l = c.leader_of(s).unwrap();
        assert!(!c.node(l).shard_replica_nodes(s).contains(&victim), "{s}");
        let status = c.node(l).replica_status(s).unwrap();
        assert_eq!(status.membership.voters.len(), 3, "{s}");
        assert!(!status.membership.members().contains(&victim), "{s}");
        assert!(!c.node(victim).hosts(s), "{victim} still hosts {s}");
    }
    check_keys(&mut c, &keys);
    // Removal now strands nothing; the drain ends with the member.
    let leader = c.wait_leader(STEPS);
    let removed = c.call(leader, Request::MemberRemove(victim), STEPS);
    assert!(removed.is_ok(), "{removed:?}");
    assert!(c.run_until(STEPS, |c| c.node(victim).stopped().is_some()));
    c.crash(victim);
    assert!(c.run_until(STEPS * 10, |c| {
        c.running().iter().all(|&id| c.node(id).drain_status().iter().all(|m| !m.draining))
    }));
    check_keys(&mut c, &keys);
}

fn a_drain_without_placement_moves_is_refused<E: Engine>() {
    let mut c = sharded::<E>(3, 106);
    let leader = wait_leaders(&mut c);
    let victim = c.running().into_iter().find(|&id| id != leader).unwrap();
    let err = c.call(leader, Request::Drain { member: victim, draining: true }, STEPS);
    assert!(matches!(err, Err(NodeError::DrainNeedsPlacementMoves)), "{err:?}");
    assert!(c.node(leader).drain_status().iter().all(|m| !m.draining));
}

engine_tests!(
    a_drained_member_leaves_every_shard_before_its_removal,
    a_replica_given_back_to_a_node_reopens_without_its_predecessors_state,
    a_drain_without_placement_moves_is_refused,
    a_member_down_past_the_timeout_has_its_shards_re_created_elsewhere,
    a_fourth_member_moves_every_shard_to_its_target_and_loses_nothing,
    a_fifth_member_takes_its_share_and_nothing_is_lost,
    a_member_whose_removal_would_strand_a_shard_is_refused,
    moves_send_snapshot_bytes_no_faster_than_the_limit,
);
