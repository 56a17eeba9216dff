//! The JSON shapes of the public API. Database rows are converted to these by
//! hand, so a schema change can never leak a column (such as a password
//! hash) into a response.

use filesync_core::db::accounts::{Member, MemberWorkspace, User};
use filesync_core::Role;
use serde::de::{self, Deserializer, Visitor};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct UserJson {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

impl From<User> for UserJson {
    fn from(u: User) -> UserJson {
        UserJson { id: u.id, username: u.username, email: u.email, first_name: u.first_name, last_name: u.last_name }
    }
}

#[derive(Debug, Serialize)]
pub struct OwnerJson {
    pub id: i64,
    pub username: String,
}

/// A workspace as listed for one member.
#[derive(Debug, Serialize)]
pub struct WorkspaceItem {
    pub id: i64,
    pub name: String,
    pub owner: OwnerJson,
    pub role: Role,
}

impl From<MemberWorkspace> for WorkspaceItem {
    fn from(m: MemberWorkspace) -> WorkspaceItem {
        WorkspaceItem {
            id: m.workspace.id,
            name: m.workspace.name,
            owner: OwnerJson { id: m.workspace.owner_id, username: m.owner_username },
            role: m.role,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MemberJson {
    pub user_id: i64,
    pub username: String,
    pub email: String,
    pub role: Role,
}

impl From<Member> for MemberJson {
    fn from(m: Member) -> MemberJson {
        MemberJson { user_id: m.user_id, username: m.username, email: m.email, role: m.role }
    }
}

/// An id given as a JSON number or, as the original client sends every
/// value, a string of digits.
pub fn id<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    struct IdVisitor;

    impl Visitor<'_> for IdVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an id (a whole number)")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("id is too large"))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim().parse().map_err(|_| E::custom(format!("expected an id (a whole number), got {v:?}")))
        }
    }

    de.deserialize_any(IdVisitor)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Req {
        #[serde(deserialize_with = "super::id")]
        workspace_id: i64,
    }

    #[test]
    fn ids_from_numbers_and_digit_strings() {
        let parse = |s: &str| serde_json::from_str::<Req>(s).map(|r| r.workspace_id);
        assert_eq!(parse(r#"{"workspace_id": 7}"#).unwrap(), 7);
        assert_eq!(parse(r#"{"workspace_id": "7"}"#).unwrap(), 7);
        assert!(parse(r#"{"workspace_id": "7; DROP TABLE x"}"#).is_err());
        assert!(parse(r#"{"workspace_id": 1.5}"#).is_err());
        assert!(parse(r#"{"workspace_id": 18446744073709551615}"#).is_err());
        assert!(parse(r#"{}"#).is_err());
    }
}
