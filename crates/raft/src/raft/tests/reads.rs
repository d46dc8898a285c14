//! Thesis §6.4: linearizable reads without the log (ReadIndex, leases,
//! reads on followers).

use super::*;
use ringkv_consensus::{ProposeError, ReadMode, ReadState, RequestId};

fn hb(commit: u64, round: u64, tick: u64) -> Body {
    Body::Heartbeat { commit: i(commit), round, sent_tick: tick }
}

fn echo(round: u64, tick: u64) -> Body {
    Body::HeartbeatResponse { round, sent_tick: tick }
}

fn read(id: u64, index: u64) -> ReadState {
    ReadState { id: RequestId(id), index: i(index) }
}

/// Step 1: a new leader serves reads only once an entry of its term is
/// committed; steps 2-4: it records its commit index, confirms leadership
/// with a heartbeat round and answers once a quorum echoed it.
#[test]
fn read_waits_for_the_noop_then_for_a_heartbeat_quorum() {
    let mut r = leader(1, &[1, 2, 3], &[], 1);
    r.read_index(RequestId(7)).expect("leader");
    let rd = r.ready();
    assert!(rd.is_none(), "no round before the no-op commits: {rd:?}");
    step(&mut r, env(2, 1, 1, ack(1)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(1, Some(1), 1)));
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, 1, append((1, 1), vec![], 1)),
            env(1, 2, 1, hb(1, 1, 0)),
            env(1, 3, 1, hb(0, 1, 0)),
        ],
        "the commit goes out, and the read's heartbeat round starts"
    );
    assert!(rd.read_states.is_empty());
    persist(&mut r, &rd);
    step(&mut r, env(3, 1, 1, echo(1, 0)));
    assert_eq!(ready(&mut r).read_states, vec![read(7, 1)]);
}

/// One echo of five voters is not a quorum; an echo of an older round
/// confirms nothing newer.
#[test]
fn read_needs_a_quorum_of_current_round_echoes() {
    let mut r = settled_leader(1, &[1, 2, 3, 4, 5], 1);
    r.read_index(RequestId(1)).expect("leader");
    let rd = ready(&mut r);
    let round = match &rd.messages[0].body.body {
        Body::Heartbeat { round, .. } => *round,
        other => panic!("expected a heartbeat round, got {other:?}"),
    };
    assert_eq!(rd.messages.len(), 4, "one heartbeat per peer");
    step(&mut r, env(2, 1, 1, echo(round, 0)));
    step(&mut r, env(3, 1, 1, echo(round - 1, 0)));
    assert!(r.ready().is_none_or(|rd| rd.read_states.is_empty()));
    step(&mut r, env(4, 1, 1, echo(round, 0)));
    assert_eq!(ready(&mut r).read_states, vec![read(1, 1)]);
}

/// Reads that arrive between two Readys share one heartbeat round.
#[test]
fn reads_between_readys_share_one_round() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.read_index(RequestId(1)).expect("leader");
    r.read_index(RequestId(2)).expect("leader");
    let rd = ready(&mut r);
    assert_eq!(rd.messages.len(), 2, "one round: one heartbeat per peer");
    step(&mut r, env(2, 1, 1, echo(1, 0)));
    assert_eq!(ready(&mut r).read_states, vec![read(1, 1), read(2, 1)]);
}

/// A follower forwards a read to its leader, which confirms it like its
/// own and sends the index back.
#[test]
fn follower_reads_are_confirmed_by_the_leader() {
    let mut f = follower(2, &[1, 2, 3], &[], hard(1, None, 0));
    assert_eq!(f.read_index(RequestId(5)), Err(ProposeError::NotLeader { leader: None }));
    step(&mut f, env(1, 2, 1, hb(0, 1, 0)));
    drain(&mut f);
    f.read_index(RequestId(5)).expect("leader known");
    assert_eq!(ready(&mut f).messages, vec![env(2, 1, 1, Body::ReadIndex { id: RequestId(5) })]);

    let mut r = settled_leader(1, &[1, 2, 3], 1);
    step(&mut r, env(2, 1, 1, Body::ReadIndex { id: RequestId(5) }));
    let rd = ready(&mut r);
    assert_eq!(rd.messages.len(), 2, "a heartbeat round: {:?}", rd.messages);
    step(&mut r, env(3, 1, 1, echo(1, 0)));
    let rd = ready(&mut r);
    assert!(rd.read_states.is_empty(), "the read is the follower's");
    let answer = Body::ReadIndexResponse { id: RequestId(5), index: i(1) };
    assert_eq!(rd.messages, vec![env(1, 2, 1, answer.clone())]);

    step(&mut f, env(1, 2, 1, answer));
    assert_eq!(ready(&mut f).read_states, vec![read(5, 1)]);
}

/// §6.4.1: with a lease, a leader whose heartbeat a quorum echoed less than
/// `election_ticks - drift_ticks` ago answers at once; after that it falls
/// back to a heartbeat round.
#[test]
fn lease_read_is_local_while_the_lease_holds() {
    let mut cfg = config(1);
    cfg.check_quorum = true;
    cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
    let mut r = leader_with(cfg, &[1, 2, 3], &[], 1);
    step(&mut r, env(2, 1, 1, ack(1)));
    drain(&mut r);
    r.tick();
    let rd = ready(&mut r);
    assert!(rd.messages.contains(&env(1, 2, 1, hb(1, 1, 1))), "{:?}", rd.messages);
    step(&mut r, env(2, 1, 1, echo(1, 1)));
    drain(&mut r);
    r.read_index(RequestId(1)).expect("leader");
    let rd = ready(&mut r);
    assert_eq!(rd.read_states, vec![read(1, 1)]);
    assert!(rd.messages.is_empty(), "no round trip under a lease");
    // The lease from the heartbeat sent at tick 1 lasts until tick 9
    // (10 - 2 ticks); at tick 9 it is over.
    for _ in 1..9 {
        r.tick();
    }
    drain(&mut r);
    r.read_index(RequestId(2)).expect("leader");
    let rd = ready(&mut r);
    assert!(rd.read_states.is_empty());
    assert!(rd.messages.iter().all(|m| matches!(m.body.body, Body::Heartbeat { .. })));
    assert_eq!(rd.messages.len(), 2);
}

/// After TimeoutNow the target may win without waiting for leases, so the
/// old leader's lease is void for the rest of its term.
#[test]
fn lease_is_void_after_timeout_now() {
    let mut cfg = config(1);
    cfg.check_quorum = true;
    cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
    let mut r = leader_with(cfg, &[1, 2, 3], &[], 1);
    step(&mut r, env(2, 1, 1, ack(1)));
    step(&mut r, env(3, 1, 1, ack(1)));
    r.tick();
    drain(&mut r);
    step(&mut r, env(2, 1, 1, echo(1, 1)));
    r.transfer_leadership(n(2)).expect("caught up");
    drain(&mut r);
    r.read_index(RequestId(1)).expect("leader");
    assert!(ready(&mut r).read_states.is_empty(), "no local read after TimeoutNow");
}

/// Reads pending when leadership is lost are dropped (the caller retries).
#[test]
fn pending_reads_are_dropped_on_stepping_down() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.read_index(RequestId(1)).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, 2, ack(0)));
    step(&mut r, env(3, 1, 2, echo(1, 0)));
    assert!(drain(&mut r).iter().all(|rd| rd.read_states.is_empty()));
}

/// The number of pending reads is bounded.
#[test]
fn pending_reads_are_bounded() {
    let mut cfg = config(1);
    cfg.max_pending_reads = 1;
    let mut r = leader_with(cfg, &[1, 2, 3], &[], 1);
    r.read_index(RequestId(1)).expect("first read");
    assert_eq!(r.read_index(RequestId(2)), Err(ProposeError::Busy { pending: 1, limit: 1 }));
}

/// In lease mode a replica that (re)starts may have promised a lease
/// before it crashed, so it refuses votes for one election timeout.
#[test]
fn restarted_replica_honours_a_lease_it_may_have_promised() {
    let mut cfg = config(2);
    cfg.check_quorum = true;
    cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[1], hard(1, None, 1)));
    step(&mut r, env(3, 2, 2, vote_req((1, 1))));
    assert!(r.ready().is_none_or(|rd| rd.after_persist.is_empty()), "no vote right after boot");
    for _ in 0..10 {
        r.tick();
    }
    step(&mut r, env(3, 2, 5, vote_req((1, 1))));
    let rd = ready(&mut r);
    assert!(rd.after_persist.contains(&env(2, 3, 5, granted(false))), "{rd:?}");
}
