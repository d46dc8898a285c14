//! Recovery fixtures: torn tails are truncated, corruption refuses to start
//! with the file and offset, on the real and the simulated disk.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_consensus::{LogIndex, LogStorage, ShardId};
use ringkv_storage::Wal;
use ringkv_storage::disk::{Disk, DiskFile};
use ringkv_storage::wal::{Corruption, WalError};

const A: ShardId = ShardId(1);
const SEGMENT_HEADER_BYTES: u64 = 32;
const FIRST_SEGMENT: &str = "0000000000000001.wal";

/// Writes `batches` batches of 3 entries each to shard A, one sync each,
/// and returns the offset where each batch starts plus the end of the last.
fn write_batches<H: Harness>(h: &H, batches: u64) -> Vec<u64> {
    let mut wal = open(h, test_options());
    let mut starts = vec![SEGMENT_HEADER_BYTES];
    for b in 0..batches {
        wal.append(A, &entries(3 * b + 1, 3 * b + 4, 1)).unwrap();
        wal.sync().unwrap();
        starts.push(SEGMENT_HEADER_BYTES + wal.stats().bytes);
    }
    starts
}

fn open_err<H: Harness>(h: &H) -> WalError {
    Wal::open(h.disk(), test_options()).unwrap_err()
}

fn assert_corrupt(err: &WalError, offset: u64, file_suffix: &str) -> Corruption {
    match err {
        WalError::Corrupt { file, offset: at, reason } => {
            assert!(file.ends_with(file_suffix), "{file}");
            assert_eq!(*at, offset, "{err}");
            let message = err.to_string();
            assert!(message.contains(file.as_str()), "{message}");
            assert!(message.contains(&format!("byte {offset}")), "{message}");
            assert!(message.contains("restore"), "says what to do: {message}");
            reason.clone()
        }
        other => panic!("expected corruption, got {other}"),
    }
}

fn flipped_byte_mid_log_refuses_to_start<H: Harness>(h: &H) {
    let starts = write_batches(h, 5);
    // A payload byte of the second batch's first record.
    flip_byte(&h.disk(), FIRST_SEGMENT, starts[1] + 24 + 20, 0x01);
    let err = open_err(h);
    let reason = assert_corrupt(&err, starts[1], FIRST_SEGMENT);
    assert_eq!(reason, Corruption::DamagedBatch { valid_batch_at: starts[2], valid_batch_seq: 3 });
}

fn flipped_batch_header_mid_log_refuses_to_start<H: Harness>(h: &H) {
    let starts = write_batches(h, 4);
    flip_byte(&h.disk(), FIRST_SEGMENT, starts[2] + 9, 0x80);
    let err = open_err(h);
    let reason = assert_corrupt(&err, starts[2], FIRST_SEGMENT);
    assert_eq!(reason, Corruption::DamagedBatch { valid_batch_at: starts[3], valid_batch_seq: 4 });
}

fn zeroed_batch_mid_log_refuses_to_start<H: Harness>(h: &H) {
    let starts = write_batches(h, 4);
    // A lost sector: the batch reads as zeros, like the end of the log.
    zero_range(&h.disk(), FIRST_SEGMENT, starts[1], (starts[2] - starts[1]) as usize);
    let reason = assert_corrupt(&open_err(h), starts[1], FIRST_SEGMENT);
    assert!(matches!(reason, Corruption::DamagedBatch { valid_batch_seq: 3, .. }), "{reason}");
}

/// Checks the log holds exactly the first `batches` batches of
/// `write_batches`, then that it accepts and keeps new writes.
fn assert_log_then_write_more<H: Harness>(h: &H, batches: u64) {
    {
        let mut wal = open(h, test_options());
        assert_eq!(all_entries(&wal.log(A)), entries(1, 3 * batches + 1, 1));
        wal.append(A, &entries(3 * batches + 1, 3 * batches + 3, 2)).unwrap();
        wal.sync().unwrap();
    }
    let wal = open(h, test_options());
    assert_eq!(wal.recovery_report().torn_tail, None, "the tail was cleaned up");
    let mut expected = entries(1, 3 * batches + 1, 1);
    expected.extend(entries(3 * batches + 1, 3 * batches + 3, 2));
    assert_eq!(all_entries(&wal.log(A)), expected);
}

fn cut_last_batch_is_truncated<H: Harness>(h: &H) {
    let starts = write_batches(h, 3);
    // Only the first half of the last batch reached the disk.
    let half = (starts[3] - starts[2]) / 2;
    zero_range(&h.disk(), FIRST_SEGMENT, starts[2] + half, (starts[3] - starts[2] - half) as usize);
    {
        let wal = open(h, test_options());
        let torn = wal.recovery_report().torn_tail.clone().expect("a torn tail");
        assert!(torn.file.ends_with(FIRST_SEGMENT));
        assert_eq!(torn.offset, starts[2]);
        // Up to the last non-zero byte of the half that landed.
        assert!(torn.bytes > 0 && torn.bytes <= half, "{torn:?}");
    }
    assert_log_then_write_more(h, 2);
}

fn garbage_tail_is_truncated<H: Harness>(h: &H) {
    let starts = write_batches(h, 3);
    // The last batch's pages hold something else entirely.
    let d = h.disk();
    let f = d.open(FIRST_SEGMENT).unwrap();
    let garbage: Vec<u8> = (0..starts[3] - starts[2]).map(|i| (i * 7 + 1) as u8).collect();
    f.write_at(starts[2], &garbage).unwrap();
    f.sync_data().unwrap();
    drop((f, d));
    {
        let wal = open(h, test_options());
        assert_eq!(wal.recovery_report().torn_tail.as_ref().map(|t| t.offset), Some(starts[2]));
    }
    assert_log_then_write_more(h, 2);
}

fn flipped_byte_in_last_batch_is_a_torn_tail<H: Harness>(h: &H) {
    // The documented limit: nothing after the last batch vouches for it.
    let starts = write_batches(h, 3);
    flip_byte(&h.disk(), FIRST_SEGMENT, starts[2] + 30, 0x04);
    assert_log_then_write_more(h, 2);
}

fn zeroed_tail_is_a_clean_end<H: Harness>(h: &H) {
    let starts = write_batches(h, 3);
    zero_range(&h.disk(), FIRST_SEGMENT, starts[2], (starts[3] - starts[2]) as usize);
    {
        let wal = open(h, test_options());
        assert_eq!(wal.recovery_report().torn_tail, None, "zeros are the end of the log");
        assert_eq!(wal.recovery_report().batches, 2);
    }
    assert_log_then_write_more(h, 2);
}

fn damaged_segment_header_refuses_to_start<H: Harness>(h: &H) {
    write_batches(h, 2);
    flip_byte(&h.disk(), FIRST_SEGMENT, 3, 0x20);
    assert_eq!(assert_corrupt(&open_err(h), 0, FIRST_SEGMENT), Corruption::BadSegmentHeader);
}

fn newer_format_version_is_refused_by_name<H: Harness>(h: &H) {
    write_batches(h, 1);
    let d = h.disk();
    let f = d.open(FIRST_SEGMENT).unwrap();
    let mut header = f.read_vec(0, 32).unwrap();
    header[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), &header[16..32]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    f.write_at(0, &header).unwrap();
    drop((f, d));
    match open_err(h) {
        WalError::UnsupportedVersion { file, found: 2, supported: 1 } => {
            assert!(file.ends_with(FIRST_SEGMENT));
        }
        other => panic!("expected UnsupportedVersion, got {other}"),
    }
}

fn unknown_record_type_is_refused_by_name<H: Harness>(h: &H) {
    write_batches(h, 2);
    let d = h.disk();
    let f = d.open(FIRST_SEGMENT).unwrap();
    let at = SEGMENT_HEADER_BYTES + 24;
    let len = u32::from_le_bytes(f.read_vec(at + 4, 4).unwrap().try_into().unwrap()) as usize;
    let mut record = f.read_vec(at, 17 + len).unwrap();
    record[8] = 200;
    let crc = crc32c::crc32c(&record[4..]);
    record[0..4].copy_from_slice(&crc.to_le_bytes());
    f.write_at(at, &record).unwrap();
    drop((f, d));
    match open_err(h) {
        WalError::UnknownRecordType { offset, record_type: 200, .. } => assert_eq!(offset, at),
        other => panic!("expected UnknownRecordType, got {other}"),
    }
}

/// Writes enough to fill several small segments.
fn write_segments<H: Harness>(h: &H) -> Vec<u64> {
    let mut wal = open(h, small_options());
    for b in 0..40 {
        wal.append(A, &(4 * b + 1..4 * b + 5).map(|i| entry_sized(i, 1, 100)).collect::<Vec<_>>())
            .unwrap();
        wal.sync().unwrap();
    }
    let ids = wal.segment_ids();
    assert!(ids.len() >= 4, "{ids:?}");
    ids
}

fn missing_middle_segment_refuses_to_start<H: Harness>(h: &H) {
    let ids = write_segments(h);
    let d = h.disk();
    d.remove(&format!("{:016x}.wal", ids[1])).unwrap();
    d.sync_dir().unwrap();
    drop(d);
    let err = Wal::open(h.disk(), small_options()).unwrap_err();
    let reason = assert_corrupt(&err, 0, &format!("{:016x}.wal", ids[2]));
    assert_eq!(reason, Corruption::MissingSegment { expected: ids[1] });
}

fn lost_end_of_an_older_segment_refuses_to_start<H: Harness>(h: &H) {
    let ids = write_segments(h);
    // Zero the second segment after its first batch: its later batches are
    // gone, yet the third segment continues the sequence.
    let d = h.disk();
    let name = format!("{:016x}.wal", ids[1]);
    let f = d.open(&name).unwrap();
    let first_batch_len =
        24 + u32::from_le_bytes(f.read_vec(32 + 16, 4).unwrap().try_into().unwrap());
    let from = 32 + u64::from(first_batch_len);
    let len = f.len().unwrap() - from;
    drop((f, d));
    zero_range(&h.disk(), &name, from, len as usize);
    let err = Wal::open(h.disk(), small_options()).unwrap_err();
    let reason = assert_corrupt(&err, from, &name);
    assert!(matches!(reason, Corruption::MissingBatches { .. }), "{reason}");
}

/// Where the batches of segment `name` end, read straight from the file.
fn end_of_batches<D: Disk>(disk: &D, name: &str) -> u64 {
    let f = disk.open(name).unwrap();
    let mut at = SEGMENT_HEADER_BYTES;
    loop {
        let header = f.read_vec(at, 24).unwrap();
        if header.len() < 24 || &header[0..4] != b"RKVB" {
            return at;
        }
        at += 24 + u64::from(u32::from_le_bytes(header[16..20].try_into().unwrap()));
    }
}

fn garbage_at_the_end_of_an_older_segment_refuses_to_start<H: Harness>(h: &H) {
    let ids = write_segments(h);
    let d = h.disk();
    let name = format!("{:016x}.wal", ids[0]);
    let end = end_of_batches(&d, &name);
    let f = d.open(&name).unwrap();
    let len = f.len().unwrap();
    assert!(end < len - 10, "the segment has unused space");
    f.write_at(len - 10, b"garbage!!!").unwrap();
    drop((f, d));
    let err = Wal::open(h.disk(), small_options()).unwrap_err();
    assert_eq!(assert_corrupt(&err, end, &name), Corruption::DamagedSegmentTail);
}

fn garbage_after_the_end_of_the_last_segment_is_cleaned<H: Harness>(h: &H) {
    let starts = write_batches(h, 2);
    let d = h.disk();
    let f = d.open(FIRST_SEGMENT).unwrap();
    f.write_at(starts[2] + 1000, b"stray bytes").unwrap();
    drop((f, d));
    {
        let wal = open(h, test_options());
        let torn = wal.recovery_report().torn_tail.clone().expect("cleaned as a torn tail");
        assert_eq!((torn.offset, torn.bytes), (starts[2], 1011));
    }
    assert_log_then_write_more(h, 2);
}

fn leftover_temp_file_is_removed<H: Harness>(h: &H) {
    write_batches(h, 2);
    let d = h.disk();
    d.create("0000000000000002.wal.tmp").unwrap().write_at(0, b"half a segment").unwrap();
    drop(d);
    {
        let wal = open(h, test_options());
        let removed = &wal.recovery_report().removed_temp_files;
        assert_eq!(removed.len(), 1);
        assert!(removed[0].ends_with("0000000000000002.wal.tmp"));
        assert_eq!(wal.log(A).last_index(), LogIndex(6));
    }
    assert!(!h.disk().list().unwrap().iter().any(|n| n.ends_with(".tmp")));
}

fn recovery_across_many_segments_with_compaction<H: Harness>(h: &H) {
    let shards: Vec<ShardId> = (1..=6).map(ShardId).collect();
    let mut next = vec![1u64; shards.len()];
    {
        let mut wal = open(h, small_options());
        for round in 0..30u64 {
            for (k, &s) in shards.iter().enumerate() {
                if (round + k as u64).is_multiple_of(3) {
                    continue;
                }
                let lo = next[k];
                wal.append(s, &(lo..lo + 2).map(|i| entry_sized(i, 1, 60)).collect::<Vec<_>>())
                    .unwrap();
                next[k] += 2;
            }
            wal.sync().unwrap();
            if round % 7 == 6 {
                for (k, &s) in shards.iter().enumerate().step_by(2) {
                    wal.compact(s, LogIndex(next[k] - 3), members()).unwrap();
                }
                wal.sync().unwrap();
            }
        }
    }
    let wal = open(h, small_options());
    for (k, &s) in shards.iter().enumerate() {
        let log = wal.log(s);
        assert_eq!(log.last_index(), LogIndex(next[k] - 1), "shard {s}");
        let got = all_entries(&log);
        let want: Vec<_> = (log.first_index().0..next[k]).map(|i| entry_sized(i, 1, 60)).collect();
        assert_eq!(got, want, "shard {s}");
    }
}

both_disks!(
    flipped_byte_mid_log_refuses_to_start,
    flipped_batch_header_mid_log_refuses_to_start,
    zeroed_batch_mid_log_refuses_to_start,
    cut_last_batch_is_truncated,
    garbage_tail_is_truncated,
    flipped_byte_in_last_batch_is_a_torn_tail,
    zeroed_tail_is_a_clean_end,
    damaged_segment_header_refuses_to_start,
    newer_format_version_is_refused_by_name,
    unknown_record_type_is_refused_by_name,
    missing_middle_segment_refuses_to_start,
    lost_end_of_an_older_segment_refuses_to_start,
    garbage_at_the_end_of_an_older_segment_refuses_to_start,
    garbage_after_the_end_of_the_last_segment_is_cleaned,
    leftover_temp_file_is_removed,
    recovery_across_many_segments_with_compaction,
);
