//! Workspace paths: the only names a client may give a file.
//!
//! A path is relative, UTF-8, `/`-separated, has no empty, `.` or `..`
//! component, no NUL and no `\`, is at most [`MAX_PATH_BYTES`] long and each
//! component at most [`MAX_COMPONENT_BYTES`]. These rules make every valid
//! path safe to join under a sync root on Linux, macOS and Windows-style
//! separators alike: it can never climb out of the root.
//!
//! The database indexes paths by [`path_hash`] (BLAKE3 of the bytes) because a
//! 4096-byte path does not fit an InnoDB index.

use chrono::{DateTime, Utc};

use crate::chunking::Hash;

pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a path was refused. The wire code for all of them is `invalid_path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must be relative (it starts with '/')")]
    Absolute,
    #[error("path is {0} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong(usize),
    #[error("a path component is {0} bytes long; at most {MAX_COMPONENT_BYTES} are allowed")]
    ComponentTooLong(usize),
    #[error("path has an empty component ('//' or a trailing '/')")]
    EmptyComponent,
    #[error("path has a '.' or '..' component")]
    DotComponent,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains '\\'; use '/' as the separator")]
    Backslash,
}

/// A workspace path that passed every rule. The only way to make one is [`WsPath::parse`], so a
/// function that takes `&WsPath` cannot be handed an unchecked string: the client's disk functions
/// take only this type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WsPath(String);

impl WsPath {
    /// Checks every path rule ([`validate`]).
    pub fn parse(path: &str) -> Result<WsPath, PathError> {
        validate(path)?;
        Ok(WsPath(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory part, `""` for a path at the root: `a/b/c` → `a/b`.
    pub fn dir(&self) -> &str {
        self.0.rfind('/').map_or("", |i| &self.0[..i])
    }

    /// The components, outermost first; none is empty, `.` or `..`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True if both are in the same directory (a conflict copy must be beside its original).
    pub fn same_dir(&self, other: &WsPath) -> bool {
        self.dir() == other.dir()
    }
}

impl std::ops::Deref for WsPath {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for WsPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for WsPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for WsPath {
    type Error = PathError;
    fn try_from(path: String) -> Result<WsPath, PathError> {
        validate(&path)?;
        Ok(WsPath(path))
    }
}

impl From<WsPath> for String {
    fn from(p: WsPath) -> String {
        p.0
    }
}

/// Checks every path rule. [`WsPath::parse`] is the same check keeping the result as a type.
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    for component in path.split('/') {
        match component {
            "" => return Err(PathError::EmptyComponent),
            "." | ".." => return Err(PathError::DotComponent),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(PathError::ComponentTooLong(c.len())),
            _ => {}
        }
    }
    Ok(())
}

/// The index key of a path.
pub fn path_hash(path: &str) -> Hash {
    *blake3::hash(path.as_bytes()).as_bytes()
}

/// Every proper ancestor directory of `path`, nearest last: `a/b/c` → `a`, `a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The name of the conflict copy of `path`:
/// `<stem> (conflict <username> <device_name> <YYYY-MM-DD HHMMSS>).<ext>` in the
/// same directory, with ` <n>` after the time when `n > 1` (a second conflict
/// in the same second). The extension is what follows the last `.` of the
/// file name, unless the name starts with that dot or the extension is longer
/// than 32 bytes; no extension means no dot. Characters that cannot appear in
/// a path component are replaced by `_`, and the stem is shortened when the
/// name would break a length rule. `None` if even that cannot make it fit.
pub fn conflict_copy_name(path: &str, username: &str, device_name: &str, at: DateTime<Utc>, n: u32) -> Option<String> {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i - 1 <= 32 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let counter = if n > 1 { format!(" {n}") } else { String::new() };
    let suffix = format!(
        " (conflict {} {} {}{counter}){ext}",
        sanitize(username, 32),
        sanitize(device_name, 32),
        at.format("%Y-%m-%d %H%M%S")
    );
    let budget = MAX_COMPONENT_BYTES.min(MAX_PATH_BYTES.checked_sub(dir.len())?);
    let stem_budget = budget.checked_sub(suffix.len())?;
    let stem = truncate_at_char(stem, stem_budget);
    let candidate = format!("{dir}{stem}{suffix}");
    validate(&candidate).ok()?;
    Some(candidate)
}

/// Whether the file name of `path` has the shape [`conflict_copy_name`] gives:
/// `... (conflict USER DEVICE YYYY-MM-DD HHMMSS[ N])...`.
pub fn is_conflict_copy(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(start) = name.find(" (conflict ") else { return false };
    let tail = &name.as_bytes()[start..];
    let stamp = |at: usize| {
        let b = |i: usize, digit: bool| {
            tail.get(at + i).is_some_and(|c| if digit { c.is_ascii_digit() } else { *c == b'-' })
        };
        (0..4).all(|i| b(i, true))
            && b(4, false)
            && b(5, true)
            && b(6, true)
            && b(7, false)
            && b(8, true)
            && b(9, true)
            && tail.get(at + 10) == Some(&b' ')
            && (11..17).all(|i| b(i, true))
    };
    (0..tail.len()).any(|at| {
        if !stamp(at) {
            return false;
        }
        let rest = &tail[at + 17..];
        match rest.first() {
            Some(b')') => true,
            Some(b' ') => {
                let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                digits > 0 && rest.get(1 + digits) == Some(&b')')
            }
            _ => false,
        }
    })
}

/// Replaces what may not appear in a path component and keeps at most `max_chars` characters.
fn sanitize(s: &str, max_chars: usize) -> String {
    let cleaned: String =
        s.chars().take(max_chars).map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "_".to_owned()
    } else {
        cleaned
    }
}

fn truncate_at_char(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn good_paths_pass() {
        for p in ["a", "a/b/c.txt", "Ünïcødé/文件.md", ".hidden", "a/.b/..c/...", "x y/z  ", &"a".repeat(255)] {
            assert_eq!(validate(p), Ok(()), "{p:?}");
        }
        let deep = vec!["d".repeat(255); 16].join("/");
        assert_eq!(deep.len(), 4095);
        assert_eq!(validate(&deep), Ok(()));
    }

    #[test]
    fn every_rule_is_enforced() {
        let long = vec!["d".repeat(255); 17].join("/");
        let cases: Vec<(&str, PathError)> = vec![
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("/", PathError::Absolute),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            (".", PathError::DotComponent),
            ("..", PathError::DotComponent),
            ("a/../../etc", PathError::DotComponent),
            ("a/./b", PathError::DotComponent),
            ("a\0b", PathError::Nul),
            ("a\\b", PathError::Backslash),
            ("..\\..\\windows", PathError::Backslash),
            (&long, PathError::TooLong(long.len())),
        ];
        for (p, want) in cases {
            assert_eq!(validate(p), Err(want), "{p:?}");
        }
        let wide = "w".repeat(256);
        assert_eq!(validate(&wide), Err(PathError::ComponentTooLong(256)));
        // 255 bytes of multi-byte characters is fine, 256 is not.
        assert_eq!(validate(&"é".repeat(127)), Ok(()));
        assert_eq!(validate(&"é".repeat(128)), Err(PathError::ComponentTooLong(256)));
    }

    #[test]
    fn ws_path_is_made_only_by_validation() {
        for bad in ["", "/abs", "../x", "a/../../b", "a\0b", "a\\b", "a//b"] {
            assert!(WsPath::parse(bad).is_err(), "{bad:?}");
            assert!(WsPath::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let p = WsPath::parse("a/b/c.txt").unwrap();
        assert_eq!((p.as_str(), p.dir()), ("a/b/c.txt", "a/b"));
        assert_eq!(p.components().collect::<Vec<_>>(), vec!["a", "b", "c.txt"]);
        assert_eq!(WsPath::parse("top").unwrap().dir(), "");
        assert!(p.same_dir(&WsPath::parse("a/b/c (conflict).txt").unwrap()));
        assert!(!p.same_dir(&WsPath::parse("a/c.txt").unwrap()));
        assert!(!p.same_dir(&WsPath::parse("a/b/d/c.txt").unwrap()));
    }

    #[test]
    fn ancestors_are_listed_outermost_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn conflict_names_follow_the_pattern() {
        let at = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        assert_eq!(
            conflict_copy_name("docs/report.txt", "bob", "laptop", at, 1).unwrap(),
            "docs/report (conflict bob laptop 2026-03-04 050607).txt"
        );
        assert_eq!(
            conflict_copy_name("Makefile", "bob", "pc", at, 1).unwrap(),
            "Makefile (conflict bob pc 2026-03-04 050607)"
        );
        assert_eq!(
            conflict_copy_name(".bashrc", "bob", "pc", at, 1).unwrap(),
            ".bashrc (conflict bob pc 2026-03-04 050607)"
        );
        assert_eq!(
            conflict_copy_name("a.tar.gz", "bob", "pc", at, 3).unwrap(),
            "a.tar (conflict bob pc 2026-03-04 050607 3).gz"
        );
        // A device name cannot smuggle a separator into the path.
        for n in [1, 3] {
            assert!(is_conflict_copy(&conflict_copy_name("d/a.txt", "bob", "pc (old)", at, n).unwrap()));
        }
        for plain in
            ["a.txt", "d/a (conflict).txt", "a (conflict bob pc 2026-03-04).txt", "x (conflict b p 2026-03-04 050607/y"]
        {
            assert!(!is_conflict_copy(plain), "{plain}");
        }
        let sneaky = conflict_copy_name("f.txt", "bob", "../../etc\\x", at, 1).unwrap();
        assert_eq!(sneaky, "f (conflict bob .._.._etc_x 2026-03-04 050607).txt");
        assert_eq!(validate(&sneaky), Ok(()));
        // A long name is shortened to fit one component.
        let long = format!("{}.txt", "n".repeat(251));
        let copy = conflict_copy_name(&long, "bob", "pc", at, 1).unwrap();
        assert!(copy.len() <= MAX_COMPONENT_BYTES && copy.ends_with("050607).txt"), "{copy}");
        // No room left at all in a maximal-depth directory.
        let dir = vec!["d".repeat(255); 16].join("/");
        assert_eq!(conflict_copy_name(&format!("{dir}/f"), "bob", "pc", at, 1), None);
    }
}
