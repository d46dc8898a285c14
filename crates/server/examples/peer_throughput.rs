//! Frames per second and round-trip latency between two peer transports on
//! loopback. A measurement, not a test: `cargo run --release -p
//! ringkv-server --example peer_throughput`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_consensus::NodeId;
use ringkv_server::config::HttpUrl;
use ringkv_server::peer::{
    ClusterId, Delivery, PeerEvent, PeerTransport, SendError, TransportConfig,
};

const CLUSTER: ClusterId = ClusterId(1);

async fn transport(
    node: u64,
    sink: impl Fn(PeerEvent) -> Delivery + Send + Sync + 'static,
) -> PeerTransport {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = TransportConfig { cluster: CLUSTER, node: NodeId(node), listen: vec![listen] };
    PeerTransport::start(config, sink).await.unwrap()
}

/// Sends `count` frames of `size` bytes from a plain thread (as the node
/// loop does), retrying when the queue is full, and waits until all arrived.
async fn throughput(size: usize, count: u64) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let b = transport(2, move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        Delivery::Accepted
    })
    .await;
    let a = transport(1, |_| Delivery::Accepted).await;
    a.set_peer(NodeId(2), vec![HttpUrl::from_socket_addr(b.local_addrs()[0])]).unwrap();
    let frame = Bytes::from(vec![0xa5u8; size]);
    let start = Instant::now();
    let sender = a.clone();
    let full = std::thread::spawn(move || {
        let mut full = 0u64;
        for _ in 0..count {
            loop {
                match sender.send(NodeId(2), frame.clone()) {
                    Ok(()) => break,
                    Err(SendError::QueueFull { .. }) => {
                        full += 1;
                        std::thread::yield_now();
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }
        full
    })
    .join()
    .unwrap();
    while received.load(Ordering::Relaxed) < count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = a.stats();
    println!(
        "{size:>7} B frames: {:>10.0} frames/s {:>8.1} MiB/s  ({count} frames, {:.0} frames per flush, {full} queue-full retries)",
        count as f64 / elapsed,
        (count as f64 * size as f64) / elapsed / (1024.0 * 1024.0),
        stats.frames_sent as f64 / stats.batches_sent.max(1) as f64,
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// One frame A -> B -> A at a time: the transport's latency floor.
async fn round_trips(count: u32) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let a = transport(1, move |event| {
        let _ = tx.send(event);
        Delivery::Accepted
    })
    .await;
    let b_handle: Arc<OnceLock<PeerTransport>> = Arc::new(OnceLock::new());
    let echo = Arc::clone(&b_handle);
    let b = transport(2, move |event| {
        if let (PeerEvent::Frame { from, frame }, Some(b)) = (event, echo.get()) {
            let _ = b.send(from, frame);
        }
        Delivery::Accepted
    })
    .await;
    b_handle.set(b.clone()).unwrap();
    a.set_peer(NodeId(2), vec![HttpUrl::from_socket_addr(b.local_addrs()[0])]).unwrap();
    b.set_peer(NodeId(1), vec![HttpUrl::from_socket_addr(a.local_addrs()[0])]).unwrap();
    let mut samples = Vec::with_capacity(count as usize);
    let ping = Bytes::from_static(b"ping");
    for _ in 0..count {
        let start = Instant::now();
        a.send(NodeId(2), ping.clone()).unwrap();
        while !matches!(rx.recv().await, Some(PeerEvent::Frame { .. })) {}
        samples.push(start.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "round trip, 4 B frame: p50 {:?}  p99 {:?}  max {:?}  ({count} round trips, first one includes both dials)",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    throughput(64, 1_000_000).await;
    throughput(1024, 500_000).await;
    throughput(64 * 1024, 20_000).await;
    throughput(1024 * 1024, 1_000).await;
    round_trips(10_000).await;
}
