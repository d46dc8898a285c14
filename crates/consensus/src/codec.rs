//! A compact binary codec for entries, hard state, snapshots and messages.
//!
//! Integers are LEB128 varints, byte strings are length-prefixed, enums are
//! one tag byte. Decoding never panics and never allocates more than the
//! input could describe: every length is checked against the bytes left.
//! Byte payloads decode as zero-copy slices of the input [`Bytes`].

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::entry::{Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use crate::membership::{ChangeOp, Membership, MembershipChange};
use crate::ready::Envelope;
use crate::types::{Epoch, LogIndex, NodeId, ShardId};

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended early.
    #[error("input truncated at byte {at}: needed {needed} more bytes")]
    Truncated {
        /// Offset where more was needed.
        at: usize,
        /// How many more bytes were needed.
        needed: usize,
    },
    /// A varint ran past 10 bytes or 64 bits.
    #[error("malformed varint at byte {at}")]
    BadVarint {
        /// Offset of the varint.
        at: usize,
    },
    /// An enum tag that no variant has.
    #[error("unknown {what} tag {tag} at byte {at}")]
    BadTag {
        /// The type being decoded.
        what: &'static str,
        /// The tag found.
        tag: u8,
        /// Offset of the tag.
        at: usize,
    },
    /// A decoded value breaks an invariant of its type.
    #[error("invalid {what} at byte {at}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Offset where decoding of it ended.
        at: usize,
    },
    /// Bytes were left after the value.
    #[error("{count} trailing bytes after the value")]
    Trailing {
        /// How many bytes were left.
        count: usize,
    },
}

/// A type with a binary encoding.
pub trait Wire: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads one value from `input`.
    ///
    /// # Errors
    /// The input is truncated or malformed.
    fn decode(input: &mut Decoder) -> Result<Self, CodecError>;
}

/// Encodes `value` into a fresh buffer.
pub fn encode_to_vec<T: Wire>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

/// Decodes exactly one value from `bytes`.
///
/// # Errors
/// The input is malformed, truncated, or has bytes left over.
pub fn decode_exact<T: Wire>(bytes: impl Into<Bytes>) -> Result<T, CodecError> {
    let mut d = Decoder::new(bytes.into());
    let v = T::decode(&mut d)?;
    match d.remaining() {
        0 => Ok(v),
        count => Err(CodecError::Trailing { count }),
    }
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends `v` zigzag-encoded as a varint, so small negative numbers stay short.
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed UTF-8 string.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// A cursor over input bytes.
#[derive(Debug)]
pub struct Decoder {
    buf: Bytes,
    pos: usize,
}

impl Decoder {
    /// A decoder at the start of `buf`.
    pub fn new(buf: Bytes) -> Decoder {
        Decoder { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current offset, for error messages.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// At end of input.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated { at: self.pos, needed: 1 })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a LEB128 varint.
    ///
    /// # Errors
    /// Truncated, or longer than 64 bits.
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                return Err(CodecError::BadVarint { at: start });
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::BadVarint { at: start })
    }

    /// Reads a length that must fit in the remaining input, with each item
    /// taking at least `min_item_bytes` bytes.
    ///
    /// # Errors
    /// The length describes more than the input holds.
    pub fn len(&mut self, min_item_bytes: usize) -> Result<usize, CodecError> {
        let at = self.pos;
        let n = self.varint()?;
        let need = n.saturating_mul(min_item_bytes.max(1) as u64);
        if need > self.remaining() as u64 {
            return Err(CodecError::Truncated {
                at,
                needed: usize::try_from(need).unwrap_or(usize::MAX),
            });
        }
        Ok(n as usize)
    }

    /// Reads a length-prefixed byte string as a zero-copy slice.
    ///
    /// # Errors
    /// Truncated input.
    pub fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let n = self.len(1)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Reads a boolean byte (0 or 1).
    ///
    /// # Errors
    /// Truncated, or a byte other than 0 or 1.
    pub fn bool(&mut self) -> Result<bool, CodecError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::BadTag { what: "bool", tag, at }),
        }
    }

    /// Reads a zigzag varint written by [`put_i64`].
    ///
    /// # Errors
    /// Truncated or malformed varint.
    pub fn i64(&mut self) -> Result<i64, CodecError> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// Reads a string written by [`put_str`].
    ///
    /// # Errors
    /// Truncated input, or bytes that are not UTF-8.
    pub fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.invalid("string (not UTF-8)"))
    }

    /// Reads an enum tag byte, refusing values above `max`.
    ///
    /// # Errors
    /// Truncated input, or a tag above `max` (named `what` in the error).
    pub fn tag(&mut self, what: &'static str, max: u8) -> Result<u8, CodecError> {
        let at = self.pos;
        let tag = self.u8()?;
        if tag > max {
            return Err(CodecError::BadTag { what, tag, at });
        }
        Ok(tag)
    }

    /// An error for an invalid value that ended at the current offset.
    pub fn invalid(&self, what: &'static str) -> CodecError {
        CodecError::Invalid { what, at: self.pos }
    }
}

macro_rules! wire_u64_newtype {
    ($($t:ident),*) => {$(
        impl Wire for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                put_varint(out, self.0);
            }
            fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
                input.varint().map($t)
            }
        }
    )*};
}
wire_u64_newtype!(NodeId, ShardId, LogIndex);

impl Wire for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, *self);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        input.varint()
    }
}

impl Wire for i64 {
    fn encode(&self, out: &mut Vec<u8>) {
        put_i64(out, *self);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        input.i64()
    }
}

impl Wire for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        input.string()
    }
}

impl Wire for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        input.bool()
    }
}

impl Wire for Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        input.bytes()
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        if input.bool()? { T::decode(input).map(Some) } else { Ok(None) }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let n = input.len(1)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::decode(input)?);
        }
        Ok(v)
    }
}

impl<T: Wire + Ord> Wire for BTreeSet<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let n = input.len(1)?;
        let mut set = BTreeSet::new();
        for _ in 0..n {
            if !set.insert(T::decode(input)?) {
                return Err(input.invalid("set (duplicate element)"));
            }
        }
        Ok(set)
    }
}

impl Wire for Epoch {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.round);
        put_varint(out, self.node.0);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        Ok(Epoch { round: input.varint()?, node: NodeId(input.varint()?) })
    }
}

impl Wire for EntryKind {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            EntryKind::Command => 0,
            EntryKind::Noop => 1,
            EntryKind::Membership => 2,
        });
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let at = input.position();
        match input.u8()? {
            0 => Ok(EntryKind::Command),
            1 => Ok(EntryKind::Noop),
            2 => Ok(EntryKind::Membership),
            tag => Err(CodecError::BadTag { what: "entry kind", tag, at }),
        }
    }
}

impl Wire for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.index.encode(out);
        self.epoch.encode(out);
        self.kind.encode(out);
        put_bytes(out, &self.payload);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let entry = Entry {
            index: LogIndex::decode(input)?,
            epoch: Epoch::decode(input)?,
            kind: EntryKind::decode(input)?,
            payload: input.bytes()?,
        };
        if entry.index == LogIndex::ZERO {
            return Err(input.invalid("entry (index 0)"));
        }
        Ok(entry)
    }
}

impl Wire for HardState {
    fn encode(&self, out: &mut Vec<u8>) {
        self.epoch.encode(out);
        self.vote.encode(out);
        self.commit.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        Ok(HardState {
            epoch: Epoch::decode(input)?,
            vote: Option::decode(input)?,
            commit: LogIndex::decode(input)?,
        })
    }
}

impl Wire for Membership {
    fn encode(&self, out: &mut Vec<u8>) {
        self.voters.encode(out);
        self.outgoing.encode(out);
        self.learners.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let m = Membership {
            voters: BTreeSet::decode(input)?,
            outgoing: BTreeSet::decode(input)?,
            learners: BTreeSet::decode(input)?,
        };
        // An empty membership is the "unknown yet" default of a replica that
        // will learn its configuration from a snapshot; anything else must be valid.
        if m != Membership::default() && m.validate().is_err() {
            return Err(input.invalid("membership"));
        }
        Ok(m)
    }
}

impl Wire for ChangeOp {
    fn encode(&self, out: &mut Vec<u8>) {
        let (tag, node) = match *self {
            ChangeOp::AddVoter(n) => (0, n),
            ChangeOp::AddLearner(n) => (1, n),
            ChangeOp::Remove(n) => (2, n),
        };
        out.push(tag);
        node.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let at = input.position();
        let tag = input.u8()?;
        let node = NodeId::decode(input)?;
        match tag {
            0 => Ok(ChangeOp::AddVoter(node)),
            1 => Ok(ChangeOp::AddLearner(node)),
            2 => Ok(ChangeOp::Remove(node)),
            tag => Err(CodecError::BadTag { what: "membership change op", tag, at }),
        }
    }
}

impl Wire for MembershipChange {
    fn encode(&self, out: &mut Vec<u8>) {
        self.ops.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        Ok(MembershipChange { ops: Vec::decode(input)? })
    }
}

impl Wire for SnapshotMeta {
    fn encode(&self, out: &mut Vec<u8>) {
        self.index.encode(out);
        self.epoch.encode(out);
        self.membership.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        Ok(SnapshotMeta {
            index: LogIndex::decode(input)?,
            epoch: Epoch::decode(input)?,
            membership: Membership::decode(input)?,
        })
    }
}

impl Wire for Snapshot {
    fn encode(&self, out: &mut Vec<u8>) {
        self.meta.encode(out);
        put_bytes(out, &self.data);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        Ok(Snapshot { meta: SnapshotMeta::decode(input)?, data: input.bytes()? })
    }
}

impl<M: Wire> Wire for Envelope<M> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.shard.encode(out);
        self.from.encode(out);
        self.to.encode(out);
        self.body.encode(out);
    }
    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        Ok(Envelope {
            shard: ShardId::decode(input)?,
            from: NodeId::decode(input)?,
            to: NodeId::decode(input)?,
            body: M::decode(input)?,
        })
    }
}

/// Proptest strategies for the shared types, for this crate's tests and
/// for engines testing their own message codecs.
#[cfg(any(test, feature = "proptest"))]
pub mod strategies {
    use super::*;
    use proptest::prelude::*;

    /// Any epoch.
    pub fn epoch() -> impl Strategy<Value = Epoch> {
        (any::<u64>(), any::<u64>()).prop_map(|(round, node)| Epoch { round, node: NodeId(node) })
    }

    /// Any entry.
    pub fn entry() -> impl Strategy<Value = Entry> {
        (1..u64::MAX, epoch(), 0u8..3, prop::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(index, epoch, kind, payload)| Entry {
                index: LogIndex(index),
                epoch,
                kind: [EntryKind::Command, EntryKind::Noop, EntryKind::Membership][kind as usize],
                payload: Bytes::from(payload),
            },
        )
    }

    /// Any valid membership.
    pub fn membership() -> impl Strategy<Value = Membership> {
        (
            prop::collection::btree_set(1u64..20, 1..6),
            prop::collection::btree_set(1u64..20, 0..6),
            prop::collection::btree_set(20u64..30, 0..3),
        )
            .prop_map(|(v, o, l)| Membership {
                voters: v.into_iter().map(NodeId).collect(),
                outgoing: o.into_iter().map(NodeId).collect(),
                learners: l.into_iter().map(NodeId).collect(),
            })
    }

    /// Any hard state.
    pub fn hard_state() -> impl Strategy<Value = HardState> {
        (epoch(), prop::option::of(1u64..u64::MAX), any::<u64>()).prop_map(
            |(epoch, vote, commit)| HardState {
                epoch,
                vote: vote.map(NodeId),
                commit: LogIndex(commit),
            },
        )
    }

    /// Any snapshot.
    pub fn snapshot() -> impl Strategy<Value = Snapshot> {
        (any::<u64>(), epoch(), membership(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(index, epoch, membership, data)| Snapshot {
                meta: SnapshotMeta { index: LogIndex(index), epoch, membership },
                data: Bytes::from(data),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use proptest::prelude::*;

    fn roundtrip<T: Wire + PartialEq + std::fmt::Debug>(v: &T) {
        let bytes = encode_to_vec(v);
        assert_eq!(&decode_exact::<T>(bytes.clone()).unwrap(), v);
        // Every strict prefix is an error, never a panic or a wrong value.
        for cut in 0..bytes.len() {
            assert!(decode_exact::<T>(bytes[..cut].to_vec()).is_err(), "prefix {cut} decoded");
        }
    }

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            roundtrip(&v);
        }
        // 10 bytes whose last carries more than the 64th bit.
        let bad = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(decode_exact::<u64>(bad.to_vec()), Err(CodecError::BadVarint { at: 0 }));
        let endless = [0x80u8; 11];
        assert_eq!(decode_exact::<u64>(endless.to_vec()), Err(CodecError::BadVarint { at: 0 }));
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let mut b = Vec::new();
        put_varint(&mut b, u64::MAX);
        assert!(matches!(decode_exact::<Vec<Entry>>(b.clone()), Err(CodecError::Truncated { .. })));
        assert!(matches!(decode_exact::<Bytes>(b), Err(CodecError::Truncated { .. })));
    }

    #[test]
    fn signed_strings_and_tags() {
        for v in [0i64, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            roundtrip(&v);
            assert!(encode_to_vec(&v).len() <= 10);
        }
        assert_eq!(encode_to_vec(&-1i64), vec![1]);
        roundtrip(&String::from("ringkv ✓"));
        assert!(decode_exact::<String>(vec![1, 0xff]).is_err());
        let mut d = Decoder::new(Bytes::from_static(&[3, 4]));
        assert_eq!(d.tag("kind", 3), Ok(3));
        assert_eq!(d.tag("kind", 3), Err(CodecError::BadTag { what: "kind", tag: 4, at: 1 }));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut b = encode_to_vec(&LogIndex(5));
        b.push(0);
        assert_eq!(decode_exact::<LogIndex>(b), Err(CodecError::Trailing { count: 1 }));
    }

    proptest! {
        #[test]
        fn entry_roundtrip(e in entry()) { roundtrip(&e); }

        #[test]
        fn entries_roundtrip(v in prop::collection::vec(entry(), 0..8)) { roundtrip(&v); }

        #[test]
        fn hard_state_roundtrip(h in hard_state()) { roundtrip(&h); }

        #[test]
        fn snapshot_roundtrip(s in snapshot()) { roundtrip(&s); }

        #[test]
        fn envelope_roundtrip(shard in any::<u64>(), from in any::<u64>(), to in any::<u64>(), body in entry()) {
            roundtrip(&Envelope { shard: ShardId(shard), from: NodeId(from), to: NodeId(to), body });
        }

        #[test]
        fn membership_change_roundtrip(ops in prop::collection::vec((0u8..3, 1u64..100), 0..6)) {
            let ops = ops.into_iter().map(|(t, n)| match t {
                0 => ChangeOp::AddVoter(NodeId(n)),
                1 => ChangeOp::AddLearner(NodeId(n)),
                _ => ChangeOp::Remove(NodeId(n)),
            }).collect();
            roundtrip(&MembershipChange { ops });
        }

        /// Garbage never panics, whatever type it is decoded as.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_exact::<Entry>(bytes.clone());
            let _ = decode_exact::<Vec<Entry>>(bytes.clone());
            let _ = decode_exact::<HardState>(bytes.clone());
            let _ = decode_exact::<Snapshot>(bytes.clone());
            let _ = decode_exact::<MembershipChange>(bytes.clone());
            let _ = decode_exact::<Envelope<Entry>>(bytes);
        }
    }
}
