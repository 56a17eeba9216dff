//! Input rules. Every check returns a 422 [`ApiError`] naming the rule, so a
//! client learns what to fix; nothing is stored before all of them pass.

use filesync_core::Role;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Longest email (RFC 5321 path limit) and the column size.
const MAX_EMAIL_BYTES: usize = 254;
/// bcrypt ignores everything after 72 bytes: refuse rather than silently truncate.
const MAX_PASSWORD_BYTES: usize = 72;
const MIN_PASSWORD_CHARS: usize = 8;
/// Column size of `first_name`/`last_name` (characters).
const MAX_PERSON_NAME_CHARS: usize = 255;
/// Workspace names become directory names on clients; most file systems stop at 255 bytes.
const MAX_WORKSPACE_NAME_BYTES: usize = 255;

/// Emails are compared and stored trimmed and lower-cased.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The normalized email, if it looks like one: `local@domain.tld`.
pub fn email(raw: &str) -> ApiResult<String> {
    let email = normalize_email(raw);
    let bad = |why: &str| ApiError::invalid(ErrorCode::InvalidEmail, format!("email {why}"));
    if email.is_empty() {
        return Err(bad("is required"));
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(bad(&format!("is longer than {MAX_EMAIL_BYTES} bytes")));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(bad("must look like name@example.com"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_alphanumeric() || ".!#$%&'*+-/=?^_`{|}~".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if !local_ok || !domain_ok {
        return Err(bad("must look like name@example.com"));
    }
    Ok(email)
}

/// 3 to 32 of `A-Z a-z 0-9 _ . -`.
pub fn username(raw: &str) -> ApiResult<()> {
    let ok = (3..=32).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            ErrorCode::InvalidUsername,
            "username must be 3 to 32 characters of A-Z, a-z, 0-9, _ . -",
        ))
    }
}

pub fn password(raw: &str) -> ApiResult<()> {
    if raw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidPassword,
            format!("password must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if raw.len() > MAX_PASSWORD_BYTES || raw.contains('\0') {
        return Err(ApiError::invalid(
            ErrorCode::InvalidPassword,
            format!("password must be at most {MAX_PASSWORD_BYTES} bytes and contain no NUL character"),
        ));
    }
    Ok(())
}

/// First and last names are stored verbatim; only their size is limited.
pub fn person_name(field: &'static str, raw: &str) -> ApiResult<()> {
    if raw.chars().count() > MAX_PERSON_NAME_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidName,
            format!("{field} is longer than {MAX_PERSON_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A name that is safe as a single directory name on every client.
pub fn workspace_name(raw: &str) -> ApiResult<()> {
    let bad = |why: &str| ApiError::invalid(ErrorCode::InvalidWorkspaceName, format!("workspace name {why}"));
    if raw.is_empty() {
        return Err(bad("is required"));
    }
    if raw.len() > MAX_WORKSPACE_NAME_BYTES {
        return Err(bad(&format!("is longer than {MAX_WORKSPACE_NAME_BYTES} bytes")));
    }
    if raw == "." || raw == ".." {
        return Err(bad("cannot be . or .."));
    }
    if raw.contains(['/', '\\']) || raw.chars().any(char::is_control) {
        return Err(bad("cannot contain /, \\ or control characters"));
    }
    Ok(())
}

/// A path inside a workspace, by the sync engine's rules (`filesync_core::path`).
pub fn workspace_path(raw: &str) -> ApiResult<()> {
    filesync_core::path::validate(raw).map_err(|e| ApiError::invalid(ErrorCode::InvalidPath, e.to_string()))
}

/// The role given to a new member: `editor` (the default) or `viewer`.
pub fn member_role(raw: Option<&str>) -> ApiResult<Role> {
    match raw.unwrap_or("editor") {
        "editor" => Ok(Role::Editor),
        "viewer" => Ok(Role::Viewer),
        _ => Err(ApiError::invalid(ErrorCode::InvalidRole, "role must be editor or viewer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("  Alice@Example.COM ").unwrap(), "alice@example.com");
        assert_eq!(email("o'brien+tag@mail.example.org").unwrap(), "o'brien+tag@mail.example.org");
        assert_eq!(email("jürgen@bücher.de").unwrap(), "jürgen@bücher.de");
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "a b@example.com",
            "a@exa mple.com",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "a@example..com",
            "a\"b@example.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn usernames() {
        for good in ["abc", "a.b-c_d", "ABC123", &"x".repeat(32)] {
            assert!(username(good).is_ok(), "{good:?} refused");
        }
        for bad in ["ab", "", "a b", "ab/c", "émile", "a;b", &"x".repeat(33)] {
            assert!(username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("12345678").is_ok());
        assert!(password("ééééééé").is_err());
        assert!(password("éééééééé").is_ok());
        assert!(password("1234567").is_err());
        assert!(password(&"x".repeat(72)).is_ok());
        assert!(password(&"x".repeat(73)).is_err());
        assert!(password("12345678\0").is_err());
    }

    #[test]
    fn workspace_names() {
        for good in ["Docs", "Café ☕", "..hidden", "a.b", "'; DROP TABLE workspaces; --", &"é".repeat(127)] {
            assert!(workspace_name(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "tab\there", &"é".repeat(128)] {
            assert!(workspace_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn workspace_paths() {
        assert!(workspace_path("docs/a b/ü.txt").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "a\\b", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(workspace_path(bad), Err(ApiError::Invalid { code: ErrorCode::InvalidPath, .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roles() {
        assert_eq!(member_role(None).unwrap(), Role::Editor);
        assert_eq!(member_role(Some("viewer")).unwrap(), Role::Viewer);
        assert!(member_role(Some("owner")).is_err());
        assert!(member_role(Some("Editor")).is_err());
    }
}
