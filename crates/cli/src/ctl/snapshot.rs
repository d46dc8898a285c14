//! `ringkv ctl snapshot save|status|restore`.
//!
//! A saved snapshot is the `Maintenance.Snapshot` stream as it came: the
//! store's snapshot, zero padding to a multiple of 512 bytes, then the
//! SHA-256 of everything before it (etcd's layout, which etcdctl checks
//! too). `save` verifies that trailer before the file takes its name, so a
//! file named FILE is always whole.
//!
//! `status` and `restore` read ringkv snapshots: a sequence of
//! self-checking chunks (see `ringkv_storage::mvcc`'s snapshot module),
//! decoded by the store's own restore into a scratch store on disk, so a
//! file is checked exactly as a follower checks an InstallSnapshot.
//!
//! `restore` loads the snapshot's keys and leases into a running cluster
//! through the KV and Lease APIs. It keeps keys, values and lease
//! attachments; it does not keep revisions (each key gets a new one) or
//! the compaction point. Restoring a data directory offline, revisions and
//! all, as `etcdutl snapshot restore` does, needs the node to start a new
//! cluster from a store snapshot, which it cannot yet.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::lease_client::LeaseClient;
use ringkv_api::etcdserverpb::maintenance_client::MaintenanceClient;
use ringkv_api::etcdserverpb::{
    self as pb, LeaseGrantRequest, RequestOp, SnapshotRequest, TxnRequest, request_op,
};
use ringkv_storage::mvcc::{MvccStore, RangeRequest, Revision, SNAPSHOT_CHUNK_BYTES, StoreOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::client::{Clients, RECEIVE_MESSAGE_BYTES_MAX};
use super::error::{CtlError, SnapshotProblem};
use super::output::{OutputFormat, Table, human_bytes, print, print_json};

/// Length of the SHA-256 trailer.
const HASH_BYTES: usize = 32;

/// The stream before the trailer is a whole number of these (etcd's rule).
const ALIGN_BYTES: u64 = 512;

/// First bytes of a ringkv snapshot's header chunk payload.
const RINGKV_MAGIC: &[u8; 8] = b"RKVMVCC1";

/// Largest chunk payload accepted when reading a file: the store writes
/// chunks of about [`SNAPSHOT_CHUNK_BYTES`]; a length far past that is a
/// damaged file, not a reason to allocate.
const CHUNK_PAYLOAD_BYTES_MAX: u64 = 16 * SNAPSHOT_CHUNK_BYTES as u64;

/// Keys read from the scratch store per page while restoring.
const RESTORE_PAGE_KEYS: i64 = 1000;

/// Most puts in one restore transaction (etcd's default `--max-txn-ops`).
const RESTORE_TXN_OPS_MAX: usize = 128;

/// Most key and value bytes in one restore transaction: under the default
/// 1.5 MiB request limit with room for the envelope.
const RESTORE_TXN_BYTES_MAX: usize = 1024 * 1024;

/// The shard a single-shard cluster keeps its keys in.
const DATA_SHARD: ringkv_consensus::ShardId = ringkv_node::DATA_SHARD;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CtlError {
    let path = path.to_owned();
    move |source| CtlError::Io { action, path, source }
}

fn damaged(path: &Path, problem: SnapshotProblem) -> CtlError {
    CtlError::SnapshotDamaged { path: path.to_owned(), problem }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn progress_bar(length: u64, template: &str) -> ProgressBar {
    // Drawn on stderr, and only when it is a terminal: stdout stays clean
    // for `-w json`.
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Hashes a stream except its last [`HASH_BYTES`], which it keeps: the
/// trailer is only known to be the trailer once the stream ends.
#[derive(Default)]
struct TrailerHasher {
    hasher: Sha256,
    /// The last bytes seen. Invariant: at most [`HASH_BYTES`] long.
    tail: Vec<u8>,
    total: u64,
}

impl TrailerHasher {
    fn update(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > HASH_BYTES {
            let body = self.tail.len() - HASH_BYTES;
            self.hasher.update(&self.tail[..body]);
            self.tail.drain(..body);
        }
        debug_assert!(self.tail.len() <= HASH_BYTES);
    }

    /// Checks the trailer; returns the body's length and hash.
    fn verify(self) -> Result<(u64, String), SnapshotProblem> {
        if self.total < HASH_BYTES as u64 {
            return Err(SnapshotProblem::TooShort { bytes: self.total });
        }
        let body_bytes = self.total - HASH_BYTES as u64;
        if !body_bytes.is_multiple_of(ALIGN_BYTES) {
            return Err(SnapshotProblem::Misaligned { body_bytes });
        }
        let actual = hex(&self.hasher.finalize());
        let expected = hex(&self.tail);
        if actual != expected {
            return Err(SnapshotProblem::HashMismatch { expected, actual });
        }
        Ok((body_bytes, actual))
    }
}

/// Opens the snapshot stream of the first endpoint that starts one.
async fn open_snapshot(
    clients: &Clients,
    method: &'static str,
) -> Result<(String, tonic::Streaming<pb::SnapshotResponse>), CtlError> {
    let mut failures = Vec::new();
    for endpoint in clients.endpoints() {
        let opened = async {
            let channel = clients.connect(endpoint, true).await?;
            MaintenanceClient::new(channel)
                .max_decoding_message_size(RECEIVE_MESSAGE_BYTES_MAX)
                .snapshot(SnapshotRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| CtlError::rpc(endpoint, method, status))
        };
        match opened.await {
            Ok(stream) => return Ok((endpoint.clone(), stream)),
            Err(e) => failures.push(e),
        }
    }
    if failures.len() == 1 {
        return Err(failures.remove(0));
    }
    let tried: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Err(CtlError::NoEndpointAnswered { method, tried: tried.join("; ") })
}

/// `ringkv ctl snapshot save FILE`: streams the snapshot of the first
/// endpoint's member that answers into `FILE.part`, checks its trailer, syncs it and
/// renames it to FILE.
///
/// # Errors
/// The member could not be reached or failed the stream, the file could
/// not be written, or the stream failed its check (FILE is then not
/// created).
pub(crate) async fn save(
    clients: &Clients,
    format: OutputFormat,
    path: &Path,
) -> Result<(), CtlError> {
    let method = "Maintenance.Snapshot";
    let (endpoint, mut stream) = open_snapshot(clients, method).await?;

    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = File::create(&part).map_err(io_error("create", &part))?;
    let mut out = BufWriter::new(file);
    let mut hasher = TrailerHasher::default();
    let mut revision = 0;
    let mut finished = false;
    let bar =
        progress_bar(0, "{spinner} snapshot [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}");
    let received = loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(status) => break Err(CtlError::rpc(&endpoint, method, status)),
        };
        if let Some(header) = message.header {
            revision = header.revision;
        }
        if let Err(e) = out.write_all(&message.blob) {
            break Err(io_error("write", &part)(e));
        }
        hasher.update(&message.blob);
        // `remaining_bytes` is the server's estimate; 0 marks the last message.
        bar.set_length(hasher.total + message.remaining_bytes);
        bar.set_position(hasher.total);
        finished = message.remaining_bytes == 0;
    };
    bar.finish_and_clear();
    let checked = received.and_then(|()| {
        if !finished {
            return Err(damaged(&part, SnapshotProblem::Truncated { bytes: hasher.total }));
        }
        let size = hasher.total;
        let (_, sha256) = hasher.verify().map_err(|problem| damaged(&part, problem))?;
        let file = out.into_inner().map_err(|e| io_error("write", &part)(e.into_error()))?;
        file.sync_all().map_err(io_error("sync", &part))?;
        Ok((size, sha256))
    });
    let (size, sha256) = match checked {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, path).map_err(io_error("rename the snapshot to", path))?;
    // The rename is durable only once the directory is.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync", dir))?;
    match format {
        OutputFormat::Table => {
            // etcd 3.4 sends no header with its snapshot.
            let at = if revision > 0 { format!(", revision {revision}") } else { String::new() };
            print(&format!(
                "Snapshot saved at {} ({}{at}, from {endpoint}).\n",
                path.display(),
                human_bytes(size),
            ));
        }
        OutputFormat::Json => print_json(&json!({
            "path": path,
            "size_bytes": size,
            "revision": revision,
            "sha256": sha256,
            "endpoint": endpoint,
        })),
    }
    Ok(())
}

/// Reads the chunk frames of a ringkv snapshot body one at a time (see the
/// module docs); stops after the trailer chunk or at the first problem,
/// which it keeps for the caller (the store then reports the stream as
/// truncated).
struct Frames<R> {
    input: R,
    done: bool,
    problem: Option<std::io::Error>,
}

impl<R: Read> Frames<R> {
    fn byte(&mut self, frame: &mut Vec<u8>) -> std::io::Result<u8> {
        let mut one = [0u8; 1];
        self.input.read_exact(&mut one)?;
        frame.push(one[0]);
        Ok(one[0])
    }

    fn varint(&mut self, frame: &mut Vec<u8>) -> std::io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(frame)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "varint longer than 64 bits"))
    }

    fn frame(&mut self) -> std::io::Result<(u8, Bytes)> {
        let mut frame = Vec::new();
        let kind = self.byte(&mut frame)?;
        self.varint(&mut frame)?;
        let len = self.varint(&mut frame)?;
        if len > CHUNK_PAYLOAD_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a chunk claims {len} bytes, more than {CHUNK_PAYLOAD_BYTES_MAX}"),
            ));
        }
        let start = frame.len();
        // `len` is bounded just above, so it fits in memory as a usize.
        frame.resize(start + len as usize + 4, 0);
        self.input.read_exact(&mut frame[start..])?;
        Ok((kind, Bytes::from(frame)))
    }
}

impl<R: Read> Iterator for Frames<R> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        match self.frame() {
            Ok((kind, frame)) => {
                // Kind 2 is the trailer chunk: what follows is padding.
                self.done = kind == 2;
                Some(frame)
            }
            Err(e) => {
                self.done = true;
                self.problem = Some(e);
                None
            }
        }
    }
}

/// A verified snapshot file decoded into a scratch store.
struct Decoded {
    /// Keeps the scratch store's directory until the store is dropped.
    _dir: tempfile::TempDir,
    store: MvccStore,
    size: u64,
    sha256: String,
    state: ringkv_storage::mvcc::ShardState,
}

/// Checks `path`'s trailer, then decodes it with the store's own restore.
fn decode(path: &Path) -> Result<Decoded, CtlError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let size = file.metadata().map_err(io_error("read", path))?.len();
    let mut hasher = TrailerHasher::default();
    let mut reader = BufReader::new(file);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buffer).map_err(io_error("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let (body_bytes, sha256) = hasher.verify().map_err(|problem| damaged(path, problem))?;

    let file = File::open(path).map_err(io_error("open", path))?;
    let mut frames =
        Frames { input: BufReader::new(file).take(body_bytes), done: false, problem: None };
    let first = frames.next();
    let is_ringkv = first.as_ref().is_some_and(|frame| {
        // kind 0, sequence 0, then the payload's length varint, then the magic.
        frame.len() > 3 && frame[0] == 0 && frame[1] == 0 && frame[3..].starts_with(RINGKV_MAGIC)
    });
    if !is_ringkv {
        return Err(CtlError::NotRingkvSnapshot { path: path.to_owned() });
    }
    let dir = tempfile::tempdir().map_err(io_error("create a scratch directory for", path))?;
    let store = MvccStore::open(dir.path().join("store"), StoreOptions::default())
        .map_err(|e| CtlError::SnapshotRead { path: path.to_owned(), reason: e.to_string() })?;
    let restored = store.restore(DATA_SHARD, first.into_iter().chain(&mut frames));
    if let Some(problem) = frames.problem {
        return Err(io_error("read", path)(problem));
    }
    let state =
        restored.map_err(|source| CtlError::SnapshotDecode { path: path.to_owned(), source })?;
    Ok(Decoded { _dir: dir, store, size, sha256, state })
}

/// Every live key, from `after` on (exclusive), at most one page.
fn page(
    decoded: &Decoded,
    path: &Path,
    after: Option<&[u8]>,
) -> Result<Vec<ringkv_storage::mvcc::KeyValue>, CtlError> {
    let start = match after {
        // The smallest key after `after`.
        Some(key) => [key, &[0]].concat(),
        None => vec![0],
    };
    let request = RangeRequest {
        key: start.into(),
        range_end: Bytes::from_static(b"\0"),
        limit: RESTORE_PAGE_KEYS,
        ..RangeRequest::default()
    };
    decoded
        .store
        .range(DATA_SHARD, &request)
        .map(|r| r.kvs)
        .map_err(|e| CtlError::SnapshotRead { path: path.to_owned(), reason: e.to_string() })
}

fn count_keys(decoded: &Decoded, path: &Path) -> Result<i64, CtlError> {
    let request = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        count_only: true,
        revision: Revision::ZERO,
        ..RangeRequest::default()
    };
    decoded
        .store
        .range(DATA_SHARD, &request)
        .map(|r| r.count)
        .map_err(|e| CtlError::SnapshotRead { path: path.to_owned(), reason: e.to_string() })
}

fn leases(
    decoded: &Decoded,
    path: &Path,
) -> Result<Vec<ringkv_storage::mvcc::LeaseInfo>, CtlError> {
    let read = |e: &dyn std::fmt::Display| CtlError::SnapshotRead {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    decoded.store.read().map_err(|e| read(&e))?.leases(DATA_SHARD).map_err(|e| read(&e))
}

/// `ringkv ctl snapshot status FILE`: checks a saved snapshot and says
/// what it holds.
///
/// # Errors
/// The file is unreadable, damaged or not a ringkv snapshot.
pub(crate) fn status(format: OutputFormat, path: &Path) -> Result<(), CtlError> {
    let decoded = decode(path)?;
    let keys = count_keys(&decoded, path)?;
    let leases = leases(&decoded, path)?.len();
    let state = decoded.state;
    match format {
        OutputFormat::Table => {
            let mut table = Table::new(vec![
                "SHA256",
                "REVISION",
                "COMPACTED",
                "APPLIED INDEX",
                "KEYS",
                "LEASES",
                "SIZE",
            ]);
            table.row(vec![
                decoded.sha256[..16].to_owned(),
                state.revision.to_string(),
                state.compacted_revision.to_string(),
                state.applied_index.0.to_string(),
                keys.to_string(),
                leases.to_string(),
                human_bytes(decoded.size),
            ]);
            print(&table.render());
        }
        OutputFormat::Json => print_json(&json!({
            "path": path,
            "sha256": decoded.sha256,
            "revision": state.revision.0,
            "compacted_revision": state.compacted_revision.0,
            "applied_index": state.applied_index.0,
            "keys": keys,
            "leases": leases,
            "size_bytes": decoded.size,
        })),
    }
    Ok(())
}

/// `ringkv ctl snapshot restore FILE`: loads a saved snapshot's keys and
/// leases into the running cluster at `--endpoints` (see the module docs
/// for what is kept). Refuses a cluster that holds keys unless `force`.
///
/// # Errors
/// The file is damaged, the cluster is not empty (without `force`), or a
/// write failed (what was written before it stays).
pub(crate) async fn restore(
    clients: &Clients,
    format: OutputFormat,
    path: &Path,
    force: bool,
) -> Result<(), CtlError> {
    let decoded = decode(path)?;
    let total = count_keys(&decoded, path)?;
    let leases = leases(&decoded, path)?;

    let everything = pb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    };
    let (endpoint, existing) = clients
        .call_any("KV.Range", false, async |channel| {
            Ok(KvClient::new(channel).range(everything.clone()).await?.into_inner().count)
        })
        .await?;
    if existing > 0 && !force {
        return Err(CtlError::TargetNotEmpty { endpoint, keys: existing });
    }

    for lease in &leases {
        // A lease keeps the time it had left when the snapshot was taken.
        let ttl = lease.remaining_ttl.unwrap_or(lease.granted_ttl).max(1);
        let grant = LeaseGrantRequest { ttl, id: lease.id.0 };
        let granted = clients
            .call_any("Lease.LeaseGrant", false, async |channel| {
                LeaseClient::new(channel).lease_grant(grant).await
            })
            .await;
        match granted {
            Ok(_) => {}
            // With --force, a lease of the same id already there is reused.
            Err(CtlError::Rpc { status, .. })
                if force && status.message().contains("lease already exists") => {}
            Err(e) => return Err(e),
        }
    }

    let bar = progress_bar(
        u64::try_from(total).unwrap_or(0),
        "{spinner} restore [{bar:30}] {pos}/{len} keys {per_sec}",
    );
    let mut written = 0u64;
    let mut revision = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let kvs = page(&decoded, path, after.as_deref())?;
        let Some(last) = kvs.last() else { break };
        after = Some(last.key.to_vec());
        let mut batch: Vec<RequestOp> = Vec::new();
        let mut batch_bytes = 0;
        let mut kvs = kvs.into_iter().peekable();
        while let Some(kv) = kvs.next() {
            batch_bytes += kv.key.len() + kv.value.len();
            batch.push(RequestOp {
                request: Some(request_op::Request::RequestPut(pb::PutRequest {
                    key: kv.key.to_vec(),
                    value: kv.value.to_vec(),
                    lease: kv.lease.0,
                    ..Default::default()
                })),
            });
            let next_bytes = kvs.peek().map_or(0, |n| n.key.len() + n.value.len());
            let full = batch.len() >= RESTORE_TXN_OPS_MAX
                || batch_bytes + next_bytes > RESTORE_TXN_BYTES_MAX;
            if full || kvs.peek().is_none() {
                let txn = TxnRequest { success: std::mem::take(&mut batch), ..Default::default() };
                let ops = txn.success.len() as u64;
                let (_, response) = clients
                    .call_any("KV.Txn", false, async |channel| {
                        Ok(KvClient::new(channel).txn(txn.clone()).await?.into_inner())
                    })
                    .await?;
                revision = response.header.map_or(revision, |h| h.revision);
                written += ops;
                batch_bytes = 0;
                bar.set_position(written);
            }
        }
    }
    bar.finish_and_clear();
    match format {
        OutputFormat::Table => print(&format!(
            "Restored {written} keys and {} leases from {} (snapshot revision {}) into the \
             cluster at {endpoint}; keys have new revisions (the cluster is at revision \
             {revision}).\n",
            leases.len(),
            path.display(),
            decoded.state.revision,
        )),
        OutputFormat::Json => print_json(&json!({
            "path": path,
            "keys": written,
            "leases": leases.len(),
            "snapshot_revision": decoded.state.revision.0,
            "revision": revision,
            "endpoint": endpoint,
        })),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(body: &[u8]) -> Vec<u8> {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&Sha256::digest(body));
        bytes
    }

    fn verify(bytes: &[u8], pieces: usize) -> Result<(u64, String), SnapshotProblem> {
        let mut hasher = TrailerHasher::default();
        for piece in bytes.chunks(bytes.len().div_ceil(pieces).max(1)) {
            hasher.update(piece);
        }
        hasher.verify()
    }

    #[test]
    fn the_trailer_is_checked_however_the_stream_is_cut() {
        let body = vec![7u8; 1024];
        let good = stream(&body);
        for pieces in [1, 2, 3, 33, 1056] {
            let (len, sha) = verify(&good, pieces).unwrap();
            assert_eq!(len, 1024);
            assert_eq!(sha, hex(&Sha256::digest(&body)));
        }
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert!(matches!(verify(&bad, 3), Err(SnapshotProblem::HashMismatch { .. })));
        assert!(matches!(
            verify(&stream(&body[..1000]), 2),
            Err(SnapshotProblem::Misaligned { body_bytes: 1000 })
        ));
        assert!(matches!(verify(&[1, 2, 3], 1), Err(SnapshotProblem::TooShort { bytes: 3 })));
    }
}
