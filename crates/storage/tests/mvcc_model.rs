//! Differential test: random operation sequences applied to the store and
//! to a deliberately simple in-memory model of etcd's semantics (a
//! `BTreeMap` of key to its versions) must give identical answers, events
//! and reads at every revision.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_storage::mvcc::*;

/// The txn op limit used here: small, so the generator reaches it.
const OPS_MAX: usize = 4;

#[derive(Clone, Debug)]
struct Ver {
    rev: i64,
    /// `None` is a tombstone.
    kv: Option<KeyValue>,
}

#[derive(Default)]
struct Model {
    hist: BTreeMap<Bytes, Vec<Ver>>,
    rev: i64,
    compacted: i64,
    /// id -> (granted ttl, checkpointed remaining ttl)
    leases: BTreeMap<i64, (i64, Option<i64>)>,
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

impl Model {
    fn new() -> Model {
        Model { rev: 1, ..Model::default() }
    }

    fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        self.hist.get(key)?.iter().rev().find(|v| v.rev <= rev)?.kv.clone()
    }

    fn live_at(&self, start: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.hist
            .keys()
            .filter(|k| in_range(k, start, end))
            .filter_map(|k| self.get_at(k, rev))
            .collect()
    }

    fn range(&self, req: &RangeRequest, current: i64) -> Result<RangeResponse, MvccError> {
        if req.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        if req.revision.0 > current {
            return Err(MvccError::FutureRevision {
                requested: req.revision,
                current: Revision(current),
            });
        }
        let rev = if req.revision.0 <= 0 { current } else { req.revision.0 };
        if rev < self.compacted {
            return Err(MvccError::Compacted {
                requested: Revision(rev),
                compacted: Revision(self.compacted),
            });
        }
        let all = self.live_at(&req.key, &req.range_end, rev);
        let count = all.len() as i64;
        if req.count_only {
            return Ok(RangeResponse {
                revision: Revision(current),
                kvs: vec![],
                more: false,
                count,
            });
        }
        let ok = |bound: Revision, v: Revision, min: bool| {
            bound.0 == 0 || if min { v >= bound } else { v <= bound }
        };
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| {
                ok(req.min_mod_revision, kv.mod_revision, true)
                    && ok(req.max_mod_revision, kv.mod_revision, false)
                    && ok(req.min_create_revision, kv.create_revision, true)
                    && ok(req.max_create_revision, kv.create_revision, false)
            })
            .collect();
        let key_of = |kv: &KeyValue| -> (Bytes, i64) {
            match req.sort_target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Version => (Bytes::new(), kv.version),
                SortTarget::Create => (Bytes::new(), kv.create_revision.0),
                SortTarget::Mod => (Bytes::new(), kv.mod_revision.0),
                SortTarget::Value => (kv.value.clone(), 0),
            }
        };
        match (req.sort_order, req.sort_target) {
            (SortOrder::Descend, _) => kvs.sort_by_key(|kv| std::cmp::Reverse(key_of(kv))),
            (_, SortTarget::Key) => {}
            _ => kvs.sort_by_key(key_of),
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Bytes::new());
        }
        Ok(RangeResponse { revision: Revision(current), kvs, more, count })
    }

    fn latest(&self, key: &[u8]) -> Option<KeyValue> {
        self.get_at(key, i64::MAX)
    }

    fn check_put(&self, p: &PutRequest) -> Result<(), MvccError> {
        if p.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(MvccError::ValueProvided);
        }
        if p.ignore_lease && p.lease.0 != 0 {
            return Err(MvccError::LeaseProvided);
        }
        if p.lease.0 != 0 && !self.leases.contains_key(&p.lease.0) {
            return Err(MvccError::LeaseNotFound { lease: p.lease });
        }
        if (p.ignore_value || p.ignore_lease) && self.latest(&p.key).is_none() {
            return Err(MvccError::KeyNotFound { key: p.key.clone() });
        }
        Ok(())
    }

    fn write(&mut self, key: &Bytes, rev: i64, kv: Option<KeyValue>) {
        self.hist.entry(key.clone()).or_default().push(Ver { rev, kv });
    }

    fn do_put(&mut self, p: &PutRequest, rev: i64, events: &mut Vec<Event>) -> PutResponse {
        let prev = self.latest(&p.key);
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(Revision(rev), |p| p.create_revision),
            mod_revision: Revision(rev),
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            value: if p.ignore_value { prev.clone().unwrap().value } else { p.value.clone() },
            lease: if p.ignore_lease { prev.clone().unwrap().lease } else { p.lease },
        };
        self.write(&p.key, rev, Some(kv.clone()));
        events.push(Event { kind: EventKind::Put, kv, prev_kv: prev.clone() });
        PutResponse { revision: Revision(0), prev_kv: if p.prev_kv { prev } else { None } }
    }

    fn do_delete(
        &mut self,
        start: &[u8],
        end: &[u8],
        rev: i64,
        events: &mut Vec<Event>,
    ) -> Vec<KeyValue> {
        let doomed = self.live_at(start, end, i64::MAX);
        for kv in &doomed {
            self.write(&kv.key, rev, None);
            let tomb =
                KeyValue { key: kv.key.clone(), mod_revision: Revision(rev), ..Default::default() };
            events.push(Event { kind: EventKind::Delete, kv: tomb, prev_kv: Some(kv.clone()) });
        }
        doomed
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs = self.live_at(&c.key, &c.range_end, i64::MAX);
        let test = |kv: &KeyValue| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(r) => kv.create_revision.cmp(r),
                CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Lease(l) => kv.lease.cmp(l),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::NotEqual => ord.is_ne(),
            }
        };
        if kvs.is_empty() {
            !matches!(c.target, CompareTarget::Value(_)) && test(&KeyValue::default())
        } else {
            kvs.iter().all(test)
        }
    }

    fn shape(t: &TxnRequest, max: usize) -> Result<(), MvccError> {
        let n = t.compare.len().max(t.success.len()).max(t.failure.len());
        if n > max {
            return Err(MvccError::TooManyOps { count: n, max });
        }
        if t.compare.iter().any(|c| c.key.is_empty()) {
            return Err(MvccError::EmptyKey);
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Put(p) => {
                    if p.key.is_empty() {
                        return Err(MvccError::EmptyKey);
                    }
                    if p.ignore_value && !p.value.is_empty() {
                        return Err(MvccError::ValueProvided);
                    }
                    if p.ignore_lease && p.lease.0 != 0 {
                        return Err(MvccError::LeaseProvided);
                    }
                }
                RequestOp::Range(RangeRequest { key, .. })
                | RequestOp::DeleteRange(DeleteRangeRequest { key, .. }) => {
                    if key.is_empty() {
                        return Err(MvccError::EmptyKey);
                    }
                }
                RequestOp::Txn(t) => Model::shape(t, max - n)?,
            }
        }
        Ok(())
    }

    /// (puts, deletes) of a branch, or the duplicate key.
    #[allow(clippy::type_complexity)]
    fn writes(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<(Bytes, Bytes)>), Bytes> {
        let mut dels: Vec<(Bytes, Bytes)> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::DeleteRange(d) => Some((d.key.clone(), d.range_end.clone())),
                _ => None,
            })
            .collect();
        let deleted =
            |dels: &Vec<(Bytes, Bytes)>, k: &Bytes| dels.iter().any(|(s, e)| in_range(k, s, e));
        let mut puts = BTreeSet::new();
        for op in ops {
            if let RequestOp::Txn(t) = op {
                let (then_puts, then_dels) = Model::writes(&t.success)?;
                let (else_puts, else_dels) = Model::writes(&t.failure)?;
                for k in &then_puts {
                    if puts.contains(k) || deleted(&dels, k) {
                        return Err(k.clone());
                    }
                }
                for k in &else_puts {
                    if (puts.contains(k) && !then_puts.contains(k)) || deleted(&dels, k) {
                        return Err(k.clone());
                    }
                }
                puts.extend(then_puts);
                puts.extend(else_puts);
                dels.extend(then_dels);
                dels.extend(else_dels);
            }
        }
        for op in ops {
            if let RequestOp::Put(p) = op {
                if puts.contains(&p.key) || deleted(&dels, &p.key) {
                    return Err(p.key.clone());
                }
                puts.insert(p.key.clone());
            }
        }
        Ok((puts, dels))
    }

    /// Branch choices, decided on the state before the txn: pre-order over
    /// the nested txns of taken branches.
    fn path(&self, t: &TxnRequest, out: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        out.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(n) = op {
                self.path(n, out);
            }
        }
    }

    fn check_txn(
        &self,
        t: &TxnRequest,
        path: &mut std::slice::Iter<'_, bool>,
    ) -> Result<(), MvccError> {
        let ok = *path.next().unwrap();
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Range(r) => {
                    self.range(&RangeRequest { count_only: true, ..r.clone() }, self.rev)?;
                }
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(n) => self.check_txn(n, path)?,
            }
        }
        Ok(())
    }

    fn run_txn(
        &mut self,
        t: &TxnRequest,
        path: &mut std::slice::Iter<'_, bool>,
        rev: i64,
        events: &mut Vec<Event>,
    ) -> TxnResponse {
        let ok = *path.next().unwrap();
        let mut responses = vec![];
        for op in if ok { &t.success } else { &t.failure } {
            let current =
                |events: &Vec<Event>| Revision(if events.is_empty() { rev - 1 } else { rev });
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r, current(events).0).unwrap()),
                RequestOp::Put(p) => {
                    let mut resp = self.do_put(p, rev, events);
                    resp.revision = current(events);
                    ResponseOp::Put(resp)
                }
                RequestOp::DeleteRange(d) => {
                    let prev = self.do_delete(&d.key, &d.range_end, rev, events);
                    ResponseOp::DeleteRange(DeleteRangeResponse {
                        revision: current(events),
                        deleted: prev.len() as i64,
                        prev_kvs: if d.prev_kv { prev } else { vec![] },
                    })
                }
                RequestOp::Txn(n) => {
                    let mut resp = self.run_txn(n, path, rev, events);
                    resp.revision = current(events);
                    ResponseOp::Txn(resp)
                }
            });
        }
        TxnResponse { revision: Revision(0), succeeded: ok, responses }
    }

    fn apply(&mut self, cmd: &Command) -> (Result<Response, MvccError>, Vec<Event>) {
        let rev = self.rev + 1;
        let mut events = vec![];
        let result = match cmd {
            Command::Put(p) => {
                self.check_put(p).map(|()| Response::Put(self.do_put(p, rev, &mut events)))
            }
            Command::DeleteRange(d) => {
                if d.key.is_empty() {
                    Err(MvccError::EmptyKey)
                } else {
                    let prev = self.do_delete(&d.key, &d.range_end, rev, &mut events);
                    Ok(Response::DeleteRange(DeleteRangeResponse {
                        revision: Revision(0),
                        deleted: prev.len() as i64,
                        prev_kvs: if d.prev_kv { prev } else { vec![] },
                    }))
                }
            }
            Command::Txn(t) => (|| {
                Model::shape(t, OPS_MAX)?;
                Model::writes(&t.success).map_err(|key| MvccError::DuplicateKey { key })?;
                Model::writes(&t.failure).map_err(|key| MvccError::DuplicateKey { key })?;
                let mut path = vec![];
                self.path(t, &mut path);
                self.check_txn(t, &mut path.iter())?;
                Ok(Response::Txn(self.run_txn(t, &mut path.iter(), rev, &mut events)))
            })(),
            Command::Compaction(c) => {
                if c.revision.0 <= self.compacted {
                    Err(MvccError::Compacted {
                        requested: c.revision,
                        compacted: Revision(self.compacted),
                    })
                } else if c.revision.0 > self.rev {
                    Err(MvccError::FutureRevision {
                        requested: c.revision,
                        current: Revision(self.rev),
                    })
                } else {
                    let r = c.revision.0;
                    for vers in self.hist.values_mut() {
                        let keep_from = vers.iter().rposition(|v| v.rev <= r);
                        if let Some(i) = keep_from {
                            let drop_last = vers[i].kv.is_none();
                            vers.drain(..if drop_last { i + 1 } else { i });
                        }
                    }
                    self.hist.retain(|_, v| !v.is_empty());
                    self.compacted = r;
                    Ok(Response::Compaction(CompactionResponse { revision: Revision(0) }))
                }
            }
            Command::LeaseGrant(g) => {
                if g.id.0 == 0 {
                    Err(MvccError::LeaseNotFound { lease: g.id })
                } else if g.ttl > LEASE_TTL_MAX_SECONDS {
                    Err(MvccError::LeaseTtlTooLarge { ttl: g.ttl })
                } else if let std::collections::btree_map::Entry::Vacant(e) =
                    self.leases.entry(g.id.0)
                {
                    e.insert((g.ttl, None));
                    Ok(Response::LeaseGrant(LeaseGrantResponse {
                        revision: Revision(0),
                        id: g.id,
                        ttl: g.ttl,
                    }))
                } else {
                    Err(MvccError::LeaseExists { lease: g.id })
                }
            }
            Command::LeaseRevoke(r) => {
                if self.leases.remove(&r.id.0).is_none() {
                    Err(MvccError::LeaseNotFound { lease: r.id })
                } else {
                    let keys: Vec<Bytes> = self
                        .live_at(&[0], &[0], i64::MAX)
                        .into_iter()
                        .filter(|kv| kv.lease == r.id)
                        .map(|kv| kv.key)
                        .collect();
                    for k in keys {
                        self.do_delete(&k, &[], rev, &mut events);
                    }
                    Ok(Response::LeaseRevoke(LeaseRevokeResponse { revision: Revision(0) }))
                }
            }
            Command::LeaseCheckpoint(c) => {
                for cp in &c.checkpoints {
                    if let Some(l) = self.leases.get_mut(&cp.id.0) {
                        l.1 = Some(cp.remaining_ttl);
                    }
                }
                Ok(Response::LeaseCheckpoint(LeaseCheckpointResponse { revision: Revision(0) }))
            }
        };
        if !events.is_empty() {
            self.rev = rev;
        }
        let result = result.map(|mut r| {
            fix_revisions(&mut r, Revision(self.rev));
            r
        });
        (result, events)
    }
}

fn fix_revisions(r: &mut Response, rev: Revision) {
    match r {
        Response::Put(p) => p.revision = rev,
        Response::DeleteRange(d) => d.revision = rev,
        Response::Txn(t) => t.revision = rev,
        Response::Compaction(c) => c.revision = rev,
        Response::LeaseGrant(g) => g.revision = rev,
        Response::LeaseRevoke(l) => l.revision = rev,
        Response::LeaseCheckpoint(l) => l.revision = rev,
    }
}

// ---- generators ----

const KEYS: &[&str] = &["a", "aa", "ab", "b", "ba", "c"];

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        20 => prop::sample::select(KEYS).prop_map(|k| Bytes::from_static(k.as_bytes())),
        1 => Just(Bytes::new()),
    ]
}

fn range_end() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => Just(Bytes::new()),
        1 => Just(Bytes::from_static(b"\0")),
        2 => prop::sample::select(&["a", "b", "bb", "c", "d"][..]).prop_map(|k| Bytes::from_static(k.as_bytes())),
    ]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(&["", "x", "y", "zz"][..]).prop_map(|v| Bytes::from_static(v.as_bytes()))
}

fn lease() -> impl Strategy<Value = LeaseId> {
    prop_oneof![3 => Just(LeaseId(0)), 1 => (1i64..4).prop_map(LeaseId)]
}

fn revision() -> impl Strategy<Value = Revision> {
    prop_oneof![2 => Just(Revision(0)), 3 => (-1i64..30).prop_map(Revision)]
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (key(), value(), lease(), any::<bool>(), prop::bool::weighted(0.15), prop::bool::weighted(0.15))
        .prop_map(|(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
            key,
            // Mostly well-formed: an ignored value or lease usually comes empty.
            value: if ignore_value && value.len() == 1 { Bytes::new() } else { value },
            lease: if ignore_lease && lease.0 != 3 { LeaseId(0) } else { lease },
            prev_kv,
            ignore_value,
            ignore_lease,
        })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        (key(), range_end(), -1i64..4, revision()),
        (0u8..3, 0u8..5, any::<bool>(), prop::bool::weighted(0.2)),
        (revision(), revision(), revision(), revision()),
    )
        .prop_map(|((key, range_end, limit, revision), (o, t, keys_only, count_only), f)| {
            let quiet = |r: Revision| if r.0 % 3 == 0 { r } else { Revision(0) };
            RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][o as usize],
                sort_target: [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][t as usize],
                serializable: false,
                keys_only,
                count_only,
                min_mod_revision: quiet(f.0),
                max_mod_revision: quiet(f.1),
                min_create_revision: quiet(f.2),
                max_create_revision: quiet(f.3),
            }
        })
}

fn compare() -> impl Strategy<Value = Compare> {
    (0u8..4, 0u8..5, 0i64..6, value(), key(), prop::bool::weighted(0.2)).prop_map(
        |(res, target, n, v, key, ranged)| Compare {
            result: [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][res as usize],
            target: match target {
                0 => CompareTarget::Version(n % 3),
                1 => CompareTarget::Create(Revision(n)),
                2 => CompareTarget::Mod(Revision(n)),
                3 => CompareTarget::Value(v),
                _ => CompareTarget::Lease(LeaseId(n % 4)),
            },
            key,
            range_end: if ranged { Bytes::from_static(b"b") } else { Bytes::new() },
        },
    )
}

fn op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        3 => put_req().prop_map(RequestOp::Put),
        2 => delete_req().prop_map(RequestOp::DeleteRange),
        2 => range_req().prop_map(RequestOp::Range),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![6 => leaf, 1 => txn_req(depth - 1).prop_map(RequestOp::Txn)].boxed()
    }
}

fn txn_req(depth: u32) -> BoxedStrategy<TxnRequest> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op(depth), 0..4),
        prop::collection::vec(op(depth), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest { compare, success, failure })
        .boxed()
}

#[derive(Clone, Debug)]
enum Step {
    Apply(Command),
    Read(RangeRequest),
    /// Compacts at this percentage of the current revision (plus one), so
    /// that most compactions are valid whatever the revision is.
    Compact(u8),
    /// Ends the current group-apply batch.
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => put_req().prop_map(|p| Step::Apply(Command::Put(p))),
        3 => delete_req().prop_map(|d| Step::Apply(Command::DeleteRange(d))),
        4 => txn_req(2).prop_map(|t| Step::Apply(Command::Txn(t))),
        1 => (0i64..30).prop_map(|r| Step::Apply(Command::Compaction(CompactionRequest { revision: Revision(r), physical: false }))),
        2 => (0u8..=100).prop_map(Step::Compact),
        2 => (0i64..4, 1i64..100).prop_map(|(id, ttl)| Step::Apply(Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(id), ttl }))),
        1 => (1i64..4).prop_map(|id| Step::Apply(Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(id) }))),
        1 => (1i64..4, 0i64..100).prop_map(|(id, r)| Step::Apply(Command::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint { id: LeaseId(id), remaining_ttl: r }],
        }))),
        4 => range_req().prop_map(Step::Read),
        3 => Just(Step::Commit),
    ]
}

fn check_reads(store: &MvccStore, model: &Model, shard: ShardId) {
    // Every revision still readable gives the same whole keyspace.
    let view = store.read().unwrap();
    for rev in model.compacted.max(1)..=model.rev {
        let req = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision: Revision(rev),
            ..Default::default()
        };
        assert_eq!(
            view.range(shard, &req).unwrap(),
            model.range(&req, model.rev).unwrap(),
            "rev {rev}"
        );
    }
    let leases = view.leases(shard).unwrap();
    let expect: Vec<_> = model.leases.iter().map(|(id, (ttl, rem))| (*id, *ttl, *rem)).collect();
    let got: Vec<_> = leases.iter().map(|l| (l.id.0, l.granted_ttl, l.remaining_ttl)).collect();
    assert_eq!(got, expect);
    for id in model.leases.keys() {
        let keys = view.lease(shard, LeaseId(*id), true).unwrap().keys;
        let expect: Vec<Bytes> = model
            .live_at(b"\0", b"\0", i64::MAX)
            .into_iter()
            .filter(|kv| kv.lease.0 == *id)
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, expect, "keys of lease {id}");
    }
}

fn run(steps: Vec<Step>) {
    let options = StoreOptions { txn_ops_max: OPS_MAX, ..StoreOptions::default() };
    let store = MvccStore::open_in_memory(options.clone()).unwrap();
    // The same commands, one engine transaction each: how applies are
    // batched differs between replicas and must never show.
    let single = MvccStore::open_in_memory(options).unwrap();
    let shard = ShardId(3);
    // Another shard's writes interleave, and must never show through.
    let other = ShardId(2);
    let mut model = Model::new();
    let mut index = 0;
    let mut pending: Vec<Command> = vec![];
    // Every event applies produced, for checking watch replay.
    let mut log: Vec<Event> = vec![];
    let mut flush = |pending: &mut Vec<Command>, model: &mut Model, index: &mut u64| {
        if pending.is_empty() {
            return;
        }
        let (applied, _) = store
            .write(|batch| {
                let mut out = vec![];
                for cmd in pending.iter() {
                    *index += 1;
                    out.push(batch.apply(shard, LogIndex(*index), cmd)?);
                    batch.apply(other, LogIndex(*index), cmd)?;
                }
                Ok(out)
            })
            .unwrap();
        let first = *index + 1 - applied.len() as u64;
        for (i, cmd) in pending.iter().enumerate() {
            let alone = single.apply(shard, LogIndex(first + i as u64), cmd).unwrap();
            assert_eq!(alone, applied[i], "{cmd:?} applied alone");
        }
        for (cmd, a) in pending.drain(..).zip(applied) {
            let (result, events) = model.apply(&cmd);
            assert_eq!(a.result, result, "{cmd:?}");
            assert_eq!(a.events, events, "{cmd:?}");
            log.extend(events);
        }
    };
    for step in steps {
        match step {
            Step::Apply(cmd) => pending.push(cmd),
            Step::Commit => flush(&mut pending, &mut model, &mut index),
            Step::Compact(pct) => {
                flush(&mut pending, &mut model, &mut index);
                let revision = Revision(model.rev * i64::from(pct) / 100 + 1);
                pending.push(Command::Compaction(CompactionRequest { revision, physical: true }));
            }
            Step::Read(req) => {
                flush(&mut pending, &mut model, &mut index);
                let got = store.range(shard, &req).map_err(|e| match e {
                    ReadError::Request(e) => e,
                    e => panic!("{e}"),
                });
                assert_eq!(got, model.range(&req, model.rev), "{req:?}");
            }
        }
    }
    flush(&mut pending, &mut model, &mut index);
    check_reads(&store, &model, shard);
    check_replay(&store, &model, shard, &log);
    check_replay(&single, &model, shard, &log);
    let (batched, alone) = (store.read().unwrap(), single.read().unwrap());
    assert_eq!(batched.hash(shard).unwrap(), alone.hash(shard).unwrap(), "hash");
    assert_eq!(
        batched.hash_kv(shard, Revision(0)).unwrap(),
        alone.hash_kv(shard, Revision(0)).unwrap(),
        "hash_kv"
    );
    let chunks = |s: &MvccStore| s.snapshot(shard).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(chunks(&store), chunks(&single), "snapshots");
}

/// Watch replay from the oldest replayable revision gives the events the
/// applies produced (with their previous versions, which compaction keeps
/// for every revision after the compacted one), whole, ranged and paged.
fn check_replay(store: &MvccStore, model: &Model, shard: ShardId, log: &[Event]) {
    let view = store.read().unwrap();
    let all = Bytes::from_static(b"\0");
    let from = Revision(model.compacted + 1);
    let expect: Vec<Event> = log.iter().filter(|e| e.kv.mod_revision >= from).cloned().collect();
    let (got, resume) = view.events(shard, from, &all, &all, usize::MAX).unwrap();
    assert_eq!(got, expect);
    assert_eq!(resume, Revision(model.rev + 1));

    let (start, end) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
    let (got, _) = view.events(shard, from, &start, &end, usize::MAX).unwrap();
    let ranged: Vec<Event> =
        expect.iter().filter(|e| e.kv.key >= start && e.kv.key < end).cloned().collect();
    assert_eq!(got, ranged);

    let mut paged = vec![];
    let mut at = from;
    loop {
        let (page, next) = view.events(shard, at, &all, &all, 2).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(next > at);
        paged.extend(page);
        at = next;
    }
    assert_eq!(paged, expect, "pages hold whole revisions and cover everything");

    if model.compacted > 1 {
        let e = view.events(shard, Revision(model.compacted - 1), &all, &all, 1).unwrap_err();
        assert!(matches!(e, ReadError::Request(MvccError::Compacted { .. })));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps);
    }
}
