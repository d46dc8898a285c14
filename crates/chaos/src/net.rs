//! Where the nodes live on the network, and the faults the network takes.
//!
//! **Namespaces** ([`Netns`]): the harness makes one bridge in the root
//! namespace (`rkv<pid>b`, address `10.201.X.1/24`) and, per node, a network
//! namespace (`rkv<pid>n<i>`) joined to the bridge by a veth pair, with the
//! address `10.201.X.(11+i)`. Nodes listen on their own address (clients on
//! port 2379, peers on 2380, as etcd); clients run in the root namespace
//! and reach every node over the bridge. Network faults are `iptables`
//! rules in the `INPUT` chain of a node's namespace that drop what comes
//! *from another node's address* (all of it, or a random share with the
//! `statistic` match), so client traffic, which comes from the bridge's
//! address, is never cut: as in Jepsen, partitions are between servers.
//!
//! ```text
//!   root ns: clients ── rkv<pid>b 10.201.X.1 ──┬── veth ── ns rkv<pid>n0: 10.201.X.11
//!                                              ├── veth ── ns rkv<pid>n1: 10.201.X.12
//!                                              └── veth ── ns rkv<pid>n2: 10.201.X.13
//! ```
//!
//! Everything made is removed by [`Netns::teardown`], which `Drop` calls, so
//! a failure or a panic leaves nothing behind; a harness killed with
//! SIGKILL leaves its namespaces, which [`cleanup_stale`] (`ringkv chaos
//! --cleanup`) removes. **Loopback** ([`Layout::Loopback`]) runs every node
//! on 127.0.0.1 with free ports, for machines without CAP_NET_ADMIN;
//! network faults are then unavailable.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::ChaosError;
use crate::sys;

/// Prefix of every name the harness gives to a namespace, link or mount.
pub const NAME_PREFIX: &str = "rkv";

/// First octets of the subnets the harness uses for its bridges.
pub const SUBNET_BASE: [u8; 2] = [10, 201];

/// Host part of node 0's address; node `i` is this plus `i`.
pub const NODE_HOST_BASE: u8 = 11;

/// Client port of a node in its own namespace (etcd's).
pub const NETNS_CLIENT_PORT: u16 = 2379;

/// Peer port of a node in its own namespace (etcd's).
pub const NETNS_PEER_PORT: u16 = 2380;

/// Most nodes a run may have (addresses and names are sized for it).
pub const NODES_MAX: usize = 9;

/// How a node is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its client port.
    pub client_port: u16,
    /// Its peer port.
    pub peer_port: u16,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
}

impl NodeAddr {
    /// `http://ip:client_port`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// `http://ip:peer_port`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }
}

/// The network layout of a run.
#[derive(Debug)]
pub enum Layout {
    /// One namespace per node on a bridge; network faults available.
    Netns(Netns),
    /// Every node on 127.0.0.1; no network faults.
    Loopback(Vec<NodeAddr>),
}

impl Layout {
    /// Builds the layout for `nodes` nodes.
    ///
    /// # Errors
    /// [`ChaosError::NotRoot`] for namespaces without root; a failed `ip`
    /// command (everything made so far is removed again).
    pub fn create(nodes: usize, netns: bool) -> Result<Layout, ChaosError> {
        if nodes == 0 || nodes > NODES_MAX {
            return Err(ChaosError::Config {
                setting: "--nodes",
                why: format!("{nodes} nodes; a run has 1 to {NODES_MAX}"),
            });
        }
        if netns {
            Ok(Layout::Netns(Netns::create(nodes)?))
        } else {
            // Every listener stays bound until all ports are drawn: released
            // one by one, the kernel may hand the same port out twice.
            let mut held = Vec::with_capacity(2 * nodes);
            let mut addrs = Vec::with_capacity(nodes);
            for _ in 0..nodes {
                let client_port = free_port(&mut held)?;
                let peer_port = free_port(&mut held)?;
                addrs.push(NodeAddr {
                    ip: Ipv4Addr::LOCALHOST,
                    client_port,
                    peer_port,
                    netns: None,
                });
            }
            drop(held);
            Ok(Layout::Loopback(addrs))
        }
    }

    /// The nodes' addresses, by index.
    pub fn addrs(&self) -> Vec<NodeAddr> {
        match self {
            Layout::Netns(n) => (0..n.nodes).map(|i| n.addr(i)).collect(),
            Layout::Loopback(addrs) => addrs.clone(),
        }
    }

    /// The namespaces, when network faults are available.
    pub fn netns(&self) -> Option<&Netns> {
        match self {
            Layout::Netns(n) => Some(n),
            Layout::Loopback(_) => None,
        }
    }
}

/// A port free right now on 127.0.0.1, distinct from the others drawn into
/// `held` (its listener is kept there; dropping `held` releases the ports
/// for the nodes to bind).
fn free_port(held: &mut Vec<TcpListener>) -> Result<u16, ChaosError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(ChaosError::io("binding a free port on", "127.0.0.1"))?;
    let addr =
        listener.local_addr().map_err(ChaosError::io("reading the address of", "127.0.0.1"))?;
    held.push(listener);
    Ok(addr.port())
}

/// A bridge and one network namespace per node; see the module docs.
#[derive(Debug)]
pub struct Netns {
    /// `rkv<pid>`.
    prefix: String,
    /// Third octet of the subnet.
    subnet: u8,
    nodes: usize,
    /// Namespaces created so far (teardown removes exactly these).
    created_ns: Vec<String>,
    /// Whether the bridge exists.
    bridge_up: bool,
}

impl Netns {
    /// Makes the bridge and the namespaces.
    ///
    /// # Errors
    /// [`ChaosError::NotRoot`], [`ChaosError::NoSubnet`], or a failed command.
    pub fn create(nodes: usize) -> Result<Netns, ChaosError> {
        if !sys::is_root() {
            return Err(ChaosError::NotRoot);
        }
        let pid = std::process::id();
        let subnet = free_subnet(pid)?;
        let mut netns = Netns {
            prefix: format!("{NAME_PREFIX}{pid}"),
            subnet,
            nodes,
            created_ns: Vec::new(),
            bridge_up: false,
        };
        // On error `netns` drops here and removes what was made.
        netns.build()?;
        Ok(netns)
    }

    fn build(&mut self) -> Result<(), ChaosError> {
        let bridge = self.bridge();
        sys::run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        self.bridge_up = true;
        let host = format!("{}/24", self.host_ip());
        sys::run("ip", &["addr", "add", &host, "dev", &bridge])?;
        sys::run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..self.nodes {
            let ns = self.ns(i);
            sys::run("ip", &["netns", "add", &ns])?;
            self.created_ns.push(ns.clone());
            let outside = format!("{}v{i}", self.prefix);
            let inside = format!("{}p{i}", self.prefix);
            sys::run("ip", &["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            sys::run("ip", &["link", "set", &inside, "netns", &ns])?;
            sys::run("ip", &["link", "set", &outside, "master", &bridge])?;
            sys::run("ip", &["link", "set", &outside, "up"])?;
            let addr = format!("{}/24", self.ip(i));
            sys::run("ip", &["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
            sys::run("ip", &["-n", &ns, "link", "set", &inside, "up"])?;
            sys::run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("{}b", self.prefix)
    }

    /// Node `i`'s namespace name.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// The bridge's (the clients') address.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], self.subnet, 1)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        let host = NODE_HOST_BASE + u8::try_from(i).expect("at most NODES_MAX nodes");
        Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], self.subnet, host)
    }

    /// Node `i`'s address record.
    pub fn addr(&self, i: usize) -> NodeAddr {
        NodeAddr {
            ip: self.ip(i),
            client_port: NETNS_CLIENT_PORT,
            peer_port: NETNS_PEER_PORT,
            netns: Some(self.ns(i)),
        }
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Drops at node `at` what comes from node `from`: everything, or a
    /// random share `probability` of packets.
    ///
    /// # Errors
    /// A failed `iptables` command.
    pub fn drop_from(
        &self,
        at: usize,
        from: usize,
        probability: Option<f64>,
    ) -> Result<(), ChaosError> {
        let ns = self.ns(at);
        let src = self.ip(from).to_string();
        let mut args = vec!["-w", "-A", "INPUT", "-s", &src];
        let p;
        if let Some(probability) = probability {
            p = format!("{probability:.3}");
            args.extend_from_slice(&["-m", "statistic", "--mode", "random", "--probability", &p]);
        }
        args.extend_from_slice(&["-j", "DROP"]);
        sys::run_in(&ns, "iptables", &args).map(drop)
    }

    /// Removes every rule in every node's namespace: the network is whole again.
    ///
    /// # Errors
    /// A failed `iptables` command (the others are still tried).
    pub fn heal(&self) -> Result<(), ChaosError> {
        let mut first_error = None;
        for i in 0..self.nodes {
            if let Err(e) = sys::run_in(&self.ns(i), "iptables", &["-w", "-F", "INPUT"]) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the namespaces and the bridge (their links and rules go with
    /// them). Idempotent and best effort: a failure is logged and the rest
    /// is still removed.
    pub fn teardown(&mut self) {
        for ns in std::mem::take(&mut self.created_ns) {
            kill_netns_pids(&ns);
            if let Err(e) = sys::run("ip", &["netns", "del", &ns]) {
                tracing::warn!("teardown: {e}");
            }
        }
        if std::mem::take(&mut self.bridge_up)
            && let Err(e) = sys::run("ip", &["link", "del", &self.bridge()])
        {
            tracing::warn!("teardown: {e}");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILLs every process still in namespace `ns` (nodes are normally
/// gone already; this catches any a failure left behind).
fn kill_netns_pids(ns: &str) {
    if let Ok(pids) = sys::run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            sys::signal(pid, sys::Signal::Kill);
        }
    }
}

/// The first third octet, starting from one derived from `pid`, whose
/// `10.201.X.0/24` no interface address or route uses.
fn free_subnet(pid: u32) -> Result<u8, ChaosError> {
    let used =
        sys::run("ip", &["-o", "-4", "addr", "show"])? + &sys::run("ip", &["-4", "route", "show"])?;
    let start = u8::try_from(pid % 250).expect("below 250");
    (0..250u8)
        .map(|k| start.wrapping_add(k) % 250 + 1)
        .find(|x| !used.contains(&format!("{}.{}.{x}.", SUBNET_BASE[0], SUBNET_BASE[1])))
        .ok_or(ChaosError::NoSubnet)
}

/// The pid a harness name (`rkv<pid>n0`, `rkv<pid>b`) was made by.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let known = tail == "b"
        || ["n", "v", "p"].iter().any(|k| {
            tail.strip_prefix(k)
                .is_some_and(|i| !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()))
        });
    if known { digits.parse().ok() } else { None }
}

/// What [`cleanup_stale`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Namespaces removed.
    pub namespaces: Vec<String>,
    /// Bridges removed.
    pub bridges: Vec<String>,
    /// Mount points unmounted.
    pub mounts: Vec<String>,
}

/// Removes namespaces, bridges and tmpfs mounts left by chaos runs whose
/// process is gone (a harness killed with SIGKILL cannot clean up).
///
/// # Errors
/// A failed `ip` listing.
pub fn cleanup_stale() -> Result<Cleaned, ChaosError> {
    let mut cleaned = Cleaned::default();
    let alive = |name: &str| owner_pid(name).is_none_or(sys::process_exists);
    for line in sys::run("ip", &["netns", "list"])?.lines() {
        let Some(ns) = line.split_whitespace().next() else { continue };
        if owner_pid(ns).is_some() && !alive(ns) {
            kill_netns_pids(ns);
            sys::run("ip", &["netns", "del", ns])?;
            cleaned.namespaces.push(ns.to_owned());
        }
    }
    for line in sys::run("ip", &["-o", "link", "show", "type", "bridge"])?.lines() {
        let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
        if owner_pid(name).is_some() && !alive(name) {
            sys::run("ip", &["link", "del", name])?;
            cleaned.bridges.push(name.to_owned());
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else { continue };
        if source.starts_with(NAME_PREFIX)
            && let Some(pid) = source
                .strip_prefix(NAME_PREFIX)
                .and_then(|p| p.strip_suffix("disk"))
                .and_then(|p| p.parse::<u32>().ok())
            && !sys::process_exists(pid)
        {
            sys::run("umount", &["-l", target])?;
            cleaned.mounts.push(target.to_owned());
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_harness_names() {
        assert_eq!(owner_pid("rkv123n0"), Some(123));
        assert_eq!(owner_pid("rkv123b"), Some(123));
        assert_eq!(owner_pid("rkv77v12"), Some(77));
        assert_eq!(owner_pid("rkv123"), None);
        assert_eq!(owner_pid("rkv123x0"), None);
        assert_eq!(owner_pid("rkvn0"), None);
        assert_eq!(owner_pid("docker0"), None);
        assert_eq!(owner_pid("rkv12n"), None);
    }

    #[test]
    fn loopback_layout_gives_distinct_ports() {
        let layout = Layout::create(3, false).unwrap();
        let addrs = layout.addrs();
        assert_eq!(addrs.len(), 3);
        let mut ports: Vec<u16> = addrs.iter().flat_map(|a| [a.client_port, a.peer_port]).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        assert!(layout.netns().is_none());
        assert!(Layout::create(0, false).is_err());
        assert!(Layout::create(NODES_MAX + 1, false).is_err());
    }
}
