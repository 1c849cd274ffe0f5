//! Request bodies: read under the configured size bound and deadline, parse naming the bad field.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Reads a request body, refusing one larger than `limits.max_request_bytes` with a 413 (at
/// once when its declared length says so) and one that does not arrive in full within
/// `server.request_body_timeout_ms` with a 408, so a half-sent body cannot hold a request open.
pub(crate) async fn read_limited(st: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = st.rt.cfg.limits.max_request_bytes;
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::too_large(limit));
    }
    let deadline = Duration::from_millis(st.rt.cfg.server.request_body_timeout_ms);
    let mut read = std::pin::pin!(axum::body::to_bytes(body, limit));
    // A small body usually came with the headers: read it without arming a timer (a timer per
    // request was measurable on the admission path); only a body still arriving gets one.
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(r) => r,
        Poll::Pending => match tokio::time::timeout(deadline, read).await {
            Ok(r) => r,
            Err(_) => return Err(body_timeout(deadline)),
        },
    };
    done.map_err(|_| ApiError::too_large(limit))
}

/// 408: the body did not arrive in time.
fn body_timeout(deadline: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!(
            "the request body did not arrive within {} ms",
            deadline.as_millis()
        ),
    )
}

/// Parses a body that must be exactly one JSON object (no trailing data, not an array read as a
/// positional struct), reporting the path of a bad field in the API's error shape.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    ezt_core::job::parse_object(bytes, "a JSON object").map_err(ApiError::from)
}
