//! The chunk decoder (`encoding::decode`) on any stored form a peer sends: it never panics,
//! never yields more bytes than its bound (a zstd bomb is refused, not produced), and accepts
//! only bytes that hash to the claimed hash. The first input byte is the format, the next two
//! the bound in KiB (up to `MAX_CHUNK`); the rest is the payload. Every other input is also
//! claimed under the hash of its own payload, so accepted raw and zstd forms are reached too.
#![no_main]

use filesync_core::chunking::{hash, MAX_CHUNK};
use filesync_core::encoding::{decode, Encoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [format, hi, lo, payload @ ..] = input else { return };
    let max = (u32::from(u16::from_be_bytes([*hi, *lo])) * 1024).min(MAX_CHUNK);
    // A hash nothing matches, and the hash of what the payload is when read raw.
    for claimed in [[0u8; 32], hash(payload)] {
        if let Ok(data) = decode(&claimed, *format, payload, max) {
            assert!(data.len() <= max as usize, "decoded {} bytes past the bound {max}", data.len());
            assert_eq!(hash(&data), claimed);
        }
    }
    // Whatever the decision encodes decodes back to the same bytes.
    if payload.len() <= MAX_CHUNK as usize {
        let e = Encoded::of(payload.to_vec());
        assert_eq!(decode(&hash(payload), e.format, &e.payload, MAX_CHUNK).expect("its own encoding"), payload);
    }
});
