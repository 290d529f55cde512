//! The standard `process_*` series (resident memory, open file descriptors, CPU time,
//! start time), read from `/proc/self` at scrape time.
//!
//! Prometheus' client libraries all export these under the same unprefixed names, so
//! dashboards and alerts written for any of them work here too. They are read only when
//! `/metrics` is scraped (a handful of small procfs reads), never on the hot path.
//! On systems without `/proc` (anything but Linux) or when a file cannot be read, the
//! series that depend on it are simply absent: a scrape never fails or panics for them.
//!
//! No crate for this fits `prometheus-client` 0.25 without pulling in a procfs parser
//! many times this size, and `sysconf` would need `unsafe` (forbidden in this
//! workspace), so the page size and clock tick are avoided: resident memory comes from
//! `VmRSS` (in kB) of `/proc/self/status`, and CPU time uses `USER_HZ`, which the
//! kernel fixes at 100 for every value it reports in `/proc/<pid>/stat` on the
//! architectures Linux runs servers on (x86, arm, arm64, riscv, powerpc, s390).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat` (see the module docs).
const USER_HZ: f64 = 100.0;

/// One reading of the process' resources; each field is `None` when it could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessSample {
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) max_fds: Option<u64>,
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) start_time_seconds: Option<f64>,
}

impl ProcessSample {
    /// Reads `/proc/self` (Linux); everything `None` elsewhere.
    pub(crate) fn read() -> ProcessSample {
        if !cfg!(target_os = "linux") {
            return ProcessSample::default();
        }
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let boot = read("/proc/stat").and_then(|s| parse_boot_time(&s));
        ProcessSample {
            resident_bytes: read("/proc/self/status").and_then(|s| parse_vm_rss(&s)),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
        }
    }
}

/// The fields of `/proc/<pid>/stat` we use, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// `/proc/<pid>/stat`: the command name (field 2) is in parentheses and may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest = " state ppid …": field 3 (state) is index 0.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:   1234 kB` of `/proc/<pid>/status`, in bytes.
fn parse_vm_rss(text: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Encodes a [`ProcessSample::read`] on every scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let sample = ProcessSample::read();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                sample.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        if let Some(seconds) = sample.cpu_seconds {
            // The encoder appends `_total` to counters.
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        if let Some(start) = sample.start_time_seconds {
            let gauge = ConstGauge::new(start);
            let metric = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a process may choose.
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1509 0 0 0 \
                    250 75 0 0 20 0 3 0 987654 12345678 2048 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                start_ticks: 987_654
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\tserver\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthread\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_on_linux_and_reads_nothing_elsewhere() {
        let sample = ProcessSample::read();
        if cfg!(target_os = "linux") {
            assert!(sample.resident_bytes.is_some_and(|b| b > 1024 * 1024));
            // stdin, stdout, stderr at least.
            assert!(sample.open_fds.is_some_and(|n| n >= 3));
            assert!(sample.max_fds.is_none_or(|n| n >= 3));
            assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0));
            // After 2020-01-01.
            assert!(sample.start_time_seconds.is_some_and(|t| t > 1.577e9));
        } else {
            assert_eq!(sample, ProcessSample::default());
        }
    }
}
