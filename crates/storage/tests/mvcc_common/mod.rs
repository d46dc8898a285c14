//! Helpers shared by the MVCC tests.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_storage::mvcc::*;

/// A shard of a store, applying commands at consecutive indexes.
pub(crate) struct Shard {
    pub(crate) store: MvccStore,
    pub(crate) shard: ShardId,
    pub(crate) next: u64,
}

impl Shard {
    pub(crate) fn in_memory() -> Shard {
        Shard::on(MvccStore::open_in_memory(StoreOptions::default()).unwrap(), ShardId(1))
    }

    pub(crate) fn on(store: MvccStore, shard: ShardId) -> Shard {
        let next = store.applied_index(shard).0 + 1;
        Shard { store, shard, next }
    }

    pub(crate) fn apply(&mut self, cmd: Command) -> Applied {
        let a = self.store.apply(self.shard, LogIndex(self.next), &cmd).unwrap();
        self.next += 1;
        a
    }

    /// Applies and unwraps the response.
    pub(crate) fn ok(&mut self, cmd: Command) -> Response {
        let a = self.apply(cmd);
        a.result.unwrap_or_else(|e| panic!("command refused: {e:?}"))
    }

    /// Applies and unwraps the error.
    pub(crate) fn err(&mut self, cmd: Command) -> MvccError {
        let a = self.apply(cmd);
        assert!(a.events.is_empty(), "a refused command produced events");
        a.result.expect_err("command should be refused")
    }

    pub(crate) fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.ok(Command::Put(put(key, value))) {
            Response::Put(r) => r,
            r => panic!("{r:?}"),
        }
    }

    pub(crate) fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        let req = DeleteRangeRequest { key: b(key), range_end: b(range_end), prev_kv: true };
        match self.ok(Command::DeleteRange(req)) {
            Response::DeleteRange(r) => r,
            r => panic!("{r:?}"),
        }
    }

    pub(crate) fn txn(&mut self, req: TxnRequest) -> TxnResponse {
        match self.ok(Command::Txn(req)) {
            Response::Txn(r) => r,
            r => panic!("{r:?}"),
        }
    }

    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(self.shard, req).map_err(|e| match e {
            ReadError::Request(e) => e,
            e => panic!("store failed: {e}"),
        })
    }

    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        let mut r = self.range(&RangeRequest { key: b(key), ..Default::default() }).unwrap();
        assert!(r.kvs.len() <= 1);
        r.kvs.pop()
    }

    /// Keys of a range, as strings.
    pub(crate) fn keys(&self, req: &RangeRequest) -> Vec<String> {
        self.range(req).unwrap().kvs.iter().map(|kv| s(&kv.key)).collect()
    }

    pub(crate) fn revision(&self) -> i64 {
        self.store.read().unwrap().shard_state(self.shard).unwrap().revision.0
    }
}

pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: b(key), value: b(value), ..Default::default() }
}

pub(crate) fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest { key: b(key), range_end: b(range_end), ..Default::default() }
}

/// The command at log index `i` of a fixed, deterministic workload that
/// mixes puts (with leases), deletes, txns, lease grants and revokes, and
/// compactions. Some commands are refused (deterministically), like in life.
pub(crate) fn numbered_command(i: u64) -> Command {
    let mut rng = ringkv_consensus::DetRng::new(i);
    let key = |rng: &mut ringkv_consensus::DetRng| b(&format!("k{:03}", rng.range(0, 120)));
    let value = Bytes::from(format!("value-{i}-{}", "x".repeat(rng.range(0, 64) as usize)));
    match rng.range(0, 100) {
        0..=59 => {
            let lease =
                if rng.chance(1, 5) { LeaseId(rng.range(1, 6) as i64) } else { LeaseId::NONE };
            Command::Put(PutRequest { key: key(&mut rng), value, lease, ..Default::default() })
        }
        60..=69 => {
            let k = key(&mut rng);
            let range_end = if rng.chance(1, 3) { b(&format!("{}5", s(&k))) } else { Bytes::new() };
            Command::DeleteRange(DeleteRangeRequest { key: k, range_end, prev_kv: true })
        }
        70..=84 => {
            let (k1, k2) = (key(&mut rng), key(&mut rng));
            let k2 = if k1 == k2 { b("other") } else { k2 };
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::Version(rng.range(0, 3) as i64),
                    key: k1.clone(),
                    range_end: Bytes::new(),
                }],
                success: vec![
                    RequestOp::Put(PutRequest {
                        key: k1,
                        value: value.clone(),
                        ..Default::default()
                    }),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key: k2.clone(),
                        range_end: Bytes::new(),
                        prev_kv: false,
                    }),
                ],
                failure: vec![RequestOp::Put(PutRequest { key: k2, value, ..Default::default() })],
            })
        }
        85..=91 => {
            Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(rng.range(1, 6) as i64), ttl: 60 })
        }
        92..=95 => Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(rng.range(1, 6) as i64) }),
        96 => Command::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint {
                id: LeaseId(rng.range(1, 6) as i64),
                remaining_ttl: 7,
            }],
        }),
        _ => Command::Compaction(CompactionRequest {
            // Usually valid: well behind the current revision, past the last compaction.
            revision: Revision((i as i64) * 3 / 4),
            physical: false,
        }),
    }
}

/// Applies `numbered_command(from..=to)` to `shard` in batches of 100.
pub(crate) fn apply_numbered(store: &MvccStore, shard: ShardId, from: u64, to: u64) {
    let mut i = from;
    while i <= to {
        let end = to.min(i + 99);
        let entries: Vec<_> = (i..=end).map(|j| (LogIndex(j), numbered_command(j))).collect();
        store.apply_batch(shard, &entries).unwrap();
        i = end + 1;
    }
}

/// A reference store with `numbered_command(1..=to)` applied.
pub(crate) fn reference(shard: ShardId, to: u64) -> MvccStore {
    let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    apply_numbered(&store, shard, 1, to);
    store
}

/// The shard's whole state, byte for byte (its snapshot export).
pub(crate) fn dump(store: &MvccStore, shard: ShardId) -> Vec<Bytes> {
    store.snapshot(shard).unwrap().map(Result::unwrap).collect()
}
