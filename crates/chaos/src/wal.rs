//! Damaging the last batch of a stopped node's write-ahead log.
//!
//! The layout is ringkv-storage's WAL format, version 1 (see
//! `crates/storage/src/wal/mod.rs`): a directory of segments
//! `{id:016x}.wal`, each a 32-byte header followed by batches and then
//! zeros; a batch is a 24-byte header (`"RKVB"`, crc u32, seq u64, body
//! bytes u32, record count u32, little-endian) and its body. The storage
//! promises that damage confined to the **last batch of the last segment**
//! is a torn tail: truncated on open, and the node starts. Damage anywhere
//! else is refused as corruption, which is why only the last batch is
//! touched here.
//!
//! That last batch may hold acknowledged data (storage docs: damage to the
//! very last batch is indistinguishable from a torn write). The nemesis
//! therefore damages one node at a time, while the others are up and
//! connected, so what the last batch held is on a quorum elsewhere.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::ChaosError;

/// Size of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Size of a batch header.
pub const BATCH_HEADER_BYTES: usize = 24;
/// A batch header's magic.
pub const BATCH_MAGIC: &[u8; 4] = b"RKVB";
/// A segment file's suffix.
pub const SEGMENT_SUFFIX: &str = ".wal";

/// How the last batch is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Its second half is zeroed, as a write cut short by a crash leaves it.
    Torn,
    /// One bit of its body is flipped.
    BitFlip,
}

impl Damage {
    /// The fault's name in the timeline.
    pub fn name(self) -> &'static str {
        match self {
            Damage::Torn => "wal-torn",
            Damage::BitFlip => "wal-bitflip",
        }
    }
}

/// The byte range of the last batch in one segment's bytes, if it has one.
pub fn last_batch(segment: &[u8]) -> Option<Range<usize>> {
    let mut at = SEGMENT_HEADER_BYTES;
    let mut last = None;
    while at + BATCH_HEADER_BYTES <= segment.len() && &segment[at..at + 4] == BATCH_MAGIC {
        let body = u32::from_le_bytes(segment[at + 16..at + 20].try_into().expect("4 bytes"));
        let end = at + BATCH_HEADER_BYTES + usize::try_from(body).ok()?;
        if end > segment.len() {
            break;
        }
        last = Some(at..end);
        at = end;
    }
    last
}

/// Damages the batch at `batch` in `bytes`; `pick` chooses a position in
/// `0..n`. Returns the damaged byte range.
pub fn damage(
    bytes: &mut [u8],
    batch: Range<usize>,
    how: Damage,
    mut pick: impl FnMut(usize) -> usize,
) -> Range<usize> {
    match how {
        Damage::Torn => {
            let from = batch.start + (batch.end - batch.start) / 2;
            bytes[from..batch.end].fill(0);
            from..batch.end
        }
        Damage::BitFlip => {
            let body = batch.start + BATCH_HEADER_BYTES..batch.end;
            // An empty body: flip a bit of the header's CRC instead.
            let at = if body.is_empty() { batch.start + 4 } else { body.start + pick(body.len()) };
            bytes[at] ^= 1 << (pick(8) % 8);
            at..at + 1
        }
    }
}

/// The segment files of a data directory's WAL, oldest first (found by
/// name anywhere under it).
pub fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![data_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SEGMENT_SUFFIX))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Damages the last batch of the last segment under `data_dir` (the node
/// must be stopped). Returns what was done, or `None` when the last segment
/// holds no batch (damaging an earlier one would be corruption in the
/// middle, which the node rightly refuses).
///
/// # Errors
/// [`ChaosError::Io`].
pub fn damage_last_batch(
    data_dir: &Path,
    how: Damage,
    pick: impl FnMut(usize) -> usize,
) -> Result<Option<String>, ChaosError> {
    let Some(last) = segments(data_dir).pop() else { return Ok(None) };
    let mut bytes = std::fs::read(&last).map_err(ChaosError::io("reading", &last))?;
    let Some(batch) = last_batch(&bytes) else { return Ok(None) };
    let damaged = damage(&mut bytes, batch.clone(), how, pick);
    std::fs::write(&last, &bytes).map_err(ChaosError::io("writing", &last))?;
    Ok(Some(format!(
        "{} of {}: batch at bytes {}..{}, damaged {}..{}",
        how.name(),
        last.display(),
        batch.start,
        batch.end,
        damaged.start,
        damaged.end
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(bodies: &[usize], tail_zeros: usize) -> Vec<u8> {
        let mut s = vec![0xAA; SEGMENT_HEADER_BYTES];
        for (seq, &len) in bodies.iter().enumerate() {
            s.extend_from_slice(BATCH_MAGIC);
            s.extend_from_slice(&[1, 2, 3, 4]);
            s.extend_from_slice(&(seq as u64).to_le_bytes());
            s.extend_from_slice(&(len as u32).to_le_bytes());
            s.extend_from_slice(&1u32.to_le_bytes());
            s.extend(std::iter::repeat_n(0x55, len));
        }
        s.extend(std::iter::repeat_n(0, tail_zeros));
        s
    }

    #[test]
    fn finds_the_last_batch_before_the_zeros() {
        let s = segment(&[10, 40, 7], 100);
        let start = SEGMENT_HEADER_BYTES + 2 * BATCH_HEADER_BYTES + 50;
        assert_eq!(last_batch(&s), Some(start..start + BATCH_HEADER_BYTES + 7));
        assert_eq!(last_batch(&segment(&[], 64)), None);
        // A batch running past the end is not a batch.
        let mut cut = segment(&[10, 40], 0);
        cut.truncate(cut.len() - 1);
        assert_eq!(last_batch(&cut), Some(SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + 34));
    }

    #[test]
    fn damage_stays_inside_the_last_batch() {
        let original = segment(&[10, 40], 16);
        let batch = last_batch(&original).unwrap();
        for how in [Damage::Torn, Damage::BitFlip] {
            let mut s = original.clone();
            let hit = damage(&mut s, batch.clone(), how, |n| n - 1);
            assert!(hit.start >= batch.start && hit.end <= batch.end, "{how:?}");
            assert_ne!(s, original, "{how:?} changed nothing");
            assert_eq!(s[..batch.start], original[..batch.start]);
            assert_eq!(s[batch.end..], original[batch.end..]);
        }
    }

    #[test]
    fn damages_the_file_of_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        std::fs::create_dir(&wal).unwrap();
        std::fs::write(wal.join("0000000000000001.wal"), segment(&[5], 8)).unwrap();
        std::fs::write(wal.join("0000000000000002.wal"), segment(&[9, 3], 8)).unwrap();
        let done = damage_last_batch(dir.path(), Damage::Torn, |_| 0).unwrap().unwrap();
        assert!(done.contains("0000000000000002.wal"), "{done}");
        assert_eq!(std::fs::read(wal.join("0000000000000001.wal")).unwrap(), segment(&[5], 8));
        assert_ne!(std::fs::read(wal.join("0000000000000002.wal")).unwrap(), segment(&[9, 3], 8));
        std::fs::write(wal.join("0000000000000003.wal"), segment(&[], 8)).unwrap();
        assert_eq!(damage_last_batch(dir.path(), Damage::BitFlip, |_| 0).unwrap(), None);
    }
}
