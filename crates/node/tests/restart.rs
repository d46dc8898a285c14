//! Crashes (unsynced data lost or torn) and restarts: nothing acknowledged
//! is lost, a restarted node catches up, a whole cluster restarts from its
//! disks ignoring its bootstrap settings.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_node::Engine;

fn a_crashed_leader_restarts_and_nothing_acknowledged_is_lost<E: Engine>() {
    let mut c = cluster::<E>(3, 11);
    let leader = c.wait_leader(100);
    for i in 0..20 {
        put(&mut c, leader, &format!("k{i}"), &format!("v{i}")).unwrap();
    }
    c.crash(leader);
    let new_leader = c.wait_leader(200);
    assert_ne!(new_leader, leader);
    for i in 20..30 {
        put(&mut c, new_leader, &format!("k{i}"), &format!("v{i}")).unwrap();
    }
    c.restart(leader).unwrap();
    settle(&mut c);
    for id in c.running() {
        for i in 0..30 {
            let v = local_value(&c, id, &format!("k{i}"));
            assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "k{i} on {id}");
        }
    }
    assert_same_state(&c);
}

fn a_whole_cluster_restarts_from_its_disks<E: Engine>() {
    let mut c = cluster::<E>(3, 12);
    let leader = c.wait_leader(100);
    for i in 0..10 {
        put(&mut c, leader, &format!("k{i}"), "v").unwrap();
    }
    let ids = c.running();
    for &id in &ids {
        c.crash(id);
    }
    for &id in &ids {
        c.restart(id).unwrap();
    }
    let leader = c.wait_leader(200);
    // The members are the founders, not a second bootstrap.
    assert_eq!(c.node(leader).members().len(), 3);
    put(&mut c, leader, "after", "restart").unwrap();
    settle(&mut c);
    for id in c.running() {
        for i in 0..10 {
            assert!(local_value(&c, id, &format!("k{i}")).is_some(), "k{i} lost on {id}");
        }
    }
    assert_same_state(&c);
}

fn crashes_in_every_phase_keep_acknowledged_writes<E: Engine>() {
    // Crash a random node after a random number of steps, many times.
    for seed in 0..4u64 {
        let mut c = cluster::<E>(3, 100 + seed);
        let mut rng = ringkv_consensus::DetRng::new(seed);
        let mut acked = Vec::new();
        let mut n = 0;
        for _round in 0..4 {
            let leader = c.wait_leader(300);
            let on = c.running()[rng.range(0, c.running().len() as u64) as usize];
            // Submit a few writes, crash mid-flight.
            let mut tokens = Vec::new();
            for _ in 0..5 {
                let key = format!("k{n}");
                n += 1;
                tokens.push((key.clone(), c.submit(leader, put_req(&key, "v"))));
            }
            c.run(rng.range(0, 6) as usize);
            for (key, t) in &tokens {
                if let Some(Ok(_)) = c.take_result(leader, *t) {
                    acked.push(key.clone());
                }
            }
            c.crash(on);
            c.run(rng.range(0, 30) as usize);
            c.restart(on).unwrap();
        }
        c.wait_leader(300);
        settle(&mut c);
        for id in c.running() {
            for key in &acked {
                assert!(
                    local_value(&c, id, key).is_some(),
                    "seed {seed}: acked {key} lost on {id}"
                );
            }
        }
        assert_same_state(&c);
    }
}

engine_tests!(
    a_crashed_leader_restarts_and_nothing_acknowledged_is_lost,
    a_whole_cluster_restarts_from_its_disks,
    crashes_in_every_phase_keep_acknowledged_writes,
);
