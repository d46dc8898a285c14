//! Leader-down hints (`report_unreachable` about the leader on a
//! follower): an early campaign, and votes no longer held back by the
//! leader's lease. One test per rule of the contract on
//! [`ringkv_consensus::Replica::report_unreachable`].

use super::*;
use ringkv_consensus::{LEADER_DOWN_CAMPAIGN_TICKS_MAX, LEADER_DOWN_MISSED_HEARTBEATS, ReadMode};

fn pre_vote_req(last: (u64, u64)) -> Body {
    Body::Vote { pre_vote: true, last_index: i(last.0), last_term: t(last.1), transfer: false }
}

/// etcd's defaults: pre-vote and check-quorum on, ReadIndex reads.
fn default_config(id: u64) -> Config {
    let mut c = config(id);
    c.pre_vote = true;
    c.check_quorum = true;
    c
}

/// Follower 2 of {1, 2, 3} in term 1, its log `[1]`, following leader 1
/// (one heartbeat heard), Readys drained.
fn following(cfg: Config) -> Raft<MemoryLog> {
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[1], hard(1, None, 0)));
    step(&mut r, env(1, 2, 1, Body::Heartbeat { commit: i(0), round: 1, sent_tick: 1 }));
    drain(&mut r);
    assert_eq!((r.role, r.leader), (Role::Follower, Some(n(1))), "setup: 2 follows 1");
    r
}

fn tick(r: &mut Raft<MemoryLog>, times: u32) {
    for _ in 0..times {
        r.tick();
    }
}

/// The hint brings the campaign forward: a pre-vote within
/// `LEADER_DOWN_CAMPAIGN_TICKS_MAX` ticks, where the election timeout is
/// at least 10.
#[test]
fn leader_down_hint_campaigns_within_the_hint_window() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::PreCandidate, None, 1)));
    assert_eq!(
        rd.messages,
        vec![env(2, 1, 2, pre_vote_req((1, 1))), env(2, 3, 2, pre_vote_req((1, 1)))]
    );
}

/// Without a hint, the same ticks pass quietly.
#[test]
fn no_hint_no_early_campaign() {
    let mut r = following(default_config(2));
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower);
    assert!(r.ready().is_none_or(|rd| rd.messages.is_empty()));
}

/// A peer that is not our leader being unreachable says nothing about the
/// leader.
#[test]
fn hint_about_another_peer_is_ignored() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(3));
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower);
    step(&mut r, env(3, 2, 2, pre_vote_req((1, 1))));
    assert_eq!(ready(&mut r).messages, vec![env(2, 3, 1, rejected(true))]);
}

/// A follower that got the hint grants a pre-vote inside the leader's
/// lease, which one that still trusts its leader refuses.
#[test]
fn hinted_follower_grants_pre_vote_inside_the_lease() {
    let mut trusting = following(default_config(2));
    step(&mut trusting, env(3, 2, 2, pre_vote_req((1, 1))));
    assert_eq!(ready(&mut trusting).messages, vec![env(2, 3, 1, rejected(true))]);

    let mut hinted = following(default_config(2));
    hinted.report_unreachable(n(1));
    step(&mut hinted, env(3, 2, 2, pre_vote_req((1, 1))));
    assert_eq!(ready(&mut hinted).messages, vec![env(2, 3, 2, granted(true))]);
}

/// Check-quorum drops a real vote request inside the lease; with the hint
/// the follower votes.
#[test]
fn hinted_follower_votes_inside_the_lease() {
    let mut trusting = following(default_config(2));
    step(&mut trusting, env(3, 2, 2, vote_req((1, 1))));
    assert!(trusting.ready().is_none_or(|rd| rd.after_persist.is_empty()));

    let mut hinted = following(default_config(2));
    hinted.report_unreachable(n(1));
    step(&mut hinted, env(3, 2, 2, vote_req((1, 1))));
    let rd = ready(&mut hinted);
    assert_eq!(rd.hard_state, Some(hard(2, Some(3), 0)));
    assert_eq!(rd.after_persist, vec![env(2, 3, 2, granted(false))]);
}

/// Granting another survivor's pre-vote first cancels our own early
/// campaign (two would split the vote), but not the grants.
#[test]
fn granting_a_pre_vote_cancels_the_hinted_campaign() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    step(&mut r, env(3, 2, 2, pre_vote_req((1, 1))));
    drain(&mut r);
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower, "no campaign of our own");
    step(&mut r, env(3, 2, 2, vote_req((1, 1))));
    assert_eq!(ready(&mut r).after_persist, vec![env(2, 3, 2, granted(false))]);
}

/// Hearing from the leader again proves the hint wrong: no early
/// campaign, and the lease is defended again.
#[test]
fn hearing_from_the_leader_cancels_the_hint() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    step(&mut r, env(1, 2, 1, Body::Heartbeat { commit: i(0), round: 2, sent_tick: 2 }));
    drain(&mut r);
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower);
    step(&mut r, env(3, 2, 2, pre_vote_req((1, 1))));
    assert_eq!(ready(&mut r).messages, vec![env(2, 3, 1, rejected(true))]);
}

/// A lease promises not to vote for an election timeout: lease reads
/// ignore the hint. So does a configuration without pre-vote, where a
/// wrong hint would raise everyone's term.
#[test]
fn hint_is_ignored_with_lease_reads_or_without_pre_vote() {
    let mut lease = default_config(2);
    lease.read_mode = ReadMode::Lease { drift_ticks: 1 };
    let mut no_pre_vote = default_config(2);
    no_pre_vote.pre_vote = false;
    for cfg in [lease, no_pre_vote] {
        let mut r = following(cfg);
        r.report_unreachable(n(1));
        tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
        assert_eq!(r.role, Role::Follower);
        step(&mut r, env(3, 2, 2, pre_vote_req((1, 1))));
        assert_eq!(ready(&mut r).messages, vec![env(2, 3, 1, rejected(true))]);
    }
}

/// A hint right after a heartbeat waits until two heartbeats are missed,
/// whatever the drawn wait: a live leader behind a connection that only
/// flapped reaches us first. (Several seeds, so some draw a 1-tick wait.)
#[test]
fn hinted_campaign_waits_for_missed_heartbeats() {
    for seed in 1..=20 {
        let mut cfg = default_config(2);
        cfg.seed = seed;
        let mut r = following(cfg);
        r.report_unreachable(n(1));
        tick(&mut r, LEADER_DOWN_MISSED_HEARTBEATS - 1);
        assert_eq!(r.role, Role::Follower, "seed {seed}: campaigned before missing heartbeats");
        step(&mut r, env(1, 2, 1, Body::Heartbeat { commit: i(0), round: 2, sent_tick: 2 }));
        tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
        assert_eq!(r.role, Role::Follower, "seed {seed}: the heartbeat cancels the hint");
    }
}
