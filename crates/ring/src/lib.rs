//! Consistent hashing for ringkv: keys to shards, shards to ordered replica
//! nodes, and movement plans between placements.
//!
//! Pure: no I/O, no clock, no randomness. Every answer is a function of its
//! inputs (the node set, the configuration, the key), so every node of a
//! cluster computes the same placement from the same ring, and the outputs
//! are part of the cluster's format (pinned by tests).
//!
//! # The model
//!
//! ```text
//!  key ──(hash-key rule)──▶ hash key ──xxh3_64──▶ h ──⌊h·S/2⁶⁴⌋+1──▶ shard 1..=S
//!  "/a/{t7}/x"               "t7"                                      │
//!                                                                      ▼
//!  ring of nodes (vnodes ∝ weight) ◀──── shard's point = hash(shard id)
//!    walk clockwise from the point, choose R nodes by the zone rule
//!                                                                      ▼
//!                                              [preferred leader, followers…]
//! ```
//!
//! A cluster has a fixed number `S` of data shards, chosen when it is created
//! (default 1, which is exactly etcd). Data shards are numbered `1..=S`;
//! shard 0 is the metadata group ([`METADATA_SHARD`]).
//!
//! # Keys to shards ([`Keyspace`])
//!
//! A key's **hash key** ([`HashKeyRule`]) decides its shard:
//!
//! - the whole key, by default;
//! - its hash tag when it has a non-empty one, as in Redis Cluster: the bytes
//!   between the first `{` and the first `}` after it (`user:{42}:cart` →
//!   `42`). `{}` (empty), or a `{` never closed, means no tag;
//! - with [`HashKeyRule::Segments`]`(N)`, the first `N` `/`-separated
//!   segments (a leading `/` belongs to the first segment:
//!   `/registry/pods/default/web` → `/registry/pods` for `N = 2`), or the
//!   hash tag if one closes inside them.
//!
//! The shard is `1 + ⌊xxh3_64(hash key) · S / 2⁶⁴⌋` (multiply-shift). With a
//! fixed `S`, jump consistent hashing would buy nothing (its minimal movement
//! is for a changing bucket count) and cost a loop of divisions; `hash mod S`
//! costs a division. Multiply-shift is one multiplication, uniform to within
//! `S/2⁶⁴`, and gives each shard one contiguous slice of the hash space, so a
//! future split of every shard in two (`S → 2S`) keeps each key in a half of
//! its old shard instead of reshuffling.
//!
//! A router also needs the inverse question: which shards can hold the keys
//! of a prefix or a range? [`Keyspace::shards_for_prefix`],
//! [`Keyspace::shards_for_range`] and [`Keyspace::shards_for_etcd_range`]
//! answer with a [`ShardSpan`]: `Empty`, `One(shard)` or `All`. Hashing
//! scatters every other set, so `One` is only possible when the prefix alone
//! fixes the hash key: it holds a complete non-empty tag (`/a/{t}/`), or all
//! `N` segments under `Segments(N)` (`/registry/pods/`). A range is first
//! reduced to the longest prefix all of its keys share (`[p, prefix_end(p))`
//! encloses it). The answers are sound (tested: no key of the set lives
//! elsewhere) and tight for prefixes (tested: when the answer is `All`, two
//! keys below the prefix have different hash keys).
//!
//! # Shards to replicas ([`Ring`], [`Placement`])
//!
//! Each node ([`NodeSpec`]: id, weight, optional zone) gets
//! `weight ·` [`VNODES_PER_WEIGHT`] points on the 64-bit circle, each a hash
//! of (node id, vnode index); each shard gets the point `hash(shard id)`.
//! Walking clockwise from a shard's point meets the nodes in an order that
//! is the shard's own; the replicas are chosen from it by the **zone rule**:
//!
//! - A node's *zone rank* is the number of nodes of its zone met before it
//!   (a node without a zone is a zone of its own).
//! - The replicas are the `R` nodes with the smallest `(zone rank,
//!   position)`. With at least `R` zones that is the first node of each of
//!   the first `R` zones met: every replica in a distinct zone. With fewer
//!   zones than `R` (say 2 zones, `R = 3`) it goes round-robin: the first node
//!   of every zone, then the second of every zone, each round in clockwise
//!   order, so zones share replicas as evenly as their sizes allow (2 + 1).
//! - The preferred leader is the chosen node met first; the followers are
//!   kept in id order, so a placement is a set plus a leader per shard.
//!
//! ```text
//!  the circle unrolled; nodes A, B in zone x, C in zone y, D in zone z:
//!
//!  0 ──A──C──────▲──B──A───D──C──B──D──▶ 2⁶⁴ = 0
//!                shard 7
//!  met from shard 7: B (x, rank 0), A (x, rank 1), D (z, 0), C (y, 0)
//!  R = 3: the rank-0 nodes by position: B, D, C; preferred leader B
//!  R = 4: those, then rank 1: B, D, C, A
//! ```
//!
//! **Bounded loads** ([`LoadBound`], opt-in): consistent hashing with bounded
//! loads (Mirrokni, Thorup, Zadimoghaddam, 2018). Node `n` may hold at most
//! `cap(n) = ⌈(1 + ε) · R · S · weight(n) / total weight⌉` replicas. Shards are
//! placed in id order; a node at its cap is *full*, and full nodes rank after
//! every open node of their zone, so the rule becomes "the `R` smallest
//! `(zone rank, full, position)`". The zone rule is never given up for
//! balance: a full node is taken only when the zone rule leaves no open one
//! (fault tolerance first). For nodes of equal weight without zones this
//! never happens when `N ≥ (R − 1)(1 + ε)/ε` or `N ≤ (1 + ε)R`, so then every
//! node is within its cap ([`Ring::capacity`]). Proof: a shard finds fewer
//! than `R` open nodes only if `N − R + 1` nodes are full, holding at least
//! `(N − R + 1)(1 + ε)R·S/N` replicas, which is `R·S` or more in the first
//! case, yet fewer than `R·S` are placed before the last shard; in the
//! second case `cap ≥ S`, and a full node would already hold every shard.
//!
//! # Guarantees
//!
//! **Determinism.** A [`Ring`] is a function of the node *set* (any insertion
//! order gives an equal ring; point collisions break ties by node id) and a
//! [`Placement`] of the ring and [`PlacementConfig`].
//!
//! **Movement without a load bound.** When one node `X` joins, every replica
//! that moves, moves *to* `X`; when `X` leaves, every replica that moves,
//! moves *from* `X`; no replica ever moves between two nodes that stay, with
//! or without zones and weights, and exactly `X`'s share moves. Why: `X`'s
//! points do not change the order in which the walk meets the other nodes,
//! so every other zone's sequence is unchanged and `X`'s zone's sequence
//! gains `X`, which can only bring that zone's `k`-th node earlier. Taking
//! the `R` smallest `(rank, position)`, the other zones can only lose picks
//! and `X`'s zone can gain at most one, which must be `X`; a leave is the
//! same argument backwards. The preferred leader may change to another
//! replica (leadership is a role, not data). Raising a node's weight only
//! adds points of that node, so it is a join as far as movement goes.
//! `X`'s share is about `R·S·weight(X)/total weight`; the `balance` example
//! measures 0.8 to 1.3 times `R·S/N` for `S ≥ 1024` and 0.5 to 1.6 with
//! fewer shards per node (less when `X` joins a zone that already held a
//! replica of every shard: zones, not nodes, are what the rule balances).
//!
//! **Movement with a load bound.** The replicas that move through `X` are
//! exactly its share, which now is at most `cap(X)`. But strict locality is
//! given up: a shard turned away by a full node takes a slot that a later
//! shard then misses (a cascade), so a few replicas move between nodes that
//! stay. This is unavoidable for any placement that is a function of the
//! node set: strict locality for every join and leave forces each shard to
//! choose by one fixed preference order over nodes (a join may only swap in
//! the joiner, a leave only swap out the leaver), so the hashes alone decide
//! each node's load and no cap can be enforced. What holds, and is tested:
//! every move between two staying nodes is on a shard the bound displaced
//! (whose replicas differ from the unbounded placement's, before or after).
//! The `balance` example counts them: 0 to 15 per join or leave for most
//! sizes (at most 90, for 10 nodes in 3 zones and 4096 shards), against
//! hundreds to thousands of replicas moved through `X`.
//!
//! **Balance.** Without a bound, the most replicas on a node over the mean
//! (R = 3, nodes of weight 1, no zones), from the `balance` example:
//!
//! | nodes | S = 64 | S = 256 | S = 1024 | S = 4096 |
//! | ----: | -----: | ------: | -------: | -------: |
//! | 5     | 1.25   | 1.13    | 1.06     | 1.06     |
//! | 20    | 1.46   | 1.28    | 1.11     | 1.10     |
//! | 100   | 3.12   | 1.95    | 1.37     | 1.23     |
//!
//! With few shards per node the spread is that of throwing `R·S` balls into
//! `N` bins; a load bound of ε = 25% caps it at `⌈1.25 · mean⌉` (1.25 to
//! 1.56 of the mean in the same table, the ceiling showing when the mean is
//! 2). Zones of unequal size are balanced by the zone rule, not by nodes: a
//! zone of one node among three zones holds a replica of every shard.
//!
//! # Movement plans ([`MovementPlan`])
//!
//! [`MovementPlan::between`] lists, per shard, the fewest [`Step`]s that turn
//! one placement into another: `max(lost, gained)` replica changes (moves,
//! plus additions or removals when `R` changes) and a leader transfer only
//! when no move can carry the leadership. [`MovementPlan::apply`] carries it
//! out; applying the plan to the old placement gives the new one exactly.
//!
//! # Limits
//!
//! [`SHARD_COUNT_MAX`], [`REPLICAS_MAX`], [`NODES_MAX`], [`WEIGHT_MAX`],
//! [`VNODES_MAX`], [`EPSILON_PERCENT_MAX`].
//!
//! # Example
//!
//! ```
//! use ringkv_ring::{HashKeyRule, Keyspace, NodeId, NodeSpec, PlacementConfig, Ring, ShardSpan};
//!
//! let keyspace = Keyspace::new(64, HashKeyRule::WholeKey)?;
//! let shard = keyspace.shard_of(b"/users/{42}/cart");
//! assert_eq!(shard, keyspace.shard_of(b"/orders/{42}/7"));
//! assert_eq!(keyspace.shards_for_prefix(b"/users/{42}/"), ShardSpan::One(shard));
//!
//! let zones = ["a", "b", "c"];
//! let ring = Ring::new((1..=6).map(|i| NodeSpec::new(NodeId(i)).with_zone(zones[i as usize % 3])))?;
//! let placement = ring.place(&PlacementConfig::new(64, 3))?;
//! let replicas = placement.replicas(shard).expect("a data shard");
//! assert_eq!(replicas.len(), 3); // one in each zone; replicas[0] leads
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ids;
mod keyspace;
mod placement;
mod plan;
mod ring;

pub use ids::{FIRST_DATA_SHARD, METADATA_SHARD, NodeId, ShardId};
pub use keyspace::{
    HashKeyRule, Keyspace, KeyspaceError, RangeEnd, SHARD_COUNT_MAX, ShardSpan, key_hash,
};
pub use placement::{
    EPSILON_PERCENT_MAX, LoadBound, Placement, PlacementConfig, PlacementError, REPLICAS_MAX,
};
pub use plan::{MovementPlan, PlanError, Step};
pub use ring::{
    DEFAULT_WEIGHT, NODES_MAX, NodeSpec, Ring, RingError, VNODES_MAX, VNODES_PER_WEIGHT, WEIGHT_MAX,
};

#[cfg(test)]
mod testing;
