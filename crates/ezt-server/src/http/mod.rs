//! The HTTP edge: routes, error body, authentication, operations endpoints.

pub mod auth;
pub mod body;
pub mod error;
pub mod ops;
pub mod v1;

use axum::Router;

use crate::AppState;

/// The whole API as one router (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(v1::jobs::router())
        .merge(v1::webhook_secrets::router())
        .merge(ops::router())
        .fallback(|| async { error::ApiError::not_found("route") })
        .with_state(state.clone());
    // The envelope endpoint dispatches into `api`, which does not contain it: no recursion.
    Router::new()
        .merge(v1::proxy::router(api.clone()))
        .with_state(state)
        .merge(api)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}
