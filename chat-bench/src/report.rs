//! A scenario's result: a human summary and one JSON line.
//!
//! One struct for every scenario keeps the JSON shape stable for `scripts/bench.sh`:
//! fields a scenario does not measure are absent (not zero) in the JSON line and left out
//! of the summary.

use std::fmt;

use serde::Serialize;

use crate::stats::{DeliveryCounts, Percentiles};

/// CPU time used over the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Cpu {
    /// The server's `utime + stime` over the window, µs (`None` without `--server-pid`).
    pub server_us: Option<u64>,
    /// The tool's own `utime + stime` over the window, µs.
    pub tool_us: u64,
    /// The window's wall-clock length, µs.
    pub wall_us: u64,
}

impl Cpu {
    /// The server's CPU per unit of work (delivery or join), µs.
    pub fn server_per(&self, units: u64) -> Option<f64> {
        let server = self.server_us?;
        (units > 0).then(|| server as f64 / units as f64)
    }

    /// The tool's share of one core over the window (1.0 = one core busy all the time).
    pub fn tool_cores(&self) -> f64 {
        if self.wall_us == 0 {
            0.0
        } else {
            self.tool_us as f64 / self.wall_us as f64
        }
    }

    /// The server's share of one core over the window.
    pub fn server_cores(&self) -> Option<f64> {
        let server = self.server_us?;
        Some(if self.wall_us == 0 {
            0.0
        } else {
            server as f64 / self.wall_us as f64
        })
    }
}

/// Figures of the `fanout` scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Fanout {
    /// Clients connected.
    pub clients: usize,
    /// Rooms they are spread over.
    pub rooms: usize,
    /// Senders among them.
    pub senders: usize,
    /// Closed-loop window per sender (`None` in fixed-rate mode).
    pub window: Option<usize>,
    /// Fixed send rate, messages/s over all senders (`None` in closed-loop mode).
    pub rate: Option<f64>,
    /// Measured window, seconds.
    pub seconds: f64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Messages sent per second in the window.
    pub sent_per_s: f64,
    /// Deliveries expected: every message sent in the window, once per member of its room.
    pub expected: u64,
    /// Deliveries per second (messages sent in the window and received, per second).
    pub deliveries_per_s: f64,
    /// `expected − received` after the drain.
    pub loss: i64,
    /// Counters summed over every client.
    pub counts: DeliveryCounts,
    /// Clients whose own view was not exact: they did not receive each message their
    /// room was sent in the window exactly once, or saw a gap, duplicate or reordering
    /// (of a sender's counters or of `seq`). 0 in a correct run.
    pub clients_wrong: u64,
    /// Latency from the send time in the content to receipt.
    pub latency: Percentiles,
    /// On a cluster (`--node`), the same latency split by whether the receiving client is
    /// on its sender's node or on another one (the delivery then crossed the bus); absent
    /// against one server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_by_node: Option<ByNode>,
    /// The server's CPU per delivery, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
}

/// Latency split by where the receiver is, against a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct ByNode {
    /// Receiver on the sender's node: delivered without the bus.
    pub same_node: Percentiles,
    /// Receiver on another node: the message crossed the bus.
    pub cross_node: Percentiles,
}

/// Figures of the `idle` scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Idle {
    /// Joined connections held.
    pub connections: usize,
    /// Rooms they are spread over.
    pub rooms: usize,
    /// Server RSS before the first connection, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every connection joined and settled, KiB.
    pub rss_after_kib: u64,
    /// `(after − before) / connections`, KiB.
    pub kib_per_connection: f64,
    /// Seconds taken to connect and join them all.
    pub join_seconds: f64,
    /// Frames of type `error` received while held.
    pub errors: u64,
}

/// Figures of the `connect` scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Storm {
    /// Joins attempted.
    pub joins: usize,
    /// Joins that completed.
    pub completed: usize,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Rooms the joins are spread over.
    pub rooms: usize,
    /// Wall-clock seconds from the first connect to the last `room_users`.
    pub seconds: f64,
    /// Completed joins per second.
    pub joins_per_s: f64,
    /// Latency of one full join (connect → `room_users`).
    pub latency: Percentiles,
    /// The server's CPU per completed join, µs.
    pub server_cpu_us_per_join: Option<f64>,
    /// The first failure seen, if any.
    pub first_failure: Option<String>,
}

/// A scenario's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `fanout`, `idle` or `connect`.
    pub scenario: &'static str,
    /// The free-form label given with `--label` (e.g. the server's name).
    pub label: String,
    /// CPU over the measured window.
    pub cpu: Cpu,
    /// The tool's own RSS at the end of the run, KiB.
    pub tool_rss_kib: u64,
    /// `fanout` figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<Fanout>,
    /// `idle` figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    /// `connect` figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<Storm>,
}

impl Report {
    /// The JSON line (no newline inside).
    pub fn json_line(&self) -> String {
        // A derived Serialize of plain numbers and strings cannot fail; keep it total.
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// Whether the tool itself was close to saturating its core (its figures then measure
    /// the tool, not the server).
    pub fn tool_was_bottleneck(&self) -> bool {
        self.cpu.tool_cores() > 0.9
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {} [{}] ==", self.scenario, self.label)?;
        if let Some(x) = &self.fanout {
            let mode = match (x.window, x.rate) {
                (_, Some(rate)) => format!("fixed rate {rate:.0} msg/s"),
                (Some(w), None) => format!("closed loop, window {w}"),
                (None, None) => "closed loop".to_owned(),
            };
            writeln!(
                f,
                "{} clients in {} rooms, {} senders, {mode}, {:.1} s measured",
                x.clients, x.rooms, x.senders, x.seconds
            )?;
            writeln!(
                f,
                "sent {} ({:.0}/s)  deliveries {:.0}/s  expected {}  loss {}",
                x.sent, x.sent_per_s, x.deliveries_per_s, x.expected, x.loss
            )?;
            writeln!(
                f,
                "gaps {}  duplicates {}  seq gaps {}  seq duplicates {}  error frames {}  foreign {}",
                x.counts.gaps,
                x.counts.duplicates,
                x.counts.seq_gaps,
                x.counts.seq_duplicates,
                x.counts.errors,
                x.counts.foreign
            )?;
            writeln!(
                f,
                "clients whose view was not exact: {} of {}",
                x.clients_wrong, x.clients
            )?;
            writeln!(
                f,
                "latency p50 {}  p90 {}  p99 {}  max {}  ({} samples)",
                ms(x.latency.p50_us),
                ms(x.latency.p90_us),
                ms(x.latency.p99_us),
                ms(x.latency.max_us),
                x.latency.count
            )?;
            if let Some(by) = &x.latency_by_node {
                for (which, l) in [("same node", by.same_node), ("cross node", by.cross_node)] {
                    writeln!(
                        f,
                        "  {which}: p50 {}  p90 {}  p99 {}  max {}  ({} samples)",
                        ms(l.p50_us),
                        ms(l.p90_us),
                        ms(l.p99_us),
                        ms(l.max_us),
                        l.count
                    )?;
                }
            }
            if let Some(per) = x.server_cpu_us_per_delivery {
                writeln!(f, "server CPU {per:.2} µs/delivery")?;
            }
        }
        if let Some(x) = &self.idle {
            writeln!(
                f,
                "{} joined connections in {} rooms (joined in {:.1} s), error frames {}",
                x.connections, x.rooms, x.join_seconds, x.errors
            )?;
            writeln!(
                f,
                "server RSS {} KiB → {} KiB: {:.1} KiB per connection",
                x.rss_before_kib, x.rss_after_kib, x.kib_per_connection
            )?;
        }
        if let Some(x) = &self.connect {
            writeln!(
                f,
                "{}/{} joins at concurrency {} over {} rooms in {:.2} s: {:.0} joins/s",
                x.completed, x.joins, x.concurrency, x.rooms, x.seconds, x.joins_per_s
            )?;
            writeln!(
                f,
                "join latency p50 {}  p90 {}  p99 {}  max {}",
                ms(x.latency.p50_us),
                ms(x.latency.p90_us),
                ms(x.latency.p99_us),
                ms(x.latency.max_us)
            )?;
            if let Some(per) = x.server_cpu_us_per_join {
                writeln!(f, "server CPU {per:.0} µs/join")?;
            }
            if let Some(failure) = &x.first_failure {
                writeln!(f, "first failure: {failure}")?;
            }
        }
        if let Some(cores) = self.cpu.server_cores() {
            write!(f, "server CPU {:.2} cores; ", cores)?;
        }
        write!(
            f,
            "tool CPU {:.2} cores, RSS {} KiB",
            self.cpu.tool_cores(),
            self.tool_rss_kib
        )?;
        if self.tool_was_bottleneck() {
            write!(
                f,
                "  ** the load tool was near one full core: figures may be the tool's limit **"
            )?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout_report() -> Report {
        Report {
            scenario: "fanout",
            label: "relay".to_owned(),
            cpu: Cpu {
                server_us: Some(500_000),
                tool_us: 950_000,
                wall_us: 1_000_000,
            },
            tool_rss_kib: 10_000,
            fanout: Some(Fanout {
                clients: 200,
                rooms: 1,
                senders: 4,
                window: Some(8),
                rate: None,
                seconds: 1.0,
                sent: 1000,
                sent_per_s: 1000.0,
                expected: 200_000,
                deliveries_per_s: 199_990.0,
                loss: 10,
                clients_wrong: 10,
                counts: DeliveryCounts {
                    received_in_window: 199_990,
                    ..Default::default()
                },
                latency_by_node: None,
                latency: Percentiles {
                    count: 199_990,
                    p50_us: 100.0,
                    p90_us: 200.0,
                    p99_us: 1500.0,
                    max_us: 3000.0,
                },
                server_cpu_us_per_delivery: Some(2.5),
            }),
            idle: None,
            connect: None,
        }
    }

    #[test]
    fn the_json_line_is_one_line_with_the_figures() {
        let line = fanout_report().json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["scenario"], "fanout");
        assert_eq!(v["fanout"]["loss"], 10);
        assert_eq!(v["fanout"]["latency"]["p99_us"], 1500.0);
        assert_eq!(v["fanout"]["server_cpu_us_per_delivery"], 2.5);
        assert_eq!(v["cpu"]["server_us"], 500_000);
        assert!(v.get("idle").is_none(), "absent, not null: {line}");
    }

    #[test]
    fn the_summary_shows_percentiles_in_ms_and_flags_a_saturated_tool() {
        let text = fanout_report().to_string();
        assert!(text.contains("p99 1.50 ms"), "{text}");
        assert!(text.contains("loss 10"), "{text}");
        assert!(text.contains("2.50 µs/delivery"), "{text}");
        assert!(text.contains("near one full core"), "{text}");
    }

    #[test]
    fn cpu_per_unit_needs_a_pid_and_work() {
        let cpu = Cpu {
            server_us: Some(1_000),
            tool_us: 0,
            wall_us: 10,
        };
        assert_eq!(cpu.server_per(4), Some(250.0));
        assert_eq!(cpu.server_per(0), None);
        assert_eq!(
            Cpu {
                server_us: None,
                ..cpu
            }
            .server_per(4),
            None
        );
    }
}
