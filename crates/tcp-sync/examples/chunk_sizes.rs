//! Picks FastCDC sizes: for several (min, avg, max) triples, how many bytes
//! does a small edit in the middle of a large file put on the wire, and how
//! many chunks (journal manifest records, `workspace_chunks` rows) does a
//! file need? Run: `cargo run -p filesync-tcp-sync --example chunk_sizes [MiB]`.
//! A measurement, not a test: the numbers go to docs/protocol.md ("Chunk sizes").
//! "delta" is the real `PutDelta` frame against the previous version (what an
//! edit sends since protocol 2); "manifest" is the full list a `PutFile` carries.

use filesync_core::testing::noise;
use std::collections::HashSet;

use filesync_core::chunking::ChunkRef;
use filesync_core::proto::frame::encode_frame;
use filesync_core::proto::{FileUpload, Message, PutFile};
use filesync_core::WorkspaceId;

/// Per chunk in a `PutFile`: 32-byte hash + length varint (3 bytes for 16 KiB..2 MiB).
const MANIFEST_BYTES_PER_CHUNK: usize = 35;
/// Per needed chunk: its hash in `NeedChunks` and the `Chunk` frame's header.
const NEED_BYTES_PER_CHUNK: usize = 32 + 32 + 12;

fn chunks(data: &[u8], min: u32, avg: u32, max: u32) -> Vec<([u8; 32], usize)> {
    fastcdc::v2020::FastCDC::new(data, min as usize, avg as usize, max as usize)
        .map(|c| (*blake3::hash(&data[c.offset..c.offset + c.length]).as_bytes(), c.length))
        .collect()
}

/// Bytes an upload of `after` costs when the node holds the chunks of `before`.
fn wire_cost(before: &[([u8; 32], usize)], after: &[([u8; 32], usize)]) -> (usize, usize) {
    let held: HashSet<_> = before.iter().map(|c| c.0).collect();
    let mut sent = HashSet::new();
    let new: usize =
        after.iter().filter(|c| !held.contains(&c.0) && sent.insert(c.0)).map(|c| c.1 + NEED_BYTES_PER_CHUNK).sum();
    (new, after.len() * MANIFEST_BYTES_PER_CHUNK)
}

/// Bytes of the `PutDelta` frame for `after` over `before`.
fn delta_frame(before: &[([u8; 32], usize)], after: &[([u8; 32], usize)]) -> usize {
    let refs = |l: &[([u8; 32], usize)]| -> Vec<ChunkRef> {
        l.iter().map(|c| ChunkRef { hash: c.0, len: c.1 as u32 }).collect()
    };
    let file = FileUpload {
        path: "big.bin".into(),
        base_version: 1,
        size: after.iter().map(|c| c.1 as u64).sum(),
        mtime_ms: 0,
        mode: 0o644,
        content_hash: [0; 32],
        chunks: refs(after),
    };
    let put = PutFile { request_id: 1, workspace_id: WorkspaceId(1), file };
    let msg = Message::PutDelta(put.to_delta(1, &refs(before)));
    encode_frame(&msg, usize::MAX).map(|f| f.len()).unwrap_or(0)
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let original = noise(mib << 20, 1);
    let mid = original.len() / 2;
    let mut overwrite = original.clone();
    overwrite[mid..mid + 4096].copy_from_slice(&noise(4096, 2));
    let mut insert = original.clone();
    insert.splice(mid..mid, noise(100, 3));
    println!("file: {mib} MiB of random bytes; edits in the middle: 4 KiB overwritten, 100 B inserted");
    println!(
        "| min / avg / max | chunks | chunk data, 4 KiB edit | manifest | delta | total, 4 KiB edit | total, 100 B insert |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (min, avg, max) in [
        (2u32 << 10, 8u32 << 10, 32u32 << 10),
        (4 << 10, 16 << 10, 64 << 10),
        (8 << 10, 32 << 10, 128 << 10),
        (16 << 10, 64 << 10, 256 << 10),
        (32 << 10, 128 << 10, 512 << 10),
        (64 << 10, 256 << 10, 1 << 20),
        (256 << 10, 1 << 20, 4 << 20),
    ] {
        let base = chunks(&original, min, avg, max);
        let (after_o, after_i) = (chunks(&overwrite, min, avg, max), chunks(&insert, min, avg, max));
        let (data_o, manifest) = wire_cost(&base, &after_o);
        let (data_i, _) = wire_cost(&base, &after_i);
        let (delta_o, delta_i) = (delta_frame(&base, &after_o), delta_frame(&base, &after_i));
        println!(
            "| {} / {} / {} KiB | {} | {} KiB | {} KiB | {} B | {} KiB | {} KiB |",
            min >> 10,
            avg >> 10,
            max >> 10,
            base.len(),
            data_o >> 10,
            manifest >> 10,
            delta_o,
            (data_o + delta_o) >> 10,
            (data_i + delta_i) >> 10
        );
    }
}
