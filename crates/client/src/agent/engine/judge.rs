//! Judging local files: how the file on disk compares with what both sides last agreed on.

use super::*;

/// Paths whose local state is read in one blocking task.
pub(super) const STATUS_GROUP: usize = 256;

/// Judged groups waiting for their sender ([`FolderSync::judge_ahead`]): what is hashed ahead of
/// the uploads, and held (with the scans) meanwhile.
const JUDGED_AHEAD: usize = 4;

/// Files at least this large are re-scanned with their recorded chunk list
/// ([`chunking::rescan`]: matching chunks are hashed, not cut again); smaller ones, read whole,
/// gain nothing from it.
pub(super) const RESCAN_FROM: u64 = 4 * chunking::MAX_CHUNK as u64;

/// What the local copy of a path looks like compared with the state.
#[derive(Debug, Clone)]
pub(super) enum Local {
    /// Neither a file nor a state entry.
    Absent,
    /// The state has an entry, the file is gone.
    Gone,
    /// The file matches the state entry.
    Same,
    /// The file is new or differs from the entry.
    Changed(LocalFile, FileScan),
}

impl FolderSync {
    /// Compares a path on disk with its state entry. Reads (hashes) the file only if size or mtime moved.
    pub(super) async fn local_status(&mut self, rel: &WsPath) -> Local {
        let mut out = self.local_statuses(vec![rel.clone()]).await;
        out.pop().map(|(_, local)| local).unwrap_or(Local::Absent)
    }

    /// [`Local`] of each path, in order. The disk work runs on the blocking pool in groups of
    /// [`STATUS_GROUP`] paths, two groups at once: an initial sync of a large tree is not one
    /// thread hand-off per file.
    pub(super) async fn local_statuses(&mut self, rels: Vec<WsPath>) -> Vec<(WsPath, Local)> {
        let mut out = Vec::with_capacity(rels.len());
        let mut judged = self.judge_ahead(rels);
        while let Some(group) = judged.recv().await {
            out.extend(self.settle_judged(group));
        }
        out
    }

    /// Starts judging `rels` on the blocking pool, [`STATUS_GROUP`] paths a group, two groups at
    /// once, and [`JUDGED_AHEAD`] groups ahead of whoever takes them (in order) from the returned
    /// queue: the next files are hashed while the caller sends the last ones. Each group goes
    /// through [`FolderSync::settle_judged`]. Dropping the queue stops the judging.
    pub(super) fn judge_ahead(&self, rels: Vec<WsPath>) -> Judging {
        let jobs: Vec<Vec<Job>> = rels
            .chunks(STATUS_GROUP)
            .map(|group| {
                group
                    .iter()
                    .map(|rel| {
                        let entry = self.store.get(rel);
                        // Only a file that may be read needs its list; a large one is rare.
                        let large = entry.as_ref().is_some_and(|e| e.size >= RESCAN_FROM);
                        let before = if large { self.store.chunks(rel) } else { Vec::new() };
                        (rel.clone(), entry, before)
                    })
                    .collect()
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(JUDGED_AHEAD);
        let root = self.root.clone();
        tokio::spawn(async move {
            let mut groups = futures::stream::iter(jobs)
                .map(|group| {
                    let root = root.clone();
                    async move {
                        let judged = tokio::task::spawn_blocking(move || {
                            group
                                .into_iter()
                                .map(|(rel, entry, before)| (judge(&root, &rel, entry.as_ref(), &before), rel))
                                .collect::<Vec<_>>()
                        })
                        .await;
                        judged.unwrap_or_default()
                    }
                })
                .buffered(2);
            while let Some(group) = groups.next().await {
                if tx.send(group).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// The [`Local`] of each judged path, recording the new mtime of a file touched but not
    /// changed (so it is not read again).
    pub(super) fn settle_judged(&mut self, judged: Vec<(Judged, WsPath)>) -> Vec<(WsPath, Local)> {
        judged
            .into_iter()
            .map(|(judged, rel)| {
                let local = match judged {
                    Judged::Local(local) => local,
                    Judged::Touched(meta) => {
                        self.store.touch(&rel, meta.mtime_ms, meta.mode);
                        Local::Same
                    }
                };
                (rel, local)
            })
            .collect()
    }
}

/// Judged groups of paths, in order, as [`FolderSync::judge_ahead`] hands them over.
pub(super) type Judging = tokio::sync::mpsc::Receiver<Vec<(Judged, WsPath)>>;

/// A path to judge: its entry, and the chunks of its recorded content if it is large.
type Job = (WsPath, Option<Entry>, Vec<ChunkRef>);

/// What the disk says about one path, decided off the async threads.
pub(super) enum Judged {
    Local(Local),
    /// Same content as `entry`, newer mtime.
    Touched(LocalFile),
}

/// Compares the file at `rel` with what both sides last agreed on (`entry`, whose content was cut
/// into `before`, if known): metadata first, the content only when the metadata differs. Blocking.
pub(super) fn judge(root: &Path, rel: &WsPath, entry: Option<&Entry>, before: &[ChunkRef]) -> Judged {
    let missing = || Judged::Local(if entry.is_some() { Local::Gone } else { Local::Absent });
    let Some(meta) = local::stat(root, rel) else { return missing() };
    if entry.is_some_and(|e| e.size == meta.size && e.mtime_ms == meta.mtime_ms) {
        return Judged::Local(Local::Same);
    }
    let started = std::time::Instant::now();
    let Ok(scan) = local::scan_file(root, rel, before) else {
        // Vanished or unreadable between stat and read: the next event will tell.
        return missing();
    };
    if scan.size >= RESCAN_FROM {
        let ms = started.elapsed().as_millis();
        tracing::debug!(path = rel.as_str(), size = scan.size, ms, with_old_chunks = !before.is_empty(), "scanned");
    }
    match entry {
        Some(e) if e.hash == scan.content_hash && e.size == scan.size => Judged::Touched(meta),
        _ => Judged::Local(Local::Changed(meta, scan)),
    }
}
