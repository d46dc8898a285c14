//! The simulated replicas' state machine: a small deterministic key-value
//! map applied from committed entries, and the commands clients put in
//! entries.
//!
//! Every key maps to `(value, mod_revision)`; a write's revision is the log
//! index of the entry that made it, so revisions grow with every write as
//! etcd's do (with gaps, which the linearizability model allows). Commands
//! carry the client's id and a per-client sequence number, and the store
//! remembers each client's last applied command and its result (a client
//! session): a command retried through another replica is applied at most
//! once and answered with the first result, which is what lets a client
//! retry a write without risking a double effect.
//!
//! The store also keeps a *chain*: a hash over every applied entry in index
//! order, carried in snapshots. Two replicas that applied different entries
//! anywhere before index `i` have different chains at `i`, so the
//! state-machine checker can verify snapshots, not only entries. What
//! "different entries" means is the engine's [`Identity`]: for Raft the
//! chain covers each entry's epoch too; for Multi-Paxos only its kind and
//! payload, since replicas may hold one chosen value under different
//! ballots.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_consensus::codec::{Decoder, put_bytes, put_varint};
use ringkv_consensus::{CodecError, Entry, EntryKind, LogIndex};

use crate::checkers::Identity;
use crate::trace::mix;

/// A client process's identity in commands and sessions.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// The condition of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key holds this value (`None`: the key is absent).
    Value(Option<Bytes>),
    /// The key's mod revision is this one (0: the key is absent).
    ModRevision(u64),
}

/// A write a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// If `expect` holds for `key`, set it to `value`.
    Cas {
        /// The key.
        key: Bytes,
        /// The condition.
        expect: Expect,
        /// The value written when the condition holds.
        value: Bytes,
    },
}

impl KvOp {
    /// The key it writes.
    pub fn key(&self) -> &Bytes {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
        }
    }
}

/// A write command as carried in a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client that issued it.
    pub client: ClientId,
    /// The client's sequence number for it; a client's commands grow.
    pub seq: u64,
    /// What to do.
    pub op: KvOp,
}

/// What a write did, as answered to the client.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// A put created `revision`.
    Put {
        /// The new mod revision of the key.
        revision: u64,
    },
    /// A delete.
    Delete {
        /// Whether the key existed.
        deleted: bool,
        /// The store revision after it.
        revision: u64,
    },
    /// A compare-and-set.
    Cas {
        /// Whether the condition held and the value was written.
        succeeded: bool,
        /// The store revision after it.
        revision: u64,
    },
}

/// Why an entry could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Entries must be applied in index order, without gaps or repeats.
    #[error("entry {got} applied after {applied}: entries must be applied in order without gaps")]
    OutOfOrder {
        /// The index applied last.
        applied: LogIndex,
        /// The index offered.
        got: LogIndex,
    },
    /// A command entry does not decode.
    #[error("the command at index {index} does not decode: {source}")]
    BadCommand {
        /// Where it is.
        index: LogIndex,
        /// Why.
        source: CodecError,
    },
}

/// Why snapshot data could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state-machine snapshot does not decode: {source}")]
pub struct RestoreError {
    /// Why.
    #[source]
    pub source: CodecError,
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS_VALUE: u8 = 3;
const OP_CAS_ABSENT: u8 = 4;
const OP_CAS_REVISION: u8 = 5;

impl Command {
    /// The entry payload for this command.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(32);
        put_varint(&mut out, self.client.0);
        put_varint(&mut out, self.seq);
        match &self.op {
            KvOp::Put { key, value } => {
                out.push(OP_PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            KvOp::Delete { key } => {
                out.push(OP_DELETE);
                put_bytes(&mut out, key);
            }
            KvOp::Cas { key, expect, value } => {
                match expect {
                    Expect::Value(Some(v)) => {
                        out.push(OP_CAS_VALUE);
                        put_bytes(&mut out, v);
                    }
                    Expect::Value(None) => out.push(OP_CAS_ABSENT),
                    Expect::ModRevision(r) => {
                        out.push(OP_CAS_REVISION);
                        put_varint(&mut out, *r);
                    }
                }
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
        }
        Bytes::from(out)
    }

    /// Decodes an entry payload.
    ///
    /// # Errors
    /// The payload is not a command.
    pub fn decode(payload: &Bytes) -> Result<Command, CodecError> {
        let mut d = Decoder::new(payload.clone());
        let client = ClientId(d.varint()?);
        let seq = d.varint()?;
        let op = match d.u8()? {
            OP_PUT => KvOp::Put { key: d.bytes()?, value: d.bytes()? },
            OP_DELETE => KvOp::Delete { key: d.bytes()? },
            tag @ (OP_CAS_VALUE | OP_CAS_ABSENT | OP_CAS_REVISION) => {
                let expect = match tag {
                    OP_CAS_VALUE => Expect::Value(Some(d.bytes()?)),
                    OP_CAS_ABSENT => Expect::Value(None),
                    _ => Expect::ModRevision(d.varint()?),
                };
                KvOp::Cas { key: d.bytes()?, expect, value: d.bytes()? }
            }
            _ => return Err(d.invalid("command op")),
        };
        if d.remaining() != 0 {
            return Err(CodecError::Trailing { count: d.remaining() });
        }
        Ok(Command { client, seq, op })
    }
}

/// The reply an applied command owes its client, if any.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The client.
    pub client: ClientId,
    /// Its sequence number.
    pub seq: u64,
    /// The result (the first one, for a repeated command).
    pub result: WriteResult,
}

/// The deterministic key-value state machine of one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    /// Index of the last applied entry.
    applied: LogIndex,
    /// Hash over every entry applied so far (see the module docs).
    chain: u64,
    /// What the chain covers of each entry.
    identity: Identity,
    /// key → (value, mod revision).
    data: BTreeMap<Bytes, (Bytes, u64)>,
    /// client → (last applied sequence number, its result).
    sessions: BTreeMap<ClientId, (u64, WriteResult)>,
}

/// Tag of a snapshot encoding, to refuse foreign bytes.
const SNAPSHOT_VERSION: u8 = 1;

fn put_result(out: &mut Vec<u8>, r: WriteResult) {
    let (tag, flag, revision) = match r {
        WriteResult::Put { revision } => (1, false, revision),
        WriteResult::Delete { deleted, revision } => (2, deleted, revision),
        WriteResult::Cas { succeeded, revision } => (3, succeeded, revision),
    };
    out.push(tag);
    out.push(u8::from(flag));
    put_varint(out, revision);
}

fn get_result(d: &mut Decoder) -> Result<WriteResult, CodecError> {
    let tag = d.u8()?;
    let flag = d.bool()?;
    let revision = d.varint()?;
    match tag {
        1 => Ok(WriteResult::Put { revision }),
        2 => Ok(WriteResult::Delete { deleted: flag, revision }),
        3 => Ok(WriteResult::Cas { succeeded: flag, revision }),
        _ => Err(d.invalid("write result")),
    }
}

impl KvStore {
    /// An empty store at index 0, for an engine whose entries are named
    /// by `identity`.
    pub fn new(identity: Identity) -> KvStore {
        KvStore { identity, ..KvStore::default() }
    }

    /// Index of the last applied entry.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// The chain hash at [`KvStore::applied`].
    pub fn chain(&self) -> u64 {
        self.chain
    }

    /// The value and mod revision of `key`.
    pub fn get(&self, key: &[u8]) -> Option<(Bytes, u64)> {
        self.data.get(key).cloned()
    }

    /// Applies the next entry; returns the reply a command owes its client.
    ///
    /// # Errors
    /// The entry is not the next one, or its command does not decode.
    pub fn apply(&mut self, entry: &Entry) -> Result<Option<Applied>, ApplyError> {
        if entry.index != self.applied.next() {
            return Err(ApplyError::OutOfOrder { applied: self.applied, got: entry.index });
        }
        let reply = if entry.kind == EntryKind::Command {
            let cmd = Command::decode(&entry.payload)
                .map_err(|source| ApplyError::BadCommand { index: entry.index, source })?;
            self.apply_command(entry.index, cmd)
        } else {
            None
        };
        self.applied = entry.index;
        self.chain = entry_chain(self.identity, self.chain, entry);
        Ok(reply)
    }

    fn apply_command(&mut self, index: LogIndex, cmd: Command) -> Option<Applied> {
        let Command { client, seq, op } = cmd;
        match self.sessions.get(&client) {
            Some(&(last, result)) if last == seq => {
                // A retry of a command already applied: same answer, no effect.
                return Some(Applied { client, seq, result });
            }
            // An older command, committed after the client moved on: it
            // never takes effect (the client recorded it as unknown).
            Some(&(last, _)) if last > seq => return None,
            _ => {}
        }
        let revision = index.0;
        let result = match op {
            KvOp::Put { key, value } => {
                self.data.insert(key, (value, revision));
                WriteResult::Put { revision }
            }
            KvOp::Delete { key } => {
                let deleted = self.data.remove(&key).is_some();
                WriteResult::Delete { deleted, revision }
            }
            KvOp::Cas { key, expect, value } => {
                let current = self.data.get(&key);
                let holds = match &expect {
                    Expect::Value(v) => current.map(|(cv, _)| cv) == v.as_ref(),
                    Expect::ModRevision(r) => current.map_or(0, |(_, mr)| *mr) == *r,
                };
                if holds {
                    self.data.insert(key, (value, revision));
                }
                WriteResult::Cas { succeeded: holds, revision }
            }
        };
        self.sessions.insert(client, (seq, result));
        Some(Applied { client, seq, result })
    }

    /// The store's serialisation, for a snapshot at [`KvStore::applied`].
    pub fn snapshot(&self) -> Bytes {
        let mut out = Vec::with_capacity(64 + self.data.len() * 16);
        out.push(SNAPSHOT_VERSION);
        put_varint(&mut out, self.applied.0);
        out.extend_from_slice(&self.chain.to_le_bytes());
        put_varint(&mut out, self.data.len() as u64);
        for (k, (v, r)) in &self.data {
            put_bytes(&mut out, k);
            put_bytes(&mut out, v);
            put_varint(&mut out, *r);
        }
        put_varint(&mut out, self.sessions.len() as u64);
        for (c, (seq, result)) in &self.sessions {
            put_varint(&mut out, c.0);
            put_varint(&mut out, *seq);
            put_result(&mut out, *result);
        }
        Bytes::from(out)
    }

    /// A store restored from [`KvStore::snapshot`] output, for an engine
    /// whose entries are named by `identity`.
    ///
    /// # Errors
    /// The bytes are not a snapshot of this store.
    pub fn restore(data: Bytes, identity: Identity) -> Result<KvStore, RestoreError> {
        let r = || -> Result<KvStore, CodecError> {
            let mut d = Decoder::new(data);
            if d.u8()? != SNAPSHOT_VERSION {
                return Err(d.invalid("snapshot version"));
            }
            let applied = LogIndex(d.varint()?);
            let mut chain = [0u8; 8];
            for b in &mut chain {
                *b = d.u8()?;
            }
            let chain = u64::from_le_bytes(chain);
            let mut store = KvStore { applied, chain, identity, ..KvStore::default() };
            for _ in 0..d.len(3)? {
                let k = d.bytes()?;
                let v = d.bytes()?;
                let r = d.varint()?;
                store.data.insert(k, (v, r));
            }
            for _ in 0..d.len(4)? {
                let c = ClientId(d.varint()?);
                let seq = d.varint()?;
                let result = get_result(&mut d)?;
                store.sessions.insert(c, (seq, result));
            }
            if d.remaining() != 0 {
                return Err(CodecError::Trailing { count: d.remaining() });
            }
            Ok(store)
        };
        r().map_err(|source| RestoreError { source })
    }
}

/// The chain after applying `entry` to a store whose chain is `chain`.
pub fn entry_chain(identity: Identity, chain: u64, entry: &Entry) -> u64 {
    let kind = match entry.kind {
        EntryKind::Command => 1,
        EntryKind::Noop => 2,
        EntryKind::Membership => 3,
    };
    let mut h = mix(chain, entry.index.0);
    if identity == Identity::Epoch {
        h = mix(h, entry.epoch.round);
        h = mix(h, entry.epoch.node.0);
    }
    h = mix(h, kind);
    mix(h, crate::trace::hash_bytes(&entry.payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_consensus::Epoch;

    fn entry(index: u64, cmd: &Command) -> Entry {
        Entry {
            index: LogIndex(index),
            epoch: Epoch::term(1),
            kind: EntryKind::Command,
            payload: cmd.encode(),
        }
    }

    fn put(client: u64, seq: u64, key: &'static str, value: &'static str) -> Command {
        Command {
            client: ClientId(client),
            seq,
            op: KvOp::Put { key: Bytes::from(key), value: Bytes::from(value) },
        }
    }

    #[test]
    fn commands_round_trip() {
        let cmds = [
            put(1, 2, "k", "v"),
            Command { client: ClientId(3), seq: 4, op: KvOp::Delete { key: Bytes::from("k") } },
            Command {
                client: ClientId(5),
                seq: 6,
                op: KvOp::Cas {
                    key: Bytes::from("k"),
                    expect: Expect::Value(None),
                    value: Bytes::from("x"),
                },
            },
            Command {
                client: ClientId(5),
                seq: 7,
                op: KvOp::Cas {
                    key: Bytes::from("k"),
                    expect: Expect::ModRevision(9),
                    value: Bytes::from("x"),
                },
            },
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()), Ok(c));
        }
        assert!(Command::decode(&Bytes::from_static(b"\x01\x01\x09")).is_err());
    }

    #[test]
    fn retried_command_applies_once() {
        let mut s = KvStore::new(Identity::Epoch);
        let first = s.apply(&entry(1, &put(1, 1, "k", "a"))).unwrap().unwrap();
        assert_eq!(first.result, WriteResult::Put { revision: 1 });
        let again = s.apply(&entry(2, &put(1, 1, "k", "a"))).unwrap().unwrap();
        assert_eq!(again.result, WriteResult::Put { revision: 1 });
        assert_eq!(s.get(b"k"), Some((Bytes::from("a"), 1)));
        // An older command arriving late does nothing and owes no reply.
        s.apply(&entry(3, &put(1, 2, "k", "b"))).unwrap();
        assert_eq!(s.apply(&entry(4, &put(1, 1, "k", "z"))).unwrap(), None);
        assert_eq!(s.get(b"k"), Some((Bytes::from("b"), 3)));
    }

    #[test]
    fn cas_compares_value_or_revision() {
        let mut s = KvStore::new(Identity::Epoch);
        let cas = |seq, expect, value: &'static str| Command {
            client: ClientId(1),
            seq,
            op: KvOp::Cas { key: Bytes::from("k"), expect, value: Bytes::from(value) },
        };
        let r = s.apply(&entry(1, &cas(1, Expect::ModRevision(0), "a"))).unwrap().unwrap();
        assert_eq!(r.result, WriteResult::Cas { succeeded: true, revision: 1 });
        let r = s.apply(&entry(2, &cas(2, Expect::Value(None), "b"))).unwrap().unwrap();
        assert_eq!(r.result, WriteResult::Cas { succeeded: false, revision: 2 });
        let r = s.apply(&entry(3, &cas(3, Expect::Value(Some(Bytes::from("a"))), "c")));
        assert_eq!(r.unwrap().unwrap().result, WriteResult::Cas { succeeded: true, revision: 3 });
        assert_eq!(s.get(b"k"), Some((Bytes::from("c"), 3)));
    }

    #[test]
    fn out_of_order_apply_is_refused() {
        let mut s = KvStore::new(Identity::Epoch);
        assert!(matches!(
            s.apply(&entry(2, &put(1, 1, "k", "a"))),
            Err(ApplyError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn snapshot_round_trips_with_chain() {
        let mut s = KvStore::new(Identity::Epoch);
        s.apply(&entry(1, &put(1, 1, "k", "a"))).unwrap();
        s.apply(&entry(2, &put(2, 1, "j", "b"))).unwrap();
        let r = KvStore::restore(s.snapshot(), Identity::Epoch).unwrap();
        assert_eq!(r, s);
        assert_ne!(r.chain(), 0);
        assert!(KvStore::restore(Bytes::from_static(b"\x07"), Identity::Epoch).is_err());
    }

    #[test]
    fn chain_covers_epochs_only_where_they_name_entries() {
        let e1 = entry(1, &put(1, 1, "k", "a"));
        let e2 = Entry { epoch: Epoch::term(2), ..e1.clone() };
        let chain = |identity, e: &Entry| {
            let mut s = KvStore::new(identity);
            s.apply(e).unwrap();
            s.chain()
        };
        assert_ne!(chain(Identity::Epoch, &e1), chain(Identity::Epoch, &e2));
        assert_eq!(chain(Identity::Value, &e1), chain(Identity::Value, &e2));
        let other = entry(1, &put(1, 1, "k", "b"));
        assert_ne!(chain(Identity::Value, &e1), chain(Identity::Value, &other));
    }
}
