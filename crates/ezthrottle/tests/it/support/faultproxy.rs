//! An in-process TCP fault proxy for system tests (no iptables or netem on the test box): put
//! it between a node and PostgreSQL and, from the test, switch what the "network" does.
//!
//! - `Mode::Forward`: bytes flow both ways (the normal case).
//! - `Mode::Blackhole`: connections stay open but nothing is read or forwarded either way, and
//!   new connections are accepted and left hanging: the peer sees silence, never an error (the
//!   kernel still ACKs, so TCP keepalive and user timeouts on the node's side do not fire).
//!   Back to `Forward`, held bytes flow again.
//! - `Mode::Refuse`: new connections are reset at once (a database that is down).
//! - [`FaultProxy::reset`]: every open connection is reset (RST) on both sides.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Blackhole,
    Refuse,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Cancelled by `reset`, then replaced: the connections open at that moment end with RST.
    generation: Mutex<CancellationToken>,
    accepted: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::channel(Mode::Forward).0,
            generation: Mutex::new(CancellationToken::new()),
            accepted: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let (s, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                let gen = s.generation.lock().unwrap().clone();
                tokio::spawn(serve(client, s.clone(), gen, st.clone()));
            }
        });
        Self { addr, shared, stop }
    }

    pub fn set(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Resets (RST) every connection open now, on both sides.
    pub fn reset(&self) {
        let mut g = self.shared.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// A proxy in front of the database of `url` (a postgres:// URL with `user@host:port`).
    pub async fn for_database(url: &str) -> Self {
        Self::start(database_addr(url)).await
    }

    /// `url` (a postgres:// URL naming the upstream's host:port) pointed at this proxy.
    pub fn url_for(&self, url: &str) -> String {
        let up = self.shared.upstream.to_string();
        assert!(url.contains(&up), "{url} does not name {up}");
        url.replacen(&up, &self.addr.to_string(), 1)
    }
}

/// host:port of a postgres:// URL.
pub fn database_addr(url: &str) -> SocketAddr {
    let rest = url.split_once('@').expect("user@ in the URL").1;
    let hostport = rest.split(['/', '?']).next().unwrap();
    hostport.parse().expect("host:port")
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.reset();
    }
}

fn rst(s: &TcpStream) {
    // SO_LINGER 0: closing sends RST instead of FIN.
    #[allow(deprecated)]
    let _ = s.set_linger(Some(std::time::Duration::ZERO));
}

async fn serve(
    mut client: TcpStream,
    shared: Arc<Shared>,
    gen: CancellationToken,
    stop: CancellationToken,
) {
    let mut mode = shared.mode.subscribe();
    if *mode.borrow() == Mode::Refuse {
        rst(&client);
        return;
    }
    // A blackholed accept hangs before even reaching the upstream.
    let forwarding = async { mode.wait_for(|m| *m != Mode::Blackhole).await.map(|m| *m) };
    let m = tokio::select! {
        _ = gen.cancelled() => { rst(&client); return; }
        _ = stop.cancelled() => { rst(&client); return; }
        m = forwarding => m,
    };
    if !matches!(m, Ok(Mode::Forward)) {
        rst(&client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else {
        rst(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        // Nothing is read while blackholed: the bytes wait in the kernel buffers.
        let open = async { mode.wait_for(|m| *m != Mode::Blackhole).await.map(|m| *m) };
        let m = tokio::select! {
            _ = gen.cancelled() => break,
            _ = stop.cancelled() => break,
            m = open => m,
        };
        if !matches!(m, Ok(Mode::Forward) | Ok(Mode::Refuse)) {
            break;
        }
        let changed = async {
            let _ = mode.wait_for(|m| *m == Mode::Blackhole).await;
        };
        tokio::select! {
            _ = gen.cancelled() => break,
            _ = stop.cancelled() => break,
            _ = changed => continue,
            r = client.read(&mut a) => match r {
                Ok(0) | Err(_) => { let _ = server.shutdown().await; return; }
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { break },
            },
            r = server.read(&mut b) => match r {
                Ok(0) | Err(_) => { let _ = client.shutdown().await; return; }
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { break },
            },
        }
    }
    rst(&client);
    rst(&server);
}
