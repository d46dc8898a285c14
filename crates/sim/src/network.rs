//! The packet simulator: latency, loss, duplication, delay spikes,
//! partitions (symmetric, asymmetric, a node isolated), clogged links.
//!
//! It decides the fate of each packet when it is sent: dropped, or
//! delivered at one or more future instants. Links between nodes are FIFO
//! by default, like the TCP connections of the real transport: a packet
//! never overtakes an earlier one on its link (a slow packet holds up the
//! ones behind it). With [`NetworkParams::reorder`] on, each packet draws
//! its own latency and may overtake others, as after reconnections or on a
//! datagram transport. Partitions cut
//! directed node-to-node links (a symmetric partition cuts both
//! directions); a packet in flight on a link that is cut when it arrives
//! is lost, as the data in a broken connection is. A clogged
//! link holds every packet sent on it until the clog ends, then delivers
//! them in a burst. Clients reach every node (they sit outside the
//! partitioned network), over links with the same latency and loss.

use ringkv_consensus::{DetRng, NodeId};

use crate::kv::ClientId;
use crate::time::Time;

/// Largest node id the network knows (ids are dense from 1).
pub const NODE_ID_MAX: u64 = 15;
/// Most packets in flight on one directed link; beyond it, new packets are
/// dropped as a full send queue would drop them.
pub const LINK_PACKETS_MAX: u32 = 4096;

const SLOTS: usize = NODE_ID_MAX as usize + 1;

/// An endpoint: a replica's node or a client process.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    /// A node.
    Node(NodeId),
    /// A client.
    Client(ClientId),
}

/// Latency and per-packet fault rates.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NetworkParams {
    /// Every packet takes at least this long.
    pub latency_min_us: u64,
    /// Mean of the extra latency drawn per packet.
    pub latency_jitter_us: u64,
    /// Packets lost, per million.
    pub loss_ppm: u32,
    /// Packets duplicated, per million.
    pub duplicate_ppm: u32,
    /// Packets held back by up to `delay_max_us`, per million.
    pub delay_ppm: u32,
    /// Longest hold-back of a delayed packet.
    pub delay_max_us: u64,
    /// Packets on one link may overtake each other.
    pub reorder: bool,
}

/// What happened to a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost in the network (counted as a loss fault).
    Lost,
    /// Dropped because the link is cut by a partition.
    Cut,
    /// Dropped because the link's queue is full.
    QueueFull,
    /// Delivered at each of these instants (two for a duplicate).
    Deliver {
        /// When each copy arrives.
        at: Vec<Time>,
        /// The packet was duplicated.
        duplicated: bool,
        /// The packet was held back (a delay spike).
        delayed: bool,
        /// The packet overtook an earlier one on its link.
        reordered: bool,
    },
}

/// The simulated network.
#[derive(Debug)]
pub struct Network {
    params: NetworkParams,
    /// `cut[from][to]`: packets from `from` to `to` are dropped.
    cut: [[bool; SLOTS]; SLOTS],
    /// `clogged_until[from][to]`: packets wait until then.
    clogged_until: [[Time; SLOTS]; SLOTS],
    /// Packets in flight per directed node link.
    in_flight: [[u32; SLOTS]; SLOTS],
    /// Latest delivery time scheduled per directed node link.
    last_delivery: [[Time; SLOTS]; SLOTS],
}

fn slot(n: NodeId) -> usize {
    assert!(n.0 <= NODE_ID_MAX, "node id {n} above NODE_ID_MAX");
    n.0 as usize
}

impl Network {
    /// A healthy network with `params`.
    pub fn new(params: NetworkParams) -> Network {
        Network {
            params,
            cut: [[false; SLOTS]; SLOTS],
            clogged_until: [[Time(0); SLOTS]; SLOTS],
            in_flight: [[0; SLOTS]; SLOTS],
            last_delivery: [[Time(0); SLOTS]; SLOTS],
        }
    }

    /// The parameters in force.
    pub fn params(&self) -> NetworkParams {
        self.params
    }

    /// Replaces the parameters (healing turns the per-packet faults off).
    pub fn set_params(&mut self, params: NetworkParams) {
        self.params = params;
    }

    /// Cuts (or restores) the directed link `from → to`.
    pub fn set_cut(&mut self, from: NodeId, to: NodeId, cut: bool) {
        self.cut[slot(from)][slot(to)] = cut;
    }

    /// Whether `from → to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut[slot(from)][slot(to)]
    }

    /// Clogs the directed link `from → to` until `until`.
    pub fn clog(&mut self, from: NodeId, to: NodeId, until: Time) {
        let c = &mut self.clogged_until[slot(from)][slot(to)];
        *c = (*c).max(until);
    }

    /// Restores every link: no cuts, no clogs (packets already held keep
    /// their delivery times).
    pub fn heal(&mut self) {
        self.cut = [[false; SLOTS]; SLOTS];
        self.clogged_until = [[Time(0); SLOTS]; SLOTS];
    }

    /// Whether any link is cut.
    pub fn has_cuts(&self) -> bool {
        self.cut.iter().flatten().any(|c| *c)
    }

    /// Draws the fate of one packet sent at `now`.
    pub fn send(&mut self, rng: &mut DetRng, now: Time, from: Addr, to: Addr) -> Fate {
        let link = match (from, to) {
            (Addr::Node(a), Addr::Node(b)) => Some((slot(a), slot(b))),
            _ => None,
        };
        if let Some((a, b)) = link {
            if self.cut[a][b] {
                return Fate::Cut;
            }
            if self.in_flight[a][b] >= LINK_PACKETS_MAX {
                return Fate::QueueFull;
            }
        }
        let p = self.params;
        if p.loss_ppm > 0 && rng.chance(u64::from(p.loss_ppm), 1_000_000) {
            return Fate::Lost;
        }
        let duplicated = p.duplicate_ppm > 0 && rng.chance(u64::from(p.duplicate_ppm), 1_000_000);
        let delayed = p.delay_ppm > 0 && rng.chance(u64::from(p.delay_ppm), 1_000_000);
        let clog = link.map_or(Time(0), |(a, b)| self.clogged_until[a][b]);
        let mut at = Vec::with_capacity(1 + usize::from(duplicated));
        let mut reordered = false;
        for copy in 0..1 + usize::from(duplicated) {
            let mut latency = self.latency(rng);
            if delayed && copy == 0 {
                latency += rng.range(0, p.delay_max_us.max(1));
            }
            let mut t = now.max(clog).plus(latency);
            if let Some((a, b)) = link {
                let last = &mut self.last_delivery[a][b];
                if p.reorder {
                    reordered |= t < *last;
                } else {
                    // FIFO: never before the packet sent just before (equal
                    // times keep their sending order in the event queue).
                    t = t.max(*last);
                }
                *last = (*last).max(t);
            }
            at.push(t);
        }
        if let Some((a, b)) = link {
            self.in_flight[a][b] += at.len() as u32;
        }
        Fate::Deliver { at, duplicated, delayed, reordered }
    }

    /// Records that a packet on `from → to` left the network; returns
    /// whether it arrives (false: its link was cut while it was in flight).
    pub fn arrived(&mut self, from: Addr, to: Addr) -> bool {
        if let (Addr::Node(a), Addr::Node(b)) = (from, to) {
            let (a, b) = (slot(a), slot(b));
            self.in_flight[a][b] = self.in_flight[a][b].saturating_sub(1);
            return !self.cut[a][b];
        }
        true
    }

    fn latency(&self, rng: &mut DetRng) -> u64 {
        let p = &self.params;
        let jitter = p.latency_jitter_us.max(1);
        // Mostly uniform around the mean, with a tail of slow packets.
        let mut extra = rng.range(0, 2 * jitter);
        if rng.chance(1, 16) {
            extra += rng.range(0, 8 * jitter);
        }
        p.latency_min_us + extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> NetworkParams {
        NetworkParams {
            latency_min_us: 100,
            latency_jitter_us: 50,
            loss_ppm: 0,
            duplicate_ppm: 0,
            delay_ppm: 0,
            delay_max_us: 0,
            reorder: false,
        }
    }

    const A: Addr = Addr::Node(NodeId(1));
    const B: Addr = Addr::Node(NodeId(2));

    #[test]
    fn cut_links_drop_in_one_direction_only() {
        let mut net = Network::new(params());
        let mut rng = DetRng::new(1);
        net.set_cut(NodeId(1), NodeId(2), true);
        assert_eq!(net.send(&mut rng, Time(0), A, B), Fate::Cut);
        assert!(matches!(net.send(&mut rng, Time(0), B, A), Fate::Deliver { .. }));
        // Clients are never cut off.
        let c = Addr::Client(ClientId(7));
        assert!(matches!(net.send(&mut rng, Time(0), c, A), Fate::Deliver { .. }));
        net.heal();
        assert!(!net.has_cuts());
        assert!(matches!(net.send(&mut rng, Time(0), A, B), Fate::Deliver { .. }));
    }

    #[test]
    fn clogged_link_holds_packets_until_the_clog_ends() {
        let mut net = Network::new(params());
        let mut rng = DetRng::new(2);
        net.clog(NodeId(1), NodeId(2), Time(10_000));
        let Fate::Deliver { at, .. } = net.send(&mut rng, Time(5), A, B) else { panic!() };
        assert!(at[0] >= Time(10_100));
        let Fate::Deliver { at, .. } = net.send(&mut rng, Time(5), B, A) else { panic!() };
        assert!(at[0] < Time(10_000));
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let mut net =
            Network::new(NetworkParams { loss_ppm: 500_000, duplicate_ppm: 500_000, ..params() });
        let mut rng = DetRng::new(3);
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..1000 {
            match net.send(&mut rng, Time(0), A, B) {
                Fate::Lost => lost += 1,
                Fate::Deliver { at, duplicated: true, .. } => {
                    assert_eq!(at.len(), 2);
                    dup += 1;
                }
                _ => {}
            }
        }
        assert!((400..600).contains(&lost), "lost {lost}");
        assert!((150..350).contains(&dup), "duplicated {dup}");
    }

    #[test]
    fn links_are_fifo_unless_reordering() {
        let mut net = Network::new(params());
        let mut rng = DetRng::new(5);
        let mut last = Time(0);
        for i in 0..200 {
            let Fate::Deliver { at, reordered, .. } = net.send(&mut rng, Time(i), A, B) else {
                panic!()
            };
            assert!(at[0] >= last && !reordered);
            last = at[0];
        }
        let mut net = Network::new(NetworkParams { reorder: true, ..params() });
        let overtaken = (0..200)
            .filter(|i| {
                matches!(net.send(&mut rng, Time(*i), A, B), Fate::Deliver { reordered: true, .. })
            })
            .count();
        assert!(overtaken > 10, "only {overtaken} packets overtook another");
    }

    #[test]
    fn full_link_queue_drops() {
        let mut net = Network::new(params());
        let mut rng = DetRng::new(4);
        for _ in 0..LINK_PACKETS_MAX {
            assert!(matches!(net.send(&mut rng, Time(0), A, B), Fate::Deliver { .. }));
        }
        assert_eq!(net.send(&mut rng, Time(0), A, B), Fate::QueueFull);
        assert!(net.arrived(A, B));
        net.set_cut(NodeId(1), NodeId(2), true);
        assert!(!net.arrived(A, B), "a packet in flight on a cut link is lost");
        net.set_cut(NodeId(1), NodeId(2), false);
        assert!(matches!(net.send(&mut rng, Time(0), A, B), Fate::Deliver { .. }));
    }
}
