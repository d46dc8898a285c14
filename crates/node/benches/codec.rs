//! The node's codecs on the put path: a client put encoded as a log entry's
//! payload ([`Proposal`]) and decoded again when it applies, and the
//! [`PeerFrame`] a leader sends each follower per round, carrying one
//! append of a round's entries.
//!
//! ```text
//! cargo bench -p ringkv-node --bench codec
//! ```
//!
//! Keys of 8 bytes and values of 256 bytes, as in `scripts/bench-vs-etcd`;
//! frames of 1, 16 and 256 entries (a round's worth at 1, 16 and 256
//! clients).

// Setup in a benchmark may unwrap.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_consensus::{Entry, EntryKind, Envelope, Epoch, LogIndex, NodeId, ShardId};
use ringkv_node::{EngineKind, PeerFrame, Proposal, ProposalBody, ProposalId};
use ringkv_raft::{Body, Message};
use ringkv_storage::mvcc::{Command, LeaseId, PutRequest};

/// Key bytes, as the comparison with etcd uses.
const KEY_BYTES: usize = 8;
/// Value bytes, as the comparison with etcd uses.
const VALUE_BYTES: usize = 256;
/// Entries per append frame measured.
const ENTRIES_PER_FRAME: [usize; 3] = [1, 16, 256];

fn put_proposal(seq: u64) -> Proposal {
    Proposal {
        id: Some(ProposalId { node: NodeId(1), seq }),
        auth: None,
        body: ProposalBody::Kv(Command::Put(PutRequest {
            key: Bytes::from(format!("{seq:0KEY_BYTES$}")),
            value: Bytes::from(vec![b'v'; VALUE_BYTES]),
            lease: LeaseId::NONE,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        })),
    }
}

fn append_frame(entries: usize) -> PeerFrame<Message> {
    let entries: Vec<Entry> = (1..=entries as u64)
        .map(|i| Entry {
            index: LogIndex(1_000 + i),
            epoch: Epoch::term(3),
            kind: EntryKind::Command,
            payload: put_proposal(i).to_bytes(),
        })
        .collect();
    let body = Message {
        term: Epoch::term(3),
        body: Body::Append {
            prev_index: LogIndex(1_000),
            prev_term: Epoch::term(3),
            entries,
            commit: LogIndex(1_000),
        },
    };
    PeerFrame {
        engine: EngineKind::Raft,
        cluster_id: 0x5eed,
        from: NodeId(1),
        to: NodeId(2),
        messages: vec![Envelope { shard: ShardId(1), from: NodeId(1), to: NodeId(2), body }],
        node_messages: Vec::new(),
    }
}

fn proposal(c: &mut Criterion) {
    let mut g = c.benchmark_group("proposal");
    g.throughput(Throughput::Elements(1));
    let p = put_proposal(42);
    g.bench_function("encode_put", |b| b.iter(|| black_box(&p).to_bytes()));
    let bytes = p.to_bytes();
    g.bench_function("decode_put", |b| {
        b.iter(|| Proposal::from_bytes(black_box(bytes.clone())).unwrap());
    });
    g.finish();
}

fn frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_frame");
    for n in ENTRIES_PER_FRAME {
        let f = append_frame(n);
        let bytes = f.to_bytes();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode", n), &f, |b, f| b.iter(|| f.to_bytes()));
        g.bench_with_input(BenchmarkId::new("decode", n), &bytes, |b, bytes| {
            b.iter(|| PeerFrame::<Message>::from_bytes(bytes.clone()).unwrap());
        });
    }
    g.finish();
}

criterion_group!(benches, proposal, frame);
criterion_main!(benches);
