//! Commit throughput of a three-replica Multi-Paxos cluster in memory, no
//! I/O: the leader proposes batches of 256-byte commands and the cluster
//! runs until the batch is committed and applied everywhere. Reports
//! entries committed per second (criterion's throughput) and heap
//! allocations per committed entry (a counting global allocator). The
//! setup mirrors `ringkv-raft`'s benchmark so the two compare directly.
//!
//! `cargo bench -p ringkv-paxos --bench throughput`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_consensus::{
    Config, Envelope, LogIndex, LogStorage, Membership, MemoryLog, NodeId, Replica, Role, ShardId,
};
use ringkv_paxos::{Message, Paxos, PaxosOptions};

/// Counts every allocation, to report allocations per entry.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// A global allocator must be `unsafe`: it only forwards to the system
// allocator and counts, so it upholds GlobalAlloc's contract exactly as
// `System` does.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Bytes per proposed command.
const COMMAND_BYTES: usize = 256;
/// Batches between log compactions (keeps memory flat).
const COMPACT_EVERY_BATCHES: u64 = 16;

struct Cluster {
    nodes: Vec<Paxos<MemoryLog>>,
    network: VecDeque<Envelope<Message>>,
    applied: Vec<LogIndex>,
    command: Bytes,
    batches: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
        let nodes = (1..=3)
            .map(|id| {
                let mut cfg = Config::new(NodeId(id), ShardId(1));
                cfg.max_inflight_messages = 64;
                cfg.max_message_bytes = 4 << 20;
                cfg.max_committed_bytes_per_ready = 64 << 20;
                cfg.max_uncommitted_bytes = 256 << 20;
                Paxos::new(PaxosOptions::new(cfg), MemoryLog::new(voters.clone()))
                    .expect("valid configuration")
            })
            .collect();
        let mut c = Cluster {
            nodes,
            network: VecDeque::new(),
            applied: vec![LogIndex::ZERO; 3],
            command: Bytes::from(vec![7u8; COMMAND_BYTES]),
            batches: 0,
        };
        c.nodes[0].campaign();
        c.run();
        assert_eq!(c.nodes[0].role(), Role::Leader, "node 1 leads");
        c
    }

    /// Handles every Ready and delivers every message until quiet.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let node = &mut self.nodes[i];
                while let Some(rd) = node.ready() {
                    moved = true;
                    self.network.extend(rd.messages);
                    let storage = node.storage_mut();
                    if let Some(s) = rd.snapshot {
                        storage.install_snapshot(s);
                    }
                    storage.append(&rd.entries);
                    if let Some(h) = rd.hard_state {
                        storage.set_hard_state(h);
                    }
                    node.on_persisted(rd.number);
                    self.network.extend(rd.after_persist);
                    if let Some(last) = rd.committed.last() {
                        self.applied[i] = last.index;
                        node.on_applied(last.index);
                    }
                    black_box(&rd.committed);
                }
            }
            while let Some(m) = self.network.pop_front() {
                moved = true;
                let to = (m.to.0 - 1) as usize;
                self.nodes[to].step(m).expect("well-formed message");
            }
            if !moved {
                return;
            }
        }
    }

    /// Proposes `n` commands and runs until they are applied everywhere.
    fn commit_batch(&mut self, n: usize) {
        let mut last = LogIndex::ZERO;
        for _ in 0..n {
            last = self.nodes[0].propose(self.command.clone()).expect("leader accepts").index;
        }
        self.run();
        assert!(self.applied.iter().all(|&a| a >= last), "batch applied everywhere");
        self.batches += 1;
        if self.batches.is_multiple_of(COMPACT_EVERY_BATCHES) {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let at = self.applied[i];
                let membership = node.membership_at(at).expect("membership known");
                if at > node.storage().snapshot_meta().index {
                    node.storage_mut().compact(at, membership, Bytes::new()).expect("compactable");
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("paxos_commit");
    for batch in [64usize, 256, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("3_replicas_batch_{batch}"), |b| {
            let mut cluster = Cluster::new();
            b.iter_batched(|| (), |()| cluster.commit_batch(batch), BatchSize::SmallInput);
        });
    }
    group.finish();

    // Allocations per committed entry, measured outside criterion.
    for batch in [64usize, 256, 1024] {
        let mut cluster = Cluster::new();
        for _ in 0..8 {
            cluster.commit_batch(batch);
        }
        let rounds = 64u64;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..rounds {
            cluster.commit_batch(batch);
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        #[allow(clippy::print_stdout)]
        {
            println!(
                "paxos_commit/3_replicas_batch_{batch}: {:.2} allocations per committed entry (whole cluster)",
                allocations as f64 / (rounds * batch as u64) as f64
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
