//! The driver: runs each operation through the simulation, attributes the store
//! requests it starts, feeds every frame to the model, and checks after every step.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::testkit::sim::{Sim, StoreMode};
use crate::{CloseCode, Config, ConnId, Input, StoreOp, StoreReply, Ticket};
use serde_json::{Value, json};

use super::ops::{AUTH, CMIDS, MALFORMED, NAMES, Op, ROOMS, Resume};
use super::state::{
    Cause, ConnModel, Episode, Expect, JoinRequest, TicketInfo, UserModel, last_seq,
};
use super::{Check, Violation};

/// The simulation and the model of it: runs [`Op`]s through a [`Sim`] whose store holds
/// every request until an operation performs it, and checks the properties after every
/// step (see the [module docs](super)).
#[derive(Debug)]
pub struct World {
    pub(crate) sim: Sim,
    pub(crate) config: Config,
    pub(crate) conns: Vec<ConnModel>,
    pub(crate) users: BTreeMap<String, UserModel>,
    /// Every store request not answered yet (held or performed), by ticket.
    pub(crate) tickets: HashMap<Ticket, TicketInfo>,
    /// Performed requests whose replies are on their way back.
    pub(crate) parked: Vec<(Ticket, StoreReply)>,
    /// The one epoch every join reply must carry: the store never loses history.
    pub(crate) epoch: Option<String>,
    next_content: u64,
}

/// The room name an index designates; past the pool, an invalid (blank) one.
fn raw_room(index: usize) -> &'static str {
    ROOMS.get(index).copied().unwrap_or("   ")
}

impl World {
    /// A simulation of an engine with `config`, no connection yet.
    pub fn new(config: Config) -> Self {
        let mut sim = Sim::new(config.clone());
        sim.set_store_mode(StoreMode::Held);
        Self {
            sim,
            config,
            conns: Vec::new(),
            users: BTreeMap::new(),
            tickets: HashMap::new(),
            parked: Vec::new(),
            epoch: None,
            next_content: 0,
        }
    }

    /// The open connection `n` designates, if any is open.
    fn pick(&self, n: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].open)
            .collect();
        (!open.is_empty()).then(|| open[n % open.len()])
    }

    /// Like [`pick`](Self::pick), for room-scoped commands: three times in four a
    /// connection that is in a room, when there is one, so they land where they matter.
    fn pick_member(&self, n: usize) -> Option<usize> {
        let members: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].open && !self.conns[i].rooms.is_empty())
            .collect();
        if !n.is_multiple_of(4) && !members.is_empty() {
            return Some(members[n / 4 % members.len()]);
        }
        self.pick(n)
    }

    pub(crate) fn online_users(&self) -> BTreeSet<String> {
        self.conns
            .iter()
            .filter(|c| c.open)
            .filter_map(|c| c.user.clone())
            .collect()
    }

    pub(crate) fn owns_requests(&self, ci: usize) -> bool {
        self.tickets.values().any(|t| t.owner == Some(ci))
    }

    /// Runs one operation and checks every property; `Err` says which broke, and how.
    pub fn apply(&mut self, op: &Op) -> Result<(), Violation> {
        self.run_op(&op.normalised()).map_err(Violation)
    }

    /// Answers everything still out, lets every timer fire, and checks the end state
    /// (nothing stored is withheld from a member; no typing indicator is left on).
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.settle().map_err(Violation)
    }

    /// [`apply`](Self::apply) of an operation whose indices are within their pools.
    fn run_op(&mut self, op: &Op) -> Check {
        match *op {
            Op::Connect { auth, name, join } => self.connect(auth, name, join),
            Op::SetUsername { conn, name } => {
                self.send(conn, json!({"type":"set_username","username":NAMES[name]}))
            }
            Op::Join {
                conn,
                room,
                keep,
                ref resume,
            } => match self.pick(conn) {
                Some(ci) => self.join(ci, room, keep, resume),
                None => Ok(()),
            },
            Op::Leave { conn, room } => {
                let mut frame = json!({"type":"leave_room"});
                if let Some(r) = room {
                    frame["room"] = json!(raw_room(r));
                }
                self.send_in_room(conn, frame)
            }
            Op::Chat {
                conn,
                room,
                cmid,
                empty,
            } => self.chat(conn, room, cmid, empty),
            Op::Flood { conn } => {
                let Some(ci) = self.pick_member(conn) else {
                    return Ok(());
                };
                for _ in 0..self.config.max_queued_commands + 2 {
                    if !self.conns[ci].open {
                        break;
                    }
                    let frame = json!({"type":"chat_message","content":"flood"});
                    self.send_from(ci, |w, id| w.sim.send(id, frame))?;
                }
                Ok(())
            }
            Op::Dm { conn, target, cmid } => {
                let online: Vec<String> = self.online_users().into_iter().collect();
                let target = match target {
                    Some(n) if !online.is_empty() => online[n % online.len()].clone(),
                    _ => "nobody".to_owned(),
                };
                let mut frame =
                    json!({"type":"private_message","targetId":target,"content":"psst"});
                if let Some(k) = cmid {
                    frame["clientMsgId"] = json!(CMIDS[k]);
                }
                self.send(conn, frame)
            }
            Op::Typing { conn, room, start } => {
                let kind = if start { "typing_start" } else { "typing_stop" };
                let mut frame = json!({ "type": kind });
                if let Some(r) = room {
                    frame["room"] = json!(raw_room(r));
                }
                self.send_in_room(conn, frame)
            }
            Op::History {
                conn,
                room,
                before,
                limit,
            } => {
                let mut frame = json!({"type":"history","room":raw_room(room)});
                if let Some(b) = before {
                    frame["before"] = json!(b);
                }
                if let Some(l) = limit {
                    frame["limit"] = json!(l);
                }
                self.send_in_room(conn, frame)
            }
            Op::DmHistory { conn, other } => {
                let known: Vec<&String> = self.users.keys().collect();
                let other = match other {
                    Some(n) if !known.is_empty() => known[n % known.len()].clone(),
                    Some(_) => "nobody".to_owned(),
                    None => String::new(),
                };
                self.send(conn, json!({"type":"dm_history","userId":other}))
            }
            Op::Disconnect { conn } => {
                let Some(ci) = self.pick(conn) else {
                    return Ok(());
                };
                self.step(Cause::Quiet, |w| {
                    w.sim.disconnect(w.conns[ci].id);
                    w.conns[ci].forget();
                })
            }
            Op::Advance { ms } => self.step(Cause::Timer, |w| {
                w.sim.advance(Duration::from_millis(ms));
            }),
            Op::Complete { index } => self.complete(index),
            Op::Perform { index } => self.perform(index),
            Op::PerformAll => {
                while !self.sim.held().is_empty() {
                    self.perform(0)?;
                }
                Ok(())
            }
            Op::Deliver { index } => self.deliver(index),
            Op::FailNext => {
                self.sim.store.fail_next = (self.sim.store.fail_next + 1).min(2);
                Ok(())
            }
            Op::Malformed { conn, kind } => {
                let Some(ci) = self.pick(conn) else {
                    return Ok(());
                };
                self.send_from(ci, |w, id| w.sim.send_raw(id, MALFORMED[kind]))
            }
        }
    }

    fn connect(&mut self, auth: Option<usize>, name: Option<usize>, join: Option<usize>) -> Check {
        self.step(Cause::Quiet, |w| {
            let id = match auth {
                Some(a) => w.sim.connect_as(AUTH[a].0, AUTH[a].1),
                None => w.sim.connect(),
            };
            w.conns.push(ConnModel::new(id, auth));
        })?;
        let ci = self.conns.len() - 1;
        if let Some(name) = name
            && auth.is_none()
        {
            let frame = json!({"type":"set_username","username":NAMES[name]});
            self.send_from(ci, |w, id| w.sim.send(id, frame))?;
        }
        match join {
            Some(room) if self.conns[ci].open => self.join(ci, room, true, &Resume::No),
            _ => Ok(()),
        }
    }

    fn send(&mut self, conn: usize, frame: Value) -> Check {
        match self.pick(conn) {
            Some(ci) => self.send_from(ci, |w, id| w.sim.send(id, frame)),
            None => Ok(()),
        }
    }

    fn send_in_room(&mut self, conn: usize, frame: Value) -> Check {
        match self.pick_member(conn) {
            Some(ci) => self.send_from(ci, |w, id| w.sim.send(id, frame)),
            None => Ok(()),
        }
    }

    fn send_from(&mut self, ci: usize, send: impl FnOnce(&mut World, ConnId)) -> Check {
        let id = self.conns[ci].id;
        self.step(Cause::Send(ci), |w| send(w, id))
    }

    fn join(&mut self, ci: usize, room: usize, keep: bool, resume: &Resume) -> Check {
        let Some(&name) = ROOMS.get(room) else {
            let frame = json!({"type":"join_room","room":raw_room(room),"keepRooms":keep});
            return self.send_from(ci, |w, id| w.sim.send(id, frame));
        };
        // Spell the room as a client might; the engine trims and lower-cases.
        let raw = if ci.is_multiple_of(2) {
            name.to_owned()
        } else {
            format!("  {}  ", name.to_uppercase())
        };
        let c = &self.conns[ci];
        let seen = |n: usize| {
            c.seen
                .get(name)
                .filter(|s| !s.is_empty())
                .and_then(|s| s.iter().nth(n % s.len()).copied())
                .unwrap_or(0)
        };
        let known_epoch = c.epochs.get(name).cloned();
        let store_last = last_seq(&self.sim.store, name);
        let (since, epoch) = match *resume {
            Resume::No => (None, None),
            Resume::Seen(n) => (Some(seen(n)), known_epoch),
            Resume::Future => (Some(store_last + 100), known_epoch),
            Resume::WrongEpoch => (Some(seen(0)), Some("another-epoch".to_owned())),
        };
        let mut frame = json!({"type":"join_room","room":raw,"keepRooms":keep});
        if let Some(s) = since {
            frame["since"] = json!(s);
        }
        if let Some(e) = &epoch {
            frame["epoch"] = json!(e);
        }
        self.conns[ci].joins.push(JoinRequest {
            room: name.to_owned(),
            since,
            epoch,
            since_in_range: since.is_some_and(|s| s <= store_last),
        });
        self.send_from(ci, |w, id| w.sim.send(id, frame))
    }

    fn chat(
        &mut self,
        conn: usize,
        room: Option<usize>,
        cmid: Option<usize>,
        empty: bool,
    ) -> Check {
        let Some(ci) = self.pick_member(conn) else {
            return Ok(());
        };
        self.next_content += 1;
        let content = if empty {
            "   ".to_owned()
        } else {
            format!("m{}", self.next_content)
        };
        let mut frame = json!({"type":"chat_message","content":content});
        if let Some(r) = room {
            frame["room"] = json!(raw_room(r));
        }
        if let Some(k) = cmid {
            frame["clientMsgId"] = json!(CMIDS[k]);
            if let Some(user) = &self.conns[ci].user {
                let u = self.users.entry(user.clone()).or_default();
                u.cmids.insert(CMIDS[k].to_owned());
            }
        }
        self.send_from(ci, |w, id| w.sim.send(id, frame))
    }

    pub(crate) fn complete(&mut self, index: usize) -> Check {
        if self.sim.held().is_empty() {
            return Ok(());
        }
        let i = index % self.sim.held().len();
        let ticket = self.sim.held()[i].ticket;
        self.step(Cause::Reply(ticket), |w| w.sim.complete(i))
    }

    fn perform(&mut self, index: usize) -> Check {
        if self.sim.held().is_empty() {
            return Ok(());
        }
        let i = index % self.sim.held().len();
        self.step(Cause::Quiet, |w| {
            let request = w.sim.take_held(i).expect("index in range");
            let reply = w.sim.store.perform(request.op);
            w.parked.push((request.ticket, reply));
        })
    }

    pub(crate) fn deliver(&mut self, index: usize) -> Check {
        if self.parked.is_empty() {
            return Ok(());
        }
        let i = index % self.parked.len();
        let ticket = self.parked[i].0;
        self.step(Cause::Reply(ticket), |w| {
            let (ticket, reply) = w.parked.remove(i);
            w.sim.input(Input::StoreReply { ticket, reply });
        })
    }

    /// Runs one input through the engine, then reads every connection's frames into the
    /// model and checks every property.
    pub(crate) fn step(&mut self, cause: Cause, act: impl FnOnce(&mut World)) -> Check {
        let before: HashSet<Ticket> = self.sim.held().iter().map(|r| r.ticket).collect();
        let sender_waited = match cause {
            Cause::Send(ci) => self.owns_requests(ci),
            _ => false,
        };
        let reply_owner = match cause {
            Cause::Reply(t) => {
                let info = self.tickets.remove(&t);
                check!(info.is_some(), "model: a reply to unknown ticket {t:?}");
                info.and_then(|i| i.owner)
            }
            _ => None,
        };

        act(self);

        let started = self.attribute_new_requests(cause, reply_owner, &before)?;
        if let Some(ep) = reply_owner.and_then(|o| self.conns[o].episode.as_mut()) {
            ep.exact = false;
        }

        // Every connection's frames, in order. A connection the engine closed in this
        // step may still have frames from before its close.
        let newly_closed: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].open && self.sim.closed(self.conns[i].id).is_some())
            .collect();
        let mut frames_and_refusals = vec![(0, 0); self.conns.len()];
        for (ci, counts) in frames_and_refusals.iter_mut().enumerate() {
            let frames = self.sim.take(self.conns[ci].id);
            check!(
                self.conns[ci].open || newly_closed.contains(&ci) || frames.is_empty(),
                "conn {ci} received {frames:?} after it was gone"
            );
            for frame in &frames {
                counts.0 += 1;
                if frame["code"] == "too_many_requests" {
                    counts.1 += 1;
                }
                self.on_frame(ci, frame)
                    .map_err(|e| format!("conn {ci}: {e}"))?;
            }
            check!(
                matches!(self.conns[ci].expect, Expect::Anything),
                "conn {ci}: join replies incomplete: {:?}",
                self.conns[ci].expect
            );
        }

        // Property 5: the queued-command cap, checked before a close forgets the
        // connection (the refusal that exhausts its budget still counts).
        for (ci, &(_, refused)) in frames_and_refusals.iter().enumerate() {
            check!(
                refused == 0 || matches!(cause, Cause::Send(s) if s == ci),
                "bounds: conn {ci} refused with too_many_requests for no frame of its own"
            );
        }
        if let Cause::Send(ci) = cause {
            let (frames, refused) = frames_and_refusals[ci];
            self.check_backlog(ci, sender_waited, started, frames, refused)?;
        }
        for ci in newly_closed {
            self.on_closed(ci)?;
        }
        for c in 0..self.conns.len() {
            if !self.owns_requests(c) {
                // Idle: every frame it sent has been handled.
                self.conns[c].episode = None;
                self.conns[c].joins.clear();
            }
        }
        self.check_invariants()
    }

    /// Records the store requests the step started and whom they belong to. Returns
    /// whether any started.
    fn attribute_new_requests(
        &mut self,
        cause: Cause,
        reply_owner: Option<usize>,
        before: &HashSet<Ticket>,
    ) -> Result<bool, String> {
        let new: Vec<_> = self
            .sim
            .held()
            .iter()
            .filter(|r| !before.contains(&r.ticket))
            .cloned()
            .collect();
        match cause {
            Cause::Send(_) => check!(
                new.len() <= 1,
                "bounds: one frame started {} store requests",
                new.len()
            ),
            Cause::Quiet => check!(new.is_empty(), "bounds: {new:?} started by nothing"),
            Cause::Reply(_) | Cause::Timer => {}
        }
        let owner = match cause {
            Cause::Send(ci) => Some(ci),
            Cause::Reply(_) => reply_owner,
            Cause::Timer | Cause::Quiet => None,
        };
        for request in &new {
            let user = match &request.op {
                StoreOp::AppendRoom(m) => Some(m.user_id.to_string()),
                StoreOp::AppendDm(m) => Some(m.from.to_string()),
                StoreOp::DmPage { a, .. } => Some(a.to_string()),
                StoreOp::RoomPage { .. } => None,
            };
            self.tickets
                .insert(request.ticket, TicketInfo { owner, user });
        }
        Ok(!new.is_empty())
    }

    /// Property 5: a connection waiting for the store queues at most
    /// `max_queued_commands` frames and refuses the next one with `too_many_requests`;
    /// a queued frame has no effect before its turn.
    fn check_backlog(
        &mut self,
        ci: usize,
        waited: bool,
        started: bool,
        frames: usize,
        refused: usize,
    ) -> Check {
        let cap = self.config.max_queued_commands;
        let c = &mut self.conns[ci];
        match c.episode.as_mut() {
            Some(ep) if waited && ep.exact => {
                check!(
                    !started,
                    "order: conn {ci} ran a command while waiting for the store"
                );
                if ep.queued >= cap {
                    check!(
                        refused == 1,
                        "bounds: conn {ci} had {} queued (cap {cap}) and was not refused",
                        ep.queued
                    );
                } else {
                    check!(
                        refused == 0,
                        "bounds: conn {ci} refused with only {} queued (cap {cap})",
                        ep.queued
                    );
                    ep.queued += 1;
                }
                check!(
                    frames == refused,
                    "order: a queued command of conn {ci} took effect before its turn"
                );
            }
            // It started a request, so it was idle: a new wait begins.
            _ if started => {
                check!(refused == 0, "bounds: conn {ci} refused while idle");
                c.episode = Some(Episode {
                    queued: 0,
                    exact: true,
                });
            }
            episode => {
                let queued = episode.as_ref().map_or(0, |e| e.queued);
                check!(
                    refused == 0 || queued >= cap,
                    "bounds: conn {ci} refused with at most {queued} queued (cap {cap})"
                );
                if let Some(ep) = episode
                    && refused == 0
                {
                    ep.queued += 1;
                }
            }
        }
        Ok(())
    }

    /// The engine closed a connection: check why, and report it gone as a driver must.
    fn on_closed(&mut self, ci: usize) -> Check {
        let (code, reason) = self.sim.closed(self.conns[ci].id).expect("closed");
        let c = &self.conns[ci];
        let greeted = c.user.is_some();
        if code == CloseCode::POLICY && !greeted {
            // Refused at connect: its user holds too many connections.
            let auth = c.auth.expect("anonymous connections are always accepted");
            let open = self
                .conns
                .iter()
                .filter(|o| o.open && o.user.as_deref() == Some(AUTH[auth].0))
                .count();
            check!(
                open >= self.config.max_connections_per_user,
                "conn {ci} refused for too many connections with {open} open"
            );
        } else {
            // Otherwise only a spent refusal budget closes a connection here.
            check!(
                code == CloseCode::POLICY,
                "conn {ci} closed with unexpected {code:?} ({reason})"
            );
        }
        self.conns[ci].forget();
        let id = self.conns[ci].id;
        self.sim.disconnect(id);
        Ok(())
    }

    fn settle(&mut self) -> Check {
        self.sim.store.fail_next = 0;
        let settle = self.config.typing_timeout + Duration::from_secs(1);
        for _ in 0..20 {
            while !self.parked.is_empty() {
                self.deliver(0)?;
            }
            while !self.sim.held().is_empty() {
                self.complete(0)?;
            }
            // Typing indicators stop by themselves; failed gap fills are retried.
            self.step(Cause::Timer, |w| w.sim.advance(settle))?;
            if self.sim.held().is_empty() {
                break;
            }
        }
        check!(
            self.sim.held().is_empty() && self.sim.engine.pending_store_ops() == 0,
            "store work still out after settling"
        );
        for (ci, c) in self.conns.iter().enumerate().filter(|(_, c)| c.open) {
            for room in &c.rooms {
                let view = &c.views[room];
                let end = last_seq(&self.sim.store, room);
                // Property 1: nothing stored is withheld from a member.
                check!(
                    view.last == end,
                    "stream: conn {ci} stopped at {room} seq {} but the store ends at {end}",
                    view.last
                );
                check!(
                    view.typing.is_empty(),
                    "typing: conn {ci} still sees {:?} typing in {room}",
                    view.typing
                );
            }
        }
        Ok(())
    }
}
