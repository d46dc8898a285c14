//! Reads that start between two commits share one read view, and every
//! commit retires it: a read that starts after a write returns sees that
//! write, whichever path committed it (apply, checkpoint, node record,
//! restore).
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use std::sync::Arc;

use mvcc_common::*;

#[test]
fn reads_between_two_commits_share_one_view() {
    let mut t = Shard::in_memory();
    t.put("k", "v1");
    let a = t.store.read().unwrap();
    let b = t.store.read().unwrap();
    assert!(Arc::ptr_eq(&a, &b), "two reads with no commit between opened two views");
    t.put("k", "v2");
    let c = t.store.read().unwrap();
    assert!(!Arc::ptr_eq(&a, &c), "a read after a commit got the view from before it");
}

#[test]
fn a_read_after_each_kind_of_commit_sees_it() {
    let mut t = Shard::in_memory();
    t.put("k", "v1");
    // Cache a view, then commit in each way the store commits.
    assert_eq!(t.get("k").unwrap().value, b("v1"));
    t.put("k", "v2");
    assert_eq!(t.get("k").unwrap().value, b("v2"), "after an apply");

    let before = t.store.read().unwrap();
    t.store.checkpoint().unwrap();
    assert!(!Arc::ptr_eq(&before, &t.store.read().unwrap()), "after a checkpoint");

    let before = t.store.read().unwrap();
    t.store.set_node_record("name", Some(b"value")).unwrap();
    assert!(!Arc::ptr_eq(&before, &t.store.read().unwrap()), "after a node record");
    assert_eq!(t.store.node_record("name").unwrap().as_deref(), Some(&b"value"[..]));

    // A view held across commits keeps what it saw.
    t.put("k", "v3");
    assert_eq!(t.get("k").unwrap().value, b("v3"));
    let held = t.store.read().unwrap();
    t.put("k", "v4");
    let old = held.range(t.shard, &range("k", "")).unwrap();
    assert_eq!(old.kvs[0].value, b("v3"), "a held view changed under its reader");
    assert_eq!(t.get("k").unwrap().value, b("v4"));
}
