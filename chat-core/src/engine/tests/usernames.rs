//! Connection and usernames.

use super::*;

#[test]
fn connection_is_the_first_frame_and_carries_the_client_id() {
    let mut s = sim();
    let c = s.connect();
    let id = client_id(&mut s, c);
    assert_eq!(s.take(c), vec![json!({"type":"connection","clientId":id})]);
}

#[test]
fn set_username_is_trimmed_and_answered() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(c, json!({"type":"set_username","username":"  alice  "}));
    assert_eq!(
        s.take(c),
        vec![json!({"type":"username_set","username":"alice"})]
    );
}

#[test]
fn set_username_longer_than_20_is_cut() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(
        c,
        json!({"type":"set_username","username":"abcdefghijklmnopqrstuvwxyz"}),
    );
    assert_eq!(s.take(c)[0]["username"], "abcdefghijklmnopqrst");
}

#[test]
fn set_username_shorter_than_2_is_an_error() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(c, json!({"type":"set_username","username":" a "}));
    assert_eq!(
        s.take(c),
        vec![
            json!({"type":"error","message":"Username must be at least 2 characters","code":"invalid_username"})
        ]
    );
    s.send(c, json!({"type":"set_username"}));
    assert_eq!(error_code(&s.take(c)[0]), "invalid_username");
}

#[test]
fn username_taken_by_another_online_user_compares_case_and_look_alikes() {
    let mut s = sim();
    named(&mut s, "Alice");
    let b = s.connect();
    s.take(b);
    for name in ["alice", "ALICE", "\u{0410}lice", "ａｌｉｃｅ"] {
        s.send(b, json!({"type":"set_username","username":name}));
        assert_eq!(
            s.take(b),
            vec![json!({"type":"error","message":"Username taken","code":"username_taken"})],
            "{name}"
        );
    }
}

#[test]
fn a_name_is_free_again_when_its_holder_goes_offline() {
    let mut s = sim();
    let a = named(&mut s, "alice");
    s.disconnect(a);
    let b = s.connect();
    s.take(b);
    s.send(b, json!({"type":"set_username","username":"alice"}));
    assert_eq!(s.take_types(b), ["username_set"]);
}

#[test]
fn setting_the_same_name_again_is_fine_and_renaming_in_a_room_is_refused() {
    let mut s = sim();
    let a = member(&mut s, "alice", "lobby");
    s.send(a, json!({"type":"set_username","username":"alice"}));
    assert_eq!(s.take_types(a), ["username_set"]);
    s.send(a, json!({"type":"set_username","username":"alicia"}));
    assert_eq!(error_code(&s.take(a)[0]), "username_locked");
    s.send(a, json!({"type":"leave_room"}));
    s.take(a);
    s.send(a, json!({"type":"set_username","username":"alicia"}));
    assert_eq!(
        s.take(a),
        vec![json!({"type":"username_set","username":"alicia"})]
    );
}

#[test]
fn usernames_with_bidi_or_invisible_characters_are_refused() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(
        c,
        json!({"type":"set_username","username":"adm\u{202E}nimda"}),
    );
    assert_eq!(error_code(&s.take(c)[0]), "invalid_username");
}

/// The answer on the wire for each kind of refused name (the full tables of characters
/// are in `ids.rs`); the connection then takes a good name.
#[test]
fn refused_usernames_are_answered_with_the_exact_error_and_a_good_name_still_works() {
    let invisible = json!({"type":"error","code":"invalid_username",
        "message":"Username contains invisible or control characters"});
    let too_short = json!({"type":"error","code":"invalid_username",
        "message":"Username must be at least 2 characters"});
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    for (name, expected) in [
        (json!("esc\u{1b}[31m"), &invisible),
        (json!("\u{202e}evil"), &invisible),
        (json!("a\u{200b}b"), &invisible),
        (json!("\u{3000}\u{3000}"), &too_short),
        (json!(""), &too_short),
        (json!(" a "), &too_short),
    ] {
        s.send(c, json!({"type":"set_username","username":name}));
        assert_eq!(s.take(c), vec![expected.clone()], "{name}");
    }
    s.send(c, json!({"type":"set_username"}));
    assert_eq!(s.take(c), vec![too_short]);
    s.send(c, json!({"type":"set_username","username":"fine-name"}));
    assert_eq!(
        s.take(c),
        vec![json!({"type":"username_set","username":"fine-name"})]
    );
}

#[test]
fn a_cut_name_is_answered_without_the_space_the_cut_left() {
    let mut s = sim();
    let c = s.connect();
    s.take(c);
    s.send(
        c,
        json!({"type":"set_username","username":"abcdefghijklmnopqrs uvwxyz"}),
    );
    assert_eq!(
        s.take(c),
        vec![json!({"type":"username_set","username":"abcdefghijklmnopqrs"})]
    );
}

/// Every look-alike of an online user's name (see `ids.rs` for why they collide) is
/// taken; another name is not.
#[test]
fn every_look_alike_of_an_online_name_is_taken() {
    let mut s = sim();
    named(&mut s, "Alice");
    let b = s.connect();
    s.take(b);
    for name in [
        "alice",
        "ALICE",
        " Alice ",
        "\u{410}lice",
        "\u{430}lice",
        "\u{391}LICE",
        "ａｌｉｃｅ",
        "al\u{456}ce",
        "Alic\u{435}",
    ] {
        s.send(b, json!({"type":"set_username","username":name}));
        assert_eq!(
            s.take(b),
            vec![json!({"type":"error","message":"Username taken","code":"username_taken"})],
            "{name:?}"
        );
    }
    s.send(b, json!({"type":"set_username","username":"bob"}));
    assert_eq!(
        s.take(b),
        vec![json!({"type":"username_set","username":"bob"})]
    );
}
