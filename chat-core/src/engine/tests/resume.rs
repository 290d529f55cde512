//! Gapless join and resume.

use super::*;
use crate::engine::Input;

#[test]
fn a_join_racing_sends_sees_every_message_exactly_once_in_order() {
    // Store replies completed in every order: join read first, last or in between.
    for join_at in 0..=4 {
        let mut s = Sim::new(Config::unlimited());
        let senders: Vec<ConnId> = (0..4)
            .map(|i| member(&mut s, &format!("u{i}"), "lobby"))
            .collect();
        for &c in &senders {
            chat(&mut s, c, "before");
        }
        let joiner = named(&mut s, "late");
        for &c in &senders {
            s.take(c);
        }
        s.set_store_mode(StoreMode::Held);
        for &c in &senders {
            chat(&mut s, c, "racing");
        }
        s.send(joiner, json!({"type":"join_room","room":"lobby"}));
        let join_index = s.held().len() - 1;
        // Complete appends in reverse order, the join at position `join_at`.
        let mut order: Vec<usize> = (0..join_index).rev().collect();
        order.insert(join_at.min(order.len()), join_index);
        let tickets: Vec<_> = s.held().iter().map(|r| r.ticket).collect();
        for i in order {
            let pos = s
                .held()
                .iter()
                .position(|r| r.ticket == tickets[i])
                .unwrap();
            s.complete(pos);
        }
        s.complete_all();
        let frames = s.take(joiner);
        let mut seen: Vec<u64> = frames
            .iter()
            .find(|f| f["type"] == "message_history")
            .map(history_seqs)
            .unwrap();
        seen.extend(seqs(&frames));
        assert_eq!(
            seen,
            (1..=8).collect::<Vec<_>>(),
            "join completed at {join_at}"
        );
        for &c in &senders {
            assert_eq!(seqs(&s.take(c)), [5, 6, 7, 8]);
        }
    }
}

#[test]
fn a_join_whose_read_ends_before_the_stream_catches_up_from_the_store() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    s.set_store_mode(StoreMode::Held);
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    // The join's read is performed (and answered) only after two messages were
    // delivered: simulate a stale read by completing the appends first but feeding the
    // read's reply computed before them.
    let join_req = s.held()[0].clone();
    let stale = s.store.perform(join_req.op.clone());
    s.take_held(0);
    chat(&mut s, a, "one");
    chat(&mut s, a, "two");
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1, 2]);
    s.input(crate::engine::Input::StoreReply {
        ticket: join_req.ticket,
        reply: stale,
    });
    s.complete_all();
    let frames = s.take(b);
    assert_eq!(frames[0]["type"], "room_joined");
    assert_eq!(history_seqs(&frames[1]), [1, 2]);
    assert_eq!(frames[1]["lastSeq"], 2);
    s.set_store_mode(StoreMode::Immediate);
    chat(&mut s, a, "three");
    assert_eq!(seqs(&s.take(b)), [3]);
}

#[test]
fn a_join_pending_while_the_room_empties_still_gets_what_the_leaver_saw() {
    // Found by the property tests: the last member leaves while a join's (stale) read is
    // out. The joiner must still receive everything stored before it became a member.
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    s.set_store_mode(StoreMode::Held);
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    let join = s.take_held(0).expect("the join's read");
    let stale = s.store.perform(join.op.clone());
    chat(&mut s, a, "one");
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1]);
    s.send(a, json!({"type":"leave_room"}));
    s.input(crate::engine::Input::StoreReply {
        ticket: join.ticket,
        reply: stale,
    });
    s.complete_all();
    let frames = s.take(b);
    assert_eq!(
        history_seqs(&frames[1]),
        [1],
        "the catch-up read brought seq 1"
    );
    assert_eq!(frames[1]["lastSeq"], 1);
}

#[test]
fn resume_replays_exactly_the_missed_messages() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=5 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let b = named(&mut s, "bob");
    s.send(
        b,
        json!({"type":"join_room","room":"lobby","since":3,"epoch":"sim-epoch"}),
    );
    let frames = s.take(b);
    assert_eq!(history_seqs(&frames[1]), [4, 5]);
    assert_eq!(frames[1]["recovered"], true);
    assert_eq!(frames[1]["lastSeq"], 5);
    let mut s2 = s;
    s2.send(
        b,
        json!({"type":"join_room","room":"lobby","since":5,"epoch":"sim-epoch"}),
    );
    let frames = s2.take(b);
    assert_eq!(frames[2]["messages"], json!([]));
    assert_eq!(frames[2]["recovered"], true);
}

#[test]
fn resume_that_cannot_be_complete_falls_back_to_the_latest_page() {
    let mut config = Config::unlimited();
    config.resume_max = 3;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=10 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let cases = [
        json!({"since":2,"epoch":"other-epoch"}),
        json!({"since":11,"epoch":"sim-epoch"}),
        json!({"since":2,"epoch":"sim-epoch"}),
        json!({"since":2}),
    ];
    for case in cases {
        let b = named(&mut s, "bob");
        let mut join = json!({"type":"join_room","room":"lobby"});
        join["since"] = case["since"].clone();
        if case.get("epoch").is_some() {
            join["epoch"] = case["epoch"].clone();
        }
        s.send(b, join);
        let frames = s.take(b);
        assert_eq!(frames[1]["recovered"], false, "{case}");
        assert_eq!(
            history_seqs(&frames[1]),
            (1..=10).collect::<Vec<_>>(),
            "{case}"
        );
        s.disconnect(b);
    }
}

#[test]
fn resume_after_the_store_dropped_old_messages_is_not_recovered() {
    let mut s = Sim::new(Config::unlimited());
    s.store.retain = 5;
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=10 {
        chat(&mut s, a, &format!("m{i}"));
    }
    let b = named(&mut s, "bob");
    s.send(
        b,
        json!({"type":"join_room","room":"lobby","since":2,"epoch":"sim-epoch"}),
    );
    let frames = s.take(b);
    assert_eq!(frames[1]["recovered"], false);
    assert_eq!(history_seqs(&frames[1]), [6, 7, 8, 9, 10]);
}

#[test]
fn a_gap_left_by_another_writer_is_filled_from_the_store() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    chat(&mut s, a, "one");
    s.take(a);
    // Another server appends directly to the shared store.
    let uid = s.engine.user_of(a).unwrap().clone();
    s.store.perform(crate::engine::StoreOp::AppendRoom(
        crate::message::NewRoomMessage {
            room: RoomName::parse("lobby").unwrap(),
            user_id: uid,
            username: "alice".into(),
            content: crate::ids::Content::parse("elsewhere").unwrap(),
            client_msg_id: None,
        },
    ));
    let b = named(&mut s, "bob");
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    let frames = s.take(b);
    assert_eq!(history_seqs(&frames[1]), [1, 2]);
    assert!(seqs(&frames).is_empty(), "bob's history already has seq 2");
    let to_alice = s.take(a);
    assert_eq!(
        seqs(&to_alice),
        [2],
        "alice gets the other writer's message"
    );
    chat(&mut s, a, "three");
    assert_eq!(seqs(&s.take(b)), [3]);
}

/// The store forgets a room's stream while the room has live members (an idle stream
/// evicted for the memory budget): the next message starts again at seq 1 under a new
/// epoch. Members are told `stream_reset` and keep receiving; a later resume with the
/// old epoch says `recovered: false`.
#[test]
fn an_evicted_stream_restarts_under_a_new_epoch_without_stalling_members() {
    let mut s = sim();
    let lobby = RoomName::parse("lobby").unwrap();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    chat(&mut s, a, "one");
    chat(&mut s, a, "two");
    assert_eq!(seqs(&s.take(b)), [1, 2]);
    s.take(a);
    s.store.evict_room(&lobby);
    chat(&mut s, a, "three");
    chat(&mut s, b, "four");
    let expected_reset =
        json!({"type":"stream_reset","room":"lobby","epoch":"sim-epoch-evicted-1"});
    for conn in [a, b] {
        let frames = s.take(conn);
        assert_eq!(frames[0], expected_reset, "{frames:?}");
        assert_eq!(seqs(&frames), [1, 2]);
        assert_eq!(frames[1]["content"], "three");
        assert_eq!(frames[2]["content"], "four");
    }
    // Resuming with the old epoch is never a silent skip.
    let c = named(&mut s, "carol");
    s.send(
        c,
        json!({"type":"join_room","room":"lobby","since":2,"epoch":"sim-epoch"}),
    );
    let frames = s.take(c);
    assert_eq!(frames[1]["recovered"], false);
    assert_eq!(frames[1]["epoch"], "sim-epoch-evicted-1");
    assert_eq!(history_seqs(&frames[1]), [1, 2]);
    // With the new epoch it recovers exactly what was missed.
    let d = named(&mut s, "dave");
    s.send(
        d,
        json!({"type":"join_room","room":"lobby","since":1,"epoch":"sim-epoch-evicted-1"}),
    );
    let frames = s.take(d);
    assert_eq!(frames[1]["recovered"], true);
    assert_eq!(history_seqs(&frames[1]), [2]);
}

/// Replies race: messages of the old stream still buffered behind a gap when the new
/// epoch shows up are delivered (in order, before the reset), not lost or stalled.
#[test]
fn old_stream_messages_buffered_at_an_epoch_change_are_delivered_first() {
    let mut s = sim();
    let lobby = RoomName::parse("lobby").unwrap();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.set_store_mode(StoreMode::Held);
    chat(&mut s, a, "one");
    chat(&mut s, b, "two");
    // Both stored in the old stream; "two"'s reply arrives first and waits for seq 1.
    // "one" is stored in the old stream now, its reply held back.
    let first = s.take_held(0).unwrap();
    let first_reply = s.store.perform(first.op);
    s.complete(0);
    assert!(seqs(&s.take(b)).is_empty());
    s.store.evict_room(&lobby);
    // A message stored in the new stream, whose reply overtakes "one"'s.
    s.set_store_mode(StoreMode::Immediate);
    chat(&mut s, b, "three");
    let frames = s.take(a);
    let types: Vec<_> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["message_received", "stream_reset", "message_received"]
    );
    assert_eq!(frames[0]["content"], "two");
    assert_eq!(frames[2]["content"], "three");
    assert_eq!(frames[2]["seq"], 1);
    s.take(b);
    // "one"'s reply arrives last, under the retired epoch: its stream is gone, so its
    // sender is told it was not stored (a retry lands in the new stream); nobody's
    // stream flips back.
    s.input(Input::StoreReply {
        ticket: first.ticket,
        reply: first_reply,
    });
    assert_eq!(error_code(&s.take(a)[0]), "store_unavailable");
    assert!(s.take(b).is_empty());
    chat(&mut s, a, "one again");
    assert_eq!(seqs(&s.take(b)), [2]);
}

/// A join read under the old epoch and answered after the members saw the new one
/// never takes the room back to the old stream: no second `stream_reset`, nothing
/// delivered twice; the join reads the latest page again.
#[test]
fn a_join_read_before_an_eviction_and_answered_after_it_restarts_from_the_latest() {
    let mut s = sim();
    let lobby = RoomName::parse("lobby").unwrap();
    let a = member(&mut s, "alice", "lobby");
    chat(&mut s, a, "one");
    chat(&mut s, a, "two");
    s.take(a);
    let c = named(&mut s, "carol");
    s.set_store_mode(StoreMode::Held);
    s.send(c, json!({"type":"join_room","room":"lobby"}));
    let join_req = s.take_held(0).unwrap();
    let stale = s.store.perform(join_req.op.clone());
    s.store.evict_room(&lobby);
    s.set_store_mode(StoreMode::Immediate);
    chat(&mut s, a, "three");
    let frames = s.take(a);
    assert_eq!(
        frames[0],
        json!({"type":"stream_reset","room":"lobby","epoch":"sim-epoch-evicted-1"})
    );
    assert_eq!(seqs(&frames), [1]);
    s.input(Input::StoreReply {
        ticket: join_req.ticket,
        reply: stale,
    });
    assert_eq!(s.take_types(a), ["user_joined"], "no second reset");
    let frames = s.take(c);
    assert_eq!(frames[1]["type"], "message_history");
    assert_eq!(frames[1]["epoch"], "sim-epoch-evicted-1");
    assert_eq!(history_seqs(&frames[1]), [1]);
    chat(&mut s, a, "four");
    let frames = s.take(a);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(seqs(&frames), [2]);
    assert_eq!(seqs(&s.take(c)), [2]);
}

/// A gap-fill read under the old epoch answered after the reset is ignored: the new
/// stream's messages are not sent again and the room stays on the new epoch.
#[test]
fn a_gap_fill_read_before_an_eviction_and_answered_after_it_is_ignored() {
    let mut s = sim();
    let lobby = RoomName::parse("lobby").unwrap();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    chat(&mut s, a, "one");
    s.take(a);
    s.take(b);
    // Another server appends seq 2 directly: a's next message (seq 3) leaves a gap.
    let uid = s.engine.user_of(a).unwrap().clone();
    s.store.perform(crate::engine::StoreOp::AppendRoom(
        crate::message::NewRoomMessage {
            room: lobby.clone(),
            user_id: uid,
            username: "alice".into(),
            content: crate::ids::Content::parse("elsewhere").unwrap(),
            client_msg_id: None,
        },
    ));
    s.set_store_mode(StoreMode::Held);
    chat(&mut s, a, "three");
    s.complete(0);
    let fill = s.take_held(0).unwrap();
    let stale = s.store.perform(fill.op.clone());
    s.store.evict_room(&lobby);
    s.set_store_mode(StoreMode::Immediate);
    chat(&mut s, b, "new one");
    let frames = s.take(a);
    let types: Vec<_> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["message_received", "stream_reset", "message_received"]
    );
    s.take(b);
    s.input(Input::StoreReply {
        ticket: fill.ticket,
        reply: stale,
    });
    assert!(s.take(a).is_empty(), "the stale fill delivers nothing");
    assert!(s.take(b).is_empty());
    assert!(s.held().is_empty());
    chat(&mut s, b, "new two");
    let frames = s.take(a);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(seqs(&frames), [2]);
}

/// A room whose stream never delivered anything takes a new epoch silently: an empty
/// page's epoch may change with any eviction in the store, and a `stream_reset` would
/// tell the members about a history they never had.
#[test]
fn an_epoch_change_before_any_message_is_adopted_without_a_stream_reset() {
    let mut s = sim();
    let lobby = RoomName::parse("lobby").unwrap();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.store.evict_room(&lobby);
    chat(&mut s, a, "first");
    let frames = s.take(b);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "message_received");
    assert_eq!(frames[0]["seq"], 1);
    // The old epoch is retired all the same: the stream has moved on.
    s.store.evict_room(&lobby);
    chat(&mut s, a, "second");
    assert_eq!(
        s.take(b)[0],
        json!({"type":"stream_reset","room":"lobby","epoch":"sim-epoch-evicted-2"})
    );
}

/// A resume replay larger than `history_frame_bytes` leaves in several consecutive
/// `message_history` frames, in order, all but the last `continued: true`, before
/// `room_users`; a plain join's page stays one frame whatever its size.
#[test]
fn a_large_resume_is_sent_in_frames_within_the_byte_budget() {
    let config = Config {
        history_frame_bytes: 2_000,
        ..Config::unlimited()
    };
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=20 {
        chat(&mut s, a, &format!("{i:03}{}", "x".repeat(300)));
    }
    let b = named(&mut s, "bob");
    s.send(
        b,
        json!({"type":"join_room","room":"lobby","since":0,"epoch":"sim-epoch"}),
    );
    let frames = s.take(b);
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"room_joined"));
    assert_eq!(types.last(), Some(&"room_users"));
    let pages = &frames[1..frames.len() - 1];
    assert!(pages.len() > 1, "{} frames", pages.len());
    let mut seqs = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page["type"], "message_history");
        assert_eq!(page["recovered"], true);
        assert_eq!(page["epoch"], "sim-epoch");
        let last = i + 1 == pages.len();
        // Each frame's cursor is its own last message (the last frame's is the head):
        // resuming from the cursor of any frame received misses nothing.
        let own_last = history_seqs(page).last().copied();
        assert_eq!(page["lastSeq"].as_u64(), own_last, "frame {i}");
        if last {
            assert_eq!(page["lastSeq"], 20);
        }
        assert_eq!(page.get("continued").is_some(), !last, "{page}");
        if !last {
            assert_eq!(page["continued"], true);
        }
        let bytes = serde_json::to_vec(&page["messages"]).unwrap().len();
        assert!(bytes <= 2_000 + 2, "{bytes} bytes in frame {i}");
        seqs.extend(history_seqs(page));
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "in order, each once");

    // A plain join: one frame, however large.
    let c = named(&mut s, "carol");
    s.send(c, json!({"type":"join_room","room":"lobby"}));
    let types = s.take_types(c);
    assert_eq!(types, ["room_joined", "message_history", "room_users"]);
}

/// A `history` page is cut at the byte budget: the newest messages stay, `hasMore`
/// says the client can page on from the oldest it got.
#[test]
fn a_history_page_is_cut_at_the_byte_budget() {
    let config = Config {
        history_frame_bytes: 2_000,
        ..Config::unlimited()
    };
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=20 {
        chat(&mut s, a, &format!("{i:03}{}", "x".repeat(300)));
    }
    s.take(a);
    s.send(a, json!({"type":"history","room":"lobby","limit":20}));
    let page = &s.take(a)[0];
    let got = history_seqs(page);
    assert!(got.len() < 20 && !got.is_empty(), "{got:?}");
    assert_eq!(got.last(), Some(&20), "the newest are kept");
    assert_eq!(page["hasMore"], true);
    assert!(page.get("continued").is_none());
    assert!(serde_json::to_vec(&page["messages"]).unwrap().len() <= 2_002);
    // Paging on from the oldest received continues without a gap.
    let before = got[0];
    s.send(
        a,
        json!({"type":"history","room":"lobby","before":before,"limit":20}),
    );
    let next = history_seqs(&s.take(a)[0]);
    assert_eq!(next.last(), Some(&(before - 1)));
}

/// Five messages from a poster who then leaves; a late joiner's resume `extra` fields
/// are answered with exactly `history` (and itself alone in `room_users`).
fn resume_answers(s: &mut Sim, extra: &Value, history: &Value) {
    let late = named(s, "late");
    let id = client_id(s, late);
    let mut join = json!({"type":"join_room","room":"resume"});
    for (k, v) in extra.as_object().unwrap() {
        join[k] = v.clone();
    }
    s.send(late, join);
    assert_eq!(
        s.take(late),
        vec![
            json!({"type":"room_joined","room":"resume"}),
            history.clone(),
            json!({"type":"room_users","room":"resume","users":[{"id":id,"username":"late"}]}),
        ],
        "{extra}"
    );
    s.disconnect(late);
}

fn five_messages(s: &mut Sim) -> Vec<Value> {
    let poster = member(s, "poster", "resume");
    let id = client_id(s, poster);
    for i in 1..=5 {
        chat(s, poster, &format!("m{i}"));
    }
    s.take(poster);
    s.disconnect(poster);
    (1..=5)
        .map(|i| received(i.into(), "resume", i, &id, "poster", &format!("m{i}")))
        .collect()
}

fn not_recovered(sent: &[Value]) -> Value {
    json!({"type":"message_history","room":"resume","messages":sent,"epoch":"sim-epoch",
           "lastSeq":5,"recovered":false,"hasMore":false})
}

#[test]
fn resume_from_the_future_is_not_recovered() {
    let mut s = sim();
    let sent = five_messages(&mut s);
    for since in [6, 1_000, u64::MAX] {
        resume_answers(
            &mut s,
            &json!({"since":since,"epoch":"sim-epoch"}),
            &not_recovered(&sent),
        );
    }
}

#[test]
fn resume_with_a_stale_or_foreign_epoch_is_not_recovered() {
    let mut s = sim();
    let sent = five_messages(&mut s);
    for stale in [
        "stale-epoch",
        "",
        "SIM-EPOCH",
        "00000000-0000-0000-0000-000000000000",
    ] {
        resume_answers(
            &mut s,
            &json!({"since":2,"epoch":stale}),
            &not_recovered(&sent),
        );
    }
    // And the genuine epoch replays exactly what was missed.
    resume_answers(
        &mut s,
        &json!({"since":2,"epoch":"sim-epoch"}),
        &json!({"type":"message_history","room":"resume","messages":sent[2..],
                "epoch":"sim-epoch","lastSeq":5,"recovered":true,"hasMore":false}),
    );
}

/// After a resume, live messages continue right after the page's `lastSeq`.
#[test]
fn live_messages_continue_right_after_a_resumed_page() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let ida = client_id(&mut s, a);
    for i in 1..=5 {
        chat(&mut s, a, &format!("m{i}"));
    }
    s.take(a);
    let b = named(&mut s, "bob");
    s.send(
        b,
        json!({"type":"join_room","room":"lobby","since":3,"epoch":"sim-epoch"}),
    );
    assert_eq!(s.take(b)[1]["lastSeq"], 5);
    chat(&mut s, a, "m6");
    assert_eq!(
        s.take(b),
        vec![received(6, "lobby", 6, &ida, "alice", "m6")]
    );
}

/// With the default budget (64 KiB), the largest resume — 500 messages (the resume cap)
/// of 1,000 control characters, each escaped to six bytes of JSON, ~3 MB — leaves in
/// continued frames of at most 64 KiB of messages, in order, each once.
#[test]
fn a_full_resume_leaves_in_continued_frames_of_at_most_64_kib() {
    let mut s = Sim::new(config(|c| c.message_rate = None));
    let writer = member(&mut s, "writer", "big");
    let content = format!("x{}x", "\u{1}".repeat(998));
    for _ in 0..500 {
        chat(&mut s, writer, &content);
    }
    s.take(writer);
    let reader = named(&mut s, "reader");
    s.send(
        reader,
        json!({"type":"join_room","room":"big","since":0,"epoch":"sim-epoch"}),
    );
    let frames = s.take(reader);
    assert_eq!(frames[0]["type"], "room_joined");
    assert_eq!(frames.last().unwrap()["type"], "room_users");
    let pages = &frames[1..frames.len() - 1];
    assert!(pages.len() >= 45, "{} frames", pages.len());
    let mut seqs = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page["recovered"], true);
        let last = i + 1 == pages.len();
        assert_eq!(page["lastSeq"].as_u64(), history_seqs(page).last().copied());
        assert_eq!(page.get("continued").is_some(), !last, "frame {i}");
        let bytes = serde_json::to_vec(&page["messages"]).unwrap().len();
        assert!(
            bytes <= 64 * 1024 + 2,
            "{bytes} bytes of messages in frame {i}"
        );
        seqs.extend(history_seqs(page));
    }
    assert_eq!(pages.last().unwrap()["lastSeq"], 500);
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>(), "in order, each once");
}
