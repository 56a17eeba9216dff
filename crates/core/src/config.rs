//! Configuration shared by both daemons: defaults, then an optional TOML file
//! (`FILESYNC_CONFIG`), then `FILESYNC_<FIELD>` environment variables.
//!
//! The config is a plain value passed to `run(...)`; nothing reads the
//! environment after start-up.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret::{redact_url, Secret};

/// Shortest JWT secret a daemon accepts.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Every setting. Each field `x` can be set with `FILESYNC_X` or `x = ...` in the TOML file.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the embedded SQLite database, the dev-mode JWT secret and the chunk store.
    pub data_dir: PathBuf,
    /// `mysql://USER:PASSWORD@HOST:PORT/DB` or `sqlite://PATH`; default `sqlite://<data_dir>/filesync.db`.
    pub database_url: Option<String>,
    /// Connections kept in the database pool.
    pub db_pool_size: u32,
    /// Address of the HTTP API.
    pub http_addr: String,
    /// Address of a TCP sync node.
    pub tcp_addr: String,
    /// Address of a TCP node's health and metrics endpoint.
    pub tcp_admin_addr: String,
    /// HS256 secret shared by both daemons (at least 32 bytes). Required unless `dev_mode`.
    pub jwt_secret: Secret,
    /// Lifetime of an access token in seconds.
    pub jwt_ttl_secs: u64,
    /// `redis://HOST:PORT`: presence and the cross-node bus. Unset: single node, in-process bus.
    pub redis_url: Option<String>,
    /// First segment of every Redis key and channel, so deployments can share one Redis.
    pub redis_prefix: String,
    /// bcrypt cost for new password hashes (12 or more outside tests).
    pub bcrypt_cost: u32,
    /// Chunk store: a directory path, a `file://` URL, or `s3://BUCKET[/PREFIX]`; default
    /// `<data_dir>/chunks`. See [`Config::storage_location`].
    pub storage: Option<String>,
    /// S3 endpoint URL (MinIO, SeaweedFS, ...); unset: AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// S3 access key id; unset: the usual AWS credential chain.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    pub s3_secret_access_key: Secret,
    /// Address buckets as `ENDPOINT/BUCKET` instead of `BUCKET.ENDPOINT` (most self-hosted S3).
    pub s3_path_style: bool,
    /// Name of this TCP node in presence and logs; default random.
    pub node_id: Option<String>,
    /// Largest protocol frame in bytes.
    pub max_frame_bytes: usize,
    /// Most simultaneous connections a TCP node accepts.
    pub max_connections: usize,
    /// Failed logins for one email or one client IP before `/login` answers 429.
    pub login_max_failures: u32,
    /// Window in seconds in which failed logins are counted.
    pub login_window_secs: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed: comma-separated addresses or
    /// CIDR ranges (`10.0.0.1, 192.168.0.0/16`). Empty: the TCP peer is the client.
    pub trusted_proxies: String,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Development mode: generate and keep a JWT secret in the data dir when none is set.
    pub dev_mode: bool,
    /// PEM certificate chain; with `tls_key`, the daemons serve TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            db_pool_size: 10,
            http_addr: "127.0.0.1:8080".into(),
            tcp_addr: "127.0.0.1:7070".into(),
            tcp_admin_addr: "127.0.0.1:7071".into(),
            jwt_secret: Secret::default(),
            jwt_ttl_secs: 3600,
            redis_url: None,
            redis_prefix: "filesync".into(),
            bcrypt_cost: 12,
            storage: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: Secret::default(),
            s3_path_style: false,
            node_id: None,
            max_frame_bytes: 8 * 1024 * 1024,
            max_connections: 10_000,
            login_max_failures: 10,
            login_window_secs: 15 * 60,
            trusted_proxies: String::new(),
            log_format: "text".into(),
            dev_mode: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("db_pool_size", &self.db_pool_size)
            .field("http_addr", &self.http_addr)
            .field("tcp_addr", &self.tcp_addr)
            .field("tcp_admin_addr", &self.tcp_admin_addr)
            .field("jwt_secret", &self.jwt_secret)
            .field("jwt_ttl_secs", &self.jwt_ttl_secs)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("storage", &self.storage)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &self.s3_secret_access_key)
            .field("s3_path_style", &self.s3_path_style)
            .field("node_id", &self.node_id)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_connections", &self.max_connections)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_window_secs", &self.login_window_secs)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("log_format", &self.log_format)
            .field("dev_mode", &self.dev_mode)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

/// The names of every field, in declaration order; `FILESYNC_` + upper case is its env var.
pub const FIELDS: &[&str] = &[
    "data_dir",
    "database_url",
    "db_pool_size",
    "http_addr",
    "tcp_addr",
    "tcp_admin_addr",
    "jwt_secret",
    "jwt_ttl_secs",
    "redis_url",
    "redis_prefix",
    "bcrypt_cost",
    "storage",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_path_style",
    "node_id",
    "max_frame_bytes",
    "max_connections",
    "login_max_failures",
    "login_window_secs",
    "trusted_proxies",
    "log_format",
    "dev_mode",
    "tls_cert",
    "tls_key",
];

/// Fields holding numbers; every other field is read from the environment as text.
const NUMERIC: &[&str] = &[
    "db_pool_size",
    "jwt_ttl_secs",
    "bcrypt_cost",
    "max_frame_bytes",
    "max_connections",
    "login_max_failures",
    "login_window_secs",
];
const BOOLEAN: &[&str] = &["dev_mode", "s3_path_style"];

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

impl Config {
    /// Defaults, then the TOML file at `file` (or at `FILESYNC_CONFIG` as given by `env`), then env vars.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = file.map(Path::to_path_buf).or_else(|| env("FILESYNC_CONFIG").map(PathBuf::from));
        let mut table = toml::Table::try_from(Config::default()).expect("config serializes to a table");
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let from_file: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?;
            // Checked on its own so an unknown key is blamed on the file.
            Config::deserialize(toml::Value::Table(from_file.clone()))
                .map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?;
            table.extend(from_file);
        }
        for field in FIELDS {
            let var = format!("FILESYNC_{}", field.to_ascii_uppercase());
            let Some(raw) = env(&var) else { continue };
            let value = if NUMERIC.contains(field) {
                let n: i64 = raw.trim().parse().map_err(|_| ConfigError::Env {
                    var: var.clone(),
                    message: format!("expected a whole number, got {raw:?}"),
                })?;
                toml::Value::Integer(n)
            } else if BOOLEAN.contains(field) {
                toml::Value::Boolean(parse_bool(&raw).ok_or_else(|| ConfigError::Env {
                    var: var.clone(),
                    message: format!("expected true or false, got {raw:?}"),
                })?)
            } else {
                toml::Value::String(raw)
            };
            table.insert((*field).to_owned(), value);
        }
        Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Env { var: "FILESYNC_*".into(), message: e.to_string() })
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

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
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

    /// The committed example must name every setting and parse as a config.
    #[test]
    fn example_config_does_not_drift() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/filesync.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        Config::load(Some(&path), |_| None).unwrap();
        let mentioned: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.trim_start_matches(['#', ' ']).split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .collect();
        assert_eq!(mentioned, FIELDS.iter().copied().collect(), "deploy/filesync.example.toml and Config differ");
    }
}
