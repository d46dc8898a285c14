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
