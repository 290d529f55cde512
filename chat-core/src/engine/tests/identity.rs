//! Identity is the user id (a token's `sub`); display names of authenticated users are
//! disambiguated, never refused (PROTOCOL.md, "Identity").

use super::*;

fn greeting(user: &str, name: &str) -> Vec<Value> {
    vec![
        json!({"type":"connection","clientId":user}),
        json!({"type":"username_set","username":name}),
    ]
}

#[test]
fn two_users_with_one_name_are_both_online_the_second_disambiguated() {
    let mut s = sim();
    let first = s.connect_as("idp|1", "John Smith");
    assert_eq!(s.take(first), greeting("idp|1", "John Smith"));
    let second = s.connect_as("idp|2", "John Smith");
    assert_eq!(s.closed(second), None);
    assert_eq!(s.take(second), greeting("idp|2", "John Smith (2)"));
    let third = s.connect_as("idp|3", "john smith");
    assert_eq!(s.take(third), greeting("idp|3", "john smith (3)"));
    assert_eq!(s.engine.user_count(), 3);
}

#[test]
fn the_suffix_fits_in_twenty_characters() {
    let mut s = sim();
    s.connect_as("a", "Abcdefghijklmnopqrst");
    let b = s.connect_as("b", "Abcdefghijklmnopqrst");
    assert_eq!(s.take(b), greeting("b", "Abcdefghijklmnop (2)"));
    // A cut that leaves a trailing space drops it.
    s.connect_as("c", "Abcdefghijklmno qrst");
    let d = s.connect_as("d", "Abcdefghijklmno qrst");
    assert_eq!(s.take(d), greeting("d", "Abcdefghijklmno (2)"));
}

#[test]
fn after_sixteen_numbered_tries_the_suffix_comes_from_the_user_id() {
    let mut s = sim();
    let first = s.connect_as("u0", "Max");
    assert_eq!(s.take(first), greeting("u0", "Max"));
    for n in 2..=17 {
        let id = format!("u{n}");
        let c = s.connect_as(&id, "Max");
        assert_eq!(s.take(c), greeting(&id, &format!("Max ({n})")));
    }
    // "Max (18)" is not tried: a hash of the user id instead, fitted in 20 characters.
    let hashed = s.connect_as("idp|someone", "Max");
    assert_eq!(s.take(hashed), greeting("idp|someone", "Max #ed65"));
    let long = s.connect_as("idp|long", "Abcdefghijklmnopqrst");
    s.take(long);
    for n in 2..=17 {
        let c = s.connect_as(&format!("l{n}"), "Abcdefghijklmnopqrst");
        s.take(c);
    }
    let cut = s.connect_as("idp|someone-else", "Abcdefghijklmnopqrst");
    assert_eq!(
        s.take(cut),
        greeting("idp|someone-else", "Abcdefghijklmn #343b")
    );
    // A new connection of the holder keeps its name.
    let again = s.connect_as("idp|someone", "Max");
    assert_eq!(s.take(again), greeting("idp|someone", "Max #ed65"));
}

#[test]
fn look_alikes_are_disambiguated_too() {
    let mut s = sim();
    s.connect_as("a", "alice");
    // Cyrillic а: the same skeleton, so it must not pass for alice either.
    let b = s.connect_as("b", "\u{430}lice");
    assert_eq!(s.take(b), greeting("b", "\u{430}lice (2)"));
}

#[test]
fn an_anonymous_holder_keeps_the_name_and_the_signed_in_user_is_disambiguated() {
    let mut s = sim();
    let anon = named(&mut s, "Alice");
    let alice = s.connect_as("alice-id", "Alice");
    assert_eq!(s.take(alice), greeting("alice-id", "Alice (2)"));
    assert_eq!(
        s.take(anon),
        Vec::<Value>::new(),
        "the anonymous user is untouched"
    );
    // The name is still the anonymous user's; anonymous users cannot take a
    // signed-in user's name either.
    let late = s.connect();
    s.take(late);
    s.send(late, json!({"type":"set_username","username":"alice (2)"}));
    assert_eq!(error_code(&s.take(late)[0]), "username_taken");
}

#[test]
fn the_name_is_stable_while_the_user_is_online_and_freed_with_its_last_connection() {
    let mut s = sim();
    let first = s.connect_as("one", "Sam");
    let sam2 = s.connect_as("two", "Sam");
    assert_eq!(s.take(sam2), greeting("two", "Sam (2)"));
    // The first Sam leaves: the second keeps "Sam (2)" on every connection, even a new
    // one, while it stays online.
    s.disconnect(first);
    let again = s.connect_as("two", "Sam");
    assert_eq!(s.take(again), greeting("two", "Sam (2)"));
    // Once it is gone too, the names are free: whoever comes first gets "Sam".
    s.disconnect(sam2);
    s.disconnect(again);
    let back = s.connect_as("two", "Sam");
    assert_eq!(s.take(back), greeting("two", "Sam"));
}

#[test]
fn a_freed_suffix_is_reused_deterministically() {
    let mut s = sim();
    s.connect_as("1", "Kim");
    let k2 = s.connect_as("2", "Kim");
    let k3 = s.connect_as("3", "Kim");
    assert_eq!(s.take(k3), greeting("3", "Kim (3)"));
    s.disconnect(k2);
    let k4 = s.connect_as("4", "Kim");
    assert_eq!(
        s.take(k4),
        greeting("4", "Kim (2)"),
        "the lowest free suffix"
    );
}

#[test]
fn others_see_the_disambiguated_name_next_to_the_user_id() {
    let mut s = sim();
    let a = s.connect_as("idp|1", "John Smith");
    s.send(a, json!({"type":"join_room","room":"lobby"}));
    s.take(a);
    let b = s.connect_as("idp|2", "John Smith");
    s.take(b);
    s.send(b, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take(a),
        vec![
            json!({"type":"user_joined","room":"lobby","username":"John Smith (2)","userId":"idp|2"})
        ]
    );
}
