//! The planner against etcd 3.4's compactor rules, on a made-up clock, and
//! the flag parsing.

use std::time::Duration;

use ringkv_storage::mvcc::Revision;

use super::*;

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);

fn periodic(retention: Duration) -> Policy {
    Policy::Periodic { retention }
}

fn revision(retention: u64) -> Policy {
    Policy::Revision { retention, check_interval: REVISION_CHECK_INTERVAL_DEFAULT }
}

/// Ticks `planner` `ticks` times, one interval apart, from `start`, with the
/// revision `rev(t)` at tick t (1-based), and returns (tick, target) for
/// each compaction, each reported a success.
fn drive(
    planner: &mut Planner,
    start: Duration,
    ticks: u32,
    rev: impl Fn(u32) -> i64,
) -> Vec<(u32, i64)> {
    let every = planner.policy().tick_interval();
    let mut done = Vec::new();
    for t in 1..=ticks {
        let now = start + every * t;
        if let Some(target) = planner.on_tick(now, Revision(rev(t)), true) {
            planner.on_compacted(now, target);
            done.push((t, target.0));
        }
    }
    done
}

#[test]
fn periodic_samples_a_tenth_of_the_retention_and_at_most_every_six_minutes() {
    assert_eq!(periodic(10 * MIN).tick_interval(), MIN);
    assert_eq!(periodic(5 * Duration::from_secs(1)).tick_interval(), Duration::from_millis(500));
    assert_eq!(periodic(HOUR).tick_interval(), 6 * MIN);
    // Past an hour the interval stays an hour's tenth (etcd: compact hourly).
    assert_eq!(periodic(24 * HOUR).tick_interval(), 6 * MIN);
    assert_eq!(revision(10).tick_interval(), 5 * MIN);
}

#[test]
fn periodic_first_compacts_a_retention_after_start_to_the_revision_of_then() {
    // Retention 10 min: a sample every minute, one write a second.
    let mut p = Planner::new(periodic(10 * MIN), Duration::ZERO, Revision(1));
    let done = drive(&mut p, Duration::ZERO, 35, |t| 1 + 60 * i64::from(t));
    // At minute 10 the sample of minute 0 (revision 1) is 10 min old;
    // then every 10 min the oldest kept sample, 11 min old (etcd keeps
    // retention / interval + 1 samples).
    assert_eq!(done, vec![(10, 1), (20, 1 + 60 * 9), (30, 1 + 60 * 19)]);
}

#[test]
fn periodic_over_an_hour_compacts_hourly_to_the_revision_of_a_retention_ago() {
    let mut p = Planner::new(periodic(3 * HOUR), Duration::ZERO, Revision(1));
    // 6-minute ticks; the revision is the minute count + 1.
    let done = drive(&mut p, Duration::ZERO, 60, |t| 1 + 6 * i64::from(t));
    let ticks: Vec<u32> = done.iter().map(|&(t, _)| t).collect();
    // First at 3 h (tick 30), then every hour (10 ticks).
    assert_eq!(ticks, vec![30, 40, 50, 60]);
    for &(t, target) in &done {
        let age_minutes = 6 * i64::from(t) + 1 - target;
        assert!((180..=186).contains(&age_minutes), "tick {t}: {age_minutes} min old");
    }
}

#[test]
fn periodic_failure_is_retried_at_the_next_sample() {
    let mut p = Planner::new(periodic(10 * MIN), Duration::ZERO, Revision(5));
    for t in 1..10 {
        assert_eq!(p.on_tick(MIN * t, Revision(5 + i64::from(t)), true), None);
    }
    // Due at minute 10; not reported done (it failed).
    assert_eq!(p.on_tick(10 * MIN, Revision(15), true), Some(Revision(5)));
    // The next sample retries, now to the next oldest sample.
    assert_eq!(p.on_tick(11 * MIN, Revision(16), true), Some(Revision(5)));
    assert_eq!(p.on_tick(12 * MIN, Revision(17), true), Some(Revision(6)));
    p.on_compacted(12 * MIN, Revision(6));
    assert_eq!(p.on_tick(13 * MIN, Revision(18), true), None);
}

#[test]
fn an_inactive_planner_samples_but_never_compacts_and_compacts_when_it_leads() {
    let mut p = Planner::new(periodic(10 * MIN), Duration::ZERO, Revision(1));
    for t in 1..=15 {
        assert_eq!(p.on_tick(MIN * t, Revision(1 + i64::from(t)), false), None);
    }
    // Leader from minute 16: compacts at once to what it saw ~10 min ago.
    assert_eq!(p.on_tick(16 * MIN, Revision(17), true), Some(Revision(6)));
}

#[test]
fn periodic_never_compacts_revision_zero_of_an_empty_shard() {
    let mut p = Planner::new(periodic(10 * MIN), Duration::ZERO, Revision(0));
    assert!(drive(&mut p, Duration::ZERO, 30, |_| 0).is_empty());
}

#[test]
fn revision_compacts_to_current_minus_retention_once_per_target() {
    let mut p = Planner::new(revision(10), Duration::ZERO, Revision(1));
    // Below the retention: nothing to compact.
    assert_eq!(p.on_tick(5 * MIN, Revision(10), true), None);
    assert_eq!(p.on_tick(10 * MIN, Revision(35), true), Some(Revision(25)));
    p.on_compacted(10 * MIN, Revision(25));
    // No writes since: the same target is not compacted again.
    assert_eq!(p.on_tick(15 * MIN, Revision(35), true), None);
    // A failure (not reported) is retried with the then current target.
    assert_eq!(p.on_tick(20 * MIN, Revision(40), true), Some(Revision(30)));
    assert_eq!(p.on_tick(25 * MIN, Revision(41), true), Some(Revision(31)));
    // Not the leader: nothing.
    assert_eq!(p.on_tick(30 * MIN, Revision(90), false), None);
}

#[test]
fn flags_follow_etcd() {
    use AutoCompactionMode::{Periodic, Revision as Rev};
    let parse = |mode, text| policy_from_flags(mode, text, None);
    assert_eq!(parse(Periodic, "0"), Ok(None));
    assert_eq!(parse(Periodic, "0s"), Ok(None));
    assert_eq!(parse(Rev, "0"), Ok(None));
    assert_eq!(parse(Periodic, "1"), Ok(Some(periodic(HOUR))));
    assert_eq!(parse(Periodic, "72"), Ok(Some(periodic(72 * HOUR))));
    assert_eq!(parse(Periodic, "30m"), Ok(Some(periodic(30 * MIN))));
    assert_eq!(parse(Periodic, "1h30m"), Ok(Some(periodic(90 * MIN))));
    assert_eq!(parse(Periodic, "5s"), Ok(Some(periodic(Duration::from_secs(5)))));
    assert_eq!(parse(Rev, "1000"), Ok(Some(revision(1000))));
    assert_eq!(
        policy_from_flags(Rev, "10", Some("200ms")),
        Ok(Some(Policy::Revision { retention: 10, check_interval: Duration::from_millis(200) }))
    );

    assert!(matches!(parse(Periodic, "ten"), Err(RetentionError::BadDuration { .. })));
    assert!(matches!(parse(Periodic, "1.5h"), Err(RetentionError::BadDuration { .. })));
    assert!(matches!(parse(Periodic, "-1"), Err(RetentionError::BadDuration { .. })));
    assert!(matches!(parse(Periodic, "500ms"), Err(RetentionError::PeriodOutOfRange { .. })));
    assert!(matches!(parse(Periodic, "721"), Err(RetentionError::PeriodOutOfRange { .. })));
    assert!(matches!(parse(Rev, "1h"), Err(RetentionError::BadCount { .. })));
    assert!(matches!(parse(Rev, "-5"), Err(RetentionError::BadCount { .. })));
    assert!(matches!(
        policy_from_flags(Rev, "10", Some("1ms")),
        Err(RetentionError::BadInterval { .. })
    ));
    let message = parse(Rev, "1h").expect_err("not a count").to_string();
    assert!(message.contains("--auto-compaction-mode revision"), "{message}");
}

#[test]
fn go_durations() {
    assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
    assert_eq!(parse_duration("2h3m4s"), Some(Duration::from_secs(2 * 3600 + 3 * 60 + 4)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    for bad in ["", "h", "5", "5x", "m5", "5s ", "99999999999h"] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

fn shard(id: u64, is_leader: bool) -> ringkv_node::ShardStatus {
    use ringkv_consensus::{LogIndex, NodeId};
    ringkv_node::ShardStatus {
        shard: ringkv_consensus::ShardId(id),
        leader: Some(NodeId(if is_leader { 1 } else { 2 })),
        is_leader,
        is_learner: false,
        term: 1,
        commit_index: LogIndex(1),
        applied_index: LogIndex(1),
        revision: Revision(1),
        compacted_revision: Revision(0),
        snapshot_index: LogIndex(0),
        snapshots_installed: 0,
    }
}

#[test]
fn each_data_shard_is_compacted_by_its_own_leader() {
    let ids = |v: Vec<&ringkv_node::ShardStatus>| v.iter().map(|s| s.shard.0).collect::<Vec<_>>();
    // Sharded: the data shards this node leads, never the metadata shard
    // (it has no keys), whoever leads it.
    let statuses = [shard(0, true), shard(1, true), shard(2, false), shard(3, true)];
    assert_eq!(ids(compacted_here(&statuses, true)), vec![1, 3]);
    let statuses = [shard(0, false), shard(1, false), shard(2, true)];
    assert_eq!(ids(compacted_here(&statuses, true)), vec![2]);
    // One shard: its leader compacts.
    assert_eq!(ids(compacted_here(&[shard(1, true)], false)), vec![1]);
    assert!(compacted_here(&[shard(1, false)], false).is_empty());
    assert!(compacted_here(&[], false).is_empty());
}
