//! The HTTP edge: routes, error body, authentication, operations endpoints.

pub mod auth;
pub mod error;
pub mod ops;
pub mod v1;

use axum::Router;

use crate::AppState;

/// The whole API as one router (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(v1::jobs::router())
        .merge(v1::webhook_secrets::router())
        .merge(ops::router())
        .fallback(|| async { error::ApiError::not_found("route") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
