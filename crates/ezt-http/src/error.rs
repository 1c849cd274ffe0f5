//! The API's error body: `{"error": {"code", "field"?, "message"}}` with a matching status.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ezt_core::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

/// The stable `code` of an error body; it chooses the HTTP status. Every code the server
/// sends is one of these (domain codes from `FieldError` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a field (or query parameter) has a bad value.
    InvalidField,
    /// 400: a required field is absent.
    MissingField,
    /// 400: a field this API does not know.
    UnknownField,
    /// 400: the body is not the JSON asked for.
    InvalidJson,
    /// 401: no valid API key.
    Unauthorized,
    /// 404: no such object or route.
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 409: the object is not in a state that allows this.
    Conflict,
    /// 413: the body (or a part of it) is too large.
    PayloadTooLarge,
    /// 422: a field asks for something this server does not do (yet).
    NotSupported,
    /// 422: the target is refused by the SSRF rules.
    SsrfDenied,
    /// 422: no allowed region can run the job.
    RegionUnavailable,
    /// 422: the tenant has work waiting in too many lanes.
    TooManyLanes,
    /// 429: the tenant holds too many open streams and long polls.
    TooManyWaiters,
    /// 429: the call's lane is paused by its target (Retry-After); nothing was sent.
    LanePaused,
    /// 429: the call's lane had no free permit within the call's timeout; nothing was sent.
    LaneBusy,
    /// 500: our fault; the cause is logged.
    Internal,
    /// 503: storage is unavailable; nothing was written.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for the tests and the description that must name each one.
    pub const ALL: [Self; 19] = [
        Self::InvalidField,
        Self::MissingField,
        Self::UnknownField,
        Self::InvalidJson,
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::NotSupported,
        Self::SsrfDenied,
        Self::RegionUnavailable,
        Self::TooManyLanes,
        Self::TooManyWaiters,
        Self::LanePaused,
        Self::LaneBusy,
        Self::Internal,
        Self::Unavailable,
    ];

    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidField => "invalid_field",
            Self::MissingField => "missing_field",
            Self::UnknownField => "unknown_field",
            Self::InvalidJson => "invalid_json",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotSupported => "not_supported",
            Self::SsrfDenied => "ssrf_denied",
            Self::RegionUnavailable => "region_unavailable",
            Self::TooManyLanes => "too_many_lanes",
            Self::TooManyWaiters => "too_many_waiters",
            Self::LanePaused => "lane_paused",
            Self::LaneBusy => "lane_busy",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidField | Self::MissingField | Self::UnknownField | Self::InvalidJson => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotSupported
            | Self::SsrfDenied
            | Self::RegionUnavailable
            | Self::TooManyLanes => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyWaiters | Self::LanePaused | Self::LaneBusy => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code of a domain validation error (`ezt_core::FieldError::code`); a code this
    /// edge does not know is answered as `invalid_field`.
    pub fn of_field_error(code: &str) -> Self {
        match code {
            "missing_field" => Self::MissingField,
            "unknown_field" => Self::UnknownField,
            "invalid_json" => Self::InvalidJson,
            "not_supported" => Self::NotSupported,
            "ssrf_denied" => Self::SsrfDenied,
            "region_unavailable" => Self::RegionUnavailable,
            "payload_too_large" => Self::PayloadTooLarge,
            _ => Self::InvalidField,
        }
    }
}

/// The one error body of the API: `{"error": {"code", "field"?, "message"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_field", "field": "retry_policy.max_retries", "message": "must be between 0 and 100"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of the error body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable; it chooses the status (400 `invalid_field` `missing_field`
    /// `unknown_field` `invalid_json`, 401 `unauthorized`, 404 `not_found`, 405
    /// `method_not_allowed`, 408 `request_timeout`, 409 `conflict`, 413 `payload_too_large`,
    /// 422 `not_supported` `ssrf_denied` `region_unavailable` `too_many_lanes`, 429
    /// `too_many_waiters` `lane_paused` `lane_busy`, 500 `internal`, 503 `unavailable`).
    pub code: ErrorCode,
    /// Dotted path of the offending field or parameter (`retry_policy.retry_codes[2]`,
    /// `headers.X-Api-Key`, `limit`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub field: Option<String>,
    /// What is wrong, for a human.
    pub message: String,
}

/// An error answered to a client. Internal causes are logged, never shown.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    field: Option<String>,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code`'s status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            field: None,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing or invalid API key (Authorization: Bearer ezt_live_…)",
        )
    }
    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no such {what}"))
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {limit} bytes"),
        )
    }
    /// 503 with Retry-After: nothing was half-written.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message).with_retry_after(5)
    }
    /// Sets the `Retry-After` header, seconds.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    /// Sets the field path.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    /// The error body alone (batch results embed it).
    pub fn error_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                field: self.field.clone(),
                message: self.message.clone(),
            },
        }
    }
    /// The error body as JSON.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.error_body()).unwrap_or_default()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        let code = ErrorCode::of_field_error(e.code);
        let field = (!e.field.is_empty()).then_some(e.field);
        Self {
            status: code.status(),
            code,
            field,
            message: e.message,
            retry_after: None,
        }
    }
}

impl From<ezt_store::Error> for ApiError {
    fn from(e: ezt_store::Error) -> Self {
        match e {
            ezt_store::Error::NotFound => Self::not_found("object"),
            ezt_store::Error::Conflict(m) => Self::conflict(m),
            ezt_store::Error::Unavailable { message } => {
                tracing::warn!(error = %message, "store unavailable");
                Self::unavailable("storage is unavailable (nothing was written); retry later")
            }
            ezt_store::Error::Other(m) => {
                tracing::error!(error = %m, "store error");
                Self::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// A query-string extractor answering bad parameters in the API's error shape: axum's own
/// `Query` rejects with `text/plain`, which clients parsing `{"error": …}` cannot read. The
/// parameter is named in `field` (`?limit=abc` → `invalid_field`, field `limit`).
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Parses a query string into `T`, naming the parameter a bad value came from.
pub fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let message = format!("bad query parameter: {}", e.inner());
        FieldError::invalid(field, message).into()
    })
}

/// A path-parameter extractor answering in the API's error shape (axum's `Path` rejects an
/// undecodable segment such as `%FF` with `text/plain`).
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => {
                let mut err =
                    ApiError::new(ErrorCode::InvalidField, e.body_text()).with_field("path");
                err.status = e.status(); // axum's status for this rejection (400, or 500)
                Err(err)
            }
        }
    }
}

/// Answer for a route that exists but not with this method (the router adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take this method; see the Allow header",
    )
}

impl From<ezt_runtime::jobs::JobsError> for ApiError {
    fn from(e: ezt_runtime::jobs::JobsError) -> Self {
        use ezt_runtime::jobs::JobsError;
        match e {
            JobsError::Invalid(f) => f.into(),
            JobsError::Store(s) => s.into(),
            JobsError::NotFound => Self::not_found("job"),
            JobsError::AlreadyFinal(_)
            | JobsError::NotReplayable(_)
            | JobsError::NoDeliveries
            | JobsError::StepOfWorkflow(_)
            | JobsError::Workflow(_) => Self::conflict(e.to_string()),
            JobsError::TooManyLanes(_) => {
                Self::new(ErrorCode::TooManyLanes, e.to_string()).with_field("headers")
            }
            JobsError::TooManyWaiters(_) => {
                Self::new(ErrorCode::TooManyWaiters, e.to_string()).with_retry_after(1)
            }
            JobsError::Lane(ezt_runtime::lanes::PinError::NoLane(_)) => {
                Self::new(ErrorCode::NotFound, e.to_string()).with_field("host")
            }
            JobsError::Lane(ezt_runtime::lanes::PinError::OperatorPinned(_)) => {
                Self::conflict(e.to_string())
            }
            // The database is down and the spool is full: nothing stored, retry later.
            JobsError::Spool(_) => {
                Self::new(ErrorCode::Unavailable, e.to_string()).with_retry_after(5)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_field_errors_and_picks_its_status() {
        for (code, status) in [
            ("invalid_field", 400),
            ("missing_field", 400),
            ("unknown_field", 400),
            ("invalid_json", 400),
            ("not_supported", 422),
            ("ssrf_denied", 422),
            ("region_unavailable", 422),
            ("payload_too_large", 413),
        ] {
            let c = ErrorCode::of_field_error(code);
            assert_eq!(c.as_str(), code, "{code} keeps its name");
            assert_eq!(c.status().as_u16(), status, "{code}");
        }
    }

    #[test]
    fn codes_serialise_as_their_names() {
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str(), "{c:?}");
        }
        let body = ApiError::from(FieldError::invalid("limit", "x")).body();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "invalid_field", "field": "limit", "message": "x"}})
        );
        assert!(ApiError::unauthorized().body()["error"]
            .get("field")
            .is_none());
    }

    #[test]
    fn service_refusals_map_to_their_statuses() {
        use ezt_runtime::jobs::JobsError;
        let status = |e: JobsError| ApiError::from(e).status.as_u16();
        assert_eq!(status(JobsError::NotFound), 404);
        assert_eq!(status(JobsError::NoDeliveries), 409);
        assert_eq!(
            status(JobsError::AlreadyFinal(ezt_core::JobState::Succeeded)),
            409
        );
    }
}
