//! The `--help` text for configuration. A test checks it names every
//! setting of [`filesync_core::config::Config`].

/// `FILESYNC_<FIELD>` and what it does, for every config field and `FILESYNC_CONFIG`.
pub const SETTINGS: &[(&str, &str)] = &[
    ("config", "TOML config file (same keys as below, lower case); env vars override it"),
    ("data_dir", "directory for the SQLite database and the --dev JWT secret [default: ./data]"),
    ("database_url", "mysql://USER:PASSWORD@HOST:PORT/DB or sqlite://PATH [default: sqlite://<data_dir>/filesync.db]"),
    ("db_pool_size", "database connections kept open [default: 10]"),
    ("http_addr", "address the HTTP API listens on [default: 127.0.0.1:8080]"),
    ("tcp_addr", "address of a TCP sync node (filesync-tcp) [default: 127.0.0.1:7070]"),
    ("tcp_admin_addr", "health/metrics address of a TCP sync node (filesync-tcp) [default: 127.0.0.1:7071]"),
    ("jwt_secret", "HS256 token secret, at least 32 bytes; required unless --dev"),
    ("jwt_ttl_secs", "access token lifetime in seconds; agents renew theirs [default: 3600]"),
    ("redis_url", "redis://HOST:PORT; shares and restores are announced on it, presence read from it [default: unset]"),
    (
        "redis_prefix",
        "first segment of every Redis key and channel; one per deployment sharing a Redis [default: filesync]",
    ),
    ("bcrypt_cost", "bcrypt cost for new password hashes, 4-31 [default: 12]"),
    (
        "storage",
        "chunk store shared by filesync-tcp and filesync-http: a directory, file:///PATH or s3://BUCKET[/PREFIX] [default: <data_dir>/chunks]",
    ),
    ("s3_endpoint", "S3 endpoint URL for an s3:// storage, e.g. MinIO or SeaweedFS [default: unset, AWS]"),
    ("s3_region", "S3 region [default: us-east-1]"),
    ("s3_access_key_id", "S3 access key id [default: unset, the AWS credential chain]"),
    ("s3_secret_access_key", "S3 secret access key, never logged [default: unset]"),
    ("s3_path_style", "true: address the bucket as ENDPOINT/BUCKET, as most self-hosted S3 needs [default: false]"),
    ("node_id", "name of a TCP sync node (filesync-tcp) [default: random]"),
    ("max_frame_bytes", "largest sync protocol frame (filesync-tcp) [default: 8388608]"),
    ("max_connections", "most connections of a TCP sync node (filesync-tcp) [default: 10000]"),
    (
        "login_max_failures",
        "free failed logins per account (half as many per account and client address) before /login delays [default: 10]",
    ),
    ("login_window_secs", "how long failed logins are remembered, and the longest delay, in seconds [default: 900]"),
    (
        "trusted_proxies",
        "reverse proxies whose X-Forwarded-For names the client: addresses or CIDR ranges, comma-separated [default: none]",
    ),
    ("log_format", "text or json [default: text]"),
    ("dev_mode", "true: generate and keep a JWT secret in the data dir (same as --dev) [default: false]"),
    ("tls_cert", "PEM certificate chain; with FILESYNC_TLS_KEY, serve HTTPS [default: unset, plain HTTP]"),
    ("tls_key", "PEM private key for FILESYNC_TLS_CERT [default: unset]"),
];

/// The settings as an "Environment" section for clap's `after_help`.
pub fn environment_help() -> String {
    let mut rows: Vec<(String, &str)> =
        SETTINGS.iter().map(|(key, what)| (format!("FILESYNC_{}", key.to_ascii_uppercase()), *what)).collect();
    rows.push(("RUST_LOG".into(), "log filter, e.g. info or filesync_http_api=debug [default: info]"));
    let width = rows.iter().map(|(var, _)| var.len()).max().unwrap_or(0);
    let mut out = String::from("Environment (each FILESYNC_ variable is also a key of the TOML config file):\n");
    for (var, what) in rows {
        out.push_str(&format!("  {var:<width$}  {what}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use filesync_core::config::FIELDS;

    use super::*;

    #[test]
    fn help_names_every_setting() {
        let documented: BTreeSet<&str> = SETTINGS.iter().map(|(k, _)| *k).filter(|k| *k != "config").collect();
        assert_eq!(documented, FIELDS.iter().copied().collect(), "help.rs and Config differ");
        let text = environment_help();
        for field in FIELDS {
            assert!(text.contains(&format!("FILESYNC_{}", field.to_ascii_uppercase())), "{field} missing");
        }
        assert!(text.contains("FILESYNC_CONFIG"));
    }
}
