//! Edits without content (`Delete`, `Move`, `MakeDir`) committed together when a client
//! pipelines them: the frames of one workspace queued right behind one another while an earlier
//! request was handled are one transaction (one authorization, one workspace lock, one
//! announcement) instead of one each, so a directory of a hundred thousand files deleted or
//! renamed costs a few hundred commits, not a hundred thousand. Each frame is still answered on
//! its own (`Committed` or `Error`, by its request id) exactly as if it had been committed alone:
//! the journal commits a group in order with consecutive seqs, each edit seeing the ones before.

use super::*;

/// What one step of the read loop handles.
pub(crate) enum Work {
    /// Any frame.
    One(Message),
    /// `Delete`, `Move` and `MakeDir` frames of one workspace, in arrival order.
    Edits(Vec<Message>),
}

/// The workspace of an edit frame without content; `None` for any other frame.
fn edit_workspace(m: &Message) -> Option<WorkspaceId> {
    match m {
        Message::Delete { workspace_id, .. }
        | Message::Move { workspace_id, .. }
        | Message::MakeDir { workspace_id, .. } => Some(*workspace_id),
        _ => None,
    }
}

/// `first` and, when it is an edit without content, the edits of its workspace queued right
/// behind it in `backlog` (at most [`MAX_BATCH_FILES`] in all). Any other frame ends the group:
/// frames are still handled in the order they came.
pub(crate) fn gather(first: Message, backlog: &mut Backlog) -> Work {
    let Some(ws) = edit_workspace(&first) else { return Work::One(first) };
    let mut group = vec![first];
    while group.len() < MAX_BATCH_FILES {
        match backlog.front() {
            Some(Some(Ok(next))) if edit_workspace(next) == Some(ws) => {}
            _ => break,
        }
        if let Some(Some(Ok(next))) = backlog.pop_front() {
            group.push(next);
        }
    }
    if group.len() == 1 {
        Work::One(group.remove(0))
    } else {
        Work::Edits(group)
    }
}

/// An edit frame as the journal's edit, its path checked as a lone frame's would be.
fn to_edit(m: Message) -> Option<(RequestId, WorkspaceId, Result<Edit, ReqError>)> {
    Some(match m {
        Message::Delete { request_id, workspace_id, path, base_version } => {
            (request_id, workspace_id, check_path(&path).map(|()| Edit::Delete { path, base_version }))
        }
        Message::Move { request_id, workspace_id, from, to, base_version } => (
            request_id,
            workspace_id,
            check_path(&from).and_then(|()| check_path(&to)).map(|()| Edit::Move { from, to, base_version }),
        ),
        Message::MakeDir { request_id, workspace_id, path, base_version } => {
            (request_id, workspace_id, check_path(&path).map(|()| Edit::MakeDir { path, base_version }))
        }
        _ => return None,
    })
}

pub(crate) fn op_of(edit: &Edit) -> ChangeOp {
    match edit {
        Edit::Put { .. } | Edit::MakeDir { .. } => ChangeOp::Put,
        Edit::Delete { .. } => ChangeOp::Delete,
        Edit::Move { .. } => ChangeOp::Move,
        Edit::Restore { .. } => ChangeOp::Restore,
    }
}

impl Session {
    /// Commits a group of edit frames of one workspace ([`gather`]) in one transaction and
    /// answers each: a path that breaks the rules, a refusal (stale base, missing path, …) or a
    /// missing right is that frame's `Error`; the others commit.
    pub(crate) async fn commit_edits(&mut self, group: Vec<Message>) {
        let mut ids = Vec::with_capacity(group.len());
        let mut edits = Vec::with_capacity(group.len());
        let mut ws = None;
        for (request_id, workspace_id, edit) in group.into_iter().filter_map(to_edit) {
            match edit {
                Ok(edit) => {
                    ws = Some(workspace_id);
                    ids.push(request_id);
                    edits.push(edit);
                }
                Err(err) => self.reply_err(request_id, err).await,
            }
        }
        let Some(ws) = ws else { return };
        if let Err(err) = authorize(&self.shared.db, self.identity.user, ws, Action::WriteFiles).await {
            for request_id in ids {
                self.reply_err(request_id, err.clone()).await;
            }
            return;
        }
        let ops: Vec<ChangeOp> = edits.iter().map(op_of).collect();
        let done = match ingest::commit_many(&self.shared.db, ws, self.author(), edits).await {
            Ok(done) => {
                self.shared.metrics.edit_transactions.inc();
                done
            }
            Err(e) => {
                let err = ReqError::from(e);
                for request_id in ids {
                    self.reply_err(request_id, err.clone()).await;
                }
                return;
            }
        };
        let (mut last, mut count) = (None, 0);
        for ((request_id, op), result) in ids.into_iter().zip(ops).zip(done) {
            match result {
                Ok(c) => {
                    if c.new_seq {
                        self.shared.metrics.commits.with_label_values(&[op.as_str()]).inc();
                        tracing::debug!(workspace.id = %ws, seq = c.seq, op = op.as_str(), "committed");
                        last = Some(c.seq);
                        count += 1;
                    }
                    self.reply(committed(request_id, ws, c)).await;
                }
                Err(e) => self.reply_err(request_id, ReqError::from(e)).await,
            }
        }
        if let Some(seq) = last {
            tracing::info!(workspace.id = %ws, seq, edits = count, "committed edits");
            self.shared.announce(ws, seq).await;
        }
    }
}

/// The `Committed` answer to `request_id`.
pub(crate) fn committed(request_id: RequestId, ws: WorkspaceId, c: journal::Committed) -> Message {
    Message::Committed {
        request_id,
        workspace_id: ws,
        version: c.seq,
        seq: c.seq,
        path: c.path,
        conflict_path: c.conflict_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(request_id: RequestId, ws: i64) -> Message {
        Message::Delete { request_id, workspace_id: WorkspaceId(ws), path: format!("f{request_id}"), base_version: 1 }
    }

    fn ids(work: &Work) -> Vec<RequestId> {
        match work {
            Work::One(m) => vec![m.request_id().unwrap_or(0)],
            Work::Edits(g) => g.iter().map(|m| m.request_id().unwrap_or(0)).collect(),
        }
    }

    /// Edits queued behind an edit of the same workspace join it; another workspace's edit, any
    /// other frame, the end of the stream or the batch limit end the group, and what is left
    /// stays queued in order.
    #[test]
    fn queued_edits_of_one_workspace_are_one_group() {
        let mut backlog: Backlog = VecDeque::new();
        backlog.push_back(Some(Ok(delete(2, 1))));
        backlog.push_back(Some(Ok(Message::Move {
            request_id: 3,
            workspace_id: WorkspaceId(1),
            from: "a".into(),
            to: "b".into(),
            base_version: 1,
        })));
        backlog.push_back(Some(Ok(delete(4, 2))));
        backlog.push_back(Some(Ok(delete(5, 2))));
        backlog.push_back(Some(Ok(Message::Ping { nonce: 9 })));
        backlog.push_back(Some(Ok(delete(6, 2))));
        backlog.push_back(None);
        let first = gather(delete(1, 1), &mut backlog);
        assert!(matches!(first, Work::Edits(_)));
        assert_eq!(ids(&first), vec![1, 2, 3]);
        let Some(Some(Ok(next))) = backlog.pop_front() else { panic!() };
        assert_eq!(ids(&gather(next, &mut backlog)), vec![4, 5], "another workspace: a group of its own");
        let Some(Some(Ok(ping))) = backlog.pop_front() else { panic!() };
        assert!(matches!(gather(ping, &mut backlog), Work::One(Message::Ping { .. })), "a ping is not grouped");
        let Some(Some(Ok(last))) = backlog.pop_front() else { panic!() };
        assert!(matches!(gather(last, &mut backlog), Work::One(_)), "alone before the end of the stream");
        assert!(matches!(backlog.pop_front(), Some(None)));

        let mut many: Backlog = (2..=MAX_BATCH_FILES as u64 + 5).map(|i| Some(Ok(delete(i, 1)))).collect();
        assert_eq!(ids(&gather(delete(1, 1), &mut many)).len(), MAX_BATCH_FILES);
        assert_eq!(many.len(), 5, "the rest waits for the next group");
        assert!(matches!(gather(Message::Ping { nonce: 1 }, &mut VecDeque::new()), Work::One(_)));
    }
}
