//! `ringkv bench`'s command line, and its validation into a [`Plan`].

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::keys::{Distribution, KeySpace, ZIPF_EXPONENT_MAX};
use crate::report::WorkloadConfig;

/// Endpoints used when none are given: etcd's and `ringkv`'s default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Repetitions per endpoint set in a comparison, unless `--repeat` says.
pub const COMPARE_REPEAT_DEFAULT: u32 = 3;

/// Most clients one run may start (each is a task with its own buffers).
pub const CLIENTS_MAX: u64 = 100_000;

/// Most gRPC connections per endpoint set.
pub const CONNS_MAX: u64 = 10_000;

/// Most watch streams.
pub const WATCHERS_MAX: u64 = 100_000;

/// Largest key, in bytes (etcd's request limit is 1.5 MiB; a bench key
/// past a kilobyte measures nothing useful).
pub const KEY_SIZE_MAX: usize = 64 * 1024;

/// Largest value, in bytes: etcd's default request limit (1.5 MiB) less
/// room for the key and framing.
pub const VALUE_SIZE_MAX: usize = 1_500_000;

/// Most keys per range request.
pub const RANGE_KEYS_MAX: u64 = 100_000;

/// Largest key space of the txn workload, which keeps each key's latest
/// known revision in memory (8 bytes a key per endpoint set).
pub const TXN_KEY_SPACE_MAX: u64 = 16 * 1024 * 1024;

/// Most repetitions per endpoint set.
pub const REPEAT_MAX: u32 = 1_000;

/// Bytes at the start of each watch-workload value: the put's send time.
pub const WATCH_STAMP_BYTES: usize = 8;

/// A benchmark's duration when neither `--total` nor `--duration` is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `Put` of one key.
    Put,
    /// `Range` of one key (`--consistency`); the key space is preloaded.
    Get,
    /// `Range` of `--range-keys` consecutive keys; preloaded.
    Range,
    /// `Txn` compare-and-set: if the key's mod revision is the latest this
    /// benchmark knows (from the preload and every answer since), put,
    /// else read the key to learn its revision. A compare fails only when
    /// another client (or another writer) changed the key in between.
    Txn,
    /// Watch latency: `--watchers` streams watch the key space while
    /// `--clients` put; latency is from each put's send to each event.
    Watch,
    /// Gets and puts, `--read-ratio` of them gets; preloaded.
    Mixed,
}

impl Workload {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Range => "range",
            Workload::Txn => "txn",
            Workload::Watch => "watch",
            Workload::Mixed => "mixed",
        }
    }

    /// Whether it reads.
    fn reads(self) -> bool {
        matches!(self, Workload::Get | Workload::Range | Workload::Mixed)
    }

    /// Whether it expects the key space to exist (and, for txn, to know
    /// each key's revision) before it starts.
    fn preloads(self) -> bool {
        self.reads() || self == Workload::Txn
    }
}

/// Read consistency, as etcd's `serializable` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Linearizable: the read reflects every write acknowledged before it
    /// (etcd's ReadIndex).
    #[value(alias = "l")]
    Linearizable,
    /// Serializable: served from the local member, possibly stale.
    #[value(alias = "s")]
    Serializable,
}

impl Consistency {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        }
    }
}

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Text,
    /// The whole report as JSON, for scripts.
    Json,
}

/// Which server processes' CPU to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerPids {
    /// The processes listening on the endpoints' ports, when they are on
    /// this machine.
    Auto,
    /// None: CPU is not measured.
    None,
    /// These.
    List(Vec<u32>),
}

fn parse_server_pids(s: &str) -> Result<ServerPids, String> {
    match s {
        "auto" => Ok(ServerPids::Auto),
        "none" => Ok(ServerPids::None),
        _ => s
            .split(',')
            .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?} is not a process id: {e}")))
            .collect::<Result<Vec<u32>, String>>()
            .map(ServerPids::List),
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 =
        number.parse().map_err(|_| format!("{s:?} is not a duration such as 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "m" | "min" => number * 60.0,
        "h" => number * 3_600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{s:?} is not a rate: {e}"))?;
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(format!("{s} is not a rate in operations per second (0 for a closed loop)"))
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let ratio: f64 = s.parse().map_err(|e| format!("{s:?} is not a ratio: {e}"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("{s} is not between 0 and 1"))
    }
}

/// `ringkv bench`: a load generator over etcd's v3 API.
#[derive(Args, Clone, Debug)]
#[command(
    about = "Load generator over etcd's v3 API: measures ringkv and etcd alike",
    long_about = "Load generator over etcd's v3 gRPC API: measures ringkv and etcd alike.\n\n\
        Runs one workload against --endpoints and prints throughput, latency percentiles \
        (HDR histograms), errors by gRPC code and server CPU per operation. With --compare, \
        runs it against two endpoint sets alternately, --repeat times each, and prints the \
        medians of each and the ratios B/A.\n\n\
        Examples:\n  \
        ringkv bench put --clients 256 --conns 16 --duration 10s\n  \
        ringkv bench get --consistency s --clients 256 --total 100000\n  \
        ringkv bench put --compare http://127.0.0.1:2379 http://127.0.0.1:22379 -w json"
)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum, default_value = "put")]
    pub workload: Workload,

    /// Endpoints (comma-separated URLs) of the store to measure: A in a
    /// comparison.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ENDPOINT, env = "ETCDCTL_ENDPOINTS")]
    pub endpoints: Vec<String>,

    /// Compare two endpoint sets: the same workload runs against A and B
    /// alternately; the report gives the medians of each and B/A.
    #[arg(
        long,
        num_args = 2,
        value_names = ["A_ENDPOINTS", "B_ENDPOINTS"],
        conflicts_with = "compare_endpoints"
    )]
    pub compare: Option<Vec<String>>,

    /// Endpoints of B, compared with --endpoints (A).
    #[arg(long, value_delimiter = ',')]
    pub compare_endpoints: Option<Vec<String>>,

    /// Name of A (or of the only endpoint set) in the report.
    #[arg(long, default_value = "A")]
    pub label: String,

    /// Name of B in the report.
    #[arg(long, default_value = "B")]
    pub compare_label: String,

    /// Repetitions per endpoint set; figures are their medians [default: 3
    /// with a comparison, else 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(REPEAT_MAX)))]
    pub repeat: Option<u32>,

    /// Concurrent clients, each with one request in flight (for the watch
    /// workload: putters).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub clients: u64,

    /// gRPC connections (HTTP/2) per endpoint set, spread over its
    /// endpoints; clients share them round-robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=CONNS_MAX))]
    pub conns: u64,

    /// Watch streams (watch workload), spread over the connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=WATCHERS_MAX))]
    pub watchers: u64,

    /// Bytes per key.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=KEY_SIZE_MAX as u64))]
    pub key_size: u64,

    /// Bytes per value.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=VALUE_SIZE_MAX as u64))]
    pub value_size: u64,

    /// Distinct keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_space: u64,

    /// How operations pick keys.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,

    /// Zipf's exponent s: key i is drawn with probability ∝ 1/(i+1)^s.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,

    /// Read consistency of get, range and mixed.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: Consistency,

    /// Keys per range request (range workload).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=RANGE_KEYS_MAX))]
    pub range_keys: u64,

    /// Fraction of operations that are gets (mixed workload).
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,

    /// Operations per second over all clients, sent on a fixed schedule
    /// (open loop; latency counts from each operation's due time); 0 for a
    /// closed loop.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Operations per repetition (instead of --duration).
    #[arg(long, alias = "count", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub total: Option<u64>,

    /// Time per repetition, e.g. 10s, 500ms, 2m [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Unmeasured load before each repetition, e.g. 1s.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Do not write the key space before the get, range, mixed and txn
    /// workloads.
    #[arg(long)]
    pub no_preload: bool,

    /// Deadline of each request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Seed of the key choices; the same for every endpoint set, so both
    /// sides of a comparison see the same keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Server processes of A whose CPU to measure: `auto` (those listening
    /// on the endpoints' ports on this machine), `none`, or a comma list.
    #[arg(long, default_value = "auto", value_parser = parse_server_pids)]
    pub server_pids: ServerPids,

    /// Server processes of B, as --server-pids.
    #[arg(long, default_value = "auto", value_parser = parse_server_pids)]
    pub compare_server_pids: ServerPids,

    /// Report format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "text")]
    pub write_out: OutputFormat,

    /// Print the report as JSON (as -w json).
    #[arg(long)]
    pub json: bool,

    /// Also write the report as JSON to this file (whatever -w says), so a
    /// script gets the table and the data from one run.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,

    /// No progress bar (it is hidden anyway when stdout is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl BenchArgs {
    /// The arguments `ringkv bench` has with no flags (`put` against
    /// 127.0.0.1:2379 for 10 s).
    pub fn new(workload: Workload) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BenchArgs,
        }
        let mut args =
            <Wrapper as clap::Parser>::try_parse_from(["bench"]).expect("the defaults parse").args;
        args.workload = workload;
        args
    }

    /// The report format asked for.
    pub fn format(&self) -> OutputFormat {
        if self.json { OutputFormat::Json } else { self.write_out }
    }
}

/// One endpoint set to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// Its name in the report.
    pub label: String,
    /// Its endpoint URLs.
    pub endpoints: Vec<String>,
    /// Whose CPU to measure.
    pub server_pids: ServerPids,
}

/// How long a phase runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// This many operations (over all clients).
    Count(u64),
    /// This long.
    Time(Duration),
}

/// Validated arguments.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The workload.
    pub workload: Workload,
    /// A, then B with a comparison.
    pub targets: Vec<TargetSpec>,
    /// Repetitions per target.
    pub repeat: u32,
    /// Clients (putters, for the watch workload).
    pub clients: u64,
    /// Connections per target.
    pub conns: u64,
    /// Watch streams.
    pub watchers: u64,
    /// The keys.
    pub key_space: KeySpace,
    /// Bytes per value.
    pub value_size: usize,
    /// How keys are picked.
    pub distribution: Distribution,
    /// Zipf's exponent.
    pub zipf_exponent: f64,
    /// Read consistency.
    pub consistency: Consistency,
    /// Keys per range.
    pub range_keys: u64,
    /// Share of gets in mixed.
    pub read_ratio: f64,
    /// Operations per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// How long each measured repetition runs.
    pub bound: Bound,
    /// Unmeasured load before each repetition.
    pub warmup: Duration,
    /// Whether to write the key space first.
    pub preload: bool,
    /// Request deadline.
    pub timeout: Duration,
    /// Seed of key choices.
    pub seed: u64,
    /// Whether to draw a progress bar (still hidden off a terminal).
    pub progress: bool,
}

impl Plan {
    /// Checks `args` and resolves their defaults.
    ///
    /// # Errors
    ///
    /// A [`BenchError`] naming the flag and what to change.
    pub fn from_args(args: &BenchArgs) -> Result<Plan, BenchError> {
        let key_size = usize::try_from(args.key_size).expect("bounded by KEY_SIZE_MAX");
        let value_size = usize::try_from(args.value_size).expect("bounded by VALUE_SIZE_MAX");
        let key_space = KeySpace::new(args.key_space, key_size)?;
        if args.distribution == Distribution::Zipfian
            && !(args.zipf_exponent > 0.0 && args.zipf_exponent <= ZIPF_EXPONENT_MAX)
        {
            return Err(BenchError::BadZipfExponent {
                exponent: args.zipf_exponent,
                max: ZIPF_EXPONENT_MAX,
            });
        }
        if args.workload == Workload::Txn && args.key_space > TXN_KEY_SPACE_MAX {
            return Err(BenchError::TxnKeySpaceTooLarge {
                key_space: args.key_space,
                max: TXN_KEY_SPACE_MAX,
            });
        }
        if args.workload == Workload::Watch && value_size < WATCH_STAMP_BYTES {
            return Err(BenchError::ValueTooSmallForWatch {
                value_size,
                needed: WATCH_STAMP_BYTES,
            });
        }
        let (a, b) = match (&args.compare, &args.compare_endpoints) {
            (Some(pair), _) => {
                let [a, b] = pair.as_slice() else {
                    unreachable!("clap takes exactly two values for --compare")
                };
                (split_endpoints(a)?, Some(split_endpoints(b)?))
            }
            (None, Some(b)) => (normalize(&args.endpoints)?, Some(normalize(b)?)),
            (None, None) => (normalize(&args.endpoints)?, None),
        };
        let mut targets = vec![TargetSpec {
            label: args.label.clone(),
            endpoints: a,
            server_pids: args.server_pids.clone(),
        }];
        if let Some(b) = b {
            if args.label == args.compare_label {
                return Err(BenchError::SameLabels { label: args.label.clone() });
            }
            targets.push(TargetSpec {
                label: args.compare_label.clone(),
                endpoints: b,
                server_pids: args.compare_server_pids.clone(),
            });
        }
        let repeat =
            args.repeat.unwrap_or(if targets.len() > 1 { COMPARE_REPEAT_DEFAULT } else { 1 });
        let bound = match (args.total, args.duration) {
            (Some(n), _) => Bound::Count(n),
            (None, Some(d)) if d.is_zero() => return Err(BenchError::ZeroDuration),
            (None, Some(d)) => Bound::Time(d),
            (None, None) => Bound::Time(DURATION_DEFAULT),
        };
        if args.timeout.is_zero() {
            return Err(BenchError::ZeroTimeout);
        }
        Ok(Plan {
            workload: args.workload,
            targets,
            repeat,
            clients: args.clients,
            conns: args.conns,
            watchers: args.watchers,
            key_space,
            value_size,
            distribution: args.distribution,
            zipf_exponent: args.zipf_exponent,
            consistency: args.consistency,
            range_keys: args.range_keys,
            read_ratio: args.read_ratio,
            rate: (args.rate > 0.0).then_some(args.rate),
            bound,
            warmup: args.warmup,
            preload: args.workload.preloads() && !args.no_preload,
            timeout: args.timeout,
            seed: args.seed,
            progress: !args.no_progress,
        })
    }

    /// The report's description of this plan.
    pub fn config(&self) -> WorkloadConfig {
        let w = self.workload;
        WorkloadConfig {
            workload: w,
            consistency: w.reads().then_some(self.consistency),
            clients: self.clients,
            conns: self.conns,
            watchers: (w == Workload::Watch).then_some(self.watchers),
            key_size: self.key_space.key(0).len(),
            value_size: self.value_size,
            key_space: self.key_space.size(),
            distribution: self.distribution,
            zipf_exponent: (self.distribution == Distribution::Zipfian)
                .then_some(self.zipf_exponent),
            range_keys: (w == Workload::Range).then_some(self.range_keys),
            read_ratio: (w == Workload::Mixed).then_some(self.read_ratio),
            rate_ops_s: self.rate,
            total: match self.bound {
                Bound::Count(n) => Some(n),
                Bound::Time(_) => None,
            },
            duration_s: match self.bound {
                Bound::Count(_) => None,
                Bound::Time(d) => Some(d.as_secs_f64()),
            },
            warmup_s: self.warmup.as_secs_f64(),
            preload: self.preload,
            repeat: self.repeat,
            seed: self.seed,
        }
    }
}

/// `a,b` → normalized URLs.
fn split_endpoints(list: &str) -> Result<Vec<String>, BenchError> {
    normalize(&list.split(',').map(str::to_owned).collect::<Vec<_>>())
}

/// Trims, drops empty entries, adds `http://` where no scheme is given,
/// and checks each is a URL.
fn normalize(endpoints: &[String]) -> Result<Vec<String>, BenchError> {
    let urls: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| if e.contains("://") { e.to_owned() } else { format!("http://{e}") })
        .collect();
    if urls.is_empty() {
        return Err(BenchError::NoEndpoints);
    }
    for url in &urls {
        let uri: tonic::transport::Uri = url.parse().map_err(|e| BenchError::BadEndpoint {
            endpoint: url.clone(),
            reason: format!("{e}"),
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(BenchError::BadEndpoint {
                endpoint: url.clone(),
                reason: "only http:// is supported (no TLS)".to_owned(),
            });
        }
        if uri.host().is_none() {
            return Err(BenchError::BadEndpoint {
                endpoint: url.clone(),
                reason: "no host".to_owned(),
            });
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn defaults_run_put_for_ten_seconds_on_the_default_endpoint() {
        let plan = Plan::from_args(&parse(&[]).unwrap()).unwrap();
        assert_eq!(plan.workload, Workload::Put);
        assert_eq!(plan.bound, Bound::Time(DURATION_DEFAULT));
        assert_eq!(plan.targets.len(), 1);
        assert_eq!(plan.targets[0].endpoints, [DEFAULT_ENDPOINT]);
        assert_eq!(plan.repeat, 1);
        assert_eq!(plan.rate, None);
        assert!(!plan.preload, "put does not preload");
        assert!(Plan::from_args(&parse(&["txn"]).unwrap()).unwrap().preload);
        assert!(!Plan::from_args(&parse(&["txn", "--no-preload"]).unwrap()).unwrap().preload);
        assert_eq!(BenchArgs::new(Workload::Get).workload, Workload::Get);
    }

    #[test]
    fn compare_takes_two_endpoint_sets_and_repeats_three_times() {
        let args = parse(&["get", "--compare", "127.0.0.1:1,127.0.0.1:2", "http://h:3"]).unwrap();
        let plan = Plan::from_args(&args).unwrap();
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.targets[0].endpoints, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(plan.targets[1].endpoints, ["http://h:3"]);
        assert_eq!(plan.repeat, COMPARE_REPEAT_DEFAULT);
        assert!(plan.preload);
        let args = parse(&[
            "--endpoints=a:1",
            "--compare-endpoints=b:2",
            "--repeat=5",
            "--label=ringkv",
            "--compare-label=etcd",
        ])
        .unwrap();
        let plan = Plan::from_args(&args).unwrap();
        assert_eq!(plan.targets[1].endpoints, ["http://b:2"]);
        assert_eq!(plan.targets[1].label, "etcd");
        assert_eq!(plan.repeat, 5);
    }

    #[test]
    fn bad_arguments_are_refused_naming_the_flag() {
        assert!(parse(&["--total=5", "--duration=1s"]).is_err());
        assert!(parse(&["--clients=0"]).is_err());
        assert!(parse(&["--read-ratio=1.5"]).is_err());
        assert!(parse(&["--rate=-1"]).is_err());
        assert!(parse(&["--compare", "a:1"]).is_err(), "--compare needs two sets");
        let err = Plan::from_args(&parse(&["--key-size=1", "--key-space=1000"]).unwrap());
        assert!(matches!(err, Err(BenchError::KeySizeTooSmall { needed: 2, .. })));
        let err = Plan::from_args(&parse(&["txn", "--key-space=100000000"]).unwrap());
        assert!(matches!(err, Err(BenchError::TxnKeySpaceTooLarge { .. })));
        let err = Plan::from_args(&parse(&["watch", "--value-size=4"]).unwrap());
        assert!(matches!(err, Err(BenchError::ValueTooSmallForWatch { .. })));
        let err = Plan::from_args(&parse(&["--endpoints=https://x:1"]).unwrap());
        assert!(matches!(err, Err(BenchError::BadEndpoint { .. })));
        let err = Plan::from_args(&parse(&["--endpoints=,"]).unwrap());
        assert!(matches!(err, Err(BenchError::NoEndpoints)));
        let err =
            Plan::from_args(&parse(&["--distribution=zipfian", "--zipf-exponent=0"]).unwrap());
        assert!(matches!(err, Err(BenchError::BadZipfExponent { .. })));
        let err = Plan::from_args(&parse(&["--compare", "a:1", "b:2", "--label=B"]).unwrap());
        assert!(matches!(err, Err(BenchError::SameLabels { .. })));
    }

    #[test]
    fn server_pids_are_auto_none_or_a_list() {
        assert_eq!(parse(&[]).unwrap().server_pids, ServerPids::Auto);
        assert_eq!(parse(&["--server-pids=none"]).unwrap().server_pids, ServerPids::None);
        assert_eq!(
            parse(&["--server-pids=12,34"]).unwrap().server_pids,
            ServerPids::List(vec![12, 34])
        );
        assert!(parse(&["--server-pids=12,x"]).is_err());
    }

    #[test]
    fn json_is_asked_either_way() {
        assert_eq!(parse(&["--json"]).unwrap().format(), OutputFormat::Json);
        assert_eq!(parse(&["-w", "json"]).unwrap().format(), OutputFormat::Json);
        assert_eq!(parse(&[]).unwrap().format(), OutputFormat::Text);
    }
}
