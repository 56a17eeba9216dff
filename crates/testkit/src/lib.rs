//! Test support that opens sockets and starts tasks, which `filesync-core`'s
//! `testing` module may not (core opens no socket and starts no task).
//!
//! [`CutProxy`] sits between a daemon and a server (MariaDB, Redis): a test
//! can cut every connection through it and refuse new ones for a while, then
//! restore it — an outage of that server as the daemon sees it, without
//! stopping the shared server other tests use — or make it stall (accept and
//! never answer), a server that hangs.
//!
//! [`TestS3`] is the tests' S3-compatible object store (SeaweedFS started by
//! `.ci/seaweedfs.sh`): a fresh prefix per test, a clear failure when it is
//! not running, and [`TestS3::via_proxy`] for object-store outages.

mod s3;
pub use s3::{skip_requested as s3_skip_requested, TestS3, SKIP_VAR as S3_SKIP_VAR};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP proxy on 127.0.0.1 to `upstream`, open or cut. Stops when dropped.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct State {
    /// Cancelled by `cut`: every connection made before then closes.
    generation: Mutex<CancellationToken>,
    /// While true, new connections are closed as soon as they are accepted.
    down: std::sync::atomic::AtomicBool,
    /// While true, new connections are accepted and then left unanswered (what they send is read
    /// and dropped) until [`CutProxy::restore`]: a server that hangs rather than refuses.
    stalled: std::sync::atomic::AtomicBool,
}

impl CutProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            generation: Mutex::new(CancellationToken::new()),
            down: std::sync::atomic::AtomicBool::new(false),
            stalled: std::sync::atomic::AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, upstream, state.clone(), stop.clone()));
        Ok(CutProxy { addr, state, stop })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the proxy and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.state.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut generation = self.state.generation.lock().unwrap_or_else(|p| p.into_inner());
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// Closes every connection through the proxy; new ones are accepted and never answered until
    /// [`CutProxy::restore`].
    pub fn stall(&self) {
        self.state.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
        self.state.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Accepts and forwards connections again (stalled ones are closed).
    pub fn restore(&self) {
        self.state.down.store(false, std::sync::atomic::Ordering::SeqCst);
        if self.state.stalled.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let mut generation = self.state.generation.lock().unwrap_or_else(|p| p.into_inner());
            generation.cancel();
            *generation = CancellationToken::new();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.generation.lock().unwrap_or_else(|p| p.into_inner()).cancel();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        if state.down.load(std::sync::atomic::Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let cut = state.generation.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if state.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(async move {
                let (mut client, mut sink) = (client, tokio::io::sink());
                tokio::select! {
                    () = cut.cancelled() => {}
                    _ = tokio::io::copy(&mut client, &mut sink) => {}
                }
            });
            continue;
        }
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                () = cut.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
            // Dropping both ends closes them: the daemon sees its connection die.
        });
    }
}

/// A [`CutProxy`] in front of the `host:port` of a `mysql://user@host:port/db`
/// URL, and the same URL through the proxy.
pub async fn via_proxy(url: &str) -> (CutProxy, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (auth, rest) = rest.rsplit_once('@').map_or(("", rest), |(a, r)| (a, r));
    let (host_port, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let upstream = tokio::net::lookup_host(host_port).await.expect("resolvable host").next().expect("an address");
    let proxy = CutProxy::start(upstream).await.expect("proxy listens");
    let at = if auth.is_empty() { String::new() } else { format!("{auth}@") };
    let proxied = format!("{scheme}://{at}{}/{path}", proxy.addr());
    (proxy, proxied)
}
