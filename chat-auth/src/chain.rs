//! [`Chain`]: several admission policies, checked in order.
//!
//! The order matters for cost and for what a refused client learns: put the cheap,
//! request-independent checks first. The example server uses
//! `Origin → per-IP → JWT`: a foreign page is refused (403) before it can spend the
//! address's budget, and the address's budget is spent before any signature is
//! verified, so a flood of forged tokens costs one hash lookup each past the rate.

use chat_core::{Admission, Admitted, ConnectionInfo, Identity, Rejection, async_trait};

/// Runs its steps in order; the first refusal wins. See the module docs.
///
/// What the steps admit is merged: the identity is the first one a step gives (later
/// ones are ignored — stack one authenticator), and the expiry is the earliest of
/// theirs. When a step refuses, the steps before it that had admitted the handshake are
/// released at once (in reverse order), so a counted slot is never leaked — also when
/// the chain's future is dropped while a step is still running (the runtime's
/// admission timeout); when an admitted connection ends, every step is released, in
/// reverse order.
///
/// ```
/// use chat_auth::{Chain, OriginAllowList, PerIpConfig, PerIpLimits};
///
/// let admission = Chain::new()
///     .then(OriginAllowList::new(["https://chat.example"])?)
///     .then(PerIpLimits::new(PerIpConfig::default()));
/// assert_eq!(admission.len(), 2);
/// // chat_core::Server::new(…).with_admission(std::sync::Arc::new(admission))
/// # Ok::<(), chat_auth::InvalidOrigin>(())
/// ```
#[derive(Default)]
pub struct Chain {
    steps: Vec<Box<dyn Admission>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl Chain {
    /// An empty chain: admits everyone anonymously, like
    /// [`AllowAnonymous`](chat_core::AllowAnonymous).
    pub fn new() -> Self {
        Chain::default()
    }

    /// Adds a step after the existing ones.
    #[must_use]
    pub fn then(mut self, step: impl Admission) -> Self {
        self.steps.push(Box::new(step));
        self
    }

    /// Adds a step after the existing ones, if there is one (handy for policies that a
    /// configuration may leave off).
    #[must_use]
    pub fn then_maybe(self, step: Option<impl Admission>) -> Self {
        match step {
            Some(step) => self.then(step),
            None => self,
        }
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the chain has no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Releases the steps that admitted a handshake, in reverse order, unless disarmed: on a
/// refusal, and when the chain's future is dropped mid-way (the runtime's admission
/// timeout), so a slot counted by an earlier step is never leaked.
struct Undo<'a> {
    steps: &'a [Box<dyn Admission>],
    admitted: usize,
    info: &'a ConnectionInfo,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for earlier in self.steps[..self.admitted].iter().rev() {
            earlier.release(self.info);
        }
    }
}

#[async_trait]
impl Admission for Chain {
    async fn admit(&self, info: &ConnectionInfo) -> Result<Admitted, Rejection> {
        let mut identity: Option<Identity> = None;
        let mut expires_in = None;
        let mut undo = Undo {
            steps: &self.steps,
            admitted: 0,
            info,
        };
        for step in &self.steps {
            // A refusal returns here, and `undo` releases the steps before it.
            let admitted = step.admit(info).await?;
            undo.admitted += 1;
            if identity.is_none() {
                identity = admitted.identity;
            }
            expires_in = match (expires_in, admitted.expires_in) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (a, b) => a.or(b),
            };
        }
        // Every step admitted: the runtime releases them when the connection ends.
        undo.admitted = 0;
        let admitted = identity.map_or_else(Admitted::anonymous, Admitted::user);
        Ok(match expires_in {
            Some(left) => admitted.expiring_in(left),
            None => admitted,
        })
    }

    fn release(&self, info: &ConnectionInfo) {
        for step in self.steps.iter().rev() {
            step.release(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use chat_core::{UserId, Username};

    use super::*;

    /// Admits (or refuses) and counts its admits and releases.
    #[derive(Clone)]
    struct Step {
        result: Result<Admitted, Rejection>,
        admits: Arc<AtomicUsize>,
        releases: Arc<AtomicUsize>,
    }

    impl Step {
        fn new(result: Result<Admitted, Rejection>) -> Self {
            Step {
                result,
                admits: Arc::default(),
                releases: Arc::default(),
            }
        }

        fn counts(&self) -> (usize, usize) {
            (
                self.admits.load(Ordering::SeqCst),
                self.releases.load(Ordering::SeqCst),
            )
        }
    }

    #[async_trait]
    impl Admission for Step {
        async fn admit(&self, _: &ConnectionInfo) -> Result<Admitted, Rejection> {
            self.admits.fetch_add(1, Ordering::SeqCst);
            self.result.clone()
        }

        fn release(&self, _: &ConnectionInfo) {
            self.releases.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn identity(id: &str) -> Identity {
        Identity {
            user_id: UserId::parse(id).expect("valid id"),
            username: Username::parse(id).expect("valid name"),
        }
    }

    #[tokio::test]
    async fn an_empty_chain_admits_anonymously() {
        let admitted = Chain::new()
            .admit(&ConnectionInfo::default())
            .await
            .expect("admitted");
        assert_eq!(admitted, Admitted::anonymous());
    }

    #[tokio::test]
    async fn the_first_refusal_wins_and_earlier_steps_are_released() {
        let first = Step::new(Ok(Admitted::anonymous()));
        let refuses = Step::new(Err(Rejection::Unauthorized("no".into())));
        let never = Step::new(Ok(Admitted::anonymous()));
        let chain = Chain::new()
            .then(first.clone())
            .then(refuses.clone())
            .then(never.clone());
        let why = chain
            .admit(&ConnectionInfo::default())
            .await
            .expect_err("refused");
        assert_eq!(why.status(), 401);
        assert_eq!(first.counts(), (1, 1));
        assert_eq!(refuses.counts(), (1, 0));
        assert_eq!(never.counts(), (0, 0));
    }

    #[tokio::test]
    async fn identities_and_expiries_are_merged_and_every_step_is_released() {
        let plain = Step::new(Ok(
            Admitted::anonymous().expiring_in(Duration::from_secs(50))
        ));
        let alice = Step::new(Ok(
            Admitted::user(identity("alice")).expiring_in(Duration::from_secs(90))
        ));
        let bob = Step::new(Ok(Admitted::user(identity("bob"))));
        let chain = Chain::new()
            .then(plain.clone())
            .then_maybe(None::<Step>)
            .then(alice.clone())
            .then_maybe(Some(bob.clone()));
        assert_eq!(chain.len(), 3);
        let info = ConnectionInfo::default();
        let admitted = chain.admit(&info).await.expect("admitted");
        assert_eq!(admitted.identity, Some(identity("alice")));
        assert_eq!(admitted.expires_in, Some(Duration::from_secs(50)));
        chain.release(&info);
        for step in [plain, alice, bob] {
            assert_eq!(step.counts(), (1, 1));
        }
    }

    /// A step that never answers (a database that hangs).
    struct Stall;

    #[async_trait]
    impl Admission for Stall {
        async fn admit(&self, _: &ConnectionInfo) -> Result<Admitted, Rejection> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_chain_dropped_mid_admission_releases_the_steps_that_admitted() {
        let counted = Step::new(Ok(Admitted::anonymous()));
        let never = Step::new(Ok(Admitted::anonymous()));
        let chain = Chain::new()
            .then(counted.clone())
            .then(Stall)
            .then(never.clone());
        let info = ConnectionInfo::default();
        // What the runtime's admission timeout does: drop the future while it waits.
        let timed_out = tokio::time::timeout(Duration::from_millis(20), chain.admit(&info)).await;
        assert!(timed_out.is_err(), "the stalled step never answers");
        assert_eq!(
            counted.counts(),
            (1, 1),
            "released when the future was dropped"
        );
        assert_eq!(never.counts(), (0, 0));
    }
}
