//! Scenarios 5 and 6, driven from this process with the protocol client
//! library: many authenticated connections to the nodes.
//!
//! 5. N idle connections to node 1: the node's RSS per connection.
//! 6. Subscribed connections spread over both nodes; one change committed
//!    through node 1; how long until every connection has the event.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use filesync_core::WorkspaceId;
use filesync_proto_client::{Client, ConnectOptions, Event, Events};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::filesync::api::Api;
use crate::filesync::stack::metrics_at;
use crate::filesync::Filesync;
use crate::procs::{check_interrupted, memory};
use crate::report::{group, Row, Unit, FILESYNC};
use crate::scenarios::latency::percentile_rows;
use crate::stats::Summary;

/// Handshakes in flight at once while opening connections.
const CONNECTING: usize = 256;
/// How long every connection may take to see one change.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn rss_per_connection_test(n: usize) -> String {
    format!("idle connections: node RSS per connection at {}", group(n as f64))
}
pub const FANOUT_P50: &str = "fan-out: p50";
pub const FANOUT_P99: &str = "fan-out: p99";
pub const FANOUT_MAX: &str = "fan-out: max";

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Opens `n` authenticated connections to `addr`, `CONNECTING` at a time.
async fn connect_many(addr: &str, token: &str, n: usize, tag: &str) -> Result<Vec<(Client, Events)>> {
    let token: Arc<str> = token.into();
    stream::iter(0..n)
        .map(|i| {
            let (addr, token) = (addr.to_owned(), token.clone());
            let device = format!("bench-{tag}-{i}");
            async move {
                Client::connect(addr.as_str(), ConnectOptions::new(&*token, device.clone(), device))
                    .await
                    .with_context(|| format!("connection {i} of {n} to {addr}"))
            }
        })
        .buffer_unordered(CONNECTING)
        .try_collect()
        .await
}

pub fn connections(f: &mut Filesync, counts: &[usize], runs: usize) -> Result<Vec<Row>> {
    let node = &f.stack.nodes()?[0];
    let (addr, pid, admin) = (node.addr(), node.proc.pid(), node.admin_port);
    let api = Api::new(f.stack.http_url())?;
    let user = api.user("idleconns")?;
    let rt = runtime()?;
    // Freed connection memory may stay with the process, so every sample is taken against the RSS the node had
    // before the first connection: an upper bound, never flattered by memory an earlier sample left behind.
    let baseline = memory(pid)?.rss_kib;
    let mut rows = Vec::new();
    for &n in counts {
        let mut per_conn = Vec::new();
        let mut detail = String::new();
        for run in 0..runs {
            check_interrupted()?;
            let conns = rt.block_on(connect_many(&addr, &user.token, n, &format!("idle{run}")))?;
            // Let the node finish any per-connection setup (presence, buffers) before reading its RSS.
            std::thread::sleep(Duration::from_secs(2));
            let open = open_connections(admin);
            let with = memory(pid)?.rss_kib;
            per_conn.push(with.saturating_sub(baseline) as f64 / n as f64);
            drop(conns);
            std::thread::sleep(Duration::from_secs(1));
            let after = memory(pid)?.rss_kib;
            detail = format!(
                "node RSS {} KiB before any connection, {} KiB with {} open (node's count: {}), {} KiB after they \
                 closed (last sample)",
                group(baseline as f64),
                group(with as f64),
                group(n as f64),
                open.map(group).unwrap_or_else(|| "?".into()),
                group(after as f64)
            );
        }
        rows.extend(Row::from_samples(&rss_per_connection_test(n), FILESYNC, &per_conn, Unit::Kib, &detail));
    }
    f.stack.ensure_running()?;
    Ok(rows)
}

/// The node's gauge of open connections, if it exports one.
fn open_connections(admin_port: u16) -> Option<f64> {
    let metrics = metrics_at(admin_port).ok()?;
    metrics.iter().find(|(name, _)| name.ends_with("connections_active")).map(|m| m.1)
}

pub fn fanout(f: &mut Filesync, root: &Path, subscribers: usize, runs: usize) -> Result<Vec<Row>> {
    let nodes: Vec<String> = f.stack.nodes()?.iter().map(|n| n.addr()).collect();
    let api = Api::new(f.stack.http_url())?;
    let owner = api.user("fanowner")?;
    let member = api.user("fanmember")?;
    let ws_id = api.workspace(&owner, "fanout")?;
    api.share(&owner, ws_id, &member)?;
    let ws = WorkspaceId(ws_id);
    let rt = runtime()?;
    let (mut all, mut spread) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let mut subs = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let share = subscribers / nodes.len() + usize::from(i < subscribers % nodes.len());
            subs.extend(connect_many(node, &member.token, share, &format!("sub{i}")).await?);
        }
        stream::iter(subs.iter().map(|(c, _)| c.subscribe(ws, 0)))
            .buffer_unordered(CONNECTING)
            .try_collect::<Vec<_>>()
            .await
            .context("subscribing")?;
        let (writer, _writer_events) =
            Client::connect(nodes[0].as_str(), ConnectOptions::new(&owner.token, "bench-writer", "writer")).await?;
        for run in 0..runs {
            check_interrupted()?;
            let name = format!("fanout-{run}.bin");
            let file = root.join(&name);
            std::fs::write(&file, crate::data::random_bytes(&mut crate::data::rng(run as u64), 4096))?;
            let t0 = Instant::now();
            let commit = writer.put_file(ws, &name, &file, 0);
            let arrivals = futures::future::join_all(subs.iter_mut().map(|(_, events)| next_change(events, ws, t0)));
            let (committed, arrivals) = tokio::join!(commit, arrivals);
            let committed = committed.context("committing the change")?;
            let mut ms = Vec::with_capacity(arrivals.len());
            for a in arrivals {
                let (seq, at) = a?;
                if seq != committed.seq {
                    bail!("a subscriber saw seq {seq} where {} was committed", committed.seq);
                }
                ms.push(at);
            }
            if let Some(s) = Summary::of(&ms) {
                spread.push(s.max);
            }
            all.extend(ms);
        }
        anyhow::Ok(())
    })?;
    f.stack.ensure_running()?;
    let detail = format!(
        "{subscribers} connections on {} nodes, {runs} changes; from just before the upload of a 4 KiB file starts",
        nodes.len()
    );
    let mut rows = percentile_rows(FANOUT_P50, FANOUT_P99, FILESYNC, &all, &detail);
    rows.extend(Row::from_samples(FANOUT_MAX, FILESYNC, &spread, Unit::Millis, "slowest connection of each change"));
    Ok(rows)
}

/// Waits for the next change of `ws` on one connection; its seq and milliseconds since `t0`.
async fn next_change(events: &mut Events, ws: WorkspaceId, t0: Instant) -> Result<(i64, f64)> {
    let deadline = t0 + FANOUT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.next_within(left).await {
            Some(Event::Change(c)) if c.workspace_id == ws => return Ok((c.seq, t0.elapsed().as_secs_f64() * 1e3)),
            Some(Event::Change(_) | Event::Notice(_)) => continue,
            // The fan-out figure is the first delivery of a change; one the queue could not hold was not delivered.
            Some(Event::Missed { up_to_seq, .. }) => bail!("changes up to seq {up_to_seq} did not fit the event queue"),
            Some(Event::Goodbye { reason, .. }) => return Err(anyhow!("the node said goodbye: {reason}")),
            Some(Event::Closed { error, .. }) => return Err(anyhow!("connection closed: {error:?}")),
            None => bail!("no change within {FANOUT_TIMEOUT:?}"),
        }
    }
}
