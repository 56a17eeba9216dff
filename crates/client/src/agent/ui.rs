//! What the agent shows a person: progress bars (indicatif) when stderr is a
//! terminal, structured log lines otherwise, and desktop notifications
//! (notify-rust, cargo feature `desktop-notifications`), batched so a burst of
//! changes makes one pop-up. Without a notification service, pop-ups are
//! silently skipped.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use filesync_core::Role;

/// Downloads smaller than this get no bar of their own (a bar per tiny file is noise).
const BAR_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// Changes by others are collected this long before one notification is shown.
const NOTIFY_BATCH: Duration = Duration::from_secs(2);

#[derive(Debug)]
enum Pop {
    Changed { workspace: String, path: String },
    Conflict { workspace: String, copy: String },
    KeptLocal { workspace: String, path: String },
    Shared { workspace: String, role: Role, by: String },
    AccessEnded { workspace: String, why: &'static str },
}

/// Cheap to clone; one per agent.
#[derive(Clone, Debug)]
pub struct Ui {
    bars: Option<MultiProgress>,
    pops: Option<mpsc::UnboundedSender<Pop>>,
}

impl Ui {
    /// `progress`: draw bars if stderr is a terminal. `notifications`: show desktop pop-ups.
    pub fn new(progress: bool, notifications: bool) -> Ui {
        let bars = (progress && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let pops = notifications.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batch_pops(rx));
            tx
        });
        Ui { bars, pops }
    }

    /// Neither bars nor pop-ups (tests, `--once` in scripts).
    pub fn quiet() -> Ui {
        Ui { bars: None, pops: None }
    }

    /// A bar counting steps (e.g. changes to catch up).
    pub fn steps(&self, total: u64, label: &str) -> Bar {
        self.bar(total, 2, "{msg} [{bar:30}] {pos}/{len}", label)
    }

    /// A bar counting bytes of one transfer.
    pub fn bytes(&self, total: u64, label: &str) -> Bar {
        self.bar(total, BAR_MIN_BYTES, "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}", label)
    }

    /// A bar on the terminal if there is one and `total` reaches `min`; otherwise nothing.
    fn bar(&self, total: u64, min: u64, template: &str, label: &str) -> Bar {
        let Some(m) = self.bars.as_ref().filter(|_| total >= min) else { return Bar(None) };
        let pb = m.add(ProgressBar::new(total));
        pb.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        pb.set_message(label.to_owned());
        Bar(Some(pb))
    }

    fn pop(&self, p: Pop) {
        if let Some(tx) = &self.pops {
            let _ = tx.send(p);
        }
    }

    pub fn changed_by_other(&self, workspace: &str, path: &str) {
        self.pop(Pop::Changed { workspace: workspace.to_owned(), path: path.to_owned() });
    }

    pub fn conflict(&self, workspace: &str, copy: &str) {
        self.pop(Pop::Conflict { workspace: workspace.to_owned(), copy: copy.to_owned() });
    }

    /// A viewer's edit that stays on this machine; called once per path.
    pub fn kept_local(&self, workspace: &str, path: &str) {
        tracing::warn!(
            workspace = workspace,
            path = path,
            "you are a viewer here: this local change is kept on this machine and not uploaded"
        );
        self.pop(Pop::KeptLocal { workspace: workspace.to_owned(), path: path.to_owned() });
    }

    /// The folder of `workspace` stopped syncing for good (`why`: removed, or deleted); said once.
    pub fn access_ended(&self, workspace: &str, root: &std::path::Path, why: &'static str) {
        tracing::warn!(
            "stopped syncing workspace {workspace} ({why}); {} is no longer linked and its files are kept",
            root.display()
        );
        self.pop(Pop::AccessEnded { workspace: workspace.to_owned(), why });
    }

    pub fn shared(&self, workspace: &str, role: Role, by: &str) {
        tracing::info!(workspace = workspace, role = %role, by = by, "a workspace was shared with you; link it with `filesync workspace link`");
        self.pop(Pop::Shared { workspace: workspace.to_owned(), role, by: by.to_owned() });
    }
}

/// A progress bar, or nothing when not on a terminal.
#[derive(Debug)]
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Collects pop-ups for [`NOTIFY_BATCH`] after the first one, then shows one per kind.
async fn batch_pops(mut rx: mpsc::UnboundedReceiver<Pop>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + NOTIFY_BATCH;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.push(p);
        }
        for (summary, body) in summarize(&batch) {
            show(summary, body).await;
        }
    }
}

/// One (summary, body) per kind of event in the batch.
fn summarize(batch: &[Pop]) -> Vec<(String, String)> {
    let mut changed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut out = Vec::new();
    for p in batch {
        match p {
            Pop::Changed { workspace, path } => changed.entry(workspace).or_default().push(path),
            Pop::Conflict { workspace, copy } => out
                .push((format!("Conflict in {workspace}"), format!("Both sides changed a file; kept a copy: {copy}"))),
            Pop::KeptLocal { workspace, path } => out.push((
                format!("Not uploaded ({workspace})"),
                format!("You can only view this workspace; {path} stays on this machine"),
            )),
            Pop::AccessEnded { workspace, why } => out.push((
                format!("{workspace} is no longer synced"),
                format!("{}; the files on this machine are kept", capitalized(why)),
            )),
            Pop::Shared { workspace, role, by } => {
                out.push((format!("{by} shared {workspace} with you"), format!("You can join as {role}")))
            }
        }
    }
    for (ws, paths) in changed {
        let body = match paths.as_slice() {
            [one] => format!("{one} changed"),
            [first, ..] => format!("{} files changed, e.g. {first}", paths.len()),
            [] => continue,
        };
        out.insert(0, (format!("{ws} updated"), body));
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(feature = "desktop-notifications")]
async fn show(summary: String, body: String) {
    // Talking to the session bus blocks; without one it fails fast and we say nothing.
    let _ = tokio::task::spawn_blocking(move || {
        notify_rust::Notification::new().appname("filesync").summary(&summary).body(&body).show().map(|_| ())
    })
    .await;
}

#[cfg(not(feature = "desktop-notifications"))]
async fn show(summary: String, body: String) {
    tracing::debug!(summary, body, "notification (desktop notifications not built in)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_changes_make_one_notification() {
        let batch: Vec<Pop> = (0..30)
            .map(|i| Pop::Changed { workspace: "docs".into(), path: format!("f{i}.txt") })
            .chain([Pop::Conflict { workspace: "docs".into(), copy: "a (conflict).txt".into() }])
            .collect();
        let shown = summarize(&batch);
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].0, "docs updated");
        assert!(shown[0].1.starts_with("30 files changed"), "{}", shown[0].1);
        assert!(shown[1].1.contains("a (conflict).txt"));
    }
}
