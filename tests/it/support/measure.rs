//! Small helpers the tests and the benchmarks share (`benches/*.rs` include this file by path):
//! a free loopback port, a size from the environment, a process's resident memory, a percentile,
//! the load average printed beside each figure, and `wrk` for the HTTP benchmarks.

// Each includer uses a different part of these.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// A port nobody listens on right now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The whole number in the variable `name`, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The resident memory of process `pid`, in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0 to 1) of sorted durations, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid) as f64 / 1024.0
}

/// The 1-, 5- and 15-minute load averages, printed beside a figure: how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Installs Debian's `wrk` when it is missing (the HTTP benchmarks' load generator).
pub fn ensure_wrk() {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return;
    }
    eprintln!("bench: installing Debian's wrk");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "wrk is missing and `apt-get install wrk` failed: install it and run again"
    );
}

/// A process's CPU time so far (user and system, in seconds, from `/proc/<pid>/stat`) and its
/// context switches (voluntary or not, summed over `/proc/<pid>/task/*/status`: a thread that
/// ended in between takes its share with it). Zero where `/proc` is not Linux's.
pub fn process_cost(pid: u32) -> (f64, u64) {
    let ticks_per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    // After the command's name in parentheses, the 12th and 13th fields are utime and stime.
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            Some(fields.iter().sum::<u64>() as f64 / ticks_per_second)
        })
        .unwrap_or(0.0);
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if let Some(n) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (cpu, switches)
}
