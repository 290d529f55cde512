//! [`BusCore`]: the semantics of a cluster bus as one synchronous state machine — the
//! registry (room members, online users, name claims, live nodes) and who receives
//! which announcement — shared by the async [`MemoryCluster`](super::MemoryCluster)
//! and the deterministic [`Mesh`](super::Mesh).
//!
//! Each node also keeps its own record of what it asserted (rooms, members, online
//! users), as a real bus client does: when a node comes back from a disconnection (or
//! from being declared down while it was only paused) it re-asserts that record and gets
//! a fresh `RoomMembers` for every room it listens to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cluster::{ClusterEvent, ClusterOp, ClusterReply, NodeId, RemoteMember};
use crate::ids::{RoomName, UserId, Username};

/// An event for one node.
pub type Delivery = (NodeId, ClusterEvent);

/// What a node asserted, kept by the node itself.
#[derive(Debug, Default, Clone)]
struct Record {
    rooms: BTreeSet<RoomName>,
    members: BTreeMap<(RoomName, UserId), Arc<str>>,
    users: BTreeMap<UserId, Option<Username>>,
}

/// One node's link to the bus.
#[derive(Debug, Default)]
struct Link {
    connected: bool,
    /// In the registry (not reaped).
    alive: bool,
    record: Record,
    /// Announcements to this node still to drop (fault injection).
    drop_next: usize,
    /// Stored messages and DMs this node announced while cut off, published when it is
    /// back (late is harmless: receivers ignore what they have and fill what they miss).
    unsent: Vec<ClusterOp>,
}

/// The bus's shared state: the registry (room members, online users, name claims, live
/// nodes), who receives which announcement, and the fault knobs. Each node also keeps
/// its own record of what it asserted, as a real bus client does: when a node comes back
/// from a disconnection (or from being declared down while it was only paused) it
/// re-asserts that record and gets a fresh `RoomMembers` for every room it listens to.
#[derive(Debug, Default)]
pub struct BusCore {
    links: BTreeMap<NodeId, Link>,
    /// room → (node, user) → name.
    members: BTreeMap<RoomName, BTreeMap<(NodeId, UserId), Arc<str>>>,
    /// user → node → name.
    online: BTreeMap<UserId, BTreeMap<NodeId, Option<Username>>>,
    /// name key → (holder, name).
    names: BTreeMap<String, (UserId, Username)>,
}

impl BusCore {
    /// Registers `node` (connected and alive).
    pub fn add_node(&mut self, node: &NodeId) {
        let link = self.links.entry(node.clone()).or_default();
        link.connected = true;
        link.alive = true;
    }

    /// Whether `node` is connected.
    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.links.get(node).is_some_and(|l| l.connected)
    }

    /// Whether `node` is in the registry (not reaped).
    pub fn is_alive(&self, node: &NodeId) -> bool {
        self.links.get(node).is_some_and(|l| l.alive)
    }

    /// Drops the next `n` announcements (joined, left, message, typing, dm) meant for
    /// `node`, as a lost pub/sub message would.
    pub fn drop_next(&mut self, node: &NodeId, n: usize) {
        if let Some(link) = self.links.get_mut(node) {
            link.drop_next += n;
        }
    }

    /// Forgets the announcements still to drop for `node`.
    pub fn stop_dropping(&mut self, node: &NodeId) {
        if let Some(link) = self.links.get_mut(node) {
            link.drop_next = 0;
        }
    }

    /// Cuts `node` off the bus: its announcements and registry writes are lost (it
    /// keeps its own record), its requests fail, nothing reaches it.
    pub fn disconnect(&mut self, node: &NodeId) {
        if let Some(link) = self.links.get_mut(node) {
            link.connected = false;
        }
    }

    /// Reconnects `node`: it re-asserts its record (the others see `Joined`/`Left` for
    /// what changed meanwhile), gets `RoomMembers` for each room it listens to, and
    /// publishes the messages and DMs it stored while cut off.
    pub fn reconnect(&mut self, node: &NodeId) -> Vec<Delivery> {
        let Some(link) = self.links.get_mut(node) else {
            return Vec::new();
        };
        link.connected = true;
        link.alive = true;
        let record = link.record.clone();
        let mut out = Vec::new();
        // Registry entries of this node that its record no longer has.
        let stale: Vec<(RoomName, UserId)> = self
            .members
            .iter()
            .flat_map(|(room, m)| {
                m.keys()
                    .filter(|(n, _)| n == node)
                    .map(move |(_, u)| (room.clone(), u.clone()))
            })
            .filter(|key| !record.members.contains_key(key))
            .collect();
        for (room, user) in stale {
            self.remove_member(&room, node, &user);
            out.extend(self.to_room(node, &room, |n| ClusterEvent::Left {
                node: n,
                room: room.clone(),
                user: user.clone(),
            }));
        }
        for ((room, user), name) in &record.members {
            let key = (node.clone(), user.clone());
            let entries = self.members.entry(room.clone()).or_default();
            if entries.insert(key, name.clone()).is_none() {
                out.extend(self.to_room(node, room, |n| ClusterEvent::Joined {
                    node: n,
                    room: room.clone(),
                    user: user.clone(),
                    name: name.clone(),
                }));
            }
        }
        for (user, name) in &record.users {
            self.online
                .entry(user.clone())
                .or_default()
                .insert(node.clone(), name.clone());
        }
        for room in &record.rooms {
            out.push((node.clone(), self.snapshot(node, room)));
        }
        let mut out = self.filter(out);
        let unsent = self
            .links
            .get_mut(node)
            .map(|l| std::mem::take(&mut l.unsent))
            .unwrap_or_default();
        for op in unsent {
            out.extend(self.perform(node, op));
        }
        out
    }

    /// Reaps `node` (its lease expired, or it left cleanly): its members and online
    /// entries leave the registry, names no node holds any more are released, and the
    /// other nodes get `NodeDown`. The node itself is cut off until
    /// [`reconnect`](Self::reconnect)ed (a paused node that resumes).
    pub fn declare_down(&mut self, node: &NodeId) -> Vec<Delivery> {
        let Some(link) = self.links.get_mut(node) else {
            return Vec::new();
        };
        link.connected = false;
        link.alive = false;
        for entries in self.members.values_mut() {
            entries.retain(|(n, _), _| n != node);
        }
        self.members.retain(|_, m| !m.is_empty());
        let users: Vec<UserId> = self
            .online
            .iter()
            .filter(|(_, nodes)| nodes.contains_key(node))
            .map(|(u, _)| u.clone())
            .collect();
        for user in users {
            self.user_offline(node, &user);
        }
        let out = self
            .links
            .iter()
            .filter(|(n, l)| *n != node && l.connected)
            .map(|(n, _)| (n.clone(), ClusterEvent::NodeDown { node: node.clone() }))
            .collect();
        self.filter(out)
    }

    /// Performs `op` from `from`; returns what each node receives.
    pub fn perform(&mut self, from: &NodeId, op: ClusterOp) -> Vec<Delivery> {
        let Some(link) = self.links.get_mut(from) else {
            return Vec::new();
        };
        // The node's own record follows every op, connected or not.
        let record = &mut link.record;
        match &op {
            ClusterOp::Subscribe { room } => {
                record.rooms.insert(room.clone());
            }
            ClusterOp::Unsubscribe { room } => {
                record.rooms.remove(room);
            }
            ClusterOp::Joined { room, user, name } => {
                record
                    .members
                    .insert((room.clone(), user.clone()), name.clone());
            }
            ClusterOp::Left { room, user } => {
                record.members.remove(&(room.clone(), user.clone()));
            }
            ClusterOp::UserOnline { user, name } => {
                record.users.insert(user.clone(), name.clone());
            }
            ClusterOp::UserOffline { user } => {
                record.users.remove(user);
            }
            _ => {}
        }
        if !link.connected {
            // Requests fail and subscriptions cannot be read; the rest is lost (and
            // re-asserted on reconnect).
            let failed = match (&op, op.ticket()) {
                (_, Some(ticket)) => ClusterEvent::Reply {
                    ticket,
                    reply: ClusterReply::Failed,
                },
                (ClusterOp::Subscribe { room }, None) => {
                    ClusterEvent::RoomUnavailable { room: room.clone() }
                }
                (ClusterOp::Message { .. } | ClusterOp::Dm { .. }, None) => {
                    link.unsent.push(op);
                    return Vec::new();
                }
                _ => return Vec::new(),
            };
            return vec![(from.clone(), failed)];
        }
        let out = match op {
            ClusterOp::Subscribe { room } => vec![(from.clone(), self.snapshot(from, &room))],
            ClusterOp::Unsubscribe { .. } => Vec::new(),
            ClusterOp::Joined { room, user, name } => {
                self.members
                    .entry(room.clone())
                    .or_default()
                    .insert((from.clone(), user.clone()), name.clone());
                self.to_room(from, &room, |node| ClusterEvent::Joined {
                    node,
                    room: room.clone(),
                    user: user.clone(),
                    name: name.clone(),
                })
            }
            ClusterOp::Left { room, user } => {
                self.remove_member(&room, from, &user);
                self.to_room(from, &room, |node| ClusterEvent::Left {
                    node,
                    room: room.clone(),
                    user: user.clone(),
                })
            }
            ClusterOp::Message { room, message } => {
                self.to_room(from, &room, |_| ClusterEvent::Message {
                    room: room.clone(),
                    message: message.clone(),
                })
            }
            ClusterOp::Typing {
                room,
                user,
                name,
                on,
            } => self.to_room(from, &room, |node| ClusterEvent::Typing {
                node,
                room: room.clone(),
                user: user.clone(),
                name: name.clone(),
                on,
            }),
            ClusterOp::UserOnline { user, name } => {
                self.online
                    .entry(user)
                    .or_default()
                    .insert(from.clone(), name);
                Vec::new()
            }
            ClusterOp::UserOffline { user } => {
                self.user_offline(from, &user);
                Vec::new()
            }
            ClusterOp::Dm { message } => {
                // Once per node, even when it has both users.
                self.links
                    .iter()
                    .filter(|(n, l)| *n != from && l.connected)
                    .filter(|(_, l)| {
                        l.record.users.contains_key(&message.to)
                            || l.record.users.contains_key(&message.from)
                    })
                    .map(|(n, _)| {
                        (
                            n.clone(),
                            ClusterEvent::Dm {
                                message: message.clone(),
                            },
                        )
                    })
                    .collect()
            }
            ClusterOp::ClaimName {
                ticket,
                user,
                candidates,
            } => {
                let won = candidates.into_iter().find(|c| {
                    self.names
                        .get(c.key())
                        .is_none_or(|(holder, _)| *holder == user)
                });
                if let Some(name) = &won {
                    self.names
                        .insert(name.key().to_owned(), (user.clone(), name.clone()));
                }
                vec![(
                    from.clone(),
                    ClusterEvent::Reply {
                        ticket,
                        reply: ClusterReply::Name(won),
                    },
                )]
            }
            ClusterOp::ReleaseName { user, name } => {
                if self
                    .names
                    .get(name.key())
                    .is_some_and(|(holder, _)| *holder == user)
                {
                    self.names.remove(name.key());
                }
                Vec::new()
            }
            ClusterOp::LookupUser { ticket, user } => {
                let name = self
                    .online
                    .get(&user)
                    .and_then(|nodes| nodes.values().flatten().next())
                    .map(Username::shared);
                vec![(
                    from.clone(),
                    ClusterEvent::Reply {
                        ticket,
                        reply: ClusterReply::User(name),
                    },
                )]
            }
        };
        self.filter(out)
    }

    /// Who holds the name with `key`, if anyone.
    pub fn name_holder(&self, key: &str) -> Option<&UserId> {
        self.names.get(key).map(|(holder, _)| holder)
    }

    /// The registry's members of `room`, as (node, user).
    pub fn room_members(&self, room: &RoomName) -> Vec<(NodeId, UserId)> {
        self.members
            .get(room)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn remove_member(&mut self, room: &RoomName, node: &NodeId, user: &UserId) {
        if let Some(entries) = self.members.get_mut(room) {
            entries.remove(&(node.clone(), user.clone()));
            if entries.is_empty() {
                self.members.remove(room);
            }
        }
    }

    /// `node` no longer has `user`; its names are released when no node has it.
    fn user_offline(&mut self, node: &NodeId, user: &UserId) {
        let Some(nodes) = self.online.get_mut(user) else {
            return;
        };
        nodes.remove(node);
        if nodes.is_empty() {
            self.online.remove(user);
            self.names.retain(|_, (holder, _)| holder != user);
        }
    }

    /// The member snapshot of `room` for `node` (its own entries left out).
    fn snapshot(&self, node: &NodeId, room: &RoomName) -> ClusterEvent {
        let members = self
            .members
            .get(room)
            .into_iter()
            .flatten()
            .filter(|((n, _), _)| n != node)
            .map(|((n, user), name)| RemoteMember {
                node: n.clone(),
                user: user.clone(),
                name: name.clone(),
            })
            .collect();
        ClusterEvent::RoomMembers {
            room: room.clone(),
            members,
        }
    }

    /// `event` (given the origin node) for every other connected node listening to
    /// `room`.
    fn to_room(
        &self,
        from: &NodeId,
        room: &RoomName,
        event: impl Fn(NodeId) -> ClusterEvent,
    ) -> Vec<Delivery> {
        self.links
            .iter()
            .filter(|(n, l)| *n != from && l.connected && l.record.rooms.contains(room))
            .map(|(n, _)| (n.clone(), event(from.clone())))
            .collect()
    }

    /// Applies the fault knobs: nothing reaches a disconnected node, and announcements
    /// to a node with `drop_next` left are dropped.
    fn filter(&mut self, out: Vec<Delivery>) -> Vec<Delivery> {
        out.into_iter()
            .filter(|(node, event)| {
                let Some(link) = self.links.get_mut(node) else {
                    return false;
                };
                if !link.connected {
                    return false;
                }
                let announcement = matches!(
                    event,
                    ClusterEvent::Joined { .. }
                        | ClusterEvent::Left { .. }
                        | ClusterEvent::Message { .. }
                        | ClusterEvent::Typing { .. }
                        | ClusterEvent::Dm { .. }
                );
                if announcement && link.drop_next > 0 {
                    link.drop_next -= 1;
                    return false;
                }
                true
            })
            .collect()
    }
}
