//! The process's own figures (memory, CPU, file descriptors), read from
//! Linux's `/proc/self` at each scrape: a few small reads, no system
//! dependency. Elsewhere they are absent (`None`).
//!
//! The names are the ones every Prometheus client library exports
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, …), so
//! standard dashboards and alerts work unchanged.

/// What `/proc/self` says about the process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
}

/// The fields of `/proc/self/stat` that [`ProcessStats`] needs, in the
/// units the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFields {
    /// `utime`, in clock ticks.
    pub user_ticks: u64,
    /// `stime`, in clock ticks.
    pub system_ticks: u64,
    /// `num_threads`.
    pub threads: u64,
    /// `starttime`, in clock ticks after boot.
    pub start_ticks: u64,
    /// `vsize`, in bytes.
    pub virtual_bytes: u64,
    /// `rss`, in pages.
    pub resident_pages: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields
/// are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Fields from 3 (`state`) on; field n is at index n - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        user_ticks: field(14)?,
        system_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time from `/proc/stat` (its `btime` line), in seconds since
/// the Unix epoch.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`; `Some(None)`
/// when it is unlimited, `None` when the line is missing.
pub fn parse_max_open_files(text: &str) -> Option<Option<u64>> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

/// Combines the parsed files into [`ProcessStats`].
pub fn combine(
    stat: StatFields,
    boot_time_seconds: u64,
    ticks_per_second: u64,
    page_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
) -> ProcessStats {
    let ticks = ticks_per_second.max(1) as f64;
    ProcessStats {
        resident_memory_bytes: stat.resident_pages.saturating_mul(page_bytes),
        virtual_memory_bytes: stat.virtual_bytes,
        cpu_seconds: (stat.user_ticks + stat.system_ticks) as f64 / ticks,
        threads: stat.threads,
        start_time_seconds: boot_time_seconds as f64 + stat.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    }
}

/// Reads this process's figures; `None` where `/proc` is not Linux's.
pub fn read() -> Option<ProcessStats> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| parse_max_open_files(&t))
        .flatten();
    Some(combine(
        stat,
        boot,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
        open_fds,
        max_fds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, with a command name that holds spaces and parentheses.
    const STAT: &str = "4242 (ringkv (node) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                        250 50 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 1 1 0 0 \
                        0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let fields = parse_stat(STAT).unwrap();
        assert_eq!(
            fields,
            StatFields {
                user_ticks: 250,
                system_ticks: 50,
                threads: 7,
                start_ticks: 123_456,
                virtual_bytes: 104_857_600,
                resident_pages: 2560,
            }
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn boot_time_and_fd_limit() {
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(Some(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), Some(None));
        assert_eq!(parse_max_open_files("Max processes 10 10 processes\n"), None);
    }

    #[test]
    fn combine_converts_ticks_and_pages() {
        let stats = combine(parse_stat(STAT).unwrap(), 1_700_000_000, 100, 4096, 12, Some(1024));
        assert_eq!(stats.resident_memory_bytes, 2560 * 4096);
        assert!((stats.cpu_seconds - 3.0).abs() < 1e-9, "{}", stats.cpu_seconds);
        assert!((stats.start_time_seconds - 1_700_001_234.56).abs() < 1e-6);
        assert_eq!((stats.threads, stats.open_fds, stats.max_fds), (7, 12, Some(1024)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_plausibly() {
        let stats = read().expect("Linux has /proc/self");
        assert!(stats.resident_memory_bytes > 0);
        assert!(stats.threads >= 1);
        assert!(stats.open_fds >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0, "{} > {now}", stats.start_time_seconds);
    }
}
