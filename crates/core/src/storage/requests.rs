//! What a chunk store asked of its backend: requests by kind and the bytes
//! they moved, counted where [`super::Backend`] makes them (directory and
//! object store alike) and exported by both daemons' `/metrics` as
//! `filesync_storage_requests_total{op}` and `filesync_storage_bytes_total{direction}`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A kind of backend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A pack written whole: one PUT, or a directory's fsync + rename.
    Put,
    /// A pack written as a multipart upload (one per pack; its parts are [`Op::UploadPart`]).
    Multipart,
    /// One part of a multipart upload.
    UploadPart,
    /// A ranged read (a GET with `Range` on an object store).
    ReadRange,
    /// Whether an object exists, and its size (moving a store).
    Head,
    /// One page of a listing of the store (garbage collection looking for orphans).
    List,
    /// An object deleted (garbage collection).
    Delete,
}

impl Op {
    pub const ALL: [Op; 7] = [Op::Put, Op::Multipart, Op::UploadPart, Op::ReadRange, Op::Head, Op::List, Op::Delete];

    /// The `op` label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Multipart => "multipart",
            Op::UploadPart => "upload_part",
            Op::ReadRange => "read_range",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }
}

/// The live counters of one backend. Cheap to update from any task.
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    requests: [AtomicU64; Op::ALL.len()],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

impl RequestCounters {
    pub(crate) fn request(&self, op: Op) {
        self.requests[op as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StorageRequests {
        StorageRequests {
            requests: std::array::from_fn(|i| self.requests[i].load(Relaxed)),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
        }
    }
}

/// The requests a backend made since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageRequests {
    requests: [u64; Op::ALL.len()],
    /// Bytes returned by ranged reads.
    pub bytes_read: u64,
    /// Bytes of packs made durable.
    pub bytes_written: u64,
}

impl StorageRequests {
    /// Requests of kind `op`.
    pub fn of(&self, op: Op) -> u64 {
        self.requests[op as usize]
    }

    /// Objects written (a PUT or a completed multipart upload each).
    pub fn objects_written(&self) -> u64 {
        self.of(Op::Put) + self.of(Op::Multipart)
    }

    /// The figures in Prometheus text format, to be appended to a daemon's `/metrics`.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::from(
            "# HELP filesync_storage_requests_total Requests made to the chunk store's backend, by kind\n\
             # TYPE filesync_storage_requests_total counter\n",
        );
        for op in Op::ALL {
            out.push_str(&format!("filesync_storage_requests_total{{op=\"{}\"}} {}\n", op.label(), self.of(op)));
        }
        out.push_str(
            "# HELP filesync_storage_bytes_total Bytes moved to and from the chunk store's backend\n\
             # TYPE filesync_storage_bytes_total counter\n",
        );
        out.push_str(&format!("filesync_storage_bytes_total{{direction=\"read\"}} {}\n", self.bytes_read));
        out.push_str(&format!("filesync_storage_bytes_total{{direction=\"written\"}} {}\n", self.bytes_written));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exported_by_kind() {
        let c = RequestCounters::default();
        c.request(Op::ReadRange);
        c.request(Op::ReadRange);
        c.request(Op::Put);
        c.read(10);
        c.written(7);
        let s = c.snapshot();
        assert_eq!((s.of(Op::ReadRange), s.objects_written(), s.of(Op::Head)), (2, 1, 0));
        let text = s.prometheus_text();
        assert!(text.contains("filesync_storage_requests_total{op=\"read_range\"} 2\n"), "{text}");
        assert!(text.contains("filesync_storage_requests_total{op=\"put\"} 1\n"), "{text}");
        assert!(text.contains("filesync_storage_bytes_total{direction=\"written\"} 7\n"), "{text}");
    }
}
