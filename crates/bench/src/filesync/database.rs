//! The run's own MariaDB database, created and dropped with the `mariadb`
//! (or `mysql`) command-line client.
//!
//! The harness does not link a database client: it reaches MariaDB the way an
//! operator does, so building it pulls neither core's `testing` helpers nor
//! the MariaDB C library into the workspace build (ARCHITECTURE.md, "Cargo
//! features").

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::Url;

use crate::procs::run_capture;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh, empty database on the MariaDB server of `FILESYNC_TEST_MYSQL_URL` (default
/// `mysql://root@127.0.0.1:3306`, as for the tests), dropped when the value is dropped.
pub struct RunDatabase {
    server: Server,
    name: String,
}

impl RunDatabase {
    pub fn create() -> Result<RunDatabase> {
        let url = std::env::var("FILESYNC_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let server = Server::parse(&url)?;
        let name = format!("filesync_bench_{:016x}", rand::random::<u64>());
        server
            .execute(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            .with_context(|| format!("cannot create a database on MariaDB at {}", server.shown()))?;
        Ok(RunDatabase { server, name })
    }

    /// The `FILESYNC_DATABASE_URL` the daemons get.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server.url.trim_end_matches('/'), self.name)
    }
}

impl Drop for RunDatabase {
    fn drop(&mut self) {
        if let Err(e) = self.server.execute(&format!("DROP DATABASE IF EXISTS `{}`", self.name)) {
            eprintln!("could not drop the run's database {}: {e:#}", self.name);
        }
    }
}

/// Where the MariaDB server is, from a `mysql://user[:password]@host[:port]` URL.
struct Server {
    url: String,
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

impl Server {
    fn parse(url: &str) -> Result<Server> {
        let u = Url::parse(url).with_context(|| format!("FILESYNC_TEST_MYSQL_URL is not a URL: {url}"))?;
        if u.scheme() != "mysql" {
            return Err(anyhow!("FILESYNC_TEST_MYSQL_URL must be a mysql:// URL, not {}://", u.scheme()));
        }
        Ok(Server {
            url: url.to_owned(),
            host: u.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: u.port().unwrap_or(3306),
            user: if u.username().is_empty() { "root".into() } else { u.username().to_owned() },
            password: u.password().map(str::to_owned),
        })
    }

    /// The server without its password, for messages.
    fn shown(&self) -> String {
        format!("{}:{} as {}", self.host, self.port, self.user)
    }

    /// Runs one statement with the command-line client over TCP; its output.
    fn execute(&self, sql: &str) -> Result<String> {
        let program = ["mariadb", "mysql"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
            .ok_or_else(|| anyhow!("neither `mariadb` nor `mysql` (the MariaDB client) is installed"))?;
        let mut cmd = Command::new(program);
        cmd.args(["--protocol=tcp", "--batch", "-h", &self.host, "-P", &self.port.to_string(), "-u", &self.user]);
        // The password goes through the environment, never the command line (visible in `ps`) or a message.
        cmd.env_remove("MYSQL_PWD");
        if let Some(pw) = &self.password {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd.args(["-e", sql]);
        run_capture(cmd, CLIENT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_gives_host_port_user_and_password() {
        let s = Server::parse("mysql://bench:s3cret@db.local:3307").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.user.as_str()), ("db.local", 3307, "bench"));
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        assert!(!s.shown().contains("s3cret"));
        let d = Server::parse("mysql://root@127.0.0.1").unwrap();
        assert_eq!((d.port, d.password), (3306, None));
        assert!(Server::parse("postgres://root@127.0.0.1").is_err());
    }

    #[test]
    fn the_run_database_exists_until_it_is_dropped() {
        let db = RunDatabase::create().expect("MariaDB at FILESYNC_TEST_MYSQL_URL or 127.0.0.1:3306");
        let (server, name) = (Server::parse(&db.server.url).unwrap(), db.name.clone());
        assert!(db.url().ends_with(&format!("/{name}")));
        let listed = || server.execute(&format!("SHOW DATABASES LIKE '{name}'")).unwrap().contains(&name);
        assert!(listed(), "created");
        drop(db);
        assert!(!listed(), "dropped");
    }
}
