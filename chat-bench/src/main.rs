//! `chat-bench`: load scenarios against a chat server speaking the v1 wire protocol, and
//! the bare relay (`chat-bench relay`) that is the floor of this stack.
//!
//! See the crate docs of the `chat_bench` library and `docs/BENCHMARKS.md` for the method;
//! `scripts/bench.sh` runs every scenario against every server and prints the table.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chat_bench::client::Target;
use chat_bench::fanout::{FanoutConfig, Pace};
use chat_bench::idle::IdleConfig;
use chat_bench::plot::PlotConfig;
use chat_bench::relay::RelayConfig;
use chat_bench::report::Report;
use chat_bench::storm::StormConfig;
use chat_bench::{BenchError, fanout, idle, plot, relay, storm};
use clap::{Args, Parser, Subcommand};

/// Load a chat server (v1 wire protocol) on this machine and report throughput, loss,
/// latency, CPU per delivery and memory per connection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Worker threads of the tool's runtime (1: a single-threaded runtime, the lightest).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// C clients in R rooms, S senders, closed loop (window W) or a fixed rate.
    Fanout(FanoutArgs),
    /// Acknowledged messages: S senders, each alone in its own room, closed loop; every
    /// delivery is the sender's own acknowledgement (`message_received` after the
    /// store's commit), so deliveries/s is acks/s and the latency is the ack latency.
    /// Run it against the server with each `--store` to compare stores.
    Acks(AcksArgs),
    /// N joined connections held: the server's RSS per connection.
    Idle(IdleArgs),
    /// A storm of N full joins at concurrency K: joins/s and join latency.
    Connect(ConnectArgs),
    /// Run the bare relay (the stack's floor) until killed.
    Relay(RelayArgs),
    /// Draw p99 latency against deliveries/s (PNG) from a `bench.sh --sweep` run.
    Plot(PlotArgs),
}

/// Flags every load scenario shares.
#[derive(Debug, Args)]
struct Common {
    /// The server's address (must be in 127.0.0.0/8).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// The WebSocket path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Spread client sockets over this many source addresses, 127.0.0.2 onwards.
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// The server's PID: its CPU time (and RSS for `idle`) is read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label copied into the report (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Print the JSON line after the summary.
    #[arg(long)]
    json: bool,
    /// Seconds one join may take.
    #[arg(long, default_value_t = 30)]
    join_timeout_s: u64,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Clients.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Rooms (client i joins room i mod R).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Senders (clients 0..S).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Fixed rate instead of closed loop: messages per second over all senders
    /// (deliveries/s = rate × members per room).
    #[arg(long)]
    rate: Option<f64>,
    /// Warm-up seconds before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait after the window for deliveries in flight.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Joins in flight at once while connecting.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// Another server of the same cluster (repeat, or comma-separated): clients are dealt
    /// round robin over `--addr` and these, rotated by room, so every room has members on
    /// every node (when it has as many members as there are nodes) and the senders are
    /// spread too. `--server-pid` then reads `--addr`'s CPU only.
    #[arg(long = "node", value_name = "ADDR", value_delimiter = ',')]
    nodes: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct AcksArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent senders (each in a room of its own).
    #[arg(long, default_value_t = 100)]
    senders: usize,
    /// Messages in flight per sender (1: send, wait for the ack, send the next).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Warm-up seconds before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait after the window for acknowledgements in flight.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Send without `clientMsgId`s (by default each message has one, as the web client
    /// does, so a durable store's idempotency index is part of the figure).
    #[arg(long)]
    no_client_msg_ids: bool,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Seconds between the last join and the RSS reading.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Seconds to keep holding after the reading.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Joins.
    #[arg(long, default_value_t = 5_000)]
    joins: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Rooms the joins are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Failed joins after which the storm stops.
    #[arg(long, default_value_t = 50)]
    max_failures: usize,
}

#[derive(Debug, Args)]
struct RelayArgs {
    /// Address to listen on (must be in 127.0.0.0/8).
    #[arg(long, default_value = "127.0.0.1:3002")]
    addr: SocketAddr,
    /// tungstenite read buffer per connection, bytes.
    #[arg(long, default_value_t = 8 * 1024)]
    read_buffer: usize,
    /// Frames queued per connection before it misses messages.
    #[arg(long, default_value_t = 4096)]
    queue: usize,
}

#[derive(Debug, Args)]
struct PlotArgs {
    /// The sweep's JSON lines (`target/bench/results-….jsonl`).
    #[arg(long)]
    results: std::path::PathBuf,
    /// The PNG to write.
    #[arg(long)]
    output: std::path::PathBuf,
    /// A TrueType font for the labels.
    #[arg(long, default_value = plot::DEFAULT_FONT)]
    font: std::path::PathBuf,
    /// The image's title.
    #[arg(long, default_value = "p99 latency against deliveries/s")]
    title: String,
}

fn seconds(s: f64, flag: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| BenchError::Config(format!("--{flag}: {s} is not a duration")))
}

fn target(c: &Common) -> Result<Target, BenchError> {
    let mut t = Target::new(c.addr)?;
    t.path.clone_from(&c.path);
    t.source_ips = c.source_ips;
    t.join_timeout = Duration::from_secs(c.join_timeout_s);
    t.check()?;
    Ok(t)
}

/// A salt for usernames: distinct between runs against one long-lived server.
fn salt() -> u32 {
    std::process::id()
}

fn print(report: &Report, json: bool) {
    print!("{report}");
    if json {
        println!("{}", report.json_line());
    }
}

async fn run(command: Command) -> Result<(), BenchError> {
    match command {
        Command::Fanout(a) => {
            let pace = match a.rate {
                Some(messages_per_s) => Pace::FixedRate { messages_per_s },
                None => Pace::ClosedLoop { window: a.window },
            };
            let mut other_nodes = Vec::with_capacity(a.nodes.len());
            for addr in &a.nodes {
                let mut node = target(&a.common)?;
                node.addr = *addr;
                node.check()?;
                other_nodes.push(node);
            }
            let cfg = FanoutConfig {
                target: target(&a.common)?,
                other_nodes,
                clients: a.clients,
                rooms: a.rooms,
                senders: a.senders,
                pace,
                warmup: seconds(a.warmup, "warmup")?,
                duration: seconds(a.duration, "duration")?,
                drain: seconds(a.drain, "drain")?,
                connect_concurrency: a.connect_concurrency,
                server_pid: a.common.server_pid,
                label: a.common.label.clone(),
                salt: salt(),
                client_msg_ids: false,
            };
            print(&fanout::run(&cfg).await?, a.common.json);
        }
        Command::Acks(a) => {
            let cfg = FanoutConfig {
                target: target(&a.common)?,
                other_nodes: Vec::new(),
                clients: a.senders,
                rooms: a.senders,
                senders: a.senders,
                pace: Pace::ClosedLoop { window: a.window },
                warmup: seconds(a.warmup, "warmup")?,
                duration: seconds(a.duration, "duration")?,
                drain: seconds(a.drain, "drain")?,
                connect_concurrency: 50,
                server_pid: a.common.server_pid,
                label: a.common.label.clone(),
                salt: salt(),
                client_msg_ids: !a.no_client_msg_ids,
            };
            let mut report = fanout::run(&cfg).await?;
            report.scenario = "acks";
            print(&report, a.common.json);
        }
        Command::Idle(a) => {
            let server_pid = a.common.server_pid.ok_or_else(|| {
                BenchError::Config("idle needs --server-pid: its RSS is the figure".to_owned())
            })?;
            let cfg = IdleConfig {
                target: target(&a.common)?,
                connections: a.connections,
                rooms: a.rooms,
                concurrency: a.concurrency,
                settle: seconds(a.settle, "settle")?,
                hold: seconds(a.hold, "hold")?,
                server_pid,
                label: a.common.label.clone(),
                salt: salt(),
            };
            print(&idle::run(&cfg).await?, a.common.json);
        }
        Command::Connect(a) => {
            let cfg = StormConfig {
                target: target(&a.common)?,
                joins: a.joins,
                concurrency: a.concurrency,
                rooms: a.rooms,
                max_failures: a.max_failures.max(1),
                server_pid: a.common.server_pid,
                label: a.common.label.clone(),
                salt: salt(),
            };
            print(&storm::run(&cfg).await?, a.common.json);
        }
        Command::Plot(a) => plot::run(&PlotConfig {
            results: a.results,
            output: a.output,
            font: a.font,
            title: a.title,
        })?,
        Command::Relay(a) => {
            // The relay may only listen on loopback, like the tool only connects there.
            Target::new(a.addr)?;
            let listener = tokio::net::TcpListener::bind(a.addr)
                .await
                .map_err(|e| BenchError::io(format!("bind {}", a.addr), e))?;
            println!("bare relay listening on {}", a.addr);
            relay::serve(
                listener,
                RelayConfig {
                    read_buffer: a.read_buffer,
                    queue: a.queue,
                },
            )
            .await
            .map_err(|e| BenchError::io("relay", e))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
