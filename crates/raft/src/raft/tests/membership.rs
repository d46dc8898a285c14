//! Thesis chapter 4: membership changes.

use super::*;
use ringkv_consensus::{ChangeOp, MembershipChange, ProgressState, ProposeError, encode_to_vec};

fn conf(index: u64, term: u64, m: &Membership) -> Entry {
    Entry {
        index: i(index),
        epoch: t(term),
        kind: EntryKind::Membership,
        payload: Bytes::from(encode_to_vec(m)),
    }
}

fn members(voters: &[u64]) -> Membership {
    Membership::new(voters.iter().map(|&v| n(v)))
}

fn change(ops: Vec<ChangeOp>) -> MembershipChange {
    MembershipChange { ops }
}

/// §4.1: "a server always uses the latest configuration in its log,
/// regardless of whether the entry is committed" — on the leader, the new
/// member is replicated to and counted at once.
#[test]
fn leader_uses_a_new_configuration_as_soon_as_it_is_appended() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    let p = r.change_membership(change(vec![ChangeOp::AddVoter(n(4))])).expect("accepted");
    assert_eq!(p.index, i(2));
    let next = members(&[1, 2, 3, 4]);
    assert_eq!(r.status().membership, next);
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![conf(2, 1, &next)]);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, 1, append((1, 1), vec![conf(2, 1, &next)], 1)),
            env(1, 3, 1, append((1, 1), vec![conf(2, 1, &next)], 1)),
            env(1, 4, 1, append((2, 1), vec![], 1)),
        ],
        "the new member is probed from the end of the log"
    );
    persist(&mut r, &rd);
    step(&mut r, env(2, 1, 1, ack(2)));
    assert_eq!(r.log.committed, i(1), "2 of 4 is no majority of the new configuration");
    step(&mut r, env(3, 1, 1, ack(2)));
    assert_eq!(r.log.committed, i(2));
}

/// §4.1 on a follower: the configuration changes on append, and reverts
/// when a new leader truncates the entry.
#[test]
fn follower_adopts_a_configuration_on_append_and_reverts_on_truncation() {
    let mut r = follower(3, &[1, 2, 3], &[1], hard(1, None, 1));
    let next = members(&[1, 2, 3, 4]);
    step(&mut r, env(1, 3, 1, append((1, 1), vec![conf(2, 1, &next)], 1)));
    assert_eq!(r.status().membership, next, "in effect before it commits");
    drain(&mut r);
    step(&mut r, env(2, 3, 2, append((1, 1), vec![noop(2, 2)], 1)));
    assert_eq!(r.status().membership, members(&[1, 2, 3]), "the truncated change is undone");
    assert_eq!(ready(&mut r).entries, vec![noop(2, 2)]);
}

/// §4.1: one change at a time — a change waits until the previous one
/// commits.
#[test]
fn one_membership_change_at_a_time() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.change_membership(change(vec![ChangeOp::AddVoter(n(4))])).expect("first change");
    assert_eq!(
        r.change_membership(change(vec![ChangeOp::AddVoter(n(5))])),
        Err(ProposeError::MembershipChangeInProgress)
    );
}

/// A new leader first commits an entry of its own term: until then an
/// uncommitted change of an earlier leader may still be in its log (the
/// single-server-change fix, Ongaro 2015).
#[test]
fn no_membership_change_before_an_entry_of_the_term_commits() {
    let mut r = leader(1, &[1, 2, 3], &[], 1);
    assert_eq!(
        r.change_membership(change(vec![ChangeOp::AddVoter(n(4))])),
        Err(ProposeError::MembershipChangeInProgress)
    );
}

/// §4.3: a change of more than one voter goes through C_old,new, which
/// needs majorities of both halves; once it commits the leader proposes
/// C_new by itself.
#[test]
fn joint_change_needs_both_majorities_and_is_left_automatically() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    let ops = vec![ChangeOp::AddVoter(n(4)), ChangeOp::AddVoter(n(5)), ChangeOp::Remove(n(3))];
    r.change_membership(change(ops)).expect("accepted");
    let joint = r.status().membership;
    assert!(joint.is_joint());
    assert_eq!(joint.outgoing, members(&[1, 2, 3]).voters);
    assert_eq!(joint.voters, members(&[1, 2, 4, 5]).voters);
    drain(&mut r);
    step(&mut r, env(2, 1, 1, ack(2)));
    assert_eq!(r.log.committed, i(1), "old majority {{1,2}} but only 2 of 4 new voters");
    step(&mut r, env(4, 1, 1, ack(2)));
    assert_eq!(r.log.committed, i(2));
    let rd = ready(&mut r);
    let leave = members(&[1, 2, 4, 5]);
    assert_eq!(rd.entries, vec![conf(3, 1, &leave)], "leave-joint proposed automatically");
    assert_eq!(r.status().membership, leave);
}

/// §4.2.2: a leader removed from the configuration keeps leading until
/// C_new commits, not counting itself, then steps down (handing over to a
/// caught-up voter with TimeoutNow to save an election timeout).
#[test]
fn removed_leader_steps_down_once_the_change_commits() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.change_membership(change(vec![ChangeOp::Remove(n(1))])).expect("accepted");
    drain(&mut r);
    step(&mut r, env(2, 1, 1, ack(2)));
    assert_eq!(r.role, Role::Leader, "C_new = {{2,3}} needs both; the leader does not count");
    assert_eq!(r.log.committed, i(1));
    step(&mut r, env(3, 1, 1, ack(2)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, None, 1)));
    assert_eq!(rd.messages, vec![env(1, 2, 1, Body::TimeoutNow)]);
    assert_eq!(rd.hard_state, Some(hard(1, Some(1), 2)));
}

/// Learners receive the log but neither count toward commit nor campaign.
#[test]
fn learners_replicate_but_never_count_or_campaign() {
    let mut s = storage(&[1, 2, 3], &[], hard(0, None, 0));
    let mut with_learner = members(&[1, 2, 3]);
    with_learner.learners.insert(n(4));
    s.install_snapshot(ringkv_consensus::Snapshot {
        meta: ringkv_consensus::SnapshotMeta {
            membership: with_learner.clone(),
            ..Default::default()
        },
        data: Bytes::new(),
    });
    let mut r = raft_with(config(1), s.clone());
    r.campaign();
    drain(&mut r);
    step(&mut r, env(2, 1, 1, granted(false)));
    let rd = ready(&mut r);
    assert_eq!(rd.messages.len(), 3, "the learner gets the no-op too: {:?}", rd.messages);
    persist(&mut r, &rd);
    step(&mut r, env(4, 1, 1, ack(1)));
    assert_eq!(r.log.committed, i(0), "a learner's ack does not count");
    let p = r.status().progress;
    assert_eq!(p.iter().find(|p| p.id == n(4)).map(|p| p.state), Some(ProgressState::Replicate));

    let mut learner = raft_with(config(4), s);
    for _ in 0..100 {
        learner.tick();
    }
    assert_eq!(learner.role, Role::Follower);
    assert!(learner.ready().is_none(), "a learner never campaigns");
}

/// §4.2.3: a server that hears from a leader ignores vote requests of a
/// higher term for an election timeout (check-quorum), so a removed or
/// partitioned server cannot depose a live leader.
#[test]
fn votes_are_ignored_while_a_leader_is_heard() {
    let mut cfg = config(1);
    cfg.check_quorum = true;
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[], hard(1, None, 0)));
    let hb = Body::Heartbeat { commit: i(0), round: 1, sent_tick: 1 };
    step(&mut r, env(2, 1, 1, hb));
    drain(&mut r);
    step(&mut r, env(3, 1, 5, vote_req((9, 9))));
    assert!(r.ready().is_none(), "no term change, no answer");
    assert_eq!(r.term, t(1));
    for _ in 0..10 {
        r.tick();
    }
    step(&mut r, env(3, 1, 5, vote_req((9, 9))));
    assert_eq!(ready(&mut r).after_persist, vec![env(1, 3, 5, granted(false))]);
}

/// A leader that demoted itself stays electable while that change is not
/// known committed; once committed, it never campaigns again.
#[test]
fn a_demoted_voter_campaigns_only_while_the_change_is_uncommitted() {
    let demoted = {
        let mut m = members(&[2]);
        m.learners.insert(n(1));
        m
    };
    let make = |commit| {
        let mut s = storage(&[1, 2], &[], hard(1, None, 0));
        s.append(&[conf(1, 1, &demoted)]);
        s.set_hard_state(hard(1, None, commit));
        raft_with(config(1), s)
    };
    let mut uncommitted = make(0);
    uncommitted.campaign();
    assert_eq!(uncommitted.role, Role::Candidate);
    assert_eq!(
        ready(&mut uncommitted).after_persist,
        vec![env(1, 2, 2, vote_req((1, 1)))],
        "it asks the voters of the configuration in its log"
    );
    let mut committed = make(1);
    committed.campaign();
    assert_eq!(committed.role, Role::Follower);
}
