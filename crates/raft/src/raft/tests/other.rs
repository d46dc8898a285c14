//! Pre-vote (thesis §9.6), check-quorum (§6.2), snapshots (§5.3), limits,
//! recovery and input validation.

use super::*;
use crate::options::RaftError;
use ringkv_consensus::{ProgressState, ProposeError, Snapshot, SnapshotMeta, StepError};

fn pre_vote_req(last: (u64, u64)) -> Body {
    Body::Vote { pre_vote: true, last_index: i(last.0), last_term: t(last.1), transfer: false }
}

fn pre_vote_config(id: u64) -> Config {
    let mut c = config(id);
    c.pre_vote = true;
    c
}

// ------------------------------------------------------------ pre-vote

/// A pre-candidate asks for the next term without entering it: no durable
/// state changes.
#[test]
fn pre_vote_campaign_leaves_term_and_vote_alone() {
    let mut r = raft_with(pre_vote_config(1), storage(&[1, 2, 3], &[1], hard(1, None, 0)));
    r.campaign();
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::PreCandidate, None, 1)));
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.messages,
        vec![env(1, 2, 2, pre_vote_req((1, 1))), env(1, 3, 2, pre_vote_req((1, 1)))]
    );
}

/// A pre-vote is granted on the log check alone, at once (it promises
/// nothing), echoing the proposed term, and changes no state.
#[test]
fn pre_vote_grant_changes_nothing() {
    let mut r = follower(2, &[1, 2, 3], &[1], hard(1, None, 0));
    step(&mut r, env(1, 2, 2, pre_vote_req((1, 1))));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(2, 1, 2, granted(true))]);
    assert!(rd.after_persist.is_empty() && rd.hard_state.is_none());
    assert_eq!((r.term, r.vote), (t(1), None));
}

/// §9.6: no pre-vote while a leader is heard from.
#[test]
fn pre_vote_is_refused_while_a_leader_is_heard() {
    let mut r = follower(2, &[1, 2, 3], &[1], hard(1, None, 0));
    step(&mut r, env(3, 2, 1, Body::Heartbeat { commit: i(0), round: 1, sent_tick: 1 }));
    drain(&mut r);
    step(&mut r, env(1, 2, 2, pre_vote_req((1, 1))));
    assert_eq!(ready(&mut r).messages, vec![env(2, 1, 1, rejected(true))]);
}

/// A quorum of pre-votes starts the real election.
#[test]
fn pre_candidate_campaigns_for_real_on_a_quorum() {
    let mut r = raft_with(pre_vote_config(1), storage(&[1, 2, 3], &[1], hard(1, None, 0)));
    r.campaign();
    drain(&mut r);
    step(&mut r, env(2, 1, 2, granted(true)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Candidate, None, 2)));
    assert_eq!(rd.hard_state, Some(hard(2, Some(1), 0)));
    assert_eq!(
        rd.after_persist,
        vec![env(1, 2, 2, vote_req((1, 1))), env(1, 3, 2, vote_req((1, 1)))]
    );
}

// ------------------------------------------------------------ check-quorum

/// §6.2: a leader that heard from no quorum during an election timeout
/// steps down; one that did stays.
#[test]
fn check_quorum_leader_steps_down_without_a_quorum() {
    let mut cfg = config(1);
    cfg.check_quorum = true;
    let mut r = leader_with(cfg.clone(), &[1, 2, 3], &[], 1);
    // Becoming leader counts every peer as active once; the first check
    // clears the flags, the second finds nobody.
    for _ in 0..20 {
        r.tick();
    }
    assert_eq!(r.role, Role::Follower);

    let mut r = leader_with(cfg, &[1, 2, 3], &[], 1);
    for k in 0..30 {
        r.tick();
        if k % 5 == 0 {
            step(&mut r, env(2, 1, 1, Body::HeartbeatResponse { round: 1, sent_tick: 1 }));
        }
    }
    assert_eq!(r.role, Role::Leader);
}

// ------------------------------------------------------------ snapshots

fn snapshot_leader() -> Raft<MemoryLog> {
    let mut cfg = config(1);
    cfg.snapshot_chunk_bytes = 4;
    let mut r = leader_with(cfg, &[1, 2, 3], &[], 1);
    step(&mut r, env(2, 1, 1, ack(1)));
    r.propose(Bytes::from_static(b"c2")).expect("leader");
    r.propose(Bytes::from_static(b"c3")).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, 1, ack(3)));
    drain(&mut r);
    let m = r.membership_at(i(3)).expect("known");
    r.storage_mut().compact(i(3), m, Bytes::from_static(b"0123456789")).expect("compactable");
    r
}

fn chunk(offset: u64, data: &'static [u8]) -> Body {
    Body::Snapshot {
        meta: SnapshotMeta {
            index: i(3),
            epoch: t(1),
            membership: Membership::new([n(1), n(2), n(3)]),
        },
        total_bytes: 10,
        offset,
        data: Bytes::from_static(data),
    }
}

/// A follower that needs compacted entries gets the snapshot, in chunks.
#[test]
fn leader_sends_a_snapshot_in_chunks_when_entries_are_compacted() {
    let mut r = snapshot_leader();
    // Node 3 never answered; its heartbeat response shows it alive.
    step(&mut r, env(3, 1, 1, Body::HeartbeatResponse { round: 0, sent_tick: 0 }));
    let rd = ready(&mut r);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 3, 1, chunk(0, b"0123")),
            env(1, 3, 1, chunk(4, b"4567")),
            env(1, 3, 1, chunk(8, b"89"))
        ]
    );
    assert_eq!(r.status().progress[1].state, ProgressState::Snapshot);
    // The final acknowledgement (after the follower persisted it) resumes
    // log replication right after the snapshot.
    step(&mut r, env(3, 1, 1, ack(3)));
    let p = r.status().progress[1];
    assert_eq!((p.state, p.matched, p.next), (ProgressState::Replicate, i(3), i(4)));
}

/// The follower assembles chunks in order, asks for a resend on a gap,
/// installs the snapshot through the Ready and acknowledges it only after
/// persisting.
#[test]
fn follower_assembles_and_installs_a_chunked_snapshot() {
    let mut r = follower(3, &[1, 2, 3], &[], hard(1, None, 0));
    step(&mut r, env(1, 3, 1, chunk(0, b"0123")));
    let rd = ready(&mut r);
    assert_eq!(
        rd.messages,
        vec![env(3, 1, 1, Body::SnapshotResponse { index: i(3), next_offset: 4 })]
    );
    step(&mut r, env(1, 3, 1, chunk(8, b"89")));
    assert_eq!(
        ready(&mut r).messages,
        vec![env(3, 1, 1, Body::SnapshotResponse { index: i(3), next_offset: 4 })],
        "a gap: resend from 4"
    );
    step(&mut r, env(1, 3, 1, chunk(4, b"4567")));
    drain(&mut r);
    step(&mut r, env(1, 3, 1, chunk(8, b"89")));
    let rd = ready(&mut r);
    let snap = rd.snapshot.clone().expect("the snapshot is handed out");
    assert_eq!(snap.data, Bytes::from_static(b"0123456789"));
    assert_eq!(snap.meta.index, i(3));
    assert_eq!(rd.hard_state, Some(hard(1, None, 3)));
    assert!(rd.committed.is_empty(), "the snapshot replaces applying");
    assert_eq!(rd.after_persist, vec![env(3, 1, 1, ack(3))]);
    persist(&mut r, &rd);
    assert_eq!(r.storage().snapshot().expect("stored").meta.index, i(3));
    assert_eq!(r.log.first_index(), i(4));
}

/// A restarted follower asks for the snapshot from the start; the leader
/// rewinds.
#[test]
fn snapshot_restarts_from_the_offset_the_follower_asks_for() {
    let mut r = snapshot_leader();
    step(&mut r, env(3, 1, 1, Body::HeartbeatResponse { round: 0, sent_tick: 0 }));
    drain(&mut r);
    step(&mut r, env(3, 1, 1, Body::SnapshotResponse { index: i(3), next_offset: 8 }));
    step(&mut r, env(3, 1, 1, Body::SnapshotResponse { index: i(3), next_offset: 0 }));
    let rd = ready(&mut r);
    assert_eq!(rd.messages[0], env(1, 3, 1, chunk(0, b"0123")));
}

/// A snapshot the caller reports undeliverable is abandoned; the peer
/// probes again.
#[test]
fn unreachable_peer_leaves_snapshot_state() {
    let mut r = snapshot_leader();
    step(&mut r, env(3, 1, 1, Body::HeartbeatResponse { round: 0, sent_tick: 0 }));
    drain(&mut r);
    r.report_unreachable(n(3));
    assert_eq!(r.status().progress[1].state, ProgressState::Probe);
}

// ------------------------------------------------------------ limits

/// Proposals are refused with a clear error where they cannot succeed.
#[test]
fn proposals_are_refused_without_leadership() {
    let mut f = follower(2, &[1, 2, 3], &[], hard(1, None, 0));
    assert_eq!(f.propose(Bytes::new()), Err(ProposeError::NotLeader { leader: None }));
    step(&mut f, env(1, 2, 1, Body::Heartbeat { commit: i(0), round: 1, sent_tick: 1 }));
    assert_eq!(f.propose(Bytes::new()), Err(ProposeError::NotLeader { leader: Some(n(1)) }));
}

/// The uncommitted budget answers `Busy` past its limit and refills as
/// entries commit; a command over the size limit is `TooLarge`.
#[test]
fn uncommitted_budget_and_size_limit() {
    let mut cfg = config(1);
    cfg.max_uncommitted_bytes = 100;
    cfg.max_command_bytes = 50;
    let mut r = leader_with(cfg, &[1, 2], &[], 1);
    step(&mut r, env(2, 1, 1, ack(1)));
    drain(&mut r);
    let big = Bytes::from(vec![0u8; 51]);
    assert_eq!(r.propose(big), Err(ProposeError::TooLarge { bytes: 51, limit: 50 }));
    let c = Bytes::from(vec![0u8; 30]);
    r.propose(c.clone()).expect("within budget");
    assert_eq!(r.propose(c.clone()), Err(ProposeError::Busy { pending: 54, limit: 100 }));
    drain(&mut r);
    step(&mut r, env(2, 1, 1, ack(2)));
    assert!(r.propose(c).is_ok(), "committing frees the budget");
}

// ------------------------------------------------------------ recovery and input

/// A restarted replica recovers term, vote, commit and membership (the
/// snapshot's plus membership entries in the log).
#[test]
fn restart_recovers_durable_state() {
    let mut s = MemoryLog::new(Membership::new([n(1), n(2), n(3)]));
    let four = Membership::new([n(1), n(2), n(3), n(4)]);
    let conf = Entry {
        index: i(3),
        epoch: t(2),
        kind: EntryKind::Membership,
        payload: Bytes::from(ringkv_consensus::encode_to_vec(&four)),
    };
    s.append(&[cmd(1, 1), cmd(2, 1)]);
    s.compact(i(1), Membership::new([n(1), n(2), n(3)]), Bytes::new()).expect("compactable");
    s.append(&[conf, cmd(4, 2)]);
    s.set_hard_state(hard(5, Some(2), 3));
    let mut r = raft_with(config(1), s);
    let st = r.status();
    assert_eq!((st.epoch, r.vote, st.commit, st.last_index), (t(5), Some(n(2)), i(3), i(4)));
    assert_eq!(st.membership, four);
    assert_eq!(st.role, Role::Follower);
    let rd = ready(&mut r);
    assert_eq!(rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(), vec![i(2), i(3)]);
}

/// The node records a commit-only hard state lazily, so the state machine
/// may have applied past the recorded commit index before a crash: what it
/// applied was committed, and the restarted replica counts it so (never
/// past its own log), handing out only the entries after it.
#[test]
fn restart_counts_what_the_state_machine_applied_as_committed() {
    let s = storage(&[1, 2, 3], &[1, 1, 1, 1], hard(1, None, 1));
    let mut options = RaftOptions::new(config(1));
    options.applied = i(3);
    let mut r = Raft::new(options, s).expect("applied within the log");
    assert_eq!(r.status().commit, i(3));
    let rd = ready(&mut r);
    assert_eq!(rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(), Vec::<LogIndex>::new());

    let s = storage(&[1, 2, 3], &[1, 1], hard(1, None, 1));
    let mut options = RaftOptions::new(config(1));
    options.applied = i(5);
    let r = Raft::new(options, s).expect("applied past the log is capped");
    assert_eq!(r.status().commit, i(2));
}

/// Storage whose hard state commits past its log is refused.
#[test]
fn commit_past_the_log_is_refused() {
    let s = storage(&[1], &[1], hard(1, None, 5));
    let e = Raft::new(RaftOptions::new(config(1)), s).expect_err("inconsistent storage");
    assert_eq!(e, RaftError::CommitPastLog { commit: i(5), last: i(1) });
}

/// Lease reads without check-quorum are refused at construction.
#[test]
fn lease_without_check_quorum_is_refused() {
    let mut cfg = config(1);
    cfg.read_mode = ringkv_consensus::ReadMode::Lease { drift_ticks: 1 };
    let e = Raft::new(RaftOptions::new(cfg), storage(&[1], &[], hard(0, None, 0)));
    assert!(matches!(e, Err(RaftError::Config(_))));
}

/// Misaddressed or self-contradicting messages are errors, not panics.
#[test]
fn misaddressed_messages_are_refused() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(1, None, 0));
    let mut m = env(2, 1, 1, Body::TimeoutNow);
    m.shard = ShardId(9);
    assert!(matches!(r.step(m), Err(StepError::WrongShard { .. })));
    assert!(matches!(
        r.step(env(2, 7, 1, Body::TimeoutNow)),
        Err(StepError::WrongRecipient { .. })
    ));
    assert!(matches!(r.step(env(1, 1, 1, Body::TimeoutNow)), Err(StepError::Malformed { .. })));
    let gap = append((0, 0), vec![cmd(2, 1)], 0);
    assert!(matches!(r.step(env(2, 1, 1, gap)), Err(StepError::Malformed { .. })));
}

/// A heartbeat response frees a stalled window, so lost appends are
/// retried rather than waiting forever.
#[test]
fn heartbeat_response_unsticks_a_full_window() {
    let mut cfg = config(1);
    cfg.max_inflight_messages = 1;
    let mut r = leader_with(cfg, &[1, 2], &[], 1);
    step(&mut r, env(2, 1, 1, ack(1)));
    drain(&mut r);
    r.propose(Bytes::from_static(b"c2")).expect("leader");
    drain(&mut r);
    r.propose(Bytes::from_static(b"c3")).expect("leader");
    let rd = ready(&mut r);
    assert!(rd.messages.is_empty(), "the window of one is full");
    persist(&mut r, &rd);
    // The append of 2 was lost; the follower is alive.
    step(&mut r, env(2, 1, 1, Body::HeartbeatResponse { round: 0, sent_tick: 0 }));
    let rd = ready(&mut r);
    assert_eq!(
        rd.messages,
        vec![env(
            1,
            2,
            1,
            append((2, 1), vec![Entry { payload: Bytes::from_static(b"c3"), ..cmd(3, 1) }], 1)
        )]
    );
}

/// Installing a snapshot over an empty learner sets its configuration.
#[test]
fn snapshot_teaches_a_new_replica_its_configuration() {
    let mut r = raft_with(config(4), MemoryLog::new(Membership::default()));
    let meta =
        SnapshotMeta { index: i(5), epoch: t(2), membership: Membership::new([n(1), n(2), n(4)]) };
    let body = Body::Snapshot { meta: meta.clone(), total_bytes: 0, offset: 0, data: Bytes::new() };
    step(&mut r, env(1, 4, 2, body));
    assert_eq!(r.status().membership, meta.membership);
    let rd = ready(&mut r);
    assert_eq!(rd.snapshot, Some(Snapshot { meta, data: Bytes::new() }));
}
