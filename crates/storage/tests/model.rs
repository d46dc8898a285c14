//! Model-based test: random WAL operations with syncs, injected faults and
//! simulated crashes recover exactly the synced state, as an in-memory
//! model (`MemoryLog` per shard, which has the `LogStorage` semantics the
//! WAL promises) says.
//!
//! `PROPTEST_CASES=1000 cargo test -p ringkv-storage --test model` runs more.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{all_entries, members};
use proptest::prelude::*;
use ringkv_consensus::{
    Entry, EntryKind, Epoch, HardState, LogIndex, LogStorage, MemoryLog, NodeId, ShardId, Snapshot,
    SnapshotMeta,
};
use ringkv_storage::disk::{CrashMode, Disk, FaultKind, FaultOp, SimDisk};
use ringkv_storage::wal::{CompactionRefusal, WalError};
use ringkv_storage::{Wal, WalOptions};

const SHARDS: u64 = 4;

#[derive(Clone, Debug)]
enum Action {
    /// Append `n` entries starting `back` before the end (a truncation if
    /// `back > 0`), in a new term if `new_term`.
    Append {
        shard: u64,
        back: u64,
        n: u64,
        new_term: bool,
        payload: usize,
    },
    HardState {
        shard: u64,
        vote: u64,
    },
    /// Compact at a point `frac`/8 of the way through the durable log.
    Compact {
        shard: u64,
        frac: u64,
    },
    /// Install a snapshot `ahead` entries past the snapshot, agreeing or not.
    Install {
        shard: u64,
        ahead: u64,
        agree: bool,
    },
    Remove {
        shard: u64,
    },
    Sync,
    Crash {
        mode: u8,
    },
    /// Make the next sync fail (or crash) inside the disk, at the
    /// `skip`-th matching call (a rotating sync writes and syncs a new
    /// segment's header before its batch).
    Fault {
        which: u8,
        skip: u64,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let shard = 0..SHARDS;
    prop_oneof![
        12 => (shard.clone(), 0u64..4, 1u64..5, any::<bool>(), 0usize..300).prop_map(
            |(shard, back, n, new_term, payload)| Action::Append { shard, back, n, new_term, payload }
        ),
        3 => (shard.clone(), 1u64..4).prop_map(|(shard, vote)| Action::HardState { shard, vote }),
        3 => (shard.clone(), 0u64..9).prop_map(|(shard, frac)| Action::Compact { shard, frac }),
        1 => (shard.clone(), 0u64..12, any::<bool>())
            .prop_map(|(shard, ahead, agree)| Action::Install { shard, ahead, agree }),
        1 => shard.prop_map(|shard| Action::Remove { shard }),
        8 => Just(Action::Sync),
        2 => (0u8..3).prop_map(|mode| Action::Crash { mode }),
        2 => (0u8..4, 0u64..3).prop_map(|(which, skip)| Action::Fault { which, skip }),
    ]
}

type Model = BTreeMap<ShardId, MemoryLog>;

struct Run {
    disk: SimDisk,
    wal: Option<Wal<SimDisk>>,
    options: WalOptions,
    /// What is durable.
    durable: Model,
    /// What is durable plus every accepted, unsynced record.
    accepted: Model,
    /// Per shard, the records buffered since the last sync (for judging
    /// compaction refusals).
    pending: BTreeMap<ShardId, Vec<Pending>>,
    terms: BTreeMap<ShardId, u64>,
    counter: u64,
}

#[derive(Clone, Debug)]
enum Pending {
    Entries { first: LogIndex },
    Other,
    Install,
}

fn state_of(log: &MemoryLog) -> (HardState, SnapshotMeta, Vec<Entry>) {
    (log.hard_state(), log.snapshot_meta(), log.all_entries().to_vec())
}

fn wal_state(wal: &Wal<SimDisk>, shard: ShardId) -> (HardState, SnapshotMeta, Vec<Entry>) {
    let log = wal.log(shard);
    (log.hard_state(), log.snapshot_meta(), all_entries(&log))
}

/// Tiny segments and caches, so rotation, segment deletion and reads from
/// segment files happen all the time.
fn model_options() -> WalOptions {
    WalOptions { segment_bytes: 2048, cache_bytes_per_shard: 512, ..WalOptions::default() }
}

impl Run {
    fn new(disk: SimDisk, wal: Wal<SimDisk>, options: WalOptions) -> Run {
        Run {
            disk,
            wal: Some(wal),
            options,
            durable: Model::new(),
            accepted: Model::new(),
            pending: BTreeMap::new(),
            terms: BTreeMap::new(),
            counter: 0,
        }
    }

    fn wal(&mut self) -> &mut Wal<SimDisk> {
        self.wal.as_mut().expect("open")
    }

    fn matches(&self, model: &Model) -> Result<(), String> {
        let wal = self.wal.as_ref().expect("open");
        let shards: Vec<ShardId> = model.keys().copied().collect();
        if wal.shards() != shards {
            return Err(format!("shards: wal {:?}, model {shards:?}", wal.shards()));
        }
        for (shard, log) in model {
            let (want, got) = (state_of(log), wal_state(wal, *shard));
            if want != got {
                return Err(format!("shard {shard}: wal {got:?}\nmodel {want:?}"));
            }
        }
        Ok(())
    }

    fn check_segments(&self) {
        let wal = self.wal.as_ref().expect("open");
        let ids = wal.segment_ids();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "segments contiguous: {ids:?}");
        let files: Vec<String> = self.disk.list().unwrap();
        let names: Vec<String> = ids.iter().map(|id| format!("{id:016x}.wal")).collect();
        assert_eq!(files, names, "no segment leaks, no temporary files");
    }

    /// Crashes and reopens; the WAL must hold the durable state, or (after a
    /// failed sync) the state that sync was writing.
    fn crash_and_recover(&mut self, mode: CrashMode, failed_batch: bool) {
        self.wal = None;
        self.disk.crash_with(mode);
        let wal = Wal::open(self.disk.clone(), self.options)
            .unwrap_or_else(|e| panic!("recovery failed: {e}"));
        self.wal = Some(wal);
        match self.matches(&self.durable) {
            Ok(()) => {}
            Err(durable_diff) if failed_batch => {
                if let Err(accepted_diff) = self.matches(&self.accepted) {
                    panic!(
                        "recovered neither the durable state nor the failed batch:\n\
                         vs durable: {durable_diff}\nvs with batch: {accepted_diff}"
                    );
                }
                self.durable = self.accepted.clone();
            }
            Err(diff) => panic!("recovered state differs from the synced one: {diff}"),
        }
        self.accepted = self.durable.clone();
        self.pending.clear();
        self.check_segments();
    }

    fn sync(&mut self) {
        match self.wal().sync() {
            Ok(seq) => {
                assert_eq!(seq, self.wal().durable());
                self.durable = self.accepted.clone();
                self.pending.clear();
                if let Err(diff) = self.matches(&self.durable) {
                    panic!("after sync: {diff}");
                }
                if self.wal().poisoned().is_none() {
                    self.check_segments();
                }
            }
            Err(e) => {
                assert!(e.is_environmental(), "{e}");
                // Poisoned: everything fails fast until a restart.
                let next = self.wal().set_hard_state(ShardId(0), HardState::default());
                assert!(matches!(next, Err(WalError::Poisoned { .. })));
                self.crash_and_recover(CrashMode::Random, true);
            }
        }
    }

    fn entry(&mut self, shard: ShardId, index: u64, payload: usize) -> Entry {
        self.counter += 1;
        let mut p = format!("{shard}/{index}/{}:", self.counter).into_bytes();
        p.resize(p.len() + payload, b'p');
        Entry {
            index: LogIndex(index),
            epoch: Epoch::term(self.terms[&shard]),
            kind: EntryKind::Command,
            payload: Bytes::from(p),
        }
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Append { shard, back, n, new_term, payload } => {
                let shard = ShardId(shard);
                let log = self.accepted.entry(shard).or_default();
                let first = (log.last_index().0 + 1).saturating_sub(back).max(log.first_index().0);
                let term = self.terms.entry(shard).or_insert(1);
                if new_term {
                    *term += 1;
                }
                let es: Vec<Entry> =
                    (first..first + n).map(|i| self.entry(shard, i, payload)).collect();
                self.wal().append(shard, &es).unwrap();
                self.accepted.get_mut(&shard).expect("created above").append(&es);
                self.pending
                    .entry(shard)
                    .or_default()
                    .push(Pending::Entries { first: LogIndex(first) });
            }
            Action::HardState { shard, vote } => {
                let shard = ShardId(shard);
                let term = *self.terms.entry(shard).or_insert(1);
                let commit = self.accepted.get(&shard).map_or(0, |l| l.last_index().0);
                let hs = HardState {
                    epoch: Epoch::term(term),
                    vote: Some(NodeId(vote)),
                    commit: LogIndex(commit),
                };
                self.wal().set_hard_state(shard, hs).unwrap();
                self.accepted.entry(shard).or_default().set_hard_state(hs);
                self.pending.entry(shard).or_default().push(Pending::Other);
            }
            Action::Compact { shard, frac } => {
                let shard = ShardId(shard);
                let Some(durable) = self.durable.get(&shard) else { return };
                let snap = durable.snapshot_meta().index.0;
                let last = durable.last_index().0;
                let upto = LogIndex(snap + (last.saturating_sub(snap) * frac).div_ceil(8).max(1));
                match self.wal().compact(shard, upto, members()) {
                    Ok(_) => {
                        let log = self.accepted.get_mut(&shard).expect("durable implies accepted");
                        log.compact(upto, members(), Bytes::new()).unwrap();
                        self.pending.entry(shard).or_default().push(Pending::Other);
                    }
                    Err(WalError::CompactionRefused { why, .. }) => {
                        let accepted_snap =
                            self.accepted.get(&shard).map_or(0, |l| l.snapshot_meta().index.0);
                        let conflicts = self.pending.get(&shard).is_some_and(|ps| {
                            ps.iter().any(|p| match p {
                                Pending::Entries { first } => *first <= upto,
                                Pending::Install => true,
                                Pending::Other => false,
                            })
                        });
                        let justified = match why {
                            CompactionRefusal::AlreadyCompacted => upto.0 <= accepted_snap,
                            CompactionRefusal::NotDurable => upto.0 > last,
                            CompactionRefusal::ConflictsWithPending => conflicts,
                            _ => false,
                        };
                        assert!(justified, "unjustified refusal {why:?} of compaction to {upto}");
                    }
                    Err(e) => panic!("compaction failed: {e}"),
                }
            }
            Action::Install { shard, ahead, agree } => {
                let shard = ShardId(shard);
                let log = self.accepted.entry(shard).or_default();
                let index = LogIndex(log.snapshot_meta().index.0 + ahead);
                let epoch = match log.epoch(index) {
                    Ok(e) if agree => e,
                    _ => Epoch::term(1000 + ahead),
                };
                let meta = SnapshotMeta { index, epoch, membership: members() };
                self.wal().install_snapshot(shard, &meta).unwrap();
                self.accepted
                    .get_mut(&shard)
                    .expect("created above")
                    .install_snapshot(Snapshot { meta, data: Bytes::new() });
                self.pending.entry(shard).or_default().push(Pending::Install);
                // The next entries of this shard come after the snapshot.
                let term = self.terms.entry(shard).or_insert(1);
                *term = (*term).max(epoch.round);
            }
            Action::Remove { shard } => {
                let shard = ShardId(shard);
                self.wal().remove_shard(shard).unwrap();
                if self.accepted.remove(&shard).is_some() {
                    self.pending.entry(shard).or_default().push(Pending::Install);
                }
            }
            Action::Sync => self.sync(),
            Action::Crash { mode } => {
                let mode = [CrashMode::Random, CrashMode::LoseUnsynced, CrashMode::KeepUnsynced]
                    [mode as usize];
                self.crash_and_recover(mode, false);
            }
            Action::Fault { which, skip } => {
                let (op, kind) = [
                    (FaultOp::SyncData, FaultKind::Eio),
                    (FaultOp::Write, FaultKind::Eio),
                    (FaultOp::Write, FaultKind::Crash),
                    (FaultOp::SyncData, FaultKind::Crash),
                ][which as usize];
                // Only a sync with something to write touches the disk.
                if self.wal().pending_bytes() > 0 {
                    self.disk.fail_nth(op, skip, kind);
                    self.sync();
                    self.disk.clear_faults();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovers_exactly_the_synced_state(
        seed in any::<u64>(),
        actions in prop::collection::vec(action(), 1..120),
    ) {
        let disk = SimDisk::new(seed);
        let options = model_options();
        let wal = Wal::open(disk.clone(), options).unwrap();
        let mut run = Run::new(disk, wal, options);
        for a in actions {
            run.step(a);
        }
        run.sync();
        run.crash_and_recover(CrashMode::Random, false);
    }
}

/// Found by the property test: a snapshot installed on a log that agrees
/// with it keeps the later entries, and the segment holding the agreeing
/// entry is deleted right after. Replay used to re-decide the agreement
/// without that entry and dropped the suffix; the decision is now recorded.
#[test]
fn regression_install_agreeing_with_an_entry_in_a_deleted_segment() {
    use Action::*;
    let disk = SimDisk::new(0);
    let options = model_options();
    let wal = Wal::open(disk.clone(), options).unwrap();
    let mut run = Run::new(disk, wal, options);
    for a in [
        Append { shard: 3, back: 0, n: 4, new_term: false, payload: 0 },
        Append { shard: 3, back: 2, n: 3, new_term: false, payload: 0 },
        Append { shard: 3, back: 1, n: 2, new_term: false, payload: 0 },
        Append { shard: 3, back: 2, n: 4, new_term: false, payload: 0 },
        Append { shard: 3, back: 3, n: 4, new_term: false, payload: 28 },
        Append { shard: 3, back: 0, n: 2, new_term: false, payload: 285 },
        Fault { which: 0, skip: 0 },
        Append { shard: 3, back: 3, n: 2, new_term: false, payload: 93 },
        Append { shard: 3, back: 3, n: 3, new_term: false, payload: 119 },
        Install { shard: 3, ahead: 7, agree: true },
        Append { shard: 0, back: 0, n: 1, new_term: false, payload: 0 },
    ] {
        run.step(a);
    }
    run.sync();
    assert_eq!(run.wal().stats().segments_deleted, 1, "the scenario deletes the old segment");
    run.crash_and_recover(CrashMode::Random, false);
}
