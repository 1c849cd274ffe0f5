//! Accepting client connections within bounds.
//!
//! `axum::serve` keeps every connection for as long as the client likes: idle sockets,
//! half-sent headers and a flood of TCP connections used to exhaust the process's file
//! descriptors until job calls failed with "Too many open files". This accept loop
//! - caps open connections below the file limit minus a reserve for outbound calls and the
//!   store; at the cap the longest-idle connection is closed to make room (a connection with a
//!   request in progress is never closed for this), so idle sockets cannot lock out a client;
//! - closes a connection whose request headers do not arrive in full within
//!   `header_read_timeout` of their first byte (slowloris), or that has no request in progress
//!   and receives nothing for `keep_alive_timeout`;
//! - on shutdown stops accepting, lets requests in progress finish (bounded), and closes the rest.
//!
//! The request-body deadline and the `Content-Length` check live with the body reader
//! (`body`) and the router (`app`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

use ezt_runtime::config::ServerConfig;
use tokio_util::sync::CancellationToken;

/// How long requests in progress may run after shutdown before their connections are closed.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// "Not set" for the millisecond stamps below.
const NONE: u64 = u64::MAX;

/// Bounds of the accept loop (from `[server]`, with the connection cap fitted to the fd limit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Headers must be complete this long after their first byte.
    pub(crate) header_read: Duration,
    /// Idle connections (no request in progress, nothing received) are closed after this.
    pub(crate) keep_alive: Duration,
    /// Most open connections.
    pub(crate) max_connections: usize,
}

impl ConnLimits {
    /// The configured bounds, with the connection cap lowered to `fd_limit - fd_reserve` (the
    /// process's soft file limit, when known) so inbound sockets leave descriptors for job calls.
    pub(crate) fn new(cfg: &ServerConfig, fd_limit: Option<u64>) -> Self {
        Self {
            header_read: Duration::from_millis(cfg.header_read_timeout_ms),
            keep_alive: Duration::from_millis(cfg.keep_alive_timeout_ms),
            max_connections: fit_to_fd_limit(cfg.max_connections, fd_limit, cfg.fd_reserve),
        }
    }
}

/// `configured`, but at most `fd_limit - reserve`; a limit at or below the reserve leaves a
/// quarter of it to connections (the server must still answer something).
pub(crate) fn fit_to_fd_limit(configured: usize, fd_limit: Option<u64>, reserve: u64) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let room = match limit.checked_sub(reserve) {
        Some(r) if r > 0 => r,
        _ => (limit / 4).max(1),
    };
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Raises the soft limit on open files to the hard limit and returns the soft limit now in
/// force (`None` where it cannot be read).
pub(crate) fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Milliseconds on a monotonic clock shared by every connection.
fn now_ms() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    START
        .get_or_init(tokio::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// What the watchdog and the cap need to know about one connection.
#[derive(Debug)]
struct Tracker {
    /// Requests whose response is not yet fully sent.
    in_flight: AtomicUsize,
    /// When the connection last had no request in progress (open, or last response sent).
    idle_since: AtomicU64,
    /// First byte received while idle: a request's head is arriving (`NONE` if not).
    head_since: AtomicU64,
    /// Set to close the connection at once (evicted at the cap).
    close: CancellationToken,
}

impl Tracker {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(NONE),
            close: CancellationToken::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Lower goes first at the cap: silent connections before ones whose request is arriving,
    /// and among them the longest idle.
    fn eviction_rank(&self) -> (bool, u64) {
        let idle = self.idle_since.load(Ordering::Acquire);
        match self.head_since.load(Ordering::Acquire) {
            NONE => (false, idle),
            head => (true, idle.max(head)),
        }
    }

    /// When this connection is due to be closed if nothing changes (`None` while busy).
    fn deadline(&self, limits: &ConnLimits) -> Option<u64> {
        if !self.is_idle() {
            return None;
        }
        let idle = self
            .idle_since
            .load(Ordering::Acquire)
            .saturating_add(limits.keep_alive.as_millis() as u64);
        let head = match self.head_since.load(Ordering::Acquire) {
            NONE => NONE,
            t => t.saturating_add(limits.header_read.as_millis() as u64),
        };
        Some(idle.min(head))
    }
}

/// Held while a request is in progress: from the call until its response body is dropped.
struct InFlight(Arc<Tracker>);

impl InFlight {
    fn enter(t: &Arc<Tracker>) -> Self {
        t.in_flight.fetch_add(1, Ordering::AcqRel);
        t.head_since.store(NONE, Ordering::Release);
        Self(t.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is sent (an event
/// stream is busy for as long as it is open).
struct CountedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when a request's first bytes arrive on an idle connection.
struct TrackedStream {
    inner: TcpStream,
    tracker: Arc<Tracker>,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.tracker.is_idle() {
            let _ = self.tracker.head_since.compare_exchange(
                NONE,
                now_ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        r
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open connections, for the cap and for the shutdown drain.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Tracker>>>,
    next: AtomicU64,
    /// Notified whenever a connection ends.
    gone: Notify,
    /// Last time the "cap reached" warning was logged (ms), so a flood logs once in a while.
    warned_at: AtomicU64,
}

/// What to do with a newly accepted connection.
enum Admission {
    /// Serve it.
    Admitted(Arc<Tracker>, Registered),
    /// At the cap, an idle connection is closing: try again when it is gone.
    Wait,
    /// At the cap and every connection has a request in progress: close it.
    Refuse,
}

/// Removes its connection from the registry when the connection's task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry.conns).remove(&self.id);
        self.registry.gone.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Registers a new connection if there is room. At the cap, asks the longest-idle
    /// connection to close and says to wait: a connection counts until its socket is closed,
    /// so descriptors never exceed the cap, even for a moment.
    fn admit(self: &Arc<Self>, max: usize) -> Admission {
        let mut conns = lock(&self.conns);
        if conns.len() >= max {
            if conns.values().any(|t| t.close.is_cancelled()) {
                return Admission::Wait; // one is already on its way out
            }
            let victim = conns
                .values()
                .filter(|t| t.is_idle())
                .min_by_key(|t| t.eviction_rank());
            self.warn_at_cap(conns.len(), victim.is_some());
            return match victim {
                Some(v) => {
                    v.close.cancel();
                    Admission::Wait
                }
                None => Admission::Refuse,
            };
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(Tracker::new());
        conns.insert(id, t.clone());
        Admission::Admitted(
            t,
            Registered {
                registry: self.clone(),
                id,
            },
        )
    }

    fn warn_at_cap(&self, open: usize, evicting: bool) {
        let now = now_ms();
        let last = self.warned_at.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .warned_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                open,
                evicting,
                "connection cap reached: closing the longest-idle connection (or refusing the new one when none is idle)"
            );
        }
    }

    fn len(&self) -> usize {
        lock(&self.conns).len()
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown`; returns once every connection
/// has closed (requests in progress get up to `SHUTDOWN_DRAIN`).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Registry::default());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Our watchdog times headers from their first byte; hyper's own timer would also close
    // kept-alive connections after the header timeout.
    builder.http1().header_read_timeout(None).keep_alive(true);
    let builder = Arc::new(builder);
    let mut accept_errors = 0u64;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or buffers: back off instead of spinning; the cap and
                    // the reserve make this rare.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((tracker, registered)) = admit_or_wait(&registry, limits.max_connections).await
        else {
            drop(stream); // every connection is busy: refuse this one
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A child token: the connection task polls it on every wake, and a child has its own
        // lock, where polling the one shared token from every connection contended on one.
        let (builder, app, shutdown) = (builder.clone(), app.clone(), shutdown.child_token());
        tokio::spawn(async move {
            let _registered = registered;
            let io = TokioIo::new(TrackedStream {
                inner: stream,
                tracker: tracker.clone(),
            });
            let t = tracker.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let in_flight = InFlight::enter(&t);
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req).await?;
                    Ok::<_, std::convert::Infallible>(resp.map(|inner| {
                        Body::new(CountedBody {
                            inner,
                            _in_flight: in_flight,
                        })
                    }))
                }
            });
            let conn = builder.serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = watchdog(&tracker, &limits) => tracing::debug!("closing an idle or stalled connection"),
                _ = tracker.close.cancelled() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, conn).await;
                }
            }
        });
    }
    drop(listener);
    // Connections see the same token and close themselves: idle ones at once, busy ones when
    // their requests are answered (bounded by SHUTDOWN_DRAIN in each task).
    loop {
        let gone = registry.gone.notified();
        if registry.len() == 0 {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), gone).await;
    }
}

/// Admits a connection, waiting (briefly) for an evicted one to release its descriptor.
async fn admit_or_wait(registry: &Arc<Registry>, max: usize) -> Option<(Arc<Tracker>, Registered)> {
    for _ in 0..100 {
        let gone = registry.gone.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        match registry.admit(max) {
            Admission::Admitted(t, r) => return Some((t, r)),
            Admission::Refuse => return None,
            Admission::Wait => {
                let _ = tokio::time::timeout(Duration::from_millis(50), gone).await;
            }
        }
    }
    None
}

/// Returns when the connection has been idle or stalled too long.
async fn watchdog(t: &Tracker, limits: &ConnLimits) {
    let busy_recheck = limits.keep_alive.min(limits.header_read);
    loop {
        let now = now_ms();
        let wait = match t.deadline(limits) {
            None => busy_recheck,
            Some(d) if d <= now => {
                if t.is_idle() {
                    return;
                }
                busy_recheck
            }
            Some(d) => Duration::from_millis(d - now),
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        assert_eq!(fit_to_fd_limit(4096, Some(1024), 256), 768);
        assert_eq!(fit_to_fd_limit(100, Some(1024), 256), 100);
        assert_eq!(fit_to_fd_limit(4096, None, 256), 4096);
        assert_eq!(
            fit_to_fd_limit(4096, Some(256), 256),
            64,
            "below the reserve"
        );
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let reg = Arc::new(Registry::default());
        let admitted = |a: Admission| match a {
            Admission::Admitted(t, r) => (t, r),
            _ => panic!("not admitted"),
        };
        let (a, ra) = admitted(reg.admit(2));
        let (b, rb) = admitted(reg.admit(2));
        let busy = InFlight::enter(&a);
        assert!(
            matches!(reg.admit(2), Admission::Wait),
            "b is asked to close"
        );
        assert!(b.close.is_cancelled() && !a.close.is_cancelled());
        assert!(
            matches!(reg.admit(2), Admission::Wait),
            "b still holds its socket: no third connection yet"
        );
        drop(rb); // b's task ended
        let (c, _rc) = admitted(reg.admit(2));
        let _busy_c = InFlight::enter(&c);
        assert!(
            matches!(reg.admit(2), Admission::Refuse),
            "everyone busy: the newcomer is refused"
        );
        drop(busy);
        assert!(matches!(reg.admit(2), Admission::Wait), "a is idle again");
        assert!(a.close.is_cancelled());
        drop(ra);
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn deadlines_follow_idleness_and_half_sent_heads() {
        let limits = ConnLimits {
            header_read: Duration::from_millis(100),
            keep_alive: Duration::from_millis(1000),
            max_connections: 1,
        };
        let t = Arc::new(Tracker::new());
        let idle = t.idle_since.load(Ordering::Relaxed);
        assert_eq!(t.deadline(&limits), Some(idle + 1000));
        t.head_since.store(idle + 5, Ordering::Relaxed);
        assert_eq!(t.deadline(&limits), Some(idle + 105), "headers are late");
        let g = InFlight::enter(&t);
        assert_eq!(t.deadline(&limits), None, "busy");
        drop(g);
        assert!(t.deadline(&limits).unwrap() >= idle + 1000, "idle again");
    }
}
