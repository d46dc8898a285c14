//! A dependency-cycle checker for list-append transactions (the idea of
//! Kingsbury and Alvaro's Elle, written for this harness).
//!
//! Each transaction is a list of micro-operations: append a value unique to
//! the history to a key's list, or read a key's whole list. Because values
//! are unique and lists only grow, every read reveals a prefix of the key's
//! **version order**, and every element names the transaction that wrote
//! it. From that ([`check`]):
//!
//! * **incompatible-order**: two reads of a key that are not prefixes of
//!   one another (no single version order explains them);
//! * **duplicate-element**: a list holds an element twice;
//! * **G1a** (aborted read): a read sees an element whose append failed
//!   definitely; **phantom**: a read sees an element nobody appended;
//! * dependency edges between committed transactions: **ww** (T1 appended
//!   the element right before T2's), **wr** (T2 read a list ending with
//!   T1's element), **rw** (T1 read a list that T2's element next extends:
//!   an anti-dependency), and **rt** (T1 completed before T2 was invoked:
//!   real time, for strict serializability);
//! * cycles, searched with growing edge sets so each is named by the
//!   weakest anomaly that explains it: **G0** (ww only: write cycle),
//!   **G1c** (ww and wr: circular information flow), **G-single** (exactly
//!   one rw) or **G2** (several rw), and each of these with `-realtime`
//!   when the cycle needs rt edges.
//!
//! Transactions of unknown outcome count as committed when one of their
//! elements was read; they have no completion time, so they get no
//! outgoing rt edge. Reads of a key after the same transaction's own append
//! see that append (read-your-writes inside a transaction).
//!
//! Limits: at most one append per key per transaction (so intermediate
//! reads, G1b, cannot arise and are not checked); real-time edges are those
//! of a transitive reduction (each transaction gets edges from the
//! "frontier" of transactions completed before it began), which keeps
//! their number near linear and loses no cycle.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;

/// A micro-operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mop {
    /// Append `value` to `key`'s list.
    Append {
        /// The key.
        key: usize,
        /// The value (unique in the history).
        value: u64,
    },
    /// Read `key`'s list (`None` until answered).
    Read {
        /// The key.
        key: usize,
        /// The list read.
        list: Option<Vec<u64>>,
    },
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TxnOutcome {
    /// Committed, results known.
    Ok,
    /// Certainly not committed.
    Fail,
    /// May have committed.
    Unknown,
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Txn {
    /// Its micro-operations, in order.
    pub mops: Vec<Mop>,
    /// How it ended.
    pub outcome: TxnOutcome,
    /// When it was invoked (ns).
    pub invoked: u64,
    /// When it completed (ns); `None` for an unknown outcome.
    pub completed: Option<u64>,
}

/// The kind of a dependency edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dep {
    /// Write-write.
    Ww,
    /// Write-read.
    Wr,
    /// Read-write (anti-dependency).
    Rw,
    /// Real time.
    Rt,
}

/// One anomaly found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElleAnomaly {
    /// `G0`, `G1c`, `G-single`, `G2`, `…-realtime`, `G1a`, `phantom`,
    /// `incompatible-order`, `duplicate-element`.
    pub kind: String,
    /// What, in words.
    pub detail: String,
    /// The transactions involved (indices into the history), in cycle order for cycles.
    pub txns: Vec<usize>,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ElleResult {
    /// The anomalies.
    pub anomalies: Vec<ElleAnomaly>,
    /// Transactions taken as committed.
    pub committed: usize,
    /// Edges of each kind.
    pub edges: BTreeMap<String, usize>,
}

type Graph = HashMap<usize, Vec<(usize, Dep)>>;

/// Checks a history of list-append transactions; see the module docs.
pub fn check(txns: &[Txn]) -> ElleResult {
    let mut out = ElleResult::default();
    let mut writer: HashMap<(usize, u64), usize> = HashMap::new();
    for (i, t) in txns.iter().enumerate() {
        for m in &t.mops {
            if let Mop::Append { key, value } = m {
                writer.insert((*key, *value), i);
            }
        }
    }
    // Reads, as (txn, key, list), of ok transactions.
    let mut reads: Vec<(usize, usize, &Vec<u64>)> = Vec::new();
    for (i, t) in txns.iter().enumerate().filter(|(_, t)| t.outcome == TxnOutcome::Ok) {
        for m in &t.mops {
            if let Mop::Read { key, list: Some(list) } = m {
                reads.push((i, *key, list));
            }
        }
    }
    // Version orders: the longest list read of each key; every other read a prefix of it.
    let mut order: BTreeMap<usize, &Vec<u64>> = BTreeMap::new();
    for &(_, key, list) in &reads {
        if order.get(&key).is_none_or(|o| o.len() < list.len()) {
            order.insert(key, list);
        }
    }
    let mut committed: HashSet<usize> = txns
        .iter()
        .enumerate()
        .filter(|(_, t)| t.outcome == TxnOutcome::Ok)
        .map(|(i, _)| i)
        .collect();
    let mut reported = HashSet::new();
    for &(i, key, list) in &reads {
        let longest = order[&key];
        if !longest.starts_with(list) && reported.insert(("order", key)) {
            out.anomalies.push(ElleAnomaly {
                kind: "incompatible-order".to_owned(),
                detail: format!("key {key}: txn {i} read {list:?}, not a prefix of {longest:?}"),
                txns: vec![i],
            });
        }
        let mut seen = HashSet::new();
        for &v in list {
            if !seen.insert(v) && reported.insert(("dup", key)) {
                out.anomalies.push(ElleAnomaly {
                    kind: "duplicate-element".to_owned(),
                    detail: format!("key {key}: txn {i} read {v} twice in {list:?}"),
                    txns: vec![i],
                });
            }
            match writer.get(&(key, v)) {
                None => {
                    if reported.insert(("phantom", key)) {
                        out.anomalies.push(ElleAnomaly {
                            kind: "phantom".to_owned(),
                            detail: format!(
                                "key {key}: txn {i} read {v}, which no transaction appended"
                            ),
                            txns: vec![i],
                        });
                    }
                }
                Some(&w) => {
                    if txns[w].outcome == TxnOutcome::Fail && reported.insert(("g1a", key)) {
                        out.anomalies.push(ElleAnomaly {
                            kind: "G1a".to_owned(),
                            detail: format!(
                                "key {key}: txn {i} read {v}, appended by txn {w}, which failed"
                            ),
                            txns: vec![w, i],
                        });
                    }
                    committed.insert(w);
                }
            }
        }
    }
    out.committed = committed.len();

    let mut edges: Vec<(usize, usize, Dep)> = Vec::new();
    for (&key, list) in &order {
        for pair in list.windows(2) {
            if let (Some(&a), Some(&b)) = (writer.get(&(key, pair[0])), writer.get(&(key, pair[1])))
            {
                edges.push((a, b, Dep::Ww));
            }
        }
    }
    for &(i, key, list) in &reads {
        if let Some(&w) = list.last().and_then(|v| writer.get(&(key, *v))) {
            edges.push((w, i, Dep::Wr));
        }
        if let Some(&next) = order[&key].get(list.len())
            && let Some(&w) = writer.get(&(key, next))
        {
            edges.push((i, w, Dep::Rw));
        }
    }
    edges.extend(realtime_edges(txns, &committed));
    edges.retain(|&(a, b, _)| a != b && committed.contains(&a) && committed.contains(&b));
    edges.sort_unstable();
    edges.dedup();
    for &(_, _, d) in &edges {
        *out.edges.entry(format!("{d:?}").to_lowercase()).or_default() += 1;
    }

    let levels: [(&[Dep], &str); 4] = [
        (&[Dep::Ww], "G0"),
        (&[Dep::Ww, Dep::Wr], "G1c"),
        (&[Dep::Ww, Dep::Wr, Dep::Rw], "G2"),
        (&[Dep::Ww, Dep::Wr, Dep::Rw, Dep::Rt], "realtime"),
    ];
    let mut cyclic_before: HashSet<usize> = HashSet::new();
    for (deps, name) in levels {
        let mut graph: Graph = HashMap::new();
        for &(a, b, d) in edges.iter().filter(|e| deps.contains(&e.2)) {
            graph.entry(a).or_default().push((b, d));
        }
        let sccs = strongly_connected(&graph);
        let mut cyclic_now = HashSet::new();
        for scc in sccs.iter().filter(|s| s.len() > 1) {
            cyclic_now.extend(scc.iter().copied());
            if scc.iter().all(|t| cyclic_before.contains(t)) {
                continue;
            }
            let cycle = find_cycle(&graph, scc);
            let rw = cycle.iter().filter(|(_, d)| *d == Dep::Rw).count();
            let rt = cycle.iter().any(|(_, d)| *d == Dep::Rt);
            let base = match name {
                "G2" | "realtime" if rw == 1 => "G-single",
                "G2" | "realtime" if rw > 1 => "G2",
                "realtime" if cycle.iter().any(|(_, d)| *d == Dep::Wr) => "G1c",
                "realtime" => "G0",
                other => other,
            };
            let kind = if rt { format!("{base}-realtime") } else { base.to_owned() };
            let path: Vec<String> = cycle.iter().map(|(t, d)| format!("T{t} -{d:?}->")).collect();
            out.anomalies.push(ElleAnomaly {
                kind,
                detail: format!(
                    "a cycle of {} transactions ({} in its component): {} T{}",
                    cycle.len(),
                    scc.len(),
                    path.join(" "),
                    cycle.first().map_or(0, |c| c.0)
                ),
                txns: cycle.iter().map(|c| c.0).collect(),
            });
            // One example per level is enough to read.
            break;
        }
        cyclic_before.extend(cyclic_now);
    }
    out
}

/// Real-time edges of a transitive reduction: each transaction gets an
/// edge from every transaction of the frontier (completed before it was
/// invoked, and not followed by another that also did).
fn realtime_edges(txns: &[Txn], committed: &HashSet<usize>) -> Vec<(usize, usize, Dep)> {
    // Events: (time, 0 = invocation before 1 = completion at the same time:
    // equal times are concurrent, not ordered, txn).
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, t) in txns.iter().enumerate().filter(|(i, _)| committed.contains(i)) {
        events.push((t.invoked, 0, i));
        if let (TxnOutcome::Ok, Some(c)) = (t.outcome, t.completed) {
            events.push((c, 1, i));
        }
    }
    events.sort_unstable();
    let mut frontier: Vec<usize> = Vec::new();
    // For each txn, the frontier as it was at its invocation.
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut edges = Vec::new();
    for (_, kind, i) in events {
        if kind == 0 {
            preds.insert(i, frontier.clone());
            for &p in &frontier {
                edges.push((p, i, Dep::Rt));
            }
        } else {
            // Whatever was in the frontier when i began now precedes i: i replaces it.
            let before: HashSet<usize> =
                preds.get(&i).map(|p| p.iter().copied().collect()).unwrap_or_default();
            frontier.retain(|p| !before.contains(p));
            frontier.push(i);
        }
    }
    edges
}

/// Tarjan's algorithm, iteratively (histories are deep enough to overflow
/// a recursive one).
fn strongly_connected(graph: &Graph) -> Vec<Vec<usize>> {
    let mut nodes: Vec<usize> = graph.keys().copied().collect();
    nodes.sort_unstable();
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut low: HashMap<usize, usize> = HashMap::new();
    let mut on_stack: HashSet<usize> = HashSet::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut sccs = Vec::new();
    let mut next = 0;
    let empty = Vec::new();
    for &root in &nodes {
        if index.contains_key(&root) {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some((v, child)) = work.pop() {
            if child == 0 {
                index.insert(v, next);
                low.insert(v, next);
                next += 1;
                stack.push(v);
                on_stack.insert(v);
            }
            let out = graph.get(&v).unwrap_or(&empty);
            if let Some(&(w, _)) = out.get(child) {
                work.push((v, child + 1));
                if !index.contains_key(&w) {
                    work.push((w, 0));
                } else if on_stack.contains(&w) {
                    let lw = index[&w];
                    let lv = low.get_mut(&v).expect("visited");
                    *lv = (*lv).min(lw);
                }
                continue;
            }
            if low[&v] == index[&v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack.remove(&w);
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                sccs.push(scc);
            }
            if let Some(&(parent, _)) = work.last() {
                let lv = low[&v];
                let lp = low.get_mut(&parent).expect("visited");
                *lp = (*lp).min(lv);
            }
        }
    }
    sccs
}

/// A shortest cycle through the smallest transaction of `scc`, as
/// (transaction, kind of the edge leaving it).
fn find_cycle(graph: &Graph, scc: &[usize]) -> Vec<(usize, Dep)> {
    let members: HashSet<usize> = scc.iter().copied().collect();
    let start = *scc.iter().min().expect("a component has members");
    let mut came: HashMap<usize, (usize, Dep)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    let empty = Vec::new();
    while let Some(v) = queue.pop_front() {
        for &(w, d) in graph.get(&v).unwrap_or(&empty) {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut cycle = vec![(v, d)];
                let mut at = v;
                while at != start {
                    let (p, pd) = came[&at];
                    cycle.push((p, pd));
                    at = p;
                }
                cycle.reverse();
                return cycle;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = came.entry(w) {
                e.insert((v, d));
                queue.push_back(w);
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(mops: Vec<Mop>, invoked: u64, completed: u64) -> Txn {
        Txn { mops, outcome: TxnOutcome::Ok, invoked, completed: Some(completed) }
    }
    fn ap(key: usize, value: u64) -> Mop {
        Mop::Append { key, value }
    }
    fn rd(key: usize, list: &[u64]) -> Mop {
        Mop::Read { key, list: Some(list.to_vec()) }
    }
    fn kinds(txns: &[Txn]) -> Vec<String> {
        check(txns).anomalies.into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_serial_history_is_clean() {
        let h = [
            txn(vec![ap(0, 1), ap(1, 1)], 0, 10),
            txn(vec![rd(0, &[1]), ap(0, 2)], 20, 30),
            txn(vec![rd(0, &[1, 2]), rd(1, &[1])], 40, 50),
        ];
        let r = check(&h);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.committed, 3);
        assert!(r.edges["ww"] >= 1 && r.edges["wr"] >= 1 && r.edges["rt"] >= 2, "{:?}", r.edges);
    }

    #[test]
    fn finds_g0() {
        // T0 before T1 on key 0, T1 before T0 on key 1.
        let h = [
            txn(vec![ap(0, 1), ap(1, 2)], 0, 100),
            txn(vec![ap(0, 3), ap(1, 4)], 0, 100),
            txn(vec![rd(0, &[1, 3]), rd(1, &[4, 2])], 200, 300),
        ];
        assert_eq!(kinds(&h), ["G0"]);
    }

    #[test]
    fn finds_g1c() {
        // T0 reads T1's append and T1 reads T0's append.
        let h =
            [txn(vec![ap(0, 1), rd(1, &[2])], 0, 100), txn(vec![ap(1, 2), rd(0, &[1])], 0, 100)];
        assert_eq!(kinds(&h), ["G1c"]);
    }

    #[test]
    fn finds_write_skew_as_g2() {
        // Both read both keys empty, each appends one: two rw edges.
        let h = [
            txn(vec![rd(0, &[]), rd(1, &[]), ap(0, 1)], 0, 100),
            txn(vec![rd(0, &[]), rd(1, &[]), ap(1, 2)], 0, 100),
            txn(vec![rd(0, &[1]), rd(1, &[2])], 200, 300),
        ];
        assert_eq!(kinds(&h), ["G2"]);
    }

    #[test]
    fn finds_a_stale_read_as_a_realtime_cycle() {
        // T1 reads [] long after T0 appended 1 and completed: serializable, not strict.
        let h = [
            txn(vec![ap(0, 1)], 0, 10),
            txn(vec![rd(0, &[])], 20, 30),
            txn(vec![rd(0, &[1])], 40, 50),
        ];
        assert_eq!(kinds(&h), ["G-single-realtime"]);
    }

    #[test]
    fn finds_aborted_phantom_duplicate_and_incompatible_reads() {
        let failed =
            Txn { mops: vec![ap(0, 9)], outcome: TxnOutcome::Fail, invoked: 0, completed: Some(5) };
        assert_eq!(kinds(&[failed, txn(vec![rd(0, &[9])], 10, 20)]), ["G1a"]);
        assert_eq!(kinds(&[txn(vec![rd(0, &[77])], 10, 20)]), ["phantom"]);
        let h = [txn(vec![ap(0, 1)], 0, 5), txn(vec![rd(0, &[1, 1])], 10, 20)];
        assert_eq!(kinds(&h), ["duplicate-element"]);
        let h = [
            txn(vec![ap(0, 1)], 0, 5),
            txn(vec![ap(0, 2)], 0, 5),
            txn(vec![rd(0, &[1])], 10, 20),
            txn(vec![rd(0, &[2, 1])], 10, 20),
        ];
        assert!(kinds(&h).contains(&"incompatible-order".to_owned()));
    }

    #[test]
    fn an_unknown_append_that_was_read_counts_as_committed() {
        let unknown =
            Txn { mops: vec![ap(0, 1)], outcome: TxnOutcome::Unknown, invoked: 0, completed: None };
        let r = check(&[unknown, txn(vec![rd(0, &[1])], 10, 20)]);
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.committed, 2);
    }

    #[test]
    fn tarjan_handles_long_chains_without_recursion() {
        let mut g: Graph = HashMap::new();
        for i in 0..50_000 {
            g.entry(i).or_default().push((i + 1, Dep::Ww));
        }
        g.entry(50_000).or_default().push((0, Dep::Ww));
        let sccs = strongly_connected(&g);
        assert_eq!(sccs.iter().map(Vec::len).max(), Some(50_001));
    }
}
