//! What the benchmark tools (`youops-load`, `youops-soak`) read about the daemon
//! from `/proc`.

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// User + system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14
/// and 15; the command name may hold spaces, so fields are counted after its `)`).
pub fn read_cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc/PID/stat`: USER_HZ, which Linux fixes at 100
/// on every architecture it reports to user space.
pub const USER_HZ: f64 = 100.0;

/// Open file descriptors of a process.
pub fn count_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}
