//! Leader-down hints (`report_unreachable` about the leader on a
//! follower): an early campaign, and promises no longer held back by the
//! leader's lease. One test per rule of the contract on
//! [`ringkv_consensus::Replica::report_unreachable`].

use super::*;
use ringkv_consensus::{LEADER_DOWN_CAMPAIGN_TICKS_MAX, LEADER_DOWN_MISSED_HEARTBEATS, ReadMode};

/// The node's defaults: check-quorum on, ReadIndex reads.
fn default_config(id: u64) -> Config {
    let mut c = config(id);
    c.check_quorum = true;
    c
}

/// Acceptor 2 of {1, 2, 3} following leader 1 in ballot (1, 1) (one
/// heartbeat heard), Readys drained.
fn following(cfg: Config) -> Paxos<MemoryLog> {
    let mut r = paxos_with(cfg, storage(&[1, 2, 3], &[], hard(b(1, 1), 0)));
    step(&mut r, env(1, 2, b(1, 1), heartbeat(0, 1, 0)));
    drain(&mut r);
    assert_eq!((r.role, r.leader), (Role::Follower, Some(n(1))), "setup: 2 follows 1");
    r
}

fn tick(r: &mut Paxos<MemoryLog>, times: u32) {
    for _ in 0..times {
        r.tick();
    }
}

/// Peers a prepare went to, in this Ready.
fn prepared(rd: &Ready<Message>) -> Vec<u64> {
    rd.messages
        .iter()
        .chain(&rd.after_persist)
        .filter(|m| matches!(m.body.body, Body::Prepare { .. }))
        .map(|m| m.to.0)
        .collect()
}

/// The hint brings phase 1 forward: prepares within
/// `LEADER_DOWN_CAMPAIGN_TICKS_MAX` ticks, where the election timeout is
/// at least 10.
#[test]
fn leader_down_hint_campaigns_within_the_hint_window() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Candidate, None, b(2, 2))));
    assert_eq!(prepared(&rd), vec![1, 3]);
}

/// Without a hint, the same ticks pass quietly.
#[test]
fn no_hint_no_early_campaign() {
    let mut r = following(default_config(2));
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower);
    assert!(r.ready().is_none_or(|rd| prepared(&rd).is_empty()));
}

/// A peer that is not our leader being unreachable says nothing about the
/// leader.
#[test]
fn hint_about_another_peer_is_ignored() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(3));
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower);
    step(&mut r, env(3, 2, b(2, 3), prepare(0)));
    assert!(r.ready().is_none(), "ignored inside the lease");
}

/// Check-quorum ignores a prepare inside the leader's lease; with the hint
/// the acceptor promises.
#[test]
fn hinted_follower_promises_inside_the_lease() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    step(&mut r, env(3, 2, b(2, 3), prepare(0)));
    let rd = ready(&mut r);
    assert_eq!(rd.after_persist, vec![env(2, 3, b(2, 3), promise(0, vec![]))]);
}

/// Promising another survivor's ballot first cancels our own early
/// campaign (it would only outbid the proposer about to win).
#[test]
fn promising_another_ballot_cancels_the_hinted_campaign() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    step(&mut r, env(3, 2, b(2, 3), prepare(0)));
    drain(&mut r);
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower, "no campaign of our own");
}

/// Hearing from the leader again proves the hint wrong: no early
/// campaign, and the lease is defended again.
#[test]
fn hearing_from_the_leader_cancels_the_hint() {
    let mut r = following(default_config(2));
    r.report_unreachable(n(1));
    step(&mut r, env(1, 2, b(1, 1), heartbeat(0, 2, 1)));
    drain(&mut r);
    tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
    assert_eq!(r.role, Role::Follower);
    step(&mut r, env(3, 2, b(2, 3), prepare(0)));
    assert!(r.ready().is_none_or(|rd| rd.after_persist.is_empty()), "ignored inside the lease");
}

/// A lease promises not to vote for an election timeout: lease reads
/// ignore the hint. So does a configuration without check-quorum, where
/// nobody defends a lease and a wrong hint would depose a live leader.
#[test]
fn hint_is_ignored_with_lease_reads_or_without_check_quorum() {
    let mut lease = default_config(2);
    lease.read_mode = ReadMode::Lease { drift_ticks: 1 };
    let no_check_quorum = config(2);
    for cfg in [lease, no_check_quorum] {
        let mut r = following(cfg);
        r.report_unreachable(n(1));
        tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
        assert_eq!(r.role, Role::Follower);
        assert!(r.ready().is_none_or(|rd| prepared(&rd).is_empty()));
    }
}

/// A hint right after a heartbeat waits until two heartbeats are missed,
/// whatever the drawn wait: a live leader behind a connection that only
/// flapped reaches us first, where a campaign would depose it (no
/// pre-vote). (Several seeds, so some draw a 1-tick wait.)
#[test]
fn hinted_campaign_waits_for_missed_heartbeats() {
    for seed in 1..=20 {
        let mut cfg = default_config(2);
        cfg.seed = seed;
        let mut r = following(cfg);
        r.report_unreachable(n(1));
        tick(&mut r, LEADER_DOWN_MISSED_HEARTBEATS - 1);
        assert_eq!(r.role, Role::Follower, "seed {seed}: campaigned before missing heartbeats");
        step(&mut r, env(1, 2, b(1, 1), heartbeat(0, 2, 1)));
        tick(&mut r, LEADER_DOWN_CAMPAIGN_TICKS_MAX);
        assert_eq!(r.role, Role::Follower, "seed {seed}: the heartbeat cancels the hint");
    }
}
