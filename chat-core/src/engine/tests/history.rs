//! History pages.

use super::*;

#[test]
fn history_pages_backwards_and_clamps_the_limit() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    for i in 1..=120 {
        chat(&mut s, a, &format!("m{i}"));
    }
    s.take(a);
    s.send(
        a,
        json!({"type":"history","room":"lobby","before":21,"limit":10}),
    );
    let page = &s.take(a)[0];
    assert_eq!(history_seqs(page), (11..=20).collect::<Vec<_>>());
    assert_eq!(page["hasMore"], true);
    assert!(page.get("recovered").is_none());
    s.send(
        a,
        json!({"type":"history","room":"lobby","before":3,"limit":10}),
    );
    let page = &s.take(a)[0];
    assert_eq!(history_seqs(page), [1, 2]);
    assert_eq!(page["hasMore"], false);
    s.send(
        a,
        json!({"type":"history","room":"lobby","limit":1_000_000_000u64}),
    );
    assert_eq!(history_seqs(&s.take(a)[0]).len(), 100);
    s.send(a, json!({"type":"history","room":"other"}));
    assert_eq!(error_code(&s.take(a)[0]), "not_in_room");
}

/// Without `limit` a page is 50; `limit` 0 means 1 and any larger limit is clamped to
/// 100; a cursor past the end reads the latest page, one at 0 or 1 an empty page.
#[test]
fn history_limits_and_cursors_are_bounded() {
    let mut s = Sim::new(Config::unlimited());
    let a = member(&mut s, "alice", "lobby");
    let ida = client_id(&mut s, a);
    for i in 1..=120 {
        chat(&mut s, a, &format!("m{i}"));
    }
    s.take(a);
    let page = |s: &mut Sim, request: Value| {
        let mut command = json!({"type":"history","room":"lobby"});
        for (k, v) in request.as_object().unwrap() {
            command[k] = v.clone();
        }
        s.send(a, command);
        let frames = s.take(a);
        assert_eq!(frames.len(), 1, "{request}");
        (history_seqs(&frames[0]), frames[0]["hasMore"].clone())
    };
    let range = |r: std::ops::RangeInclusive<u64>| r.collect::<Vec<_>>();
    assert_eq!(page(&mut s, json!({})), (range(71..=120), json!(true)));
    for limit in [1_000_000_000, u64::MAX] {
        assert_eq!(
            page(&mut s, json!({ "limit": limit })),
            (range(21..=120), json!(true))
        );
    }
    assert_eq!(page(&mut s, json!({"limit": 0})), (vec![120], json!(true)));
    assert_eq!(
        page(&mut s, json!({"before": u64::MAX})),
        (range(71..=120), json!(true))
    );
    for before in [0, 1] {
        assert_eq!(
            page(&mut s, json!({ "before": before })),
            (vec![], json!(false))
        );
    }
    // The exact frame: no join cursor on a `history` page.
    s.send(
        a,
        json!({"type":"history","room":"lobby","before":3,"limit":10}),
    );
    assert_eq!(
        s.take(a),
        vec![json!({"type":"message_history","room":"lobby","messages":[
            received(1, "lobby", 1, &ida, "alice", "m1"),
            received(2, "lobby", 2, &ida, "alice", "m2"),
        ],"hasMore":false})]
    );
    s.send(a, json!({"type":"history","room":"canary"}));
    assert_eq!(
        s.take(a),
        vec![refusal("not_in_room", "You are not in that room")]
    );
}

#[test]
fn history_has_its_own_rate() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    for _ in 0..10 {
        s.send(a, json!({"type":"history","room":"lobby"}));
    }
    assert_eq!(s.take_types(a), vec!["message_history"; 10]);
    s.send(a, json!({"type":"history","room":"lobby"}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"error","message":"Reading history too fast","code":"rate_limited",
                    "retryAfterMs":500})
        ]
    );
    chat(&mut s, a, "chat is not affected");
    assert_eq!(seqs(&s.take(a)), [1]);
}
