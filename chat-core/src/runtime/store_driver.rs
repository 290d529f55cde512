//! Store operations driven by the hub itself: bounded, timed, panic-proof, and without a
//! task per operation.
//!
//! The engine asks for a store operation with a ticket and expects exactly one reply per
//! ticket. The [`StoreDriver`] turns each request into the store's future and polls it
//! **from the hub's task**:
//!
//! * **At once, inline.** A started operation is polled once right away. A store that
//!   answers without waiting (the in-memory store) is done there: its reply enters the
//!   engine in the same hub turn, with no task spawned, no timer armed and no wake-up.
//! * **Otherwise in the hub's select.** An operation that has to wait (a database round
//!   trip) joins a [`FuturesUnordered`] the hub polls among its inputs; its timer is
//!   created only then.
//! * **Bounded.** At most `concurrency` operations run at once
//!   ([`RuntimeConfig::store_concurrency`](super::RuntimeConfig::store_concurrency));
//!   further requests wait in a FIFO, started in order as running ones finish. A store
//!   that slows down therefore sees a bounded number of calls, not one per message.
//! * **Timed.** An operation fails with "the store did not answer within …" once
//!   `timeout` has passed **since the engine asked for it**, waiting for a slot included.
//!   A waiting request whose time ran out fails without reaching the store. Since
//!   requests wait in order and every running one ends by its own deadline, which is no
//!   later than those behind it, every request is answered by its deadline.
//! * **Panic-proof.** A store future that panics yields an ordinary failure reply for its
//!   ticket ("nothing was stored"), so the engine never waits forever.
//!
//! Replies are in completion order; the engine restores message order from tickets and
//! `seq`.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, Sleep};

use super::sleep_until;
use crate::engine::{StoreOp, StoreReply, StoreRequest, Ticket};
use crate::store::{Store, StoreError};

/// The kind of a store operation: for metrics, and to build a failure reply of the
/// right variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    AppendRoom,
    RoomPage,
    AppendDm,
    DmPage,
}

impl OpKind {
    fn of(op: &StoreOp) -> Self {
        match op {
            StoreOp::AppendRoom(_) => OpKind::AppendRoom,
            StoreOp::RoomPage { .. } => OpKind::RoomPage,
            StoreOp::AppendDm(_) => OpKind::AppendDm,
            StoreOp::DmPage { .. } => OpKind::DmPage,
        }
    }

    /// The `op` label of the store metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::AppendRoom => "append_room",
            OpKind::RoomPage => "room_page",
            OpKind::AppendDm => "append_dm",
            OpKind::DmPage => "dm_page",
        }
    }

    fn failed(self, e: StoreError) -> StoreReply {
        match self {
            OpKind::AppendRoom => StoreReply::RoomAppended(Err(e)),
            OpKind::RoomPage => StoreReply::RoomPage(Err(e)),
            OpKind::AppendDm => StoreReply::DmAppended(Err(e)),
            OpKind::DmPage => StoreReply::DmPage(Err(e)),
        }
    }
}

/// The error of an operation that ran out of time while the store was working on it:
/// *indeterminate*, because a commit may still land after the deadline (the client hears
/// `store_timeout` and may resend with the same clientMsgId).
fn timed_out(limit: Duration) -> StoreError {
    StoreError::indeterminate(format!(
        "the store did not answer within {} ms",
        limit.as_millis()
    ))
}

/// The error of a request whose time ran out while it waited for a place among the
/// operations in flight: it never reached the store, so nothing was stored.
fn expired_waiting(limit: Duration) -> StoreError {
    StoreError::unavailable(format!(
        "the store was busy: the request waited {} ms without starting",
        limit.as_millis()
    ))
}

/// How an operation ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The store answered (`Ok` or `Err`: see [`Finished::ok`]).
    Answered,
    /// Its time ran out, running or waiting.
    TimedOut,
    /// The store's future panicked.
    Panicked,
}

/// A finished operation: the reply for the engine and what metrics need.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) ticket: Ticket,
    pub(crate) kind: OpKind,
    pub(crate) reply: StoreReply,
    /// From the engine's request to the reply, waiting for a slot included.
    pub(crate) took: Duration,
    pub(crate) ending: Ending,
}

impl Finished {
    /// Whether the reply is a success.
    pub(crate) fn ok(&self) -> bool {
        match &self.reply {
            StoreReply::RoomAppended(r) => r.is_ok(),
            StoreReply::RoomPage(r) => r.is_ok(),
            StoreReply::DmAppended(r) => r.is_ok(),
            StoreReply::DmPage(r) => r.is_ok(),
        }
    }
}

type Work = Pin<Box<dyn Future<Output = StoreReply> + Send>>;

/// A request waiting for a slot.
#[derive(Debug)]
struct Waiting {
    request: StoreRequest,
    requested: Instant,
}

/// An operation that did not finish at its first poll.
struct Running {
    ticket: Ticket,
    kind: OpKind,
    requested: Instant,
    limit: Duration,
    work: Work,
    /// `None` when the deadline is too far away to represent.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Running {
    fn finish(&self, reply: StoreReply, ending: Ending, at: Instant) -> Finished {
        Finished {
            ticket: self.ticket,
            kind: self.kind,
            reply,
            took: at.saturating_duration_since(self.requested),
            ending,
        }
    }
}

/// Polls a store future, turning a panic into `Err`. A future that panicked is never
/// polled again (its owner finishes it).
fn poll_work(work: &mut Work, cx: &mut Context<'_>) -> Result<Poll<StoreReply>, ()> {
    catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))).map_err(|_| ())
}

impl Future for Running {
    type Output = Finished;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let this = &mut *self;
        let ending = match poll_work(&mut this.work, cx) {
            Ok(Poll::Ready(reply)) => {
                return Poll::Ready(this.finish(reply, Ending::Answered, super::now()));
            }
            Err(()) => Ending::Panicked,
            Ok(Poll::Pending) => {
                let due = this.deadline.as_mut().map(|d| d.as_mut().poll(cx));
                if due != Some(Poll::Ready(())) {
                    return Poll::Pending;
                }
                Ending::TimedOut
            }
        };
        Poll::Ready(this.failure(ending))
    }
}

impl Running {
    fn failure(&self, ending: Ending) -> Finished {
        let error = match ending {
            Ending::TimedOut => timed_out(self.limit),
            _ => StoreError::unavailable("the store failed (panicked)"),
        };
        self.finish(self.kind.failed(error), ending, super::now())
    }
}

/// Runs the engine's store requests for the hub. See the module docs.
pub(crate) struct StoreDriver {
    store: Arc<dyn Store>,
    timeout: Duration,
    concurrency: usize,
    waiting: VecDeque<Waiting>,
    running: FuturesUnordered<Running>,
}

impl StoreDriver {
    /// A driver running at most `concurrency` (at least 1) operations at once, each
    /// answered within `timeout` of its request.
    pub(crate) fn new(store: Arc<dyn Store>, timeout: Duration, concurrency: usize) -> Self {
        StoreDriver {
            store,
            timeout,
            concurrency: concurrency.max(1),
            waiting: VecDeque::new(),
            running: FuturesUnordered::new(),
        }
    }

    /// Takes a request made at `at`; it starts in [`StoreDriver::start`], in order.
    pub(crate) fn request(&mut self, request: StoreRequest, at: Instant) {
        self.waiting.push_back(Waiting {
            request,
            requested: at,
        });
    }

    /// Starts waiting requests, in order, while fewer than `concurrency` run, and
    /// returns the first that finished at once (it answered at its first poll, or its
    /// time had run out while it waited). `None` when nothing more can start now. Call
    /// it until `None` after [`request`](Self::request) and after a running operation
    /// finished.
    pub(crate) fn start(&mut self, at: Instant) -> Option<Finished> {
        while self.running.len() < self.concurrency {
            let Waiting { request, requested } = self.waiting.pop_front()?;
            let StoreRequest { ticket, op } = request;
            let kind = OpKind::of(&op);
            let deadline = requested.checked_add(self.timeout);
            if deadline.is_some_and(|d| d <= at) {
                return Some(Finished {
                    ticket,
                    kind,
                    reply: kind.failed(expired_waiting(self.timeout)),
                    took: at.saturating_duration_since(requested),
                    ending: Ending::TimedOut,
                });
            }
            let store = Arc::clone(&self.store);
            let work: Work = Box::pin(async move { op.perform(&*store).await });
            // The first poll happens here, outside any task's context: a store that
            // answers at once needs no waker, and one that does not is polled again by
            // `running` with the hub's own waker before it could be woken (a future
            // in a `FuturesUnordered` is polled once as soon as it is pushed).
            let mut cx = Context::from_waker(Waker::noop());
            let mut running = Running {
                ticket,
                kind,
                requested,
                limit: self.timeout,
                work,
                deadline: None,
            };
            match poll_work(&mut running.work, &mut cx) {
                Ok(Poll::Ready(reply)) => return Some(running.finish(reply, Ending::Answered, at)),
                Err(()) => return Some(running.failure(Ending::Panicked)),
                Ok(Poll::Pending) => {
                    running.deadline = deadline.map(|d| Box::pin(sleep_until(d)));
                    self.running.push(running);
                }
            }
        }
        None
    }

    /// The next running operation to finish; `None` at once when none runs.
    pub(crate) async fn next(&mut self) -> Option<Finished> {
        self.running.next().await
    }

    /// Operations running now.
    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing runs and nothing waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }
}
