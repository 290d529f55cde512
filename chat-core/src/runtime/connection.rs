//! One connection's life: admission, handshake, registration, then a reader and a
//! writer until either side ends it.
//!
//! Each accepted handshake gets one task running [`serve`]:
//!
//! 1. **Admission** ([`Admission::admit`]) decides, before any
//!    upgrade, whether the peer may connect and as whom; a refusal becomes
//!    [`Handshake::reject`]. Admission and then the upgrade are each bounded by
//!    `handshake_timeout` (an admission past it: 503, and no `release`).
//! 2. **Registration** with the hub gives the connection its [`ConnId`] and hands the hub
//!    the connection's [`OutboundQueue`].
//! 3. The **reader** receives frames, decodes them here (off the hub, which only sees
//!    typed commands) and forwards them over the hub's bounded channel. While that
//!    channel is full the reader does not read, so the peer meets TCP backpressure.
//!    A binary frame becomes `Malformed(Binary)` (the engine answers
//!    `binary_unsupported`); an oversized one closes the connection with 1009.
//! 4. The **writer** drains the outbound queue in batches (one [`Outbound::send`] and so
//!    one flush per batch) and runs the heartbeat: every `heartbeat_interval` it checks
//!    that something (a pong or any frame) arrived since its previous ping — if not, the
//!    peer is terminated — and pings again. A transport whose `ping` returns `Ok(false)`
//!    has no pings; heartbeats are then off for that connection.
//!
//! 5. **Expiry**: when admission said the connection may only stay for a while
//!    ([`Admitted::expires_in`], e.g. until its token's `exp`), the deadline is fixed on
//!    the runtime's clock at admission. When it passes, the reader stops — an expired
//!    session sends nothing more — and the writer writes what was already queued and
//!    closes with [`CloseCode::TOKEN_EXPIRED`] (4001, "token expired").
//!
//! Reader and writer run concurrently within the one task. When the reader sees the peer
//! go, the writer is dropped (nobody is listening); when the writer has closed the
//! connection, the reader is dropped. Either way the hub then gets exactly one `Closed`
//! for the connection, after every command the reader forwarded.
//!
//! 6. **Linger** (RFC 6455 §7.1): when the server sent the close (any code: 1008, 1009,
//!    1013, 4001, shutdown's 1001…), the task reads on after telling the hub, discarding
//!    everything, until the peer's close, the end of its stream or an error, within
//!    [`RuntimeConfig::close_linger`] and `close_linger_bytes`. Dropping a socket the
//!    peer is still writing to makes the kernel reset it, and the reset discards what
//!    the peer had not read — the frames queued before the close and the close itself.
//!    There is no linger when the close frame could not be written or the peer went
//!    silent (heartbeat timeout): nothing would come of it. The `max_connections` slot
//!    and the admission's place are given back only when the task ends, once the socket
//!    is really gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until, timeout};

use super::admission::{Admission, Admitted};
use super::config::RuntimeConfig;
use super::hub::{HubMsg, HubSender};
use super::metrics::Metrics;
use super::now;
use super::outbound::{GlobalBudget, Next, OutboundQueue, QueueLimits, SLOW_READER};
use crate::engine::Identity;
use crate::ids::ConnId;
use crate::protocol::{self, DecodeError};
use crate::transport::{
    Channel, CloseCode, ConnectionInfo, Handshake, Inbound, Incoming, Outbound, Rejection,
    TransportError,
};

/// What every connection task shares with the server.
pub(crate) struct Context {
    pub(crate) config: RuntimeConfig,
    pub(crate) admission: Arc<dyn Admission>,
    pub(crate) metrics: Metrics,
    pub(crate) hub: HubSender,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Connection tasks alive (handshaking or open), for `max_connections`.
    pub(crate) open: AtomicUsize,
    /// Outbound bytes held across all connections (`outbound_global_bytes`).
    pub(crate) outbound_budget: Arc<GlobalBudget>,
}

impl Context {
    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Counts a new connection task, or `None` when the server is full.
    pub(crate) fn try_reserve(self: &Arc<Self>) -> Option<Slot> {
        let max = self.config.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }
}

/// One of `max_connections`, given back when the connection task ends (even by panic or
/// abort).
pub(crate) struct Slot(Arc<Context>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives an admitted connection's place back to the [`Admission`] when it ends.
struct Release<'a> {
    admission: &'a dyn Admission,
    info: ConnectionInfo,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.admission.release(&self.info);
    }
}

/// Tells the hub the connection is gone, exactly once: normally in order after its
/// commands ([`Registered::closed`]), or through the fallback channel if the task dies
/// first.
struct Registered<'a> {
    conn: ConnId,
    hub: &'a HubSender,
    reported: bool,
}

impl Registered<'_> {
    async fn closed(mut self) {
        // Cancel-safe: if this send is aborted midway, nothing was sent and `Drop` reports.
        let _ = self.hub.tx.send(HubMsg::Closed { conn: self.conn }).await;
        self.reported = true;
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if !self.reported {
            let _ = self.hub.lost.send(self.conn);
        }
    }
}

/// Refuses a handshake, bounded by the handshake timeout.
pub(crate) async fn reject(handshake: Box<dyn Handshake>, why: Rejection, ctx: &Context) {
    ctx.metrics.handshake_rejected(why.status());
    tracing::debug!(
        status = why.status(),
        reason = why.reason(),
        "handshake refused"
    );
    let _ = timeout(ctx.config.handshake_timeout, handshake.reject(why)).await;
}

/// The whole life of one connection. See the module docs.
pub(crate) async fn serve(handshake: Box<dyn Handshake>, ctx: Arc<Context>, _slot: Slot) {
    if ctx.shutting_down() {
        let why = Rejection::Unavailable("server shutting down".into());
        return reject(handshake, why, &ctx).await;
    }
    let info = handshake.info().clone();
    // Logs show the client: the address a trusted proxy named, else the peer's.
    let peer = info.peer.clone();
    let client = info.client_ip();
    // Bounded like the upgrade: a slow admission (a database, a JWKS fetch) cannot hold
    // the handshake and its slot forever. Timed out → 503, and no `release` (see
    // `Admission`).
    let admitted = timeout(ctx.config.handshake_timeout, ctx.admission.admit(&info)).await;
    let Admitted {
        identity,
        expires_in,
    } = match admitted {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(why)) => return reject(handshake, why, &ctx).await,
        Err(_) => {
            let why = Rejection::Unavailable("admission timed out".into());
            return reject(handshake, why, &ctx).await;
        }
    };
    let _release = Release {
        admission: &*ctx.admission,
        info,
    };
    // Fixed once, now: the admission measured `expires_in` from this moment. A deadline
    // too far away to represent is no deadline.
    let deadline = expires_in.and_then(|d| now().checked_add(d));
    let Channel {
        mut inbound,
        mut outbound,
    } = match timeout(ctx.config.handshake_timeout, handshake.accept()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            return;
        }
    };
    let queue = Arc::new(OutboundQueue::new(
        QueueLimits {
            max_frames: ctx.config.outbound_frames.max(1),
            max_bytes: ctx.config.outbound_bytes,
        },
        Arc::clone(&ctx.outbound_budget),
    ));
    let Some(conn) = register(&ctx, identity, &queue).await else {
        // The hub takes no more connections: it is shutting down (or gone).
        ctx.metrics.closed(CloseCode::GOING_AWAY);
        let sent = close(
            &mut *outbound,
            &ctx,
            CloseCode::GOING_AWAY,
            "server shutting down",
        )
        .await;
        if sent {
            linger(&mut *inbound, &ctx).await;
        }
        return;
    };
    tracing::info!(%conn, client = ?client, peer = ?peer, "connection opened");
    let registered = Registered {
        conn,
        hub: &ctx.hub,
        reported: false,
    };
    let end = exchange(conn, &mut *inbound, &mut *outbound, &ctx, &queue, deadline).await;
    // The engine is done with the connection; only the socket remains.
    registered.closed().await;
    if end == WriteEnd::Closed {
        linger(&mut *inbound, &ctx).await;
    }
    tracing::info!(%conn, peer = ?peer, "connection closed");
    // `_release` and `_slot` go here, once the socket is really gone.
}

/// The open connection: the reader and the writer until either ends it (or the
/// credential expires). Its own function so that its two futures, which live across
/// several awaits, are laid out once inside this future's state rather than next to
/// every other await of [`serve`]: it keeps the task of an idle connection small.
async fn exchange(
    conn: ConnId,
    inbound: &mut dyn Inbound,
    outbound: &mut dyn Outbound,
    ctx: &Context,
    queue: &OutboundQueue,
    deadline: Option<Instant>,
) -> WriteEnd {
    let seen = AtomicBool::new(false);
    let reader = read(conn, inbound, ctx, &seen);
    let writer = write(outbound, ctx, queue, &seen);
    tokio::pin!(reader, writer);
    tokio::select! {
        end = &mut reader => match end {
            ReadEnd::PeerGone => {
                queue.abandon();
                WriteEnd::Gone
            }
            ReadEnd::Close(code, reason) => {
                if queue.close_after_flush(code, reason) {
                    ctx.metrics.closed(code);
                }
                writer.await
            }
        },
        end = &mut writer => end,
        // The reader is not polled again (and is dropped with this function): nothing
        // the peer sends after its credential expired reaches the engine. What was
        // queued before the deadline was meant for it and is still written.
        () = expiry(deadline) => {
            tracing::info!(%conn, "credential expired: closing with 4001");
            let code = CloseCode::TOKEN_EXPIRED;
            if queue.close_after_flush(code, "token expired") {
                ctx.metrics.closed(code);
            }
            writer.await
        }
    }
}

async fn register(
    ctx: &Context,
    identity: Option<Identity>,
    queue: &Arc<OutboundQueue>,
) -> Option<ConnId> {
    let (reply, id) = oneshot::channel();
    let open = HubMsg::Open {
        identity,
        queue: Arc::clone(queue),
        reply,
    };
    ctx.hub.tx.send(open).await.ok()?;
    id.await.ok()
}

/// Why the reader stopped.
enum ReadEnd {
    /// The peer closed or the connection failed: nothing more can be written.
    PeerGone,
    /// Stop reading and close with this code once what is queued is written.
    Close(CloseCode, &'static str),
}

async fn read(
    conn: ConnId,
    inbound: &mut dyn Inbound,
    ctx: &Context,
    seen: &AtomicBool,
) -> ReadEnd {
    loop {
        let Some(item) = inbound.recv().await else {
            return ReadEnd::PeerGone;
        };
        let frame = match item {
            Ok(Incoming::Text(frame)) => Some(frame),
            Ok(Incoming::Binary(_)) => None,
            Ok(Incoming::Pong) => {
                seen.store(true, Ordering::Relaxed);
                continue;
            }
            Ok(Incoming::Close(_)) => return ReadEnd::PeerGone,
            Err(TransportError::MessageTooBig) => {
                tracing::warn!(%conn, "frame over the size limit: closing with 1009");
                return ReadEnd::Close(CloseCode::TOO_BIG, "message too big");
            }
            Err(e @ (TransportError::Protocol(_) | TransportError::InvalidPayload)) => {
                tracing::warn!(%conn, error = %e, "peer broke the framing protocol");
                return ReadEnd::Close(e.close_code(), "protocol error");
            }
            Err(e) => {
                tracing::debug!(%conn, error = %e, "connection failed");
                return ReadEnd::PeerGone;
            }
        };
        seen.store(true, Ordering::Relaxed);
        // Waiting here when the hub is busy is the backpressure: no reads meanwhile.
        // The place in the channel is taken before decoding, so only the raw frame,
        // not the decoded command, is held across this wait (a smaller task).
        let Ok(permit) = ctx.hub.tx.reserve().await else {
            return ReadEnd::Close(CloseCode::INTERNAL_ERROR, "server error");
        };
        permit.send(match frame {
            Some(frame) => {
                let protocol::Decoded { command, reference } = protocol::decode_frame(&frame);
                match command {
                    Ok(command) => {
                        ctx.metrics.message_in(command.type_name());
                        HubMsg::Command {
                            conn,
                            command,
                            reference,
                        }
                    }
                    Err(error) => {
                        ctx.metrics.message_in("malformed");
                        // The client gets the fixed text; serde's own words go to the log.
                        tracing::debug!(
                            %conn,
                            code = error.code().as_str(),
                            detail = error.detail().unwrap_or(""),
                            "undecodable frame"
                        );
                        HubMsg::Malformed {
                            conn,
                            error,
                            reference,
                        }
                    }
                }
            }
            None => {
                ctx.metrics.message_in("binary");
                HubMsg::Malformed {
                    conn,
                    error: DecodeError::Binary,
                    reference: None,
                }
            }
        });
    }
}

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// It sent (or tried to send) a close frame; the peer may still be sending.
    Closed,
    /// The connection is gone (a write failed, the peer left): nothing to wait for.
    Gone,
}

async fn write(
    out: &mut dyn Outbound,
    ctx: &Context,
    queue: &OutboundQueue,
    seen: &AtomicBool,
) -> WriteEnd {
    let cfg = &ctx.config;
    let max_batch = cfg.write_batch.max(1);
    // Grows with the batches actually written (at most `max_batch` frames) and keeps
    // that capacity: an idle connection, which only ever had a few frames at a time
    // queued, keeps a few slots rather than `write_batch` (64 × 32 bytes = 2 KiB each).
    let mut batch: Vec<Bytes> = Vec::new();
    // A zero period would make `interval` panic; it can only mean "off".
    let period = cfg.heartbeat_interval.filter(|p| !p.is_zero());
    let mut heartbeat = period.map(|period| {
        let mut interval = interval_at(now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    let mut ping_outstanding = false;
    // A peer silent for a whole heartbeat is dead or stuck: nothing to linger for.
    let mut silent = false;
    loop {
        // The heartbeat goes first: it fires at most once per interval, and a busy queue
        // must not starve it.
        let next = tokio::select! {
            biased;
            () = tick(&mut heartbeat) => {
                let alive = seen.swap(false, Ordering::Relaxed);
                if ping_outstanding && !alive {
                    tracing::debug!("heartbeat: no sign of life since the last ping");
                    // Terminated without flushing: nobody is reading.
                    decide_close_now(ctx, queue, CloseCode::GOING_AWAY, "heartbeat timeout");
                    silent = true;
                    heartbeat = None;
                    continue;
                }
                match timeout(cfg.write_timeout, out.ping()).await {
                    Ok(Ok(true)) => ping_outstanding = true,
                    Ok(Ok(false)) => heartbeat = None,
                    Ok(Err(_)) => {
                        queue.abandon();
                        return WriteEnd::Gone;
                    }
                    Err(_) => {
                        decide_close_now(ctx, queue, CloseCode::TRY_AGAIN_LATER, SLOW_READER);
                    }
                }
                continue;
            }
            next = queue.next(&mut batch, max_batch) => next,
        };
        match next {
            Next::Frames => {
                let bytes: usize = batch.iter().map(Bytes::len).sum();
                // A queue closed without flushing (slow reader, global budget shed) also
                // ends a send in progress: its batch is given up at once rather than held
                // until the write timeout. `send` is cancel-safe (the write timeout
                // cancels it too); the close that follows ends the connection.
                let sent = tokio::select! {
                    sent = timeout(cfg.write_timeout, out.send(&batch)) => Some(sent),
                    () = queue.cancelled() => None,
                };
                // Its bytes leave the global budget in the next `queue.next` (or at
                // once if the queue was closed without flushing).
                batch.clear();
                let Some(sent) = sent else { continue };
                match sent {
                    Ok(Ok(())) => ctx.metrics.wrote(bytes as u64),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "write failed");
                        queue.abandon();
                        return WriteEnd::Gone;
                    }
                    // A peer that takes no batch for this long is not reading: the next
                    // turn of the loop closes it.
                    Err(_) => {
                        decide_close_now(ctx, queue, CloseCode::TRY_AGAIN_LATER, SLOW_READER);
                    }
                }
            }
            Next::Close(code, reason) => {
                let sent = close(out, ctx, code, reason).await;
                // Lingering helps a peer that is still sending get the close; it is no
                // use when the close frame could not even be written (a peer that does
                // not read) or the peer has gone silent.
                return if sent && !silent {
                    WriteEnd::Closed
                } else {
                    WriteEnd::Gone
                };
            }
            Next::Done => return WriteEnd::Gone,
        }
    }
}

/// Resolves at `deadline`; never without one. The timer is boxed, and only made for a
/// connection that has a deadline: the others do not carry its ~100 bytes in their task.
async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => Box::pin(sleep_until(deadline)).await,
        None => std::future::pending().await,
    }
}

async fn tick(heartbeat: &mut Option<Interval>) {
    match heartbeat {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Closes the queue now, counting the close if this is what decided it. The writer's
/// loop then sends the close frame.
fn decide_close_now(ctx: &Context, queue: &OutboundQueue, code: CloseCode, reason: &'static str) {
    if queue.close_now(code, reason) {
        ctx.metrics.closed(code);
    }
}

/// Sends a close frame, bounded by `close_timeout` (a peer that does not read cannot
/// hold the task); whether it was written. Counting the close is the business of whoever
/// decided it.
async fn close(out: &mut dyn Outbound, ctx: &Context, code: CloseCode, reason: &str) -> bool {
    matches!(
        timeout(ctx.config.close_timeout, out.close(code, reason)).await,
        Ok(Ok(()))
    )
}

/// The closing handshake's second half (RFC 6455 §7.1): after its close frame the server
/// reads and discards what the peer still sends until the peer's close or the end of its
/// stream, at most `close_linger` long and `close_linger_bytes` of frames.
///
/// Why: a socket closed with unread data, or one that receives data after it was
/// closed, makes the kernel send a reset, and a reset discards everything the peer had
/// not read yet — the frames queued before the close and the close frame itself (the
/// peer sees 1006). Reading on until the peer is done lets them arrive. Everything is
/// discarded: the engine already forgot the connection.
async fn linger(inbound: &mut dyn Inbound, ctx: &Context) {
    let cfg = &ctx.config;
    if cfg.close_linger.is_zero() {
        return;
    }
    ctx.metrics.lingering(true);
    let drained = drain_until_close(inbound, cfg).await;
    ctx.metrics.lingering(false);
    if !drained {
        tracing::debug!("peer did not finish closing within the linger budget");
    }
}

/// Reads and discards until the peer's close or the end of its stream (true), or until
/// the linger's time or byte budget is spent (false).
async fn drain_until_close(inbound: &mut dyn Inbound, cfg: &RuntimeConfig) -> bool {
    let mut budget = cfg.close_linger_bytes;
    let drained = timeout(cfg.close_linger, async {
        loop {
            // At least one byte per frame, so a stream of empty frames also spends it.
            let cost = match inbound.recv().await {
                Some(Ok(Incoming::Text(frame))) => frame.len(),
                Some(Ok(Incoming::Binary(len))) => len,
                Some(Ok(Incoming::Pong)) => 0,
                // A transport that skips an oversized frame (the TCP line codec does)
                // can read on; it cost up to one frame.
                Some(Err(TransportError::MessageTooBig)) => crate::MAX_FRAME_BYTES,
                // The peer's close, the end, or a broken stream: nothing more to wait for.
                Some(Ok(Incoming::Close(_)) | Err(_)) | None => return true,
            };
            match budget.checked_sub(cost.max(1)) {
                Some(left) => budget = left,
                None => return false,
            }
        }
    })
    .await;
    drained == Ok(true)
}
