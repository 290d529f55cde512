//! What the PostgreSQL tests share: the server's URL (or a clear skip), a fresh database
//! per test, and a TCP proxy that can cut or stall the traffic.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::time::Duration;

use chat_postgres_store::{PostgresConfig, PostgresStore};

/// The variable naming the PostgreSQL server the tests use.
pub const URL_VAR: &str = "CHAT_TEST_POSTGRES_URL";

/// The server's URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres` (a database the
/// user may connect to; each test creates and drops its own next to it).
///
/// Without it a test prints that it was skipped and passes — except under `CI=true`,
/// where a skipped PostgreSQL test would hide a broken set-up, so it fails.
pub fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{URL_VAR} is not set, but CI=true: the PostgreSQL tests must run in CI")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: set {URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run it"
            );
            None
        }
    }
}

/// A database created for one test and dropped (connections and all) when this is
/// dropped, even after a failed assertion.
pub struct TestDb {
    server: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl TestDb {
    /// Creates `chat_test_<random>` on the server.
    pub async fn create(server: &str) -> TestDb {
        let name = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin(server).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        TestDb {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        }
    }

    /// A store on this database with a short timeout (fault tests wait for it).
    pub async fn open(&self) -> PostgresStore {
        PostgresStore::open(config(&self.url))
            .await
            .expect("open the store on a fresh database")
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain client on this database (to look at or tamper with the tables).
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs outside any async context we could await in: a thread with its
        // own small runtime does the dropping.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async {
                let admin = admin(&server).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The test configuration: defaults, but a 1 s timeout and a small pool.
pub fn config(url: &str) -> PostgresConfig {
    PostgresConfig::new(url)
        .with_timeout(Duration::from_secs(1))
        .with_pool_size(4)
}

/// A connected client (its connection driven by a spawned task).
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client
}

/// `url` with its database replaced (`postgres://user@host:port/DB?params`).
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let path = url[scheme_end..].find('/').map(|i| scheme_end + i);
    let query = url.find('?');
    match (path, query) {
        (Some(p), Some(q)) if q > p => format!("{}/{database}{}", &url[..p], &url[q..]),
        (Some(p), _) => format!("{}/{database}", &url[..p]),
        (None, Some(q)) => format!("{}/{database}{}", &url[..q], &url[q..]),
        (None, None) => format!("{url}/{database}"),
    }
}

/// `url` with its host and port replaced by `addr` (user and database kept).
pub fn with_address(url: &str, addr: std::net::SocketAddr) -> String {
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

/// The server's address (host and port of `url`), for the proxy to forward to.
pub fn server_address(url: &str) -> std::net::SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("a valid PostgreSQL URL");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    format!("{host}:{port}")
        .parse()
        .expect("the test server's host is an IP address")
}
