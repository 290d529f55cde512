//! The real example server (`examples/server`) as a child process that a test can
//! `kill -9` and start again on the same store, and WebSocket clients with stable
//! identities (HS256 JWTs), so a user is the same user after a reconnect or a restart
//! (idempotency is per user).
//!
//! The binary is built once per test process with the `cargo` that runs the tests
//! (`cargo build -p chat-examples --example server`), its path taken from cargo's
//! `compiler-artifact` message; `CHAT_SERVER_BIN` overrides it. (`CARGO_BIN_EXE_…` exists
//! only for `[[bin]]` targets.)
#![allow(dead_code)] // each test file uses a different part

pub(crate) mod cluster;
pub(crate) mod jepsen;
pub(crate) mod postgres;
pub(crate) mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret the test servers are started with.
pub(crate) const SECRET: &str = "durability tests only: 32 bytes or more of secret";

/// How long any single expected frame may take.
pub(crate) const PROMPT: Duration = Duration::from_secs(20);

/// A store the end-to-end durability tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `--store sqlite:<temporary dir>/chat.db`.
    Sqlite,
    /// `--store postgres://…/chat_test_<random>` on the server of
    /// `CHAT_TEST_POSTGRES_URL`.
    Postgres,
}

/// Every durable backend; the crash and reconnect tests run once per entry. PostgreSQL
/// is there when `CHAT_TEST_POSTGRES_URL` is set (see [`postgres::server_url`]: skipped
/// with a note without it, a failure under `CI=true`).
pub(crate) fn backends(test: &str) -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if postgres::server_url(test).is_some() {
        backends.push(Backend::Postgres);
    }
    backends
}

/// One database of a backend for one test: the `--store` value, the same for every
/// start of the server in that test. Dropping it removes the data.
pub(crate) struct Database {
    pub(crate) store: String,
    _dir: tempfile::TempDir,
    _postgres: Option<postgres::TestDb>,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// A fresh, empty database for one test.
    pub(crate) fn database(self) -> Database {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (store, postgres) = match self {
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("chat.db").display()),
                None,
            ),
            Backend::Postgres => {
                let server = postgres::server_url("a postgres backend")
                    .expect("backends() lists postgres only when it is configured");
                let db = postgres::TestDb::create(&server);
                (db.url.clone(), Some(db))
            }
        };
        Database {
            store,
            _dir: dir,
            _postgres: postgres,
        }
    }
}

/// The example server's executable, built on first use.
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
            "building the example server failed"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "server")
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reports the server's executable")
    })
}

/// A running example server with JWT sign-in and no rate limits.
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` with `--store store`; returns once it printed
    /// its address (its hub runs then).
    pub(crate) fn start(store: &str) -> ServerProcess {
        Self::start_with(store, &[])
    }

    /// Like [`start`](Self::start), with more flags (e.g. `--redis`).
    pub(crate) fn start_with(store: &str, extra: &[&str]) -> ServerProcess {
        let log = std::env::var("DURABILITY_LOG").ok();
        let mut child = Command::new(server_binary())
            .args(["--addr", "127.0.0.1:0", "--store", store])
            .args(extra)
            .args(["--log", log.as_deref().unwrap_or("off")])
            .args(["--jwt-hs256-secret", SECRET])
            .args(["--message-rate", "off", "--join-rate", "off"])
            .args(["--history-rate", "off", "--refusal-budget", "off"])
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

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`, `-TERM`) with `kill`.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// SIGTERM, then waits for the process to exit; its exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child.wait().expect("wait for the server")
    }

    /// `kill -9`: no shutdown, no flush, no close frames.
    pub(crate) fn kill9(mut self) {
        // `Child::kill` is SIGKILL on Unix.
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

/// Runs the server with `args` expecting it to refuse to start: its exit status and
/// what it wrote to stderr.
pub(crate) fn start_refused(args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = Command::new(server_binary())
        .args(["--addr", "127.0.0.1:0", "--log", "off"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the example server");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HS256 token for `sub` (its display name is `sub` too), valid for an hour.
pub(crate) fn token(sub: &str) -> String {
    token_named(sub, sub)
}

/// An HS256 token for `sub` displayed as `name`, valid for an hour.
pub(crate) fn token_named(sub: &str, name: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "name": name, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing works")
}

/// A WebSocket client signed in as one user.
pub(crate) struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub(crate) user: String,
}

impl Client {
    /// Connects as `user` and waits for the greeting.
    pub(crate) async fn connect(addr: SocketAddr, user: &str) -> Client {
        let url = format!("ws://{addr}/?token={}", token(user));
        let (ws, _) = tokio::time::timeout(PROMPT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        let mut client = Client {
            ws,
            user: user.to_owned(),
        };
        client.expect("connection").await;
        client
    }

    pub(crate) async fn send(&mut self, frame: Value) -> Result<(), String> {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next JSON frame; `None` when the connection ended.
    pub(crate) async fn next(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("JSON from the server"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame of type `kind` (others skipped), within [`PROMPT`].
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        tokio::time::timeout(PROMPT, async {
            loop {
                match self.next().await {
                    Some(frame) if frame["type"] == kind => return frame,
                    Some(frame) if frame["type"] == "error" => {
                        panic!("{}: error while waiting for {kind}: {frame}", self.user)
                    }
                    Some(_) => {}
                    None => panic!("{}: connection ended while waiting for {kind}", self.user),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: no {kind} within {PROMPT:?}", self.user))
    }

    /// Joins `room` (with `extra` fields, e.g. `since`/`epoch`) and returns the join's
    /// `message_history` frames merged: (messages, the last frame).
    pub(crate) async fn join(&mut self, room: &str, extra: Value) -> (Vec<Value>, Value) {
        let mut command = json!({"type": "join_room", "room": room, "keepRooms": true});
        if let (Some(c), Some(e)) = (command.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        self.send(command).await.expect("send join_room");
        let mut messages = Vec::new();
        loop {
            let frame = self.expect("message_history").await;
            messages.extend(frame["messages"].as_array().cloned().unwrap_or_default());
            if frame["continued"] != true {
                self.expect("room_users").await;
                return (messages, frame);
            }
        }
    }

    /// Every message of `room` the server has (joined already), oldest first, read with
    /// `history` pages from the newest.
    pub(crate) async fn whole_history(&mut self, room: &str, newest: Vec<Value>) -> Vec<Value> {
        let mut all = newest;
        loop {
            let Some(oldest) = all.first().and_then(|m| m["seq"].as_u64()) else {
                return all;
            };
            if oldest <= 1 {
                return all;
            }
            self.send(json!({"type": "history", "room": room, "before": oldest, "limit": 100}))
                .await
                .expect("send history");
            let page = self.expect("message_history").await;
            let mut older = page["messages"].as_array().cloned().unwrap_or_default();
            if older.is_empty() {
                return all;
            }
            older.append(&mut all);
            all = older;
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
