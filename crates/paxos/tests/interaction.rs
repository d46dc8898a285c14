//! Interaction scripts: `testdata/*.txt`, a scenario DSL whose golden output
//! is the trace of every Ready and delivery. `REWRITE=1 cargo test -p
//! ringkv-paxos --test interaction` regenerates the outputs (review the
//! diff); `RUN=<file>` runs one file.
//!
//! Directives (node ids are bare numbers; everything else is `key=value`):
//!
//! | directive | effect |
//! | --- | --- |
//! | `add-nodes N [voters=(..)] [learners=(..)] [empty] [check-quorum=B] [lease=D] [inflight=N] [max-msg-bytes=N] [chunk=N] [snapshot-bytes=N] [alpha=N]` | adds N nodes with the next ids |
//! | `campaign ID` | starts phase 1 now |
//! | `propose ID data=S [count=N]` | proposes N commands |
//! | `tick ID [n=N]` / `tick-heartbeat ID` / `tick-election ID` | advances time |
//! | `process-ready ID.. [async]` | handles the Readys of the nodes (persist at once unless `async`) |
//! | `persist ID` | persists the oldest Ready taken with `async` |
//! | `deliver-msgs ID [drop] [skip=K] [count=N]` | steps (or drops) the node's queued messages (N of them after the first K, which stay queued) |
//! | `stabilize [ID..]` | handles Readys and delivers until nothing moves |
//! | `partition ID..` / `heal` | cuts the nodes from all others / restores every link |
//! | `crash ID` / `restart ID` | loses everything unpersisted / recovers from storage |
//! | `read-index ID rid=N` | asks for a linearizable read |
//! | `transfer ID to=N` | leadership transfer |
//! | `change-membership ID [add=(..)] [learner=(..)] [remove=(..)]` | membership change |
//! | `compact ID` | snapshots the state machine at its applied index and compacts |
//! | `report-unreachable ID to=N` | reports a peer unreachable |
//! | `status ID` / `log ID` / `paxos-state` | inspects |

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use common::{
    Node, format_envelope, format_log, format_ready, format_state, fresh_storage, test_config,
};
use datadriven::TestCase;
use ringkv_consensus::{
    ChangeOp, Envelope, MembershipChange, NodeId, ReadMode, Replica, RequestId,
};
use ringkv_paxos::{Message, PaxosOptions};

#[derive(Default)]
struct Harness {
    nodes: BTreeMap<NodeId, Node>,
    inbox: BTreeMap<NodeId, Vec<Envelope<Message>>>,
    partitions: Vec<BTreeSet<NodeId>>,
}

/// Node ids given as bare numbers, ascending.
fn ids(tc: &TestCase) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = tc
        .args
        .iter()
        .filter(|(_, vals)| vals.is_empty())
        .filter_map(|(k, _)| k.parse().ok().map(NodeId))
        .collect();
    v.sort();
    v
}

fn one_id(tc: &TestCase) -> Result<NodeId, String> {
    match ids(tc).as_slice() {
        [id] => Ok(*id),
        other => Err(format!("expected exactly one node id, got {other:?}")),
    }
}

fn list(tc: &TestCase, key: &str) -> Vec<u64> {
    tc.args.get(key).map(|v| v.iter().filter_map(|s| s.parse().ok()).collect()).unwrap_or_default()
}

fn arg<T: std::str::FromStr>(tc: &TestCase, key: &str) -> Option<T> {
    tc.args.get(key).and_then(|v| v.first()).and_then(|s| s.parse().ok())
}

fn flag(tc: &TestCase, key: &str) -> bool {
    tc.args.contains_key(key)
}

impl Harness {
    fn node(&mut self, id: NodeId) -> Result<&mut Node, String> {
        self.nodes.get_mut(&id).ok_or_else(|| format!("no node {}", id.0))
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.partitions.iter().any(|g| g.contains(&a) != g.contains(&b))
    }

    /// Puts messages on the network; reports the ones dropped.
    fn route(&mut self, messages: Vec<Envelope<Message>>, out: &mut String) {
        for m in messages {
            let up = self.nodes.get(&m.to).is_some_and(Node::is_up);
            if self.cut(m.from, m.to) || !up {
                let _ = writeln!(out, "  dropped: {}", format_envelope(&m));
            } else {
                self.inbox.entry(m.to).or_default().push(m);
            }
        }
    }

    fn process_ready(&mut self, id: NodeId, out: &mut String) -> Result<bool, String> {
        let node = self.node(id)?;
        if !node.is_up() {
            return Ok(false);
        }
        let done = node.process_all();
        let any = !done.is_empty();
        for (rd, o) in done {
            out.push_str(&format_ready(id, &rd));
            self.route(o.messages, out);
        }
        Ok(any)
    }

    fn deliver(
        &mut self,
        id: NodeId,
        drop: bool,
        skip: usize,
        count: Option<usize>,
        out: &mut String,
    ) -> Result<bool, String> {
        let mut queued = self.inbox.remove(&id).unwrap_or_default();
        let skip = skip.min(queued.len());
        let mut msgs = queued.split_off(skip);
        if let Some(n) = count
            && n < msgs.len()
        {
            queued.extend(msgs.split_off(n));
        }
        if !queued.is_empty() {
            self.inbox.insert(id, queued);
        }
        if msgs.is_empty() {
            return Ok(false);
        }
        let _ =
            writeln!(out, "> {} {} messages", id.0, if drop { "dropping" } else { "receiving" });
        let node = self.node(id)?;
        for m in msgs {
            let _ = writeln!(out, "  {}", format_envelope(&m));
            if drop || !node.is_up() {
                continue;
            }
            if let Err(e) = node.paxos().step(m) {
                let _ = writeln!(out, "  error: {e}");
            }
        }
        Ok(true)
    }

    fn stabilize(&mut self, only: &[NodeId], out: &mut String) -> Result<(), String> {
        let ids: Vec<NodeId> =
            if only.is_empty() { self.nodes.keys().copied().collect() } else { only.to_vec() };
        /// A scenario that needs more rounds than this is livelocked.
        const ROUNDS_MAX: usize = 1000;
        for _ in 0..ROUNDS_MAX {
            let mut moved = false;
            for &id in &ids {
                moved |= self.process_ready(id, out)?;
            }
            for &id in &ids {
                moved |= self.deliver(id, false, 0, None, out)?;
            }
            if !moved {
                return Ok(());
            }
        }
        Err("stabilize did not converge".to_string())
    }

    fn add_nodes(&mut self, tc: &TestCase) -> Result<String, String> {
        let count = ids(tc).first().map_or(1, |n| n.0);
        let first = self.nodes.keys().last().map_or(1, |n| n.0 + 1);
        let new: Vec<u64> = (first..first + count).collect();
        let voters = if flag(tc, "empty") {
            Vec::new()
        } else if tc.args.contains_key("voters") {
            list(tc, "voters")
        } else {
            new.clone()
        };
        let learners = list(tc, "learners");
        let mut out = String::new();
        for id in new {
            let mut cfg = test_config(id);
            if let Some(b) = arg(tc, "check-quorum") {
                cfg.check_quorum = b;
            } else {
                cfg.check_quorum = false;
            }
            if let Some(drift_ticks) = arg(tc, "lease") {
                cfg.read_mode = ReadMode::Lease { drift_ticks };
            }
            if let Some(n) = arg(tc, "inflight") {
                cfg.max_inflight_messages = n;
            }
            if let Some(n) = arg(tc, "max-msg-bytes") {
                cfg.max_message_bytes = n;
            }
            if let Some(n) = arg(tc, "chunk") {
                cfg.snapshot_chunk_bytes = n;
            }
            let mut options = PaxosOptions::new(cfg);
            options.config_delay_slots = arg(tc, "alpha").unwrap_or(3);
            let mut node = Node::new(options, fresh_storage(&voters, &learners));
            if let Some(n) = arg(tc, "snapshot-bytes") {
                node.snapshot_bytes = n;
            }
            out.push_str(&format_state(&node));
            out.push('\n');
            self.nodes.insert(NodeId(id), node);
        }
        Ok(out)
    }

    fn run(&mut self, tc: &mut TestCase) -> Result<String, String> {
        let mut out = String::new();
        match tc.directive.as_str() {
            "add-nodes" => return self.add_nodes(tc),
            "campaign" => {
                let id = one_id(tc)?;
                self.node(id)?.paxos().campaign();
                out.push_str("ok\n");
            }
            "propose" => {
                let id = one_id(tc)?;
                let data: String = arg(tc, "data").unwrap_or_else(|| "x".to_string());
                let count: usize = arg(tc, "count").unwrap_or(1);
                let node = self.node(id)?;
                for _ in 0..count {
                    match node.paxos().propose(Bytes::from(data.clone())) {
                        Ok(p) => {
                            let _ = writeln!(out, "proposed at {}@{}", p.index, p.epoch);
                        }
                        Err(e) => {
                            let _ = writeln!(out, "error: {e}");
                        }
                    }
                }
            }
            "tick" | "tick-heartbeat" | "tick-election" => {
                let id = one_id(tc)?;
                let node = self.node(id)?;
                let cfg = &node.options.config;
                let n: u32 = match tc.directive.as_str() {
                    "tick-heartbeat" => cfg.heartbeat_ticks,
                    "tick-election" => cfg.election_ticks,
                    _ => arg(tc, "n").unwrap_or(1),
                };
                for _ in 0..n {
                    node.paxos().tick();
                }
                out.push_str("ok\n");
            }
            "process-ready" => {
                let asynchronous = flag(tc, "async");
                for id in ids(tc) {
                    if asynchronous {
                        while let Some((rd, o)) = self.node(id)?.take_ready() {
                            out.push_str(&format_ready(id, &rd));
                            self.route(o.messages, &mut out);
                        }
                    } else {
                        self.process_ready(id, &mut out)?;
                    }
                }
            }
            "persist" => {
                let id = one_id(tc)?;
                let node = self.node(id)?;
                match node.persist_one() {
                    Some(after) => {
                        let _ = writeln!(out, "> {} persisted", id.0);
                        for m in &after {
                            let _ = writeln!(out, "  sending {}", format_envelope(m));
                        }
                        self.route(after, &mut out);
                    }
                    None => out.push_str("nothing to persist\n"),
                }
            }
            "deliver-msgs" => {
                let id = one_id(tc)?;
                let skip = arg(tc, "skip").unwrap_or(0);
                if !self.deliver(id, flag(tc, "drop"), skip, arg(tc, "count"), &mut out)? {
                    out.push_str("no messages\n");
                }
            }
            "stabilize" => {
                let only = ids(tc);
                self.stabilize(&only, &mut out)?;
                if out.is_empty() {
                    out.push_str("nothing to do\n");
                }
            }
            "partition" => {
                self.partitions.push(ids(tc).into_iter().collect());
                out.push_str("ok\n");
            }
            "heal" => {
                self.partitions.clear();
                out.push_str("ok\n");
            }
            "crash" => {
                let id = one_id(tc)?;
                self.node(id)?.crash();
                self.inbox.remove(&id);
                out.push_str("ok\n");
            }
            "restart" => {
                let id = one_id(tc)?;
                let node = self.node(id)?;
                node.restart();
                out.push_str(&format_state(node));
                out.push('\n');
            }
            "read-index" => {
                let id = one_id(tc)?;
                let rid: u64 = arg(tc, "rid").ok_or("missing rid=")?;
                match self.node(id)?.paxos().read_index(RequestId(rid)) {
                    Ok(()) => out.push_str("ok\n"),
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            "transfer" => {
                let id = one_id(tc)?;
                let to: u64 = arg(tc, "to").ok_or("missing to=")?;
                match self.node(id)?.paxos().transfer_leadership(NodeId(to)) {
                    Ok(()) => out.push_str("ok\n"),
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            "change-membership" => {
                let id = one_id(tc)?;
                let mut ops = Vec::new();
                ops.extend(list(tc, "add").into_iter().map(|n| ChangeOp::AddVoter(NodeId(n))));
                ops.extend(
                    list(tc, "learner").into_iter().map(|n| ChangeOp::AddLearner(NodeId(n))),
                );
                ops.extend(list(tc, "remove").into_iter().map(|n| ChangeOp::Remove(NodeId(n))));
                match self.node(id)?.paxos().change_membership(MembershipChange { ops }) {
                    Ok(p) => {
                        let _ = writeln!(out, "proposed at {}@{}", p.index, p.epoch);
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            "compact" => {
                let id = one_id(tc)?;
                match self.node(id)?.compact() {
                    Ok(index) => {
                        let _ = writeln!(out, "compacted to {index}");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
            "report-unreachable" => {
                let id = one_id(tc)?;
                let to: u64 = arg(tc, "to").ok_or("missing to=")?;
                self.node(id)?.paxos().report_unreachable(NodeId(to));
                out.push_str("ok\n");
            }
            "status" => {
                let id = one_id(tc)?;
                let node = self.node(id)?;
                out.push_str(&format_state(node));
                out.push('\n');
                if let Some(paxos) = &node.paxos {
                    for p in paxos.status().progress {
                        let _ = writeln!(
                            out,
                            "  {}: {:?} match={} next={}{}",
                            p.id.0,
                            p.state,
                            p.matched,
                            p.next,
                            if p.recently_active { "" } else { " inactive" }
                        );
                    }
                }
            }
            "log" => {
                let id = one_id(tc)?;
                out.push_str(&format_log(self.node(id)?));
            }
            "paxos-state" => {
                for node in self.nodes.values() {
                    out.push_str(&format_state(node));
                    out.push('\n');
                }
            }
            other => return Err(format!("unknown directive {other}")),
        }
        Ok(out)
    }
}

#[test]
fn interaction_scripts() {
    datadriven::walk("testdata", |f| {
        let mut h = Harness::default();
        f.run(|tc| match h.run(tc) {
            Ok(out) => out,
            Err(e) => format!("harness error: {e}\n"),
        });
    });
}
