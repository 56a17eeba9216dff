//! Framing: how a [`Message`] travels on a TCP stream.
//!
//! ```text
//! +----------------------+---------------------------------------------+
//! | length: u32 BE (4 B) | body: postcard encoding of Message (length B)|
//! +----------------------+---------------------------------------------+
//! ```
//!
//! This is exactly `tokio_util::codec::LengthDelimitedCodec`'s default layout
//! (4-byte big-endian length that counts only the body). Limits:
//! - `length` must be ≥ 1 and ≤ the maximum frame size (default 8 MiB,
//!   `FILESYNC_MAX_FRAME_BYTES`, announced in `Welcome.max_frame_bytes`). A
//!   larger prefix is refused **from the 4 prefix bytes alone**, before any
//!   body byte is read: the node answers `Error{code:"frame_too_large"}` and
//!   closes.
//! - The body must decode as exactly one `Message` with no bytes left over;
//!   otherwise `Error{code:"bad_frame"}` and close.
//!
//! Decoding is two steps, so a half-received frame is never parsed:
//! [`check`] looks only at the buffered bytes and says `Incomplete` (read
//! more), `TooLarge` (refuse) or "a whole frame of n bytes is here"; only
//! then [`parse`] decodes the body.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::Message;

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;
/// Default largest body.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not a whole frame yet: read more bytes. Not an error on a live stream.
    #[error("incomplete frame")]
    Incomplete,
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Looks at buffered bytes: the body length if a whole frame is there.
pub fn check(buf: &[u8], max_frame_bytes: usize) -> Result<usize, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_BYTES) else {
        return Err(FrameError::Incomplete);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge { len, max: max_frame_bytes });
    }
    if len == 0 {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    if buf.len() - PREFIX_BYTES < len {
        return Err(FrameError::Incomplete);
    }
    Ok(len)
}

/// Decodes one body; trailing bytes are an error.
pub fn parse(body: &[u8]) -> Result<Message, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} trailing bytes after the message", rest.len())));
    }
    Ok(msg)
}

/// The body of a message (no prefix).
pub fn encode_body(msg: &Message) -> Result<Vec<u8>, FrameError> {
    postcard::to_allocvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A whole frame: prefix then body. Refuses bodies over `max_frame_bytes`.
pub fn encode_frame(msg: &Message, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let body = encode_body(msg)?;
    if body.len() > max_frame_bytes {
        return Err(FrameError::TooLarge { len: body.len(), max: max_frame_bytes });
    }
    let mut out = Vec::with_capacity(PREFIX_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The tokio codec: `Framed<TcpStream, FrameCodec>` yields and takes [`Message`]s.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec { max_frame_bytes: max_frame_bytes.min(u32::MAX as usize) }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match check(src, self.max_frame_bytes) {
            Ok(len) => {
                src.advance(PREFIX_BYTES);
                let body = src.split_to(len);
                parse(&body).map(Some)
            }
            Err(FrameError::Incomplete) => {
                // Reserve room for the rest of a frame whose length is known (already checked against the max).
                if let Some(p) = src.get(..PREFIX_BYTES) {
                    let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
                    src.reserve((PREFIX_BYTES + len).saturating_sub(src.len()));
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Encoder<Message> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        let body = encode_body(&msg)?;
        if body.len() > self.max_frame_bytes {
            return Err(FrameError::TooLarge { len: body.len(), max: self.max_frame_bytes });
        }
        dst.reserve(PREFIX_BYTES + body.len());
        dst.put_u32(body.len() as u32);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkspaceId;
    use crate::proto::{ChunkRef, ErrorCode, FileUpload, PutFile};

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello { protocol_version: 1, token: "t".into(), device_id: "d".into(), device_name: "n".into() },
            Message::error(7, ErrorCode::InvalidPath, "no"),
            Message::PutFile(PutFile {
                request_id: 1,
                workspace_id: WorkspaceId(2),
                file: FileUpload {
                    path: "a/b".into(),
                    base_version: 0,
                    size: 5,
                    mtime_ms: -3,
                    mode: 0o644,
                    content_hash: [1; 32],
                    chunks: vec![ChunkRef { hash: [2; 32], len: 5 }],
                },
            }),
            Message::Chunk { request_id: 9, hash: [3; 32], format: 0, payload: (0..=255).collect() },
            Message::Ping { nonce: u64::MAX },
        ]
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut codec = FrameCodec::new(1024);
        let mut wire = BytesMut::new();
        for m in samples() {
            codec.encode(m, &mut wire).unwrap();
        }
        // Feed one byte at a time: every prefix of a frame must be Incomplete, never an error.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, samples());
        assert!(buf.is_empty());
    }

    #[test]
    fn matches_length_delimited_codec_layout() {
        let msg = Message::Pong { nonce: 5 };
        let frame = encode_frame(&msg, 1024).unwrap();
        let mut ldc = tokio_util::codec::LengthDelimitedCodec::new();
        let mut buf = BytesMut::from(&frame[..]);
        let body = ldc.decode(&mut buf).unwrap().unwrap();
        assert_eq!(parse(&body).unwrap(), msg);
    }

    #[test]
    fn too_large_is_known_from_the_prefix_alone() {
        let mut codec = FrameCodec::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 101][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooLarge { len: 101, max: 100 })));
        let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut huge), Err(FrameError::TooLarge { .. })));
        // Exactly the maximum is fine (and incomplete until the body arrives).
        let mut max = BytesMut::from(&[0u8, 0, 0, 100][..]);
        assert!(codec.decode(&mut max).unwrap().is_none());
    }

    #[test]
    fn garbage_empty_and_trailing_bytes_are_malformed() {
        let mut codec = FrameCodec::new(1024);
        for body in [&[0xffu8, 0xff, 0xff][..], &[200][..], &[3, 0x80][..]] {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.extend_from_slice(body);
            assert!(matches!(codec.decode(&mut buf), Err(FrameError::Malformed(_))), "{body:?}");
        }
        let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(codec.decode(&mut empty), Err(FrameError::Malformed(_))));
        let mut trailing = BytesMut::new();
        let mut body = encode_body(&Message::Ping { nonce: 1 }).unwrap();
        body.push(0);
        trailing.put_u32(body.len() as u32);
        trailing.extend_from_slice(&body);
        assert!(matches!(codec.decode(&mut trailing), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn encoder_refuses_oversized_bodies() {
        let mut codec = FrameCodec::new(64);
        let big = Message::Chunk { request_id: 1, hash: [0; 32], format: 0, payload: vec![0; 64] };
        assert!(matches!(codec.encode(big, &mut BytesMut::new()), Err(FrameError::TooLarge { .. })));
    }
}
