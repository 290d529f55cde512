//! Any byte string decodes to a command or a typed error, never a panic; every error maps
//! to a known wire code; every event the server could send about a decoded command
//! encodes to valid JSON.
#![no_main]

use chat_core::protocol::{decode, ErrorCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(command) => {
            // A decoded command has a known type name.
            assert!(!command.type_name().is_empty());
        }
        Err(error) => {
            let wire = error.to_wire();
            assert!(ErrorCode::ALL.contains(&wire.code));
            let event = chat_core::ServerEvent::Error(wire);
            let bytes = chat_core::protocol::encode(&event);
            let parsed: serde_json::Value =
                serde_json::from_slice(&bytes).expect("the encoder writes JSON");
            assert_eq!(parsed["type"], "error");
        }
    }
});
