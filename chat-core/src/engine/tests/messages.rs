//! Room messages.

use super::*;

#[test]
fn chat_needs_a_username_and_a_room() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    chat(&mut s, c, "hi");
    assert_eq!(error_code(&s.take(c)[0]), "username_required");
    let d = named(&mut s, "alice");
    chat(&mut s, d, "hi");
    assert_eq!(
        s.take(d),
        vec![json!({"type":"error","message":"Join a room first","code":"not_in_room"})]
    );
}

#[test]
fn every_member_including_the_sender_gets_message_received() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    let outsider = member(&mut s, "carol", "elsewhere");
    s.take(a);
    let ida = client_id(&mut s, a);
    chat(&mut s, a, "  hello  ");
    let expected = json!({"type":"message_received","id":"00000000-0000-0000-0000-000000000001",
        "room":"lobby","seq":1,"userId":ida,"username":"alice","content":"hello",
        "timestamp":"2023-11-14T22:13:20.001Z"});
    assert_eq!(s.take(a), vec![expected.clone()]);
    assert_eq!(s.take(b), vec![expected]);
    assert!(s.take(outsider).is_empty());
}

#[test]
fn content_is_cut_to_1000_chars_and_empty_content_is_ignored() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    chat(&mut s, a, &"é".repeat(1200));
    let f = s.take(a);
    assert_eq!(f[0]["content"].as_str().unwrap().chars().count(), 1000);
    chat(&mut s, a, "   \n ");
    assert!(s.take(a).is_empty());
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("lobby").unwrap())
            .len(),
        1
    );
}

#[test]
fn seq_increases_per_room_without_gaps() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "one");
    s.send(a, json!({"type":"join_room","room":"two","keepRooms":true}));
    s.take(a);
    for _ in 0..3 {
        s.send(a, json!({"type":"chat_message","content":"x","room":"one"}));
        s.send(a, json!({"type":"chat_message","content":"y","room":"two"}));
    }
    let frames = s.take(a);
    let per = |room: &str| -> Vec<u64> {
        frames
            .iter()
            .filter(|f| f["room"] == room)
            .map(|f| f["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(per("one"), [1, 2, 3]);
    assert_eq!(per("two"), [1, 2, 3]);
}

#[test]
fn nobody_sees_a_message_before_the_store_accepted_it() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.set_store_mode(StoreMode::Held);
    chat(&mut s, a, "hi");
    assert!(s.take(a).is_empty() && s.take(b).is_empty());
    assert_eq!(s.held().len(), 1);
    s.complete(0);
    assert_eq!(seqs(&s.take(a)), [1]);
    assert_eq!(seqs(&s.take(b)), [1]);
}

#[test]
fn a_store_failure_is_reported_and_nothing_is_broadcast() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.store.fail_next = 1;
    chat(&mut s, a, "hi");
    assert_eq!(error_code(&s.take(a)[0]), "store_unavailable");
    assert!(s.take(b).is_empty());
    chat(&mut s, a, "again");
    assert_eq!(seqs(&s.take(b)), [1], "a failed append consumes no seq");
}

#[test]
fn client_msg_id_is_echoed_and_a_retry_is_not_stored_twice() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let msg = json!({"type":"chat_message","content":"hi","clientMsgId":"c-1"});
    s.send(a, msg.clone());
    let first = s.take(a);
    assert_eq!(first[0]["clientMsgId"], "c-1");
    assert_eq!(s.take(b).len(), 1);
    s.send(a, msg);
    assert!(s.take(a).is_empty(), "the connection already has it");
    assert!(s.take(b).is_empty());
    assert_eq!(
        s.store
            .room_messages(&RoomName::parse("lobby").unwrap())
            .len(),
        1
    );
}

#[test]
fn a_retry_of_a_message_older_than_the_join_page_is_answered_once() {
    let mut config = Config::unlimited();
    config.join_history = 2;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    s.send(
        a,
        json!({"type":"chat_message","content":"old","clientMsgId":"c-old"}),
    );
    chat(&mut s, a, "2");
    chat(&mut s, a, "3");
    s.disconnect(a);
    let a2 = s.connect_as("alice-2", "alicia");
    s.take(a2);
    // A different user with the same clientMsgId is not a duplicate:
    s.send(a2, json!({"type":"join_room","room":"lobby"}));
    s.take(a2);
    s.send(
        a2,
        json!({"type":"chat_message","content":"new","clientMsgId":"c-old"}),
    );
    assert_eq!(seqs(&s.take(a2)), [4]);
}

#[test]
fn invalid_client_msg_id_is_refused() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.send(
        a,
        json!({"type":"chat_message","content":"x","clientMsgId":""}),
    );
    assert_eq!(error_code(&s.take(a)[0]), "invalid_field");
}

#[test]
fn commands_behind_a_store_round_trip_keep_their_order() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.set_store_mode(StoreMode::Held);
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    chat(&mut s, a, "first");
    chat(&mut s, a, "second");
    assert!(s.take(a).is_empty());
    s.complete_all();
    let frames = s.take(a);
    let types: Vec<_> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "room_joined",
            "message_history",
            "room_users",
            "message_received",
            "message_received"
        ]
    );
    assert_eq!(frames[3]["content"], "first");
    assert_eq!(frames[4]["content"], "second");
}

#[test]
fn too_many_queued_commands_are_refused() {
    let mut config = Config::unlimited();
    config.max_queued_commands = 2;
    let mut s = Sim::new(config);
    let a = member(&mut s, "alice", "lobby");
    s.set_store_mode(StoreMode::Held);
    for i in 0..4 {
        chat(&mut s, a, &format!("m{i}"));
    }
    assert_eq!(error_code(&s.take(a)[0]), "too_many_requests");
    s.complete_all();
    assert_eq!(seqs(&s.take(a)), [1, 2, 3]);
}

#[test]
fn two_messages_get_distinct_ids_and_each_member_gets_the_same_frame() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    chat(&mut s, a, "hello");
    chat(&mut s, b, "hi alice");
    let first = received(1, "lobby", 1, &ida, "alice", "hello");
    let second = received(2, "lobby", 2, &idb, "bob", "hi alice");
    assert_ne!(first["id"], second["id"]);
    assert_eq!(s.take(a), vec![first.clone(), second.clone()]);
    assert_eq!(s.take(b), vec![first, second]);
}

/// Blank (after trimming, in any script) or missing content is ignored: no frame to
/// anybody, nothing stored, no seq used.
#[test]
fn blank_or_missing_content_is_ignored_without_any_frame() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let ida = client_id(&mut s, a);
    for frame in [
        json!({"type":"chat_message","content":" \n\t  "}),
        json!({"type":"chat_message","content":""}),
        json!({"type":"chat_message","content":"\u{3000}\u{2028}"}),
        json!({"type":"chat_message"}),
    ] {
        s.send(a, frame.clone());
        assert!(s.take(a).is_empty(), "{frame}");
        assert!(s.take(b).is_empty(), "{frame}");
    }
    chat(&mut s, a, "after");
    assert_eq!(
        s.take(b),
        vec![received(1, "lobby", 1, &ida, "alice", "after")]
    );
}

/// A 64 KiB frame (the largest the transport lets through) of content is cut to 1,000
/// characters like any other.
#[test]
fn the_content_of_a_64_kib_frame_is_cut_to_1000_characters() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let ida = client_id(&mut s, a);
    let empty = json!({"type":"chat_message","content":""}).to_string();
    let frame = json!({"type":"chat_message","content":"x".repeat(64 * 1024 - empty.len())});
    assert_eq!(frame.to_string().len(), 64 * 1024);
    s.send(a, frame);
    assert_eq!(
        s.take(a),
        vec![received(1, "lobby", 1, &ida, "alice", &"x".repeat(1000))]
    );
}

#[test]
fn a_replayed_client_msg_id_is_stored_once_whatever_its_content_and_only_per_user() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    let original = json!({"type":"chat_message","content":"once","clientMsgId":"c-1"});
    s.send(a, original.clone());
    let mut first = received(1, "lobby", 1, &ida, "alice", "once");
    first["clientMsgId"] = json!("c-1");
    assert_eq!(s.take(a), vec![first.clone()]);
    assert_eq!(s.take(b), vec![first.clone()]);

    // The same id again, then with other content: nothing new is stored or delivered.
    s.send(a, original);
    s.send(
        a,
        json!({"type":"chat_message","content":"changed","clientMsgId":"c-1"}),
    );
    assert!(s.take(a).is_empty());
    assert!(s.take(b).is_empty());
    s.send(a, json!({"type":"history","room":"lobby"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"message_history","room":"lobby","messages":[first],"hasMore":false})]
    );

    // Another user's message with the same id is another message.
    s.send(
        b,
        json!({"type":"chat_message","content":"mine","clientMsgId":"c-1"}),
    );
    let mut theirs = received(2, "lobby", 2, &idb, "bob", "mine");
    theirs["clientMsgId"] = json!("c-1");
    assert_eq!(s.take(b), vec![theirs.clone()]);
    assert_eq!(s.take(a), vec![theirs]);
}

#[test]
fn each_invalid_client_msg_id_is_answered_invalid_field_and_nothing_is_stored() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let ida = client_id(&mut s, a);
    let long = "x".repeat(65);
    for id in ["", long.as_str(), "a\u{0}b", "\u{202e}id", "a\u{200b}"] {
        s.send(
            a,
            json!({"type":"chat_message","content":"x","clientMsgId":id}),
        );
        assert_eq!(
            s.take(a),
            vec![refusal(
                "invalid_field",
                "clientMsgId must be 1 to 64 visible characters"
            )],
            "{id:?}"
        );
    }
    chat(&mut s, a, "still here");
    assert_eq!(
        s.take(a),
        vec![received(1, "lobby", 1, &ida, "alice", "still here")]
    );
}

/// Fields only the server sets (`id`, `seq`, `userId`, `timestamp`, `fromId`…) sent by
/// a client change nothing: the frames carry the sender's real identity and the store's
/// id, seq and time.
#[test]
fn client_supplied_server_fields_are_ignored() {
    let mut s = sim();
    let forger = member(&mut s, "forger", "forge");
    let watcher = member(&mut s, "watcher", "forge");
    s.take(forger);
    let (idf, idw) = (client_id(&mut s, forger), client_id(&mut s, watcher));
    let forged_time = "1970-01-01T00:00:00.000Z";
    s.send(
        forger,
        json!({"type":"chat_message","content":"hi","id":"forged-id","seq":999,
               "userId":idw,"username":"watcher","timestamp":forged_time,"fromId":idw,
               "recovered":true}),
    );
    let echo = received(1, "forge", 1, &idf, "forger", "hi");
    assert_eq!(s.take(forger), vec![echo.clone()]);
    assert_eq!(s.take(watcher), vec![echo]);

    s.send(
        forger,
        json!({"type":"private_message","targetId":idw,"content":"psst","id":"forged-id",
               "seq":999,"fromId":idw,"fromUsername":"admin","toId":idf,"toUsername":"admin",
               "timestamp":forged_time}),
    );
    let dm = json!({"type":"private_message","id":sim_id(2),"seq":1,"fromId":idf,
        "fromUsername":"forger","toId":idw,"toUsername":"watcher","content":"psst",
        "timestamp":sim_time(1)});
    assert_eq!(s.take(watcher), vec![dm.clone()]);
    let mut sent = dm;
    sent["type"] = json!("private_message_sent");
    assert_eq!(s.take(forger), vec![sent]);

    // An id offered with set_username changes nothing either.
    s.send(forger, json!({"type":"leave_room"}));
    s.take(forger);
    s.take(watcher);
    s.send(
        forger,
        json!({"type":"set_username","username":"forger2","userId":idw,"clientId":idw}),
    );
    assert_eq!(
        s.take(forger),
        vec![json!({"type":"username_set","username":"forger2"})]
    );
    s.send(forger, json!({"type":"join_room","room":"forge"}));
    assert_eq!(
        s.take(forger)[2],
        json!({"type":"room_users","room":"forge","users":[
            {"id":idw,"username":"watcher"},{"id":idf,"username":"forger2"}]})
    );
}

/// Strings that would run as script, markup or SQL if anything interpreted them are
/// stored and delivered exactly, live, in `history` and in a late joiner's page. (How
/// the frame's bytes carry them is in `protocol/tests.rs`.)
#[test]
fn hostile_strings_are_stored_and_delivered_exactly() {
    let mut s = sim();
    let poster = member(&mut s, "poster", "xss");
    let watcher = member(&mut s, "watcher", "xss");
    s.take(poster);
    let idp = client_id(&mut s, poster);
    let mut stored = Vec::new();
    for (i, content) in crate::protocol::tests::HOSTILE.iter().enumerate() {
        chat(&mut s, poster, content);
        let n = i as u64 + 1;
        let echo = received(n.into(), "xss", n, &idp, "poster", content);
        assert_eq!(s.take(poster), vec![echo.clone()]);
        assert_eq!(s.take(watcher), vec![echo.clone()]);
        stored.push(echo);
    }
    s.send(poster, json!({"type":"history","room":"xss"}));
    assert_eq!(
        s.take(poster),
        vec![json!({"type":"message_history","room":"xss","messages":stored,"hasMore":false})]
    );
    let late = named(&mut s, "late");
    s.send(late, json!({"type":"join_room","room":"xss"}));
    assert_eq!(s.take(late)[1]["messages"], json!(stored));
}

#[test]
fn hostile_usernames_and_room_names_are_delivered_exactly() {
    let room = "<script>x</script>";
    let mut s = sim();
    let first = member(&mut s, "<img src=x>", room);
    let second = named(&mut s, "\"><svg/onload=1>");
    let (id1, id2) = (client_id(&mut s, first), client_id(&mut s, second));
    s.send(second, json!({"type":"join_room","room":room}));
    let replies = s.take(second);
    assert_eq!(replies[0], json!({"type":"room_joined","room":room}));
    assert_eq!(
        replies[2],
        json!({"type":"room_users","room":room,"users":[
            {"id":id1,"username":"<img src=x>"},{"id":id2,"username":"\"><svg/onload=1>"}]})
    );
    assert_eq!(
        s.take(first),
        vec![json!({"type":"user_joined","room":room,"username":"\"><svg/onload=1>","userId":id2})]
    );
    chat(&mut s, second, "<b>hi</b>");
    let echo = received(1, room, 1, &id2, "\"><svg/onload=1>", "<b>hi</b>");
    assert_eq!(s.take(second), vec![echo.clone()]);
    assert_eq!(s.take(first), vec![echo]);
}
