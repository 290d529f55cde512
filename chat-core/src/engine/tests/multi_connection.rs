//! Several connections per user.

use super::*;

#[test]
fn presence_counts_users_not_connections() {
    let mut s = sim();
    let watcher = member(&mut s, "carol", "lobby");
    let tab1 = s.connect_as("alice-id", "alice");
    let tab2 = s.connect_as("alice-id", "alice");
    assert_eq!(s.take_types(tab1), ["connection", "username_set"]);
    s.take(tab2);
    s.send(tab1, json!({"type":"join_room","room":"lobby"}));
    s.send(tab2, json!({"type":"join_room","room":"lobby"}));
    assert_eq!(
        s.take_types(watcher),
        ["user_joined"],
        "one user, one user_joined"
    );
    let users = &s.take(tab2)[2]["users"];
    assert_eq!(users.as_array().unwrap().len(), 2);
    s.disconnect(tab1);
    assert!(
        s.take(watcher).is_empty(),
        "alice still has a connection in the room"
    );
    s.disconnect(tab2);
    assert_eq!(s.take_types(watcher), ["user_left"]);
    assert_eq!(s.engine.user_count(), 1);
}

#[test]
fn a_dm_reaches_all_target_connections_and_the_senders_other_connections() {
    let mut s = sim();
    let a1 = s.connect_as("alice-id", "alice");
    let a2 = s.connect_as("alice-id", "alice");
    let b1 = s.connect_as("bob-id", "bob");
    let b2 = s.connect_as("bob-id", "bob");
    for c in [a1, a2, b1, b2] {
        s.take(c);
    }
    s.send(
        a1,
        json!({"type":"private_message","targetId":"bob-id","content":"hi"}),
    );
    assert_eq!(s.take_types(a1), ["private_message_sent"]);
    assert_eq!(s.take_types(a2), ["private_message_sent"]);
    assert_eq!(s.take_types(b1), ["private_message"]);
    assert_eq!(s.take_types(b2), ["private_message"]);
}

#[test]
fn an_authenticated_name_cannot_be_changed_or_shadowed() {
    let mut s = sim();
    let a = s.connect_as("alice-id", "Alice");
    s.take(a);
    s.send(a, json!({"type":"set_username","username":"mallory"}));
    assert_eq!(error_code(&s.take(a)[0]), "username_locked");
    // A look-alike from another user is shown disambiguated, not refused (see
    // `identity.rs`): it cannot pass for Alice, and it cannot lock her out.
    let other = s.connect_as("other-id", "ALICE");
    assert_eq!(s.closed(other), None);
    assert_eq!(
        s.take(other)[1],
        json!({"type":"username_set","username":"ALICE (2)"})
    );
}

#[test]
fn connections_per_user_are_capped() {
    let config = Config {
        max_connections_per_user: 2,
        ..Config::default()
    };
    let mut s = Sim::new(config);
    s.connect_as("u", "alice");
    s.connect_as("u", "alice");
    let third = s.connect_as("u", "alice");
    assert_eq!(s.closed(third).map(|(c, _)| c), Some(CloseCode::POLICY));
    assert_eq!(s.engine.connection_count(), 2);
}
