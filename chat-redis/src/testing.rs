//! Test support: the Redis of `CHAT_TEST_REDIS_URL` and a key prefix of one's own
//! (removed with every key under it when dropped), so tests share the server without
//! touching anyone else's keys.
#![allow(clippy::unwrap_used)] // test code

/// The variable naming the Redis server tests may use.
pub(crate) const URL_VAR: &str = "CHAT_TEST_REDIS_URL";

/// The server's URL; `None` (with a printed note) when unset, a panic when unset under
/// `CI=true`, where a skipped Redis test would hide a broken set-up.
pub(crate) fn redis_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{URL_VAR} is not set, but CI=true: the Redis tests must run in CI")
        }
        _ => {
            eprintln!("SKIPPED {test}: set {URL_VAR} (e.g. redis://127.0.0.1:6379) to run it");
            None
        }
    }
}

/// A unique key prefix; its keys are deleted on drop.
pub(crate) struct TestPrefix {
    pub(crate) url: String,
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
        let keys: Vec<String> = match redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
        {
            Ok(keys) => keys,
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut conn);
        }
    }
}
