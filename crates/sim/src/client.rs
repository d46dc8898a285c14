//! Client processes: each issues one key-value operation at a time against
//! the cluster, as a real client would, and records what it saw in the
//! run's [`History`].
//!
//! A client sends its request to the node it believes leads (at first, or
//! when it knows of none, a random node). A `NotLeader` answer redirects it
//! to the named leader; no answer within the attempt timeout sends the
//! same request (same sequence number, so the state machine applies it at
//! most once) to another node. When the operation's deadline passes, the
//! client gives up: the outcome is *failed* if every attempt was refused
//! (nothing can have happened), and *unknown* otherwise: the write may
//! still take effect later, as with any real client that timed out.
//!
//! In a sharded run ([`Client::route_with`]) the client also routes: each
//! operation goes to the shard its keys hash to ([`Keyspace`]), to the
//! replicas of that shard as the client's routing table names them (the
//! world refreshes the table as placements change, as a real client
//! refreshes its from the metadata group), and it remembers a leader per
//! shard. A multi-key read keeps only the keys of one shard (a read that
//! spans shards is scatter-gather, not one linearizable operation).
//!
//! Writes count as done only when the replica the client talks to has
//! applied the entry carrying the request, so an acknowledgement means
//! committed and durable on a quorum.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_consensus::{DetRng, LogIndex, NodeId};
use ringkv_lincheck::{
    Call, Compare, Found, History, HistoryError, KeyValue, Outcome, ProcessId, Ret, Revision,
    Timestamp,
};
use ringkv_ring::Keyspace;

use crate::kv::{ClientId, Expect, KvOp, WriteResult};
use crate::protocol::{Request, Response};
use crate::time::Time;

/// How a seed's clients behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientParams {
    /// Keys `k0`, `k1`, … the workload touches.
    pub keys: u32,
    /// Relative weights of put, delete, compare-and-set, get and range.
    pub weights: [u32; 5],
    /// Pause between two operations of a client: `[min, max)` µs.
    pub think_us: (u64, u64),
    /// Wait this long for an answer before trying another node.
    pub attempt_timeout_us: u64,
    /// Give up on an operation after this long.
    pub op_timeout_us: u64,
    /// Pause before retrying after a refusal.
    pub retry_backoff_us: u64,
}

/// An operation in flight.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    request: Request,
    /// A read recorded as a range (several keys, or one key read as a range).
    range: bool,
    invoked_at: Time,
    deadline: Time,
    attempt_deadline: Time,
    target: NodeId,
    /// Where the next attempt goes, when a refusal named it.
    next_target: Option<NodeId>,
    /// Whether the current attempt was answered with a refusal.
    answered: bool,
    /// Whether some attempt may have been acted on (it timed out unanswered).
    uncertain: bool,
    /// The shard its keys live in (always 0 without routing).
    shard: u64,
}

/// A sharded client's routing: which shard a key lives in, which nodes
/// hold each shard's replicas, and the last leader seen per shard.
#[derive(Debug)]
struct Routing {
    keyspace: Keyspace,
    replicas: BTreeMap<u64, Vec<NodeId>>,
    leaders: BTreeMap<u64, NodeId>,
}

/// What the world must do after a client handled an event.
#[derive(Debug, Default)]
pub struct ClientStep {
    /// Send this request to this node.
    pub send: Option<(NodeId, Request)>,
    /// Wake the client at this time (an attempt deadline or the next operation).
    pub wake_at: Option<Time>,
    /// A write invoked at the given time completed with its entry's index.
    pub write_done: Option<(Time, LogIndex)>,
    /// Describes what happened, for the trace.
    pub note: Option<String>,
}

/// One client process.
#[derive(Debug)]
pub struct Client {
    id: ClientId,
    rng: DetRng,
    params: ClientParams,
    leader: Option<NodeId>,
    seq: u64,
    op: Option<InFlight>,
    /// The last value and mod revision this client saw per key (for CAS).
    seen: BTreeMap<Bytes, Option<(Bytes, u64)>>,
    /// Stop issuing new operations.
    draining: bool,
    /// Counters.
    ops_started: u64,
    /// Set in sharded runs.
    routing: Option<Routing>,
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("k{i}"))
}

impl Client {
    /// A client with its own random stream.
    pub fn new(id: ClientId, seed: u64, params: ClientParams) -> Client {
        Client {
            id,
            rng: DetRng::new(seed),
            params,
            leader: None,
            seq: 0,
            op: None,
            seen: BTreeMap::new(),
            draining: false,
            ops_started: 0,
            routing: None,
        }
    }

    /// Makes this client route each operation to its keys' shard.
    pub fn route_with(mut self, keyspace: Keyspace) -> Client {
        self.routing =
            Some(Routing { keyspace, replicas: BTreeMap::new(), leaders: BTreeMap::new() });
        self
    }

    /// Updates the routing table: `shard`'s replicas are on `nodes`.
    pub fn set_replicas(&mut self, shard: u64, nodes: Vec<NodeId>) {
        if let Some(r) = &mut self.routing {
            r.replicas.insert(shard, nodes);
        }
    }

    /// The shard `key` lives in (0 without routing).
    fn shard_of(&self, key: &[u8]) -> u64 {
        self.routing.as_ref().map_or(0, |r| r.keyspace.shard_of(key).0)
    }

    /// The nodes the current operation may go to: its shard's replicas
    /// among `nodes` (all of `nodes` without routing, or when the table
    /// names none of them).
    fn pool(&self, nodes: &[NodeId]) -> Vec<NodeId> {
        let (Some(r), Some(op)) = (&self.routing, &self.op) else { return nodes.to_vec() };
        let pool: Vec<NodeId> = r
            .replicas
            .get(&op.shard)
            .map(|rs| rs.iter().copied().filter(|n| nodes.contains(n)).collect())
            .unwrap_or_default();
        if pool.is_empty() { nodes.to_vec() } else { pool }
    }

    /// The leader this client believes leads `shard`.
    fn leader_of(&self, shard: u64) -> Option<NodeId> {
        match &self.routing {
            None => self.leader,
            Some(r) => r.leaders.get(&shard).copied(),
        }
    }

    fn set_leader(&mut self, shard: u64, leader: Option<NodeId>) {
        match &mut self.routing {
            None => self.leader = leader,
            Some(r) => {
                match leader {
                    Some(l) => r.leaders.insert(shard, l),
                    None => r.leaders.remove(&shard),
                };
            }
        }
    }

    /// Its identity.
    pub fn id(&self) -> ClientId {
        self.id
    }

    fn process(&self) -> ProcessId {
        ProcessId(self.id.0)
    }

    /// Whether an operation is in flight.
    pub fn busy(&self) -> bool {
        self.op.is_some()
    }

    /// Operations started so far.
    pub fn ops_started(&self) -> u64 {
        self.ops_started
    }

    /// Stops starting new operations (the one in flight finishes).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The client's clock fired: start an operation, retry, or give up.
    ///
    /// # Errors
    /// The history refused an event (a simulator bug).
    pub fn wake(
        &mut self,
        now: Time,
        nodes: &[NodeId],
        history: &mut History,
    ) -> Result<ClientStep, HistoryError> {
        match &self.op {
            None if self.draining => Ok(ClientStep::default()),
            None => self.start(now, nodes, history),
            Some(op) if now >= op.deadline => {
                let outcome =
                    if op.uncertain || !op.answered { Outcome::Unknown } else { Outcome::Fail };
                let note = format!("gives up on op {} ({outcome:?})", op.seq);
                history.complete(self.process(), outcome, Timestamp(now.0))?;
                self.op = None;
                Ok(ClientStep { note: Some(note), ..self.next_op(now) })
            }
            Some(op) if now >= op.attempt_deadline => {
                let (unanswered, current, next) = (!op.answered, op.target, op.next_target);
                let shard = op.shard;
                if unanswered {
                    // The node we guessed did not answer: forget it as leader.
                    self.set_leader(shard, None);
                }
                let pool = self.pool(nodes);
                let target = next.unwrap_or_else(|| self.other_node(&pool, Some(current)));
                Ok(self.retry(now, target, unanswered))
            }
            Some(op) => {
                Ok(ClientStep { wake_at: Some(op.attempt_deadline), ..ClientStep::default() })
            }
        }
    }

    fn next_op(&mut self, now: Time) -> ClientStep {
        let (lo, hi) = self.params.think_us;
        ClientStep {
            wake_at: Some(now.plus(self.rng.range(lo, hi.max(lo + 1)))),
            ..ClientStep::default()
        }
    }

    fn other_node(&mut self, nodes: &[NodeId], not: Option<NodeId>) -> NodeId {
        let candidates: Vec<NodeId> = nodes.iter().copied().filter(|n| Some(*n) != not).collect();
        let pool = if candidates.is_empty() { nodes } else { &candidates };
        pool[self.rng.range(0, pool.len() as u64) as usize]
    }

    fn retry(&mut self, now: Time, target: NodeId, previous_unanswered: bool) -> ClientStep {
        let timeout = self.params.attempt_timeout_us;
        let op = self.op.as_mut().expect("retry only with an operation in flight");
        op.uncertain |= previous_unanswered;
        op.answered = false;
        op.target = target;
        op.next_target = None;
        op.attempt_deadline = now.plus(timeout).min(op.deadline);
        ClientStep {
            send: Some((target, op.request.clone())),
            wake_at: Some(op.attempt_deadline),
            note: Some(format!("retries op {} at {target}", op.seq)),
            ..ClientStep::default()
        }
    }

    fn start(
        &mut self,
        now: Time,
        nodes: &[NodeId],
        history: &mut History,
    ) -> Result<ClientStep, HistoryError> {
        self.seq += 1;
        self.ops_started += 1;
        let (request, call) = self.draw_op();
        let shard = match &request {
            Request::Write { op, .. } => self.shard_of(op.key()),
            Request::Read { keys, .. } => keys.first().map_or(0, |k| self.shard_of(k)),
        };
        let pool = match &self.routing {
            None => nodes.to_vec(),
            Some(r) => {
                let pool: Vec<NodeId> = r
                    .replicas
                    .get(&shard)
                    .map(|rs| rs.iter().copied().filter(|n| nodes.contains(n)).collect())
                    .unwrap_or_default();
                if pool.is_empty() { nodes.to_vec() } else { pool }
            }
        };
        let target = match self.leader_of(shard) {
            Some(l) if pool.contains(&l) => l,
            _ => self.other_node(&pool, None),
        };
        let deadline = now.plus(self.params.op_timeout_us);
        let attempt_deadline = now.plus(self.params.attempt_timeout_us).min(deadline);
        let note = format!("invokes op {}: {request:?} at {target}", self.seq);
        let range = matches!(call, Call::Range { .. });
        history.invoke(self.process(), call, Timestamp(now.0))?;
        self.op = Some(InFlight {
            seq: self.seq,
            request: request.clone(),
            range,
            invoked_at: now,
            deadline,
            attempt_deadline,
            target,
            next_target: None,
            answered: false,
            uncertain: false,
            shard,
        });
        Ok(ClientStep {
            send: Some((target, request)),
            wake_at: Some(attempt_deadline),
            note: Some(note),
            ..ClientStep::default()
        })
    }

    fn draw_op(&mut self) -> (Request, Call) {
        let (client, seq) = (self.id, self.seq);
        let keys = u64::from(self.params.keys.max(1));
        let k = key(self.rng.range(0, keys));
        let value = Bytes::from(format!("{}.{}", client.0, seq));
        let total: u64 = self.params.weights.iter().map(|w| u64::from(*w)).sum();
        let mut roll = self.rng.range(0, total.max(1));
        let mut kind = 0;
        for (i, w) in self.params.weights.iter().enumerate() {
            if roll < u64::from(*w) {
                kind = i;
                break;
            }
            roll -= u64::from(*w);
        }
        match kind {
            0 => (
                Request::Write {
                    client,
                    seq,
                    op: KvOp::Put { key: k.clone(), value: value.clone() },
                },
                Call::Put { key: k, value },
            ),
            1 => (
                Request::Write { client, seq, op: KvOp::Delete { key: k.clone() } },
                Call::Delete { key: k },
            ),
            2 => {
                let seen = self.seen.get(&k).cloned().flatten();
                let by_value = self.rng.chance(1, 2);
                let (expect, compare) = match (by_value, seen) {
                    (true, Some((v, _))) => {
                        (Expect::Value(Some(v.clone())), Compare::Value(Some(v)))
                    }
                    (true, None) => (Expect::Value(None), Compare::Value(None)),
                    (false, Some((_, r))) => {
                        (Expect::ModRevision(r), Compare::ModRevision(Revision(r)))
                    }
                    (false, None) => (Expect::ModRevision(0), Compare::ModRevision(Revision(0))),
                };
                (
                    Request::Write {
                        client,
                        seq,
                        op: KvOp::Cas { key: k.clone(), expect, value: value.clone() },
                    },
                    Call::CompareAndSet { key: k, compare, value },
                )
            }
            3 => (Request::Read { client, seq, keys: vec![k.clone()] }, Call::Get { key: k }),
            _ => {
                let mut ks: Vec<Bytes> =
                    (0..keys).filter(|_| self.rng.chance(1, 2)).map(key).collect();
                if ks.is_empty() {
                    ks.push(k);
                }
                // One shard's keys only: a range over several shards is
                // scatter-gather, not one linearizable read.
                let first = self.shard_of(&ks[0]);
                ks.retain(|k| self.shard_of(k) == first);
                (Request::Read { client, seq, keys: ks.clone() }, Call::Range { keys: ks })
            }
        }
    }

    /// A response arrived from `from`.
    ///
    /// # Errors
    /// The history refused an event (a simulator bug).
    pub fn on_response(
        &mut self,
        now: Time,
        from: NodeId,
        response: Response,
        nodes: &[NodeId],
        history: &mut History,
    ) -> Result<ClientStep, HistoryError> {
        let Some(op) = &self.op else { return Ok(ClientStep::default()) };
        if response.seq() != op.seq {
            // An answer to an operation already finished.
            return Ok(ClientStep::default());
        }
        let (seq, invoked_at, target, range) = (op.seq, op.invoked_at, op.target, op.range);
        let shard = op.shard;
        let request = op.request.clone();
        match response {
            Response::Written { result, .. } => {
                let Request::Write { op: kv_op, .. } = request else {
                    return Ok(ClientStep::default());
                };
                let (ret, index) = self.written(kv_op, result);
                history.complete(self.process(), Outcome::Ok(ret), Timestamp(now.0))?;
                let note = format!("op {seq} done at {from}: {result:?}");
                self.set_leader(shard, Some(from));
                self.op = None;
                let mut step = self.next_op(now);
                step.write_done = Some((invoked_at, index));
                step.note = Some(note);
                Ok(step)
            }
            Response::Read { values, .. } => {
                let Request::Read { keys, .. } = request else {
                    return Ok(ClientStep::default());
                };
                let ret = self.read(&keys, values, range);
                let note = format!("op {seq} done at {from}: {ret:?}");
                history.complete(self.process(), Outcome::Ok(ret), Timestamp(now.0))?;
                self.set_leader(shard, Some(from));
                self.op = None;
                Ok(ClientStep { note: Some(note), ..self.next_op(now) })
            }
            Response::NotLeader { leader, .. } => {
                if target != from {
                    return Ok(ClientStep::default());
                }
                self.set_leader(shard, leader.filter(|l| nodes.contains(l)));
                self.refused(now, from, nodes)
            }
            Response::Busy { .. } => {
                if target != from {
                    return Ok(ClientStep::default());
                }
                self.refused(now, from, nodes)
            }
        }
    }

    /// The current attempt was refused: retry after a pause, at the leader
    /// named or another node.
    fn refused(
        &mut self,
        now: Time,
        from: NodeId,
        nodes: &[NodeId],
    ) -> Result<ClientStep, HistoryError> {
        let shard = self.op.as_ref().map_or(0, |op| op.shard);
        let pool = self.pool(nodes);
        let target = match self.leader_of(shard) {
            Some(l) if l != from => l,
            _ => self.other_node(&pool, Some(from)),
        };
        let backoff = self.params.retry_backoff_us;
        let op = self.op.as_mut().expect("checked by the caller");
        op.answered = true;
        // The retry goes out when the client wakes after its backoff.
        op.attempt_deadline = now.plus(backoff).min(op.deadline);
        op.next_target = Some(target);
        Ok(ClientStep { wake_at: Some(op.attempt_deadline), ..ClientStep::default() })
    }

    fn written(&mut self, op: KvOp, result: WriteResult) -> (Ret, LogIndex) {
        match (op, result) {
            (KvOp::Put { key, value }, WriteResult::Put { revision }) => {
                self.seen.insert(key, Some((value, revision)));
                (Ret::Put { revision: Some(Revision(revision)) }, LogIndex(revision))
            }
            (KvOp::Delete { key }, WriteResult::Delete { deleted, revision }) => {
                self.seen.insert(key, None);
                (
                    Ret::Delete { deleted: Some(deleted), revision: Some(Revision(revision)) },
                    LogIndex(revision),
                )
            }
            (KvOp::Cas { key, value, .. }, WriteResult::Cas { succeeded, revision }) => {
                if succeeded {
                    self.seen.insert(key, Some((value, revision)));
                }
                (
                    Ret::CompareAndSet { succeeded, revision: Some(Revision(revision)) },
                    LogIndex(revision),
                )
            }
            // A result of another kind than the write: recorded as is, so
            // the history refuses it and the run reports it.
            (_, WriteResult::Put { revision }) => {
                (Ret::Put { revision: Some(Revision(revision)) }, LogIndex(revision))
            }
            (_, WriteResult::Delete { deleted, revision }) => (
                Ret::Delete { deleted: Some(deleted), revision: Some(Revision(revision)) },
                LogIndex(revision),
            ),
            (_, WriteResult::Cas { succeeded, revision }) => (
                Ret::CompareAndSet { succeeded, revision: Some(Revision(revision)) },
                LogIndex(revision),
            ),
        }
    }

    fn read(&mut self, keys: &[Bytes], values: Vec<Option<(Bytes, u64)>>, range: bool) -> Ret {
        for (k, v) in keys.iter().zip(&values) {
            self.seen.insert(k.clone(), v.clone());
        }
        if !range {
            let found = values
                .into_iter()
                .next()
                .flatten()
                .map(|(value, r)| Found { value, mod_revision: Some(Revision(r)) });
            return Ret::Get(found);
        }
        Ret::Range(
            keys.iter()
                .zip(values)
                .filter_map(|(k, v)| {
                    v.map(|(value, r)| KeyValue {
                        key: k.clone(),
                        value,
                        mod_revision: Some(Revision(r)),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ClientParams {
        ClientParams {
            keys: 2,
            weights: [1, 0, 0, 0, 0],
            think_us: (10, 20),
            attempt_timeout_us: 100,
            op_timeout_us: 350,
            retry_backoff_us: 5,
        }
    }

    const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    #[test]
    fn acknowledged_write_is_recorded_ok() {
        let mut h = History::new();
        let mut c = Client::new(ClientId(1), 7, params());
        let step = c.wake(Time(0), &NODES, &mut h).unwrap();
        let (to, req) = step.send.unwrap();
        let reply = Response::Written { seq: req.seq(), result: WriteResult::Put { revision: 4 } };
        let done = c.on_response(Time(50), to, reply, &NODES, &mut h).unwrap();
        assert_eq!(done.write_done, Some((Time(0), LogIndex(4))));
        assert!(!c.busy());
        assert!(matches!(h.ops()[0].outcome, Outcome::Ok(Ret::Put { .. })));
    }

    #[test]
    fn timeouts_retry_elsewhere_then_give_up_unknown() {
        let mut h = History::new();
        let mut c = Client::new(ClientId(1), 7, params());
        let first = c.wake(Time(0), &NODES, &mut h).unwrap();
        let (to, _) = first.send.unwrap();
        let second = c.wake(first.wake_at.unwrap(), &NODES, &mut h).unwrap();
        let (to2, _) = second.send.unwrap();
        assert_ne!(to, to2);
        let mut at = second.wake_at.unwrap();
        while c.busy() {
            at = c.wake(at, &NODES, &mut h).unwrap().wake_at.unwrap_or(at);
        }
        assert_eq!(h.ops()[0].outcome, Outcome::Unknown);
    }

    #[test]
    fn refused_everywhere_is_a_failure_and_redirects_follow_the_hint() {
        let mut h = History::new();
        let mut c = Client::new(ClientId(1), 7, params());
        let first = c.wake(Time(0), &NODES, &mut h).unwrap();
        let (to, req) = first.send.unwrap();
        let hint = NODES.into_iter().find(|n| *n != to).unwrap();
        let r = Response::NotLeader { seq: req.seq(), leader: Some(hint) };
        let step = c.on_response(Time(10), to, r, &NODES, &mut h).unwrap();
        let retry = c.wake(step.wake_at.unwrap(), &NODES, &mut h).unwrap();
        assert_eq!(retry.send.as_ref().map(|s| s.0), Some(hint));
        let mut at = retry.wake_at.unwrap();
        let mut target = hint;
        while c.busy() {
            let r = Response::Busy { seq: req.seq() };
            let s = c.on_response(at, target, r, &NODES, &mut h).unwrap();
            let s = c.wake(s.wake_at.unwrap(), &NODES, &mut h).unwrap();
            if let Some((t, _)) = s.send {
                target = t;
            }
            at = s.wake_at.unwrap_or(at);
        }
        assert_eq!(h.ops()[0].outcome, Outcome::Fail);
    }
}
