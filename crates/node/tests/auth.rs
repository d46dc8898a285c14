//! The auth store through the cluster: changes replicate, every replica
//! enforces the same rules, tokens work on every member, and the checks
//! made when an entry applies catch what changed after it was proposed.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_consensus::NodeId;
use ringkv_node::auth::{AuthQuery, LoginInfo};
use ringkv_node::testing::Cluster;
use ringkv_node::{
    AuthChange, AuthError, AuthInfo, AuthReply, Credential, Engine, NodeError, Reply, Request,
};
use ringkv_storage::mvcc::{PutRequest, RangeRequest, RequestOp, TxnRequest};

fn login<E: Engine>(c: &mut Cluster<E>, on: NodeId, name: &str) -> LoginInfo {
    let q = Request::AuthQuery(AuthQuery::Login { name: name.into() });
    match c.call(on, q, STEPS).unwrap() {
        Reply::Auth(AuthReply::Login(l)) => l,
        other => panic!("{other:?}"),
    }
}

/// Authenticates as the server does once it has verified the password.
fn token<E: Engine>(c: &mut Cluster<E>, on: NodeId, user: &str, token: &str) -> Credential {
    let checked_revision = login(c, on, user).revision;
    let ch = AuthChange::IssueToken { user: user.into(), token: token.into(), checked_revision };
    match c.call(on, Request::AuthChange(ch), STEPS).unwrap() {
        Reply::Auth(AuthReply::Token(t)) => Credential::SimpleToken(t),
        other => panic!("{other:?}"),
    }
}

fn put_as<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    who: &Credential,
    key: &str,
) -> Result<Reply, NodeError> {
    c.call_as(on, put_req(key, "v"), who.clone(), STEPS)
}

fn get_as<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    who: &Credential,
    key: &str,
) -> Result<Reply, NodeError> {
    let req = RangeRequest { key: b(key), ..RangeRequest::default() };
    c.call_as(on, Request::Range(req), who.clone(), STEPS)
}

fn every_replica_enforces_the_same_rules<E: Engine>() {
    let mut c = cluster::<E>(3, 41);
    let leader = c.wait_leader(100);
    let ids = c.running();
    let followers: Vec<NodeId> = ids.iter().copied().filter(|&i| i != leader).collect();
    auth_setup(&mut c, followers[0], &[]);
    settle(&mut c);
    for &id in &ids {
        let auth = c.node(id).auth_store().unwrap();
        assert!(auth.enabled(), "auth enabled on {id}");
        assert!(auth.user("alice").is_some());
    }

    let nobody = Credential::Anonymous;
    assert_eq!(auth_err(put_as(&mut c, leader, &nobody, "/app/x")), AuthError::UserEmpty);
    // A token issued through one member works on every member.
    let alice = token(&mut c, followers[0], "alice", "tok-alice");
    let root = token(&mut c, leader, "root", "tok-root");
    for &id in &ids {
        put_as(&mut c, id, &alice, "/app/x").unwrap();
        get_as(&mut c, id, &alice, "/app/x").unwrap();
        assert_eq!(auth_err(put_as(&mut c, id, &alice, "/etc/x")), AuthError::PermissionDenied);
        assert_eq!(auth_err(get_as(&mut c, id, &alice, "/etc/x")), AuthError::PermissionDenied);
    }
    // Both branches of a transaction are checked.
    let op = |k: &str| RequestOp::Put(PutRequest { key: b(k), ..PutRequest::default() });
    let txn = TxnRequest { compare: vec![], success: vec![op("/app/y")], failure: vec![op("/z")] };
    let r = c.call_as(followers[1], Request::Txn(txn), alice.clone(), STEPS);
    assert_eq!(auth_err(r), AuthError::PermissionDenied);
    // Admin-only calls.
    let hash = Request::HashKv(ringkv_storage::mvcc::Revision(0));
    assert_eq!(
        auth_err(c.call_as(leader, hash.clone(), alice.clone(), STEPS)),
        AuthError::PermissionDenied
    );
    c.call_as(leader, hash, root.clone(), STEPS).unwrap();
    c.call_as(leader, Request::MemberList { linearizable: true }, alice.clone(), STEPS).unwrap();
    let list = Request::AuthQuery(AuthQuery::UserList);
    assert_eq!(
        auth_err(c.call_as(leader, list.clone(), alice.clone(), STEPS)),
        AuthError::PermissionDenied
    );
    assert!(c.call_as(leader, list, root.clone(), STEPS).is_ok());

    // A revocation through one member is in force on all, for reads too.
    let revoke = AuthChange::RoleRevokePermission {
        role: "app".into(),
        key: b("/app/"),
        range_end: b("/app0"),
    };
    auth_change(&mut c, followers[1], &root, revoke);
    for &id in &ids {
        assert_eq!(
            auth_err(get_as(&mut c, id, &alice, "/app/x")),
            AuthError::PermissionDenied,
            "on {id}"
        );
    }
    // A signed token from before the change is stale; a certificate's name
    // is taken at the current revision.
    let rev = c.node(leader).auth_store().unwrap().revision();
    let signed = Credential::Signed(AuthInfo { user: "root".into(), revision: rev - 1 });
    assert!(matches!(
        auth_err(put_as(&mut c, leader, &signed, "k")),
        AuthError::OldRevision { .. }
    ));
    put_as(&mut c, leader, &Credential::Certificate("root".into()), "k").unwrap();
    let forged = Credential::SimpleToken("tok-forged".into());
    assert_eq!(auth_err(put_as(&mut c, leader, &forged, "k")), AuthError::InvalidAuthToken);
    assert_eq!(
        auth_err(put_as(&mut c, leader, &Credential::Invalid, "k")),
        AuthError::InvalidAuthToken
    );

    // Deleting a user voids its tokens everywhere.
    auth_change(&mut c, leader, &root, AuthChange::UserDelete { name: "alice".into() });
    settle(&mut c);
    for &id in &ids {
        assert_eq!(auth_err(get_as(&mut c, id, &alice, "/app/x")), AuthError::InvalidAuthToken);
    }
    // Disabling lets everyone in again, and forgets every token.
    auth_change(&mut c, leader, &root, AuthChange::Disable);
    put_as(&mut c, followers[0], &nobody, "/etc/x").unwrap();
    settle(&mut c);
    for &id in &ids {
        assert_eq!(c.node(id).auth_tokens(), 0);
    }
    assert_same_state(&c);
}

/// A write proposed while its author still had the right, applied after a
/// change of the auth store, fails on every replica: its rights are checked
/// when it applies, against the store as of its entry.
fn a_write_applied_after_an_auth_change_is_refused<E: Engine>() {
    let mut c = cluster::<E>(3, 42);
    let leader = c.wait_leader(100);
    auth_setup(&mut c, leader, &[]);
    let alice = token(&mut c, leader, "alice", "tok-alice");
    let root = token(&mut c, leader, "root", "tok-root");
    let revoke = AuthChange::UserRevokeRole { user: "alice".into(), role: "app".into() };
    // Both taken in one round: the put passes the early check (the revoke
    // is not applied yet) and is appended after the revoke.
    let t_revoke = c.submit_as(leader, Request::AuthChange(revoke), root.clone());
    let t_put = c.submit_as(leader, put_req("/app/late", "v"), alice.clone());
    assert!(c.run_until(STEPS, |c| {
        c.node(leader).auth_store().unwrap().user("alice").unwrap().roles.is_empty()
    }));
    c.run(10);
    assert!(matches!(c.take_result(leader, t_revoke), Some(Ok(_))));
    let put = c.take_result(leader, t_put).expect("answered");
    assert!(matches!(auth_err(put), AuthError::OldRevision { .. }));
    settle(&mut c);
    for id in c.running() {
        assert_eq!(local_value(&c, id, "/app/late"), None, "the refused put applied on {id}");
    }
}

/// Tokens live in each member's memory: a restarted member has forgotten
/// them (clients authenticate again), the others still know them.
fn a_restarted_member_forgets_tokens<E: Engine>() {
    let mut c = cluster::<E>(3, 43);
    let leader = c.wait_leader(100);
    auth_setup(&mut c, leader, &[]);
    let alice = token(&mut c, leader, "alice", "tok-alice");
    settle(&mut c);
    let follower = c.running().into_iter().find(|&i| i != leader).unwrap();
    c.crash(follower);
    c.restart(follower).unwrap();
    c.wait_leader(200);
    settle(&mut c);
    assert_eq!(auth_err(get_as(&mut c, follower, &alice, "/app/x")), AuthError::InvalidAuthToken);
    let leader = c.wait_leader(100);
    if leader != follower {
        get_as(&mut c, leader, &alice, "/app/x").unwrap();
    }
    // The store itself survived the restart.
    assert!(c.node(follower).auth_store().unwrap().enabled());
    let fresh = token(&mut c, follower, "alice", "tok-2");
    get_as(&mut c, follower, &fresh, "/app/x").unwrap();
}

engine_tests!(
    every_replica_enforces_the_same_rules,
    a_write_applied_after_an_auth_change_is_refused,
    a_restarted_member_forgets_tokens,
);
