//! A Jepsen-style checker of room histories: what every client saw, in the order it saw
//! it, checked against the rules of the cluster (ISSUE 15):
//!
//! * every `(room, seq)` is one message everywhere, and one `clientMsgId` of one user is
//!   stored once (idempotent retries);
//! * a client sees a room's messages in `seq` order, without gap or duplicate, from its
//!   join (or the `lastSeq` of its join reply) for as long as it is a member — across a
//!   disconnect and a resume on another node too;
//! * nothing reaches a client for a room it is not in;
//! * every acknowledged message reaches every member present: each client still in a
//!   room at the end has reached the room's head (with the rule above, that is every
//!   message of its membership, exactly once). A client whose connection ended is
//!   present again only once it resumed; one that never came back is checked up to its
//!   disconnection;
//! * so the order is the same everywhere (one message per `seq`, `seq` order for all).
//!
//! Pure data: the recorder (`support::cluster`) fills the histories.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A room message as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg {
    pub(crate) room: String,
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) client_msg_id: Option<String>,
}

impl Msg {
    /// From a `message_received` object (live or in a history).
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Msg> {
        Some(Msg {
            room: v["room"].as_str()?.to_owned(),
            seq: v["seq"].as_u64()?,
            id: v["id"].as_str()?.to_owned(),
            user: v["userId"].as_str()?.to_owned(),
            client_msg_id: v["clientMsgId"].as_str().map(str::to_owned),
        })
    }
}

/// One step of a client's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A join reply was complete: its history (every `message_history` frame), the
    /// room's head then (`lastSeq`), and whether it was a resume that recovered.
    Joined {
        room: String,
        last_seq: u64,
        recovered: bool,
        resumed: bool,
        history: Vec<Msg>,
    },
    /// A live `message_received`.
    Live(Msg),
    /// The client left a room.
    Left { room: String },
    /// The connection ended.
    Disconnected,
}

/// Everything one client did and saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientHistory {
    /// A label for reports (user and node).
    pub(crate) label: String,
    /// The client's user id.
    pub(crate) user: String,
    /// `(room, clientMsgId)` of every message it sent (a resend counts once).
    pub(crate) sent: Vec<(String, String)>,
    /// What it saw, in order.
    pub(crate) seen: Vec<Seen>,
}

/// The checker's verdict and counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub(crate) sent: usize,
    pub(crate) acknowledged: usize,
    /// Messages each client received live or in a resume (fresh joins' history not counted).
    pub(crate) delivered: Vec<(String, usize)>,
    pub(crate) violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {}, acknowledged {}, violations {}",
            self.sent,
            self.acknowledged,
            self.violations.len()
        )?;
        let delivered: Vec<String> = self
            .delivered
            .iter()
            .map(|(label, n)| format!("{label}={n}"))
            .collect();
        writeln!(f, "delivered per client: {}", delivered.join(" "))?;
        for v in self.violations.iter().take(20) {
            writeln!(f, "VIOLATION: {v}")?;
        }
        Ok(())
    }
}

/// Checks `histories` (see the module docs).
pub(crate) fn check(histories: &[ClientHistory]) -> Report {
    let mut report = Report::default();
    let mut violations = Vec::new();
    // Every message anyone saw: (room, seq) → id, and (room, user, clientMsgId) → id.
    let mut by_seq: HashMap<(String, u64), String> = HashMap::new();
    let mut by_client_id: HashMap<(String, String, String), String> = HashMap::new();
    let mut head: BTreeMap<String, u64> = BTreeMap::new();
    let mut joined_heads: Vec<(String, u64)> = Vec::new();
    let mut note = |m: &Msg, violations: &mut Vec<String>| {
        let id = by_seq
            .entry((m.room.clone(), m.seq))
            .or_insert_with(|| m.id.clone());
        if *id != m.id {
            violations.push(format!(
                "room {} seq {} is two messages: {} and {}",
                m.room, m.seq, id, m.id
            ));
        }
        if let Some(cmid) = &m.client_msg_id {
            let id = by_client_id
                .entry((m.room.clone(), m.user.clone(), cmid.clone()))
                .or_insert_with(|| m.id.clone());
            if *id != m.id {
                violations.push(format!(
                    "clientMsgId {cmid} of {} in {} stored twice: {} and {}",
                    m.user, m.room, id, m.id
                ));
            }
        }
        let h = head.entry(m.room.clone()).or_default();
        *h = (*h).max(m.seq);
    };
    for h in histories {
        for seen in &h.seen {
            match seen {
                Seen::Live(m) => note(m, &mut violations),
                Seen::Joined {
                    room,
                    last_seq,
                    history,
                    ..
                } => {
                    for m in history {
                        note(m, &mut violations);
                    }
                    joined_heads.push((room.clone(), *last_seq));
                }
                _ => {}
            }
        }
    }

    for (room, last_seq) in joined_heads {
        let h = head.entry(room).or_default();
        *h = (*h).max(last_seq);
    }

    for h in histories {
        let mut cursor: BTreeMap<String, u64> = BTreeMap::new();
        // Rooms whose membership is suspended by a disconnection (until a resume).
        let mut away = false;
        let mut delivered = 0;
        let mut acked: BTreeSet<(String, String)> = BTreeSet::new();
        let ack = |m: &Msg, acked: &mut BTreeSet<(String, String)>| {
            if m.user == h.user
                && let Some(cmid) = &m.client_msg_id
            {
                acked.insert((m.room.clone(), cmid.clone()));
            }
        };
        for seen in &h.seen {
            match seen {
                Seen::Joined {
                    room,
                    last_seq,
                    recovered,
                    resumed,
                    history,
                } => {
                    for m in history {
                        ack(m, &mut acked);
                        if m.room != *room {
                            violations.push(format!(
                                "{}: join of {room} replied with a message of {}",
                                h.label, m.room
                            ));
                        }
                    }
                    if *resumed {
                        if !recovered {
                            violations.push(format!(
                                "{}: resume of {room} did not recover (at seq {:?}, head {last_seq})",
                                h.label,
                                cursor.get(room)
                            ));
                        }
                        let mut at = cursor.get(room).copied().unwrap_or(0);
                        for m in history {
                            if m.seq != at + 1 {
                                violations.push(format!(
                                    "{}: resume of {room} gave seq {} after {at}",
                                    h.label, m.seq
                                ));
                            }
                            at = m.seq;
                            delivered += 1;
                        }
                        if at != *last_seq {
                            violations.push(format!(
                                "{}: resume of {room} ended at {at}, its lastSeq is {last_seq}",
                                h.label
                            ));
                        }
                    }
                    cursor.insert(room.clone(), *last_seq);
                    away = false;
                }
                Seen::Live(m) => {
                    ack(m, &mut acked);
                    delivered += 1;
                    if away {
                        violations.push(format!(
                            "{}: got seq {} of {} while disconnected",
                            h.label, m.seq, m.room
                        ));
                    }
                    match cursor.get_mut(&m.room) {
                        None => violations.push(format!(
                            "{}: got seq {} of {}, a room it is not in",
                            h.label, m.seq, m.room
                        )),
                        Some(at) => {
                            if m.seq != *at + 1 {
                                let what = if m.seq <= *at {
                                    "duplicate or out of order"
                                } else {
                                    "gap"
                                };
                                violations.push(format!(
                                    "{}: {what} in {}: seq {} after {}",
                                    h.label, m.room, m.seq, at
                                ));
                            }
                            *at = (*at).max(m.seq);
                        }
                    }
                }
                Seen::Left { room } => {
                    cursor.remove(room);
                }
                Seen::Disconnected => away = true,
            }
        }
        // A client that left for good is checked up to its disconnection.
        for (room, at) in cursor.iter().filter(|_| !away) {
            let h_room = head.get(room).copied().unwrap_or(0);
            if *at != h_room {
                violations.push(format!(
                    "{}: stopped at seq {at} of {room}, whose head is {h_room}",
                    h.label
                ));
            }
        }
        let sent: BTreeSet<&(String, String)> = h.sent.iter().collect();
        report.sent += sent.len();
        report.acknowledged += sent.iter().filter(|s| acked.contains(**s)).count();
        report.delivered.push((h.label.clone(), delivered));
    }
    report.violations = violations;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, seq: u64, user: &str, cmid: &str) -> Msg {
        Msg {
            room: room.into(),
            seq,
            id: format!("{room}-{seq}"),
            user: user.into(),
            client_msg_id: Some(cmid.into()),
        }
    }

    fn joined(room: &str, last_seq: u64) -> Seen {
        Seen::Joined {
            room: room.into(),
            last_seq,
            recovered: false,
            resumed: false,
            history: vec![],
        }
    }

    fn client(user: &str, sent: &[&str], seen: Vec<Seen>) -> ClientHistory {
        ClientHistory {
            label: user.into(),
            user: user.into(),
            sent: sent
                .iter()
                .map(|c| ("r".to_owned(), (*c).to_owned()))
                .collect(),
            seen,
        }
    }

    #[test]
    fn a_clean_history_passes_and_is_counted() {
        let a = client(
            "a",
            &["a1"],
            vec![
                joined("r", 0),
                Seen::Live(msg("r", 1, "a", "a1")),
                Seen::Live(msg("r", 2, "c", "c1")),
            ],
        );
        let b = client(
            "b",
            &[],
            vec![
                joined("r", 0),
                Seen::Live(msg("r", 1, "a", "a1")),
                Seen::Disconnected,
                Seen::Joined {
                    room: "r".into(),
                    last_seq: 2,
                    recovered: true,
                    resumed: true,
                    history: vec![msg("r", 2, "c", "c1")],
                },
            ],
        );
        let c = client(
            "c",
            &["c1"],
            vec![joined("r", 1), Seen::Live(msg("r", 2, "c", "c1"))],
        );
        // Gone for good after seq 1: checked up to there.
        let gone = client(
            "gone",
            &[],
            vec![
                joined("r", 0),
                Seen::Live(msg("r", 1, "a", "a1")),
                Seen::Disconnected,
            ],
        );
        let r = check(&[a, b, c, gone]);
        assert!(r.violations.is_empty(), "{r}");
        assert_eq!((r.sent, r.acknowledged, r.delivered[1].1), (2, 2, 2));
    }

    #[test]
    fn gaps_duplicates_strangers_and_missing_tails_are_reported() {
        let gap = client(
            "g",
            &[],
            vec![joined("r", 0), Seen::Live(msg("r", 2, "x", "x2"))],
        );
        let dup = client(
            "d",
            &[],
            vec![
                joined("r", 0),
                Seen::Live(msg("r", 1, "x", "x1")),
                Seen::Live(msg("r", 1, "x", "x1")),
                Seen::Live(msg("r", 2, "x", "x2")),
            ],
        );
        let stranger = client("s", &[], vec![Seen::Live(msg("r", 1, "x", "x1"))]);
        let behind = client(
            "b",
            &[],
            vec![joined("r", 0), Seen::Live(msg("r", 1, "x", "x1"))],
        );
        let mut twice = msg("r", 3, "x", "x1");
        twice.id = "other".into();
        let idem = client("i", &[], vec![joined("r", 2), Seen::Live(twice)]);
        let r = check(&[gap, dup, stranger, behind, idem]);
        let text = r.violations.join("\n");
        for expected in [
            "g: gap in r: seq 2 after 0",
            "d: duplicate or out of order in r: seq 1 after 1",
            "s: got seq 1 of r, a room it is not in",
            "b: stopped at seq 1 of r, whose head is 3",
            "clientMsgId x1 of x in r stored twice",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
