//! The per-path rules: what a server change or a local change does to one path (the table in
//! the [engine](super) docs), and sending local changes up.

use super::*;

/// Files uploaded per batch: the connection overlaps their requests (a few `PutFiles` of them
/// pipelined), and the state records each batch before the next starts.
pub(super) const UPLOAD_BATCH: usize = 1024;

/// Paths judged and sent at a time by [`FolderSync::push_local_under`].
pub(super) const PUSH_PART: usize = 4096;

/// The directories of a push whose files are still to be listed, and the listing under way.
struct DirWalk {
    dirs: std::vec::IntoIter<PathBuf>,
    listing: Option<tokio::sync::mpsc::Receiver<Vec<String>>>,
}

impl DirWalk {
    /// The next listing batch of files under the directories (the paths of `named`, pushed by
    /// name already, left out), or `None` when every directory is listed.
    async fn next_part(&mut self, sync: &FolderSync, named: &[WsPath]) -> Option<Vec<WsPath>> {
        loop {
            let listing = match &mut self.listing {
                Some(l) => l,
                None => {
                    let dir = self.dirs.next()?;
                    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<String>>(2);
                    let (root, rules) = (sync.root.clone(), sync.rules.clone());
                    // Ends by itself when the receiver is dropped (the push failed).
                    tokio::task::spawn_blocking(move || {
                        local::walk_paths_under(&root, &dir, &rules, |b| tx.blocking_send(b).is_ok());
                    });
                    self.listing.insert(rx)
                }
            };
            match listing.recv().await {
                Some(batch) => {
                    let part: Vec<WsPath> = batch
                        .into_iter()
                        .filter_map(|rel| WsPath::try_from(rel).ok())
                        .filter(|rel| named.binary_search(rel).is_err())
                        .collect();
                    if !part.is_empty() {
                        return Some(part);
                    }
                }
                None => self.listing = None,
            }
        }
    }
}

impl FolderSync {
    /// Applies one journal change from the server.
    pub(super) async fn apply_change<R: Remote>(&mut self, remote: &mut R, c: Change) -> Result<(), SyncError> {
        let result = self.apply_change_inner(remote, &c).await;
        if let Some(from) = &c.from_path {
            self.remote_heads.remove(from);
        }
        self.remote_heads.insert(c);
        result
    }

    pub(super) async fn apply_change_inner<R: Remote>(&mut self, remote: &mut R, c: &Change) -> PathResult {
        // A path from the network is checked here, once, and only the checked value goes on.
        let path = match WsPath::parse(&c.path) {
            Ok(p) => p,
            Err(e) => {
                self.bad_path("a change", &c.path, &e);
                return Ok(());
            }
        };
        let from = match c.from_path.as_deref().map(WsPath::parse) {
            None => None,
            Some(Ok(from)) => Some(from),
            Some(Err(e)) => {
                self.bad_path("the source of a move", c.from_path.as_deref().unwrap_or_default(), &e);
                return Ok(());
            }
        };
        if self.rules.is_ignored(&path, c.kind == EntryKind::Dir) {
            // Someone else does not ignore it; here it stays out of the folder.
            return Ok(());
        }
        if c.kind == EntryKind::Dir {
            return self.apply_dir(c, &path, from.as_ref());
        }
        match c.op {
            ChangeOp::Put | ChangeOp::Restore => self.apply_put(remote, &path, c).await,
            ChangeOp::Delete => self.apply_delete(remote, &path, c.seq).await,
            ChangeOp::Move => {
                let Some(from) = from else { return self.apply_put(remote, &path, c).await };
                if self.store.get(&path).is_some_and(|e| e.version >= c.seq) {
                    return Ok(()); // our own move, already recorded
                }
                let can_rename = self.store.get(&from).is_some_and(|e| e.hash == c.content_hash)
                    && local::stat(&self.root, &path).is_none()
                    && matches!(self.local_status(&from).await, Local::Same);
                if can_rename && local::rename(&self.root, &from, &path).is_ok() {
                    tracing::info!(workspace.id = %self.ws, from = %from, to = %path, seq = c.seq, "moved by another device");
                    let mtime = local::stat(&self.root, &path).map(|f| f.mtime_ms);
                    self.store.rename(&from, &path, c.seq, mtime);
                    self.ui.changed_by_other(&self.name, &path);
                    return Ok(());
                }
                // Not a plain rename here (edited locally, or the content differs): a delete and a put.
                self.apply_delete(remote, &from, c.seq).await?;
                self.apply_put(remote, &path, c).await
            }
        }
    }

    /// Directory entries (the journal's explicit, possibly empty, directories): created, and
    /// removed when empty. A directory move moves only the entry; its files arrive as their own moves.
    pub(super) fn apply_dir(&mut self, c: &Change, path: &WsPath, from: Option<&WsPath>) -> PathResult {
        if !c.deleted {
            if let Err(e) = local::make_dir(&self.root, path) {
                self.local_error(path, e);
            }
        }
        let gone = if c.op == ChangeOp::Move { from } else { c.deleted.then_some(path) };
        if let Some(gone) = gone {
            // Only an empty directory goes; files inside were (or will be) changed one by one.
            let _ = local::remove_dir(&self.root, gone);
        }
        Ok(())
    }

    /// A path from the node that breaks the path rules: one warning naming the folder; the
    /// message part it came in is skipped.
    pub(super) fn bad_path(&self, what: &str, path: &str, e: &PathError) {
        tracing::warn!(workspace.id = %self.ws, folder = %self.name, path = ?path, error = %e, "the node sent {what} with an invalid path; skipped");
    }

    /// The server has new content for `rel`.
    pub(super) async fn apply_put<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, c: &Change) -> PathResult {
        if self.store.get(rel).is_some_and(|e| e.version >= c.seq) {
            return Ok(()); // already applied (our own upload, or a replay after reconnect)
        }
        match self.local_status(rel).await {
            Local::Same | Local::Gone | Local::Absent => self.download(remote, rel, c).await,
            Local::Changed(meta, scan) => {
                if scan.content_hash == c.content_hash {
                    self.record(rel, c.seq, &meta, &scan);
                    return Ok(());
                }
                // Both sides changed it: ours becomes a conflict copy, theirs takes the name.
                if !self.keep_as_conflict_copy(remote, rel, scan, "conflicting edits: kept ours as a copy").await? {
                    // Without the copy, downloading would overwrite our edit: leave both as they are.
                    return Ok(());
                }
                self.download(remote, rel, c).await
            }
        }
    }

    /// Moves our local `rel` (content `scan`) aside to a conflict copy beside it, which is
    /// uploaded as a new file; `rel` is then free for the server's version (or its absence).
    /// False if the copy could not be made: the local file is left as it is.
    pub(super) async fn keep_as_conflict_copy<R: Remote>(
        &mut self,
        remote: &mut R,
        rel: &WsPath,
        scan: FileScan,
        why: &str,
    ) -> Result<bool, SyncError> {
        let Some(copy) = self.conflict_name(rel) else {
            tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), "no room for a conflict copy name; keeping the local file");
            return Ok(false);
        };
        if let Err(e) = local::rename(&self.root, rel, &copy) {
            self.local_error(rel, e);
            return Ok(false);
        }
        self.store.remove(rel);
        self.store.add_conflict(&copy);
        self.ui.conflict(&self.name, &copy);
        tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), conflict.copy = %copy, "{why}");
        if let Some(meta) = local::stat(&self.root, &copy) {
            self.upload(remote, &copy, 0, meta, scan).await?;
        }
        Ok(true)
    }

    /// The server deleted `rel` at `seq`.
    pub(super) async fn apply_delete<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, seq: i64) -> PathResult {
        if self.store.get(rel).is_some_and(|e| e.version >= seq) {
            return Ok(());
        }
        let local = self.local_status(rel).await;
        self.settle_delete(remote, rel, local, seq).await
    }

    /// The server deleted `rel` (at `seq`, for the log) and the local copy is `local`.
    pub(super) async fn settle_delete<R: Remote>(
        &mut self,
        remote: &mut R,
        rel: &WsPath,
        local: Local,
        seq: i64,
    ) -> PathResult {
        match local {
            Local::Same => {
                if let Err(e) = local::remove_file(&self.root, rel) {
                    self.local_error(rel, e);
                    return Ok(());
                }
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq, "deleted by another device");
                self.store.remove(rel);
                self.ui.changed_by_other(&self.name, rel);
            }
            Local::Gone | Local::Absent => {
                self.store.remove(rel);
            }
            Local::Changed(meta, scan) => {
                // Edited here, deleted there: the edit wins and comes back as a new file.
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq, "deleted by another device but edited here: uploading ours again");
                self.store.remove(rel);
                self.upload(remote, rel, 0, meta, scan).await?;
            }
        }
        Ok(())
    }

    /// [`FolderSync::push_local_under`] of `paths` alone, with a set of its own.
    #[cfg(test)]
    pub(super) async fn push_local<R: Remote>(&mut self, remote: &mut R, paths: BTreeSet<String>) -> PathResult {
        let gone = self.store.new_vanished();
        let pushed = self.push_local_under(remote, paths, Vec::new(), gone).await;
        self.store.drop_vanished(gone);
        pushed
    }

    /// What a batch of watcher events names, pushed: the paths and what vanished with them
    /// ([`FolderSync::expand_watched`]), and the files under the directories it names.
    pub(super) async fn push_watched<R: Remote>(&mut self, remote: &mut R, paths: &[PathBuf]) -> PathResult {
        let gone = self.store.new_vanished();
        let (rels, dirs) = self.expand_watched(paths, gone).await;
        let pushed = self.push_local_under(remote, rels, dirs, gone).await;
        self.store.drop_vanished(gone);
        pushed
    }

    /// Sends local changes among `paths` to the server: moves (a vanished file whose content
    /// appeared elsewhere), then uploads, then deletes.
    ///
    /// Known files that vanished are set aside first (a state lookup and a stat each, nothing
    /// read), in the state's temporary table, not in memory ([`VanishedSet`]); then the paths are
    /// judged (hashed) and sent [`PUSH_PART`] at a time, each part's new files matched by content
    /// against every vanished one, so a moved tree stays a move however large, and what is held
    /// at once is one part's scans, not the whole push's.
    ///
    /// Every file under the directories `dirs` (absolute) is pushed too, walked a listing batch
    /// at a time after `paths`: a directory of a million files moved into the folder is never a
    /// million paths in memory. `gone` holds the vanished files found before (those among `paths`
    /// are added); what is left of it at the end, still gone from disk, is deleted.
    pub(super) async fn push_local_under<R: Remote>(
        &mut self,
        remote: &mut R,
        paths: BTreeSet<String>,
        dirs: Vec<PathBuf>,
        gone: VanishedSet,
    ) -> PathResult {
        let wanted: Vec<WsPath> = paths
            .into_iter()
            .filter(|rel| !self.rules.is_ignored(rel, false))
            .filter_map(|rel| WsPath::try_from(rel).ok())
            .collect();
        let writer = self.role.can_write() && !self.read_only;
        for part in wanted.chunks(PUSH_PART) {
            self.set_aside_vanished(part, gone).await;
        }
        // Each part is judged while the one before it is sent: one part ahead, no more.
        let mut parts: VecDeque<Vec<WsPath>> = wanted.chunks(PUSH_PART).map(<[WsPath]>::to_vec).collect();
        let mut walk = DirWalk { dirs: dirs.into_iter(), listing: None };
        let mut next = match parts.pop_front() {
            Some(part) => Some(part),
            None => walk.next_part(self, &wanted).await,
        }
        .map(|part| self.judge_ahead(part));
        while let Some(judged) = next.take() {
            let following = match parts.pop_front() {
                Some(part) => Some(part),
                None => walk.next_part(self, &wanted).await,
            };
            next = following.map(|part| self.judge_ahead(part));
            self.push_part(remote, judged, gone, writer).await?;
        }
        self.delete_vanished(remote, gone, writer).await
    }

    /// Deletes on the server the files left in `gone` that are still gone from disk (a viewer
    /// keeps them as local changes): what vanished and was not found moved. A page at a time.
    pub(super) async fn delete_vanished<R: Remote>(
        &mut self,
        remote: &mut R,
        gone: VanishedSet,
        writer: bool,
    ) -> PathResult {
        let mut after: Option<String> = None;
        loop {
            let page = self.store.vanished_page(gone, after.as_deref(), PUSH_PART);
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = Some(last.clone());
            let root = self.root.clone();
            let still_gone = tokio::task::spawn_blocking(move || {
                page.into_iter()
                    .filter_map(|(p, e)| Some((WsPath::try_from(p).ok()?, e)))
                    .filter(|(rel, _)| local::stat(&root, rel).is_none())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            if self.stopping() {
                return Err(SyncError::Stopped);
            }
            if !writer {
                for (from, _) in &still_gone {
                    if self.store.keep_local(from) {
                        self.ui.kept_local(&self.name, from);
                    }
                }
                continue;
            }
            let edits: Vec<PathEdit> = still_gone
                .iter()
                .map(|(from, entry)| PathEdit::Delete { path: from.to_string(), base: entry.version })
                .collect();
            let answers = remote.edits(self.ws, &edits).await;
            self.advance_past_own_answers(&answers);
            for ((from, _), answer) in still_gone.iter().zip(answers) {
                self.record_delete_answer(from, answer)?;
            }
        }
    }

    /// Moves `last_seq` past our own commits among `answers`, in ascending order (a batch's
    /// answers may come in any order).
    fn advance_past_own_answers(&mut self, answers: &[Result<Committed, RemoteError>]) {
        let mut own: Vec<i64> = answers.iter().flatten().map(|c| c.seq).collect();
        own.sort_unstable();
        for seq in own {
            self.store.advance_past_own(seq);
        }
    }

    /// A file of `gone` with the content of `scan` that is still gone from disk: where the new
    /// file `to` may have been moved from. Taken out of the set (offered once).
    fn take_move_source(&mut self, gone: VanishedSet, to: &WsPath, scan: &FileScan) -> Option<(WsPath, Entry)> {
        loop {
            let (path, entry) = self.store.take_vanished(gone, to, &scan.content_hash, scan.size)?;
            let Ok(from) = WsPath::try_from(path) else { continue };
            if local::stat(&self.root, &from).is_none() {
                return Some((from, entry));
            }
            // Back on disk since it was set aside: not a source, and not to be deleted.
        }
    }

    /// Sends what changed among paths being judged ([`FolderSync::judge_ahead`], started with
    /// no other change of the state since but this push's own): moves from `gone` first, then
    /// uploads in batches of [`UPLOAD_BATCH`]. The judging runs ahead: the next files are hashed
    /// while a batch is on its way to the node and committed there.
    pub(super) async fn push_part<R: Remote>(
        &mut self,
        remote: &mut R,
        mut judged: Judging,
        gone: VanishedSet,
        writer: bool,
    ) -> PathResult {
        let mut jobs: Vec<PutJob> = Vec::new();
        loop {
            if self.stopping() {
                return Err(SyncError::Stopped);
            }
            let group = judged.recv().await;
            let done = group.is_none();
            let mut changed: BTreeMap<WsPath, (LocalFile, FileScan)> = BTreeMap::new();
            for (rel, local) in group.map(|g| self.settle_judged(g)).unwrap_or_default() {
                // A vanished file is in `gone` already (or vanished since: its event follows).
                if let Local::Changed(meta, scan) = local {
                    changed.insert(rel, (meta, scan));
                }
            }
            if !writer {
                for rel in changed.keys() {
                    if self.store.keep_local(rel) {
                        self.ui.kept_local(&self.name, rel);
                    }
                }
                if done {
                    return Ok(());
                }
                continue;
            }
            let mut moves: Vec<(WsPath, Entry, WsPath)> = Vec::new();
            for (to, (_, scan)) in &changed {
                if self.store.get(to).is_none() {
                    if let Some((from, entry)) = self.take_move_source(gone, to, scan) {
                        moves.push((from, entry, to.clone()));
                    }
                }
            }
            let edits: Vec<PathEdit> = moves
                .iter()
                .map(|(from, entry, to)| PathEdit::Move {
                    from: from.to_string(),
                    to: to.to_string(),
                    base: entry.version,
                })
                .collect();
            let answers = if edits.is_empty() { Vec::new() } else { remote.edits(self.ws, &edits).await };
            self.advance_past_own_answers(&answers);
            for ((from, entry, to), answer) in moves.into_iter().zip(answers) {
                let Some((meta, scan)) = changed.remove(&to) else { continue };
                match answer {
                    Ok(done) => {
                        tracing::info!(workspace.id = %self.ws, from = %from, to = %to, seq = done.seq, "moved");
                        self.store.remove(&from);
                        self.record(&to, done.version, &meta, &scan);
                    }
                    Err(RemoteError::Refused { code, message }) => {
                        // Changed meanwhile on the server: send it as a new file; the delete follows the table.
                        tracing::info!(workspace.id = %self.ws, from = %from, to = %to, %code, %message, "move refused; uploading instead");
                        self.upload(remote, &to, 0, meta, scan).await?;
                        self.delete_remote(remote, &from, entry.version).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for (rel, (meta, scan)) in changed {
                let base = self.store.get(&rel).map(|e| e.version).unwrap_or(0);
                let abs = local::abs_of(&self.root, &rel);
                jobs.push(PutJob { path: rel.into(), base_version: base, abs, meta, scan });
            }
            while jobs.len() >= UPLOAD_BATCH || (done && !jobs.is_empty()) {
                if self.stopping() {
                    return Err(SyncError::Stopped);
                }
                let batch: Vec<PutJob> = jobs.drain(..jobs.len().min(UPLOAD_BATCH)).collect();
                self.upload_batch(remote, &batch).await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Sets the known files among `rels` that are no longer on disk aside in `gone` (a stat
    /// each, on the blocking pool; nothing is read).
    async fn set_aside_vanished(&mut self, rels: &[WsPath], gone: VanishedSet) {
        let known: Vec<WsPath> = rels.iter().filter(|rel| self.store.get(rel).is_some()).cloned().collect();
        if known.is_empty() {
            return;
        }
        let root = self.root.clone();
        let vanished = tokio::task::spawn_blocking(move || {
            known.into_iter().filter(|rel| local::stat(&root, rel).is_none()).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for rel in vanished {
            self.store.add_vanished(gone, &rel);
        }
    }

    /// Uploads a batch of files at once (the connection overlaps them), then settles each answer
    /// in order. Our own seqs are applied in ascending order so `last_seq` can follow them.
    pub(super) async fn upload_batch<R: Remote>(&mut self, remote: &mut R, batch: &[PutJob]) -> PathResult {
        if !self.role.can_write() || self.read_only {
            for j in batch {
                if self.store.keep_local(&j.path) {
                    self.ui.kept_local(&self.name, &j.path);
                }
            }
            return Ok(());
        }
        for j in batch {
            self.store.mark_pending(&j.path, true);
        }
        self.store.save()?; // `status` shows them as pending while they go up
        let results = remote.put_files(self.ws, batch).await;
        self.advance_past_own_answers(&results);
        let mut first_error = Ok(());
        for (j, result) in batch.iter().zip(results) {
            // Our own paths (from the disk, checked in `push_local_under`).
            let Ok(rel) = WsPath::parse(&j.path) else { continue };
            let settled = self.settle_upload(remote, &rel, j.base_version, j.meta, &j.scan, result).await;
            if let Err(e) = settled {
                // A broken connection fails every later answer alike; the next round retries them.
                first_error = first_error.and(Err(e));
            }
        }
        // The batch's answers, recorded in one transaction.
        self.store.save()?;
        first_error
    }

    pub(super) async fn delete_remote<R: Remote>(&mut self, remote: &mut R, rel: &WsPath, base: i64) -> PathResult {
        let answer = remote.delete(self.ws, rel, base).await;
        self.record_delete_answer(rel, answer)
    }

    /// What the node answered to our delete of `rel`, recorded.
    fn record_delete_answer(&mut self, rel: &WsPath, answer: Result<Committed, RemoteError>) -> PathResult {
        match answer {
            Ok(done) => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq = done.seq, "deleted");
                self.store.remove(rel);
                self.store.advance_past_own(done.seq);
                Ok(())
            }
            Err(RemoteError::Refused { code: Refusal::Node(ErrorCode::NotFound), message }) => {
                tracing::debug!(workspace.id = %self.ws, path = rel.as_str(), %message, "already gone on the server");
                self.store.remove(rel);
                Ok(())
            }
            Err(RemoteError::Refused { code, message }) => {
                // Changed on the server since: its change arrives by subscription and is downloaded
                // (a change beats a delete). Keep the entry so that happens.
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), %code, %message, "delete refused");
                if code == Refusal::Node(ErrorCode::Forbidden) {
                    self.forbidden(rel);
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads `rel`. On a stale base the node keeps our content as a conflict copy; we rename
    /// ours to match and fetch the head of `rel`.
    pub(super) async fn upload<R: Remote>(
        &mut self,
        remote: &mut R,
        rel: &WsPath,
        base: i64,
        meta: LocalFile,
        scan: FileScan,
    ) -> PathResult {
        if !self.role.can_write() || self.read_only {
            if self.store.keep_local(rel) {
                self.ui.kept_local(&self.name, rel);
            }
            return Ok(());
        }
        self.store.mark_pending(rel, true);
        let abs = local::abs_of(&self.root, rel);
        let result = remote.put_file(self.ws, rel, base, &abs, &meta, &scan).await;
        if let Ok(c) = &result {
            self.store.advance_past_own(c.seq);
        }
        self.settle_upload(remote, rel, base, meta, &scan, result).await
    }

    /// Applies the node's answer to an upload of `rel` (already sent as `meta`/`scan` on `base`).
    pub(super) async fn settle_upload<R: Remote>(
        &mut self,
        remote: &mut R,
        rel: &WsPath,
        base: i64,
        meta: LocalFile,
        scan: &FileScan,
        result: Result<Committed, RemoteError>,
    ) -> PathResult {
        match result {
            Ok(Committed { version, seq, conflict_path: None, .. }) => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), seq, size = scan.size, "uploaded");
                self.record(rel, version, &meta, scan);
                Ok(())
            }
            Ok(Committed { version, conflict_path: Some(copy), .. }) => {
                // The copy's name is the node's choice: checked before it is joined, and it must be
                // beside the original. A bad one moves nothing; the file stays where it is.
                let copy = match WsPath::parse(&copy) {
                    Ok(p) if p.same_dir(rel) && p != *rel => p,
                    Ok(_) => {
                        tracing::warn!(workspace.id = %self.ws, folder = %self.name, path = rel.as_str(), conflict.copy = ?copy, "the node named a conflict copy outside the file's directory; not moved");
                        self.store.mark_pending(rel, false);
                        return Ok(());
                    }
                    Err(e) => {
                        self.bad_path("a conflict copy", &copy, &e);
                        self.store.mark_pending(rel, false);
                        return Ok(());
                    }
                };
                tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), conflict.copy = %copy, "our edit raced another: kept as a conflict copy");
                let renamed = local::rename(&self.root, rel, &copy);
                self.store.mark_pending(rel, false);
                self.store.add_conflict(&copy);
                self.ui.conflict(&self.name, &copy);
                if renamed.is_ok() {
                    if let Some(m) = local::stat(&self.root, &copy) {
                        self.record(&copy, version, &m, scan);
                    }
                }
                self.store.remove(rel);
                // The change that beat us may already be here (then fetch it now) or still on its way
                // (then it is applied when it arrives: the path is unknown and absent here).
                if let Some(head) = self.remote_heads.get(rel.as_str()).cloned().filter(|h| h.seq > base) {
                    if !head.deleted {
                        self.download(remote, rel, &head).await?;
                    }
                }
                Ok(())
            }
            Err(RemoteError::Refused { code: Refusal::Node(ErrorCode::Forbidden), message }) => {
                tracing::info!(workspace.id = %self.ws, path = rel.as_str(), %message, "upload refused");
                self.forbidden(rel);
                Ok(())
            }
            Err(RemoteError::Refused { code, message }) => {
                // Usually the file changed while it was read; the watcher brings it back.
                tracing::warn!(workspace.id = %self.ws, path = rel.as_str(), %code, %message, "upload refused");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
