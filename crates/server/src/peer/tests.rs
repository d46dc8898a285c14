//! Loopback tests with real sockets. No assertion depends on timing: every
//! wait is for a condition, bounded only by a generous [`WAIT`] so that a
//! bug fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::handshake::{HELLO_BYTES, Hello, REPLY_BYTES, Reply, ReplyStatus};
use super::*;
use crate::config::HttpUrl;

/// Upper bound on any wait; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(30);

const CLUSTER: ClusterId = ClusterId(0xc0ffee);

struct Node {
    id: NodeId,
    transport: PeerTransport,
    events: mpsc::UnboundedReceiver<PeerEvent>,
}

impl Node {
    async fn start(id: u64) -> Node {
        Node::start_with(id, CLUSTER, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_with(id: u64, cluster: ClusterId, listen: SocketAddr) -> Node {
        let (tx, events) = mpsc::unbounded_channel();
        let config = TransportConfig { cluster, node: NodeId(id), listen: vec![listen] };
        let transport = PeerTransport::start(config, move |event| match tx.send(event) {
            Ok(()) => Delivery::Accepted,
            Err(_) => Delivery::Dropped,
        })
        .await
        .unwrap();
        Node { id: NodeId(id), transport, events }
    }

    fn addr(&self) -> SocketAddr {
        self.transport.local_addrs()[0]
    }

    fn url(&self) -> HttpUrl {
        HttpUrl::from_socket_addr(self.addr())
    }

    fn knows(&self, other: &Node) {
        self.transport.set_peer(other.id, vec![other.url()]).unwrap();
    }

    /// The next frame, skipping unreachability reports.
    async fn next_frame(&mut self) -> (NodeId, Bytes) {
        self.wait_for(|event| match event {
            PeerEvent::Frame { from, frame } => Some((*from, frame.clone())),
            PeerEvent::Unreachable(_) => None,
        })
        .await
    }

    /// Waits for the first event `pick` accepts, discarding the others.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&PeerEvent) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let event = self.events.recv().await.expect("transport alive");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        })
        .await
        .expect("event did not arrive")
    }
}

/// Polls `condition` until it holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never happened: {what}"));
}

/// Reads until the other side closes; panics if it keeps the connection open.
async fn expect_closed(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the transport kept a connection it should have closed");
}

/// Dials `addr` with a hand-made hello and returns the stream and the reply.
async fn raw_handshake(addr: SocketAddr, hello: Hello) -> (TcpStream, Reply) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hello.encode()).await.unwrap();
    let mut reply = [0u8; REPLY_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    (stream, Reply::decode(&reply).unwrap())
}

/// Plays the accepting side of one connection by hand: reads the hello,
/// accepts it as `node`, and returns the stream and the hello.
async fn fake_accept(listener: &TcpListener, node: NodeId) -> (TcpStream, Hello) {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut hello = [0u8; HELLO_BYTES];
    stream.read_exact(&mut hello).await.unwrap();
    let hello = Hello::decode(&hello).unwrap();
    let reply = Reply { status: ReplyStatus::Accepted, cluster: CLUSTER, node };
    stream.write_all(&reply.encode()).await.unwrap();
    (stream, hello)
}

fn frame(text: String) -> Bytes {
    Bytes::from(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_transports_exchange_frames_in_order_both_ways() {
    const FRAMES: usize = 200;
    let mut nodes = vec![Node::start(1).await, Node::start(2).await, Node::start(3).await];
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                nodes[a].knows(&nodes[b]);
            }
        }
    }
    // Node 1 sends from a plain thread, as the node loop does.
    let transport = nodes[0].transport.clone();
    std::thread::spawn(move || {
        for i in 0..FRAMES {
            for to in [2, 3] {
                transport.send(NodeId(to), frame(format!("1>{to}#{i}"))).unwrap();
            }
        }
    })
    .join()
    .unwrap();
    for node in &nodes[1..] {
        for to in (1..=3).filter(|to| *to != node.id.0) {
            for i in 0..FRAMES {
                node.transport.send(NodeId(to), frame(format!("{}>{to}#{i}", node.id.0))).unwrap();
            }
        }
    }
    for node in &mut nodes {
        let mut next_index = std::collections::BTreeMap::new();
        for _ in 0..2 * FRAMES {
            let (from, frame) = node.next_frame().await;
            let index = next_index.entry(from.0).or_insert(0usize);
            assert_eq!(frame, format!("{}>{}#{}", from.0, node.id.0, index), "frames out of order");
            *index += 1;
        }
        let senders: Vec<u64> = next_index.keys().copied().collect();
        assert_eq!(senders, (1..=3).filter(|s| *s != node.id.0).collect::<Vec<_>>());
    }
    for node in &nodes {
        // A link counts a batch once its write returns, which may be after
        // the peer has read it (seen in CI: 200 of 400 counted).
        let sent = || node.transport.stats().frames_sent == 2 * FRAMES as u64;
        eventually("every frame counted as sent", sent).await;
        let stats = node.transport.stats();
        assert_eq!(stats.frames_sent, 2 * FRAMES as u64);
        assert_eq!(stats.frames_received, 2 * FRAMES as u64);
        assert_eq!(stats.frames_dropped_queue_full + stats.frames_lost_in_flight, 0);
        assert_eq!(stats.connections_established, 2, "one regular connection per peer");
    }
    let peer = nodes[0].transport.peer_stats(NodeId(2)).unwrap();
    assert!(peer.connected && !peer.bulk_connected, "bulk lane dials only once it has a frame");
    assert_eq!(peer.frames_sent, FRAMES as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_frames_travel_on_their_own_connection() {
    let mut a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    b.knows(&a);
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    a.transport.send_bulk(b.id, chunk.clone()).unwrap();
    a.transport.send(b.id, frame("small".into())).unwrap();
    let mut got = vec![b.next_frame().await.1, b.next_frame().await.1];
    got.sort_by_key(Bytes::len);
    assert_eq!(got, vec![frame("small".into()), chunk]);
    let peer = a.transport.peer_stats(b.id).unwrap();
    assert!(peer.connected && peer.bulk_connected);
    assert_eq!(a.transport.stats().connections_established, 2);

    b.transport.send_bulk(a.id, Bytes::from_static(b"back")).unwrap();
    assert_eq!(a.next_frame().await, (b.id, Bytes::from_static(b"back")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_receives_later_frames() {
    let mut a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    let b_addr = b.addr();
    a.transport.send(b.id, frame("before".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("before".into())));

    b.transport.shutdown().await;
    drop(b);
    // A notices the closed connection on its own, before writing to it.
    a.wait_for(|event| (*event == PeerEvent::Unreachable(NodeId(2))).then_some(())).await;

    let mut b = Node::start_with(2, CLUSTER, b_addr).await;
    let delivered = tokio::time::timeout(WAIT, async {
        for i in 0.. {
            // Sends may fail while A backs off; it keeps trying.
            let _ = a.transport.send(b.id, frame(format!("after#{i}")));
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(PeerEvent::Frame { from, frame }) = b.events.try_recv() {
                return (from, frame);
            }
        }
        unreachable!()
    })
    .await
    .expect("the restarted peer never received a frame");
    assert_eq!(delivered.0, a.id);
    assert!(delivered.1.starts_with(b"after#"), "{:?}", delivered.1);
    assert!(a.transport.stats().connections_established >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_disconnected_and_other_peers_are_still_served() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    a.transport.send(b.id, frame("first".into())).unwrap();
    assert_eq!(b.next_frame().await.1, frame("first".into()));

    let mut stranger = TcpStream::connect(b.addr()).await.unwrap();
    stranger.write_all(b"GET / HTTP/1.1\r\nHost: ringkv\r\n\r\n").await.unwrap();
    expect_closed(&mut stranger).await;
    eventually("garbage counted", || b.transport.stats().protocol_errors == 1).await;

    // A short hello that then hangs up is a protocol error too.
    let mut truncated = TcpStream::connect(b.addr()).await.unwrap();
    truncated.write_all(b"RKVP").await.unwrap();
    truncated.shutdown().await.unwrap();
    expect_closed(&mut truncated).await;
    eventually("truncated hello counted", || b.transport.stats().protocol_errors == 2).await;

    a.transport.send(b.id, frame("second".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("second".into())));
    assert_eq!(a.transport.stats().connections_established, 1, "A's connection was untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_disconnected_and_other_peers_are_still_served() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    let hello = Hello { lane: Lane::Regular, cluster: CLUSTER, from: NodeId(3), to: b.id };
    let (mut raw, reply) = raw_handshake(b.addr(), hello).await;
    assert_eq!(reply, Reply { status: ReplyStatus::Accepted, cluster: CLUSTER, node: b.id });

    // One good frame, then a length prefix one byte over the limit.
    raw.write_all(&[0, 0, 0, 2, b'o', b'k']).await.unwrap();
    let too_long = u32::try_from(FRAME_BYTES_MAX + 1).unwrap();
    raw.write_all(&too_long.to_be_bytes()).await.unwrap();
    raw.write_all(&[0u8; 1024]).await.unwrap();
    assert_eq!(b.next_frame().await, (NodeId(3), Bytes::from_static(b"ok")));
    expect_closed(&mut raw).await;
    eventually("oversize frame counted", || b.transport.stats().protocol_errors == 1).await;

    a.transport.send(b.id, frame("still here".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("still here".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_exactly_the_maximum_size_is_delivered() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    let largest = Bytes::from(vec![1u8; FRAME_BYTES_MAX]);
    a.transport.send_bulk(b.id, largest.clone()).unwrap();
    assert_eq!(b.next_frame().await, (a.id, largest));
    let over = Bytes::from(vec![1u8; FRAME_BYTES_MAX + 1]);
    assert_eq!(
        a.transport.send(b.id, over),
        Err(SendError::FrameTooLarge {
            to: b.id,
            bytes: FRAME_BYTES_MAX + 1,
            max: FRAME_BYTES_MAX
        })
    );
    assert_eq!(a.transport.stats().frames_dropped_too_large, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cluster_is_refused_on_both_sides() {
    let mut a = Node::start_with(1, ClusterId(1), "127.0.0.1:0".parse().unwrap()).await;
    let b = Node::start_with(2, ClusterId(2), "127.0.0.1:0".parse().unwrap()).await;
    a.knows(&b);
    a.transport.send(b.id, frame("lost".into())).unwrap();
    a.wait_for(|event| (*event == PeerEvent::Unreachable(b.id)).then_some(())).await;
    assert!(a.transport.stats().dials_refused >= 1);
    assert!(b.transport.stats().inbound_refused >= 1);
    assert_eq!(b.transport.stats().inbound_accepted, 0);
    assert_eq!(b.transport.stats().frames_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_naming_the_wrong_node_or_version_are_refused() {
    let b = Node::start(2).await;
    let good = Hello { lane: Lane::Regular, cluster: CLUSTER, from: NodeId(1), to: b.id };
    let cases = [
        (Hello { cluster: ClusterId(9), ..good }, ReplyStatus::ClusterMismatch),
        (Hello { to: NodeId(5), ..good }, ReplyStatus::WrongNode),
        (Hello { from: NodeId(0), ..good }, ReplyStatus::InvalidSender),
        (Hello { from: b.id, ..good }, ReplyStatus::InvalidSender),
    ];
    for (hello, expected) in cases {
        let (mut raw, reply) = raw_handshake(b.addr(), hello).await;
        assert_eq!(reply.status, expected, "{hello:?}");
        assert_eq!((reply.cluster, reply.node), (CLUSTER, b.id));
        expect_closed(&mut raw).await;
    }
    let mut future_version = good.encode();
    future_version[5] = 2;
    let mut raw = TcpStream::connect(b.addr()).await.unwrap();
    raw.write_all(&future_version).await.unwrap();
    let mut reply = [0u8; REPLY_BYTES];
    raw.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[6], 1, "status byte: unsupported version");
    expect_closed(&mut raw).await;
    eventually("refusals counted", || b.transport.stats().inbound_refused == 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_blocks_neither_the_caller_nor_other_peers() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    let stuck_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck = NodeId(9);
    a.transport
        .set_peer(stuck, vec![HttpUrl::from_socket_addr(stuck_listener.local_addr().unwrap())])
        .unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        let (stream, _) = fake_accept(&stuck_listener, stuck).await;
        let _ = released.await; // holds the connection open without reading
        drop(stream);
    });

    // Fill everything between A and the stuck peer (socket buffers, then the
    // queue) from a plain thread: every send returns at once, and the first
    // refusal is the queue saying it is full.
    let transport = a.transport.clone();
    let sender = std::thread::spawn(move || {
        let chunk = Bytes::from(vec![0u8; 64 * 1024]);
        for sent in 0..1_000_000u64 {
            match transport.send(stuck, chunk.clone()) {
                Ok(()) => {}
                Err(SendError::QueueFull { to, lane: Lane::Regular }) if to == stuck => {
                    return sent;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        panic!("the queue to a peer that never reads never filled");
    });
    let accepted = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || sender.join()))
        .await
        .expect("send blocked")
        .unwrap()
        .unwrap();
    assert!(accepted >= 1, "at least the first frame fits");
    let stats = a.transport.stats();
    assert_eq!(stats.frames_dropped_queue_full, 1);
    assert_eq!(a.transport.peer_stats(stuck).unwrap().frames_dropped, 1);

    a.transport.send(b.id, frame("unaffected".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("unaffected".into())));

    release.send(()).unwrap();
    holder.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_bulk_lane_does_not_hold_up_regular_frames() {
    let a = Node::start(1).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = NodeId(9);
    a.transport
        .set_peer(fake, vec![HttpUrl::from_socket_addr(listener.local_addr().unwrap())])
        .unwrap();

    // Fill the bulk lane; its connection is accepted but never read.
    a.transport.send_bulk(fake, Bytes::from(vec![0u8; 1024 * 1024])).unwrap();
    let (bulk_stream, hello) = fake_accept(&listener, fake).await;
    assert_eq!(hello.lane, Lane::Bulk);
    let chunk = Bytes::from(vec![0u8; 1024 * 1024]);
    tokio::time::timeout(WAIT, async {
        while a.transport.send_bulk(fake, chunk.clone()).is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("bulk lane never filled");

    a.transport.send(fake, frame("vote".into())).unwrap();
    let (regular_stream, hello) = fake_accept(&listener, fake).await;
    assert_eq!(hello.lane, Lane::Regular);
    let mut frames = FramedRead::new(regular_stream, LengthDelimitedCodec::new());
    let got = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut frames))
        .await
        .expect("regular frame held up by the bulk lane")
        .unwrap()
        .unwrap();
    assert_eq!(got, "vote");
    drop(bulk_stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_reported_again_and_again() {
    let mut a = Node::start(1).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    a.transport.set_peer(NodeId(2), vec![HttpUrl::from_socket_addr(closed)]).unwrap();
    a.transport.send(NodeId(2), frame("nobody home".into())).unwrap();
    for _ in 0..2 {
        a.wait_for(|event| (*event == PeerEvent::Unreachable(NodeId(2))).then_some(())).await;
    }
    assert!(a.transport.stats().dial_failures >= 2);
    assert!(!a.transport.peer_stats(NodeId(2)).unwrap().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_several_urls_is_reached_through_the_live_one() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        HttpUrl::from_socket_addr(listener.local_addr().unwrap())
    };
    a.transport.set_peer(b.id, vec![dead, b.url()]).unwrap();
    a.transport.send(b.id, frame("via the second url".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("via the second url".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_book_can_change_at_runtime() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    assert_eq!(a.transport.send(b.id, frame("x".into())), Err(SendError::UnknownPeer { to: b.id }));
    assert_eq!(a.transport.stats().frames_dropped_unknown_peer, 1);

    assert!(matches!(
        a.transport.set_peer(a.id, vec![b.url()]),
        Err(TransportError::SelfAsPeer { .. })
    ));
    assert!(matches!(
        a.transport.set_peer(NodeId(0), vec![b.url()]),
        Err(TransportError::InvalidNodeId { .. })
    ));
    assert!(matches!(a.transport.set_peer(b.id, vec![]), Err(TransportError::NoPeerUrls { .. })));

    a.knows(&b);
    a.knows(&b); // the same URLs again: no change, no new connection
    assert_eq!(a.transport.peers(), vec![(b.id, vec![b.url()])]);
    a.transport.send(b.id, frame("added".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("added".into())));
    assert_eq!(a.transport.stats().connections_established, 1);

    assert!(a.transport.remove_peer(b.id));
    assert!(!a.transport.remove_peer(b.id));
    assert!(a.transport.peers().is_empty());
    assert!(a.transport.peer_stats(b.id).is_none());
    assert_eq!(a.transport.send(b.id, frame("x".into())), Err(SendError::UnknownPeer { to: b.id }));

    a.knows(&b);
    a.transport.send(b.id, frame("back".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("back".into())));

    a.transport.shutdown().await;
    assert!(matches!(
        a.transport.set_peer(NodeId(3), vec![b.url()]),
        Err(TransportError::ShutDown)
    ));
    assert_eq!(a.transport.send(b.id, frame("late".into())), Err(SendError::ShutDown { to: b.id }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_bad_configurations() {
    let sink = |_: PeerEvent| Delivery::Accepted;
    let listen = vec!["127.0.0.1:0".parse().unwrap()];
    let zero = TransportConfig { cluster: CLUSTER, node: NodeId(0), listen: listen.clone() };
    assert!(matches!(
        PeerTransport::start(zero, sink).await,
        Err(TransportError::InvalidNodeId { .. })
    ));
    let none = TransportConfig { cluster: CLUSTER, node: NodeId(1), listen: vec![] };
    assert!(matches!(PeerTransport::start(none, sink).await, Err(TransportError::NoListenAddr)));

    let taken = Node::start(1).await;
    let clash = TransportConfig { cluster: CLUSTER, node: NodeId(2), listen: vec![taken.addr()] };
    let error = PeerTransport::start(clash, sink).await.unwrap_err();
    assert!(matches!(error, TransportError::Bind { addr, .. } if addr == taken.addr()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_while_dialing_leave_in_one_write() {
    const FRAMES: usize = 100;
    let a = Node::start(1).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = NodeId(9);
    a.transport
        .set_peer(fake, vec![HttpUrl::from_socket_addr(listener.local_addr().unwrap())])
        .unwrap();
    // All queued before the handshake can complete: the reply below is sent
    // only after the last send returned.
    for i in 0..FRAMES {
        a.transport.send(fake, frame(format!("#{i}"))).unwrap();
    }
    let (stream, _) = fake_accept(&listener, fake).await;
    let mut frames = FramedRead::new(stream, LengthDelimitedCodec::new());
    for i in 0..FRAMES {
        let got = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut frames))
            .await
            .expect("frame did not arrive")
            .unwrap()
            .unwrap();
        assert_eq!(got, format!("#{i}").as_bytes());
    }
    eventually("all frames counted", || a.transport.stats().frames_sent == FRAMES as u64).await;
    assert_eq!(a.transport.stats().batches_sent, 1, "one flush for everything queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reconnecting_replaces_its_previous_connection() {
    let mut b = Node::start(2).await;
    let hello = Hello { lane: Lane::Regular, cluster: CLUSTER, from: NodeId(1), to: b.id };
    let (mut old, _) = raw_handshake(b.addr(), hello).await;
    eventually("first connection accepted", || b.transport.stats().inbound_accepted == 1).await;
    let (mut new, _) = raw_handshake(b.addr(), hello).await;
    expect_closed(&mut old).await;
    // The other lane is a separate connection and is left alone.
    let bulk = Hello { lane: Lane::Bulk, ..hello };
    let (mut bulk_stream, _) = raw_handshake(b.addr(), bulk).await;
    new.write_all(&[0, 0, 0, 3, b'n', b'e', b'w']).await.unwrap();
    assert_eq!(b.next_frame().await, (NodeId(1), Bytes::from_static(b"new")));
    bulk_stream.write_all(&[0, 0, 0, 4, b'b', b'u', b'l', b'k']).await.unwrap();
    assert_eq!(b.next_frame().await, (NodeId(1), Bytes::from_static(b"bulk")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_served_over_http_on_the_peer_port() {
    use super::members::{self, MemberInfo};
    let b = Node::start(2).await;
    let url: crate::config::HttpUrl = format!("http://{}", b.addr()).parse().unwrap();
    // Before the server provides the list: not an answer to use.
    assert!(members::fetch(&url).await.is_err());
    let listed = MemberInfo {
        id: format!("{:016x}", 7),
        name: "n7".into(),
        peer_urls: vec!["http://127.0.0.1:1".into()],
        client_urls: vec![],
        is_learner: true,
    };
    let served = listed.clone();
    b.transport.serve_members(std::sync::Arc::new(move || vec![served.clone()]));
    let got = members::fetch(&url).await.unwrap();
    assert_eq!(got, [listed]);
    assert_eq!(got[0].id(), Some(7));
    assert_eq!(b.transport.stats().protocol_errors, 0, "a /members request is not garbage");
}

/// A member's peer URLs changing (etcdctl `member update`) must not lose
/// what was queued for it: the node layer does not send a forwarded
/// proposal twice, so a dropped frame left its client waiting until the
/// request's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_before_the_urls_change_are_still_delivered() {
    let a = Node::start(1).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = NodeId(9);
    let url = HttpUrl::from_socket_addr(listener.local_addr().unwrap());
    a.transport.set_peer(fake, vec![url.clone()]).unwrap();
    // Queued while the first dial waits for its handshake reply (sent
    // below only after the URLs changed).
    a.transport.send(fake, frame("before".into())).unwrap();
    let other = {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        HttpUrl::from_socket_addr(unused.local_addr().unwrap())
    };
    a.transport.set_peer(fake, vec![url.clone(), other.clone()]).unwrap();
    assert_eq!(a.transport.peers(), vec![(fake, vec![url, other])]);
    a.transport.send(fake, frame("after".into())).unwrap();
    let (stream, _) = fake_accept(&listener, fake).await;
    let mut frames = FramedRead::new(stream, LengthDelimitedCodec::new());
    for expected in ["before", "after"] {
        let got = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut frames))
            .await
            .expect("frame did not arrive")
            .expect("the connection stays open")
            .unwrap();
        assert_eq!(got, expected.as_bytes());
    }
}

/// A connection to the peer (whose identity the handshake checked) goes on
/// when its URLs change; the new URLs are dialed when it is next needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_survives_a_change_of_urls() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    a.knows(&b);
    a.transport.send(b.id, frame("one".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("one".into())));
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        HttpUrl::from_socket_addr(listener.local_addr().unwrap())
    };
    a.transport.set_peer(b.id, vec![dead, b.url()]).unwrap();
    a.transport.send(b.id, frame("two".into())).unwrap();
    assert_eq!(b.next_frame().await, (a.id, frame("two".into())));
    assert_eq!(a.transport.stats().connections_established, 1);
    assert_eq!(a.transport.stats().dial_failures, 0);
}
