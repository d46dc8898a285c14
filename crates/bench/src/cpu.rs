//! Server CPU per operation: user + system time of the server processes
//! (`/proc/<pid>/stat`, all threads), read before and after a run.
//!
//! The processes are given (`--server-pids`) or found: those listening on
//! the client ports of the cluster's members on this machine (loopback or
//! wildcard addresses in `/proc/net/tcp{,6}`, matched to processes through
//! their socket file descriptors). Linux only; elsewhere CPU is simply not
//! measured.
//!
//! The kernel counts CPU time in clock ticks (usually 10 ms), so a run
//! needs a few seconds for a figure within a few percent.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// A process's CPU time so far (user + system, all threads).
///
/// # Errors
///
/// When `/proc/<pid>/stat` cannot be read or parsed (no such process).
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    stat_cpu(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

/// This process's CPU time so far.
pub fn own_cpu() -> Option<Duration> {
    stat_cpu(Path::new("/proc/self/stat")).ok()
}

fn stat_cpu(path: &Path) -> std::io::Result<Duration> {
    let text = std::fs::read_to_string(path)?;
    parse_stat_cpu(&text, rustix::param::clock_ticks_per_second()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected format: {text}"))
    })
}

/// `utime + stime` of a `/proc/<pid>/stat` line (fields 14 and 15).
fn parse_stat_cpu(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    let ticks = utime + stime;
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second);
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// Sums the CPU time of a fixed set of processes.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    pids: Vec<u32>,
}

impl CpuMeter {
    /// A meter over `pids`.
    pub fn new(pids: Vec<u32>) -> CpuMeter {
        CpuMeter { pids }
    }

    /// The processes measured.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Their CPU time so far; `None` when there are none or one is gone
    /// (a sum without it would understate the run).
    pub fn sample(&self) -> Option<Duration> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| process_cpu(pid).ok()).sum()
    }
}

/// The processes on this machine listening on the ports of `urls`
/// (`http://host:port`) whose host is this machine's loopback. Empty when
/// any of them cannot be found: CPU of part of a cluster would mislead.
pub fn listening_pids(urls: &[String]) -> Vec<u32> {
    let mut ports = BTreeSet::new();
    for url in urls {
        let Ok(uri) = url.parse::<tonic::transport::Uri>() else { return Vec::new() };
        let local = match uri.host() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        let Some(port) = uri.port_u16() else { return Vec::new() };
        if !local {
            return Vec::new();
        }
        ports.insert(port);
    }
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .map(|path| std::fs::read_to_string(path).unwrap_or_default());
    let mut pids = BTreeSet::new();
    for port in ports {
        let inodes: BTreeSet<u64> =
            tables.iter().flat_map(|table| listening_inodes(table, port)).collect();
        let owners = socket_owners(&inodes);
        if owners.is_empty() {
            return Vec::new();
        }
        pids.extend(owners);
    }
    pids.into_iter().collect()
}

/// Socket inodes listening on `port` at a loopback or wildcard address, in
/// a `/proc/net/tcp` or `tcp6` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    /// `TCP_LISTEN` in the `st` column.
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let (address, local_port) = local.split_once(':')?;
            let reachable = parse_proc_address(address)
                .is_some_and(|ip| ip.is_loopback() || ip.is_unspecified());
            (*state == LISTEN && u16::from_str_radix(local_port, 16).ok()? == port && reachable)
                .then(|| inode.parse().ok())
                .flatten()
        })
        .collect()
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in hex, each
/// in the machine's byte order.
fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes))
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            // A dual-stack wildcard or loopback shows as IPv4-mapped.
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// The processes holding any of `inodes` as a socket.
fn socket_owners(inodes: &BTreeSet<u64>) -> Vec<u32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
            fds.filter_map(Result::ok).any(|fd| {
                std::fs::read_link(fd.path())
                    .ok()
                    .and_then(|target| {
                        let target = target.to_str()?.to_owned();
                        target.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()
                    })
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn stat_cpu_sums_user_and_system_ticks() {
        // A command name with spaces and parentheses; utime 150, stime 50.
        let stat = "4242 (ringkv (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 50 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(2)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn own_cpu_is_readable_and_grows() {
        let before = own_cpu().unwrap();
        let mut x = 0u64;
        // Spin until the kernel charges a clock tick (10 ms): bounded, so a
        // reader that never moves fails instead of hanging.
        for round in 0.. {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            if own_cpu().unwrap() > before {
                break;
            }
            assert!(round < 100_000, "100 billion steps and no CPU time charged");
        }
    }

    #[test]
    fn proc_addresses_parse_in_machine_order() {
        let loopback = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            parse_proc_address(&format!("{loopback:08X}")),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(parse_proc_address("00000000"), Some(IpAddr::from([0, 0, 0, 0])));
        let v6_loopback =
            format!("{:08X}{:08X}{:08X}{:08X}", 0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1]));
        assert_eq!(parse_proc_address(&v6_loopback), Some("::1".parse().unwrap()));
    }

    #[test]
    fn a_listener_of_this_process_is_found_by_port_and_others_are_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let inodes = listening_inodes(&table, port);
        assert_eq!(inodes.len(), 1, "{table}");
        // The search skips this process itself (the benchmark never
        // measures its own CPU as the server's), so look the owner up
        // directly.
        let fd_targets: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
            .map(|t| t.display().to_string())
            .collect();
        assert!(fd_targets.contains(&format!("socket:[{}]", inodes[0])), "{fd_targets:?}");
        assert!(listening_pids(&[format!("http://127.0.0.1:{port}")]).is_empty());
        assert!(listening_pids(&["http://10.1.2.3:2379".to_owned()]).is_empty());
    }
}
