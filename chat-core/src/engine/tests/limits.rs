//! Rate limits and abuse.

use super::*;

#[test]
fn chat_over_the_rate_is_refused_with_retry_after_and_not_stored() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    for i in 0..10 {
        chat(&mut s, a, &format!("m{i}"));
    }
    assert_eq!(seqs(&s.take(a)).len(), 10);
    chat(&mut s, a, "one too many");
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Sending messages too fast","code":"rate_limited","retryAfterMs":1000})
        ]
    );
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("lobby").unwrap())
            .len(),
        10
    );
    s.advance(Duration::from_millis(400));
    chat(&mut s, a, "still too early");
    assert_eq!(s.take(a)[0]["retryAfterMs"], 600);
    s.advance(Duration::from_millis(600));
    chat(&mut s, a, "ok now");
    assert_eq!(seqs(&s.take(a)), [11]);
}

#[test]
fn dms_share_the_chat_rate() {
    let config = Config {
        message_rate: Some(Rate::per_second(2, 1)),
        ..Config::default()
    };
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    chat(&mut s, a, "1");
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"2"}),
    );
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"3"}),
    );
    let frames = s.take(a);
    assert_eq!(error_code(frames.last().unwrap()), "rate_limited");
}

#[test]
fn typing_has_its_own_rate() {
    let config = Config {
        typing_rate: Some(Rate::per_second(2, 1)),
        ..Config::default()
    };
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    s.send(a, json!({"type":"typing_start"}));
    s.send(a, json!({"type":"typing_stop"}));
    s.send(a, json!({"type":"typing_start"}));
    assert_eq!(error_code(&s.take(a)[0]), "rate_limited");
    chat(&mut s, a, "chat is not affected");
    assert_eq!(seqs(&s.take(a)), [1]);
}

#[test]
fn limits_can_be_switched_off() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 0..200 {
        chat(&mut s, a, &format!("m{i}"));
    }
    assert_eq!(seqs(&s.take(a)).len(), 200);
}

#[test]
fn invalid_frames_get_an_error_and_the_connection_stays_usable() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.send_raw(a, b"{not json");
    assert_eq!(error_code(&s.take(a)[0]), "invalid_json");
    s.send(a, json!({"type":"dance"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"Unknown message type: dance","code":"unknown_type"})]
    );
    chat(&mut s, a, "still here");
    assert_eq!(seqs(&s.take(a)), [1]);
}

#[test]
fn a_flood_of_refused_requests_closes_the_connection_with_1008() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    for _ in 0..31 {
        s.send_raw(a, b"garbage");
    }
    assert_eq!(
        s.closed(a),
        Some((CloseCode::POLICY, "too many refused requests"))
    );
    assert_eq!(
        s.take_types(b).last().map(String::as_str),
        Some("user_left")
    );
    s.send_raw(a, b"garbage");
    assert_eq!(s.engine.connection_count(), 1);
}

#[test]
fn a_disconnect_during_a_join_leaves_nothing_behind() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.set_store_mode(StoreMode::Held);
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    s.disconnect(a);
    assert_eq!(s.engine.room_count(), 1, "the join's read is still out");
    s.complete_all();
    assert_eq!(s.engine.room_count(), 0);
    assert_eq!(s.engine.pending_store_ops(), 0);
}

#[test]
fn a_message_stored_after_its_sender_left_still_reaches_the_room() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(b);
    s.set_store_mode(StoreMode::Held);
    chat(&mut s, a, "bye");
    s.disconnect(a);
    s.complete_all();
    let frames = s.take(b);
    assert_eq!(frames[0]["type"], "user_left");
    assert_eq!(seqs(&frames), [1]);
}

/// Frames that change nothing still cost the refusal budget: a flood of empty messages,
/// empty DMs or `set_username` to the current name ends in 1008 like any other flood,
/// while a person's occasional empty Enter costs nothing visible.
#[test]
fn a_flood_of_no_op_commands_closes_the_connection_with_1008() {
    let floods: [fn(&mut Sim, ConnId, &str); 3] = [
        |s, c, _| s.send(c, json!({"type":"chat_message","content":"  "})),
        |s, c, target| {
            s.send(
                c,
                json!({"type":"private_message","targetId":target,"content":""}),
            )
        },
        |s, c, _| s.send(c, json!({"type":"set_username","username":"alice"})),
    ];
    for (n, flood) in floods.into_iter().enumerate() {
        let mut s = sim();
        let a = member(&mut s, "alice", "lobby");
        let b = member(&mut s, "bob", "lobby");
        let target = client_id(&mut s, b);
        s.take(a);
        // The budget's burst (30) passes without a close; empty messages stay silent.
        for _ in 0..30 {
            flood(&mut s, a, &target);
        }
        assert_eq!(s.closed(a), None, "flood {n}");
        let answers = s.take_types(a);
        let expected = if n == 2 { 30 } else { 0 };
        assert_eq!(answers.len(), expected, "flood {n}: {answers:?}");
        // The 31st in the same instant spends the last of it.
        flood(&mut s, a, &target);
        assert_eq!(
            s.closed(a),
            Some((CloseCode::POLICY, "too many refused requests")),
            "flood {n}"
        );
        assert!(
            s.store
                .room_messages(&RoomName::parse("lobby").unwrap())
                .is_empty()
        );
    }
}

#[test]
fn an_occasional_empty_message_never_closes() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    for _ in 0..100 {
        chat(&mut s, a, "");
        s.advance(Duration::from_secs(1));
    }
    assert_eq!(s.closed(a), None);
    chat(&mut s, a, "still here");
    assert_eq!(seqs(&s.take(a)), [1]);
}
