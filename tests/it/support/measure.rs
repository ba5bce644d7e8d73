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

/// The `done` hook every wrk script of the benches ends with: the run's p50 and p99, which
/// [`run_wrk`] reads.
pub const WRK_PERCENTILES: &str = r#"
done = function(summary, latency, requests)
  io.write(string.format("P50_MS=%.3f\nP99_MS=%.3f\n", latency:percentile(50) / 1000,
                         latency:percentile(99) / 1000))
end
"#;

/// What one wrk run printed.
pub struct WrkRun {
    pub rps: f64,
    /// Requests answered in the run.
    pub requests: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// wrk's lines on non-2xx answers and socket errors, joined; empty when none.
    pub errors: String,
}

/// The issue's load line, `wrk -t2 -c16 -d{secs}s` (and a 10 s timeout), with `script` (which
/// ends with [`WRK_PERCENTILES`]) against `url`; `script_args` go to the script after `--`.
pub fn run_wrk(secs: usize, script: &std::path::Path, url: &str, script_args: &[&str]) -> WrkRun {
    let mut command = Command::new("wrk");
    command
        .args([
            "-t2",
            "-c16",
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(url);
    if !script_args.is_empty() {
        command.arg("--").args(script_args);
    }
    let out = command.output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in wrk's output:\n{text}"))
    };
    // "  522222 requests in 10.01s, 196.22MB read"
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect();
    WrkRun {
        rps: field("Requests/sec:"),
        requests,
        p50_ms: field("P50_MS="),
        p99_ms: field("P99_MS="),
        errors: errors.join("; "),
    }
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
