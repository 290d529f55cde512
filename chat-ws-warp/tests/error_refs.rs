//! *ext* Request references on the wire (PROTOCOL.md *Errors*): the rule itself is tested
//! on the engine (`chat-core/src/engine/tests/references.rs`); this shows the whole
//! server — socket, decoder, hub, engine, encoder — carries `ref` and `clientMsgId` back
//! on the `error` that answers a frame, and leaves the frames of clients that send
//! neither unchanged.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_frame_carries_the_ref_and_client_msg_id_it_answers() {
    let server = TestServer::start().await;
    let mut alice = server.named("alice").await;
    alice
        .send(json!({"type": "chat_message", "content": "hi", "clientMsgId": "m-1", "ref": "r-1"}))
        .await;
    alice
        .expect(
            json!({"type": "error", "message": "Join a room first", "code": "not_in_room",
            "ref": "r-1", "clientMsgId": "m-1"}),
        )
        .await;
    // A decoding refusal names its frame too, when the ref can be read.
    alice
        .send_text(r#"{"type":"chat_message","content":5,"ref":"r-2"}"#)
        .await;
    alice
        .expect(
            json!({"type": "error", "message": "Invalid message: \"content\" must be a string",
            "code": "invalid_message", "ref": "r-2"}),
        )
        .await;
    // Without a ref, the base frame.
    alice.send(json!({"type": "leave_room"})).await;
    alice.expect_error("Join a room first", "not_in_room").await;
}
