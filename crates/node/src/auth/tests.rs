use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_storage::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, MvccStore, PutRequest, RangeRequest,
    RequestOp, StoreOptions, TxnRequest,
};

use super::*;
use crate::config::DATA_SHARD;

const SHARD: ringkv_consensus::ShardId = DATA_SHARD;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A store and its mirror, changed together as the node does.
struct Fixture {
    store: MvccStore,
    auth: AuthStore,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            store: MvccStore::open_in_memory(StoreOptions::default()).unwrap(),
            auth: AuthStore::default(),
        }
    }

    fn apply(&mut self, change: AuthChange) -> Result<AuthReply, AuthError> {
        let auth = &mut self.auth;
        self.store.write(|b| auth.apply(b, SHARD, &change)).unwrap().0
    }

    fn ok(&mut self, change: AuthChange) {
        let shown = format!("{change:?}");
        self.apply(change).unwrap_or_else(|e| panic!("{shown}: {e}"));
    }

    fn reloaded(&self) -> AuthStore {
        AuthStore::load(&self.store.read().unwrap(), SHARD).unwrap()
    }

    fn who(&self, user: &str) -> AuthInfo {
        AuthInfo { user: user.to_owned(), revision: self.auth.revision() }
    }

    /// root (with the root role), a reader of `a..` prefix `/app/`, enabled.
    fn enabled() -> Fixture {
        let mut f = Fixture::new();
        for (name, hash) in [("root", "h-root"), ("alice", "h-alice")] {
            f.ok(AuthChange::UserAdd {
                name: name.into(),
                password_hash: Some(hash.into()),
                no_password: false,
            });
        }
        // As etcdctl's `auth enable` does.
        f.ok(AuthChange::RoleAdd { name: ROOT_ROLE.into() });
        f.ok(AuthChange::UserGrantRole { user: "root".into(), role: ROOT_ROLE.into() });
        f.ok(AuthChange::RoleAdd { name: "app".into() });
        f.ok(AuthChange::RoleGrantPermission {
            role: "app".into(),
            permission: Permission {
                kind: PermissionType::ReadWrite,
                key: b("/app/"),
                range_end: b("/app0"),
            },
        });
        f.ok(AuthChange::RoleGrantPermission {
            role: "app".into(),
            permission: Permission { kind: PermissionType::Read, key: b("cfg"), range_end: b("") },
        });
        f.ok(AuthChange::UserGrantRole { user: "alice".into(), role: "app".into() });
        f.ok(AuthChange::Enable);
        f
    }
}

#[test]
fn intervals_follow_etcds_key_conventions() {
    assert_eq!(KeyInterval::of(b"a", b""), KeyInterval { start: b("a"), end: Some(b("a\0")) });
    assert_eq!(KeyInterval::of(b"a", b"\0"), KeyInterval { start: b("a"), end: None });
    assert!(KeyInterval::of(b"b", b"a").is_empty());
    let granted = || vec![KeyInterval::of(b"a", b"c"), KeyInterval::of(b"c", b"e")];
    assert!(covers(granted(), &KeyInterval::of(b"a", b"e")), "adjacent grants merge");
    assert!(covers(granted(), &KeyInterval::of(b"b", b"")));
    assert!(!covers(granted(), &KeyInterval::of(b"a", b"f")));
    assert!(!covers(granted(), &KeyInterval::of(b"a", b"\0")));
    assert!(covers(vec![KeyInterval::of(b"", b"\0")], &KeyInterval::of(b"\0", b"\0")));
    assert!(!covers(vec![KeyInterval::of(b"a", b"")], &KeyInterval::of(b"a", b"b")));
    assert!(!covers(Vec::new(), &KeyInterval::of(b"a", b"")));
    // An empty request range is checked as its first key.
    assert!(!covers(vec![KeyInterval::of(b"x", b"")], &KeyInterval::of(b"b", b"a")));
}

proptest! {
    /// `covers` agrees with checking one key of every elementary segment
    /// the intervals' bounds cut the key space into.
    #[test]
    fn coverage_matches_brute_force(
        granted in prop::collection::vec((0u8..6, 0u8..7, any::<bool>()), 0..5),
        want in (0u8..6, 0u8..7, any::<bool>()),
    ) {
        // Start byte `s`; end 0 means "to the end", `single` a single key.
        let interval = |(s, e, single): (u8, u8, bool)| {
            let end: Vec<u8> = if single { vec![] } else if e == 0 { vec![0] } else { vec![e] };
            KeyInterval::of(&[s], &end)
        };
        let holds = |i: &KeyInterval, k: &[u8]| {
            k >= i.start.as_ref() && i.end.as_ref().is_none_or(|e| k < e.as_ref())
        };
        // Bounds are [x], [x, 0] or unbounded: [x], [x, 0], [x, 5] and a
        // key past them all stand for every segment between them.
        let mut keys: Vec<Vec<u8>> = (0u8..8).flat_map(|x| [vec![x], vec![x, 0], vec![x, 5]]).collect();
        keys.push(vec![0xff]);
        let want_i = interval(want);
        let intervals: Vec<KeyInterval> = granted.iter().copied().map(interval).collect();
        let probe = if want_i.is_empty() { KeyInterval::of(&want_i.start, &[]) } else { want_i.clone() };
        let expected = keys
            .iter()
            .filter(|k| holds(&probe, k))
            .all(|k| intervals.iter().any(|i| holds(i, k)));
        prop_assert_eq!(covers(intervals.clone(), &want_i), expected, "{:?} vs {:?}", intervals, want_i);
    }
}

#[test]
fn enabling_needs_root_with_the_root_role() {
    let mut f = Fixture::new();
    assert_eq!(f.apply(AuthChange::Enable), Err(AuthError::RootUserNotExist));
    f.ok(AuthChange::UserAdd {
        name: "root".into(),
        password_hash: Some("h".into()),
        no_password: false,
    });
    assert_eq!(f.apply(AuthChange::Enable), Err(AuthError::RootRoleNotExist));
    // The root role is granted without a record, as etcdctl's `auth enable` does.
    f.ok(AuthChange::UserGrantRole { user: "root".into(), role: ROOT_ROLE.into() });
    let before = f.auth.revision();
    f.ok(AuthChange::Enable);
    assert!(f.auth.enabled());
    assert_eq!(f.auth.revision(), before, "enabling keeps the revision, as in etcd");
    // Locking the administrator out is refused while enabled.
    assert_eq!(
        f.apply(AuthChange::UserDelete { name: "root".into() }),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        f.apply(AuthChange::UserRevokeRole { user: "root".into(), role: ROOT_ROLE.into() }),
        Err(AuthError::InvalidAuthMgmt)
    );
    f.ok(AuthChange::Disable);
    assert!(!f.auth.enabled());
    assert_eq!(f.auth.revision(), before + 1);
    assert_eq!(f.reloaded(), f.auth, "the records hold what the mirror does");
}

#[test]
fn every_change_bumps_the_revision_and_is_persisted() {
    let mut f = Fixture::enabled();
    let r0 = f.auth.revision();
    f.ok(AuthChange::RoleAdd { name: "extra".into() });
    f.ok(AuthChange::UserGrantRole { user: "alice".into(), role: "extra".into() });
    assert_eq!(f.auth.revision(), r0 + 2);
    // Granting a role already held changes nothing.
    f.ok(AuthChange::UserGrantRole { user: "alice".into(), role: "extra".into() });
    assert_eq!(f.auth.revision(), r0 + 2);
    f.ok(AuthChange::RoleDelete { name: "extra".into() });
    assert!(!f.auth.user("alice").unwrap().roles.contains("extra"), "deleting a role revokes it");
    assert_eq!(f.reloaded(), f.auth);
    assert_eq!(
        f.apply(AuthChange::UserAdd {
            name: "alice".into(),
            password_hash: None,
            no_password: true
        }),
        Err(AuthError::UserAlreadyExist { name: "alice".into() })
    );
    assert_eq!(
        f.apply(AuthChange::UserAdd {
            name: String::new(),
            password_hash: None,
            no_password: true
        }),
        Err(AuthError::UserEmpty)
    );
    assert_eq!(f.apply(AuthChange::RoleAdd { name: String::new() }), Err(AuthError::RoleEmpty));
    assert_eq!(
        f.apply(AuthChange::UserRevokeRole { user: "alice".into(), role: "nope".into() }),
        Err(AuthError::RoleNotGranted { user: "alice".into(), role: "nope".into() })
    );
    assert_eq!(
        f.apply(AuthChange::RoleRevokePermission {
            role: "app".into(),
            key: b("zz"),
            range_end: b("")
        }),
        Err(AuthError::PermissionNotGranted { role: "app".into() })
    );
    assert_eq!(
        f.apply(AuthChange::UserGrantRole { user: "bob".into(), role: "app".into() }),
        Err(AuthError::UserNotFound { name: "bob".into() })
    );
}

#[test]
fn granting_an_existing_range_replaces_its_type() {
    let mut f = Fixture::enabled();
    f.ok(AuthChange::RoleGrantPermission {
        role: "app".into(),
        permission: Permission {
            kind: PermissionType::Read,
            key: b("/app/"),
            range_end: b("/app0"),
        },
    });
    let perms = &f.auth.role("app").unwrap().permissions;
    assert_eq!(perms.len(), 2);
    assert!(perms.iter().all(|p| p.kind == PermissionType::Read));
    let alice = f.who("alice");
    assert_eq!(f.auth.check_put(&alice, b"/app/x"), Err(AuthError::PermissionDenied));
}

#[test]
fn etcds_rules_for_keys_ranges_and_admins() {
    let f = Fixture::enabled();
    let alice = f.who("alice");
    let root = f.who("root");
    assert_eq!(f.auth.check_range(&alice, b"/app/a", b""), Ok(()));
    assert_eq!(f.auth.check_range(&alice, b"/app/", b"/app0"), Ok(()));
    assert_eq!(f.auth.check_range(&alice, b"/app/", b"\0"), Err(AuthError::PermissionDenied));
    assert_eq!(f.auth.check_range(&alice, b"cfg", b""), Ok(()));
    assert_eq!(f.auth.check_put(&alice, b"cfg"), Err(AuthError::PermissionDenied), "read only");
    assert_eq!(f.auth.check_put(&alice, b"/app/k"), Ok(()));
    assert_eq!(f.auth.check_delete(&alice, b"/app/", b"/app0"), Ok(()));
    assert_eq!(f.auth.check_range(&root, b"", b"\0"), Ok(()), "root may do everything");
    assert_eq!(f.auth.check_admin(&root), Ok(()));
    assert_eq!(f.auth.check_admin(&alice), Err(AuthError::PermissionDenied));
    let nobody = AuthInfo::anonymous();
    assert_eq!(f.auth.check_range(&nobody, b"/app/a", b""), Err(AuthError::UserEmpty));
    assert_eq!(f.auth.check_admin(&nobody), Err(AuthError::UserEmpty));
    let ghost = f.who("ghost");
    assert_eq!(f.auth.check_range(&ghost, b"/app/a", b""), Err(AuthError::PermissionDenied));
    assert_eq!(f.auth.check_admin(&ghost), Err(AuthError::UserNotFound { name: "ghost".into() }));
    let stale = AuthInfo { user: "alice".into(), revision: f.auth.revision() - 1 };
    assert!(matches!(
        f.auth.check_range(&stale, b"/app/a", b""),
        Err(AuthError::OldRevision { .. })
    ));
}

#[test]
fn a_transaction_needs_every_right_of_both_branches() {
    let f = Fixture::enabled();
    let alice = f.who("alice");
    let put = |k: &str| RequestOp::Put(PutRequest { key: b(k), ..PutRequest::default() });
    let compare = |k: &str| Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Version(1),
        key: b(k),
        range_end: Bytes::new(),
    };
    let txn = |compare: Vec<Compare>, success, failure| TxnRequest { compare, success, failure };
    assert_eq!(
        f.auth.check_txn(&alice, &txn(vec![compare("/app/a")], vec![put("/app/b")], vec![])),
        Ok(())
    );
    // The failure branch would write outside the role: refused even though
    // the success branch may be the one to run.
    let t = txn(vec![compare("/app/a")], vec![put("/app/b")], vec![put("/etc/passwd")]);
    assert_eq!(f.auth.check_txn(&alice, &t), Err(AuthError::PermissionDenied));
    // A compare reads.
    let t = txn(vec![compare("/secret")], vec![], vec![]);
    assert_eq!(f.auth.check_txn(&alice, &t), Err(AuthError::PermissionDenied));
    // Nested transactions and ranges are checked too, ranges as ranges.
    let range = |k: &str, e: &str| {
        RequestOp::Range(RangeRequest { key: b(k), range_end: b(e), ..RangeRequest::default() })
    };
    let inner = txn(vec![], vec![range("/app/", "\0")], vec![]);
    let t = txn(vec![], vec![RequestOp::Txn(inner)], vec![]);
    assert_eq!(f.auth.check_txn(&alice, &t), Err(AuthError::PermissionDenied));
    let del = RequestOp::DeleteRange(DeleteRangeRequest {
        key: b("cfg"),
        range_end: Bytes::new(),
        prev_kv: true,
    });
    assert_eq!(
        f.auth.check_txn(&alice, &txn(vec![], vec![], vec![del])),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn queries_answer_admins_and_users_about_themselves() {
    let f = Fixture::enabled();
    let alice = f.who("alice");
    let root = f.who("root");
    assert_eq!(
        f.auth.answer(&alice, &AuthQuery::UserGet { name: "alice".into() }),
        Ok(AuthReply::User { roles: vec!["app".into()] })
    );
    assert_eq!(
        f.auth.answer(&alice, &AuthQuery::UserGet { name: "root".into() }),
        Err(AuthError::PermissionDenied)
    );
    assert!(f.auth.answer(&alice, &AuthQuery::RoleGet { name: "app".into() }).is_ok());
    assert_eq!(f.auth.answer(&alice, &AuthQuery::UserList), Err(AuthError::PermissionDenied));
    assert_eq!(f.auth.answer(&alice, &AuthQuery::Status), Err(AuthError::PermissionDenied));
    assert_eq!(
        f.auth.answer(&root, &AuthQuery::UserList),
        Ok(AuthReply::Users(vec!["alice".into(), "root".into()]))
    );
    assert_eq!(
        f.auth.answer(&root, &AuthQuery::RoleList),
        Ok(AuthReply::Roles(vec!["app".into(), "root".into()]))
    );
    let Ok(AuthReply::Role { permissions }) =
        f.auth.answer(&root, &AuthQuery::RoleGet { name: "root".into() })
    else {
        panic!("root role");
    };
    assert_eq!(permissions[0].range_end, b("\0"), "the root role shows as everything");
    let Ok(AuthReply::Login(login)) =
        f.auth.answer(&AuthInfo::anonymous(), &AuthQuery::Login { name: "alice".into() })
    else {
        panic!("login");
    };
    assert_eq!(login.password_hash.as_deref(), Some("h-alice"));
    assert!(login.enabled);
}

#[test]
fn a_token_is_issued_only_for_a_password_checked_at_the_current_revision() {
    let mut f = Fixture::enabled();
    let rev = f.auth.revision();
    let issue = |checked_revision| AuthChange::IssueToken {
        user: "alice".into(),
        token: "t".into(),
        checked_revision,
    };
    assert_eq!(f.apply(issue(rev)), Ok(AuthReply::Token("t".into())));
    assert_eq!(f.auth.revision(), rev, "issuing a token changes nothing replicated");
    assert!(matches!(f.apply(issue(rev - 1)), Err(AuthError::OldRevision { .. })));
    f.ok(AuthChange::UserAdd { name: "cert".into(), password_hash: None, no_password: true });
    let rev = f.auth.revision();
    assert_eq!(
        f.apply(AuthChange::IssueToken {
            user: "cert".into(),
            token: "t".into(),
            checked_revision: rev
        }),
        Err(AuthError::AuthFailed),
        "a no-password user never gets a token"
    );
}

#[test]
fn tokens_expire_unless_used_and_are_bounded() {
    let ttl = Duration::from_secs(10);
    let mut t = TokenTable::default();
    t.issue("a".into(), "alice".into(), Duration::ZERO, ttl);
    assert_eq!(t.resolve("a", Duration::from_secs(9), ttl), Some("alice".into()));
    assert_eq!(t.resolve("a", Duration::from_secs(18), ttl), Some("alice".into()), "use renews");
    assert_eq!(t.resolve("a", Duration::from_secs(28), ttl), None);
    assert!(t.is_empty(), "an expired token is dropped on use");
    t.issue("b".into(), "bob".into(), Duration::ZERO, ttl);
    t.invalidate_user("bob");
    assert_eq!(t.resolve("b", Duration::ZERO, ttl), None);
    for i in 0..TOKENS_MAX + 10 {
        t.issue(format!("t{i}"), "u".into(), Duration::from_millis(i as u64), ttl);
    }
    assert_eq!(t.len(), TOKENS_MAX);
    assert_eq!(t.resolve("t0", Duration::ZERO, ttl), None, "the soonest to expire went first");
    t.expire(Duration::from_secs(100));
    assert!(t.is_empty());
}

/// A data shard's copy of the metadata shard's store: it travels whole,
/// replaces every record (users and roles the source lacks are gone), is
/// reloaded as installed with where it came from, and an older copy
/// arriving later changes nothing.
#[test]
fn a_copy_replaces_the_store_and_never_goes_back() {
    let source = Fixture::enabled();
    let copy = AuthSnapshot { meta_index: 7, store: source.auth.clone() };
    let bytes = ringkv_consensus::encode_to_vec(&copy);
    let copy: AuthSnapshot = ringkv_consensus::decode_exact(bytes).unwrap();
    assert!(copy.store.same_rules(&source.auth), "the copy travels whole");

    let mut target = Fixture::new();
    target.ok(AuthChange::UserAdd { name: "zed".into(), password_hash: None, no_password: true });
    target.ok(AuthChange::RoleAdd { name: "stale".into() });
    let install = |f: &mut Fixture, copy: &AuthSnapshot| {
        let auth = &mut f.auth;
        f.store.write(|b| auth.install(b, SHARD, &copy.store, copy.meta_index)).unwrap().0
    };
    assert!(install(&mut target, &copy));
    assert!(target.auth.same_rules(&source.auth));
    assert!(target.auth.user("zed").is_none() && target.auth.role("stale").is_none());
    assert_eq!(target.auth.synced_at(), 7);
    assert_eq!(target.reloaded(), target.auth, "the store holds exactly the copy");

    // An older copy (of the store before auth was enabled) is ignored.
    let older = AuthSnapshot { meta_index: 6, store: AuthStore::default() };
    assert!(!install(&mut target, &older));
    assert!(target.auth.same_rules(&source.auth) && target.auth.enabled());
    assert_eq!(target.reloaded(), target.auth);
}
