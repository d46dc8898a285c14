//! The first bytes on every peer connection, before any frame.
//!
//! The dialing node sends a fixed-size [`Hello`]; the accepting node answers
//! with a fixed-size [`Reply`] and, if it accepted, only reads from then on.
//! Fixed sizes (not a length-delimited frame) mean a stranger's bytes are
//! rejected after at most [`HELLO_BYTES`] bytes, whatever they claim.
//!
//! ```text
//! Hello (32 bytes, big-endian)           Reply (24 bytes, big-endian)
//!  0  magic      "RKVP"                   0  magic      "RKVP"
//!  4  version    u16                      4  version    u16  (the acceptor's)
//!  6  lane       u8  (0 regular, 1 bulk)  6  status     u8   (ReplyStatus)
//!  7  reserved   u8  (0)                  7  reserved   u8   (0)
//!  8  cluster id u64                      8  cluster id u64  (the acceptor's)
//! 16  from       u64 (dialer's node id)  16  node id    u64  (the acceptor's)
//! 24  to         u64 (node expected)
//! ```

use ringkv_consensus::NodeId;

use super::{ClusterId, Lane};

/// The first four bytes of every hello and reply.
pub(crate) const MAGIC: [u8; 4] = *b"RKVP";

/// The only protocol version this build speaks. A change to the handshake or
/// framing bumps it; both sides refuse any other.
pub(crate) const PROTOCOL_VERSION: u16 = 1;

/// Encoded size of a [`Hello`].
pub(crate) const HELLO_BYTES: usize = 32;

/// Encoded size of a [`Reply`].
pub(crate) const REPLY_BYTES: usize = 24;

/// What the dialing node says about itself and whom it expects.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The lane this connection carries.
    pub(crate) lane: Lane,
    /// The dialer's cluster.
    pub(crate) cluster: ClusterId,
    /// The dialer.
    pub(crate) from: NodeId,
    /// The node the dialer believes it reached.
    pub(crate) to: NodeId,
}

/// Why a hello or reply could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// Not our protocol at all: someone else's client, a scanner, garbage.
    #[error("bad magic {found:02x?} (expected {MAGIC:02x?}): not a ringkv peer")]
    BadMagic {
        /// The first four bytes received.
        found: [u8; 4],
    },
    /// Our protocol, another version.
    #[error("protocol version {found} is not supported (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version the other side speaks.
        found: u16,
    },
    /// A lane number this version does not define.
    #[error("unknown lane {found}")]
    UnknownLane {
        /// The lane byte received.
        found: u8,
    },
    /// A reserved byte that must be zero was not.
    #[error("reserved byte is {found}, expected 0")]
    Reserved {
        /// The reserved byte received.
        found: u8,
    },
    /// A reply status this version does not define.
    #[error("unknown reply status {found}")]
    UnknownStatus {
        /// The status byte received.
        found: u8,
    },
}

impl Hello {
    /// The hello's wire form.
    pub(crate) fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out[6] = match self.lane {
            Lane::Regular => 0,
            Lane::Bulk => 1,
        };
        out[8..16].copy_from_slice(&self.cluster.0.to_be_bytes());
        out[16..24].copy_from_slice(&self.from.0.to_be_bytes());
        out[24..32].copy_from_slice(&self.to.0.to_be_bytes());
        out
    }

    /// Parses a hello. Checks the magic before anything else, so garbage is
    /// reported as garbage rather than as a version or lane problem.
    pub(crate) fn decode(buf: &[u8; HELLO_BYTES]) -> Result<Hello, HandshakeError> {
        check_magic_and_version(buf)?;
        let lane = match buf[6] {
            0 => Lane::Regular,
            1 => Lane::Bulk,
            found => return Err(HandshakeError::UnknownLane { found }),
        };
        if buf[7] != 0 {
            return Err(HandshakeError::Reserved { found: buf[7] });
        }
        Ok(Hello {
            lane,
            cluster: ClusterId(be_u64(buf, 8)),
            from: NodeId(be_u64(buf, 16)),
            to: NodeId(be_u64(buf, 24)),
        })
    }

    /// The acceptor's verdict on this hello: whether `node`, a member of
    /// `cluster`, takes the connection.
    pub(crate) fn verdict(&self, cluster: ClusterId, node: NodeId) -> ReplyStatus {
        if self.cluster != cluster {
            ReplyStatus::ClusterMismatch
        } else if self.to != node {
            ReplyStatus::WrongNode
        } else if !self.from.is_valid() || self.from == node {
            ReplyStatus::InvalidSender
        } else {
            ReplyStatus::Accepted
        }
    }
}

/// The acceptor's answer to a hello.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReplyStatus {
    /// Frames may follow.
    Accepted,
    /// The acceptor does not speak the dialer's protocol version.
    UnsupportedVersion,
    /// The hello was ours but malformed (unknown lane, reserved bits set).
    Malformed,
    /// The dialer belongs to another cluster (another `--initial-cluster-token`).
    ClusterMismatch,
    /// The dialer expected another node at this address: stale address book
    /// or a node restarted with a new identity.
    WrongNode,
    /// The dialer claimed an impossible id (zero, or the acceptor's own).
    InvalidSender,
}

impl ReplyStatus {
    const fn code(self) -> u8 {
        match self {
            ReplyStatus::Accepted => 0,
            ReplyStatus::UnsupportedVersion => 1,
            ReplyStatus::Malformed => 2,
            ReplyStatus::ClusterMismatch => 3,
            ReplyStatus::WrongNode => 4,
            ReplyStatus::InvalidSender => 5,
        }
    }

    fn from_code(code: u8) -> Result<ReplyStatus, HandshakeError> {
        Ok(match code {
            0 => ReplyStatus::Accepted,
            1 => ReplyStatus::UnsupportedVersion,
            2 => ReplyStatus::Malformed,
            3 => ReplyStatus::ClusterMismatch,
            4 => ReplyStatus::WrongNode,
            5 => ReplyStatus::InvalidSender,
            found => return Err(HandshakeError::UnknownStatus { found }),
        })
    }

    /// Words for logs.
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            ReplyStatus::Accepted => "accepted",
            ReplyStatus::UnsupportedVersion => "unsupported protocol version",
            ReplyStatus::Malformed => "malformed handshake",
            ReplyStatus::ClusterMismatch => {
                "cluster id mismatch (check that both nodes use the same --initial-cluster-token)"
            }
            ReplyStatus::WrongNode => {
                "the node at this address is not the one expected (stale peer address?)"
            }
            ReplyStatus::InvalidSender => "invalid sender node id",
        }
    }
}

/// The acceptor's identity and verdict.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The verdict.
    pub(crate) status: ReplyStatus,
    /// The acceptor's cluster.
    pub(crate) cluster: ClusterId,
    /// The acceptor.
    pub(crate) node: NodeId,
}

impl Reply {
    /// The reply's wire form.
    pub(crate) fn encode(&self) -> [u8; REPLY_BYTES] {
        let mut out = [0u8; REPLY_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out[6] = self.status.code();
        out[8..16].copy_from_slice(&self.cluster.0.to_be_bytes());
        out[16..24].copy_from_slice(&self.node.0.to_be_bytes());
        out
    }

    /// Parses a reply.
    pub(crate) fn decode(buf: &[u8; REPLY_BYTES]) -> Result<Reply, HandshakeError> {
        check_magic_and_version(buf)?;
        let status = ReplyStatus::from_code(buf[6])?;
        if buf[7] != 0 {
            return Err(HandshakeError::Reserved { found: buf[7] });
        }
        Ok(Reply { status, cluster: ClusterId(be_u64(buf, 8)), node: NodeId(be_u64(buf, 16)) })
    }
}

fn check_magic_and_version(buf: &[u8]) -> Result<(), HandshakeError> {
    let found: [u8; 4] = [buf[0], buf[1], buf[2], buf[3]];
    if found != MAGIC {
        return Err(HandshakeError::BadMagic { found });
    }
    let version = u16::from_be_bytes([buf[4], buf[5]]);
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::UnsupportedVersion { found: version });
    }
    Ok(())
}

fn be_u64(buf: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a stranger sends, decoding never panics, and anything
        /// accepted is exactly what our encoder would have produced.
        #[test]
        fn decoding_arbitrary_bytes_is_total_and_canonical(
            hello in prop::array::uniform32(any::<u8>()),
            reply in prop::collection::vec(any::<u8>(), REPLY_BYTES),
        ) {
            if let Ok(decoded) = Hello::decode(&hello) {
                prop_assert_eq!(decoded.encode(), hello);
            }
            let reply: [u8; REPLY_BYTES] = reply.try_into().unwrap();
            if let Ok(decoded) = Reply::decode(&reply) {
                prop_assert_eq!(decoded.encode(), reply);
            }
        }

        /// Mostly-valid hellos with one field changed exercise the checks.
        #[test]
        fn hellos_round_trip(lane in any::<bool>(), cluster: u64, from: u64, to: u64) {
            let lane = if lane { Lane::Bulk } else { Lane::Regular };
            let hello = Hello { lane, cluster: ClusterId(cluster), from: NodeId(from), to: NodeId(to) };
            prop_assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        }
    }

    fn hello() -> Hello {
        Hello { lane: Lane::Bulk, cluster: ClusterId(0xfeed), from: NodeId(2), to: NodeId(3) }
    }

    #[test]
    fn hello_round_trips_and_has_a_fixed_layout() {
        let bytes = hello().encode();
        assert_eq!(&bytes[0..4], b"RKVP");
        assert_eq!(bytes[6], 1, "bulk lane");
        assert_eq!(Hello::decode(&bytes), Ok(hello()));
        let regular = Hello { lane: Lane::Regular, ..hello() };
        assert_eq!(Hello::decode(&regular.encode()), Ok(regular));
    }

    #[test]
    fn reply_round_trips_every_status() {
        for status in [
            ReplyStatus::Accepted,
            ReplyStatus::UnsupportedVersion,
            ReplyStatus::Malformed,
            ReplyStatus::ClusterMismatch,
            ReplyStatus::WrongNode,
            ReplyStatus::InvalidSender,
        ] {
            let reply = Reply { status, cluster: ClusterId(7), node: NodeId(9) };
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
        }
    }

    #[test]
    fn garbage_is_reported_as_bad_magic_before_anything_else() {
        let mut bytes = hello().encode();
        bytes[0..4].copy_from_slice(b"GET ");
        bytes[4] = 0xff; // a bad version too: the magic must win
        assert_eq!(Hello::decode(&bytes), Err(HandshakeError::BadMagic { found: *b"GET " }));
    }

    #[test]
    fn other_versions_lanes_and_reserved_bits_are_refused() {
        let mut bytes = hello().encode();
        bytes[5] = 2;
        assert_eq!(Hello::decode(&bytes), Err(HandshakeError::UnsupportedVersion { found: 2 }));

        let mut bytes = hello().encode();
        bytes[6] = 9;
        assert_eq!(Hello::decode(&bytes), Err(HandshakeError::UnknownLane { found: 9 }));

        let mut bytes = hello().encode();
        bytes[7] = 1;
        assert_eq!(Hello::decode(&bytes), Err(HandshakeError::Reserved { found: 1 }));

        let mut bytes =
            Reply { status: ReplyStatus::Accepted, cluster: ClusterId(1), node: NodeId(1) }
                .encode();
        bytes[6] = 200;
        assert_eq!(Reply::decode(&bytes), Err(HandshakeError::UnknownStatus { found: 200 }));
    }

    #[test]
    fn verdict_checks_cluster_then_receiver_then_sender() {
        let h = hello();
        assert_eq!(h.verdict(ClusterId(0xfeed), NodeId(3)), ReplyStatus::Accepted);
        assert_eq!(h.verdict(ClusterId(1), NodeId(3)), ReplyStatus::ClusterMismatch);
        assert_eq!(h.verdict(ClusterId(0xfeed), NodeId(4)), ReplyStatus::WrongNode);
        let zero = Hello { from: NodeId(0), ..h };
        assert_eq!(zero.verdict(ClusterId(0xfeed), NodeId(3)), ReplyStatus::InvalidSender);
        let own = Hello { from: NodeId(3), ..h };
        assert_eq!(own.verdict(ClusterId(0xfeed), NodeId(3)), ReplyStatus::InvalidSender);
    }
}
