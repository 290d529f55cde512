//! The bare relay: the floor of this stack (tokio + tokio-tungstenite), with no chat logic.
//!
//! It answers just enough of the join for `chat-bench` to run (`connection`,
//! `username_set`, `room_joined`, an empty `message_history`, `room_users`, `user_joined`)
//! and relays each `chat_message` as a `message_received` frame serialised once and shared
//! by every member's queue (a `Bytes` clone per recipient). No validation beyond the base
//! rules the scenarios touch, no history, no rate limits, no uniqueness of usernames: what
//! a chat server does beyond this is what the benchmark's comparison prices.
//!
//! Each connection has a reader (this task) and a writer task draining a bounded queue,
//! writing every frame queued so far before one flush. A member whose queue is full misses
//! the message, which `chat-bench` reports as loss.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The relay's knobs.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// tungstenite's read buffer per connection (its default, 128 KiB, is zeroed before
    /// every read; the floor should not pay for that).
    pub read_buffer: usize,
    /// Frames queued per connection before it misses messages.
    pub queue: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            read_buffer: 8 * 1024,
            queue: 4096,
        }
    }
}

/// One member of a room: its id, name and queue.
struct Member {
    id: u64,
    tx: mpsc::Sender<Message>,
}

/// A room: its members and the next `seq`.
#[derive(Default)]
struct Room {
    seq: u64,
    members: Vec<Member>,
    names: Vec<(u64, Arc<str>)>,
}

/// Rooms by name, and the next connection id.
#[derive(Default)]
struct State {
    next_id: AtomicU64,
    rooms: Mutex<HashMap<String, Room>>,
}

/// A client command: the fields the relay reads.
#[derive(Deserialize)]
struct Command {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// Serves WebSocket clients from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: RelayConfig) -> io::Result<()> {
    let state = Arc::new(State::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, Arc::clone(&state), config));
            }
            // Out of files or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn text(value: serde_json::Value) -> Message {
    Message::text(value.to_string())
}

async fn connection(stream: TcpStream, state: Arc<State>, config: RelayConfig) {
    let _ = stream.set_nodelay(true);
    let ws_config = WebSocketConfig::default().read_buffer_size(config.read_buffer);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)).await else {
        return;
    };
    let (mut sink, mut reader) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(config.queue.max(1));
    let writer = tokio::spawn(async move {
        // Ends when every sender is gone (the connection left) or the socket fails.
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let client_id = format!("c{id}");
    let _ = tx.try_send(text(json!({"type": "connection", "clientId": client_id})));
    let mut username: Option<Arc<str>> = None;
    let mut joined: Option<String> = None;
    while let Some(Ok(frame)) = reader.next().await {
        let Message::Text(frame) = frame else {
            continue;
        };
        let Ok(cmd) = serde_json::from_str::<Command>(frame.as_str()) else {
            let _ = tx.try_send(text(json!({"type": "error", "message": "Invalid JSON"})));
            continue;
        };
        match (cmd.kind.as_str(), &username, &joined) {
            ("set_username", _, _) => {
                let name = cmd
                    .username
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .take(20)
                    .collect::<String>();
                if name.chars().count() < 2 {
                    let _ = tx.try_send(text(json!({"type": "error", "message": "Username must be at least 2 characters"})));
                    continue;
                }
                let _ = tx.try_send(text(json!({"type": "username_set", "username": name})));
                username = Some(name.into());
            }
            ("join_room", Some(name), _) => {
                let room = cmd.room.unwrap_or_default().trim().to_lowercase();
                if room.is_empty() {
                    let _ = tx.try_send(text(
                        json!({"type": "error", "message": "Room name required"}),
                    ));
                    continue;
                }
                if let Some(old) = joined.take() {
                    leave(&state, &old, id);
                }
                let mut rooms = state.rooms.lock().unwrap_or_else(|p| p.into_inner());
                let entry = rooms.entry(room.clone()).or_default();
                let hello = text(
                    json!({"type": "user_joined", "username": &**name, "userId": client_id, "room": room}),
                );
                for m in &entry.members {
                    let _ = m.tx.try_send(hello.clone());
                }
                entry.members.push(Member { id, tx: tx.clone() });
                entry.names.push((id, Arc::clone(name)));
                let users: Vec<_> = entry
                    .names
                    .iter()
                    .map(|(i, n)| json!({"id": format!("c{i}"), "username": &**n}))
                    .collect();
                let _ = tx.try_send(text(json!({"type": "room_joined", "room": room})));
                let _ = tx.try_send(text(
                    json!({"type": "message_history", "room": room, "messages": []}),
                ));
                let _ = tx.try_send(text(
                    json!({"type": "room_users", "room": room, "users": users}),
                ));
                drop(rooms);
                joined = Some(room);
            }
            ("chat_message", Some(name), Some(room)) => {
                let content = cmd.content.unwrap_or_default();
                let content: String = content.trim().chars().take(1000).collect();
                if content.is_empty() {
                    continue;
                }
                let mut rooms = state.rooms.lock().unwrap_or_else(|p| p.into_inner());
                let Some(entry) = rooms.get_mut(room) else {
                    continue;
                };
                entry.seq += 1;
                let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                // Serialised once; every queue gets a clone of the same bytes.
                let frame = text(json!({
                    "type": "message_received", "id": format!("{}-{}", room, entry.seq), "room": room,
                    "userId": client_id, "username": &**name, "content": content,
                    "timestamp": timestamp, "seq": entry.seq,
                }));
                for m in &entry.members {
                    let _ = m.tx.try_send(frame.clone());
                }
            }
            ("join_room" | "chat_message", _, _) => {
                let _ = tx.try_send(text(
                    json!({"type": "error", "message": "Set username and join a room first"}),
                ));
            }
            _ => {
                let _ = tx.try_send(text(
                    json!({"type": "error", "message": "Unknown message type"}),
                ));
            }
        }
    }
    if let Some(room) = joined {
        leave(&state, &room, id);
    }
    drop(tx);
    let _ = writer.await;
}

/// Removes connection `id` from `room`, dropping the room when it empties.
fn leave(state: &State, room: &str, id: u64) {
    let mut rooms = state.rooms.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(entry) = rooms.get_mut(room) {
        entry.members.retain(|m| m.id != id);
        entry.names.retain(|(i, _)| *i != id);
        if entry.members.is_empty() {
            rooms.remove(room);
        }
    }
}
