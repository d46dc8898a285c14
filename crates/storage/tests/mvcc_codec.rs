//! The command codec (Raft log payloads): every command roundtrips, every
//! strict prefix and any garbage is an error, never a panic.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_storage::mvcc::*;

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn rev() -> impl Strategy<Value = Revision> {
    any::<i64>().prop_map(Revision)
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        (bytes(), bytes(), any::<i64>(), rev()),
        (0u8..3, 0u8..5, any::<[bool; 3]>()),
        (rev(), rev(), rev(), rev()),
    )
        .prop_map(|((key, range_end, limit, revision), (o, t, f), m)| RangeRequest {
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
            serializable: f[0],
            keys_only: f[1],
            count_only: f[2],
            min_mod_revision: m.0,
            max_mod_revision: m.1,
            min_create_revision: m.2,
            max_create_revision: m.3,
        })
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (bytes(), bytes(), any::<i64>(), any::<[bool; 3]>()).prop_map(|(key, value, lease, f)| {
        PutRequest {
            key,
            value,
            lease: LeaseId(lease),
            prev_kv: f[0],
            ignore_value: f[1],
            ignore_lease: f[2],
        }
    })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (0u8..4, 0u8..5, any::<i64>(), bytes(), bytes(), bytes()).prop_map(
        |(r, t, n, v, key, range_end)| Compare {
            result: [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][r as usize],
            target: match t {
                0 => CompareTarget::Version(n),
                1 => CompareTarget::Create(Revision(n)),
                2 => CompareTarget::Mod(Revision(n)),
                3 => CompareTarget::Value(v),
                _ => CompareTarget::Lease(LeaseId(n)),
            },
            key,
            range_end,
        },
    )
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_req().prop_map(RequestOp::Range),
        put_req().prop_map(RequestOp::Put),
        delete_req().prop_map(RequestOp::DeleteRange),
    ];
    let ops = leaf.prop_recursive(3, 24, 4, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(inner.clone(), 0..4),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(compare, success, failure)| {
                RequestOp::Txn(TxnRequest { compare, success, failure })
            })
    });
    (
        prop::collection::vec(compare(), 0..4),
        prop::collection::vec(ops.clone(), 0..5),
        prop::collection::vec(ops, 0..5),
    )
        .prop_map(|(compare, success, failure)| TxnRequest { compare, success, failure })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        put_req().prop_map(Command::Put),
        delete_req().prop_map(Command::DeleteRange),
        txn_req().prop_map(Command::Txn),
        (rev(), any::<bool>()).prop_map(|(revision, physical)| {
            Command::Compaction(CompactionRequest { revision, physical })
        }),
        (any::<i64>(), any::<i64>())
            .prop_map(|(id, ttl)| Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(id), ttl })),
        any::<i64>().prop_map(|id| Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(id) })),
        prop::collection::vec((any::<i64>(), any::<i64>()), 0..4).prop_map(|v| {
            Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: v
                    .into_iter()
                    .map(|(id, remaining_ttl)| LeaseCheckpoint { id: LeaseId(id), remaining_ttl })
                    .collect(),
            })
        }),
    ]
}

proptest! {
    #[test]
    fn commands_roundtrip(cmd in command()) {
        let bytes = cmd.to_bytes();
        prop_assert_eq!(Command::from_bytes(bytes.clone()).unwrap(), cmd);
        for cut in 0..bytes.len() {
            prop_assert!(Command::from_bytes(bytes.slice(..cut)).is_err(), "prefix {} decoded", cut);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        prop_assert!(Command::from_bytes(Bytes::from(longer)).is_err(), "trailing byte accepted");
    }

    #[test]
    fn garbage_is_an_error_or_a_command_never_a_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(cmd) = Command::from_bytes(Bytes::from(raw)) {
            // Whatever decodes re-encodes to something that decodes the same.
            prop_assert_eq!(Command::from_bytes(cmd.to_bytes()).unwrap(), cmd);
        }
    }

    #[test]
    fn corrupted_commands_never_panic(cmd in command(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = cmd.to_bytes().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let _ = Command::from_bytes(Bytes::from(bytes));
    }
}

#[test]
fn a_put_is_compact() {
    let cmd = Command::Put(PutRequest {
        key: Bytes::from_static(b"12345678"),
        value: Bytes::from(vec![0; 256]),
        ..Default::default()
    });
    // format, tag, key length + key, value length + value, lease, flags
    assert_eq!(cmd.to_bytes().len(), 1 + 1 + (1 + 8) + (2 + 256) + 1 + 1);
}

#[test]
fn unknown_format_and_tags_are_refused() {
    let mut bytes = Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(1) }).to_bytes().to_vec();
    bytes[0] = 2;
    assert!(Command::from_bytes(Bytes::from(bytes.clone())).is_err(), "future format");
    bytes[0] = 1;
    bytes[1] = 7;
    assert!(Command::from_bytes(Bytes::from(bytes)).is_err(), "unknown command");
}
