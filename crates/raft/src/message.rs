//! Raft's peer messages and their wire encoding.
//!
//! Every message carries the sender's term (Raft, Fig. 2: "if RPC request or
//! response contains term T > currentTerm: set currentTerm = T, convert to
//! follower"); the [`Body`] says what it is. Terms travel as plain integers:
//! a Raft [`Epoch`] always has `node == 0`.
//!
//! | body | direction | persist before send? |
//! | --- | --- | --- |
//! | `Vote` / `PreVote` | candidate → voters | no (the candidate's own vote counts only once durable) |
//! | `VoteResponse` granted | voter → candidate | yes: the vote is a promise (Fig. 2 "votedFor") |
//! | `PreVoteResponse` | voter → pre-candidate | no: a pre-vote changes no state (thesis §9.6) |
//! | `Append` | leader → follower | no (thesis §10.2.1: the leader may write in parallel) |
//! | `AppendResponse` | follower → leader | yes: an ack promises durable entries |
//! | `Heartbeat` / `HeartbeatResponse` | both | no |
//! | `Snapshot` chunk / `SnapshotResponse` | both | last chunk's ack is an `AppendResponse`, after persist |
//! | `TimeoutNow` | leader → transfer target | no |
//! | `ReadIndex` / `ReadIndexResponse` | follower ↔ leader | no |

use std::fmt;

use bytes::Bytes;
use ringkv_consensus::codec::{Decoder, Wire, put_bytes, put_varint};
use ringkv_consensus::{
    CodecError, Entry, EntryKind, Epoch, LogIndex, Membership, RequestId, SnapshotMeta,
    decode_exact,
};

/// One Raft message: the sender's term and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender's current term, or for a pre-vote request the term it
    /// would campaign in.
    pub term: Epoch,
    /// What the message says.
    pub body: Body,
}

/// The kinds of Raft message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// RequestVote (Fig. 2), or a pre-vote (thesis §9.6) when `pre_vote`.
    Vote {
        /// A pre-vote: asks whether a vote would be granted, changes nothing.
        pre_vote: bool,
        /// Index of the candidate's last log entry.
        last_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_term: Epoch,
        /// The campaign follows a leadership transfer (`TimeoutNow`), so the
        /// voter must not refuse because it heard from a leader recently
        /// (thesis §3.10, §4.2.3).
        transfer: bool,
    },
    /// Answer to [`Body::Vote`].
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the (pre-)vote is granted.
        granted: bool,
    },
    /// AppendEntries (Fig. 2); a probe when `entries` is empty.
    Append {
        /// Index of the entry preceding `entries`.
        prev_index: LogIndex,
        /// Term of the entry at `prev_index`.
        prev_term: Epoch,
        /// Entries to store, contiguous from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// Answer to [`Body::Append`] (and to a completed snapshot).
    AppendResponse {
        /// On success, the highest index now known to match the leader's log;
        /// on rejection, the `prev_index` that did not match.
        index: LogIndex,
        /// Present when the append was rejected.
        reject: Option<RejectHint>,
    },
    /// Leader liveness and commit propagation; also the confirmation round
    /// for ReadIndex and lease reads (thesis §6.4).
    Heartbeat {
        /// The leader's commit index, capped at what the follower matches.
        commit: LogIndex,
        /// Heartbeat round of this leader's term (ReadIndex confirmation).
        round: u64,
        /// The leader's tick counter when it sent this heartbeat (leases).
        sent_tick: u64,
    },
    /// Answer to [`Body::Heartbeat`], echoing its round and tick.
    HeartbeatResponse {
        /// The echoed round.
        round: u64,
        /// The echoed send tick.
        sent_tick: u64,
    },
    /// One chunk of InstallSnapshot (thesis §5.3, Fig. 5.3).
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
    /// to resend from there (a chunk arrived out of order or was lost).
    SnapshotResponse {
        /// The snapshot being received.
        index: LogIndex,
        /// The next byte offset the follower expects.
        next_offset: u64,
    },
    /// Tells the transfer target to campaign at once (thesis §3.10).
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

/// Why an append was rejected, so the leader can skip a whole term of
/// mismatches at once (thesis §5.3 "the follower can include the term of the
/// conflicting entry").
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The largest index at or below the rejected `prev_index` whose term is
    /// at most the rejected `prev_term` (or the follower's last index).
    pub index: LogIndex,
    /// The follower's term at `index`.
    pub term: Epoch,
}

impl Message {
    /// Short name of the message kind, for traces.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            Body::Vote { pre_vote: false, .. } => "Vote",
            Body::Vote { pre_vote: true, .. } => "PreVote",
            Body::VoteResponse { pre_vote: false, .. } => "VoteResponse",
            Body::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            Body::Append { .. } => "Append",
            Body::AppendResponse { .. } => "AppendResponse",
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

/// Wire tags of [`Body`] variants. Never renumber: they are on disk in
/// recorded traces and on the wire between versions.
mod tag {
    pub(super) const VOTE: u8 = 0;
    pub(super) const VOTE_RESPONSE: u8 = 1;
    pub(super) const APPEND: u8 = 2;
    pub(super) const APPEND_RESPONSE: u8 = 3;
    pub(super) const HEARTBEAT: u8 = 4;
    pub(super) const HEARTBEAT_RESPONSE: u8 = 5;
    pub(super) const SNAPSHOT: u8 = 6;
    pub(super) const SNAPSHOT_RESPONSE: u8 = 7;
    pub(super) const TIMEOUT_NOW: u8 = 8;
    pub(super) const READ_INDEX: u8 = 9;
    pub(super) const READ_INDEX_RESPONSE: u8 = 10;
}

fn put_term(out: &mut Vec<u8>, term: Epoch) {
    debug_assert_eq!(term.node.0, 0, "a Raft term has no node part");
    put_varint(out, term.round);
}

fn term(input: &mut Decoder) -> Result<Epoch, CodecError> {
    input.varint().map(Epoch::term)
}

impl Wire for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        put_term(out, self.term);
        match &self.body {
            Body::Vote { pre_vote, last_index, last_term, transfer } => {
                out.push(tag::VOTE);
                pre_vote.encode(out);
                last_index.encode(out);
                put_term(out, *last_term);
                transfer.encode(out);
            }
            Body::VoteResponse { pre_vote, granted } => {
                out.push(tag::VOTE_RESPONSE);
                pre_vote.encode(out);
                granted.encode(out);
            }
            Body::Append { prev_index, prev_term, entries, commit } => {
                out.push(tag::APPEND);
                prev_index.encode(out);
                put_term(out, *prev_term);
                entries.encode(out);
                commit.encode(out);
            }
            Body::AppendResponse { index, reject } => {
                out.push(tag::APPEND_RESPONSE);
                index.encode(out);
                match reject {
                    None => out.push(0),
                    Some(hint) => {
                        out.push(1);
                        hint.index.encode(out);
                        put_term(out, hint.term);
                    }
                }
            }
            Body::Heartbeat { commit, round, sent_tick } => {
                out.push(tag::HEARTBEAT);
                commit.encode(out);
                put_varint(out, *round);
                put_varint(out, *sent_tick);
            }
            Body::HeartbeatResponse { round, sent_tick } => {
                out.push(tag::HEARTBEAT_RESPONSE);
                put_varint(out, *round);
                put_varint(out, *sent_tick);
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
        let term = term(input)?;
        let at = input.position();
        let body = match input.u8()? {
            tag::VOTE => Body::Vote {
                pre_vote: input.bool()?,
                last_index: LogIndex::decode(input)?,
                last_term: self::term(input)?,
                transfer: input.bool()?,
            },
            tag::VOTE_RESPONSE => {
                Body::VoteResponse { pre_vote: input.bool()?, granted: input.bool()? }
            }
            tag::APPEND => {
                let prev_index = LogIndex::decode(input)?;
                let prev_term = self::term(input)?;
                let entries = Vec::<Entry>::decode(input)?;
                let commit = LogIndex::decode(input)?;
                // Entries must continue the log right after `prev_index`.
                let contiguous = entries
                    .iter()
                    .enumerate()
                    .all(|(i, e)| prev_index.0.checked_add(i as u64 + 1) == Some(e.index.0));
                if !contiguous {
                    return Err(input.invalid("append (entries not contiguous after prev_index)"));
                }
                Body::Append { prev_index, prev_term, entries, commit }
            }
            tag::APPEND_RESPONSE => {
                let index = LogIndex::decode(input)?;
                let reject = if input.bool()? {
                    Some(RejectHint { index: LogIndex::decode(input)?, term: self::term(input)? })
                } else {
                    None
                };
                Body::AppendResponse { index, reject }
            }
            tag::HEARTBEAT => Body::Heartbeat {
                commit: LogIndex::decode(input)?,
                round: input.varint()?,
                sent_tick: input.varint()?,
            },
            tag::HEARTBEAT_RESPONSE => {
                Body::HeartbeatResponse { round: input.varint()?, sent_tick: input.varint()? }
            }
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
            tag => return Err(CodecError::BadTag { what: "raft message", tag, at }),
        };
        Ok(Message { term, body })
    }
}

/// Formats an entry compactly for traces: `index@term kind payload`.
pub fn describe_entry(entry: &Entry) -> impl fmt::Display + '_ {
    EntryDisplay(entry)
}

struct EntryDisplay<'a>(&'a Entry);

impl fmt::Display for EntryDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{}@{} ", e.index, e.epoch)?;
        match e.kind {
            EntryKind::Noop => write!(f, "noop"),
            EntryKind::Command => write!(f, "{}", PayloadDisplay(&e.payload)),
            EntryKind::Membership => match decode_exact::<Membership>(e.payload.clone()) {
                Ok(m) => write!(f, "conf {}", describe_membership(&m)),
                Err(_) => write!(f, "conf <corrupt>"),
            },
        }
    }
}

struct PayloadDisplay<'a>(&'a [u8]);

impl fmt::Display for PayloadDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Payloads longer than this print as their length only.
        const SHOWN_BYTES_MAX: usize = 32;
        let b = self.0;
        if b.len() <= SHOWN_BYTES_MAX && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            write!(f, "\"{}\"", String::from_utf8_lossy(b))
        } else {
            write!(f, "<{} bytes>", b.len())
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
        let list = |f: &mut fmt::Formatter<'_>, name: &str, ids: &std::collections::BTreeSet<_>| {
            write!(f, "{name}=(")?;
            for (i, id) in ids.iter().enumerate() {
                let ringkv_consensus::NodeId(n) = id;
                write!(f, "{}{n}", if i == 0 { "" } else { "," })?;
            }
            write!(f, ")")
        };
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

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} term={}", self.kind_name(), self.term)?;
        match &self.body {
            Body::Vote { last_index, last_term, transfer, .. } => {
                write!(f, " last={last_index}@{last_term}")?;
                if *transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            Body::VoteResponse { granted, .. } => {
                write!(f, " {}", if *granted { "granted" } else { "rejected" })
            }
            Body::Append { prev_index, prev_term, entries, commit } => {
                write!(f, " prev={prev_index}@{prev_term} commit={commit} entries=[")?;
                for (i, e) in entries.iter().enumerate() {
                    write!(f, "{}{}", if i == 0 { "" } else { ", " }, describe_entry(e))?;
                }
                write!(f, "]")
            }
            Body::AppendResponse { index, reject: None } => write!(f, " index={index}"),
            Body::AppendResponse { index, reject: Some(hint) } => {
                write!(f, " reject index={index} hint={}@{}", hint.index, hint.term)
            }
            Body::Heartbeat { commit, round, sent_tick } => {
                write!(f, " commit={commit} round={round} tick={sent_tick}")
            }
            Body::HeartbeatResponse { round, sent_tick } => {
                write!(f, " round={round} tick={sent_tick}")
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
            Body::TimeoutNow => Ok(()),
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
    use ringkv_consensus::{Envelope, NodeId, ShardId, encode_to_vec};

    fn term_strategy() -> impl Strategy<Value = Epoch> {
        any::<u64>().prop_map(Epoch::term)
    }

    fn entries_after(prev: u64) -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(strategies::entry(), 0..6).prop_map(move |mut v| {
            for (i, e) in v.iter_mut().enumerate() {
                e.index = LogIndex(prev + 1 + i as u64);
            }
            v
        })
    }

    fn body_strategy() -> impl Strategy<Value = Body> {
        let index = || any::<u64>().prop_map(LogIndex);
        prop_oneof![
            (any::<bool>(), index(), term_strategy(), any::<bool>()).prop_map(
                |(pre_vote, last_index, last_term, transfer)| Body::Vote {
                    pre_vote,
                    last_index,
                    last_term,
                    transfer
                }
            ),
            (any::<bool>(), any::<bool>())
                .prop_map(|(pre_vote, granted)| Body::VoteResponse { pre_vote, granted }),
            (0u64..1 << 40, term_strategy(), index()).prop_flat_map(|(prev, prev_term, commit)| {
                entries_after(prev).prop_map(move |entries| Body::Append {
                    prev_index: LogIndex(prev),
                    prev_term,
                    entries,
                    commit,
                })
            }),
            (index(), prop::option::of((index(), term_strategy()))).prop_map(|(index, r)| {
                Body::AppendResponse {
                    index,
                    reject: r.map(|(index, term)| RejectHint { index, term }),
                }
            }),
            (index(), any::<u64>(), any::<u64>()).prop_map(|(commit, round, sent_tick)| {
                Body::Heartbeat { commit, round, sent_tick }
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(round, sent_tick)| Body::HeartbeatResponse { round, sent_tick }),
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
        ]
    }

    fn message_strategy() -> impl Strategy<Value = Message> {
        (term_strategy(), body_strategy()).prop_map(|(term, body)| Message { term, body })
    }

    proptest! {
        #[test]
        fn message_roundtrip(m in message_strategy()) {
            let bytes = encode_to_vec(&m);
            prop_assert_eq!(&decode_exact::<Message>(bytes.clone()).unwrap(), &m);
            // Every strict prefix fails cleanly.
            for cut in 0..bytes.len() {
                prop_assert!(decode_exact::<Message>(bytes[..cut].to_vec()).is_err());
            }
        }

        #[test]
        fn envelope_roundtrip(m in message_strategy(), from in 1u64..100, to in 1u64..100) {
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

        /// Flipping any one byte of a valid message never panics.
        #[test]
        fn corrupted_messages_never_panic(m in message_strategy(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode_to_vec(&m);
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = decode_exact::<Message>(bytes);
        }
    }

    #[test]
    fn non_contiguous_append_is_refused() {
        let e = |i| Entry {
            index: LogIndex(i),
            epoch: Epoch::term(1),
            kind: EntryKind::Noop,
            payload: Bytes::new(),
        };
        let m = Message {
            term: Epoch::term(1),
            body: Body::Append {
                prev_index: LogIndex(1),
                prev_term: Epoch::term(1),
                entries: vec![e(2), e(4)],
                commit: LogIndex(0),
            },
        };
        assert!(matches!(
            decode_exact::<Message>(encode_to_vec(&m)),
            Err(CodecError::Invalid { .. })
        ));
    }

    #[test]
    fn unknown_tag_is_refused() {
        assert!(matches!(
            decode_exact::<Message>(vec![1, 200]),
            Err(CodecError::BadTag { tag: 200, .. })
        ));
    }

    #[test]
    fn display_is_compact() {
        let m = Message {
            term: Epoch::term(2),
            body: Body::Append {
                prev_index: LogIndex(1),
                prev_term: Epoch::term(1),
                entries: vec![Entry {
                    index: LogIndex(2),
                    epoch: Epoch::term(2),
                    kind: EntryKind::Command,
                    payload: Bytes::from_static(b"x=1"),
                }],
                commit: LogIndex(1),
            },
        };
        assert_eq!(m.to_string(), "Append term=2 prev=1@1 commit=1 entries=[2@2 \"x=1\"]");
    }
}
