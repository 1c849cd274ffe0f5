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

/// A TORRENT call (documentation of the body; the runtime parses it as a job's fields are).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"url": "https://api.example.com/quote", "method": "GET", "regions": ["iad", "fra", "sin"], "timeout": "2s"}))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TorrentIn {
    /// The target: an http or https URL, at most 8,192 bytes; checked against the SSRF rules
    /// here and again at connect time by each region's node.
    #[schema(
        max_length = 8192,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(([A-Za-z0-9_-]{1,63}\.)*[A-Za-z_][A-Za-z0-9_-]{0,62}\.?|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(:[1-9][0-9]{0,3})?(/[!$&'()*+,;=:@%._~/A-Za-z0-9-]*)?$",
        example = "https://api.example.com/quote"
    )]
    url: String,
    /// HTTP method (default GET), any case.
    #[schema(
        pattern = "^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$",
        example = "GET"
    )]
    method: Option<String>,
    /// Headers sent to the target by every leg.
    #[schema(schema_with = ezt_core::openapi::headers)]
    headers: Option<serde_json::Value>,
    /// Body, sent as is by every leg, at most 262,144 bytes.
    #[schema(max_length = 262144)]
    body: Option<String>,
    /// The regions to race (default: this node's). Each needs a live node, else
    /// `region_unavailable` naming `regions[i]`.
    #[schema(schema_with = ezt_core::openapi::regions)]
    regions: Option<Vec<String>>,
    /// The race's budget, 1 ms to 300 s (default `10s`).
    #[schema(schema_with = race_timeout)]
    timeout: Option<serde_json::Value>,
    /// The `Idempotency-Key` every leg carries (else the request's `Idempotency-Key` header,
    /// else a fresh random one).
    #[serde(alias = "idempotentKey")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$",
        example = "quote-42"
    )]
    idempotent_key: Option<String>,
}

fn race_timeout() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    use utoipa::openapi::{RefOr, Schema};
    let one_of = OneOfBuilder::new()
        .description(Some(
            "The race's budget (default 10s; 1 ms to 300 s): integer milliseconds or a humantime \
             string such as \"250ms\", \"2s\".",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(ezt_runtime::torrent::MAX_TIMEOUT_MS)),
        )
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(
            "^([1-9][0-9]{0,4}ms|[1-9][0-9]{0,1}s|[12][0-9]{2}s|300s)$",
        )))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .examples([serde_json::json!("2s")])
        .build();
    RefOr::T(Schema::OneOf(one_of))
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
              (status = 429, description = "nothing was sent: the call's lane is paused by its target until `Retry-After` (`lane_paused`), or no leg got a permit of the lane (its rate or in-flight cap) within `timeout` (`lane_busy`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds"))),
              (status = 503, description = "the cluster's members could not be read, or the lane's owner could not run the race (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
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
        Err(e) => Err(torrent_error(e)),
    }
}

/// The API error of a refused TORRENT call (also answered by the internal route).
pub(crate) fn torrent_error(e: TorrentError) -> ApiError {
    match e {
        TorrentError::Invalid(f) => f.into(),
        TorrentError::Store(e) => e.into(),
        e @ TorrentError::Paused { retry_after_s, .. } => {
            ApiError::new(ErrorCode::LanePaused, e.to_string()).with_retry_after(retry_after_s)
        }
        e @ TorrentError::Busy => {
            ApiError::new(ErrorCode::LaneBusy, e.to_string()).with_retry_after(1)
        }
        TorrentError::Moved(m) => ApiError::unavailable(m).with_retry_after(1),
    }
}
