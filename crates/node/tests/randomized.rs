//! Randomized cluster runs: random writes on random nodes while nodes
//! crash (unsynced data lost or torn) and restart, the network partitions
//! and loses frames, and snapshots compact the logs; then every fault is
//! healed and the run must converge.
//!
//! Checked at the end of every run:
//! * every acknowledged put is in every node's history at the revision it
//!   was acknowledged with, with its value;
//! * every linearizable read (on any node) is served at a revision at least
//!   that of the latest put of its key acknowledged before it was submitted;
//! * no two acknowledged puts share a revision;
//! * every node holds the same state (hash of the whole shard and HashKV).
//!
//! One seed in four confirms reads with leader leases instead of ReadIndex
//! (every node reads the harness's one clock, so leases are safe there).
//!
//! Frames are also delayed so that they overtake each other (a read index
//! confirmation can arrive before the commit it covers). Leases are granted,
//! attached to keys, kept alive and left to expire along the way, so
//! expiry revokes and checkpoints run under the same faults.
//!
//! The same runs are made on a cluster of four data shards beside the
//! metadata group (`--shards 4`): then revisions are unique per shard,
//! each key is checked in its own shard, and every group must converge.
//!
//! Every run is made once per engine (`raft::…` and `paxos::…`).
//! `RINGKV_NODE_SEEDS=<n>` runs seeds `0..n` per engine (default 8, kept
//! fast); `RINGKV_NODE_SEED=<s>` runs only seed `s`. A failure prints the
//! command that replays it.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::*;
use ringkv_consensus::{DetRng, NodeId, ReadMode, ShardId};
use ringkv_node::Engine;
use ringkv_node::testing::Cluster;
use ringkv_node::{Reply, Request, Token};
use ringkv_ring::{HashKeyRule, Keyspace};
use ringkv_storage::mvcc::{LeaseId, PutRequest, RangeRequest, Response, Revision};

/// Seeds run by default.
const SEEDS_DEFAULT: u64 = 8;
/// Seeds run by default on the sharded cluster (five groups per node make
/// each run slower).
const SHARDED_SEEDS_DEFAULT: u64 = 3;
/// Data shards of the sharded runs.
const SHARDS: u32 = 4;
/// Steps with faults.
const FAULT_STEPS: usize = 400;

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("RINGKV_NODE_SEED") {
        return vec![s.parse().expect("RINGKV_NODE_SEED is a number")];
    }
    let n = std::env::var("RINGKV_NODE_SEEDS").map_or(default, |v| v.parse().unwrap());
    (0..n).collect()
}

struct Acked {
    key: String,
    value: String,
    revision: Revision,
}

fn run<E: Engine>(seed: u64, shards: u32) {
    let nodes = if seed % 3 == 2 { 5 } else { 3 };
    let keyspace = Keyspace::new(shards, HashKeyRule::WholeKey).unwrap();
    let shard_of = |key: &str| ShardId(keyspace.shard_of(key.as_bytes()).0);
    let hosted = hosted_shards(shards);
    let mut c = cluster_with::<E>(nodes, seed, &|cfg| {
        cfg.keyspace = keyspace;
        cfg.snapshot_count = 40;
        cfg.snapshot_catch_up_entries = 10;
        cfg.snapshot_chunks_per_round = 1 + (seed % 2) as usize;
        cfg.lease_checkpoint_interval = std::time::Duration::from_secs(3);
        if seed % 4 == 3 {
            // Leader leases for reads: safe here, every node reads one clock.
            cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
        }
    });
    let mut rng = DetRng::new(seed ^ 0x5eed);
    let ids = c.ids();
    // Start with frames overtaking each other; the dice turn it off and on.
    c.net.set_delay(150_000, 4);
    let mut down: Vec<NodeId> = Vec::new();
    let mut pending: Vec<(NodeId, Token, String, String)> = Vec::new();
    let mut acked: Vec<Acked> = Vec::new();
    let mut n = 0u64;
    // Reads: (node, token, key, revision of the latest acknowledged put of
    // the key when the read was submitted).
    let mut reads: Vec<(NodeId, Token, String, Revision)> = Vec::new();
    let mut reads_checked = 0;
    let mut leases: Vec<LeaseId> = Vec::new();
    let mut grants: Vec<(NodeId, Token)> = Vec::new();
    let latest = |acked: &[Acked], key: &str| {
        acked.iter().filter(|a| a.key == key).map(|a| a.revision).max().unwrap_or_default()
    };
    let collect = |c: &mut Cluster<E>,
                   pending: &mut Vec<(NodeId, Token, String, String)>,
                   acked: &mut Vec<Acked>| {
        pending.retain(|(on, token, key, value)| match c.take_result(*on, *token) {
            Some(Ok(Reply::Kv(Response::Put(r)))) => {
                acked.push(Acked { key: key.clone(), value: value.clone(), revision: r.revision });
                false
            }
            Some(Ok(other)) => panic!("seed {seed}: unexpected reply {other:?}"),
            Some(Err(_)) => false,
            None => true,
        });
    };
    let _ = &mut n;
    for _ in 0..FAULT_STEPS {
        let running = c.running();
        // A few writes per step, on random running nodes.
        for _ in 0..rng.range(0, 3) {
            let on = running[rng.range(0, running.len() as u64) as usize];
            let key = format!("k{}", rng.range(0, 40));
            let value = format!("s{seed}-{n}");
            n += 1;
            let lease = if !leases.is_empty() && rng.chance(1, 4) {
                leases[rng.range(0, leases.len() as u64) as usize]
            } else {
                LeaseId::NONE
            };
            let put = PutRequest { key: b(&key), value: b(&value), lease, ..PutRequest::default() };
            let token = c.submit(on, Request::Put(put));
            pending.push((on, token, key, value));
        }
        if rng.chance(1, 20) {
            let on = running[rng.range(0, running.len() as u64) as usize];
            let ttl = rng.range(2, 6) as i64;
            grants.push((on, c.submit(on, Request::LeaseGrant { id: LeaseId::NONE, ttl })));
        }
        if !leases.is_empty() && rng.chance(1, 3) {
            let on = running[rng.range(0, running.len() as u64) as usize];
            let id = leases[rng.range(0, leases.len() as u64) as usize];
            // Answers are not checked: only that the cluster survives them.
            c.submit(on, Request::LeaseKeepAlive(id));
        }
        if rng.chance(1, 2) {
            let on = running[rng.range(0, running.len() as u64) as usize];
            // Often the key written last: a stale read shows there.
            let key = match acked.last() {
                Some(a) if rng.chance(1, 2) => a.key.clone(),
                _ => format!("k{}", rng.range(0, 40)),
            };
            let req = RangeRequest { key: b(&key), ..RangeRequest::default() };
            let token = c.submit(on, Request::Range(req));
            let floor = latest(&acked, &key);
            reads.push((on, token, key, floor));
        }
        let dice = rng.range(0, 1000);
        match dice {
            // Crash a node, keeping a majority up.
            0..=7 if down.len() < (nodes - 1) / 2 => {
                let victim = running[rng.range(0, running.len() as u64) as usize];
                c.crash(victim);
                pending.retain(|(on, ..)| *on != victim);
                reads.retain(|(on, ..)| *on != victim);
                grants.retain(|(on, _)| *on != victim);
                down.push(victim);
            }
            8..=20 if !down.is_empty() => {
                let back = down.remove(rng.range(0, down.len() as u64) as usize);
                c.restart(back).unwrap_or_else(|e| panic!("seed {seed}: restart failed: {e}"));
            }
            // One node cut off at a time, so that crashes and partitions
            // together rarely leave no quorum for long.
            21..=26 => {
                let cut = ids[rng.range(0, ids.len() as u64) as usize];
                c.net.heal();
                c.net.isolate(cut, &ids);
            }
            27..=40 => c.net.heal(),
            41..=44 => c.net.set_loss_ppm(rng.range(0, 100_000)),
            45..=50 => c.net.set_loss_ppm(0),
            51..=56 => c.net.set_delay(rng.range(0, 300_000), rng.range(1, 8)),
            57..=62 => c.net.set_delay(0, 0),
            _ => {}
        }
        c.step();
        collect(&mut c, &mut pending, &mut acked);
        grants.retain(|(on, token)| match c.take_result(*on, *token) {
            Some(Ok(Reply::Kv(Response::LeaseGrant(g)))) => {
                leases.push(g.id);
                false
            }
            Some(_) => false,
            None => true,
        });
        reads.retain(|(on, token, key, floor)| match c.take_result(*on, *token) {
            Some(Ok(Reply::Range(r))) => {
                // Present: its version is that put or a later one. Absent:
                // deleted since (its lease expired), so the read was served
                // at a later revision.
                let seen = r.kvs.first().map_or(r.revision, |kv| kv.mod_revision);
                assert!(
                    seen >= *floor,
                    "seed {seed}: a read of {key} on {on} saw revision {seen}, older than the \
                     acknowledged {floor}"
                );
                reads_checked += 1;
                false
            }
            Some(Ok(other)) => panic!("seed {seed}: unexpected reply {other:?}"),
            Some(Err(_)) => false,
            None => true,
        });
    }

    // Liveness: heal everything; the cluster must converge and serve.
    c.net.heal();
    c.net.set_loss_ppm(0);
    c.net.set_delay(0, 0);
    for id in down.drain(..) {
        c.restart(id).unwrap();
    }
    let leader = c.wait_leader(600);
    c.run(50);
    collect(&mut c, &mut pending, &mut acked);
    put(&mut c, leader, "final", "write").unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    settle_shards(&mut c, &hosted);

    let mut revisions = BTreeMap::new();
    for a in &acked {
        if let Some(other) = revisions.insert((shard_of(&a.key), a.revision), &a.value) {
            panic!(
                "seed {seed}: {other} and {} acknowledged at the same revision {}",
                a.value, a.revision
            );
        }
    }
    for id in c.running() {
        let view = c.node(id).store().read().unwrap();
        for a in &acked {
            let req =
                RangeRequest { key: b(&a.key), revision: a.revision, ..RangeRequest::default() };
            let kv = view.range(shard_of(&a.key), &req).unwrap().kvs.pop();
            let ok = kv
                .as_ref()
                .is_some_and(|kv| kv.value == b(&a.value) && kv.mod_revision == a.revision);
            assert!(
                ok,
                "seed {seed}: acknowledged {}={} at {} missing on {id}: {kv:?}",
                a.key, a.value, a.revision
            );
        }
    }
    assert_same_shards(&c, &hosted);
    assert!(acked.len() > 20, "seed {seed}: only {} writes acknowledged", acked.len());
    assert!(reads_checked > 20, "seed {seed}: only {reads_checked} reads answered");
}

fn random_faults_never_lose_acknowledged_writes<E: Engine>() {
    run_seeds::<E>(1, SEEDS_DEFAULT, "random_faults_never_lose_acknowledged_writes");
}

/// The same on four data shards beside the metadata group.
fn random_faults_on_four_shards_never_lose_acknowledged_writes<E: Engine>() {
    let name = "random_faults_on_four_shards_never_lose_acknowledged_writes";
    run_seeds::<E>(SHARDS, SHARDED_SEEDS_DEFAULT, name);
}

// Runs the seeds of a test body (instantiated per engine by
// `engine_tests!`): the replay command goes to the test output.
#[allow(clippy::print_stderr)]
fn run_seeds<E: Engine>(shards: u32, default: u64, name: &str) {
    for seed in seeds(default) {
        let result = std::panic::catch_unwind(|| run::<E>(seed, shards));
        if let Err(e) = result {
            eprintln!(
                "randomized {} run failed; replay with:\n  RINGKV_NODE_SEED={seed} cargo test -p ringkv-node --test randomized {}::{name}",
                E::NAME,
                E::NAME,
            );
            std::panic::resume_unwind(e);
        }
    }
}

/// A node restarted and reused a request number; an entry it proposed
/// before the crash committed after the restart and answered the new
/// request with the old request's revision.
fn seed_91_request_numbers_repeat_across_restarts<E: Engine>() {
    run::<E>(91, 1);
}

engine_tests!(
    random_faults_never_lose_acknowledged_writes,
    random_faults_on_four_shards_never_lose_acknowledged_writes,
    seed_91_request_numbers_repeat_across_restarts
);
