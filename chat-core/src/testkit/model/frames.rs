//! Reading one frame into the model, checking it against properties 1, 2 and 4 (and the
//! protocol's shape rules) on the way.

use std::collections::BTreeMap;

use crate::protocol::{ServerEvent, encode};
use crate::testkit::sim::SimStore;
use crate::{Config, ErrorCode, PageRange, StoreOp, StoreReply, UserId};
use serde_json::Value;

use super::Check;
use super::ops::{AUTH, person_of};
use super::state::{ConnModel, Expect, JoinRequest, RoomView, UserModel, last_seq, room_name};
use super::world::World;

/// What a frame handler may consult besides the receiving connection.
struct Ctx<'a> {
    store: &'a mut SimStore,
    config: &'a Config,
    users: &'a mut BTreeMap<String, UserModel>,
    epoch: &'a mut Option<String>,
    /// The receiving connection's user id (empty before `connection`).
    me: String,
}

impl World {
    /// Feeds one frame `conns[ci]` received to the model.
    pub(crate) fn on_frame(&mut self, ci: usize, f: &Value) -> Check {
        let c = &mut self.conns[ci];
        let mut cx = Ctx {
            store: &mut self.sim.store,
            config: &self.config,
            users: &mut self.users,
            epoch: &mut self.epoch,
            me: c.user.clone().unwrap_or_default(),
        };
        let ty = str_of(f, "type")?;
        join_replies_in_order(c, ty, f)?;
        if c.user.is_none() {
            check!(ty == "connection", "first frame is {f}, not `connection`");
        }
        // Property 4: room events reach the room's members only (a joiner is a member
        // from its `room_joined` on).
        let room_event = matches!(
            ty,
            "message_received"
                | "user_joined"
                | "user_left"
                | "typing_indicator"
                | "room_users"
                | "message_history"
        );
        if room_event {
            let room = str_of(f, "room")?;
            check!(
                c.rooms.iter().any(|r| r == room),
                "privacy: {f} reached a connection not in {room}"
            );
        }
        match ty {
            "connection" => on_connection(c, &mut cx, f),
            "username_set" => {
                let name = str_of(f, "username")?;
                check!(person_of(name).is_some(), "unexpected username {name:?}");
                cx.users.entry(cx.me.clone()).or_default().name = Some(name.to_owned());
                Ok(())
            }
            "room_joined" => on_room_joined(c, f),
            "message_history" if f.get("recovered").is_some() => on_join_history(c, &mut cx, f),
            "message_history" => {
                let room = str_of(f, "room")?;
                let seqs = history_seqs(cx.store, room, list_of(f, "messages")?)?;
                check!(
                    seqs.len() <= cx.config.history_page_max,
                    "bounds: a history page of {} messages",
                    seqs.len()
                );
                Ok(())
            }
            "room_users" => on_room_users(c, &cx, f),
            "user_joined" | "user_left" => on_presence(c, &cx, f),
            "room_left" => {
                let room = str_of(f, "room")?;
                let at = c.rooms.iter().position(|r| r == room);
                check!(at.is_some(), "room_left {room} while not in it");
                c.rooms.retain(|r| r != room);
                c.views.remove(room);
                Ok(())
            }
            "message_received" => on_message(c, &cx, f),
            "private_message" | "private_message_sent" => {
                let sent = ty == "private_message_sent";
                // Property 4: a DM reaches its target's and its sender's connections only.
                let party = if sent { "fromId" } else { "toId" };
                check!(
                    f[party] == cx.me.as_str(),
                    "privacy: {f} reached {}, not its {party}",
                    cx.me
                );
                dm_persisted(cx.store, f, sent)
            }
            "dm_history" => on_dm_history(&mut cx, f),
            "typing_indicator" => on_typing(c, &cx, f),
            "error" => {
                let code = str_of(f, "code")?;
                check!(
                    ErrorCode::ALL.iter().any(|c| c.as_str() == code),
                    "unknown error code in {f}"
                );
                check!(
                    code != "rate_limited" || f["retryAfterMs"].is_u64(),
                    "rate_limited without retryAfterMs: {f}"
                );
                Ok(())
            }
            other => Err(format!("unexpected frame type {other}: {f}")),
        }
    }
}

/// `room_joined`, `message_history`, `room_users` arrive together, in this order.
fn join_replies_in_order(c: &mut ConnModel, ty: &str, f: &Value) -> Check {
    match std::mem::take(&mut c.expect) {
        Expect::Anything => {}
        Expect::History(room, requests) => {
            check!(
                ty == "message_history" && f.get("recovered").is_some() && f["room"] == room,
                "join replies out of order: {f} after room_joined {room}"
            );
            c.expect = Expect::History(room, requests);
        }
        Expect::Users(room) => check!(
            ty == "room_users" && f["room"] == room,
            "join replies out of order: {f} instead of room_users {room}"
        ),
    }
    Ok(())
}

fn on_connection(c: &mut ConnModel, cx: &mut Ctx<'_>, f: &Value) -> Check {
    check!(c.user.is_none(), "a second `connection` frame: {f}");
    let id = str_of(f, "clientId")?.to_owned();
    if let Some(a) = c.auth {
        check!(
            id == AUTH[a].0,
            "authenticated as {} but told {id}",
            AUTH[a].0
        );
    }
    cx.users.entry(id.clone()).or_default();
    c.user = Some(id);
    Ok(())
}

fn on_room_joined(c: &mut ConnModel, f: &Value) -> Check {
    let room = str_of(f, "room")?.to_owned();
    check!(
        !c.rooms.contains(&room),
        "room_joined {room} while already in it"
    );
    let requests: Vec<JoinRequest> = c.joins.iter().filter(|j| j.room == room).cloned().collect();
    check!(
        !requests.is_empty(),
        "room_joined {room} that it never asked for"
    );
    if let Some(first) = c.joins.iter().position(|j| j.room == room) {
        c.joins.remove(first);
    }
    c.rooms.push(room.clone());
    c.expect = Expect::History(room, requests);
    Ok(())
}

/// The join's history: property 1 (consecutive, ends at `lastSeq`), property 2 (stored),
/// and the resume rules (PROTOCOL "Resume": complete replay or the latest page).
fn on_join_history(c: &mut ConnModel, cx: &mut Ctx<'_>, f: &Value) -> Check {
    let Expect::History(room, requests) = std::mem::take(&mut c.expect) else {
        return Err(format!("a join history without room_joined: {f}"));
    };
    let seqs = history_seqs(cx.store, &room, list_of(f, "messages")?)?;
    let last = u64_of(f, "lastSeq")?;
    let recovered = f["recovered"] == true;
    let has_more = f["hasMore"] == true;
    let epoch = str_of(f, "epoch")?.to_owned();
    check!(
        *cx.epoch.get_or_insert_with(|| epoch.clone()) == epoch,
        "the epoch changed to {epoch} though the store lost nothing"
    );
    check!(
        last <= last_seq(cx.store, &room),
        "persist before ack: lastSeq {last} is past the store's end"
    );
    check!(
        seqs.last().is_none_or(|&s| s == last),
        "stream: history {seqs:?} does not end at lastSeq {last}"
    );
    let first = seqs.first().copied().unwrap_or(last + 1);
    if recovered {
        // Exactly what came after a `since` this connection sent, in that epoch.
        let asked = requests
            .iter()
            .any(|j| j.since == Some(first - 1) && j.epoch.as_deref() == Some(epoch.as_str()));
        check!(
            asked && !has_more,
            "resume: recovered after {} up to {last}, asked {requests:?}",
            first - 1
        );
    } else {
        // The latest page: min(join_history, lastSeq) messages ending at lastSeq.
        let n = (cx.config.join_history as u64).min(last);
        check!(
            seqs == (last + 1 - n..=last).collect::<Vec<_>>() && has_more == (last > n),
            "join: {seqs:?} (hasMore {has_more}) is not the latest {n} up to {last}"
        );
        // A resume that could be replayed completely must be. Only judged when every
        // pending join for this room asked the same thing.
        let request = &requests[0];
        let unambiguous = requests.iter().all(|j| j == request);
        let replayable = request.since_in_range
            && request
                .since
                .is_some_and(|s| last.saturating_sub(s) <= cx.config.resume_max as u64)
            && request.epoch.as_deref() == Some(epoch.as_str());
        check!(
            !(unambiguous && replayable),
            "resume: {request:?} could be replayed up to {last} but was not"
        );
    }
    c.epochs.insert(room.clone(), epoch);
    c.seen.entry(room.clone()).or_default().extend(&seqs);
    c.views.insert(
        room.clone(),
        RoomView {
            first,
            last,
            ..RoomView::default()
        },
    );
    c.expect = Expect::Users(room);
    Ok(())
}

fn on_room_users(c: &mut ConnModel, cx: &Ctx<'_>, f: &Value) -> Check {
    let room = str_of(f, "room")?;
    let view = c.views.get_mut(room).expect("the history came first");
    for u in list_of(f, "users")? {
        let id = str_of(u, "id")?.to_owned();
        let name = str_of(u, "username")?.to_owned();
        check!(
            view.users.insert(id, name).is_none(),
            "presence: a user listed twice in {f}"
        );
    }
    check!(
        view.users.contains_key(&cx.me),
        "presence: room_users without the joiner: {f}"
    );
    Ok(())
}

/// `user_joined` / `user_left`: presence counts users, so a connection never hears about
/// its own user, a user joins once and leaves once.
fn on_presence(c: &mut ConnModel, cx: &Ctx<'_>, f: &Value) -> Check {
    let room = str_of(f, "room")?;
    let id = str_of(f, "userId")?.to_owned();
    let name = str_of(f, "username")?.to_owned();
    check!(id != cx.me, "presence: told about its own user: {f}");
    let view = c.views.get_mut(room).expect("a member");
    if f["type"] == "user_joined" {
        check!(
            view.users.insert(id, name).is_none(),
            "presence: {f} for a user already present"
        );
    } else {
        check!(
            !view.typing.contains(&id),
            "typing: {f} while still shown typing"
        );
        check!(
            view.users.remove(&id).is_some(),
            "presence: {f} for a user not present"
        );
    }
    Ok(())
}

/// A live room message: property 2, then property 1 — it continues the stream at
/// `last + 1`, with the one exception PROTOCOL "Retries" allows: a retry of a message
/// older than this connection's join page is acknowledged with that message again.
fn on_message(c: &mut ConnModel, cx: &Ctx<'_>, f: &Value) -> Check {
    let room = str_of(f, "room")?.to_owned();
    let seq = u64_of(f, "seq")?;
    room_message_persisted(cx.store, f)?;
    let view = c.views.get_mut(&room).expect("a member");
    if seq == view.last + 1 {
        view.last = seq;
    } else {
        let sent_before = f["clientMsgId"]
            .as_str()
            .is_some_and(|id| cx.users.get(&cx.me).is_some_and(|u| u.cmids.contains(id)));
        let retry_ack = seq < view.first && f["userId"] == cx.me.as_str() && sent_before;
        check!(
            retry_ack,
            "stream: {room} seq {seq} after {} (join page from {})",
            view.last,
            view.first
        );
    }
    c.seen.entry(room).or_default().insert(seq);
    Ok(())
}

fn on_dm_history(cx: &mut Ctx<'_>, f: &Value) -> Check {
    let other = str_of(f, "userId")?;
    let messages = list_of(f, "messages")?;
    check!(
        messages.len() <= cx.config.history_page_max,
        "bounds: a dm_history page of {}",
        messages.len()
    );
    for m in messages {
        let (from, to) = (str_of(m, "fromId")?, str_of(m, "toId")?);
        let me = cx.me.as_str();
        check!(
            (from == me && to == other) || (from == other && to == me),
            "privacy: {me} got {m} in its history with {other}"
        );
        dm_persisted(cx.store, m, false)?;
    }
    Ok(())
}

/// Property 4: never to the typing user's own connections; and only about users present.
fn on_typing(c: &mut ConnModel, cx: &Ctx<'_>, f: &Value) -> Check {
    let room = str_of(f, "room")?;
    let id = str_of(f, "userId")?.to_owned();
    check!(
        id != cx.me,
        "privacy: typing indicator of its own user: {f}"
    );
    let view = c.views.get_mut(room).expect("a member");
    check!(
        view.users.contains_key(&id),
        "presence: typing of a user not in the room: {f}"
    );
    if f["isTyping"] == true {
        view.typing.insert(id);
    } else {
        view.typing.remove(&id);
    }
    Ok(())
}

// ---- the store as the source of truth (property 2) -------------------------------------

fn as_json(event: &ServerEvent) -> Value {
    serde_json::from_slice(&encode(event)).expect("the encoder produces JSON")
}

/// `m`, a `message_received` object, is in the store, identical. Frames are read right
/// after the step that produced them, and a step performs at most one store request,
/// before the engine hears of it; so the store now is the store the frame was sent in.
fn room_message_persisted(store: &SimStore, m: &Value) -> Check {
    let room = str_of(m, "room")?;
    let seq = u64_of(m, "seq")?;
    let stored = store
        .room_messages(&room_name(room))
        .iter()
        .find(|s| s.seq.0 == seq);
    check!(
        stored.is_some_and(|s| as_json(&ServerEvent::MessageReceived(s.clone())) == *m),
        "persist before ack: {m} is not in the store as sent"
    );
    Ok(())
}

/// `m` is one of the store's DMs, as a `private_message` (or `_sent`) presents it.
fn dm_persisted(store: &mut SimStore, m: &Value, sent: bool) -> Check {
    let a = UserId::parse(str_of(m, "fromId")?).map_err(|e| e.to_string())?;
    let b = UserId::parse(str_of(m, "toId")?).map_err(|e| e.to_string())?;
    // Read the conversation through the store's own interface, without spending a
    // simulated failure.
    let failing = std::mem::take(&mut store.fail_next);
    let reply = store.perform(StoreOp::DmPage {
        a,
        b,
        range: PageRange::Latest { limit: usize::MAX },
    });
    store.fail_next = failing;
    let StoreReply::DmPage(Ok(page)) = reply else {
        return Err("the store could not read a conversation".into());
    };
    let found = page.messages.iter().any(|dm| {
        let event = if sent {
            ServerEvent::PrivateMessageSent(dm.clone())
        } else {
            ServerEvent::PrivateMessage(dm.clone())
        };
        as_json(&event) == *m
    });
    check!(
        found,
        "persist before ack: DM {m} is not in the store as sent"
    );
    Ok(())
}

/// The seqs of a `messages` list, checked to be one room's consecutive stored messages.
fn history_seqs(store: &SimStore, room: &str, messages: &[Value]) -> Result<Vec<u64>, String> {
    let mut seqs = Vec::with_capacity(messages.len());
    for m in messages {
        check!(
            m["room"] == room,
            "privacy: a {room} history holds another room's message {m}"
        );
        room_message_persisted(store, m)?;
        seqs.push(u64_of(m, "seq")?);
    }
    check!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "stream: a {room} history is not consecutive: {seqs:?}"
    );
    Ok(seqs)
}

fn str_of<'a>(f: &'a Value, key: &str) -> Result<&'a str, String> {
    f[key]
        .as_str()
        .ok_or_else(|| format!("`{key}` missing in {f}"))
}

fn u64_of(f: &Value, key: &str) -> Result<u64, String> {
    f[key]
        .as_u64()
        .ok_or_else(|| format!("`{key}` missing in {f}"))
}

fn list_of<'a>(f: &'a Value, key: &str) -> Result<&'a [Value], String> {
    f[key]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("`{key}` missing in {f}"))
}
