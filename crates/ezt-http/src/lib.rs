//! EZThrottle's HTTP edge: the axum routes, the error body, authentication, the operations
//! endpoints and the accept loop. Handlers parse a request, call one runtime service method
//! and map the result; no job logic lives here.
#![warn(missing_docs)]

mod admin;
pub mod auth;
mod body;
pub mod error;
mod internal;
mod listener;
pub mod ops;
pub mod state;
pub mod v1;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use ezt_runtime::Runtime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use state::AppState;

/// Serves the API on `listener` until `shutdown`; then stops taking requests, stops
/// dispatching, and gives attempts and deliveries in flight up to 30 s to finish.
pub async fn serve(
    listener: TcpListener,
    rt: Runtime,
    sched: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
) {
    let app = app(AppState::new(rt.clone()));
    let fd_limit = listener::raise_fd_limit();
    let limits = listener::ConnLimits::new(&rt.cfg.server, fd_limit);
    tracing::info!(
        max_connections = limits.max_connections,
        fd_limit,
        fd_reserve = rt.cfg.server.fd_reserve,
        "connection limits"
    );
    listener::serve(listener, app, limits, shutdown).await;
    let left = rt.drain(sched, Duration::from_secs(30)).await;
    tracing::info!(left_in_flight = left, "stopped");
}

/// Header carrying a request's id, in and out.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The id of the request being handled, for log lines written while handling it.
    ///
    /// A task-local rather than a `tracing` span: a span per request (registry slot, formatted
    /// fields, enter/exit on every poll) cost ~4 % of admission throughput with 64 clients, and
    /// the id is its only field.
    static CURRENT_REQUEST_ID: HeaderValue;
}

/// Calls `f` with the id of the request this task is handling (`None` outside a request).
/// The log formatter adds it to every line written while a request is handled.
pub fn with_current_request_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    let mut f = Some(f);
    let found =
        CURRENT_REQUEST_ID.try_with(|id| (f.take().expect("called once"))(id.to_str().ok()));
    match found {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called yet"))(None),
    }
}

/// The whole API as one router (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(v1::jobs::router())
        .merge(v1::lanes::router())
        .merge(v1::webhook_secrets::router())
        .merge(v1::workflows::router())
        .merge(v1::torrent::router())
        .merge(internal::router())
        .merge(ops::router())
        .merge(admin::router())
        .fallback(|| async { error::ApiError::not_found("route") })
        .with_state(state.clone());
    // The envelope endpoint dispatches into `api`, which does not contain it: no recursion.
    Router::new()
        .merge(v1::envelope::router(api.clone()))
        .with_state(state.clone())
        .merge(api)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(state, edge))
}

/// What every request goes through first, in one middleware (each layer of its own cost a
/// boxed future per request on the admission path): a request id — the client's `X-Request-Id`
/// when it is short visible ASCII, otherwise a fresh one — echoed in the response and naming
/// every log line written while handling it; and a 413 from the declared `Content-Length` alone, before any
/// handler waits for the body.
async fn edge(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| is_acceptable_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id);
    let limit = st.rt.cfg.limits.max_request_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let mut resp = if declared.is_some_and(|n| n > limit as u64) {
        error::ApiError::too_large(limit).into_response()
    } else {
        CURRENT_REQUEST_ID.scope(id.clone(), next.run(req)).await
    };
    resp.headers_mut().insert(REQUEST_ID.clone(), id);
    resp
}

/// 1 to 128 visible ASCII characters: safe to echo and to log.
fn is_acceptable_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn new_request_id() -> HeaderValue {
    let id = format!("req_{:016x}", rand::random::<u64>());
    HeaderValue::from_str(&id).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_must_be_short_visible_ascii() {
        assert!(is_acceptable_id(b"abc-123_XYZ"));
        assert!(!is_acceptable_id(b""));
        assert!(!is_acceptable_id(b"has space"));
        assert!(!is_acceptable_id("caf\u{e9}".as_bytes()));
        assert!(!is_acceptable_id(&[b'a'; 129]));
        assert!(is_acceptable_id(new_request_id().as_bytes()));
    }
}
