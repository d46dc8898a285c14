//! Multi-Paxos peer messages and their wire encoding.
//!
//! Every message carries a ballot ([`Epoch::ballot`]): a request carries the
//! sender's ballot, an answer echoes the ballot it answers, and a [`Body::Nack`]
//! carries the higher ballot the acceptor has promised.
//!
//! | body | direction | persist before send? |
//! | --- | --- | --- |
//! | `Prepare` (phase 1a) | candidate → voters | no (the candidate counts its own promise once durable) |
//! | `Promise` (phase 1b) | acceptor → candidate | yes: the promise is the durable promised ballot |
//! | `PromiseRejected` / `Nack` | acceptor → proposer | no: they promise nothing |
//! | `Accept` (phase 2a) | leader → acceptors and learners | no (the leader writes its own copy in parallel) |
//! | `Accepted` (phase 2b) | acceptor → leader | yes: it promises durable accepted values |
//! | `Heartbeat` / `HeartbeatResponse` | both | no (commit notification, read confirmation) |
//! | `Snapshot` chunk / `SnapshotResponse` | both | the final ack is an `Accepted`, after persist |
//! | `TimeoutNow` | leader → transfer target | no |
//! | `ReadIndex` / `ReadIndexResponse` | follower ↔ leader | no |

use std::fmt;

use bytes::Bytes;
use ringkv_consensus::codec::{Decoder, Wire, put_bytes, put_varint};
use ringkv_consensus::{
    CodecError, Entry, EntryKind, Epoch, LogIndex, Membership, NodeId, RequestId, SnapshotMeta,
    decode_exact,
};

/// One Multi-Paxos message: a ballot and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender's ballot (requests), the ballot answered (answers), or the
    /// acceptor's promised ballot ([`Body::Nack`]).
    pub ballot: Epoch,
    /// What the message says.
    pub body: Body,
}

/// The kinds of Multi-Paxos message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Phase 1a for every slot above `commit`: promise to ignore lower
    /// ballots and report what you accepted above `commit`.
    Prepare {
        /// The candidate's commit point; slots at or below it are chosen
        /// and known to the candidate.
        commit: LogIndex,
        /// The campaign follows a leadership transfer (`TimeoutNow`), so the
        /// acceptor must not ignore it for having heard from a leader lately.
        transfer: bool,
    },
    /// Phase 1b: the promise, with every value accepted above the
    /// candidate's commit point.
    Promise {
        /// The acceptor's own commit point.
        commit: LogIndex,
        /// Accepted entries above the prepare's commit point, ascending; each
        /// entry's epoch is the ballot it was accepted in.
        accepted: Vec<Entry>,
    },
    /// The acceptor refuses to promise because it knows more slots chosen
    /// than the candidate: it could not report what it compacted, and the
    /// candidate could not serve what it lacks.
    PromiseRejected {
        /// The acceptor's commit point.
        commit: LogIndex,
    },
    /// The request's ballot is below the acceptor's promise (the message's
    /// ballot): the proposer is stale.
    Nack,
    /// Phase 2a: accept these values (all in the message's ballot).
    Accept {
        /// Contiguous, ascending slots; every epoch equals the message ballot.
        entries: Vec<Entry>,
        /// The leader's commit point.
        commit: LogIndex,
    },
    /// Phase 2b: slots `lo..=hi` are durably accepted in the message's ballot
    /// (an empty range when `lo > hi`), and the acceptor's commit point.
    Accepted {
        /// First slot accepted.
        lo: LogIndex,
        /// Last slot accepted.
        hi: LogIndex,
        /// The acceptor's commit point.
        commit: LogIndex,
    },
    /// Leader liveness and commit notification; also the confirmation round
    /// for ReadIndex and lease reads.
    Heartbeat {
        /// The leader's commit point.
        commit: LogIndex,
        /// Heartbeat round of this ballot (ReadIndex confirmation).
        round: u64,
        /// The leader's tick counter when it sent this heartbeat (leases).
        sent_tick: u64,
    },
    /// Answer to [`Body::Heartbeat`].
    HeartbeatResponse {
        /// The echoed round.
        round: u64,
        /// The echoed send tick.
        sent_tick: u64,
        /// The acceptor's commit point after the heartbeat.
        commit: LogIndex,
        /// The commit point the heartbeat announced (echoed), so the leader
        /// can tell an acceptor that cannot follow from one that lags.
        asked: LogIndex,
    },
    /// One chunk of a snapshot for an acceptor that needs compacted slots.
    Snapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Size of the whole snapshot data.
        total_bytes: u64,
        /// Offset of `data` within the snapshot data.
        offset: u64,
        /// The chunk; the last chunk ends at `total_bytes`.
        data: Bytes,
    },
    /// Acknowledges snapshot chunks up to `next_offset`, or asks the leader
    /// to resend from there.
    SnapshotResponse {
        /// The snapshot being received.
        index: LogIndex,
        /// The next byte offset the acceptor expects.
        next_offset: u64,
    },
    /// Tells the transfer target to start phase 1 at once.
    TimeoutNow,
    /// A follower forwards a linearizable read to the leader.
    ReadIndex {
        /// The follower's request id.
        id: RequestId,
    },
    /// The leader's answer to [`Body::ReadIndex`]: serve once applied `index`.
    ReadIndexResponse {
        /// The follower's request id.
        id: RequestId,
        /// The confirmed read index.
        index: LogIndex,
    },
}

impl Message {
    /// Short name of the message kind, for traces and statistics.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            Body::Prepare { .. } => "Prepare",
            Body::Promise { .. } => "Promise",
            Body::PromiseRejected { .. } => "PromiseRejected",
            Body::Nack => "Nack",
            Body::Accept { .. } => "Accept",
            Body::Accepted { .. } => "Accepted",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::Snapshot { .. } => "Snapshot",
            Body::SnapshotResponse { .. } => "SnapshotResponse",
            Body::TimeoutNow => "TimeoutNow",
            Body::ReadIndex { .. } => "ReadIndex",
            Body::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

/// Wire tags of [`Body`] variants. Never renumber: they are on the wire
/// between versions.
mod tag {
    pub(super) const PREPARE: u8 = 0;
    pub(super) const PROMISE: u8 = 1;
    pub(super) const PROMISE_REJECTED: u8 = 2;
    pub(super) const NACK: u8 = 3;
    pub(super) const ACCEPT: u8 = 4;
    pub(super) const ACCEPTED: u8 = 5;
    pub(super) const HEARTBEAT: u8 = 6;
    pub(super) const HEARTBEAT_RESPONSE: u8 = 7;
    pub(super) const SNAPSHOT: u8 = 8;
    pub(super) const SNAPSHOT_RESPONSE: u8 = 9;
    pub(super) const TIMEOUT_NOW: u8 = 10;
    pub(super) const READ_INDEX: u8 = 11;
    pub(super) const READ_INDEX_RESPONSE: u8 = 12;
}

impl Wire for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        self.ballot.encode(out);
        match &self.body {
            Body::Prepare { commit, transfer } => {
                out.push(tag::PREPARE);
                commit.encode(out);
                transfer.encode(out);
            }
            Body::Promise { commit, accepted } => {
                out.push(tag::PROMISE);
                commit.encode(out);
                accepted.encode(out);
            }
            Body::PromiseRejected { commit } => {
                out.push(tag::PROMISE_REJECTED);
                commit.encode(out);
            }
            Body::Nack => out.push(tag::NACK),
            Body::Accept { entries, commit } => {
                out.push(tag::ACCEPT);
                entries.encode(out);
                commit.encode(out);
            }
            Body::Accepted { lo, hi, commit } => {
                out.push(tag::ACCEPTED);
                lo.encode(out);
                hi.encode(out);
                commit.encode(out);
            }
            Body::Heartbeat { commit, round, sent_tick } => {
                out.push(tag::HEARTBEAT);
                commit.encode(out);
                put_varint(out, *round);
                put_varint(out, *sent_tick);
            }
            Body::HeartbeatResponse { round, sent_tick, commit, asked } => {
                out.push(tag::HEARTBEAT_RESPONSE);
                put_varint(out, *round);
                put_varint(out, *sent_tick);
                commit.encode(out);
                asked.encode(out);
            }
            Body::Snapshot { meta, total_bytes, offset, data } => {
                out.push(tag::SNAPSHOT);
                meta.encode(out);
                put_varint(out, *total_bytes);
                put_varint(out, *offset);
                put_bytes(out, data);
            }
            Body::SnapshotResponse { index, next_offset } => {
                out.push(tag::SNAPSHOT_RESPONSE);
                index.encode(out);
                put_varint(out, *next_offset);
            }
            Body::TimeoutNow => out.push(tag::TIMEOUT_NOW),
            Body::ReadIndex { id } => {
                out.push(tag::READ_INDEX);
                put_varint(out, id.0);
            }
            Body::ReadIndexResponse { id, index } => {
                out.push(tag::READ_INDEX_RESPONSE);
                put_varint(out, id.0);
                index.encode(out);
            }
        }
    }

    fn decode(input: &mut Decoder) -> Result<Self, CodecError> {
        let ballot = Epoch::decode(input)?;
        let at = input.position();
        let body = match input.u8()? {
            tag::PREPARE => {
                Body::Prepare { commit: LogIndex::decode(input)?, transfer: input.bool()? }
            }
            tag::PROMISE => {
                let commit = LogIndex::decode(input)?;
                let accepted = Vec::<Entry>::decode(input)?;
                if let Some(why) = check_promised(ballot, &accepted) {
                    return Err(input.invalid(why));
                }
                Body::Promise { commit, accepted }
            }
            tag::PROMISE_REJECTED => Body::PromiseRejected { commit: LogIndex::decode(input)? },
            tag::NACK => Body::Nack,
            tag::ACCEPT => {
                let entries = Vec::<Entry>::decode(input)?;
                let commit = LogIndex::decode(input)?;
                if let Some(why) = check_accept(ballot, &entries) {
                    return Err(input.invalid(why));
                }
                Body::Accept { entries, commit }
            }
            tag::ACCEPTED => Body::Accepted {
                lo: LogIndex::decode(input)?,
                hi: LogIndex::decode(input)?,
                commit: LogIndex::decode(input)?,
            },
            tag::HEARTBEAT => Body::Heartbeat {
                commit: LogIndex::decode(input)?,
                round: input.varint()?,
                sent_tick: input.varint()?,
            },
            tag::HEARTBEAT_RESPONSE => Body::HeartbeatResponse {
                round: input.varint()?,
                sent_tick: input.varint()?,
                commit: LogIndex::decode(input)?,
                asked: LogIndex::decode(input)?,
            },
            tag::SNAPSHOT => {
                let meta = SnapshotMeta::decode(input)?;
                let total_bytes = input.varint()?;
                let offset = input.varint()?;
                let data = input.bytes()?;
                let end = offset.checked_add(data.len() as u64);
                if end.is_none_or(|end| end > total_bytes) {
                    return Err(input.invalid("snapshot chunk (past the snapshot's end)"));
                }
                Body::Snapshot { meta, total_bytes, offset, data }
            }
            tag::SNAPSHOT_RESPONSE => Body::SnapshotResponse {
                index: LogIndex::decode(input)?,
                next_offset: input.varint()?,
            },
            tag::TIMEOUT_NOW => Body::TimeoutNow,
            tag::READ_INDEX => Body::ReadIndex { id: RequestId(input.varint()?) },
            tag::READ_INDEX_RESPONSE => Body::ReadIndexResponse {
                id: RequestId(input.varint()?),
                index: LogIndex::decode(input)?,
            },
            tag => return Err(CodecError::BadTag { what: "paxos message", tag, at }),
        };
        Ok(Message { ballot, body })
    }
}

/// Why the entries of a promise in `ballot` are malformed, if they are:
/// they must be strictly ascending real acceptances (no vacant slot) of
/// ballots at most the promised one.
pub(crate) fn check_promised(ballot: Epoch, accepted: &[Entry]) -> Option<&'static str> {
    if !accepted.windows(2).all(|w| w[0].index < w[1].index) {
        return Some("promise (accepted slots not strictly ascending)");
    }
    if accepted.iter().any(|e| e.epoch == Epoch::ZERO || e.epoch > ballot) {
        return Some("promise (an accepted ballot is zero or above the promise)");
    }
    None
}

/// Why the entries of an accept in `ballot` are malformed, if they are:
/// they must be contiguous and all of the message's ballot.
pub(crate) fn check_accept(ballot: Epoch, entries: &[Entry]) -> Option<&'static str> {
    if entries.is_empty() {
        return Some("accept (no entries)");
    }
    if !entries.windows(2).all(|w| w[0].index.0.checked_add(1) == Some(w[1].index.0)) {
        return Some("accept (slots not contiguous)");
    }
    if ballot == Epoch::ZERO || entries.iter().any(|e| e.epoch != ballot) {
        return Some("accept (an entry's ballot differs from the message's)");
    }
    None
}

/// Formats an entry compactly for traces: `index@ballot kind payload`;
/// a vacant slot (nothing accepted) prints as `index vacant`.
pub fn describe_entry(entry: &Entry) -> impl fmt::Display + '_ {
    EntryDisplay(entry)
}

struct EntryDisplay<'a>(&'a Entry);

impl fmt::Display for EntryDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if e.epoch == Epoch::ZERO {
            return write!(f, "{} vacant", e.index);
        }
        write!(f, "{}@{} ", e.index, e.epoch)?;
        match e.kind {
            EntryKind::Noop => write!(f, "noop"),
            EntryKind::Command => {
                /// Payloads longer than this print as their length only.
                const SHOWN_BYTES_MAX: usize = 32;
                let b = &e.payload;
                if b.len() <= SHOWN_BYTES_MAX
                    && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ')
                {
                    write!(f, "\"{}\"", String::from_utf8_lossy(b))
                } else {
                    write!(f, "<{} bytes>", b.len())
                }
            }
            EntryKind::Membership => match decode_exact::<Membership>(e.payload.clone()) {
                Ok(m) => write!(f, "conf {}", describe_membership(&m)),
                Err(_) => write!(f, "conf <corrupt>"),
            },
        }
    }
}

/// Formats a configuration for traces: `v=(1,2,3)`, plus `o=(..)` when
/// joint and `l=(..)` when it has learners.
pub fn describe_membership(m: &Membership) -> impl fmt::Display + '_ {
    MembershipDisplay(m)
}

struct MembershipDisplay<'a>(&'a Membership);

impl fmt::Display for MembershipDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(
            f: &mut fmt::Formatter<'_>,
            name: &str,
            ids: &std::collections::BTreeSet<NodeId>,
        ) -> fmt::Result {
            write!(f, "{name}=(")?;
            for (i, id) in ids.iter().enumerate() {
                write!(f, "{}{}", if i == 0 { "" } else { "," }, id.0)?;
            }
            write!(f, ")")
        }
        let m = self.0;
        list(f, "v", &m.voters)?;
        if m.is_joint() {
            write!(f, " ")?;
            list(f, "o", &m.outgoing)?;
        }
        if !m.learners.is_empty() {
            write!(f, " ")?;
            list(f, "l", &m.learners)?;
        }
        Ok(())
    }
}

fn entries_list(f: &mut fmt::Formatter<'_>, entries: &[Entry]) -> fmt::Result {
    write!(f, "[")?;
    for (i, e) in entries.iter().enumerate() {
        write!(f, "{}{}", if i == 0 { "" } else { ", " }, describe_entry(e))?;
    }
    write!(f, "]")
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ballot={}", self.kind_name(), self.ballot)?;
        match &self.body {
            Body::Prepare { commit, transfer } => {
                write!(f, " commit={commit}")?;
                if *transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            Body::Promise { commit, accepted } => {
                write!(f, " commit={commit} accepted=")?;
                entries_list(f, accepted)
            }
            Body::PromiseRejected { commit } => write!(f, " commit={commit}"),
            Body::Nack | Body::TimeoutNow => Ok(()),
            Body::Accept { entries, commit } => {
                write!(f, " commit={commit} entries=")?;
                entries_list(f, entries)
            }
            Body::Accepted { lo, hi, commit } if lo > hi => write!(f, " none commit={commit}"),
            Body::Accepted { lo, hi, commit } => write!(f, " slots={lo}..={hi} commit={commit}"),
            Body::Heartbeat { commit, round, sent_tick } => {
                write!(f, " commit={commit} round={round} tick={sent_tick}")
            }
            Body::HeartbeatResponse { round, sent_tick, commit, asked } => {
                write!(f, " round={round} tick={sent_tick} commit={commit} asked={asked}")
            }
            Body::Snapshot { meta, total_bytes, offset, data } => write!(
                f,
                " snap={}@{} conf {} bytes={}..{}/{total_bytes}",
                meta.index,
                meta.epoch,
                describe_membership(&meta.membership),
                offset,
                offset + data.len() as u64
            ),
            Body::SnapshotResponse { index, next_offset } => {
                write!(f, " snap={index} next={next_offset}")
            }
            Body::ReadIndex { id } => write!(f, " id={}", id.0),
            Body::ReadIndexResponse { id, index } => write!(f, " id={} index={index}", id.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringkv_consensus::codec::strategies;
    use ringkv_consensus::{Envelope, ShardId, encode_to_vec};

    fn ballot() -> impl Strategy<Value = Epoch> {
        (1u64..1 << 40, 1u64..64).prop_map(|(r, n)| Epoch::ballot(r, NodeId(n)))
    }

    fn index() -> impl Strategy<Value = LogIndex> {
        any::<u64>().prop_map(LogIndex)
    }

    /// Entries valid for an accept in `b`: contiguous from `first`.
    fn accept_entries(b: Epoch) -> impl Strategy<Value = Vec<Entry>> {
        (1u64..1 << 40, prop::collection::vec(strategies::entry(), 1..6)).prop_map(
            move |(first, mut v)| {
                for (k, e) in v.iter_mut().enumerate() {
                    e.index = LogIndex(first + k as u64);
                    e.epoch = b;
                }
                v
            },
        )
    }

    /// Entries valid for a promise in `b`: ascending, ballots in `1..=b`.
    fn promised_entries(b: Epoch) -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec((strategies::entry(), 1u64..4, 0u64..=b.round), 0..6).prop_map(
            move |v| {
                let mut slot = 0;
                v.into_iter()
                    .map(|(mut e, gap, round)| {
                        slot += gap;
                        e.index = LogIndex(slot);
                        e.epoch = if round == 0 { b } else { Epoch::ballot(round, NodeId(1)) };
                        if e.epoch > b {
                            e.epoch = b;
                        }
                        e
                    })
                    .collect()
            },
        )
    }

    fn message() -> impl Strategy<Value = Message> {
        ballot().prop_flat_map(|b| {
            let body = prop_oneof![
                (index(), any::<bool>())
                    .prop_map(|(commit, transfer)| Body::Prepare { commit, transfer }),
                (index(), promised_entries(b))
                    .prop_map(|(commit, accepted)| Body::Promise { commit, accepted }),
                index().prop_map(|commit| Body::PromiseRejected { commit }),
                Just(Body::Nack),
                (accept_entries(b), index())
                    .prop_map(|(entries, commit)| Body::Accept { entries, commit }),
                (index(), index(), index()).prop_map(|(lo, hi, commit)| Body::Accepted {
                    lo,
                    hi,
                    commit
                }),
                (index(), any::<u64>(), any::<u64>()).prop_map(|(commit, round, sent_tick)| {
                    Body::Heartbeat { commit, round, sent_tick }
                }),
                (any::<u64>(), any::<u64>(), index(), index()).prop_map(
                    |(round, sent_tick, commit, asked)| Body::HeartbeatResponse {
                        round,
                        sent_tick,
                        commit,
                        asked
                    }
                ),
                (
                    strategies::snapshot(),
                    prop::collection::vec(any::<u8>(), 0..32),
                    0u64..1000,
                    0u64..1000
                )
                    .prop_map(|(s, data, offset, extra)| Body::Snapshot {
                        meta: s.meta,
                        total_bytes: offset + data.len() as u64 + extra,
                        offset,
                        data: Bytes::from(data),
                    }),
                (index(), any::<u64>())
                    .prop_map(|(index, next_offset)| Body::SnapshotResponse { index, next_offset }),
                Just(Body::TimeoutNow),
                any::<u64>().prop_map(|id| Body::ReadIndex { id: RequestId(id) }),
                (any::<u64>(), index())
                    .prop_map(|(id, index)| Body::ReadIndexResponse { id: RequestId(id), index }),
            ];
            body.prop_map(move |body| Message { ballot: b, body })
        })
    }

    proptest! {
        #[test]
        fn message_roundtrip(m in message()) {
            let bytes = encode_to_vec(&m);
            prop_assert_eq!(&decode_exact::<Message>(bytes.clone()).unwrap(), &m);
            // Every strict prefix fails cleanly.
            for cut in 0..bytes.len() {
                prop_assert!(decode_exact::<Message>(bytes[..cut].to_vec()).is_err());
            }
        }

        #[test]
        fn envelope_roundtrip(m in message(), from in 1u64..100, to in 1u64..100) {
            let env = Envelope { shard: ShardId(3), from: NodeId(from), to: NodeId(to), body: m };
            let bytes = encode_to_vec(&env);
            prop_assert_eq!(decode_exact::<Envelope<Message>>(bytes).unwrap(), env);
        }

        /// Garbage never panics, and whatever decodes re-encodes to a value
        /// that decodes the same (no lossy decoding).
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(m) = decode_exact::<Message>(bytes) {
                let again = decode_exact::<Message>(encode_to_vec(&m)).unwrap();
                prop_assert_eq!(again, m);
            }
        }

        /// Flipping any one bit of a valid message never panics.
        #[test]
        fn corrupted_messages_never_panic(m in message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode_to_vec(&m);
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = decode_exact::<Message>(bytes);
        }
    }

    fn cmd(index: u64, b: Epoch) -> Entry {
        Entry { index: LogIndex(index), epoch: b, kind: EntryKind::Command, payload: Bytes::new() }
    }

    #[test]
    fn accept_with_foreign_ballot_or_gap_is_refused() {
        let b = Epoch::ballot(2, NodeId(1));
        let other = Epoch::ballot(1, NodeId(1));
        for entries in [vec![cmd(1, b), cmd(3, b)], vec![cmd(1, b), cmd(2, other)], vec![]] {
            let m = Message { ballot: b, body: Body::Accept { entries, commit: LogIndex(0) } };
            assert!(matches!(
                decode_exact::<Message>(encode_to_vec(&m)),
                Err(CodecError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn promise_above_its_ballot_or_unordered_is_refused() {
        let b = Epoch::ballot(2, NodeId(1));
        let higher = Epoch::ballot(3, NodeId(1));
        for accepted in
            [vec![cmd(1, higher)], vec![cmd(2, b), cmd(1, b)], vec![cmd(1, Epoch::ZERO)]]
        {
            let m = Message { ballot: b, body: Body::Promise { commit: LogIndex(0), accepted } };
            assert!(matches!(
                decode_exact::<Message>(encode_to_vec(&m)),
                Err(CodecError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn unknown_tag_is_refused() {
        assert!(matches!(
            decode_exact::<Message>(vec![1, 1, 200]),
            Err(CodecError::BadTag { tag: 200, .. })
        ));
    }

    #[test]
    fn display_is_compact() {
        let b = Epoch::ballot(2, NodeId(1));
        let mut e = cmd(3, b);
        e.payload = Bytes::from_static(b"x=1");
        let m = Message { ballot: b, body: Body::Accept { entries: vec![e], commit: LogIndex(2) } };
        assert_eq!(m.to_string(), "Accept ballot=2.1 commit=2 entries=[3@2.1 \"x=1\"]");
    }
}
