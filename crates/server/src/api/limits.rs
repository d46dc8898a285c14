//! The request limits the API layer enforces before anything reaches
//! consensus, with etcd's defaults.

use prost::Message;
use ringkv_storage::mvcc::TXN_OPS_MAX;

use super::status::EtcdError;

/// Default largest proposal in bytes (etcd's `--max-request-bytes`:
/// 1.5 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 3 * 1024 * 1024 / 2;

/// How much larger than the largest proposal a gRPC message may be before
/// the transport itself refuses it (etcd's `grpcOverheadBytes`, 512 KiB):
/// the gRPC server's receive limit is `request_bytes_max` plus this, so a
/// request slightly over the limit gets etcd's `request is too large`
/// rather than the transport's `received message larger than max`.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Default shortest lease TTL in seconds: etcd's
/// `ceil(1.5 × election timeout)` with its default one-second election
/// timeout. A grant asking for less gets this.
pub const LEASE_TTL_MIN_SECONDS_DEFAULT: i64 = 2;

/// Limits on client requests. They come from the server's flags; the
/// defaults are etcd's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most compares, or most operations per branch, in a transaction;
    /// a nested transaction gets what its parent leaves (etcd's
    /// `--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Largest request that is proposed, in encoded protobuf bytes
    /// (etcd's `--max-request-bytes`).
    pub request_bytes_max: usize,
    /// Shortest lease TTL in seconds; shorter grants are raised to it.
    pub lease_ttl_min_seconds: i64,
}

impl Default for RequestLimits {
    fn default() -> RequestLimits {
        RequestLimits {
            txn_ops_max: TXN_OPS_MAX,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            lease_ttl_min_seconds: LEASE_TTL_MIN_SECONDS_DEFAULT,
        }
    }
}

impl RequestLimits {
    /// The receive limit for the gRPC server: requests up to
    /// [`GRPC_OVERHEAD_BYTES`] over the proposal limit still arrive, so
    /// that they are refused with etcd's error rather than the transport's.
    pub fn grpc_message_bytes_max(&self) -> usize {
        self.request_bytes_max.saturating_add(GRPC_OVERHEAD_BYTES)
    }

    /// Refuses a request that would be proposed when its encoding is larger
    /// than [`RequestLimits::request_bytes_max`], as etcd does before
    /// proposing. Reads (ranges, read-only transactions) are not proposed
    /// and not checked, as in etcd. The conversions in
    /// [`super::convert::from_pb`] call this for the requests they convert;
    /// other proposals (member and auth changes) call it themselves.
    ///
    /// # Errors
    /// [`EtcdError::RequestTooLarge`].
    pub fn check_proposal_size(&self, request: &impl Message) -> Result<(), EtcdError> {
        self.check_proposal_bytes(request.encoded_len())
    }

    /// [`RequestLimits::check_proposal_size`] for an already measured
    /// encoding of `encoded_bytes`.
    ///
    /// # Errors
    /// [`EtcdError::RequestTooLarge`].
    pub fn check_proposal_bytes(&self, encoded_bytes: usize) -> Result<(), EtcdError> {
        if encoded_bytes > self.request_bytes_max {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }
}
