//! The proposer's rules: phase 1a, the value rule, phase 2a and commit.

use super::*;
use ringkv_consensus::{Proposal, ProposeError};

/// An election timeout starts phase 1 with a ballot above every one seen:
/// the candidate promises itself (durably) and asks every voter to promise
/// for all slots above its commit point.
#[test]
fn election_timeout_starts_phase_1_with_a_higher_ballot() {
    let mut r = acceptor(1, &[1, 2, 3], &[], hard(b(4, 2), 0));
    let timeout = r.randomized_election_ticks;
    assert!((10..20).contains(&timeout), "drawn from [election, 2 * election)");
    for _ in 1..timeout {
        r.tick();
    }
    assert!(r.ready().is_none(), "nothing before the timeout");
    r.tick();
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Candidate, None, b(5, 1))));
    assert_eq!(rd.hard_state, Some(hard(b(5, 1), 0)));
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.after_persist,
        vec![env(1, 2, b(5, 1), prepare(0)), env(1, 3, b(5, 1), prepare(0))],
        "prepares leave once the ballot is durable, so it is never reused after a crash"
    );
}

/// The candidate counts its own promise only once it is durable: two
/// promises of five are not a quorum before, three are after.
#[test]
fn own_promise_counts_only_once_durable() {
    let mut r = acceptor(1, &[1, 2, 3, 4, 5], &[], hard(Epoch::ZERO, 0));
    r.campaign();
    let rd = ready(&mut r);
    let ballot = r.ballot();
    step(&mut r, env(2, 1, ballot, promise(0, vec![])));
    step(&mut r, env(3, 1, ballot, promise(0, vec![])));
    assert_eq!(r.role, Role::Candidate, "our own promise is not durable yet");
    persist(&mut r, &rd);
    assert_eq!(r.role, Role::Leader);
}

/// A Nack with a higher ballot ends the campaign; the next one outbids it.
#[test]
fn nack_ends_the_campaign_and_is_outbid_next_time() {
    let mut r = acceptor(1, &[1, 2, 3], &[], hard(Epoch::ZERO, 0));
    r.campaign();
    drain(&mut r);
    step(&mut r, env(2, 1, b(7, 3), Body::Nack));
    assert_eq!(r.role, Role::Follower);
    r.campaign();
    assert_eq!(r.ballot(), b(8, 1));
}

/// PMS P2c: for every slot above the commit point, the new leader
/// re-proposes the value of the highest ballot any promise (or its own log)
/// reports, in its own ballot.
#[test]
fn new_leader_adopts_the_highest_ballot_value_per_slot() {
    let own = [cmd(1, b(1, 1), "a1"), cmd(2, b(1, 1), "a2")];
    let mut r = paxos_with(config(1), storage(&[1, 2, 3, 4, 5], &own, hard(b(3, 3), 0)));
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    assert_eq!(ballot, b(4, 1));
    let from2 = vec![cmd(1, b(2, 2), "b1"), cmd(2, b(1, 1), "a2"), cmd(3, b(1, 2), "b3")];
    let from3 = vec![cmd(2, b(3, 3), "c2"), cmd(3, b(2, 3), "c3")];
    step(&mut r, env(2, 1, ballot, promise(0, from2)));
    step(&mut r, env(3, 1, ballot, promise(0, from3)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Leader, Some(1), ballot)));
    assert_eq!(
        rd.entries,
        vec![cmd(1, ballot, "b1"), cmd(2, ballot, "c2"), cmd(3, ballot, "c3")],
        "slot 1 from ballot 2.2, slot 2 from 3.3, slot 3 from 2.3"
    );
    // Every peer gets the re-proposals; those that promised stream at once.
    let to2: Vec<_> = rd.messages.iter().filter(|m| m.to == n(2)).collect();
    assert_eq!(
        to2[0].body.body,
        accept(vec![cmd(1, ballot, "b1"), cmd(2, ballot, "c2"), cmd(3, ballot, "c3")], 0)
    );
}

/// Holes — slots no promise reports — are filled with no-ops, so the
/// commit point can pass them.
#[test]
fn gaps_are_filled_with_noops() {
    let own = [vacant(1), cmd(2, b(1, 1), "a")];
    let mut r = paxos_with(config(1), storage(&[1, 2, 3], &own, hard(b(1, 1), 0)));
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    step(&mut r, env(2, 1, ballot, promise(0, vec![cmd(4, b(1, 1), "d")])));
    let rd = ready(&mut r);
    assert_eq!(
        rd.entries,
        vec![noop(1, ballot), cmd(2, ballot, "a"), noop(3, ballot), cmd(4, ballot, "d")]
    );
}

/// Phase 1 needs a quorum of every configuration deciding a slot above the
/// commit point: a promised membership entry adds its voters.
#[test]
fn phase_1_needs_every_configuration_in_play() {
    let mut r = acceptor(1, &[1, 2, 3], &[], hard(b(1, 2), 0));
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    let next = Membership::new([n(1), n(4), n(5)]);
    let conf = Entry {
        index: i(1),
        epoch: b(1, 2),
        kind: EntryKind::Membership,
        payload: Bytes::from(ringkv_consensus::encode_to_vec(&next)),
    };
    step(&mut r, env(2, 1, ballot, promise(0, vec![conf])));
    let rd = ready(&mut r);
    assert_eq!(r.role, Role::Candidate, "{{1,2}} is a quorum of the old voters only");
    assert_eq!(
        rd.after_persist,
        vec![env(1, 4, ballot, prepare(0)), env(1, 5, ballot, prepare(0))]
    );
    step(&mut r, env(4, 1, ballot, promise(0, vec![])));
    assert_eq!(r.role, Role::Leader);
}

/// Refusals from a quorum end the campaign.
#[test]
fn refusals_from_a_quorum_lose_phase_1() {
    let mut r = acceptor(1, &[1, 2, 3], &[], hard(Epoch::ZERO, 0));
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    step(&mut r, env(2, 1, ballot, Body::PromiseRejected { commit: i(5) }));
    assert_eq!(r.role, Role::Candidate);
    step(&mut r, env(3, 1, ballot, Body::PromiseRejected { commit: i(5) }));
    assert_eq!(r.role, Role::Follower);
}

/// A proposal takes the next slot in the leader's ballot; phase 2a goes to
/// every peer with the leader's commit point.
#[test]
fn proposal_is_accepted_locally_and_sent_to_every_peer() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    let p = r.propose(Bytes::from_static(b"x")).expect("leader");
    assert_eq!(p, Proposal { index: i(1), epoch: ballot });
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![cmd(1, ballot, "x")]);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, ballot, accept(vec![cmd(1, ballot, "x")], 0)),
            env(1, 3, ballot, accept(vec![cmd(1, ballot, "x")], 0)),
        ]
    );
}

/// A slot is chosen with a quorum of acceptances in the leader's ballot;
/// the leader's own counts only once durable; answers to another ballot
/// count for nothing.
#[test]
fn commit_needs_a_quorum_of_current_ballot_acceptances() {
    let mut r = leader(1, &[1, 2, 3, 4, 5]);
    let ballot = r.ballot();
    r.propose(Bytes::from_static(b"x")).expect("leader");
    let rd = ready(&mut r);
    step(&mut r, env(2, 1, b(1, 9), accepted(1, 1, 0)));
    step(&mut r, env(2, 1, ballot, accepted(1, 1, 0)));
    step(&mut r, env(3, 1, ballot, accepted(1, 1, 0)));
    assert_eq!(r.log.committed, i(0), "two peers, and our own copy is not durable");
    persist(&mut r, &rd);
    assert_eq!(r.log.committed, i(1));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(ballot, 1)));
    assert_eq!(rd.committed, vec![cmd(1, ballot, "x")]);
}

/// Slots are chosen one by one, in any order; the commit point is the end
/// of the chosen prefix.
#[test]
fn commit_point_waits_for_an_earlier_slot() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    for _ in 0..3 {
        r.propose(Bytes::from_static(b"x")).expect("leader");
    }
    drain(&mut r);
    step(&mut r, env(2, 1, ballot, accepted(2, 3, 0)));
    assert_eq!(r.log.committed, i(0), "slots 2 and 3 are chosen, slot 1 is not yet");
    assert!(r.peer(n(2)).expect("peer").has(i(3)));
    step(&mut r, env(3, 1, ballot, accepted(1, 1, 0)));
    assert_eq!(r.log.committed, i(3));
}

/// Commit notification: once the commit point moves, every peer that got no
/// accept learns it by a heartbeat carrying the leader's ballot.
#[test]
fn commit_is_announced_to_every_replica() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    r.propose(Bytes::from_static(b"x")).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, ballot, accepted(1, 1, 0)));
    let rd = ready(&mut r);
    assert_eq!(
        rd.messages,
        vec![env(1, 2, ballot, heartbeat(1, 0, 0)), env(1, 3, ballot, heartbeat(1, 0, 0))]
    );
}

/// Phase 2 stays within α slots of the commit point (the window), so no
/// slot is proposed before its configuration is decided.
#[test]
fn phase_2_stays_within_alpha_of_the_commit_point() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    for _ in 0..ALPHA + 2 {
        r.propose(Bytes::from_static(b"x")).expect("leader");
    }
    let rd = ready(&mut r);
    let sent: Vec<u64> = rd
        .messages
        .iter()
        .filter(|m| m.to == n(2))
        .flat_map(|m| match &m.body.body {
            Body::Accept { entries, .. } => entries.iter().map(|e| e.index.0).collect(),
            _ => vec![],
        })
        .collect();
    assert_eq!(sent, (1..=ALPHA).collect::<Vec<_>>());
    persist(&mut r, &rd);
    step(&mut r, env(2, 1, ballot, accepted(1, 2, 0)));
    let rd = ready(&mut r);
    let more: Vec<_> = rd
        .messages
        .iter()
        .filter(|m| m.to == n(2) && matches!(m.body.body, Body::Accept { .. }))
        .collect();
    assert_eq!(more.len(), 1);
    assert_eq!(
        more[0].body.body,
        accept(vec![cmd(ALPHA + 1, ballot, "x"), cmd(ALPHA + 2, ballot, "x")], 2)
    );
}

/// A stale leader that learns of a higher ballot steps down.
#[test]
fn nack_deposes_a_leader() {
    let mut r = leader(1, &[1, 2, 3]);
    step(&mut r, env(2, 1, b(9, 2), Body::Nack));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, None, r.ballot())));
    assert_eq!(r.propose(Bytes::from_static(b"x")), Err(ProposeError::NotLeader { leader: None }));
}

/// A lagging peer (its reported commit point below ours) is caught up with
/// the chosen values re-stamped in the current ballot, so it can learn them.
#[test]
fn lagging_peer_is_caught_up_in_the_current_ballot() {
    let mut r = settled_leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    // Peer 3 restarted and lost its commit point: it answers a heartbeat
    // announcing commit 1 with commit 0.
    let answer = Body::HeartbeatResponse { round: 1, sent_tick: 0, commit: i(0), asked: i(1) };
    step(&mut r, env(3, 1, ballot, answer));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(1, 3, ballot, accept(vec![cmd(1, ballot, "x")], 1))]);
}
