//! Typing indicators.

use super::*;

#[test]
fn typing_reaches_the_others_only_and_repeated_starts_are_coalesced() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let ida = client_id(&mut s, a);
    s.send(a, json!({"type":"typing_start"}));
    s.send(a, json!({"type":"typing_start"}));
    assert!(s.take(a).is_empty());
    assert_eq!(
        s.take(b),
        vec![
            json!({"type":"typing_indicator","room":"lobby","username":"alice","userId":ida,"isTyping":true})
        ]
    );
    s.send(a, json!({"type":"typing_stop"}));
    assert_eq!(s.take(b)[0]["isTyping"], false);
    s.send(a, json!({"type":"typing_stop"}));
    assert!(s.take(b).is_empty(), "stop when not typing is silent");
}

#[test]
fn typing_stops_by_itself_after_5_seconds_without_news() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    s.advance(Duration::from_secs(3));
    s.send(a, json!({"type":"typing_start"})); // refresh
    s.advance(Duration::from_millis(4_900));
    assert!(s.take(b).is_empty());
    assert_eq!(
        s.engine.poll_timeout(),
        Some(s.now + Duration::from_millis(100))
    );
    s.advance(Duration::from_millis(100));
    assert_eq!(s.take(b)[0]["isTyping"], false);
    assert_eq!(s.engine.poll_timeout(), None);
}

#[test]
fn sending_a_message_stops_typing() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    chat(&mut s, a, "done");
    let frames = s.take(b);
    assert_eq!(frames[0]["type"], "typing_indicator");
    assert_eq!(frames[0]["isTyping"], false);
    assert_eq!(frames[1]["type"], "message_received");
}

#[test]
fn leaving_stops_typing_before_user_left() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    s.disconnect(a);
    let frames = s.take(b);
    assert_eq!(frames[0]["isTyping"], false);
    assert_eq!(frames[1]["type"], "user_left");
    assert_eq!(s.engine.poll_timeout(), None, "no timer left behind");
}

#[test]
fn typing_outside_a_room_is_an_error() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.send(a, json!({"type":"typing_start"}));
    assert_eq!(error_code(&s.take(a)[0]), "not_in_room");
}

/// A flood of starts: one indicator for the one change, the starts past the burst (10)
/// refused with the typing rate's wait; once the bucket refilled, a stop gets through.
#[test]
fn a_typing_flood_is_coalesced_to_one_indicator_and_rate_limited() {
    let mut s = sim();
    let typist = member(&mut s, "typist", "typing");
    let watcher = member(&mut s, "watcher", "typing");
    s.take(typist);
    let id = client_id(&mut s, typist);
    let indicator = |typing: bool| {
        json!({"type":"typing_indicator","room":"typing","username":"typist","userId":id,
               "isTyping":typing})
    };
    for _ in 0..20 {
        s.send(typist, json!({"type":"typing_start"}));
    }
    let refused = json!({"type":"error","message":"Typing updates too fast",
                         "code":"rate_limited","retryAfterMs":500});
    assert_eq!(s.take(typist), vec![refused; 10]);
    assert_eq!(s.take(watcher), vec![indicator(true)]);
    // Still refused a moment before the refill; then one more update is allowed.
    s.advance(Duration::from_millis(499));
    s.send(typist, json!({"type":"typing_stop"}));
    assert_eq!(s.take(typist)[0]["retryAfterMs"], 1);
    assert!(s.take(watcher).is_empty());
    s.advance(Duration::from_millis(1));
    s.send(typist, json!({"type":"typing_stop"}));
    assert!(s.take(typist).is_empty());
    assert_eq!(s.take(watcher), vec![indicator(false)]);
}

/// Within the burst, every actual change of state is one indicator, and only those.
#[test]
fn flapping_typing_sends_one_indicator_per_actual_change() {
    let mut s = sim();
    let typist = member(&mut s, "typist", "typing");
    let watcher = member(&mut s, "watcher", "typing");
    s.take(typist);
    let id = client_id(&mut s, typist);
    for start in [
        true, true, false, false, true, false, false, true, true, false,
    ] {
        let kind = if start { "typing_start" } else { "typing_stop" };
        s.send(typist, json!({"type":kind}));
    }
    let expected: Vec<Value> = [true, false, true, false, true, false]
        .into_iter()
        .map(|typing| {
            json!({"type":"typing_indicator","room":"typing","username":"typist",
                   "userId":id,"isTyping":typing})
        })
        .collect();
    assert_eq!(s.take(watcher), expected);
    assert!(s.take(typist).is_empty(), "nothing echoed to the typist");
}

/// The timeout is the configured one, not a constant.
#[test]
fn typing_stops_after_the_configured_typing_timeout() {
    let mut s = Sim::new(config(|c| c.typing_timeout = Duration::from_millis(300)));
    let a = member(&mut s, "alice", "lobby");
    let b = member(&mut s, "bob", "lobby");
    s.take(a);
    let ida = client_id(&mut s, a);
    s.send(a, json!({"type":"typing_start"}));
    s.take(b);
    s.advance(Duration::from_millis(299));
    assert!(s.take(b).is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(
        s.take(b),
        vec![
            json!({"type":"typing_indicator","room":"lobby","username":"alice",
                    "userId":ida,"isTyping":false})
        ]
    );
    assert!(s.take(a).is_empty());
}
