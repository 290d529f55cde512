//! Server frames as RFC 6455 §5.2 lays them out, for the [`wire`](crate::wire) that
//! writes them: a small header in front of the payload, which is written as it is (no
//! copy, no mask — a server never masks).
//!
//! Only what a server sends is encoded here: whole (FIN) text and binary messages,
//! pings, and close frames with a code and a reason. Reading frames stays tungstenite's.

use bytes::{BufMut, Bytes, BytesMut};

/// Text frame opcode.
pub(crate) const TEXT: u8 = 0x1;
/// Binary frame opcode.
pub(crate) const BINARY: u8 = 0x2;
/// Close frame opcode.
pub(crate) const CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub(crate) const PING: u8 = 0x9;

/// The FIN bit of a frame's first byte: the frame is a whole message.
const FIN: u8 = 0x80;

/// Longest close reason that fits a control frame (125 bytes minus the 2-byte code).
pub(crate) const MAX_CLOSE_REASON: usize = 123;

/// The header of one unmasked server frame: FIN, opcode and the payload length in its
/// shortest form (7 bits up to 125, then 16 bits up to 65,535, then 64 bits), at most
/// 10 bytes. Kept inline so a batch's headers need no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    bytes: [u8; Head::MAX],
    len: u8,
}

impl Head {
    /// Longest header of an unmasked frame: 2 bytes + a 64-bit length.
    pub(crate) const MAX: usize = 10;

    /// No header: for bytes that are already whole frames (tungstenite's control
    /// replies), written as they are.
    pub(crate) const NONE: Head = Head {
        bytes: [0; Head::MAX],
        len: 0,
    };

    /// The header of a whole (FIN) frame with `opcode` and `payload_len` bytes.
    pub(crate) fn new(opcode: u8, payload_len: usize) -> Head {
        let mut bytes = [0; Head::MAX];
        bytes[0] = FIN | (opcode & 0x0f);
        let len = match payload_len {
            0..=125 => {
                // In range: the match arm bounds it.
                bytes[1] = payload_len as u8;
                2
            }
            126..=0xffff => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
                10
            }
        };
        Head { bytes, len }
    }

    /// The header's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The header's length in bytes.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }
}

/// The payload of a close frame: the code, big-endian, then `reason` cut to
/// [`MAX_CLOSE_REASON`] bytes on a char boundary (the whole frame must stay within a
/// control frame's 125 bytes).
pub(crate) fn close_payload(code: u16, reason: &str) -> Bytes {
    let reason = truncate(reason, MAX_CLOSE_REASON);
    let mut payload = BytesMut::with_capacity(2 + reason.len());
    payload.put_u16(code);
    payload.put_slice(reason.as_bytes());
    payload.freeze()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `frames`, a run of whole unmasked frames (what tungstenite writes for its
/// control replies), holds a close frame. A run that does not parse counts as one: the
/// caller then stops sending rather than risk writing after a close.
pub(crate) fn holds_close(mut frames: &[u8]) -> bool {
    while !frames.is_empty() {
        let (Some(&b0), Some(&b1)) = (frames.first(), frames.get(1)) else {
            return true;
        };
        if b0 & 0x0f == CLOSE {
            return true;
        }
        let (header, len) = match b1 & 0x7f {
            126 => match frames.get(2..4) {
                Some(n) => (4, u64::from(u16::from_be_bytes([n[0], n[1]]))),
                None => return true,
            },
            127 => match frames.get(2..10).and_then(|n| <[u8; 8]>::try_from(n).ok()) {
                Some(n) => (10, u64::from_be_bytes(n)),
                None => return true,
            },
            n => (2, u64::from(n)),
        };
        let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header + masked))
        else {
            return true;
        };
        let Some(rest) = frames.get(end..) else {
            return true;
        };
        frames = rest;
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

    use super::*;

    /// Decodes `head` with tungstenite's parser: (FIN, opcode, masked, length).
    fn parsed(head: &Head) -> (bool, OpCode, bool, u64) {
        let mut cursor = Cursor::new(head.as_slice().to_vec());
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("a valid header")
            .expect("a complete header");
        assert_eq!(
            cursor.position() as usize,
            head.len(),
            "the header is exactly as long as tungstenite reads"
        );
        (header.is_final, header.opcode, header.mask.is_some(), len)
    }

    #[test]
    fn lengths_take_the_shortest_form_at_every_boundary() {
        for (len, header_len) in [
            (0, 2),
            (1, 2),
            (125, 2),
            (126, 4),
            (127, 4),
            (65_535, 4),
            (65_536, 10),
            (3_200_000, 10),
        ] {
            let head = Head::new(TEXT, len);
            assert_eq!(head.len(), header_len, "length {len}");
            assert_eq!(
                parsed(&head),
                (true, OpCode::Data(Data::Text), false, len as u64),
                "length {len}"
            );
        }
        // The exact bytes at the boundaries (RFC 6455 §5.2).
        assert_eq!(Head::new(TEXT, 0).as_slice(), [0x81, 0]);
        assert_eq!(Head::new(TEXT, 125).as_slice(), [0x81, 125]);
        assert_eq!(Head::new(TEXT, 126).as_slice(), [0x81, 126, 0, 126]);
        assert_eq!(Head::new(TEXT, 65_535).as_slice(), [0x81, 126, 0xff, 0xff]);
        assert_eq!(
            Head::new(TEXT, 65_536).as_slice(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn opcodes_are_the_rfcs() {
        assert_eq!(parsed(&Head::new(BINARY, 3)).1, OpCode::Data(Data::Binary));
        assert_eq!(
            parsed(&Head::new(PING, 0)).1,
            OpCode::Control(Control::Ping)
        );
        assert_eq!(
            parsed(&Head::new(CLOSE, 2)).1,
            OpCode::Control(Control::Close)
        );
        assert_eq!(Head::NONE.as_slice(), [] as [u8; 0]);
    }

    #[test]
    fn close_reasons_are_cut_on_char_boundaries_to_fit_a_control_frame() {
        assert_eq!(truncate("short", 123), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate(&long, MAX_CLOSE_REASON);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));

        let payload = close_payload(1013, &long);
        assert!(payload.len() <= 125, "a control frame's payload");
        assert_eq!(&payload[..2], &1013u16.to_be_bytes());
        assert_eq!(&payload[2..], cut.as_bytes());
        // Exactly 123 bytes of ASCII fit; one more is cut.
        let ascii = "x".repeat(124);
        assert_eq!(close_payload(1000, &ascii).len(), 125);
        assert_eq!(close_payload(1000, "").as_ref(), [0x03, 0xe8]);
    }

    #[test]
    fn close_frames_are_found_in_a_run_of_control_frames() {
        let pong = [0x8a, 2, b'h', b'i'];
        let close = [0x88, 2, 0x03, 0xe8];
        assert!(!holds_close(&pong));
        assert!(!holds_close(&[]));
        assert!(holds_close(&close));
        assert!(holds_close(&[&pong[..], &close[..]].concat()));
        // Cut short: counted as a close, to be safe.
        assert!(holds_close(&pong[..3]));
    }
}
