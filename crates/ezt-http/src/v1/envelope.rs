//! `POST /api/v1/proxy`: the hosted SDKs' envelope, so code written for the hosted service runs
//! unchanged against this server once its proxy URL points here.
//!
//! The hosted SDKs never call the API directly: they wrap each call in an envelope
//! (`{"scope", "metric_name", "target_url", "method", "headers", "body"}`) for a metering proxy
//! that forwards it. Here the envelope is opened and the call is dispatched to this server's own
//! router, in process, with the caller's bearer key. Only the path (and query) of `target_url` is
//! used — its host is the hosted service's, which is not where the call should go — and only
//! paths under `/api/v1/` are reachable, so the envelope cannot become an open relay.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method};
use axum::routing::post;
use axum::{Json, Router};
use ezt_core::job::RESERVED_HEADERS;
use ezt_core::FieldError;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::{parse_json, read_limited};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The path of this endpoint; an envelope may not target it (no recursion).
const PATH: &str = "/api/v1/proxy";

/// Largest forwarded answer kept, bytes: a job view with many attempts fits easily.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The route. `api` is the rest of the API, which the envelope's call is dispatched to.
pub fn router(api: Router) -> Router<AppState> {
    Router::new().route(
        PATH,
        post(
            move |st: State<AppState>, caller: Caller, h: HeaderMap, body: Body| {
                proxy(st, caller, h, body, api.clone())
            },
        ),
    )
}

/// The hosted SDKs' envelope (camelCase `metricName`, `customerId`, `targetUrl` are accepted
/// too).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"scope": "default", "metric_name": "jobs", "target_url": "https://ezthrottle.fly.dev/api/v1/jobs", "method": "POST", "headers": {"Content-Type": "application/json"}, "body": "{\"url\": \"https://api.example.com/orders\"}"}))]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The hosted proxy's metering scope; accepted and ignored.
    pub scope: Option<String>,
    /// The hosted proxy's metric; accepted and ignored.
    #[serde(alias = "metricName")]
    pub metric_name: Option<String>,
    /// Sent by older hosted SDKs; ignored: the tenant always comes from the bearer key.
    #[serde(alias = "customerId")]
    pub customer_id: Option<String>,
    /// The API call, e.g. `https://ezthrottle.fly.dev/api/v1/jobs`; only its path and query
    /// are used. The path must be under `/api/v1/`, without `..`, and not the proxy itself; an
    /// unknown path is forwarded and answered 404 inside `forwarded_response`; an event stream
    /// (`…/events`) is `422 not_supported`.
    #[serde(alias = "targetUrl")]
    #[schema(
        pattern = r#"^(?!.*(\.\.|%2[eE]|/\.))([Hh][Tt][Tt][Pp][Ss]?://(([A-Za-z0-9_-]{1,63}\.)*[A-Za-z_][A-Za-z0-9_-]{0,62}\.?|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(:[1-9][0-9]{0,3})?)?/api/v1/(?!proxy(?:[/?#]|$))[^\s?#]*(\?[^\s#]*)?$"#,
        example = "https://ezthrottle.fly.dev/api/v1/jobs"
    )]
    pub target_url: String,
    /// HTTP method of the call (default `POST`), any case.
    #[schema(
        pattern = "^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee])$"
    )]
    pub method: Option<String>,
    /// Headers of the call (e.g. `Content-Type`): RFC 9110 token names, values without
    /// control characters but tab; credentials and connection headers are not passed on.
    #[schema(schema_with = envelope_headers)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Body of the call, as a string (the hosted SDKs send JSON text).
    pub body: Option<String>,
}

fn envelope_headers() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
    let string = || ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            string().pattern(Some(ezt_core::openapi::HEADER_NAME_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            utoipa::openapi::RefOr::T(Schema::Object(
                string()
                    .pattern(Some(r"^[^\x00-\x08\x0a-\x1f\x7f]*$"))
                    .build(),
            )),
        )))
        .build()
}

/// What the hosted SDKs read back.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyAnswer {
    /// Always `allowed`: this server has no metering proxy in front of it.
    pub status: &'static str,
    /// The API's answer to the call.
    pub forwarded_response: Forwarded,
}

/// The API's answer to an enveloped call.
#[derive(Debug, Serialize, ToSchema)]
pub struct Forwarded {
    /// HTTP status of the call, as the hosted service answered it: `201` for a new job (the
    /// native API's `202`), `200` for a duplicate (or, with `?wait`, a job final in time), `400`
    /// for a bad field.
    pub status_code: u16,
    /// Response headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Response body as text (JSON for every API answer).
    pub body: String,
}

/// Where an envelope may send its call: path and query, or why not.
fn target(raw: &str) -> Result<String, FieldError> {
    let bad = |why: &str| FieldError::invalid("target_url", why.to_string());
    // Resolving against a base both accepts a bare path and normalises `..` segments before
    // the prefix check.
    let base = url::Url::parse("http://ezthrottle.invalid/").expect("static base URL");
    let url = base
        .join(raw)
        .map_err(|e| bad(&format!("not a URL or path ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http(s) URL or a path"));
    }
    let path = url.path();
    if !path.starts_with("/api/v1/") {
        return Err(bad(&format!(
            "must name an EZThrottle API path under /api/v1/ (got {path:?})"
        )));
    }
    if path == PATH || path.starts_with("/api/v1/proxy/") {
        return Err(bad("may not target the proxy itself"));
    }
    if path.ends_with("/events") {
        return Err(FieldError::not_supported(
            "target_url",
            "event streams cannot be enveloped; call GET /api/v1/jobs/{id}/events directly",
        ));
    }
    Ok(match url.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    })
}

fn method(raw: Option<&str>) -> Result<Method, FieldError> {
    let m = raw.unwrap_or("POST").to_ascii_uppercase();
    match m.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
            Ok(Method::from_bytes(m.as_bytes()).expect("a listed method is a valid token"))
        }
        _ => Err(FieldError::invalid(
            "method",
            "must be one of GET POST PUT PATCH DELETE",
        )),
    }
}

/// Whether an envelope's path (and query) is the job submission, `/api/v1/jobs`.
fn is_submit(path_and_query: &str) -> bool {
    path_and_query.split('?').next() == Some("/api/v1/jobs")
}

/// The status the hosted service answered for a call: a new job is `201` there (the native
/// `202`), a duplicate `200` as here; the hosted Go SDK accepts nothing else for a submission.
fn hosted_status(submit: bool, native: u16) -> u16 {
    if submit && native == 202 {
        201
    } else {
        native
    }
}

/// Opens an enveloped call and answers with what the API answered to it.
#[utoipa::path(post, path = "/api/v1/proxy", operation_id = "proxyEnvelope", tag = "hosted-sdk", request_body = Envelope,
    responses((status = 200, description = "the call was made; its answer (any status, including errors) is in forwarded_response", body = ProxyAnswer),
              (status = 400, description = "a bad envelope field (`target_url` outside /api/v1/, a bad method or header)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 408, description = "the body did not arrive in time (`request_timeout`)", body = ErrorBody), (status = 413, description = "the request body is larger than `limits.max_request_bytes` (`payload_too_large`)", body = ErrorBody),
              (status = 422, description = "target_url is an event stream (`not_supported`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn proxy(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    api: Router,
) -> Result<Json<ProxyAnswer>, ApiError> {
    let envelope: Envelope = parse_json(&read_limited(&st, body).await?)?;
    let path = target(&envelope.target_url)?;
    let method = method(envelope.method.as_deref())?;
    let mut call = Request::builder().method(method.clone()).uri(&path);
    for (name, value) in envelope.headers.iter().flatten() {
        let field = || format!("headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FieldError::invalid(field(), "not a valid header name"))?;
        // Not passed on: the connection's own headers, and credentials (the envelope's
        // bearer key is the only one used).
        if n == header::AUTHORIZATION || RESERVED_HEADERS.contains(&n.as_str()) {
            continue;
        }
        let v = HeaderValue::from_str(value)
            .map_err(|_| FieldError::invalid(field(), "not a valid header value"))?;
        call = call.header(n, v);
    }
    // The Caller extractor accepted this header, so it is present and valid.
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        call = call.header(header::AUTHORIZATION, auth.clone());
    }
    let call = call
        .body(Body::from(envelope.body.unwrap_or_default()))
        .map_err(|e| FieldError::invalid("target_url", format!("not a valid request: {e}")))?;
    let submits = method == Method::POST && is_submit(&path);
    let answer = api.oneshot(call).await.unwrap_or_else(|e| match e {});
    let status_code = hosted_status(submits, answer.status().as_u16());
    let headers = answer
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let bytes = axum::body::to_bytes(answer.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|_| ApiError::too_large(MAX_ANSWER_BYTES))?;
    tracing::debug!(tenant_id = %caller.tenant.id, %path, status_code, "enveloped call");
    Ok(Json(ProxyAnswer {
        status: "allowed",
        forwarded_response: Forwarded {
            status_code,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keeps_path_and_query_of_any_host() {
        assert_eq!(
            target("https://ezthrottle.fly.dev/api/v1/jobs").unwrap(),
            "/api/v1/jobs"
        );
        assert_eq!(
            target("/api/v1/jobs/job_1/wait?timeout=5s").unwrap(),
            "/api/v1/jobs/job_1/wait?timeout=5s"
        );
    }

    #[test]
    fn target_refuses_paths_outside_the_api() {
        for raw in [
            "https://x/metrics",
            "/admin/v1/tenants",
            "/api/v1/../../metrics",
            "/api/v1/%2e%2e/metrics",
            "https://x/api/v1/proxy",
            "/api/v1/proxy/",
            "ftp://x/api/v1/jobs",
        ] {
            let e = target(raw).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_str()),
                ("invalid_field", "target_url"),
                "{raw}"
            );
        }
        assert_eq!(
            target("/api/v1/jobs/job_1/events").unwrap_err().code,
            "not_supported"
        );
    }

    #[test]
    fn only_a_new_job_becomes_201() {
        assert!(is_submit("/api/v1/jobs"));
        assert!(is_submit("/api/v1/jobs?wait=5s"));
        assert!(!is_submit("/api/v1/jobs/batch"));
        assert!(!is_submit("/api/v1/jobs/job_1/cancel"));
        assert_eq!(hosted_status(true, 202), 201);
        assert_eq!(hosted_status(true, 200), 200);
        assert_eq!(hosted_status(true, 400), 400);
        assert_eq!(hosted_status(false, 202), 202);
    }

    #[test]
    fn method_defaults_to_post_and_refuses_others() {
        assert_eq!(method(None).unwrap(), Method::POST);
        assert_eq!(method(Some("delete")).unwrap(), Method::DELETE);
        assert_eq!(method(Some("TRACE")).unwrap_err().field, "method");
    }
}
