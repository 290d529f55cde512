//! The bounded outbound queue of one connection, and the slow-reader policy.
//!
//! The hub must never wait for a peer: it pushes encoded frames into each recipient's
//! queue synchronously and moves on, and the connection's writer drains the queue at the
//! pace of the network. A peer that reads slower than it is written to would make such a
//! queue grow without end, so it is bounded twice — by frame count and by bytes — and a
//! full queue applies this policy, in order:
//!
//! 1. a new **droppable** frame (a typing indicator, see
//!    [`ServerEvent::is_droppable`](crate::ServerEvent::is_droppable)) is refused;
//! 2. a new frame that must be delivered first **evicts every queued droppable frame**
//!    (they are stale anyway: the reader is behind);
//! 3. if it still does not fit, the reader is hopeless: the queue is emptied (its memory
//!    is freed at once) and the connection is closed with
//!    [`CloseCode::TRY_AGAIN_LATER`] (1013), reason `"slow reader"`.
//!
//! Dropping typing indicators can leave a slow client showing a stale "is typing" (its
//! `isTyping: false` may be among the dropped); clients should expire indicators
//! themselves after the engine's typing timeout, as the bundled web client does.
//!
//! So whatever a peer does, a connection holds at most `max_frames` frames and
//! `max_bytes` bytes plus one frame here (the budget is checked before a frame is added,
//! so one large legitimate frame — a full resume — is always accepted), plus the
//! writer's one batch in flight.
//!
//! Every queue also counts its bytes — queued, and taken by the writer but not yet
//! written (a batch is at most [`BATCH_MAX_BYTES`] or one frame) — in one server-wide
//! [`GlobalBudget`]. The queue never refuses a frame for it; the hub, after each turn,
//! closes the connections holding the most while the total is over the budget (see
//! `Hub::shed_outbound` and ARCHITECTURE.md decision 11), and a writer abandons a send in
//! progress as soon as its queue is closed without flushing. Such a close gives back the
//! queued bytes and the batch in flight at once, so shedding stops as soon as the total
//! is under the budget; a writer's finished batch is given back when it asks for the
//! next one. The hub counts each event once in the budget for all its recipients.
//!
//! The queue also carries the end of the connection: a close that waits for the queued
//! frames to be written (an engine close, server shutdown), a close that discards them
//! (slow reader), or abandonment (the peer is gone; nothing more will be written).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::transport::CloseCode;

/// The server-wide count of outbound bytes: what every queue holds plus what every
/// writer has taken and not yet finished writing (its batch in flight). Shared by all
/// queues; the hub sheds the largest holders when it is over `max` (see
/// `Hub::shed_outbound`).
#[derive(Debug)]
pub(crate) struct GlobalBudget {
    used: AtomicUsize,
    pub(crate) max: usize,
}

impl GlobalBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes held across all connections now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes about to be queued. The hub adds once per event, for every
    /// recipient it may push to, before pushing, and gives back what was not queued
    /// (see `Hub::deliver`): one atomic on this shared cache line per event rather than
    /// per recipient, and the count never dips below what is held.
    pub(crate) fn add(&self, n: usize) {
        if n > 0 {
            self.used.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Gives back `n` bytes counted by [`GlobalBudget::add`] but not queued.
    pub(crate) fn sub(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Most bytes one writer batch takes from the queue (at least one frame): what a writer
/// holds outside its queue is bounded by this plus one frame, not by `write_batch`
/// frames of any size.
pub(crate) const BATCH_MAX_BYTES: usize = 256 * 1024;

/// Bounds of one connection's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Most frames queued.
    pub(crate) max_frames: usize,
    /// Most bytes queued (sum of frame lengths).
    pub(crate) max_bytes: usize,
}

/// One queued frame: the shared encoded bytes plus whether the policy may drop it.
#[derive(Debug)]
struct Frame {
    bytes: Bytes,
    droppable: bool,
}

/// Where the queue is in the connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting frames.
    Open,
    /// Write what is queued, then close with this code. New frames are refused.
    CloseAfterFlush(CloseCode, &'static str),
    /// Close with this code without writing anything more (the queue is empty).
    CloseNow(CloseCode, &'static str),
    /// The writer has taken the close, or the peer is gone: nothing more happens.
    Done,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Bytes the writer has taken and not yet reported written.
    in_flight: usize,
    droppable: usize,
    phase: Phase,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; `evicted` droppable frames were dropped to make room.
    Queued {
        /// Droppable frames evicted.
        evicted: usize,
    },
    /// A droppable frame refused because the queue is full.
    Dropped,
    /// The queue overflowed: it was emptied and the connection is now closing with 1013.
    /// `evicted` droppable frames were dropped on the way.
    Overflow {
        /// Droppable frames evicted before giving up.
        evicted: usize,
    },
    /// The connection is closing or gone; the frame was discarded.
    Closed,
}

/// What the writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Frames were moved into the writer's batch.
    Frames,
    /// Close the connection with this code and reason, then stop.
    Close(CloseCode, &'static str),
    /// Stop without closing (the peer is gone).
    Done,
}

/// Ring-buffer slots an empty queue may keep; above this it shrinks (see `next`).
const SHRINK_ABOVE: usize = 256;

/// The reason sent with a 1013 close when a queue overflows.
pub(crate) const SLOW_READER: &str = "slow reader";

/// A bounded single-consumer frame queue shared by the hub (producer) and one writer.
///
/// Critical sections are a few pointer moves; a `std` mutex is cheaper than an async
/// one here and is never held across an `.await`.
#[derive(Debug)]
pub(crate) struct OutboundQueue {
    limits: QueueLimits,
    global: std::sync::Arc<GlobalBudget>,
    state: Mutex<State>,
    /// Wakes the writer. `notify_one` stores a permit when the writer is not waiting, so
    /// a push between the writer's check and its wait is not lost.
    wake: Notify,
    /// Wakes a writer waiting in [`OutboundQueue::cancelled`].
    cancel: Notify,
}

impl Drop for OutboundQueue {
    fn drop(&mut self) {
        // Whatever is still counted (a writer aborted mid-send) leaves the budget with
        // the queue, so the global count can never leak.
        let s = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.global.sub(s.bytes + s.in_flight);
    }
}

impl OutboundQueue {
    pub(crate) fn new(limits: QueueLimits, global: std::sync::Arc<GlobalBudget>) -> Self {
        OutboundQueue {
            limits,
            global,
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                in_flight: 0,
                droppable: 0,
                phase: Phase::Open,
            }),
            wake: Notify::new(),
            cancel: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent in a way
        // that matters more than losing the connection, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one frame, applying the slow-reader policy (see the module docs). Never
    /// waits and never allocates beyond the queue's bounded ring buffer.
    ///
    /// The caller has already counted the frame in the global budget
    /// ([`GlobalBudget::add`]) and gives it back unless the answer is
    /// [`Pushed::Queued`]; the queue gives back whatever it discards later.
    pub(crate) fn push(&self, bytes: Bytes, droppable: bool) -> Pushed {
        let mut s = self.lock();
        if s.phase != Phase::Open {
            return Pushed::Closed;
        }
        let len = bytes.len();
        let mut evicted = 0;
        if !self.fits(&s, len) {
            if droppable {
                return Pushed::Dropped;
            }
            if s.droppable > 0 {
                evicted = s.droppable;
                s.frames.retain(|f| !f.droppable);
                let kept: usize = s.frames.iter().map(|f| f.bytes.len()).sum();
                self.global.sub(s.bytes - kept);
                s.bytes = kept;
                s.droppable = 0;
            }
            if !self.fits(&s, len) {
                s.frames = VecDeque::new();
                // The batch in flight is given back too: the writer's send is cancelled
                // and the batch dropped, and the hub's shedding must see it gone now.
                self.global.sub(s.bytes + std::mem::take(&mut s.in_flight));
                s.bytes = 0;
                s.phase = Phase::CloseNow(CloseCode::TRY_AGAIN_LATER, SLOW_READER);
                drop(s);
                self.wake.notify_one();
                self.cancel.notify_waiters();
                return Pushed::Overflow { evicted };
            }
        }
        let was_empty = s.frames.is_empty();
        s.bytes += len;
        s.droppable += usize::from(droppable);
        s.frames.push_back(Frame { bytes, droppable });
        drop(s);
        if was_empty {
            // The writer only waits on an empty queue.
            self.wake.notify_one();
        }
        Pushed::Queued { evicted }
    }

    /// The byte budget is checked before a frame is added, not after: a frame is
    /// admitted while less than `max_bytes` is queued. So the queue holds at most
    /// `max_bytes` plus one frame, and a single large but legitimate frame (a full
    /// resume is ~3 MB) is never mistaken for a slow reader, while a reader that lets the
    /// budget fill up still is.
    fn fits(&self, s: &State, _len: usize) -> bool {
        s.frames.is_empty()
            || (s.frames.len() < self.limits.max_frames && s.bytes < self.limits.max_bytes)
    }

    /// Refuses new frames and closes with `code` once the queued ones are written.
    /// Returns whether this call decided the close (false when one was under way).
    pub(crate) fn close_after_flush(&self, code: CloseCode, reason: &'static str) -> bool {
        self.set_phase(|p| match p {
            Phase::Open => Some(Phase::CloseAfterFlush(code, reason)),
            _ => None,
        })
    }

    /// Discards queued frames and closes as soon as the writer is free. Returns whether
    /// this call decided the close. A close-after-flush under way keeps its code and
    /// reason (the original cause) but stops waiting for the flush.
    pub(crate) fn close_now(&self, code: CloseCode, reason: &'static str) -> bool {
        let mut decided = false;
        self.set_phase(|p| match p {
            Phase::Open => {
                decided = true;
                Some(Phase::CloseNow(code, reason))
            }
            Phase::CloseAfterFlush(code, reason) => Some(Phase::CloseNow(code, reason)),
            _ => None,
        });
        decided
    }

    /// The peer is gone: discard everything; the writer stops without closing.
    pub(crate) fn abandon(&self) {
        self.set_phase(|_| Some(Phase::Done));
    }

    fn set_phase(&self, f: impl FnOnce(Phase) -> Option<Phase>) -> bool {
        let mut s = self.lock();
        let Some(phase) = f(s.phase) else {
            return false;
        };
        s.phase = phase;
        if !matches!(phase, Phase::CloseAfterFlush(..)) {
            s.frames = VecDeque::new();
            // The writer's batch in flight is cancelled (see `cancelled`) and dropped, so
            // it leaves the budget now: `Hub::shed_outbound` runs its loop before any
            // writer can, and would otherwise close more connections than needed.
            // The writer's next `next` then gives back nothing.
            self.global.sub(s.bytes + std::mem::take(&mut s.in_flight));
            s.bytes = 0;
            s.droppable = 0;
        }
        drop(s);
        self.wake.notify_one();
        if matches!(phase, Phase::CloseNow(..) | Phase::Done) {
            self.cancel.notify_waiters();
        }
        true
    }

    /// Waits until there is something to do. Moves up to `max` frames into `batch`
    /// (which the caller empties after writing), or says to close or stop.
    ///
    /// Cancel-safe: frames move into `batch` only in the poll that returns them.
    ///
    /// Calling it says the previous batch is finished (written, failed or cancelled):
    /// its bytes leave the global budget here, in the lock taken anyway, rather than in
    /// a lock of their own per batch.
    pub(crate) async fn next(&self, batch: &mut Vec<Bytes>, max: usize) -> Next {
        loop {
            {
                let mut s = self.lock();
                self.global.sub(std::mem::take(&mut s.in_flight));
                match s.phase {
                    Phase::Open | Phase::CloseAfterFlush(..) if !s.frames.is_empty() => {
                        let max = max.max(1);
                        let State {
                            frames,
                            bytes,
                            in_flight,
                            droppable,
                            ..
                        } = &mut *s;
                        let mut taken = 0;
                        batch.reserve(frames.len().min(max.saturating_sub(batch.len())));
                        while let Some(f) = frames.front() {
                            let len = f.bytes.len();
                            if batch.len() == max || (taken > 0 && taken + len > BATCH_MAX_BYTES) {
                                break;
                            }
                            let Some(f) = frames.pop_front() else { break };
                            taken += len;
                            *bytes -= len;
                            *in_flight += len;
                            *droppable -= usize::from(f.droppable);
                            batch.push(f.bytes);
                        }
                        // A burst grows the ring buffer up to `max_frames` slots; give
                        // that memory back once the reader has caught up, so thousands of
                        // idle connections do not each keep their largest burst's size.
                        if frames.is_empty() && frames.capacity() > SHRINK_ABOVE {
                            frames.shrink_to(SHRINK_ABOVE / 4);
                        }
                        return Next::Frames;
                    }
                    Phase::Open => {}
                    Phase::CloseAfterFlush(code, reason) | Phase::CloseNow(code, reason) => {
                        s.phase = Phase::Done;
                        return Next::Close(code, reason);
                    }
                    Phase::Done => return Next::Done,
                }
            }
            self.wake.notified().await;
        }
    }

    /// Bytes this connection holds: queued plus the writer's batch in flight.
    pub(crate) fn held(&self) -> usize {
        let s = self.lock();
        s.bytes + s.in_flight
    }

    /// Resolves once the queue is told to close without flushing (or the peer is
    /// gone), so a writer stuck in a send to a peer that does not read can give up its
    /// batch at once instead of at the write timeout.
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.cancel.notified();
            if matches!(self.lock().phase, Phase::CloseNow(..) | Phase::Done) {
                return;
            }
            notified.await;
        }
    }

    /// Counts the frame in the global budget as `Hub::deliver` does, then pushes it.
    #[cfg(test)]
    pub(crate) fn push_counted(&self, bytes: Bytes, droppable: bool) -> Pushed {
        let len = bytes.len();
        self.global.add(len);
        let pushed = self.push(bytes, droppable);
        if !matches!(pushed, Pushed::Queued { .. }) {
            self.global.sub(len);
        }
        pushed
    }

    /// Frames and bytes currently queued (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        let s = self.lock();
        (s.frames.len(), s.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(max_frames: usize, max_bytes: usize) -> OutboundQueue {
        OutboundQueue::new(
            QueueLimits {
                max_frames,
                max_bytes,
            },
            std::sync::Arc::new(GlobalBudget::new(usize::MAX)),
        )
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    async fn drain(q: &OutboundQueue) -> (Vec<Bytes>, Next) {
        let mut all = Vec::new();
        loop {
            let mut batch = Vec::new();
            match q.next(&mut batch, 2).await {
                Next::Frames => all.extend(batch),
                other => return (all, other),
            }
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_batches() {
        let q = q(10, 1000);
        for s in ["a", "b", "c"] {
            assert_eq!(q.push(b(s), false), Pushed::Queued { evicted: 0 });
        }
        let mut batch = Vec::new();
        assert_eq!(q.next(&mut batch, 2).await, Next::Frames);
        assert_eq!(batch, [b("a"), b("b")]);
        q.close_after_flush(CloseCode::GOING_AWAY, "bye");
        assert_eq!(q.push(b("d"), false), Pushed::Closed);
        let (rest, end) = drain(&q).await;
        assert_eq!(rest, [b("c")]);
        assert_eq!(end, Next::Close(CloseCode::GOING_AWAY, "bye"));
        assert_eq!(q.next(&mut batch, 2).await, Next::Done);
    }

    #[tokio::test]
    async fn full_queue_refuses_droppable_frames() {
        let q = q(2, 1000);
        q.push(b("m1"), false);
        q.push(b("t1"), true);
        assert_eq!(q.push(b("t2"), true), Pushed::Dropped);
        assert_eq!(q.len(), (2, 4));
    }

    #[tokio::test]
    async fn required_frame_evicts_droppable_ones() {
        let q = q(3, 1000);
        q.push(b("t1"), true);
        q.push(b("m1"), false);
        q.push(b("t2"), true);
        assert_eq!(q.push(b("m2"), false), Pushed::Queued { evicted: 2 });
        q.close_after_flush(CloseCode::NORMAL, "");
        let (frames, _) = drain(&q).await;
        assert_eq!(frames, [b("m1"), b("m2")]);
    }

    #[tokio::test]
    async fn overflow_empties_the_queue_and_closes_with_1013() {
        let q = q(2, 1000);
        q.push(b("m1"), false);
        q.push(b("t1"), true);
        q.push(b("m2"), false);
        assert_eq!(q.push(b("m3"), false), Pushed::Overflow { evicted: 0 });
        assert_eq!(q.len(), (0, 0));
        assert_eq!(q.push(b("m4"), false), Pushed::Closed);
        let (frames, end) = drain(&q).await;
        assert!(frames.is_empty());
        assert_eq!(end, Next::Close(CloseCode::TRY_AGAIN_LATER, SLOW_READER));
    }

    #[tokio::test]
    async fn byte_bound_applies() {
        let q = q(100, 5);
        q.push(b("abc"), false);
        assert_eq!(q.push(b("de"), false), Pushed::Queued { evicted: 0 });
        assert!(matches!(q.push(b("f"), false), Pushed::Overflow { .. }));
    }

    #[tokio::test]
    async fn a_large_frame_behind_a_small_one_is_admitted_and_then_the_budget_is_full() {
        // room_joined, then a history frame larger than the whole budget: both queued.
        let q = q(100, 5);
        q.push(b("ab"), false);
        assert_eq!(
            q.push(b("0123456789"), false),
            Pushed::Queued { evicted: 0 }
        );
        // The budget is now exhausted: the next frame means a slow reader.
        assert!(matches!(q.push(b("x"), false), Pushed::Overflow { .. }));
    }

    #[tokio::test]
    async fn oversized_frame_fits_an_empty_queue() {
        let q = q(100, 2);
        assert_eq!(q.push(b("abcdef"), false), Pushed::Queued { evicted: 0 });
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_its_burst_memory() {
        let q = q(10_000, usize::MAX);
        for _ in 0..5_000 {
            q.push(b("x"), false);
        }
        q.close_after_flush(CloseCode::NORMAL, "");
        drain(&q).await;
        assert!(q.lock().frames.capacity() <= SHRINK_ABOVE);
    }

    #[tokio::test]
    async fn abandon_discards_and_stops() {
        let q = q(10, 100);
        q.push(b("a"), false);
        q.abandon();
        assert_eq!(q.len(), (0, 0));
        assert_eq!(q.next(&mut Vec::new(), 4).await, Next::Done);
    }

    #[tokio::test]
    async fn close_now_cuts_a_pending_flush_but_keeps_its_cause() {
        let q = q(10, 100);
        q.push(b("a"), false);
        assert!(q.close_after_flush(CloseCode::GOING_AWAY, "shutdown"));
        assert!(!q.close_after_flush(CloseCode::POLICY, "again"));
        assert!(!q.close_now(CloseCode::TRY_AGAIN_LATER, "stuck"));
        assert_eq!(q.len(), (0, 0));
        assert_eq!(
            q.next(&mut Vec::new(), 4).await,
            Next::Close(CloseCode::GOING_AWAY, "shutdown")
        );
    }

    /// 10 connections each with a 256 KiB batch in flight and 100 KiB queued, against a
    /// budget that one close brings back under: shedding the way `Hub::shed_outbound`
    /// does closes exactly one, because a close gives back the batch in flight too.
    #[tokio::test]
    async fn a_close_gives_back_the_batch_in_flight_so_shedding_stops_in_time() {
        let global = std::sync::Arc::new(GlobalBudget::new(usize::MAX));
        let queues: Vec<_> = (0..10)
            .map(|_| {
                OutboundQueue::new(
                    QueueLimits {
                        max_frames: 100,
                        max_bytes: usize::MAX,
                    },
                    std::sync::Arc::clone(&global),
                )
            })
            .collect();
        let (in_flight, queued) = (vec![b'x'; BATCH_MAX_BYTES], vec![b'y'; 100 * 1024]);
        for q in &queues {
            q.push_counted(Bytes::from(in_flight.clone()), false);
            let mut batch = Vec::new();
            assert_eq!(q.next(&mut batch, 8).await, Next::Frames);
            q.push_counted(Bytes::from(queued.clone()), false);
        }
        let per_conn = BATCH_MAX_BYTES + 100 * 1024;
        assert_eq!(global.used(), 10 * per_conn);
        // A budget that one close brings back under.
        let budget_max = 9 * per_conn;
        let mut closed = Vec::new();
        while global.used() > budget_max {
            let Some((i, q)) = queues
                .iter()
                .enumerate()
                .filter(|(_, q)| q.held() > 0)
                .max_by_key(|(_, q)| q.held())
            else {
                break;
            };
            assert!(q.close_now(CloseCode::TRY_AGAIN_LATER, "server busy"));
            closed.push(i);
        }
        assert_eq!(closed.len(), 1, "one close met the budget");
        assert_eq!(global.used(), 9 * per_conn);
        // The cancelled writer asks for more and gets the close: nothing more is given
        // back.
        let mut batch = Vec::new();
        assert!(matches!(
            queues[closed[0]].next(&mut batch, 8).await,
            Next::Close(..)
        ));
        assert_eq!(global.used(), 9 * per_conn);
        // Abandonment gives back the batch in flight the same way.
        let other = usize::from(closed[0] == 0);
        queues[other].abandon();
        assert_eq!(global.used(), 8 * per_conn);
        // A writer done with its batch gives it back when it asks for the next one.
        let mut batch = Vec::new();
        let Some(busy) = (0..queues.len())
            .find(|i| *i != closed[0] && *i != other)
            .map(|i| &queues[i])
        else {
            panic!("ten queues");
        };
        assert_eq!(busy.next(&mut batch, 8).await, Next::Frames);
        assert_eq!(global.used(), 8 * per_conn - BATCH_MAX_BYTES);
        assert_eq!(busy.held(), 100 * 1024);
    }

    #[tokio::test]
    async fn writer_wakes_on_push() {
        let q = std::sync::Arc::new(q(10, 100));
        let q2 = q.clone();
        let writer = async move {
            let mut batch = Vec::new();
            q2.next(&mut batch, 4).await;
            batch
        };
        let pusher = async {
            tokio::task::yield_now().await;
            q.push(b("x"), false);
        };
        let (batch, ()) = tokio::join!(writer, pusher);
        assert_eq!(batch, [b("x")]);
    }
}
