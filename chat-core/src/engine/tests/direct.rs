//! Direct messages.

use super::*;

#[test]
fn a_dm_reaches_the_target_and_the_sender_and_nobody_else() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    let c = member(&mut s, "carol", "lobby");
    for x in [a, b, c] {
        s.take(x);
    }
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":" psst ","clientMsgId":"d1"}),
    );
    let common = json!({"id":"00000000-0000-0000-0000-000000000001","seq":1,"fromId":ida,
        "fromUsername":"alice","toId":idb,"toUsername":"bob","content":"psst",
        "timestamp":"2023-11-14T22:13:20.001Z"});
    let mut to_b = common.clone();
    to_b["type"] = json!("private_message");
    let mut to_a = common;
    to_a["type"] = json!("private_message_sent");
    to_a["clientMsgId"] = json!("d1");
    assert_eq!(s.take(b), vec![to_b]);
    assert_eq!(s.take(a), vec![to_a]);
    assert!(s.take(c).is_empty());
}

#[test]
fn a_dm_to_an_unknown_user_is_an_error() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(
        a,
        json!({"type":"private_message","targetId":"nobody","content":"hi"}),
    );
    assert_eq!(
        s.take(a),
        vec![json!({"type":"error","message":"User not found","code":"user_not_found"})]
    );
}

#[test]
fn dm_history_pages_the_conversation() {
    let mut s = Sim::new(Config::unlimited());
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    for i in 0..3 {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":format!("a{i}")}),
        );
        s.send(
            b,
            json!({"type":"private_message","targetId":ida,"content":format!("b{i}")}),
        );
    }
    s.take(a);
    s.send(a, json!({"type":"dm_history","userId":idb,"limit":4}));
    let page = &s.take(a)[0];
    assert_eq!(page["type"], "dm_history");
    assert_eq!(page["userId"], idb);
    assert_eq!(history_seqs(page), [3, 4, 5, 6]);
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["messages"][0]["type"], "private_message");
}

/// A `dm_history` page is cut at `history_frame_bytes` like a room `history` page: the
/// newest stay and `hasMore` says the client can page on from the oldest it got.
#[test]
fn a_dm_history_page_is_cut_at_the_byte_budget() {
    let config = Config {
        history_frame_bytes: 2_000,
        ..Config::unlimited()
    };
    let mut s = Sim::new(config);
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    for i in 1..=20 {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":format!("{i:03}{}", "x".repeat(300))}),
        );
    }
    s.take(a);
    s.send(a, json!({"type":"dm_history","userId":idb,"limit":20}));
    let page = &s.take(a)[0];
    assert_eq!(page["type"], "dm_history");
    let got = history_seqs(page);
    assert!(got.len() < 20 && !got.is_empty(), "{got:?}");
    assert_eq!(got.last(), Some(&20), "the newest are kept");
    assert_eq!(page["hasMore"], true);
    assert!(serde_json::to_vec(&page["messages"]).unwrap().len() <= 2_002);
}

/// The exact DM frame as the target receives it (`private_message`) for the `n`th
/// stored message.
fn dm_frame(n: u128, seq: u64, from: (&str, &str), to: (&str, &str), text: &str) -> Value {
    json!({"type":"private_message","id":sim_id(n),"seq":seq,"fromId":from.0,
           "fromUsername":from.1,"toId":to.0,"toUsername":to.1,"content":text,
           "timestamp":sim_time(seq)})
}

/// The same DM as its sender's connections receive it.
fn sent_frame(mut dm: Value) -> Value {
    dm["type"] = json!("private_message_sent");
    dm
}

#[test]
fn a_dm_needs_a_username() {
    let mut s = sim();
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    let anonymous = s.connect();
    s.take(anonymous);
    s.send(
        anonymous,
        json!({"type":"private_message","targetId":idb,"content":"hi"}),
    );
    assert_eq!(
        s.take(anonymous),
        vec![refusal("username_required", "Set username first")]
    );
    assert!(s.take(b).is_empty());
}

/// Unknown ids, ids that are no valid user id, and connected users without a name are
/// all `user_not_found`: a DM goes to a named, online user.
#[test]
fn a_dm_to_an_unknown_invalid_or_unnamed_target_is_user_not_found() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let unnamed = s.connect();
    s.take(unnamed);
    let unnamed_id = client_id(&mut s, unnamed);
    for target in [
        "nobody",
        "00000000-0000-0000-0000-000000000000",
        unnamed_id.as_str(),
        "<script>",
        "",
        "a\u{202e}b",
    ] {
        s.send(
            a,
            json!({"type":"private_message","targetId":target,"content":"hi"}),
        );
        assert_eq!(
            s.take(a),
            vec![refusal("user_not_found", "User not found")],
            "{target:?}"
        );
    }
    s.send(a, json!({"type":"private_message","content":"no target"}));
    assert_eq!(s.take(a), vec![refusal("user_not_found", "User not found")]);
    assert!(s.take(unnamed).is_empty());
}

#[test]
fn a_dm_to_a_user_who_went_offline_is_user_not_found() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    s.disconnect(b);
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"hi"}),
    );
    assert_eq!(s.take(a), vec![refusal("user_not_found", "User not found")]);
}

#[test]
fn blank_dm_content_is_ignored_and_long_content_is_cut_to_1000_characters() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    for blank in [json!(""), json!(" \n\t "), json!("\u{3000}")] {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":blank}),
        );
        assert!(s.take(a).is_empty(), "{blank}");
        assert!(s.take(b).is_empty(), "{blank}");
    }
    s.send(a, json!({"type":"private_message","targetId":idb}));
    assert!(s.take(a).is_empty() && s.take(b).is_empty());
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"é".repeat(1200)}),
    );
    let dm = dm_frame(1, 1, (&ida, "alice"), (&idb, "bob"), &"é".repeat(1000));
    assert_eq!(s.take(b), vec![dm.clone()]);
    assert_eq!(s.take(a), vec![sent_frame(dm)]);
}

#[test]
fn a_dm_with_an_invalid_client_msg_id_is_invalid_field_and_not_delivered() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    for id in [String::new(), "x".repeat(65), "a\u{200b}".into()] {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":"hi","clientMsgId":id}),
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
    assert!(s.take(b).is_empty());
}

/// A retried DM (same `clientMsgId` from the same sender) is stored once; the target
/// is not sent it again, only the retrying connection hears back.
#[test]
fn a_retried_dm_is_stored_once_and_only_the_retrying_connection_hears_back() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    let dm = json!({"type":"private_message","targetId":idb,"content":"once","clientMsgId":"d-1"});
    s.send(a, dm.clone());
    // The key is the sender's: echoed to the sender, not shown to the target.
    let first = dm_frame(1, 1, (&ida, "alice"), (&idb, "bob"), "once");
    let mut echo = sent_frame(first.clone());
    echo["clientMsgId"] = json!("d-1");
    assert_eq!(s.take(b), vec![first]);
    assert_eq!(s.take(a), vec![echo.clone()]);

    s.send(a, dm);
    assert_eq!(s.take(a), vec![echo]);
    assert!(s.take(b).is_empty(), "bob got no duplicate");
    s.send(a, json!({"type":"dm_history","userId":idb}));
    assert_eq!(history_seqs(&s.take(a)[0]), [1]);
}

#[test]
fn nobody_sees_a_dm_before_the_store_accepted_it_and_a_failed_one_is_reported() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    s.set_store_mode(StoreMode::Held);
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"held"}),
    );
    assert!(s.take(a).is_empty() && s.take(b).is_empty());
    assert_eq!(s.held().len(), 1);
    s.complete(0);
    let dm = dm_frame(1, 1, (&ida, "alice"), (&idb, "bob"), "held");
    assert_eq!(s.take(b), vec![dm.clone()]);
    assert_eq!(s.take(a), vec![sent_frame(dm)]);

    s.set_store_mode(StoreMode::Immediate);
    s.store.fail_next = 1;
    s.send(
        a,
        json!({"type":"private_message","targetId":idb,"content":"lost"}),
    );
    assert_eq!(error_code(&s.take(a)[0]), "store_unavailable");
    assert!(s.take(b).is_empty());
}

/// Each conversation has its own sequence; a DM needs no room.
#[test]
fn each_conversation_counts_its_own_seq() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let c = named(&mut s, "carol");
    let (idb, idc) = (client_id(&mut s, b), client_id(&mut s, c));
    for target in [&idb, &idc, &idb] {
        s.send(
            a,
            json!({"type":"private_message","targetId":target,"content":"hi"}),
        );
    }
    let sent: Vec<u64> = s
        .take(a)
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(sent, [1, 1, 2]);
    assert_eq!(s.take_types(b), ["private_message", "private_message"]);
    assert_eq!(s.take_types(c), ["private_message"]);
}

/// `dm_history` pages the conversation from either side, oldest first within a page,
/// with `before` and `limit`, exactly as its participants received the messages.
#[test]
fn dm_history_pages_the_conversation_from_either_side() {
    let mut s = Sim::new(Config::unlimited());
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    let (ida, idb) = (client_id(&mut s, a), client_id(&mut s, b));
    let mut as_received = Vec::new();
    for i in 0..3 {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":format!("a{i}")}),
        );
        as_received.extend(
            s.take(b)
                .into_iter()
                .filter(|f| f["type"] == "private_message"),
        );
        s.send(
            b,
            json!({"type":"private_message","targetId":ida,"content":format!("b{i}")}),
        );
        as_received.extend(
            s.take(a)
                .into_iter()
                .filter(|f| f["type"] == "private_message"),
        );
    }
    s.take(a);
    s.take(b);
    let seqs: Vec<u64> = as_received
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        as_received[0],
        dm_frame(1, 1, (&ida, "alice"), (&idb, "bob"), "a0")
    );

    s.send(a, json!({"type":"dm_history","userId":idb,"limit":4}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"dm_history","userId":idb,"messages":as_received[2..],"hasMore":true})]
    );
    s.send(b, json!({"type":"dm_history","userId":ida,"before":3}));
    assert_eq!(
        s.take(b),
        vec![json!({"type":"dm_history","userId":ida,"messages":as_received[..2],"hasMore":false})]
    );
}

#[test]
fn dm_history_needs_a_username_and_a_valid_user_id_and_clamps_its_limit() {
    let mut s = Sim::new(Config::unlimited());
    let anonymous = s.connect();
    s.take(anonymous);
    s.send(anonymous, json!({"type":"dm_history","userId":"x"}));
    assert_eq!(
        s.take(anonymous),
        vec![refusal("username_required", "Set username first")]
    );
    let a = named(&mut s, "alice");
    s.send(a, json!({"type":"dm_history","userId":""}));
    assert_eq!(
        s.take(a),
        vec![refusal(
            "invalid_field",
            "user id must be 1 to 128 visible characters"
        )]
    );
    // A conversation that never happened (or with a user gone) is an empty page.
    s.send(a, json!({"type":"dm_history","userId":"nobody"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"dm_history","userId":"nobody","messages":[],"hasMore":false})]
    );
    let b = named(&mut s, "bob");
    let idb = client_id(&mut s, b);
    for i in 0..120 {
        s.send(
            a,
            json!({"type":"private_message","targetId":idb,"content":format!("m{i}")}),
        );
    }
    s.take(a);
    s.send(
        a,
        json!({"type":"dm_history","userId":idb,"limit":1_000_000_000u64}),
    );
    let page = &s.take(a)[0];
    assert_eq!(history_seqs(page), (21..=120).collect::<Vec<_>>());
    assert_eq!(page["hasMore"], true);
}

#[test]
fn dm_history_has_its_own_rate() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    for _ in 0..10 {
        s.send(a, json!({"type":"dm_history","userId":"nobody"}));
    }
    assert_eq!(s.take(a).len(), 10);
    s.send(a, json!({"type":"dm_history","userId":"nobody"}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Reading history too fast","code":"rate_limited",
                    "retryAfterMs":500})
        ]
    );
}
