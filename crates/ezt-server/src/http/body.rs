//! Request bodies: read under the configured size bound, parse naming the bad field.

use axum::body::{Body, Bytes};

use crate::http::error::ApiError;
use crate::AppState;

/// Reads a request body, refusing one larger than `limits.max_request_bytes` with a 413.
pub async fn read_limited(st: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = st.cfg.limits.max_request_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}

/// Parses a body that must be exactly one JSON object (no trailing data, not an array read as a
/// positional struct), reporting the path of a bad field in the API's error shape.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    ezt_core::job::parse_object(bytes, "a JSON object").map_err(ApiError::from)
}
