//! Segment files: creating them durably, and writing batches into them.

use std::sync::Arc;

use super::error::{DiskOp, WalError};
use super::format::{SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::disk::{Disk, DiskFile};

/// Suffix of segment files.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created; such files are never read and are
/// removed by recovery.
pub(crate) const TEMP_SUFFIX: &str = ".wal.tmp";

/// The file name of segment `id`: 16 hex digits, so names sort by id.
pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:016x}{SEGMENT_SUFFIX}")
}

/// The id in a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Creates segment `id` durably: written and preallocated under a temporary
/// name, fdatasynced, renamed into place, and the directory fsynced, so a
/// segment under its final name always has a complete header.
pub(crate) fn create_segment<D: Disk>(
    disk: &D,
    id: u64,
    first_batch_seq: u64,
    segment_bytes: u64,
) -> Result<(String, D::File), WalError> {
    let name = segment_name(id);
    let tmp = format!("{name}.tmp");
    let io = |op: DiskOp, file: &str| {
        let path = disk.describe(file);
        move |e| WalError::io(op, path, e)
    };
    // A leftover from a crash during an earlier attempt would block create.
    match disk.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(DiskOp::Remove, &tmp)(e)),
    }
    let file = disk.create(&tmp).map_err(io(DiskOp::Create, &tmp))?;
    let prepared = (|| {
        file.allocate(segment_bytes).map_err(io(DiskOp::Allocate, &tmp))?;
        let header = SegmentHeader { id, first_batch_seq }.encode();
        file.write_at(0, &header).map_err(io(DiskOp::Write, &tmp))?;
        file.sync_data().map_err(io(DiskOp::SyncData, &tmp))
    })();
    if let Err(e) = prepared {
        // Give the space back now; recovery would remove it anyway.
        drop(file);
        let _ = disk.remove(&tmp);
        return Err(e);
    }
    disk.rename(&tmp, &name).map_err(io(DiskOp::Rename, &tmp))?;
    disk.sync_dir().map_err(io(DiskOp::SyncDir, &name))?;
    Ok((name, file))
}

/// The segment batches are appended to.
pub(crate) struct SegmentWriter<D: Disk> {
    pub(crate) disk: D,
    pub(crate) segment_bytes: u64,
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) file: Arc<D::File>,
    /// Where the next batch goes.
    pub(crate) offset: u64,
    /// Whether the segment holds a batch yet (an empty segment takes any
    /// batch, however large).
    pub(crate) has_batches: bool,
}

impl<D: Disk> SegmentWriter<D> {
    /// Whether a batch of `bytes` must go to a new segment.
    pub(crate) fn must_rotate(&self, bytes: u64) -> bool {
        self.has_batches && self.offset + bytes > self.segment_bytes
    }

    /// Switches to a new segment whose first batch is `first_batch_seq`.
    pub(crate) fn rotate(&mut self, first_batch_seq: u64) -> Result<(), WalError> {
        let id = self.id + 1;
        let (name, file) = create_segment(&self.disk, id, first_batch_seq, self.segment_bytes)?;
        self.id = id;
        self.name = name;
        self.file = Arc::new(file);
        self.offset = SEGMENT_HEADER_BYTES;
        self.has_batches = false;
        Ok(())
    }

    /// Writes one batch at the current offset and makes it durable.
    pub(crate) fn write_batch(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        let path = || self.disk.describe(&self.name);
        self.file
            .write_at(self.offset, bytes)
            .map_err(|e| WalError::io(DiskOp::Write, path(), e))?;
        self.file.sync_data().map_err(|e| WalError::io(DiskOp::SyncData, path(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_id_and_parse_back() {
        let ids = [0u64, 1, 15, 16, 255, 1 << 40, u64::MAX];
        let names: Vec<String> = ids.iter().map(|&i| segment_name(i)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (i, n) in ids.iter().zip(&names) {
            assert_eq!(parse_segment_name(n), Some(*i));
        }
        for bad in
            ["1.wal", "000000000000000G.wal", "000000000000000A.wal", "0000000000000001.wal.tmp"]
        {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
