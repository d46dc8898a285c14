//! Transfer, membership through the log (α), learners, snapshots,
//! recovery and limits.

use super::*;
use ringkv_consensus::{ChangeOp, MembershipChange, ProposeError, Snapshot, SnapshotMeta};

fn change(ops: Vec<ChangeOp>) -> MembershipChange {
    MembershipChange { ops }
}

/// The leader catches the target up, then tells it to start phase 1 at
/// once; proposals are refused meanwhile.
#[test]
fn transfer_waits_for_the_target_then_sends_timeout_now() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    r.propose(Bytes::from_static(b"x")).expect("leader");
    drain(&mut r);
    r.transfer_leadership(n(2)).expect("voter");
    assert!(r.ready().is_none(), "peer 2 has not accepted slot 1 yet");
    assert_eq!(
        r.propose(Bytes::from_static(b"y")),
        Err(ProposeError::TransferInProgress { to: n(2) })
    );
    step(&mut r, env(2, 1, ballot, accepted(1, 1, 0)));
    drain(&mut r);
    let answer = Body::HeartbeatResponse { round: 0, sent_tick: 0, commit: i(1), asked: i(1) };
    step(&mut r, env(2, 1, ballot, answer));
    let rd = ready(&mut r);
    assert_eq!(rd.messages, vec![env(1, 2, ballot, Body::TimeoutNow)]);
}

/// The target of `TimeoutNow` starts phase 1 at once, flagged so that
/// acceptors honouring a lease still answer.
#[test]
fn timeout_now_starts_a_transfer_campaign() {
    let ballot = b(1, 1);
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(ballot, 0));
    step(&mut r, env(1, 2, ballot, heartbeat(0, 1, 0)));
    drain(&mut r);
    step(&mut r, env(1, 2, ballot, Body::TimeoutNow));
    let rd = ready(&mut r);
    let transfer = Body::Prepare { commit: i(0), transfer: true };
    assert_eq!(rd.soft_state, Some(soft(Role::Candidate, None, b(2, 2))));
    assert_eq!(
        rd.after_persist,
        vec![env(2, 1, b(2, 2), transfer.clone()), env(2, 3, b(2, 2), transfer)]
    );
}

/// A transfer to a non-voter is refused.
#[test]
fn transfer_to_a_non_voter_is_refused() {
    let mut r = leader(1, &[1, 2, 3]);
    assert!(matches!(r.transfer_leadership(n(9)), Err(ProposeError::InvalidTransferTarget { .. })));
}

/// A membership change chosen at slot s decides slots from s + α: the
/// leader pads it with α - 1 no-ops, and until those are chosen the old
/// configuration is in effect and a second change is refused.
#[test]
fn membership_change_takes_effect_alpha_slots_later() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    let p = r.change_membership(change(vec![ChangeOp::AddVoter(n(4))])).expect("leader");
    assert_eq!(p.index, i(1));
    let rd = ready(&mut r);
    assert_eq!(rd.entries.len() as u64, ALPHA, "the change and α - 1 no-ops");
    assert_eq!(rd.entries[0].kind, EntryKind::Membership);
    assert!(rd.entries[1..].iter().all(|e| e.kind == EntryKind::Noop));
    assert!(
        r.status().progress.iter().any(|p| p.id == n(4)),
        "the new voter starts catching up as soon as the change is proposed"
    );
    persist(&mut r, &rd);
    step(&mut r, env(2, 1, ballot, accepted(1, ALPHA - 1, 0)));
    assert_eq!(r.log.committed, i(ALPHA - 1));
    assert_eq!(r.status().membership, Membership::new([n(1), n(2), n(3)]), "not yet");
    assert_eq!(
        r.change_membership(change(vec![ChangeOp::AddVoter(n(5))])),
        Err(ProposeError::MembershipChangeInProgress)
    );
    step(&mut r, env(2, 1, ballot, accepted(ALPHA, ALPHA, 0)));
    assert_eq!(r.log.committed, i(ALPHA));
    assert_eq!(r.status().membership, Membership::new([n(1), n(2), n(3), n(4)]));
    r.propose(Bytes::from_static(b"x")).expect("leader");
    drain(&mut r);
    // Slot α + 1 is decided by four voters: two acceptances are not enough.
    step(&mut r, env(2, 1, ballot, accepted(ALPHA + 1, ALPHA + 1, 0)));
    assert_eq!(r.log.committed, i(ALPHA));
    step(&mut r, env(4, 1, ballot, accepted(ALPHA + 1, ALPHA + 1, 0)));
    assert_eq!(r.log.committed, i(ALPHA + 1));
}

/// Moving two voters at once needs no joint phase: each slot has exactly
/// one configuration.
#[test]
fn two_voter_change_is_one_step() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    r.change_membership(change(vec![ChangeOp::AddVoter(n(4)), ChangeOp::Remove(n(3))]))
        .expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, ballot, accepted(1, ALPHA, 0)));
    assert_eq!(r.status().membership, Membership::new([n(1), n(2), n(4)]));
    assert!(!r.status().membership.is_joint());
}

/// A predecessor's change was accepted without its α − 1 no-ops (it
/// failed right after proposing it): the new leader pads the change itself
/// in phase 2, so an idle group reaches the new configuration and takes
/// the next change and reads without any client proposal (the sharded
/// simulator had to write to idle shards to move them).
#[test]
fn new_leader_pads_a_predecessors_change_without_traffic() {
    let next = Membership::new([n(1), n(2), n(3), n(4)]);
    let own = [Entry {
        index: i(1),
        epoch: b(1, 2),
        kind: EntryKind::Membership,
        payload: Bytes::from(ringkv_consensus::encode_to_vec(&next)),
    }];
    let mut r = leader_with(config(1), &[1, 2, 3], &own, b(1, 2));
    let ballot = r.ballot();
    // The Readys of phase 1 were drained: the padding went out with them.
    assert_eq!(r.log.last_index(), i(ALPHA), "the change and α - 1 no-ops");
    step(&mut r, env(2, 1, ballot, accepted(1, ALPHA, 0)));
    drain(&mut r);
    assert_eq!(r.log.committed, i(ALPHA));
    assert_eq!(r.status().membership, next, "in effect without a client write");
    r.change_membership(change(vec![ChangeOp::AddLearner(n(5))]))
        .expect("an idle leader takes the next change");
    drain(&mut r);
    r.read_index(ringkv_consensus::RequestId(9)).expect("leader");
    let rd = ready(&mut r);
    assert!(
        rd.messages.iter().any(|m| matches!(m.body.body, Body::Heartbeat { .. })),
        "the read's round goes out at once: {rd:?}"
    );
}

/// Learners receive accepts and the commit point but their acceptances do
/// not count, and they never campaign.
#[test]
fn learners_follow_but_do_not_count() {
    let mut s = MemoryLog::new(Membership {
        voters: [n(1), n(2), n(3)].into(),
        learners: [n(4)].into(),
        ..Membership::default()
    });
    s.set_hard_state(hard(Epoch::ZERO, 0));
    let mut r = paxos_with(config(1), s);
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    step(&mut r, env(2, 1, ballot, promise(0, vec![])));
    drain(&mut r);
    // The learner did not promise: a heartbeat answer tells where it is.
    let answer = Body::HeartbeatResponse { round: 0, sent_tick: 0, commit: i(0), asked: i(0) };
    step(&mut r, env(4, 1, ballot, answer));
    r.propose(Bytes::from_static(b"x")).expect("leader");
    let rd = ready(&mut r);
    assert!(rd.messages.iter().any(|m| m.to == n(4)), "the learner gets the accept");
    persist(&mut r, &rd);
    step(&mut r, env(4, 1, ballot, accepted(1, 1, 0)));
    assert_eq!(r.log.committed, i(0), "a learner's acceptance does not count");

    let mut learner = paxos_with(config(4), {
        let mut s = MemoryLog::new(Membership {
            voters: [n(1), n(2), n(3)].into(),
            learners: [n(4)].into(),
            ..Membership::default()
        });
        s.set_hard_state(hard(Epoch::ZERO, 0));
        s
    });
    for _ in 0..100 {
        learner.tick();
    }
    assert_eq!(learner.role, Role::Follower, "a learner never campaigns");
}

/// A removed leader keeps leading until a voter holds and knows everything,
/// then hands over with `TimeoutNow` and steps down.
#[test]
fn removed_leader_hands_over_to_a_caught_up_voter() {
    let mut r = leader(1, &[1, 2, 3]);
    let ballot = r.ballot();
    r.change_membership(change(vec![ChangeOp::Remove(n(1))])).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, ballot, accepted(1, ALPHA, 0)));
    assert_eq!(r.role, Role::Leader, "no voter knows the commit point yet");
    drain(&mut r);
    let answer =
        Body::HeartbeatResponse { round: 0, sent_tick: 0, commit: i(ALPHA), asked: i(ALPHA) };
    step(&mut r, env(2, 1, ballot, answer));
    assert_eq!(r.role, Role::Follower);
    assert_eq!(ready(&mut r).messages, vec![env(1, 2, ballot, Body::TimeoutNow)]);
}

fn snapshot_leader() -> Paxos<MemoryLog> {
    let mut cfg = config(1);
    cfg.snapshot_chunk_bytes = 4;
    let mut r = leader_with(cfg, &[1, 2, 3], &[], Epoch::ZERO);
    let ballot = r.ballot();
    r.propose(Bytes::from_static(b"x")).expect("leader");
    r.propose(Bytes::from_static(b"y")).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, ballot, accepted(1, 2, 0)));
    drain(&mut r);
    let m = r.membership_at(i(2)).expect("no change pending");
    r.storage_mut().compact(i(2), m, Bytes::from_static(b"snapshot")).expect("compactable");
    r
}

/// A peer that needs compacted slots gets the snapshot, in chunks.
#[test]
fn lagging_peer_gets_the_snapshot_in_chunks() {
    let mut r = snapshot_leader();
    let ballot = r.ballot();
    // Peer 3 never answered the accepts for slots 1-2: once it is probed
    // again, it needs slots the leader compacted.
    r.report_unreachable(n(3));
    let answer = Body::HeartbeatResponse { round: 0, sent_tick: 0, commit: i(0), asked: i(2) };
    step(&mut r, env(3, 1, ballot, answer));
    let rd = ready(&mut r);
    let chunks: Vec<_> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body.body {
            Body::Snapshot { offset, data, meta, .. } if m.to == n(3) => {
                Some((*offset, data.clone(), meta.index))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        chunks,
        vec![(0, Bytes::from_static(b"snap"), i(2)), (4, Bytes::from_static(b"shot"), i(2))]
    );
}

/// A [`MemoryLog`] that counts reads of its snapshot: a node's storage
/// reads the whole snapshot file for each.
struct CountingLog {
    inner: MemoryLog,
    snapshot_reads: std::cell::Cell<u32>,
}

impl LogStorage for CountingLog {
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.inner.snapshot_meta()
    }
    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }
    fn epoch(&self, index: LogIndex) -> Result<Epoch, ringkv_consensus::LogError> {
        self.inner.epoch(index)
    }
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, ringkv_consensus::LogError> {
        self.inner.entries(lo, hi, max_bytes)
    }
    fn snapshot(&self) -> Result<Snapshot, ringkv_consensus::LogError> {
        self.snapshot_reads.set(self.snapshot_reads.get() + 1);
        self.inner.snapshot()
    }
    fn append(&mut self, entries: &[Entry]) {
        self.inner.append(entries);
    }
    fn set_hard_state(&mut self, hard_state: HardState) {
        self.inner.set_hard_state(hard_state);
    }
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.inner.install_snapshot(snapshot);
    }
}

/// Asking whether a Ready is due while a peer waits for the snapshot does
/// not read the snapshot again each time: it is read once, and sent.
#[test]
fn a_lagging_peer_costs_one_snapshot_read() {
    let s = CountingLog {
        inner: storage(&[1, 2, 3], &[], hard(Epoch::ZERO, 0)),
        snapshot_reads: std::cell::Cell::new(0),
    };
    let mut r = Paxos::new(options(config(1)), s).expect("valid test setup");
    r.campaign();
    drain(&mut r);
    let ballot = r.ballot();
    for v in [2, 3] {
        step(&mut r, env(v, 1, ballot, promise(0, vec![])));
    }
    r.propose(Bytes::from_static(b"x")).expect("leader");
    drain(&mut r);
    step(&mut r, env(2, 1, ballot, accepted(1, 1, 0)));
    drain(&mut r);
    let m = r.membership_at(i(1)).expect("no change pending");
    r.storage_mut().inner.compact(i(1), m, Bytes::from_static(b"snap")).expect("compactable");
    r.report_unreachable(n(3));
    let answer = Body::HeartbeatResponse { round: 0, sent_tick: 0, commit: i(0), asked: i(1) };
    step(&mut r, env(3, 1, ballot, answer));
    for _ in 0..3 {
        assert!(r.has_ready(), "the snapshot is due to peer 3");
    }
    let rd = ready(&mut r);
    assert!(
        rd.messages.iter().any(|m| m.to == n(3) && matches!(m.body.body, Body::Snapshot { .. })),
        "peer 3 gets the snapshot: {rd:?}"
    );
    assert_eq!(r.storage().snapshot_reads.get(), 1);
    assert!(!r.has_ready(), "peer 3 is being sent the snapshot");
    assert_eq!(r.storage().snapshot_reads.get(), 1);
}

/// An acceptor installs a snapshot of the chosen prefix and keeps (re-emits)
/// every value it accepted after it; it answers only once durable.
#[test]
fn snapshot_install_keeps_the_accepted_suffix() {
    let ballot = b(2, 1);
    let log = [cmd(1, b(1, 3), "old"), cmd(2, b(1, 3), "old"), cmd(3, b(1, 3), "c")];
    let mut r = acceptor(2, &[1, 2, 3], &log, hard(ballot, 0));
    let meta = SnapshotMeta {
        index: i(2),
        epoch: ballot,
        membership: Membership::new([n(1), n(2), n(3)]),
    };
    let chunk = Body::Snapshot {
        meta: meta.clone(),
        total_bytes: 4,
        offset: 0,
        data: Bytes::from_static(b"data"),
    };
    step(&mut r, env(1, 2, ballot, chunk));
    let rd = ready(&mut r);
    assert_eq!(
        rd.snapshot,
        Some(Snapshot { meta, data: Bytes::from_static(b"data") }),
        "the snapshot to install"
    );
    assert_eq!(rd.entries, vec![cmd(3, b(1, 3), "c")], "our acceptance after it survives");
    assert_eq!(rd.hard_state, Some(hard(ballot, 2)));
    assert_eq!(rd.after_persist, vec![env(2, 1, ballot, accepted(3, 2, 2))]);
}

/// Restart rebuilds the promised ballot, accepted values (holes included),
/// commit point and configurations from storage.
#[test]
fn restart_recovers_durable_state() {
    let log = [cmd(1, b(1, 1), "a"), vacant(2), cmd(3, b(2, 2), "c")];
    let r = acceptor(3, &[1, 2, 3], &log, hard(b(4, 1), 1));
    assert_eq!(r.ballot(), b(4, 1));
    assert_eq!(r.log.committed, i(1));
    assert_eq!(r.entry_at(i(2)), Ok(None));
    assert_eq!(r.epoch_at(i(3)), Ok(b(2, 2)));
    assert_eq!(r.status().membership, Membership::new([n(1), n(2), n(3)]));
}

/// Storage that contradicts itself is refused on recovery.
#[test]
fn corrupt_recovery_is_refused() {
    use crate::options::PaxosError;
    let above = storage(&[1, 2, 3], &[cmd(1, b(5, 1), "a")], hard(b(4, 1), 0));
    assert_eq!(
        Paxos::new(options(config(1)), above).err(),
        Some(PaxosError::AcceptedAbovePromise { index: i(1) })
    );
    let hole = storage(&[1, 2, 3], &[vacant(1)], hard(b(4, 1), 1));
    assert_eq!(
        Paxos::new(options(config(1)), hole).err(),
        Some(PaxosError::VacantCommitted { index: i(1) })
    );
    let past = storage(&[1, 2, 3], &[], hard(b(4, 1), 3));
    assert!(matches!(
        Paxos::new(options(config(1)), past).err(),
        Some(PaxosError::CommitPastLog { .. })
    ));
}

/// Proposals beyond the uncommitted budget or the size limit are refused.
#[test]
fn uncommitted_budget_and_size_limit() {
    let mut cfg = config(1);
    cfg.max_uncommitted_bytes = 100;
    cfg.max_command_bytes = 60;
    let mut r = leader_with(cfg, &[1, 2, 3], &[], Epoch::ZERO);
    assert!(matches!(
        r.propose(Bytes::from(vec![0; 61])),
        Err(ProposeError::TooLarge { bytes: 61, limit: 60 })
    ));
    r.propose(Bytes::from(vec![0; 50])).expect("within the budget");
    assert!(matches!(r.propose(Bytes::from(vec![0; 50])), Err(ProposeError::Busy { .. })));
}

/// Messages for another shard or node, or from ourselves, are refused.
#[test]
fn misaddressed_messages_are_refused() {
    let mut r = acceptor(2, &[1, 2, 3], &[], hard(Epoch::ZERO, 0));
    let mut m = env(1, 2, b(1, 1), prepare(0));
    m.shard = ShardId(9);
    assert!(r.step(m).is_err());
    assert!(r.step(env(1, 3, b(1, 1), prepare(0))).is_err());
    assert!(r.step(env(2, 2, b(1, 1), prepare(0))).is_err());
}
