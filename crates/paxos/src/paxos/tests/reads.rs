//! Linearizable reads: ReadIndex confirmed by a quorum, leases, followers.

use super::*;
use ringkv_consensus::{ReadMode, ReadState, RequestId};

fn echo(round: u64, tick: u64, commit: u64) -> Body {
    Body::HeartbeatResponse { round, sent_tick: tick, commit: i(commit), asked: i(commit) }
}

fn read(id: u64, index: u64) -> ReadState {
    ReadState { id: RequestId(id), index: i(index) }
}

/// A new leader serves reads only once its phase-1 re-proposals are chosen
/// (its commit point then covers every value chosen before it), then
/// confirms with a heartbeat round that a quorum echoes.
#[test]
fn read_waits_for_phase_1_values_then_for_a_quorum() {
    let own = [cmd(1, b(1, 1), "a")];
    let mut r = leader_with(config(1), &[1, 2, 3], &own, b(1, 1));
    let ballot = r.ballot();
    assert_eq!(r.phase1_end, i(1));
    r.read_index(RequestId(7)).expect("leader");
    assert!(r.ready().is_none(), "no round before the re-proposed slot 1 is chosen");
    step(&mut r, env(2, 1, ballot, accepted(1, 1, 0)));
    let rd = ready(&mut r);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, ballot, heartbeat(1, 0, 0)),
            env(1, 3, ballot, heartbeat(1, 0, 0)),
            env(1, 2, ballot, heartbeat(1, 1, 0)),
            env(1, 3, ballot, heartbeat(1, 1, 0)),
        ],
        "the commit point goes out, then the read's round"
    );
    assert!(rd.read_states.is_empty());
    step(&mut r, env(3, 1, ballot, echo(1, 0, 1)));
    assert_eq!(ready(&mut r).read_states, vec![read(7, 1)]);
}

/// One echo of five voters is not a quorum; an echo of an older round
/// confirms nothing newer; a stale ballot's echo counts for nothing.
#[test]
fn read_needs_a_quorum_of_current_round_echoes() {
    let mut r = settled_leader(1, &[1, 2, 3, 4, 5]);
    let ballot = r.ballot();
    r.read_index(RequestId(1)).expect("leader");
    let rd = ready(&mut r);
    let round = match &rd.messages[0].body.body {
        Body::Heartbeat { round, .. } => *round,
        other => panic!("expected a heartbeat round, got {other:?}"),
    };
    step(&mut r, env(2, 1, ballot, echo(round, 0, 1)));
    step(&mut r, env(3, 1, ballot, echo(round - 1, 0, 1)));
    step(&mut r, env(4, 1, b(1, 9), echo(round, 0, 1)));
    assert!(r.ready().is_none_or(|rd| rd.read_states.is_empty()));
    step(&mut r, env(5, 1, ballot, echo(round, 0, 1)));
    assert_eq!(ready(&mut r).read_states, vec![read(1, 1)]);
}

/// A deposed leader's pending reads are dropped, never answered.
#[test]
fn deposed_leader_drops_its_reads() {
    let mut r = settled_leader(1, &[1, 2, 3]);
    r.read_index(RequestId(1)).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, b(9, 2), Body::Nack));
    let rds = drain(&mut r);
    assert!(rds.iter().all(|rd| rd.read_states.is_empty()));
    assert_eq!(r.reads.pending(), 0);
}

/// A lease read is served at once while a quorum echoed a heartbeat within
/// the election timeout minus the drift margin; after that it needs a round.
#[test]
fn lease_read_is_local_within_the_lease() {
    let mut cfg = config(1);
    cfg.check_quorum = true;
    cfg.read_mode = ReadMode::Lease { drift_ticks: 2 };
    let mut r = leader_with(cfg, &[1, 2, 3], &[], Epoch::ZERO);
    let ballot = r.ballot();
    r.tick();
    let rd = ready(&mut r);
    let (round, tick) = match &rd.messages[0].body.body {
        Body::Heartbeat { round, sent_tick, .. } => (*round, *sent_tick),
        other => panic!("expected a heartbeat, got {other:?}"),
    };
    step(&mut r, env(2, 1, ballot, echo(round, tick, 0)));
    r.read_index(RequestId(3)).expect("leader");
    assert_eq!(ready(&mut r).read_states, vec![read(3, 0)], "served from the lease");
    // election 10 - drift 2 = 8 ticks after the echoed heartbeat, the lease
    // is gone (heartbeats keep going out, but nobody answers them).
    for _ in 0..8 {
        r.tick();
    }
    drain(&mut r);
    r.read_index(RequestId(4)).expect("leader");
    assert!(drain(&mut r).iter().all(|rd| rd.read_states.is_empty()), "needs a round now");
}

/// A follower forwards a read to its leader and serves the index it gets.
#[test]
fn follower_forwards_reads_to_the_leader() {
    let ballot = b(1, 1);
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(ballot, 0));
    step(&mut r, env(1, 2, ballot, heartbeat(0, 1, 0)));
    drain(&mut r);
    r.read_index(RequestId(5)).expect("a leader is known");
    assert_eq!(
        ready(&mut r).messages,
        vec![env(2, 1, ballot, Body::ReadIndex { id: RequestId(5) })]
    );
    step(&mut r, env(1, 2, ballot, Body::ReadIndexResponse { id: RequestId(5), index: i(0) }));
    assert_eq!(ready(&mut r).read_states, vec![read(5, 0)]);
}
