//! Gapless join and resume.

use super::*;

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
