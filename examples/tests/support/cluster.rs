//! Clusters of example servers for the tests, and clients that record everything they
//! see for the Jepsen-style checker (`support::jepsen`).
//!
//! A [`Recorder`] is one WebSocket client of one user: it joins rooms, sends messages
//! with unique `clientMsgId`s, follows presence, and keeps its history. When its node
//! dies it [`reconnect`](Recorder::reconnect)s to another node, resumes every room
//! with `since`/`epoch` and resends what was not acknowledged (same `clientMsgId`).
//! Waiting is on a version counter bumped after every frame (never a sleep).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::jepsen::{ClientHistory, Msg, Seen};
use super::{PROMPT, ServerProcess, token_named};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The flags that make an example server a node of the cluster at `redis` under
/// `prefix`.
pub(crate) fn node_flags(redis: &str, prefix: &str, node: &str) -> Vec<String> {
    [
        "--redis",
        redis,
        "--cluster-prefix",
        prefix,
        "--node-id",
        node,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Starts node `node` on the PostgreSQL database `store`.
pub(crate) fn start_node(store: &str, redis: &str, prefix: &str, node: &str) -> ServerProcess {
    let flags = node_flags(redis, prefix, node);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    ServerProcess::start_with(store, &flags)
}

/// One joined room, as a client follows it.
#[derive(Debug, Default, Clone)]
pub(crate) struct RoomView {
    /// The last `seq` received (join reply's `lastSeq`, then live messages).
    pub(crate) cursor: u64,
    pub(crate) epoch: Option<String>,
    /// User ids present, per `room_users`, `user_joined` and `user_left`.
    pub(crate) members: BTreeSet<String>,
    /// The join reply is complete.
    pub(crate) joined: bool,
    resuming: bool,
    pending: Vec<Msg>,
}

/// What a recorder knows.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) history: ClientHistory,
    pub(crate) rooms: BTreeMap<String, RoomView>,
    pub(crate) connected: bool,
    /// `(room, clientMsgId)` acknowledged (seen back from the server).
    pub(crate) acked: BTreeSet<(String, String)>,
    /// Every frame other than room messages and join replies, in order.
    pub(crate) frames: Vec<Value>,
}

struct Inner {
    user: String,
    name: String,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    sink: tokio::sync::Mutex<Option<SplitSink<Ws, Message>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// A recording client (cheap to clone; clones share everything).
#[derive(Clone)]
pub(crate) struct Recorder {
    inner: Arc<Inner>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut reader) = self.reader.lock()
            && let Some(reader) = reader.take()
        {
            reader.abort();
        }
    }
}

impl Recorder {
    /// Connects as `user` (displayed as `name`) to `addr`, labelled `label` in reports.
    pub(crate) async fn connect(addr: SocketAddr, user: &str, name: &str, label: &str) -> Self {
        let (version, _) = watch::channel(0);
        let recorder = Recorder {
            inner: Arc::new(Inner {
                user: user.to_owned(),
                name: name.to_owned(),
                state: Mutex::new(State {
                    history: ClientHistory {
                        label: label.to_owned(),
                        user: user.to_owned(),
                        ..ClientHistory::default()
                    },
                    ..State::default()
                }),
                version,
                sink: tokio::sync::Mutex::new(None),
                reader: Mutex::new(None),
            }),
        };
        recorder.open(addr).await;
        recorder
    }

    pub(crate) fn user(&self) -> &str {
        &self.inner.user
    }

    /// Reads the state.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.state.lock().expect("state lock"))
    }

    /// A copy of the history for the checker.
    pub(crate) fn history(&self) -> ClientHistory {
        self.with(|s| s.history.clone())
    }

    /// Opens a connection and waits for its `connection` frame.
    async fn open(&self, addr: SocketAddr) {
        let url = format!(
            "ws://{addr}/?token={}",
            token_named(&self.inner.user, &self.inner.name)
        );
        let (ws, _) = tokio::time::timeout(PROMPT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        let (sink, stream) = ws.split();
        *self.inner.sink.lock().await = Some(sink);
        {
            let mut state = self.inner.state.lock().expect("state lock");
            state.connected = true;
            state.frames.clear();
        }
        let reader = tokio::spawn(read(Arc::downgrade(&self.inner), stream));
        if let Some(old) = self
            .inner
            .reader
            .lock()
            .expect("reader lock")
            .replace(reader)
        {
            old.abort();
        }
        assert!(
            self.wait(PROMPT, |s| s
                .frames
                .iter()
                .any(|f| f["type"] == "connection"))
                .await,
            "{}: no connection frame",
            self.inner.user
        );
    }

    /// Waits until `cond` holds (checked after every frame); false on timeout.
    pub(crate) async fn wait(&self, limit: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let mut changed = self.inner.version.subscribe();
        tokio::time::timeout(limit, async {
            loop {
                if self.with(&cond) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && self.with(&cond)
    }

    /// Sends one frame; false if the connection is gone.
    pub(crate) async fn send(&self, frame: Value) -> bool {
        let mut sink = self.inner.sink.lock().await;
        match sink.as_mut() {
            Some(s) => s.send(Message::text(frame.to_string())).await.is_ok(),
            None => false,
        }
    }

    /// Joins `room` (keeping the others) and waits for the reply.
    pub(crate) async fn join(&self, room: &str) {
        self.inner
            .state
            .lock()
            .expect("state lock")
            .rooms
            .insert(room.to_owned(), RoomView::default());
        self.send(json!({"type": "join_room", "room": room, "keepRooms": true}))
            .await;
        assert!(
            self.wait(PROMPT, |s| s.rooms.get(room).is_some_and(|r| r.joined))
                .await,
            "{}: no join reply for {room}",
            self.inner.user
        );
    }

    /// Leaves `room`.
    pub(crate) async fn leave(&self, room: &str) {
        self.send(json!({"type": "leave_room", "room": room})).await;
        assert!(
            self.wait(PROMPT, |s| !s.rooms.contains_key(room)).await,
            "{}: no room_left for {room}",
            self.inner.user
        );
    }

    /// Sends a chat message with a fresh `clientMsgId`, recorded as sent (resent by
    /// [`reconnect`](Self::reconnect) until acknowledged).
    pub(crate) async fn chat(&self, room: &str, client_msg_id: &str) {
        self.inner
            .state
            .lock()
            .expect("state lock")
            .history
            .sent
            .push((room.to_owned(), client_msg_id.to_owned()));
        self.send_chat(room, client_msg_id).await;
    }

    async fn send_chat(&self, room: &str, client_msg_id: &str) -> bool {
        self.send(json!({
            "type": "chat_message",
            "room": room,
            "content": format!("{} says {client_msg_id}", self.inner.user),
            "clientMsgId": client_msg_id,
        }))
        .await
    }

    /// Resends, one at a time, every message not acknowledged yet (same
    /// `clientMsgId`: a stored one is not stored twice), as a client does after
    /// `too_many_requests` or a lost connection. Each gets `PROMPT` to be acknowledged.
    pub(crate) async fn resend_unacked(&self) {
        let unacked: Vec<(String, String)> = self.with(|s| {
            s.history
                .sent
                .iter()
                .filter(|m| !s.acked.contains(*m))
                .cloned()
                .collect()
        });
        for m in unacked {
            if !self.send_chat(&m.0, &m.1).await {
                return;
            }
            let _ = self.wait(PROMPT, |s| s.acked.contains(&m)).await;
        }
    }

    /// Every message sent was acknowledged.
    pub(crate) fn all_acked(&self) -> bool {
        self.with(|s| s.history.sent.iter().all(|m| s.acked.contains(m)))
    }

    /// Reconnects to `addr` (after its node died), resumes every room with
    /// `since`/`epoch`, and resends what was not acknowledged.
    pub(crate) async fn reconnect(&self, addr: SocketAddr) {
        if let Some(mut sink) = self.inner.sink.lock().await.take() {
            let _ = sink.close().await;
        }
        if let Some(reader) = self.inner.reader.lock().expect("reader lock").take() {
            reader.abort();
        }
        let rooms: Vec<(String, u64, Option<String>)> = {
            let mut state = self.inner.state.lock().expect("state lock");
            if state.connected {
                state.connected = false;
                state.history.seen.push(Seen::Disconnected);
            }
            state
                .rooms
                .iter_mut()
                .map(|(room, view)| {
                    view.joined = false;
                    view.resuming = true;
                    view.pending.clear();
                    (room.clone(), view.cursor, view.epoch.clone())
                })
                .collect()
        };
        self.open(addr).await;
        for (room, since, epoch) in &rooms {
            let mut join =
                json!({"type": "join_room", "room": room, "keepRooms": true, "since": since});
            if let Some(epoch) = epoch {
                join["epoch"] = json!(epoch);
            }
            self.send(join).await;
        }
        for (room, _, _) in &rooms {
            assert!(
                self.wait(PROMPT, |s| s.rooms.get(room).is_some_and(|r| r.joined))
                    .await,
                "{}: no resume reply for {room}",
                self.inner.user
            );
        }
        let unacked: Vec<(String, String)> = self.with(|s| {
            s.history
                .sent
                .iter()
                .filter(|m| !s.acked.contains(*m))
                .cloned()
                .collect()
        });
        for (room, id) in unacked {
            self.send_chat(&room, &id).await;
        }
    }

    /// Closes the connection (a clean close).
    pub(crate) async fn close(&self) {
        if let Some(mut sink) = self.inner.sink.lock().await.take() {
            let _ = sink.close().await;
        }
        let _ = self.wait(PROMPT, |s| !s.connected).await;
    }
}

/// The reader task: records every frame.
async fn read(inner: std::sync::Weak<Inner>, mut stream: SplitStream<Ws>) {
    loop {
        let frame = stream.next().await;
        let Some(inner) = inner.upgrade() else { return };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                let mut state = inner.state.lock().expect("state lock");
                if state.connected {
                    state.connected = false;
                    state.history.seen.push(Seen::Disconnected);
                }
                drop(state);
                inner.version.send_modify(|v| *v += 1);
                return;
            }
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        record(&inner, frame);
        inner.version.send_modify(|v| *v += 1);
    }
}

fn record(inner: &Inner, frame: Value) {
    let mut state = inner.state.lock().expect("state lock");
    let state = &mut *state;
    let room = frame["room"].as_str().unwrap_or_default().to_owned();
    match frame["type"].as_str().unwrap_or_default() {
        "message_history" if frame.get("epoch").is_some() => {
            let Some(view) = state.rooms.get_mut(&room) else {
                return;
            };
            let messages = frame["messages"].as_array().cloned().unwrap_or_default();
            view.pending
                .extend(messages.iter().filter_map(Msg::from_json));
            if frame["continued"] == true {
                return;
            }
            let last_seq = frame["lastSeq"].as_u64().unwrap_or(0);
            let history = std::mem::take(&mut view.pending);
            for m in &history {
                if m.user == inner.user
                    && let Some(id) = &m.client_msg_id
                {
                    state.acked.insert((m.room.clone(), id.clone()));
                }
            }
            state.history.seen.push(Seen::Joined {
                room: room.clone(),
                last_seq,
                recovered: frame["recovered"] == true,
                resumed: view.resuming,
                history,
            });
            view.cursor = last_seq;
            view.epoch = frame["epoch"].as_str().map(str::to_owned);
            view.resuming = false;
        }
        "room_users" => {
            if let Some(view) = state.rooms.get_mut(&room) {
                view.members = frame["users"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u["id"].as_str().map(str::to_owned))
                    .collect();
                view.joined = true;
            }
        }
        "message_received" => {
            let Some(m) = Msg::from_json(&frame) else {
                return;
            };
            if let Some(view) = state.rooms.get_mut(&room) {
                view.cursor = view.cursor.max(m.seq);
            }
            if m.user == inner.user
                && let Some(id) = &m.client_msg_id
            {
                state.acked.insert((m.room.clone(), id.clone()));
            }
            state.history.seen.push(Seen::Live(m));
        }
        "room_left" => {
            state.rooms.remove(&room);
            state.history.seen.push(Seen::Left { room });
        }
        kind => {
            if let Some(view) = state.rooms.get_mut(&room) {
                let user = frame["userId"].as_str().unwrap_or_default().to_owned();
                match kind {
                    "user_joined" => {
                        view.members.insert(user);
                    }
                    "user_left" => {
                        view.members.remove(&user);
                    }
                    _ => {}
                }
            }
            state.frames.push(frame);
        }
    }
}

/// Sends `per_client` messages from every client (round-robin over its rooms, one
/// every `every`), concurrently; returns when all were handed to the sockets.
pub(crate) async fn traffic(clients: &[Recorder], per_client: usize, every: Duration) {
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, client)| {
            tokio::spawn(async move {
                let rooms: Vec<String> = client.with(|s| s.rooms.keys().cloned().collect());
                let mut pace = tokio::time::interval(every);
                for i in 0..per_client {
                    pace.tick().await;
                    let room = &rooms[i % rooms.len()];
                    client.chat(room, &format!("c{n}-m{i}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("traffic task");
    }
}

/// Waits until every connected client had its messages acknowledged (resending, with
/// the same `clientMsgId`, those refused meanwhile — e.g. `too_many_requests` when a
/// paused node wakes up to a burst) and reached the head of each of its rooms (the
/// highest `seq` any client saw), within `limit`. False if that did not happen (the
/// checker then says what is missing).
pub(crate) async fn settle(clients: &[Recorder], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let acked = |s: &State| !s.connected || s.history.sent.iter().all(|m| s.acked.contains(m));
    for c in clients {
        if !c.wait(Duration::from_secs(5), acked).await {
            c.resend_unacked().await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !c.wait(left, acked).await {
            return false;
        }
    }
    let mut head: BTreeMap<String, u64> = BTreeMap::new();
    for c in clients {
        c.with(|s| {
            for (room, view) in &s.rooms {
                let h = head.entry(room.clone()).or_default();
                *h = (*h).max(view.cursor);
            }
        });
    }
    for c in clients {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reached = c
            .wait(left, |s| {
                !s.connected
                    || s.rooms
                        .iter()
                        .all(|(room, view)| view.cursor >= head.get(room).copied().unwrap_or(0))
            })
            .await;
        if !reached {
            return false;
        }
    }
    true
}

/// Waits until every client in `room` lists exactly `expected` as its members.
pub(crate) async fn members_agree(
    clients: &[Recorder],
    room: &str,
    expected: &BTreeSet<String>,
    limit: Duration,
) -> Result<(), String> {
    for c in clients {
        let ok = c
            .wait(limit, |s| {
                s.rooms.get(room).is_some_and(|v| v.members == *expected)
            })
            .await;
        if !ok {
            let seen = c.with(|s| s.rooms.get(room).map(|v| v.members.clone()));
            return Err(format!(
                "{} sees {seen:?} in {room}, expected {expected:?}",
                c.with(|s| s.history.label.clone())
            ));
        }
    }
    Ok(())
}
