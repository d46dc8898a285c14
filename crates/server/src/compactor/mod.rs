//! Auto-compaction, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`: history older than a retention (a time,
//! or a number of revisions) is compacted away by the server itself.
//!
//! ```text
//!  every tick (Policy::tick_interval) ─▶ NodeState::shards (this node's view)
//!      ─▶ per data shard: Planner::on_tick(now, shard revision, leads?)
//!      ─▶ Compact(revision) to that shard ─▶ Planner::on_compacted
//! ```
//!
//! Every member runs the task, and only a shard's leader compacts it: etcd
//! runs its compactor on the leader and pauses it elsewhere. The others
//! keep sampling, so a new leader compacts to a revision it saw a
//! retention ago. (On a sharded cluster each data shard's own leader, so
//! that a shard the metadata leader does not hold is compacted too.)
//!
//! It is the only way to compact a sharded cluster: `Compact` by revision
//! is refused there (a revision names one shard's history), while the
//! compactor compacts each data shard at a revision of that shard's own
//! ([`crate::runtime::NodeHandle::call_shard_as`]). A shard's planner
//! starts when this node first reports the shard; a shard this node does
//! not hold is compacted by the members that do.
//!
//! The decisions are a pure planner ([`Planner`], unit-tested without a
//! clock); [`run`] is the thin tokio task around it.

mod plan;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_consensus::ShardId;
use ringkv_node::{AuthInfo, Credential, META_SHARD, Reply, Request, ShardStatus};
use ringkv_storage::mvcc::{CompactionRequest, Response as MvccResponse, Revision};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use plan::{
    PERIODIC_COMPACT_INTERVAL_MAX, PERIODIC_SAMPLES_PER_INTERVAL, Planner, Policy,
    REVISION_CHECK_INTERVAL_DEFAULT,
};

use crate::api::EtcdError;
use crate::runtime::NodeHandle;

/// Default `--auto-compaction-retention`: `0`, auto-compaction off (etcd's).
pub const DEFAULT_AUTO_COMPACTION_RETENTION: &str = "0";

/// Shortest periodic retention: its sample interval is a tenth of it, and
/// a shorter one would compact nearly on every write.
pub const PERIODIC_RETENTION_MIN: Duration = Duration::from_secs(1);

/// Longest periodic retention (30 days). A planner keeps one sample per
/// sixth of an hour of retention past an hour (etcd's rule), so this bounds
/// its memory to about 7,200 revisions (56 KiB) per data shard.
pub const PERIODIC_RETENTION_MAX: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Largest revision retention: a revision is an `i64`.
pub const REVISION_RETENTION_MAX: u64 = i64::MAX as u64;

/// Shortest `--auto-compaction-revision-interval` (a test knob): shorter
/// would be a busy loop of status reads.
pub const REVISION_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Longest `--auto-compaction-revision-interval`.
pub const REVISION_CHECK_INTERVAL_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The user the compactor's `Compact` requests run as when auth is
/// enabled: the server's own authority, as etcd's compactor calls its
/// server without a client's token. No client can present it.
const COMPACTOR_USER: &str = "root";

/// `--auto-compaction-mode`: what the retention counts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoCompactionMode {
    /// The retention is a time: hours as a bare integer, or `30m`, `5s`.
    #[default]
    Periodic,
    /// The retention is a number of revisions.
    Revision,
}

/// Why an auto-compaction setting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// A periodic retention that is neither hours nor a duration.
    #[error(
        "--auto-compaction-retention {value:?} is not a duration for --auto-compaction-mode \
         periodic: give hours as an integer (1) or a duration such as 30m, 1h30m, 5s"
    )]
    BadDuration {
        /// What was given.
        value: String,
    },
    /// A revision retention that is not a count.
    #[error(
        "--auto-compaction-retention {value:?} is not a number of revisions for \
         --auto-compaction-mode revision: give an integer such as 1000"
    )]
    BadCount {
        /// What was given.
        value: String,
    },
    /// A periodic retention outside the allowed range.
    #[error(
        "--auto-compaction-retention {value:?} is outside {min:?}..={max:?} for \
         --auto-compaction-mode periodic (0 turns auto-compaction off)"
    )]
    PeriodOutOfRange {
        /// What was given.
        value: String,
        /// [`PERIODIC_RETENTION_MIN`].
        min: Duration,
        /// [`PERIODIC_RETENTION_MAX`].
        max: Duration,
    },
    /// A bad `--auto-compaction-revision-interval`.
    #[error(
        "--auto-compaction-revision-interval {value:?} is not a duration within {min:?}..={max:?} \
         (such as 5m or 200ms)"
    )]
    BadInterval {
        /// What was given.
        value: String,
        /// [`REVISION_CHECK_INTERVAL_MIN`].
        min: Duration,
        /// [`REVISION_CHECK_INTERVAL_MAX`].
        max: Duration,
    },
}

/// The auto-compaction policy the flags ask for: `None` when the retention
/// is zero (off). `interval` is the hidden revision check interval.
///
/// # Errors
/// [`RetentionError`] for a retention or interval that does not parse or
/// is out of range.
pub fn policy_from_flags(
    mode: AutoCompactionMode,
    retention: &str,
    interval: Option<&str>,
) -> Result<Option<Policy>, RetentionError> {
    let check_interval = match interval {
        None => REVISION_CHECK_INTERVAL_DEFAULT,
        Some(text) => parse_duration(text)
            .filter(|d| (REVISION_CHECK_INTERVAL_MIN..=REVISION_CHECK_INTERVAL_MAX).contains(d))
            .ok_or_else(|| RetentionError::BadInterval {
                value: text.to_owned(),
                min: REVISION_CHECK_INTERVAL_MIN,
                max: REVISION_CHECK_INTERVAL_MAX,
            })?,
    };
    let text = retention.trim();
    match mode {
        AutoCompactionMode::Periodic => {
            // etcd: a bare integer is hours, anything else a Go duration.
            let period = match text.parse::<u64>() {
                Ok(hours) => hours.checked_mul(60 * 60).map(Duration::from_secs),
                Err(_) => parse_duration(text),
            };
            let period =
                period.ok_or_else(|| RetentionError::BadDuration { value: text.to_owned() })?;
            if period.is_zero() {
                return Ok(None);
            }
            if !(PERIODIC_RETENTION_MIN..=PERIODIC_RETENTION_MAX).contains(&period) {
                return Err(RetentionError::PeriodOutOfRange {
                    value: text.to_owned(),
                    min: PERIODIC_RETENTION_MIN,
                    max: PERIODIC_RETENTION_MAX,
                });
            }
            Ok(Some(Policy::Periodic { retention: period }))
        }
        AutoCompactionMode::Revision => {
            let count = text
                .parse::<u64>()
                .ok()
                .filter(|&c| c <= REVISION_RETENTION_MAX)
                .ok_or_else(|| RetentionError::BadCount { value: text.to_owned() })?;
            Ok((count > 0).then_some(Policy::Revision { retention: count, check_interval }))
        }
    }
}

/// Parses a Go-style duration of whole numbers with units: `5s`, `30m`,
/// `1h30m`, `200ms`, `0`. `None` for anything else (fractions included).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => Duration::from_nanos(1),
            "us" | "µs" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(60 * 60),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
    }
    Some(total)
}

/// The shards this node compacts now: the data shards it leads (never a
/// sharded cluster's metadata shard, which holds no keys).
fn compacted_here(statuses: &[ShardStatus], sharded: bool) -> Vec<&ShardStatus> {
    statuses.iter().filter(|s| s.is_leader && (s.shard != META_SHARD || !sharded)).collect()
}

/// Runs auto-compaction with `policy` until `shutdown`.
///
/// # Panics
/// If `policy` ticks every zero seconds (a zero retention, which
/// [`policy_from_flags`] turns into no policy at all).
pub async fn run(handle: NodeHandle, policy: Policy, shutdown: CancellationToken) {
    let every = policy.tick_interval();
    assert!(!every.is_zero(), "auto-compaction policy {policy:?} ticks every 0 s");
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(start + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sharded = handle.keyspace().shard_count() > 1;
    let mut planners: BTreeMap<ShardId, Planner> = BTreeMap::new();
    info!(?policy, "auto-compaction enabled");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let statuses = handle.state().shards();
        let leading: Vec<ShardId> =
            compacted_here(&statuses, sharded).iter().map(|s| s.shard).collect();
        for status in statuses.iter().filter(|s| s.shard != META_SHARD || !sharded) {
            let leads = leading.contains(&status.shard);
            let now = start.elapsed();
            let Some(planner) = planners.get_mut(&status.shard) else {
                planners.insert(status.shard, Planner::new(policy, now, status.revision));
                continue;
            };
            let Some(target) = planner.on_tick(now, status.revision, leads) else {
                continue;
            };
            let began = tokio::time::Instant::now();
            match compact(&handle, sharded, status.shard, target).await {
                Ok(already) => {
                    planner.on_compacted(start.elapsed(), target);
                    info!(
                        shard = status.shard.0,
                        compact_revision = target.0,
                        already_compacted = already,
                        took = ?began.elapsed(),
                        "finished scheduled compaction"
                    );
                }
                Err(error) => {
                    warn!(
                        shard = status.shard.0,
                        compact_revision = target.0,
                        %error,
                        "scheduled compaction failed; will retry"
                    );
                }
            }
        }
        debug!(leading = leading.len(), shards = planners.len(), "auto-compaction tick");
    }
}

/// Why one scheduled compaction failed (it is retried at a later tick).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The node refused or could not serve the `Compact`.
    #[error(transparent)]
    Node(#[from] EtcdError),
    /// The node answered `Compact` with something else (a bug).
    #[error("the node answered Compact with {reply}")]
    UnexpectedReply {
        /// The answer, as debug text.
        reply: String,
    },
}

/// Compacts `shard` to `revision`: `Ok(true)` if it already was.
async fn compact(
    handle: &NodeHandle,
    sharded: bool,
    shard: ShardId,
    revision: Revision,
) -> Result<bool, CompactError> {
    let request = Request::Compact(CompactionRequest { revision, physical: false });
    let credential =
        Credential::Signed(AuthInfo { user: COMPACTOR_USER.to_owned(), revision: u64::MAX });
    let answer = if sharded {
        handle.call_shard_as(credential, shard, request).await
    } else {
        handle.call_as(credential, request).await
    };
    match answer {
        Ok(answer) => match answer.reply {
            Reply::Kv(MvccResponse::Compaction(_)) => Ok(false),
            other => Err(CompactError::UnexpectedReply { reply: format!("{other:?}") }),
        },
        Err(EtcdError::Compacted) => Ok(true),
        Err(error) => Err(error.into()),
    }
}
