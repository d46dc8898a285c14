//! The peer frame codec: every frame round-trips, every truncation and
//! every garbage input is an error, never a panic.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_consensus::codec::strategies;
use ringkv_consensus::{Entry, EntryKind, Envelope, Epoch, LogIndex, NodeId, RequestId, ShardId};
use ringkv_node::{
    EngineKind, LeaderReply, LeaderRequest, LeaseTtl, NodeMessage, PeerFrame, RemoteError,
};
use ringkv_raft::{Body, Message};
use ringkv_storage::mvcc::LeaseId;

type Frame = PeerFrame<Message>;

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(c, round, sent_tick)| {
            Body::Heartbeat { commit: LogIndex(c), round, sent_tick }
        }),
        (1u64..1000, prop::collection::vec(strategies::entry(), 0..4)).prop_map(
            |(prev, mut es)| {
                for (i, e) in es.iter_mut().enumerate() {
                    e.index = LogIndex(prev + 1 + i as u64);
                }
                Body::Append {
                    prev_index: LogIndex(prev),
                    prev_term: Epoch::term(prev),
                    entries: es,
                    commit: LogIndex(prev),
                }
            }
        ),
        Just(Body::TimeoutNow),
        any::<u64>().prop_map(|id| Body::ReadIndex { id: RequestId(id) }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope<Message>> {
    (any::<u64>(), 1u64..100, 1u64..100, any::<u64>(), body()).prop_map(
        |(shard, from, to, term, body)| Envelope {
            shard: ShardId(shard),
            from: NodeId(from),
            to: NodeId(to),
            body: Message { term: Epoch::term(term), body },
        },
    )
}

fn remote_error() -> impl Strategy<Value = RemoteError> {
    prop_oneof![
        prop::option::of(1u64..100).prop_map(|l| RemoteError::NotLeader { leader: l.map(NodeId) }),
        Just(RemoteError::TooManyRequests),
        Just(RemoteError::Stopped),
        (1u64..100, any::<u64>(), any::<u64>()).prop_map(|(id, matched, leader_index)| {
            RemoteError::LearnerNotReady { id: NodeId(id), matched, leader_index }
        }),
        (1u64..100).prop_map(|id| RemoteError::NotLearner { id: NodeId(id) }),
        (1u64..100).prop_map(|id| RemoteError::MemberNotFound { id: NodeId(id) }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(bytes, limit)| RemoteError::TooLarge { bytes, limit }),
        Just(RemoteError::Malformed),
        Just(RemoteError::Retry),
    ]
}

fn node_message() -> impl Strategy<Value = NodeMessage> {
    let request = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..32)
            .prop_map(|p| LeaderRequest::Propose(Bytes::from(p))),
        any::<i64>().prop_map(|id| LeaderRequest::LeaseKeepAlive(LeaseId(id))),
        (any::<i64>(), any::<bool>())
            .prop_map(|(id, keys)| LeaderRequest::LeaseTimeToLive { id: LeaseId(id), keys }),
        Just(LeaderRequest::LeaseLeases),
        (1u64..100, prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(m, p)| {
            LeaderRequest::MemberPromote { member: NodeId(m), proposal: Bytes::from(p) }
        }),
        prop::collection::vec(any::<u8>(), 0..32)
            .prop_map(|p| LeaderRequest::ProposeNotify(Bytes::from(p))),
    ];
    let reply = prop_oneof![
        (any::<i64>(), any::<i64>())
            .prop_map(|(id, ttl)| LeaderReply::LeaseKeepAlive { id: LeaseId(id), ttl }),
        (any::<i64>(), any::<i64>(), any::<i64>(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(id, ttl, granted_ttl, k)| {
                LeaderReply::LeaseTimeToLive(LeaseTtl {
                    id: LeaseId(id),
                    ttl,
                    granted_ttl,
                    keys: vec![Bytes::from(k)],
                })
            }),
        prop::collection::vec(any::<i64>(), 0..5)
            .prop_map(|ids| LeaderReply::LeaseLeases(ids.into_iter().map(LeaseId).collect())),
        Just(LeaderReply::Applied),
    ];
    prop_oneof![
        (any::<u64>(), any::<u64>(), request).prop_map(|(s, seq, body)| NodeMessage::Request {
            shard: ShardId(s),
            seq,
            body
        }),
        (any::<u64>(), reply).prop_map(|(seq, r)| NodeMessage::Reply { seq, result: Ok(r) }),
        (any::<u64>(), remote_error())
            .prop_map(|(seq, e)| NodeMessage::Reply { seq, result: Err(e) }),
        prop::collection::btree_set(any::<u64>(), 0..70).prop_map(|ids| NodeMessage::Alive {
            hibernated: ids.into_iter().map(ShardId).collect()
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        prop::sample::select(EngineKind::ALL.to_vec()),
        any::<u64>(),
        1u64..100,
        1u64..100,
        prop::collection::vec(envelope(), 0..4),
        prop::collection::vec(node_message(), 0..4),
    )
        .prop_map(|(engine, cluster_id, from, to, messages, node_messages)| PeerFrame {
            engine,
            cluster_id,
            from: NodeId(from),
            to: NodeId(to),
            messages,
            node_messages,
        })
}

proptest! {
    #[test]
    fn frames_roundtrip_and_truncations_fail(f in frame()) {
        let bytes = f.to_bytes();
        prop_assert_eq!(Frame::from_bytes(bytes.clone()).unwrap(), f);
        for cut in 0..bytes.len() {
            prop_assert!(Frame::from_bytes(bytes.slice(..cut)).is_err(), "prefix {} decoded", cut);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        prop_assert!(Frame::from_bytes(Bytes::from(longer)).is_err());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Frame::from_bytes(Bytes::from(bytes.clone()));
        // Also behind a valid format and engine, where decoding goes deeper.
        let mut framed = vec![2u8, 1];
        framed.extend(bytes);
        let _ = Frame::from_bytes(Bytes::from(framed));
    }

    #[test]
    fn flipped_bytes_never_panic(f in frame(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = f.to_bytes().to_vec();
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = Frame::from_bytes(Bytes::from(bytes));
        }
    }
}

#[test]
fn an_unknown_format_or_engine_is_refused() {
    let f = Frame {
        engine: EngineKind::Raft,
        cluster_id: 1,
        from: NodeId(1),
        to: NodeId(2),
        messages: vec![],
        node_messages: vec![],
    };
    let bytes = f.to_bytes();
    assert_eq!(Frame::engine_of(&bytes), Ok(EngineKind::Raft));
    for (at, value) in [(0, 1), (0, 3), (1, 0), (1, 3)] {
        let mut bad = bytes.to_vec();
        bad[at] = value;
        let bad = Bytes::from(bad);
        assert!(Frame::from_bytes(bad.clone()).is_err(), "byte {at} = {value}");
        assert!(Frame::engine_of(&bad).is_err(), "byte {at} = {value}");
    }
}

/// A Multi-Paxos frame round-trips too, and names its engine.
#[test]
fn paxos_frames_roundtrip() {
    use ringkv_paxos::{Body as PaxosBody, Message as PaxosMessage};
    let ballot = Epoch::ballot(3, NodeId(1));
    let bodies = [
        PaxosBody::Prepare { commit: LogIndex(4), transfer: false },
        PaxosBody::Accept {
            entries: vec![Entry {
                index: LogIndex(5),
                epoch: ballot,
                kind: EntryKind::Command,
                payload: Bytes::from_static(b"x"),
            }],
            commit: LogIndex(4),
        },
        PaxosBody::Heartbeat { commit: LogIndex(4), round: 2, sent_tick: 9 },
        PaxosBody::Nack,
    ];
    let frame = PeerFrame {
        engine: EngineKind::Paxos,
        cluster_id: 7,
        from: NodeId(1),
        to: NodeId(2),
        messages: bodies
            .into_iter()
            .map(|body| Envelope {
                shard: ShardId(1),
                from: NodeId(1),
                to: NodeId(2),
                body: PaxosMessage { ballot, body },
            })
            .collect(),
        node_messages: vec![NodeMessage::Removed],
    };
    let bytes = frame.to_bytes();
    assert_eq!(PeerFrame::<PaxosMessage>::from_bytes(bytes.clone()).unwrap(), frame);
    assert_eq!(PeerFrame::<PaxosMessage>::engine_of(&bytes), Ok(EngineKind::Paxos));
}
