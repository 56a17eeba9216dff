//! The client's home directory: everything `filesync` keeps between runs.
//!
//! ```text
//! <home>/
//!   config.toml        server URL, sync node addresses, debounce (optional; flags and env win)
//!   token.json         the login: access token, this device's refresh credential (0600)
//!   device_id          this installation's random id, sent with every change
//!   folders.json       linked folders: workspace id, name, local root, role
//!   state/ws-<id>.json per linked folder: path -> version, hash, size, mtime, mode; last seq
//! ```
//!
//! Two homes never share a file, so two agents with different `--home` run side by side.
//! Every file is replaced atomically (temp file in the same directory, fsync, rename), so a
//! crash leaves either the old or the new contents, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use filesync_core::{Role, WorkspaceId};

/// Default HTTP API address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// Default TCP sync node address.
pub const DEFAULT_SYNC: &str = "127.0.0.1:7070";
/// Default quiet period before a changed path is synced.
pub const DEFAULT_DEBOUNCE_MS: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged ({message}); fix or delete it")]
    Corrupt { path: PathBuf, message: String },
    #[error("no home directory: pass --home DIR or set FILESYNC_HOME")]
    NoDefault,
}

impl HomeError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
        move |source| HomeError::Io { path: path.to_path_buf(), source }
    }
}

/// Settings kept in `config.toml`. Every field is optional: a flag or env var wins, then this, then the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP API base URL.
    pub server: Option<String>,
    /// TCP sync node addresses, tried in order.
    pub sync: Vec<String>,
    /// Quiet period in milliseconds before a changed path is synced.
    pub debounce_ms: Option<u64>,
    /// Seconds between full comparisons of each folder with its state (default: an hour).
    pub rescan_secs: Option<u64>,
    /// This machine's name in presence and conflict copy names (default: the host name).
    pub device_name: Option<String>,
}

/// The saved login.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedToken {
    /// The server that issued it.
    pub server: String,
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub user_id: i64,
    pub email: String,
    #[serde(default)]
    pub username: String,
    /// This device's long-lived credential for `/token/refresh`; `None` for a login saved by an
    /// older client (its token is used until it expires).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The server's id of this login (`GET /devices`).
    #[serde(default)]
    pub device_id: Option<i64>,
}

impl std::fmt::Debug for SavedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedToken")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .finish()
    }
}

/// A local folder attached to a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedFolder {
    pub workspace_id: WorkspaceId,
    pub workspace_name: String,
    /// Absolute path of the folder.
    pub root: PathBuf,
    /// The role we had when we last asked; the server decides, this only avoids uploads bound to fail.
    pub role: Role,
}

/// A resolved home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `dir` if given, else the platform config dir + `filesync`. Creates it (0700 on Unix).
    pub fn open(dir: Option<PathBuf>) -> Result<Home, HomeError> {
        let dir = match dir {
            Some(d) => d,
            None => dirs::config_dir().ok_or(HomeError::NoDefault)?.join("filesync"),
        };
        create_private_dir(&dir)?;
        let dir = std::fs::canonicalize(&dir).map_err(HomeError::io(&dir))?;
        Ok(Home { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn settings(&self) -> Result<Settings, HomeError> {
        let path = self.file("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| HomeError::Corrupt { path, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(HomeError::Io { path, source: e }),
        }
    }

    pub fn save_settings(&self, settings: &Settings) -> Result<(), HomeError> {
        let path = self.file("config.toml");
        let text = toml::to_string_pretty(settings)
            .map_err(|e| HomeError::Corrupt { path: path.clone(), message: e.to_string() })?;
        atomic_write(&path, text.as_bytes(), false)
    }

    pub fn token(&self) -> Result<Option<SavedToken>, HomeError> {
        read_json(&self.file("token.json"))
    }

    /// Saves the token readable by its owner only.
    pub fn save_token(&self, token: &SavedToken) -> Result<(), HomeError> {
        write_json(&self.file("token.json"), token, true)
    }

    /// Forgets the token; `false` if there was none.
    pub fn remove_token(&self) -> Result<bool, HomeError> {
        let path = self.file("token.json");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(HomeError::Io { path, source: e }),
        }
    }

    /// This installation's device id, created on first use.
    pub fn device_id(&self) -> Result<String, HomeError> {
        let path = self.file("device_id");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            Ok(_) => self.new_device_id(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.new_device_id(&path),
            Err(e) => Err(HomeError::Io { path, source: e }),
        }
    }

    fn new_device_id(&self, path: &Path) -> Result<String, HomeError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        atomic_write(path, id.as_bytes(), false)?;
        Ok(id)
    }

    pub fn folders(&self) -> Result<Vec<LinkedFolder>, HomeError> {
        Ok(read_json(&self.file("folders.json"))?.unwrap_or_default())
    }

    pub fn save_folders(&self, folders: &[LinkedFolder]) -> Result<(), HomeError> {
        write_json(&self.file("folders.json"), &folders, false)
    }

    /// The lock a running agent holds while it syncs a workspace's folder.
    pub fn folder_lock_path(&self, ws: WorkspaceId) -> PathBuf {
        self.dir.join("state").join(format!("ws-{ws}.lock"))
    }

    /// Where the sync state of a workspace's folder lives.
    pub fn state_path(&self, ws: WorkspaceId) -> PathBuf {
        self.dir.join("state").join(format!("ws-{ws}.db"))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), HomeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(HomeError::io(dir))
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, HomeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| HomeError::Corrupt { path: path.to_path_buf(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HomeError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Replaces a JSON file atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T, private: bool) -> Result<(), HomeError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| HomeError::Corrupt { path: path.to_path_buf(), message: e.to_string() })?;
    atomic_write(path, &bytes, private)
}

/// Writes `bytes` to a temp file next to `path`, syncs it and renames it over `path`.
/// `private`: the file is created 0600 (before any byte is written, so the secret is never readable by others).
pub fn atomic_write(path: &Path, bytes: &[u8], private: bool) -> Result<(), HomeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(HomeError::io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(HomeError::io(path))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    tmp.write_all(bytes).map_err(HomeError::io(path))?;
    tmp.as_file().sync_all().map_err(HomeError::io(path))?;
    tmp.persist(path).map_err(|e| HomeError::Io { path: path.to_path_buf(), source: e.error })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().join("h"))).unwrap();
        assert!(home.token().unwrap().is_none());
        let tok = SavedToken {
            server: "http://x".into(),
            token: "abc.def.ghi".into(),
            expires_at: None,
            user_id: 3,
            email: "a@b.c".into(),
            username: "a".into(),
            refresh_token: Some("fsr1_secret".into()),
            device_id: Some(4),
        };
        home.save_token(&tok).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.dir().join("token.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(home.token().unwrap().unwrap().token, "abc.def.ghi");
        assert!(!format!("{tok:?}").contains("abc.def"));
        assert!(!format!("{tok:?}").contains("fsr1_secret"));
        assert_eq!(home.token().unwrap().unwrap().refresh_token.as_deref(), Some("fsr1_secret"));
        assert!(home.remove_token().unwrap());
        assert!(!home.remove_token().unwrap());
    }

    #[test]
    fn device_id_is_stable_and_homes_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let a = Home::open(Some(dir.path().join("a"))).unwrap();
        let b = Home::open(Some(dir.path().join("b"))).unwrap();
        assert_eq!(a.device_id().unwrap(), a.device_id().unwrap());
        assert_ne!(a.device_id().unwrap(), b.device_id().unwrap());
    }

    #[test]
    fn damaged_files_are_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        std::fs::write(dir.path().join("folders.json"), b"{not json").unwrap();
        let err = home.folders().unwrap_err();
        assert!(err.to_string().contains("folders.json"), "{err}");
        std::fs::write(dir.path().join("config.toml"), b"bogus = 1").unwrap();
        assert!(home.settings().is_err());
    }
}
