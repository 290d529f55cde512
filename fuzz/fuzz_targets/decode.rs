//! Any byte string decodes to a command or a typed error, never a panic; every error maps
//! to a known wire code and a fixed text (nothing of the frame is quoted back but the
//! unknown type and the `ref`); a `ref` is only ever a valid one; every event the server
//! could send about a decoded command encodes to valid JSON.
#![no_main]

use chat_core::protocol::{decode_frame, Decoded, ErrorCode, REF_MAX_CHARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Decoded { command, reference } = decode_frame(data);
    if let Some(r) = &reference {
        let n = r.as_str().chars().count();
        assert!(n >= 1 && n <= REF_MAX_CHARS);
    }
    match command {
        Ok(command) => {
            // A decoded command has a known type name.
            assert!(!command.type_name().is_empty());
        }
        Err(error) => {
            let mut wire = error.to_wire();
            assert!(ErrorCode::ALL.contains(&wire.code));
            if wire.code != ErrorCode::UnknownType {
                assert_eq!(wire.message, error.refusal().text());
            }
            wire.reference = reference;
            let event = chat_core::ServerEvent::Error(wire);
            let bytes = chat_core::protocol::encode(&event);
            let parsed: serde_json::Value =
                serde_json::from_slice(&bytes).expect("the encoder writes JSON");
            assert_eq!(parsed["type"], "error");
        }
    }
});
