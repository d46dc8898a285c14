//! [`PeerFrame`]: everything one node sends another in one round.
//!
//! A frame batches, for one destination, every engine message of every
//! shard ([`Envelope`]s of the engine's own message type) and the node
//! layer's own messages ([`NodeMessage`]: requests only a shard's leader
//! can serve, forwarded by the node that took them, and the leader's
//! replies). The node sends at most two frames per peer per round: what
//! may leave before the round's WAL fsync, then what had to wait for it.
//!
//! The server's TCP transport only moves encoded frames (length-delimited);
//! decoding is here, refuses garbage with an error and never panics, and
//! allocates no more than the input could describe.
//!
//! ```text
//! frame := format u8 (2) | engine u8 (1 raft, 2 paxos) | cluster id varint
//!          | from varint | to varint
//!          | count varint, envelope*  (the engine's Wire encoding)
//!          | count varint, node message*
//! ```
//!
//! The engine comes first so that a node refuses a frame of another
//! engine's cluster before decoding its messages: the two engines' messages
//! share an encoding style, and one could decode as the other with another
//! meaning.

use bytes::Bytes;
use ringkv_consensus::codec::{CodecError, Decoder, Wire, put_i64, put_varint};
use ringkv_consensus::{Envelope, NodeId, ShardId, decode_exact, encode_to_vec};
use ringkv_storage::mvcc::LeaseId;

use crate::engine::EngineKind;
use crate::error::RemoteError;

/// Format of encoded frames (2: the engine follows the format byte).
const FRAME_FORMAT: u8 = 2;

/// What one node sends another in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFrame<M> {
    /// The consensus engine the sender runs (the cluster's); a node refuses
    /// a frame of another engine.
    pub engine: EngineKind,
    /// The sender's cluster (0 while a joining node has not learned it);
    /// a frame from another cluster is refused.
    pub cluster_id: u64,
    /// The sending node.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// Engine messages, of any shards both nodes host.
    pub messages: Vec<Envelope<M>>,
    /// Node-layer messages.
    pub node_messages: Vec<NodeMessage>,
}

impl<M: Wire> PeerFrame<M> {
    /// The encoded frame, as the transport carries it.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(encode_to_vec(self))
    }

    /// Decodes a frame the transport delivered.
    ///
    /// # Errors
    /// The bytes are not exactly one well-formed frame.
    pub fn from_bytes(bytes: Bytes) -> Result<PeerFrame<M>, CodecError> {
        decode_exact(bytes)
    }

    /// The engine an encoded frame says its sender runs, read without
    /// decoding the rest.
    ///
    /// # Errors
    /// The frame is too short, of another format, or names no engine.
    pub fn engine_of(bytes: &Bytes) -> Result<EngineKind, CodecError> {
        let mut d = Decoder::new(bytes.clone());
        decode_format(&mut d)?;
        EngineKind::decode(&mut d)
    }

    /// Whether the frame carries nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.node_messages.is_empty()
    }
}

/// A node-layer message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMessage {
    /// A request only the shard's leader serves, forwarded by the node that
    /// took it from a client.
    Request {
        /// The shard.
        shard: ShardId,
        /// The forwarding node's number for the request, echoed in the reply.
        seq: u64,
        /// What to do.
        body: LeaderRequest,
    },
    /// The sender's member table says the receiver was removed from the
    /// cluster: it must stop (its frames are dropped from now on).
    Removed,
    /// The leader's answer to a [`NodeMessage::Request`].
    Reply {
        /// The request's number.
        seq: u64,
        /// The answer. A forwarded proposal that was accepted gets no reply:
        /// the forwarding node answers its client when it applies the entry.
        result: Result<LeaderReply, RemoteError>,
    },
    /// The node-level heartbeat of a sharded cluster, sent to every peer
    /// once per tick (riding the frame already going there): the sender
    /// is alive, and leads these data shards, which hibernate (ascending).
    /// A follower keeps a shard hibernated only while its leader's node
    /// keeps claiming it (ADR 0002, "Quiet shards").
    Alive {
        /// The hibernated shards the sender leads, ascending.
        hibernated: Vec<ShardId>,
    },
}

/// A request for a shard's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderRequest {
    /// Append this encoded [`crate::Proposal`] (it carries the forwarding
    /// node's [`crate::ProposalId`]).
    Propose(Bytes),
    /// Renew a lease (etcd's LeaseKeepAlive).
    LeaseKeepAlive(LeaseId),
    /// A lease's remaining TTL, as only the leader's clock knows it.
    LeaseTimeToLive {
        /// The lease.
        id: LeaseId,
        /// Also list its keys.
        keys: bool,
    },
    /// Every lease.
    LeaseLeases,
    /// Promote a learner if it has caught up, by proposing `proposal`.
    MemberPromote {
        /// The learner.
        member: NodeId,
        /// The encoded promotion [`crate::Proposal`].
        proposal: Bytes,
    },
    /// Append this encoded [`crate::Proposal`] for a node that holds no
    /// replica of the shard, and tell it ([`LeaderReply::Applied`]) when
    /// the entry applies here (it cannot see the apply itself).
    ProposeNotify(Bytes),
}

/// A lease's state as the leader sees it (etcd's LeaseTimeToLive answer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The lease.
    pub id: LeaseId,
    /// Seconds left; -1 if the lease does not exist (as etcd answers).
    pub ttl: i64,
    /// The TTL it was granted, in seconds.
    pub granted_ttl: i64,
    /// Its keys, if asked for.
    pub keys: Vec<Bytes>,
}

/// A leader's successful answer to a [`LeaderRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderReply {
    /// The lease was renewed for `ttl` seconds (0: no such lease).
    LeaseKeepAlive {
        /// The lease.
        id: LeaseId,
        /// Its TTL from now, in seconds.
        ttl: i64,
    },
    /// LeaseTimeToLive's answer.
    LeaseTimeToLive(LeaseTtl),
    /// LeaseLeases' answer, in id order.
    LeaseLeases(Vec<LeaseId>),
    /// The entry of a [`LeaderRequest::ProposeNotify`] applied on the
    /// leader that appended it.
    Applied,
}

fn decode_format(d: &mut Decoder) -> Result<(), CodecError> {
    let at = d.position();
    let format = d.u8()?;
    if format != FRAME_FORMAT {
        return Err(CodecError::BadTag { what: "peer frame format", tag: format, at });
    }
    Ok(())
}

impl Wire for EngineKind {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            EngineKind::Raft => 1,
            EngineKind::Paxos => 2,
        });
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let at = d.position();
        match d.u8()? {
            1 => Ok(EngineKind::Raft),
            2 => Ok(EngineKind::Paxos),
            tag => Err(CodecError::BadTag { what: "consensus engine", tag, at }),
        }
    }
}

impl<M: Wire> Wire for PeerFrame<M> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(FRAME_FORMAT);
        self.engine.encode(out);
        put_varint(out, self.cluster_id);
        self.from.encode(out);
        self.to.encode(out);
        self.messages.encode(out);
        self.node_messages.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        decode_format(d)?;
        Ok(PeerFrame {
            engine: EngineKind::decode(d)?,
            cluster_id: d.varint()?,
            from: NodeId::decode(d)?,
            to: NodeId::decode(d)?,
            messages: Vec::decode(d)?,
            node_messages: Vec::decode(d)?,
        })
    }
}

impl Wire for NodeMessage {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            NodeMessage::Request { shard, seq, body } => {
                out.push(0);
                shard.encode(out);
                put_varint(out, *seq);
                body.encode(out);
            }
            NodeMessage::Removed => out.push(2),
            NodeMessage::Reply { seq, result } => {
                out.push(1);
                put_varint(out, *seq);
                match result {
                    Ok(r) => {
                        out.push(0);
                        r.encode(out);
                    }
                    Err(e) => {
                        out.push(1);
                        e.encode(out);
                    }
                }
            }
            NodeMessage::Alive { hibernated } => {
                out.push(3);
                // Ascending ids as gaps: 64 hibernated shards take 65 bytes.
                put_varint(out, hibernated.len() as u64);
                let mut prev = 0;
                for s in hibernated {
                    // The node lists them ascending; saturating keeps a
                    // misuse from panicking (the peer refuses the gap).
                    put_varint(out, s.0.saturating_sub(prev));
                    prev = s.0;
                }
            }
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(match d.tag("node message", 3)? {
            0 => NodeMessage::Request {
                shard: ShardId::decode(d)?,
                seq: d.varint()?,
                body: LeaderRequest::decode(d)?,
            },
            2 => NodeMessage::Removed,
            1 => {
                let seq = d.varint()?;
                let result = match d.tag("reply result", 1)? {
                    0 => Ok(LeaderReply::decode(d)?),
                    _ => Err(RemoteError::decode(d)?),
                };
                NodeMessage::Reply { seq, result }
            }
            _ => {
                let n = d.len(1)?;
                let mut hibernated = Vec::with_capacity(n);
                let mut prev: u64 = 0;
                for i in 0..n {
                    let gap = d.varint()?;
                    // Strictly ascending: every gap after the first is >= 1.
                    if i > 0 && gap == 0 {
                        return Err(d.invalid("hibernated shards not ascending"));
                    }
                    prev = prev.checked_add(gap).ok_or_else(|| d.invalid("shard id overflows"))?;
                    hibernated.push(ShardId(prev));
                }
                NodeMessage::Alive { hibernated }
            }
        })
    }
}

impl Wire for LeaderRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LeaderRequest::Propose(p) => {
                out.push(0);
                p.encode(out);
            }
            LeaderRequest::LeaseKeepAlive(id) => {
                out.push(1);
                put_i64(out, id.0);
            }
            LeaderRequest::LeaseTimeToLive { id, keys } => {
                out.push(2);
                put_i64(out, id.0);
                keys.encode(out);
            }
            LeaderRequest::LeaseLeases => out.push(3),
            LeaderRequest::MemberPromote { member, proposal } => {
                out.push(4);
                member.encode(out);
                proposal.encode(out);
            }
            LeaderRequest::ProposeNotify(p) => {
                out.push(5);
                p.encode(out);
            }
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(match d.tag("leader request", 5)? {
            0 => LeaderRequest::Propose(Bytes::decode(d)?),
            1 => LeaderRequest::LeaseKeepAlive(LeaseId(d.i64()?)),
            2 => LeaderRequest::LeaseTimeToLive { id: LeaseId(d.i64()?), keys: d.bool()? },
            3 => LeaderRequest::LeaseLeases,
            4 => LeaderRequest::MemberPromote {
                member: NodeId::decode(d)?,
                proposal: Bytes::decode(d)?,
            },
            _ => LeaderRequest::ProposeNotify(Bytes::decode(d)?),
        })
    }
}

impl Wire for LeaseTtl {
    fn encode(&self, out: &mut Vec<u8>) {
        put_i64(out, self.id.0);
        put_i64(out, self.ttl);
        put_i64(out, self.granted_ttl);
        self.keys.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(LeaseTtl {
            id: LeaseId(d.i64()?),
            ttl: d.i64()?,
            granted_ttl: d.i64()?,
            keys: Vec::decode(d)?,
        })
    }
}

impl Wire for LeaderReply {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LeaderReply::LeaseKeepAlive { id, ttl } => {
                out.push(0);
                put_i64(out, id.0);
                put_i64(out, *ttl);
            }
            LeaderReply::LeaseTimeToLive(t) => {
                out.push(1);
                t.encode(out);
            }
            LeaderReply::LeaseLeases(ids) => {
                out.push(2);
                put_varint(out, ids.len() as u64);
                for id in ids {
                    put_i64(out, id.0);
                }
            }
            LeaderReply::Applied => out.push(3),
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(match d.tag("leader reply", 3)? {
            0 => LeaderReply::LeaseKeepAlive { id: LeaseId(d.i64()?), ttl: d.i64()? },
            1 => LeaderReply::LeaseTimeToLive(LeaseTtl::decode(d)?),
            3 => LeaderReply::Applied,
            _ => {
                let n = d.len(1)?;
                let ids = (0..n).map(|_| d.i64().map(LeaseId)).collect::<Result<_, _>>()?;
                LeaderReply::LeaseLeases(ids)
            }
        })
    }
}

impl Wire for RemoteError {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RemoteError::NotLeader { leader } => {
                out.push(0);
                leader.encode(out);
            }
            RemoteError::TooManyRequests => out.push(1),
            RemoteError::Stopped => out.push(2),
            RemoteError::LearnerNotReady { id, matched, leader_index } => {
                out.push(3);
                id.encode(out);
                put_varint(out, *matched);
                put_varint(out, *leader_index);
            }
            RemoteError::NotLearner { id } => {
                out.push(4);
                id.encode(out);
            }
            RemoteError::MemberNotFound { id } => {
                out.push(5);
                id.encode(out);
            }
            RemoteError::TooLarge { bytes, limit } => {
                out.push(6);
                put_varint(out, *bytes);
                put_varint(out, *limit);
            }
            RemoteError::Malformed => out.push(7),
            RemoteError::Retry => out.push(8),
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(match d.tag("remote error", 8)? {
            0 => RemoteError::NotLeader { leader: Option::decode(d)? },
            1 => RemoteError::TooManyRequests,
            2 => RemoteError::Stopped,
            3 => RemoteError::LearnerNotReady {
                id: NodeId::decode(d)?,
                matched: d.varint()?,
                leader_index: d.varint()?,
            },
            4 => RemoteError::NotLearner { id: NodeId::decode(d)? },
            5 => RemoteError::MemberNotFound { id: NodeId::decode(d)? },
            6 => RemoteError::TooLarge { bytes: d.varint()?, limit: d.varint()? },
            7 => RemoteError::Malformed,
            _ => RemoteError::Retry,
        })
    }
}
