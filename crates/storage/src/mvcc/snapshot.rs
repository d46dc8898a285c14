//! Streaming export and atomic restore of one shard's state.
//!
//! A snapshot is a sequence of self-checking chunks, each one `Bytes`
//! (one InstallSnapshot message, one file block):
//!
//! ```text
//! chunk   := kind:u8  seq:varint  payload:len-prefixed  crc32c:u32le (of all bytes before it)
//! header  := kind 0, seq 0:  magic "RKVMVCC1", format, source shard, applied index,
//!                            revision, compacted revision
//! data    := kind 1, seq 1..: records (history versions, changes, leases, lease keys,
//!                            and since format 2 the node layer's named records)
//! trailer := kind 2, last:   record count, data chunk count, crc32c of all data payloads
//! ```
//!
//! The export reads from one read transaction, so it is the exact state
//! at its applied index however long it takes and whatever is applied
//! meanwhile. The restore checks every chunk's checksum and sequence as it
//! goes and the trailer's totals at the end, inside one write transaction:
//! a corrupt, reordered or truncated stream is refused and the shard keeps
//! its previous state.

use std::ops::Bound;

use bytes::Bytes;
use ringkv_consensus::codec::{Decoder, put_bytes, put_varint};
use ringkv_consensus::{LogIndex, ShardId};

use super::SNAPSHOT_CHUNK_BYTES;
use super::apply::WriteTables;
use super::changes::{PACKED_SUB, for_each_change};
use super::error::{SnapshotError, StoreError};
use super::store::{MvccStore, ReadView, ShardState};
use super::tables::{LeaseRecord, NODE, ShardMeta, VersionRecord, invert, uninvert};
use super::types::Revision;

const MAGIC: &[u8; 8] = b"RKVMVCC1";
/// Format written. 2 added the named records ([`TAG_RECORD`]); format 1
/// snapshots (none) still restore.
const FORMAT: u64 = 2;
/// Oldest format restored.
const FORMAT_MIN: u64 = 1;

const KIND_HEADER: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_TRAILER: u8 = 2;

const TAG_HISTORY: u8 = 1;
const TAG_CHANGE: u8 = 2;
const TAG_LEASE: u8 = 3;
const TAG_LEASE_KEY: u8 = 4;
const TAG_RECORD: u8 = 5;

fn frame(kind: u8, seq: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.push(kind);
    put_varint(&mut out, seq);
    put_bytes(&mut out, payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(out)
}

/// Where the export is.
#[derive(Debug)]
enum Phase {
    Header,
    /// Versions after this (key, inverted revision), or from the start.
    History(Option<(Vec<u8>, u64)>),
    Changes(Option<(u64, u32)>),
    Leases(Option<i64>),
    LeaseKeys(Option<(i64, Vec<u8>)>),
    Records(Option<String>),
    Trailer,
    Done,
}

/// A shard's state as a stream of checksummed chunks (see the module docs).
///
/// Holds a read transaction for its lifetime: writes continue, but the
/// pages this view sees stay allocated until it is dropped.
#[derive(Debug)]
pub struct SnapshotExport {
    view: std::sync::Arc<ReadView>,
    shard: u64,
    meta: ShardMeta,
    phase: Phase,
    seq: u64,
    records: u64,
    data_chunks: u64,
    digest: u32,
}

impl SnapshotExport {
    /// The state the snapshot captures (its applied index is the log index
    /// it covers).
    pub fn state(&self) -> ShardState {
        self.meta.into()
    }

    fn fill(&mut self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let shard = self.shard;
        let full = |out: &Vec<u8>| out.len() >= SNAPSHOT_CHUNK_BYTES;
        loop {
            match &mut self.phase {
                Phase::History(cursor) => {
                    let lower = match cursor {
                        Some((k, inv)) => Bound::Excluded((shard, k.as_slice(), *inv)),
                        None => Bound::Included((shard, &[][..], 0)),
                    };
                    let iter = self
                        .view
                        .history
                        .range::<(u64, &[u8], u64)>((lower, Bound::Unbounded))
                        .map_err(StoreError::engine("snapshot history"))?;
                    let mut last = None;
                    let mut exhausted = true;
                    for item in iter {
                        let (k, v) = item.map_err(StoreError::engine("snapshot history"))?;
                        let (s, key, inv) = k.value();
                        if s != shard {
                            break;
                        }
                        out.push(TAG_HISTORY);
                        put_bytes(out, key);
                        put_varint(out, uninvert(inv) as u64);
                        put_bytes(out, v.value());
                        self.records += 1;
                        if full(out) {
                            last = Some((key.to_vec(), inv));
                            exhausted = false;
                            break;
                        }
                    }
                    self.phase =
                        if exhausted { Phase::Changes(None) } else { Phase::History(last) };
                }
                Phase::Changes(cursor) => {
                    // Entries, not rows (see `changes.rs`): a snapshot is
                    // the same whichever way the source batched its log.
                    let from = match cursor {
                        Some((rev, sub)) => (*rev, *sub + 1),
                        None => (self.meta.compacted.0 as u64, 0),
                    };
                    let mut next = Phase::Leases(None);
                    let records = &mut self.records;
                    for_each_change(&self.view.changes, shard, from, u64::MAX, |rev, sub, key| {
                        out.push(TAG_CHANGE);
                        put_varint(out, rev);
                        put_varint(out, u64::from(sub));
                        put_bytes(out, key);
                        *records += 1;
                        if full(out) {
                            next = Phase::Changes(Some((rev, sub)));
                            return Ok(false);
                        }
                        Ok(true)
                    })?;
                    self.phase = next;
                }
                Phase::Leases(cursor) => {
                    let lower = match cursor {
                        Some(id) => Bound::Excluded((shard, *id)),
                        None => Bound::Included((shard, i64::MIN)),
                    };
                    let upper = Bound::Included((shard, i64::MAX));
                    let iter = self
                        .view
                        .leases
                        .range::<(u64, i64)>((lower, upper))
                        .map_err(StoreError::engine("snapshot leases"))?;
                    let mut next = Phase::LeaseKeys(None);
                    for item in iter {
                        let (k, v) = item.map_err(StoreError::engine("snapshot leases"))?;
                        let id = k.value().1;
                        out.push(TAG_LEASE);
                        put_varint(out, id as u64);
                        put_bytes(out, v.value());
                        self.records += 1;
                        if full(out) {
                            next = Phase::Leases(Some(id));
                            break;
                        }
                    }
                    self.phase = next;
                }
                Phase::LeaseKeys(cursor) => {
                    let lower = match cursor {
                        Some((id, key)) => Bound::Excluded((shard, *id, key.as_slice())),
                        None => Bound::Included((shard, i64::MIN, &[][..])),
                    };
                    let iter = self
                        .view
                        .lease_keys
                        .range::<(u64, i64, &[u8])>((lower, Bound::Unbounded))
                        .map_err(StoreError::engine("snapshot lease keys"))?;
                    let mut next = Phase::Records(None);
                    for item in iter {
                        let (k, _) = item.map_err(StoreError::engine("snapshot lease keys"))?;
                        let (s, id, key) = k.value();
                        if s != shard {
                            break;
                        }
                        out.push(TAG_LEASE_KEY);
                        put_varint(out, id as u64);
                        put_bytes(out, key);
                        self.records += 1;
                        if full(out) {
                            next = Phase::LeaseKeys(Some((id, key.to_vec())));
                            break;
                        }
                    }
                    self.phase = next;
                }
                Phase::Records(cursor) => {
                    let lower = match cursor {
                        Some(name) => Bound::Excluded((shard, name.as_str())),
                        None => Bound::Included((shard, "")),
                    };
                    let iter = self
                        .view
                        .records
                        .range::<(u64, &str)>((lower, Bound::Unbounded))
                        .map_err(StoreError::engine("snapshot records"))?;
                    let mut next = Phase::Trailer;
                    for item in iter {
                        let (k, v) = item.map_err(StoreError::engine("snapshot records"))?;
                        let (s, name) = k.value();
                        if s != shard {
                            break;
                        }
                        out.push(TAG_RECORD);
                        put_bytes(out, name.as_bytes());
                        put_bytes(out, v.value());
                        self.records += 1;
                        if full(out) {
                            next = Phase::Records(Some(name.to_owned()));
                            break;
                        }
                    }
                    self.phase = next;
                }
                Phase::Header | Phase::Trailer | Phase::Done => return Ok(()),
            }
            if full(out) {
                return Ok(());
            }
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        match self.phase {
            Phase::Done => Ok(None),
            Phase::Header => {
                let mut p = MAGIC.to_vec();
                put_varint(&mut p, FORMAT);
                put_varint(&mut p, self.shard);
                put_varint(&mut p, self.meta.applied.0);
                put_varint(&mut p, self.meta.revision.0 as u64);
                put_varint(&mut p, self.meta.compacted.0 as u64);
                self.phase = Phase::History(None);
                Ok(Some(frame(KIND_HEADER, 0, &p)))
            }
            Phase::Trailer => {
                let mut p = Vec::new();
                put_varint(&mut p, self.records);
                put_varint(&mut p, self.data_chunks);
                p.extend_from_slice(&self.digest.to_le_bytes());
                self.phase = Phase::Done;
                self.seq += 1;
                Ok(Some(frame(KIND_TRAILER, self.seq, &p)))
            }
            _ => {
                let mut p = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES + 1024);
                self.fill(&mut p)?;
                if p.is_empty() {
                    // Nothing (more) to export: go straight to the trailer.
                    return self.next_chunk();
                }
                self.seq += 1;
                self.data_chunks += 1;
                self.digest = crc32c::crc32c_append(self.digest, &p);
                Ok(Some(frame(KIND_DATA, self.seq, &p)))
            }
        }
    }
}

impl Iterator for SnapshotExport {
    type Item = Result<Bytes, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(c) => c.map(Ok),
            Err(e) => {
                self.phase = Phase::Done;
                Some(Err(e.into()))
            }
        }
    }
}

/// One parsed chunk.
struct Chunk {
    kind: u8,
    seq: u64,
    payload: Bytes,
}

fn parse_chunk(index: u64, bytes: Bytes) -> Result<Chunk, SnapshotError> {
    let malformed = |detail: String| SnapshotError::Malformed { chunk: index, detail };
    if bytes.len() < 4 {
        return Err(malformed(format!("{} bytes is shorter than a checksum", bytes.len())));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let found = crc32c::crc32c(body);
    if expected != found {
        return Err(SnapshotError::ChecksumMismatch { chunk: index, expected, found });
    }
    let mut d = Decoder::new(bytes.slice(..bytes.len() - 4));
    let kind = d.u8().map_err(|e| malformed(e.to_string()))?;
    let seq = d.varint().map_err(|e| malformed(e.to_string()))?;
    let payload = d.bytes().map_err(|e| malformed(e.to_string()))?;
    if d.remaining() != 0 {
        return Err(malformed(format!("{} bytes after the payload", d.remaining())));
    }
    if seq != index {
        return Err(malformed(format!("sequence number {seq} where {index} was expected")));
    }
    Ok(Chunk { kind, seq, payload })
}

impl MvccStore {
    /// Starts exporting `shard` as of now (see [`SnapshotExport`]).
    ///
    /// Once the snapshot is stored where followers can fetch it, the WAL
    /// may drop the shard's entries up to [`SnapshotExport::state`]'s
    /// applied index (and, independently, up to
    /// [`MvccStore::durable_applied_index`]).
    ///
    /// # Errors
    /// The engine failed.
    pub fn snapshot(&self, shard: ShardId) -> Result<SnapshotExport, StoreError> {
        let view = self.read()?;
        let meta = view.meta(shard)?;
        Ok(SnapshotExport {
            view,
            shard: shard.0,
            meta,
            phase: Phase::Header,
            seq: 0,
            records: 0,
            data_chunks: 0,
            digest: 0,
        })
    }

    /// Replaces `shard`'s whole state by the snapshot in `chunks`,
    /// atomically and durably, and returns the restored counters.
    ///
    /// Every chunk is verified before it is used; on any error the shard
    /// keeps its previous state. Feed it from a local copy: the restore
    /// holds the store's write transaction (blocking applies to every
    /// shard) until the stream ends.
    ///
    /// # Errors
    /// A corrupt, malformed or truncated snapshot, or the store failed.
    pub fn restore(
        &self,
        shard: ShardId,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<ShardState, SnapshotError> {
        self.restore_with_node_records(shard, chunks, &[])
    }

    /// [`MvccStore::restore`], also writing `node_records` (see
    /// [`MvccStore::set_node_record`]) in the same transaction: the node
    /// records what the snapshot it installed stands for, so that a crash
    /// cannot separate the restored state from that fact.
    ///
    /// # Errors
    /// As [`MvccStore::restore`]; on error nothing is written.
    pub fn restore_with_node_records(
        &self,
        shard: ShardId,
        chunks: impl IntoIterator<Item = Bytes>,
        node_records: &[(&str, &[u8])],
    ) -> Result<ShardState, SnapshotError> {
        let mut chunks = chunks.into_iter();
        let header = chunks.next().ok_or(SnapshotError::Truncated { chunks: 0 })?;
        let header = parse_chunk(0, header)?;
        let meta = parse_header(&header)?;

        let txn = self.database().begin_write().map_err(StoreError::engine("begin restore"))?;
        {
            let mut tables = WriteTables::open(&txn)?;
            tables.clear_shard(shard.0)?;
            let mut records: u64 = 0;
            let mut digest: u32 = 0;
            let mut index: u64 = 1;
            let mut finished = false;
            for bytes in chunks.by_ref() {
                let chunk = parse_chunk(index, bytes)?;
                match chunk.kind {
                    KIND_DATA => {
                        digest = crc32c::crc32c_append(digest, &chunk.payload);
                        records += restore_records(&mut tables, shard.0, &meta, &chunk)?;
                    }
                    KIND_TRAILER => {
                        check_trailer(&chunk, records, index - 1, digest)?;
                        finished = true;
                        break;
                    }
                    kind => {
                        return Err(SnapshotError::Malformed {
                            chunk: index,
                            detail: format!("unexpected chunk kind {kind}"),
                        });
                    }
                }
                index += 1;
            }
            if !finished {
                return Err(SnapshotError::Truncated { chunks: index });
            }
            if chunks.next().is_some() {
                return Err(SnapshotError::Malformed {
                    chunk: index + 1,
                    detail: "chunks after the trailer".to_owned(),
                });
            }
            tables
                .meta
                .insert(shard.0, meta.encode().as_slice())
                .map_err(StoreError::engine("write meta"))?;
            let mut node = txn.open_table(NODE).map_err(StoreError::engine("open table"))?;
            for (name, value) in node_records {
                node.insert(*name, *value).map_err(StoreError::engine("write node record"))?;
            }
        }
        self.commit_restore(txn, shard, meta.applied)?;
        Ok(meta.into())
    }
}

fn parse_header(chunk: &Chunk) -> Result<ShardMeta, SnapshotError> {
    let malformed = |detail: String| SnapshotError::Malformed { chunk: 0, detail };
    if chunk.kind != KIND_HEADER {
        return Err(malformed(format!("first chunk has kind {}, not a header", chunk.kind)));
    }
    if !chunk.payload.starts_with(MAGIC) {
        return Err(malformed("not a ringkv MVCC snapshot (bad magic)".to_owned()));
    }
    let mut d = Decoder::new(chunk.payload.slice(MAGIC.len()..));
    let mut next = || d.varint().map_err(|e| malformed(e.to_string()));
    let format = next()?;
    if !(FORMAT_MIN..=FORMAT).contains(&format) {
        return Err(malformed(format!("unknown snapshot format {format}")));
    }
    let _source_shard = next()?;
    let meta = ShardMeta {
        applied: LogIndex(next()?),
        revision: Revision(next()? as i64),
        compacted: Revision(next()? as i64),
    };
    if meta.revision < Revision::INITIAL || meta.compacted > meta.revision {
        return Err(malformed(format!("impossible counters {meta:?}")));
    }
    Ok(meta)
}

fn check_trailer(
    chunk: &Chunk,
    records: u64,
    data_chunks: u64,
    digest: u32,
) -> Result<(), SnapshotError> {
    let malformed = |detail: String| SnapshotError::Malformed { chunk: chunk.seq, detail };
    let mut d = Decoder::new(chunk.payload.clone());
    let expected_records = d.varint().map_err(|e| malformed(e.to_string()))?;
    let expected_chunks = d.varint().map_err(|e| malformed(e.to_string()))?;
    if d.remaining() != 4 {
        return Err(malformed("trailer digest missing".to_owned()));
    }
    let tail = chunk.payload.slice(chunk.payload.len() - 4..);
    let expected_digest = u32::from_le_bytes(tail.as_ref().try_into().expect("4 bytes"));
    if expected_records != records || expected_digest != digest || expected_chunks != data_chunks {
        return Err(SnapshotError::TotalsMismatch {
            expected_records,
            records,
            expected_digest,
            digest,
        });
    }
    Ok(())
}

/// Inserts the records of one data chunk; returns how many.
fn restore_records(
    t: &mut WriteTables<'_>,
    shard: u64,
    meta: &ShardMeta,
    chunk: &Chunk,
) -> Result<u64, SnapshotError> {
    let malformed = |detail: String| SnapshotError::Malformed { chunk: chunk.seq, detail };
    let codec = |e: ringkv_consensus::CodecError| malformed(e.to_string());
    let mut d = Decoder::new(chunk.payload.clone());
    let mut n = 0;
    let revision_ok = |rev: u64| rev >= 1 && rev <= meta.revision.0 as u64;
    while d.remaining() > 0 {
        let tag = d.u8().map_err(codec)?;
        match tag {
            TAG_HISTORY => {
                let key = d.bytes().map_err(codec)?;
                let rev = d.varint().map_err(codec)?;
                let record = d.bytes().map_err(codec)?;
                if key.is_empty() || !revision_ok(rev) {
                    return Err(malformed(format!("bad version of {key:?} at {rev}")));
                }
                VersionRecord::decode(shard, &record, false)
                    .map_err(|e| malformed(e.to_string()))?;
                t.history
                    .insert((shard, key.as_ref(), invert(rev as i64)), record.as_ref())
                    .map_err(StoreError::engine("restore history"))?;
            }
            TAG_CHANGE => {
                let rev = d.varint().map_err(codec)?;
                let sub = u32::try_from(d.varint().map_err(codec)?)
                    .map_err(|_| malformed("sub-revision out of range".to_owned()))?;
                let key = d.bytes().map_err(codec)?;
                if key.is_empty() || !revision_ok(rev) || sub == PACKED_SUB {
                    return Err(malformed(format!("bad change of {key:?} at {rev}/{sub}")));
                }
                t.changes
                    .insert((shard, rev, sub), key.as_ref())
                    .map_err(StoreError::engine("restore changes"))?;
            }
            TAG_LEASE => {
                let id = d.varint().map_err(codec)? as i64;
                let record = d.bytes().map_err(codec)?;
                LeaseRecord::decode(shard, &record).map_err(|e| malformed(e.to_string()))?;
                t.leases
                    .open_mut()?
                    .insert((shard, id), record.as_ref())
                    .map_err(StoreError::engine("restore leases"))?;
            }
            TAG_LEASE_KEY => {
                let id = d.varint().map_err(codec)? as i64;
                let key = d.bytes().map_err(codec)?;
                t.lease_keys
                    .open_mut()?
                    .insert((shard, id, key.as_ref()), ())
                    .map_err(StoreError::engine("restore lease keys"))?;
            }
            TAG_RECORD => {
                let name = d.bytes().map_err(codec)?;
                let value = d.bytes().map_err(codec)?;
                let name = std::str::from_utf8(&name)
                    .map_err(|_| malformed("record name is not UTF-8".to_owned()))?;
                t.records
                    .open_mut()?
                    .insert((shard, name), value.as_ref())
                    .map_err(StoreError::engine("restore records"))?;
            }
            tag => return Err(malformed(format!("unknown record tag {tag}"))),
        }
        n += 1;
    }
    Ok(n)
}
