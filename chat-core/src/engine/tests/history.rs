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
