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
