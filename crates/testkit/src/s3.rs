//! The tests' S3-compatible object store: where it is, with which credentials,
//! and a fresh prefix per test so tests share one bucket without seeing each
//! other's objects.
//!
//! `.ci/seaweedfs.sh` starts SeaweedFS on 127.0.0.1:8333 with the defaults
//! below (`.ci/run` calls it). Another S3 server is used by setting
//! `FILESYNC_TEST_S3_ENDPOINT`, `FILESYNC_TEST_S3_REGION`,
//! `FILESYNC_TEST_S3_ACCESS_KEY_ID`, `FILESYNC_TEST_S3_SECRET_ACCESS_KEY` and
//! `FILESYNC_TEST_S3_BUCKET` (the bucket must exist). When nothing answers,
//! [`TestS3::fresh`] fails the test with one line saying how to start it;
//! `FILESYNC_SKIP_S3=1` skips the object-store legs instead (never in CI:
//! `.ci/run` unsets it).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::CutProxy;

/// The variable that skips the object-store legs of the tests.
pub const SKIP_VAR: &str = "FILESYNC_SKIP_S3";

/// One test's place in the object store: `s3://{bucket}/{prefix}` on `endpoint`.
#[derive(Clone, PartialEq, Eq)]
pub struct TestS3 {
    /// `http://host:port`, no trailing slash.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub bucket: String,
    /// Unique to this [`TestS3`]: `filesync-test-<uuid-like hex>`.
    pub prefix: String,
}

impl std::fmt::Debug for TestS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestS3")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Whether `FILESYNC_SKIP_S3=1` asks to skip the object-store legs.
pub fn skip_requested() -> bool {
    std::env::var(SKIP_VAR).is_ok_and(|v| v == "1")
}

impl TestS3 {
    /// A fresh prefix in the test bucket, or `None` (with a note on stderr)
    /// when `FILESYNC_SKIP_S3=1`. Panics with one line saying how to start
    /// SeaweedFS when nothing answers at the endpoint.
    pub fn fresh() -> Option<TestS3> {
        if skip_requested() {
            eprintln!("{SKIP_VAR}=1: the object-store (S3) leg of this test is skipped");
            return None;
        }
        match TestS3::try_fresh() {
            Ok(s3) => Some(s3),
            Err(why) => panic!("{why}, or set {SKIP_VAR}=1 to skip the object-store tests"),
        }
    }

    /// A fresh prefix in the test bucket, or why there is none: one line
    /// saying what does not answer and how to start SeaweedFS.
    pub fn try_fresh() -> Result<TestS3, String> {
        let endpoint = var("FILESYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:8333").trim_end_matches('/').to_owned();
        if let Err(why) = reachable(&endpoint) {
            return Err(format!(
                "no S3 server at {endpoint} ({why}): start SeaweedFS with `.ci/seaweedfs.sh` (README, \"Run the \
                 tests\") or point FILESYNC_TEST_S3_ENDPOINT at another"
            ));
        }
        Ok(TestS3 {
            endpoint,
            region: var("FILESYNC_TEST_S3_REGION", "us-east-1"),
            access_key_id: var("FILESYNC_TEST_S3_ACCESS_KEY_ID", "filesync-test"),
            secret_access_key: var("FILESYNC_TEST_S3_SECRET_ACCESS_KEY", "filesync-test-secret"),
            bucket: var("FILESYNC_TEST_S3_BUCKET", "filesync-test"),
            prefix: format!("filesync-test-{}", unique()),
        })
    }

    /// `s3://BUCKET/PREFIX`: the value of `FILESYNC_STORAGE` (config `storage`).
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// `config` with its chunks in this prefix: `storage` and the `s3_*` settings.
    pub fn configure(&self, config: &mut filesync_core::config::Config) {
        config.storage = Some(self.url());
        config.s3_endpoint = Some(self.endpoint.clone());
        config.s3_region.clone_from(&self.region);
        config.s3_access_key_id = Some(self.access_key_id.clone());
        config.s3_secret_access_key = filesync_core::Secret::new(self.secret_access_key.clone());
        config.s3_path_style = true;
    }

    /// The daemons' environment for this store: `FILESYNC_STORAGE` and the
    /// `FILESYNC_S3_*` settings (path-style addressing, as self-hosted S3 wants).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FILESYNC_STORAGE", self.url()),
            ("FILESYNC_S3_ENDPOINT", self.endpoint.clone()),
            ("FILESYNC_S3_REGION", self.region.clone()),
            ("FILESYNC_S3_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("FILESYNC_S3_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("FILESYNC_S3_PATH_STYLE", "true".to_owned()),
        ]
    }

    /// The endpoint's socket address.
    pub fn addr(&self) -> SocketAddr {
        host_port(&self.endpoint)
            .and_then(|hp| hp.to_socket_addrs().ok()?.next())
            .unwrap_or_else(|| panic!("S3 endpoint {} is not http://HOST:PORT", self.endpoint))
    }

    /// A [`CutProxy`] in front of the endpoint, and the same bucket and prefix
    /// reached through it: cutting the proxy is an object-store outage.
    pub async fn via_proxy(&self) -> (CutProxy, TestS3) {
        let proxy = CutProxy::start(self.addr()).await.expect("proxy listens");
        let through = TestS3 { endpoint: format!("http://{}", proxy.addr()), ..self.clone() };
        (proxy, through)
    }
}

/// `host:port` of an `http://host:port[/...]` URL.
fn host_port(endpoint: &str) -> Option<&str> {
    let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"))?;
    let hp = rest.split('/').next()?;
    hp.contains(':').then_some(hp)
}

fn reachable(endpoint: &str) -> Result<(), String> {
    let hp = host_port(endpoint).ok_or("not an http://HOST:PORT URL")?;
    let addr = hp.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop).map_err(|e| e.to_string())
}

/// 128 bits that differ between calls and processes (no RNG dependency:
/// std's `RandomState` is randomly keyed per process, and a counter and the
/// clock separate calls).
fn unique() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_fresh_and_urls_name_bucket_and_prefix() {
        let a = TestS3 {
            endpoint: "http://127.0.0.1:8333".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            bucket: "b".into(),
            prefix: format!("filesync-test-{}", unique()),
        };
        let b = TestS3 { prefix: format!("filesync-test-{}", unique()), ..a.clone() };
        assert_ne!(a.prefix, b.prefix);
        assert_eq!(a.url(), format!("s3://b/{}", a.prefix));
        assert_eq!(a.addr(), "127.0.0.1:8333".parse().unwrap());
        assert!(a.env().contains(&("FILESYNC_S3_PATH_STYLE", "true".to_owned())));
        let mut config = filesync_core::config::Config::default();
        a.configure(&mut config);
        assert_eq!(
            config.storage_location().unwrap(),
            filesync_core::config::StorageLocation::S3 { bucket: "b".into(), prefix: a.prefix.clone() }
        );
        assert_eq!(config.s3_secret_access_key.expose(), "s");
        // Test output never shows the secret.
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn an_endpoint_that_does_not_answer_is_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(reachable(&format!("http://127.0.0.1:{port}")).is_err());
        assert!(reachable("ftp://x").is_err());
    }
}
