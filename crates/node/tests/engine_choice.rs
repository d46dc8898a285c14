//! One engine per data directory: the first open records it, a later open
//! with another engine is refused before anything is read or written, and
//! the record can be read without opening the node.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::NodeId;
use ringkv_node::testing::test_config;
use ringkv_node::{
    Clock, Engine, EngineKind, Node, NodeError, PaxosEngine, PeerFrame, RaftEngine, Transport,
    Unreachable, stored_engine,
};
use ringkv_storage::SimDisk;
use ringkv_storage::disk::CrashMode;
use ringkv_storage::mvcc::{MvccStore, StoreOptions};

/// A network that drops everything: a one-member cluster needs none.
struct Nowhere;

impl Transport for Nowhere {
    fn send(&mut self, to: NodeId, _frame: Bytes) -> Result<(), Unreachable> {
        Err(Unreachable { to })
    }
}

struct Frozen;

impl Clock for Frozen {
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

fn open<E: Engine>(disk: &SimDisk) -> Result<Node<E, SimDisk, Nowhere, Frozen>, NodeError> {
    Node::open(test_config(1, 1, 7), disk.clone(), Nowhere, Frozen)
}

/// Opens with `E`, then stops the node as a crash would.
fn create_with<E: Engine>(disk: &SimDisk) {
    let node = open::<E>(disk).unwrap();
    drop(node);
    disk.crash_with(CrashMode::LoseUnsynced);
}

fn refuses_another_engine<E: Engine, Other: Engine>() {
    let disk = SimDisk::new(1);
    assert_eq!(stored_engine(&disk, StoreOptions::default()).unwrap(), None, "a fresh disk");
    create_with::<E>(&disk);
    assert_eq!(stored_engine(&disk, StoreOptions::default()).unwrap(), Some(E::KIND));
    disk.crash_with(CrashMode::LoseUnsynced);

    let err = open::<Other>(&disk).unwrap_err();
    match &err {
        NodeError::EngineMismatch { stored, configured } => {
            assert_eq!(stored, E::NAME);
            assert_eq!(*configured, Other::KIND);
        }
        other => panic!("expected an engine mismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&format!("--engine {}", E::NAME)), "{message}");
    disk.crash_with(CrashMode::LoseUnsynced);

    // The refusal changed nothing: the right engine still opens it.
    create_with::<E>(&disk);
    assert_eq!(stored_engine(&disk, StoreOptions::default()).unwrap(), Some(E::KIND));
}

#[test]
fn a_raft_data_directory_refuses_paxos() {
    refuses_another_engine::<RaftEngine, PaxosEngine>();
}

#[test]
fn a_paxos_data_directory_refuses_raft() {
    refuses_another_engine::<PaxosEngine, RaftEngine>();
}

/// Data directories from before the engine was recorded hold a member id
/// and no engine record: they were Raft's.
#[test]
fn a_data_directory_without_the_record_is_raft() {
    let disk = SimDisk::new(2);
    create_with::<RaftEngine>(&disk);
    let store =
        MvccStore::open_on(&disk, ringkv_node::STORE_FILE, StoreOptions::default()).unwrap();
    store.set_node_record("engine", None).unwrap();
    drop(store);
    disk.crash_with(CrashMode::LoseUnsynced);
    assert_eq!(stored_engine(&disk, StoreOptions::default()).unwrap(), Some(EngineKind::Raft));
    disk.crash_with(CrashMode::LoseUnsynced);
    assert!(matches!(open::<PaxosEngine>(&disk), Err(NodeError::EngineMismatch { .. })));
    disk.crash_with(CrashMode::LoseUnsynced);
    create_with::<RaftEngine>(&disk);
}

/// A frame from a node of another engine is refused before its messages
/// are decoded: a Raft message could decode as a Paxos one with another
/// meaning.
#[test]
fn frames_of_another_engine_are_refused() {
    let disk = SimDisk::new(3);
    let mut node = open::<PaxosEngine>(&disk).unwrap();
    let frame: PeerFrame<ringkv_raft::Message> = PeerFrame {
        engine: EngineKind::Raft,
        cluster_id: 0,
        from: NodeId(77),
        to: node.id(),
        messages: vec![],
        node_messages: vec![],
    };
    let err = node.receive(frame.to_bytes()).unwrap_err();
    assert!(matches!(err, NodeError::FrameRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("another consensus engine"), "{err}");
    assert_eq!(node.frames_dropped(), 1);
    // The same frame from a Paxos node is taken.
    let frame: PeerFrame<ringkv_paxos::Message> = PeerFrame {
        engine: EngineKind::Paxos,
        cluster_id: 0,
        from: NodeId(77),
        to: node.id(),
        messages: vec![],
        node_messages: vec![],
    };
    node.receive(frame.to_bytes()).unwrap();
    assert_eq!(node.frames_dropped(), 1);
}
