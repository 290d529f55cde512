//! Hand-built client frames (RFC 6455 §5.2), valid or not, for [`RawWs`]: any FIN/RSV
//! bits, any opcode, masked or not, an announced length that differs from what follows.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout_at};

use super::{PROMPT, RawFrame, RawWs};

/// Continuation frame.
pub(crate) const CONTINUATION: u8 = 0x0;
/// Text frame.
pub(crate) const TEXT: u8 = 0x1;
/// Binary frame.
pub(crate) const BINARY: u8 = 0x2;
/// Close frame.
pub(crate) const CLOSE: u8 = 0x8;
/// Ping frame.
pub(crate) const PING: u8 = 0x9;
/// Pong frame.
pub(crate) const PONG: u8 = 0xA;

/// The masking key of every masked frame built here.
pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame header: FIN, the three RSV bits (`rsv` 0..=7, RSV1 is 4), the opcode, the
/// mask bit and the announced payload length; the masking key follows when `masked`.
pub(crate) fn header(fin: bool, rsv: u8, opcode: u8, masked: bool, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 0x7) << 4) | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | u8::try_from(len).expect("fits")),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend(u16::try_from(len).expect("fits").to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend(len.to_be_bytes());
        }
    }
    if masked {
        out.extend(MASK);
    }
    out
}

/// `payload` masked with [`MASK`], as the bytes after a masked header.
pub(crate) fn masked(payload: &[u8]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[i % 4])
        .collect()
}

/// A whole frame.
pub(crate) fn frame(fin: bool, rsv: u8, opcode: u8, mask: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = header(fin, rsv, opcode, mask, payload.len() as u64);
    if mask {
        out.extend(masked(payload));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A well-formed client frame: FIN, no RSV bits, masked.
pub(crate) fn client(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, true, payload)
}

impl RawWs {
    /// Writes raw bytes. Errors are returned, not unwrapped: the server may have closed
    /// the connection already.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Reads frames until a close frame (its code) or the end of the connection (`None`),
    /// skipping text, ping and pong frames; bounded by `within`.
    pub(crate) async fn close_within(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.frame())
                .await
                .unwrap_or_else(|_| panic!("no close and no end within {within:?}"))
            {
                Some(RawFrame::Close(code)) => return code,
                Some(RawFrame::Text(_) | RawFrame::Ping | RawFrame::Other(PONG)) => {}
                Some(other) => panic!("unexpected frame {other:?}"),
                None => return None,
            }
        }
    }

    /// The close code of the next close frame (at most [`PROMPT`]); panics if the
    /// connection ends without one.
    pub(crate) async fn close_code(&mut self) -> u16 {
        self.close_within(PROMPT)
            .await
            .expect("a close frame with a code before the connection ends")
    }

    /// Every frame until the connection ends (bounded by `within`).
    pub(crate) async fn frames_until_end(&mut self, within: Duration) -> Vec<RawFrame> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            match timeout_at(deadline, self.frame()).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return frames,
                Err(_) => panic!("the connection did not end within {within:?}: {frames:?}"),
            }
        }
    }

    /// Whether the connection has ended: EOF (or reset) within `within`, discarding
    /// whatever arrives meanwhile.
    pub(crate) async fn ended_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.frame()).await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }
}
