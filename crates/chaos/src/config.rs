//! The `ringkv chaos` flags, and the command line that reruns a run.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::Engine;

/// Default `--time-limit`.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(60);
/// Default `--ops`: most operations a run issues.
pub const DEFAULT_OPS_LIMIT: u64 = 100_000;
/// Default `--nemesis-interval`.
pub const DEFAULT_NEMESIS_INTERVAL: Duration = Duration::from_secs(5);
/// Default `--op-timeout`: how long a client waits for one answer before
/// calling it unknown (shorter than ringkv's own request timeout, 5 s + 2
/// election timeouts, so a stalled request is cut by the client).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--keys`.
pub const DEFAULT_KEYS: usize = 3;
/// Most `--clients`.
pub const CLIENTS_MAX: usize = 64;
/// Most `--keys`.
pub const KEYS_MAX: usize = 64;
/// Default `--shards`: one shard, which is exactly an etcd.
pub const DEFAULT_SHARDS: u32 = 1;
/// Default `--hash-key-segments`: the whole key decides its shard.
pub const DEFAULT_HASH_KEY_SEGMENTS: u32 = 0;
/// Largest `--hash-key-segments` (the server's own limit).
pub const HASH_KEY_SEGMENTS_MAX: u32 = 64;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Reads, writes and compare-and-sets on a few keys; checked by lincheck.
    Register,
    /// Unique elements added through CAS transactions; every acknowledged
    /// element must be in the final read.
    Set,
    /// Keys attached to leases that expire or are revoked: once gone, never back.
    Lease,
    /// Watchers on a few keys must all see the same revisions, in order,
    /// none missing or repeated, across reconnects.
    Watch,
    /// List-append transactions over several keys, checked for G0, G1a,
    /// G1c and G2 cycles (Elle's idea) including real-time order.
    Append,
}

impl WorkloadKind {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Set => "set",
            WorkloadKind::Lease => "lease",
            WorkloadKind::Watch => "watch",
            WorkloadKind::Append => "append",
        }
    }
}

/// A family of faults the nemesis may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    /// No faults.
    None,
    /// SIGKILL and restart: the leader, a follower, a random node or a majority.
    Kill,
    /// SIGKILL and restart of the leader only (for failover figures).
    KillLeader,
    /// SIGSTOP and SIGCONT: the leader or a random node.
    Pause,
    /// Partitions between nodes: one node isolated (or the leader), halves,
    /// a bridge, one-way drops. Needs namespaces.
    Partition,
    /// Random packet loss between every pair of nodes. Needs namespaces.
    Loss,
    /// A full disk on one node (a small tmpfs under its data directory, filled up). Needs root.
    Disk,
    /// A clock jump on one node (libfaketime).
    Clock,
    /// Both clocks of one node moved 5–60 s either way and back (libfaketime on every
    /// node). A monotonic clock never runs backwards in reality: a harsher fault than
    /// real clocks make (it delays lease expiry by the jump, which the lease check allows).
    ClockBack,
    /// A follower removed from the cluster, wiped and added back as a new member.
    Member,
    /// A killed node's last WAL batch torn or bit-flipped before it restarts.
    Wal,
    /// Every member restarted one at a time (the leader too, in an order
    /// drawn from the seed), each by SIGTERM or SIGKILL, each healthy again
    /// before the next.
    RollingRestart,
}

impl NemesisKind {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::Kill => "kill",
            NemesisKind::KillLeader => "kill-leader",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Loss => "loss",
            NemesisKind::Disk => "disk",
            NemesisKind::Clock => "clock",
            NemesisKind::ClockBack => "clock-back",
            NemesisKind::Member => "member",
            NemesisKind::Wal => "wal",
            NemesisKind::RollingRestart => "rolling-restart",
        }
    }

    /// Whether it needs network namespaces.
    pub fn needs_netns(self) -> bool {
        matches!(self, NemesisKind::Partition | NemesisKind::Loss)
    }
}

/// `ringkv chaos`: run a workload against a real ringkv cluster while a
/// nemesis injects faults, then check the history.
#[derive(Clone, Debug, clap::Args)]
#[command(about = "Run a Jepsen-style chaos test against a real ringkv cluster")]
pub struct ChaosArgs {
    /// What the clients do.
    #[arg(long, value_enum, default_value = "register")]
    pub workload: WorkloadKind,
    /// Faults to inject, comma-separated (kill, kill-leader, pause,
    /// partition, loss, disk, clock, clock-back, member, wal,
    /// rolling-restart, none).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,pause,partition")]
    pub nemesis: Vec<NemesisKind>,
    /// Number of ringkv nodes (3 or 5 are the useful ones).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// How long clients run (e.g. 60s, 2m, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub time_limit: Duration,
    /// Most operations clients issue.
    #[arg(long, default_value_t = DEFAULT_OPS_LIMIT)]
    pub ops: u64,
    /// Seed of every random choice (printed; random when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Consensus engine of the cluster.
    #[arg(long, value_enum, default_value = "raft")]
    pub engine: Engine,
    /// The nodes' --shards: data shards of the cluster (the register, set
    /// and lease workloads run on any number; watch and append need one).
    #[arg(long, default_value_t = DEFAULT_SHARDS, value_parser = clap::value_parser!(u32).range(1..=i64::from(ringkv_ring::SHARD_COUNT_MAX)))]
    pub shards: u32,
    /// The nodes' --hash-key-segments: the first K `/`-separated segments
    /// of a key decide its shard (0: the whole key).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_HASH_KEY_SEGMENTS, value_parser = clap::value_parser!(u32).range(0..=i64::from(HASH_KEY_SEGMENTS_MAX)))]
    pub hash_key_segments: u32,
    /// The nodes' --placement-moves (ringkv's default, on): beyond R
    /// members each data shard lives on R of them (a node forwards
    /// requests for the others); false: every member holds every shard.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          default_value_t = true, action = clap::ArgAction::Set)]
    pub placement_moves: bool,
    /// The nodes' --down-timeout with placement moves on (e.g. 5s): how
    /// long a killed node goes unheard before its shards are re-created on
    /// the others [default: ringkv's].
    #[arg(long, value_parser = parse_duration)]
    pub down_timeout: Option<Duration>,
    /// Run every node on loopback (no root needed; no partitions or loss).
    #[arg(long)]
    pub no_netns: bool,
    /// Output directory [default: chaos-runs/WORKLOAD-SEED].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The ringkv binary to test [default: this one].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Client workers [default: 2 per node].
    #[arg(long)]
    pub clients: Option<usize>,
    /// Keys per workload.
    #[arg(long, default_value_t = DEFAULT_KEYS)]
    pub keys: usize,
    /// Mean time between faults, and mean fault duration.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub nemesis_interval: Duration,
    /// How long a client waits for an answer before calling it unknown.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub op_timeout: Duration,
    /// The nodes' --heartbeat-interval in ms [default: ringkv's].
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval: Option<u64>,
    /// The nodes' --election-timeout in ms [default: ringkv's].
    #[arg(long, value_name = "MS")]
    pub election_timeout: Option<u64>,
    /// The nodes' --snapshot-count [default: ringkv's].
    #[arg(long, value_name = "N")]
    pub snapshot_count: Option<u64>,
    /// Register reads ask for serializable (local, possibly stale) reads,
    /// which etcd's semantics allow to be stale: a check of the checker,
    /// whose run under partitions or pauses should be found invalid.
    #[arg(long)]
    pub serializable_reads: bool,
    /// Only remove namespaces, bridges and mounts left by chaos runs that
    /// were killed, then exit.
    #[arg(long)]
    pub cleanup: bool,
}

impl ChaosArgs {
    /// The flags with defaults, as clap would parse an empty command line.
    pub fn defaults() -> ChaosArgs {
        ChaosArgs {
            workload: WorkloadKind::Register,
            nemesis: vec![NemesisKind::Kill, NemesisKind::Pause, NemesisKind::Partition],
            nodes: 3,
            time_limit: DEFAULT_TIME_LIMIT,
            ops: DEFAULT_OPS_LIMIT,
            seed: None,
            engine: Engine::Raft,
            shards: DEFAULT_SHARDS,
            hash_key_segments: DEFAULT_HASH_KEY_SEGMENTS,
            placement_moves: true,
            down_timeout: None,
            no_netns: false,
            out: None,
            binary: None,
            clients: None,
            keys: DEFAULT_KEYS,
            nemesis_interval: DEFAULT_NEMESIS_INTERVAL,
            op_timeout: DEFAULT_OP_TIMEOUT,
            heartbeat_interval: None,
            election_timeout: None,
            snapshot_count: None,
            serializable_reads: false,
            cleanup: false,
        }
    }

    /// The nemeses asked for, without `none` and duplicates.
    pub fn nemeses(&self) -> Vec<NemesisKind> {
        let mut n: Vec<NemesisKind> =
            self.nemesis.iter().copied().filter(|&k| k != NemesisKind::None).collect();
        n.sort_unstable();
        n.dedup();
        n
    }

    /// The cluster's key space as the nodes compute it (which shard holds
    /// which key), for the report's per-shard key counts.
    pub fn keyspace(&self) -> ringkv_ring::Keyspace {
        let rule = std::num::NonZeroU32::new(self.hash_key_segments)
            .map_or(ringkv_ring::HashKeyRule::WholeKey, ringkv_ring::HashKeyRule::Segments);
        ringkv_ring::Keyspace::new(self.shards, rule)
            .expect("--shards is parsed within 1..=SHARD_COUNT_MAX")
    }

    /// Client workers.
    pub fn client_count(&self) -> usize {
        self.clients.unwrap_or(2 * self.nodes).clamp(1, CLIENTS_MAX)
    }

    /// The `ringkv chaos …` command that reruns this run with `seed`
    /// (everything but the output directory, which a rerun must not share).
    pub fn rerun_command(&self, seed: u64) -> String {
        let nemesis: Vec<&str> = self.nemesis.iter().map(|n| n.as_str()).collect();
        let mut cmd = format!(
            "ringkv chaos --workload {} --nemesis {} --nodes {} --time-limit {} --ops {} --seed {seed} --engine {}",
            self.workload.as_str(),
            nemesis.join(","),
            self.nodes,
            format_duration(self.time_limit),
            self.ops,
            self.engine.as_str(),
        );
        if self.shards != DEFAULT_SHARDS {
            cmd.push_str(&format!(" --shards {}", self.shards));
        }
        if self.hash_key_segments != DEFAULT_HASH_KEY_SEGMENTS {
            cmd.push_str(&format!(" --hash-key-segments {}", self.hash_key_segments));
        }
        if !self.placement_moves {
            cmd.push_str(" --placement-moves false");
        }
        if let Some(d) = self.down_timeout {
            cmd.push_str(&format!(" --down-timeout {}", format_duration(d)));
        }
        if self.no_netns {
            cmd.push_str(" --no-netns");
        }
        if let Some(binary) = &self.binary {
            cmd.push_str(&format!(" --binary {}", binary.display()));
        }
        if self.serializable_reads {
            cmd.push_str(" --serializable-reads");
        }
        if let Some(c) = self.clients {
            cmd.push_str(&format!(" --clients {c}"));
        }
        if self.keys != DEFAULT_KEYS {
            cmd.push_str(&format!(" --keys {}", self.keys));
        }
        if self.nemesis_interval != DEFAULT_NEMESIS_INTERVAL {
            cmd.push_str(&format!(
                " --nemesis-interval {}",
                format_duration(self.nemesis_interval)
            ));
        }
        if self.op_timeout != DEFAULT_OP_TIMEOUT {
            cmd.push_str(&format!(" --op-timeout {}", format_duration(self.op_timeout)));
        }
        for (flag, value) in [
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--election-timeout", self.election_timeout),
            ("--snapshot-count", self.snapshot_count),
        ] {
            if let Some(v) = value {
                cmd.push_str(&format!(" {flag} {v}"));
            }
        }
        cmd
    }
}

/// Parses `90s`, `2m`, `500ms`, `1h` or a bare number of seconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a duration like 60s, 2m or 500ms"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    Ok(d)
}

/// The shortest form [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, d) in [
            ("60s", Duration::from_secs(60)),
            ("2m", Duration::from_secs(120)),
            ("500ms", Duration::from_millis(500)),
            ("7", Duration::from_secs(7)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn rerun_command_parses_back_to_the_same_run() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Chaos(ChaosArgs),
        }
        let mut args = ChaosArgs::defaults();
        args.workload = WorkloadKind::Set;
        args.nemesis = vec![NemesisKind::Partition, NemesisKind::Kill];
        args.time_limit = Duration::from_millis(1500);
        args.no_netns = true;
        args.keys = 5;
        args.election_timeout = Some(500);
        args.nemesis.push(NemesisKind::RollingRestart);
        args.shards = 8;
        args.hash_key_segments = 2;
        args.placement_moves = false;
        args.down_timeout = Some(Duration::from_secs(4));
        let cmd = args.rerun_command(42);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(&words[..2], ["ringkv", "chaos"]);
        let Sub::Chaos(parsed) =
            Cli::try_parse_from(std::iter::once("ringkv").chain(words[1..].iter().copied()))
                .unwrap()
                .cmd;
        assert_eq!(parsed.rerun_command(42), cmd);
        assert_eq!(parsed.seed, Some(42));
        assert_eq!(parsed.workload, WorkloadKind::Set);
        assert_eq!(parsed.time_limit, Duration::from_millis(1500));
        assert_eq!((parsed.shards, parsed.hash_key_segments), (8, 2));
        assert!(!parsed.placement_moves);
        assert_eq!(parsed.down_timeout, Some(Duration::from_secs(4)));
        assert!(parsed.nemeses().contains(&NemesisKind::RollingRestart));
    }
}
