//! PostgreSQL for the end-to-end tests: the server of `CHAT_TEST_POSTGRES_URL`, a fresh
//! database per test, and (for the fault test) the TCP proxy of `chat-postgres-store`'s
//! own tests, which can cut or stall the traffic without touching the shared server.

use std::net::SocketAddr;

#[path = "../../../chat-postgres-store/tests/support/proxy.rs"]
#[allow(unreachable_pub, dead_code)]
pub(crate) mod proxy;

/// The variable naming the PostgreSQL server.
pub(crate) const URL_VAR: &str = "CHAT_TEST_POSTGRES_URL";

/// The server's URL; `None` (with a printed note) when unset, a panic when unset under
/// `CI=true`, where a skipped PostgreSQL test would hide a broken set-up.
pub(crate) fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{URL_VAR} is not set, but CI=true: the PostgreSQL tests must run in CI")
        }
        _ => {
            eprintln!("SKIPPED the PostgreSQL part of {test}: set {URL_VAR} to run it");
            None
        }
    }
}

/// A database created for one test, dropped (with its connections) on drop.
pub(crate) struct TestDb {
    server: String,
    name: String,
    /// The new database's URL.
    pub(crate) url: String,
}

impl TestDb {
    /// Creates `chat_test_<random>` (on a thread of its own: callers are sync code,
    /// sometimes inside an async test).
    pub(crate) fn create(server: &str) -> TestDb {
        let name = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
        run(server, format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        TestDb {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = run(&self.server, sql) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs one statement on `url` from a thread with its own runtime.
fn run(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_owned())?
}

/// `url` with its database replaced.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let query = url.find('?');
    let path = url[scheme_end..].find('/').map(|i| scheme_end + i);
    let tail = query.map_or("", |q| &url[q..]);
    let base_end = path.or(query).unwrap_or(url.len());
    format!("{}/{database}{tail}", &url[..base_end])
}

/// `url` with its host and port replaced by `addr` (user and database kept).
pub(crate) fn with_address(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let user = authority.rfind('@').map_or("", |i| &authority[..=i]);
    format!(
        "{}{user}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

/// The server's address, for the proxy to forward to.
pub(crate) fn server_address(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("a valid PostgreSQL URL");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) if host != "localhost" => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    format!("{host}:{port}")
        .parse()
        .expect("the test server's host is an IP address")
}
