//! The frame decoder (`proto::frame`) on whatever bytes a peer sends, however the
//! stream splits them: it never panics, never allocates more than the frame
//! limit allows, and reads the same frames (and the same error) whether the bytes
//! arrive all at once or a few at a time. Every frame it yields re-encodes to a
//! frame that decodes to the same message.
#![no_main]

use bytes::BytesMut;
use filesync_core::proto::frame::{self, FrameCodec, FrameError};
use filesync_core::proto::Message;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// What a decoder made of a stream: the frames, then how it stopped.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte consumed or waiting for more.
    Open,
    TooLarge {
        len: usize,
        max: usize,
    },
    Malformed,
}

fn decode_in_pieces(wire: &[u8], max: usize, piece: usize) -> (Vec<Message>, End) {
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in wire.chunks(piece) {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max }) => return (out, End::TooLarge { len, max }),
                Err(FrameError::Malformed(_)) => return (out, End::Malformed),
                Err(e) => panic!("decoding from memory cannot fail with {e}"),
            }
        }
    }
    (out, End::Open)
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the frame limit (small, so limits are hit) and how the stream is split.
    let [a, b, piece, wire @ ..] = data else { return };
    let max = usize::from(u16::from_be_bytes([*a, *b])) + 1;
    let piece = usize::from(*piece).max(1);

    let whole = decode_in_pieces(wire, max, wire.len().max(1));
    let split = decode_in_pieces(wire, max, piece);
    assert_eq!(whole, split, "splitting the stream changed what was decoded");

    if let Ok(len) = frame::check(wire, max) {
        assert!(len >= 1 && len <= max && frame::PREFIX_BYTES + len <= wire.len());
    }

    let mut codec = FrameCodec::new(max);
    for m in whole.0 {
        let mut again = BytesMut::new();
        codec.encode(m.clone(), &mut again).expect("a decoded message re-encodes within the limit it came in");
        assert_eq!(codec.decode(&mut again).expect("re-encoded frame decodes"), Some(m));
        assert!(again.is_empty());
    }
});
