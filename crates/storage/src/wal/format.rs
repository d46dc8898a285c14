//! The on-disk format: segment header, batch header, record framing.
//!
//! See the [`crate::wal`] module docs for the layout and the rules; this
//! file is its only implementation. All integers are little-endian.

use bytes::Bytes;
use ringkv_consensus::{Entry, HardState, ShardId, SnapshotMeta, Wire, decode_exact};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RINGKVWL";
/// The format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Size of the segment header; the first batch starts right after it.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 32;
/// First bytes of every batch header (also what recovery scans for).
pub(crate) const BATCH_MAGIC: [u8; 4] = *b"RKVB";
/// Size of a batch header.
pub(crate) const BATCH_HEADER_BYTES: usize = 24;
/// Size of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 17;

/// The CRC32C (Castagnoli) used everywhere in the format.
fn crc(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |c, p| crc32c::crc32c_append(c, p))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("slice of 4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("slice of 8 bytes"))
}

/// The header at the start of every segment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The segment's id (also in its file name).
    pub(crate) id: u64,
    /// Sequence number of the first batch the segment holds (or will hold).
    pub(crate) first_batch_seq: u64,
}

/// Why a segment header was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SegmentHeaderError {
    /// Wrong magic or checksum.
    Damaged,
    /// A version this code cannot read.
    Version(u32),
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_batch_seq.to_le_bytes());
        let c = crc(&[&b[0..12], &b[16..32]]);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        if b.len() < SEGMENT_HEADER_BYTES as usize || b[0..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::Damaged);
        }
        if u32_at(b, 12) != crc(&[&b[0..12], &b[16..32]]) {
            return Err(SegmentHeaderError::Damaged);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(SegmentHeaderError::Version(version));
        }
        Ok(SegmentHeader { id: u64_at(b, 16), first_batch_seq: u64_at(b, 24) })
    }
}

/// The header of a batch: the unit of one write and one fdatasync.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    /// The batch's sequence number: consecutive over the log's life.
    pub(crate) seq: u64,
    /// Bytes of records after the header.
    pub(crate) body_bytes: u32,
    /// Number of records in the body.
    pub(crate) records: u32,
}

impl BatchHeader {
    pub(crate) fn encode(&self) -> [u8; BATCH_HEADER_BYTES] {
        let mut b = [0u8; BATCH_HEADER_BYTES];
        b[0..4].copy_from_slice(&BATCH_MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.body_bytes.to_le_bytes());
        b[20..24].copy_from_slice(&self.records.to_le_bytes());
        let c = crc(&[&b[8..24]]);
        b[4..8].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// The header at the start of `b`, if it is one (magic and checksum).
    pub(crate) fn decode(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < BATCH_HEADER_BYTES || b[0..4] != BATCH_MAGIC {
            return None;
        }
        if u32_at(b, 4) != crc(&[&b[8..24]]) {
            return None;
        }
        Some(BatchHeader { seq: u64_at(b, 8), body_bytes: u32_at(b, 16), records: u32_at(b, 20) })
    }
}

/// The kinds of record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    /// One log entry: drop the shard's entries at or after its index, then
    /// append it.
    Entry = 1,
    /// The shard's hard state.
    HardState = 2,
    /// A snapshot the log does not agree with was installed: drop every
    /// entry and take the snapshot.
    InstallSnapshot = 3,
    /// The log is replaced up to the snapshot's index (a local snapshot, or
    /// an installed one the log agrees with): drop entries up to it, keep
    /// the rest.
    Compact = 4,
    /// The shard left this node: drop everything about it.
    RemoveShard = 5,
}

impl RecordType {
    pub(crate) fn from_u8(b: u8) -> Option<RecordType> {
        Some(match b {
            1 => RecordType::Entry,
            2 => RecordType::HardState,
            3 => RecordType::InstallSnapshot,
            4 => RecordType::Compact,
            5 => RecordType::RemoveShard,
            _ => return None,
        })
    }
}

/// What one record says about its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// See [`RecordType::Entry`].
    Entry(Entry),
    /// See [`RecordType::HardState`].
    HardState(HardState),
    /// See [`RecordType::InstallSnapshot`].
    Install(SnapshotMeta),
    /// See [`RecordType::Compact`].
    Compact(SnapshotMeta),
    /// See [`RecordType::RemoveShard`].
    Remove,
}

impl Op {
    fn record_type(&self) -> RecordType {
        match self {
            Op::Entry(_) => RecordType::Entry,
            Op::HardState(_) => RecordType::HardState,
            Op::Install(_) => RecordType::InstallSnapshot,
            Op::Compact(_) => RecordType::Compact,
            Op::Remove => RecordType::RemoveShard,
        }
    }
}

/// Appends the record for `op` on `shard` to `out`; returns its length.
pub(crate) fn encode_record(out: &mut Vec<u8>, shard: ShardId, op: &Op) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    match op {
        Op::Entry(e) => e.encode(out),
        Op::HardState(h) => h.encode(out),
        Op::Install(m) | Op::Compact(m) => m.encode(out),
        Op::Remove => {}
    }
    let payload_len = out.len() - start - RECORD_HEADER_BYTES;
    let len = u32::try_from(payload_len).expect("records are bounded by record_bytes_max");
    let h = &mut out[start..start + RECORD_HEADER_BYTES];
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8] = op.record_type() as u8;
    h[9..17].copy_from_slice(&shard.0.to_le_bytes());
    let c = crc(&[&out[start + 4..]]);
    out[start..start + 4].copy_from_slice(&c.to_le_bytes());
    out.len() - start
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Too short, wrong length, or wrong checksum: damaged bytes.
    Damaged,
    /// The checksum holds but the type is unknown (a newer writer).
    UnknownType(u8),
    /// The checksum holds but the payload does not decode.
    Undecodable(String),
}

/// A record read back: its shard, what it says, and its total length.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) shard: ShardId,
    pub(crate) op: Op,
    pub(crate) len: usize,
}

/// Decodes the record at the start of `b` (which may hold more after it).
pub(crate) fn decode_record(b: &[u8]) -> Result<Record, RecordError> {
    if b.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Damaged);
    }
    let payload_len = u32_at(b, 4) as usize;
    let len = RECORD_HEADER_BYTES + payload_len;
    if b.len() < len || u32_at(b, 0) != crc(&[&b[4..len]]) {
        return Err(RecordError::Damaged);
    }
    let shard = ShardId(u64_at(b, 9));
    let ty = RecordType::from_u8(b[8]).ok_or(RecordError::UnknownType(b[8]))?;
    let payload = Bytes::copy_from_slice(&b[RECORD_HEADER_BYTES..len]);
    let undecodable = |e: ringkv_consensus::CodecError| RecordError::Undecodable(e.to_string());
    let op = match ty {
        RecordType::Entry => Op::Entry(decode_exact(payload).map_err(undecodable)?),
        RecordType::HardState => Op::HardState(decode_exact(payload).map_err(undecodable)?),
        RecordType::InstallSnapshot => Op::Install(decode_exact(payload).map_err(undecodable)?),
        RecordType::Compact => Op::Compact(decode_exact(payload).map_err(undecodable)?),
        RecordType::RemoveShard if payload.is_empty() => Op::Remove,
        RecordType::RemoveShard => {
            return Err(RecordError::Undecodable("shard removal with a payload".into()));
        }
    };
    Ok(Record { shard, op, len })
}

/// Finds the first valid batch header at or after `from` whose sequence
/// number is at least `min_seq`: evidence that the log continues past
/// damage at `from`. Returns its offset and sequence number.
pub(crate) fn find_batch_header(b: &[u8], from: usize, min_seq: u64) -> Option<(usize, u64)> {
    let mut at = from;
    while at + BATCH_HEADER_BYTES <= b.len() {
        // Jump to the next occurrence of the magic's first byte.
        match b[at..b.len() - BATCH_HEADER_BYTES + 1].iter().position(|&x| x == BATCH_MAGIC[0]) {
            None => return None,
            Some(skip) => at += skip,
        }
        if let Some(h) = BatchHeader::decode(&b[at..])
            && h.seq >= min_seq
        {
            return Some((at, h.seq));
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_consensus::{EntryKind, Epoch, LogIndex};

    fn entry(i: u64) -> Entry {
        Entry {
            index: LogIndex(i),
            epoch: Epoch::term(3),
            kind: EntryKind::Command,
            payload: Bytes::from(vec![7u8; 40]),
        }
    }

    #[test]
    fn segment_header_roundtrip_and_damage() {
        let h = SegmentHeader { id: 7, first_batch_seq: 99 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert!(SegmentHeader::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert_eq!(SegmentHeader::decode(&[0u8; 32]), Err(SegmentHeaderError::Damaged));
    }

    #[test]
    fn newer_version_is_named() {
        let mut b = SegmentHeader { id: 1, first_batch_seq: 1 }.encode();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        let c = crc(&[&b[0..12], &b[16..32]]);
        b[12..16].copy_from_slice(&c.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&b), Err(SegmentHeaderError::Version(2)));
    }

    #[test]
    fn batch_header_roundtrip_and_damage() {
        let h = BatchHeader { seq: 5, body_bytes: 1000, records: 3 };
        let b = h.encode();
        assert_eq!(BatchHeader::decode(&b), Some(h));
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 1;
            assert_eq!(BatchHeader::decode(&bad), None, "flip at {i} accepted");
        }
        assert_eq!(BatchHeader::decode(&[0u8; BATCH_HEADER_BYTES]), None);
    }

    #[test]
    fn record_roundtrip_and_every_flip_detected() {
        let mut b = Vec::new();
        let len = encode_record(&mut b, ShardId(9), &Op::Entry(entry(4)));
        assert_eq!(len, b.len());
        let r = decode_record(&b).unwrap();
        assert_eq!((r.shard, r.op, r.len), (ShardId(9), Op::Entry(entry(4)), len));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(decode_record(&bad).is_err(), "flip at {i} accepted");
        }
        for cut in 0..b.len() {
            assert_eq!(decode_record(&b[..cut]).unwrap_err(), RecordError::Damaged);
        }
        assert_eq!(decode_record(&[0u8; 64]).unwrap_err(), RecordError::Damaged);
    }

    #[test]
    fn every_op_roundtrips() {
        let ops = [
            Op::Entry(entry(1)),
            Op::HardState(HardState {
                epoch: Epoch::term(2),
                vote: Some(ringkv_consensus::NodeId(3)),
                commit: LogIndex(1),
            }),
            Op::Install(SnapshotMeta { index: LogIndex(5), ..SnapshotMeta::default() }),
            Op::Compact(SnapshotMeta { index: LogIndex(6), ..SnapshotMeta::default() }),
            Op::Remove,
        ];
        let mut b = Vec::new();
        for op in &ops {
            encode_record(&mut b, ShardId(1), op);
        }
        let mut at = 0;
        for op in &ops {
            let r = decode_record(&b[at..]).unwrap();
            assert_eq!(&r.op, op);
            at += r.len;
        }
        assert_eq!(at, b.len());
    }

    #[test]
    fn unknown_type_with_valid_crc_is_not_damage() {
        let mut b = Vec::new();
        encode_record(&mut b, ShardId(1), &Op::Remove);
        b[8] = 200;
        let c = crc(&[&b[4..]]);
        b[0..4].copy_from_slice(&c.to_le_bytes());
        assert_eq!(decode_record(&b).unwrap_err(), RecordError::UnknownType(200));
    }

    #[test]
    fn scan_finds_headers_only_at_or_above_min_seq() {
        let mut b = vec![0u8; 100];
        b.extend_from_slice(&BatchHeader { seq: 4, body_bytes: 0, records: 0 }.encode());
        b.extend_from_slice(b"RKVRKVB garbage");
        b.extend_from_slice(&BatchHeader { seq: 9, body_bytes: 0, records: 0 }.encode());
        b.extend_from_slice(&[0u8; 10]);
        assert_eq!(find_batch_header(&b, 0, 0), Some((100, 4)));
        assert_eq!(find_batch_header(&b, 0, 5), Some((100 + 24 + 15, 9)));
        assert_eq!(find_batch_header(&b, 101, 0), Some((100 + 24 + 15, 9)));
        assert_eq!(find_batch_header(&b, 0, 10), None);
    }
}
