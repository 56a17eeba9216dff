//! Catch-up past the horizon: the node no longer keeps the journal since this folder's
//! `last_seq` (retention dropped it; the node answered `history_expired`), so the folder is
//! reconciled with the server's current files instead — like a first sync of a folder that
//! already holds files, with the state telling who changed what since the last agreement:
//!
//! | local \ server's head | the state's version | another version | none (deleted) |
//! |---|---|---|---|
//! | unchanged | — | download | delete locally |
//! | changed | upload (the comparison) | same content: record; else ours to a conflict copy, download theirs | ours kept as a conflict copy (uploaded) |
//! | deleted here | delete on the server (the comparison) | download | forget |
//! | not in the state | — | same content: adopt; else ours to a conflict copy, download theirs | upload (the comparison) |
//!
//! So nothing is lost and nothing is silently overwritten: an edit made while away is never
//! dropped, nor brought back under a name the server deleted (it becomes a conflict copy beside
//! it, like a conflicting edit). The heads come a page at a time ([`Remote::heads`]) and are
//! applied like journal changes (the rules of [`FolderSync::apply_put`]); the paths the state
//! knows and the server did not list are found through a listing table of the state, a page at
//! a time. Then `last_seq` is the head the listing started at, and the subscription replays what
//! was committed meanwhile (every rule skips what is already recorded). An interrupted
//! reconciliation leaves `last_seq` where it was and starts over at the next connection.

use filesync_core::proto::MAX_HEADS_PAGE;

use super::*;

impl FolderSync {
    /// Reconciles the folder with the server's live heads; returns how many were listed.
    pub(super) async fn reconcile_with_heads<R: Remote>(&mut self, remote: &mut R) -> Result<usize, SyncError> {
        let since = self.store.last_seq();
        tracing::warn!(workspace.id = %self.ws, folder = %self.name, since, "the server no longer keeps the history since this folder last synced: reconciling with its current files");
        self.store.begin_listing();
        let bar = self.ui.steps(0, &format!("{}: reconciling", self.name));
        let (mut after, mut head, mut listed) = (None, None, 0usize);
        loop {
            let page = remote.heads(self.ws, after, self.catch_up_page.clamp(1, MAX_HEADS_PAGE)).await?;
            // Every entry of the first page is at most this seq; later pages may be newer.
            let head = *head.get_or_insert(page.head_seq);
            for c in &page.entries {
                self.store.list(&c.path);
            }
            listed += page.entries.len();
            let batch: Vec<(usize, Change)> = page.entries.into_iter().enumerate().collect();
            let result = self.apply_batch(remote, batch, &BTreeSet::new(), &bar, false).await;
            self.staged.clear();
            result?;
            tracing::debug!(workspace.id = %self.ws, head, listed, "reconciled a page of the current files");
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        bar.finish();
        let head = head.unwrap_or(0);
        let gone = self.settle_unlisted(remote, head).await?;
        self.store.end_listing();
        self.store.advance(head);
        self.store.save()?;
        tracing::info!(workspace.id = %self.ws, since, head, listed, gone, "reconciled with the current files");
        Ok(listed)
    }

    /// The paths the state knows and the server did not list: deleted there while this folder
    /// was away. An unchanged file is removed, an edited one kept as a conflict copy; returns how
    /// many there were. Entries newer than `head` were recorded during this reconciliation (our
    /// own uploads): they stay.
    async fn settle_unlisted<R: Remote>(&mut self, remote: &mut R, head: i64) -> Result<usize, SyncError> {
        let (mut after, mut gone) = (None::<String>, 0usize);
        loop {
            let page = self.store.unlisted_page(after.as_deref(), self.compare_page.max(1));
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let rels: Vec<WsPath> = page
                .into_iter()
                .filter(|(_, e)| e.version <= head)
                .filter_map(|(p, _)| WsPath::try_from(p).ok())
                .filter(|rel| !self.rules.is_ignored(rel, false))
                .collect();
            gone += rels.len();
            for (rel, local) in self.local_statuses(rels).await {
                if self.stopping() {
                    self.store.save()?;
                    return Err(SyncError::Stopped);
                }
                match local {
                    Local::Changed(_, scan) => {
                        let why = "deleted on the server while edited here: kept ours as a conflict copy";
                        if !self.keep_as_conflict_copy(remote, &rel, scan, why).await? {
                            // Left where it is; the comparison uploads it again.
                            self.store.remove(&rel);
                        }
                    }
                    local => self.settle_delete(remote, &rel, local, head).await?,
                }
            }
            self.store.save()?;
        }
        Ok(gone)
    }
}
