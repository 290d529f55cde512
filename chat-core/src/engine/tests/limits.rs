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

#[test]
fn the_11th_join_of_a_burst_is_rate_limited() {
    let mut s = sim();
    let joiner = named(&mut s, "joiner");
    for i in 0..11 {
        s.send(
            joiner,
            json!({"type":"join_room","room":format!("j{i}"),"keepRooms":true}),
        );
    }
    let frames = s.take(joiner);
    assert_eq!(frames.len(), 31);
    for (i, reply) in frames[..30].chunks(3).enumerate() {
        assert_eq!(
            reply[0],
            json!({"type":"room_joined","room":format!("j{i}")})
        );
    }
    assert_eq!(
        frames[30],
        json!({"type":"error","message":"Joining rooms too fast","code":"rate_limited",
               "retryAfterMs":1000})
    );
    assert_eq!(s.engine.room_count(), 10);
}

/// Past the message burst, each refusal spends the refusal budget (30); the refusal
/// that finds it empty closes the connection with 1008. Nothing refused is stored.
#[test]
fn a_message_flood_is_rate_limited_then_closed_with_1008() {
    let mut s = sim();
    let flooder = member(&mut s, "flooder", "flood");
    let watcher = member(&mut s, "watcher", "flood");
    s.take(flooder);
    for i in 1..=10 {
        chat(&mut s, flooder, &format!("m{i}"));
    }
    assert_eq!(seqs(&s.take(flooder)), (1..=10).collect::<Vec<_>>());
    for i in 11..=40 {
        chat(&mut s, flooder, &format!("m{i}"));
    }
    let refusal = json!({"type":"error","message":"Sending messages too fast",
                         "code":"rate_limited","retryAfterMs":1000});
    assert_eq!(s.take(flooder), vec![refusal; 30]);
    assert_eq!(
        s.closed(flooder),
        None,
        "the budget's burst is spent, not exceeded"
    );
    chat(&mut s, flooder, "m41");
    assert_eq!(
        s.closed(flooder),
        Some((CloseCode::POLICY, "too many refused requests"))
    );
    let seen = s.take(watcher);
    assert_eq!(seqs(&seen), (1..=10).collect::<Vec<_>>());
    assert_eq!(seen.last().unwrap()["type"], "user_left");
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("flood").unwrap())
            .len(),
        10
    );
}

/// `too_many_rooms` refusals spend the refusal budget like any other.
#[test]
fn joining_past_the_room_cap_spends_the_refusal_budget_and_closes_with_1008() {
    let mut s = Sim::new(config(|c| {
        c.join_rate = None;
        c.max_rooms_per_connection = 2;
    }));
    let roomer = member(&mut s, "roomer", "r0");
    s.send(
        roomer,
        json!({"type":"join_room","room":"r1","keepRooms":true}),
    );
    s.take(roomer);
    for i in 2..32 {
        s.send(
            roomer,
            json!({"type":"join_room","room":format!("r{i}"),"keepRooms":true}),
        );
    }
    assert_eq!(
        s.take(roomer),
        vec![refusal("too_many_rooms", "You are in too many rooms"); 30]
    );
    assert_eq!(s.closed(roomer), None);
    s.send(
        roomer,
        json!({"type":"join_room","room":"r32","keepRooms":true}),
    );
    assert_eq!(
        s.closed(roomer),
        Some((CloseCode::POLICY, "too many refused requests"))
    );
    assert_eq!(s.engine.room_count(), 0, "its rooms are freed with it");
}

/// Every kind of malformed frame is answered with its code (the full tables are in
/// `protocol/tests.rs`), and the connection stays usable after each.
#[test]
fn every_kind_of_malformed_frame_is_answered_and_the_connection_stays_usable() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let ida = client_id(&mut s, a);
    for (frame, code) in [
        ("{not json", "invalid_json"),
        ("hello", "invalid_json"),
        ("{\"type\":\"chat_message\",", "invalid_json"),
        (
            r#"{"type":"chat_message","content":"\ud800"}"#,
            "invalid_json",
        ),
        ("[1, 2]", "invalid_message"),
        ("{}", "invalid_message"),
        (r#"{"type":"chat_message","content":5}"#, "invalid_message"),
        (
            r#"{"type":"chat_message","content":"a","content":"b"}"#,
            "invalid_message",
        ),
        (
            r#"{"type":"join_room","room":"x","since":-1}"#,
            "invalid_message",
        ),
        (r#"{"type":"dance"}"#, "unknown_type"),
    ] {
        s.send_raw(a, frame.as_bytes());
        let answer = s.take(a);
        assert_eq!(answer.len(), 1, "{frame}");
        assert_eq!(error_code(&answer[0]), code, "{frame}");
        assert!(
            answer[0]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{frame}"
        );
    }
    chat(&mut s, a, "still here");
    assert_eq!(
        s.take(a),
        vec![received(1, "lobby", 1, &ida, "alice", "still here")]
    );
}
