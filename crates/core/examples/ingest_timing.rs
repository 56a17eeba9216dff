//! A focused timing of the upload path (docs/BENCHMARKS.md, "Chunk store: packs"): `SIZE` MiB of
//! fresh random bytes (default 1024) cut, verified, stored and recorded into a directory chunk
//! store, on a fresh MariaDB database. `http` (the default) is an HTTP upload, `ingest::store_stream`
//! (the index asked about each chunk); `node` is what a node does with a client's chunks: a
//! `ChunkSink` told in advance which chunks are stored (none). Prints the wall time and what the
//! store holds afterwards.
//!
//! `cargo run -p filesync-core --features ingest,testing --example ingest_timing -- [SIZE] [http|node] [DIR]`

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use filesync_core::db::accounts::{self, NewUser};
use filesync_core::db::Db;
use filesync_core::ingest;
use filesync_core::storage::{Backend, ChunkStore};
use filesync_core::testing::TestDb;
use filesync_core::{UserId, WorkspaceId};

/// `left` pseudo-random bytes (xorshift64), generated as they are read.
struct Noise {
    x: u64,
    left: u64,
}

impl futures::io::AsyncRead for Noise {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(io::Read::read(&mut *self, buf))
    }
}

impl io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 { (buf.len() as u64).min(self.left) as usize } else { n };
        for b in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            let bytes = self.x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn files_and_bytes(dir: &std::path::Path) -> (u64, u64) {
    let mut out = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            let (f, b) = files_and_bytes(&e.path());
            out = (out.0 + f, out.1 + b);
        } else {
            out = (out.0 + 1, out.1 + meta.len());
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(1024, |a| a.parse().expect("SIZE in MiB"));
    let node = args.next().is_some_and(|m| m == "node");
    let parent = args.next().map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(parent).unwrap();
    let test_db = TestDb::mysql();
    let url = test_db.url().to_owned();
    let db = tokio::task::spawn_blocking(move || Db::open(&url, 4)).await.unwrap().unwrap();
    let ws = db
        .write(|c| {
            let new =
                NewUser { first_name: "B", last_name: "B", username: "b", email: "b@example.com", password_hash: "x" };
            let user = accounts::create_user(c, &new)?;
            Ok(WorkspaceId(accounts::create_workspace(c, UserId(user.id), "bench")?.id))
        })
        .await
        .unwrap();
    let root = dir.path().join("chunks");
    let store = ChunkStore::new(db.clone(), Backend::dir(&root).unwrap());
    let started = Instant::now();
    let noise = Noise { x: 0x9e37_79b9_7f4a_7c15, left: mib << 20 };
    let chunks = if node {
        let mut sink = ingest::ChunkSink::with_stored(db.clone(), store, ws, Default::default());
        let mut n = 0;
        for item in filesync_core::chunking::chunks(noise) {
            let (scanned, data) = item.unwrap();
            sink.push(scanned.chunk.hash, data).await.unwrap();
            n += 1;
        }
        sink.finish().await.unwrap();
        n
    } else {
        ingest::store_stream(&db, store, ws, noise).await.unwrap().chunks.len()
    };
    let secs = started.elapsed().as_secs_f64();
    let (files, bytes) = files_and_bytes(&root);
    println!(
        "{mib} MiB in {secs:.2} s = {:.0} MiB/s; {} chunks; store: {files} files, {:.1} MiB",
        mib as f64 / secs,
        chunks,
        bytes as f64 / 1048576.0
    );
}
