//! Applying one command to a shard inside the batch's write transaction.
//!
//! Every command is checked completely before it writes anything: a
//! refused command ([`MvccError`]) leaves the shard untouched, exactly as
//! in etcd, and only advances the applied index. Writes of one command
//! share one revision (`meta.revision + 1`); a command that changes nothing
//! does not take a revision.

use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::ops::Bound;

use bytes::Bytes;
use redb::{Key, ReadableTable, Table, TableDefinition, Value, WriteTransaction};

use super::LEASE_TTL_MAX_SECONDS;
use super::changes::{PackedChanges, compact_changes, for_each_change};
use super::error::{MvccError, StoreError};
use super::read::{KeyRange, check_range_request, get_latest, range_at, read_revision, scan_at};
use super::tables::{
    CHANGES, HISTORY, HistoryKey, LEASE_KEYS, LEASES, LeaseRecord, META, RECORDS, ShardMeta,
    VersionRecord, invert,
};
use super::types::{
    Command, CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseId, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, RequestOp, Response, ResponseOp, Revision,
    TxnRequest, TxnResponse,
};

/// Bytes a stored version costs beyond its key and value, for the
/// checkpoint byte budget.
const RECORD_OVERHEAD_BYTES: u64 = 32;

/// The tables of one write transaction.
///
/// The tables every apply writes are opened up front; the others on first
/// use: a batch of puts never touches leases or records, and opening a
/// redb table costs a lookup in the table directory when it opens and
/// another at commit (measurable at the node's small apply batches, see
/// `docs/perf/README.md`).
pub(crate) struct WriteTables<'t> {
    pub(crate) meta: Table<'t, u64, &'static [u8]>,
    pub(crate) history: Table<'t, HistoryKey, &'static [u8]>,
    pub(crate) changes: Table<'t, (u64, u64, u32), &'static [u8]>,
    pub(crate) leases: LazyTable<'t, (u64, i64), &'static [u8]>,
    pub(crate) lease_keys: LazyTable<'t, (u64, i64, &'static [u8]), ()>,
    pub(crate) records: LazyTable<'t, (u64, &'static str), &'static [u8]>,
}

/// A table of a write transaction, opened when first used.
pub(crate) struct LazyTable<'t, K: Key + 'static, V: Value + 'static> {
    txn: &'t WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    table: OnceCell<Table<'t, K, V>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> LazyTable<'t, K, V> {
    fn new(txn: &'t WriteTransaction, definition: TableDefinition<'static, K, V>) -> Self {
        LazyTable { txn, definition, table: OnceCell::new() }
    }

    /// The table, opened (and created if missing) on the first call.
    pub(crate) fn open(&self) -> Result<&Table<'t, K, V>, StoreError> {
        if let Some(table) = self.table.get() {
            return Ok(table);
        }
        let table =
            self.txn.open_table(self.definition).map_err(StoreError::engine("open table"))?;
        // The cell was empty just above and nothing between can fill it.
        Ok(self.table.get_or_init(|| table))
    }

    /// The table for writing, opened on the first call.
    pub(crate) fn open_mut(&mut self) -> Result<&mut Table<'t, K, V>, StoreError> {
        self.open()?;
        Ok(self.table.get_mut().expect("opened just above"))
    }
}

impl<'t> WriteTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<WriteTables<'t>, StoreError> {
        let e = || StoreError::engine("open table");
        Ok(WriteTables {
            meta: txn.open_table(META).map_err(e())?,
            history: txn.open_table(HISTORY).map_err(e())?,
            changes: txn.open_table(CHANGES).map_err(e())?,
            leases: LazyTable::new(txn, LEASES),
            lease_keys: LazyTable::new(txn, LEASE_KEYS),
            records: LazyTable::new(txn, RECORDS),
        })
    }

    /// Opens every table, creating those a new database lacks, so that read
    /// views (which cannot create tables) find them all.
    pub(crate) fn create_all(&self) -> Result<(), StoreError> {
        self.leases.open()?;
        self.lease_keys.open()?;
        self.records.open()?;
        Ok(())
    }

    /// Deletes every row of `shard` in every data table (not its meta row).
    pub(crate) fn clear_shard(&mut self, shard: u64) -> Result<(), StoreError> {
        let e = || StoreError::engine("clear shard");
        // Bounded by the next shard's first row, so the work is this
        // shard's rows only; the last possible shard runs to the end.
        let next = shard.checked_add(1);
        let lo: (u64, &[u8], u64) = (shard, &[], 0);
        let hi: Bound<(u64, &[u8], u64)> =
            next.map_or(Bound::Unbounded, |n| Bound::Excluded((n, &[][..], 0)));
        self.history
            .retain_in::<(u64, &[u8], u64), _>((Bound::Included(lo), hi), |_, _| false)
            .map_err(e())?;
        self.changes
            .retain_in::<(u64, u64, u32), _>((shard, 0, 0)..=(shard, u64::MAX, u32::MAX), |_, _| {
                false
            })
            .map_err(e())?;
        self.leases
            .open_mut()?
            .retain_in::<(u64, i64), _>((shard, i64::MIN)..=(shard, i64::MAX), |_, _| false)
            .map_err(e())?;
        let lo: (u64, i64, &[u8]) = (shard, i64::MIN, &[]);
        let hi: Bound<(u64, i64, &[u8])> =
            next.map_or(Bound::Unbounded, |n| Bound::Excluded((n, i64::MIN, &[][..])));
        self.lease_keys
            .open_mut()?
            .retain_in::<(u64, i64, &[u8]), _>((Bound::Included(lo), hi), |_, _| false)
            .map_err(e())?;
        let lo: (u64, &str) = (shard, "");
        let hi: Bound<(u64, &str)> = next.map_or(Bound::Unbounded, |n| Bound::Excluded((n, "")));
        self.records
            .open_mut()?
            .retain_in::<(u64, &str), _>((Bound::Included(lo), hi), |_, _| false)
            .map_err(e())?;
        Ok(())
    }
}

/// Limits every replica must agree on (they shape responses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) txn_ops_max: usize,
}

/// What applying one command produced.
pub(crate) struct Outcome {
    pub(crate) result: Result<Response, MvccError>,
    pub(crate) events: Vec<Event>,
    /// Bytes written, for the checkpoint budget.
    pub(crate) bytes: u64,
}

/// Applies `cmd` to `shard`, updating `meta.revision` / `meta.compacted`
/// (the caller owns `meta.applied` and writing `meta` back).
/// `changes` collects the shard's change log entries for the batch to
/// write (see `changes.rs`).
pub(crate) fn apply_command(
    t: &mut WriteTables<'_>,
    changes: &mut PackedChanges,
    shard: u64,
    meta: &mut ShardMeta,
    cmd: &Command,
    limits: Limits,
) -> Result<Outcome, StoreError> {
    let mut w = Writer {
        t,
        changes,
        shard,
        rev: meta.revision.0 + 1,
        sub: 0,
        events: Vec::new(),
        bytes: 0,
    };
    let result = match cmd {
        Command::Put(req) => w.apply_put(req)?.map(Response::Put),
        Command::DeleteRange(req) => w.apply_delete_range(req)?.map(Response::DeleteRange),
        Command::Txn(req) => w.apply_txn(meta, req, limits)?.map(Response::Txn),
        Command::Compaction(req) => w.apply_compaction(meta, req)?.map(Response::Compaction),
        Command::LeaseGrant(req) => w.apply_lease_grant(req)?.map(Response::LeaseGrant),
        Command::LeaseRevoke(req) => w.apply_lease_revoke(req)?.map(Response::LeaseRevoke),
        Command::LeaseCheckpoint(req) => {
            w.apply_lease_checkpoint(req)?.map(Response::LeaseCheckpoint)
        }
    };
    debug_assert!(result.is_ok() || w.sub == 0, "a refused command wrote");
    if w.sub > 0 {
        meta.revision = Revision(w.rev);
    }
    let result = result.map(|mut r| {
        set_revision(&mut r, meta.revision);
        r
    });
    Ok(Outcome { result, events: w.events, bytes: w.bytes })
}

/// Sets the header revision of a response (the responses inside a txn
/// carry their own, set as they run).
fn set_revision(resp: &mut Response, rev: Revision) {
    match resp {
        Response::Put(r) => r.revision = rev,
        Response::DeleteRange(r) => r.revision = rev,
        Response::Txn(t) => t.revision = rev,
        Response::Compaction(r) => r.revision = rev,
        Response::LeaseGrant(r) => r.revision = rev,
        Response::LeaseRevoke(r) => r.revision = rev,
        Response::LeaseCheckpoint(r) => r.revision = rev,
    }
}

/// Checks a put's own fields (etcd's `checkPutRequest`).
fn check_put_request(req: &PutRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease.is_some() {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

impl TxnRequest {
    /// Checks the request's shape as etcd does before proposing it: at most
    /// `ops_max` compares and at most `ops_max` operations per branch (a
    /// nested transaction gets what its parent left), no empty key, and no
    /// key written twice. The store checks again on apply.
    ///
    /// # Errors
    /// [`MvccError::TooManyOps`], [`MvccError::EmptyKey`],
    /// [`MvccError::ValueProvided`], [`MvccError::LeaseProvided`] or
    /// [`MvccError::DuplicateKey`].
    pub fn validate(&self, ops_max: usize) -> Result<(), MvccError> {
        check_txn_shape(self, ops_max)?;
        check_txn_intervals(&self.success)?;
        check_txn_intervals(&self.failure)?;
        Ok(())
    }
}

fn check_txn_shape(req: &TxnRequest, ops_max: usize) -> Result<(), MvccError> {
    let count = req.compare.len().max(req.success.len()).max(req.failure.len());
    if count > ops_max {
        return Err(MvccError::TooManyOps { count, max: ops_max });
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => check_range_request(r)?,
            RequestOp::Put(p) => check_put_request(p)?,
            RequestOp::DeleteRange(d) => {
                if d.key.is_empty() {
                    return Err(MvccError::EmptyKey);
                }
            }
            RequestOp::Txn(t) => check_txn_shape(t, ops_max - count)?,
        }
    }
    Ok(())
}

/// Keys put by a branch (with nested transactions) and ranges it deletes.
struct Writes {
    /// Ordered, so that which duplicate is reported is the same on every
    /// replica (a hash set's order differs between processes).
    puts: BTreeSet<Bytes>,
    deletes: Vec<KeyRange>,
}

impl Writes {
    fn deletes_key(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|r| r.contains(key))
    }
}

/// etcd's duplicate-key rule for one branch: no key is put twice, and no
/// key put here or in a nested transaction lies in a range deleted here or
/// in a nested transaction. The two branches of a nested transaction are
/// exclusive, so they may put the same key. Deletes may overlap each other.
/// A from-key delete (`range_end == "\0"`) covers every key from its start,
/// here as everywhere else.
fn check_txn_intervals(ops: &[RequestOp]) -> Result<Writes, MvccError> {
    let mut writes = Writes { puts: BTreeSet::new(), deletes: Vec::new() };
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            writes.deletes.push(KeyRange::new(&d.key, &d.range_end));
        }
    }
    let dup = |key: &Bytes| MvccError::DuplicateKey { key: key.clone() };
    for op in ops {
        if let RequestOp::Txn(t) = op {
            let then = check_txn_intervals(&t.success)?;
            let other = check_txn_intervals(&t.failure)?;
            for key in &then.puts {
                if writes.puts.contains(key) || writes.deletes_key(key) {
                    return Err(dup(key));
                }
            }
            // `then.puts` joins `writes.puts` only after this check: the two
            // branches are exclusive, so a key in both is not a duplicate.
            for key in &other.puts {
                if writes.puts.contains(key) || writes.deletes_key(key) {
                    return Err(dup(key));
                }
            }
            writes.puts.extend(then.puts);
            writes.puts.extend(other.puts);
            writes.deletes.extend(then.deletes);
            writes.deletes.extend(other.deletes);
        }
    }
    for op in ops {
        if let RequestOp::Put(p) = op {
            if writes.puts.contains(&p.key) || writes.deletes_key(&p.key) {
                return Err(dup(&p.key));
            }
            writes.puts.insert(p.key.clone());
        }
    }
    Ok(writes)
}

/// Which branch each transaction on the executed path takes, decided
/// before the transaction writes (etcd evaluates nested compares against
/// the state before the outer transaction too).
struct TxnPath {
    succeeded: bool,
    /// One per nested transaction of the taken branch, in order.
    nested: Vec<TxnPath>,
}

struct Writer<'a, 't> {
    t: &'a mut WriteTables<'t>,
    /// This batch's change log entries of the shard, not yet in `t.changes`.
    changes: &'a mut PackedChanges,
    shard: u64,
    /// The revision this command writes at.
    rev: i64,
    /// Writes made so far at `rev`; `> 0` means the command changed the store.
    sub: u32,
    events: Vec<Event>,
    bytes: u64,
}

/// A command step: the store may fail (outer), or the request may be
/// refused with an etcd error (inner) before anything was written.
type Checked<T> = Result<Result<T, MvccError>, StoreError>;

impl Writer<'_, '_> {
    /// The current revision as seen inside this command (its own writes
    /// included once it has made some).
    fn current(&self) -> Revision {
        Revision(if self.sub > 0 { self.rev } else { self.rev - 1 })
    }

    fn lease_exists(&self, lease: LeaseId) -> Result<bool, StoreError> {
        Ok(self
            .t
            .leases
            .open()?
            .get((self.shard, lease.0))
            .map_err(StoreError::engine("read lease"))?
            .is_some())
    }

    /// State checks of a put (its own fields already checked).
    fn check_put_state(&self, req: &PutRequest) -> Checked<()> {
        if req.lease.is_some() && !self.lease_exists(req.lease)? {
            return Ok(Err(MvccError::LeaseNotFound { lease: req.lease }));
        }
        if (req.ignore_value || req.ignore_lease)
            && get_latest(&self.t.history, self.shard, &req.key)?.is_none()
        {
            return Ok(Err(MvccError::KeyNotFound { key: req.key.clone() }));
        }
        Ok(Ok(()))
    }

    fn apply_put(&mut self, req: &PutRequest) -> Checked<PutResponse> {
        if let Err(e) = check_put_request(req) {
            return Ok(Err(e));
        }
        if let Err(e) = self.check_put_state(req)? {
            return Ok(Err(e));
        }
        self.put(req).map(Ok)
    }

    fn record_change(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.changes.push(self.rev as u64, self.sub, key);
        self.sub = self.sub.checked_add(1).expect("fewer than 2^32 writes in one revision");
        Ok(())
    }

    fn detach(&mut self, lease: LeaseId, key: &[u8]) -> Result<(), StoreError> {
        if lease.is_some() {
            self.t
                .lease_keys
                .open_mut()?
                .remove((self.shard, lease.0, key))
                .map_err(StoreError::engine("detach lease"))?;
        }
        Ok(())
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        let prev = get_latest(&self.t.history, self.shard, &req.key)?;
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(Revision(self.rev), |p| p.create_revision),
            mod_revision: Revision(self.rev),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.t
            .history
            .insert(
                (self.shard, req.key.as_ref(), invert(self.rev)),
                VersionRecord::live(&kv).encode().as_slice(),
            )
            .map_err(StoreError::engine("write version"))?;
        self.record_change(&req.key)?;
        if let Some(p) = &prev
            && p.lease != lease
        {
            self.detach(p.lease, &req.key)?;
        }
        if lease.is_some() {
            self.t
                .lease_keys
                .open_mut()?
                .insert((self.shard, lease.0, req.key.as_ref()), ())
                .map_err(StoreError::engine("attach lease"))?;
        }
        self.bytes += (kv.key.len() + kv.value.len()) as u64 + RECORD_OVERHEAD_BYTES;
        let prev_kv = if req.prev_kv { prev.clone() } else { None };
        self.events.push(Event { kind: EventKind::Put, kv, prev_kv: prev });
        Ok(PutResponse { revision: Revision::ZERO, prev_kv })
    }

    /// Writes a tombstone for live `prev`.
    fn delete_key(&mut self, prev: KeyValue) -> Result<(), StoreError> {
        self.t
            .history
            .insert(
                (self.shard, prev.key.as_ref(), invert(self.rev)),
                VersionRecord::tombstone().encode().as_slice(),
            )
            .map_err(StoreError::engine("write tombstone"))?;
        self.record_change(&prev.key)?;
        self.detach(prev.lease, &prev.key)?;
        self.bytes += prev.key.len() as u64 + RECORD_OVERHEAD_BYTES;
        let kv = KeyValue {
            key: prev.key.clone(),
            mod_revision: Revision(self.rev),
            ..KeyValue::default()
        };
        self.events.push(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev) });
        Ok(())
    }

    fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut doomed = Vec::new();
        scan_at(&self.t.history, self.shard, &range, i64::MAX, true, |kv| {
            doomed.push(kv);
            true
        })?;
        let deleted = doomed.len() as i64;
        let prev_kvs = if req.prev_kv { doomed.clone() } else { Vec::new() };
        for kv in doomed {
            self.delete_key(kv)?;
        }
        Ok(DeleteRangeResponse { revision: Revision::ZERO, deleted, prev_kvs })
    }

    fn apply_delete_range(&mut self, req: &DeleteRangeRequest) -> Checked<DeleteRangeResponse> {
        if req.key.is_empty() {
            return Ok(Err(MvccError::EmptyKey));
        }
        self.delete_range(req).map(Ok)
    }

    fn compare_holds(&self, c: &Compare) -> Result<bool, StoreError> {
        let holds = |kv: &KeyValue| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(r) => kv.create_revision.cmp(r),
                CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
                CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
                CompareTarget::Lease(l) => kv.lease.cmp(l),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::NotEqual => ord.is_ne(),
            }
        };
        let range = KeyRange::new(&c.key, &c.range_end);
        let with_value = matches!(c.target, CompareTarget::Value(_));
        let mut any = false;
        let mut all = true;
        scan_at(&self.t.history, self.shard, &range, i64::MAX, with_value, |kv| {
            any = true;
            all = holds(&kv);
            all
        })?;
        Ok(match (any, &c.target) {
            (true, _) => all,
            // etcd: there is no way to express "missing" as a value, so a
            // value compare on a missing key fails; the other targets
            // compare against zero.
            (false, CompareTarget::Value(_)) => false,
            (false, _) => holds(&KeyValue::default()),
        })
    }

    fn txn_path(&self, req: &TxnRequest) -> Result<TxnPath, StoreError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare_holds(c)? {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded { &req.success } else { &req.failure };
        let mut nested = Vec::new();
        for op in branch {
            if let RequestOp::Txn(t) = op {
                nested.push(self.txn_path(t)?);
            }
        }
        Ok(TxnPath { succeeded, nested })
    }

    /// State checks of every operation on the path (etcd's `checkRequests`).
    fn check_txn_state(&self, meta: &ShardMeta, req: &TxnRequest, path: &TxnPath) -> Checked<()> {
        let branch = if path.succeeded { &req.success } else { &req.failure };
        let mut nested = path.nested.iter();
        for op in branch {
            match op {
                RequestOp::Range(r) => {
                    if let Err(e) = read_revision(meta, self.current(), r.revision) {
                        return Ok(Err(e));
                    }
                }
                RequestOp::Put(p) => {
                    if let Err(e) = self.check_put_state(p)? {
                        return Ok(Err(e));
                    }
                }
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(t) => {
                    let sub = nested.next().expect("one path per nested txn");
                    if let Err(e) = self.check_txn_state(meta, t, sub)? {
                        return Ok(Err(e));
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    fn txn(&mut self, req: &TxnRequest, path: &TxnPath) -> Result<TxnResponse, StoreError> {
        let branch = if path.succeeded { &req.success } else { &req.failure };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(branch.len());
        // Each answer carries the revision as it stands right after its
        // operation, as etcd's do: a read before the first write reports
        // the previous revision, every write the new one.
        for op in branch {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let current = self.current();
                    let rev = if r.revision.0 <= 0 { current } else { r.revision };
                    ResponseOp::Range(range_at(&self.t.history, self.shard, r, rev, current)?)
                }
                RequestOp::Put(p) => {
                    let mut resp = self.put(p)?;
                    resp.revision = self.current();
                    ResponseOp::Put(resp)
                }
                RequestOp::DeleteRange(d) => {
                    let mut resp = self.delete_range(d)?;
                    resp.revision = self.current();
                    ResponseOp::DeleteRange(resp)
                }
                RequestOp::Txn(t) => {
                    let sub = nested.next().expect("one path per nested txn");
                    let mut resp = self.txn(t, sub)?;
                    resp.revision = self.current();
                    ResponseOp::Txn(resp)
                }
            });
        }
        Ok(TxnResponse { revision: Revision::ZERO, succeeded: path.succeeded, responses })
    }

    fn apply_txn(
        &mut self,
        meta: &ShardMeta,
        req: &TxnRequest,
        limits: Limits,
    ) -> Checked<TxnResponse> {
        if let Err(e) = req.validate(limits.txn_ops_max) {
            return Ok(Err(e));
        }
        let path = self.txn_path(req)?;
        if let Err(e) = self.check_txn_state(meta, req, &path)? {
            return Ok(Err(e));
        }
        self.txn(req, &path).map(Ok)
    }

    fn apply_compaction(
        &mut self,
        meta: &mut ShardMeta,
        req: &CompactionRequest,
    ) -> Checked<CompactionResponse> {
        let rev = req.revision;
        // etcd checks in this order (`updateCompactRev`).
        if rev <= meta.compacted {
            return Ok(Err(MvccError::Compacted { requested: rev, compacted: meta.compacted }));
        }
        if rev > meta.revision {
            return Ok(Err(MvccError::FutureRevision { requested: rev, current: meta.revision }));
        }
        // Only keys written at or since the last compacted revision can have
        // more than one version at or below `rev`, or a tombstone there.
        // This batch's earlier writes are among them.
        self.changes.flush(&mut self.t.changes, self.shard)?;
        let mut keys = BTreeSet::new();
        let from = (meta.compacted.0 as u64, 0);
        for_each_change(&self.t.changes, self.shard, from, rev.0 as u64, |_, _, key| {
            keys.insert(key.to_vec());
            Ok(true)
        })?;
        let mut doomed = Vec::new();
        for key in &keys {
            doomed.clear();
            let lo: (u64, &[u8], u64) = (self.shard, key, invert(rev.0));
            let hi: (u64, &[u8], u64) = (self.shard, key, u64::MAX);
            let iter =
                self.t.history.range(lo..=hi).map_err(StoreError::engine("range history"))?;
            for (i, item) in iter.enumerate() {
                let (k, v) = item.map_err(StoreError::engine("read history"))?;
                let inverted = k.value().2;
                // The newest version at or below `rev` stays if it is live
                // (reads at `rev` must still see it) or if it was written
                // at `rev` itself (watchers may still replay revision
                // `rev`, as in etcd; the next compaction drops it).
                let newest_kept = i == 0
                    && (inverted == invert(rev.0)
                        || !VersionRecord::decode(self.shard, v.value(), false)?.tombstone);
                if !newest_kept {
                    doomed.push(inverted);
                }
            }
            for &inverted in &doomed {
                self.t
                    .history
                    .remove((self.shard, key.as_slice(), inverted))
                    .map_err(StoreError::engine("compact history"))?;
            }
            self.bytes += key.len() as u64 + RECORD_OVERHEAD_BYTES * doomed.len() as u64;
        }
        // Revision `rev` keeps its change records: it can still be replayed,
        // and its keys are revisited by the next compaction.
        compact_changes(&mut self.t.changes, self.shard, rev.0 as u64)?;
        meta.compacted = rev;
        Ok(Ok(CompactionResponse { revision: Revision::ZERO }))
    }

    fn apply_lease_grant(&mut self, req: &LeaseGrantRequest) -> Checked<LeaseGrantResponse> {
        if !req.id.is_some() {
            // etcd's lessor refuses the "no lease" id this way.
            return Ok(Err(MvccError::LeaseNotFound { lease: req.id }));
        }
        if req.ttl > LEASE_TTL_MAX_SECONDS {
            return Ok(Err(MvccError::LeaseTtlTooLarge { ttl: req.ttl }));
        }
        if self.lease_exists(req.id)? {
            return Ok(Err(MvccError::LeaseExists { lease: req.id }));
        }
        let record = LeaseRecord { granted_ttl: req.ttl, remaining_ttl: None };
        self.t
            .leases
            .open_mut()?
            .insert((self.shard, req.id.0), record.encode().as_slice())
            .map_err(StoreError::engine("write lease"))?;
        self.bytes += RECORD_OVERHEAD_BYTES;
        Ok(Ok(LeaseGrantResponse { revision: Revision::ZERO, id: req.id, ttl: req.ttl }))
    }

    fn apply_lease_revoke(&mut self, req: &LeaseRevokeRequest) -> Checked<LeaseRevokeResponse> {
        if !self.lease_exists(req.id)? {
            return Ok(Err(MvccError::LeaseNotFound { lease: req.id }));
        }
        let keys = lease_keys(self.t.lease_keys.open()?, self.shard, req.id)?;
        for key in keys {
            let kv = get_latest(&self.t.history, self.shard, &key)?;
            // Invariant: a key is attached only while its latest version
            // is live and names the lease.
            let kv = kv.filter(|kv| kv.lease == req.id).ok_or_else(|| StoreError::Corrupt {
                table: "mvcc_lease_keys",
                shard: ringkv_consensus::ShardId(self.shard),
                detail: format!("lease {} lists key {key:?}, which is not attached", req.id),
            })?;
            self.delete_key(kv)?;
        }
        self.t
            .leases
            .open_mut()?
            .remove((self.shard, req.id.0))
            .map_err(StoreError::engine("remove lease"))?;
        self.bytes += RECORD_OVERHEAD_BYTES;
        Ok(Ok(LeaseRevokeResponse { revision: Revision::ZERO }))
    }

    fn apply_lease_checkpoint(
        &mut self,
        req: &LeaseCheckpointRequest,
    ) -> Checked<LeaseCheckpointResponse> {
        for cp in &req.checkpoints {
            let current = self
                .t
                .leases
                .open()?
                .get((self.shard, cp.id.0))
                .map_err(StoreError::engine("read lease"))?
                .map(|v| LeaseRecord::decode(self.shard, v.value()))
                .transpose()?;
            if let Some(mut record) = current {
                record.remaining_ttl = Some(cp.remaining_ttl);
                self.t
                    .leases
                    .open_mut()?
                    .insert((self.shard, cp.id.0), record.encode().as_slice())
                    .map_err(StoreError::engine("write lease"))?;
                self.bytes += RECORD_OVERHEAD_BYTES;
            }
        }
        Ok(Ok(LeaseCheckpointResponse { revision: Revision::ZERO }))
    }
}

/// Keys attached to `lease`, in key order.
pub(crate) fn lease_keys<T>(table: &T, shard: u64, lease: LeaseId) -> Result<Vec<Bytes>, StoreError>
where
    T: ReadableTable<(u64, i64, &'static [u8]), ()>,
{
    let lo: (u64, i64, &[u8]) = (shard, lease.0, &[]);
    let hi: Bound<(u64, i64, &[u8])> = Bound::Unbounded;
    let iter = table
        .range::<(u64, i64, &[u8])>((Bound::Included(lo), hi))
        .map_err(StoreError::engine("range lease keys"))?;
    let mut keys = Vec::new();
    for item in iter {
        let (k, _) = item.map_err(StoreError::engine("read lease keys"))?;
        let (s, l, key) = k.value();
        if s != shard || l != lease.0 {
            break;
        }
        keys.push(Bytes::copy_from_slice(key));
    }
    Ok(keys)
}
