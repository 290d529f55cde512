//! [`RandomUserIds`]: the runtime's default [`IdGenerator`].
//!
//! The engine never generates randomness itself (it must stay deterministic for tests,
//! proptest and fuzzing); the runtime injects this generator so that anonymous users get
//! unguessable ids: a user id is also the address other users DM, so a counter would let
//! anyone enumerate who is online.

use crate::ids::{IdGenerator, UserId};

/// Random (v4) UUIDs as anonymous user ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomUserIds;

impl IdGenerator for RandomUserIds {
    fn user_id(&mut self) -> UserId {
        // The runtime is where randomness is allowed; the engine only sees this trait.
        #[allow(clippy::disallowed_methods)]
        let id = uuid::Uuid::new_v4();
        UserId::from(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_uuids() {
        let mut g = RandomUserIds;
        let (a, b) = (g.user_id(), g.user_id());
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.as_str()).is_ok());
    }
}
