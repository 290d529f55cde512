//! Redis for the cluster tests: the shared server of `CHAT_TEST_REDIS_URL` under a key
//! prefix of the test's own (its keys removed at the end, nobody else's touched), or —
//! for tests that kill, restart, pause or cut Redis — a `redis-server` of the test's
//! own on a free port.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The variable naming the shared Redis server.
pub(crate) const URL_VAR: &str = "CHAT_TEST_REDIS_URL";

/// The shared server's URL; `None` (with a printed note) when unset, a panic when unset
/// under `CI=true`, where a skipped cluster test would hide a broken set-up.
pub(crate) fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{URL_VAR} is not set, but CI=true: the cluster tests must run in CI")
        }
        _ => {
            eprintln!("SKIPPED {test}: set {URL_VAR} (e.g. redis://127.0.0.1:6379) to run it");
            None
        }
    }
}

/// A key prefix of one test on a shared server; its keys are deleted on drop.
pub(crate) struct TestPrefix {
    url: String,
    pub(crate) prefix: String,
}

impl TestPrefix {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: format!("chat-test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut conn);
        }
    }
}

/// A `redis-server` of one test, on a free port, without persistence: starting it again
/// after a kill loses everything, like a crashed cache would.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) port: u16,
}

impl RedisServer {
    /// Starts one; returns once it accepts connections.
    pub(crate) fn start() -> RedisServer {
        let port = free_port();
        let mut server = RedisServer { child: None, port };
        server.spawn();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        // Its log says when it accepts connections; the rest of the log is drained so
        // the pipe never fills.
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                Some(Ok(_)) => {}
                _ => panic!("redis-server on port {} did not start", self.port),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    /// A fresh, empty server on the same port (after [`kill`](Self::kill)).
    pub(crate) fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command (e.g. `CLIENT KILL TYPE pubsub`); its reply as a string.
    pub(crate) fn command(&self, args: &[&str]) -> String {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client.get_connection().expect("connect to the test redis");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut conn).expect("redis command") {
            redis::Value::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }

    /// Whether something accepts connections on the port.
    pub(crate) fn is_up(&self) -> bool {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on now (bound, read, released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
