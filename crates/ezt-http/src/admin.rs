//! Operator endpoints behind the operator token (`admin.token`): `GET /admin/v1/nodes` and
//! its cluster-API alias `GET /api/v1/cluster/nodes`.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Routes of the operator endpoints.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/nodes", get(nodes))
        .route("/api/v1/cluster/nodes", get(nodes))
}

/// Whether the request carries the operator token (constant-time compare). Without a
/// configured token nobody is an operator.
fn operator(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(want) = &st.rt.cfg.admin.token else {
        return false;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().as_bytes());
    got.is_some_and(|g| {
        g.len() == want.0.len()
            && g.iter()
                .zip(want.0.as_bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    })
}

/// The cluster's members: id, epoch, region, advertise URL, version, lease, alive, draining,
/// lanes owned.
async fn nodes(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !operator(&st, &headers) {
        let why = if st.rt.cfg.admin.token.is_some() {
            "operator endpoints need Authorization: Bearer <admin.token>"
        } else {
            "operator endpoints are off: set admin.token (EZTHROTTLE_ADMIN_TOKEN)"
        };
        return ApiError::new(ErrorCode::Unauthorized, why).into_response();
    }
    match ezt_runtime::admin::nodes(
        st.rt.store.as_ref(),
        &st.rt.node,
        &st.rt.cfg.region,
        st.rt.clock.as_ref(),
    )
    .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
