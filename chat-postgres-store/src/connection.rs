//! A pooled connection that goes back to the pool only after a clean finish.

use deadpool_postgres::{Object, Pool};

use crate::error::Failure;

/// Holds a pooled connection for one operation. Unless [`Exclusive::release`] is called
/// — the operation finished and the connection is idle — dropping it detaches the
/// connection from the pool and closes it. An operation cut short by its timeout, or
/// failed midway, may have left a transaction open or answers unread; such a connection
/// must never serve the next operation.
pub(crate) struct Exclusive(Option<Object>);

impl Exclusive {
    /// Waits for a connection (the pool's own wait and create timeouts apply).
    pub(crate) async fn get(pool: &Pool) -> Result<Self, Failure> {
        pool.get()
            .await
            .map(|object| Self(Some(object)))
            .map_err(Failure::from_pool)
    }

    /// The connection.
    pub(crate) fn client(&self) -> &deadpool_postgres::ClientWrapper {
        // The option is only emptied by `release` (which consumes self) and by drop.
        self.0
            .as_deref()
            .expect("an Exclusive holds its connection until dropped")
    }

    /// Returns the connection to the pool for reuse.
    pub(crate) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}
