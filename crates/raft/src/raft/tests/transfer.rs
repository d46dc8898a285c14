//! Thesis §3.10: leadership transfer.

use super::*;
use ringkv_consensus::ProposeError;

/// A caught-up target gets TimeoutNow at once; proposals are refused while
/// the transfer runs.
#[test]
fn caught_up_target_gets_timeout_now_at_once() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.transfer_leadership(n(2)).expect("valid target");
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(1, 2, 1, Body::TimeoutNow)]);
    assert_eq!(
        r.propose(Bytes::from_static(b"x")),
        Err(ProposeError::TransferInProgress { to: n(2) })
    );
    assert_eq!(r.transfer_leadership(n(3)), Err(ProposeError::TransferInProgress { to: n(2) }));
}

/// A lagging target is caught up first; its acknowledgement of the last
/// entry triggers TimeoutNow.
#[test]
fn lagging_target_is_caught_up_before_timeout_now() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.propose(Bytes::from_static(b"c2")).expect("leader");
    drain(&mut r);
    r.transfer_leadership(n(2)).expect("valid target");
    let rd = ready(&mut r);
    assert!(
        !rd.messages.iter().any(|m| m.body.body == Body::TimeoutNow),
        "not before the target has the whole log: {:?}",
        rd.messages
    );
    step(&mut r, env(2, 1, 1, ack(2)));
    let rd = ready(&mut r);
    assert!(rd.messages.contains(&env(1, 2, 1, Body::TimeoutNow)), "{:?}", rd.messages);
}

/// A transfer that does not complete within an election timeout is
/// abandoned and the leader takes proposals again.
#[test]
fn transfer_is_abandoned_after_an_election_timeout() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.propose(Bytes::from_static(b"c2")).expect("leader");
    drain(&mut r);
    r.transfer_leadership(n(2)).expect("valid target");
    for _ in 0..10 {
        r.tick();
    }
    assert!(r.propose(Bytes::from_static(b"c3")).is_ok());
}

/// TimeoutNow makes the target campaign at once, skipping pre-vote, with
/// the transfer flag so voters disregard their leases.
#[test]
fn timeout_now_starts_an_election_at_once() {
    let mut cfg = config(2);
    cfg.pre_vote = true;
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[1], hard(1, None, 1)));
    step(&mut r, env(1, 2, 1, Body::TimeoutNow));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Candidate, None, 2)));
    assert_eq!(rd.hard_state, Some(hard(2, Some(2), 1)));
    let vote = Body::Vote { pre_vote: false, last_index: i(1), last_term: t(1), transfer: true };
    assert_eq!(rd.after_persist, vec![env(2, 1, 2, vote.clone()), env(2, 3, 2, vote)]);
}

/// A voter that hears from the leader still grants a transfer campaign's
/// vote (the leader asked for it).
#[test]
fn transfer_vote_overrides_the_lease() {
    let mut cfg = config(3);
    cfg.check_quorum = true;
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[1], hard(1, None, 1)));
    step(&mut r, env(1, 3, 1, Body::Heartbeat { commit: i(1), round: 1, sent_tick: 1 }));
    drain(&mut r);
    let vote = Body::Vote { pre_vote: false, last_index: i(1), last_term: t(1), transfer: true };
    step(&mut r, env(2, 3, 2, vote));
    assert_eq!(ready(&mut r).after_persist, vec![env(3, 2, 2, granted(false))]);
}

/// Only a leader transfers, and only to another voter.
#[test]
fn invalid_transfers_are_refused() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    assert!(matches!(r.transfer_leadership(n(1)), Err(ProposeError::InvalidTransferTarget { .. })));
    assert!(matches!(r.transfer_leadership(n(9)), Err(ProposeError::InvalidTransferTarget { .. })));
    let mut f = follower(2, &[1, 2, 3], &[], hard(1, None, 0));
    assert_eq!(f.transfer_leadership(n(3)), Err(ProposeError::NotLeader { leader: None }));
}

/// A learner ignores TimeoutNow: it cannot lead.
#[test]
fn learner_ignores_timeout_now() {
    let mut r = follower(4, &[1, 2, 3], &[], hard(1, None, 0));
    step(&mut r, env(1, 4, 1, Body::TimeoutNow));
    assert_eq!(r.role, Role::Follower);
}
