//! Configuration shared by both daemons: defaults, then an optional TOML file
//! (`FILESYNC_CONFIG`), then `FILESYNC_<FIELD>` environment variables.
//!
//! Every setting is declared once, in the `settings!` block below: its name, type, default
//! and description. From that one definition come the [`Config`] struct, its defaults, its
//! redacted `Debug`, the list of keys ([`FIELDS`]) and the `--help` text
//! ([`environment_help`]); [figment](https://docs.rs/figment) layers defaults, file and
//! environment and turns text into typed values. `deploy/filesync.example.toml` is checked
//! against it by a test.
//!
//! The config is a plain value passed to `run(...)`; nothing reads the
//! environment after start-up.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::secret::{redact_url, Secret};

/// Shortest JWT secret a daemon accepts.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Declares every setting once. Each entry is `/// description` lines, then
/// `name: Type = default,`; the description is the field's doc comment and its `--help` line.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, )+) => {
        /// Every setting. Each field `x` can be set with `FILESYNC_X` or `x = ...` in the TOML file.
        #[derive(Clone, Serialize, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )+ }
            }
        }

        /// Secrets are `Secret`s (redacted by their own `Debug`); every `*_url` has its password masked.
        impl fmt::Debug for Config {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Config")
                    $( .field(stringify!($name), &Shown(stringify!($name), &self.$name)) )+
                    .finish()
            }
        }

        /// The names of every field, in declaration order; `FILESYNC_` + upper case is its env var.
        pub const FIELDS: &[&str] = &[ $( stringify!($name), )+ ];

        /// Each setting's description, in declaration order (the doc comment of its field).
        const DESCRIPTIONS: &[&str] = &[ $( concat!($($doc),+), )+ ];
    };
}

settings! {
    /// Directory for the embedded SQLite database, the dev-mode JWT secret and the chunk store.
    data_dir: PathBuf = PathBuf::from("./data"),
    /// `mysql://USER:PASSWORD@HOST:PORT/DB` or `sqlite://PATH`; unset: `sqlite://<data_dir>/filesync.db`.
    database_url: Option<String> = None,
    /// Database connections kept open.
    db_pool_size: u32 = 10,
    /// Address the HTTP API (filesync-http) listens on.
    http_addr: String = "127.0.0.1:8080".into(),
    /// Sync protocol address of a TCP node (filesync-tcp).
    tcp_addr: String = "127.0.0.1:7070".into(),
    /// `/healthz`, `/readyz` and `/metrics` address of a TCP node (filesync-tcp).
    tcp_admin_addr: String = "127.0.0.1:7071".into(),
    /// HS256 token secret shared by both daemons, at least 32 bytes; required unless `dev_mode`.
    jwt_secret: Secret = Secret::default(),
    /// Lifetime of an access token in seconds; agents renew theirs.
    jwt_ttl_secs: u64 = 3600,
    /// `redis://HOST:PORT`: presence and the cross-node bus; unset: a single node with an in-process bus.
    redis_url: Option<String> = None,
    /// First segment of every Redis key and channel; one per deployment sharing a Redis.
    redis_prefix: String = "filesync".into(),
    /// bcrypt cost for new password hashes, 4-31 (12 or more outside tests).
    bcrypt_cost: u32 = 12,
    /// Chunk store shared by every node and the API: a directory, `file:///PATH` or
    /// `s3://BUCKET[/PREFIX]`; unset: `<data_dir>/chunks` (parsed by `Config::storage_location`).
    storage: Option<String> = None,
    /// S3 endpoint URL of an `s3://` storage (MinIO, SeaweedFS, ...); unset: AWS.
    s3_endpoint: Option<String> = None,
    /// S3 region.
    s3_region: String = "us-east-1".into(),
    /// S3 access key id; unset: the usual AWS credential chain.
    s3_access_key_id: Option<String> = None,
    /// S3 secret access key (never logged).
    s3_secret_access_key: Secret = Secret::default(),
    /// `true`: address the bucket as `ENDPOINT/BUCKET` (most self-hosted S3), not `BUCKET.ENDPOINT`.
    s3_path_style: bool = false,
    /// Seconds between garbage collection passes inside filesync-http (retention, then the sweep
    /// of unreferenced chunks and packs, docs/storage.md); 0: only `filesync-http gc` collects.
    gc_interval_secs: u64 = 3600,
    /// Garbage collection's grace period in seconds: holds, chunks and packs younger than this are
    /// left alone, and bytes leave the store only this long after the last row naming them went.
    /// Must exceed the longest upload step and download (a day by default).
    gc_grace_secs: u64 = 86_400,
    /// Name of a TCP node (filesync-tcp) in presence and logs; unset: random.
    node_id: Option<String> = None,
    /// Largest sync protocol frame in bytes (filesync-tcp).
    max_frame_bytes: usize = 8 * 1024 * 1024,
    /// Most simultaneous connections of a TCP node (filesync-tcp); more are refused with `busy`.
    max_connections: usize = 10_000,
    /// Free failed logins per account (half as many per account and client address) before
    /// `/login` delays.
    login_max_failures: u32 = 10,
    /// How long failed logins are remembered, and the longest delay, in seconds.
    login_window_secs: u64 = 15 * 60,
    /// Reverse proxies whose `X-Forwarded-For` names the client: comma-separated addresses or
    /// CIDR ranges (`10.0.0.1, 192.168.0.0/16`); empty: the TCP peer is the client.
    trusted_proxies: String = String::new(),
    /// `text` or `json` log lines.
    log_format: String = "text".into(),
    /// Development mode: generate and keep a JWT secret in the data dir when none is set (same as `--dev`).
    dev_mode: bool = false,
    /// PEM certificate chain; with `tls_key`, the daemons serve TLS.
    tls_cert: Option<PathBuf> = None,
    /// PEM private key of `tls_cert`.
    tls_key: Option<PathBuf> = None,
    /// Days every version of a file is kept before retention thins it (docs/http-api.md, "Retention");
    /// a workspace's owner may set its own. 0: keep only the current version of each file.
    keep_days: u32 = 30,
    /// Days a deleted file stays in the trash, restorable, before retention drops it with its
    /// history; a workspace's owner may set its own. 0: empty the trash at the next collection.
    trash_days: u32 = 30,
}

/// One field for `Debug`: a `*_url` is shown with its password masked.
struct Shown<'a, T>(&'static str, &'a T);

impl<T: fmt::Debug> fmt::Debug for Shown<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:?}", self.1);
        f.write_str(&if self.0.ends_with("_url") { redact_url(&text) } else { text })
    }
}

/// The environment variable of a setting.
pub fn env_var(field: &str) -> String {
    format!("FILESYNC_{}", field.to_ascii_uppercase())
}

/// Every setting as an "Environment" section for clap's `after_help`: its variable, its
/// description and its default (when it has one that is not empty).
pub fn environment_help() -> String {
    let defaults = toml::Table::try_from(Config::default()).expect("config serializes to a table");
    let plain = |doc: &str| doc.split_whitespace().collect::<Vec<_>>().join(" ").replace('`', "");
    let mut rows = vec![(
        "FILESYNC_CONFIG".to_owned(),
        "TOML config file with the same keys, lower case; env vars win".to_owned(),
    )];
    for (field, doc) in FIELDS.iter().zip(DESCRIPTIONS) {
        let mut what = plain(doc);
        match defaults.get(*field) {
            Some(toml::Value::String(s)) if !s.is_empty() => what.push_str(&format!(" [default: {s}]")),
            Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_))) => what.push_str(&format!(" [default: {v}]")),
            _ => {}
        }
        rows.push((env_var(field), what));
    }
    rows.push(("RUST_LOG".into(), "log filter, e.g. info or filesync_tcp_sync=debug [default: info]".into()));
    let width = rows.iter().map(|(var, _)| var.len()).max().unwrap_or(0);
    let mut out = String::from("Environment (each FILESYNC_ variable is also a key of the TOML config file):\n");
    for (var, what) in rows {
        out.push_str(&format!("  {var:<width$}  {what}\n"));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid value for {var}: {message}")]
    Env { var: String, message: String },
    #[error(
        "FILESYNC_JWT_SECRET is not set; set a random secret of at least {MIN_JWT_SECRET_BYTES} bytes \
         (e.g. `openssl rand -hex 32`), or start with --dev to generate one in the data dir"
    )]
    MissingJwtSecret,
    #[error("FILESYNC_JWT_SECRET is {0} bytes long; it must be at least {MIN_JWT_SECRET_BYTES} bytes")]
    ShortJwtSecret(usize),
    #[error("bcrypt_cost must be between 4 and 31, got {0}")]
    BcryptCost(u32),
    #[error("FILESYNC_TLS_CERT and FILESYNC_TLS_KEY must be set together")]
    TlsPair,
    #[error("FILESYNC_TRUSTED_PROXIES: {0:?} is neither an IP address nor a CIDR range")]
    TrustedProxy(String),
    #[error("storage: {value:?} {message}")]
    Storage { value: String, message: &'static str },
    #[error("cannot keep the generated JWT secret in {path}: {source}")]
    DevSecret { path: PathBuf, source: std::io::Error },
}

/// The TOML config file as a figment provider (read with the workspace's `toml`).
struct TomlFile {
    path: PathBuf,
    table: toml::Table,
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("config file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.table).data()
    }
}

/// The `FILESYNC_<FIELD>` variables that name a setting, as text: figment reads numbers and
/// booleans (`true`/`yes`/`on`/`1`, ...) from it when the field wants one, and a string field
/// keeps `007` as written. An empty variable counts as unset; other `FILESYNC_*` variables
/// (the client's, the scripts') are not settings and are left alone.
struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    fn read(env: impl Fn(&str) -> Option<String>) -> EnvVars {
        EnvVars(
            FIELDS
                .iter()
                .filter_map(|field| {
                    env(&env_var(field)).filter(|v| !v.trim().is_empty()).map(|v| (field.to_string(), v))
                })
                .collect(),
        )
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment").interpolater(|_profile, keys| env_var(&keys.join("_")))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = self.0.iter().map(|(k, v)| (k.clone(), Value::from(v.trim().to_owned()))).collect();
        Ok(Profile::Default.collect(dict))
    }
}

/// A figment error as one line naming the setting: `FILESYNC_X` when it came from the
/// environment, the key when it came from the file.
fn describe(errors: figment::Error, file: Option<&Path>) -> ConfigError {
    let errors: Vec<figment::Error> = errors.into_iter().collect();
    let first = errors.first().expect("a figment error holds at least one error");
    let key = first.path.join(".");
    let from_env = first.metadata.as_ref().is_some_and(|m| m.name == "environment");
    let others = match errors.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    match file {
        Some(path) if !from_env => {
            let at = if key.is_empty() { String::new() } else { format!("{key}: ") };
            ConfigError::File { path: path.to_owned(), message: format!("{at}{}{others}", first.kind) }
        }
        _ => ConfigError::Env {
            var: if key.is_empty() { "FILESYNC_*".into() } else { env_var(&key) },
            message: format!("{}{others}", first.kind),
        },
    }
}

impl Config {
    /// Defaults, then the TOML file at `file` (or at `FILESYNC_CONFIG` as given by `env`), then env vars.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = file.map(Path::to_path_buf).or_else(|| env("FILESYNC_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?;
            let toml_file = TomlFile { path: path.clone(), table };
            // Checked on its own first so an unknown key or a bad value is blamed on the file.
            Figment::from(&toml_file).extract_lossy::<Config>().map_err(|e| describe(e, file.as_deref()))?;
            figment = figment.merge(toml_file);
        }
        figment.merge(EnvVars::read(env)).extract_lossy().map_err(|e| describe(e, None))
    }

    /// The parsed `trusted_proxies`: each entry an address (one host) or a CIDR range.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::TrustedProxy(s.to_owned()))
            })
            .collect()
    }

    /// [`Config::load`] with the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, |k| std::env::var(k).ok())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("filesync.db").display()),
        }
    }

    /// Where the chunk store is, parsed from `storage`: unset or empty is `<data_dir>/chunks`;
    /// `file://PATH` and a bare path are a directory; `s3://BUCKET[/PREFIX]` is an S3 bucket
    /// (reached with the `s3_*` settings).
    pub fn storage_location(&self) -> Result<StorageLocation, ConfigError> {
        let raw = self.storage.as_deref().map(str::trim).unwrap_or("");
        let err = |message| ConfigError::Storage { value: raw.to_owned(), message };
        if raw.is_empty() {
            return Ok(StorageLocation::Dir(self.data_dir.join("chunks")));
        }
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(err("names no bucket; expected s3://BUCKET[/PREFIX]"));
            }
            let prefix = prefix.trim_matches('/').to_owned();
            return Ok(StorageLocation::S3 { bucket: bucket.to_owned(), prefix });
        }
        if let Some(rest) = raw.strip_prefix("file://") {
            // `file:///abs` and `file://localhost/abs` name `/abs`; `file://rel` names `rel`.
            let path = rest.strip_prefix("localhost/").map(|p| format!("/{p}")).unwrap_or_else(|| rest.to_owned());
            if path.is_empty() {
                return Err(err("names no directory; expected file:///PATH"));
            }
            return Ok(StorageLocation::Dir(PathBuf::from(path)));
        }
        if raw.split_once("://").is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err(err("has an unknown scheme; expected a directory, file://PATH or s3://BUCKET[/PREFIX]"));
        }
        Ok(StorageLocation::Dir(PathBuf::from(raw)))
    }

    /// Checks what a daemon needs before serving: a strong JWT secret (in dev mode one is
    /// generated once and kept in `<data_dir>/jwt_secret`) and a sane bcrypt cost.
    pub fn prepare_for_serving(&mut self) -> Result<(), ConfigError> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(ConfigError::BcryptCost(self.bcrypt_cost));
        }
        if self.jwt_secret.is_empty() {
            if !self.dev_mode {
                return Err(ConfigError::MissingJwtSecret);
            }
            self.jwt_secret = load_or_create_dev_secret(&self.data_dir)?;
        }
        let len = self.jwt_secret.expose().len();
        if len < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::ShortJwtSecret(len));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        self.trusted_proxy_nets()?;
        self.storage_location()?;
        Ok(())
    }
}

/// Where the chunk store lives, from [`Config::storage_location`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A local (or shared, mounted) directory.
    Dir(PathBuf),
    /// An S3 bucket; chunk keys start with `prefix` (no leading or trailing `/`; may be empty).
    S3 { bucket: String, prefix: String },
}

fn load_or_create_dev_secret(data_dir: &Path) -> Result<Secret, ConfigError> {
    let path = data_dir.join("jwt_secret");
    let err = |source| ConfigError::DevSecret { path: path.clone(), source };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= MIN_JWT_SECRET_BYTES {
            return Ok(Secret::new(existing));
        }
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, secret.as_bytes()).map_err(err)?;
    Ok(Secret::new(secret))
}

/// Writes a file only its owner can read (0600 on Unix).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "http_addr = \"0.0.0.0:9000\"\nbcrypt_cost = 13\n").unwrap();
        let cfg =
            Config::load(Some(&file), env_of(&[("FILESYNC_BCRYPT_COST", "14"), ("FILESYNC_DEV_MODE", "yes")])).unwrap();
        assert_eq!(cfg.http_addr, "0.0.0.0:9000");
        assert_eq!(cfg.bcrypt_cost, 14);
        assert!(cfg.dev_mode);
        assert_eq!(cfg.tcp_addr, "127.0.0.1:7070");
    }

    #[test]
    fn config_file_from_env_var_and_unknown_key_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let path = file.to_str().unwrap().to_owned();
        let err = Config::load(None, env_of(&[("FILESYNC_CONFIG", &path)])).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }

    #[test]
    fn bad_env_number_is_a_clear_error() {
        let err = Config::load(None, env_of(&[("FILESYNC_BCRYPT_COST", "twelve")])).unwrap_err();
        assert!(err.to_string().contains("FILESYNC_BCRYPT_COST"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let cfg = Config {
            jwt_secret: Secret::new("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"),
            database_url: Some("mysql://root:dbpass@127.0.0.1/x".into()),
            redis_url: Some("redis://:redispass@127.0.0.1:6379".into()),
            s3_secret_access_key: Secret::new("s3cr3t-key"),
            ..Config::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("dbpass") && !dbg.contains("redispass"), "{dbg}");
        assert!(dbg.contains("mysql://root:***@127.0.0.1/x") && dbg.contains("bcrypt_cost: 12"), "{dbg}");
    }

    #[test]
    fn jwt_secret_required_outside_dev_and_must_be_long() {
        let mut cfg = Config::default();
        assert!(matches!(cfg.prepare_for_serving(), Err(ConfigError::MissingJwtSecret)));
        cfg.jwt_secret = Secret::new("short");
        assert!(matches!(cfg.prepare_for_serving(), Err(ConfigError::ShortJwtSecret(5))));
    }

    #[test]
    fn dev_mode_generates_and_keeps_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Config { dev_mode: true, data_dir: dir.path().to_path_buf(), ..Config::default() };
        a.prepare_for_serving().unwrap();
        let mut b = Config { dev_mode: true, data_dir: dir.path().to_path_buf(), ..Config::default() };
        b.prepare_for_serving().unwrap();
        assert_eq!(a.jwt_secret, b.jwt_secret);
        assert!(a.jwt_secret.expose().len() >= MIN_JWT_SECRET_BYTES);
    }

    #[test]
    fn storage_is_a_directory_a_file_url_or_an_s3_bucket() {
        let at = |s: &str| Config { storage: Some(s.into()), data_dir: "/d".into(), ..Config::default() };
        let dir = |p: &str| StorageLocation::Dir(PathBuf::from(p));
        assert_eq!(Config { data_dir: "/d".into(), ..Config::default() }.storage_location().unwrap(), dir("/d/chunks"));
        assert_eq!(at("").storage_location().unwrap(), dir("/d/chunks"));
        assert_eq!(at("/srv/chunks").storage_location().unwrap(), dir("/srv/chunks"));
        assert_eq!(at("file:///srv/chunks").storage_location().unwrap(), dir("/srv/chunks"));
        assert_eq!(at("file://localhost/srv/c").storage_location().unwrap(), dir("/srv/c"));
        let s3 = |b: &str, p: &str| StorageLocation::S3 { bucket: b.into(), prefix: p.into() };
        assert_eq!(at("s3://bkt").storage_location().unwrap(), s3("bkt", ""));
        assert_eq!(at("s3://bkt/a/b/").storage_location().unwrap(), s3("bkt", "a/b"));
        for bad in ["s3://", "s3:///x", "file://", "gs://bkt"] {
            let err = at(bad).storage_location().unwrap_err();
            assert!(err.to_string().starts_with("storage:"), "{bad}: {err}");
        }
        let mut cfg = at("ftp://x");
        cfg.jwt_secret = Secret::new("x".repeat(MIN_JWT_SECRET_BYTES));
        assert!(matches!(cfg.prepare_for_serving(), Err(ConfigError::Storage { .. })));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let c = Config { trusted_proxies: " 10.0.0.1, 192.168.0.0/16 ,::1".into(), ..Config::default() };
        let nets = c.trusted_proxy_nets().unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[0].contains(&"10.0.0.1".parse::<std::net::IpAddr>().unwrap()));
        assert!(!nets[0].contains(&"10.0.0.2".parse::<std::net::IpAddr>().unwrap()));
        assert!(nets[1].contains(&"192.168.4.5".parse::<std::net::IpAddr>().unwrap()));
        assert!(Config::default().trusted_proxy_nets().unwrap().is_empty());
        let bad = Config { trusted_proxies: "10.0.0.1, proxy.local".into(), ..Config::default() };
        assert!(matches!(bad.trusted_proxy_nets(), Err(ConfigError::TrustedProxy(s)) if s == "proxy.local"));
    }

    #[test]
    fn fields_list_matches_the_struct() {
        let full = Config {
            database_url: Some(String::new()),
            redis_url: Some(String::new()),
            storage: Some(String::new()),
            s3_endpoint: Some(String::new()),
            s3_access_key_id: Some(String::new()),
            node_id: Some(String::new()),
            tls_cert: Some(PathBuf::new()),
            tls_key: Some(PathBuf::new()),
            ..Config::default()
        };
        let table = toml::Table::try_from(full).unwrap();
        let keys: BTreeSet<&str> = table.keys().map(String::as_str).collect();
        assert_eq!(keys, FIELDS.iter().copied().collect());
    }

    #[test]
    fn env_text_becomes_the_field_type_and_strings_stay_as_written() {
        let cfg = Config::load(
            None,
            env_of(&[
                ("FILESYNC_NODE_ID", "007"),
                ("FILESYNC_REDIS_PREFIX", "true"),
                ("FILESYNC_S3_PATH_STYLE", "on"),
                ("FILESYNC_MAX_CONNECTIONS", " 12 "),
                ("FILESYNC_REDIS_URL", ""),
                ("FILESYNC_SERVER", "http://not-a-daemon-setting"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.node_id.as_deref(), Some("007"));
        assert_eq!(cfg.redis_prefix, "true");
        assert!(cfg.s3_path_style);
        assert_eq!(cfg.max_connections, 12);
        assert_eq!(cfg.redis_url, None, "an empty variable is unset");
        let err = Config::load(None, env_of(&[("FILESYNC_DEV_MODE", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("FILESYNC_DEV_MODE"), "{err}");
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "db_pool_size = \"many\"\n").unwrap();
        let err = Config::load(Some(&file), |_| None).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ConfigError::File { .. }) && text.contains("db_pool_size") && text.contains("c.toml"),
            "{text}"
        );
        std::fs::write(&file, "db_pool_size = 3\n").unwrap();
        let err = Config::load(Some(&file), env_of(&[("FILESYNC_DB_POOL_SIZE", "-1")])).unwrap_err();
        assert!(err.to_string().contains("FILESYNC_DB_POOL_SIZE"), "{err}");
    }

    #[test]
    fn help_names_every_setting_with_its_default() {
        let text = environment_help();
        for field in FIELDS {
            assert!(text.contains(&env_var(field)), "{field} missing");
        }
        assert!(text.contains("FILESYNC_CONFIG"));
        assert!(text.contains("[default: 3600]") && text.contains("[default: us-east-1]"), "{text}");
    }

    /// The committed example must name every setting, and the values it sets must be the defaults.
    #[test]
    fn example_config_does_not_drift() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/filesync.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Config::load(Some(&path), |_| None).unwrap(), Config::default(), "example and defaults differ");
        let mentioned: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.trim_start_matches(['#', ' ']).split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .collect();
        assert_eq!(mentioned, FIELDS.iter().copied().collect(), "deploy/filesync.example.toml and Config differ");
    }
}
