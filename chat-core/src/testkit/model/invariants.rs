//! Properties 3 and 5 over the whole state, checked after every step: the engine's
//! getters against the model.

use std::collections::BTreeMap;

use crate::{ConnId, RoomName};

use super::Check;
use super::ops::{ROOMS, person_of};
use super::state::{ConnModel, room_name};
use super::world::World;

impl World {
    pub(crate) fn check_invariants(&self) -> Check {
        self.check_membership()?;
        self.check_usernames()?;
        self.check_bounds()
    }

    /// Property 3: a room's members are exactly the connections told `room_joined` and
    /// not since `room_left` or gone; every member sees exactly the users of the room's
    /// members; a room nobody is in or on the way into is dropped.
    fn check_membership(&self) -> Check {
        let engine = &self.sim.engine;
        let open: Vec<&ConnModel> = self.conns.iter().filter(|c| c.open).collect();
        check!(
            engine.connection_count() == open.len(),
            "membership: the engine has {} connections, the model {}",
            engine.connection_count(),
            open.len()
        );
        let online = self.online_users();
        check!(
            engine.user_count() == online.len(),
            "presence: the engine counts {} users online, the model {}",
            engine.user_count(),
            online.len()
        );
        for c in &self.conns {
            let engine_rooms: Vec<&str> =
                engine.rooms_of(c.id).iter().map(RoomName::as_str).collect();
            check!(
                engine_rooms == c.rooms,
                "membership: the engine has {} in {engine_rooms:?}, its frames say {:?}",
                c.id,
                c.rooms
            );
        }
        let mut occupied = 0;
        for room in ROOMS {
            let members: Vec<&ConnModel> = open
                .iter()
                .copied()
                .filter(|c| c.rooms.iter().any(|r| r == room))
                .collect();
            let mut engine_members = engine.members_of(&room_name(room));
            engine_members.sort();
            let model_members: Vec<ConnId> = members.iter().map(|c| c.id).collect();
            check!(
                engine_members == model_members,
                "membership: {room} has {engine_members:?} in the engine, {model_members:?} by their frames"
            );
            occupied += usize::from(!members.is_empty());
            let present: BTreeMap<String, String> = members
                .iter()
                .filter_map(|c| c.user.clone())
                .map(|u| {
                    let name = self.users.get(&u).and_then(|m| m.name.clone());
                    (u, name.unwrap_or_default())
                })
                .collect();
            for c in &members {
                let seen = &c.views[room].users;
                check!(
                    *seen == present,
                    "presence: {} sees {seen:?} in {room}, its users are {present:?}",
                    c.id
                );
            }
        }
        if self.sim.held().is_empty() && self.parked.is_empty() {
            check!(
                engine.room_count() == occupied,
                "membership: {} rooms kept, {occupied} have members and no store work is out",
                engine.room_count()
            );
        }
        Ok(())
    }

    /// Property 3: no two online users hold names of one person.
    fn check_usernames(&self) -> Check {
        let mut holders = BTreeMap::new();
        for user in self.online_users() {
            let Some(name) = self.users.get(&user).and_then(|m| m.name.as_deref()) else {
                continue;
            };
            let person = person_of(name).expect("checked on username_set");
            if let Some(other) = holders.insert(person, user.clone()) {
                return Err(format!(
                    "usernames: {user} and {other} are both online as {name:?}"
                ));
            }
        }
        Ok(())
    }

    /// Property 5: store work is accounted for and bounded — at most one request per
    /// connection (open, or gone with its request still out) plus one gap fill per room;
    /// a user's appends and DM reads at most one per connection; a user's connections at
    /// most the configured cap.
    fn check_bounds(&self) -> Check {
        let engine = &self.sim.engine;
        let outstanding = self.sim.held().len() + self.parked.len();
        check!(
            engine.pending_store_ops() == outstanding,
            "bounds: the engine waits for {} store replies, {outstanding} are out",
            engine.pending_store_ops()
        );
        check!(
            self.tickets.len() == outstanding,
            "model: {} tickets tracked, {outstanding} out",
            self.tickets.len()
        );
        let live = |ci: usize| self.conns[ci].open || self.owns_requests(ci);
        let live_conns = (0..self.conns.len()).filter(|&ci| live(ci)).count();
        check!(
            outstanding <= live_conns + ROOMS.len(),
            "bounds: {outstanding} store requests out for {live_conns} connections and {} rooms",
            ROOMS.len()
        );
        for user in self.users.keys() {
            let of_user = |ci: &usize| self.conns[*ci].user.as_ref() == Some(user);
            let live_conns = (0..self.conns.len())
                .filter(of_user)
                .filter(|&ci| live(ci))
                .count();
            let open = (0..self.conns.len())
                .filter(of_user)
                .filter(|&ci| self.conns[ci].open)
                .count();
            let requests = self
                .tickets
                .values()
                .filter(|t| t.user.as_ref() == Some(user))
                .count();
            check!(
                requests <= live_conns,
                "bounds: {requests} appends/DM reads of {user} out from {live_conns} connections"
            );
            check!(
                open <= self.config.max_connections_per_user,
                "bounds: {user} holds {open} connections"
            );
        }
        Ok(())
    }
}
