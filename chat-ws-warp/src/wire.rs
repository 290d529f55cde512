//! The write side of a WebSocket we serve on a plain `TcpStream`: server frames written
//! by us with vectored writes, and tungstenite's own control replies slotted in between
//! them.
//!
//! # Why not tungstenite's writer
//!
//! tungstenite copies every frame into its write buffer, and that buffer keeps the
//! capacity of the largest batch it ever held for the connection's whole life (a few KB
//! per idle connection after its join replies); `futures_util`'s `split` adds a lock and
//! waker proxies on every poll. Here a batch goes out as one `writev`: a header of at
//! most 10 bytes per frame (on the stack) and the frame's shared `Bytes` itself — the
//! one allocation every recipient of a broadcast shares, never copied. Between batches
//! the wire holds nothing but its flags (see [`State`]).
//!
//! # Two writers, one byte stream
//!
//! tungstenite still reads the socket (over [`ControlShim`]), and reading makes it
//! write: a pong for each ping, the reply to the peer's close. Those replies arrive
//! through the shim's `AsyncWrite` at any time — also while a batch of ours is half
//! written — and must never land inside one of our frames. Both sides therefore write
//! through one [`Wire`]: the write half of the socket and a small queue of what must go
//! out before anything else, behind a mutex that is only held while a write is being
//! attempted (never across an `.await`):
//!
//! * our batches are written straight from the caller's slice; only when a write stops
//!   in the middle of a frame does that frame (a reference to it, not a copy) go into the
//!   queue, so whoever writes next finishes it first;
//! * a control reply is queued after the frame in progress (if any) and after the
//!   replies already queued — at the next frame boundary, never behind the rest of a
//!   large batch;
//! * either side drains the queue when it writes: the writer before its next frames,
//!   the shim when tungstenite flushes (so a pong leaves while the writer is idle, and
//!   the reply to a peer's close leaves before the runtime drops the connection).
//!
//! The runtime polls a connection's reader and writer from one task
//! (`chat-core/src/runtime/connection.rs`), so the mutex is never contended and both
//! sides register the same task with the socket's write readiness. Should they be
//! polled from two tasks, the side that waits on the socket wakes the other whenever
//! it makes progress, so neither is forgotten.
//!
//! Once a close frame is queued — ours, or tungstenite's reply to the peer's close —
//! nothing follows it: data is refused ([`SendError::Closed`]) and tungstenite's later
//! writes (a pong, or its reply to the peer answering *our* close) are discarded, so
//! the peer never gets a second close frame.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::frame::{self, Head};

/// Frames per `writev`: two slices each (header, payload), 128 slices in all — well
/// under every system's `IOV_MAX` (1024 on Linux), and the runtime's default batch
/// (`write_batch`, 64) in one call. Longer batches take several calls.
const FRAMES_PER_WRITE: usize = 64;

/// The slices of one `writev`, on the stack (a `SmallVec`'s inline storage is not
/// initialised, unlike an array's: no 2 KiB cleared per batch).
type Slices<'a> = SmallVec<[IoSlice<'a>; 2 * FRAMES_PER_WRITE]>;

/// The headers of one `writev`'s frames, on the stack.
type Heads = SmallVec<[Head; FRAMES_PER_WRITE]>;

/// Most bytes of tungstenite's control replies queued at once: 1 KiB (eight of the
/// largest control frames). Beyond it the shim makes tungstenite wait: tungstenite then
/// holds the replies in its own buffer, capped on this path at a few KiB past which it
/// keeps only the latest pong (`socket::direct_config`), so a peer flooding pings at a
/// socket it does not read grows neither.
const MAX_REPLY_BYTES: usize = 1024;

/// Why a frame could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// A close frame was already queued (ours or tungstenite's reply to the peer's).
    Closed,
    /// Writing to the socket failed.
    Io(io::Error),
}

impl From<io::Error> for SendError {
    fn from(err: io::Error) -> Self {
        SendError::Io(err)
    }
}

/// Who is polling the wire: each side keeps its own waker slot (see [`State::waiting`]).
#[derive(Debug, Clone, Copy)]
enum Side {
    /// The `Outbound` half, writing batches, pings and the close.
    Writer = 0,
    /// The shim under tungstenite, writing its control replies.
    Reader = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Writer => Side::Reader,
            Side::Reader => Side::Writer,
        }
    }
}

/// The write side of one connection, shared by its `Outbound` half and its
/// [`ControlShim`].
#[derive(Debug)]
pub(crate) struct Wire {
    state: Mutex<State>,
}

/// What a queued frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One of our data frames whose beginning was written.
    Data,
    /// tungstenite's control replies: whole frames, already encoded.
    Reply,
    /// Our close frame: always the last thing queued.
    Close,
}

/// A frame (or, for [`Kind::Reply`], a run of whole frames) still to be written.
#[derive(Debug)]
struct Queued {
    head: Head,
    payload: Bytes,
    kind: Kind,
}

impl Queued {
    fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }
}

#[derive(Debug)]
struct State {
    io: OwnedWriteHalf,
    /// What must be written before anything else, in order: at most one data frame
    /// already begun (first), control replies, our close frame (last). Empty between
    /// batches; an empty `VecDeque` holds no allocation, and the queue's is released
    /// whenever it empties.
    queue: VecDeque<Queued>,
    /// Bytes of the queue's first entry already written.
    written: usize,
    /// Bytes of [`Kind::Reply`] entries in the queue (bounded by [`MAX_REPLY_BYTES`]).
    reply_bytes: usize,
    /// A close frame was queued: nothing may follow it.
    closing: bool,
    /// The write side was shut down (after our close frame).
    shut_down: bool,
    /// A write failed: every later write fails the same way.
    failed: Option<io::ErrorKind>,
    /// The wakers of a side that is waiting for the wire to make progress, by [`Side`].
    waiting: [Option<Waker>; 2],
}

impl Wire {
    /// The wire over a socket's write half.
    pub(crate) fn new(io: OwnedWriteHalf) -> Wire {
        Wire {
            state: Mutex::new(State {
                io,
                queue: VecDeque::new(),
                written: 0,
                reply_bytes: 0,
                closing: false,
                shut_down: false,
                failed: None,
                waiting: [None, None],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent between statements that can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `frames` as whole frames with `opcode`, in order, after whatever the wire
    /// must write first. Returns once the last byte is in the socket.
    ///
    /// Cancel-safe in the sense the runtime needs: dropped midway, the frames not begun
    /// are simply not sent, and a frame begun is finished by the next write (a `close`,
    /// or tungstenite's next reply), so the byte stream stays well-formed.
    pub(crate) async fn send(&self, opcode: u8, frames: &[Bytes]) -> Result<(), SendError> {
        let mut next = 0;
        std::future::poll_fn(|cx| self.lock().poll_send(cx, opcode, frames, &mut next)).await
    }

    /// Writes what the wire holds: tungstenite's replies, and a frame of ours begun in
    /// front of them.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.lock().poll_drain(cx, Side::Reader)).await
    }

    /// Queues our close frame with `code` and `reason` (cut to fit), unless a close
    /// frame was already queued; then writes everything queued and shuts the write side
    /// down (TCP FIN). The peer's close reply is left to tungstenite to read.
    pub(crate) async fn close(&self, code: u16, reason: &str) -> io::Result<()> {
        self.lock().queue_close(code, reason);
        std::future::poll_fn(|cx| self.lock().poll_shutdown(cx)).await
    }
}

impl State {
    /// Forgets a stale waker of `side` (it is being polled now).
    fn polled(&mut self, side: Side) {
        self.waiting[side as usize] = None;
    }

    /// `side` waits for the wire: it is woken when the other side makes progress.
    fn wait(&mut self, side: Side, cx: &Context<'_>) {
        let slot = &mut self.waiting[side as usize];
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }

    /// `side` made progress: the other side, if it waits, may now go on.
    fn progressed(&mut self, side: Side) {
        if let Some(waker) = self.waiting[side.other() as usize].take() {
            waker.wake();
        }
    }

    fn error(&self) -> Option<io::Error> {
        self.failed
            .map(|kind| io::Error::new(kind, "an earlier write failed"))
    }

    /// Records a failed write: nothing more will be written.
    fn fail(&mut self, side: Side, err: io::Error) -> io::Error {
        self.failed = Some(err.kind());
        self.queue = VecDeque::new();
        self.written = 0;
        self.reply_bytes = 0;
        self.progressed(side);
        err
    }

    /// `n` more bytes of the queue were written: drops the entries they finish.
    fn advance(&mut self, n: usize) {
        let mut n = self.written + n;
        while let Some(front) = self.queue.front() {
            let len = front.len();
            if n < len {
                break;
            }
            n -= len;
            if front.kind == Kind::Reply {
                self.reply_bytes -= len;
            }
            self.queue.pop_front();
        }
        self.written = n;
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            // Nothing is kept between batches: a partial write or a reply is rare, an
            // allocation then is cheaper than holding it on every idle connection.
            self.queue = VecDeque::new();
        }
    }

    /// Writes the queue until it is empty (`Ready(Ok)`), the socket is full
    /// (`Pending`, woken when it can take more) or a write fails.
    fn poll_drain(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<io::Result<()>> {
        self.polled(side);
        loop {
            if let Some(err) = self.error() {
                return Poll::Ready(Err(err));
            }
            if self.queue.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let polled = {
                let mut slices = Slices::new();
                for (i, queued) in self.queue.iter().take(FRAMES_PER_WRITE).enumerate() {
                    let skip = if i == 0 { self.written } else { 0 };
                    let head = queued.head.as_slice();
                    if skip < head.len() {
                        slices.push(IoSlice::new(&head[skip..]));
                        slices.push(IoSlice::new(&queued.payload));
                    } else {
                        slices.push(IoSlice::new(&queued.payload[skip - head.len()..]));
                    }
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices)
            };
            match polled {
                Poll::Pending => {
                    self.wait(side, cx);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    let err = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(self.fail(side, err)));
                }
                Poll::Ready(Ok(n)) => {
                    self.advance(n);
                    self.progressed(side);
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(self.fail(side, err))),
            }
        }
    }

    /// [`Wire::send`]'s state machine: `next` is the first frame of `frames` not yet
    /// written or queued.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        opcode: u8,
        frames: &[Bytes],
        next: &mut usize,
    ) -> Poll<Result<(), SendError>> {
        loop {
            // What was begun (a frame of an earlier, cancelled batch; a reply) first.
            match self.poll_drain(cx, Side::Writer) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                Poll::Pending => return Poll::Pending,
            }
            if *next == frames.len() {
                return Poll::Ready(Ok(()));
            }
            if self.closing || self.shut_down {
                return Poll::Ready(Err(SendError::Closed));
            }
            let chunk = &frames[*next..frames.len().min(*next + FRAMES_PER_WRITE)];
            let heads: Heads = chunk
                .iter()
                .map(|payload| Head::new(opcode, payload.len()))
                .collect();
            let polled = {
                let mut slices = Slices::new();
                for (head, payload) in heads.iter().zip(chunk) {
                    slices.push(IoSlice::new(head.as_slice()));
                    slices.push(IoSlice::new(payload));
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices)
            };
            let written = match polled {
                Poll::Pending => {
                    self.wait(Side::Writer, cx);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    let err = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(self.fail(Side::Writer, err).into()));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => {
                    return Poll::Ready(Err(self.fail(Side::Writer, err).into()));
                }
            };
            self.progressed(Side::Writer);
            // Whole frames are done; a frame cut in the middle is queued (a reference to
            // its payload) so that whoever writes next finishes it first.
            let mut left = written;
            for (head, payload) in heads.iter().zip(chunk) {
                let len = head.len() + payload.len();
                if left >= len {
                    left -= len;
                    *next += 1;
                    continue;
                }
                if left > 0 {
                    self.queue.push_back(Queued {
                        head: *head,
                        payload: payload.clone(),
                        kind: Kind::Data,
                    });
                    self.written = left;
                    *next += 1;
                }
                break;
            }
        }
    }

    /// Queues our close frame unless a close frame was queued already.
    fn queue_close(&mut self, code: u16, reason: &str) {
        if self.closing || self.shut_down || self.failed.is_some() {
            return;
        }
        let payload = frame::close_payload(code, reason);
        self.queue.push_back(Queued {
            head: Head::new(frame::CLOSE, payload.len()),
            payload,
            kind: Kind::Close,
        });
        self.closing = true;
    }

    /// Writes what is queued, then shuts the write side down (once).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx, Side::Writer) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if self.shut_down {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Ready(Ok(())) => {
                self.shut_down = true;
                self.closing = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(self.fail(Side::Writer, err))),
            Poll::Pending => {
                self.wait(Side::Writer, cx);
                Poll::Pending
            }
        }
    }

    /// Takes tungstenite's control replies (whole frames): queued at the next frame
    /// boundary, or discarded once a close frame was queued.
    fn poll_reply(&mut self, cx: &Context<'_>, frames: &[u8]) -> Poll<io::Result<usize>> {
        self.polled(Side::Reader);
        if let Some(err) = self.error() {
            return Poll::Ready(Err(err));
        }
        if self.closing || self.shut_down || frames.is_empty() {
            return Poll::Ready(Ok(frames.len()));
        }
        if self.reply_bytes > 0 && self.reply_bytes + frames.len() > MAX_REPLY_BYTES {
            self.wait(Side::Reader, cx);
            return Poll::Pending;
        }
        // After the frame being written (if one was begun) and the replies before it.
        let mut at = usize::from(self.written > 0);
        while self
            .queue
            .get(at)
            .is_some_and(|queued| queued.kind == Kind::Reply)
        {
            at += 1;
        }
        self.queue.insert(
            at,
            Queued {
                head: Head::NONE,
                payload: Bytes::copy_from_slice(frames),
                kind: Kind::Reply,
            },
        );
        self.reply_bytes += frames.len();
        // The reply to the peer's close ends what we may send.
        if frame::holds_close(frames) {
            self.closing = true;
        }
        Poll::Ready(Ok(frames.len()))
    }
}

/// The stream tungstenite reads from and writes its control replies to: reads come from
/// the socket's read half (hyper's pre-read bytes are handed to tungstenite when the
/// socket is built), writes go to the [`Wire`], at a frame boundary.
#[derive(Debug)]
pub(crate) struct ControlShim {
    read: OwnedReadHalf,
    wire: Arc<Wire>,
}

impl ControlShim {
    /// The shim over a socket's read half and the wire of its write half.
    pub(crate) fn new(read: OwnedReadHalf, wire: Arc<Wire>) -> ControlShim {
        ControlShim { read, wire }
    }

    /// The wire the shim hands tungstenite's replies to.
    pub(crate) fn wire(&self) -> &Wire {
        &self.wire
    }
}

impl AsyncRead for ControlShim {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlShim {
    /// Queues the replies and writes them at once if the wire is free: tungstenite does
    /// not flush after its reply to the peer's close (it ends the stream instead).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.wire.lock();
        let taken = std::task::ready!(state.poll_reply(cx, buf))?;
        // Taken either way; a failed write shows on the next call, a full socket is
        // waited for by the next flush (or `Wire::flush`).
        let _ = state.poll_drain(cx, Side::Reader);
        Poll::Ready(Ok(taken))
    }

    /// Writes what the wire holds (the replies, and a frame of ours in front of them).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wire.lock().poll_drain(cx, Side::Reader)
    }

    /// tungstenite only shuts the stream down when asked to close through its sink,
    /// which is not used here: our close goes through [`Wire::close`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
