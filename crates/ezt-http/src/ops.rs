//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;

/// Routes of the operations endpoints.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive), `ready` (the store answers) or `unavailable`.
    #[schema(schema_with = health_status)]
    pub status: &'static str,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub reason: Option<String>,
}

fn health_status() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["ok", "ready", "unavailable"]))
        .build()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "alive", body = Health, example = json!({"status": "ok"}))))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        reason: None,
    })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Health, example = json!({"status": "ready"})),
              (status = 503, description = "the store does not answer", body = Health)))]
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    match st.rt.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ready",
                reason: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                reason: Some(e.to_string()),
            }),
        ),
    }
}

/// Whether the scrape may read: always when no `metrics.bearer_token` is set, else only with
/// `Authorization: Bearer <token>` (scheme case-insensitive, compared in constant time).
fn metrics_allowed(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(want) = &st.rt.cfg.metrics.bearer_token else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    got.is_some_and(|g| constant_time_eq(g.as_bytes(), want.0.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 401, description = "`metrics.bearer_token` is set and was not sent (`unauthorized`)", body = ErrorBody)))]
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !metrics_allowed(&st, &headers) {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "this server's /metrics needs Authorization: Bearer <metrics.bearer_token>",
        )
        .into_response();
    }
    let now = st.rt.clock.now_ms();
    // With store and forward, a scrape must not hang on an unreachable database: the store's
    // figures are left out past the store deadline (the spool's are in memory).
    let deadline = st
        .rt
        .jobs
        .store_deadline()
        .unwrap_or(std::time::Duration::MAX);
    let states = tokio::time::timeout(deadline, st.rt.store.count_by_state());
    let oldest = tokio::time::timeout(deadline, st.rt.store.oldest_pending_delivery());
    let snap = ezt_runtime::metrics::Snapshot {
        max_lane_series: st.rt.cfg.metrics.max_lane_series,
        states: states.await.ok().and_then(Result::ok).unwrap_or_default(),
        lanes: st.rt.lanes.lanes().await,
        webhook_lanes: st.rt.deliveries.lanes().await,
        oldest_pending_delivery_s: oldest
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .map(|t| now.saturating_sub(t) as f64 / 1000.0),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.rt.metrics.render(&snap)
            + &st.rt.events.render_metrics()
            + &ezt_runtime::metrics::render_node(&st.rt.node),
    )
        .into_response()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handler and DTO types.
#[derive(OpenApi)]
#[openapi(
    info(title = "EZThrottle", description = "Durable, rate-limited, retried HTTP calls (STREAM).\n\n\
Every error is `{\"error\": {\"code\", \"field\"?, \"message\"}}` (`ErrorBody`). One vocabulary: a submit \
answers `status` `queued` or `duplicate`; the job's progress is its view's `state` (`queued`, `scheduled`, \
`running`, then `succeeded`, `failed`, `expired` or `cancelled`); its webhook body (`WebhookPayload`) carries \
`type` `job.<final state>` (Standard Webhooks) and the hosted `status`: `success` for `succeeded`, `failed` \
for the other final states. Limits shown are the defaults (`config.default.toml`)."),
    tags(
        (name = "jobs", description = "Submit calls, read and control jobs"),
        (name = "webhook-secrets", description = "The tenant's webhook signing secrets"),
        (name = "lanes", description = "The caller's lanes: limits in force, where they came from, pins"),
        (name = "workflows", description = "Static workflows: a DAG of steps, each a durable job"),
        (name = "torrent", description = "A call raced from several regions, answered at once"),
        (name = "hosted-sdk", description = "The hosted SDKs' envelope"),
        (name = "operations", description = "Health, readiness, metrics"),
    ),
    components(schemas(
        ErrorBody,
        ezt_core::webhook::Payload,
        ezt_core::job::Fallback,
        ezt_core::job::Child
    )),
    paths(
        healthz,
        readyz,
        metrics,
        crate::v1::jobs::submit,
        crate::v1::jobs::submit_batch,
        crate::v1::jobs::list,
        crate::v1::jobs::get_one,
        crate::v1::jobs::wait,
        crate::v1::jobs::events,
        crate::v1::jobs::cancel,
        crate::v1::jobs::retry,
        crate::v1::jobs::redeliver,
        crate::v1::workflows::submit,
        crate::v1::workflows::get_one,
        crate::v1::workflows::events,
        crate::v1::workflows::cancel,
        crate::v1::workflows::resume,
        crate::v1::workflows::restart,
        crate::v1::webhook_secrets::create,
        crate::v1::webhook_secrets::get_masked,
        crate::v1::webhook_secrets::rotate,
        crate::v1::webhook_secrets::delete,
        crate::v1::lanes::list,
        crate::v1::lanes::pin,
        crate::v1::envelope::proxy,
        crate::v1::torrent::torrent,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation has an id, a tag and an example-bearing schema for each answer; every
    /// error answer is the one error body; the error code is an enum of every code sent; the
    /// submit body is the parsing type, workflow fields included; views are typed throughout.
    #[test]
    fn document_describes_every_operation_and_error() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let mut ids = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let name = format!("{method} {path}");
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: id"));
                assert!(
                    ids.insert(id.to_string()),
                    "{name}: operationId {id} is unique"
                );
                assert!(op["tags"].is_array(), "{name}: tagged");
                for (status, r) in op["responses"].as_object().unwrap() {
                    let content = r["content"].as_object();
                    let content = content.unwrap_or_else(|| panic!("{name} {status}: no schema"));
                    let schema = &content.values().next().unwrap()["schema"];
                    assert!(!schema.is_null(), "{name} {status}: no schema");
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if is_error && path != "/readyz" {
                        assert_eq!(
                            schema["$ref"], "#/components/schemas/ErrorBody",
                            "{name} {status}: the one error body"
                        );
                    }
                }
                if op["security"].is_array() {
                    assert!(op["responses"]["401"].is_object(), "{name}: 401");
                }
            }
        }
        assert!(ids.len() >= 17, "{ids:?}");
        let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for code in [
            "invalid_field",
            "not_supported",
            "ssrf_denied",
            "too_many_waiters",
            "unavailable",
        ] {
            assert!(codes.contains(&code), "{code} in {codes:?}");
        }
        let job = &schemas["JobSpecIn"];
        assert_eq!(job["required"], serde_json::json!(["url"]));
        assert_eq!(job["additionalProperties"], false);
        for f in [
            "fallback_job",
            "on_success",
            "on_failure",
            "on_failure_timeout_ms",
            "webhooks",
            "retry_policy",
            "timeout",
        ] {
            let p = &job["properties"][f];
            let d = p["description"]
                .as_str()
                .or(p["oneOf"][1]["description"].as_str());
            assert!(d.is_some_and(|d| !d.is_empty()), "{f} described: {p}");
        }
        assert!(job["example"].is_object(), "submit body has an example");
        assert!(schemas["ErrorBody"]["example"].is_object());
        // No bare objects in the views: every property has a type, a $ref or a composition.
        for view in [
            "JobView",
            "DeliveryView",
            "Attempt",
            "DeliveryAttempt",
            "Response",
            "JobSpec",
        ] {
            for (name, p) in schemas[view]["properties"].as_object().unwrap() {
                let typed = p.get("$ref").is_some()
                    || p.get("oneOf").is_some()
                    || p.get("allOf").is_some()
                    || p["items"].is_object()
                    || p["additionalProperties"].is_object()
                    || p["type"].as_str().is_some_and(|t| t != "object")
                    || p["type"]
                        .as_array()
                        .is_some_and(|t| !t.contains(&"object".into()));
                assert!(typed, "{view}.{name} is typed: {p}");
            }
        }
        let hook = &schemas["WebhookPayload"]["properties"];
        assert_eq!(
            hook["type"]["enum"],
            serde_json::json!([
                "job.succeeded",
                "job.failed",
                "job.expired",
                "job.cancelled"
            ])
        );
        assert_eq!(hook["timestamp"]["format"], "date-time");
    }

    /// `openapi.json` at the repository root is what the code generates; regenerate with
    /// `EZT_UPDATE_OPENAPI=1 cargo test -p ezt-http openapi`.
    #[test]
    fn openapi_json_is_in_sync() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
        let generated = ApiDoc::openapi().to_pretty_json().expect("serialises") + "\n";
        if std::env::var_os("EZT_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json is stale: run EZT_UPDATE_OPENAPI=1 cargo test -p ezt-http openapi"
        );
    }
}
