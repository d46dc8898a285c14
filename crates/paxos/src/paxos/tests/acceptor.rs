//! The acceptor's rules (phase 1b, phase 2b) and learning the commit point.

use super::*;

/// PMS P1a: promise a ballot only above the one promised; a lower one is
/// told the promised ballot (Nack) so its proposer steps down.
#[test]
fn promise_only_for_a_higher_ballot() {
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(b(3, 3), 0));
    step(&mut r, env(1, 2, b(2, 1), prepare(0)));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(2, 1, b(3, 3), Body::Nack)]);
    assert_eq!(rd.hard_state, None, "a refusal changes nothing");
    assert!(rd.after_persist.is_empty());

    step(&mut r, env(1, 2, b(4, 1), prepare(0)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(b(4, 1), 0)));
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, None, b(4, 1))));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.after_persist, vec![env(2, 1, b(4, 1), promise(0, vec![]))]);
}

/// A promise leaves only once the promised ballot is durable: it is in
/// `after_persist`, with the hard state in the same Ready.
#[test]
fn promise_waits_for_persistence() {
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(Epoch::ZERO, 0));
    step(&mut r, env(1, 2, b(1, 1), prepare(0)));
    let rd = ready(&mut r);
    assert!(rd.needs_persist());
    assert_eq!(rd.hard_state.map(|h| h.epoch), Some(b(1, 1)));
    assert!(rd.messages.is_empty(), "nothing that promises may leave before the fsync");
    assert_eq!(rd.after_persist.len(), 1);
}

/// Phase 1b reports every value accepted above the candidate's commit point,
/// with the ballot it was accepted in; holes (vacant slots) and slots at or
/// below the candidate's commit point are not reported.
#[test]
fn promise_carries_accepted_values_above_the_commit_point() {
    let log = [cmd(1, b(1, 1), "a"), cmd(2, b(1, 1), "b"), vacant(3), cmd(4, b(2, 3), "d")];
    let mut r = acceptor(2, &[1, 2, 3], &log, hard(b(2, 3), 1));
    step(&mut r, env(1, 2, b(5, 1), prepare(1)));
    let rd = ready(&mut r);
    assert_eq!(
        rd.after_persist,
        vec![env(2, 1, b(5, 1), promise(1, vec![cmd(2, b(1, 1), "b"), cmd(4, b(2, 3), "d")]))]
    );
}

/// An acceptor that knows more slots chosen than the candidate refuses:
/// it could not report compacted slots, and the candidate could not serve
/// what it lacks. The refusal promises nothing.
#[test]
fn prepare_from_a_lagging_candidate_is_refused() {
    let log = [cmd(1, b(1, 1), "a"), cmd(2, b(1, 1), "b")];
    let mut r = acceptor(2, &[1, 2, 3], &log, hard(b(1, 1), 2));
    step(&mut r, env(3, 2, b(2, 3), prepare(1)));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(2, 3, b(2, 3), Body::PromiseRejected { commit: i(2) })]);
    assert_eq!(rd.hard_state, None);
    assert_eq!(r.ballot(), b(1, 1));
}

/// With check-quorum, an acceptor that heard from its leader within the
/// election timeout ignores a prepare, unless it follows a transfer.
#[test]
fn prepare_is_ignored_while_the_leader_is_heard() {
    let mut cfg = config(2);
    cfg.check_quorum = true;
    let mut r = paxos_with(cfg, storage(&[1, 2, 3], &[], hard(b(1, 1), 0)));
    step(&mut r, env(1, 2, b(1, 1), heartbeat(0, 1, 0)));
    drain(&mut r);
    step(&mut r, env(3, 2, b(2, 3), prepare(0)));
    assert!(r.ready().is_none(), "ignored: no promise, no answer");
    step(&mut r, env(3, 2, b(2, 3), Body::Prepare { commit: i(0), transfer: true }));
    assert_eq!(ready(&mut r).after_persist, vec![env(2, 3, b(2, 3), promise(0, vec![]))]);
}

/// PMS P2b: an accept below the promised ballot is refused (Nack), and
/// nothing is written.
#[test]
fn accept_below_the_promise_is_refused() {
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(b(3, 3), 0));
    step(&mut r, env(1, 2, b(2, 1), accept(vec![cmd(1, b(2, 1), "x")], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(2, 1, b(3, 3), Body::Nack)]);
    assert!(rd.entries.is_empty() && rd.after_persist.is_empty());
}

/// An accept at or above the promise is taken: it raises the promise in
/// the same Ready, and the answer leaves only after both are durable.
#[test]
fn accept_raises_the_promise_and_answers_after_persist() {
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(b(1, 1), 0));
    step(&mut r, env(3, 2, b(2, 3), accept(vec![cmd(1, b(2, 3), "x")], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, Some(3), b(2, 3))));
    assert_eq!(rd.hard_state, Some(hard(b(2, 3), 0)));
    assert_eq!(rd.entries, vec![cmd(1, b(2, 3), "x")]);
    assert!(rd.messages.is_empty());
    assert_eq!(rd.after_persist, vec![env(2, 3, b(2, 3), accepted(1, 1, 0))]);
}

/// Slots are accepted in any order: a slot past the end leaves vacant slots
/// before it, and filling one rewrites the suffix behind it unchanged.
#[test]
fn out_of_order_accepts_leave_holes_that_fill_in() {
    let ballot = b(1, 1);
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(ballot, 0));
    step(&mut r, env(1, 2, ballot, accept(vec![cmd(3, ballot, "c")], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![vacant(1), vacant(2), cmd(3, ballot, "c")]);
    assert_eq!(rd.after_persist, vec![env(2, 1, ballot, accepted(3, 3, 0))]);
    persist(&mut r, &rd);

    step(&mut r, env(1, 2, ballot, accept(vec![cmd(1, ballot, "a")], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.truncates_from(), Some(i(1)));
    assert_eq!(rd.entries, vec![cmd(1, ballot, "a"), vacant(2), cmd(3, ballot, "c")]);
    assert_eq!(rd.after_persist, vec![env(2, 1, ballot, accepted(1, 1, 0))]);
}

/// A higher ballot's value replaces the slot's old one; the values after it
/// are kept (re-emitted), never dropped: one of them may be chosen.
#[test]
fn a_higher_ballot_replaces_a_middle_slot_and_keeps_the_rest() {
    let log = [cmd(1, b(1, 1), "a"), cmd(2, b(1, 1), "b"), cmd(3, b(1, 1), "c")];
    let mut r = acceptor(2, &[1, 2, 3], &log, hard(b(1, 1), 0));
    step(&mut r, env(3, 2, b(2, 3), accept(vec![cmd(2, b(2, 3), "B")], 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.entries, vec![cmd(2, b(2, 3), "B"), cmd(3, b(1, 1), "c")]);
    assert_eq!(rd.after_persist, vec![env(2, 3, b(2, 3), accepted(2, 2, 0))]);
}

/// A duplicate accept writes nothing but is answered again (the first
/// answer may have been lost), after persistence like any answer.
#[test]
fn a_duplicate_accept_is_answered_without_a_write() {
    let ballot = b(1, 1);
    let mut r = acceptor(2, &[1, 2, 3], &[cmd(1, ballot, "a")], hard(ballot, 0));
    step(&mut r, env(1, 2, ballot, accept(vec![cmd(1, ballot, "a")], 0)));
    let rd = ready(&mut r);
    assert!(rd.entries.is_empty());
    assert_eq!(rd.after_persist, vec![env(2, 1, ballot, accepted(1, 1, 0))]);
}

/// Learning: an announced commit point covers only slots that hold a value
/// of the announcing leader's ballot (one value per slot per ballot); a slot
/// holding another ballot's value stops it until the leader re-sends it.
#[test]
fn commit_is_learned_only_for_slots_of_the_announcing_ballot() {
    let (old, new) = (b(1, 1), b(2, 3));
    let log = [cmd(1, old, "a"), cmd(2, new, "b")];
    let mut r = acceptor(2, &[1, 2, 3], &log, hard(new, 0));
    step(&mut r, env(3, 2, new, heartbeat(2, 0, 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, None, "slot 1 holds ballot 1.1's value: nothing learned");
    assert_eq!(
        rd.messages,
        vec![env(
            2,
            3,
            new,
            Body::HeartbeatResponse { round: 0, sent_tick: 0, commit: i(0), asked: i(2) }
        )]
    );
    persist(&mut r, &rd);

    step(&mut r, env(3, 2, new, accept(vec![cmd(1, new, "a")], 2)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(new, 2)));
    assert_eq!(rd.entries, vec![cmd(1, new, "a"), cmd(2, new, "b")]);
    assert!(rd.committed.is_empty(), "slot 1's new value is not durable yet");
    assert_eq!(rd.after_persist, vec![env(2, 3, new, accepted(1, 1, 2))]);
    persist(&mut r, &rd);
    assert_eq!(ready(&mut r).committed, vec![cmd(1, new, "a"), cmd(2, new, "b")]);
}

/// A commit point past the end of the log is learned only as far as the
/// log reaches; vacant slots stop it.
#[test]
fn commit_stops_at_a_hole() {
    let ballot = b(1, 1);
    let log = [cmd(1, ballot, "a"), vacant(2), cmd(3, ballot, "c")];
    let mut r = acceptor(2, &[1, 2, 3], &log, hard(ballot, 0));
    step(&mut r, env(1, 2, ballot, heartbeat(9, 1, 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.hard_state, Some(hard(ballot, 1)));
    assert_eq!(rd.committed, vec![cmd(1, ballot, "a")]);
}

/// An accept for slots already chosen here writes nothing and reports the
/// commit point at once (it promises nothing new).
#[test]
fn accept_of_chosen_slots_reports_the_commit_point() {
    let ballot = b(1, 1);
    let mut r = acceptor(2, &[1, 2, 3], &[cmd(1, ballot, "a")], hard(ballot, 1));
    drain(&mut r);
    step(&mut r, env(1, 2, ballot, accept(vec![cmd(1, ballot, "a")], 1)));
    let rd = ready(&mut r);
    assert!(rd.entries.is_empty());
    assert_eq!(rd.messages, vec![env(2, 1, ballot, accepted(2, 1, 1))]);
}

/// A leader's heartbeat of a higher ballot makes a candidate follow it.
#[test]
fn a_higher_ballot_leader_ends_a_campaign() {
    let mut r = acceptor(1, &[1, 2, 3], &[], hard(Epoch::ZERO, 0));
    r.campaign();
    drain(&mut r);
    assert_eq!(r.role, Role::Candidate);
    step(&mut r, env(3, 1, b(5, 3), heartbeat(0, 1, 0)));
    let rd = ready(&mut r);
    assert_eq!(rd.soft_state, Some(soft(Role::Follower, Some(3), b(5, 3))));
    assert_eq!(rd.hard_state, Some(hard(b(5, 3), 0)));
}

/// Malformed accepts are refused whole.
#[test]
fn malformed_accepts_are_refused() {
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(Epoch::ZERO, 0));
    let foreign = accept(vec![cmd(1, b(1, 3), "x")], 0);
    assert!(r.step(env(1, 2, b(1, 1), foreign)).is_err(), "entry of another ballot");
    let gap = accept(vec![cmd(1, b(1, 1), "x"), cmd(3, b(1, 1), "y")], 0);
    assert!(r.step(env(1, 2, b(1, 1), gap)).is_err(), "non-contiguous slots");
    let mut conf = cmd(1, b(1, 1), "not a membership");
    conf.kind = EntryKind::Membership;
    assert!(r.step(env(1, 2, b(1, 1), accept(vec![conf], 0))).is_err(), "corrupt membership");
    assert!(r.ready().is_none_or(|rd| rd.entries.is_empty()));
}
