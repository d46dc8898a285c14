//! Recovery: scan every segment, rebuild the index, truncate a torn tail,
//! refuse corruption. The rules are in the [`crate::wal`] module docs.

use std::sync::Arc;

use super::error::{Corruption, DiskOp, WalError};
use super::format::{
    BATCH_HEADER_BYTES, BatchHeader, RecordError, SEGMENT_HEADER_BYTES, SegmentHeader,
    SegmentHeaderError, decode_record, find_batch_header,
};
use super::index::{Index, Loc, Mode, Segment, ShapeError};
use super::spool::SNAPSHOT_SPOOL_SUFFIX;
use super::writer::{SegmentWriter, TEMP_SUFFIX, create_segment, parse_segment_name};
use super::{RecoveryReport, TornTail, WalOptions};
use crate::disk::{Disk, DiskFile};

/// What recovery hands to the WAL.
pub(crate) struct Recovered<D: Disk> {
    pub(crate) index: Index<D::File>,
    pub(crate) writer: SegmentWriter<D>,
    /// Sequence number of the next batch.
    pub(crate) next_seq: u64,
    pub(crate) report: RecoveryReport,
}

/// Why the scan of a segment stopped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stop {
    /// Zeros: preallocated space never written.
    Clean,
    /// Bytes that are not a valid batch.
    Damaged,
}

/// Where the scan of the previous segment stopped, to name it if batches
/// turn out to be missing at its end.
struct PreviousSegment {
    id: u64,
    path: String,
    stop: u64,
}

pub(crate) fn recover<D: Disk>(disk: &D, options: &WalOptions) -> Result<Recovered<D>, WalError> {
    let io = |op: DiskOp, name: &str| {
        let path = disk.describe(name);
        move |e| WalError::io(op, path, e)
    };
    let mut report = RecoveryReport::default();
    let names = disk.list().map_err(io(DiskOp::List, ""))?;
    // Spools are scratch too: the node exports its store again after a restart.
    let scratch = |n: &&String| n.ends_with(TEMP_SUFFIX) || n.ends_with(SNAPSHOT_SPOOL_SUFFIX);
    for name in names.iter().filter(scratch) {
        disk.remove(name).map_err(io(DiskOp::Remove, name))?;
        report.removed_temp_files.push(disk.describe(name));
    }
    if !report.removed_temp_files.is_empty() {
        disk.sync_dir().map_err(io(DiskOp::SyncDir, ""))?;
    }
    let segments: Vec<(u64, &String)> =
        names.iter().filter_map(|n| parse_segment_name(n).map(|id| (id, n))).collect();

    let mut index: Index<D::File> = Index::new(options.cache_bytes_per_shard);
    let mut expected_seq: Option<u64> = None;
    let mut previous: Option<PreviousSegment> = None;
    let mut tail: Option<(u64, Stop, Vec<u8>)> = None;

    for (k, &(id, name)) in segments.iter().enumerate() {
        let is_last = k + 1 == segments.len();
        let path = disk.describe(name);
        let corrupt = |offset: u64, reason: Corruption| WalError::Corrupt {
            file: path.clone(),
            offset,
            reason,
        };
        if let Some(prev) = &previous
            && id != prev.id + 1
        {
            return Err(corrupt(0, Corruption::MissingSegment { expected: prev.id + 1 }));
        }
        let file = disk.open(name).map_err(io(DiskOp::Open, name))?;
        let len = file.len().map_err(io(DiskOp::Read, name))?;
        let len = usize::try_from(len).expect("segments fit in memory");
        let bytes = file.read_vec(0, len).map_err(io(DiskOp::Read, name))?;
        let header = match SegmentHeader::decode(&bytes) {
            Ok(h) => h,
            Err(SegmentHeaderError::Damaged) => {
                return Err(corrupt(0, Corruption::BadSegmentHeader));
            }
            Err(SegmentHeaderError::Version(found)) => {
                return Err(WalError::UnsupportedVersion {
                    file: path,
                    found,
                    supported: super::format::FORMAT_VERSION,
                });
            }
        };
        if header.id != id {
            return Err(corrupt(
                0,
                Corruption::SegmentIdMismatch { expected: id, found: header.id },
            ));
        }
        let mut expected = match (expected_seq, &previous) {
            (Some(e), Some(prev)) if header.first_batch_seq != e => {
                return Err(WalError::Corrupt {
                    file: prev.path.clone(),
                    offset: prev.stop,
                    reason: Corruption::MissingBatches {
                        expected: e,
                        found: header.first_batch_seq,
                    },
                });
            }
            _ => header.first_batch_seq,
        };
        index
            .segments
            .insert(id, Segment { name: name.clone(), file: Arc::new(file), live_entries: 0 });

        let mut pos = SEGMENT_HEADER_BYTES as usize;
        // Where scanning for later batches starts if this position is damaged.
        let mut scan_from;
        let stop = loop {
            scan_from = pos + 1;
            let Some(h) = bytes.get(pos..pos + BATCH_HEADER_BYTES).and_then(BatchHeader::decode)
            else {
                // The end of the log is preallocated space never written:
                // zeros to the end of the file. Anything else is damage.
                break if bytes[pos.min(bytes.len())..].iter().all(|&b| b == 0) {
                    Stop::Clean
                } else {
                    Stop::Damaged
                };
            };
            if h.seq > expected {
                return Err(corrupt(
                    pos as u64,
                    Corruption::MissingBatches { expected, found: h.seq },
                ));
            }
            let body_start = pos + BATCH_HEADER_BYTES;
            let body_end = body_start + h.body_bytes as usize;
            if h.seq < expected || body_end > bytes.len() {
                break Stop::Damaged;
            }
            // The header's checksum holds, so its length does: anything valid
            // after this batch is a later batch, while its own body holds
            // only records.
            scan_from = body_end;
            let mut records = Vec::new();
            let mut at = body_start;
            while at < body_end {
                match decode_record(&bytes[at..body_end]) {
                    Ok(r) => {
                        at += r.len;
                        records.push((at - r.len, r));
                    }
                    Err(RecordError::Damaged) => break,
                    Err(RecordError::UnknownType(record_type)) => {
                        return Err(WalError::UnknownRecordType {
                            file: path,
                            offset: at as u64,
                            record_type,
                        });
                    }
                    Err(RecordError::Undecodable(reason)) => {
                        return Err(corrupt(at as u64, Corruption::UndecodableRecord { reason }));
                    }
                }
            }
            if at != body_end || records.len() != h.records as usize {
                break Stop::Damaged;
            }
            for (at, r) in records {
                let loc = Loc { segment: id, offset: at as u64, len: r.len as u32 };
                let shard = r.shard;
                index.apply(shard, r.op, loc, Mode::Replay).map_err(|e| {
                    let what = match e {
                        ShapeError::BelowSnapshot { snapshot } => {
                            format!("an entry is written below the snapshot at {snapshot}")
                        }
                        ShapeError::Gap { next } => format!("an entry leaves a gap after {next}"),
                    };
                    corrupt(at as u64, Corruption::Inconsistent { shard, what })
                })?;
                report.records += 1;
            }
            report.batches += 1;
            expected += 1;
            pos = body_end;
        };
        if let Some((at, seq)) = find_batch_header(&bytes, scan_from, expected) {
            return Err(corrupt(
                pos as u64,
                Corruption::DamagedBatch { valid_batch_at: at as u64, valid_batch_seq: seq },
            ));
        }
        if stop == Stop::Damaged && !is_last {
            return Err(corrupt(pos as u64, Corruption::DamagedSegmentTail));
        }
        report.segments += 1;
        expected_seq = Some(expected);
        previous = Some(PreviousSegment { id, path: path.clone(), stop: pos as u64 });
        if is_last {
            tail = Some((pos as u64, stop, bytes));
        }
    }

    for (shard, s) in &index.shards {
        if !s.shape.is_contiguous() {
            let loc = s.locs[0];
            let seg = &index.segments[&loc.segment];
            return Err(WalError::Corrupt {
                file: disk.describe(&seg.name),
                offset: loc.offset,
                reason: Corruption::Inconsistent {
                    shard: *shard,
                    what: format!(
                        "entries {}..{} are missing between the snapshot and the next entry",
                        s.shape.snapshot.index.next(),
                        s.shape.first.prev()
                    ),
                },
            });
        }
    }
    report.shards = index.shards.len();

    let segment_bytes = options.segment_bytes;
    let (writer, next_seq) = match (previous, tail) {
        (Some(last), Some((stop, kind, bytes))) => {
            let seg = &index.segments[&last.id];
            let file = Arc::clone(&seg.file);
            let name = seg.name.as_str();
            if kind == Stop::Damaged {
                // A torn last batch: zero it, so that nothing of it can be
                // mistaken for data after the next batches are written.
                let dirty_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1) as u64;
                file.set_len(stop).map_err(io(DiskOp::Truncate, name))?;
                report.torn_tail = Some(TornTail {
                    file: last.path.clone(),
                    offset: stop,
                    bytes: dirty_end.saturating_sub(stop),
                });
            }
            // Preallocate again after a truncation (or a crash in the middle
            // of one), so the next fdatasyncs need not grow the file.
            if kind == Stop::Damaged || (bytes.len() as u64) < segment_bytes {
                file.allocate(segment_bytes).map_err(io(DiskOp::Allocate, name))?;
                file.sync_data().map_err(io(DiskOp::SyncData, name))?;
            }
            let writer = SegmentWriter {
                disk: disk.clone(),
                segment_bytes,
                id: last.id,
                name: seg.name.clone(),
                file,
                offset: stop,
                has_batches: stop > SEGMENT_HEADER_BYTES,
            };
            (writer, expected_seq.expect("set with the last segment"))
        }
        _ => {
            let id = 1;
            let (name, file) = create_segment(disk, id, 1, segment_bytes)?;
            let file = Arc::new(file);
            index.segments.insert(
                id,
                Segment { name: name.clone(), file: Arc::clone(&file), live_entries: 0 },
            );
            let writer = SegmentWriter {
                disk: disk.clone(),
                segment_bytes,
                id,
                name,
                file,
                offset: SEGMENT_HEADER_BYTES,
                has_batches: false,
            };
            (writer, 1)
        }
    };
    index.check_invariants();
    Ok(Recovered { index, writer, next_seq, report })
}
