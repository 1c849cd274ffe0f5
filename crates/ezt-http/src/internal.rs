//! The internal API (`/internal/v1/…`): node-to-node calls of a cluster, authenticated by an
//! HMAC of the cluster secret (`ezt_runtime::internal_auth`), served on the node's one listener
//! at its advertise URL. A request without a valid, fresh, unreplayed signature is answered
//! 401 in the API's one error shape before its body is parsed; a node without a cluster secret
//! refuses every internal request.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ezt_runtime::handoff::{AttemptSpec, ATTEMPTS_PATH};
use ezt_runtime::internal_auth::HEADER;
use ezt_runtime::regional_delivery::{DeliveryCall, DELIVERIES_PATH, MAX_DELIVERY_MS};
use ezt_runtime::torrent::{ForwardedRace, TORRENT_PATH};

use crate::body::{parse_json, read_limited};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The longest call a hand-off may ask for (as TORRENT's longest timeout).
const MAX_ATTEMPT_MS: u64 = ezt_runtime::torrent::MAX_TIMEOUT_MS;

/// Routes of the internal API.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(ATTEMPTS_PATH, post(attempt))
        .route(TORRENT_PATH, post(torrent))
        .route(DELIVERIES_PATH, post(delivery))
}

/// The body of a node-to-node `POST` to `path`, once its signature (made with the cluster
/// secret over method, path, time, nonce and body) holds; else 401.
async fn signed_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    path: &str,
) -> Result<axum::body::Bytes, ApiError> {
    let bytes = read_limited(st, body).await?;
    let sig = headers.get(HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = st.rt.handoff.verify("POST", path, &bytes, sig) {
        tracing::warn!(reason = %e, "refused a node-to-node call");
        return Err(refused());
    }
    Ok(bytes)
}

fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "node-to-node calls need a valid X-EZT-Node-Auth signature made with the cluster secret",
    )
}

/// `POST /internal/v1/attempts`: makes one call from this node (SSRF rules re-checked here, at
/// connect time) and answers what came back. Dropping the request cancels the call.
async fn attempt(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = signed_body(&st, &headers, body, ATTEMPTS_PATH).await?;
    let mut spec: AttemptSpec = parse_json(&bytes)?;
    spec.timeout_ms = spec.timeout_ms.clamp(1, MAX_ATTEMPT_MS);
    let answer = st.rt.handoff.execute(&spec).await;
    Ok(Json(answer).into_response())
}

/// `POST /internal/v1/torrent`: a race forwarded by a node that does not own its lane; this
/// node (its owner) takes one permit per leg and runs the legs. Answers the race, or the
/// public route's error (429 `lane_paused` / `lane_busy`, 503 when the lane is not this
/// node's either).
async fn torrent(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = signed_body(&st, &headers, body, TORRENT_PATH).await?;
    let race: ForwardedRace = parse_json(&bytes)?;
    match st.rt.torrent.run_forwarded(race).await {
        Ok(out) => Ok(Json(out).into_response()),
        Err(e) => Err(crate::v1::torrent::torrent_error(e)),
    }
}

/// `POST /internal/v1/deliveries`: sends one webhook POST, built and signed by the node that
/// holds the delivery, from this node (SSRF rules re-checked here, at connect time), and
/// answers status, headers and latency. It records nothing: the asking node does. Dropping
/// the request cancels the POST.
async fn delivery(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = signed_body(&st, &headers, body, DELIVERIES_PATH).await?;
    let mut call: DeliveryCall = parse_json(&bytes)?;
    call.timeout_ms = call.timeout_ms.clamp(1, MAX_DELIVERY_MS);
    let answer = st.rt.webhook_sender.execute(&call).await;
    Ok(Json(answer).into_response())
}
