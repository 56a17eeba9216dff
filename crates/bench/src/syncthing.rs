//! Peer: two Syncthing instances, A and B, on loopback, sharing one folder.
//!
//! Only what keeps them on 127.0.0.1 is written into `config.xml` before the
//! first start (listen and GUI addresses, discovery, relays, NAT, usage
//! reporting off); devices and the folder are then added through the REST
//! API from Syncthing's own defaults, so everything else is as a user gets it
//! (watcher on, `fsWatcherDelayS` 10 unless a run asks for another value,
//! device compression `metadata`, Syncthing's default, unless a scenario asks
//! for `always`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::data;
use crate::mirror::{Mirror, Wire};
use crate::procs::{free_port, run_capture, wait_for, Proc};
use crate::scenarios::scale::AtScale;

const FOLDER: &str = "bench";
const CONFIG_VERSION: u32 = 36;
const STARTUP: Duration = Duration::from_secs(60);

struct Instance {
    name: &'static str,
    proc: Proc,
    gui: u16,
    listen: u16,
    key: String,
    id: String,
    folder: PathBuf,
    /// Its configuration and database.
    home: PathBuf,
}

pub struct Syncthing {
    a: Instance,
    b: Instance,
    http: Client,
    delay_s: u32,
    /// The devices' `compression`: `metadata` (Syncthing's default), `always` or `never`.
    compression: &'static str,
}

/// Syncthing's default device compression: only metadata (indexes, requests) is compressed.
pub const DEFAULT_COMPRESSION: &str = "metadata";

impl Syncthing {
    /// Starts A and B under `root`, connects them and shares an empty folder with the watcher delay `delay_s`.
    pub fn start(root: &Path, delay_s: u32) -> Result<Syncthing> {
        let http = Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
        let a = Instance::start(root, "A")?;
        let b = Instance::start(root, "B")?;
        let mut st = Syncthing { a, b, http, delay_s, compression: DEFAULT_COMPRESSION };
        st.link()?;
        Ok(st)
    }

    /// Changes `fsWatcherDelayS` on both sides (GET + PUT of the folder) and waits until both are idle.
    pub fn set_delay(&mut self, delay_s: u32) -> Result<()> {
        for inst in [&self.a, &self.b] {
            let mut folder = self.get(inst, &format!("/rest/config/folders/{FOLDER}"))?;
            folder["fsWatcherDelayS"] = json!(delay_s);
            self.put(inst, &format!("/rest/config/folders/{FOLDER}"), &folder)?;
        }
        self.delay_s = delay_s;
        self.settle()
    }

    /// Sets each device's `compression` for its peer (`metadata`, `always`, `never`), waits until they are
    /// connected again and idle.
    pub fn set_compression(&mut self, compression: &'static str) -> Result<()> {
        if compression == self.compression {
            return Ok(());
        }
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let mut device = self.get(me, &format!("/rest/config/devices/{}", peer.id))?;
            device["compression"] = json!(compression);
            self.put(me, &format!("/rest/config/devices/{}", peer.id), &device)?;
        }
        self.compression = compression;
        // A connection keeps the compression it was opened with: pause and resume the peer for a new one.
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            self.post(me, &format!("/rest/system/pause?device={}", peer.id))?;
        }
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            self.post(me, &format!("/rest/system/resume?device={}", peer.id))?;
        }
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            wait_for(&format!("Syncthing {} to reconnect to {}", me.name, peer.name), STARTUP, POLL, || {
                let c = self.get(me, "/rest/system/connections")?;
                Ok(c["connections"][&peer.id]["connected"].as_bool().unwrap_or(false).then_some(()))
            })?;
        }
        self.settle()
    }

    fn link(&mut self) -> Result<()> {
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let mut device = self.get(me, "/rest/config/defaults/device")?;
            device["deviceID"] = json!(peer.id);
            device["name"] = json!(peer.name);
            device["addresses"] = json!([format!("tcp://127.0.0.1:{}", peer.listen)]);
            self.put(me, &format!("/rest/config/devices/{}", peer.id), &device)?;
        }
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let mut folder = self.get(me, "/rest/config/defaults/folder")?;
            folder["id"] = json!(FOLDER);
            folder["label"] = json!(FOLDER);
            folder["path"] = json!(me.folder);
            folder["fsWatcherDelayS"] = json!(self.delay_s);
            folder["devices"] = json!([{ "deviceID": me.id }, { "deviceID": peer.id }]);
            self.put(me, &format!("/rest/config/folders/{FOLDER}"), &folder)?;
        }
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            wait_for(&format!("Syncthing {} to connect to {}", me.name, peer.name), STARTUP, POLL, || {
                let c = self.get(me, "/rest/system/connections")?;
                Ok(c["connections"][&peer.id]["connected"].as_bool().unwrap_or(false).then_some(()))
            })?;
        }
        self.settle()
    }

    fn get(&self, inst: &Instance, path: &str) -> Result<Value> {
        let resp = self.http.get(inst.url(path)).header("X-API-Key", &inst.key).send()?;
        let status = resp.status();
        if !status.is_success() {
            bail!("Syncthing {} GET {path}: {status}: {}", inst.name, resp.text().unwrap_or_default());
        }
        Ok(resp.json()?)
    }

    fn post(&self, inst: &Instance, path: &str) -> Result<()> {
        let resp = self.http.post(inst.url(path)).header("X-API-Key", &inst.key).send()?;
        let status = resp.status();
        if !status.is_success() {
            bail!("Syncthing {} POST {path}: {status}: {}", inst.name, resp.text().unwrap_or_default());
        }
        Ok(())
    }

    fn put(&self, inst: &Instance, path: &str, body: &Value) -> Result<()> {
        let resp = self.http.put(inst.url(path)).header("X-API-Key", &inst.key).json(body).send()?;
        let status = resp.status();
        if !status.is_success() {
            bail!("Syncthing {} PUT {path}: {status}: {}", inst.name, resp.text().unwrap_or_default());
        }
        Ok(())
    }

    fn folder_status(&self, inst: &Instance) -> Result<Value> {
        self.get(inst, &format!("/rest/db/status?folder={FOLDER}"))
    }
}

/// Poll interval for the REST API.
const POLL: Duration = Duration::from_millis(100);

impl Instance {
    fn start(root: &Path, name: &'static str) -> Result<Instance> {
        let home = root.join(format!("home-{name}"));
        let folder = root.join(name);
        std::fs::create_dir_all(folder.join(".stfolder"))?;
        let mut gen = Command::new("syncthing");
        gen.arg("generate").arg(format!("--home={}", home.display())).arg("--no-default-folder");
        scrub_env(&mut gen);
        let out = run_capture(gen, STARTUP)?;
        let id = out
            .lines()
            .find_map(|l| l.split("Device ID:").nth(1).map(|s| s.trim().to_owned()))
            .ok_or_else(|| anyhow!("no device ID in `syncthing generate` output:\n{out}"))?;
        let (gui, listen) = (free_port()?, free_port()?);
        let key: String = format!("{:032x}", rand::random::<u128>());
        std::fs::write(home.join("config.xml"), loopback_config(gui, listen, &key))?;
        let mut cmd = Command::new("syncthing");
        cmd.arg("serve").arg(format!("--home={}", home.display())).args(["--no-browser", "--no-restart"]);
        scrub_env(&mut cmd);
        // Without a monitor parent, the process we start is the one serving, so stopping it stops Syncthing.
        cmd.env("STMONITORED", "1").env("STNODEFAULTFOLDER", "1").env("STNOUPGRADE", "1");
        let proc = Proc::spawn(&format!("syncthing-{name}"), cmd, root)?;
        let inst = Instance { name, proc, gui, listen, key, id, folder, home };
        let http = Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        wait_for(&format!("Syncthing {name} REST API"), STARTUP, POLL, || {
            let ok = http.get(inst.url("/rest/system/ping")).header("X-API-Key", &inst.key).send();
            Ok(ok.is_ok_and(|r| r.status().is_success()).then_some(()))
        })
        .with_context(|| inst.proc.log_tail())?;
        Ok(inst)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gui)
    }
}

/// No proxy may send loopback traffic elsewhere.
fn scrub_env(cmd: &mut Command) {
    for var in
        ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy", "NO_PROXY"]
    {
        cmd.env_remove(var);
    }
}

/// Everything that could make Syncthing talk to anything but 127.0.0.1 is off; the rest is left to its defaults.
fn loopback_config(gui: u16, listen: u16, key: &str) -> String {
    format!(
        r#"<configuration version="{CONFIG_VERSION}">
    <gui enabled="true" tls="false">
        <address>127.0.0.1:{gui}</address>
        <apikey>{key}</apikey>
    </gui>
    <options>
        <listenAddress>tcp://127.0.0.1:{listen}</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <crashReportingEnabled>false</crashReportingEnabled>
        <announceLANAddresses>false</announceLANAddresses>
        <urAccepted>-1</urAccepted>
        <urSeen>3</urSeen>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <startBrowser>false</startBrowser>
        <stunKeepaliveStartS>0</stunKeepaliveStartS>
    </options>
</configuration>
"#
    )
}

impl Mirror for Syncthing {
    fn name(&self) -> String {
        match self.compression {
            DEFAULT_COMPRESSION => format!("Syncthing (delay {} s)", self.delay_s),
            other => format!("Syncthing (delay {} s, compression {other})", self.delay_s),
        }
    }

    fn source(&self) -> &Path {
        &self.a.folder
    }

    fn target(&self) -> &Path {
        &self.b.folder
    }

    fn wire(&mut self) -> Result<Option<Wire>> {
        let a = self.get(&self.a, "/rest/system/connections")?;
        let b = self.get(&self.b, "/rest/system/connections")?;
        let count = |v: &Value, peer: &str, field: &str| v["connections"][peer][field].as_u64().unwrap_or(0);
        let sent_by_a = count(&a, &self.b.id, "outBytesTotal");
        let received_by_b = count(&b, &self.a.id, "inBytesTotal");
        Ok(Some(Wire { sent_by_a, received_by_b, total: sent_by_a + count(&b, &self.a.id, "outBytesTotal") }))
    }

    fn wire_source(&self) -> &'static str {
        "Syncthing /rest/system/connections (TLS payload incl. records)"
    }

    fn processes(&self) -> Vec<(String, u32)> {
        vec![("Syncthing A".into(), self.a.proc.pid()), ("Syncthing B".into(), self.b.proc.pid())]
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.a.proc.ensure_running()?;
        self.b.proc.ensure_running()
    }

    /// Both idle with nothing needed, and B holding as many files as A, twice in a row.
    fn settle(&mut self) -> Result<()> {
        let mut calm = 0;
        wait_for("Syncthing to become idle", Duration::from_secs(600), POLL, || {
            self.ensure_running()?;
            let (a, b) = (self.folder_status(&self.a)?, self.folder_status(&self.b)?);
            let idle = |s: &Value| s["state"] == "idle" && s["needTotalItems"].as_u64() == Some(0);
            let same = a["localFiles"] == b["localFiles"] && a["localDeleted"] == b["localDeleted"];
            calm = if idle(&a) && idle(&b) && same { calm + 1 } else { 0 };
            Ok((calm >= 2).then_some(()))
        })
    }
}

/// Syncthing's state is its home (configuration, keys and the index database); its restart is not measured.
impl AtScale for Syncthing {
    fn state_bytes(&self) -> Result<Vec<(String, u64)>> {
        [&self.a, &self.b].iter().map(|i| Ok((format!("Syncthing {}", i.name), data::dir_bytes(&i.home)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data;
    use crate::mirror::{POLL_FAST, TRANSFER_TIMEOUT};

    #[test]
    fn a_file_written_in_a_shows_up_in_b() {
        if Command::new("syncthing").arg("--version").output().is_err() {
            eprintln!("syncthing is not installed (apt-get install syncthing): test skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut st = Syncthing::start(dir.path(), 1).unwrap();
        let body = data::random_bytes(&mut data::rng(5), 4096);
        std::fs::write(st.source().join("x.bin"), &body).unwrap();
        let target = st.target().join("x.bin");
        wait_for("x.bin on B", TRANSFER_TIMEOUT, POLL_FAST, || Ok(data::has_contents(&target, &body).then_some(())))
            .unwrap();
        let wire = st.wire().unwrap().unwrap();
        assert!(wire.sent_by_a >= 4096, "{wire:?}");
        st.set_delay(2).unwrap();
        assert_eq!(st.name(), "Syncthing (delay 2 s)");
        st.clear(Path::new("x.bin")).unwrap();
    }
}
