//! Which paths never leave this machine: `.filesyncignore` at the folder root
//! (gitignore syntax, via the `ignore` crate) plus built-in patterns for our
//! own temp files, editor temp and swap files and OS litter.
//!
//! The ignore file itself is not ignored: it syncs like any file, so every
//! member shares the same rules.

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Prefix of the agent's own temp files (downloads in progress).
pub use filesync_proto_client::download::TEMP_PREFIX;
/// The per-folder rules file.
pub const IGNORE_FILE: &str = ".filesyncignore";

/// Always ignored, whatever `.filesyncignore` says.
const BUILT_IN: &[&str] = &[
    ".filesync-tmp-*",
    // the protocol client library's own download temp files
    ".*.filesync-*.tmp",
    // vim swap and backup files, and the file vim writes to test a directory
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    "4913",
    // emacs lock and auto-save files
    ".#*",
    "#*#",
    // LibreOffice lock files
    ".~lock.*#",
    // MS Office owner (lock) files, and Word's temp files
    "~$*",
    "~WRL*.tmp",
    // JetBrains safe-write temp files
    "*___jb_tmp___",
    "*___jb_old___",
    // OS litter
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
    ".Trash-*",
];

/// The rules in effect for one folder.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    built_in: Gitignore,
    user: Gitignore,
    /// A problem with `.filesyncignore` worth telling the user once.
    pub warning: Option<String>,
}

impl IgnoreRules {
    /// Built-ins plus `<root>/.filesyncignore` if present. A bad line is skipped and reported in `warning`.
    pub fn load(root: &Path) -> IgnoreRules {
        let mut built = GitignoreBuilder::new(root);
        for pattern in BUILT_IN {
            // The patterns above are constant and valid; a failure would only drop one of them.
            let _ = built.add_line(None, pattern);
        }
        let built_in = built.build().unwrap_or_else(|_| Gitignore::empty());
        let mut user = GitignoreBuilder::new(root);
        let file = root.join(IGNORE_FILE);
        let mut warning = None;
        if file.is_file() {
            if let Some(err) = user.add(&file) {
                warning = Some(format!("{}: {err}", file.display()));
            }
        }
        let user = user.build().unwrap_or_else(|e| {
            warning = Some(format!("{}: {e}", file.display()));
            Gitignore::empty()
        });
        IgnoreRules { built_in, user, warning }
    }

    /// Whether `rel` (workspace path, `/`-separated) or any directory above it is ignored.
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        if rel.is_empty() {
            return false;
        }
        if rel == IGNORE_FILE {
            return false;
        }
        let path = Path::new(rel);
        self.built_in.matched_path_or_any_parents(path, is_dir).is_ignore()
            || self.user.matched_path_or_any_parents(path, is_dir).is_ignore()
    }

    /// Our own temp files, which must never be uploaded nor count as local changes.
    pub fn is_temp(name: &str) -> bool {
        name.starts_with(TEMP_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_and_user_rules_apply_and_the_rules_file_syncs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IGNORE_FILE), "*.log\nbuild/\n!keep.log\n/.filesyncignore\n").unwrap();
        let rules = IgnoreRules::load(dir.path());
        assert!(rules.warning.is_none());
        for ignored in [
            ".filesync-tmp-abc",
            "a/.filesync-tmp-1",
            "notes.txt.swp",
            "x~",
            "d/.DS_Store",
            "a.log",
            "build/x/y.c",
            "~$port.docx",
            "d/~$budget.xlsx",
        ] {
            assert!(rules.is_ignored(ignored, false), "{ignored}");
        }
        for kept in [
            "notes.txt",
            "keep.log",
            "$pay.txt",
            "a~b.txt",
            "builder/x",
            IGNORE_FILE,
            "a/b/c.rs",
            "conflict (copy).txt",
        ] {
            assert!(!rules.is_ignored(kept, false), "{kept}");
        }
        assert!(rules.is_ignored("build", true));
    }

    #[test]
    fn without_a_rules_file_only_built_ins_apply() {
        let dir = tempfile::tempdir().unwrap();
        let rules = IgnoreRules::load(dir.path());
        assert!(!rules.is_ignored("a.log", false));
        assert!(rules.is_ignored(".#lock", false));
    }
}
