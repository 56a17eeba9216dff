//! `Message` decoding (`proto::frame::parse`, postcard) on any frame body: it never
//! panics, and a body it accepts describes a message that encodes and decodes
//! back to itself (what the node answers with is what it read).
#![no_main]

use filesync_core::proto::frame;
use filesync_core::proto::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(msg) = frame::parse(body) else { return };
    let _ = (msg.kind(), msg.request_id());
    if let filesync_core::proto::Message::Error { code, .. } = &msg {
        if let Some(c) = ErrorCode::parse(code) {
            assert_eq!(c.as_str(), code);
        }
    }
    let again = frame::encode_body(&msg).expect("a decoded message encodes");
    assert!(again.len() <= body.len(), "re-encoding grew the body: {} -> {}", body.len(), again.len());
    assert_eq!(frame::parse(&again).expect("its own encoding decodes"), msg);
});
