//! What the node writes into a shard's log: a [`Proposal`] around an MVCC
//! command or a change of the node layer's replicated tables.
//!
//! Every proposal made for a client carries a [`ProposalId`]: the node that
//! took the request and a sequence number there. Every replica applies the
//! entry; the node whose id it carries answers its client when *it*
//! applies it (etcd's wait-by-id), so a follower that forwarded a request
//! to the leader needs no reply on success.
//!
//! A proposal made for a client also carries who the client is
//! ([`crate::AuthInfo`]), so that every replica checks its rights when it
//! applies the entry, against the auth store as of that entry (see
//! [`crate::auth`]). The node's own housekeeping proposals carry none and
//! are never checked.
//!
//! Encoding ([`Wire`]): a format byte, the optional id, (format 2 on) the
//! optional caller, a body tag, the body. MVCC commands keep their own
//! encoding (with its own format byte) inside. Format 1 entries (written
//! before auth existed) decode with no caller: nothing could have enabled
//! auth before them.

use bytes::Bytes;
use ringkv_consensus::codec::{CodecError, Decoder, Wire, put_str, put_varint};
use ringkv_consensus::{LogIndex, NodeId, ShardId, decode_exact, encode_to_vec};
use ringkv_ring::{HashKeyRule, Keyspace};
use ringkv_storage::mvcc::Command;

use crate::auth::{AuthChange, AuthInfo, AuthSnapshot};

/// Format of encoded proposals: 2 added the caller.
const PROPOSAL_FORMAT: u8 = 2;

/// The format before the caller was added, still decoded.
const PROPOSAL_FORMAT_NO_CALLER: u8 = 1;

/// A proposal's cluster-wide identity.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId {
    /// The node that took the request and answers it.
    pub node: NodeId,
    /// Its sequence number on that node, never reused, across restarts
    /// too (an entry proposed before a crash may commit after it).
    pub seq: u64,
}

/// A member of the cluster (etcd's `Member`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// The member id; also its consensus [`NodeId`].
    pub id: NodeId,
    /// Its name; empty until the member starts and publishes it.
    pub name: String,
    /// URLs its peers reach it at.
    pub peer_urls: Vec<String>,
    /// URLs clients reach it at; empty until it publishes them.
    pub client_urls: Vec<String>,
    /// A non-voting member that receives the log.
    pub is_learner: bool,
    /// Its failure domain (`--zone`); `None` until it starts and publishes
    /// one, and for a member started without one.
    pub zone: Option<String>,
}

/// A change of the member table (etcd's Cluster API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// MemberAdd: the id was chosen by the node that took the request.
    Add(Member),
    /// MemberRemove.
    Remove(NodeId),
    /// MemberUpdate: new peer URLs.
    Update {
        /// The member.
        id: NodeId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// MemberPromote: a learner becomes a voter (the leader checked that
    /// it has caught up before proposing).
    Promote(NodeId),
    /// A starting member publishes its name, client URLs and zone
    /// (etcd's `publish`, plus the zone).
    Publish {
        /// The member.
        id: NodeId,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
        /// Its zone; `None` clears a zone it was started with before.
        zone: Option<String>,
    },
}

/// etcd's `AlarmType` (values as on etcd's wire).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmType {
    /// The member ran out of space (disk full, or the store passed
    /// `--quota-backend-bytes`): the cluster refuses writes.
    NoSpace,
    /// The member found its data corrupt.
    Corrupt,
}

impl AlarmType {
    /// The value etcd's protobuf enum uses.
    pub fn wire_value(self) -> i32 {
        match self {
            AlarmType::NoSpace => 1,
            AlarmType::Corrupt => 2,
        }
    }

    /// The name etcd prints (`NOSPACE`, `CORRUPT`).
    pub fn name(self) -> &'static str {
        match self {
            AlarmType::NoSpace => "NOSPACE",
            AlarmType::Corrupt => "CORRUPT",
        }
    }
}

/// An alarm raised by a member (etcd's `AlarmMember`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmMember {
    /// The member that raised it.
    pub member: NodeId,
    /// What it is.
    pub alarm: AlarmType,
}

/// A change of the alarm table (etcd's `Alarm` ACTIVATE / DEACTIVATE).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AlarmChange {
    /// Raise the alarm.
    Activate(AlarmMember),
    /// Clear it.
    Deactivate(AlarmMember),
}

/// The first entry of a new cluster's log, identical on every founding
/// node: the initial member table (etcd writes its initial members as the
/// first log entries the same way, so a member that joins later and
/// replays the log from the start learns them too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInit {
    /// The cluster's id, derived from its token and initial members.
    pub cluster_id: u64,
    /// The founding members, in id order.
    pub members: Vec<Member>,
}

/// What a proposal asks the shard to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalBody {
    /// An MVCC command (KV, lease, compaction).
    Kv(Command),
    /// A change of the member table.
    Member(MemberChange),
    /// A change of the alarm table.
    Alarm(AlarmChange),
    /// A new cluster's initial member table.
    InitCluster(ClusterInit),
    /// A change of the auth store.
    Auth(AuthChange),
    /// A sharded cluster's keyspace, recorded by the metadata group's
    /// second entry (a one-shard cluster never writes it).
    Keyspace(Keyspace),
    /// A data shard's copy of the metadata shard's auth store (sharded
    /// clusters only; proposed by nodes, never by clients).
    AuthSync(AuthSnapshot),
    /// A sharded cluster's keyspace and replication factor, recorded by
    /// the metadata group's second entry (clusters made before
    /// `--replicas` recorded [`ProposalBody::Keyspace`] instead).
    Layout(Layout),
    /// New target replica sets of some data shards, chosen by the
    /// metadata leader (ADR 0002, "Placement changes"; sharded clusters
    /// only; proposed by nodes, never by clients).
    ShardTargets(Vec<ShardTarget>),
    /// A data shard's configuration as its leader applied it, recorded by
    /// the metadata group so that every node knows where a shard really
    /// is (sharded clusters only; proposed by nodes, never by clients).
    ShardConfig(ShardConfig),
    /// The placement a sharded cluster created with placement moves on
    /// and more founders than replicas starts with: the metadata group's
    /// third entry, written by every founder's bootstrap (each data shard
    /// starts on its target's founders only, so no founder held it and
    /// none needs a new incarnation there).
    InitialTargets(Vec<ShardTarget>),
    /// A member's replicas to be moved off it before it is removed (its
    /// drain started), or to stay (stopped); sharded clusters with
    /// placement moves only. Proposed for operators (`ringkv ctl node
    /// decommission`), checked as an administrator's request.
    Drain(DrainChange),
}

/// A start or stop of a member's drain.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DrainChange {
    /// The member.
    pub member: NodeId,
    /// `true` to start the drain, `false` to stop it.
    pub draining: bool,
}

/// A data shard's consensus configuration as its leader applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// The data shard (never the metadata shard).
    pub shard: ShardId,
    /// The shard's applied index when its leader reported it: a report
    /// older than the recorded one changes nothing.
    pub applied: LogIndex,
    /// Its voters' replica ids (`crate::replica_id`), ascending, distinct,
    /// non-empty.
    pub voters: Vec<NodeId>,
    /// Its learners' replica ids, ascending, distinct, none a voter.
    pub learners: Vec<NodeId>,
}

impl ShardConfig {
    /// Whether replica `node` is in this configuration.
    pub fn holds(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// Every replica id, ascending.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        all.sort_unstable();
        all
    }
}

/// A sharded cluster's fixed shape: its keyspace and how many replicas
/// each data shard has once the cluster has more members than that.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The data shards and the hash-key rule (`--shards`).
    pub keyspace: Keyspace,
    /// Replicas per data shard (`--replicas`), `1..=REPLICAS_MAX`.
    pub replicas: u32,
}

/// The nodes a data shard should be on: its target replica set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardTarget {
    /// The data shard (never the metadata shard, which stays on every
    /// node).
    pub shard: ShardId,
    /// Its replicas, ascending, distinct, non-empty.
    pub nodes: Vec<NodeId>,
}

/// Encodes a keyspace: shard count, rule tag (0 whole key, 1 segments and
/// their count).
pub(crate) fn encode_keyspace(k: &Keyspace, out: &mut Vec<u8>) {
    put_varint(out, u64::from(k.shard_count()));
    match k.rule() {
        HashKeyRule::WholeKey => out.push(0),
        HashKeyRule::Segments(n) => {
            out.push(1);
            put_varint(out, u64::from(n.get()));
        }
    }
}

/// Decodes what [`encode_keyspace`] wrote.
pub(crate) fn decode_keyspace(d: &mut Decoder) -> Result<Keyspace, CodecError> {
    let count = u32::try_from(d.varint()?).map_err(|_| d.invalid("keyspace shard count"))?;
    let rule = match d.tag("hash key rule", 1)? {
        0 => HashKeyRule::WholeKey,
        _ => {
            let n = u32::try_from(d.varint()?).ok().and_then(std::num::NonZeroU32::new);
            HashKeyRule::Segments(n.ok_or_else(|| d.invalid("hash key segments"))?)
        }
    };
    Keyspace::new(count, rule).map_err(|_| d.invalid("keyspace shard count"))
}

/// A keyspace as operators read it: `4 shards (hash key: whole key)`.
pub(crate) fn describe_keyspace(k: &Keyspace) -> String {
    let rule = match k.rule() {
        HashKeyRule::WholeKey => "whole key".to_owned(),
        HashKeyRule::Segments(n) => format!("first {n} segments"),
    };
    let count = k.shard_count();
    format!("--shards {count} (hash key: {rule})")
}

/// One command in a shard's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Who waits for the answer; `None` for the node's own housekeeping
    /// (lease expiry, checkpoints, membership reconciliation, bootstrap).
    pub id: Option<ProposalId>,
    /// The client it is made for, whose rights are checked when it
    /// applies; `None` for the node's own housekeeping (never checked).
    pub auth: Option<AuthInfo>,
    /// What to do.
    pub body: ProposalBody,
}

impl Proposal {
    /// The encoded proposal, as a log entry's payload.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(encode_to_vec(self))
    }

    /// Decodes a log entry's payload.
    ///
    /// # Errors
    /// The payload is not exactly one well-formed proposal.
    pub fn from_bytes(payload: Bytes) -> Result<Proposal, CodecError> {
        decode_exact(payload)
    }
}

impl Wire for ProposalId {
    fn encode(&self, out: &mut Vec<u8>) {
        self.node.encode(out);
        put_varint(out, self.seq);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(ProposalId { node: NodeId::decode(d)?, seq: d.varint()? })
    }
}

/// [`Member`]'s flags byte: a learner.
const MEMBER_LEARNER: u8 = 1;

/// [`Member`]'s flags byte: a zone label follows.
const MEMBER_ZONED: u8 = 2;

/// Encoding: id, name, peer URLs, client URLs, a flags byte, then the
/// zone if the flags say so. The flags byte was the learner bool before
/// zones existed (0 or 1): records written then decode as members without
/// a zone, and a member without a zone is still written that way.
impl Wire for Member {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        put_str(out, &self.name);
        self.peer_urls.encode(out);
        self.client_urls.encode(out);
        let mut flags = 0;
        if self.is_learner {
            flags |= MEMBER_LEARNER;
        }
        if self.zone.is_some() {
            flags |= MEMBER_ZONED;
        }
        out.push(flags);
        if let Some(zone) = &self.zone {
            put_str(out, zone);
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let id = NodeId::decode(d)?;
        let name = d.string()?;
        let peer_urls = Vec::<String>::decode(d)?;
        let client_urls = Vec::<String>::decode(d)?;
        let at = d.position();
        let flags = d.u8()?;
        if flags & !(MEMBER_LEARNER | MEMBER_ZONED) != 0 {
            return Err(CodecError::BadTag { what: "member flags", tag: flags, at });
        }
        let zone = if flags & MEMBER_ZONED != 0 { Some(d.string()?) } else { None };
        let m = Member {
            id,
            name,
            peer_urls,
            client_urls,
            is_learner: flags & MEMBER_LEARNER != 0,
            zone,
        };
        if !m.id.is_valid() {
            return Err(d.invalid("member (id 0)"));
        }
        Ok(m)
    }
}

impl Wire for AlarmType {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.wire_value() as u8);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let at = d.position();
        match d.u8()? {
            1 => Ok(AlarmType::NoSpace),
            2 => Ok(AlarmType::Corrupt),
            tag => Err(CodecError::BadTag { what: "alarm type", tag, at }),
        }
    }
}

impl Wire for AlarmMember {
    fn encode(&self, out: &mut Vec<u8>) {
        self.member.encode(out);
        self.alarm.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(AlarmMember { member: NodeId::decode(d)?, alarm: AlarmType::decode(d)? })
    }
}

impl Wire for MemberChange {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            MemberChange::Add(m) => {
                out.push(0);
                m.encode(out);
            }
            MemberChange::Remove(id) => {
                out.push(1);
                id.encode(out);
            }
            MemberChange::Update { id, peer_urls } => {
                out.push(2);
                id.encode(out);
                peer_urls.encode(out);
            }
            MemberChange::Promote(id) => {
                out.push(3);
                id.encode(out);
            }
            MemberChange::Publish { id, name, client_urls, zone } => {
                // Tag 4 was the publish before zones (no zone field).
                out.push(5);
                id.encode(out);
                put_str(out, name);
                client_urls.encode(out);
                zone.encode(out);
            }
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(match d.tag("member change", 5)? {
            0 => MemberChange::Add(Member::decode(d)?),
            1 => MemberChange::Remove(NodeId::decode(d)?),
            2 => MemberChange::Update {
                id: NodeId::decode(d)?,
                peer_urls: Vec::<String>::decode(d)?,
            },
            3 => MemberChange::Promote(NodeId::decode(d)?),
            4 => MemberChange::Publish {
                id: NodeId::decode(d)?,
                name: d.string()?,
                client_urls: Vec::<String>::decode(d)?,
                zone: None,
            },
            _ => MemberChange::Publish {
                id: NodeId::decode(d)?,
                name: d.string()?,
                client_urls: Vec::<String>::decode(d)?,
                zone: Option::<String>::decode(d)?,
            },
        })
    }
}

impl Wire for AlarmChange {
    fn encode(&self, out: &mut Vec<u8>) {
        let (t, m) = match self {
            AlarmChange::Activate(m) => (0, m),
            AlarmChange::Deactivate(m) => (1, m),
        };
        out.push(t);
        m.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let t = d.tag("alarm change", 1)?;
        let m = AlarmMember::decode(d)?;
        Ok(if t == 0 { AlarmChange::Activate(m) } else { AlarmChange::Deactivate(m) })
    }
}

impl Wire for ClusterInit {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.cluster_id);
        self.members.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(ClusterInit { cluster_id: d.varint()?, members: Vec::decode(d)? })
    }
}

impl Wire for Layout {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_keyspace(&self.keyspace, out);
        put_varint(out, u64::from(self.replicas));
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let keyspace = decode_keyspace(d)?;
        let replicas = u32::try_from(d.varint()?)
            .ok()
            .filter(|r| (1..=ringkv_ring::REPLICAS_MAX).contains(r))
            .ok_or_else(|| d.invalid("replicas per shard"))?;
        Ok(Layout { keyspace, replicas })
    }
}

impl Wire for ShardTarget {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.shard.0);
        self.nodes.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let shard = ShardId(d.varint()?);
        let nodes = Vec::<NodeId>::decode(d)?;
        // Applied by every replica: a malformed set must not reach a table.
        if shard == crate::config::META_SHARD
            || nodes.is_empty()
            || !nodes.windows(2).all(|w| w[0] < w[1])
            || nodes.iter().any(|n| !n.is_valid())
        {
            return Err(d.invalid("shard target"));
        }
        Ok(ShardTarget { shard, nodes })
    }
}

impl Wire for ShardConfig {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.shard.0);
        put_varint(out, self.applied.0);
        self.voters.encode(out);
        self.learners.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let shard = ShardId(d.varint()?);
        let applied = LogIndex(d.varint()?);
        let voters = Vec::<NodeId>::decode(d)?;
        let learners = Vec::<NodeId>::decode(d)?;
        let sorted = |v: &[NodeId]| v.windows(2).all(|w| w[0] < w[1]);
        // Applied by every replica: a malformed set must not reach a table.
        if shard == crate::config::META_SHARD
            || voters.is_empty()
            || !sorted(&voters)
            || !sorted(&learners)
            || voters.iter().chain(&learners).any(|n| !n.is_valid())
            || learners.iter().any(|l| voters.contains(l))
        {
            return Err(d.invalid("shard configuration"));
        }
        Ok(ShardConfig { shard, applied, voters, learners })
    }
}

impl Wire for DrainChange {
    fn encode(&self, out: &mut Vec<u8>) {
        self.member.encode(out);
        out.push(u8::from(self.draining));
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let member = NodeId::decode(d)?;
        let draining = d.tag("drain flag", 1)? == 1;
        // Applied by every replica: a malformed id must not reach a table.
        if !member.is_valid() {
            return Err(d.invalid("drained member"));
        }
        Ok(DrainChange { member, draining })
    }
}

impl Wire for Proposal {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(PROPOSAL_FORMAT);
        self.id.encode(out);
        self.auth.encode(out);
        match &self.body {
            ProposalBody::Kv(c) => {
                out.push(0);
                c.encode(out);
            }
            ProposalBody::Member(m) => {
                out.push(1);
                m.encode(out);
            }
            ProposalBody::Alarm(a) => {
                out.push(2);
                a.encode(out);
            }
            ProposalBody::InitCluster(i) => {
                out.push(3);
                i.encode(out);
            }
            ProposalBody::Auth(a) => {
                out.push(4);
                a.encode(out);
            }
            ProposalBody::Keyspace(k) => {
                out.push(5);
                encode_keyspace(k, out);
            }
            ProposalBody::AuthSync(a) => {
                out.push(6);
                a.encode(out);
            }
            ProposalBody::Layout(l) => {
                out.push(7);
                l.encode(out);
            }
            ProposalBody::ShardTargets(t) => {
                out.push(8);
                t.encode(out);
            }
            ProposalBody::ShardConfig(c) => {
                out.push(9);
                c.encode(out);
            }
            ProposalBody::InitialTargets(t) => {
                out.push(10);
                t.encode(out);
            }
            ProposalBody::Drain(c) => {
                out.push(11);
                c.encode(out);
            }
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let at = d.position();
        let format = d.u8()?;
        if format != PROPOSAL_FORMAT && format != PROPOSAL_FORMAT_NO_CALLER {
            return Err(CodecError::BadTag { what: "proposal format", tag: format, at });
        }
        let id = Option::<ProposalId>::decode(d)?;
        let auth = if format == PROPOSAL_FORMAT { Option::<AuthInfo>::decode(d)? } else { None };
        let body = match d.tag("proposal body", 11)? {
            0 => ProposalBody::Kv(Command::decode(d)?),
            1 => ProposalBody::Member(MemberChange::decode(d)?),
            2 => ProposalBody::Alarm(AlarmChange::decode(d)?),
            3 => ProposalBody::InitCluster(ClusterInit::decode(d)?),
            4 => ProposalBody::Auth(AuthChange::decode(d)?),
            5 => ProposalBody::Keyspace(decode_keyspace(d)?),
            6 => ProposalBody::AuthSync(AuthSnapshot::decode(d)?),
            7 => ProposalBody::Layout(Layout::decode(d)?),
            8 => ProposalBody::ShardTargets(Vec::<ShardTarget>::decode(d)?),
            9 => ProposalBody::ShardConfig(ShardConfig::decode(d)?),
            10 => ProposalBody::InitialTargets(Vec::<ShardTarget>::decode(d)?),
            _ => ProposalBody::Drain(DrainChange::decode(d)?),
        };
        Ok(Proposal { id, auth, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringkv_storage::mvcc::{LeaseId, LeaseRevokeRequest, PutRequest};

    fn member() -> impl Strategy<Value = Member> {
        (
            1u64..u64::MAX,
            "[a-z]{0,8}",
            prop::collection::vec("[a-z:/0-9]{0,12}", 0..3),
            prop::collection::vec("[a-z:/0-9]{0,12}", 0..3),
            any::<bool>(),
            prop::option::of("[a-z0-9/-]{0,12}"),
        )
            .prop_map(|(id, name, peer_urls, client_urls, is_learner, zone)| Member {
                id: NodeId(id),
                name,
                peer_urls,
                client_urls,
                is_learner,
                zone,
            })
    }

    /// A member as the code before zones wrote it: the learner flag as
    /// a bool, nothing after it.
    fn member_before_zones(m: &Member) -> Vec<u8> {
        let mut out = Vec::new();
        m.id.encode(&mut out);
        put_str(&mut out, &m.name);
        m.peer_urls.encode(&mut out);
        m.client_urls.encode(&mut out);
        m.is_learner.encode(&mut out);
        out
    }

    fn body() -> impl Strategy<Value = ProposalBody> {
        prop_oneof![
            (any::<i64>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(lease, key)| {
                ProposalBody::Kv(Command::Put(PutRequest {
                    key: Bytes::from(key),
                    lease: LeaseId(lease),
                    ..PutRequest::default()
                }))
            }),
            any::<i64>().prop_map(|id| ProposalBody::Kv(Command::LeaseRevoke(
                LeaseRevokeRequest { id: LeaseId(id) }
            ))),
            member().prop_map(|m| ProposalBody::Member(MemberChange::Add(m))),
            (1u64..u64::MAX).prop_map(|id| ProposalBody::Member(MemberChange::Remove(NodeId(id)))),
            (1u64..u64::MAX, prop::collection::vec("[a-z]{0,5}", 0..3)).prop_map(|(id, urls)| {
                ProposalBody::Member(MemberChange::Update { id: NodeId(id), peer_urls: urls })
            }),
            (1u64..u64::MAX).prop_map(|id| ProposalBody::Member(MemberChange::Promote(NodeId(id)))),
            (1u64..u64::MAX, "[a-z]{0,5}", prop::option::of("[a-z0-9-]{0,8}")).prop_map(
                |(id, name, zone)| {
                    ProposalBody::Member(MemberChange::Publish {
                        id: NodeId(id),
                        name,
                        client_urls: vec!["http://c".into()],
                        zone,
                    })
                }
            ),
            (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(m, on, space)| {
                let alarm = if space { AlarmType::NoSpace } else { AlarmType::Corrupt };
                let am = AlarmMember { member: NodeId(m), alarm };
                ProposalBody::Alarm(if on {
                    AlarmChange::Activate(am)
                } else {
                    AlarmChange::Deactivate(am)
                })
            }),
            (any::<u64>(), prop::collection::vec(member(), 0..4)).prop_map(
                |(cluster_id, members)| {
                    ProposalBody::InitCluster(ClusterInit { cluster_id, members })
                }
            ),
            auth_change().prop_map(ProposalBody::Auth),
            any::<u64>().prop_map(|meta_index| {
                let store = crate::auth::AuthStore::default();
                ProposalBody::AuthSync(AuthSnapshot { meta_index, store })
            }),
            (1u32..=ringkv_ring::SHARD_COUNT_MAX, 0u32..4).prop_map(|(count, segments)| {
                let rule = std::num::NonZeroU32::new(segments)
                    .map_or(HashKeyRule::WholeKey, HashKeyRule::Segments);
                ProposalBody::Keyspace(Keyspace::new(count, rule).unwrap())
            }),
            (2u32..=64, 1u32..=ringkv_ring::REPLICAS_MAX).prop_map(|(count, replicas)| {
                let keyspace = Keyspace::new(count, HashKeyRule::WholeKey).unwrap();
                ProposalBody::Layout(Layout { keyspace, replicas })
            }),
            prop::collection::vec(
                (1u64..1000, prop::collection::btree_set(1u64..u64::MAX, 1..5)),
                0..4
            )
            .prop_map(|targets| {
                ProposalBody::ShardTargets(
                    targets
                        .into_iter()
                        .map(|(shard, nodes)| ShardTarget {
                            shard: ShardId(shard),
                            nodes: nodes.into_iter().map(NodeId).collect(),
                        })
                        .collect(),
                )
            }),
            (
                1u64..1000,
                any::<u64>(),
                prop::collection::btree_set(1u64..u64::MAX, 1..5),
                prop::collection::btree_set(1u64..u64::MAX, 0..3)
            )
                .prop_map(|(shard, applied, voters, learners)| {
                    let learners = learners.difference(&voters).copied().map(NodeId).collect();
                    ProposalBody::ShardConfig(ShardConfig {
                        shard: ShardId(shard),
                        applied: LogIndex(applied),
                        voters: voters.into_iter().map(NodeId).collect(),
                        learners,
                    })
                }),
            (1u64..1000, prop::collection::btree_set(1u64..u64::MAX, 1..5)).prop_map(
                |(shard, nodes)| {
                    ProposalBody::InitialTargets(vec![ShardTarget {
                        shard: ShardId(shard),
                        nodes: nodes.into_iter().map(NodeId).collect(),
                    }])
                }
            ),
            (1u64..u64::MAX, any::<bool>()).prop_map(|(member, draining)| {
                ProposalBody::Drain(DrainChange { member: NodeId(member), draining })
            }),
        ]
    }

    fn auth_change() -> impl Strategy<Value = AuthChange> {
        use crate::auth::{Permission, PermissionType};
        let name = "[a-z/]{0,6}";
        let bytes = prop::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from);
        prop_oneof![
            Just(AuthChange::Enable),
            Just(AuthChange::Disable),
            (name, prop::option::of("[ -~]{0,12}"), any::<bool>()).prop_map(
                |(name, password_hash, no_password)| AuthChange::UserAdd {
                    name,
                    password_hash,
                    no_password
                }
            ),
            name.prop_map(|name| AuthChange::UserDelete { name }),
            (name, prop::option::of("[ -~]{0,12}")).prop_map(|(name, password_hash)| {
                AuthChange::UserChangePassword { name, password_hash }
            }),
            (name, name).prop_map(|(user, role)| AuthChange::UserGrantRole { user, role }),
            (name, name).prop_map(|(user, role)| AuthChange::UserRevokeRole { user, role }),
            name.prop_map(|name| AuthChange::RoleAdd { name }),
            name.prop_map(|name| AuthChange::RoleDelete { name }),
            (name, 0..3i32, bytes.clone(), bytes.clone()).prop_map(|(role, t, key, range_end)| {
                let kind = PermissionType::from_wire(t).unwrap();
                AuthChange::RoleGrantPermission {
                    role,
                    permission: Permission { kind, key, range_end },
                }
            }),
            (name, bytes.clone(), bytes).prop_map(|(role, key, range_end)| {
                AuthChange::RoleRevokePermission { role, key, range_end }
            }),
            (name, "[a-z0-9.]{0,16}", any::<u64>()).prop_map(|(user, token, checked_revision)| {
                AuthChange::IssueToken { user, token, checked_revision }
            }),
        ]
    }

    proptest! {
        #[test]
        fn proposals_roundtrip(
            id in prop::option::of((1u64..u64::MAX, any::<u64>())),
            auth in prop::option::of(("[a-z]{0,6}", any::<u64>())),
            body in body(),
        ) {
            let p = Proposal {
                id: id.map(|(n, seq)| ProposalId { node: NodeId(n), seq }),
                auth: auth.map(|(user, revision)| AuthInfo { user, revision }),
                body,
            };
            let bytes = p.to_bytes();
            prop_assert_eq!(Proposal::from_bytes(bytes.clone()).unwrap(), p);
            for cut in 0..bytes.len() {
                prop_assert!(Proposal::from_bytes(bytes.slice(..cut)).is_err());
            }
        }

        /// Member records and member lists written before zones existed
        /// read back as members without a zone; a member without a zone
        /// is still written exactly as then.
        #[test]
        fn a_member_written_before_zones_decodes_without_one(m in member()) {
            let old = Member { zone: None, ..m };
            let bytes = member_before_zones(&old);
            prop_assert_eq!(&encode_to_vec(&old), &bytes);
            prop_assert_eq!(&decode_exact::<Member>(Bytes::from(bytes.clone())).unwrap(), &old);
            let mut add = vec![0u8];
            add.extend_from_slice(&bytes);
            let change = decode_exact::<MemberChange>(Bytes::from(add)).unwrap();
            prop_assert_eq!(change, MemberChange::Add(old));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = Proposal::from_bytes(Bytes::from(bytes));
        }
    }

    #[test]
    fn a_malformed_shard_target_is_refused() {
        let bad = [
            ShardTarget { shard: crate::config::META_SHARD, nodes: vec![NodeId(1)] },
            ShardTarget { shard: ShardId(1), nodes: vec![] },
            ShardTarget { shard: ShardId(1), nodes: vec![NodeId(2), NodeId(1)] },
            ShardTarget { shard: ShardId(1), nodes: vec![NodeId(1), NodeId(1)] },
        ];
        for t in bad {
            let p = Proposal { id: None, auth: None, body: ProposalBody::ShardTargets(vec![t]) };
            assert!(Proposal::from_bytes(p.to_bytes()).is_err(), "{p:?}");
        }
    }

    #[test]
    fn a_member_with_id_zero_is_refused() {
        let p = Proposal {
            id: None,
            auth: None,
            body: ProposalBody::Member(MemberChange::Add(Member::default())),
        };
        assert!(Proposal::from_bytes(p.to_bytes()).is_err());
    }

    /// A publish written before zones (tag 4, no zone field) still applies,
    /// as a publish of no zone; an unknown flag bit in a member is refused.
    #[test]
    fn a_publish_written_before_zones_decodes_without_a_zone() {
        let mut v4 = vec![4u8];
        NodeId(9).encode(&mut v4);
        put_str(&mut v4, "m9");
        vec!["http://c".to_owned()].encode(&mut v4);
        let want = MemberChange::Publish {
            id: NodeId(9),
            name: "m9".into(),
            client_urls: vec!["http://c".into()],
            zone: None,
        };
        assert_eq!(decode_exact::<MemberChange>(Bytes::from(v4)).unwrap(), want);

        let zoned = Member { id: NodeId(3), zone: Some("eu-1".into()), ..Member::default() };
        let mut bytes = encode_to_vec(&zoned);
        assert_eq!(decode_exact::<Member>(Bytes::from(bytes.clone())).unwrap(), zoned);
        let flags_at = bytes.len() - 1 - "eu-1".len() - 1;
        assert_eq!(bytes[flags_at], MEMBER_ZONED);
        bytes[flags_at] |= 4;
        assert!(decode_exact::<Member>(Bytes::from(bytes)).is_err());
    }

    /// Entries written before the caller was added still apply.
    #[test]
    fn a_format_1_proposal_decodes_without_a_caller() {
        let body = ProposalBody::Member(MemberChange::Remove(NodeId(7)));
        let p = Proposal { id: Some(ProposalId { node: NodeId(3), seq: 9 }), auth: None, body };
        let mut v1 = vec![PROPOSAL_FORMAT_NO_CALLER];
        p.id.encode(&mut v1);
        v1.push(1);
        MemberChange::Remove(NodeId(7)).encode(&mut v1);
        assert_eq!(Proposal::from_bytes(Bytes::from(v1)).unwrap(), p);
    }
}
