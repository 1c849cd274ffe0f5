//! `POST /api/v1/torrent`: one call raced from every listed live region; the first 2xx (or
//! the last answer) comes back with every leg's outcome. The runtime's TORRENT service
//! (`ezt_runtime::torrent`) does the work.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use ezt_runtime::torrent::{TorrentError, TorrentOut};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::read_limited;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/torrent", post(torrent))
}

/// A TORRENT call (documentation of the body; the runtime parses it).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"url": "https://api.example.com/quote", "method": "GET", "regions": ["iad", "fra", "sin"], "timeout": "2s"}))]
#[allow(dead_code)]
pub struct TorrentIn {
    /// The target: an http or https URL, checked against the SSRF rules here and again at
    /// connect time by each region's node.
    url: String,
    /// HTTP method (default GET).
    method: Option<String>,
    /// Headers sent to the target.
    #[schema(value_type = Option<Object>)]
    headers: Option<serde_json::Value>,
    /// Body, sent as is by every leg.
    body: Option<String>,
    /// The regions to race (default: this node's). Each needs a live node, else
    /// `region_unavailable` naming `regions[i]`.
    regions: Option<Vec<String>>,
    /// The race's budget: a duration string or integer milliseconds, 1 ms to 300 s (default
    /// `10s`).
    #[schema(value_type = Option<String>, example = "10s")]
    timeout: Option<serde_json::Value>,
    /// The `Idempotency-Key` every leg carries (else the request's `Idempotency-Key` header,
    /// else a fresh random one).
    idempotent_key: Option<String>,
}

/// Race one call from several regions.
#[utoipa::path(post, path = "/api/v1/torrent", operation_id = "torrent", tag = "torrent",
    request_body(content = TorrentIn, description = "one call as a JSON object"),
    params(("Idempotency-Key" = Option<String>, Header, description = "the key every leg carries (1-256 printable characters); 400 if the body sets a different one")),
    responses((status = 200, description = "the first 2xx, or when no leg answered 2xx the last answer (no retries); `attempts` shows every leg", body = TorrentOut),
              (status = 400, description = "a bad field (`invalid_field`, `missing_field`, `unknown_field`, `invalid_json`)", body = ErrorBody),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 413, description = "the body is too large (`payload_too_large`)", body = ErrorBody),
              (status = 422, description = "`ssrf_denied` (the target's address), `region_unavailable` (no live node of `regions[i]`)", body = ErrorBody),
              (status = 503, description = "the cluster's members could not be read (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn torrent(
    State(st): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<TorrentOut>, ApiError> {
    let bytes = read_limited(&st, body).await?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidField,
                "must be 1-256 printable characters",
            )
            .with_field("Idempotency-Key")
        })?),
    };
    match st.rt.torrent.run(&bytes, key).await {
        Ok(out) => Ok(Json(out)),
        Err(TorrentError::Invalid(f)) => Err(f.into()),
        Err(TorrentError::Store(e)) => Err(e.into()),
    }
}
