//! Figure 2 of the Raft paper, rule by rule, plus the durability rules
//! that the figure's "persistent state ... updated on stable storage before
//! responding to RPCs" implies.

use super::*;
use crate::message::RejectHint;
use ringkv_consensus::ProgressState;

// ------------------------------------------------------------ All servers

/// "If commitIndex > lastApplied: increment lastApplied, apply
/// log[lastApplied]": committed entries are handed out in order, across
/// Readys when the per-Ready byte limit splits them.
#[test]
fn committed_entries_are_applied_in_order_within_the_byte_limit() {
    let mut cfg = config(1);
    cfg.max_committed_bytes_per_ready = 1;
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[1, 1, 1], hard(1, None, 3)));
    let rd = ready(&mut r);
    assert_eq!(rd.committed, vec![cmd(1, 1)], "at least one entry per Ready, at most the limit");
    persist(&mut r, &rd);
    assert_eq!(ready(&mut r).committed, vec![cmd(2, 1)]);
    assert_eq!(ready(&mut r).committed, vec![cmd(3, 1)]);
    assert!(r.ready().is_none());
}

/// "If RPC request or response contains term T > currentTerm: set
/// currentTerm = T, convert to follower".
#[test]
fn higher_term_in_a_response_makes_the_leader_a_follower() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    step(&mut r, env(2, 1, 3, ack(0)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, None, 3)));
    assert_eq!(rd.hard_state, Some(hard(3, None, 1)));
    assert!(rd.messages.is_empty() && rd.entries.is_empty());
}

/// The same rule for a request: an append of a higher term also names the
/// leader.
#[test]
fn higher_term_append_makes_a_candidate_follow_its_sender() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(0, None, 0));
    r.campaign();
    drain(&mut r);
    step(&mut r, env(2, 1, 5, append((0, 0), vec![], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, Some(2), 5)));
    assert_eq!(rd.hard_state, Some(hard(5, None, 0)));
    assert_eq!(rd.after_persist, vec![env(1, 2, 5, ack(0))]);
}

// ------------------------------------------------------------ Followers

/// "If election timeout elapses without receiving AppendEntries from the
/// current leader or granting vote to candidate: convert to candidate";
/// Candidates: "on conversion: increment currentTerm, vote for self, reset
/// election timer, send RequestVote RPCs to all other servers".
#[test]
fn election_timeout_starts_an_election() {
    let mut r = follower(1, &[1, 2, 3], &[1, 1], hard(1, None, 0));
    let timeout = r.randomized_election_ticks;
    assert!((10..20).contains(&timeout), "drawn from [election, 2 * election)");
    for _ in 1..timeout {
        r.tick();
    }
    assert!(r.ready().is_none(), "nothing before the timeout");
    r.tick();
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Candidate, None, 2)));
    assert_eq!(rd.hard_state, Some(hard(2, Some(1), 0)));
    // The requests promise the new term and the self-vote: they leave only
    // once the hard state above is durable (thesis §3.8).
    assert_eq!(
        rd.after_persist,
        vec![env(1, 2, 2, vote_req((2, 1))), env(1, 3, 2, vote_req((2, 1)))]
    );
    assert!(rd.entries.is_empty() && rd.messages.is_empty());
}

/// Hearing from the leader resets the election timer.
#[test]
fn heartbeat_from_the_leader_resets_the_election_timer() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(1, None, 0));
    let timeout = r.randomized_election_ticks;
    for _ in 1..timeout {
        r.tick();
    }
    let hb = Body::Heartbeat { commit: i(0), round: 1, sent_tick: 7 };
    step(&mut r, env(2, 1, 1, hb));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, Some(2), 1)));
    assert_eq!(
        rd.messages,
        vec![env(1, 2, 1, Body::HeartbeatResponse { round: 1, sent_tick: 7 })],
        "the response echoes round and tick, at once (it promises nothing durable)"
    );
    for _ in 1..timeout {
        r.tick();
    }
    assert_eq!(r.role, Role::Follower);
}

/// Granting a vote resets the election timer too.
#[test]
fn granting_a_vote_resets_the_election_timer() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(1, None, 0));
    let timeout = r.randomized_election_ticks;
    for _ in 1..timeout {
        r.tick();
    }
    step(&mut r, env(2, 1, 2, vote_req((0, 0))));
    drain(&mut r);
    for _ in 1..timeout {
        r.tick();
    }
    assert_eq!(r.role, Role::Follower);
}

// ------------------------------------------------------------ Candidates

/// "If votes received from majority of servers: become leader" — counting
/// our own vote only once it is durable; and Leaders: "upon election: send
/// initial empty AppendEntries" (here the no-op of the new term).
#[test]
fn candidate_wins_with_its_durable_vote_and_sends_a_noop() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(0, None, 0));
    r.campaign();
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(1, Some(1), 0)));
    step(&mut r, env(2, 1, 1, granted(false)));
    assert_eq!(r.role, Role::Candidate, "one grant and an unpersisted own vote is no majority");
    persist(&mut r, &rd);
    assert_eq!(r.role, Role::Leader);
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Leader, Some(1), 1)));
    assert_eq!(rd.hard_state, None);
    assert_eq!(rd.entries, vec![noop(1, 1)]);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, 1, append((0, 0), vec![noop(1, 1)], 0)),
            env(1, 3, 1, append((0, 0), vec![noop(1, 1)], 0)),
        ]
    );
}

/// A majority of rejections ends the campaign.
#[test]
fn candidate_loses_on_a_majority_of_rejections() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(0, None, 0));
    r.campaign();
    drain(&mut r);
    step(&mut r, env(2, 1, 1, rejected(false)));
    assert_eq!(r.role, Role::Candidate);
    step(&mut r, env(3, 1, 1, rejected(false)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, None, 1)));
    assert_eq!(rd.hard_state, None, "the term and our vote stay");
}

/// "If AppendEntries RPC received from new leader: convert to follower".
#[test]
fn candidate_follows_a_leader_of_its_term() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(0, None, 0));
    r.campaign();
    drain(&mut r);
    step(&mut r, env(2, 1, 1, append((0, 0), vec![noop(1, 1)], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, Some(2), 1)));
    assert_eq!(rd.entries, vec![noop(1, 1)]);
    assert_eq!(rd.after_persist, vec![env(1, 2, 1, ack(1))]);
}

/// "If election timeout elapses: start new election".
#[test]
fn candidate_times_out_into_a_new_election() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(0, None, 0));
    r.campaign();
    drain(&mut r);
    let timeout = r.randomized_election_ticks;
    for _ in 0..timeout {
        r.tick();
    }
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(2, Some(1), 0)));
    assert_eq!(
        rd.after_persist,
        vec![env(1, 2, 2, vote_req((0, 0))), env(1, 3, 2, vote_req((0, 0)))]
    );
}

// ------------------------------------------------------------ Leaders

/// "Repeat during idle periods to prevent election timeouts": heartbeats
/// carry the commit index, capped at what each follower is known to match.
#[test]
fn heartbeats_carry_the_commit_index_capped_per_follower() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    r.propose(Bytes::from_static(b"c2")).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, 1, ack(2)));
    drain(&mut r);
    assert_eq!(r.log.committed, i(2));
    r.tick();
    let rd = ready(&mut r);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, 1, Body::Heartbeat { commit: i(2), round: 1, sent_tick: 1 }),
            env(1, 3, 1, Body::Heartbeat { commit: i(1), round: 1, sent_tick: 1 }),
        ]
    );
}

/// "If command received from client: append entry to local log" and "if
/// last log index >= nextIndex for a follower: send AppendEntries with log
/// entries starting at nextIndex".
#[test]
fn proposal_is_appended_and_replicated() {
    let mut r = settled_leader(1, &[1, 2, 3], 1);
    let p = r.propose(Bytes::from_static(b"c2")).expect("leader");
    assert_eq!((p.index, p.epoch), (i(2), t(1)));
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![cmd(2, 1)]);
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, 1, append((1, 1), vec![cmd(2, 1)], 1)),
            env(1, 3, 1, append((1, 1), vec![cmd(2, 1)], 1)),
        ]
    );
}

/// Proposals made between two Readys travel together, split only by the
/// per-message byte limit, and only as many messages as the in-flight
/// window allows.
#[test]
fn proposals_are_batched_under_the_byte_limit_and_window() {
    let mut cfg = config(1);
    // Two 26-byte entries fit, a third does not.
    cfg.max_message_bytes = 60;
    cfg.max_inflight_messages = 2;
    let mut r = leader_with(cfg, &[1, 2], &[], 1);
    step(&mut r, env(2, 1, 1, ack(1)));
    drain(&mut r);
    for _ in 0..5 {
        r.propose(Bytes::from_static(b"cx")).expect("leader");
    }
    let rd = ready(&mut r);
    let e = |k| Entry { payload: Bytes::from_static(b"cx"), ..cmd(k, 1) };
    assert_eq!(
        rd.messages,
        vec![
            env(1, 2, 1, append((1, 1), vec![e(2), e(3)], 1)),
            env(1, 2, 1, append((3, 1), vec![e(4), e(5)], 1))
        ],
        "two messages fill the window; entry 6 waits"
    );
    persist(&mut r, &rd);
    step(&mut r, env(2, 1, 1, ack(3)));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(1, 2, 1, append((5, 1), vec![e(6)], 3))]);
}

/// "If successful: update nextIndex and matchIndex for follower".
#[test]
fn successful_append_updates_progress_and_leaves_probe() {
    let mut r = leader(1, &[1, 2, 3], &[], 1);
    let p = r.status().progress;
    assert_eq!((p[0].matched, p[0].next, p[0].state), (i(0), i(1), ProgressState::Probe));
    step(&mut r, env(2, 1, 1, ack(1)));
    let p = r.status().progress;
    assert_eq!((p[0].matched, p[0].next, p[0].state), (i(1), i(2), ProgressState::Replicate));
}

/// "If AppendEntries fails because of log inconsistency: decrement
/// nextIndex and retry" — by whole terms, using the follower's hint
/// (thesis §5.3; Figure 7's follower (f) against the figure's leader).
#[test]
fn rejection_backtracks_a_whole_term_with_the_hint() {
    let mut r = leader(1, &[1, 2, 3], &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6], 8);
    assert_eq!(r.log.last_index(), i(11), "the no-op follows the figure's log");
    // Follower (f) holds [1,1,1,4,4,4,4]: it rejects prev 10@6 and hints
    // that its term at index 7 is 4.
    let hint = RejectHint { index: i(7), term: t(4) };
    step(&mut r, env(2, 1, 8, Body::AppendResponse { index: i(10), reject: Some(hint) }));
    let rd = ready(&mut r);
    // The leader's last index with a term <= 4 is 5: retry right after it.
    let mut entries: Vec<Entry> =
        [5, 5, 6, 6, 6].iter().zip(6..).map(|(&term, k)| cmd(k, term)).collect();
    entries.push(noop(11, 8));
    assert_eq!(rd.messages, vec![env(1, 2, 8, append((5, 4), entries, 0))]);
}

/// "If there exists an N such that N > commitIndex, a majority of
/// matchIndex[i] >= N, and log[N].term == currentTerm: set commitIndex =
/// N" (§5.4.2, Figure 8): an entry of an earlier term is not committed by
/// counting replicas, only with an entry of the current term.
#[test]
fn only_current_term_entries_commit_by_counting() {
    let mut r = leader(1, &[1, 2, 3], &[1, 2], 3);
    step(&mut r, env(2, 1, 3, ack(2)));
    assert_eq!(r.log.committed, i(0), "2@2 is on a majority but is of an earlier term");
    step(&mut r, env(2, 1, 3, ack(3)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(3, Some(1), 3)));
    assert_eq!(rd.committed, vec![cmd(1, 1), cmd(2, 2), noop(3, 3)]);
}

/// The leader's own log counts toward a quorum only once durable.
#[test]
fn leader_counts_its_own_entry_only_once_durable() {
    let mut r = settled_leader(1, &[1, 2, 3, 4, 5], 1);
    r.propose(Bytes::from_static(b"c2")).expect("leader");
    let rd = ready(&mut r);
    step(&mut r, env(2, 1, 1, ack(2)));
    step(&mut r, env(3, 1, 1, ack(2)));
    assert_eq!(
        r.log.committed,
        i(1),
        "two followers and an unpersisted leader are no majority of five"
    );
    persist(&mut r, &rd);
    assert_eq!(r.log.committed, i(2));
}

// ------------------------------------------------------------ RequestVote receiver

/// "Reply false if term < currentTerm".
#[test]
fn vote_for_a_lower_term_is_rejected_with_our_term() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(3, None, 0));
    step(&mut r, env(2, 1, 2, vote_req((5, 2))));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(1, 2, 3, rejected(false))]);
    assert_eq!(rd.hard_state, None);
}

/// "If votedFor is null or candidateId, and candidate's log is at least as
/// up-to-date as receiver's log, grant vote" — and the grant leaves only
/// after the vote is durable.
#[test]
fn vote_is_granted_after_persisting_it() {
    let mut r = follower(1, &[1, 2, 3], &[1], hard(1, None, 0));
    step(&mut r, env(2, 1, 2, vote_req((1, 1))));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, None, 2)));
    assert_eq!(rd.hard_state, Some(hard(2, Some(2), 0)));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.after_persist, vec![env(1, 2, 2, granted(false))]);
}

/// One vote per term; asking again for the same candidate is fine.
#[test]
fn one_vote_per_term() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(1, None, 0));
    step(&mut r, env(2, 1, 2, vote_req((0, 0))));
    drain(&mut r);
    step(&mut r, env(3, 1, 2, vote_req((0, 0))));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(1, 3, 2, rejected(false))]);
    step(&mut r, env(2, 1, 2, vote_req((0, 0))));
    let rd = ready(&mut r);
    assert_eq!(rd.after_persist, vec![env(1, 2, 2, granted(false))]);
}

/// §5.4.1: the up-to-date check compares last terms, then lengths.
#[test]
fn vote_requires_an_up_to_date_log() {
    // Our log: [1, 1, 2].
    for (last, grant) in
        [((3, 1), false), ((2, 2), false), ((3, 2), true), ((1, 3), true), ((9, 1), false)]
    {
        let mut r = follower(1, &[1, 2, 3], &[1, 1, 2], hard(2, None, 0));
        step(&mut r, env(2, 1, 3, vote_req(last)));
        let rd = ready(&mut r);
        let (now, after) = if grant {
            (vec![], vec![env(1, 2, 3, granted(false))])
        } else {
            (vec![env(1, 2, 3, rejected(false))], vec![])
        };
        assert_eq!((rd.messages, rd.after_persist), (now, after), "candidate last {last:?}");
    }
}

// ------------------------------------------------------------ AppendEntries receiver

/// "Reply false if term < currentTerm" — we tell the stale leader our term
/// when check-quorum or pre-vote is on, and ignore it otherwise.
#[test]
fn append_from_a_stale_term_is_refused() {
    let mut r = follower(1, &[1, 2, 3], &[1], hard(3, None, 0));
    step(&mut r, env(2, 1, 2, append((1, 1), vec![cmd(2, 2)], 1)));
    assert!(r.ready().is_none(), "ignored: no entries, no commit");
    let mut cfg = config(1);
    cfg.check_quorum = true;
    let mut r = raft_with(cfg, storage(&[1, 2, 3], &[1], hard(3, None, 0)));
    step(&mut r, env(2, 1, 2, append((1, 1), vec![cmd(2, 2)], 1)));
    let rd = ready(&mut r);
    assert!(rd.entries.is_empty());
    assert_eq!(rd.messages, vec![env(1, 2, 3, ack(0))]);
}

/// "Reply false if log doesn't contain an entry at prevLogIndex whose term
/// matches prevLogTerm", with the hint for fast backtracking.
#[test]
fn append_with_a_mismatched_prev_is_rejected_with_a_hint() {
    let mut r = follower(1, &[1, 2, 3], &[1, 1, 1, 4, 4, 4, 4], hard(7, None, 0));
    step(&mut r, env(2, 1, 8, append((10, 6), vec![cmd(11, 8)], 9)));
    let rd = ready(&mut r);
    assert!(rd.entries.is_empty());
    let hint = RejectHint { index: i(7), term: t(4) };
    assert_eq!(
        rd.messages,
        vec![env(1, 2, 8, Body::AppendResponse { index: i(10), reject: Some(hint) })]
    );
    assert!(rd.after_persist.is_empty(), "a rejection promises nothing");
}

/// "If an existing entry conflicts with a new one (same index but
/// different terms), delete the existing entry and all that follow it";
/// "append any new entries not already in the log"; "if leaderCommit >
/// commitIndex, set commitIndex = min(leaderCommit, index of last new
/// entry)".
#[test]
fn conflicting_suffix_is_replaced_and_commit_follows_the_leader() {
    let mut r = follower(1, &[1, 2, 3], &[1, 1, 2, 2], hard(3, None, 0));
    step(&mut r, env(2, 1, 3, append((2, 1), vec![cmd(3, 3), cmd(4, 3), cmd(5, 3)], 4)));
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![cmd(3, 3), cmd(4, 3), cmd(5, 3)], "written from index 3 on");
    assert_eq!(rd.truncates_from(), Some(i(3)));
    assert_eq!(rd.hard_state, Some(hard(3, None, 4)));
    assert_eq!(
        rd.committed,
        vec![cmd(1, 1), cmd(2, 1)],
        "3 and 4 are committed but not durable here yet"
    );
    assert_eq!(rd.after_persist, vec![env(1, 2, 3, ack(5))]);
    persist(&mut r, &rd);
    assert_eq!(ready(&mut r).committed, vec![cmd(3, 3), cmd(4, 3)]);
}

/// Entries already in the log are not written again.
#[test]
fn duplicate_entries_are_not_rewritten() {
    let mut r = follower(1, &[1, 2, 3], &[1, 1, 1], hard(1, None, 0));
    step(&mut r, env(2, 1, 1, append((0, 0), vec![cmd(1, 1), cmd(2, 1)], 0)));
    let rd = ready(&mut r);
    assert!(rd.entries.is_empty(), "nothing new, and the longer log is kept");
    assert_eq!(rd.after_persist, vec![env(1, 2, 1, ack(2))]);
    assert_eq!(r.log.last_index(), i(3));
}

/// The commit index never passes what the append showed to match.
#[test]
fn commit_is_capped_at_the_last_new_entry() {
    let mut r = follower(1, &[1, 2, 3], &[1, 1, 1, 1, 1], hard(1, None, 0));
    step(&mut r, env(2, 1, 1, append((2, 1), vec![], 5)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(1, None, 2)));
    assert_eq!(rd.committed, vec![cmd(1, 1), cmd(2, 1)]);
    assert_eq!(rd.after_persist, vec![env(1, 2, 1, ack(2))]);
}

/// Entries below our commit index are skipped, not compared again.
#[test]
fn entries_below_the_commit_index_are_skipped() {
    let mut r = follower(1, &[1, 2, 3], &[1, 1, 1], hard(1, None, 3));
    drain(&mut r);
    step(&mut r, env(2, 1, 1, append((1, 1), vec![cmd(2, 1), cmd(3, 1), cmd(4, 1)], 4)));
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![cmd(4, 1)]);
    assert_eq!(rd.after_persist, vec![env(1, 2, 1, ack(4))]);
}

/// `Ready::committed` holds only entries durable here: a follower that
/// learns the commit index with the entries applies them a Ready later.
#[test]
fn committed_entries_wait_until_durable_here() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(1, None, 0));
    step(&mut r, env(2, 1, 1, append((0, 0), vec![cmd(1, 1), cmd(2, 1)], 2)));
    let rd = ready(&mut r);
    assert_eq!(rd.entries.len(), 2);
    assert_eq!(rd.hard_state, Some(hard(1, None, 2)));
    assert!(rd.committed.is_empty());
    persist(&mut r, &rd);
    assert_eq!(ready(&mut r).committed, vec![cmd(1, 1), cmd(2, 1)]);
}

/// The same entries arriving twice, before the first copy is durable, are
/// written once and acknowledged twice, each ack after persistence.
#[test]
fn redelivered_append_is_acknowledged_after_persistence_again() {
    let mut r = follower(1, &[1, 2, 3], &[], hard(1, None, 0));
    let m = env(2, 1, 1, append((0, 0), vec![cmd(1, 1)], 0));
    step(&mut r, m.clone());
    let first = ready(&mut r);
    step(&mut r, m);
    let second = ready(&mut r);
    assert_eq!(first.entries, vec![cmd(1, 1)]);
    assert!(second.entries.is_empty());
    assert_eq!(second.after_persist, vec![env(1, 2, 1, ack(1))]);
}
