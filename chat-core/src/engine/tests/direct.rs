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
