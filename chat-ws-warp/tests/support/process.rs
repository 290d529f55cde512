//! The real example server (`examples/server`) as a child process, so a test can abuse
//! it over real sockets and measure it from outside: its resident memory (`VmRSS` in
//! `/proc/<pid>/status`), its `/healthz` and its own gauges on `/metrics`.
//!
//! # Where the binary comes from
//!
//! `env!("CARGO_BIN_EXE_…")` exists only for `[[bin]]` targets of the package under test,
//! and the server is an *example* of another package (`chat-examples`). So the first test
//! that needs it runs, once per test process (a `OnceLock`),
//!
//! ```text
//! cargo build -p chat-examples --example server --message-format=json-render-diagnostics
//! ```
//!
//! in the workspace root, with the `cargo` that runs the tests (`$CARGO`) and the same
//! environment (so the same `CARGO_TARGET_DIR`), and takes the executable's path from
//! cargo's own `compiler-artifact` message — no guessing of `target/<profile>/examples`.
//! An up-to-date binary makes this a no-op of about a second. `--release` is added when the
//! tests themselves are optimised. Set `CHAT_SERVER_BIN` to skip the build and use a binary
//! of your own (as `e2e/run.sh` does).
//!
//! Each [`ServerProcess`] listens on `127.0.0.1:0` and keeps messages in memory (`--store
//! memory`, unless the flags name a store); the address is read from the line the
//! server prints at start-up. Its log goes nowhere unless `BAD_INPUT_LOG` is set (e.g.
//! `BAD_INPUT_LOG=info`: the server's tracing output then appears on the test's stderr).
//! Dropping it kills the child.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::PROMPT;

/// How often a wait for a condition of the server process (its exit, a `/metrics` value)
/// looks again. There is no push signal across a process boundary: these waits poll the
/// condition itself, each bounded by a deadline, and end as soon as it holds.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// The example server's executable, built on first use (see the module docs).
pub(crate) fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("CHAT_SERVER_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the crate lives in the workspace");
        let mut build = Command::new(cargo);
        build.current_dir(workspace).args([
            "build",
            "-p",
            "chat-examples",
            "--example",
            "server",
            "--message-format=json-render-diagnostics",
        ]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let output = build
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the example server");
        assert!(
            output.status.success(),
            "cargo build -p chat-examples --example server failed"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let executable = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "server")
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reports the server's executable");
        assert!(executable.exists(), "{executable:?} does not exist");
        executable
    })
}

/// A running example server.
pub(crate) struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` with `flags` (on top of `--addr` and `--log`).
    /// Blocks (briefly) until it prints its address.
    pub(crate) fn start(flags: &[&str]) -> ServerProcess {
        let log = std::env::var("BAD_INPUT_LOG").ok();
        let mut child = Command::new(server_binary())
            .args([
                "--addr",
                "127.0.0.1:0",
                "--log",
                log.as_deref().unwrap_or("off"),
            ])
            // These tests measure the in-memory store's behaviour (and must not share
            // a `chat-data/` database between tests and runs): memory unless a test
            // names a store itself.
            .args(
                if flags
                    .iter()
                    .any(|f| *f == "--store" || f.starts_with("--store="))
                {
                    &[][..]
                } else {
                    &["--store", "memory"][..]
                },
            )
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start the example server");
        let stdout = child.stdout.take().expect("piped stdout");
        // "Chat server running: open http://127.0.0.1:PORT/ in two browser tabs"
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the server's first line: {line:?}"));
        ServerProcess { child, addr }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the server process has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("query the server process") {
            panic!("the server process exited: {status}");
        }
    }

    /// Sends SIGTERM to the server (what container runtimes and systemd send), with the
    /// `kill` command: the workspace forbids `unsafe`, so no `libc::kill`.
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits (at most `within`, polling every [`POLL`]) for the server to exit; its exit
    /// status, or `None` if it is still running.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("query the server process") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The server's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// One HTTP/1.1 `GET` with `Connection: close`: the status and the body.
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let (response, _) = http_exchange(self.addr, request.as_bytes()).await;
        let response = response.unwrap_or_else(|| panic!("no response to GET {path}"));
        (response.status, response.body)
    }

    /// `GET /healthz` answers 200 `ok`.
    pub(crate) async fn assert_healthy(&self) {
        assert_eq!(self.get("/healthz").await, (200, "ok".to_owned()));
    }

    /// The value of one series of `/metrics`, e.g. `chat_connections` or
    /// `chat_closes_total{code="1013"}` (0 when absent: a counter family that was never
    /// touched has no series yet).
    pub(crate) async fn metric(&self, series: &str) -> i64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics");
        metric_in(&text, series)
    }

    /// The sum of every series of a metric `family`, e.g. `chat_errors_sent_total` over
    /// all its codes (0 when it has none).
    pub(crate) async fn metric_total(&self, family: &str) -> i64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics");
        metric_family_total(&text, family)
    }

    /// Waits (at most `within`, polling `/metrics`) until the series of `family` add up
    /// to at least `at_least`; panics with the last total otherwise.
    pub(crate) async fn await_metric_total(&self, family: &str, at_least: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let total = self.metric_total(family).await;
            if total >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{family} totals {total}, expected at least {at_least} within {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (at most `within`) until `series` reads `expected`; panics with the last
    /// value otherwise.
    pub(crate) async fn await_metric(&self, series: &str, expected: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let value = self.metric(series).await;
            if value == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is {value}, expected {expected} within {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Our own child, by its handle; then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the series of `family` in Prometheus/OpenMetrics text: `family` itself and
/// every `family{…}` (0 when there are none).
pub(crate) fn metric_family_total(text: &str, family: &str) -> i64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let of_family = name == family
                || name
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{'));
            of_family.then(|| value.parse::<f64>().ok())?
        })
        .map(|value| value as i64)
        .sum()
}

/// The value of `series` in Prometheus/OpenMetrics text (0 when absent).
pub(crate) fn metric_in(text: &str, series: &str) -> i64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .map_or(0, |value| value as i64)
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    /// Status line and headers, lossily decoded.
    pub(crate) head: String,
    pub(crate) body: String,
}

impl HttpResponse {
    /// A header's value (names compared case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Writes `request` on a fresh connection and reads one response (bounded by [`PROMPT`]).
/// Returns the response (if a complete head arrived) and the connection.
pub(crate) async fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
) -> (Option<HttpResponse>, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    // The server may answer (and close) before it has read everything we send.
    let _ = tcp.write_all(request).await;
    let response = timeout(PROMPT, read_response(&mut tcp))
        .await
        .expect("a response (or the end of the connection) in time");
    (response, tcp)
}

/// Reads one response: the head, then `content-length` bytes of body. `None` if the
/// connection ends (EOF or reset) before the head is complete.
pub(crate) async fn read_response(tcp: &mut TcpStream) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let status = status_of(&head)?;
    let mut response = HttpResponse {
        status,
        head,
        body: String::new(),
    };
    let length: usize = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let end = buf.len().min(head_end + length);
    response.body = String::from_utf8_lossy(&buf[head_end..end]).into_owned();
    Some(response)
}

/// Whether the server ends the connection (EOF or reset) within `within`, reading and
/// discarding whatever else it sends meanwhile.
pub(crate) async fn ends_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    timeout(within, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The status code of an HTTP response's status line.
pub(crate) fn status_of(response: &str) -> Option<u16> {
    response
        .strip_prefix("HTTP/1.")?
        .get(2..)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}
