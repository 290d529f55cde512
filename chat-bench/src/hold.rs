//! Holding joined connections open: a task per connection that reads (so the server's
//! queue for it never fills and pings are answered) until told to stop.

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Event, Ws};

/// What a held connection saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Held {
    /// `error` frames received.
    pub errors: u64,
    /// Whether the server closed the connection before the stop.
    pub closed_early: bool,
}

/// Spawns the task holding `ws` until `stop` turns true (or its sender is dropped).
pub fn spawn(mut ws: Ws, mut stop: watch::Receiver<bool>) -> JoinHandle<Held> {
    tokio::spawn(async move {
        let mut held = Held::default();
        // Bounded by the stop signal or the connection's end.
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if Event::parse(text.as_str()).is_ok_and(|e| e.kind == "error") {
                            held.errors += 1;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        held.closed_early = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        held
    })
}
