//! What the tool reads from `/proc`: CPU time and RSS of a process, and the open-files limit.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (fields 14 and 15), in clock ticks.
//! The tick is `USER_HZ`, which Linux fixes at 100 per second in its user ABI on every
//! architecture this runs on, so no `sysconf` (and no `unsafe`) is needed; the resolution is
//! 10 ms, ≤ 1 % over the multi-second windows the scenarios measure.

use std::fs;
use std::time::Instant;

use crate::BenchError;
use crate::report::Cpu;

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`).
pub const TICKS_PER_SECOND: u64 = 100;

/// Which process to read: a PID, or the tool itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// The process with this PID.
    Pid(u32),
    /// The calling process (`/proc/self`).
    Myself,
}

impl Proc {
    fn path(&self, file: &str) -> String {
        match self {
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
            Proc::Myself => format!("/proc/self/{file}"),
        }
    }

    /// `utime + stime` in microseconds.
    pub fn cpu_us(&self) -> Result<u64, BenchError> {
        let path = self.path("stat");
        let text =
            fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
        parse_cpu_ticks(&text)
            .map(|ticks| ticks * (1_000_000 / TICKS_PER_SECOND))
            .ok_or_else(|| BenchError::Protocol(format!("cannot parse {path}")))
    }

    /// Resident set size (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> Result<u64, BenchError> {
        let path = self.path("status");
        let text =
            fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
        parse_status_kib(&text, "VmRSS:")
            .ok_or_else(|| BenchError::Protocol(format!("no VmRSS in {path}")))
    }
}

/// `utime + stime` (ticks) from the text of `/proc/PID/stat`.
///
/// The second field (the command name) is in parentheses and may hold spaces or `)`, so
/// the fields are counted from the *last* `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: field 3 (state) is the first; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line (e.g. `VmRSS:`) from the text of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft limit on open files of this process, from `/proc/self/limits`
/// (`None` when unlimited or unreadable).
pub fn open_files_soft_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU counters at one instant, to subtract from a later reading.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: Option<(u32, u64)>,
    tool_us: u64,
    at: Instant,
}

impl CpuMark {
    /// Reads the server's (when a PID is given) and the tool's CPU time now.
    pub fn now(server_pid: Option<u32>) -> Result<Self, BenchError> {
        let server = match server_pid {
            Some(pid) => Some((pid, Proc::Pid(pid).cpu_us()?)),
            None => None,
        };
        Ok(Self {
            server,
            tool_us: Proc::Myself.cpu_us()?,
            at: Instant::now(),
        })
    }

    /// The CPU used since this mark.
    pub fn elapsed(&self) -> Result<Cpu, BenchError> {
        let server_us = match self.server {
            Some((pid, before)) => Some(Proc::Pid(pid).cpu_us()?.saturating_sub(before)),
            None => None,
        };
        let tool_us = Proc::Myself.cpu_us()?.saturating_sub(self.tool_us);
        let wall_us = u64::try_from(self.at.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(Cpu {
            server_us,
            tool_us,
            wall_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_odd_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 17 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tnode\nVmPeak:\t  9000 kB\nVmRSS:\t   51234 kB\nThreads:\t7\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(51_234));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(Proc::Myself.rss_kib().expect("own status") > 0);
        Proc::Myself.cpu_us().expect("own stat");
        let pid = std::process::id();
        assert!(Proc::Pid(pid).rss_kib().expect("status by pid") > 0);
    }

    #[test]
    fn a_busy_loop_shows_up_as_cpu_time() {
        let mark = CpuMark::now(Some(std::process::id())).expect("mark");
        let start = Instant::now();
        let mut x = 0u64;
        // Spin until this process has used 100 ms of CPU (the machine may be shared, so
        // wall time says little); bounded by 20 s of wall time.
        let mut cpu = mark.elapsed().expect("elapsed");
        while cpu.tool_us < 100_000 && start.elapsed().as_secs() < 20 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            cpu = mark.elapsed().expect("elapsed");
        }
        assert!(cpu.tool_us >= 100_000, "{cpu:?}");
        // The same process read by PID: the same time, give or take a few ticks.
        let server = cpu.server_us.expect("pid given");
        assert!(
            server + 50_000 >= cpu.tool_us && server <= cpu.tool_us + 50_000,
            "{cpu:?}"
        );
        // No bound of CPU time by wall time: the other tests of this binary run on
        // threads of the same process meanwhile, so the process may use two cores' worth.
        assert!(cpu.wall_us > 0, "{cpu:?}");
    }
}
