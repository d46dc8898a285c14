//! Which watchers a key concerns: the lookup every published event makes.
//!
//! Single-key watchers (the common case: etcd's `Get`-then-`Watch`, locks,
//! leader keys) sit in a hash map, so an event finds them in O(1).
//! Range and prefix watchers sit in an interval tree keyed by
//! `(start, end)`, each node carrying the largest end of its subtree, so a
//! key finds the `k` ranges that contain it in O(log n + k) expected work
//! rather than a scan of every range. Watchers on the same range share one
//! node. The tree is a treap whose priorities come from a counter hashed
//! by splitmix64: deterministic (no global randomness), and independent of
//! the keys, which is all a treap needs for its expected depth.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;

/// Where a watched range ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RangeEnd {
    /// Only the start key (etcd: empty `range_end`).
    Single,
    /// Keys below this one (exclusive), which is greater than the start.
    Before(Bytes),
    /// Every key from the start on (etcd: `range_end == "\0"`).
    Unbounded,
}

/// The keys one watcher covers, in etcd's `(key, range_end)` terms.
///
/// Invariant: a `Before(end)` range has `start < end` (etcd refuses empty
/// watcher ranges before they get here).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WatchRange {
    pub(crate) start: Bytes,
    pub(crate) end: RangeEnd,
}

impl WatchRange {
    /// The range of a create request whose key and range end etcd's rules
    /// have already normalized (empty key → `"\0"`); `None` if it is empty
    /// (`key >= range_end`).
    pub(crate) fn new(key: Bytes, range_end: &[u8]) -> Option<WatchRange> {
        let end = match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end if key.as_ref() < end => RangeEnd::Before(Bytes::copy_from_slice(end)),
            _ => return None,
        };
        Some(WatchRange { start: key, end })
    }

    /// Whether `key` lies in the range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_ref(),
            RangeEnd::Before(end) => key >= self.start.as_ref() && key < end.as_ref(),
            RangeEnd::Unbounded => key >= self.start.as_ref(),
        }
    }

    /// The range end in etcd's convention, as the store's history reads
    /// take it.
    pub(crate) fn range_end_bytes(&self) -> Bytes {
        match &self.end {
            RangeEnd::Single => Bytes::new(),
            RangeEnd::Before(end) => end.clone(),
            RangeEnd::Unbounded => Bytes::from_static(&[0]),
        }
    }
}

/// Watchers by the keys they cover.
pub(crate) struct WatcherIndex<V> {
    /// Single-key watchers by key.
    keys: HashMap<Bytes, Vec<(u64, V)>>,
    /// Range watchers.
    ranges: IntervalTree<V>,
    /// Watchers held. Invariant: the sum of both structures' watchers.
    len: usize,
}

impl<V> Default for WatcherIndex<V> {
    fn default() -> WatcherIndex<V> {
        WatcherIndex { keys: HashMap::new(), ranges: IntervalTree::default(), len: 0 }
    }
}

impl<V> std::fmt::Debug for WatcherIndex<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherIndex")
            .field("len", &self.len)
            .field("keys", &self.keys.len())
            .field("ranges", &self.ranges.distinct)
            .finish()
    }
}

impl<V> WatcherIndex<V> {
    /// Watchers held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds watcher `id` (unique in the index) on `range`.
    pub(crate) fn insert(&mut self, range: &WatchRange, id: u64, value: V) {
        match &range.end {
            RangeEnd::Single => self.keys.entry(range.start.clone()).or_default().push((id, value)),
            RangeEnd::Before(end) => {
                self.ranges.insert(range.start.clone(), Bound::Key(end.clone()), id, value);
            }
            RangeEnd::Unbounded => {
                self.ranges.insert(range.start.clone(), Bound::Unbounded, id, value);
            }
        }
        self.len += 1;
    }

    /// Removes watcher `id` from `range`; `None` if it is not there.
    pub(crate) fn remove(&mut self, range: &WatchRange, id: u64) -> Option<V> {
        let removed = match &range.end {
            RangeEnd::Single => {
                let list = self.keys.get_mut(range.start.as_ref())?;
                let at = list.iter().position(|(i, _)| *i == id)?;
                let (_, v) = list.swap_remove(at);
                if list.is_empty() {
                    self.keys.remove(range.start.as_ref());
                }
                Some(v)
            }
            RangeEnd::Before(end) => self.ranges.remove(&range.start, &Bound::Key(end.clone()), id),
            RangeEnd::Unbounded => self.ranges.remove(&range.start, &Bound::Unbounded, id),
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` for every watcher whose range contains `key`; returns how
    /// many range-tree nodes the lookup visited (its cost).
    pub(crate) fn for_each_match<'a>(&'a self, key: &[u8], mut f: impl FnMut(u64, &'a V)) -> usize {
        if let Some(list) = self.keys.get(key) {
            for (id, v) in list {
                f(*id, v);
            }
        }
        self.ranges.for_each_containing(key, &mut f)
    }

    /// Removes and returns every watcher.
    pub(crate) fn drain(&mut self) -> Vec<(u64, V)> {
        let mut out: Vec<(u64, V)> = self.keys.drain().flat_map(|(_, list)| list).collect();
        out.extend(self.ranges.drain());
        self.len = 0;
        out
    }
}

/// An exclusive range end, ordered with `Unbounded` above every key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bound {
    Key(Bytes),
    Unbounded,
}

impl Bound {
    /// Whether `key` lies below this end.
    fn above(&self, key: &[u8]) -> bool {
        match self {
            Bound::Key(end) => key < end.as_ref(),
            Bound::Unbounded => true,
        }
    }
}

/// One distinct range and the watchers on it.
struct Node<V> {
    start: Bytes,
    end: Bound,
    /// Largest `end` in this node's subtree. Invariant: kept by `pull`
    /// after every change below the node.
    max_end: Bound,
    /// Heap order: a parent's priority is at least its children's.
    priority: u64,
    left: Option<usize>,
    right: Option<usize>,
    /// Never empty while the node is in the tree.
    watchers: Vec<(u64, V)>,
}

/// A treap of distinct `(start, end)` ranges with subtree max-end
/// augmentation, in an arena.
struct IntervalTree<V> {
    /// Slots; `None` slots are listed in `free`.
    nodes: Vec<Option<Node<V>>>,
    free: Vec<usize>,
    root: Option<usize>,
    /// Feeds the priority hash; bumped per node created.
    nonce: u64,
    /// Nodes in the tree (distinct ranges).
    distinct: usize,
}

impl<V> Default for IntervalTree<V> {
    fn default() -> IntervalTree<V> {
        IntervalTree { nodes: Vec::new(), free: Vec::new(), root: None, nonce: 0, distinct: 0 }
    }
}

/// splitmix64: a fixed, well-mixing hash of a counter.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<V> IntervalTree<V> {
    fn node(&self, i: usize) -> &Node<V> {
        self.nodes[i].as_ref().expect("links point at occupied slots")
    }

    fn node_mut(&mut self, i: usize) -> &mut Node<V> {
        self.nodes[i].as_mut().expect("links point at occupied slots")
    }

    fn cmp_key(&self, i: usize, start: &[u8], end: &Bound) -> Ordering {
        let n = self.node(i);
        n.start.as_ref().cmp(start).then_with(|| n.end.cmp(end))
    }

    /// Recomputes `max_end` of node `i` from its children.
    fn pull(&mut self, i: usize) {
        let (left, right) = (self.node(i).left, self.node(i).right);
        let mut max = self.node(i).end.clone();
        for child in [left, right].into_iter().flatten() {
            let m = &self.node(child).max_end;
            if *m > max {
                max = m.clone();
            }
        }
        self.node_mut(i).max_end = max;
    }

    /// Splits `t` into the nodes ordered before `(start, end)` (and equal
    /// to it if `inclusive`) and the rest.
    fn split(
        &mut self,
        t: Option<usize>,
        start: &[u8],
        end: &Bound,
        inclusive: bool,
    ) -> (Option<usize>, Option<usize>) {
        let Some(i) = t else { return (None, None) };
        let order = self.cmp_key(i, start, end);
        if order == Ordering::Less || (inclusive && order == Ordering::Equal) {
            let (l, r) = self.split(self.node(i).right, start, end, inclusive);
            self.node_mut(i).right = l;
            self.pull(i);
            (Some(i), r)
        } else {
            let (l, r) = self.split(self.node(i).left, start, end, inclusive);
            self.node_mut(i).left = r;
            self.pull(i);
            (l, Some(i))
        }
    }

    /// Joins two treaps where every key of `a` orders before every key of `b`.
    fn merge(&mut self, a: Option<usize>, b: Option<usize>) -> Option<usize> {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(x), Some(y)) => {
                if self.node(x).priority >= self.node(y).priority {
                    let r = self.merge(self.node(x).right, Some(y));
                    self.node_mut(x).right = r;
                    self.pull(x);
                    Some(x)
                } else {
                    let l = self.merge(Some(x), self.node(y).left);
                    self.node_mut(y).left = l;
                    self.pull(y);
                    Some(y)
                }
            }
        }
    }

    fn find(&self, start: &[u8], end: &Bound) -> Option<usize> {
        let mut t = self.root;
        while let Some(i) = t {
            t = match self.cmp_key(i, start, end) {
                Ordering::Equal => return Some(i),
                Ordering::Less => self.node(i).right,
                Ordering::Greater => self.node(i).left,
            };
        }
        None
    }

    fn insert(&mut self, start: Bytes, end: Bound, id: u64, value: V) {
        if let Some(i) = self.find(&start, &end) {
            self.node_mut(i).watchers.push((id, value));
            return;
        }
        self.nonce += 1;
        let node = Node {
            max_end: end.clone(),
            priority: splitmix64(self.nonce),
            left: None,
            right: None,
            watchers: vec![(id, value)],
            start,
            end,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        let (start, end) = (self.node(i).start.clone(), self.node(i).end.clone());
        let (l, r) = self.split(self.root, &start, &end, false);
        let l = self.merge(l, Some(i));
        self.root = self.merge(l, r);
        self.distinct += 1;
    }

    fn remove(&mut self, start: &[u8], end: &Bound, id: u64) -> Option<V> {
        let i = self.find(start, end)?;
        let list = &mut self.node_mut(i).watchers;
        let at = list.iter().position(|(w, _)| *w == id)?;
        let (_, value) = list.swap_remove(at);
        if list.is_empty() {
            let (l, rest) = self.split(self.root, start, end, false);
            let (mid, r) = self.split(rest, start, end, true);
            debug_assert_eq!(mid, Some(i), "the split isolates exactly the found node");
            self.root = self.merge(l, r);
            self.nodes[i] = None;
            self.free.push(i);
            self.distinct -= 1;
        }
        Some(value)
    }

    /// Calls `f` for every watcher on a range containing `key`; returns the
    /// nodes visited.
    fn for_each_containing<'a>(&'a self, key: &[u8], f: &mut impl FnMut(u64, &'a V)) -> usize {
        let mut visited = 0;
        if let Some(root) = self.root {
            self.visit(root, key, f, &mut visited);
        }
        visited
    }

    fn visit<'a>(
        &'a self,
        i: usize,
        key: &[u8],
        f: &mut impl FnMut(u64, &'a V),
        visited: &mut usize,
    ) {
        *visited += 1;
        let n = self.node(i);
        if !n.max_end.above(key) {
            // No range in this subtree reaches past `key`.
            return;
        }
        if let Some(l) = n.left {
            self.visit(l, key, f, visited);
        }
        if n.start.as_ref() <= key {
            if n.end.above(key) {
                for (id, v) in &n.watchers {
                    f(*id, v);
                }
            }
            // Ranges to the right start at or after this one; only those
            // starting at or before `key` can hold it.
            if let Some(r) = n.right {
                self.visit(r, key, f, visited);
            }
        }
    }

    fn drain(&mut self) -> Vec<(u64, V)> {
        let mut out = Vec::new();
        for node in self.nodes.drain(..).flatten() {
            out.extend(node.watchers);
        }
        self.free.clear();
        self.root = None;
        self.distinct = 0;
        out
    }

    /// Checks the treap's order, heap and augmentation invariants.
    #[cfg(test)]
    fn check(&self) {
        fn walk<V>(t: &IntervalTree<V>, i: usize) -> (usize, Bound) {
            let n = t.node(i);
            assert!(!n.watchers.is_empty(), "a node in the tree has watchers");
            let mut count = 1;
            let mut max = n.end.clone();
            for (child, before) in [(n.left, true), (n.right, false)] {
                let Some(c) = child else { continue };
                let cn = t.node(c);
                assert!(cn.priority <= n.priority, "heap order");
                let order = (cn.start.as_ref(), &cn.end).cmp(&(n.start.as_ref(), &n.end));
                assert_eq!(order, if before { Ordering::Less } else { Ordering::Greater });
                let (c_count, c_max) = walk(t, c);
                count += c_count;
                max = max.max(c_max);
            }
            assert_eq!(n.max_end, max, "max_end is the subtree's largest end");
            (count, max)
        }
        let count = self.root.map_or(0, |r| walk(self, r).0);
        assert_eq!(count, self.distinct);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn key(n: u32) -> Bytes {
        Bytes::from(format!("k{n:03}"))
    }

    fn random_range(rng: &mut StdRng) -> WatchRange {
        let a = rng.random_range(0..60u32);
        match rng.random_range(0..4u32) {
            0 | 1 => WatchRange::new(key(a), &[]).unwrap(),
            2 => WatchRange::new(key(a), &[0]).unwrap(),
            _ => {
                let b = a + rng.random_range(1..20u32);
                WatchRange::new(key(a), &key(b)).unwrap()
            }
        }
    }

    #[test]
    fn empty_and_inverted_ranges_are_refused() {
        assert_eq!(WatchRange::new(key(5), &key(5)), None);
        assert_eq!(WatchRange::new(key(5), &key(4)), None);
        assert!(WatchRange::new(key(5), &key(6)).is_some());
        // `"\0"` as the end means "every key from the start", never empty.
        assert!(WatchRange::new(Bytes::from_static(b"\xff"), &[0]).is_some());
    }

    #[test]
    fn matches_equal_brute_force_under_random_inserts_and_removes() {
        for seed in 0..10u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut index = WatcherIndex::<u64>::default();
            let mut live: Vec<(u64, WatchRange)> = Vec::new();
            for id in 0..300u64 {
                if !live.is_empty() && rng.random_range(0..3u32) == 0 {
                    let at = rng.random_range(0..live.len());
                    let (gone, range) = live.swap_remove(at);
                    assert_eq!(index.remove(&range, gone), Some(gone * 10));
                    assert_eq!(index.remove(&range, gone), None, "removed once only");
                } else {
                    let range = random_range(&mut rng);
                    index.insert(&range, id, id * 10);
                    live.push((id, range));
                }
                index.ranges.check();
                assert_eq!(index.len(), live.len());
                if id % 5 != 0 {
                    continue;
                }
                for probe in 0..80u32 {
                    let k = key(probe);
                    let mut got = BTreeSet::new();
                    index.for_each_match(&k, |id, v| {
                        assert_eq!(*v, id * 10);
                        assert!(got.insert(id), "watcher {id} reported twice");
                    });
                    let want: BTreeSet<u64> =
                        live.iter().filter(|(_, r)| r.contains(&k)).map(|(id, _)| *id).collect();
                    assert_eq!(got, want, "seed {seed}, key {k:?}");
                }
            }
            let mut drained: Vec<u64> = index.drain().into_iter().map(|(id, _)| id).collect();
            drained.sort_unstable();
            let mut want: Vec<u64> = live.iter().map(|(id, _)| *id).collect();
            want.sort_unstable();
            assert_eq!(drained, want);
            assert_eq!(index.len(), 0);
        }
    }

    #[test]
    fn a_key_outside_every_range_visits_few_nodes() {
        // 1,000 disjoint prefixes: a probe outside them all must be pruned
        // by max_end rather than walk the tree.
        let mut index = WatcherIndex::<()>::default();
        for i in 0..1000u32 {
            let start = Bytes::from(format!("p{i:04}/"));
            let end = Bytes::from(format!("p{i:04}0"));
            index.insert(&WatchRange::new(start, &end).unwrap(), u64::from(i), ());
        }
        index.ranges.check();
        let mut hits = 0;
        let mut visited = Vec::new();
        visited.push(index.for_each_match(b"p0500/x", |_, _| hits += 1));
        assert_eq!(hits, 1);
        for probe in [&b"q"[..], b"a", b"p0500", b"p0999/zz", b"p0000/"] {
            visited.push(index.for_each_match(probe, |_, _| hits += 1));
        }
        assert_eq!(hits, 3, "p0999/zz and p0000/ match their own prefix only");
        // A scan would visit 1,000 nodes; a treap of 1,000 has an expected
        // depth near 2·ln(1000) ≈ 14, and a stabbing query walks about two
        // root-to-leaf paths.
        assert!(visited.iter().all(|&v| v <= 80), "nodes visited per lookup: {visited:?}");
    }
}
