//! Helpers shared by the node's integration tests.
//!
//! Every scenario is a function generic over the consensus engine,
//! `fn scenario<E: Engine>()`, and [`engine_tests!`] instantiates it once
//! per engine as `raft::scenario` and `paxos::scenario`: the same
//! scenarios must pass on both.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::testing::{Cluster, ConfigEdit};
use ringkv_node::{Engine, NodeError, Reply, Request};
use ringkv_storage::mvcc::{KeyValue, PutRequest, RangeRequest, Response, Revision};

/// Steps a request may take before a test gives up on it.
pub(crate) const STEPS: usize = 200;

/// Declares `#[test]`s `raft::<name>` and `paxos::<name>` for each generic
/// scenario `fn <name><E: Engine>()` named.
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        mod raft {
            $(
                #[test]
                fn $name() {
                    super::$name::<ringkv_node::RaftEngine>();
                }
            )*
        }
        mod paxos {
            $(
                #[test]
                fn $name() {
                    super::$name::<ringkv_node::PaxosEngine>();
                }
            )*
        }
    };
}

/// A new `n`-member cluster of engine `E` with the test defaults.
pub(crate) fn cluster<E: Engine>(n: usize, seed: u64) -> Cluster<E> {
    Cluster::with_engine(n, seed, &|_| {})
}

/// A new `n`-member cluster of engine `E`, each config edited by `edit`.
pub(crate) fn cluster_with<E: Engine>(n: usize, seed: u64, edit: ConfigEdit<'_>) -> Cluster<E> {
    Cluster::with_engine(n, seed, edit)
}

pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) fn put_req(key: &str, value: &str) -> Request {
    Request::Put(PutRequest { key: b(key), value: b(value), ..PutRequest::default() })
}

/// Puts through `on` and returns the revision.
pub(crate) fn put<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    key: &str,
    value: &str,
) -> Result<Revision, NodeError> {
    match c.call(on, put_req(key, value), STEPS)? {
        Reply::Kv(Response::Put(r)) => Ok(r.revision),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// A linearizable (or serializable) get through `on`.
/// Puts through `on`, or, when `on` holds no replica of the key's shard,
/// through the members it names (as the server sends a request on).
pub(crate) fn put_routed<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    key: &str,
    value: &str,
) -> Result<Revision, NodeError> {
    match put(c, on, key, value) {
        Err(NodeError::NotHosted { hosts, .. }) => {
            let running = c.running();
            let mut last = Err(NodeError::NotHosted { shard: ShardId(0), hosts: hosts.clone() });
            for h in hosts.into_iter().filter(|h| running.contains(h)) {
                last = put(c, h, key, value);
                if last.is_ok() {
                    break;
                }
            }
            last
        }
        other => other,
    }
}

pub(crate) fn get_on<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    key: &str,
    serializable: bool,
) -> Result<Option<KeyValue>, NodeError> {
    let req = RangeRequest { key: b(key), serializable, ..RangeRequest::default() };
    match c.call(on, Request::Range(req), STEPS)? {
        Reply::Range(mut r) => Ok(r.kvs.pop()),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The value of `key` as `on`'s store holds it now (no request).
pub(crate) fn local_value<E: Engine>(c: &Cluster<E>, on: NodeId, key: &str) -> Option<Bytes> {
    let req = RangeRequest { key: b(key), ..RangeRequest::default() };
    c.node(on).store().range(ringkv_node::DATA_SHARD, &req).unwrap().kvs.pop().map(|kv| kv.value)
}

/// Steps until every running node has applied as far as the furthest one.
pub(crate) fn settle<E: Engine>(c: &mut Cluster<E>) {
    let ok = c.run_until(STEPS * 2, |c| {
        let shard = |id| c.node(id).shard_status(ringkv_node::DATA_SHARD).unwrap();
        let applied: Vec<u64> = c.running().iter().map(|&id| shard(id).applied_index.0).collect();
        let commits: Vec<u64> = c.running().iter().map(|&id| shard(id).commit_index.0).collect();
        let max = commits.iter().copied().max().unwrap_or(0);
        applied.iter().all(|&a| a == max)
    });
    assert!(ok, "nodes did not converge");
}

/// Asserts that every running node holds the same KV state.
pub(crate) fn assert_same_state<E: Engine>(c: &Cluster<E>) {
    let ids = c.running();
    let first = c.hash_kv(ids[0]);
    for &id in &ids[1..] {
        assert_eq!(c.hash_kv(id), first, "node {id} differs from {}", ids[0]);
        assert_eq!(c.hash(id), c.hash(ids[0]), "node {id}'s whole state differs");
    }
}

/// Every shard a node of a cluster of `shards` data shards hosts: the
/// metadata shard and the data shards, or the one data shard.
pub(crate) fn hosted_shards(shards: u32) -> Vec<ShardId> {
    if shards > 1 {
        std::iter::once(ringkv_node::META_SHARD)
            .chain((1..=u64::from(shards)).map(ShardId))
            .collect()
    } else {
        vec![ringkv_node::DATA_SHARD]
    }
}

/// Steps until every running node has applied every shard as far as any
/// node committed it.
pub(crate) fn settle_shards<E: Engine>(c: &mut Cluster<E>, shards: &[ShardId]) {
    let ok = c.run_until(STEPS * 4, |c| {
        shards.iter().all(|&shard| {
            let st = |id| c.node(id).shard_status(shard).unwrap();
            let max = c.running().iter().map(|&id| st(id).commit_index).max().unwrap();
            c.running().iter().all(|&id| st(id).applied_index == max)
        })
    });
    assert!(ok, "shards did not converge");
}

/// Asserts that every running node holds the same state of every shard.
/// Waits until every running holder of each shard applied all its shard
/// committed (a node that holds no replica of a shard is not waited for).
pub(crate) fn settle_placed_shards<E: Engine>(c: &mut Cluster<E>, shards: &[ShardId]) {
    let ok = c.run_until(STEPS * 4, |c| {
        shards.iter().all(|&shard| {
            let holders: Vec<NodeId> =
                c.running().into_iter().filter(|&id| c.node(id).hosts(shard)).collect();
            let st = |id| c.node(id).shard_status(shard).unwrap();
            let max = holders.iter().map(|&id| st(id).commit_index).max();
            holders.iter().all(|&id| Some(st(id).applied_index) == max)
        })
    });
    assert!(ok, "shards did not converge");
}

/// Asserts that every running holder of each shard holds the same state.
pub(crate) fn assert_same_shards<E: Engine>(c: &Cluster<E>, shards: &[ShardId]) {
    for &shard in shards {
        let ids: Vec<NodeId> =
            c.running().into_iter().filter(|&id| c.node(id).hosts(shard)).collect();
        assert_same_shard(c, shard, &ids);
    }
}

fn assert_same_shard<E: Engine>(c: &Cluster<E>, shard: ShardId, ids: &[NodeId]) {
    if ids.is_empty() {
        return;
    }
    let state = |id: NodeId, shard| {
        let view = c.node(id).store().read().unwrap();
        (view.hash_kv(shard, Revision::ZERO).unwrap().hash, view.hash(shard).unwrap())
    };
    for &id in &ids[1..] {
        assert_eq!(state(id, shard), state(ids[0], shard), "{shard} on {id} and {}", ids[0]);
    }
}

/// Data shards of the sharded scenarios (beside the metadata shard).
pub(crate) const SHARDS: u32 = 4;

/// The keyspace of the sharded scenarios: [`SHARDS`] shards by whole key.
pub(crate) fn keyspace() -> ringkv_ring::Keyspace {
    ringkv_ring::Keyspace::new(SHARDS, ringkv_ring::HashKeyRule::WholeKey).unwrap()
}

/// A cluster of `n` nodes hosting the metadata shard and [`SHARDS`] data
/// shards.
pub(crate) fn sharded<E: Engine>(n: usize, seed: u64) -> Cluster<E> {
    cluster_with::<E>(n, seed, &|c| c.keyspace = keyspace())
}

/// The data shards of [`sharded`] clusters.
pub(crate) fn data_shards() -> Vec<ShardId> {
    (1..=u64::from(SHARDS)).map(ShardId).collect()
}

/// Waits until the metadata shard and every data shard have a leader;
/// returns the metadata shard's.
pub(crate) fn wait_leaders<E: Engine>(c: &mut Cluster<E>) -> NodeId {
    let leader = c.wait_leader(200);
    let ok = c.run_until(STEPS * 2, |c| {
        std::iter::once(ringkv_node::META_SHARD)
            .chain(data_shards())
            .all(|s| c.leader_of(s).is_some())
    });
    assert!(ok, "a shard without a leader");
    leader
}

/// Makes an auth change through `on` as `who`; it must be taken.
pub(crate) fn auth_change<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    who: &ringkv_node::Credential,
    ch: ringkv_node::AuthChange,
) {
    let shown = format!("{ch:?}");
    match c.call_as(on, Request::AuthChange(ch), who.clone(), STEPS) {
        Ok(Reply::Auth(ringkv_node::AuthReply::Changed)) => {}
        other => panic!("{shown}: {other:?}"),
    }
}

/// The auth error of a refused request.
pub(crate) fn auth_err(r: Result<Reply, NodeError>) -> ringkv_node::AuthError {
    match r {
        Err(NodeError::Auth(e)) => e,
        other => panic!("expected an auth error, got {other:?}"),
    }
}

/// Users `root` (root role), `alice` (read-write on `/app/`) and each of
/// `without_role`, auth enabled, every change made through `on`.
pub(crate) fn auth_setup<E: Engine>(c: &mut Cluster<E>, on: NodeId, without_role: &[&str]) {
    use ringkv_node::AuthChange;
    use ringkv_node::auth::{Permission, PermissionType, ROOT_ROLE};
    let nobody = ringkv_node::Credential::Anonymous;
    for name in ["root", "alice"].iter().chain(without_role) {
        let ch = AuthChange::UserAdd {
            name: (*name).into(),
            password_hash: Some(format!("hash-of-{name}")),
            no_password: false,
        };
        auth_change(c, on, &nobody, ch);
    }
    auth_change(c, on, &nobody, AuthChange::RoleAdd { name: ROOT_ROLE.into() });
    let root = AuthChange::UserGrantRole { user: "root".into(), role: "root".into() };
    auth_change(c, on, &nobody, root);
    auth_change(c, on, &nobody, AuthChange::RoleAdd { name: "app".into() });
    let permission =
        Permission { kind: PermissionType::ReadWrite, key: b("/app/"), range_end: b("/app0") };
    auth_change(c, on, &nobody, AuthChange::RoleGrantPermission { role: "app".into(), permission });
    let alice = AuthChange::UserGrantRole { user: "alice".into(), role: "app".into() };
    auth_change(c, on, &nobody, alice);
    auth_change(c, on, &nobody, AuthChange::Enable);
}

/// Adds a voting member with the sharded test keyspace (its configuration
/// edited by `edit`) and starts it, as a learner first, promoted once it
/// has caught up; returns its id.
pub(crate) fn add_voter<E: Engine>(
    c: &mut Cluster<E>,
    i: usize,
    seed: u64,
    edit: impl Fn(&mut ringkv_node::NodeConfig),
) -> NodeId {
    let leader = c.wait_leader(STEPS);
    let add = Request::MemberAdd { peer_urls: vec![format!("http://n{i}:2380")], is_learner: true };
    let Reply::Members { member: Some(added), .. } = c.call(leader, add, STEPS).unwrap() else {
        panic!("no member")
    };
    let mut cfg = ringkv_node::testing::test_config(i, 3, seed);
    cfg.keyspace = keyspace();
    edit(&mut cfg);
    c.add_joining(added.id, cfg).unwrap();
    // Promotion is refused until the learner has caught up.
    let promoted = (0..STEPS).any(|_| {
        c.run(20);
        let Some(leader) = c.leader() else { return false };
        c.call(leader, Request::MemberPromote(added.id), STEPS).is_ok()
    });
    assert!(promoted, "the new member was not promoted");
    added.id
}
