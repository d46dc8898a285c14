//! What one seed simulates: the cluster's shape and tunables, the
//! network's and disks' speeds, the workload and the fault mix, all drawn
//! from the seed so that each seed explores a different corner.

use ringkv_consensus::{Config, DetRng, NodeId, ReadMode, ShardId};
use ringkv_storage::WalOptions;

use crate::client::ClientParams;
use crate::faults::FaultMix;
use crate::host::FsyncLatency;
use crate::network::NetworkParams;
use crate::time::MICROS_PER_MILLI;

/// The shard every simulated replica serves.
pub const SHARD: ShardId = ShardId(1);
/// Length of an engine tick in simulated time.
pub const TICK_US: u64 = 10 * MICROS_PER_MILLI;
/// Election timeout in ticks (etcd's proportions: 10 heartbeats).
pub const ELECTION_TICKS: u32 = 10;
/// Most nodes a run may create (founders plus replicas added later).
pub const NODES_MAX: u64 = 9;
/// Most voters the membership driver grows a shard to.
pub const VOTERS_MAX: usize = 7;
/// Lease reads' clock-drift margin, in ticks of an election timeout.
pub const LEASE_DRIFT_TICKS: u32 = 2;
/// Most extra microseconds one node's tick may last over [`TICK_US`]
/// (clock drift between nodes: 5%).
pub const TICK_SKEW_MAX_US: u64 = TICK_US / 20;
/// Fewest voters the membership driver shrinks a shard to.
pub const VOTERS_MIN: usize = 3;
/// The Multi-Paxos configuration delays α a seed picks from: α = 1 (no
/// pipelining at all) to the engine's default
/// ([`ringkv_paxos::CONFIG_DELAY_SLOTS`], where a membership change pads
/// the log with over a thousand no-ops).
pub const CONFIG_DELAY_SLOTS_CHOICES: [u64; 6] =
    [1, 2, 4, 16, 64, ringkv_paxos::CONFIG_DELAY_SLOTS];
/// Largest α for a seed whose leader sends one slot per message (see
/// [`Scenario::draw`]).
pub const CONFIG_DELAY_SLOTS_ONE_SLOT_PER_MESSAGE_MAX: u64 = 64;

/// One seed's simulation parameters.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Founding voters, numbered from 1.
    pub voters: u64,
    /// Engine configuration template (`id` is set per node).
    pub config: Config,
    /// WAL tunables (small segments and caches, so rotation, deletion and
    /// reads from disk all happen).
    pub wal: WalOptions,
    /// Local snapshot interval in applied entries.
    pub snapshot_every_entries: u64,
    /// Disk fsync latency.
    pub fsync: FsyncLatency,
    /// Network latency and per-packet faults.
    pub network: NetworkParams,
    /// Each node's tick is `TICK_US` plus up to this much (clock drift).
    pub tick_skew_us: u64,
    /// Client processes.
    pub clients: u64,
    /// Their behaviour.
    pub client: ClientParams,
    /// Length of the safety phase (faults on).
    pub safety_us: u64,
    /// The faults this seed injects.
    pub faults: FaultMix,
    /// How long a crashed node stays down: `[min, max)` µs.
    pub downtime_us: (u64, u64),
    /// How long a partition lasts: `[min, max)` µs.
    pub partition_us: (u64, u64),
    /// How long a clog lasts: `[min, max)` µs.
    pub clog_us: (u64, u64),
    /// Multi-Paxos' α, the configuration delay in slots (Raft ignores it).
    pub config_delay_slots: u64,
}

fn pick<T: Copy>(rng: &mut DetRng, items: &[T]) -> T {
    items[rng.range(0, items.len() as u64) as usize]
}

impl Scenario {
    /// Draws a scenario from `seed`; with `faults` off, the network and
    /// disks are perfect and nothing crashes.
    pub fn draw(seed: u64, faults: bool) -> Scenario {
        let mut rng = DetRng::new(seed);
        let voters = pick(&mut rng, &[3, 3, 5]);
        let mut config = Config::new(NodeId(1), SHARD);
        config.election_ticks = ELECTION_TICKS;
        config.heartbeat_ticks = rng.range(1, 4) as u32;
        config.pre_vote = rng.chance(2, 3);
        config.check_quorum = rng.chance(2, 3);
        // Lease reads are safe while clocks drift less than the margin over
        // an election timeout: node ticks differ by at most
        // `TICK_SKEW_MAX_US` per tick, far inside two ticks per ten.
        if config.check_quorum && rng.chance(1, 4) {
            config.read_mode = ReadMode::Lease { drift_ticks: LEASE_DRIFT_TICKS };
        }
        // One entry per message now and then, so acknowledgements stop at
        // every index (the Figure 8 scenario needs that).
        config.max_message_bytes = pick(&mut rng, &[1, 512, 8 << 10]);
        config.max_inflight_messages = pick(&mut rng, &[1, 4, 256]);
        config.max_uncommitted_bytes = pick(&mut rng, &[16 << 10, 1 << 20]);
        config.max_command_bytes = 4 << 10;
        config.max_committed_bytes_per_ready = pick(&mut rng, &[1, 64 << 10]);
        config.snapshot_chunk_bytes = pick(&mut rng, &[64, 1 << 10, 1 << 20]);
        config.seed = rng.next_u64();
        let wal = WalOptions {
            segment_bytes: pick(&mut rng, &[4 << 10, 32 << 10, 1 << 20]),
            cache_bytes_per_shard: pick(&mut rng, &[0, 2 << 10, 1 << 20]),
            ..WalOptions::default()
        };
        let mix = if faults { FaultMix::draw(&mut rng) } else { FaultMix::none() };
        let network = NetworkParams {
            latency_min_us: rng.range(50, 1_000),
            latency_jitter_us: rng.range(50, 2_000),
            loss_ppm: mix.loss_ppm,
            duplicate_ppm: mix.duplicate_ppm,
            delay_ppm: mix.delay_ppm,
            delay_max_us: rng.range(10, 200) * MICROS_PER_MILLI,
            reorder: mix.reorder,
        };
        let fsync = FsyncLatency {
            min_us: rng.range(20, 500),
            jitter_us: rng.range(10, 2_000),
            slow_ppm: if rng.chance(1, 2) { 10_000 } else { 0 },
            slow_us: 30 * MICROS_PER_MILLI,
        };
        let mut weights = [0u32; 5];
        for w in &mut weights {
            *w = rng.range(0, 5) as u32;
        }
        // Every workload writes, so the liveness phase can commit something.
        weights[0] = weights[0].max(1);
        let election_us = u64::from(ELECTION_TICKS) * TICK_US;
        let client = ClientParams {
            keys: rng.range(1, 6) as u32,
            weights,
            think_us: (0, rng.range(1, 30) * MICROS_PER_MILLI),
            attempt_timeout_us: election_us + rng.range(0, 3 * election_us),
            op_timeout_us: 10 * election_us + rng.range(0, 10 * election_us),
            retry_backoff_us: rng.range(1, 20) * MICROS_PER_MILLI,
        };
        let mut scenario = Scenario {
            voters,
            config,
            wal,
            snapshot_every_entries: pick(&mut rng, &[8, 32, 128, 1 << 20]),
            fsync,
            network,
            tick_skew_us: rng.range(0, TICK_SKEW_MAX_US),
            clients: rng.range(1, 6),
            client,
            safety_us: rng.range(100, 250) * TICK_US,
            faults: mix,
            downtime_us: (5 * MICROS_PER_MILLI, rng.range(50, 800) * MICROS_PER_MILLI),
            partition_us: (20 * MICROS_PER_MILLI, rng.range(100, 1_000) * MICROS_PER_MILLI),
            clog_us: (5 * MICROS_PER_MILLI, rng.range(20, 400) * MICROS_PER_MILLI),
            config_delay_slots: 0,
        };
        // Drawn last, so that adding it left every earlier draw (and so
        // every Raft seed's run) as it was.
        scenario.config_delay_slots = pick(&mut rng, &CONFIG_DELAY_SLOTS_CHOICES);
        if scenario.config.max_message_bytes == 1 {
            // One slot per message: the α - 1 no-ops that pad a membership
            // change then take seconds of virtual time to commit, or to
            // reach a replica that joins late, past the liveness bound,
            // without anything being wrong.
            scenario.config_delay_slots =
                scenario.config_delay_slots.min(CONFIG_DELAY_SLOTS_ONE_SLOT_PER_MESSAGE_MAX);
        }
        scenario
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_valid_and_reproducible() {
        for seed in 0..200 {
            let s = Scenario::draw(seed, true);
            s.config.validate().unwrap();
            s.wal.validate().unwrap();
            assert!(s.client.weights[0] > 0);
            assert!(s.downtime_us.0 < s.downtime_us.1);
            assert!(s.partition_us.0 < s.partition_us.1);
            assert!(s.clog_us.0 < s.clog_us.1);
            assert_eq!(Scenario::draw(seed, true).config, s.config);
        }
        assert!(!Scenario::draw(1, false).faults.enables(crate::faults::FaultKind::Crash));
    }
}
