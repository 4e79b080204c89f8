//! Resource use of a collector, read from /proc: CPU time and peak resident memory summed over
//! every process of its process group (pmacct and nfcapd fork plugin or helper processes; each
//! collector is started as the leader of its own group).

use std::fs;

/// CPU time and peak memory of a process group at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds of the group's living processes (all threads).
    pub cpu_seconds: f64,
    /// Sum of the processes' peak resident set sizes (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
}

/// Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads the usage of every process whose process group is `group`.
pub fn group_usage(group: u32) -> Usage {
    let ticks = ticks_per_second();
    let mut usage = Usage::default();
    let Ok(entries) = fs::read_dir("/proc") else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((pgrp, utime, stime)) = parse_stat(&stat) else {
            continue;
        };
        if pgrp != group {
            continue;
        }
        usage.cpu_seconds += (utime + stime) as f64 / ticks;
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            usage.peak_rss_bytes += parse_peak_rss(&status).unwrap_or(0);
        }
    }
    usage
}

/// User + system CPU seconds of one process (all its threads) so far, if it is alive.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, utime, stime) = parse_stat(&stat)?;
    Some((utime + stime) as f64 / ticks_per_second())
}

/// (pgrp, utime, stime) from /proc/PID/stat. The command name is in parentheses and may hold
/// spaces, so fields are counted from the last ')'.
fn parse_stat(stat: &str) -> Option<(u32, u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    Some((
        fields.get(2)?.parse().ok()?,
        fields.get(11)?.parse().ok()?,
        fields.get(12)?.parse().ok()?,
    ))
}

/// `VmHWM:   12345 kB` in bytes.
fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_fields_after_a_name_with_spaces() {
        let stat = "4242 (nfacctd: Core (x)) S 1 4240 4240 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat(stat), Some((4240, 250, 75)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_peak_rss() {
        let status = "Name:\tegress\nVmPeak:\t 99 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_peak_rss(status), Some(2 << 20));
    }

    #[test]
    fn measures_this_process_group() {
        // This test process belongs to some group; its own usage is counted there.
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let (group, _, _) = parse_stat(&stat).unwrap();
        let usage = group_usage(group);
        assert!(usage.peak_rss_bytes > 0, "{usage:?}");
    }
}
